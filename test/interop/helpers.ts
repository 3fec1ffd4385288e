// Shared fixtures for the interop suites: an instrumented Switchboard echo server, an observer
// that records what any WebSocket endpoint (ours or a foreign one) emits, and a tap that reads
// frame headers straight off a socket so tests can see how a message was framed on the wire.
import { createHash } from "node:crypto";
import type { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { afterEach, expect } from "vitest";
import {
  createServer,
  type ServerOptions,
  type UpgradeHttpRequest,
  type WebSocketConnection,
} from "../../src/index.js";

/** Every close code an endpoint may put in a close frame (RFC 6455 section 7.4, IANA registry). */
export const VALID_CLOSE_CODES = [
  1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
] as const;

/**
 * Codes a sender must refuse: out of range, reserved (1004), local-only (1005, 1006, 1015) or
 * reserved for future revisions of the protocol (1016-2999) (RFC 6455 section 7.4.2).
 */
export const INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535];

/** A reason with multibyte characters, so both ends must agree on UTF-8 in close frames. */
export function reasonFor(code: number): string {
  return `bye ${code} – ✓`;
}

/** 123 bytes: the longest reason that fits a control frame (RFC 6455 section 5.5). */
export const LONGEST_REASON = `${"é".repeat(61)}x`;

export const MiB = 1024 * 1024;

export const DEFAULT_WAIT_MS = 5_000;

/** For the 16 MiB round trips, which compress and mask a lot of bytes on a 2-core machine. */
export const LARGE_WAIT_MS = 20_000;

/** Rejects with a message naming what was awaited, so a hang reads as a precise failure. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Pseudo-random bytes from a fixed seed (xorshift32), so failures are reproducible. */
export function patternBytes(size: number, seed = 0x9e3779b9): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  for (; i < size; i++) out[i] = i & 0xff;
  return out;
}

/** Text of exactly `bytes` UTF-8 bytes mixing 1-, 2-, 3- and 4-byte sequences. */
export function multibyteText(bytes: number): string {
  const unit = "héllo wörld ✓ € 🚀 日本語 ";
  const units = Math.floor(bytes / Buffer.byteLength(unit));
  const text = unit.repeat(units);
  return text + "a".repeat(bytes - Buffer.byteLength(text));
}

/** FIFO of events with awaitable `next`; `all` keeps everything ever pushed. */
export class Inbox<T> {
  readonly all: T[] = [];
  private readonly queued: T[] = [];
  private readonly waiters: Array<(item: T) => void> = [];

  push(item: T): void {
    this.all.push(item);
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.queued.push(item);
  }

  next(what: string, ms = DEFAULT_WAIT_MS): Promise<T> {
    if (this.queued.length > 0) return Promise.resolve(this.queued.shift() as T);
    let waiter: ((item: T) => void) | undefined;
    const arrived = new Promise<T>((resolve) => {
      waiter = resolve;
      this.waiters.push(resolve);
    });
    return within(arrived, ms, what).catch((err: unknown) => {
      // Drop the stale waiter so it does not swallow a later item.
      const index = this.waiters.indexOf(waiter as (item: T) => void);
      if (index >= 0) this.waiters.splice(index, 1);
      throw err;
    });
  }
}

export interface ReceivedMessage {
  data: Buffer;
  isBinary: boolean;
  /** Whether the endpoint handed the payload over as a Buffer. */
  wasBuffer: boolean;
}

export interface CloseInfo {
  code: number;
  reason: string;
  /** The reason exactly as the endpoint emitted it (a string for Switchboard, a Buffer for ws). */
  rawReason: unknown;
}

export interface ErrorInfo {
  code: unknown;
  closeCode: unknown;
  message: string;
}

/** What an endpoint emitted, recorded from the moment it was observed. */
export interface Observed {
  messages: Inbox<ReceivedMessage>;
  pings: Inbox<Buffer>;
  pongs: Inbox<Buffer>;
  errors: ErrorInfo[];
  closeEvents: CloseInfo[];
  closed: Promise<CloseInfo>;
}

function toBuffer(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(String(data));
}

/**
 * Records the events of a WebSocket endpoint. Switchboard's `WebSocketConnection` and ws's
 * `WebSocket` share the event names and argument order, so one observer serves both.
 */
export function observe(endpoint: EventEmitter): Observed {
  const messages = new Inbox<ReceivedMessage>();
  const pings = new Inbox<Buffer>();
  const pongs = new Inbox<Buffer>();
  const errors: ErrorInfo[] = [];
  const closeEvents: CloseInfo[] = [];
  let resolveClosed!: (info: CloseInfo) => void;
  const closed = new Promise<CloseInfo>((resolve) => {
    resolveClosed = resolve;
  });
  endpoint.on("message", (data: unknown, isBinary: boolean) => {
    messages.push({ data: toBuffer(data), isBinary, wasBuffer: Buffer.isBuffer(data) });
  });
  endpoint.on("ping", (data: unknown) => pings.push(toBuffer(data)));
  endpoint.on("pong", (data: unknown) => pongs.push(toBuffer(data)));
  endpoint.on("error", (err: { code?: unknown; closeCode?: unknown; message?: string }) => {
    errors.push({ code: err.code, closeCode: err.closeCode, message: String(err.message) });
  });
  endpoint.on("close", (code: number, reason: unknown) => {
    const info: CloseInfo = {
      code,
      reason: typeof reason === "string" ? reason : toBuffer(reason ?? "").toString("utf8"),
      rawReason: reason,
    };
    closeEvents.push(info);
    resolveClosed(info);
  });
  return { messages, pings, pongs, errors, closeEvents, closed };
}

