// Switchboard's server against the `ws` package's client over real loopback sockets. The
// scenarios both directions share (message shapes, fragmentation both ways, 16 MiB messages,
// pings, every close code from each end, close() refusals and limits) live in common.case.ts;
// this file drives them from the server's side and adds what only a server does: negotiating
// permessage-deflate (RFC 7692) from a client's offer, selectProtocol and verify.
import type { IncomingMessage } from "node:http";
import { connect as netConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
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
  type EchoServer,
  expectDeflateParams,
  FORBIDDEN_PATH,
  FrameTap,
  MiB,
  type Observed,
  observe,
  parseExtensions,
  type ServerOptions,
  type ServerPeer,
  startEchoServer,
  terminatedAfterEach,
  uniqueId,
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

const openClients = terminatedAfterEach<WebSocket>();

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

/** Our server's end with ws's client: the client's tap reads the frames our server sent. */
function asConnection({ client, peer }: { client: WsClient; peer: ServerPeer }): Connection {
  return { ours: peer, foreign: client, tap: client.tap, serverSocket: peer.req.socket };
}

const DIRECTION: InteropDriver = {
  ours: "server",
  names: { client: "the client", server: "the server" },
};

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

  beforeAll(async () => {
    server = await startEchoServer({ maxMessageSize: 17 * MiB, ...config.server });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function open(): Promise<{ client: WsClient; peer: ServerPeer }> {
    const id = uniqueId();
    const client = await openWsClient(withId(server.url("/echo"), id), config.client);
    return { client, peer: await server.peer(id) };
  }

  it("negotiates permessage-deflate as configured", async () => {
    const { client, peer } = await open();
    if (config.expect === null) {
      expect(client.ws.extensions).toBe("");
      return;
    }
    expect(Object.keys(client.extensions)).toEqual(["permessage-deflate"]);
    expectDeflateParams(client.extensions, config.expect, "response");
    expect(describeExtensions(peer.ws.extensions)).toContain("permessage-deflate");
  });

  defineConfigurationCases({
    ...DIRECTION,
    open: async () => asConnection(await open()),
    deflate: config.expect !== null,
    large: config.large,
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

  defineEdgeCases({
    ...DIRECTION,
    // The server above allows 1 MiB in 4 fragments and compresses with threshold 0; ws's client
    // offers permessage-deflate by default.
    open: async ({ deflate } = {}) => {
      const options: WebSocket.ClientOptions =
        deflate === undefined ? {} : { perMessageDeflate: deflate ? { threshold: 0 } : false };
      return asConnection(await open(options));
    },
  });
});
