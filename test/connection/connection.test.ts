// WebSocketConnection over in-memory transports (and real loopback sockets where the kernel's
// behaviour matters): messages, streamed messages, corking, backpressure, heartbeat, the closing
// handshake and its timeout, and how protocol and transport errors are reported.
import { once } from "node:events";
import { createServer as createNetServer, connect as netConnect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import { createInflateRaw, deflateRawSync, constants as zlibConstants } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { type ConnectionOptions, WebSocketConnection } from "../../src/connection/connection.js";
import { Opcode } from "../../src/protocol/constants.js";
import type { DeflateParams } from "../../src/protocol/permessage-deflate.js";
import {
  closePayload,
  duplexPair,
  type PairEnd,
  type PairOptions,
  parseFrames,
  rawFrame,
  sleep,
  turns,
  waitUntil,
  within,
} from "./duplex-pair.js";

const WAIT = 5_000;

interface CloseInfo {
  code: number;
  reason: string;
}

interface Recorded {
  messages: Array<{ data: Buffer; isBinary: boolean }>;
  pings: Buffer[];
  pongs: Buffer[];
  closes: CloseInfo[];
  errors: Array<Error & { code?: string; closeCode?: number; cause?: unknown }>;
  drains: number;
  closed: Promise<CloseInfo>;
}

/** Records what a connection emits. `errors: false` leaves 'error' without a listener. */
function record(ws: WebSocketConnection, options: { errors?: boolean } = {}): Recorded {
  let resolveClosed!: (info: CloseInfo) => void;
  const rec: Recorded = {
    messages: [],
    pings: [],
    pongs: [],
    closes: [],
    errors: [],
    drains: 0,
    closed: new Promise<CloseInfo>((resolve) => {
      resolveClosed = resolve;
    }),
  };
  ws.on("message", (data, isBinary) => rec.messages.push({ data: Buffer.from(data), isBinary }));
  ws.on("ping", (data) => rec.pings.push(Buffer.from(data)));
  ws.on("pong", (data) => rec.pongs.push(Buffer.from(data)));
  ws.on("drain", () => {
    rec.drains++;
  });
  if (options.errors !== false) ws.on("error", (error) => rec.errors.push(error));
  ws.on("close", (code, reason) => {
    rec.closes.push({ code, reason });
    resolveClosed({ code, reason });
  });
  return rec;
}

const cleanups: Array<() => void> = [];

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

function track(ws: WebSocketConnection): WebSocketConnection {
  cleanups.push(() => ws.terminate());
  return ws;
}

/** A server-role and a client-role connection joined by an in-memory pair. */
function connectedPair(
  serverOptions: Partial<ConnectionOptions> = {},
  clientOptions: Partial<ConnectionOptions> = {},
  pairOptions: PairOptions = {},
) {
  const [serverEnd, clientEnd] = duplexPair(pairOptions);
  const server = track(new WebSocketConnection(serverEnd, { role: "server", ...serverOptions }));
  const client = track(new WebSocketConnection(clientEnd, { role: "client", ...clientOptions }));
  return { server, client, serverEnd, clientEnd };
}

interface RawPeer {
  end: PairEnd;
  /** Everything the connection wrote, decoded. */
  frames(): ReturnType<typeof parseFrames>;
  send(bytes: Buffer): void;
  /** True once the connection half-closed its side. */
  ended(): boolean;
}

/**
 * A connection whose peer is a raw byte stream the test drives by hand. By default the raw side
 * half-closes back as soon as the connection does, like a well-behaved TCP peer; `swallow` makes
 * it a peer that reads everything and answers nothing.
 */
function rawPeer(
  role: "server" | "client",
  options: Partial<ConnectionOptions> = {},
  behaviour: { swallow?: boolean } = {},
) {
  const [mine, theirs] = duplexPair();
  const ws = track(new WebSocketConnection(mine, { role, ...options }));
  const received: Buffer[] = [];
  let ended = false;
  theirs.on("data", (chunk: Buffer) => received.push(chunk));
  theirs.on("end", () => {
    ended = true;
    if (!behaviour.swallow) theirs.end();
  });
  cleanups.push(() => theirs.destroy());
  const peer: RawPeer = {
    end: theirs,
    frames: () => parseFrames(Buffer.concat(received)),
    send: (bytes) => {
      theirs.write(bytes);
    },
    ended: () => ended,
  };
  return { ws, mine, peer };
}

/** Client frames are masked (RFC 6455 section 5.1); server frames are not. */
const fromClient = (opcode: number, payload: string | Uint8Array = "", fin = true) =>
  rawFrame(opcode, payload, { fin, mask: true });
const fromServer = (opcode: number, payload: string | Uint8Array = "", fin = true) =>
  rawFrame(opcode, payload, { fin, mask: false });

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("messages", () => {
  it("delivers text, binary and empty messages in both directions with their type", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    const sent: Array<[string | Uint8Array, boolean]> = [
      ["héllo ✓", false],
      [Buffer.from([0, 1, 2, 255]), true],
      ["", false],
      [Buffer.alloc(0), true],
      [new Uint8Array([9, 8, 7]), true],
    ];
    for (const [data] of sent) {
      expect(client.send(data)).toBe(true);
      expect(server.send(data)).toBe(true);
    }
    await waitUntil(
      () => atServer.messages.length === sent.length && atClient.messages.length === sent.length,
      WAIT,
      "every message on both sides",
    );
    for (const received of [atServer.messages, atClient.messages]) {
      expect(received.map((m) => m.isBinary)).toEqual(sent.map(([, binary]) => binary));
      expect(received.map((m) => m.data)).toEqual(sent.map(([data]) => Buffer.from(data)));
    }
  });

  it("lets options.binary override the type a payload would get", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    client.send("as binary", { binary: true });
    client.send(Buffer.from("as text"), { binary: false });
    await waitUntil(() => atServer.messages.length === 2, WAIT, "two messages");
    expect(atServer.messages).toEqual([
      { data: Buffer.from("as binary"), isBinary: true },
      { data: Buffer.from("as text"), isBinary: false },
    ]);
  });

  it("carries messages that need the 16-bit and 64-bit length forms (section 5.2)", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    const medium = Buffer.alloc(60_000, 0xab);
    const large = Buffer.alloc(300_000);
    for (let i = 0; i < large.length; i++) large[i] = i % 251;
    client.send(medium);
    client.send(large);
    server.send(large);
    await waitUntil(
      () => atServer.messages.length === 2 && atClient.messages.length === 1,
      WAIT,
      "the large messages",
    );
    expect(atServer.messages[0].data.equals(medium)).toBe(true);
    expect(atServer.messages[1].data.equals(large)).toBe(true);
    expect(atClient.messages[0].data.equals(large)).toBe(true);
  });

  it("masks client frames and leaves server frames unmasked (section 5.1)", async () => {
    const asServer = rawPeer("server");
    const asClient = rawPeer("client");
    asServer.ws.send("from server");
    asClient.ws.send("from client");
    await waitUntil(
      () => asServer.peer.frames().length === 1 && asClient.peer.frames().length === 1,
      WAIT,
      "one frame each",
    );
    expect(asServer.peer.frames()[0]).toMatchObject({ masked: false, opcode: Opcode.Text });
    expect(asClient.peer.frames()[0]).toMatchObject({ masked: true, opcode: Opcode.Text });
    expect(asClient.peer.frames()[0].payload.toString()).toBe("from client");
  });

  it("answers a ping with a pong carrying the same payload and reports both", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    expect(client.ping("are you there")).toBe(true);
    await waitUntil(() => atClient.pongs.length === 1, WAIT, "the pong");
    expect(atServer.pings.map(String)).toEqual(["are you there"]);
    expect(atClient.pongs.map(String)).toEqual(["are you there"]);
  });

  it("delivers bytes handed over with the handshake (head) to listeners attached after", async () => {
    const [mine, theirs] = duplexPair();
    const second = fromClient(Opcode.Binary, Buffer.from([1, 2, 3]));
    const head = Buffer.concat([fromClient(Opcode.Text, "in the head"), second.subarray(0, 3)]);
    const ws = track(new WebSocketConnection(mine, { role: "server" }, head));
    // Listeners attached after construction, as a 'connection' handler or `await connect()` does.
    const rec = record(ws);
    theirs.write(second.subarray(3));
    await waitUntil(() => rec.messages.length === 2, WAIT, "both messages");
    expect(rec.messages).toEqual([
      { data: Buffer.from("in the head"), isBinary: false },
      { data: Buffer.from([1, 2, 3]), isBinary: true },
    ]);
  });

  it("refuses control payloads over 125 bytes (section 5.5)", () => {
    const { client } = connectedPair();
    expect(() => client.ping(Buffer.alloc(126))).toThrow(RangeError);
    expect(() => client.pong(Buffer.alloc(126))).toThrow(RangeError);
  });
});

