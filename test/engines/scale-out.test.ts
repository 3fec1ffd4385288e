// Several Switchboard nodes sharing topics through a real Redis or NATS: each node is
// `switchboard serve --engine redis://...` (or nats://) in a process of its own, clients are spread over them. Delivery once and
// in order per publisher, presence the same from every node, a node killed with SIGKILL while
// its clients resume elsewhere, and the broker restarted mid-stream.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createSession, type Session } from "../../src/client/node.js";
import { startProxy } from "../client/proxy.js";
import { client, type TestClient } from "../services/helpers.js";
import { type Broker, brokerBinary, startNats, startRedis } from "./brokers.js";
import { waitFor } from "./contract.js";

const PROJECT = fileURLToPath(new URL("../../", import.meta.url));
const MAIN = join(PROJECT, "src/cli/main.ts");
const INDEX = pathToFileURL(join(PROJECT, "src/index.ts")).href;

/**
 * The room: every client subscribes to "room" as a member named by its `name` parameter
 * (resuming from the `resume` parameter when it has one); a text is published to the room as
 * "<name>:<text>"; "who" answers with the sorted names present on every node.
 */
const ROOM = `import { defineService } from ${JSON.stringify(INDEX)};
export const config = { isolation: "main" };
export default defineService({
  upgrade(request) {
    return { data: { name: request.query.get("name") ?? "anon" } };
  },
  async open(client) {
    await client.subscribe("room", { member: { name: client.data.name } });
    client.send("subscribed");
  },
  async message(client, message, ctx) {
    const text = message.text();
    if (text === "who") {
      const members = await ctx.presence("room");
      client.send("who " + JSON.stringify(members.map((m) => m.info.name).sort()));
      return;
    }
    ctx.publish("room", client.data.name + ":" + text);
  },
});
`;

const CONFIG = {
  // Enveloped, so the reconnecting session knows its positions; history to recover from.
  topics: [{ pattern: "room", history: { limit: 10_000 }, envelope: true }],
};

