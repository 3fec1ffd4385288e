/**
 * Fuzz targets for the protocol core (src/protocol/protocol.ts), driven through its sans-I/O API
 * with an inflater of our own, random chunking, callbacks that act back on the core, and random
 * limits:
 *
 * - protocol-exact: valid streams from an independent encoder. The core's events, its output
 *   frames and its final state must equal a model of RFC 6455, RFC 7692 and Switchboard's limits,
 *   exactly.
 * - protocol-mutate: the same streams with bytes set, flipped, inserted, deleted or cut off. The
 *   universal invariants hold, and everything that completed before the first changed byte is
 *   delivered as if nothing had changed.
 * - protocol-diff: mutated streams against an independent reference reader. The same events, and
 *   a failure exactly where the reference fails, with one of the codes it allows.
 *
 * Universal invariants, for any input: receive() never throws; at most one error, with a
 * documented code and its close code, followed only by closeTransport; at most one
 * closeReceived; text messages are valid UTF-8; the output parses strictly and obeys the rules a
 * peer checks; once finished the core is silent.
 */
import fc from "fast-check";
import {
  type ProtocolError,
  type ProtocolErrorCode,
  protocolError,
} from "../src/protocol/errors.js";
import { Protocol } from "../src/protocol/protocol.js";
import { searchProperty, type Target, type TargetOptions, Violation } from "./target.js";
import {
  deflateMessage,
  frame,
  inflatePrefix,
  isUtf8Reference,
  isWireCloseCode,
  type LengthForm,
  outgoingViolation,
  parseStrict,
} from "./wire.js";

/**
 * A fixed bug, checked by default (--lenient skips it): receive() called from a callback that
 * inflated() fires (a message finished by an asynchronous inflater) parsed the new bytes at once,
 * ahead of input that arrived while the frame was inflating. The core now queues such input
 * behind what it held back. With --lenient, callbacks feed input re-entrantly only while
 * receive() is on the stack.
 */
let feedFromInflatedCallbacks = false;

type Role = "server" | "client";

/** Every error code the core documents, with the close code it fails with (errors.ts). */
const CLOSE_CODE_OF: Record<ProtocolErrorCode, number> = {
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

/**
 * How far a compressed message may exceed maxMessageSize on the wire. Messages are limited by
 * their inflated size (RFC 7692 leaves the limit to the endpoint; Switchboard's is on what the
 * application receives), and deflate's worst case is stored blocks: 5 bytes of header per
 * 65,535 bytes (RFC 1951 section 3.2.4), plus the empty block a sync flush ends with.
 */
function compressedWireAllowance(maxMessageSize: number): number {
  return maxMessageSize + 5 * Math.ceil(maxMessageSize / 65_535) + 16;
}

// ───────────────────────────── scenarios ─────────────────────────────

interface Control {
  opcode: 9 | 10;
  payload: Uint8Array;
}

interface MessageItem {
  kind: "message";
  binary: boolean;
  data: Buffer;
  /** Compressed when permessage-deflate is on (RFC 7692 section 6: RSV1 on the first frame). */
  compress: boolean;
  /** Fragment boundaries, as offsets into the (compressed) payload, reduced modulo its length. */
  cuts: number[];
  /** Control frames interleaved between fragments (section 5.4 allows them there). */
  between: Array<[gap: number, control: Control]>;
  lengthForm: LengthForm;
}

type Item = MessageItem | { kind: "control"; control: Control };

interface CloseSpec {
  /** null: an empty close frame, which the peer reports as 1005 (section 7.1.5). */
  code: number | null;
  reason: string;
}

/**
 * What a callback does back to the core, chosen in turn for each callback: send a message, a
 * ping, a pong or a close frame; tear the transport down; or feed the next input chunk from
 * inside the callback (re-entrant input must wait its turn).
 */
type Action = "none" | "send" | "sendText" | "ping" | "pong" | "close" | "transport" | "feed";

interface Limits {
  maxMessageSize: number;
  maxFragments: number;
  maxBufferedBytes: number;
}

interface Scenario {
  reader: Role;
  compression: boolean;
  items: Item[];
  close: CloseSpec | null;
  /** Frames after the close frame: the core must ignore them (section 5.5.1). */
  trailing: Item[];
  maskKeys: Uint8Array[];
  chunking: { cuts: number[] } | { size: number };
  /** The test's inflater answers inside the inflate callback, or later between chunks. */
  inflateMode: "sync" | "deferred";
  answerBeforeChunk: boolean[];
  /** Inflated output is handed over in pieces of these sizes (empty pieces included). */
  outputSplits: number[];
  /** The inflater enforces inflateBudget itself, as the connection layer's does. */
  inflaterEnforcesBudget: boolean;
  /** inflated()/inflateFailed() calls when nothing is inflating: they must do nothing. */
  spuriousAnswers: boolean;
  actions: Action[];
  limits: Limits | null;
}

/** Deterministic binary content, so a counterexample prints as (length, seed). */
function pattern(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + seed * 17 + (i >>> 7) * 7) & 0xff;
  return out;
}