describe("sendStream", () => {
  it("sends one fragmented message: first frame typed, continuations after, FIN on the last", async () => {
    const { ws, peer } = rawPeer("server");
    async function* source() {
      yield "a";
      await sleep(1);
      yield Buffer.from("bb");
      yield "ccc";
    }
    await within(ws.sendStream(source(), { binary: false }), WAIT, "the stream to finish");
    await waitUntil(() => peer.frames().length === 3, WAIT, "three frames");
    expect(peer.frames().map((f) => [f.opcode, f.fin, f.rsv1, f.payload.toString()])).toEqual([
      [Opcode.Text, false, false, "a"],
      [Opcode.Continuation, false, false, "bb"],
      [Opcode.Continuation, true, false, "ccc"],
    ]);
  });

  it("is reassembled by the peer into one message of the right type", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    async function* source() {
      for (let i = 0; i < 5; i++) yield new Uint8Array([i, i]);
    }
    await within(client.sendStream(source(), { binary: true }), WAIT, "the stream");
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the message");
    expect(atServer.messages[0]).toEqual({
      data: Buffer.from([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]),
      isBinary: true,
    });
  });

  it("sends an empty source as one empty final frame", async () => {
    const { ws, peer } = rawPeer("server");
    async function* source(): AsyncGenerator<Uint8Array> {}
    await ws.sendStream(source(), { binary: true });
    await waitUntil(() => peer.frames().length === 1, WAIT, "one frame");
    expect(peer.frames()[0]).toMatchObject({ opcode: Opcode.Binary, fin: true });
    expect(peer.frames()[0].payload.length).toBe(0);
  });

  it("delivers a send() issued during the stream after it, never interleaved (section 5.4)", async () => {
    const { ws, peer } = rawPeer("server");
    const gate = deferred();
    async function* source() {
      yield "one";
      yield "two";
      await gate.promise;
      yield "three";
    }
    const streaming = ws.sendStream(source(), { binary: false });
    await turns(3);
    expect(ws.send("after")).toBe(true);
    expect(ws.send(Buffer.from("after 2"))).toBe(true);
    // Control frames may be injected in the middle of a fragmented message (section 5.4).
    expect(ws.ping("mid")).toBe(true);
    await turns(3);
    gate.resolve();
    await within(streaming, WAIT, "the stream");
    await waitUntil(() => peer.frames().length === 6, WAIT, "six frames");
    expect(peer.frames().map((f) => [f.opcode, f.fin, f.payload.toString()])).toEqual([
      [Opcode.Text, false, "one"],
      [Opcode.Ping, true, "mid"],
      [Opcode.Continuation, false, "two"],
      [Opcode.Continuation, true, "three"],
      [Opcode.Text, true, "after"],
      [Opcode.Binary, true, "after 2"],
    ]);
  });

  it("runs two streams one after the other", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    async function* letters(prefix: string) {
      for (let i = 0; i < 3; i++) {
        await sleep(1);
        yield `${prefix}${i}`;
      }
    }
    await within(
      Promise.all([
        client.sendStream(letters("x"), { binary: false }),
        client.sendStream(letters("y"), { binary: false }),
      ]),
      WAIT,
      "both streams",
    );
    await waitUntil(() => atServer.messages.length === 2, WAIT, "two messages");
    expect(atServer.messages.map((m) => m.data.toString())).toEqual(["x0x1x2", "y0y1y2"]);
  });

  it("closes with 1011 and rejects when the source throws", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    const failure = new Error("source broke");
    async function* source() {
      yield "one";
      yield "two";
      throw failure;
    }
    await expect(within(server.sendStream(source()), WAIT, "the stream")).rejects.toBe(failure);
    const [serverClose, clientClose] = await within(
      Promise.all([atServer.closed, atClient.closed]),
      WAIT,
      "both close events",
    );
    expect(clientClose.code).toBe(1011);
    expect(serverClose.code).toBe(1011);
    expect(atClient.messages).toEqual([]);
    expect(atServer.errors.map((e) => e.code)).toEqual(["WS_ERR_SEND_FAILED"]);
    expect(server.send("late")).toBe(false);
    // Control frames too: they would be written after our end ("write after end").
    expect(server.ping("late")).toBe(false);
    expect(server.pong("late")).toBe(false);
  });

  it("rejects at once on a connection that is not open", async () => {
    const { server } = connectedPair();
    server.close(1000);
    await expect(server.sendStream(["x"])).rejects.toMatchObject({ code: "WS_ERR_SEND_FAILED" });
  });
});

