// The reconnecting session of `switchboard/client` in Node, against real service servers over
// real loopback sockets: a network drop through a TCP proxy with a publisher going on, a server
// stopped and started again, the queue, when to reconnect and when not, JSON, envelopes and
// events.
import { afterEach, describe, expect, it } from "vitest";
import {
  createSession,
  nodeDial,
  type Session,
  SessionError,
  type SessionOptions,
} from "../../src/client/node.js";
import { parseEnvelope, withResume } from "../../src/client/session.js";
import type { ServiceServer } from "../../src/server/service-server.js";
import { client } from "../services/helpers.js";
import {
  manualTimers,
  nextEvent,
  type Recording,
  record,
  startCloser,
  startServer,
  until,
} from "./fixtures/helpers.js";
import { startProxy } from "./proxy.js";

const cleanups: Array<() => unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function server(): Promise<ServiceServer> {
  const started = await startServer();
  cleanups.push(() => started.shutdown());
  return started;
}

function session(url: string, options: SessionOptions = {}): Session {
  const created = createSession(url, options);
  // Closed before the server shuts down (cleanups run in reverse), or it would reconnect.
  cleanups.push(() => created.close());
  return created;
}

async function publisher(target: ServiceServer) {
  const c = await client(target.url("/publish"));
  cleanups.push(() => c.ws.terminate());
  return c;
}

/** The message the fixture sends once it subscribed, the nth of this session (from 0). */
async function subscribed(log: Recording, nth: number) {
  await until(() => log.notices("subscribed").length > nth, `subscribe result ${nth}`);
  return log.notices("subscribed")[nth] as {
    result: { ok: boolean; reason?: string; recovered?: number; position: Position };
    resume: string | null;
  };
}

interface Position {
  epoch: string;
  offset: number;
}

function expectError(run: () => unknown, code: string): SessionError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SessionError);
    expect((error as SessionError).code).toBe(code);
    return error as SessionError;
  }
  throw new Error(`expected a SessionError ${code}`);
}

describe("a network drop", () => {
  it("reconnects through the proxy, resumes, and delivers every message once, in order", async () => {
    const target = await server();
    const proxy = await startProxy(target.port);
    cleanups.push(() => proxy.close());
    const backoff = { initialMs: 5, maxMs: 50 };
    const plain = session(`ws://127.0.0.1:${proxy.port}/feed`, { backoff });
    // This one's service asks for three messages it already has after every reconnect.
    const rewound = session(`ws://127.0.0.1:${proxy.port}/feed?rewind=3`, { backoff });
    const logs = [record(plain), record(rewound)] as const;
    // How many topic messages each session had when each of its connections opened.
    const marks: number[][] = [[], []];
    plain.on("open", () => marks[0]!.push(logs[0].topics.length));
    rewound.on("open", () => marks[1]!.push(logs[1].topics.length));
    await subscribed(logs[0], 0);
    await subscribed(logs[1], 0);
    const pub = await publisher(target);

    const TOTAL = 300;
    // The publisher stays at most this far ahead of the slower session, so it keeps publishing
    // through every drop and some messages are always in flight when the proxy cuts.
    const AHEAD = 20;
    const received = () => Math.min(logs[0].topics.length, logs[1].topics.length);
    let published = 0;
    const publish = () => pub.ws.send(`m${++published}`);
    while (published < TOTAL) {
      await until(() => received() >= published - AHEAD, `message ${published - AHEAD}`);
      publish();
      if (published === 60 || published === 220) expect(proxy.cut()).toBe(2);
      if (published === 140) {
        // Both out, and kept out while ten more are published: those come from history only.
        proxy.block();
        expect(proxy.cut()).toBe(2);
        for (let i = 0; i < 10; i++) publish();
        await pub.waitFor(published);
        const refusedAgain = (log: Recording) =>
          log.states.some((s) => s.state === "reconnecting" && s.attempt >= 2);
        await until(() => logs.every(refusedAgain), "a refused attempt of each session");
        proxy.unblock();
      }
    }
    await until(() => received() >= TOTAL, `all ${TOTAL} messages`);

    const expected = Array.from({ length: TOTAL }, (_, i) => `m${i + 1}`);
    for (const [i, log] of logs.entries()) {
      expect(log.topics.map((m) => m.data)).toEqual(expected);
      const { epoch, offset: first } = log.topics[0]!;
      expect(log.topics.every((m, at) => m.epoch === epoch && m.offset === first + at)).toBe(true);
      expect(log.opens.map((o) => o.resumed)).toEqual([false, true, true, true]);
      // Each reconnect sent `resume` with the last position the session had seen.
      const results = log.notices("subscribed");
      expect(results).toHaveLength(4);
      expect(results[0]!.resume).toBeNull();
      for (let k = 1; k < 4; k++) {
        const last = log.topics[marks[i]![k]! - 1]!;
        expect(JSON.parse(results[k]!.resume as string)).toEqual({
          feed: { epoch, offset: last.offset },
        });
        expect(results[k]!.result).toMatchObject({ ok: true });
      }
      // The ten published while the proxy refused everyone were replayed from history.
      expect((results[2]!.result as { recovered: number }).recovered).toBeGreaterThanOrEqual(10);
    }
    expect(plain.stats).toEqual({ opens: 4, duplicates: 0, gaps: 0 });
    // Three messages sent twice on each of three reconnects, each dropped the second time.
    expect(rewound.stats).toEqual({ opens: 4, duplicates: 9, gaps: 0 });
    expect(plain.positions.get("feed")).toEqual({
      epoch: logs[0].topics[0]!.epoch,
      offset: logs[0].topics[TOTAL - 1]!.offset,
    });
  });
});

