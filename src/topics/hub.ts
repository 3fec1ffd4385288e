import { PreparedMessage } from "../connection/prepared.js";
import { PreparedBatch } from "../connection/prepared-batch.js";
import type {
  Engine,
  HistoryPolicy,
  PresenceChange,
  PresenceMember,
  Recovery,
  StreamPosition,
  TopicMessage,
} from "../engines/engine.js";
import type { Logger } from "../server/logger.js";

/**
 * The I/O thread's side of topics (docs/topics.md): local subscribers in a two-way index,
 * interest registered with the engine while a topic has local subscribers, presence for
 * members, recovery joined to the live stream without loss or duplicates, slow-consumer
 * policies, and fan-out to every local subscriber.
 *
 * Fan-out is gathered per turn: messages the engine delivers are queued and go out together at
 * the end of the turn (a microtask), each run of consecutive messages of one topic framed once
 * as one PreparedBatch that every subscriber gets as a single slice. Anything that must come
 * after those messages (a direct send to a subscriber, a subscribe or unsubscribe, a presence
 * notice) calls drain() first, so every subscriber sees one order.
 */

/** One local subscriber: a client connection. */
export interface HubSubscriber {
  /** Server-wide client id (presence lists it). */
  readonly clientId: string;
  /** Bytes queued for the peer and not yet written. */
  readonly bufferedAmount: number;
  /**
   * Writes messages [start, end) of a batch (the hub prepares the bytes once for all
   * subscribers; most get the whole batch).
   */
  deliver(batch: OutgoingBatch, start: number, end: number): void;
  close(code: number, reason: string): void;
}

/** Messages as they go to subscribers (the payloads, or their envelopes), framed once. */
export type OutgoingBatch = PreparedBatch;

export interface SlowConsumerPolicy {
  /** A subscriber with more buffered output than this is slow. */
  maxBufferedBytes: number;
  /** Skip the message for it (counted), or close it. */
  action: "drop" | "close";
  /** 1008 (policy violation) or 1013 (try again later); for "close". */
  closeCode?: 1008 | 1013;
}

export interface TopicPolicy {
  /** A topic name, or a prefix ending in "*" ("room:*"). The first matching policy applies. */
  pattern: string;
  history?: HistoryPolicy;
  /** Subscribers receive join and leave notices as messages. */
  announce?: boolean;
  /** Deliver `{"topic","epoch","offset","data"}` envelopes instead of raw payloads. */
  envelope?: boolean;
  slowConsumer?: SlowConsumerPolicy;
}

export interface SubscribeOptions {
  silent?: boolean;
  /** The member record presence lists (ignored for silent subscribers). */
  member?: unknown;
  /** Replay what came after this position before the live stream. */
  since?: StreamPosition;
  /**
   * Without `since`: replay up to this many of the latest messages the topic keeps first (a
   * chat room's recent history on joining), joined to the live stream like a recovery.
   */
  recent?: number;
}

export type SubscribeResult =
  | { ok: true; position: StreamPosition; recovered: number }
  | { ok: false; reason: "epoch-changed" | "trimmed"; position: StreamPosition };

interface Subscription {
  readonly subscriber: HubSubscriber;
  /** When it was made (hub.stamp): a fan-out skips subscriptions made while it runs. */
  readonly stamp: number;
  silent: boolean;
  /** Live messages held while a recovery is in flight; null once live. */
  held: TopicMessage[] | null;
  /** More arrived than could be held: recover again before going live. */
  overflowed: boolean;
  /** The last offset delivered (for joining a replay to the live stream). */
  epoch: string;
  offset: number;
}

interface TopicState {
  subscribers: Map<HubSubscriber, Subscription>;
  policy: TopicPolicy;
  /** Messages skipped for slow subscribers. */
  dropped: number;
  /** Interest registered with the engine (a promise while it is being registered). */
  interest: Promise<void> | null;
}

