import { isUtf8 } from "node:buffer";
import {
  type Batch,
  BatchWriter,
  Command,
  clientIdOf,
  type ErrorInfo,
  Event,
  errorInfo,
  HotFlag,
  type LoadedInfo,
  type OpenInfo,
  readBatch,
  type SnapshotInfo,
  type StartInfo,
  type UpgradeDecision,
  type UpgradeRequestInfo,
} from "../isolation/batch.js";
import type { RuntimeChannel } from "../isolation/transport.js";
import type { Logger } from "../server/logger.js";
import { sharedEmptyList } from "../shared-empty.js";
import { isThenable } from "../thenable.js";
import type { ResolvedServiceConfig } from "./config.js";
import {
  type BroadcastOptions,
  type Client,
  exportDefinedAt,
  isServiceDefinition,
  type PresenceChange,
  type PresenceMember,
  type SendData,
  type SendOptions,
  type ServiceContext,
  type ServiceError,
  type ServiceHooks,
  type ServiceMessage,
  type ServiceOrigin,
  type SubscribeOptions,
  type SubscribeResult,
  type TopicPosition,
  type UpgradeRequest,
} from "./define.js";
import { parseResume, type ResumeParse } from "./resume.js";

/**
 * The service side of the boundary: loads a module, runs its hooks on the events the I/O thread
 * sends, and turns what the hooks do (send, close, publish...) into commands. The same class
 * runs on the I/O thread, in a worker and in a child process; only the channel differs.
 *
 * Hooks never run inside one another: events are dispatched from a batch, in order, and the
 * events of one client wait while a hook for that client has not settled, so an async `open`
 * finishes before that client's first `message`.
 */

/** Past this many unread messages a pull-style client stops being read, until it catches up. */
const PULL_HIGH_WATER = 256;
const PULL_LOW_WATER = 64;
const NO_POSITIONS: ReadonlyMap<string, TopicPosition> = new Map();
/** The most a subscribe may replay as recent history (a page of a chat, not an export). */
const MAX_RECENT = 10_000;

class Message implements ServiceMessage {
  private decoded: string | null = null;
  /** bytes() was called: the caller may have changed them, so a forward would be wrong. */
  private exposed = false;
  constructor(
    private readonly payload: Buffer,
    readonly isBinary: boolean,
    /** The batch it came in, and its ordinal among the batch's kept payloads (-1: not kept). */
    readonly keptSeq = 0,
    readonly keptOrdinal = -1,
  ) {}
  bytes(): Uint8Array {
    this.exposed = true;
    return this.payload;
  }
  /**
   * Whether the I/O thread still has this message's bytes as it received them: kept, from the
   * batch `handling`, and not handed out by bytes().
   */
  forwardable(handling: number): boolean {
    return this.keptOrdinal >= 0 && this.keptSeq === handling && !this.exposed;
  }
  text(): string {
    this.decoded ??= this.payload.toString("utf8");
    return this.decoded;
  }
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

class HookError extends Error implements ServiceError {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ServiceError";
  }
}

type Task = () => unknown;

const EMPTY_RECORD: Readonly<Record<string, string>> = Object.freeze({});

/** A frozen copy of a small record; the empty one is shared, as most clients have no params. */
function frozenCopy(record: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  for (const _ in record) return Object.freeze({ ...record });
  return EMPTY_RECORD;
}

/** Empty lists every client shares until it needs its own (src/shared-empty.ts). */
const NO_TASKS = sharedEmptyList<Task>();
const NO_MESSAGES = sharedEmptyList<ServiceMessage>();

class RuntimeClient<Data> implements Client<Data> {
  readonly id: string;
  open = true;
  data: Data;
  /** Hooks for this client wait while one of them has not settled. */
  busy = false;
  /** Hooks waiting for the one running (an empty list shared until a client needs its own). */
  tasks: Task[] = NO_TASKS;
  /** Messages waiting for the pull style (`for await`); shared empty list until one arrives. */
  inbox: ServiceMessage[] = NO_MESSAGES;
  paused = false;
  wake: (() => void) | null = null;
  closed = false;

