// What the throughput suites (echo, broadcast, connect) do alike: run every case on every
// server round after round, log each run, then summarize each server's runs of a case into a
// figure with its flags and compute the case's ratios.
import type { Outcome } from "./generator.js";
import type { CaseResult, Figure, Metric, Ratio, SuiteContext, SuiteId } from "./result.js";
import { type RunningServer, roundRobin, type ServerSpec } from "./server.js";
import {
  type CheckOptions,
  check,
  figureOf,
  okRuns,
  type RatioSpec,
  ratioOf,
  STEAL_WARN_PCT,
  type Summary,
  summarize,
  type WindowFields,
} from "./stats.js";

export interface MeasuredCase {
  id: string;
  label: string;
}

type Ok<T> = Extract<Outcome<T>, { ok: true }>;

/** Every run's outcome, by case id, then by server name, in round order. */
export type Outcomes<T> = Map<string, Record<string, Array<Outcome<T>>>>;

/**
 * Runs of one case on one server that may be measured again because the hypervisor took over
 * STEAL_WARN_PCT of a core during them (each at most once). A run measured again is logged and
 * replaced by the new one, whatever its steal: the rule is fixed before the figures are seen, so
 * it removes disturbed runs without choosing among results. Bounded, so a machine that is never
 * quiet costs a run at most a few more minutes.
 */
export const STEAL_REPEATS_PER_SERVER = 2;

/**
 * Runs every case on every server for `rounds` rounds (roundRobin) and logs each run as
 * `describe` words it. The case label is left out of the log when `labelInLog` is false (a suite
 * with a single case).
 */
export async function measureCases<C extends MeasuredCase, T>(
  ctx: SuiteContext,
  specs: readonly ServerSpec[],
  cases: readonly C[],
  opts: { rounds: number; pauseMs: number; labelInLog?: boolean; notices?: string[] },
  run: (c: C, server: RunningServer) => Promise<Outcome<T>>,
  describe: (run: Ok<T>) => string,
): Promise<Outcomes<T>> {
  const outcomes: Outcomes<T> = new Map(
    cases.map((c) => [c.id, Object.fromEntries(specs.map((s) => [s.name, []]))]),
  );
  let repeated = 0;
  const servers = await ctx.servers.start([...specs]);
  try {
    const labelWidth = Math.max(...cases.map((c) => c.label.length));
    /** Repeats left, by case id and server name (none in a --quick run: a smoke run). */
    const repeatsLeft = new Map<string, number>();
    await roundRobin(opts.rounds, cases, servers, opts.pauseMs, async (round, c, server) => {
      const label = opts.labelInLog === false ? "" : `${c.label.padEnd(labelWidth)}  `;
      const line = (shown: string) =>
        `  round ${round + 1}/${opts.rounds}  ${label}${server.spec.name.padEnd(18)} ${shown}`;
      let outcome = await run(c, server);
      const key = `${c.id}\u0000${server.spec.name}`;
      const left = repeatsLeft.get(key) ?? (ctx.quick ? 0 : STEAL_REPEATS_PER_SERVER);
      if (outcome.ok && (outcome.steal_pct ?? 0) > STEAL_WARN_PCT && left > 0) {
        repeatsLeft.set(key, left - 1);
        ctx.log(`${line(describe(outcome as Ok<T>))}: measured again (steal)`);
        await new Promise((resolve) => setTimeout(resolve, opts.pauseMs));
        outcome = await run(c, server);
        repeated++;
      }
      outcomes.get(c.id)![server.spec.name].push(outcome);
      ctx.log(line(outcome.ok ? describe(outcome as Ok<T>) : `error: ${outcome.error}`));
    });
  } finally {
    await ctx.servers.release(servers);
  }
  if (repeated > 0) {
    const notice =
      `${repeated} run(s) measured again because the hypervisor took over ${STEAL_WARN_PCT}% of a ` +
      `core during them (at most ${STEAL_REPEATS_PER_SERVER} per case and server; the new run counts)`;
    opts.notices?.push(notice);
    ctx.log(`notice: ${notice}`);
  }
  return outcomes;
}

export interface CaseMeasure<T> {
  suite: SuiteId;
  metric: Metric;
  /** The headline figure of a run (msg/s) and the work it counts over the window (messages). */
  figure: (run: Ok<T>) => number;
  work: (run: Ok<T>) => number;
  check: CheckOptions;
  /** The suite's own figures for a server, from its successful runs. */
  extra: (ok: Array<Ok<T>>, s: Summary) => Record<string, number>;
  ratios: readonly RatioSpec[];
  /** Prefix of the warnings (the case label); without it they name the server only. */
  warningLabel?: string;
}

/** What the cases of a suite add up to: their warnings and ratios, and whether a run failed. */
export interface CaseTotals {
  warnings: string[];
  ratios: Ratio[];
  failed: boolean;
}

export function caseTotals(): CaseTotals {
  return { warnings: [], ratios: [], failed: false };
}

/**
 * One case's result: each server's runs summarized into a figure with its flags, and the ratios
 * asked for. Warnings and whether any run failed are added to `into`.
 */
export function caseResult<T extends WindowFields>(
  c: MeasuredCase,
  specs: readonly ServerSpec[],
  byServer: Record<string, Array<Outcome<T>>>,
  how: CaseMeasure<T>,
  into: CaseTotals,
): CaseResult {
  const figures: Figure[] = specs.map((spec) => {
    const outcomes = byServer[spec.name];
    const s = summarize(outcomes, how.figure, how.work);
    const label = how.warningLabel === undefined ? spec.name : `${how.warningLabel}, ${spec.name}`;
    const { flags, warnings } = check(label, s, how.check);
    if (s.errors.length > 0) into.failed = true;
    into.warnings.push(...warnings);
    return figureOf(spec.name, s, flags, how.extra(okRuns(outcomes) as Array<Ok<T>>, s));
  });
  const result: CaseResult = {
    id: c.id,
    label: c.label,
    metric: how.metric,
    figures,
    runs: byServer,
  };
  for (const spec of how.ratios) {
    const ratio = ratioOf(how.suite, result, figures, byServer, spec, (run) =>
      (run as Outcome<T>).ok ? how.figure(run as Ok<T>) : Number.NaN,
    );
    if (ratio) into.ratios.push(ratio);
  }
  return result;
}
