// Autobahn group 9, Limits/Performance: large messages, heavily fragmented messages, messages
// written in small chops, and many round trips. Autobahn sends up to 16 MiB per message and
// 1000 round trips per case; here every size is capped at 1 MiB and the round trips at
// ROUND_TRIPS, so the group runs in seconds. Autobahn checks length and type of each echo.
import { OP_BINARY, OP_TEXT } from "../frame-codec.js";
import { type Case, type CaseDefinition, FAILED } from "../judge.js";
import { NORMAL, OK, utf8 } from "./helpers.js";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Largest message this suite sends in group 9 (Autobahn goes to 16 MiB). */
export const GROUP9_MAX_MESSAGE = MiB;

/** Round trips per 9.7/9.8 case (Autobahn: 1000). */
export const ROUND_TRIPS = 250;

/** Seconds a bulk case may take before the fuzzer gives up (Autobahn: 10 to 1000). */
const WAIT_SECONDS = 15;

const cap = (n: number) => Math.min(n, GROUP9_MAX_MESSAGE);

/** Shared expectations of the bulk cases: one echo of the right type and length, then close. */
function bulkEcho(
  id: string,
  description: string,
  binary: boolean,
  length: number,
  send: (c: Case) => void,
): CaseDefinition {
  const kind = binary ? "binary" : "text";
  return {
    id,
    description,
    expectation: `Receive echo'ed ${kind} message (with payload as sent).`,
    maxSeconds: WAIT_SECONDS,
    onOpen(c) {
      c.p.enableWirelog(false);
      c.behavior = FAILED;
      c.expectedClose = { closedByMe: true, closeCode: [NORMAL], requireClean: true };
      c.result = `Did not receive message within ${WAIT_SECONDS} seconds.`;
      send(c);
      c.p.closeAfter(WAIT_SECONDS);
    },
    onMessage(c, payload, isBinary) {
      if (isBinary !== binary) {
        c.result = `Expected ${kind} message with payload, but got ${isBinary ? "binary" : "text"}.`;
      } else if (payload.length !== length) {
        c.result = `Expected ${kind} message with payload of length ${length}, but got ${payload.length}.`;
      } else {
        c.behavior = OK;
        c.result = `Received ${kind} message of length ${payload.length}.`;
      }
      c.p.enableWirelog(true);
      c.p.sendClose(NORMAL);
    },
  };
}

const TEXT_UNIT = utf8("BAsd7&jh23");
const BINARY_UNIT = Buffer.from([0x00, 0xfe, 0x23, 0xfa, 0xf0]);

function sizeLabel(n: number): string {
  return n >= MiB ? `${n / MiB}M` : `${n / KiB}k`;
}

function largeMessages(binary: boolean): CaseDefinition[] {
  const sub = binary ? 2 : 1;
  return [64 * KiB, 256 * KiB, MiB, 4 * MiB, 8 * MiB, 16 * MiB].map((original, i) => {
    const length = cap(original);
    return bulkEcho(
      `9.${sub}.${i + 1}`,
      `Send ${binary ? "binary" : "text"} message with payload of length ${sizeLabel(length)} (Autobahn: ${sizeLabel(original)}).`,
      binary,
      length,
      (c) =>
        c.p.sendFrame({
          opcode: binary ? OP_BINARY : OP_TEXT,
          payload: binary ? BINARY_UNIT : TEXT_UNIT,
          payloadLen: length,
        }),
    );
  });
}

function fragmentedMessages(binary: boolean): CaseDefinition[] {
  const sub = binary ? 4 : 3;
  const length = cap(4 * MiB);
  const payload = Buffer.alloc(length, binary ? 0xfe : 0x2a);
  return [64, 256, KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB].map((original, i) => {
    const fragment = cap(original);
    return bulkEcho(
      `9.${sub}.${i + 1}`,
      `Send fragmented ${binary ? "binary" : "text"} message with message payload of length ${sizeLabel(length)} (Autobahn: 4M). Sent out in fragments of ${fragment}.`,
      binary,
      length,
      (c) => void c.p.sendMessage(payload, binary, fragment),
    );
  });
}

function choppedMessages(binary: boolean): CaseDefinition[] {
  const sub = binary ? 6 : 5;
  return [64, 128, 256, 512, 1024, 2048].map((chopsize, i) =>
    bulkEcho(
      `9.${sub}.${i + 1}`,
      `Send ${binary ? "binary" : "text"} message with payload of length 1M. Sent out data in chops of ${chopsize} octets.`,
      binary,
      MiB,
      (c) =>
        c.p.sendFrame({
          opcode: binary ? OP_BINARY : OP_TEXT,
          payload: binary ? BINARY_UNIT : TEXT_UNIT,
          payloadLen: MiB,
          chopsize,
        }),
    ),
  );
}

/** 9.7/9.8: round trips of fixed-size messages, one at a time. */
function roundTrips(binary: boolean): CaseDefinition[] {
  const sub = binary ? 8 : 7;
  const kind = binary ? "binary" : "text";
  return [0, 16, 64, 256, 1024, 4096].map((length, i) => {
    const sendOne = (c: Case) => {
      c.p.sendFrame({
        opcode: binary ? OP_BINARY : OP_TEXT,
        payload: binary ? Buffer.from([0xfe]) : utf8("*"),
        payloadLen: length,
      });
      c.state.count = (c.state.count as number) + 1;
    };
    return {
      id: `9.${sub}.${i + 1}`,
      description: `Send ${ROUND_TRIPS} ${kind} messages of payload size ${length} to measure implementation/network RTT (round trip time) / latency (Autobahn: 1000).`,
      expectation: `Receive echo'ed ${kind} messages (with payload as sent). Timeout case after ${WAIT_SECONDS} secs.`,
      maxSeconds: WAIT_SECONDS,
      onOpen(c) {
        c.p.enableWirelog(false);
        c.behavior = FAILED;
        c.expectedClose = { closedByMe: true, closeCode: [NORMAL], requireClean: true };
        c.result = `Case did not finish within ${WAIT_SECONDS} seconds.`;
        c.p.closeAfter(WAIT_SECONDS);
        c.state.count = 0;
        sendOne(c);
      },
      onMessage(c, payload, isBinary) {
        if (isBinary !== binary || payload.length !== length) {
          c.behavior = FAILED;
          c.result = `Echo'ed message type or length differs from what I sent (got binary = ${isBinary}, payload length = ${payload.length}).`;
          c.p.enableWirelog(true);
          c.p.sendClose(NORMAL);
        } else if ((c.state.count as number) < ROUND_TRIPS) {
          sendOne(c);
        } else {
          c.behavior = OK;
          c.result = "Ok, received all echo'ed messages in time.";
          c.p.enableWirelog(true);
          c.p.sendClose(NORMAL);
        }
      },
    } satisfies CaseDefinition;
  });
}

export const GROUP_9: CaseDefinition[] = [
  ...largeMessages(false),
  ...largeMessages(true),
  ...fragmentedMessages(false),
  ...fragmentedMessages(true),
  ...choppedMessages(false),
  ...choppedMessages(true),
  ...roundTrips(false),
  ...roundTrips(true),
];
