// The server over real loopback sockets: createServer with Switchboard's client, the HTTP
// answers to requests that are not valid upgrades (read raw off a socket), verify, amending the
// response, subprotocols, shutdown, and handleUpgrade mounted on a node:http server of our own.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, connect as netConnect } from "node:net";
import type { Duplex } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import {
  connect,
  createServer,
  HandshakeError,
  handleUpgrade,
  type ServerOptions,
  type UpgradeHttpRequest,
  type WebSocketConnection,
  type WebSocketServer,
} from "../../src/index.js";
import { parseFrames, rawFrame, sleep, waitUntil, within } from "../connection/duplex-pair.js";

const WAIT = 5_000;
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

const cleanups: Array<() => unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A server that echoes every message with its type; closed after the test. */
async function echoServer(options: ServerOptions = {}): Promise<{
  server: WebSocketServer;
  accepted: Array<{ ws: WebSocketConnection; req: UpgradeHttpRequest }>;
}> {
  const server = await createServer({ closeTimeout: 500, ...options });
  const accepted: Array<{ ws: WebSocketConnection; req: UpgradeHttpRequest }> = [];
  server.on("connection", (ws, req) => {
    accepted.push({ ws, req });
    ws.on("error", () => undefined);
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  cleanups.push(() => within(server.close(), WAIT, "the server to close"));
  return { server, accepted };
}

function client(ws: WebSocketConnection): WebSocketConnection {
  cleanups.push(() => ws.terminate());
  return ws;
}

function nextMessage(ws: WebSocketConnection): Promise<{ data: Buffer; isBinary: boolean }> {
  return within(
    new Promise((resolve) => ws.once("message", (data, isBinary) => resolve({ data, isBinary }))),
    WAIT,
    "a message",
  );
}

function closeEvent(ws: WebSocketConnection, ms = WAIT): Promise<{ code: number; reason: string }> {
  return within(
    new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason }))),
    ms,
    "the close event",
  );
}

interface RawResponse {
  status: number;
  statusText: string;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  rawHeaders: string[];
  body: string;
  /** Bytes that followed the response head and body (frames, after a 101). */
  rest: Buffer;
}

/**
 * Writes `request` on a fresh socket and reads one HTTP response: its head and, when it has a
 * Content-Length, its body. Anything after that is returned as `rest`.
 */
async function rawExchange(
  port: number,
  request: string | Buffer,
  options: {
    extraWait?: (rest: Buffer) => boolean;
    keep?: boolean;
    wait?: number;
    /** Keep our side open after the server's FIN (net's allowHalfOpen). */
    halfOpen?: boolean;
  } = {},
): Promise<RawResponse & { socket: import("node:net").Socket }> {
  const socket = netConnect({ port, host: "127.0.0.1", allowHalfOpen: options.halfOpen ?? false });
  cleanups.push(() => socket.destroy());
  socket.on("error", () => undefined);
  socket.write(request);
  let received = Buffer.alloc(0);
  const parsed = await within(
    new Promise<RawResponse>((resolve, reject) => {
      const tryParse = (): boolean => {
        const end = received.indexOf("\r\n\r\n");
        if (end < 0) return false;
        const lines = received.subarray(0, end).toString("latin1").split("\r\n");
        const match = /^HTTP\/1\.1 (\d{3}) (.*)$/.exec(lines[0]);
        if (match === null) {
          reject(new Error(`not an HTTP response: ${lines[0]}`));
          return true;
        }
        const headers: Record<string, string> = {};
        const rawHeaders: string[] = [];
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(":");
          const name = line.slice(0, colon).toLowerCase();
          const value = line.slice(colon + 1).trim();
          rawHeaders.push(line);
          headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
        }
        const length = Number(headers["content-length"] ?? 0);
        const bodyStart = end + 4;
        if (received.length < bodyStart + length) return false;
        const rest = received.subarray(bodyStart + length);
        if (options.extraWait && !options.extraWait(rest)) return false;
        resolve({
          status: Number(match[1]),
          statusText: match[2],
          headers,
          rawHeaders,
          body: received.subarray(bodyStart, bodyStart + length).toString(),
          rest,
        });
        return true;
      };
      socket.on("data", (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        if (tryParse()) socket.removeAllListeners("data");
      });
      socket.on("end", () => {
        if (!tryParse()) reject(new Error(`connection ended after ${received.length} bytes`));
      });
    }),
    options.wait ?? WAIT,
    "an HTTP response",
  );
  if (!options.keep) socket.end();
  return { ...parsed, socket };
}

