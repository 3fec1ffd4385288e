/**
 * What crosses between the I/O thread and a service runtime: batches of records.
 *
 * One postMessage per WebSocket message would cap throughput at what the thread channel can
 * carry, so each side gathers the records of one event-loop turn and posts them together. The
 * payloads of a batch are packed into one ArrayBuffer that is transferred, not cloned: the bytes
 * are copied once, out of the socket's read buffer (which is shared and cannot be transferred),
 * and the other side reads them as views. Where no boundary is crossed (isolation "main"),
 * payloads are passed as they are.
 *
 * A record is a small array whose first element is its kind. A payload field holds either a
 * Uint8Array (no copy) or the payload's [offset, length] in the batch's buffer.
 *
 * Across a thread (isolation "worker") the runtime's buffers are recycled: a multi-MiB buffer
 * allocated per batch costs page faults on every first write and external memory that drives
 * the garbage collector. The I/O thread hands the buffer of a runtime's batch back with one of
 * its own next batches (`Batch.returned`) once no socket refers to the bytes any more, and the
 * runtime's writer takes it from its pool for a later batch (BatchWriter#recycle, #giveBack).
 * The other way round the runtime keeps what it receives: its messages are views into the
 * buffer, which a hook may keep for as long as it likes, and copying every payload out so the
 * buffer could go back cost more than a new buffer (a zero-filled 64 KiB slab and a copy per
 * 16 messages of 4 KiB: 15% of the worker's CPU per message in the echo benchmark). A buffer
 * only ever carries the batches of one service instance, one way.
 *
 * Buffers are allocated uninitialized (zero-filling a fresh MiB is a memset as long as the
 * copies into it), so the writer itself makes sure that no byte it did not write crosses: the
 * padding after each payload and a fresh buffer's unused tail are zeroed (BatchWriter#take).
 */

/** Records from the I/O thread to a runtime. */
export const Event = {
  /** [kind, startInfo]: begin (run the start hook, or restore and start). */
  Start: 1,
  /** [kind, requestId, UpgradeRequestInfo] */
  Upgrade: 2,
  /** [kind, clientId, OpenInfo] */
  Open: 3,
  /** [kind, clientId, isBinary 0|1, payload] */
  Message: 4,
  /** [kind, clientId, code, reason] */
  Close: 5,
  /** [kind, clientId, code, message] */
  Error: 6,
  /** [kind, seq]: the watchdog asks for a Pong. */
  Ping: 7,
  /** [kind]: run the stop hook, answer Stopped. */
  Stop: 8,
  /** [kind]: answer Snapshot with the state to hand to the next instance. */
  Snapshot: 9,
  /** [kind, upgradeRequestId]: the upgrade accepted by the hook failed later (the data is dropped). */
  UpgradeAbandoned: 10,
  /** [kind, requestId, value]: the answer to a Subscribe or Presence command. */
  Reply: 11,
  /** [kind, PresenceChange] */
  Presence: 12,
} as const;

/** Records from a runtime to the I/O thread. */
export const Command = {
  /** [kind, LoadedInfo]: the module loaded; the I/O thread answers Start (or moves it). */
  Loaded: 1,
  /** [kind, ErrorInfo]: loading or starting failed; the runtime is useless. */
  Failed: 2,
  /** [kind]: the start hook finished; events may flow. */
  Ready: 3,
  /** [kind, clientId, isBinary 0|1, payload] */
  Send: 4,
  /** [kind, clientId, code, reason] */
  Close: 5,
  /** [kind, exceptClientId (0: none), isBinary 0|1, payload] */
  Broadcast: 6,
  /** [kind, topic, exceptClientId (0: none), isBinary 0|1, payload] */
  Publish: 7,
  /** [kind, clientId, topic, {silent, member, since}, requestId]: answered by Reply. */
  Subscribe: 8,
  /** [kind, clientId, topic] */
  Unsubscribe: 9,
  /** [kind, requestId, UpgradeDecision] */
  UpgradeResult: 10,
  /** [kind, seq] */
  Pong: 11,
  /** [kind] */
  Stopped: 12,
  /** [kind, SnapshotInfo] */
  Snapshot: 13,
  /** [kind, level, context, message] */
  Log: 14,
  /** [kind, clientId]: stop reading this client (its pull-style queue is full). */
  Pause: 15,
  /** [kind, clientId] */
  Resume: 16,
  /** [kind, ErrorInfo]: an exception nothing caught; the runtime ends right after (process). */
  Crashed: 17,
  /** [kind, requestId, topic, countOnly 0|1]: answered by Reply (members or their count). */
  PresenceQuery: 18,
} as const;

