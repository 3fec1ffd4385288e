// Paths and child processes of the benchmark orchestrator: every child it starts (servers, load
// generators) is remembered, so that all of them are killed when it exits or is interrupted.
import type { ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const benchDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const rootDir = path.dirname(benchDir);
export const buildDir = path.join(benchDir, ".build");
export const resultsDir = path.join(benchDir, "results");

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

let installed = false;

/**
 * Kills every tracked child on exit and on Ctrl-C. Called by the orchestrator, not on import:
 * a test that uses this library keeps its runner's own signal handling.
 */
export function installExitHandlers(): void {
  if (installed) return;
  installed = true;
  process.on("exit", killAll);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      process.stderr.write(`\n${signal}: stopping servers and load generators\n`);
      killAll();
      process.exit(130);
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * `command args` run through `sh -c 'ulimit -n LIMIT; exec "$@"'`: its soft limit on open files
 * raised to `limit` (the hard limit) before anything starts. `exec` keeps the pid, so the child's
 * pid is the program's for /proc. A limit that cannot be raised is left as it was; callers check
 * the child's /proc/PID/limits.
 */
export function withFileLimit(
  limit: number | undefined,
  command: string,
  args: string[],
): [string, string[]] {
  if (limit === undefined || !Number.isFinite(limit)) return [command, args];
  return ["sh", ["-c", `ulimit -n ${limit} 2>/dev/null; exec "$@"`, "sh", command, ...args]];
}
