// The echo suites: messages per second a server echoes over loopback, with the latency of every
// echo. `echo`: 64 connections, 16 text messages in flight on each, at 32 B and 4 KiB, and 32 B
// with 1 in flight (the round trip, not the batch, sets the pace). `deflate`: the same at 4 KiB
// with permessage-deflate negotiated (Switchboard against ws; uWS is not measured there).
//
// Servers: Switchboard's service server with the echo service (bench/services/echo.ts) on the
// I/O thread ("switchboard main") and in a worker thread ("switchboard worker"); Switchboard's
// plain createServer ("switchboard plain", the protocol layer without services); ws; and
// uWebSockets.js when the uwebsockets package loads. Each runs alone in its own Node process,
// pinned to one core; the C generator (bench/loadgen/echo-load.c) runs pinned to the other.
// See docs/benchmarks.md for how to read the output.
import { formatFixed, formatMs, formatPct, formatRate, sizeLabel, table } from "../lib/format.js";
import { type Outcome, runGenerator } from "../lib/generator.js";
import type { Placement } from "../lib/machine.js";
import { caseResult, caseTotals, measureCases } from "../lib/measure.js";
import { intFlag, intsFlag, switchFlag } from "../lib/options.js";
import type { FlagValues, SharedOptions, Suite, SuiteContext, SuiteResult } from "../lib/result.js";
import {
  peerSpecs,
  type RunningServer,
  type ServerSpec,
  serverScript,
  switchboardSpecs,
} from "../lib/server.js";
import {
  compareServers,
  cpuNote,
  median,
  type RatioSpec,
  ratioTable,
  ratioWarnings,
  type WindowFields,
} from "../lib/stats.js";

/** What the product asks of the service on the I/O thread against ws, at 32 B, pipelined. */
const TARGET_MAIN_VS_WS = 3;
/** A worker-isolated service relative to the same on the I/O thread, pipelined. */
const TARGET_WORKER_VS_MAIN = 0.7;
const CONNECT_TIMEOUT_MS = 10_000;

export type EchoVariant = "plain" | "deflate";

export interface EchoOptions {
  variant: EchoVariant;
  rounds: number;
  warmupMs: number;
  durationMs: number;
  conns: number;
  inflight: number;
  /** Message sizes with --inflight messages in flight per connection. */
  sizes: number[];
  /** Sizes also measured with 1 message in flight per connection (latency-bound); plain only. */
  latencySizes: number[];
  /** Switchboard's plain createServer as well as the service server. */
  plain: boolean;
  /** ws against ws, to see how far apart two identical servers land (no other servers). */
  baseline: boolean;
  /** Between runs: the server finishes closing the previous run's connections. */
  pauseMs: number;
}

/** One line of the generator's JSON output (see echo-load.c). */
interface EchoLine extends WindowFields {
  size: number;
  conns: number;
  inflight: number;
  messages: number;
  msgs_per_s: number;
  payload_bytes_per_s: number;
  wire_bytes_in_per_s: number;
  reads: number;
  writes: number;
  conn_min: number;
  conn_max: number;
  negotiated: string;
}

type EchoOutcome = Outcome<EchoLine>;

interface Case {
  id: string;
  label: string;
  size: number;
  inflight: number;
}

function casesOf(opts: EchoOptions): Case[] {
  const deflate = opts.variant === "deflate";
  const pipelined = opts.sizes.map((size) => ({
    id: `${size}B-${deflate ? "deflate" : `x${opts.inflight}`}`,
    label: `${sizeLabel(size)} x ${opts.inflight} in flight${deflate ? " + deflate" : ""}`,
    size,
    inflight: opts.inflight,
  }));
  // With --inflight 1 the pipelined cases are the latency-bound ones already.
  const latency =
    deflate || opts.inflight === 1
      ? []
      : opts.latencySizes.map((size) => ({
          id: `${size}B-x1`,
          label: `${sizeLabel(size)} x 1 in flight`,
          size,
          inflight: 1,
        }));
  return [...pipelined, ...latency];
}

