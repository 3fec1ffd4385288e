// Autobahn group 2, Pings/Pongs: a ping is answered by a pong with the same application data,
// unsolicited pongs are ignored, and control frames over 125 octets fail the connection
// (RFC 6455 sections 5.5, 5.5.2, 5.5.3).
import { OP_PING, OP_PONG } from "../frame-codec.js";
import type { CaseDefinition } from "../judge.js";
import {
  cleanClose,
  NORMAL,
  OK,
  octets,
  PROTOCOL_ERROR,
  pong,
  serverFails,
  utf8,
} from "./helpers.js";

function pingCase(
  id: string,
  description: string,
  payload: Buffer,
  chopsize?: number,
): CaseDefinition {
  return {
    id,
    description,
    expectation:
      "Pong with payload echo'ed is sent in reply to Ping. Clean close with normal code.",
    maxSeconds: chopsize ? 2 : 1,
    onOpen(c) {
      c.expect(OK, [pong(payload)]);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_PING, payload, chopsize });
      c.p.closeAfter(chopsize ? 2 : 1);
    },
  };
}

function tenPings(id: string, chopsize?: number): CaseDefinition {
  return {
    id,
    description: `Send 10 Pings with payload.${chopsize ? " Send out octets in octet-wise chops." : ""}`,
    expectation:
      "Pongs for our Pings with all the payloads. Note: This is not required by the Spec .. but we check for this behaviour anyway. Clean close with normal code.",
    maxSeconds: 3,
    onOpen(c) {
      const pongs = [];
      for (let i = 0; i < 10; i++) {
        const payload = utf8(`payload-${i}`);
        pongs.push(pong(payload));
        c.p.sendFrame({ opcode: OP_PING, payload, chopsize });
      }
      c.expect(OK, pongs);
      c.expectedClose = cleanClose();
      c.p.closeAfter(3);
    },
  };
}

export const GROUP_2: CaseDefinition[] = [
  pingCase("2.1", "Send ping without payload.", Buffer.alloc(0)),
  pingCase("2.2", "Send ping with small text payload.", utf8("Hello, world!")),
  pingCase(
    "2.3",
    "Send ping with small binary (non UTF-8) payload.",
    octets("\x00\xff\xfe\xfd\xfc\xfb\x00\xff"),
  ),
  pingCase("2.4", "Send ping with binary payload of 125 octets.", Buffer.alloc(125, 0xfe)),
  {
    id: "2.5",
    description: "Send ping with binary payload of 126 octets.",
    expectation:
      "Connection is failed immediately (1002/Protocol Error), since control frames are only allowed to have payload up to and including 125 octets..",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = serverFails(PROTOCOL_ERROR);
      c.p.sendFrame({ opcode: OP_PING, payload: Buffer.alloc(126, 0xfe) });
      c.p.killAfter(1);
    },
  },
  pingCase(
    "2.6",
    "Send ping with binary payload of 125 octets, send in octet-wise chops.",
    Buffer.alloc(125, 0xfe),
    1,
  ),
  {
    id: "2.7",
    description:
      "Send unsolicited pong without payload. Verify nothing is received. Clean close with normal code.",
    expectation: "Nothing.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_PONG });
      c.p.sendClose(NORMAL);
      c.p.closeAfter(1);
    },
  },
  {
    id: "2.8",
    description:
      "Send unsolicited pong with payload. Verify nothing is received. Clean close with normal code.",
    expectation: "Nothing.",
    onOpen(c) {
      c.expect(OK, []);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_PONG, payload: utf8("unsolicited pong payload") });
      c.p.sendClose(NORMAL);
      c.p.closeAfter(1);
    },
  },
  {
    id: "2.9",
    description:
      "Send unsolicited pong with payload. Send ping with payload. Verify pong for ping is received.",
    expectation:
      "Nothing in reply to own Pong, but Pong with payload echo'ed in reply to Ping. Clean close with normal code.",
    onOpen(c) {
      const payload = utf8("ping payload");
      c.expect(OK, [pong(payload)]);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: OP_PONG, payload: utf8("unsolicited pong payload") });
      c.p.sendFrame({ opcode: OP_PING, payload });
      c.p.closeAfter(1);
    },
  },
  tenPings("2.10"),
  tenPings("2.11", 1),
];
