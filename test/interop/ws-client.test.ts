// Switchboard's server against the `ws` package's client over real loopback sockets: echo of
// every message shape, fragmentation both ways, 16 MiB messages, pings, every close code in both
// directions, and permessage-deflate (RFC 7692) in several negotiated configurations.
import type { IncomingMessage } from "node:http";
import { connect as netConnect } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  DEFAULT_WAIT_MS,
  describeExtensions,
  type EchoServer,
  expectFailedWith,
  FORBIDDEN_PATH,
  FrameTap,
  fromArray,
  INVALID_CLOSE_CODES,
  LARGE_WAIT_MS,
  LONGEST_REASON,
  MiB,
  multibyteText,
  type Observed,
  observe,
  parseExtensions,
  patternBytes,
  reasonFor,
  type ServerOptions,
  type ServerPeer,
  splitBytes,
  startEchoServer,
  uniqueId,
  VALID_CLOSE_CODES,
  withId,
  within,
} from "./helpers.js";

interface WsClient extends Observed {
  ws: WebSocket;
  /** Headers of the frames the client received, i.e. how the server framed its messages. */
  tap: FrameTap;
  /** The server's `Sec-WebSocket-Extensions` response, parsed. */
  extensions: ReturnType<typeof parseExtensions>;
}

const openClients = new Set<WebSocket>();

afterEach(() => {
  for (const ws of openClients) ws.terminate();
  openClients.clear();
});

/** Opens a ws client whose socket is tapped, resolving once the handshake completed. */
async function openWsClient(
  url: string,
  options: WebSocket.ClientOptions = {},
  protocols?: string[],
): Promise<WsClient> {
  let tap: FrameTap | undefined;
  const ws = new WebSocket(url, protocols, {
    ...options,
    createConnection: ((opts: { host?: string; port?: number }) => {
      const socket = netConnect({ host: opts.host ?? "127.0.0.1", port: Number(opts.port) });
      tap = new FrameTap(socket, { afterHttpHead: true });
      return socket;
    }) as unknown as WebSocket.ClientOptions["createConnection"],
  });
  openClients.add(ws);
  // ws's own `extensions` lists names only; the parameters are in the 101 response.
  let response: IncomingMessage | undefined;
  ws.once("upgrade", (res) => {
    response = res;
  });
  const observed = observe(ws);
  await within(
    new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) =>
        reject(new Error(`unexpected HTTP ${res.statusCode} from ${url}`)),
      );
    }),
    DEFAULT_WAIT_MS,
    `the ws client to open ${url}`,
  );
  return {
    ...observed,
    ws,
    tap: tap as FrameTap,
    extensions: parseExtensions(response?.headers["sec-websocket-extensions"]),
  };
}

/** Sends with ws and resolves once ws handed the frame to the socket. */
function wsSend(
  ws: WebSocket,
  data: string | Buffer,
  options: { binary?: boolean; fin?: boolean; compress?: boolean } = {},
): Promise<void> {
  return new Promise((resolve, reject) =>
    ws.send(data, options, (err) => (err ? reject(err) : resolve())),
  );
}

async function echo(
  client: WsClient,
  data: string | Buffer,
  binary: boolean,
  ms = DEFAULT_WAIT_MS,
): Promise<{ data: Buffer; isBinary: boolean }> {
  await wsSend(client.ws, data, { binary });
  return client.messages.next(`the echo of a ${Buffer.byteLength(data)}-byte message`, ms);
}

/** Waits until the socket is gone, so byte counters and close events are final. */
async function settle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 20));
}

interface DeflateCase {
  name: string;
  server: Partial<ServerOptions>;
  client: WebSocket.ClientOptions;
  /**
   * Negotiated extension parameters the server's response must carry (values or asymmetric
   * matchers), or null when no extension may be negotiated.
   */
  expect: Record<string, unknown> | null;
  /** Whether this configuration runs the 16 MiB round trips. */
  large: boolean;
}

