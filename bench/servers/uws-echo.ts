// The uWebSockets.js side of `npm run bench:connect`: its App with the default WebSocket
// behaviour and its default upgrade (no `upgrade` handler, so uWS answers the opening handshake
// itself), echoing every message with its opcode as bench/servers/ws-echo.ts does. The connect
// benchmark only opens and closes connections; the echo keeps the server a fair peer of the
// Switchboard echo service and of ws.
//
// uWebSockets.js is not a dependency of Switchboard: the orchestrator runs this server only when
// the `uwebsockets` package (a build of uWebSockets.js published on npm) loads, and says so
// otherwise. It is loaded through `require` so that this file type-checks without it.
import { parseServerArgs } from "./args.js";
import { listenUws, loadUws, type UwsListening } from "./uws.js";

/** The part of the uWebSockets.js API used here. */
interface UwsWebSocket {
  send(message: ArrayBuffer, isBinary: boolean): number;
}
interface UwsApp extends UwsListening {
  ws(
    pattern: string,
    behavior: { message(ws: UwsWebSocket, message: ArrayBuffer, isBinary: boolean): void },
  ): UwsApp;
}
interface Uws {
  App(): UwsApp;
}

const { port } = parseServerArgs(process.argv.slice(2));
const uws = loadUws<Uws>();

const app = uws.App().ws("/*", {
  message(ws, message, isBinary) {
    ws.send(message, isBinary);
  },
});

listenUws(uws, app, port, "echo server", "/echo");
