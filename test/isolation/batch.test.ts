// The batch format between the I/O thread and a service runtime. Packed (worker, process), hot
// records (a message in, a send out) and payloads go into one transferable buffer; unpacked
// (main), they are kept by reference. Whatever goes in must come out byte for byte and in the
// order it went in, whichever mode and however large.
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  type Batch,
  type BatchRecord,
  BatchWriter,
  Command,
  Event,
  HOT_RECORD,
  HotFlag,
  payloadOf,
  readBatch,
  worthRecycling,
} from "../../src/isolation/batch.js";

const INITIAL_BUFFER = 16 * 1024;

/** A batch's records in stream order: hot ones as ["hot", kind, id, flag, payload]. */
function decode(batch: Batch): BatchRecord[] {
  const out: BatchRecord[] = [];
  readBatch(
    batch,
    (kind, id, flag, payload) => out.push(["hot", kind, id, flag, payload]),
    (record) => out.push(record),
  );
  return out;
}

/** Every payload of a batch, hot or cold (the last element of each record), in order. */
function payloads(batch: Batch): Buffer[] {
  return decode(batch).map((record) =>
    record[0] === "hot" ? (record[4] as Buffer) : payloadOf(batch, record.at(-1)),
  );
}

function take(writer: BatchWriter, ack = 0, evenIfEmpty = false) {
  const taken = writer.take(ack, evenIfEmpty);
  if (taken === null) throw new Error("take() returned null");
  return taken;
}

/** Distinct bytes per index, so a payload overwritten by another one is noticed. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 7 + 1) & 0xff;
  return bytes;
}

const STRINGS: Array<[string, string]> = [
  ["ASCII", "hello, switchboard"],
  ["multi-byte UTF-8", "grüße, ¿qué tal? — 日本語のテキスト"],
  ["emoji (surrogate pairs)", "🎉👩‍👩‍👧‍👦 done 🚀"],
  ["the empty string", ""],
];

/** The two ways a payload is added: as a hot record, or as the last field of a cold one. */
const WAYS = [
  {
    way: "hot record",
    add: (writer: BatchWriter, id: number, flag: number, payload: string | Uint8Array) =>
      writer.addHot(Event.Message, id, flag, payload),
  },
  {
    way: "cold record with a payload",
    add: (writer: BatchWriter, id: number, flag: number, payload: string | Uint8Array) =>
      writer.addWithPayload([Command.Publish, `topic${id}`, id, flag], payload),
  },
];

