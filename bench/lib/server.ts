// Starting and stopping the servers under test: each in its own Node process, ready once it
// prints its ws://127.0.0.1:PORT line, and then pinned to the server's CPU when the placement
// says so (see pinProcessTree). A server runs compiled (bench/.build/js, see buildServers in
// build.ts) with plain node, or with --tsx from its TypeScript through tsx.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { compiledPath } from "./build.js";
import { type Placement, pinProcessTree } from "./machine.js";
import { rootDir, track, withFileLimit } from "./proc.js";

export type Isolation = "main" | "worker" | "process";
export type Peer = "ws" | "uws";
/**
 * "switchboard-plain": the protocol server without services (echo --plain); "reference": a
 * measuring stick that is not a WebSocket server (the connect suite's node:net floor).
 */
export type ServerKind = "switchboard" | "switchboard-plain" | "reference" | Peer;

/**
 * How the servers run: "compiled", tsc's output in bench/.build/js with plain node, as
 * Switchboard ships (dist/) and as ws and uWebSockets.js run; or "tsx", their TypeScript through
 * `--import tsx` (esbuild with keepNames: every named function gets an own `name` property,
 * which costs Switchboard's per-connection closures memory and CPU).
 */
export type ServerMode = "compiled" | "tsx";

/** How the report and the console say it. */
export const SERVER_MODE_TEXT: Record<ServerMode, string> = {
  compiled: "compiled with tsc (bench/.build/js), run with plain node",
  tsx: "run from their TypeScript through tsx (--tsx; esbuild's keepNames costs Switchboard memory and CPU)",
};

export interface ServerSpec {
  /** Column label: "switchboard main", "ws", "uWS". */
  name: string;
  kind: ServerKind;
  /** Where the service runs, for the service server. */
  isolation?: Isolation;
  /** The TypeScript, relative to the repository root ("bench/servers/ws-echo.ts"); see scriptPath. */
  script: string;
  /** After `--port 0`. */
  args: string[];
}

export const serverScript = (file: string) => path.join("bench", "servers", file);

/** The display name of a peer. */
export const PEER_NAMES: Record<Peer, string> = { ws: "ws", uws: "uWS" };

export interface RunningServer {
  spec: ServerSpec;
  child: ChildProcess;
  pid: number;
  port: number;
  stderrTail: string[];
}

export interface StartOptions {
  where: Placement;
  /** Compiled (the default: built by buildServers first) or through tsx. */
  mode?: ServerMode;
  /** Where the compiled servers are (default bench/.build/js). */
  jsDir?: string;
  /** Node's own flags, first ("--expose-gc"). */
  nodeFlags?: string[];
  /** Scripts loaded with --import before the server's, run the same way ("bench/servers/x.ts"). */
  preload?: string[];
  /** Raise the server's soft limit on open files to this first (see withFileLimit). */
  fileLimit?: number;
  /** Sees every stdout line before the URL is looked for; true when it consumed the line. */
  onLine?: (line: string) => boolean;
  readyTimeoutMs?: number;
}

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 3_000;

/** A script relative to the root ("bench/servers/ws-echo.ts") as it runs in `mode`: a path. */
export function scriptPath(script: string, mode: ServerMode, jsDir?: string): string {
  if (mode === "tsx") return path.join(rootDir, script);
  const compiled = compiledPath(script, jsDir);
  if (!existsSync(compiled)) {
    throw new Error(
      `${path.relative(rootDir, compiled)} does not exist: the servers run compiled, built by ` +
        "bench/run.ts before the first suite (buildServers in bench/lib/build.ts); or use --tsx",
    );
  }
  return compiled;
}

/**
 * The node arguments that run a server: `[flags] <script> --port 0 <args>` compiled, or
 * `[flags] --import tsx <script> ...`, with each preload as `--import <its file URL>` before the
 * script.
 */
export function serverNodeArgs(
  spec: ServerSpec,
  options: Pick<StartOptions, "mode" | "jsDir" | "nodeFlags" | "preload">,
): string[] {
  const mode = options.mode ?? "compiled";
  const preload = (options.preload ?? []).flatMap((script) => [
    "--import",
    pathToFileURL(scriptPath(script, mode, options.jsDir)).href,
  ]);
  return [
    ...(options.nodeFlags ?? []),
    ...(mode === "tsx" ? ["--import", "tsx"] : []),
    ...preload,
    scriptPath(spec.script, mode, options.jsDir),
    "--port",
    "0",
    ...spec.args,
  ];
}

