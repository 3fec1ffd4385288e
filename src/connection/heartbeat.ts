/**
 * Heartbeats for many connections on one timer. A timer per connection costs a Timeout object
 * and a timer-list entry each (about 250 bytes and some CPU per connection opened), which adds
 * up at tens of thousands of idle connections; one sweep per heartbeat setting costs neither.
 *
 * A connection due for a ping gets one when the sweep reaches it, and one that has not answered
 * its ping within the timeout is reported then: each happens at most one sweep period late (two
 * for the first ping, which is never early). The
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

/** Below this a sweep would run more often than any heartbeat needs. */
const MIN_PERIOD_MS = 5;

/**
 * Times are counted in sweeps, so that each member's state is one small integer in the map:
 * the sweep at which its next ping is due, negated while its last ping waits for a pong (the
 * pong's deadline follows from it). No object and no boxed number per member.
 */
export class HeartbeatSchedule {
  readonly #members = new Map<HeartbeatMember, number>();
  #timer: NodeJS.Timeout | null = null;
  readonly #period: number;
  readonly #intervalSweeps: number;
  readonly #timeoutSweeps: number;
  /** Sweeps so far. */
  #sweeps = 0;

  constructor(options: HeartbeatOptions) {
    this.#period = Math.max(
      MIN_PERIOD_MS,
      Math.floor(Math.min(options.interval, options.timeout) / 4),
    );
    this.#intervalSweeps = Math.ceil(options.interval / this.#period);
    this.#timeoutSweeps = Math.ceil(options.timeout / this.#period);
  }

  add(member: HeartbeatMember): void {
    // One sweep more: a member added just before a sweep must not be pinged early.
    this.#members.set(member, this.#sweeps + this.#intervalSweeps + 1);
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#sweep(), this.#period);
      // Heartbeats never keep a process alive on their own.
      this.#timer.unref();
    }
  }

  /**
   * The timer stays until a sweep finds nobody: short connections come and go many times a
   * period, and a timer stopped at each empty moment would be made again for the next one.
   */
  delete(member: HeartbeatMember): void {
    this.#members.delete(member);
  }

  get size(): number {
    return this.#members.size;
  }

  /** Whether the sweep's timer exists (it ends at the first sweep with no members). */
  get ticking(): boolean {
    return this.#timer !== null;
  }

  pong(member: HeartbeatMember): void {
    const due = this.#members.get(member);
    if (due !== undefined && due < 0) this.#members.set(member, -due);
  }

  #sweep(): void {
    if (this.#members.size === 0) {
      clearInterval(this.#timer!);
      this.#timer = null;
      return;
    }
    const now = ++this.#sweeps;
    // A member may leave (or others join) from inside its callback: a Map iterates safely over
    // deletions, and members added now are first due an interval from now anyway.
    for (const [member, due] of this.#members) {
      if (due < 0) {
        // Waiting for a pong to the ping sent at sweep (-due - interval).
        if (now >= -due - this.#intervalSweeps + this.#timeoutSweeps) {
          this.#members.set(member, -due);
          member.heartbeatTimeout();
        }
      } else if (now >= due) {
        const next = now + this.#intervalSweeps;
        const pinged = member.heartbeatPing();
        // The ping may have ended the member (a write that failed at once): it stays gone.
        if (this.#members.has(member)) this.#members.set(member, pinged ? -next : next);
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
