import { randomFillSync } from "node:crypto";
import { sharedEmptyList } from "../shared-empty.js";
import { CloseState, type ConnectionState } from "./close-state.js";
import {
  CloseCode,
  isValidWireCloseCode,
  MAX_CLOSE_REASON_BYTES,
  MAX_CONTROL_PAYLOAD,
  Opcode,
} from "./constants.js";
import { type ProtocolError, protocolError, usageError } from "./errors.js";
import { encodeFrame } from "./frame.js";
import { applyMask } from "./mask.js";
import { isValidUtf8, Utf8Validator } from "./utf8.js";

/**
 * The WebSocket protocol core: bytes in, events and bytes out. It owns framing (RFC 6455
 * section 5), message assembly, UTF-8 validation, limits and the closing handshake, and does no
 * I/O: no sockets, no timers, no zlib. The layer above feeds it received bytes, writes what it
 * outputs, inflates compressed payloads it hands out, and closes the transport when told to.
 */

export type Role = "server" | "client";

export interface ProtocolOptions {
  role: Role;
  /** Largest message, after decompression, in bytes. Larger ones close with 1009. */
  maxMessageSize?: number;
  /** Most frames one message may span. More close with 1009. */
  maxFragments?: number;
  /**
   * Most bytes held for the peer at once: the message being assembled plus input waiting while
   * a compressed frame is inflated. More close with 1009.
   */
  maxBufferedBytes?: number;
  /** permessage-deflate was negotiated: RSV1 marks compressed messages (RFC 7692 section 6). */
  compression?: boolean;
  /** Source of client masking keys; tests pin it. Defaults to a CSPRNG (section 5.3). */
  maskKey?: () => Uint8Array;
}

export interface ProtocolHandler {
  /** Bytes to write to the transport, in order. */
  output(bytes: Uint8Array): void;
  message(data: Buffer, isBinary: boolean): void;
  /** A ping arrived; the core has already queued the pong (section 5.5.2). */
  ping(data: Buffer): void;
  pong(data: Buffer): void;
  /** The peer's close frame arrived (1005 when it carried no code). */
  closeReceived(code: number, reason: string): void;
  /**
   * A compressed frame payload needs inflating. The core stops processing input until
   * `inflated()` or `inflateFailed()` is called; `inflateBudget` bounds the output.
   */
  inflate(payload: Buffer, fin: boolean): void;
  /** The peer broke the protocol or a limit; a close frame with `error.closeCode` was queued. */
  error(error: ProtocolError): void;
  /** The transport should be closed now (after writing what was output). */
  closeTransport(): void;
  /**
   * Asked when the peer's close frame arrives and none was sent yet: true when messages the
   * application already sent are still being prepared (compressed) and the reply should follow
   * them, as section 5.5.1 allows ("MAY delay sending a Close frame until its current message
   * is sent"). The caller then calls replyClose() once they are out. Absent: reply at once.
   */
  deferCloseReply?(): boolean;
}

export const DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024;
export const DEFAULT_MAX_FRAGMENTS = 131_072;

// Parser states.
const READ_HEADER = 0;
const READ_PAYLOAD = 1;
const INFLATING = 2;
const STOPPED = 3;

const EMPTY = Buffer.alloc(0);
/** Until the first masked frame: a connection that never receives one never allocates its own. */
const NO_MASK = Buffer.alloc(4);
/** An empty list shared by every connection until it needs its own (src/shared-empty.ts). */
const NO_BUFFERS = sharedEmptyList<Buffer>();

export class Protocol {
  readonly role: Role;
  readonly maxMessageSize: number;
  readonly maxFragments: number;
  readonly maxBufferedBytes: number;
  readonly compression: boolean;
  /** Made when the closing handshake starts: an idle connection never needs one. */
  private closeState: CloseState | null = null;

  private readonly handler: ProtocolHandler;
  private readonly maskKey: (() => Uint8Array) | null;
  private readonly expectMasked: boolean;

