#!/usr/bin/env python3
"""MCP Tasks through the official Python SDK (`mcp`): its client extension interface
claims the `task` result of `tools/call` for the tasks extension
(`io.modelcontextprotocol/tasks`), polls `tasks/get` until the task ends and hands back
the tool result. The SDK has the interface but no tasks client of its own; this is the
few lines a Python agent writes. Starts a session (a task), runs a 5 s cell that prints
every second with a 1 s sync wait (a task), a quick `1+1` (answered at once), and prints
one JSON line with what it saw (the Rust test checks it).

usage: mcp_tasks.py URL TOKEN
"""
import asyncio
import json
import sys
from typing import Any, Literal

from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, Request, RequestParams, Result

TASKS = "io.modelcontextprotocol/tasks"
SEEN: dict[str, list[Any]] = {"created": [], "polled": []}


class CreatedTask(Result):
    result_type: Literal["task"]
    task_id: str
    status: str


class TaskParams(RequestParams):
    task_id: str


class GetTask(Request[TaskParams, Literal["tasks/get"]]):
    name_param = "taskId"


class TaskState(Result):
    """A `tasks/get` answer: the task with its payload inlined (extra fields kept)."""

    model_config = {**Result.model_config, "extra": "allow"}
    task_id: str
    status: str
    status_message: str | None = None


async def finish(created: CreatedTask, ctx: ClaimContext) -> CallToolResult:
    SEEN["created"].append({"tool": ctx.tool_name, "task_id": created.task_id})
    while True:
        state = await ctx.session.send_request(
            GetTask(method="tasks/get", params=TaskParams(task_id=created.task_id)), TaskState
        )
        SEEN["polled"].append({"task_id": state.task_id, "status": state.status,
                               "message": state.status_message})
        if state.status == "completed":
            return CallToolResult.model_validate((state.model_extra or {})["result"])
        if state.status in ("failed", "cancelled"):
            raise RuntimeError(f"task {state.task_id} ended {state.status}")
        await asyncio.sleep(0.5)


class Tasks(ClientExtension):
    identifier = TASKS

    def claims(self):
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=finish)]


def texts(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main(url, token):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, extensions=[Tasks()]) as client:
            started = await client.call_tool("start_new_session", {"experiment_name": "py tasks"})
            if started.is_error:
                raise SystemExit(f"start_new_session failed: {texts(started)}")
            sid = started.structured_content["session_id"]
            code = "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(1)"
            long = await client.call_tool(
                "execute_code", {"session_id": sid, "code": code, "sync_timeout": 1})
            quick = await client.call_tool("execute_code", {"session_id": sid, "code": "1+1"})
            await client.call_tool("shutdown_session", {"session_id": sid})
            print(json.dumps({
                "protocol": str(client.session.protocol_version),
                "session_id": sid,
                "long": texts(long),
                "quick": texts(quick),
                **SEEN,
            }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