describe.each([
  ["packed", true],
  ["unpacked", false],
])("BatchWriter, %s", (_mode, pack) => {
  describe.each(WAYS)("$way", ({ add }) => {
    it.each(STRINGS)("round-trips a string alone in its batch: %s", (_what, text) => {
      const writer = new BatchWriter(pack);
      add(writer, 7, 0, text);
      const [payload] = payloads(take(writer).batch);
      expect(payload!.toString("utf8")).toBe(text);
      expect(payload!.byteLength).toBe(Buffer.byteLength(text));
    });

    it.each(STRINGS)("round-trips a string between others: %s", (_what, text) => {
      const writer = new BatchWriter(pack);
      add(writer, 1, 0, "before");
      add(writer, 2, 0, text);
      add(writer, 3, 0, "after");
      const out = payloads(take(writer).batch).map((bytes) => bytes.toString());
      expect(out).toEqual(["before", text, "after"]);
    });

    it("round-trips bytes, the empty ones too", () => {
      const writer = new BatchWriter(pack);
      const bytes = pattern(301, 1);
      add(writer, 1, 1, bytes);
      add(writer, 2, 1, new Uint8Array(0));
      add(writer, 3, 1, Buffer.alloc(0));
      add(writer, 4, 1, pattern(3, 2));
      const [first, second, third, fourth] = payloads(take(writer).batch);
      expect(first).toEqual(Buffer.from(bytes));
      expect(second!.byteLength).toBe(0);
      expect(third!.byteLength).toBe(0);
      expect(fourth).toEqual(Buffer.from(pattern(3, 2)));
    });

    it("copies exactly the bytes of a view into a larger buffer", () => {
      const backing = pattern(1_000, 2);
      const view = new Uint8Array(backing.buffer, 123, 45);
      const writer = new BatchWriter(pack);
      add(writer, 1, 1, view);
      expect(writer.bytes).toBe(45);
      const { batch } = take(writer);
      const [out] = payloads(batch);
      expect(out!.byteLength).toBe(45);
      expect(out).toEqual(Buffer.from(backing.subarray(123, 168)));
      if (pack) {
        // Only the 45 bytes were gathered, not the 1,000 of the backing buffer.
        expect(batch.length).toBeLessThan(100);
      } else {
        // Nothing copied: a view over the same memory.
        expect(out!.buffer).toBe(backing.buffer);
      }
    });

    it("keeps earlier payloads intact as the buffer grows past 16 KiB", () => {
      const writer = new BatchWriter(pack);
      const sent: Uint8Array[] = [];
      // 200 payloads of 1,000 bytes: the 16 KiB buffer doubles several times along the way.
      for (let i = 0; i < 200; i++) {
        const bytes = pattern(1_000, i);
        sent.push(bytes);
        add(writer, i + 1, 1, bytes);
      }
      expect(writer.size).toBe(200);
      expect(writer.bytes).toBe(200_000);
      const out = payloads(take(writer).batch);
      expect(out.map((bytes) => bytes.byteLength)).toEqual(sent.map(() => 1_000));
      // One comparison of everything (200 toEqual calls on buffers are slow).
      expect(Buffer.compare(Buffer.concat(out), Buffer.concat(sent))).toBe(0);
    });

    it("keeps small payloads intact around one of 1 MiB", () => {
      const writer = new BatchWriter(pack);
      const big = pattern(1024 * 1024, 9);
      add(writer, 1, 0, "before");
      add(writer, 2, 1, big);
      add(writer, 3, 0, "after ✓");
      const { batch } = take(writer);
      const [before, middle, after] = payloads(batch);
      expect(before!.toString()).toBe("before");
      expect(middle!.byteLength).toBe(big.byteLength);
      expect(Buffer.compare(middle!, Buffer.from(big))).toBe(0);
      expect(after!.toString()).toBe("after ✓");
      if (pack) expect(batch.buffer!.byteLength).toBeGreaterThanOrEqual(1024 * 1024 + 13);
    });
  });

  it("keeps a hot record's kind, id and flag", () => {
    const writer = new BatchWriter(pack);
    writer.addHot(Command.Send, 2 ** 32 - 1, 1, "a");
    writer.addHot(Command.Broadcast, 0, 0, "b");
    writer.addHot(Event.Message, 123_456, 1, new Uint8Array([9]));
    expect(decode(take(writer).batch)).toEqual([
      ["hot", Command.Send, 2 ** 32 - 1, 1, Buffer.from("a")],
      ["hot", Command.Broadcast, 0, 0, Buffer.from("b")],
      ["hot", Event.Message, 123_456, 1, Buffer.from([9])],
    ]);
  });

  it("keeps hot and cold records in the order they were added", () => {
    const writer = new BatchWriter(pack);
    // Cold records before the first hot one, between hot ones and after the last.
    writer.add([Event.Open, 1, { data: "first" }]);
    writer.add([Event.Ping, 5]);
    writer.addHot(Event.Message, 1, 0, "m1");
    writer.add([Event.Error, 1, "WS_ERR_X", "between"]);
    writer.addWithPayload([Command.Publish, "news", 0, 0], "cold payload");
    writer.addHot(Event.Message, 1, 1, new Uint8Array([1, 2]));
    writer.addHot(Event.Message, 2, 0, "m3");
    writer.add([Event.Close, 1, 1000, "last"]);
    expect(writer.size).toBe(8);
    const { batch } = take(writer);
    // (Kinds are numbered per direction: Command.Publish and Event.Ping are both 7.)
    const records = decode(batch).map((record) =>
      record[1] === "news" ? [...record.slice(0, -1), payloadOf(batch, record[4])] : record,
    );
    expect(records).toEqual([
      [Event.Open, 1, { data: "first" }],
      [Event.Ping, 5],
      ["hot", Event.Message, 1, 0, Buffer.from("m1")],
      [Event.Error, 1, "WS_ERR_X", "between"],
      [Command.Publish, "news", 0, 0, Buffer.from("cold payload")],
      ["hot", Event.Message, 1, 1, Buffer.from([1, 2])],
      ["hot", Event.Message, 2, 0, Buffer.from("m3")],
      [Event.Close, 1, 1000, "last"],
    ]);
    if (pack) {
      // Only cold records are objects to clone; hot ones live in the buffer alone.
      expect(batch.records.map((record) => record[0])).toEqual([
        Event.Open,
        Event.Ping,
        Event.Error,
        Command.Publish,
        Event.Close,
      ]);
    }
  });

  it("returns null when there is nothing to send", () => {
    const writer = new BatchWriter(pack);
    expect(writer.take(3)).toBeNull();
    writer.addHot(Event.Message, 1, 0, "x");
    expect(writer.take(3)).not.toBeNull();
    expect(writer.take(3)).toBeNull();
    writer.add([Event.Ping, 1]);
    expect(writer.take(3)).not.toBeNull();
    expect(writer.take(3)).toBeNull();
  });

  it("numbers batches one by one and carries the ack it is given", () => {
    const writer = new BatchWriter(pack);
    writer.add([Event.Ping, 1]);
    const first = take(writer, 5).batch;
    writer.addHot(Event.Message, 1, 0, "x");
    writer.add([Event.Ping, 3]);
    const second = take(writer, 9).batch;
    expect(first).toMatchObject({ seq: 1, ack: 5 });
    expect(second).toMatchObject({ seq: 2, ack: 9 });
    expect(decode(first)).toEqual([[Event.Ping, 1]]);
    expect(decode(second)).toEqual([
      ["hot", Event.Message, 1, 0, Buffer.from("x")],
      [Event.Ping, 3],
    ]);
  });

  it("sends an acknowledgement alone when asked even if empty", () => {
    const writer = new BatchWriter(pack);
    writer.add([Event.Ping, 1]);
    take(writer, 1);
    const { batch, transfer } = take(writer, 4, true);
    expect(batch).toMatchObject({ seq: 2, ack: 4, records: [], buffer: null });
    expect(decode(batch)).toEqual([]);
    expect(transfer).toEqual([]);
  });

  it("starts afresh after take(): later writes do not touch an earlier batch", () => {
    const writer = new BatchWriter(pack);
    writer.addHot(Event.Message, 1, 0, "first batch");
    writer.addWithPayload([Command.Publish, "t", 0, 0], "first cold");
    const first = take(writer).batch;
    expect(writer.size).toBe(0);
    expect(writer.bytes).toBe(0);
    writer.addHot(Event.Message, 1, 0, "SECOND BATCH, longer than the first one");
    writer.addWithPayload([Command.Publish, "t", 0, 0], "second cold");
    const second = take(writer).batch;
    expect(payloads(first).map(String)).toEqual(["first batch", "first cold"]);
    expect(payloads(second).map(String)).toEqual([
      "SECOND BATCH, longer than the first one",
      "second cold",
    ]);
    if (pack) expect(second.buffer).not.toBe(first.buffer);
  });

  it("round-trips random sequences of records exactly and in order", () => {
    const payload = fc.oneof(
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.uint8Array({ maxLength: 3_000 }),
    );
    const entry = fc.oneof(
      fc.record({ way: fc.constant("hot" as const), payload }),
      fc.record({ way: fc.constant("cold payload" as const), payload }),
      fc.record({ way: fc.constant("cold" as const), payload: fc.constant("") }),
    );
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 30 }), (list) => {
        const writer = new BatchWriter(pack);
        list.forEach(({ way, payload }, index) => {
          const flag = typeof payload === "string" ? 0 : 1;
          if (way === "hot") writer.addHot(Event.Message, index, flag, payload);
          else if (way === "cold payload") writer.addWithPayload([Event.Error, index], payload);
          else writer.add([Event.Ping, index]);
        });
        const taken = writer.take(0);
        if (list.length === 0) {
          expect(taken).toBeNull();
          return;
        }
        const { batch } = taken!;
        const out = decode(batch);
        expect(out).toHaveLength(list.length);
        list.forEach(({ way, payload }, index) => {
          const record = out[index]!;
          const text = typeof payload === "string";
          const expected = text ? Buffer.from(payload) : payload;
          if (way === "hot") {
            expect(record.slice(0, 4)).toEqual(["hot", Event.Message, index, text ? 0 : 1]);
            expect(Buffer.compare(record[4] as Buffer, expected)).toBe(0);
          } else if (way === "cold payload") {
            expect(record.slice(0, 2)).toEqual([Event.Error, index]);
            expect(Buffer.compare(payloadOf(batch, record[2]), expected)).toBe(0);
          } else {
            expect(record).toEqual([Event.Ping, index]);
          }
        });
      }),
      { numRuns: 200 },
    );
  });
});

