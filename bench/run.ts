// `npm run bench`: echo throughput of Switchboard against the `ws` package, over loopback, and
// of Switchboard's service server with the echo service on the I/O thread, in a worker thread
// and in a child process (the isolation benchmark).
//
// Each server runs alone in its own Node process, pinned to one core; the C load generator
// (bench/loadgen/echo-load.c, compiled here with the system `cc`) runs pinned to the other.
// For every message size the generator runs against each server in turn, rotating which goes
// first, for several rounds; the tables show the median messages/s of each, their ratios, the
// latency percentiles of the echoes, and the CPU the processes used, so a reader can tell
// whether the server was the bottleneck. Besides the pipelined cases (16 messages in flight per
// connection) there is a latency-bound one: 32 bytes with 1 message in flight.
// See docs/benchmarks.md for how to read the output.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import {
  benchDir,
  buildDir,
  compileLoadgen,
  descendantsCpuS,
  formatMs,
  formatPct,
  formatRate,
  formatRatio,
  gitDescribe,
  idleLoadPct,
  killAll,
  machineStealS,
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

const loadgenSource = path.join(benchDir, "loadgen", "echo-load.c");
const loadgenBinary = path.join(buildDir, "echo-load");

/** Above this share of one core the generator may itself be what limits throughput. */
const GENERATOR_CPU_WARN_PCT = 80;
/** Below this the server was not kept busy, so msg/s says little about the server. */
const SERVER_CPU_WARN_PCT = 85;
/** Above this, other processes competed for the CPUs during a run and its msg/s is noisy. */
const OTHER_LOAD_WARN_PCT = 20;
/** Above this, the hypervisor took the CPUs away during a run (a virtual machine's steal time). */
const STEAL_WARN_PCT = 10;
const SERVER_READY_TIMEOUT_MS = 20_000;
const SERVER_STOP_TIMEOUT_MS = 3_000;
const CONNECT_TIMEOUT_MS = 10_000;
/** Where the isolation benchmark wants a worker-isolated service, relative to the same on the I/O thread. */
const WORKER_TARGET_RATIO = 0.7;

type Isolation = "main" | "worker" | "process";
const ISOLATIONS: readonly Isolation[] = ["main", "worker", "process"];

interface Options {
  quick: boolean;
  rounds: number;
  warmupMs: number;
  durationMs: number;
  conns: number;
  inflight: number;
  sizes: number[];
  /** Plain sizes measured with 1 message in flight per connection (latency-bound). */
  latencySizes: number[];
  deflateSizes: number[];
  pin: boolean;
  baseline: boolean;
  /** Isolation modes of the service server to measure on the plain cases. */
  isolation: Isolation[];
}

interface ServerSpec {
  /** Column label. */
  name: string;
  script: string;
  /** Extra arguments after `--port 0 [--deflate]`. */
  args: string[];
  /** The cases it takes part in. */
  variants: ReadonlyArray<Case["variant"]>;
}

/** One line of the generator's JSON output (see echo-load.c). */
interface LoadResult {
  ok: true;
  size: number;
  messages: number;
  duration_s: number;
  msgs_per_s: number;
  payload_bytes_per_s: number;
  wire_bytes_in_per_s: number;
  reads: number;
  writes: number;
  client_frame_bytes: number;
  conn_min: number;
  conn_max: number;
  /** Per echo in the measured window: from the write of its message to its arrival. */
  latency_samples: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  latency_p999_ms: number;
  latency_max_ms: number;
  gen_cpu_user_s: number;
  gen_cpu_sys_s: number;
  gen_cpu_pct: number;
  server_cpu_s: number;
  server_cpu_pct: number;
  server_rss_kb: number;
  /** Busy CPU of the whole machine, in % of one core (two busy cores: 200). */
  machine_cpu_pct: number;
  negotiated: string;
  /**
   * Added here, not by the generator: CPU of the server's child processes (a service in
   * isolation "process"), in % of one core, sampled from the generator's start to its exit.
   */
  children_cpu_pct?: number;
  /**
   * Added here: CPU time the hypervisor gave to other guests while this machine wanted to run
   * (steal in /proc/stat), in % of one core, over the same span as `children_cpu_pct`.
   */
  steal_pct?: number;
}

type RunOutcome = LoadResult | { ok: false; error: string };

interface Case {
  variant: "plain" | "deflate";
  size: number;
  /** Messages in flight per connection: --inflight, or 1 for the latency-bound cases. */
  inflight: number;
}

