// Autobahn group 4, Opcodes: reserved non-control (3-7) and control (11-15) opcodes fail the
// connection (RFC 6455 section 5.2).
import { OP_PING, OP_TEXT } from "../frame-codec.js";
import type { CaseDefinition } from "../judge.js";
import { message, NON_STRICT, OK, PROTOCOL_ERROR, serverFails, utf8 } from "./helpers.js";

const HELLO = utf8("Hello, world!");

function reservedAlone(
  id: string,
  opcode: number,
  payload: Buffer | undefined,
  kind: string,
): CaseDefinition {
  return {
    id,
    description: `Send frame with reserved ${kind} Opcode = ${opcode}${payload ? " and non-empty payload" : ""}.`,
    expectation: "The connection is failed immediately.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode, payload });
      c.p.killAfter(1);
    },
  };
}

function reservedAfterEcho(
  id: string,
  opcode: number,
  payload: Buffer | undefined,
  kind: string,
  chopsize?: number,
): CaseDefinition {
  return {
    id,
    description:
      `Send small text message, then send frame with reserved ${kind} Opcode = ${opcode}` +
      `${payload ? " and non-empty payload" : ""}, then send Ping.`,
    expectation:
      "Echo for first message is received, but then connection is failed immediately, since reserved opcode frame is used. A Pong is not received.",
    onOpen(c) {
      c.expect(OK, [message(HELLO, false)]);
      c.expect(NON_STRICT, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode: OP_TEXT, payload: HELLO, chopsize });
      c.p.sendFrame({ opcode, payload, chopsize });
      c.p.sendFrame({ opcode: OP_PING, chopsize });
      c.p.killAfter(1);
    },
  };
}

const RESERVED_PAYLOAD = utf8("reserved opcode payload");

export const GROUP_4: CaseDefinition[] = [
  reservedAlone("4.1.1", 3, undefined, "non-control"),
  reservedAlone("4.1.2", 4, RESERVED_PAYLOAD, "non-control"),
  reservedAfterEcho("4.1.3", 5, undefined, "non-control"),
  reservedAfterEcho("4.1.4", 6, HELLO, "non-control"),
  reservedAfterEcho("4.1.5", 7, HELLO, "non-control", 1),
  reservedAlone("4.2.1", 11, undefined, "control"),
  reservedAlone("4.2.2", 12, RESERVED_PAYLOAD, "control"),
  reservedAfterEcho("4.2.3", 13, undefined, "control"),
  reservedAfterEcho("4.2.4", 14, HELLO, "control"),
  reservedAfterEcho("4.2.5", 15, HELLO, "control", 1),
];
