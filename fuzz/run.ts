/**
 * Runs the fuzz targets, each for a time budget, and exits non-zero with the smallest failing
 * input when an invariant breaks:
 *
 *   npm run fuzz                                  every target, 20 s each
 *   npm run fuzz -- protocol utf8 --seconds 60    the protocol-* targets and utf8, 60 s each
 *   npm run fuzz -- protocol-exact --seed 42      reproduce a run
 *   npm run fuzz -- protocol-exact --seed 42 --path "12:3:0"   replay and shrink a counterexample
 *   npm run fuzz -- --lenient                     tolerate the two fixed issues (README.md)
 *   npm run fuzz -- --list
 *
 * Every target runs in a child process of its own, one after another, so a target that hangs
 * (an infinite loop in a parser blocks its event loop) is killed and reported rather than
 * stalling the run, and what one target leaves behind (timers, listeners) cannot disturb the
 * next. Everything is in memory: no sockets are opened.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { connectionTarget } from "./connection.js";
import { handshakeTargets } from "./handshake.js";
import { protocolTargets } from "./protocol.js";
import type { Report, Target, TargetOptions } from "./target.js";
import { utf8Target } from "./utf8.js";

const TARGETS: Target[] = [...protocolTargets, utf8Target, ...handshakeTargets, connectionTarget];

const DEFAULT_SECONDS = 20;
/** Past its budgets, a child gets this long to report before it is declared stuck. */
const GRACE_SECONDS = 60;

interface Arguments {
  names: string[];
  seconds: number;
  seed: number;
  path?: string;
  list: boolean;
  strict: boolean;
  child?: string;
}

function usage(message: string): never {
  console.error(`fuzz: ${message}`);
  console.error(
    "usage: npm run fuzz -- [target|group ...] [--seconds N] [--seed S] [--path P] [--lenient] [--list]",
  );
  process.exit(2);
}

