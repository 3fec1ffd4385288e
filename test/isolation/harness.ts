// Drives one service runtime through a transport with hand-built batches, as the I/O thread's
// ServiceHost would, and records everything the runtime answers.
import { basename } from "node:path";
import {
  type Batch,
  type BatchRecord,
  BatchWriter,
  Command,
  Event,
  payloadOf,
  readBatch,
  type StartInfo,
  worthRecycling,
} from "../../src/isolation/batch.js";
import type {
  ServiceTransport,
  TransportExit,
  TransportFactory,
} from "../../src/isolation/transport.js";
import type { ResolvedServiceConfig } from "../../src/services/config.js";

/** Marks the end of a buffer handed back to the runtime (see `reused`). */
const REUSE_STAMP = 0x5eed_ba7c;

export interface Received {
  batch: Batch;
  /**
   * A cold record as it came, or a hot one (Send, Broadcast) decoded from the packed stream as
   * [kind, id, isBinary 0|1, payload as a Buffer].
   */
  record: BatchRecord;
  hot: boolean;
}

/** A batch from the runtime, with how many event batches had been posted when it arrived. */
interface Arrival {
  batch: Batch;
  postedBefore: number;
  /** Its records in stream order, hot ones decoded (read once, when it arrived). */
  records: Received[];
}

export const START_CONFIG: ResolvedServiceConfig = {
  isolation: "worker",
  headers: ["x-trace"],
  maxHeapMb: 128,
  watchdogMs: 10_000,
  maxMessageSize: 4096,
};

/** What an Open event carries, for a client that did not go through the upgrade hook. */
export function openInfo(overrides: Record<string, unknown> = {}) {
  return {
    remoteAddress: "127.0.0.1",
    params: {},
    query: "",
    headers: {},
    protocol: "",
    upgradeId: 0,
    handover: false,
    ...overrides,
  };
}

export function upgradeInfo(path: string, overrides: Record<string, unknown> = {}) {
  return {
    path,
    params: {},
    query: "",
    headers: {},
    remoteAddress: "127.0.0.1",
    protocols: [],
    ...overrides,
  };
}

export class RuntimeHarness {
  readonly transport: ServiceTransport;
  readonly writer: BatchWriter;
  private readonly arrivals: Arrival[] = [];
  /** Seq of the last event batch posted. */
  posted = 0;
  lastPosted: Batch | null = null;
  exit: TransportExit | null = null;
  exitCalls = 0;
  /** Buffers of the runtime's batches handed back to it, and batches that came in one again. */
  stamps = 0;
  reused = 0;
  /** Payloads the runtime sent back as forwards (the very buffers this side kept). */
  readonly forwarded: Buffer[] = [];
  /** How many batches had arrived when the exit was reported. */
  batchesBeforeExit = -1;
  private readonly waiters = new Set<() => void>();

  /**
   * With `recycle`, buffers go back and forth as between ServiceHost and a runtime where the
   * transport recycles them (a worker): this side writes its batches into the buffers the
   * runtime handed back, and hands back the runtime's, keeping copies of their payloads.
   */
  constructor(factory: TransportFactory, file: string, options: { recycle?: boolean } = {}) {
    const recycle = options.recycle === true;
    this.transport = factory(
      { file, name: basename(file), maxHeapMb: 128 },
      {
        batch: (batch) => {
          if (recycle) for (const buffer of batch.returned ?? []) this.writer.recycle(buffer);
          const buffer = batch.buffer;
          if (buffer !== null && buffer.byteLength >= 8) {
            if (new Uint32Array(buffer, buffer.byteLength - 8, 1)[0] === REUSE_STAMP) this.reused++;
          }
          const reused = recycle && worthRecycling(batch, this.transport.recycles);
          const records: Received[] = [];
          readBatch(
            batch,
            (kind, id, flag, payload) =>
              records.push({
                batch,
                record: [kind, id, flag, reused ? Buffer.from(payload) : payload],
                hot: true,
              }),
            (record) =>
              records.push({
                batch,
                // The one command with a payload in the buffer.
                record:
                  reused && record[0] === Command.Publish
                    ? [...record.slice(0, -1), Buffer.from(payloadOf(batch, record.at(-1)))]
                    : record,
                hot: false,
              }),
            // As ServiceHost does: a forward is a payload this side kept for it.
            (seq, ordinal) => {
              const payload = this.writer.keptPayload(seq, ordinal);
              if (payload !== undefined) this.forwarded.push(payload);
              return payload;
            },
          );
          this.writer.acknowledged(batch.ack);
          if (reused) {
            // Stamps the end of the buffer (past any batch the runtime writes into it, unless
            // one fills it to the last byte), so a later batch shows whether it came in it.
            const buffer = batch.buffer!;
            new Uint32Array(buffer, buffer.byteLength - 8, 2).set([REUSE_STAMP, ++this.stamps]);
            this.writer.giveBack(buffer);
          }
          this.arrivals.push({ batch, postedBefore: this.posted, records });
          this.wake();
        },
        exit: (exit) => {
          this.exitCalls++;
          this.exit ??= exit;
          if (this.batchesBeforeExit === -1) this.batchesBeforeExit = this.arrivals.length;
          this.wake();
        },
      },
    );
    this.writer = new BatchWriter(this.transport.packs, recycle && this.transport.recycles);
  }

