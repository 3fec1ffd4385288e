import type { Protocol } from "../protocol/protocol.js";
import { DeflateClosedError, type PerMessageDeflate } from "./deflate.js";
import { ConnectionError } from "./errors.js";

/**
 * Orders outgoing messages. Frames of one message may not interleave with another's (RFC 6455
 * section 5.4) and compression is asynchronous, so a message sent after a compressed one, or
 * during a streamed one, waits its turn here. With nothing in flight a message goes straight to
 * the core: the common uncompressed case costs no queueing at all.
 */

type Operation =
  | { kind: "message"; data: Uint8Array; isBinary: boolean; compress: boolean }
  | { kind: "close"; code: number | undefined; reason: string }
  | { kind: "close-reply" }
  | { kind: "stream"; run: () => Promise<void>; reject: (error: Error) => void }
  | { kind: "frame"; frame: Uint8Array; write: (frame: Uint8Array) => void }
  | { kind: "pending-frame"; frame: Promise<Uint8Array>; write: (frame: Uint8Array) => void };

export class Sender {
  private readonly queue: Operation[] = [];
  private busy = false;
  private streaming = false;
  private stopped = false;

  constructor(
    private readonly core: Protocol,
    private readonly codec: PerMessageDeflate | null,
    private readonly onFailure: (error: Error) => void,
  ) {}

  /** True when nothing is compressing, streaming or waiting. */
  get idle(): boolean {
    return !this.busy && this.queue.length === 0;
  }

  /**
   * Whether the reply to the peer's close should wait for what is queued (RFC 6455 section
   * 5.5.1 allows it): whole messages still compressing, yes; a streamed message, no — it waits
   * on the application's source, which could hold the reply indefinitely, so it is cut short.
   */
  get holdsCloseReply(): boolean {
    if (this.idle || this.streaming) return false;
    return !this.queue.some((operation) => operation.kind === "stream");
  }

  send(data: Uint8Array, isBinary: boolean, compress: boolean): void {
    if (this.stopped) return;
    const deflate = this.wantsDeflate(data, compress);
    if (!this.busy && this.queue.length === 0 && !deflate) {
      this.core.sendMessage(data, isBinary);
      return;
    }
    this.queue.push({ kind: "message", data, isBinary, compress: deflate });
    this.drain();
  }

  /**
   * Sends a message framed ahead of time (a PreparedMessage shared between connections), in
   * order with everything else: `frame` is its bytes, or the pending compression that yields
   * them. `write` hands the bytes to the transport as they are. The core frames nothing here, so
   * its state is checked the way its sendMessage() checks it: nothing once closing began.
   */
  sendFrame(frame: Uint8Array | Promise<Uint8Array>, write: (frame: Uint8Array) => void): void {
    if (this.stopped) return;
    if (frame instanceof Uint8Array) {
      if (!this.busy && this.queue.length === 0) {
        if (this.core.state === "open") write(frame);
        return;
      }
      this.queue.push({ kind: "frame", frame, write });
    } else {
      this.queue.push({ kind: "pending-frame", frame, write });
    }
    this.drain();
  }

  close(code: number | undefined, reason: string): void {
    if (this.stopped) return;
    if (!this.busy && this.queue.length === 0) {
      this.core.sendClose(code, reason);
      return;
    }
    this.queue.push({ kind: "close", code, reason });
  }

  /**
   * The reply to the peer's close, after everything queued before it (the core deferred it,
   * RFC 6455 section 5.5.1). Dropped by stop().
   */
  closeReply(): void {
    if (this.stopped) return;
    if (!this.busy && this.queue.length === 0) {
      this.core.replyClose();
      return;
    }
    this.queue.push({ kind: "close-reply" });
  }