describe("a server stopped and started again", () => {
  it("waits with growing delays, comes back by itself, and sees the epoch change", async () => {
    let target = await startServer();
    cleanups.push(() => target.shutdown());
    const port = target.port;
    const url = `ws://127.0.0.1:${port}/feed`;
    const live = session(url, { backoff: { initialMs: 20, maxMs: 160, factor: 2, jitter: 0 } });
    const log = record(live);
    expect((await subscribed(log, 0)).result).toMatchObject({ ok: true, recovered: 0 });
    const pub = await publisher(target);
    for (const text of ["a", "b", "c"]) pub.ws.send(text);
    await until(() => log.topics.length === 3, "three topic messages");
    const before = live.positions.get("feed")!;
    expect(before).toEqual({ epoch: log.topics[0]!.epoch, offset: log.topics[2]!.offset });
    live.send("ping 1");
    await until(() => log.messages.some((m) => m.data === "ping 1"), "the first echo");

    await target.shutdown();
    // Shut down: closed with 1001, then refused again and again, each wait twice the last.
    await until(
      () => log.states.filter((s) => s.state === "reconnecting").length >= 5,
      "five reconnection attempts",
    );
    const waits = log.states.flatMap((s) => (s.state === "reconnecting" ? [s] : []));
    expect(waits.slice(0, 5).map((s) => [s.attempt, s.delayMs])).toEqual([
      [1, 20],
      [2, 40],
      [3, 80],
      [4, 160],
      [5, 160],
    ]);
    expect(waits[0]!.lastClose.code).toBe(1001);
    expect(waits[1]!.lastClose.code).toBe(1006);
    expect(log.closes[0]).toEqual({
      code: 1001,
      reason: "server shutting down",
      willReconnect: true,
    });
    expect(log.errors.some((e) => e.code === "SB_CLIENT_DIAL_FAILED")).toBe(true);

    target = await startServer(port);
    await until(() => log.opens.length === 2, "the session to reconnect by itself");
    expect(log.opens[1]).toEqual({ protocol: "", resumed: true });
    // The history died with the first server: the service was told the epoch changed, and
    // passed that on to the client.
    const again = await subscribed(log, 1);
    expect(JSON.parse(again.resume!)).toEqual({ feed: before });
    expect(again.result).toMatchObject({ ok: false, reason: "epoch-changed" });
    const epoch = again.result.position.epoch;
    expect(epoch).not.toBe(before.epoch);

    // Messages both ways on the new server; the new epoch replaces the old position.
    const pub2 = await publisher(target);
    pub2.ws.send("d");
    await until(() => log.topics.length === 4, "a message of the new epoch");
    expect(log.topics[3]).toMatchObject({ topic: "feed", epoch, data: "d" });
    expect(live.positions.get("feed")).toEqual({ epoch, offset: log.topics[3]!.offset });
    live.send("ping 2");
    await until(() => log.messages.some((m) => m.data === "ping 2"), "the second echo");
    expect(live.state).toBe("open");
    expect(live.stats).toMatchObject({ opens: 2, duplicates: 0, gaps: 0 });
  });
});

