// The emitter of the browser client: typed events, unsubscribe functions, and the rules for
// listeners that change the emitter, or throw, while it emits.
import { afterEach, describe, expect, it, vi } from "vitest";
import { Emitter } from "../../src/client/emitter.js";

interface Events {
  tick: number;
  word: string;
}

class Testing extends Emitter<Events> {
  failures: Array<[keyof Events, unknown]> | null = null;
  fire<K extends keyof Events>(event: K, value: Events[K]): void {
    this.emit(event, value);
  }
  protected override listenerFailed(event: keyof Events, error: unknown): void {
    if (this.failures === null) super.listenerFailed(event, error);
    else this.failures.push([event, error]);
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("Emitter", () => {
  it("on, once, off and the unsubscribe function", () => {
    const emitter = new Testing();
    const seen: string[] = [];
    const stop = emitter.on("tick", (n) => seen.push(`on ${n}`));
    emitter.once("tick", (n) => seen.push(`once ${n}`));
    const twice = (n: number) => seen.push(`off ${n}`);
    emitter.on("tick", twice);
    emitter.on("tick", twice);
    emitter.on("word", (w) => seen.push(`word ${w}`));
    emitter.off("tick", twice);
    emitter.fire("tick", 1);
    emitter.fire("tick", 2);
    stop();
    stop();
    emitter.fire("tick", 3);
    emitter.fire("word", "hi");
    expect(seen).toEqual(["on 1", "once 1", "on 2", "word hi"]);
    expect(emitter.listenerCount("tick")).toBe(0);
    expect(emitter.listenerCount("word")).toBe(1);
    expect(() => emitter.on("tick", null as never)).toThrow(TypeError);
  });

  it("listeners added during an emit wait for the next; removed ones are not called", () => {
    const emitter = new Testing();
    const seen: string[] = [];
    let stopLater = () => {};
    emitter.on("tick", (n) => {
      seen.push(`first ${n}`);
      stopLater();
      emitter.on("tick", (m) => seen.push(`added ${m}`));
    });
    stopLater = emitter.on("tick", (n) => seen.push(`later ${n}`));
    emitter.fire("tick", 1);
    emitter.fire("tick", 2);
    expect(seen).toEqual(["first 1", "first 2", "added 2"]);
  });

  it("a listener that throws does not stop the others", () => {
    const emitter = new Testing();
    emitter.failures = [];
    const seen: number[] = [];
    const boom = new Error("boom");
    emitter.on("tick", () => {
      throw boom;
    });
    emitter.on("tick", (n) => seen.push(n));
    emitter.fire("tick", 7);
    expect(seen).toEqual([7]);
    expect(emitter.failures).toEqual([["tick", boom]]);
  });

  it("by default rethrows a listener's error on a later turn", () => {
    const later: Array<() => void> = [];
    vi.spyOn(globalThis, "queueMicrotask").mockImplementation((task) => {
      later.push(task);
    });
    const emitter = new Testing();
    emitter.on("word", () => {
      throw new Error("thrown by a listener");
    });
    expect(() => emitter.fire("word", "x")).not.toThrow();
    expect(later).toHaveLength(1);
    expect(() => later[0]!()).toThrow("thrown by a listener");
  });
});
