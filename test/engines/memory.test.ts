import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import type {
  Engine,
  EngineHandlers,
  HistoryPolicy,
  PresenceMember,
} from "../../src/engines/engine.js";
import { EngineError } from "../../src/engines/engine.js";
import { MemoryBus, MemoryEngine } from "../../src/engines/memory.js";
import { engineContract } from "./contract.js";
import { recorder } from "./recorder.js";

/** Several MemoryEngines on one bus, with a clock the tests move. */
function memoryNodes(count: number) {
  let time = 1_000;
  const bus = new MemoryBus({ now: () => time });
  const engines = Array.from(
    { length: count },
    (_, i) => new MemoryEngine({ bus, nodeId: `node-${i + 1}` }),
  );
  return {
    bus,
    engines,
    async cleanup() {
      await Promise.all(engines.map((engine) => engine.close()));
    },
    advance(ms: number) {
      time += ms;
    },
  };
}

engineContract("memory", async (count) => memoryNodes(count));

/**
 * The memory engine made to behave like a network one: every reply and every delivery comes a
 * macrotask later (in order). Running the contract on it checks that the suite itself never
 * relies on synchronous delivery.
 */
class DeferredEngine implements Engine {
  readonly nodeId: string;
  constructor(private readonly inner: Engine) {
    this.nodeId = inner.nodeId;
  }
  start(handlers: EngineHandlers) {
    return later(
      this.inner.start({
        message: (message) => setImmediate(() => handlers.message(message)),
        presence: (change) => setImmediate(() => handlers.presence(change)),
      }),
    );
  }
  publish(...args: Parameters<Engine["publish"]>) {
    return later(this.inner.publish(...args));
  }
  addInterest(topic: string) {
    return later(this.inner.addInterest(topic));
  }
  removeInterest(topic: string) {
    return later(this.inner.removeInterest(topic));
  }
  join(topic: string, member: PresenceMember) {
    return later(this.inner.join(topic, member));
  }
  leave(topic: string, clientId: string) {
    return later(this.inner.leave(topic, clientId));
  }
  presence(topic: string) {
    return later(this.inner.presence(topic));
  }
  presenceCount(topic: string) {
    return later(this.inner.presenceCount(topic));
  }
  position(topic: string) {
    return later(this.inner.position(topic));
  }
  recover(...args: Parameters<Engine["recover"]>) {
    return later(this.inner.recover(...args));
  }
  close() {
    return later(this.inner.close());
  }
}

async function later<T>(result: Promise<T>): Promise<T> {
  const value = await result;
  await new Promise((resolve) => setImmediate(resolve));
  return value;
}

engineContract("memory, replies and deliveries deferred", async (count) => {
  const nodes = memoryNodes(count);
  return { ...nodes, engines: nodes.engines.map((engine) => new DeferredEngine(engine)) };
});

// ─────────────────────────── memory-specific ───────────────────────────

type Recorded = ReturnType<typeof recorder>;

const text = (value: string) => new TextEncoder().encode(value);

const opened: MemoryEngine[] = [];
afterEach(async () => {
  vi.unstubAllGlobals();
  for (const engine of opened.splice(0)) await engine.close();
});

/** Started engines on one bus (with a movable clock), and what each received. */
async function started(count: number) {
  const nodes = memoryNodes(count);
  opened.push(...nodes.engines);
  const records: Recorded[] = [];
  for (const engine of nodes.engines) {
    const record = recorder();
    await engine.start(record.handlers);
    records.push(record);
  }
  return { ...nodes, records };
}

async function rejectsWith(promise: Promise<unknown>, code: string) {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(EngineError);
  expect((error as EngineError).code).toBe(code);
}

