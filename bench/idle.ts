// `npm run bench:idle`: memory per idle connection. How much a server's resident memory grows
// while it holds N open, idle WebSocket connections (19,000 by default), for Switchboard (the
// echo service on the service server, with the service on the I/O thread and in a worker
// thread), for the `ws` package and for uWebSockets.js, when the `uwebsockets` package is
// installed.
//
// A process here may hold at most 20,000 open files (a hard limit), so the connections come from
// two or more C generators (bench/loadgen/idle-load.c), each holding at most 9,500 of them and
// each connecting from its own source address, 127.0.0.2, 127.0.0.3, ... Each server runs in its
// own Node process, compiled with tsc (see buildServers) and pinned to one core, with the
// generators pinned to the other. For each server,
// in each round, on a freshly started server: warm up (open and close a batch of connections),
// collect garbage and read the RSS; open the N connections and time that, with the server's CPU;
// collect garbage again and read the RSS once it has settled; report the growth per connection;
// then close every connection with a clean closing handshake and stop the server. The tables show
// medians over the rounds and ratios to ws and uWS. See docs/benchmarks.md for how to read them.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import {
  benchDir,
  buildDir,
  compileLoadgen,
  formatPct,
  formatRate,
  formatRatio,
  gitDescribe,
  idleLoadPct,
  killAll,
  median,
  type Placement,
  packageVersion,
  placement,
  resultsDir,
  rootDir,
  sleep,
  table,
  track,
} from "./common.js";

const loadgenSource = path.join(benchDir, "loadgen", "idle-load.c");
const loadgenBinary = path.join(buildDir, "idle-load");
/** Where the servers are compiled to (see buildServers), mirroring the repository's layout. */
const jsDir = path.join(buildDir, "js");

/** What the product asks: Switchboard main mode's memory per idle connection at most ws's. */
const TARGET_VS_WS = 1.0;
/** Connections per generator: each is one process, under the 20,000 open-file limit. */
const MAX_CONNS_PER_GENERATOR = 9_500;
/** Open files a server needs besides its connections: listener, epoll, pipes, a worker's. */
const SERVER_FILE_MARGIN = 200;
/** RSS has settled when two readings this far apart differ by less than SETTLE_PCT. */
const SETTLE_INTERVAL_MS = 500;
const SETTLE_PCT = 1;
/** Longest wait for RSS to settle; past it the last reading is used, with a warning. */
const SETTLE_MAX_MS = 15_000;
/** Before the first reading: the server finishes with the warm-up's connections. */
const QUIET_MS = 500;
const SERVER_READY_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 3_000;
const PROBE_TIMEOUT_MS = 10_000;
/** Generator phase limits; the orchestrator waits a little longer than each. */
const OPEN_TIMEOUT_MS = 120_000;
const CLOSE_TIMEOUT_MS = 30_000;
const HOLD_TIMEOUT_MS = 600_000;
const GENERATOR_MARGIN_MS = 5_000;
/** Above this, other processes competed for the CPUs before the run. */
const OTHER_LOAD_WARN_PCT = 20;

type Isolation = "main" | "worker";
const ISOLATIONS: readonly Isolation[] = ["main", "worker"];
type Peer = "ws" | "uws";

interface Options {
  quick: boolean;
  rounds: number;
  conns: number;
  /** Generator processes; 0 means as few as MAX_CONNS_PER_GENERATOR allows, at least 2. */
  generators: number;
  /** Connections in their TCP connect or upgrade at once, per generator. */
  concurrency: number;
  pin: boolean;
  /** Run the servers' TypeScript through tsx, as the other benchmarks do, instead of compiled. */
  tsx: boolean;
  isolation: Isolation[];
  peers: Peer[];
}

interface ServerSpec {
  name: string;
  kind: "switchboard" | Peer;
  isolation?: Isolation;
  script: string;
  args: string[];
}

const USAGE = `usage: npm run bench:idle -- [options]

  --quick               2,000 connections, 1 round; about 15 s
  --conns N             idle connections per server (default 19000)
  --rounds N            rounds, each on freshly started servers; the median is reported (default 3)
  --generators N        generator processes (default: enough for ${MAX_CONNS_PER_GENERATOR} connections
                        each, at least 2), each from its own source address 127.0.0.2, .3, ...
  --concurrency N       connections in their connect or upgrade at once, per generator (default 64)
  --isolation A,B       where the Switchboard echo service runs: main, worker (default main,worker)
  --peers A,B           servers to compare with: ws, uws, or none (default ws,uws; uws is
                        skipped with a notice when the uwebsockets package does not load)
  --no-pin              do not pin the server and the generators to separate cores
  --tsx                 run the servers from their TypeScript through tsx instead of compiling
                        them with tsc first (tsx keeps function names, which costs memory)
  --help                this text
`;

