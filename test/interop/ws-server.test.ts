// Switchboard's client (`connect`) against the `ws` package's WebSocketServer over real loopback
// sockets: the same matrix as the server-side suite, seen from the other end of the wire.
import type { EventEmitter } from "node:events";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { type ConnectOptions, connect, type WebSocketConnection } from "../../src/index.js";
import {
  DEFAULT_WAIT_MS,
  describeExtensions,
  expectFailedWith,
  FrameTap,
  fromArray,
  INVALID_CLOSE_CODES,
  Inbox,
  LARGE_WAIT_MS,
  LONGEST_REASON,
  MiB,
  multibyteText,
  type Observed,
  observe,
  parseExtensions,
  patternBytes,
  reasonFor,
  splitBytes,
  uniqueId,
  VALID_CLOSE_CODES,
  withId,
  within,
} from "./helpers.js";

interface WsPeer extends Observed {
  ws: WebSocket;
  req: IncomingMessage;
  /** Headers of the frames the server received, i.e. how Switchboard's client framed them. */
  tap: FrameTap;
  offered: ReturnType<typeof parseExtensions>;
  accepted: ReturnType<typeof parseExtensions>;
}

interface WsServer {
  wss: WebSocketServer;
  url(path?: string): string;
  peers: Inbox<WsPeer>;
  /** The connection whose URL carries `?id=<id>` (see `uniqueId`). */
  peer(id: string): Promise<WsPeer>;
  close(): Promise<void>;
}

/** A ws server that echoes every message with its opcode and records each connection. */
async function startWsServer(options: WebSocket.ServerOptions): Promise<WsServer> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, ...options });
  await within(
    new Promise<void>((resolve, reject) => {
      wss.once("listening", () => resolve());
      wss.once("error", reject);
    }),
    DEFAULT_WAIT_MS,
    "the ws server to listen",
  );
  const { port } = wss.address() as AddressInfo;
  const peers = new Inbox<WsPeer>();
  const responseHeaders = new WeakMap<IncomingMessage, string[]>();
  wss.on("headers", (headers: string[], req: IncomingMessage) => {
    responseHeaders.set(req, headers);
  });
  wss.on("connection", (ws: WebSocket, req: IncomingMessage) => {
    const extensionLine = (responseHeaders.get(req) ?? []).find((h) =>
      h.toLowerCase().startsWith("sec-websocket-extensions:"),
    );
    peers.push({
      ...observe(ws),
      ws,
      req,
      tap: new FrameTap(req.socket),
      offered: parseExtensions(req.headers["sec-websocket-extensions"]),
      accepted: parseExtensions(extensionLine?.slice(extensionLine.indexOf(":") + 1)),
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: isBinary });
    });
  });
  const waiting = new Map<string, (peer: WsPeer) => void>();
  const idOf = (peer: WsPeer) =>
    new URL(peer.req.url ?? "/", "ws://localhost").searchParams.get("id");
  wss.on("connection", () => {
    const latest = peers.all.at(-1);
    const id = latest ? idOf(latest) : null;
    if (latest && id !== null) waiting.get(id)?.(latest);
  });
  const peer = (id: string): Promise<WsPeer> => {
    const found = peers.all.find((p) => idOf(p) === id);
    if (found) return Promise.resolve(found);
    const arrived = new Promise<WsPeer>((resolve) => waiting.set(id, resolve));
    return within(arrived, DEFAULT_WAIT_MS, `the ws server's connection for id=${id}`).finally(() =>
      waiting.delete(id),
    );
  };
  return {
    wss,
    url: (path = "/echo") => `ws://127.0.0.1:${port}${path}`,
    peers,
    peer,
    close: () =>
      within(
        new Promise<void>((resolve) => {
          for (const client of wss.clients) client.terminate();
          wss.close(() => resolve());
        }),
        DEFAULT_WAIT_MS,
        "the ws server to close",
      ),
  };
}

interface OurClient extends Observed {
  ws: WebSocketConnection;
}

const openClients = new Set<WebSocketConnection>();

afterEach(() => {
  for (const ws of openClients) ws.terminate();
  openClients.clear();
});

async function openOurClient(
  url: string,
  options: Partial<ConnectOptions> = {},
): Promise<OurClient> {
  const ws = await within(
    connect(url, options as ConnectOptions),
    DEFAULT_WAIT_MS,
    `Switchboard's client to connect to ${url}`,
  );
  openClients.add(ws);
  return { ...observe(ws as unknown as EventEmitter), ws };
}

