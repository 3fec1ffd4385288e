import { type FSWatcher, watch as watchFile } from "node:fs";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { Duplex } from "node:stream";
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
import { ServiceRouter } from "../services/router.js";
import { ServiceHost, ServiceUnavailable } from "../services/service-host.js";
import { TopicHub, type TopicPolicy } from "../topics/hub.js";
import { CLIENT_BUNDLE_PATH, serveClientBundle } from "./client-bundle.js";
import { FrontDoor } from "./front-door.js";
import { type Logger, silentLogger } from "./logger.js";
import {
  answerUpgradeRequired,
  handleUpgrade,
  offeredProtocols,
  type UpgradeHttpRequest,
  type UpgradeOptions,
  type Verdict,
} from "./upgrade.js";

/**
 * The dedicated server: one HTTP listener, many services routed by URL path from a service
 * root. The I/O thread owns every socket and the protocol; each service file runs in its own
 * runtime (service-host.ts) that sees decoded events.
 */

export interface ServiceServerOptions {
  root: string;
  port?: number;
  host?: string;
  /** Hot reload: a changed service (or a file it imports) takes over its live connections. */
  watch?: boolean;
  /** Starts every service at boot and fails if one does not start. */
  preload?: boolean;
  logger?: Logger;
  perMessageDeflate?: UpgradeOptions["perMessageDeflate"];
  maxMessageSize?: number;
  heartbeat?: UpgradeOptions["heartbeat"];
  closeTimeout?: number;
  /** Milliseconds a client has to send its request head before a 408 (default 10 s). */
  headTimeout?: number;
  /** Isolation of services that do not choose one. */
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
  /** Plain HTTP requests (not upgrades), such as static files; default 426 Upgrade Required. */
  requestHandler?: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * Serve the browser build of `switchboard/client` at /switchboard/client.js (before
   * requestHandler), so pages import it with no build step. Default true.
   */
  clientBundle?: boolean;
  /** Per-topic policies (history, announce, envelope, slow consumers); first match wins. */
  topics?: TopicPolicy[];
  /** Where topics are shared: the in-memory engine by default. */
  engine?: Engine;
  /** Replaces the runtime factories (tests). */
  transports?: Partial<Record<Isolation, TransportFactory>>;
}

export interface ServiceServer {
  readonly port: number;
  readonly host: string;
  url(path?: string): string;
  /** The host of a service file that has been started (for tests and metrics). */
  service(name: string): ServiceHost | undefined;
  /** The topic hub (subscriber counts, dropped messages), for tests and metrics. */
  readonly topics: TopicHub;
  /** Reloads the services that use `file` (what --watch does on a change). */
  reload(file: string): Promise<void>;
  /** Stops accepting, closes clients with 1001, runs stop hooks, ends runtimes; bounded. */
  shutdown(): Promise<void>;
}

export class ServiceServerError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ServiceServerError";
  }
}

const DEFAULT_TRANSPORTS: Record<Isolation, TransportFactory> = {
  worker: createWorkerTransport,
  process: createProcessTransport,
  main: createMainTransport,
};

interface Accepted {
  host: ServiceHost;
  params: Record<string, string>;
  upgradeId: number;
}

