/**
 * Fuzz target for the incremental UTF-8 validator (src/protocol/utf8.ts).
 *
 * RFC 6455 section 8.1 fails a text message that is not UTF-8, and section 5.6 lets an endpoint
 * fail as soon as it can tell, which Switchboard does: Utf8Validator.write() must return false
 * in exactly the chunk holding the first byte after which no continuation can make the input
 * valid UTF-8 (RFC 3629 section 4: overlongs, surrogates and code points past U+10FFFF are
 * invalid from their second byte), whatever the chunking and whatever sub-range of a larger
 * buffer is passed. If no byte is fatal, `complete` says whether the input ends on a character
 * boundary. isValidUtf8() agrees with the platform decoder.
 *
 * The reference is the platform's TextDecoder fed one byte at a time; every tenth input it is
 * itself checked against a brute-force search over the completions of each prefix.
 */
import { isValidUtf8, Utf8Validator } from "../src/protocol/utf8.js";
import type { Random } from "./random.js";
import { searchLoop, type Target, Violation } from "./target.js";
import { isUtf8Reference } from "./wire.js";

/**
 * Continuation bytes at the edges of every range RFC 3629 allows after some lead byte, so any
 * prefix that can be completed can be completed with these.
 */
const EDGE_CONTINUATIONS = [0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf];

/** Can `prefix` be extended by 0-3 bytes into valid UTF-8? */
function completable(prefix: Uint8Array): boolean {
  if (isUtf8Reference(prefix)) return true;
  const buffer = new Uint8Array(prefix.length + 3);
  buffer.set(prefix);
  for (let extra = 1; extra <= 3; extra++) {
    const combinations = EDGE_CONTINUATIONS.length ** extra;
    for (let combination = 0; combination < combinations; combination++) {
      let c = combination;
      for (let j = 0; j < extra; j++) {
        buffer[prefix.length + j] = EDGE_CONTINUATIONS[c % EDGE_CONTINUATIONS.length];
        c = Math.floor(c / EDGE_CONTINUATIONS.length);
      }
      if (isUtf8Reference(buffer.subarray(0, prefix.length + extra))) return true;
    }
  }
  return false;
}

