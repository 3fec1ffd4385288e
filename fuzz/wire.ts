/**
 * RFC 6455 / RFC 7692 wire helpers written independently of src/, so the fuzz targets never
 * judge Switchboard's framing with Switchboard's own code: a frame encoder with every choice
 * exposed, a strict frame parser, the rules a peer applies to the frames an endpoint writes, and
 * per-message deflate over node:zlib.
 */
import zlib from "node:zlib";

export interface WireFrame {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  masked: boolean;
  /** Unmasked payload. */
  payload: Buffer;
}

/**
 * How the payload length is written (section 5.2): the minimal form, or a longer one. The longer
 * forms are unambiguous and Switchboard accepts them, so the fuzzers send them too.
 */
export type LengthForm = "minimal" | "16-bit" | "64-bit";

export interface FrameOptions {
  fin?: boolean;
  rsv1?: boolean;
  /** A 4-byte masking key (section 5.3), or null for an unmasked frame. */
  mask?: Uint8Array | null;
  lengthForm?: LengthForm;
}

/** Encodes one frame (section 5.2). */
export function frame(opcode: number, payload: Uint8Array, options: FrameOptions = {}): Buffer {
  const fin = options.fin ?? true;
  const mask = options.mask ?? null;
  const n = payload.length;
  let form = options.lengthForm ?? "minimal";
  if (form === "minimal") form = n < 126 ? "minimal" : n < 65536 ? "16-bit" : "64-bit";
  if (form === "16-bit" && n >= 65536) form = "64-bit";
  const head: number[] = [(fin ? 0x80 : 0) | (options.rsv1 ? 0x40 : 0) | opcode];
  const maskBit = mask ? 0x80 : 0;
  if (form === "minimal") {
    head.push(maskBit | n);
  } else if (form === "16-bit") {
    head.push(maskBit | 126, n >> 8, n & 0xff);
  } else {
    const high = Math.floor(n / 2 ** 32);
    const low = n >>> 0;
    head.push(maskBit | 127);
    head.push(high >>> 24, (high >>> 16) & 0xff, (high >>> 8) & 0xff, high & 0xff);
    head.push(low >>> 24, (low >>> 16) & 0xff, (low >>> 8) & 0xff, low & 0xff);
  }
  const body = Buffer.from(payload);
  if (mask) {
    head.push(...mask);
    for (let i = 0; i < n; i++) body[i] ^= mask[i & 3];
  }
  return Buffer.concat([Buffer.from(head), body]);
}

/**
 * Parses a complete byte stream into frames, throwing on anything a strict reader would refuse
 * in an endpoint's own output: truncation, non-minimal lengths (section 5.2: "the minimal number
 * of bytes MUST be used"), a 64-bit length with its top bit set.
 */
export function parseStrict(bytes: Buffer): WireFrame[] {
  const frames: WireFrame[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < 2) throw new Error(`truncated header at byte ${at}`);
    const b0 = bytes[at];
    const b1 = bytes[at + 1];
    let length = b1 & 0x7f;
    let cursor = at + 2;
    if (length === 126) {
      if (bytes.length - cursor < 2) throw new Error(`truncated 16-bit length at byte ${at}`);
      length = bytes.readUInt16BE(cursor);
      cursor += 2;
      if (length < 126) throw new Error(`non-minimal 16-bit length ${length} at byte ${at}`);
    } else if (length === 127) {
      if (bytes.length - cursor < 8) throw new Error(`truncated 64-bit length at byte ${at}`);
      const high = bytes.readUInt32BE(cursor);
      if (high & 0x80000000) throw new Error(`64-bit length with its top bit set at byte ${at}`);
      length = high * 2 ** 32 + bytes.readUInt32BE(cursor + 4);
      cursor += 8;
      if (length < 65536) throw new Error(`non-minimal 64-bit length ${length} at byte ${at}`);
    }
    const masked = (b1 & 0x80) !== 0;
    let key: Buffer | null = null;
    if (masked) {
      if (bytes.length - cursor < 4) throw new Error(`truncated masking key at byte ${at}`);
      key = bytes.subarray(cursor, cursor + 4);
      cursor += 4;
    }
    if (bytes.length - cursor < length) throw new Error(`truncated payload at byte ${at}`);
    const payload = Buffer.from(bytes.subarray(cursor, cursor + length));
    if (key) for (let i = 0; i < length; i++) payload[i] ^= key[i & 3];
    frames.push({
      fin: (b0 & 0x80) !== 0,
      rsv1: (b0 & 0x40) !== 0,
      rsv2: (b0 & 0x20) !== 0,
      rsv3: (b0 & 0x10) !== 0,
      opcode: b0 & 0x0f,
      masked,
      payload,
    });
    at = cursor + length;
  }
  return frames;
}

