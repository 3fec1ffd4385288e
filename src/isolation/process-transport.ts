import { spawn } from "node:child_process";
import { type Batch, Command } from "./batch.js";
import { bootstrapCode } from "./bootstrap.js";
import type { RuntimeSpec, ServiceTransport, TransportEvents, TransportExit } from "./transport.js";

/**
 * Isolation "process": the runtime runs in a child process, isolated by the operating system
 * as well. Batches travel over the IPC channel with the structured-clone ("advanced")
 * serialization, so binary payloads arrive as bytes. terminate() sends SIGKILL.
 */
export function createProcessTransport(
  spec: RuntimeSpec,
  events: TransportEvents,
): ServiceTransport {
  const child = spawn(
    process.execPath,
    [`--max-old-space-size=${spec.maxHeapMb}`, "--input-type=module", "-e", bootstrapCode()],
    {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      serialization: "advanced",
      env: { ...process.env, SWITCHBOARD_RUNTIME_SPEC: JSON.stringify(spec) },
    },
  );
  let terminated = false;
  let exited = false;
  let spawnError: Error | null = null;
  let crash: TransportExit["error"] | null = null;
  child.on("message", (message) => {
    const batch = message as Batch;
    const first = batch.records[0];
    if (batch.seq === 0 && first?.[0] === Command.Crashed) {
      crash = first[1] as TransportExit["error"];
      return;
    }
    events.batch(batch);
  });
  child.on("error", (error) => {
    // Spawning failed, or a message could not be sent; the exit event still follows a spawn.
    spawnError = error;
    if (child.pid === undefined)
      finish({ reason: "crash", code: null, error: describeError(error) });
  });
  child.on("exit", (code, signal) => {
    if (terminated) finish({ reason: "terminated", code });
    else if (crash !== null) finish({ reason: "crash", code, error: crash });
    else if (signal === "SIGABRT" || code === 134) {
      // V8 aborts the process when the heap limit is reached.
      finish({ reason: "out-of-memory", code });
    } else if (code === 0) finish({ reason: "exit", code });
    else {
      finish({
        reason: signal === null ? "exit" : "crash",
        code,
        error:
          spawnError === null
            ? { code: "SB_ERR_SERVICE_CRASHED", message: `exited with ${signal ?? code}` }
            : describeError(spawnError),
      });
    }
  });
  function finish(exit: TransportExit): void {
    if (exited) return;
    exited = true;
    events.exit(exit);
  }
  return {
    isolation: "process",
    packs: true,
    // The channel copies every batch: a buffer handed back would only be copied again.
    recycles: false,
    post(batch) {
      if (exited || !child.connected) return;
      // The channel copies the buffer whole: send only the part in use.
      const { buffer, length } = batch;
      if (buffer !== null && length !== undefined && length < buffer.byteLength) {
        child.send({ ...batch, buffer: buffer.slice(0, length) });
      } else {
        child.send(batch);
      }
    },
    terminate() {
      if (exited) return;
      terminated = true;
      child.kill("SIGKILL");
    },
  };
}

function describeError(error: Error & { code?: string }) {
  return {
    code: error.code ?? "SB_ERR_SERVICE_CRASHED",
    message: error.message,
    stack: error.stack,
  };
}
