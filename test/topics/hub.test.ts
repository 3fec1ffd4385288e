// The topic hub on the in-memory engine, with subscribers that record what they get: fan-out to
// thousands in order, presence with silent subscribers left out, recovery joined to the live
// stream with no loss and no duplicates, gap reporting, slow-consumer policies, and changes to
// the subscriber set during a fan-out.
import { afterEach, describe, expect, it } from "vitest";
import type { PreparedBatch } from "../../src/connection/prepared-batch.js";
import type { PresenceChange } from "../../src/engines/engine.js";
import { MemoryBus, MemoryEngine } from "../../src/engines/memory.js";
import { silentLogger } from "../../src/server/logger.js";
import { type HubSubscriber, TopicHub, type TopicPolicy } from "../../src/topics/hub.js";

class FakeSubscriber implements HubSubscriber {
  readonly received: string[] = [];
  bufferedAmount = 0;
  closed: { code: number; reason: string } | null = null;
  /** The slices it was handed, one per deliver() call. */
  readonly slices: Array<{ batch: PreparedBatch; start: number; end: number }> = [];
  onDeliver: ((batch: PreparedBatch) => void) | null = null;
  constructor(readonly clientId: string) {}
  deliver(batch: PreparedBatch, start: number, end: number): void {
    this.slices.push({ batch, start, end });
    for (let i = start; i < end; i++) {
      this.received.push(Buffer.from(batch.messages[i]!.payload).toString());
    }
    this.onDeliver?.(batch);
  }
  close(code: number, reason: string): void {
    this.closed = { code, reason };
  }
}

const hubs: TopicHub[] = [];
afterEach(async () => {
  for (const hub of hubs.splice(0)) await hub.close();
});

async function makeHub(
  policies: TopicPolicy[] = [],
  onPresence?: (change: PresenceChange) => void,
  engine = new MemoryEngine(),
): Promise<TopicHub> {
  const hub = new TopicHub({ engine, policies, logger: silentLogger, onPresence });
  await hub.start();
  hubs.push(hub);
  return hub;
}

const text = (value: string) => Buffer.from(value);

describe("fan-out", () => {
  it("delivers every message to 2,000 subscribers, in order", async () => {
    const hub = await makeHub();
    const subscribers = Array.from({ length: 2_000 }, (_, i) => new FakeSubscriber(`c${i}`));
    for (const s of subscribers) await hub.subscribe(s, "news");
    const sent = Array.from({ length: 100 }, (_, i) => `m${i}`);
    for (const m of sent) await hub.publish("news", text(m), false);
    for (const s of subscribers) expect(s.received).toEqual(sent);
  });

  it("frames each message once for every subscriber", async () => {
    const hub = await makeHub();
    const seen = new Set<PreparedBatch>();
    const subscribers = Array.from({ length: 50 }, (_, i) => new FakeSubscriber(`c${i}`));
    for (const s of subscribers) {
      s.onDeliver = (message) => seen.add(message);
      await hub.subscribe(s, "news");
    }
    await hub.publish("news", text("once"), false);
    expect(seen.size).toBe(1);
  });

  it("leaves out the publishing client when asked, and other topics' subscribers", async () => {
    const hub = await makeHub();
    const [a, b, other] = [
      new FakeSubscriber("a"),
      new FakeSubscriber("b"),
      new FakeSubscriber("o"),
    ];
    await hub.subscribe(a, "room");
    await hub.subscribe(b, "room");
    await hub.subscribe(other, "elsewhere");
    await hub.publish("room", text("from a"), false, "a");
    expect(a.received).toEqual([]);
    expect(b.received).toEqual(["from a"]);
    expect(other.received).toEqual([]);
  });

  it("stops delivering after unsubscribe and after remove", async () => {
    const hub = await makeHub();
    const [a, b] = [new FakeSubscriber("a"), new FakeSubscriber("b")];
    await hub.subscribe(a, "t");
    await hub.subscribe(b, "t");
    await hub.subscribe(b, "u");
    await hub.publish("t", text("1"), false);
    hub.unsubscribe(a, "t");
    hub.remove(b);
    await hub.publish("t", text("2"), false);
    await hub.publish("u", text("3"), false);
    expect(a.received).toEqual(["1"]);
    expect(b.received).toEqual(["1"]);
    expect(hub.localSubscribers("t")).toBe(0);
  });

  it("is safe when subscribers subscribe, unsubscribe or leave during a fan-out", async () => {
    const hub = await makeHub();
    const subscribers = Array.from({ length: 10 }, (_, i) => new FakeSubscriber(`c${i}`));
    for (const s of subscribers) await hub.subscribe(s, "t");
    const late = new FakeSubscriber("late");
    // c0 removes c5 and itself, c1 subscribes a newcomer, c2 unsubscribes c9.
    subscribers[0]!.onDeliver = () => {
      hub.remove(subscribers[5]!);
      hub.unsubscribe(subscribers[0]!, "t");
    };
    subscribers[1]!.onDeliver = () => {
      void hub.subscribe(late, "t");
    };
    subscribers[2]!.onDeliver = () => hub.unsubscribe(subscribers[9]!, "t");
    await hub.publish("t", text("first"), false);
    for (const s of subscribers) s.onDeliver = null;
    await hub.publish("t", text("second"), false);
    expect(subscribers[0]!.received).toEqual(["first"]);
    expect(subscribers[5]!.received).toEqual([]);
    expect(subscribers[9]!.received).toEqual([]);
    expect(subscribers[3]!.received).toEqual(["first", "second"]);
    // The newcomer starts with the next message.
    expect(late.received).toEqual(["second"]);
  });

  it("wraps messages in an envelope with their position when the topic asks", async () => {
    const hub = await makeHub([{ pattern: "env:*", envelope: true }]);
    const s = new FakeSubscriber("s");
    const { position } = await hub.subscribe(s, "env:a");
    await hub.publish("env:a", text("hello"), false);
    await hub.publish("env:a", Buffer.from([1, 2, 255]), true);
    expect(s.received.map((m) => JSON.parse(m))).toEqual([
      { topic: "env:a", epoch: position.epoch, offset: 1, data: "hello" },
      { topic: "env:a", epoch: position.epoch, offset: 2, data64: "AQL/" },
    ]);
  });
});

