import { randomUUID } from "node:crypto";
import {
  type ConnectionOptions,
  connect,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type MsgHdrs,
  headers as makeHeaders,
  type NatsConnection,
  RetentionPolicy,
  StorageType,
  type Subscription,
} from "nats";
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
import { type BatchItem, decodeBatch, encodeBatch } from "./nats-batch.js";

/**
 * The NATS engine: several Switchboard nodes share topics through a NATS server with
 * JetStream.
 *
 * - History is one JetStream stream; a topic is a subject (`<prefix>.h.<topic>`) whose messages
 *   carry the epoch, the offset and the history policy in headers. A publish takes the next
 *   offset by optimistic concurrency: it is stored only if the subject's last sequence is the one
 *   the publisher saw (`expect.lastSubjectSequence`), else it reads the subject's last message
 *   and tries again. So offsets have no gaps and one order, whoever publishes.
 * - Fan-out is core NATS: after the store, the publisher sends the message (with its offset and
 *   stream sequence) on `<prefix>.c.<topic>`, which only nodes with interest subscribe to. Two
 *   publishers' sends can cross, so a node delivers in offset order: a message ahead of the next
 *   expected one waits (at most `reorderMs`) for the missing ones, which are then read from the
 *   stream if they did not come. Core NATS is at-most-once; the same read-back fills the gap a
 *   reconnection left. A lost send that no later one reveals (the last of a burst) is found by
 *   the tail check: once a topic this node heard from has been quiet for `tailCheckMs`, the node
 *   reads the subject's last offset and reads back what it is missing. A read-back that fails
 *   (a request timing out under load) is tried again, `REPAIR_ATTEMPTS` times in all, while what
 *   came meanwhile waits; only then does it go out past the gap.
 * - The policy is applied when history is read (the newest `limit` messages, younger than
 *   `ttlMs`, after the last message that was not kept) and the stream is trimmed per subject now
 *   and then. The subject's last message is always kept, since it carries the counter; a
 *   never-published topic gets a marker (offset 0) when its position is first asked, so its
 *   epoch is fixed. A NATS server that lost its store starts new epochs.
 * - Presence is a KV bucket (topic and client -> owning node, info); joins and leaves are
 *   announced on the topic's fan-out subject. Each node refreshes a liveness entry in a KV bucket
 *   with a TTL every `heartbeatMs`; a node whose entry expired is swept by the others, which
 *   remove its members (an index per node, also in KV) with leave events.
 */

export interface NatsEngineOptions {
  /** A nats:// URL (or several, comma-separated), or nats.js connection options. */
  nats?: string | ConnectionOptions;
  nodeId?: string;
  /** Prefix of subjects, the stream and the buckets (default "sb"). */
  prefix?: string;
  /** How long a node's presence outlives its last heartbeat (default 10 s). */
  presenceTtlMs?: number;
  heartbeatMs?: number;
  /** How long a message ahead of the next expected one waits for the missing ones (default 100 ms). */
  reorderMs?: number;
  /**
   * How long a topic must be quiet, after a message, before this node checks the stream for
   * later messages whose fan-out never came (default 500 ms).
   */
  tailCheckMs?: number;
  /** History ages are measured with this clock when given (tests). */
  now?: () => number;
}

interface Last {
  seq: number;
  offset: number;
  epoch: string;
}

interface StoredEntry {
  offset: number;
  epoch: string;
  kept: boolean;
  at: number;
  limit: number;
  ttl: number;
  message: TopicMessage | null;
}

type Incoming =
  | { kind: "message"; message: TopicMessage }
  | { kind: "presence"; change: PresenceChange };

interface TopicState {
  subscription: Subscription;
  last: StreamPosition | null;
  /** Messages ahead of the next expected offset, by offset. */
  ahead: Map<number, TopicMessage>;
  /** The reorder wait, or the pause before a failed read-back is tried again. */
  timer: NodeJS.Timeout | null;
  repairing: boolean;
  /** When the last message came (performance.now()), and the pending tail check. */
  heardAt: number;
  tailTimer: NodeJS.Timeout | null;
}

interface Queued {
  item: BatchItem;
  limit: number;
  ttl: number;
  resolve(position: StreamPosition): void;
  reject(error: unknown): void;
}

