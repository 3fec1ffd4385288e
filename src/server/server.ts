import { EventEmitter } from "node:events";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import type { WebSocketConnection } from "../connection/connection.js";
import { CloseCode } from "../protocol/constants.js";
import { FrontDoor } from "./front-door.js";
import { silentLogger } from "./logger.js";
import {
  answerUpgradeRequired,
  handleUpgrade,
  type UpgradeHttpRequest,
  type UpgradeOptions,
} from "./upgrade.js";

export interface ServerOptions extends UpgradeOptions {
  /** TCP port; 0 picks a free one. */
  port?: number;
  /** Interface to listen on; defaults to 127.0.0.1. */
  host?: string;
  /** Milliseconds a client has to send its request head before a 408 (default 10 s). */
  headTimeout?: number;
  /** Answers plain HTTP requests (those that are not upgrades). Default: 426 Upgrade Required. */
  onRequest?: (req: IncomingMessage, res: import("node:http").ServerResponse) => void;
}

export interface WebSocketServerEvents {
  connection: [connection: WebSocketConnection, req: UpgradeHttpRequest];
  error: [error: Error];
}

/**
 * A standalone WebSocket server. It owns its listening socket (src/server/front-door.ts): opening
 * handshakes are read without node:http, and every other request goes to `http`, a node:http
 * server that is handed those connections and never listens itself.
 */
export class WebSocketServer extends EventEmitter<WebSocketServerEvents> {
  readonly http: Server;
  readonly connections = new Set<WebSocketConnection>();
  private readonly options: ServerOptions;
  private readonly door: FrontDoor;

  constructor(options: ServerOptions = {}) {
    super();
    this.options = options;
    this.http = createHttpServer((req, res) => {
      if (options.onRequest) {
        options.onRequest(req, res);
        return;
      }
      answerUpgradeRequired(res);
    });
    this.http.on("clientError", (error, socket) => {
      options.logger?.debug({ err: error }, "malformed HTTP request");
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
    this.door = new FrontDoor({
      http: this.http,
      onUpgrade: (req, socket, head) => this.handleUpgrade(req, socket, head),
      logger: options.logger ?? silentLogger,
      headTimeoutMs: options.headTimeout,
    });
  }

  /**
   * Accepts an upgrade: the ones this server's own listener reads, and "upgrade" events of any
   * node:http server; the connection is announced on this one.
   */
  handleUpgrade(req: UpgradeHttpRequest, socket: Duplex, head: Buffer): void {
    void handleUpgrade(req, socket, head, this.options, (connection, request) => {
      this.connections.add(connection);
      connection.once("close", () => this.connections.delete(connection));
      this.emit("connection", connection, request);
    });
  }

  listen(port = this.options.port ?? 0, host = this.options.host ?? "127.0.0.1"): Promise<this> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      const listener = this.door.server;
      listener.once("error", onError);
      listener.listen(port, host, () => {
        listener.removeListener("error", onError);
        listener.on("error", (error) => {
          if (this.listenerCount("error") > 0) this.emit("error", error);
        });
        resolve(this);
      });
    });
  }

  /** True from `listen()` until `close()`. */
  get listening(): boolean {
    return this.door.listening;
  }

  get port(): number {
    return this.door.address().port;
  }

  get host(): string {
    return this.door.address().address;
  }

  /** The ws:// URL of a path on this server. */
  url(path = "/"): string {
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    return `ws://${host}:${this.port}${path.startsWith("/") ? path : `/${path}`}`;
  }

  /**
   * Stops accepting, asks every client to go away (1001, RFC 6455 section 7.4.1) and resolves
   * once all of them are gone; the close timeout bounds how long that takes.
   */
  async close(code: number = CloseCode.GoingAway, reason = "server shutting down"): Promise<void> {
    const closing = this.door.close();
    const gone = [...this.connections].map(
      (connection) =>
        new Promise<void>((resolve) => {
          if (connection.readyState === "closed") return resolve();
          connection.once("close", () => resolve());
          connection.close(code, reason);
        }),
    );
    await Promise.all(gone);
    this.door.closeAllHttp();
    await closing;
  }
}

/** Creates a WebSocket server and starts listening. */
export async function createServer(options: ServerOptions = {}): Promise<WebSocketServer> {
  return new WebSocketServer(options).listen();
}
