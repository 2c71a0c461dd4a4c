// The official TypeScript SDK's MCP client (npm @modelcontextprotocol/sdk, installed by .ci/install-thirdparty
// under .tp/npm; found through NODE_PATH) against one of the hub's MCP endpoints: it lists the tools, calls
// one with progress, and prints what it saw as one JSON line. Exit 1 with the error's message on stderr.
//   node ts_client.cjs URL KEY|- TOOL ARGUMENTS_JSON
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

async function main() {
  const [url, key, tool, args] = process.argv.slice(2);
  const headers = key && key !== "-" ? { Authorization: `Bearer ${key}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: "mcphub-test-ts", version: "1.0.0" });
  await client.connect(transport);
  const tools = await client.listTools();
  const progress = [];
  const result = await client.callTool({ name: tool, arguments: JSON.parse(args) }, undefined, {
    onprogress: (p) => progress.push(p),
  });
  console.log(JSON.stringify({
    protocolVersion: transport.protocolVersion,
    sessionId: transport.sessionId ?? null,
    tools: tools.tools.map((t) => t.name),
    result,
    progress,
  }));
  await client.close();
}

main().catch((error) => {
  console.error(String((error && error.message) || error));
  process.exit(1);
});
