/**
 * The engine interface: where topics keep what must be shared — published messages, which
 * nodes want which topics, who is present, and history. The in-memory engine (memory.ts) is the
 * embedded default; Redis and NATS engines implement the same interface so several nodes behave
 * as one server. Every engine passes the same contract suite (test/engines/contract.ts).
 *
 * An engine knows nothing of WebSocket clients: the I/O thread's topic hub (src/topics) keeps
 * the local subscribers and fans out what the engine delivers. Delivery is at-most-once;
 * history (offsets within an epoch) is what makes recovery after a gap possible.
 */

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