const WRONG_LAST_SEQUENCE = 10071;
/** What one batch may hold: messages, and payload bytes (JetStream's default max is 1 MiB). */
const MAX_BATCH_MESSAGES = 256;
const MAX_BATCH_BYTES = 512 * 1024;
const MAX_PUBLISH_ATTEMPTS = 50;
/** Reads of a gap before what waited goes out without it; retries after reorderMs, then twice that. */
const REPAIR_ATTEMPTS = 3;
/** Reads of a topic's history before a read that keeps ending short is an error. */
const HISTORY_READS = 2;

export class NatsEngine implements Engine {
  readonly nodeId: string;
  private readonly prefix: string;
  private readonly stream: string;
  private readonly presenceTtlMs: number;
  private readonly heartbeatMs: number;
  private readonly reorderMs: number;
  private readonly tailCheckMs: number;
  private readonly now: () => number;
  private readonly connection: string | ConnectionOptions | undefined;
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private jsm: JetStreamManager | null = null;
  private presenceKv: KV | null = null;
  private nodesKv: KV | null = null;
  private heldKv: KV | null = null;
  private handlers: EngineHandlers | null = null;
  private readonly lasts = new Map<string, Last>();
  private readonly topics = new Map<string, TopicState>();
  private heldWrite: Promise<void> = Promise.resolve();
  private readonly publishes = new Map<string, number>();
  /** Per topic, publishes waiting for the store in flight (stored one batch at a time). */
  private readonly queued = new Map<string, Queued[]>();
  /** Topics with a store in flight. */
  private readonly storing = new Set<string>();
  private heartbeat: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(options: NatsEngineOptions = {}) {
    this.nodeId = options.nodeId ?? randomUUID();
    this.prefix = options.prefix ?? "sb";
    if (!/^[A-Za-z0-9_-]+$/.test(this.prefix)) {
      throw new EngineError("ENGINE_INVALID_OPTIONS", "prefix must be letters, digits, _ or -");
    }
    this.stream = `${this.prefix}_history`;
    this.presenceTtlMs = options.presenceTtlMs ?? 10_000;
    this.heartbeatMs = options.heartbeatMs ?? Math.max(50, Math.floor(this.presenceTtlMs / 3));
    this.reorderMs = options.reorderMs ?? 100;
    this.tailCheckMs = options.tailCheckMs ?? 500;
    this.now = options.now ?? Date.now;
    this.connection = options.nats;
    if (!(this.tailCheckMs > 0 && Number.isFinite(this.tailCheckMs))) {
      throw new EngineError(
        "ENGINE_INVALID_OPTIONS",
        `tailCheckMs must be a positive number of milliseconds, not ${this.tailCheckMs}`,
      );
    }
    if (this.heartbeatMs >= this.presenceTtlMs) {
      throw new EngineError(
        "ENGINE_INVALID_OPTIONS",
        `heartbeatMs (${this.heartbeatMs}) must be shorter than presenceTtlMs (${this.presenceTtlMs})`,
      );
    }
  }

  async start(handlers: EngineHandlers): Promise<void> {
    if (this.closed) throw closedError();
    if (this.handlers !== null) {
      throw new EngineError("ENGINE_ALREADY_STARTED", `engine ${this.nodeId} was already started`);
    }
    this.handlers = handlers;
    try {
      const options: ConnectionOptions =
        typeof this.connection === "string" || this.connection === undefined
          ? { servers: (this.connection ?? "nats://127.0.0.1:4222").split(",") }
          : this.connection;
      const nc = await connect({
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        name: `switchboard:${this.nodeId}`,
        ...options,
      });
      this.nc = nc;
      this.jsm = await nc.jetstreamManager();
      this.js = nc.jetstream();
      await this.ensureStream();
      this.presenceKv = await this.js.views.kv(`${this.prefix}_presence`, { history: 1 });
      this.heldKv = await this.js.views.kv(`${this.prefix}_held`, { history: 1 });
      this.nodesKv = await this.js.views.kv(`${this.prefix}_nodes`, {
        history: 1,
        ttl: this.presenceTtlMs,
      });
      try {
        await this.nodesKv.create(token(this.nodeId), "1");
      } catch {
        throw new EngineError(
          "ENGINE_DUPLICATE_NODE_ID",
          `node id ${this.nodeId} is held by another live node`,
        );
      }
      void this.watchStatus(nc);
    } catch (error) {
      this.closed = true;
      await this.nc?.close().catch(() => {});
      throw error instanceof EngineError ? error : unavailable(error);
    }
    this.heartbeat = setInterval(() => void this.beat(), this.heartbeatMs);
    this.heartbeat.unref();
  }

