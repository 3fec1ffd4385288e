// Switchboard's side of `npm run bench`: createServer with its defaults (perMessageDeflate off
// unless --deflate, in which case Switchboard's own permessage-deflate defaults apply). It
// echoes every message with the same opcode, exactly as bench/servers/ws-echo.ts does for ws,
// so the two servers differ only in the library underneath.
import { createServer } from "../../src/index.js";
import { parseServerArgs } from "./args.js";

const { port, deflate } = parseServerArgs(process.argv.slice(2));
const server = await createServer({ port, host: "127.0.0.1", perMessageDeflate: deflate });

server.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  // The load generator ends runs by dropping its sockets; a reset is expected, not news.
  ws.on("error", () => {});
});

console.log(`switchboard echo server listening on ${server.url("/echo")}`);

// Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
