/**
 * The opening handshake (RFC 6455 section 4) as pure functions: a request in, a response value
 * out, which the caller may amend (cookies etc.) before serializing and writing it. No I/O here.
 */
import * as crypto from "node:crypto";
import { WEBSOCKET_GUID } from "./constants.js";
import {
  type ExtensionOffer,
  HandshakeError,
  isToken,
  parseExtensions,
} from "./extension-header.js";
import {
  acceptServerResponse,
  clientOffer,
  type DeflateParams,
  negotiateServer,
  type PerMessageDeflateOptions,
} from "./permessage-deflate.js";

export { HandshakeError, type HandshakeErrorCode } from "./extension-header.js";

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/** The parts of an HTTP request the handshake reads. Header names are lower-case, as in node. */
export interface UpgradeRequest {
  method: string;
  httpVersion: string;
  url: string;
  headers: Headers;
}

/** A response as a value; the caller may amend `headers` before serializing. */
export interface HandshakeResponse {
  status: number;
  statusText: string;
  headers: Array<[string, string]>;
  body: string;
}

export interface ServerHandshakeOptions {
  /**
   * Picks a subprotocol among the client's offer (in the client's order of preference). Return
   * undefined, null or "" to select none. Returning anything that was not offered is a programming
   * error: serverHandshake throws a TypeError (code WS_ERR_INVALID_SELECTED_PROTOCOL) rather than
   * send a protocol the client must reject (section 4.1). Not called when nothing was offered.
   * Throwing a HandshakeError from here rejects the handshake with its status.
   */
  selectProtocol?: (
    offered: readonly string[],
    request: UpgradeRequest,
  ) => string | undefined | null;
  /** permessage-deflate preferences, or false (the default) to never negotiate it. */
  perMessageDeflate?: PerMessageDeflateOptions | false;
}

export type ServerHandshakeResult =
  | {
      ok: true;
      response: HandshakeResponse;
      /** The selected subprotocol, "" for none. */
      protocol: string;
      /** The Sec-WebSocket-Extensions value sent, "" for none. */
      extensions: string;
      deflate: DeflateParams | null;
    }
  | { ok: false; response: HandshakeResponse; error: HandshakeError };

/** One-shot hashing (Node 20.12 and later) skips the Hash object a handshake would make. */
const oneShotHash = (
  crypto as { hash?: (algorithm: string, data: string, encoding: "base64") => string }
).hash;

/** Sec-WebSocket-Accept for a key (section 4.2.2 step 5.4): base64(SHA-1(key + GUID)). */
export function acceptKey(key: string): string {
  if (oneShotHash !== undefined) return oneShotHash("sha1", key + WEBSOCKET_GUID, "base64");
  return crypto
    .createHash("sha1")
    .update(key + WEBSOCKET_GUID)
    .digest("base64");
}

// Exactly 16 bytes in base64 (section 4.2.1 item 4), canonical: 21 characters of 6 bits, a 22nd
// whose last 4 bits are padding and must be zero (A, Q, g or w), then "==".
const KEY_FORM = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

function isValidKey(key: string): boolean {
  return KEY_FORM.test(key);
}

/**
 * Server side (section 4.2.1 and 4.2.2). Returns either a 101 response with the negotiated
 * subprotocol and extensions, or an error response and its HandshakeError. The checks, in order:
 *
 * - method GET, else 405 with `Allow: GET`;
 * - HTTP/1.1 or later, else 400. Not 505: that status is about the major version (RFC 7231
 *   section 6.6.6), and HTTP/1.0 is a version we speak, only not one that can upgrade;
 * - exactly one non-empty Host, else 400 (RFC 7230 section 5.4);
 * - Upgrade lists `websocket` and Connection lists `upgrade`, case-insensitively, else 400;
 * - Sec-WebSocket-Version exactly 13, else 426 with `Sec-WebSocket-Version: 13`. A missing
 *   version also gets 426: pre-RFC drafts (hixie-76) send none, and section 4.4 answers a client
 *   speaking another version by naming ours, which is more useful to it than a bare 400. This is
 *   checked before the key so such clients learn the version rather than a key error;
 * - Sec-WebSocket-Key is canonical base64 of exactly 16 bytes, else 400;
 * - Sec-WebSocket-Protocol, if present, is a comma list of distinct tokens, else 400;
 * - Sec-WebSocket-Extensions, if present, parses (RFC 6455 section 9.1), else 400.
 *
 * Then the subprotocol is selected and permessage-deflate negotiated; unknown extensions are
 * ignored (section 9.1: the server only answers with extensions it supports).
 */
