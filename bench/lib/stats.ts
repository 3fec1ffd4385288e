// Summaries of a server's runs in one case (medians over rounds), the checks that flag a figure
// that says less about the server than it seems to, and the verdicts on the ratios.
import { formatPct, formatRatio, table } from "./format.js";
import type { Failure, Outcome } from "./generator.js";
import type { Figure, Flag, Ratio, SuiteId, Verdict } from "./result.js";
import type { ServerSpec } from "./server.js";

/** Above this share of one core the generator may itself be what limits throughput. */
export const GENERATOR_CPU_WARN_PCT = 80;
/** Below this the server was not kept busy, so its figure says little about the server. */
export const SERVER_BUSY_WARN_PCT = 85;
/** Above this, other processes competed for the CPUs during a run and its figure is noisy. */
export const OTHER_LOAD_WARN_PCT = 20;
/** Above this, the hypervisor took the CPUs away during a run (a virtual machine's steal time). */
export const STEAL_WARN_PCT = 10;

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** (max - min) / median, in percent; 0 for fewer than two values. */
export function spreadPct(values: number[]): number {
  if (values.length < 2) return 0;
  return ((Math.max(...values) - Math.min(...values)) / median(values)) * 100;
}

/**
 * The measured-window fields every throughput generator prints (loadgen.h's print_cpu_json and
 * print_latency_json); -1 where a reading was unavailable.
 */
export interface WindowFields {
  duration_s: number;
  latency_samples: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  latency_p999_ms: number;
  latency_max_ms: number;
  gen_cpu_pct: number;
  server_cpu_s: number;
  server_cpu_pct: number;
  server_rss_kb: number;
  /** Busy CPU of the whole machine, in % of one core (two busy cores: 200). */
  machine_cpu_pct: number;
  /** The part of it in interrupts and softirqs (broadcast, connect). */
  machine_irq_pct?: number;
  /** Busy share of the server's CPU, softirqs included (broadcast, connect; -1 unpinned). */
  server_core_busy_pct?: number;
  server_core_irq_pct?: number;
}

export type WindowRun = Extract<Outcome<WindowFields>, { ok: true }>;

export function okRuns<T>(runs: Array<T | Failure>): Array<Exclude<T, Failure>> {
  return runs.filter((run) => (run as { ok: boolean }).ok) as Array<Exclude<T, Failure>>;
}

export function errorsOf(runs: Array<{ ok: boolean }>): string[] {
  return runs.flatMap((run) => (run.ok ? [] : [(run as Failure).error]));
}

/** CPU of the server during a run, its child processes included, in % of one core. */
export function serverCpuPct(run: WindowRun): number {
  if (run.server_cpu_pct < 0) return Number.NaN;
  return run.server_cpu_pct + (run.children_cpu_pct ?? 0);
}

/** Server CPU seconds over the measured window, its child processes included. */
export function serverCpuS(run: WindowRun): number {
  return run.server_cpu_s + ((run.children_cpu_pct ?? 0) / 100) * run.duration_s;
}

/**
 * CPU used during a run by processes other than the server and the generator, at least.
 * Interrupts and softirqs are left out where the generator reports them: on loopback they are
 * mostly the kernel's TCP work for the two processes' sends, which the kernel may or may not
 * also charge to the process that was running (see `server_core_busy_pct`), so this is a lower
 * bound.
 */
export function otherLoadPct(run: WindowRun): number {
  if (run.machine_cpu_pct < 0 || run.server_cpu_pct < 0) return Number.NaN;
  const irq = Math.max(0, run.machine_irq_pct ?? 0);
  return Math.max(0, run.machine_cpu_pct - irq - serverCpuPct(run) - run.gen_cpu_pct);
}

/** How busy the server's core was, kernel work included; the process's CPU when not known. */
export function serverCorePct(run: WindowRun): number {
  const core = run.server_core_busy_pct ?? -1;
  return core >= 0 ? core : serverCpuPct(run);
}