  constructor(
    readonly wireId: number,
    idPrefix: string | undefined,
    private readonly runtime: ServiceRuntime,
    readonly remoteAddress: string,
    readonly params: Readonly<Record<string, string>>,
    private parsedQuery: URLSearchParams | string,
    readonly headers: Readonly<Record<string, string>>,
    readonly protocol: string,
    readonly handover: boolean,
    data: Data,
    readonly resume: ReadonlyMap<string, TopicPosition>,
  ) {
    this.id = clientIdOf(wireId, idPrefix);
    this.data = data;
  }

  /** Parsed on first use: most services never read it, and most clients send none. */
  get query(): URLSearchParams {
    if (typeof this.parsedQuery === "string")
      this.parsedQuery = new URLSearchParams(this.parsedQuery);
    return this.parsedQuery;
  }

  send(data: SendData, options?: SendOptions): void {
    if (!this.open) return;
    this.runtime.commandHot(Command.Send, this.wireId, data, options);
  }

  close(code = 1000, reason = ""): void {
    if (!this.open) return;
    validateClose(code, reason);
    this.open = false;
    this.runtime.command([Command.Close, this.wireId, code, reason]);
  }

  subscribe(topic: string, options?: SubscribeOptions): Promise<SubscribeResult> {
    validateTopic(topic);
    const recent = options?.recent;
    if (
      recent !== undefined &&
      !(Number.isSafeInteger(recent) && recent >= 0 && recent <= MAX_RECENT)
    ) {
      throw new TypeError(`recent is a whole number of messages from 0 to ${MAX_RECENT}`);
    }
    if (!this.open) return Promise.resolve(CLOSED);
    const request = {
      silent: options?.silent === true,
      member: options?.member ?? null,
      // Omitted: where the client asked to resume this topic, if it did (resume.ts).
      since: options?.since === undefined ? this.resume.get(topic) : (options.since ?? undefined),
      recent: options?.recent,
    };
    return this.runtime.request(
      (id) => [Command.Subscribe, this.wireId, topic, request, id],
      CLOSED,
    ) as Promise<SubscribeResult>;
  }

  unsubscribe(topic: string): void {
    validateTopic(topic);
    if (!this.open) return;
    this.runtime.command([Command.Unsubscribe, this.wireId, topic]);
  }

  [Symbol.asyncIterator](): AsyncIterator<ServiceMessage> {
    return {
      next: async () => {
        for (;;) {
          const message = this.inbox.length === 0 ? undefined : this.inbox.shift();
          if (message !== undefined) {
            if (this.paused && this.inbox.length <= PULL_LOW_WATER) {
              this.paused = false;
              this.runtime.command([Command.Resume, this.wireId]);
            }
            return { value: message, done: false };
          }
          if (this.closed) return { value: undefined, done: true };
          await new Promise<void>((resolve) => {
            this.wake = resolve;
          });
        }
      },
      return: async () => ({ value: undefined, done: true }),
    };
  }

  /** Queues a hook behind the one running. */
  queueTask(task: Task): void {
    if (this.tasks === NO_TASKS) this.tasks = [];
    this.tasks.push(task);
  }

  deliver(message: ServiceMessage): void {
    if (this.inbox === NO_MESSAGES) this.inbox = [];
    this.inbox.push(message);
    if (!this.paused && this.inbox.length >= PULL_HIGH_WATER) {
      this.paused = true;
      this.runtime.command([Command.Pause, this.wireId]);
    }
    this.wakeUp();
  }

