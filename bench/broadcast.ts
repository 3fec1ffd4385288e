// `npm run bench:broadcast`: fan-out throughput. 1,000 subscribers, 64-byte messages, two cases:
// one publisher to all of them on one topic, and 100 publishers into 10 topics of 100
// subscribers. The figure is how many deliveries per second (messages received by subscribers,
// summed) a server sustains, for Switchboard (a service on the I/O thread and in a worker thread
// publishing to topics; the fan-out runs on the I/O thread), for the `ws` package (a loop over a
// topic's subscribers calling `send`) and for uWebSockets.js (its topic publish), when the
// `uwebsockets` package is installed.
//
// Each server runs alone in its own Node process, pinned to one core; the C load generator
// (bench/loadgen/broadcast-load.c, compiled here with the system `cc`) runs pinned to the other.
// Each publisher keeps at most W messages outstanding (sent and not yet received by every
// subscriber of its topic), and every subscriber must receive every message of its topic's
// publishers exactly once and in each publisher's order. Each server is measured in turn,
// rotating which goes first, for several rounds; the tables show medians, latency percentiles,
// ratios and the CPU each side used. See docs/benchmarks.md for how to read the output.
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

const loadgenSource = path.join(benchDir, "loadgen", "broadcast-load.c");
const loadgenBinary = path.join(buildDir, "broadcast-load");

/**
 * What the product asks of Switchboard's fan-out, in deliveries/s relative to each peer: of the
 * service on the I/O thread (isolation main), with one publisher and one topic.
 */
const TARGETS = { ws: 3, uws: 0.5 } as const;
/** Above this share of one core the generator may itself be what limits throughput. */
const GENERATOR_CPU_WARN_PCT = 80;
/** Below this the server was not kept busy, so deliveries/s says little about the server. */
const SERVER_CPU_WARN_PCT = 85;
/** Above this, other processes competed for the CPUs during a run. */
const OTHER_LOAD_WARN_PCT = 20;
/** Above this, the hypervisor took the CPUs away during a run (steal time). */
const STEAL_WARN_PCT = 10;
const SERVER_READY_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 3_000;
const CONNECT_TIMEOUT_MS = 20_000;
const STALL_MS = 5_000;
/** Between runs: the server closes the previous run's thousand connections. */
const PAUSE_MS = 500;

type Isolation = "main" | "worker" | "process";
const ISOLATIONS: readonly Isolation[] = ["main", "worker", "process"];
type Peer = "ws" | "uws";

/** A case: P publishers into T topics; the subscribers are spread evenly over the topics. */
interface Shape {
  publishers: number;
  topics: number;
}
const SHAPES: readonly Shape[] = [
  { publishers: 1, topics: 1 },
  { publishers: 100, topics: 10 },
];

interface Options {
  quick: boolean;
  rounds: number;
  warmupMs: number;
  durationMs: number;
  subs: number;
  cases: Shape[];
  size: number;
  window: number;
  binary: boolean;
  pin: boolean;
  /** Where the Switchboard service runs; one Switchboard server per entry. */
  isolation: Isolation[];
  peers: Peer[];
}

interface ServerSpec {
  /** Column label. */
  name: string;
  kind: "switchboard" | Peer;
  /** Where the service runs, for Switchboard. */
  isolation?: Isolation;
  script: string;
  args: string[];
}

/** One line of the generator's JSON output (see broadcast-load.c). */
interface LoadResult {
  ok: true;
  publishers: number;
  topics: number;
  subs: number;
  size: number;
  window: number;
  connect_s: number;
  join_s: number;
  probes: number;
  duration_s: number;
  /** From the end of the measured window until everything sent had reached everyone. */
  drain_s: number;
  deliveries: number;
  deliveries_per_s: number;
  messages: number;
  msgs_per_s: number;
  verified_messages: number;
  /** Per delivery in the measured window: from the publisher's write to the arrival. */
  latency_samples: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  latency_p999_ms: number;
  latency_max_ms: number;
  reads: number;
  /** Deliveries to each subscriber in the measured window, fewest and most. */
  sub_min: number;
  sub_max: number;
  /** Messages of each publisher that completed in the measured window, fewest and most. */
  pub_min: number;
  pub_max: number;
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
  /** Added here: CPU of the server's child processes (isolation "process"), % of one core. */
  children_cpu_pct?: number;
  /** Added here: steal time over the run, % of one core. */
  steal_pct?: number;
}