const DEFAULT_POLICY: TopicPolicy = { pattern: "*" };
const MAX_HELD = 10_000;
/** Queued fan-out past this many payload bytes goes out at once rather than at turn end. */
const MAX_PENDING_BYTES = 64 * 1024;

export interface TopicHubOptions {
  engine: Engine;
  policies?: readonly TopicPolicy[];
  logger: Logger;
  /** Live messages held per recovering subscriber before it recovers again (default 10,000). */
  maxHeldPerSubscriber?: number;
  /** Presence changes of topics with local subscribers (the services' presence hooks). */
  onPresence?: (change: PresenceChange) => void;
}

export class TopicHub {
  private readonly topics = new Map<string, TopicState>();
  private readonly topicsOf = new Map<HubSubscriber, Set<string>>();
  private readonly engine: Engine;
  private readonly policies: readonly TopicPolicy[];
  private readonly logger: Logger;
  private readonly maxHeld: number;
  /** Messages from the engine not yet fanned out, in arrival order. */
  private pending: TopicMessage[] = [];
  private pendingBytes = 0;
  private drainScheduled = false;
  private draining = false;
  private stamp = 0;

  constructor(private readonly options: TopicHubOptions) {
    this.maxHeld = options.maxHeldPerSubscriber ?? MAX_HELD;
    this.engine = options.engine;
    this.policies = options.policies ?? [];
    this.logger = options.logger;
  }

  start(): Promise<void> {
    return this.engine.start({
      message: (message) => this.fanOut(message),
      presence: (change) => this.presenceChanged(change),
    });
  }

  policyFor(topic: string): TopicPolicy {
    for (const policy of this.policies) {
      const { pattern } = policy;
      if (pattern === topic) return policy;
      if (pattern.endsWith("*") && topic.startsWith(pattern.slice(0, -1))) return policy;
    }
    return DEFAULT_POLICY;
  }

  /** Subscribers of a topic on this node (silent ones included). */
  localSubscribers(topic: string): number {
    return this.topics.get(topic)?.subscribers.size ?? 0;
  }

  dropped(topic: string): number {
    return this.topics.get(topic)?.dropped ?? 0;
  }

  async subscribe(
    subscriber: HubSubscriber,
    topic: string,
    options: SubscribeOptions = {},
  ): Promise<SubscribeResult> {
    // Messages published before this subscription go out first (or, for a new one, not at all).
    this.drain();
    const state = this.state(topic);
    const existing = state.subscribers.get(subscriber);
    const recent = options.since === undefined ? Math.max(0, Math.floor(options.recent ?? 0)) : 0;
    const replays = options.since !== undefined || recent > 0;
    const subscription: Subscription = existing ?? {
      subscriber,
      stamp: this.stamp++,
      silent: options.silent === true,
      held: replays ? [] : null,
      overflowed: false,
      epoch: "",
      offset: 0,
    };
    if (existing === undefined) {
      state.subscribers.set(subscriber, subscription);
      let topics = this.topicsOf.get(subscriber);
      if (topics === undefined) {
        topics = new Set();
        this.topicsOf.set(subscriber, topics);
      }
      topics.add(topic);
    }
    await this.ensureInterest(topic, state);
    if (!subscription.silent) {
      await this.engine.join(topic, {
        clientId: subscriber.clientId,
        info: options.member ?? null,
      });
    }
    if (!replays || existing !== undefined) {
      // Live only; an existing subscription has its stream already.
      const position = await this.engine.position(topic);
      return { ok: true, position, recovered: 0 };
    }
    const { since, recovery } =
      options.since === undefined
        ? await this.recoverRecent(topic, recent)
        : { since: options.since, recovery: await this.engine.recover(topic, options.since) };
    if (state.subscribers.get(subscriber) !== subscription) {
      // Unsubscribed (or gone) while recovering.
      return recovery.ok
        ? { ok: true, position: recovery.position, recovered: 0 }
        : { ok: false, reason: recovery.reason, position: recovery.position };
    }
    let recovered = 0;
    if (recovery.ok) {
      subscription.epoch = since.epoch;
      subscription.offset = since.offset;
      this.deliverMessages(subscription, state, recovery.messages);
      recovered += recovery.messages.length;
    } else {
      // The gap cannot be filled: live messages continue from the current position.
      subscription.epoch = recovery.position.epoch;
      subscription.offset = recovery.position.offset;
    }
    // Join the replay to the live stream: what arrived meanwhile, minus what was replayed.
    // When more arrived than could be held, fetch the rest from history again (bounded).
    for (let round = 0; recovery.ok && subscription.overflowed && round < 8; round++) {
      subscription.overflowed = false;
      subscription.held = [];
      const more = await this.engine.recover(topic, {
        epoch: subscription.epoch,
        offset: subscription.offset,
      });
      if (state.subscribers.get(subscriber) !== subscription) break;
      if (!more.ok) {
        subscription.held = null;
        return { ok: false, reason: more.reason, position: more.position };
      }
      this.deliverMessages(subscription, state, more.messages);
      recovered += more.messages.length;
    }
    if (subscription.overflowed) {
      // Still falling behind after several rounds: say so rather than skip messages silently.
      subscription.held = null;
      subscription.overflowed = false;
      const position = await this.engine.position(topic);
      return { ok: false, reason: "trimmed", position };
    }
    const held = subscription.held ?? [];
    subscription.held = null;
    this.deliverMessages(subscription, state, held);
    return recovery.ok
      ? { ok: true, position: recovery.position, recovered }
      : { ok: false, reason: recovery.reason, position: recovery.position };
  }