function parseOptions(argv: string[]): Options {
  const opts: Options = {
    quick: false,
    rounds: 3,
    conns: 19_000,
    generators: 0,
    concurrency: 64,
    pin: true,
    tsx: false,
    isolation: ["main", "worker"],
    peers: ["ws", "uws"],
  };
  const explicit = new Set<string>();
  const int = (flag: string, value: string | undefined, min: number, max: number): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(`${flag} needs an integer in [${min}, ${max}], got ${value}`);
    }
    explicit.add(flag);
    return n;
  };
  const list = <T extends string>(
    flag: string,
    value: string | undefined,
    allowed: readonly T[],
  ) => {
    const items = value === "none" ? [] : (value ?? "").split(",");
    for (const item of items) {
      if (!allowed.includes(item as T)) {
        throw new Error(`${flag} takes ${allowed.join(", ")} or none, got ${item}`);
      }
    }
    return allowed.filter((item) => items.includes(item));
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case "--quick":
        opts.quick = true;
        break;
      case "--no-pin":
        opts.pin = false;
        break;
      case "--tsx":
        opts.tsx = true;
        break;
      case "--conns":
        opts.conns = int(arg, argv[++i], 1, 1_000_000);
        break;
      case "--rounds":
        opts.rounds = int(arg, argv[++i], 1, 100);
        break;
      case "--generators":
        opts.generators = int(arg, argv[++i], 1, 200);
        break;
      case "--concurrency":
        opts.concurrency = int(arg, argv[++i], 1, 4096);
        break;
      case "--isolation":
        opts.isolation = list(arg, argv[++i], ISOLATIONS);
        break;
      case "--peers":
        opts.peers = list(arg, argv[++i], ["ws", "uws"] as const);
        break;
      case "--help":
      case "-h":
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${arg}\n\n${USAGE}`);
    }
  }
  if (opts.isolation.length === 0) throw new Error("--isolation needs at least one mode");
  if (opts.quick) {
    // Explicit flags win over the --quick defaults.
    if (!explicit.has("--conns")) opts.conns = 2_000;
    if (!explicit.has("--rounds")) opts.rounds = 1;
  }
  if (opts.generators === 0) {
    opts.generators = Math.max(2, Math.ceil(opts.conns / MAX_CONNS_PER_GENERATOR));
  }
  if (opts.generators > opts.conns) opts.generators = opts.conns;
  if (Math.ceil(opts.conns / opts.generators) > MAX_CONNS_PER_GENERATOR) {
    throw new Error(
      `${opts.conns} connections over ${opts.generators} generators is more than ` +
        `${MAX_CONNS_PER_GENERATOR} each; use more --generators`,
    );
  }
  return opts;
}

// ---------------------------------------------------------------- /proc

/** The soft and hard limits on open files of a process, from /proc/PID/limits. */
function fileLimits(pid: number | "self"): { soft: number; hard: number } | undefined {
  try {
    const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
    const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
    if (!match) return undefined;
    const value = (s: string) => (s === "unlimited" ? Number.POSITIVE_INFINITY : Number(s));
    return { soft: value(match[1]), hard: value(match[2]) };
  } catch {
    return undefined;
  }
}

/** Resident memory of a process in KiB (VmRSS of /proc/PID/status: all its threads). */
function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

/** CPU seconds used so far by a process, all threads (fields 14 and 15 of /proc/PID/stat). */
function cpuS(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

// ---------------------------------------------------------------- building the servers

/**
 * Compiles the bench servers, Switchboard's sources and the bench services with the project's
 * tsc into bench/.build/js, where they run with plain node. Switchboard ships compiled (dist/),
 * and ws and uWebSockets.js run as published JavaScript. Run through tsx instead (--tsx), every
 * named function carries its name as an own property (tsx runs esbuild with keepNames), which
 * gives each closure a property dictionary of its own: several KiB per Switchboard connection,
 * which has a dozen such closures, and none of it Switchboard's.
 */
function buildServers(): string | undefined {
  rmSync(jsDir, { recursive: true, force: true });
  mkdirSync(buildDir, { recursive: true });
  const config = path.join(buildDir, "tsconfig.servers.json");
  const tsconfig = {
    extends: "../../tsconfig.json",
    compilerOptions: {
      rootDir: "../..",
      outDir: "js",
      noEmit: false,
      declaration: false,
      sourceMap: false,
    },
    include: ["../../src", "../servers", "../services"],
  };
  writeFileSync(config, `${JSON.stringify(tsconfig, null, 2)}\n`);
  const tsc = path.join(rootDir, "node_modules", ".bin", "tsc");
  const result = spawnSync(tsc, ["-p", config], {
    cwd: rootDir,
    encoding: "utf8",
    timeout: 120_000,
  });
  const scripts = ["switchboard-service", "ws-echo", "uws-echo", "memory-probe"].map((name) =>
    path.join(jsDir, "bench", "servers", `${name}.js`),
  );
  if (result.error || !scripts.every((file) => existsSync(file))) {
    const detail = result.error?.message ?? `${result.stdout}${result.stderr}`.trim();
    throw new Error(`could not compile the servers with \`tsc -p ${config}\`:\n${detail}`);
  }
  // src/version.ts reads the package's version from ../package.json.
  writeFileSync(path.join(jsDir, "package.json"), readFileSync(path.join(rootDir, "package.json")));
  // tsc emits despite type errors; a tree that others are editing may have some for a moment.
  if (result.status !== 0) {
    const first = `${result.stdout}${result.stderr}`.trim().split("\n").slice(0, 3).join("; ");
    return `tsc reported errors and built the servers anyway: ${first}`;
  }
  return undefined;
}

