// `npm run bench`: echo throughput of Switchboard against the `ws` package, over loopback.
//
// Each server runs alone in its own Node process, pinned to one core; the C load generator
// (bench/loadgen/echo-load.c, compiled here with the system `cc`) runs pinned to the other.
// For every message size the generator runs against each server in turn, alternating which
// goes first, for several rounds; the table shows the median messages/s of each, their ratio,
// and the CPU both processes used, so a reader can tell whether the server was the bottleneck.
// See docs/benchmarks.md for how to read the output.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const rootDir = path.dirname(benchDir);
const buildDir = path.join(benchDir, ".build");
const resultsDir = path.join(benchDir, "results");
const loadgenSource = path.join(benchDir, "loadgen", "echo-load.c");
const loadgenBinary = path.join(buildDir, "echo-load");

/** Above this share of one core the generator may itself be what limits throughput. */
const GENERATOR_CPU_WARN_PCT = 80;
/** Below this the server was not kept busy, so msg/s says little about the server. */
const SERVER_CPU_WARN_PCT = 85;
/** Above this, other processes competed for the CPUs during a run and its msg/s is noisy. */
const OTHER_LOAD_WARN_PCT = 20;
const SERVER_READY_TIMEOUT_MS = 20_000;
const SERVER_STOP_TIMEOUT_MS = 3_000;
const CONNECT_TIMEOUT_MS = 10_000;

interface Options {
  quick: boolean;
  rounds: number;
  warmupMs: number;
  durationMs: number;
  conns: number;
  inflight: number;
  sizes: number[];
  deflateSizes: number[];
  pin: boolean;
  baseline: boolean;
}

interface ServerSpec {
  /** Column label. */
  name: string;
  script: string;
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
  gen_cpu_user_s: number;
  gen_cpu_sys_s: number;
  gen_cpu_pct: number;
  server_cpu_s: number;
  server_cpu_pct: number;
  server_rss_kb: number;
  /** Busy CPU of the whole machine, in % of one core (two busy cores: 200). */
  machine_cpu_pct: number;
  negotiated: string;
}

type RunOutcome = LoadResult | { ok: false; error: string };

interface Case {
  variant: "plain" | "deflate";
  size: number;
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
  --deflate-sizes A,B   sizes with permessage-deflate, or "none" (default 4096)
  --baseline            run ws against ws, to see how much two equal servers differ
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
    deflateSizes: [4096],
    pin: true,
    baseline: false,
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
      case "--deflate-sizes":
        opts.deflateSizes = list(arg, argv[++i]);
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
  if (opts.quick) {
    // Explicit flags win over the --quick defaults.
    if (!explicit.has("--rounds")) opts.rounds = 1;
    if (!explicit.has("--warmup-ms")) opts.warmupMs = 300;
    if (!explicit.has("--duration-ms")) opts.durationMs = 1000;
  }
  return opts;
}

// ---------------------------------------------------------------- child processes

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

function killAll(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping servers and the load generator\n`);
    killAll();
    process.exit(130);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- build

function compileLoadgen(): void {
  mkdirSync(buildDir, { recursive: true });
  const args = ["-O2", "-Wall", "-Wextra", "-o", loadgenBinary, loadgenSource, "-lz"];
  const result = spawnSync("cc", args, { encoding: "utf8", timeout: 60_000 });
  if (result.error || result.status !== 0) {
    const detail = result.error ? result.error.message : result.stderr;
    throw new Error(
      `could not compile the load generator with \`cc ${args.join(" ")}\`:\n${detail}\n` +
        "It needs a C compiler and the zlib headers (Debian: apt-get install gcc zlib1g-dev).",
    );
  }
  if (result.stderr.trim() !== "") process.stderr.write(result.stderr);
}

// ---------------------------------------------------------------- CPU placement

