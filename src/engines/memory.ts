import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
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

/**
 * The in-memory engine: the embedded default, and the reference the contract suite
 * (test/engines/contract.ts) is checked against.
 *
 * What is shared between nodes lives in a `MemoryBus`: streams (epoch, offset, kept messages),
 * presence, and which nodes have interest in which topics. An engine built without a bus has a
 * private one, so it behaves as a single node. Several engines on one bus behave as several
 * nodes of one server, which is how multi-node behaviour is tested without Redis or NATS.
 *
 * It keeps the rules in engine.ts. Choices the interface leaves open, and what this engine does:
 *
 * - Delivery is synchronous: `publish`, `join`, `leave` and `close` call the handlers of every
 *   interested node before their promise settles. Calls made from inside a handler are queued
 *   and delivered once the current event has reached every node, so each node still sees a
 *   topic's events in the order they happened (offset order for messages). A handler that
 *   throws does not stop delivery to the others; its error is rethrown from a microtask, where
 *   it surfaces as an uncaught exception, as it would from a network engine's socket callback.
 *   Events of different topics also keep one order here, though the contract does not ask it.
 * - Streams: a topic's stream (a random epoch, offsets from 1) is created by the first
 *   `publish`, `position` or `recover`. Epoch and offset are kept for as long as the bus lives
 *   (a few dozen bytes per topic ever used); only the messages are dropped. Dropping the
 *   counters would start a new epoch and tell a client that missed nothing that it must resync.
 * - History: a publish keeps nothing with no policy, limit 0 or ttlMs 0. Messages are trimmed
 *   by count at once, and by age on publish, position and recover (no timers): an expired
 *   message may stay in memory until the topic is next touched, but is never replayed.
 *   The clock is monotonic by default and belongs to the bus, like the clock of a shared store.
 * - Payloads and member info are copied when the call is made (info through JSON, as a network
 *   engine would serialize it; `undefined` becomes `null`). Delivered messages, members and
 *   changes are frozen and shared by every node that receives them.
 * - `start` must come first and once; after `close` every method rejects with ENGINE_CLOSED,
 *   except `close`, `leave` and `removeInterest`, which have nothing left to release.
 */

export interface MemoryBusOptions {
  /** Milliseconds on a clock that history ages are measured with (default: monotonic). */
  now?: () => number;
}

export interface MemoryEngineOptions {
  /** Unique among the engines on the bus (default: a random UUID). */
  nodeId?: string;
  /** The clock of the engine's own bus; with `bus`, give the clock to the bus instead. */
  now?: () => number;
  /** Shared with other engines to act as several nodes; without it, a private bus. */
  bus?: MemoryBus;
}

/** What a bus holds, for tests and metrics. */
export interface MemoryBusStats {
  /** Started engines that are not closed. */
  nodes: number;
  /** Streams (epoch and offset counters) created. */
  streams: number;
  /** Messages held as history, over all streams. */
  messages: number;
  /** Presence members, over all topics. */
  members: number;
  /** (node, topic) interests. */
  interests: number;
}

/** The shared state of several MemoryEngines in one process: what Redis or NATS would hold. */
export class MemoryBus {
  constructor(options: MemoryBusOptions = {}) {
    cores.set(this, new BusCore(options.now ?? (() => performance.now())));
  }

  stats(): MemoryBusStats {
    return coreOf(this).stats();
  }
}

export class MemoryEngine implements Engine {
  readonly nodeId: string;
  private readonly core: BusCore;
  private node: Node | null = null;
  private closed = false;

  constructor(options: MemoryEngineOptions = {}) {
    if (options.bus !== undefined && options.now !== undefined) {
      throw new EngineError(
        "ENGINE_INVALID_OPTIONS",
        "the clock belongs to the bus: pass `now` to new MemoryBus() when sharing one",
      );
    }
    this.nodeId = options.nodeId ?? randomUUID();
    this.core = coreOf(options.bus ?? new MemoryBus({ now: options.now }));
  }