export async function startServiceServer(options: ServiceServerOptions): Promise<ServiceServer> {
  const logger = options.logger ?? silentLogger;
  const router = new ServiceRouter(options.root);
  try {
    await router.list();
  } catch (error) {
    throw new ServiceServerError(
      (error as { code?: string }).code ?? "SB_ERR_ROOT_MISSING",
      `service root ${options.root}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const defaults: ServiceDefaults = {
    ...DEFAULT_SERVICE_CONFIG,
    isolation: options.isolation ?? DEFAULT_SERVICE_CONFIG.isolation,
    maxHeapMb: options.maxHeapMb ?? DEFAULT_SERVICE_CONFIG.maxHeapMb,
    watchdogMs: options.watchdogMs ?? DEFAULT_SERVICE_CONFIG.watchdogMs,
    maxMessageSize: options.maxMessageSize ?? DEFAULT_SERVICE_CONFIG.maxMessageSize,
  };
  const transports = { ...DEFAULT_TRANSPORTS, ...options.transports };
  const topics = new TopicHub({
    engine: options.engine ?? new MemoryEngine(),
    policies: options.topics,
    logger,
    onPresence: (change) => {
      for (const serviceHost of hosts.values()) serviceHost.presenceChanged(change);
    },
  });
  await topics.start();
  const hosts = new Map<string, ServiceHost>();
  const connections = new Set<WebSocketConnection>();
  const accepted = new WeakMap<UpgradeHttpRequest, Accepted>();
  let nextClientId = 1;
  let shuttingDown: Promise<void> | null = null;

  const hostFor = (file: string, name: string): ServiceHost => {
    let host = hosts.get(file);
    if (host === undefined) {
      host = new ServiceHost({
        file,
        name,
        defaults,
        logger,
        transports,
        topics,
        restartDelayMs: options.restartDelayMs,
        restartMaxDelayMs: options.restartMaxDelayMs,
        maxInFlightBytes: options.maxInFlightBytes,
      });
      hosts.set(file, host);
    }
    return host;
  };

  /**
   * Routing, start, and the service's upgrade hook: everything before the 101. A path routed
   * before, to a running service without an upgrade hook, is decided at once; the rest waits
   * for the file system, the service's start or its hook.
   */
  const verify = (req: UpgradeHttpRequest): Verdict | Promise<Verdict> => {
    if (shuttingDown !== null) return refuse(req, 503, "Service Unavailable", "shutting down");
    const route = router.lookup(req.url ?? "/");
    if (route === undefined) return verifyAfterLookup(req);
    if (!route.found) return refuse(req, 404, "Not Found", route.reason);
    const host = hosts.get(route.match.file);
    if (host === undefined || !host.acceptsNow || host.hasUpgradeHook) {
      return verifyAfterLookup(req);
    }
    accepted.set(req, { host, params: route.match.params, upgradeId: 0 });
    return { protocol: undefined, maxMessageSize: host.serviceConfig?.maxMessageSize };
  };

  const verifyAfterLookup = async (req: UpgradeHttpRequest): Promise<Verdict> => {
    const url = req.url ?? "/";
    const queryAt = url.indexOf("?");
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const route = await router.resolve(path);
    if (!route.found) return refuse(req, 404, "Not Found", route.reason);
    const host = hostFor(route.match.file, route.match.name);
    try {
      await host.ready();
      // A service that just started has imports to watch.
      if (options.watch) refreshWatches();
    } catch (error) {
      if (!(error instanceof ServiceUnavailable)) throw error;
      // The log names the cause; the response does not.
      return refuse(
        req,
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
        return refuse(
          req,
          500,
          "Internal Server Error",
          `${route.match.name}: upgrade hook failed`,
        );
      }
      if (!verdict.accept) {
        return refuse(
          req,
          verdict.status,
          verdict.reason || statusText(verdict.status),
          "upgrade hook",
        );
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
  const refuse = (
    _req: UpgradeHttpRequest,
    status: number,
    body: string,
    why: string,
    retryAfter?: number,
  ): Verdict => ({
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

  // One listener for every connection, not a closure per connection: a closure made in
  // onUpgrade would share its scope with the `.then` below and keep the upgrade request (its
  // headers and socket bookkeeping) alive for as long as the connection lives.
  const forget = function (this: WebSocketConnection): void {
    connections.delete(this);
  };
  const onUpgrade = (req: UpgradeHttpRequest, socket: Duplex, head: Buffer): void => {
    let connected = false;
    void handleUpgrade(req, socket, head, upgradeOptions, (conn, request) => {
      connected = true;
      const entry = accepted.get(request);
      accepted.delete(request);
      if (entry === undefined) {
        conn.close(1011);
        return;
      }
      const config = entry.host.serviceConfig;
      const id = nextClientId++;
      connections.add(conn);
      conn.on("close", forget);
      const url = request.url ?? "/";
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
      };
      entry.host.attach(id, conn, info);
    }).then(() => {
      if (connected) return;
      const entry = accepted.get(req);
      if (entry !== undefined) {
        accepted.delete(req);
        entry.host.abandonUpgrade(entry.upgradeId);
      }
    });
  };

  const onBundleError = (error: unknown) =>
    logger.error({ err: error, path: CLIENT_BUNDLE_PATH }, "could not build the browser client");
  const http: Server = createHttpServer((req, res) => {
    if (options.clientBundle !== false && serveClientBundle(req, res, onBundleError)) return;
    if (options.requestHandler !== undefined) {
      options.requestHandler(req, res);
      return;
    }
    answerUpgradeRequired(res);
  });
  // Upgrades are read by the front door; node:http only sees the other requests.
  const door = new FrontDoor({ http, onUpgrade, logger, headTimeoutMs: options.headTimeout });
  http.on("clientError", (error, socket) => {
    logger.debug({ err: error }, "malformed HTTP request");
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  });

  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    door.server.once("error", onError);
    door.server.listen(options.port ?? 8080, host, () => {
      door.server.off("error", onError);
      resolve();
    });
  }).catch((error: NodeJS.ErrnoException) => {
    throw new ServiceServerError(
      error.code === "EADDRINUSE" ? "SB_ERR_ADDRESS_IN_USE" : "SB_ERR_LISTEN",
      `cannot listen on ${host}:${options.port ?? 8080}: ${error.message}`,
      { cause: error },
    );
  });
  const address = door.server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;

  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 10_000;

  const stopAll = async (): Promise<void> => {
    const deadline = Date.now() + shutdownTimeoutMs;
    for (const watcher of watchers.values()) watcher.close();
    watchers.clear();
    // Stop accepting; keep-alive HTTP connections are closed too.
    const listenerClosed = door.close();
    // Close every client with 1001 (section 7.4.1: the server is going away).
    const closed = [...connections].map(
      (conn) =>
        new Promise<void>((resolve) => {
          if (conn.readyState === "closed") return resolve();
          conn.once("close", () => resolve());
          conn.close(1001, "server shutting down");
        }),
    );
    await Promise.race([Promise.all(closed), sleep(Math.max(0, (deadline - Date.now()) / 2))]);
    for (const conn of connections) conn.terminate();
    await Promise.all(
      [...hosts.values()].map((serviceHost) =>
        serviceHost.stop(Math.max(100, deadline - Date.now())),
      ),
    );
    door.closeAllHttp();
    await Promise.race([listenerClosed, sleep(Math.max(0, deadline - Date.now()))]);
    await topics.close().catch((error: unknown) => {
      logger.warn({ err: error }, "closing the topic engine failed");
    });
    logger.info({}, "server stopped");
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
      wanted.add(serviceHost.file);
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

  const server: ServiceServer = {
    port,
    host,
    url(path = "/") {
      const shown = host.includes(":") ? `[${host}]` : host;
      return `ws://${shown}:${port}${path.startsWith("/") ? path : `/${path}`}`;
    },
    service(name) {
      for (const serviceHost of hosts.values()) if (serviceHost.name === name) return serviceHost;
      return undefined;
    },
    reload: reloadUsers,
    topics,
    shutdown() {
      if (watchTimer !== null) clearInterval(watchTimer);
      shuttingDown ??= stopAll();
      return shuttingDown;
    },
  };

  if (options.preload) {
    const files = await router.list();
    for (const { file, name } of files) {
      try {
        await hostFor(file, name).ready();
      } catch (error) {
        await server.shutdown();
        throw new ServiceServerError(
          "SB_ERR_PRELOAD_FAILED",
          `service ${name} failed to start: ${(error as Error).message}`,
          { cause: error },
        );
      }
    }
    if (options.watch) refreshWatches();
  }
  return server;
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
