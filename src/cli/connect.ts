import { STATUS_CODES } from "node:http";
import { clearLine, createInterface, cursorTo, type Interface } from "node:readline";
import { StringDecoder } from "node:string_decoder";
import { parseArgs } from "node:util";
import { connect } from "../client/connect.js";
import type { WebSocketConnection } from "../connection/connection.js";
import {
  CloseCode,
  isValidWireCloseCode,
  MAX_CLOSE_REASON_BYTES,
  MAX_CONTROL_PAYLOAD,
} from "../protocol/constants.js";
import { HandshakeError } from "../protocol/handshake.js";
import type { CliIo } from "./main.js";
import { describeParseError } from "./parse-error.js";

/**
 * `switchboard connect <url>`: an interactive WebSocket client for poking at a service. Three
 * layers: the command line and each input line are parsed by pure functions (parseConnectArgs,
 * parseInputLine) into values; a Session acts on those values over one connection and the
 * process's streams.
 */

/** The close handshake may take this long before the connection drops the socket. */
const CLOSE_TIMEOUT_MS = 5000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Outgoing bytes above which reading piped input pauses until the socket drains. */
const INPUT_HIGH_WATER_MARK = 1024 * 1024;
/** The largest delay setTimeout accepts. */
const MAX_MS = 2 ** 31 - 1;

export const CONNECT_COMMANDS_HELP = `Commands (lines that start with "/"):
  /ping [text]            Send a ping; the pong is noted on stderr
  /pong [text]            Send an unsolicited pong (a one-way heartbeat)
  /binary <hex>           Send a binary message, such as /binary 01 ff
  /json <value>           Check that <value> is JSON, then send it as text
  /close [code] [reason]  Start the closing handshake (code 1000 by default)
  /quit                   Close with 1000 and exit
  /help                   List these commands
  //text                  Send "/text" as a text message
`;

export const CONNECT_HELP = `Usage: switchboard connect <url> [options]

Opens a WebSocket connection to <url> (ws:// or wss://) and sends each line
of standard input as a text message. Received messages go to stdout, one per
line: text as it is, binary as "<binary N bytes> DATA", prefixed with "< "
when stdout is a terminal. The status, pongs, the close and errors go to
stderr, so stdout can be piped.

Options:
  -p, --protocol <name>     Offer a subprotocol (repeatable)
  -H, --header <header>     Add a request header "Name: value" (repeatable)
      --deflate             Offer permessage-deflate (default, as browsers do)
      --no-deflate          Do not offer permessage-deflate
      --connect-timeout <ms>
                            Give up on the opening handshake after <ms>
                            (default ${DEFAULT_CONNECT_TIMEOUT_MS})
  -x, --execute <line>      Once connected, handle <line> as if typed
                            (repeatable), then read stdin as usual
      --wait <ms>           Do not read stdin: after the --execute lines,
                            print what arrives for <ms>, then close with 1000
      --binary-format <fmt> Show binary messages as hex or base64 (default hex)
  -h, --help                Show this help and exit

${CONNECT_COMMANDS_HELP}
The end of input (Ctrl-D, or the end of piped input) closes with 1000 once
every line before it was sent. Ctrl-C closes with 1001; a second Ctrl-C drops
the connection. The closing handshake may take up to ${CLOSE_TIMEOUT_MS / 1000} s.

Exit status:
  0  the connection closed cleanly: the server closed it with 1000, 1001 or
     no code, or answered our close frame with its code
  1  the connection failed or was dropped, or the server closed it with any
     other code
  2  the command line is wrong
`;

// ─────────────────────────── the command line ───────────────────────────

export type BinaryFormat = "hex" | "base64";

export interface ConnectArgs {
  url: URL;
  protocols: string[];
  headers: Record<string, string>;
  deflate: boolean;
  connectTimeoutMs: number;
  execute: string[];
  /** Set by --wait: stdin is not read, and the connection closes this long after --execute. */
  waitMs: number | undefined;
  binaryFormat: BinaryFormat;
}