function serverSpecs(shared: SharedOptions, opts: EchoOptions, uws: boolean): ServerSpec[] {
  const extra = opts.variant === "deflate" ? ["--deflate"] : [];
  if (opts.baseline) {
    const ws = (name: string): ServerSpec => ({
      name,
      kind: "ws",
      script: serverScript("ws-echo.ts"),
      args: extra,
    });
    return [ws("ws (A)"), ws("ws (B)")];
  }
  const specs: ServerSpec[] = [];
  if (opts.plain) {
    specs.push({
      name: "switchboard plain",
      kind: "switchboard-plain",
      script: serverScript("switchboard-echo.ts"),
      args: extra,
    });
  }
  specs.push(...switchboardSpecs(shared.isolation, "switchboard-service.ts", extra));
  // uws-echo.ts does not negotiate permessage-deflate: the deflate case is Switchboard vs ws.
  const peers = opts.variant === "deflate" ? shared.peers.filter((p) => p === "ws") : shared.peers;
  specs.push(...peerSpecs(peers, uws, { ws: "ws-echo.ts", uws: "uws-echo.ts" }, extra));
  return specs;
}

function runEcho(
  binary: string,
  server: RunningServer,
  c: Case,
  opts: EchoOptions,
  where: Placement,
): Promise<EchoOutcome> {
  const args = [
    "--port",
    String(server.port),
    "--size",
    String(c.size),
    "--conns",
    String(opts.conns),
    "--inflight",
    String(c.inflight),
    "--warmup-ms",
    String(opts.warmupMs),
    "--duration-ms",
    String(opts.durationMs),
    "--connect-timeout-ms",
    String(CONNECT_TIMEOUT_MS),
    "--server-pid",
    String(server.pid),
  ];
  if (opts.variant === "deflate") args.push("--deflate");
  if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
  return runGenerator<EchoLine>(binary, args, {
    limitMs: CONNECT_TIMEOUT_MS + opts.warmupMs + opts.durationMs + 5_000,
    serverPid: server.pid,
  });
}

/** The ratios: Switchboard against each peer, worker and process against main, main against plain. */
function ratioSpecs(specs: ServerSpec[], c: Case, opts: EchoOptions): RatioSpec[] {
  if (opts.baseline) return [{ ours: "ws (A)", peer: "ws (B)", chart: false }];
  const pipelined = c.inflight > 1;
  const out = compareServers(specs, {
    vsPeer: (ours, peer) =>
      ours.isolation === "main" &&
      peer.kind === "ws" &&
      opts.variant === "plain" &&
      pipelined &&
      c.size === 32
        ? TARGET_MAIN_VS_WS
        : undefined,
    // With one message in flight every message waits for its own hop to the worker and back:
    // the ratio says what the boundary adds to a round trip, without a target.
    workerVsMain: pipelined ? TARGET_WORKER_VS_MAIN : undefined,
  });
  const main = specs.find((s) => s.kind === "switchboard" && s.isolation === "main");
  const plain = specs.find((s) => s.kind === "switchboard-plain");
  if (main && plain) out.push({ ours: main.name, peer: plain.name, chart: false });
  return out;
}

