// `switchboard serve --workers N`, spawned: N I/O processes on one port, sharing topics and
// presence through the primary (or through Redis with --engine), a killed worker replaced, and
// one SIGTERM to the primary ending them all.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { type Broker, brokerBinary, startRedis } from "../engines/brokers.js";
import { waitFor } from "../engines/contract.js";
import { client, type TestClient } from "../services/helpers.js";

const PROJECT = fileURLToPath(new URL("../../", import.meta.url));
const MAIN = join(PROJECT, "src/cli/main.ts");
const INDEX = pathToFileURL(join(PROJECT, "src/index.ts")).href;

// Says which process serves it; publishes texts to the room; "who" lists the room's members.
const ROOM = `import { defineService } from ${JSON.stringify(INDEX)};
export const config = { isolation: "main" };
export default defineService({
  async open(client) {
    await client.subscribe("room", { member: { pid: process.pid } });
    client.send("pid " + process.pid);
  },
  async message(client, message, ctx) {
    if (message.text() === "who") {
      const members = await ctx.presence("room");
      client.send("who " + members.length);
      return;
    }
    ctx.publish("room", process.pid + ":" + message.text());
  },
});
`;

const root = mkdtempSync(join(tmpdir(), "switchboard-cluster-"));
writeFileSync(join(root, "package.json"), JSON.stringify({ type: "module" }));
writeFileSync(join(root, "room.ts"), ROOM);
afterAll(() => rmSync(root, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const running: ChildProcess[] = [];
const clients: TestClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.ws.terminate();
  for (const child of running.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
});

interface Primary {
  child: ChildProcess;
  port: number;
  output(): string;
}

async function startPrimary(args: string[]): Promise<Primary> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", MAIN, "serve", root, "--port", "0", "--log-level", "info", ...args],
    { cwd: PROJECT, stdio: ["ignore", "pipe", "pipe"] },
  );
  running.push(child);
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  await waitFor(
    () => /^listening on ws:\/\/127\.0\.0\.1:\d+$/m.test(output) || child.exitCode !== null,
    30_000,
    "the listening line",
  );
  const match = /^listening on ws:\/\/127\.0\.0\.1:(\d+)$/m.exec(output);
  if (match === null) throw new Error(`did not start: ${output}`);
  return { child, port: Number(match[1]), output: () => output };
}

/** Connects until clients sit on `count` different processes (bounded); returns them by pid. */
async function spread(port: number, count: number): Promise<Map<number, TestClient>> {
  const byPid = new Map<number, TestClient>();
  const deadline = Date.now() + 20_000;
  for (let i = 0; byPid.size < count && Date.now() < deadline; i++) {
    // A worker that is (re)starting takes a moment: after a few tries, wait between them.
    if (i >= 10) await sleep(100);
    const c = await client(`ws://127.0.0.1:${port}/room`);
    clients.push(c);
    const pid = Number((await c.next()).split(" ")[1]);
    if (!byPid.has(pid)) byPid.set(pid, c);
  }
  return byPid;
}

async function ask(c: TestClient, text: string, prefix: string): Promise<string> {
  const before = c.messages.length;
  c.ws.send(text);
  await waitFor(
    () => c.messages.slice(before).some((m) => m.startsWith(prefix)),
    5_000,
    `an answer to ${text}`,
  );
  return c.messages.slice(before).find((m) => m.startsWith(prefix))!;
}

