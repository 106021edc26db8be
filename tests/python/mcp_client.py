#!/usr/bin/env python3
"""A second MCP client for the gateway: the official Python SDK (`mcp`) over Streamable
HTTP with a bearer token. Starts a session, runs `1+1` and a plot, shuts the session down,
and prints one JSON line with what it saw (the Rust test checks it).

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
            await session.call_tool("shutdown_session", {"session_id": sid})
            print(json.dumps({
                "protocol": str(init.protocol_version),
                "server": init.server_info.name,
                "tools": len(tools.tools),
                "read_only": sorted(t.name for t in tools.tools
                                    if t.annotations and t.annotations.read_only_hint),
                "two": texts(two),
                "png": png == b"\x89PNG\r\n\x1a\n",
            }))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