/** The node arguments that run a server: compiled, or its TypeScript through tsx (--tsx). */
function nodeArgsOf(spec: ServerSpec, opts: Options): string[] {
  const [probe, script, loader] = opts.tsx
    ? [path.join(benchDir, "servers", "memory-probe.ts"), spec.script, ["--import", "tsx"]]
    : [
        path.join(jsDir, "bench", "servers", "memory-probe.js"),
        path.join(jsDir, spec.script.replace(/\.ts$/, ".js")),
        [],
      ];
  const probeUrl = pathToFileURL(probe).href;
  return ["--expose-gc", ...loader, "--import", probeUrl, script, "--port", "0", ...spec.args];
}

// ---------------------------------------------------------------- processes

/**
 * `command args` run through `sh -c 'ulimit -n LIMIT; exec "$@"'`: its soft limit on open files
 * raised to `limit` (the hard limit) before anything starts. `exec` keeps the pid, so the child's
 * pid is the server's for /proc. A limit that cannot be raised is left as it was; callers check
 * the child's /proc/PID/limits.
 */
function withFileLimit(limit: number, command: string, args: string[]): [string, string[]] {
  if (!Number.isFinite(limit)) return [command, args];
  return ["sh", ["-c", `ulimit -n ${limit} 2>/dev/null; exec "$@"`, "sh", command, ...args]];
}

interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  gc: boolean;
}

interface RunningServer {
  spec: ServerSpec;
  child: ChildProcess;
  pid: number;
  port: number;
  fileLimit: number;
  stderrTail: string[];
  /** Memory lines printed by bench/servers/memory-probe.ts, consumed by `probe`. */
  probes: MemoryUsage[];
  wake: () => void;
}

async function startServer(
  spec: ServerSpec,
  opts: Options,
  where: Placement,
  fileLimit: number,
): Promise<RunningServer> {
  const nodeArgs = nodeArgsOf(spec, opts);
  const [command, args] =
    where.serverCpu === undefined
      ? [process.execPath, nodeArgs]
      : ["taskset", ["-c", String(where.serverCpu), process.execPath, ...nodeArgs]];
  const [shell, shellArgs] = withFileLimit(fileLimit, command, args);
  const child = track(spawn(shell, shellArgs, { cwd: rootDir, stdio: ["ignore", "pipe", "pipe"] }));
  const server: RunningServer = {
    spec,
    child,
    pid: child.pid!,
    port: 0,
    fileLimit: 0,
    stderrTail: [],
    probes: [],
    wake: () => {},
  };
  createInterface({ input: child.stderr! }).on("line", (line) => {
    server.stderrTail.push(line);
    if (server.stderrTail.length > 20) server.stderrTail.shift();
  });
  server.port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${spec.name} printed no ws:// URL in ${SERVER_READY_TIMEOUT_MS} ms`));
    }, SERVER_READY_TIMEOUT_MS);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith('{"memoryProbe"')) {
        server.probes.push((JSON.parse(line) as { memoryProbe: MemoryUsage }).memoryProbe);
        server.wake();
        return;
      }
      const match = /ws:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      server.wake();
      reject(
        new Error(
          `${spec.name} exited (${signal ?? code}) before listening:\n${server.stderrTail.join("\n")}`,
        ),
      );
    });
  });
  server.fileLimit = fileLimits(server.pid)?.soft ?? Number.NaN;
  return server;
}

async function stopServer(server: RunningServer): Promise<void> {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), SERVER_STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

function serverAlive(server: RunningServer): boolean {
  return server.child.exitCode === null && server.child.signalCode === null;
}

/** Asks the server for a full garbage collection and its memoryUsage (memory-probe.ts). */
async function probe(server: RunningServer): Promise<MemoryUsage> {
  const seen = server.probes.length;
  server.child.kill("SIGUSR2");
  const deadline = Date.now() + PROBE_TIMEOUT_MS;
  while (server.probes.length === seen) {
    if (!serverAlive(server)) throw new Error(`${server.spec.name} exited`);
    if (Date.now() > deadline) {
      throw new Error(`${server.spec.name} did not answer the memory probe (SIGUSR2)`);
    }
    await new Promise<void>((resolve) => {
      server.wake = resolve;
      setTimeout(resolve, 100);
    });
  }
  return server.probes[seen];
}

/** Reads RSS every SETTLE_INTERVAL_MS until two readings differ by under SETTLE_PCT, bounded. */
async function settledRss(pid: number): Promise<{ kib: number; ms: number; settled: boolean }> {
  const started = Date.now();
  let last = rssKiB(pid);
  for (;;) {
    await sleep(SETTLE_INTERVAL_MS);
    const now = rssKiB(pid);
    const settled = Math.abs(now - last) < (last * SETTLE_PCT) / 100;
    last = now;
    const ms = Date.now() - started;
    if (settled || ms >= SETTLE_MAX_MS) return { kib: now, ms, settled };
  }
}

/** Whether uWebSockets.js loads here (the package is optional), and why not. */
function uwsAvailability(): { ok: true; version: string } | { ok: false; why: string } {
  const probe = spawnSync(
    process.execPath,
    ["-e", "require('uwebsockets'); console.log(require('uwebsockets/package.json').version)"],
    { cwd: rootDir, encoding: "utf8", timeout: 20_000 },
  );
  if (probe.status === 0) return { ok: true, version: probe.stdout.trim() };
  const first = (probe.stderr || probe.error?.message || "")
    .split("\n")
    .find((l) => /Error/.test(l));
  return { ok: false, why: first?.trim() ?? `exit ${probe.status}` };
}

