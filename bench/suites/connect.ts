// The connect suite: connection rate. How many whole WebSocket connections per second a server
// takes through their life with 32 concurrent connectors: TCP connect, the opening handshake
// (RFC 6455 section 4.1, a fresh key each time), a closing handshake started by the client with
// code 1000 (section 7.1.2) and the server's close of the TCP connection (section 7.1.1).
// Measured for Switchboard (the echo service on the service server, with the service on the I/O
// thread and in a worker thread), for the `ws` package and for uWebSockets.js, when the
// `uwebsockets` package loads.
//
// The C generator (bench/loadgen/connect-load.c) keeps exactly C connections in progress, checks
// every response and every close, and ends the run with an error on the first one that goes
// wrong. See docs/benchmarks.md for how to read the output.
import { formatFixed, formatPct, formatRate, table } from "../lib/format.js";
import { type Outcome, runGenerator } from "../lib/generator.js";
import type { Placement } from "../lib/machine.js";
import { caseResult, caseTotals, measureCases } from "../lib/measure.js";
import { intFlag, switchFlag } from "../lib/options.js";
import type { SharedOptions, Suite, SuiteContext, SuiteResult } from "../lib/result.js";
import {
  peerSpecs,
  type RunningServer,
  type ServerSpec,
  serverScript,
  switchboardSpecs,
} from "../lib/server.js";
import {
  compareServers,
  coreFigures,
  cpuNote,
  median,
  type RatioSpec,
  ratioTable,
  ratioWarnings,
  type WindowFields,
} from "../lib/stats.js";

/** What the product asks of Switchboard's connection rate (isolation main) relative to ws. */
const TARGET_VS_WS = 1.5;
const TARGET_WORKER_VS_MAIN = 0.7;
/** Longest a single connection may take from connect() to the server's FIN. */
const CONNECTION_TIMEOUT_MS = 5_000;

export interface ConnectOptions {
  rounds: number;
  /** Also measure bench/servers/net-floor.ts, the least a Node server does per connection. */
  floor: boolean;
  warmupMs: number;
  durationMs: number;
  concurrency: number;
  /** Between runs: the server finishes with the last run's connections. */
  pauseMs: number;
}

/** One line of the generator's JSON output (see connect-load.c). */
interface ConnectLine extends WindowFields {
  concurrency: number;
  warmup_s: number;
  /** Connections that completed their whole life in the measured window. */
  handshakes: number;
  handshakes_per_s: number;
  errors: number;
  total_handshakes: number;
  /** Connections in progress when the window closed, all of which then completed cleanly. */
  drained: number;
  drain_s: number;
  /** From connect() to a validated 101 response. */
  upgrade_p50_ms: number;
  upgrade_p99_ms: number;
}

type ConnectOutcome = Outcome<ConnectLine>;

const FLOOR_NAME = "node:net floor";

function serverSpecs(shared: SharedOptions, opts: ConnectOptions, uws: boolean): ServerSpec[] {
  // Services here run on the I/O thread or in a worker; "process" is not measured.
  const isolation = shared.isolation.filter((mode) => mode !== "process");
  const specs = [
    ...switchboardSpecs(isolation, "switchboard-service.ts"),
    ...peerSpecs(shared.peers, uws, { ws: "ws-echo.ts", uws: "uws-echo.ts" }),
  ];
  if (opts.floor) {
    specs.push({
      name: FLOOR_NAME,
      kind: "reference",
      script: serverScript("net-floor.ts"),
      args: [],
    });
  }
  return specs;
}

function runConnect(
  binary: string,
  server: RunningServer,
  opts: ConnectOptions,
  where: Placement,
): Promise<ConnectOutcome> {
  const args = [
    "--port",
    String(server.port),
    "--path",
    "/echo",
    "--concurrency",
    String(opts.concurrency),
    "--warmup-ms",
    String(opts.warmupMs),
    "--duration-ms",
    String(opts.durationMs),
    "--timeout-ms",
    String(CONNECTION_TIMEOUT_MS),
    "--server-pid",
    String(server.pid),
  ];
  if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
  if (where.serverCpu !== undefined) args.push("--server-cpu", String(where.serverCpu));
  // Warm-up, window, then at most one connection timeout of draining, plus the generator's own
  // margin of a second: past this the generator is stuck, and its figure would mean nothing.
  return runGenerator<ConnectLine>(binary, args, {
    limitMs: opts.warmupMs + opts.durationMs + 2 * CONNECTION_TIMEOUT_MS + 5_000,
    serverPid: server.pid,
  });
}

