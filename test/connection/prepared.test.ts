// PreparedMessage and WebSocketConnection#sendPrepared: a message framed (and, where RFC 7692
// section 7.1.1.1 allows, compressed) once and written as the same bytes to many connections,
// in order with send() and sendStream(), corked, and counted like send().
import { once } from "node:events";
import zlib from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { connect } from "../../src/client/connect.js";
import { type ConnectionOptions, WebSocketConnection } from "../../src/connection/connection.js";
import { PreparedMessage } from "../../src/connection/prepared.js";
import { PreparedBatch } from "../../src/connection/prepared-batch.js";
import { Opcode } from "../../src/protocol/constants.js";
import type { DeflateParams } from "../../src/protocol/permessage-deflate.js";
import { createServer, type WebSocketServer } from "../../src/server/server.js";
import {
  duplexPair,
  type PairOptions,
  parseFrames,
  turns,
  waitUntil,
  within,
} from "./duplex-pair.js";

const WAIT = 10_000;
const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

const cleanups: Array<() => void | Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Received {
  messages: Array<{ data: Buffer; isBinary: boolean }>;
  errors: Error[];
  closes: number[];
}

function record(ws: WebSocketConnection): Received {
  const rec: Received = { messages: [], errors: [], closes: [] };
  ws.on("message", (data, isBinary) => rec.messages.push({ data: Buffer.from(data), isBinary }));
  ws.on("error", (error) => rec.errors.push(error));
  ws.on("close", (code) => rec.closes.push(code));
  return rec;
}

/** A server-role and a client-role connection joined in memory. */
function connectedPair(
  serverOptions: Partial<ConnectionOptions> = {},
  clientOptions: Partial<ConnectionOptions> = {},
  pairOptions: PairOptions = {},
) {
  const [serverEnd, clientEnd] = duplexPair(pairOptions);
  const server = new WebSocketConnection(serverEnd, { role: "server", ...serverOptions });
  const client = new WebSocketConnection(clientEnd, { role: "client", ...clientOptions });
  cleanups.push(() => {
    server.terminate();
    client.terminate();
  });
  return {
    server,
    client,
    serverEnd,
    clientEnd,
    atServer: record(server),
    atClient: record(client),
  };
}

/** A server-role connection whose peer is raw bytes: what it writes is read back as frames. */
function rawPeer(options: Partial<ConnectionOptions> = {}) {
  const [mine, theirs] = duplexPair();
  const ws = new WebSocketConnection(mine, { role: "server", ...options });
  const errors: Error[] = [];
  ws.on("error", (error) => errors.push(error));
  const received: Buffer[] = [];
  theirs.on("data", (chunk: Buffer) => received.push(chunk));
  theirs.on("end", () => theirs.end());
  cleanups.push(() => {
    ws.terminate();
    theirs.destroy();
  });
  return { ws, mine, errors, frames: () => parseFrames(Buffer.concat(received)) };
}

function deflateParams(overrides: Partial<DeflateParams> = {}): DeflateParams {
  return {
    serverNoContextTakeover: true,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
    ...overrides,
  };
}

function deflate(params: Partial<DeflateParams> = {}, threshold = 64) {
  return { params: deflateParams(params), options: { threshold } };
}

/**
 * What a peer does with a compressed message (RFC 7692 section 7.2.2). The small output chunk
 * makes zlib hold to the window: a distance past it fails instead of reaching into output that
 * happens to be in the same buffer.
 */
function inflate(payload: Buffer, windowBits = 15): Buffer {
  return zlib.inflateRawSync(Buffer.concat([payload, TRAILER]), {
    windowBits,
    chunkSize: 64,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
}

type Message = { data: Buffer; isBinary: boolean };

/** Compares messages with Buffer#equals: deep equality walks large buffers byte by byte. */
function expectMessages(received: Message[], expected: Message[]): void {
  expect(received.map((m) => [m.data.length, m.isBinary])).toEqual(
    expected.map((m) => [m.data.length, m.isBinary]),
  );
  received.forEach((m, i) => {
    expect(m.data.equals(expected[i].data), `message ${i}`).toBe(true);
  });
}

function expectedOf(messages: PreparedMessage[]): Message[] {
  return messages.map((m) => ({ data: Buffer.from(m.payload), isBinary: m.binary }));
}

/** Text that compresses well. */
function compressible(size: number, seed = 0): string {
  const words = ["topic", "fan", "out", "frame", "once", "every", "subscriber", "bytes"];
  let text = "";
  for (let n = 0; text.length < size; n++) text += `${words[(n * 5 + seed) % words.length]} `;
  return text.slice(0, size);
}

/**
 * Bytes whose only redundancy lies `distance` bytes back: compressing them with a smaller window
 * cannot use it, and inflating a larger-window compression with a smaller window fails.
 */
function farRepeat(distance: number): Buffer {
  const block = noise(distance);
  return Buffer.concat([block, block]);
}

/** Bytes zlib cannot shrink (a fixed pseudo-random sequence). */
function noise(length: number, seed = 12345): Buffer {
  const out = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    out[i] = x >>> 16;
  }
  return out;
}

function bytes(length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + 7) & 0xff;
  return out;
}

