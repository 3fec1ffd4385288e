/**
 * The `Sec-WebSocket-Extensions` header (RFC 6455 section 9.1), parsed and formatted without any
 * knowledge of particular extensions. Negotiation lives in permessage-deflate.ts.
 *
 *   Sec-WebSocket-Extensions = extension-list
 *   extension-list = 1#extension
 *   extension = extension-token *( ";" extension-param )
 *   extension-param = token [ "=" (token | quoted-string) ]
 *
 * with the note that a quoted-string value must be a token once unescaped. The `#` list rule
 * (RFC 7230 section 7) lets recipients skip empty elements, and the header may arrive as several
 * lines, which mean the same as one line joined with commas (RFC 7230 section 3.2.2).
 */

/** Stable codes for handshake failures. Applications may match on these. */
export type HandshakeErrorCode =
  // Server side: the client's request is not a valid opening handshake (RFC 6455 section 4.2.1).
  | "WS_ERR_HANDSHAKE_METHOD"
  | "WS_ERR_HANDSHAKE_HTTP_VERSION"
  | "WS_ERR_HANDSHAKE_HOST"
  | "WS_ERR_HANDSHAKE_UPGRADE"
  | "WS_ERR_HANDSHAKE_CONNECTION"
  | "WS_ERR_HANDSHAKE_KEY"
  | "WS_ERR_HANDSHAKE_VERSION"
  | "WS_ERR_INVALID_EXTENSION_HEADER"
  | "WS_ERR_INVALID_PROTOCOL_HEADER"
  // Client side: the server's response is not a valid opening handshake (section 4.1).
  | "WS_ERR_HANDSHAKE_STATUS"
  | "WS_ERR_HANDSHAKE_TIMEOUT"
  | "WS_ERR_HANDSHAKE_ACCEPT"
  | "WS_ERR_HANDSHAKE_PROTOCOL"
  | "WS_ERR_HANDSHAKE_EXTENSION";

/**
 * A failed opening handshake. On the server, `status` is the HTTP status to answer with, `headers`
 * the extra response headers that status calls for, and `message` a short text that is safe to
 * send as the response body (it never quotes the request). On the client, `status` is the HTTP
 * status the server sent.
 */
export class HandshakeError extends Error {
  override readonly name = "HandshakeError";
  constructor(
    readonly code: HandshakeErrorCode,
    readonly status: number,
    message: string,
    readonly headers: ReadonlyArray<readonly [string, string]> = [],
  ) {
    super(message);
  }
}

/** One element of the extension list: its name and its parameters, in order, duplicates kept. */
export interface ExtensionOffer {
  name: string;
  /** `true` stands for a parameter without a value. */
  params: Array<[name: string, value: string | true]>;
}

// tchar (RFC 7230 section 3.2.6): any VCHAR except delimiters.
const TOKEN_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  TOKEN_CHARS[c.charCodeAt(0)] = 1;
}

function isTokenChar(code: number): boolean {
  return code < 128 && TOKEN_CHARS[code] === 1;
}

/** Whether `value` is a non-empty RFC 7230 token. */
export function isToken(value: string): boolean {
  if (value.length === 0) return false;
  for (let i = 0; i < value.length; i++) {
    if (!isTokenChar(value.charCodeAt(i))) return false;
  }
  return true;
}

function invalid(): HandshakeError {
  return new HandshakeError(
    "WS_ERR_INVALID_EXTENSION_HEADER",
    400,
    "Invalid Sec-WebSocket-Extensions header",
  );
}

/**
 * Parses every line of the header into a flat list of extensions, in the order sent (which is the
 * client's order of preference, RFC 6455 section 9.1). Throws a 400 `HandshakeError` on any
 * syntax error; semantic checks (unknown or repeated parameters) are left to the extension.
 */
export function parseExtensions(value: string | readonly string[] | undefined): ExtensionOffer[] {
  const result: ExtensionOffer[] = [];
  if (value === undefined) return result;
  const lines = typeof value === "string" ? [value] : value;
  for (const line of lines) new Scanner(line).extensionList(result);
  return result;
}

