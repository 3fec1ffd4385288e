import { pathToFileURL } from "node:url";
import { isMainThread, parentPort, workerData } from "node:worker_threads";
import { ServiceRuntime } from "../services/runtime.js";
import { type Batch, Command, errorInfo } from "./batch.js";
import { importService } from "./import-service.js";
import { originOf, type RuntimeChannel, type RuntimeSpec } from "./transport.js";

/**
 * Entry of a worker thread or child process that runs one service. The spec comes from
 * workerData (worker) or the SWITCHBOARD_RUNTIME_SPEC environment variable (process); batches
 * travel over the worker's parent port or the process's IPC channel.
 */

function workerChannel(): RuntimeChannel {
  const port = parentPort!;
  return {
    packs: true,
    recycles: true,
    post(batch, transfer) {
      port.postMessage(batch, transfer);
    },
    onBatch(handler) {
      port.on("message", (batch: Batch) => handler(batch));
    },
    exit(code) {
      // Let the last batch leave first.
      setImmediate(() => process.exit(code));
    },
  };
}

function processChannel(): RuntimeChannel {
  // The I/O process going away leaves nothing to serve.
  process.on("disconnect", () => process.exit(0));
  // A worker's uncaught exception reaches the I/O thread as its 'error' event; a process has
  // none, so it says what happened itself before it ends, as node would (exit code 1).
  process.on("uncaughtException", (error) => {
    const record = [Command.Crashed, errorInfo(error, "SB_ERR_SERVICE_CRASHED")];
    const batch: Batch = { seq: 0, ack: 0, records: [record], buffer: null };
    if (!process.connected) process.exit(1);
    process.send!(batch, () => process.exit(1));
    setTimeout(() => process.exit(1), 1_000).unref();
  });
  return {
    packs: true,
    recycles: false,
    post(batch) {
      if (!process.connected) return;
      // The channel copies the buffer whole: send only the part in use.
      const { buffer, length } = batch;
      if (buffer !== null && length !== undefined && length < buffer.byteLength) {
        process.send!({ ...batch, buffer: buffer.slice(0, length) });
      } else {
        process.send!(batch);
      }
    },
    onBatch(handler) {
      process.on("message", (batch) => handler(batch as Batch));
    },
    exit(code) {
      setImmediate(() => process.exit(code));
    },
  };
}

const spec: RuntimeSpec = isMainThread
  ? (JSON.parse(process.env.SWITCHBOARD_RUNTIME_SPEC ?? "null") as RuntimeSpec)
  : (workerData as RuntimeSpec);
const channel = isMainThread ? processChannel() : workerChannel();
const runtime = new ServiceRuntime(channel, spec.name);
await runtime.load(() => importService(pathToFileURL(spec.file).href), originOf(spec));