export type ConnectArgsResult =
  | { ok: true; help: true }
  | { ok: true; help: false; args: ConnectArgs }
  | { ok: false; code: "SB_ERR_USAGE"; message: string };

const OPTIONS = {
  protocol: { type: "string", short: "p", multiple: true },
  header: { type: "string", short: "H", multiple: true },
  deflate: { type: "boolean" },
  "no-deflate": { type: "boolean" },
  "connect-timeout": { type: "string" },
  execute: { type: "string", short: "x", multiple: true },
  wait: { type: "string" },
  "binary-format": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

function parseFlags(args: string[]) {
  return parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: true, tokens: true });
}

// tchar (RFC 7230 section 3.2.6): a header name is a token.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// field-value (RFC 7230 section 3.2): visible characters, obs-text, spaces and tabs.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Parses the arguments after `connect`. Never throws; a wrong command line is a value. */
export function parseConnectArgs(argv: readonly string[]): ConnectArgsResult {
  const usage = (problem: string): ConnectArgsResult => ({
    ok: false,
    code: "SB_ERR_USAGE",
    message: `switchboard: ${problem} (see 'switchboard connect --help')`,
  });

  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags([...argv]);
  } catch (error) {
    return usage(describeParseError(error));
  }
  const { values, positionals, tokens } = parsed;
  if (values.help) return { ok: true, help: true };

  if (positionals.length !== 1) {
    return usage(
      positionals.length === 0
        ? "connect needs a URL, such as ws://127.0.0.1:8080/echo"
        : `connect takes one URL, got ${positionals.length}: ${positionals.join(" ")}`,
    );
  }
  const url = parseUrl(positionals[0]);
  if (typeof url === "string") return usage(url);

  const headers: Record<string, string> = {};
  for (const raw of values.header ?? []) {
    const colon = raw.indexOf(":");
    const name = colon === -1 ? "" : raw.slice(0, colon).trim();
    const value = raw.slice(colon + 1).trim();
    if (!TOKEN.test(name)) return usage(`--header: expected "Name: value", got "${raw}"`);
    if (!FIELD_VALUE.test(value)) {
      return usage(`--header: the value of ${name} has characters a header may not carry`);
    }
    // Repeated names are combined as a list (RFC 7230 section 3.2.2).
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase()) ?? name;
    headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
  }

  const connectTimeoutMs = parseMs(values["connect-timeout"], DEFAULT_CONNECT_TIMEOUT_MS, 1);
  if (connectTimeoutMs === undefined) {
    return usage(`--connect-timeout: expected milliseconds from 1 to ${MAX_MS}`);
  }
  let waitMs: number | undefined;
  if (values.wait !== undefined) {
    waitMs = parseMs(values.wait, 0, 0);
    if (waitMs === undefined) return usage(`--wait: expected milliseconds from 0 to ${MAX_MS}`);
  }
  const binaryFormat = values["binary-format"] ?? "hex";
  if (binaryFormat !== "hex" && binaryFormat !== "base64") {
    return usage(`--binary-format: expected hex or base64, got "${binaryFormat}"`);
  }

  // The later of --deflate and --no-deflate wins, so an alias can be overridden.
  let deflate = true;
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    if (token.name === "deflate") deflate = true;
    if (token.name === "no-deflate") deflate = false;
  }

  return {
    ok: true,
    help: false,
    args: {
      url,
      protocols: values.protocol ?? [],
      headers,
      deflate,
      connectTimeoutMs,
      execute: values.execute ?? [],
      waitMs,
      binaryFormat,
    },
  };
}

/** The URL, or what is wrong with it. */
function parseUrl(raw: string): URL | string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return `not a URL: "${raw}" (expected ws://host[:port]/path or wss://...)`;
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    return `"${raw}" is not a WebSocket URL: it must start with ws:// or wss://`;
  }
  // RFC 6455 section 3: fragment identifiers MUST NOT be used in WebSocket URIs.
  if (url.hash !== "") return `"${raw}": WebSocket URLs have no #fragment`;
  return url;
}

