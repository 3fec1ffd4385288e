/**
 * permessage-deflate negotiation (RFC 7692 sections 5 and 7.1) as pure functions: offers in,
 * parameters and header values out. The compression itself lives in src/connection/deflate.ts.
 */
import { type ExtensionOffer, formatExtension, HandshakeError } from "./extension-header.js";

export const PERMESSAGE_DEFLATE = "permessage-deflate";

/** Messages smaller than this many bytes are sent uncompressed by default. */
export const DEFAULT_THRESHOLD = 1024;

/** Default process-wide cap on concurrent zlib jobs. */
export const DEFAULT_CONCURRENCY = 10;

/** The LZ77 window used when no max_window_bits parameter limits it (RFC 7692 section 7.1.2). */
const DEFAULT_WINDOW_BITS = 15;

/** The parameters both sides agreed on. Window bits are 8..15. */
export interface DeflateParams {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  serverMaxWindowBits: number;
  clientMaxWindowBits: number;
}

/**
 * Our preferences. On a server they shape the response (section 7.1); on a client they shape the
 * offer and what we accept in return.
 */
export interface PerMessageDeflateOptions {
  serverNoContextTakeover?: boolean;
  clientNoContextTakeover?: boolean;
  serverMaxWindowBits?: number;
  clientMaxWindowBits?: number;
  /** Default 1024 bytes: smaller messages go uncompressed. */
  threshold?: number;
  /** Process-wide cap on concurrent zlib jobs, default 10. */
  concurrency?: number;
  /** zlib compression level, -1..9. */
  level?: number;
  /** zlib memLevel, 1..9. */
  memLevel?: number;
}

/**
 * Rejects options that can never be negotiated. These are programming errors (RangeError), not
 * handshake failures.
 */
export function validateDeflateOptions(options: PerMessageDeflateOptions): void {
  checkInteger("serverMaxWindowBits", options.serverMaxWindowBits, 8, 15);
  checkInteger("clientMaxWindowBits", options.clientMaxWindowBits, 8, 15);
  checkInteger("threshold", options.threshold, 0, Number.MAX_SAFE_INTEGER);
  checkInteger("concurrency", options.concurrency, 1, Number.MAX_SAFE_INTEGER);
  checkInteger("level", options.level, -1, 9);
  checkInteger("memLevel", options.memLevel, 1, 9);
}

function checkInteger(name: string, value: number | undefined, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`permessage-deflate option ${name} must be an integer in ${min}..${max}`);
  }
}

/**
 * zlib cannot produce a raw deflate stream with an 8-bit window; asking for 9 makes it keep every
 * match distance within 256 bytes anyway (its largest distance is the window size minus 262), so
 * the output is valid for a peer that negotiated 8. Inflating with a larger window than the peer
 * used is always safe.
 */
export function zlibWindowBits(bits: number): number {
  if (!Number.isInteger(bits) || bits < 8 || bits > 15) {
    throw new RangeError("Window bits must be an integer in 8..15");
  }
  return bits === 8 ? 9 : bits;
}

/** Parameters as they appear in one offer or response, after section 7.1 validation. */
interface ParsedParams {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  serverMaxWindowBits: number | undefined;
  /** `true`: present without a value, which only an offer may do (section 7.1.2.2). */
  clientMaxWindowBits: number | true | undefined;
}

// A decimal integer without leading zeroes, 8 to 15 (section 7.1.2).
const WINDOW_BITS = /^(?:[89]|1[0-5])$/;

/**
 * Validates one element's parameters (section 7.1: each at most once, no unknown names, values
 * as the ABNF says). Returns the reason as a string instead of throwing, because a server simply
 * declines a bad offer (section 7) while a client fails the connection on a bad response.
 */