/**
 * Switchboard against each peer (main against ws has the target), worker against main, and the
 * Node servers against the floor: how much of what node:net allows each one reaches.
 */
function ratioSpecs(specs: ServerSpec[]): RatioSpec[] {
  // Worker against main: the cost of attaching each connection to a service in a worker.
  const out = compareServers(specs, {
    vsPeer: (ours, peer) =>
      ours.isolation === "main" && peer.kind === "ws" ? TARGET_VS_WS : undefined,
    workerVsMain: TARGET_WORKER_VS_MAIN,
  });
  const floor = specs.find((s) => s.kind === "reference");
  if (floor) {
    for (const spec of specs) {
      if ((spec.kind === "switchboard" && spec.isolation === "main") || spec.kind === "ws") {
        out.push({ ours: spec.name, peer: floor.name, chart: false });
      }
    }
  }
  return out;
}

export async function runConnectSuite(
  shared: SharedOptions,
  opts: ConnectOptions,
  ctx: SuiteContext,
): Promise<SuiteResult> {
  const started = Date.now();
  const binary = ctx.generators.connect;
  if (!binary) throw new Error("the connect generator was not built");
  const specs = serverSpecs(shared, opts, ctx.uwsVersion !== undefined);
  const c = {
    id: `c${opts.concurrency}`,
    label: `${opts.concurrency} concurrent connectors`,
  };
  ctx.log(
    `connection rate over loopback: ${opts.concurrency} connections in progress at once, each ` +
      "connect, upgrade, close 1000 and the server's FIN; " +
      `${opts.rounds} round(s) of ${opts.warmupMs} ms warm-up + ${opts.durationMs} ms measured`,
  );
  ctx.log(`servers: ${specs.map((s) => s.name).join(", ")}`);

  const notices: string[] = [];
  const outcomes = await measureCases(
    ctx,
    specs,
    [c],
    { rounds: opts.rounds, pauseMs: opts.pauseMs, labelInLog: false, notices },
    (_c, server) => runConnect(binary, server, opts, ctx.where),
    (run) =>
      `${formatRate(run.handshakes_per_s)} handshakes/s, ` +
      `p50 ${formatFixed(run.latency_p50_ms, 1)} ms ${cpuNote(run, true)}`,
  );

  const totals = caseTotals();
  const result = caseResult(
    c,
    specs,
    outcomes.get(c.id)!,
    {
      suite: "connect",
      metric: { name: "handshakes/s", higherIsBetter: true },
      figure: (run) => run.handshakes_per_s,
      work: (run) => run.handshakes,
      check: { rounds: opts.rounds, busy: "core" },
      extra: (ok, s) => ({
        upgradeP50Ms: median(ok.map((r) => r.upgrade_p50_ms)),
        ...coreFigures(s),
      }),
      ratios: ratioSpecs(specs),
    },
    totals,
  );
  const { warnings, ratios, failed } = totals;
  const figures = result.figures;

  const rows = [
    [
      "server",
      "handshakes/s",
      "per CPU-s",
      "p50 ms",
      "p99 ms",
      "p99.9 ms",
      "upgrade p50",
      "server CPU",
      "core (irq)",
      "generator CPU",
      "RSS MiB",
      "spread",
      "flags",
    ],
  ];
  const ms = (n: number) => formatFixed(n, 1);
  for (const f of figures) {
    rows.push([
      f.server,
      formatRate(f.value),
      formatRate(f.perServerCpuS),
      ms(f.p50Ms),
      ms(f.p99Ms),
      ms(f.p999Ms),
      ms(f.extra.upgradeP50Ms),
      formatPct(f.serverCpuPct),
      `${formatPct(f.extra.serverCorePct)} (${formatPct(f.extra.serverCoreIrqPct)})`,
      formatPct(f.generatorCpuPct),
      formatFixed(f.extra.serverRssMiB, 0),
      formatPct(f.spreadPct),
      f.flags.join(", "),
    ]);
  }
  ctx.log(`\n${table(rows)}`);
  ctx.log(`\n${ratioTable(ratios)}`);
  ctx.log(
    "\nhandshakes/s: connections per second that went through their whole life in the measured\n" +
      "  window: TCP connect, upgrade (101, accept checked), close 1000 echoed, the server's FIN\n" +
      "  (median of rounds)\n" +
      "per CPU-s: handshakes per CPU-second of the server, all threads (less sensitive to other load)\n" +
      "p50/p99/p99.9 ms: one whole cycle, from connect() to the server's FIN; with " +
      `${opts.concurrency} in progress\n` +
      `  that is about ${opts.concurrency} / handshakes/s when the server is the bottleneck\n` +
      "upgrade p50: from connect() to the validated 101 response\n" +
      "server CPU: % of one core used by the server's process, all threads and child processes\n" +
      "core (irq): how busy the server's CPU was, and in parentheses the part in interrupts and\n" +
      "  softirqs (the kernel's loopback TCP work, partly also counted in the process's CPU)\n" +
      "generator CPU: highest of its runs\n" +
      "RSS: the server's resident memory at the end of the measured window (highest of its runs)\n" +
      "spread: (max - min) / median handshakes/s across rounds\n" +
      (opts.floor
        ? `${FLOOR_NAME}: not a WebSocket server; the least a Node server does per connection on\n` +
          "  node:net (101 with the accept value, then a close frame and FIN, nothing checked): the\n" +
          "  ratios against it say how much of what Node allows each server's own work uses\n"
        : "") +
      `targets: switchboard main >= ${TARGET_VS_WS.toFixed(2)} x ws; worker / main >= ` +
      `${TARGET_WORKER_VS_MAIN.toFixed(2)}`,
  );
  warnings.push(...ratioWarnings(ratios));
  for (const warning of warnings) ctx.log(`warning: ${warning}`);

  return {
    id: "connect",
    title: "Connect",
    description:
      `${opts.concurrency} connections in progress at once, each going through TCP connect, the ` +
      "opening handshake (fresh key, accept checked), a closing handshake with code 1000 and the " +
      "server's FIN." +
      (opts.floor
        ? ` The ${FLOOR_NAME} (bench/servers/net-floor.ts) is not a WebSocket server but the ` +
          "least a Node server does per connection: a 101 with the accept value, then a close " +
          "frame and FIN, nothing checked. The ratios against it say how much of what node:net " +
          "allows each server's own work uses."
        : ""),
    options: opts,
    servers: specs,
    cases: [result],
    ratios,
    notices,
    warnings,
    failed,
    elapsedS: (Date.now() - started) / 1000,
  };
}

