import { createRequire } from "node:module";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isValidUtf8, Utf8Validator } from "../../src/protocol/utf8.js";
import { hex } from "./recorder.js";

// The reference: Node's own validator (simdutf), loaded the CommonJS way on purpose.
const require = createRequire(import.meta.url);
const { isUtf8 } = require("node:buffer") as typeof import("node:buffer");

/**
 * Completions that can finish any unfinished but still valid UTF-8 sequence: the byte after a
 * lead must sit in A0..BF after E0, 80..9F after ED, 90..BF after F0 and 80..8F after F4, and
 * 80, 90 or A0 satisfies each; later continuation bytes accept 80.
 */
const COMPLETIONS: Buffer[] = [Buffer.alloc(0)];
for (const first of [0x80, 0x90, 0xa0]) {
  for (let extra = 0; extra <= 2; extra++) {
    COMPLETIONS.push(Buffer.from([first, ...new Array(extra).fill(0x80)]));
  }
}

/** Whether some continuation could make `prefix` valid UTF-8 (defined through isUtf8 only). */
function isValidPrefix(prefix: Uint8Array): boolean {
  return COMPLETIONS.some((tail) => isUtf8(Buffer.concat([prefix, tail])));
}

/** Length of the shortest prefix no continuation can repair, or -1 when every prefix is fine. */
function firstInvalidPrefix(bytes: Uint8Array): number {
  for (let k = 1; k <= bytes.length; k++) {
    if (!isValidPrefix(bytes.subarray(0, k))) return k;
  }
  return -1;
}

/** Feeds `bytes` split at `cuts`; returns the end offset of the first write that failed, or -1. */
function feed(
  validator: Utf8Validator,
  bytes: Uint8Array,
  cuts: readonly number[],
  useRange: boolean,
): number {
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut <= start) continue;
    const ok = useRange
      ? validator.write(bytes, start, cut)
      : validator.write(bytes.slice(start, cut));
    if (!ok) return cut;
    start = cut;
  }
  return -1;
}

/** Byte-at-a-time: the index of the byte whose write failed, or -1. */
function failingByte(bytes: Uint8Array): number {
  const validator = new Utf8Validator();
  for (let i = 0; i < bytes.length; i++) {
    if (!validator.write(bytes, i, i + 1)) return i;
  }
  return -1;
}

function verdict(bytes: Uint8Array): boolean {
  const validator = new Utf8Validator();
  return validator.write(bytes) && validator.complete;
}

