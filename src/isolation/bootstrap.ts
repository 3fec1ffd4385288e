import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

/**
 * The first code a worker thread or child process runs: it registers tsx, so the runtime entry
 * loads even from Switchboard's TypeScript sources, then imports it. It is plain
 * JavaScript handed over as a string because the entry itself may be TypeScript (when
 * Switchboard runs from its sources) and nothing can load that before tsx is registered.
 */

const here = import.meta.url;
const extension = here.endsWith(".ts") ? ".ts" : ".js";

/** The runtime entry next to this module: runtime-entry.ts from the sources, .js from dist. */
export const RUNTIME_ENTRY_URL = new URL(`./runtime-entry${extension}`, here).href;

// The ESM build of tsx's API: its register() finds its loader relative to itself.
const TSX_API_URL = pathToFileURL(
  join(dirname(createRequire(here).resolve("tsx/package.json")), "dist/esm/api/index.mjs"),
).href;

/** Code for `new Worker(code, { eval: true })` or `node --input-type=module -e code`. */
export function bootstrapCode(): string {
  return [
    `import(${JSON.stringify(TSX_API_URL)})`,
    ".then((api) => { api.register(); })",
    `.then(() => import(${JSON.stringify(RUNTIME_ENTRY_URL)}))`,
    ".catch((error) => { setImmediate(() => { throw error; }); });",
  ].join("");
}
