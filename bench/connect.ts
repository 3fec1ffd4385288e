// `npm run bench:connect`: connection rate. How many whole WebSocket connections per second a
// server takes through their life with 32 concurrent connectors: TCP connect, the opening
// handshake (RFC 6455 section 4.1, a fresh key each time), a closing handshake started by the
// client with code 1000 (section 7.1.2) and the server's close of the TCP connection (section
// 7.1.1). Measured for Switchboard (the echo service on the service server, with the service on
// the I/O thread and in a worker thread), for the `ws` package and for uWebSockets.js, when the
// `uwebsockets` package is installed.
//
// Each server runs alone in its own Node process, pinned to one core; the C load generator
// (bench/loadgen/connect-load.c, compiled here with the system `cc`) runs pinned to the other.
// It keeps exactly C connections in progress, checks every response and every close, and ends
// the run with an error on the first one that goes wrong. Each server is measured in turn,
// rotating which goes first, for several rounds; the tables show medians, ratios and the CPU
// each side used. See docs/benchmarks.md for how to read the output.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import {
  benchDir,
  buildDir,
  compileLoadgen,
  descendantsCpuS,
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

const loadgenSource = path.join(benchDir, "loadgen", "connect-load.c");
const loadgenBinary = path.join(buildDir, "connect-load");

/** What the product asks of Switchboard's connection rate (isolation main) relative to ws. */
const TARGET_VS_WS = 1.5;
/** Above this share of one core the generator may itself be what limits the rate. */
const GENERATOR_CPU_WARN_PCT = 80;
/** Below this the server was not kept busy, so handshakes/s says little about the server. */
const SERVER_CPU_WARN_PCT = 85;
/** Above this, other processes competed for the CPUs during a run. */
const OTHER_LOAD_WARN_PCT = 20;
/** Above this, the hypervisor took the CPUs away during a run (steal time). */
const STEAL_WARN_PCT = 10;
const SERVER_READY_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 3_000;
/** Longest a single connection may take from connect() to the server's FIN. */
const CONNECTION_TIMEOUT_MS = 5_000;
/** Between runs: the server finishes with the last run's connections. */
const PAUSE_MS = 300;

type Isolation = "main" | "worker";
const ISOLATIONS: readonly Isolation[] = ["main", "worker"];
type Peer = "ws" | "uws";

interface Options {
  quick: boolean;
  rounds: number;
  warmupMs: number;
  durationMs: number;
  concurrency: number;
  pin: boolean;
  /** Where the Switchboard echo service runs; one Switchboard server per entry. */
  isolation: Isolation[];
  peers: Peer[];
}

interface ServerSpec {
  /** Column label. */
  name: string;
  kind: "switchboard" | Peer;
  isolation?: Isolation;
  script: string;
  args: string[];
}

/** One line of the generator's JSON output (see connect-load.c). */
interface LoadResult {
  ok: true;
  concurrency: number;
  warmup_s: number;
  duration_s: number;
  /** Connections that completed their whole life in the measured window. */
  handshakes: number;
  handshakes_per_s: number;
  errors: number;
  total_handshakes: number;
  /** Connections in progress when the window closed, all of which then completed cleanly. */
  drained: number;
  drain_s: number;
  latency_samples: number;
  /** From connect() to the server's FIN, for connections completed in the window. */
  latency_p50_ms: number;
  latency_p99_ms: number;
  latency_p999_ms: number;
  latency_max_ms: number;
  /** From connect() to a validated 101 response. */
  upgrade_p50_ms: number;
  upgrade_p99_ms: number;
  gen_cpu_user_s: number;
  gen_cpu_sys_s: number;
  gen_cpu_pct: number;
  server_cpu_s: number;
  server_cpu_pct: number;
  server_rss_kb: number;
  /** Busy CPU of the whole machine, in % of one core (two busy cores: 200). */
  machine_cpu_pct: number;
  /** The part of it spent in interrupts and softirqs: on loopback, mostly the kernel's TCP work. */
  machine_irq_pct: number;
  /** Busy share of the server's CPU, softirqs included (-1 when not pinned). */
  server_core_busy_pct: number;
  server_core_irq_pct: number;
  /** Added here: CPU of the server's child processes, % of one core. */
  children_cpu_pct?: number;
  /** Added here: steal time over the run, % of one core. */
  steal_pct?: number;
}

