import { type FSWatcher, watch as watchFile } from "node:fs";
import type { Duplex } from "node:stream";
import { type Router, routeMatch } from "../adapters/router.js";
import type { WebSocketConnection } from "../connection/connection.js";
import type { Engine } from "../engines/engine.js";
import { MemoryEngine } from "../engines/memory.js";
import type { OpenInfo, UpgradeRequestInfo } from "../isolation/batch.js";
import { createMainTransport } from "../isolation/main-transport.js";
import { createProcessTransport } from "../isolation/process-transport.js";
import type { TransportFactory } from "../isolation/transport.js";
import { createWorkerTransport } from "../isolation/worker-transport.js";
import { DEFAULT_SERVICE_CONFIG, type ServiceDefaults } from "../services/config.js";
import type { Isolation } from "../services/define.js";
import { type RouteMatch, type RouteResult, ServiceRouter } from "../services/router.js";
import { ServiceHost, ServiceUnavailable } from "../services/service-host.js";
import { TopicHub, type TopicPolicy } from "../topics/hub.js";
import { type Logger, silentLogger } from "./logger.js";
import {
  handleUpgrade,
  offeredProtocols,
  type UpgradeHttpRequest,
  type UpgradeOptions,
  type Verdict,
} from "./upgrade.js";

/**
 * Services behind an upgrade: what the standalone server and every adapter share. A mount
 * routes each upgrade to a service (from a service root or a programmatic router), starts the
 * service's runtime on first use, performs the handshake and attaches the connection; it owns
 * the service hosts, the topic hub and hot reload, and closes it all on shutdown. It never
 * listens: the server or adapter in front of it hands it upgrades.
 */

export interface ServiceMountOptions {
  /** The service root: `/a/b` is served by `<root>/a/b.ts`. Give this or `router`. */
  root?: string;
  /** A programmatic router (src/adapters/router.ts). Give this or `root`. */
  router?: Router;
  /** Hot reload: a changed service (or a file it imports) takes over its live connections. */
  watch?: boolean;
  /** Starts every service at once and fails if one does not start. */
  preload?: boolean;
  logger?: Logger;
  perMessageDeflate?: UpgradeOptions["perMessageDeflate"];
  maxMessageSize?: number;
  heartbeat?: UpgradeOptions["heartbeat"];
  closeTimeout?: number;
  /** Isolation of services that do not choose one (default "worker"). */
  isolation?: Isolation;
  maxHeapMb?: number;
  watchdogMs?: number;
  /** Bound on the whole shutdown: closing clients, stop hooks, ending runtimes. */
  shutdownTimeoutMs?: number;
  restartDelayMs?: number;
  restartMaxDelayMs?: number;
  /**
   * Bytes of messages handed to a service and not yet handled past which its clients stop
   * being read and new connections get 503, until it catches up (default 16 MiB).
   */
  maxInFlightBytes?: number;
  /** Per-topic policies (history, announce, envelope, slow consumers); first match wins. */
  topics?: TopicPolicy[];
  /** Where topics are shared: the in-memory engine by default. */
  engine?: Engine;
  /** Replaces the runtime factories (tests). */
  transports?: Partial<Record<Isolation, TransportFactory>>;
}

export interface ServiceMount {
  /**
   * Performs the upgrade: routes `url` (default `req.url`), asks the service, answers with the
   * 101 or the refusal (404 for no service, 503 while shutting down). Never rejects.
   */
  handleUpgrade(req: UpgradeHttpRequest, socket: Duplex, head: Buffer, url?: string): Promise<void>;
  /**
   * Whether `url` is routed to a service, when that is known without the file system: true or
   * false for a router, and for a root once the path has been routed before; undefined
   * otherwise.
   */
  routes(url: string): boolean | undefined;
  /** The host of a service that has been started (for tests and metrics). */
  service(name: string): ServiceHost | undefined;
  /** The topic hub (subscriber counts, dropped messages), for tests and metrics. */
  readonly topics: TopicHub;
  /** The live WebSocket connections (a new set on each read, gathered from the services). */
  readonly connections: ReadonlySet<WebSocketConnection>;
  /** Reloads the services that use `file` (what `watch` does on a change). */
  reload(file: string): Promise<void>;
  /**
   * Refuses new upgrades, closes clients with 1001, runs stop hooks, ends runtimes, closes the
   * topic engine; bounded by `shutdownTimeoutMs`. Idempotent.
   */
  shutdown(): Promise<void>;
}

export class ServiceMountError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ServiceMountError";
  }
}

const DEFAULT_TRANSPORTS: Record<Isolation, TransportFactory> = {
  worker: createWorkerTransport,
  process: createProcessTransport,
  main: createMainTransport,
};