export type Payload = Uint8Array | readonly [offset: number, length: number];
export type BatchRecord = readonly unknown[];

export interface Batch {
  /** Increases by one per batch sent in this direction. */
  readonly seq: number;
  /** The seq of the last batch received from the other side and fully handled. */
  readonly ack: number;
  readonly records: readonly BatchRecord[];
  /** Packed records and payloads, when the batch crosses a thread or process boundary. */
  readonly buffer: ArrayBuffer | null;
  /** Bytes of `buffer` in use (all of it when absent). */
  readonly length?: number;
  /**
   * Buffers of batches received from the other side, handed back for reuse (transferred with
   * this batch). Only where the transport recycles (ServiceTransport#recycles).
   */
  readonly returned?: ArrayBuffer[];
}

/** What the I/O thread tells a runtime about a new request. */
export interface UpgradeRequestInfo {
  path: string;
  params: Record<string, string>;
  /** The raw query string, without "?". */
  query: string;
  headers: Record<string, string>;
  remoteAddress: string;
  protocols: string[];
}

export type UpgradeDecision =
  | { accept: true; protocol: string }
  | { accept: false; status: number; reason: string }
  | { error: ErrorInfo };

export interface OpenInfo {
  remoteAddress: string;
  params: Readonly<Record<string, string>>;
  query: string;
  headers: Readonly<Record<string, string>>;
  protocol: string;
  /** The upgrade request whose data this client takes (0: none). */
  upgradeId: number;
  /** Handed over from a previous instance; `data` is what it held. */
  handover: boolean;
  data?: unknown;
  /**
   * Put before the client's number to make its id unique among the nodes that share topics
   * (the node's id and a dot); absent on a server that shares them with no one.
   */
  idPrefix?: string;
}

/**
 * A client's id as services, topics and other nodes see it: its number on this I/O thread,
 * after the node's prefix when topics are shared (OpenInfo#idPrefix). The I/O thread and the
 * runtime both make it with this.
 */
export function clientIdOf(id: number, idPrefix: string | undefined): string {
  return idPrefix === undefined ? String(id) : `${idPrefix}${id}`;
}

export interface LoadedInfo {
  /** The module's `config` export as it was (validated by the I/O thread). */
  config: unknown;
  hooks: {
    upgrade: boolean;
    message: boolean;
    snapshot: boolean;
    restore: boolean;
    presence?: boolean;
  };
  /** Local files the module imported, itself included (what hot reload watches). */
  imports: string[];
}

export interface StartInfo {
  /** The configuration the I/O thread resolved for the service. */
  config: unknown;
  /** Present on a hot reload: what the previous instance's snapshot returned. */
  restore?: { state: unknown };
}

export interface SnapshotInfo {
  /** What the snapshot hook returned (undefined without one). */
  state: unknown;
  /** Each client's `data`, so it survives the reload: [clientId, data] pairs. */
  clientData: Array<[number, unknown]>;
  /** Set when the snapshot hook threw or its result could not be cloned. */
  error?: ErrorInfo;
}

export interface ErrorInfo {
  code: string;
  message: string;
  stack?: string;
}

