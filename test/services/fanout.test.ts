// Topic fan-out over real sockets: a worker service publishing to a thousand subscribers, every
// message delivered in order. (The slow-consumer policies are tested on the hub,
// test/topics/hub.test.ts.)
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { client, type TestClient } from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/fanout", import.meta.url));

let server: ServiceServer;
const open: TestClient[] = [];

beforeAll(async () => {
  server = await startServiceServer({
    root: ROOT,
    port: 0,
  });
});
afterAll(async () => {
  for (const c of open) c.ws.terminate();
  await server.shutdown();
});

async function subscriber(topic: string): Promise<TestClient> {
  const c = await client(server.url(`/feed?topic=${topic}`));
  open.push(c);
  expect(await c.next()).toBe("subscribed");
  return c;
}

async function publisher(topic: string): Promise<TestClient> {
  const c = await client(server.url(`/feed?topic=${topic}&publish=1`));
  open.push(c);
  return c;
}

describe("fan-out over real sockets", () => {
  it("delivers 100 messages to 1,000 subscribers, every one in order", async () => {
    const subscribers: TestClient[] = [];
    for (let i = 0; i < 1_000; i++) subscribers.push(await subscriber("fanout"));
    expect(server.topics.localSubscribers("fanout")).toBe(1_000);
    const pub = await publisher("fanout");
    const sent = Array.from({ length: 100 }, (_, i) => `m${i}`);
    for (const m of sent) pub.ws.send(m);
    for (const s of subscribers) {
      // "subscribed" came first.
      expect((await s.waitFor(101, 30_000)).slice(1)).toEqual(sent);
    }
    for (const s of subscribers) s.ws.terminate();
  });
});
