import { createServer, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Attachment, attach } from "../../src/adapters/attach.js";
import { client, eventually, upgradeRequest } from "../services/helpers.js";
import { closeServer, listen, plainServer } from "./harness.js";
import { adapterSuite, fixtureRouter } from "./suite.js";

adapterSuite("attach()", async (setup) => {
  const server = plainServer(setup, (req, res) => {
    if (req.url === "/health") res.end("ok");
    else res.writeHead(404).end();
  });
  const attached = await attach(server, {
    ...setup.services,
    logger: setup.logger,
    shutdownTimeoutMs: 3_000,
  });
  const port = await listen(server);
  return {
    port,
    middleware: false,
    async close() {
      await attached.close();
      await closeServer(server);
    },
  };
});

describe("attach() beside other upgrade listeners", () => {
  let server: Server;
  let attached: Attachment;
  let port: number;
  const other: string[] = [];

  beforeAll(async () => {
    server = createServer((_req, res) => res.end("plain"));
    // Someone else's listener, answering every upgrade the services do not take (a moment
    // later, so an answer from the services would reach the client first).
    server.on("upgrade", (req: IncomingMessage, socket: Duplex) => {
      if (req.url?.startsWith("/ws/echo") && req.headers.upgrade === "websocket") return;
      setImmediate(() => {
        other.push(`${req.headers.upgrade} ${req.url}`);
        socket.end("HTTP/1.1 418 I'm a teapot\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      });
    });
    attached = await attach(server, {
      router: fixtureRouter(),
      path: "/ws",
      isolation: "main",
      shutdownTimeoutMs: 3_000,
    });
    port = await listen(server);
  });

  afterAll(async () => {
    await attached.close();
    await closeServer(server);
  });

  it("serves its path, routed below it, and leaves every other upgrade alone", async () => {
    const echo = await client(`ws://127.0.0.1:${port}/ws/echo`);
    echo.ws.send("under /ws");
    expect(await echo.next()).toBe("under /ws");
    echo.ws.close(1000);
    expect((await upgradeRequest(port, "/legacy/feed")).status).toBe(418);
    expect((await upgradeRequest(port, "/ws", { headers: { Upgrade: "h2c" } })).status).toBe(418);
    // Under its path but not routed by its router: not the services' to answer either.
    expect((await upgradeRequest(port, "/ws/nowhere")).status).toBe(418);
    expect(other).toEqual(["websocket /legacy/feed", "h2c /ws", "websocket /ws/nowhere"]);
  });

  it("lists its live connections, and forgets each once it closes", async () => {
    const before = attached.mount.connections.size;
    const a = await client(`ws://127.0.0.1:${port}/ws/echo`);
    const b = await client(`ws://127.0.0.1:${port}/ws/echo`);
    // Each is listed once its service holds it: an echo proves the open reached the service.
    a.ws.send("a");
    b.ws.send("b");
    expect([await a.next(), await b.next()]).toEqual(["a", "b"]);
    expect(attached.mount.connections.size).toBe(before + 2);
    a.ws.close(1000);
    await a.closed;
    await eventually(
      () => attached.mount.connections.size === before + 1,
      5_000,
      "a to be forgotten",
    );
    for (const conn of attached.mount.connections) expect(conn.readyState).toBe("open");
    b.ws.close(1000);
    await b.closed;
    await eventually(() => attached.mount.connections.size === before, 5_000, "b to be forgotten");
  });

  it("clears the HTTP server's idle timeout on the sockets it takes", async () => {
    // node:http gives every socket the server's idle timeout; an upgraded one no longer ends on
    // it, but still gets a 'timeout' event (and a timer) per period unless the timeout is
    // cleared.
    const idle = createServer((_req, res) => res.end("plain"));
    idle.setTimeout(150);
    const timeouts: number[] = [];
    idle.on("connection", (socket: Duplex) => {
      socket.on("timeout", () => timeouts.push(Date.now()));
    });
    const mine = await attach(idle, { router: fixtureRouter(), isolation: "main" });
    const idlePort = await listen(idle);
    // The service starts with the first connection, which may take longer than the timeout.
    const first = await client(`ws://127.0.0.1:${idlePort}/echo`);
    first.ws.close(1000);
    await first.closed;
    timeouts.length = 0;
    const echo = await client(`ws://127.0.0.1:${idlePort}/echo`);
    await new Promise((resolve) => setTimeout(resolve, 600));
    echo.ws.send("still here");
    expect(await echo.next()).toBe("still here");
    expect(timeouts).toEqual([]);
    echo.ws.close(1000);
    await echo.closed;
    await mine.close();
    await closeServer(idle);
  });

  it("stops answering once closed, and leaves the server serving plain requests", async () => {
    const lone = createServer((_req, res) => res.end("plain"));
    const mine = await attach(lone, { router: fixtureRouter(), isolation: "main" });
    const lonePort = await listen(lone);
    // Alone on the server, it answers what it does not serve with 404.
    expect((await upgradeRequest(lonePort, "/nowhere")).status).toBe(404);
    expect((await upgradeRequest(lonePort, "/echo")).status).toBe(101);
    await mine.close();
    expect(lone.listenerCount("upgrade")).toBe(0);
    const plain = await fetch(`http://127.0.0.1:${lonePort}/`);
    expect(await plain.text()).toBe("plain");
    await closeServer(lone);
  });
});