interface Accepted {
  host: ServiceHost;
  params: Readonly<Record<string, string>>;
  upgradeId: number;
}

/** The two kinds of route source, behind one face. */
interface Routes {
  /** The answer when it is known without the file system. */
  lookup(url: string): RouteResult | undefined;
  resolve(path: string): Promise<RouteResult>;
  /** Every service, for preload. */
  list(): Promise<RouteMatch[]>;
  /** Forget kept answers (a reload may have changed the root). */
  invalidate(): void;
}

function routerRoutes(router: Router): Routes {
  return {
    lookup: (url) => router.match(url),
    resolve: async (path) => router.match(path),
    list: async () => router.routes.map((route) => routeMatch(route)),
    invalidate: () => {},
  };
}

async function rootRoutes(root: string): Promise<Routes> {
  const router = new ServiceRouter(root);
  try {
    await router.list();
  } catch (error) {
    throw new ServiceMountError(
      (error as { code?: string }).code ?? "SB_ERR_ROOT_MISSING",
      `service root ${root}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return {
    lookup: (url) => router.lookup(url),
    resolve: (path) => router.resolve(path),
    list: async () => (await router.list()).map(({ file, name }) => ({ file, name, params: {} })),
    invalidate: () => router.invalidate(),
  };
}

export async function createServiceMount(options: ServiceMountOptions): Promise<ServiceMount> {
  const logger = options.logger ?? silentLogger;
  if ((options.root === undefined) === (options.router === undefined)) {
    throw new ServiceMountError(
      "SB_ERR_MOUNT_OPTIONS",
      "give the services as `root` (a directory) or as `router` (createRouter()), one of the two",
    );
  }
  const defaults: ServiceDefaults = {
    ...DEFAULT_SERVICE_CONFIG,
    isolation: options.isolation ?? DEFAULT_SERVICE_CONFIG.isolation,
    maxHeapMb: options.maxHeapMb ?? DEFAULT_SERVICE_CONFIG.maxHeapMb,
    watchdogMs: options.watchdogMs ?? DEFAULT_SERVICE_CONFIG.watchdogMs,
    maxMessageSize: options.maxMessageSize ?? DEFAULT_SERVICE_CONFIG.maxMessageSize,
  };
  if (options.router !== undefined) {
    const problems = options.router.problems(defaults.isolation);
    if (problems.length > 0) {
      throw new ServiceMountError("SB_ERR_SERVICE_NOT_IMPORTABLE", problems.join("\n"));
    }
  }
  const router =
    options.router !== undefined
      ? routerRoutes(options.router)
      : await rootRoutes(options.root as string);
  const transports = { ...DEFAULT_TRANSPORTS, ...options.transports };
  const hosts = new Map<string, ServiceHost>();
  const topics = new TopicHub({
    engine: options.engine ?? new MemoryEngine(),
    policies: options.topics,
    logger,
    onPresence: (change) => {
      for (const serviceHost of hosts.values()) serviceHost.presenceChanged(change);
    },
  });
  await topics.start();
  /**
   * The live connections, from the hosts that hold them: the mount keeps no set of its own,
   * so a connection costs it neither an entry nor a close listener.
   */
  const liveConnections = (): Set<WebSocketConnection> => {
    const live = new Set<WebSocketConnection>();
    for (const serviceHost of hosts.values()) {
      for (const conn of serviceHost.connections()) live.add(conn);
    }
    return live;
  };
  const accepted = new WeakMap<UpgradeHttpRequest, Accepted>();
  /** The path an adapter routed an upgrade by, where it is not the request's own URL. */
  const routedUrls = new WeakMap<UpgradeHttpRequest, string>();
  const urlOf = (req: UpgradeHttpRequest): string => routedUrls.get(req) ?? req.url ?? "/";
  let nextClientId = 1;
  // Shared topics need ids no other node gives: this node's id before each client's number.
  const idPrefix = options.engine === undefined ? undefined : `${options.engine.nodeId}.`;
  let shuttingDown: Promise<void> | null = null;

  /** One host per service: a root's file, or a router's route (both named uniquely). */
  const hostFor = (match: RouteMatch): ServiceHost => {
    let host = hosts.get(match.name);
    if (host === undefined) {
      host = new ServiceHost({
        file: match.file,
        name: match.name,
        exportOrdinal: match.exportOrdinal,
        definition: match.definition,
        config: match.config,
        defaults,
        logger,
        transports,
        topics,
        restartDelayMs: options.restartDelayMs,
        restartMaxDelayMs: options.restartMaxDelayMs,
        maxInFlightBytes: options.maxInFlightBytes,
      });
      hosts.set(match.name, host);
    }
    return host;
  };

  /**
   * Routing, start, and the service's upgrade hook: everything before the 101. A path routed
   * before, to a running service without an upgrade hook, is decided at once; the rest waits
   * for the file system, the service's start or its hook.
   */
  const verify = (req: UpgradeHttpRequest): Verdict | Promise<Verdict> => {
    if (shuttingDown !== null) return refuse(503, "Service Unavailable", "shutting down");
    const route = router.lookup(urlOf(req));
    if (route === undefined) return verifyAfterLookup(req);
    if (!route.found) return refuse(404, "Not Found", route.reason);
    const host = hosts.get(route.match.name);
    if (host === undefined || !host.acceptsNow || host.hasUpgradeHook) {
      return verifyAfterLookup(req);
    }
    accepted.set(req, { host, params: route.match.params, upgradeId: 0 });
    return { protocol: undefined, maxMessageSize: host.serviceConfig?.maxMessageSize };
  };

  const verifyAfterLookup = async (req: UpgradeHttpRequest): Promise<Verdict> => {
    const url = urlOf(req);
    const queryAt = url.indexOf("?");
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const route = await router.resolve(path);
    if (!route.found) return refuse(404, "Not Found", route.reason);
    const host = hostFor(route.match);
    try {
      await host.ready();
      // A service that just started has imports to watch.
      if (options.watch) refreshWatches();
    } catch (error) {
      if (!(error instanceof ServiceUnavailable)) throw error;
      // The log names the cause; the response does not.
      return refuse(
        error.status,
        error.status === 500 ? "Internal Server Error" : "Service Unavailable",
        `${route.match.name}: ${error.message}`,
        error.retryAfterSeconds,
      );
    }
    // Without an upgrade hook there is nothing to ask: the request is not even described.
    let id = 0;
    if (host.hasUpgradeHook) {
      const request: UpgradeRequestInfo = {
        path,
        params: route.match.params,
        query: queryAt === -1 ? "" : url.slice(queryAt + 1),
        headers: flattenHeaders(req),
        remoteAddress: req.socket.remoteAddress ?? "",
        protocols: offeredProtocols(req),
      };
      const upgrade = host.upgrade(request);
      id = upgrade.id;
      const verdict = await upgrade.decision;
      if ("error" in verdict) {
        return refuse(500, "Internal Server Error", `${route.match.name}: upgrade hook failed`);
      }
      if (!verdict.accept) {
        return refuse(verdict.status, verdict.reason || statusText(verdict.status), "upgrade hook");
      }
      if (verdict.protocol !== "") {
        accepted.set(req, { host, params: route.match.params, upgradeId: id });
        return { protocol: verdict.protocol, maxMessageSize: host.serviceConfig?.maxMessageSize };
      }
    }
    accepted.set(req, { host, params: route.match.params, upgradeId: id });
    return { protocol: undefined, maxMessageSize: host.serviceConfig?.maxMessageSize };
  };

  /** A refusal: handleUpgrade answers it and logs it with `why`. */
  const refuse = (status: number, body: string, why: string, retryAfter?: number): Verdict => ({
    status,
    body,
    reason: why,
    headers: retryAfter === undefined ? {} : { "Retry-After": String(retryAfter) },
  });

  const upgradeOptions: UpgradeOptions = {
    perMessageDeflate: options.perMessageDeflate,
    maxMessageSize: defaults.maxMessageSize,
    heartbeat: options.heartbeat,
    closeTimeout: options.closeTimeout,
    // Services get the headers they ask for at open; nothing reads them later.
    keepHandshakeHeaders: false,
    logger,
    verify,
  };

  const onConnection = (conn: WebSocketConnection, request: UpgradeHttpRequest): void => {
    const entry = accepted.get(request);
    accepted.delete(request);
    if (entry === undefined) {
      conn.close(1011);
      return;
    }
    const config = entry.host.serviceConfig;
    const id = nextClientId++;
    const url = urlOf(request);
    const queryAt = url.indexOf("?");
    const headers = selectHeaders(request, config?.headers ?? []);
    const info: OpenInfo = {
      remoteAddress: request.socket.remoteAddress ?? "",
      params: entry.params,
      query: queryAt === -1 ? "" : url.slice(queryAt + 1),
      headers,
      protocol: conn.protocol,
      upgradeId: entry.upgradeId,
      handover: false,
      ...(idPrefix === undefined ? {} : { idPrefix }),
    };
    entry.host.attach(id, conn, info);
  };
  const mountUpgrade = (
    req: UpgradeHttpRequest,
    socket: Duplex,
    head: Buffer,
    url?: string,
  ): Promise<void> => {
    if (url !== undefined) routedUrls.set(req, url);
    return handleUpgrade(req, socket, head, upgradeOptions, onConnection).then(() => {
      // Accepted by the service but never connected (the handshake failed after it): the
      // service forgets the upgrade it decided.
      const entry = accepted.get(req);
      if (entry !== undefined) {
        accepted.delete(req);
        entry.host.abandonUpgrade(entry.upgradeId);
      }
    });
  };

  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 10_000;
  const stopAll = async (): Promise<void> => {
    const deadline = Date.now() + shutdownTimeoutMs;
    if (watchTimer !== null) clearInterval(watchTimer);
    for (const watcher of watchers.values()) watcher.close();
    watchers.clear();
    // Close every client with 1001 (section 7.4.1: the server is going away).
    const closed = [...liveConnections()].map(
      (conn) =>
        new Promise<void>((resolve) => {
          if (conn.readyState === "closed") return resolve();
          conn.once("close", () => resolve());
          conn.close(1001, "server shutting down");
        }),
    );
    await Promise.race([Promise.all(closed), sleep(Math.max(0, (deadline - Date.now()) / 2))]);
    for (const conn of liveConnections()) conn.terminate();
    await Promise.all(
      [...hosts.values()].map((serviceHost) =>
        serviceHost.stop(Math.max(100, deadline - Date.now())),
      ),
    );
    await topics.close().catch((error: unknown) => {
      logger.warn({ err: error }, "closing the topic engine failed");
    });
  };

  // ── hot reload ──
  const watchers = new Map<string, FSWatcher>();
  const reloadTimers = new Map<string, NodeJS.Timeout>();
  const reloadUsers = async (file: string): Promise<void> => {
    const users = [...hosts.values()].filter(
      (serviceHost) => serviceHost.file === file || serviceHost.imports.includes(file),
    );
    router.invalidate();
    await Promise.all(users.map((serviceHost) => serviceHost.reload()));
    if (options.watch) refreshWatches();
  };
  const refreshWatches = (): void => {
    const wanted = new Set<string>();
    for (const serviceHost of hosts.values()) {
      if (serviceHost.file !== "") wanted.add(serviceHost.file);
      for (const file of serviceHost.imports) wanted.add(file);
    }
    for (const [file, watcher] of watchers) {
      if (!wanted.has(file)) {
        watcher.close();
        watchers.delete(file);
      }
    }
    for (const file of wanted) {
      if (watchers.has(file)) continue;
      try {
        const watcher = watchFile(file, { persistent: false }, () => {
          // Editors write in several steps; one reload after the last of them.
          clearTimeout(reloadTimers.get(file));
          reloadTimers.set(
            file,
            setTimeout(() => {
              reloadTimers.delete(file);
              logger.info({ file }, "file changed; reloading the services that use it");
              // An editor that replaces the file ends this watcher: watch the new one.
              watchers.get(file)?.close();
              watchers.delete(file);
              void reloadUsers(file);
            }, 50),
          );
        });
        watcher.on("error", () => {
          watcher.close();
          watchers.delete(file);
        });
        watchers.set(file, watcher);
      } catch (error) {
        logger.warn({ file, err: error }, "cannot watch a file; changes to it are not reloaded");
      }
    }
  };
  let watchTimer: NodeJS.Timeout | null = null;
  if (options.watch) {
    // Services start lazily and may import more later: look for new files to watch.
    watchTimer = setInterval(refreshWatches, 500);
    watchTimer.unref();
  }

  const mount: ServiceMount = {
    handleUpgrade: mountUpgrade,
    routes(url) {
      const route = router.lookup(url);
      return route === undefined ? undefined : route.found;
    },
    service(name) {
      for (const serviceHost of hosts.values()) if (serviceHost.name === name) return serviceHost;
      return undefined;
    },
    topics,
    get connections() {
      return liveConnections();
    },
    reload: reloadUsers,
    shutdown() {
      shuttingDown ??= stopAll();
      return shuttingDown;
    },
  };

  if (options.preload) {
    for (const match of await router.list()) {
      try {
        await hostFor(match).ready();
      } catch (error) {
        await mount.shutdown();
        throw new ServiceMountError(
          "SB_ERR_PRELOAD_FAILED",
          `service ${match.name} failed to start: ${(error as Error).message}`,
          { cause: error },
        );
      }
    }
    if (options.watch) refreshWatches();
  }
  return mount;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Request headers as one string each (node joins repeated ones, except set-cookie). */
function flattenHeaders(req: UpgradeHttpRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

/** No headers selected: one frozen object for every client of a service that asks for none. */
const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

function selectHeaders(
  req: UpgradeHttpRequest,
  names: readonly string[],
): Readonly<Record<string, string>> {
  if (names.length === 0) return NO_HEADERS;
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = req.headers[name];
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return out;
}

function statusText(status: number): string {
  return status === 401 ? "Unauthorized" : status === 403 ? "Forbidden" : "Request refused";
}
