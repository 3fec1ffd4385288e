import type { ProtocolError, ProtocolErrorCode } from "../../src/protocol/errors.js";
import {
  Protocol,
  type ProtocolHandler,
  type ProtocolOptions,
} from "../../src/protocol/protocol.js";

/**
 * Test helpers for the sans-I/O core: a handler that turns every callback into plain data (byte
 * payloads as lowercase hex), so tests compare whole event lists with `toEqual`, and a `hex`
 * template tag so frames in tests read like the examples in RFC 6455 section 5.7.
 */

export type ProtocolEvent =
  | { type: "output"; hex: string }
  | { type: "message"; hex: string; isBinary: boolean }
  | { type: "ping"; hex: string }
  | { type: "pong"; hex: string }
  | { type: "closeReceived"; code: number; reason: string }
  | { type: "inflate"; hex: string; fin: boolean }
  | { type: "error"; code: ProtocolErrorCode; closeCode: number; message: string }
  | { type: "closeTransport" };

/** What the recorder does when the core asks for a payload to be inflated. */
export type InflateMode =
  /** Record the request and wait for the test to call `inflated`/`inflateFailed`. */
  | "manual"
  /** Answer at once with the payload itself (a stand-in codec where "compressed" = raw). */
  | "identity-sync";

export class Recorder implements ProtocolHandler {
  readonly events: ProtocolEvent[] = [];
  /** The core under test; set by `createProtocol`. */
  protocol: Protocol | null = null;
  inflateMode: InflateMode = "manual";

  output(bytes: Uint8Array): void {
    this.events.push({ type: "output", hex: toHex(bytes) });
  }

  message(data: Buffer, isBinary: boolean): void {
    this.events.push({ type: "message", hex: toHex(data), isBinary });
  }

  ping(data: Buffer): void {
    this.events.push({ type: "ping", hex: toHex(data) });
  }

  pong(data: Buffer): void {
    this.events.push({ type: "pong", hex: toHex(data) });
  }

  closeReceived(code: number, reason: string): void {
    this.events.push({ type: "closeReceived", code, reason });
  }

  inflate(payload: Buffer, fin: boolean): void {
    this.events.push({ type: "inflate", hex: toHex(payload), fin });
    if (this.inflateMode === "identity-sync") {
      // Copy: the payload may be a view of the caller's input buffer.
      this.protocol!.inflated([Buffer.from(payload)]);
    }
  }

  error(error: ProtocolError): void {
    this.events.push({
      type: "error",
      code: error.code,
      closeCode: error.closeCode,
      message: error.message,
    });
  }

  closeTransport(): void {
    this.events.push({ type: "closeTransport" });
  }

  /** What deferCloseReply() answers (messages still being prepared); false by default. */
  holdCloseReply = false;

  deferCloseReply(): boolean {
    return this.holdCloseReply;
  }

  /** Removes and returns everything recorded so far. */
  take(): ProtocolEvent[] {
    return this.events.splice(0, this.events.length);
  }

  /** Every output call so far, concatenated, as hex. */
  outputHex(): string {
    return this.events
      .filter((e): e is Extract<ProtocolEvent, { type: "output" }> => e.type === "output")
      .map((e) => e.hex)
      .join("");
  }

  /** The events other than output, for tests that only look at what the application sees. */
  appEvents(): ProtocolEvent[] {
    return this.events.filter((e) => e.type !== "output");
  }
}

/** A core wired to a fresh recorder. */
export function createProtocol(
  options: ProtocolOptions,
  inflateMode: InflateMode = "manual",
): { protocol: Protocol; rec: Recorder } {
  const rec = new Recorder();
  rec.inflateMode = inflateMode;
  const protocol = new Protocol(options, rec);
  rec.protocol = protocol;
  return { protocol, rec };
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/**
 * `hex\`81 05 48 65 6c 6c 6f\`` -> Buffer. Whitespace is ignored; interpolated values may be hex
 * strings or byte arrays. Always returns a fresh buffer (the core unmasks its input in place).
 */
export function hex(strings: TemplateStringsArray, ...values: Array<string | Uint8Array>): Buffer {
  let text = strings[0];
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    text += typeof value === "string" ? value : toHex(value);
    text += strings[i + 1];
  }
  const digits = text.replace(/\s+/g, "");
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) {
    throw new Error(`hex: not an even run of hex digits: ${JSON.stringify(text)}`);
  }
  return Buffer.from(digits, "hex");
}

/** Feeds `input` split at the given (ascending) offsets; each piece is a fresh copy. */
export function feedSplit(protocol: Protocol, input: Uint8Array, cuts: readonly number[]): void {
  let start = 0;
  for (const cut of [...cuts, input.length]) {
    if (cut > start) protocol.receive(Buffer.from(input.subarray(start, cut)));
    start = Math.max(start, cut);
  }
}

export interface DecodedFrame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/**
 * A deliberately simple, independent frame decoder (RFC 6455 section 5.2) for checking what the
 * core wrote. It trusts its input: it is for the core's output, not for the peer's.
 */
export function parseFrames(bytes: Uint8Array): DecodedFrame[] {
  const buf = Buffer.from(bytes);
  const frames: DecodedFrame[] = [];
  let at = 0;
  while (at < buf.length) {
    const b0 = buf[at];
    const b1 = buf[at + 1];
    let length = b1 & 0x7f;
    at += 2;
    if (length === 126) {
      length = buf.readUInt16BE(at);
      at += 2;
    } else if (length === 127) {
      length = Number(buf.readBigUInt64BE(at));
      at += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    const key = masked ? buf.subarray(at, at + 4) : null;
    if (masked) at += 4;
    if (at + length > buf.length) throw new Error("parseFrames: truncated frame");
    const payload = Buffer.from(buf.subarray(at, at + length));
    if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i % 4];
    at += length;
    frames.push({
      fin: (b0 & 0x80) !== 0,
      rsv1: (b0 & 0x40) !== 0,
      opcode: b0 & 0x0f,
      masked,
      payload,
    });
  }
  return frames;
}