/** Sends with ws on the server side and resolves once ws wrote the frame. */
function wsSend(
  ws: WebSocket,
  data: string | Buffer,
  options: { binary?: boolean; fin?: boolean } = {},
): Promise<void> {
  return new Promise((resolve, reject) =>
    ws.send(data, options, (err) => (err ? reject(err) : resolve())),
  );
}

async function echo(
  client: OurClient,
  data: string | Buffer,
  binary: boolean,
  ms = DEFAULT_WAIT_MS,
): Promise<{ data: Buffer; isBinary: boolean; wasBuffer: boolean }> {
  client.ws.send(data, { binary });
  return client.messages.next(`the echo of a ${Buffer.byteLength(data)}-byte message`, ms);
}

interface DeflateCase {
  name: string;
  server: WebSocket.ServerOptions;
  client: Partial<ConnectOptions>;
  /** Parameters the client's offer must carry, or null when it must not offer deflate. */
  offer: Record<string, unknown> | null;
  /** Parameters the ws server's response carries, or null when nothing is negotiated. */
  accepted: Record<string, unknown> | null;
  large: boolean;
}

const CASES: DeflateCase[] = [
  {
    name: "no compression",
    server: { perMessageDeflate: false },
    client: { perMessageDeflate: false },
    offer: null,
    accepted: null,
    large: true,
  },
  {
    name: "client offers deflate, ws server has it off",
    server: { perMessageDeflate: false },
    client: { perMessageDeflate: true },
    offer: {},
    accepted: null,
    large: false,
  },
  {
    name: "deflate with defaults on both sides",
    server: { perMessageDeflate: { threshold: 0 } },
    client: { perMessageDeflate: true },
    offer: {},
    accepted: {},
    large: true,
  },
  {
    name: "deflate, ws server imposes no_context_takeover both ways",
    server: {
      perMessageDeflate: {
        threshold: 0,
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
      },
    },
    client: { perMessageDeflate: true },
    offer: {},
    accepted: { server_no_context_takeover: true, client_no_context_takeover: true },
    large: false,
  },
  {
    name: "deflate, client asks no_context_takeover both ways",
    server: { perMessageDeflate: { threshold: 0 } },
    client: { perMessageDeflate: { serverNoContextTakeover: true, clientNoContextTakeover: true } },
    offer: { server_no_context_takeover: true, client_no_context_takeover: true },
    accepted: { server_no_context_takeover: true },
    large: false,
  },
  {
    name: "deflate, client asks window bits 9 (server) and 10 (client)",
    server: { perMessageDeflate: { threshold: 0 } },
    client: { perMessageDeflate: { serverMaxWindowBits: 9, clientMaxWindowBits: 10 } },
    offer: { server_max_window_bits: "9", client_max_window_bits: "10" },
    accepted: { server_max_window_bits: "9", client_max_window_bits: "10" },
    large: false,
  },
  {
    // ws accepts a numeric clientMaxWindowBits only from clients that advertise
    // client_max_window_bits (RFC 7692 section 7.1.2.2), as browsers and ws do by default.
    name: "deflate, ws server imposes window bits 10 (server) and 9 (client) on the default offer",
    server: {
      perMessageDeflate: { threshold: 0, serverMaxWindowBits: 10, clientMaxWindowBits: 9 },
    },
    client: { perMessageDeflate: true },
    offer: { client_max_window_bits: expect.anything() },
    accepted: { server_max_window_bits: "10", client_max_window_bits: "9" },
    large: true,
  },
];