describe("sending while disconnected", () => {
  it("queues in order up to maxQueued, then SB_CLIENT_QUEUE_FULL; flushed before 'open'", async () => {
    const target = await server();
    const proxy = await startProxy(target.port);
    cleanups.push(() => proxy.close());
    const live = session(`ws://127.0.0.1:${proxy.port}/control`, {
      maxQueued: 5,
      backoff: { initialMs: 5, maxMs: 20 },
    });
    const log = record(live);
    const echoes = () => log.messages.map((m) => m.data);
    // Before the first open.
    live.send("early");
    expect(live.queued).toBe(1);
    await until(() => echoes().includes("early"), "the early message");

    proxy.block();
    proxy.cut();
    await until(() => live.state === "reconnecting", "the drop");
    for (let i = 1; i <= 4; i++) live.send(`q${i}`);
    live.sendJson({ n: 5 });
    expect(live.queued).toBe(5);
    const full = expectError(() => live.send("q6"), "SB_CLIENT_QUEUE_FULL");
    expect(full.message).toContain("maxQueued");
    expect(live.queued).toBe(5);

    live.once("open", () => live.send("after open"));
    proxy.unblock();
    await until(() => echoes().length >= 7, "the queued messages");
    expect(echoes()).toEqual(["early", "q1", "q2", "q3", "q4", '{"n":5}', "after open"]);
    expect(live.queued).toBe(0);
  });

  it("keeps a copy of queued bytes and sends them as binary", async () => {
    const target = await server();
    const proxy = await startProxy(target.port);
    cleanups.push(() => proxy.close());
    proxy.block();
    const live = session(`ws://127.0.0.1:${proxy.port}/control`, {
      backoff: { initialMs: 5, maxMs: 20 },
    });
    const log = record(live);
    const bytes = new Uint8Array([1, 2, 3]);
    live.send(bytes);
    live.send(new Uint8Array([9, 8]).buffer);
    bytes[0] = 7;
    proxy.unblock();
    await until(() => log.messages.length === 2, "two binary echoes");
    expect(log.messages.map((m) => [m.isBinary, [...(m.data as Uint8Array)]])).toEqual([
      [true, [1, 2, 3]],
      [true, [9, 8]],
    ]);
  });
});