describe("MemoryEngine: bounded memory", () => {
  it("keeps 10 messages through 100,000 publishes with limit 10", async () => {
    const { bus, engines } = await started(1);
    const engine = engines[0]!;
    const topic = "bounded";
    const history = { limit: 10 };
    let epoch = "";
    for (let i = 1; i <= 100_000; i++) {
      const position = await engine.publish(topic, text(`m${i}`), { binary: false, history });
      epoch = position.epoch;
      if (i % 10_000 === 0) expect(bus.stats().messages).toBe(10);
    }
    expect(bus.stats()).toMatchObject({ streams: 1, messages: 10 });
    const recovery = await engine.recover(topic, { epoch, offset: 99_990 });
    expect(recovery.ok).toBe(true);
    if (!recovery.ok) return;
    expect(recovery.messages.map((m) => m.offset)).toEqual(
      Array.from({ length: 10 }, (_, i) => 99_991 + i),
    );
    expect(new TextDecoder().decode(recovery.messages[9]!.payload)).toBe("m100000");
    expect((await engine.recover(topic, { epoch, offset: 99_989 })).ok).toBe(false);
  });

  it("keeps no messages for streams without a policy, but keeps their epoch and offset", async () => {
    const { bus, engines } = await started(1);
    const engine = engines[0]!;
    const first = await engine.publish("plain", text("m1"), { binary: false });
    for (let i = 2; i <= 1_000; i++) await engine.publish("plain", text(`m${i}`), { binary: true });
    expect(bus.stats()).toMatchObject({ streams: 1, messages: 0 });
    expect(await engine.position("plain")).toEqual({ epoch: first.epoch, offset: 1_000 });
    expect(await engine.recover("plain", { epoch: first.epoch, offset: 999 })).toMatchObject({
      ok: false,
      reason: "trimmed",
    });
  });

  it("keeps only what ttlMs allows as the clock moves, without timers", async () => {
    const { bus, engines, advance } = await started(1);
    const engine = engines[0]!;
    for (let i = 0; i < 1_000; i++) {
      await engine.publish("ttl", text(`m${i}`), { binary: false, history: { ttlMs: 10 } });
      advance(1);
      expect(bus.stats().messages).toBeLessThanOrEqual(10);
    }
    expect(bus.stats().messages).toBe(10);
    advance(100);
    // Expired messages go when the topic is next touched.
    await engine.position("ttl");
    expect(bus.stats().messages).toBe(0);
  });

  it("measures ages with the injected clock of a standalone engine", async () => {
    let time = 0;
    const engine = new MemoryEngine({ now: () => time });
    opened.push(engine);
    await engine.start(recorder().handlers);
    const { epoch } = await engine.publish("t", text("m1"), {
      binary: false,
      history: { ttlMs: 1_000 },
    });
    time += 999;
    const kept = await engine.recover("t", { epoch, offset: 0 });
    expect(kept.ok && kept.messages.map((m) => m.offset)).toEqual([1]);
    time += 1;
    expect(await engine.recover("t", { epoch, offset: 0 })).toEqual({
      ok: false,
      reason: "trimmed",
      position: { epoch, offset: 1 },
    });
  });

  it("refuses a clock beside a bus: the clock belongs to the bus", () => {
    expect(() => new MemoryEngine({ bus: new MemoryBus(), now: () => 0 })).toThrow(
      expect.objectContaining({ code: "ENGINE_INVALID_OPTIONS" }),
    );
  });

  it("replays the same as a naive model of the history, whatever the policies and clock", async () => {
    const policies: Array<HistoryPolicy | undefined> = [
      undefined,
      { limit: 0 },
      { limit: 1 },
      { limit: 3 },
      { limit: 70 },
      { ttlMs: 5 },
      { limit: 4, ttlMs: 8 },
      { limit: 100, ttlMs: 20 },
    ];
    const op = fc.oneof(
      fc.record({ kind: fc.constant("publish" as const), policy: fc.nat(policies.length - 1) }),
      fc.record({
        kind: fc.constant("burst" as const),
        policy: fc.nat(policies.length - 1),
        count: fc.integer({ min: 1, max: 150 }),
      }),
      fc.record({ kind: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 12 }) }),
      fc.record({ kind: fc.constant("recover" as const), back: fc.integer({ min: 0, max: 120 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
        let time = 0;
        const bus = new MemoryBus({ now: () => time });
        const engine = new MemoryEngine({ bus });
        await engine.start(recorder().handlers);
        // The model: every kept message with its time, trimmed the obvious way.
        let model: Array<{ offset: number; at: number }> = [];
        let policy: HistoryPolicy | undefined;
        let offset = 0;
        const trimModel = () => {
          if (policy === undefined) model = [];
          const { limit, ttlMs } = policy ?? {};
          model = model.filter(
            (entry, i) =>
              (limit === undefined || model.length - i <= limit) &&
              (ttlMs === undefined || time - entry.at < ttlMs),
          );
        };
        const publish = async (index: number) => {
          policy = policies[index];
          const position = await engine.publish("t", text(`m${offset + 1}`), {
            binary: false,
            history: policy,
          });
          offset++;
          expect(position.offset).toBe(offset);
          model = policy === undefined ? [] : [...model, { offset, at: time }];
          trimModel();
        };
        const { epoch } = await engine.position("t");
        for (const step of ops) {
          // What is held is what the policy allows, no more (and no less).
          trimModel();
          await engine.position("t");
          expect(bus.stats().messages).toBe(model.length);
          if (step.kind === "publish") await publish(step.policy);
          else if (step.kind === "burst") {
            for (let i = 0; i < step.count; i++) await publish(step.policy);
          } else if (step.kind === "advance") time += step.ms;
          else {
            const since = Math.max(0, offset - step.back);
            const recovery = await engine.recover("t", { epoch, offset: since });
            trimModel();
            const expected = model.filter((entry) => entry.offset > since).map((e) => e.offset);
            const complete =
              since === offset || (model.length > 0 && model[0]!.offset <= since + 1);
            if (complete) {
              expect(recovery.ok).toBe(true);
              if (!recovery.ok) return;
              expect(recovery.messages.map((m) => m.offset)).toEqual(expected);
              for (const message of recovery.messages) {
                expect(new TextDecoder().decode(message.payload)).toBe(`m${message.offset}`);
              }
            } else {
              expect(recovery).toEqual({
                ok: false,
                reason: "trimmed",
                position: { epoch, offset },
              });
            }
          }
        }
        await engine.close();
      }),
      { numRuns: 150 },
    );
  });
});