export function errorInfo(error: unknown, code = "SB_ERR_HOOK_FAILED"): ErrorInfo {
  if (error instanceof Error) {
    const own = (error as { code?: unknown }).code;
    return {
      code: typeof own === "string" ? own : code,
      message: error.message,
      stack: error.stack,
    };
  }
  return { code, message: String(error) };
}

const INITIAL_BUFFER = 16 * 1024;
/** Buffers kept for reuse, per writer; more are left to the garbage collector. */
const MAX_POOLED = 4;
/**
 * A received buffer smaller than this is not handed back: a small buffer costs little to
 * allocate, less than keeping track of the sockets that still hold views of it.
 */
const RECYCLE_MIN_BYTES = 256 * 1024;
/**
 * Payload bytes past which a packed batch is full: it is posted at once rather than at the end of
 * the turn. Larger batches spread the per-batch costs thinner; past about 1 MiB what grows
 * instead is the memory the bytes pass through (out of a core's cache), while the other thread
 * waits for all of them: the echo benchmark's 1,024 messages of 4 KiB in flight make 4 MiB a
 * turn. (Batches of 256 KiB were slower: per-batch costs dominate there.)
 */
const FULL_BYTES = 1024 * 1024;
/**
 * What a full batch of messages of 1 KiB or more takes: FULL_BYTES of payload and the headers
 * (at most 1,024 of them). Buffers grow to this rather than doubling past it: a full batch ends
 * a little past 1 MiB, and doubling there made a 2 MiB buffer whose second half was zeroed.
 */
const FULL_BUFFER = FULL_BYTES + 16 * 1024;
/** A buffer larger than this (a batch with a huge message) is not kept idle in a pool. */
const MAX_POOLED_BYTES = 16 * 1024 * 1024;

/*
 * The packed stream. Hot records (a message in, a send out) are written straight into the
 * batch buffer, so a batch of a thousand messages is one transferred buffer and no per-record
 * objects to clone. Each entry starts with three 32-bit words — [tag | flag << 8 | kind << 16,
 * id, length] — followed by `length` bytes, padded to 4 so the next header stays aligned:
 *   HOT   a hot record: kind, client id, flag (isBinary), the payload;
 *   COLD  the next entry of `records` goes here, so hot and other records keep their order;
 *   BLOB  payload bytes of a cold record, which points at them as [offset, length];
 *   FORWARD  a hot record whose payload is one the reader sent and kept (HotFlag.Kept): the
 *         length word holds the payload's ordinal among the kept ones of its batch, and one
 *         more word the seq of that batch. An echo or relay of a large message crosses back as
 *         16 bytes, and the I/O thread sends the bytes it received.
 * Unpacked (isolation "main"), a hot record is an array [HOT_RECORD, kind, id, flag, payload].
 */
const TAG_HOT = 1;
const TAG_COLD = 2;
const TAG_BLOB = 3;
const TAG_FORWARD = 4;
const HEADER = 12;
/** A forward entry: the header (its length word holds the ordinal) and the batch's seq. */
const FORWARD_ENTRY = HEADER + 4;

/** Flag bits of a hot record. */
export const HotFlag = {
  /** The message is binary (else text). */
  Binary: 1,
  /**
   * A message in whose payload the I/O thread keeps until the runtime acknowledges its batch:
   * the runtime may send it back as a forward (its batch's seq and its ordinal among the
   * batch's kept payloads) instead of the bytes.
   */
  Kept: 2,
} as const;

/**
 * Payloads from this size up are kept for forwarding. Below it the copy into the batch is cheap
 * next to the rest of a message's way, while keeping costs a list entry per message and a lookup
 * on the way back (the 32-byte echo measured the same with and without this path).
 */
export const KEEP_MIN_BYTES = 1024;

/** Marks a hot record in an unpacked batch's `records`. */
export const HOT_RECORD = -1;

/**
 * Gathers the records of one turn. With `pack`, hot records and payloads go into one growing
 * buffer that `take()` hands over for transfer; without it, payloads are kept by reference.
 * With `recycle` as well, buffers come from a pool that `recycle()` refills with the buffers the
 * other side handed back, and `giveBack()` queues received buffers to hand back with the next
 * batch.
 */
