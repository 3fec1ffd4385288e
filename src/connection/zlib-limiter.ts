/**
 * A FIFO job limiter. zlib work runs on libuv's small thread pool, which file system and DNS work
 * share; without a cap, a burst of compressed messages on many connections would queue thousands
 * of zlib jobs there and starve everything else. All permessage-deflate instances go through
 * `sharedZlibLimiter` unless told otherwise.
 */
import { DEFAULT_CONCURRENCY } from "../protocol/permessage-deflate.js";

export class Limiter {
  #concurrency: number;
  #running = 0;
  readonly #queue: Array<() => void> = [];

  constructor(concurrency: number) {
    this.#concurrency = checkConcurrency(concurrency);
  }

  /** How many jobs may run at once. Raising it starts queued jobs at once. */
  get concurrency(): number {
    return this.#concurrency;
  }

  set concurrency(value: number) {
    this.#concurrency = checkConcurrency(value);
    this.#drain();
  }

  /** Jobs running now. */
  get running(): number {
    return this.#running;
  }

  /** Jobs waiting for a slot. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Runs `job` once fewer than `concurrency` jobs are running, in the order run() was called, and
   * settles with its outcome. A job that throws synchronously rejects like one that rejects.
   */
  run<T>(job: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const start = () => {
        this.#running++;
        let promise: Promise<T>;
        try {
          promise = job();
        } catch (error) {
          promise = Promise.reject(error);
        }
        Promise.resolve(promise).then(
          (value) => {
            this.#done();
            resolve(value);
          },
          (error: unknown) => {
            this.#done();
            reject(error);
          },
        );
      };
      this.#queue.push(start);
      this.#drain();
    });
  }

  #done(): void {
    this.#running--;
    this.#drain();
  }

  #drain(): void {
    while (this.#running < this.#concurrency && this.#queue.length > 0) {
      this.#queue.shift()!();
    }
  }
}

function checkConcurrency(value: number): number {
  if (value !== Number.POSITIVE_INFINITY && (!Number.isInteger(value) || value < 1)) {
    throw new RangeError("Concurrency must be a positive integer or Infinity");
  }
  return value;
}

/** The process-wide cap on concurrent zlib jobs (default 10). */
export const sharedZlibLimiter = new Limiter(DEFAULT_CONCURRENCY);

/** Sets the process-wide cap on concurrent zlib jobs. */
export function setZlibConcurrency(concurrency: number): void {
  sharedZlibLimiter.concurrency = concurrency;
}
