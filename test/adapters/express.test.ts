import express from "express";
import { describe, expect, it } from "vitest";
import { expressServices } from "../../src/adapters/express.js";
import { client, recordingLogger, upgradeRequest } from "../services/helpers.js";
import { closeServer, listen, plainServer, refusedByAuth } from "./harness.js";
import { adapterSuite, fixtureRouter, ROOT } from "./suite.js";

adapterSuite("Express", async (setup) => {
  const app = express();
  app.get("/health", (_req, res) => {
    res.type("text/plain").send("ok");
  });
  app.use((req, res, next) => {
    if (refusedByAuth(req.path, req.get("x-token"))) {
      res.status(401).type("text/plain").send("login required");
      return;
    }
    next();
  });
  const services = await expressServices(app, {
    ...setup.services,
    logger: setup.logger,
    shutdownTimeoutMs: 3_000,
  });
  app.use(services.middleware);
  const server = plainServer(setup, app);
  services.attach(server);
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

describe("Express: mounted below a path", () => {
  it("routes by the path below the mount point, as express.static does", async () => {
    const app = express();
    const services = await expressServices(app, { router: fixtureRouter(), isolation: "main" });
    app.use("/ws", services.middleware);
    const server = plainServer({ services: { root: ROOT }, logger: recordingLogger() }, app);
    services.attach(server);
    const port = await listen(server);
    try {
      const echo = await client(`ws://127.0.0.1:${port}/ws/echo`);
      echo.ws.send("mounted");
      expect(await echo.next()).toBe("mounted");
      echo.ws.close();
      // Outside the mount point the middleware is never reached: Express's own 404.
      expect((await upgradeRequest(port, "/echo")).status).toBe(404);
    } finally {
      await services.close();
      await closeServer(server);
    }
  });
});

describe("Express: upgrades the application mishandles", () => {
  it("answers 503 when the middleware neither answers nor lets the upgrade through in time, and 500 when it throws", async () => {
    const logger = recordingLogger();
    const app = express();
    app.use("/hang", () => {});
    app.use("/throw", () => {
      throw new Error("middleware broke");
    });
    const services = await expressServices(app, {
      router: fixtureRouter(),
      isolation: "main",
      logger,
      dispatchTimeoutMs: 300,
    });
    app.use(services.middleware);
    const server = plainServer({ services: { root: ROOT }, logger }, app);
    services.attach(server);
    const port = await listen(server);
    try {
      expect((await upgradeRequest(port, "/hang")).status).toBe(503);
      expect(logger.lines.some((line) => line.message.includes("in time"))).toBe(true);
      expect((await upgradeRequest(port, "/throw")).status).toBe(500);
      // Neither left anything behind for the next one.
      expect((await upgradeRequest(port, "/echo")).status).toBe(101);
    } finally {
      await services.close();
      await closeServer(server);
    }
  });
});