describe("fan-out per turn", () => {
  it("gathers what one turn publishes into one slice per subscriber, framed once", async () => {
    const hub = await makeHub();
    const subscribers = Array.from({ length: 100 }, (_, i) => new FakeSubscriber(`c${i}`));
    for (const s of subscribers) await hub.subscribe(s, "news");
    const sent = Array.from({ length: 50 }, (_, i) => `m${i}`);
    await Promise.all(sent.map((m) => hub.publish("news", text(m), false)));
    const batch = subscribers[0]!.slices[0]!.batch;
    for (const s of subscribers) {
      expect(s.received).toEqual(sent);
      expect(s.slices).toEqual([{ batch, start: 0, end: 50 }]);
    }
  });

  it("keeps one order across topics: A1 B1 A2 arrive as published", async () => {
    const hub = await makeHub();
    const both = new FakeSubscriber("both");
    const onlyA = new FakeSubscriber("a");
    await hub.subscribe(both, "A");
    await hub.subscribe(both, "B");
    await hub.subscribe(onlyA, "A");
    await Promise.all([
      hub.publish("A", text("A1"), false),
      hub.publish("B", text("B1"), false),
      hub.publish("A", text("A2"), false),
      hub.publish("A", text("A3"), false),
    ]);
    expect(both.received).toEqual(["A1", "B1", "A2", "A3"]);
    expect(onlyA.received).toEqual(["A1", "A2", "A3"]);
  });

  it("leaves a client's own messages out of a run as slices around them", async () => {
    const hub = await makeHub();
    const [a, b] = [new FakeSubscriber("a"), new FakeSubscriber("b")];
    await hub.subscribe(a, "room");
    await hub.subscribe(b, "room");
    await Promise.all([
      hub.publish("room", text("0"), false, "a"),
      hub.publish("room", text("1"), false, "b"),
      hub.publish("room", text("2"), false),
      hub.publish("room", text("3"), false, "a"),
      hub.publish("room", text("4"), false, "a"),
      hub.publish("room", text("5"), false),
    ]);
    expect(a.received).toEqual(["1", "2", "5"]);
    expect(a.slices.map(({ start, end }) => [start, end])).toEqual([
      [1, 3],
      [5, 6],
    ]);
    expect(b.received).toEqual(["0", "2", "3", "4", "5"]);
  });

  it("delivers what was published before an unsubscribe in the same turn", async () => {
    const hub = await makeHub();
    const [a, b] = [new FakeSubscriber("a"), new FakeSubscriber("b")];
    await hub.subscribe(a, "t");
    await hub.subscribe(b, "t");
    const published = hub.publish("t", text("before"), false);
    hub.unsubscribe(a, "t");
    const after = hub.publish("t", text("after"), false);
    await Promise.all([published, after]);
    expect(a.received).toEqual(["before"]);
    expect(b.received).toEqual(["before", "after"]);
  });

  it("goes out at once on drain(), ahead of what the caller writes next", async () => {
    const hub = await makeHub();
    const s = new FakeSubscriber("s");
    await hub.subscribe(s, "t");
    void hub.publish("t", text("queued"), false);
    expect(s.received).toEqual([]);
    hub.drain();
    expect(s.received).toEqual(["queued"]);
    await Promise.resolve();
    expect(s.received).toEqual(["queued"]);
  });

  it("bounds what a slow subscriber is handed past its limit to one run (64 KiB)", async () => {
    const hub = await makeHub([
      { pattern: "big", slowConsumer: { maxBufferedBytes: 100_000, action: "drop" } },
    ]);
    // A subscriber whose peer reads nothing: everything it is handed stays buffered.
    const slow = new FakeSubscriber("slow");
    slow.onDeliver = () => {
      const last = slow.slices.at(-1)!;
      for (let i = last.start; i < last.end; i++) {
        slow.bufferedAmount += last.batch.messages[i]!.payload.length;
      }
    };
    const fast = new FakeSubscriber("fast");
    await hub.subscribe(slow, "big");
    await hub.subscribe(fast, "big");
    const message = Buffer.alloc(40_000, 0x61);
    await Promise.all(Array.from({ length: 8 }, () => hub.publish("big", message, false)));
    // Runs of two (80,000 bytes reach the 64 KiB mark): 0 -> 80,000 -> 160,000, then dropped.
    expect(slow.received).toHaveLength(4);
    expect(slow.bufferedAmount).toBe(160_000);
    expect(hub.dropped("big")).toBe(4);
    expect(fast.received).toHaveLength(8);
  });
});