  private parseState = READ_HEADER;
  // The frame being read.
  /** Scratch for a header split across reads; made on the first split (idle connections never need it). */
  private header: Buffer | null = null;
  private headerFilled = 0;
  private fin = false;
  private opcode = 0;
  /** The current frame's masking key; frames are masked exactly when `expectMasked`. */
  private frameMask: Buffer = NO_MASK;
  private payloadLength = 0;
  /** The parts of a payload that arrived over several reads. */
  private pieces: Buffer[] = NO_BUFFERS;
  private payloadFilled = 0;
  private maskPhase = 0;
  /** The partial payload was already UTF-8 checked piece by piece. */
  private payloadValidated = false;
  // The message being assembled.
  private messageOpcode = 0;
  private messageCompressed = false;
  private fragments: Buffer[] = NO_BUFFERS;
  private fragmentCount = 0;
  private messageSize = 0;
  private wireSize = 0;
  /** For text that is not checked in one piece (fragments, split reads, inflated output). */
  private utf8: Utf8Validator | null = null;
  private inflatingFin = false;
  private inflateInput: Buffer | null = null;
  /** Input that arrived while a frame was being inflated. */
  private pending: Buffer[] = NO_BUFFERS;
  private pendingBytes = 0;
  /** The code of a peer's close whose reply waits for messages still being prepared. */
  private owedCloseReply: number | null = null;
  /** Inside parse: input from a re-entrant receive() queues behind the current chunk. */
  private parsing = false;
  /** Inside drainPending: new input queues behind what is being drained. */
  private draining = false;
  /** Inside handler.inflate: a synchronous answer must not start parsing again. */
  private handingOff = false;
  // What we send.
  private sendingFragmented = false;

  constructor(options: ProtocolOptions, handler: ProtocolHandler) {
    this.role = options.role;
    this.maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
    this.maxFragments = options.maxFragments ?? DEFAULT_MAX_FRAGMENTS;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 2 * this.maxMessageSize;
    this.compression = options.compression ?? false;
    this.handler = handler;
    this.expectMasked = this.role === "server";
    this.maskKey = this.role === "client" ? (options.maskKey ?? randomMaskKey) : null;
  }

  /** The closing handshake's state (made on first use; see `state` for a read that makes none). */
  get close(): CloseState {
    if (this.closeState === null) this.closeState = new CloseState();
    return this.closeState;
  }

  /** Both close frames crossed and the connection was not failed (section 7.1.4 "cleanly"). */
  get closedCleanly(): boolean {
    const close = this.closeState;
    return close?.handshakeComplete === true && !close.failed;
  }

  get state(): ConnectionState {
    return this.closeState === null ? "open" : this.closeState.state;
  }

  /** The incremental UTF-8 check, made the first time text is not checked in one piece. */
  private validator(): Utf8Validator {
    if (this.utf8 === null) this.utf8 = new Utf8Validator();
    return this.utf8;
  }

  /** The text checked so far ends on a character boundary. */
  private utf8Complete(): boolean {
    return this.utf8 === null || this.utf8.complete;
  }

  /** Bytes of output the peer may still produce for the current message before 1009. */
  get inflateBudget(): number {
    return this.maxMessageSize - this.messageSize;
  }

  /** True while the core waits for `inflated()` or `inflateFailed()`. */
  get inflating(): boolean {
    return this.parseState === INFLATING;
  }

  // ───────────────────────────── input ─────────────────────────────

  /**
   * Feeds bytes received from the transport. Any split of the input gives the same events.
   * The chunk is unmasked in place and delivered payloads may point into it: the caller hands
   * it over and must not reuse it.
   */
  receive(chunk: Buffer): void {
    if (this.parseState === STOPPED || chunk.length === 0) return;
    // Input arriving from inside a callback of ours (re-entrant) waits its turn like input that
    // arrives while inflating, so bytes are always parsed in the order they came.
    if (this.parseState === INFLATING || this.draining || this.parsing) {
      this.holdInput(chunk, false);
      // Only inflation holds input for an unknown time; re-entrant input is parsed right after.
      if (
        this.parseState === INFLATING &&
        this.pendingBytes + this.messageSize > this.maxBufferedBytes
      ) {
        this.fail(protocolError("WS_ERR_BUFFER_LIMIT", "too much input buffered while inflating"));
      }
      return;
    }
    this.parse(chunk);
    this.drainPending();
  }

