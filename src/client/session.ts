import type { TopicPosition } from "../services/define.js";
import { Emitter, type Unsubscribe } from "./emitter.js";

/**
 * The reconnecting session behind `switchboard/client`, the same code in browsers and in Node.
 *
 * A session keeps one logical connection to a service across the real ones: when a connection
 * drops it dials again after an exponential backoff with jitter, queues what is sent meanwhile,
 * and asks the server to resume every topic it follows from the last position it saw (the
 * `resume` query parameter that `client.subscribe(topic)` reads on the server, see
 * src/services/resume.ts). Topic messages that arrive in envelopes carry their position, so the
 * session can also drop one it has already delivered.
 *
 * This module does no I/O of its own and imports nothing from Node: sockets come from a `Dial`
 * (dial-node.ts over our own client, dial-browser.ts over the browser's WebSocket), and timers
 * and randomness are options, so every decision here can be tested without sleeping.
 *
 * State is data: the session is in one of four states and moves only along TRANSITIONS.
 *
 *   connecting ──opened──▶ open
 *       ▲  │ failed           │ lost
 *       │  └──────────────────┴──▶ reconnecting
 *       └── backoff elapsed, or the browser is online again ──┘
 *
 *   any state ── close(), or a close not worth retrying ──▶ closed (final)
 */

export type { TopicPosition };

// ─────────────────────────── errors ───────────────────────────

export type SessionErrorCode =
  /** send() while not open, with `maxQueued` messages already waiting. */
  | "SB_CLIENT_QUEUE_FULL"
  /** json() on a message that is not JSON, or sendJson() of a value JSON cannot represent. */
  | "SB_CLIENT_BAD_JSON"
  /** send() after the session was closed. */
  | "SB_CLIENT_CLOSED"
  /** An option out of range; the message names it. */
  | "SB_CLIENT_BAD_OPTION"
  | "SB_CLIENT_BAD_URL"
  /** close() with a code or reason a browser would refuse. */
  | "SB_CLIENT_BAD_CLOSE"
  /** A connection attempt failed (the cause says why); the session retries if it may. */
  | "SB_CLIENT_DIAL_FAILED"
  /** An open connection reported an error; its close follows. */
  | "SB_CLIENT_TRANSPORT"
  /** `maxAttempts` reconnection attempts failed in a row; the session is closed. */
  | "SB_CLIENT_GAVE_UP"
  /** A listener or the `shouldReconnect` callback threw. */
  | "SB_CLIENT_LISTENER_FAILED"
  /** A move the transition table does not allow: a bug in the session. */
  | "SB_CLIENT_ILLEGAL_TRANSITION";

