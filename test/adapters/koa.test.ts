import Koa from "koa";
import { koaServices } from "../../src/adapters/koa.js";
import { closeServer, listen, plainServer, refusedByAuth } from "./harness.js";
import { adapterSuite } from "./suite.js";

adapterSuite("Koa", async (setup) => {
  const app = new Koa();
  app.use(async (ctx, next) => {
    if (ctx.path === "/health") {
      ctx.body = "ok";
      return;
    }
    if (refusedByAuth(ctx.path, ctx.get("x-token") || undefined)) {
      ctx.status = 401;
      ctx.body = "login required";
      return;
    }
    await next();
  });
  const services = await koaServices(app, {
    ...setup.services,
    logger: setup.logger,
    shutdownTimeoutMs: 3_000,
  });
  app.use(services.middleware);
  const server = plainServer(setup, app.callback());
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