describe("Utf8Validator: Markus Kuhn's UTF-8 decoder stress test", () => {
  // [name, bytes, index of the byte at which a fail-fast validator must give up]
  const invalid: Array<[string, Buffer, number]> = [
    ["lone continuation 80", hex`80`, 0],
    ["lone continuation BF", hex`bf`, 0],
    ["continuation run 80 BF 80", hex`80 bf 80`, 0],
    ["continuation after ASCII", hex`41 42 80`, 2],
    ["lead C0 (only overlongs)", hex`c0 20`, 0],
    ["lead C1 (only overlongs)", hex`c1 bf`, 0],
    ["lead followed by a space", hex`e0 20`, 1],
    ["FE", hex`fe`, 0],
    ["FF", hex`ff`, 0],
    ["lead F5 (past U+10FFFF)", hex`f5 80 80 80`, 0],
    ["5-byte form F8 88 80 80 80", hex`f8 88 80 80 80`, 0],
    ["6-byte form FC 84 80 80 80 80", hex`fc 84 80 80 80 80`, 0],
    ["overlong '/' in 2 bytes", hex`c0 af`, 0],
    ["overlong '/' in 3 bytes", hex`e0 80 af`, 1],
    ["overlong '/' in 4 bytes", hex`f0 80 80 af`, 1],
    ["overlong '/' in 5 bytes", hex`f8 80 80 80 af`, 0],
    ["overlong '/' in 6 bytes", hex`fc 80 80 80 80 af`, 0],
    ["largest overlong in 2 bytes", hex`c1 bf`, 0],
    ["largest overlong in 3 bytes", hex`e0 9f bf`, 1],
    ["largest overlong in 4 bytes", hex`f0 8f bf bf`, 1],
    ["overlong NUL in 2 bytes", hex`c0 80`, 0],
    ["overlong NUL in 3 bytes", hex`e0 80 80`, 1],
    ["high surrogate U+D800", hex`ed a0 80`, 1],
    ["high surrogate U+DB7F", hex`ed ad bf`, 1],
    ["high surrogate U+DB80", hex`ed ae 80`, 1],
    ["high surrogate U+DBFF", hex`ed af bf`, 1],
    ["low surrogate U+DC00", hex`ed b0 80`, 1],
    ["low surrogate U+DF80", hex`ed be 80`, 1],
    ["low surrogate U+DFFF", hex`ed bf bf`, 1],
    ["surrogate pair U+D800 U+DC00", hex`ed a0 80 ed b0 80`, 1],
    ["U+110000 (F4 90 80 80)", hex`f4 90 80 80`, 1],
    ["3-byte sequence cut by ASCII", hex`e2 82 41`, 2],
    ["4-byte sequence cut by a new lead", hex`f0 9f 98 f0`, 3],
    ["invalid after a long valid ASCII run", Buffer.from(`${"a".repeat(40)}\xff`, "latin1"), 40],
    ["surrogate after a long valid run", hex`${"41".repeat(33)} ed a0 80`, 34],
  ];

  it.each(invalid)("rejects %s, failing fast at the right byte", (_name, bytes, at) => {
    expect(isUtf8(bytes)).toBe(false);
    expect(verdict(bytes)).toBe(false);
    expect(isValidUtf8(bytes)).toBe(false);
    expect(failingByte(bytes)).toBe(at);
    // The oracle agrees on where the input stopped being repairable.
    expect(firstInvalidPrefix(bytes)).toBe(at + 1);
  });

  const incomplete: Array<[string, Buffer]> = [
    ["C2 at the end", hex`c2`],
    ["E0 A0 at the end", hex`e0 a0`],
    ["F0 90 80 at the end", hex`f0 90 80`],
    ["euro sign missing its last byte", hex`41 e2 82`],
  ];

  it.each(incomplete)("accepts %s as a prefix but not as a whole message", (_name, bytes) => {
    const validator = new Utf8Validator();
    expect(validator.write(bytes)).toBe(true);
    expect(validator.complete).toBe(false);
    expect(isValidUtf8(bytes)).toBe(false);
  });

  const valid: Array<[string, Buffer]> = [
    ["empty", hex``],
    ["U+0000", hex`00`],
    ["U+007F", hex`7f`],
    ["U+0080", hex`c2 80`],
    ["U+07FF", hex`df bf`],
    ["U+0800", hex`e0 a0 80`],
    ["U+D7FF (below the surrogates)", hex`ed 9f bf`],
    ["U+E000 (above the surrogates)", hex`ee 80 80`],
    ["U+FFFD", hex`ef bf bd`],
    ["U+FFFE (a noncharacter, still valid)", hex`ef bf be`],
    ["U+FFFF", hex`ef bf bf`],
    ["U+10000", hex`f0 90 80 80`],
    ["U+10FFFF", hex`f4 8f bf bf`],
    ["Greek kosme", Buffer.from("κόσμε")],
    ["mixed text", Buffer.from("Switchboard: é € 😀 𝄞 ✓ ".repeat(5))],
  ];

  it.each(valid)("accepts %s, whole and byte by byte", (_name, bytes) => {
    expect(isUtf8(bytes)).toBe(true);
    expect(verdict(bytes)).toBe(true);
    expect(isValidUtf8(bytes)).toBe(true);
    expect(failingByte(bytes)).toBe(-1);
  });

  it("carries a character across writes and can be reset", () => {
    const validator = new Utf8Validator();
    expect(validator.write(hex`e2`)).toBe(true);
    expect(validator.complete).toBe(false);
    expect(validator.write(hex`82`)).toBe(true);
    expect(validator.write(hex`ac`)).toBe(true);
    expect(validator.complete).toBe(true);
    expect(validator.write(hex`ed`)).toBe(true);
    validator.reset();
    // The unfinished ED is forgotten: ASCII is fine again (without the reset it would fail).
    expect(validator.complete).toBe(true);
    expect(validator.write(hex`41`)).toBe(true);

    const unreset = new Utf8Validator();
    expect(unreset.write(hex`ed`)).toBe(true);
    expect(unreset.write(hex`41`)).toBe(false);
  });

  it("checks only the given range", () => {
    const bytes = hex`ff 41 42 ff`;
    const validator = new Utf8Validator();
    expect(validator.write(bytes, 1, 3)).toBe(true);
    expect(validator.write(bytes, 3, 4)).toBe(false);
  });
});

