// The services of the isolation benchmark (bench/services), served as `npm run bench` serves
// them: the benchmark's figures mean something only if /echo answers every message with the
// same bytes and opcode, and /broadcast reaches every client, in each isolation it is run in.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, recordingLogger, type TestClient } from "../services/helpers.js";

const ROOT = fileURLToPath(new URL("../../bench/services", import.meta.url));

describe.each<Isolation>(["main", "worker"])("bench services in isolation %s", (isolation) => {
  let server: ServiceServer;
  const logger = recordingLogger();
  const open: TestClient[] = [];
  const join = async (path: string) => {
    const c = await client(server.url(path));
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await startServiceServer({ root: ROOT, port: 0, isolation, logger });
  });
  afterAll(async () => {
    for (const c of open) c.ws.terminate();
    await server.shutdown();
  });

  it("runs the services where the server's isolation option says", async () => {
    await join("/echo");
    expect(server.service("echo.ts")?.serviceConfig?.isolation).toBe(isolation);
  });

  it("echoes text as text and binary as binary, byte for byte", async () => {
    const c = await join("/echo");
    // Multi-byte UTF-8 and bytes that are not UTF-8 at all: the echo must not re-encode either.
    c.ws.send("héllo €");
    c.ws.send(Buffer.from([0, 1, 0xfe, 0xff]));
    c.ws.send("");
    c.ws.send(Buffer.alloc(0));
    c.ws.send("x".repeat(4096));
    expect(await c.waitFor(5)).toEqual([
      "héllo €",
      "binary:0001feff",
      "",
      "binary:",
      "x".repeat(4096),
    ]);
  });

  it("keeps the order of pipelined messages, as the load generator sends them", async () => {
    const c = await join("/echo");
    const sent = Array.from({ length: 500 }, (_, i) => `m${i}`);
    for (const m of sent) c.ws.send(m);
    expect(await c.waitFor(sent.length)).toEqual(sent);
  });

  it("broadcasts every message to every client, the sender included, with its opcode", async () => {
    const a = await join("/broadcast");
    const b = await join("/broadcast");
    const c = await join("/broadcast");
    // All three are open on the service before anything is sent: wait until it counts them.
    await eventuallyClients(3);
    a.ws.send("from a");
    b.ws.send(Buffer.from([7, 8, 9]));
    for (const each of [a, b, c]) {
      const got = await each.waitFor(2);
      expect([...got].sort()).toEqual(["binary:070809", "from a"]);
    }
  });

  /** The host learns of a client when its connection is attached, before any message of it. */
  async function eventuallyClients(count: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    while ((server.service("broadcast.ts")?.clientCount ?? 0) < count) {
      if (Date.now() > deadline) throw new Error(`fewer than ${count} clients on /broadcast`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  it("logs no errors", () => {
    expect(logger.lines.filter((line) => line.level === "error")).toEqual([]);
  });
});
