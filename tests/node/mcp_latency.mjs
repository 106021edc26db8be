#!/usr/bin/env node
// The official MCP TypeScript SDK (@modelcontextprotocol/sdk) as a gateway client over
// Streamable HTTP with a bearer token, as Node-based agents and editors use it: connects,
// lists the tools, runs CODE on SESSION_ID WARMUP + N times (timing the last N), closes
// the session (DELETE /mcp), and prints one JSON line:
// {"server", "protocol", "tools", "text", "ms": [...]}.
//
// usage: NODE_MODULES=<dir with @modelcontextprotocol/sdk> mcp_latency.mjs URL TOKEN SESSION_ID CODE N [WARMUP]
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [url, token, sessionId, code, n, warmup = "5"] = process.argv.slice(2);
const sdk = (p) => import(pathToFileURL(join(process.env.NODE_MODULES, "@modelcontextprotocol/sdk/dist/esm", p)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "slurmlab-ts-bench", version: "1" });
await client.connect(transport);
const { tools } = await client.listTools();
const text = (r) => r.content.filter((c) => c.type === "text").map((c) => c.text).join("");
let last = "";
const ms = [];
for (let i = 0; i < Number(warmup) + Number(n); i++) {
  const t = process.hrtime.bigint();
  const r = await client.callTool({ name: "execute_code", arguments: { session_id: sessionId, code } });
  const took = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.isError) throw new Error(`execute_code failed: ${text(r)}`);
  if (i >= Number(warmup)) ms.push(took);
  last = text(r);
}
const server = client.getServerVersion();
await transport.terminateSession();
await client.close();
console.log(JSON.stringify({ server: server.name, protocol: transport.protocolVersion ?? null, tools: tools.length, text: last, ms }));
