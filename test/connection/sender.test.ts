// The Sender in isolation: a real protocol core (so what comes out is real frames) and a fake
// compressor whose every job the test completes by hand, to pin the order of messages around
// asynchronous compression and streamed messages (RFC 6455 section 5.4, RFC 7692 section 6).
import { describe, expect, it } from "vitest";
import type { PerMessageDeflate } from "../../src/connection/deflate.js";
import { Sender } from "../../src/connection/sender.js";
import { Opcode } from "../../src/protocol/constants.js";
import { Protocol } from "../../src/protocol/protocol.js";
import { parseFrames, within } from "./duplex-pair.js";

interface Job {
  data: Buffer;
  fin: boolean;
  resolve: (out: Buffer) => void;
  reject: (error: Error) => void;
}

/** A compressor that answers only when the test says so; its "compressed" form is `z(...)`. */
class FakeCodec {
  readonly jobs: Job[] = [];
  constructor(readonly threshold = 8) {}

  compress(data: Uint8Array, fin: boolean): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.jobs.push({ data: Buffer.from(data), fin, resolve, reject });
    });
  }

  /** Completes the oldest open job. */
  finish(index = 0): void {
    const job = this.jobs[index];
    job.resolve(Buffer.from(`z(${job.data.toString()})`));
  }
}

function setup(codec: FakeCodec | null = new FakeCodec()) {
  const output: Buffer[] = [];
  const failures: Error[] = [];
  const core = new Protocol(
    { role: "server", compression: codec !== null },
    {
      output: (bytes) => output.push(Buffer.from(bytes)),
      message: () => undefined,
      ping: () => undefined,
      pong: () => undefined,
      closeReceived: () => undefined,
      inflate: () => undefined,
      error: () => undefined,
      closeTransport: () => undefined,
    },
  );
  const sender = new Sender(core, codec as unknown as PerMessageDeflate | null, (error) =>
    failures.push(error),
  );
  const frames = () => parseFrames(Buffer.concat(output));
  const summary = () =>
    frames().map((f) => [f.opcode, f.fin, f.rsv1, f.payload.toString()] as const);
  return { core, sender, codec, output, failures, frames, summary };
}