describe("PreparedMessage frames", () => {
  const lengths = [0, 1, 125, 126, 65_535, 65_536, 70_000];

  for (const length of lengths) {
    it(`frames a ${length}-byte binary message once, unmasked, FIN set, no RSV1`, () => {
      const payload = bytes(length);
      const prepared = new PreparedMessage(payload, true);
      const frame = prepared.frame();
      expect(prepared.frame()).toBe(frame);
      const headerSize = length < 126 ? 2 : length < 65_536 ? 4 : 10;
      expect(frame.length).toBe(headerSize + length);
      const [decoded, ...rest] = parseFrames(frame);
      expect(rest).toEqual([]);
      expect(decoded).toMatchObject({
        fin: true,
        rsv1: false,
        opcode: Opcode.Binary,
        masked: false,
      });
      expect(decoded.payload.equals(payload)).toBe(true);
    });
  }

  it("sends strings as text and bytes as binary unless told otherwise", () => {
    const opcode = (prepared: PreparedMessage) => parseFrames(prepared.frame())[0].opcode;
    expect(opcode(new PreparedMessage("héllo"))).toBe(Opcode.Text);
    expect(opcode(new PreparedMessage(Buffer.from("x")))).toBe(Opcode.Binary);
    expect(opcode(new PreparedMessage("as binary", true))).toBe(Opcode.Binary);
    expect(opcode(new PreparedMessage(Buffer.from("as text"), false))).toBe(Opcode.Text);
    expect(parseFrames(new PreparedMessage("héllo").frame())[0].payload.toString()).toBe("héllo");
  });

  it("compresses once per compatible parameter set, RSV1 set, inflating to the message", async () => {
    const text = compressible(5000);
    const prepared = new PreparedMessage(text);
    const params = deflateParams();
    const calls = Array.from({ length: 20 }, () => prepared.compressedFrame(params));
    const frames = await Promise.all(calls);
    for (const frame of frames) expect(frame).toBe(frames[0]);
    // Later callers get the same bytes, and so do other parameters that change nothing for the
    // server's compressor.
    expect(await prepared.compressedFrame({ ...params, clientMaxWindowBits: 9 })).toBe(frames[0]);
    const [decoded] = parseFrames(frames[0]);
    expect(decoded).toMatchObject({ fin: true, rsv1: true, opcode: Opcode.Text, masked: false });
    expect(decoded.payload.length).toBeLessThan(text.length / 4);
    expect(inflate(decoded.payload).toString()).toBe(text);
    // The uncompressed frame is unaffected.
    expect(parseFrames(prepared.frame())[0].rsv1).toBe(false);
  });

  it("keeps a compression per window size, each within its window (section 7.1.2.1)", async () => {
    const payload = farRepeat(4000);
    const prepared = new PreparedMessage(payload, true);
    const wide = await prepared.compressedFrame(deflateParams({ serverMaxWindowBits: 15 }));
    const narrow = await prepared.compressedFrame(deflateParams({ serverMaxWindowBits: 10 }));
    expect(narrow).not.toBe(wide);
    const widePayload = parseFrames(wide)[0].payload;
    const narrowPayload = parseFrames(narrow)[0].payload;
    // The wide window found the repeat 4000 bytes back; a 1 KiB window cannot.
    expect(widePayload.length).toBeLessThan(narrowPayload.length);
    expect(inflate(narrowPayload, 10).equals(payload)).toBe(true);
    expect(() => inflate(widePayload, 10)).toThrow();
    expect(inflate(widePayload, 15).equals(payload)).toBe(true);
    // 8 and 9 compress alike (zlib has no 8-bit raw deflate window): one compression serves both.
    const eight = await prepared.compressedFrame(deflateParams({ serverMaxWindowBits: 8 }));
    const nine = await prepared.compressedFrame(deflateParams({ serverMaxWindowBits: 9 }));
    expect(nine).toBe(eight);
    expect(inflate(parseFrames(eight)[0].payload, 9).equals(payload)).toBe(true);
  });

  it("compresses an empty message as the single byte 0x00 (RFC 7692 section 7.2.3.6)", async () => {
    const frame = await new PreparedMessage("").compressedFrame(deflateParams());
    expect(parseFrames(frame)[0].payload).toEqual(Buffer.from([0x00]));
    expect(inflate(Buffer.from([0x00])).length).toBe(0);
  });

  it("refuses to share a compression with server context takeover", () => {
    const prepared = new PreparedMessage(compressible(2000));
    expect(() =>
      prepared.compressedFrame(deflateParams({ serverNoContextTakeover: false })),
    ).toThrow(expect.objectContaining({ code: "WS_ERR_PREPARED_CONTEXT_TAKEOVER" }));
  });
});

