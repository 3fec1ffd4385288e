import type { Server as HttpServer, IncomingMessage } from "node:http";
import type { Server as HttpsServer } from "node:https";
import type { Duplex } from "node:stream";
import { errorResponse } from "../protocol/handshake.js";
import { silentLogger } from "../server/logger.js";
import {
  createServiceMount,
  type ServiceMount,
  type ServiceMountOptions,
} from "../server/service-mount.js";
import { abort } from "../server/upgrade.js";

/**
 * Services on a server the program already runs: `attach(server, { root })` or
 * `attach(server, { router })` on any node:http or node:https server. It listens to the
 * server's "upgrade" event only, so plain requests never reach it; an upgrade outside its
 * `path`, not for WebSocket, or (with a router) to no route is left to the server's other
 * "upgrade" listeners, and answered 404 only when there are none.
 */

export interface AttachOptions extends ServiceMountOptions {
  /**
   * Where the services are mounted (default "/"): upgrades under it are theirs, routed by the
   * rest of the path, so with `path: "/ws"` a request for /ws/chat/lobby is routed as
   * /chat/lobby.
   */
  path?: string;
}

export interface Attachment {
  /** The services: upgrade handling, hosts, topics (for frameworks, tests and metrics). */
  readonly mount: ServiceMount;
  /**
   * Stops listening to the server's upgrades and shuts the services down: clients are closed
   * with 1001, stop hooks run, runtimes end. Call it before `server.close()`, which otherwise
   * waits for the WebSocket connections.
   */
  close(): Promise<void>;
}

export type AttachableServer = HttpServer | HttpsServer;

/** Attaches services to `server`; resolves once the service root is read (or the router checked). */
export async function attach(
  server: AttachableServer,
  options: AttachOptions,
): Promise<Attachment> {
  const prefix = normalizePrefix(options.path);
  const logger = options.logger ?? silentLogger;
  const mount = await createServiceMount({ ...options, logger });
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = isWebSocketUpgrade(req) ? strip(prefix, req.url ?? "/") : undefined;
    if (url === undefined || mount.routes(url) === false) {
      // Someone else's upgrade; if nobody else listens, nobody else would answer it.
      if (server.listenerCount("upgrade") === 1) {
        logger.info({ url: req.url }, "upgrade refused: no service at this path");
        refuse(socket, 404);
      }
      return;
    }
    void mount.handleUpgrade(req, socket, head, url);
  };
  server.on("upgrade", onUpgrade);
  let closing: Promise<void> | null = null;
  return {
    mount,
    close() {
      closing ??= (async () => {
        server.off("upgrade", onUpgrade);
        await mount.shutdown();
      })();
      return closing;
    },
  };
}

/** What node calls an upgrade can be for another protocol (h2c, say): only WebSocket is ours. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return typeof upgrade === "string" && upgrade.toLowerCase() === "websocket";
}

/** "/ws/" and "ws" mean "/ws"; "/" and "" mean no prefix. */
export function normalizePrefix(path: string | undefined): string {
  if (path === undefined) return "";
  let prefix = path.startsWith("/") ? path : `/${path}`;
  while (prefix.endsWith("/")) prefix = prefix.slice(0, -1);
  return prefix;
}

/** The URL with `prefix` removed, or undefined when it is not under `prefix`. */
export function strip(prefix: string, url: string): string | undefined {
  if (prefix === "") return url;
  if (!url.startsWith(prefix)) return undefined;
  const rest = url.slice(prefix.length);
  if (rest === "") return "/";
  if (rest.startsWith("/")) return rest;
  if (rest.startsWith("?")) return `/${rest}`;
  return undefined;
}

/** Answers an upgrade nobody takes with a bare HTTP status and lets the socket go. */
export function refuse(socket: Duplex, status: number): void {
  // A reset while the answer leaves must stay quiet.
  socket.on("error", () => {});
  abort(socket, errorResponse(status, ""));
}
