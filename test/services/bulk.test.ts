// Bulk traffic through a service over real sockets. In a worker, batches of this size have
// their buffers handed back and reused, in both directions (src/isolation/batch.ts): a payload
// must arrive intact and in order however many batches passed through the same buffer, and a
// buffer whose bytes a socket still holds (a client that stopped reading) must not be reused.
import { afterEach, describe, expect, it } from "vitest";
import { connect } from "../../src/client/connect.js";
import type { WebSocketConnection } from "../../src/connection/connection.js";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { floodMessage } from "./fixtures/bulk/flood.js";
import { sleep } from "./helpers.js";

const ROOT = "test/services/fixtures/bulk";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function setup(isolation: Isolation): Promise<ServiceServer> {
  const server = await startServiceServer({ root: ROOT, port: 0, isolation });
  cleanups.push(() => server.shutdown());
  return server;
}

/** A client that keeps every message it receives, as bytes. */
async function collector(url: string) {
  const ws: WebSocketConnection = await connect(url);
  cleanups.push(() => ws.terminate());
  const received: Buffer[] = [];
  let wake: (() => void) | null = null;
  ws.on("message", (data: Buffer) => {
    received.push(Buffer.from(data));
    wake?.();
  });
  ws.on("error", () => {});
  const waitFor = async (count: number, timeoutMs = 20_000) => {
    const until = Date.now() + timeoutMs;
    while (received.length < count) {
      if (Date.now() > until) throw new Error(`got ${received.length} of ${count} messages`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    return received;
  };
  return { ws, received, waitFor };
}

/** Distinct bytes per message, so one overwritten by another is noticed. */
function payload(client: number, index: number): Buffer {
  const bytes = Buffer.allocUnsafe(4096);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + index * 31 + client * 131) & 0xff;
  return bytes;
}

describe.each<Isolation>(["main", "worker"])("bulk traffic, isolation %s", (isolation) => {
  it("echoes thousands of 4 KiB messages from several clients intact and in order", async () => {
    const server = await setup(isolation);
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => collector(server.url("/echo"))),
    );
    const count = 1_500;
    // All sent at once: the service gets them in large batches, as fast as they are read.
    clients.forEach(({ ws }, c) => {
      for (let i = 0; i < count; i++) ws.send(payload(c, i));
    });
    for (const [c, { waitFor }] of clients.entries()) {
      const echoes = await waitFor(count);
      expect(echoes.length).toBe(count);
      const expected = Buffer.concat(Array.from({ length: count }, (_, i) => payload(c, i)));
      expect(Buffer.compare(Buffer.concat(echoes), expected)).toBe(0);
    }
  });

  it("sends every message intact to a client that stopped reading for a while", async () => {
    const server = await setup(isolation);
    const slow = await collector(server.url("/flood"));
    // Stops reading: the kernel's buffers fill and the server's socket holds the rest of what
    // the service sends meanwhile, payloads the service's batches carried included.
    slow.ws.pause();
    const count = 400;
    slow.ws.send(`flood ${count}`);
    // Events keep going to the service meanwhile: they carry the buffers the I/O thread is done
    // with back to the worker, which writes its next batches into them.
    for (let i = 0; i < 100; i++) {
      slow.ws.send("tick");
      await sleep(5);
    }
    slow.ws.resume();
    const got = await slow.waitFor(count);
    expect(got.length).toBe(count);
    got.forEach((bytes, i) => {
      if (Buffer.compare(bytes, floodMessage(i)) !== 0) {
        throw new Error(`message ${i} differs (it starts with ${bytes.readUInt32BE(0)})`);
      }
    });
  });
});