/** Close codes that may appear on the wire (section 7.4.1 and 7.4.2; 1004-1006, 1015 may not). */
export function isWireCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1003) ||
    (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999)
  );
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 validity by the platform's decoder, the reference the core's validator is held to. */
export function isUtf8Reference(bytes: Uint8Array): boolean {
  try {
    strictDecoder.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * What the peer would object to in the frames one endpoint wrote, or null: masking by role
 * (section 5.1), RSV bits without an extension (5.2; RFC 7692 section 6 allows RSV1 on the first
 * frame of a compressed message only), reserved opcodes, control frames fragmented or over 125
 * bytes (5.5), the fragmentation sequence (5.4), the close payload (5.5.1, 7.4) and anything
 * after the close frame (5.5.1: no more data frames after Close).
 */
export function outgoingViolation(
  frames: readonly WireFrame[],
  writer: "server" | "client",
  compression: boolean,
): string | null {
  let inMessage = false;
  let closed = false;
  for (const [i, f] of frames.entries()) {
    if (closed) return `frame ${i} written after our close frame`;
    if (f.masked !== (writer === "client")) return `frame ${i} masked=${f.masked} from a ${writer}`;
    if (f.rsv2 || f.rsv3) return `frame ${i} has RSV2/RSV3 set`;
    if (f.opcode >= 8) {
      if (f.opcode > 10) return `frame ${i} has reserved opcode ${f.opcode}`;
      if (!f.fin) return `frame ${i} is a fragmented control frame`;
      if (f.rsv1) return `frame ${i} is a control frame with RSV1`;
      if (f.payload.length > 125) return `frame ${i} is a control frame of ${f.payload.length} B`;
      if (f.opcode === 8) {
        if (f.payload.length === 1) return `frame ${i} is a close frame with a 1-byte payload`;
        if (f.payload.length >= 2) {
          const code = f.payload.readUInt16BE(0);
          if (!isWireCloseCode(code)) return `frame ${i} closes with code ${code}`;
          if (!isUtf8Reference(f.payload.subarray(2))) return `frame ${i} has a non-UTF-8 reason`;
        }
        closed = true;
      }
    } else if (f.opcode === 0) {
      if (!inMessage) return `frame ${i} is a continuation outside a message`;
      if (f.rsv1) return `frame ${i} is a continuation with RSV1`;
      if (f.fin) inMessage = false;
    } else if (f.opcode === 1 || f.opcode === 2) {
      if (inMessage) return `frame ${i} starts a message inside another`;
      if (f.rsv1 && !compression) return `frame ${i} has RSV1 without permessage-deflate`;
      inMessage = !f.fin;
    } else {
      return `frame ${i} has reserved opcode ${f.opcode}`;
    }
  }
  return null;
}

/** The tail of a sync flush, which RFC 7692 section 7.2.1 removes and 7.2.2 restores. */
export const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** A message compressed on its own (a fresh window, as with no_context_takeover). */
export function deflateMessage(data: Uint8Array): Buffer {
  const out = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  const tail = out.subarray(out.length - 4);
  return tail.equals(DEFLATE_TAIL) ? out.subarray(0, out.length - 4) : out;
}

/**
 * Everything that inflates from the compressed bytes of one message received so far, without
 * any state between calls; `fin` restores the removed tail first. Throws on corrupt data.
 */
export function inflatePrefix(compressed: Buffer, fin: boolean): Buffer {
  return zlib.inflateRawSync(fin ? Buffer.concat([compressed, DEFLATE_TAIL]) : compressed, {
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
}
