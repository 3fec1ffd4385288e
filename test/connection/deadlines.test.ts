import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DeadlineSweep, sweepFor } from "../../src/connection/deadlines.js";

// Fake timers (Date and setInterval together): the checks are exact, whatever the machine's load.
describe("DeadlineSweep", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("reports each deadline once, in the order they fall due, at most a period late", () => {
    const expired: Array<[string, number]> = [];
    const sweep = new DeadlineSweep<string>(40, (member) => expired.push([member, Date.now()]));
    const startedAt = new Map<string, number>();
    for (const name of ["a", "b", "c"]) {
      startedAt.set(name, Date.now());
      sweep.add(name);
      vi.advanceTimersByTime(7);
    }
    expect(sweep.size).toBe(3);
    // "a" is due 40 ms after it was added, 19 ms from now: nothing yet just before.
    vi.advanceTimersByTime(18);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(expired.map(([name]) => name)).toEqual(["a", "b", "c"]);
    for (const [name, at] of expired) {
      const waited = at - startedAt.get(name)!;
      // A period is 5 ms here (an eighth of 40, at least 5).
      expect(waited).toBeGreaterThanOrEqual(40);
      expect(waited).toBeLessThanOrEqual(40 + 5);
    }
    expect(sweep.size).toBe(0);
    // The timer ended with the last deadline.
    expect(vi.getTimerCount()).toBe(0);
  });

  it("forgets a cancelled deadline and restarts one that is added again", () => {
    const expired: string[] = [];
    const sweep = new DeadlineSweep<string>(40, (member) => expired.push(member));
    sweep.add("cancelled");
    sweep.add("restarted");
    sweep.add("kept");
    vi.advanceTimersByTime(20);
    sweep.delete("cancelled");
    sweep.add("restarted");
    expect([...sweep.members()]).toEqual(["kept", "restarted"]);
    vi.advanceTimersByTime(25);
    expect(expired).toEqual(["kept"]);
    vi.advanceTimersByTime(20);
    expect(expired).toEqual(["kept", "restarted"]);
    vi.advanceTimersByTime(200);
    expect(expired).toEqual(["kept", "restarted"]);
  });

  it("lets a handler add and cancel deadlines while the sweep runs", () => {
    const expired: string[] = [];
    const sweep: DeadlineSweep<string> = new DeadlineSweep<string>(20, (member) => {
      expired.push(member);
      if (member === "first") {
        sweep.delete("second");
        sweep.add("again");
      }
    });
    sweep.add("first");
    sweep.add("second");
    vi.advanceTimersByTime(25);
    expect(expired).toEqual(["first"]);
    vi.advanceTimersByTime(25);
    expect(expired).toEqual(["first", "again"]);
    vi.advanceTimersByTime(100);
    expect(expired).toEqual(["first", "again"]);
  });

  it("shares one sweep per duration through a registry", () => {
    const registry = new Map<number, DeadlineSweep<object>>();
    const onExpire = () => {};
    const a = sweepFor(registry, 1_000, onExpire);
    expect(sweepFor(registry, 1_000, onExpire)).toBe(a);
    expect(sweepFor(registry, 2_000, onExpire)).not.toBe(a);
    expect(registry.size).toBe(2);
  });
});
