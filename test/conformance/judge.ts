// Autobahn's verdict rules (autobahntestsuite/case/case.py): a case records the events it
// receives, compares them with the expected event lists, and when the connection is gone
// judges the close: who closed first, whether the close was clean, which close code came back,
// and who dropped TCP. A case passes only when both verdicts are OK (or the case is
// informational); NON-STRICT, WRONG CODE, UNCLEAN, FAILED BY CLIENT and UNIMPLEMENTED fail.
import type { DeflateOffer } from "./deflate.js";
import type { FuzzingClient, FuzzingHooks } from "./fuzzing-client.js";
import { isValidUtf8 } from "./utf8.js";

export const OK = "OK";
export const NON_STRICT = "NON-STRICT";
export const FAILED = "FAILED";
export const WRONG_CODE = "WRONG CODE";
export const UNCLEAN = "UNCLEAN";
export const FAILED_BY_CLIENT = "FAILED BY CLIENT";
export const INFORMATIONAL = "INFORMATIONAL";
export const UNIMPLEMENTED = "UNIMPLEMENTED";

export type Behavior =
  | typeof OK
  | typeof NON_STRICT
  | typeof FAILED
  | typeof WRONG_CODE
  | typeof UNCLEAN
  | typeof FAILED_BY_CLIENT
  | typeof INFORMATIONAL
  | typeof UNIMPLEMENTED;

/** One event as Autobahn records it: a whole message, a pong, or a timer the case hit. */
export type Observed =
  | { kind: "message"; payload: Buffer; binary: boolean }
  | { kind: "pong"; payload: Buffer }
  | { kind: "timeout"; tag: string };

export interface ExpectedClose {
  /** Whether the fuzzer (true) or the server (false) should send the first close frame. */
  closedByMe: boolean;
  /** Close codes the server may send; the first is what the fuzzer sends when it closes. */
  closeCode: number[];
  /** Whether the closing handshake must complete and the server must drop TCP in time. */
  requireClean: boolean;
  /** UTF-8 cases: the wrong side closing means the server never noticed the bad payload. */
  closedByWrongEndpointIsFatal?: boolean;
}

export interface CaseDefinition {
  /** Autobahn's case id, e.g. "6.4.3". */
  id: string;
  description: string;
  expectation: string;
  /** permessage-deflate offers sent in the handshake (groups 12 and 13). */
  offers?: DeflateOffer[];
  /** Informational cases record behaviour left open by the spec and never fail. */
  informational?: boolean;
  /** Longest timer the case itself sets, in seconds; the harness deadline is derived from it. */
  maxSeconds?: number;
  /** Runs when the opening handshake completes: set expectations, send frames, arm timers. */
  onOpen(c: Case): void | Promise<void>;
  /** Replaces the default recording of messages (bulk cases judge messages themselves). */
  onMessage?(c: Case, payload: Buffer, binary: boolean): void | Promise<void>;
  /** Adjusts the verdict after the standard rules ran (Autobahn's overridden onConnectionLost). */
  onConnectionLost?(c: Case): void;
}

/** One running case: Autobahn's Case object, bound to a fuzzing client. */
export class Case implements FuzzingHooks {
  readonly received: Observed[] = [];
  readonly expected = new Map<Behavior, Observed[]>();
  expectedClose: ExpectedClose = { closedByMe: true, closeCode: [1000], requireClean: true };
  behavior: Behavior = FAILED;
  behaviorClose: Behavior = FAILED;
  result = "Actual events differ from any expected.";
  resultClose = "TCP connection was dropped without close handshake";
  /** Stops finishWhenDone from closing (cases that send a deliberately odd close themselves). */
  suppressClose = false;
  /** Scratch state for bulk cases (message counters, expected digests). */
  readonly state: Record<string, unknown> = {};
  /** Errors thrown by case code; any of them fails the case. */
  readonly harnessErrors: string[] = [];

