// The README's examples of mounting services on node:http, Express, Fastify, Koa and Hono, each
// run as written (package imports pointed at the sources) in a process of its own, with the
// README's chat service and an echo service: a reader who copies one gets a working server.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { freePort } from "../../bench/lib/brokers.js";
import { client, sleep, upgradeRequest } from "../services/helpers.js";

const PROJECT = fileURLToPath(new URL("../../", import.meta.url));
const README = join(PROJECT, "README.md");
const SECRET = "s3cret";

/** The package's entry points and the sources behind them. */
const ENTRY_POINTS: Record<string, string> = {
  switchboard: "src/index.ts",
  "switchboard/express": "src/adapters/express.ts",
  "switchboard/fastify": "src/adapters/fastify.ts",
  "switchboard/koa": "src/adapters/koa.ts",
  "switchboard/hono": "src/adapters/hono.ts",
};

/** The code with each package import pointed where `target` says for its source file. */
function pointImports(code: string, target: (source: string) => string): string {
  let out = code;
  for (const [entry, source] of Object.entries(ENTRY_POINTS)) {
    out = out.replaceAll(`from "${entry}"`, `from ${JSON.stringify(target(source))}`);
  }
  return out;
}

/** Imports as file URLs, for running the code where it is written. */
const withSources = (code: string) =>
  pointImports(code, (source) => pathToFileURL(join(PROJECT, source)).href);

async function codeAfter(marker: string): Promise<string> {
  const readme = await readFile(README, "utf8");
  const at = readme.indexOf(marker);
  expect(at, marker).toBeGreaterThan(0);
  const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  expect(block, marker).not.toBeNull();
  return block![1]!;
}

/** Waits until the example answers an upgrade; bounded. */
async function ready(port: number, child: ChildProcess, output: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`the example exited: ${output()}`);
    const answer = await upgradeRequest(port, "/echo").catch(() => undefined);
    if (answer?.status === 101) return;
    await sleep(100);
  }
  throw new Error(`the example did not start: ${output()}`);
}

const EXAMPLES = [
  { heading: "### node:http and node:https: `attach`", auth: false },
  { heading: "### Express 5", auth: true },
  { heading: "### Fastify 5", auth: true },
  { heading: "### Koa 3", auth: true },
  { heading: "### Hono on @hono/node-server", auth: true },
];

describe.each(EXAMPLES)("README: $heading", ({ heading, auth }) => {
  it("serves the chat and echo services behind the application, and stops on SIGTERM", async () => {
    // Inside the project, so that the example's framework imports resolve to node_modules.
    const dir = await mkdtemp(join(PROJECT, ".readme-example-"));
    let child: ChildProcess | undefined;
    try {
      await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
      await mkdir(join(dir, "services", "chat"), { recursive: true });
      const chat = await codeAfter("A complete service, `services/chat/[room].ts`:");
      await writeFile(join(dir, "services", "chat", "[room].ts"), withSources(chat));
      const echo = `import { defineService } from "switchboard";
export const echo = defineService({ message(client, message) { client.send(message); } });
export default echo;
`;
      await writeFile(join(dir, "echo.ts"), withSources(echo));
      await writeFile(join(dir, "services", "echo.ts"), withSources(echo));
      await writeFile(join(dir, "server.ts"), withSources(await codeAfter(heading)));

      const port = await freePort();
      let output = "";
      child = spawn(process.execPath, ["--import", "tsx", "server.ts"], {
        cwd: dir,
        env: { ...process.env, PORT: String(port), SESSION_SECRET: SECRET },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      await ready(port, child, () => output);

      const echoing = await client(`ws://127.0.0.1:${port}/echo`);
      echoing.ws.send("through the example");
      expect(await echoing.next()).toBe("through the example");
      echoing.ws.close();

      const cookie = { Cookie: `theme=dark; session=${SECRET}` };
      if (auth) {
        const refused = await upgradeRequest(port, "/chat/lobby?name=ann");
        expect(refused.status).toBe(401);
        expect(refused.body).toContain("log in first");
      }
      // The service's own upgrade hook still has its say.
      expect((await upgradeRequest(port, "/chat/lobby", { headers: cookie })).status).toBe(401);
      const ann = await client(`ws://127.0.0.1:${port}/chat/lobby?name=ann`, { headers: cookie });
      expect(await ann.next()).toBe("ann joined");
      ann.ws.close();

      const page = await fetch(`http://127.0.0.1:${port}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("plain requests stay yours");

      const exited = once(child, "exit");
      child.kill("SIGTERM");
      const [code] = (await Promise.race([exited, sleep(15_000).then(() => ["timeout"])])) as [
        number | string,
      ];
      expect(code).toBe(0);
    } finally {
      if (child?.exitCode === null) child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

it("type-checks every mounting example as written", async () => {
  const dir = await mkdtemp(join(PROJECT, ".readme-example-"));
  try {
    // Relative paths, as tsc resolves them from a directory inside the project.
    const point = (code: string) =>
      pointImports(code, (source) => `../${source.replace(/\.ts$/, ".js")}`);
    for (const [index, { heading }] of EXAMPLES.entries()) {
      await writeFile(join(dir, `example-${index}.ts`), point(await codeAfter(heading)));
    }
    await writeFile(
      join(dir, "echo.ts"),
      point(
        'import { defineService } from "switchboard";\nexport const echo = defineService({});\n',
      ),
    );
    await writeFile(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        extends: "../tsconfig.json",
        compilerOptions: { noEmit: true },
        include: ["./*.ts"],
      }),
    );
    const tsc = join(PROJECT, "node_modules", ".bin", "tsc");
    const run = spawn(tsc, ["-p", join(dir, "tsconfig.json")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    run.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const [code] = (await once(run, "exit")) as [number];
    expect(output).toBe("");
    expect(code).toBe(0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 120_000);
