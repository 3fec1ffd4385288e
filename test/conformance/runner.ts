// Runs one case definition over a fresh TCP connection and judges it.
import { performance } from "node:perf_hooks";
import { FuzzingClient } from "./fuzzing-client.js";
import { Case, type CaseDefinition, formatReport, judge, type Verdict } from "./judge.js";

export interface Target {
  host: string;
  port: number;
  path?: string;
}

export interface CaseRun {
  case: Case;
  verdict: Verdict;
  durationMs: number;
  report(wirelogTail?: number): string;
}

/** Slack above the case's own timers for Autobahn's close and drop timeouts (1 s each). */
const DEADLINE_SLACK_SECONDS = 4;

/** Cases without an explicit bound arm at most a 1-second timer (killAfter/closeAfter). */
const DEFAULT_CASE_SECONDS = 3;

/**
 * Autobahn's timers (a case's killAfter of 0.5 s, the 1 s close timeouts) assume a quiet machine;
 * the suite runs beside others on two CPUs, so every timer of a case runs this much longer.
 */
const TIME_SCALE = 2;

/** The harness's deadline for a case on a quiet machine (the client scales it). */
function unscaledDeadlineSeconds(def: CaseDefinition): number {
  return (def.maxSeconds ?? DEFAULT_CASE_SECONDS) + DEADLINE_SLACK_SECONDS;
}

/** The harness drops TCP at this point at the latest, so a case never outlives its test. */
export function caseDeadlineSeconds(def: CaseDefinition): number {
  return unscaledDeadlineSeconds(def) * TIME_SCALE;
}

export async function runCase(def: CaseDefinition, target: Target): Promise<CaseRun> {
  const client = new FuzzingClient({
    host: target.host,
    port: target.port,
    path: target.path,
    offers: def.offers,
    // Autobahn waits 5 s for the opening handshake; 2 s is plenty on loopback and keeps a
    // server that never answers from stalling the suite.
    openHandshakeTimeout: 2,
    // Unscaled here: the client scales every timer it arms.
    hardDeadline: unscaledDeadlineSeconds(def),
    timeScale: TIME_SCALE,
  });
  const c = new Case(def, client);
  const started = performance.now();
  client.start(c);
  await client.closed;
  const durationMs = Math.round(performance.now() - started);
  const verdict = judge(c);
  return {
    case: c,
    verdict,
    durationMs,
    report: (tail) => formatReport(c, verdict, durationMs, tail),
  };
}
