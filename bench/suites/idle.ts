// The idle suite: memory per idle connection. How much a server's resident memory grows while it
// holds N open, idle WebSocket connections (19,000 by default), for Switchboard (the echo
// service on the service server, with the service on the I/O thread and in a worker thread), for
// the `ws` package and for uWebSockets.js, when the `uwebsockets` package loads.
//
// A process here may hold at most 20,000 open files (a hard limit), so the connections come from
// two or more C generators (bench/loadgen/idle-load.c), each holding at most 9,500 of them and
// each connecting from its own source address, 127.0.0.2, 127.0.0.3, ... Each server runs in its
// own Node process (compiled, as in every suite: see buildServers in bench/lib/build.ts) and
// pinned to one core, with the generators pinned to the other. For each server, in each round,
// on a freshly started server: warm up (open and close a batch of connections), collect garbage
// and read the RSS; open the N connections and time that, with the server's CPU; collect
// garbage again and read the RSS once it has settled; report the growth per connection; then
// close every connection with a clean closing handshake and stop the server. See docs/benchmarks.md for how to read the output.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { formatFixed, formatPct, formatRate, formatRatio, table } from "../lib/format.js";
import { fileLimits, processCpuS, rssKiB } from "../lib/machine.js";
import { intFlag } from "../lib/options.js";
import { sleep, track, withFileLimit } from "../lib/proc.js";
import type {
  CaseResult,
  Figure,
  Flag,
  Ratio,
  SharedOptions,
  Suite,
  SuiteContext,
  SuiteResult,
} from "../lib/result.js";
import {
  peerSpecs,
  type RunningServer,
  rotated,
  SERVER_MODE_TEXT,
  type ServerSpec,
  serverAlive,
  serverScript,
  startServer,
  stopServer,
  switchboardSpecs,
} from "../lib/server.js";
import {
  compareServers,
  median,
  type RatioSpec,
  ratioOf,
  ratioWarnings,
  spreadPct,
} from "../lib/stats.js";

/** What the product asks: Switchboard main mode's memory per idle connection at most ws's. */
const TARGET_VS_WS = 1.0;
/** Connections per generator: each is one process, under the 20,000 open-file limit. */
export const MAX_CONNS_PER_GENERATOR = 9_500;
/** Open files a server needs besides its connections: listener, epoll, pipes, a worker's. */
const SERVER_FILE_MARGIN = 200;
/** RSS has settled when two readings this far apart differ by less than SETTLE_PCT. */
const SETTLE_PCT = 1;
/** Longest wait for RSS to settle; past it the last reading is used, with a warning. */
const SETTLE_MAX_MS = 15_000;
const PROBE_TIMEOUT_MS = 10_000;
/** Generator phase limits; the orchestrator waits a little longer than each. */
const OPEN_TIMEOUT_MS = 120_000;
const CLOSE_TIMEOUT_MS = 30_000;
const HOLD_TIMEOUT_MS = 600_000;
const GENERATOR_MARGIN_MS = 5_000;

export interface IdleOptions {
  rounds: number;
  conns: number;
  /** Generator processes, each from its own source address. */
  generators: number;
  /** Connections in their TCP connect or upgrade at once, per generator. */
  concurrency: number;
  /** Between two RSS readings that must agree within SETTLE_PCT. */
  settleIntervalMs: number;
  /** Before the first reading: the server finishes with the warm-up's connections. */
  quietMs: number;
}

/**
 * Every server gets a full GC on demand: bench/servers/memory-probe.ts, loaded before the
 * server's own script (compiled or through tsx, as the server runs), under --expose-gc.
 */
const MEMORY_PROBE = serverScript("memory-probe.ts");

// ---------------------------------------------------------------- servers and their memory

interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  gc: boolean;
}

interface IdleServer {
  server: RunningServer;
  /** The server's soft limit on open files, as read from /proc/PID/limits. */
  fileLimit: number;
  /** Memory lines printed by bench/servers/memory-probe.ts, consumed by `probe`. */
  probes: MemoryUsage[];
  wake: () => void;
}

async function startIdleServer(
  spec: ServerSpec,
  ctx: SuiteContext,
  fileLimit: number,
): Promise<IdleServer> {
  const idle: IdleServer = {
    server: undefined as unknown as RunningServer,
    fileLimit: 0,
    probes: [],
    wake: () => {},
  };
  idle.server = await startServer(spec, {
    where: ctx.where,
    mode: ctx.serverMode,
    nodeFlags: ["--expose-gc"],
    preload: [MEMORY_PROBE],
    fileLimit,
    onLine: (line) => {
      if (!line.startsWith('{"memoryProbe"')) return false;
      idle.probes.push((JSON.parse(line) as { memoryProbe: MemoryUsage }).memoryProbe);
      idle.wake();
      return true;
    },
  });
  idle.server.child.once("exit", () => idle.wake());
  idle.fileLimit = fileLimits(idle.server.pid)?.soft ?? Number.NaN;
  return idle;
}