  wakeUp(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}

const CLOSED: SubscribeResult = {
  ok: false,
  reason: "closed",
  position: { epoch: "", offset: 0 },
};

function validateClose(code: number, reason: string): void {
  // RFC 6455 section 7.4.1-7.4.2: the registered codes an application has reason to send, and
  // 3000-4999 (registered and private use).
  const sendable =
    code === 1000 || code === 1001 || code === 1008 || code === 1011 || code === 1013;
  if (!sendable && !(code >= 3000 && code <= 4999)) {
    throw new RangeError(`close code ${code} may not be sent by a service`);
  }
  // Section 5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
  if (Buffer.byteLength(reason) > 123) throw new RangeError("close reason is over 123 bytes");
}

function validateTopic(topic: string): void {
  if (typeof topic !== "string" || topic.length === 0 || topic.length > 256) {
    throw new TypeError("a topic is a non-empty string of at most 256 characters");
  }
}

/** 1 for a binary message, 0 for text; bytes sent as text must be valid UTF-8. */
function sendFlag(data: SendData, options: SendOptions | undefined): 0 | 1 {
  // A received message forwarded as it came: the I/O thread validated its text on arrival
  // (RFC 6455 section 8.1).
  if (data instanceof Message && options?.binary === undefined) return data.isBinary ? 1 : 0;
  if (typeof data === "string") return options?.binary ? 1 : 0;
  const binary = options?.binary ?? true;
  if (!binary && !isUtf8(toBytes(data))) throw new TypeError("text messages must be valid UTF-8");
  return binary ? 1 : 0;
}

function sendPayload(data: SendData): string | Uint8Array {
  return typeof data === "string" ? data : toBytes(data);
}

function toBytes(data: SendData): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (data instanceof Message) return data.bytes();
  throw new TypeError("send() takes a string, a Uint8Array, an ArrayBuffer or a message");
}

export class ServiceRuntime {
  private readonly writer: BatchWriter;
  private hooks: ServiceHooks<unknown, unknown> = {};
  private config: ResolvedServiceConfig | null = null;
  private readonly clients = new Map<string, RuntimeClient<unknown>>();
  private readonly byWireId = new Map<number, RuntimeClient<unknown>>();
  private readonly upgradeData = new Map<number, unknown>();
  /** Requests waiting for a Reply, by id. */
  private readonly requests = new Map<number, (value: unknown) => void>();
  private nextRequest = 1;
  private lastHandled = 0;
  /** Seq of the batch being read (0 between batches): its kept payloads may be forwarded. */
  private handlingSeq = 0;
  /** Kept payloads (HotFlag.Kept) seen so far in that batch. */
  private keptSeen = 0;
  /** Hot records (messages) seen so far in that batch. */
  private hotSeen = 0;
  private flushScheduled = false;
  private stopping = false;
  readonly logger: Logger;
  private readonly context: ServiceContext<unknown>;

  constructor(
    private readonly channel: RuntimeChannel,
    name: string,
  ) {
    this.writer = new BatchWriter(channel.packs, channel.recycles);
    this.logger = this.makeLogger();
    const runtime = this;
    this.context = {
      name,
      clients: this.clients,
      logger: this.logger,
      get config() {
        return runtime.config!;
      },
      broadcast(data: SendData, options?: BroadcastOptions & SendOptions) {
        runtime.commandHot(Command.Broadcast, runtime.exceptId(options?.except), data, options);
      },
      presence(topic: string) {
        validateTopic(topic);
        return runtime.request((id) => [Command.PresenceQuery, id, topic, 0], []) as Promise<
          PresenceMember[]
        >;
      },
      presenceCount(topic: string) {
        validateTopic(topic);
        return runtime.request((id) => [Command.PresenceQuery, id, topic, 1], 0) as Promise<number>;
      },
      publish(topic: string, data: SendData, options?: BroadcastOptions & SendOptions) {
        validateTopic(topic);
        runtime.commandWithPayload(
          [Command.Publish, topic, runtime.exceptId(options?.except)],
          data,
          options,
        );
      },
    };
    channel.onBatch((batch) => this.handle(batch));
  }

