/**
 * The engine interface: where topics keep what must be shared — published messages, which
 * nodes want which topics, who is present, and history. The in-memory engine (memory.ts) is the
 * embedded default; Redis and NATS engines implement the same interface so several nodes behave
 * as one server. Every engine passes the same contract suite (test/engines/contract.ts).
 *
 * An engine knows nothing of WebSocket clients: the I/O thread's topic hub (src/topics) keeps
 * the local subscribers and fans out what the engine delivers. Delivery is at-most-once;
 * history (offsets within an epoch) is what makes recovery after a gap possible.
 *
 * The rules every engine keeps (the contract suite checks each):
 *
 * - Order: every node sees a topic's messages in offset order, the same order on every node,
 *   and a publisher's messages in the order it published them. Nothing is promised across
 *   topics. Offsets of a topic are assigned by the engine, one by one, with no gaps.
 * - Interest is a flag per (node, topic), not a count: added twice and removed once leaves
 *   none. The hub counts its local subscribers and holds the flag while there are any.
 *   Removing interest stops delivery at once; adding it again delivers new messages only.
 * - History follows the policy of the latest publish to the topic, and what is kept is always
 *   the newest messages without gaps: a publish that keeps nothing empties the history, since
 *   a replay would otherwise skip that message.
 * - Recovery never skips: it returns every message after `since`, or says why it cannot
 *   ("trimmed" when some are no longer kept; "epoch-changed" when `since` is not a position of
 *   this history, an offset beyond the current one included).
 * - Presence: a member belongs to the node that joined it last. A second join updates the info
 *   and announces "join" again; `leave` from a node that does not hold the member is a silent
 *   no-op (so a late leave from a client's old node cannot remove it after it moved); `close`
 *   removes the node's members with leave events to the other nodes.
 * - Payloads and member info are taken when the call is made: a caller reusing its buffer
 *   cannot change what was published.
 * - `start` comes first and once; afterwards methods reject with EngineError codes below.
 */

export type EngineErrorCode =
  | "ENGINE_NOT_STARTED"
  | "ENGINE_ALREADY_STARTED"
  | "ENGINE_CLOSED"
  | "ENGINE_DUPLICATE_NODE_ID"
  | "ENGINE_INVALID_OPTIONS"
  | "ENGINE_INVALID_HISTORY_POLICY"
  | "ENGINE_INVALID_MEMBER"
  /** The broker cannot be reached (and the bounded wait for it is full, or it timed out). */
  | "ENGINE_UNAVAILABLE";

/** What engines reject with: a stable `code`, and a message saying what was wrong. */
export class EngineError extends Error {
  override readonly name = "EngineError";
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A place in a topic's stream. Offsets increase by one per message within an epoch. */
export interface StreamPosition {
  /**
   * Identifies one continuous history of the topic. A new epoch (the engine restarted without
   * its history, or the history was lost) means offsets from an older one mean nothing.
   */
  epoch: string;
  /** The offset of the last message published (0 before the first). */
  offset: number;
}

export interface TopicMessage {
  topic: string;
  epoch: string;
  /** 1 for the first message of an epoch, then +1 per message. */
  offset: number;
  payload: Uint8Array;
  binary: boolean;
  /** The node that published it (the engine's own `nodeId` for local publishes). */
  origin: string;
  /** A client that must not get it (its sender), as given to `publish`. */
  except?: string;
}

/** How much history a topic keeps. Without either, none is kept (offsets still increase). */
export interface HistoryPolicy {
  /** The last N messages. */
  limit?: number;
  /** Messages younger than this. */
  ttlMs?: number;
}

export interface PresenceMember {
  /** The client's id, unique across nodes. */
  clientId: string;
  /** A small JSON-serializable record the service set (a user name, say). */
  info: unknown;
}

export type PresenceChange =
  | { type: "join"; topic: string; member: PresenceMember }
  | { type: "leave"; topic: string; member: PresenceMember };

export type Recovery =
  | {
      ok: true;
      /** Every message after `since`, in order. */
      messages: TopicMessage[];
      position: StreamPosition;
    }
  | {
      ok: false;
      /** Why the gap cannot be filled: the client must resync from `position`. */
      reason: "epoch-changed" | "trimmed";
      position: StreamPosition;
    };

export interface EngineHandlers {
  /** A message for a topic this node has interest in (its own publishes included). */
  message(message: TopicMessage): void;
  /** Someone joined or left a topic this node has interest in. */
  presence(change: PresenceChange): void;
}

export interface Engine {
  /** This node's id (unique among the nodes sharing the engine). */
  readonly nodeId: string;
  /** Called once, before any other method. */
  start(handlers: EngineHandlers): Promise<void>;
  /**
   * Publishes: assigns the next offset, keeps the message in history per `history`, and
   * delivers it to every node with interest in the topic (this one included, possibly before
   * the promise settles).
   */
  publish(
    topic: string,
    payload: Uint8Array,
    options: { binary: boolean; history?: HistoryPolicy; except?: string },
  ): Promise<StreamPosition>;
  /** This node starts receiving the topic's messages and presence changes. */
  addInterest(topic: string): Promise<void>;
  /** And stops. */
  removeInterest(topic: string): Promise<void>;
  /** Adds or updates a member (a second join of the same client updates its info). */
  join(topic: string, member: PresenceMember): Promise<void>;
  leave(topic: string, clientId: string): Promise<void>;
  presence(topic: string): Promise<PresenceMember[]>;
  presenceCount(topic: string): Promise<number>;
  /** The topic's current position (epoch, last offset). */
  position(topic: string): Promise<StreamPosition>;
  /** The messages after `since`, or why they cannot be given. */
  recover(topic: string, since: StreamPosition): Promise<Recovery>;
  /** Releases everything; this node's presence entries go away. */
  close(): Promise<void>;
}