/** Bytes that are mostly UTF-8 (so the interesting cases are reached) with damage mixed in. */
const LEADS = [0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf1];
LEADS.push(0xf4, 0xf5, 0xf8, 0xfc, 0xff);
const CONTINUATIONS = [0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf];
/** A valid character, or a lead byte followed by 0-3 bytes at the edges of continuation ranges. */
const token = fc.oneof(
  {
    arbitrary: fc
      .string({ unit: "binary", minLength: 1, maxLength: 1 })
      .map((c) => [...Buffer.from(c)]),
    weight: 3,
  },
  {
    arbitrary: fc
      .tuple(
        fc.constantFrom(...LEADS),
        fc.array(fc.constantFrom(...CONTINUATIONS), { maxLength: 3 }),
      )
      .map(([lead, rest]) => [lead, ...rest]),
    weight: 1,
  },
);
const nearlyUtf8 = fc.oneof(
  fc.uint8Array({ maxLength: 80 }),
  // Where validators go wrong: lead bytes against the edges of their continuation ranges.
  fc.array(token, { maxLength: 30 }).map((tokens) => Uint8Array.from(tokens.flat())),
  fc.uint8Array({ maxLength: 80, min: 0x80, max: 0xf7 }),
  fc.string({ unit: "binary", maxLength: 60 }).map((s) => new Uint8Array(Buffer.from(s))),
  fc
    .tuple(
      fc.string({ unit: "binary", maxLength: 60 }),
      fc.nat(),
      fc.uint8Array({ minLength: 1, maxLength: 3 }),
    )
    .map(([s, at, junk]) => {
      const bytes = Buffer.from(s);
      const cut = at % (bytes.length + 1);
      return new Uint8Array(Buffer.concat([bytes.subarray(0, cut), junk, bytes.subarray(cut)]));
    }),
);

const cutsFor = (maxLength: number) => fc.array(fc.nat(maxLength), { maxLength: 10 });

describe("Utf8Validator against node:buffer isUtf8", () => {
  it("reaches the same verdict, and fails exactly at the first unrepairable prefix", () => {
    fc.assert(
      fc.property(nearlyUtf8, cutsFor(200), fc.boolean(), (bytes, rawCuts, useRange) => {
        const cuts = [...new Set(rawCuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const validator = new Utf8Validator();
        const failedAt = feed(validator, bytes, cuts, useRange);
        const invalidAt = firstInvalidPrefix(bytes);
        if (invalidAt === -1) {
          expect(failedAt).toBe(-1);
          expect(validator.complete).toBe(isUtf8(bytes));
        } else {
          // The write that failed is the one that delivered byte invalidAt-1: not later
          // (fail fast) and not earlier (no valid prefix is refused).
          const pieceEnds = [...cuts.filter((c) => c > 0), bytes.length];
          const expectedEnd = pieceEnds.find((end) => end >= invalidAt);
          expect(failedAt).toBe(expectedEnd);
          expect(isUtf8(bytes)).toBe(false);
        }
        expect(isValidUtf8(bytes)).toBe(isUtf8(bytes));
      }),
      { numRuns: 1000 },
    );
  });

  it("byte by byte fails at the first unrepairable prefix", () => {
    fc.assert(
      fc.property(nearlyUtf8, (bytes) => {
        const invalidAt = firstInvalidPrefix(bytes);
        expect(failingByte(bytes)).toBe(invalidAt === -1 ? -1 : invalidAt - 1);
      }),
      { numRuns: 500 },
    );
  });
});
