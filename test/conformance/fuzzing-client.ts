// A raw-TCP WebSocket client that behaves like the Autobahn Testsuite's fuzzing client: it
// performs the opening handshake itself, writes arbitrary frames (any opcode, RSV bits, FIN,
// length, mask), chops writes into pieces that leave in separate event-loop turns, and runs
// Autobahn's close state machine (closedByMe / failedByMe / droppedByMe / wasClean, the close
// and drop timeouts). It records everything sent and received with timestamps.
//
// It parses and validates what the server sends with its own decoder, UTF-8 validator and
// inflater, configured like Autobahn's client: failByDrop off (a violation is answered with a
// close frame, RFC 6455 section 7.1.7), masked server frames refused (section 5.1), close codes
// checked against the registered set (section 7.4).
import { createHash, randomBytes } from "node:crypto";
import * as net from "node:net";
import { performance } from "node:perf_hooks";
import {
  type DeflateAgreement,
  type DeflateOffer,
  EXTENSION_NAME,
  MessageDeflater,
  MessageInflater,
  offerString,
  parseDeflateResponse,
  parseExtensionsHeader,
} from "./deflate.js";
import {
  applyMask,
  encodeHeader,
  OP_BINARY,
  OP_CLOSE,
  OP_CONTINUATION,
  OP_PING,
  OP_PONG,
  OP_TEXT,
  opcodeName,
  randomMask,
  repeatToLength,
} from "./frame-codec.js";
import { isValidUtf8, Utf8Validator } from "./utf8.js";

const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * Close codes Autobahn's client accepts from a peer: the RFC 6455 section 7.4.1 codes that may
 * be sent plus 1012/1013, and 3000-4999 (section 7.4.2). Anything else is a protocol error.
 */
const CLOSE_CODES_ALLOWED = new Set([
  1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
]);

function isAllowedCloseCode(code: number): boolean {
  return CLOSE_CODES_ALLOWED.has(code) || (code >= 3000 && code <= 4999);
}

/** Close reasons are cut to what fits a control frame after the code (section 5.5). */
const MAX_CLOSE_REASON = 123;

/** How many octets of each write or frame the wire log keeps. */
const LOG_OCTETS = 48;

/** Bound on wire-log entries per connection, so a long case cannot exhaust memory. */
const MAX_WIRELOG = 4000;

export type ProtocolState = "connecting" | "open" | "closing" | "closed";

/** What the case under test hears from the protocol (Autobahn's callbacks). */
export interface FuzzingHooks {
  onOpen(): void;
  onMessage(payload: Buffer, binary: boolean): void;
  onPong(payload: Buffer): void;
  onClose(wasClean: boolean, code: number | null, reason: string): void;
  onConnectionLost(): void;
}

export interface FuzzingClientOptions {
  host: string;
  port: number;
  path?: string;
  /** permessage-deflate offers for the handshake; none means no extension is offered. */
  offers?: DeflateOffer[];
  /** Seconds; Autobahn's client defaults are 5, 1 and 1. */
  openHandshakeTimeout?: number;
  closeHandshakeTimeout?: number;
  serverConnectionDropTimeout?: number;
  /** Seconds after which the harness drops TCP whatever the state, so no case can hang. */
  hardDeadline?: number;
  /**
   * Every timer (the ones above and a case's killAfter/closeAfter) runs this many times longer:
   * a server held up on a loaded machine still answers in time. Waiting longer never makes a
   * non-conforming server pass (default 1).
   */
  timeScale?: number;
}

export interface SendFrameOptions {
  opcode: number;
  payload?: Uint8Array;
  fin?: boolean;
  /** RSV bits as one number 0-7 (RSV1 = 4). */
  rsv?: number;
  /** Explicit masking key; by default a fresh random one (client frames are always masked). */
  mask?: Uint8Array;
  /** Repeat `payload` until the frame carries exactly this many octets. */
  payloadLen?: number;
  /** Write the frame in pieces of this many octets, one event-loop turn apart. */
  chopsize?: number;
  /** Write the frame in its own event-loop turn (Autobahn's "sync"). */
  sync?: boolean;
}

export interface WireLogEntry {
  /** Milliseconds since the TCP connection was started. */
  t: number;
  /** TO/RO: octets sent/received; TF/RF: frames; anything else: an event. */
  kind: string;
  text: string;
}

interface FrameInProgress {
  opcode: number;
  fin: boolean;
  rsv: number;
  length: number;
  mask: Buffer | null;
}

