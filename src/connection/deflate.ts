/**
 * permessage-deflate compression (RFC 7692 section 7.2) over node:zlib, for one connection.
 *
 * Each direction keeps one raw deflate or inflate stream for the life of the connection (context
 * takeover) or resets it after every message when the sending side agreed to
 * no_context_takeover. Every zlib job goes through a Limiter so the whole process runs at most a
 * few at once, and calls on one instance are processed in order, one at a time per direction.
 */
import zlib from "node:zlib";
import { protocolError } from "../protocol/errors.js";
import {
  DEFAULT_THRESHOLD,
  type DeflateParams,
  type PerMessageDeflateOptions,
  validateDeflateOptions,
  zlibWindowBits,
} from "../protocol/permessage-deflate.js";
import { type Limiter, sharedZlibLimiter } from "./zlib-limiter.js";

/** The tail of a sync flush, removed by the sender and restored by the receiver (7.2.1, 7.2.2). */
const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/**
 * The rejection of calls made after close() or after another call failed. It is not a protocol
 * error: the connection is already going away, and callers may ignore it.
 */
export class DeflateClosedError extends Error {
  override readonly name = "DeflateClosedError";
  readonly code = "WS_ERR_DEFLATE_CLOSED";
  constructor() {
    super("The permessage-deflate context is closed");
  }
}

interface Job<T> {
  chunks: Buffer[];
  bytes: number;
  limit: number;
  settled: boolean;
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

type Direction = "deflate" | "inflate";

export class PerMessageDeflate {
  /** Messages shorter than this many bytes should be sent uncompressed. */
  readonly threshold: number;
  readonly params: DeflateParams;
  readonly role: "server" | "client";

  readonly #limiter: Limiter;
  readonly #level: number | undefined;
  readonly #memLevel: number | undefined;
  readonly #ourNoContextTakeover: boolean;
  readonly #peerNoContextTakeover: boolean;
  readonly #ourWindowBits: number;
  readonly #peerWindowBits: number;

  #deflate: zlib.DeflateRaw | null = null;
  #inflate: zlib.InflateRaw | null = null;
  #deflateJob: Job<Buffer> | null = null;
  #inflateJob: Job<Buffer[]> | null = null;
  #deflateTail: Promise<unknown> = Promise.resolve();
  #inflateTail: Promise<unknown> = Promise.resolve();
  #closed = false;

  /**
   * `options.concurrency`, when given without a `limiter`, sets the process-wide cap of
   * sharedZlibLimiter (it is a process-wide setting, not a per-connection one).
   */
  constructor(
    params: DeflateParams,
    role: "server" | "client",
    options: PerMessageDeflateOptions & { limiter?: Limiter } = {},
  ) {
    validateDeflateOptions(options);
    // Throws on window bits outside 8..15.
    zlibWindowBits(params.serverMaxWindowBits);
    zlibWindowBits(params.clientMaxWindowBits);
    this.params = { ...params };
    this.role = role;
    this.threshold = options.threshold ?? DEFAULT_THRESHOLD;
    this.#level = options.level;
    this.#memLevel = options.memLevel;
    if (options.limiter !== undefined) {
      this.#limiter = options.limiter;
    } else {
      this.#limiter = sharedZlibLimiter;
      if (options.concurrency !== undefined) sharedZlibLimiter.concurrency = options.concurrency;
    }
    const server = role === "server";
    this.#ourNoContextTakeover = server
      ? params.serverNoContextTakeover
      : params.clientNoContextTakeover;
    this.#peerNoContextTakeover = server
      ? params.clientNoContextTakeover
      : params.serverNoContextTakeover;
    this.#ourWindowBits = server ? params.serverMaxWindowBits : params.clientMaxWindowBits;
    this.#peerWindowBits = server ? params.clientMaxWindowBits : params.serverMaxWindowBits;
  }

