// One suite for every transport: a runtime on the I/O thread, in a worker thread and in a child
// process must answer the same batches with the same commands. The runtime is driven directly
// with hand-built batches (no server, no sockets), as ServiceHost drives it.
//
// Starting a runtime costs a few hundred milliseconds in a worker or a process, so most tests
// share one started runtime of the full fixture, each with clients of its own; a test gets a
// runtime of its own when it ends it or needs another module.
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type BatchRecord, Command, Event, payloadOf } from "../../src/isolation/batch.js";
import { createMainTransport } from "../../src/isolation/main-transport.js";
import { createProcessTransport } from "../../src/isolation/process-transport.js";
import type { TransportFactory } from "../../src/isolation/transport.js";
import { createWorkerTransport } from "../../src/isolation/worker-transport.js";
import { openInfo, RuntimeHarness, START_CONFIG, upgradeInfo } from "./harness.js";

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

const FULL = fixture("full.ts");
const HELPER = fixture("_helper.ts");
/** What the shared runtime is started with, as the next instance of a reload would be. */
const RESTORED = { from: "the previous instance" };

const TRANSPORTS: Array<{ name: "main" | "worker" | "process"; factory: TransportFactory }> = [
  { name: "main", factory: createMainTransport },
  { name: "worker", factory: createWorkerTransport },
  { name: "process", factory: createProcessTransport },
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(TRANSPORTS)("$name transport", ({ name, factory }) => {
  const isolated = name !== "main";
  let shared: RuntimeHarness;
  /** Seq of the batch that carried Start to the shared runtime. */
  let startSeq = 0;
  let lastClient = 100;
  /** Opens a new client on the shared runtime. */
  const open = (info = openInfo()) => {
    const id = ++lastClient;
    shared.postRecords([Event.Open, id, info]);
    return id;
  };
  const message = (clientId: number, text: string) => shared.message(clientId, text);

  const own: RuntimeHarness[] = [];
  const launch = (file: string, options: { recycle?: boolean } = {}) => {
    const harness = new RuntimeHarness(factory, file, options);
    own.push(harness);
    return harness;
  };

  beforeAll(async () => {
    shared = new RuntimeHarness(factory, FULL);
    await shared.waitRecord(Command.Loaded);
    startSeq = shared.postRecords([
      Event.Start,
      { config: START_CONFIG, restore: { state: RESTORED } },
    ]);
    await shared.waitRecord(Command.Ready);
  });

  afterAll(async () => {
    // Whatever the tests did, the shared runtime's batches stayed in order.
    expect(shared.orderProblems()).toEqual([]);
    await shared.dispose();
    expect(shared.exitCalls).toBe(1);
  });

  afterEach(async () => {
    const all = own.splice(0);
    await Promise.all(all.map((h) => h.dispose()));
    // The exit is reported once, however the runtime ended.
    for (const h of all) expect(h.exitCalls).toBe(1);
  });

  it("packs payloads exactly when a boundary is crossed", () => {
    expect(shared.transport.isolation).toBe(name);
    expect(shared.transport.packs).toBe(isolated);
  });

  describe("load", () => {
    it("reports Loaded with the module's config, its hooks and the files it imported", () => {
      const loaded = shared.records(Command.Loaded);
      expect(loaded).toHaveLength(1);
      const info = loaded[0]!.record[1] as { config: unknown; hooks: unknown; imports: string[] };
      expect(info.config).toEqual({ maxMessageSize: 4096, headers: ["x-trace"] });
      expect(info.hooks).toEqual({
        upgrade: true,
        message: true,
        snapshot: true,
        restore: true,
        presence: false,
      });
      // The module itself always; what it imported is checked (and why not here) below.
      expect(info.imports).toContain(FULL);
      for (const file of info.imports) {
        expect(file).toMatch(/^\/.*\.ts$/);
        expect(file).not.toContain("node_modules");
      }
      // Loaded comes first, before any event was posted.
      expect(shared.batches[0]!.records[0]![0]).toBe(Command.Loaded);
      expect(shared.batches[0]!.ack).toBe(0);
    });

    // tsx posts its import reports from its loader thread, so some arrive after tsImport()
    // resolved; import-service.ts waits for the list to settle (this failed a few percent of
    // loads before it did).
    it("lists the local modules the service imported, however late tsx reports them", async () => {
      const h = launch(FULL);
      const { record } = await h.waitRecord(Command.Loaded);
      const { imports } = record[1] as { imports: string[] };
      expect(imports).toEqual(
        expect.arrayContaining([
          FULL,
          HELPER,
          fileURLToPath(new URL("../../src/services/define.ts", import.meta.url)),
        ]),
      );
    });

    it("reports the hooks a module does not have as absent, and no config", async () => {
      const h = launch(fixture("pull.ts"));
      const { record } = await h.waitRecord(Command.Loaded);
      expect(record[1]).toMatchObject({
        config: undefined,
        hooks: { upgrade: false, message: false, snapshot: false, restore: false, presence: false },
      });
    });

    it("fails with SB_ERR_SERVICE_LOAD when the module throws at import, then ends", async () => {
      const h = launch(fixture("throws-at-import.ts"));
      const exit = await h.waitExit();
      const failed = h.records(Command.Failed);
      expect(failed).toHaveLength(1);
      expect(failed[0]!.record[1]).toMatchObject({
        code: "SB_ERR_SERVICE_LOAD",
        message: expect.stringContaining("thrown at import on purpose"),
      });
      expect(h.records(Command.Loaded)).toHaveLength(0);
      // Failed is delivered before the exit, so the host learns why.
      expect(h.batchesBeforeExit).toBe(h.batches.length);
      expect(h.batchesBeforeExit).toBeGreaterThanOrEqual(1);
      expect(exit).toMatchObject({ reason: "exit", code: 1 });
    });

    it("fails with SB_ERR_NOT_A_SERVICE when the default export is not a service", async () => {
      const h = launch(fixture("not-a-service.ts"));
      const exit = await h.waitExit();
      const failed = h.records(Command.Failed);
      expect(failed).toHaveLength(1);
      expect(failed[0]!.record[1]).toMatchObject({
        code: "SB_ERR_NOT_A_SERVICE",
        message: expect.stringContaining("defineService"),
      });
      expect(h.batchesBeforeExit).toBeGreaterThanOrEqual(1);
      expect(exit).toMatchObject({ reason: "exit", code: 1 });
    });
  });

  describe("start", () => {
    it("answers Start with Ready once the start hook finished", async () => {
      const kinds = shared.received.map(({ record }) => record[0]);
      // The start hook logs, and it has finished before Ready.
      const started = shared.received.findIndex(({ record }) => record[3] === "started");
      expect(started).toBeGreaterThanOrEqual(0);
      expect(shared.received[started]!.record[2]).toEqual({ name: "full.ts" });
      expect(started).toBeLessThan(kinds.indexOf(Command.Ready));
      expect(shared.records(Command.Ready)).toHaveLength(1);
      await shared.waitAck(startSeq);
    });

    it("fails with SB_ERR_START_FAILED when the start hook throws, then ends", async () => {
      const h = launch(fixture("start-fails.ts"));
      await h.waitRecord(Command.Loaded);
      h.postRecords([Event.Start, { config: START_CONFIG }]);
      const exit = await h.waitExit();
      const failed = h.records(Command.Failed);
      expect(failed).toHaveLength(1);
      expect(failed[0]!.record[1]).toMatchObject({
        code: "SB_ERR_START_FAILED",
        message: "start hook exploded",
      });
      expect(h.records(Command.Ready)).toHaveLength(0);
      expect(exit).toMatchObject({ reason: "exit", code: 1 });
    });
  });

  describe("upgrade", () => {
    it("answers each Upgrade with the hook's decision", async () => {
      const ids = [11, 12, 13, 14, 15];
      const seq = shared.postRecords(
        [Event.Upgrade, 11, upgradeInfo("/accept", { protocols: ["a", "chat"] })],
        [Event.Upgrade, 12, upgradeInfo("/reject")],
        [Event.Upgrade, 13, upgradeInfo("/throw")],
        [Event.Upgrade, 14, upgradeInfo("/throw-later")],
        [Event.Upgrade, 15, upgradeInfo("/anything")],
      );
      const results = () =>
        shared
          .records(Command.UpgradeResult)
          .filter(({ record }) => ids.includes(record[1] as number));
      await shared.until(() => (results().length === 5 ? true : undefined), "5 upgrade results");
      const decisions = new Map(results().map(({ record }) => [record[1], record[2]]));
      expect(decisions.get(11)).toEqual({ accept: true, protocol: "chat" });
      expect(decisions.get(12)).toEqual({ accept: false, status: 401, reason: "login required" });
      expect(decisions.get(13)).toEqual({
        error: expect.objectContaining({
          code: "SB_ERR_HOOK_FAILED",
          message: "upgrade hook exploded",
        }),
      });
      expect(decisions.get(14)).toEqual({
        error: expect.objectContaining({
          code: "SB_ERR_HOOK_FAILED",
          message: "upgrade hook exploded later",
        }),
      });
      expect(decisions.get(15)).toEqual({ accept: true, protocol: "" });
      // Each failure is logged with the request's path.
      const logged = shared
        .records(Command.Log)
        .filter(({ record }) => record[3] === "the upgrade hook failed")
        .map(({ record }) => (record[2] as { path: string }).path);
      expect(logged.sort()).toEqual(["/throw", "/throw-later"]);
      await shared.waitAck(seq);
    });

    it("hands the upgrade hook's data to the client opened with its upgradeId", async () => {
      shared.postRecords(
        [
          Event.Upgrade,
          21,
          upgradeInfo("/accept", {
            query: "user=ann",
            headers: { "x-trace": "t1" },
            protocols: ["a", "chat"],
          }),
        ],
        [Event.Upgrade, 22, upgradeInfo("/accept", { query: "user=bob", protocols: ["a", "b"] })],
      );
      await shared.waitRecord(Command.UpgradeResult, (record) => record[1] === 22);
      await shared.waitRecord(Command.UpgradeResult, (record) => record[1] === 21);
      const kept = open(openInfo({ upgradeId: 21, protocol: "chat" }));
      // The second upgrade failed after the hook accepted it: its data is dropped.
      shared.postRecords([Event.UpgradeAbandoned, 22]);
      const dropped = open(openInfo({ upgradeId: 22, protocol: "b" }));
      message(dropped, "after open");
      const [first] = await shared.waitSends(kept, 1);
      expect(JSON.parse(first![0])).toEqual({
        id: String(kept),
        data: { user: "ann", tag: "tagged:t1" },
        protocol: "chat",
      });
      // The open hook sends nothing to a client without data: only the echo comes.
      expect(await shared.waitSends(dropped, 1)).toEqual([["after open", false]]);
    });
  });

  describe("messages", () => {
    it("delivers text and binary messages, echoed with the same kind", async () => {
      const id = open();
      const text = "grüße 🎉 text";
      const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff]);
      shared.post((w) => {
        w.addHot(Event.Message, id, 0, text);
        w.addHot(Event.Message, id, 1, bytes);
        w.addHot(Event.Message, id, 0, "");
      });
      const sends = await shared.waitSends(id, 3);
      expect(sends).toEqual([
        [text, false],
        [bytes.toString(), true],
        ["", false],
      ]);
      const binary = shared.records(Command.Send).filter(({ record }) => record[1] === id)[1]!;
      expect(binary.hot).toBe(true);
      expect(binary.record[3]).toEqual(bytes);
    });

    it(`carries messages and sends ${isolated ? "in the batch's buffer" : "by reference"}`, async () => {
      const id = open();
      const bytes = Buffer.from("0123456789abcdef".repeat(64));
      shared.message(id, bytes);
      const sent = shared.lastPosted!;
      const { batch, record } = await shared.waitRecord(Command.Send, (r) => r[1] === id);
      expect(record[3]).toEqual(bytes);
      if (isolated) {
        // Hot records travel in the packed stream only: no record objects to clone.
        expect(sent.records).toEqual([]);
        expect(sent.buffer).toBeInstanceOf(ArrayBuffer);
        expect(batch.records.some((r) => r[0] === Command.Send)).toBe(false);
        expect(batch.buffer).toBeInstanceOf(ArrayBuffer);
        // The payload read on this side is a view into the batch's own buffer.
        expect((record[3] as Buffer).buffer).toBe(batch.buffer);
        // A worker gets the buffer transferred (the sender's is detached); a process gets a
        // copy through the IPC channel.
        expect(sent.buffer!.byteLength).toBe(name === "worker" ? 0 : 16 * 1024);
      } else {
        // The very bytes posted, there and back: nothing was copied.
        expect(sent.records[0]!.at(-1)).toBe(bytes);
        expect(batch.buffer).toBeNull();
        expect(record[3]).toBe(bytes);
      }
    });

    it("answers 1,000 messages of one batch completely, in order, in a few batches", async () => {
      const id = open();
      const seq = shared.post((w) => {
        for (let i = 0; i < 1_000; i++) w.addHot(Event.Message, id, i % 2, `m${i}`);
      });
      const sends = await shared.waitSends(id, 1_000);
      expect(sends).toEqual(Array.from({ length: 1_000 }, (_, i) => [`m${i}`, i % 2 === 1]));
      await shared.waitAck(seq);
      const withSends = new Set(
        shared
          .records(Command.Send)
          .filter(({ record }) => record[1] === id)
          .map(({ batch }) => batch),
      );
      expect(withSends.size).toBeGreaterThanOrEqual(1);
      expect(withSends.size).toBeLessThanOrEqual(10);
      // Each of them acknowledges the event batch it answers.
      for (const batch of withSends) expect(batch.ack).toBe(seq);
    });

    it("acknowledges a batch of opens and closes alone only with the next batch it sends", async () => {
      const h = launch(FULL);
      await h.start();
      const before = h.batches.length;
      const quiet = h.postRecords([Event.Open, 1, openInfo()], [Event.Open, 2, openInfo()]);
      // Nothing to say and no bytes held for it on the I/O side: no batch of its own.
      await sleep(100);
      expect(h.batches.length).toBe(before);
      const seq = h.message(1, "hello");
      const answer = await h.waitAck(seq);
      expect(answer.ack).toBeGreaterThan(quiet);
      expect(h.sends(1)).toEqual([["hello", false]]);
    });

    it("acknowledges every event batch, in order", async () => {
      const id = open();
      const seqs: number[] = [];
      for (let i = 0; i < 20; i++) seqs.push(message(id, `n${i}`));
      await shared.waitSends(id, 20);
      await shared.waitAck(seqs.at(-1)!);
      const acks = new Set(shared.batches.map((batch) => batch.ack));
      for (const seq of seqs) expect(acks.has(seq)).toBe(true);
      expect(shared.sends(id).map(([text]) => text)).toEqual(seqs.map((_, i) => `n${i}`));
      expect(shared.orderProblems()).toEqual([]);
    });

    // An empty payload alone in a packed batch once left the batch without a buffer, and
    // payloadOf() threw on it: the message was lost in a worker or a process.
    it("echoes an empty message alone in its batch", async () => {
      const id = open();
      const seq = message(id, "");
      await shared.waitAck(seq);
      // The echo is sent while the batch is handled, so it rides with the acknowledgement.
      expect(shared.sends(id)).toEqual([["", false]]);
    });

    it("sends an empty message alone in its batch", async () => {
      const id = open();
      const seq = message(id, "!empty");
      await shared.waitAck(seq);
      expect(shared.sends(id)).toEqual([["", false]]);
    });

    it("ignores a message for a client it does not know", async () => {
      const seq = shared.message(99_999, "nobody");
      await shared.waitAck(seq);
      expect(shared.sends(99_999)).toEqual([]);
    });

    it("runs the close hook on Close and forgets the client", async () => {
      const id = open();
      shared.postRecords([Event.Close, id, 1001, "going away"]);
      const closing = `closed:${id}:1001:going away`;
      const { record } = await shared.until(
        () =>
          shared
            .records(Command.Broadcast)
            .find(({ record }) => (record[3] as Buffer).toString() === closing),
        "the close hook's broadcast",
      );
      expect(record.slice(0, 3)).toEqual([Command.Broadcast, 0, 0]);
      // A message for a client that is gone reaches no hook.
      await shared.waitAck(message(id, "too late"));
      expect(shared.sends(id)).toEqual([]);
    });

    it("runs the error hook on Error, and on a hook that threw (logged)", async () => {
      const id = open();
      shared.postRecords([Event.Error, id, "WS_ERR_INVALID_UTF8", "invalid UTF-8"]);
      message(id, "!throw");
      expect(await shared.waitSends(id, 2)).toEqual([
        ["error:WS_ERR_INVALID_UTF8:invalid UTF-8", false],
        ["error:SB_ERR_HOOK_FAILED:the message hook threw: message hook exploded", false],
      ]);
      const { record } = await shared.waitRecord(
        Command.Log,
        (r) => (r[2] as { clientId?: string }).clientId === String(id),
      );
      expect(record[1]).toBe("error");
      expect(record[3]).toBe("the message hook threw");
      expect(record[2]).toMatchObject({
        hook: "message",
        err: { message: "message hook exploded", stack: expect.stringContaining("full.ts") },
      });
    });

    it("turns what a hook does into Close, Subscribe, Publish, Unsubscribe and Broadcast", async () => {
      const id = open();
      const from = shared.received.length;
      const seq = shared.post((w) => {
        w.addHot(Event.Message, id, 0, "!topics");
        w.addHot(Event.Message, id, 0, "!close");
        w.addHot(Event.Message, id, 0, "after close");
      });
      await shared.waitAck(seq);
      const withPayload = new Set<unknown>([Command.Publish, Command.Broadcast]);
      const commands = shared.received
        .slice(from)
        .filter(({ record }) => record[0] !== Command.Log)
        .map(
          ({ batch, record }): BatchRecord =>
            withPayload.has(record[0])
              ? [...record.slice(0, -1), [...payloadOf(batch, record.at(-1))]]
              : record,
        );
      expect(commands).toEqual([
        // Subscribe carries its options and a request id the I/O thread answers with Reply.
        [Command.Subscribe, id, "news", { silent: false, member: null }, expect.any(Number)],
        [Command.Subscribe, id, "quiet", { silent: true, member: null }, expect.any(Number)],
        [Command.Publish, "news", id, 0, [...Buffer.from("headline")]],
        [Command.Unsubscribe, id, "news"],
        [Command.Broadcast, 0, 1, [1, 2, 3]],
        [Command.Close, id, 4001, "asked to"],
      ]);
      // Publish is a cold record: its payload is [offset, length] in the batch's buffer when
      // packed, the bytes themselves when not.
      const publish = shared.records(Command.Publish).find(({ record }) => record[2] === id)!;
      expect(publish.hot).toBe(false);
      expect(Array.isArray(publish.record[4])).toBe(isolated);
      expect(shared.records(Command.Broadcast).at(-1)!.hot).toBe(true);
      // Nothing is sent to a client the service closed.
      expect(shared.sends(id)).toEqual([]);
    });

    it("pauses a pull-style client past its queue limit and resumes it once drained", async () => {
      const h = launch(fixture("pull.ts"));
      await h.start();
      h.postRecords([Event.Open, 2, openInfo()]);
      h.post((w) => {
        for (let i = 0; i < 300; i++) w.addHot(Event.Message, 2, 0, `p${i}`);
      });
      const sends = await h.waitSends(2, 300);
      expect(sends.map(([text]) => text)).toEqual(
        Array.from({ length: 300 }, (_, i) => `pulled:p${i}`),
      );
      const kinds = h.received.map(({ record }) => record[0]);
      const paused = kinds.indexOf(Command.Pause);
      const resumed = kinds.indexOf(Command.Resume);
      expect(h.records(Command.Pause).map(({ record }) => record)).toEqual([[Command.Pause, 2]]);
      expect(h.records(Command.Resume).map(({ record }) => record)).toEqual([[Command.Resume, 2]]);
      expect(paused).toBeGreaterThanOrEqual(0);
      expect(resumed).toBeGreaterThan(paused);
      expect(kinds.indexOf(Command.Send)).toBeGreaterThan(paused);
      expect(h.orderProblems()).toEqual([]);
    });
  });

  // Worker batches are posted with their buffer transferred and handed back for reuse (the
  // harness does as ServiceHost does): whatever a service keeps must not change when the buffer
  // its message came in carries later batches. Elsewhere nothing is reused; the same holds.
  describe("buffers reused from batch to batch", () => {
    /** Distinct bytes per index, so a payload overwritten by another one is noticed. */
    const pattern = (length: number, seed: number) => {
      const bytes = Buffer.allocUnsafe(length);
      for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 7 + 1) & 0xff;
      return bytes;
    };
    const sentBytes = (h: RuntimeHarness, clientId: number) =>
      h
        .records(Command.Send)
        .filter(({ record }) => record[1] === clientId)
        .map(({ record }) => record[3] as Buffer);
    /** 80 messages of 4 KiB: a batch large enough that its buffer goes back. */
    const PER_BATCH = 80;

    it("keeps a message and its bytes intact across later batches, whose buffers it keeps", async () => {
      const h = launch(fixture("keep.ts"), { recycle: true });
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      const sent: Buffer[] = [];
      let allocated = 0;
      for (let round = 0; round < 6; round++) {
        const seq = h.post((w) => {
          for (let i = 0; i < PER_BATCH; i++) {
            const bytes = pattern(4096, round * PER_BATCH + i);
            sent.push(bytes);
            w.addHot(Event.Message, 1, 1, bytes);
          }
        });
        await h.waitAck(seq);
        if (round === 0) allocated = h.writer.allocated;
      }
      if (name === "worker") {
        // The runtime never hands a received buffer back (its messages are views into it): each
        // batch after the first (which grew from 16 KiB) took one new buffer.
        expect(h.writer.allocated).toBe(allocated + 5);
        expect(h.batches.every((batch) => batch.returned === undefined)).toBe(true);
      }
      h.message(1, "!replay");
      const replayed = await h.until(() => {
        const sends = sentBytes(h, 1);
        return sends.length >= sent.length * 2 ? sends : undefined;
      }, "the replay");
      // One comparison of everything (a toEqual per buffer is slow).
      expect(replayed.length).toBe(sent.length * 2);
      const expected = Buffer.concat(sent.flatMap((bytes) => [bytes, bytes]));
      expect(Buffer.compare(Buffer.concat(replayed), expected)).toBe(0);
    });

    it("keeps the messages of an async hook, and those queued behind it, intact", async () => {
      const h = launch(fixture("keep.ts"), { recycle: true });
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      const first = `later:${"a".repeat(300 * 1024)}`;
      const second = `later:${"é".repeat(1000)}${"b".repeat(300 * 1024)}`;
      const seq = h.post((w) => {
        w.addHot(Event.Message, 1, 0, first);
        // Waits for the first hook to settle, long after its batch was handled.
        w.addHot(Event.Message, 1, 0, second);
      });
      await h.waitAck(seq);
      // Written over the buffer the two came in, while the hooks wait.
      for (let round = 0; round < 3; round++) {
        await h.waitAck(
          h.post((w) => {
            for (let i = 0; i < PER_BATCH; i++) w.addHot(Event.Message, 1, 1, pattern(4096, i));
          }),
        );
      }
      const sends = await h.until(() => {
        const all = sentBytes(h, 1);
        return all.length >= 2 ? all : undefined;
      }, "the delayed echoes");
      expect(sends.map((bytes) => bytes.toString())).toEqual([first, second]);
    });

    it("echoes many large batches in order, posted without waiting, its own buffers reused", async () => {
      const h = launch(FULL, { recycle: true });
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      const sent: Buffer[] = [];
      /** Posts a batch of PER_BATCH messages of about 4 KiB (sizes shifted by `shift`). */
      const postRound = (round: number, shift: number) =>
        h.post((w) => {
          for (let i = 0; i < PER_BATCH; i++) {
            const bytes = pattern(4000 + ((shift + i) % 96), round * PER_BATCH + i);
            sent.push(bytes);
            w.addHot(Event.Message, 1, 1, bytes);
          }
        });
      for (let round = 0; round < 30; round++) {
        postRound(round, round);
        // Now and then the loop yields, so the runtime's answers (and buffers) come back.
        if (round % 5 === 4) await sleep(5);
      }
      const echoes = await h.until(() => {
        const sends = sentBytes(h, 1);
        return sends.length >= sent.length ? sends : undefined;
      }, "every echo");
      expect(echoes.length).toBe(sent.length);
      expect(Buffer.compare(Buffer.concat(echoes), Buffer.concat(sent))).toBe(0);
      expect(h.orderProblems()).toEqual([]);
      if (name !== "worker") return;
      // How many of those answers found a buffer handed back depends on timing (a burst posted
      // without waiting outruns the buffers coming back), so reuse is checked in lock step: each
      // event batch carries the buffer of the answer before it, so every answer is written into
      // a buffer handed back (one of the largest pooled: never grown).
      const reusedBefore = h.reused;
      const LOCK_STEP = 6;
      for (let round = 0; round < LOCK_STEP; round++) await h.waitAck(postRound(round, 0));
      await h.until(() => (sentBytes(h, 1).length >= sent.length ? true : undefined), "the echoes");
      expect(h.reused - reusedBefore).toBe(LOCK_STEP);
    });
  });

  // A message of 1 KiB and more is kept by the I/O thread until the runtime acknowledges its
  // batch; sent back as it came while that batch is handled, it crosses as a forward (16 bytes)
  // and the I/O thread sends the very bytes it kept. Main mode passes buffers by reference.
  describe("messages sent back as received", () => {
    const text = (how: string, length: number) => `${how}:${"x".repeat(length - how.length - 1)}`;
    const sendsTo = (h: RuntimeHarness, clientId: number) =>
      h
        .records(Command.Send)
        .filter(({ record }) => record[1] === clientId)
        .map(({ record }) => [Buffer.from(record[3] as Buffer), record[2]] as const);

    it("sends a large message back as a forward of the bytes kept, a small one as bytes", async () => {
      const h = launch(fixture("forward.ts"));
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      const large = Buffer.alloc(4096, 7);
      const small = Buffer.alloc(100, 9);
      const echo = text("echo", 2048);
      const seq = h.message(1, large, small, echo, Buffer.alloc(1024, 5));
      const sends = await h.until(() => {
        const all = sendsTo(h, 1);
        return all.length >= 4 ? all : undefined;
      }, "the echoes");
      expect(sends).toEqual([
        [large, 1],
        [small, 1],
        [Buffer.from(echo), 0],
        [Buffer.alloc(1024, 5), 1],
      ]);
      expect(h.forwarded.map((payload) => payload.length)).toEqual(
        isolated ? [4096, 2048, 1024] : [],
      );
      await h.waitAck(seq);
      expect(h.writer.keptBatches).toBe(0);
    });

    it("forwards a broadcast of a message once, for every client", async () => {
      const h = launch(fixture("forward.ts"));
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()], [Event.Open, 2, openInfo()]);
      const all = text("all", 3000);
      h.message(1, all);
      const { record } = await h.waitRecord(Command.Broadcast);
      expect((record.at(-1) as Buffer).toString()).toBe(all);
      expect(h.forwarded).toHaveLength(isolated ? 1 : 0);
    });

    it("sends bytes, not a forward, once they may differ from what was kept, or later", async () => {
      const h = launch(fixture("forward.ts"));
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      const mutate = text("mutate", 2000);
      const binary = text("binary", 2000);
      const later = text("later", 2000);
      h.message(1, mutate, binary, later);
      const sends = await h.until(() => {
        const got = sendsTo(h, 1);
        return got.length >= 3 ? got : undefined;
      }, "three answers");
      expect(sends).toEqual([
        [Buffer.from(`M${mutate.slice(1)}`), 0],
        [Buffer.from(binary), 1],
        [Buffer.from(later), 0],
      ]);
      expect(h.forwarded).toHaveLength(0);
      expect(h.writer.keptBatches).toBe(0);
    });
  });

  describe("control", () => {
    it("answers Ping with a Pong of the same seq", async () => {
      const seq = shared.postRecords([Event.Ping, 4242]);
      const { batch, record } = await shared.waitRecord(Command.Pong, (r) => r[1] === 4242);
      expect(record).toEqual([Command.Pong, 4242]);
      expect(batch.ack).toBe(seq);
    });

    it("answers Snapshot with the hook's state and every client's data", async () => {
      const withData = open(openInfo({ handover: true, data: { user: "ann", n: [1, 2] } }));
      const without = open();
      const plain = open(openInfo({ handover: true, data: "plain" }));
      message(without, "counted");
      shared.postRecords([Event.Snapshot]);
      const { record } = await shared.waitRecord(Command.Snapshot);
      const info = record[1] as {
        state: { seen: number; restored: unknown };
        clientData: Array<[number, unknown]>;
      };
      // What restore received at start is part of the state the snapshot hook returns.
      expect(info.state.restored).toEqual(RESTORED);
      expect(info.state.seen).toBeGreaterThanOrEqual(1);
      const data = new Map(info.clientData);
      expect(data.get(withData)).toEqual({ user: "ann", n: [1, 2] });
      expect(data.get(plain)).toBe("plain");
      expect(data.has(without)).toBe(false);
      expect(record[1]).not.toHaveProperty("error");
    });

    it("carries Log commands with the level, the context (errors as records) and the message", async () => {
      const id = open();
      message(id, "!log");
      const { record } = await shared.waitRecord(Command.Log, (r) => r[1] === "warn");
      expect(record[3]).toBe("something went wrong");
      const context = record[2] as { err: Record<string, unknown>; attempt: number };
      expect(context.attempt).toBe(7);
      expect(context.err).toMatchObject({
        type: "Error",
        message: "logged failure",
        stack: expect.stringContaining("logged failure"),
      });
      expect(context.err).not.toBeInstanceOf(Error);
    });
  });

  describe("end", () => {
    it("runs the stop hook on Stop, answers Stopped, and ends as terminated on terminate()", async () => {
      const h = launch(FULL);
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      h.message(1, "one");
      h.postRecords([Event.Stop]);
      await h.waitRecord(Command.Stopped);
      const kinds = h.received.map(({ record }) => record[0]);
      const ran = h.received.findIndex(({ record }) => record[3] === "stop hook ran");
      expect(ran).toBeGreaterThanOrEqual(0);
      expect(h.received[ran]!.record[2]).toEqual({ seen: expect.any(Number) });
      expect(ran).toBeLessThan(kinds.indexOf(Command.Stopped));
      expect(h.records(Command.Stopped)).toHaveLength(1);
      h.transport.terminate();
      const exit = await h.waitExit();
      expect(exit.reason).toBe("terminated");
      // Posting to a runtime that is gone is a no-op, not an error.
      expect(() => h.postRecords([Event.Ping, 1])).not.toThrow();
    });

    // On the I/O thread a loop blocks this very thread: terminate() could not even be called.
    it.skipIf(!isolated)("terminates a runtime stuck in a loop", async () => {
      const h = launch(FULL);
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      // The Ping rides behind the looping message: it is never answered while the loop runs.
      const seq = h.post((w) => {
        w.addHot(Event.Message, 1, 0, "!loop");
        w.add([Event.Ping, 77]);
      });
      await sleep(200);
      h.transport.terminate();
      const exit = await h.waitExit();
      expect(exit.reason).toBe("terminated");
      expect(h.records(Command.Pong)).toEqual([]);
      expect(h.batches.some((batch) => batch.ack >= seq)).toBe(false);
    });

    // On the I/O thread process.exit() would end the test process itself.
    it.skipIf(!isolated)("reports a runtime's process.exit(5) as exit with code 5", async () => {
      const h = launch(FULL);
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      h.message(1, "!exit");
      const exit = await h.waitExit();
      expect(exit).toMatchObject({ reason: "exit", code: 5 });
    });

    // On the I/O thread an uncaught exception would be the test process's own.
    it.skipIf(!isolated)("reports an exception thrown outside any hook as a crash", async () => {
      const h = launch(FULL);
      await h.start();
      h.postRecords([Event.Open, 1, openInfo()]);
      h.message(1, "!crash");
      const exit = await h.waitExit();
      expect(exit.reason).toBe("crash");
      expect(exit.error?.message).toContain("crashed outside any hook");
    });
  });
});