type RunOutcome = LoadResult | { ok: false; error: string };

const USAGE = `usage: npm run bench:connect -- [options]

  --quick               short run (1 round, 300 ms warm-up, 1 s measured), about 15 s
  --rounds N            rounds; the median is reported (default 5)
  --warmup-ms N         warm-up before each measurement (default 1000)
  --duration-ms N       measured window per run (default 3000)
  --concurrency N       connections in progress at once (default 32)
  --isolation A,B       where the Switchboard echo service runs: main, worker (default main,worker)
  --peers A,B           servers to compare with: ws, uws, or none (default ws,uws; uws is
                        skipped with a notice when the uwebsockets package does not load)
  --no-pin              do not pin the server and the generator to separate cores
  --help                this text
`;

function parseOptions(argv: string[]): Options {
  const opts: Options = {
    quick: false,
    rounds: 5,
    warmupMs: 1000,
    durationMs: 3000,
    concurrency: 32,
    pin: true,
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
      case "--rounds":
        opts.rounds = int(arg, argv[++i], 1, 100);
        break;
      case "--warmup-ms":
        opts.warmupMs = int(arg, argv[++i], 0, 60_000);
        break;
      case "--duration-ms":
        opts.durationMs = int(arg, argv[++i], 100, 120_000);
        break;
      case "--concurrency":
        opts.concurrency = int(arg, argv[++i], 1, 1024);
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
    if (!explicit.has("--rounds")) opts.rounds = 1;
    if (!explicit.has("--warmup-ms")) opts.warmupMs = 300;
    if (!explicit.has("--duration-ms")) opts.durationMs = 1000;
  }
  return opts;
}

// ---------------------------------------------------------------- servers

interface RunningServer {
  spec: ServerSpec;
  child: ChildProcess;
  pid: number;
  port: number;
}

async function startServer(spec: ServerSpec, where: Placement): Promise<RunningServer> {
  const nodeArgs = ["--import", "tsx", spec.script, "--port", "0", ...spec.args];
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
      reject(new Error(`${spec.name} printed no ws:// URL in ${SERVER_READY_TIMEOUT_MS} ms`));
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
          `${spec.name} exited (${signal ?? code}) before listening:\n${stderrTail.join("\n")}`,
        ),
      );
    });
  });
  return { spec, child, pid: child.pid!, port };
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

// ---------------------------------------------------------------- load generator