describe("sendPrepared: the same bytes to many connections", () => {
  it("writes the very same Buffer to 100 sockets, and every peer decodes the message", async () => {
    const pairs = Array.from({ length: 100 }, () => connectedPair());
    const payload = bytes(70_000);
    const prepared = new PreparedMessage(payload, true);
    for (const { server } of pairs) expect(server.sendPrepared(prepared)).toBe(true);
    await waitUntil(
      () => pairs.every(({ atClient }) => atClient.messages.length === 1),
      WAIT,
      "the message at every peer",
    );
    const frame = prepared.frame();
    for (const { serverEnd, atClient, atServer } of pairs) {
      // Alone in its turn, the frame is handed to the socket as it is: no copy per connection.
      expect(serverEnd.writes).toHaveLength(1);
      expect(serverEnd.writes[0]).toBe(frame);
      expect(atClient.messages[0].isBinary).toBe(true);
      expect(atClient.messages[0].data.equals(payload)).toBe(true);
      expect(atServer.errors).toEqual([]);
    }
  });

  it("delivers text, binary, empty and every length form to 100 peers in order", async () => {
    const pairs = Array.from({ length: 100 }, () => connectedPair());
    const messages = [
      new PreparedMessage("héllo ✓"),
      new PreparedMessage(Buffer.alloc(0), true),
      new PreparedMessage(""),
      new PreparedMessage(bytes(125), true),
      new PreparedMessage(compressible(126)),
      new PreparedMessage(bytes(65_535), true),
      new PreparedMessage(bytes(65_536), true),
    ];
    for (const prepared of messages) {
      for (const { server } of pairs) server.sendPrepared(prepared);
    }
    await waitUntil(
      () => pairs.every(({ atClient }) => atClient.messages.length === messages.length),
      WAIT,
      "every message at every peer",
    );
    const expected = expectedOf(messages);
    for (const { atClient, atServer } of pairs) {
      expectMessages(atClient.messages, expected);
      expect(atClient.errors).toEqual([]);
      expect(atServer.errors).toEqual([]);
    }
  });

  it("masks per connection on the client side (RFC 6455 section 5.3), still one message", async () => {
    const { client, clientEnd, atServer } = connectedPair();
    const prepared = new PreparedMessage("from a client");
    expect(client.sendPrepared(prepared)).toBe(true);
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the message");
    expect(atServer.messages[0]).toEqual({ data: Buffer.from("from a client"), isBinary: false });
    expect(parseFrames(clientEnd.written)[0].masked).toBe(true);
    expect(atServer.errors).toEqual([]);
  });
});

