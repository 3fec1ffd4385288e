/**
 * Fuzz target for WebSocketConnection (src/connection/): two Switchboard endpoints, a server and
 * a client, over the in-memory TCP-like transport of transport.ts, each running a random script
 * of sends, streamed sends, pings, pongs, pauses, closes and terminations with random delays in
 * between, with and without permessage-deflate, a size limit, heartbeats, and small buffers that
 * make backpressure kick in. A side that terminates either resets its peer (a TCP RST) or
 * vanishes without one, which leaves the peer to its close timeout or heartbeat. Invariants:
 *
 * 1. Each side emits 'close' exactly once, and nothing after it.
 * 2. Messages arrive intact and in order, none skipped (RFC 6455 section 5.4 and 6.2): what a
 *    side received is a prefix of what the other side accepted for sending.
 * 3. A sendStream() that resolved was delivered, when the closing handshake completed cleanly
 *    and the receiver did not fail.
 * 4. When one side alone closed with close() and the handshake completed cleanly with no error
 *    anywhere, every message it accepted before calling close() was delivered: the close frame
 *    goes out after them (section 7.1.2).
 * 5. Every sendStream() promise settles; it rejects only with WS_ERR_SEND_FAILED (a stream cut
 *    short by the closing of the connection), or with the error its own source threw.
 * 6. Between two Switchboard endpoints no side reports a protocol error (each would mean the
 *    other wrote bad frames), a limit error without a limit, a transport error other than the
 *    reset the peer caused, a WS_ERR_SEND_FAILED 'error' without a failed source, or any error
 *    code it does not document; and close codes are ones either side sent.
 * 7. No operation with valid arguments throws, and the process sees no uncaught exception,
 *    unhandled rejection or warning.
 * 8. After the peer's FIN a side is no longer open and accepts nothing more: nothing sent could
 *    reach the peer.
 *
 * Scenarios run in several lanes at once (each lane a fast-check run with its own seed), so
 * connections also contend for the process-wide zlib limiter. Timing makes a failure replay
 * only approximately; the counterexample is shrunk when the replay still fails.
 */
import fc from "fast-check";
import { WebSocketConnection } from "../src/connection/connection.js";
import { parseExtensions } from "../src/protocol/extension-header.js";
import {
  acceptServerResponse,
  clientOffer,
  type DeflateParams,
  negotiateServer,
  type PerMessageDeflateOptions,
} from "../src/protocol/permessage-deflate.js";
import { Random } from "./random.js";
import { type Failure, searchProperty, type Target, Violation } from "./target.js";
import { type TransportEnd, transportPair } from "./transport.js";

/**
 * A fixed bug, checked by default (--lenient tolerates it, to tell it apart from new failures):
 * when the peer's FIN was read in the same turn as output was queued (the reply to the peer's
 * close frame, or messages sent earlier in the turn), the connection ended the socket at once and
 * its flush then wrote after the end: an 'error' WS_ERR_TRANSPORT "write after end" during an
 * ordinary closing. The socket is now ended after the flush.
 */
let tolerateWriteAfterFin = true;

// ───────────────────────────── scenarios ─────────────────────────────

/** A pause before a step: some event-loop turns, one microtask, or a few milliseconds. */
type Delay = { immediates: number } | { microtask: true } | { sleepMs: number };

/** Message content, generated from a seed so a counterexample stays short. */
interface Content {
  text: boolean;
  length: number;
  style: 0 | 1 | 2;
  seed: number;
}

type Op =
  | { kind: "send"; content: Content; compress: boolean; binaryOption: true | undefined }
  | {
      kind: "stream";
      content: Content;
      cuts: number[];
      /** The source throws before yielding this piece. */
      failAt: number | null;
      compress: boolean;
      pieceDelays: Array<Delay | null>;
      /** The script waits for the promise before its next step. */
      wait: boolean;
    }
  | { kind: "ping"; size: number }
  | { kind: "pong" }
  | { kind: "pause"; resumeAfterMs: number | null }
  | { kind: "close"; code: number | undefined; reason: string }
  | { kind: "terminate" };

