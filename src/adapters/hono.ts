import type { IncomingMessage } from "node:http";
import type { MiddlewareHandler } from "hono";
import { silentLogger } from "../server/logger.js";
import { createServiceMount } from "../server/service-mount.js";
import { normalizePrefix, strip } from "./attach.js";
import { UpgradeDispatcher, type UpgradingServer } from "./framework-upgrade.js";
import type { FrameworkServicesOptions, MountedServices } from "./services.js";

/**
 * Hono on @hono/node-server: the services behind a middleware, so the app's own middleware
 * (basicAuth, jwt, cookies) runs first.
 *
 *   const services = await honoServices({ router });
 *   app.use("/chat/*", bearerAuth({ token }));   // may refuse with its 401
 *   app.get("/chat/:room", services.upgrade());
 *   const server = serve({ fetch: app.fetch, port: 8080 });
 *   await services.attach(server, app);
 *
 * Why not Hono's `upgradeWebSocket` helper: its contract is a set of per-connection event
 * handlers created inside the request's context, on the thread that runs Hono. A Switchboard
 * service is a module that may run in a worker or a process and sees its clients through the
 * service API, so the middleware hands the socket to the services instead. The upgrade request
 * runs through `app.fetch` (via @hono/node-server's request listener, with `c.env.incoming`
 * being node's request); a Response from another handler goes to the client as it would for
 * any request. Routing is by `c.req.path` (below `path` when given) and the query.
 */

/** Anything with Hono's fetch: (request, env) answers a request. */
export interface FetchApp {
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
}

export interface HonoServicesOptions extends FrameworkServicesOptions {
  /** Removed from the start of the path before routing (default none). */
  path?: string;
}

export interface HonoServices extends MountedServices {
  /**
   * Middleware: a WebSocket upgrade that reaches it is handed to the services; any other
   * request goes on to the next handler.
   */
  upgrade(): MiddlewareHandler;
  /** Routes the server's WebSocket upgrades through `app`. */
  attach(server: UpgradingServer, app: FetchApp): Promise<void>;
}

export async function honoServices(options: HonoServicesOptions): Promise<HonoServices> {
  const logger = options.logger ?? silentLogger;
  const mount = await createServiceMount({ ...options, logger });
  const prefix = normalizePrefix(options.path);
  let dispatcher: UpgradeDispatcher | null = null;
  return {
    mount,
    upgrade() {
      return async (c, next) => {
        const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
        const query = c.req.url.indexOf("?");
        const path = strip(prefix, c.req.path);
        if (incoming !== undefined && path !== undefined && dispatcher !== null) {
          const url = query === -1 ? path : `${path}${c.req.url.slice(query)}`;
          const taken = dispatcher.take(incoming, (socket, head) => {
            void mount.handleUpgrade(incoming, socket, head, url);
          });
          // The socket is the services' now; this response goes nowhere.
          if (taken) return new Response(null, { status: 200 });
        }
        await next();
      };
    },
    async attach(server, app) {
      const { getRequestListener } = await import("@hono/node-server");
      const listener = getRequestListener((request, env) => app.fetch(request, env));
      dispatcher = UpgradeDispatcher.of(server, listener, logger, options.dispatchTimeoutMs);
    },
    close: () => mount.shutdown(),
  };
}