describe("BatchWriter, packed: the transferred buffer", () => {
  it("is a fresh ArrayBuffer of the writer's own, never Node's shared pool", () => {
    const writer = new BatchWriter(true);
    writer.addHot(Event.Message, 1, 0, "small");
    const { batch, transfer } = take(writer);
    expect(batch.buffer).toBeInstanceOf(ArrayBuffer);
    // The shared pool is Buffer.poolSize (8 KiB) per slab; the writer allocates 16 KiB.
    expect(batch.buffer!.byteLength).toBe(INITIAL_BUFFER);
    expect(batch.buffer).not.toBe(Buffer.from("pooled").buffer);
    expect(transfer).toEqual([batch.buffer]);
    // What is in use: one 12-byte header and the payload padded to 4 bytes.
    expect(batch.length).toBe(12 + 8);
  });

  it("grows to what a full batch takes, not to the next power of two past it", () => {
    const writer = new BatchWriter(true);
    const message = Buffer.alloc(4096, 7);
    let added = 0;
    while (!writer.full) {
      writer.addMessage(Event.Message, 1, 1, message);
      added++;
    }
    // 1 MiB of payload in 4 KiB messages, each with its 12-byte header: just past 1 MiB.
    expect(added).toBe(256);
    const first = take(writer).batch;
    expect(first.length).toBe(256 * (4096 + 12));
    const limit = 1024 * 1024 + 16 * 1024;
    expect(first.buffer!.byteLength).toBeLessThanOrEqual(limit);
    // The next batch starts from the last one's size, within the same bound.
    writer.addMessage(Event.Message, 1, 1, message);
    expect(take(writer).batch.buffer!.byteLength).toBeLessThanOrEqual(limit);
    // A batch that needs more than that still gets it.
    writer.addMessage(Event.Message, 1, 1, Buffer.alloc(2 * 1024 * 1024, 1));
    const big = take(writer).batch;
    expect(big.buffer!.byteLength).toBeGreaterThanOrEqual(2 * 1024 * 1024 + 12);
    const payload = decode(big)[0]![4] as Buffer;
    expect(Buffer.compare(payload, Buffer.alloc(2 * 1024 * 1024, 1))).toBe(0);
  });

  it("starts a batch big enough for the larger of the last two, so alternating sizes do not grow", () => {
    const writer = new BatchWriter(true);
    const message = Buffer.alloc(4096, 7);
    const fill = (): void => {
      while (!writer.full) writer.addMessage(Event.Message, 1, 1, message);
    };
    fill();
    take(writer);
    // A turn's remainder, then another full batch: it starts in a buffer that holds it all.
    writer.addMessage(Event.Message, 1, 1, message);
    take(writer);
    const before = writer.allocated;
    fill();
    take(writer);
    // One allocation for the batch, none for growing it (a growth allocates once more).
    expect(writer.allocated - before).toBe(1);
  });

  it("can be transferred, which detaches it, and the clone reads the same records", () => {
    const writer = new BatchWriter(true);
    writer.addHot(Event.Message, 1, 0, "text ✓");
    writer.add([Event.Ping, 2]);
    writer.addWithPayload([Command.Publish, "t", 0, 1], pattern(100, 3));
    const { batch, transfer } = take(writer);
    const clone = structuredClone(batch, { transfer });
    expect(batch.buffer!.byteLength).toBe(0);
    expect(clone.buffer!.byteLength).toBe(INITIAL_BUFFER);
    const records = decode(clone);
    expect(records[0]).toEqual(["hot", Event.Message, 1, 0, Buffer.from("text ✓")]);
    expect(records[1]).toEqual([Event.Ping, 2]);
    expect(payloadOf(clone, records[2]![4])).toEqual(Buffer.from(pattern(100, 3)));
  });

  it("holds no buffer when no hot record or payload was added", () => {
    const writer = new BatchWriter(true);
    writer.add([Event.Ping, 1]);
    const { batch, transfer } = take(writer);
    expect(batch.buffer).toBeNull();
    expect(transfer).toEqual([]);
    expect(decode(batch)).toEqual([[Event.Ping, 1]]);
  });
});