  /** The inflated bytes of the frame last handed to `handler.inflate`. */
  inflated(chunks: readonly Buffer[]): void {
    if (this.parseState !== INFLATING) return;
    const isText = this.messageOpcode === Opcode.Text;
    for (const chunk of chunks) {
      this.messageSize += chunk.length;
      if (this.messageSize > this.maxMessageSize) {
        this.fail(protocolError("WS_ERR_MESSAGE_TOO_BIG", "message exceeds the size limit"));
        return;
      }
      if (isText && !this.validator().write(chunk)) {
        this.fail(protocolError("WS_ERR_INVALID_UTF8", "invalid UTF-8 in text message"));
        return;
      }
      if (chunk.length > 0) this.addFragment(chunk);
    }
    this.parseState = READ_HEADER;
    if (this.inflatingFin) {
      if (isText && !this.utf8Complete()) {
        this.fail(protocolError("WS_ERR_INVALID_UTF8", "text message ends inside a character"));
        return;
      }
      // Input fed from inside the message callback must queue behind what was held back
      // while inflating, as it does during a parse.
      const wasParsing = this.parsing;
      this.parsing = true;
      try {
        this.deliverMessage();
      } finally {
        this.parsing = wasParsing;
      }
    }
    // An inflater answering from inside handler.inflate is resumed by the loop that called it,
    // so synchronous answers never nest parses on the stack.
    if (!this.handingOff) this.drainPending();
  }

  /** Inflation failed: a corrupt stream (1007) or output past the size limit (1009). */
  inflateFailed(error: ProtocolError): void {
    if (this.parseState !== INFLATING) return;
    this.parseState = READ_HEADER;
    this.fail(error);
  }

  /** The transport is gone. Returns the close code and reason to report (section 7.1.5). */
  transportClosed(): { code: number; reason: string; wasClean: boolean } {
    this.close.transition("transport-closed");
    this.parseState = STOPPED;
    this.pending = NO_BUFFERS;
    this.fragments = NO_BUFFERS;
    this.pieces = NO_BUFFERS;
    return {
      code: this.close.code,
      reason: this.close.reason,
      wasClean: this.closedCleanly,
    };
  }

  /** Sets input aside (at the front when it is the rest of the chunk being parsed). */
  private holdInput(chunk: Buffer, first: boolean): void {
    if (this.pending === NO_BUFFERS) this.pending = [];
    if (first) this.pending.unshift(chunk);
    else this.pending.push(chunk);
    this.pendingBytes += chunk.length;
  }

  private addFragment(payload: Buffer): void {
    if (this.fragments === NO_BUFFERS) this.fragments = [payload];
    else this.fragments.push(payload);
  }

  /** Parses input set aside while a frame was inflating, in order, iteratively. */
  private drainPending(): void {
    if (this.draining) return;
    this.draining = true;
    while (
      this.pending.length > 0 &&
      (this.parseState === READ_HEADER || this.parseState === READ_PAYLOAD)
    ) {
      const chunk = this.pending.shift()!;
      this.pendingBytes -= chunk.length;
      this.parse(chunk);
    }
    this.draining = false;
  }

  private parse(chunk: Buffer): void {
    this.parsing = true;
    try {
      this.parseChunk(chunk);
    } finally {
      this.parsing = false;
    }
  }

  private parseChunk(chunk: Buffer): void {
    const length = chunk.length;
    let offset = 0;
    while (offset < length) {
      if (this.parseState === READ_HEADER) {
        offset = this.readHeader(chunk, offset);
        if (offset < 0) return;
      } else if (this.parseState === READ_PAYLOAD) {
        offset = this.readPayload(chunk, offset);
        if (offset < 0) return;
      }
      if (this.parseState === INFLATING) {
        if (offset < length) {
          // Set aside before handing out, so an inflater that answers synchronously resumes in
          // order.
          this.holdInput(chunk.subarray(offset), true);
        }
        const input = this.inflateInput!;
        this.inflateInput = null;
        this.handingOff = true;
        this.handler.inflate(input, this.inflatingFin);
        this.handingOff = false;
        return;
      }
      if (this.parseState === STOPPED) return;
    }
  }

