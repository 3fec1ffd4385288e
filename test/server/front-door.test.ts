// The standalone server's own listener (src/server/front-door.ts), over real sockets: opening
// handshakes are read without node:http, however the head arrives; every other request reaches
// node:http intact (keep-alive, pipelining, bodies); bad heads get a status and a log line.
import { createHash } from "node:crypto";
import { Agent, request as httpRequest } from "node:http";
import { connect as netConnect, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createServer, type ServerOptions, type WebSocketServer } from "../../src/index.js";
import { recordingLogger, sleep } from "../services/helpers.js";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT = createHash("sha1")
  .update(`${KEY}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
  .digest("base64");
const HANDSHAKE =
  "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
const WAIT = 5_000;

const servers: WebSocketServer[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function echoServer(options: ServerOptions = {}) {
  const logger = recordingLogger();
  const server = await createServer({
    logger,
    onRequest: (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => res.end(`${req.method} ${req.url} ${Buffer.concat(chunks).toString()}`));
    },
    ...options,
  });
  server.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  servers.push(server);
  return { server, logger };
}

/** A raw TCP connection that collects everything the server sends. */
async function raw(port: number) {
  const socket = netConnect(port, "127.0.0.1");
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  let received = Buffer.alloc(0);
  let ended = false;
  socket.on("data", (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
  });
  socket.on("end", () => {
    ended = true;
  });
  socket.on("error", () => {});
  const until = async (check: (text: string) => boolean, what: string) => {
    const deadline = Date.now() + WAIT;
    while (!check(received.toString("latin1"))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${received}`);
      await sleep(5);
    }
    return received;
  };
  return { socket, until, ended: () => ended, received: () => received };
}

/** A masked client text frame (RFC 6455 section 5.3). */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = payload.map((byte, i) => byte ^ mask[i % 4]);
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

describe("front door: opening handshakes", () => {
  it("upgrades when the head arrives one byte at a time", async () => {
    const { server } = await echoServer();
    const client = await raw(server.port);
    for (const byte of Buffer.from(HANDSHAKE, "latin1")) {
      client.socket.write(Buffer.from([byte]));
      await sleep(0);
    }
    const reply = await client.until((text) => text.includes("\r\n\r\n"), "the 101");
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 101 /);
    expect(reply.toString("latin1")).toContain(`Sec-WebSocket-Accept: ${ACCEPT}`);
    client.socket.write(textFrame("after the upgrade"));
    await client.until((text) => text.includes("after the upgrade"), "the echo");
  });

  it("keeps frames sent in the same write as the head, and in order", async () => {
    const { server } = await echoServer();
    const client = await raw(server.port);
    client.socket.write(
      Buffer.concat([Buffer.from(HANDSHAKE, "latin1"), textFrame("one"), textFrame("two")]),
    );
    const reply = await client.until((text) => text.includes("two"), "both echoes");
    const text = reply.toString("latin1");
    expect(text.indexOf("one")).toBeLessThan(text.indexOf("two"));
    expect(text.indexOf("101")).toBeLessThan(text.indexOf("one"));
  });

  it("keeps frames that arrive while an asynchronous verify is still deciding", async () => {
    const { server } = await echoServer({
      verify: async () => {
        await sleep(100);
        return true as const;
      },
    });
    const client = await raw(server.port);
    client.socket.write(HANDSHAKE);
    await sleep(20);
    client.socket.write(textFrame("early"));
    const reply = await client.until((text) => text.includes("early"), "the echo");
    expect(reply.toString("latin1").indexOf("101")).toBeLessThan(
      reply.toString("latin1").indexOf("early"),
    );
  });

  it("answers a handshake that is not one with the handshake's own status", async () => {
    const { server } = await echoServer();
    const client = await raw(server.port);
    client.socket.write(HANDSHAKE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"));
    const reply = await client.until((text) => text.includes("\r\n\r\n"), "the answer");
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 426 /);
  });

  it("refuses an upgrade request with a body", async () => {
    const { server, logger } = await echoServer();
    const client = await raw(server.port);
    client.socket.write(HANDSHAKE.replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\nhello"));
    const reply = await client.until((text) => text.includes("\r\n\r\n"), "the answer");
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 400 /);
    expect(logger.lines.some((line) => line.context.code === "HTTP_ERR_UPGRADE_BODY")).toBe(true);
  });
});