  publish(
    topic: string,
    payload: Uint8Array,
    options: { binary: boolean; history?: HistoryPolicy; except?: string },
  ): Promise<StreamPosition> {
    // Checked and copied now, as the caller sees the call.
    let policy: HistoryPolicy | undefined;
    try {
      this.live();
      policy = checkPolicy(options.history);
    } catch (error) {
      return Promise.reject(error);
    }
    const limit = policy?.limit ?? -1;
    const ttl = policy?.ttlMs ?? -1;
    return new Promise((resolve, reject) => {
      let queue = this.queued.get(topic);
      if (queue === undefined) {
        queue = [];
        this.queued.set(topic, queue);
      }
      queue.push({
        item: {
          payload: new Uint8Array(payload),
          binary: options.binary === true,
          except: options.except,
        },
        limit,
        ttl,
        resolve,
        reject,
      });
      if (!this.storing.has(topic)) void this.drain(topic);
    });
  }

  /**
   * Stores what is queued for a topic, one batch at a time, in call order: this node's own
   * publishes never race each other for an offset, and those queued behind a store in flight
   * share the next round trip.
   */
  private async drain(topic: string): Promise<void> {
    this.storing.add(topic);
    try {
      for (;;) {
        const queue = this.queued.get(topic);
        if (queue === undefined || queue.length === 0) break;
        // A batch has one policy; a different one starts the next batch.
        const first = queue[0]!;
        let take = 1;
        let bytes = first.item.payload.length;
        while (
          take < queue.length &&
          take < MAX_BATCH_MESSAGES &&
          bytes < MAX_BATCH_BYTES &&
          queue[take]!.limit === first.limit &&
          queue[take]!.ttl === first.ttl
        ) {
          bytes += queue[take]!.item.payload.length;
          take++;
        }
        const batch = queue.splice(0, take);
        if (queue.length === 0) this.queued.delete(topic);
        try {
          const { epoch, offset } = await this.store(topic, batch, first.limit, first.ttl);
          for (let i = 0; i < batch.length; i++) batch[i]!.resolve({ epoch, offset: offset + i });
        } catch (error) {
          for (const entry of batch) entry.reject(error);
        }
      }
    } finally {
      this.storing.delete(topic);
    }
  }

  /** Stores one batch; resolves with the position of its first message. */
  private async store(
    topic: string,
    batch: readonly Queued[],
    limit: number,
    ttl: number,
  ): Promise<StreamPosition> {
    const kept = !(limit < 0 && ttl < 0) && limit !== 0 && ttl !== 0;
    const body = encodeBatch(batch.map((entry) => entry.item));
    for (let attempt = 0; attempt < MAX_PUBLISH_ATTEMPTS; attempt++) {
      const last = this.lasts.get(topic) ?? (await this.readLast(topic));
      const epoch = last?.epoch ?? randomUUID();
      const offset = (last?.offset ?? 0) + 1;
      const h = makeHeaders();
      h.set("Sb-Epoch", epoch);
      h.set("Sb-Offset", String(offset));
      h.set("Sb-Count", String(batch.length));
      h.set("Sb-Kept", kept ? "1" : "0");
      h.set("Sb-Limit", String(limit));
      h.set("Sb-Ttl", String(ttl));
      h.set("Sb-Time", String(Math.floor(this.now())));
      h.set("Sb-Origin", this.nodeId);
      let seq: number;
      try {
        const ack = await this.js!.publish(this.subject("h", topic), body, {
          headers: h,
          expect: { lastSubjectSequence: last?.seq ?? 0 },
        });
        seq = ack.seq;
      } catch (error) {
        if (apiErrorCode(error) === WRONG_LAST_SEQUENCE) {
          this.lasts.delete(topic);
          // Another node stored first. Past the first retries, a random pause keeps a few
          // busy publishers from losing to each other in lockstep.
          if (attempt >= 2) await sleep(Math.random() * Math.min(64, 2 ** attempt));
          continue;
        }
        throw unavailable(error);
      }
      this.lasts.set(topic, { seq, offset: offset + batch.length - 1, epoch });
      h.set("Sb-Kind", "B");
      h.set("Sb-Seq", String(seq));
      this.nc!.publish(this.subject("c", topic), body, { headers: h });
      this.trimLater(topic, kept ? limit : 1, batch.length);
      return { epoch, offset };
    }
    throw new EngineError(
      "ENGINE_UNAVAILABLE",
      `could not publish to ${topic}: other publishers won ${MAX_PUBLISH_ATTEMPTS} times in a row`,
    );
  }