function parseParams(
  params: ExtensionOffer["params"],
  kind: "offer" | "response",
): ParsedParams | string {
  const parsed: ParsedParams = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: undefined,
    clientMaxWindowBits: undefined,
  };
  const seen = new Set<string>();
  for (const [name, value] of params) {
    if (seen.has(name)) return `duplicate parameter ${name}`;
    seen.add(name);
    switch (name) {
      case "server_no_context_takeover":
      case "client_no_context_takeover":
        // Sections 7.1.1.1 and 7.1.1.2: these have no value.
        if (value !== true) return `${name} must not have a value`;
        if (name === "server_no_context_takeover") parsed.serverNoContextTakeover = true;
        else parsed.clientNoContextTakeover = true;
        break;
      case "server_max_window_bits":
        // Section 7.1.2.1: always has a value, in offers and responses alike.
        if (value === true || !WINDOW_BITS.test(value)) return `invalid ${name}`;
        parsed.serverMaxWindowBits = Number(value);
        break;
      case "client_max_window_bits":
        // Section 7.1.2.2: an offer may omit the value (it only says "I support this"), a
        // response must carry one.
        if (value === true) {
          if (kind === "response") return `${name} must have a value`;
          parsed.clientMaxWindowBits = true;
        } else if (WINDOW_BITS.test(value)) {
          parsed.clientMaxWindowBits = Number(value);
        } else {
          return `invalid ${name}`;
        }
        break;
      default:
        return "unknown parameter";
    }
  }
  return parsed;
}

function buildParams(p: ParsedParams): ExtensionOffer {
  const offer: ExtensionOffer = { name: PERMESSAGE_DEFLATE, params: [] };
  if (p.serverNoContextTakeover) offer.params.push(["server_no_context_takeover", true]);
  if (p.clientNoContextTakeover) offer.params.push(["client_no_context_takeover", true]);
  if (p.serverMaxWindowBits !== undefined) {
    offer.params.push(["server_max_window_bits", String(p.serverMaxWindowBits)]);
  }
  if (p.clientMaxWindowBits === true) offer.params.push(["client_max_window_bits", true]);
  else if (p.clientMaxWindowBits !== undefined) {
    offer.params.push(["client_max_window_bits", String(p.clientMaxWindowBits)]);
  }
  return offer;
}

/**
 * Server side: picks the first acceptable permessage-deflate offer (the client lists them in order
 * of preference, RFC 6455 section 9.1) and builds the response element. Offers with unknown,
 * repeated or invalid parameters are declined and the next one is tried (RFC 7692 section 7,
 * "a server MUST decline"); the handshake itself still succeeds.
 * Returns null when nothing is acceptable; the connection then simply goes uncompressed.
 *
 * How our options combine with an offer (section 7.1):
 * - serverNoContextTakeover: true always adds server_no_context_takeover (7.1.1.1 lets the server
 *   add it unasked); an offered one is always honoured.
 * - clientNoContextTakeover: true always adds client_no_context_takeover (7.1.1.2); an offered one
 *   is echoed so the response states the agreed mode.
 * - serverMaxWindowBits: our own window, capped by an offered server_max_window_bits (7.1.2.1:
 *   the response value must be the same or smaller). Sent when either side sets it.
 * - clientMaxWindowBits: only sent when the offer has client_max_window_bits, since a response
 *   must not carry it otherwise (7.1.2.2); capped by the offered value. When the client offered a
 *   value and we have no preference, that value is echoed so we inflate with the smaller window.
 *   A client that did not offer the parameter keeps its 15-bit window.
 */
export function negotiateServer(
  offers: readonly ExtensionOffer[],
  options: PerMessageDeflateOptions,
): { params: DeflateParams; response: string } | null {
  validateDeflateOptions(options);
  for (const offer of offers) {
    if (offer.name !== PERMESSAGE_DEFLATE) continue;
    const requested = parseParams(offer.params, "offer");
    if (typeof requested === "string") continue;

    let serverMaxWindowBits = requested.serverMaxWindowBits;
    if (options.serverMaxWindowBits !== undefined) {
      serverMaxWindowBits = Math.min(
        serverMaxWindowBits ?? DEFAULT_WINDOW_BITS,
        options.serverMaxWindowBits,
      );
    }

    let clientMaxWindowBits: number | undefined;
    const offeredClientBits = requested.clientMaxWindowBits;
    if (offeredClientBits !== undefined) {
      const ceiling = offeredClientBits === true ? DEFAULT_WINDOW_BITS : offeredClientBits;
      if (options.clientMaxWindowBits !== undefined) {
        clientMaxWindowBits = Math.min(ceiling, options.clientMaxWindowBits);
      } else if (offeredClientBits !== true) {
        clientMaxWindowBits = offeredClientBits;
      }
    }

    const response: ParsedParams = {
      serverNoContextTakeover:
        requested.serverNoContextTakeover || options.serverNoContextTakeover === true,
      clientNoContextTakeover:
        requested.clientNoContextTakeover || options.clientNoContextTakeover === true,
      serverMaxWindowBits,
      clientMaxWindowBits,
    };
    return {
      params: {
        serverNoContextTakeover: response.serverNoContextTakeover,
        clientNoContextTakeover: response.clientNoContextTakeover,
        serverMaxWindowBits: serverMaxWindowBits ?? DEFAULT_WINDOW_BITS,
        clientMaxWindowBits: clientMaxWindowBits ?? DEFAULT_WINDOW_BITS,
      },
      response: formatExtension(buildParams(response)),
    };
  }
  return null;
}