// ---------------------------------------------------------------- generators

/** The generator's line once all its connections are open (see idle-load.c). */
interface OpenLine {
  ok: true;
  phase: "open";
  conns: number;
  source: string;
  open_s: number;
  conns_per_s: number;
  /** From connect() to the validated 101 response, over this generator's connections. */
  latency_p50_ms: number;
  latency_p99_ms: number;
  latency_max_ms: number;
  gen_cpu_pct: number;
}

/** Its last line, after the closing handshakes. */
interface ClosedLine {
  ok: true;
  phase: "closed";
  conns: number;
  closed: number;
  held_s: number;
  close_s: number;
  pings: number;
  pongs: number;
}

type GeneratorLine = OpenLine | ClosedLine | { ok: false; error: string };

/** One idle-load process: its JSON lines, one at a time, and the line on stdin that ends it. */
class Generator {
  private readonly child: ChildProcess;
  private readonly lines: GeneratorLine[] = [];
  private read = 0;
  private stderr = "";
  private exit: string | undefined;
  private wake: () => void = () => {};

  constructor(
    readonly source: string,
    readonly conns: number,
    server: RunningServer,
    opts: Options,
    where: Placement,
    fileLimit: number,
  ) {
    const args = [
      "--port",
      String(server.port),
      "--path",
      "/echo",
      "--conns",
      String(conns),
      "--source",
      source,
      "--concurrency",
      String(opts.concurrency),
      "--open-timeout-ms",
      String(OPEN_TIMEOUT_MS),
      "--hold-timeout-ms",
      String(HOLD_TIMEOUT_MS),
      "--close-timeout-ms",
      String(CLOSE_TIMEOUT_MS),
    ];
    if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
    const [command, commandArgs] = withFileLimit(fileLimit, loadgenBinary, args);
    this.child = track(spawn(command, commandArgs, { stdio: ["pipe", "pipe", "pipe"] }));
    // A generator that failed has closed its stdin; the write that ends the hold may then fail.
    this.child.stdin!.on("error", () => {});
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      try {
        this.lines.push(JSON.parse(line) as GeneratorLine);
      } catch {
        this.lines.push({ ok: false, error: `unexpected output: ${line}` });
      }
      this.wake();
    });
    this.child.stderr!.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.child.once("error", (err) => {
      this.exit = err.message;
      this.wake();
    });
    this.child.once("close", (code, signal) => {
      this.exit = `exit ${signal ?? code}`;
      this.wake();
    });
  }

  /** The next line; an error line when the generator ends without one or takes too long. */
  async next(what: string, timeoutMs: number): Promise<GeneratorLine> {
    const deadline = Date.now() + timeoutMs;
    while (this.read === this.lines.length) {
      if (this.exit !== undefined) {
        const detail = this.stderr.trim() ? `: ${this.stderr.trim()}` : "";
        return {
          ok: false,
          error: `generator ${this.source} ended (${this.exit}) ${what}${detail}`,
        };
      }
      if (Date.now() > deadline) {
        this.child.kill("SIGKILL");
        return { ok: false, error: `generator ${this.source}: no line in ${timeoutMs} ms ${what}` };
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 200);
      });
    }
    return this.lines[this.read++];
  }

  /** Ends the hold: the generator closes every connection and reports. */
  close(): void {
    this.child.stdin!.end("\n");
  }

  async exited(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.exit === undefined && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    if (this.exit === undefined) this.child.kill("SIGKILL");
    return this.exit ?? "still running";
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }
}

/** Splits N connections over G generators, as evenly as possible. */
function shares(conns: number, generators: number): number[] {
  return Array.from(
    { length: generators },
    (_, g) => Math.floor(conns / generators) + (g < conns % generators ? 1 : 0),
  );
}

/** Each generator's source address: 127.0.0.2, 127.0.0.3, ... (127.0.0.1 is the server's). */
const sourceAddress = (g: number) => `127.0.0.${2 + g}`;

/** Opens `conns` connections over `generators` generators and waits until all are open. */
async function openAll(
  server: RunningServer,
  conns: number,
  generators: number,
  firstSource: number,
  opts: Options,
  where: Placement,
  fileLimit: number,
): Promise<{ gens: Generator[]; opened: OpenLine[]; error?: string }> {
  const gens = shares(conns, generators).map(
    (n, g) => new Generator(sourceAddress(firstSource + g), n, server, opts, where, fileLimit),
  );
  const lines = await Promise.all(
    gens.map((gen) => gen.next("while opening", OPEN_TIMEOUT_MS + GENERATOR_MARGIN_MS)),
  );
  const failed = lines.find((line) => !line.ok);
  if (failed && !failed.ok) return { gens, opened: [], error: failed.error };
  const wrong = lines.find((line) => line.ok && line.phase !== "open");
  if (wrong) {
    return { gens, opened: [], error: `unexpected generator line ${JSON.stringify(wrong)}` };
  }
  return { gens, opened: lines as OpenLine[] };
}

