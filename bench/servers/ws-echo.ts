// The reference peer for `npm run bench`: the `ws` package's server with its defaults
// (perMessageDeflate off unless --deflate, in which case ws's own defaults apply: threshold
// 1024 bytes, context takeover on, zlib concurrency 10). It echoes every message with the
// same opcode, exactly as examples/echo-server.ts does for Switchboard.
import { WebSocketServer } from "ws";
import { parseServerArgs } from "./args.js";

const { port, deflate } = parseServerArgs(process.argv.slice(2));
const wss = new WebSocketServer({ port, host: "127.0.0.1", perMessageDeflate: deflate });

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  // The load generator ends runs by dropping its sockets; a reset is expected, not news.
  ws.on("error", () => {});
});

wss.on("listening", () => {
  const address = wss.address();
  const actual = typeof address === "object" && address !== null ? address.port : port;
  console.log(`ws echo server listening on ws://127.0.0.1:${actual}/echo`);
});

// Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
