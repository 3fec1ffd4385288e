import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "../server/logger.js";
import { createServiceMount, type ServiceMount } from "../server/service-mount.js";
import { strip } from "./attach.js";
import { UpgradeDispatcher } from "./framework-upgrade.js";
import type { FrameworkServicesOptions } from "./services.js";

/**
 * Fastify 5: the services as a plugin, with routes in the plugin's own context.
 *
 *   await app.register(async (scope) => {
 *     scope.addHook("onRequest", requireLogin);   // may refuse: reply.code(401).send()
 *     await scope.register(fastifyServices, { router, prefix: "/ws" });
 *   });
 *
 * The plugin declares a GET route per router pattern (or the catch-all `/*` for a service root,
 * which the application's own routes win over) in its encapsulated context, so the hooks of that context and its parents (onRequest, preHandler,
 * auth plugins) run for an upgrade before the handshake, and none of the plugin's own
 * declarations leak out. WebSocket upgrades of the server go through `fastify.routing`; a hook
 * that replies ends the upgrade with that reply. Routing is by the path below the plugin's
 * prefix. The services are shut down in `preClose`, before Fastify waits for its connections.
 * A plain GET on a router's route gets 426 Upgrade Required, and on a root's catch-all Fastify's
 * not-found answer.
 */

declare module "fastify" {
  interface FastifyInstance {
    /** The services of the nearest fastifyServices registration (this context and below). */
    switchboard: ServiceMount;
  }
}

export type FastifyServicesOptions = FrameworkServicesOptions;

export const fastifyServices: FastifyPluginAsync<FastifyServicesOptions> = async (
  fastify,
  options,
) => {
  // Fastify's logger (pino) takes (context, message) as Switchboard's does.
  const logger: Logger = options.logger ?? (fastify.log as unknown as Logger);
  const mount = await createServiceMount({ ...options, logger });
  const prefix = fastify.prefix;
  const dispatcher = UpgradeDispatcher.of(
    fastify.server,
    (req, res) => fastify.routing(req, res),
    logger,
    options.dispatchTimeoutMs,
  );
  const handler = (request: FastifyRequest, reply: FastifyReply): void => {
    const req = request.raw;
    const url = strip(prefix, req.url ?? "/") ?? req.url ?? "/";
    const taken = dispatcher.take(req, (socket, head) => {
      void mount.handleUpgrade(req, socket, head, url);
    });
    if (taken) {
      reply.hijack();
      return;
    }
    // A plain GET: a service root's catch-all route is not the place to answer it.
    if (options.router === undefined) {
      reply.callNotFound();
      return;
    }
    void reply
      .code(426)
      .header("Upgrade", "websocket")
      .type("text/plain; charset=utf-8")
      .send("Upgrade Required: this endpoint speaks WebSocket only\n");
  };
  const patterns = new Set<string>();
  if (options.router !== undefined) {
    for (const { pattern } of options.router.routes) {
      patterns.add(pattern);
      // The router finds "/x" for "/x/" (and the reverse) where only one is served.
      const other = pattern.endsWith("/") ? pattern.slice(0, -1) : `${pattern}/`;
      if (other !== "") patterns.add(other);
    }
  } else {
    // Matches "/" too; the application's own static routes win over it.
    patterns.add("/*");
  }
  for (const pattern of patterns) fastify.get(pattern, handler);
  fastify.decorate("switchboard", mount);
  fastify.addHook("preClose", async () => {
    await mount.shutdown();
  });
};