/** Ends the hold of every generator and checks that all connections closed cleanly. */
async function closeAll(gens: Generator[]): Promise<{ closed: ClosedLine[]; error?: string }> {
  for (const gen of gens) gen.close();
  const lines = await Promise.all(
    gens.map((gen) => gen.next("while closing", CLOSE_TIMEOUT_MS + GENERATOR_MARGIN_MS)),
  );
  const exits = await Promise.all(gens.map((gen) => gen.exited(GENERATOR_MARGIN_MS)));
  for (const line of lines) {
    if (!line.ok) return { closed: [], error: line.error };
    if (line.phase !== "closed" || line.closed !== line.conns) {
      return { closed: [], error: `unexpected generator line ${JSON.stringify(line)}` };
    }
  }
  const bad = exits.findIndex((exit) => exit !== "exit 0");
  if (bad >= 0) return { closed: [], error: `generator ${gens[bad].source}: ${exits[bad]}` };
  return { closed: lines as ClosedLine[] };
}

// ---------------------------------------------------------------- one measurement

interface RunResult {
  ok: true;
  conns: number;
  generators: number;
  /** The server's soft limit on open files, as read from /proc/PID/limits. */
  file_limit: number;
  /** After the warm-up, a quiet moment, a full GC, and RSS settled. */
  rss_before_kib: number;
  /** The moment the last generator reported all its connections open, before any GC. */
  rss_open_kib: number;
  /** With all connections open: after a full GC, and RSS settled. */
  rss_after_kib: number;
  settled: boolean;
  settle_ms: number;
  memory_before: MemoryUsage;
  memory_after: MemoryUsage;
  /** (rss_after - rss_before) / conns. */
  kib_per_conn: number;
  /** (rss_open - rss_before) / conns: the growth before garbage was collected. */
  kib_per_conn_no_gc: number;
  /** The main thread's JavaScript heap (heapUsed), and memory outside it (external). */
  heap_kib_per_conn: number;
  external_kib_per_conn: number;
  /** From spawning the generators to the last one's "open" line. */
  open_s: number;
  conns_per_s: number;
  /** The server's CPU over open_s: seconds, % of one core, ms per 1,000 connections. */
  server_cpu_s: number;
  server_cpu_pct: number;
  server_cpu_ms_per_1k: number;
  /** Upgrade latency (connect() to the validated 101): the highest of the generators' p50 and
   *  p99 (they run side by side on the same server), and the slowest of all. */
  upgrade_p50_ms: number;
  upgrade_p99_ms: number;
  upgrade_max_ms: number;
  generator_cpu_pct: number;
  close_s: number;
  pings: number;
  open_lines: OpenLine[];
  closed_lines: ClosedLine[];
}

type RunOutcome = RunResult | { ok: false; error: string };

async function measure(
  server: RunningServer,
  opts: Options,
  where: Placement,
  fileLimit: number,
): Promise<RunOutcome> {
  const needFiles = opts.conns + SERVER_FILE_MARGIN;
  if (!(server.fileLimit >= needFiles)) {
    return {
      ok: false,
      error:
        `the server may open ${server.fileLimit} files (its soft limit, which could not be ` +
        `raised); ${opts.conns} connections need about ${needFiles}`,
    };
  }
  // Warm-up: a batch of connections opened and closed, so the code that accepts, upgrades and
  // closes them has run (and is compiled) before the first reading, from a source address of
  // its own.
  const warmupConns = Math.min(1_000, Math.ceil(opts.conns / 10));
  const warm = await openAll(server, warmupConns, 1, opts.generators, opts, where, fileLimit);
  if (warm.error) {
    for (const gen of warm.gens) gen.kill();
    return { ok: false, error: `warm-up: ${warm.error}` };
  }
  const warmClosed = await closeAll(warm.gens);
  if (warmClosed.error) return { ok: false, error: `warm-up: ${warmClosed.error}` };

  await sleep(QUIET_MS);
  const memoryBefore = await probe(server);
  const before = await settledRss(server.pid);

  const cpuBefore = cpuS(server.pid);
  const t0 = performance.now();
  const open = await openAll(server, opts.conns, opts.generators, 0, opts, where, fileLimit);
  const openS = (performance.now() - t0) / 1000;
  const serverCpuS = cpuS(server.pid) - cpuBefore;
  if (open.error) {
    for (const gen of open.gens) gen.kill();
    return { ok: false, error: open.error };
  }
  const rssOpen = rssKiB(server.pid);
  const memoryAfter = await probe(server);
  const after = await settledRss(server.pid);
  if (!serverAlive(server)) return { ok: false, error: `${server.spec.name} exited` };

  const closed = await closeAll(open.gens);
  if (closed.error) return { ok: false, error: closed.error };

  const per = (a: number, b: number) => (b - a) / opts.conns;
  return {
    ok: true,
    conns: opts.conns,
    generators: opts.generators,
    file_limit: server.fileLimit,
    rss_before_kib: before.kib,
    rss_open_kib: rssOpen,
    rss_after_kib: after.kib,
    settled: before.settled && after.settled,
    settle_ms: after.ms,
    memory_before: memoryBefore,
    memory_after: memoryAfter,
    kib_per_conn: per(before.kib, after.kib),
    kib_per_conn_no_gc: per(before.kib, rssOpen),
    heap_kib_per_conn: per(memoryBefore.heapUsed, memoryAfter.heapUsed) / 1024,
    external_kib_per_conn: per(memoryBefore.external, memoryAfter.external) / 1024,
    open_s: openS,
    conns_per_s: opts.conns / openS,
    server_cpu_s: serverCpuS,
    server_cpu_pct: (serverCpuS / openS) * 100,
    server_cpu_ms_per_1k: (serverCpuS * 1000) / (opts.conns / 1000),
    upgrade_p50_ms: Math.max(...open.opened.map((line) => line.latency_p50_ms)),
    upgrade_p99_ms: Math.max(...open.opened.map((line) => line.latency_p99_ms)),
    upgrade_max_ms: Math.max(...open.opened.map((line) => line.latency_max_ms)),
    generator_cpu_pct: Math.max(...open.opened.map((line) => line.gen_cpu_pct)),
    close_s: Math.max(...closed.closed.map((line) => line.close_s)),
    pings: closed.closed.reduce((sum, line) => sum + line.pings, 0),
    open_lines: open.opened,
    closed_lines: closed.closed,
  };
}