describe("sendPrepared: ordering", () => {
  it("keeps its place among send() calls on an uncompressed connection", async () => {
    const { server, atClient } = connectedPair();
    server.send("one");
    server.sendPrepared(new PreparedMessage("two"));
    server.send(Buffer.from("three"));
    server.sendPrepared(new PreparedMessage(Buffer.from("four"), true));
    await waitUntil(() => atClient.messages.length === 4, WAIT, "four messages");
    expect(atClient.messages.map((m) => [m.data.toString(), m.isBinary])).toEqual([
      ["one", false],
      ["two", false],
      ["three", true],
      ["four", true],
    ]);
  });

  it("never overtakes a send() still compressing", async () => {
    const options = deflate({ serverNoContextTakeover: false });
    const { server, atClient, atServer } = connectedPair(
      { deflate: options },
      { deflate: options },
    );
    const big = compressible(20_000);
    server.send(big); // compressing: everything after it waits
    server.sendPrepared(new PreparedMessage("small, ready at once"));
    server.send("last");
    await waitUntil(() => atClient.messages.length === 3, WAIT, "three messages");
    expect(atClient.messages.map((m) => m.data.toString())).toEqual([
      big,
      "small, ready at once",
      "last",
    ]);
    expect(atServer.errors).toEqual([]);
  });

  it("holds later messages behind its own pending compression", async () => {
    const options = deflate();
    const { server, atClient, atServer } = connectedPair(
      { deflate: options },
      { deflate: options },
    );
    const first = compressible(10_000, 1);
    const shared = compressible(10_000, 2);
    server.send(first);
    server.sendPrepared(new PreparedMessage(shared));
    server.send("tiny after");
    server.send(compressible(3000, 3));
    server.close(1000, "done");
    await waitUntil(() => atClient.closes.length === 1, WAIT, "the close");
    expect(atClient.messages.map((m) => m.data.toString())).toEqual([
      first,
      shared,
      "tiny after",
      compressible(3000, 3),
    ]);
    expect(atClient.closes).toEqual([1000]);
    expect(atServer.errors).toEqual([]);
  });

  it("waits for a streamed message to finish (RFC 6455 section 5.4)", async () => {
    const { server, atClient } = connectedPair();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* source() {
      yield "streamed ";
      await gate;
      yield "message";
    }
    const streaming = server.sendStream(source(), { binary: false });
    server.sendPrepared(new PreparedMessage("prepared"));
    await turns(5);
    release();
    await within(streaming, WAIT, "the stream");
    await waitUntil(() => atClient.messages.length === 2, WAIT, "two messages");
    expect(atClient.messages.map((m) => m.data.toString())).toEqual([
      "streamed message",
      "prepared",
    ]);
  });
});

describe("sendPrepared: buffering and corking", () => {
  it("counts in bufferedAmount exactly like send()", () => {
    const viaSend = rawPeer();
    const viaPrepared = rawPeer();
    const payloads = [bytes(10), bytes(300), bytes(70_000)];
    for (const payload of payloads) {
      viaSend.ws.send(payload);
      viaPrepared.ws.sendPrepared(new PreparedMessage(payload, true));
      expect(viaPrepared.ws.bufferedAmount).toBe(viaSend.ws.bufferedAmount);
    }
    expect(viaPrepared.ws.bufferedAmount).toBe(10 + 2 + 300 + 4 + 70_000 + 10);
  });

  it("pauses reading above highWaterMark and drains once the peer reads", async () => {
    const { server, client, serverEnd, atServer, atClient } = connectedPair(
      { highWaterMark: 32 * 1024 },
      {},
      { readableHighWaterMark: 16 * 1024, writableHighWaterMark: 16 * 1024 },
    );
    let drains = 0;
    server.on("drain", () => {
      drains++;
    });
    client.pause();
    const prepared = new PreparedMessage(bytes(64 * 1024), true);
    for (let i = 0; i < 4; i++) server.sendPrepared(prepared);
    expect(server.bufferedAmount).toBe(4 * prepared.frame().length);
    await turns(3);
    for (let i = 0; i < 4; i++) server.sendPrepared(prepared);
    await turns(3);
    expect(server.bufferedAmount).toBeGreaterThan(32 * 1024);
    expect(serverEnd.isPaused()).toBe(true);
    client.send("while you were busy");
    await turns(5);
    expect(atServer.messages).toEqual([]);

    client.resume();
    await waitUntil(() => drains > 0, WAIT, "drain");
    await waitUntil(() => atClient.messages.length === 8, WAIT, "all eight messages");
    await waitUntil(() => atServer.messages.length === 1, WAIT, "the peer's message");
    expect(server.bufferedAmount).toBe(0);
    expect(serverEnd.isPaused()).toBe(false);
    expect(atClient.messages.every((m) => m.data.equals(prepared.payload))).toBe(true);
  });

  it("leaves in one write per socket per turn, with send() and ping() around it", async () => {
    const peers = Array.from({ length: 5 }, () => rawPeer());
    const prepared = [new PreparedMessage("a"), new PreparedMessage(bytes(2000), true)];
    for (const { ws } of peers) {
      ws.send("before");
      ws.sendPrepared(prepared[0]);
      ws.ping("p");
      ws.sendPrepared(prepared[1]);
      ws.send("after");
    }
    for (const { mine } of peers) expect(mine.writes).toHaveLength(0);
    await turns(2);
    for (const { mine, frames } of peers) {
      expect(mine.writes).toHaveLength(1);
      await waitUntil(() => frames().length === 5, WAIT, "five frames");
      expect(frames().map((f) => [f.opcode, f.payload.length])).toEqual([
        [Opcode.Text, 6],
        [Opcode.Text, 1],
        [Opcode.Ping, 1],
        [Opcode.Binary, 2000],
        [Opcode.Text, 5],
      ]);
    }
  });

  it("writes a shared compression to every connection once it is ready, one write each", async () => {
    const peers = Array.from({ length: 10 }, () => rawPeer({ deflate: deflate() }));
    const text = compressible(8000);
    const prepared = new PreparedMessage(text);
    for (const { ws } of peers) {
      ws.sendPrepared(prepared);
      ws.send("then this");
    }
    await waitUntil(() => peers.every(({ mine }) => mine.writes.length > 0), WAIT, "the writes");
    await turns(2);
    const frame = await prepared.compressedFrame(deflateParams());
    for (const { mine, frames, errors } of peers) {
      expect(mine.writes).toHaveLength(1);
      await waitUntil(() => frames().length === 2, WAIT, "two frames");
      const [shared, after] = frames();
      expect(shared.rsv1).toBe(true);
      // The shared frame, byte for byte, corked with the send() after it.
      expect(mine.writes[0].subarray(0, frame.length).equals(frame)).toBe(true);
      expect(inflate(shared.payload).toString()).toBe(text);
      expect(after.payload.toString()).toBe("then this");
      expect(errors).toEqual([]);
    }
  });
});

