/**
 * Echo server: every message on /echo comes back with the same opcode; other paths get 404.
 *
 *   npx tsx examples/echo-server.ts --port 8080 [--host 127.0.0.1] [--deflate]
 */
import { parseArgs } from "node:util";
import pino from "pino";
import { createServer } from "../src/index.js";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8080" },
    host: { type: "string", default: "127.0.0.1" },
    deflate: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
  },
});

const logger = pino({ level: values.quiet ? "warn" : "info" });

const server = await createServer({
  port: Number(values.port),
  host: values.host,
  perMessageDeflate: values.deflate,
  logger,
  verify: (req) =>
    new URL(req.url ?? "/", "ws://localhost").pathname === "/echo" ? true : { status: 404 },
});

server.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", (error) =>
    logger.warn({ code: error.code, remote: ws.remoteAddress }, error.message),
  );
});

// Printed on stdout even when quiet: scripts wait for this line.
process.stdout.write(`echo server listening on ${server.url("/echo")}\n`);

const shutdown = (): void => {
  server.close().finally(() => process.exit(0));
};
process.once("SIGINT", shutdown);
process.once("SIGTERM", shutdown);
