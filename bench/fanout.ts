/**
 * Fan-out micro-benchmark: one message to 1,000 server connections, framed per connection with
 * send() against framed once with sendPrepared(). The connections write to null sockets (every
 * write completes at once and is only counted), so what is measured is Switchboard's own cost:
 * framing, queueing, corking and the one write per socket. A second case sends a 4 KiB text
 * message over permessage-deflate with server_no_context_takeover, where send() compresses
 * 1,000 times and sendPrepared() once (RFC 7692 section 7.1.1.1).
 *
 *   npx tsx bench/fanout.ts
 */
import { Duplex } from "node:stream";
import { WebSocketConnection } from "../src/connection/connection.js";
import { PreparedMessage } from "../src/connection/prepared.js";

const CONNECTIONS = 1000;
const RUNS = 21;
const WARMUP_RUNS = 5;
/** Turns to wait for compressed output before a run counts as broken. */
const MAX_TURNS = 100_000;

/** A transport that accepts every write at once and keeps nothing but counts. */
class NullSocket extends Duplex {
  writes = 0;
  bytes = 0;

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.writes++;
    this.bytes += chunk.length;
    callback();
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: () => void): void {
    this.writes++;
    for (const { chunk } of chunks) this.bytes += chunk.length;
    callback();
  }

  override _read(): void {}
}

interface Case {
  name: string;
  payload: string;
  deflate: boolean;
}

const cases: Case[] = [
  { name: "64 B text", payload: "x".repeat(64), deflate: false },
  {
    name: "4 KiB text, deflate",
    payload: Array.from({ length: 600 }, (_, i) => `item-${i % 37} `)
      .join("")
      .slice(0, 4096),
    deflate: true,
  },
];

function open(deflate: boolean): { ws: WebSocketConnection; socket: NullSocket }[] {
  return Array.from({ length: CONNECTIONS }, () => {
    const socket = new NullSocket();
    const ws = new WebSocketConnection(socket, {
      role: "server",
      heartbeat: false,
      deflate: deflate
        ? {
            params: {
              serverNoContextTakeover: true,
              clientNoContextTakeover: true,
              serverMaxWindowBits: 15,
              clientMaxWindowBits: 15,
            },
          }
        : null,
    });
    return { ws, socket };
  });
}

const AS_TEXT = { binary: false };

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Milliseconds from the first send until every socket got its write. */
async function run(
  connections: { ws: WebSocketConnection; socket: NullSocket }[],
  send: (ws: WebSocketConnection) => void,
): Promise<number> {
  const before = connections.map(({ socket }) => socket.writes);
  const start = process.hrtime.bigint();
  for (const { ws } of connections) send(ws);
  for (let turn = 0; ; turn++) {
    await nextTurn();
    if (connections.every(({ socket }, i) => socket.writes > before[i])) break;
    if (turn >= MAX_TURNS) throw new Error("the output never reached every socket");
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  // Corking holds on both paths: one message, one write per socket.
  if (!connections.every(({ socket }, i) => socket.writes === before[i] + 1)) {
    throw new Error("a socket got more than one write for one message");
  }
  return elapsed;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const rows: string[][] = [["case", "send() ms", "sendPrepared() ms", "send / prepared"]];
for (const c of cases) {
  const viaSend = open(c.deflate);
  const viaPrepared = open(c.deflate);
  // Encoded once for both paths, so only framing and compression differ.
  const bytes = Buffer.from(c.payload);
  const sendTimes: number[] = [];
  const preparedTimes: number[] = [];
  for (let i = 0; i < WARMUP_RUNS + RUNS; i++) {
    // A new PreparedMessage per run: each run is a newly published message, framed (and
    // compressed) once.
    const prepared = new PreparedMessage(bytes, false);
    // Alternate which goes first so neither always runs on a warmer heap.
    const order = i % 2 === 0 ? ["send", "prepared"] : ["prepared", "send"];
    for (const which of order) {
      const ms =
        which === "send"
          ? await run(viaSend, (ws) => ws.send(bytes, AS_TEXT))
          : await run(viaPrepared, (ws) => ws.sendPrepared(prepared));
      if (i >= WARMUP_RUNS) (which === "send" ? sendTimes : preparedTimes).push(ms);
    }
  }
  // Both paths must have put the same bytes on the wire.
  const sentBytes = viaSend.reduce((sum, { socket }) => sum + socket.bytes, 0);
  const preparedBytes = viaPrepared.reduce((sum, { socket }) => sum + socket.bytes, 0);
  if (sentBytes !== preparedBytes) {
    throw new Error(`byte counts differ: send ${sentBytes}, sendPrepared ${preparedBytes}`);
  }
  for (const { ws } of [...viaSend, ...viaPrepared]) ws.terminate();
  const a = median(sendTimes);
  const b = median(preparedTimes);
  rows.push([c.name, a.toFixed(3), b.toFixed(3), (a / b).toFixed(2)]);
}

console.log(
  `${CONNECTIONS} connections, median of ${RUNS} runs (after ${WARMUP_RUNS} warm-up runs)`,
);
for (const row of rows) console.log(row.map((cell) => cell.padStart(22)).join(""));