  /** Imports the module and reports what it exports: Loaded, or Failed and exit. */
  /**
   * Loads the module and takes its service: the default export, or with `origin` the export
   * defined there (define.ts ServiceOrigin).
   */
  async load(
    importModule: () => Promise<{ module: Record<string, unknown>; imports: string[] }>,
    origin?: ServiceOrigin,
  ): Promise<void> {
    let module: Record<string, unknown>;
    let imports: string[];
    try {
      ({ module, imports } = await importModule());
    } catch (error) {
      this.fail(errorInfo(error, "SB_ERR_SERVICE_LOAD"));
      return;
    }
    const definition = origin === undefined ? module.default : exportDefinedAt(module, origin);
    if (!isServiceDefinition(definition)) {
      this.fail(
        origin === undefined
          ? {
              code: "SB_ERR_NOT_A_SERVICE",
              message: "the module's default export is not a service made by defineService()",
            }
          : {
              code: "SB_ERR_SERVICE_NOT_EXPORTED",
              message: `the module does not export the service it defined as number ${origin.ordinal + 1}; a worker or process can only load a service its module exports`,
            },
      );
      return;
    }
    this.hooks = definition.hooks as ServiceHooks<unknown, unknown>;
    const info: LoadedInfo = {
      config: cloneable(module.config),
      hooks: {
        upgrade: typeof this.hooks.upgrade === "function",
        message: typeof this.hooks.message === "function",
        snapshot: typeof this.hooks.snapshot === "function",
        restore: typeof this.hooks.restore === "function",
        presence: typeof this.hooks.presence === "function",
      },
      imports,
    };
    this.command([Command.Loaded, info]);
  }

  private fail(info: ErrorInfo): void {
    this.command([Command.Failed, info]);
    this.flush();
    this.channel.exit(1);
  }

  // ─────────────────────────── commands ───────────────────────────

  command(record: readonly unknown[]): void {
    this.writer.add(record);
    this.scheduleFlush();
  }

  commandWithPayload(head: readonly unknown[], data: SendData, options?: SendOptions): void {
    this.writer.addWithPayload([...head, sendFlag(data, options)], sendPayload(data));
    this.scheduleFlush();
  }

  /**
   * A command the I/O thread answers with a Reply. Never rejects: a hook that does not await
   * it must not end the runtime with an unhandled rejection; `fallback` is what a missing
   * answer means.
   */
  request(make: (id: number) => readonly unknown[], fallback: unknown): Promise<unknown> {
    const id = this.nextRequest++;
    return new Promise((resolve) => {
      this.requests.set(id, (value) => resolve(value ?? fallback));
      this.command(make(id));
    });
  }

  /** Send and Broadcast: the hot path out. */
  commandHot(kind: number, id: number, data: SendData, options?: SendOptions): void {
    if (
      data instanceof Message &&
      options?.binary === undefined &&
      data.forwardable(this.handlingSeq)
    ) {
      // The message as received, while its batch is not yet acknowledged: the I/O thread still
      // has the bytes, so only a reference crosses back.
      this.writer.addForward(
        kind,
        id,
        data.isBinary ? HotFlag.Binary : 0,
        data.keptSeq,
        data.keptOrdinal,
      );
    } else {
      this.writer.addHot(kind, id, sendFlag(data, options), sendPayload(data));
    }
    // A full batch goes at once, as on the I/O thread.
    if (this.writer.full) this.post(false);
    else if (!this.flushScheduled) this.scheduleFlush();
  }

