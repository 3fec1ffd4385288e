import { type IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../server/logger.js";
import { isWebSocketUpgrade, refuse } from "./attach.js";

/**
 * Upgrades through a web framework, so that its own middleware (auth, cookies, sessions) decides
 * before the handshake. The upgrade request runs through the application like any request, with
 * a ServerResponse bound to the socket: whatever answers it (a 401 from an auth check, the
 * framework's 404) is written to the client as a plain HTTP response. A Switchboard handler
 * reached by the request takes the socket instead (`take`) and the services perform the
 * handshake. The approach of @fastify/websocket and express-ws, with one dispatcher per server
 * however many mounts share it.
 */

/** How long the application may take to answer or hand over an upgrade. */
export const DEFAULT_DISPATCH_TIMEOUT_MS = 10_000;

interface Pending {
  socket: Duplex;
  head: Buffer;
  res: ServerResponse;
  taken: boolean;
  timer: NodeJS.Timeout;
}

const PENDING = Symbol("switchboard.pendingUpgrade");
type PendingRequest = IncomingMessage & { [PENDING]?: Pending };

/**
 * A server whose upgrades are dispatched: node:http or node:https, or what a framework's
 * `serve()` returns for them.
 */
export interface UpgradingServer {
  on(
    event: "upgrade",
    listener: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
  ): unknown;
  listenerCount(event: "upgrade"): number;
}

/** Runs a request through the application, (req, res) => void as node:http would call it. */
export type RequestRunner = (req: IncomingMessage, res: ServerResponse) => unknown;

const dispatchers = new WeakMap<UpgradingServer, UpgradeDispatcher>();

export class UpgradeDispatcher {
  readonly #logger: Logger;
  readonly #timeoutMs: number;
  #run: RequestRunner;

  private constructor(run: RequestRunner, logger: Logger, timeoutMs: number) {
    this.#run = run;
    this.#logger = logger;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * The dispatcher of `server`, made and listening on first use: WebSocket upgrades go through
   * `run` (the application); others are left to the server's other listeners.
   */
  static of(
    server: UpgradingServer,
    run: RequestRunner,
    logger: Logger,
    timeoutMs = DEFAULT_DISPATCH_TIMEOUT_MS,
  ): UpgradeDispatcher {
    let dispatcher = dispatchers.get(server);
    if (dispatcher === undefined) {
      dispatcher = new UpgradeDispatcher(run, logger, timeoutMs);
      dispatchers.set(server, dispatcher);
      const it = dispatcher;
      server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
        if (!isWebSocketUpgrade(req)) {
          if (server.listenerCount("upgrade") === 1) refuse(socket, 400);
          return;
        }
        it.#dispatch(req, socket, head);
      });
    }
    dispatcher.#run = run;
    return dispatcher;
  }

  /** Whether `req` is an upgrade this dispatcher runs through the application, not yet taken. */
  pending(req: IncomingMessage): boolean {
    const pending = (req as PendingRequest)[PENDING];
    return pending !== undefined && !pending.taken;
  }

  /**
   * Takes the socket of an upgrade the application let through and hands it to `accept`;
   * false (nothing taken) when `req` is not a pending upgrade, such as a plain request.
   */
  take(req: IncomingMessage, accept: (socket: Duplex, head: Buffer) => void): boolean {
    const pending = (req as PendingRequest)[PENDING];
    if (pending === undefined || pending.taken) return false;
    pending.taken = true;
    clearTimeout(pending.timer);
    (req as PendingRequest)[PENDING] = undefined;
    pending.res.detachSocket(pending.socket as Socket);
    pending.socket.off("error", ignore);
    accept(pending.socket, pending.head);
    return true;
  }

  #dispatch(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const run = this.#run;
    // A reset while the application decides must not become an uncaught error.
    socket.on("error", ignore);
    const res = new ServerResponse(req);
    // An answer from the application ends the connection: it was never going to be HTTP.
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    const pending: Pending = {
      socket,
      head,
      res,
      taken: false,
      timer: setTimeout(() => {
        if (pending.taken) return;
        (req as PendingRequest)[PENDING] = undefined;
        this.#logger.warn(
          { url: req.url, timeoutMs: this.#timeoutMs },
          "upgrade refused: the application neither answered nor accepted it in time",
        );
        if (!res.headersSent) {
          res.detachSocket(socket as Socket);
          refuse(socket, 503);
        } else {
          socket.destroy();
        }
      }, this.#timeoutMs),
    };
    pending.timer.unref();
    (req as PendingRequest)[PENDING] = pending;
    res.on("finish", () => {
      if (pending.taken) return;
      clearTimeout(pending.timer);
      (req as PendingRequest)[PENDING] = undefined;
      this.#logger.info(
        { url: req.url, status: res.statusCode },
        "upgrade answered by the application",
      );
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    try {
      const result = run(req, res);
      if (result instanceof Promise)
        result.catch((error: unknown) => this.#failed(req, res, error));
    } catch (error) {
      this.#failed(req, res, error);
    }
  }

  #failed(req: IncomingMessage, res: ServerResponse, error: unknown): void {
    this.#logger.error({ err: error, url: req.url }, "the application failed on an upgrade");
    const pending = (req as PendingRequest)[PENDING];
    if (pending === undefined || pending.taken) return;
    if (!res.headersSent) {
      res.statusCode = 500;
      res.end();
    }
  }
}

function ignore(): void {}