describe("presence", () => {
  it("lists and counts members with their records, leaves silent subscribers out", async () => {
    const changes: PresenceChange[] = [];
    const hub = await makeHub([], (change) => changes.push(change));
    const [ann, bob, spy] = [
      new FakeSubscriber("ann"),
      new FakeSubscriber("bob"),
      new FakeSubscriber("spy"),
    ];
    await hub.subscribe(ann, "room", { member: { name: "Ann" } });
    await hub.subscribe(bob, "room", { member: { name: "Bob" } });
    await hub.subscribe(spy, "room", { silent: true });
    expect(await hub.presenceCount("room")).toBe(2);
    expect(
      (await hub.presence("room")).sort((x, y) => x.clientId.localeCompare(y.clientId)),
    ).toEqual([
      { clientId: "ann", info: { name: "Ann" } },
      { clientId: "bob", info: { name: "Bob" } },
    ]);
    hub.remove(bob);
    hub.unsubscribe(spy, "room");
    await new Promise((resolve) => setImmediate(resolve));
    expect(await hub.presenceCount("room")).toBe(1);
    expect(changes.map((c) => `${c.type}:${c.member.clientId}`)).toEqual([
      "join:ann",
      "join:bob",
      "leave:bob",
    ]);
  });

  it("announces joins and leaves to the subscribers when the topic asks", async () => {
    const hub = await makeHub([{ pattern: "lobby", announce: true }]);
    const [ann, bob] = [new FakeSubscriber("ann"), new FakeSubscriber("bob")];
    await hub.subscribe(ann, "lobby", { member: "Ann" });
    await hub.subscribe(bob, "lobby", { member: "Bob" });
    hub.unsubscribe(bob, "lobby");
    await new Promise((resolve) => setImmediate(resolve));
    expect(ann.received.map((m) => JSON.parse(m))).toEqual([
      { topic: "lobby", presence: "join", member: { clientId: "ann", info: "Ann" } },
      { topic: "lobby", presence: "join", member: { clientId: "bob", info: "Bob" } },
      { topic: "lobby", presence: "leave", member: { clientId: "bob", info: "Bob" } },
    ]);
  });
});