  async addInterest(topic: string): Promise<void> {
    this.live();
    if (this.topics.has(topic)) return;
    const subscription = this.nc!.subscribe(this.subject("c", topic), {
      callback: (error, msg) => {
        if (error !== null) return;
        const state = this.topics.get(topic);
        if (state === undefined || state.subscription !== subscription) return;
        for (const incoming of parseIncoming(topic, msg.headers, msg.data)) {
          // A handler may have removed the interest meanwhile.
          if (this.topics.get(topic) !== state) break;
          this.received(topic, state, incoming);
        }
      },
    });
    this.topics.set(topic, {
      subscription,
      last: null,
      ahead: new Map(),
      timer: null,
      repairing: false,
      heardAt: 0,
      tailTimer: null,
    });
    // The server has the subscription once a round trip confirms it.
    await this.nc!.flush();
  }

  async removeInterest(topic: string): Promise<void> {
    if (this.closed) return;
    const state = this.topics.get(topic);
    if (state === undefined) return;
    this.topics.delete(topic);
    stopTimers(state);
    state.subscription.unsubscribe();
  }

  async join(topic: string, member: PresenceMember): Promise<void> {
    this.live();
    const { clientId, infoJson } = memberInfoJson(member);
    const key = `${token(topic)}.${token(clientId)}`;
    const previous = await this.call(() => this.presenceKv!.get(key));
    const owner = previous?.operation === "PUT" ? (previous.json<[string, string]>()[0] ?? "") : "";
    await this.call(() => this.presenceKv!.put(key, JSON.stringify([this.nodeId, infoJson])));
    if (owner !== "" && owner !== this.nodeId) await this.updateHeld(owner, topic, clientId, false);
    await this.updateHeld(this.nodeId, topic, clientId, true);
    this.announce(topic, "J", clientId, infoJson);
  }

  async leave(topic: string, clientId: string): Promise<void> {
    if (this.closed) return;
    this.live();
    await this.leaveFor(this.nodeId, topic, clientId);
  }

  async presence(topic: string): Promise<PresenceMember[]> {
    this.live();
    const members: PresenceMember[] = [];
    for (const [clientId, infoJson] of await this.members(topic)) {
      members.push(frozenMember(clientId, infoJson));
    }
    return members;
  }

  async presenceCount(topic: string): Promise<number> {
    this.live();
    return (await this.members(topic)).length;
  }

  async position(topic: string): Promise<StreamPosition> {
    this.live();
    const last = await this.readLast(topic, true);
    return { epoch: last!.epoch, offset: last!.offset };
  }

  async recover(topic: string, since: StreamPosition): Promise<Recovery> {
    this.live();
    const last = (await this.readLast(topic, true))!;
    const position = { epoch: last.epoch, offset: last.offset };
    const offset = since.offset;
    if (
      since.epoch !== last.epoch ||
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      offset > last.offset
    ) {
      return { ok: false, reason: "epoch-changed", position };
    }
    if (offset === last.offset) return { ok: true, messages: [], position };
    const window = await this.history(topic, last);
    if (window.length === 0 || window[0]!.offset > offset + 1) {
      return { ok: false, reason: "trimmed", position };
    }
    const messages = window
      .filter((entry) => entry.offset > offset && entry.offset <= last.offset)
      .map((entry) => entry.message!);
    return { ok: true, messages, position };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    for (const [topic, state] of [...this.topics]) {
      stopTimers(state);
      state.subscription.unsubscribe();
      this.topics.delete(topic);
    }
    this.handlers = null;
    const nc = this.nc;
    if (nc === null) return;
    try {
      await this.release(this.nodeId);
      await this.nodesKv?.delete(token(this.nodeId));
    } catch {
      // NATS is gone: the members expire with this node's liveness instead.
    }
    await nc.drain().catch(() => nc.close());
  }

  // ─────────────────────────── delivery ───────────────────────────

