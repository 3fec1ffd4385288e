import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { RedisEngine, type RedisEngineOptions } from "../../src/engines/redis.js";
import { type Broker, brokerBinary, startRedis } from "./brokers.js";
import { engineContract, waitFor } from "./contract.js";
import { recorder } from "./recorder.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const binary = brokerBinary("redis-server");

describe.skipIf(binary === undefined)("Redis engine", () => {
  let redis: Broker;

  beforeAll(async () => {
    redis = await startRedis(binary!);
  });

  afterAll(async () => {
    await redis?.dispose();
  });

  // Each set of nodes gets its own prefix (one server's keys) and a clock the tests move.
  engineContract("redis", async (count) => {
    let time = 1_000;
    const prefix = `contract-${randomUUID()}`;
    const engines = Array.from(
      { length: count },
      (_, i) =>
        new RedisEngine({
          redis: redis.url,
          prefix,
          nodeId: `node-${i + 1}`,
          now: () => time,
        }),
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

describe.skipIf(binary === undefined)("Redis engine: brokers and nodes failing", () => {
  let redis: Broker;
  const engines: RedisEngine[] = [];
  const made = (options: Partial<RedisEngineOptions> & { prefix: string }) => {
    const engine = new RedisEngine({ redis: redis.url, ...options });
    engines.push(engine);
    return engine;
  };

  beforeAll(async () => {
    redis = await startRedis(binary!);
  });

  afterEach(async () => {
    await Promise.all(engines.splice(0).map((engine) => engine.close()));
  });

  afterAll(async () => {
    await redis?.dispose();
  });

  it("subscribes to a topic's channel only on nodes with interest", async () => {
    const prefix = `interest-${randomUUID()}`;
    const [a, b] = [made({ prefix, nodeId: "a" }), made({ prefix, nodeId: "b" })];
    const seen = recorder();
    await a.start(seen.handlers);
    await b.start(recorder().handlers);
    await a.addInterest("room");
    const probe = new Redis(redis.url);
    try {
      const count = async () => (await probe.pubsub("NUMSUB", `${prefix}:c:room`))[1];
      expect(await count()).toBe(1);
      await b.addInterest("room");
      expect(await count()).toBe(2);
      await a.removeInterest("room");
      await b.removeInterest("room");
      expect(await count()).toBe(0);
    } finally {
      probe.disconnect();
    }
  });

  it("refuses a node id another live node holds", async () => {
    const prefix = `dup-${randomUUID()}`;
    await made({ prefix, nodeId: "same" }).start(recorder().handlers);
    const second = made({ prefix, nodeId: "same" });
    await expect(second.start(recorder().handlers)).rejects.toMatchObject({
      code: "ENGINE_DUPLICATE_NODE_ID",
    });
  });

  it("removes the members of a killed node within its presence ttl, with leave events", async () => {
    const prefix = `killed-${randomUUID()}`;
    const watcher = made({ prefix, nodeId: "watcher", presenceTtlMs: 2_000 });
    const seen = recorder();
    await watcher.start(seen.handlers);
    await watcher.addInterest("room");
    const fixture = fileURLToPath(new URL("./fixtures/engine-node.ts", import.meta.url));
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        fixture,
        "redis",
        redis.url,
        prefix,
        "doomed",
        "room",
        "2000",
        "c1",
        "c2",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await waitFor(() => seen.changes.length === 2, 20_000, "the doomed node's joins");
      expect(await watcher.presenceCount("room")).toBe(2);
      const killedAt = Date.now();
      child.kill("SIGKILL");
      await waitFor(() => seen.changes.length === 4, 15_000, "the leaves of the killed node");
      const elapsed = Date.now() - killedAt;
      expect(seen.changes.slice(2).map((change) => change.type)).toEqual(["leave", "leave"]);
      expect(await watcher.presence("room")).toEqual([]);
      // Not before the TTL (2 s) less the heartbeat the killed node last sent (ttl / 3 ago at
      // most), and soon after it. A TTL long enough that a loaded machine keeps a live node.
      expect(elapsed).toBeGreaterThanOrEqual(2_000 - 700);
      expect(elapsed).toBeLessThan(10_000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("loses nothing history kept when a node's subscription drops mid-stream", async () => {
    const prefix = `dropped-${randomUUID()}`;
    const [publisher, receiver] = [made({ prefix, nodeId: "p" }), made({ prefix, nodeId: "r" })];
    const seen = recorder();
    await publisher.start(recorder().handlers);
    await receiver.start(seen.handlers);
    await receiver.addInterest("feed");
    const probe = new Redis(redis.url);
    try {
      const history = { limit: 1_000 };
      for (let i = 1; i <= 300; i++) {
        await publisher.publish("feed", new TextEncoder().encode(`m${i}`), {
          binary: false,
          history,
        });
        // Twice mid-stream, the receiver's subscriber connection is cut.
        if (i === 100 || i === 200) await probe.call("CLIENT", "KILL", "TYPE", "pubsub");
      }
      await waitFor(() => seen.messages.length >= 300, 10_000, "all 300 messages");
      await sleep(100);
      expect(seen.messages.map((m) => m.offset)).toEqual(
        Array.from({ length: 300 }, (_, i) => i + 1),
      );
    } finally {
      probe.disconnect();
    }
  });

  it("survives a Redis restart: calls fail clearly meanwhile, interest comes back, the epoch changes", async () => {
    const prefix = `restart-${randomUUID()}`;
    const [publisher, receiver] = [
      made({ prefix, nodeId: "p", maxPendingCommands: 5 }),
      made({ prefix, nodeId: "r" }),
    ];
    const seen = recorder();
    await publisher.start(recorder().handlers);
    await receiver.start(seen.handlers);
    await receiver.addInterest("feed");
    const text = (value: string) => new TextEncoder().encode(value);
    const before = await publisher.publish("feed", text("before"), {
      binary: false,
      history: { limit: 10 },
    });
    await waitFor(() => seen.messages.length === 1, 5_000, "the first message");

    await redis.stop(true);
    // While Redis is down: a bounded number of calls wait, the rest fail at once, clearly.
    const waiting = Array.from({ length: 5 }, () =>
      publisher.publish("feed", text("during"), { binary: false }).catch((error: unknown) => error),
    );
    await sleep(50);
    await expect(
      publisher.publish("feed", text("refused"), { binary: false }),
    ).rejects.toMatchObject({
      code: "ENGINE_UNAVAILABLE",
    });
    await redis.start();
    // The waiting ones went through once Redis was back, or failed with the same code.
    for (const outcome of await Promise.all(waiting)) {
      if (outcome instanceof Error) expect(outcome).toMatchObject({ code: "ENGINE_UNAVAILABLE" });
    }
    // Redis came back empty: a new epoch, and recovering from the old one says so.
    const after = await publisher.publish("feed", text("after"), {
      binary: false,
      history: { limit: 10 },
    });
    expect(after.epoch).not.toBe(before.epoch);
    const recovery = await receiver.recover("feed", before);
    expect(recovery).toMatchObject({ ok: false, reason: "epoch-changed" });
    // The receiver's subscription was restored: it gets what is published now.
    await waitFor(
      () => seen.messages.some((m) => Buffer.from(m.payload).toString() === "after"),
      10_000,
      "a message after the restart",
    );
  }, 30_000);
});