describe("BatchWriter, unpacked: payloads by reference", () => {
  it("keeps bytes as they are and turns strings into UTF-8 bytes", () => {
    const writer = new BatchWriter(false);
    const bytes = Buffer.from(pattern(64, 4));
    const plain = pattern(16, 5);
    writer.addHot(Event.Message, 1, 1, bytes);
    writer.addHot(Event.Message, 2, 1, plain);
    writer.addWithPayload([Command.Publish, "t", 0, 1], bytes);
    writer.addHot(Event.Message, 3, 0, "é");
    expect(writer.bytes).toBe(64 + 16 + 64 + 2);
    const { batch, transfer } = take(writer);
    expect(batch.buffer).toBeNull();
    expect(transfer).toEqual([]);
    expect(batch.records[0]).toEqual([HOT_RECORD, Event.Message, 1, 1, bytes]);
    const records = decode(batch);
    // A Buffer is handed on as it is; another Uint8Array becomes a Buffer over its memory.
    expect(records[0]![4]).toBe(bytes);
    expect((records[1]![4] as Buffer).buffer).toBe(plain.buffer);
    expect(records[1]![4]).toEqual(Buffer.from(plain));
    expect(payloadOf(batch, records[2]![4])).toBe(bytes);
    expect(records[3]![4]).toEqual(Buffer.from([0xc3, 0xa9]));
  });
});