/** The first fatal byte by brute force (completability is monotone, so binary search), or -1. */
function firstFatalByBruteForce(bytes: Uint8Array): number {
  if (completable(bytes)) return -1;
  let low = 0;
  let high = bytes.length - 1;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (completable(bytes.subarray(0, mid + 1))) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** The first fatal byte by the platform decoder in streaming mode, or -1. */
function firstFatal(bytes: Uint8Array): number {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  for (let i = 0; i < bytes.length; i++) {
    try {
      decoder.decode(bytes.subarray(i, i + 1), { stream: true });
    } catch {
      return i;
    }
  }
  return -1;
}

const LEAD_BYTES = [
  0x00, 0x41, 0x7f, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3,
  0xf4, 0xf5, 0xf7, 0xf8, 0xfe, 0xff,
];
const CONTINUATION_BYTES = [0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0];
const SPECIAL_CODE_POINTS = [
  0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x10ffff,
];

function codePoint(random: Random): number {
  switch (random.int(5)) {
    case 0:
      return random.int(0x80);
    case 1:
      return 0x80 + random.int(0x780);
    case 2: {
      const c = 0x800 + random.int(0xf800);
      return c >= 0xd800 && c <= 0xdfff ? 0xe000 : c;
    }
    case 3:
      return 0x10000 + random.int(0x100000);
    default:
      return random.pick(SPECIAL_CODE_POINTS);
  }
}

/** Characters, ASCII runs (long enough for the native fast path), lone lead and trail bytes. */
function anyBytes(random: Random): Uint8Array {
  const out: number[] = [];
  const n = random.int(6) === 0 ? random.int(200) : random.int(40);
  for (let i = 0; i < n; i++) {
    const k = random.int(10);
    if (k < 5) out.push(...Buffer.from(String.fromCodePoint(codePoint(random))));
    else if (k < 6) for (let j = random.int(40); j > 0; j--) out.push(0x61);
    else if (k < 8) out.push(random.pick(LEAD_BYTES));
    else if (k < 9) out.push(random.pick(CONTINUATION_BYTES));
    else out.push(random.int(256));
  }
  return Uint8Array.from(out);
}

/** Valid text with a few bytes set, inserted, deleted or cut off. */
function nearlyValid(random: Random): Uint8Array {
  const out: number[] = [];
  const n = random.int(6) === 0 ? random.int(200) : random.int(40);
  for (let i = 0; i < n; i++) {
    if (random.int(8) === 0) for (let j = random.int(40); j > 0; j--) out.push(0x61);
    else out.push(...Buffer.from(String.fromCodePoint(codePoint(random))));
  }
  const odd = [...LEAD_BYTES, ...CONTINUATION_BYTES];
  for (let edits = random.int(4); edits > 0 && out.length > 0; edits--) {
    const at = random.int(out.length);
    switch (random.int(4)) {
      case 0:
        out[at] = random.pick(odd);
        break;
      case 1:
        out.splice(at, 0, random.pick(odd));
        break;
      case 2:
        out.splice(at, 1);
        break;
      default:
        out.length = at;
    }
  }
  return Uint8Array.from(out);
}

const counters = { invalid: 0, bruteForceChecks: 0 };

function iteration(random: Random, run: number): void {
  const bytes = random.int(3) === 0 ? anyBytes(random) : nearlyValid(random);
  const fatal = firstFatal(bytes);
  if (run % 10 === 0) {
    counters.bruteForceChecks++;
    const bruteForce = firstFatalByBruteForce(bytes);
    if (bruteForce !== fatal) {
      throw new Violation("the two references disagree (a fuzzer bug, not a validator bug)", {
        bytes: Buffer.from(bytes).toString("hex"),
        decoder: fatal,
        bruteForce,
      });
    }
  }
  if (fatal >= 0) counters.invalid++;

  const validator = new Utf8Validator();
  // A reused validator: reset() must forget a character left open.
  if (random.chance(0.2)) {
    validator.write(Uint8Array.from([random.pick(LEAD_BYTES)]));
    validator.reset();
  }
  const chunks: Array<[number, number, string]> = [];
  let at = 0;
  let failedChunk: [number, number] | null = null;
  while (at < bytes.length) {
    const size = random.int(3) === 0 ? 1 : 1 + random.int(random.int(2) ? 8 : 40);
    const end = Math.min(bytes.length, at + size);
    let ok: boolean;
    if (random.chance(0.5)) {
      // The chunk as a sub-range of a larger buffer whose other bytes are invalid UTF-8.
      const before = random.int(5);
      const larger = new Uint8Array(before + (end - at) + random.int(5)).fill(0xff);
      larger.set(bytes.subarray(at, end), before);
      chunks.push([at, end, `range ${before}..${before + end - at} of ${larger.length}`]);
      ok = validator.write(larger, before, before + (end - at));
    } else {
      chunks.push([at, end, "whole"]);
      ok = validator.write(bytes.subarray(at, end));
    }
    if (!ok) {
      failedChunk = [at, end];
      break;
    }
    at = end;
  }

  const input = () => ({ bytes: Buffer.from(bytes).toString("hex"), chunks, firstFatal: fatal });
  if (fatal < 0) {
    if (failedChunk)
      throw new Violation(`valid bytes refused in chunk [${failedChunk.join(", ")})`, input());
    const valid = isUtf8Reference(bytes);
    if (validator.complete !== valid) {
      throw new Violation(
        `complete is ${validator.complete} for input whose validity is ${valid}`,
        input(),
      );
    }
  } else {
    if (!failedChunk) throw new Violation("invalid bytes accepted", input());
    if (fatal < failedChunk[0] || fatal >= failedChunk[1]) {
      throw new Violation(
        `refused in chunk [${failedChunk.join(", ")}), not in the one holding byte ${fatal}`,
        input(),
      );
    }
  }
  if (isValidUtf8(bytes) !== isUtf8Reference(bytes)) {
    throw new Violation(`isValidUtf8 says ${isValidUtf8(bytes)}`, input());
  }
}

export const utf8Target: Target = {
  name: "utf8",
  summary: "incremental UTF-8 validation fails in exactly the right chunk, under any chunking",
  async run(options) {
    counters.invalid = 0;
    counters.bruteForceChecks = 0;
    let run = 0;
    const { runs, failure } = await searchLoop(options, (random) => iteration(random, run++), 200);
    return {
      runs,
      failure,
      stats: {
        "invalid inputs": counters.invalid,
        "brute-force cross-checks": counters.bruteForceChecks,
      },
    };
  },
};
