import { describe, expect, it } from "vitest";
import { DeadlineSweep, sweepFor } from "../../src/connection/deadlines.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("DeadlineSweep", () => {
  it("reports each deadline once, in the order they fall due, at most a period late", async () => {
    const expired: Array<[string, number]> = [];
    const sweep = new DeadlineSweep<string>(40, (member) => expired.push([member, Date.now()]));
    const startedAt = new Map<string, number>();
    for (const name of ["a", "b", "c"]) {
      startedAt.set(name, Date.now());
      sweep.add(name);
      await sleep(10);
    }
    expect(sweep.size).toBe(3);
    const deadline = Date.now() + 2_000;
    while (expired.length < 3 && Date.now() < deadline) await sleep(5);
    expect(expired.map(([name]) => name)).toEqual(["a", "b", "c"]);
    for (const [name, at] of expired) {
      const waited = at - (startedAt.get(name) ?? 0);
      expect(waited).toBeGreaterThanOrEqual(39);
      // A period is 5 ms here; timers on a busy test machine get a generous margin.
      expect(waited).toBeLessThan(40 + 500);
    }
    expect(sweep.size).toBe(0);
  });

  it("forgets a cancelled deadline and restarts one that is added again", async () => {
    const expired: string[] = [];
    const sweep = new DeadlineSweep<string>(40, (member) => expired.push(member));
    sweep.add("cancelled");
    sweep.add("restarted");
    sweep.add("kept");
    await sleep(20);
    sweep.delete("cancelled");
    sweep.add("restarted");
    expect([...sweep.members()]).toEqual(["kept", "restarted"]);
    const deadline = Date.now() + 2_000;
    while (expired.length < 2 && Date.now() < deadline) await sleep(5);
    expect(expired).toEqual(["kept", "restarted"]);
    await sleep(60);
    expect(expired).toEqual(["kept", "restarted"]);
  });

  it("lets a handler add and cancel deadlines while the sweep runs", async () => {
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
    const deadline = Date.now() + 2_000;
    while (expired.length < 2 && Date.now() < deadline) await sleep(5);
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