function upgradeRequest(
  options: { method?: string; path?: string; headers?: Record<string, string | null> } = {},
): string {
  const headers: Record<string, string | null> = {
    Host: "127.0.0.1",
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
    ...options.headers,
  };
  let head = `${options.method ?? "GET"} ${options.path ?? "/"} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    if (value !== null) head += `${name}: ${value}\r\n`;
  }
  return `${head}\r\n`;
}

function expectedAccept(key: string): string {
  return createHash("sha1")
    .update(key + GUID)
    .digest("base64");
}

describe("createServer and connect", () => {
  it("accepts a connection and echoes text and binary", async () => {
    const { server, accepted } = await echoServer();
    expect(server.url("/echo")).toBe(`ws://127.0.0.1:${server.port}/echo`);
    const ws = client(await connect(server.url("/echo?x=1")));
    expect(ws.readyState).toBe("open");
    expect(ws.protocol).toBe("");
    ws.send("héllo");
    expect(await nextMessage(ws)).toEqual({ data: Buffer.from("héllo"), isBinary: false });
    ws.send(Buffer.from([1, 2, 3]));
    expect(await nextMessage(ws)).toEqual({ data: Buffer.from([1, 2, 3]), isBinary: true });
    expect(accepted.length).toBe(1);
    expect(accepted[0].req.url).toBe("/echo?x=1");
    expect(server.connections.size).toBe(1);
  });

  it("forgets a connection once it closed", async () => {
    const { server } = await echoServer();
    const ws = client(await connect(server.url("/")));
    await waitUntil(() => server.connections.size === 1, WAIT, "the connection");
    ws.close(1000, "done");
    await closeEvent(ws);
    await waitUntil(() => server.connections.size === 0, WAIT, "the server to forget it");
  });

  it("closes TCP right after the closing handshake, without waiting for the client's FIN", async () => {
    // A close timeout far past WAIT: a server waiting for the FIN would not close in time.
    const { server, accepted } = await echoServer({ closeTimeout: 30_000 });
    const { rest, socket } = await rawExchange(server.port, upgradeRequest(), {
      keep: true,
      halfOpen: true,
    });
    expect(rest.length).toBe(0);
    await waitUntil(() => accepted.length === 1, WAIT, "the connection");
    const closed = closeEvent(accepted[0]!.ws);
    let received = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
    });
    const fin = once(socket, "end");
    // The client's close frame, and never its FIN (the socket stays open for writing).
    socket.write(rawFrame(0x8, Buffer.from([0x03, 0xe8]), { mask: true }));
    await within(fin, WAIT, "the server's FIN");
    expect(await closed).toEqual({ code: 1000, reason: "" });
    expect(parseFrames(received).map((f) => [f.opcode, [...f.payload]])).toEqual([
      [0x8, [0x03, 0xe8]],
    ]);
    await waitUntil(() => server.connections.size === 0, WAIT, "the server to forget it");
    expect(socket.writableEnded).toBe(false);
  });

  // Regression: bytes node:http read past the request head (`head`) were parsed inside the
  // WebSocketConnection constructor, so a message in them was emitted before the 'connection'
  // listener could attach its 'message' handler, and was lost.
  it("reads frames that arrived with the upgrade request itself (the head)", async () => {
    const { server } = await echoServer();
    const request = Buffer.concat([
      Buffer.from(upgradeRequest()),
      rawFrame(0x1, "early bird", { mask: true }),
    ]);
    const response = await rawExchange(server.port, request, {
      extraWait: (rest) => rest.length >= 12,
      wait: 1_000,
    });
    expect(response.status).toBe(101);
    expect(response.headers["sec-websocket-accept"]).toBe(expectedAccept(KEY));
    const frames = parseFrames(response.rest);
    expect(frames.map((f) => [f.opcode, f.payload.toString()])).toEqual([[0x1, "early bird"]]);
  });

  it("enforces maxMessageSize with close code 1009", async () => {
    const { server } = await echoServer({ maxMessageSize: 1000 });
    const ws = client(await connect(server.url("/")));
    const closed = closeEvent(ws);
    ws.send(Buffer.alloc(1001));
    expect((await closed).code).toBe(1009);
  });

  it("negotiates permessage-deflate when both sides turn it on", async () => {
    const { server, accepted } = await echoServer({ perMessageDeflate: { threshold: 10 } });
    const ws = client(await connect(server.url("/"), { perMessageDeflate: true }));
    expect(ws.extensions).toMatch(/^permessage-deflate/);
    await waitUntil(() => accepted.length === 1, WAIT, "the server side");
    expect(accepted[0].ws.extensions).toMatch(/^permessage-deflate/);
    const big = "compressible ".repeat(500);
    ws.send(big);
    expect((await nextMessage(ws)).data.toString()).toBe(big);
  });

  it("leaves permessage-deflate off unless the server turns it on", async () => {
    const { server } = await echoServer();
    const ws = client(await connect(server.url("/"), { perMessageDeflate: true }));
    expect(ws.extensions).toBe("");
    ws.send("still works");
    expect((await nextMessage(ws)).data.toString()).toBe("still works");
  });
});