  /**
   * Reads a frame header starting at `offset`. Returns the new offset, or -1 when the connection
   * failed. On return the state is READ_PAYLOAD, or READ_HEADER with either the header still
   * incomplete or an empty-payload frame already processed.
   */
  private readHeader(chunk: Buffer, offset: number): number {
    let source: Buffer;
    let at: number;
    const available = chunk.length - offset;
    if (this.headerFilled === 0 && available >= 2) {
      const needed = frameHeaderSize(chunk[offset + 1]);
      if (available >= needed) {
        source = chunk;
        at = offset;
        offset += needed;
      } else {
        this.header ??= Buffer.allocUnsafe(14);
        chunk.copy(this.header, 0, offset);
        this.headerFilled = available;
        return chunk.length;
      }
    } else {
      // Gather a header split across reads in the scratch buffer.
      this.header ??= Buffer.allocUnsafe(14);
      if (this.headerFilled < 2) {
        const take = Math.min(2 - this.headerFilled, available);
        chunk.copy(this.header, this.headerFilled, offset, offset + take);
        this.headerFilled += take;
        offset += take;
        if (this.headerFilled < 2) return offset;
      }
      const needed = frameHeaderSize(this.header[1]);
      const take = Math.min(needed - this.headerFilled, chunk.length - offset);
      chunk.copy(this.header, this.headerFilled, offset, offset + take);
      this.headerFilled += take;
      offset += take;
      if (this.headerFilled < needed) return offset;
      source = this.header;
      at = 0;
      this.headerFilled = 0;
    }
    if (!this.decodeHeader(source, at)) return -1;
    if (this.payloadLength === 0) {
      this.frameComplete(EMPTY);
      return this.parseState === STOPPED ? -1 : offset;
    }
    this.parseState = READ_PAYLOAD;
    return offset;
  }