/** Lengths on either side of the 7-bit, 16-bit and 64-bit length forms (section 5.2). */
const boundaryLength = fc.constantFrom(0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537);
const length = fc.oneof(
  { weight: 10, arbitrary: fc.nat(200) },
  { weight: 1, arbitrary: boundaryLength },
);
const controlPayload = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 20 }) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(0, 124, 125)
      .chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
  },
);
const control: fc.Arbitrary<Control> = fc.record({
  opcode: fc.constantFrom(9 as const, 10 as const),
  payload: controlPayload,
});
const unicode = fc.oneof(
  fc.string({ unit: "binary", maxLength: 30 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc
    .array(fc.integer({ min: 0x10000, max: 0x10ffff }), { maxLength: 12 })
    .map((codePoints) => String.fromCodePoint(...codePoints)),
);
const text = fc.oneof(
  { weight: 6, arbitrary: unicode.map((s) => Buffer.from(s)) },
  {
    weight: 1,
    arbitrary: fc.tuple(boundaryLength, unicode).map(([n, s]) => {
      const tail = Buffer.from(s);
      return Buffer.concat([Buffer.alloc(Math.max(0, n - tail.length), 0x61), tail]);
    }),
  },
);
const message: fc.Arbitrary<MessageItem> = fc
  .record({
    binary: fc.boolean(),
    binaryContent: fc.tuple(length, fc.nat(255)),
    textContent: text,
    compress: fc.boolean(),
    cuts: fc.array(fc.nat(), { maxLength: 5 }),
    between: fc.array(fc.tuple(fc.nat(), control), { maxLength: 3 }),
    lengthForm: fc.oneof(
      { weight: 12, arbitrary: fc.constant<LengthForm>("minimal") },
      { weight: 1, arbitrary: fc.constantFrom<LengthForm>("16-bit", "64-bit") },
    ),
  })
  .map(({ binary, binaryContent, textContent, compress, cuts, between, lengthForm }) => ({
    kind: "message" as const,
    binary,
    data: binary ? pattern(binaryContent[0], binaryContent[1]) : textContent,
    compress,
    cuts,
    between,
    lengthForm,
  }));
const item: fc.Arbitrary<Item> = fc.oneof(
  { weight: 3, arbitrary: message },
  { weight: 1, arbitrary: control.map((c) => ({ kind: "control" as const, control: c })) },
);
const closeSpec: fc.Arbitrary<CloseSpec> = fc.oneof(
  fc.constant({ code: null, reason: "" }),
  fc.record({
    code: fc.constantFrom(1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4999),
    // Reasons fit the 125-byte control payload with the code (section 5.5.1).
    reason: fc.string({ unit: "binary", maxLength: 40 }).map((r) => {
      let s = r;
      while (Buffer.byteLength(s) > 123) s = [...s].slice(0, -1).join("");
      return s;
    }),
  }),
);
const action = fc.constantFrom<Action>(
  "none",
  "none",
  "none",
  "send",
  "sendText",
  "ping",
  "pong",
  "close",
  "transport",
  "feed",
  "feed",
);
const scenario: fc.Arbitrary<Scenario> = fc.record({
  reader: fc.constantFrom<Role>("server", "client"),
  compression: fc.boolean(),
  items: fc.array(item, { maxLength: 8 }),
  close: fc.option(closeSpec, { nil: null }),
  trailing: fc.array(item, { maxLength: 2 }),
  maskKeys: fc.array(fc.uint8Array({ minLength: 4, maxLength: 4 }), { minLength: 1, maxLength: 3 }),
  chunking: fc.oneof(
    { weight: 3, arbitrary: fc.array(fc.nat(), { maxLength: 30 }).map((cuts) => ({ cuts })) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 9 }).map((size) => ({ size })) },
  ),
  inflateMode: fc.constantFrom<"sync" | "deferred">("sync", "deferred"),
  answerBeforeChunk: fc.array(fc.boolean(), { minLength: 1, maxLength: 10 }),
  outputSplits: fc.array(fc.nat(40), { maxLength: 4 }),
  inflaterEnforcesBudget: fc.boolean(),
  spuriousAnswers: fc.boolean(),
  actions: fc.oneof(
    { weight: 2, arbitrary: fc.constant<Action[]>(["none"]) },
    { weight: 1, arbitrary: fc.array(action, { minLength: 1, maxLength: 8 }) },
  ),
  limits: fc.option(
    fc.record({
      maxMessageSize: fc.oneof(
        fc.integer({ min: 0, max: 300 }),
        fc.constantFrom(125, 126, 65535, 65536),
      ),
      maxFragments: fc.integer({ min: 1, max: 6 }),
      maxBufferedBytes: fc.oneof(fc.integer({ min: 0, max: 400 }), fc.constant(1 << 24)),
    }),
    { nil: null, freq: 2 },
  ),
});

interface Mutation {
  edits: Array<{ kind: "set" | "flip" | "insert" | "delete"; at: number; value: number }>;
  truncate: number | null;
  /**
   * For the differential target: the close frame carries this code instead, often one that may
   * never be sent (section 7.4.1: 1004-1006 and 1015 are reserved, 0-999 and 5000+ unused).
   */
  closeCode: number | null;
}

const mutation: fc.Arbitrary<Mutation> = fc.record({
  edits: fc.array(
    fc.record({
      kind: fc.constantFrom("set" as const, "flip" as const, "insert" as const, "delete" as const),
      at: fc.nat(),
      value: fc.nat(255),
    }),
    { maxLength: 4 },
  ),
  truncate: fc.option(fc.nat(), { nil: null }),
  closeCode: fc.oneof(
    { weight: 3, arbitrary: fc.constant(null) },
    {
      weight: 1,
      arbitrary: fc.oneof(
        fc.constantFrom(
          0,
          999,
          1004,
          1005,
          1006,
          1012,
          1013,
          1014,
          1015,
          1016,
          2999,
          3000,
          4999,
          5000,
        ),
        fc.nat(0xffff),
      ),
    },
  ),
});

/** Applies a mutation; returns the bytes and the offset of the first byte that changed. */
function mutate(wire: Buffer, m: Mutation): { bytes: Buffer; firstChange: number } {
  let bytes = Buffer.from(wire);
  let firstChange = bytes.length;
  for (const edit of m.edits) {
    if (bytes.length === 0) break;
    const at = edit.at % (bytes.length + (edit.kind === "insert" ? 1 : 0));
    if (edit.kind === "set") bytes[at] = edit.value;
    else if (edit.kind === "flip") bytes[at] ^= 1 << (edit.value & 7);
    else if (edit.kind === "insert") {
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([edit.value]), bytes.subarray(at)]);
    } else bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
    firstChange = Math.min(firstChange, at);
  }
  if (m.truncate !== null) {
    const end = m.truncate % (bytes.length + 1);
    bytes = bytes.subarray(0, end);
    firstChange = Math.min(firstChange, end);
  }
  return { bytes, firstChange };
}