/**
 * The endpoint failed the connection (RFC 6455 section 7.1.7): it reported the stable error code
 * and the close code it sent. It need not wait for the peer's close frame, so its own close
 * event may say 1006 (no close frame received) or carry the echoed code.
 */
export async function expectFailedWith(
  endpoint: Observed,
  code: string,
  closeCode: number,
): Promise<void> {
  const closed = await within(endpoint.closed, DEFAULT_WAIT_MS, "the failing side's close event");
  expect(endpoint.errors.map((e) => [e.code, e.closeCode])).toContainEqual([code, closeCode]);
  expect([1006, closeCode]).toContain(closed.code);
}

export interface ServerPeer extends Observed {
  ws: WebSocketConnection;
  req: UpgradeHttpRequest;
  path: string;
  query: URLSearchParams;
}

export type SwitchboardServer = Awaited<ReturnType<typeof createServer>>;
export type { ServerOptions };

export interface EchoServer {
  server: SwitchboardServer;
  url(path?: string): string;
  /** Every connection, in the order the server accepted them. */
  peers: Inbox<ServerPeer>;
  /**
   * The connection whose URL carries `?id=<id>`, so a test pairs its client with its server
   * side even when an earlier test left a connection behind.
   */
  peer(id: string, ms?: number): Promise<ServerPeer>;
  close(): Promise<void>;
}

let nextId = 0;

/** A fresh id for `EchoServer.peer`; add it to the URL as `?id=`. */
export function uniqueId(): string {
  nextId += 1;
  return `c${nextId}`;
}

/** Appends `?id=<id>` (or `&id=`) to a URL. */
export function withId(url: string, id: string): string {
  const u = new URL(url);
  u.searchParams.set("id", id);
  return u.toString();
}

/** Path prefix whose connections are refused by `verify` with HTTP 404. */
export const FORBIDDEN_PATH = "/forbidden";

/**
 * A Switchboard server that echoes every message with the same opcode and records what each
 * connection emitted. A few paths script the server's side, for peers that cannot be driven
 * from this process:
 * - `/server-close?code=C&reason=R`: the server closes as soon as the connection opens;
 * - `/server-ping?payload=HEX`: the server pings, then reports the pong it got as the text
 *   message `pong:HEX`;
 * - `/forbidden...`: rejected by `verify` with 404 (unless the options bring their own verify).
 */
export async function startEchoServer(options: Partial<ServerOptions> = {}): Promise<EchoServer> {
  const peers = new Inbox<ServerPeer>();
  const server = await createServer({
    port: 0,
    host: "127.0.0.1",
    verify: (req: UpgradeHttpRequest) =>
      req.url?.startsWith(FORBIDDEN_PATH) ? { status: 404, body: "no such service" } : true,
    ...options,
  } as ServerOptions);
  server.on("connection", (ws: WebSocketConnection, req: UpgradeHttpRequest) => {
    const parsed = new URL(req.url ?? "/", "ws://localhost");
    const peer: ServerPeer = {
      ...observe(ws as unknown as EventEmitter),
      ws,
      req,
      path: parsed.pathname,
      query: parsed.searchParams,
    };
    peers.push(peer);
    if (peer.path === "/server-close") {
      ws.close(Number(peer.query.get("code")), peer.query.get("reason") ?? "");
      return;
    }
    if (peer.path === "/server-ping") {
      ws.on("pong", (data: Buffer) => ws.send(`pong:${Buffer.from(data).toString("hex")}`));
      ws.ping(Buffer.from(peer.query.get("payload") ?? "", "hex"));
      return;
    }
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (ws.readyState === "open") ws.send(data, { binary: isBinary });
    });
  });
  const waiting = new Map<string, (peer: ServerPeer) => void>();
  server.on("connection", (_ws: WebSocketConnection, req: UpgradeHttpRequest) => {
    const id = new URL(req.url ?? "/", "ws://localhost").searchParams.get("id");
    const peer = peers.all.at(-1);
    if (id !== null && peer?.req === req) waiting.get(id)?.(peer);
  });
  const peer = (id: string, ms = DEFAULT_WAIT_MS): Promise<ServerPeer> => {
    const found = peers.all.find((p) => p.query.get("id") === id);
    if (found) return Promise.resolve(found);
    const arrived = new Promise<ServerPeer>((resolve) => waiting.set(id, resolve));
    return within(arrived, ms, `the server's connection event for id=${id}`).finally(() =>
      waiting.delete(id),
    );
  };
  return {
    server,
    url: (path = "/echo") => server.url(path),
    peers,
    peer,
    close: () => within(server.close(), DEFAULT_WAIT_MS, "the Switchboard server to close"),
  };
}