  async start(handlers: EngineHandlers): Promise<void> {
    if (this.closed) throw closedError();
    if (this.node !== null) {
      throw new EngineError("ENGINE_ALREADY_STARTED", `engine ${this.nodeId} was already started`);
    }
    this.node = this.core.attach(this.nodeId, handlers);
  }

  async publish(
    topic: string,
    payload: Uint8Array,
    options: { binary: boolean; history?: HistoryPolicy; except?: string },
  ): Promise<StreamPosition> {
    return this.core.publish(
      this.live(),
      topic,
      payload,
      options.binary === true,
      options.history,
      options.except,
    );
  }

  async addInterest(topic: string): Promise<void> {
    this.core.addInterest(this.live(), topic);
  }

  async removeInterest(topic: string): Promise<void> {
    if (this.closed) return;
    this.core.removeInterest(this.live(), topic);
  }

  async join(topic: string, member: PresenceMember): Promise<void> {
    this.core.join(this.live(), topic, member);
  }

  async leave(topic: string, clientId: string): Promise<void> {
    if (this.closed) return;
    this.core.leave(this.live(), topic, clientId);
  }

  async presence(topic: string): Promise<PresenceMember[]> {
    this.live();
    return this.core.presence(topic);
  }

  async presenceCount(topic: string): Promise<number> {
    this.live();
    return this.core.presenceCount(topic);
  }

  async position(topic: string): Promise<StreamPosition> {
    this.live();
    return this.core.position(topic);
  }

  async recover(topic: string, since: StreamPosition): Promise<Recovery> {
    this.live();
    return this.core.recover(topic, since);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const node = this.node;
    this.node = null;
    if (node !== null) this.core.detach(node);
  }

  private live(): Node {
    if (this.closed) throw closedError();
    if (this.node === null) {
      throw new EngineError("ENGINE_NOT_STARTED", `engine ${this.nodeId} is not started`);
    }
    return this.node;
  }
}

// ─────────────────────────── shared state ───────────────────────────

const cores = new WeakMap<MemoryBus, BusCore>();

function coreOf(bus: MemoryBus): BusCore {
  const core = cores.get(bus);
  if (core === undefined) throw new EngineError("ENGINE_INVALID_OPTIONS", "not a MemoryBus");
  return core;
}

function closedError(): EngineError {
  return new EngineError("ENGINE_CLOSED", "the engine is closed");
}

/** A started engine as the bus sees it. */
class Node {
  readonly interests = new Set<string>();
  /** The members this node holds, per topic (what `close` removes). */
  readonly joined = new Map<string, Set<string>>();

  constructor(
    readonly nodeId: string,
    readonly handlers: EngineHandlers,
  ) {}
}

interface Member {
  member: PresenceMember;
  owner: Node;
}

type BusEvent =
  | { kind: "message"; topic: string; message: TopicMessage }
  | { kind: "presence"; topic: string; change: PresenceChange };

interface Delivery {
  event: BusEvent;
  /** The nodes interested when the event happened. */
  nodes: Node[];
}

class BusCore {
  private readonly nodes = new Map<string, Node>();
  private readonly streams = new Map<string, Stream>();
  private readonly interested = new Map<string, Set<Node>>();
  private readonly members = new Map<string, Map<string, Member>>();
  private readonly queue: Delivery[] = [];
  private draining = false;

  constructor(readonly now: () => number) {}

  attach(nodeId: string, handlers: EngineHandlers): Node {
    if (this.nodes.has(nodeId)) {
      throw new EngineError("ENGINE_DUPLICATE_NODE_ID", `node id ${nodeId} is already on the bus`);
    }
    const node = new Node(nodeId, handlers);
    this.nodes.set(nodeId, node);
    return node;
  }

  detach(node: Node): void {
    // Interest goes first: the closing node hears nothing of its own departure.
    for (const topic of [...node.interests]) this.removeInterest(node, topic);
    for (const [topic, clientIds] of [...node.joined]) {
      for (const clientId of [...clientIds]) this.leave(node, topic, clientId);
    }
    this.nodes.delete(node.nodeId);
  }

