import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { CloseCode } from "../protocol/constants.js";
import { ProtocolError } from "../protocol/errors.js";
import type { DeflateParams, PerMessageDeflateOptions } from "../protocol/permessage-deflate.js";
import {
  checkControlPayload,
  encodeClosePayload,
  Protocol,
  type ProtocolHandler,
  type Role,
} from "../protocol/protocol.js";
import { sharedEmptyList } from "../shared-empty.js";
import { type DeadlineSweep, sweepFor } from "./deadlines.js";
import { DeflateClosedError, PerMessageDeflate } from "./deflate.js";
import { ConnectionError } from "./errors.js";
import { scheduleFlush } from "./flush.js";
import { type HeartbeatOptions, type HeartbeatSchedule, startHeartbeat } from "./heartbeat.js";
import type { PreparedDeflateOptions, PreparedMessage } from "./prepared.js";
import type { PreparedBatch } from "./prepared-batch.js";
import { Sender } from "./sender.js";

export { ConnectionError } from "./errors.js";

/**
 * Binds the protocol core to a byte stream: a net.Socket, a TLS socket or any Duplex. It owns
 * what the core may not: the socket, timers (heartbeat, close timeout), zlib, and backpressure.
 */

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});
const NO_DEFLATE_OPTIONS: PreparedDeflateOptions = Object.freeze({});
/** No output this turn: the shared empty list until a connection queues something. */
const NO_CHUNKS = sharedEmptyList<Uint8Array>();

/** Where a socket keeps its connection, for the listeners all connections share. */
const CONNECTION = Symbol("switchboard.connection");
type SocketWithConnection = Duplex & { [CONNECTION]: WebSocketConnection };

export type { HeartbeatOptions } from "./heartbeat.js";

export interface ConnectionOptions {
  role: Role;
  maxMessageSize?: number;
  maxFragments?: number;
  maxBufferedBytes?: number;
  /** The negotiated permessage-deflate parameters, or null. */
  deflate?: { params: DeflateParams; options?: PerMessageDeflateOptions } | null;
  /** The negotiated subprotocol ("" for none). */
  protocol?: string;
  /** The headers the peer sent in the opening handshake (lower-case names, as node gives them). */
  handshakeHeaders?: Readonly<Record<string, string | string[] | undefined>>;
  /** The negotiated Sec-WebSocket-Extensions value ("" for none). */
  extensions?: string;
  heartbeat?: HeartbeatOptions | false;
  /** Milliseconds the peer gets to finish the closing handshake before the socket is destroyed. */
  closeTimeout?: number;
  /** Buffered outgoing bytes above which reading from the peer pauses. */
  highWaterMark?: number;
}

export type ReadyState = "open" | "closing" | "closed";

export interface WebSocketConnectionEvents {
  message: [data: Buffer, isBinary: boolean];
  ping: [data: Buffer];
  pong: [data: Buffer];
  close: [code: number, reason: string];
  error: [error: ProtocolError | ConnectionError];
  drain: [];
}

export const DEFAULT_CLOSE_TIMEOUT = 10_000;
export const DEFAULT_HIGH_WATER_MARK = 1024 * 1024;

export class WebSocketConnection extends EventEmitter<WebSocketConnectionEvents> {
  readonly protocol: string;
  readonly extensions: string;
  /** Read from the socket on first use: a connection nobody asks spends no getpeername on it. */
  private remoteAddressValue: string | undefined | null = null;
  /**
   * The headers the peer sent in the opening handshake: the request's on a server, the 101
   * response's on a client (cookies set by the server, for instance).
   */
  readonly handshakeHeaders: Readonly<Record<string, string | string[] | undefined>>;

  private readonly socket: Duplex;
  private readonly core: Protocol;
  private readonly codec: PerMessageDeflate | null;
  /** The zlib settings a shared compression must use to match this connection's. */
  private readonly deflateOptions: PreparedDeflateOptions;
  /** Made on first use: a connection that never sends or closes never needs one. */
  private senderInstance: Sender | null = null;
  private readonly closeTimeout: number;
  private readonly highWaterMark: number;

  /** Output gathered during this event-loop turn; it leaves in one write. */
  private pendingChunks: Uint8Array[] = NO_CHUNKS;
  private pendingBytes = 0;
  private flushScheduled = false;
  private endAfterFlush = false;
  /** The peer's FIN arrived while the core was inflating: end once the input it held is parsed. */
  private finAfterInflate = false;
  private closeRequested = false;
  private closed = false;
  private readingPaused = false;
  private userPaused = false;
  private waitingForDrain = false;
  private head: Buffer | null = null;