/**
 * One batch from `writer` to the other side and back, as the worker transport carries it: the
 * buffer is transferred (structuredClone with a transfer list detaches it here, as postMessage
 * does), read there, handed back with the other side's next batch, and recycled.
 */
function roundTrip(writer: BatchWriter, other: BatchWriter) {
  const { batch, transfer } = take(writer);
  const received = structuredClone(batch, { transfer });
  // What the reader copies out before it hands the buffer back.
  const records = decode(received).map((record) =>
    record[0] === "hot" ? [...record.slice(0, 4), Buffer.from(record[4] as Buffer)] : record,
  );
  const read = records.filter((record) => record[0] === "hot").map((record) => record[4] as Buffer);
  other.giveBack(received.buffer);
  other.add([Command.Pong, received.seq]);
  const answer = take(other);
  const back = structuredClone(answer.batch, { transfer: answer.transfer });
  for (const buffer of back.returned ?? []) writer.recycle(buffer);
  return { sent: batch, received, records, read, back };
}

describe("BatchWriter, recycling buffers", () => {
  it("writes the next batch into the buffer the other side handed back", () => {
    const writer = new BatchWriter(true, true);
    const other = new BatchWriter(true, true);
    writer.addHot(Event.Message, 1, 1, pattern(1_000, 1));
    const first = roundTrip(writer, other);
    expect(first.back.returned).toHaveLength(1);
    expect(writer.pooled).toBe(1);
    expect(writer.allocated).toBe(1);
    writer.addHot(Event.Message, 2, 1, pattern(500, 2));
    const second = take(writer).batch;
    // The pooled buffer, not a new one: nothing was allocated, and the pool is empty again.
    expect(writer.allocated).toBe(1);
    expect(writer.pooled).toBe(0);
    expect(second.buffer).toBe(first.back.returned![0]);
    expect(payloads(second)).toEqual([Buffer.from(pattern(500, 2))]);
    expect(first.read).toEqual([Buffer.from(pattern(1_000, 1))]);
  });

  it("reuses a few buffers for many batches in a row, each read exactly and in order", () => {
    const writer = new BatchWriter(true, true);
    const other = new BatchWriter(true, true);
    const expected: Buffer[][] = [];
    const got: Buffer[][] = [];
    for (let round = 0; round < 200; round++) {
      // Batches of different sizes, so that a later one outgrows the buffer it starts in.
      const count = 1 + ((round * 7) % 23);
      const sent: Buffer[] = [];
      const order: string[] = [];
      for (let i = 0; i < count; i++) {
        const bytes = Buffer.from(pattern(((round * 131 + i * 977) % 6_000) + 1, round + i));
        sent.push(bytes);
        if (i % 5 === 4) {
          writer.add([Event.Ping, i]);
          order.push("ping");
        }
        writer.addHot(Event.Message, i, 1, bytes);
        order.push("hot");
      }
      expected.push(sent);
      const { received, records, read } = roundTrip(writer, other);
      got.push(read);
      expect(received.seq).toBe(round + 1);
      // The cold records kept their places among the hot ones.
      expect(records.map((record) => (record[0] === "hot" ? "hot" : "ping"))).toEqual(order);
    }
    // Compared with Buffer#equals: toEqual walks a Buffer byte by byte, which took 20-30 s here.
    expect(got.map((read) => read.length)).toEqual(expected.map((sent) => sent.length));
    const wrong = got.flatMap((read, round) =>
      read.flatMap((bytes, i) => (bytes.equals(expected[round]![i]!) ? [] : [`${round}/${i}`])),
    );
    expect(wrong).toEqual([]);
    // A handful of buffers, grown a few times along the way, served 200 batches.
    expect(writer.allocated).toBeLessThanOrEqual(8);
  });

  it("hands received buffers back with the next batch taken, and only with that one", () => {
    const writer = new BatchWriter(true, true);
    const a = new ArrayBuffer(INITIAL_BUFFER);
    const b = new ArrayBuffer(4 * INITIAL_BUFFER);
    writer.giveBack(a);
    writer.giveBack(b);
    writer.giveBack(a);
    writer.add([Event.Ping, 1]);
    const { batch, transfer } = take(writer);
    expect(batch.returned).toEqual([a, b]);
    expect(transfer).toEqual([a, b]);
    writer.add([Event.Ping, 2]);
    const next = take(writer);
    expect(next.batch.returned).toBeUndefined();
    expect(next.transfer).toEqual([]);
  });

  it("takes back only buffers it could have made, and keeps a few of them", () => {
    const writer = new BatchWriter(true, true);
    for (const junk of [
      new ArrayBuffer(100),
      new ArrayBuffer(INITIAL_BUFFER + 2),
      new ArrayBuffer(64 * 1024 * 1024),
      new SharedArrayBuffer(INITIAL_BUFFER),
      new Uint8Array(INITIAL_BUFFER),
      "buffer",
      null,
    ]) {
      writer.recycle(junk);
      writer.giveBack(junk as ArrayBuffer);
    }
    expect(writer.pooled).toBe(0);
    writer.add([Event.Ping, 1]);
    expect(take(writer).batch.returned).toBeUndefined();
    const buffers = Array.from({ length: 10 }, (_, i) => new ArrayBuffer(INITIAL_BUFFER << i));
    for (const buffer of buffers) writer.recycle(buffer);
    writer.recycle(buffers[9]);
    expect(writer.pooled).toBe(4);
    // The largest were kept: a batch of 3 MiB fits without allocating.
    writer.addHot(Event.Message, 1, 1, new Uint8Array(3 * 1024 * 1024));
    expect(take(writer).batch.buffer).toBe(buffers[9]);
    expect(writer.allocated).toBe(0);
  });

  it("neither pools nor hands back anything without recycling (process, main)", () => {
    const writer = new BatchWriter(true);
    writer.giveBack(new ArrayBuffer(INITIAL_BUFFER));
    writer.recycle(new ArrayBuffer(INITIAL_BUFFER));
    writer.addHot(Event.Message, 1, 0, "x");
    const { batch, transfer } = take(writer);
    expect(batch.returned).toBeUndefined();
    expect(transfer).toEqual([batch.buffer]);
    expect(writer.pooled).toBe(0);
    expect(writer.allocated).toBe(1);
  });

  it("starts the next batch as large as the last one needed and an eighth more, so it rarely grows", () => {
    const writer = new BatchWriter(true);
    for (let i = 0; i < 100; i++) writer.addHot(Event.Message, i, 1, pattern(1_000, i));
    const first = take(writer).batch;
    // The first grew from 16 KiB to 128 KiB (4 buffers).
    expect(first.length).toBe(100 * 1_012);
    expect(first.buffer!.byteLength).toBe(128 * 1024);
    expect(writer.allocated).toBe(4);
    // The next ones start at 101,200 bytes and an eighth, in 16 KiB steps: 112 KiB, whose
    // unused tail (zeroed before it leaves) is far less than a power of two's would be. A
    // batch a little larger than the last fits without growing.
    for (let i = 0; i < 105; i++) writer.addHot(Event.Message, i, 1, pattern(1_000, i));
    const second = take(writer).batch;
    expect(second.buffer!.byteLength).toBe(112 * 1024);
    expect(writer.allocated).toBe(5);
    writer.addHot(Event.Message, 1, 1, pattern(10, 1));
    const third = take(writer).batch;
    expect(third.buffer!.byteLength).toBe(Math.ceil((105 * 1_012 * 9) / 8 / 16_384) * 16_384);
    expect(writer.allocated).toBe(6);
  });
});

