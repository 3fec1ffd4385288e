// The reconnection backoff: the delay formula, and the session following it with its timers and
// randomness injected (no sleeping), against a port nothing listens on and then a real server.
import { describe, expect, it } from "vitest";
import { createSession, DEFAULT_BACKOFF, type StateEvent } from "../../src/client/node.js";
import { backoffDelay } from "../../src/client/session.js";
import {
  freePort,
  manualTimers,
  nextEvent,
  record,
  startServer,
  until,
} from "./fixtures/helpers.js";

/** A small deterministic generator in [0, 1), so the band checks see many values. */
function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

describe("backoffDelay", () => {
  it("grows by the factor up to maxMs", () => {
    const delays = Array.from({ length: 9 }, (_, i) => backoffDelay(i + 1, DEFAULT_BACKOFF, 0));
    expect(delays).toEqual([250, 500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]);
    const thrice = { initialMs: 100, maxMs: 1_000, factor: 3, jitter: 0 };
    expect([1, 2, 3, 4].map((n) => backoffDelay(n, thrice, 0.7))).toEqual([100, 300, 900, 1_000]);
    // Far past the cap, factor ** n is Infinity: still the cap.
    expect(backoffDelay(100_000, DEFAULT_BACKOFF, 0)).toBe(10_000);
  });

  it("keeps the jitter inside (base × (1 − jitter), base]", () => {
    const random = lcg(42);
    for (const jitter of [0, 0.25, 0.5, 1]) {
      const backoff = { ...DEFAULT_BACKOFF, jitter };
      for (let attempt = 1; attempt <= 12; attempt++) {
        const base = Math.min(10_000, 250 * 2 ** (attempt - 1));
        for (let draw = 0; draw < 50; draw++) {
          const r = random();
          const delay = backoffDelay(attempt, backoff, r);
          expect(delay).toBe(base * (1 - jitter * r));
          expect(delay).toBeLessThanOrEqual(base);
          if (jitter > 0) expect(delay).toBeGreaterThan(base * (1 - jitter));
        }
      }
    }
    expect(backoffDelay(1, DEFAULT_BACKOFF, 0)).toBe(250);
    expect(backoffDelay(1, DEFAULT_BACKOFF, 0.999)).toBeCloseTo(125.125);
  });
});

describe("the session's backoff", () => {
  it("waits longer after every failed attempt, and starts over after an open", async () => {
    const port = await freePort();
    const timers = manualTimers();
    const draws = [0, 0.5, 0.99, 0.25, 0.75, 0.1, 0.6];
    let drawn = 0;
    const backoff = { initialMs: 100, maxMs: 1_000, factor: 3, jitter: 0.5 };
    const live = createSession(`ws://127.0.0.1:${port}/control`, {
      timers,
      backoff,
      random: () => draws[drawn++]!,
    });
    const log = record(live);
    const last = (): StateEvent | undefined => log.states.at(-1);
    try {
      for (let attempt = 1; attempt <= 6; attempt++) {
        await until(
          () =>
            last()?.state === "reconnecting" && (last() as { attempt: number }).attempt === attempt,
          `reconnection attempt ${attempt}`,
        );
        const delayMs = Math.min(1_000, 100 * 3 ** (attempt - 1)) * (1 - 0.5 * draws[attempt - 1]!);
        expect(last()).toMatchObject({ attempt, delayMs, lastClose: { code: 1006 } });
        expect(timers.pending).toEqual([delayMs]);
        if (attempt < 6) {
          timers.fire();
          expect(last()).toMatchObject({ state: "connecting", attempt });
        }
      }
      // Refused every time, and said so.
      expect(log.errors).toHaveLength(6);
      expect(log.errors[0]!.code).toBe("SB_CLIENT_DIAL_FAILED");
      expect((log.errors[0]!.cause as { code?: string }).code).toBe("ECONNREFUSED");
      expect(log.closes.every((c) => c.code === 1006 && c.willReconnect)).toBe(true);

      // A server on that port now: the next attempt opens and the count starts over.
      const target = await startServer(port);
      try {
        const opened = nextEvent(live, "open");
        timers.fire();
        await opened;
        expect(last()).toMatchObject({ state: "open", lastClose: { code: 1006 } });
        const dropped = nextEvent(live, "close");
        live.send("close 1013 busy");
        await dropped;
        expect(last()).toEqual({
          state: "reconnecting",
          attempt: 1,
          delayMs: 100 * (1 - 0.5 * draws[6]!),
          lastClose: { code: 1013, reason: "busy" },
        });
        expect(timers.pending).toEqual([100 * (1 - 0.5 * draws[6]!)]);
      } finally {
        live.close();
        await target.shutdown();
      }
    } finally {
      live.close();
    }
  });

  it("gives up after maxAttempts failures in a row with SB_CLIENT_GAVE_UP", async () => {
    const port = await freePort();
    const timers = manualTimers();
    const live = createSession(`ws://127.0.0.1:${port}/`, { timers, maxAttempts: 2 });
    const log = record(live);
    const closed = nextEvent(live, "close", (c) => !c.willReconnect);
    for (let attempt = 1; attempt <= 2; attempt++) {
      await until(() => timers.pending.length === 1, `reconnection attempt ${attempt}`);
      timers.fire();
    }
    expect(await closed).toMatchObject({ code: 1006, willReconnect: false });
    expect(live.state).toBe("closed");
    expect(timers.pending).toEqual([]);
    expect(log.errors.map((e) => e.code)).toEqual([
      "SB_CLIENT_DIAL_FAILED",
      "SB_CLIENT_DIAL_FAILED",
      "SB_CLIENT_DIAL_FAILED",
      "SB_CLIENT_GAVE_UP",
    ]);
    expect(log.states.map((s) => s.state)).toEqual([
      "reconnecting",
      "connecting",
      "reconnecting",
      "connecting",
      "closed",
    ]);
  });

  it("a listener that closes the session while it would wait leaves no timer behind", async () => {
    const port = await freePort();
    const timers = manualTimers();
    const live = createSession(`ws://127.0.0.1:${port}/`, { timers });
    const log = record(live);
    live.on("state", (s) => {
      if (s.state === "reconnecting") live.close(4000, "stop");
    });
    await until(() => live.state === "closed", "the session to close");
    expect(timers.pending).toEqual([]);
    // The close that ended the session, and not the one that would have announced a retry.
    expect(log.closes).toEqual([{ code: 4000, reason: "stop", willReconnect: false }]);
    expect(log.states.map((s) => s.state)).toEqual(["reconnecting", "closed"]);
  });
});
