#!/usr/bin/env python3
"""The official MCP Python SDK as a gateway client over Streamable HTTP: runs CODE on
SESSION_ID WARMUP + N times (timing the last N) and prints one JSON line
{"server", "tools", "text", "ms": [...]}. The same shape as tests/node/mcp_latency.mjs.

usage: mcp_latency.py URL TOKEN SESSION_ID CODE N [WARMUP]
"""
import asyncio
import json
import sys
import time

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def texts(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main(url, token, sid, code, n, warmup):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, streamable_http_client(url, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            ms, last = [], ""
            for i in range(warmup + n):
                t = time.perf_counter()
                r = await session.call_tool("execute_code", {"session_id": sid, "code": code})
                took = (time.perf_counter() - t) * 1000
                if r.is_error:
                    raise SystemExit(f"execute_code failed: {texts(r)}")
                if i >= warmup:
                    ms.append(took)
                last = texts(r)
            print(json.dumps({"server": init.server_info.name, "tools": len(tools.tools),
                              "text": last, "ms": ms}))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]) if len(a) > 5 else 5))