  private exceptId(except: Client | string | undefined): number {
    if (except === undefined) return 0;
    const id = typeof except === "string" ? except : except.id;
    return this.clients.get(id)?.wireId ?? 0;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  flush(acknowledge = false): void {
    this.flushScheduled = false;
    this.post(acknowledge);
  }

  /** Posts what was gathered (the flush still scheduled, if one is, posts what follows). */
  private post(acknowledge: boolean): void {
    const taken = this.writer.take(this.lastHandled, acknowledge);
    if (taken !== null) this.channel.post(taken.batch, taken.transfer);
  }

  // ─────────────────────────── events ───────────────────────────

  private handle(batch: Batch): void {
    const returned = batch.returned;
    if (returned !== undefined) for (const buffer of returned) this.writer.recycle(buffer);
    // A received buffer is never handed back: messages are views into it, and a hook may keep
    // one (or its bytes) for as long as it likes. The garbage collector frees it once none is
    // kept; copying every payload out so the buffer could go back cost more (batch.ts).
    this.handlingSeq = batch.seq;
    this.keptSeen = 0;
    this.hotSeen = 0;
    try {
      readBatch(batch, this.onMessage, (record) => {
        try {
          this.dispatch(record);
        } catch (error) {
          this.logger.error({ err: error }, "event dispatch failed");
        }
      });
    } finally {
      // Hooks that run later (async, queued) send copies: the acknowledgement below lets the
      // I/O thread drop the kept payloads.
      this.handlingSeq = 0;
    }
    this.lastHandled = batch.seq;
    // Answer a batch that carried messages even with nothing to say: the acknowledgement frees
    // its bytes on the I/O thread (maxInFlightBytes, kept payloads). A batch of other events
    // (opens, closes) holds nothing there, so its acknowledgement waits for the next batch out,
    // which saves a crossing per connection's open and close (a thread wake-up in a worker).
    this.flush(this.hotSeen > 0);
  }

  /** A client's message: the hot path in. */
  private readonly onMessage = (kind: number, id: number, flag: number, payload: Buffer): void => {
    this.hotSeen++;
    if (kind !== Event.Message) return;
    const client = this.byWireId.get(id);
    if (client === undefined) return;
    const message = new Message(
      payload,
      (flag & HotFlag.Binary) !== 0,
      this.handlingSeq,
      (flag & HotFlag.Kept) === 0 ? -1 : this.keptSeen++,
    );
    const hook = this.hooks.message;
    if (hook === undefined) {
      client.deliver(message);
      return;
    }
    if (client.busy) {
      client.queueTask(() =>
        this.invoke(client, "message", () => hook(client, message, this.context)),
      );
      return;
    }
    this.invokeMessage(client, hook, message);
  };

  /** `invoke` without a closure per message, for the common case of an idle client. */
  private invokeMessage(
    client: RuntimeClient<unknown>,
    hook: NonNullable<ServiceHooks<unknown, unknown>["message"]>,
    message: Message,
  ): void {
    let result: unknown;
    try {
      result = hook(client, message, this.context);
    } catch (error) {
      this.hookFailed(client, "message", error);
      this.next(client);
      return;
    }
    this.settle(client, "message", result);
  }

  private dispatch(record: readonly unknown[]): void {
    switch (record[0]) {
      case Event.Open:
        this.open(record[1] as number, record[2] as OpenInfo);
        return;
      case Event.Close:
        this.closed(record[1] as number, record[2] as number, record[3] as string);
        return;
      case Event.Error: {
        const client = this.byWireId.get(record[1] as number);
        if (client === undefined || !this.hooks.error) return;
        const error = new HookError(record[2] as string, record[3] as string);
        this.run(client, "error", () => this.hooks.error!(client, error, this.context));
        return;
      }
      case Event.Upgrade:
        this.upgrade(record[1] as number, record[2] as UpgradeRequestInfo);
        return;
      case Event.UpgradeAbandoned:
        this.upgradeData.delete(record[1] as number);
        return;
      case Event.Ping:
        this.writer.add([Command.Pong, record[1]]);
        return;
      case Event.Reply: {
        const resolve = this.requests.get(record[1] as number);
        this.requests.delete(record[1] as number);
        resolve?.(record[2]);
        return;
      }
      case Event.Presence: {
        const hook = this.hooks.presence;
        if (hook === undefined) return;
        const change = record[1] as PresenceChange;
        try {
          const result = hook(change, this.context);
          if (isThenable(result)) {
            result.then(undefined, (error: unknown) =>
              this.logger.error({ hook: "presence", err: error }, "the presence hook threw"),
            );
          }
        } catch (error) {
          this.logger.error({ hook: "presence", err: error }, "the presence hook threw");
        }
        return;
      }
      case Event.Start:
        void this.start(record[1] as StartInfo);
        return;
      case Event.Stop:
        void this.stop();
        return;
      case Event.Snapshot:
        void this.snapshot();
        return;
    }
  }

  private async start(info: StartInfo): Promise<void> {
    try {
      this.config = info.config as ResolvedServiceConfig;
      if (info.restore !== undefined && this.hooks.restore) {
        await this.hooks.restore(info.restore.state, this.context);
      }
      await this.hooks.start?.(this.context);
    } catch (error) {
      this.logger.error({ err: error }, "the start hook failed");
      this.fail(errorInfo(error, "SB_ERR_START_FAILED"));
      return;
    }
    this.command([Command.Ready]);
  }

  private async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    try {
      await this.hooks.stop?.(this.context);
    } catch (error) {
      this.logger.error({ err: error }, "the stop hook failed");
    }
    this.command([Command.Stopped]);
    this.flush();
  }

