// The round runner the throughput suites share: a run during which the hypervisor took over
// STEAL_WARN_PCT of a core is measured again, at most twice per case and server, and the run
// says so; a --quick run never repeats. Exercised with stand-in servers and runs (the suites'
// real runs are covered by the bench smoke tests).
import { describe, expect, it } from "vitest";
import type { Outcome } from "../../bench/lib/generator.js";
import { measureCases, STEAL_REPEATS_PER_SERVER } from "../../bench/lib/measure.js";
import type { SuiteContext } from "../../bench/lib/result.js";
import type { RunningServer, ServerPool, ServerSpec } from "../../bench/lib/server.js";
import { STEAL_WARN_PCT } from "../../bench/lib/stats.js";

type Run = { value: number; steal_pct?: number };

function context(quick: boolean, log: string[]): SuiteContext {
  const servers = {
    start: async (specs: ServerSpec[]) =>
      specs.map((spec) => ({ spec }) as unknown as RunningServer),
    release: async () => {},
  } as unknown as ServerPool;
  return {
    where: { note: "", pinned: false } as unknown as SuiteContext["where"],
    quick,
    generators: {},
    servers,
    serverMode: "compiled",
    log: (line) => log.push(line),
  };
}

const specs = [{ name: "a" }, { name: "b" }] as unknown as ServerSpec[];
const cases = [{ id: "one", label: "one" }];

/** Runs whose steal comes from `steal[server]` in order (0 when used up); values count up. */
function runs(steal: Record<string, number[]>) {
  const made: Record<string, Run[]> = { a: [], b: [] };
  const run = async (_c: unknown, server: RunningServer): Promise<Outcome<Run>> => {
    const name = server.spec.name;
    const result = {
      ok: true as const,
      value: made[name]!.length,
      steal_pct: steal[name]!.shift() ?? 0,
    };
    made[name]!.push(result);
    return result;
  };
  return { made, run };
}

describe("measureCases: runs disturbed by steal time", () => {
  it("measures a stolen run again and keeps the new one, at most twice per case and server", async () => {
    const log: string[] = [];
    const notices: string[] = [];
    const high = STEAL_WARN_PCT + 15;
    const { made, run } = runs({ a: [high, high, 0, high, high, high, high], b: [0, 0, 0] });
    const outcomes = await measureCases(
      context(false, log),
      specs,
      cases,
      { rounds: 3, pauseMs: 0, notices },
      run,
      (r) => `value ${r.value}`,
    );
    const byServer = outcomes.get("one")!;
    // a: round 1 stolen -> again (stolen too, kept: one repeat per run); round 2 quiet;
    // round 3 stolen -> again (the second and last repeat), kept whatever its steal.
    expect(made.a!.map((r) => r.steal_pct)).toEqual([high, high, 0, high, high]);
    expect(byServer.a!.map((r) => (r.ok ? r.value : -1))).toEqual([1, 2, 4]);
    expect(byServer.b!.map((r) => (r.ok ? r.value : -1))).toEqual([0, 1, 2]);
    expect(STEAL_REPEATS_PER_SERVER).toBe(2);
    expect(log.filter((line) => line.endsWith("measured again (steal)"))).toHaveLength(2);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/^2 run\(s\) measured again/);
  });

  it("never measures again in a --quick run, and says nothing when no run was stolen", async () => {
    const notices: string[] = [];
    const { made, run } = runs({ a: [90, 90], b: [] });
    const outcomes = await measureCases(
      context(true, []),
      specs,
      cases,
      { rounds: 2, pauseMs: 0, notices },
      run,
      () => "",
    );
    expect(made.a).toHaveLength(2);
    expect(outcomes.get("one")!.a).toHaveLength(2);
    expect(notices).toEqual([]);
    const quiet: string[] = [];
    await measureCases(
      context(false, []),
      specs,
      cases,
      { rounds: 2, pauseMs: 0, notices: quiet },
      runs({ a: [], b: [] }).run,
      () => "",
    );
    expect(quiet).toEqual([]);
  });
});
