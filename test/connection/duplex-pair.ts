// In-memory transports for the connection tests. Node 20 has no `stream.duplexPair`, and the
// tests need more than one anyway: every transport-level write is recorded (so a test can count
// them), bytes reach the other end asynchronously like on a real socket (never re-entering the
// writer's call stack), and a peer that stops reading pushes back on the writer the way a full
// TCP window does. Also here: a tiny frame encoder/decoder so tests can speak and read raw
// RFC 6455 frames on either end.
import { Duplex } from "node:stream";

export interface PairOptions {
  /** Bytes a side buffers unread before the other side's writes stop completing. */
  readableHighWaterMark?: number;
  /** Bytes a side buffers unwritten before `write()` returns false. */
  writableHighWaterMark?: number;
}

/**
 * One end of an in-memory connection. A write completes at once while the peer keeps up, and is
 * held (so `writableLength` grows and `write()` eventually returns false) while the peer's read
 * buffer is full, until the peer reads again.
 */
export class PairEnd extends Duplex {
  /** Every write that reached the transport: one entry per `_write` or `_writev` call. */
  readonly writes: Buffer[] = [];
  peer!: PairEnd;
  private readonly outbox: Buffer[] = [];
  private outboxBytes = 0;
  private deliveryScheduled = false;
  private heldCallback: ((error?: Error | null) => void) | null = null;
  private endQueued = false;

  constructor(options: PairOptions) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: options.readableHighWaterMark ?? 16 * 1024,
      writableHighWaterMark: options.writableHighWaterMark ?? 16 * 1024,
    });
  }

  /** Everything this side wrote so far, as one buffer. */
  get written(): Buffer {
    return Buffer.concat(this.writes);
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.transmit(chunk, callback);
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    this.transmit(Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.endQueued = true;
    this.scheduleDelivery();
    callback();
  }

  override _read(): void {
    // Our consumer wants more (Readable asks before it takes the chunk it is reading off the
    // buffer, so the buffer's length says nothing yet): a held-back writer may go on.
    this.peer.release(true);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Like a TCP connection going away: the other end sees the end of its input.
    this.endQueued = true;
    this.scheduleDelivery();
    this.heldCallback = null;
    callback(error);
  }

  private transmit(data: Buffer, callback: (error?: Error | null) => void): void {
    this.writes.push(data);
    this.outbox.push(data);
    this.outboxBytes += data.length;
    this.scheduleDelivery();
    if (this.peerHasRoom()) callback();
    else this.heldCallback = callback;
  }

  private peerHasRoom(): boolean {
    return this.peer.readableLength + this.outboxBytes < this.peer.readableHighWaterMark;
  }

  private scheduleDelivery(): void {
    if (this.deliveryScheduled) return;
    this.deliveryScheduled = true;
    setImmediate(() => this.deliver());
  }

  private deliver(): void {
    this.deliveryScheduled = false;
    const peer = this.peer;
    for (const data of this.outbox.splice(0)) {
      if (!peer.destroyed && !peer.readableEnded) peer.push(data);
    }
    this.outboxBytes = 0;
    if (this.endQueued && !peer.destroyed && peer.readable) peer.push(null);
    this.release();
  }

  private release(force = false): void {
    const callback = this.heldCallback;
    if (callback !== null && (force || this.peerHasRoom())) {
      this.heldCallback = null;
      callback();
    }
  }
}

/** Two connected in-memory ends. */
export function duplexPair(options: PairOptions = {}): [PairEnd, PairEnd] {
  const a = new PairEnd(options);
  const b = new PairEnd(options);
  a.peer = b;
  b.peer = a;
  return [a, b];
}

// ───────────────────────────── raw frames ─────────────────────────────

export interface RawFrame {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  masked: boolean;
  /** Unmasked payload. */
  payload: Buffer;
}

/** Encodes one frame by hand (RFC 6455 section 5.2), with every bit under the test's control. */
export function rawFrame(
  opcode: number,
  payload: Uint8Array | string = Buffer.alloc(0),
  options: { fin?: boolean; rsv1?: boolean; rsv2?: boolean; mask?: boolean } = {},
): Buffer {
  const data = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
  const fin = options.fin ?? true;
  const mask = options.mask ?? true;
  const b0 = (fin ? 0x80 : 0) | (options.rsv1 ? 0x40 : 0) | (options.rsv2 ? 0x20 : 0) | opcode;
  let header: Buffer;
  if (data.length < 126) {
    header = Buffer.from([b0, data.length]);
  } else if (data.length < 0x10000) {
    header = Buffer.from([b0, 126, data.length >> 8, data.length & 0xff]);
  } else {
    header = Buffer.alloc(10);
    header[0] = b0;
    header[1] = 127;
    header.writeUInt32BE(Math.floor(data.length / 0x100000000), 2);
    header.writeUInt32BE(data.length >>> 0, 6);
  }
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const masked = Buffer.from(data);
  for (let i = 0; i < masked.length; i++) masked[i] ^= key[i & 3];
  return Buffer.concat([header, key, masked]);
}

/** A close frame payload: a big-endian code and a UTF-8 reason (section 5.5.1). */
export function closePayload(code: number, reason = ""): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return payload;
}

/**
 * Decodes every complete frame in `bytes`. Throws if bytes are left over: in these tests the
 * wire must hold whole frames only.
 */
export function parseFrames(bytes: Buffer): RawFrame[] {
  const frames: RawFrame[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (bytes.length - at < 2) throw new Error(`truncated frame header at byte ${at}`);
    const b0 = bytes[at];
    const b1 = bytes[at + 1];
    let length = b1 & 0x7f;
    let cursor = at + 2;
    if (length === 126) {
      length = bytes.readUInt16BE(cursor);
      cursor += 2;
    } else if (length === 127) {
      length = bytes.readUInt32BE(cursor) * 0x100000000 + bytes.readUInt32BE(cursor + 4);
      cursor += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    let key: Buffer | null = null;
    if (masked) {
      key = bytes.subarray(cursor, cursor + 4);
      cursor += 4;
    }
    if (cursor + length > bytes.length) throw new Error(`truncated frame payload at byte ${at}`);
    const payload = Buffer.from(bytes.subarray(cursor, cursor + length));
    if (key !== null) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
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

// ───────────────────────────── waiting ─────────────────────────────

/** Rejects with a message naming what was awaited, so a hang reads as a precise failure. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `condition` every few milliseconds, failing after `ms`. */
export async function waitUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Lets pending immediates (the flush scheduler, in-memory delivery) run `turns` times. */
export async function turns(count = 1): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Milliseconds to sleep, for tests that must show something does not happen. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
