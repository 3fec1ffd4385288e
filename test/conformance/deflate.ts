// The harness's own permessage-deflate (RFC 7692) on node:zlib: the client's offers, the checks
// Autobahn applies to the server's response, and per-message compression with or without
// context takeover. Nothing here comes from src/, so the server's extension code is judged by
// an independent implementation.
import * as zlib from "node:zlib";

export const EXTENSION_NAME = "permessage-deflate";

/** Window sizes Autobahn's client accepts in a response (RFC 7692 section 7.1.2). */
const WINDOW_BITS_PERMISSIBLE = [8, 9, 10, 11, 12, 13, 14, 15];

/** zlib's default window (32 KiB). */
const DEFAULT_WINDOW_BITS = 15;

/** Empty stored block that a sync flush ends with; stripped on send, restored on receive. */
const SYNC_TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/**
 * One permessage-deflate offer, with Autobahn's parameter model: the client announces what it
 * accepts (client_no_context_takeover, client_max_window_bits without a value) and what it
 * requests from the server (server_no_context_takeover, server_max_window_bits=N).
 */
export interface DeflateOffer {
  acceptNoContextTakeover?: boolean;
  acceptMaxWindowBits?: boolean;
  requestNoContextTakeover?: boolean;
  requestMaxWindowBits?: number;
}

/** The offer as it goes into Sec-WebSocket-Extensions (RFC 7692 section 5). */
export function offerString(offer: DeflateOffer): string {
  let s = EXTENSION_NAME;
  if (offer.acceptNoContextTakeover ?? true) s += "; client_no_context_takeover";
  if (offer.acceptMaxWindowBits ?? true) s += "; client_max_window_bits";
  if (offer.requestNoContextTakeover) s += "; server_no_context_takeover";
  if (offer.requestMaxWindowBits) s += `; server_max_window_bits=${offer.requestMaxWindowBits}`;
  return s;
}

export type ExtensionParams = Map<string, Array<string | true>>;

/**
 * Splits a Sec-WebSocket-Extensions value into (name, params) pairs (RFC 6455 section 9.1),
 * removing quotes around values the way Autobahn's parser does. A parameter without a value
 * maps to `true`.
 */
export function parseExtensionsHeader(header: string): Array<[string, ExtensionParams]> {
  const out: Array<[string, ExtensionParams]> = [];
  for (const element of header.split(",")) {
    const trimmed = element.trim();
    if (trimmed === "") continue;
    const parts = trimmed.split(";").map((p) => p.trim());
    const params: ExtensionParams = new Map();
    for (const raw of parts.slice(1)) {
      const [key, ...rest] = raw.split("=").map((p) => p.trim());
      const name = key.toLowerCase();
      let value: string | true = true;
      if (rest.length > 0) {
        value = rest.join("=");
        if (value.startsWith('"')) value = value.slice(1);
        if (value.endsWith('"')) value = value.slice(0, -1);
      }
      const list = params.get(name) ?? [];
      list.push(value);
      params.set(name, list);
    }
    out.push([parts[0].toLowerCase(), params]);
  }
  return out;
}

/** The parameters a server accepted, as the client will use them. */
export interface DeflateAgreement {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  /** Window the server compresses with; the client inflates with it. */
  serverMaxWindowBits: number;
  /** Window the client compresses with. */
  clientMaxWindowBits: number;
  /** The response parameters exactly as received, for reports. */
  raw: string;
}

/**
 * Validates the server's permessage-deflate response the way Autobahn's client does
 * (RFC 7692 section 7.1): only the four known parameters, each at most once, window sizes in
 * 8-15 and present with a value, no values on the context-takeover flags. Throws a message
 * naming the offending parameter.
 */
