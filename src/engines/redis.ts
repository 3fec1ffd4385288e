import { randomUUID } from "node:crypto";
import { Redis, type RedisOptions } from "ioredis";
import { checkPolicy, frozenMember, memberInfoJson } from "./checks.js";
import {
  type Engine,
  EngineError,
  type EngineHandlers,
  type HistoryPolicy,
  type PresenceChange,
  type PresenceMember,
  type Recovery,
  type StreamPosition,
  type TopicMessage,
} from "./engine.js";
import * as scripts from "./redis-scripts.js";

/**
 * The Redis engine: several Switchboard nodes share topics through one Redis server.
 *
 * - Fan-out is Redis pub/sub, one channel per topic, subscribed only while this node has
 *   interest in the topic (so a publish reaches only the nodes that want it). A publish is one
 *   Lua script that takes the next offset, keeps the message in the topic's stream and
 *   publishes it: every node sees a topic's messages in offset order, the same on every node.
 *   Pub/sub is at-most-once; when a node sees a gap in a topic's offsets (its subscription
 *   dropped, Redis restarted) or its subscriber reconnects, it reads what it missed from the
 *   stream and delivers it first, so a short outage costs no messages that history kept.
 * - History is a Redis Stream per topic with entry ids `<offset>-0` (XADD with MAXLEN for a
 *   limit; entries older than a ttl are dropped oldest first and never replayed). The epoch is
 *   a random id kept beside the offset: a Redis that lost its data starts new epochs, so a
 *   client resuming from an old one is told "epoch-changed" instead of being replayed the wrong
 *   messages.
 * - Presence is a hash per topic (client -> owning node, info) plus, per node, the set of
 *   members it holds. Each node refreshes a liveness key every `heartbeatMs`; a node that stops
 *   (SIGKILL, lost network) expires after `presenceTtlMs`, and the next live node's sweep
 *   removes its members with leave events. `close()` removes them at once.
 * - Unreachable Redis: commands wait in ioredis's offline queue while it reconnects, at most
 *   `maxPendingCommands` of them; past that, and for commands that fail after
 *   `maxRetriesPerRequest` reconnection attempts, calls reject with ENGINE_UNAVAILABLE.
 *   Subscriptions are restored on reconnect, and missed messages recovered as above.
 */

export interface RedisEngineOptions {
  /** A redis:// or rediss:// URL, or ioredis options (default: 127.0.0.1:6379). */
  redis?: string | RedisOptions;
  /** Unique among the nodes sharing the Redis (default: a random UUID). */
  nodeId?: string;
  /** Prefix of every key and channel, so several servers can share one Redis (default "sb"). */
  prefix?: string;
  /** How long a node's presence outlives its last heartbeat (default 10 s). */
  presenceTtlMs?: number;
  /** How often a node refreshes its liveness and sweeps expired nodes (default ttl / 3). */
  heartbeatMs?: number;
  /** Commands allowed to wait for a reconnection before calls fail (default 10,000). */
  maxPendingCommands?: number;
  /** History ages are measured with this clock when given (tests); Redis's own TIME otherwise. */
  now?: () => number;
}

type Frame =
  | { kind: "message"; message: TopicMessage }
  | { kind: "presence"; change: PresenceChange };

/** Per interested topic: where delivery stands, for gap repair. */
interface TopicState {
  /** The position of the last message delivered, once one was. */
  last: StreamPosition | null;
  /** Frames held while missed messages are read back. */
  held: Frame[] | null;
}

const MAX_SWEEP = 16;

export class RedisEngine implements Engine {
  readonly nodeId: string;
  private readonly prefix: string;
  private readonly presenceTtlMs: number;
  private readonly heartbeatMs: number;
  private readonly maxPending: number;
  private readonly now: (() => number) | undefined;
  private readonly connection: string | RedisOptions | undefined;
  private commands: Redis | null = null;
  private subscriber: Redis | null = null;
  private handlers: EngineHandlers | null = null;
  private readonly topics = new Map<string, TopicState>();
  private heartbeat: NodeJS.Timeout | null = null;
  private pending = 0;
  private closed = false;