/** The tail of a run's progress line: "(server 98%, generator 40%, other 3%)". */
export function cpuNote(run: WindowRun, core: boolean): string {
  const steal = run.steal_pct ?? 0;
  return (
    `(server ${formatPct(serverCpuPct(run))}` +
    `${core ? `, its core ${formatPct(serverCorePct(run))}` : ""}, ` +
    `generator ${formatPct(run.gen_cpu_pct)}, other ${formatPct(otherLoadPct(run))}` +
    `${steal >= 1 ? `, stolen ${formatPct(steal)}` : ""})`
  );
}

export interface Summary {
  value: number;
  perServerCpuS: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  serverCpuPct: number;
  serverCorePct: number;
  serverCoreIrqPct: number;
  generatorCpuPct: number;
  serverRssMiB: number;
  spreadPct: number;
  /** Runs during which other processes used more than OTHER_LOAD_WARN_PCT of a core. */
  disturbedRuns: number;
  /** Runs during which the hypervisor stole more than STEAL_WARN_PCT of a core. */
  stolenRuns: number;
  runs: number;
  errors: string[];
}

/** The figures of a suite that measures its server's core (busy, in interrupts) and memory. */
export function coreFigures(s: Summary): Record<string, number> {
  return {
    serverCorePct: s.serverCorePct,
    serverCoreIrqPct: s.serverCoreIrqPct,
    serverRssMiB: s.serverRssMiB,
  };
}

/**
 * The medians of a server's runs in one case. `figure` is the headline figure of a run (msg/s),
 * `work` what it counts over the measured window (messages), for work per server CPU-second.
 */
export function summarize<T extends WindowFields>(
  runs: Array<Outcome<T>>,
  figure: (run: Extract<Outcome<T>, { ok: true }>) => number,
  work: (run: Extract<Outcome<T>, { ok: true }>) => number,
): Summary {
  const ok = okRuns(runs) as Array<Extract<Outcome<T>, { ok: true }>>;
  const values = ok.map(figure);
  return {
    value: median(values),
    perServerCpuS: median(
      ok.filter((run) => run.server_cpu_s > 0).map((run) => work(run) / serverCpuS(run)),
    ),
    p50Ms: median(ok.map((run) => run.latency_p50_ms)),
    p99Ms: median(ok.map((run) => run.latency_p99_ms)),
    p999Ms: median(ok.map((run) => run.latency_p999_ms)),
    serverCpuPct: median(ok.map(serverCpuPct)),
    serverCorePct: median(ok.map(serverCorePct)),
    serverCoreIrqPct: median(ok.map((run) => run.server_core_irq_pct ?? Number.NaN)),
    generatorCpuPct: ok.length ? Math.max(...ok.map((run) => run.gen_cpu_pct)) : Number.NaN,
    serverRssMiB: ok.length ? Math.max(...ok.map((run) => run.server_rss_kb)) / 1024 : Number.NaN,
    spreadPct: spreadPct(values),
    disturbedRuns: ok.filter((run) => otherLoadPct(run) > OTHER_LOAD_WARN_PCT).length,
    stolenRuns: ok.filter((run) => (run.steal_pct ?? 0) > STEAL_WARN_PCT).length,
    runs: ok.length,
    errors: errorsOf(runs),
  };
}

export interface CheckOptions {
  /** Rounds run, for "N of R run(s)". */
  rounds: number;
  /**
   * Whether the case is meant to keep the server busy, and how to tell: by its process's CPU
   * ("process"), or by its core with the kernel's network work ("core"); "none" for a case that
   * waits for the generator by design (one message in flight).
   */
  busy: "process" | "core" | "none";
}

