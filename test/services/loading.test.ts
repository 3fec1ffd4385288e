// Service modules load with no build step whatever their form: TypeScript or JavaScript, in an
// ESM package or a CommonJS one, .ts/.mts/.js/.mjs, in every isolation mode.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client } from "./helpers.js";

const DEFINE_PATH = fileURLToPath(new URL("../../src/services/define.ts", import.meta.url));
const DEFINE = pathToFileURL(DEFINE_PATH).href;

/** Module sources that each answer `open` with their own name. */
const MODULES: Record<string, string> = {
  "typed.ts": `import { defineService } from ${JSON.stringify(DEFINE)};
const greeting: string = "typed.ts";
export default defineService({ open(client) { client.send(greeting); } });
`,
  "module.mts": `import { defineService } from ${JSON.stringify(DEFINE)};
export default defineService({ open(client) { client.send("module.mts"); } });
`,
  "plain.mjs": `import { defineService } from ${JSON.stringify(DEFINE)};
export default defineService({ open(client) { client.send("plain.mjs"); } });
`,
  "common.js": `const { defineService } = require(${JSON.stringify(DEFINE_PATH)});
module.exports = { default: defineService({ open(client) { client.send("common.js"); } }) };
`,
};

describe.each<[string, Isolation]>([
  ["a CommonJS package", "main"],
  ["a CommonJS package", "worker"],
  ["a CommonJS package", "process"],
])("modules in %s, isolation %s", (_kind, isolation) => {
  let dir: string;
  let server: ServiceServer;

  beforeAll(async () => {
    // No package.json with "type": "module": .ts and .js files are CommonJS here.
    dir = await mkdtemp(join(tmpdir(), "switchboard-loading-"));
    for (const [name, source] of Object.entries(MODULES)) await writeFile(join(dir, name), source);
    server = await startServiceServer({ root: dir, port: 0, isolation });
  });
  afterAll(async () => {
    await server.shutdown();
    await rm(dir, { recursive: true, force: true });
  });

  // On the I/O thread of this test process, vitest's module runner stands between a CommonJS
  // require() and tsx, so a CommonJS fixture cannot require Switchboard's TypeScript sources
  // here (a user's CommonJS service requires the built package, which needs no tsx).
  const names = Object.keys(MODULES).filter((name) => isolation !== "main" || name !== "common.js");
  it.each(names)("loads %s", async (name) => {
    const path = `/${name.slice(0, name.indexOf("."))}`;
    const c = await client(server.url(path));
    expect(await c.next()).toBe(name);
    c.ws.close();
    await c.closed;
  });
});
