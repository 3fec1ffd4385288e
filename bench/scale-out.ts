// `npm run bench:scale-out`: broadcast through three Switchboard nodes on this machine sharing
// topics through Redis and through NATS, against one node on its own, with the same load
// generator (bench/loadgen/broadcast-load.c: one publisher, subscribers spread over the nodes
// with --ports, every delivery verified). Reports deliveries per second, each node's CPU and the
// broker's own CPU, per configuration, as the median of the rounds; the ratios are within one
// run. Writes bench/results/scale-out-<time>.json and prints a markdown table.
//
//   npm run bench:scale-out [-- --rounds 3 --duration-ms 4000 --subs 999]
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Broker, startNats, startRedis } from "./lib/brokers.js";
import { buildServers, compiledPath, compileGenerators } from "./lib/build.js";
import { markdownTable } from "./lib/format.js";
import { processCpuS } from "./lib/machine.js";
import { installExitHandlers, sleep, track } from "./lib/proc.js";

const root = fileURLToPath(new URL("..", import.meta.url));

interface Options {
  rounds: number;
  durationMs: number;
  subs: number;
  nodes: number;
}

function parseOptions(argv: string[]): Options {
  const options: Options = { rounds: 3, durationMs: 4_000, subs: 999, nodes: 3 };
  for (let i = 0; i < argv.length; i += 2) {
    const value = Number(argv[i + 1]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`bad value for ${argv[i]}`);
    if (argv[i] === "--rounds") options.rounds = value;
    else if (argv[i] === "--duration-ms") options.durationMs = value;
    else if (argv[i] === "--subs") options.subs = value;
    else if (argv[i] === "--nodes") options.nodes = value;
    else throw new Error(`unknown option ${argv[i]}`);
  }
  return options;
}

interface Node {
  child: ChildProcess;
  port: number;
}

/** One `switchboard serve` of the compiled CLI on the compiled bench services. */
async function startNode(jsDir: string, configFile: string, engine: string): Promise<Node> {
  const cli = compiledPath("src/cli/main.ts", jsDir);
  const services = path.join(jsDir, "bench", "services");
  const child = track(
    spawn(
      process.execPath,
      [cli, "serve", services, "--port", "0", "--config", configFile, "--engine", engine],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    ),
  );
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr!.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  for (let i = 0; i < 600; i++) {
    const match = /^listening on ws:\/\/127\.0\.0\.1:(\d+)$/m.exec(output);
    if (match) return { child, port: Number(match[1]) };
    if (child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`a node did not start: ${output.slice(-2000)}`);
}

async function stopNode(node: Node): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  const exited = once(node.child, "exit");
  node.child.kill("SIGTERM");
  await Promise.race([exited, sleep(15_000)]);
  if (node.child.exitCode === null && node.child.signalCode === null) node.child.kill("SIGKILL");
}

interface Round {
  deliveriesPerS: number;
  p50Ms: number;
  p99Ms: number;
  generatorCpuPct: number;
  nodesCpuPct: number;
  brokerCpuPct: number | undefined;
}

