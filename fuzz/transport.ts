/**
 * An in-memory byte-stream pair that behaves like a TCP connection in the ways a WebSocket
 * endpoint can observe, including the one test/connection/duplex-pair.ts leaves out: the reset.
 *
 * - Bytes arrive asynchronously (in a later turn of the event loop, never inside the writer's
 *   call), in order.
 * - Flow control: a write completes at once while the peer's unread bytes stay under the peer's
 *   readableHighWaterMark; otherwise its callback is held until the peer reads, so
 *   writableLength grows and write() eventually returns false, as with a full TCP window.
 * - end() is a FIN: the peer reads what came before it, then end-of-stream (half-open allowed);
 *   like a socket's shutdown, it completes ('finish') in a later turn.
 * - destroy() is a close(): the peer sees end-of-stream, and, as with the RST a TCP stack sends
 *   in answer to data for a socket that is gone, the peer's held write fails with ECONNRESET
 *   and its later writes fail with EPIPE. Or, with `reset: false`, like a peer that vanished
 *   after its FIN (a network gone, a host that stopped reading): no RST ever comes, a write held
 *   for want of room stays held, and later writes are accepted and lost.
 */
import { Duplex } from "node:stream";

export interface TransportOptions {
  /** Bytes an end buffers unread before the other end's writes stop completing. */
  readableHighWaterMark?: number;
  /** Bytes an end buffers unwritten before write() returns false. */
  writableHighWaterMark?: number;
  /** Whether destroy() resets the peer (the default) or leaves it waiting forever. */
  reset?: boolean;
}

function socketError(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${syscall} ${code}`), { code, syscall });
}

export class TransportEnd extends Duplex {
  peer!: TransportEnd;
  private readonly outbox: Buffer[] = [];
  private outboxBytes = 0;
  private deliveryScheduled = false;
  private finQueued = false;
  /** The write waiting for room in the peer's read buffer. */
  private heldCallback: ((error?: Error | null) => void) | null = null;
  /** The peer is gone: our writes fail as after a TCP reset. */
  private reset = false;
  private readonly resetsPeer: boolean;

  constructor(options: TransportOptions) {
    super({
      allowHalfOpen: true,
      readableHighWaterMark: options.readableHighWaterMark ?? 16 * 1024,
      writableHighWaterMark: options.writableHighWaterMark ?? 16 * 1024,
    });
    this.resetsPeer = options.reset ?? true;
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
    this.finQueued = true;
    this.scheduleDelivery();
    // A TCP shutdown completes later, as a net.Socket's does (its libuv shutdown request is
    // answered in a later phase of the event loop), not within the turn that asked for it.
    setImmediate(callback);
  }

  override _read(): void {
    // Our reader wants more: a writer held back on the other end may go on.
    this.peer.release(true);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.finQueued = true;
    this.scheduleDelivery();
    this.heldCallback = null;
    if (this.resetsPeer) this.peer.resetByPeer();
    callback(error);
  }

  private resetByPeer(): void {
    this.reset = true;
    const held = this.heldCallback;
    if (held !== null) {
      this.heldCallback = null;
      held(socketError("ECONNRESET", "read"));
    }
  }

  private transmit(data: Buffer, callback: (error?: Error | null) => void): void {
    if (this.reset) {
      callback(socketError("EPIPE", "write"));
      return;
    }
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
    if (this.finQueued && !peer.destroyed && peer.readable) peer.push(null);
    this.release();
  }

  private release(force = false): void {
    const callback = this.heldCallback;
    if (callback !== null && (force || this.peerHasRoom())) {
      this.heldCallback = null;
      callback();
    }
  }

  /** What the transport looks like, for failure reports. */
  describe(): Record<string, unknown> {
    return {
      destroyed: this.destroyed,
      paused: this.isPaused(),
      readableLength: this.readableLength,
      readableEnded: this.readableEnded,
      writableLength: this.writableLength,
      writableEnded: this.writableEnded,
      writeHeld: this.heldCallback !== null,
      reset: this.reset,
    };
  }
}

/** Two connected ends. */
export function transportPair(options: TransportOptions = {}): [TransportEnd, TransportEnd] {
  const a = new TransportEnd(options);
  const b = new TransportEnd(options);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
