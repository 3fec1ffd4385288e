import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { Duplex } from "node:stream";
import type { TlsOptions } from "node:tls";
import type { ServiceHost } from "../services/service-host.js";
import type { TopicHub } from "../topics/hub.js";
import { CLIENT_BUNDLE_PATH, serveClientBundle } from "./client-bundle.js";
import { FrontDoor } from "./front-door.js";
import { silentLogger } from "./logger.js";
import {
  createServiceMount,
  type ServiceMount,
  ServiceMountError,
  type ServiceMountOptions,
} from "./service-mount.js";
import { answerUpgradeRequired, type UpgradeHttpRequest } from "./upgrade.js";

/**
 * The dedicated server: one HTTP listener, many services routed by URL path from a service
 * root. The I/O thread owns every socket and the protocol; each service file runs in its own
 * runtime (service-host.ts) that sees decoded events.
 */

export interface ServiceServerOptions extends ServiceMountOptions {
  port?: number;
  host?: string;
  /** Milliseconds a client has to send its request head before a 408 (default 10 s). */
  headTimeout?: number;
  /**
   * Serve HTTPS and wss:// with this certificate and key (node:tls options: `cert`, `key`, and
   * `ca`, `passphrase` and the rest where needed). Plain HTTP and ws:// without it.
   */
  tls?: TlsOptions;
  /** Plain HTTP requests (not upgrades), such as static files; default 426 Upgrade Required. */
  requestHandler?: (req: IncomingMessage, res: ServerResponse) => void;
  /**
   * Serve the browser build of `switchboard/client` at /switchboard/client.js (before
   * requestHandler), so pages import it with no build step. Default true.
   */
  clientBundle?: boolean;
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

export async function startServiceServer(options: ServiceServerOptions): Promise<ServiceServer> {
  const logger = options.logger ?? silentLogger;
  let mount: ServiceMount;
  try {
    mount = await createServiceMount({ ...options, logger });
  } catch (error) {
    if (error instanceof ServiceMountError) {
      throw new ServiceServerError(error.code, error.message, { cause: error.cause });
    }
    throw error;
  }
  const onUpgrade = (req: UpgradeHttpRequest, socket: Duplex, head: Buffer): void => {
    void mount.handleUpgrade(req, socket, head);
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
  const door = new FrontDoor({
    http,
    onUpgrade,
    logger,
    headTimeoutMs: options.headTimeout,
    tls: options.tls,
  });
  http.on("clientError", (error, socket) => {
    logger.debug({ err: error }, "malformed HTTP request");
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  });

  const host = options.host ?? "127.0.0.1";
  await door.listen(options.port ?? 8080, host).catch(async (error: NodeJS.ErrnoException) => {
    await mount.shutdown();
    throw new ServiceServerError(
      error.code === "EADDRINUSE" ? "SB_ERR_ADDRESS_IN_USE" : "SB_ERR_LISTEN",
      `cannot listen on ${host}:${options.port ?? 8080}: ${error.message}`,
      { cause: error },
    );
  });
  const { port } = door.address();

  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 10_000;
  const stopAll = async (): Promise<void> => {
    const deadline = Date.now() + shutdownTimeoutMs;
    // Stop accepting; keep-alive HTTP connections are closed too.
    const listenerClosed = door.close();
    await mount.shutdown();
    door.closeAllHttp();
    await Promise.race([listenerClosed, sleep(Math.max(0, deadline - Date.now()))]);
    logger.info({}, "server stopped");
  };
  let stopping: Promise<void> | null = null;

  return {
    port,
    host,
    url(path = "/") {
      const shown = host.includes(":") ? `[${host}]` : host;
      const scheme = options.tls === undefined ? "ws" : "wss";
      return `${scheme}://${shown}:${port}${path.startsWith("/") ? path : `/${path}`}`;
    },
    service: (name) => mount.service(name),
    reload: (file) => mount.reload(file),
    topics: mount.topics,
    shutdown() {
      stopping ??= stopAll();
      return stopping;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
