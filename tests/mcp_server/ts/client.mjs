// Drives imagegate's MCP server with the official TypeScript SDK client (the one most hosts
// build on). Reads a plan as JSON on stdin, prints what the client saw as JSON on stdout:
//   {"url", "headers", "calls": [{"name", "arguments"}], "elicit": [{"action", "content"}]}
// -> {"protocolVersion", "tools": [...], "results": [{"result"} | {"thrown"}]}
// A call the SDK rejects (say, structured content that breaks the tool's output schema) is
// reported as "thrown" with the SDK's message, the way a host would show it.
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const sdk = process.env.IMAGEGATE_TS_SDK; // .../node_modules/@modelcontextprotocol/sdk
const load = (file) => import(pathToFileURL(join(sdk, "dist/esm", file)).href);
const { Client } = await load("client/index.js");
const { StreamableHTTPClientTransport } = await load("client/streamableHttp.js");
const { ElicitRequestSchema } = await load("types.js");

let input = "";
for await (const chunk of process.stdin) input += chunk;
const plan = JSON.parse(input);

const answers = [...(plan.elicit ?? [])];
const capabilities = plan.elicit ? { elicitation: { form: {} } } : {};
const client = new Client({ name: "imagegate-ts-test", version: "1.0.0" }, { capabilities });
const asked = [];
if (plan.elicit) {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    asked.push(request.params);
    return answers.shift() ?? { action: "cancel" };
  });
}
const transport = new StreamableHTTPClientTransport(new URL(plan.url), {
  requestInit: { headers: plan.headers ?? {} },
});
await client.connect(transport);
const tools = (await client.listTools()).tools;
const results = [];
for (const call of plan.calls) {
  try {
    results.push({ result: await client.callTool(call) });
  } catch (error) {
    results.push({ thrown: String(error?.message ?? error) });
  }
}
await client.close();
process.stdout.write(
  JSON.stringify({
    protocolVersion: transport.protocolVersion ?? null,
    tools: tools.map((t) => t.name),
    asked,
    results,
  }),
);