type RunOutcome = LoadResult | { ok: false; error: string };

const USAGE = `usage: npm run bench:broadcast -- [options]

  --quick               short run (1 round, 300 ms warm-up, 1 s measured), under a minute
  --rounds N            rounds; the median is reported (default 5)
  --warmup-ms N         warm-up before each measurement (default 1000)
  --duration-ms N       measured window per run (default 3000)
  --subs N              subscriber connections (default 1000)
  --cases P:T,...       the cases, as publishers:topics (default 1:1,100:10); the subscribers are
                        spread evenly over the topics (subscriber i on topic i % T), publisher j
                        publishes to topic j % T; T may not exceed P nor --subs
  --size N              message size in bytes, at least 16 (default 64)
  --window N            messages outstanding at most per publisher: sent and not yet received by
                        every subscriber of its topic (default 32)
  --binary              binary messages (default text)
  --isolation A,B       where the Switchboard service runs: main, worker, process (default
                        main,worker; the targets apply to main)
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
    subs: 1000,
    cases: [...SHAPES],
    size: 64,
    window: 32,
    binary: false,
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
      case "--binary":
        opts.binary = true;
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
      case "--subs":
        opts.subs = int(arg, argv[++i], 1, 15_000);
        break;
      case "--cases":
        opts.cases = (argv[++i] ?? "").split(",").map((item) => {
          const [p, t, ...rest] = item.split(":");
          if (rest.length > 0 || t === undefined) {
            throw new Error(`--cases takes publishers:topics pairs such as 100:10, got ${item}`);
          }
          const publishers = int(arg, p, 1, 4096);
          return { publishers, topics: int(arg, t, 1, publishers) };
        });
        break;
      case "--size":
        opts.size = int(arg, argv[++i], 16, 65_535);
        break;
      case "--window":
        opts.window = int(arg, argv[++i], 1, 4096);
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
  for (const { topics } of opts.cases) {
    if (topics > opts.subs) throw new Error(`${topics} topics need at least ${topics} --subs`);
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

// ---------------------------------------------------------------- CPU placement and accounting

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

function runLoad(
  server: RunningServer,
  shape: Shape,
  opts: Options,
  where: Placement,
): Promise<RunOutcome> {
  const args = [
    "--port",
    String(server.port),
    "--path",
    "/topic",
    "--publisher-query",
    "role=publisher",
    "--publishers",
    String(shape.publishers),
    "--topics",
    String(shape.topics),
    "--subs",
    String(opts.subs),
    "--size",
    String(opts.size),
    "--window",
    String(opts.window),
    "--warmup-ms",
    String(opts.warmupMs),
    "--duration-ms",
    String(opts.durationMs),
    "--connect-timeout-ms",
    String(CONNECT_TIMEOUT_MS),
    "--stall-ms",
    String(STALL_MS),
    "--server-pid",
    String(server.pid),
  ];
  if (opts.binary) args.push("--binary");
  if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
  if (where.serverCpu !== undefined) args.push("--server-cpu", String(where.serverCpu));
  // The drain after the window lasts as long as messages keep completing; a slow server takes
  // seconds to deliver the last windows of 100 publishers.
  const limitMs = CONNECT_TIMEOUT_MS + opts.warmupMs + opts.durationMs + 30_000;
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
 * the two processes' sends, which the kernel may or may not also charge to the process that was
 * running (see `server_core_busy_pct`), so this is a lower bound.
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
  deliveriesPerS: number;
  msgsPerS: number;
  /** Deliveries per CPU-second of the server: efficiency, robust to other load. */
  deliveriesPerServerCpuS: number;
  /** Medians across rounds of each round's percentile of the deliveries' latency. */
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyP999Ms: number;
  serverCpuPct: number;
  /** Busy share of the server's core, softirqs (loopback TCP) included. */
  serverCorePct: number;
  serverCoreIrqPct: number;
  generatorCpuPct: number;
  serverRssMiB: number;
  /** (max - min) / median deliveries/s across rounds, in percent. */
  spreadPct: number;
  /** Deliveries per read() of the generator: how many messages the server packs per write. */
  deliveriesPerRead: number;
  disturbedRuns: number;
  stolenRuns: number;
  errors: string[];
}

function summarize(runs: RunOutcome[]): Summary {
  const ok = runs.filter((run): run is LoadResult => run.ok);
  const rates = ok.map((run) => run.deliveries_per_s);
  const rate = median(rates);
  return {
    deliveriesPerS: rate,
    msgsPerS: median(ok.map((run) => run.msgs_per_s)),
    deliveriesPerServerCpuS: median(
      ok.filter((run) => run.server_cpu_s > 0).map((run) => run.deliveries / serverCpuS(run)),
    ),
    latencyP50Ms: median(ok.map((run) => run.latency_p50_ms)),
    latencyP99Ms: median(ok.map((run) => run.latency_p99_ms)),
    latencyP999Ms: median(ok.map((run) => run.latency_p999_ms)),
    serverCpuPct: median(ok.map(serverCpuPct)),
    serverCorePct: median(ok.map(serverCorePct)),
    serverCoreIrqPct: median(ok.map((run) => run.server_core_irq_pct)),
    generatorCpuPct: ok.length ? Math.max(...ok.map((run) => run.gen_cpu_pct)) : Number.NaN,
    serverRssMiB: ok.length ? Math.max(...ok.map((run) => run.server_rss_kb)) / 1024 : Number.NaN,
    spreadPct: ok.length > 1 ? ((Math.max(...rates) - Math.min(...rates)) / rate) * 100 : 0,
    deliveriesPerRead: median(ok.filter((run) => run.reads > 0).map((r) => r.deliveries / r.reads)),
    disturbedRuns: ok.filter((run) => otherLoadPct(run) > OTHER_LOAD_WARN_PCT).length,
    stolenRuns: ok.filter((run) => (run.steal_pct ?? 0) > STEAL_WARN_PCT).length,
    errors: runs.flatMap((run) => (run.ok ? [] : [run.error])),
  };
}

/** Whether a ratio reaches its target, by deliveries/s and by deliveries per server CPU-s. */
function verdictOf(
  ratio: number,
  perCpuRatio: number,
  target: number,
): "met" | "missed" | "unclear" | "-" {
  if (!Number.isFinite(ratio)) return "-";
  const met = ratio >= target;
  if (Number.isFinite(perCpuRatio) && perCpuRatio >= target !== met) return "unclear";
  return met ? "met" : "missed";
}

// ---------------------------------------------------------------- main

/** "1 -> 1,000", "100 publishers -> 10 topics x 100". */
function caseLabel({ publishers, topics }: Shape, subs: number): string {
  const from = publishers === 1 ? "1" : `${formatRate(publishers)} publishers`;
  const to =
    topics === 1 ? formatRate(subs) : `${formatRate(topics)} topics x ${formatRate(subs / topics)}`;
  return `${from} -> ${to}`;
}

function serverSpecs(opts: Options, uws: boolean): ServerSpec[] {
  const script = (file: string) => path.join("bench", "servers", file);
  const specs: ServerSpec[] = opts.isolation.map((isolation) => ({
    name: opts.isolation.length === 1 ? "switchboard" : `switchboard ${isolation}`,
    kind: "switchboard",
    isolation,
    script: script("switchboard-broadcast.ts"),
    args: ["--isolation", isolation],
  }));
  if (opts.peers.includes("ws")) {
    specs.push({ name: "ws", kind: "ws", script: script("ws-broadcast.ts"), args: [] });
  }
  if (opts.peers.includes("uws") && uws) {
    specs.push({ name: "uWS", kind: "uws", script: script("uws-broadcast.ts"), args: [] });
  }
  return specs;
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
  const perRunS = (opts.warmupMs + opts.durationMs + PAUSE_MS) / 1000 + 0.8;
  const estimateS = Math.ceil(
    specs.length * opts.cases.length * opts.rounds * perRunS + specs.length * 2,
  );

  console.log(
    `broadcast over loopback: ${opts.subs} subscribers, ${opts.size}-byte ` +
      `${opts.binary ? "binary" : "text"} messages, at most ${opts.window} outstanding per ` +
      `publisher; ${opts.rounds} round(s) of ${opts.warmupMs} ms warm-up + ${opts.durationMs} ms ` +
      "measured per case and server",
  );
  console.log(`cases: ${opts.cases.map((shape) => caseLabel(shape, opts.subs)).join(", ")}`);
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

  const cases = opts.cases.map((shape) => ({
    ...shape,
    label: caseLabel(shape, opts.subs),
    runs: Object.fromEntries(specs.map((s) => [s.name, [] as RunOutcome[]])),
  }));
  const labelWidth = Math.max(...cases.map((c) => c.label.length));
  const servers: RunningServer[] = [];
  try {
    // Every server serves every case: the topic and the role are in each connection's query.
    for (const spec of specs) servers.push(await startServer(spec, where));
    for (let round = 0; round < opts.rounds; round++) {
      for (const [index, entry] of cases.entries()) {
        // Rotate who goes first so no server always runs on a freshly warmed machine.
        const shift = (round + index) % servers.length;
        const order = [...servers.slice(shift), ...servers.slice(0, shift)];
        for (const server of order) {
          const outcome = await runLoad(server, entry, opts, where);
          entry.runs[server.spec.name].push(outcome);
          const shown = outcome.ok
            ? `${formatRate(outcome.deliveries_per_s)} deliveries/s, ` +
              `${formatRate(outcome.msgs_per_s)} msg/s, p50 ${formatMs(outcome.latency_p50_ms)} ms ` +
              `(server ${formatPct(serverCpuPct(outcome))}, its core ${formatPct(serverCorePct(outcome))}, ` +
              `generator ${formatPct(outcome.gen_cpu_pct)}, ` +
              `other ${formatPct(otherLoadPct(outcome))}` +
              `${(outcome.steal_pct ?? 0) >= 1 ? `, stolen ${formatPct(outcome.steal_pct!)}` : ""})`
            : `error: ${outcome.error}`;
          console.log(
            `  round ${round + 1}/${opts.rounds}  ${entry.label.padEnd(labelWidth)}  ` +
              `${server.spec.name.padEnd(18)} ${shown}`,
          );
          await sleep(PAUSE_MS);
        }
      }
    }
  } finally {
    await Promise.all(servers.map(stopServer));
  }

  const warnings: string[] = [];
  let failed = false;
  const results = cases.map((entry) => {
    const summaries: Record<string, Summary> = {};
    for (const spec of specs) {
      const summary = summarize(entry.runs[spec.name]);
      summaries[spec.name] = summary;
      const name = `${entry.label}, ${spec.name}`;
      for (const error of summary.errors) {
        failed = true;
        warnings.push(`${name}: ${error}`);
      }
      if (summary.generatorCpuPct > GENERATOR_CPU_WARN_PCT) {
        warnings.push(
          `${name}: the generator used ${formatPct(summary.generatorCpuPct)} of a core; it may ` +
            "be the bottleneck, so this figure understates the server",
        );
      }
      if (summary.serverCorePct < SERVER_CPU_WARN_PCT) {
        warnings.push(
          `${name}: the server's core was busy only ${formatPct(summary.serverCorePct)} of the ` +
            "time (its process and the kernel's network work together); something other than " +
            "the server limited throughput",
        );
      }
      if (summary.disturbedRuns > 0) {
        warnings.push(
          `${name}: ${summary.disturbedRuns} of ${opts.rounds} run(s) shared the machine with ` +
            `other processes (over ${OTHER_LOAD_WARN_PCT}% of a core); the per CPU-s figure is ` +
            "the better guide",
        );
      }
      if (summary.stolenRuns > 0) {
        warnings.push(
          `${name}: in ${summary.stolenRuns} of ${opts.rounds} run(s) the hypervisor took over ` +
            `${STEAL_WARN_PCT}% of a core away (steal time)`,
        );
      }
    }
    return { ...entry, subsPerTopic: opts.subs / entry.topics, summary: summaries };
  });

  for (const { label, summary } of results) {
    const rows = [
      [
        "server",
        "deliveries/s",
        "msg/s",
        "per CPU-s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server CPU",
        "core (irq)",
        "generator CPU",
        "RSS MiB",
        "per read",
        "spread",
      ],
    ];
    for (const spec of specs) {
      const s = summary[spec.name];
      rows.push([
        spec.name,
        formatRate(s.deliveriesPerS),
        formatRate(s.msgsPerS),
        formatRate(s.deliveriesPerServerCpuS),
        formatMs(s.latencyP50Ms),
        formatMs(s.latencyP99Ms),
        formatMs(s.latencyP999Ms),
        formatPct(s.serverCpuPct),
        `${formatPct(s.serverCorePct)} (${formatPct(s.serverCoreIrqPct)})`,
        formatPct(s.generatorCpuPct),
        Number.isFinite(s.serverRssMiB) ? s.serverRssMiB.toFixed(0) : "-",
        Number.isFinite(s.deliveriesPerRead) ? s.deliveriesPerRead.toFixed(1) : "-",
        formatPct(s.spreadPct),
      ]);
    }
    console.log(`\n${label}\n\n${table(rows)}`);
  }

  const ratios: Array<{
    case: string;
    ours: string;
    peer: string;
    ratio: number;
    perCpuRatio: number;
    /** Only for the service on the I/O thread with one publisher and one topic. */
    target: number | null;
    /**
     * "met" or "missed" when both ratios agree; "unclear" when deliveries/s and per CPU-s fall
     * on different sides of the target (one server was held back by something else); "-"
     * without a target.
     */
    verdict: "met" | "missed" | "unclear" | "-";
  }> = [];
  for (const entry of results) {
    const targeted = entry.publishers === 1 && entry.topics === 1;
    for (const ours of specs.filter((spec) => spec.kind === "switchboard")) {
      for (const peer of specs.filter((spec) => spec.kind !== "switchboard")) {
        const a = entry.summary[ours.name];
        const b = entry.summary[peer.name];
        const ratio = a.deliveriesPerS / b.deliveriesPerS;
        const perCpuRatio = a.deliveriesPerServerCpuS / b.deliveriesPerServerCpuS;
        const target = targeted && ours.isolation === "main" ? TARGETS[peer.kind as Peer] : null;
        const verdict = target === null ? "-" : verdictOf(ratio, perCpuRatio, target);
        const row = { ours: ours.name, peer: peer.name, ratio, perCpuRatio, target, verdict };
        ratios.push({ case: entry.label, ...row });
        if (verdict === "unclear") {
          warnings.push(
            `${entry.label}, ${ours.name} / ${peer.name}: deliveries/s (${formatRatio(ratio)}) ` +
              `and per CPU-s (${formatRatio(perCpuRatio)}) fall on different sides of the ` +
              `target ${target?.toFixed(2)}; a server was held back by something else (see the ` +
              "core and other CPU of each run); rerun on a quieter machine",
          );
        }
      }
    }
  }
  if (ratios.length > 0) {
    const ratioRows = [["ratio", "deliveries/s", "per CPU-s", "target", ""]];
    for (const r of ratios) {
      ratioRows.push([
        `${r.case}: ${r.ours} / ${r.peer}`,
        formatRatio(r.ratio),
        formatRatio(r.perCpuRatio),
        r.target === null ? "-" : `>= ${r.target.toFixed(2)}`,
        r.verdict === "-" ? "" : r.verdict,
      ]);
    }
    console.log(`\n${table(ratioRows)}`);
  }
  console.log(
    "\ndeliveries/s: messages received by all subscribers together per second (median of rounds)\n" +
      "msg/s: messages published per second that reached every subscriber of their topic\n" +
      "per CPU-s: deliveries per CPU-second of the server, all threads (less sensitive to other load)\n" +
      "p50/p99/p99.9 ms: per delivery, from the publisher's write of a message to its arrival at a\n" +
      `  subscriber, including the wait in the publishers' windows of ${opts.window} (about ` +
      `publishers x ${opts.window} / msg/s\n` +
      "  when the server is the bottleneck); medians of rounds\n" +
      "server CPU: % of one core used by the server's process, all threads and child processes\n" +
      "core (irq): how busy the server's CPU was, and in parentheses the part in interrupts and\n" +
      "  softirqs (the kernel's loopback TCP work, partly also counted in the process's CPU)\n" +
      "generator CPU: highest of its runs\n" +
      "RSS: the server's resident memory at the end of the measured window (highest of its runs)\n" +
      "per read: deliveries per read() of the generator, i.e. how many messages a server packs per write\n" +
      "spread: (max - min) / median deliveries/s across rounds\n" +
      "target: what Switchboard's service on the I/O thread (isolation main) should reach with one\n" +
      "  publisher and one topic; the other ratios are reported without one",
  );
  for (const warning of warnings) console.log(`warning: ${warning}`);
  for (const notice of notices) console.log(`notice: ${notice}`);

  const elapsedS = (Date.now() - started) / 1000;
  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date(started).toISOString().replace(/[:.]/g, "-");
  const file = path.join(resultsDir, `broadcast-${stamp}${opts.quick ? "-quick" : ""}.json`);
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
    cases: results,
    ratios,
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
