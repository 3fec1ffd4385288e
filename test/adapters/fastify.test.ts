import Fastify from "fastify";
import { fastifyServices } from "../../src/adapters/fastify.js";
import { refusedByAuth } from "./harness.js";
import { adapterSuite } from "./suite.js";

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
