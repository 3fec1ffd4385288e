// Autobahn group 6, UTF-8 Handling: text messages must be valid UTF-8 (RFC 6455 sections 5.6
// and 8.1), checked across fragments and as early as possible: an endpoint that receives an
// octet which can no longer be part of valid UTF-8 fails the connection with 1007 at once
// ("fail fast", 6.4.x), without waiting for the end of the message. 6.5-6.23 replay Markus
// Kuhn's UTF-8 decoder stress test, each payload sent as one text message.
import { OP_CONTINUATION, OP_TEXT } from "../frame-codec.js";
import type { CaseDefinition } from "../judge.js";
import { Utf8Validator } from "../utf8.js";
import {
  cleanClose,
  INVALID_PAYLOAD,
  message,
  NON_STRICT,
  OK,
  octets,
  timeout,
  utf8,
} from "./helpers.js";

/** A UTF-8 failure must be detected by the server: it closes, with 1007. */
const UTF8_FAILURE = {
  closedByMe: false,
  closeCode: [INVALID_PAYLOAD],
  requireClean: false,
  closedByWrongEndpointIsFatal: true,
};

const HELLO_UTF8 = utf8("Hello-µ@ßöäüàá-UTF-8!!");
/** κόσμε ("cosmos"), with a 3-octet code point in the middle. */
const KOSME = octets("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5");

function zeroLength(): CaseDefinition[] {
  return [
    {
      id: "6.1.1",
      description: "Send text message of length 0.",
      expectation: "A message is echo'ed back to us (with empty payload).",
      onOpen(c) {
        c.expect(OK, [message(Buffer.alloc(0), false)]);
        c.expectedClose = cleanClose();
        c.p.sendFrame({ opcode: OP_TEXT, payload: Buffer.alloc(0) });
        c.p.closeAfter(1);
      },
    },
    {
      id: "6.1.2",
      description: "Send fragmented text message, 3 fragments each of length 0.",
      expectation: "A message is echo'ed back to us (with empty payload).",
      onOpen(c) {
        c.expect(OK, [message(Buffer.alloc(0), false)]);
        c.expectedClose = cleanClose();
        c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: Buffer.alloc(0) });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: false, payload: Buffer.alloc(0) });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: Buffer.alloc(0) });
        c.p.closeAfter(1);
      },
    },
    {
      id: "6.1.3",
      description:
        "Send fragmented text message, 3 fragments, first and last of length 0, middle non-empty.",
      expectation: "A message is echo'ed back to us (with payload = payload of middle fragment).",
      onOpen(c) {
        const payload = utf8("middle frame payload");
        c.expect(OK, [message(payload, false)]);
        c.expectedClose = cleanClose();
        c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: Buffer.alloc(0) });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: false, payload });
        c.p.sendFrame({ opcode: OP_CONTINUATION, fin: true, payload: Buffer.alloc(0) });
        c.p.closeAfter(1);
      },
    },
  ];
}

function validEcho(
  id: string,
  description: string,
  payload: Buffer,
  send: (c: Parameters<CaseDefinition["onOpen"]>[0]) => void,
): CaseDefinition {
  return {
    id,
    description,
    expectation: "The message is echo'ed back to us.",
    onOpen(c) {
      c.expect(OK, [message(payload, false)]);
      c.expectedClose = cleanClose();
      send(c);
      c.p.closeAfter(1);
    },
  };
}

function validFragmented(): CaseDefinition[] {
  return [
    validEcho("6.2.1", "Send a valid UTF-8 text message in one fragment.", HELLO_UTF8, (c) => {
      void c.p.sendMessage(HELLO_UTF8, false);
    }),
    validEcho(
      "6.2.2",
      "Send a valid UTF-8 text message in two fragments, fragmented on UTF-8 code point boundary.",
      HELLO_UTF8,
      (c) => {
        const one = utf8("Hello-µ@ßöä");
        c.p.sendFrame({ opcode: OP_TEXT, fin: false, payload: one });
        c.p.sendFrame({
          opcode: OP_CONTINUATION,
          fin: true,
          payload: HELLO_UTF8.subarray(one.length),
        });
      },
    ),
    validEcho(
      "6.2.3",
      "Send a valid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.",
      HELLO_UTF8,
      (c) => {
        void c.p.sendMessage(HELLO_UTF8, false, 1);
      },
    ),
    validEcho(
      "6.2.4",
      "Send a valid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.",
      KOSME,
      (c) => {
        void c.p.sendMessage(KOSME, false, 1);
      },
    ),
  ];
}

/** κόσμε, then a UTF-16 surrogate (invalid at its second octet, overall octet 12), then "edited". */
const INVALID_6_3 = Buffer.concat([KOSME, octets("\xed\xa0\x80"), octets("edited")]);