  constructor(options: RedisEngineOptions = {}) {
    this.nodeId = options.nodeId ?? randomUUID();
    this.prefix = options.prefix ?? "sb";
    this.presenceTtlMs = options.presenceTtlMs ?? 10_000;
    this.heartbeatMs = options.heartbeatMs ?? Math.max(50, Math.floor(this.presenceTtlMs / 3));
    this.maxPending = options.maxPendingCommands ?? 10_000;
    this.now = options.now;
    this.connection = options.redis;
    if (this.heartbeatMs >= this.presenceTtlMs) {
      throw new EngineError(
        "ENGINE_INVALID_OPTIONS",
        `heartbeatMs (${this.heartbeatMs}) must be shorter than presenceTtlMs (${this.presenceTtlMs})`,
      );
    }
    if (this.nodeId.includes("\n") || this.nodeId === "") {
      throw new EngineError("ENGINE_INVALID_OPTIONS", "nodeId must be a non-empty line");
    }
  }

  async start(handlers: EngineHandlers): Promise<void> {
    if (this.closed) throw closedError();
    if (this.handlers !== null) {
      throw new EngineError("ENGINE_ALREADY_STARTED", `engine ${this.nodeId} was already started`);
    }
    this.handlers = handlers;
    const commands = this.connect("commands");
    const subscriber = this.connect("subscriber");
    this.commands = commands;
    this.subscriber = subscriber;
    for (const [name, lua] of Object.entries(SCRIPTS)) {
      commands.defineCommand(name, { numberOfKeys: lua.keys, lua: lua.source });
    }
    subscriber.on("messageBuffer", (channel: Buffer, frame: Buffer) =>
      this.received(channel, frame),
    );
    // After a reconnection ioredis subscribes again by itself; what was published meanwhile is
    // read back from history.
    let connectedOnce = false;
    subscriber.on("ready", () => {
      // Once a round trip on this connection confirms the subscriptions ioredis just renewed,
      // anything published later arrives live, and anything earlier is read back.
      if (connectedOnce) {
        subscriber.ping().then(
          () => this.catchUpAll(),
          () => this.catchUpAll(),
        );
      }
      connectedOnce = true;
    });
    try {
      await Promise.all([commands.connect(), subscriber.connect()]);
      const claimed = await this.script<number>("sbHeartbeat", [
        this.prefix,
        this.nodeId,
        String(this.presenceTtlMs),
        "1",
      ]);
      if (claimed !== 1) {
        throw new EngineError(
          "ENGINE_DUPLICATE_NODE_ID",
          `node id ${this.nodeId} is held by another live node`,
        );
      }
    } catch (error) {
      this.closed = true;
      commands.disconnect();
      subscriber.disconnect();
      throw error;
    }
    this.heartbeat = setInterval(() => void this.beat(), this.heartbeatMs);
    this.heartbeat.unref();
  }

  async publish(
    topic: string,
    payload: Uint8Array,
    options: { binary: boolean; history?: HistoryPolicy; except?: string },
  ): Promise<StreamPosition> {
    this.live();
    const policy = checkPolicy(options.history);
    const [epoch, offset] = await this.script<[string, number]>(
      "sbPublish",
      [this.key("m", topic), this.key("s", topic)],
      [
        randomUUID(),
        String(policy?.limit ?? -1),
        String(policy?.ttlMs ?? -1),
        this.clock(),
        this.key("c", topic),
        this.nodeId,
        options.except ?? "",
        options.binary === true ? "1" : "0",
        // A copy now: the caller may reuse its buffer as soon as this returns.
        Buffer.from(payload),
      ],
    );
    return { epoch, offset: Number(offset) };
  }

  async addInterest(topic: string): Promise<void> {
    this.live();
    if (this.topics.has(topic)) return;
    this.topics.set(topic, { last: null, held: null });
    try {
      await this.subscriber!.subscribe(this.key("c", topic));
    } catch (error) {
      this.topics.delete(topic);
      throw unavailable(error);
    }
  }