describe("BatchWriter#full", () => {
  it("says a packed batch is full once it holds 1 MiB of payloads", () => {
    const writer = new BatchWriter(true);
    for (let i = 0; i < 255; i++) writer.addHot(Event.Message, 1, 1, new Uint8Array(4096));
    expect(writer.full).toBe(false);
    writer.addHot(Event.Message, 1, 1, new Uint8Array(4096));
    expect(writer.full).toBe(true);
    take(writer);
    expect(writer.full).toBe(false);
  });

  it("never says so unpacked (isolation main): nothing is copied, nothing to keep in cache", () => {
    const writer = new BatchWriter(false);
    writer.addHot(Event.Message, 1, 1, new Uint8Array(2 * 1024 * 1024));
    expect(writer.full).toBe(false);
  });
});

describe("worthRecycling", () => {
  const batch = (length: number, buffer: ArrayBuffer | null = new ArrayBuffer(INITIAL_BUFFER)) =>
    ({ seq: 1, ack: 0, records: [], buffer, length }) satisfies Batch;

  it("is true for a large batch where the transport recycles", () => {
    expect(worthRecycling(batch(256 * 1024), true)).toBe(true);
    expect(worthRecycling(batch(4 * 1024 * 1024), true)).toBe(true);
  });

  it("is false for a small batch, a batch without a buffer, or without recycling", () => {
    expect(worthRecycling(batch(256 * 1024 - 1), true)).toBe(false);
    expect(worthRecycling(batch(0, null), true)).toBe(false);
    expect(worthRecycling(batch(4 * 1024 * 1024), false)).toBe(false);
  });
});