function parseMs(raw: string | undefined, fallback: number, min: number): number | undefined {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) return undefined;
  const ms = Number(raw);
  return ms >= min && ms <= MAX_MS ? ms : undefined;
}

// ─────────────────────────── input lines ───────────────────────────

/** What one line of input asks for. */
export type InputAction =
  | { kind: "text"; text: string }
  | { kind: "binary"; data: Buffer }
  | { kind: "ping"; data: Buffer }
  | { kind: "pong"; data: Buffer }
  | { kind: "close"; code: number; reason: string }
  | { kind: "quit" }
  | { kind: "help" }
  | {
      kind: "invalid";
      code: "SB_ERR_UNKNOWN_COMMAND" | "SB_ERR_COMMAND_ARGUMENT";
      message: string;
    };

const HEX = /^(?:[0-9a-fA-F]{2})+$/;

/**
 * Reads one input line: text to send, or a "/" command. Pure, so every rule is tested without a
 * socket. A payload that the protocol would refuse is "invalid" here, before anything is sent.
 */
export function parseInputLine(line: string): InputAction {
  if (line.startsWith("//")) return { kind: "text", text: line.slice(1) };
  if (!line.startsWith("/")) return { kind: "text", text: line };

  const space = line.search(/\s/);
  const name = space === -1 ? line.slice(1) : line.slice(1, space);
  // One separator is taken off; the rest is the argument as typed (a ping's text keeps spaces).
  const rest = space === -1 ? "" : line.slice(space + 1);
  const invalid = (message: string): InputAction => ({
    kind: "invalid",
    code: "SB_ERR_COMMAND_ARGUMENT",
    message: `/${name}: ${message}`,
  });

  switch (name) {
    case "ping":
    case "pong": {
      const data = Buffer.from(rest);
      // Control frames carry at most 125 bytes (RFC 6455 section 5.5).
      if (data.length > MAX_CONTROL_PAYLOAD) {
        return invalid(
          `at most ${MAX_CONTROL_PAYLOAD} bytes (RFC 6455 section 5.5), got ${data.length}`,
        );
      }
      return { kind: name, data };
    }
    case "binary": {
      const hex = rest.replace(/\s+/g, "");
      if (!HEX.test(hex)) {
        return invalid("expected hex bytes, such as /binary 01ff or /binary 01 ff");
      }
      return { kind: "binary", data: Buffer.from(hex, "hex") };
    }
    case "json": {
      if (rest.trim() === "") {
        return invalid('expected a JSON value, such as /json {"type":"hello"}');
      }
      try {
        JSON.parse(rest);
      } catch (error) {
        return invalid(`not JSON: ${(error as Error).message}`);
      }
      return { kind: "text", text: rest };
    }
    case "close":
      return parseClose(rest.trim(), invalid);
    case "quit":
    case "help":
      return rest.trim() === "" ? { kind: name } : invalid("takes no argument");
    default:
      return {
        kind: "invalid",
        code: "SB_ERR_UNKNOWN_COMMAND",
        message: `unknown command /${name} (try /help; start the line with // to send it as text)`,
      };
  }
}

function parseClose(args: string, invalid: (message: string) => InputAction): InputAction {
  if (args === "") return { kind: "close", code: CloseCode.Normal, reason: "" };
  const [, codeText, reason = ""] = /^(\S+)(?:\s+(.*))?$/s.exec(args) ?? [];
  const code = Number(codeText);
  // Only the codes RFC 6455 section 7.4 lets an endpoint send: 1005, 1006 and 1015 are for
  // reporting only, and 1004 and 1016-2999 are reserved.
  if (!/^\d+$/.test(codeText ?? "") || !isValidWireCloseCode(code)) {
    return invalid(
      `${codeText} is not a code that may be sent: use 1000-1003, 1007-1014 or 3000-4999 ` +
        "(RFC 6455 section 7.4)",
    );
  }
  // The reason shares the control frame's 125 bytes with the code (section 5.5.1).
  const length = Buffer.byteLength(reason);
  if (length > MAX_CLOSE_REASON_BYTES) {
    return invalid(`the reason may be at most ${MAX_CLOSE_REASON_BYTES} bytes, got ${length}`);
  }
  return { kind: "close", code, reason };
}