describe("history and recovery", () => {
  const policies: TopicPolicy[] = [{ pattern: "h:*", history: { limit: 100 } }];

  it("replays what a reconnecting subscriber missed, then live, none lost or twice", async () => {
    const hub = await makeHub(policies);
    const first = new FakeSubscriber("c1");
    const { position } = await hub.subscribe(first, "h:room");
    for (let i = 1; i <= 5; i++) await hub.publish("h:room", text(`m${i}`), false);
    hub.remove(first);
    for (let i = 6; i <= 10; i++) await hub.publish("h:room", text(`m${i}`), false);
    const again = new FakeSubscriber("c1");
    const result = await hub.subscribe(again, "h:room", {
      since: { epoch: position.epoch, offset: 5 },
    });
    expect(result).toEqual({
      ok: true,
      position: { epoch: position.epoch, offset: 10 },
      recovered: 5,
    });
    await hub.publish("h:room", text("m11"), false);
    expect(first.received).toEqual(["m1", "m2", "m3", "m4", "m5"]);
    expect(again.received).toEqual(["m6", "m7", "m8", "m9", "m10", "m11"]);
  });

  it("joins a replay to messages published while it runs, with no duplicates", async () => {
    const bus = new MemoryBus();
    const engine = new MemoryEngine({ bus });
    const other = new MemoryEngine({ bus });
    const hub = await makeHub(policies, undefined, engine);
    await other.start({ message: () => {}, presence: () => {} });
    const watcher = new FakeSubscriber("w");
    const { position } = await hub.subscribe(watcher, "h:busy");
    for (let i = 1; i <= 20; i++) await hub.publish("h:busy", text(`m${i}`), false);
    const late = new FakeSubscriber("late");
    // Another node publishes while the subscription recovers.
    const recovering = hub.subscribe(late, "h:busy", {
      since: { epoch: position.epoch, offset: 3 },
    });
    const publishing = Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        other.publish("h:busy", text(`m${21 + i}`), { binary: false, history: { limit: 100 } }),
      ),
    );
    await Promise.all([recovering, publishing]);
    await hub.publish("h:busy", text("m31"), false);
    expect(late.received).toEqual(Array.from({ length: 28 }, (_, i) => `m${i + 4}`));
    await other.close();
  });

  it("recovers again when more arrives during a replay than can be held", async () => {
    const bus = new MemoryBus();
    const engine = new MemoryEngine({ bus });
    const other = new MemoryEngine({ bus });
    await other.start({ message: () => {}, presence: () => {} });
    // The first recovery answers with what history held when it was asked, but late.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const recover = engine.recover.bind(engine);
    let calls = 0;
    engine.recover = async (topic, since) => {
      const answer = await recover(topic, since);
      if (calls++ === 0) await gate;
      return answer;
    };
    const hub = new TopicHub({
      engine,
      policies,
      logger: silentLogger,
      maxHeldPerSubscriber: 5,
    });
    await hub.start();
    hubs.push(hub);
    const watcher = new FakeSubscriber("w");
    const { position } = await hub.subscribe(watcher, "h:flood");
    for (let i = 1; i <= 10; i++) await hub.publish("h:flood", text(`m${i}`), false);
    const late = new FakeSubscriber("late");
    const subscribing = hub.subscribe(late, "h:flood", {
      since: { epoch: position.epoch, offset: 3 },
    });
    await new Promise((resolve) => setImmediate(resolve));
    for (let i = 11; i <= 30; i++) {
      await other.publish("h:flood", text(`m${i}`), { binary: false, history: { limit: 100 } });
    }
    release();
    const result = await subscribing;
    expect(result).toMatchObject({ ok: true });
    await hub.publish("h:flood", text("m31"), false);
    expect(late.received).toEqual(Array.from({ length: 28 }, (_, i) => `m${i + 4}`));
    expect(calls).toBe(2);
    await other.close();
  });

  it("says plainly when the gap cannot be filled: trimmed, or another epoch", async () => {
    const hub = await makeHub([{ pattern: "short", history: { limit: 3 } }]);
    const s = new FakeSubscriber("s");
    const { position } = await hub.subscribe(s, "short");
    for (let i = 1; i <= 10; i++) await hub.publish("short", text(`m${i}`), false);
    hub.remove(s);
    const trimmed = await hub.subscribe(new FakeSubscriber("s2"), "short", {
      since: { epoch: position.epoch, offset: 2 },
    });
    expect(trimmed).toEqual({
      ok: false,
      reason: "trimmed",
      position: { epoch: position.epoch, offset: 10 },
    });
    const other = await hub.subscribe(new FakeSubscriber("s3"), "short", {
      since: { epoch: "an-epoch-that-never-was", offset: 9 },
    });
    expect(other).toMatchObject({ ok: false, reason: "epoch-changed" });
    // Within what was kept, recovery works.
    const s4 = new FakeSubscriber("s4");
    expect(
      await hub.subscribe(s4, "short", { since: { epoch: position.epoch, offset: 8 } }),
    ).toMatchObject({
      ok: true,
      recovered: 2,
    });
    expect(s4.received).toEqual(["m9", "m10"]);
  });
});