export function serverHandshake(
  request: UpgradeRequest,
  options: ServerHandshakeOptions = {},
): ServerHandshakeResult {
  try {
    return acceptRequest(request, options);
  } catch (error) {
    if (!(error instanceof HandshakeError)) throw error;
    return {
      ok: false,
      response: errorResponse(error.status, error.message, error.headers),
      error,
    };
  }
}

function acceptRequest(
  request: UpgradeRequest,
  options: ServerHandshakeOptions,
): ServerHandshakeResult & { ok: true } {
  const { headers } = request;
  if (request.method !== "GET") {
    throw new HandshakeError("WS_ERR_HANDSHAKE_METHOD", 405, "Method Not Allowed", [
      ["Allow", "GET"],
    ]);
  }
  if (!isHttp11OrLater(request.httpVersion)) {
    throw new HandshakeError("WS_ERR_HANDSHAKE_HTTP_VERSION", 400, "HTTP/1.1 or later is required");
  }
  const host = singleHeader(headers, "host");
  if (host === undefined || host === "" || /\s/.test(host)) {
    throw new HandshakeError("WS_ERR_HANDSHAKE_HOST", 400, "Missing or invalid Host header");
  }
  if (!listHasToken(headers, "upgrade", "websocket")) {
    throw new HandshakeError("WS_ERR_HANDSHAKE_UPGRADE", 400, "Missing or invalid Upgrade header");
  }
  if (!listHasToken(headers, "connection", "upgrade")) {
    throw new HandshakeError(
      "WS_ERR_HANDSHAKE_CONNECTION",
      400,
      "Missing or invalid Connection header",
    );
  }
  if (singleHeader(headers, "sec-websocket-version") !== "13") {
    // RFC 7231 section 6.5.15: a 426 response names the protocol to upgrade to.
    throw new HandshakeError(
      "WS_ERR_HANDSHAKE_VERSION",
      426,
      "Unsupported WebSocket version; this server speaks version 13",
      [
        ["Sec-WebSocket-Version", "13"],
        ["Upgrade", "websocket"],
        ["Connection", "Upgrade, close"],
      ],
    );
  }
  const key = singleHeader(headers, "sec-websocket-key");
  if (key === undefined || !isValidKey(key)) {
    throw new HandshakeError("WS_ERR_HANDSHAKE_KEY", 400, "Missing or invalid Sec-WebSocket-Key");
  }
  const offeredProtocols = parseProtocols(headers["sec-websocket-protocol"]);
  const offeredExtensions = parseExtensions(headers["sec-websocket-extensions"]);

  const protocol = selectProtocol(offeredProtocols, request, options);
  const negotiated =
    options.perMessageDeflate === undefined || options.perMessageDeflate === false
      ? null
      : negotiateServer(offeredExtensions, options.perMessageDeflate);

  const responseHeaders: Array<[string, string]> = [
    ["Upgrade", "websocket"],
    ["Connection", "Upgrade"],
    ["Sec-WebSocket-Accept", acceptKey(key)],
  ];
  if (protocol !== "") responseHeaders.push(["Sec-WebSocket-Protocol", protocol]);
  if (negotiated !== null) responseHeaders.push(["Sec-WebSocket-Extensions", negotiated.response]);
  return {
    ok: true,
    response: {
      status: 101,
      statusText: "Switching Protocols",
      headers: responseHeaders,
      body: "",
    },
    protocol,
    extensions: negotiated?.response ?? "",
    deflate: negotiated?.params ?? null,
  };
}

function selectProtocol(
  offered: readonly string[],
  request: UpgradeRequest,
  options: ServerHandshakeOptions,
): string {
  if (offered.length === 0 || options.selectProtocol === undefined) return "";
  const selected = options.selectProtocol(offered, request);
  if (selected === undefined || selected === null || selected === "") return "";
  if (!offered.includes(selected)) {
    throw Object.assign(
      new TypeError("selectProtocol returned a subprotocol the client did not offer"),
      { code: "WS_ERR_INVALID_SELECTED_PROTOCOL" },
    );
  }
  return selected;
}

function isHttp11OrLater(version: string): boolean {
  const match = /^(\d{1,3})\.(\d{1,3})$/.exec(version);
  if (match === null) return false;
  const major = Number(match[1]);
  return major > 1 || (major === 1 && Number(match[2]) >= 1);
}

/** A header that must appear once: undefined when absent or repeated. Trimmed of OWS. */
function singleHeader(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  if (typeof value === "string") return trimOws(value);
  return value.length === 1 ? trimOws(value[0]) : undefined;
}