describe("sendPrepared: permessage-deflate", () => {
  it("writes the one shared compressed Buffer to every connection without context takeover", async () => {
    const peers = Array.from({ length: 10 }, () => rawPeer({ deflate: deflate() }));
    const prepared = new PreparedMessage(compressible(70_000), false);
    for (const { ws } of peers) ws.sendPrepared(prepared);
    const frame = await prepared.compressedFrame(deflateParams());
    await waitUntil(() => peers.every(({ mine }) => mine.writes.length === 1), WAIT, "writes");
    for (const { mine } of peers) expect(mine.writes[0]).toBe(frame);
  });

  it("is decoded by our client with server_no_context_takeover, message after message", async () => {
    const options = deflate();
    const pairs = Array.from({ length: 5 }, () =>
      connectedPair({ deflate: options }, { deflate: options }),
    );
    const messages = [
      new PreparedMessage(compressible(3000, 1)),
      new PreparedMessage(Buffer.from(compressible(5000, 2)), true),
      new PreparedMessage(compressible(3000, 1)),
      new PreparedMessage(""),
    ];
    for (const prepared of messages) for (const { server } of pairs) server.sendPrepared(prepared);
    await waitUntil(
      () => pairs.every(({ atClient }) => atClient.messages.length === messages.length),
      WAIT,
      "every message",
    );
    for (const { atClient, atServer } of pairs) {
      expectMessages(atClient.messages, expectedOf(messages));
      expect(atClient.errors).toEqual([]);
      expect(atServer.errors).toEqual([]);
    }
  });

  it("compresses per connection where the server keeps its context, still correct", async () => {
    const takeover = deflate({ serverNoContextTakeover: false });
    const { server, atClient } = connectedPair({ deflate: takeover }, { deflate: takeover });
    const raw = rawPeer({ deflate: takeover });
    // Incompressible on its own: only the copy sent before can shorten it.
    const text = noise(3000).toString("base64");
    const prepared = new PreparedMessage(text);
    for (let i = 0; i < 3; i++) {
      server.sendPrepared(prepared);
      raw.ws.sendPrepared(prepared);
    }
    await waitUntil(() => atClient.messages.length === 3, WAIT, "three messages");
    expect(atClient.messages.map((m) => m.data.toString())).toEqual([text, text, text]);
    await waitUntil(() => raw.frames().length === 3, WAIT, "three frames");
    const frames = raw.frames();
    expect(frames.every((f) => f.rsv1)).toBe(true);
    // The second copy refers back into the first (context takeover): far smaller, and not the
    // shared context-free bytes.
    expect(frames[1].payload.length).toBeLessThan(frames[0].payload.length / 4);
    const shared = parseFrames(await prepared.compressedFrame(deflateParams()))[0].payload;
    expect(frames[1].payload.equals(shared)).toBe(false);

    // Interleaved with send(): the connection's own compressor must have seen every message, or
    // the peer's window and ours drift apart and later messages inflate wrong.
    const before = atClient.messages.length;
    const other = noise(2000, 7).toString("base64");
    server.send(other);
    server.sendPrepared(prepared);
    server.send(other);
    server.sendPrepared(prepared);
    await waitUntil(() => atClient.messages.length === before + 4, WAIT, "four more messages");
    expect(atClient.messages.slice(before).map((m) => m.data.toString())).toEqual([
      other,
      text,
      other,
      text,
    ]);
    expect(atClient.errors).toEqual([]);
  });

  it("serves a mixed fan-out: shared, per-connection and uncompressed peers all decode", async () => {
    const shared = deflate();
    const takeover = deflate({ serverNoContextTakeover: false });
    const narrow = deflate({ serverMaxWindowBits: 10 });
    const pairs = [
      ...Array.from({ length: 3 }, () => connectedPair({ deflate: shared }, { deflate: shared })),
      ...Array.from({ length: 3 }, () =>
        connectedPair({ deflate: takeover }, { deflate: takeover }),
      ),
      ...Array.from({ length: 3 }, () => connectedPair({ deflate: narrow }, { deflate: narrow })),
      ...Array.from({ length: 3 }, () => connectedPair()),
    ];
    const payload = farRepeat(4000);
    const messages = [new PreparedMessage(payload, true), new PreparedMessage("short")];
    for (const prepared of messages) for (const { server } of pairs) server.sendPrepared(prepared);
    await waitUntil(
      () =>
        pairs.every(({ atClient }) => atClient.messages.length === 2 || atClient.closes.length > 0),
      WAIT,
      "every message",
    );
    for (const { atClient, atServer } of pairs) {
      expect(atClient.errors).toEqual([]);
      expect(atServer.errors).toEqual([]);
      expectMessages(atClient.messages, expectedOf(messages));
    }
  });

  it("gives each negotiated window its own compression (section 7.1.2.1)", async () => {
    const wide = [rawPeer({ deflate: deflate() }), rawPeer({ deflate: deflate() })];
    const narrow = [
      rawPeer({ deflate: deflate({ serverMaxWindowBits: 10 }) }),
      rawPeer({ deflate: deflate({ serverMaxWindowBits: 10 }) }),
    ];
    const payload = farRepeat(4000);
    const prepared = new PreparedMessage(payload, true);
    for (const peer of [...wide, ...narrow]) peer.ws.sendPrepared(prepared);
    const all = [...wide, ...narrow];
    await waitUntil(() => all.every((peer) => peer.frames().length === 1), WAIT, "the frames");
    const [w0, w1, n0, n1] = all.map((peer) => peer.frames()[0].payload);
    expect(w1.equals(w0)).toBe(true);
    expect(n1.equals(n0)).toBe(true);
    expect(n0.equals(w0)).toBe(false);
    // The 1 KiB-window peer can inflate what it got within its window; the wide bytes it could not.
    expect(inflate(n0, 10).equals(payload)).toBe(true);
    expect(() => inflate(w0, 10)).toThrow(/distance too far back/);
    expect(inflate(w0, 15).equals(payload)).toBe(true);
  });

  it("sends below the threshold uncompressed, the shared plain frame", async () => {
    const { ws, mine, frames } = rawPeer({ deflate: deflate({}, 1024) });
    const prepared = new PreparedMessage(compressible(1023));
    ws.sendPrepared(prepared);
    await waitUntil(() => mine.writes.length === 1, WAIT, "the write");
    expect(mine.writes[0]).toBe(prepared.frame());
    expect(frames()[0].rsv1).toBe(false);
    expect(frames()[0].payload.toString()).toBe(compressible(1023));

    // At the threshold it is compressed, as send() would.
    const atThreshold = new PreparedMessage(compressible(1024));
    ws.sendPrepared(atThreshold);
    await waitUntil(() => frames().length === 2, WAIT, "the second frame");
    expect(frames()[1].rsv1).toBe(true);
    expect(inflate(frames()[1].payload).toString()).toBe(compressible(1024));
  });

  it("sends uncompressed when the message says compress: false", async () => {
    const { ws, frames } = rawPeer({ deflate: deflate() });
    ws.sendPrepared(new PreparedMessage(compressible(5000), false, { compress: false }));
    await waitUntil(() => frames().length === 1, WAIT, "the frame");
    expect(frames()[0].rsv1).toBe(false);
    expect(frames()[0].payload.toString()).toBe(compressible(5000));
  });
});

