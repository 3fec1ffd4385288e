import { EventEmitter } from "node:events";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import type { WebSocketConnection } from "../connection/connection.js";
import { CloseCode } from "../protocol/constants.js";
import { answerUpgradeRequired, handleUpgrade, type UpgradeOptions } from "./upgrade.js";

export interface ServerOptions extends UpgradeOptions {
  /** TCP port; 0 picks a free one. */
  port?: number;
  /** Interface to listen on; defaults to 127.0.0.1. */
  host?: string;
  /** Answers plain HTTP requests (those that are not upgrades). Default: 426 Upgrade Required. */
  onRequest?: (req: IncomingMessage, res: import("node:http").ServerResponse) => void;
}

export interface WebSocketServerEvents {
  connection: [connection: WebSocketConnection, req: IncomingMessage];
  error: [error: Error];
}

/** A standalone WebSocket server on its own node:http listener. */
export class WebSocketServer extends EventEmitter<WebSocketServerEvents> {
  readonly http: Server;
  readonly connections = new Set<WebSocketConnection>();
  private readonly options: ServerOptions;

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
    this.http.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.handleUpgrade(req, socket, head);
    });
    this.http.on("clientError", (error, socket) => {
      options.logger?.debug({ err: error }, "malformed HTTP request");
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
  }

  /** Accepts an upgrade from any node:http server; the connection is announced on this one. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    void handleUpgrade(req, socket, head, this.options, (connection, request) => {
      this.connections.add(connection);
      connection.once("close", () => this.connections.delete(connection));
      this.emit("connection", connection, request);
    });
  }

  listen(port = this.options.port ?? 0, host = this.options.host ?? "127.0.0.1"): Promise<this> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.http.once("error", onError);
      this.http.listen(port, host, () => {
        this.http.removeListener("error", onError);
        this.http.on("error", (error) => {
          if (this.listenerCount("error") > 0) this.emit("error", error);
        });
        resolve(this);
      });
    });
  }

  get port(): number {
    return (this.http.address() as AddressInfo).port;
  }

  get host(): string {
    return (this.http.address() as AddressInfo).address;
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
    const closing = new Promise<void>((resolve) => this.http.close(() => resolve()));
    const gone = [...this.connections].map(
      (connection) =>
        new Promise<void>((resolve) => {
          if (connection.readyState === "closed") return resolve();
          connection.once("close", () => resolve());
          connection.close(code, reason);
        }),
    );
    await Promise.all(gone);
    this.http.closeAllConnections();
    await closing;
  }
}

/** Creates a WebSocket server and starts listening. */
export async function createServer(options: ServerOptions = {}): Promise<WebSocketServer> {
  return new WebSocketServer(options).listen();
}
