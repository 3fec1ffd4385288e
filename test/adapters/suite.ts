// The one suite every way of serving services runs: the standalone server, attach() on
// node:http and node:https, and each framework integration. The same service modules
// (fixtures/root, also registered on a programmatic router), the same behaviour: routing,
// refusals from the application's middleware and from a service's upgrade hook, echo, topics,
// close codes, plain requests untouched, over ws:// and wss://.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRouter, type Router } from "../../src/adapters/router.js";
import type { Logger } from "../../src/server/logger.js";
import { selfSigned } from "../connection/self-signed.js";
import { client, recordingLogger } from "../services/helpers.js";

export const ROOT = new URL("./fixtures/root/", import.meta.url).pathname;

/** The fixture root's services on a programmatic router, by module. */
export function fixtureRouter(): Router {
  const at = (file: string) => new URL(`./fixtures/root/${file}`, import.meta.url);
  return createRouter()
    .service("/echo", at("echo.ts"))
    .service("/rooms/:room", at("rooms/[room].ts"))
    .service("/private/echo", at("private/echo.ts"))
    .service("/guarded", at("guarded.ts"));
}

/** What the application in front of the services does, where there is one. */
export const APP_RULES = {
  /** GET /health answers 200 "ok". */
  health: "ok",
  /** Requests under /private without `x-token: secret` get 401 "login required". */
  privatePrefix: "/private",
  token: "secret",
} as const;

export interface AdapterSetup {
  services: { root: string } | { router: Router };
  /** Serve over TLS with this pair. */
  tls?: { key: string; cert: string };
  logger: Logger;
}

export interface AdapterHarness {
  port: number;
  /**
   * Whether the application's own middleware guards /private (frameworks only). Every harness
   * answers GET /health itself.
   */
  middleware: boolean;
  close(): Promise<void>;
}

export type StartAdapter = (setup: AdapterSetup) => Promise<AdapterHarness>;

interface HttpAnswer {
  status: number;
  body: string;
}

export function adapterSuite(name: string, start: StartAdapter): void {
  const pair = selfSigned();
  describe.each([
    { services: "root", tls: false },
    { services: "router", tls: false },
    { services: "root", tls: true },
  ])(`${name}: $services over ${"$tls"}`, ({ services, tls }) => {
    let harness: AdapterHarness;
    const logger = recordingLogger();
    const scheme = tls ? "wss" : "ws";
    const url = (path: string) => `${scheme}://127.0.0.1:${harness.port}${path}`;
    const options = (headers: Record<string, string> = {}) => ({
      headers,
      ...(tls ? { tls: { ca: pair.cert } } : {}),
    });

    /** One request over HTTP(S); a 101 is reported and its socket closed. */
    const answer = (
      path: string,
      headers: Record<string, string> = {},
      upgrade = true,
    ): Promise<HttpAnswer> =>
      new Promise((resolve, reject) => {
        const request = tls ? httpsRequest : httpRequest;
        const req = request({
          host: "127.0.0.1",
          port: harness.port,
          path,
          ca: pair.cert,
          headers: upgrade
            ? {
                Connection: "Upgrade",
                Upgrade: "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                ...headers,
              }
            : headers,
        });
        req.on("upgrade", (res, socket) => {
          socket.destroy();
          resolve({ status: res.statusCode ?? 0, body: "" });
        });
        req.on("response", (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            body += chunk;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        req.setTimeout(10_000, () => req.destroy(new Error("no answer in time")));
        req.end();
      });

    beforeAll(async () => {
      harness = await start({
        services: services === "root" ? { root: ROOT } : { router: fixtureRouter() },
        tls: tls ? pair : undefined,
        logger,
      });
    });

    afterAll(async () => {
      await harness?.close();
    });

    it("echoes text and binary messages", async () => {
      const echo = await client(url("/echo"), options());
      echo.ws.send("hello");
      expect(await echo.next()).toBe("hello");
      echo.ws.send(Buffer.from([1, 2, 255]));
      expect(await echo.next()).toBe("binary:0102ff");
      echo.ws.close(1000);
      await echo.closed;
    });

    it("routes by path, with parameters, and answers 404 where no service is", async () => {
      const room = await client(url("/rooms/lobby"), options());
      expect(await room.next()).toBe("joined lobby");
      room.ws.close(1000);
      expect((await answer("/nowhere")).status).toBe(404);
      expect((await answer("/rooms")).status).toBe(404);
    });

    it("refuses with the status a service's upgrade hook gives", async () => {
      const refused = await answer("/guarded");
      expect(refused.status).toBe(403);
      const guarded = await client(url("/guarded?key=1"), options());
      expect(await guarded.next()).toBe("guarded");
      guarded.ws.close(1000);
    });

    it("runs the application's middleware before the upgrade", async ({ skip }) => {
      if (!harness.middleware) skip("no application middleware in front of the services here");
      const refused = await answer("/private/echo");
      expect(refused.status).toBe(401);
      expect(refused.body).toContain("login required");
      const allowed = await client(url("/private/echo"), options({ "x-token": APP_RULES.token }));
      allowed.ws.send("let in");
      expect(await allowed.next()).toBe("let in");
      allowed.ws.close(1000);
    });

    it("publishes to every client of a topic", async () => {
      const alice = await client(url("/rooms/kitchen"), options());
      const bob = await client(url("/rooms/kitchen"), options());
      const other = await client(url("/rooms/garden"), options());
      for (const c of [alice, bob]) expect(await c.next()).toBe("joined kitchen");
      expect(await other.next()).toBe("joined garden");
      alice.ws.send("hi");
      const [fromAlice] = (await bob.next()).split(": ").slice(1);
      expect(fromAlice).toBe("hi");
      expect((await alice.next()).endsWith(": hi")).toBe(true);
      other.ws.send("elsewhere");
      expect((await other.next()).endsWith(": elsewhere")).toBe(true);
      // The kitchen saw nothing from the garden.
      expect(bob.messages).toHaveLength(2);
      for (const c of [alice, bob, other]) c.ws.close(1000);
    });

    it("carries close codes both ways", async () => {
      const closing = await client(url("/echo"), options());
      closing.ws.send("close");
      expect(await closing.closed).toEqual({ code: 4001, reason: "bye" });
      const leaving = await client(url("/echo"), options());
      leaving.ws.close(4002, "done");
      expect((await leaving.closed).code).toBe(4002);
    });

    it("leaves plain requests to the application", async () => {
      const health = await answer("/health", {}, false);
      expect(health).toEqual({ status: 200, body: APP_RULES.health });
    });
  });
}