/** Buffers and byte arrays print as hex. */
export function formatValue(value: unknown): string {
  return JSON.stringify(value, (_key, v) => {
    if (v && v.type === "Buffer" && Array.isArray(v.data)) {
      return Buffer.from(v.data).toString("hex");
    }
    if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
    return v;
  });
}

// ───────────────────────────── the stream and its model ─────────────────────────────

interface StreamEvent {
  /** Byte offset just past the last frame of this event. */
  end: number;
  control?: Control;
  /** For a control frame inside a message: the index of the fragment it precedes. */
  beforeFragment?: number;
  message?: {
    binary: boolean;
    data: Buffer;
    compressed: boolean;
    frames: number;
    /** Payload bytes on the wire, cumulative, after each fragment. */
    wireAfter: number[];
    /** Message bytes (inflated, for a compressed message), cumulative, after each fragment. */
    sizeAfter: number[];
  };
  close?: CloseSpec;
}

function fragmentBounds(total: number, rawCuts: number[]): Array<[number, number]> {
  const cuts = rawCuts.map((c) => c % (total + 1)).sort((a, b) => a - b);
  const bounds = [0, ...cuts, total];
  const out: Array<[number, number]> = [];
  for (let i = 0; i + 1 < bounds.length; i++) out.push([bounds[i], bounds[i + 1]]);
  return out;
}

/** Encodes a scenario's frames as the peer would send them, noting what each one means. */
function buildStream(sc: Scenario): { wire: Buffer; events: StreamEvent[] } {
  const parts: Buffer[] = [];
  const events: StreamEvent[] = [];
  let offset = 0;
  let keyIndex = 0;
  // Section 5.1: frames to a server are masked, frames to a client are not.
  const mask = () => (sc.reader === "server" ? sc.maskKeys[keyIndex++ % sc.maskKeys.length] : null);
  const push = (bytes: Buffer) => {
    parts.push(bytes);
    offset += bytes.length;
  };
  const emit = (items: Item[]) => {
    for (const it of items) {
      if (it.kind === "control") {
        push(frame(it.control.opcode, it.control.payload, { mask: mask() }));
        events.push({ end: offset, control: it.control });
        continue;
      }
      const compressed = sc.compression && it.compress;
      const body = compressed ? deflateMessage(it.data) : it.data;
      const fragments = fragmentBounds(body.length, it.cuts);
      const wireAfter: number[] = [];
      const sizeAfter: number[] = [];
      for (let f = 0; f < fragments.length; f++) {
        const [start, end] = fragments[f];
        const fin = f === fragments.length - 1;
        const opcode = f === 0 ? (it.binary ? 2 : 1) : 0;
        push(
          frame(opcode, body.subarray(start, end), {
            fin,
            rsv1: compressed && f === 0,
            mask: mask(),
            lengthForm: it.lengthForm,
          }),
        );
        wireAfter.push(end);
        sizeAfter.push(compressed ? inflatePrefix(body.subarray(0, end), fin).length : end);
        if (fin) continue;
        for (const [gap, c] of it.between) {
          if (gap % (fragments.length - 1) !== f) continue;
          push(frame(c.opcode, c.payload, { mask: mask() }));
          events.push({ end: offset, control: c, beforeFragment: f + 1 });
        }
      }
      events.push({
        end: offset,
        message: {
          binary: it.binary,
          data: it.data,
          compressed,
          frames: fragments.length,
          wireAfter,
          sizeAfter,
        },
      });
    }
  };
  emit(sc.items);
  if (sc.close) {
    const { code, reason } = sc.close;
    const payload =
      code === null
        ? Buffer.alloc(0)
        : Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
    push(frame(8, payload, { mask: mask() }));
    events.push({ end: offset, close: sc.close });
    emit(sc.trailing);
  }
  return { wire: Buffer.concat(parts), events };
}

/** The close code and reason a callback's "close" action sends. */
const ACTION_CLOSE_CODE = 4321;
const ACTION_CLOSE_REASON = "bye";

/** A callback's action payload is a function of the callback's index alone. */
function actionPayload(index: number): Buffer {
  return pattern(index % 3 === 0 ? 0 : (index * 37) % 130, index);
}

function actionText(index: number): Buffer {
  return Buffer.from("é".repeat(actionPayload(index).length % 50));
}

interface Expected {
  events: string[];
  /** Output frames as opcode and payload hex. */
  output: Array<{ opcode: number; hex: string }>;
  state: "open" | "closing" | "closed";
  /** The limit error the stream must end with, if any. */
  limitError: ProtocolErrorCode | null;
}

/**
 * The first limit a message breaks, in the order the core checks them: from each frame header,
 * the wire size (compressed messages get the deflate allowance), the bytes held at once (a
 * compressed message holds its inflated bytes plus the frame being inflated), the fragment
 * count; then, for a compressed message, its inflated size.
 */
function limitBreach(
  limits: Limits,
  m: NonNullable<StreamEvent["message"]>,
): { fragment: number; code: ProtocolErrorCode } | null {
  const wireLimit = m.compressed
    ? compressedWireAllowance(limits.maxMessageSize)
    : limits.maxMessageSize;
  // The rule the allowance exists for: a valid message within maxMessageSize is never refused
  // for its wire size, whatever deflate made of it.
  if (m.compressed && m.data.length <= limits.maxMessageSize && m.wireAfter.at(-1)! > wireLimit) {
    throw new Violation(
      `a ${m.data.length} B message deflated to ${m.wireAfter.at(-1)} B, past the wire allowance`,
    );
  }
  for (let f = 0; f < m.frames; f++) {
    const frameBytes = m.wireAfter[f] - (f === 0 ? 0 : m.wireAfter[f - 1]);
    const held = m.compressed ? (f === 0 ? 0 : m.sizeAfter[f - 1]) + frameBytes : m.wireAfter[f];
    if (m.wireAfter[f] > wireLimit) return { fragment: f, code: "WS_ERR_MESSAGE_TOO_BIG" };
    if (held > limits.maxBufferedBytes) return { fragment: f, code: "WS_ERR_BUFFER_LIMIT" };
    if (f + 1 > limits.maxFragments) return { fragment: f, code: "WS_ERR_TOO_MANY_FRAGMENTS" };
    if (m.compressed && m.sizeAfter[f] > limits.maxMessageSize) {
      return { fragment: f, code: "WS_ERR_MESSAGE_TOO_BIG" };
    }
  }
  return null;
}