describe("compression (permessage-deflate negotiated)", () => {
  const params: DeflateParams = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
  };
  const deflate = { params, options: { threshold: 16 } };

  /** Inflates one compressed message payload (RFC 7692 section 7.2.2: append 00 00 ff ff). */
  const inflate = (payload: Buffer, context: { inflater: ReturnType<typeof createInflateRaw> }) =>
    new Promise<string>((resolve, reject) => {
      const out: Buffer[] = [];
      const onData = (chunk: Buffer) => out.push(chunk);
      context.inflater.on("data", onData);
      context.inflater.write(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]));
      context.inflater.flush(() => {
        context.inflater.off("data", onData);
        resolve(Buffer.concat(out).toString());
      });
      context.inflater.once("error", reject);
    });

  it("keeps the order of compressed and uncompressed messages", async () => {
    const { server, client } = connectedPair({ deflate }, { deflate });
    const atServer = record(server);
    const big = "abc".repeat(2000);
    const sent = [big, "tiny", Buffer.alloc(5000, 7), "small", `${big}!`];
    for (const data of sent) client.send(data);
    client.send("not compressed though long enough", { compress: false });
    await waitUntil(() => atServer.messages.length === sent.length + 1, WAIT, "every message");
    expect(atServer.messages.map((m) => m.data)).toEqual(
      [...sent, "not compressed though long enough"].map((d) => Buffer.from(d)),
    );
    expect(atServer.messages.map((m) => m.isBinary)).toEqual([
      false,
      false,
      true,
      false,
      false,
      false,
    ]);
  });

  it("sets RSV1 on compressed messages only, and the payload inflates to the message", async () => {
    const { ws, peer } = rawPeer("server", { deflate });
    const inflater = createInflateRaw();
    cleanups.push(() => inflater.close());
    const big = "hello hello hello ".repeat(100);
    ws.send(big);
    ws.send("short");
    ws.send(big, { compress: false });
    await waitUntil(() => peer.frames().length === 3, WAIT, "three frames");
    const frames = peer.frames();
    expect(frames.map((f) => [f.opcode, f.fin, f.rsv1])).toEqual([
      [Opcode.Text, true, true],
      [Opcode.Text, true, false],
      [Opcode.Text, true, false],
    ]);
    expect(frames[0].payload.length).toBeLessThan(Buffer.byteLength(big));
    expect(await inflate(frames[0].payload, { inflater })).toBe(big);
    expect(frames[1].payload.toString()).toBe("short");
    expect(frames[2].payload.toString()).toBe(big);
  });

  it("streams a compressed message the peer reassembles, RSV1 on the first frame only", async () => {
    const { ws, peer } = rawPeer("server", { deflate });
    async function* source() {
      for (let i = 0; i < 3; i++) yield `part ${i} `.repeat(50);
    }
    await within(ws.sendStream(source(), { binary: false }), WAIT, "the stream");
    await waitUntil(() => peer.frames().length === 3, WAIT, "three frames");
    expect(peer.frames().map((f) => [f.opcode, f.fin, f.rsv1])).toEqual([
      [Opcode.Text, false, true],
      [Opcode.Continuation, false, false],
      [Opcode.Continuation, true, false],
    ]);

    const { server, client } = connectedPair({ deflate }, { deflate });
    const atClient = record(client);
    await within(server.sendStream(source(), { binary: false }), WAIT, "the stream");
    await waitUntil(() => atClient.messages.length === 1, WAIT, "the message");
    expect(atClient.messages[0].data.toString()).toBe(
      [0, 1, 2].map((i) => `part ${i} `.repeat(50)).join(""),
    );
  });

  it("delivers a send() issued during a compressed stream after it", async () => {
    const { server, client } = connectedPair({ deflate }, { deflate });
    const atClient = record(client);
    async function* source() {
      yield "x".repeat(100);
      await sleep(2);
      yield "y".repeat(100);
    }
    const streaming = server.sendStream(source(), { binary: false });
    server.send("z".repeat(100));
    await within(streaming, WAIT, "the stream");
    await waitUntil(() => atClient.messages.length === 2, WAIT, "two messages");
    expect(atClient.messages.map((m) => m.data.toString())).toEqual([
      "x".repeat(100) + "y".repeat(100),
      "z".repeat(100),
    ]);
  });
});

describe("corking", () => {
  it("writes everything sent in one synchronous block in one write, frames in order", async () => {
    const { ws, mine, peer } = rawPeer("server");
    const count = 50;
    for (let i = 0; i < count; i++) ws.send(i % 2 === 0 ? `text ${i}` : Buffer.from(`bin ${i}`));
    ws.ping("p");
    expect(mine.writes.length).toBe(0); // nothing leaves before the turn ends
    await turns(2);
    expect(mine.writes.length).toBe(1);
    await waitUntil(() => peer.frames().length === count + 1, WAIT, "every frame");
    const frames = peer.frames();
    for (let i = 0; i < count; i++) {
      expect(frames[i].opcode).toBe(i % 2 === 0 ? Opcode.Text : Opcode.Binary);
      expect(frames[i].payload.toString()).toBe(i % 2 === 0 ? `text ${i}` : `bin ${i}`);
    }
    expect(frames[count].opcode).toBe(Opcode.Ping);
  });

  it("writes large corked output (over 64 KiB) in one write too", async () => {
    const { ws, mine, peer } = rawPeer("server");
    const payloads = [0xa1, 0xb2, 0xc3].map((fill) => Buffer.alloc(40_000, fill));
    for (const payload of payloads) ws.send(payload);
    ws.send("tail");
    await turns(2);
    expect(mine.writes.length).toBe(1);
    await waitUntil(() => peer.frames().length === 4, WAIT, "four frames");
    const frames = peer.frames();
    for (let i = 0; i < 3; i++) expect(frames[i].payload.equals(payloads[i])).toBe(true);
    expect(frames[3].payload.toString()).toBe("tail");
  });

  it("answers pipelined input (many frames in one chunk) with one write", async () => {
    const { ws, mine, peer } = rawPeer("server");
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    const count = 40;
    const chunk = Buffer.concat(
      Array.from({ length: count }, (_, i) =>
        i % 4 === 3 ? fromClient(Opcode.Ping, `ping ${i}`) : fromClient(Opcode.Text, `msg ${i}`),
      ),
    );
    peer.send(chunk);
    await waitUntil(() => peer.frames().length === count, WAIT, "every answer");
    expect(mine.writes.length).toBe(1);
    expect(peer.frames().map((f) => [f.opcode, f.payload.toString()])).toEqual(
      Array.from({ length: count }, (_, i) =>
        i % 4 === 3 ? [Opcode.Pong, `ping ${i}`] : [Opcode.Text, `msg ${i}`],
      ),
    );
  });

  it("gives every connection that sent in the same turn exactly one write", async () => {
    const peers = [rawPeer("server"), rawPeer("server"), rawPeer("server")];
    for (const { ws } of peers) for (let i = 0; i < 10; i++) ws.send(`m${i}`);
    await turns(2);
    expect(peers.map(({ mine }) => mine.writes.length)).toEqual([1, 1, 1]);
  });

  it("uses a new write for each later turn", async () => {
    const { ws, mine } = rawPeer("server");
    ws.send("first");
    ws.send("first again");
    await turns(2);
    ws.send("second");
    await turns(2);
    expect(mine.writes.length).toBe(2);
    expect(parseFrames(mine.writes[1]).map((f) => f.payload.toString())).toEqual(["second"]);
  });
});

