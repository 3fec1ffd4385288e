import {
  type Engine,
  EngineError,
  type EngineErrorCode,
  type EngineHandlers,
  type HistoryPolicy,
  type PresenceChange,
  type PresenceMember,
  type Recovery,
  type StreamPosition,
  type TopicMessage,
} from "./engine.js";

/**
 * An engine in another process: each call crosses a channel to an engine host
 * (remote-host.ts) that runs the real engine, and its events come back the same way. This is
 * how the I/O processes of `switchboard serve --workers N` share topics through the primary
 * process when no broker is configured: the primary hosts one in-memory engine per worker on a
 * shared bus, so the workers behave as the nodes of one server.
 *
 * The channel must keep order and carry structured clones (node:cluster's "advanced"
 * serialization, or a MessagePort): calls are answered in order, and a message published before
 * a reply arrives before it.
 */

/** One message on the channel, either way. */
export type EngineWire =
  | { sb: "engine"; t: "call"; id: number; method: RemoteMethod; args: unknown[] }
  | { sb: "engine"; t: "reply"; id: number; value: unknown }
  | {
      sb: "engine";
      t: "fail";
      id: number;
      code: EngineErrorCode | "ENGINE_REMOTE";
      message: string;
    }
  | { sb: "engine"; t: "message"; message: TopicMessage }
  | { sb: "engine"; t: "presence"; change: PresenceChange };

export type RemoteMethod =
  | "start"
  | "publish"
  | "addInterest"
  | "removeInterest"
  | "join"
  | "leave"
  | "presence"
  | "presenceCount"
  | "position"
  | "recover"
  | "close";

export interface EngineChannel {
  send(message: EngineWire): void;
  /** Every message that arrives, in order; others on a shared channel are the caller's. */
  onMessage(handler: (message: EngineWire) => void): void;
}

/** True for what this module sends (a shared channel, such as cluster IPC, carries others). */
export function isEngineWire(value: unknown): value is EngineWire {
  return typeof value === "object" && value !== null && (value as { sb?: unknown }).sb === "engine";
}

/** How long `close` waits for the host to confirm. */
const CLOSE_TIMEOUT_MS = 2_000;

export class RemoteEngine implements Engine {
  private handlers: EngineHandlers | null = null;
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve(value: unknown): void; reject(error: Error): void }
  >();
  private state: "new" | "started" | "closed" = "new";

  constructor(
    readonly nodeId: string,
    private readonly channel: EngineChannel,
  ) {
    channel.onMessage((wire) => this.received(wire));
  }

  async start(handlers: EngineHandlers): Promise<void> {
    if (this.state === "closed") throw new EngineError("ENGINE_CLOSED", "the engine is closed");
    if (this.state === "started") {
      throw new EngineError("ENGINE_ALREADY_STARTED", `engine ${this.nodeId} was already started`);
    }
    this.state = "started";
    this.handlers = handlers;
    try {
      await this.call("start", [this.nodeId]);
    } catch (error) {
      this.state = "closed";
      this.handlers = null;
      throw error;
    }
  }

  publish(
    topic: string,
    payload: Uint8Array,
    options: { binary: boolean; history?: HistoryPolicy; except?: string },
  ): Promise<StreamPosition> {
    // A copy now (the caller may reuse its buffer); the clone happens later, when sent.
    return this.call("publish", [
      topic,
      new Uint8Array(payload),
      options,
    ]) as Promise<StreamPosition>;
  }

  addInterest(topic: string): Promise<void> {
    return this.call("addInterest", [topic]) as Promise<void>;
  }

  async removeInterest(topic: string): Promise<void> {
    if (this.state === "closed") return;
    await this.call("removeInterest", [topic]);
  }

  join(topic: string, member: PresenceMember): Promise<void> {
    return this.call("join", [topic, member]) as Promise<void>;
  }

  async leave(topic: string, clientId: string): Promise<void> {
    if (this.state === "closed") return;
    await this.call("leave", [topic, clientId]);
  }

  presence(topic: string): Promise<PresenceMember[]> {
    return this.call("presence", [topic]) as Promise<PresenceMember[]>;
  }

  presenceCount(topic: string): Promise<number> {
    return this.call("presenceCount", [topic]) as Promise<number>;
  }

  position(topic: string): Promise<StreamPosition> {
    return this.call("position", [topic]) as Promise<StreamPosition>;
  }

  recover(topic: string, since: StreamPosition): Promise<Recovery> {
    return this.call("recover", [topic, since]) as Promise<Recovery>;
  }

  async close(): Promise<void> {
    if (this.state === "closed") return;
    const started = this.state === "started";
    this.state = "closed";
    this.handlers = null;
    if (!started) return;
    // Bounded: a host that is gone without a word must not hold a shutdown up.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.send("close", []).catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  private call(method: RemoteMethod, args: unknown[]): Promise<unknown> {
    if (this.state === "closed") {
      return Promise.reject(new EngineError("ENGINE_CLOSED", "the engine is closed"));
    }
    if (this.state === "new" && method !== "start") {
      return Promise.reject(
        new EngineError("ENGINE_NOT_STARTED", `engine ${this.nodeId} is not started`),
      );
    }
    return this.send(method, args);
  }

  private send(method: RemoteMethod, args: unknown[]): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      try {
        this.channel.send({ sb: "engine", t: "call", id, method, args });
      } catch (error) {
        this.waiting.delete(id);
        reject(
          new EngineError(
            "ENGINE_UNAVAILABLE",
            `the engine host cannot be reached: ${String(error)}`,
          ),
        );
      }
    });
  }

  private received(wire: EngineWire): void {
    switch (wire.t) {
      case "reply":
      case "fail": {
        const waiter = this.waiting.get(wire.id);
        if (waiter === undefined) return;
        this.waiting.delete(wire.id);
        if (wire.t === "reply") waiter.resolve(wire.value);
        else {
          waiter.reject(
            wire.code === "ENGINE_REMOTE"
              ? new Error(wire.message)
              : new EngineError(wire.code, wire.message),
          );
        }
        return;
      }
      case "message":
        this.deliver(() => this.handlers?.message(wire.message));
        return;
      case "presence":
        this.deliver(() => this.handlers?.presence(wire.change));
        return;
    }
  }

  private deliver(run: () => void): void {
    try {
      run();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  /** The host is gone: every waiting call fails, and so do later ones. */
  disconnected(): void {
    this.state = "closed";
    this.handlers = null;
    for (const waiter of this.waiting.values()) {
      waiter.reject(new EngineError("ENGINE_UNAVAILABLE", "the engine host went away"));
    }
    this.waiting.clear();
  }
}