export async function runEchoSuite(
  shared: SharedOptions,
  opts: EchoOptions,
  ctx: SuiteContext,
): Promise<SuiteResult> {
  const started = Date.now();
  const id = opts.variant === "deflate" ? "deflate" : "echo";
  const binary = ctx.generators.echo;
  if (!binary) throw new Error("the echo generator was not built");
  const notices: string[] = [];
  if (opts.variant === "deflate" && shared.peers.includes("uws") && !opts.baseline) {
    notices.push(
      "uWS is not measured with permessage-deflate: the deflate case is Switchboard vs ws",
    );
  }
  const specs = serverSpecs(shared, opts, ctx.uwsVersion !== undefined);
  const cases = casesOf(opts);
  ctx.log(
    `${opts.variant === "deflate" ? "permessage-deflate echo" : "echo"} over loopback: ` +
      `${opts.conns} connections, text messages, ${cases.map((c) => c.label).join("; ")}; ` +
      `${opts.rounds} round(s) of ${opts.warmupMs} ms warm-up + ${opts.durationMs} ms measured`,
  );
  ctx.log(`servers: ${specs.map((s) => s.name).join(", ")}`);
  for (const notice of notices) ctx.log(`notice: ${notice}`);

  const outcomes = await measureCases(
    ctx,
    specs,
    cases,
    { ...opts, notices },
    (c, server) => runEcho(binary, server, c, opts, ctx.where),
    (run) =>
      `${formatRate(run.msgs_per_s)} msg/s, p50 ${formatMs(run.latency_p50_ms)} ms ` +
      cpuNote(run, false),
  );

  const totals = caseTotals();
  const results = cases.map((c) =>
    caseResult(
      c,
      specs,
      outcomes.get(c.id)!,
      {
        suite: id,
        metric: { name: "msg/s", higherIsBetter: true },
        figure: (run) => run.msgs_per_s,
        work: (run) => run.messages,
        // With one message in flight the server waits for the generator by design: whether it
        // was kept busy says nothing there.
        check: { rounds: opts.rounds, busy: c.inflight > 1 ? "process" : "none" },
        extra: (ok, s) => ({
          echoesPerRead: median(ok.filter((r) => r.reads > 0).map((r) => r.messages / r.reads)),
          wireBytesPerMessage: median(ok.map((r) => r.wire_bytes_in_per_s / r.msgs_per_s)),
          serverRssMiB: s.serverRssMiB,
        }),
        ratios: ratioSpecs(specs, c, opts),
        warningLabel: c.label,
      },
      totals,
    ),
  );
  const { warnings, ratios, failed } = totals;

  for (const result of results) {
    const rows = [
      [
        "server",
        "msg/s",
        "per CPU-s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server CPU",
        "generator CPU",
        "echoes/read",
        "spread",
        "flags",
      ],
    ];
    for (const f of result.figures) {
      rows.push([
        f.server,
        formatRate(f.value),
        formatRate(f.perServerCpuS),
        formatMs(f.p50Ms),
        formatMs(f.p99Ms),
        formatMs(f.p999Ms),
        formatPct(f.serverCpuPct),
        formatPct(f.generatorCpuPct),
        formatFixed(f.extra.echoesPerRead, 1),
        formatPct(f.spreadPct),
        f.flags.join(", "),
      ]);
    }
    ctx.log(`\n${result.label}\n\n${table(rows)}`);
  }
  ctx.log(`\n${ratioTable(ratios)}`);
  ctx.log(
    "\nmsg/s: echoed messages per second (median of rounds); per CPU-s: messages per CPU-second\n" +
      "  of the server, all threads and child processes (less sensitive to other load)\n" +
      "p50/p99/p99.9 ms: per echo, from the write of its message to its arrival (median of rounds);\n" +
      "  with K in flight on average connections x K / msg/s (Little's law)\n" +
      "server CPU: % of one core, all threads and child processes; generator CPU: highest of its runs\n" +
      "echoes/read: messages per read() of the generator, i.e. how many echoes a server packs per write\n" +
      "spread: (max - min) / median msg/s across rounds\n" +
      "switchboard main / worker: the echo service on the service server, on the I/O thread / in a\n" +
      "  worker thread; switchboard plain: createServer without services (the protocol layer)\n" +
      `targets: switchboard main >= ${TARGET_MAIN_VS_WS.toFixed(2)} x ws at 32 B pipelined; ` +
      `worker / main >= ${TARGET_WORKER_VS_MAIN.toFixed(2)} pipelined`,
  );
  warnings.push(...ratioWarnings(ratios));
  for (const warning of warnings) ctx.log(`warning: ${warning}`);

  return {
    id,
    title: opts.variant === "deflate" ? "Echo with permessage-deflate" : "Echo",
    description:
      opts.variant === "deflate"
        ? `${opts.conns} connections x ${opts.inflight} text messages in flight, permessage-deflate ` +
          "negotiated (context takeover, each library's defaults); every echo inflated and " +
          "verified. Switchboard against ws."
        : `${opts.conns} connections, text messages, each echo verified byte for byte; with ` +
          `${opts.inflight} messages in flight per connection (throughput) and with 1 (the ` +
          "round trip sets the pace).",
    options: opts,
    servers: specs,
    cases: results,
    ratios,
    notices,
    warnings,
    failed,
    elapsedS: (Date.now() - started) / 1000,
  };
}

