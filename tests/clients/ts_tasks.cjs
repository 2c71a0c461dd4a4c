// The official TypeScript SDK's MCP client (npm @modelcontextprotocol/sdk, its experimental tasks API) against
// one of the hub's MCP endpoints: calls one tool as a task (`callToolStream` with `task`), which creates it,
// polls tasks/get and fetches tasks/result, and prints the stream's messages and the server's capabilities as
// one JSON line. Exit 1 with the error's message on stderr.
//   node ts_tasks.cjs URL KEY|- TOOL ARGUMENTS_JSON
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

async function main() {
  const [url, key, tool, args] = process.argv.slice(2);
  const headers = key && key !== "-" ? { Authorization: `Bearer ${key}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: "mcphub-test-ts-tasks", version: "1.0.0" });
  await client.connect(transport);
  const messages = [];
  const stream = client.experimental.tasks.callToolStream({ name: tool, arguments: JSON.parse(args) }, undefined, {
    task: { ttl: 60000 },
  });
  for await (const message of stream) {
    if (message.type === "error") {
      messages.push({ type: "error", code: message.error.code, message: message.error.message });
    } else {
      messages.push(message);
    }
  }
  const listed = await client.experimental.tasks.listTasks();
  console.log(JSON.stringify({
    protocolVersion: transport.protocolVersion,
    capabilities: client.getServerCapabilities(),
    messages,
    listed: listed.tasks.map((t) => t.taskId),
  }));
  await client.close();
}

main().catch((error) => {
  console.error(String((error && error.message) || error));
  process.exit(1);
});