/** The flags of a figure and the warnings that explain them, worded for the console. */
export function check(
  label: string,
  s: Summary,
  { rounds, busy }: CheckOptions,
): { flags: Flag[]; warnings: string[] } {
  const flags: Flag[] = [];
  const warnings: string[] = [];
  if (s.errors.length > 0) {
    flags.push("errors");
    for (const error of s.errors) warnings.push(`${label}: ${error}`);
  }
  if (s.generatorCpuPct > GENERATOR_CPU_WARN_PCT) {
    flags.push("generator-saturated");
    warnings.push(
      `${label}: the generator used ${formatPct(s.generatorCpuPct)} of a core; it may be the ` +
        "bottleneck, so this figure is the generator's limit (a lower bound), not the server's",
    );
  }
  if (busy === "process" && s.serverCpuPct < SERVER_BUSY_WARN_PCT) {
    flags.push("server-not-busy");
    warnings.push(
      `${label}: the server used only ${formatPct(s.serverCpuPct)} of a core; something other ` +
        "than the server limited throughput",
    );
  }
  if (busy === "core" && s.serverCorePct < SERVER_BUSY_WARN_PCT) {
    flags.push("server-not-busy");
    warnings.push(
      `${label}: the server's core was busy only ${formatPct(s.serverCorePct)} of the time ` +
        "(its process and the kernel's network work together); something other than the " +
        "server limited throughput",
    );
  }
  if (s.disturbedRuns > 0) {
    flags.push("disturbed");
    warnings.push(
      `${label}: ${s.disturbedRuns} of ${rounds} run(s) shared the machine with other ` +
        `processes (over ${OTHER_LOAD_WARN_PCT}% of a core); the figure is noisy there, the ` +
        "per CPU-s figure less so",
    );
  }
  if (s.stolenRuns > 0) {
    flags.push("steal");
    warnings.push(
      `${label}: in ${s.stolenRuns} of ${rounds} run(s) the hypervisor took over ` +
        `${STEAL_WARN_PCT}% of a core away from this machine (steal time); the figure is noisy ` +
        "there, the per CPU-s figure less so",
    );
  }
  return { flags, warnings };
}

/** A Figure from a Summary, its flags and the suite's own extra figures. */
export function figureOf(
  server: string,
  s: Summary,
  flags: Flag[],
  extra: Record<string, number> = {},
): Figure {
  return {
    server,
    value: s.value,
    perServerCpuS: s.perServerCpuS,
    p50Ms: s.p50Ms,
    p99Ms: s.p99Ms,
    p999Ms: s.p999Ms,
    serverCpuPct: s.serverCpuPct,
    generatorCpuPct: s.generatorCpuPct,
    spreadPct: s.spreadPct,
    runs: s.runs,
    flags,
    extra,
  };
}

export interface RatioSpec {
  ours: string;
  peer: string;
  target?: number;
  /** Drawn in the chart. */
  chart: boolean;
}

export interface ComparisonTargets {
  /** The target of Switchboard server `ours` against the peer `peer` (ws or uWS), if any. */
  vsPeer?(ours: ServerSpec, peer: ServerSpec): number | undefined;
  /** The target of worker mode against main mode, if any. */
  workerVsMain?: number;
}

/**
 * The comparisons every suite makes: each Switchboard server against each peer (the chart shows
 * main and worker mode), and each other Switchboard server against main mode (not charted).
 */
export function compareServers(specs: ServerSpec[], targets: ComparisonTargets): RatioSpec[] {
  const ours = specs.filter((s) => s.kind === "switchboard");
  const peers = specs.filter((s) => s.kind === "ws" || s.kind === "uws");
  const out: RatioSpec[] = [];
  for (const a of ours) {
    for (const b of peers) {
      out.push({
        ours: a.name,
        peer: b.name,
        target: targets.vsPeer?.(a, b),
        chart: a.isolation === "main" || a.isolation === "worker",
      });
    }
  }
  const main = ours.find((s) => s.isolation === "main");
  if (main) {
    for (const other of ours.filter((s) => s !== main)) {
      out.push({
        ours: other.name,
        peer: main.name,
        target: other.isolation === "worker" ? targets.workerVsMain : undefined,
        chart: false,
      });
    }
  }
  return out;
}

/**
 * The ratio of two servers' figures in one case, and its verdict against the target:
 * - met / missed when the ratio of the medians is on that side of the target and nothing
 *   contradicts it;
 * - unclear when the ratio of work per server CPU-second (throughput suites) or, with
 *   `roundsDecide`, some round's own ratio falls on the other side (one server was held back by
 *   something else: rerun on a quieter machine), or when a figure is not the server's (the
 *   generator was saturated) in the direction that could change the verdict.
 */
