/**
 * Many deadlines of one duration on one timer: the close timeout of every closing connection,
 * the head timeout of every connection still sending its request. A timer per connection costs a
 * Timeout object, a timer-list entry and a clearTimeout for every connection opened, almost all
 * of them cleared long before they fire; a sweep costs a map entry.
 *
 * All deadlines of a sweep have the same duration, so they fall due in the order they were
 * added: a sweep stops at the first one not yet due. It runs every eighth of the duration (at
 * least every 5 ms, at most every second), so a deadline is reported at most that much late.
 */

const MIN_PERIOD_MS = 5;
const MAX_PERIOD_MS = 1_000;

export class DeadlineSweep<T> {
  readonly #due = new Map<T, number>();
  readonly #durationMs: number;
  readonly #periodMs: number;
  readonly #onExpire: (member: T) => void;
  #timer: NodeJS.Timeout | null = null;

  constructor(durationMs: number, onExpire: (member: T) => void) {
    this.#durationMs = durationMs;
    this.#periodMs = Math.min(MAX_PERIOD_MS, Math.max(MIN_PERIOD_MS, Math.floor(durationMs / 8)));
    this.#onExpire = onExpire;
  }

  get size(): number {
    return this.#due.size;
  }

  /** The members with a deadline, soonest first. */
  members(): IterableIterator<T> {
    return this.#due.keys();
  }

  /** Starts (or restarts) `member`'s deadline: due one duration from now. */
  add(member: T): void {
    // Deleting first moves a restarted member to the end, keeping the map in due order.
    this.#due.delete(member);
    this.#due.set(member, Date.now() + this.#durationMs);
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#sweep(), this.#periodMs);
      // A deadline never keeps a process alive on its own.
      this.#timer.unref();
    }
  }

  /** Cancels `member`'s deadline; nothing happens if it has none. */
  delete(member: T): void {
    if (!this.#due.delete(member) || this.#due.size > 0 || this.#timer === null) return;
    clearInterval(this.#timer);
    this.#timer = null;
  }

  #sweep(): void {
    const now = Date.now();
    for (const [member, due] of this.#due) {
      if (due > now) break;
      this.#due.delete(member);
      this.#onExpire(member);
    }
    if (this.#due.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }
}

/**
 * One sweep per duration in `registry`, made on first use: every caller with the same duration
 * and handler shares its timer.
 */
export function sweepFor<T>(
  registry: Map<number, DeadlineSweep<T>>,
  durationMs: number,
  onExpire: (member: T) => void,
): DeadlineSweep<T> {
  let sweep = registry.get(durationMs);
  if (sweep === undefined) {
    sweep = new DeadlineSweep(durationMs, onExpire);
    registry.set(durationMs, sweep);
  }
  return sweep;
}
