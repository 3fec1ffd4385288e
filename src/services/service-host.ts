import type { WebSocketConnection } from "../connection/connection.js";
import type { PresenceChange } from "../engines/engine.js";
import {
  type Batch,
  type BatchRecord,
  BatchWriter,
  Command,
  clientIdOf,
  type ErrorInfo,
  Event,
  HOT_RECORD,
  type LoadedInfo,
  type OpenInfo,
  payloadOf,
  readBatch,
  type SnapshotInfo,
  type StartInfo,
  type UpgradeDecision,
  type UpgradeRequestInfo,
  worthRecycling,
} from "../isolation/batch.js";
import type { ServiceTransport, TransportExit, TransportFactory } from "../isolation/transport.js";
import type { Logger } from "../server/logger.js";
import type { HubSubscriber, OutgoingBatch, TopicHub } from "../topics/hub.js";
import {
  type ResolvedServiceConfig,
  resolveServiceConfig,
  type ServiceDefaults,
} from "./config.js";
import type { Isolation, ServiceConfig, ServiceDefinition } from "./define.js";

/** What a service's subscribe sends across (define.ts SubscribeOptions, cloneable). */
interface SubscribeRequest {
  silent: boolean;
  member: unknown;
  since?: { epoch: string; offset: number };
  recent?: number;
}

/**
 * The I/O thread's side of one service file: starts its runtime lazily (in a worker, a child
 * process or on this thread), feeds it the events of its clients in batches, carries out its
 * commands, watches it (crash, exit, heap limit, watchdog), restarts it with backoff, hands its
 * live connections to a new instance on reload, and stops it on shutdown.
 */

export type HostState =
  | "idle"
  | "starting"
  | "ready"
  | "backoff"
  | "broken"
  | "stopping"
  | "stopped";

/** Why a connection cannot be served now; the server answers with `status`. */
export class ServiceUnavailable extends Error {
  constructor(
    readonly status: 500 | 503,
    readonly code: string,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "ServiceUnavailable";
  }
}

export interface ServiceHostOptions {
  /** The module the runtime imports. */
  file: string;
  name: string;
  /** Which service the module defined (a router's object service); its default export if unset. */
  exportOrdinal?: number;
  /** A router's object service, run as it is where isolation is "main". */
  definition?: ServiceDefinition;
  /** Configuration given with a route; replaces the module's `config` export. */
  config?: ServiceConfig;
  defaults: ServiceDefaults;
  logger: Logger;
  transports: Record<Isolation, TransportFactory>;
  topics: TopicHub;
  /** First delay before a restart; doubles after each failure up to `restartMaxDelayMs`. */
  restartDelayMs?: number;
  restartMaxDelayMs?: number;
  /** A runtime that has not loaded and started within this long is a failure. */
  startTimeoutMs?: number;
  /** An upgrade hook that has not decided within this long: 503. */
  upgradeTimeoutMs?: number;
  /** Bytes of events posted and not yet handled past which the service's clients stop being read. */
  maxInFlightBytes?: number;
  /** Events held for a service that is (re)starting, per service. */
  maxPendingEvents?: number;
  maxPendingBytes?: number;
}

/**
 * A client of this service as the host and the topic hub see it. A class, so that the getter
 * and the methods live on one prototype: an object literal with a getter is made in dictionary
 * mode, and its closures cost more memory than an idle connection's other state.
 */
class Link implements HubSubscriber {
  readonly clientId: string;
  /** The runtime's pull-style queue for this client is full. */
  pulledFull = false;

  constructor(
    readonly owner: ServiceHost,
    readonly id: number,
    readonly conn: WebSocketConnection,
    readonly info: OpenInfo,
  ) {
    this.clientId = clientIdOf(id, info.idPrefix);
  }

  get bufferedAmount(): number {
    return this.conn.bufferedAmount;
  }

  deliver(batch: OutgoingBatch, start: number, end: number): void {
    this.conn.sendPreparedBatch(batch, start, end);
  }

  close(code: number, reason: string): void {
    this.conn.close(code, reason);
  }
}

/** Where a connection keeps its link, for the listeners every connection shares. */
const LINK = Symbol("switchboard.link");
type LinkedConnection = WebSocketConnection & { [LINK]: Link };

/** One running instance of the service: a transport and what is known about its runtime. */
interface Instance {
  transport: ServiceTransport;
  writer: BatchWriter;
  loaded: LoadedInfo | null;
  ready: boolean;
  /** Seq of posted batches not yet acknowledged, with their payload bytes. */
  inFlight: Map<number, number>;
  inFlightBytes: number;
  lastHeard: number;
  pingSentAt: number;
  waiters: {
    loaded?: (info: LoadedInfo | ErrorInfo) => void;
    ready?: (error: ErrorInfo | null) => void;
    stopped?: () => void;
    snapshot?: (info: SnapshotInfo) => void;
  };
  /** Replaced by a newer instance (reload) or told to go: its exit is expected. */
  retired: boolean;
  /** Set while a startup or shutdown step waits on this instance. */
  onDeath?: (exit: TransportExit) => void;
}

