/**
 * The head of an HTTP/1.1 request (RFC 9112 sections 2 to 5) parsed from bytes, with no I/O: how
 * a server that owns its sockets reads an opening handshake, which RFC 6455 section 4.1 defines
 * as an HTTP/1.1 GET request, without going through node:http. Only the head is read; whatever
 * follows it belongs to the caller (WebSocket frames after an upgrade).
 *
 * The parse is strict where leniency would let two parsers disagree about a request: one CRLF
 * ends each line (a bare CR or LF is refused), obsolete line folding is refused (RFC 9112 section
 * 5.2), whitespace between a field name and its colon is refused (section 5.1), control
 * characters in values are refused (RFC 9110 section 5.5), and a request with two Host fields is
 * refused (RFC 9112 section 3.2). Header names are lower-cased and repeated fields combined the
 * way node:http does, so code written against node's `req.headers` sees the same values.
 */
import type { UpgradeRequest } from "./handshake.js";

/** Largest head accepted, request line and fields and the blank line included (node's default). */
export const DEFAULT_MAX_HEAD_SIZE = 16 * 1024;
/** Most header fields accepted; browsers send about twenty. */
export const MAX_HEADER_FIELDS = 256;

export type HttpHeadErrorCode =
  | "HTTP_ERR_HEAD_TOO_LARGE"
  | "HTTP_ERR_TOO_MANY_FIELDS"
  | "HTTP_ERR_REQUEST_LINE"
  | "HTTP_ERR_VERSION"
  | "HTTP_ERR_FIELD_LINE"
  | "HTTP_ERR_FIELD_NAME"
  | "HTTP_ERR_FIELD_VALUE"
  | "HTTP_ERR_LINE_FOLDING"
  | "HTTP_ERR_DUPLICATE_HOST";

export interface ParsedRequestHead extends UpgradeRequest {
  /** Names lower-cased; repeated fields combined as node:http combines them. */
  headers: Record<string, string | string[]>;
  /** Names and values as received, alternating, as node's `rawHeaders`. */
  rawHeaders: string[];
}

export type RequestHeadResult =
  /** The blank line that ends the head has not arrived yet, and the head is within bounds. */
  | { kind: "incomplete" }
  /** `headLength` bytes were the head; the rest of the input is the body or the next protocol. */
  | { kind: "request"; request: ParsedRequestHead; headLength: number }
  | { kind: "invalid"; status: 400 | 431 | 505; code: HttpHeadErrorCode; message: string };

const CRLF = 0x0a0d; // "\r\n" read as a little-endian 16-bit word
const HEAD_END = Buffer.from("\r\n\r\n", "latin1");
/** tchar (RFC 9110 section 5.6.2), by character code. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

function isToken(value: string): boolean {
  if (value.length === 0) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128 || TCHAR[c] === 0) return false;
  }
  return true;
}

function isBlank(c: number): boolean {
  return c === 0x20 || c === 0x09;
}
// RFC 9112 section 3.2: origin-form, absolute-form, authority-form or "*"; any visible ASCII.
const TARGET = /^[\x21-\x7e]+$/;
const VERSION_PREFIX = "HTTP/";

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/**
 * The fields an opening handshake carries, by the spellings clients send, to their lower-case
 * names. A hit skips the token check and the lower-casing, and the headers object gets an
 * interned key, which V8 looks up without hashing a fresh string. Anything else takes the
 * general path.
 */
const KNOWN_FIELDS = new Map<string, string>();
for (const name of [
  "Host",
  "Upgrade",
  "Connection",
  "Origin",
  "Sec-WebSocket-Key",
  "Sec-WebSocket-Version",
  "Sec-WebSocket-Extensions",
  "Sec-WebSocket-Protocol",
  "User-Agent",
  "Cookie",
  "Pragma",
  "Cache-Control",
  "Accept-Encoding",
  "Accept-Language",
  "Authorization",
]) {
  const lower = name.toLowerCase();
  KNOWN_FIELDS.set(name, lower);
  KNOWN_FIELDS.set(lower, lower);
}

/**
 * node:http keeps the first of these and drops repeats (they cannot be combined into a list).
 * Host is not here: a repeated Host is an error (RFC 9112 section 3.2).
 */
const SINGLE_VALUED = new Set([
  "age",
  "authorization",
  "content-length",
  "content-type",
  "etag",
  "expires",
  "from",
  "if-modified-since",
  "if-unmodified-since",
  "last-modified",
  "location",
  "max-forwards",
  "proxy-authorization",
  "referer",
  "retry-after",
  "server",
  "user-agent",
]);

function invalid(
  status: 400 | 431 | 505,
  code: HttpHeadErrorCode,
  message: string,
): RequestHeadResult {
  return { kind: "invalid", status, code, message };
}

/**
 * Parses the request head at the start of `data`, which holds every byte received so far on the
 * connection. Never throws. Empty lines before the request line are skipped (RFC 9112 section
 * 2.2) and count towards the size limit.
 */
