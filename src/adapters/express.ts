import type { IncomingMessage, ServerResponse } from "node:http";
import { silentLogger } from "../server/logger.js";
import { createServiceMount } from "../server/service-mount.js";
import { UpgradeDispatcher, type UpgradingServer } from "./framework-upgrade.js";
import type { FrameworkServicesOptions, MountedServices } from "./services.js";

/**
 * Express 5: the services behind a middleware, so the app's own middleware runs first.
 *
 *   const services = await expressServices(app, { root: "services" });
 *   app.use(cookieParser(), requireLogin);   // may refuse: res.status(401).end()
 *   app.use(services.middleware);            // WebSocket upgrades that get here are accepted
 *   const server = app.listen(8080);
 *   services.attach(server);
 *
 * The upgrade request runs through the app as a GET; what the app answers (a 401, the final
 * 404) goes to the client as it would for any request. The middleware routes by `req.url`,
 * the path below where it is mounted (as express.static does), and lets every request that is
 * not a WebSocket upgrade pass.
 */

/** An Express application, or anything called as one: (req, res) handles a request. */
export type ExpressApp = (req: IncomingMessage, res: ServerResponse) => unknown;
export type ExpressMiddleware = (
  req: IncomingMessage,
  res: ServerResponse,
  next: (error?: unknown) => void,
) => void;

export interface ExpressServices extends MountedServices {
  readonly middleware: ExpressMiddleware;
  /** Routes the server's WebSocket upgrades through the app. */
  attach(server: UpgradingServer): void;
}

export async function expressServices(
  app: ExpressApp,
  options: FrameworkServicesOptions,
): Promise<ExpressServices> {
  const logger = options.logger ?? silentLogger;
  const mount = await createServiceMount({ ...options, logger });
  let dispatcher: UpgradeDispatcher | null = null;
  return {
    mount,
    middleware(req, _res, next) {
      const url = req.url ?? "/";
      const taken =
        dispatcher?.take(req, (socket, head) => void mount.handleUpgrade(req, socket, head, url)) ??
        false;
      if (!taken) next();
    },
    attach(server) {
      dispatcher = UpgradeDispatcher.of(server, app, logger, options.dispatchTimeoutMs);
    },
    close: () => mount.shutdown(),
  };
}