const RETRY_BROKEN_MS = 1_000;
/**
 * How long after a post to a runtime in another thread or process a batch holding nothing but
 * notifications waits for more. Each post wakes the other side, and in a burst of connections
 * (a reconnect storm) the opens and closes of one event-loop turn made a post each: about 1 per
 * connection, with its wake-up, costing more than everything else the service's thread did for
 * the connection. Under such load they now travel a millisecond's worth at a time; a runtime
 * that was not posted to for a millisecond gets them at the end of the turn, as before.
 */
const COALESCE_MS = 1;
/**
 * The events that may wait (COALESCE_MS): nobody is held up for them. An upgrade decision or a
 * reply is awaited, and a message goes at the end of the turn, taking what waited with it.
 */
const COALESCED: Readonly<Record<number, boolean>> = {
  [Event.Open]: true,
  [Event.Close]: true,
  [Event.Error]: true,
  [Event.Presence]: true,
  [Event.UpgradeAbandoned]: true,
};
const BINARY = { binary: true } as const;
const TEXT = { binary: false } as const;

export class ServiceHost {
  readonly file: string;
  readonly name: string;
  private state: HostState = "idle";
  private instance: Instance | null = null;
  private config: ResolvedServiceConfig | null = null;
  private starting: Promise<void> | null = null;
  private readonly links = new Map<number, Link>();
  private readonly upgrades = new Map<number, (decision: UpgradeDecision) => void>();
  private nextUpgradeId = 1;
  /** Events held while no instance is ready (restart, reload); sent in order once one is. */
  private pending: BatchRecord[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  /** A coalesced flush of notifications (see COALESCE_MS), when one is waiting. */
  private flushTimer: NodeJS.Timeout | null = null;
  /** When the last batch went to the runtime (performance.now()). */
  private lastPostAt = Number.NEGATIVE_INFINITY;
  /**
   * While a recycled batch is read: the connections given views of its payloads, which must let
   * go of them before its buffer goes back (release()).
   */
  private holders: WebSocketConnection[] | null = null;
  private overloaded = false;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  /** When the scheduled restart runs (for Retry-After). */
  private restartAt = 0;
  private watchdogTimer: NodeJS.Timeout | null = null;
  private brokenUntil = 0;
  private brokenReason = "";
  private readyAt = 0;
  private readonly logger: Logger;
  private readonly options: Required<
    Omit<
      ServiceHostOptions,
      | "file"
      | "name"
      | "exportOrdinal"
      | "definition"
      | "config"
      | "defaults"
      | "logger"
      | "transports"
      | "topics"
    >
  >;
  /** Local files the current instance imported (hot reload watches them). */
  imports: readonly string[] = [];

  constructor(private readonly host: ServiceHostOptions) {
    this.file = host.file;
    this.name = host.name;
    this.logger = host.logger;
    this.options = {
      restartDelayMs: host.restartDelayMs ?? 250,
      restartMaxDelayMs: host.restartMaxDelayMs ?? 30_000,
      startTimeoutMs: host.startTimeoutMs ?? 30_000,
      upgradeTimeoutMs: host.upgradeTimeoutMs ?? 10_000,
      maxInFlightBytes: host.maxInFlightBytes ?? 16 * 1024 * 1024,
      maxPendingEvents: host.maxPendingEvents ?? 10_000,
      maxPendingBytes: host.maxPendingBytes ?? 16 * 1024 * 1024,
    };
  }

  get status(): HostState {
    return this.state;
  }

  get clientCount(): number {
    return this.links.size;
  }

  /** The connections attached to this service and not closed yet. */
  *connections(): IterableIterator<WebSocketConnection> {
    for (const link of this.links.values()) yield link.conn;
  }

  /** The configuration of the running service (null before its first load). */
  get serviceConfig(): ResolvedServiceConfig | null {
    return this.config;
  }

  /** Running and keeping up: a new client can be attached without waiting. */
  get acceptsNow(): boolean {
    return this.state === "ready" && !this.overloaded;
  }

  get hasUpgradeHook(): boolean {
    return this.instance?.loaded?.hooks.upgrade ?? false;
  }

  // ─────────────────────────── lifecycle ───────────────────────────

  /** Starts the service if it is not running; rejects with ServiceUnavailable when it cannot. */
  async ready(): Promise<void> {
    switch (this.state) {
      case "ready":
        if (this.overloaded) {
          // Its clients are not being read until it catches up; a new one would only wait.
          throw new ServiceUnavailable(503, "SB_ERR_OVERLOADED", "the service is overloaded", 1);
        }
        return;
      case "starting":
        return this.starting!;
      case "backoff":
        throw new ServiceUnavailable(
          503,
          "SB_ERR_SERVICE_RESTARTING",
          "the service is restarting",
          Math.max(1, Math.ceil(this.restartRemaining() / 1000)),
        );
      case "broken":
        if (Date.now() < this.brokenUntil) {
          throw new ServiceUnavailable(500, "SB_ERR_SERVICE_BROKEN", this.brokenReason);
        }
        break;
      case "stopping":
      case "stopped":
        throw new ServiceUnavailable(503, "SB_ERR_SHUTTING_DOWN", "the server is shutting down");
      case "idle":
        break;
    }
    return this.start();
  }

  private start(): Promise<void> {
    this.state = "starting";
    this.starting = this.launch(undefined).then(
      (instance) => {
        this.instance = instance;
        this.becomeReady();
      },
      (error: ServiceUnavailable) => {
        this.starting = null;
        if (this.state !== "starting") throw error;
        this.brokenReason = error.message;
        this.brokenUntil = Date.now() + RETRY_BROKEN_MS;
        this.state = "broken";
        this.dropPending(1011, "service failed to start");
        throw error;
      },
    );
    return this.starting;
  }

  private becomeReady(): void {
    this.state = "ready";
    this.starting = null;
    this.readyAt = Date.now();
    this.startWatchdog();
    // Events held while (re)starting go first, in order.
    const held = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const record of held) this.enqueue(record);
  }