describe("backpressure", () => {
  it("counts buffered bytes while the peer does not read, pauses reading, and drains", async () => {
    const { server, client, serverEnd } = connectedPair(
      { highWaterMark: 32 * 1024 },
      {},
      { readableHighWaterMark: 16 * 1024, writableHighWaterMark: 16 * 1024 },
    );
    const atServer = record(server);
    const atClient = record(client);
    client.pause();
    const payload = Buffer.alloc(64 * 1024, 0x5a);
    for (let i = 0; i < 4; i++) server.send(payload);
    await turns(3);
    const first = server.bufferedAmount;
    expect(first).toBeGreaterThan(32 * 1024);
    for (let i = 0; i < 4; i++) server.send(payload);
    await turns(3);
    expect(server.bufferedAmount).toBeGreaterThan(first);
    // Our output is above the high-water mark: we stop reading what the peer sends.
    expect(serverEnd.isPaused()).toBe(true);
    client.send("while you were busy");
    await turns(5);
    expect(atServer.messages).toEqual([]);
    expect(atServer.drains).toBe(0);

    client.resume();
    await waitUntil(() => atServer.drains > 0, WAIT, "drain");
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the peer's message");
    await waitUntil(() => atClient.messages.length === 8, WAIT, "all eight messages");
    expect(server.bufferedAmount).toBe(0);
    expect(serverEnd.isPaused()).toBe(false);
    expect(atServer.messages[0].data.toString()).toBe("while you were busy");
    expect(atClient.messages.every((m) => m.data.equals(payload))).toBe(true);
  });

  it("stops reading while the peer's TCP window is full, over a real loopback socket", async () => {
    const listener = createNetServer();
    listener.listen(0, "127.0.0.1");
    await once(listener, "listening");
    cleanups.push(() => listener.close());
    const port = (listener.address() as { port: number }).port;
    const accepted = once(listener, "connection") as Promise<[Socket]>;
    const clientSocket = netConnect(port, "127.0.0.1");
    await once(clientSocket, "connect");
    const [serverSocket] = await accepted;
    const server = track(
      new WebSocketConnection(serverSocket, { role: "server", highWaterMark: 256 * 1024 }),
    );
    const client = track(new WebSocketConnection(clientSocket, { role: "client" }));
    const atServer = record(server);
    const atClient = record(client);
    client.pause();

    const chunk = Buffer.alloc(256 * 1024, 0x33);
    const target = 2 * 1024 * 1024;
    let sent = 0;
    // The kernel absorbs a few MiB first; stop once that is full and bytes pile up here.
    for (let i = 0; i < 400 && server.bufferedAmount <= target; i++) {
      server.send(chunk);
      sent++;
      await sleep(1);
    }
    expect(server.bufferedAmount).toBeGreaterThan(target);
    expect(serverSocket.isPaused()).toBe(true);
    client.send("hello");
    await sleep(20);
    expect(atServer.messages).toEqual([]);

    client.resume();
    await waitUntil(() => atClient.messages.length === sent, 20_000, "every message");
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the client's message");
    expect(atServer.drains).toBeGreaterThan(0);
    expect(server.bufferedAmount).toBe(0);
    expect(serverSocket.isPaused()).toBe(false);
  });

  it("sees 'drain' when a write returned false and the transport caught up", async () => {
    const { server, client } = connectedPair(
      {},
      {},
      { readableHighWaterMark: 1024, writableHighWaterMark: 1024 },
    );
    const atServer = record(server);
    const atClient = record(client);
    server.send(Buffer.alloc(8 * 1024));
    await waitUntil(() => atServer.drains === 1, WAIT, "drain");
    await waitUntil(() => atClient.messages.length === 1, WAIT, "the message");
    expect(server.bufferedAmount).toBe(0);
  });

  // Regression: with a highWaterMark below the transport's own writable high-water mark, a burst
  // larger than highWaterMark paused reading, the write itself returned true (so no 'drain' was
  // awaited), and nothing ever resumed reading: the peer's messages were never read again.
  it("resumes reading after a burst above highWaterMark that the transport took at once", async () => {
    const { server, client, serverEnd } = connectedPair(
      { highWaterMark: 1024 },
      {},
      { readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 },
    );
    const atServer = record(server);
    const atClient = record(client);
    server.send(Buffer.alloc(4096, 1));
    await waitUntil(() => atClient.messages.length === 1, WAIT, "the burst at the peer");
    await turns(3);
    expect(server.bufferedAmount).toBe(0);
    client.send("are you still reading?");
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the peer's message").catch(
      () => undefined,
    );
    expect(serverEnd.isPaused()).toBe(false);
    expect(atServer.messages.map((m) => m.data.toString())).toEqual(["are you still reading?"]);
  });
});

describe("heartbeat", () => {
  it("keeps a live peer: pings are answered and the connection stays open", async () => {
    const { server, client } = connectedPair({ heartbeat: { interval: 50, timeout: 50 } });
    const atServer = record(server);
    const atClient = record(client);
    await waitUntil(() => atServer.pongs.length >= 3, WAIT, "three pongs");
    expect(atClient.pings.length).toBeGreaterThanOrEqual(3);
    expect(server.readyState).toBe("open");
    expect(client.readyState).toBe("open");
    expect(atServer.errors).toEqual([]);
    expect(atServer.closes).toEqual([]);
  });

  it("drops a peer that never answers: error WS_ERR_HEARTBEAT_TIMEOUT, close 1006", async () => {
    const { ws, peer } = rawPeer(
      "server",
      { heartbeat: { interval: 50, timeout: 50 } },
      {
        swallow: true,
      },
    );
    const rec = record(ws);
    const closed = await within(rec.closed, WAIT, "the close event");
    expect(closed.code).toBe(1006);
    expect(rec.errors.map((e) => e.code)).toEqual(["WS_ERR_HEARTBEAT_TIMEOUT"]);
    expect(ws.readyState).toBe("closed");
    expect(peer.frames().some((f) => f.opcode === Opcode.Ping)).toBe(true);
    await turns(3);
    expect(rec.closes.length).toBe(1);
  });

  it("drops a silent peer even with nobody listening for 'error'", async () => {
    const { ws } = rawPeer(
      "client",
      { heartbeat: { interval: 30, timeout: 30 } },
      {
        swallow: true,
      },
    );
    const rec = record(ws, { errors: false });
    expect((await within(rec.closed, WAIT, "the close event")).code).toBe(1006);
  });
});