describe("when to reconnect", () => {
  function counted() {
    const dialled: string[] = [];
    const dial: SessionOptions["dial"] = (url, protocols, handlers) => {
      dialled.push(url);
      return nodeDial(url, protocols, handlers);
    };
    return { dialled, dial };
  }

  /** Opens a session, has the server close it with `command`, and returns what followed. */
  async function closedBy(url: string, command: string, code: number) {
    const timers = manualTimers();
    const { dialled, dial } = counted();
    const live = session(url, { timers, dial, random: () => 0 });
    const log = record(live);
    await nextEvent(live, "open");
    const closed = nextEvent(live, "close");
    live.send(command);
    const event = await closed;
    expect(event.code).toBe(code);
    expect(dialled).toHaveLength(1);
    return { live, log, timers, dialled, event };
  }

  async function expectFinal(url: string, command: string, code: number, reason: string) {
    const { live, log, timers, event } = await closedBy(url, command, code);
    expect(event).toEqual({ code, reason, willReconnect: false });
    expect(live.state).toBe("closed");
    expect(timers.pending).toEqual([]);
    expect(log.states).toEqual([
      { state: "open", lastClose: null },
      { state: "closed", lastClose: { code, reason } },
    ]);
    expectError(() => live.send("more"), "SB_CLIENT_CLOSED");
  }

  async function expectRetried(url: string, command: string, code: number, reason: string) {
    const { live, log, timers, dialled, event } = await closedBy(url, command, code);
    expect(event).toEqual({ code, reason, willReconnect: true });
    expect(live.state).toBe("reconnecting");
    expect(log.states.at(-1)).toEqual({
      state: "reconnecting",
      attempt: 1,
      delayMs: 250,
      lastClose: { code, reason },
    });
    expect(timers.pending).toEqual([250]);
    const reopened = nextEvent(live, "open");
    timers.fire();
    expect(live.state).toBe("connecting");
    expect(await reopened).toEqual({ protocol: "", resumed: false });
    expect(dialled).toEqual([url, url]);
  }

  it.each([1000, 1008, 4000, 4999])("not after a service closes with %i", async (code) => {
    const target = await server();
    await expectFinal(target.url("/control"), `close ${code} bye`, code, "bye");
  });

  it.each([1001, 1011, 1013])(
    "after a service closes with %i, once the backoff elapsed",
    async (code) => {
      const target = await server();
      await expectRetried(target.url("/control"), `close ${code} later`, code, "later");
    },
  );

  // Codes a service may not send, from a plain WebSocket server.
  it.each([1002, 1003, 1007, 1009, 1010])("not after a server closes with %i", async (code) => {
    const closer = await startCloser();
    cleanups.push(() => closer.close());
    await expectFinal(closer.url, `close ${code} no`, code, "no");
  });

  it.each([1012, 1014])("after a server closes with %i", async (code) => {
    const closer = await startCloser();
    cleanups.push(() => closer.close());
    await expectRetried(closer.url, `close ${code} again`, code, "again");
  });

  it("after a close frame without a status (1005)", async () => {
    const closer = await startCloser();
    cleanups.push(() => closer.close());
    await expectRetried(closer.url, "close", 1005, "");
  });

  it("follows shouldReconnect when given", async () => {
    const target = await server();
    const timers = manualTimers();
    const asked: Array<[number, string]> = [];
    const live = session(target.url("/control"), {
      timers,
      shouldReconnect: (code, reason) => {
        asked.push([code, reason]);
        return code === 4001;
      },
    });
    await nextEvent(live, "open");
    const first = nextEvent(live, "close");
    live.send("close 4001 come back");
    expect(await first).toMatchObject({ code: 4001, willReconnect: true });
    const reopened = nextEvent(live, "open");
    timers.fire();
    await reopened;
    const second = nextEvent(live, "close");
    live.send("close 1011 crashed");
    expect(await second).toMatchObject({ code: 1011, willReconnect: false });
    expect(asked).toEqual([
      [4001, "come back"],
      [1011, "crashed"],
    ]);
  });

  it("not after close(): closed at once, the server hears the code, no timer", async () => {
    const target = await server();
    const watcher = await client(target.url("/control"));
    cleanups.push(() => watcher.ws.terminate());
    const timers = manualTimers();
    const { dialled, dial } = counted();
    const live = session(target.url("/control"), { timers, dial });
    const log = record(live);
    await nextEvent(live, "open");
    live.close(4001, "done here");
    expect(live.state).toBe("closed");
    expect(log.closes).toEqual([{ code: 4001, reason: "done here", willReconnect: false }]);
    expect(JSON.parse(await watcher.next())).toMatchObject({
      type: "closed",
      code: 4001,
      reason: "done here",
    });
    expect(timers.pending).toEqual([]);
    expect(dialled).toHaveLength(1);
    live.close(); // a second close changes nothing
    expect(log.closes).toHaveLength(1);
    expectError(() => live.send("late"), "SB_CLIENT_CLOSED");
  });

  it("close() while waiting to reconnect clears the timer and drops the queue", async () => {
    const target = await server();
    const timers = manualTimers();
    const live = session(target.url("/control"), { timers });
    const log = record(live);
    await nextEvent(live, "open");
    const closed = nextEvent(live, "close");
    live.send("close 1013 later");
    await closed;
    live.send("waiting");
    expect([timers.pending.length, live.queued]).toEqual([1, 1]);
    live.close();
    expect([timers.pending.length, live.queued, live.state]).toEqual([0, 0, "closed"]);
    expect(log.closes.at(-1)).toEqual({ code: 1000, reason: "", willReconnect: false });
    expect(log.states.at(-1)).toEqual({ state: "closed", lastClose: { code: 1000, reason: "" } });
  });

  it("close() refuses what a browser would: SB_CLIENT_BAD_CLOSE", async () => {
    const target = await server();
    const live = session(target.url("/control"));
    await nextEvent(live, "open");
    expectError(() => live.close(1001), "SB_CLIENT_BAD_CLOSE");
    expectError(() => live.close(5000), "SB_CLIENT_BAD_CLOSE");
    expectError(() => live.close(1000, "é".repeat(62)), "SB_CLIENT_BAD_CLOSE");
    expect(live.state).toBe("open");
  });

  it("tries at once when the browser says it is online again", async () => {
    const target = await server();
    // A window stand-in that keeps count of the session's "online" listeners.
    const network = new EventTarget();
    const listening = new Set<unknown>();
    const scope = globalThis as {
      addEventListener?: (type: string, listener: () => void) => void;
      removeEventListener?: (type: string, listener: () => void) => void;
    };
    scope.addEventListener = (type, listener) => {
      if (type === "online") listening.add(listener);
      network.addEventListener(type, listener);
    };
    scope.removeEventListener = (type, listener) => {
      if (type === "online") listening.delete(listener);
      network.removeEventListener(type, listener);
    };
    cleanups.push(() => {
      delete scope.addEventListener;
      delete scope.removeEventListener;
    });
    const timers = manualTimers();
    const { dialled, dial } = counted();
    const live = session(target.url("/control"), {
      timers,
      dial,
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    await nextEvent(live, "open");
    // Online while open: nothing to do.
    network.dispatchEvent(new Event("online"));
    expect([live.state, dialled.length]).toEqual(["open", 1]);
    const closed = nextEvent(live, "close");
    live.send("close 1013 later");
    await closed;
    expect([timers.pending.length, listening.size]).toEqual([1, 1]);
    const reopened = nextEvent(live, "open");
    network.dispatchEvent(new Event("online"));
    expect([live.state, dialled.length, timers.pending.length]).toEqual(["connecting", 2, 0]);
    await reopened;
    // The listener went with the wait: another online event dials nothing.
    expect(listening.size).toBe(0);
    network.dispatchEvent(new Event("online"));
    expect([live.state, dialled.length]).toEqual(["open", 2]);
    // Nor does one stay behind a session closed while it waited.
    const again = nextEvent(live, "close");
    live.send("close 1013 later");
    await again;
    expect(listening.size).toBe(1);
    live.close();
    expect([listening.size, timers.pending.length]).toEqual([0, 0]);
  });

  it("drops the connection at once when the browser goes offline, and dials when it is back", async () => {
    const target = await server();
    const network = new EventTarget();
    const scope = globalThis as {
      addEventListener?: (type: string, listener: () => void) => void;
      removeEventListener?: (type: string, listener: () => void) => void;
    };
    scope.addEventListener = (type, listener) => network.addEventListener(type, listener);
    scope.removeEventListener = (type, listener) => network.removeEventListener(type, listener);
    cleanups.push(() => {
      delete scope.addEventListener;
      delete scope.removeEventListener;
    });
    const timers = manualTimers();
    const { dialled, dial } = counted();
    const live = session(target.url("/control"), {
      timers,
      dial,
      backoff: { initialMs: 60_000, maxMs: 60_000 },
    });
    await nextEvent(live, "open");
    const closed = nextEvent(live, "close");
    network.dispatchEvent(new Event("offline"));
    // No waiting for TCP to notice: the session is reconnecting now, its backoff armed.
    expect(live.state).toBe("reconnecting");
    expect(await closed).toEqual({
      code: 1006,
      reason: "the browser went offline",
      willReconnect: true,
    });
    expect(timers.pending.length).toBe(1);
    // Offline again while waiting: nothing more to drop.
    network.dispatchEvent(new Event("offline"));
    expect([live.state, dialled.length]).toEqual(["reconnecting", 1]);
    const reopened = nextEvent(live, "open");
    network.dispatchEvent(new Event("online"));
    await reopened;
    expect(dialled.length).toBe(2);
    live.close();
    // Closed: the session no longer listens.
    network.dispatchEvent(new Event("offline"));
    expect(live.state).toBe("closed");
  });
});

describe("messages, JSON and events", () => {
  it("sendJson and json(); text that is not JSON throws SB_CLIENT_BAD_JSON", async () => {
    const target = await server();
    const live = session(target.url("/control"), { protocols: ["chat.v1", "chat.v0"] });
    const log = record(live);
    expect(await nextEvent(live, "open")).toEqual({ protocol: "chat.v1", resumed: false });
    expect(live.protocol).toBe("chat.v1");

    live.sendJson({ hello: ["world", 1], nested: { ok: true } });
    live.send("bad-json");
    live.send(new TextEncoder().encode('{"bytes":true}'));
    await until(() => log.messages.length === 3, "three answers");
    const [json, bad, bytes] = log.messages;
    expect(json!.isBinary).toBe(false);
    expect(json!.json()).toEqual({ hello: ["world", 1], nested: { ok: true } });
    expect(bad!.data).toBe("{oops");
    const error = expectError(() => bad!.json(), "SB_CLIENT_BAD_JSON");
    expect(error.message).toContain('"{oops"');
    expect(error.cause).toBeInstanceOf(SyntaxError);
    expect(bytes!.isBinary).toBe(true);
    expect(bytes!.data).toBeInstanceOf(Uint8Array);
    expect(bytes!.json()).toEqual({ bytes: true });
    expect(log.topics).toEqual([]);

    expectError(() => live.sendJson(undefined), "SB_CLIENT_BAD_JSON");
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expectError(() => live.sendJson(cyclic), "SB_CLIENT_BAD_JSON");
    expectError(() => live.sendJson(10n), "SB_CLIENT_BAD_JSON");
  });

  it("envelopes become topic events with positions; duplicates dropped, gaps counted", async () => {
    const target = await server();
    const live = session(target.url("/feed"));
    const log = record(live);
    await subscribed(log, 0);
    const pub = await publisher(target);
    pub.ws.send('{"n":1}');
    pub.ws.send(new Uint8Array([0, 255, 7]));
    pub.ws.send("{not json");
    await until(() => log.topics.length === 3, "three topic messages");
    const [text, binary, bad] = log.topics;
    expect(text).toMatchObject({ topic: "feed", data: '{"n":1}', isBinary: false });
    expect(text!.json()).toEqual({ n: 1 });
    expect(binary!.isBinary).toBe(true);
    expect([...(binary!.data as Uint8Array)]).toEqual([0, 255, 7]);
    expect(binary!.offset).toBe(text!.offset + 1);
    const error = expectError(() => bad!.json(), "SB_CLIENT_BAD_JSON");
    expect(error.message).toContain('topic "feed"');
    const { epoch, offset } = bad!;
    expect(live.positions.get("feed")).toEqual({ epoch, offset });

    // The feed service echoes what it gets: an envelope of a position already delivered is a
    // duplicate; one that skips ahead is delivered and counted as a gap; anything short of an
    // envelope is an ordinary message.
    live.sendJson({ topic: "feed", epoch, offset, data: "again" });
    live.sendJson({ topic: "feed", epoch, offset: offset + 5, data: "ahead" });
    live.sendJson({ topic: "feed", offset: offset + 6, data: "no epoch" });
    await until(() => log.messages.length === 2, "the echo without an epoch");
    expect(log.topics.map((m) => m.data)).toEqual(['{"n":1}', binary!.data, "{not json", "ahead"]);
    expect(live.stats).toEqual({ opens: 1, duplicates: 1, gaps: 1 });
    expect(log.messages[1]!.json()).toMatchObject({ data: "no epoch" });
    expect(live.forget("feed")).toBe(true);
    expect(live.positions.size).toBe(0);
  });

  it("once, off and the function on() returns; a throwing listener is reported", async () => {
    const target = await server();
    const live = session(target.url("/control"));
    const seen: string[] = [];
    const stop = live.on("message", (m) => seen.push(`on:${m.data}`));
    live.once("message", (m) => seen.push(`once:${m.data}`));
    const offed = (m: { data: unknown }) => seen.push(`off:${m.data}`);
    live.on("message", offed);
    live.off("message", offed);
    live.on("message", (m) => {
      if (m.data === "two") throw new Error("listener broke");
    });
    const errors: SessionError[] = [];
    live.on("error", (e) => errors.push(e));
    await nextEvent(live, "open");
    live.send("one");
    await until(() => seen.length === 2, "the first message");
    stop();
    live.send("two");
    live.send("three");
    await until(() => errors.length === 1, "the listener's error");
    expect(seen).toEqual(["on:one", "once:one"]);
    expect(errors[0]!.code).toBe("SB_CLIENT_LISTENER_FAILED");
    expect((errors[0]!.cause as Error).message).toBe("listener broke");
    // The session went on after the listener threw.
    const third = nextEvent(live, "message", (m) => m.data === "four");
    live.send("four");
    await third;
    expect(live.state).toBe("open");
  });
});

describe("options", () => {
  it("refuses bad values with SB_CLIENT_BAD_OPTION or SB_CLIENT_BAD_URL, naming them", () => {
    const dial = nodeDial;
    const bad = (options: SessionOptions, name: string) => {
      const error = expectError(
        () => createSession("ws://127.0.0.1:1/x", options),
        "SB_CLIENT_BAD_OPTION",
      );
      expect(error.message).toContain(name);
    };
    bad({ dial, backoff: { initialMs: -1 } }, "backoff.initialMs");
    bad({ dial, backoff: { initialMs: 100, maxMs: 50 } }, "backoff.maxMs");
    bad({ dial, backoff: { factor: 0.5 } }, "backoff.factor");
    bad({ dial, backoff: { jitter: 2 } }, "backoff.jitter");
    bad({ dial, backoff: { maxMs: 2 ** 31 } }, "backoff.maxMs");
    bad({ dial, protocols: ["a b"] }, "protocols");
    bad({ dial, protocols: ["v1", "v1"] }, "protocols");
    bad({ dial, maxQueued: -1 }, "maxQueued");
    bad({ dial, maxAttempts: 1.5 }, "maxAttempts");
    bad({ dial, positions: { feed: { epoch: "", offset: 1 } } }, "positions");
    expectError(() => createSession("ftp://127.0.0.1/x"), "SB_CLIENT_BAD_URL");
    expectError(() => createSession("ws://127.0.0.1/x#frag"), "SB_CLIENT_BAD_URL");
    expectError(() => createSession("not a url"), "SB_CLIENT_BAD_URL");
  });

  it("sends given positions on the first connection, and http URLs become ws", async () => {
    const target = await server();
    const pub = await publisher(target);
    // Learn the epoch from a first session, then start a second from an earlier position.
    const first = session(target.url("/feed"));
    const firstLog = record(first);
    await subscribed(firstLog, 0);
    for (const text of ["x", "y", "z"]) pub.ws.send(text);
    await until(() => firstLog.topics.length === 3, "three messages");
    const { epoch, offset } = firstLog.topics[0]!;
    const url = `http://127.0.0.1:${target.port}/feed?resume=stale&keep=1`;
    const second = session(url, { positions: { feed: { epoch, offset } } });
    const log = record(second);
    expect(await nextEvent(second, "open")).toEqual({ protocol: "", resumed: true });
    const result = await subscribed(log, 0);
    expect(result.result).toMatchObject({ ok: true, recovered: 2 });
    expect(JSON.parse(result.resume!)).toEqual({ feed: { epoch, offset } });
    await until(() => log.topics.length === 2, "the replay");
    expect(log.topics.map((m) => m.data)).toEqual(["y", "z"]);
  });
});

describe("dials written by users", () => {
  it("a dial that reports during dial() is heard on a later turn", async () => {
    const sent: Array<string | Uint8Array> = [];
    const live = session("ws://127.0.0.1:1/x", {
      dial: (_url, _protocols, handlers) => {
        handlers.open("v1");
        handlers.message("hi", false);
        return { send: (data) => sent.push(data), close: () => {}, bufferedAmount: 0 };
      },
    });
    const log = record(live);
    live.send("queued");
    expect(live.state).toBe("connecting");
    expect(await nextEvent(live, "open")).toEqual({ protocol: "v1", resumed: false });
    await until(() => log.messages.length === 1, "the message");
    expect(log.messages[0]!.data).toBe("hi");
    expect(sent).toEqual(["queued"]);
  });

  it("a dial that throws is a failed attempt (1006), retried after the backoff", async () => {
    const timers = manualTimers();
    let calls = 0;
    const live = session("ws://127.0.0.1:1/x", {
      timers,
      dial: () => {
        calls++;
        throw new Error("no sockets here");
      },
    });
    const log = record(live);
    expect(await nextEvent(live, "close")).toEqual({
      code: 1006,
      reason: "no sockets here",
      willReconnect: true,
    });
    expect(log.errors.map((e) => [e.code, e.message])).toEqual([
      ["SB_CLIENT_DIAL_FAILED", "no sockets here"],
    ]);
    expect([calls, timers.pending.length]).toEqual([1, 1]);
    const again = nextEvent(live, "close");
    timers.fire();
    await again;
    expect(calls).toBe(2);
  });
});

describe("envelopes and the resume parameter", () => {
  it("parses only complete envelopes", () => {
    const base = { topic: "t", epoch: "e", offset: 3 };
    expect(parseEnvelope(JSON.stringify({ ...base, data: "x" }))).toEqual({
      ...base,
      data: "x",
      isBinary: false,
    });
    expect(parseEnvelope(JSON.stringify({ ...base, data64: "AP8H" }))).toEqual({
      ...base,
      data: new Uint8Array([0, 255, 7]),
      isBinary: true,
    });
    for (const value of [
      { ...base },
      { ...base, data: 1 },
      { ...base, offset: 1.5, data: "x" },
      { ...base, offset: -1, data: "x" },
      { ...base, epoch: 1, data: "x" },
      { ...base, data64: "not base64!" },
      [base],
    ]) {
      expect(parseEnvelope(JSON.stringify(value))).toBeNull();
    }
    expect(parseEnvelope('{"topic": broken')).toBeNull();
    expect(parseEnvelope("plain text")).toBeNull();
  });

  it("sets resume, replacing one in the URL, and names at most 64 topics, the newest", () => {
    const url = withResume(
      "ws://h/feed?resume=old&a=1",
      new Map([
        ["feed", { epoch: "e", offset: 4 }],
        ["__proto__", { epoch: "p", offset: 0 }],
      ]),
    );
    const query = new URL(url).searchParams;
    expect(query.getAll("resume")).toHaveLength(1);
    expect(query.get("a")).toBe("1");
    expect(JSON.parse(query.get("resume")!)).toEqual(
      JSON.parse('{"feed":{"epoch":"e","offset":4},"__proto__":{"epoch":"p","offset":0}}'),
    );
    expect(withResume("ws://h/x?resume=mine", new Map())).toBe("ws://h/x?resume=mine");
    const many = new Map(
      Array.from({ length: 70 }, (_, i) => [`t${i}`, { epoch: "e", offset: i }] as const),
    );
    const named = Object.keys(
      JSON.parse(new URL(withResume("ws://h/", many)).searchParams.get("resume")!),
    );
    expect(named).toHaveLength(64);
    expect(named[0]).toBe("t6");
    expect(named.at(-1)).toBe("t69");
  });
});