describe("serve --workers", () => {
  it("prints one listening line, spreads connections over the workers, and shares topics and presence through the primary", async () => {
    const primary = await startPrimary(["--workers", "2"]);
    expect(primary.output().match(/^listening on /gm)).toHaveLength(1);
    const byPid = await spread(primary.port, 2);
    expect(byPid.size).toBe(2);
    const [first, second] = [...byPid.values()];
    const [firstPid] = [...byPid.keys()];
    first!.ws.send("across");
    await waitFor(
      () => second!.messages.includes(`${firstPid}:across`),
      5_000,
      "a message published on the other worker",
    );
    // Every client of the room is counted from either worker.
    const total = clients.length;
    expect(await ask(first!, "who", "who ")).toBe(`who ${total}`);
    expect(await ask(second!, "who", "who ")).toBe(`who ${total}`);
  }, 60_000);

  it("replaces a killed worker; its clients' presence goes with it; SIGTERM ends them all", async () => {
    const primary = await startPrimary(["--workers", "2"]);
    const byPid = await spread(primary.port, 2);
    const [doomedPid, survivorPid] = [...byPid.keys()];
    const survivor = byPid.get(survivorPid!)!;
    const before = Number((await ask(survivor, "who", "who ")).split(" ")[1]);
    const doomedClients = clients.filter((c) => c.messages[0] === `pid ${doomedPid}`).length;
    process.kill(doomedPid!, "SIGKILL");
    // Its members leave at once (the primary closes its engine), and a new worker starts.
    let left = false;
    for (let i = 0; i < 50 && !left; i++) {
      left = (await ask(survivor, "who", "who ")) === `who ${before - doomedClients}`;
      if (!left) await sleep(100);
    }
    expect(left).toBe(true);
    await waitFor(
      () => /a worker died; starting another/.test(primary.output()),
      5_000,
      "the restart",
    );
    const again = await spread(primary.port, 2);
    expect(again.size).toBe(2);
    expect([...again.keys()]).not.toContain(doomedPid);

    const exited = once(primary.child, "exit");
    primary.child.kill("SIGTERM");
    const [code] = (await Promise.race([exited, sleep(20_000).then(() => ["timeout"])])) as [
      number | string,
    ];
    expect(code).toBe(0);
    // The workers went with it.
    for (const pid of again.keys()) {
      expect(() => process.kill(pid, 0)).toThrow();
    }
  }, 60_000);

  it("exits 1 when the workers cannot listen", async () => {
    const blocker = createServer();
    blocker.listen(0, "127.0.0.1");
    await once(blocker, "listening");
    const { port } = blocker.address() as { port: number };
    try {
      const child = spawn(
        process.execPath,
        ["--import", "tsx", MAIN, "serve", root, "--port", String(port), "--workers", "2"],
        { cwd: PROJECT, stdio: ["ignore", "pipe", "pipe"] },
      );
      running.push(child);
      let stderr = "";
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const [code] = (await Promise.race([
        once(child, "exit"),
        sleep(30_000).then(() => ["timeout"]),
      ])) as [number | string];
      expect(code).toBe(1);
      expect(stderr).toContain(`cannot listen on 127.0.0.1:${port}: address already in use`);
    } finally {
      blocker.close();
    }
  }, 60_000);
});

const redisBinary = brokerBinary("redis-server");

describe.skipIf(redisBinary === undefined)("serve --workers with --engine redis://", () => {
  let redis: Broker | undefined;
  afterAll(async () => {
    await redis?.dispose();
  });

  it("shares topics through Redis instead of the primary", async () => {
    redis = await startRedis(redisBinary!);
    const primary = await startPrimary([
      "--workers",
      "2",
      "--engine",
      `${redis.url}?prefix=cluster`,
    ]);
    const byPid = await spread(primary.port, 2);
    const [first, second] = [...byPid.values()];
    const [firstPid] = [...byPid.keys()];
    first!.ws.send("via redis");
    await waitFor(
      () => second!.messages.includes(`${firstPid}:via redis`),
      5_000,
      "a message through Redis",
    );
    // The members are in Redis, where the primary has no say.
    const { Redis } = await import("ioredis");
    const probe = new Redis(redis.url);
    try {
      expect(await probe.hlen("cluster:p:room")).toBe(clients.length);
    } finally {
      probe.disconnect();
    }
  }, 60_000);
});
