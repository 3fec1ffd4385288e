import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { NatsEngine, type NatsEngineOptions } from "../../src/engines/nats.js";
import { type Broker, brokerBinary, startNats } from "./brokers.js";
import { engineContract, waitFor } from "./contract.js";
import { type LossyNats, startLossyNats } from "./lossy-nats.js";
import { recorder } from "./recorder.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const binary = brokerBinary("nats-server");

describe("NATS engine options", () => {
  it("refuses what cannot work, with ENGINE_INVALID_OPTIONS and the reason", () => {
    const invalid = (options: NatsEngineOptions, reason: RegExp) =>
      expect(() => new NatsEngine(options)).toThrow(
        expect.objectContaining({
          code: "ENGINE_INVALID_OPTIONS",
          message: expect.stringMatching(reason),
        }),
      );
    invalid({ prefix: "a.b" }, /prefix/);
    invalid({ presenceTtlMs: 1_000, heartbeatMs: 1_000 }, /heartbeatMs/);
    invalid({ tailCheckMs: 0 }, /tailCheckMs/);
    invalid({ tailCheckMs: Number.NaN }, /tailCheckMs/);
    expect(new NatsEngine({ tailCheckMs: 50 }).nodeId).toMatch(/./);
  });
});

describe.skipIf(binary === undefined)("NATS engine", () => {
  let nats: Broker;

  beforeAll(async () => {
    nats = await startNats(binary!);
  });

  afterAll(async () => {
    await nats?.dispose();
  });

  engineContract("nats", async (count) => {
    let time = 1_000;
    const prefix = `c${randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const engines = Array.from(
      { length: count },
      (_, i) =>
        new NatsEngine({ nats: nats.url, prefix, nodeId: `node-${i + 1}`, now: () => time }),
    );
    return {
      engines,
      async cleanup() {
        await Promise.all(engines.map((engine) => engine.close()));
      },
      advance(ms: number) {
        time += ms;
      },
    };
  });
});

describe.skipIf(binary === undefined)("NATS engine: brokers and nodes failing", () => {
  let nats: Broker;
  const engines: NatsEngine[] = [];
  const made = (options: Partial<NatsEngineOptions> & { prefix: string }) => {
    const engine = new NatsEngine({ nats: nats.url, ...options });
    engines.push(engine);
    return engine;
  };

  const prefixed = (label: string) => `${label}${randomUUID().replaceAll("-", "").slice(0, 10)}`;

  beforeAll(async () => {
    nats = await startNats(binary!);
  });

  const proxies: LossyNats[] = [];

  afterEach(async () => {
    await Promise.all(engines.splice(0).map((engine) => engine.close()));
    await Promise.all(proxies.splice(0).map((proxy) => proxy.close()));
  });

  afterAll(async () => {
    await nats?.dispose();
  });

  /**
   * A publisher behind a proxy that loses what `lossy.drop` picks, and a receiver (through the
   * proxy too with `viaProxy`) listening to "feed"; `publish` stores each message with history.
   */
  async function lossyFeed(
    label: string,
    receiverOptions: Partial<NatsEngineOptions> & { viaProxy?: boolean },
  ) {
    const prefix = prefixed(label);
    const lossy = await startLossyNats(nats.port);
    proxies.push(lossy);
    const publisher = made({ prefix, nodeId: "p", nats: lossy.url });
    const { viaProxy, ...options } = receiverOptions;
    const receiver = made({
      prefix,
      nodeId: "r",
      ...(viaProxy ? { nats: lossy.url } : {}),
      ...options,
    });
    const seen = recorder();
    await publisher.start(recorder().handlers);
    await receiver.start(seen.handlers);
    await receiver.addInterest("feed");
    return {
      prefix,
      lossy,
      seen,
      publish: (value: string) =>
        publisher.publish("feed", new TextEncoder().encode(value), {
          binary: false,
          history: { limit: 100 },
        }),
      got: () => seen.messages.map((m) => Buffer.from(m.payload).toString()),
    };
  }

  it("refuses a node id another live node holds", async () => {
    const prefix = prefixed("dup");
    await made({ prefix, nodeId: "same" }).start(recorder().handlers);
    await expect(made({ prefix, nodeId: "same" }).start(recorder().handlers)).rejects.toMatchObject(
      {
        code: "ENGINE_DUPLICATE_NODE_ID",
      },
    );
  });

  it("removes the members of a killed node within its presence ttl, with leave events", async () => {
    const prefix = prefixed("killed");
    const watcher = made({ prefix, nodeId: "watcher", presenceTtlMs: 2_000 });
    const seen = recorder();
    await watcher.start(seen.handlers);
    await watcher.addInterest("room");
    const fixture = fileURLToPath(new URL("./fixtures/engine-node.ts", import.meta.url));
    const child = spawn(
      process.execPath,
      ["--import", "tsx", fixture, "nats", nats.url, prefix, "doomed", "room", "2000", "c1", "c2"],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await waitFor(() => seen.changes.length === 2, 20_000, "the doomed node's joins");
      const killedAt = Date.now();
      child.kill("SIGKILL");
      await waitFor(() => seen.changes.length === 4, 15_000, "the leaves of the killed node");
      expect(seen.changes.slice(2).map((change) => change.type)).toEqual(["leave", "leave"]);
      expect(await watcher.presence("room")).toEqual([]);
      // Not before the TTL (2 s) less the heartbeat the killed node last sent (ttl / 3 ago at
      // most), and soon after it. A TTL long enough that a loaded machine keeps a live node.
      const elapsed = Date.now() - killedAt;
      expect(elapsed).toBeGreaterThanOrEqual(2_000 - 700);
      expect(elapsed).toBeLessThan(10_000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("survives a NATS restart: calls fail clearly meanwhile, then interest and history carry on", async () => {
    const prefix = prefixed("restart");
    const [publisher, receiver] = [made({ prefix, nodeId: "p" }), made({ prefix, nodeId: "r" })];
    const seen = recorder();
    await publisher.start(recorder().handlers);
    await receiver.start(seen.handlers);
    await receiver.addInterest("feed");
    const text = (value: string) => new TextEncoder().encode(value);
    const history = { limit: 100 };
    for (let i = 1; i <= 5; i++)
      await publisher.publish("feed", text(`m${i}`), { binary: false, history });
    await waitFor(() => seen.messages.length === 5, 5_000, "the first messages");
    await nats.stop();
    await expect(
      publisher.publish("feed", text("lost"), { binary: false, history }),
    ).rejects.toMatchObject({
      code: "ENGINE_UNAVAILABLE",
    });
    await nats.start();
    // JetStream kept its store: the same epoch goes on, and the receiver is subscribed again.
    let position: { epoch: string; offset: number } | undefined;
    for (let i = 0; i < 100 && position === undefined; i++) {
      position = await publisher
        .publish("feed", text("after"), { binary: false, history })
        .catch(() => undefined);
      if (position === undefined) await sleep(100);
    }
    expect(position?.epoch).toBe(seen.messages[0]!.epoch);
    await waitFor(
      () => seen.messages.some((m) => Buffer.from(m.payload).toString() === "after"),
      10_000,
      "a message after the restart",
    );
    const offsets = seen.messages.map((m) => m.offset);
    expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
    expect(new Set(offsets).size).toBe(offsets.length);
  }, 60_000);

  /**
   * A receiver behind the proxy with a late tail check (so that only a gap's own read-back reads
   * the stream): m1 arrives, then m2's send is lost and `alsoLose` picks what else the proxy
   * drops (one more message); m3 reveals the gap, and m2 and m3 must arrive in order.
   */
  async function fillsGapDespite(
    label: string,
    what: string,
    alsoLose: (lossy: LossyNats) => void,
  ): Promise<void> {
    const { prefix, lossy, seen, publish, got } = await lossyFeed(label, {
      viaProxy: true,
      tailCheckMs: 60_000,
    });
    await publish("m1");
    await waitFor(() => got().length === 1, 5_000, "the first message");
    lossy.drop = (subject, payload) => subject.startsWith(`${prefix}.c.`) && payload.includes("m2");
    alsoLose(lossy);
    await publish("m2");
    await publish("m3");
    await waitFor(() => got().length === 3, 20_000, what);
    expect(lossy.dropped).toBe(2);
    expect(got()).toEqual(["m1", "m2", "m3"]);
    expect(seen.messages.map((m) => m.offset)).toEqual([1, 2, 3]);
  }

  it("reads a lost send back even when its first read-back fails", async () => {
    // The receiver's first request for the subject's last message, when m3 reveals the gap, is
    // lost too: that read-back fails (its request times out).
    await fillsGapDespite("retry-read", "the gap filled by a second read-back", (lossy) => {
      const lostSend = lossy.drop!;
      let lastReadsToLose = 1;
      lossy.drop = (subject, payload) => {
        if (lostSend(subject, payload)) return true;
        if (/^\$JS\.API\.(STREAM\.MSG|DIRECT)\.GET\./.test(subject) && lastReadsToLose > 0) {
          lastReadsToLose--;
          return true;
        }
        return false;
      };
    });
  }, 40_000);

  it("does not take a read-back cut short by a lost delivery for the whole gap", async () => {
    // m2 is lost too the first time the stream delivers it to the receiver's read-back: the
    // read's ordered consumer sees the hole and ends there, short of m3.
    await fillsGapDespite("short-read", "the gap filled by a whole read", (lossy) => {
      let deliveriesToLose = 1;
      lossy.dropDelivery = (_subject, reply, payload) => {
        if (!reply.startsWith("$JS.ACK.") || !payload.includes("m2") || deliveriesToLose === 0) {
          return false;
        }
        deliveriesToLose--;
        return true;
      };
    });
  }, 40_000);

  it("fails a recovery whose history reads keep losing a delivery, rather than skip a message", async () => {
    const { lossy, seen, publish, got } = await lossyFeed("short-recover", { viaProxy: true });
    const receiver = engines.at(-1)!;
    for (const value of ["m1", "m2", "m3"]) await publish(value);
    await waitFor(() => got().length === 3, 5_000, "the messages");
    const epoch = seen.messages[0]!.epoch;
    lossy.dropDelivery = (_subject, reply, payload) =>
      reply.startsWith("$JS.ACK.") && payload.includes("m2");
    await expect(receiver.recover("feed", { epoch, offset: 0 })).rejects.toMatchObject({
      code: "ENGINE_UNAVAILABLE",
      message: expect.stringContaining("ended short"),
    });
    expect(lossy.dropped).toBe(2);
    lossy.dropDelivery = null;
    const recovery = await receiver.recover("feed", { epoch, offset: 0 });
    const values = recovery.ok
      ? recovery.messages.map((m) => Buffer.from(m.payload).toString())
      : [];
    expect(values).toEqual(["m1", "m2", "m3"]);
  }, 40_000);

  it("reads back sends core NATS lost: a gap a later message reveals, and a lost tail", async () => {
    const { prefix, lossy, seen, publish, got } = await lossyFeed("lossy", { tailCheckMs: 200 });
    // The sends of m2, m4 and m5 are lost (each is stored, as a batch of its own).
    const lost = ["m2", "m4", "m5"];
    lossy.drop = (subject, payload) =>
      subject.startsWith(`${prefix}.c.`) && lost.some((m) => payload.includes(m));
    await publish("m1");
    await waitFor(() => got().length === 1, 5_000, "the first message");
    // m3's send shows the gap m2 left.
    await publish("m2");
    await publish("m3");
    await waitFor(() => got().length === 3, 5_000, "the gap filled");
    // Nothing comes after m4 and m5 to show they are missing.
    await publish("m4");
    await publish("m5");
    await waitFor(() => got().length === 5, 5_000, "the lost tail");
    expect(lossy.dropped).toBe(3);
    // Nothing twice, even after further checks.
    await sleep(500);
    expect(got()).toEqual(["m1", "m2", "m3", "m4", "m5"]);
    expect(seen.messages.map((m) => m.offset)).toEqual([1, 2, 3, 4, 5]);
  }, 30_000);
});