function runLoad(server: RunningServer, opts: Options, where: Placement): Promise<RunOutcome> {
  const args = [
    "--port",
    String(server.port),
    "--path",
    "/echo",
    "--concurrency",
    String(opts.concurrency),
    "--warmup-ms",
    String(opts.warmupMs),
    "--duration-ms",
    String(opts.durationMs),
    "--timeout-ms",
    String(CONNECTION_TIMEOUT_MS),
    "--server-pid",
    String(server.pid),
  ];
  if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
  if (where.serverCpu !== undefined) args.push("--server-cpu", String(where.serverCpu));
  // Warm-up, window, then at most one connection timeout of draining, plus the generator's own
  // margin of a second: past this the generator is stuck, and its figure would mean nothing.
  const limitMs = opts.warmupMs + opts.durationMs + 2 * CONNECTION_TIMEOUT_MS + 5_000;
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

function serverCpuS(run: LoadResult): number {
  return run.server_cpu_s + ((run.children_cpu_pct ?? 0) / 100) * run.duration_s;
}

/**
 * CPU used during a run by processes other than the server and the generator, at least.
 * Interrupts and softirqs are left out: on loopback they are mostly the kernel's TCP work for
 * the two processes' connects, sends and closes, which the kernel may or may not also charge to
 * the process that was running (see `server_core_busy_pct`), so this is a lower bound.
 */
function otherLoadPct(run: LoadResult): number {
  if (run.machine_cpu_pct < 0 || run.server_cpu_pct < 0) return Number.NaN;
  const irq = Math.max(0, run.machine_irq_pct);
  return Math.max(0, run.machine_cpu_pct - irq - serverCpuPct(run) - run.gen_cpu_pct);
}

/** How busy the server's core was, kernel work included; the process's CPU when not pinned. */
function serverCorePct(run: LoadResult): number {
  return run.server_core_busy_pct >= 0 ? run.server_core_busy_pct : serverCpuPct(run);
}

interface Summary {
  handshakesPerS: number;
  /** Handshakes per CPU-second of the server: efficiency, robust to other load. */
  handshakesPerServerCpuS: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyP999Ms: number;
  upgradeP50Ms: number;
  serverCpuPct: number;
  /** Busy share of the server's core, softirqs (loopback TCP) included. */
  serverCorePct: number;
  serverCoreIrqPct: number;
  generatorCpuPct: number;
  serverRssMiB: number;
  /** (max - min) / median handshakes/s across rounds, in percent. */
  spreadPct: number;
  disturbedRuns: number;
  stolenRuns: number;
  errors: string[];
}

function summarize(runs: RunOutcome[]): Summary {
  const ok = runs.filter((run): run is LoadResult => run.ok);
  const rates = ok.map((run) => run.handshakes_per_s);
  const rate = median(rates);
  return {
    handshakesPerS: rate,
    handshakesPerServerCpuS: median(
      ok.filter((run) => run.server_cpu_s > 0).map((run) => run.handshakes / serverCpuS(run)),
    ),
    latencyP50Ms: median(ok.map((run) => run.latency_p50_ms)),
    latencyP99Ms: median(ok.map((run) => run.latency_p99_ms)),
    latencyP999Ms: median(ok.map((run) => run.latency_p999_ms)),
    upgradeP50Ms: median(ok.map((run) => run.upgrade_p50_ms)),
    serverCpuPct: median(ok.map(serverCpuPct)),
    serverCorePct: median(ok.map(serverCorePct)),
    serverCoreIrqPct: median(ok.map((run) => run.server_core_irq_pct)),
    generatorCpuPct: ok.length ? Math.max(...ok.map((run) => run.gen_cpu_pct)) : Number.NaN,
    serverRssMiB: ok.length ? Math.max(...ok.map((run) => run.server_rss_kb)) / 1024 : Number.NaN,
    spreadPct: ok.length > 1 ? ((Math.max(...rates) - Math.min(...rates)) / rate) * 100 : 0,
    disturbedRuns: ok.filter((run) => otherLoadPct(run) > OTHER_LOAD_WARN_PCT).length,
    stolenRuns: ok.filter((run) => (run.steal_pct ?? 0) > STEAL_WARN_PCT).length,
    errors: runs.flatMap((run) => (run.ok ? [] : [run.error])),
  };
}

const formatMs = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "-");

type Verdict = "met" | "missed" | "unclear" | "-";

/** Whether a ratio reaches its target, by handshakes/s and by handshakes per server CPU-s. */
function verdictOf(ratio: number, perCpuRatio: number, target: number | undefined): Verdict {
  if (target === undefined || !Number.isFinite(ratio)) return "-";
  const met = ratio >= target;
  if (Number.isFinite(perCpuRatio) && perCpuRatio >= target !== met) return "unclear";
  return met ? "met" : "missed";
}

// ---------------------------------------------------------------- main

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

interface Ratio {
  ours: string;
  peer: string;
  ratio: number;
  perCpuRatio: number;
  target?: number;
  /**
   * "met" or "missed" when both ratios agree; "unclear" when handshakes/s and per CPU-s fall on
   * different sides of the target (one server was held back by something else); "-" without a
   * target.
   */
  verdict: Verdict;
}

/** Switchboard main against ws (the target), every Switchboard server against every peer, and
 *  worker against main (the cost of attaching each connection to a service in a worker). */
