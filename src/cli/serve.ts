import { readFile, stat } from "node:fs/promises";
import { isAbsolute, relative } from "node:path";
import { createSecureContext } from "node:tls";
import { pino } from "pino";
import type { Engine } from "../engines/engine.js";
import type {
  ServiceServer,
  ServiceServerOptions,
  startServiceServer,
} from "../server/service-server.js";
import { createStaticHandler } from "../server/static.js";
import { VERSION } from "../version.js";
import { isClusterWorker, primaryEngine, reportToPrimary, runPrimary } from "./cluster.js";
import {
  CONFIG_FILE_NAMES,
  DEFAULTS,
  ENV_VARS,
  LOG_LEVELS,
  parseServeArgs,
  type ResolvedConfig,
  resolveConfig,
} from "./config.js";
import type { CliIo } from "./main.js";

export const SERVE_HELP = `Usage: switchboard serve [root] [options]

Serves every module in the service root directory over WebSocket.
root defaults to ./${DEFAULTS.root}, or to the config file's "root".

Options:
  -p, --port <port>        TCP port, 0 for any free one (default ${DEFAULTS.port})
      --host <host>        Interface to listen on (default ${DEFAULTS.host})
  -c, --config <file>      Config file (default: the first of
                           ${CONFIG_FILE_NAMES.join(",\n                           ")}
                           in the current directory)
      --watch              Reload a service when its files change
      --preload            Start every service at boot; exit if one fails
      --static <dir>       Also serve the plain files in <dir> over HTTP
      --tls-cert <file>    PEM certificate (chain): serve https:// and wss://
      --tls-key <file>     PEM private key of that certificate
      --workers <n>        Run n I/O processes on the port (default 1); they
                           share topics through this process, or --engine
      --engine <url>       Share topics with other nodes: redis://host:port or
                           nats://host:port [?prefix=sb&presenceTtlMs=10000]
                           (default memory: this process only)
      --log-level <level>  ${LOG_LEVELS.join(", ")} (default ${DEFAULTS.logLevel})
  -h, --help               Show this help and exit
  -v, --version            Print the version and exit

Environment:
  ${Object.keys(ENV_VARS).join("\n  ")}
  (booleans take 1, 0, true or false)

Each setting comes from the first that gives it: flag, environment, config file,
default. Logs are JSON lines on stdout.
`;

/** Time the CLI allows past shutdownTimeoutMs for the server to report that it is done. */
const SHUTDOWN_GRACE_MS = 1000;

export interface ServeDeps {
  /** The server to start; by default the service server, loaded only once it is needed. */
  startServiceServer?: typeof startServiceServer;
}

/**
 * `switchboard serve`: resolves the configuration, starts the service server, prints
 * `listening on ws://HOST:PORT`, and on SIGINT or SIGTERM shuts down and resolves with 0.
 * Resolves with 1 when the server cannot start, 2 for a wrong command line.
 */