describe("MemoryEngine: delivery", () => {
  it("delivers synchronously: the publisher's own handler runs before publish settles", async () => {
    const { engines, records } = await started(2);
    await engines[0]!.addInterest("t");
    await engines[1]!.addInterest("t");
    const publishing = engines[0]!.publish("t", text("now"), { binary: false });
    expect(records[0]!.messages).toHaveLength(1);
    expect(records[1]!.messages).toHaveLength(1);
    await publishing;
  });

  it("queues what a handler publishes behind the current message, so every node sees one order", async () => {
    const bus = new MemoryBus();
    const a = new MemoryEngine({ bus, nodeId: "a" });
    const b = new MemoryEngine({ bus, nodeId: "b" });
    opened.push(a, b);
    const seenByA: number[] = [];
    const replies: Promise<unknown>[] = [];
    await a.start({
      message: (message) => {
        seenByA.push(message.offset);
        // a answers the first message from inside its handler, before b has seen it.
        if (message.offset === 1) replies.push(a.publish("t", text("reply"), { binary: false }));
      },
      presence: () => {},
    });
    const atB = recorder();
    await b.start(atB.handlers);
    await a.addInterest("t"); // a first: it hears each message before b
    await b.addInterest("t");
    await a.publish("t", text("first"), { binary: false });
    await Promise.all(replies);
    expect(seenByA).toEqual([1, 2]);
    expect(atB.messages.map((m) => m.offset)).toEqual([1, 2]);
    expect(atB.messages.map((m) => m.origin)).toEqual(["a", "a"]);
  });

  it("delivers nothing to a node whose interest a handler removed mid-delivery", async () => {
    const bus = new MemoryBus();
    const a = new MemoryEngine({ bus, nodeId: "a" });
    const b = new MemoryEngine({ bus, nodeId: "b" });
    const c = new MemoryEngine({ bus, nodeId: "c" });
    opened.push(a, b, c);
    await a.start({
      message: () => {
        void b.removeInterest("t");
        void c.close();
      },
      presence: () => {},
    });
    const atB = recorder();
    const atC = recorder();
    await b.start(atB.handlers);
    await c.start(atC.handlers);
    for (const engine of [a, b, c]) await engine.addInterest("t");
    await a.publish("t", text("x"), { binary: false });
    expect(atB.messages).toEqual([]);
    expect(atC.messages).toEqual([]);
  });

  it("hands a throwing handler's error to a microtask, and the other nodes still receive", async () => {
    const thrown: Array<() => void> = [];
    vi.stubGlobal("queueMicrotask", (callback: () => void) => thrown.push(callback));
    const bus = new MemoryBus();
    const failing = new MemoryEngine({ bus, nodeId: "failing" });
    const fine = new MemoryEngine({ bus, nodeId: "fine" });
    opened.push(failing, fine);
    const boom = new Error("handler bug");
    await failing.start({
      message: () => {
        throw boom;
      },
      presence: () => {},
    });
    const record = recorder();
    await fine.start(record.handlers);
    await failing.addInterest("t");
    await fine.addInterest("t");
    await expect(failing.publish("t", text("x"), { binary: false })).resolves.toMatchObject({
      offset: 1,
    });
    expect(record.messages.map((m) => m.offset)).toEqual([1]);
    vi.unstubAllGlobals();
    expect(thrown).toHaveLength(1);
    expect(() => thrown[0]!()).toThrow(boom);
    // The bus is not left mid-delivery.
    await failing.removeInterest("t");
    await fine.publish("t", text("y"), { binary: false });
    expect(record.messages.map((m) => m.offset)).toEqual([1, 2]);
  });

  it("shares frozen messages, members and changes: a handler cannot alter what others see", async () => {
    const { engines, records } = await started(2);
    await engines[0]!.addInterest("t");
    await engines[1]!.addInterest("t");
    await engines[0]!.publish("t", text("x"), { binary: false });
    await engines[0]!.join("t", { clientId: "c1", info: { name: "ann", tags: ["a"] } });
    const message = records[1]!.messages[0]!;
    const change = records[1]!.changes[0]!;
    expect(Object.isFrozen(message)).toBe(true);
    expect(Object.isFrozen(change)).toBe(true);
    expect(Object.isFrozen(change.member)).toBe(true);
    const info = change.member.info as { name: string; tags: string[] };
    expect(Object.isFrozen(info)).toBe(true);
    expect(Object.isFrozen(info.tags)).toBe(true);
    expect(records[0]!.messages[0]).toBe(message);
  });

  it("keeps engines without a shared bus apart", async () => {
    const a = new MemoryEngine();
    const b = new MemoryEngine();
    opened.push(a, b);
    expect(a.nodeId).not.toBe(b.nodeId);
    expect(a.nodeId).toMatch(/^[0-9a-f-]{36}$/);
    const ra = recorder();
    const rb = recorder();
    await a.start(ra.handlers);
    await b.start(rb.handlers);
    await a.addInterest("t");
    await b.addInterest("t");
    const published = await a.publish("t", text("x"), { binary: false });
    await a.join("t", { clientId: "c1", info: null });
    expect(ra.messages).toHaveLength(1);
    expect(rb.messages).toEqual([]);
    expect(rb.changes).toEqual([]);
    const other = await b.position("t");
    expect(other.offset).toBe(0);
    expect(other.epoch).not.toBe(published.epoch);
    expect(await b.presenceCount("t")).toBe(0);
  });
});