export function parseDeflateResponse(params: ExtensionParams, raw: string): DeflateAgreement {
  const agreement: DeflateAgreement = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 0,
    clientMaxWindowBits: 0,
    raw,
  };
  for (const [name, values] of params) {
    if (values.length > 1) throw new Error(`parameter ${name} appears more than once`);
    const value = values[0];
    switch (name) {
      case "client_max_window_bits":
      case "server_max_window_bits": {
        const bits = value === true ? Number.NaN : Number(value);
        if (!/^\d+$/.test(String(value)) || !WINDOW_BITS_PERMISSIBLE.includes(bits)) {
          throw new Error(`illegal value ${String(value)} for ${name}`);
        }
        if (name === "client_max_window_bits") agreement.clientMaxWindowBits = bits;
        else agreement.serverMaxWindowBits = bits;
        break;
      }
      case "client_no_context_takeover":
      case "server_no_context_takeover":
        if (value !== true) throw new Error(`illegal value ${value} for ${name}`);
        if (name === "client_no_context_takeover") agreement.clientNoContextTakeover = true;
        else agreement.serverNoContextTakeover = true;
        break;
      default:
        throw new Error(`illegal parameter ${name}`);
    }
  }
  if (agreement.serverMaxWindowBits === 0) agreement.serverMaxWindowBits = DEFAULT_WINDOW_BITS;
  if (agreement.clientMaxWindowBits === 0) agreement.clientMaxWindowBits = DEFAULT_WINDOW_BITS;
  return agreement;
}

/**
 * Collects everything a zlib stream produces up to a flush. Node's zlib is asynchronous, so
 * callers must await each call before the next one on the same stream.
 */
function flushThrough(stream: zlib.DeflateRaw | zlib.InflateRaw, chunks: Buffer[], input: Buffer) {
  return new Promise<Buffer>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    stream.once("error", onError);
    stream.write(input);
    stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
      stream.off("error", onError);
      const out = Buffer.concat(chunks);
      chunks.length = 0;
      resolve(out);
    });
  });
}

/** Compresses whole messages (RFC 7692 section 7.2.1). */
export class MessageDeflater {
  private stream: zlib.DeflateRaw | null = null;
  private readonly chunks: Buffer[] = [];

  constructor(
    private readonly windowBits: number,
    private readonly noContextTakeover: boolean,
  ) {}

  /** Deflates one message: compressed blocks ending in a sync flush, minus its 4-octet tail. */
  async compress(data: Uint8Array): Promise<Buffer> {
    if (this.stream === null || this.noContextTakeover) {
      this.stream?.close();
      // zlib refuses an 8-bit window for raw deflate and node raises it to 9; the result is
      // still a valid stream for an inflater with a 256-octet window on input this small.
      this.stream = zlib.createDeflateRaw({ windowBits: this.windowBits, memLevel: 8 });
      const chunks = this.chunks;
      this.stream.on("data", (c: Buffer) => chunks.push(c));
      // Errors reach the pending call through flushThrough; this keeps a late one from
      // becoming an unhandled 'error' event.
      this.stream.on("error", () => {});
    }
    const out = await flushThrough(this.stream, this.chunks, Buffer.from(data));
    return out.subarray(0, out.length - SYNC_TRAILER.length);
  }

  close(): void {
    this.stream?.close();
    this.stream = null;
  }
}

/** Inflates messages frame by frame, so text can be validated as it decompresses. */
export class MessageInflater {
  private stream: zlib.InflateRaw | null = null;
  private readonly chunks: Buffer[] = [];

  constructor(
    private readonly windowBits: number,
    private readonly noContextTakeover: boolean,
  ) {}

  /** Called at the first frame of a compressed message. */
  start(): void {
    if (this.stream === null || this.noContextTakeover) {
      this.stream?.close();
      this.stream = zlib.createInflateRaw({ windowBits: this.windowBits });
      const chunks = this.chunks;
      this.stream.on("data", (c: Buffer) => chunks.push(c));
      this.stream.on("error", () => {});
    }
  }

  /** Inflates one frame's payload; rejects on corrupt data. */
  push(data: Uint8Array): Promise<Buffer> {
    if (this.stream === null) throw new Error("inflater not started");
    return flushThrough(this.stream, this.chunks, Buffer.from(data));
  }

  /** Ends the message by feeding back the stripped sync-flush tail (RFC 7692 section 7.2.2). */
  end(): Promise<Buffer> {
    return this.push(SYNC_TRAILER);
  }

  close(): void {
    this.stream?.close();
    this.stream = null;
  }
}