/** A comma-separated list header, all lines together, empty elements skipped (RFC 7230 7). */
function listHeader(headers: Headers, name: string): string[] {
  const value = headers[name];
  if (value === undefined) return [];
  const lines = typeof value === "string" ? [value] : value;
  const out: string[] = [];
  for (const line of lines) {
    for (const element of line.split(",")) {
      const trimmed = trimOws(element);
      if (trimmed !== "") out.push(trimmed);
    }
  }
  return out;
}

/** True when a list header names `token` (given in lower case), in any case. */
function listHasToken(headers: Headers, name: string, token: string): boolean {
  const value = headers[name];
  // What clients send: one line holding just the token ("websocket", "Upgrade"), no split needed.
  if (typeof value === "string" && value.length === token.length && value.toLowerCase() === token) {
    return true;
  }
  return listHeader(headers, name).some((v) => v.toLowerCase() === token);
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

function trimOws(value: string): string {
  // Most values have nothing to trim: no regular expression for them.
  if (value === "" || (!isOws(value.charCodeAt(0)) && !isOws(value.charCodeAt(value.length - 1)))) {
    return value;
  }
  return value.replace(/^[ \t]+|[ \t]+$/g, "");
}

/** Sec-WebSocket-Protocol = 1#token (section 4.3), possibly on several lines. */
function parseProtocols(value: string | string[] | undefined): string[] {
  const protocols = listHeader({ p: value }, "p");
  const unique = new Set(protocols);
  if (!protocols.every(isToken) || unique.size !== protocols.length) {
    throw new HandshakeError(
      "WS_ERR_INVALID_PROTOCOL_HEADER",
      400,
      "Invalid Sec-WebSocket-Protocol header",
    );
  }
  return protocols;
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  101: "Switching Protocols",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  413: "Payload Too Large",
  414: "URI Too Long",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** An error response with a short plain-text body. Headers are extra ones (Allow, ...). */
export function errorResponse(
  status: number,
  body: string,
  headers: ReadonlyArray<readonly [string, string]> = [],
): HandshakeResponse {
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new RangeError("HTTP status must be a three-digit integer");
  }
  return {
    status,
    statusText: STATUS_TEXT[status] ?? "Unknown",
    headers: headers.map(([name, value]) => [name, value]),
    body,
  };
}

/**
 * The response as bytes to write, "HTTP/1.1 101 Switching Protocols\r\n...\r\n\r\n". Responses
 * other than 101 get `Content-Type: text/plain` (unless set), a computed `Content-Length` and
 * `Connection: close` (unless set): the socket is closed after them. Header names must be tokens
 * and values free of CR, LF and NUL, so an amended header can never split the response; anything
 * else is a TypeError.
 */
export function serializeResponse(response: HandshakeResponse): string {
  const { status, statusText, body } = response;
  if (!Number.isInteger(status) || status < 100 || status > 999) {
    throw new RangeError("HTTP status must be a three-digit integer");
  }
  if (/[\r\n\0]/.test(statusText)) throw new TypeError("Invalid status text");
  const headers = response.headers.slice();
  if (status === 101) {
    if (body !== "") throw new TypeError("A 101 response has no body");
  } else {
    const has = (name: string) => headers.some(([n]) => n.toLowerCase() === name);
    if (!has("content-type")) headers.push(["Content-Type", "text/plain; charset=utf-8"]);
    for (let i = headers.length - 1; i >= 0; i--) {
      if (headers[i][0].toLowerCase() === "content-length") headers.splice(i, 1);
    }
    headers.push(["Content-Length", String(Buffer.byteLength(body))]);
    if (!has("connection")) headers.push(["Connection", "close"]);
  }
  let out = `HTTP/1.1 ${status} ${statusText}\r\n`;
  for (const [name, value] of headers) {
    if (!isToken(name)) throw new TypeError("Invalid header name");
    if (/[\r\n\0]/.test(value)) throw new TypeError("Invalid header value");
    out += `${name}: ${value}\r\n`;
  }
  return `${out}\r\n${body}`;
}

// ---------------------------------------------------------------------------------------------
// Client side (section 4.1)

/** A fresh Sec-WebSocket-Key: 16 random bytes, base64 (section 4.1, item 7 of the request). */
export function generateKey(): string {
  return crypto.randomBytes(16).toString("base64");
}

export interface ClientHandshakeOptions {
  protocols?: string[];
  perMessageDeflate?: PerMessageDeflateOptions | false;
  /** Extra request headers. They may not set the handshake's own headers (TypeError). */
  headers?: Record<string, string>;
  origin?: string;
}

const RESERVED_REQUEST_HEADERS = new Set([
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
]);

/**
 * The handshake request headers (Host is left to the HTTP client). Subprotocols must be distinct
 * tokens, and extra headers may not override the handshake headers: both are programming errors
 * (TypeError). `origin` replaces any Origin among the extra headers.
 */
export function clientRequestHeaders(
  key: string,
  options: ClientHandshakeOptions,
): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    const lower = name.toLowerCase();
    if (RESERVED_REQUEST_HEADERS.has(lower)) {
      throw new TypeError(`The ${name} header is set by the WebSocket handshake`);
    }
    if (lower === "origin" && options.origin !== undefined) continue;
    result[name] = value;
  }
  result.Upgrade = "websocket";
  result.Connection = "Upgrade";
  result["Sec-WebSocket-Key"] = key;
  result["Sec-WebSocket-Version"] = "13";
  const protocols = options.protocols ?? [];
  if (protocols.length > 0) {
    if (!protocols.every(isToken) || new Set(protocols).size !== protocols.length) {
      throw new TypeError("Subprotocols must be distinct tokens");
    }
    result["Sec-WebSocket-Protocol"] = protocols.join(", ");
  }
  if (options.perMessageDeflate !== undefined && options.perMessageDeflate !== false) {
    result["Sec-WebSocket-Extensions"] = clientOffer(options.perMessageDeflate);
  }
  if (options.origin !== undefined) result.Origin = options.origin;
  return result;
}