// ─────────────────────────── output ───────────────────────────

/** A received message as one line of output. */
export function formatMessage(data: Buffer, isBinary: boolean, format: BinaryFormat): string {
  // Text was validated as UTF-8 by the protocol core (RFC 6455 section 8.1).
  return isBinary ? formatBinary(data, format) : data.toString("utf8");
}

function formatBinary(data: Buffer, format: BinaryFormat): string {
  const size = `<binary ${data.length} byte${data.length === 1 ? "" : "s"}>`;
  return data.length === 0 ? size : `${size} ${data.toString(format)}`;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
// C0 controls other than tab, and DEL: shown as bytes, so a payload cannot move the cursor.
const CONTROL = /[^\t\x20-\x7e\u00a0-\uffff]/;

/** A ping or pong payload: as text when it is printable UTF-8, otherwise as bytes. */
function formatControlPayload(data: Buffer, format: BinaryFormat): string {
  if (data.length === 0) return "";
  try {
    const text = UTF8.decode(data);
    if (!CONTROL.test(text)) return `: ${text}`;
  } catch {
    // Not UTF-8: show the bytes.
  }
  return `: ${formatBinary(data, format)}`;
}

/** "connection refused" reads better than the errno alone; the code still follows. */
const SYSTEM_REASONS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset during the opening handshake",
  ENOTFOUND: "unknown host",
  EAI_AGAIN: "the host name could not be resolved",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "timed out",
};

/** One line that says why the connection was not opened, with the error's stable code. */
export function describeConnectFailure(error: unknown, args: ConnectArgs): string {
  const target = args.url.href;
  if (error instanceof HandshakeError) {
    if (error.code === "WS_ERR_HANDSHAKE_STATUS") {
      const text = STATUS_CODES[error.status];
      return (
        `switchboard: ${target} refused the WebSocket upgrade: HTTP ${error.status}` +
        `${text === undefined ? "" : ` ${text}`} (${error.code})`
      );
    }
    const problem =
      error.code === "WS_ERR_HANDSHAKE_TIMEOUT"
        ? `no answer within ${args.connectTimeoutMs} ms`
        : `invalid handshake response: ${error.message}`;
    return `switchboard: cannot connect to ${target}: ${problem} (${error.code})`;
  }
  // With several addresses for a host (autoSelectFamily), node reports an AggregateError whose
  // message is empty; the first attempt's error says what happened.
  const first =
    error instanceof AggregateError && error.errors.length > 0 && error.message === ""
      ? error.errors[0]
      : error;
  const code = (first as { code?: unknown })?.code ?? (error as { code?: unknown })?.code;
  const known = typeof code === "string" ? SYSTEM_REASONS[code] : undefined;
  const reason = known ?? firstLine(first);
  const suffix = typeof code === "string" && !reason.includes(code) ? ` (${code})` : "";
  return `switchboard: cannot connect to ${target}: ${reason}${suffix}`;
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n", 1)[0].trim() || "unknown error";
}

// ─────────────────────────── the session ───────────────────────────

interface Output {
  write(text: string): unknown;
  isTTY?: boolean;
}

/** The streams `connect` uses; main passes the process's. */
export interface ConnectIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: Output;
  stderr: Output;
  /** Where SIGINT and SIGTERM arrive; without it, interrupts are not handled. */
  signals?: CliIo["signals"];
}

