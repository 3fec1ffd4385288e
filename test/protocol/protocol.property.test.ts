import { isUtf8 } from "node:buffer";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { ProtocolErrorCode } from "../../src/protocol/errors.js";
import { encodeFrame } from "../../src/protocol/frame.js";
import type { Protocol, ProtocolOptions, Role } from "../../src/protocol/protocol.js";
import {
  createProtocol,
  feedSplit,
  type InflateMode,
  type ProtocolEvent,
  parseFrames,
  toHex,
} from "./recorder.js";

/**
 * Property tests for the protocol core: what its own writer produces, its reader parses back
 * into the same messages under any chunking; and no input at all makes `receive` throw or emit
 * anything but events and at most one documented error.
 */

/** The close code each documented error code fails the connection with (errors.ts). */
const DOCUMENTED: Record<ProtocolErrorCode, number> = {
  WS_ERR_RESERVED_BITS: 1002,
  WS_ERR_RESERVED_OPCODE: 1002,
  WS_ERR_UNMASKED_FRAME: 1002,
  WS_ERR_MASKED_FRAME: 1002,
  WS_ERR_CONTROL_TOO_LONG: 1002,
  WS_ERR_CONTROL_FRAGMENTED: 1002,
  WS_ERR_UNEXPECTED_CONTINUATION: 1002,
  WS_ERR_EXPECTED_CONTINUATION: 1002,
  WS_ERR_LENGTH_MSB_SET: 1002,
  WS_ERR_INVALID_CLOSE_PAYLOAD: 1002,
  WS_ERR_INVALID_CLOSE_CODE: 1002,
  WS_ERR_INVALID_UTF8: 1007,
  WS_ERR_MESSAGE_TOO_BIG: 1009,
  WS_ERR_TOO_MANY_FRAGMENTS: 1009,
  WS_ERR_BUFFER_LIMIT: 1009,
  WS_ERR_INVALID_COMPRESSED_DATA: 1007,
  WS_ERR_DATA_AFTER_CLOSE: 1002,
};

/** The key the reading side masks its pongs with, when it is a client. */
const READER_KEY = Uint8Array.from([0x37, 0xfa, 0x21, 0x3d]);

// ───────────────────────────── generators ─────────────────────────────

function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + seed * 17 + (i >>> 8)) & 0xff;
  return out;
}

/** Mostly small, sometimes right at a length-encoding boundary (section 5.2). */
const lengthArb = fc.oneof(
  { weight: 8, arbitrary: fc.nat(300) },
  { weight: 1, arbitrary: fc.constantFrom(125, 126, 127, 65535, 65536, 65537) },
);

const textArb = fc.oneof(
  fc.string({ unit: "binary", maxLength: 60 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  // A long ASCII run so the byte length lands on a boundary, then random characters.
  fc
    .tuple(lengthArb, fc.string({ unit: "binary", maxLength: 6 }))
    .map(([n, tail]) => "x".repeat(n) + tail),
);

interface Control {
  opcode: 0x9 | 0xa;
  payload: Uint8Array;
}

const controlArb: fc.Arbitrary<Control> = fc.record({
  opcode: fc.constantFrom(0x9 as const, 0xa as const),
  payload: fc.uint8Array({ maxLength: 125 }),
});

type Item =
  | { kind: "control"; control: Control }
  | {
      kind: "message";
      isBinary: boolean;
      bytes: Buffer;
      /** Where the payload is cut into fragments (may repeat: empty fragments are legal). */
      cuts: number[];
      /** Control frames sent between fragments, by gap. */
      between: Array<[number, Control]>;
    };

function messageArb(length: fc.Arbitrary<number>, text: fc.Arbitrary<string>): fc.Arbitrary<Item> {
  const payload = fc.oneof(
    fc.tuple(length, fc.nat(255)).map(([n, seed]) => ({ isBinary: true, bytes: pattern(n, seed) })),
    text.map((s) => ({ isBinary: false, bytes: Buffer.from(s) })),
  );
  return fc
    .tuple(
      payload,
      fc.array(fc.nat(), { maxLength: 4 }),
      fc.array(fc.tuple(fc.nat(), controlArb), { maxLength: 3 }),
    )
    .map(([{ isBinary, bytes }, rawCuts, between]) => ({
      kind: "message" as const,
      isBinary,
      bytes,
      cuts: rawCuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b),
      between,
    }));
}

const itemsArb = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: messageArb(lengthArb, textArb) },
    { weight: 1, arbitrary: controlArb.map((control) => ({ kind: "control" as const, control })) },
  ),
  { minLength: 1, maxLength: 6 },
);

/** Smaller sequences, used as the raw material for mutations. */
const smallItemsArb = fc.array(
  fc.oneof(
    {
      weight: 3,
      arbitrary: messageArb(fc.nat(140), fc.string({ unit: "binary", maxLength: 30 })),
    },
    { weight: 1, arbitrary: controlArb.map((control) => ({ kind: "control" as const, control })) },
  ),
  { minLength: 1, maxLength: 4 },
);