describe("recent history on subscribing", () => {
  it("replays the latest N kept messages, or as many as are kept, then live", async () => {
    const hub = await makeHub([{ pattern: "room", history: { limit: 10 } }]);
    for (let i = 1; i <= 30; i++) await hub.publish("room", text(`m${i}`), false);
    const five = new FakeSubscriber("five");
    const fifty = new FakeSubscriber("fifty");
    expect(await hub.subscribe(five, "room", { recent: 5 })).toMatchObject({
      ok: true,
      recovered: 5,
    });
    expect(await hub.subscribe(fifty, "room", { recent: 50 })).toMatchObject({
      ok: true,
      recovered: 10,
    });
    await hub.publish("room", text("m31"), false);
    expect(five.received).toEqual(["m26", "m27", "m28", "m29", "m30", "m31"]);
    expect(fifty.received).toEqual(Array.from({ length: 11 }, (_, i) => `m${21 + i}`));
  });

  it("replays nothing where the topic keeps nothing, and joins live without duplicates", async () => {
    const hub = await makeHub([{ pattern: "kept", history: { limit: 100 } }]);
    const none = new FakeSubscriber("none");
    expect(await hub.subscribe(none, "plain", { recent: 20 })).toMatchObject({
      ok: true,
      recovered: 0,
    });
    for (let i = 1; i <= 3; i++) await hub.publish("kept", text(`k${i}`), false);
    const s = new FakeSubscriber("s");
    const subscribing = hub.subscribe(s, "kept", { recent: 20 });
    // Published while the replay is being fetched: held, then joined after it.
    await hub.publish("kept", text("k4"), false);
    await subscribing;
    await hub.publish("kept", text("k5"), false);
    expect(s.received).toEqual(["k1", "k2", "k3", "k4", "k5"]);
  });
});

describe("slow consumers", () => {
  it("drops messages for a subscriber past the limit (counted), others unaffected", async () => {
    const hub = await makeHub([
      { pattern: "feed", slowConsumer: { maxBufferedBytes: 1_000, action: "drop" } },
    ]);
    const [fast, slow] = [new FakeSubscriber("fast"), new FakeSubscriber("slow")];
    await hub.subscribe(fast, "feed");
    await hub.subscribe(slow, "feed");
    await hub.publish("feed", text("1"), false);
    slow.bufferedAmount = 5_000;
    await hub.publish("feed", text("2"), false);
    await hub.publish("feed", text("3"), false);
    slow.bufferedAmount = 0;
    await hub.publish("feed", text("4"), false);
    expect(fast.received).toEqual(["1", "2", "3", "4"]);
    expect(slow.received).toEqual(["1", "4"]);
    expect(slow.closed).toBeNull();
    expect(hub.dropped("feed")).toBe(2);
  });

  it("closes a subscriber past the limit with the topic's code", async () => {
    const hub = await makeHub([
      {
        pattern: "strict",
        slowConsumer: { maxBufferedBytes: 1_000, action: "close", closeCode: 1013 },
      },
    ]);
    const [fast, slow] = [new FakeSubscriber("fast"), new FakeSubscriber("slow")];
    await hub.subscribe(fast, "strict");
    await hub.subscribe(slow, "strict");
    slow.bufferedAmount = 5_000;
    await hub.publish("strict", text("x"), false);
    expect(slow.closed).toEqual({ code: 1013, reason: "too slow for this topic" });
    expect(slow.received).toEqual([]);
    expect(fast.received).toEqual(["x"]);
  });
});
