import { describe, expect, it } from "vitest";
import {
  CLOSE_TRANSITIONS,
  type CloseEvent,
  CloseState,
  type ConnectionState,
} from "../../src/protocol/close-state.js";

const STATES: ConnectionState[] = ["open", "closing", "closed"];
const EVENTS: CloseEvent[] = ["send-close", "receive-close", "fail", "transport-closed"];

/** The expected table, written out independently of the source (RFC 6455 sections 7.1.1-7.1.7). */
const EXPECTED: Record<ConnectionState, Record<CloseEvent, ConnectionState | "throws">> = {
  open: {
    "send-close": "closing",
    "receive-close": "closed", // our reply goes out in the same step
    fail: "closed",
    "transport-closed": "closed",
  },
  closing: {
    "send-close": "throws", // one close frame per connection (section 5.5.1)
    "receive-close": "closed",
    fail: "closed",
    "transport-closed": "closed",
  },
  closed: {
    "send-close": "throws",
    "receive-close": "throws", // nothing is read after the handshake (section 1.4)
    fail: "throws",
    "transport-closed": "closed", // the I/O layer may report the socket's end late
  },
};

/** A CloseState driven into `state` through legal transitions only. */
function inState(state: ConnectionState): CloseState {
  const close = new CloseState();
  if (state === "closing") close.transition("send-close");
  if (state === "closed") close.transition("fail");
  expect(close.state).toBe(state);
  return close;
}

describe("CloseState transition table", () => {
  const cases = STATES.flatMap((state) =>
    EVENTS.map((event) => [state, event, EXPECTED[state][event]] as const),
  );

  it.each(cases)("%s --%s--> %s", (state, event, next) => {
    const close = inState(state);
    if (next === "throws") {
      expect(close.can(event)).toBe(false);
      expect(() => close.transition(event)).toThrow(/not valid in state/);
      // A refused event leaves the state as it was.
      expect(close.state).toBe(state);
    } else {
      expect(close.can(event)).toBe(true);
      expect(close.transition(event)).toBe(next);
      expect(close.state).toBe(next);
    }
  });

  it("exports exactly the legal transitions", () => {
    for (const state of STATES) {
      const legal = Object.fromEntries(
        EVENTS.filter((e) => EXPECTED[state][e] !== "throws").map((e) => [e, EXPECTED[state][e]]),
      );
      expect(CLOSE_TRANSITIONS[state]).toEqual(legal);
    }
  });

  it("starts open with nothing sent, received or failed", () => {
    const close = new CloseState();
    expect(close).toMatchObject({
      state: "open",
      sent: null,
      received: null,
      initiator: null,
      failed: false,
      transportClosed: false,
    });
  });

  it("records that the transport closed, only on transport-closed", () => {
    const close = new CloseState();
    close.transition("send-close");
    close.transition("receive-close");
    expect(close.transportClosed).toBe(false);
    close.transition("transport-closed");
    expect(close.transportClosed).toBe(true);
    expect(close.state).toBe("closed");
  });
});

describe("CloseState close code and handshake (section 7.1.5)", () => {
  it("reports 1006 and an empty reason when no close frame was received", () => {
    const close = new CloseState();
    close.sent = { code: 1000, reason: "bye" };
    close.transition("send-close");
    close.transition("transport-closed");
    expect(close.code).toBe(1006);
    expect(close.reason).toBe("");
    expect(close.handshakeComplete).toBe(false);
  });

  it("reports the received code and reason, and a complete handshake once both frames passed", () => {
    const close = new CloseState();
    close.received = { code: 4001, reason: "done" };
    expect(close.handshakeComplete).toBe(false);
    close.sent = { code: 4001, reason: "" };
    expect(close.handshakeComplete).toBe(true);
    expect(close.code).toBe(4001);
    expect(close.reason).toBe("done");
  });

  it("reports 1005 when the received close frame had no code", () => {
    const close = new CloseState();
    close.received = { code: 1005, reason: "" };
    expect(close.code).toBe(1005);
  });
});

describe("the diagram in close-state.ts", () => {
  it("lists exactly the edges of the transition table", async () => {
    const { readFile } = await import("node:fs/promises");
    const source = await readFile(
      new URL("../../src/protocol/close-state.ts", import.meta.url),
      "utf8",
    );
    const drawn = [...source.matchAll(/^ \*\s+(\w+)\s+--([a-z-]+)-->\s+(\w+)/gm)].map(
      ([, from, event, to]) => `${from} ${event} ${to}`,
    );
    const table = Object.entries(CLOSE_TRANSITIONS).flatMap(([from, edges]) =>
      Object.entries(edges).map(([event, to]) => `${from} ${event} ${to}`),
    );
    expect(drawn.sort()).toEqual(table.sort());
  });
});