/** Received octets, consumed front to back without re-copying on every chunk. */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.chunks.push(b);
    this.length += b.length;
  }

  /** The first `n` octets, without consuming them (n <= length). */
  peek(n: number): Buffer {
    this.coalesce(n);
    return this.chunks[0].subarray(0, n);
  }

  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.coalesce(n);
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.length -= n;
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.length = 0;
  }

  private coalesce(n: number): void {
    if (this.chunks[0].length >= n) return;
    let size = 0;
    let count = 0;
    while (size < n) size += this.chunks[count++].length;
    this.chunks.splice(0, count, Buffer.concat(this.chunks.slice(0, count), size));
  }
}

function hexPreview(data: Uint8Array): string {
  const head = Buffer.from(data.subarray(0, LOG_OCTETS)).toString("hex");
  return data.length > LOG_OCTETS ? `${head} ...` : head;
}

function textPreview(data: Uint8Array): string {
  const head = Buffer.from(data.subarray(0, LOG_OCTETS));
  const shown = isValidUtf8(head)
    ? JSON.stringify(head.toString("utf8"))
    : `0x${head.toString("hex")}`;
  return data.length > LOG_OCTETS ? `${shown} ...` : shown;
}

export class FuzzingClient {
  state: ProtocolState = "connecting";

  // Autobahn's close bookkeeping (autobahn/websocket/protocol.py), judged by judge.ts.
  /** We sent the first close frame (we initiated the closing handshake). */
  closedByMe = false;
  /** We failed the connection (protocol violation, invalid payload, or a kill timer). */
  failedByMe = false;
  /** We closed the TCP connection (rather than the server). */
  droppedByMe = false;
  /** A close frame was both sent and received, and we did not have to drop TCP ourselves. */
  wasClean = false;
  wasNotCleanReason: string | null = null;
  wasServerConnectionDropTimeout = false;
  wasOpenHandshakeTimeout = false;
  wasCloseHandshakeTimeout = false;
  localCloseCode: number | null = null;
  localCloseReason: Buffer | null = null;
  remoteCloseCode: number | null = null;
  remoteCloseReason: Buffer | null = null;
  connectionWasOpen = false;