describe("close timeout", () => {
  // Regression: close() left the heartbeat running, and pongs are ignored once our close frame
  // is out, so a ping in flight when close() was called destroyed the connection after the
  // heartbeat timeout (reported as WS_ERR_HEARTBEAT_TIMEOUT) instead of giving the peer the
  // closeTimeout it was promised.
  it("stops the heartbeat on close(): a slow peer gets the whole closeTimeout", async () => {
    const { ws, peer } = rawPeer(
      "server",
      { heartbeat: { interval: 20, timeout: 40 }, closeTimeout: 300 },
      { swallow: true },
    );
    const rec = record(ws);
    await waitUntil(
      () => peer.frames().some((f) => f.opcode === Opcode.Ping),
      WAIT,
      "a heartbeat ping",
    );
    ws.close(1000);
    await within(rec.closed, WAIT, "the close event");
    expect(rec.errors.map((e) => e.code)).toEqual(["WS_ERR_CLOSE_TIMEOUT"]);
  });

  it("destroys the socket when the peer never answers our close frame", async () => {
    const { ws, mine, peer } = rawPeer("server", { closeTimeout: 50 }, { swallow: true });
    const rec = record(ws);
    ws.close(1000, "bye");
    expect(ws.readyState).toBe("closing");
    const closed = await within(rec.closed, WAIT, "the close event");
    expect(closed.code).toBe(1006);
    expect(rec.errors.map((e) => e.code)).toEqual(["WS_ERR_CLOSE_TIMEOUT"]);
    expect(mine.destroyed).toBe(true);
    const frames = peer.frames();
    expect(frames.map((f) => f.opcode)).toEqual([Opcode.Close]);
    expect(frames[0].payload).toEqual(closePayload(1000, "bye"));
  });

  it("gives up on a server that answered the close frame but never closes TCP", async () => {
    const { ws, mine, peer } = rawPeer("client", { closeTimeout: 50 }, { swallow: true });
    const rec = record(ws);
    ws.close(4000, "done");
    await waitUntil(() => peer.frames().length === 1, WAIT, "our close frame");
    peer.send(fromServer(Opcode.Close, closePayload(4000)));
    const closed = await within(rec.closed, WAIT, "the close event");
    // The closing handshake itself completed: the code is the one received (section 7.1.5).
    expect(closed.code).toBe(4000);
    expect(rec.errors.map((e) => e.code)).toEqual(["WS_ERR_CLOSE_TIMEOUT"]);
    expect(mine.destroyed).toBe(true);
  });
});