export interface FrameHeader {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  masked: boolean;
  length: number;
}

/**
 * Reads frame headers (RFC 6455 section 5.2) from the bytes a socket receives, skipping
 * payloads. With `afterHttpHead` it first skips the HTTP response of the opening handshake.
 */
export class FrameTap {
  readonly frames: FrameHeader[] = [];
  private pending: Buffer = Buffer.alloc(0);
  private payloadLeft = 0;
  private inHttpHead: boolean;

  constructor(socket: Socket, options: { afterHttpHead?: boolean } = {}) {
    this.inHttpHead = options.afterHttpHead ?? false;
    socket.on("data", (chunk: Buffer) => this.feed(chunk));
  }

  /** Data frames and continuation frames only, in wire order. */
  get dataFrames(): FrameHeader[] {
    return this.frames.filter((f) => f.opcode < 0x8);
  }

  private feed(chunk: Buffer): void {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    if (this.inHttpHead) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        this.pending = Buffer.from(buf);
        return;
      }
      this.inHttpHead = false;
      buf = buf.subarray(end + 4);
    }
    let offset = 0;
    // Each pass consumes a header or a payload slice, or stops for more bytes.
    while (offset < buf.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, buf.length - offset);
        this.payloadLeft -= n;
        offset += n;
        continue;
      }
      const available = buf.length - offset;
      if (available < 2) break;
      const b0 = buf[offset];
      const b1 = buf[offset + 1];
      let length = b1 & 0x7f;
      let headerLength = 2;
      if (length === 126) {
        if (available < 4) break;
        length = buf.readUInt16BE(offset + 2);
        headerLength = 4;
      } else if (length === 127) {
        if (available < 10) break;
        length = Number(buf.readBigUInt64BE(offset + 2));
        headerLength = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      if (masked) headerLength += 4;
      if (available < headerLength) break;
      this.frames.push({
        fin: (b0 & 0x80) !== 0,
        rsv1: (b0 & 0x40) !== 0,
        opcode: b0 & 0x0f,
        masked,
        length,
      });
      offset += headerLength;
      this.payloadLeft = length;
    }
    this.pending = Buffer.from(buf.subarray(offset));
  }
}

/** Splits bytes into `count` nearly equal, non-empty pieces (fewer if there are fewer bytes). */
export function splitBytes(data: Uint8Array, count: number): Buffer[] {
  const pieces: Buffer[] = [];
  const size = Math.max(1, Math.ceil(data.length / count));
  for (let offset = 0; offset < data.length; offset += size) {
    pieces.push(Buffer.from(data.subarray(offset, offset + size)));
  }
  return pieces;
}

export async function* fromArray<T>(items: readonly T[]): AsyncGenerator<T> {
  for (const item of items) {
    // Yield to the event loop between fragments, as a real producer would.
    await new Promise((resolve) => setImmediate(resolve));
    yield item;
  }
}

/**
 * A readable rendering of a connection's `extensions`, whatever shape it has (a header string,
 * a list, a map or a plain object keyed by extension name).
 */
export function describeExtensions(extensions: unknown): string {
  if (extensions === undefined || extensions === null) return "";
  if (typeof extensions === "string") return extensions;
  if (Array.isArray(extensions)) return extensions.map(describeExtensions).join(", ");
  if (extensions instanceof Map) return [...extensions.keys()].join(", ");
  if (typeof extensions === "object") return JSON.stringify(extensions);
  return String(extensions);
}

/**
 * A set whose members are terminated after each test, so a test that fails half-way leaves no
 * connection open for the next one.
 */
export function terminatedAfterEach<T extends { terminate(): void }>(): Set<T> {
  const open = new Set<T>();
  afterEach(() => {
    for (const end of open) end.terminate();
    open.clear();
  });
  return open;
}

/** Reads a `Sec-WebSocket-Extensions` value into `{ extensionName: { param: value } }`. */
export function parseExtensions(
  header: string | undefined,
): Record<string, Record<string, string | true>> {
  const result: Record<string, Record<string, string | true>> = {};
  if (!header) return result;
  for (const offer of header.split(",")) {
    const [name, ...params] = offer.split(";").map((s) => s.trim());
    if (!name) continue;
    const parsed: Record<string, string | true> = {};
    for (const param of params) {
      const [key, value] = param.split("=").map((s) => s.trim());
      parsed[key] = value === undefined ? true : value.replace(/^"|"$/g, "");
    }
    result[name] = parsed;
  }
  return result;
}

/**
 * Checks the permessage-deflate parameters of a parsed `Sec-WebSocket-Extensions` value against
 * `expected` (values or asymmetric matchers); parameters it does not name are not checked.
 */
export function expectDeflateParams(
  extensions: ReturnType<typeof parseExtensions>,
  expected: Record<string, unknown>,
  what: string,
): void {
  const params = extensions["permessage-deflate"] ?? {};
  for (const [key, value] of Object.entries(expected)) {
    expect(params[key], `${what} parameter ${key}`).toEqual(value);
  }
}