  /**
   * The latest `count` kept messages, or as many as history still holds (trimmed by count or
   * age): the widest window a recovery succeeds from, found with O(log count) recoveries and no
   * engine method beyond recover. The first try is the whole window, the usual answer.
   */
  private async recoverRecent(
    topic: string,
    count: number,
  ): Promise<{ since: StreamPosition; recovery: Recovery }> {
    const position = await this.engine.position(topic);
    const from = (window: number) => ({ epoch: position.epoch, offset: position.offset - window });
    let best: { since: StreamPosition; recovery: Recovery } = {
      since: position,
      recovery: { ok: true, messages: [], position },
    };
    // Binary search for the widest window history still covers: O(log count) recoveries.
    let covered = 0;
    let missing = Math.min(count, position.offset) + 1;
    for (let first = true; missing - covered > 1; first = false) {
      const window = first ? missing - 1 : (covered + missing) >> 1;
      const since = from(window);
      const recovery = await this.engine.recover(topic, since);
      if (recovery.ok && recovery.position.epoch === position.epoch) {
        covered = window;
        best = { since, recovery };
      } else missing = window;
    }
    return best;
  }

  unsubscribe(subscriber: HubSubscriber, topic: string): void {
    // Messages published while it was subscribed still reach it.
    this.drain();
    const state = this.topics.get(topic);
    const subscription = state?.subscribers.get(subscriber);
    if (state === undefined || subscription === undefined) return;
    state.subscribers.delete(subscriber);
    const topics = this.topicsOf.get(subscriber);
    if (topics?.delete(topic) && topics.size === 0) this.topicsOf.delete(subscriber);
    if (!subscription.silent) this.quietly(this.engine.leave(topic, subscriber.clientId));
    if (state.subscribers.size === 0) {
      this.topics.delete(topic);
      if (state.interest !== null) this.quietly(this.engine.removeInterest(topic));
    }
  }

  /** Drops every subscription of a subscriber that is gone. */
  remove(subscriber: HubSubscriber): void {
    const topics = this.topicsOf.get(subscriber);
    if (topics === undefined) return;
    for (const topic of [...topics]) this.unsubscribe(subscriber, topic);
  }

