// Autobahn group 1, Framing: text (1.1) and binary (1.2) messages of the lengths at the
// boundaries of the 7-bit, 16-bit and 64-bit length forms (RFC 6455 section 5.2).
import { OP_BINARY, OP_TEXT } from "../frame-codec.js";
import type { CaseDefinition } from "../judge.js";
import { cleanClose, message, OK } from "./helpers.js";

/** Payload length, chop size and kill timer of 1.x.1 to 1.x.8. */
const VARIANTS: Array<{ length: number; chopsize?: number; kill: number }> = [
  { length: 0, kill: 1 },
  { length: 125, kill: 1 },
  { length: 126, kill: 1 },
  { length: 127, kill: 1 },
  { length: 128, kill: 1 },
  { length: 65535, kill: 10 },
  { length: 65536, kill: 10 },
  { length: 65536, chopsize: 997, kill: 10 },
];

function framingCase(sub: 1 | 2, index: number): CaseDefinition {
  const v = VARIANTS[index];
  const binary = sub === 2;
  const kind = binary ? "binary" : "text";
  const chop = v.chopsize ? ` Sent out data in chops of ${v.chopsize} octets.` : "";
  return {
    id: `1.${sub}.${index + 1}`,
    description: `Send ${kind} message with payload of length ${v.length}.${chop}`,
    expectation: `Receive echo'ed ${kind} message (with payload as sent). Clean close with normal code.`,
    maxSeconds: v.kill,
    onOpen(c) {
      const payload = Buffer.alloc(v.length, binary ? 0xfe : 0x2a);
      c.expect(OK, [message(payload, binary)]);
      c.expectedClose = cleanClose();
      c.p.sendFrame({ opcode: binary ? OP_BINARY : OP_TEXT, payload, chopsize: v.chopsize });
      c.p.killAfter(v.kill);
    },
  };
}

export const GROUP_1: CaseDefinition[] = [
  ...VARIANTS.map((_, i) => framingCase(1, i)),
  ...VARIANTS.map((_, i) => framingCase(2, i)),
];