/** Lets promise callbacks (compression results, async iterators) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
}

const text = (s: string) => Buffer.from(s);

describe("Sender: plain messages", () => {
  it("hands a message to the core at once when nothing is in flight", () => {
    const { sender, summary } = setup();
    sender.send(text("hi"), false, false);
    expect(summary()).toEqual([[Opcode.Text, true, false, "hi"]]);
    expect(sender.idle).toBe(true);
  });

  it("does not compress below the threshold", () => {
    const { sender, codec, summary } = setup(new FakeCodec(100));
    sender.send(text("short"), true, true);
    expect(codec!.jobs).toEqual([]);
    expect(summary()).toEqual([[Opcode.Binary, true, false, "short"]]);
  });

  it("ignores the compress flag without a negotiated codec", () => {
    const { sender, summary } = setup(null);
    sender.send(text("a long enough message"), false, true);
    expect(summary()).toEqual([[Opcode.Text, true, false, "a long enough message"]]);
  });

  it("sends a close frame at once when idle", () => {
    const { sender, frames } = setup();
    sender.close(1000, "bye");
    expect(frames().map((f) => f.opcode)).toEqual([Opcode.Close]);
  });
});

describe("Sender: compression", () => {
  it("sets RSV1 on a compressed message (RFC 7692 section 6)", async () => {
    const { sender, codec, summary } = setup();
    sender.send(text("compress me please"), false, true);
    expect(sender.idle).toBe(false);
    expect(summary()).toEqual([]);
    expect(codec!.jobs.map((j) => [j.data.toString(), j.fin])).toEqual([
      ["compress me please", true],
    ]);
    codec!.finish();
    await settle();
    expect(summary()).toEqual([[Opcode.Text, true, true, "z(compress me please)"]]);
    expect(sender.idle).toBe(true);
  });

  it("holds later messages, compressed or not, behind a compressing one", async () => {
    const { sender, codec, summary } = setup();
    sender.send(text("first, compressed"), true, true);
    sender.send(text("2nd"), false, true); // under the threshold
    sender.send(text("third, not compressed"), false, false);
    sender.send(text("fourth, compressed"), false, true);
    expect(summary()).toEqual([]);
    // One job at a time: the fourth message is not compressed before its turn.
    expect(codec!.jobs.length).toBe(1);
    codec!.finish(0);
    await settle();
    expect(codec!.jobs.length).toBe(2);
    codec!.finish(1);
    await settle();
    expect(summary()).toEqual([
      [Opcode.Binary, true, true, "z(first, compressed)"],
      [Opcode.Text, true, false, "2nd"],
      [Opcode.Text, true, false, "third, not compressed"],
      [Opcode.Text, true, true, "z(fourth, compressed)"],
    ]);
  });

  it("queues close() behind a compressing message", async () => {
    const { sender, codec, summary } = setup();
    sender.send(text("compressed message"), false, true);
    sender.close(1001, "");
    expect(summary()).toEqual([]);
    codec!.finish();
    await settle();
    expect(summary().map(([opcode]) => opcode)).toEqual([Opcode.Text, Opcode.Close]);
  });

  it("reports a failed compression and sends nothing after it", async () => {
    const { sender, codec, summary, failures } = setup();
    sender.send(text("compressed message"), false, true);
    sender.send(text("queued"), false, false);
    const broken = new Error("zlib exploded");
    codec!.jobs[0].reject(broken);
    await settle();
    expect(failures).toEqual([broken]);
    expect(summary()).toEqual([]);
    sender.send(text("after"), false, false);
    expect(summary()).toEqual([]);
  });

  it("writes nothing when compression finishes after stop()", async () => {
    const { sender, codec, summary } = setup();
    sender.send(text("compressed message"), false, true);
    sender.send(text("queued"), false, false);
    sender.stop();
    codec!.finish();
    await settle();
    expect(summary()).toEqual([]);
  });
});

describe("Sender: streams", () => {
  it("frames a stream as one message: typed first frame, continuations, FIN last", async () => {
    const { sender, summary } = setup(null);
    await sender.stream(["ab", text("cd"), "ef"], false, false);
    expect(summary()).toEqual([
      [Opcode.Text, false, false, "ab"],
      [Opcode.Continuation, false, false, "cd"],
      [Opcode.Continuation, true, false, "ef"],
    ]);
  });

  it("compresses every fragment and sets RSV1 on the first frame only", async () => {
    const { sender, codec, summary } = setup();
    const done = sender.stream(["aaaa", "bbbb", "cccc"], true, true);
    for (let i = 0; i < 3; i++) {
      await settle();
      codec!.finish(i);
    }
    await within(done, 1000, "the stream");
    expect(codec!.jobs.map((j) => [j.data.toString(), j.fin])).toEqual([
      ["aaaa", false],
      ["bbbb", false],
      ["cccc", true],
    ]);
    expect(summary()).toEqual([
      [Opcode.Binary, false, true, "z(aaaa)"],
      [Opcode.Continuation, false, false, "z(bbbb)"],
      [Opcode.Continuation, true, false, "z(cccc)"],
    ]);
  });

  it("puts messages sent during a stream after its last frame", async () => {
    const { sender, summary, frames } = setup(null);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* source() {
      yield "one";
      yield "two";
      await gate;
      yield "three";
    }
    const done = sender.stream(source(), false, false);
    await settle();
    sender.send(text("during"), true, false);
    sender.close(1000, "");
    expect(summary().map(([opcode]) => opcode)).toEqual([Opcode.Text]);
    release();
    await within(done, 1000, "the stream");
    await settle();
    expect(summary().slice(0, 4)).toEqual([
      [Opcode.Text, false, false, "one"],
      [Opcode.Continuation, false, false, "two"],
      [Opcode.Continuation, true, false, "three"],
      [Opcode.Binary, true, false, "during"],
    ]);
    const close = frames()[4];
    expect(close.opcode).toBe(Opcode.Close);
    expect(close.payload.readUInt16BE(0)).toBe(1000);
  });

  it("waits for a compressing message before starting a stream", async () => {
    const { sender, codec, summary } = setup();
    sender.send(text("compressed first"), false, true);
    const done = sender.stream(["x"], true, false);
    await settle();
    expect(summary()).toEqual([]);
    codec!.finish();
    await within(done, 1000, "the stream");
    expect(summary()).toEqual([
      [Opcode.Text, true, true, "z(compressed first)"],
      [Opcode.Binary, true, false, "x"],
    ]);
  });

  it("rejects and reports when the source throws, and drops what was queued", async () => {
    const { sender, summary, failures } = setup(null);
    const broken = new Error("source failed");
    async function* source() {
      yield "one";
      yield "two";
      throw broken;
    }
    const done = sender.stream(source(), false, false);
    sender.send(text("queued"), false, false);
    await expect(within(done, 1000, "the stream")).rejects.toBe(broken);
    await settle();
    expect(failures).toEqual([broken]);
    // The message is left half-sent; nothing may follow it on the wire but a close frame.
    expect(summary()).toEqual([[Opcode.Text, false, false, "one"]]);
  });

  it("writes no more fragments once stopped", async () => {
    const { sender, summary } = setup(null);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* source() {
      yield "one";
      yield "two";
      await gate;
      yield "three";
    }
    const done = sender.stream(source(), false, false);
    await settle();
    sender.stop();
    release();
    await within(Promise.allSettled([done]), 1000, "the stream to settle");
    expect(summary()).toEqual([[Opcode.Text, false, false, "one"]]);
  });

  // Regression: stop() emptied the queue without settling the streams waiting in it, so a
  // sendStream() queued behind another one never resolved nor rejected once the connection went.
  it("settles a stream still waiting in the queue when stopped", async () => {
    const { sender } = setup(null);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* slow() {
      yield "a";
      await gate;
      yield "b";
    }
    const first = sender.stream(slow(), false, false);
    const second = sender.stream(["queued stream"], false, false);
    await settle();
    sender.stop();
    release();
    await within(Promise.allSettled([first]), 1000, "the running stream to settle");
    const outcome = await within(
      Promise.allSettled([second]),
      1000,
      "the queued stream to settle",
    ).catch((error: Error) => error);
    expect(outcome).not.toBeInstanceOf(Error);
  });

  // Regression: a stream requested after stop() was queued on a sender that never drains again,
  // so its promise never settled.
  it("rejects a stream requested after stop()", async () => {
    const { sender } = setup(null);
    sender.stop();
    const outcome = await within(
      sender.stream(["late"], false, false).then(
        () => "resolved",
        () => "rejected",
      ),
      1000,
      "the stream to settle",
    ).catch(() => "pending");
    expect(outcome).toBe("rejected");
  });
});