// ---------------------------------------------------------------- statistics and output

interface Summary {
  kibPerConn: number;
  kibPerConnNoGc: number;
  heapKibPerConn: number;
  externalKibPerConn: number;
  rssBeforeMiB: number;
  rssAfterMiB: number;
  openS: number;
  connsPerS: number;
  serverCpuPct: number;
  serverCpuMsPer1k: number;
  upgradeP99Ms: number;
  /** (max - min) / median KiB per connection across rounds, in percent. */
  spreadPct: number;
  unsettledRuns: number;
  errors: string[];
}

function summarize(runs: RunOutcome[]): Summary {
  const ok = runs.filter((run): run is RunResult => run.ok);
  const of = (f: (run: RunResult) => number) => median(ok.map(f));
  const perConn = ok.map((run) => run.kib_per_conn);
  const kibPerConn = median(perConn);
  return {
    kibPerConn,
    kibPerConnNoGc: of((run) => run.kib_per_conn_no_gc),
    heapKibPerConn: of((run) => run.heap_kib_per_conn),
    externalKibPerConn: of((run) => run.external_kib_per_conn),
    rssBeforeMiB: of((run) => run.rss_before_kib) / 1024,
    rssAfterMiB: of((run) => run.rss_after_kib) / 1024,
    openS: of((run) => run.open_s),
    connsPerS: of((run) => run.conns_per_s),
    serverCpuPct: of((run) => run.server_cpu_pct),
    serverCpuMsPer1k: of((run) => run.server_cpu_ms_per_1k),
    upgradeP99Ms: of((run) => run.upgrade_p99_ms),
    spreadPct:
      ok.length > 1 ? ((Math.max(...perConn) - Math.min(...perConn)) / kibPerConn) * 100 : 0,
    unsettledRuns: ok.filter((run) => !run.settled).length,
    errors: runs.flatMap((run) => (run.ok ? [] : [run.error])),
  };
}

type Verdict = "met" | "missed" | "unclear" | "-";

interface Ratio {
  ours: string;
  peer: string;
  /** Median KiB per connection of `ours` over that of `peer`: lower is better. */
  ratio: number;
  /** The same ratio in each round (the two servers measured in the same round). */
  perRound: number[];
  target?: number;
  /** "met" or "missed" when every round agrees with the median; "unclear" when rounds fall on
   *  both sides of the target; "-" without a target. */
  verdict: Verdict;
}

function ratiosOf(
  specs: ServerSpec[],
  summaries: Record<string, Summary>,
  runs: Record<string, RunOutcome[]>,
): Ratio[] {
  const pairs: Array<[ServerSpec, ServerSpec, number | undefined]> = [];
  const ours = specs.filter((spec) => spec.kind === "switchboard");
  for (const a of ours) {
    for (const b of specs.filter((spec) => spec.kind !== "switchboard")) {
      pairs.push([a, b, a.isolation === "main" && b.kind === "ws" ? TARGET_VS_WS : undefined]);
    }
  }
  const main = ours.find((spec) => spec.isolation === "main");
  const worker = ours.find((spec) => spec.isolation === "worker");
  if (main && worker) pairs.push([worker, main, undefined]);
  return pairs.map(([a, b, target]) => {
    const ratio = summaries[a.name].kibPerConn / summaries[b.name].kibPerConn;
    const perRound: number[] = [];
    runs[a.name].forEach((run, i) => {
      const peer = runs[b.name][i];
      if (run.ok && peer?.ok) perRound.push(run.kib_per_conn / peer.kib_per_conn);
    });
    let verdict: Verdict = "-";
    if (target !== undefined && Number.isFinite(ratio)) {
      const met = ratio <= target;
      verdict = perRound.some((r) => r <= target !== met) ? "unclear" : met ? "met" : "missed";
    }
    return { ours: a.name, peer: b.name, ratio, perRound, target, verdict };
  });
}

function serverSpecs(opts: Options, uws: boolean): ServerSpec[] {
  const script = (file: string) => path.join("bench", "servers", file);
  const specs: ServerSpec[] = opts.isolation.map((isolation) => ({
    name: `switchboard ${isolation}`,
    kind: "switchboard",
    isolation,
    script: script("switchboard-service.ts"),
    args: ["--isolation", isolation],
  }));
  if (opts.peers.includes("ws")) {
    specs.push({ name: "ws", kind: "ws", script: script("ws-echo.ts"), args: [] });
  }
  if (opts.peers.includes("uws") && uws) {
    specs.push({ name: "uWS", kind: "uws", script: script("uws-echo.ts"), args: [] });
  }
  return specs;
}

