/**
 * Memory per connection: the server holds N idle connections (opened by a child process, so the
 * clients' memory is not counted) and reports how much its heap, external memory and RSS grew,
 * without and with permessage-deflate. Each connection first exchanges one 4 KiB message each
 * way, so compression state is in use.
 *
 *   npx tsx bench/memory.ts [--connections 2000]
 */
import { fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connect, createServer, type WebSocketConnection } from "../src/index.js";

const { values } = parseArgs({
  options: {
    connections: { type: "string", default: "2000" },
    client: { type: "boolean", default: false },
    url: { type: "string" },
    deflate: { type: "boolean", default: false },
  },
});
const count = Math.min(Number(values.connections), 10_000);
const payload = "switchboard ".repeat(342); // ~4 KiB, compressible

if (values.client) {
  // Child: open the connections, one round trip each, then hold them until told to stop.
  const held: WebSocketConnection[] = [];
  for (let i = 0; i < count; i++) {
    const ws = await connect(values.url!, { perMessageDeflate: values.deflate });
    const reply = once(ws, "message");
    ws.send(payload);
    await reply;
    held.push(ws);
  }
  process.send!("ready");
  process.once("message", () => {
    for (const ws of held) ws.terminate();
    process.exit(0);
  });
} else {
  const rows: string[] = [];
  for (const deflate of [false, true]) {
    rows.push(await measure(deflate));
  }
  console.log(`${count} idle connections, after one 4 KiB message each way`);
  console.log("mode        heap/conn  external/conn  rss/conn");
  for (const row of rows) console.log(row);
}

async function measure(deflate: boolean): Promise<string> {
  const server = await createServer({ port: 0, perMessageDeflate: deflate, heartbeat: false });
  server.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  global.gc?.();
  const before = process.memoryUsage();
  const child = fork(
    fileURLToPath(import.meta.url),
    [
      "--client",
      "--connections",
      String(count),
      "--url",
      server.url("/"),
      ...(deflate ? ["--deflate"] : []),
    ],
    { execArgv: ["--import", "tsx"] },
  );
  const timer = setTimeout(() => child.kill(), 120_000);
  await once(child, "message");
  global.gc?.();
  const after = process.memoryUsage();
  child.send("stop");
  await once(child, "exit");
  clearTimeout(timer);
  await server.close();
  const per = (key: keyof NodeJS.MemoryUsage) =>
    `${((after[key] - before[key]) / count / 1024).toFixed(1)} KiB`.padStart(13);
  return `${deflate ? "deflate" : "plain  "}  ${per("heapUsed")}  ${per("external")}  ${per("rss")}`;
}