/**
 * Checks the server's response (section 4.1, the client's steps 1-6) and returns the selected
 * subprotocol ("" for none) and the agreed permessage-deflate parameters. Throws HandshakeError
 * (with `status` the server's status) on:
 * - a status other than 101 (WS_ERR_HANDSHAKE_STATUS);
 * - Upgrade other than `websocket`, or Connection without `upgrade` (WS_ERR_HANDSHAKE_UPGRADE,
 *   WS_ERR_HANDSHAKE_CONNECTION);
 * - Sec-WebSocket-Accept other than acceptKey(key) (WS_ERR_HANDSHAKE_ACCEPT);
 * - a subprotocol we did not offer, or more than one (WS_ERR_HANDSHAKE_PROTOCOL). The server may
 *   select none even when we offered some;
 * - an extension we did not offer, or a permessage-deflate response that does not match our
 *   offer (WS_ERR_HANDSHAKE_EXTENSION).
 */
export function validateServerResponse(
  response: { status: number; headers: Headers },
  key: string,
  options: ClientHandshakeOptions,
): { protocol: string; deflate: DeflateParams | null } {
  const { status, headers } = response;
  if (status !== 101) {
    throw new HandshakeError(
      "WS_ERR_HANDSHAKE_STATUS",
      status,
      `Unexpected server response: ${status}`,
    );
  }
  const upgrade = singleHeader(headers, "upgrade");
  if (upgrade === undefined || upgrade.toLowerCase() !== "websocket") {
    throw new HandshakeError("WS_ERR_HANDSHAKE_UPGRADE", status, "Invalid Upgrade header");
  }
  if (!listHeader(headers, "connection").some((v) => v.toLowerCase() === "upgrade")) {
    throw new HandshakeError("WS_ERR_HANDSHAKE_CONNECTION", status, "Invalid Connection header");
  }
  if (singleHeader(headers, "sec-websocket-accept") !== acceptKey(key)) {
    throw new HandshakeError(
      "WS_ERR_HANDSHAKE_ACCEPT",
      status,
      "Invalid Sec-WebSocket-Accept header",
    );
  }

  const protocolHeader = headers["sec-websocket-protocol"];
  let protocol = "";
  if (protocolHeader !== undefined) {
    const selected = singleHeader(headers, "sec-websocket-protocol");
    const offered = options.protocols ?? [];
    if (selected === undefined || (selected !== "" && !offered.includes(selected))) {
      throw new HandshakeError(
        "WS_ERR_HANDSHAKE_PROTOCOL",
        status,
        "Server selected a subprotocol that was not offered",
      );
    }
    protocol = selected;
  }

  let extensions: ExtensionOffer[];
  try {
    extensions = parseExtensions(headers["sec-websocket-extensions"]);
  } catch {
    throw new HandshakeError(
      "WS_ERR_HANDSHAKE_EXTENSION",
      status,
      "Invalid Sec-WebSocket-Extensions header",
    );
  }
  let deflate: DeflateParams | null = null;
  if (extensions.length > 0) {
    const deflateOptions = options.perMessageDeflate;
    if (deflateOptions === undefined || deflateOptions === false) {
      throw new HandshakeError(
        "WS_ERR_HANDSHAKE_EXTENSION",
        status,
        "Server accepted an extension that was not offered",
      );
    }
    deflate = acceptServerResponse(extensions, deflateOptions);
  }
  return { protocol, deflate };
}