interface Script {
  steps: Array<{ delay: Delay; op: Op }>;
  finalClose: boolean;
}

interface Scenario {
  deflate: { client: PerMessageDeflateOptions; server: PerMessageDeflateOptions } | null;
  maxMessageSize: number | undefined;
  readableHighWaterMark: number;
  writableHighWaterMark: number;
  /** A terminated side resets its peer (TCP RST), or vanishes leaving it waiting. */
  reset: boolean;
  /**
   * Pings that declare a silent peer dead. Always on when peers may vanish: without a reset,
   * nothing else ends a connection whose reading is paused behind output that cannot drain.
   */
  heartbeat: { interval: number; timeout: number } | false;
  highWaterMark: number;
  closeTimeout: number;
  server: Script;
  client: Script;
  /** Who closes when neither script closed or terminated. */
  forcedCloser: "server" | "client";
  /** Right after a side sees the peer's FIN, it tries to send, ping and pong: all refused. */
  probeAfterFin: boolean;
}

/** `value` one time in `oneIn`, `nil` the others. */
function rarely<T, N>(value: fc.Arbitrary<T>, oneIn: number, nil: N): fc.Arbitrary<T | N> {
  return fc.oneof(
    { weight: oneIn - 1, arbitrary: fc.constant(nil) },
    { weight: 1, arbitrary: value },
  );
}

const delay: fc.Arbitrary<Delay> = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 0, max: 3 }).map((immediates) => ({ immediates })) },
  { weight: 3, arbitrary: fc.constant({ microtask: true as const }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 3 }).map((sleepMs) => ({ sleepMs })) },
);

const content: fc.Arbitrary<Content> = fc.record({
  text: fc.boolean(),
  length: fc.oneof(
    { weight: 17, arbitrary: fc.nat(2000) },
    { weight: 2, arbitrary: fc.constantFrom(0, 125, 126, 127) },
    { weight: 1, arbitrary: fc.oneof(fc.constantFrom(65535, 65536, 70000), fc.nat(200_000)) },
  ),
  style: fc.constantFrom(0 as const, 1 as const, 2 as const),
  seed: fc.nat(),
});

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 40,
    arbitrary: fc.record({
      kind: fc.constant("send" as const),
      content,
      compress: fc.boolean(),
      binaryOption: rarely(fc.constant(true as const), 10, undefined),
    }),
  },
  {
    weight: 20,
    arbitrary: fc.record({
      kind: fc.constant("stream" as const),
      content,
      cuts: fc.array(fc.nat(), { maxLength: 5 }),
      failAt: rarely(fc.nat(5), 20, null),
      compress: fc.boolean(),
      pieceDelays: fc.array(fc.option(delay, { nil: null, freq: 2 }), { maxLength: 6 }),
      wait: fc.boolean(),
    }),
  },
  {
    weight: 10,
    arbitrary: fc.record({ kind: fc.constant("ping" as const), size: fc.nat(125) }),
  },
  { weight: 5, arbitrary: fc.constant({ kind: "pong" as const }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("pause" as const),
      resumeAfterMs: fc.option(fc.nat(4), { nil: null, freq: 10 }),
    }),
  },
  {
    weight: 13,
    arbitrary: fc
      .record({
        code: fc.constantFrom(undefined, 1000, 1001, 3000, 4000),
        reason: fc.constantFrom("", "bye", "é".repeat(40)),
      })
      .map(({ code, reason }) => ({
        kind: "close" as const,
        code,
        reason: code === undefined ? "" : reason,
      })),
  },
  { weight: 5, arbitrary: fc.constant({ kind: "terminate" as const }) },
);

const script: fc.Arbitrary<Script> = fc.record({
  steps: fc.array(fc.record({ delay, op }), { maxLength: 17, size: "max" }),
  finalClose: fc.boolean(),
});

