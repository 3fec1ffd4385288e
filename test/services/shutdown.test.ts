// Graceful shutdown: stop accepting, close every client with 1001 (RFC 6455 section 7.4.1,
// "going away"), run each service's stop hook after its clients are gone, end the runtimes,
// and finish within the configured bound even when a stop hook hangs.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../../src/client/connect.js";
import { startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client } from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/shutdown", import.meta.url));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "switchboard-shutdown-"));
});
afterAll(async () => {
  delete process.env.LIFECYCLE_LOG;
  await rm(dir, { recursive: true, force: true });
});

describe.each<Isolation>(["main", "worker", "process"])("shutdown in isolation %s", (isolation) => {
  it("closes clients with 1001, then runs the stop hook, then stops listening", async () => {
    const log = join(dir, `${isolation}.log`);
    // Read by the fixture in whatever thread or process it runs (they inherit the environment).
    process.env.LIFECYCLE_LOG = log;
    const server = await startServiceServer({ root: ROOT, port: 0, isolation });
    const a = await client(server.url("/lifecycle"));
    const b = await client(server.url("/lifecycle"));
    expect(await a.next()).toBe("hello");
    expect(await b.next()).toBe("hello");
    await server.shutdown();
    expect(await a.closed).toEqual({ code: 1001, reason: "server shutting down" });
    expect(await b.closed).toEqual({ code: 1001, reason: "server shutting down" });
    expect((await readFile(log, "utf8")).trim().split("\n")).toEqual([
      "start lifecycle.ts",
      "stop lifecycle.ts clients=0",
    ]);
    await expect(connect(server.url("/lifecycle"))).rejects.toMatchObject({
      code: "ECONNREFUSED",
    });
  });

  it("finishes within shutdownTimeoutMs when a stop hook never returns", async () => {
    const server = await startServiceServer({
      root: ROOT,
      port: 0,
      isolation,
      shutdownTimeoutMs: 300,
    });
    const c = await client(server.url("/stuck"));
    expect(await c.next()).toBe("hello");
    const finished = await Promise.race([
      server.shutdown().then(() => "finished"),
      new Promise((resolve) => setTimeout(() => resolve("still waiting"), 10_000)),
    ]);
    expect(finished).toBe("finished");
    expect((await c.closed).code).toBe(1001);
  });
});