describe("sendPrepared: closed connections", () => {
  it("returns false and writes nothing once closing or closed", async () => {
    const { ws, mine, frames } = rawPeer();
    const prepared = new PreparedMessage("late");
    ws.close(1000);
    expect(ws.sendPrepared(prepared)).toBe(false);
    await turns(2);
    expect(frames().map((f) => f.opcode)).toEqual([Opcode.Close]);

    const other = rawPeer();
    other.ws.terminate();
    expect(other.ws.sendPrepared(prepared)).toBe(false);
    await turns(2);
    expect(other.mine.writes).toHaveLength(0);
    expect(mine.writes).toHaveLength(1);
  });

  it("drops a pending shared compression quietly when the connection goes away", async () => {
    const options = deflate();
    const { server, atServer, atClient } = connectedPair(
      { deflate: options },
      { deflate: options },
    );
    const prepared = new PreparedMessage(compressible(5000));
    expect(server.sendPrepared(prepared)).toBe(true);
    server.terminate();
    await prepared.compressedFrame(deflateParams());
    await waitUntil(() => atClient.closes.length === 1, WAIT, "the close");
    expect(atClient.messages).toEqual([]);
    expect(atServer.errors).toEqual([]);
    expect(atServer.closes).toEqual([1006]);
  });
});