interface Node {
  child: ChildProcess;
  port: number;
  /** What the node printed so far (warnings and errors). */
  output(): string;
  url(path: string): string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function scaleOut(
  name: string,
  binary: string | undefined,
  start: (binary: string) => Promise<Broker>,
) {
  describe.skipIf(binary === undefined)(`scale-out through ${name}: three nodes`, () => {
    let broker: Broker;
    let root: string;
    const nodes: Node[] = [];
    const closers: Array<() => unknown> = [];

    async function startNode(engine: string): Promise<Node> {
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          MAIN,
          "serve",
          root,
          "--port",
          "0",
          "--engine",
          engine,
          "--config",
          join(root, "switchboard.config.json"),
          "--log-level",
          "warn",
        ],
        { cwd: PROJECT, stdio: ["ignore", "pipe", "pipe"] },
      );
      let output = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      await waitFor(
        () => /listening on ws:\/\/127\.0\.0\.1:\d+/.test(output) || child.exitCode !== null,
        30_000,
        "a node's listening line",
      );
      const match = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (match === null) throw new Error(`a node did not start: ${output}`);
      const port = Number(match[1]);
      const node = {
        child,
        port,
        output: () => output,
        url: (path: string) => `ws://127.0.0.1:${port}${path}`,
      };
      nodes.push(node);
      return node;
    }

    async function joined(url: string): Promise<TestClient> {
      const c = await client(url);
      closers.push(() => c.ws.terminate());
      expect(await c.next()).toBe("subscribed");
      return c;
    }

    /** The data of the enveloped messages a plain client got, in order. */
    const data = (c: TestClient) =>
      c.messages
        .filter((m) => m.startsWith("{"))
        .map((m) => (JSON.parse(m) as { data: string }).data);

    beforeAll(async () => {
      broker = await start(binary!);
      root = mkdtempSync(join(tmpdir(), "switchboard-scale-"));
      writeFileSync(join(root, "package.json"), JSON.stringify({ type: "module" }));
      writeFileSync(join(root, "room.ts"), ROOM);
      writeFileSync(join(root, "switchboard.config.json"), JSON.stringify(CONFIG));
    });

    afterEach(async () => {
      for (const close of closers.splice(0).reverse()) await close();
      for (const node of nodes.splice(0)) {
        // A process ended by a signal has a signalCode and no exitCode.
        if (node.child.exitCode === null && node.child.signalCode === null) {
          const exited = once(node.child, "exit");
          node.child.kill("SIGTERM");
          await Promise.race([exited, sleep(15_000)]);
          if (node.child.exitCode === null && node.child.signalCode === null) {
            node.child.kill("SIGKILL");
          }
        }
      }
    });

    afterAll(async () => {
      await broker?.dispose();
      if (root) rmSync(root, { recursive: true, force: true });
    });

    it("delivers every message once, in order per publisher, to clients on every node; presence agrees", async () => {
      const engine = `${broker.url}?prefix=once-${Date.now()}`;
      const started = [await startNode(engine), await startNode(engine), await startNode(engine)];
      const listeners: TestClient[] = [];
      for (const [i, node] of started.entries()) {
        listeners.push(await joined(node.url(`/room?name=listener${i}a`)));
        listeners.push(await joined(node.url(`/room?name=listener${i}b`)));
      }
      const publishers = await Promise.all(
        started.map((node, i) => joined(node.url(`/room?name=pub${i}`))),
      );
      const perPublisher = 200;
      await Promise.all(
        publishers.map(async (publisher) => {
          for (let seq = 1; seq <= perPublisher; seq++) publisher.ws.send(String(seq));
        }),
      );
      const total = perPublisher * publishers.length;
      try {
        for (const listener of listeners) {
          await waitFor(() => data(listener).length >= total, 20_000, `${total} messages`);
        }
      } catch (error) {
        // What each listener got and what the nodes said, to tell loss from a failed publish.
        const counts = listeners.map((listener) => data(listener).length).join(", ");
        const said = started.map((node, i) => `node ${i}:\n${node.output()}`).join("\n");
        throw new Error(`${(error as Error).message}; listeners got ${counts}\n${said}`);
      }
      await sleep(200);
      for (const listener of listeners) {
        const got = data(listener);
        expect(got).toHaveLength(total);
        for (let i = 0; i < publishers.length; i++) {
          const mine = got
            .filter((d) => d.startsWith(`pub${i}:`))
            .map((d) => Number(d.split(":")[1]));
          expect(mine).toEqual(Array.from({ length: perPublisher }, (_, k) => k + 1));
        }
        // And the same interleaving everywhere: one order per topic.
        expect(got).toEqual(data(listeners[0]!));
      }
      const names = [
        ...listeners.map((_, k) => `listener${Math.floor(k / 2)}${k % 2 === 0 ? "a" : "b"}`),
        ...publishers.map((_, i) => `pub${i}`),
      ].sort();
      for (const asker of [listeners[0]!, listeners[2]!, listeners[4]!]) {
        const before = asker.messages.length;
        asker.ws.send("who");
        await waitFor(
          () => asker.messages.slice(before).some((m) => m.startsWith("who ")),
          5_000,
          "a presence answer",
        );
        const answer = asker.messages.slice(before).find((m) => m.startsWith("who "))!;
        expect(JSON.parse(answer.slice(4))).toEqual(names);
      }
    }, 120_000);

    it("a node killed with SIGKILL: its client resumes on another node with nothing lost, its members expire", async () => {
      const engine = `${broker.url}?prefix=killed-${Date.now()}&presenceTtlMs=1500`;
      const [doomed, survivor, other] = [
        await startNode(engine),
        await startNode(engine),
        await startNode(engine),
      ];
      // The load balancer in front: the doomed node first, the survivor once it is gone.
      const balancer = await startProxy(doomed.port);
      closers.push(() => balancer.close());
      const session: Session = createSession(`ws://127.0.0.1:${balancer.port}/room?name=roamer`, {
        backoff: { initialMs: 50, maxMs: 200 },
      });
      closers.push(() => session.close());
      const received: string[] = [];
      session.on("topic", (message) => received.push(String(message.data)));
      await new Promise<void>((resolve) => session.on("open", () => resolve()));
      const publisher = await joined(other.url("/room?name=pub"));
      const watcher = await joined(survivor.url("/room?name=watcher"));

      let sent = 0;
      const send = (count: number) => {
        for (let i = 0; i < count; i++) publisher.ws.send(String(++sent));
      };
      send(50);
      await waitFor(() => received.length >= 50, 10_000, "the first 50 messages");

      balancer.retarget(survivor.port);
      doomed.child.kill("SIGKILL");
      // Published while the roamer has no connection: it must get these from history.
      send(50);
      await waitFor(() => received.length >= 100, 20_000, "every message after the move");
      send(50);
      await waitFor(() => received.length >= 150, 10_000, "the messages after that");
      await sleep(200);
      expect(received).toEqual(Array.from({ length: 150 }, (_, i) => `pub:${i + 1}`));

      // The doomed node's member ("roamer" there) is gone from presence within its ttl; the
      // roamer is present again through the survivor.
      const wanted = `who ${JSON.stringify(["pub", "roamer", "watcher"])}`;
      let present = false;
      for (let i = 0; i < 50 && !present; i++) {
        const before = watcher.messages.length;
        watcher.ws.send("who");
        await waitFor(
          () => watcher.messages.slice(before).some((m) => m.startsWith("who ")),
          5_000,
          "a presence answer",
        );
        present = watcher.messages.slice(before).includes(wanted);
        if (!present) await sleep(200);
      }
      expect(present).toBe(true);
    }, 120_000);

    it("goes on when the broker restarts mid-stream: no duplicates, order kept, delivery resumes", async () => {
      const engine = `${broker.url}?prefix=restart-${Date.now()}`;
      const [a, b] = [await startNode(engine), await startNode(engine)];
      const listener = await joined(b.url("/room?name=listener"));
      const publisher = await joined(a.url("/room?name=pub"));
      // The publisher keeps going (one message every 5 ms, at most 3,000) until the listener has
      // had 50 of those sent after the restart, however long the nodes take to reconnect.
      let sent = 0;
      let sending = true;
      const timer = setInterval(() => {
        if (sending && sent < 3_000) publisher.ws.send(String(++sent));
      }, 5);
      closers.push(() => clearInterval(timer));
      const seqs = () => data(listener).map((d) => Number(d.split(":")[1]));
      await waitFor(() => seqs().length >= 100, 10_000, "100 messages before the restart");
      await broker.stop(true);
      await sleep(300);
      await broker.start();
      const sentAfterRestart = sent;
      await waitFor(
        () => seqs().filter((seq) => seq > sentAfterRestart).length >= 50,
        30_000,
        "50 messages sent after the restart",
      );
      sending = false;
      const last = sent;
      await waitFor(() => seqs().includes(last), 20_000, "the last message sent");
      const got = seqs();
      // Strictly increasing: nothing twice, nothing out of order.
      for (let i = 1; i < got.length; i++) expect(got[i]).toBeGreaterThan(got[i - 1]!);
      // What was published while the broker was away may be lost (the publish failed), but once
      // delivery resumed, nothing is missing.
      const resumed = got.find((seq) => seq > sentAfterRestart)!;
      expect(got.filter((seq) => seq >= resumed)).toEqual(
        Array.from({ length: last - resumed + 1 }, (_, i) => resumed + i),
      );
    }, 120_000);
  });
}

scaleOut("Redis", brokerBinary("redis-server"), startRedis);
scaleOut("NATS", brokerBinary("nats-server"), startNats);
