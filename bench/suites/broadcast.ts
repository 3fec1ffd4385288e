// The broadcast suite: fan-out throughput. 1,000 subscribers, 64-byte messages, two cases: one
// publisher to all of them on one topic, and 100 publishers into 10 topics of 100 subscribers.
// The figure is how many deliveries per second (messages received by subscribers, summed) a
// server sustains, for Switchboard (a service on the I/O thread and in a worker thread
// publishing to topics; the fan-out runs on the I/O thread), for the `ws` package (a loop over a
// topic's subscribers calling `send`) and for uWebSockets.js (its topic publish), when the
// `uwebsockets` package loads.
//
// Each publisher keeps at most W messages outstanding (sent and not yet received by every
// subscriber of its topic), and every subscriber must receive every message of its topic's
// publishers exactly once and in each publisher's order (bench/loadgen/broadcast-load.c). See
// docs/benchmarks.md for how to read the output.
import { formatFixed, formatMs, formatPct, formatRate, table } from "../lib/format.js";
import { type Outcome, runGenerator } from "../lib/generator.js";
import type { Placement } from "../lib/machine.js";
import { caseResult, caseTotals, measureCases } from "../lib/measure.js";
import { intFlag, parseIntFlag, switchFlag } from "../lib/options.js";
import type { SharedOptions, Suite, SuiteContext, SuiteResult } from "../lib/result.js";
import { peerSpecs, type RunningServer, type ServerSpec, switchboardSpecs } from "../lib/server.js";
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

/** What the product asks of Switchboard's fan-out (the service on the I/O thread), per peer. */
const TARGETS = { ws: 3, uws: 0.5 } as const;
const TARGET_WORKER_VS_MAIN = 0.7;
const CONNECT_TIMEOUT_MS = 20_000;
const STALL_MS = 5_000;

/** A case: P publishers into T topics; the subscribers are spread evenly over the topics. */
interface Shape {
  publishers: number;
  topics: number;
}

export interface BroadcastOptions {
  rounds: number;
  warmupMs: number;
  durationMs: number;
  subs: number;
  cases: Shape[];
  size: number;
  window: number;
  binary: boolean;
  /** Between runs: the server closes the previous run's thousand connections. */
  pauseMs: number;
}

/** One line of the generator's JSON output (see broadcast-load.c). */
interface BroadcastLine extends WindowFields {
  publishers: number;
  topics: number;
  subs: number;
  size: number;
  window: number;
  connect_s: number;
  join_s: number;
  probes: number;
  /** From the end of the measured window until everything sent had reached everyone. */
  drain_s: number;
  deliveries: number;
  deliveries_per_s: number;
  messages: number;
  msgs_per_s: number;
  verified_messages: number;
  reads: number;
  sub_min: number;
  sub_max: number;
  pub_min: number;
  pub_max: number;
}

type BroadcastOutcome = Outcome<BroadcastLine>;

/** "1 -> 1,000", "100 publishers -> 10 topics x 100". */
function caseLabel({ publishers, topics }: Shape, subs: number): string {
  const from = publishers === 1 ? "1" : `${formatRate(publishers)} publishers`;
  const to =
    topics === 1 ? formatRate(subs) : `${formatRate(topics)} topics x ${formatRate(subs / topics)}`;
  return `${from} -> ${to}`;
}

function serverSpecs(shared: SharedOptions, uws: boolean): ServerSpec[] {
  return [
    ...switchboardSpecs(shared.isolation, "switchboard-broadcast.ts"),
    ...peerSpecs(shared.peers, uws, { ws: "ws-broadcast.ts", uws: "uws-broadcast.ts" }),
  ];
}

function runBroadcast(
  binary: string,
  server: RunningServer,
  shape: Shape,
  opts: BroadcastOptions,
  where: Placement,
): Promise<BroadcastOutcome> {
  const args = [
    "--port",
    String(server.port),
    "--path",
    "/topic",
    "--publisher-query",
    "role=publisher",
    "--publishers",
    String(shape.publishers),
    "--topics",
    String(shape.topics),
    "--subs",
    String(opts.subs),
    "--size",
    String(opts.size),
    "--window",
    String(opts.window),
    "--warmup-ms",
    String(opts.warmupMs),
    "--duration-ms",
    String(opts.durationMs),
    "--connect-timeout-ms",
    String(CONNECT_TIMEOUT_MS),
    "--stall-ms",
    String(STALL_MS),
    "--server-pid",
    String(server.pid),
  ];
  if (opts.binary) args.push("--binary");
  if (where.generatorCpu !== undefined) args.push("--cpu", String(where.generatorCpu));
  if (where.serverCpu !== undefined) args.push("--server-cpu", String(where.serverCpu));
  // The drain after the window lasts as long as messages keep completing; a slow server takes
  // seconds to deliver the last windows of 100 publishers.
  return runGenerator<BroadcastLine>(binary, args, {
    limitMs: CONNECT_TIMEOUT_MS + opts.warmupMs + opts.durationMs + 30_000,
    serverPid: server.pid,
  });
}