/**
 * What a conforming core does with the first `upto` events of a stream: deliver messages and
 * control frames in order, answer pings with pongs (section 5.5.2) and a close frame with a
 * close frame echoing its code (section 5.5.1) unless it already sent one, ignore everything
 * after the close frame, run each callback's action, and stop at the first broken limit.
 */
function model(sc: Scenario, stream: StreamEvent[], upto: number, limits: Limits | null): Expected {
  const events: string[] = [];
  const output: Expected["output"] = [];
  let state: "open" | "closing" | "closed" = "open";
  let callbacks = 0;

  let breachAt = -1;
  let breachFragment = -1;
  let limitError: ProtocolErrorCode | null = null;
  for (let i = 0; i < upto && limits; i++) {
    const m = stream[i].message;
    if (!m) continue;
    const breach = limitBreach(limits, m);
    if (breach) {
      breachAt = i;
      breachFragment = breach.fragment;
      limitError = breach.code;
      break;
    }
  }

  const act = () => {
    const index = callbacks++;
    const a = sc.actions[index % sc.actions.length];
    if (a === "transport") {
      state = "closed";
      return;
    }
    if (state !== "open") return;
    const payload = actionPayload(index);
    if (a === "send") output.push({ opcode: 2, hex: payload.toString("hex") });
    if (a === "sendText") output.push({ opcode: 1, hex: actionText(index).toString("hex") });
    if (a === "ping") output.push({ opcode: 9, hex: payload.subarray(0, 125).toString("hex") });
    if (a === "pong") output.push({ opcode: 10, hex: payload.subarray(0, 125).toString("hex") });
    if (a === "close") {
      const code = Buffer.from([ACTION_CLOSE_CODE >> 8, ACTION_CLOSE_CODE & 0xff]);
      output.push({
        opcode: 8,
        hex: Buffer.concat([code, Buffer.from(ACTION_CLOSE_REASON)]).toString("hex"),
      });
      state = "closing";
    }
  };

  for (let i = 0; i < upto && state !== "closed"; i++) {
    const e = stream[i];
    if (breachAt >= 0) {
      if (i >= breachAt) break;
      // Control frames inside the breaking message still arrive if they precede the fragment
      // that breaks the limit.
      const nextMessage = stream.slice(i).find((x) => x.message);
      if (
        nextMessage === stream[breachAt] &&
        e.beforeFragment !== undefined &&
        e.beforeFragment > breachFragment
      ) {
        break;
      }
    }
    if (e.control) {
      // After our close frame, pings and pongs are not processed (section 5.5.1).
      if (state !== "open") continue;
      const hex = Buffer.from(e.control.payload).toString("hex");
      if (e.control.opcode === 9) {
        output.push({ opcode: 10, hex });
        events.push(`ping:${hex}`);
      } else {
        events.push(`pong:${hex}`);
      }
      act();
    } else if (e.message) {
      events.push(`message:${e.message.binary ? "b" : "t"}:${e.message.data.toString("hex")}`);
      act();
    } else if (e.close) {
      const code = e.close.code ?? 1005;
      events.push(`close:${code}:${e.close.reason}`);
      if (state === "open") {
        const echo =
          e.close.code === null ? "" : Buffer.from([code >> 8, code & 0xff]).toString("hex");
        output.push({ opcode: 8, hex: echo });
      }
      state = "closed";
      act();
      // Section 7.1.1: the server closes the TCP connection first.
      if (sc.reader === "server") events.push("closeTransport");
    }
  }
  return {
    events,
    output,
    state,
    limitError: breachAt >= 0 && state !== "closed" ? limitError : null,
  };
}

// ───────────────────────────── driving the core ─────────────────────────────

interface Run {
  events: string[];
  /** Everything written, as one buffer. */
  output: Buffer;
  /** The writes as they happen, including any after the run. */
  writes: Buffer[];
  core: Protocol;
  transportClosed: boolean;
  /** Some input reached receive() while a frame was inflating. */
  inputWhileInflating: boolean;
}

function chunksOf(input: Buffer, chunking: Scenario["chunking"]): Buffer[] {
  let cuts: number[];
  if ("size" in chunking) {
    // Large inputs in tiny chunks would take long for nothing new: scale the chunk up.
    const size = input.length > 20_000 ? chunking.size * 997 : chunking.size;
    cuts = [];
    for (let at = size; at < input.length; at += size) cuts.push(at);
  } else {
    cuts = chunking.cuts.map((c) => c % (input.length + 1)).sort((a, b) => a - b);
  }
  const chunks: Buffer[] = [];
  let start = 0;
  for (const cut of [...cuts, input.length]) {
    if (cut <= start) continue;
    // Copies: the core unmasks in place and may keep references to what it was given.
    chunks.push(Buffer.from(input.subarray(start, cut)));
    start = cut;
  }
  return chunks;
}