interface CaseResult extends Case {
  runs: Record<string, RunOutcome[]>;
}

const USAGE = `usage: npm run bench -- [options]

  --quick               short smoke run (1 round, 0.3 s warm-up, 1 s measured)
  --rounds N            rounds per case; the median is reported (default 5)
  --warmup-ms N         warm-up before each measurement (default 500)
  --duration-ms N       measured window per run (default 2000)
  --conns N             connections (default 64)
  --inflight N          messages in flight per connection (default 16)
  --sizes A,B           text message sizes in bytes, plain (default 32,4096)
  --latency-sizes A,B   plain sizes also measured with 1 message in flight per connection, the
                        latency-bound case, or "none" (default 32)
  --deflate-sizes A,B   sizes with permessage-deflate, or "none" (default 4096)
  --isolation A,B       service-server isolation modes measured on the plain cases, or
                        "none" (default main,worker,process)
  --baseline            run ws against ws, to see how much two equal servers differ
                        (no service servers)
  --no-pin              do not pin the server and the generator to separate cores
  --help                this text
`;

function parseOptions(argv: string[]): Options {
  const opts: Options = {
    quick: false,
    rounds: 5,
    warmupMs: 500,
    durationMs: 2000,
    conns: 64,
    inflight: 16,
    sizes: [32, 4096],
    latencySizes: [32],
    deflateSizes: [4096],
    pin: true,
    baseline: false,
    isolation: [...ISOLATIONS],
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
  const list = (flag: string, value: string | undefined): number[] => {
    explicit.add(flag);
    if (value === "none" || value === "") return [];
    return (value ?? "").split(",").map((part) => int(flag, part, 0, 16 * 1024 * 1024));
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    switch (arg) {
      case "--quick":
        opts.quick = true;
        break;
      case "--baseline":
        opts.baseline = true;
        break;
      case "--no-pin":
        opts.pin = false;
        break;
      case "--rounds":
        opts.rounds = int(arg, argv[++i], 1, 100);
        break;
      case "--warmup-ms":
        opts.warmupMs = int(arg, argv[++i], 0, 60_000);
        break;
      case "--duration-ms":
        opts.durationMs = int(arg, argv[++i], 100, 120_000);
        break;
      case "--conns":
        opts.conns = int(arg, argv[++i], 1, 10_000);
        break;
      case "--inflight":
        opts.inflight = int(arg, argv[++i], 1, 4096);
        break;
      case "--sizes":
        opts.sizes = list(arg, argv[++i]);
        break;
      case "--latency-sizes":
        opts.latencySizes = list(arg, argv[++i]);
        break;
      case "--deflate-sizes":
        opts.deflateSizes = list(arg, argv[++i]);
        break;
      case "--isolation": {
        const value = argv[++i] ?? "";
        const modes = value === "none" ? [] : value.split(",");
        for (const mode of modes) {
          if (!ISOLATIONS.includes(mode as Isolation)) {
            throw new Error(`--isolation takes ${ISOLATIONS.join(", ")} or none, got ${mode}`);
          }
        }
        opts.isolation = ISOLATIONS.filter((mode) => modes.includes(mode));
        break;
      }
      case "--help":
      case "-h":
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${arg}\n\n${USAGE}`);
    }
  }
  if (opts.quick) {
    // Explicit flags win over the --quick defaults.
    if (!explicit.has("--rounds")) opts.rounds = 1;
    if (!explicit.has("--warmup-ms")) opts.warmupMs = 300;
    if (!explicit.has("--duration-ms")) opts.durationMs = 1000;
  }
  return opts;
}

// ---------------------------------------------------------------- child processes

// ---------------------------------------------------------------- build

// ---------------------------------------------------------------- CPU placement

// ---------------------------------------------------------------- servers

interface RunningServer {
  spec: ServerSpec;
  child: ChildProcess;
  pid: number;
  port: number;
  stderrTail: string[];
}

async function startServer(
  spec: ServerSpec,
  deflate: boolean,
  where: Placement,
): Promise<RunningServer> {
  const nodeArgs = ["--import", "tsx", spec.script, "--port", "0", ...spec.args];
  if (deflate) nodeArgs.push("--deflate");
  const [command, args] =
    where.serverCpu === undefined
      ? [process.execPath, nodeArgs]
      : ["taskset", ["-c", String(where.serverCpu), process.execPath, ...nodeArgs]];
  // taskset execs node in place, so the child's pid is the server's pid for /proc accounting.
  const child = track(spawn(command, args, { cwd: rootDir, stdio: ["ignore", "pipe", "pipe"] }));
  const stderrTail: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(
        new Error(`${spec.name} server printed no ws:// URL in ${SERVER_READY_TIMEOUT_MS} ms`),
      );
    }, SERVER_READY_TIMEOUT_MS);
    createInterface({ input: child.stdout! }).on("line", (line) => {
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
      reject(
        new Error(
          `${spec.name} server exited (${signal ?? code}) before listening:\n${stderrTail.join("\n")}`,
        ),
      );
    });
  });
  return { spec, child, pid: child.pid!, port, stderrTail };
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

