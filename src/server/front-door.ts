/**
 * The listening socket of the standalone servers. Every TCP connection starts here: the request
 * head is read and parsed by the protocol layer (src/protocol/http-request.ts), an opening
 * handshake goes straight to the WebSocket upgrade, and any other request is handed, with the
 * bytes already read, to a node:http server that never listens itself (static files, the client
 * bundle, 426 answers).
 *
 * Why not let node:http read every request: for a WebSocket connection, node's HTTP machinery
 * (its parser binding, IncomingMessage, the upgrade event, the server's connection bookkeeping)
 * costs more CPU than the rest of the connection's opening and closing together. Reading the
 * head here makes a connection about as cheap as the socket under it.
 */
import type { Server as HttpServer, IncomingMessage } from "node:http";
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server,
  type Socket,
} from "node:net";
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from "node:tls";
import { DeadlineSweep } from "../connection/deadlines.js";
import { errorResponse, serializeResponse } from "../protocol/handshake.js";
import {
  DEFAULT_MAX_HEAD_SIZE,
  listsToken,
  type ParsedRequestHead,
  parseRequestHead,
} from "../protocol/http-request.js";
import type { Logger } from "./logger.js";
import type { UpgradeHttpRequest } from "./upgrade.js";

/** How long a client may take to send its request head (slow-loris bound). */
export const DEFAULT_HEAD_TIMEOUT_MS = 10_000;

/** What the front door keeps on a socket while it reads the head. */
interface ReadingState {
  door: FrontDoor;
  /** The bytes read so far, when the head came in more than one chunk. */
  received: Buffer | null;
}
const READING = Symbol("switchboard.frontDoor");
type ReadingSocket = Socket & { [READING]?: ReadingState };

/** The request an upgrade is decided on: what the front door parsed, plus the socket. */
export interface FrontDoorRequest extends ParsedRequestHead {
  socket: Socket;
}

export interface FrontDoorOptions {
  /** Takes every request that is not an opening handshake; it is given sockets, never listens. */
  http: HttpServer;
  /**
   * An opening handshake: the head is parsed, `head` holds the bytes after it. Also called for
   * an upgrade that node:http read, on a keep-alive connection that began with a plain request.
   */
  onUpgrade(request: UpgradeHttpRequest, socket: Socket, head: Buffer): void;
  logger: Logger;
  maxHeadSize?: number;
  headTimeoutMs?: number;
  /**
   * Listen with TLS (https:// and wss://). The head timeout then also bounds the TLS
   * handshake, which comes before it.
   */
  tls?: TlsOptions;
}

export class FrontDoor {
  readonly server: Server;
  readonly #options: FrontDoorOptions;
  readonly #maxHeadSize: number;
  /** Connections still sending their head, by when they must have sent it; `close()` drops them. */
  readonly #headDeadlines: DeadlineSweep<Socket>;

