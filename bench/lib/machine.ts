// The machine and its processes, from /proc (Linux): CPU placement with taskset, the machine's
// busy and stolen CPU time, a process tree's CPU, a process's memory and open-file limits; and
// what a report says about the machine and the software measured.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { rootDir, sleep } from "./proc.js";

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

/**
 * Pins a process, every one of its threads and every process descended from it (a service in
 * isolation "process") to one CPU. The servers start unpinned, so that several start side by
 * side on every CPU, and are pinned once ready, before anything is measured; threads started
 * later (the libuv pool that runs zlib, a worker's) inherit the affinity of the thread that
 * starts them.
 */
export function pinProcessTree(pid: number, cpu: number): void {
  for (const each of [pid, ...(processTree()?.descendants(pid) ?? [])]) {
    const result = spawnSync("taskset", ["-a", "-p", "-c", String(cpu), String(each)], {
      encoding: "utf8",
      timeout: 10_000,
    });
    if (result.status !== 0) {
      throw new Error(
        `taskset -a -p -c ${cpu} ${each} failed: ${result.error?.message ?? result.stderr.trim()}`,
      );
    }
  }
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

/** Every process's parent and CPU seconds so far, from /proc; undefined off Linux. */
function processTree():
  | { descendants(pid: number): number[]; cpuS(pid: number): number }
  | undefined {
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
  return {
    descendants(pid) {
      const queue = [...(kids.get(pid) ?? [])];
      for (let i = 0; i < queue.length && i < 10_000; i++)
        queue.push(...(kids.get(queue[i]) ?? []));
      return queue;
    },
    cpuS: (pid) => cpu.get(pid) ?? 0,
  };
}

/**
 * CPU seconds used so far by the descendants of `pid` that are still running (Linux; undefined
 * elsewhere). The generator accounts for the server's own process, every thread included (so a
 * worker thread's work is in its figure); a service in isolation "process" runs in a child
 * process, whose CPU only this sees.
 */
export function descendantsCpuS(pid: number): number | undefined {
  const tree = processTree();
  if (tree === undefined) return undefined;
  return tree.descendants(pid).reduce((sum, each) => sum + tree.cpuS(each), 0);
}

/** CPU seconds used so far by a process, all threads (fields 14 and 15 of /proc/PID/stat). */
export function processCpuS(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Resident memory of a process in KiB (VmRSS of /proc/PID/status: all its threads). */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

/** The soft and hard limits on open files of a process, from /proc/PID/limits. */
export function fileLimits(pid: number | "self"): { soft: number; hard: number } | undefined {
  try {
    const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
    const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
    if (!match) return undefined;
    const value = (s: string) => (s === "unlimited" ? Number.POSITIVE_INFINITY : Number(s));
    return { soft: value(match[1]), hard: value(match[2]) };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- what was measured

export function gitDescribe(): string {
  const describe = spawnSync("git", ["describe", "--always", "--dirty=+dirty"], {
    cwd: rootDir,
    encoding: "utf8",
  });
  return describe.status === 0 ? describe.stdout.trim() : "unknown";
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

/** Whether uWebSockets.js loads here (the package is optional), and why not. */
export function uwsAvailability(): { ok: true; version: string } | { ok: false; why: string } {
  const probe = spawnSync(
    process.execPath,
    ["-e", "require('uwebsockets'); console.log(require('uwebsockets/package.json').version)"],
    { cwd: rootDir, encoding: "utf8", timeout: 20_000 },
  );
  if (probe.status === 0) return { ok: true, version: probe.stdout.trim() };
  const first = (probe.stderr || probe.error?.message || "")
    .split("\n")
    .find((l) => /Error/.test(l));
  return { ok: false, why: first?.trim() ?? `exit ${probe.status}` };
}

export interface Machine {
  cpu: string;
  /** CPUs Node may use (os.availableParallelism). */
  cores: number;
  kernel: string;
  os: string;
  memory_gib: number;
  node: string;
  ws: string;
  uwebsockets: string | null;
  git: string;
}

export function machineInfo(uwsVersion: string | undefined): Machine {
  return {
    cpu: os.cpus()[0]?.model.trim() ?? "unknown",
    cores: os.availableParallelism(),
    kernel: `${os.type()} ${os.release()}`,
    os: `${os.platform()} ${os.arch()}`,
    memory_gib: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    ws: packageVersion("ws"),
    uwebsockets: uwsVersion ?? null,
    git: gitDescribe(),
  };
}

/** One line: "Intel Xeon ..., 2 CPUs, Linux 6.1, Node v20.19.0, ws 8.23.0, uWS 3.0.6, abc123". */
export function machineLine(m: Machine): string {
  return (
    `${m.cpu}, ${m.cores} CPUs, ${m.memory_gib} GiB, ${m.kernel}, Node ${m.node}, ws ${m.ws}` +
    `${m.uwebsockets ? `, uwebsockets ${m.uwebsockets}` : ""}, git ${m.git}`
  );
}