// ---------------------------------------------------------------- load generator

function runLoad(
  server: RunningServer,
  { size, inflight, variant }: Case,
  opts: Options,
  where: Placement,
): Promise<RunOutcome> {
  const deflate = variant === "deflate";
  const args = [
    "--port",
    String(server.port),
    "--size",
    String(size),
    "--conns",
    String(opts.conns),
    "--inflight",
    String(inflight),
    "--warmup-ms",
    String(opts.warmupMs),
    "--duration-ms",
    String(opts.durationMs),
    "--connect-timeout-ms",
    String(CONNECT_TIMEOUT_MS),
    "--server-pid",
    String(server.pid),
  ];
  if (deflate) args.push("--deflate");
  if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
  const limitMs = CONNECT_TIMEOUT_MS + opts.warmupMs + opts.durationMs + 5_000;
  const childrenBefore = descendantsCpuS(server.pid);
  const stealBefore = machineStealS();
  const startedAt = performance.now();
  return new Promise((resolve) => {
    const child = track(spawn(loadgenBinary, args, { stdio: ["ignore", "pipe", "pipe"] }));
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.message });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split("\n").pop() ?? "";
      try {
        const parsed = JSON.parse(line) as RunOutcome;
        const childrenAfter = descendantsCpuS(server.pid);
        const stealAfter = machineStealS();
        // Over connect, warm-up and the measured window: the load is the same throughout but
        // for the connect phase, which takes a few milliseconds.
        const wallS = (performance.now() - startedAt) / 1000;
        if (parsed.ok && childrenBefore !== undefined && childrenAfter !== undefined) {
          parsed.children_cpu_pct = Math.max(0, ((childrenAfter - childrenBefore) / wallS) * 100);
        }
        if (parsed.ok && stealBefore !== undefined && stealAfter !== undefined) {
          parsed.steal_pct = Math.max(0, ((stealAfter - stealBefore) / wallS) * 100);
        }
        resolve(parsed);
      } catch {
        const why = signal === "SIGKILL" ? `killed after ${limitMs} ms` : `exit ${signal ?? code}`;
        resolve({ ok: false, error: `load generator ${why}: ${(stderr || stdout).trim()}` });
      }
    });
  });
}

// ---------------------------------------------------------------- statistics and output

/** CPU of the server during a run, its child processes included, in % of one core. */
function serverCpuPct(run: LoadResult): number {
  if (run.server_cpu_pct < 0) return Number.NaN;
  return run.server_cpu_pct + (run.children_cpu_pct ?? 0);
}

/** Server CPU seconds over the measured window, its child processes included. */
function serverCpuS(run: LoadResult): number {
  return run.server_cpu_s + ((run.children_cpu_pct ?? 0) / 100) * run.duration_s;
}

/** CPU used during a run by processes other than the server and the generator. */
function otherLoadPct(run: LoadResult): number {
  if (run.machine_cpu_pct < 0 || run.server_cpu_pct < 0) return Number.NaN;
  return Math.max(0, run.machine_cpu_pct - serverCpuPct(run) - run.gen_cpu_pct);
}

function okRuns(runs: RunOutcome[]): LoadResult[] {
  return runs.filter((run): run is LoadResult => run.ok);
}