function drive(sc: Scenario, input: Buffer, limits: Limits | null): Run {
  const events: string[] = [];
  const output: Buffer[] = [];
  const chunks = chunksOf(input, sc.chunking);
  let next = 0;
  let receiving = 0;
  let inputWhileInflating = false;
  let callbacks = 0;
  let transportClosed = false;

  // The test's inflater: stateless, it inflates the message's compressed bytes so far and hands
  // over what is new.
  let compressedSoFar: Buffer[] = [];
  let handedOver = 0;
  let request: { payload: Buffer; fin: boolean } | null = null;

  const feed = () => {
    const chunk = chunks[next++];
    if (core.inflating) inputWhileInflating = true;
    receiving++;
    try {
      core.receive(chunk);
    } catch (error) {
      if (error instanceof Violation) throw error;
      throw new Violation(`receive() threw: ${(error as Error).stack}`);
    } finally {
      receiving--;
    }
  };

  const answer = (req: { payload: Buffer; fin: boolean }) => {
    compressedSoFar.push(Buffer.from(req.payload));
    let inflated: Buffer;
    try {
      inflated = inflatePrefix(Buffer.concat(compressedSoFar), req.fin);
    } catch {
      compressedSoFar = [];
      handedOver = 0;
      core.inflateFailed(protocolError("WS_ERR_INVALID_COMPRESSED_DATA", "corrupt deflate data"));
      return;
    }
    const fresh = inflated.subarray(handedOver);
    handedOver = inflated.length;
    if (req.fin) {
      compressedSoFar = [];
      handedOver = 0;
    }
    if (sc.inflaterEnforcesBudget && fresh.length > core.inflateBudget) {
      core.inflateFailed(protocolError("WS_ERR_MESSAGE_TOO_BIG", "inflated past the budget"));
      return;
    }
    const pieces: Buffer[] = [];
    let at = 0;
    for (const size of sc.outputSplits) {
      const end = Math.min(fresh.length, at + size);
      pieces.push(fresh.subarray(at, end));
      at = end;
    }
    pieces.push(fresh.subarray(at));
    core.inflated(pieces);
  };

  const act = () => {
    const index = callbacks++;
    switch (sc.actions[index % sc.actions.length]) {
      case "send":
        core.sendMessage(actionPayload(index), true);
        break;
      case "sendText":
        core.sendMessage(actionText(index), false);
        break;
      case "ping":
        core.ping(actionPayload(index).subarray(0, 125));
        break;
      case "pong":
        core.pong(actionPayload(index).subarray(0, 125));
        break;
      case "close":
        core.sendClose(ACTION_CLOSE_CODE, ACTION_CLOSE_REASON);
        break;
      case "transport":
        transportClosed = true;
        core.transportClosed();
        break;
      case "feed":
        if (next < chunks.length && (receiving > 0 || feedFromInflatedCallbacks)) feed();
        break;
    }
  };

  const core: Protocol = new Protocol(
    {
      role: sc.reader,
      compression: sc.compression,
      maskKey: () => Uint8Array.from([1, 2, 3, 4]),
      ...(limits ?? { maxMessageSize: 1 << 24, maxBufferedBytes: 1 << 25 }),
    },
    {
      output: (bytes) => output.push(Buffer.from(bytes)),
      message: (data, isBinary) => {
        events.push(`message:${isBinary ? "b" : "t"}:${data.toString("hex")}`);
        act();
      },
      ping: (data) => {
        events.push(`ping:${data.toString("hex")}`);
        act();
      },
      pong: (data) => {
        events.push(`pong:${data.toString("hex")}`);
        act();
      },
      closeReceived: (code, reason) => {
        events.push(`close:${code}:${reason}`);
        act();
      },
      inflate: (payload, fin) => {
        // The contract: one inflation at a time, and no input processed until it is answered.
        if (request !== null) throw new Violation("inflate requested while one is pending");
        if (sc.inflateMode === "sync") answer({ payload, fin });
        else request = { payload, fin };
      },
      error: (error: ProtocolError) => events.push(`error:${error.code}:${error.closeCode}`),
      closeTransport: () => events.push("closeTransport"),
    },
  );

  const answerPending = () => {
    if (request === null || !core.inflating) return;
    const req = request;
    request = null;
    try {
      answer(req);
    } catch (error) {
      if (error instanceof Violation) throw error;
      throw new Violation(`inflated() threw: ${(error as Error).stack}`);
    }
  };

  let turn = 0;
  while (next < chunks.length) {
    if (
      sc.inflateMode === "deferred" &&
      sc.answerBeforeChunk[turn++ % sc.answerBeforeChunk.length]
    ) {
      answerPending();
    }
    if (sc.spuriousAnswers && !core.inflating) {
      const before = [events.length, output.length];
      core.inflated([Buffer.from("zz")]);
      core.inflateFailed(protocolError("WS_ERR_INVALID_COMPRESSED_DATA", "spurious"));
      if (events.length !== before[0] || output.length !== before[1]) {
        throw new Violation("inflated()/inflateFailed() with nothing inflating had an effect");
      }
    }
    if (next < chunks.length) feed();
  }
  for (let guard = 0; guard < 100_000 && request !== null; guard++) {
    if (!core.inflating) request = null;
    else answerPending();
  }
  if (core.inflating && request === null) {
    throw new Violation("the core waits for an inflation it never asked for");
  }
  return {
    events,
    output: Buffer.concat(output),
    writes: output,
    core,
    transportClosed,
    inputWhileInflating,
  };
}