  /**
   * Starts a runtime and brings it to Ready: load (in the isolation its config asks for, moving
   * it once if the first guess was wrong), validate the config, start (restoring `restore`).
   */
  private async launch(restore: StartInfo["restore"]): Promise<Instance> {
    let isolation =
      this.config?.isolation ?? this.host.config?.isolation ?? this.host.defaults.isolation;
    let instance = this.spawn(isolation);
    let loaded = await this.waitLoaded(instance);
    const result = resolveServiceConfig(this.host.config ?? loaded.config, this.host.defaults);
    if (!result.ok) {
      this.retire(instance);
      this.logger.error(
        { service: this.name, file: this.file },
        `bad service config: ${result.message}`,
      );
      throw new ServiceUnavailable(500, "SB_ERR_SERVICE_CONFIG", result.message);
    }
    this.config = result.config;
    if (result.config.isolation !== isolation) {
      // The module asked for another isolation: load it again where it belongs.
      this.retire(instance);
      isolation = result.config.isolation;
      instance = this.spawn(isolation);
      loaded = await this.waitLoaded(instance);
    }
    this.imports = loaded.imports;
    const started = new Promise<ErrorInfo | null>((resolve) => {
      instance.waiters.ready = resolve;
    });
    this.post(instance, [[Event.Start, { config: this.config, restore } satisfies StartInfo]]);
    const failure = await this.bounded(instance, started, "start");
    if (failure !== null) {
      this.retire(instance);
      this.logger.error(
        { service: this.name, err: failure },
        `the service failed to start: ${failure.message}`,
      );
      throw new ServiceUnavailable(500, failure.code, failure.message);
    }
    instance.ready = true;
    this.logger.info(
      { service: this.name, isolation, restored: restore !== undefined },
      "service started",
    );
    return instance;
  }

  private async waitLoaded(instance: Instance): Promise<LoadedInfo> {
    const loaded = new Promise<LoadedInfo | ErrorInfo>((resolve) => {
      instance.waiters.loaded = resolve;
    });
    const info = await this.bounded(instance, loaded, "load");
    if ("message" in info) {
      this.retire(instance);
      this.logger.error(
        { service: this.name, file: this.file, err: info },
        `the service failed to load: ${info.message}`,
      );
      throw new ServiceUnavailable(500, info.code, info.message);
    }
    return info;
  }

