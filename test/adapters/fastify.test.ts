import type { AddressInfo } from "node:net";
import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { fastifyServices } from "../../src/adapters/fastify.js";
import { client, upgradeRequest } from "../services/helpers.js";
import { refusedByAuth } from "./harness.js";
import { adapterSuite, fixtureRouter, ROOT } from "./suite.js";

adapterSuite("Fastify", async (setup) => {
  const app = Fastify({ https: setup.tls ?? null, forceCloseConnections: true });
  app.get("/health", async (_request, reply) => reply.type("text/plain").send("ok"));
  // The auth hook lives in a context around the plugin: encapsulation decides what it covers.
  await app.register(async (scope) => {
    scope.addHook("onRequest", async (request, reply) => {
      if (refusedByAuth(request.url, request.headers["x-token"])) {
        await reply.code(401).type("text/plain").send("login required");
      }
    });
    await scope.register(fastifyServices, {
      ...setup.services,
      logger: setup.logger,
      shutdownTimeoutMs: 3_000,
    });
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return { port, middleware: true, close: () => app.close() };
});

describe("Fastify: encapsulation and lifecycle", () => {
  it("routes below the plugin's prefix, runs only its own context's hooks, and closes clients on close()", async () => {
    const app = Fastify();
    const hooks: string[] = [];
    app.get("/", async () => "page");
    // A sibling context's hook must not see the services' requests.
    await app.register(async (sibling) => {
      sibling.addHook("onRequest", async (request) => {
        hooks.push(`sibling ${request.url}`);
      });
      sibling.get("/other", async () => "other");
    });
    await app.register(async (scope) => {
      scope.addHook("onRequest", async (request) => {
        hooks.push(`scope ${request.url}`);
      });
      await scope.register(fastifyServices, {
        router: fixtureRouter(),
        isolation: "main",
        prefix: "/ws",
        shutdownTimeoutMs: 3_000,
      });
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const { port } = app.server.address() as AddressInfo;
    try {
      const echo = await client(`ws://127.0.0.1:${port}/ws/echo`);
      echo.ws.send("prefixed");
      expect(await echo.next()).toBe("prefixed");
      expect(hooks).toEqual(["scope /ws/echo"]);
      // A plain GET on a service route, and the application's own routes.
      const plain = await fetch(`http://127.0.0.1:${port}/ws/echo`);
      expect(plain.status).toBe(426);
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("page");
      expect((await upgradeRequest(port, "/echo")).status).toBe(404);
      // close(): the services go first, with 1001, then Fastify's own shutdown.
      await app.close();
      expect(await echo.closed).toEqual({ code: 1001, reason: "server shutting down" });
    } finally {
      await app.close();
    }
  });

  it("with a service root, leaves plain GETs it does not serve to Fastify's not-found", async () => {
    const app = Fastify();
    app.get("/", async () => "page");
    await app.register(fastifyServices, {
      root: ROOT,
      isolation: "main",
      shutdownTimeoutMs: 3_000,
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const { port } = app.server.address() as AddressInfo;
    try {
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe("page");
      expect((await fetch(`http://127.0.0.1:${port}/echo`)).status).toBe(404);
      const echo = await client(`ws://127.0.0.1:${port}/echo`);
      echo.ws.send("rooted");
      expect(await echo.next()).toBe("rooted");
    } finally {
      await app.close();
    }
  });
});