const deflateOptions: fc.Arbitrary<PerMessageDeflateOptions> = fc.record(
  {
    serverNoContextTakeover: fc.constant(true),
    clientNoContextTakeover: fc.constant(true),
    serverMaxWindowBits: fc.integer({ min: 8, max: 15 }),
    clientMaxWindowBits: fc.integer({ min: 8, max: 15 }),
    threshold: fc.constantFrom(0, 0, 16, 1024),
  },
  { requiredKeys: ["threshold"] },
);

const heartbeat = fc.record({
  interval: fc.integer({ min: 20, max: 150 }),
  timeout: fc.integer({ min: 100, max: 400 }),
});

const scenario: fc.Arbitrary<Scenario> = fc
  .record({
    deflate: fc.option(fc.record({ client: deflateOptions, server: deflateOptions }), {
      nil: null,
      freq: 2,
    }),
    maxMessageSize: rarely(fc.constantFrom(100, 1000, 70000), 10, undefined),
    readableHighWaterMark: fc.constantFrom(64, 1024, 16 * 1024),
    writableHighWaterMark: fc.constantFrom(64, 1024, 16 * 1024),
    reset: fc.oneof(
      { weight: 4, arbitrary: fc.constant(true) },
      { weight: 1, arbitrary: fc.constant(false) },
    ),
    heartbeat: fc.oneof(
      { weight: 3, arbitrary: fc.constant(false as const) },
      { weight: 1, arbitrary: heartbeat },
    ),
    highWaterMark: fc.constantFrom(100, 4096, 1 << 20),
    closeTimeout: fc.integer({ min: 50, max: 250 }),
    server: script,
    client: script,
    forcedCloser: fc.constantFrom("server" as const, "client" as const),
    probeAfterFin: fc.boolean(),
  })
  .map((sc) =>
    sc.reset || sc.heartbeat ? sc : { ...sc, heartbeat: { interval: 100, timeout: 200 } },
  );

function materialize(c: Content): Buffer {
  const random = new Random(c.seed);
  if (c.text) {
    if (c.style === 0) return Buffer.from("ab".repeat(c.length >> 1));
    // Up to 400 characters of 1- to 4-byte UTF-8, so streamed pieces split characters.
    let s = "";
    for (let i = Math.min(c.length, 400); i > 0; i--) {
      const k = random.int(4);
      s +=
        k === 0
          ? "x"
          : k === 1
            ? "é"
            : k === 2
              ? "€"
              : String.fromCodePoint(0x10000 + random.int(0x100000));
    }
    return Buffer.from(s);
  }
  const out = Buffer.allocUnsafe(c.length);
  for (let i = 0; i < c.length; i++) {
    out[i] = c.style === 0 ? random.int(256) : c.style === 1 ? i & 0xff : 0x41 + (i % 7);
  }
  return out;
}

function negotiate(deflate: Scenario["deflate"]): {
  params: DeflateParams;
  client: PerMessageDeflateOptions;
  server: PerMessageDeflateOptions;
} | null {
  if (deflate === null) return null;
  const negotiated = negotiateServer(parseExtensions(clientOffer(deflate.client)), deflate.server);
  if (negotiated === null) throw new Error("the server declined a valid offer");
  const params = acceptServerResponse(parseExtensions(negotiated.response), deflate.client);
  return { params, client: deflate.client, server: deflate.server };
}

// ───────────────────────────── running a scenario ─────────────────────────────

const immediate = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function wait(d: Delay): Promise<void> {
  if ("immediates" in d) for (let i = 0; i < d.immediates; i++) await immediate();
  else if ("microtask" in d) await Promise.resolve();
  else await sleep(d.sleepMs);
}

interface Attempt {
  data: Buffer;
  isBinary: boolean;
  kind: "send" | "stream";
  outcome: "pending" | "resolved" | "rejected";
  rejection?: string;
  /** The stream's source threw on purpose. */
  sourceFailed?: boolean;
}