  private heartbeat: HeartbeatSchedule | null = null;
  private heartbeatTimeoutMs = 0;
  /** The sweep that holds this connection's close deadline while it has one. */
  private closeDeadline: DeadlineSweep<WebSocketConnection> | null = null;

  constructor(socket: Duplex, options: ConnectionOptions, head?: Buffer) {
    super();
    this.socket = socket;
    this.protocol = options.protocol ?? "";
    this.extensions = options.extensions ?? "";
    this.handshakeHeaders = options.handshakeHeaders ?? NO_HEADERS;
    this.closeTimeout = options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT;
    this.highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.codec = options.deflate
      ? new PerMessageDeflate(options.deflate.params, options.role, options.deflate.options)
      : null;
    // Only a connection that compresses reads them.
    this.deflateOptions = options.deflate
      ? { level: options.deflate.options?.level, memLevel: options.deflate.options?.memLevel }
      : NO_DEFLATE_OPTIONS;
    this.core = new Protocol(
      {
        role: options.role,
        maxMessageSize: options.maxMessageSize,
        maxFragments: options.maxFragments,
        maxBufferedBytes: options.maxBufferedBytes,
        compression: this.codec !== null,
      },
      new WebSocketConnection.CoreEvents(this),
    );

    const netSocket = socket as {
      setNoDelay?: (noDelay: boolean) => void;
      setTimeout?: (ms: number) => void;
      timeout?: number;
    };
    netSocket.setNoDelay?.(true);
    // An idle timeout an HTTP server set would keep firing 'timeout' on a quiet WebSocket (for
    // whoever listens to end it). `timeout` is undefined when none was set (a socket from the
    // standalone server): clearing nothing would cost a call into the stream machinery.
    if (netSocket.timeout) netSocket.setTimeout?.(0);
    // The connection ends its side itself once the peer's FIN is handled (onEnd): a socket that
    // ended on its own at the FIN would refuse the reply to a close frame still being parsed
    // (a client socket from http.request is not half-open by default).
    socket.allowHalfOpen = true;
    // Shared listeners that find this connection on the socket: five closures per connection
    // would cost more memory than the rest of an idle connection's JavaScript state.
    (socket as SocketWithConnection)[CONNECTION] = this;
    socket.on("data", WebSocketConnection.socketData);
    socket.on("drain", WebSocketConnection.socketDrain);
    socket.on("error", WebSocketConnection.socketError);
    socket.on("end", WebSocketConnection.socketEnd);
    socket.on("close", WebSocketConnection.socketClose);

    if (options.heartbeat) this.startHeartbeat(options.heartbeat);
    // Bytes that came with the handshake are processed once the owner had a chance to listen:
    // a client only gets the connection after its `await connect()` resumes. Later reads
    // process them first, so order is kept either way.
    if (head !== undefined && head.length > 0) {
      this.head = head;
      setImmediate(() => this.takeHead());
    }
  }

  /** The peer's address, as the socket reports it (undefined once it is gone, if never read before). */
  get remoteAddress(): string | undefined {
    if (this.remoteAddressValue === null) {
      this.remoteAddressValue = (this.socket as { remoteAddress?: string }).remoteAddress;
    }
    return this.remoteAddressValue;
  }

  private takeHead(): void {
    const head = this.head;
    if (head === null || this.closed) return;
    this.head = null;
    this.core.receive(head);
  }

  get readyState(): ReadyState {
    if (this.closed) return "closed";
    if (this.closeRequested) return "closing";
    return this.core.state;
  }

