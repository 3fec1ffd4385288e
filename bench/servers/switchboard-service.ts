// The service server's side of `npm run bench`: startServiceServer on bench/services, where
// /echo (bench/services/echo.ts) echoes every message with its opcode, so the load generator
// drives it exactly as it drives bench/servers/switchboard-echo.ts. `--isolation` sets where the
// service runs (the module has no `config` export, so the server's default applies): on the I/O
// thread ("main"), in a worker thread or in a child process. The difference between those runs
// is the cost of carrying events and commands across the boundary in batches.
//
//   node bench/.build/js/bench/servers/switchboard-service.js --port 0 --isolation worker [--deflate]
//
// (compiled by `npm run bench`, which resolves ../services/ to the compiled services next to it;
// or `node --import tsx bench/servers/switchboard-service.ts ...`, as `--tsx` runs it)
import { fileURLToPath } from "node:url";
import { connect } from "../../src/client/connect.js";
import type { Logger } from "../../src/server/logger.js";
import { startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { parseServerArgs } from "./args.js";

const ISOLATIONS: readonly Isolation[] = ["main", "worker", "process"];
const WARM_UP_TIMEOUT_MS = 15_000;

function parseArgs(argv: string[]): { port: number; deflate: boolean; isolation: Isolation } {
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
  return { ...parseServerArgs(rest), isolation };
}

// Problems go to stderr, where the orchestrator keeps the tail for its error messages; routine
// lines (service started, connections) would only cost time during a run.
const logger: Logger = {
  error: (context, message) => console.error("error:", message, context),
  warn: (context, message) => console.error("warn:", message, context),
  info: () => {},
  debug: () => {},
};

const { port, deflate, isolation } = parseArgs(process.argv.slice(2));
const root = fileURLToPath(new URL("../services/", import.meta.url));
const server = await startServiceServer({
  root,
  port,
  host: "127.0.0.1",
  isolation,
  perMessageDeflate: deflate,
  logger,
});

/**
 * Services start on their first connection. One echo before announcing the URL starts /echo
 * (a worker or process boots and loads the module) and proves it answers, so the first measured
 * run neither waits for a boot nor measures one.
 */
async function warmUp(): Promise<void> {
  const ws = await connect(server.url("/echo"));
  const timer = setTimeout(() => {
    console.error(`/echo did not answer within ${WARM_UP_TIMEOUT_MS} ms`);
    process.exit(1);
  }, WARM_UP_TIMEOUT_MS);
  await new Promise<void>((resolve, reject) => {
    ws.once("message", (data: Buffer, isBinary: boolean) => {
      if (isBinary || data.toString() !== "warm-up") {
        reject(new Error(`/echo answered ${isBinary ? "binary" : "text"} "${data}"`));
      } else resolve();
    });
    ws.once("error", reject);
    ws.send("warm-up");
  });
  await new Promise<void>((resolve) => {
    ws.once("close", () => resolve());
    ws.close(1000);
  });
  clearTimeout(timer);
}

await warmUp();
console.log(`switchboard service server (${isolation}) listening on ${server.url("/echo")}`);

// Exit at once: the orchestrator stops servers between runs and open sockets need no grace.
// A worker ends with this process; a service process sees its IPC channel close and ends too.
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