export function ratioOf(
  suite: SuiteId,
  c: { id: string; label: string; metric: { higherIsBetter: boolean } },
  figures: Figure[],
  runs: Record<string, unknown[]>,
  spec: RatioSpec,
  perRoundFigure: (run: unknown) => number,
  roundsDecide = false,
): Ratio | undefined {
  const a = figures.find((f) => f.server === spec.ours);
  const b = figures.find((f) => f.server === spec.peer);
  if (!a || !b) return undefined;
  const higher = c.metric.higherIsBetter;
  const ratio = a.value / b.value;
  const perCpuRatio = a.perServerCpuS / b.perServerCpuS;
  const perRound: number[] = [];
  const runsA = runs[spec.ours] ?? [];
  const runsB = runs[spec.peer] ?? [];
  runsA.forEach((run, i) => {
    const peer = runsB[i];
    const x = perRoundFigure(run);
    const y = peer === undefined ? Number.NaN : perRoundFigure(peer);
    if (Number.isFinite(x) && Number.isFinite(y) && y !== 0) perRound.push(x / y);
  });
  let verdict: Verdict = "-";
  let note: string | undefined;
  const target = spec.target;
  if (target !== undefined) {
    const meets = (r: number) => (higher ? r >= target : r <= target);
    if (!Number.isFinite(ratio)) {
      verdict = "unclear";
      note = "no figure (see the errors)";
    } else {
      const met = meets(ratio);
      verdict = met ? "met" : "missed";
      if (Number.isFinite(perCpuRatio) && meets(perCpuRatio) !== met) {
        verdict = "unclear";
        note =
          `per CPU-s ratio ${formatRatio(perCpuRatio)} is on the other side of the target; ` +
          "a server was held back by something else: rerun on a quieter machine";
      } else if (roundsDecide && perRound.some((r) => meets(r) !== met)) {
        verdict = "unclear";
        note = `the rounds (${perRound.map(formatRatio).join(", ")}) fall on both sides`;
      }
      // A generator-bound figure is a lower bound on the server's (for higher-is-better): it
      // can confirm a verdict in one direction only.
      const oursBound = a.flags.includes("generator-saturated");
      const peerBound = b.flags.includes("generator-saturated");
      if (higher && (oursBound || peerBound) && verdict !== "unclear") {
        if (oursBound && peerBound) {
          verdict = "unclear";
          note = "both figures are generator-bound, not the servers'";
        } else if (oursBound) {
          if (verdict === "met")
            note = `${spec.ours} was generator-bound: the true ratio is higher`;
          else {
            verdict = "unclear";
            note = `${spec.ours} was generator-bound; its figure is not the server's`;
          }
        } else if (verdict === "missed") {
          note = `${spec.peer} was generator-bound: the true ratio is lower`;
        } else {
          verdict = "unclear";
          note = `${spec.peer} was generator-bound; its figure is not the server's`;
        }
      }
    }
  }
  return {
    suite,
    caseId: c.id,
    caseLabel: c.label,
    ours: spec.ours,
    peer: spec.peer,
    ratio,
    perCpuRatio,
    perRound,
    higherIsBetter: higher,
    target,
    verdict,
    note,
    chart: spec.chart,
  };
}

/** The ratio table of a suite, as every suite prints it. */
export function ratioTable(ratios: Ratio[], perCpu = true): string {
  const rows = [["ratio", "figure", ...(perCpu ? ["per CPU-s"] : []), "target", ""]];
  for (const r of ratios) {
    rows.push([
      `${r.caseLabel}: ${r.ours} / ${r.peer}`,
      formatRatio(r.ratio, r.target),
      ...(perCpu ? [formatRatio(r.perCpuRatio, r.target)] : []),
      r.target === undefined ? "-" : `${r.higherIsBetter ? ">=" : "<="} ${r.target.toFixed(2)}`,
      r.verdict === "-" ? "" : r.verdict,
    ]);
  }
  return table(rows);
}

/** Warnings for the targets missed and the verdicts that are unclear. */
export function ratioWarnings(ratios: Ratio[]): string[] {
  return ratios.flatMap((r) => {
    const what = `${r.caseLabel}: ${r.ours} / ${r.peer} is ${formatRatio(r.ratio, r.target)}`;
    const target = `${r.higherIsBetter ? "at least" : "at most"} ${r.target?.toFixed(2)}`;
    if (r.verdict === "missed") return [`${what}; the target is ${target}`];
    if (r.verdict === "unclear") return [`${what}, target ${target}, unclear: ${r.note}`];
    return [];
  });
}
