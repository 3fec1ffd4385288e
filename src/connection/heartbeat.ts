/**
 * Heartbeats for many connections on one timer. A timer per connection costs a Timeout object
 * and a timer-list entry each (about 250 bytes and some CPU per connection opened), which adds
 * up at tens of thousands of idle connections; one sweep per heartbeat setting costs neither.
 *
 * A connection due for a ping gets one when the sweep reaches it, and one that has not answered
 * its ping within the timeout is reported then: each happens at most one sweep period late. The
 * period is a quarter of the shorter of the interval and the timeout, so a 30 s interval with a
 * 10 s timeout is swept every 2.5 s.
 */
export interface HeartbeatOptions {
  /** Milliseconds between pings (section 5.5.2). */
  interval: number;
  /** Milliseconds a pong may take before the peer is considered gone. */
  timeout: number;
}

/** What a connection does when the sweep reaches it. */
export interface HeartbeatMember {
  /** Sends a ping if its state allows one; false when it did not. */
  heartbeatPing(): boolean;
  /** No pong came within the timeout. */
  heartbeatTimeout(): void;
}

interface Beat {
  nextPingAt: number;
  /** When the ping in flight times out; 0 when none is in flight. */
  pongDeadline: number;
}

/** Below this a sweep would run more often than any heartbeat needs. */
const MIN_PERIOD_MS = 5;

export class HeartbeatSchedule {
  readonly #members = new Map<HeartbeatMember, Beat>();
  #timer: NodeJS.Timeout | null = null;
  readonly #period: number;

  constructor(private readonly options: HeartbeatOptions) {
    this.#period = Math.max(
      MIN_PERIOD_MS,
      Math.floor(Math.min(options.interval, options.timeout) / 4),
    );
  }

  add(member: HeartbeatMember): void {
    this.#members.set(member, { nextPingAt: Date.now() + this.options.interval, pongDeadline: 0 });
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#sweep(), this.#period);
      // Heartbeats never keep a process alive on their own.
      this.#timer.unref();
    }
  }

  delete(member: HeartbeatMember): void {
    if (!this.#members.delete(member) || this.#members.size > 0) return;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  get size(): number {
    return this.#members.size;
  }

  pong(member: HeartbeatMember): void {
    const beat = this.#members.get(member);
    if (beat !== undefined) beat.pongDeadline = 0;
  }

  #sweep(): void {
    const now = Date.now();
    // A member may leave (or others join) from inside its callback: a Map iterates safely over
    // deletions, and members added now are first due an interval from now anyway.
    for (const [member, beat] of this.#members) {
      if (beat.pongDeadline !== 0) {
        if (now >= beat.pongDeadline) {
          beat.pongDeadline = 0;
          member.heartbeatTimeout();
        }
      } else if (now >= beat.nextPingAt) {
        beat.nextPingAt = now + this.options.interval;
        if (member.heartbeatPing()) beat.pongDeadline = now + this.options.timeout;
      }
    }
  }
}

const schedules = new Map<string, HeartbeatSchedule>();
/** Schedules kept at most; past it the empty ones are dropped. */
const MAX_SCHEDULES = 64;
/** The options object of the last start: servers pass the same one for every connection. */
let lastOptions: HeartbeatOptions | null = null;
let lastSchedule: HeartbeatSchedule | null = null;

/**
 * Starts heartbeats for `member` on the schedule shared by every member with the same options;
 * the schedule answers pongs (`pong(member)`) and stops them (`delete(member)`).
 */
export function startHeartbeat(
  member: HeartbeatMember,
  options: HeartbeatOptions,
): HeartbeatSchedule {
  let schedule = options === lastOptions ? lastSchedule : null;
  if (schedule === null) {
    const key = `${options.interval}:${options.timeout}`;
    schedule = schedules.get(key) ?? null;
    if (schedule === null) {
      if (schedules.size >= MAX_SCHEDULES) {
        for (const [k, other] of schedules) if (other.size === 0) schedules.delete(k);
        if (lastSchedule !== null && lastSchedule.size === 0) lastOptions = lastSchedule = null;
      }
      schedule = new HeartbeatSchedule({ ...options });
      schedules.set(key, schedule);
    }
    lastOptions = options;
    lastSchedule = schedule;
  }
  schedule.add(member);
  return schedule;
}
