import { Worker } from "node:worker_threads";
import type { Batch } from "./batch.js";
import { bootstrapCode } from "./bootstrap.js";
import type { RuntimeSpec, ServiceTransport, TransportEvents, TransportExit } from "./transport.js";

/**
 * Isolation "worker" (the default): the runtime runs in a worker thread of its own, with its
 * own heap and limit. Batches are posted with their payload buffer transferred, and the buffers
 * travel back for reuse (batch.ts). terminate() stops even a worker stuck in a loop.
 */
export function createWorkerTransport(
  spec: RuntimeSpec,
  events: TransportEvents,
): ServiceTransport {
  const worker = new Worker(bootstrapCode(), {
    eval: true,
    workerData: spec,
    resourceLimits: { maxOldGenerationSizeMb: spec.maxHeapMb },
    // The service's console output goes to the server's stdout and stderr as it is.
    stdout: false,
    stderr: false,
  });
  let failure: TransportExit | null = null;
  let terminated = false;
  let exited = false;
  worker.on("message", (batch: Batch) => events.batch(batch));
  worker.on("error", (error: Error & { code?: string }) => {
    failure =
      error.code === "ERR_WORKER_OUT_OF_MEMORY"
        ? { reason: "out-of-memory", code: null, error: describe(error) }
        : { reason: "crash", code: null, error: describe(error) };
  });
  worker.on("exit", (code) => {
    if (exited) return;
    exited = true;
    events.exit(
      failure ?? (terminated ? { reason: "terminated", code } : { reason: "exit", code }),
    );
  });
  return {
    isolation: "worker",
    packs: true,
    recycles: true,
    post(batch, transfer) {
      if (exited) return;
      worker.postMessage(batch, transfer);
    },
    terminate() {
      if (exited) return;
      terminated = true;
      void worker.terminate();
    },
  };
}

function describe(error: Error & { code?: string }) {
  return {
    code: error.code ?? "SB_ERR_SERVICE_CRASHED",
    message: error.message,
    stack: error.stack,
  };
}
