// Running a load generator to completion: it prints one JSON line (`{"ok":true,...}` or
// `{"ok":false,"error":...}`) and exits; it is killed past a time limit. Around the run this
// also samples what the generator cannot see: the CPU of the server's child processes (a
// service in isolation "process") and the steal time of the machine.
import { spawn } from "node:child_process";
import { descendantsCpuS, machineStealS } from "./machine.js";
import { track } from "./proc.js";

export interface Failure {
  ok: false;
  error: string;
}

/** What the orchestrator adds to a generator's result line. */
export interface Sampled {
  /** CPU of the server's child processes, in % of one core, from the generator's start to its exit. */
  children_cpu_pct?: number;
  /** CPU time the hypervisor gave to other guests over the same span, in % of one core. */
  steal_pct?: number;
}

export type Outcome<T> = (T & Sampled & { ok: true }) | Failure;

export interface GeneratorRun {
  /** Killed after this long. */
  limitMs: number;
  /** The server whose child processes' CPU is sampled. */
  serverPid?: number;
}

export function runGenerator<T extends object>(
  binary: string,
  args: string[],
  { limitMs, serverPid }: GeneratorRun,
): Promise<Outcome<T>> {
  const childrenBefore = serverPid === undefined ? undefined : descendantsCpuS(serverPid);
  const stealBefore = machineStealS();
  const startedAt = performance.now();
  return new Promise((resolve) => {
    const child = track(spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] }));
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.message });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const line = stdout.trim().split("\n").pop() ?? "";
      let parsed: Outcome<T>;
      try {
        parsed = JSON.parse(line) as Outcome<T>;
        if (typeof parsed !== "object" || parsed === null || typeof parsed.ok !== "boolean") {
          throw new Error("not a result line");
        }
      } catch {
        const why = signal === "SIGKILL" ? `killed after ${limitMs} ms` : `exit ${signal ?? code}`;
        resolve({ ok: false, error: `load generator ${why}: ${(stderr || stdout).trim()}` });
        return;
      }
      // Over connect, warm-up and the measured window: the load is the same throughout but for
      // the connect phase, which takes a few milliseconds.
      const wallS = (performance.now() - startedAt) / 1000;
      const childrenAfter = serverPid === undefined ? undefined : descendantsCpuS(serverPid);
      const stealAfter = machineStealS();
      if (parsed.ok && childrenBefore !== undefined && childrenAfter !== undefined) {
        parsed.children_cpu_pct = Math.max(0, ((childrenAfter - childrenBefore) / wallS) * 100);
      }
      if (parsed.ok && stealBefore !== undefined && stealAfter !== undefined) {
        parsed.steal_pct = Math.max(0, ((stealAfter - stealBefore) / wallS) * 100);
      }
      resolve(parsed);
    });
  });
}