/** The invariants that hold for any input at all. */
function checkUniversal(sc: Scenario, run: Run): void {
  const ev = run.events;
  const errorAt = ev.findIndex((e) => e.startsWith("error:"));
  if (ev.filter((e) => e.startsWith("error:")).length > 1) {
    throw new Violation(`more than one error: ${JSON.stringify(ev)}`);
  }
  if (errorAt >= 0) {
    const [, code, closeCode] = ev[errorAt].split(":");
    const documented = CLOSE_CODE_OF[code as ProtocolErrorCode];
    if (documented === undefined) throw new Violation(`undocumented error code ${code}`);
    if (documented !== Number(closeCode)) {
      throw new Violation(`${code} came with close code ${closeCode}, documented ${documented}`);
    }
    // Section 7.1.7: after failing, the connection is over: only the transport close follows.
    const after = ev.slice(errorAt + 1);
    if (after.length !== 1 || after[0] !== "closeTransport") {
      throw new Violation(`events after the error: ${JSON.stringify(after)}`);
    }
  }
  const closeAt = ev.findIndex((e) => e.startsWith("close:"));
  if (ev.filter((e) => e.startsWith("close:")).length > 1) throw new Violation("two closeReceived");
  if (closeAt >= 0) {
    // Section 7.1.1: the server closes TCP right after the closing handshake; the client waits.
    const after = ev.slice(closeAt + 1);
    const ok =
      sc.reader === "server"
        ? after.length === 1 && after[0] === "closeTransport"
        : after.length === 0;
    if (!ok) throw new Violation(`events after closeReceived: ${JSON.stringify(after)}`);
  }
  if (ev.filter((e) => e === "closeTransport").length > 1) {
    throw new Violation("two closeTransport");
  }
  // Section 8.1: text messages are UTF-8.
  for (const e of ev) {
    if (e.startsWith("message:t:") && !isUtf8Reference(Buffer.from(e.slice(10), "hex"))) {
      throw new Violation(`a text message that is not UTF-8: ${e}`);
    }
  }

  let frames: ReturnType<typeof parseStrict>;
  try {
    frames = parseStrict(run.output);
  } catch (error) {
    throw new Violation(`output does not parse: ${(error as Error).message}`);
  }
  const problem = outgoingViolation(frames, sc.reader, sc.compression);
  if (problem) throw new Violation(`output: ${problem}`);
  if (errorAt >= 0) {
    // The close frame sent on failure carries the error's close code, unless a callback's
    // close went out first.
    const closes = frames.filter((f) => f.opcode === 8);
    if (closes.length === 0) throw new Violation("failed without sending a close frame");
    const code = closes[0].payload.length >= 2 ? closes[0].payload.readUInt16BE(0) : 1005;
    const failCode = Number(ev[errorAt].split(":")[2]);
    if (code !== failCode && code !== ACTION_CLOSE_CODE) {
      throw new Violation(`failed with ${failCode} but the close frame says ${code}`);
    }
  }

  // Once failed, closed or torn down, the core is silent.
  if (errorAt >= 0 || closeAt >= 0 || run.transportClosed) {
    const before = [ev.length, run.writes.length];
    const mask = sc.reader === "server" ? Uint8Array.from([9, 9, 9, 9]) : null;
    run.core.receive(frame(1, Buffer.from("A"), { mask }));
    run.core.inflated([Buffer.from("A")]);
    if (ev.length !== before[0] || run.writes.length !== before[1]) {
      throw new Violation("activity after the end");
    }
  }
}

// ───────────────────────────── properties ─────────────────────────────

const counters = {
  limitErrors: 0,
  inflatingBufferLimits: 0,
  closes: 0,
  errors: new Map<string, number>(),
  referenceErrors: 0,
};

function countError(code: string): void {
  counters.errors.set(code, (counters.errors.get(code) ?? 0) + 1);
}

/**
 * Input that arrives while a frame inflates is held for an unknown time and counts against
 * maxBufferedBytes too (re-entrant input does not: it is parsed right after), so with limits on,
 * such a run may end in WS_ERR_BUFFER_LIMIT where the model, which only sees message sizes, has
 * none; everything before it must still match.
 */
function inflatingBufferLimit(run: Run, limits: Limits | null, code: string): boolean {
  return limits !== null && run.inputWhileInflating && code === "WS_ERR_BUFFER_LIMIT";
}

function sameEvents(actual: string[], expected: string[]): boolean {
  return JSON.stringify(actual) === JSON.stringify(expected);
}

function exactProperty(sc: Scenario): void {
  const stream = buildStream(sc);
  const expected = model(sc, stream.events, stream.events.length, sc.limits);
  const run = drive(sc, stream.wire, sc.limits);
  checkUniversal(sc, run);
  const actual = run.events;
  const errorAt = actual.findIndex((e) => e.startsWith("error:"));
  const code = errorAt >= 0 ? actual[errorAt].split(":")[1] : null;

  if (code !== null && inflatingBufferLimit(run, sc.limits, code)) {
    counters.inflatingBufferLimits++;
    const before = actual.slice(0, errorAt);
    if (!before.every((e, i) => e === expected.events[i])) {
      throw new Violation(
        `events before a WS_ERR_BUFFER_LIMIT while inflating differ:\n  actual   ${JSON.stringify(before)}\n  expected ${JSON.stringify(expected.events)}`,
      );
    }
    return;
  }
  if (expected.limitError !== null) {
    counters.limitErrors++;
    if (code !== expected.limitError) {
      throw new Violation(`expected ${expected.limitError}, got ${code ?? "no error"}`);
    }
    const before = actual.slice(0, errorAt);
    if (!sameEvents(before, expected.events)) {
      throw new Violation(
        `events before ${code} differ:\n  actual   ${JSON.stringify(before)}\n  expected ${JSON.stringify(expected.events)}`,
      );
    }
    return;
  }
  if (code !== null) throw new Violation(`unexpected error ${actual[errorAt]}`);
  if (!sameEvents(actual, expected.events)) {
    throw new Violation(
      `events differ:\n  actual   ${JSON.stringify(actual).slice(0, 3000)}\n  expected ${JSON.stringify(expected.events).slice(0, 3000)}`,
    );
  }
  if (actual.some((e) => e.startsWith("close:"))) counters.closes++;
  const output = parseStrict(run.output).map((f) => ({
    opcode: f.opcode,
    hex: f.payload.toString("hex"),
  }));
  if (JSON.stringify(output) !== JSON.stringify(expected.output)) {
    throw new Violation(
      `output differs:\n  actual   ${JSON.stringify(output).slice(0, 2000)}\n  expected ${JSON.stringify(expected.output).slice(0, 2000)}`,
    );
  }
  if (run.core.state !== expected.state) {
    throw new Violation(`state ${run.core.state}, expected ${expected.state}`);
  }
}