describe("front door: other requests go to node:http", () => {
  it("serves requests on one keep-alive connection, one after another", async () => {
    const { server } = await echoServer();
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string, body?: string) =>
      new Promise<string>((resolve, reject) => {
        const req = httpRequest(
          { host: "127.0.0.1", port: server.port, path, agent, method: body ? "POST" : "GET" },
          (res) => {
            let text = "";
            res.on("data", (chunk: Buffer) => {
              text += chunk;
            });
            res.on("end", () => resolve(text));
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    // Every connection the front door hands over is a "connection" of the node:http server.
    let handedOver = 0;
    server.http.on("connection", () => {
      handedOver++;
    });
    expect(await get("/a")).toBe("GET /a ");
    expect(await get("/b", "a body")).toBe("POST /b a body");
    expect(await get("/c")).toBe("GET /c ");
    expect(handedOver).toBe(1);
    agent.destroy();
  });

  it("upgrades a keep-alive connection that began with a plain request", async () => {
    const { server } = await echoServer();
    const client = await raw(server.port);
    client.socket.write("GET /page HTTP/1.1\r\nHost: h\r\n\r\n");
    await client.until((text) => text.includes("GET /page"), "the plain answer");
    client.socket.write(HANDSHAKE);
    await client.until((text) => text.includes("101 Switching"), "the 101");
    client.socket.write(textFrame("still here"));
    await client.until((text) => text.includes("still here"), "the echo");
  });

  it("answers pipelined requests in order", async () => {
    const { server } = await echoServer();
    const client = await raw(server.port);
    client.socket.write(
      "GET /first HTTP/1.1\r\nHost: h\r\n\r\nPOST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzGET /third HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    const reply = await client.until((text) => text.includes("GET /third"), "three answers");
    const text = reply.toString("latin1");
    expect(text.indexOf("GET /first")).toBeLessThan(text.indexOf("POST /second xyz"));
    expect(text.indexOf("POST /second xyz")).toBeLessThan(text.indexOf("GET /third"));
  });

  it("answers 426 to a plain request when no handler is set", async () => {
    const server = await createServer();
    servers.push(server);
    const client = await raw(server.port);
    client.socket.write("GET /echo HTTP/1.1\r\nHost: h\r\n\r\n");
    const reply = await client.until((text) => text.includes("WebSocket only"), "the 426");
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 426 /);
  });
});

describe("front door: bad heads", () => {
  it.each([
    ["garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400],
    ["a folded field", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400],
    ["two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505],
  ])("answers %s with a status, logs it, and closes", async (_label, text, status) => {
    const { server, logger } = await echoServer();
    const client = await raw(server.port);
    client.socket.write(Buffer.from(text, "latin1"));
    const reply = await client.until((t) => t.includes("\r\n\r\n"), "the answer");
    expect(reply.toString("latin1")).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    await client.until(() => client.ended(), "the server's FIN");
    const line = logger.lines.find((l) => l.message.startsWith("request refused"));
    expect(line?.context).toMatchObject({ status, remoteAddress: "127.0.0.1" });
  });

  it("answers a head over 16 KiB with 431 before it ends", async () => {
    const { server } = await echoServer();
    const client = await raw(server.port);
    client.socket.write(`GET / HTTP/1.1\r\nHost: h\r\nX-Big: ${"a".repeat(20_000)}`);
    const reply = await client.until((t) => t.includes("\r\n\r\n"), "the answer");
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 431 /);
  });

  it("answers 408 to a head that does not finish in time, and keeps serving others", async () => {
    const { server } = await echoServer({ headTimeout: 1_000 });
    const slow = await raw(server.port);
    slow.socket.write("GET /echo HTTP/1.1\r\nHost: h\r\n");
    const other = await raw(server.port);
    other.socket.write(HANDSHAKE);
    await other.until((t) => t.includes("101 Switching"), "the other's 101");
    const reply = await slow.until((t) => t.includes("\r\n\r\n"), "the 408");
    expect(reply.toString("latin1")).toMatch(/^HTTP\/1\.1 408 /);
    await slow.until(() => slow.ended(), "the server's FIN");
  });

  it("forgets a client that leaves in the middle of its head", async () => {
    const { server } = await echoServer();
    for (let i = 0; i < 20; i++) {
      const gone = await raw(server.port);
      gone.socket.end("GET /echo HTTP/1.1\r\nHost:");
    }
    const client = await raw(server.port);
    client.socket.write(HANDSHAKE);
    await client.until((t) => t.includes("101 Switching"), "the 101");
  });

  it("close() drops connections still sending their head", async () => {
    const { server } = await echoServer();
    const slow = await raw(server.port);
    slow.socket.write("GET /echo HTTP/1.1\r\n");
    await sleep(50);
    const closed = new Promise<void>((resolve) => slow.socket.once("close", () => resolve()));
    await server.close();
    servers.splice(servers.indexOf(server), 1);
    await closed;
    expect(server.listening).toBe(false);
  });
});