  /** Bytes accepted by `send` but not yet handed to the operating system. */
  get bufferedAmount(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  /**
   * True when nothing given to send() is held any more: nothing is queued for this turn's write,
   * compressing or waiting behind another message, and the socket buffers nothing (the kernel
   * took every byte). The bytes of earlier sends are not referenced then, and their memory may
   * be reused.
   */
  get outputReleased(): boolean {
    return this.pendingChunks.length === 0 && this.sender.idle && this.socket.writableLength === 0;
  }

  /**
   * Sends a message. Strings go as text, bytes as binary unless `binary` says otherwise.
   * Returns false when the connection no longer accepts messages.
   */
  send(data: string | Uint8Array, options?: { binary?: boolean; compress?: boolean }): boolean {
    if (this.readyState !== "open") return false;
    const isString = typeof data === "string";
    const payload = isString ? Buffer.from(data) : data;
    const isBinary = options?.binary ?? !isString;
    this.sender.send(payload, isBinary, options?.compress ?? true);
    return true;
  }

  /**
   * Sends a message prepared once for many connections (topic fan-out): the same frame bytes,
   * or the same compression, serve every connection that can use them; the rest (a client's
   * masked frames, deflate with server context takeover) frame and compress the payload as
   * send() does. Ordered with send() and sendStream(), corked with the rest of the turn, and
   * counted in bufferedAmount. Returns false when the connection no longer accepts messages.
   */
  sendPrepared(prepared: PreparedMessage): boolean {
    if (this.readyState !== "open") return false;
    const codec = this.codec;
    if (this.core.role === "client") {
      // Every client frame is masked with its own key (RFC 6455 section 5.3): nothing to share.
      this.sender.send(prepared.payload, prepared.binary, prepared.compress);
    } else if (codec === null || !prepared.compress || prepared.payload.length < codec.threshold) {
      this.sender.sendFrame(prepared.frame(), this.writePrepared);
    } else if (codec.params.serverNoContextTakeover) {
      // Each message starts from an empty window (RFC 7692 section 7.1.1.1): one compression
      // per window size serves every such connection.
      const frame = prepared.compressedEntry(codec.params, this.deflateOptions);
      this.sender.sendFrame(frame, this.writePrepared);
    } else {
      // With context takeover the bytes depend on what this connection sent before.
      this.sender.send(prepared.payload, prepared.binary, true);
    }
    return true;
  }

  private writePreparedFn: ((frame: Uint8Array) => void) | null = null;
  /** The callback that writes a ready frame, made once per connection on first use. */
  private get writePrepared(): (frame: Uint8Array) => void {
    this.writePreparedFn ??= (frame) => this.queueOutput(frame);
    return this.writePreparedFn;
  }

  private get sender(): Sender {
    this.senderInstance ??= new Sender(this.core, this.codec, (error) => this.sendFailed(error));
    return this.senderInstance;
  }

  /**
   * Sends messages [start, end) of a batch prepared once for many connections. Where none of
   * them would be compressed here, they leave as one slice of the batch's shared frames (one
   * queued chunk, no copy); otherwise each goes through sendPrepared(). Ordered and corked like
   * sendPrepared(). Returns false when the connection no longer accepts messages.
   */
  sendPreparedBatch(batch: PreparedBatch, start = 0, end = batch.length): boolean {
    if (this.readyState !== "open") return false;
    const codec = this.codec;
    if (
      this.core.role === "server" &&
      (codec === null || batch.largestCompressible < codec.threshold)
    ) {
      if (start < end) this.sender.sendFrame(batch.frames(start, end), this.writePrepared);
    } else {
      for (let i = start; i < end; i++) this.sendPrepared(batch.messages[i]);
    }
    return true;
  }

  /** Sends one message as fragments, one per chunk `source` yields (RFC 6455 section 5.4). */
  sendStream(
    source: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>,
    options?: { binary?: boolean; compress?: boolean },
  ): Promise<void> {
    if (this.readyState !== "open") {
      return Promise.reject(new ConnectionError("WS_ERR_SEND_FAILED", "connection is not open"));
    }
    return this.sender.stream(source, options?.binary ?? true, options?.compress ?? true);
  }

  /** Sends a ping (at most 125 bytes). Returns false once the connection is closing. */
  ping(data: string | Uint8Array = Buffer.alloc(0)): boolean {
    const payload = typeof data === "string" ? Buffer.from(data) : data;
    // A bad size is a programming error and throws whatever the state.
    checkControlPayload(payload);
    // Closing (our close queued, or the peer's FIN read): nothing more may be written.
    return this.readyState === "open" && this.core.ping(payload);
  }

  /** Sends an unsolicited pong (at most 125 bytes). Returns false once the connection is closing. */
  pong(data: string | Uint8Array = Buffer.alloc(0)): boolean {
    const payload = typeof data === "string" ? Buffer.from(data) : data;
    checkControlPayload(payload);
    return this.readyState === "open" && this.core.pong(payload);
  }

  /**
   * Starts the closing handshake (RFC 6455 section 7.1.2) after every message already sent.
   * Throws on a code that may not be sent (section 7.4) or a reason over 123 bytes.
   */
  close(code?: number, reason = ""): void {
    // Validate now, so a bad code throws at the caller even when the close frame is queued.
    // The core's encoder owns the rules (RFC 6455 section 7.4).
    if (code !== undefined || reason !== "") encodeClosePayload(code, reason);
    if (this.closeRequested || this.closed || this.core.state !== "open") return;
    this.closeRequested = true;
    // Pongs are not processed once our close frame is out, so a ping in flight must not count.
    this.stopHeartbeat();
    this.sender.close(code, reason);
    this.armCloseTimer();
  }

  /** Drops the connection at once, without a closing handshake. */
  terminate(): void {
    if (this.closed) return;
    this.closeRequested = true;
    this.stopHeartbeat();
    this.senderInstance?.stop();
    this.socket.destroy();
  }

  /** Stops reading from the peer until `resume()`. */
  pause(): void {
    this.userPaused = true;
    this.updateReading();
  }

  resume(): void {
    this.userPaused = false;
    this.updateReading();
  }

  // ─────────────────────────── core wiring ───────────────────────────

  private static readonly socketData = function (this: Duplex, chunk: Buffer): void {
    (this as SocketWithConnection)[CONNECTION].onData(chunk);
  };
  private static readonly socketDrain = function (this: Duplex): void {
    (this as SocketWithConnection)[CONNECTION].onDrain();
  };
  private static readonly socketError = function (this: Duplex, error: Error): void {
    (this as SocketWithConnection)[CONNECTION].onSocketError(error);
  };
  private static readonly socketEnd = function (this: Duplex): void {
    (this as SocketWithConnection)[CONNECTION].onEnd();
  };
  private static readonly socketFinish = function (this: Duplex): void {
    this.destroy();
  };
  private static readonly socketClose = function (this: Duplex): void {
    (this as SocketWithConnection)[CONNECTION].onSocketClose();
  };

  /**
   * What the protocol core reports, as one small object per connection with its methods on a
   * shared prototype, rather than an object of nine closures. Declared inside the class so it
   * may use the connection's private members.
   */
  private static readonly CoreEvents = class CoreEvents implements ProtocolHandler {
    constructor(private readonly conn: WebSocketConnection) {}
    output(bytes: Uint8Array): void {
      this.conn.queueOutput(bytes);
    }
    message(data: Buffer, isBinary: boolean): void {
      try {
        this.conn.emit("message", data, isBinary);
      } catch (error) {
        this.conn.listenerFailed(error);
      }
    }
    ping(data: Buffer): void {
      try {
        this.conn.emit("ping", data);
      } catch (error) {
        this.conn.listenerFailed(error);
      }
    }
    pong(data: Buffer): void {
      this.conn.onPong(data);
    }
    closeReceived(): void {
      const conn = this.conn;
      conn.closeRequested = true;
      conn.stopHeartbeat();
      conn.armCloseTimer();
      // The reply waits for messages the application sent that are still compressing.
      if (conn.core.closeReplyOwed) conn.sender.closeReply();
    }
    deferCloseReply(): boolean {
      return this.conn.senderInstance?.holdsCloseReply ?? false;
    }
    inflate(payload: Buffer, fin: boolean): void {
      this.conn.inflate(payload, fin);
    }
    error(error: ProtocolError): void {
      this.conn.report(error);
    }
    closeTransport(): void {
      this.conn.endTransport();
    }
  };

  private onData(chunk: Buffer): void {
    if (this.head !== null) this.takeHead();
    this.core.receive(chunk);
    if (this.core.inflating) this.updateReading();
  }

  private inflate(payload: Buffer, fin: boolean): void {
    this.updateReading();
    this.codec!.decompress(payload, fin, this.core.inflateBudget).then(
      (chunks) => {
        if (this.closed) return;
        this.core.inflated(chunks);
        this.updateReading();
        this.endIfFinWaited();
      },
      (error: unknown) => {
        // A codec closed under a pending job means the connection is already going away.
        if (this.closed || error instanceof DeflateClosedError) return;
        this.core.inflateFailed(
          error instanceof ProtocolError
            ? error
            : new ProtocolError(
                "WS_ERR_INVALID_COMPRESSED_DATA",
                CloseCode.InvalidPayload,
                String(error),
              ),
        );
        this.endIfFinWaited();
      },
    );
  }

  /** Handles a FIN deferred by onEnd once the core has parsed everything read before it. */
  private endIfFinWaited(): void {
    if (!this.finAfterInflate || this.closed || this.core.inflating) return;
    this.finAfterInflate = false;
    this.endTransport();
  }

  private onPong(data: Buffer): void {
    this.heartbeat?.pong(this);
    try {
      this.emit("pong", data);
    } catch (error) {
      this.listenerFailed(error);
    }
  }

  /**
   * An application listener threw while the core was delivering an event. Letting it unwind
   * through the parser would lose the rest of the read and, in a server, take every other
   * connection down with the process; instead this connection closes with 1011 and the error is
   * reported (or, with no 'error' listener, printed as a process warning).
   */
  private listenerFailed(error: unknown): void {
    const failure = new ConnectionError(
      "WS_ERR_LISTENER_FAILED",
      `a listener threw: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
    if (this.listenerCount("error") > 0) this.emit("error", failure);
    else process.emitWarning(failure);
    if (this.readyState === "open") this.close(CloseCode.InternalError);
  }

  private report(error: ProtocolError | ConnectionError): void {
    if (this.listenerCount("error") > 0) this.emit("error", error);
  }

  private sendFailed(error: Error): void {
    this.report(
      new ConnectionError("WS_ERR_SEND_FAILED", `send failed: ${error.message}`, { cause: error }),
    );
    this.stopHeartbeat();
    if (this.core.state === "open") {
      this.core.sendClose(CloseCode.InternalError, "");
      this.closeRequested = true;
      this.armCloseTimer();
    }
  }

  // ─────────────────────────── output and corking ───────────────────────────

  private queueOutput(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.pendingChunks === NO_CHUNKS) this.pendingChunks = [bytes];
    else this.pendingChunks.push(bytes);
    this.pendingBytes += bytes.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      scheduleFlush(this);
    }
    if (this.pendingBytes > this.highWaterMark) this.updateReading();
  }

  /** Writes everything gathered this turn in one write. Called by the flush scheduler. */
  flush(): void {
    this.flushScheduled = false;
    const chunks = this.pendingChunks;
    const total = this.pendingBytes;
    if (chunks.length > 0 && !this.closed && !this.socket.destroyed) {
      this.pendingChunks = NO_CHUNKS;
      this.pendingBytes = 0;
      // While reading is paused for backpressure, learn when this output has left: node emits
      // 'drain' only after a write that returned false, and below the socket's own high-water
      // mark a write returns true however long it then takes.
      const written = this.readingPaused ? this.onWritten : undefined;
      let ok: boolean;
      if (chunks.length === 1) {
        ok = this.socket.write(chunks[0], written);
      } else if (total < Buffer.poolSize >>> 1) {
        // Small enough for Buffer.concat to take a slice of node's pool: one cheap copy.
        ok = this.socket.write(Buffer.concat(chunks, total), written);
      } else {
        // Anything larger would cost a fresh ArrayBuffer per flush (allocation, external
        // memory, GC) on top of the copy: corked writes leave as one writev, uncopied.
        this.socket.cork();
        const last = chunks.length - 1;
        for (let i = 0; i < last; i++) this.socket.write(chunks[i]);
        this.socket.write(chunks[last], written);
        this.socket.uncork();
        ok = !this.socket.writableNeedDrain;
      }
      if (!ok) this.waitingForDrain = true;
      // Reading may have paused while the output was gathered; the write may have drained it.
      if (this.readingPaused || !ok) this.updateReading();
    }
    if (this.endAfterFlush) {
      this.endAfterFlush = false;
      // The peer's FIN after our own (the usual end of a closing handshake) asks again: a second
      // end() would make node build an error, stack trace and all, only to hand it to nobody.
      if (!this.socket.destroyed && !this.socket.writableEnded) {
        this.socket.end();
        // Section 7.1.1: once both close frames have crossed, "the server MUST close the
        // underlying TCP connection immediately". The peer sends nothing after its close frame,
        // so waiting for its FIN would only cost a wake-up and a read per connection: once our
        // close frame and FIN are with the operating system, the socket goes.
        if (this.core.role === "server" && this.core.closedCleanly) {
          this.socket.once("finish", WebSocketConnection.socketFinish);
        }
      }
    }
  }

  private onWrittenFn: (() => void) | null = null;
  private get onWritten(): () => void {
    this.onWrittenFn ??= () => this.updateReading();
    return this.onWrittenFn;
  }

  private onDrain(): void {
    if (!this.waitingForDrain) return;
    this.waitingForDrain = false;
    this.updateReading();
    this.emit("drain");
  }

  /** Reading pauses while the peer's output backs up, while inflating, or on request. */
  private updateReading(): void {
    if (this.closed) return;
    const shouldPause =
      this.userPaused || this.core.inflating || this.bufferedAmount > this.highWaterMark;
    if (shouldPause === this.readingPaused) return;
    this.readingPaused = shouldPause;
    if (shouldPause) this.socket.pause();
    else this.socket.resume();
  }

  // ─────────────────────────── closing ───────────────────────────

  /** The core says the TCP connection should close: flush, then half-close. */
  private endTransport(): void {
    this.closeRequested = true;
    this.stopHeartbeat();
    this.senderInstance?.stop();
    this.endAfterFlush = true;
    // Nothing can follow the close frame and the FIN, so there is nothing to gather them with:
    // they leave now, with what this turn queued before them, instead of at the turn's end
    // (a scheduled flush that still comes finds nothing to write).
    this.flush();
    // Keep reading (and discarding) so the peer's late bytes never turn our FIN into a reset,
    // but not forever.
    if (this.readingPaused) {
      this.readingPaused = false;
      this.socket.resume();
    }
    this.armCloseTimer();
  }

  private armCloseTimer(): void {
    if (this.closeDeadline !== null || this.closed) return;
    this.closeDeadline = sweepFor(
      WebSocketConnection.closeDeadlines,
      this.closeTimeout,
      WebSocketConnection.closeTimedOut,
    );
    this.closeDeadline.add(this);
  }

  /** Close deadlines by timeout, shared by every connection. */
  private static readonly closeDeadlines = new Map<number, DeadlineSweep<WebSocketConnection>>();
  private static readonly closeTimedOut = (connection: WebSocketConnection): void => {
    connection.closeDeadline = null;
    connection.report(
      new ConnectionError("WS_ERR_CLOSE_TIMEOUT", "the peer did not finish closing in time"),
    );
    connection.socket.destroy();
  };

  private onEnd(): void {
    // The peer half-closed. A client whose closing handshake is done now closes too (section
    // 7.1.1); in every other case the connection is over as well, so nothing more is accepted.
    // Output gathered this turn (such as the reply to the peer's close frame) is flushed before
    // our side ends, and the close timeout bounds the wait for output that cannot drain.
    // Node emits 'end' after the last chunk even while reading is paused, so the core may still
    // be inflating a frame with input held behind it (a ping, a close frame): the FIN waits
    // until that input is parsed, or its replies would be written after our end.
    if (this.core.inflating) {
      this.finAfterInflate = true;
      // Nothing new is accepted from now on, as when the FIN is handled at once.
      this.closeRequested = true;
      this.stopHeartbeat();
      this.senderInstance?.stop();
      this.armCloseTimer();
      return;
    }
    this.endTransport();
  }

  private onSocketError(error: Error): void {
    const code = (error as NodeJS.ErrnoException).code;
    // A reset after the closing handshake is how many peers say goodbye; not worth a report.
    if (!(this.core.state === "closed" && code === "ECONNRESET")) {
      this.report(new ConnectionError("WS_ERR_TRANSPORT", error.message, { cause: error }));
    }
    this.socket.destroy();
  }

  private onSocketClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopHeartbeat();
    this.closeDeadline?.delete(this);
    this.closeDeadline = null;
    this.senderInstance?.stop();
    this.codec?.close();
    this.pendingChunks = NO_CHUNKS;
    this.pendingBytes = 0;
    const { code, reason } = this.core.transportClosed();
    this.emit("close", code, reason);
  }

  // ─────────────────────────── heartbeat ───────────────────────────

  private startHeartbeat(options: HeartbeatOptions): void {
    this.heartbeatTimeoutMs = options.timeout;
    this.heartbeat = startHeartbeat(this, options);
  }

  /** @internal Called by the shared heartbeat schedule. */
  heartbeatPing(): boolean {
    if (this.core.state !== "open") return false;
    this.core.ping();
    return true;
  }

  /** @internal Called by the shared heartbeat schedule. */
  heartbeatTimeout(): void {
    this.report(
      new ConnectionError(
        "WS_ERR_HEARTBEAT_TIMEOUT",
        `no pong within ${this.heartbeatTimeoutMs} ms of a ping`,
      ),
    );
    this.socket.destroy();
  }

  private stopHeartbeat(): void {
    this.heartbeat?.delete(this);
    this.heartbeat = null;
  }
}