interface Side {
  name: "server" | "client";
  ws: WebSocketConnection;
  transport: TransportEnd;
  /** Messages accepted for sending, in order. */
  accepted: Attempt[];
  received: Array<{ data: Buffer; isBinary: boolean }>;
  closes: Array<{ code: number; reason: string }>;
  errors: Array<{ code: string; message: string }>;
  afterClose: string[];
  /** Codes passed to close() (undefined: none). */
  closeCodes: Array<number | undefined>;
  /** How many messages had been accepted when close() was first called. */
  acceptedBeforeClose: number | null;
  terminated: boolean;
  sourceFailed: boolean;
  pausedUntilEnd: boolean;
  /** The peer's FIN (end of the byte stream) arrived. */
  finSeen: boolean;
  /** readyState when it did. */
  stateAtFin: string | null;
  /** Broken invariants seen inside event listeners, thrown when the scenario is checked. */
  violations: string[];
}

class SourceFailure extends Error {}

/** Process-level trouble seen while scenarios ran. */
const processProblems: string[] = [];

function makeSide(
  name: Side["name"],
  ws: WebSocketConnection,
  transport: TransportEnd,
  probeAfterFin: boolean,
): Side {
  const side: Side = {
    name,
    ws,
    transport,
    accepted: [],
    received: [],
    closes: [],
    errors: [],
    afterClose: [],
    closeCodes: [],
    acceptedBeforeClose: null,
    terminated: false,
    sourceFailed: false,
    pausedUntilEnd: false,
    finSeen: false,
    stateAtFin: null,
    violations: [],
  };
  const after = (what: string) => {
    if (side.closes.length > 0) side.afterClose.push(what);
  };
  ws.on("message", (data, isBinary) => {
    after(`message of ${data.length} B`);
    side.received.push({ data: Buffer.from(data), isBinary });
  });
  ws.on("ping", () => after("ping"));
  ws.on("pong", () => after("pong"));
  ws.on("drain", () => after("drain"));
  ws.on("error", (error) => {
    const code = (error as { code?: string }).code ?? "(no code)";
    after(`error ${code}: ${error.message}`);
    side.errors.push({ code, message: error.message });
  });
  ws.on("close", (code, reason) => side.closes.push({ code, reason }));
  // Registered after the connection's own listener, so this sees the state it left.
  transport.on("end", () => {
    side.finSeen = true;
    side.stateAtFin = ws.readyState;
    // Once this turn's output was flushed and the socket ended, nothing may be accepted.
    if (probeAfterFin) setImmediate(() => probe(side));
  });
  return side;
}

function probe(side: Side): void {
  if (side.closes.length > 0) return;
  const accepted = [
    side.ws.send("after the FIN") && "send()",
    side.ws.ping() && "ping()",
    side.ws.pong() && "pong()",
  ].filter(Boolean);
  if (accepted.length > 0) side.violations.push(`${accepted.join(", ")} accepted after the FIN`);
}

function close(
  side: Side,
  code: number | undefined,
  reason: string,
  log: string[],
  note = "",
): void {
  side.closeCodes.push(code);
  side.acceptedBeforeClose ??= side.accepted.length;
  log.push(`${side.name}.close(${code ?? ""})${note}`);
  side.ws.close(code, reason);
}

