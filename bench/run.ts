// `npm run bench`: the whole side-by-side suite in one run, on one load generator. Switchboard
// (its service server with the service on the I/O thread, "main", and in a worker thread,
// "worker") against the `ws` package and uWebSockets.js (the `uwebsockets` package, skipped
// with a notice where it does not load):
//
//   echo       64 connections x 16 in flight at 32 B and 4 KiB, and 32 B x 1 in flight
//   deflate    the same echo at 4 KiB with permessage-deflate (Switchboard vs ws)
//   broadcast  1 publisher -> 1,000 subscribers, and 100 publishers into 10 topics of 100
//   connect    handshakes per second with 32 concurrent connectors and a clean close
//   idle       server memory per idle connection, 19,000 of them
//
// Each suite is in bench/suites/, the code they share in bench/lib/. The C load generators
// (bench/loadgen/) are compiled once, at the start, and so are the servers: tsc compiles them,
// Switchboard's sources and the bench services into bench/.build/js, where they run with plain
// node, as Switchboard ships and as ws and uWebSockets.js run (--tsx runs their TypeScript
// through tsx instead). Each server runs alone, pinned to one core, the generator to another.
// After the run the report goes to bench/results/<date>.{json,md,svg} and
// bench/results/latest.*; with --publish also to docs/performance.{md,svg} and README.md.
// See docs/benchmarks.md for what is measured and how to read it.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { buildServers, compileGenerators, type GeneratorName } from "./lib/build.js";
import { chart } from "./lib/chart.js";
import { formatPct, formatRatio, table } from "./lib/format.js";
import {
  idleLoadPct,
  machineInfo,
  machineLine,
  placement,
  uwsAvailability,
} from "./lib/machine.js";
import { parseIntFlag, parseNames } from "./lib/options.js";
import { installExitHandlers, killAll, resultsDir, rootDir } from "./lib/proc.js";
import { markdown, type Report, ratioLabel, targetText } from "./lib/report.js";
import type {
  FlagValues,
  SharedOptions,
  Suite,
  SuiteContext,
  SuiteId,
  SuiteResult,
} from "./lib/result.js";
import {
  type Isolation,
  type Peer,
  SERVER_MODE_TEXT,
  type ServerMode,
  ServerPool,
} from "./lib/server.js";
import { OTHER_LOAD_WARN_PCT } from "./lib/stats.js";
import { broadcastSuite } from "./suites/broadcast.js";
import { connectSuite } from "./suites/connect.js";
import { deflateSuite, echoSuite } from "./suites/echo.js";
import { idleSuite } from "./suites/idle.js";

/** Every suite, in the order a run takes them. */
const SUITES: Array<Suite<object>> = [
  echoSuite,
  deflateSuite,
  broadcastSuite,
  connectSuite,
  idleSuite,
];
const SUITE_IDS = SUITES.map((s) => s.id);

const SHARED_FLAGS: Record<string, "value" | "switch"> = {
  "--quick": "switch",
  "--only": "value",
  "--rounds": "value",
  "--no-pin": "switch",
  "--publish": "switch",
  "--peers": "value",
  "--isolation": "value",
  "--tsx": "switch",
  "--help": "switch",
  "-h": "switch",
};

const USAGE = `usage: npm run bench -- [options]

  --quick               the whole suite in under a minute: 1 round, short windows, fewer
                        cases and servers (see docs/benchmarks.md); a smoke run, not figures
  --only A,B            suites to run, of ${SUITE_IDS.join(", ")} (default: all)
  --rounds N            rounds per case; each figure is the median (default 5, idle 3; --quick 1)
  --isolation A,B       where the Switchboard service runs: main, worker, process (default
                        main,worker; connect and idle measure main and worker only)
  --peers A,B           servers to compare with: ws, uws, or none (default ws,uws; uws is
                        skipped with a notice when the uwebsockets package does not load)
  --no-pin              do not pin the servers and the generators to separate cores
  --tsx                 run the servers from their TypeScript through tsx instead of compiled
                        with tsc into bench/.build/js (tsx keeps function names: esbuild's
                        keepNames costs Switchboard's per-connection closures memory and CPU)
  --publish             also write docs/performance.md and docs/performance.svg and update the
                        performance section of README.md
  --help                this text

npm run bench:broadcast, bench:connect, bench:idle are \`npm run bench -- --only <suite>\`.
${SUITES.map((s) => `\n${s.title}:\n${s.usage}`).join("\n")}
`;