  async removeInterest(topic: string): Promise<void> {
    if (this.closed || this.subscriber === null) return;
    // Delivery stops now, whatever is still on its way.
    if (!this.topics.delete(topic)) return;
    await this.subscriber.unsubscribe(this.key("c", topic)).catch(() => {});
  }

  async join(topic: string, member: PresenceMember): Promise<void> {
    this.live();
    const { clientId, infoJson } = memberInfoJson(member);
    await this.script<number>(
      "sbJoin",
      [this.key("p", topic), `${this.prefix}:held:${this.nodeId}`],
      [topic, clientId, this.nodeId, infoJson, this.key("c", topic), `${this.prefix}:held:`],
    );
  }

  async leave(topic: string, clientId: string): Promise<void> {
    if (this.closed) return;
    this.live();
    await this.script<number>(
      "sbLeave",
      [this.key("p", topic), `${this.prefix}:held:${this.nodeId}`],
      [topic, clientId, this.nodeId, this.key("c", topic)],
    );
  }

  async presence(topic: string): Promise<PresenceMember[]> {
    this.live();
    const entries = await this.call(() => this.commands!.hgetall(this.key("p", topic)));
    return Object.entries(entries).map(([clientId, record]) =>
      frozenMember(clientId, (JSON.parse(record) as [string, string])[1]),
    );
  }

  async presenceCount(topic: string): Promise<number> {
    this.live();
    return this.call(() => this.commands!.hlen(this.key("p", topic)));
  }

  async position(topic: string): Promise<StreamPosition> {
    this.live();
    const [epoch, offset] = await this.script<[string, number]>(
      "sbPosition",
      [this.key("m", topic), this.key("s", topic)],
      [randomUUID(), this.clock()],
    );
    return { epoch, offset: Number(offset) };
  }

  async recover(topic: string, since: StreamPosition): Promise<Recovery> {
    this.live();
    const offset = Number.isSafeInteger(since.offset) ? String(since.offset) : "-1";
    const [epoch, current, status, entries] = await this.script<
      [string, number, string, Array<[Buffer, Buffer[]]>]
    >(
      "sbRecover",
      [this.key("m", topic), this.key("s", topic)],
      [randomUUID(), this.clock(), String(since.epoch), offset],
      true,
    );
    const position = { epoch: String(epoch), offset: Number(current) };
    const state = String(status);
    if (state !== "ok") {
      return { ok: false, reason: state as "epoch-changed" | "trimmed", position };
    }
    const messages = entries.map(([id, fields]) => entryMessage(topic, position.epoch, id, fields));
    return { ok: true, messages, position };
  }

  /** Every message the topic's history keeps now, oldest first. */
  private async kept(topic: string): Promise<TopicMessage[]> {
    const [epoch, , , entries] = await this.script<
      [string, number, string, Array<[Buffer, Buffer[]]>]
    >(
      "sbRecover",
      [this.key("m", topic), this.key("s", topic)],
      [randomUUID(), this.clock(), "", "kept"],
      true,
    );
    return entries.map(([id, fields]) => entryMessage(topic, String(epoch), id, fields));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.topics.clear();
    const commands = this.commands;
    const subscriber = this.subscriber;
    this.handlers = null;
    if (commands === null || subscriber === null) return;
    // Interest first: the closing node hears nothing of its own departure.
    await subscriber.quit().catch(() => subscriber.disconnect());
    try {
      await commands.sbRelease(this.prefix, this.nodeId);
    } catch {
      // Redis is gone: the members expire with this node's liveness instead.
    }
    await commands.quit().catch(() => commands.disconnect());
  }

  // ─────────────────────────── delivery ───────────────────────────

