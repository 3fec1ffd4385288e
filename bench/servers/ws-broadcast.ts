// The ws side of `npm run bench:broadcast`: the `ws` package's server with its defaults, and
// fan-out the way an application on ws does it, a loop over the subscribers calling `send` on
// each. Every client but the publisher (`?role=publisher`) is a subscriber from its
// `connection` event on; each message the publisher sends goes to every subscriber with its
// opcode. ws has no topics and no way to frame a message once for many sockets.
import { type WebSocket, WebSocketServer } from "ws";
import { parseServerArgs } from "./args.js";

const { port } = parseServerArgs(process.argv.slice(2));
const wss = new WebSocketServer({ port, host: "127.0.0.1" });
const subscribers = new Set<WebSocket>();

wss.on("connection", (ws, req) => {
  const query = new URL(req.url ?? "/", "http://localhost").searchParams;
  if (query.get("role") !== "publisher") {
    subscribers.add(ws);
    ws.on("close", () => subscribers.delete(ws));
  }
  ws.on("message", (data, isBinary) => {
    for (const subscriber of subscribers) subscriber.send(data, { binary: isBinary });
  });
  // The load generator ends runs by dropping its sockets; a reset is expected, not news.
  ws.on("error", () => {});
});

wss.on("listening", () => {
  const address = wss.address();
  const actual = typeof address === "object" && address !== null ? address.port : port;
  console.log(`ws broadcast server listening on ws://127.0.0.1:${actual}/topic`);
});

// Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
