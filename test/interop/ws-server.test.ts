// Switchboard's client (`connect`) against the `ws` package's WebSocketServer over real loopback
// sockets. The scenarios both directions share (message shapes, fragmentation both ways, 16 MiB
// messages, pings, every close code from each end, close() refusals and limits) live in
// common.case.ts; this file drives them from the client's side and adds what only a client
// does: offering permessage-deflate (RFC 7692), checking the server's subprotocol and handshake.
import type { EventEmitter } from "node:events";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { type ConnectOptions, connect, type WebSocketConnection } from "../../src/index.js";
import {
  type Connection,
  defineConfigurationCases,
  defineEdgeCases,
  echo,
  type InteropDriver,
} from "./common.case.js";
import {
  DEFAULT_WAIT_MS,
  describeExtensions,
  expectDeflateParams,
  FrameTap,
  Inbox,
  MiB,
  type Observed,
  observe,
  parseExtensions,
  terminatedAfterEach,
  uniqueId,
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

const openClients = terminatedAfterEach<WebSocketConnection>();

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

/** Our client's end with ws's server: the server's tap reads the frames our client sent. */
function asConnection({ client, peer }: { client: OurClient; peer: WsPeer }): Connection {
  return { ours: client, foreign: peer, tap: peer.tap, serverSocket: peer.req.socket };
}

const DIRECTION: InteropDriver = {
  ours: "client",
  names: { client: "the client", server: "the ws server" },
};

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

  beforeAll(async () => {
    server = await startWsServer({ maxPayload: 17 * MiB, ...config.server });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function open(): Promise<{ client: OurClient; peer: WsPeer }> {
    const id = uniqueId();
    const client = await openOurClient(withId(server.url("/echo"), id), {
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
      expectDeflateParams(peer.offered, config.offer, "offered");
    }
    if (config.accepted === null) {
      expect(peer.accepted).toEqual({});
      expect(peer.ws.extensions).toBe("");
      expect(describeExtensions(client.ws.extensions)).not.toContain("permessage-deflate");
      return;
    }
    expect(peer.ws.extensions).toBe("permessage-deflate");
    expectDeflateParams(peer.accepted, config.accepted, "accepted");
    expect(describeExtensions(client.ws.extensions)).toContain("permessage-deflate");
  });

  defineConfigurationCases({
    ...DIRECTION,
    open: async () => asConnection(await open()),
    deflate: config.accepted !== null,
    large: config.large,
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
    const { client, peer } = await open({ protocols: ["chat.v1", "chat.v2", "chat.v3"] });
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

  defineEdgeCases({
    ...DIRECTION,
    // The server above compresses with threshold 0 when offered; our client offers nothing by
    // default.
    open: async ({ deflate } = {}) =>
      asConnection(
        await open({
          maxMessageSize: MiB,
          maxFragments: 4,
          ...(deflate === undefined ? {} : { perMessageDeflate: deflate }),
        }),
      ),
  });
});