describe("verify", () => {
  it("gives the rejection's status to the client: HandshakeError with status 404", async () => {
    let connections = 0;
    const { server } = await echoServer({
      verify: (req) => (req.url === "/missing" ? { status: 404 } : true),
    });
    server.on("connection", () => connections++);
    const error = await connect(server.url("/missing")).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(HandshakeError);
    expect(error).toMatchObject({ status: 404, code: "WS_ERR_HANDSHAKE_STATUS" });
    expect(connections).toBe(0);
    // Other paths are still accepted.
    client(await connect(server.url("/present")));
  });

  it("waits for an async verify and sends its status, body and headers", async () => {
    const { server } = await echoServer({
      verify: async () => {
        await sleep(5);
        return { status: 401, body: "who are you?", headers: { "WWW-Authenticate": "Bearer" } };
      },
    });
    const response = await rawExchange(server.port, upgradeRequest());
    expect(response.status).toBe(401);
    expect(response.headers["www-authenticate"]).toBe("Bearer");
    expect(response.body).toBe("who are you?");
  });

  it("answers 500 when verify throws", async () => {
    const { server } = await echoServer({
      verify: () => {
        throw new Error("database down");
      },
    });
    const response = await rawExchange(server.port, upgradeRequest());
    expect(response.status).toBe(500);
    expect(response.body).not.toContain("database down");
  });

  it("answers 500, not a crash, when selectProtocol picks a protocol the client never offered", async () => {
    const { server } = await echoServer({ selectProtocol: () => "not-offered" });
    const response = await rawExchange(
      server.port,
      upgradeRequest({ headers: { "Sec-WebSocket-Protocol": "chat.v1" } }),
    );
    expect(response.status).toBe(500);
    expect(response.body).not.toContain("not-offered");
  });

  it("closes with 1011 when the application's connection handler throws", async () => {
    const server = await createServer({ closeTimeout: 500 });
    cleanups.push(() => within(server.close(), WAIT, "the server to close"));
    server.on("connection", () => {
      throw new Error("handler bug");
    });
    const ws = client(await connect(server.url("/")));
    expect(await closeEvent(ws)).toEqual({ code: 1011, reason: "" });
  });

  // Regression: a client that left while an async verify was pending had already half-closed
  // the socket (its 'end' came and went before any WebSocketConnection listened), the socket was
  // still writable, so the upgrade went ahead and the connection never learned that its peer was
  // gone: no close event until a heartbeat failed, never with heartbeat off.
  it("survives a client that leaves while verify is pending", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let verifying = false;
    const { server, accepted } = await echoServer({
      heartbeat: false,
      verify: async (): Promise<true> => {
        verifying = true;
        await gate;
        return true;
      },
    });
    const socket = netConnect(server.port, "127.0.0.1");
    socket.on("error", () => undefined);
    socket.write(upgradeRequest());
    await waitUntil(() => verifying, WAIT, "verify to start");
    socket.destroy();
    await sleep(20);
    release();
    await sleep(20);
    // Either the upgrade is dropped, or the connection it made closes on its own (1006).
    for (const { ws } of accepted) {
      if (ws.readyState !== "closed") expect((await closeEvent(ws)).code).toBe(1006);
    }
    const ws = client(await connect(server.url("/")));
    ws.send("alive");
    expect((await nextMessage(ws)).data.toString()).toBe("alive");
  });
});