describe("sendPrepared over loopback: our client and ws as peers", () => {
  async function startServer(): Promise<{
    server: WebSocketServer;
    joined: WebSocketConnection[];
  }> {
    const server = await createServer({
      port: 0,
      host: "127.0.0.1",
      heartbeat: false,
      perMessageDeflate: { serverNoContextTakeover: true, threshold: 64 },
    });
    cleanups.push(() => server.close());
    const joined: WebSocketConnection[] = [];
    server.on("connection", (ws) => {
      joined.push(ws);
    });
    return { server, joined };
  }

  function wsClient(url: string, perMessageDeflate: WebSocket.ClientOptions["perMessageDeflate"]) {
    const ws = new WebSocket(url, { perMessageDeflate });
    cleanups.push(() => ws.terminate());
    const messages: Array<{ data: Buffer; isBinary: boolean }> = [];
    const errors: Error[] = [];
    ws.on("message", (data, isBinary) => messages.push({ data: data as Buffer, isBinary }));
    ws.on("error", (error) => errors.push(error));
    return { ws, messages, errors, opened: once(ws, "open") };
  }

  it("every peer decodes the shared compressed messages, whatever window it allowed", async () => {
    const { server, joined } = await startServer();
    const url = server.url("/topic");
    const ours = await Promise.all(
      [undefined, 10].map((bits) =>
        connect(url, {
          perMessageDeflate: bits === undefined ? true : { serverMaxWindowBits: bits },
        }),
      ),
    );
    const atOurs = ours.map((ws) => {
      cleanups.push(() => ws.terminate());
      return record(ws);
    });
    const theirs = [
      wsClient(url, true),
      wsClient(url, { serverNoContextTakeover: true }),
      wsClient(url, { serverMaxWindowBits: 9 }),
      wsClient(url, false),
    ];
    await within(Promise.all(theirs.map((c) => c.opened)), WAIT, "ws clients to open");
    await waitUntil(() => joined.length === 6, WAIT, "six connections");
    expect(joined.map((ws) => ws.extensions.includes("server_no_context_takeover"))).toEqual(
      expect.arrayContaining([true, false]),
    );

    const messages = [
      new PreparedMessage(compressible(20_000, 4)),
      new PreparedMessage(farRepeat(3000), true),
      new PreparedMessage("small"),
      new PreparedMessage(Buffer.from(compressible(70_000, 6)), true),
    ];
    for (const prepared of messages)
      for (const ws of joined) expect(ws.sendPrepared(prepared)).toBe(true);
    const expected = expectedOf(messages);
    await waitUntil(
      () =>
        atOurs.every((r) => r.messages.length === messages.length) &&
        theirs.every((c) => c.messages.length === messages.length),
      WAIT,
      "every message at every peer",
    );
    for (const rec of atOurs) {
      expectMessages(rec.messages, expected);
      expect(rec.errors).toEqual([]);
    }
    for (const client of theirs) {
      expectMessages(client.messages, expected);
      expect(client.errors).toEqual([]);
    }
  });
});