interface Parsed {
  shared: SharedOptions;
  only: SuiteId[];
  publish: boolean;
  flags: FlagValues;
}

function parseArgs(argv: string[]): Parsed {
  const known: Record<string, "value" | "switch"> = { ...SHARED_FLAGS };
  for (const suite of SUITES) Object.assign(known, suite.flags);
  const flags: FlagValues = new Map();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const kind = known[arg];
    if (kind === undefined) throw new Error(`unknown option ${arg}\n\n${USAGE}`);
    if (kind === "switch") flags.set(arg, true);
    else {
      const value = argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      flags.set(arg, value);
    }
  }
  if (flags.has("--help") || flags.has("-h")) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const only = flags.has("--only")
    ? parseNames("--only", String(flags.get("--only")), SUITE_IDS)
    : [...SUITE_IDS];
  if (only.length === 0) throw new Error("--only names no suite");
  // A suite's own flag for a suite that does not run is a mistake worth saying.
  const selected = SUITES.filter((s) => only.includes(s.id));
  for (const flag of flags.keys()) {
    if (flag in SHARED_FLAGS) continue;
    if (!selected.some((s) => flag in s.flags)) {
      const owners = SUITES.filter((s) => flag in s.flags).map((s) => s.id);
      throw new Error(`${flag} is an option of ${owners.join(", ")}, which --only leaves out`);
    }
  }
  const isolation = flags.has("--isolation")
    ? parseNames<Isolation>("--isolation", String(flags.get("--isolation")), [
        "main",
        "worker",
        "process",
      ])
    : (["main", "worker"] as Isolation[]);
  if (isolation.length === 0) throw new Error("--isolation needs at least one mode");
  const shared: SharedOptions = {
    quick: flags.has("--quick"),
    rounds: flags.has("--rounds")
      ? parseIntFlag("--rounds", String(flags.get("--rounds")), 1, 100)
      : undefined,
    pin: !flags.has("--no-pin"),
    isolation,
    peers: flags.has("--peers")
      ? parseNames<Peer>("--peers", String(flags.get("--peers")), ["ws", "uws"])
      : ["ws", "uws"],
    tsx: flags.has("--tsx"),
  };
  return { shared, only, publish: flags.has("--publish"), flags };
}

/** The command as typed: through npm when npm ran it. */
function commandLine(argv: string[]): string {
  const quoted = argv.map((a) =>
    /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`,
  );
  if (process.env.npm_lifecycle_event?.startsWith("bench")) {
    return `npm run bench${quoted.length ? ` -- ${quoted.join(" ")}` : ""}`;
  }
  return `npx tsx bench/run.ts${quoted.length ? ` ${quoted.join(" ")}` : ""}`;
}

const README_START = "<!-- performance:start -->";
const README_END = "<!-- performance:end -->";

/** A paragraph broken into lines of at most `width` characters, at spaces. */
function wrap(text: string, width = 100): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines.join("\n");
}

/** The performance section of README.md, between its markers: targets, chart, machine, command. */
function readmeSection(report: Report): string {
  const m = report.machine;
  const rows = report.targets.map(
    (r) =>
      `| ${r.suite} | ${ratioLabel(r)} | ${targetText(r)} | ${formatRatio(r.ratio, r.target)} | ${r.verdict} |`,
  );
  return [
    README_START,
    wrap(
      `Measured with \`${report.command}\` on ${report.date.slice(0, 10)} (git ${m.git}): ` +
        `${m.cpu}, ${m.cores} CPUs, ${m.kernel}, Node ${m.node}, ws ${m.ws}` +
        `${m.uwebsockets ? `, uWebSockets.js (uwebsockets ${m.uwebsockets})` : ""}; ` +
        `${report.placement}; servers ${SERVER_MODE_TEXT[report.server_mode]}. ` +
        "Each figure is the median of the rounds, each ratio Switchboard's " +
        "figure over the peer's in the same run, with the same load generator." +
        (report.quick
          ? " **This is a `--quick` smoke run: rerun without `--quick` for figures.**"
          : ""),
    ),
    "",
    "| suite | ratio | target | measured | |",
    "| :-- | :-- | --: | --: | :-- |",
    ...rows,
    "",
    "![Switchboard's figures relative to ws and uWebSockets.js](docs/performance.svg)",
    "",
    wrap(
      "Every table, latency percentile, CPU figure and flag: [docs/performance.md](docs/performance.md); " +
        "what is measured and how: [docs/benchmarks.md](docs/benchmarks.md).",
    ),
    README_END,
  ].join("\n");
}

