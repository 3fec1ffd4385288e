import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { applyMask } from "../../src/protocol/mask.js";
import { hex } from "./recorder.js";

/** The definition in RFC 6455 section 5.3: octet i is XORed with key octet (i MOD 4). */
function naiveMask(data: Uint8Array, key: Uint8Array, start: number, end: number, phase: number) {
  for (let i = start; i < end; i++) data[i] ^= key[(phase + i - start) % 4];
  return (phase + end - start) % 4;
}

/** Deterministic, non-repeating-looking bytes so a misplaced XOR shows. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

const KEY = hex`37 fa 21 3d`;
const GUARD = 8;

describe("applyMask", () => {
  it("masks the RFC 6455 section 5.7 example", () => {
    const data = Buffer.from("Hello");
    expect(applyMask(data, KEY)).toBe(1);
    expect(data).toEqual(hex`7f 9f 4d 51 58`);
    // XOR is its own inverse.
    applyMask(data, KEY);
    expect(data.toString()).toBe("Hello");
  });

  it("matches the byte loop for every alignment (0..7), length (0..300) and phase (0..3)", () => {
    // The word loop needs a 4-aligned view, so misaligned starts must fall back correctly.
    const backing = new ArrayBuffer(GUARD + 300 + GUARD + 8);
    let cases = 0;
    for (let byteOffset = 0; byteOffset < 8; byteOffset++) {
      for (let length = 0; length <= 300; length++) {
        const original = pattern(length + 2 * GUARD, length * 8 + byteOffset);
        for (let phase = 0; phase < 4; phase++) {
          const actual = new Uint8Array(backing, byteOffset, length + 2 * GUARD);
          actual.set(original);
          const expected = Uint8Array.from(original);
          const expectedPhase = naiveMask(expected, KEY, GUARD, GUARD + length, phase);
          const returned = applyMask(actual, KEY, GUARD, GUARD + length, phase);
          if (returned !== expectedPhase || !Buffer.from(actual).equals(Buffer.from(expected))) {
            // Only build the (slow) diff when something is wrong.
            expect({ byteOffset, length, phase, returned, bytes: Buffer.from(actual) }).toEqual({
              byteOffset,
              length,
              phase,
              returned: expectedPhase,
              bytes: Buffer.from(expected),
            });
          }
          cases++;
        }
      }
    }
    expect(cases).toBe(8 * 301 * 4);
  });

  it("masks a whole view whose byteOffset is odd, without touching its neighbours", () => {
    const backing = new Uint8Array(100).fill(0xaa);
    const view = backing.subarray(3, 3 + 90);
    applyMask(view, KEY);
    expect(backing.subarray(0, 3)).toEqual(new Uint8Array(3).fill(0xaa));
    expect(backing.subarray(93)).toEqual(new Uint8Array(7).fill(0xaa));
    const expected = new Uint8Array(90).fill(0xaa);
    naiveMask(expected, KEY, 0, 90, 0);
    expect(view).toEqual(expected);
  });

  it("applied piece by piece, chaining the returned phase, equals one whole application", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 400 }),
        fc.uint8Array({ minLength: 4, maxLength: 4 }),
        fc.integer({ min: 0, max: 7 }),
        fc.array(fc.nat(400), { maxLength: 8 }),
        (data, key, byteOffset, rawCuts) => {
          const cuts = [...new Set(rawCuts.map((c) => c % (data.length + 1)))].sort(
            (a, b) => a - b,
          );
          const whole = new Uint8Array(new ArrayBuffer(data.length + 8), byteOffset, data.length);
          whole.set(data);
          const wholePhase = applyMask(whole, key);

          const pieces = new Uint8Array(new ArrayBuffer(data.length + 8), byteOffset, data.length);
          pieces.set(data);
          let phase = 0;
          let start = 0;
          for (const cut of [...cuts, data.length]) {
            phase = applyMask(pieces, key, start, cut, phase);
            start = cut;
          }
          expect(phase).toBe(wholePhase);
          expect(phase).toBe(data.length % 4);
          expect(Buffer.from(pieces).equals(Buffer.from(whole))).toBe(true);
          // And the naive definition agrees with both.
          const naive = Uint8Array.from(data);
          naiveMask(naive, key, 0, naive.length, 0);
          expect(Buffer.from(whole).equals(Buffer.from(naive))).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("masks nothing for an empty range and returns the phase unchanged", () => {
    const data = hex`01 02 03`;
    expect(applyMask(data, KEY, 1, 1, 3)).toBe(3);
    expect(data).toEqual(hex`01 02 03`);
  });
});