export class BatchWriter {
  private records: BatchRecord[] = [];
  private buffer: Buffer | null = null;
  private words: Uint32Array | null = null;
  private offset = 0;
  private payloadBytes = 0;
  private count = 0;
  private seq = 0;
  /**
   * Whether `buffer` came uninitialized from the allocator rather than from the pool: its bytes
   * past `offset` are then the allocator's leftovers and are zeroed before it leaves. (A pooled
   * buffer left once that way; past `offset` it holds only earlier batches of this writer.)
   */
  private fresh = false;
  /**
   * Capacity to start the next batch with: what the larger of the last two needed, so it rarely
   * grows. Under load full batches alternate with a turn's remainder, and sized from the
   * remainder alone the next full batch grew (a copy of all it held) two times in three.
   */
  private nextSize = INITIAL_BUFFER;
  /** What the last batch needed. */
  private lastNeeded = INITIAL_BUFFER;
  /** Buffers of ours the other side is done with, ready for the next batches. */
  private readonly pool: ArrayBuffer[] = [];
  /** Buffers of the other side's batches that we are done with, to hand back. */
  private returns: ArrayBuffer[] = [];
  private allocations = 0;
  /** Payloads kept (HotFlag.Kept) in the batch being gathered, in order. */
  private keeping: Buffer[] = [];
  /** Kept payloads of posted batches, by seq, until the other side acknowledges them. */
  private readonly kept = new Map<number, Buffer[]>();

  constructor(
    private readonly pack: boolean,
    private readonly recycles = false,
  ) {}

  /** Records gathered so far. */
  get size(): number {
    return this.count;
  }

  /** Bytes of payload gathered so far. */
  get bytes(): number {
    return this.payloadBytes;
  }

  /** Whether the batch should be posted now (packed and large), not at the end of the turn. */
  get full(): boolean {
    return this.pack && this.payloadBytes >= FULL_BYTES;
  }

  /** Buffers waiting in the pool (for tests and diagnostics). */
  get pooled(): number {
    return this.pool.length;
  }

  /** Buffers allocated rather than taken from the pool, so far (for tests and diagnostics). */
  get allocated(): number {
    return this.allocations;
  }

  /**
   * Takes back a buffer of a batch this writer sent, which the other side is done with: a later
   * batch is written into it. Anything that is not a plain ArrayBuffer of a size this writer
   * could have made is ignored, as are buffers beyond the pool's bounds.
   */
  recycle(buffer: unknown): void {
    if (!this.recycles || !poolable(buffer)) return;
    const pool = this.pool;
    if (pool.includes(buffer)) return;
    if (pool.length >= MAX_POOLED) {
      // Keep the largest: a small one would only be grown (copied) again.
      let smallest = 0;
      for (let i = 1; i < pool.length; i++) {
        if (pool[i]!.byteLength < pool[smallest]!.byteLength) smallest = i;
      }
      if (pool[smallest]!.byteLength >= buffer.byteLength) return;
      pool[smallest] = buffer;
      return;
    }
    pool.push(buffer);
  }

  /**
   * Hands the buffer of a received batch back to its writer, with the next batch taken. Only
   * once nothing refers to its bytes any more: the other side writes into it again.
   */
  giveBack(buffer: ArrayBuffer | null): void {
    if (!this.recycles || buffer === null || !poolable(buffer)) return;
    if (this.returns.length >= MAX_POOLED || this.returns.includes(buffer)) return;
    this.returns.push(buffer);
  }

  add(record: BatchRecord): void {
    this.count++;
    if (this.pack && this.buffer !== null) this.header(TAG_COLD, 0, 0, 0, 0);
    this.records.push(record);
  }