  constructor(options: FrontDoorOptions) {
    this.#options = options;
    this.#maxHeadSize = options.maxHeadSize ?? DEFAULT_MAX_HEAD_SIZE;
    this.#headDeadlines = new DeadlineSweep(
      options.headTimeoutMs ?? DEFAULT_HEAD_TIMEOUT_MS,
      (socket) => {
        this.#finish(socket);
        this.#refuse(socket, 408, "the request head did not arrive in time");
      },
    );
    // No noDelay option here: the connection sets it once it exists (a second setsockopt per
    // connection otherwise), and plain requests get it when they are handed over.
    const accept = (socket: Socket): void => this.#accept(socket);
    if (options.tls === undefined) {
      this.server = createNetServer(accept);
    } else {
      this.server = createTlsServer(
        {
          ...options.tls,
          handshakeTimeout:
            options.tls.handshakeTimeout ?? options.headTimeoutMs ?? DEFAULT_HEAD_TIMEOUT_MS,
        },
        accept,
      );
      // A failed TLS handshake never becomes a connection: say why, for whoever debugs it.
      this.server.on("tlsClientError", (error: Error, socket: TLSSocket) => {
        options.logger.info(
          { err: error, remoteAddress: socket.remoteAddress },
          "TLS handshake failed",
        );
      });
    }
    // A client may reuse a keep-alive connection of a plain request for its handshake; by then
    // the connection is node's, and node reads the upgrade.
    options.http.on("upgrade", (request: IncomingMessage, socket: Socket, head: Buffer) =>
      options.onUpgrade(request, socket, head),
    );
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.server.once("error", onError);
      this.server.listen(port, host, () => {
        this.server.off("error", onError);
        resolve();
      });
    });
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  get listening(): boolean {
    return this.server.listening;
  }

  /**
   * Stops accepting and drops connections that have not finished their head; plain HTTP
   * connections idle on keep-alive are closed too. Resolves when the listener is closed.
   */
  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
    for (const socket of [...this.#headDeadlines.members()]) {
      this.#finish(socket);
      socket.destroy();
    }
    this.#options.http.closeIdleConnections();
    return closed;
  }

  /** Ends every connection node:http holds, busy or not (the last step of a shutdown). */
  closeAllHttp(): void {
    this.#options.http.closeAllConnections();
  }

  #accept(socket: Socket): void {
    (socket as ReadingSocket)[READING] = { door: this, received: null };
    // Listeners every connection shares, and one sweep for every head deadline: closures and
    // a timer per connection would cost more than reading the head.
    socket.on("data", FrontDoor.#socketData);
    socket.on("error", FrontDoor.#socketError);
    socket.on("close", FrontDoor.#socketClose);
    this.#headDeadlines.add(socket);
  }

  static #socketData = function (this: Socket, chunk: Buffer): void {
    const state = (this as ReadingSocket)[READING];
    if (state !== undefined) state.door.#onData(this, state, chunk);
  };
  static #socketError = function (this: Socket, error: Error): void {
    const state = (this as ReadingSocket)[READING];
    if (state === undefined) return;
    state.door.#options.logger.debug({ err: error }, "socket error before the request head");
  };
  static #socketClose = function (this: Socket): void {
    const state = (this as ReadingSocket)[READING];
    if (state !== undefined) state.door.#finish(this);
  };

  /** The head is read (or the connection is gone): the front door lets go of the socket. */
  #finish(socket: Socket): void {
    this.#headDeadlines.delete(socket);
    (socket as ReadingSocket)[READING] = undefined;
    socket.off("data", FrontDoor.#socketData);
    socket.off("error", FrontDoor.#socketError);
    socket.off("close", FrontDoor.#socketClose);
  }

  #onData(socket: Socket, state: ReadingState, chunk: Buffer): void {
    const received = state.received === null ? chunk : Buffer.concat([state.received, chunk]);
    state.received = received;
    const result = parseRequestHead(received, this.#maxHeadSize);
    if (result.kind === "incomplete") return;
    this.#finish(socket);
    if (result.kind === "invalid") {
      this.#refuse(socket, result.status, result.message, result.code);
      return;
    }
    const { request, headLength } = result;
    if (isUpgrade(request)) {
      // Neither flowing nor paused, as node:http leaves a socket it hands to its "upgrade"
      // listeners: bytes the client sends before the connection listens are kept in the
      // stream's buffer, and the connection's "data" listener starts the flow. Pausing
      // instead would cost a readStop and a readStart per connection.
      (socket as { readableFlowing: boolean | null }).readableFlowing = null;
      if (hasBody(request)) {
        this.#refuse(socket, 400, "an upgrade request with a body", "HTTP_ERR_UPGRADE_BODY");
        return;
      }
      const head = received.subarray(headLength);
      this.#options.onUpgrade(Object.assign(request, { socket }), socket, head);
      return;
    }
    // Anything else is node's: give back what was read, then let it read the rest. A
    // node:http server that listens sets no-delay on its own connections; this one does not.
    socket.setNoDelay(true);
    socket.pause();
    socket.unshift(received);
    this.#options.http.emit("connection", socket);
    socket.resume();
  }

  #refuse(socket: Socket, status: number, why: string, code?: string): void {
    this.#options.logger.info(
      { status, code, remoteAddress: socket.remoteAddress },
      `request refused: ${why}`,
    );
    // The socket keeps an error listener until it is gone, so a reset while refusing is quiet.
    socket.on("error", () => {});
    if (socket.writable) {
      const response = errorResponse(status, "");
      response.body = `${response.statusText}\n`;
      socket.end(serializeResponse(response));
    }
    setTimeout(() => socket.destroy(), 1000).unref();
  }
}

/** What node:http would emit as "upgrade": Connection lists "upgrade" and Upgrade is present. */
function isUpgrade(request: ParsedRequestHead): boolean {
  return (
    request.headers.upgrade !== undefined &&
    request.method !== "CONNECT" &&
    listsToken(request.headers.connection, "upgrade")
  );
}

/** A body on an upgrade would be read as WebSocket frames: refuse rather than guess. */
function hasBody(request: ParsedRequestHead): boolean {
  const length = request.headers["content-length"];
  return (
    request.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")
  );
}