describe.each(CASES)("Switchboard client, ws server: $name", (config) => {
  let server: WsServer;
  const deflate = config.accepted !== null;
  // Only some configurations run the big round trips: they are the slow part of the suite.
  const itLarge = config.large ? it : () => undefined;

  beforeAll(async () => {
    server = await startWsServer({ maxPayload: 17 * MiB, ...config.server });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function open(path = "/echo"): Promise<{ client: OurClient; peer: WsPeer }> {
    const id = uniqueId();
    const client = await openOurClient(withId(server.url(path), id), {
      maxMessageSize: 17 * MiB,
      ...config.client,
    });
    return { client, peer: await server.peer(id) };
  }

  it("negotiates permessage-deflate as configured", async () => {
    const { client, peer } = await open();
    if (config.offer === null) {
      expect(peer.offered).toEqual({});
    } else {
      expect(Object.keys(peer.offered)).toContain("permessage-deflate");
      const params = peer.offered["permessage-deflate"];
      for (const [key, value] of Object.entries(config.offer)) {
        expect(params[key], `offered parameter ${key}`).toEqual(value);
      }
    }
    if (config.accepted === null) {
      expect(peer.accepted).toEqual({});
      expect(peer.ws.extensions).toBe("");
      expect(describeExtensions(client.ws.extensions)).not.toContain("permessage-deflate");
      return;
    }
    expect(peer.ws.extensions).toBe("permessage-deflate");
    const params = peer.accepted["permessage-deflate"];
    for (const [key, value] of Object.entries(config.accepted)) {
      expect(params[key], `accepted parameter ${key}`).toEqual(value);
    }
    expect(describeExtensions(client.ws.extensions)).toContain("permessage-deflate");
  });

  it("echoes text, binary, empty and multibyte UTF-8 messages with their opcode", async () => {
    const { client, peer } = await open();
    const cases: Array<[string | Buffer, boolean]> = [
      ["hello", false],
      [Buffer.from([0, 1, 2, 0xff, 0xfe]), true],
      ["", false],
      [Buffer.alloc(0), true],
      ["héllo wörld ✓ € 🚀 日本語", false],
      [multibyteText(70_000), false],
      [patternBytes(70_000), true],
    ];
    for (const [data, binary] of cases) {
      const echoed = await echo(client, data, binary);
      expect(echoed.isBinary).toBe(binary);
      expect(echoed.wasBuffer, "the client hands payloads over as Buffers").toBe(true);
      expect(echoed.data.equals(Buffer.from(data))).toBe(true);
      const seen = await peer.messages.next("the ws server's message event");
      expect(seen.isBinary).toBe(binary);
      expect(seen.data.equals(Buffer.from(data))).toBe(true);
    }
    // RFC 6455 section 5.1: a client masks every frame it sends.
    expect(peer.tap.frames.length).toBeGreaterThanOrEqual(cases.length);
    expect(peer.tap.frames.every((f) => f.masked)).toBe(true);
  });

  it("sends strings as text and bytes as binary unless told otherwise", async () => {
    const { client, peer } = await open();
    client.ws.send("a string");
    client.ws.send(Buffer.from("some bytes"));
    client.ws.send(Buffer.from("bytes as text"), { binary: false });
    const seen = [
      await peer.messages.next("message 1"),
      await peer.messages.next("message 2"),
      await peer.messages.next("message 3"),
    ].map((m) => [m.data.toString(), m.isBinary]);
    expect(seen).toEqual([
      ["a string", false],
      ["some bytes", true],
      ["bytes as text", false],
    ]);
  });

  itLarge(
    "keeps reading after sending messages larger than its 1 MiB write high-water mark",
    async () => {
      // Sending more than the high-water mark pauses reading until the output drains; a write
      // the kernel takes at once must not leave reading paused.
      const { client } = await open();
      for (const size of [MiB + 1, 1.5 * MiB, 2 * MiB]) {
        const payload = patternBytes(size);
        const echoed = await echo(client, payload, true);
        expect(echoed.data.equals(payload), `echo of ${size} bytes`).toBe(true);
        expect((await echo(client, `after ${size}`, false)).data.toString()).toBe(`after ${size}`);
      }
    },
  );

  it("compresses a compressible message in both directions only when deflate is on", async () => {
    const { client, peer } = await open();
    const socket = peer.req.socket;
    const readBefore = socket.bytesRead;
    const writtenBefore = socket.bytesWritten;
    const framesBefore = peer.tap.dataFrames.length;
    const payload = Buffer.alloc(MiB, "switchboard ");
    const echoed = await echo(client, payload, true);
    expect(echoed.data.equals(payload)).toBe(true);
    const read = socket.bytesRead - readBefore;
    const written = socket.bytesWritten - writtenBefore;
    const frames = peer.tap.dataFrames.slice(framesBefore);
    if (deflate) {
      expect(read, "bytes the client sent for a 1 MiB compressible message").toBeLessThan(MiB / 4);
      expect(written, "bytes ws sent back for it").toBeLessThan(MiB / 4);
      expect(frames[0]?.rsv1, "RSV1 marks the client's compressed message").toBe(true);
    } else {
      expect(read).toBeGreaterThan(MiB);
      expect(written).toBeGreaterThan(MiB);
      expect(frames.every((f) => !f.rsv1)).toBe(true);
    }
  });

  it("sends fragmented messages with sendStream that ws reassembles", async () => {
    const { client, peer } = await open();
    const framesBefore = peer.tap.dataFrames.length;
    const binary = patternBytes(40_000);
    await within(
      client.ws.sendStream(fromArray(splitBytes(binary, 4)), { binary: true }),
      DEFAULT_WAIT_MS,
      "sendStream of 4 binary pieces",
    );
    let seen = await peer.messages.next("the streamed binary message");
    expect(seen.isBinary).toBe(true);
    expect(seen.data.equals(binary)).toBe(true);

    // A multibyte character split across fragments: UTF-8 is checked per message.
    const text = Buffer.from("stream: a€b🚀c ✓");
    await within(
      client.ws.sendStream(
        fromArray([text.subarray(0, 9), text.subarray(9, 12), text.subarray(12)]),
        {
          binary: false,
        },
      ),
      DEFAULT_WAIT_MS,
      "sendStream of split UTF-8",
    );
    seen = await peer.messages.next("the streamed text message");
    expect(seen.isBinary).toBe(false);
    expect(seen.data.toString("utf8")).toBe("stream: a€b🚀c ✓");

    await client.ws.sendStream(fromArray(["str", "ing ", "chunks"]), { binary: false });
    seen = await peer.messages.next("the streamed string chunks");
    expect([seen.data.toString(), seen.isBinary]).toEqual(["string chunks", false]);

    // The echoes come back whole too.
    expect((await client.messages.next("echo 1")).data.equals(binary)).toBe(true);
    expect((await client.messages.next("echo 2")).data.toString()).toBe("stream: a€b🚀c ✓");
    expect((await client.messages.next("echo 3")).data.toString()).toBe("string chunks");

    const frames = peer.tap.dataFrames.slice(framesBefore);
    expect(frames.length, "streamed messages span several frames").toBeGreaterThan(3);
    expect(frames.filter((f) => f.opcode !== 0).map((f) => f.opcode)).toEqual([2, 1, 1]);
    expect(frames.filter((f) => f.fin).length).toBe(3);
    // RFC 7692 section 6.1: RSV1 only ever on the first frame of a message.
    expect(frames.filter((f) => f.opcode === 0).every((f) => !f.rsv1)).toBe(true);
  });

  it("reassembles messages ws fragments, with a ping between fragments", async () => {
    const { client, peer } = await open();
    const text = Buffer.from("a€b🚀c");
    await wsSend(peer.ws, text.subarray(0, 2), { binary: false, fin: false });
    peer.ws.ping(Buffer.from("between fragments"));
    await wsSend(peer.ws, text.subarray(2, 6), { fin: false });
    await wsSend(peer.ws, text.subarray(6), { fin: true });
    expect((await client.pings.next("the ping between fragments")).toString()).toBe(
      "between fragments",
    );
    expect((await peer.pongs.next("the client's pong")).toString()).toBe("between fragments");
    const got = await client.messages.next("the fragmented text message");
    expect([got.data.toString("utf8"), got.isBinary]).toEqual(["a€b🚀c", false]);

    const binary = patternBytes(30_000);
    const [b1, b2, b3] = splitBytes(binary, 3);
    await wsSend(peer.ws, b1, { binary: true, fin: false });
    await wsSend(peer.ws, b2, { fin: false });
    await wsSend(peer.ws, b3, { fin: false });
    await wsSend(peer.ws, Buffer.alloc(0), { fin: true });
    const gotBinary = await client.messages.next("the fragmented binary message");
    expect(gotBinary.isBinary).toBe(true);
    expect(gotBinary.data.equals(binary)).toBe(true);
  });

  itLarge("echoes 16 MiB binary and text messages both ways", async () => {
    const { client, peer } = await open();
    const binary = patternBytes(16 * MiB);
    let echoed = await echo(client, binary, true, LARGE_WAIT_MS);
    expect(echoed.isBinary).toBe(true);
    expect(echoed.data.length).toBe(16 * MiB);
    expect(echoed.data.equals(binary)).toBe(true);
    expect((await peer.messages.next("the ws server's 16 MiB message")).data.equals(binary)).toBe(
      true,
    );

    const text = multibyteText(16 * MiB);
    echoed = await echo(client, text, false, LARGE_WAIT_MS);
    expect(echoed.isBinary).toBe(false);
    expect(echoed.data.length).toBe(16 * MiB);
    expect(echoed.data.toString("utf8") === text).toBe(true);
  });

  it("pings ws and gets a pong with the same payload", async () => {
    const { client, peer } = await open();
    for (const payload of [Buffer.alloc(0), Buffer.from("ping ✓"), patternBytes(125)]) {
      client.ws.ping(payload);
      expect((await peer.pings.next("the ws server's ping event")).equals(payload)).toBe(true);
      const pong = await client.pongs.next(`the pong for a ${payload.length}-byte ping`);
      expect(pong.equals(payload)).toBe(true);
    }
  });

  it("answers the ws server's pings with the same payload", async () => {
    const { client, peer } = await open();
    for (const payload of [Buffer.alloc(0), Buffer.from("from ws"), patternBytes(125)]) {
      peer.ws.ping(payload);
      expect((await client.pings.next("the client's ping event")).equals(payload)).toBe(true);
      const pong = await peer.pongs.next(`the pong for a ${payload.length}-byte ping`);
      expect(pong.equals(payload)).toBe(true);
    }
  });

  it("delivers every valid close code and reason the client sends", async () => {
    const observed: unknown[] = [];
    const expected: unknown[] = [];
    for (const code of VALID_CLOSE_CODES) {
      const { client, peer } = await open();
      client.ws.close(code, reasonFor(code));
      const atServer = await within(peer.closed, DEFAULT_WAIT_MS, `ws server close for ${code}`);
      const atClient = await within(client.closed, DEFAULT_WAIT_MS, `client close for ${code}`);
      // ws echoes the code and reason, so the client's close event reports them back.
      observed.push({
        code,
        server: [atServer.code, atServer.reason],
        client: [atClient.code, atClient.reason, typeof atClient.rawReason],
      });
      expected.push({
        code,
        server: [code, reasonFor(code)],
        client: [code, reasonFor(code), "string"],
      });
    }
    expect(observed).toEqual(expected);
  });

  it("delivers every valid close code and reason the ws server sends", async () => {
    const observed: unknown[] = [];
    const expected: unknown[] = [];
    for (const code of VALID_CLOSE_CODES) {
      const { client, peer } = await open();
      peer.ws.close(code, reasonFor(code));
      const atClient = await within(client.closed, DEFAULT_WAIT_MS, `client close for ${code}`);
      const atServer = await within(peer.closed, DEFAULT_WAIT_MS, `ws server close for ${code}`);
      observed.push({
        code,
        client: [atClient.code, atClient.reason],
        // The client answered with a close frame (RFC 6455 section 5.5.1), so ws saw no 1006.
        serverGotCloseFrame: atServer.code !== 1006,
        clientState: client.ws.readyState,
      });
      expected.push({
        code,
        client: [code, reasonFor(code)],
        serverGotCloseFrame: true,
        clientState: "closed",
      });
    }
    expect(observed).toEqual(expected);
  });
});

describe("Switchboard client, ws server: handshake, limits and close edge cases", () => {
  let server: WsServer;

  beforeAll(async () => {
    server = await startWsServer({
      perMessageDeflate: { threshold: 0 },
      handleProtocols: (offered: Set<string>, req: IncomingMessage) => {
        // "/rogue" answers with a subprotocol the client never offered.
        if (req.url?.startsWith("/rogue")) return "not-offered";
        return offered.has("chat.v2") ? "chat.v2" : false;
      },
      verifyClient: (info: { req: IncomingMessage }) => !info.req.url?.startsWith("/forbidden"),
    });
    server.wss.on("connection", (ws: WebSocket, req: IncomingMessage) => {
      // "/greet" speaks first, in the same turn as the handshake completes.
      if (req.url?.startsWith("/greet")) ws.send("welcome");
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function open(
    options: Partial<ConnectOptions> = {},
  ): Promise<{ client: OurClient; peer: WsPeer }> {
    const id = uniqueId();
    const client = await openOurClient(withId(server.url("/echo"), id), options);
    return { client, peer: await server.peer(id) };
  }

  it("agrees with ws on the subprotocol ws picks", async () => {
    const id = uniqueId();
    const client = await openOurClient(withId(server.url("/echo"), id), {
      protocols: ["chat.v1", "chat.v2", "chat.v3"],
    });
    const peer = await server.peer(id);
    expect(client.ws.protocol).toBe("chat.v2");
    expect(peer.ws.protocol).toBe("chat.v2");
    expect((await echo(client, "over chat.v2", false)).data.toString()).toBe("over chat.v2");
  });

  it("fails the connection when the server picks a subprotocol it never offered", async () => {
    // RFC 6455 section 4.1: the client must fail a handshake naming an unoffered subprotocol.
    await expect(
      within(
        connect(server.url("/rogue"), { protocols: ["chat.v1"] } as ConnectOptions),
        DEFAULT_WAIT_MS,
        "connect to /rogue to settle",
      ),
    ).rejects.toThrow();
  });

  it("rejects connect when the server refuses the handshake", async () => {
    await expect(
      within(
        connect(server.url("/forbidden"), {} as ConnectOptions),
        DEFAULT_WAIT_MS,
        "connect to /forbidden to settle",
      ),
    ).rejects.toThrow();
  });

  it("does not lose a message the server sends right after the handshake", async () => {
    const client = await openOurClient(server.url("/greet"));
    const greeting = await client.messages.next("the greeting");
    expect([greeting.data.toString(), greeting.isBinary]).toEqual(["welcome", false]);
  });

  it("refuses invalid close codes and over-long reasons in close() and stays open", async () => {
    const client = await openOurClient(server.url("/echo"));
    const notRefused: unknown[] = [];
    for (const code of INVALID_CLOSE_CODES) {
      try {
        client.ws.close(code, "nope");
        notRefused.push(code);
      } catch (err) {
        expect(err, `the refusal of ${code}`).toBeInstanceOf(Error);
      }
    }
    try {
      client.ws.close(1000, `${LONGEST_REASON}x`);
      notRefused.push("124-byte reason");
    } catch (err) {
      expect(err).toBeInstanceOf(Error);
    }
    expect(notRefused, "close() calls that were not refused").toEqual([]);
    expect(client.ws.readyState).toBe("open");
    expect((await echo(client, "still open", false)).data.toString()).toBe("still open");
  });

  it("carries the longest reason (123 bytes) both ways", async () => {
    let { client, peer } = await open();
    client.ws.close(4001, LONGEST_REASON);
    expect(await within(peer.closed, DEFAULT_WAIT_MS, "ws server close")).toMatchObject({
      code: 4001,
      reason: LONGEST_REASON,
    });
    ({ client, peer } = await open());
    peer.ws.close(4002, LONGEST_REASON);
    expect(await within(client.closed, DEFAULT_WAIT_MS, "client close")).toMatchObject({
      code: 4002,
      reason: LONGEST_REASON,
    });
  });

  it("reports 1005 when ws closes without a code, and emits close once", async () => {
    const { client, peer } = await open();
    peer.ws.close();
    const atClient = await within(client.closed, DEFAULT_WAIT_MS, "client close");
    expect([atClient.code, atClient.reason]).toEqual([1005, ""]);
    await within(peer.closed, DEFAULT_WAIT_MS, "ws server close");
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(client.closeEvents.length).toBe(1);
    expect(client.ws.readyState).toBe("closed");
  });

  it("closes with 1009 when ws sends more than maxMessageSize", async () => {
    const { client, peer } = await open({ maxMessageSize: MiB });
    peer.ws.send(patternBytes(MiB + 1));
    await expectFailedWith(client, "WS_ERR_MESSAGE_TOO_BIG", 1009);
    expect((await within(peer.closed, DEFAULT_WAIT_MS, "ws server close")).code).toBe(1009);
    expect(client.messages.all.length).toBe(0);
  });

  it("closes with 1007 when ws sends invalid UTF-8 as text", async () => {
    const { client, peer } = await open();
    peer.ws.send(Buffer.from([0x61, 0xc3, 0x28]), { binary: false });
    await expectFailedWith(client, "WS_ERR_INVALID_UTF8", 1007);
    expect((await within(peer.closed, DEFAULT_WAIT_MS, "ws server close")).code).toBe(1007);
    expect(client.messages.all.length).toBe(0);
  });
});