export const connectSuite: Suite<ConnectOptions> = {
  id: "connect",
  title: "connect",
  usage: `  --concurrency N       connections in progress at once (default 32)
  --warmup-ms N         warm-up before each measurement (default 1000; --quick 100)
  --duration-ms N       measured window per run (default 3000; --quick 400)
  --floor, --no-floor   the node:net floor too, bench/servers/net-floor.ts (default: yes;
                        --quick: no)`,
  flags: {
    "--concurrency": "value",
    "--warmup-ms": "value",
    "--duration-ms": "value",
    "--floor": "switch",
    "--no-floor": "switch",
  },
  generators: ["connect"],
  startsServers: true,
  options(shared, flags) {
    const quick = shared.quick;
    return {
      rounds: shared.rounds ?? (quick ? 1 : 5),
      warmupMs: intFlag(flags, "--warmup-ms", quick ? 100 : 1000, 0, 60_000),
      durationMs: intFlag(flags, "--duration-ms", quick ? 400 : 3000, 100, 120_000),
      concurrency: intFlag(flags, "--concurrency", 32, 1, 1024),
      floor: switchFlag(flags, "--floor") || (!quick && !switchFlag(flags, "--no-floor")),
      pauseMs: quick ? 200 : 300,
    };
  },
  estimateS(shared, opts, uws) {
    const runs = serverSpecs(shared, opts, uws).length * opts.rounds;
    return runs * ((opts.warmupMs + opts.durationMs + opts.pauseMs) / 1000 + 0.3) + 3;
  },
  run: runConnectSuite,
};