export function parseRequestHead(
  data: Uint8Array,
  maxHeadSize = DEFAULT_MAX_HEAD_SIZE,
): RequestHeadResult {
  const bytes = Buffer.isBuffer(data)
    ? data
    : Buffer.from(data.buffer, data.byteOffset, data.length);
  let start = 0;
  while (start + 1 < bytes.length && bytes.readUInt16LE(start) === CRLF) start += 2;
  const end = bytes.indexOf(HEAD_END, start);
  if (end === -1) {
    if (bytes.length > maxHeadSize) {
      return invalid(431, "HTTP_ERR_HEAD_TOO_LARGE", `request head over ${maxHeadSize} bytes`);
    }
    return { kind: "incomplete" };
  }
  const headLength = end + HEAD_END.length;
  if (headLength > maxHeadSize) {
    return invalid(431, "HTTP_ERR_HEAD_TOO_LARGE", `request head over ${maxHeadSize} bytes`);
  }
  // latin1 maps each byte to one code unit, so obs-text in values survives as node passes it.
  const text = bytes.toString("latin1", start, end);
  const lineEnd = text.indexOf("\r\n");
  const requestLine = lineEnd === -1 ? text : text.slice(0, lineEnd);
  // method SP request-target SP HTTP-version: exactly two spaces (RFC 9112 section 3).
  const space1 = requestLine.indexOf(" ");
  const space2 = space1 === -1 ? -1 : requestLine.indexOf(" ", space1 + 1);
  if (space2 === -1 || requestLine.indexOf(" ", space2 + 1) !== -1) {
    return invalid(400, "HTTP_ERR_REQUEST_LINE", "malformed request line");
  }
  const method = requestLine.slice(0, space1);
  const target = requestLine.slice(space1 + 1, space2);
  if (!isToken(method) || !TARGET.test(target)) {
    return invalid(400, "HTTP_ERR_REQUEST_LINE", "malformed request line");
  }
  // HTTP-version = "HTTP/" DIGIT "." DIGIT (section 2.3).
  const digits = space2 + 1 + VERSION_PREFIX.length;
  if (
    requestLine.length !== digits + 3 ||
    !requestLine.startsWith(VERSION_PREFIX, space2 + 1) ||
    !isDigit(requestLine.charCodeAt(digits)) ||
    requestLine.charCodeAt(digits + 1) !== 0x2e ||
    !isDigit(requestLine.charCodeAt(digits + 2))
  ) {
    return invalid(400, "HTTP_ERR_VERSION", "malformed HTTP version");
  }
  const httpVersion = requestLine.slice(digits);
  if (httpVersion.charCodeAt(0) !== 0x31) {
    return invalid(505, "HTTP_ERR_VERSION", `HTTP/${httpVersion} is not supported`);
  }

  const headers: Record<string, string | string[]> = {};
  const rawHeaders: string[] = [];
  let fields = 0;
  // One pass over the fields by offsets into `text`: no array of lines, no regular expressions.
  for (let at = lineEnd === -1 ? text.length : lineEnd + 2; at < text.length; ) {
    let next = text.indexOf("\r\n", at);
    if (next === -1) next = text.length;
    if (++fields > MAX_HEADER_FIELDS) {
      return invalid(431, "HTTP_ERR_TOO_MANY_FIELDS", `more than ${MAX_HEADER_FIELDS} fields`);
    }
    const first = text.charCodeAt(at);
    if (first === 0x20 || first === 0x09) {
      return invalid(400, "HTTP_ERR_LINE_FOLDING", "obsolete line folding");
    }
    const colon = text.indexOf(":", at);
    if (colon === -1 || colon > next) {
      return invalid(400, "HTTP_ERR_FIELD_LINE", "a field line without ':'");
    }
    const rawName = text.slice(at, colon);
    let name = KNOWN_FIELDS.get(rawName);
    if (name === undefined) {
      if (!isToken(rawName)) {
        return invalid(400, "HTTP_ERR_FIELD_NAME", "a field name that is not a token");
      }
      name = rawName.toLowerCase();
    }
    let from = colon + 1;
    let to = next;
    while (from < to && isBlank(text.charCodeAt(from))) from++;
    while (to > from && isBlank(text.charCodeAt(to - 1))) to--;
    for (let i = from; i < to; i++) {
      const c = text.charCodeAt(i);
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) {
        return invalid(400, "HTTP_ERR_FIELD_VALUE", `control character in ${rawName}`);
      }
    }
    const value = text.slice(from, to);
    rawHeaders.push(rawName, value);
    const previous = Object.hasOwn(headers, name) ? headers[name] : undefined;
    if (previous === undefined) {
      const first = name === "set-cookie" ? [value] : value;
      // A field named __proto__ is a field like any other, not the object's prototype.
      if (name === "__proto__") {
        Object.defineProperty(headers, name, { value: first, enumerable: true, writable: true });
      } else {
        headers[name] = first;
      }
    } else if (name === "host") {
      return invalid(400, "HTTP_ERR_DUPLICATE_HOST", "more than one Host field");
    } else if (name === "set-cookie") {
      (previous as string[]).push(value);
    } else if (!SINGLE_VALUED.has(name)) {
      headers[name] = `${previous}${name === "cookie" ? "; " : ", "}${value}`;
    }
    at = next + 2;
  }

  return {
    kind: "request",
    request: {
      method,
      url: target,
      httpVersion,
      headers,
      rawHeaders,
    },
    headLength,
  };
}

/** True when a list-valued field (such as Connection or Upgrade) names `token`, in any case. */
export function listsToken(value: string | string[] | undefined, token: string): boolean {
  if (value === undefined) return false;
  const wanted = token.toLowerCase();
  // What clients send: the value is just the token, no split needed.
  if (
    typeof value === "string" &&
    value.length === wanted.length &&
    value.toLowerCase() === wanted
  ) {
    return true;
  }
  const text = Array.isArray(value) ? value.join(",") : value;
  for (const item of text.split(",")) {
    if (item.trim().toLowerCase() === wanted) return true;
  }
  return false;
}
