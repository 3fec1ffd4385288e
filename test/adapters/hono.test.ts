import type { Server } from "node:http";
import { createAdaptorServer } from "@hono/node-server";
import { Hono } from "hono";
import { honoServices } from "../../src/adapters/hono.js";
import { closeServer, listen, refusedByAuth } from "./harness.js";
import { adapterSuite } from "./suite.js";

adapterSuite("Hono", async (setup) => {
  const app = new Hono();
  app.get("/health", (c) => c.text("ok"));
  app.use("*", async (c, next) => {
    if (refusedByAuth(c.req.path, c.req.header("x-token"))) return c.text("login required", 401);
    await next();
  });
  const services = await honoServices({
    ...setup.services,
    logger: setup.logger,
    shutdownTimeoutMs: 3_000,
  });
  app.get("*", services.upgrade());
  const server = (
    setup.tls === undefined
      ? createAdaptorServer({ fetch: app.fetch })
      : createAdaptorServer({
          fetch: app.fetch,
          createServer: (await import("node:https")).createServer,
          serverOptions: setup.tls,
        })
  ) as Server;
  await services.attach(server, app);
  const port = await listen(server);
  return {
    port,
    middleware: true,
    async close() {
      await services.close();
      await closeServer(server);
    },
  };
});