  /** Sends one message whose fragments come from `source` (section 5.4). */
  stream(
    source: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>,
    isBinary: boolean,
    compress: boolean,
  ): Promise<void> {
    if (this.stopped) return Promise.reject(notSent());
    return new Promise<void>((resolve, reject) => {
      const run = async (): Promise<void> => {
        try {
          await this.writeStream(source, isBinary, compress);
        } catch (error) {
          // A codec closed under the stream means the connection went away: the message was
          // not sent, which is what the caller needs to know.
          reject(error instanceof DeflateClosedError ? notSent() : error);
          throw error;
        }
        // A stream cut short by stop() did not send its message.
        if (this.stopped) reject(notSent());
        else resolve();
      };
      this.queue.push({ kind: "stream", run, reject });
      this.drain();
    });
  }

  /** Drops everything queued: the connection is gone. */
  stop(): void {
    this.stopped = true;
    for (const operation of this.queue.splice(0)) {
      if (operation.kind === "stream") operation.reject(notSent());
    }
  }

  private wantsDeflate(data: Uint8Array, compress: boolean): boolean {
    return compress && this.codec !== null && data.length >= this.codec.threshold;
  }

  private drain(): void {
    if (this.busy) return;
    while (this.queue.length > 0 && !this.stopped) {
      const operation = this.queue[0];
      if (operation.kind === "close") {
        this.queue.shift();
        this.core.sendClose(operation.code, operation.reason);
        continue;
      }
      if (operation.kind === "close-reply") {
        this.queue.shift();
        this.core.replyClose();
        continue;
      }
      if (operation.kind === "message" && !operation.compress) {
        this.queue.shift();
        this.core.sendMessage(operation.data, operation.isBinary);
        continue;
      }
      if (operation.kind === "frame") {
        this.queue.shift();
        if (this.core.state === "open") operation.write(operation.frame);
        continue;
      }
      this.busy = true;
      this.streaming = operation.kind === "stream";
      this.queue.shift();
      const done =
        operation.kind === "stream"
          ? operation.run()
          : operation.kind === "pending-frame"
            ? this.writePendingFrame(operation.frame, operation.write)
            : this.writeCompressed(operation.data, operation.isBinary);
      done.then(
        () => {
          this.busy = false;
          this.streaming = false;
          this.drain();
        },
        (error: Error) => {
          this.busy = false;
          this.streaming = false;
          // The connection is closing or gone: nothing more can be sent, and that is no failure
          // of ours to report.
          if (this.stopped || this.core.state !== "open" || error instanceof DeflateClosedError) {
            this.stop();
            return;
          }
          // A message left half-sent (a failed stream or compressor) cannot be followed by
          // anything without breaking framing: the connection closes.
          this.stop();
          this.onFailure(error);
        },
      );
      return;
    }
  }

  private async writeCompressed(data: Uint8Array, isBinary: boolean): Promise<void> {
    const compressed = await this.codec!.compress(data, true);
    if (!this.stopped) this.core.sendMessage(compressed, isBinary, true);
  }

  private async writePendingFrame(
    frame: Promise<Uint8Array>,
    write: (frame: Uint8Array) => void,
  ): Promise<void> {
    const bytes = await frame;
    if (!this.stopped && this.core.state === "open") write(bytes);
  }

  private async writeStream(
    source: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>,
    isBinary: boolean,
    compress: boolean,
  ): Promise<void> {
    const deflate = compress && this.codec !== null;
    // One chunk is held back so the last one can carry FIN.
    let held: Uint8Array | null = null;
    for await (const piece of source) {
      const chunk = typeof piece === "string" ? Buffer.from(piece) : piece;
      if (held !== null) await this.writeFragment(held, isBinary, false, deflate);
      if (this.stopped) return;
      held = chunk;
    }
    await this.writeFragment(held ?? Buffer.alloc(0), isBinary, true, deflate);
  }

  private async writeFragment(
    chunk: Uint8Array,
    isBinary: boolean,
    fin: boolean,
    deflate: boolean,
  ): Promise<void> {
    const payload = deflate ? await this.codec!.compress(chunk, fin) : chunk;
    // The core refuses once closing began: the message is cut short and was not sent.
    if (this.stopped || !this.core.sendFragment(payload, isBinary, fin, deflate)) throw notSent();
  }
}

function notSent(): ConnectionError {
  return new ConnectionError(
    "WS_ERR_SEND_FAILED",
    "the connection closed before the message was sent",
  );
}