  /** Publishes; `except` is a client id that does not get the message (its sender). */
  publish(
    topic: string,
    payload: Uint8Array,
    binary: boolean,
    except?: string,
  ): Promise<StreamPosition> {
    return this.engine.publish(topic, payload, {
      binary,
      history: this.policyFor(topic).history,
      except,
    });
  }

  presence(topic: string): Promise<PresenceMember[]> {
    return this.engine.presence(topic);
  }

  presenceCount(topic: string): Promise<number> {
    return this.engine.presenceCount(topic);
  }

  close(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    this.topics.clear();
    this.topicsOf.clear();
    return this.engine.close();
  }

  // ─────────────────────────── delivery ───────────────────────────

  private state(topic: string): TopicState {
    let state = this.topics.get(topic);
    if (state === undefined) {
      state = { subscribers: new Map(), policy: this.policyFor(topic), dropped: 0, interest: null };
      this.topics.set(topic, state);
    }
    return state;
  }

  private ensureInterest(topic: string, state: TopicState): Promise<void> {
    state.interest ??= this.engine.addInterest(topic);
    return state.interest;
  }

  /** A message from the engine: queued for this turn's fan-out. */
  private fanOut(message: TopicMessage): void {
    if (!this.topics.has(message.topic)) return;
    this.pending.push(message);
    this.pendingBytes += message.payload.length;
    if (this.pendingBytes >= MAX_PENDING_BYTES) this.drain();
    else if (!this.drainScheduled) {
      this.drainScheduled = true;
      queueMicrotask(this.drainQueued);
    }
  }

  private readonly drainQueued = (): void => {
    this.drainScheduled = false;
    this.drain();
  };

