/**
 * A message framed once for many connections: topic fan-out writes the same bytes to every
 * subscriber instead of framing (and compressing) per connection.
 *
 * Server frames are never masked (RFC 6455 section 5.1), so the uncompressed frame is the same
 * for every server-side connection and is built once. A compressed frame can be shared only
 * between connections whose permessage-deflate has server_no_context_takeover: then each message
 * is compressed from an empty window (RFC 7692 section 7.1.1.1) and the same bytes are valid on
 * all of them, provided the window fits what each peer allowed (section 7.1.2.1). With context
 * takeover the bytes depend on everything the connection sent before, so such connections
 * compress per connection (WebSocketConnection#sendPrepared falls back to the normal path).
 */
import { Opcode } from "../protocol/constants.js";
import { headerLength, writeHeader } from "../protocol/frame.js";
import {
  type DeflateParams,
  type PerMessageDeflateOptions,
  zlibWindowBits,
} from "../protocol/permessage-deflate.js";
import { PerMessageDeflate } from "./deflate.js";
import { sharedZlibLimiter } from "./zlib-limiter.js";

/** The zlib settings that shape the compressed bytes; everything else is per connection. */
export type PreparedDeflateOptions = Pick<PerMessageDeflateOptions, "level" | "memLevel">;

export interface PreparedMessageOptions {
  /**
   * Whether connections with permessage-deflate may send it compressed (like send()'s
   * `compress`). Each connection still applies its own threshold. Default true.
   */
  compress?: boolean;
}

export class PreparedMessage {
  /** The message as given. It must not be modified once the message is prepared. */
  readonly payload: Uint8Array;
  readonly binary: boolean;
  readonly compress: boolean;

  #frame: Buffer | null = null;
  /** Compressions by parameter key: pending, then replaced by the finished frame. */
  readonly #compressed = new Map<number, Promise<Buffer> | Buffer>();

  /**
   * Strings go as text and bytes as binary unless `binary` says otherwise, as with send().
   * The payload is not copied now; the frames built from it are copies.
   */
  constructor(data: string | Uint8Array, binary?: boolean, options: PreparedMessageOptions = {}) {
    const isString = typeof data === "string";
    this.payload = isString ? Buffer.from(data) : data;
    this.binary = binary ?? !isString;
    this.compress = options.compress ?? true;
  }

  /**
   * The uncompressed server frame (header and payload in one buffer), built on first use and
   * then the same Buffer for every caller.
   */
  frame(): Buffer {
    this.#frame ??= buildFrame(this.payload, this.binary, false);
    return this.#frame;
  }

  /**
   * The frame compressed for connections that negotiated `params` (RSV1 set, RFC 7692 section
   * 6). One compression runs per compatible parameter set and every caller shares its result.
   * Only valid with server_no_context_takeover (section 7.1.1.1); otherwise throws a TypeError
   * with code WS_ERR_PREPARED_CONTEXT_TAKEOVER. Only `level` and `memLevel` of `options` count;
   * thresholds are the caller's business.
   */
  compressedFrame(params: DeflateParams, options: PreparedDeflateOptions = {}): Promise<Buffer> {
    const entry = this.compressedEntry(params, options);
    return entry instanceof Uint8Array ? Promise.resolve(entry) : entry;
  }

  /**
   * compressedFrame() without the extra promise once the compression finished: the frame
   * itself when it is ready, else the pending compression shared by every caller.
   */
  compressedEntry(
    params: DeflateParams,
    options: PreparedDeflateOptions = {},
  ): Buffer | Promise<Buffer> {
    if (!params.serverNoContextTakeover) {
      throw Object.assign(
        new TypeError(
          "a prepared message can only be compressed once for connections with server_no_context_takeover",
        ),
        { code: "WS_ERR_PREPARED_CONTEXT_TAKEOVER" as const },
      );
    }
    const key = compressionKey(params.serverMaxWindowBits, options);
    const cached = this.#compressed.get(key);
    if (cached !== undefined) return cached;
    const pending = compressOnce(this.payload, params.serverMaxWindowBits, options).then(
      (payload) => {
        const frame = buildFrame(payload, this.binary, true);
        this.#compressed.set(key, frame);
        return frame;
      },
    );
    // A failure is not cached: a later caller tries again. Every caller of this attempt sees
    // the rejection through the promise it was given.
    pending.catch(() => {
      if (this.#compressed.get(key) === pending) this.#compressed.delete(key);
    });
    this.#compressed.set(key, pending);
    return pending;
  }
}

/** Header and payload in one buffer, unmasked, FIN set: a whole server message. */
function buildFrame(payload: Uint8Array, binary: boolean, rsv1: boolean): Buffer {
  const frame = Buffer.allocUnsafe(headerLength(payload.length, false) + payload.length);
  const start = writeHeader(frame, 0, payload.length, {
    opcode: binary ? Opcode.Binary : Opcode.Text,
    fin: true,
    rsv1,
    mask: null,
  });
  frame.set(payload, start);
  return frame;
}

/**
 * What makes two compressions interchangeable: the window zlib actually uses (8 and 9 both
 * compress with 9, see zlibWindowBits) and the settings that change the output.
 */
function compressionKey(windowBits: number, options: PreparedDeflateOptions): number {
  const level = options.level === undefined ? 0 : options.level + 2; // -1..9 -> 1..11
  const memLevel = options.memLevel ?? 0; // 1..9
  return zlibWindowBits(windowBits) * 1000 + level * 10 + memLevel;
}

/**
 * One message through the same compressor as every connection (trailer removed, the empty
 * message as a single 0x00, section 7.2.1) and the same process-wide zlib limiter.
 */
async function compressOnce(
  payload: Uint8Array,
  windowBits: number,
  options: PreparedDeflateOptions,
): Promise<Buffer> {
  const codec = new PerMessageDeflate(
    {
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: windowBits,
      clientMaxWindowBits: windowBits,
    },
    "server",
    { level: options.level, memLevel: options.memLevel, limiter: sharedZlibLimiter },
  );
  try {
    return await codec.compress(payload, true);
  } finally {
    codec.close();
  }
}