  /** Whether close() was called or a call failed; every later call rejects. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Compresses one fragment of a message (the whole message when `fin` and it is the first).
   * The output ends with a sync flush, so the peer can inflate each fragment as it arrives; on
   * `fin` the flush's 00 00 ff ff tail is removed (section 7.2.1). An empty message becomes the
   * single byte 0x00, the start of an empty stored block that the receiver's appended tail
   * completes (section 7.2.3.6); the same byte is sent should zlib ever emit nothing at all.
   * `data` must not be modified until the promise settles.
   */
  compress(data: Uint8Array, fin: boolean): Promise<Buffer> {
    return this.#enqueue("deflate", () => this.#compress(data, fin));
  }

  /**
   * Inflates one fragment of a compressed message; on `fin` the 00 00 ff ff tail is appended
   * first (section 7.2.2). `maxBytes` caps this call's output: pass what is left of the message
   * size limit. Output past it rejects with WS_ERR_MESSAGE_TOO_BIG (1009) as soon as zlib emits
   * it, so at most one zlib chunk (16 KiB) past the limit is ever produced; corrupt data rejects
   * with WS_ERR_INVALID_COMPRESSED_DATA (1007). Either failure closes this instance.
   */
  decompress(data: Uint8Array, fin: boolean, maxBytes: number): Promise<Buffer[]> {
    if (!(maxBytes >= 0)) throw new RangeError("maxBytes must be a non-negative number");
    return this.#enqueue("inflate", () => this.#decompress(data, fin, maxBytes));
  }