  private received(topic: string, state: TopicState, incoming: Incoming): void {
    if (incoming.kind === "presence") {
      this.deliver(state, topic, incoming);
      return;
    }
    const message = incoming.message;
    state.heardAt = performance.now();
    if (state.tailTimer === null) this.armTailCheck(topic, state, this.tailCheckMs);
    const last = state.last;
    if (state.repairing) {
      state.ahead.set(message.offset, message);
      return;
    }
    if (last === null) {
      this.deliverMessage(topic, state, message);
      return;
    }
    if (message.epoch !== last.epoch) {
      if (message.offset === 1) this.deliverMessage(topic, state, message);
      else {
        state.ahead.set(message.offset, message);
        void this.repair(topic, state, { epoch: message.epoch, offset: 0 });
      }
      return;
    }
    if (message.offset <= last.offset) return;
    if (message.offset === last.offset + 1) {
      this.deliverMessage(topic, state, message);
      this.drainAhead(topic, state);
      return;
    }
    // Ahead of the next one: another publisher's send may still be on its way.
    state.ahead.set(message.offset, message);
    state.timer ??= setTimeout(() => {
      state.timer = null;
      if (state.ahead.size > 0 && state.last !== null) void this.repair(topic, state, state.last);
    }, this.reorderMs);
  }

  private drainAhead(topic: string, state: TopicState): void {
    while (state.last !== null) {
      const next = state.ahead.get(state.last.offset + 1);
      if (next === undefined) break;
      state.ahead.delete(next.offset);
      this.deliverMessage(topic, state, next);
    }
    if (state.ahead.size === 0 && state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
  }

  /** Reads what is missing after `since` from the stream, then delivers what waited. */
  private async repair(
    topic: string,
    state: TopicState,
    since: StreamPosition,
    attempt = 1,
  ): Promise<void> {
    if (state.repairing && attempt === 1) return;
    state.repairing = true;
    try {
      const recovery = await this.recover(topic, since);
      let found: TopicMessage[] = [];
      if (recovery.ok) found = recovery.messages;
      else if (recovery.reason === "epoch-changed" || since.offset === 0) {
        // A new epoch: whatever its history keeps is new to this node.
        const last = await this.readLast(topic);
        if (last !== null) found = (await this.history(topic, last)).map((entry) => entry.message!);
      }
      for (const message of found) {
        if (message === null) continue;
        state.ahead.set(message.offset, state.ahead.get(message.offset) ?? message);
      }
    } catch {
      // The read failed (a request timed out, NATS went away for a moment): read again a little
      // later, everything that comes meanwhile still waiting in `ahead`. Past the last attempt,
      // what waited goes out below, gap and all.
      if (attempt < REPAIR_ATTEMPTS && !this.closed && this.topics.get(topic) === state) {
        state.timer = setTimeout(() => {
          state.timer = null;
          void this.repair(topic, state, since, attempt + 1);
        }, this.reorderMs * attempt);
        return;
      }
    }
    state.repairing = false;
    if (this.topics.get(topic) !== state) return;
    const waiting = [...state.ahead.values()].sort((a, b) =>
      a.epoch === b.epoch ? a.offset - b.offset : 0,
    );
    state.ahead.clear();
    for (const message of waiting) {
      const last = state.last;
      if (last !== null && last.epoch === message.epoch && message.offset <= last.offset) continue;
      this.deliverMessage(topic, state, message);
    }
  }

  private armTailCheck(topic: string, state: TopicState, ms: number): void {
    state.tailTimer = setTimeout(() => this.checkTail(topic, state), ms);
  }

  /**
   * Once the topic has been quiet for `tailCheckMs`: whether the stream holds messages after the
   * last one delivered here (sends lost with nothing after them to reveal the gap), and if so
   * reads them back.
   */
  private checkTail(topic: string, state: TopicState): void {
    state.tailTimer = null;
    if (this.closed || this.topics.get(topic) !== state) return;
    const quiet = performance.now() - state.heardAt;
    if (quiet < this.tailCheckMs || state.repairing) {
      // Still busy (a later message reveals any gap), or a repair is under way: look again.
      this.armTailCheck(
        topic,
        state,
        state.repairing ? this.tailCheckMs : this.tailCheckMs - quiet,
      );
      return;
    }
    const since = state.last;
    if (since === null) return;
    this.readLast(topic).then(
      (stored) => {
        if (stored === null || this.topics.get(topic) !== state || state.last !== since) return;
        if (stored.epoch !== since.epoch || stored.offset > since.offset) {
          void this.repair(topic, state, since);
        }
      },
      // NATS is unreachable: the reconnection reads back what was missed.
      () => undefined,
    );
  }

  private deliverMessage(topic: string, state: TopicState, message: TopicMessage): void {
    state.last = { epoch: message.epoch, offset: message.offset };
    const known = this.lasts.get(topic);
    if (known !== undefined && known.epoch === message.epoch && known.offset < message.offset) {
      this.lasts.delete(topic);
    }
    this.deliver(state, topic, { kind: "message", message });
  }

  private deliver(state: TopicState, topic: string, incoming: Incoming): void {
    const handlers = this.handlers;
    if (handlers === null || this.topics.get(topic) !== state) return;
    try {
      if (incoming.kind === "message") handlers.message(incoming.message);
      else handlers.presence(incoming.change);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === "reconnect") {
        // Core NATS kept no messages for us meanwhile: read them back.
        for (const [topic, state] of this.topics) {
          if (state.last !== null) void this.repair(topic, state, state.last);
        }
      }
    }
  }

