// `switchboard connect` end to end: the real CLI as a child process, driven line by line through
// its stdin, against a Switchboard server in this process over loopback. The pure parts (the
// command line, input lines) and runConnect with injected streams are tested in process.
import { type ChildProcess, spawn } from "node:child_process";
import { createServer as createTcpServer, type Socket } from "node:net";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import {
  CONNECT_HELP,
  type ConnectArgs,
  parseConnectArgs,
  parseInputLine,
  runConnect,
} from "../../src/cli/connect.js";
import { HELP } from "../../src/cli/main.js";
import type { WebSocketConnection } from "../../src/connection/connection.js";
import { createServer, type WebSocketServer } from "../../src/server/server.js";
import { within } from "../connection/duplex-pair.js";

const projectRoot = new URL("../../", import.meta.url).pathname;
const mainScript = join(projectRoot, "src/cli/main.ts");
const WAIT = 10_000;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Accepted {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The close code and reason the server received (RFC 6455 section 7.1.5). */
  closed: Promise<[code: number, reason: string]>;
}

/**
 * A Switchboard server that echoes every message, except on /fail where the first message makes
 * it close with 1011; /missing is refused with 404 before the upgrade. It selects the "chat"
 * subprotocol when offered and accepts permessage-deflate.
 */
async function startServer(): Promise<{ server: WebSocketServer; accepted: Accepted[] }> {
  const server = await createServer({
    perMessageDeflate: true,
    closeTimeout: 1000,
    heartbeat: false,
    selectProtocol: (offered) => (offered.includes("chat") ? "chat" : undefined),
    verify: (req) => (req.url === "/missing" ? { status: 404 } : true),
  });
  const accepted: Accepted[] = [];
  server.on("connection", (ws: WebSocketConnection, req) => {
    const path = req.url ?? "/";
    const closed = new Promise<[number, string]>((resolve) => {
      ws.once("close", (code, reason) => resolve([code, reason]));
    });
    accepted.push({ path, headers: { ...req.headers }, closed });
    ws.on("error", () => undefined);
    ws.on("message", (data, isBinary) => {
      if (path === "/fail") ws.close(1011, "boom");
      else ws.send(data, { binary: isBinary });
    });
  });
  cleanups.push(() => within(server.close(), WAIT, "the server to close"));
  return { server, accepted };
}

/** `switchboard connect ...args` as a child process, with its output collected. */
class Cli {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  private exitCode: number | null | undefined;
  private readonly done: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, ["--import", "tsx", mainScript, "connect", ...args], {
      cwd: projectRoot,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child.stdout?.on("data", (chunk: Buffer) => {
      this.stdout += chunk.toString();
    });
    this.child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    // 'close' rather than 'exit': it waits for stdout and stderr to be read to their end.
    this.done = new Promise((resolve) => {
      this.child.once("close", (code) => {
        this.exitCode = code;
        resolve(code);
      });
    });
    cleanups.push(() => {
      if (this.exitCode === undefined) this.child.kill("SIGKILL");
    });
  }

  send(line: string): void {
    this.child.stdin?.write(`${line}\n`);
  }

  endInput(): void {
    this.child.stdin?.end();
  }