const kib = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "-");
const mib = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : "-");
const secs = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "-");

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const started = Date.now();
  compileLoadgen(
    loadgenSource,
    loadgenBinary,
    [],
    "It needs a C compiler (Debian: apt-get install gcc).",
  );

  const notices: string[] = [];
  const warnings: string[] = [];
  if (!opts.tsx) {
    const warning = buildServers();
    if (warning !== undefined) warnings.push(warning);
  }
  let uwsVersion: string | undefined;
  if (opts.peers.includes("uws")) {
    const available = uwsAvailability();
    if (available.ok) uwsVersion = available.version;
    else {
      notices.push(
        `uWebSockets.js skipped: the uwebsockets package does not load (${available.why}); ` +
          "install it with `npm install --no-save uwebsockets` to compare with it",
      );
    }
  }

  // Children are started with their soft limit on open files raised to the hard limit; the
  // server needs one file per connection, and a few more.
  const limits = fileLimits("self");
  const fileLimit = limits?.hard ?? Number.POSITIVE_INFINITY;
  const needFiles = opts.conns + SERVER_FILE_MARGIN;
  if (limits === undefined) {
    notices.push("could not read /proc/self/limits; open-file limits are left as they are");
  } else if (limits.hard < needFiles) {
    throw new Error(
      `a process here may hold at most ${limits.hard} open files (the hard limit, which cannot ` +
        `be raised); the server needs about ${needFiles} for ${opts.conns} connections: ` +
        `use --conns ${Math.max(1, limits.hard - SERVER_FILE_MARGIN)} or less`,
    );
  }

  const specs = serverSpecs(opts, uwsVersion !== undefined);
  const where = placement(opts.pin);
  const backgroundPct = await idleLoadPct(opts.quick ? 300 : 1000);
  const split = shares(opts.conns, opts.generators);
  const sources = split.map((n, g) => `${formatRate(n)} from ${sourceAddress(g)}`).join(", ");

  console.log(
    `memory per idle connection: ${formatRate(opts.conns)} connections held open and idle per ` +
      `server (${sources}); ${opts.rounds} round(s), each on freshly started servers`,
  );
  console.log(
    `node ${process.version}, ws ${packageVersion("ws")}` +
      `${uwsVersion ? `, uwebsockets ${uwsVersion}` : ""}, ${os.cpus()[0]?.model ?? "unknown CPU"}, ` +
      `${os.availableParallelism()} CPUs, ${where.note}; servers ` +
      `${opts.tsx ? "run from TypeScript through tsx" : "compiled with tsc"}; open files per process: ` +
      `${limits ? `${limits.soft} (hard ${limits.hard}), children raised to ${fileLimit}` : "unknown"}`,
  );
  console.log(`servers: ${specs.map((spec) => spec.name).join(", ")}`);
  for (const notice of notices) console.log(`notice: ${notice}`);
  if (backgroundPct !== undefined && backgroundPct > OTHER_LOAD_WARN_PCT) {
    console.log(
      `warning: before starting, other processes used ${formatPct(backgroundPct)} of a core; ` +
        "CPU figures and opening times will be noisy (memory figures much less so)",
    );
  }
  console.log("");

  const runs: Record<string, RunOutcome[]> = Object.fromEntries(specs.map((s) => [s.name, []]));
  for (let round = 0; round < opts.rounds; round++) {
    // Fresh servers each round: a server that has held N connections keeps some of that memory,
    // and its next "before" reading would hide part of the next run's growth. All of the round's
    // servers start together (an idle server costs no CPU) and are measured one at a time,
    // rotating who goes first.
    const servers: RunningServer[] = [];
    try {
      const started = await Promise.allSettled(
        specs.map((spec) => startServer(spec, opts, where, fileLimit)),
      );
      for (const [i, result] of started.entries()) {
        if (result.status === "fulfilled") servers.push(result.value);
        else runs[specs[i].name].push({ ok: false, error: String(result.reason) });
      }
      for (const server of servers) {
        const notice =
          `${server.spec.name}: its limit on open files is ${server.fileLimit}; it could not be ` +
          `raised to ${fileLimit}`;
        if (server.fileLimit < fileLimit && !notices.includes(notice)) notices.push(notice);
      }
      const shift = round % Math.max(1, servers.length);
      const order = [...servers.slice(shift), ...servers.slice(0, shift)];
      for (const server of order) {
        let outcome: RunOutcome;
        try {
          outcome = await measure(server, opts, where, fileLimit);
        } catch (error) {
          outcome = { ok: false, error: error instanceof Error ? error.message : String(error) };
        }
        runs[server.spec.name].push(outcome);
        await stopServer(server);
        const shown = outcome.ok
          ? `${kib(outcome.kib_per_conn)} KiB/conn (RSS ${mib(outcome.rss_before_kib / 1024)} -> ` +
            `${mib(outcome.rss_after_kib / 1024)} MiB; before GC ${kib(outcome.kib_per_conn_no_gc)}), ` +
            `opened in ${secs(outcome.open_s)} s (server ${formatPct(outcome.server_cpu_pct)}, ` +
            `generators <= ${formatPct(outcome.generator_cpu_pct)}), closed in ` +
            `${secs(outcome.close_s)} s${outcome.settled ? "" : ", RSS not settled"}`
          : `error: ${outcome.error}`;
        console.log(`  round ${round + 1}/${opts.rounds}  ${server.spec.name.padEnd(18)} ${shown}`);
      }
    } finally {
      await Promise.all(servers.map(stopServer));
    }
  }

  const summaries: Record<string, Summary> = {};
  let failed = false;
  for (const spec of specs) {
    const summary = summarize(runs[spec.name]);
    summaries[spec.name] = summary;
    for (const error of summary.errors) {
      failed = true;
      warnings.push(`${spec.name}: ${error}`);
    }
    if (summary.unsettledRuns > 0) {
      warnings.push(
        `${spec.name}: in ${summary.unsettledRuns} run(s) RSS still moved by ${SETTLE_PCT}% or ` +
          `more between readings ${SETTLE_INTERVAL_MS} ms apart after ${SETTLE_MAX_MS / 1000} s; ` +
          "the last reading was used",
      );
    }
  }

  const rows = [
    [
      "server",
      "KiB/conn",
      "before GC",
      "heap",
      "external",
      "RSS before MiB",
      "RSS after MiB",
      "open s",
      "conns/s",
      "server CPU",
      "CPU ms/1k",
      "upgrade p99 ms",
      "spread",
    ],
  ];
  for (const spec of specs) {
    const s = summaries[spec.name];
    rows.push([
      spec.name,
      kib(s.kibPerConn),
      kib(s.kibPerConnNoGc),
      kib(s.heapKibPerConn),
      kib(s.externalKibPerConn),
      mib(s.rssBeforeMiB),
      mib(s.rssAfterMiB),
      secs(s.openS),
      formatRate(s.connsPerS),
      formatPct(s.serverCpuPct),
      formatRate(s.serverCpuMsPer1k),
      Number.isFinite(s.upgradeP99Ms) ? s.upgradeP99Ms.toFixed(1) : "-",
      formatPct(s.spreadPct),
    ]);
  }
  console.log(`\n${table(rows)}\n`);

  const ratios = ratiosOf(specs, summaries, runs);
  for (const r of ratios) {
    if (r.verdict === "unclear") {
      warnings.push(
        `${r.ours} / ${r.peer}: the median ratio is ${formatRatio(r.ratio)} but the rounds ` +
          `(${r.perRound.map(formatRatio).join(", ")}) fall on both sides of the target ` +
          `${r.target?.toFixed(2)}; rerun with more --rounds`,
      );
    }
  }
  if (ratios.length > 0) {
    const ratioRows = [["ratio (KiB/conn)", "of medians", "per round", "target", ""]];
    for (const r of ratios) {
      ratioRows.push([
        `${r.ours} / ${r.peer}`,
        formatRatio(r.ratio),
        r.perRound.map(formatRatio).join(" "),
        r.target === undefined ? "-" : `<= ${r.target.toFixed(2)}`,
        r.verdict === "-" ? "" : r.verdict,
      ]);
    }
    console.log(`${table(ratioRows)}\n`);
  }
  console.log(
    "KiB/conn: (RSS with the connections open - RSS before) / connections, both read after a\n" +
      `  full GC once RSS settled (two readings ${SETTLE_INTERVAL_MS} ms apart within ${SETTLE_PCT}%); median of rounds\n` +
      "before GC: the same with RSS read the moment the last connection opened\n" +
      "heap, external: growth per connection of the main thread's JavaScript heap (heapUsed) and of\n" +
      "  memory held outside it (Buffers, native objects), in KiB, from process.memoryUsage()\n" +
      "RSS before/after: the server's resident memory, every thread (for switchboard worker that\n" +
      "  includes the worker's heap, where the service keeps its clients; heap and external do not)\n" +
      "open s, conns/s: from starting the generators until every connection was open\n" +
      "server CPU: % of one core the server used while they opened; CPU ms/1k: per 1,000 connections\n" +
      `upgrade p99: from connect() to the validated 101 response, with ${opts.concurrency} in progress per generator\n` +
      "spread: (max - min) / median KiB/conn across rounds\n" +
      "ratios: lower is better; the target is Switchboard main at most ws",
  );
  for (const warning of warnings) console.log(`warning: ${warning}`);
  for (const notice of notices) console.log(`notice: ${notice}`);

  const elapsedS = (Date.now() - started) / 1000;
  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date(started).toISOString().replace(/[:.]/g, "-");
  const file = path.join(resultsDir, `idle-${stamp}${opts.quick ? "-quick" : ""}.json`);
  const report = {
    date: new Date(started).toISOString(),
    elapsed_s: elapsedS,
    git: gitDescribe(),
    node: process.version,
    ws: packageVersion("ws"),
    uwebsockets: uwsVersion ?? null,
    cpu: os.cpus()[0]?.model ?? "unknown",
    cpus: os.availableParallelism(),
    kernel: os.release(),
    placement: where.note,
    file_limits: limits ?? null,
    background_load_pct: backgroundPct,
    loadgen_built: statSync(loadgenBinary).mtime.toISOString(),
    options: opts,
    notices,
    warnings,
    servers: specs,
    summary: summaries,
    ratios,
    runs,
  };
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nfinished in ${elapsedS.toFixed(0)} s; results in ${path.relative(rootDir, file)}`);
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    killAll();
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  },
);