async function measure(
  generator: string,
  nodes: Node[],
  broker: Broker | undefined,
  options: Options,
): Promise<Round> {
  const pids = nodes.map((node) => node.child.pid!);
  const cpuBefore = pids.map((pid) => processCpuS(pid));
  const brokerBefore = broker?.pid === undefined ? undefined : processCpuS(broker.pid);
  const started = performance.now();
  const out = execFileSync(
    generator,
    [
      "--ports",
      nodes.map((node) => node.port).join(","),
      "--path",
      "/topic",
      "--subs",
      String(options.subs),
      "--size",
      "64",
      "--warmup-ms",
      "1000",
      "--duration-ms",
      String(options.durationMs),
      "--connect-timeout-ms",
      "60000",
    ],
    { encoding: "utf8", timeout: options.durationMs + 120_000 },
  );
  const wallS = (performance.now() - started) / 1000;
  const result = JSON.parse(out) as {
    ok: boolean;
    error?: string;
    deliveries_per_s: number;
    latency_p50_ms: number;
    latency_p99_ms: number;
    gen_cpu_pct: number;
  };
  if (!result.ok) throw new Error(`the generator failed: ${result.error}`);
  const nodesCpuS = pids.reduce((sum, pid, i) => sum + processCpuS(pid) - cpuBefore[i]!, 0);
  const brokerCpuS =
    broker?.pid === undefined || brokerBefore === undefined
      ? undefined
      : processCpuS(broker.pid) - brokerBefore;
  return {
    deliveriesPerS: result.deliveries_per_s,
    p50Ms: result.latency_p50_ms,
    p99Ms: result.latency_p99_ms,
    generatorCpuPct: result.gen_cpu_pct,
    // Over the generator's whole run (connect, warm-up, measured window, drain), like the broker's.
    nodesCpuPct: (100 * nodesCpuS) / wallS,
    brokerCpuPct: brokerCpuS === undefined ? undefined : (100 * brokerCpuS) / wallS,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function main(): Promise<void> {
  installExitHandlers();
  const options = parseOptions(process.argv.slice(2));
  const { broadcast } = await compileGenerators(["broadcast"]);
  const build = await buildServers();
  const scratch = mkdtempSync(path.join(tmpdir(), "switchboard-scale-bench-"));
  // The fan-out on each node's I/O thread (the broadcast suite's main mode).
  const configFile = path.join(scratch, "switchboard.config.json");
  writeFileSync(configFile, JSON.stringify({ isolation: "main", logLevel: "warn" }));
  const redis = await startRedis("/usr/bin/redis-server");
  const nats = await startNats(
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"].find((candidate) => {
      try {
        execFileSync(candidate, ["--version"], { stdio: "ignore" });
        return true;
      } catch {
        return false;
      }
    }) ?? "nats-server",
  );
  const configurations: Array<{
    name: string;
    nodes: number;
    broker?: Broker;
    engine: (round: number) => string;
  }> = [
    { name: "1 node, memory", nodes: 1, engine: () => "memory" },
    {
      name: `${options.nodes} nodes, Redis`,
      nodes: options.nodes,
      broker: redis,
      engine: (round) => `${redis.url}?prefix=bench${round}`,
    },
    {
      name: `${options.nodes} nodes, NATS`,
      nodes: options.nodes,
      broker: nats,
      engine: (round) => `${nats.url}?prefix=bench${round}`,
    },
  ];
  const results: Record<string, Round[]> = {};
  try {
    for (let round = 0; round < options.rounds; round++) {
      // Interleaved: each round measures every configuration once, so drift hits all alike.
      for (const configuration of configurations) {
        const nodes: Node[] = [];
        try {
          for (let i = 0; i < configuration.nodes; i++) {
            nodes.push(await startNode(build.jsDir, configFile, configuration.engine(round)));
          }
          const measured = await measure(broadcast!, nodes, configuration.broker, options);
          results[configuration.name] ??= [];
          results[configuration.name]!.push(measured);
          process.stderr.write(
            `round ${round + 1}: ${configuration.name}: ${Math.round(measured.deliveriesPerS)} deliveries/s\n`,
          );
        } finally {
          await Promise.all(nodes.map((node) => stopNode(node)));
        }
      }
    }
  } finally {
    await redis.dispose();
    await nats.dispose();
    rmSync(scratch, { recursive: true, force: true });
  }

  const single = median(results[configurations[0]!.name]!.map((r) => r.deliveriesPerS));
  const rows = [
    [
      "configuration",
      "deliveries/s",
      "vs 1 node",
      "p50 ms",
      "p99 ms",
      "nodes CPU %",
      "broker CPU %",
      "generator CPU %",
    ],
  ];
  const summary: Record<string, unknown> = {};
  for (const { name } of configurations) {
    const rounds = results[name]!;
    const figure = {
      deliveriesPerS: median(rounds.map((r) => r.deliveriesPerS)),
      p50Ms: median(rounds.map((r) => r.p50Ms)),
      p99Ms: median(rounds.map((r) => r.p99Ms)),
      nodesCpuPct: median(rounds.map((r) => r.nodesCpuPct)),
      brokerCpuPct:
        rounds[0]!.brokerCpuPct === undefined
          ? undefined
          : median(rounds.map((r) => r.brokerCpuPct!)),
      generatorCpuPct: median(rounds.map((r) => r.generatorCpuPct)),
      rounds,
    };
    summary[name] = figure;
    rows.push([
      name,
      String(Math.round(figure.deliveriesPerS)),
      (figure.deliveriesPerS / single).toFixed(2),
      figure.p50Ms.toFixed(2),
      figure.p99Ms.toFixed(2),
      figure.nodesCpuPct.toFixed(0),
      figure.brokerCpuPct === undefined ? "-" : figure.brokerCpuPct.toFixed(0),
      figure.generatorCpuPct.toFixed(0),
    ]);
  }
  const table = markdownTable(rows);
  process.stdout.write(
    `\nBroadcast, 1 publisher -> ${options.subs} subscribers (64 B), spread over the nodes; median of ${options.rounds} rounds\n\n${table}\n`,
  );
  const resultsDir = path.join(root, "bench", "results");
  mkdirSync(resultsDir, { recursive: true });
  const file = path.join(
    resultsDir,
    `scale-out-${new Date().toISOString().replaceAll(":", "-")}.json`,
  );
  writeFileSync(file, `${JSON.stringify({ options, summary }, null, 2)}\n`);
  process.stdout.write(`\n${path.relative(root, file)}\n`);
}

await main();
