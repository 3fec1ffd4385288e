// The uWebSockets.js side of `npm run bench:connect`: its App with the default WebSocket
// behaviour and its default upgrade (no `upgrade` handler, so uWS answers the opening handshake
// itself), echoing every message with its opcode as bench/servers/ws-echo.ts does. The connect
// benchmark only opens and closes connections; the echo keeps the server a fair peer of the
// Switchboard echo service and of ws.
//
// uWebSockets.js is not a dependency of Switchboard: the orchestrator runs this server only when
// the `uwebsockets` package (a build of uWebSockets.js published on npm) loads, and says so
// otherwise. It is loaded through `require` so that this file type-checks without it.
import { createRequire } from "node:module";
import { parseServerArgs } from "./args.js";

/** The part of the uWebSockets.js API used here. */
interface UwsWebSocket {
  send(message: ArrayBuffer, isBinary: boolean): number;
}
interface UwsApp {
  ws(
    pattern: string,
    behavior: { message(ws: UwsWebSocket, message: ArrayBuffer, isBinary: boolean): void },
  ): UwsApp;
  listen(host: string, port: number, callback: (token: unknown) => void): UwsApp;
}
interface Uws {
  App(): UwsApp;
  us_socket_local_port(token: unknown): number;
}

const { port } = parseServerArgs(process.argv.slice(2));
let uws: Uws;
try {
  uws = createRequire(import.meta.url)("uwebsockets") as Uws;
} catch (error) {
  console.error(`uWebSockets.js (npm package uwebsockets) does not load: ${error}`);
  process.exit(3);
}

uws
  .App()
  .ws("/*", {
    message(ws, message, isBinary) {
      ws.send(message, isBinary);
    },
  })
  .listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error(`uWebSockets.js could not listen on 127.0.0.1:${port}`);
      process.exit(1);
    }
    console.log(
      `uWebSockets.js echo server listening on ws://127.0.0.1:${uws.us_socket_local_port(token)}/echo`,
    );
  });

// Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