function ratiosOf(specs: ServerSpec[], summaries: Record<string, Summary>): Ratio[] {
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
    const ratio = summaries[a.name].handshakesPerS / summaries[b.name].handshakesPerS;
    const perCpuRatio =
      summaries[a.name].handshakesPerServerCpuS / summaries[b.name].handshakesPerServerCpuS;
    const verdict = verdictOf(ratio, perCpuRatio, target);
    return { ours: a.name, peer: b.name, ratio, perCpuRatio, target, verdict };
  });
}

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
  const specs = serverSpecs(opts, uwsVersion !== undefined);
  const where = placement(opts.pin);
  const backgroundPct = await idleLoadPct(1000);
  const perRunS = (opts.warmupMs + opts.durationMs + PAUSE_MS) / 1000 + 0.3;
  const estimateS = Math.ceil(specs.length * opts.rounds * perRunS + specs.length * 2);

  console.log(
    `connection rate over loopback: ${opts.concurrency} connections in progress at once, each ` +
      "connect, upgrade, close 1000 and the server's FIN; " +
      `${opts.rounds} round(s) of ${opts.warmupMs} ms warm-up + ${opts.durationMs} ms measured`,
  );
  console.log(
    `node ${process.version}, ws ${packageVersion("ws")}` +
      `${uwsVersion ? `, uwebsockets ${uwsVersion}` : ""}, ${os.cpus()[0]?.model ?? "unknown CPU"}, ` +
      `${os.availableParallelism()} CPUs, ${where.note}; about ${estimateS} s`,
  );
  console.log(`servers: ${specs.map((spec) => spec.name).join(", ")}`);
  for (const notice of notices) console.log(`notice: ${notice}`);
  if (backgroundPct !== undefined && backgroundPct > OTHER_LOAD_WARN_PCT) {
    console.log(
      `warning: before starting, other processes used ${formatPct(backgroundPct)} of a core; ` +
        'figures will be noisy (see the "other" CPU of each run)',
    );
  }
  console.log("");

  const runs: Record<string, RunOutcome[]> = Object.fromEntries(specs.map((s) => [s.name, []]));
  const servers: RunningServer[] = [];
  try {
    for (const spec of specs) servers.push(await startServer(spec, where));
    for (let round = 0; round < opts.rounds; round++) {
      // Rotate who goes first so no server always runs on a freshly warmed machine.
      const shift = round % servers.length;
      const order = [...servers.slice(shift), ...servers.slice(0, shift)];
      for (const server of order) {
        const outcome = await runLoad(server, opts, where);
        runs[server.spec.name].push(outcome);
        const shown = outcome.ok
          ? `${formatRate(outcome.handshakes_per_s)} handshakes/s, ` +
            `p50 ${formatMs(outcome.latency_p50_ms)} ms ` +
            `(server ${formatPct(serverCpuPct(outcome))}, its core ${formatPct(serverCorePct(outcome))}, ` +
            `generator ${formatPct(outcome.gen_cpu_pct)}, ` +
            `other ${formatPct(otherLoadPct(outcome))}` +
            `${(outcome.steal_pct ?? 0) >= 1 ? `, stolen ${formatPct(outcome.steal_pct!)}` : ""})`
          : `error: ${outcome.error}`;
        console.log(`  round ${round + 1}/${opts.rounds}  ${server.spec.name.padEnd(20)} ${shown}`);
        await sleep(PAUSE_MS);
      }
    }
  } finally {
    await Promise.all(servers.map(stopServer));
  }

  const summaries: Record<string, Summary> = {};
  const warnings: string[] = [];
  let failed = false;
  for (const spec of specs) {
    const summary = summarize(runs[spec.name]);
    summaries[spec.name] = summary;
    const name = spec.name;
    for (const error of summary.errors) {
      failed = true;
      warnings.push(`${name}: ${error}`);
    }
    if (summary.generatorCpuPct > GENERATOR_CPU_WARN_PCT) {
      warnings.push(
        `${name}: the generator used ${formatPct(summary.generatorCpuPct)} of a core; it may be ` +
          "the bottleneck, so this figure is the generator's limit rather than the server's",
      );
    }
    if (summary.serverCorePct < SERVER_CPU_WARN_PCT) {
      warnings.push(
        `${name}: the server's core was busy only ${formatPct(summary.serverCorePct)} of the time ` +
          "(its process and the kernel's network work together); something other than the " +
          "server limited the rate",
      );
    }
    if (summary.disturbedRuns > 0) {
      warnings.push(
        `${name}: ${summary.disturbedRuns} of ${opts.rounds} run(s) shared the machine with other ` +
          `processes (over ${OTHER_LOAD_WARN_PCT}% of a core); the per CPU-s figure is the better guide`,
      );
    }
    if (summary.stolenRuns > 0) {
      warnings.push(
        `${name}: in ${summary.stolenRuns} of ${opts.rounds} run(s) the hypervisor took over ` +
          `${STEAL_WARN_PCT}% of a core away (steal time)`,
      );
    }
  }

  const rows = [
    [
      "server",
      "handshakes/s",
      "per CPU-s",
      "p50 ms",
      "p99 ms",
      "p99.9 ms",
      "upgrade p50",
      "server CPU",
      "core (irq)",
      "generator CPU",
      "RSS MiB",
      "spread",
    ],
  ];
  for (const spec of specs) {
    const s = summaries[spec.name];
    rows.push([
      spec.name,
      formatRate(s.handshakesPerS),
      formatRate(s.handshakesPerServerCpuS),
      formatMs(s.latencyP50Ms),
      formatMs(s.latencyP99Ms),
      formatMs(s.latencyP999Ms),
      formatMs(s.upgradeP50Ms),
      formatPct(s.serverCpuPct),
      `${formatPct(s.serverCorePct)} (${formatPct(s.serverCoreIrqPct)})`,
      formatPct(s.generatorCpuPct),
      Number.isFinite(s.serverRssMiB) ? s.serverRssMiB.toFixed(0) : "-",
      formatPct(s.spreadPct),
    ]);
  }
  console.log(`\n${table(rows)}\n`);

  const ratios = ratiosOf(specs, summaries);
  for (const r of ratios) {
    if (r.verdict === "unclear") {
      warnings.push(
        `${r.ours} / ${r.peer}: handshakes/s (${formatRatio(r.ratio)}) and per CPU-s ` +
          `(${formatRatio(r.perCpuRatio)}) fall on different sides of the target ` +
          `${r.target?.toFixed(2)}; a server was held back by something else (see the core and ` +
          "other CPU of each run); rerun on a quieter machine",
      );
    }
  }
  if (ratios.length > 0) {
    const ratioRows = [["ratio", "handshakes/s", "per CPU-s", "target", ""]];
    for (const r of ratios) {
      ratioRows.push([
        `${r.ours} / ${r.peer}`,
        formatRatio(r.ratio),
        formatRatio(r.perCpuRatio),
        r.target === undefined ? "-" : `>= ${r.target.toFixed(2)}`,
        r.verdict === "-" ? "" : r.verdict,
      ]);
    }
    console.log(`${table(ratioRows)}\n`);
  }
  console.log(
    "handshakes/s: connections per second that went through their whole life in the measured\n" +
      "  window: TCP connect, upgrade (101, accept checked), close 1000 echoed, the server's FIN\n" +
      "  (median of rounds)\n" +
      "per CPU-s: handshakes per CPU-second of the server, all threads (less sensitive to other load)\n" +
      "p50/p99/p99.9 ms: one whole cycle, from connect() to the server's FIN; with " +
      `${opts.concurrency} in progress\n` +
      `  that is about ${opts.concurrency} / handshakes/s when the server is the bottleneck\n` +
      "upgrade p50: from connect() to the validated 101 response\n" +
      "server CPU: % of one core used by the server's process, all threads and child processes\n" +
      "core (irq): how busy the server's CPU was, and in parentheses the part in interrupts and\n" +
      "  softirqs (the kernel's loopback TCP work, partly also counted in the process's CPU)\n" +
      "generator CPU: highest of its runs\n" +
      "RSS: the server's resident memory at the end of the measured window (highest of its runs)\n" +
      "spread: (max - min) / median handshakes/s across rounds",
  );
  for (const warning of warnings) console.log(`warning: ${warning}`);
  for (const notice of notices) console.log(`notice: ${notice}`);

  const elapsedS = (Date.now() - started) / 1000;
  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date(started).toISOString().replace(/[:.]/g, "-");
  const file = path.join(resultsDir, `connect-${stamp}${opts.quick ? "-quick" : ""}.json`);
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
    background_load_pct: backgroundPct,
    loadgen_built: statSync(loadgenBinary).mtime.toISOString(),
    options: opts,
    notices,
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
