// The README's complete service example, run as written (with the package import pointed at the
// sources): a reader who copies it gets a working service.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { client, upgradeRequest } from "../services/helpers.js";

const README = fileURLToPath(new URL("../../README.md", import.meta.url));
const INDEX = pathToFileURL(fileURLToPath(new URL("../../src/index.ts", import.meta.url))).href;

let dir: string;
let server: ServiceServer;

beforeAll(async () => {
  const readme = await readFile(README, "utf8");
  const at = readme.indexOf("A complete service, `services/chat/[room].ts`:");
  expect(at).toBeGreaterThan(0);
  const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  expect(block).not.toBeNull();
  const source = block![1]!.replace('from "switchboard"', `from ${JSON.stringify(INDEX)}`);
  dir = await mkdtemp(join(tmpdir(), "switchboard-readme-"));
  await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  await mkdir(join(dir, "chat"));
  await writeFile(join(dir, "chat", "[room].ts"), source);
  server = await startServiceServer({ root: dir, port: 0 });
});
afterAll(async () => {
  await server?.shutdown();
  await rm(dir, { recursive: true, force: true });
});

it("runs the README's chat service", async () => {
  expect((await upgradeRequest(server.port, "/chat/lobby")).status).toBe(401);
  const ann = await client(server.url("/chat/lobby?name=ann"));
  expect(await ann.next()).toBe("ann joined");
  const bob = await client(server.url("/chat/lobby?name=bob"));
  expect(await ann.next()).toBe("bob joined");
  bob.ws.send("hello");
  expect(await ann.next()).toBe("bob: hello");
  bob.ws.close();
  expect(await ann.next()).toBe("bob left");
  ann.ws.close();
});