async function perform(side: Side, o: Op, log: string[]): Promise<void> {
  const ws = side.ws;
  switch (o.kind) {
    case "send": {
      const data = materialize(o.content);
      const ok = o.content.text
        ? ws.send(data.toString(), { compress: o.compress })
        : ws.send(data, { binary: o.binaryOption, compress: o.compress });
      log.push(
        `${side.name}.send(${o.content.text ? "text" : "binary"} ${data.length} B) -> ${ok}`,
      );
      if (ok) {
        side.accepted.push({ data, isBinary: !o.content.text, kind: "send", outcome: "resolved" });
      }
      return;
    }
    case "stream": {
      const data = materialize(o.content);
      const isBinary = !o.content.text;
      const cuts = o.cuts.map((c) => c % (data.length + 1)).sort((a, b) => a - b);
      const bounds = [0, ...cuts, data.length];
      const attempt: Attempt = { data, isBinary, kind: "stream", outcome: "pending" };
      const source = async function* () {
        for (let f = 0; f + 1 < bounds.length; f++) {
          if (f === o.failAt) {
            attempt.sourceFailed = true;
            side.sourceFailed = true;
            throw new SourceFailure("the source failed on purpose");
          }
          const d = o.pieceDelays[f];
          if (d) await wait(d);
          // Bytes even for text: pieces may split a character.
          yield data.subarray(bounds[f], bounds[f + 1]);
        }
      };
      const wasOpen = ws.readyState === "open";
      const promise = ws.sendStream(source(), { binary: isBinary, compress: o.compress });
      log.push(
        `${side.name}.sendStream(${isBinary ? "binary" : "text"} ${data.length} B in ${bounds.length - 1})`,
      );
      if (wasOpen) side.accepted.push(attempt);
      const settled = promise.then(
        () => {
          attempt.outcome = "resolved";
        },
        (error: Error) => {
          attempt.outcome = "rejected";
          attempt.rejection =
            error instanceof SourceFailure
              ? "source"
              : ((error as { code?: string }).code ?? String(error));
        },
      );
      if (!wasOpen) {
        await settled;
        if (attempt.outcome !== "rejected" || attempt.rejection !== "WS_ERR_SEND_FAILED") {
          throw new Violation(
            `sendStream() on a ${ws.readyState} connection ${attempt.outcome} (${attempt.rejection ?? ""}) instead of rejecting with WS_ERR_SEND_FAILED`,
          );
        }
      } else if (o.wait) {
        await settled;
      }
      return;
    }
    case "ping":
    case "pong": {
      const ok = o.kind === "ping" ? ws.ping(Buffer.alloc(o.size, 1)) : ws.pong("q");
      log.push(`${side.name}.${o.kind} -> ${ok}`);
      // Nothing can reach a peer that ended its stream.
      if (ok && side.finSeen) {
        throw new Violation(`${side.name}.${o.kind}() returned true after the peer's FIN`);
      }
      return;
    }
    case "pause":
      ws.pause();
      log.push(`${side.name}.pause`);
      if (o.resumeAfterMs === null) {
        side.pausedUntilEnd = true;
        return;
      }
      await sleep(o.resumeAfterMs);
      ws.resume();
      log.push(`${side.name}.resume`);
      return;
    case "close":
      close(side, o.code, o.reason, log);
      return;
    case "terminate":
      side.terminated = true;
      log.push(`${side.name}.terminate`);
      ws.terminate();
      return;
  }
}

async function runScript(side: Side, s: Script, log: string[]): Promise<void> {
  for (const step of s.steps) {
    await wait(step.delay);
    try {
      await perform(side, step.op, log);
    } catch (error) {
      if (error instanceof Violation) throw error;
      throw new Violation(`${side.name} ${step.op.kind} threw: ${(error as Error).stack}`);
    }
    if (side.terminated) return;
  }
  await immediate();
  if (s.finalClose) close(side, 1000, "done", log, " at the end");
}

function describe(side: Side): Record<string, unknown> {
  return {
    readyState: side.ws.readyState,
    bufferedAmount: side.ws.bufferedAmount,
    closes: side.closes,
    errors: side.errors,
    transport: side.transport.describe(),
  };
}

const DOCUMENTED_CONNECTION_ERRORS = new Set([
  "WS_ERR_SEND_FAILED",
  "WS_ERR_CLOSE_TIMEOUT",
  "WS_ERR_HEARTBEAT_TIMEOUT",
  "WS_ERR_TRANSPORT",
  "WS_ERR_MESSAGE_TOO_BIG",
  "WS_ERR_BUFFER_LIMIT",
  "WS_ERR_TOO_MANY_FRAGMENTS",
]);

