// connect() over real loopback sockets: against Switchboard's server, and against tiny raw
// servers that answer exactly what a test needs (a bad accept, an unoffered subprotocol, a
// status other than 101, nothing at all) so every check of RFC 6455 section 4.1 is exercised.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createServer as createNetServer, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import {
  connect,
  createServer,
  HandshakeError,
  type ServerOptions,
  type WebSocketConnection,
  type WebSocketServer,
} from "../../src/index.js";
import { parseFrames, rawFrame, waitUntil, within } from "../connection/duplex-pair.js";

const WAIT = 5_000;
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const cleanups: Array<() => unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function accept(key: string): string {
  return createHash("sha1")
    .update(key + GUID)
    .digest("base64");
}

async function echoServer(options: ServerOptions = {}): Promise<{
  server: WebSocketServer;
  accepted: Array<{ ws: WebSocketConnection; headers: Record<string, unknown> }>;
}> {
  const server = await createServer({ closeTimeout: 500, ...options });
  const accepted: Array<{ ws: WebSocketConnection; headers: Record<string, unknown> }> = [];
  server.on("connection", (ws, req) => {
    accepted.push({ ws, headers: { ...req.headers } });
    ws.on("error", () => undefined);
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  cleanups.push(() => within(server.close(), WAIT, "the server to close"));
  return { server, accepted };
}

function tracked(ws: WebSocketConnection): WebSocketConnection {
  cleanups.push(() => ws.terminate());
  return ws;
}

interface RawRequest {
  requestLine: string;
  headers: Record<string, string>;
  socket: Socket;
}

/**
 * A TCP server that reads one HTTP request head and hands it to `respond`. It records every
 * socket, and whether each was closed, so tests can check that the client let go.
 */
async function rawServer(respond: (request: RawRequest) => void) {
  const sockets: Socket[] = [];
  const closed = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.push(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => closed.add(socket));
    let buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      const lines = buffer.subarray(0, end).toString("latin1").split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      respond({ requestLine: lines[0], headers, socket });
    };
    socket.on("data", onData);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return { url: `ws://127.0.0.1:${port}/`, sockets, closed };
}

/** A 101 response; `headers` replace or add to a correct one. */
function switching(key: string, headers: Record<string, string | null> = {}): string {
  const all: Record<string, string | null> = {
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Accept": accept(key),
    ...headers,
  };
  let out = "HTTP/1.1 101 Switching Protocols\r\n";
  for (const [name, value] of Object.entries(all)) {
    if (value !== null) out += `${name}: ${value}\r\n`;
  }
  return `${out}\r\n`;
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return within(
    promise.then(
      (ws) => {
        (ws as WebSocketConnection).terminate();
        return new Error("connect() resolved");
      },
      (error: unknown) => error,
    ),
    WAIT,
    "connect() to settle",
  );
}

describe("connect() to Switchboard's server", () => {
  it("opens a connection that exchanges messages and closes cleanly", async () => {
    const { server, accepted } = await echoServer();
    const ws = tracked(await connect(server.url("/chat?room=1")));
    expect(ws.readyState).toBe("open");
    const received = new Promise<Buffer>((resolve) => ws.once("message", resolve));
    ws.send("ping me back");
    expect((await within(received, WAIT, "the echo")).toString()).toBe("ping me back");
    await waitUntil(() => accepted.length === 1, WAIT, "the server side");
    const serverClosed = new Promise<[number, string]>((resolve) =>
      accepted[0].ws.once("close", (code, reason) => resolve([code, reason])),
    );
    const clientClosed = new Promise<number>((resolve) => ws.once("close", resolve));
    ws.close(1000, "bye");
    expect(await within(serverClosed, WAIT, "the server's close event")).toEqual([1000, "bye"]);
    expect(await within(clientClosed, WAIT, "the client's close event")).toBe(1000);
  });

  it("keeps reading while its own output is backed up, so an echo of 24 MiB cannot deadlock", async () => {
    // The server stops reading while its replies are not taken; a client that did the same
    // while its requests are not taken would wait on the server forever.
    const { server } = await echoServer();
    const ws = tracked(await connect(server.url("/")));
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    let echoed = 0;
    let bytes = 0;
    ws.on("message", (data: Buffer) => {
      echoed++;
      bytes += data.length;
    });
    for (let i = 0; i < 24; i++) ws.send(chunk);
    await waitUntil(() => echoed === 24, 20_000, "24 echoes of 1 MiB");
    expect(bytes).toBe(24 * chunk.length);
  });

  it("sends extra headers and the origin with the request", async () => {
    const { server, accepted } = await echoServer();
    tracked(
      await connect(server.url("/"), {
        headers: { Authorization: "Bearer t0ken", "X-Trace": "42" },
        origin: "https://example.test",
      }),
    );
    await waitUntil(() => accepted.length === 1, WAIT, "the server side");
    expect(accepted[0].headers).toMatchObject({
      authorization: "Bearer t0ken",
      "x-trace": "42",
      origin: "https://example.test",
    });
  });

  it("refuses extra headers that would override the handshake's own", async () => {
    const { server } = await echoServer();
    // A programming error: a TypeError, whether thrown at once or as the rejection.
    const error = await (async () =>
      connect(server.url("/"), { headers: { "Sec-WebSocket-Key": "x" } }))().then(
      (ws) => {
        ws.terminate();
        return null;
      },
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(TypeError);
  });

  it("rejects a non-101 answer with the status in a HandshakeError", async () => {
    const { server } = await echoServer({ verify: () => ({ status: 403 }) });
    const error = await failure(connect(server.url("/")));
    expect(error).toBeInstanceOf(HandshakeError);
    expect(error).toMatchObject({ code: "WS_ERR_HANDSHAKE_STATUS", status: 403 });
  });

  it("rejects ws:// URLs with a fragment and other schemes", async () => {
    await expect(connect("ws://127.0.0.1:1/#frag")).rejects.toThrow(TypeError);
    await expect(connect("http://127.0.0.1:1/")).rejects.toThrow(TypeError);
  });

  it("rejects when nothing listens on the port", async () => {
    const { url } = await rawServer(() => undefined);
    const { port } = new URL(url);
    await within(
      (async () => {
        const probe = createNetServer();
        probe.listen(0, "127.0.0.1");
        await once(probe, "listening");
        const free = (probe.address() as { port: number }).port;
        await new Promise<void>((resolve) => probe.close(() => resolve()));
        expect(free).not.toBe(Number(port));
        expect(await failure(connect(`ws://127.0.0.1:${free}/`))).toMatchObject({
          code: "ECONNREFUSED",
        });
      })(),
      WAIT,
      "the refusal",
    );
  });
});

describe("connect() checks the server's answer (section 4.1)", () => {
  it("rejects a 200 from a server that does not speak WebSocket", async () => {
    const { url } = await rawServer(({ socket }) => {
      socket.end("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    });
    expect(await failure(connect(url))).toMatchObject({
      name: "HandshakeError",
      code: "WS_ERR_HANDSHAKE_STATUS",
      status: 200,
    });
  });

  it("rejects a wrong Sec-WebSocket-Accept and drops the socket", async () => {
    const { url, sockets, closed } = await rawServer(({ headers, socket }) => {
      socket.write(
        switching(headers["sec-websocket-key"], {
          "Sec-WebSocket-Accept": accept("AAAAAAAAAAAAAAAAAAAAAA=="),
        }),
      );
    });
    const error = await failure(connect(url));
    expect(error).toBeInstanceOf(HandshakeError);
    expect(error).toMatchObject({ code: "WS_ERR_HANDSHAKE_ACCEPT", status: 101 });
    await waitUntil(() => closed.has(sockets[0]), WAIT, "the client to drop the socket");
  });

  it("rejects a missing Sec-WebSocket-Accept", async () => {
    const { url } = await rawServer(({ headers, socket }) => {
      socket.write(switching(headers["sec-websocket-key"], { "Sec-WebSocket-Accept": null }));
    });
    expect(await failure(connect(url))).toMatchObject({ code: "WS_ERR_HANDSHAKE_ACCEPT" });
  });

  it("rejects a 101 without Upgrade: websocket", async () => {
    const { url } = await rawServer(({ headers, socket }) => {
      socket.write(switching(headers["sec-websocket-key"], { Upgrade: "h2c" }));
    });
    expect(await failure(connect(url))).toMatchObject({ code: "WS_ERR_HANDSHAKE_UPGRADE" });
  });

  it("rejects a subprotocol it did not offer", async () => {
    const { url } = await rawServer(({ headers, socket }) => {
      socket.write(
        switching(headers["sec-websocket-key"], { "Sec-WebSocket-Protocol": "superchat" }),
      );
    });
    expect(await failure(connect(url, { protocols: ["chat"] }))).toMatchObject({
      code: "WS_ERR_HANDSHAKE_PROTOCOL",
    });
    expect(await failure(connect(url))).toMatchObject({ code: "WS_ERR_HANDSHAKE_PROTOCOL" });
  });

  it("accepts the subprotocol it offered, and sends its offer in order", async () => {
    let offered = "";
    const { url } = await rawServer(({ headers, socket }) => {
      offered = headers["sec-websocket-protocol"];
      socket.write(switching(headers["sec-websocket-key"], { "Sec-WebSocket-Protocol": "b" }));
    });
    const ws = tracked(await connect(url, { protocols: ["a", "b"] }));
    expect(offered).toBe("a, b");
    expect(ws.protocol).toBe("b");
  });

  it("rejects an extension it did not offer", async () => {
    const { url } = await rawServer(({ headers, socket }) => {
      socket.write(
        switching(headers["sec-websocket-key"], {
          "Sec-WebSocket-Extensions": "permessage-deflate",
        }),
      );
    });
    expect(await failure(connect(url))).toMatchObject({ code: "WS_ERR_HANDSHAKE_EXTENSION" });
  });

  it("times out against a server that never answers, and drops the socket", async () => {
    const { url, sockets, closed } = await rawServer(() => undefined);
    const error = await failure(connect(url, { handshakeTimeout: 50 }));
    expect(error).toBeInstanceOf(HandshakeError);
    expect(error).toMatchObject({ code: "WS_ERR_HANDSHAKE_TIMEOUT" });
    await waitUntil(() => closed.has(sockets[0]), WAIT, "the client to drop the socket");
  });

  it("speaks WebSocket after a valid 101: masked frames out, unmasked frames in", async () => {
    let serverSocket!: Socket;
    const { url } = await rawServer(({ headers, socket }) => {
      serverSocket = socket;
      socket.write(switching(headers["sec-websocket-key"]));
    });
    const ws = tracked(await connect(url));
    const fromClient: Buffer[] = [];
    serverSocket.on("data", (chunk: Buffer) => fromClient.push(chunk));
    ws.send("hello raw server");
    await waitUntil(
      () => parseFrames(Buffer.concat(fromClient)).length === 1,
      WAIT,
      "the client's frame",
    );
    const [frame] = parseFrames(Buffer.concat(fromClient));
    expect(frame).toMatchObject({ opcode: 0x1, fin: true, masked: true });
    expect(frame.payload.toString()).toBe("hello raw server");

    const received = new Promise<Buffer>((resolve) => ws.once("message", resolve));
    serverSocket.write(rawFrame(0x1, "hello client", { mask: false }));
    expect((await within(received, WAIT, "the server's frame")).toString()).toBe("hello client");
  });

  // Regression: bytes that arrived with the 101 response (node:http's `head`) were parsed in the
  // WebSocketConnection constructor, before connect() even resolved, so a message the server
  // sent right after its 101 was emitted with no listener and lost.
  it("delivers a message that arrived in the same packet as the 101", async () => {
    const { url } = await rawServer(({ headers, socket }) => {
      socket.write(
        Buffer.concat([
          Buffer.from(switching(headers["sec-websocket-key"])),
          rawFrame(0x1, "welcome", { mask: false }),
        ]),
      );
    });
    const ws = tracked(await connect(url));
    const received = new Promise<Buffer>((resolve) => ws.once("message", resolve));
    const message = await within(received, 1_000, "the welcome message").catch(
      (error: Error) => error,
    );
    expect(message).toEqual(Buffer.from("welcome"));
  });
});