interface Summary {
  msgsPerS: number;
  /** Messages per CPU-second of the server: efficiency, robust to other load on the machine. */
  msgsPerServerCpuS: number;
  /** (max - min) / median of msgs/s across rounds, in percent. */
  spreadPct: number;
  serverCpuPct: number;
  generatorCpuPct: number;
  /** Runs during which other processes used more than OTHER_LOAD_WARN_PCT of a core. */
  disturbedRuns: number;
  /** Runs during which the hypervisor stole more than STEAL_WARN_PCT of a core. */
  stolenRuns: number;
  wireBytesPerMessage: number;
  /** Echoes per read() of the generator: how many messages the server packs into a write. */
  echoesPerRead: number;
  /** Medians across rounds of each round's percentile of the echoes' latency. */
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyP999Ms: number;
  errors: string[];
}

function summarize(runs: RunOutcome[]): Summary {
  const ok = okRuns(runs);
  const rates = ok.map((run) => run.msgs_per_s);
  const msgsPerS = median(rates);
  return {
    msgsPerS,
    msgsPerServerCpuS: median(
      ok.filter((run) => run.server_cpu_s > 0).map((run) => run.messages / serverCpuS(run)),
    ),
    spreadPct: ok.length > 1 ? ((Math.max(...rates) - Math.min(...rates)) / msgsPerS) * 100 : 0,
    serverCpuPct: median(ok.map(serverCpuPct)),
    generatorCpuPct: ok.length ? Math.max(...ok.map((run) => run.gen_cpu_pct)) : Number.NaN,
    disturbedRuns: ok.filter((run) => otherLoadPct(run) > OTHER_LOAD_WARN_PCT).length,
    stolenRuns: ok.filter((run) => (run.steal_pct ?? 0) > STEAL_WARN_PCT).length,
    wireBytesPerMessage: median(ok.map((run) => run.wire_bytes_in_per_s / run.msgs_per_s)),
    echoesPerRead: median(ok.filter((run) => run.reads > 0).map((run) => run.messages / run.reads)),
    latencyP50Ms: median(ok.map((run) => run.latency_p50_ms)),
    latencyP99Ms: median(ok.map((run) => run.latency_p99_ms)),
    latencyP999Ms: median(ok.map((run) => run.latency_p999_ms)),
    errors: runs.filter((run) => !run.ok).map((run) => (run.ok ? "" : run.error)),
  };
}

function formatBatch(n: number): string {
  return Number.isFinite(n) ? n.toFixed(1) : "-";
}

function sizeLabel(size: number): string {
  if (size >= 1024 && size % 1024 === 0) return `${size / 1024} KiB`;
  return `${size} B`;
}

/** The row label of a case: "32 B text", "32 B text x 1 in flight", "4 KiB text + deflate". */
function caseLabel(c: Case, opts: Options): string {
  const inflight = c.inflight === opts.inflight ? "" : ` x ${c.inflight} in flight`;
  return `${sizeLabel(c.size)} text${inflight}${c.variant === "deflate" ? " + deflate" : ""}`;
}

// ---------------------------------------------------------------- main