  publish(
    node: Node,
    topic: string,
    payload: Uint8Array,
    binary: boolean,
    history: HistoryPolicy | undefined,
    except?: string,
  ): StreamPosition {
    const policy = checkPolicy(history);
    const stream = this.stream(topic);
    const offset = ++stream.offset;
    const message: TopicMessage = Object.freeze({
      topic,
      epoch: stream.epoch,
      offset,
      // A copy: the caller may reuse its buffer as soon as the call returns.
      payload: new Uint8Array(payload),
      binary,
      origin: node.nodeId,
      ...(except === undefined ? {} : { except }),
    });
    stream.keep(message, this.now(), policy);
    this.dispatch({ kind: "message", topic, message });
    return { epoch: stream.epoch, offset };
  }

  addInterest(node: Node, topic: string): void {
    node.interests.add(topic);
    let nodes = this.interested.get(topic);
    if (nodes === undefined) {
      nodes = new Set();
      this.interested.set(topic, nodes);
    }
    nodes.add(node);
  }

  removeInterest(node: Node, topic: string): void {
    node.interests.delete(topic);
    const nodes = this.interested.get(topic);
    if (nodes?.delete(node) && nodes.size === 0) this.interested.delete(topic);
  }

  join(node: Node, topic: string, member: PresenceMember): void {
    const frozen = copyMember(member);
    let members = this.members.get(topic);
    if (members === undefined) {
      members = new Map();
      this.members.set(topic, members);
    }
    const previous = members.get(frozen.clientId);
    // The client moved: the old node no longer holds it (its leave and close leave it alone).
    if (previous !== undefined && previous.owner !== node) {
      disown(previous.owner, topic, frozen.clientId);
    }
    members.set(frozen.clientId, { member: frozen, owner: node });
    let held = node.joined.get(topic);
    if (held === undefined) {
      held = new Set();
      node.joined.set(topic, held);
    }
    held.add(frozen.clientId);
    const change: PresenceChange = Object.freeze({ type: "join", topic, member: frozen });
    this.dispatch({ kind: "presence", topic, change });
  }

  leave(node: Node, topic: string, clientId: string): void {
    const members = this.members.get(topic);
    const entry = members?.get(clientId);
    if (members === undefined || entry === undefined || entry.owner !== node) return;
    members.delete(clientId);
    if (members.size === 0) this.members.delete(topic);
    disown(node, topic, clientId);
    const change: PresenceChange = Object.freeze({ type: "leave", topic, member: entry.member });
    this.dispatch({ kind: "presence", topic, change });
  }

  presence(topic: string): PresenceMember[] {
    const members = this.members.get(topic);
    if (members === undefined) return [];
    return Array.from(members.values(), (entry) => entry.member);
  }

  presenceCount(topic: string): number {
    return this.members.get(topic)?.size ?? 0;
  }

  position(topic: string): StreamPosition {
    const stream = this.stream(topic);
    stream.trim(this.now());
    return { epoch: stream.epoch, offset: stream.offset };
  }

  recover(topic: string, since: StreamPosition): Recovery {
    const stream = this.stream(topic);
    stream.trim(this.now());
    const position = { epoch: stream.epoch, offset: stream.offset };
    const offset = since.offset;
    if (
      since.epoch !== stream.epoch ||
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      offset > stream.offset
    ) {
      return { ok: false, reason: "epoch-changed", position };
    }
    const messages = stream.after(offset);
    if (messages === null) return { ok: false, reason: "trimmed", position };
    return { ok: true, messages, position };
  }

  stats(): MemoryBusStats {
    let messages = 0;
    for (const stream of this.streams.values()) messages += stream.size;
    let members = 0;
    for (const topic of this.members.values()) members += topic.size;
    let interests = 0;
    for (const nodes of this.interested.values()) interests += nodes.size;
    return { nodes: this.nodes.size, streams: this.streams.size, messages, members, interests };
  }

  private stream(topic: string): Stream {
    let stream = this.streams.get(topic);
    if (stream === undefined) {
      stream = new Stream();
      this.streams.set(topic, stream);
    }
    return stream;
  }