function invalidMessage(): CaseDefinition[] {
  return [
    {
      id: "6.3.1",
      description: "Send invalid UTF-8 text message unfragmented.",
      expectation: "The connection is failed immediately, since the payload is not valid UTF-8.",
      onOpen(c) {
        c.expect(OK, []);
        c.expectedClose = { ...UTF8_FAILURE };
        void c.p.sendMessage(INVALID_6_3, false);
        c.p.killAfter(1);
      },
    },
    {
      id: "6.3.2",
      description:
        "Send invalid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.",
      expectation: "The connection is failed immediately, since the payload is not valid UTF-8.",
      onOpen(c) {
        c.expect(OK, []);
        c.expectedClose = { ...UTF8_FAILURE };
        void c.p.sendMessage(INVALID_6_3, false, 1);
        c.p.killAfter(1);
      },
    },
  ];
}

/**
 * 6.4.x: κόσμε, then F4 90 80 80 (U+110000, out of range: invalid at octet 12, the 0x90), then
 * "edited", sent in three parts one second apart. The server must close after the second part;
 * if it waits for the third (the end of the message), Autobahn rates it NON-STRICT.
 */
const PART1 = KOSME;
const PART2 = octets("\xf4\x90\x80\x80");
const PART3 = octets("edited");
const FAIL_FAST = Buffer.concat([PART1, PART2, PART3]);

type Part = (c: Parameters<CaseDefinition["onOpen"]>[0]) => void;

function failFast(
  id: string,
  description: string,
  expectation: string,
  parts: [Part, Part, Part],
): CaseDefinition {
  return {
    id,
    description,
    expectation,
    maxSeconds: 3,
    onOpen(c) {
      c.expect(OK, [timeout("A")]);
      c.expect(NON_STRICT, [timeout("A"), timeout("B")]);
      c.expectedClose = { ...UTF8_FAILURE };
      parts[0](c);
      c.p.continueLater(
        1,
        () => {
          if (c.p.state !== "open") return;
          c.received.push(timeout("A"));
          parts[1](c);
          c.p.continueLater(
            1,
            () => {
              if (c.p.state !== "open") return;
              c.received.push(timeout("B"));
              parts[2](c);
              c.p.killAfter(1);
            },
            "B",
          );
        },
        "A",
      );
    },
  };
}

function failFastCases(): CaseDefinition[] {
  const expectFrames =
    "The first frame is accepted, we expect to timeout on the first wait. The 2nd frame should be rejected immediately (fail fast on UTF-8). If we timeout, we expect the connection is failed at least then, since the complete message payload is not valid UTF-8.";
  const expectChops =
    "The first chop is accepted, we expect to timeout on the first wait. The 2nd chop should be rejected immediately (fail fast on UTF-8). If we timeout, we expect the connection is failed at least then, since the complete message payload is not valid UTF-8.";
  const frame =
    (payload: Buffer, opcode: number, fin: boolean): Part =>
    (c) =>
      c.p.sendFrame({ opcode, fin, payload });
  return [
    failFast(
      "6.4.1",
      "Send invalid UTF-8 text message in 3 fragments (frames). First frame payload is valid, then wait, then 2nd frame which contains the payload making the sequence invalid, then wait, then 3rd frame with rest.",
      expectFrames,
      [
        frame(PART1, OP_TEXT, false),
        frame(PART2, OP_CONTINUATION, false),
        frame(PART3, OP_CONTINUATION, true),
      ],
    ),
    failFast(
      "6.4.2",
      "Same as Case 6.4.1, but in 2nd frame, we send only up to and including the octet making the complete payload invalid.",
      expectFrames,
      [
        frame(FAIL_FAST.subarray(0, 12), OP_TEXT, false),
        frame(FAIL_FAST.subarray(12, 13), OP_CONTINUATION, false),
        frame(FAIL_FAST.subarray(13), OP_CONTINUATION, true),
      ],
    ),
    failFast(
      "6.4.3",
      "Same as Case 6.4.1, but we send message not in 3 frames, but in 3 chops of the same message frame.",
      expectChops,
      [
        (c) => {
          c.p.beginMessage();
          c.p.beginMessageFrame(FAIL_FAST.length);
          c.p.sendMessageFrameData(PART1);
        },
        (c) => c.p.sendMessageFrameData(PART2),
        (c) => {
          c.p.sendMessageFrameData(PART3);
          c.p.endMessage();
        },
      ],
    ),
    failFast(
      "6.4.4",
      "Same as Case 6.4.2, but we send message not in 3 frames, but in 3 chops of the same message frame.",
      expectChops,
      [
        (c) => {
          c.p.beginMessage();
          c.p.beginMessageFrame(FAIL_FAST.length);
          c.p.sendMessageFrameData(FAIL_FAST.subarray(0, 12));
        },
        (c) => c.p.sendMessageFrameData(FAIL_FAST.subarray(12, 13)),
        (c) => {
          c.p.sendMessageFrameData(FAIL_FAST.subarray(13));
          c.p.endMessage();
        },
      ],
    ),
  ];
}

