import { type ChildProcess, execFile, spawn } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import type { CliIo } from "../../src/cli/main.js";
import { SERVE_HELP, serve, wsOrigin } from "../../src/cli/serve.js";
import type { ServiceServer, ServiceServerOptions } from "../../src/server/service-server.js";
import { selfSigned } from "../connection/self-signed.js";

const projectRoot = new URL("../../", import.meta.url).pathname;
const { version } = JSON.parse(readFileSync(join(projectRoot, "package.json"), "utf8")) as {
  version: string;
};

const base = mkdtempSync(join(tmpdir(), "switchboard-serve-"));
// Service files here are ES modules, as in a project whose package.json says so.
writeFileSync(join(base, "package.json"), JSON.stringify({ type: "module" }));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let dirCount = 0;
function makeDir(files: Record<string, string> = {}): string {
  dirCount += 1;
  const dir = join(base, `case-${dirCount}`);
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return dir;
}

/** Polls until `check` holds; bounded in attempts so a broken build fails instead of hanging. */
async function waitFor(check: () => boolean, what: string, attempts = 400): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface Capture {
  io: CliIo;
  signals: EventEmitter;
  exits: number[];
  stdout(): string;
  stderr(): string;
  /** The stdout lines that are not JSON log records. */
  plainLines(): string[];
  logRecords(): Array<Record<string, unknown>>;
}

