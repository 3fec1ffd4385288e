import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { type HeartbeatOptions, WebSocketConnection } from "../connection/connection.js";
import { CloseCode } from "../protocol/constants.js";
import {
  errorResponse,
  type HandshakeResponse,
  serializeResponse,
  serverHandshake,
} from "../protocol/handshake.js";
import type { PerMessageDeflateOptions } from "../protocol/permessage-deflate.js";
import { isThenable } from "../thenable.js";
import { type Logger, silentLogger } from "./logger.js";

/**
 * Accepting an upgrade on any node:http or node:https server: the one mount contract every
 * server and adapter goes through (`handleUpgrade(req, socket, head)`).
 */

/** What `verify` returns to refuse a connection before the upgrade. */
/**
 * The request an upgrade is decided on: a node:http UpgradeHttpRequest (an "upgrade" event on any
 * server) or the standalone servers' own parse of the head (src/server/front-door.ts). Header
 * names are lower-case and repeated fields combined, as node does.
 */
export interface UpgradeHttpRequest {
  method?: string;
  url?: string;
  httpVersion: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  socket: Socket;
}

export interface Rejection {
  status: number;
  /** A short plain-text body. Keep details that could leak in the log instead. */
  body?: string;
  headers?: Record<string, string>;
  /** Why, for the log line only (never sent). */
  reason?: string;
}

/** What `verify` returns to accept a connection with a subprotocol it chose. */
export interface Acceptance {
  /** One of the subprotocols the client offered; replaces what `selectProtocol` chose. */
  protocol?: string;
  /** A message size limit for this connection, in place of `maxMessageSize`. */
  maxMessageSize?: number;
}

export type Verdict = true | Rejection | Acceptance;

export interface UpgradeOptions {
  /** Turns permessage-deflate (RFC 7692) on; off by default. */
  perMessageDeflate?: boolean | PerMessageDeflateOptions;
  maxMessageSize?: number;
  maxFragments?: number;
  maxBufferedBytes?: number;
  /** Picks one of the client's subprotocols, or none. */
  selectProtocol?: (
    offered: readonly string[],
    req: UpgradeHttpRequest,
  ) => string | undefined | null;
  /**
   * Accepts (true, or an Acceptance naming the subprotocol) or refuses the upgrade; runs after
   * the handshake itself was found valid, so it may decide the subprotocol asynchronously.
   */
  verify?: (req: UpgradeHttpRequest) => Verdict | Promise<Verdict>;
  /** Amends the 101 response (extra headers, cookies) before it is sent. */
  amendResponse?: (response: HandshakeResponse, req: UpgradeHttpRequest) => void;
  heartbeat?: HeartbeatOptions | false;
  closeTimeout?: number;
  /**
   * Keep the request's headers as the connection's `handshakeHeaders` (default true). A server
   * that takes what it needs from them at the upgrade saves their memory for the connection's
   * whole life.
   */
  keepHandshakeHeaders?: boolean;
  highWaterMark?: number;
  logger?: Logger;
}

export type UpgradeCallback = (connection: WebSocketConnection, req: UpgradeHttpRequest) => void;

const DEFAULT_HEARTBEAT: HeartbeatOptions = { interval: 30_000, timeout: 10_000 };

export function deflateOptions(
  option: boolean | PerMessageDeflateOptions | undefined,
): PerMessageDeflateOptions | false {
  if (option === undefined || option === false) return false;
  return option === true ? {} : option;
}

/**
 * Performs the server side of the opening handshake on a socket that node:http handed over with
 * its 'upgrade' event, then calls `onConnection`. Every refusal is answered with its HTTP status
 * and logged. The returned promise never rejects: a failure of the application's own hooks
 * (`verify`, `selectProtocol`, `amendResponse`, `onConnection`) is logged and answered with 500
 * before the upgrade, or closes the connection with 1011 after it.
 */
export async function handleUpgrade(
  req: UpgradeHttpRequest,
  socket: Duplex,
  head: Buffer,
  options: UpgradeOptions,
  onConnection: UpgradeCallback,
): Promise<void> {
  try {
    await upgrade(req, socket, head, options, onConnection);
  } catch (error) {
    (options.logger ?? silentLogger).error({ err: error, url: req.url }, "upgrade failed");
    abort(socket, errorResponse(500, "Internal Server Error"));
  }
}

