// Topics end to end through services: subscribe with a member record, presence queries and the
// presence hook, publish leaving out the sender, envelopes with positions, and a reconnect that
// resumes from its last offset with nothing lost and nothing twice.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, eventually, type TestClient } from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/topics", import.meta.url));

type Received = Record<string, unknown>;

async function next(c: TestClient): Promise<Received> {
  return JSON.parse(await c.next()) as Received;
}

/** The next `n` messages, in whatever order the hooks and presence events produced them. */
async function take(c: TestClient, n: number): Promise<Received[]> {
  const out: Received[] = [];
  for (let i = 0; i < n; i++) out.push(await next(c));
  return out;
}

function run(isolation: Isolation): void {
  let server: ServiceServer;
  const open: TestClient[] = [];
  beforeAll(async () => {
    server = await startServiceServer({
      root: ROOT,
      port: 0,
      isolation,
      topics: [{ pattern: "feed", history: { limit: 100 }, envelope: true }],
    });
  });
  afterAll(async () => {
    for (const c of open) c.ws.terminate();
    await server.shutdown();
  });
  const join = async (path: string) => {
    const c = await client(server.url(path));
    open.push(c);
    return c;
  };

  it("presence, publish without the sender, and resuming after a reconnect", async () => {
    const ann = await join("/feed?name=ann");
    const first = await take(ann, 2);
    expect(first).toContainEqual({ type: "join", name: "ann" });
    const subscribed = first.find((m) => m.type === "subscribed") as {
      result: { ok: boolean; recovered: number; position: { epoch: string; offset: number } };
    };
    expect(subscribed.result).toMatchObject({ ok: true, recovered: 0 });
    const { epoch, offset: start } = subscribed.result.position;

    const bob = await join("/feed?name=bob");
    expect(await next(ann)).toEqual({ type: "join", name: "bob" });
    const bobs = await take(bob, 2);
    expect(bobs).toContainEqual({ type: "join", name: "bob" });
    expect(bobs.find((m) => m.type === "subscribed")).toMatchObject({ result: { ok: true } });

    bob.ws.send("who");
    expect(await next(bob)).toEqual({ type: "who", names: ["ann", "bob"], count: 2 });

    // Published by bob: ann gets it in an envelope with its position, bob does not.
    bob.ws.send("hello");
    expect(await next(ann)).toEqual({ topic: "feed", epoch, offset: start + 1, data: "hello" });

    // Ann drops; two messages go by; she comes back from the last offset she saw.
    ann.ws.terminate();
    expect(await next(bob)).toEqual({ type: "leave", name: "ann" });
    bob.ws.send("while away 1");
    bob.ws.send("while away 2");
    bob.ws.send("who");
    expect(await next(bob)).toEqual({ type: "who", names: ["bob"], count: 1 });
    const since = encodeURIComponent(JSON.stringify({ epoch, offset: start + 1 }));
    const back = await join(`/feed?name=ann&since=${since}`);
    const resumed = await take(back, 4);
    // The replay comes in order.
    expect(resumed.filter((m) => m.topic === "feed")).toEqual([
      { topic: "feed", epoch, offset: start + 2, data: "while away 1" },
      { topic: "feed", epoch, offset: start + 3, data: "while away 2" },
    ]);
    expect(resumed).toContainEqual({ type: "join", name: "ann" });
    expect(resumed.find((m) => m.type === "subscribed")).toMatchObject({
      result: { ok: true, recovered: 2, position: { epoch, offset: start + 3 } },
    });
    expect(await next(bob)).toEqual({ type: "join", name: "ann" });
    bob.ws.send("welcome back");
    expect(await next(back)).toEqual({
      topic: "feed",
      epoch,
      offset: start + 4,
      data: "welcome back",
    });
    // Nothing was delivered twice, and bob never got his own messages.
    const offsets = back.messages
      .map((m) => JSON.parse(m) as Received)
      .filter((m) => m.topic === "feed")
      .map((m) => m.offset);
    expect(offsets).toEqual([start + 2, start + 3, start + 4]);
    expect(bob.messages.some((m) => m.includes('"topic"'))).toBe(false);
  });

  it("resumes from the client's `resume` parameter when the service gives no `since`", async () => {
    const dee = await join("/feed?name=dee");
    const subscribed = (await take(dee, 2)).find((m) => m.type === "subscribed") as {
      result: { position: { epoch: string; offset: number } };
    };
    const { epoch, offset } = subscribed.result.position;
    dee.ws.terminate();
    const fay = await join("/feed?name=fay");
    fay.ws.send("missed 1");
    fay.ws.send("missed 2");
    fay.ws.send("who"); // answered after both were published
    await eventually(() => fay.messages.some((m) => m.includes('"who"')), 10_000, "who");
    const resume = encodeURIComponent(JSON.stringify({ feed: { epoch, offset } }));
    const back = await join(`/feed?name=dee&resume=${resume}`);
    const isFeed = (m: Received) => m.topic === "feed";
    await eventually(
      () => back.messages.filter((m) => isFeed(JSON.parse(m) as Received)).length >= 2,
      10_000,
      "the replay",
    );
    const received = back.messages.map((m) => JSON.parse(m) as Received);
    expect(received.filter(isFeed).map((m) => [m.offset, m.data])).toEqual([
      [offset + 1, "missed 1"],
      [offset + 2, "missed 2"],
    ]);
    expect(received.find((m) => m.type === "subscribed")).toMatchObject({
      result: { ok: true, recovered: 2 },
    });

    // A malformed parameter is ignored (and logged): the client starts live.
    const live = await join("/feed?name=gus&resume=%7Bnot%20json");
    const first = await take(live, 2);
    expect(first.find((m) => m.type === "subscribed")).toMatchObject({
      result: { ok: true, recovered: 0 },
    });
  });

  it("delivers what a service publishes before what it then sends the same client", async () => {
    const cy = await join("/feed?name=cy");
    await take(cy, 2); // subscribed, and its own join
    cy.ws.send("burst 200");
    const got: Received[] = [];
    for (let i = 0; i < 201; i++) got.push(await next(cy));
    const data = got.filter((m) => m.topic === "feed").map((m) => m.data);
    expect(data).toEqual(Array.from({ length: 200 }, (_, i) => `burst ${i}`));
    // The direct send comes after every message published before it.
    expect(got.at(-1)).toEqual({ type: "burst-done" });
  });
}

describe("topics through services, isolation main", () => run("main"));
describe("topics through services, isolation worker", () => run("worker"));