/**
 * Runs `switchboard connect` and resolves with the exit code: 0 when the connection closed
 * cleanly, 1 when it failed or the server closed it with an error code, 2 for a wrong command
 * line. Resolves only once the connection is closed.
 */
export async function runConnect(argv: readonly string[], io: ConnectIo): Promise<number> {
  const parsed = parseConnectArgs(argv);
  if (!parsed.ok) {
    io.stderr.write(`${parsed.message}\n`);
    return 2;
  }
  if (parsed.help) {
    io.stdout.write(CONNECT_HELP);
    return 0;
  }
  const { args } = parsed;

  let connection: WebSocketConnection;
  try {
    connection = await connect(args.url, {
      protocols: args.protocols,
      headers: args.headers,
      perMessageDeflate: args.deflate,
      handshakeTimeout: args.connectTimeoutMs,
      closeTimeout: CLOSE_TIMEOUT_MS,
      heartbeat: false,
      // Our own output never pauses reading from the server: against an echo service, both
      // sides pausing reads while their output backs up would wait on each other until the
      // close timeout. What we send is bounded by pausing stdin instead (startLineReader).
      highWaterMark: Number.POSITIVE_INFINITY,
    });
  } catch (error) {
    // The client refuses a request it cannot make (a header the handshake owns, a subprotocol
    // that is not a token) with a TypeError: for us that is a wrong command line.
    if (error instanceof TypeError) {
      io.stderr.write(`switchboard: ${firstLine(error)} (see 'switchboard connect --help')\n`);
      return 2;
    }
    io.stderr.write(`${describeConnectFailure(error, args)}\n`);
    return 1;
  }
  return new Session(connection, args, io).run();
}

/** The close codes with which a server ends a connection without anything having gone wrong. */
const CLEAN_CLOSE = new Set<number>([CloseCode.Normal, CloseCode.GoingAway, CloseCode.NoStatus]);

/** One open connection, the user's input, and what gets printed. */
class Session {
  private readonly connection: WebSocketConnection;
  private readonly args: ConnectArgs;
  private readonly io: ConnectIo;
  /** Messages get a "< " prefix only for a person reading them. */
  private readonly prefix: string;
  private prompt: Interface | null = null;
  private stopInput: () => void = () => {};
  private waitTimer: NodeJS.Timeout | null = null;
  /** The code of the close frame we sent, which the server's answer echoes (section 5.5.1). */
  private sentCloseCode: number | undefined;
  private interrupts = 0;
  /** Reading from the socket waits for stdout to drain. */
  private outputBlocked = false;

  constructor(connection: WebSocketConnection, args: ConnectArgs, io: ConnectIo) {
    this.connection = connection;
    this.args = args;
    this.io = io;
    this.prefix = io.stdout.isTTY === true ? "< " : "";
  }

  async run(): Promise<number> {
    const { connection, args } = this;
    const closed = new Promise<number>((resolve) => {
      connection.once("close", (code, reason) => {
        this.stopInput();
        this.note(`closed: ${code}${describeClose(code, reason)}`);
        resolve(this.exitCode(code));
      });
    });
    connection.on("message", (data, isBinary) => this.print(data, isBinary));
    connection.on("ping", (data) =>
      this.note(`ping${formatControlPayload(data, args.binaryFormat)}`),
    );
    connection.on("pong", (data) =>
      this.note(`pong${formatControlPayload(data, args.binaryFormat)}`),
    );
    connection.on("error", (error) => this.note(`error: ${error.message} (${error.code})`));
    const stdout = this.io.stdout as Partial<NodeJS.WritableStream>;
    stdout.on?.("error", this.onOutputError);
    this.io.signals?.on("SIGINT", this.onInterrupt);
    this.io.signals?.on("SIGTERM", this.onInterrupt);

    this.note(
      `connected to ${args.url.href} (protocol: ${connection.protocol || "none"}, ` +
        `extensions: ${connection.extensions || "none"})`,
    );
    for (const line of args.execute) this.handle(line);
    if (args.waitMs !== undefined) {
      this.waitTimer = setTimeout(() => this.closeConnection(CloseCode.Normal), args.waitMs);
    } else if (connection.readyState === "open") {
      this.startInput();
    }

    try {
      return await closed;
    } finally {
      this.stopInput();
      if (this.waitTimer !== null) clearTimeout(this.waitTimer);
      stdout.off?.("error", this.onOutputError);
      this.io.signals?.off("SIGINT", this.onInterrupt);
      this.io.signals?.off("SIGTERM", this.onInterrupt);
    }
  }