export class SessionError extends Error {
  override readonly name = "SessionError";
  constructor(
    readonly code: SessionErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// ─────────────────────────── the dial contract ───────────────────────────

/**
 * What a dial reports about one connection attempt. None of these is called during `dial()`
 * itself; `open` at most once; `close` exactly once, also when the connection never opened (a
 * failed connection closes with 1006), and nothing after it. `error` only adds detail (a browser
 * has none to give); a `close` always follows it.
 */
export interface DialHandlers {
  open(protocol: string): void;
  /** Text as a string, binary as bytes. */
  message(data: string | Uint8Array, isBinary: boolean): void;
  close(code: number, reason: string): void;
  error(error: unknown): void;
}

/** One connection attempt, as the session drives it. */
export interface DialTransport {
  /** Only called once open: strings as text messages, bytes as binary ones. */
  send(data: string | Uint8Array): void;
  /** May be called before open, which abandons the attempt; `close` is still reported. */
  close(code?: number, reason?: string): void;
  /** Bytes sent and not yet handed to the network. */
  readonly bufferedAmount: number;
}

/** Opens one WebSocket connection to `url`, offering `protocols`. */
export type Dial = (url: string, protocols: string[], handlers: DialHandlers) => DialTransport;

// ─────────────────────────── options ───────────────────────────

export interface BackoffOptions {
  /** The delay before the first reconnection attempt, before jitter. */
  initialMs: number;
  /** No delay grows past this. */
  maxMs: number;
  /** Each failed attempt multiplies the delay by this. */
  factor: number;
  /**
   * How much of the delay is random, in [0, 1]: delay = base × (1 − jitter × random()), so
   * clients dropped together by one server restart do not all come back in the same instant.
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialMs: 250,
  maxMs: 10_000,
  factor: 2,
  jitter: 0.5,
});

/** The timer functions the session uses; tests pass their own to drive the backoff by hand. */
export interface SessionTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface SessionOptions {
  /** Opens the connections; `switchboard/client` fills in the one for its environment. */
  dial?: Dial;
  /** Subprotocols to offer (Sec-WebSocket-Protocol). */
  protocols?: string[];
  backoff?: Partial<BackoffOptions>;
  /** Reconnection attempts in a row, without an open between them, before giving up. */
  maxAttempts?: number;
  /** Whether a close from the server or the network is worth reconnecting after. */
  shouldReconnect?: (code: number, reason: string) => boolean;
  /** Messages send() keeps while not open; past it send() throws SB_CLIENT_QUEUE_FULL. */
  maxQueued?: number;
  /** Ask the server to resume topics from the last positions seen (default true). */
  resume?: boolean;
  /** Positions to resume from on the first connection too (kept from an earlier session). */
  positions?: ReadonlyMap<string, TopicPosition> | Readonly<Record<string, TopicPosition>>;
  /** In [0, 1), for the jitter; Math.random by default. */
  random?: () => number;
  timers?: SessionTimers;
}

// ─────────────────────────── events ───────────────────────────

export type SessionState = "connecting" | "open" | "reconnecting" | "closed";

export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

/** A change of state, with the close that caused it (or the last one before it). */
export type StateEvent =
  | {
      readonly state: "connecting";
      /** 0 for the first connection, n for the nth reconnection attempt in a row. */
      readonly attempt: number;
      readonly lastClose: CloseInfo | null;
    }
  | { readonly state: "open"; readonly lastClose: CloseInfo | null }
  | {
      readonly state: "reconnecting";
      /** The attempt that comes after the delay (1 for the first). */
      readonly attempt: number;
      readonly delayMs: number;
      readonly lastClose: CloseInfo;
    }
  | { readonly state: "closed"; readonly lastClose: CloseInfo };

export interface OpenEvent {
  /** The negotiated subprotocol, or "". */
  readonly protocol: string;
  /** This connection asked the server to resume topics (it carried a `resume` parameter). */
  readonly resumed: boolean;
}

export interface CloseEvent extends CloseInfo {
  /** False once: when the session ends. */
  readonly willReconnect: boolean;
}

/** A message that is not a topic envelope. */
export interface SessionMessage {
  readonly data: string | Uint8Array;
  readonly isBinary: boolean;
  /** The data parsed as JSON (bytes as UTF-8); throws SB_CLIENT_BAD_JSON. */
  json<T = unknown>(): T;
}

/** A message of a topic delivered in an envelope, with its position in the topic's stream. */
export interface TopicMessage {
  readonly topic: string;
  readonly epoch: string;
  readonly offset: number;
  /** A string, or the bytes a binary publish carried (`data64` in the envelope). */
  readonly data: string | Uint8Array;
  readonly isBinary: boolean;
  /** The data parsed as JSON (bytes as UTF-8); throws SB_CLIENT_BAD_JSON. */
  json<T = unknown>(): T;
}

export interface SessionEvents {
  state: StateEvent;
  open: OpenEvent;
  message: SessionMessage;
  topic: TopicMessage;
  /** Every connection that closes (or fails), and once more never: see `willReconnect`. */
  close: CloseEvent;
  /** Details; the session goes on unless a `close` with `willReconnect: false` follows. */
  error: SessionError;
}

export interface SessionStats {
  /** Connections opened. */
  opens: number;
  /** Topic messages dropped because their position had already been delivered. */
  duplicates: number;
  /** Times the offsets of one epoch skipped ahead: messages the session never got. */
  gaps: number;
}

export interface Session {
  /** The URL as given, normalized (connections add `resume` to it). */
  readonly url: string;
  readonly state: SessionState;
  /** The subprotocol of the open connection, or "". */
  readonly protocol: string;
  /** The last position delivered per topic, least recently updated first; a live view. */
  readonly positions: ReadonlyMap<string, TopicPosition>;
  /** A snapshot of the counters. */
  readonly stats: Readonly<SessionStats>;
  /** Messages waiting for a connection. */
  readonly queued: number;
  /** Bytes the open connection has not yet handed to the network (0 when not open). */
  readonly bufferedAmount: number;
  /**
   * Sends now when open, otherwise queues for the next connection. Messages given to a
   * connection that then drops are not sent again: what must arrive needs an answer.
   */
  send(data: string | Uint8Array | ArrayBuffer): void;
  /** send(JSON.stringify(value)) as a text message. */
  sendJson(value: unknown): void;
  /** Ends the session for good: no reconnection, queued messages dropped. Code 1000 or 3000-4999. */
  close(code?: number, reason?: string): void;
  /** Stops resuming a topic (after unsubscribing from it). */
  forget(topic: string): boolean;
  on<K extends keyof SessionEvents>(
    event: K,
    listener: (value: SessionEvents[K]) => void,
  ): Unsubscribe;
  once<K extends keyof SessionEvents>(
    event: K,
    listener: (value: SessionEvents[K]) => void,
  ): Unsubscribe;
  off<K extends keyof SessionEvents>(event: K, listener: (value: SessionEvents[K]) => void): void;
}

export function createSession(url: string, options: SessionOptions = {}): Session {
  return new ReconnectingSession(url, options);
}

// ─────────────────────────── policy: pure functions ───────────────────────────

/** Every move the session may make; any other is a bug and throws. */
const TRANSITIONS: { readonly [S in SessionState]: readonly SessionState[] } = {
  connecting: ["open", "reconnecting", "closed"],
  open: ["reconnecting", "closed"],
  reconnecting: ["connecting", "closed"],
  closed: [],
};

/**
 * Closes worth another try (RFC 6455 section 7.4.1 and the IANA registry): 1001 going away (a
 * server shutting down or restarting), 1005 and 1006 (no close frame: the network or a crash),
 * 1011 internal error (a service that crashed is restarted), 1012 service restart, 1013 try
 * again later (overload, or a slow consumer closed by a topic policy), 1014 bad gateway.
 * Not retried: 1000 (the server said it is done), 1002, 1003, 1007, 1009, 1010 (retrying
 * repeats the same mistake), 1008 policy (auth, limits) and 4000-4999, which a service sends on
 * purpose; nor any other code.
 */
const RECONNECT_CODES: ReadonlySet<number> = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014]);

export function defaultShouldReconnect(code: number, _reason = ""): boolean {
  return RECONNECT_CODES.has(code);
}

/** The delay before reconnection attempt `attempt` (1 for the first), `random` in [0, 1). */
export function backoffDelay(attempt: number, backoff: BackoffOptions, random: number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** (attempt - 1));
  return base * (1 - backoff.jitter * random);
}