  constructor(
    readonly def: CaseDefinition,
    readonly p: FuzzingClient,
  ) {}

  // --------------------------------------------------------------- hooks from the client

  onOpen(): void {
    this.guard(() => this.def.onOpen(this));
  }

  onMessage(payload: Buffer, binary: boolean): void {
    const custom = this.def.onMessage;
    if (custom) {
      this.guard(() => custom(this, payload, binary));
      return;
    }
    this.received.push({ kind: "message", payload, binary });
    this.finishWhenDone();
  }

  onPong(payload: Buffer): void {
    this.received.push({ kind: "pong", payload });
    this.finishWhenDone();
  }

  onClose(): void {}

  /** Autobahn's Case.onConnectionLost, then the case's own adjustments. */
  onConnectionLost(): void {
    for (const [behavior, events] of this.expected) {
      if (sameEvents(this.received, events)) {
        this.behavior = behavior;
        this.result = "Actual events match at least one expected.";
        break;
      }
    }
    const p = this.p;
    if (p.connectionWasOpen) {
      const ec = this.expectedClose;
      if (ec.closedByMe !== p.closedByMe) {
        this.behaviorClose = FAILED;
        this.resultClose = "The connection was failed by the wrong endpoint";
      } else if (ec.requireClean && !p.wasClean) {
        this.behaviorClose = UNCLEAN;
        this.resultClose = "The spec requires the connection to be failed cleanly here";
      } else if (p.remoteCloseCode !== null && !ec.closeCode.includes(p.remoteCloseCode)) {
        this.behaviorClose = WRONG_CODE;
        this.resultClose = `The close code should have been ${ec.closeCode.join(",")} or empty`;
      } else if (p.droppedByMe) {
        // The fuzzer is the client: the server should close TCP (RFC 6455 section 7.1.1).
        this.behaviorClose = FAILED_BY_CLIENT;
        this.resultClose = "It is preferred that the server close the TCP connection";
      } else {
        this.behaviorClose = OK;
        this.resultClose = "Connection was properly closed";
      }
      if (ec.closedByWrongEndpointIsFatal && ec.closedByMe !== p.closedByMe) {
        this.behavior = FAILED;
      }
    } else {
      this.behaviorClose = FAILED;
      this.resultClose = "The WebSocket opening handshake was never completed!";
    }
    this.guard(() => this.def.onConnectionLost?.(this));
  }

  // --------------------------------------------------------------- case helpers

  expect(behavior: Behavior, events: Observed[]): void {
    this.expected.set(behavior, events);
  }

  /**
   * When every expectation matches what was received, the fuzzer starts the closing handshake
   * itself if it is expected to (Autobahn's finishWhenDone).
   */
  finishWhenDone(): void {
    for (const events of this.expected.values()) {
      if (!sameEvents(this.received, events)) return;
    }
    if (this.expectedClose.closedByMe && !this.suppressClose) {
      this.p.sendClose(this.expectedClose.closeCode[0]);
    }
  }

  private guard(fn: () => void | Promise<void>): void {
    const fail = (err: unknown) => {
      this.harnessErrors.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
      this.p.dropConnection(true);
    };
    try {
      const r = fn();
      if (r instanceof Promise) r.catch(fail);
    } catch (err) {
      fail(err);
    }
  }
}

export function sameEvents(a: Observed[], b: Observed[]): boolean {
  if (a.length !== b.length) return false;
  return a.every((x, i) => sameEvent(x, b[i]));
}

function sameEvent(a: Observed, b: Observed): boolean {
  if (a.kind === "message" && b.kind === "message") {
    return a.binary === b.binary && a.payload.equals(b.payload);
  }
  if (a.kind === "pong" && b.kind === "pong") return a.payload.equals(b.payload);
  if (a.kind === "timeout" && b.kind === "timeout") return a.tag === b.tag;
  return false;
}