const counters = {
  writesAfterFin: 0,
  messages: 0,
  cleanDirections: 0,
  errorCodes: new Map<string, number>(),
  closeCodes: new Map<number, number>(),
};

function checkDirection(tx: Side, rx: Side, sc: Scenario): void {
  // 2. In order, intact, none skipped.
  for (let i = 0; i < rx.received.length; i++) {
    const got = rx.received[i];
    const sent = tx.accepted[i];
    if (!sent || !got.data.equals(sent.data) || got.isBinary !== sent.isBinary) {
      throw new Violation(
        `${rx.name}'s message ${i} (${got.data.length} B, ${got.isBinary ? "binary" : "text"}) is not ${tx.name}'s message ${i} (${sent ? `${sent.data.length} B ${sent.kind}` : "none"})`,
      );
    }
  }
  const rxCode = rx.closes[0]?.code;
  const txCode = tx.closes[0]?.code;
  const clean =
    rxCode !== 1006 &&
    txCode !== 1006 &&
    !rx.terminated &&
    !tx.terminated &&
    rx.errors.length === 0;
  if (clean) {
    counters.cleanDirections++;
    // 3. A resolved stream was delivered.
    for (const a of tx.accepted) {
      if (a.kind !== "stream" || a.outcome !== "resolved") continue;
      if (!rx.received.some((m) => m.data.equals(a.data) && m.isBinary === a.isBinary)) {
        throw new Violation(
          `${tx.name}'s sendStream() of ${a.data.length} B resolved, but it never arrived`,
        );
      }
    }
    // 4. Messages accepted before a lone close() precede the close frame.
    const loneClose =
      tx.acceptedBeforeClose !== null &&
      rx.closeCodes.length === 0 &&
      tx.errors.length === 0 &&
      !tx.sourceFailed &&
      !rx.sourceFailed;
    if (loneClose && rx.received.length < tx.acceptedBeforeClose!) {
      throw new Violation(
        `${tx.name} closed after ${tx.acceptedBeforeClose} messages, but ${rx.name} received ${rx.received.length}`,
      );
    }
  }
  // 5. Streams settle, and reject only for the documented reasons.
  for (const a of tx.accepted) {
    if (a.kind !== "stream") continue;
    if (a.outcome === "pending") {
      throw new Violation(`a ${tx.name} sendStream() promise never settled`);
    }
    if (
      a.outcome === "rejected" &&
      a.rejection !== "WS_ERR_SEND_FAILED" &&
      !(a.sourceFailed && a.rejection === "source")
    ) {
      throw new Violation(`a ${tx.name} sendStream() rejected with ${a.rejection}`);
    }
  }
  // 6. Errors and close codes between two Switchboard endpoints.
  for (const e of rx.errors) {
    counters.errorCodes.set(e.code, (counters.errorCodes.get(e.code) ?? 0) + 1);
    if (!DOCUMENTED_CONNECTION_ERRORS.has(e.code)) {
      throw new Violation(
        `${rx.name} reported ${e.code}: ${e.message} (${tx.name} wrote something wrong?)`,
      );
    }
    if (e.code === "WS_ERR_TRANSPORT" && e.message === "write after end" && rx.finSeen) {
      counters.writesAfterFin++;
      if (tolerateWriteAfterFin) continue;
    }
    if (e.code === "WS_ERR_TRANSPORT" && !/ECONNRESET|EPIPE/.test(e.message)) {
      throw new Violation(`${rx.name} reported a transport error: ${e.message}`);
    }
    if (
      /^WS_ERR_(MESSAGE_TOO_BIG|BUFFER_LIMIT|TOO_MANY)/.test(e.code) &&
      sc.maxMessageSize === undefined
    ) {
      throw new Violation(`${rx.name} reported ${e.code} without a size limit`);
    }
    if (e.code === "WS_ERR_SEND_FAILED" && !rx.sourceFailed) {
      throw new Violation(
        `${rx.name} reported WS_ERR_SEND_FAILED (${e.message}) with no failed source`,
      );
    }
  }
  if (rxCode !== undefined) {
    counters.closeCodes.set(rxCode, (counters.closeCodes.get(rxCode) ?? 0) + 1);
    const sent = [...tx.closeCodes, ...rx.closeCodes].map((c) => c ?? 1005);
    const allowed = new Set([1005, 1006, 1002, 1007, 1009, 1011, ...sent]);
    if (!allowed.has(rxCode)) throw new Violation(`${rx.name} reported close code ${rxCode}`);
  }
}

