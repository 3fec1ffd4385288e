// The harness's own RFC 6455 frame encoder (section 5.2). It deliberately encodes anything a
// fuzzer may want on the wire: reserved opcodes, any RSV bits, fragmented control frames,
// oversized control payloads. It shares no code with src/ so a bug there cannot hide itself.
import { randomBytes } from "node:crypto";

export const OP_CONTINUATION = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

/** Largest payload length that fits the 7-bit field; 126 and 127 announce longer forms. */
const SHORT_LENGTH_MAX = 125;

export interface FrameHeaderFields {
  opcode: number;
  fin: boolean;
  /** The three RSV bits as one number 0-7 (RSV1 is 4). */
  rsv: number;
  length: number;
  /** Four-octet masking key, or null for an unmasked frame. */
  mask: Buffer | null;
}

/** A fresh random masking key (RFC 6455 section 5.3: unpredictable per frame). */
export function randomMask(): Buffer {
  return randomBytes(4);
}

/** Encodes the header, using the shortest length form (section 5.2 "minimal number of bytes"). */
export function encodeHeader(h: FrameHeaderFields): Buffer {
  const extended = h.length <= SHORT_LENGTH_MAX ? 0 : h.length <= 0xffff ? 2 : 8;
  const out = Buffer.alloc(2 + extended + (h.mask ? 4 : 0));
  // Like Autobahn, fold out-of-range values instead of refusing them: the fuzzer decides.
  out[0] = (h.fin ? 0x80 : 0) | ((h.rsv & 7) << 4) | (h.opcode & 0x0f);
  let len7: number;
  if (extended === 0) len7 = h.length;
  else if (extended === 2) {
    len7 = 126;
    out.writeUInt16BE(h.length, 2);
  } else {
    len7 = 127;
    out.writeBigUInt64BE(BigInt(h.length), 2);
  }
  out[1] = (h.mask ? 0x80 : 0) | len7;
  if (h.mask) h.mask.copy(out, 2 + extended);
  return out;
}

/**
 * XORs `data` with the masking key, starting at `offset` octets into the frame payload, so a
 * payload may be masked in pieces (section 5.3). Returns a new buffer.
 */
export function applyMask(data: Uint8Array, mask: Uint8Array, offset = 0): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i] ^ mask[(offset + i) & 3];
  return out;
}

/** A complete frame: header plus (masked) payload. */
export function encodeFrame(h: Omit<FrameHeaderFields, "length">, payload: Uint8Array): Buffer {
  const header = encodeHeader({ ...h, length: payload.length });
  const body = h.mask ? applyMask(payload, h.mask) : Buffer.from(payload);
  return Buffer.concat([header, body]);
}

/** Repeats `unit` until it is exactly `length` octets (Autobahn's `payload_len`). */
export function repeatToLength(unit: Uint8Array, length: number): Buffer {
  if (unit.length === 0) throw new Error("cannot repeat an empty payload");
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i += unit.length) {
    out.set(unit.subarray(0, Math.min(unit.length, length - i)), i);
  }
  return out;
}

export function opcodeName(opcode: number): string {
  switch (opcode) {
    case OP_CONTINUATION:
      return "CONT";
    case OP_TEXT:
      return "TEXT";
    case OP_BINARY:
      return "BINARY";
    case OP_CLOSE:
      return "CLOSE";
    case OP_PING:
      return "PING";
    case OP_PONG:
      return "PONG";
    default:
      return `OP${opcode}`;
  }
}
