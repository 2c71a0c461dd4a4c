// The official TypeScript SDK client against the hub's MCP face: resources, templates, prompts, an
// unknown resource, and (with a tool name) a tool whose server elicits, answered "Tess".
// argv: URL KEY [TOOL]; env MCP_SDK: the SDK package's directory. Prints one JSON object.
const sdk = process.env.MCP_SDK;
const { Client } = await import(`${sdk}/dist/esm/client/index.js`);
const { StreamableHTTPClientTransport } = await import(`${sdk}/dist/esm/client/streamableHttp.js`);
const { ElicitRequestSchema } = await import(`${sdk}/dist/esm/types.js`);

const [url, key, tool] = process.argv.slice(2);
const headers = key ? { Authorization: `Bearer ${key}` } : {};
const client = new Client({ name: "ts-test", version: "1.0.0" }, { capabilities: { elicitation: {} } });
client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: { name: "Tess" } }));
await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } }));
const out = {};
out.resources = (await client.listResources()).resources.map((r) => r.uri);
out.templates = (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
out.read = (await client.readResource({ uri: out.resources[0] })).contents.map((c) => c.text);
out.prompts = (await client.listPrompts()).prompts.map((p) => p.name);
const got = await client.getPrompt({ name: out.prompts[0], arguments: { who: "Tess" } });
out.got = got.messages.map((m) => m.content.text);
try {
  await client.readResource({ uri: `${out.resources[0]}zz` });
  out.unknown = null;
} catch (e) {
  out.unknown = e.code;
}
if (tool) out.elicited = (await client.callTool({ name: tool, arguments: {} })).content.map((c) => c.text);
await client.close();
console.log(JSON.stringify(out));