/**
 * Client side: the offer to send. client_max_window_bits is always included (without a value
 * unless we want a smaller window) so the server may ask for a smaller client window
 * (section 7.1.2.2).
 */
export function clientOffer(options: PerMessageDeflateOptions): string {
  validateDeflateOptions(options);
  return formatExtension(
    buildParams({
      serverNoContextTakeover: options.serverNoContextTakeover === true,
      clientNoContextTakeover: options.clientNoContextTakeover === true,
      serverMaxWindowBits: options.serverMaxWindowBits,
      clientMaxWindowBits: options.clientMaxWindowBits ?? true,
    }),
  );
}

function responseError(reason: string): HandshakeError {
  return new HandshakeError(
    "WS_ERR_HANDSHAKE_EXTENSION",
    101,
    `Invalid permessage-deflate response: ${reason}`,
  );
}

/**
 * Client side: checks the server's `Sec-WebSocket-Extensions` (already parsed, not empty) against
 * the offer clientOffer(options) produced, and returns the agreed parameters. Anything we did not
 * offer fails the connection (RFC 6455 section 4.1, RFC 7692 sections 7 and 7.1):
 * - any extension other than one permessage-deflate element;
 * - unknown, repeated or invalid parameters, client_max_window_bits without a value;
 * - a missing server_no_context_takeover or server_max_window_bits that we asked for, or a
 *   server_max_window_bits above the one we offered;
 * - a client_max_window_bits above the one we offered.
 * The server may add server_no_context_takeover, client_no_context_takeover or
 * server_max_window_bits unasked; those are accepted.
 */
export function acceptServerResponse(
  offers: readonly ExtensionOffer[],
  options: PerMessageDeflateOptions,
): DeflateParams {
  validateDeflateOptions(options);
  if (offers.length !== 1) throw responseError("expected exactly one extension");
  const [accepted] = offers;
  if (accepted.name !== PERMESSAGE_DEFLATE) throw responseError("unexpected extension");
  const parsed = parseParams(accepted.params, "response");
  if (typeof parsed === "string") throw responseError(parsed);

  if (options.serverNoContextTakeover === true && !parsed.serverNoContextTakeover) {
    throw responseError("server_no_context_takeover is missing");
  }
  if (options.serverMaxWindowBits !== undefined) {
    if (parsed.serverMaxWindowBits === undefined) {
      throw responseError("server_max_window_bits is missing");
    }
    if (parsed.serverMaxWindowBits > options.serverMaxWindowBits) {
      throw responseError("server_max_window_bits is larger than offered");
    }
  }
  // parseParams already refused a value-less client_max_window_bits in a response.
  const clientBits = parsed.clientMaxWindowBits as number | undefined;
  if (
    clientBits !== undefined &&
    options.clientMaxWindowBits !== undefined &&
    clientBits > options.clientMaxWindowBits
  ) {
    throw responseError("client_max_window_bits is larger than offered");
  }

  return {
    serverNoContextTakeover: parsed.serverNoContextTakeover,
    // Offering client_no_context_takeover is a promise we keep whatever the server says.
    clientNoContextTakeover:
      parsed.clientNoContextTakeover || options.clientNoContextTakeover === true,
    serverMaxWindowBits: parsed.serverMaxWindowBits ?? DEFAULT_WINDOW_BITS,
    // An offered value binds us even when the response omits the parameter (7.1.2.2).
    clientMaxWindowBits: clientBits ?? options.clientMaxWindowBits ?? DEFAULT_WINDOW_BITS,
  };
}