describe("BatchWriter, packed: no byte it did not write leaves", () => {
  // Batch buffers are allocated uninitialized. Stand-in for the allocator's leftovers (another
  // connection's data, in a real process): every fresh buffer starts full of 0xee. No header
  // word is 0xeeeeeeee and no payload below holds four 0xee bytes in a row (binary ones hold no
  // 0xee, and UTF-8 has continuation bytes after each 0xee), so an aligned 0xeeeeeeee word that
  // crosses is memory the writer did not write; and every padding byte must be zero.
  const LEFTOVER = 0xee;
  const allocUnsafeSlow = Buffer.allocUnsafeSlow;
  afterEach(() => vi.restoreAllMocks());
  const dirtyAllocator = () =>
    vi.spyOn(Buffer, "allocUnsafeSlow").mockImplementation((size: number) => {
      const buffer = allocUnsafeSlow(size);
      buffer.fill(LEFTOVER);
      return buffer;
    });
  const clean = fc
    .uint8Array({ maxLength: 5_000 })
    .map((bytes) => bytes.map((byte) => (byte === LEFTOVER ? 0 : byte)));
  const payload = fc.oneof(fc.string({ maxLength: 40 }), clean);

  /** Checks a taken batch's buffer; returns how many bytes past `length` are not zero. */
  function check(batch: Batch): number {
    const buffer = batch.buffer!;
    const length = batch.length!;
    const words = new Uint32Array(buffer);
    expect(words.indexOf(0xeeeeeeee)).toBe(-1);
    const bytes = new Uint8Array(buffer);
    for (let offset = 0; offset < length; ) {
      const size = words[(offset >>> 2) + 2]!;
      const tag = words[offset >>> 2]! & 0xff;
      if (tag === 2) {
        offset += 12; // a cold record's place marker: a header alone
        continue;
      }
      const end = offset + 12 + size;
      const padded = offset + 12 + ((size + 3) & ~3);
      for (let i = end; i < padded; i++) expect(bytes[i]).toBe(0);
      offset = padded;
    }
    return bytes.subarray(length).filter((byte) => byte !== 0).length;
  }

  it("zeroes the padding and a fresh buffer's unused tail, however the batch grew", () => {
    const spy = dirtyAllocator();
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(2), payload), { maxLength: 60 }), (list) => {
        const writer = new BatchWriter(true);
        list.forEach(([way, bytes], index) => {
          if (way === 0) writer.addHot(Event.Message, index, 0, bytes);
          else if (way === 1) writer.addWithPayload([Event.Error, index], bytes);
          else writer.add([Event.Ping, index]);
        });
        const taken = writer.take(0);
        if (taken === null || taken.batch.buffer === null) return;
        // Every buffer here is fresh from the (dirty) allocator: its tail must be all zero.
        expect(check(taken.batch)).toBe(0);
      }),
      { numRuns: 150 },
    );
    // The stand-in allocator was the one in use: the property saw dirty memory.
    expect(spy).toHaveBeenCalled();
  });

  it("leaves no leftovers in buffers it pools, grown out of or handed back", () => {
    dirtyAllocator();
    const writer = new BatchWriter(true, true);
    const other = new BatchWriter(true, true);
    for (let round = 0; round < 60; round++) {
      // Sizes that rise and fall, so batches outgrow pooled buffers (which go back into the
      // pool half written) and later ones fit in them again.
      const count = 1 + ((round * 11) % 37);
      for (let i = 0; i < count; i++) {
        const size = ((round * 977 + i * 131) % 9_000) + 1;
        writer.addHot(Event.Message, i, 1, new Uint8Array(size).fill((round + i) % 200));
      }
      const { batch, transfer } = take(writer);
      // A pooled buffer's tail holds earlier batches of this writer: checked for leftovers only.
      check(batch);
      const received = structuredClone(batch, { transfer });
      other.giveBack(received.buffer);
      other.add([Command.Pong, received.seq]);
      const answer = take(other);
      const back = structuredClone(answer.batch, { transfer: answer.transfer });
      for (const buffer of back.returned ?? []) writer.recycle(buffer);
    }
    // Buffers were both allocated (dirty) and reused from the pool along the way.
    expect(writer.allocated).toBeGreaterThan(1);
    expect(writer.allocated).toBeLessThan(20);
  });
});

