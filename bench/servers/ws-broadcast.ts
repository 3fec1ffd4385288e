// The ws side of `npm run bench:broadcast`: the `ws` package's server with its defaults, and
// fan-out the way an application on ws does it, a loop over the subscribers calling `send` on
// each. A client names its topic with `?topic=N` (without it, the one topic of a single
// publisher); every client but a publisher (`?role=publisher`) is a subscriber of its topic from
// its `connection` event on, and each message a client sends goes to every subscriber of its
// topic with its opcode. ws has no topics and no way to frame a message once for many sockets,
// so the topics are a Set of subscribers each.
import { type WebSocket, WebSocketServer } from "ws";
import { parseServerArgs } from "./args.js";

const { port } = parseServerArgs(process.argv.slice(2));
const wss = new WebSocketServer({ port, host: "127.0.0.1" });
const topics = new Map<string, Set<WebSocket>>();

/** The subscribers of a topic; "" is the one topic of a single publisher. */
function subscribersOf(name: string): Set<WebSocket> {
  let subscribers = topics.get(name);
  if (subscribers === undefined) {
    subscribers = new Set();
    topics.set(name, subscribers);
  }
  return subscribers;
}

wss.on("connection", (ws, req) => {
  const query = new URL(req.url ?? "/", "http://localhost").searchParams;
  const topic = subscribersOf(query.get("topic") ?? "");
  if (query.get("role") !== "publisher") {
    topic.add(ws);
    ws.on("close", () => topic.delete(ws));
  }
  ws.on("message", (data, isBinary) => {
    for (const subscriber of topic) subscriber.send(data, { binary: isBinary });
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