/** Asks the server for a full garbage collection and its memoryUsage (memory-probe.ts). */
async function probe(idle: IdleServer): Promise<MemoryUsage> {
  const { server } = idle;
  const seen = idle.probes.length;
  server.child.kill("SIGUSR2");
  const deadline = Date.now() + PROBE_TIMEOUT_MS;
  while (idle.probes.length === seen) {
    if (!serverAlive(server)) throw new Error(`${server.spec.name} exited`);
    if (Date.now() > deadline) {
      throw new Error(`${server.spec.name} did not answer the memory probe (SIGUSR2)`);
    }
    await new Promise<void>((resolve) => {
      idle.wake = resolve;
      setTimeout(resolve, 100);
    });
  }
  return idle.probes[seen];
}

/** Reads RSS every `intervalMs` until two readings differ by under SETTLE_PCT, bounded. */
async function settledRss(
  pid: number,
  intervalMs: number,
): Promise<{ kib: number; ms: number; settled: boolean }> {
  const started = Date.now();
  let last = rssKiB(pid);
  for (;;) {
    await sleep(intervalMs);
    const now = rssKiB(pid);
    const settled = Math.abs(now - last) < (last * SETTLE_PCT) / 100;
    last = now;
    const ms = Date.now() - started;
    if (settled || ms >= SETTLE_MAX_MS) return { kib: now, ms, settled };
  }
}

// ---------------------------------------------------------------- generators

/** The generator's line once all its connections are open (see idle-load.c). */
export interface OpenLine {
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
export interface ClosedLine {
  ok: true;
  phase: "closed";
  conns: number;
  closed: number;
  held_s: number;
  close_s: number;
  pings: number;
  pongs: number;
}

export type GeneratorLine = OpenLine | ClosedLine | { ok: false; error: string };

export interface IdleGeneratorOptions {
  binary: string;
  port: number;
  source: string;
  conns: number;
  concurrency: number;
  /** Pin it to this CPU. */
  cpu?: number;
  /** Raise its soft limit on open files to this first. */
  fileLimit?: number;
}

/** One idle-load process: its JSON lines, one at a time, and the line on stdin that ends it. */
export class IdleGenerator {
  readonly source: string;
  private readonly child: ChildProcess;
  private readonly lines: GeneratorLine[] = [];
  private read = 0;
  private stderr = "";
  private exit: string | undefined;
  private wake: () => void = () => {};