/** Octets from first to last (inclusive), as a buffer. */
function range(first: number, last: number, interleave?: number): Buffer {
  const out: number[] = [];
  for (let b = first; b <= last; b++) {
    out.push(b);
    if (interleave !== undefined) out.push(interleave);
  }
  return Buffer.from(out);
}

/** Markus Kuhn's UTF-8 decoder capability and stress test, grouped as Autobahn does (6.5-6.23). */
export function stressSequences(): Array<{ title: string; payloads: Array<[boolean, Buffer]> }> {
  const o = octets;
  const groups: Array<{ title: string; payloads: Array<[boolean, Buffer]> }> = [];
  const add = (title: string, payloads: Array<[boolean, Buffer]>) =>
    groups.push({ title, payloads });

  add("Some valid UTF-8 sequences", [
    [true, o("hello\x24world")],
    [true, o("hello\xc2\xa2world")],
    [true, o("hello\xe2\x82\xacworld")],
    [true, o("hello\xf0\xa4\xad\xa2world")],
    [true, KOSME],
  ]);
  const prefixes: Array<[boolean, Buffer]> = [];
  for (let i = 1; i <= KOSME.length; i++) {
    const v = new Utf8Validator();
    const prefix = KOSME.subarray(0, i);
    prefixes.push([v.push(prefix) && v.complete, prefix]);
  }
  add("All prefixes of a valid UTF-8 string that contains multi-byte code points", prefixes);
  add("First possible sequence of a certain length", [
    [true, o("\x00")],
    [true, o("\xc2\x80")],
    [true, o("\xe0\xa0\x80")],
    [true, o("\xf0\x90\x80\x80")],
  ]);
  add("First possible sequence length 5/6 (invalid codepoints)", [
    [false, o("\xf8\x88\x80\x80\x80")],
    [false, o("\xfc\x84\x80\x80\x80\x80")],
  ]);
  add("Last possible sequence of a certain length", [
    [true, o("\x7f")],
    [true, o("\xdf\xbf")],
    [true, o("\xef\xbf\xbf")],
    [true, o("\xf4\x8f\xbf\xbf")],
  ]);
  add("Last possible sequence length 4/5/6 (invalid codepoints)", [
    [false, o("\xf7\xbf\xbf\xbf")],
    [false, o("\xfb\xbf\xbf\xbf\xbf")],
    [false, o("\xfd\xbf\xbf\xbf\xbf\xbf")],
  ]);
  add("Other boundary conditions", [
    [true, o("\xed\x9f\xbf")],
    [true, o("\xee\x80\x80")],
    [true, o("\xef\xbf\xbd")],
    [true, o("\xf4\x8f\xbf\xbf")],
    [false, o("\xf4\x90\x80\x80")],
  ]);
  add("Unexpected continuation bytes", [
    [false, o("\x80")],
    [false, o("\xbf")],
    [false, o("\x80\xbf")],
    [false, o("\x80\xbf\x80")],
    [false, o("\x80\xbf\x80\xbf")],
    [false, o("\x80\xbf\x80\xbf\x80")],
    [false, o("\x80\xbf\x80\xbf\x80\xbf")],
    [false, range(0x80, 0xbe)],
  ]);
  // Each lonely start octet followed by a space; Autobahn's ranges exclude their upper bound.
  add("Lonely start characters", [
    [false, range(0xc0, 0xde, 0x20)],
    [false, range(0xe0, 0xee, 0x20)],
    [false, range(0xf0, 0xf6, 0x20)],
    [false, range(0xf8, 0xfa, 0x20)],
    [false, range(0xfc, 0xfc, 0x20)],
  ]);
  const incomplete = [
    "\xc0",
    "\xe0\x80",
    "\xf0\x80\x80",
    "\xf8\x80\x80\x80",
    "\xfc\x80\x80\x80\x80",
    "\xdf",
    "\xef\xbf",
    "\xf7\xbf\xbf",
    "\xfb\xbf\xbf\xbf",
    "\xfd\xbf\xbf\xbf\xbf",
  ].map(o);
  add(
    "Sequences with last continuation byte missing",
    incomplete.map((b): [boolean, Buffer] => [false, b]),
  );
  add("Concatenation of incomplete sequences", [[false, Buffer.concat(incomplete)]]);
  add("Impossible bytes", [
    [false, o("\xfe")],
    [false, o("\xff")],
    [false, o("\xfe\xfe\xff\xff")],
  ]);
  add("Examples of an overlong ASCII character", [
    [false, o("\xc0\xaf")],
    [false, o("\xe0\x80\xaf")],
    [false, o("\xf0\x80\x80\xaf")],
    [false, o("\xf8\x80\x80\x80\xaf")],
    [false, o("\xfc\x80\x80\x80\x80\xaf")],
  ]);
  add("Maximum overlong sequences", [
    [false, o("\xc1\xbf")],
    [false, o("\xe0\x9f\xbf")],
    [false, o("\xf0\x8f\xbf\xbf")],
    [false, o("\xf8\x87\xbf\xbf\xbf")],
    [false, o("\xfc\x83\xbf\xbf\xbf\xbf")],
  ]);
  add("Overlong representation of the NUL character", [
    [false, o("\xc0\x80")],
    [false, o("\xe0\x80\x80")],
    [false, o("\xf0\x80\x80\x80")],
    [false, o("\xf8\x80\x80\x80\x80")],
    [false, o("\xfc\x80\x80\x80\x80\x80")],
  ]);
  add("Single UTF-16 surrogates", [
    [false, o("\xed\xa0\x80")],
    [false, o("\xed\xad\xbf")],
    [false, o("\xed\xae\x80")],
    [false, o("\xed\xaf\xbf")],
    [false, o("\xed\xb0\x80")],
    [false, o("\xed\xbe\x80")],
    [false, o("\xed\xbf\xbf")],
  ]);
  add("Paired UTF-16 surrogates", [
    [false, o("\xed\xa0\x80\xed\xb0\x80")],
    [false, o("\xed\xa0\x80\xed\xbf\xbf")],
    [false, o("\xed\xad\xbf\xed\xb0\x80")],
    [false, o("\xed\xad\xbf\xed\xbf\xbf")],
    [false, o("\xed\xae\x80\xed\xb0\x80")],
    [false, o("\xed\xae\x80\xed\xbf\xbf")],
    [false, o("\xed\xaf\xbf\xed\xb0\x80")],
    [false, o("\xed\xaf\xbf\xed\xbf\xbf")],
  ]);
  // Non-characters are valid UTF-8 (RFC 3629): EF BF BE/BF and F0-F4 xF BF BE/BF, except
  // the overlong F0 8F forms and the F4 forms beyond U+10FFFF.
  const nonCharacters: Array<[boolean, Buffer]> = [
    [true, o("\xef\xbf\xbe")],
    [true, o("\xef\xbf\xbf")],
  ];
  for (const z1 of [0xf0, 0xf1, 0xf2, 0xf3, 0xf4]) {
    for (const z2 of [0x8f, 0x9f, 0xaf, 0xbf]) {
      if (z1 === 0xf4 && z2 !== 0x8f) continue;
      for (const z3 of [0xbe, 0xbf]) {
        if (z1 === 0xf0 && z2 === 0x8f) continue;
        nonCharacters.push([true, Buffer.from([z1, z2, 0xbf, z3])]);
      }
    }
  }
  add("Non-character code points (valid UTF-8)", nonCharacters);
  add("Unicode specials (i.e. replacement char)", [
    [true, o("\xef\xbf\xb9")],
    [true, o("\xef\xbf\xba")],
    [true, o("\xef\xbf\xbb")],
    [true, o("\xef\xbf\xbc")],
    [true, o("\xef\xbf\xbd")],
    [true, o("\xef\xbf\xbe")],
    [true, o("\xef\xbf\xbf")],
  ]);
  return groups;
}

function stressCases(): CaseDefinition[] {
  const out: CaseDefinition[] = [];
  stressSequences().forEach((group, g) => {
    group.payloads.forEach(([valid, payload], i) => {
      out.push({
        id: `6.${g + 5}.${i + 1}`,
        description: `${group.title}: send a text message with payload which is ${
          valid ? "" : "not "
        }valid UTF-8 in one fragment. Payload: 0x${payload.toString("hex")}`,
        expectation: valid
          ? "The message is echo'ed back to us."
          : "The connection is failed immediately, since the payload is not valid UTF-8.",
        onOpen(c) {
          if (valid) {
            c.expect(OK, [message(payload, false)]);
            c.expectedClose = cleanClose();
          } else {
            c.expect(OK, []);
            c.expectedClose = { ...UTF8_FAILURE };
          }
          void c.p.sendMessage(payload, false);
          c.p.killAfter(0.5);
        },
      });
    });
  });
  return out;
}

export const GROUP_6: CaseDefinition[] = [
  ...zeroLength(),
  ...validFragmented(),
  ...invalidMessage(),
  ...failFastCases(),
  ...stressCases(),
];