  private async snapshot(): Promise<void> {
    const info: SnapshotInfo = { state: undefined, clientData: [] };
    try {
      if (this.hooks.snapshot) info.state = await this.hooks.snapshot(this.context);
      info.state = structuredClone(info.state);
    } catch (error) {
      this.logger.error({ err: error }, "the snapshot hook failed; the next instance starts empty");
      info.state = undefined;
      info.error = errorInfo(error, "SB_ERR_SNAPSHOT_FAILED");
    }
    for (const client of this.clients.values()) {
      if (client.data === undefined) continue;
      try {
        info.clientData.push([client.wireId, structuredClone(client.data)]);
      } catch (error) {
        this.logger.warn(
          { clientId: client.id, err: error },
          "client data cannot be cloned; the next instance gets undefined",
        );
      }
    }
    this.command([Command.Snapshot, info]);
    this.flush();
  }

  private upgrade(id: number, info: UpgradeRequestInfo): void {
    const request: UpgradeRequest = {
      path: info.path,
      params: info.params,
      query: new URLSearchParams(info.query),
      headers: info.headers,
      remoteAddress: info.remoteAddress,
      protocols: info.protocols,
    };
    const answer = (decision: UpgradeDecision) => {
      this.command([Command.UpgradeResult, id, decision]);
    };
    const settle = (result: unknown) => {
      if (result === undefined || result === null) {
        answer({ accept: true, protocol: "" });
        return;
      }
      if (typeof result !== "object") {
        throw new TypeError("the upgrade hook returned neither an object nor undefined");
      }
      const rejection = (result as { reject?: { status: number; reason: string } }).reject;
      if (rejection !== undefined) {
        answer({ accept: false, status: rejection.status, reason: rejection.reason });
        return;
      }
      const { data, protocol } = result as { data?: unknown; protocol?: unknown };
      if (
        protocol !== undefined &&
        (typeof protocol !== "string" || !info.protocols.includes(protocol))
      ) {
        throw new TypeError(
          `the upgrade hook chose a protocol the client did not offer: ${String(protocol)}`,
        );
      }
      if (data !== undefined) this.upgradeData.set(id, data);
      answer({ accept: true, protocol: (protocol as string | undefined) ?? "" });
    };
    const failed = (error: unknown) => {
      this.logger.error({ err: error, path: info.path }, "the upgrade hook failed");
      answer({ error: errorInfo(error) });
    };
    if (!this.hooks.upgrade) {
      answer({ accept: true, protocol: "" });
      return;
    }
    try {
      const result = this.hooks.upgrade(request, this.context);
      if (isThenable(result)) result.then(settle, failed).catch(failed);
      else settle(result);
    } catch (error) {
      failed(error);
    }
  }

