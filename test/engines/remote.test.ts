import { MessageChannel } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import { EngineError } from "../../src/engines/engine.js";
import { MemoryBus, MemoryEngine } from "../../src/engines/memory.js";
import { type EngineChannel, type EngineWire, RemoteEngine } from "../../src/engines/remote.js";
import { EngineHost } from "../../src/engines/remote-host.js";
import { engineContract, waitFor } from "./contract.js";

// The engine of `serve --workers N`: remote engines whose calls cross a structured-clone
// channel (a MessagePort here, node:cluster IPC in production) to one host.

function channelPair(): { near: EngineChannel; far: EngineChannel; close(): void } {
  const { port1, port2 } = new MessageChannel();
  const wrap = (port: typeof port1): EngineChannel => ({
    send: (message) => port.postMessage(message),
    onMessage: (handler) => port.on("message", (message: EngineWire) => handler(message)),
  });
  return {
    near: wrap(port1),
    far: wrap(port2),
    close() {
      port1.close();
    },
  };
}

function remoteNodes(count: number) {
  let time = 1_000;
  const bus = new MemoryBus({ now: () => time });
  const host = new EngineHost((nodeId) => new MemoryEngine({ bus, nodeId }));
  const pairs = Array.from({ length: count }, () => channelPair());
  const released = pairs.map((pair) => host.serve(pair.far));
  const engines = pairs.map((pair, i) => new RemoteEngine(`worker-${i + 1}`, pair.near));
  return {
    bus,
    host,
    engines,
    released,
    async cleanup() {
      await Promise.all(engines.map((engine) => engine.close()));
      await host.close();
      for (const pair of pairs) pair.close();
    },
    advance(ms: number) {
      time += ms;
    },
  };
}

engineContract("remote (through a host)", async (count) => remoteNodes(count));

describe("remote engines and their host", () => {
  it("a worker that goes away takes its members with it, with leave events to the others", async () => {
    const nodes = remoteNodes(2);
    const changes: string[] = [];
    try {
      await nodes.engines[0]!.start({ message: () => {}, presence: () => {} });
      await nodes.engines[1]!.start({
        message: () => {},
        presence: (change) => changes.push(`${change.type} ${change.member.clientId}`),
      });
      await nodes.engines[1]!.addInterest("room");
      await nodes.engines[0]!.join("room", { clientId: "a", info: null });
      await waitFor(() => changes.length === 1, 5_000, "the join");
      // The worker died: the primary releases what its channel held.
      nodes.engines[0]!.disconnected();
      await nodes.released[0]!();
      await waitFor(() => changes.length === 2, 5_000, "the leave");
      expect(changes).toEqual(["join a", "leave a"]);
      expect(await nodes.engines[1]!.presenceCount("room")).toBe(0);
    } finally {
      await nodes.cleanup();
    }
  });

  it("carries engine errors across with their codes", async () => {
    const nodes = remoteNodes(1);
    try {
      await nodes.engines[0]!.start({ message: () => {}, presence: () => {} });
      const failure = await nodes.engines[0]!.publish("t", new Uint8Array(1), {
        binary: true,
        history: { limit: -1 },
      }).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(EngineError);
      expect(failure).toMatchObject({ code: "ENGINE_INVALID_HISTORY_POLICY" });
    } finally {
      await nodes.cleanup();
    }
  });

  it("fails waiting calls when the host is gone", async () => {
    const pair = channelPair();
    const engine = new RemoteEngine("orphan", pair.near);
    const start = engine.start({ message: () => {}, presence: () => {} });
    engine.disconnected();
    await expect(start).rejects.toMatchObject({ code: "ENGINE_UNAVAILABLE" });
    await expect(engine.position("t")).rejects.toMatchObject({ code: "ENGINE_CLOSED" });
    pair.close();
  });
});