function mutateProperty(sc: Scenario, m: Mutation): void {
  const stream = buildStream(sc);
  const { bytes, firstChange } = mutate(stream.wire, m);
  const run = drive(sc, bytes, sc.limits);
  checkUniversal(sc, run);
  const errorAt = run.events.findIndex((e) => e.startsWith("error:"));
  if (errorAt >= 0) countError(run.events[errorAt].split(":")[1]);
  // With limits, what is delivered depends on more than the bytes before the change.
  if (sc.limits) return;
  // Everything that completed before the first changed byte is delivered as if nothing changed.
  let upto = 0;
  while (upto < stream.events.length && stream.events[upto].end <= firstChange) upto++;
  const expected = model(sc, stream.events, upto, null).events;
  for (let i = 0; i < expected.length; i++) {
    if (run.events[i] !== expected[i]) {
      throw new Violation(
        `event ${i} differs (first change at byte ${firstChange}):\n  actual   ${JSON.stringify(run.events).slice(0, 2000)}\n  expected ${JSON.stringify(expected).slice(0, 2000)}`,
      );
    }
  }
  // A valid stream cut short is incomplete, not invalid.
  if (m.edits.length === 0 && errorAt >= 0) {
    throw new Violation(`a truncated valid stream failed: ${run.events[errorAt]}`);
  }
}

// ───────────────────────────── the reference reader ─────────────────────────────

/**
 * An independent RFC 6455 / 7692 reader: the events a conforming endpoint with the given size
 * limit produces for `input`, and, where it must fail, every error code that describes a
 * violation in the first failing frame (the core may report any of them).
 */