describe("closing handshake", () => {
  it("sends messages still compressing before its reply to the peer's close (5.5.1)", async () => {
    const deflate = {
      params: {
        serverNoContextTakeover: false,
        clientNoContextTakeover: false,
        serverMaxWindowBits: 15,
        clientMaxWindowBits: 15,
      },
    };
    const { server, client } = connectedPair({ deflate }, { deflate });
    // An echo server: each reply is compressed asynchronously.
    server.on("message", (data: Buffer, isBinary: boolean) =>
      server.send(data, { binary: isBinary }),
    );
    const atServer = record(server);
    const atClient = record(client);
    const sent = Array.from({ length: 5 }, (_, i) => `${i} ${"echo me, compressed. ".repeat(120)}`);
    for (const text of sent) client.send(text);
    client.close(1000, "done");
    const [serverClose, clientClose] = await within(
      Promise.all([atServer.closed, atClient.closed]),
      WAIT,
      "both close events",
    );
    // Every echo arrived before the close reply, in order.
    expect(atClient.messages.map((m) => m.data.toString())).toEqual(sent);
    expect(serverClose).toEqual({ code: 1000, reason: "done" });
    expect(clientClose.code).toBe(1000);
    expect(atServer.errors).toEqual([]);
    expect(atClient.errors).toEqual([]);
  });

  it("client-initiated: codes and reasons on both sides, one close event each", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    expect(client.readyState).toBe("open");
    client.close(4001, "client says bye");
    expect(client.readyState).toBe("closing");
    const [serverClose, clientClose] = await within(
      Promise.all([atServer.closed, atClient.closed]),
      WAIT,
      "both close events",
    );
    expect(serverClose).toEqual({ code: 4001, reason: "client says bye" });
    // The server echoes the code (section 5.5.1); the reason is not repeated.
    expect(clientClose.code).toBe(4001);
    expect(server.readyState).toBe("closed");
    expect(client.readyState).toBe("closed");
    await turns(5);
    expect(atServer.closes.length).toBe(1);
    expect(atClient.closes.length).toBe(1);
    expect(atServer.errors).toEqual([]);
    expect(atClient.errors).toEqual([]);
  });

  it("ends each side of the transport once: the FIN that answers ours asks nothing more", async () => {
    // Once our FIN is out, the peer's FIN ends the closing handshake; a second end() on the
    // finished socket would make node build (and drop) an error with a stack trace, per
    // connection.
    const { server, client, serverEnd, clientEnd } = connectedPair();
    const ends = { server: 0, client: 0 };
    const count = (end: PairEnd, side: keyof typeof ends) => {
      const original = end.end.bind(end);
      end.end = ((...args: Parameters<PairEnd["end"]>) => {
        ends[side]++;
        return original(...args);
      }) as PairEnd["end"];
    };
    count(serverEnd, "server");
    count(clientEnd, "client");
    const atServer = record(server);
    const atClient = record(client);
    client.close(1000, "done");
    await within(Promise.all([atServer.closed, atClient.closed]), WAIT, "both close events");
    await turns(5);
    expect(ends).toEqual({ server: 1, client: 1 });
    expect(serverEnd.writableEnded && clientEnd.writableEnded).toBe(true);
    expect(atServer.errors).toEqual([]);
    expect(atClient.errors).toEqual([]);
  });

  it("server-initiated: codes and reasons on both sides, one close event each", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    server.close(1001, "server going away – ✓");
    expect(server.readyState).toBe("closing");
    const [serverClose, clientClose] = await within(
      Promise.all([atServer.closed, atClient.closed]),
      WAIT,
      "both close events",
    );
    expect(clientClose).toEqual({ code: 1001, reason: "server going away – ✓" });
    expect(serverClose.code).toBe(1001);
    expect(server.readyState).toBe("closed");
    expect(client.readyState).toBe("closed");
    await turns(5);
    expect(atServer.closes.length).toBe(1);
    expect(atClient.closes.length).toBe(1);
  });

  it("closes a server's transport once its close reply and FIN are written (section 7.1.1)", async () => {
    // A peer that never sends its FIN: the server does not wait for it after a clean handshake.
    const { ws, peer } = rawPeer("server", {}, { swallow: true });
    const rec = record(ws);
    peer.send(fromClient(Opcode.Close, closePayload(1000)));
    expect(await within(rec.closed, WAIT, "the close event")).toEqual({ code: 1000, reason: "" });
    expect(ws.readyState).toBe("closed");
    await waitUntil(() => peer.ended(), WAIT, "the server's FIN");
    expect(peer.frames().map((f) => [f.opcode, f.payload])).toEqual([
      [Opcode.Close, closePayload(1000)],
    ]);
  });

  it("closes a server's transport at once when the peer answers the server's close", async () => {
    const { ws, peer } = rawPeer("server", {}, { swallow: true });
    const rec = record(ws);
    ws.close(4000, "done");
    await waitUntil(() => peer.frames().length === 1, WAIT, "the close frame");
    expect(ws.readyState).toBe("closing");
    peer.send(fromClient(Opcode.Close, closePayload(4000)));
    expect(await within(rec.closed, WAIT, "the close event")).toEqual({ code: 4000, reason: "" });
    await waitUntil(() => peer.ended(), WAIT, "the server's FIN");
  });

  it("waits for the peer's FIN after failing the connection, so its late bytes meet no reset", async () => {
    const { ws, peer } = rawPeer("server", {}, { swallow: true });
    const rec = record(ws, { errors: false });
    peer.send(fromClient(0x3, "reserved opcode"));
    await waitUntil(() => peer.ended(), WAIT, "the server to half-close");
    expect(peer.frames().map((f) => f.opcode)).toEqual([Opcode.Close]);
    await turns(5);
    expect(ws.readyState).toBe("closing");
    expect(rec.closes).toEqual([]);
    peer.end.end();
    // No close frame came from the peer: 1006 (section 7.1.5).
    expect((await within(rec.closed, WAIT, "the close event")).code).toBe(1006);
  });

  it("reports a client as closing until the server closes the transport", async () => {
    const { ws, peer } = rawPeer("client", {}, { swallow: true });
    const rec = record(ws);
    peer.send(fromServer(Opcode.Close, closePayload(1000)));
    // The client answers and waits for the server to close TCP first (section 7.1.1).
    await waitUntil(() => peer.frames().length === 1, WAIT, "the client's close reply");
    expect(peer.frames().map((f) => f.opcode)).toEqual([Opcode.Close]);
    await turns(5);
    expect(peer.ended()).toBe(false);
    expect(ws.readyState).toBe("closing");
    expect(ws.send("too late")).toBe(false);
    expect(rec.closes).toEqual([]);
    peer.end.end();
    expect(await within(rec.closed, WAIT, "the close event")).toEqual({ code: 1000, reason: "" });
    expect(ws.readyState).toBe("closed");
  });

  it("sends an empty close frame for close() without a code; both see 1005", async () => {
    const { ws, peer } = rawPeer("server");
    const rec = record(ws);
    ws.close();
    await waitUntil(() => peer.frames().length === 1, WAIT, "the close frame");
    expect(peer.frames()[0]).toMatchObject({ opcode: Opcode.Close });
    expect(peer.frames()[0].payload.length).toBe(0);
    peer.send(fromClient(Opcode.Close));
    expect((await within(rec.closed, WAIT, "the close event")).code).toBe(1005);
  });

  it("throws RangeError synchronously for codes that may not be sent (section 7.4)", () => {
    const { server } = connectedPair();
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 1000.5]) {
      expect(() => server.close(code), `close(${code})`).toThrow(RangeError);
    }
    expect(() => server.close(1000, "x".repeat(124))).toThrow(RangeError);
    expect(() => server.close(undefined, "reason without a code")).toThrow(TypeError);
    // None of those started closing.
    expect(server.readyState).toBe("open");
    expect(server.send("still open")).toBe(true);
  });

  it("accepts a 123-byte reason, the longest that fits (section 5.5)", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const reason = `${"é".repeat(61)}x`;
    expect(Buffer.byteLength(reason)).toBe(123);
    client.close(3000, reason);
    expect(await within(atServer.closed, WAIT, "the close event")).toEqual({ code: 3000, reason });
  });

  it("returns false from send, ping and pong after close", () => {
    const { server } = connectedPair();
    server.close(1000);
    expect(server.send("x")).toBe(false);
    expect(server.send(Buffer.from("x"))).toBe(false);
    expect(server.ping()).toBe(false);
    expect(server.pong()).toBe(false);
  });

  it("sends one close frame however often close() is called", async () => {
    const { ws, peer } = rawPeer("server");
    ws.close(1000, "first");
    ws.close(1001, "second");
    ws.close();
    await turns(3);
    const closes = peer.frames().filter((f) => f.opcode === Opcode.Close);
    expect(closes.map((f) => f.payload)).toEqual([closePayload(1000, "first")]);
  });

  it("delivers messages sent before close() ahead of the close frame", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    for (let i = 0; i < 5; i++) client.send(`m${i}`);
    client.close(1000);
    await within(atServer.closed, WAIT, "the close event");
    expect(atServer.messages.map((m) => m.data.toString())).toEqual(["m0", "m1", "m2", "m3", "m4"]);
  });

  it("queues close() behind a running stream", async () => {
    const { ws, peer } = rawPeer("server");
    const gate = deferred();
    async function* source() {
      yield "a";
      await gate.promise;
      yield "b";
    }
    const streaming = ws.sendStream(source(), { binary: false });
    await turns(2);
    ws.close(1000);
    gate.resolve();
    await within(streaming, WAIT, "the stream");
    await waitUntil(() => peer.frames().length === 3, WAIT, "three frames");
    expect(peer.frames().map((f) => [f.opcode, f.fin])).toEqual([
      [Opcode.Text, false],
      [Opcode.Continuation, true],
      [Opcode.Close, true],
    ]);
  });

  it("completes when both sides close at the same time", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    server.close(4010, "s");
    client.close(4020, "c");
    const [serverClose, clientClose] = await within(
      Promise.all([atServer.closed, atClient.closed]),
      WAIT,
      "both close events",
    );
    expect(serverClose).toEqual({ code: 4020, reason: "c" });
    expect(clientClose).toEqual({ code: 4010, reason: "s" });
  });

  // Regression: terminate() only destroys the socket, and the connection counts as closed once
  // the socket's 'close' event arrives later, so right after terminate() readyState still said
  // "open" and send() returned true for a message that was silently dropped.
  it("is no longer open right after terminate(): send() returns false", () => {
    const { server } = connectedPair();
    server.terminate();
    expect(server.readyState).not.toBe("open");
    expect(server.send("dropped")).toBe(false);
  });

  // Regression: the sender's queue was emptied without settling the streams waiting in it, so a
  // sendStream() queued behind a running one never settled when the connection went away.
  it("settles a queued sendStream() when the connection is terminated", async () => {
    const { server } = connectedPair();
    const gate = deferred();
    async function* slow() {
      yield "a";
      await gate.promise;
      yield "b";
    }
    const running = server.sendStream(slow());
    const queued = server.sendStream(["waiting its turn"]);
    await turns(2);
    server.terminate();
    gate.resolve();
    await within(Promise.allSettled([running]), WAIT, "the running stream to settle");
    const outcome = await within(
      queued.then(
        () => "resolved",
        () => "rejected",
      ),
      500,
      "the queued stream to settle",
    ).catch(() => "pending");
    expect(outcome).toBe("rejected");
  });

  it("terminate() drops the connection: 1006 on both sides", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    client.terminate();
    const [serverClose, clientClose] = await within(
      Promise.all([atServer.closed, atClient.closed]),
      WAIT,
      "both close events",
    );
    expect(serverClose.code).toBe(1006);
    expect(clientClose.code).toBe(1006);
    expect(atClient.closes.length).toBe(1);
  });
});