  private received(channel: Buffer, data: Buffer): void {
    const topic = channel.toString("utf8").slice(this.prefix.length + 3);
    const state = this.topics.get(topic);
    if (state === undefined || this.handlers === null) return;
    const frame = parseFrame(topic, data);
    if (frame === null) return;
    if (state.held !== null) {
      state.held.push(frame);
      return;
    }
    if (frame.kind === "message") {
      const { last } = state;
      const message = frame.message;
      if (last !== null && last.epoch === message.epoch && message.offset > last.offset + 1) {
        // A gap: what was missed is read back and delivered first.
        state.held = [frame];
        void this.catchUp(topic, state);
        return;
      }
      if (last !== null && last.epoch !== message.epoch && message.offset > 1) {
        // A new epoch (Redis lost its data) whose first messages went by unseen.
        state.held = [frame];
        void this.catchUp(topic, state, { epoch: message.epoch, offset: 0 });
        return;
      }
      if (last !== null && last.epoch === message.epoch && message.offset <= last.offset) return;
    }
    this.deliver(topic, state, frame);
  }

  private deliver(topic: string, state: TopicState, frame: Frame): void {
    const handlers = this.handlers;
    if (handlers === null || this.topics.get(topic) !== state) return;
    try {
      if (frame.kind === "message") {
        state.last = { epoch: frame.message.epoch, offset: frame.message.offset };
        handlers.message(frame.message);
      } else {
        handlers.presence(frame.change);
      }
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  /**
   * Reads back what a topic missed since its last delivered message (or `since`), then
   * delivers what was held. When the epoch changed meanwhile, the new epoch's history is all
   * new to this node.
   */
  private async catchUp(
    topic: string,
    state: TopicState,
    since: StreamPosition | null = state.last,
  ): Promise<void> {
    state.held ??= [];
    let recovered: TopicMessage[] = [];
    if (since !== null) {
      try {
        const recovery = await this.recover(topic, since);
        if (recovery.ok) recovered = recovery.messages;
        else if (recovery.reason === "epoch-changed" || since.offset === 0) {
          // A new epoch: whatever its history keeps is new to this node.
          recovered = await this.kept(topic);
        }
      } catch {
        // Redis is away again: what was held still goes out, in order.
      }
    }
    const held = state.held;
    state.held = null;
    for (const message of recovered) this.deliverMessageOnce(topic, state, message);
    for (const frame of held) {
      if (frame.kind === "message") this.deliverMessageOnce(topic, state, frame.message);
      else this.deliver(topic, state, frame);
    }
  }

  private deliverMessageOnce(topic: string, state: TopicState, message: TopicMessage): void {
    const last = state.last;
    if (last !== null && last.epoch === message.epoch && message.offset <= last.offset) return;
    this.deliver(topic, state, { kind: "message", message });
  }

  private catchUpAll(): void {
    for (const [topic, state] of this.topics) {
      if (state.held === null && state.last !== null) void this.catchUp(topic, state);
    }
  }

  // ─────────────────────────── liveness ───────────────────────────

  private async beat(): Promise<void> {
    if (this.closed || this.commands?.status !== "ready") return;
    try {
      await this.commands.sbHeartbeat(this.prefix, this.nodeId, String(this.presenceTtlMs), "0");
      const expired = (await this.commands.sbExpiredNodes(
        this.prefix,
        String(MAX_SWEEP),
      )) as string[];
      for (const node of expired) {
        if (node !== this.nodeId) await this.commands.sbRelease(this.prefix, node);
      }
    } catch {
      // The next beat tries again.
    }
  }

  // ─────────────────────────── plumbing ───────────────────────────

  private connect(role: string): Redis {
    const base: RedisOptions = {
      lazyConnect: true,
      connectionName: `switchboard:${this.nodeId}:${role}`,
      maxRetriesPerRequest: 3,
      // Reconnect quickly at first, then at most every 2 s, forever: the broker may restart.
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000),
    };
    const redis =
      typeof this.connection === "string"
        ? new Redis(this.connection, base)
        : new Redis({ ...this.connection, ...base });
    // Connection errors are retried; ioredis would otherwise print each as unhandled.
    redis.on("error", () => {});
    return redis;
  }

  private key(kind: "m" | "s" | "p" | "c", topic: string): string {
    return `${this.prefix}:${kind}:${topic}`;
  }

  private clock(): string {
    return this.now === undefined ? "" : String(Math.floor(this.now()));
  }

  /** Runs a script with a bound on what may wait for a reconnection. */
  private script<T>(
    name: keyof typeof SCRIPTS,
    keys: string[],
    args?: Array<string | Buffer>,
    buffers = false,
  ): Promise<T> {
    const commands = this.commands!;
    const all = args === undefined ? keys : [...keys, ...args];
    const method = (buffers ? `${name}Buffer` : name) as keyof Redis;
    return this.call(() =>
      (commands[method] as (...values: Array<string | Buffer>) => Promise<T>)(...all),
    );
  }

  private async call<T>(run: () => Promise<T>): Promise<T> {
    if (this.commands?.status !== "ready" && this.pending >= this.maxPending) {
      throw new EngineError(
        "ENGINE_UNAVAILABLE",
        `Redis is unreachable and ${this.pending} commands already wait for it`,
      );
    }
    this.pending++;
    try {
      return await run();
    } catch (error) {
      throw unavailable(error);
    } finally {
      this.pending--;
    }
  }

  private live(): void {
    if (this.closed) throw closedError();
    if (this.handlers === null) {
      throw new EngineError("ENGINE_NOT_STARTED", `engine ${this.nodeId} is not started`);
    }
  }
}

const SCRIPTS = {
  sbPublish: { keys: 2, source: scripts.PUBLISH },
  sbPosition: { keys: 2, source: scripts.POSITION },
  sbRecover: { keys: 2, source: scripts.RECOVER },
  sbJoin: { keys: 2, source: scripts.JOIN },
  sbLeave: { keys: 2, source: scripts.LEAVE },
  sbRelease: { keys: 0, source: scripts.RELEASE },
  sbHeartbeat: { keys: 0, source: scripts.HEARTBEAT },
  sbExpiredNodes: { keys: 0, source: scripts.EXPIRED_NODES },
} as const;

declare module "ioredis" {
  interface RedisCommander<Context> {
    sbRelease(prefix: string, node: string): Promise<number>;
    sbHeartbeat(prefix: string, node: string, ttl: string, claim: string): Promise<number>;
    sbExpiredNodes(prefix: string, limit: string): Promise<string[]>;
  }
}

function closedError(): EngineError {
  return new EngineError("ENGINE_CLOSED", "the engine is closed");
}

function unavailable(error: unknown): unknown {
  if (error instanceof EngineError) return error;
  return new EngineError("ENGINE_UNAVAILABLE", `Redis: ${(error as Error).message}`, {
    cause: error,
  });
}

const NEWLINE = 0x0a;

function parseFrame(topic: string, data: Buffer): Frame | null {
  const end = data.indexOf(NEWLINE);
  if (end < 1) return null;
  const kind = data[0];
  const header = JSON.parse(data.toString("utf8", 1, end)) as unknown[];
  if (kind === 0x4d /* M */) {
    const [epoch, offset, binary, origin, except] = header as [
      string,
      number,
      boolean,
      string,
      string,
    ];
    const message: TopicMessage = Object.freeze({
      topic,
      epoch,
      offset,
      payload: new Uint8Array(data.subarray(end + 1)),
      binary,
      origin,
      ...(except === "" ? {} : { except }),
    });
    return { kind: "message", message };
  }
  const [clientId, infoJson] = header as [string, string];
  const type = kind === 0x4a /* J */ ? "join" : "leave";
  return {
    kind: "presence",
    change: Object.freeze({ type, topic, member: frozenMember(clientId, infoJson) }),
  };
}

function entryMessage(topic: string, epoch: string, id: Buffer, fields: Buffer[]): TopicMessage {
  const values = new Map<string, Buffer>();
  for (let i = 0; i + 1 < fields.length; i += 2) values.set(fields[i]!.toString(), fields[i + 1]!);
  const except = values.get("e")?.toString() ?? "";
  return Object.freeze({
    topic,
    epoch,
    offset: Number.parseInt(id.toString(), 10),
    payload: new Uint8Array(values.get("p") ?? Buffer.alloc(0)),
    binary: values.get("b")?.toString() === "1",
    origin: values.get("o")?.toString() ?? "",
    ...(except === "" ? {} : { except }),
  });
}