  /** Starts the packed stream; records added before it get their place markers first. */
  private startStream(): void {
    this.reserve(this.nextSize);
    for (let i = 0; i < this.records.length; i++) this.header(TAG_COLD, 0, 0, 0, 0);
  }

  /** Adds a message in or a send out: the hot path. `flag` is 1 for binary. */
  addHot(kind: number, id: number, flag: number, payload: Uint8Array | string): void {
    this.count++;
    if (!this.pack) {
      const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
      this.payloadBytes += bytes.byteLength;
      this.records.push([HOT_RECORD, kind, id, flag, bytes]);
      return;
    }
    if (this.buffer === null) this.startStream();
    const at = this.offset;
    const length = this.writeBytes(at + HEADER, payload);
    this.header(TAG_HOT, flag, kind, id, length);
    this.offset += pad(length);
    this.payloadBytes += length;
  }

  /**
   * Adds a message in (on the I/O thread), keeping its payload for a forward back when it is
   * large enough and the batch is packed; the flag then says so (HotFlag.Kept).
   */
  addMessage(kind: number, id: number, flag: number, payload: Buffer): void {
    if (this.pack && payload.length >= KEEP_MIN_BYTES) {
      this.keeping.push(payload);
      flag |= HotFlag.Kept;
    }
    this.addHot(kind, id, flag, payload);
  }

  /**
   * Adds a send out whose payload is the `ordinal`-th kept payload of the other side's batch
   * `seq`: only while that batch is not yet acknowledged (the reader must still have it).
   */
  addForward(kind: number, id: number, flag: number, seq: number, ordinal: number): void {
    this.count++;
    if (this.buffer === null) this.startStream();
    if (this.offset + FORWARD_ENTRY > this.buffer!.length) this.reserve(FORWARD_ENTRY);
    this.header(TAG_FORWARD, flag, kind, id, ordinal);
    this.words![(this.offset >>> 2) + 3] = seq;
    this.offset += FORWARD_ENTRY;
  }

  /** The `ordinal`-th payload kept in batch `seq`, if it is still kept. */
  keptPayload(seq: number, ordinal: number): Buffer | undefined {
    return this.kept.get(seq)?.[ordinal];
  }

  /** Lets go of the payloads kept for batches up to `ack`, which the other side has handled. */
  acknowledged(ack: number): void {
    if (this.kept.size === 0) return;
    for (const seq of this.kept.keys()) {
      if (seq > ack) break;
      this.kept.delete(seq);
    }
  }

  /** Batches whose payloads are kept (for tests and diagnostics). */
  get keptBatches(): number {
    return this.kept.size;
  }

  /** Adds a record whose last element is the payload. */
  addWithPayload(head: readonly unknown[], payload: Uint8Array | string): void {
    if (!this.pack) {
      this.count++;
      const bytes = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
      this.payloadBytes += bytes.byteLength;
      this.records.push([...head, bytes]);
      return;
    }
    if (this.buffer === null) this.startStream();
    const at = this.offset;
    const length = this.writeBytes(at + HEADER, payload);
    this.header(TAG_BLOB, 0, 0, 0, length);
    this.offset += pad(length);
    this.payloadBytes += length;
    this.add([...head, [at + HEADER, length]]);
  }