  /**
   * Fans out every queued message now. Callers that are about to write to subscribers, or to
   * change who subscribes, call this first. Does nothing when called from within a fan-out
   * (a subscriber closed while being written to): the running one carries on in order.
   */
  drain(): void {
    if (this.draining || this.pending.length === 0) return;
    this.draining = true;
    try {
      // Messages the engine delivers during the fan-out are queued and taken by the next round.
      while (this.pending.length > 0) {
        const messages = this.pending;
        this.pending = [];
        this.pendingBytes = 0;
        // Runs of one topic keep the order across topics: A1 B1 A2 is three runs, not two.
        for (let i = 0; i < messages.length; ) {
          const topic = messages[i].topic;
          let j = i + 1;
          while (j < messages.length && messages[j].topic === topic) j++;
          this.fanOutRun(topic, i === 0 && j === messages.length ? messages : messages.slice(i, j));
          i = j;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Consecutive messages of one topic: framed once, one slice per subscriber. */
  private fanOutRun(topic: string, messages: TopicMessage[]): void {
    const state = this.topics.get(topic);
    if (state === undefined) return;
    const batch = this.outgoing(state, messages);
    const excepted = exceptedIndexes(messages);
    const stamp = this.stamp;
    // The live index: a subscriber removed during the loop is not visited, one added during it
    // (a newer stamp) is skipped.
    for (const subscription of state.subscribers.values()) {
      if (subscription.stamp >= stamp) continue;
      if (subscription.held !== null) {
        for (const message of messages) {
          if (subscription.held.length < this.maxHeld) subscription.held.push(message);
          else subscription.overflowed = true;
        }
        continue;
      }
      this.deliverRun(subscription, state, messages, batch, excepted);
    }
  }

  /** Replayed or held messages to one subscriber. */
  private deliverMessages(
    subscription: Subscription,
    state: TopicState,
    messages: readonly TopicMessage[],
  ): void {
    if (messages.length === 0) return;
    const batch = this.outgoing(state, messages);
    this.deliverRun(subscription, state, messages, batch, exceptedIndexes(messages));
  }

  private deliverRun(
    subscription: Subscription,
    state: TopicState,
    messages: readonly TopicMessage[],
    batch: OutgoingBatch,
    excepted: Map<string, number[]> | null,
  ): void {
    const end = messages.length;
    // Joined replay and live stream: nothing twice. Offsets rise within a run, so what was
    // already delivered is a prefix.
    let start = 0;
    while (start < end && delivered(subscription, messages[start])) start++;
    if (start === end) return;
    const last = messages[end - 1];
    subscription.epoch = last.epoch;
    subscription.offset = last.offset;
    const subscriber = subscription.subscriber;
    const skip = excepted?.get(subscriber.clientId);
    const slow = state.policy.slowConsumer;
    if (slow !== undefined && subscriber.bufferedAmount > slow.maxBufferedBytes) {
      if (slow.action === "drop") {
        let count = end - start;
        if (skip !== undefined) for (const index of skip) if (index >= start) count--;
        state.dropped += count;
        return;
      }
      subscriber.close(slow.closeCode ?? 1008, "too slow for this topic");
      return;
    }
    try {
      if (skip === undefined) {
        subscriber.deliver(batch, start, end);
        return;
      }
      // Its own messages (`except`) are left out: the slices between them.
      let from = start;
      for (const index of skip) {
        if (index < from) continue;
        if (index > from) subscriber.deliver(batch, from, index);
        from = index + 1;
      }
      if (from < end) subscriber.deliver(batch, from, end);
    } catch (error) {
      this.logger.error({ err: error, clientId: subscriber.clientId }, "topic delivery failed");
    }
  }

  /** The messages as subscribers get them, framed (and compressed) once for all of them. */
  private outgoing(state: TopicState, messages: readonly TopicMessage[]): OutgoingBatch {
    const prepared = new Array<PreparedMessage>(messages.length);
    for (let i = 0; i < messages.length; i++) prepared[i] = this.prepare(state, messages[i]);
    return new PreparedBatch(prepared);
  }

  private prepare(state: TopicState, message: TopicMessage): PreparedMessage {
    if (!state.policy.envelope) return new PreparedMessage(message.payload, message.binary);
    const envelope: Record<string, unknown> = {
      topic: message.topic,
      epoch: message.epoch,
      offset: message.offset,
    };
    if (message.binary) envelope.data64 = Buffer.from(message.payload).toString("base64");
    else envelope.data = Buffer.from(message.payload).toString("utf8");
    return new PreparedMessage(JSON.stringify(envelope), false);
  }

  private presenceChanged(change: PresenceChange): void {
    this.options.onPresence?.(change);
    const state = this.topics.get(change.topic);
    if (state === undefined || !state.policy.announce) return;
    // After the messages published before the change.
    this.drain();
    const notice = new PreparedBatch([
      new PreparedMessage(
        JSON.stringify({ topic: change.topic, presence: change.type, member: change.member }),
        false,
      ),
    ]);
    const stamp = this.stamp;
    for (const subscription of state.subscribers.values()) {
      if (subscription.stamp >= stamp || subscription.held !== null) continue;
      try {
        subscription.subscriber.deliver(notice, 0, 1);
      } catch (error) {
        this.logger.error(
          { err: error, clientId: subscription.subscriber.clientId },
          "presence notice failed",
        );
      }
    }
  }

  private quietly(promise: Promise<unknown>): void {
    promise.catch((error: unknown) => {
      this.logger.warn({ err: error }, "topic engine call failed");
    });
  }
}

/** Whether a subscriber already has this message (replayed, or live before a replay). */
function delivered(subscription: Subscription, message: TopicMessage): boolean {
  return message.epoch === subscription.epoch && message.offset <= subscription.offset;
}

/** For each `except` client id of a run, the indexes of the messages it does not get. */
function exceptedIndexes(messages: readonly TopicMessage[]): Map<string, number[]> | null {
  let excepted: Map<string, number[]> | null = null;
  for (let i = 0; i < messages.length; i++) {
    const except = messages[i].except;
    if (except === undefined) continue;
    excepted ??= new Map();
    const indexes = excepted.get(except);
    if (indexes === undefined) excepted.set(except, [i]);
    else indexes.push(i);
  }
  return excepted;
}