const CASES: DeflateCase[] = [
  {
    name: "no compression",
    server: {},
    client: { perMessageDeflate: false },
    expect: null,
    large: true,
  },
  {
    name: "client offers deflate, server has it off",
    server: {},
    client: { perMessageDeflate: true },
    expect: null,
    large: false,
  },
  {
    name: "deflate with defaults on both sides",
    server: { perMessageDeflate: true },
    client: { perMessageDeflate: true },
    expect: {},
    large: true,
  },
  {
    name: "deflate, threshold 0",
    server: { perMessageDeflate: { threshold: 0 } },
    client: { perMessageDeflate: { threshold: 0 } },
    expect: {},
    large: false,
  },
  {
    name: "deflate, client asks no_context_takeover both ways",
    server: { perMessageDeflate: { threshold: 0 } },
    client: {
      perMessageDeflate: {
        threshold: 0,
        clientNoContextTakeover: true,
        serverNoContextTakeover: true,
      },
    },
    // RFC 7692 section 7.1.1.1: accepting the offer means echoing server_no_context_takeover;
    // echoing client_no_context_takeover is optional (section 7.1.1.2).
    expect: { server_no_context_takeover: true },
    large: false,
  },
  {
    name: "deflate, server imposes no_context_takeover both ways",
    server: {
      perMessageDeflate: {
        threshold: 0,
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
      },
    },
    client: { perMessageDeflate: { threshold: 0 } },
    expect: { client_no_context_takeover: true, server_no_context_takeover: true },
    large: false,
  },
  {
    name: "deflate, client asks window bits 9 (server) and 10 (client)",
    server: { perMessageDeflate: { threshold: 0 } },
    client: {
      perMessageDeflate: { threshold: 0, serverMaxWindowBits: 9, clientMaxWindowBits: 10 },
    },
    // RFC 7692 section 7.1.2.1: the response carries the same or a smaller value.
    expect: { server_max_window_bits: expect.stringMatching(/^[89]$/) },
    large: false,
  },
  {
    name: "deflate, server imposes window bits 10 (server) and 9 (client)",
    server: {
      perMessageDeflate: { threshold: 0, serverMaxWindowBits: 10, clientMaxWindowBits: 9 },
    },
    client: { perMessageDeflate: { threshold: 0 } },
    expect: { server_max_window_bits: "10", client_max_window_bits: "9" },
    large: true,
  },
];