describe("protocol errors", () => {
  const cases: Array<{
    name: string;
    role: "server" | "client";
    bytes: Buffer;
    code: string;
    closeCode: number;
    options?: Partial<ConnectionOptions>;
  }> = [
    {
      name: "an unmasked client frame",
      role: "server",
      bytes: fromServer(Opcode.Text, "hi"),
      code: "WS_ERR_UNMASKED_FRAME",
      closeCode: 1002,
    },
    {
      name: "a masked server frame",
      role: "client",
      bytes: fromClient(Opcode.Text, "hi"),
      code: "WS_ERR_MASKED_FRAME",
      closeCode: 1002,
    },
    {
      name: "RSV2 set",
      role: "server",
      bytes: rawFrame(Opcode.Text, "hi", { rsv2: true }),
      code: "WS_ERR_RESERVED_BITS",
      closeCode: 1002,
    },
    {
      name: "RSV1 without a negotiated extension",
      role: "server",
      bytes: rawFrame(Opcode.Text, "hi", { rsv1: true }),
      code: "WS_ERR_RESERVED_BITS",
      closeCode: 1002,
    },
    {
      name: "a reserved opcode",
      role: "server",
      bytes: fromClient(0x3, "?"),
      code: "WS_ERR_RESERVED_OPCODE",
      closeCode: 1002,
    },
    {
      name: "a control frame over 125 bytes",
      role: "server",
      bytes: fromClient(Opcode.Ping, Buffer.alloc(126)),
      code: "WS_ERR_CONTROL_TOO_LONG",
      closeCode: 1002,
    },
    {
      name: "a fragmented ping",
      role: "server",
      bytes: fromClient(Opcode.Ping, "p", false),
      code: "WS_ERR_CONTROL_FRAGMENTED",
      closeCode: 1002,
    },
    {
      name: "a continuation without a message",
      role: "server",
      bytes: fromClient(Opcode.Continuation, "x"),
      code: "WS_ERR_UNEXPECTED_CONTINUATION",
      closeCode: 1002,
    },
    {
      name: "a new message inside a fragmented one",
      role: "server",
      bytes: Buffer.concat([fromClient(Opcode.Text, "a", false), fromClient(Opcode.Text, "b")]),
      code: "WS_ERR_EXPECTED_CONTINUATION",
      closeCode: 1002,
    },
    {
      name: "invalid UTF-8 in a text message",
      role: "server",
      bytes: fromClient(Opcode.Text, Buffer.from([0x68, 0xc3, 0x28])),
      code: "WS_ERR_INVALID_UTF8",
      closeCode: 1007,
    },
    {
      name: "a close frame with code 1005",
      role: "server",
      bytes: fromClient(Opcode.Close, closePayload(1005)),
      code: "WS_ERR_INVALID_CLOSE_CODE",
      closeCode: 1002,
    },
    {
      name: "a one-byte close payload",
      role: "server",
      bytes: fromClient(Opcode.Close, Buffer.from([3])),
      code: "WS_ERR_INVALID_CLOSE_PAYLOAD",
      closeCode: 1002,
    },
    {
      name: "a message over maxMessageSize",
      role: "server",
      bytes: fromClient(Opcode.Binary, Buffer.alloc(101)),
      code: "WS_ERR_MESSAGE_TOO_BIG",
      closeCode: 1009,
      options: { maxMessageSize: 100 },
    },
    {
      name: "more fragments than maxFragments",
      role: "client",
      bytes: Buffer.concat([
        fromServer(Opcode.Text, "a", false),
        fromServer(Opcode.Continuation, "b", false),
        fromServer(Opcode.Continuation, "c", false),
      ]),
      code: "WS_ERR_TOO_MANY_FRAGMENTS",
      closeCode: 1009,
      options: { maxFragments: 2 },
    },
  ];

  for (const c of cases) {
    it(`${c.name}: close ${c.closeCode}, error ${c.code}`, async () => {
      const { ws, peer } = rawPeer(c.role, c.options ?? {});
      const rec = record(ws);
      peer.send(c.bytes);
      const closed = await within(rec.closed, WAIT, "the close event");
      // The peer sent no close frame of its own (section 7.1.5).
      expect(closed.code).toBe(1006);
      expect(rec.errors.map((e) => [e.code, e.closeCode])).toEqual([[c.code, c.closeCode]]);
      expect(rec.messages).toEqual([]);
      const closes = peer.frames().filter((f) => f.opcode === Opcode.Close);
      expect(closes.length).toBe(1);
      expect(closes[0].payload.readUInt16BE(0)).toBe(c.closeCode);
      expect(peer.ended()).toBe(true);
    });
  }

  it("fails the connection the same way with nobody listening for 'error', without throwing", async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    try {
      const { ws, peer } = rawPeer("server");
      const rec = record(ws, { errors: false });
      peer.send(fromClient(Opcode.Text, Buffer.from([0xff])));
      expect((await within(rec.closed, WAIT, "the close event")).code).toBe(1006);
      const closes = peer.frames().filter((f) => f.opcode === Opcode.Close);
      expect(closes[0].payload.readUInt16BE(0)).toBe(1007);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    expect(uncaught).toEqual([]);
  });

  it("answers the peer's valid close after a message that was fine", async () => {
    const { ws, peer } = rawPeer("server");
    const rec = record(ws);
    peer.send(
      Buffer.concat([fromClient(Opcode.Text, "ok"), fromClient(Opcode.Close, closePayload(1000))]),
    );
    expect(await within(rec.closed, WAIT, "the close event")).toEqual({ code: 1000, reason: "" });
    expect(rec.messages.map((m) => m.data.toString())).toEqual(["ok"]);
    expect(rec.errors).toEqual([]);
    // The server closes at once after the handshake; the bytes reach the peer after that.
    await waitUntil(() => peer.ended(), WAIT, "the server's FIN");
    expect(peer.frames().map((f) => [f.opcode, f.payload])).toEqual([
      [Opcode.Close, closePayload(1000)],
    ]);
  });
});

