import { afterEach, describe, expect, it } from "vitest";
import { type HeartbeatMember, startHeartbeat } from "../../src/connection/heartbeat.js";
import { sleep, waitUntil } from "./duplex-pair.js";

const WAIT = 5_000;

interface Recorder extends HeartbeatMember {
  pings: number[];
  timeouts: number[];
  /** Whether the member may ping (a connection that is closing may not). */
  open: boolean;
}

function member(): Recorder {
  const rec: Recorder = {
    pings: [],
    timeouts: [],
    open: true,
    heartbeatPing: () => {
      if (!rec.open) return false;
      rec.pings.push(Date.now());
      return true;
    },
    heartbeatTimeout: () => {
      rec.timeouts.push(Date.now());
    },
  };
  return rec;
}

const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

function start(rec: Recorder, interval: number, timeout: number) {
  const schedule = startHeartbeat(rec, { interval, timeout });
  stops.push(() => schedule.delete(rec));
  return schedule;
}

describe("shared heartbeat schedule", () => {
  it("shares one schedule among members with the same options, and reuses it once emptied", async () => {
    const members = Array.from({ length: 200 }, () => member());
    const schedules = members.map((rec) => start(rec, 40, 40));
    expect(new Set(schedules).size).toBe(1);
    expect(start(member(), 40, 41)).not.toBe(schedules[0]);
    await waitUntil(() => members.every((rec) => rec.pings.length > 0), WAIT, "a ping for each");
    for (const rec of members) schedules[0].delete(rec);
    // The emptied schedule stopped sweeping the members that left; a newcomer starts it again.
    expect(schedules[0].size).toBe(0);
    const late = member();
    expect(start(late, 40, 40)).toBe(schedules[0]);
    const pings = members.map((rec) => rec.pings.length);
    await waitUntil(() => late.pings.length > 0, WAIT, "the newcomer's ping");
    expect(members.map((rec) => rec.pings.length)).toEqual(pings);
  });

  it("keeps its timer while members come and go, and ends it at the first sweep with none", async () => {
    const first = member();
    const schedule = start(first, 40, 40);
    expect(schedule.ticking).toBe(true);
    schedule.delete(first);
    // Emptied and refilled within a period: the same timer serves the newcomer.
    const second = member();
    expect(start(second, 40, 40)).toBe(schedule);
    expect(schedule.ticking).toBe(true);
    await waitUntil(() => second.pings.length > 0, WAIT, "the newcomer's ping");
    schedule.delete(second);
    await waitUntil(() => !schedule.ticking, WAIT, "the timer to end");
    expect(first.pings).toEqual([]);
  });

  it("pings every interval a member that answers, and never times it out", async () => {
    const rec = member();
    const schedule = start(rec, 30, 60);
    const started = Date.now();
    const answered = setInterval(() => schedule.pong(rec), 5);
    try {
      await waitUntil(() => rec.pings.length >= 4, WAIT, "four pings");
    } finally {
      clearInterval(answered);
    }
    expect(rec.timeouts).toEqual([]);
    // No ping before an interval has passed; then one per interval, give or take a sweep.
    expect(rec.pings[0] - started).toBeGreaterThanOrEqual(29);
    for (let i = 1; i < rec.pings.length; i++) {
      expect(rec.pings[i] - rec.pings[i - 1]).toBeGreaterThanOrEqual(29);
    }
  });

  it("times out a member that does not answer, once per unanswered ping, after the timeout", async () => {
    const rec = member();
    start(rec, 30, 50);
    await waitUntil(() => rec.timeouts.length >= 1, WAIT, "a timeout");
    expect(rec.timeouts[0] - rec.pings[0]).toBeGreaterThanOrEqual(49);
    // No second ping while the first is unanswered.
    expect(rec.pings.length).toBe(1);
  });

  it("does not start a pong deadline for a member that did not ping", async () => {
    const rec = member();
    rec.open = false;
    start(rec, 10, 10);
    await sleep(80);
    expect(rec.pings).toEqual([]);
    expect(rec.timeouts).toEqual([]);
  });

  it("lets a member leave from inside its own callback", async () => {
    const leaving = member();
    const staying = member();
    const schedule = start(leaving, 20, 20);
    start(staying, 20, 20);
    leaving.heartbeatPing = () => {
      schedule.delete(leaving);
      leaving.pings.push(Date.now());
      return true;
    };
    await waitUntil(() => staying.pings.length >= 2, WAIT, "the other member's pings");
    expect(leaving.pings.length).toBe(1);
    expect(leaving.timeouts).toEqual([]);
  });
});