async function upgrade(
  req: UpgradeHttpRequest,
  socket: Duplex,
  head: Buffer,
  options: UpgradeOptions,
  onConnection: UpgradeCallback,
): Promise<void> {
  const log = options.logger ?? silentLogger;
  // A socket error during the handshake must never become an uncaught exception.
  const onEarlyError = (error: Error): void => {
    log.debug({ err: error, url: req.url }, "socket error during the opening handshake");
    socket.destroy();
  };
  socket.on("error", onEarlyError);

  const deflate = deflateOptions(options.perMessageDeflate);
  const result = serverHandshake(
    {
      method: req.method ?? "",
      httpVersion: req.httpVersion,
      url: req.url ?? "/",
      headers: req.headers,
    },
    {
      perMessageDeflate: deflate,
      selectProtocol: options.selectProtocol
        ? (offered) => options.selectProtocol!(offered, req)
        : undefined,
    },
  );
  if (!result.ok) {
    log.info(
      {
        status: result.response.status,
        code: result.error.code,
        url: req.url,
        remoteAddress: req.socket.remoteAddress,
      },
      `upgrade refused: ${result.error.message}`,
    );
    abort(socket, result.response);
    return;
  }

  let protocol = result.protocol;
  let maxMessageSize = options.maxMessageSize;
  if (options.verify) {
    let verdict: Verdict;
    try {
      const pending = options.verify(req);
      // A verdict decided at once is used at once: no turn of the microtask queue.
      verdict = isThenable(pending) ? await pending : pending;
    } catch (error) {
      log.error({ err: error, url: req.url }, "upgrade verification threw");
      verdict = { status: 500, body: "Internal Server Error" };
    }
    if (verdict !== true && !("status" in verdict)) {
      maxMessageSize = verdict.maxMessageSize ?? maxMessageSize;
      if (verdict.protocol !== undefined && verdict.protocol !== protocol) {
        if (!offeredProtocols(req).includes(verdict.protocol)) {
          throw new TypeError(
            `verify chose a subprotocol the client did not offer: ${verdict.protocol}`,
          );
        }
        protocol = verdict.protocol;
        const headers = result.response.headers.filter(
          ([name]) => name.toLowerCase() !== "sec-websocket-protocol",
        );
        if (protocol !== "") headers.push(["Sec-WebSocket-Protocol", protocol]);
        result.response.headers = headers;
      }
    } else if (verdict !== true) {
      log.info(
        {
          status: verdict.status,
          url: req.url,
          remoteAddress: req.socket.remoteAddress,
          reason: verdict.reason,
        },
        "upgrade refused",
      );
      const headers = Object.entries(verdict.headers ?? {});
      abort(
        socket,
        errorResponse(verdict.status, verdict.body ?? statusBody(verdict.status), headers),
      );
      return;
    }
  }

  if (socket.destroyed || !socket.writable || socket.readableEnded) {
    log.debug({ url: req.url }, "client left during the opening handshake");
    socket.destroy();
    return;
  }

  options.amendResponse?.(result.response, req);
  socket.write(serializeResponse(result.response));
  socket.removeListener("error", onEarlyError);
  const connection = new WebSocketConnection(
    socket,
    {
      role: "server",
      protocol,
      handshakeHeaders: options.keepHandshakeHeaders === false ? undefined : req.headers,
      extensions: result.extensions,
      deflate: result.deflate && deflate ? { params: result.deflate, options: deflate } : null,
      maxMessageSize,
      maxFragments: options.maxFragments,
      maxBufferedBytes: options.maxBufferedBytes,
      heartbeat: options.heartbeat === undefined ? DEFAULT_HEARTBEAT : options.heartbeat,
      closeTimeout: options.closeTimeout,
      highWaterMark: options.highWaterMark,
    },
    head,
  );
  try {
    onConnection(connection, req);
  } catch (error) {
    log.error({ err: error, url: req.url }, "connection handler threw");
    connection.close(CloseCode.InternalError);
  }
}

/** The client's Sec-WebSocket-Protocol offer (the handshake already found it well formed). */
export function offeredProtocols(req: UpgradeHttpRequest): string[] {
  const header = req.headers["sec-websocket-protocol"];
  if (header === undefined) return [];
  return (Array.isArray(header) ? header.join(",") : header)
    .split(",")
    .map((token) => token.trim())
    .filter((token) => token !== "");
}

/** Answers a plain HTTP request on a WebSocket-only endpoint: 426 Upgrade Required. */
export function answerUpgradeRequired(res: ServerResponse): void {
  const body = "Upgrade Required: this endpoint speaks WebSocket only\n";
  res.writeHead(426, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
    Upgrade: "websocket",
    Connection: "Upgrade",
  });
  res.end(body);
}

/** Answers an upgrade with an HTTP response instead, and lets the socket go. */
export function abort(socket: Duplex, response: HandshakeResponse): void {
  if (socket.writable) socket.end(serializeResponse(response));
  // end() flushes the answer; destroy soon after in case the peer never reads it.
  setTimeout(() => socket.destroy(), 1000).unref();
}

const STATUS_BODIES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

function statusBody(status: number): string {
  return STATUS_BODIES[status] ?? "Request refused";
}
