// What the uWebSockets.js bench servers share: loading the `uwebsockets` package (a build of
// uWebSockets.js published on npm, not a dependency of Switchboard; exit 3 when it does not load,
// which the orchestrator reports as a notice), listening on loopback with the URL line the
// orchestrator waits for, and exiting at once when stopped. Loaded through `require` so that the
// servers type-check without the package.
import { createRequire } from "node:module";

/** An App as far as listening goes; each server declares the rest of the API it uses. */
export interface UwsListening {
  listen(host: string, port: number, callback: (token: unknown) => void): unknown;
}

interface UwsModule {
  us_socket_local_port(token: unknown): number;
}

/** The package, typed by the caller with the part of the API it uses. */
export function loadUws<T>(): T & UwsModule {
  try {
    return createRequire(import.meta.url)("uwebsockets") as T & UwsModule;
  } catch (error) {
    console.error(`uWebSockets.js (npm package uwebsockets) does not load: ${error}`);
    process.exit(3);
  }
}

/** Listens on 127.0.0.1:port and prints `uWebSockets.js <what> listening on ws://...<path>`. */
export function listenUws(
  uws: UwsModule,
  app: UwsListening,
  port: number,
  what: string,
  path: string,
): void {
  app.listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error(`uWebSockets.js could not listen on 127.0.0.1:${port}`);
      process.exit(1);
    }
    console.log(
      `uWebSockets.js ${what} listening on ws://127.0.0.1:${uws.us_socket_local_port(token)}${path}`,
    );
  });
  // Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
  const stop = () => process.exit(0);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