  /** Auto-fragmentation of sendMessage, in octets of (compressed) payload; 0 is off. */
  autoFragmentSize = 0;
  /** Frames sent per opcode, as Autobahn's txFrameStats (frames from sendFrame only). */
  readonly txFrameStats = new Map<number, number>();
  /** The negotiated permessage-deflate parameters, or null. */
  deflate: DeflateAgreement | null = null;
  httpRequest = "";
  httpResponse = "";
  readonly wirelog: WireLogEntry[] = [];
  private createWirelog = true;
  /** Resolves once the connection is gone and the case has been told. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  private hooks: FuzzingHooks | null = null;
  private socket: net.Socket | null = null;
  private readonly t0 = performance.now();
  private readonly key = randomBytes(16).toString("base64");
  private handshakeBuffer = Buffer.alloc(0);
  private readonly rx = new ByteQueue();
  private frame: FrameInProgress | null = null;

  private insideMessage = false;
  private messageCompressed = false;
  private messageText = false;
  private messageBinary = false;
  private messageChunks: Buffer[] = [];
  private readonly utf8 = new Utf8Validator();

  private deflater: MessageDeflater | null = null;
  private inflater: MessageInflater | null = null;

  private readonly sendQueue: Array<{ data: Buffer; sync: boolean }> = [];
  private triggered = false;

  // Streaming send (beginMessage / beginMessageFrame / sendMessageFrameData / endMessage).
  private streamOpcode = OP_TEXT;
  private streamFirstFrame = true;
  private streamMask: Buffer = Buffer.alloc(4);
  private streamOffset = 0;

  private readonly timers = new Set<NodeJS.Timeout>();
  private closeHandshakeTimer: NodeJS.Timeout | null = null;
  private pumping = false;
  private transportGone = false;
  private finalized = false;

  private readonly openHandshakeTimeout: number;
  private readonly closeHandshakeTimeout: number;
  private readonly serverConnectionDropTimeout: number;

  constructor(private readonly options: FuzzingClientOptions) {
    this.openHandshakeTimeout = options.openHandshakeTimeout ?? 5;
    this.closeHandshakeTimeout = options.closeHandshakeTimeout ?? 1;
    this.serverConnectionDropTimeout = options.serverConnectionDropTimeout ?? 1;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  /** Opens the TCP connection and starts the opening handshake. */
  start(hooks: FuzzingHooks): void {
    this.hooks = hooks;
    const socket = net.connect({ host: this.options.host, port: this.options.port });
    this.socket = socket;
    // Autobahn sets TCP_NODELAY so every write (and every chop) leaves as its own segment.
    socket.setNoDelay(true);
    socket.on("connect", () => this.sendHandshake());
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.log("ERR", `socket error: ${err.message}`));
    socket.on("end", () => this.log("EOF", "peer closed its side (FIN)"));
    socket.on("close", () => {
      this.log(
        "TCP",
        this.droppedByMe ? "TCP closed (dropped by me)" : "TCP closed (dropped by peer)",
      );
      this.transportGone = true;
      if (!this.pumping) this.finalize();
    });
    if (this.openHandshakeTimeout > 0) {
      this.later(this.openHandshakeTimeout, () => this.onOpenHandshakeTimeout());
    }
    const deadline = this.options.hardDeadline;
    if (deadline !== undefined && deadline > 0) {
      this.later(deadline, () => {
        this.log("DL", `harness deadline of ${deadline} s reached`);
        if (this.state !== "closed") {
          this.wasClean = false;
          this.wasNotCleanReason = `harness deadline of ${deadline} s reached`;
          this.dropConnection(true);
        } else {
          this.socket?.destroy();
        }
      });
    }
  }

  // ---------------------------------------------------------------- logging

  elapsed(): number {
    return Math.round((performance.now() - this.t0) * 1000) / 1000;
  }

  log(kind: string, text: string): void {
    if (!this.createWirelog && (kind === "TO" || kind === "RO" || kind === "TF" || kind === "RF")) {
      return;
    }
    if (this.wirelog.length >= MAX_WIRELOG) return;
    this.wirelog.push({ t: this.elapsed(), kind, text });
  }

  /** Autobahn's enableWirelog: bulk cases switch octet/frame logging off while streaming. */
  enableWirelog(enable: boolean): void {
    if (enable !== this.createWirelog) {
      this.createWirelog = enable;
      this.log("WLM", enable ? "wire log enabled" : "wire log disabled");
    }
  }

  // ---------------------------------------------------------------- timers

  private later(seconds: number, fn: () => void): void {
    const timer = setTimeout(
      () => {
        this.timers.delete(timer);
        fn();
      },
      seconds * 1000 * (this.options.timeScale ?? 1),
    );
    this.timers.add(timer);
  }

  /** Fails the connection after `seconds` unless it is already closed (Autobahn killAfter). */
  killAfter(seconds: number): void {
    this.log("KL", `fail connection after ${seconds} s`);
    this.later(seconds, () => {
      if (this.state !== "closed") {
        this.log("KLE", "failing connection");
        this.failConnection();
      }
    });
  }

  /** Starts the closing handshake after `seconds` (Autobahn closeAfter). */
  closeAfter(seconds: number): void {
    this.log("TI", `close connection after ${seconds} s`);
    this.later(seconds, () => {
      if (this.state !== "closed") {
        this.log("TIE", "closing connection");
        this.sendClose();
      }
    });
  }

  /** Runs `fn` after `seconds` unless the connection is closed (Autobahn continueLater). */
  continueLater(seconds: number, fn: () => void, tag?: string): void {
    this.log("CT", `delay ${seconds} s for tag ${tag ?? "-"}`);
    this.later(seconds, () => {
      if (this.state !== "closed") {
        this.log("CTE", `delay timeout on tag ${tag ?? "-"}`);
        fn();
      }
    });
  }

  // ---------------------------------------------------------------- opening handshake

  private sendHandshake(): void {
    const { host, port } = this.options;
    const lines = [
      `GET ${this.options.path ?? "/"} HTTP/1.1`,
      "User-Agent: SwitchboardConformance/1.0",
      `Host: ${host}:${port}`,
      // Autobahn spells the token "WebSocket"; the server must compare case-insensitively
      // (RFC 6455 section 4.2.1).
      "Upgrade: WebSocket",
      "Connection: Upgrade",
      "Pragma: no-cache",
      "Cache-Control: no-cache",
      `Sec-WebSocket-Key: ${this.key}`,
    ];
    const offers = this.options.offers ?? [];
    if (offers.length > 0) {
      lines.push(`Sec-WebSocket-Extensions: ${offers.map(offerString).join(", ")}`);
    }
    lines.push("Sec-WebSocket-Version: 13");
    this.httpRequest = `${lines.join("\r\n")}\r\n\r\n`;
    this.write(Buffer.from(this.httpRequest, "latin1"));
  }

  private onData(chunk: Buffer): void {
    this.log("RO", `${chunk.length} octets: ${hexPreview(chunk)}`);
    if (this.state === "closed") return; // Autobahn ignores data after it dropped the connection
    if (this.state === "connecting") {
      this.handshakeBuffer = Buffer.concat([this.handshakeBuffer, chunk]);
      const end = this.handshakeBuffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      const rest = this.handshakeBuffer.subarray(end + 4);
      this.httpResponse = this.handshakeBuffer.subarray(0, end + 4).toString("latin1");
      this.handshakeBuffer = Buffer.alloc(0);
      const failure = this.processHandshakeResponse();
      if (failure !== null) {
        this.failHandshake(failure);
        return;
      }
      this.rx.push(rest);
      this.state = "open";
      this.connectionWasOpen = true;
      if (this.deflate) {
        this.deflater = new MessageDeflater(
          this.deflate.clientMaxWindowBits,
          this.deflate.clientNoContextTakeover,
        );
        this.inflater = new MessageInflater(
          this.deflate.serverMaxWindowBits,
          this.deflate.serverNoContextTakeover,
        );
      }
      this.log(
        "OPEN",
        `handshake complete${this.deflate ? `, extension: ${this.deflate.raw}` : ""}`,
      );
      this.hooks?.onOpen();
    } else {
      this.rx.push(chunk);
    }
    void this.pump();
  }

  /** Checks the 101 response like Autobahn's client; returns a failure reason or null. */
  private processHandshakeResponse(): string | null {
    const lines = this.httpResponse.split(/\r\n/);
    const statusLine = lines[0].trim();
    const headers = new Map<string, string>();
    const counts = new Map<string, number>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      const previous = headers.get(name);
      headers.set(name, previous === undefined ? value : `${previous}, ${value}`);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    const status = statusLine.split(/\s+/);
    if (status.length < 2) return `bad HTTP response status line '${statusLine}'`;
    if (status[0] !== "HTTP/1.1") return `unsupported HTTP version '${status[0]}'`;
    if (status[1] !== "101") return `WebSocket connection upgrade failed (${statusLine})`;
    // RFC 6455 section 4.1, client steps 2-4 of validating the server's response.
    const upgrade = headers.get("upgrade");
    if (upgrade === undefined) return "HTTP Upgrade header missing";
    if (upgrade.trim().toLowerCase() !== "websocket") return `Upgrade header is '${upgrade}'`;
    const connection = headers.get("connection");
    if (connection === undefined) return "HTTP Connection header missing";
    if (!connection.split(",").some((t) => t.trim().toLowerCase() === "upgrade")) {
      return `Connection header does not include 'upgrade': '${connection}'`;
    }
    const accept = headers.get("sec-websocket-accept");
    if (accept === undefined) return "Sec-WebSocket-Accept header missing";
    if ((counts.get("sec-websocket-accept") ?? 0) > 1) return "Sec-WebSocket-Accept appears twice";
    const expected = createHash("sha1")
      .update(this.key + WEBSOCKET_GUID)
      .digest("base64");
    if (accept !== expected) return `Sec-WebSocket-Accept is '${accept}', expected '${expected}'`;
    const extensions = headers.get("sec-websocket-extensions");
    if (extensions !== undefined) {
      if ((counts.get("sec-websocket-extensions") ?? 0) > 1) {
        return "Sec-WebSocket-Extensions appears more than once in the response";
      }
      for (const [name, params] of parseExtensionsHeader(extensions)) {
        if (name !== EXTENSION_NAME) return `server selected extension '${name}' we did not offer`;
        if (this.deflate) return "permessage-deflate selected more than once";
        if ((this.options.offers ?? []).length === 0) {
          return "server selected permessage-deflate, which we did not offer";
        }
        try {
          this.deflate = parseDeflateResponse(params, extensions);
        } catch (err) {
          return `invalid permessage-deflate response '${extensions}': ${(err as Error).message}`;
        }
      }
    }
    const protocol = headers.get("sec-websocket-protocol");
    if (protocol !== undefined) {
      if ((counts.get("sec-websocket-protocol") ?? 0) > 1) return "Sec-WebSocket-Protocol twice";
      if (protocol.trim() !== "")
        return `server selected subprotocol '${protocol}' we did not offer`;
    }
    return null;
  }

  private failHandshake(reason: string): void {
    this.log("HS", `failing opening handshake: ${reason}`);
    this.wasNotCleanReason = reason;
    this.dropConnection(true);
  }

  private onOpenHandshakeTimeout(): void {
    if (this.state !== "connecting") return;
    this.wasClean = false;
    this.wasNotCleanReason = "peer did not finish (in time) the opening handshake";
    this.wasOpenHandshakeTimeout = true;
    this.dropConnection(true);
  }

  // ---------------------------------------------------------------- receiving frames

  /** Processes buffered frames in order; awaits the inflater so events stay in wire order. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.state === "open" || this.state === "closing") {
        if (!(await this.processOne())) break;
      }
    } catch (err) {
      this.crash(`harness error while processing frames: ${(err as Error).stack ?? err}`);
    } finally {
      this.pumping = false;
    }
    if (this.transportGone) this.finalize();
  }

  /** Consumes one frame if it is complete; returns false when more octets are needed. */
  private async processOne(): Promise<boolean> {
    if (this.frame === null) {
      if (this.rx.length < 2) return false;
      const head = this.rx.peek(2);
      const masked = (head[1] & 0x80) !== 0;
      const len7 = head[1] & 0x7f;
      const headerLength = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
      if (this.rx.length < headerLength) return false;
      const header = Buffer.from(this.rx.take(headerLength));
      this.frame = this.checkHeader(header);
      if (this.state === "closed") return false;
    }
    const frame = this.frame;
    if (this.rx.length < frame.length) return false;
    let payload = this.rx.take(frame.length);
    if (frame.mask) payload = applyMask(payload, frame.mask);
    this.frame = null;
    await this.handleFrame(frame, payload);
    return true;
  }

  /** Parses a complete header and applies Autobahn's client-side checks (RFC 6455 5.2-5.5). */
  private checkHeader(header: Buffer): FrameInProgress {
    const fin = (header[0] & 0x80) !== 0;
    const rsv = (header[0] >> 4) & 7;
    const opcode = header[0] & 0x0f;
    const masked = (header[1] & 0x80) !== 0;
    const len7 = header[1] & 0x7f;
    // Section 5.2: RSV bits are 0 unless an extension gives them meaning (RFC 7692: RSV1).
    if (rsv !== 0 && !(this.deflate && rsv === 4)) {
      this.protocolViolation(`RSV = ${rsv} and no extension negotiated`);
    }
    // Section 5.1: a server MUST NOT mask frames it sends.
    if (masked) this.protocolViolation("masked server-to-client frame");
    if (opcode > 7) {
      // Section 5.5: control frames are not fragmented and carry at most 125 octets.
      if (!fin) this.protocolViolation("fragmented control frame");
      if (len7 > 125) this.protocolViolation("control frame with payload length > 125 octets");
      if (opcode !== OP_CLOSE && opcode !== OP_PING && opcode !== OP_PONG) {
        this.protocolViolation(`control frame using reserved opcode ${opcode}`);
      }
      if (opcode === OP_CLOSE && len7 === 1) {
        this.protocolViolation("received close control frame with payload len 1");
      }
      // RFC 7692 section 6.1: control frames are never compressed.
      if (this.deflate && rsv === 4) this.protocolViolation("received compressed control frame");
    } else {
      if (opcode > OP_BINARY) this.protocolViolation(`data frame using reserved opcode ${opcode}`);
      // Section 5.4: continuation frames only inside a fragmented message, and nothing else.
      if (!this.insideMessage && opcode === OP_CONTINUATION) {
        this.protocolViolation("received continuation data frame outside fragmented message");
      }
      if (this.insideMessage && opcode !== OP_CONTINUATION) {
        this.protocolViolation(
          "received non-continuation data frame while inside fragmented message",
        );
      }
      // RFC 7692 section 6.1: RSV1 is set on the first frame of a message only.
      if (this.deflate && rsv === 4 && this.insideMessage) {
        this.protocolViolation("received continuation data frame with compress bit set");
      }
    }
    let offset = 2;
    let length = len7;
    if (len7 === 126) {
      length = header.readUInt16BE(2);
      if (length < 126) {
        this.protocolViolation("invalid data frame length (not using minimal length encoding)");
      }
      offset += 2;
    } else if (len7 === 127) {
      const big = header.readBigUInt64BE(2);
      if (big > 0x7fffffffffffffffn) this.protocolViolation("invalid data frame length (>2^63)");
      if (big < 65536n) {
        this.protocolViolation("invalid data frame length (not using minimal length encoding)");
      }
      // Lengths beyond what a test can buffer are reported and the connection dropped.
      if (big > BigInt(1 << 30)) {
        this.crash(`server announced a frame of ${big} octets`);
        length = 0;
      } else length = Number(big);
      offset += 8;
    }
    const mask = masked ? header.subarray(offset, offset + 4) : null;
    return { opcode, fin, rsv, length, mask };
  }

  private async handleFrame(frame: FrameInProgress, payload: Buffer): Promise<void> {
    const summary = () =>
      `${opcodeName(frame.opcode)} fin=${frame.fin ? 1 : 0} rsv=${frame.rsv} len=${payload.length}` +
      `${frame.mask ? " MASKED" : ""} ${frame.opcode === OP_TEXT ? textPreview(payload) : hexPreview(payload)}`;
    if (frame.opcode > 7) {
      this.log("RF", summary());
      this.processControlFrame(frame.opcode, payload);
      return;
    }
    if (frame.opcode > OP_BINARY) {
      // A reserved data opcode was already answered with a protocol error; skip its payload.
      this.log("RF", summary());
      return;
    }
    if (!this.insideMessage) {
      this.insideMessage = true;
      this.messageCompressed = this.inflater !== null && frame.rsv === 4;
      if (this.messageCompressed) this.inflater?.start();
      this.messageText = frame.opcode === OP_TEXT;
      this.messageBinary = frame.opcode === OP_BINARY;
      this.messageChunks = [];
      this.utf8.reset();
    }
    let data = payload;
    if (this.messageCompressed && this.inflater) {
      try {
        data = await this.inflater.push(payload);
      } catch (err) {
        this.crash(`corrupt compressed data from server: ${(err as Error).message}`);
        return;
      }
    }
    this.incomingData(data);
    this.log("RF", summary());
    if (!frame.fin) return;
    if (this.messageCompressed && this.inflater) {
      try {
        this.incomingData(await this.inflater.end());
      } catch (err) {
        this.crash(`corrupt compressed data from server: ${(err as Error).message}`);
        return;
      }
    }
    // Section 8.1: a text message must also end on a code point boundary.
    if (this.messageText && this.utf8.valid && !this.utf8.complete) {
      this.invalidPayload("UTF-8 text message payload ended within Unicode code point");
    }
    this.insideMessage = false;
    if (!this.failedByMe) {
      this.hooks?.onMessage(Buffer.concat(this.messageChunks), this.messageBinary);
    }
    this.messageChunks = [];
  }

  private incomingData(data: Buffer): void {
    if (this.messageText && this.utf8.valid && !this.utf8.push(data)) {
      this.invalidPayload(
        `encountered invalid UTF-8 while processing text message at payload octet ${this.utf8.consumed - 1}`,
      );
    }
    if (!this.failedByMe && data.length > 0) this.messageChunks.push(data);
  }

  private processControlFrame(opcode: number, payload: Buffer): void {
    if (opcode === OP_CLOSE) {
      const code = payload.length > 1 ? payload.readUInt16BE(0) : null;
      const reason = payload.length > 2 ? payload.subarray(2) : null;
      this.onCloseFrame(code, reason);
    } else if (opcode === OP_PING) {
      // Section 5.5.3: answer with a pong carrying the same application data.
      if (this.state === "open") this.sendFrame({ opcode: OP_PONG, payload });
    } else if (opcode === OP_PONG) {
      this.hooks?.onPong(payload);
    }
  }

  /** Autobahn's onCloseFrame for a client (RFC 6455 sections 5.5.1, 7.1.5, 7.4). */
  private onCloseFrame(code: number | null, reason: Buffer | null): void {
    this.remoteCloseCode = null;
    this.remoteCloseReason = null;
    if (code !== null && !isAllowedCloseCode(code)) {
      this.protocolViolation(`invalid close code ${code}`);
    }
    if (reason !== null && !isValidUtf8(reason)) {
      this.invalidPayload("invalid close reason (non-UTF-8 payload)");
    }
    this.remoteCloseCode = code;
    this.remoteCloseReason = reason;
    if (this.state === "closing") {
      // The server answered our close: clean, and now the server should drop TCP (7.1.1).
      if (this.closeHandshakeTimer) {
        clearTimeout(this.closeHandshakeTimer);
        this.timers.delete(this.closeHandshakeTimer);
        this.closeHandshakeTimer = null;
      }
      this.wasClean = true;
      if (this.serverConnectionDropTimeout > 0) {
        this.later(this.serverConnectionDropTimeout, () => this.onServerConnectionDropTimeout());
      }
    } else if (this.state === "open") {
      // The server started the closing handshake: answer with 1000 and wait for it to drop TCP.
      this.wasClean = true;
      this.sendCloseFrame(1000, null, true);
    } else {
      this.wasClean = false;
    }
  }

  private onServerConnectionDropTimeout(): void {
    if (this.state === "closed") return;
    this.wasClean = false;
    this.wasNotCleanReason = "server did not drop TCP connection (in time)";
    this.wasServerConnectionDropTimeout = true;
    this.dropConnection(true);
  }

  private onCloseHandshakeTimeout(): void {
    this.closeHandshakeTimer = null;
    if (this.state === "closed") return;
    this.wasClean = false;
    this.wasNotCleanReason = "peer did not respond (in time) in closing handshake";
    this.wasCloseHandshakeTimeout = true;
    this.dropConnection(true);
  }

  // ---------------------------------------------------------------- failing and dropping

  /** Autobahn's _fail_connection with failByDrop off: close frame first, drop on a repeat. */
  failConnection(code = 1001, reason = "Going Away"): void {
    if (this.state === "closed") return;
    this.log("FAIL", `failing connection: ${code} ${reason}`);
    this.failedByMe = true;
    if (this.state !== "closing") {
      this.sendCloseFrame(code, truncateUtf8(reason, MAX_CLOSE_REASON), false);
    } else {
      this.dropConnection(false);
    }
  }

  private protocolViolation(reason: string): void {
    this.log("PV", `protocol violation: ${reason}`);
    this.failConnection(1002, reason);
  }

  private invalidPayload(reason: string): void {
    this.log("IP", `invalid payload: ${reason}`);
    this.failConnection(1007, reason);
  }

  /** Closes TCP from our side; `abort` resets at once, otherwise pending octets go out first. */
  dropConnection(abort: boolean): void {
    if (this.state === "closed") return;
    this.log("DROP", `dropping connection (${abort ? "abort" : "graceful"})`);
    this.droppedByMe = true;
    this.state = "closed";
    this.sendQueue.length = 0;
    const socket = this.socket;
    if (!socket) return;
    if (abort) socket.destroy();
    else socket.end(() => socket.destroy());
  }

  /** The harness itself cannot go on (an exception, corrupt deflate data): drop like Twisted. */
  private crash(reason: string): void {
    this.log("CRASH", reason);
    if (this.wasNotCleanReason === null) this.wasNotCleanReason = reason;
    this.wasClean = false;
    if (this.state !== "closed") {
      this.state = "closed";
      this.socket?.destroy();
    }
  }

  private finalize(): void {
    if (this.finalized) return;
    this.finalized = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.state = "closed";
    this.sendQueue.length = 0;
    this.rx.clear();
    this.deflater?.close();
    this.inflater?.close();
    if (!this.wasClean) {
      if (!this.droppedByMe && this.wasNotCleanReason === null) {
        this.wasNotCleanReason =
          "peer dropped the TCP connection without previous WebSocket closing handshake";
      }
      this.hooks?.onClose(
        false,
        1006,
        `connection was closed uncleanly (${this.wasNotCleanReason})`,
      );
    } else {
      this.hooks?.onClose(
        true,
        this.remoteCloseCode,
        this.remoteCloseReason?.toString("utf8") ?? "",
      );
    }
    try {
      this.hooks?.onConnectionLost();
    } finally {
      this.resolveClosed();
    }
  }

  // ---------------------------------------------------------------- sending

  private write(data: Buffer): void {
    const socket = this.socket;
    if (!socket || socket.destroyed || socket.writableEnded) {
      this.log("TO", `skipped write of ${data.length} octets: connection is closed`);
      return;
    }
    socket.write(data);
    this.log("TO", `${data.length} octets: ${hexPreview(data)}`);
  }

  /**
   * Writes now, or queues for one-write-per-turn delivery when chopping or synchronising, so
   * the octets reach the server in separate reads (Autobahn's sendData).
   */
  sendData(data: Buffer, sync = false, chopsize?: number): void {
    if (chopsize !== undefined && chopsize > 0) {
      for (let i = 0; i < data.length; i += chopsize) {
        this.sendQueue.push({ data: data.subarray(i, i + chopsize), sync: true });
      }
      this.trigger();
    } else if (sync || this.sendQueue.length > 0) {
      this.sendQueue.push({ data, sync });
      this.trigger();
    } else {
      this.write(data);
    }
  }

  private trigger(): void {
    if (this.triggered) return;
    this.triggered = true;
    this.sendNext();
  }

  private sendNext(): void {
    const item = this.sendQueue.shift();
    if (item === undefined) {
      this.triggered = false;
      return;
    }
    if (this.state !== "closed") this.write(item.data);
    // Re-enter the event loop before the next piece so the kernel sends this one on its own.
    setImmediate(() => this.sendNext());
  }

  /** Writes one frame exactly as asked, valid or not (Autobahn's sendFrame). */
  sendFrame(o: SendFrameOptions): void {
    const unit = o.payload ?? Buffer.alloc(0);
    const payload =
      o.payloadLen !== undefined ? repeatToLength(unit, o.payloadLen) : Buffer.from(unit);
    const mask = o.mask ? Buffer.from(o.mask) : randomMask();
    const fin = o.fin ?? true;
    const rsv = o.rsv ?? 0;
    const header = encodeHeader({ opcode: o.opcode, fin, rsv, length: payload.length, mask });
    const raw = Buffer.concat([header, applyMask(payload, mask)]);
    this.txFrameStats.set(o.opcode, (this.txFrameStats.get(o.opcode) ?? 0) + 1);
    this.log(
      "TF",
      `${opcodeName(o.opcode)} fin=${fin ? 1 : 0} rsv=${rsv} len=${payload.length}` +
        `${o.chopsize ? ` chop=${o.chopsize}` : ""}${o.sync ? " sync" : ""} ${
          o.opcode === OP_TEXT ? textPreview(payload) : hexPreview(payload)
        }`,
    );
    this.sendData(raw, o.sync ?? false, o.chopsize);
  }

  /**
   * Sends a message the way an application would (Autobahn's sendMessage): compressed when
   * permessage-deflate was negotiated, fragmented into `fragmentSize` (or autoFragmentSize)
   * octets. Like Autobahn, a payload that divides evenly ends with an empty final fragment.
   */
  async sendMessage(
    payload: Uint8Array,
    binary = false,
    fragmentSize?: number,
    sync = false,
  ): Promise<void> {
    if (this.state !== "open") return;
    const opcode = binary ? OP_BINARY : OP_TEXT;
    let data: Buffer = Buffer.from(payload);
    let compressed = false;
    if (this.deflater) {
      compressed = true;
      data = await this.deflater.compress(payload);
      if (this.state !== "open") return;
    }
    // 0 means unfragmented, both for an explicit size and for autoFragmentSize.
    const size = fragmentSize ?? Math.max(this.autoFragmentSize, 0);
    if (size === 0 || data.length <= size) {
      this.sendFrame({ opcode, payload: data, sync, rsv: compressed ? 4 : 0 });
      return;
    }
    let first = true;
    for (let i = 0; ; i += size) {
      const end = i + size;
      const done = end > data.length;
      const piece = data.subarray(i, Math.min(end, data.length));
      this.sendFrame({
        opcode: first ? opcode : OP_CONTINUATION,
        payload: piece,
        fin: done,
        sync,
        rsv: first && compressed ? 4 : 0,
      });
      first = false;
      if (done) break;
    }
  }

  /** Streaming send, step 1 (Autobahn's beginMessage). */
  beginMessage(binary = false): void {
    if (this.state !== "open") return;
    this.streamOpcode = binary ? OP_BINARY : OP_TEXT;
    this.streamFirstFrame = true;
  }

  /** Streaming send, step 2: a non-final frame header of `length` octets, payload to follow. */
  beginMessageFrame(length: number): void {
    if (this.state !== "open") return;
    this.streamMask = randomMask();
    this.streamOffset = 0;
    const opcode = this.streamFirstFrame ? this.streamOpcode : OP_CONTINUATION;
    this.streamFirstFrame = false;
    const header = encodeHeader({ opcode, fin: false, rsv: 0, length, mask: this.streamMask });
    this.log(
      "TF",
      `${opcodeName(opcode)} fin=0 rsv=0 len=${length} (header only, payload follows)`,
    );
    this.sendData(header);
  }

  /** Streaming send, step 3: part of the current frame's payload, masked in place. */
  sendMessageFrameData(data: Uint8Array, sync = false): void {
    if (this.state !== "open") return;
    const masked = applyMask(data, this.streamMask, this.streamOffset);
    this.streamOffset += data.length;
    this.log("TF", `(frame data, ${data.length} octets) ${hexPreview(data)}`);
    this.sendData(masked, sync);
  }

  /** Streaming send, step 4: an empty final continuation frame. */
  endMessage(): void {
    if (this.state !== "open") return;
    this.sendFrame({ opcode: OP_CONTINUATION, payload: Buffer.alloc(0), fin: true });
  }

  /** Sends a close frame and moves to CLOSING (Autobahn's sendCloseFrame, no validation). */
  sendCloseFrame(
    code: number | null = null,
    reason: Uint8Array | null = null,
    isReply = false,
  ): void {
    if (this.state !== "open") {
      this.log("CL", `ignoring sendCloseFrame in state ${this.state}`);
      return;
    }
    const parts: Buffer[] = [];
    if (code !== null) {
      const c = Buffer.alloc(2);
      c.writeUInt16BE(code & 0xffff);
      parts.push(c);
    }
    if (reason !== null) parts.push(Buffer.from(reason));
    this.sendFrame({ opcode: OP_CLOSE, payload: Buffer.concat(parts) });
    this.state = "closing";
    this.closedByMe = !isReply;
    this.localCloseCode = code;
    this.localCloseReason = reason === null ? null : Buffer.from(reason);
    if (this.closedByMe && this.closeHandshakeTimeout > 0) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.onCloseHandshakeTimeout();
      }, this.closeHandshakeTimeout * 1000);
      this.timers.add(timer);
      this.closeHandshakeTimer = timer;
    }
  }

  /** Starts the closing handshake with an optional code and reason (Autobahn's sendClose). */
  sendClose(code?: number, reason?: string): void {
    const reasonBytes = reason === undefined ? null : truncateUtf8(reason, MAX_CLOSE_REASON);
    this.sendCloseFrame(code ?? null, reasonBytes, false);
  }
}

/** UTF-8 encoding of `text`, cut back to at most `max` octets on a code point boundary. */
export function truncateUtf8(text: string, max: number): Buffer {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= max) return bytes;
  let end = max;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}