/** CPUs this process may run on, from /proc/self/status (Linux). */
function allowedCpus(): number[] {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const line = /^Cpus_allowed_list:\s*(.+)$/m.exec(status)?.[1];
    if (!line) return [];
    const cpus: number[] = [];
    for (const part of line.trim().split(",")) {
      const [lo, hi] = part.split("-").map(Number);
      for (let cpu = lo; cpu <= (hi ?? lo); cpu++) cpus.push(cpu);
    }
    return cpus;
  } catch {
    return [];
  }
}

interface Placement {
  serverCpu?: number;
  generatorCpu?: number;
  note: string;
}

function placement(pin: boolean): Placement {
  if (!pin) return { note: "not pinned (--no-pin)" };
  const cpus = allowedCpus();
  const taskset = spawnSync("taskset", ["-V"], { encoding: "utf8" });
  if (cpus.length < 2 || taskset.error) {
    return { note: "not pinned (needs two CPUs and taskset)" };
  }
  return {
    serverCpu: cpus[0],
    generatorCpu: cpus[1],
    note: `server on CPU ${cpus[0]}, generator on CPU ${cpus[1]}`,
  };
}

/** Busy CPU seconds of the whole machine so far, from /proc/stat; undefined off Linux. */
function machineBusyS(): number | undefined {
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
    // cpu user nice system idle iowait irq softirq ...: everything but idle and iowait.
    const [user, nice, system, , , irq, softirq] = fields.slice(1).map(Number);
    return (user + nice + system + irq + softirq) / 100; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/** How much of a core other processes use right now, sampled over `ms`. */
async function idleLoadPct(ms: number): Promise<number | undefined> {
  const before = machineBusyS();
  await sleep(ms);
  const after = machineBusyS();
  if (before === undefined || after === undefined) return undefined;
  return ((after - before) / (ms / 1000)) * 100;
}

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
  const nodeArgs = ["--import", "tsx", spec.script, "--port", "0"];
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
  size: number,
  deflate: boolean,
  opts: Options,
  where: Placement,
): Promise<RunOutcome> {
  const args = [
    "--port",
    String(server.port),
    "--size",
    String(size),
    "--conns",
    String(opts.conns),
    "--inflight",
    String(opts.inflight),
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
        resolve(parsed);
      } catch {
        const why = signal === "SIGKILL" ? `killed after ${limitMs} ms` : `exit ${signal ?? code}`;
        resolve({ ok: false, error: `load generator ${why}: ${(stderr || stdout).trim()}` });
      }
    });
  });
}

// ---------------------------------------------------------------- statistics and output

function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** CPU used during a run by processes other than the server and the generator. */
function otherLoadPct(run: LoadResult): number {
  if (run.machine_cpu_pct < 0 || run.server_cpu_pct < 0) return Number.NaN;
  return Math.max(0, run.machine_cpu_pct - run.server_cpu_pct - run.gen_cpu_pct);
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
  wireBytesPerMessage: number;
  /** Echoes per read() of the generator: how many messages the server packs into a write. */
  echoesPerRead: number;
  errors: string[];
}