  constructor(o: IdleGeneratorOptions) {
    this.source = o.source;
    const args = [
      "--port",
      String(o.port),
      "--path",
      "/echo",
      "--conns",
      String(o.conns),
      "--source",
      o.source,
      "--concurrency",
      String(o.concurrency),
      "--open-timeout-ms",
      String(OPEN_TIMEOUT_MS),
      "--hold-timeout-ms",
      String(HOLD_TIMEOUT_MS),
      "--close-timeout-ms",
      String(CLOSE_TIMEOUT_MS),
    ];
    if (o.cpu !== undefined) args.push("--cpu", String(o.cpu));
    const [command, commandArgs] = withFileLimit(o.fileLimit, o.binary, args);
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
  idle: IdleServer,
  conns: number,
  generators: number,
  firstSource: number,
  opts: IdleOptions,
  ctx: SuiteContext,
  fileLimit: number,
): Promise<{ gens: IdleGenerator[]; opened: OpenLine[]; error?: string }> {
  const gens = shares(conns, generators).map(
    (n, g) =>
      new IdleGenerator({
        binary: ctx.generators.idle!,
        port: idle.server.port,
        source: sourceAddress(firstSource + g),
        conns: n,
        concurrency: opts.concurrency,
        cpu: ctx.where.generatorCpu,
        fileLimit,
      }),
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
async function closeAll(gens: IdleGenerator[]): Promise<{ closed: ClosedLine[]; error?: string }> {
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
  idle: IdleServer,
  opts: IdleOptions,
  ctx: SuiteContext,
  fileLimit: number,
): Promise<RunOutcome> {
  const { server } = idle;
  const needFiles = opts.conns + SERVER_FILE_MARGIN;
  if (!(idle.fileLimit >= needFiles)) {
    return {
      ok: false,
      error:
        `the server may open ${idle.fileLimit} files (its soft limit, which could not be ` +
        `raised); ${opts.conns} connections need about ${needFiles}`,
    };
  }
  // Warm-up: a batch of connections opened and closed, so the code that accepts, upgrades and
  // closes them has run (and is compiled) before the first reading, from a source address of
  // its own.
  const warmupConns = Math.min(1_000, Math.ceil(opts.conns / 10));
  const warm = await openAll(idle, warmupConns, 1, opts.generators, opts, ctx, fileLimit);
  if (warm.error) {
    for (const gen of warm.gens) gen.kill();
    return { ok: false, error: `warm-up: ${warm.error}` };
  }
  const warmClosed = await closeAll(warm.gens);
  if (warmClosed.error) return { ok: false, error: `warm-up: ${warmClosed.error}` };

  await sleep(opts.quietMs);
  const memoryBefore = await probe(idle);
  const before = await settledRss(server.pid, opts.settleIntervalMs);

  const cpuBefore = processCpuS(server.pid);
  const t0 = performance.now();
  const open = await openAll(idle, opts.conns, opts.generators, 0, opts, ctx, fileLimit);
  const openS = (performance.now() - t0) / 1000;
  const serverCpuS = processCpuS(server.pid) - cpuBefore;
  if (open.error) {
    for (const gen of open.gens) gen.kill();
    return { ok: false, error: open.error };
  }
  const rssOpen = rssKiB(server.pid);
  const memoryAfter = await probe(idle);
  const after = await settledRss(server.pid, opts.settleIntervalMs);
  if (!serverAlive(server)) return { ok: false, error: `${server.spec.name} exited` };

  const closed = await closeAll(open.gens);
  if (closed.error) return { ok: false, error: closed.error };

  const per = (a: number, b: number) => (b - a) / opts.conns;
  return {
    ok: true,
    conns: opts.conns,
    generators: opts.generators,
    file_limit: idle.fileLimit,
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

// ---------------------------------------------------------------- the suite

function serverSpecs(shared: SharedOptions, uws: boolean): ServerSpec[] {
  // Services here run on the I/O thread or in a worker; "process" is not measured.
  const isolation = shared.isolation.filter((mode) => mode !== "process");
  return [
    ...switchboardSpecs(isolation, "switchboard-service.ts"),
    ...peerSpecs(shared.peers, uws, { ws: "ws-echo.ts", uws: "uws-echo.ts" }),
  ];
}

function ratioSpecs(specs: ServerSpec[]): RatioSpec[] {
  return compareServers(specs, {
    vsPeer: (ours, peer) =>
      ours.isolation === "main" && peer.kind === "ws" ? TARGET_VS_WS : undefined,
  });
}

const kib = (n: number) => formatFixed(n, 2);
const mib = (n: number) => formatFixed(n, 0);
const secs = (n: number) => formatFixed(n, 2);

export async function runIdleSuite(
  shared: SharedOptions,
  opts: IdleOptions,
  ctx: SuiteContext,
): Promise<SuiteResult> {
  const started = Date.now();
  if (!ctx.generators.idle) throw new Error("the idle generator was not built");
  const notices: string[] = [];
  const warnings: string[] = [];

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

  const specs = serverSpecs(shared, ctx.uwsVersion !== undefined);
  const split = shares(opts.conns, opts.generators);
  const sources = split.map((n, g) => `${formatRate(n)} from ${sourceAddress(g)}`).join(", ");
  ctx.log(
    `memory per idle connection: ${formatRate(opts.conns)} connections held open and idle per ` +
      `server (${sources}); ${opts.rounds} round(s), each on freshly started servers; servers ` +
      `${ctx.serverMode === "tsx" ? "run from TypeScript through tsx" : "compiled with tsc"}; open files per ` +
      `process: ${limits ? `${limits.soft} (hard ${limits.hard}), children raised to ${fileLimit}` : "unknown"}`,
  );
  ctx.log(`servers: ${specs.map((spec) => spec.name).join(", ")}`);
  for (const notice of notices) ctx.log(`notice: ${notice}`);

  const runs: Record<string, RunOutcome[]> = Object.fromEntries(specs.map((s) => [s.name, []]));
  for (let round = 0; round < opts.rounds; round++) {
    // A fresh server for each measurement: a server that has held N connections keeps some of
    // that memory, and its next "before" reading would hide part of the next run's growth. Each
    // starts right before it is measured, not all of a round's together: a few seconds after a
    // burst of allocation V8's memory reducer gives back the heap's free pages (30 -> 14 MiB of
    // heap, 102 -> 81 MiB RSS for the service server after the warm-up), so a server that
    // waited for its turn had a smaller "before" than the first one measured, and the order
    // decided its figure. The order still rotates from round to round.
    for (const spec of rotated(specs, round)) {
      let idle: IdleServer;
      try {
        idle = await startIdleServer(spec, ctx, fileLimit);
      } catch (error) {
        runs[spec.name].push({ ok: false, error: String(error) });
        continue;
      }
      try {
        const notice =
          `${spec.name}: its limit on open files is ${idle.fileLimit}; it could not ` +
          `be raised to ${fileLimit}`;
        if (idle.fileLimit < fileLimit && !notices.includes(notice)) notices.push(notice);
        let outcome: RunOutcome;
        try {
          outcome = await measure(idle, opts, ctx, fileLimit);
        } catch (error) {
          outcome = { ok: false, error: error instanceof Error ? error.message : String(error) };
        }
        runs[spec.name].push(outcome);
        const shown = outcome.ok
          ? `${kib(outcome.kib_per_conn)} KiB/conn (RSS ${mib(outcome.rss_before_kib / 1024)} -> ` +
            `${mib(outcome.rss_after_kib / 1024)} MiB; before GC ${kib(outcome.kib_per_conn_no_gc)}), ` +
            `opened in ${secs(outcome.open_s)} s (server ${formatPct(outcome.server_cpu_pct)}, ` +
            `generators <= ${formatPct(outcome.generator_cpu_pct)}), closed in ` +
            `${secs(outcome.close_s)} s${outcome.settled ? "" : ", RSS not settled"}`
          : `error: ${outcome.error}`;
        ctx.log(`  round ${round + 1}/${opts.rounds}  ${spec.name.padEnd(18)} ${shown}`);
      } finally {
        await stopServer(idle.server);
      }
    }
  }

  let failed = false;
  const figures: Figure[] = specs.map((spec) => {
    const outcomes = runs[spec.name];
    const ok = outcomes.filter((run): run is RunResult => run.ok);
    const of = (f: (run: RunResult) => number) => median(ok.map(f));
    const perConn = ok.map((run) => run.kib_per_conn);
    const errors = outcomes.flatMap((run) => (run.ok ? [] : [run.error]));
    const unsettled = ok.filter((run) => !run.settled).length;
    const flags: Flag[] = [];
    if (errors.length > 0) {
      failed = true;
      flags.push("errors");
      for (const error of errors) warnings.push(`${spec.name}: ${error}`);
    }
    if (unsettled > 0) {
      flags.push("unsettled");
      warnings.push(
        `${spec.name}: in ${unsettled} run(s) RSS still moved by ${SETTLE_PCT}% or more between ` +
          `readings ${opts.settleIntervalMs} ms apart after ${SETTLE_MAX_MS / 1000} s; the last ` +
          "reading was used",
      );
    }
    return {
      server: spec.name,
      value: median(perConn),
      perServerCpuS: Number.NaN,
      // The latency of the upgrades while the connections opened.
      p50Ms: of((run) => run.upgrade_p50_ms),
      p99Ms: of((run) => run.upgrade_p99_ms),
      p999Ms: Number.NaN,
      serverCpuPct: of((run) => run.server_cpu_pct),
      generatorCpuPct: ok.length ? Math.max(...ok.map((run) => run.generator_cpu_pct)) : Number.NaN,
      spreadPct: spreadPct(perConn),
      runs: ok.length,
      flags,
      extra: {
        kibPerConnNoGc: of((run) => run.kib_per_conn_no_gc),
        heapKibPerConn: of((run) => run.heap_kib_per_conn),
        externalKibPerConn: of((run) => run.external_kib_per_conn),
        rssBeforeMiB: of((run) => run.rss_before_kib) / 1024,
        rssAfterMiB: of((run) => run.rss_after_kib) / 1024,
        openS: of((run) => run.open_s),
        connsPerS: of((run) => run.conns_per_s),
        serverCpuMsPer1k: of((run) => run.server_cpu_ms_per_1k),
        upgradeMaxMs: ok.length ? Math.max(...ok.map((run) => run.upgrade_max_ms)) : Number.NaN,
      },
    };
  });
  const result: CaseResult = {
    id: `idle-${opts.conns}`,
    label: `${formatRate(opts.conns)} idle connections`,
    metric: { name: "KiB/conn", higherIsBetter: false },
    figures,
    runs,
  };
  // The verdict is "unclear" when the rounds fall on both sides of the target.
  const ratios: Ratio[] = ratioSpecs(specs).flatMap((spec) => {
    const ratio = ratioOf(
      "idle",
      result,
      figures,
      runs,
      spec,
      (run) => ((run as RunOutcome).ok ? (run as RunResult).kib_per_conn : Number.NaN),
      true,
    );
    return ratio ? [ratio] : [];
  });

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
      "flags",
    ],
  ];
  for (const f of figures) {
    rows.push([
      f.server,
      kib(f.value),
      kib(f.extra.kibPerConnNoGc),
      kib(f.extra.heapKibPerConn),
      kib(f.extra.externalKibPerConn),
      mib(f.extra.rssBeforeMiB),
      mib(f.extra.rssAfterMiB),
      secs(f.extra.openS),
      formatRate(f.extra.connsPerS),
      formatPct(f.serverCpuPct),
      formatRate(f.extra.serverCpuMsPer1k),
      formatFixed(f.p99Ms, 1),
      formatPct(f.spreadPct),
      f.flags.join(", "),
    ]);
  }
  ctx.log(`\n${table(rows)}\n`);
  if (ratios.length > 0) {
    const ratioRows = [["ratio (KiB/conn)", "of medians", "per round", "target", ""]];
    for (const r of ratios) {
      ratioRows.push([
        `${r.ours} / ${r.peer}`,
        formatRatio(r.ratio, r.target),
        r.perRound.map(formatRatio).join(" "),
        r.target === undefined ? "-" : `<= ${r.target.toFixed(2)}`,
        r.verdict === "-" ? "" : r.verdict,
      ]);
    }
    ctx.log(`${table(ratioRows)}\n`);
  }
  ctx.log(
    "KiB/conn: (RSS with the connections open - RSS before) / connections, both read after a\n" +
      `  full GC once RSS settled (two readings ${opts.settleIntervalMs} ms apart within ${SETTLE_PCT}%); median of rounds\n` +
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
  warnings.push(...ratioWarnings(ratios));
  for (const warning of warnings) ctx.log(`warning: ${warning}`);
  for (const notice of notices) ctx.log(`notice: ${notice}`);

  return {
    id: "idle",
    title: "Idle memory",
    description:
      `${formatRate(opts.conns)} idle connections held open on each freshly started server ` +
      `(${sources}); the figure is the growth of the server's RSS per connection, both readings ` +
      "after a full GC once RSS settled (lower is better). Latency: of the upgrades while the " +
      `connections opened; server CPU: while they opened. Servers ${SERVER_MODE_TEXT[ctx.serverMode]}.`,
    options: { ...opts, file_limits: limits ?? null },
    servers: specs,
    cases: [result],
    ratios,
    notices,
    warnings,
    failed,
    elapsedS: (Date.now() - started) / 1000,
  };
}

export const idleSuite: Suite<IdleOptions> = {
  id: "idle",
  title: "idle",
  usage: `  --idle-conns N        idle connections per server (default 19000; --quick 1000)
  --generators N        generator processes (default: enough for ${MAX_CONNS_PER_GENERATOR} connections
                        each, at least 2), each from its own source address 127.0.0.2, .3, ...
  --idle-concurrency N  connections in their connect or upgrade at once, per generator (default 64)`,
  flags: {
    "--idle-conns": "value",
    "--generators": "value",
    "--idle-concurrency": "value",
  },
  generators: ["idle"],
  startsServers: true,
  options(shared, flags) {
    const quick = shared.quick;
    const conns = intFlag(flags, "--idle-conns", quick ? 1_000 : 19_000, 1, 1_000_000);
    let generators = intFlag(
      flags,
      "--generators",
      Math.max(2, Math.ceil(conns / MAX_CONNS_PER_GENERATOR)),
      1,
      200,
    );
    if (generators > conns) generators = conns;
    if (Math.ceil(conns / generators) > MAX_CONNS_PER_GENERATOR) {
      throw new Error(
        `${conns} connections over ${generators} generators is more than ` +
          `${MAX_CONNS_PER_GENERATOR} each; use more --generators`,
      );
    }
    return {
      rounds: shared.rounds ?? (quick ? 1 : 3),
      conns,
      generators,
      concurrency: intFlag(flags, "--idle-concurrency", 64, 1, 4096),
      settleIntervalMs: quick ? 250 : 500,
      quietMs: quick ? 200 : 500,
    };
  },
  estimateS(shared, opts, uws) {
    const servers = serverSpecs(shared, uws).length;
    // Opening runs at a few thousand connections a second; two settled readings and the quiet.
    const perRun = opts.conns / 4000 + (2 * opts.settleIntervalMs + opts.quietMs) / 1000 + 1;
    return 2 + opts.rounds * (1 + servers * perRun);
  },
  run: runIdleSuite,
};