function ratioSpecs(specs: ServerSpec[]): RatioSpec[] {
  return compareServers(specs, {
    vsPeer: (ours, peer) =>
      ours.isolation === "main" ? TARGETS[peer.kind as "ws" | "uws"] : undefined,
    workerVsMain: TARGET_WORKER_VS_MAIN,
  });
}

export async function runBroadcastSuite(
  shared: SharedOptions,
  opts: BroadcastOptions,
  ctx: SuiteContext,
): Promise<SuiteResult> {
  const started = Date.now();
  const binary = ctx.generators.broadcast;
  if (!binary) throw new Error("the broadcast generator was not built");
  const specs = serverSpecs(shared, ctx.uwsVersion !== undefined);
  const cases = opts.cases.map((shape) => ({
    ...shape,
    id: `${shape.publishers}-${shape.topics}`,
    label: caseLabel(shape, opts.subs),
  }));
  ctx.log(
    `broadcast over loopback: ${opts.subs} subscribers, ${opts.size}-byte ` +
      `${opts.binary ? "binary" : "text"} messages, at most ${opts.window} outstanding per ` +
      `publisher; ${cases.map((c) => c.label).join("; ")}; ${opts.rounds} round(s) of ` +
      `${opts.warmupMs} ms warm-up + ${opts.durationMs} ms measured`,
  );
  ctx.log(`servers: ${specs.map((s) => s.name).join(", ")}`);

  // Every server serves every case: the topic and the role are in each connection's query.
  const notices: string[] = [];
  const outcomes = await measureCases(
    ctx,
    specs,
    cases,
    { ...opts, notices },
    (c, server) => runBroadcast(binary, server, c, opts, ctx.where),
    (run) =>
      `${formatRate(run.deliveries_per_s)} deliveries/s, ` +
      `${formatRate(run.msgs_per_s)} msg/s, p50 ${formatMs(run.latency_p50_ms)} ms ` +
      cpuNote(run, true),
  );

  const totals = caseTotals();
  const results = cases.map((c) =>
    caseResult(
      c,
      specs,
      outcomes.get(c.id)!,
      {
        suite: "broadcast",
        metric: { name: "deliveries/s", higherIsBetter: true },
        figure: (run) => run.deliveries_per_s,
        work: (run) => run.deliveries,
        check: { rounds: opts.rounds, busy: "core" },
        extra: (ok, s) => ({
          msgsPerS: median(ok.map((r) => r.msgs_per_s)),
          ...coreFigures(s),
          deliveriesPerRead: median(
            ok.filter((r) => r.reads > 0).map((r) => r.deliveries / r.reads),
          ),
        }),
        ratios: ratioSpecs(specs),
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
        "deliveries/s",
        "msg/s",
        "per CPU-s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server CPU",
        "core (irq)",
        "generator CPU",
        "RSS MiB",
        "per read",
        "spread",
        "flags",
      ],
    ];
    for (const f of result.figures) {
      rows.push([
        f.server,
        formatRate(f.value),
        formatRate(f.extra.msgsPerS),
        formatRate(f.perServerCpuS),
        formatMs(f.p50Ms),
        formatMs(f.p99Ms),
        formatMs(f.p999Ms),
        formatPct(f.serverCpuPct),
        `${formatPct(f.extra.serverCorePct)} (${formatPct(f.extra.serverCoreIrqPct)})`,
        formatPct(f.generatorCpuPct),
        formatFixed(f.extra.serverRssMiB, 0),
        formatFixed(f.extra.deliveriesPerRead, 1),
        formatPct(f.spreadPct),
        f.flags.join(", "),
      ]);
    }
    ctx.log(`\n${result.label}\n\n${table(rows)}`);
  }
  ctx.log(`\n${ratioTable(ratios)}`);
  ctx.log(
    "\ndeliveries/s: messages received by all subscribers together per second (median of rounds)\n" +
      "msg/s: messages published per second that reached every subscriber of their topic\n" +
      "per CPU-s: deliveries per CPU-second of the server, all threads (less sensitive to other load)\n" +
      "p50/p99/p99.9 ms: per delivery, from the publisher's write of a message to its arrival at a\n" +
      `  subscriber, including the wait in the publishers' windows of ${opts.window} (about ` +
      `publishers x ${opts.window} / msg/s\n` +
      "  when the server is the bottleneck); medians of rounds\n" +
      "server CPU: % of one core used by the server's process, all threads and child processes\n" +
      "core (irq): how busy the server's CPU was, and in parentheses the part in interrupts and\n" +
      "  softirqs (the kernel's loopback TCP work, partly also counted in the process's CPU)\n" +
      "generator CPU: highest of its runs\n" +
      "RSS: the server's resident memory at the end of the measured window (highest of its runs)\n" +
      "per read: deliveries per read() of the generator, i.e. how many messages a server packs per write\n" +
      "spread: (max - min) / median deliveries/s across rounds\n" +
      `targets (every case): switchboard main >= ${TARGETS.ws.toFixed(2)} x ws and >= ` +
      `${TARGETS.uws.toFixed(2)} x uWS; worker / main >= ${TARGET_WORKER_VS_MAIN.toFixed(2)}`,
  );
  warnings.push(...ratioWarnings(ratios));
  for (const warning of warnings) ctx.log(`warning: ${warning}`);

  return {
    id: "broadcast",
    title: "Broadcast",
    description:
      `${formatRate(opts.subs)} subscribers, ${opts.size}-byte ${opts.binary ? "binary" : "text"} ` +
      `messages, at most ${opts.window} outstanding per publisher; every delivery verified ` +
      "(exactly once, in each publisher's order). Switchboard publishes to topics from a service; " +
      "ws loops over a topic's subscribers; uWS uses its topic publish.",
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

export const broadcastSuite: Suite<BroadcastOptions> = {
  id: "broadcast",
  title: "broadcast",
  usage: `  --subs N              subscriber connections (default 1000)
  --cases P:T,...       publishers:topics (default 1:1,100:10; --quick 1:1); subscriber i on topic i % T,
                        publisher j publishing to topic j % T
  --size N              message size in bytes, at least 16 (default 64)
  --window N            messages outstanding at most per publisher (default 32)
  --binary              binary messages (default text)
  --warmup-ms N         warm-up before each measurement (default 1000; --quick 200)
  --duration-ms N       measured window per run (default 3000; --quick 400)`,
  flags: {
    "--subs": "value",
    "--cases": "value",
    "--size": "value",
    "--window": "value",
    "--binary": "switch",
    "--warmup-ms": "value",
    "--duration-ms": "value",
  },
  generators: ["broadcast"],
  startsServers: true,
  options(shared, flags) {
    const quick = shared.quick;
    const subs = intFlag(flags, "--subs", 1000, 1, 15_000);
    // --quick measures the first case only.
    let cases: Shape[] = quick
      ? [{ publishers: 1, topics: 1 }]
      : [
          { publishers: 1, topics: 1 },
          { publishers: 100, topics: 10 },
        ];
    const raw = flags.get("--cases");
    if (raw !== undefined) {
      cases = String(raw)
        .split(",")
        .map((item) => {
          const [p, t, ...rest] = item.split(":");
          if (rest.length > 0 || t === undefined) {
            throw new Error(`--cases takes publishers:topics pairs such as 100:10, got ${item}`);
          }
          const publishers = parseIntFlag("--cases", p, 1, 4096);
          return { publishers, topics: parseIntFlag("--cases", t, 1, publishers) };
        });
    }
    for (const { topics } of cases) {
      if (topics > subs) throw new Error(`${topics} topics need at least ${topics} --subs`);
    }
    return {
      rounds: shared.rounds ?? (quick ? 1 : 5),
      warmupMs: intFlag(flags, "--warmup-ms", quick ? 200 : 1000, 0, 60_000),
      durationMs: intFlag(flags, "--duration-ms", quick ? 400 : 3000, 100, 120_000),
      subs,
      cases,
      size: intFlag(flags, "--size", 64, 16, 65_535),
      window: intFlag(flags, "--window", 32, 1, 4096),
      binary: switchFlag(flags, "--binary"),
      pauseMs: quick ? 300 : 500,
    };
  },
  estimateS(shared, opts, uws) {
    const runs = serverSpecs(shared, uws).length * opts.cases.length * opts.rounds;
    return runs * ((opts.warmupMs + opts.durationMs + opts.pauseMs) / 1000 + 0.8) + 3;
  },
  run: runBroadcastSuite,
};