  /** Waits for a startup step, failing when the runtime dies or takes too long. */
  private bounded<T>(instance: Instance, step: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.retire(instance);
        this.logger.error({ service: this.name }, `the service did not ${what} in time`);
        reject(new ServiceUnavailable(500, "SB_ERR_START_TIMEOUT", `did not ${what} in time`));
      }, this.options.startTimeoutMs);
      timer.unref();
      instance.onDeath = (exit) => {
        clearTimeout(timer);
        reject(
          new ServiceUnavailable(
            500,
            exit.error?.code ?? "SB_ERR_SERVICE_CRASHED",
            exit.error?.message ?? `the runtime ended (${exit.reason}) during ${what}`,
          ),
        );
      };
      step.then((value) => {
        clearTimeout(timer);
        instance.onDeath = undefined;
        resolve(value);
      });
    });
  }

  private spawn(isolation: Isolation): Instance {
    const instance: Instance = {
      transport: null as unknown as ServiceTransport,
      writer: null as unknown as BatchWriter,
      loaded: null,
      ready: false,
      inFlight: new Map(),
      inFlightBytes: 0,
      lastHeard: Date.now(),
      pingSentAt: 0,
      waiters: {},
      retired: false,
    };
    instance.transport = this.host.transports[isolation](
      {
        file: this.file,
        name: this.name,
        maxHeapMb: this.config?.maxHeapMb ?? this.host.defaults.maxHeapMb,
        exportOrdinal: this.host.exportOrdinal,
        // Functions cannot cross to a worker or process: those import the module instead.
        definition: isolation === "main" ? this.host.definition : undefined,
      },
      {
        batch: (batch) => this.received(instance, batch),
        exit: (exit) => this.exited(instance, exit),
      },
    );
    instance.writer = new BatchWriter(instance.transport.packs, instance.transport.recycles);
    return instance;
  }

  private retire(instance: Instance): void {
    instance.retired = true;
    instance.transport.terminate();
  }

  private exited(instance: Instance, exit: TransportExit): void {
    const onDeath = instance.onDeath;
    instance.onDeath = undefined;
    // After what the runtime said last (such as Failed) has been acted on.
    if (onDeath !== undefined) setImmediate(() => onDeath(exit));
    if (instance.retired || instance !== this.instance) return;
    // The running instance died: crash, process.exit, heap limit or the watchdog.
    this.instance = null;
    this.stopWatchdog();
    const level = exit.reason === "exit" && exit.code === 0 ? "warn" : "error";
    this.logger[level](
      { service: this.name, reason: exit.reason, exitCode: exit.code, err: exit.error },
      `the service ended (${exit.reason}); its clients are closed with 1011`,
    );
    for (const resolve of this.upgrades.values()) {
      resolve({ accept: false, status: 503, reason: "service restarting" });
    }
    this.upgrades.clear();
    for (const link of [...this.links.values()]) link.conn.close(1011, "service failed");
    this.dropPending(1011, "service failed");
    if (this.state === "stopping" || this.state === "stopped") return;
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    // A service that ran a while before failing starts over with the shortest delay.
    if (Date.now() - this.readyAt > this.options.restartMaxDelayMs) this.failures = 0;
    const delay = Math.min(
      this.options.restartDelayMs * 2 ** this.failures,
      this.options.restartMaxDelayMs,
    );
    this.failures++;
    this.state = "backoff";
    this.restartAt = Date.now() + delay;
    this.logger.info({ service: this.name, delayMs: delay, failures: this.failures }, "restarting");
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.state !== "backoff") return;
      this.start().catch(() => {
        // Logged where it failed; the next connection retries once the broken delay passed.
      });
    }, delay);
    this.restartTimer.unref();
  }

  private restartRemaining(): number {
    return Math.max(0, this.restartAt - Date.now());
  }

  // ─────────────────────────── watchdog ───────────────────────────

  private startWatchdog(): void {
    const instance = this.instance;
    if (instance === null || instance.transport.isolation === "main") return;
    const limit = this.config!.watchdogMs;
    this.stopWatchdog();
    const timer = setInterval(
      () => {
        const now = Date.now();
        if (instance.pingSentAt !== 0 && now - instance.pingSentAt > limit) {
          // If this thread was the one held up, the answer may be waiting unread: timers run
          // before the event loop polls for I/O. Judge once it has polled (an immediate runs
          // after the poll phase), so a busy I/O thread never ends a healthy service.
          const ping = instance.pingSentAt;
          setImmediate(() => {
            if (instance.pingSentAt !== ping || this.watchdogTimer !== timer) return;
            this.logger.error(
              { service: this.name, watchdogMs: limit, waitedMs: Date.now() - ping },
              "the service did not answer the watchdog; terminating it",
            );
            instance.transport.terminate();
          });
          return;
        }
        if (instance.pingSentAt === 0 && now - instance.lastHeard >= limit / 4) {
          instance.pingSentAt = now;
          this.post(instance, [[Event.Ping, now]]);
        }
      },
      Math.max(25, Math.floor(limit / 4)),
    );
    timer.unref();
    this.watchdogTimer = timer;
  }

  private stopWatchdog(): void {
    if (this.watchdogTimer !== null) clearInterval(this.watchdogTimer);
    this.watchdogTimer = null;
  }

  // ─────────────────────────── upgrades and clients ───────────────────────────

  /** Runs the service's upgrade hook (call after `ready()`). */
  upgrade(request: UpgradeRequestInfo): { id: number; decision: Promise<UpgradeDecision> } {
    const id = this.nextUpgradeId++;
    if (!this.hasUpgradeHook) {
      return { id: 0, decision: Promise.resolve({ accept: true, protocol: "" }) };
    }
    const decision = new Promise<UpgradeDecision>((resolve) => {
      const timer = setTimeout(() => {
        if (!this.upgrades.delete(id)) return;
        this.logger.warn({ service: this.name, path: request.path }, "the upgrade hook timed out");
        this.enqueue([Event.UpgradeAbandoned, id]);
        resolve({ accept: false, status: 503, reason: "service did not answer" });
      }, this.options.upgradeTimeoutMs);
      timer.unref();
      this.upgrades.set(id, (value) => {
        clearTimeout(timer);
        resolve(value);
      });
    });
    this.enqueue([Event.Upgrade, id, request]);
    return { id, decision };
  }

  /** The upgrade was accepted by the hook but the handshake failed afterwards. */
  abandonUpgrade(id: number): void {
    if (id !== 0) this.enqueue([Event.UpgradeAbandoned, id]);
  }

  /** Hands a new connection to the service. */
  attach(clientId: number, conn: WebSocketConnection, info: OpenInfo): void {
    const link = new Link(this, clientId, conn, info);
    this.links.set(clientId, link);
    this.enqueue([Event.Open, clientId, info]);
    (conn as LinkedConnection)[LINK] = link;
    conn.on("message", ServiceHost.clientMessage);
    conn.on("error", ServiceHost.clientError);
    conn.on("close", ServiceHost.clientClose);
    if (this.overloaded) conn.pause();
  }

  // Listeners shared by every connection (a closure each would cost memory per client); the
  // connection finds its link through LINK.
  private static readonly clientMessage = function (
    this: WebSocketConnection,
    data: Buffer,
    isBinary: boolean,
  ): void {
    const link = (this as LinkedConnection)[LINK];
    link.owner.enqueueMessage(link.id, isBinary, data);
  };

  private static readonly clientError = function (
    this: WebSocketConnection,
    error: Error & { code?: string },
  ): void {
    const link = (this as LinkedConnection)[LINK];
    link.owner.enqueue([Event.Error, link.id, error.code ?? "WS_ERR_UNKNOWN", error.message]);
  };

  private static readonly clientClose = function (
    this: WebSocketConnection,
    code: number,
    reason: string,
  ): void {
    const link = (this as LinkedConnection)[LINK];
    const owner = link.owner;
    owner.links.delete(link.id);
    owner.forgetTopics(link);
    owner.host.topics.remove(link);
    owner.enqueue([Event.Close, link.id, code, reason]);
  };

  // ─────────────────────────── events out ───────────────────────────

  private enqueue(record: BatchRecord): void {
    if (this.instance === null || !this.instance.ready || this.state !== "ready") {
      this.hold(record, 0);
      return;
    }
    if (record[0] === HOT_RECORD) {
      this.instance.writer.addHot(
        record[1] as number,
        record[2] as number,
        record[3] as number,
        record[4] as Buffer,
      );
    } else {
      this.instance.writer.add(record);
    }
    this.scheduleFlush(COALESCED[record[0] as number] === true && this.instance.transport.packs);
  }

  /** A client's message: the hot path in. */
  private enqueueMessage(clientId: number, isBinary: boolean, payload: Buffer): void {
    const instance = this.instance;
    if (instance === null || !instance.ready || this.state !== "ready") {
      this.hold([HOT_RECORD, Event.Message, clientId, isBinary ? 1 : 0, payload], payload.length);
      return;
    }
    instance.writer.addMessage(Event.Message, clientId, isBinary ? 1 : 0, payload);
    // A full batch goes at once; the turn's later messages follow in the next one.
    if (instance.writer.full) this.sendGathered(instance);
    else if (!this.flushScheduled) this.scheduleFlush();
  }

  private hold(record: BatchRecord, bytes: number): void {
    if (this.state === "stopped") return;
    const kind = record[0];
    if (
      (kind === HOT_RECORD || kind === Event.Open) &&
      (this.pending.length >= this.options.maxPendingEvents ||
        this.pendingBytes + bytes > this.options.maxPendingBytes)
    ) {
      // Bounded: a client whose events do not fit is closed with "try again later".
      const clientId = (kind === HOT_RECORD ? record[2] : record[1]) as number;
      this.links.get(clientId)?.conn.close(1013, "service busy");
      return;
    }
    this.pending.push(record);
    this.pendingBytes += bytes;
  }

  private dropPending(code: number, reason: string): void {
    for (const record of this.pending) {
      if (record[0] === Event.Open) this.links.get(record[1] as number)?.conn.close(code, reason);
    }
    this.pending = [];
    this.pendingBytes = 0;
  }

  /**
   * Posts what was gathered at the end of this turn; with `coalesce`, a notification waits
   * instead for COALESCE_MS after the last post, unless something more urgent comes first.
   */
  private scheduleFlush(coalesce = false): void {
    if (this.flushScheduled) return;
    if (coalesce) {
      const wait = this.lastPostAt + COALESCE_MS - performance.now();
      if (wait > 0) {
        this.flushTimer ??= setTimeout(this.timedFlush, wait);
        return;
      }
    }
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private readonly timedFlush = (): void => {
    this.flushTimer = null;
    if (!this.flushScheduled) this.flush();
  };

  private flush(): void {
    this.flushScheduled = false;
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    const instance = this.instance;
    if (instance === null) return;
    this.sendGathered(instance);
  }

  private sendGathered(instance: Instance): void {
    const bytes = instance.writer.bytes;
    const taken = instance.writer.take(0);
    if (taken === null) return;
    this.send(instance, taken.batch, taken.transfer, bytes);
  }

  /** Posts records at once, ahead of anything gathered later (lifecycle and watchdog). */
  private post(instance: Instance, records: BatchRecord[]): void {
    // What was gathered before goes first.
    if (instance === this.instance) this.flush();
    for (const record of records) instance.writer.add(record);
    const taken = instance.writer.take(0);
    if (taken !== null) this.send(instance, taken.batch, taken.transfer, 0);
  }

  private send(instance: Instance, batch: Batch, transfer: ArrayBuffer[], bytes: number): void {
    if (bytes > 0) {
      instance.inFlight.set(batch.seq, bytes);
      instance.inFlightBytes += bytes;
      this.updateOverload(instance);
    }
    this.lastPostAt = performance.now();
    instance.transport.post(batch, transfer);
  }

  /** Stops reading the service's clients while it is far behind, so memory stays bounded. */
  private updateOverload(instance: Instance): void {
    const limit = this.options.maxInFlightBytes;
    const overloaded = this.overloaded
      ? instance.inFlightBytes > limit / 2
      : instance.inFlightBytes > limit;
    if (overloaded === this.overloaded) return;
    this.overloaded = overloaded;
    for (const link of this.links.values()) this.applyReading(link);
  }

  private applyReading(link: Link): void {
    if (this.overloaded || link.pulledFull) link.conn.pause();
    else link.conn.resume();
  }

  // ─────────────────────────── commands in ───────────────────────────

  private received(instance: Instance, batch: Batch): void {
    const returned = batch.returned;
    if (returned !== undefined) for (const buffer of returned) instance.writer.recycle(buffer);
    instance.lastHeard = Date.now();
    instance.pingSentAt = 0;
    if (instance.inFlight.size > 0) {
      for (const [seq, bytes] of instance.inFlight) {
        if (seq > batch.ack) break;
        instance.inFlight.delete(seq);
        instance.inFlightBytes -= bytes;
      }
      if (instance === this.instance) this.updateOverload(instance);
    }
    const current = instance === this.instance && !instance.retired;
    const recycled = worthRecycling(batch, instance.transport.recycles);
    const holders: WebSocketConnection[] | null = recycled ? [] : null;
    this.holders = holders;
    // Topic messages published earlier in the batch are fanned out at the end of the turn;
    // anything else that reaches clients goes after them (TopicHub#drain), in batch order.
    const topics = this.host.topics;
    readBatch(
      batch,
      (kind, id, flag, payload) => {
        if (current) {
          topics.drain();
          this.hotCommand(kind, id, flag, payload);
        }
      },
      (record) => {
        if (record[0] !== Command.Publish) topics.drain();
        try {
          this.command(instance, current, batch, record);
        } catch (error) {
          this.logger.error({ service: this.name, err: error }, "a service command failed");
        }
      },
      (seq, ordinal) => {
        const payload = instance.writer.keptPayload(seq, ordinal);
        if (payload === undefined) {
          // The runtime forwards only while it handles the batch, before acknowledging it.
          this.logger.error(
            { service: this.name, seq, ordinal, ack: batch.ack },
            "a forwarded message is no longer kept; dropped",
          );
        }
        return payload;
      },
    );
    // Forwards in this batch are done: payloads of batches it acknowledges can go.
    instance.writer.acknowledged(batch.ack);
    this.holders = null;
    if (holders !== null) this.release(instance, batch.buffer!, holders);
  }

  /**
   * Hands the buffer of a batch from the runtime back to it for reuse, once no connection holds
   * a view of it: a payload sent as it came (no copy) stays referenced by the connection's
   * queued output until the turn's writes are done, and beyond them while the socket buffers
   * it. So the check runs after the writes (the flush was scheduled with setImmediate before
   * this one), and a buffer still referenced is left to the garbage collector instead.
   */
  private release(instance: Instance, buffer: ArrayBuffer, holders: WebSocketConnection[]): void {
    if (holders.length === 0) {
      instance.writer.giveBack(buffer);
      return;
    }
    setImmediate(() => {
      for (let i = 0; i < holders.length; i++) if (!holders[i]!.outputReleased) return;
      instance.writer.giveBack(buffer);
    });
  }

  /** Send and Broadcast: the hot path out. */
  private hotCommand(kind: number, id: number, flag: number, payload: Buffer): void {
    const options = flag === 1 ? BINARY : TEXT;
    const holders = this.holders;
    if (kind === Command.Send) {
      const link = this.links.get(id);
      if (link === undefined) return;
      link.conn.send(payload, options);
      holders?.push(link.conn);
      return;
    }
    if (kind === Command.Broadcast) {
      for (const link of this.links.values()) {
        if (link.id === id) continue;
        link.conn.send(payload, options);
        holders?.push(link.conn);
      }
    }
  }

  private command(instance: Instance, current: boolean, batch: Batch, record: BatchRecord): void {
    switch (record[0]) {
      case Command.Publish: {
        if (!current) return;
        const except = record[2] as number;
        this.host.topics
          .publish(
            record[1] as string,
            // A copy: history may keep it, and a view would keep the whole batch buffer alive.
            Buffer.from(payloadOf(batch, record[4])),
            record[3] === 1,
            // The id the hub and other nodes know the client by (clientIdOf).
            except === 0 ? undefined : (this.links.get(except)?.clientId ?? String(except)),
          )
          .catch((error: unknown) => {
            this.logger.error(
              { service: this.name, topic: record[1], err: error },
              "publish failed",
            );
          });
        return;
      }
      case Command.PresenceQuery: {
        if (!current) return;
        const id = record[1] as number;
        const topic = record[2] as string;
        const query =
          record[3] === 1
            ? this.host.topics.presenceCount(topic)
            : this.host.topics.presence(topic);
        query.then(
          (value) => this.enqueue([Event.Reply, id, value]),
          (error: unknown) => {
            this.logger.error({ service: this.name, topic, err: error }, "presence query failed");
            this.enqueue([Event.Reply, id, null]);
          },
        );
        return;
      }
      case Command.Close: {
        if (!current) return;
        this.links.get(record[1] as number)?.conn.close(record[2] as number, record[3] as string);
        return;
      }
      case Command.Subscribe: {
        if (!current) return;
        const link = this.links.get(record[1] as number);
        const topic = record[2] as string;
        const id = record[4] as number;
        if (link === undefined) {
          this.enqueue([Event.Reply, id, null]);
          return;
        }
        this.rememberTopic(link, topic);
        this.host.topics.subscribe(link, topic, record[3] as SubscribeRequest).then(
          (result) => this.enqueue([Event.Reply, id, result]),
          (error: unknown) => {
            this.logger.error({ service: this.name, topic, err: error }, "subscribe failed");
            this.enqueue([
              Event.Reply,
              id,
              { ok: false, reason: "unavailable", position: { epoch: "", offset: 0 } },
            ]);
          },
        );
        return;
      }
      case Command.Unsubscribe: {
        if (!current) return;
        const link = this.links.get(record[1] as number);
        if (link === undefined) return;
        this.forgetTopic(link, record[2] as string);
        this.host.topics.unsubscribe(link, record[2] as string);
        return;
      }
      case Command.Pause:
      case Command.Resume: {
        if (!current) return;
        const link = this.links.get(record[1] as number);
        if (link === undefined) return;
        link.pulledFull = record[0] === Command.Pause;
        this.applyReading(link);
        return;
      }
      case Command.UpgradeResult: {
        if (!current) return;
        const resolve = this.upgrades.get(record[1] as number);
        this.upgrades.delete(record[1] as number);
        resolve?.(record[2] as UpgradeDecision);
        return;
      }
      case Command.Log: {
        const level = record[1] as keyof Logger;
        const log = this.logger[level] ?? this.logger.info;
        log.call(
          this.logger,
          { ...(record[2] as object), service: this.name },
          record[3] as string,
        );
        return;
      }
      case Command.Loaded:
        instance.loaded = record[1] as LoadedInfo;
        instance.waiters.loaded?.(instance.loaded);
        return;
      case Command.Failed:
        instance.waiters.loaded?.(record[1] as ErrorInfo);
        instance.waiters.ready?.(record[1] as ErrorInfo);
        return;
      case Command.Ready:
        instance.waiters.ready?.(null);
        return;
      case Command.Stopped:
        instance.waiters.stopped?.();
        return;
      case Command.Snapshot:
        instance.waiters.snapshot?.(record[1] as SnapshotInfo);
        return;
      case Command.Pong:
        return;
    }
  }

  // ─────────────────────────── topics ───────────────────────────

  /** Topics this service's clients are subscribed to, with how many of them. */
  private readonly topicCounts = new Map<string, number>();
  private readonly topicsOfLink = new Map<Link, Set<string>>();

  private rememberTopic(link: Link, topic: string): void {
    let topics = this.topicsOfLink.get(link);
    if (topics === undefined) {
      topics = new Set();
      this.topicsOfLink.set(link, topics);
    }
    if (topics.has(topic)) return;
    topics.add(topic);
    this.topicCounts.set(topic, (this.topicCounts.get(topic) ?? 0) + 1);
  }

  private forgetTopic(link: Link, topic: string): void {
    const topics = this.topicsOfLink.get(link);
    if (!topics?.delete(topic)) return;
    if (topics.size === 0) this.topicsOfLink.delete(link);
    const count = (this.topicCounts.get(topic) ?? 1) - 1;
    if (count === 0) this.topicCounts.delete(topic);
    else this.topicCounts.set(topic, count);
  }

  private forgetTopics(link: Link): void {
    for (const topic of [...(this.topicsOfLink.get(link) ?? [])]) this.forgetTopic(link, topic);
  }

  /** A presence change, for the presence hook when a client of this service follows the topic. */
  presenceChanged(change: PresenceChange): void {
    if (!this.topicCounts.has(change.topic)) return;
    if (this.instance?.loaded?.hooks.presence !== true) return;
    this.enqueue([Event.Presence, change]);
  }

  // ─────────────────────────── reload ───────────────────────────

  /**
   * Hot reload: a new instance takes over without dropping a connection. The new code loads
   * while the old keeps serving; if it fails to load, the old one stays. Then the old instance's
   * state is snapshotted, the new one restores it and starts, and receives `open` (flagged as a
   * handover, with each client's data) for every live client; events that arrive meanwhile are
   * held and delivered after, in order. Subscriptions live on the I/O thread and are untouched.
   */
  async reload(): Promise<boolean> {
    if (this.state === "starting" || this.state === "stopping" || this.state === "stopped") {
      return false;
    }
    if (this.state !== "ready" || this.instance === null) {
      // Not running (idle, broken, backing off): the next connection loads the new code.
      if (this.state === "broken") this.brokenUntil = 0;
      return false;
    }
    const old = this.instance;
    this.state = "starting";
    let snapshot: SnapshotInfo = { state: undefined, clientData: [] };
    let next: Instance;
    try {
      // Snapshot first, so the new instance restores the latest state; events held from here.
      old.ready = false;
      if (old.loaded?.hooks.snapshot || this.links.size > 0) {
        this.flushInstance(old);
        const taken = new Promise<SnapshotInfo>((resolve) => {
          old.waiters.snapshot = resolve;
        });
        this.post(old, [[Event.Snapshot]]);
        snapshot = await this.bounded(old, taken, "snapshot");
      }
      next = await this.launch({ state: snapshot.state });
    } catch (error) {
      // The new code is broken: keep serving with the old instance.
      this.logger.error(
        { service: this.name, err: error },
        "reload failed; the running instance keeps serving",
      );
      if (this.instance === old && !old.retired) {
        old.ready = true;
        this.becomeReady();
        return false;
      }
      this.state = "backoff";
      this.scheduleRestart();
      return false;
    }
    this.retire(old);
    this.instance = next;
    const data = new Map(snapshot.clientData);
    const opens: BatchRecord[] = [];
    for (const link of this.links.values()) {
      opens.push([
        Event.Open,
        link.id,
        { ...link.info, upgradeId: 0, handover: true, data: data.get(link.id) },
      ]);
    }
    this.pending = [...opens, ...this.pending.filter((record) => record[0] !== Event.Open)];
    this.becomeReady();
    this.logger.info({ service: this.name, clients: this.links.size }, "service reloaded");
    return true;
  }

  private flushInstance(instance: Instance): void {
    const taken = instance.writer.take(0);
    if (taken !== null) this.send(instance, taken.batch, taken.transfer, 0);
  }

  // ─────────────────────────── stop ───────────────────────────

  /** Runs the stop hook (bounded by `timeoutMs`) and ends the runtime. */
  async stop(timeoutMs: number): Promise<void> {
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const instance = this.instance;
    const wasReady = this.state === "ready";
    this.state = "stopping";
    this.stopWatchdog();
    if (instance !== null && wasReady) {
      this.flush();
      const stopped = new Promise<void>((resolve) => {
        instance.waiters.stopped = resolve;
        instance.onDeath = () => resolve();
      });
      this.post(instance, [[Event.Stop]]);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.logger.warn({ service: this.name }, "the stop hook did not finish in time");
          resolve();
        }, timeoutMs);
      });
      await Promise.race([stopped, timedOut]);
      clearTimeout(timer);
    }
    if (instance !== null) this.retire(instance);
    this.instance = null;
    this.state = "stopped";
  }
}