  private open(wireId: number, info: OpenInfo): void {
    let data: unknown = info.data;
    if (info.upgradeId !== 0) {
      data = this.upgradeData.get(info.upgradeId);
      this.upgradeData.delete(info.upgradeId);
    }
    const query = info.query === "" ? info.query : new URLSearchParams(info.query);
    const resume: ResumeParse =
      typeof query === "string" ? { ok: true, positions: NO_POSITIONS } : parseResume(query);
    if (!resume.ok) {
      this.logger.warn(
        { clientId: String(wireId), reason: resume.reason },
        "ignored a malformed resume parameter; the client starts live",
      );
    }
    const client = new RuntimeClient<unknown>(
      wireId,
      info.idPrefix,
      this,
      info.remoteAddress,
      frozenCopy(info.params),
      query,
      frozenCopy(info.headers),
      info.protocol,
      info.handover,
      data,
      resume.ok ? resume.positions : NO_POSITIONS,
    );
    this.clients.set(client.id, client);
    this.byWireId.set(wireId, client);
    if (this.hooks.open) this.run(client, "open", () => this.hooks.open!(client, this.context));
  }

  private closed(wireId: number, code: number, reason: string): void {
    const client = this.byWireId.get(wireId);
    if (client === undefined) return;
    client.open = false;
    this.clients.delete(client.id);
    this.byWireId.delete(wireId);
    const finish = () => {
      client.closed = true;
      client.wakeUp();
    };
    if (this.hooks.close) {
      this.run(client, "close", () => this.hooks.close!(client, code, reason, this.context));
    }
    this.run(client, "close", finish);
  }

  /** Runs a hook for a client after the ones before it settled; failures are logged and reported. */
  private run(client: RuntimeClient<unknown>, hook: string, task: Task): void {
    if (client.busy) {
      client.queueTask(() => this.invoke(client, hook, task));
      return;
    }
    this.invoke(client, hook, task);
  }

  private invoke(client: RuntimeClient<unknown>, hook: string, task: Task): void {
    let result: unknown;
    try {
      result = task();
    } catch (error) {
      this.hookFailed(client, hook, error);
      this.next(client);
      return;
    }
    this.settle(client, hook, result);
  }

  /** After a hook returned: a promise holds the client's next hooks until it settles. */
  private settle(client: RuntimeClient<unknown>, hook: string, result: unknown): void {
    if (isThenable(result)) {
      client.busy = true;
      result.then(
        () => this.next(client),
        (error: unknown) => {
          this.hookFailed(client, hook, error);
          this.next(client);
        },
      );
      return;
    }
    this.next(client);
  }

  private next(client: RuntimeClient<unknown>): void {
    client.busy = false;
    // shift() on the shared frozen list throws even when it is empty.
    if (client.tasks.length === 0) return;
    const task = client.tasks.shift();
    if (task !== undefined) task();
  }

  private hookFailed(client: RuntimeClient<unknown>, hook: string, error: unknown): void {
    this.logger.error({ clientId: client.id, hook, err: error }, `the ${hook} hook threw`);
    if (hook === "error" || !this.hooks.error) return;
    const reported = new HookError(
      "SB_ERR_HOOK_FAILED",
      `the ${hook} hook threw: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
    try {
      const result = this.hooks.error(client, reported, this.context);
      if (isThenable(result)) {
        result.then(undefined, (again: unknown) =>
          this.logger.error(
            { clientId: client.id, hook: "error", err: again },
            "the error hook threw",
          ),
        );
      }
    } catch (again) {
      this.logger.error({ clientId: client.id, hook: "error", err: again }, "the error hook threw");
    }
  }

  // ─────────────────────────── logging ───────────────────────────

  private makeLogger(): Logger {
    const log = (level: string) => (context: object, message: string) => {
      this.command([Command.Log, level, serializeContext(context), message]);
    };
    return { error: log("error"), warn: log("warn"), info: log("info"), debug: log("debug") };
  }
}

/** Log contexts cross the boundary: errors become plain records, the rest must be JSON. */
function serializeContext(context: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(context ?? {})) {
    if (value instanceof Error) {
      out[key] = {
        type: value.name,
        message: value.message,
        stack: value.stack,
        code: (value as { code?: unknown }).code,
      };
      continue;
    }
    try {
      out[key] = JSON.parse(JSON.stringify(value) ?? "null");
    } catch {
      out[key] = String(value);
    }
  }
  return out;
}

function cloneable(value: unknown): unknown {
  try {
    return structuredClone(value);
  } catch {
    return { invalid: true };
  }
}
