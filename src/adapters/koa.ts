import type { IncomingMessage, ServerResponse } from "node:http";
import { silentLogger } from "../server/logger.js";
import { createServiceMount } from "../server/service-mount.js";
import { UpgradeDispatcher, type UpgradingServer } from "./framework-upgrade.js";
import type { FrameworkServicesOptions, MountedServices } from "./services.js";

/**
 * Koa 3: the services behind a middleware, so the app's own middleware runs first.
 *
 *   const services = await koaServices(app, { root: "services" });
 *   app.use(requireLogin);                  // may refuse: ctx.status = 401
 *   app.use(services.middleware);           // WebSocket upgrades that get here are accepted
 *   const server = app.listen(8080);
 *   services.attach(server);
 *
 * The upgrade request runs through `app.callback()` as a GET; what the app answers (a 401,
 * Koa's 404) goes to the client. The middleware routes by `ctx.path` (which koa-mount makes
 * relative to its mount point) and the query, and passes every other request on.
 */

/** The parts of a Koa application this uses. */
export interface KoaApp {
  callback(): (req: IncomingMessage, res: ServerResponse) => unknown;
}

/** The parts of a Koa context this uses. */
export interface KoaContext {
  req: IncomingMessage;
  path: string;
  querystring: string;
  respond?: boolean;
}

export type KoaMiddleware = (ctx: KoaContext, next: () => Promise<unknown>) => Promise<void>;

export interface KoaServices extends MountedServices {
  readonly middleware: KoaMiddleware;
  /** Routes the server's WebSocket upgrades through the app. */
  attach(server: UpgradingServer): void;
}

export async function koaServices(
  app: KoaApp,
  options: FrameworkServicesOptions,
): Promise<KoaServices> {
  const logger = options.logger ?? silentLogger;
  const mount = await createServiceMount({ ...options, logger });
  let dispatcher: UpgradeDispatcher | null = null;
  return {
    mount,
    async middleware(ctx, next) {
      const url = ctx.querystring === "" ? ctx.path : `${ctx.path}?${ctx.querystring}`;
      const req = ctx.req;
      const taken =
        dispatcher?.take(req, (socket, head) => void mount.handleUpgrade(req, socket, head, url)) ??
        false;
      if (taken) {
        // The socket is the services' now: Koa must not answer on it.
        ctx.respond = false;
        return;
      }
      await next();
    },
    attach(server) {
      dispatcher = UpgradeDispatcher.of(server, app.callback(), logger, options.dispatchTimeoutMs);
    },
    close: () => mount.shutdown(),
  };
}
