import { applyMask } from "./mask.js";

/**
 * Frame serialization (RFC 6455 section 5.2). Produces the bytes of one frame; masking is applied
 * when a key is given (clients MUST mask every frame, servers MUST NOT, section 5.1).
 */

/** Payloads up to this size are copied next to their header so the frame is one buffer. */
const COPY_THRESHOLD = 1024;

export interface FrameOptions {
  opcode: number;
  fin: boolean;
  /** RSV1: set on the first frame of a compressed message (RFC 7692 section 6). */
  rsv1: boolean;
  /** A 4-byte masking key, or null for an unmasked (server) frame. */
  mask: Uint8Array | null;
}

export function headerLength(payloadLength: number, masked: boolean): number {
  const base = payloadLength < 126 ? 2 : payloadLength < 0x10000 ? 4 : 10;
  return masked ? base + 4 : base;
}

/** Writes a frame header at `offset` and returns the offset just past it. */
export function writeHeader(
  target: Uint8Array,
  offset: number,
  payloadLength: number,
  options: FrameOptions,
): number {
  target[offset] = (options.fin ? 0x80 : 0) | (options.rsv1 ? 0x40 : 0) | options.opcode;
  const maskBit = options.mask ? 0x80 : 0;
  if (payloadLength < 126) {
    target[offset + 1] = maskBit | payloadLength;
    offset += 2;
  } else if (payloadLength < 0x10000) {
    target[offset + 1] = maskBit | 126;
    target[offset + 2] = payloadLength >>> 8;
    target[offset + 3] = payloadLength & 0xff;
    offset += 4;
  } else {
    target[offset + 1] = maskBit | 127;
    // Section 5.2: the most significant bit of a 64-bit length MUST be 0. JavaScript lengths
    // stay below 2^53, so the high word is written from a division, never a shift.
    const high = Math.floor(payloadLength / 0x100000000);
    const low = payloadLength >>> 0;
    target[offset + 2] = high >>> 24;
    target[offset + 3] = (high >>> 16) & 0xff;
    target[offset + 4] = (high >>> 8) & 0xff;
    target[offset + 5] = high & 0xff;
    target[offset + 6] = low >>> 24;
    target[offset + 7] = (low >>> 16) & 0xff;
    target[offset + 8] = (low >>> 8) & 0xff;
    target[offset + 9] = low & 0xff;
    offset += 10;
  }
  if (options.mask) {
    target.set(options.mask, offset);
    offset += 4;
  }
  return offset;
}

/**
 * Serializes one frame. Small payloads and every masked payload come back as a single buffer
 * (masking needs a copy anyway, so the caller's data is never modified); large unmasked payloads
 * come back as [header, payload] so they are never copied.
 */
export function encodeFrame(
  payload: Uint8Array,
  options: FrameOptions,
): Buffer | [Buffer, Uint8Array] {
  const length = payload.length;
  const headerSize = headerLength(length, options.mask !== null);
  if (options.mask === null && length > COPY_THRESHOLD) {
    const header = Buffer.allocUnsafe(headerSize);
    writeHeader(header, 0, length, options);
    return [header, payload];
  }
  const frame = Buffer.allocUnsafe(headerSize + length);
  const start = writeHeader(frame, 0, length, options);
  frame.set(payload, start);
  if (options.mask !== null && length > 0) applyMask(frame, options.mask, start, start + length, 0);
  return frame;
}
