// Switchboard's side of `npm run bench:broadcast`: startServiceServer on bench/services, where
// /topic (bench/services/topic.ts) subscribes every client but a publisher to its topic ("bench",
// or "bench/N" with `?topic=N`) and publishes each message a publisher sends to it, so the
// fan-out runs on the I/O thread. `--isolation` sets where the service runs (worker by default, as the server's default
// is); the publisher's messages cross to the service and come back as one publish each.
//
//   node bench/.build/js/bench/servers/switchboard-broadcast.js --port 0 [--isolation worker]
//
// (compiled by `npm run bench`; or `node --import tsx bench/servers/switchboard-broadcast.ts`)
import { fileURLToPath } from "node:url";
import { connect } from "../../src/client/connect.js";
import type { Logger } from "../../src/server/logger.js";
import { startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { parseServerArgs } from "./args.js";

const ISOLATIONS: readonly Isolation[] = ["main", "worker", "process"];
const WARM_UP_TIMEOUT_MS = 15_000;
const WARM_UP_RETRY_MS = 20;

function parseArgs(argv: string[]): { port: number; isolation: Isolation } {
  let isolation: Isolation = "worker";
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--isolation") {
      const value = argv[++i] as Isolation;
      if (!ISOLATIONS.includes(value)) {
        throw new Error(`bad --isolation: ${value} (one of ${ISOLATIONS.join(", ")})`);
      }
      isolation = value;
    } else {
      rest.push(argv[i]);
    }
  }
  const { port, deflate } = parseServerArgs(rest);
  if (deflate) throw new Error("the broadcast benchmark runs without permessage-deflate");
  return { port, isolation };
}

// Problems go to stderr, where the orchestrator keeps the tail for its error messages.
const logger: Logger = {
  error: (context, message) => console.error("error:", message, context),
  warn: (context, message) => console.error("warn:", message, context),
  info: () => {},
  debug: () => {},
};

const { port, isolation } = parseArgs(process.argv.slice(2));
const root = fileURLToPath(new URL("../services/", import.meta.url));
const server = await startServiceServer({ root, port, host: "127.0.0.1", isolation, logger });

/**
 * Services start on their first connection. One publish before announcing the URL starts /topic
 * (a worker or process boots and loads the module) and proves a subscriber gets what the
 * publisher sends, so the first measured run neither waits for a boot nor measures one. The
 * subscription lands asynchronously, so the publisher repeats until the subscriber hears it.
 */
async function warmUp(): Promise<void> {
  const subscriber = await connect(server.url("/topic"));
  const publisher = await connect(server.url("/topic?role=publisher"));
  let retry: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    console.error(`/topic delivered nothing within ${WARM_UP_TIMEOUT_MS} ms`);
    process.exit(1);
  }, WARM_UP_TIMEOUT_MS);
  await new Promise<void>((resolve, reject) => {
    subscriber.once("message", (data: Buffer, isBinary: boolean) => {
      if (isBinary || data.toString() !== "warm-up") {
        reject(new Error(`/topic delivered ${isBinary ? "binary" : "text"} "${data}"`));
      } else resolve();
    });
    subscriber.once("error", reject);
    publisher.once("error", reject);
    const publish = () => {
      publisher.send("warm-up");
      retry = setTimeout(publish, WARM_UP_RETRY_MS);
    };
    publish();
  });
  clearTimeout(retry);
  clearTimeout(timer);
  await Promise.all(
    [subscriber, publisher].map(
      (ws) =>
        new Promise<void>((resolve) => {
          ws.once("close", () => resolve());
          ws.close(1000);
        }),
    ),
  );
}

await warmUp();
console.log(`switchboard broadcast server (${isolation}) listening on ${server.url("/topic")}`);

// Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
// A worker ends with this process; a service process sees its IPC channel close and ends too.
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
