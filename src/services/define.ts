import { isAbsolute } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "../server/logger.js";

/**
 * The service API: what a module in the service root exports. A service is a plain object of
 * hooks made by `defineService`, the module's default export; the same object runs on the I/O
 * thread, in a worker thread or in a child process, so hooks only see what crosses that
 * boundary: decoded messages, request metadata and per-connection data that can be cloned.
 */

/** Where a service runs. */
export type Isolation = "worker" | "process" | "main";

/** What a module may export as `config` next to its service. */
export interface ServiceConfig {
  /** Where the service runs: its own worker thread (default), a child process or the I/O thread. */
  isolation?: Isolation;
  /** Request headers copied into `client.headers` (lower case). The upgrade hook sees them all. */
  headers?: readonly string[];
  /** Heap limit of the worker or process in MiB; past it the service is restarted. */
  maxHeapMb?: number;
  /** A service that does not answer the watchdog for this long is restarted. */
  watchdogMs?: number;
  /** Largest message accepted from a client; larger ones close with 1009. */
  maxMessageSize?: number;
}

/** A connection request as the upgrade hook sees it. */
export interface UpgradeRequest {
  /** The request path, as the client sent it. */
  readonly path: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** Every request header, names in lower case; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  readonly remoteAddress: string;
  /** Subprotocols the client offered (Sec-WebSocket-Protocol), in its order of preference. */
  readonly protocols: readonly string[];
}

/** Refuses a connection from the upgrade hook: the client gets this HTTP status and body. */
export interface UpgradeRejection {
  readonly reject: { readonly status: number; readonly reason: string };
}

/** Accepts a connection from the upgrade hook, with its per-connection data and subprotocol. */
export interface UpgradeAcceptance<Data> {
  readonly data?: Data;
  /** One of `request.protocols`. */
  readonly protocol?: string;
}

// biome-ignore lint/suspicious/noConfusingVoidType: a hook that returns nothing accepts.
export type UpgradeResult<Data> = UpgradeAcceptance<Data> | UpgradeRejection | undefined | void;

/** Builds the upgrade hook's refusal: `return reject(401, "login required")`. */
export function reject(status: number, reason = ""): UpgradeRejection {
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    throw new RangeError(`reject() takes a 4xx or 5xx status, not ${status}`);
  }
  return { reject: { status, reason } };
}

/** One message from a client. */
export interface ServiceMessage {
  readonly isBinary: boolean;
  /** The payload as bytes (the same bytes on every call, no copy; yours to keep). */
  bytes(): Uint8Array;
  /** The payload decoded as UTF-8. */
  text(): string;
  /** The payload parsed as JSON; throws a SyntaxError on bad JSON. */
  json<T = unknown>(): T;
}

/**
 * Outgoing data: strings go as text messages, bytes as binary ones, and a received message is
 * forwarded as it came (text stays text, with no second UTF-8 check).
 */
export type SendData = string | Uint8Array | ArrayBuffer | ServiceMessage;

export interface SendOptions {
  /** Send a string as binary or bytes as text (bytes must then be valid UTF-8). */
  binary?: boolean;
}

export interface SubscribeOptions {
  /** Receives the topic's messages without being listed or counted as a member. */
  silent?: boolean;
  /** The record `ctx.presence(topic)` lists for this client (a user name, say); JSON. */
  member?: unknown;
  /**
   * Replays what the client missed after this position before the live stream. When omitted,
   * the position the client sent for this topic in its `resume` query parameter (what the
   * `switchboard/client` session sends when it reconnects), if any; `null` starts live whatever
   * the client sent.
   */
  since?: TopicPosition | null;
  /**
   * When there is no position to resume from: replay up to this many of the latest messages
   * the topic keeps (its history policy) before the live stream — a chat room's recent history.
   */
  recent?: number;
}

/** A place in a topic's stream: offsets increase by one per message within an epoch. */
export interface TopicPosition {
  epoch: string;
  offset: number;
}

/** What a subscription found: where the stream is, and whether a gap could be filled. */
export type SubscribeResult =
  | { ok: true; position: TopicPosition; recovered: number }
  | {
      ok: false;
      /**
       * epoch-changed or trimmed: the missed messages are gone, resync from `position`;
       * closed: the client left first; unavailable: the topic engine failed (logged).
       */
      reason: "epoch-changed" | "trimmed" | "closed" | "unavailable";
      position: TopicPosition;
    };