  /**
   * The code is the one the server sent (section 7.1.5): an echo of ours when we closed first,
   * its own when it did, even if our close frames crossed.
   */
  private exitCode(code: number): number {
    return CLEAN_CLOSE.has(code) || code === this.sentCloseCode ? 0 : 1;
  }

  /** Acts on one line of input. */
  private handle(line: string): void {
    const action = parseInputLine(line);
    const { connection } = this;
    switch (action.kind) {
      case "invalid":
        this.note(action.message);
        return;
      case "help":
        this.note(CONNECT_COMMANDS_HELP.trimEnd());
        return;
      case "quit":
        this.stopInput();
        this.closeConnection(CloseCode.Normal);
        return;
      case "close":
        this.closeConnection(action.code, action.reason);
        return;
    }
    if (connection.readyState !== "open") {
      this.note(`not sent: the connection is ${connection.readyState}`);
      return;
    }
    switch (action.kind) {
      case "text":
        connection.send(action.text);
        return;
      case "binary":
        connection.send(action.data, { binary: true });
        return;
      case "ping":
        connection.ping(action.data);
        return;
      case "pong":
        connection.pong(action.data);
        return;
    }
  }

  /**
   * Starts the closing handshake (RFC 6455 section 7.1.2). The close frame is queued after every
   * message already sent, and the connection's close timeout bounds the wait for the answer.
   */
  private closeConnection(code: number, reason = ""): void {
    if (this.connection.readyState !== "open") return;
    this.sentCloseCode = code;
    this.connection.close(code, reason);
  }

  private readonly onInterrupt = (): void => {
    this.interrupts += 1;
    if (this.interrupts > 1 || this.connection.readyState !== "open") {
      this.note("dropping the connection");
      this.connection.terminate();
      return;
    }
    this.stopInput();
    this.note("closing (interrupt again to drop the connection)");
    // The user is leaving, as a browser navigating away does (RFC 6455 section 7.4.1).
    this.closeConnection(CloseCode.GoingAway);
  };

  /** Whoever read our output is gone (a closed pipe): nothing more can be shown. */
  private readonly onOutputError = (): void => {
    this.stopInput();
    this.closeConnection(CloseCode.GoingAway);
  };

  private startInput(): void {
    const { stdin, stderr } = this.io;
    if (stdin.isTTY === true && isStream(stderr)) this.startPrompt(stdin, stderr);
    else this.startLineReader(stdin);
  }