export async function serve(
  argv: readonly string[],
  io: CliIo,
  deps: ServeDeps = {},
): Promise<number> {
  const fail = (code: 1 | 2, message: string): number => {
    io.stderr.write(`${message}\n`);
    if (code === 2) io.stderr.write("Try 'switchboard serve --help'.\n");
    return code;
  };

  const parsed = parseServeArgs(argv);
  if (!parsed.ok) return fail(2, parsed.message);
  if (parsed.flags.help) {
    io.stdout.write(SERVE_HELP);
    return 0;
  }
  if (parsed.flags.version) {
    io.stdout.write(`${VERSION}\n`);
    return 0;
  }

  const resolved = await resolveConfig({ argv, env: io.env, cwd: io.cwd });
  if (!resolved.ok) return fail(resolved.exitCode, resolved.message);
  const { config } = resolved;

  // Checked here, before anything starts, so the message says which directory is wrong.
  for (const [what, dir] of [
    ["service root", config.root],
    ["static directory", config.static],
  ] as const) {
    if (dir === undefined) continue;
    const problem = await directoryProblem(dir);
    if (problem) return fail(1, `switchboard: ${what} ${shortPath(dir, io.cwd)} ${problem}`);
  }

  let tls: ServiceServerOptions["tls"];
  if (config.tlsCert !== undefined && config.tlsKey !== undefined) {
    const loaded = await loadTls(config.tlsCert, config.tlsKey, io.cwd);
    if (typeof loaded === "string") return fail(1, loaded);
    tls = loaded;
  }

  const logger = pino({ name: "switchboard", level: config.logLevel }, io.stdout);
  logger.debug(
    { configFile: config.configFile, sources: config.sources },
    "configuration resolved",
  );

  const workers = config.workers ?? 1;
  if (workers > 1 && !isClusterWorker()) {
    return runPrimary({
      workers,
      hostTopics: config.engine === undefined || config.engine === "memory",
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      logger,
      signals: io.signals,
      onListening: (port) => {
        const origin = wsOrigin(config.host, port);
        io.stdout.write(`listening on ${tls ? origin.replace(/^ws:/, "wss:") : origin}\n`);
      },
    });
  }
  const inCluster = isClusterWorker();
  // A worker leaves Ctrl-C (SIGINT to the whole process group) to the primary, which stops the
  // workers with SIGTERM; a second signal would otherwise cut its graceful shutdown short.
  const stopSignals: Array<"SIGINT" | "SIGTERM"> = inCluster ? ["SIGTERM"] : ["SIGINT", "SIGTERM"];
  if (inCluster) io.signals.on("SIGINT", ignoreSignal);

  // Installed before starting, so a signal during a slow start (--preload) still ends cleanly.
  let signalled: NodeJS.Signals | undefined;
  let wake = (): void => {};
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled !== undefined) {
      io.stderr.write(`switchboard: ${signal} during shutdown, exiting now\n`);
      io.exit(1);
      return;
    }
    signalled = signal;
    wake();
  };
  for (const signal of stopSignals) io.signals.on(signal, onSignal);

  try {
    let start = deps.startServiceServer;
    if (start === undefined) {
      try {
        ({ startServiceServer: start } = await import("../server/service-server.js"));
      } catch (error) {
        return fail(1, `switchboard: cannot load the service server: ${firstLine(error)}`);
      }
    }

    let server: ServiceServer;
    try {
      const engine =
        inCluster && (config.engine === undefined || config.engine === "memory")
          ? primaryEngine()
          : await topicEngine(config.engine);
      server = await start({
        ...serverOptions(config, logger),
        ...(tls ? { tls } : {}),
        ...(engine ? { engine } : {}),
      });
    } catch (error) {
      logger.error({ err: error }, "start failed");
      const message = startFailure(error, config);
      if (inCluster) reportToPrimary({ failed: message });
      return fail(1, message);
    }

    if (inCluster) reportToPrimary({ listening: server.port });
    if (signalled === undefined) {
      // A worker's listening line is the primary's to print, once for all of them.
      if (!inCluster) {
        const origin = wsOrigin(server.host, server.port);
        io.stdout.write(`listening on ${tls ? origin.replace(/^ws:/, "wss:") : origin}\n`);
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    logger.info({ signal: signalled }, "shutting down");
    return await shutDown(server, config.shutdownTimeoutMs, io, logger);
  } finally {
    for (const signal of stopSignals) io.signals.off(signal, onSignal);
    io.signals.off("SIGINT", ignoreSignal);
  }
}

/** The server's options: only what was configured, so the server's own defaults apply. */
export function serverOptions(
  config: ResolvedConfig,
  logger: ServiceServerOptions["logger"],
): ServiceServerOptions {
  const options: ServiceServerOptions = {
    root: config.root,
    port: config.port,
    host: config.host,
    watch: config.watch,
    preload: config.preload,
    logger,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
  };
  const passed = [
    "perMessageDeflate",
    "maxMessageSize",
    "heartbeat",
    "closeTimeout",
    "isolation",
    "maxHeapMb",
    "watchdogMs",
    "topics",
  ] as const;
  for (const key of passed) {
    if (config[key] !== undefined) Object.assign(options, { [key]: config[key] });
  }
  if (config.static !== undefined) {
    // With --watch, files are looked up per request so edits show without a restart.
    options.requestHandler = createStaticHandler(config.static, { reload: config.watch });
  }
  return options;
}

async function shutDown(
  server: ServiceServer,
  timeoutMs: number,
  io: CliIo,
  logger: pino.Logger,
): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), timeoutMs + SHUTDOWN_GRACE_MS);
  });
  try {
    const outcome = await Promise.race([server.shutdown().then(() => "done" as const), expired]);
    if (outcome === "expired") {
      io.stderr.write(`switchboard: shutdown did not finish within ${timeoutMs} ms\n`);
      return 1;
    }
    logger.info({}, "stopped");
    return 0;
  } catch (error) {
    logger.error({ err: error }, "shutdown failed");
    io.stderr.write(`switchboard: shutdown failed: ${firstLine(error)}\n`);
    return 1;
  } finally {
    clearTimeout(timer);
  }
}

