// Autobahn group 3, Reserved Bits: without a negotiated extension every RSV bit must be 0 and
// a frame with one set fails the connection (RFC 6455 section 5.2).
import { OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT } from "../frame-codec.js";
import type { CaseDefinition } from "../judge.js";
import { message, NON_STRICT, OK, octets, PROTOCOL_ERROR, serverFails, utf8 } from "./helpers.js";

const HELLO = utf8("Hello, world!");

const FAIL_IMMEDIATELY =
  "The connection is failed immediately (1002/protocol error), since RSV must be 0, when no extension defining RSV meaning has been negotiated.";
const ECHO_THEN_FAIL =
  "Echo for first message is received, but then connection is failed immediately, since RSV must be 0, when no extension defining RSV meaning has been negotiated. The Pong is not received.";

/** A valid text message, then the same with `rsv` set, then a ping; sent as `how` says. */
function echoThenRsv(
  id: string,
  rsv: number,
  how: { sync?: boolean; chopsize?: number },
  description: string,
): CaseDefinition {
  return {
    id,
    description,
    expectation: ECHO_THEN_FAIL,
    onOpen(c) {
      c.expect(OK, [message(HELLO, false)]);
      c.expect(NON_STRICT, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode: OP_TEXT, payload: HELLO, ...how });
      c.p.sendFrame({ opcode: OP_TEXT, payload: HELLO, rsv, ...how });
      c.p.sendFrame({ opcode: OP_PING, ...how });
      c.p.killAfter(1);
    },
  };
}

function singleRsv(
  id: string,
  opcode: number,
  rsv: number,
  payload: Buffer,
  description: string,
): CaseDefinition {
  return {
    id,
    description,
    expectation:
      id === "3.1"
        ? FAIL_IMMEDIATELY
        : "The connection is failed immediately, since RSV must be 0.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode, payload, rsv });
      c.p.killAfter(1);
    },
  };
}

export const GROUP_3: CaseDefinition[] = [
  singleRsv("3.1", OP_TEXT, 1, HELLO, "Send small text message with RSV = 1."),
  echoThenRsv(
    "3.2",
    2,
    {},
    "Send small text message, then send again with RSV = 2, then send Ping.",
  ),
  echoThenRsv(
    "3.3",
    3,
    { sync: true },
    "Send small text message, then send again with RSV = 3, then send Ping. Octets are sent in frame-wise chops.",
  ),
  echoThenRsv(
    "3.4",
    4,
    { chopsize: 1 },
    "Send small text message, then send again with RSV = 4, then send Ping. Octets are sent in octet-wise chops.",
  ),
  singleRsv(
    "3.5",
    OP_BINARY,
    5,
    octets("\x00\xff\xfe\xfd\xfc\xfb\x00\xff"),
    "Send small binary message with RSV = 5.",
  ),
  // Autobahn's 3.6 says "Ping" but sends a binary frame; the wire behaviour is what counts.
  singleRsv("3.6", OP_BINARY, 6, HELLO, "Send Ping with RSV = 6."),
  singleRsv("3.7", OP_CLOSE, 7, Buffer.alloc(0), "Send Close with RSV = 7."),
];
