import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Duplex } from "node:stream";
import { type HeartbeatOptions, WebSocketConnection } from "../connection/connection.js";
import {
  clientRequestHeaders,
  generateKey,
  HandshakeError,
  validateServerResponse,
} from "../protocol/handshake.js";
import type { PerMessageDeflateOptions } from "../protocol/permessage-deflate.js";
import { deflateOptions } from "../server/upgrade.js";

export interface ConnectOptions {
  protocols?: string[];
  /** Offers permessage-deflate (RFC 7692); off by default. */
  perMessageDeflate?: boolean | PerMessageDeflateOptions;
  headers?: Record<string, string>;
  origin?: string;
  maxMessageSize?: number;
  maxFragments?: number;
  maxBufferedBytes?: number;
  heartbeat?: HeartbeatOptions | false;
  closeTimeout?: number;
  /**
   * Buffered outgoing bytes above which reading from the server pauses. Default: never (see
   * connect()); bufferedAmount and 'drain' still report the backlog.
   */
  highWaterMark?: number;
  /** Milliseconds the opening handshake may take. */
  handshakeTimeout?: number;
  /** Extra options for node:https (certificates, servername, rejectUnauthorized). */
  tls?: import("node:https").RequestOptions;
}

/**
 * Opens a WebSocket connection (RFC 6455 section 4.1) and resolves once the server accepted it.
 * Rejects with a HandshakeError when the server refuses or answers something that is not a valid
 * upgrade.
 */
export function connect(
  url: string | URL,
  options: ConnectOptions = {},
): Promise<WebSocketConnection> {
  const target = new URL(url);
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    return Promise.reject(new TypeError(`unsupported URL scheme "${target.protocol}"`));
  }
  if (target.hash !== "") return Promise.reject(new TypeError("WebSocket URLs have no fragment"));
  const secure = target.protocol === "wss:";
  const key = generateKey();
  const deflate = deflateOptions(options.perMessageDeflate);
  const handshake = {
    protocols: options.protocols,
    perMessageDeflate: deflate,
    headers: options.headers,
    origin: options.origin,
  };
  const headers = clientRequestHeaders(key, handshake);
  const requestOptions = {
    ...(secure ? options.tls : {}),
    host: target.hostname.replace(/^\[|\]$/g, ""),
    port: target.port || (secure ? 443 : 80),
    path: `${target.pathname}${target.search}`,
    method: "GET",
    headers,
    timeout: options.handshakeTimeout ?? 10_000,
  };

  return new Promise((resolve, reject) => {
    const req = (secure ? httpsRequest : httpRequest)(requestOptions);
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(error);
    };
    req.on("timeout", () =>
      fail(new HandshakeError("WS_ERR_HANDSHAKE_TIMEOUT", 0, "opening handshake timed out")),
    );
    req.on("error", fail);
    req.on("response", (res: IncomingMessage) => {
      res.resume();
      fail(
        new HandshakeError(
          "WS_ERR_HANDSHAKE_STATUS",
          res.statusCode ?? 0,
          `server answered ${res.statusCode} instead of 101 Switching Protocols`,
        ),
      );
    });
    req.on("upgrade", (res: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (settled) {
        socket.destroy();
        return;
      }
      let accepted: ReturnType<typeof validateServerResponse>;
      try {
        accepted = validateServerResponse(
          { status: res.statusCode ?? 0, headers: res.headers },
          key,
          handshake,
        );
      } catch (error) {
        socket.destroy();
        fail(error as Error);
        return;
      }
      settled = true;
      const extensions = res.headers["sec-websocket-extensions"];
      const connection = new WebSocketConnection(
        socket,
        {
          role: "client",
          protocol: accepted.protocol,
          handshakeHeaders: res.headers,
          extensions: Array.isArray(extensions) ? extensions.join(", ") : (extensions ?? ""),
          deflate:
            accepted.deflate && deflate ? { params: accepted.deflate, options: deflate } : null,
          maxMessageSize: options.maxMessageSize,
          maxFragments: options.maxFragments,
          maxBufferedBytes: options.maxBufferedBytes,
          heartbeat: options.heartbeat ?? false,
          closeTimeout: options.closeTimeout,
          // By default a client never stops reading because its own output is backed up:
          // servers pause reading while their replies are not taken, so a client doing the
          // same would deadlock with them. Pace sending with bufferedAmount and 'drain'.
          highWaterMark: options.highWaterMark ?? Number.POSITIVE_INFINITY,
        },
        head,
      );
      resolve(connection);
    });
    req.end();
  });
}
