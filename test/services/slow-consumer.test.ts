// Both slow-consumer policies over real sockets, against a client that stops reading: what it
// does not take is dropped (counted) or it is closed with the topic's code, its server-side
// buffer stays bounded, and the subscribers that keep reading get every message in order.
import { afterEach, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, sleep, type TestClient } from "./helpers.js";

const ROOT = "test/services/fixtures/fanout";
const LIMIT = 256 * 1024;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function setup(isolation: Isolation): Promise<ServiceServer> {
  const server = await startServiceServer({
    root: ROOT,
    port: 0,
    isolation,
    topics: [
      { pattern: "drop", slowConsumer: { maxBufferedBytes: LIMIT, action: "drop" } },
      {
        pattern: "close",
        slowConsumer: { maxBufferedBytes: LIMIT, action: "close", closeCode: 1013 },
      },
    ],
  });
  cleanups.push(() => server.shutdown());
  return server;
}

async function join(server: ServiceServer, path: string, subscribed: boolean): Promise<TestClient> {
  const c = await client(server.url(path));
  cleanups.push(() => c.ws.terminate());
  if (subscribed) expect(await c.next()).toBe("subscribed");
  return c;
}

describe.each<Isolation>(["main", "worker"])("slow consumers, isolation %s", (isolation) => {
  it.each([
    ["drop", null],
    ["close", 1013],
  ] as const)("policy %s", async (topic, closeCode) => {
    const server = await setup(isolation);
    const fast = [
      await join(server, `/feed?topic=${topic}`, true),
      await join(server, `/feed?topic=${topic}`, true),
    ];
    const slow = await join(server, `/feed?topic=${topic}`, true);
    // Stops reading: the kernel's buffers fill, then the server's output for it would grow.
    slow.ws.pause();
    const pub = await join(server, `/feed?topic=${topic}&publish=1`, false);
    // 19 MiB in all, far past what loopback buffers and the limit hold. Paced by the readers
    // that keep up: each has a message before the next is published, so they stay far under
    // the limit however slow the machine, and only the one that stopped falls behind.
    const chunk = "x".repeat(64 * 1024);
    const count = 300;
    for (let i = 0; i < count; i++) {
      pub.ws.send(`${String(i).padStart(4, "0")}${chunk}`);
      for (const f of fast) await f.waitFor(i + 2);
    }
    for (const f of fast) {
      const got = await f.waitFor(count + 1);
      expect(got.slice(1).map((m) => m.slice(0, 4))).toEqual(
        Array.from({ length: count }, (_, i) => String(i).padStart(4, "0")),
      );
    }
    if (closeCode === null) {
      // Bounded: what the slow client could not take was dropped, not queued for it.
      const dropped = server.topics.dropped(topic);
      expect(dropped).toBeGreaterThan(count / 2);
      // Every message was either dropped for it or is still on its way: once it reads again it
      // gets exactly the rest, in order.
      slow.ws.resume();
      const got = await slow.waitFor(count - dropped + 1);
      expect(got[0]).toBe("subscribed");
      const numbers = got.slice(1).map((m) => Number(m.slice(0, 4)));
      expect(numbers.every((n, i) => i === 0 || n > numbers[i - 1]!)).toBe(true);
      await sleep(50);
      expect(slow.messages).toHaveLength(count - dropped + 1);
      expect(slow.ws.readyState).toBe("open");
    } else {
      slow.ws.resume();
      expect((await slow.closed).code).toBe(closeCode);
    }
  });
});
