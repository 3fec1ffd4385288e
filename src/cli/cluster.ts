import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";
import type { Engine } from "../engines/engine.js";
import { MemoryBus, MemoryEngine } from "../engines/memory.js";
import { type EngineChannel, isEngineWire, RemoteEngine } from "../engines/remote.js";
import { EngineHost } from "../engines/remote-host.js";
import type { CliIo } from "./main.js";

/**
 * `switchboard serve --workers N`: N I/O processes sharing the port (node:cluster), each a
 * whole service server with its own I/O thread and services. With no broker configured they
 * share topics, presence and history through the primary process, which hosts one in-memory
 * engine per worker on one bus (remote.ts); with `--engine redis://...` each worker talks to
 * Redis itself and the primary only supervises.
 *
 * The primary prints the listening line once every worker listens, restarts a worker that
 * dies (with growing delays), and on SIGINT/SIGTERM asks every worker to shut down and waits
 * for them, bounded.
 */

/** Set in a worker's environment by the primary, so a worker knows it is one of ours. */
export const CLUSTER_ENV = "SWITCHBOARD_CLUSTER_WORKER";

/** What a worker tells the primary. */
interface ClusterNote {
  sb: "cluster";
  t: "listening" | "failed";
  port?: number;
  message?: string;
}

function isClusterNote(value: unknown): value is ClusterNote {
  return (
    typeof value === "object" && value !== null && (value as { sb?: unknown }).sb === "cluster"
  );
}

/** This process is a worker of `serve --workers`. */
export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[CLUSTER_ENV] === "1";
}

/** In a worker: the engine that reaches the primary's bus over IPC. */
export function primaryEngine(): Engine {
  const channel: EngineChannel = {
    send(message) {
      if (process.connected) process.send!(message);
    },
    onMessage(handler) {
      process.on("message", (message: unknown) => {
        if (isEngineWire(message)) handler(message);
      });
    },
  };
  const engine = new RemoteEngine(`worker-${cluster.worker!.id}`, channel);
  process.once("disconnect", () => engine.disconnected());
  return engine;
}

/** In a worker: tells the primary how starting went. */
export function reportToPrimary(note: { listening: number } | { failed: string }): void {
  if (!process.connected) return;
  const message: ClusterNote =
    "listening" in note
      ? { sb: "cluster", t: "listening", port: note.listening }
      : { sb: "cluster", t: "failed", message: note.failed };
  process.send!(message);
}

export interface PrimaryOptions {
  workers: number;
  /** Host the topics of the workers here (no broker configured). */
  hostTopics: boolean;
  shutdownTimeoutMs: number;
  logger: Logger;
  signals: CliIo["signals"];
  /** Called once every worker listens, with the port they share. */
  onListening(port: number): void;
}

const RESTART_MIN_MS = 250;
const RESTART_MAX_MS = 10_000;
/** A worker that lived this long before dying restarts at once again. */
const STABLE_MS = 30_000;

/**
 * Runs the primary until a signal ends it; resolves with the exit code: 0 after a clean
 * shutdown, 1 when the first workers could not start or the shutdown ran out of time.
 */
export async function runPrimary(options: PrimaryOptions): Promise<number> {
  const { logger } = options;
  cluster.setupPrimary({ serialization: "advanced" });
  let host: EngineHost | null = null;
  if (options.hostTopics) {
    const bus = new MemoryBus();
    host = new EngineHost((nodeId) => new MemoryEngine({ bus, nodeId }));
  }
  const live = new Set<Worker>();
  let stopping = false;
  let restartDelay = RESTART_MIN_MS;

  let settle: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => {
    settle = resolve;
  });
  let starting = options.workers;
  /** 1 once the first start failed or the shutdown ran out of time. */
  let exitCode = 0;
  let port = 0;

  const fork = (): void => {
    const worker = cluster.fork({ [CLUSTER_ENV]: "1" });
    const bornAt = Date.now();
    live.add(worker);
    let release: (() => Promise<void>) | null = null;
    if (host !== null) {
      const channel: EngineChannel = {
        send(message) {
          if (worker.isConnected()) worker.send(message);
        },
        onMessage(handler) {
          worker.on("message", (message: unknown) => {
            if (isEngineWire(message)) handler(message);
          });
        },
      };
      release = host.serve(channel);
    }
    worker.on("message", (message: unknown) => {
      if (!isClusterNote(message)) return;
      if (message.t === "listening" && starting > 0) {
        port = message.port ?? port;
        starting--;
        if (starting === 0) {
          logger.info({ workers: options.workers, port }, "every worker is listening");
          options.onListening(port);
        }
      } else if (message.t === "failed" && starting > 0) {
        // The first start failed (bad root, port in use): the others would fail the same way.
        logger.error({ worker: worker.id, reason: message.message }, "a worker could not start");
        exitCode = 1;
        stopping = true;
        void stopAll().then(() => settle(exitCode));
      }
    });
    worker.on("exit", (code, signal) => {
      live.delete(worker);
      void release?.();
      if (stopping) {
        if (live.size === 0) settle(exitCode);
        return;
      }
      const lived = Date.now() - bornAt;
      if (lived > STABLE_MS) restartDelay = RESTART_MIN_MS;
      logger.error(
        { worker: worker.id, code, signal, restartInMs: restartDelay },
        "a worker died; starting another",
      );
      const delay = restartDelay;
      restartDelay = Math.min(RESTART_MAX_MS, restartDelay * 2);
      setTimeout(() => {
        if (!stopping) fork();
      }, delay).unref();
    });
  };

  const stopAll = async (): Promise<void> => {
    for (const worker of live) worker.process.kill("SIGTERM");
    const deadline = Date.now() + options.shutdownTimeoutMs + 2_000;
    while (live.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (live.size > 0) exitCode = 1;
    for (const worker of live) worker.process.kill("SIGKILL");
    await host?.close();
  };

  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled) return;
    signalled = true;
    stopping = true;
    logger.info({ signal, workers: live.size }, "shutting down the workers");
    void stopAll().then(() => settle(exitCode));
  };
  options.signals.on("SIGINT", onSignal);
  options.signals.on("SIGTERM", onSignal);
  try {
    for (let i = 0; i < options.workers; i++) fork();
    return await done;
  } finally {
    options.signals.off("SIGINT", onSignal);
    options.signals.off("SIGTERM", onSignal);
  }
}