class Scanner {
  private pos = 0;
  constructor(private readonly text: string) {}

  extensionList(out: ExtensionOffer[]): void {
    for (;;) {
      this.skipWhitespace();
      if (this.atEnd()) return;
      // Empty list elements (", ,") are allowed and ignored (RFC 7230 section 7).
      if (this.peek() === 0x2c) {
        this.pos++;
        continue;
      }
      out.push(this.extension());
      this.skipWhitespace();
      if (this.atEnd()) return;
      if (this.peek() !== 0x2c) throw invalid();
      this.pos++;
    }
  }

  private extension(): ExtensionOffer {
    const offer: ExtensionOffer = { name: this.token(), params: [] };
    this.skipWhitespace();
    while (this.peek() === 0x3b /* ; */) {
      this.pos++;
      this.skipWhitespace();
      const name = this.token();
      this.skipWhitespace();
      let value: string | true = true;
      if (this.peek() === 0x3d /* = */) {
        this.pos++;
        this.skipWhitespace();
        value = this.peek() === 0x22 ? this.quotedToken() : this.token();
        this.skipWhitespace();
      }
      offer.params.push([name, value]);
    }
    return offer;
  }

  private token(): string {
    const start = this.pos;
    while (!this.atEnd() && isTokenChar(this.peek())) this.pos++;
    if (this.pos === start) throw invalid();
    return this.text.slice(start, this.pos);
  }

  /** A quoted-string whose unescaped content must itself be a token (RFC 6455 section 9.1). */
  private quotedToken(): string {
    this.pos++; // opening DQUOTE
    let value = "";
    for (;;) {
      if (this.atEnd()) throw invalid();
      const c = this.peek();
      this.pos++;
      if (c === 0x22) break;
      if (c === 0x5c /* \ */) {
        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        if (this.atEnd()) throw invalid();
        const escaped = this.peek();
        if (!isQuotedPairChar(escaped)) throw invalid();
        this.pos++;
        value += String.fromCharCode(escaped);
      } else if (isQdtext(c)) {
        value += String.fromCharCode(c);
      } else {
        throw invalid();
      }
    }
    if (!isToken(value)) throw invalid();
    return value;
  }

  private skipWhitespace(): void {
    while (!this.atEnd()) {
      const c = this.peek();
      if (c !== 0x20 && c !== 0x09) return;
      this.pos++;
    }
  }

  private peek(): number {
    return this.text.charCodeAt(this.pos);
  }

  private atEnd(): boolean {
    return this.pos >= this.text.length;
  }
}

// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 7230 section 3.2.6)
function isQdtext(c: number): boolean {
  return (
    c === 0x09 ||
    c === 0x20 ||
    c === 0x21 ||
    (c >= 0x23 && c <= 0x5b) ||
    (c >= 0x5d && c <= 0x7e) ||
    (c >= 0x80 && c <= 0xff)
  );
}

function isQuotedPairChar(c: number): boolean {
  return c === 0x09 || (c >= 0x20 && c <= 0x7e) || (c >= 0x80 && c <= 0xff);
}

/**
 * Formats one extension as `name; param; param=value`. Names and values must be tokens (a value
 * must be a token even when quoted, RFC 6455 section 9.1, so quoting is never needed); anything
 * else is a programming error (TypeError).
 */
export function formatExtension(offer: ExtensionOffer): string {
  if (!isToken(offer.name)) throw new TypeError("Extension name must be a token");
  let out = offer.name;
  for (const [name, value] of offer.params) {
    if (!isToken(name)) throw new TypeError("Extension parameter name must be a token");
    if (value === true) {
      out += `; ${name}`;
    } else if (isToken(value)) {
      out += `; ${name}=${value}`;
    } else {
      throw new TypeError("Extension parameter value must be a token");
    }
  }
  return out;
}

/** Formats a whole extension list, as sent in one header line. */
export function formatExtensions(offers: readonly ExtensionOffer[]): string {
  return offers.map(formatExtension).join(", ");
}
