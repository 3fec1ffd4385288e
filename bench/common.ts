// What the benchmark orchestrators (run.ts, broadcast.ts) share: child-process bookkeeping,
// building a C load generator, CPU placement with taskset, machine and process CPU accounting
// from /proc, and the table and number formatting of their reports.
import { type ChildProcess, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const benchDir = path.dirname(fileURLToPath(import.meta.url));
export const rootDir = path.dirname(benchDir);
export const buildDir = path.join(benchDir, ".build");
export const resultsDir = path.join(benchDir, "results");

// ---------------------------------------------------------------- child processes

const children = new Set<ChildProcess>();

/** Remembers a child so that it is killed when the orchestrator exits or is interrupted. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

export function killAll(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping servers and the load generator\n`);
    killAll();
    process.exit(130);
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- build

/** Compiles a load generator with the system `cc`; `needs` says what to install on failure. */
export function compileLoadgen(
  source: string,
  binary: string,
  libraries: string[],
  needs: string,
): void {
  mkdirSync(buildDir, { recursive: true });
  const args = ["-O2", "-Wall", "-Wextra", "-o", binary, source, ...libraries];
  const result = spawnSync("cc", args, { encoding: "utf8", timeout: 60_000 });
  if (result.error || result.status !== 0) {
    const detail = result.error ? result.error.message : result.stderr;
    throw new Error(
      `could not compile the load generator with \`cc ${args.join(" ")}\`:\n${detail}\n${needs}`,
    );
  }
  if (result.stderr.trim() !== "") process.stderr.write(result.stderr);
}

// ---------------------------------------------------------------- CPU placement

/** CPUs this process may run on, from /proc/self/status (Linux). */
function allowedCpus(): number[] {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const line = /^Cpus_allowed_list:\s*(.+)$/m.exec(status)?.[1];
    if (!line) return [];
    const cpus: number[] = [];
    for (const part of line.trim().split(",")) {
      const [lo, hi] = part.split("-").map(Number);
      for (let cpu = lo; cpu <= (hi ?? lo); cpu++) cpus.push(cpu);
    }
    return cpus;
  } catch {
    return [];
  }
}

export interface Placement {
  serverCpu?: number;
  generatorCpu?: number;
  note: string;
}

/** The server on one CPU and the generator on another, where taskset and two CPUs allow. */
export function placement(pin: boolean): Placement {
  if (!pin) return { note: "not pinned (--no-pin)" };
  const cpus = allowedCpus();
  const taskset = spawnSync("taskset", ["-V"], { encoding: "utf8" });
  if (cpus.length < 2 || taskset.error) {
    return { note: "not pinned (needs two CPUs and taskset)" };
  }
  return {
    serverCpu: cpus[0],
    generatorCpu: cpus[1],
    note: `server on CPU ${cpus[0]}, generator on CPU ${cpus[1]}`,
  };
}

// ---------------------------------------------------------------- CPU accounting

/** The machine's "cpu" line of /proc/stat, in USER_HZ (100 on Linux); undefined off Linux. */
function procStatFields(): number[] | undefined {
  try {
    return readFileSync("/proc/stat", "utf8")
      .split("\n")[0]
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
  } catch {
    return undefined;
  }
}

/** Busy CPU seconds of the whole machine so far. */
export function machineBusyS(): number | undefined {
  const f = procStatFields();
  // cpu user nice system idle iowait irq softirq ...: everything but idle and iowait.
  return f === undefined ? undefined : (f[0] + f[1] + f[2] + f[5] + f[6]) / 100;
}

/** CPU seconds the hypervisor has stolen from this machine so far. */
export function machineStealS(): number | undefined {
  const steal = procStatFields()?.[7];
  return steal !== undefined && Number.isFinite(steal) ? steal / 100 : undefined;
}

/** How much of a core other processes use right now, sampled over `ms`. */
export async function idleLoadPct(ms: number): Promise<number | undefined> {
  const before = machineBusyS();
  await sleep(ms);
  const after = machineBusyS();
  if (before === undefined || after === undefined) return undefined;
  return ((after - before) / (ms / 1000)) * 100;
}

/**
 * CPU seconds used so far by the descendants of `pid` that are still running (Linux; undefined
 * elsewhere). The generator accounts for the server's own process, every thread included (so a
 * worker thread's work is in its figure); a service in isolation "process" runs in a child
 * process, whose CPU only this sees.
 */
export function descendantsCpuS(pid: number): number | undefined {
  let entries: string[];
  try {
    entries = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  const kids = new Map<number, number[]>();
  const cpu = new Map<number, number>();
  for (const entry of entries) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // ended meanwhile
    }
    // The command name may hold spaces and parentheses: the fields start after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const parent = Number(fields[1]);
    // utime and stime are fields 14 and 15 of proc(5), in USER_HZ (100 on Linux).
    cpu.set(Number(entry), (Number(fields[11]) + Number(fields[12])) / 100);
    const siblings = kids.get(parent);
    if (siblings === undefined) kids.set(parent, [Number(entry)]);
    else siblings.push(Number(entry));
  }
  let total = 0;
  const queue = [...(kids.get(pid) ?? [])];
  for (let i = 0; i < queue.length && i < 10_000; i++) {
    total += cpu.get(queue[i]) ?? 0;
    queue.push(...(kids.get(queue[i]) ?? []));
  }
  return total;
}

// ---------------------------------------------------------------- reports

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function formatRate(n: number): string {
  return Number.isFinite(n) ? integer.format(n) : "error";
}

export function formatPct(n: number): string {
  return Number.isFinite(n) ? `${n.toFixed(0)}%` : "-";
}

export function formatRatio(n: number): string {
  return Number.isFinite(n) ? n.toFixed(2) : "-";
}

/** Milliseconds to three significant digits (0.0812, 1.23, 12.3, 123); "-" for none (-1). */
export function formatMs(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "-";
  return n >= 100 ? n.toFixed(0) : n.toPrecision(3);
}

/** A plain-text table: the first row is the header, the first column left-aligned. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, col) => Math.max(...rows.map((row) => row[col].length)));
  const line = (row: string[]) =>
    row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]) : cell.padStart(widths[col])));
  const rule = widths.map((w) => "-".repeat(w));
  return [line(rows[0]), rule, ...rows.slice(1).map(line)].map((r) => r.join("  ")).join("\n");
}

export function gitDescribe(): string {
  const rev = spawnSync("git", ["rev-parse", "--short", "HEAD"], {
    cwd: rootDir,
    encoding: "utf8",
  });
  if (rev.status !== 0) return "unknown";
  const dirty = spawnSync("git", ["status", "--porcelain"], { cwd: rootDir, encoding: "utf8" });
  return `${rev.stdout.trim()}${dirty.stdout.trim() ? "+dirty" : ""}`;
}

/** The installed version of a package, or "unknown". */
export function packageVersion(name: string): string {
  try {
    const pkg = readFileSync(path.join(rootDir, "node_modules", name, "package.json"), "utf8");
    return (JSON.parse(pkg) as { version: string }).version;
  } catch {
    return "unknown";
  }
}
