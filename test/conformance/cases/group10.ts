// Autobahn group 10, Misc: a 64 KiB text message auto-fragmented into 1300-octet frames must
// come back whole (RFC 6455 section 5.4: fragmentation is transparent to the application).
import type { CaseDefinition } from "../judge.js";
import { FAILED } from "../judge.js";
import { cleanClose, message, OK } from "./helpers.js";

const FRAGMENT = 1300;

export const GROUP_10: CaseDefinition[] = [
  {
    id: "10.1.1",
    description: `Send text message with payload of length 65536 auto-fragmented with autoFragmentSize = ${FRAGMENT}.`,
    expectation:
      "Receive echo'ed text message (with payload as sent and transmitted frame counts as expected). Clean close with normal code.",
    maxSeconds: 10,
    onOpen(c) {
      const payload = Buffer.alloc(65536, 0x2a);
      c.p.autoFragmentSize = FRAGMENT;
      c.expect(OK, [message(payload, false)]);
      c.expectedClose = cleanClose();
      void c.p.sendMessage(payload);
      c.p.killAfter(10);
    },
    onConnectionLost(c) {
      if (!c.p.connectionWasOpen) {
        c.behavior = FAILED;
        c.result = "WebSocket connection was never open";
        return;
      }
      // Autobahn also checks its own frame counts: one text frame plus the continuations.
      const continuations = Math.floor(65536 / FRAGMENT);
      const got0 = c.p.txFrameStats.get(0) ?? 0;
      const got1 = c.p.txFrameStats.get(1) ?? 0;
      if (got0 !== continuations || got1 !== 1) {
        c.behavior = FAILED;
        c.result = `Frames transmitted {0: ${got0}, 1: ${got1}} do not match what we expected {0: ${continuations}, 1: 1}.`;
      }
    },
  },
];