  get batches(): Batch[] {
    return this.arrivals.map((arrival) => arrival.batch);
  }

  /** Every record the runtime sent, in order, each with its batch. */
  get received(): Received[] {
    return this.arrivals.flatMap((arrival) => arrival.records);
  }

  records(kind: number): Received[] {
    return this.received.filter(({ record }) => record[0] === kind);
  }

  /** Builds one event batch with `build` and posts it; returns its seq. */
  post(build: (writer: BatchWriter) => void): number {
    build(this.writer);
    const taken = this.writer.take(0);
    if (taken === null) throw new Error("nothing to post");
    this.posted = taken.batch.seq;
    this.lastPosted = taken.batch;
    this.transport.post(taken.batch, taken.transfer);
    return taken.batch.seq;
  }

  postRecords(...records: BatchRecord[]): number {
    return this.post((writer) => {
      for (const record of records) writer.add(record);
    });
  }

  /** Resolves with check()'s first defined result, re-checked on every batch and on exit. */
  until<T>(check: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const attempt = () => {
        const value = check();
        if (value === undefined) return false;
        this.waiters.delete(attempt);
        clearTimeout(timer);
        resolve(value);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(attempt);
        reject(new Error(`timed out waiting for ${what}; received ${this.describe()}`));
      }, timeoutMs);
      if (!attempt()) this.waiters.add(attempt);
    });
  }

  /** The first record of `kind` that `match` accepts. */
  waitRecord(
    kind: number,
    match: (record: BatchRecord) => boolean = () => true,
    timeoutMs?: number,
  ) {
    return this.until(
      () => this.records(kind).find(({ record }) => match(record)),
      `command ${kind}`,
      timeoutMs,
    );
  }

  /** The batch that acknowledges event batch `seq`. */
  waitAck(seq: number): Promise<Batch> {
    return this.until(() => this.batches.find((batch) => batch.ack >= seq), `ack ${seq}`);
  }

  waitExit(timeoutMs = 10_000): Promise<TransportExit> {
    return this.until(() => this.exit ?? undefined, "exit", timeoutMs);
  }

  /** Loaded, then Start, then Ready. */
  async start(startInfo: StartInfo = { config: START_CONFIG }): Promise<void> {
    await this.waitRecord(Command.Loaded);
    this.postRecords([Event.Start, startInfo]);
    await this.waitRecord(Command.Ready);
  }

  /** Posts one batch of messages (hot records) for a client; returns its seq. */
  message(clientId: number, ...payloads: Array<string | Uint8Array>): number {
    return this.post((writer) => {
      // As ServiceHost does: a large one is kept for a forward back.
      for (const payload of payloads) {
        const bytes =
          typeof payload === "string"
            ? Buffer.from(payload)
            : Buffer.isBuffer(payload)
              ? payload
              : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
        writer.addMessage(Event.Message, clientId, typeof payload === "string" ? 0 : 1, bytes);
      }
    });
  }

  /** What the service sent to one client: [text, isBinary] pairs, in order. */
  sends(clientId: number): Array<[string, boolean]> {
    return this.records(Command.Send)
      .filter(({ record }) => record[1] === clientId)
      .map(({ record }) => [(record[3] as Buffer).toString(), record[2] === 1]);
  }

  waitSends(clientId: number, count: number): Promise<Array<[string, boolean]>> {
    return this.until(() => {
      const sends = this.sends(clientId);
      return sends.length >= count ? sends : undefined;
    }, `${count} sends to client ${clientId}`);
  }

  /**
   * What holds for every batch from a runtime: seqs go up by one from 1, and each ack is one of
   * the event batches already posted, never going back.
   */
  orderProblems(): string[] {
    const problems: string[] = [];
    let ack = 0;
    this.arrivals.forEach(({ batch, postedBefore }, index) => {
      if (batch.seq !== index + 1) problems.push(`batch ${index} has seq ${batch.seq}`);
      if (batch.ack < ack) problems.push(`ack went back from ${ack} to ${batch.ack}`);
      if (batch.ack > postedBefore) {
        problems.push(`ack ${batch.ack} of a batch not posted yet (posted ${postedBefore})`);
      }
      ack = batch.ack;
    });
    return problems;
  }

  /** Ends the runtime if it is still running, and waits for it to be gone. */
  async dispose(): Promise<void> {
    if (this.exit === null) {
      this.transport.terminate();
      await this.waitExit();
    }
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  private describe(): string {
    const kinds = this.received.map(({ record }) => record[0]);
    return `commands ${JSON.stringify(kinds.slice(-20))} (of ${kinds.length}), exit ${JSON.stringify(this.exit)}`;
  }
}