describe("invalid requests get HTTP answers", () => {
  it("answers a non-GET upgrade with 405 and Allow: GET", async () => {
    const { server } = await echoServer();
    const response = await rawExchange(server.port, upgradeRequest({ method: "POST" }));
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe("GET");
  });

  it("answers a bad Sec-WebSocket-Key with 400", async () => {
    const { server } = await echoServer();
    for (const key of ["not base64!", "dG9vIHNob3J0", null]) {
      const response = await rawExchange(
        server.port,
        upgradeRequest({ headers: { "Sec-WebSocket-Key": key } }),
      );
      expect(response.status, `key ${key}`).toBe(400);
    }
  });

  it("answers version 8 with 426 and Sec-WebSocket-Version: 13 (section 4.4)", async () => {
    const { server } = await echoServer();
    const response = await rawExchange(
      server.port,
      upgradeRequest({ headers: { "Sec-WebSocket-Version": "8" } }),
    );
    expect(response.status).toBe(426);
    expect(response.headers["sec-websocket-version"]).toBe("13");
  });

  it("answers a plain HTTP GET with 426 Upgrade Required", async () => {
    const { server } = await echoServer();
    const response = await rawExchange(
      server.port,
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    expect(response.status).toBe(426);
    expect(response.headers.upgrade).toBe("websocket");
  });

  it("never upgrades a refused request: no connection event, socket closed", async () => {
    const { server } = await echoServer();
    let connections = 0;
    server.on("connection", () => connections++);
    const response = await rawExchange(
      server.port,
      upgradeRequest({ headers: { Upgrade: "h2c" } }),
      { keep: true },
    );
    expect(response.status).toBe(400);
    if (!response.socket.readableEnded) await within(once(response.socket, "end"), WAIT, "end");
    expect(connections).toBe(0);
  });
});

describe("response and subprotocols", () => {
  it("sends amendResponse's headers (Set-Cookie) with the 101", async () => {
    const { server } = await echoServer({
      amendResponse: (response) => {
        response.headers.push(["Set-Cookie", "session=abc; HttpOnly"]);
      },
    });
    const response = await rawExchange(server.port, upgradeRequest());
    expect(response.status).toBe(101);
    expect(response.headers["set-cookie"]).toBe("session=abc; HttpOnly");
    expect(response.headers["sec-websocket-accept"]).toBe(expectedAccept(KEY));
    // Switchboard's client accepts the amended response as well, and shows its headers.
    const ws = client(await connect(server.url("/"), { headers: { "X-Trace": "t-1" } }));
    expect(ws.readyState).toBe("open");
    expect(ws.handshakeHeaders["set-cookie"]).toEqual(["session=abc; HttpOnly"]);
  });

  it("shows the server connection the request's handshake headers", async () => {
    const { server, accepted } = await echoServer();
    client(await connect(server.url("/"), { headers: { "X-Trace": "t-2" } }));
    await waitUntil(() => accepted.length === 1, WAIT, "the connection");
    expect(accepted[0].ws.handshakeHeaders["x-trace"]).toBe("t-2");
  });

  it("lets selectProtocol pick among the client's offer; both sides see the choice", async () => {
    const seen: string[][] = [];
    const { server, accepted } = await echoServer({
      selectProtocol: (offered) => {
        seen.push([...offered]);
        return offered.includes("chat.v2") ? "chat.v2" : undefined;
      },
    });
    const ws = client(await connect(server.url("/"), { protocols: ["chat.v1", "chat.v2"] }));
    expect(ws.protocol).toBe("chat.v2");
    await waitUntil(() => accepted.length === 1, WAIT, "the server side");
    expect(accepted[0].ws.protocol).toBe("chat.v2");
    expect(seen).toEqual([["chat.v1", "chat.v2"]]);

    const none = client(await connect(server.url("/"), { protocols: ["other"] }));
    expect(none.protocol).toBe("");
  });
});

describe("close()", () => {
  it("closes every client with 1001 and resolves", async () => {
    const server = await createServer({ closeTimeout: 1000 });
    server.on("connection", (ws) => ws.on("error", () => undefined));
    const clients = [
      client(await connect(server.url("/a"))),
      client(await connect(server.url("/b"))),
    ];
    await waitUntil(() => server.connections.size === 2, WAIT, "both connections");
    const closes = clients.map((ws) => closeEvent(ws));
    const url = server.url("/");
    await within(server.close(), WAIT, "server.close()");
    for (const closed of await Promise.all(closes)) expect(closed.code).toBe(1001);
    expect(server.connections.size).toBe(0);
    const refused = await connect(url).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toMatchObject({ code: "ECONNREFUSED" });
  });

  it("resolves at once with no clients", async () => {
    const server = await createServer();
    await within(server.close(), WAIT, "server.close()");
    expect(server.listening).toBe(false);
  });
});

describe("handleUpgrade on a node:http server of our own", () => {
  it("accepts upgrades on a server that also answers plain HTTP", async () => {
    const http = createHttpServer((_req, res) => res.end("plain http"));
    const accepted: WebSocketConnection[] = [];
    http.on("upgrade", (req: UpgradeHttpRequest, socket: Duplex, head: Buffer) => {
      if (req.url !== "/ws") {
        socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      void handleUpgrade(req, socket, head, { closeTimeout: 500 }, (ws) => {
        accepted.push(ws);
        ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
      });
    });
    http.listen(0, "127.0.0.1");
    await once(http, "listening");
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const ws of accepted) ws.terminate();
          http.closeAllConnections();
          http.close(() => resolve());
        }),
    );
    const { port } = http.address() as AddressInfo;

    const ws = client(await connect(`ws://127.0.0.1:${port}/ws`));
    ws.send("through handleUpgrade");
    expect((await nextMessage(ws)).data.toString()).toBe("through handleUpgrade");
    expect(accepted.length).toBe(1);

    const missing = await connect(`ws://127.0.0.1:${port}/elsewhere`).then(
      () => null,
      (e: unknown) => e,
    );
    expect(missing).toMatchObject({ status: 404 });

    const plain = await rawExchange(
      port,
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    expect(plain.status).toBe(200);
  });

  it("mounts a WebSocketServer's handleUpgrade on another server", async () => {
    const { server } = await echoServer();
    const http = createHttpServer();
    http.on("upgrade", (req: UpgradeHttpRequest, socket: Duplex, head: Buffer) =>
      server.handleUpgrade(req, socket, head),
    );
    http.listen(0, "127.0.0.1");
    await once(http, "listening");
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          http.closeAllConnections();
          http.close(() => resolve());
        }),
    );
    const { port } = http.address() as AddressInfo;
    const ws = client(await connect(`ws://127.0.0.1:${port}/`));
    ws.send("mounted");
    expect((await nextMessage(ws)).data.toString()).toBe("mounted");
    expect(server.connections.size).toBe(1);
  });
});

describe("backpressure options", () => {
  // Regression: with highWaterMark below the socket's own writable high-water mark (16 KiB), a
  // message larger than highWaterMark paused reading and nothing resumed it: the server stopped
  // reading that client for good (and server.close() then had to wait for the close timeout).
  it("keeps reading a client after sending it a message larger than highWaterMark", async () => {
    const server = await createServer({ highWaterMark: 1024, closeTimeout: 200 });
    cleanups.push(() => within(server.close(), WAIT, "the server to close"));
    const received: string[] = [];
    server.on("connection", (ws) => {
      ws.on("error", () => undefined);
      ws.on("message", (data) => {
        received.push(data.toString());
        if (received.length === 1) ws.send(Buffer.alloc(4096, 1));
      });
    });
    const ws = client(await connect(server.url("/")));
    ws.send("send me something big");
    expect((await nextMessage(ws)).data.length).toBe(4096);
    ws.send("still there?");
    await waitUntil(() => received.length === 2, WAIT, "the server to read").catch(() => undefined);
    expect(received).toEqual(["send me something big", "still there?"]);
  });
});