  /**
   * The gathered batch (null when empty, unless `evenIfEmpty`: an acknowledgement alone), and
   * what to transfer with it. Buffers queued by giveBack() ride along with any batch taken.
   */
  take(ack: number, evenIfEmpty = false): { batch: Batch; transfer: ArrayBuffer[] } | null {
    if (this.count === 0 && !evenIfEmpty) return null;
    let buffer: ArrayBuffer | null = null;
    if (this.buffer !== null && this.offset > 0) {
      // Allocated here, never from Node's shared pool, so it can be transferred as it is.
      buffer = this.buffer.buffer as ArrayBuffer;
      if (this.fresh) this.buffer.fill(0, this.offset);
      const needed = Math.max(INITIAL_BUFFER, this.offset);
      this.nextSize = Math.max(needed, this.lastNeeded);
      this.lastNeeded = needed;
    }
    const transfer = buffer === null ? [] : [buffer];
    let returned: ArrayBuffer[] | undefined;
    if (this.returns.length > 0) {
      returned = this.returns;
      this.returns = [];
      for (const spent of returned) transfer.push(spent);
    }
    const seq = ++this.seq;
    if (this.keeping.length > 0) {
      this.kept.set(seq, this.keeping);
      this.keeping = [];
    }
    const batch: Batch = {
      seq,
      ack,
      records: this.records,
      buffer,
      length: this.offset,
      ...(returned === undefined ? {} : { returned }),
    };
    this.records = [];
    this.buffer = null;
    this.words = null;
    this.fresh = false;
    this.offset = 0;
    this.payloadBytes = 0;
    this.count = 0;
    return { batch, transfer };
  }

  /**
   * Writes a payload at `at` (after a header), zeroes its padding (the buffer may be
   * uninitialized there) and returns its length.
   */
  private writeBytes(at: number, payload: Uint8Array | string): number {
    let length: number;
    if (typeof payload === "string") {
      // UTF-8 takes at most 3 bytes per UTF-16 code unit.
      this.reserve(at - this.offset + payload.length * 3 + 4);
      length = this.buffer!.write(payload, at, "utf8");
    } else {
      length = payload.byteLength;
      this.reserve(at - this.offset + length + 4);
      this.buffer!.set(payload, at);
    }
    const buffer = this.buffer!;
    for (let i = at + length, end = (i + 3) & ~3; i < end; i++) buffer[i] = 0;
    return length;
  }

  private header(tag: number, flag: number, kind: number, id: number, length: number): void {
    if (this.offset + HEADER > this.buffer!.length) this.reserve(HEADER);
    const word = this.offset >>> 2;
    const words = this.words!;
    words[word] = tag | (flag << 8) | (kind << 16);
    words[word + 1] = id;
    words[word + 2] = length;
    if (tag === TAG_COLD) this.offset += HEADER;
  }

  private reserve(length: number): void {
    const needed = this.offset + length;
    if (this.buffer !== null && needed <= this.buffer.length) return;
    let size: number;
    if (this.buffer === null) {
      // A new batch starts with what the last ones needed and an eighth more, in steps of
      // INITIAL_BUFFER: a fresh buffer's unused tail is zeroed before it leaves, so a power of
      // two here (up to twice the batch) would cost a memset of up to the batch's size.
      const wanted = needed <= INITIAL_BUFFER ? needed : needed + (needed >>> 3);
      size = Math.ceil(wanted / INITIAL_BUFFER) * INITIAL_BUFFER;
    } else {
      size = this.buffer.length * 2;
      while (size < needed) size *= 2;
    }
    if (needed <= FULL_BUFFER && size > FULL_BUFFER) size = FULL_BUFFER;
    const previous = this.buffer;
    const previousFresh = this.fresh;
    const next = Buffer.from(this.allocate(size));
    if (previous !== null) {
      previous.copy(next, 0, 0, this.offset);
      // Into the pool with no leftovers of the allocator: it may leave with a later batch.
      if (previousFresh) previous.fill(0, this.offset);
      this.recycle(previous.buffer);
    }
    this.buffer = next;
    this.words = new Uint32Array(next.buffer, 0, next.length >>> 2);
  }

  /**
   * A buffer of at least `size` bytes: the largest of the pool (so that the batch rarely has to
   * grow, which copies it), or a new one.
   */
  private allocate(size: number): ArrayBuffer {
    const pool = this.pool;
    let best = -1;
    for (let i = 0; i < pool.length; i++) {
      if (best === -1 || pool[i]!.byteLength > pool[best]!.byteLength) best = i;
    }
    if (best !== -1 && pool[best]!.byteLength >= size) {
      const buffer = pool[best]!;
      pool[best] = pool[pool.length - 1]!;
      pool.pop();
      this.fresh = false;
      return buffer;
    }
    // An ArrayBuffer of its own (never a slice of Buffer's shared pool, so it can be
    // transferred), uninitialized: the writer zeroes what it does not write (see `fresh`).
    this.allocations++;
    this.fresh = true;
    return Buffer.allocUnsafeSlow(size).buffer as ArrayBuffer;
  }
}