export interface PresenceMember {
  clientId: string;
  info: unknown;
}

export interface PresenceChange {
  type: "join" | "leave";
  topic: string;
  member: PresenceMember;
}

/** One connected client, as a service sees it. */
export interface Client<Data = unknown> extends AsyncIterable<ServiceMessage> {
  /** Unique within this server for its lifetime. */
  readonly id: string;
  readonly remoteAddress: string;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** The request headers named in the service's `config.headers`. */
  readonly headers: Readonly<Record<string, string>>;
  /** The negotiated subprotocol, or "". */
  readonly protocol: string;
  /** True when this client was connected before a reload and is being handed to a new instance. */
  readonly handover: boolean;
  /** False once the client closed or `close()` was called. */
  readonly open: boolean;
  /**
   * Where the client asked to resume each topic (its `resume` query parameter, validated;
   * empty when it sent none or a malformed one). subscribe() uses it when `since` is omitted.
   */
  readonly resume: ReadonlyMap<string, TopicPosition>;
  /** Per-connection state: what the upgrade hook returned as `data`, or `undefined`. */
  data: Data;
  send(data: SendData, options?: SendOptions): void;
  /** Starts the closing handshake (RFC 6455 section 7.1.2); code 1000 when omitted. */
  close(code?: number, reason?: string): void;
  /** Resolves once subscribed (and, with `since`, once the missed messages were sent). */
  subscribe(topic: string, options?: SubscribeOptions): Promise<SubscribeResult>;
  unsubscribe(topic: string): void;
}

export interface BroadcastOptions {
  /** A client (or its id) that does not get the message, such as its sender. */
  except?: Client | string;
}

/** What every hook gets besides its own arguments. */
export interface ServiceContext<Data = unknown> {
  /** The route of the service, such as "chat/[room].ts". */
  readonly name: string;
  /** The clients connected now, by id. */
  readonly clients: ReadonlyMap<string, Client<Data>>;
  /** Sends to every client of this service. */
  broadcast(data: SendData, options?: BroadcastOptions & SendOptions): void;
  /** Sends to every subscriber of a topic, in any service of this server. */
  publish(topic: string, data: SendData, options?: BroadcastOptions & SendOptions): void;
  /** The members of a topic (silent subscribers left out), on every node. */
  presence(topic: string): Promise<PresenceMember[]>;
  /** How many members a topic has; cheap. */
  presenceCount(topic: string): Promise<number>;
  readonly logger: Logger;
  /** The service's configuration, after the server's defaults were applied. */
  readonly config: Readonly<Required<Omit<ServiceConfig, "headers">>> & {
    readonly headers: readonly string[];
  };
}

type Awaitable<T> = T | Promise<T>;

/** The hooks of a service; every one is optional. */
export interface ServiceHooks<Data = unknown, State = unknown> {
  /** Runs once when the service starts, before any connection. */
  start?(ctx: ServiceContext<Data>): Awaitable<void>;
  /** Decides whether a connection is accepted, and with which data. Auth lives here. */
  upgrade?(request: UpgradeRequest, ctx: ServiceContext<Data>): Awaitable<UpgradeResult<Data>>;
  open?(client: Client<Data>, ctx: ServiceContext<Data>): Awaitable<void>;
  /**
   * A message from a client. Without this hook, messages wait for the pull style:
   * `for await (const message of client)`.
   */
  message?(
    client: Client<Data>,
    message: ServiceMessage,
    ctx: ServiceContext<Data>,
  ): Awaitable<void>;
  close?(
    client: Client<Data>,
    code: number,
    reason: string,
    ctx: ServiceContext<Data>,
  ): Awaitable<void>;
  /** A protocol error on a client's connection, or an exception thrown by a hook for it. */
  error?(client: Client<Data>, error: ServiceError, ctx: ServiceContext<Data>): Awaitable<void>;
  /** A member joined or left a topic one of this service's clients is subscribed to. */
  presence?(change: PresenceChange, ctx: ServiceContext<Data>): Awaitable<void>;
  /** Runs once on shutdown, after the clients were closed. */
  stop?(ctx: ServiceContext<Data>): Awaitable<void>;
  /** On hot reload: the state to hand to the new instance (must be structured-cloneable). */
  snapshot?(ctx: ServiceContext<Data>): Awaitable<State>;
  /** On hot reload: receives what the old instance's `snapshot` returned, before any `open`. */
  restore?(state: State, ctx: ServiceContext<Data>): Awaitable<void>;
}