/** The query parameter the server reads (src/services/resume.ts). */
export const RESUME_PARAMETER = "resume";
/** The server ignores a `resume` naming more topics than this, so the session sends no more. */
export const MAX_RESUME_TOPICS = 64;

/**
 * `url` with `resume` set to the positions, replacing one already there:
 * `{"<topic>":{"epoch":"...","offset":n}}`. Past MAX_RESUME_TOPICS, the most recently updated.
 */
export function withResume(url: string, positions: ReadonlyMap<string, TopicPosition>): string {
  if (positions.size === 0) return url;
  // No prototype: a topic named "__proto__" stays a key.
  const value: Record<string, TopicPosition> = Object.create(null);
  for (const [topic, { epoch, offset }] of [...positions].slice(-MAX_RESUME_TOPICS)) {
    value[topic] = { epoch, offset };
  }
  const target = new URL(url);
  target.searchParams.set(RESUME_PARAMETER, JSON.stringify(value));
  return target.href;
}

export interface Envelope {
  topic: string;
  epoch: string;
  offset: number;
  data: string | Uint8Array;
  isBinary: boolean;
}

/**
 * A topic message in its envelope (docs/topics.md): a JSON object with a string `topic`, a
 * string `epoch`, an integer `offset` and the payload as `data` (text) or `data64` (base64
 * bytes). Anything else is null: an ordinary message.
 */
