import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { NatsEngine, type NatsEngineOptions } from "../../src/engines/nats.js";
import { type Broker, brokerBinary, startNats } from "./brokers.js";
import { engineContract, waitFor } from "./contract.js";
import { recorder } from "./recorder.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const binary = brokerBinary("nats-server");

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

  afterEach(async () => {
    await Promise.all(engines.splice(0).map((engine) => engine.close()));
  });

  afterAll(async () => {
    await nats?.dispose();
  });

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
    const watcher = made({ prefix, nodeId: "watcher", presenceTtlMs: 1_000 });
    const seen = recorder();
    await watcher.start(seen.handlers);
    await watcher.addInterest("room");
    const fixture = fileURLToPath(new URL("./fixtures/engine-node.ts", import.meta.url));
    const child = spawn(
      process.execPath,
      ["--import", "tsx", fixture, "nats", nats.url, prefix, "doomed", "room", "1000", "c1", "c2"],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await waitFor(() => seen.changes.length === 2, 20_000, "the doomed node's joins");
      const killedAt = Date.now();
      child.kill("SIGKILL");
      await waitFor(() => seen.changes.length === 4, 10_000, "the leaves of the killed node");
      expect(seen.changes.slice(2).map((change) => change.type)).toEqual(["leave", "leave"]);
      expect(await watcher.presence("room")).toEqual([]);
      // Expiry (1 s) plus at most one sweep of the watcher (333 ms), with room for the VM.
      expect(Date.now() - killedAt).toBeLessThan(5_000);
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
});