/**
 * Whether the I/O thread should hand the buffer of a runtime's batch back (BatchWriter#giveBack)
 * once no socket refers to its bytes: where the transport recycles, for a batch large enough.
 */
export function worthRecycling(batch: Batch, recycles: boolean): boolean {
  return recycles && batch.buffer !== null && (batch.length ?? 0) >= RECYCLE_MIN_BYTES;
}

/** Whether a buffer may go into a pool: a plain, fixed-size ArrayBuffer of a size we make. */
function poolable(buffer: unknown): buffer is ArrayBuffer {
  if (!(buffer instanceof ArrayBuffer)) return false;
  const length = buffer.byteLength;
  return (
    length >= INITIAL_BUFFER &&
    length <= MAX_POOLED_BYTES &&
    (length & 3) === 0 &&
    (buffer as { resizable?: boolean }).resizable !== true
  );
}

function pad(length: number): number {
  return HEADER + ((length + 3) & ~3);
}

/**
 * Reads a received batch in order: hot records go to `hot` with their payload as a view (no
 * copy), the others to `cold`. Where buffers are recycled, a view is valid only until the
 * batch's buffer is given back: copy what must outlive that. A forward's payload is what
 * `forwarded` finds for it (BatchWriter#keptPayload of the reader's writer); one it does not
 * find is skipped.
 */
export function readBatch(
  batch: Batch,
  hot: (kind: number, id: number, flag: number, payload: Buffer) => void,
  cold: (record: BatchRecord) => void,
  forwarded?: (seq: number, ordinal: number) => Buffer | undefined,
): void {
  const records = batch.records;
  if (batch.buffer === null) {
    for (let i = 0; i < records.length; i++) {
      const record = records[i]!;
      if (record[0] === HOT_RECORD) {
        const bytes = record[4] as Uint8Array;
        hot(
          record[1] as number,
          record[2] as number,
          record[3] as number,
          Buffer.isBuffer(bytes)
            ? bytes
            : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        );
      } else cold(record);
    }
    return;
  }
  const buffer = batch.buffer;
  const end = batch.length ?? buffer.byteLength;
  const words = new Uint32Array(buffer, 0, end >>> 2);
  let next = 0;
  let offset = 0;
  while (offset + HEADER <= end) {
    const word = offset >>> 2;
    const head = words[word]!;
    const tag = head & 0xff;
    const length = words[word + 2]!;
    if (tag === TAG_HOT) {
      hot(
        head >>> 16,
        words[word + 1]!,
        (head >>> 8) & 0xff,
        Buffer.from(buffer, offset + HEADER, length),
      );
      offset += pad(length);
    } else if (tag === TAG_COLD) {
      cold(records[next++]!);
      offset += HEADER;
    } else if (tag === TAG_FORWARD) {
      const payload = forwarded?.(words[word + 3]!, length);
      if (payload !== undefined) hot(head >>> 16, words[word + 1]!, (head >>> 8) & 0xff, payload);
      offset += FORWARD_ENTRY;
    } else {
      offset += pad(length);
    }
  }
  // Defensive: a record without a marker still runs, last.
  while (next < records.length) cold(records[next++]!);
}

/** The bytes of a payload field of a received batch, as a view (no copy). */
export function payloadOf(batch: Batch, field: unknown): Buffer {
  if (field instanceof Uint8Array) {
    return Buffer.isBuffer(field)
      ? field
      : Buffer.from(field.buffer, field.byteOffset, field.byteLength);
  }
  const [offset, length] = field as readonly [number, number];
  return Buffer.from(batch.buffer!, offset, length);
}