  /** Applies the section 5.2 / 5.4 / 5.5 rules to a complete header. */
  private decodeHeader(b: Buffer, at: number): boolean {
    const b0 = b[at];
    const b1 = b[at + 1];
    const fin = (b0 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    let length = b1 & 0x7f;
    let cursor = at + 2;

    if ((b0 & 0x30) !== 0) {
      return this.failed("WS_ERR_RESERVED_BITS", "RSV2 and RSV3 must be clear");
    }
    if (opcode >= Opcode.Close) {
      if (opcode > Opcode.Pong)
        return this.failed("WS_ERR_RESERVED_OPCODE", `reserved opcode ${opcode}`);
      if (!fin)
        return this.failed("WS_ERR_CONTROL_FRAGMENTED", "control frames must not be fragmented");
      if (rsv1) return this.failed("WS_ERR_RESERVED_BITS", "RSV1 must be clear on control frames");
      if (length > MAX_CONTROL_PAYLOAD) {
        return this.failed("WS_ERR_CONTROL_TOO_LONG", "control frame payload exceeds 125 bytes");
      }
    } else if (opcode === Opcode.Continuation) {
      if (this.messageOpcode === 0) {
        return this.failed(
          "WS_ERR_UNEXPECTED_CONTINUATION",
          "continuation frame without a message",
        );
      }
      // RFC 7692 section 6.1: RSV1 is set on the first frame of a message only.
      if (rsv1) return this.failed("WS_ERR_RESERVED_BITS", "RSV1 set on a continuation frame");
    } else if (opcode === Opcode.Text || opcode === Opcode.Binary) {
      if (this.messageOpcode !== 0) {
        return this.failed(
          "WS_ERR_EXPECTED_CONTINUATION",
          "new message before the previous one ended",
        );
      }
      if (rsv1 && !this.compression) {
        return this.failed("WS_ERR_RESERVED_BITS", "RSV1 set without a negotiated extension");
      }
    } else {
      return this.failed("WS_ERR_RESERVED_OPCODE", `reserved opcode ${opcode}`);
    }
    // Section 5.1: clients mask every frame; servers mask none.
    if (masked !== this.expectMasked) {
      return masked
        ? this.failed("WS_ERR_MASKED_FRAME", "server frames must not be masked")
        : this.failed("WS_ERR_UNMASKED_FRAME", "client frames must be masked");
    }

    // Section 5.2 asks senders for the minimal length encoding; a longer one is still
    // unambiguous, so it is accepted rather than punished.
    if (length === 126) {
      length = (b[cursor] << 8) | b[cursor + 1];
      cursor += 2;
    } else if (length === 127) {
      const high = b.readUInt32BE(cursor);
      if (high & 0x80000000) {
        return this.failed("WS_ERR_LENGTH_MSB_SET", "64-bit payload length has its top bit set");
      }
      // Anything past 2^53 is far past every size limit; the sum below rejects it.
      length = high * 0x100000000 + b.readUInt32BE(cursor + 4);
      cursor += 8;
    }
    if (masked) {
      if (this.frameMask === NO_MASK) this.frameMask = Buffer.allocUnsafe(4);
      this.frameMask[0] = b[cursor];
      this.frameMask[1] = b[cursor + 1];
      this.frameMask[2] = b[cursor + 2];
      this.frameMask[3] = b[cursor + 3];
    }

    if (opcode < Opcode.Close) {
      const compressed = opcode === Opcode.Continuation ? this.messageCompressed : rsv1;
      // Refuse oversized messages from the header, before a byte of payload is allocated. A
      // compressed message is limited by its inflated size (inflateBudget); on the wire it may
      // only exceed that by deflate's framing overhead.
      const wireLimit = compressed ? maxDeflatedSize(this.maxMessageSize) : this.maxMessageSize;
      if (this.wireSize + length > wireLimit) {
        return this.failed("WS_ERR_MESSAGE_TOO_BIG", "message exceeds the size limit");
      }
      // Held at once: an uncompressed message's frames so far, or a compressed message's
      // inflated bytes plus the frame about to be inflated.
      const held = compressed ? this.messageSize + length : this.wireSize + length;
      if (held > this.maxBufferedBytes) {
        return this.failed("WS_ERR_BUFFER_LIMIT", "message exceeds the buffered bytes limit");
      }
      if (this.fragmentCount + 1 > this.maxFragments) {
        return this.failed("WS_ERR_TOO_MANY_FRAGMENTS", "message spans too many frames");
      }
      if (opcode !== Opcode.Continuation) {
        this.messageOpcode = opcode;
        this.messageCompressed = rsv1;
      }
      this.fragmentCount++;
      this.wireSize += length;
    }

    this.fin = fin;
    this.opcode = opcode;
    this.payloadLength = length;
    this.payloadFilled = 0;
    this.maskPhase = 0;
    this.payloadValidated = false;
    return true;
  }

  private readPayload(chunk: Buffer, offset: number): number {
    const available = chunk.length - offset;
    const remaining = this.payloadLength - this.payloadFilled;
    if (this.payloadFilled === 0 && available >= remaining) {
      // The whole payload is here: use it in place, no copy.
      const payload = chunk.subarray(offset, offset + remaining);
      if (this.expectMasked) applyMask(payload, this.frameMask, 0, remaining, 0);
      this.parseState = READ_HEADER;
      this.frameComplete(payload);
      return this.parseState === STOPPED ? -1 : offset + remaining;
    }
    // A partial payload is kept as the pieces that arrived, so memory grows with what the peer
    // actually sent, never with what its header announced.
    const take = Math.min(remaining, available);
    const piece = chunk.subarray(offset, offset + take);
    if (this.expectMasked) {
      this.maskPhase = applyMask(piece, this.frameMask, 0, take, this.maskPhase);
    }
    this.payloadFilled += take;
    // Fail fast (section 8.1): check text as it arrives, not when the frame is complete.
    if (
      this.messageOpcode === Opcode.Text &&
      !this.messageCompressed &&
      this.opcode < Opcode.Close
    ) {
      this.payloadValidated = true;
      if (!this.validator().write(piece)) {
        this.fail(protocolError("WS_ERR_INVALID_UTF8", "invalid UTF-8 in text message"));
        return -1;
      }
    }
    if (this.pieces === NO_BUFFERS) this.pieces = [piece];
    else this.pieces.push(piece);
    if (this.payloadFilled < this.payloadLength) return offset + take;
    const pieces = this.pieces;
    this.pieces = NO_BUFFERS;
    const payload = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces, this.payloadLength);
    this.parseState = READ_HEADER;
    this.frameComplete(payload);
    return this.parseState === STOPPED ? -1 : offset + take;
  }