async function runScenario(sc: Scenario): Promise<void> {
  const [serverEnd, clientEnd] = transportPair({
    readableHighWaterMark: sc.readableHighWaterMark,
    writableHighWaterMark: sc.writableHighWaterMark,
    reset: sc.reset,
  });
  const agreed = negotiate(sc.deflate);
  const common = {
    heartbeat: sc.heartbeat,
    closeTimeout: sc.closeTimeout,
    highWaterMark: sc.highWaterMark,
    maxMessageSize: sc.maxMessageSize,
  };
  const server = makeSide(
    "server",
    new WebSocketConnection(serverEnd, {
      role: "server",
      ...common,
      deflate: agreed && { params: agreed.params, options: agreed.server },
    }),
    serverEnd,
    sc.probeAfterFin,
  );
  const client = makeSide(
    "client",
    new WebSocketConnection(clientEnd, {
      role: "client",
      ...common,
      deflate: agreed && { params: agreed.params, options: agreed.client },
    }),
    clientEnd,
    sc.probeAfterFin,
  );
  const log: string[] = [];
  const problemsBefore = processProblems.length;
  try {
    await Promise.all([runScript(server, sc.server, log), runScript(client, sc.client, log)]);
    const someoneEnds = [server, client].some((s) => s.closeCodes.length > 0 || s.terminated);
    if (!someoneEnds) {
      close(sc.forcedCloser === "server" ? server : client, 1000, "", log, " forced");
    }
    // A side paused for good resumes once the peer's close timeout has had its chance to fire:
    // then the connection must still wind down.
    if (server.pausedUntilEnd || client.pausedUntilEnd) {
      await sleep(sc.closeTimeout + 20);
      for (const side of [server, client]) {
        if (!side.pausedUntilEnd) continue;
        log.push(`${side.name}.resume at the end`);
        side.ws.resume();
      }
    }
    const deadline = Date.now() + 3000;
    while ((server.closes.length === 0 || client.closes.length === 0) && Date.now() < deadline) {
      await sleep(5);
    }
    // Late events would show up now.
    await sleep(20);

    // 1. 'close' exactly once, and nothing after it.
    for (const side of [server, client]) {
      if (side.closes.length !== 1) {
        throw new Violation(
          `${side.name} emitted 'close' ${side.closes.length} times: ${JSON.stringify({ server: describe(server), client: describe(client) })}`,
        );
      }
      if (side.afterClose.length > 0) {
        throw new Violation(
          `${side.name} emitted events after 'close': ${side.afterClose.join("; ")}`,
        );
      }
      // After the peer's FIN nothing more can reach it: the connection is closing or closed.
      if (side.stateAtFin === "open") {
        throw new Violation(`${side.name} was still open after the peer's FIN`);
      }
      if (side.violations.length > 0) throw new Violation(`${side.name}: ${side.violations[0]}`);
      if (side.ws.readyState !== "closed" || side.ws.send("late")) {
        throw new Violation(`${side.name} is ${side.ws.readyState} after 'close' and still sends`);
      }
    }
    checkDirection(server, client, sc);
    checkDirection(client, server, sc);
    // 7. Nothing escaped to the process.
    if (processProblems.length > problemsBefore) {
      throw new Violation(
        `the process saw (possibly from a scenario running alongside): ${processProblems.slice(problemsBefore).join("\n")}`,
      );
    }
    counters.messages += server.received.length + client.received.length;
  } catch (error) {
    if (error instanceof Violation) {
      throw new Violation(`${error.message}\n  operations: ${log.join(", ")}`);
    }
    throw error;
  } finally {
    server.ws.terminate();
    client.ws.terminate();
  }
}