/** Chunk boundaries: random cuts, or fixed-size pieces down to one byte. */
const chunkingArb = fc.oneof(
  { weight: 3, arbitrary: fc.array(fc.nat(), { maxLength: 24 }).map((c) => ({ cuts: c })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 9 }).map((size) => ({ size })) },
);

function cutsFor(chunking: { cuts: number[] } | { size: number }, length: number): number[] {
  if ("size" in chunking) {
    const cuts: number[] = [];
    for (let at = chunking.size; at < length; at += chunking.size) cuts.push(at);
    return cuts;
  }
  return chunking.cuts.map((c) => c % (length + 1)).sort((a, b) => a - b);
}

// ───────────────────────────── the writer ─────────────────────────────

/**
 * Serializes the items with a core of the `writer` role (its own sendMessage / sendFragment /
 * ping / pong), and lists the events a core of the other role must produce reading them.
 */
function write(
  items: Item[],
  writer: Role,
  keys: Uint8Array[],
  compressed: boolean,
): { wire: Buffer; expected: ProtocolEvent[] } {
  let k = 0;
  const { protocol, rec } = createProtocol({
    role: writer,
    compression: compressed,
    maskKey: () => keys[k++ % keys.length],
  });
  const readerMask = writer === "client" ? null : READER_KEY;
  const expected: ProtocolEvent[] = [];
  const control = ({ opcode, payload }: Control) => {
    if (opcode === 0x9) {
      expect(protocol.ping(payload)).toBe(true);
      const pong = encodeFrame(payload, { opcode: 0xa, fin: true, rsv1: false, mask: readerMask });
      expected.push({ type: "output", hex: toHex(pong as Buffer) });
      expected.push({ type: "ping", hex: toHex(payload) });
    } else {
      expect(protocol.pong(payload)).toBe(true);
      expected.push({ type: "pong", hex: toHex(payload) });
    }
  };
  for (const item of items) {
    if (item.kind === "control") {
      control(item.control);
      continue;
    }
    const { bytes, cuts, isBinary } = item;
    if (cuts.length === 0) {
      expect(protocol.sendMessage(bytes, isBinary, compressed)).toBe(true);
    } else {
      const bounds = [0, ...cuts, bytes.length];
      for (let f = 0; f + 1 < bounds.length; f++) {
        const fin = f + 2 === bounds.length;
        protocol.sendFragment(bytes.subarray(bounds[f], bounds[f + 1]), isBinary, fin, compressed);
        if (!fin) {
          for (const [gap, c] of item.between) if (gap % cuts.length === f) control(c);
        }
      }
    }
    expected.push({ type: "message", hex: toHex(bytes), isBinary });
  }
  const wire = Buffer.from(rec.outputHex(), "hex");
  // The writer honoured section 5.1: clients mask every frame, servers none.
  for (const frame of parseFrames(wire)) expect(frame.masked).toBe(writer === "client");
  return { wire, expected };
}

const other = (role: Role): Role => (role === "client" ? "server" : "client");

// ───────────────────────────── invariants on any input ─────────────────────────────

/**
 * What must hold for any input whatsoever: documented errors only, at most one, and silence
 * after it; one close; text messages that are UTF-8; output that is well-formed for the role.
 */
function checkInvariants(events: ProtocolEvent[], role: Role): void {
  const errors = events.filter((e) => e.type === "error");
  expect(errors.length).toBeLessThanOrEqual(1);
  for (const error of errors) {
    expect(Object.keys(DOCUMENTED)).toContain(error.code);
    expect([1002, 1007, 1009]).toContain(error.closeCode);
    expect(error.closeCode).toBe(DOCUMENTED[error.code]);
  }
  const errorAt = events.findIndex((e) => e.type === "error");
  if (errorAt >= 0) {
    expect(events.slice(errorAt + 1)).toEqual([{ type: "closeTransport" }]);
  }
  const closes = events.filter((e) => e.type === "closeReceived");
  expect(closes.length).toBeLessThanOrEqual(1);
  const closeAt = events.findIndex((e) => e.type === "closeReceived");
  if (closeAt >= 0) {
    // Section 7.1.1: the server closes TCP at once, the client waits for it.
    expect(events.slice(closeAt + 1)).toEqual(
      role === "server" ? [{ type: "closeTransport" }] : [],
    );
  }
  expect(events.filter((e) => e.type === "closeTransport").length).toBeLessThanOrEqual(1);
  for (const e of events) {
    if (e.type === "message" && !e.isBinary) expect(isUtf8(Buffer.from(e.hex, "hex"))).toBe(true);
    if (e.type === "output") {
      for (const frame of parseFrames(Buffer.from(e.hex, "hex"))) {
        expect(frame.masked).toBe(role === "client");
        if (frame.opcode >= 0x8) expect(frame.payload.length).toBeLessThanOrEqual(125);
      }
    }
  }
}