function parseArguments(argv: string[]): Arguments {
  const args: Arguments = {
    names: [],
    seconds: DEFAULT_SECONDS,
    seed: Date.now() % 2 ** 31,
    list: false,
    strict: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${arg} needs a value`);
      return v;
    };
    if (arg === "--seconds") {
      args.seconds = Number(value());
      if (!(args.seconds > 0)) usage("--seconds must be a positive number");
    } else if (arg === "--seed") {
      args.seed = Number(value());
      if (!Number.isInteger(args.seed)) usage("--seed must be an integer");
    } else if (arg === "--path") {
      args.path = value();
    } else if (arg === "--list") {
      args.list = true;
    } else if (arg === "--strict") {
      args.strict = true;
    } else if (arg === "--lenient") {
      args.strict = false;
    } else if (arg === "--child") {
      args.child = value();
    } else if (arg.startsWith("-")) {
      usage(`unknown option ${arg}`);
    } else {
      args.names.push(arg);
    }
  }
  return args;
}

/** A name selects the target of that name, or the group of targets named `name-...`. */
function select(names: string[]): Target[] {
  if (names.length === 0) return TARGETS;
  const chosen = new Set<Target>();
  for (const name of names) {
    const matching = TARGETS.filter((t) => t.name === name || t.name.startsWith(`${name}-`));
    if (matching.length === 0) usage(`no target named ${name} (try --list)`);
    for (const t of matching) chosen.add(t);
  }
  return TARGETS.filter((t) => chosen.has(t));
}

function shrinkSecondsFor(seconds: number): number {
  return Math.min(60, Math.max(10, seconds));
}

// ───────────────────────────── child: run one target ─────────────────────────────

async function runChild(args: Arguments, name: string): Promise<void> {
  const target = TARGETS.find((t) => t.name === name);
  if (!target) throw new Error(`no target ${name}`);
  const options: TargetOptions = {
    seconds: args.seconds,
    seed: args.seed,
    shrinkSeconds: shrinkSecondsFor(args.seconds),
    path: args.path,
    strict: args.strict,
  };
  let report: Report;
  try {
    report = await target.run(options);
  } catch (error) {
    report = {
      runs: 0,
      stats: {},
      failure: {
        message: `the target itself failed: ${(error as Error).stack ?? String(error)}`,
        counterexample: "(none)",
        shrunk: false,
      },
    };
  }
  process.send!(report, () => process.exit(0));
}

// ───────────────────────────── parent: run them all ─────────────────────────────

interface Outcome {
  target: Target;
  report: Report | null;
  /** Why no report came back. */
  crash?: string;
  seconds: number;
}

function runInChild(target: Target, args: Arguments): Promise<Outcome> {
  const started = Date.now();
  const childArgs = [
    "--child",
    target.name,
    "--seconds",
    String(args.seconds),
    "--seed",
    String(args.seed),
  ];
  if (args.path !== undefined) childArgs.push("--path", args.path);
  childArgs.push(args.strict ? "--strict" : "--lenient");
  const child = fork(fileURLToPath(import.meta.url), childArgs, {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const limit = (args.seconds + shrinkSecondsFor(args.seconds) + GRACE_SECONDS) * 1000;
  return new Promise((resolve) => {
    let report: Report | null = null;
    let crash: string | undefined;
    const timer = setTimeout(() => {
      crash = `did not finish within ${limit / 1000} s (a hang or an infinite loop): killed`;
      child.kill("SIGKILL");
    }, limit);
    child.on("message", (message) => {
      report = message as Report;
    });
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (report === null && crash === undefined) {
        crash = `the child process exited (${signal ?? `code ${code}`}) without a report`;
      }
      resolve({ target, report, crash, seconds: (Date.now() - started) / 1000 });
    });
  });
}

function formatStats(stats: Record<string, unknown>): string {
  return Object.entries(stats)
    .map(
      ([key, value]) =>
        `${key} ${typeof value === "number" ? value.toLocaleString("en-US") : String(value)}`,
    )
    .join(", ");
}

function indent(text: string, prefix = "    "): string {
  return text
    .split("\n")
    .map((line) => prefix + line)
    .join("\n");
}

function print(outcome: Outcome, args: Arguments, width: number): boolean {
  const name = outcome.target.name.padEnd(width);
  const seconds = `${outcome.seconds.toFixed(1)} s`;
  const { report } = outcome;
  if (report === null) {
    console.log(`${name}  FAILED  ${seconds}\n  ${outcome.crash}`);
    console.log(`  reproduce: npm run fuzz -- ${outcome.target.name} --seed ${args.seed}`);
    return false;
  }
  const runs = `${report.runs.toLocaleString("en-US")} runs`;
  const stats = formatStats(report.stats);
  if (report.failure === null) {
    console.log(
      `${name}  ok      ${runs.padStart(16)}  ${seconds.padStart(7)}${stats ? `  (${stats})` : ""}`,
    );
    return true;
  }
  const f = report.failure;
  console.log(`${name}  FAILED  after ${runs}, ${seconds}`);
  console.log(`  invariant broken:\n${indent(f.message)}`);
  console.log(`  counterexample${f.shrunk ? " (shrunk by fast-check)" : " (exact input)"}:`);
  console.log(indent(f.counterexample));
  const replay = f.path !== undefined ? ` --path "${f.path}"` : "";
  const seed = f.seed ?? args.seed;
  console.log(`  reproduce: npm run fuzz -- ${outcome.target.name} --seed ${seed}${replay}`);
  return false;
}

async function main(): Promise<void> {
  const args = parseArguments(process.argv.slice(2));
  if (args.child !== undefined) return runChild(args, args.child);
  const targets = select(args.names);
  const width = Math.max(...TARGETS.map((t) => t.name.length));
  if (args.list) {
    for (const t of TARGETS) console.log(`${t.name.padEnd(width)}  ${t.summary}`);
    return;
  }
  if (args.path !== undefined && targets.length !== 1) usage("--path replays one target: name it");
  console.log(
    `fuzz: seed ${args.seed}, ${args.seconds} s per target (+ up to ${shrinkSecondsFor(args.seconds)} s to shrink a failure), ${targets.length} targets`,
  );
  const started = Date.now();
  let failed = 0;
  let runs = 0;
  for (const target of targets) {
    const outcome = await runInChild(target, args);
    runs += outcome.report?.runs ?? 0;
    if (!print(outcome, args, width)) failed++;
  }
  const total = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `fuzz: ${targets.length - failed} of ${targets.length} targets passed, ${runs.toLocaleString("en-US")} runs in ${total} s, seed ${args.seed}`,
  );
  if (failed > 0) process.exitCode = 1;
}

await main();
