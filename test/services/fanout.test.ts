// Topic fan-out over real sockets: a worker service publishing to thousands of subscribers, every
// message delivered in order, and subscribers that subscribe, unsubscribe or close while it runs.
// (The slow-consumer policies: slow-consumer.test.ts.)
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { client, eventually, type TestClient } from "./helpers.js";

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

/** `count` subscribers, connected `parallel` at a time. */
async function subscribers(topic: string, count: number, parallel = 100): Promise<TestClient[]> {
  const out: TestClient[] = [];
  for (let i = 0; i < count; i += parallel) {
    const group = Math.min(parallel, count - i);
    out.push(...(await Promise.all(Array.from({ length: group }, () => subscriber(topic)))));
  }
  return out;
}

async function publisher(topic: string): Promise<TestClient> {
  const c = await client(server.url(`/feed?topic=${topic}&publish=1`));
  open.push(c);
  return c;
}

/** The topic messages a client got (its "subscribed"/"unsubscribed" answers left out). */
const topicMessages = (c: TestClient) => c.messages.filter((m) => m.startsWith("m"));
const names = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `m${from + i}`);

describe("fan-out over real sockets", () => {
  it("delivers 200 messages to 2,500 subscribers, every one in order", async () => {
    const all = await subscribers("fanout", 2_500);
    expect(server.topics.localSubscribers("fanout")).toBe(2_500);
    const pub = await publisher("fanout");
    const sent = names(0, 200);
    for (const m of sent) pub.ws.send(m);
    for (const s of all) {
      // "subscribed" came first.
      expect((await s.waitFor(201, 30_000)).slice(1)).toEqual(sent);
    }
    for (const s of all) s.ws.terminate();
  });

  it("keeps every stream whole while others subscribe, unsubscribe or close", async () => {
    const [stay, leave, close] = await Promise.all([
      subscribers("churn", 200),
      subscribers("churn", 50),
      subscribers("churn", 50),
    ]);
    const pub = await publisher("churn");
    const total = 400;
    for (const m of names(0, 100)) pub.ws.send(m);
    // While those are on their way out: 50 leave the topic, 50 close, 50 newcomers arrive.
    for (const c of leave) c.ws.send("unsubscribe");
    for (const c of close) c.ws.terminate();
    const arriving = subscribers("churn", 50, 50);
    for (const m of names(100, 300)) pub.ws.send(m);
    const newcomers = await arriving;
    // Every newcomer is subscribed now, so these reach all of them.
    for (const m of names(300, total)) pub.ws.send(m);

    for (const s of stay) {
      expect((await s.waitFor(total + 1, 30_000)).slice(1)).toEqual(names(0, total));
    }
    for (const c of newcomers) {
      await eventually(() => c.messages.at(-1) === `m${total - 1}`, 30_000, "the last message");
      // A contiguous tail: from wherever it joined, nothing missing, nothing twice.
      const got = topicMessages(c);
      expect(got).toEqual(names(Number(got[0]?.slice(1)), total));
    }
    for (const c of leave) {
      // Asked again: once this answer is in, everything written to it before has been read.
      c.ws.send("unsubscribe");
      await eventually(
        () => c.messages.filter((m) => m === "unsubscribed").length === 2,
        10_000,
        "the second answer",
      );
      // A contiguous head, then nothing once it left.
      const head = names(0, topicMessages(c).length);
      expect(c.messages).toEqual(["subscribed", ...head, "unsubscribed", "unsubscribed"]);
    }
    // The index let go of every subscriber that left or closed.
    await eventually(
      () => server.topics.localSubscribers("churn") === 250,
      10_000,
      "the index to drop the 100 that left",
    );
  });
});