/** Feeds `input` in pieces and checks the invariants; then checks that a closed core stays quiet. */
function feedAnything(protocol: Protocol, events: ProtocolEvent[], input: Buffer, cuts: number[]) {
  expect(() => feedSplit(protocol, input, cuts)).not.toThrow();
  checkInvariants(events, protocol.role);
  const done = events.some((e) => e.type === "error" || e.type === "closeReceived");
  if (done) {
    const before = events.length;
    protocol.receive(Buffer.from([0x81, 0x01, 0x41, 0x89, 0x00]));
    expect(events.length).toBe(before);
  }
}

const optionsArb: fc.Arbitrary<Omit<ProtocolOptions, "role"> & { inflateMode: InflateMode }> =
  fc.record({
    compression: fc.boolean(),
    inflateMode: fc.constantFrom<InflateMode>("identity-sync", "manual"),
    // Modest limits so oversize headers are cheap, sometimes tiny so 1009 paths are reached.
    maxMessageSize: fc.constantFrom(1 << 20, 64),
    maxFragments: fc.constantFrom(1000, 3),
    maxBufferedBytes: fc.constantFrom(1 << 21, 100),
  });

// ───────────────────────────── the properties ─────────────────────────────

describe("protocol core properties", () => {
  it.each(["client", "server"] as const)(
    "what a %s writes, the other role reads back identically under any chunking",
    (writer) => {
      fc.assert(
        fc.property(
          itemsArb,
          fc.array(fc.uint8Array({ minLength: 4, maxLength: 4 }), { minLength: 1, maxLength: 4 }),
          chunkingArb,
          (items, keys, chunking) => {
            const { wire, expected } = write(items, writer, keys, false);
            const { protocol, rec } = createProtocol({
              role: other(writer),
              maskKey: () => READER_KEY,
            });
            feedSplit(protocol, wire, cutsFor(chunking, wire.length));
            expect(rec.events).toEqual(expected);
            expect(protocol.state).toBe("open");
          },
        ),
        { numRuns: 100 },
      );
    },
  );

  it("compressed messages come back in order when inflation is answered late, under any chunking", () => {
    // "Compressed" with the identity codec: the point is the core's waiting state, not zlib.
    fc.assert(
      fc.property(
        itemsArb,
        chunkingArb,
        fc.array(fc.boolean(), { minLength: 1, maxLength: 16 }),
        (items, chunking, answerNow) => {
          const { wire, expected } = write(items, "client", [READER_KEY], true);
          const { protocol, rec } = createProtocol({ role: "server", compression: true });
          let answered = 0;
          let turn = 0;
          const answer = () => {
            const requests = rec.events.filter((e) => e.type === "inflate");
            const last = requests[requests.length - 1];
            expect(requests.length).toBe(answered + 1);
            answered++;
            protocol.inflated([Buffer.from(last.hex, "hex")]);
          };
          const cuts = cutsFor(chunking, wire.length);
          let start = 0;
          for (const cut of [...cuts, wire.length]) {
            if (cut > start) protocol.receive(Buffer.from(wire.subarray(start, cut)));
            start = Math.max(start, cut);
            while (protocol.inflating && answerNow[turn++ % answerNow.length]) answer();
          }
          for (let guard = 0; protocol.inflating && guard < 100_000; guard++) answer();
          expect(rec.events.filter((e) => e.type !== "inflate")).toEqual(expected);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("random bytes never throw and end in at most one documented error", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<Role>("server", "client"),
        optionsArb,
        fc.uint8Array({ maxLength: 300 }),
        chunkingArb,
        (role, { inflateMode, ...options }, input, chunking) => {
          const { protocol, rec } = createProtocol({ role, ...options }, inflateMode);
          feedAnything(protocol, rec.events, Buffer.from(input), cutsFor(chunking, input.length));
        },
      ),
      { numRuns: 400 },
    );
  });

  it("mutated valid frames never throw and end in at most one documented error", () => {
    fc.assert(
      fc.property(
        fc.constantFrom<Role>("server", "client"),
        optionsArb,
        smallItemsArb,
        fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat()),
        chunkingArb,
        (readerRole, { inflateMode, ...options }, items, mutations, truncate, chunking) => {
          const { wire } = write(items, other(readerRole), [READER_KEY], !!options.compression);
          for (const [at, value] of mutations) wire[at % wire.length] = value;
          const input = truncate === null ? wire : wire.subarray(0, truncate % (wire.length + 1));
          const { protocol, rec } = createProtocol({ role: readerRole, ...options }, inflateMode);
          feedAnything(protocol, rec.events, input, cutsFor(chunking, input.length));
        },
      ),
      { numRuns: 400 },
    );
  });
});