export function parseEnvelope(text: string): Envelope | null {
  // Cheap test first: most messages of most services are not envelopes.
  if (text.charCodeAt(0) !== 0x7b || !text.includes('"topic"')) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const { topic, epoch, offset, data, data64 } = value as Record<string, unknown>;
  if (typeof topic !== "string" || typeof epoch !== "string") return null;
  if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) return null;
  if (typeof data === "string") return { topic, epoch, offset, data, isBinary: false };
  if (typeof data64 !== "string") return null;
  const bytes = decodeBase64(data64);
  return bytes === null ? null : { topic, epoch, offset, data: bytes, isBinary: true };
}

function decodeBase64(text: string): Uint8Array | null {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** For text a dial handed over as bytes; the connection already checked it is UTF-8. */
const lenientUtf8 = new TextDecoder("utf-8");
const encoder = new TextEncoder();

/** How much of a bad message an error quotes: enough to recognise it, not a whole payload. */
const QUOTE_CHARS = 64;

function parseJson(data: string | Uint8Array, where: string): unknown {
  let text: string;
  try {
    text = typeof data === "string" ? data : utf8.decode(data);
  } catch (error) {
    throw new SessionError("SB_CLIENT_BAD_JSON", `${where} is not UTF-8`, { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    const quoted = text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}…` : text;
    throw new SessionError(
      "SB_CLIENT_BAD_JSON",
      `${where} is not JSON (${describe(error)}): ${JSON.stringify(quoted)}`,
      { cause: error },
    );
  }
}

function rawMessage(data: string | Uint8Array, isBinary: boolean): SessionMessage {
  return {
    data,
    isBinary,
    json: <T>() => parseJson(data, isBinary ? "a binary message" : "a message") as T,
  };
}

function topicMessage(envelope: Envelope): TopicMessage {
  const { topic, epoch, offset, data, isBinary } = envelope;
  return {
    topic,
    epoch,
    offset,
    data,
    isBinary,
    json: <T>() =>
      parseJson(data, `the message of topic ${JSON.stringify(topic)} at ${epoch}:${offset}`) as T,
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function optionError(message: string): SessionError {
  return new SessionError("SB_CLIENT_BAD_OPTION", message);
}

function readBackoff(given: Partial<BackoffOptions> | undefined): BackoffOptions {
  const backoff = { ...DEFAULT_BACKOFF, ...given };
  const { initialMs, maxMs, factor, jitter } = backoff;
  if (!(Number.isFinite(initialMs) && initialMs >= 0)) {
    throw optionError(`backoff.initialMs must be a finite number >= 0, not ${initialMs}`);
  }
  // Longer than a 32-bit millisecond count, setTimeout fires at once.
  if (!(maxMs >= initialMs && maxMs <= MAX_TIMER_MS)) {
    throw optionError(`backoff.maxMs must be in [initialMs, ${MAX_TIMER_MS}], not ${maxMs}`);
  }
  if (!(Number.isFinite(factor) && factor >= 1)) {
    throw optionError(`backoff.factor must be a finite number >= 1, not ${factor}`);
  }
  if (!(jitter >= 0 && jitter <= 1)) {
    throw optionError(`backoff.jitter must be in [0, 1], not ${jitter}`);
  }
  return backoff;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Subprotocols are distinct tokens (RFC 6455 section 4.1, RFC 7230 section 3.2.6). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function readProtocols(given: readonly string[] | undefined): string[] {
  const protocols = [...(given ?? [])];
  if (!protocols.every((p) => typeof p === "string" && TOKEN.test(p))) {
    throw optionError(`protocols must be tokens, not ${JSON.stringify(protocols)}`);
  }
  if (new Set(protocols).size !== protocols.length) {
    throw optionError(`protocols must be distinct, not ${JSON.stringify(protocols)}`);
  }
  return protocols;
}

function isCount(value: number): boolean {
  return value === Number.POSITIVE_INFINITY || (Number.isSafeInteger(value) && value >= 0);
}

function isPosition(value: unknown): value is TopicPosition {
  if (typeof value !== "object" || value === null) return false;
  const { epoch, offset } = value as Record<string, unknown>;
  return (
    typeof epoch === "string" &&
    epoch !== "" &&
    typeof offset === "number" &&
    Number.isSafeInteger(offset) &&
    offset >= 0
  );
}

/** Browsers resolve a relative URL against the page and accept http(s) for ws(s). */
function normalizeUrl(url: string): string {
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  let target: URL;
  try {
    target = new URL(url, base);
  } catch {
    throw new SessionError("SB_CLIENT_BAD_URL", `not a URL: ${JSON.stringify(url)}`);
  }
  if (target.protocol === "http:") target.protocol = "ws:";
  else if (target.protocol === "https:") target.protocol = "wss:";
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new SessionError("SB_CLIENT_BAD_URL", `unsupported URL scheme "${target.protocol}"`);
  }
  if (target.hash !== "") {
    throw new SessionError("SB_CLIENT_BAD_URL", "WebSocket URLs have no fragment");
  }
  return target.href;
}

/** Browsers let a page send only these codes (WebSockets standard, close() step 1). */
function checkClose(code: number, reason: string): void {
  if (!(code === 1000 || (Number.isInteger(code) && code >= 3000 && code <= 4999))) {
    throw new SessionError("SB_CLIENT_BAD_CLOSE", `close code ${code} is not 1000 or 3000-4999`);
  }
  // RFC 6455 section 5.5: the close payload is at most 125 bytes, two of them the code.
  if (encoder.encode(reason).length > 123) {
    throw new SessionError("SB_CLIENT_BAD_CLOSE", "a close reason is at most 123 bytes of UTF-8");
  }
}

const defaultTimers: SessionTimers = {
  // Wrapped: a browser's setTimeout refuses to be called on another object.
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

// ─────────────────────────── the session ───────────────────────────

/** One connection attempt and what the session knows of it. */
interface Link {
  transport: DialTransport | null;
  /** False once closed or abandoned: its late reports are ignored. */
  live: boolean;
  opened: boolean;
  protocol: string;
}

interface OnlineTarget {
  addEventListener?: (type: string, listener: () => void) => void;
  removeEventListener?: (type: string, listener: () => void) => void;
}

class ReconnectingSession extends Emitter<SessionEvents> implements Session {
  readonly url: string;
  private readonly dial: Dial;
  private readonly protocols: string[];
  private readonly backoff: BackoffOptions;
  private readonly maxAttempts: number;
  private readonly reconnects: (code: number, reason: string) => boolean;
  private readonly maxQueued: number;
  private readonly resume: boolean;
  private readonly random: () => number;
  private readonly timers: SessionTimers;

  private current: SessionState = "connecting";
  /**
   * Bumped on every transition. Events go out after the state changed; when a listener moves
   * the session again (close() from a 'state' listener), what the old state would have
   * emitted next is stale and is skipped.
   */
  private transitions = 0;
  private link: Link | null = null;
  /** Reconnection attempts since the last open. */
  private attempt = 0;
  private delayMs = 0;
  private lastClose: CloseInfo | null = null;
  private timer: unknown = null;
  private stopListeningOnline: (() => void) | null = null;
  private stopListeningOffline: (() => void) | null = null;
  private readonly queue: Array<string | Uint8Array> = [];
  private readonly topicPositions = new Map<string, TopicPosition>();
  private readonly counters: SessionStats = { opens: 0, duplicates: 0, gaps: 0 };

  constructor(url: string, options: SessionOptions) {
    super();
    this.url = normalizeUrl(url);
    if (typeof options.dial !== "function") {
      throw optionError("dial is required (switchboard/client provides one)");
    }
    this.dial = options.dial;
    // Checked once here: a dial would refuse them on every attempt.
    this.protocols = readProtocols(options.protocols);
    this.backoff = readBackoff(options.backoff);
    this.maxAttempts = options.maxAttempts ?? Number.POSITIVE_INFINITY;
    if (!isCount(this.maxAttempts)) {
      throw optionError(`maxAttempts must be an integer >= 0, not ${this.maxAttempts}`);
    }
    this.reconnects = options.shouldReconnect ?? defaultShouldReconnect;
    this.maxQueued = options.maxQueued ?? 100;
    if (!isCount(this.maxQueued)) {
      throw optionError(`maxQueued must be an integer >= 0, not ${this.maxQueued}`);
    }
    this.resume = options.resume ?? true;
    this.random = options.random ?? Math.random;
    this.timers = options.timers ?? defaultTimers;
    const given = options.positions;
    if (given !== undefined) {
      const entries = given instanceof Map ? [...given] : Object.entries(given);
      for (const [topic, position] of entries) {
        if (!isPosition(position)) {
          throw optionError(`positions: ${JSON.stringify(topic)} needs a string epoch and offset`);
        }
        this.topicPositions.set(topic, Object.freeze({ ...position }));
      }
    }
    this.listenOffline();
    this.connect();
  }

  get state(): SessionState {
    return this.current;
  }

  get protocol(): string {
    return this.link?.opened ? this.link.protocol : "";
  }

  get positions(): ReadonlyMap<string, TopicPosition> {
    return this.topicPositions;
  }

  get stats(): Readonly<SessionStats> {
    return { ...this.counters };
  }

  get queued(): number {
    return this.queue.length;
  }

  get bufferedAmount(): number {
    return this.current === "open" ? (this.link?.transport?.bufferedAmount ?? 0) : 0;
  }

  send(data: string | Uint8Array | ArrayBuffer): void {
    const payload =
      typeof data === "string"
        ? data
        : ArrayBuffer.isView(data)
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : new Uint8Array(data);
    if (this.current === "closed") {
      throw new SessionError("SB_CLIENT_CLOSED", "send() on a closed session");
    }
    const transport = this.link?.transport;
    if (this.current === "open" && transport != null) {
      transport.send(payload);
      return;
    }
    if (this.queue.length >= this.maxQueued) {
      throw new SessionError(
        "SB_CLIENT_QUEUE_FULL",
        `${this.queue.length} messages already wait for a connection (maxQueued)`,
      );
    }
    // A copy: the caller may reuse its buffer before the connection is back.
    this.queue.push(typeof payload === "string" ? payload : payload.slice());
  }

  sendJson(value: unknown): void {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (error) {
      throw new SessionError("SB_CLIENT_BAD_JSON", `sendJson(): ${describe(error)}`, {
        cause: error,
      });
    }
    if (text === undefined) {
      throw new SessionError("SB_CLIENT_BAD_JSON", `sendJson(): JSON has no ${typeof value}`);
    }
    this.send(text);
  }

  close(code = 1000, reason = ""): void {
    if (this.current === "closed") return;
    checkClose(code, reason);
    const link = this.link;
    this.link = null;
    if (link !== null) {
      link.live = false;
      try {
        link.transport?.close(code, reason);
      } catch (error) {
        // The session ends all the same; a dial that cannot close says why.
        this.fail("SB_CLIENT_TRANSPORT", error, "closing the connection failed");
      }
    }
    this.finish({ code, reason });
  }

  forget(topic: string): boolean {
    return this.topicPositions.delete(topic);
  }

  protected override listenerFailed(event: keyof SessionEvents, error: unknown): void {
    if (event !== "error" && this.listenerCount("error") > 0) {
      this.fail("SB_CLIENT_LISTENER_FAILED", error, `a "${event}" listener threw`);
    } else {
      super.listenerFailed(event, error);
    }
  }

  // ── moves ──

  private move(next: SessionState): number {
    if (!TRANSITIONS[this.current].includes(next)) {
      throw new SessionError("SB_CLIENT_ILLEGAL_TRANSITION", `${this.current} -> ${next}`);
    }
    this.current = next;
    return ++this.transitions;
  }

  /** Emits the state event; false when a listener moved the session on meanwhile. */
  private announce(mark: number): boolean {
    this.emit("state", this.stateEvent());
    return this.transitions === mark;
  }

  private stateEvent(): StateEvent {
    const lastClose = this.lastClose;
    switch (this.current) {
      case "connecting":
        return { state: "connecting", attempt: this.attempt, lastClose };
      case "open":
        return { state: "open", lastClose };
      case "reconnecting":
        return {
          state: "reconnecting",
          attempt: this.attempt,
          delayMs: this.delayMs,
          lastClose: lastClose!,
        };
      case "closed":
        return { state: "closed", lastClose: lastClose! };
    }
  }

  /** Dials once. Reports of a link that is no longer the session's are ignored. */
  private connect(): void {
    const resumed = this.resume && this.topicPositions.size > 0;
    const url = resumed ? withResume(this.url, this.topicPositions) : this.url;
    const link: Link = { transport: null, live: true, opened: false, protocol: "" };
    this.link = link;
    // A dial must not report during dial(); one that does is deferred rather than trusted.
    let dialling = true;
    const report = (deliver: () => void): void => {
      if (dialling) void Promise.resolve().then(deliver);
      else deliver();
    };
    const handlers: DialHandlers = {
      open: (protocol) =>
        report(() => {
          if (link.live && !link.opened) this.opened(link, protocol, resumed);
        }),
      message: (data, isBinary) =>
        report(() => {
          if (link.live && link.opened) this.received(data, isBinary);
        }),
      close: (code, reason) =>
        report(() => {
          if (!link.live) return;
          link.live = false;
          this.lost(link, code, reason);
        }),
      error: (error) =>
        report(() => {
          if (link.live) {
            this.fail(link.opened ? "SB_CLIENT_TRANSPORT" : "SB_CLIENT_DIAL_FAILED", error);
          }
        }),
    };
    try {
      link.transport = this.dial(url, this.protocols, handlers);
    } catch (error) {
      // Like a socket that failed at once: reported on a later turn, then retried if allowed.
      handlers.error(error);
      handlers.close(1006, describe(error));
    } finally {
      dialling = false;
    }
  }

  private opened(link: Link, protocol: string, resumed: boolean): void {
    // No transport: the dial threw after reporting the open, and its close is on the way.
    const transport = link.transport;
    if (transport === null) return;
    link.opened = true;
    link.protocol = protocol;
    this.attempt = 0;
    this.counters.opens++;
    const mark = this.move("open");
    // Queued messages leave first, before anything a listener sends when it hears of the open.
    for (const data of this.queue.splice(0)) transport.send(data);
    if (!this.announce(mark)) return;
    this.emit("open", { protocol, resumed });
  }

  private received(data: string | Uint8Array, isBinary: boolean): void {
    if (!isBinary) {
      const text = typeof data === "string" ? data : lenientUtf8.decode(data);
      const envelope = parseEnvelope(text);
      if (envelope !== null) {
        this.deliver(envelope);
        return;
      }
      data = text;
    }
    this.emit("message", rawMessage(data, isBinary));
  }

  private deliver(envelope: Envelope): void {
    const last = this.topicPositions.get(envelope.topic);
    if (last !== undefined && last.epoch === envelope.epoch) {
      // Replayed after a reconnect that asked for less than the server sent, or sent twice.
      if (envelope.offset <= last.offset) {
        this.counters.duplicates++;
        return;
      }
      if (envelope.offset > last.offset + 1) this.counters.gaps++;
    }
    // Re-inserted so the map runs from least to most recently updated: when `resume` cannot
    // name every topic, it names the newest.
    this.topicPositions.delete(envelope.topic);
    this.topicPositions.set(
      envelope.topic,
      Object.freeze({ epoch: envelope.epoch, offset: envelope.offset }),
    );
    this.emit("topic", topicMessage(envelope));
  }

  private lost(link: Link, code: number, reason: string): void {
    if (this.link === link) this.link = null;
    const close: CloseInfo = { code, reason };
    this.lastClose = close;
    let again: boolean;
    try {
      again = this.reconnects(code, reason) === true;
    } catch (error) {
      this.fail("SB_CLIENT_LISTENER_FAILED", error, "shouldReconnect threw");
      again = false;
    }
    if (again && this.attempt >= this.maxAttempts) {
      this.emit(
        "error",
        new SessionError(
          "SB_CLIENT_GAVE_UP",
          `${this.attempt} reconnection attempts failed (maxAttempts); last close ${code}`,
        ),
      );
      again = false;
    }
    // An 'error' listener may have closed the session already.
    if (this.current === "closed") return;
    if (!again) {
      this.finish(close);
      return;
    }
    this.attempt++;
    this.delayMs = backoffDelay(this.attempt, this.backoff, this.random());
    const mark = this.move("reconnecting");
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.retry();
    }, this.delayMs);
    this.listenOnline();
    if (!this.announce(mark)) return;
    this.emit("close", { code, reason, willReconnect: true });
  }

  /** The backoff elapsed, or the browser came back online: dial now. */
  private retry(): void {
    if (this.current !== "reconnecting") return;
    this.stopWaiting();
    const mark = this.move("connecting");
    if (!this.announce(mark)) return;
    this.connect();
  }

  private finish(close: CloseInfo): void {
    if (this.current === "closed") return;
    this.stopWaiting();
    this.stopListeningOffline?.();
    this.stopListeningOffline = null;
    this.queue.length = 0;
    this.lastClose = close;
    const mark = this.move("closed");
    if (!this.announce(mark)) return;
    this.emit("close", { ...close, willReconnect: false });
  }

  private stopWaiting(): void {
    if (this.timer !== null) {
      this.timers.clearTimeout(this.timer);
      this.timer = null;
    }
    this.stopListeningOnline?.();
    this.stopListeningOnline = null;
  }

  /**
   * A browser that reports it is online again has a network worth trying at once, rather than
   * after the rest of a backoff that may have grown long while it was offline.
   */
  private listenOnline(): void {
    const target = globalThis as OnlineTarget;
    if (typeof target.addEventListener !== "function") return;
    if (typeof target.removeEventListener !== "function") return;
    const onOnline = (): void => this.retry();
    target.addEventListener("online", onOnline);
    this.stopListeningOnline = () => target.removeEventListener?.("online", onOnline);
  }

  /**
   * A browser that reports it went offline has lost its connection, though TCP may take
   * minutes to notice (and the page cannot see the server's pings): the session drops it at
   * once and waits for the network to come back, then resumes.
   */
  private listenOffline(): void {
    const target = globalThis as OnlineTarget;
    if (typeof target.addEventListener !== "function") return;
    if (typeof target.removeEventListener !== "function") return;
    const onOffline = (): void => {
      const link = this.link;
      if (link === null || !link.live) return;
      if (this.current !== "open" && this.current !== "connecting") return;
      link.live = false;
      try {
        link.transport?.close();
      } catch {
        // Abandoned either way: its late reports are ignored.
      }
      this.lost(link, 1006, "the browser went offline");
    };
    target.addEventListener("offline", onOffline);
    this.stopListeningOffline = () => target.removeEventListener?.("offline", onOffline);
  }

  private fail(code: SessionErrorCode, cause: unknown, context?: string): void {
    const message = context === undefined ? describe(cause) : `${context}: ${describe(cause)}`;
    this.emit("error", new SessionError(code, message, { cause }));
  }
}