/** `ws://host:port`, with an IPv6 literal in brackets (RFC 3986 section 3.2.2). */
export function wsOrigin(host: string, port: number): string {
  return `ws://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** One line that says why the server did not start; the full error went to the log. */
function startFailure(error: unknown, config: ResolvedConfig): string {
  const code = (error as { code?: unknown })?.code;
  // The server wraps listen errors in its own; the system's code is then the cause's.
  const cause = (error as { cause?: { code?: unknown } })?.cause?.code;
  const where = wsOrigin(config.host, config.port).slice("ws://".length);
  switch (typeof cause === "string" && cause.startsWith("E") ? cause : code) {
    case "EADDRINUSE":
    case "SB_ERR_ADDRESS_IN_USE":
      return `switchboard: cannot listen on ${where}: address already in use`;
    case "EACCES":
      return `switchboard: cannot listen on ${where}: permission denied`;
    case "EADDRNOTAVAIL":
      return `switchboard: cannot listen on ${where}: no such local address`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `switchboard: cannot listen on ${where}: unknown host`;
  }
  const suffix = typeof code === "string" && !firstLine(error).includes(code) ? ` (${code})` : "";
  return `switchboard: cannot start: ${firstLine(error)}${suffix}`;
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n", 1)[0].trim() || "unknown error";
}

function ignoreSignal(): void {}

/** The engine a URL names; undefined for the in-memory default. */
async function topicEngine(url: string | undefined): Promise<Engine | undefined> {
  if (url === undefined || url === "memory") return undefined;
  // Engine settings ride on the URL's query (redis://host:6379/0?prefix=app&presenceTtlMs=5000);
  // the rest of the URL is the broker client's.
  const target = new URL(url);
  const prefix = target.searchParams.get("prefix") ?? undefined;
  const ttl = target.searchParams.get("presenceTtlMs");
  if (ttl !== null && !/^[0-9]{1,9}$/.test(ttl)) {
    throw Object.assign(new Error(`--engine: presenceTtlMs must be milliseconds, not "${ttl}"`), {
      code: "SB_ERR_ENGINE_OPTIONS",
    });
  }
  target.searchParams.delete("prefix");
  target.searchParams.delete("presenceTtlMs");
  const settings = { prefix, presenceTtlMs: ttl === null ? undefined : Number(ttl) };
  // Loaded only when asked for: a server without a broker never loads its client.
  if (target.protocol === "nats:") {
    const { NatsEngine } = await import("../engines/nats.js");
    return new NatsEngine({ nats: target.toString(), ...settings });
  }
  const { RedisEngine } = await import("../engines/redis.js");
  return new RedisEngine({ redis: target.toString(), ...settings });
}

/**
 * Reads the certificate and key and checks that they make a TLS context, so that a wrong file
 * is reported as such before the server starts; a string is the one-line reason.
 */
async function loadTls(
  certFile: string,
  keyFile: string,
  cwd: string,
): Promise<{ cert: Buffer; key: Buffer } | string> {
  const files: Buffer[] = [];
  for (const [flag, file] of [
    ["--tls-cert", certFile],
    ["--tls-key", keyFile],
  ] as const) {
    try {
      files.push(await readFile(file));
    } catch (error) {
      const reason =
        (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : firstLine(error);
      return `switchboard: ${flag} ${shortPath(file, cwd)}: ${reason}`;
    }
  }
  const [cert, key] = files;
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    return `switchboard: --tls-cert/--tls-key: not a usable certificate and key: ${firstLine(error)}`;
  }
  return { cert, key };
}

async function directoryProblem(path: string): Promise<string | undefined> {
  try {
    return (await stat(path)).isDirectory() ? undefined : "is not a directory";
  } catch {
    return "does not exist";
  }
}

function shortPath(path: string, cwd: string): string {
  const rel = relative(cwd, path);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? rel : path;
}