function capture(cwd: string, env: Record<string, string> = {}): Capture {
  const out: string[] = [];
  const err: string[] = [];
  const signals = new EventEmitter();
  const exits: number[] = [];
  const lines = () => out.join("").split("\n").filter(Boolean);
  return {
    io: {
      stdout: { write: (text: string) => out.push(text) },
      stderr: { write: (text: string) => err.push(text) },
      env,
      cwd,
      signals,
      exit: (code: number) => {
        exits.push(code);
      },
    },
    signals,
    exits,
    stdout: () => out.join(""),
    stderr: () => err.join(""),
    plainLines: () => lines().filter((line) => !line.startsWith("{")),
    logRecords: () =>
      lines()
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

interface Fake {
  start(options: ServiceServerOptions): Promise<ServiceServer>;
  options?: ServiceServerOptions;
  shutdowns: number;
}

/**
 * Stands in for the service server in these in-process tests, so that the command's own
 * behaviour (output, signals, exit codes, option mapping) is checked on its own.
 */
function fakeServer(
  behaviour: {
    port?: number;
    start?: (options: ServiceServerOptions) => Promise<void>;
    shutdown?: () => Promise<void>;
  } = {},
): Fake {
  const fake: Fake = {
    shutdowns: 0,
    async start(options) {
      fake.options = options;
      await behaviour.start?.(options);
      const port = behaviour.port ?? options.port ?? 8080;
      const host = options.host ?? "127.0.0.1";
      return {
        port,
        host,
        url: (path = "/") => `${wsOrigin(host, port)}${path}`,
        service: () => undefined,
        reload: async () => {},
        // The CLI never reads the hub; a stand-in server has none.
        topics: undefined as unknown as ServiceServer["topics"],
        shutdown: async () => {
          fake.shutdowns += 1;
          await behaviour.shutdown?.();
        },
      };
    },
  };
  return fake;
}

describe("serve (in process, with a stand-in server)", () => {
  it("prints the listening line with the real port and exits 0 on SIGTERM", async () => {
    const root = makeDir();
    const cli = capture(base);
    const fake = fakeServer({ port: 40_123 });
    const done = serve([root, "--port", "0"], cli.io, { startServiceServer: fake.start });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    expect(cli.plainLines()).toEqual(["listening on ws://127.0.0.1:40123"]);
    expect(fake.options?.port).toBe(0);
    expect(fake.options?.root).toBe(root);
    expect(fake.shutdowns).toBe(0);

    cli.signals.emit("SIGTERM", "SIGTERM");
    expect(await done).toBe(0);
    expect(fake.shutdowns).toBe(1);
    expect(cli.exits).toEqual([]);
    expect(cli.stderr()).toBe("");
    expect(cli.plainLines()).toHaveLength(1);
    // Nothing is left listening for signals once serve has returned.
    expect(cli.signals.listenerCount("SIGTERM")).toBe(0);
    expect(cli.signals.listenerCount("SIGINT")).toBe(0);
  });

  it("shuts down on SIGINT too", async () => {
    const cli = capture(base);
    const fake = fakeServer();
    const done = serve([makeDir()], cli.io, { startServiceServer: fake.start });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    cli.signals.emit("SIGINT", "SIGINT");
    expect(await done).toBe(0);
    expect(fake.shutdowns).toBe(1);
  });

  it("puts an IPv6 host in brackets", async () => {
    const cli = capture(base);
    const fake = fakeServer({ port: 5555 });
    const done = serve([makeDir(), "--host", "::1"], cli.io, { startServiceServer: fake.start });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    expect(cli.plainLines()).toEqual(["listening on ws://[::1]:5555"]);
    cli.signals.emit("SIGTERM", "SIGTERM");
    expect(await done).toBe(0);
  });

  it("exits at once with 1 on a second signal, and bounds the shutdown", async () => {
    const cwd = makeDir({
      "switchboard.config.json": JSON.stringify({ root: ".", shutdownTimeoutMs: 1 }),
    });
    const cli = capture(cwd);
    // A shutdown that never finishes.
    const fake = fakeServer({ shutdown: () => new Promise<void>(() => {}) });
    const done = serve([], cli.io, { startServiceServer: fake.start });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    cli.signals.emit("SIGTERM", "SIGTERM");
    expect(cli.exits).toEqual([]);
    cli.signals.emit("SIGINT", "SIGINT");
    expect(cli.exits).toEqual([1]);
    expect(cli.stderr()).toContain("switchboard: SIGINT during shutdown, exiting now");
    // Without the process exit (a stand-in here), the bound still ends the command with 1.
    expect(await done).toBe(1);
    expect(cli.stderr()).toContain("switchboard: shutdown did not finish within 1 ms");
    expect(fake.shutdowns).toBe(1);
  });

  it("exits 1 when the shutdown fails", async () => {
    const cli = capture(base);
    const fake = fakeServer({ shutdown: () => Promise.reject(new Error("stuck worker")) });
    const done = serve([makeDir()], cli.io, { startServiceServer: fake.start });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    cli.signals.emit("SIGTERM", "SIGTERM");
    expect(await done).toBe(1);
    expect(cli.stderr()).toBe("switchboard: shutdown failed: stuck worker\n");
  });

  it("shuts down without announcing when a signal arrives during the start", async () => {
    let finishStart = (): void => {};
    const started = new Promise<void>((resolve) => {
      finishStart = resolve;
    });
    const cli = capture(base);
    const fake = fakeServer({ start: () => started });
    const done = serve([makeDir(), "--preload"], cli.io, { startServiceServer: fake.start });
    await waitFor(() => fake.options !== undefined, "the start");
    cli.signals.emit("SIGTERM", "SIGTERM");
    finishStart();
    expect(await done).toBe(0);
    expect(fake.shutdowns).toBe(1);
    expect(cli.plainLines()).toEqual([]);
  });

  it("reports a port in use in one line and exits 1", async () => {
    const cli = capture(base);
    const error = Object.assign(new Error("listen EADDRINUSE: address already in use"), {
      code: "EADDRINUSE",
    });
    const fake = fakeServer({ start: () => Promise.reject(error) });
    const code = await serve([makeDir(), "-p", "8123"], cli.io, {
      startServiceServer: fake.start,
    });
    expect(code).toBe(1);
    expect(cli.stderr()).toBe(
      "switchboard: cannot listen on 127.0.0.1:8123: address already in use\n",
    );
    expect(cli.plainLines()).toEqual([]);
    expect(cli.signals.listenerCount("SIGTERM")).toBe(0);

    // The same, wrapped in the server's own error with the system's error as its cause.
    const wrapped = capture(base);
    const serverError = Object.assign(new Error("cannot listen on 127.0.0.1:8124: listen ..."), {
      code: "SB_ERR_ADDRESS_IN_USE",
      cause: error,
    });
    const code2 = await serve([makeDir(), "-p", "8124"], wrapped.io, {
      startServiceServer: fakeServer({ start: () => Promise.reject(serverError) }).start,
    });
    expect(code2).toBe(1);
    expect(wrapped.stderr()).toBe(
      "switchboard: cannot listen on 127.0.0.1:8124: address already in use\n",
    );
  });

  it("reports any other start failure in one line with its code, and logs the details", async () => {
    const cli = capture(base);
    const error = Object.assign(new Error("service chat.ts failed to start\n    at stack"), {
      code: "SB_ERR_SERVICE_START",
    });
    const fake = fakeServer({ start: () => Promise.reject(error) });
    const code = await serve([makeDir()], cli.io, { startServiceServer: fake.start });
    expect(code).toBe(1);
    expect(cli.stderr()).toBe(
      "switchboard: cannot start: service chat.ts failed to start (SB_ERR_SERVICE_START)\n",
    );
    const record = cli.logRecords().find((entry) => entry.msg === "start failed");
    expect(record?.level).toBe(50);
    expect((record?.err as { code?: string })?.code).toBe("SB_ERR_SERVICE_START");
  });

  it("passes every configured setting to the server, and only those", async () => {
    const cwd = makeDir({
      "switchboard.config.json": JSON.stringify({
        root: ".",
        perMessageDeflate: true,
        maxMessageSize: 1024,
        heartbeat: { interval: 1000, timeout: 500 },
        closeTimeout: 700,
        isolation: "process",
        maxHeapMb: 64,
        watchdogMs: 900,
        shutdownTimeoutMs: 2500,
      }),
    });
    const cli = capture(cwd);
    const fake = fakeServer();
    const done = serve(["--watch", "--preload", "-p", "0"], cli.io, {
      startServiceServer: fake.start,
    });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    const { logger, ...options } = fake.options ?? ({} as ServiceServerOptions);
    expect(options).toEqual({
      root: cwd,
      port: 0,
      host: "127.0.0.1",
      watch: true,
      preload: true,
      perMessageDeflate: true,
      maxMessageSize: 1024,
      heartbeat: { interval: 1000, timeout: 500 },
      closeTimeout: 700,
      isolation: "process",
      maxHeapMb: 64,
      watchdogMs: 900,
      shutdownTimeoutMs: 2500,
    });
    expect(typeof logger?.info).toBe("function");
    cli.signals.emit("SIGTERM", "SIGTERM");
    expect(await done).toBe(0);

    // Nothing configured: the server's own defaults apply to everything but the core settings.
    const bare = capture(base);
    const fake2 = fakeServer();
    const done2 = serve([makeDir()], bare.io, { startServiceServer: fake2.start });
    await waitFor(() => bare.plainLines().length > 0, "the listening line");
    expect(Object.keys(fake2.options ?? {}).sort()).toEqual(
      ["host", "logger", "port", "preload", "root", "shutdownTimeoutMs", "watch"].sort(),
    );
    bare.signals.emit("SIGTERM", "SIGTERM");
    expect(await done2).toBe(0);
  });

  it("hands a static file handler to the server with --static", async () => {
    const root = makeDir();
    const publicDir = makeDir({ "index.html": "<p>hi</p>" });
    const cli = capture(base);
    const fake = fakeServer();
    const done = serve([root, "--static", publicDir], cli.io, { startServiceServer: fake.start });
    await waitFor(() => cli.plainLines().length > 0, "the listening line");
    expect(typeof fake.options?.requestHandler).toBe("function");
    cli.signals.emit("SIGTERM", "SIGTERM");
    expect(await done).toBe(0);
  });

  it("logs JSON lines to stdout at the configured level", async () => {
    for (const [level, expectInfo] of [
      ["info", true],
      ["warn", false],
    ] as const) {
      const cli = capture(base);
      const fake = fakeServer({
        start: async (options) => {
          options.logger?.info({ service: "chat" }, "service started");
          options.logger?.error({}, "something broke");
        },
      });
      const done = serve([makeDir(), "--log-level", level], cli.io, {
        startServiceServer: fake.start,
      });
      await waitFor(() => cli.plainLines().length > 0, "the listening line");
      const records = cli.logRecords();
      const info = records.find((record) => record.msg === "service started");
      expect(info !== undefined, level).toBe(expectInfo);
      if (info) expect(info).toMatchObject({ level: 30, name: "switchboard", service: "chat" });
      expect(records.find((record) => record.msg === "something broke")?.level).toBe(50);
      cli.signals.emit("SIGTERM", "SIGTERM");
      expect(await done).toBe(0);
    }
    const silent = capture(base);
    const fake = fakeServer({ start: async (options) => options.logger?.error({}, "x") });
    const done = serve([makeDir(), "--log-level", "silent"], silent.io, {
      startServiceServer: fake.start,
    });
    await waitFor(() => silent.plainLines().length > 0, "the listening line");
    expect(silent.logRecords()).toEqual([]);
    silent.signals.emit("SIGTERM", "SIGTERM");
    expect(await done).toBe(0);
  });

  it("exits 1 without starting when the root or the static directory is missing", async () => {
    const cwd = makeDir({ "file.txt": "" });
    const cases: Array<[string[], string]> = [
      [["nope"], "switchboard: service root nope does not exist\n"],
      [["file.txt"], "switchboard: service root file.txt is not a directory\n"],
      [[".", "--static", "pub"], "switchboard: static directory pub does not exist\n"],
    ];
    for (const [argv, expected] of cases) {
      const cli = capture(cwd);
      const fake = fakeServer();
      expect(await serve(argv, cli.io, { startServiceServer: fake.start })).toBe(1);
      expect(cli.stderr()).toBe(expected);
      expect(fake.options).toBeUndefined();
    }
  });

  it("exits 2 with a hint for a wrong command line, 1 for a wrong environment", async () => {
    const fake = fakeServer();
    const cli = capture(base);
    expect(await serve(["--port", "http"], cli.io, { startServiceServer: fake.start })).toBe(2);
    expect(cli.stderr()).toBe(
      'switchboard: --port: must be an integer between 0 and 65535, not "http"\n' +
        "Try 'switchboard serve --help'.\n",
    );
    const envCli = capture(base, { SWITCHBOARD_PORT: "http" });
    expect(await serve([], envCli.io, { startServiceServer: fake.start })).toBe(1);
    expect(envCli.stderr()).toBe(
      'switchboard: SWITCHBOARD_PORT: must be an integer between 0 and 65535, not "http"\n',
    );
    expect(fake.options).toBeUndefined();
  });

  it("prints its help and the version without starting anything", async () => {
    const fake = fakeServer();
    const help = capture(base);
    expect(await serve(["--help"], help.io, { startServiceServer: fake.start })).toBe(0);
    expect(help.stdout()).toBe(SERVE_HELP);
    for (const word of [
      "--port",
      "-p,",
      "--host",
      "--config",
      "-c,",
      "--watch",
      "--preload",
      "--static",
      "--log-level",
      "--help",
      "--version",
      "SWITCHBOARD_ROOT",
      "SWITCHBOARD_PORT",
      "SWITCHBOARD_HOST",
      "SWITCHBOARD_STATIC",
      "SWITCHBOARD_WATCH",
      "SWITCHBOARD_PRELOAD",
      "SWITCHBOARD_LOG_LEVEL",
      "switchboard.config.ts",
      "switchboard.config.json",
    ]) {
      expect(SERVE_HELP, word).toContain(word);
    }
    const versionOut = capture(base);
    expect(await serve(["--version"], versionOut.io, { startServiceServer: fake.start })).toBe(0);
    expect(versionOut.stdout()).toBe(`${version}\n`);
    expect(fake.options).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// The real command, as a user runs it.

const main = join(projectRoot, "src/cli/main.ts");
const cleanEnv = Object.fromEntries(
  Object.entries(process.env).filter(([name]) => !name.startsWith("SWITCHBOARD_")),
);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", main, ...args],
      { cwd: projectRoot, env: { ...cleanEnv, ...env }, timeout: 20_000 },
      (error, stdout, stderr) => {
        const code = error ? ((error as { code?: number }).code ?? null) : 0;
        resolve({ code: typeof code === "number" ? code : null, stdout, stderr });
      },
    );
  });
}

describe("switchboard (spawned)", () => {
  it("prints help with --help and with no command, exiting 0", async () => {
    for (const args of [["--help"], []]) {
      const run = await runCli(args);
      expect(run.code, args.join(" ")).toBe(0);
      expect(run.stdout).toContain(`switchboard ${version}`);
      expect(run.stdout).toContain("switchboard serve [root] [options]");
    }
  });

  it("prints the version", async () => {
    const run = await runCli(["--version"]);
    expect(run).toEqual({ code: 0, stdout: `${version}\n`, stderr: "" });
  });

  it("prints the help of serve", async () => {
    const run = await runCli(["serve", "--help"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(SERVE_HELP);
  });

  it("exits 2 for an unknown command, an unknown flag or a bad port", async () => {
    const cases: Array<[string[], string]> = [
      [["frobnicate"], 'switchboard: unknown command "frobnicate"'],
      [["serve", "--frobnicate"], "switchboard: unknown option --frobnicate"],
      [["serve", "--port", "99999"], "switchboard: --port: must be an integer between 0 and 65535"],
    ];
    for (const [args, expected] of cases) {
      const run = await runCli(args);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stderr, args.join(" ")).toContain(expected);
      expect(run.stdout, args.join(" ")).toBe("");
    }
  });

  it("exits 1 when the service root is missing", async () => {
    const missing = join(base, "no-such-root");
    const run = await runCli(["serve", missing, "--port", "0"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`switchboard: service root ${missing} does not exist\n`);
  });

  it("exits 1 for a bad environment variable", async () => {
    const run = await runCli(["serve"], { SWITCHBOARD_PRELOAD: "maybe" });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("switchboard: SWITCHBOARD_PRELOAD: must be 1, 0, true or false");
  });
});

// The tests below start the real service server.
const defineModule = pathToFileURL(join(projectRoot, "src/services/define.ts")).href;
const echoService = `import { defineService } from ${JSON.stringify(defineModule)};
export default defineService({
  message(client, message) {
    client.send(message.text());
  },
});
`;

/** Starts `switchboard serve` and resolves once it printed its listening line. */
async function startCli(
  args: string[],
): Promise<{ child: ChildProcess; port: number; output: () => string }> {
  const child = spawn(process.execPath, ["--import", "tsx", main, "serve", ...args], {
    cwd: projectRoot,
    env: cleanEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${output}`)), 20_000);
    const onData = (): void => {
      const match = /^listening on wss?:\/\/127\.0\.0\.1:(\d+)$/m.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}: ${output}`));
    });
  });
  return { child, port, output: () => output };
}