  /**
   * Frees the zlib streams. Calls in flight or queued reject with DeflateClosedError; nothing is
   * thrown, now or later. Safe to call more than once.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const error = new DeflateClosedError();
    settle(this.#deflateJob, error);
    settle(this.#inflateJob, error);
    this.#deflateJob = null;
    this.#inflateJob = null;
    // A zlib stream may be closed while its thread pool work is in flight (node defers the
    // free) and even from inside its own 'data' handler; our listeners stay attached, so a late
    // event finds no job and does nothing.
    this.#deflate?.close();
    this.#inflate?.close();
    this.#deflate = null;
    this.#inflate = null;
  }

  /** Orders calls per direction, then waits for a process-wide zlib slot. */
  #enqueue<T>(direction: Direction, work: () => Promise<T>): Promise<T> {
    const tail = direction === "deflate" ? this.#deflateTail : this.#inflateTail;
    const result = tail.then(() => {
      this.#assertOpen();
      return this.#limiter.run(() => {
        this.#assertOpen();
        return work();
      });
    });
    const next = result.then(noop, noop);
    if (direction === "deflate") this.#deflateTail = next;
    else this.#inflateTail = next;
    return result;
  }

  #assertOpen(): void {
    if (this.#closed) throw new DeflateClosedError();
  }

  #compress(data: Uint8Array, fin: boolean): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const stream = this.#deflate ?? this.#createDeflate();
      const job: Job<Buffer> = {
        chunks: [],
        bytes: 0,
        limit: Number.POSITIVE_INFINITY,
        settled: false,
        resolve,
        reject,
      };
      this.#deflateJob = job;
      // The stream's default flush is Z_SYNC_FLUSH, so one write compresses and flushes in a
      // single pass through the thread pool (write + flush() would take two).
      stream.write(data, () => {
        if (job.settled) return;
        drainReadable(stream);
        if (job.settled) return;
        let out = Buffer.concat(job.chunks, job.bytes);
        if (fin) {
          if (endsWithTrailer(out)) out = out.subarray(0, out.length - TRAILER.length);
          else if (out.length === 0) out = Buffer.from([0x00]);
          // Section 7.1.1: without context takeover each message starts from an empty window.
          if (this.#ourNoContextTakeover) stream.reset();
        }
        this.#deflateJob = null;
        job.settled = true;
        resolve(out);
      });
    });
  }

  #decompress(data: Uint8Array, fin: boolean, maxBytes: number): Promise<Buffer[]> {
    return new Promise<Buffer[]>((resolve, reject) => {
      const stream = this.#inflate ?? this.#createInflate();
      const job: Job<Buffer[]> = {
        chunks: [],
        bytes: 0,
        limit: maxBytes,
        settled: false,
        resolve,
        reject,
      };
      this.#inflateJob = job;
      // zlib stops consuming input at the end of a DEFLATE stream, so the input it consumed
      // tells whether the peer ended its stream with a BFINAL block (section 7.2.3.4).
      const consumedBefore = stream.bytesWritten;
      // One write, flushed by the stream's default Z_SYNC_FLUSH: a single thread pool pass.
      stream.write(fin ? Buffer.concat([data, TRAILER]) : data, () => {
        if (job.settled) return;
        drainReadable(stream);
        if (job.settled) return;
        const consumed = stream.bytesWritten - consumedBefore;
        if (consumed < data.length) {
          // Compressed data after the final block belongs to no DEFLATE stream.
          this.#fail(
            protocolError("WS_ERR_INVALID_COMPRESSED_DATA", "Data after the final deflate block"),
          );
          return;
        }
        if (fin) {
          if (consumed < data.length + TRAILER.length) {
            // The stream ended; the next message starts a new one.
            stream.close();
            this.#inflate = null;
          } else if (this.#peerNoContextTakeover) {
            // The peer starts every message from an empty window; so must we (section 7.1.1).
            stream.reset();
          }
        }
        this.#inflateJob = null;
        job.settled = true;
        resolve(job.chunks);
      });
    });
  }

  #createDeflate(): zlib.DeflateRaw {
    const stream = zlib.createDeflateRaw({
      flush: zlib.constants.Z_SYNC_FLUSH,
      windowBits: zlibWindowBits(this.#ourWindowBits),
      ...(this.#level === undefined ? {} : { level: this.#level }),
      ...(this.#memLevel === undefined ? {} : { memLevel: this.#memLevel }),
    });
    stream.on("data", (chunk: Buffer) => {
      const job = this.#deflate === stream ? this.#deflateJob : null;
      if (job === null || job.settled) return;
      job.chunks.push(chunk);
      job.bytes += chunk.length;
    });
    stream.on("error", (error: Error) => {
      if (this.#deflate === stream) this.#fail(error, "deflate");
    });
    this.#deflate = stream;
    return stream;
  }

  #createInflate(): zlib.InflateRaw {
    const stream = zlib.createInflateRaw({
      flush: zlib.constants.Z_SYNC_FLUSH,
      windowBits: zlibWindowBits(this.#peerWindowBits),
    });
    stream.on("data", (chunk: Buffer) => {
      const job = this.#inflate === stream ? this.#inflateJob : null;
      if (job === null || job.settled) return;
      job.bytes += chunk.length;
      if (job.bytes > job.limit) {
        // Stop zlib now: closing the stream from its own 'data' handler makes node drop the
        // rest of the input instead of inflating it.
        this.#fail(
          protocolError("WS_ERR_MESSAGE_TOO_BIG", "Decompressed message exceeds the size limit"),
        );
        return;
      }
      job.chunks.push(chunk);
    });
    stream.on("error", () => {
      // zlib's message may describe the data; the protocol error does not need to.
      if (this.#inflate === stream) {
        this.#fail(protocolError("WS_ERR_INVALID_COMPRESSED_DATA", "Invalid compressed data"));
      }
    });
    this.#inflate = stream;
    return stream;
  }

  /** Rejects the failing direction's call with `error` and closes the instance. */
  #fail(error: Error, direction: Direction = "inflate"): void {
    if (this.#closed) return;
    if (direction === "inflate") settle(this.#inflateJob, error);
    else settle(this.#deflateJob, error);
    this.close();
  }
}

function settle<T>(job: Job<T> | null, error: Error): void {
  if (job === null || job.settled) return;
  job.settled = true;
  job.reject(error);
}

function endsWithTrailer(data: Buffer): boolean {
  const n = data.length;
  return (
    n >= 4 &&
    data[n - 4] === 0x00 &&
    data[n - 3] === 0x00 &&
    data[n - 2] === 0xff &&
    data[n - 1] === 0xff
  );
}

/**
 * Output pushed while the readable side was not flowing waits in its buffer; reading it emits
 * 'data' synchronously, so everything a flush produced reaches the job before it completes.
 */
function drainReadable(stream: zlib.DeflateRaw | zlib.InflateRaw): void {
  while (stream.readableLength > 0 && !stream.destroyed && stream.read() !== null) {
    // read() emitted the chunk to the 'data' listener.
  }
}

function noop(): void {}
