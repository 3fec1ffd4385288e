/**
 * What every fuzz target implements, and the two ways targets search: fast-check properties
 * (which shrink a failure to a minimal counterexample) and hand-rolled generators over a seeded
 * Random (which report the exact failing input).
 */
import fc from "fast-check";
import { Random } from "./random.js";

/** An invariant broke. The message says which one; `input` is the exact input that broke it. */
export class Violation extends Error {
  override readonly name = "Violation";
  constructor(
    message: string,
    readonly input?: unknown,
  ) {
    super(message);
  }
}

export interface TargetOptions {
  /** Time budget for the search. */
  seconds: number;
  seed: number;
  /** Time budget for shrinking a failure found by a fast-check target. */
  shrinkSeconds: number;
  /** Replay this fast-check counterexample path (with `seed`) instead of searching. */
  path?: string;
  /** Check the regressions of fixed bugs that --lenient tolerates (see README.md). */
  strict: boolean;
}

export interface Failure {
  /** The invariant that broke, or the unexpected exception. */
  message: string;
  /** The smallest failing input known, printable. */
  counterexample: string;
  /** True when fast-check shrank the counterexample. */
  shrunk: boolean;
  /** fast-check's counterexample path: `--seed S --path P` replays it directly. */
  path?: string;
  /** The seed the failure was found with, when not the run's own (see connection.ts lanes). */
  seed?: number;
}

export interface Report {
  runs: number;
  /** Counters that show what the run exercised (inputs rejected, error codes seen, ...). */
  stats: Record<string, unknown>;
  failure: Failure | null;
}

export interface Target {
  name: string;
  /** One line: what the target checks. */
  summary: string;
  run(options: TargetOptions): Promise<Report>;
}

/** Always succeeds before this many runs: numRuns is effectively unbounded, time bounds it. */
const UNBOUNDED_RUNS = 2 ** 31 - 1;

function describeError(error: unknown): string {
  if (error instanceof Violation) return error.message;
  if (error instanceof Error) return `unexpected exception: ${error.stack ?? error.message}`;
  return `unexpected exception: ${String(error)}`;
}

export interface PropertySearch<Ts> {
  /** Prints a counterexample; fast-check's stringify by default. */
  format?: (value: Ts) => string;
  plugins?: fc.Plugin<unknown>[];
  /** A failure that only means "stop searching" (not a broken invariant): no report. */
  isStop?: (error: unknown) => boolean;
}

/**
 * Runs a fast-check property for the time budget: first a search that stops at the first
 * failure, then a replay of that failure (by seed and path) that shrinks it within its own
 * budget. A failure that does not replay (a timing-dependent one) is reported unshrunk.
 */
export async function searchProperty<Ts>(
  property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>,
  options: TargetOptions,
  search: PropertySearch<Ts> = {},
): Promise<{ runs: number; failure: Failure | null }> {
  const format = search.format ?? ((value: Ts) => fc.stringify(value));
  // fast-check's own plugins are typed for any property.
  const withPlugins = (...extra: fc.Plugin<unknown>[]) =>
    [...extra, ...(search.plugins ?? [])] as unknown as fc.Plugin<Ts>[];
  const check = (parameters: fc.Parameters<Ts>): Promise<fc.RunDetails<Ts>> =>
    Promise.resolve(
      property.isAsync()
        ? fc.check(property as fc.IAsyncProperty<Ts>, parameters)
        : fc.check(property as fc.IProperty<Ts>, parameters),
    );

  let runs = 0;
  let path = options.path;
  let first: fc.RunDetails<Ts> | null = null;
  if (path === undefined) {
    first = await check({
      seed: options.seed,
      numRuns: UNBOUNDED_RUNS,
      endOnFailure: true,
      plugins: withPlugins(fc.interruptAfterTimeLimit(options.seconds * 1000)),
    });
    runs = first.numRuns;
    if (!first.failed) return { runs, failure: null };
    if (search.isStop?.(first.errorInstance)) return { runs: runs - 1, failure: null };
    path = first.counterexamplePath ?? undefined;
  }

  const shrunk = await check({
    seed: options.seed,
    path,
    plugins: withPlugins(fc.interruptAfterTimeLimit(options.shrinkSeconds * 1000)),
  });
  if (shrunk.failed && shrunk.counterexample !== null && !search.isStop?.(shrunk.errorInstance)) {
    return {
      runs: runs || shrunk.numRuns,
      failure: {
        message: describeError(shrunk.errorInstance),
        counterexample: format(shrunk.counterexample),
        shrunk: true,
        path: shrunk.counterexamplePath ?? path,
      },
    };
  }
  if (first?.counterexample) {
    return {
      runs,
      failure: {
        message: `${describeError(first.errorInstance)}\n(did not fail again on replay, so not shrunk)`,
        counterexample: format(first.counterexample),
        shrunk: false,
        path,
      },
    };
  }
  return {
    runs: shrunk.numRuns,
    failure: {
      message: "the replayed path did not fail",
      counterexample: "(none)",
      shrunk: false,
      path,
    },
  };
}

/**
 * Runs `iterate` with one seeded Random until the budget is spent. Each iteration throws a
 * Violation carrying its exact input when an invariant breaks; any other exception is a failure
 * too, reproducible from the seed.
 */
export async function searchLoop(
  options: TargetOptions,
  iterate: (random: Random) => void | Promise<void>,
  batch = 1,
): Promise<{ runs: number; failure: Failure | null }> {
  if (options.path !== undefined) {
    throw new Violation("--path replays fast-check targets only; reproduce this one with --seed");
  }
  const random = new Random(options.seed);
  const deadline = Date.now() + options.seconds * 1000;
  let runs = 0;
  while (Date.now() < deadline) {
    for (let i = 0; i < batch; i++) {
      try {
        const pending = iterate(random);
        if (pending !== undefined) await pending;
      } catch (error) {
        const input = error instanceof Violation ? error.input : undefined;
        return {
          runs,
          failure: {
            message: describeError(error),
            counterexample:
              input === undefined
                ? `(not recorded: run ${runs + 1} of seed ${options.seed})`
                : JSON.stringify(input),
            shrunk: false,
          },
        };
      }
      runs++;
    }
  }
  return { runs, failure: null };
}