export interface Verdict {
  id: string;
  pass: boolean;
  behavior: Behavior;
  behaviorClose: Behavior;
  result: string;
  resultClose: string;
}

/** OK on both counts, or an informational case: anything else fails. */
export function judge(c: Case): Verdict {
  const informational = c.def.informational === true && c.behavior === INFORMATIONAL;
  const pass =
    c.harnessErrors.length === 0 &&
    (informational || (c.behavior === OK && c.behaviorClose === OK));
  return {
    id: c.def.id,
    pass,
    behavior: c.behavior,
    behaviorClose: c.behaviorClose,
    result: c.result,
    resultClose: c.resultClose,
  };
}

// ------------------------------------------------------------------- reporting

const PREVIEW = 40;

function preview(payload: Buffer, binary: boolean): string {
  const head = payload.subarray(0, PREVIEW);
  const more = payload.length > PREVIEW ? " ..." : "";
  if (!binary && isValidUtf8(head)) return `${JSON.stringify(head.toString("utf8"))}${more}`;
  return `0x${head.toString("hex")}${more}`;
}

export function describeEvent(e: Observed): string {
  switch (e.kind) {
    case "message":
      return `message(${e.binary ? "binary" : "text"}, ${e.payload.length} B, ${preview(e.payload, e.binary)})`;
    case "pong":
      return `pong(${e.payload.length} B, ${preview(e.payload, true)})`;
    case "timeout":
      return `timeout(${e.tag})`;
  }
}

function describeEvents(events: Observed[]): string {
  return events.length === 0 ? "[]" : `[${events.map(describeEvent).join(", ")}]`;
}

/** A human-readable account of a case run: what was expected, what came back, the wire log. */
export function formatReport(
  c: Case,
  verdict: Verdict,
  durationMs: number,
  wirelogTail = 60,
): string {
  const p = c.p;
  const lines = [
    `Case ${c.def.id}: ${verdict.pass ? "PASS" : "FAIL"} in ${durationMs} ms`,
    `  description: ${c.def.description}`,
    `  expectation: ${c.def.expectation}`,
    `  behavior: ${verdict.behavior} (${verdict.result})`,
    `  close behavior: ${verdict.behaviorClose} (${verdict.resultClose})`,
  ];
  for (const [behavior, events] of c.expected) {
    lines.push(`  expected for ${behavior}: ${describeEvents(events)}`);
  }
  lines.push(`  received: ${describeEvents(c.received)}`);
  const ec = c.expectedClose;
  lines.push(
    `  expected close: closedByMe=${ec.closedByMe} closeCode=[${ec.closeCode.join(",")}] requireClean=${ec.requireClean}`,
    `  actual close: closedByMe=${p.closedByMe} failedByMe=${p.failedByMe} droppedByMe=${p.droppedByMe} wasClean=${p.wasClean}` +
      `${p.wasNotCleanReason ? ` (${p.wasNotCleanReason})` : ""}`,
    `  close codes: local=${p.localCloseCode ?? "-"} remote=${p.remoteCloseCode ?? "-"}` +
      `${p.remoteCloseReason?.length ? ` remote reason=${JSON.stringify(p.remoteCloseReason.toString("utf8"))}` : ""}`,
    `  timeouts: serverDrop=${p.wasServerConnectionDropTimeout} closeHandshake=${p.wasCloseHandshakeTimeout} openHandshake=${p.wasOpenHandshakeTimeout}`,
  );
  if (p.deflate) lines.push(`  permessage-deflate response: ${p.deflate.raw}`);
  for (const err of c.harnessErrors) lines.push(`  harness error: ${err}`);
  const log = p.wirelog;
  const tail = log.slice(-wirelogTail);
  lines.push(`  wire log (${tail.length} of ${log.length} entries, t in ms):`);
  for (const e of tail)
    lines.push(`    ${e.t.toFixed(3).padStart(10)} ${e.kind.padEnd(5)} ${e.text}`);
  return lines.join("\n");
}