function publish(report: Report, md: string, svg: string): string[] {
  const docs = path.join(rootDir, "docs");
  writeFileSync(path.join(docs, "performance.md"), md);
  writeFileSync(path.join(docs, "performance.svg"), svg);
  const written = ["docs/performance.md", "docs/performance.svg"];
  const readmePath = path.join(rootDir, "README.md");
  const readme = readFileSync(readmePath, "utf8");
  const start = readme.indexOf(README_START);
  const end = readme.indexOf(README_END);
  if (start >= 0 && end > start) {
    writeFileSync(
      readmePath,
      readme.slice(0, start) + readmeSection(report) + readme.slice(end + README_END.length),
    );
    written.push("README.md");
  } else {
    console.log(`notice: README.md has no ${README_START} ... ${README_END} section to update`);
  }
  return written;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const { shared, only, publish: doPublish, flags } = parseArgs(argv);
  installExitHandlers();
  const started = Date.now();
  const suites = SUITES.filter((s) => only.includes(s.id));
  const suiteOptions = new Map(suites.map((s) => [s.id, s.options(shared, flags)]));

  // Every generator the run needs, and the servers unless they run through tsx, compiled once,
  // side by side; each only when its sources changed since the last build.
  const serverMode: ServerMode = shared.tsx ? "tsx" : "compiled";
  const needed = [...new Set(suites.flatMap((s) => s.generators))] as GeneratorName[];
  const buildNeeded = serverMode === "compiled" && suites.some((s) => s.startsServers);
  const [generators, build] = await Promise.all([
    compileGenerators(needed),
    buildNeeded ? buildServers() : undefined,
  ]);

  const notices: string[] = [];
  if (build?.warning) notices.push(build.warning);
  let uwsVersion: string | undefined;
  if (shared.peers.includes("uws")) {
    const available = uwsAvailability();
    if (available.ok) uwsVersion = available.version;
    else {
      notices.push(
        `uWebSockets.js skipped: the uwebsockets package does not load (${available.why}); ` +
          "install it with `npm install --no-save uwebsockets` to compare with it",
      );
    }
  }
  if (!shared.quick && shared.rounds !== undefined && shared.rounds < 3) {
    notices.push(
      `--rounds ${shared.rounds}: a figure from fewer than 3 rounds is a single run's, not a median to quote`,
    );
  }
  const where = placement(shared.pin);
  const machine = machineInfo(uwsVersion);
  const backgroundPct = await idleLoadPct(shared.quick ? 300 : 1000);
  const estimateS = suites.reduce(
    (sum, s) => sum + s.estimateS(shared, suiteOptions.get(s.id)!, uwsVersion !== undefined),
    0,
  );
  const command = commandLine(argv);

  console.log(
    `Switchboard benchmarks: ${suites.map((s) => s.id).join(", ")}` +
      `${shared.quick ? " (--quick: a smoke run, not figures)" : ""}; about ${Math.ceil(estimateS)} s`,
  );
  console.log(machineLine(machine));
  console.log(`${where.note}; ${command}`);
  console.log(
    `servers: ${SERVER_MODE_TEXT[serverMode]}` +
      (build
        ? build.rebuilt
          ? ` (built in ${(build.ms / 1000).toFixed(1)} s)`
          : " (up to date with their sources)"
        : ""),
  );
  for (const notice of notices) console.log(`notice: ${notice}`);
  if (backgroundPct !== undefined && backgroundPct > OTHER_LOAD_WARN_PCT) {
    console.log(
      `warning: before starting, other processes used ${formatPct(backgroundPct)} of a core; ` +
        'figures will be noisy (see the "other" CPU of each run)',
    );
  }

  const ctx: SuiteContext = {
    where,
    generators,
    uwsVersion,
    servers: new ServerPool(where, shared.quick, serverMode),
    quick: shared.quick,
    serverMode,
    log: (line) => console.log(line),
  };
  const results: SuiteResult[] = [];
  const skipped: Report["skipped"] = [];
  let failed = false;
  for (const [index, suite] of suites.entries()) {
    console.log(`\n== ${suite.id} (${index + 1}/${suites.length}) ==\n`);
    try {
      const result = await suite.run(shared, suiteOptions.get(suite.id)!, ctx);
      results.push(result);
      if (result.failed) failed = true;
    } catch (error) {
      failed = true;
      const why = error instanceof Error ? error.message : String(error);
      skipped.push({ suite: suite.id, why });
      console.log(`error: ${suite.id} did not run to the end: ${why}`);
    }
  }
  await ctx.servers.stopAll();

  const elapsedS = (Date.now() - started) / 1000;
  const report: Report = {
    date: new Date(started).toISOString(),
    elapsed_s: elapsedS,
    command,
    argv,
    quick: shared.quick,
    machine,
    placement: where.note,
    server_mode: serverMode,
    server_build: build
      ? { dir: path.relative(rootDir, build.jsDir), rebuilt: build.rebuilt, ms: build.ms }
      : null,
    background_load_pct: backgroundPct ?? null,
    options: { shared, suites: Object.fromEntries(suiteOptions) },
    suites: results,
    skipped,
    targets: results.flatMap((s) => s.ratios.filter((r) => r.target !== undefined)),
    notices,
  };

  console.log("\n== summary ==\n");
  if (report.targets.length > 0) {
    const rows = [["target", "measured", "per CPU-s", "verdict"]];
    for (const r of report.targets) {
      rows.push([
        `${r.suite}, ${ratioLabel(r)} ${targetText(r)}`,
        formatRatio(r.ratio, r.target),
        formatRatio(r.perCpuRatio, r.target),
        r.verdict,
      ]);
    }
    console.log(table(rows));
  }
  for (const s of skipped) console.log(`error: ${s.suite} not measured: ${s.why.split("\n")[0]}`);
  const flagged = results.flatMap((s) =>
    s.cases.flatMap((c) =>
      c.figures
        .filter((f) => f.flags.length > 0)
        .map((f) => `${s.id}, ${c.label}, ${f.server}: ${f.flags.join(", ")}`),
    ),
  );
  if (flagged.length > 0) console.log(`\nflagged figures:\n  ${flagged.join("\n  ")}`);
  for (const notice of notices) console.log(`notice: ${notice}`);

  mkdirSync(resultsDir, { recursive: true });
  const stamp =
    report.date.replace(/[:.]/g, "-") + (shared.quick ? "-quick" : "") + (shared.tsx ? "-tsx" : "");
  const base = path.join(resultsDir, stamp);
  const svg = chart(report);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(
    `${base}.md`,
    markdown(report, { chart: `${stamp}.svg`, docs: "../../docs/benchmarks.md" }),
  );
  writeFileSync(`${base}.svg`, svg);
  for (const ext of ["json", "svg"]) {
    copyFileSync(`${base}.${ext}`, path.join(resultsDir, `latest.${ext}`));
  }
  writeFileSync(
    path.join(resultsDir, "latest.md"),
    markdown(report, { chart: "latest.svg", docs: "../../docs/benchmarks.md" }),
  );
  const written = [`${path.relative(rootDir, base)}.{json,md,svg}`, "bench/results/latest.*"];
  if (doPublish) {
    if (shared.quick) {
      console.log("warning: publishing a --quick run; rerun without --quick for figures to quote");
    }
    written.push(
      ...publish(
        report,
        markdown(report, { chart: "performance.svg", docs: "benchmarks.md" }),
        svg,
      ),
    );
  }
  console.log(`\nfinished in ${elapsedS.toFixed(0)} s; report in ${written.join(", ")}`);
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    // Every server was stopped; anything still running (a bug) must not keep the run alive.
    killAll();
  },
  (err: unknown) => {
    killAll();
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  },
);