  /**
   * Delivers an event to the nodes interested in its topic now. An event raised by a handler
   * waits until the current one has reached every node, so all nodes see one order.
   */
  private dispatch(event: BusEvent): void {
    const interested = this.interested.get(event.topic);
    if (interested === undefined || interested.size === 0) return;
    this.queue.push({ event, nodes: [...interested] });
    if (this.draining) return;
    this.draining = true;
    try {
      // The queue grows only with events raised by handlers during this loop.
      for (let i = 0; i < this.queue.length; i++) {
        const { event: next, nodes } = this.queue[i]!;
        for (const node of nodes) {
          // Interest removed (or the node closed) since the event happened: nothing more.
          if (!node.interests.has(next.topic)) continue;
          try {
            if (next.kind === "message") node.handlers.message(next.message);
            else node.handlers.presence(next.change);
          } catch (error) {
            queueMicrotask(() => {
              throw error;
            });
          }
        }
      }
    } finally {
      this.queue.length = 0;
      this.draining = false;
    }
  }
}

function disown(node: Node, topic: string, clientId: string): void {
  const held = node.joined.get(topic);
  if (held?.delete(clientId) && held.size === 0) node.joined.delete(topic);
}

// ─────────────────────────── streams and history ───────────────────────────

interface Kept {
  message: TopicMessage;
  at: number;
}

/** Compact the kept array once this many slots before `head` are dead (and half of it). */
const COMPACT_AFTER = 64;

/** One topic's stream: its epoch, last offset, and the newest messages, without gaps. */
class Stream {
  readonly epoch = randomUUID();
  offset = 0;
  private policy: HistoryPolicy | undefined;
  /** Kept messages from `head` on, oldest first: offsets `offset - size + 1` to `offset`. */
  private kept: Array<Kept | undefined> = [];
  private head = 0;

  get size(): number {
    return this.kept.length - this.head;
  }

  /** Keeps the message just published (its offset is `this.offset`) as `policy` says. */
  keep(message: TopicMessage, at: number, policy: HistoryPolicy | undefined): void {
    this.policy = policy;
    if (policy === undefined) {
      // Keeping older messages without this one would leave a gap in the history.
      this.clear();
      return;
    }
    this.kept.push({ message, at });
    this.trim(at);
  }

  /** Drops what the policy no longer allows: beyond the last `limit`, or `ttlMs` old. */
  trim(now: number): void {
    const policy = this.policy;
    const size = this.size;
    if (size === 0) return;
    if (policy === undefined) {
      this.clear();
      return;
    }
    let drop = policy.limit !== undefined && size > policy.limit ? size - policy.limit : 0;
    if (policy.ttlMs !== undefined) {
      const ttl = policy.ttlMs;
      // Oldest first, so the expired ones are a prefix.
      while (drop < size && now - this.kept[this.head + drop]!.at >= ttl) drop++;
    }
    if (drop === 0) return;
    if (drop === size) {
      this.clear();
      return;
    }
    this.kept.fill(undefined, this.head, this.head + drop);
    this.head += drop;
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.kept.length) {
      this.kept = this.kept.slice(this.head);
      this.head = 0;
    }
  }

  /** The messages after `offset` (at most the current one), or null if some are gone. */
  after(offset: number): TopicMessage[] | null {
    if (offset === this.offset) return [];
    const size = this.size;
    const oldest = this.offset - size + 1;
    if (size === 0 || oldest > offset + 1) return null;
    const messages: TopicMessage[] = [];
    for (let i = this.head + (offset + 1 - oldest); i < this.kept.length; i++) {
      messages.push(this.kept[i]!.message);
    }
    return messages;
  }

  private clear(): void {
    this.kept = [];
    this.head = 0;
  }
}

// ─────────────────────────── members ───────────────────────────

/** A frozen copy of the member, its info through JSON as a network engine would send it. */
function copyMember(member: PresenceMember): PresenceMember {
  const { clientId, infoJson } = memberInfoJson(member);
  return frozenMember(clientId, infoJson);
}