describe("MemoryEngine: lifecycle and errors", () => {
  it("must be started first, once", async () => {
    const engine = new MemoryEngine({ nodeId: "n" });
    opened.push(engine);
    await rejectsWith(engine.publish("t", text("x"), { binary: false }), "ENGINE_NOT_STARTED");
    await rejectsWith(engine.position("t"), "ENGINE_NOT_STARTED");
    await engine.start(recorder().handlers);
    await rejectsWith(engine.start(recorder().handlers), "ENGINE_ALREADY_STARTED");
    expect(engine.nodeId).toBe("n");
  });

  it("refuses a node id already on the bus, and frees it on close", async () => {
    const bus = new MemoryBus();
    const first = new MemoryEngine({ bus, nodeId: "same" });
    const second = new MemoryEngine({ bus, nodeId: "same" });
    opened.push(first, second);
    await first.start(recorder().handlers);
    await rejectsWith(second.start(recorder().handlers), "ENGINE_DUPLICATE_NODE_ID");
    await first.close();
    await second.start(recorder().handlers);
    expect(bus.stats().nodes).toBe(1);
  });

  it("rejects calls after close, except releasing ones", async () => {
    const engine = new MemoryEngine();
    await engine.start(recorder().handlers);
    await engine.close();
    await rejectsWith(engine.publish("t", text("x"), { binary: false }), "ENGINE_CLOSED");
    await rejectsWith(engine.addInterest("t"), "ENGINE_CLOSED");
    await rejectsWith(engine.join("t", { clientId: "c", info: null }), "ENGINE_CLOSED");
    await rejectsWith(engine.recover("t", { epoch: "e", offset: 0 }), "ENGINE_CLOSED");
    await rejectsWith(engine.start(recorder().handlers), "ENGINE_CLOSED");
    await expect(engine.removeInterest("t")).resolves.toBeUndefined();
    await expect(engine.leave("t", "c")).resolves.toBeUndefined();
    await expect(engine.close()).resolves.toBeUndefined();
  });

  it("releases everything of a closed node, and it hears nothing of its own departure", async () => {
    const { bus, engines, records } = await started(2);
    const [a, b] = engines as [MemoryEngine, MemoryEngine];
    for (const engine of [a, b]) await engine.addInterest("t");
    await a.addInterest("u");
    await a.join("t", { clientId: "a1", info: null });
    await a.join("u", { clientId: "a2", info: null });
    await b.join("t", { clientId: "b1", info: null });
    expect(bus.stats()).toMatchObject({ nodes: 2, members: 3, interests: 3 });
    const heard = records[0]!.changes.length;
    await a.close();
    expect(records[0]!.changes).toHaveLength(heard);
    expect(records[1]!.changes.at(-1)).toEqual({
      type: "leave",
      topic: "t",
      member: { clientId: "a1", info: null },
    });
    expect(bus.stats()).toMatchObject({ nodes: 1, members: 1, interests: 1 });
  });

  it("rejects an invalid history policy without using an offset", async () => {
    const { engines } = await started(1);
    const engine = engines[0]!;
    const invalid: HistoryPolicy[] = [
      { limit: -1 },
      { limit: 1.5 },
      { limit: Number.NaN },
      { limit: Number.POSITIVE_INFINITY },
      { ttlMs: -1 },
      { ttlMs: Number.POSITIVE_INFINITY },
      { limit: 5, ttlMs: Number.NaN },
    ];
    for (const history of invalid) {
      await rejectsWith(
        engine.publish("t", text("x"), { binary: false, history }),
        "ENGINE_INVALID_HISTORY_POLICY",
      );
    }
    expect((await engine.position("t")).offset).toBe(0);
  });

  it("rejects member info that cannot be serialized, and lists undefined info as null", async () => {
    const { engines } = await started(1);
    const engine = engines[0]!;
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    for (const member of [
      { clientId: "c", info: 1n },
      { clientId: "c", info: cyclic },
      { clientId: "c", info: () => {} },
      { clientId: "", info: null },
    ]) {
      await rejectsWith(engine.join("t", member), "ENGINE_INVALID_MEMBER");
    }
    expect(await engine.presenceCount("t")).toBe(0);
    await engine.join("t", { clientId: "c", info: undefined });
    expect(await engine.presence("t")).toEqual([{ clientId: "c", info: null }]);
  });
});