  /** A person at a terminal: readline, with the prompt on stderr so stdout stays clean. */
  private startPrompt(stdin: NodeJS.ReadableStream, output: NodeJS.WritableStream): void {
    const rl = createInterface({ input: stdin, output, terminal: true, prompt: "> " });
    this.prompt = rl;
    let stopped = false;
    let closed = false;
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      this.prompt = null;
      if (!closed) rl.close();
      // Take the prompt away, so what follows starts its own line.
      clearLine(output, 0);
      cursorTo(output, 0);
      stdin.pause();
    };
    this.stopInput = stop;
    rl.on("line", (line) => {
      this.handle(line);
      if (!stopped) rl.prompt();
    });
    // Ctrl-D: the end of input.
    rl.on("close", () => {
      closed = true;
      if (stopped) return;
      stop();
      this.closeConnection(CloseCode.Normal);
    });
    // In raw mode Ctrl-C reaches readline, not the process.
    rl.on("SIGINT", this.onInterrupt);
    rl.prompt();
  }

  /**
   * Piped input: split into lines ("\n" or "\r\n") as it arrives. Each line is handled at once,
   * so the end of input finds everything before it already queued, and the close frame follows
   * it. Reading pauses while the socket is backed up.
   */
  private startLineReader(stdin: NodeJS.ReadableStream): void {
    const decoder = new StringDecoder("utf8");
    let pending = "";
    let stopped = false;
    const handleLines = (text: string): void => {
      pending += text;
      let start = 0;
      // Bounded by the newlines in what has arrived.
      for (let newline = pending.indexOf("\n"); newline !== -1 && !stopped; ) {
        const end = newline > start && pending[newline - 1] === "\r" ? newline - 1 : newline;
        this.handle(pending.slice(start, end));
        start = newline + 1;
        newline = pending.indexOf("\n", start);
      }
      pending = pending.slice(start);
    };
    const onData = (chunk: Buffer | string): void => {
      handleLines(typeof chunk === "string" ? chunk : decoder.write(chunk));
      if (!stopped && this.connection.bufferedAmount > INPUT_HIGH_WATER_MARK) {
        stdin.pause();
        this.connection.once("drain", onDrain);
      }
    };
    const onDrain = (): void => {
      if (!stopped) stdin.resume();
    };
    const onEnd = (): void => {
      handleLines(decoder.end());
      if (!stopped && pending !== "") this.handle(pending);
      stop();
      this.closeConnection(CloseCode.Normal);
    };
    const onError = (error: Error): void => {
      this.note(`error: cannot read input: ${error.message}`);
      onEnd();
    };
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      stdin.off("data", onData);
      stdin.off("end", onEnd);
      stdin.off("error", onError);
      this.connection.off("drain", onDrain);
      // A paused stdin no longer holds the process open once the connection is gone.
      stdin.pause();
    };
    this.stopInput = stop;
    stdin.on("data", onData);
    stdin.on("end", onEnd);
    stdin.on("error", onError);
    stdin.resume();
  }

  private print(data: Buffer, isBinary: boolean): void {
    const text = `${this.prefix}${formatMessage(data, isBinary, this.args.binaryFormat)}\n`;
    this.aroundPrompt(() => {
      const ok = this.io.stdout.write(text);
      // Backpressure from a slow reader of our output reaches the server: stop reading the
      // socket until stdout drains.
      const stdout = this.io.stdout as Partial<NodeJS.WritableStream>;
      if (ok === false && !this.outputBlocked && stdout.once !== undefined) {
        this.outputBlocked = true;
        this.connection.pause();
        stdout.once("drain", () => {
          this.outputBlocked = false;
          this.connection.resume();
        });
      }
    });
  }

  /** Status and diagnostics: stderr, one line each. */
  private note(text: string): void {
    this.aroundPrompt(() => this.io.stderr.write(`${text}\n`));
  }

  /** Output while a person is typing: clear the prompt line, print, then redraw it. */
  private aroundPrompt(write: () => void): void {
    const rl = this.prompt;
    const output = this.io.stderr;
    if (rl === null || !isStream(output)) {
      write();
      return;
    }
    clearLine(output, 0);
    cursorTo(output, 0);
    write();
    rl.prompt(true);
  }
}

function describeClose(code: number, reason: string): string {
  if (reason !== "") return ` ${reason}`;
  // 1005 and 1006 are never sent; they report what happened (RFC 6455 section 7.4.1).
  if (code === CloseCode.NoStatus) return " (no status code)";
  if (code === CloseCode.Abnormal) return " (the connection dropped without a close frame)";
  return "";
}

function isStream(output: Output): output is Output & NodeJS.WritableStream {
  return typeof (output as { on?: unknown }).on === "function";
}
