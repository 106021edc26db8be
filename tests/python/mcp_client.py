#!/usr/bin/env python3
"""A second MCP client for the gateway: the official Python SDK (`mcp`) over Streamable
HTTP with a bearer token. Starts a session, runs `1+1`, a plot and 30 big figures (more
than the SDK accepts in one event), reads a page of the notebook and the notebook resource,
shuts the session down, and prints one JSON line with what it saw (the Rust test checks it).

usage: mcp_client.py URL TOKEN
"""
import asyncio
import base64
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

PLOT = (
    "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n"
    "%matplotlib inline\nplt.plot([1, 2], [3, 4])\nplt.show()"
)
# 30 figures of noise (~9 MB of PNG): more than the SDK takes in one event (1 MiB).
MANY = (
    "import numpy as np\nfor i in range(30):\n    plt.figure(figsize=(4, 4))\n"
    "    plt.imshow(np.random.rand(400, 400))\n    plt.show()"
)


def texts(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main(url, token):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, streamable_http_client(url, http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            started = await session.call_tool("start_new_session", {"experiment_name": "python sdk"})
            if started.is_error:
                raise SystemExit(f"start_new_session failed: {texts(started)}")
            sid = started.structured_content["session_id"]
            two = await session.call_tool("execute_code", {"session_id": sid, "code": "1+1"})
            plot = await session.call_tool("execute_code", {"session_id": sid, "code": PLOT})
            images = [c for c in plot.content if getattr(c, "type", "") == "image"]
            png = base64.b64decode(images[0].data)[:8] if images else b""
            many = await session.call_tool(
                "execute_code", {"session_id": sid, "code": MANY, "sync_timeout": 300})
            many_images = sum(1 for c in many.content if getattr(c, "type", "") == "image")
            many_bytes = len(many.model_dump_json(by_alias=True, exclude_none=True))
            page = await session.call_tool(
                "read_notebook", {"session_id": sid, "offset": 1, "limit": 2, "brief": True})
            try:
                await session.read_resource(f"slurmlab://sessions/{sid}/notebook")
                resource = "read"
            except Exception as e:  # the SDK raises McpError for a JSON-RPC error
                resource = str(e)
            await session.call_tool("shutdown_session", {"session_id": sid})
            print(json.dumps({
                "protocol": str(init.protocol_version),
                "server": init.server_info.name,
                "tools": len(tools.tools),
                "read_only": sorted(t.name for t in tools.tools
                                    if t.annotations and t.annotations.read_only_hint),
                "two": texts(two),
                "png": png == b"\x89PNG\r\n\x1a\n",
                "many": {"error": bool(many.is_error), "images": many_images,
                         "bytes": many_bytes, "text": texts(many)[:2000]},
                "page": page.structured_content,
                "resource": resource,
            }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