  private frameComplete(payload: Buffer): void {
    const opcode = this.opcode;
    if (opcode >= Opcode.Close) {
      this.controlFrame(opcode, payload);
      return;
    }
    if (this.state === "closed") return; // section 1.4: nothing after the close handshake
    if (this.messageCompressed) {
      // The parse loop hands this to the handler once the rest of the input is set aside.
      this.parseState = INFLATING;
      this.inflatingFin = this.fin;
      this.inflateInput = payload;
      return;
    }
    if (this.messageOpcode === Opcode.Text && !this.payloadValidated) {
      const valid =
        this.fin && this.fragments.length === 0 && this.utf8Complete()
          ? isValidUtf8(payload)
          : this.validator().write(payload);
      if (!valid) {
        this.fail(protocolError("WS_ERR_INVALID_UTF8", "invalid UTF-8 in text message"));
        return;
      }
    }
    if (!this.fin) {
      if (payload.length > 0) this.addFragment(payload);
      this.messageSize += payload.length;
      return;
    }
    if (this.messageOpcode === Opcode.Text && !this.utf8Complete()) {
      this.fail(protocolError("WS_ERR_INVALID_UTF8", "text message ends inside a character"));
      return;
    }
    if (this.fragments.length === 0) {
      const isBinary = this.messageOpcode === Opcode.Binary;
      this.resetMessage();
      this.handler.message(payload, isBinary);
      return;
    }
    if (payload.length > 0) this.addFragment(payload);
    this.messageSize += payload.length;
    this.deliverMessage();
  }

  private deliverMessage(): void {
    const isBinary = this.messageOpcode === Opcode.Binary;
    const fragments = this.fragments;
    const data =
      fragments.length === 0
        ? EMPTY
        : fragments.length === 1
          ? fragments[0]
          : Buffer.concat(fragments, this.messageSize);
    this.resetMessage();
    this.handler.message(data, isBinary);
  }

  private resetMessage(): void {
    this.messageOpcode = 0;
    this.messageCompressed = false;
    this.fragments = NO_BUFFERS;
    this.fragmentCount = 0;
    this.messageSize = 0;
    this.wireSize = 0;
    this.utf8?.reset();
  }

  private controlFrame(opcode: number, payload: Buffer): void {
    if (opcode === Opcode.Close) {
      this.closeFrame(payload);
      return;
    }
    if (this.state !== "open") return; // no pongs after our close frame (section 5.5.1)
    if (opcode === Opcode.Ping) {
      this.writeFrame(Opcode.Pong, payload, true, false);
      this.handler.ping(payload);
    } else {
      this.handler.pong(payload);
    }
  }