describe("PreparedBatch: messages back to back, one slice per connection", () => {
  const lengths = [0, 1, 125, 126, 65_535, 65_536];
  const mixed = () =>
    lengths.map((length, i) =>
      i % 2 === 0
        ? new PreparedMessage(compressible(length, i))
        : new PreparedMessage(bytes(length), true),
    );

  it("frames every message once, in one buffer, and any slice parses to those messages", () => {
    const messages = mixed();
    const batch = new PreparedBatch(messages);
    const all = parseFrames(batch.frames());
    expect(all.map((f) => [f.fin, f.rsv1, f.masked, f.opcode, f.payload.length])).toEqual(
      messages.map((m) => [
        true,
        false,
        false,
        m.binary ? Opcode.Binary : Opcode.Text,
        m.payload.length,
      ]),
    );
    all.forEach((frame, i) => {
      expect(frame.payload.equals(messages[i].payload), `message ${i}`).toBe(true);
    });
    const middle = parseFrames(batch.frames(2, 4));
    expect(middle.map((f) => f.payload.length)).toEqual([125, 126]);
    // Slices are views of the same bytes: nothing is copied per caller.
    expect(batch.frames(2, 4).buffer).toBe(batch.frames().buffer);
    expect(batch.frames(3, 3)).toHaveLength(0);
  });

  it("uses a lone message's own frame", () => {
    const message = new PreparedMessage("alone");
    expect(new PreparedBatch([message]).frames()).toBe(message.frame());
  });

  it("hands 100 connections one write each, views of one buffer, decoded in order", async () => {
    const pairs = Array.from({ length: 100 }, () => connectedPair());
    const messages = mixed().slice(0, 5); // under 64 KiB in all
    const batch = new PreparedBatch(messages);
    for (const { server } of pairs) expect(server.sendPreparedBatch(batch)).toBe(true);
    await waitUntil(
      () => pairs.every(({ atClient }) => atClient.messages.length === messages.length),
      WAIT,
      "every message at every peer",
    );
    const shared = batch.frames().buffer;
    for (const { serverEnd, atClient, atServer } of pairs) {
      expect(serverEnd.writes).toHaveLength(1);
      expect(serverEnd.writes[0].buffer).toBe(shared);
      expectMessages(atClient.messages, expectedOf(messages));
      expect(atServer.errors).toEqual([]);
    }
  });

  it("keeps its place among send() calls, and sends only the slice asked for", async () => {
    const { server, atClient } = connectedPair();
    const batch = new PreparedBatch(["b", "c", "d", "e"].map((m) => new PreparedMessage(m)));
    server.send("a");
    server.sendPreparedBatch(batch, 0, 2);
    server.send("x");
    server.sendPreparedBatch(batch, 3, 4);
    await waitUntil(() => atClient.messages.length === 5, WAIT, "five messages");
    expect(atClient.messages.map((m) => m.data.toString())).toEqual(["a", "b", "c", "x", "e"]);
  });

  it("sends the slice plain where every message is under the deflate threshold", async () => {
    const { ws, mine, frames } = rawPeer({ deflate: deflate({}, 1024) });
    const batch = new PreparedBatch([
      new PreparedMessage(compressible(1023)),
      new PreparedMessage(compressible(5000), false, { compress: false }),
    ]);
    ws.sendPreparedBatch(batch);
    await waitUntil(() => mine.writes.length === 1, WAIT, "the write");
    expect(mine.writes[0].buffer).toBe(batch.frames().buffer);
    expect(frames().map((f) => [f.rsv1, f.payload.length])).toEqual([
      [false, 1023],
      [false, 5000],
    ]);
  });

  it("compresses message by message where one reaches the threshold, in order", async () => {
    const options = deflate({}, 64);
    const { server, atClient, serverEnd } = connectedPair(
      { deflate: options },
      { deflate: options },
    );
    const messages = [
      new PreparedMessage("small"),
      new PreparedMessage(compressible(4000)),
      new PreparedMessage(bytes(10), true),
    ];
    server.sendPreparedBatch(new PreparedBatch(messages));
    await waitUntil(() => atClient.messages.length === 3, WAIT, "three messages");
    expectMessages(atClient.messages, expectedOf(messages));
    // The large one went compressed (RSV1), the others plain, in their order.
    expect(parseFrames(serverEnd.written).map((f) => f.rsv1)).toEqual([false, true, false]);
  });

  it("masks per message on the client side (RFC 6455 section 5.3)", async () => {
    const { client, clientEnd, atServer } = connectedPair();
    client.sendPreparedBatch(
      new PreparedBatch([new PreparedMessage("one"), new PreparedMessage("two")]),
    );
    await waitUntil(() => atServer.messages.length === 2, WAIT, "two messages");
    expect(atServer.messages.map((m) => m.data.toString())).toEqual(["one", "two"]);
    expect(parseFrames(clientEnd.written).every((f) => f.masked)).toBe(true);
  });

  it("returns false and writes nothing once closing", async () => {
    const { ws, frames } = rawPeer();
    ws.close(1000);
    expect(ws.sendPreparedBatch(new PreparedBatch([new PreparedMessage("late")]))).toBe(false);
    await turns(2);
    expect(frames().map((f) => f.opcode)).toEqual([Opcode.Close]);
  });
});
