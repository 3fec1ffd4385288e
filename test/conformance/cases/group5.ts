// Autobahn group 5, Fragmentation: control frames are never fragmented, continuation frames
// only continue a started message, control frames may be interleaved with the fragments of a
// message (RFC 6455 sections 5.4 and 5.5).
import { OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT } from "../frame-codec.js";
import type { CaseDefinition } from "../judge.js";
import {
  cleanClose,
  message,
  NON_STRICT,
  OK,
  PROTOCOL_ERROR,
  pong,
  serverFails,
  utf8,
} from "./helpers.js";

const F = (n: number) => utf8(`fragment${n}`);

interface How {
  sync?: boolean;
  chopsize?: number;
}

function fragmentedControl(id: string, opcode: number, name: string): CaseDefinition {
  return {
    id,
    description: `Send ${name} fragmented into 2 fragments.`,
    expectation: "Connection is failed immediately, since control message MUST NOT be fragmented.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode, fin: false, payload: F(1) });
      c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: F(2) });
      c.p.killAfter(1);
    },
  };
}

function twoFragments(id: string, how: How, chops: string): CaseDefinition {
  return {
    id,
    description: `Send text Message fragmented into 2 fragments${chops}.`,
    expectation: "Message is processed and echo'ed back to us.",
    onOpen(c) {
      c.expect(OK, [message(Buffer.concat([F(1), F(2)]), false)]);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: F(1), ...how });
      c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: F(2), ...how });
      c.p.closeAfter(1);
    },
  };
}

function pingBetween(id: string, how: How, chops: string): CaseDefinition {
  return {
    id,
    description: `Send text Message fragmented into 2 fragments, one ping with payload in-between.${chops}`,
    expectation: "A pong is received, then the message is echo'ed back to us.",
    onOpen(c) {
      const ping = utf8("ping payload");
      c.expect(OK, [pong(ping), message(Buffer.concat([F(1), F(2)]), false)]);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: F(1), ...how });
      c.p.sendFrame({ opcode: OP_PING, fin: true, payload: ping, ...how });
      c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: F(2), ...how });
      c.p.closeAfter(1);
    },
  };
}

/** A continuation frame with nothing to continue, then a text message. */
function nothingToContinue(id: string, fin: boolean, how: How, chops: string): CaseDefinition {
  return {
    id,
    description: `Send unfragmented Text Message after Continuation Frame with FIN = ${fin}, where there is nothing to continue, sent in ${chops}.`,
    expectation: "The connection is failed immediately, since there is no message to continue.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({
        opcode: OP_CONTINUATION,
        fin,
        payload: utf8("non-continuation payload"),
        ...how,
      });
      c.p.sendFrame({ opcode: OP_TEXT, fin: true, payload: utf8("Hello, world!"), ...how });
      c.p.killAfter(1);
    },
  };
}

function repeatedNothingToContinue(id: string, fin: boolean): CaseDefinition {
  return {
    id,
    description: `Repeated 2x: Continuation Frame with FIN = ${fin} (where there is nothing to continue), then text Message fragmented into 2 fragments.`,
    expectation: "The connection is failed immediately, since there is no message to continue.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      for (let i = 0; i < 2; i++) {
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin, payload: F(1) });
        c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: F(2) });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: F(3) });
      }
      c.p.killAfter(1);
    },
  };
}

/** 5.19/5.20: pings between fragments, with a one-second pause in the middle of the message. */
function pausedMessage(id: string, sync: boolean): CaseDefinition {
  const fragments = [1, 2, 3, 4, 5].map(F);
  const pings = [utf8("pongme 1!"), utf8("pongme 2!")];
  return {
    id,
    description: sync
      ? "Same as Case 5.19, but send all frames with SYNC = True. Note, this does not change the octets sent in any way, only how the stream is chopped up on the wire."
      : "A fragmented text message is sent in multiple frames. After sending the first 2 frames of the text message, a Ping is sent. Then we wait 1s, then we send 2 more text fragments, another Ping and then the final text fragment. Everything is legal.",
    expectation:
      "The peer immediately answers the first Ping before it has received the last text message fragment. The peer pong's back the Ping's payload exactly, and echo's the payload of the fragmented message back to us.",
    maxSeconds: 2,
    onOpen(c) {
      c.expect(OK, [pong(pings[0]), pong(pings[1]), message(Buffer.concat(fragments), false)]);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: fragments[0], sync });
      c.p.sendFrame({ opcode: OP_CONTINUATION, fin: false, payload: fragments[1], sync });
      c.p.sendFrame({ opcode: OP_PING, fin: true, payload: pings[0], sync });
      c.p.continueLater(1, () => {
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: false, payload: fragments[2], sync });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: false, payload: fragments[3], sync });
        c.p.sendFrame({ opcode: OP_PING, fin: true, payload: pings[1], sync });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: fragments[4], sync });
        c.p.closeAfter(1);
      });
    },
  };
}

export const GROUP_5: CaseDefinition[] = [
  fragmentedControl("5.1", OP_PING, "Ping"),
  fragmentedControl("5.2", OP_PONG, "Pong"),
  twoFragments("5.3", {}, ""),
  twoFragments("5.4", { sync: true }, ", octets are sent in frame-wise chops"),
  twoFragments("5.5", { chopsize: 1 }, ", octets are sent in octet-wise chops"),
  pingBetween("5.6", {}, ""),
  pingBetween("5.7", { sync: true }, " Octets are sent in frame-wise chops."),
  pingBetween("5.8", { chopsize: 1 }, " Octets are sent in octet-wise chops."),
  nothingToContinue("5.9", true, {}, "one chop"),
  nothingToContinue("5.10", true, { sync: true }, "per-frame chops"),
  nothingToContinue("5.11", true, { chopsize: 1 }, "octet-wise chops"),
  nothingToContinue("5.12", false, {}, "one chop"),
  nothingToContinue("5.13", false, { sync: true }, "per-frame chops"),
  nothingToContinue("5.14", false, { chopsize: 1 }, "octet-wise chops"),
  {
    id: "5.15",
    description:
      "Send text Message fragmented into 2 fragments, then Continuation Frame with FIN = false where there is nothing to continue, then unfragmented Text Message, all sent in one chop.",
    expectation: "The connection is failed immediately, since there is no message to continue.",
    onOpen(c) {
      c.expect(OK, [message(Buffer.concat([F(1), F(2)]), false)]);
      c.expect(NON_STRICT, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: F(1) });
      c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: F(2) });
      c.p.sendFrame({ opcode: OP_CONTINUATION, fin: false, payload: F(3) });
      c.p.sendFrame({ opcode: OP_TEXT, fin: true, payload: F(4) });
      c.p.killAfter(1);
    },
  },
  repeatedNothingToContinue("5.16", false),
  repeatedNothingToContinue("5.17", true),
  {
    id: "5.18",
    description:
      "Send text Message fragmented into 2 fragments, with both frame opcodes set to text, sent in one chop.",
    expectation:
      "The connection is failed immediately, since all data frames after the initial data frame must have opcode 0.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: F(1) });
      c.p.sendFrame({ opcode: OP_TEXT, fin: true, payload: F(2) });
      c.p.killAfter(1);
    },
  },
  pausedMessage("5.19", false),
  pausedMessage("5.20", true),
];