  /** Section 5.5.1 and 7.1.5: parse, validate and answer the peer's close frame. */
  private closeFrame(payload: Buffer): void {
    if (this.close.received !== null) return;
    let code: number = CloseCode.NoStatus;
    let reason = "";
    if (payload.length === 1) {
      this.fail(protocolError("WS_ERR_INVALID_CLOSE_PAYLOAD", "close payload of one byte"));
      return;
    }
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0);
      if (!isValidWireCloseCode(code)) {
        this.fail(protocolError("WS_ERR_INVALID_CLOSE_CODE", `invalid close code ${code}`));
        return;
      }
      const reasonBytes = payload.subarray(2);
      if (!isValidUtf8(reasonBytes)) {
        this.fail(protocolError("WS_ERR_INVALID_UTF8", "close reason is not valid UTF-8"));
        return;
      }
      reason = reasonBytes.toString("utf8");
    }
    this.close.received = { code, reason };
    this.parseState = STOPPED;
    this.pending = NO_BUFFERS;
    if (this.state === "open" && this.handler.deferCloseReply?.() === true) {
      // Nothing more is read; what is being prepared may still be sent, then the reply.
      this.owedCloseReply = code;
      this.handler.closeReceived(code, reason);
      return;
    }
    this.answerClose(code);
    this.handler.closeReceived(code, reason);
    if (this.role === "server") this.handler.closeTransport();
  }

  /** True between a deferred close (deferCloseReply) and replyClose(). */
  get closeReplyOwed(): boolean {
    return this.owedCloseReply !== null;
  }

  /** Sends the close reply that deferCloseReply() held back (section 5.5.1). */
  replyClose(): void {
    const code = this.owedCloseReply;
    if (code === null) return;
    this.owedCloseReply = null;
    if (this.state === "closed") return;
    this.answerClose(code);
    // Section 7.1.1: the server closes TCP first; the client waits for it.
    if (this.role === "server") this.handler.closeTransport();
  }

  private answerClose(code: number): void {
    if (this.state === "open") {
      this.close.initiator = "remote";
      // Echo the code we received (section 5.5.1); no code if the peer sent none.
      const echoCode = code === CloseCode.NoStatus ? undefined : code;
      this.close.sent = { code, reason: "" };
      this.writeFrame(Opcode.Close, encodeClosePayload(echoCode, ""), true, false);
    }
    this.close.transition("receive-close");
  }

  private failed(code: Parameters<typeof protocolError>[0], message: string): false {
    this.fail(protocolError(code, message));
    return false;
  }

  /** Fail the WebSocket connection (section 7.1.7). */
  fail(error: ProtocolError): void {
    if (this.parseState === STOPPED && this.state === "closed") return;
    this.parseState = STOPPED;
    this.pending = NO_BUFFERS;
    this.fragments = NO_BUFFERS;
    this.pieces = NO_BUFFERS;
    if (this.state === "open") {
      this.close.initiator = "local";
      const reason = truncateReason(error.message);
      this.close.sent = { code: error.closeCode, reason };
      this.writeFrame(Opcode.Close, encodeClosePayload(error.closeCode, reason), true, false);
    }
    this.close.failed = true;
    if (this.state !== "closed") this.close.transition("fail");
    this.handler.error(error);
    this.handler.closeTransport();
  }

  // ───────────────────────────── output ─────────────────────────────

  /**
   * Sends a whole message as one frame. `compressed` marks a payload the caller already deflated
   * (RFC 7692). Returns false when the connection no longer accepts messages.
   */
  sendMessage(payload: Uint8Array, isBinary: boolean, compressed = false): boolean {
    if (this.state !== "open") return false;
    if (this.sendingFragmented)
      throw usageError(Error, "WS_ERR_MESSAGE_IN_PROGRESS", "a fragmented message is being sent");
    this.writeFrame(isBinary ? Opcode.Binary : Opcode.Text, payload, true, compressed);
    return true;
  }

  /**
   * Sends one frame of a fragmented message (section 5.4): the first frame carries the type and,
   * for a compressed message, RSV1; the others are continuations.
   */
  sendFragment(payload: Uint8Array, isBinary: boolean, fin: boolean, compressed = false): boolean {
    if (this.state !== "open") return false;
    const first = !this.sendingFragmented;
    const opcode = first ? (isBinary ? Opcode.Binary : Opcode.Text) : Opcode.Continuation;
    this.sendingFragmented = !fin;
    this.writeFrame(opcode, payload, fin, first && compressed);
    return true;
  }

  ping(payload: Uint8Array = EMPTY): boolean {
    checkControlPayload(payload);
    if (this.state !== "open") return false;
    this.writeFrame(Opcode.Ping, payload, true, false);
    return true;
  }

  pong(payload: Uint8Array = EMPTY): boolean {
    checkControlPayload(payload);
    if (this.state !== "open") return false;
    this.writeFrame(Opcode.Pong, payload, true, false);
    return true;
  }

  /**
   * Starts the closing handshake (section 7.1.2). Without a code the close frame is empty and the
   * peer sees 1005. Throws on codes that may not be sent and reasons over 123 bytes.
   */
  sendClose(code?: number, reason = ""): boolean {
    const payload = encodeClosePayload(code, reason);
    if (this.state !== "open") return false;
    this.close.initiator = "local";
    this.close.sent = { code: code ?? CloseCode.NoStatus, reason };
    this.close.transition("send-close");
    this.writeFrame(Opcode.Close, payload, true, false);
    return true;
  }

  private writeFrame(opcode: number, payload: Uint8Array, fin: boolean, rsv1: boolean): void {
    const mask = this.maskKey === null ? null : this.maskKey();
    const frame = encodeFrame(payload, { opcode, fin, rsv1, mask });
    if (Array.isArray(frame)) {
      this.handler.output(frame[0]);
      this.handler.output(frame[1]);
    } else {
      this.handler.output(frame);
    }
  }
}

