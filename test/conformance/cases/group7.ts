// Autobahn group 7, Close Handling: the closing handshake (RFC 6455 sections 5.5.1, 7.1 and
// 7.4): a close is answered with a close and then the server drops TCP; nothing is processed
// after a close; close payloads of length 1, over 125 octets, with invalid UTF-8 reasons or
// with invalid codes fail the connection.
import { OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT } from "../frame-codec.js";
import { type Case, type CaseDefinition, FAILED, INFORMATIONAL, WRONG_CODE } from "../judge.js";
import {
  cleanClose,
  message,
  NON_STRICT,
  NORMAL,
  OK,
  octets,
  PROTOCOL_ERROR,
  utf8,
} from "./helpers.js";

/** Most close cases turn a wrong close code into an outright failure of the case. */
function wrongCodeFails(c: Case): void {
  if (c.behaviorClose === WRONG_CODE) {
    c.behavior = FAILED;
    c.result = c.resultClose;
  }
}

/** Informational: whatever happened is recorded, nothing fails. */
function informational(result: (c: Case) => string): (c: Case) => void {
  return (c) => {
    const text = result(c);
    c.behavior = INFORMATIONAL;
    c.behaviorClose = INFORMATIONAL;
    c.result = text;
  };
}

function closeCase(
  id: string,
  description: string,
  expectation: string,
  send: (c: Case) => void,
  close = cleanClose(),
): CaseDefinition {
  return {
    id,
    description,
    expectation,
    onOpen(c) {
      c.suppressClose = true;
      c.expect(OK, []);
      c.expectedClose = close;
      send(c);
      c.p.killAfter(1);
    },
    onConnectionLost: wrongCodeFails,
  };
}

/** The fuzzer closes first; the server may fail with 1002 or just drop TCP. */
const protocolErrorOrDrop = (codes = [PROTOCOL_ERROR]) => ({
  closedByMe: true,
  closeCode: codes,
  requireClean: false,
});

const KOSME_INVALID = octets(
  "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
);

function basicClose(): CaseDefinition[] {
  return [
    {
      id: "7.1.1",
      description: "Send a message followed by a close frame",
      expectation: "Echoed message followed by clean close with normal code.",
      onOpen(c) {
        const payload = utf8("Hello World!");
        c.expect(OK, [message(payload, false)]);
        c.expectedClose = cleanClose();
        c.p.sendFrame({ opcode: OP_TEXT, payload });
        c.p.killAfter(1);
      },
      onConnectionLost: wrongCodeFails,
    },
    closeCase(
      "7.1.2",
      "Send two close frames",
      "Clean close with normal code. Second close frame ignored.",
      (c) => {
        c.p.sendClose(NORMAL);
        c.p.sendFrame({ opcode: OP_CLOSE });
      },
    ),
    closeCase(
      "7.1.3",
      "Send a ping after close message",
      "Clean close with normal code, no pong.",
      (c) => {
        c.p.sendClose(NORMAL);
        c.p.sendFrame({ opcode: OP_PING });
      },
    ),
    closeCase(
      "7.1.4",
      "Send text message after sending a close frame.",
      "Clean close with normal code. Text message ignored.",
      (c) => {
        c.p.sendClose(NORMAL);
        c.p.sendFrame({ opcode: OP_TEXT, payload: utf8("Hello World!") });
      },
    ),
    closeCase(
      "7.1.5",
      "Send message fragment1 followed by close then fragment",
      "Clean close with normal code.",
      (c) => {
        c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: utf8("fragment1") });
        c.p.sendClose(NORMAL);
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: utf8("fragment2") });
      },
    ),
    {
      id: "7.1.6",
      description: "Send 256K message followed by close then a ping",
      expectation:
        "Case outcome depends on implementation defined close behavior. Message and close frame are sent back to back. If the close frame is processed before the text message write is complete (as can happen in asynchronous processing models) the close frame is processed first and the text message may not be received or may only be partially recieved.",
      informational: true,
      onOpen(c) {
        c.suppressClose = true;
        const payload = utf8("Hello World!");
        c.expect(OK, [message(payload, false)]);
        c.expect(NON_STRICT, []);
        c.expectedClose = cleanClose();
        c.p.sendFrame({ opcode: OP_TEXT, payload: utf8("BAsd7&jh23"), payloadLen: 256 * 1024 });
        c.p.sendFrame({ opcode: OP_TEXT, payload });
        c.p.sendClose(NORMAL);
        c.p.sendFrame({ opcode: OP_PING });
        c.p.killAfter(1);
      },
      onConnectionLost: informational((c) => {
        const close = `close behavior ${c.behaviorClose} (${c.resultClose})`;
        if (c.behavior === OK) return `Text message was processed before close; ${close}.`;
        if (c.behavior === NON_STRICT) {
          return `Close was processed before text message could be returned; ${close}.`;
        }
        const sizes = c.received.map((e) => (e.kind === "message" ? e.payload.length : e.kind));
        const both = c.received.length === 2 ? ": both messages were echoed before the close" : "";
        return `Received ${c.received.length} event(s) (sizes ${sizes.join(", ")})${both}; ${close}.`;
      }),
    },
  ];
}

