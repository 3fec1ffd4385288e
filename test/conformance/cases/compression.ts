// The machinery shared by groups 12 and 13 (Autobahn's case12_x_x.py): stream messages cut
// from a test file through a permessage-deflate connection, one at a time, and check every
// echo by type, length and SHA-1. A server that declines every offer is UNIMPLEMENTED, which
// fails: Switchboard claims permessage-deflate (RFC 7692).
import { createHash } from "node:crypto";
import { type DeflateOffer, offerString } from "../deflate.js";
import { type Case, type CaseDefinition, FAILED, UNIMPLEMENTED } from "../judge.js";
import { NORMAL, OK } from "./helpers.js";
import type { TestData } from "./testdata.js";

/** Autobahn's MSG_SIZES: (payload length, auto-fragment size), 1000 messages each. */
export const MSG_SIZES: Array<[length: number, autoFragment: number]> = [
  [16, 0],
  [64, 0],
  [256, 0],
  [1024, 0],
  [4096, 0],
  [8192, 0],
  [16384, 0],
  [32768, 0],
  [65536, 0],
  [131072, 0],
  [8192, 256],
  [16384, 256],
  [32768, 256],
  [65536, 256],
  [131072, 256],
  [131072, 1024],
  [131072, 4096],
  [131072, 32768],
];

/** Messages per case: Autobahn sends 1000; here at most this many... */
export const MAX_MESSAGES = 50;
/** ...and no more than this many octets per case, but never fewer than MIN_MESSAGES. */
const BYTE_BUDGET = 512 * 1024;
const MIN_MESSAGES = 4;
const WAIT_SECONDS = 15;

export function messageCount(length: number): number {
  return Math.min(MAX_MESSAGES, Math.max(MIN_MESSAGES, Math.floor(BYTE_BUDGET / length)));
}

/** The next `length` octets of the file, wrapping at its end (Autobahn's sendOne). */
function nextSlice(c: Case, data: Buffer, length: number): Buffer {
  const from = c.state.txPtr as number;
  const to = (from + length) % data.length;
  c.state.txPtr = to;
  return to > from
    ? data.subarray(from, to)
    : Buffer.concat([data.subarray(from), data.subarray(0, to)]);
}

async function sendOne(c: Case, td: TestData, length: number): Promise<void> {
  const msg = nextSlice(c, td.data, length);
  c.state.expectedHash = createHash("sha1").update(msg).digest("hex");
  c.state.count = (c.state.count as number) + 1;
  await c.p.sendMessage(msg, td.binary);
}

export function compressionCase(
  id: string,
  td: TestData,
  offers: DeflateOffer[],
  length: number,
  autoFragment: number,
): CaseDefinition {
  const count = messageCount(length);
  const offered = offers.map(offerString).join(", ");
  return {
    id,
    description: `Send ${count} compressed messages (Autobahn: 1000) each of payload size ${length}, auto-fragment to ${autoFragment} octets, cut from: ${td.description}. Offer: ${offered}`,
    expectation: `Receive echo'ed messages (with payload as sent). Timeout case after ${WAIT_SECONDS} secs.`,
    offers,
    maxSeconds: WAIT_SECONDS,
    async onOpen(c) {
      c.expectedClose = { closedByMe: true, closeCode: [NORMAL], requireClean: true };
      c.p.enableWirelog(false);
      c.p.autoFragmentSize = autoFragment;
      if (c.p.deflate === null) {
        c.behavior = UNIMPLEMENTED;
        c.result = `The server accepted none of the permessage-deflate offers (${offered}).`;
        c.p.sendClose(NORMAL);
        return;
      }
      c.behavior = FAILED;
      c.result = `Case did not finish within ${WAIT_SECONDS} seconds.`;
      c.p.closeAfter(WAIT_SECONDS);
      c.state.txPtr = 0;
      c.state.count = 0;
      await sendOne(c, td, length);
    },
    async onMessage(c, payload, binary) {
      const hash = createHash("sha1").update(payload).digest("hex");
      if (binary !== td.binary || payload.length !== length || hash !== c.state.expectedHash) {
        c.behavior = FAILED;
        c.p.enableWirelog(true);
        c.p.sendClose(NORMAL);
        if (binary !== td.binary) {
          c.result = `Echo'ed message type differs from what I sent (got binary ${binary}, expected binary ${td.binary}).`;
        } else if (payload.length !== length) {
          c.result = `Echo'ed message length differs from what I sent (got length ${payload.length}, expected length ${length}).`;
        } else {
          c.result = `Echo'ed message contents differs from what I sent (got SHA1 ${hash}, expected SHA1 ${c.state.expectedHash}).`;
        }
      } else if ((c.state.count as number) < count) {
        await sendOne(c, td, length);
      } else {
        c.behavior = OK;
        c.result = "Ok, received all echo'ed messages in time.";
        c.p.enableWirelog(true);
        c.p.sendClose(NORMAL);
      }
    },
  };
}