describe("BatchWriter, kept payloads and forwards", () => {
  const kept = (length: number, fill: number) => Buffer.alloc(length, fill);

  it("keeps a packed message of 1 KiB and more, flags it, and resolves its forward", () => {
    const io = new BatchWriter(true);
    const runtime = new BatchWriter(true);
    const large = kept(1024, 1);
    const small = kept(1023, 2);
    const other = kept(5000, 3);
    io.addMessage(Event.Message, 1, HotFlag.Binary, large);
    io.addMessage(Event.Message, 1, 0, small);
    io.addMessage(Event.Message, 2, 0, other);
    const { batch } = take(io);
    expect(io.keptBatches).toBe(1);
    const flags = decode(batch).map((record) => record[3]);
    expect(flags).toEqual([HotFlag.Binary | HotFlag.Kept, 0, HotFlag.Kept]);
    // The runtime sends both kept ones back (in the other order) and the small one as bytes.
    runtime.addForward(Command.Send, 2, 0, batch.seq, 1);
    runtime.addHot(Command.Send, 1, 0, small);
    runtime.addForward(Command.Broadcast, 0, 1, batch.seq, 0);
    const back = take(runtime).batch;
    const out: BatchRecord[] = [];
    readBatch(
      back,
      (kind, id, flag, payload) => out.push([kind, id, flag, payload]),
      () => {},
      (seq, ordinal) => io.keptPayload(seq, ordinal),
    );
    expect(out).toHaveLength(3);
    expect(out[0]!.slice(0, 3)).toEqual([Command.Send, 2, 0]);
    // The very buffers it kept: nothing was copied.
    expect(out[0]![3]).toBe(other);
    expect(Buffer.compare(out[1]![3] as Buffer, small)).toBe(0);
    expect(out[2]!.slice(0, 3)).toEqual([Command.Broadcast, 0, 1]);
    expect(out[2]![3]).toBe(large);
    // A forward entry is 16 bytes, whatever the payload's size.
    expect(back.length).toBe(16 + 12 + ((1023 + 3) & ~3) + 16);
  });

  it("lets go of kept payloads once their batch is acknowledged, in order", () => {
    const io = new BatchWriter(true);
    const seqs: number[] = [];
    for (let i = 0; i < 3; i++) {
      io.addMessage(Event.Message, 1, 0, kept(2048, i));
      seqs.push(take(io).batch.seq);
    }
    io.addMessage(Event.Message, 1, 0, kept(10, 9));
    take(io); // nothing large: nothing kept for it
    expect(io.keptBatches).toBe(3);
    io.acknowledged(seqs[1]!);
    expect(io.keptBatches).toBe(1);
    expect(io.keptPayload(seqs[0]!, 0)).toBeUndefined();
    expect(io.keptPayload(seqs[2]!, 0)![0]).toBe(2);
    io.acknowledged(seqs[2]! + 5);
    expect(io.keptBatches).toBe(0);
  });

  it("skips a forward whose payload is not kept, and keeps nothing unpacked", () => {
    const runtime = new BatchWriter(true);
    runtime.addForward(Command.Send, 1, 0, 7, 0);
    runtime.addHot(Command.Send, 1, 0, "after");
    const out: string[] = [];
    readBatch(
      take(runtime).batch,
      (_kind, _id, _flag, payload) => out.push(payload.toString()),
      () => {},
      () => undefined,
    );
    expect(out).toEqual(["after"]);
    const main = new BatchWriter(false);
    main.addMessage(Event.Message, 1, 0, kept(4096, 1));
    const { batch } = take(main);
    expect(main.keptBatches).toBe(0);
    expect(batch.records[0]![3]).toBe(0);
  });
});