/** An error reported to a service's `error` hook. */
export interface ServiceError extends Error {
  /** A stable code, such as WS_ERR_MESSAGE_TOO_BIG or SB_ERR_HOOK_FAILED. */
  readonly code: string;
}

const SERVICE = Symbol.for("switchboard.service");
const ORIGIN = Symbol.for("switchboard.service.origin");

export interface ServiceDefinition<Data = unknown, State = unknown> {
  readonly [SERVICE]: true;
  readonly hooks: ServiceHooks<Data, State>;
}

/**
 * Where a service was defined: the module that called `defineService` and how many services
 * that module had defined before it. A worker or child process cannot receive the hooks
 * themselves (functions do not cross), so it imports the module again and takes the export
 * with the same origin: top-level code defines its services in the same order every time it
 * runs, and the count, unlike a line number, does not depend on how the module was compiled.
 */
export interface ServiceOrigin {
  /** Absolute path of the module, or undefined where the stack did not name a file. */
  readonly file: string | undefined;
  /** Services the same module defined before this one. */
  readonly ordinal: number;
}

/** Makes a service: the default export of a module in the service root. */
export function defineService<Data = undefined, State = unknown>(
  hooks: ServiceHooks<Data, State>,
): ServiceDefinition<Data, State> {
  if (hooks === null || typeof hooks !== "object") {
    throw new TypeError("defineService() takes an object of hooks");
  }
  for (const [name, hook] of Object.entries(hooks)) {
    if (!HOOK_NAMES.has(name)) throw new TypeError(`defineService(): unknown hook "${name}"`);
    if (hook !== undefined && typeof hook !== "function") {
      throw new TypeError(`defineService(): hook "${name}" is not a function`);
    }
  }
  const origin = callerOrigin();
  return Object.freeze({
    [SERVICE]: true as const,
    [ORIGIN]: origin,
    hooks: Object.freeze({ ...hooks }),
  });
}

/** Services defined so far, per module file, for their origin's ordinal. */
const definedPerFile = new Map<string, number>();

function callerOrigin(): ServiceOrigin {
  const file = callerFile();
  if (file === undefined) return Object.freeze({ file, ordinal: 0 });
  const ordinal = definedPerFile.get(file) ?? 0;
  definedPerFile.set(file, ordinal + 1);
  return Object.freeze({ file, ordinal });
}

/** The file of defineService's caller, from V8's structured stack (not the printed one). */
function callerFile(): string | undefined {
  const original = Error.prepareStackTrace;
  const holder: { stack?: NodeJS.CallSite[] } = {};
  try {
    Error.prepareStackTrace = (_error, sites) => sites;
    Error.captureStackTrace(holder, defineService);
    const name = holder.stack?.[0]?.getFileName() ?? undefined;
    if (name === undefined) return undefined;
    if (!name.startsWith("file:")) return isAbsolute(name) ? name : undefined;
    // A loader may add a query to a module's URL (tsx's namespaces do); the file is the same.
    const url = new URL(name);
    url.search = "";
    return fileURLToPath(url);
  } catch {
    return undefined;
  } finally {
    Error.prepareStackTrace = original;
  }
}

/** The export of a module namespace that was defined at `origin`, if one was. */
export function exportDefinedAt(
  module: Record<string, unknown>,
  origin: ServiceOrigin,
): ServiceDefinition | undefined {
  for (const value of Object.values(module)) {
    if (!isServiceDefinition(value)) continue;
    const defined = serviceOrigin(value);
    if (defined.file === origin.file && defined.ordinal === origin.ordinal) return value;
  }
  return undefined;
}

/** Where `definition` was defined (see ServiceOrigin). */
export function serviceOrigin(definition: ServiceDefinition): ServiceOrigin {
  return (
    ((definition as unknown as Record<symbol, unknown>)[ORIGIN] as ServiceOrigin | undefined) ?? {
      file: undefined,
      ordinal: 0,
    }
  );
}

const HOOK_NAMES = new Set([
  "start",
  "upgrade",
  "open",
  "message",
  "close",
  "error",
  "stop",
  "snapshot",
  "restore",
  "presence",
]);

/** True for what `defineService` returned (in any copy of this module). */
export function isServiceDefinition(value: unknown): value is ServiceDefinition {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<symbol, unknown>)[SERVICE] === true &&
    typeof (value as { hooks?: unknown }).hooks === "object"
  );
}