  // ─────────────────────────── history ───────────────────────────

  private async ensureStream(): Promise<void> {
    const config = {
      name: this.stream,
      subjects: [`${this.prefix}.h.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      allow_direct: true,
    };
    try {
      await this.jsm!.streams.info(this.stream);
    } catch {
      await this.jsm!.streams.add(config);
    }
  }

  /**
   * The subject's last message as {seq, offset, epoch}; with `mark`, a never-published topic
   * gets its marker first (offset 0), so that its epoch is fixed.
   */
  private async readLast(topic: string, mark = false): Promise<Last | null> {
    for (let attempt = 0; attempt < MAX_PUBLISH_ATTEMPTS; attempt++) {
      const stored = await this.call(() =>
        this.jsm!.streams.getMessage(this.stream, { last_by_subj: this.subject("h", topic) }),
      ).catch((error: unknown) => {
        if (isNotFound(error)) return null;
        throw error;
      });
      if (stored !== null) {
        // A batch's last message is its first offset plus its count, less one (a marker: 0).
        return {
          seq: stored.seq,
          offset: Number(stored.header.get("Sb-Offset")) + countOf(stored.header) - 1,
          epoch: stored.header.get("Sb-Epoch"),
        };
      }
      if (!mark) return null;
      const h = makeHeaders();
      h.set("Sb-Epoch", randomUUID());
      h.set("Sb-Offset", "0");
      h.set("Sb-Kept", "0");
      h.set("Sb-Limit", "-1");
      h.set("Sb-Ttl", "-1");
      h.set("Sb-Time", String(Math.floor(this.now())));
      try {
        await this.js!.publish(this.subject("h", topic), new Uint8Array(0), {
          headers: h,
          expect: { lastSubjectSequence: 0 },
        });
      } catch (error) {
        if (apiErrorCode(error) !== WRONG_LAST_SEQUENCE) throw unavailable(error);
      }
    }
    throw new EngineError("ENGINE_UNAVAILABLE", `could not read the position of ${topic}`);
  }

  /** The kept messages of a topic, oldest first, as the latest policy allows them. */
  private async history(topic: string, last: Last): Promise<StoredEntry[]> {
    let entries: StoredEntry[] | null = null;
    for (let read = 0; read < HISTORY_READS && entries === null; read++) {
      entries = await this.readThrough(topic, last);
    }
    if (entries === null) {
      throw new EngineError(
        "ENGINE_UNAVAILABLE",
        `NATS: the history of ${topic} ended short of stream sequence ${last.seq} in ${HISTORY_READS} reads`,
      );
    }
    const newest = entries.at(-1);
    if (newest === undefined || newest.epoch !== last.epoch) return [];
    let start = 0;
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (!entry.kept || entry.epoch !== newest.epoch) start = i + 1;
    }
    let window = entries.slice(start);
    if (newest.limit >= 0 && window.length > newest.limit) window = window.slice(-newest.limit);
    if (newest.ttl >= 0) {
      const now = this.now();
      window = window.filter((entry) => now - entry.at < newest.ttl);
      // Expired entries are a prefix; anything older than a surviving one survives too.
    }
    return window;
  }

  /**
   * Every stored entry of a topic up to the stream sequence of `last`, oldest first; null when
   * the read ended before it. A fetch ends early when it expires with messages still to come,
   * and an ordered consumer ends a fetch at a gap in its delivery sequence (a delivery lost on
   * the way): what was read then stops short of the end, or has a hole, and taken for the whole
   * history it would lose messages without a trace.
   */
  private async readThrough(topic: string, last: Last): Promise<StoredEntry[] | null> {
    const entries: StoredEntry[] = [];
    let through = false;
    const consumer = await this.call(() =>
      // One subject as a string: servers before 2.10 know no list of filters.
      this.js!.consumers.get(this.stream, { filterSubjects: this.subject("h", topic) }),
    );
    try {
      const messages = await consumer.fetch({ max_messages: 100_000, expires: 2_000 });
      for await (const msg of messages) {
        entries.push(...storedEntries(topic, msg.headers, msg.data));
        // A later message than `last` (published since) may stand in for it: a purge since
        // may have removed `last` itself, never the subject's newest.
        if (msg.seq >= last.seq) {
          through = true;
          break;
        }
      }
    } finally {
      await consumer.delete().catch(() => {});
    }
    return through ? entries : null;
  }

  /** Trims a subject to its newest `keep` messages now and then (reads apply the exact policy). */
  private trimLater(topic: string, keep: number, published: number): void {
    const count = (this.publishes.get(topic) ?? 0) + published;
    // Reads apply the exact policy, so the stream only has to stay bounded: a purge per
    // quarter of the limit, or per 64 publishes of a topic that keeps (next to) nothing.
    const every = keep <= 1 ? 64 : Math.max(1, Math.floor(keep / 4));
    if (count < every) {
      this.publishes.set(topic, count);
      return;
    }
    this.publishes.set(topic, 0);
    void this.jsm!.streams.purge(this.stream, {
      filter: this.subject("h", topic),
      keep: Math.max(1, keep),
    }).catch(() => {});
  }

  // ─────────────────────────── presence ───────────────────────────

  private async members(topic: string): Promise<Array<[string, string]>> {
    const prefix = `${token(topic)}.`;
    const keys = await this.call(async () => {
      const found: string[] = [];
      for await (const key of await this.presenceKv!.keys(`${prefix}*`)) found.push(key);
      return found;
    });
    const members: Array<[string, string]> = [];
    for (const key of keys) {
      const entry = await this.call(() => this.presenceKv!.get(key));
      if (entry === null || entry.operation !== "PUT") continue;
      const [, infoJson] = entry.json<[string, string]>();
      members.push([untoken(key.slice(prefix.length)), infoJson]);
    }
    return members;
  }

  private async leaveFor(node: string, topic: string, clientId: string): Promise<void> {
    const key = `${token(topic)}.${token(clientId)}`;
    const entry = await this.call(() => this.presenceKv!.get(key));
    if (entry === null || entry.operation !== "PUT") return;
    const [owner, infoJson] = entry.json<[string, string]>();
    if (owner !== node) return;
    try {
      await this.presenceKv!.delete(key, { previousSeq: entry.revision });
    } catch {
      // Joined again meanwhile (by its new node): not ours to remove any more.
      return;
    }
    await this.updateHeld(node, topic, clientId, false);
    this.announce(topic, "L", clientId, infoJson);
  }

  private announce(topic: string, kind: "J" | "L", clientId: string, infoJson: string): void {
    const h = makeHeaders();
    h.set("Sb-Kind", kind);
    h.set("Sb-Client", clientId);
    h.set("Sb-Info", infoJson);
    this.nc!.publish(this.subject("c", topic), new Uint8Array(0), { headers: h });
  }

  /** A node's index of the members it holds (what a sweep removes when it dies). */
  private updateHeld(node: string, topic: string, clientId: string, add: boolean): Promise<void> {
    const write = this.heldWrite.then(async () => {
      const key = token(node);
      const entry = await this.heldKv!.get(key);
      const list = new Set<string>(
        entry !== null && entry.operation === "PUT" ? entry.json<string[]>() : [],
      );
      const item = JSON.stringify([topic, clientId]);
      if (add) list.add(item);
      else list.delete(item);
      await this.heldKv!.put(key, JSON.stringify([...list]));
    });
    this.heldWrite = write.catch(() => {});
    return write.catch((error: unknown) => {
      throw unavailable(error);
    });
  }

  /** Removes every member `node` holds, with leave events, and its index. */
  private async release(node: string): Promise<void> {
    const entry = await this.heldKv!.get(token(node));
    const list = entry !== null && entry.operation === "PUT" ? entry.json<string[]>() : [];
    for (const item of list) {
      const [topic, clientId] = JSON.parse(item) as [string, string];
      await this.leaveFor(node, topic, clientId);
    }
    await this.heldKv!.delete(token(node));
  }

  private async beat(): Promise<void> {
    if (this.closed || this.nodesKv === null) return;
    try {
      await this.nodesKv.put(token(this.nodeId), "1");
      for await (const key of await this.heldKv!.keys()) {
        if (key === token(this.nodeId)) continue;
        const alive = await this.nodesKv.get(key);
        if (alive === null || alive.operation !== "PUT") await this.release(untoken(key));
      }
    } catch {
      // The next beat tries again.
    }
  }

  // ─────────────────────────── plumbing ───────────────────────────

  private subject(kind: "h" | "c", topic: string): string {
    return `${this.prefix}.${kind}.${token(topic)}`;
  }

  private async call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw error instanceof EngineError || isNotFound(error) ? error : unavailable(error);
    }
  }

  private live(): void {
    if (this.closed) throw closedError();
    if (this.handlers === null) {
      throw new EngineError("ENGINE_NOT_STARTED", `engine ${this.nodeId} is not started`);
    }
  }
}

/** Stops a topic's reorder wait (or read-back retry) and its tail check (its interest ended). */
function stopTimers(state: TopicState): void {
  if (state.timer !== null) clearTimeout(state.timer);
  if (state.tailTimer !== null) clearTimeout(state.tailTimer);
}

/** A topic or id as a subject token and KV key part: base64url, "=" for the empty string. */
function token(value: string): string {
  return value === "" ? "=" : Buffer.from(value, "utf8").toString("base64url");
}

function untoken(value: string): string {
  return value === "=" ? "" : Buffer.from(value, "base64url").toString("utf8");
}

function parseIncoming(topic: string, h: MsgHdrs | undefined, data: Uint8Array): Incoming[] {
  if (h === undefined) return [];
  const kind = h.get("Sb-Kind");
  if (kind === "B") {
    return batchMessages(topic, h, data).map((message) => ({ kind: "message", message }));
  }
  if (kind === "J" || kind === "L") {
    return [
      {
        kind: "presence",
        change: Object.freeze({
          type: kind === "J" ? "join" : "leave",
          topic,
          member: frozenMember(h.get("Sb-Client"), h.get("Sb-Info")),
        }),
      },
    ];
  }
  return [];
}

/** How many messages a stored or sent batch holds (a marker: none, but counted as one). */
function countOf(h: MsgHdrs): number {
  const count = h.get("Sb-Count");
  return count === "" ? 1 : Number(count);
}

function batchMessages(topic: string, h: MsgHdrs, data: Uint8Array): TopicMessage[] {
  const epoch = h.get("Sb-Epoch");
  const first = Number(h.get("Sb-Offset"));
  const origin = h.get("Sb-Origin");
  let items: BatchItem[];
  try {
    items = decodeBatch(data, countOf(h));
  } catch {
    return [];
  }
  return items.map((item, i) =>
    Object.freeze({
      topic,
      epoch,
      offset: first + i,
      payload: item.payload,
      binary: item.binary,
      origin,
      ...(item.except === undefined ? {} : { except: item.except }),
    }),
  );
}

/** The messages of a stored batch as history entries (a marker: one entry, no message). */
function storedEntries(topic: string, h: MsgHdrs | undefined, data: Uint8Array): StoredEntry[] {
  if (h === undefined) return [];
  const common = {
    epoch: h.get("Sb-Epoch"),
    kept: h.get("Sb-Kept") === "1",
    at: Number(h.get("Sb-Time")),
    limit: Number(h.get("Sb-Limit")),
    ttl: Number(h.get("Sb-Ttl")),
  };
  if (h.get("Sb-Count") === "") {
    return [{ ...common, offset: Number(h.get("Sb-Offset")), message: null }];
  }
  return batchMessages(topic, h, data).map((message) => ({
    ...common,
    offset: message.offset,
    message,
  }));
}

function apiErrorCode(error: unknown): number | undefined {
  const api = (error as { api_error?: { err_code?: number } })?.api_error;
  if (api?.err_code !== undefined) return api.err_code;
  const message = String((error as Error)?.message ?? "");
  return message.includes("wrong last sequence") ? WRONG_LAST_SEQUENCE : undefined;
}

function isNotFound(error: unknown): boolean {
  const message = String((error as Error)?.message ?? "").toLowerCase();
  return message.includes("no message found") || message.includes("not found");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function closedError(): EngineError {
  return new EngineError("ENGINE_CLOSED", "the engine is closed");
}

function unavailable(error: unknown): EngineError {
  if (error instanceof EngineError) return error;
  return new EngineError("ENGINE_UNAVAILABLE", `NATS: ${(error as Error).message}`, {
    cause: error,
  });
}