/** Sends SIGTERM and resolves with the exit code; fails if the process does not end in time. */
async function terminate(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timeout = new Promise<never>((_, reject) => {
    setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("did not exit within 15 s of SIGTERM"));
    }, 15_000).unref();
  });
  const [code] = (await Promise.race([exited, timeout])) as [number | null];
  return code;
}

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("no answer")));
    req.end();
  });
}

describe("switchboard serve (spawned, with the service server)", () => {
  it("listens on a free port with --port 0, serves a service, and exits 0 on SIGTERM", async () => {
    const root = makeDir({ "echo.ts": echoService });
    const { child, port, output } = await startCli([root, "--port", "0"]);
    try {
      expect(port).toBeGreaterThan(0);
      const lines = output()
        .split("\n")
        .filter((line) => line.startsWith("listening on"));
      expect(lines).toEqual([`listening on ws://127.0.0.1:${port}`]);

      const { connect } = await import("../../src/index.js");
      const ws = await connect(`ws://127.0.0.1:${port}/echo`);
      const reply = new Promise<string>((resolve) => {
        ws.once("message", (data: Buffer) => resolve(data.toString()));
      });
      ws.send("ping through the CLI");
      expect(await reply).toBe("ping through the CLI");
      ws.close();
    } finally {
      expect(await terminate(child)).toBe(0);
    }
  });

  it("serves plain files with --static", async () => {
    const root = makeDir({ "echo.ts": echoService });
    const publicDir = makeDir({ "index.html": "<h1>switchboard</h1>" });
    const { child, port } = await startCli([root, "--port", "0", "--static", publicDir]);
    try {
      expect(await httpGet(port, "/")).toEqual({ status: 200, body: "<h1>switchboard</h1>" });
      expect((await httpGet(port, "/.env")).status).toBe(404);
    } finally {
      expect(await terminate(child)).toBe(0);
    }
  });

  it("serves wss:// with --tls-cert and --tls-key, and refuses unusable files in one line", async () => {
    const pair = selfSigned();
    const tlsDir = makeDir({ "cert.pem": pair.cert, "key.pem": pair.key, "bad.pem": "not a key" });
    const root = makeDir({ "echo.ts": echoService });
    const { child, port, output } = await startCli([
      root,
      "--port",
      "0",
      "--tls-cert",
      join(tlsDir, "cert.pem"),
      "--tls-key",
      join(tlsDir, "key.pem"),
    ]);
    try {
      expect(output()).toContain(`listening on wss://127.0.0.1:${port}`);
      const { connect } = await import("../../src/index.js");
      const ws = await connect(`wss://127.0.0.1:${port}/echo`, { tls: { ca: pair.cert } });
      const reply = new Promise<string>((resolve) => {
        ws.once("message", (data: Buffer) => resolve(data.toString()));
      });
      ws.send("over wss");
      expect(await reply).toBe("over wss");
      ws.close();
      // The same port speaks TLS only.
      await expect(
        connect(`ws://127.0.0.1:${port}/echo`, { handshakeTimeout: 2000 }),
      ).rejects.toThrow();
    } finally {
      expect(await terminate(child)).toBe(0);
    }
    const bad = await runCli([
      "serve",
      root,
      "--port",
      "0",
      "--tls-cert",
      join(tlsDir, "cert.pem"),
      "--tls-key",
      join(tlsDir, "bad.pem"),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /^switchboard: --tls-cert\/--tls-key: not a usable certificate and key: .+\n$/,
    );
    const missing = await runCli([
      "serve",
      root,
      "--tls-cert",
      "nope.pem",
      "--tls-key",
      "nope.pem",
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("switchboard: --tls-cert nope.pem: no such file\n");
  });

  it("exits 1 with one line when the port is in use", async () => {
    const blocker = createTcpServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = blocker.address() as { port: number };
      const run = await runCli(["serve", makeDir(), "--port", String(port)]);
      expect(run.code).toBe(1);
      expect(run.stderr).toBe(
        `switchboard: cannot listen on 127.0.0.1:${port}: address already in use\n`,
      );
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it("exits 1 with one line when --preload meets a broken service", async () => {
    const root = makeDir({ "broken.ts": 'throw new Error("broken on purpose");\n' });
    const run = await runCli(["serve", root, "--port", "0", "--preload"]);
    expect(run.code).toBe(1);
    expect(run.stderr.split("\n").filter(Boolean)).toHaveLength(1);
    expect(run.stderr).toMatch(/^switchboard: /);
    expect(run.stdout).not.toMatch(/^listening on/m);
  });
});
