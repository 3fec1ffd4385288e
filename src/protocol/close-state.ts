/**
 * The closing handshake (RFC 6455 sections 5.5.1, 7.1 and 7.4) as explicit state. Every change
 * goes through `transition`, driven by this one table; an event a state does not list is a bug
 * in the caller and throws. The edges, one per line (a test checks they match the table):
 *
 *   open    --send-close-->       closing   we sent a close frame and wait for the peer's
 *   open    --receive-close-->    closed    the reply is sent in the same step
 *   open    --fail-->             closed    close frame with the error's code, then the TCP close
 *   open    --transport-closed--> closed    no close frame: code 1006
 *   closing --receive-close-->    closed    the handshake is complete
 *   closing --fail-->             closed    the peer broke the protocol while we waited
 *   closing --transport-closed--> closed    the peer dropped TCP without answering
 *   closed  --transport-closed--> closed    TCP closes after the handshake
 */

export type ConnectionState = "open" | "closing" | "closed";
export type CloseEvent = "send-close" | "receive-close" | "fail" | "transport-closed";

const TRANSITIONS: Readonly<Record<ConnectionState, Partial<Record<CloseEvent, ConnectionState>>>> =
  {
    open: {
      "send-close": "closing",
      "receive-close": "closed",
      fail: "closed",
      "transport-closed": "closed",
    },
    closing: {
      "receive-close": "closed",
      fail: "closed",
      "transport-closed": "closed",
    },
    closed: {
      "transport-closed": "closed",
    },
  };

export interface CloseFrameInfo {
  code: number;
  reason: string;
}

export class CloseState {
  state: ConnectionState = "open";
  /** The close frame we sent, if any. */
  sent: CloseFrameInfo | null = null;
  /** The close frame the peer sent, if any. */
  received: CloseFrameInfo | null = null;
  /** Who started the closing handshake. */
  initiator: "local" | "remote" | null = null;
  /** True when we failed the connection (section 7.1.7) rather than closing it normally. */
  failed = false;
  /** True once the transport (TCP) is gone. */
  transportClosed = false;

  transition(event: CloseEvent): ConnectionState {
    const next = TRANSITIONS[this.state][event];
    if (next === undefined) {
      throw new Error(`close handshake: event "${event}" is not valid in state "${this.state}"`);
    }
    this.state = next;
    if (event === "transport-closed") this.transportClosed = true;
    return next;
  }

  can(event: CloseEvent): boolean {
    return TRANSITIONS[this.state][event] !== undefined;
  }

  /** Both close frames were exchanged (section 7.1.4 "cleanly"). */
  get handshakeComplete(): boolean {
    return this.sent !== null && this.received !== null;
  }

  /**
   * The WebSocket Connection Close Code (section 7.1.5): the code of the first close frame
   * received, 1005 if it had none, 1006 if none was received at all.
   */
  get code(): number {
    return this.received ? this.received.code : 1006;
  }

  get reason(): string {
    return this.received ? this.received.reason : "";
  }
}

/** The transition table, for documentation and tests. */
export const CLOSE_TRANSITIONS = TRANSITIONS;