export async function startServer(spec: ServerSpec, options: StartOptions): Promise<RunningServer> {
  const nodeArgs = serverNodeArgs(spec, options);
  const readyMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS;
  // `exec` in withFileLimit's shell keeps the pid: the child's pid is the server's for /proc.
  const [command, args] = withFileLimit(options.fileLimit, process.execPath, nodeArgs);
  const child = track(spawn(command, args, { cwd: rootDir, stdio: ["ignore", "pipe", "pipe"] }));
  const stderrTail: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${spec.name} printed no ws:// URL in ${readyMs} ms`));
    }, readyMs);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (options.onLine?.(line)) return;
      const match = /ws:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    });
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(
          `${spec.name} exited (${signal ?? code}) before listening:\n${stderrTail.join("\n")}`,
        ),
      );
    });
  });
  const server = { spec, child, pid: child.pid!, port, stderrTail };
  if (options.where.serverCpu !== undefined) {
    try {
      pinProcessTree(server.pid, options.where.serverCpu);
    } catch (error) {
      await stopServer(server);
      throw error;
    }
  }
  return server;
}

export function serverAlive(server: RunningServer): boolean {
  return server.child.exitCode === null && server.child.signalCode === null;
}

export async function stopServer(server: RunningServer): Promise<void> {
  const { child } = server;
  if (!serverAlive(server)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts servers side by side (an idle server costs no CPU, and most of a start is waiting);
 * on any failure stops the others and throws the first error.
 */
export async function startServers(
  specs: readonly ServerSpec[],
  options: StartOptions,
): Promise<RunningServer[]> {
  const started = await Promise.allSettled(specs.map((spec) => startServer(spec, options)));
  const servers = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.all(servers.map(stopServer));
    throw failed.reason;
  }
  return servers;
}

/** `servers` rotated by `shift`, so that no server always runs first on a warm machine. */
export function rotated<T>(items: readonly T[], shift: number): T[] {
  const k = items.length === 0 ? 0 : shift % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** One Switchboard service server per isolation mode: "switchboard main", "switchboard worker". */
export function switchboardSpecs(
  isolations: readonly Isolation[],
  file: string,
  extraArgs: string[] = [],
): ServerSpec[] {
  return isolations.map((isolation) => ({
    name: `switchboard ${isolation}`,
    kind: "switchboard",
    isolation,
    script: serverScript(file),
    args: ["--isolation", isolation, ...extraArgs],
  }));
}

/** The peers' servers: ws always, uWS when the uwebsockets package loads. */
export function peerSpecs(
  peers: readonly Peer[],
  uws: boolean,
  files: Record<Peer, string>,
  extraArgs: string[] = [],
): ServerSpec[] {
  return peers
    .filter((peer) => peer !== "uws" || uws)
    .map((peer) => ({
      name: PEER_NAMES[peer],
      kind: peer,
      script: serverScript(files[peer]),
      args: [...extraArgs],
    }));
}

/**
 * Every case against every server, round after round, rotating which server goes first (with
 * the case's index too, so that no server always runs on a freshly warmed machine), with a
 * pause after each run for the server to finish with the run's connections.
 */
export async function roundRobin<C>(
  rounds: number,
  cases: readonly C[],
  servers: readonly RunningServer[],
  pauseMs: number,
  each: (round: number, c: C, server: RunningServer) => Promise<void>,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (const [index, c] of cases.entries()) {
      for (const server of rotated(servers, round + index)) {
        await each(round, c, server);
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    }
  }
}

/**
 * Where suites get their servers. By default every suite starts its own and stops them when it
 * is done, so each suite measures fresh servers. With `reuse` (a --quick run) a server that an
 * earlier suite started with the same script and arguments is handed out again, and all of them
 * stop at the end of the run: the connect suite then runs on the echo suite's servers.
 */
export class ServerPool {
  private readonly kept = new Map<string, RunningServer>();
  /** Every server started with `reuse`, for stopAll (two specs may share a key). */
  private readonly started: RunningServer[] = [];

  constructor(
    private readonly where: Placement,
    private readonly reuse: boolean,
    private readonly mode: ServerMode = "compiled",
  ) {}

  private static key(spec: ServerSpec): string {
    return [spec.script, ...spec.args].join(" ");
  }

  async start(specs: readonly ServerSpec[]): Promise<RunningServer[]> {
    const reused = new Map<ServerSpec, RunningServer>();
    if (this.reuse) {
      for (const spec of specs) {
        const server = this.kept.get(ServerPool.key(spec));
        if (server && serverAlive(server)) reused.set(spec, { ...server, spec });
      }
    }
    const fresh = await startServers(
      specs.filter((spec) => !reused.has(spec)),
      { where: this.where, mode: this.mode },
    );
    if (this.reuse) {
      this.started.push(...fresh);
      for (const server of fresh) this.kept.set(ServerPool.key(server.spec), server);
    }
    return specs.map((spec) => reused.get(spec) ?? fresh.find((s) => s.spec === spec)!);
  }

  async release(servers: readonly RunningServer[]): Promise<void> {
    if (!this.reuse) await Promise.all(servers.map(stopServer));
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.started.map(stopServer));
    this.started.length = 0;
    this.kept.clear();
  }
}
