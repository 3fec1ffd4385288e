import type { Isolation, ServiceDefinition, ServiceOrigin } from "../services/define.js";
import type { Batch, ErrorInfo } from "./batch.js";

/**
 * The one interface between the I/O thread and a service runtime, whatever runs the runtime:
 * the I/O thread itself ("main"), a worker thread ("worker") or a child process ("process").
 * Both directions carry batches (batch.ts); the host side also learns when the runtime is gone.
 */

/** What a transport needs to start a runtime. */
export interface RuntimeSpec {
  /** Absolute path of the service module. */
  file: string;
  /** The service's name (its route file, relative to the root). */
  name: string;
  /** Heap limit in MiB (worker and process only). */
  maxHeapMb: number;
  /**
   * Which export of the module is the service: the default export when omitted, else the one
   * the module defined as its `exportOrdinal`-th service (define.ts ServiceOrigin; a service
   * registered on a router as an object).
   */
  exportOrdinal?: number;
  /**
   * "main" only: the service itself, run as it is instead of importing `file` (it shares the
   * program's state, as a service on the I/O thread is expected to).
   */
  definition?: ServiceDefinition;
}

/** How a runtime ended. */
export interface TransportExit {
  reason: "exit" | "crash" | "out-of-memory" | "terminated";
  /** The exit code, where there is one. */
  code: number | null;
  error?: ErrorInfo;
}

export interface TransportEvents {
  batch(batch: Batch): void;
  /** Called once, when the runtime is gone for whatever reason. */
  exit(exit: TransportExit): void;
}

/** The I/O thread's end. */
export interface ServiceTransport {
  readonly isolation: Isolation;
  /** Whether payloads must be packed into the batch buffer (a boundary is crossed). */
  readonly packs: boolean;
  /**
   * Whether batch buffers are transferred (not copied), so that each side hands the buffers of
   * the batches it read back to the other for reuse (Batch#returned).
   */
  readonly recycles: boolean;
  post(batch: Batch, transfer: ArrayBuffer[]): void;
  /** Stops the runtime at once (even one stuck in a loop, except in "main"); exit follows. */
  terminate(): void;
}

export type TransportFactory = (spec: RuntimeSpec, events: TransportEvents) => ServiceTransport;

/** The runtime's end. */
export interface RuntimeChannel {
  readonly packs: boolean;
  /** As ServiceTransport#recycles. */
  readonly recycles: boolean;
  post(batch: Batch, transfer: ArrayBuffer[]): void;
  onBatch(handler: (batch: Batch) => void): void;
  /** The runtime cannot go on (its module failed): end it. */
  exit(code: number): void;
}

/** The origin of the export a spec names, or undefined for the module's default export. */
export function originOf(spec: RuntimeSpec): ServiceOrigin | undefined {
  return spec.exportOrdinal === undefined
    ? undefined
    : { file: spec.file, ordinal: spec.exportOrdinal };
}