describe("transport errors", () => {
  function destroyWithError(end: Duplex): void {
    end.destroy(Object.assign(new Error("connection reset by test"), { code: "EPIPE" }));
  }

  it("reports a socket error as WS_ERR_TRANSPORT and closes with 1006", async () => {
    const { server, client, serverEnd } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    destroyWithError(serverEnd);
    const closed = await within(atServer.closed, WAIT, "the close event");
    expect(closed.code).toBe(1006);
    expect(atServer.errors.map((e) => e.code)).toEqual(["WS_ERR_TRANSPORT"]);
    expect((atServer.errors[0].cause as Error).message).toBe("connection reset by test");
    expect((await within(atClient.closed, WAIT, "the peer's close event")).code).toBe(1006);
  });

  it("never turns a socket error into an uncaught exception when nobody listens", async () => {
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    try {
      const { server, serverEnd } = connectedPair();
      const rec = record(server, { errors: false });
      destroyWithError(serverEnd);
      expect((await within(rec.closed, WAIT, "the close event")).code).toBe(1006);
      await turns(3);
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    expect(uncaught).toEqual([]);
  });

  it("drops what was queued when the transport dies, and says so through send()", async () => {
    const { server, serverEnd } = connectedPair();
    const rec = record(server);
    server.send("never leaves");
    destroyWithError(serverEnd);
    await within(rec.closed, WAIT, "the close event");
    expect(serverEnd.writes).toEqual([]);
    expect(server.send("after")).toBe(false);
    expect(server.readyState).toBe("closed");
  });
});

describe("a listener that throws", () => {
  it("closes that connection with 1011 and reports WS_ERR_LISTENER_FAILED, never unwinding", async () => {
    const { ws, peer } = rawPeer("server");
    const rec = record(ws);
    ws.on("message", (data) => {
      if (data.toString() === "boom") throw new Error("handler bug");
    });
    // Three frames in one read: the throw on the second must not lose the third.
    peer.send(
      Buffer.concat([
        fromClient(Opcode.Text, "before"),
        fromClient(Opcode.Text, "boom"),
        fromClient(Opcode.Text, "after"),
      ]),
    );
    await waitUntil(() => rec.errors.length === 1, WAIT, "the listener failure");
    expect(rec.errors[0].code).toBe("WS_ERR_LISTENER_FAILED");
    expect((rec.errors[0].cause as Error).message).toBe("handler bug");
    expect(rec.messages.map((m) => m.data.toString())).toEqual(["before", "boom", "after"]);
    await waitUntil(() => peer.frames().some((f) => f.opcode === Opcode.Close), WAIT, "a close");
    const close = peer.frames().find((f) => f.opcode === Opcode.Close)!;
    expect(close.payload.readUInt16BE(0)).toBe(1011);
  });

  it("becomes a process warning when nobody listens for 'error'", async () => {
    const { ws, peer } = rawPeer("server");
    const rec = record(ws, { errors: false });
    ws.on("ping", () => {
      throw new Error("ping handler bug");
    });
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on("warning", onWarning);
    cleanups.push(() => process.off("warning", onWarning));
    peer.send(fromClient(Opcode.Ping, "hi"));
    await waitUntil(() => warnings.length === 1, WAIT, "the warning");
    expect((warnings[0] as Error & { code?: string }).code).toBe("WS_ERR_LISTENER_FAILED");
    expect(rec.pings).toHaveLength(1);
    await waitUntil(() => peer.frames().some((f) => f.opcode === Opcode.Close), WAIT, "a close");
  });
});

// Regressions found by long fuzzing runs.
describe("fuzzing regressions", () => {
  const deflateParams: DeflateParams = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
  };

  // Reading paused for backpressure only resumed on 'drain', which node emits only after a
  // write that returned false; below the socket's own high-water mark a write returns true and
  // may still finish late, so the connection never read again.
  it("resumes reading when a write that returned true finishes late", async () => {
    const { server, client } = connectedPair(
      {},
      { highWaterMark: 100 },
      { readableHighWaterMark: 64 },
    );
    const atClient = record(client);
    const atServer = record(server);
    server.pause();
    expect(client.send(Buffer.alloc(500))).toBe(true);
    await sleep(20);
    server.resume();
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the 500-byte message");
    server.send("hello");
    server.close(1000);
    await waitUntil(() => atClient.messages.length === 1, WAIT, "the server's message");
    expect(atClient.messages[0].data.toString()).toBe("hello");
    expect(await within(atClient.closed, WAIT, "the client's close")).toEqual({
      code: 1000,
      reason: "",
    });
  });

  // sendStream() resolved although the peer's close cut the message short.
  it("rejects sendStream with WS_ERR_SEND_FAILED when the peer's close cuts the message", async () => {
    const { server, client } = connectedPair();
    const atServer = record(server);
    const atClient = record(client);
    async function* source() {
      yield "part1-";
      yield "part2-";
      for (let i = 0; i < 10_000 && client.readyState === "open"; i++) await turns(1);
      yield "part3";
    }
    const sending = client.sendStream(source(), { binary: false });
    server.close(1000, "bye");
    await expect(sending).rejects.toMatchObject({ code: "WS_ERR_SEND_FAILED" });
    await within(atServer.closed, WAIT, "the server's close");
    expect(atServer.messages).toEqual([]);
    expect(atClient.errors).toEqual([]);
  });

  // A compression still running when the socket closed reported 'error' after 'close'.
  it("emits nothing after close when the socket closes during a compression", async () => {
    const { client } = connectedPair(
      { deflate: { params: deflateParams, options: { threshold: 0 } } },
      { deflate: { params: deflateParams, options: { threshold: 0 } } },
    );
    const events: string[] = [];
    client.on("error", (error) => events.push(`error ${error.code}`));
    client.on("close", (code) => events.push(`close ${code}`));
    expect(client.send("hello")).toBe(true);
    client.terminate();
    await waitUntil(() => events.length > 0, WAIT, "the close event");
    await sleep(50);
    expect(events).toEqual(["close 1006"]);
  });

  // Node emits 'end' after the last chunk even while the 'data' listener has paused the stream,
  // so the FIN was handled while the core was still inflating: the reply to the close frame held
  // behind the compressed message was written after our end, and the close came out as 1006.
  it("waits for an inflation before handling a FIN read in the same chunk", async () => {
    const listener = createNetServer();
    listener.listen(0, "127.0.0.1");
    await once(listener, "listening");
    cleanups.push(() => listener.close());
    const port = (listener.address() as { port: number }).port;
    const accepted = once(listener, "connection") as Promise<[Socket]>;
    const clientSocket = netConnect(port, "127.0.0.1");
    await once(clientSocket, "connect");
    const [raw] = await accepted;
    cleanups.push(() => raw.destroy());
    const fromClient: Buffer[] = [];
    raw.on("data", (chunk: Buffer) => fromClient.push(chunk));
    const rawEnded = once(raw, "end");
    const ws = track(
      new WebSocketConnection(clientSocket, {
        role: "client",
        deflate: { params: deflateParams, options: { threshold: 0 } },
      }),
    );
    const atClient = record(ws);
    ws.pause();
    const text = "compressed words ".repeat(200);
    const compressed = deflateRawSync(Buffer.from(text), {
      finishFlush: zlibConstants.Z_SYNC_FLUSH,
    }).subarray(0, -4);
    raw.end(
      Buffer.concat([
        rawFrame(Opcode.Text, compressed, { rsv1: true, mask: false }),
        rawFrame(Opcode.Close, closePayload(4001, "done"), { mask: false }),
      ]),
    );
    await sleep(20);
    ws.resume();
    expect(await within(atClient.closed, WAIT, "the client's close")).toEqual({
      code: 4001,
      reason: "done",
    });
    expect(atClient.messages.map((m) => m.data.toString())).toEqual([text]);
    expect(atClient.errors).toEqual([]);
    // The close frame was answered before our side ended.
    await within(rawEnded, WAIT, "the client's FIN");
    const replies = parseFrames(Buffer.concat(fromClient)).filter((f) => f.opcode === Opcode.Close);
    expect(replies.map((f) => f.payload.readUInt16BE(0))).toEqual([4001]);
  });

  // After the peer's FIN the connection still accepted sends, which then failed with
  // "write after end".
  it("stops accepting sends once the peer half-closed", async () => {
    const [serverEnd, clientEnd] = duplexPair();
    const server = track(new WebSocketConnection(serverEnd, { role: "server", closeTimeout: 100 }));
    const client = track(new WebSocketConnection(clientEnd, { role: "client" }));
    const atServer = record(server);
    client.pause();
    server.send(Buffer.alloc(100_000));
    await sleep(10);
    clientEnd.end();
    await waitUntil(() => serverEnd.writableEnded, WAIT, "the server to end its side");
    expect(server.readyState).not.toBe("open");
    expect(server.send("late")).toBe(false);
    client.terminate();
    // The output queued for the departed peer never drains; the close timeout ends the wait.
    expect(await within(atServer.closed, WAIT, "the server's close")).toEqual({
      code: 1006,
      reason: "",
    });
    expect(atServer.errors.map((error) => error.code)).toEqual(["WS_ERR_CLOSE_TIMEOUT"]);
  });
});