function closeFrameStructure(): CaseDefinition[] {
  return [
    closeCase(
      "7.3.1",
      "Send a close frame with payload length 0 (no close code, no close reason)",
      "Clean close with normal code.",
      (c) => c.p.sendCloseFrame(),
    ),
    closeCase(
      "7.3.2",
      "Send a close frame with payload length 1",
      "Clean close with protocol error or drop TCP.",
      (c) => c.p.sendCloseFrame(null, utf8("a")),
      protocolErrorOrDrop(),
    ),
    closeCase(
      "7.3.3",
      "Send a close frame with payload length 2 (regular close with a code)",
      "Clean close with normal code.",
      (c) => c.p.sendClose(NORMAL),
    ),
    closeCase(
      "7.3.4",
      "Send a close frame with close code and close reason",
      "Clean close with normal code.",
      (c) => c.p.sendClose(NORMAL, "Hello World!"),
    ),
    closeCase(
      "7.3.5",
      "Send a close frame with close code and close reason of maximum length (123)",
      "Clean close with normal code.",
      (c) => c.p.sendClose(NORMAL, "*".repeat(123)),
    ),
    closeCase(
      "7.3.6",
      "Send a close frame with close code and close reason which is too long (124) - total frame payload 126 octets",
      "Clean close with protocol error code or dropped TCP connection.",
      (c) => c.p.sendCloseFrame(NORMAL, utf8("*".repeat(124))),
      protocolErrorOrDrop(),
    ),
    closeCase(
      "7.5.1",
      "Send a close frame with invalid UTF8 payload",
      "Clean close with protocol error or invalid utf8 code or dropped TCP.",
      (c) => c.p.sendCloseFrame(NORMAL, KOSME_INVALID),
      protocolErrorOrDrop([PROTOCOL_ERROR, 1007]),
    ),
  ];
}

/** Close codes that may be sent (RFC 6455 section 7.4.1 and 7.4.2), answered with 1000 or an echo. */
const VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999];

/**
 * Codes that must never appear in a close frame (section 7.4): below 1000, reserved (1004),
 * local-only (1005, 1006), unassigned (1016-2999). Autobahn dropped 1014 and 1015 from this
 * list once the IANA registry assigned them.
 */
const INVALID_CODES = [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999];

function closeCodes(): CaseDefinition[] {
  const valid = VALID_CODES.map((code, i) =>
    closeCase(
      `7.7.${i + 1}`,
      `Send close with valid close code ${code}`,
      "Clean close with normal or echoed code",
      (c) => c.p.sendCloseFrame(code),
      cleanClose([NORMAL, code]),
    ),
  );
  const invalid = INVALID_CODES.map((code, i) =>
    closeCase(
      `7.9.${i + 1}`,
      `Send close with invalid close code ${code}`,
      "Clean close with protocol error code or drop TCP",
      (c) => c.p.sendCloseFrame(code),
      protocolErrorOrDrop(),
    ),
  );
  // Codes that do not fit the registry at all: what a server does is left open by the spec.
  const outOfRange = [5000, 65535].map(
    (code, i): CaseDefinition => ({
      id: `7.13.${i + 1}`,
      description: `Send close with close code ${code === 65535 ? 65536 : code}`,
      expectation: "Actual events are undefined by the spec.",
      informational: true,
      onOpen(c) {
        c.suppressClose = true;
        c.expect(OK, []);
        c.expectedClose = {
          closedByMe: true,
          closeCode: [NORMAL, code, PROTOCOL_ERROR],
          requireClean: false,
        };
        c.p.sendCloseFrame(code);
        c.p.killAfter(1);
      },
      onConnectionLost: informational(
        (c) =>
          `Actual events are undefined by the spec. Server answered with close code ${
            c.p.remoteCloseCode ?? "none"
          }; close behavior ${c.behaviorClose} (${c.resultClose}).`,
      ),
    }),
  );
  return [...valid, ...invalid, ...outOfRange];
}

export const GROUP_7: CaseDefinition[] = [
  ...basicClose(),
  ...closeFrameStructure(),
  ...closeCodes(),
];
