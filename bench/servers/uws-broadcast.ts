// The uWebSockets.js side of `npm run bench:broadcast`: its App with the default WebSocket
// behaviour, and fan-out through its own topics, which frame a message once and write it to
// every subscriber in batches (corked). A client names its topic with `?topic=N` and is on
// "bench/N"; without it, on "bench" (one publisher, one topic). Every client but a publisher
// (`?role=publisher`) subscribes to its topic when it opens; each message a client sends goes
// out with `app.publish(topic, message, isBinary)`.
//
// uWebSockets.js is not a dependency of Switchboard: the orchestrator runs this server only when
// the `uwebsockets` package (a build of uWebSockets.js published on npm) loads, and says so
// otherwise. It is loaded through `require` so that this file type-checks without it.
import { parseServerArgs } from "./args.js";
import { listenUws, loadUws, type UwsListening } from "./uws.js";

/** The part of the uWebSockets.js API used here. */
/** What each connection carries from its upgrade. */
interface UserData {
  publisher: boolean;
  topic: string;
}
interface UwsWebSocket {
  getUserData(): UserData;
  subscribe(topic: string): boolean;
}
interface UwsApp extends UwsListening {
  ws(
    pattern: string,
    behavior: {
      upgrade(res: UwsResponse, req: UwsRequest, context: unknown): void;
      open(ws: UwsWebSocket): void;
      message(ws: UwsWebSocket, message: ArrayBuffer, isBinary: boolean): void;
    },
  ): UwsApp;
  publish(topic: string, message: ArrayBuffer, isBinary: boolean): boolean;
}
interface UwsRequest {
  getHeader(name: string): string;
  getQuery(key: string): string | undefined;
}
interface UwsResponse {
  upgrade(
    data: UserData,
    key: string,
    protocol: string,
    extensions: string,
    context: unknown,
  ): void;
}
interface Uws {
  App(): UwsApp;
}

const { port } = parseServerArgs(process.argv.slice(2));
const uws = loadUws<Uws>();

const app = uws.App().ws("/*", {
  upgrade(res, req, context) {
    // The request object is only valid in this call: read what is needed now.
    const topic = req.getQuery("topic");
    res.upgrade(
      {
        publisher: req.getQuery("role") === "publisher",
        topic: topic === undefined || topic === "" ? "bench" : `bench/${topic}`,
      },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      context,
    );
  },
  open(ws) {
    const data = ws.getUserData();
    if (!data.publisher) ws.subscribe(data.topic);
  },
  message(ws, message, isBinary) {
    app.publish(ws.getUserData().topic, message, isBinary);
  },
});

app;

listenUws(uws, app, port, "broadcast server", "/topic");