describe.each(CASES)("Switchboard server, ws client: $name", (config) => {
  let server: EchoServer;
  const deflate = config.expect !== null;
  // Only some configurations run the big round trips: they are the slow part of the suite.
  const itLarge = config.large ? it : () => undefined;

  beforeAll(async () => {
    server = await startEchoServer({ maxMessageSize: 17 * MiB, ...config.server });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function open(path = "/echo"): Promise<{ client: WsClient; peer: ServerPeer }> {
    const id = uniqueId();
    const client = await openWsClient(withId(server.url(path), id), config.client);
    return { client, peer: await server.peer(id) };
  }

  it("negotiates permessage-deflate as configured", async () => {
    const { client, peer } = await open();
    if (config.expect === null) {
      expect(client.ws.extensions).toBe("");
      return;
    }
    expect(Object.keys(client.extensions)).toEqual(["permessage-deflate"]);
    const params = client.extensions["permessage-deflate"];
    for (const [key, value] of Object.entries(config.expect)) {
      expect(params[key], `response parameter ${key}`).toEqual(value);
    }
    expect(describeExtensions(peer.ws.extensions)).toContain("permessage-deflate");
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
      expect(echoed.data.equals(Buffer.from(data))).toBe(true);
      const seen = await peer.messages.next("the server's message event");
      expect(seen.isBinary).toBe(binary);
      expect(seen.wasBuffer, "the server hands payloads over as Buffers").toBe(true);
      expect(seen.data.equals(Buffer.from(data))).toBe(true);
    }
    // RFC 6455 section 5.1: a server must not mask what it sends.
    expect(client.tap.frames.every((f) => !f.masked)).toBe(true);
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
    const framesBefore = client.tap.dataFrames.length;
    const payload = Buffer.alloc(MiB, "switchboard ");
    const echoed = await echo(client, payload, true);
    expect(echoed.data.equals(payload)).toBe(true);
    const read = socket.bytesRead - readBefore;
    const written = socket.bytesWritten - writtenBefore;
    const frames = client.tap.dataFrames.slice(framesBefore);
    if (deflate) {
      expect(read, "bytes the server read for a 1 MiB compressible message").toBeLessThan(MiB / 4);
      expect(written, "bytes the server wrote for a 1 MiB compressible message").toBeLessThan(
        MiB / 4,
      );
      expect(frames[0]?.rsv1, "RSV1 marks the server's compressed message").toBe(true);
    } else {
      expect(read).toBeGreaterThan(MiB);
      expect(written).toBeGreaterThan(MiB);
      expect(frames.every((f) => !f.rsv1)).toBe(true);
    }
  });

  it("reassembles messages the ws client fragments", async () => {
    const { client, peer } = await open();

    const binary = patternBytes(30_000);
    const [b1, b2, b3] = splitBytes(binary, 3);
    await wsSend(client.ws, b1, { binary: true, fin: false });
    await wsSend(client.ws, b2, { fin: false });
    await wsSend(client.ws, b3, { fin: true });
    let seen = await peer.messages.next("the fragmented binary message");
    expect(seen.isBinary).toBe(true);
    expect(seen.data.equals(binary)).toBe(true);
    expect((await client.messages.next("its echo")).data.equals(binary)).toBe(true);

    // A multibyte character split across fragments is valid: UTF-8 is checked per message
    // (RFC 6455 section 5.6), not per frame.
    const text = Buffer.from("a€b🚀c");
    await wsSend(client.ws, text.subarray(0, 2), { binary: false, fin: false });
    await wsSend(client.ws, text.subarray(2, 6), { fin: false });
    await wsSend(client.ws, text.subarray(6), { fin: false });
    await wsSend(client.ws, Buffer.alloc(0), { fin: true });
    seen = await peer.messages.next("the fragmented text message");
    expect(seen.isBinary).toBe(false);
    expect(seen.data.toString("utf8")).toBe("a€b🚀c");
    const echoed = await client.messages.next("its echo");
    expect(echoed.isBinary).toBe(false);
    expect(echoed.data.toString("utf8")).toBe("a€b🚀c");

    // Control frames may be injected between fragments (RFC 6455 section 5.4).
    await wsSend(client.ws, Buffer.from("first "), { binary: false, fin: false });
    client.ws.ping(Buffer.from("between fragments"));
    expect((await client.pongs.next("the pong between fragments")).toString()).toBe(
      "between fragments",
    );
    await wsSend(client.ws, Buffer.from("second"), { fin: true });
    seen = await peer.messages.next("the message around the ping");
    expect(seen.data.toString()).toBe("first second");
    expect((await client.messages.next("its echo")).data.toString()).toBe("first second");
  });

  it("sends a fragmented message with sendStream that ws reassembles", async () => {
    const { client, peer } = await open();
    const framesBefore = client.tap.dataFrames.length;
    const binary = patternBytes(40_000);
    const pieces = splitBytes(binary, 4);
    await within(
      peer.ws.sendStream(fromArray(pieces), { binary: true }),
      DEFAULT_WAIT_MS,
      "sendStream of 4 binary pieces",
    );
    let got = await client.messages.next("the streamed binary message");
    expect(got.isBinary).toBe(true);
    expect(got.data.equals(binary)).toBe(true);

    const text = Buffer.from("stream: a€b🚀c ✓");
    await peer.ws.sendStream(
      fromArray([text.subarray(0, 9), text.subarray(9, 12), text.subarray(12)]),
      {
        binary: false,
      },
    );
    got = await client.messages.next("the streamed text message");
    expect(got.isBinary).toBe(false);
    expect(got.data.toString("utf8")).toBe("stream: a€b🚀c ✓");

    await peer.ws.sendStream(fromArray(["str", "ing ", "chunks"]), { binary: false });
    got = await client.messages.next("the streamed string chunks");
    expect(got.isBinary).toBe(false);
    expect(got.data.toString()).toBe("string chunks");

    const frames = client.tap.dataFrames.slice(framesBefore);
    expect(frames.length, "a streamed message spans several frames").toBeGreaterThan(3);
    // Per message: one opening frame with the opcode, continuations after, FIN on the last.
    const openings = frames.filter((f) => f.opcode !== 0);
    expect(openings.map((f) => f.opcode)).toEqual([2, 1, 1]);
    expect(frames.filter((f) => f.fin).length).toBe(3);
    // RFC 7692 section 6.1: RSV1 only ever on the first frame of a message.
    expect(frames.filter((f) => f.opcode === 0).every((f) => !f.rsv1)).toBe(true);
  });

  itLarge("echoes 16 MiB binary and text messages both ways", async () => {
    const { client, peer } = await open();
    const binary = patternBytes(16 * MiB);
    let echoed = await echo(client, binary, true, LARGE_WAIT_MS);
    expect(echoed.isBinary).toBe(true);
    expect(echoed.data.length).toBe(16 * MiB);
    expect(echoed.data.equals(binary)).toBe(true);
    expect((await peer.messages.next("the server's 16 MiB message")).data.equals(binary)).toBe(
      true,
    );

    const text = multibyteText(16 * MiB);
    echoed = await echo(client, text, false, LARGE_WAIT_MS);
    expect(echoed.isBinary).toBe(false);
    expect(echoed.data.length).toBe(16 * MiB);
    expect(echoed.data.toString("utf8") === text).toBe(true);
  });

  it("answers the client's pings with the same payload and reports them", async () => {
    const { client, peer } = await open();
    for (const payload of [Buffer.alloc(0), Buffer.from("ping ✓"), patternBytes(125)]) {
      client.ws.ping(payload);
      const pong = await client.pongs.next(`the pong for a ${payload.length}-byte ping`);
      expect(pong.equals(payload)).toBe(true);
      expect((await peer.pings.next("the server's ping event")).equals(payload)).toBe(true);
    }
  });

  it("pings the client and sees its pong", async () => {
    const { client, peer } = await open();
    for (const payload of [Buffer.alloc(0), Buffer.from("from the server"), patternBytes(125)]) {
      peer.ws.ping(payload);
      expect((await client.pings.next("the client's ping event")).equals(payload)).toBe(true);
      const pong = await peer.pongs.next(`the pong for a ${payload.length}-byte server ping`);
      expect(pong.equals(payload)).toBe(true);
    }
  });

  it("delivers every valid close code and reason the client sends", async () => {
    const observed: unknown[] = [];
    const expected: unknown[] = [];
    for (const code of VALID_CLOSE_CODES) {
      const { client, peer } = await open();
      client.ws.close(code, reasonFor(code));
      const atServer = await within(peer.closed, DEFAULT_WAIT_MS, `server close for ${code}`);
      const atClient = await within(client.closed, DEFAULT_WAIT_MS, `client close for ${code}`);
      observed.push({
        code,
        server: [atServer.code, atServer.reason, typeof atServer.rawReason],
        // The closing handshake completed: the client got a close frame back, not 1006.
        clientGotCloseFrame: atClient.code !== 1006,
      });
      expected.push({
        code,
        server: [code, reasonFor(code), "string"],
        clientGotCloseFrame: true,
      });
    }
    expect(observed).toEqual(expected);
  });

  it("delivers every valid close code and reason the server sends", async () => {
    const observed: unknown[] = [];
    const expected: unknown[] = [];
    for (const code of VALID_CLOSE_CODES) {
      const { client, peer } = await open();
      peer.ws.close(code, reasonFor(code));
      const atClient = await within(client.closed, DEFAULT_WAIT_MS, `client close for ${code}`);
      const atServer = await within(peer.closed, DEFAULT_WAIT_MS, `server close for ${code}`);
      // ws echoes the code and reason it received, so the server sees them come back.
      observed.push({ code, client: [atClient.code, atClient.reason], server: atServer.code });
      expected.push({ code, client: [code, reasonFor(code)], server: code });
    }
    expect(observed).toEqual(expected);
  });
});

describe("Switchboard server, ws client: handshake, limits and close edge cases", () => {
  let server: EchoServer;

  beforeAll(async () => {
    server = await startEchoServer({
      maxMessageSize: MiB,
      maxFragments: 4,
      perMessageDeflate: { threshold: 0 },
      selectProtocol: (offered: readonly string[]) => offered.find((p) => p === "chat.v2"),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function open(
    options: WebSocket.ClientOptions = {},
    protocols?: string[],
  ): Promise<{ client: WsClient; peer: ServerPeer }> {
    const id = uniqueId();
    const client = await openWsClient(withId(server.url("/echo"), id), options, protocols);
    return { client, peer: await server.peer(id) };
  }

  it("agrees with ws on the subprotocol picked by selectProtocol", async () => {
    const { client, peer } = await open({}, ["chat.v1", "chat.v2", "chat.v3"]);
    expect(client.ws.protocol).toBe("chat.v2");
    expect(peer.ws.protocol).toBe("chat.v2");
    const echoed = await echo(client, "over chat.v2", false);
    expect(echoed.data.toString()).toBe("over chat.v2");
  });

  it("answers without a subprotocol when none it knows is offered", async () => {
    // The handshake then carries no Sec-WebSocket-Protocol (RFC 6455 section 4.2.2); ws treats
    // that as a failure since it offered some, so only the response is checked here.
    const ws = new WebSocket(server.url("/echo"), ["other"]);
    openClients.add(ws);
    const headers = await within(
      new Promise<IncomingMessage["headers"] | string>((resolve) => {
        ws.once("upgrade", (res) => resolve(res.headers));
        ws.once("unexpected-response", (_req, res) => resolve(`HTTP ${res.statusCode}`));
        ws.once("error", (err) => resolve(err.message));
      }),
      DEFAULT_WAIT_MS,
      "the handshake response",
    );
    expect(typeof headers).toBe("object");
    expect((headers as IncomingMessage["headers"])["sec-websocket-protocol"]).toBeUndefined();
  });

  it("lets ws see a verify rejection as an unexpected 404 response", async () => {
    const ws = new WebSocket(server.url(`${FORBIDDEN_PATH}/x`));
    openClients.add(ws);
    const outcome = await within(
      new Promise<{ status?: number; body?: string; opened?: true; error?: string }>((resolve) => {
        ws.once("open", () => resolve({ opened: true }));
        ws.once("error", (err) => resolve({ error: err.message }));
        ws.once("unexpected-response", (_req, res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            body += chunk;
          });
          res.on("end", () => resolve({ status: res.statusCode, body }));
        });
      }),
      DEFAULT_WAIT_MS,
      "the outcome of a rejected handshake",
    );
    expect(outcome).toEqual({ status: 404, body: "no such service" });
  });

  it("refuses invalid close codes and over-long reasons in close() and stays open", async () => {
    const { client, peer } = await open();
    const notRefused: unknown[] = [];
    for (const code of INVALID_CLOSE_CODES) {
      try {
        peer.ws.close(code, "nope");
        notRefused.push(code);
      } catch (err) {
        expect(err, `the refusal of ${code}`).toBeInstanceOf(Error);
      }
    }
    const tooLong = `${LONGEST_REASON}x`; // 124 bytes
    try {
      peer.ws.close(1000, tooLong);
      notRefused.push("124-byte reason");
    } catch (err) {
      expect(err).toBeInstanceOf(Error);
    }
    expect(notRefused, "close() calls that were not refused").toEqual([]);
    expect(peer.ws.readyState).toBe("open");
    expect((await echo(client, "still open", false)).data.toString()).toBe("still open");
  });

  it("carries the longest reason (123 bytes) both ways", async () => {
    let { client, peer } = await open();
    client.ws.close(4001, LONGEST_REASON);
    expect(await within(peer.closed, DEFAULT_WAIT_MS, "server close")).toMatchObject({
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

  it("reports 1005 when the client closes without a code, and emits close once", async () => {
    const { client, peer } = await open();
    client.ws.close();
    const atServer = await within(peer.closed, DEFAULT_WAIT_MS, "server close");
    expect([atServer.code, atServer.reason]).toEqual([1005, ""]);
    await within(client.closed, DEFAULT_WAIT_MS, "client close");
    await settle();
    expect(peer.closeEvents.length).toBe(1);
    expect(peer.ws.readyState).toBe("closed");
  });

  it("closes with 1009 when a message exceeds maxMessageSize", async () => {
    const { client, peer } = await open({ perMessageDeflate: false });
    client.ws.send(patternBytes(MiB + 1));
    expect((await within(client.closed, DEFAULT_WAIT_MS, "client close")).code).toBe(1009);
    await expectFailedWith(peer, "WS_ERR_MESSAGE_TOO_BIG", 1009);
    expect(peer.messages.all.length).toBe(0);
  });

  it("closes with 1009 when a small compressed message inflates past maxMessageSize", async () => {
    const { client, peer } = await open({ perMessageDeflate: { threshold: 0 } });
    expect(client.extensions["permessage-deflate"]).toBeDefined();
    const readBefore = peer.req.socket.bytesRead;
    client.ws.send(Buffer.alloc(4 * MiB));
    expect((await within(client.closed, DEFAULT_WAIT_MS, "client close")).code).toBe(1009);
    await expectFailedWith(peer, "WS_ERR_MESSAGE_TOO_BIG", 1009);
    expect(peer.req.socket.bytesRead - readBefore, "the bomb was small on the wire").toBeLessThan(
      64 * 1024,
    );
    expect(peer.messages.all.length).toBe(0);
  });

  it("closes with 1009 past maxFragments but accepts fewer fragments", async () => {
    const { client, peer } = await open({ perMessageDeflate: false });
    await wsSend(client.ws, Buffer.from("ab"), { binary: true, fin: false });
    await wsSend(client.ws, Buffer.from("cd"), { fin: true });
    expect((await client.messages.next("echo of 2 fragments")).data.toString()).toBe("abcd");
    // Once the server has closed, ws refuses further sends; those refusals are expected.
    for (let i = 0; i < 10; i++) {
      const options = i === 0 ? { binary: true, fin: false } : { fin: i === 9 };
      await wsSend(client.ws, Buffer.from([i]), options).catch(() => undefined);
    }
    expect((await within(client.closed, DEFAULT_WAIT_MS, "client close")).code).toBe(1009);
    await expectFailedWith(peer, "WS_ERR_TOO_MANY_FRAGMENTS", 1009);
    expect(peer.messages.all.length).toBe(1);
  });

  it("closes with 1007 on invalid UTF-8 in a text message, whole or fragmented", async () => {
    let { client, peer } = await open({ perMessageDeflate: false });
    client.ws.send(Buffer.from([0x61, 0xc3, 0x28]), { binary: false });
    expect((await within(client.closed, DEFAULT_WAIT_MS, "client close")).code).toBe(1007);
    await expectFailedWith(peer, "WS_ERR_INVALID_UTF8", 1007);
    expect(peer.messages.all.length).toBe(0);

    ({ client, peer } = await open({ perMessageDeflate: false }));
    // A truncated sequence at the end of the message is invalid even though each fragment
    // could be the prefix of a valid one.
    await wsSend(client.ws, Buffer.from("ok "), { binary: false, fin: false });
    await wsSend(client.ws, Buffer.from([0xe2, 0x82]), { fin: true });
    expect((await within(client.closed, DEFAULT_WAIT_MS, "client close")).code).toBe(1007);
    await expectFailedWith(peer, "WS_ERR_INVALID_UTF8", 1007);
    expect(peer.messages.all.length).toBe(0);
  });
});
