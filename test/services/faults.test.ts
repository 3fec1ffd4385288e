// Fault isolation: a service that throws outside its hooks, exits, loops forever or allocates
// without bound is ended, its clients are closed with 1011 and it is restarted with backoff,
// while another service keeps serving its clients with no message lost. Run for the two
// isolated modes (a worker thread, a child process); "main" offers no isolation by design.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import {
  client,
  eventually,
  recordingLogger,
  sleep,
  type TestClient,
  upgradeRequest,
} from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/faults", import.meta.url));

describe.each<Isolation>(["worker", "process"])("faults in isolation %s", (isolation) => {
  let server: ServiceServer;
  const logger = recordingLogger();
  const open: TestClient[] = [];
  /** A client of `on` (the shared server unless told), closed after the tests. */
  const join = async (path: string, on: ServiceServer = server) => {
    const c = await client(on.url(path));
    open.push(c);
    return c;
  };
  const startFaultServer = (restartDelayMs: number, restartMaxDelayMs: number) =>
    startServiceServer({
      root: ROOT,
      port: 0,
      isolation,
      logger,
      restartDelayMs,
      restartMaxDelayMs,
    });

  beforeAll(async () => {
    server = await startFaultServer(100, 1_000);
  });
  afterAll(async () => {
    for (const c of open) c.ws.terminate();
    await server.shutdown();
  });

  /**
   * Keeps a bystander busy while `fault` runs: one message every few milliseconds, each echoed.
   * Returns once the fault is over; every message sent must have come back, in order.
   */
  async function whileServing(fault: () => Promise<void>): Promise<void> {
    const steady = await join("/steady");
    let sent = 0;
    let running = true;
    const pump = (async () => {
      for (let i = 0; running && i < 5_000; i++) {
        steady.ws.send(`s${sent++}`);
        await sleep(5);
      }
    })();
    await fault();
    // Keep going a little after the fault, so the bystander is seen serving on both sides of it.
    const after = sent + 20;
    await eventually(() => sent >= after, 10_000, "messages after the fault");
    running = false;
    await pump;
    const echoes = await steady.waitFor(sent);
    expect(echoes).toEqual(Array.from({ length: sent }, (_, i) => `s${i}`));
    expect(steady.ws.readyState).toBe("open");
  }

  /** The service answers again after its restart. */
  async function servesAgain(path: string): Promise<void> {
    let answered = false;
    const deadline = Date.now() + 15_000;
    while (!answered && Date.now() < deadline) {
      const status = (await upgradeRequest(server.port, path)).status;
      if (status === 101) {
        const c = await join(path);
        c.ws.send("again");
        expect(await c.next()).toBe("alive:again");
        answered = true;
      } else {
        expect(status).toBe(503);
        await sleep(50);
      }
    }
    expect(answered).toBe(true);
  }

  it.each([
    ["/crash", "crash", "crash"],
    ["/exit", "exit", "exit"],
    ["/loop", "loop", "terminated"],
    ["/hog", "hog", "out-of-memory"],
  ])(
    "%s: its clients get 1011, it restarts, the bystander loses nothing",
    async (path, trigger, reason) => {
      const victim = await join(path);
      const other = await join(path);
      victim.ws.send("before");
      expect(await victim.next()).toBe("alive:before");
      await whileServing(async () => {
        victim.ws.send(trigger);
        expect((await victim.closed).code).toBe(1011);
        expect((await other.closed).code).toBe(1011);
      });
      const ended = logger.lines.find(
        (l) => l.context.service === `${path.slice(1)}.ts` && l.context.reason !== undefined,
      );
      expect(ended?.context.reason).toBe(reason);
      if (trigger === "crash") {
        // The log carries the stack of what killed it.
        expect(JSON.stringify(ended?.context.err)).toContain("uncaught on purpose");
      }
      await servesAgain(path);
    },
  );

  it("keeps a healthy service when the I/O thread itself is held up past the watchdog limit", async () => {
    const c = await join("/loop");
    const linesBefore = logger.lines.length;
    c.ws.send("before");
    expect(await c.next()).toBe("alive:before");
    // Four stalls of this thread, each longer than the service's watchdogMs (600), one event
    // loop turn apart: a ping posted in a turn is answered during the stall that follows, and
    // the answer is still unread when the watchdog's timer next runs.
    for (let stall = 0; stall < 4; stall++) {
      await new Promise((resolve) => setImmediate(resolve));
      const until = Date.now() + 700;
      while (Date.now() < until) {
        // Busy, as a long synchronous task on the I/O thread would be.
      }
    }
    await sleep(100);
    c.ws.send("after");
    expect(await c.next()).toBe("alive:after");
    expect(c.ws.readyState).toBe("open");
    const terminations = logger.lines
      .slice(linesBefore)
      .filter((l) => l.context.service === "loop.ts" && l.context.watchdogMs !== undefined);
    expect(terminations).toEqual([]);
  });

  describe("a crash loop", () => {
    // A server of its own, with backoffs long enough that a loaded machine still sees each one
    // (a 503 asked for within the first backoff), and a reset window longer than the test.
    let looping: ServiceServer;
    beforeAll(async () => {
      looping = await startFaultServer(1_000, 30_000);
    });
    afterAll(async () => {
      await looping.shutdown();
    });

    it("restarts with growing delays and answers 503 with Retry-After meanwhile", async () => {
      const delays: number[] = [];
      for (let round = 0; round < 3; round++) {
        await eventually(
          () => looping.service("flaky.ts")?.status !== "backoff",
          10_000,
          "the backoff to pass",
        );
        const first = await join("/flaky", looping);
        expect((await first.closed).code).toBe(1011);
        await eventually(
          () => looping.service("flaky.ts")?.status === "backoff",
          5_000,
          "the restart to be scheduled",
        );
        const refused = await upgradeRequest(looping.port, "/flaky");
        expect(refused.status).toBe(503);
        expect(Number(refused.headers["retry-after"])).toBeGreaterThanOrEqual(1);
        const restarting = logger.lines.filter(
          (l) => l.message === "restarting" && l.context.service === "flaky.ts",
        );
        delays.push(restarting.at(-1)!.context.delayMs as number);
      }
      expect(delays).toEqual([1_000, 2_000, 4_000]);
    }, 30_000);
  });
});
