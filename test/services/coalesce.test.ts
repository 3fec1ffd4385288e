// A burst of connections to a service in a worker: their opens and closes travel to it a
// millisecond's worth at a time (service-host.ts, COALESCE_MS) rather than one post per
// event-loop turn, and every one of them still arrives, in order for each client.
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { connect } from "../../src/client/connect.js";
import type { WebSocketConnection } from "../../src/connection/connection.js";
import { Event } from "../../src/isolation/batch.js";
import type { TransportFactory } from "../../src/isolation/transport.js";
import { createWorkerTransport } from "../../src/isolation/worker-transport.js";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { client, sleep } from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/coalesce", import.meta.url));
const BURST = 100;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The worker transport, counting what each post carries. */
function countingWorkers() {
  const posts: Array<{ opens: number; closes: number; records: number }> = [];
  const factory: TransportFactory = (spec, events) => {
    const transport = createWorkerTransport(spec, events);
    return {
      isolation: transport.isolation,
      packs: transport.packs,
      recycles: transport.recycles,
      terminate: () => transport.terminate(),
      post(batch, transfer) {
        const kinds = batch.records.map((record) => record[0]);
        posts.push({
          opens: kinds.filter((kind) => kind === Event.Open).length,
          closes: kinds.filter((kind) => kind === Event.Close).length,
          records: kinds.length,
        });
        transport.post(batch, transfer);
      },
    };
  };
  return { posts, factory };
}

describe("notifications to a service in a worker", () => {
  it("carries a burst's opens and closes in few posts, every one delivered", async () => {
    const { posts, factory } = countingWorkers();
    const server: ServiceServer = await startServiceServer({
      root: ROOT,
      port: 0,
      isolation: "worker",
      transports: { worker: factory },
    });
    cleanups.push(() => server.shutdown());
    // The worker is up and has had its first post (the service starts on first use).
    const first = await client(server.url("/tally"));
    cleanups.push(() => first.ws.terminate());
    first.ws.send("tally");
    expect(JSON.parse(await first.next())).toEqual({ opens: 1, closes: 0, unknownCloses: 0 });
    const before = posts.length;

    const burst: WebSocketConnection[] = await Promise.all(
      Array.from({ length: BURST }, () => connect(server.url("/tally"))),
    );
    await Promise.all(
      burst.map(
        (ws) =>
          new Promise<void>((resolve) => {
            ws.on("error", () => {});
            ws.on("close", () => resolve());
            ws.close(1000);
          }),
      ),
    );
    // Every open and close reaches the service (a bounded wait: 100 polls of 20 ms at most).
    let tally = { opens: 0, closes: 0, unknownCloses: 0 };
    for (let poll = 0; poll < 100 && tally.closes < BURST; poll++) {
      first.ws.send("tally");
      tally = JSON.parse(await first.next());
      if (tally.closes < BURST) await sleep(20);
    }
    expect(tally).toEqual({ opens: BURST + 1, closes: BURST, unknownCloses: 0 });

    const carried = posts.slice(before).filter((post) => post.opens + post.closes > 0);
    const events = carried.reduce((sum, post) => sum + post.opens + post.closes, 0);
    expect(events).toBe(2 * BURST);
    // One post per event-loop turn made one per connection here (101 posts for the 200 events);
    // gathered for a millisecond after each post they were 25-27.
    expect(carried.length).toBeLessThan(events / 3);
  });
});