function referenceRead(
  input: Buffer,
  reader: Role,
  compression: boolean,
  maxMessageSize: number,
): { events: string[]; errorCodes: string[] | null } {
  const events: string[] = [];
  const fail = (codes: string[]) => ({ events, errorCodes: codes });
  const incomplete = () => ({ events, errorCodes: null });
  let at = 0;
  let messageOpcode = 0;
  let messageCompressed = false;
  let parts: Buffer[] = [];
  let wireSize = 0;
  let decoder = new TextDecoder("utf-8", { fatal: true });
  let compressed: Buffer[] = [];
  let inflatedSoFar = 0;
  for (;;) {
    if (input.length - at < 2) return incomplete();
    const b0 = input[at];
    const b1 = input[at + 1];
    const length7 = b1 & 0x7f;
    const masked = (b1 & 0x80) !== 0;
    const headerSize = (length7 < 126 ? 2 : length7 === 126 ? 4 : 10) + (masked ? 4 : 0);
    if (input.length - at < headerSize) return incomplete();
    const fin = (b0 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    const opcode = b0 & 0x0f;
    let length = length7;
    let cursor = at + 2;
    let topBit = false;
    if (length7 === 126) {
      length = input.readUInt16BE(cursor);
      cursor += 2;
    } else if (length7 === 127) {
      const high = input.readUInt32BE(cursor);
      topBit = (high & 0x80000000) !== 0;
      length = (high & 0x7fffffff) * 2 ** 32 + input.readUInt32BE(cursor + 4);
      cursor += 8;
    }
    const key = masked ? input.subarray(cursor, cursor + 4) : null;
    if (masked) cursor += 4;

    const codes: string[] = [];
    const isControl = opcode >= 8;
    // Section 5.2: RSV2/RSV3 need an extension; RFC 7692 section 6 gives RSV1 to compression.
    if (b0 & 0x30) codes.push("WS_ERR_RESERVED_BITS");
    if ((opcode >= 3 && opcode <= 7) || opcode >= 11) {
      codes.push("WS_ERR_RESERVED_OPCODE");
    } else if (isControl) {
      // Section 5.5: control frames are not fragmented and carry at most 125 bytes.
      if (!fin) codes.push("WS_ERR_CONTROL_FRAGMENTED");
      if (rsv1) codes.push("WS_ERR_RESERVED_BITS");
      if (length7 > 125) codes.push("WS_ERR_CONTROL_TOO_LONG");
    } else if (opcode === 0) {
      // Section 5.4: a continuation continues a message; RSV1 only on a message's first frame.
      if (messageOpcode === 0) codes.push("WS_ERR_UNEXPECTED_CONTINUATION");
      if (rsv1) codes.push("WS_ERR_RESERVED_BITS");
    } else {
      if (messageOpcode !== 0) codes.push("WS_ERR_EXPECTED_CONTINUATION");
      if (rsv1 && !compression) codes.push("WS_ERR_RESERVED_BITS");
    }
    // Section 5.1: masked exactly when sent by a client.
    if (masked !== (reader === "server")) {
      codes.push(masked ? "WS_ERR_MASKED_FRAME" : "WS_ERR_UNMASKED_FRAME");
    }
    if (topBit) codes.push("WS_ERR_LENGTH_MSB_SET");
    if (!isControl && opcode <= 2) {
      const isCompressed = opcode === 0 ? messageCompressed : rsv1;
      const limit = isCompressed ? compressedWireAllowance(maxMessageSize) : maxMessageSize;
      if (wireSize + length > limit) codes.push("WS_ERR_MESSAGE_TOO_BIG");
    }
    if (codes.length > 0) return fail(codes);

    const available = Math.min(length, input.length - cursor);
    const payload = Buffer.from(input.subarray(cursor, cursor + available));
    if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
    if (!isControl && opcode !== 0) {
      messageOpcode = opcode;
      messageCompressed = rsv1;
    }
    // Section 8.1 lets an endpoint fail as soon as text cannot become valid; the core does, so
    // even a partial payload is checked.
    if (!isControl && messageOpcode === 1 && !messageCompressed) {
      try {
        decoder.decode(payload, { stream: true });
      } catch {
        return fail(["WS_ERR_INVALID_UTF8"]);
      }
    }
    if (available < length) return incomplete();
    at = cursor + length;

    if (isControl) {
      if (opcode === 9) events.push(`ping:${payload.toString("hex")}`);
      else if (opcode === 10) events.push(`pong:${payload.toString("hex")}`);
      else {
        // Section 5.5.1: no payload, or a valid code and a UTF-8 reason.
        if (payload.length === 1) return fail(["WS_ERR_INVALID_CLOSE_PAYLOAD"]);
        let code = 1005;
        let reason = "";
        if (payload.length >= 2) {
          code = payload.readUInt16BE(0);
          const closeCodes: string[] = [];
          if (!isWireCloseCode(code)) closeCodes.push("WS_ERR_INVALID_CLOSE_CODE");
          if (!isUtf8Reference(payload.subarray(2))) closeCodes.push("WS_ERR_INVALID_UTF8");
          if (closeCodes.length > 0) return fail(closeCodes);
          reason = payload.subarray(2).toString();
        }
        events.push(`close:${code}:${reason}`);
        if (reader === "server") events.push("closeTransport");
        return incomplete();
      }
      continue;
    }

    wireSize += length;
    if (messageCompressed) {
      compressed.push(payload);
      let inflated: Buffer;
      try {
        inflated = inflatePrefix(Buffer.concat(compressed), fin);
      } catch {
        return fail(["WS_ERR_INVALID_COMPRESSED_DATA"]);
      }
      const fresh = inflated.subarray(inflatedSoFar);
      inflatedSoFar = inflated.length;
      if (inflated.length > maxMessageSize) return fail(["WS_ERR_MESSAGE_TOO_BIG"]);
      if (messageOpcode === 1) {
        try {
          decoder.decode(fresh, { stream: true });
        } catch {
          return fail(["WS_ERR_INVALID_UTF8"]);
        }
      }
      parts.push(fresh);
    } else {
      parts.push(payload);
    }
    if (!fin) continue;
    if (messageOpcode === 1) {
      try {
        decoder.decode();
      } catch {
        return fail(["WS_ERR_INVALID_UTF8"]);
      }
    }
    events.push(
      `message:${messageOpcode === 2 ? "b" : "t"}:${Buffer.concat(parts).toString("hex")}`,
    );
    messageOpcode = 0;
    messageCompressed = false;
    parts = [];
    wireSize = 0;
    decoder = new TextDecoder("utf-8", { fatal: true });
    compressed = [];
    inflatedSoFar = 0;
  }
}

function differentialProperty(generated: Scenario, m: Mutation): void {
  // The reference has no callbacks and generous limits.
  const close =
    generated.close && m.closeCode !== null
      ? { ...generated.close, code: m.closeCode }
      : generated.close;
  const sc: Scenario = { ...generated, limits: null, actions: ["none"], close };
  const { bytes } = mutate(buildStream(sc).wire, m);
  const reference = referenceRead(bytes, sc.reader, sc.compression, 1 << 24);
  const run = drive(sc, bytes, null);
  checkUniversal(sc, run);
  const actual = run.events;
  const errorAt = actual.findIndex((e) => e.startsWith("error:"));
  const before = errorAt >= 0 ? actual.slice(0, errorAt) : actual;
  const input = `input ${bytes.toString("hex").slice(0, 1000)}`;
  if (!sameEvents(before, reference.events)) {
    throw new Violation(
      `events differ from the reference:\n  actual   ${JSON.stringify(actual).slice(0, 2000)}\n  expected ${JSON.stringify(reference.events).slice(0, 2000)} then ${reference.errorCodes ?? "no error"}\n  ${input}`,
    );
  }
  if (reference.errorCodes === null) {
    if (errorAt >= 0) {
      throw new Violation(`failed (${actual[errorAt]}) where the reference accepts; ${input}`);
    }
    return;
  }
  counters.referenceErrors++;
  if (errorAt < 0) {
    throw new Violation(
      `accepted where the reference fails with ${reference.errorCodes}; ${input}`,
    );
  }
  const code = actual[errorAt].split(":")[1];
  countError(code);
  if (!reference.errorCodes.includes(code)) {
    throw new Violation(
      `failed with ${code} where the reference fails with ${reference.errorCodes}; ${input}`,
    );
  }
}

// ───────────────────────────── targets ─────────────────────────────

function prepare(options: TargetOptions): void {
  feedFromInflatedCallbacks = options.strict;
  counters.limitErrors = 0;
  counters.inflatingBufferLimits = 0;
  counters.closes = 0;
  counters.errors.clear();
  counters.referenceErrors = 0;
}

const formatScenario = (value: [Scenario]) => formatValue(value[0]);
const formatMutated = (value: [Scenario, Mutation]) =>
  `${formatValue(value[0])}\nmutation ${JSON.stringify(value[1])}`;

export const protocolTargets: Target[] = [
  {
    name: "protocol-exact",
    summary: "valid streams: events, output and state equal the RFC 6455/7692 model exactly",
    async run(options) {
      prepare(options);
      const { runs, failure } = await searchProperty(
        fc.property(scenario, exactProperty),
        options,
        { format: formatScenario },
      );
      return {
        runs,
        failure,
        stats: {
          "limit errors": counters.limitErrors,
          "buffer limits while inflating": counters.inflatingBufferLimits,
          "closing handshakes": counters.closes,
        },
      };
    },
  },
  {
    name: "protocol-mutate",
    summary: "mutated streams: universal invariants, and the unchanged prefix delivered as is",
    async run(options) {
      prepare(options);
      const { runs, failure } = await searchProperty(
        fc.property(scenario, mutation, mutateProperty),
        options,
        { format: formatMutated },
      );
      return { runs, failure, stats: Object.fromEntries(counters.errors) };
    },
  },
  {
    name: "protocol-diff",
    summary: "mutated streams against an independent reference reader: same events and errors",
    async run(options) {
      prepare(options);
      const { runs, failure } = await searchProperty(
        fc.property(scenario, mutation, differentialProperty),
        options,
        { format: formatMutated },
      );
      return { runs, failure, stats: { "reference errors": counters.referenceErrors } };
    },
  },
];
