// Turns a JavaScript plugin project into a component with componentize-qjs (QuickJS; the backend
// `jco componentize --backend qjs` uses). `ferrymq plugin build` writes this file into the project's
// .ferrymq/js/ beside the generated entry module and runs: node .ferrymq/js/build.mjs WORLD OUT.wasm
// The tested release is componentize-qjs 0.4.5. FERRYMQ_COMPONENTIZE_QJS names an installed componentize-qjs package directory to use instead
// of the one Node.js finds from the project.

import { readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [world, out] = process.argv.slice(2);
if (!world || !out) {
  console.error("usage: node build.mjs WORLD OUT.wasm");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
let qjs;
try {
  const installed = process.env.FERRYMQ_COMPONENTIZE_QJS;
  qjs = installed ? await import(pathToFileURL(join(installed, "index.js")).href) : await import("componentize-qjs");
} catch (err) {
  // Exit status 3 tells `ferrymq plugin build` to say what to install.
  console.error(`cannot load componentize-qjs: ${err.code ?? err.message}`);
  process.exit(3);
}
const entry = join(here, "entry.js");
const { component } = await qjs.componentize({
  witPath: join(here, "..", "wit"),
  jsSource: await readFile(entry, "utf8"),
  jsPath: entry,
  moduleRoot: resolve(here, "..", ".."),
  world,
  // The broker runs components with the synchronous ABI.
  sync: true,
});
await writeFile(out, component);
