/**
 * A typed event emitter small enough for the browser bundle of `switchboard/client`: Node's
 * EventEmitter is not there, and EventTarget would make every payload an Event. Each event has
 * one payload object; `on` and `once` return the function that removes the listener.
 *
 * Two rules keep emitting safe when listeners change the emitter while it emits:
 * - A listener added during an emit waits for the next one; a listener removed during an emit
 *   (by another listener) is not called by it.
 * - A listener that throws does not stop the others. Its error goes to `listenerFailed`, which by
 *   default rethrows it on a later turn (as a browser reports an exception thrown by an event
 *   handler), so it is neither lost nor able to leave the emitting code half done.
 */

export type Unsubscribe = () => void;

interface Entry {
  readonly listener: (value: never) => void;
  readonly once: boolean;
  active: boolean;
}

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Entry[]>();

  /** Calls `listener` on every `event` until the returned function is called. */
  on<K extends keyof Events>(event: K, listener: (value: Events[K]) => void): Unsubscribe {
    return this.add(event, listener, false);
  }

  /** Calls `listener` on the next `event` only. */
  once<K extends keyof Events>(event: K, listener: (value: Events[K]) => void): Unsubscribe {
    return this.add(event, listener, true);
  }

  /** Removes `listener` from `event`, however many times it was added. */
  off<K extends keyof Events>(event: K, listener: (value: Events[K]) => void): void {
    // A copy: remove() splices the array.
    for (const entry of this.listeners.get(event)?.slice() ?? []) {
      if (entry.listener === listener) this.remove(event, entry);
    }
  }

  listenerCount(event: keyof Events): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const entries = this.listeners.get(event);
    if (entries === undefined) return;
    // A copy: listeners added now wait for the next emit; removed ones are marked inactive.
    for (const entry of entries.slice()) {
      if (!entry.active) continue;
      if (entry.once) this.remove(event, entry);
      try {
        (entry.listener as (value: Events[K]) => void)(value);
      } catch (error) {
        this.listenerFailed(event, error);
      }
    }
  }

  /** A listener threw. Subclasses may report it as an event of their own. */
  protected listenerFailed(_event: keyof Events, error: unknown): void {
    queueMicrotask(() => {
      throw error;
    });
  }

  private add<K extends keyof Events>(
    event: K,
    listener: (value: Events[K]) => void,
    once: boolean,
  ): Unsubscribe {
    if (typeof listener !== "function") throw new TypeError("a listener must be a function");
    const entry: Entry = { listener, once, active: true };
    const entries = this.listeners.get(event);
    if (entries === undefined) this.listeners.set(event, [entry]);
    else entries.push(entry);
    return () => this.remove(event, entry);
  }

  private remove(event: keyof Events, entry: Entry): void {
    if (!entry.active) return;
    entry.active = false;
    const entries = this.listeners.get(event);
    if (entries === undefined) return;
    const at = entries.indexOf(entry);
    if (at !== -1) entries.splice(at, 1);
    if (entries.length === 0) this.listeners.delete(event);
  }
}
