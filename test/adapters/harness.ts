// Servers for the adapter suite: a node:http or node:https server listening on a free port.
import { once } from "node:events";
import { createServer as createHttpServer, type RequestListener, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { AdapterSetup } from "./suite.js";

export function plainServer(setup: AdapterSetup, listener?: RequestListener): Server {
  return setup.tls === undefined
    ? createHttpServer(listener)
    : (createHttpsServer(setup.tls, listener) as unknown as Server);
}

export async function listen(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

export async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** The suite's auth rule, for frameworks: /private needs `x-token: secret`. */
export function refusedByAuth(path: string, token: string | string[] | undefined): boolean {
  return path.startsWith("/private") && token !== "secret";
}