// ───────────────────────────── the target ─────────────────────────────

/** Thrown into the other lanes once one lane failed, so they stop at once. */
class LaneStopped extends Error {
  constructor() {
    super("stopped: another lane found a failure");
  }
}

const LANES = 4;
/** A scenario that takes this long hangs. */
const SCENARIO_TIMEOUT_MS = 15_000;

export const connectionTarget: Target = {
  name: "connection",
  summary: "two endpoints over a TCP-like pair: delivery, ordering, close and error contracts",
  async run(options) {
    tolerateWriteAfterFin = !options.strict;
    counters.writesAfterFin = 0;
    counters.messages = 0;
    counters.cleanDirections = 0;
    counters.errorCodes.clear();
    counters.closeCodes.clear();
    processProblems.length = 0;
    const onException = (error: unknown) =>
      processProblems.push(`uncaught exception: ${(error as Error)?.stack ?? error}`);
    const onRejection = (error: unknown) =>
      processProblems.push(`unhandled rejection: ${(error as Error)?.stack ?? error}`);
    const onWarning = (warning: Error) =>
      processProblems.push(`warning: ${warning.name}: ${warning.message}`);
    process.on("uncaughtException", onException);
    process.on("unhandledRejection", onRejection);
    process.on("warning", onWarning);

    // Lanes that found a failure, in the order they did: they go on to shrink it, the others
    // stop at their next run.
    const failedLanes: number[] = [];
    // A replay (--path) runs one lane with the seed it was found with.
    const lanes = options.path === undefined ? LANES : 1;
    try {
      const results = await Promise.all(
        Array.from({ length: lanes }, async (_, lane) => {
          const seed = options.seed + lane;
          const property = fc.asyncProperty(scenario, async (sc) => {
            if (failedLanes.length > 0 && !failedLanes.includes(lane)) throw new LaneStopped();
            try {
              await runScenario(sc);
            } catch (error) {
              if (!failedLanes.includes(lane)) failedLanes.push(lane);
              throw error;
            }
          });
          const result = await searchProperty(
            property,
            { ...options, seed },
            {
              format: ([sc]) => JSON.stringify(sc),
              plugins: [fc.timeout(SCENARIO_TIMEOUT_MS)],
              isStop: (error) => error instanceof LaneStopped,
            },
          );
          return { ...result, seed };
        }),
      );
      const runs = results.reduce((sum, r) => sum + r.runs, 0);
      // The first lane to fail; a lane can also fail without passing through our catch (a run
      // that timed out).
      const failed =
        failedLanes.map((lane) => results[lane]).find((r) => r.failure !== null) ??
        results.find((r) => r.failure !== null);
      const failure: Failure | null = failed ? { ...failed.failure!, seed: failed.seed } : null;
      return {
        runs,
        failure,
        stats: {
          lanes,
          "messages delivered": counters.messages,
          "clean directions": counters.cleanDirections,
          "error events": [...counters.errorCodes].map(([c, n]) => `${c}:${n}`).join(" "),
          "close codes": [...counters.closeCodes].map(([c, n]) => `${c}:${n}`).join(" "),
          "known write-after-FIN errors": counters.writesAfterFin,
        },
      };
    } finally {
      process.off("uncaughtException", onException);
      process.off("unhandledRejection", onRejection);
      process.off("warning", onWarning);
    }
  },
};