  /** Waits until `text` shows on the stream; fails early if the process ended without it. */
  async waitFor(stream: "stdout" | "stderr", text: string): Promise<void> {
    const deadline = Date.now() + WAIT;
    // Bounded by the deadline; each turn sleeps a few milliseconds.
    while (!this[stream].includes(text)) {
      if (this.exitCode !== undefined || Date.now() > deadline) {
        throw new Error(
          `no ${JSON.stringify(text)} on ${stream} (exit ${this.exitCode})\n` +
            `stdout: ${this.stdout}\nstderr: ${this.stderr}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  exited(): Promise<number | null> {
    return within(this.done, WAIT, `the CLI to exit; stderr: ${this.stderr}`);
  }
}

/** Runs the CLI to its end without input and returns what it printed. */
async function runToEnd(
  args: string[],
): Promise<{ code: number | null; out: string; err: string }> {
  const cli = new Cli(args);
  cli.endInput();
  const code = await cli.exited();
  return { code, out: cli.stdout, err: cli.stderr };
}

/** A loopback port nothing listens on: bound once, then released. */
async function closedPort(): Promise<number> {
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe("switchboard connect (spawned)", () => {
  it("echoes lines, round-trips /binary, notes the pong, and closes with 1000 at the end of input", async () => {
    const { server, accepted } = await startServer();
    const url = server.url("/echo");
    const cli = new Cli(["-p", "chat", "-H", "X-Token: abc123", url]);

    await cli.waitFor(
      "stderr",
      `connected to ${url} (protocol: chat, extensions: permessage-deflate`,
    );
    cli.send("hello there");
    await cli.waitFor("stdout", "hello there\n");
    cli.send("/binary 01 02 ff");
    await cli.waitFor("stdout", "<binary 3 bytes> 0102ff\n");
    cli.send("/ping are you there");
    await cli.waitFor("stderr", "pong: are you there\n");
    cli.send("//not a command");
    await cli.waitFor("stdout", "/not a command\n");
    cli.send("/json {nope");
    await cli.waitFor("stderr", "/json: not JSON");
    cli.send('/json {"type":"hi"}');
    cli.send("last line");
    cli.endInput();

    expect(await cli.exited()).toBe(0);
    // Everything sent before the end of input was sent, and echoed, before the close.
    expect(cli.stdout).toBe(
      'hello there\n<binary 3 bytes> 0102ff\n/not a command\n{"type":"hi"}\nlast line\n',
    );
    expect(cli.stderr).toContain("closed: 1000\n");
    expect(accepted).toHaveLength(1);
    expect(accepted[0].headers["x-token"]).toBe("abc123");
    expect(accepted[0].headers["sec-websocket-protocol"]).toBe("chat");
    expect(await within(accepted[0].closed, WAIT, "the server's close")).toEqual([1000, ""]);
  });

  it("closes with the code and reason of /close, after refusing a code that may not be sent", async () => {
    const { server, accepted } = await startServer();
    const cli = new Cli([server.url("/echo")]);
    await cli.waitFor("stderr", "connected to");

    cli.send("/close 1005");
    await cli.waitFor("stderr", "/close: 1005 is not a code that may be sent");
    cli.send("/close 2999 reserved");
    await cli.waitFor("stderr", "/close: 2999 is not a code that may be sent");
    cli.send("still open");
    await cli.waitFor("stdout", "still open\n");
    cli.send("/close 4000 bye");

    // stdin stays open: the close alone ends the session.
    expect(await cli.exited()).toBe(0);
    expect(await within(accepted[0].closed, WAIT, "the server's close")).toEqual([4000, "bye"]);
    // The server's answer echoes the code (RFC 6455 section 5.5.1).
    expect(cli.stderr).toContain("closed: 4000\n");
  });

  it("exits 1 when the server closes with 1011", async () => {
    const { server } = await startServer();
    const cli = new Cli([server.url("/fail")]);
    await cli.waitFor("stderr", "connected to");
    cli.send("anything");
    expect(await cli.exited()).toBe(1);
    expect(cli.stderr).toContain("closed: 1011 boom\n");
    expect(cli.stdout).toBe("");
  });

  it("runs --execute lines, then closes after --wait without reading stdin", async () => {
    const { server, accepted } = await startServer();
    const args = ["--no-deflate", "--binary-format", "base64", "-x", "hello", "-x", "/binary 00ff"];
    const cli = new Cli([...args, "--wait", "100", server.url("/echo")]);
    // The input is never ended: --wait alone ends the session.
    cli.send("not read");

    expect(await cli.exited()).toBe(0);
    expect(cli.stdout).toBe("hello\n<binary 2 bytes> AP8=\n");
    expect(cli.stderr).toContain("(protocol: none, extensions: none)");
    expect(await within(accepted[0].closed, WAIT, "the server's close")).toEqual([1000, ""]);
  });

  it("closes with 1001 on SIGINT", async () => {
    const { server, accepted } = await startServer();
    const cli = new Cli([server.url("/echo")]);
    await cli.waitFor("stderr", "connected to");
    cli.child.kill("SIGINT");
    expect(await cli.exited()).toBe(0);
    expect(await within(accepted[0].closed, WAIT, "the server's close")).toEqual([1001, ""]);
    expect(cli.stderr).toContain("closed: 1001\n");
  });

  it("reports a refused connection in one line and exits 1", async () => {
    const port = await closedPort();
    const run = await runToEnd([`ws://127.0.0.1:${port}/`]);
    expect(run).toEqual({
      code: 1,
      out: "",
      err: `switchboard: cannot connect to ws://127.0.0.1:${port}/: connection refused (ECONNREFUSED)\n`,
    });
  });

  it("reports an upgrade refused with 404 in one line and exits 1", async () => {
    const { server, accepted } = await startServer();
    const run = await runToEnd([server.url("/missing")]);
    expect(run).toEqual({
      code: 1,
      out: "",
      err:
        `switchboard: ${server.url("/missing")} refused the WebSocket upgrade: ` +
        "HTTP 404 Not Found (WS_ERR_HANDSHAKE_STATUS)\n",
    });
    expect(accepted).toHaveLength(0);
  });

  it("gives up after --connect-timeout when the server never answers the upgrade", async () => {
    // Accepts TCP and reads the request, but never answers it.
    const sockets: Socket[] = [];
    const silent = createTcpServer((socket) => {
      sockets.push(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy();
      silent.close();
    });
    const { port } = silent.address() as { port: number };
    const run = await runToEnd(["--connect-timeout", "200", `ws://127.0.0.1:${port}/`]);
    expect(run).toEqual({
      code: 1,
      out: "",
      err:
        `switchboard: cannot connect to ws://127.0.0.1:${port}/: no answer within 200 ms ` +
        "(WS_ERR_HANDSHAKE_TIMEOUT)\n",
    });
  });

  it("exits 2 with one line for a wrong command line", async () => {
    const cases: Array<[string[], string]> = [
      [["--frobnicate", "ws://127.0.0.1:1/"], "unknown option --frobnicate"],
      [["http://127.0.0.1:1/"], "must start with ws:// or wss://"],
      [["not a url"], 'not a URL: "not a url"'],
      [[], "connect needs a URL"],
      [
        ["--binary-format", "octal", "ws://127.0.0.1:1/"],
        "--binary-format: expected hex or base64",
      ],
      [["--connect-timeout", "soon", "ws://127.0.0.1:1/"], "--connect-timeout: expected"],
      [["-H", "no colon", "ws://127.0.0.1:1/"], '--header: expected "Name: value"'],
      // Refused by the client before anything is sent: the handshake owns this header.
      [["-H", "Upgrade: h2c", "ws://127.0.0.1:1/"], "The Upgrade header is set by the WebSocket"],
    ];
    const runs = await Promise.all(cases.map(([args]) => runToEnd(args)));
    runs.forEach((run, i) => {
      const [args, expected] = cases[i];
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.out, args.join(" ")).toBe("");
      expect(run.err, args.join(" ")).toContain(expected);
      expect(run.err.trimEnd().split("\n"), args.join(" ")).toHaveLength(1);
    });
  });

  it("prints its help with --help", async () => {
    const run = await runToEnd(["--help"]);
    expect(run).toEqual({ code: 0, out: CONNECT_HELP, err: "" });
    expect(HELP).toContain("switchboard connect <url> [options]");
  });
});

describe("runConnect (in process)", () => {
  it('prefixes messages with "< " when stdout is a terminal, and ends with the input', async () => {
    const { server, accepted } = await startServer();
    const stdin = new PassThrough();
    let stdout = "";
    let stderr = "";
    const running = runConnect(["--no-deflate", server.url("/echo")], {
      stdin,
      stdout: { write: (text: string) => (stdout += text), isTTY: true },
      stderr: { write: (text: string) => (stderr += text) },
    });
    stdin.write("first\r\nsecond");
    stdin.end();
    expect(await within(running, WAIT, "runConnect to finish")).toBe(0);
    // A last line without a newline is still sent; "\r\n" ends a line as "\n" does.
    expect(stdout).toBe("< first\n< second\n");
    expect(stderr).toContain(
      `connected to ${server.url("/echo")} (protocol: none, extensions: none)`,
    );
    expect(await within(accepted[0].closed, WAIT, "the server's close")).toEqual([1000, ""]);
  });
});

describe("parseInputLine", () => {
  it("sends plain lines and //-escaped lines as text", () => {
    expect(parseInputLine("hello")).toEqual({ kind: "text", text: "hello" });
    expect(parseInputLine("")).toEqual({ kind: "text", text: "" });
    expect(parseInputLine("//ping")).toEqual({ kind: "text", text: "/ping" });
  });

  it("reads the commands and their arguments", () => {
    expect(parseInputLine("/ping")).toEqual({ kind: "ping", data: Buffer.alloc(0) });
    expect(parseInputLine("/pong  two spaces")).toEqual({
      kind: "pong",
      data: Buffer.from(" two spaces"),
    });
    expect(parseInputLine("/binary 0a FF")).toEqual({
      kind: "binary",
      data: Buffer.from([0x0a, 0xff]),
    });
    expect(parseInputLine("/json [1, 2]")).toEqual({ kind: "text", text: "[1, 2]" });
    expect(parseInputLine("/close")).toEqual({ kind: "close", code: 1000, reason: "" });
    expect(parseInputLine("/close 3000 see you  soon")).toEqual({
      kind: "close",
      code: 3000,
      reason: "see you  soon",
    });
    expect(parseInputLine("/quit")).toEqual({ kind: "quit" });
    expect(parseInputLine("/help")).toEqual({ kind: "help" });
  });

  it("refuses what the protocol would refuse, before anything is sent", () => {
    const refused = [
      "/close 1005",
      "/close 1006",
      "/close 1015",
      "/close 1004",
      "/close 2000",
      "/close 5000",
      "/close 1000.5",
      "/close bye",
      `/close 1000 ${"r".repeat(124)}`,
      `/ping ${"p".repeat(126)}`,
      "/binary abc",
      "/binary zz",
      "/binary",
      "/json",
      "/json {",
      "/quit now",
    ];
    for (const line of refused) {
      expect(parseInputLine(line), line).toMatchObject({
        kind: "invalid",
        code: "SB_ERR_COMMAND_ARGUMENT",
      });
    }
    expect(parseInputLine(`/close 1000 ${"r".repeat(123)}`).kind).toBe("close");
    expect(parseInputLine(`/ping ${"p".repeat(125)}`).kind).toBe("ping");
    expect(parseInputLine("/nope")).toMatchObject({
      kind: "invalid",
      code: "SB_ERR_UNKNOWN_COMMAND",
    });
  });
});

describe("parseConnectArgs", () => {
  const argsOf = (argv: string[]): ConnectArgs => {
    const result = parseConnectArgs(argv);
    if (!result.ok || result.help) throw new Error(`expected arguments: ${JSON.stringify(result)}`);
    return result.args;
  };

  it("has defaults, and lets the later of --deflate and --no-deflate win", () => {
    expect(argsOf(["ws://h/"])).toMatchObject({
      deflate: true,
      connectTimeoutMs: 10_000,
      binaryFormat: "hex",
      waitMs: undefined,
      execute: [],
      protocols: [],
      headers: {},
    });
    expect(argsOf(["--no-deflate", "ws://h/"]).deflate).toBe(false);
    expect(argsOf(["--no-deflate", "--deflate", "ws://h/"]).deflate).toBe(true);
  });

  it("collects repeated flags and combines repeated header names", () => {
    const args = argsOf([
      "wss://h:9/p?q=1",
      "-p",
      "a",
      "--protocol",
      "b",
      "-H",
      "X-A: 1",
      "-H",
      "x-a:2",
      "-x",
      "one",
      "--execute",
      "/ping",
      "--wait",
      "0",
    ]);
    expect(args.url.href).toBe("wss://h:9/p?q=1");
    expect(args.protocols).toEqual(["a", "b"]);
    expect(args.headers).toEqual({ "X-A": "1, 2" });
    expect(args.execute).toEqual(["one", "/ping"]);
    expect(args.waitMs).toBe(0);
  });

  it("refuses a fragment, a bad wait and stray arguments with SB_ERR_USAGE", () => {
    for (const argv of [
      ["ws://h/#top"],
      ["--wait", "-1", "ws://h/"],
      ["--wait", "1.5", "ws://h/"],
      ["ws://h/", "extra"],
      ["--protocol"],
    ]) {
      expect(parseConnectArgs(argv), argv.join(" ")).toMatchObject({
        ok: false,
        code: "SB_ERR_USAGE",
      });
    }
    expect(parseConnectArgs(["--help", "anything"])).toEqual({ ok: true, help: true });
  });
});