/** The servers of a run: Switchboard and ws on every case, the service server on plain ones. */
function serverSpecs(opts: Options): {
  ours: ServerSpec;
  theirs: ServerSpec;
  services: ServerSpec[];
} {
  const every = ["plain", "deflate"] as const;
  const ours: ServerSpec = opts.baseline
    ? {
        name: "ws (A)",
        script: path.join("bench", "servers", "ws-echo.ts"),
        args: [],
        variants: every,
      }
    : {
        name: "switchboard",
        script: path.join("bench", "servers", "switchboard-echo.ts"),
        args: [],
        variants: every,
      };
  const theirs: ServerSpec = {
    name: opts.baseline ? "ws (B)" : "ws",
    script: path.join("bench", "servers", "ws-echo.ts"),
    args: [],
    variants: every,
  };
  // The isolation benchmark: the same echo as a service, on the I/O thread, in a worker, in a
  // process. Plain cases only: with deflate the compression cost, the same in every mode, hides
  // the cost of the boundary.
  const services: ServerSpec[] = opts.baseline
    ? []
    : opts.isolation.map((isolation) => ({
        name: `service ${isolation}`,
        script: path.join("bench", "servers", "switchboard-service.ts"),
        args: ["--isolation", isolation],
        variants: ["plain"],
      }));
  return { ours, theirs, services };
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const started = Date.now();

  const { ours, theirs, services } = serverSpecs(opts);
  const specs = [ours, theirs, ...services];
  if (!opts.baseline && !existsSync(path.join(rootDir, "src", "index.ts"))) {
    throw new Error(
      "src/index.ts does not exist yet, so there is no Switchboard server to measure.\n" +
        "Run `npm run bench -- --baseline` to measure ws against itself.",
    );
  }

  compileLoadgen(
    loadgenSource,
    loadgenBinary,
    ["-lz"],
    "It needs a C compiler and the zlib headers (Debian: apt-get install gcc zlib1g-dev).",
  );
  const where = placement(opts.pin);
  const backgroundPct = await idleLoadPct(1000);
  // With --inflight 1 the pipelined cases are the latency-bound ones already.
  const latencySizes = opts.inflight === 1 ? [] : opts.latencySizes;
  const cases: Case[] = [
    ...opts.sizes.map((size) => ({ variant: "plain" as const, size, inflight: opts.inflight })),
    ...latencySizes.map((size) => ({
      variant: "plain" as const,
      size,
      inflight: 1,
    })),
    ...opts.deflateSizes.map((size) => ({
      variant: "deflate" as const,
      size,
      inflight: opts.inflight,
    })),
  ];
  const perRunS = (opts.warmupMs + opts.durationMs) / 1000;
  const runsPerRound = cases.reduce(
    (sum, c) => sum + specs.filter((spec) => spec.variants.includes(c.variant)).length,
    0,
  );
  // About 0.4 s per run for the generator's start and the pause after it, 1.5 s per server start.
  const estimateS = Math.ceil(runsPerRound * opts.rounds * (perRunS + 0.4) + specs.length * 1.5);
  const latencyNote =
    latencySizes.length > 0 ? ` (and x 1 at ${latencySizes.map(sizeLabel).join(", ")})` : "";
  console.log(
    `echo over loopback: ${opts.conns} connections x ${opts.inflight} in flight${latencyNote}, ` +
      `text messages, ${opts.rounds} round(s) of ${opts.warmupMs} ms warm-up + ` +
      `${opts.durationMs} ms measured`,
  );
  console.log(
    `node ${process.version}, ws ${packageVersion("ws")}, ${os.cpus()[0]?.model ?? "unknown CPU"}, ` +
      `${os.availableParallelism()} CPUs, ${where.note}; about ${estimateS} s`,
  );
  console.log(`servers: ${specs.map((spec) => spec.name).join(", ")}`);
  if (backgroundPct !== undefined && backgroundPct > OTHER_LOAD_WARN_PCT) {
    console.log(
      `warning: before starting, other processes used ${formatPct(backgroundPct)} of a core; ` +
        'figures will be noisy (see the "other" CPU of each run)',
    );
  }
  console.log("");

  const results: CaseResult[] = [];
  for (const variant of ["plain", "deflate"] as const) {
    const variantCases = cases.filter((c) => c.variant === variant);
    if (variantCases.length === 0) continue;
    const deflate = variant === "deflate";
    const servers: RunningServer[] = [];
    try {
      for (const spec of specs.filter((s) => s.variants.includes(variant))) {
        servers.push(await startServer(spec, deflate, where));
      }
      const byCase = variantCases.map((c) => ({
        ...c,
        runs: Object.fromEntries(servers.map((s) => [s.spec.name, [] as RunOutcome[]])),
      }));
      for (let round = 0; round < opts.rounds; round++) {
        for (const [index, entry] of byCase.entries()) {
          // Rotate who goes first so no server always runs on a freshly warmed machine (with
          // two servers this alternates them).
          const shift = (round + index) % servers.length;
          const order = [...servers.slice(shift), ...servers.slice(0, shift)];
          for (const server of order) {
            const outcome = await runLoad(server, entry, opts, where);
            entry.runs[server.spec.name].push(outcome);
            const label = `${caseLabel(entry, opts)}, ${server.spec.name}`;
            const shown = outcome.ok
              ? `${formatRate(outcome.msgs_per_s)} msg/s, p50 ${formatMs(outcome.latency_p50_ms)} ms ` +
                `(server ${formatPct(serverCpuPct(outcome))}, ` +
                `generator ${formatPct(outcome.gen_cpu_pct)}, other ${formatPct(otherLoadPct(outcome))}` +
                `${(outcome.steal_pct ?? 0) >= 1 ? `, stolen ${formatPct(outcome.steal_pct!)}` : ""})`
              : `error: ${outcome.error}`;
            console.log(`  round ${round + 1}/${opts.rounds}  ${label.padEnd(40)} ${shown}`);
            // Let the server finish closing the previous connections before the next run.
            await sleep(200);
          }
        }
      }
      results.push(...byCase);
    } finally {
      await Promise.all(servers.map(stopServer));
    }
  }

  const warnings: string[] = [];
  let failed = false;
  const summaries = results.map((result) => {
    const label = caseLabel(result, opts);
    // With one message in flight the server waits for the generator by design: its CPU and the
    // isolation target say nothing there; its figures are the latencies.
    const pipelined = result.inflight > 1;
    const byServer: Record<string, Summary> = {};
    for (const [name, runs] of Object.entries(result.runs)) {
      const summary = summarize(runs);
      byServer[name] = summary;
      for (const error of summary.errors) {
        failed = true;
        warnings.push(`${label}, ${name}: ${error}`);
      }
      if (summary.generatorCpuPct > GENERATOR_CPU_WARN_PCT) {
        warnings.push(
          `${label}, ${name}: the generator used ${formatPct(summary.generatorCpuPct)} of a core; ` +
            "it may be the bottleneck, so this figure understates the server",
        );
      }
      if (summary.disturbedRuns > 0) {
        warnings.push(
          `${label}, ${name}: ${summary.disturbedRuns} of ${opts.rounds} run(s) shared the machine ` +
            `with other processes (over ${OTHER_LOAD_WARN_PCT}% of a core); ` +
            "msg/s is noisy there, the per CPU-s ratio less so",
        );
      }
      if (summary.stolenRuns > 0) {
        warnings.push(
          `${label}, ${name}: in ${summary.stolenRuns} of ${opts.rounds} run(s) the hypervisor ` +
            `took over ${STEAL_WARN_PCT}% of a core away from this machine (steal time); ` +
            "msg/s is noisy there, the per CPU-s ratio less so",
        );
      }
      if (pipelined && summary.serverCpuPct < SERVER_CPU_WARN_PCT) {
        warnings.push(
          `${label}, ${name}: the server used only ${formatPct(summary.serverCpuPct)} of a core; ` +
            "something other than the server limited throughput",
        );
      }
    }
    const rate = (name: string) => byServer[name]?.msgsPerS ?? Number.NaN;
    const perCpu = (name: string) => byServer[name]?.msgsPerServerCpuS ?? Number.NaN;
    const ratios = {
      ratio: rate(ours.name) / rate(theirs.name),
      cpuRatio: perCpu(ours.name) / perCpu(theirs.name),
      workerMain: rate("service worker") / rate("service main"),
      workerMainPerCpu: perCpu("service worker") / perCpu("service main"),
      processMain: rate("service process") / rate("service main"),
      mainWs: rate("service main") / rate(theirs.name),
      mainPlain: rate("service main") / rate(ours.name),
    };
    if (pipelined && ratios.workerMain < WORKER_TARGET_RATIO) {
      warnings.push(
        `${label}: a worker-isolated service echoed ${formatRatio(ratios.workerMain)} x what the ` +
          `same service did on the I/O thread; the target is ${WORKER_TARGET_RATIO.toFixed(2)} or more`,
      );
    }
    return { ...result, label, summary: byServer, ratios };
  });

  const elapsedS = (Date.now() - started) / 1000;
  const headToHead = [
    [
      "message",
      `${ours.name} msg/s`,
      `${theirs.name} msg/s`,
      "ratio",
      "per CPU-s",
      "p50 ms",
      "p99 ms",
      "p99.9 ms",
      "server CPU",
      "generator CPU",
      "echoes/read",
      "spread",
    ],
  ];
  for (const { label, summary, ratios } of summaries) {
    const a = summary[ours.name];
    const b = summary[theirs.name];
    headToHead.push([
      label,
      formatRate(a.msgsPerS),
      formatRate(b.msgsPerS),
      formatRatio(ratios.ratio),
      formatRatio(ratios.cpuRatio),
      `${formatMs(a.latencyP50Ms)} / ${formatMs(b.latencyP50Ms)}`,
      `${formatMs(a.latencyP99Ms)} / ${formatMs(b.latencyP99Ms)}`,
      `${formatMs(a.latencyP999Ms)} / ${formatMs(b.latencyP999Ms)}`,
      `${formatPct(a.serverCpuPct)} / ${formatPct(b.serverCpuPct)}`,
      formatPct(Math.max(a.generatorCpuPct, b.generatorCpuPct)),
      `${formatBatch(a.echoesPerRead)} / ${formatBatch(b.echoesPerRead)}`,
      `${formatPct(a.spreadPct)} / ${formatPct(b.spreadPct)}`,
    ]);
  }
  console.log(`\n${table(headToHead)}\n`);
  console.log(
    "ratio: median msg/s of the first server / the second (above 1: the first is faster)\n" +
      "per CPU-s: the same ratio for messages per CPU-second of the server (less sensitive to other load)\n" +
      "p50/p99/p99.9 ms: per echo, from the write of its message to its arrival (median of rounds),\n" +
      "  first / second server; on average connections x in flight / msg/s (Little's law)\n" +
      "server CPU: % of one core, first / second server; generator CPU: highest of all its runs\n" +
      "echoes/read: messages per read() of the generator, i.e. how many echoes a server packs per write\n" +
      "spread: (max - min) / median msg/s across rounds, first / second server",
  );

  const isolationCases = summaries.filter((s) => s.variant === "plain");
  if (services.length > 0 && isolationCases.length > 0) {
    const modes = opts.isolation;
    const has = (mode: Isolation) => modes.includes(mode);
    const header = ["message", ...modes.map((mode) => `${mode} msg/s`)];
    if (has("worker") && has("main")) header.push("worker/main", "(per CPU-s)");
    if (has("process") && has("main")) header.push("process/main");
    if (has("main")) header.push(`main/${theirs.name}`, `main/${ours.name}`);
    header.push(
      `p50 ms (${modes.join(" / ")})`,
      "p99 ms",
      "p99.9 ms",
      `server CPU (${modes.join(" / ")})`,
      "echoes/read",
      "spread",
    );
    const rows = [header];
    for (const { label, summary, ratios } of isolationCases) {
      const each = modes.map((mode) => summary[`service ${mode}`]);
      const row = [label, ...each.map((s) => formatRate(s.msgsPerS))];
      if (has("worker") && has("main")) {
        row.push(formatRatio(ratios.workerMain), formatRatio(ratios.workerMainPerCpu));
      }
      if (has("process") && has("main")) row.push(formatRatio(ratios.processMain));
      if (has("main")) row.push(formatRatio(ratios.mainWs), formatRatio(ratios.mainPlain));
      row.push(
        each.map((s) => formatMs(s.latencyP50Ms)).join(" / "),
        each.map((s) => formatMs(s.latencyP99Ms)).join(" / "),
        each.map((s) => formatMs(s.latencyP999Ms)).join(" / "),
        each.map((s) => formatPct(s.serverCpuPct)).join(" / "),
        each.map((s) => formatBatch(s.echoesPerRead)).join(" / "),
        each.map((s) => formatPct(s.spreadPct)).join(" / "),
      );
      rows.push(row);
    }
    console.log(
      `\nisolation: the echo as a service (bench/services/echo.ts) on the service server\n`,
    );
    console.log(`${table(rows)}\n`);
    console.log(
      `worker/main: msg/s of the service in a worker thread / on the I/O thread: the cost of the ` +
        `boundary (target: ${WORKER_TARGET_RATIO.toFixed(2)} or more, with ${opts.inflight} in flight)\n` +
        "(per CPU-s): the same ratio for messages per CPU-second of the server, all its threads\n" +
        "process/main: the same for a service in a child process (IPC and serialization)\n" +
        `main/${theirs.name}: the service on the I/O thread against ws (the lead Switchboard keeps ` +
        "with the service layer on top)\n" +
        `main/${ours.name}: the service on the I/O thread against the plain server: the cost of ` +
        "the service layer itself\n" +
        "server CPU: % of one core, all threads and child processes of the server included",
    );
  }
  for (const warning of warnings) console.log(`warning: ${warning}`);

  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date(started).toISOString().replace(/[:.]/g, "-");
  const file = path.join(resultsDir, `echo-${stamp}${opts.quick ? "-quick" : ""}.json`);
  const report = {
    date: new Date(started).toISOString(),
    elapsed_s: elapsedS,
    git: gitDescribe(),
    node: process.version,
    ws: packageVersion("ws"),
    cpu: os.cpus()[0]?.model ?? "unknown",
    cpus: os.availableParallelism(),
    kernel: os.release(),
    placement: where.note,
    background_load_pct: backgroundPct,
    loadgen_built: statSync(loadgenBinary).mtime.toISOString(),
    servers: specs,
    options: opts,
    cases: summaries,
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