const ECHO_FLAGS = {
  "--warmup-ms": "value",
  "--duration-ms": "value",
  "--conns": "value",
  "--inflight": "value",
  "--plain": "switch",
  "--no-plain": "switch",
  "--baseline": "switch",
} as const;

function commonOptions(
  variant: EchoVariant,
  shared: SharedOptions,
  flags: FlagValues,
): Omit<EchoOptions, "sizes" | "latencySizes"> {
  const quick = shared.quick;
  let plain = !quick;
  if (switchFlag(flags, "--plain")) plain = true;
  if (switchFlag(flags, "--no-plain")) plain = false;
  return {
    variant,
    rounds: shared.rounds ?? (quick ? 1 : 5),
    warmupMs: intFlag(flags, "--warmup-ms", quick ? 100 : 500, 0, 60_000),
    durationMs: intFlag(flags, "--duration-ms", quick ? 300 : 2000, 100, 120_000),
    conns: intFlag(flags, "--conns", 64, 1, 10_000),
    inflight: intFlag(flags, "--inflight", 16, 1, 4096),
    plain,
    baseline: switchFlag(flags, "--baseline"),
    pauseMs: quick ? 100 : 200,
  };
}

function estimate(opts: EchoOptions, servers: number): number {
  const runs = casesOf(opts).length * servers * opts.rounds;
  return runs * ((opts.warmupMs + opts.durationMs + opts.pauseMs) / 1000 + 0.3) + 3;
}

function serverCount(shared: SharedOptions, opts: EchoOptions, uws: boolean): number {
  return serverSpecs(shared, opts, uws).length;
}

export const echoSuite: Suite<EchoOptions> = {
  id: "echo",
  title: "echo",
  usage: `  --sizes A,B           message sizes with --inflight in flight (default 32,4096)
  --latency-sizes A,B   sizes also measured with 1 message in flight, or none (default 32)
  --conns N             connections (default 64)
  --inflight N          messages in flight per connection (default 16)
  --warmup-ms N         warm-up before each measurement (default 500; --quick 100)
  --duration-ms N       measured window per run (default 2000; --quick 300)
  --plain, --no-plain   Switchboard's plain createServer too (default: yes; --quick: no)
  --baseline            ws against ws, to see how far apart two identical servers land`,
  flags: { ...ECHO_FLAGS, "--sizes": "value", "--latency-sizes": "value" },
  generators: ["echo"],
  startsServers: true,
  options(shared, flags) {
    return {
      ...commonOptions("plain", shared, flags),
      sizes: intsFlag(flags, "--sizes", [32, 4096], 0, 16 * 1024 * 1024),
      latencySizes: intsFlag(flags, "--latency-sizes", [32], 0, 16 * 1024 * 1024),
    };
  },
  estimateS: (shared, opts, uws) => estimate(opts, serverCount(shared, opts, uws)),
  run: runEchoSuite,
};

export const deflateSuite: Suite<EchoOptions> = {
  id: "deflate",
  title: "deflate",
  usage: `  --deflate-sizes A,B   message sizes with permessage-deflate (default 4096)
  (and the echo options above: --conns, --inflight, --warmup-ms, --duration-ms, --plain, --baseline)`,
  flags: { ...ECHO_FLAGS, "--deflate-sizes": "value" },
  generators: ["echo"],
  startsServers: true,
  options(shared, flags) {
    return {
      ...commonOptions("deflate", shared, flags),
      sizes: intsFlag(flags, "--deflate-sizes", [4096], 0, 16 * 1024 * 1024),
      latencySizes: [],
    };
  },
  estimateS: (shared, opts, uws) => estimate(opts, serverCount(shared, opts, uws)),
  run: runEchoSuite,
};