function summarize(runs: RunOutcome[]): Summary {
  const ok = okRuns(runs);
  const rates = ok.map((run) => run.msgs_per_s);
  const msgsPerS = median(rates);
  return {
    msgsPerS,
    msgsPerServerCpuS: median(
      ok.filter((run) => run.server_cpu_s > 0).map((run) => run.messages / run.server_cpu_s),
    ),
    spreadPct: ok.length > 1 ? ((Math.max(...rates) - Math.min(...rates)) / msgsPerS) * 100 : 0,
    serverCpuPct: median(ok.map((run) => run.server_cpu_pct)),
    generatorCpuPct: ok.length ? Math.max(...ok.map((run) => run.gen_cpu_pct)) : Number.NaN,
    disturbedRuns: ok.filter((run) => otherLoadPct(run) > OTHER_LOAD_WARN_PCT).length,
    wireBytesPerMessage: median(ok.map((run) => run.wire_bytes_in_per_s / run.msgs_per_s)),
    echoesPerRead: median(ok.filter((run) => run.reads > 0).map((run) => run.messages / run.reads)),
    errors: runs.filter((run) => !run.ok).map((run) => (run.ok ? "" : run.error)),
  };
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

function formatRate(n: number): string {
  return Number.isFinite(n) ? integer.format(n) : "error";
}

function formatPct(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(0)}%` : "-";
}

function formatBatch(n: number): string {
  return Number.isFinite(n) ? n.toFixed(1) : "-";
}

function sizeLabel(size: number): string {
  if (size >= 1024 && size % 1024 === 0) return `${size / 1024} KiB`;
  return `${size} B`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  const line = (row: string[]) =>
    row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]) : cell.padStart(widths[col])));
  const rule = widths.map((w) => "-".repeat(w));
  return [line(rows[0]), rule, ...rows.slice(1).map(line)].map((r) => r.join("  ")).join("\n");
}

function gitDescribe(): string {
  const rev = spawnSync("git", ["rev-parse", "--short", "HEAD"], {
    cwd: rootDir,
    encoding: "utf8",
  });
  if (rev.status !== 0) return "unknown";
  const dirty = spawnSync("git", ["status", "--porcelain"], { cwd: rootDir, encoding: "utf8" });
  return `${rev.stdout.trim()}${dirty.stdout.trim() ? "+dirty" : ""}`;
}

function wsVersion(): string {
  try {
    const pkg = readFileSync(path.join(rootDir, "node_modules", "ws", "package.json"), "utf8");
    return (JSON.parse(pkg) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  const started = Date.now();

  const ours: ServerSpec = opts.baseline
    ? { name: "ws (A)", script: path.join("bench", "servers", "ws-echo.ts") }
    : { name: "switchboard", script: path.join("bench", "servers", "switchboard-echo.ts") };
  const theirs: ServerSpec = {
    name: opts.baseline ? "ws (B)" : "ws",
    script: path.join("bench", "servers", "ws-echo.ts"),
  };
  if (!opts.baseline && !existsSync(path.join(rootDir, "src", "index.ts"))) {
    throw new Error(
      "src/index.ts does not exist yet, so there is no Switchboard server to measure.\n" +
        "Run `npm run bench -- --baseline` to measure ws against itself.",
    );
  }

  compileLoadgen();
  const where = placement(opts.pin);
  const backgroundPct = await idleLoadPct(1000);
  const cases: Case[] = [
    ...opts.sizes.map((size) => ({ variant: "plain" as const, size })),
    ...opts.deflateSizes.map((size) => ({ variant: "deflate" as const, size })),
  ];
  const perRunS = (opts.warmupMs + opts.durationMs) / 1000;
  const estimateS = Math.ceil(cases.length * 2 * opts.rounds * (perRunS + 0.4));
  console.log(
    `echo over loopback: ${opts.conns} connections x ${opts.inflight} in flight, text messages, ` +
      `${opts.rounds} round(s) of ${opts.warmupMs} ms warm-up + ${opts.durationMs} ms measured`,
  );
  console.log(
    `node ${process.version}, ws ${wsVersion()}, ${os.cpus()[0]?.model ?? "unknown CPU"}, ` +
      `${os.availableParallelism()} CPUs, ${where.note}; about ${estimateS} s`,
  );
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
      for (const spec of [ours, theirs]) servers.push(await startServer(spec, deflate, where));
      const byCase = variantCases.map((c) => ({
        ...c,
        runs: Object.fromEntries(servers.map((s) => [s.spec.name, [] as RunOutcome[]])),
      }));
      for (let round = 0; round < opts.rounds; round++) {
        for (const [index, entry] of byCase.entries()) {
          // Alternate who goes first so neither always runs on a freshly warmed machine.
          const order = (round + index) % 2 === 0 ? servers : [...servers].reverse();
          for (const server of order) {
            const outcome = await runLoad(server, entry.size, deflate, opts, where);
            entry.runs[server.spec.name].push(outcome);
            const label = `${variant} ${sizeLabel(entry.size)} ${server.spec.name}`;
            const shown = outcome.ok
              ? `${formatRate(outcome.msgs_per_s)} msg/s (server ${formatPct(outcome.server_cpu_pct)}, ` +
                `generator ${formatPct(outcome.gen_cpu_pct)}, other ${formatPct(otherLoadPct(outcome))})`
              : `error: ${outcome.error}`;
            console.log(`  round ${round + 1}/${opts.rounds}  ${label.padEnd(28)} ${shown}`);
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

  const header = [
    "message",
    `${ours.name} msg/s`,
    `${theirs.name} msg/s`,
    "ratio",
    "per CPU-s",
    "server CPU",
    "generator CPU",
    "echoes/read",
    "spread",
  ];
  const rows = [header];
  const warnings: string[] = [];
  let failed = false;
  const summaries = results.map((result) => {
    const a = summarize(result.runs[ours.name]);
    const b = summarize(result.runs[theirs.name]);
    const label = `${sizeLabel(result.size)} text${result.variant === "deflate" ? " + deflate" : ""}`;
    const ratio = a.msgsPerS / b.msgsPerS;
    const cpuRatio = a.msgsPerServerCpuS / b.msgsPerServerCpuS;
    rows.push([
      label,
      formatRate(a.msgsPerS),
      formatRate(b.msgsPerS),
      Number.isFinite(ratio) ? ratio.toFixed(2) : "-",
      Number.isFinite(cpuRatio) ? cpuRatio.toFixed(2) : "-",
      `${formatPct(a.serverCpuPct)} / ${formatPct(b.serverCpuPct)}`,
      formatPct(Math.max(a.generatorCpuPct, b.generatorCpuPct)),
      `${formatBatch(a.echoesPerRead)} / ${formatBatch(b.echoesPerRead)}`,
      `${formatPct(a.spreadPct)} / ${formatPct(b.spreadPct)}`,
    ]);
    for (const [name, summary] of [
      [ours.name, a],
      [theirs.name, b],
    ] as const) {
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
      if (summary.serverCpuPct < SERVER_CPU_WARN_PCT) {
        warnings.push(
          `${label}, ${name}: the server used only ${formatPct(summary.serverCpuPct)} of a core; ` +
            "something other than the server limited throughput",
        );
      }
    }
    return { ...result, summary: { [ours.name]: a, [theirs.name]: b, ratio, cpuRatio } };
  });

  const elapsedS = (Date.now() - started) / 1000;
  console.log(`\n${table(rows)}\n`);
  console.log(
    "ratio: median msg/s of the first server / the second (above 1: the first is faster)\n" +
      "per CPU-s: the same ratio for messages per CPU-second of the server (less sensitive to other load)\n" +
      "server CPU: % of one core, first / second server; generator CPU: highest of all its runs\n" +
      "echoes/read: messages per read() of the generator, i.e. how many echoes a server packs per write\n" +
      "spread: (max - min) / median msg/s across rounds, first / second server",
  );
  for (const warning of warnings) console.log(`warning: ${warning}`);

  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date(started).toISOString().replace(/[:.]/g, "-");
  const file = path.join(resultsDir, `echo-${stamp}${opts.quick ? "-quick" : ""}.json`);
  const report = {
    date: new Date(started).toISOString(),
    elapsed_s: elapsedS,
    git: gitDescribe(),
    node: process.version,
    ws: wsVersion(),
    cpu: os.cpus()[0]?.model ?? "unknown",
    cpus: os.availableParallelism(),
    kernel: os.release(),
    placement: where.note,
    background_load_pct: backgroundPct,
    loadgen_built: statSync(loadgenBinary).mtime.toISOString(),
    servers: [ours, theirs],
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
