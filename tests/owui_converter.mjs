// Runs Open WebUI's browser-side OpenAPI converter, as shipped in its release build, over OpenAPI
// documents. Usage: node owui_converter.mjs CHUNK.js SPECS.json
//   CHUNK.js: the module of Open WebUI's frontend build (open_webui/frontend/_app/immutable/chunks/ in
//   its PyPI wheel) that holds src/lib/utils/index.ts; tests/test_owui_converter.py finds it.
//   SPECS.json: {"label": <OpenAPI document>, ...}
// Prints {"label": {"tools": [...]} | {"error": "RangeError: Maximum call stack size exceeded"}, ...}.
// Nothing of Open WebUI is copied here: the converter is the release's own code, loaded as a module.

import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

// The chunk also bundles js-sha256, which on Node reaches for a `require` an ES module lacks; told it
// runs in a window, it takes the browser path. Nothing else of the browser is used by the converter.
globalThis.window = globalThis;
globalThis.JS_SHA256_NO_NODE_JS = true;

const [chunk, specsFile] = process.argv.slice(2);
const module = await import(pathToFileURL(chunk).href);
// convertOpenApiToToolPayload under its minified export name: the one export whose code says so.
const converters = Object.values(module).filter(
	(value) =>
		typeof value === 'function' &&
		String(value).includes('No description available.') &&
		String(value).includes('requestBody')
);
if (converters.length !== 1) {
	console.error(`expected one converter export in ${chunk}, found ${converters.length}`);
	process.exit(3);
}
const [convert] = converters;
const specs = JSON.parse(readFileSync(specsFile, 'utf-8'));
const results = {};
for (const [label, spec] of Object.entries(specs)) {
	try {
		results[label] = { tools: convert(spec) };
	} catch (error) {
		results[label] = { error: `${error.name}: ${error.message}` };
	}
}
process.stdout.write(JSON.stringify(results));
