import { pathToFileURL } from "node:url";
import { ServiceRuntime } from "../services/runtime.js";
import type { Batch } from "./batch.js";
import { importService } from "./import-service.js";
import {
  originOf,
  type RuntimeChannel,
  type RuntimeSpec,
  type ServiceTransport,
  type TransportEvents,
} from "./transport.js";

/**
 * Runs `task` in a microtask. A settled promise's reaction costs less than queueMicrotask, which
 * makes an AsyncResource per call; the order is the same (one microtask queue).
 */
const settled = Promise.resolve();
function inMicrotask(task: () => void): void {
  void settled.then(task);
}

/**
 * Isolation "main": the runtime lives on the I/O thread. Batches are handed over by reference
 * in a microtask, so hooks still never run inside a socket's callbacks and ordering is the same
 * as across a thread; nothing is copied or cloned. No isolation: a service that loops blocks
 * every connection of the server, and terminate() can only stop delivering to it.
 */
export function createMainTransport(spec: RuntimeSpec, events: TransportEvents): ServiceTransport {
  let toRuntime: ((batch: Batch) => void) | null = null;
  let ended = false;
  let exitQueued = false;
  const end = (reason: "exit" | "terminated", code: number) => {
    if (exitQueued) return;
    exitQueued = true;
    // Batches the runtime posted before it ended are delivered first, as from a thread.
    inMicrotask(() => {
      ended = true;
      events.exit({ reason, code });
    });
  };
  const channel: RuntimeChannel = {
    packs: false,
    recycles: false,
    post(batch) {
      if (ended) return;
      inMicrotask(() => {
        if (!ended) events.batch(batch);
      });
    },
    onBatch(handler) {
      toRuntime = handler;
    },
    exit(code) {
      end("exit", code);
    },
  };
  const runtime = new ServiceRuntime(channel, spec.name);
  const { definition } = spec;
  if (definition !== undefined) {
    void runtime.load(async () => ({ module: { default: definition }, imports: [] }));
  } else {
    // Each load gets a module namespace of its own, so a reload runs the new code.
    void runtime.load(() => importService(pathToFileURL(spec.file).href), originOf(spec));
  }
  return {
    isolation: "main",
    packs: false,
    recycles: false,
    post(batch) {
      if (ended) return;
      inMicrotask(() => {
        if (!ended) toRuntime?.(batch);
      });
    },
    terminate() {
      // Nothing reaches the runtime from now on.
      toRuntime = null;
      end("terminated", 0);
    },
  };
}