/**
 * The largest deflate encoding of `size` bytes: stored blocks cost 5 bytes per 65,535, plus the
 * empty block a sync flush ends with (RFC 1951 section 3.2.4; zlib's deflateBound is tighter).
 */
function maxDeflatedSize(size: number): number {
  return size + 5 * Math.ceil(size / 65_535) + 16;
}

/** Header size (without extended length bytes decided yet) from the second header byte. */
function frameHeaderSize(b1: number): number {
  const len = b1 & 0x7f;
  const base = len < 126 ? 2 : len === 126 ? 4 : 10;
  return b1 & 0x80 ? base + 4 : base;
}

/** Throws when a control frame payload is over 125 bytes (section 5.5). */
export function checkControlPayload(payload: Uint8Array): void {
  if (payload.length > MAX_CONTROL_PAYLOAD) {
    throw usageError(
      RangeError,
      "WS_ERR_CONTROL_PAYLOAD_TOO_LONG",
      "control frame payloads are limited to 125 bytes",
    );
  }
}

/** Builds a close frame payload (section 5.5.1), validating what may be sent (section 7.4). */
export function encodeClosePayload(code: number | undefined, reason: string): Buffer {
  if (code === undefined) {
    if (reason !== "")
      throw usageError(
        TypeError,
        "WS_ERR_REASON_WITHOUT_CODE",
        "a close reason needs a close code",
      );
    return EMPTY;
  }
  if (!Number.isInteger(code) || !isValidWireCloseCode(code)) {
    throw usageError(
      RangeError,
      "WS_ERR_CLOSE_CODE_NOT_SENDABLE",
      `close code ${code} may not be sent`,
    );
  }
  const length = Buffer.byteLength(reason);
  if (length > MAX_CLOSE_REASON_BYTES) {
    throw usageError(
      RangeError,
      "WS_ERR_CLOSE_REASON_TOO_LONG",
      "close reasons are limited to 123 bytes",
    );
  }
  const payload = Buffer.allocUnsafe(2 + length);
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2, "utf8");
  return payload;
}

/** Shortens a reason to fit a close frame without splitting a character. */
function truncateReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let cut = reason.slice(0, MAX_CLOSE_REASON_BYTES);
  while (Buffer.byteLength(cut) > MAX_CLOSE_REASON_BYTES) cut = cut.slice(0, -1);
  return cut;
}

const KEY_POOL_SIZE = 4096;
let keyPool = Buffer.allocUnsafe(0);
let keyOffset = KEY_POOL_SIZE;

/** Masking keys come from a CSPRNG (section 10.3), drawn in bulk. */
function randomMaskKey(): Uint8Array {
  if (keyOffset + 4 > keyPool.length) {
    keyPool = randomFillSync(Buffer.allocUnsafe(KEY_POOL_SIZE));
    keyOffset = 0;
  }
  const key = keyPool.subarray(keyOffset, keyOffset + 4);
  keyOffset += 4;
  return key;
}
