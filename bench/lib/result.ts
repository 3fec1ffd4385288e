// What a suite returns: for each case, one figure per server (a median over rounds, with its
// latency percentiles, CPU and flags), and the ratios of Switchboard's figures to its peers',
// with the product's targets and verdicts. The orchestrator (bench/run.ts) collects these into
// the report (report.ts) and the chart (chart.ts).
import type { GeneratorName } from "./build.js";
import type { Placement } from "./machine.js";
import type { Isolation, Peer, ServerMode, ServerPool, ServerSpec } from "./server.js";

export type SuiteId = "echo" | "deflate" | "broadcast" | "connect" | "idle";

/**
 * What can make a figure say less about the server than it seems to:
 * - generator-saturated: the load generator used over 80% of its core, so it may have been the
 *   limit; the figure is a lower bound on the server's, not the server's;
 * - server-not-busy: the server (its process, or its core with the kernel's network work) was
 *   busy under 85% of the time in a case meant to saturate it: something else limited it;
 * - disturbed: in some runs other processes used over 20% of a core;
 * - steal: in some runs the hypervisor took over 10% of a core away (steal time);
 * - unsettled: (idle) the server's RSS had not settled when it was read;
 * - errors: some runs failed (the figure is over the others, if any).
 */
export type Flag =
  | "generator-saturated"
  | "server-not-busy"
  | "disturbed"
  | "steal"
  | "unsettled"
  | "errors";

export interface Metric {
  /** "msg/s", "deliveries/s", "handshakes/s", "KiB/conn". */
  name: string;
  higherIsBetter: boolean;
}

export interface Figure {
  server: string;
  /** Median over the rounds' successful runs. */
  value: number;
  /** Work per CPU-second of the server (throughput suites): robust to other load. */
  perServerCpuS: number;
  /** Medians over rounds of each run's latency percentiles, ms (NaN where not measured). */
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** % of one core: the server's process, all threads and child processes. */
  serverCpuPct: number;
  /** % of one core: the highest of the generator's runs. */
  generatorCpuPct: number;
  /** (max - min) / median across rounds, %. */
  spreadPct: number;
  /** Successful runs. */
  runs: number;
  flags: Flag[];
  /** Suite-specific figures (echoes per read, RSS, core busy, ...). */
  extra: Record<string, number>;
}

export interface CaseResult {
  /** Stable id: "32B-x16", "1-1000". */
  id: string;
  /** "32 B text, 16 in flight". */
  label: string;
  metric: Metric;
  figures: Figure[];
  /** Every run's raw outcome, per server, in round order. */
  runs: Record<string, unknown[]>;
}

export type Verdict = "met" | "missed" | "unclear" | "-";

export interface Ratio {
  suite: SuiteId;
  caseId: string;
  caseLabel: string;
  /** The Switchboard server and the server it is compared with (a peer, or main for worker). */
  ours: string;
  peer: string;
  /** ours / peer, of the medians. */
  ratio: number;
  /** The same for work per server CPU-second (throughput suites). */
  perCpuRatio: number;
  /** ours / peer in each round, the two measured in the same round. */
  perRound: number[];
  higherIsBetter: boolean;
  /** The product's target: ratio >= target (or <= when lower is better). */
  target?: number;
  verdict: Verdict;
  /** Why a verdict is unclear, or what qualifies it. */
  note?: string;
  /** Drawn in the chart: Switchboard against a peer (ws, uWS). */
  chart: boolean;
}

export interface SuiteResult {
  id: SuiteId;
  title: string;
  /** One paragraph: what is measured. */
  description: string;
  options: object;
  servers: ServerSpec[];
  cases: CaseResult[];
  ratios: Ratio[];
  notices: string[];
  warnings: string[];
  /** Some run failed. */
  failed: boolean;
  elapsedS: number;
}

/** Options every suite takes, from the orchestrator's command line. */
export interface SharedOptions {
  quick: boolean;
  /** --rounds when given; each suite has its own default otherwise (1 with --quick). */
  rounds?: number;
  pin: boolean;
  /** Where the Switchboard service runs; one Switchboard server per mode. */
  isolation: Isolation[];
  peers: Peer[];
  /** --tsx: every server from its TypeScript through tsx instead of compiled. */
  tsx: boolean;
}

export interface SuiteContext {
  where: Placement;
  /** --quick: a smoke run (no run is measured again for steal). */
  quick: boolean;
  /** The compiled generators. */
  generators: Partial<Record<GeneratorName, string>>;
  /** The uwebsockets version when it loads; undefined when uWS is skipped. */
  uwsVersion?: string;
  /** Starts the suite's servers, or hands out an earlier suite's (--quick); see ServerPool. */
  servers: ServerPool;
  /** How the servers run: compiled (built before the first suite) or through tsx (--tsx). */
  serverMode: ServerMode;
  /** Prints a line of progress (the console). */
  log: (line: string) => void;
}

export interface Suite<O extends object> {
  id: SuiteId;
  title: string;
  /** Lines for --help, under the suite's name. */
  usage: string;
  /** Its own flags ("--sizes"), with whether each takes a value. */
  flags: Record<string, "value" | "switch">;
  /** The generators it runs. */
  generators: GeneratorName[];
  /** Whether it starts Node servers (bench/servers/), which the run then compiles first. */
  startsServers: boolean;
  /** Its options from the shared ones and the values of its own flags. */
  options(shared: SharedOptions, flags: FlagValues): O;
  /** A rough duration in seconds, for the estimate printed at the start. */
  estimateS(shared: SharedOptions, options: O, uws: boolean): number;
  run(shared: SharedOptions, options: O, ctx: SuiteContext): Promise<SuiteResult>;
}

/** The values of the flags given on the command line: a string, or true for a switch. */
export type FlagValues = Map<string, string | true>;
