import { PreparedMessage } from "../connection/prepared.js";
import type {
  Engine,
  HistoryPolicy,
  PresenceChange,
  PresenceMember,
  StreamPosition,
  TopicMessage,
} from "../engines/engine.js";
import type { Logger } from "../server/logger.js";

/**
 * The I/O thread's side of topics (docs/topics.md): local subscribers in a two-way index,
 * interest registered with the engine while a topic has local subscribers, presence for
 * members, recovery joined to the live stream without loss or duplicates, slow-consumer
 * policies, and fan-out of each message to every local subscriber.
 */

/** One local subscriber: a client connection. */
export interface HubSubscriber {
  /** Server-wide client id (presence lists it). */
  readonly clientId: string;
  /** Bytes queued for the peer and not yet written. */
  readonly bufferedAmount: number;
  /** Writes one message (the hub prepares the bytes once for all subscribers). */
  deliver(frame: OutgoingMessage): void;
  close(code: number, reason: string): void;
}

/** A message as it goes to subscribers (the payload, or its envelope), framed once. */
export type OutgoingMessage = PreparedMessage;

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
}

export type SubscribeResult =
  | { ok: true; position: StreamPosition; recovered: number }
  | { ok: false; reason: "epoch-changed" | "trimmed"; position: StreamPosition };

interface Subscription {
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
    const state = this.state(topic);
    const existing = state.subscribers.get(subscriber);
    const subscription: Subscription = existing ?? {
      silent: options.silent === true,
      held: options.since === undefined ? null : [],
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
    if (options.since === undefined) {
      const position = await this.engine.position(topic);
      return { ok: true, position, recovered: 0 };
    }
    const recovery = await this.engine.recover(topic, options.since);
    if (state.subscribers.get(subscriber) !== subscription) {
      // Unsubscribed (or gone) while recovering.
      return recovery.ok
        ? { ok: true, position: recovery.position, recovered: 0 }
        : { ok: false, reason: recovery.reason, position: recovery.position };
    }
    let recovered = 0;
    if (recovery.ok) {
      subscription.epoch = options.since.epoch;
      subscription.offset = options.since.offset;
      for (const message of recovery.messages) {
        this.deliverTo(subscriber, subscription, state, message);
        recovered++;
      }
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
      for (const message of more.messages) {
        this.deliverTo(subscriber, subscription, state, message);
        recovered++;
      }
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
    for (const message of held) this.deliverTo(subscriber, subscription, state, message);
    return recovery.ok
      ? { ok: true, position: recovery.position, recovered }
      : { ok: false, reason: recovery.reason, position: recovery.position };
  }

  unsubscribe(subscriber: HubSubscriber, topic: string): void {
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

  /** A message from the engine: to every local subscriber, the same bytes. */
  private fanOut(message: TopicMessage): void {
    const state = this.topics.get(message.topic);
    if (state === undefined) return;
    // Prepared once for every subscriber.
    const out = this.outgoing(state, message);
    // A snapshot: subscribing, unsubscribing or closing during the loop is safe.
    for (const [subscriber, subscription] of [...state.subscribers]) {
      if (state.subscribers.get(subscriber) !== subscription) continue;
      if (subscription.held !== null) {
        if (subscription.held.length < this.maxHeld) subscription.held.push(message);
        else subscription.overflowed = true;
        continue;
      }
      this.deliverTo(subscriber, subscription, state, message, out);
    }
  }

  private deliverTo(
    subscriber: HubSubscriber,
    subscription: Subscription,
    state: TopicState,
    message: TopicMessage,
    out: OutgoingMessage = this.outgoing(state, message),
  ): void {
    // Joined replay and live stream: nothing twice.
    if (message.epoch === subscription.epoch && message.offset <= subscription.offset) return;
    subscription.epoch = message.epoch;
    subscription.offset = message.offset;
    if (message.except === subscriber.clientId) return;
    const slow = state.policy.slowConsumer;
    if (slow !== undefined && subscriber.bufferedAmount > slow.maxBufferedBytes) {
      if (slow.action === "drop") {
        state.dropped++;
        return;
      }
      subscriber.close(slow.closeCode ?? 1008, "too slow for this topic");
      return;
    }
    subscriber.deliver(out);
  }

  /** The message as subscribers get it, framed (and compressed) once for all of them. */
  private outgoing(state: TopicState, message: TopicMessage): OutgoingMessage {
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
    const notice = new PreparedMessage(
      JSON.stringify({ topic: change.topic, presence: change.type, member: change.member }),
      false,
    );
    for (const [subscriber, subscription] of [...state.subscribers]) {
      if (subscription.held === null) subscriber.deliver(notice);
    }
  }

  private quietly(promise: Promise<unknown>): void {
    promise.catch((error: unknown) => {
      this.logger.warn({ err: error }, "topic engine call failed");
    });
  }
}
