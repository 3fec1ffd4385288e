/**
 * Prepared messages laid back to back: topic fan-out hands every subscriber the run of messages
 * a topic received in one turn as one slice of one shared buffer. A subscriber then costs one
 * queued chunk, and its socket one write, per turn however many messages the run holds; the
 * bytes are framed once for all of them.
 *
 * Only the uncompressed frames are joined. A connection that would compress one of the messages
 * (permessage-deflate negotiated and a payload at or above its threshold) sends them one by one
 * through WebSocketConnection#sendPrepared instead, which shares compressions where RFC 7692
 * allows it.
 */
import { Opcode } from "../protocol/constants.js";
import { headerLength, writeHeader } from "../protocol/frame.js";
import type { PreparedMessage } from "./prepared.js";

const EMPTY = Buffer.alloc(0);

export class PreparedBatch {
  readonly messages: readonly PreparedMessage[];
  /** The largest payload among the messages that may be compressed; -1 when none may. */
  readonly largestCompressible: number;

  #frames: Buffer | null = null;
  /** Where each message's frame ends in #frames. */
  #ends: Uint32Array | null = null;

  constructor(messages: readonly PreparedMessage[]) {
    this.messages = messages;
    let largest = -1;
    for (const message of messages) {
      if (message.compress && message.payload.length > largest) largest = message.payload.length;
    }
    this.largestCompressible = largest;
  }

  get length(): number {
    return this.messages.length;
  }

  /**
   * The uncompressed server frames of messages [start, end) as one slice of a buffer built on
   * first use and shared by every caller (no copy per caller).
   */
  frames(start = 0, end = this.messages.length): Buffer {
    if (start >= end) return EMPTY;
    if (this.#frames === null) this.build();
    const frames = this.#frames as Buffer;
    const ends = this.#ends as Uint32Array;
    // The whole batch (the usual case) is the buffer itself: no view allocated per caller.
    if (start === 0 && end === ends.length) return frames;
    return frames.subarray(start === 0 ? 0 : ends[start - 1], ends[end - 1]);
  }

  private build(): void {
    const messages = this.messages;
    const ends = new Uint32Array(messages.length);
    if (messages.length === 1) {
      // One message: its own frame, which other callers of that message share too.
      const frame = messages[0].frame();
      ends[0] = frame.length;
      this.#frames = frame;
      this.#ends = ends;
      return;
    }
    let total = 0;
    for (let i = 0; i < messages.length; i++) {
      const length = messages[i].payload.length;
      total += headerLength(length, false) + length;
      ends[i] = total;
    }
    const frames = Buffer.allocUnsafe(total);
    let offset = 0;
    for (const message of messages) {
      const payload = message.payload;
      // Server frames are never masked (RFC 6455 section 5.1); each is a whole message (FIN).
      offset = writeHeader(frames, offset, payload.length, {
        opcode: message.binary ? Opcode.Binary : Opcode.Text,
        fin: true,
        rsv1: false,
        mask: null,
      });
      frames.set(payload, offset);
      offset += payload.length;
    }
    this.#frames = frames;
    this.#ends = ends;
  }
}
