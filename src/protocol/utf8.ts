import { isUtf8 } from "node:buffer";

/**
 * Incremental, fail-fast UTF-8 validation (RFC 3629; RFC 6455 section 8.1 requires text
 * messages to be valid UTF-8 and section 5.6 lets an endpoint fail as soon as they can no
 * longer be). `write` returns false on the first byte after which no continuation could make
 * the input valid: overlongs, surrogates (U+D800..U+DFFF) and code points past U+10FFFF are
 * rejected at their second byte, not when the message ends.
 *
 * Whole runs that end on a character boundary go through Node's native `isUtf8`; only the
 * bytes around a boundary are walked here.
 */
export class Utf8Validator {
  /** Continuation bytes still expected for the current character. */
  private need = 0;
  /** Allowed range of the next continuation byte (narrower right after some lead bytes). */
  private lo = 0x80;
  private hi = 0xbf;

  /** True when the bytes seen so far end on a character boundary. */
  get complete(): boolean {
    return this.need === 0;
  }

  reset(): void {
    this.need = 0;
    this.lo = 0x80;
    this.hi = 0xbf;
  }

  write(bytes: Uint8Array, start = 0, end = bytes.length): boolean {
    let i = start;
    // Finish a character left open by the previous call.
    if (this.need !== 0) {
      i = this.walk(bytes, i, Math.min(end, i + this.need));
      if (i < 0) return false;
      if (this.need !== 0) return true;
    }
    if (end - i >= 16) {
      const boundary = lastBoundary(bytes, i, end);
      if (boundary > i) {
        if (!isUtf8(bytes.subarray(i, boundary))) return false;
        i = boundary;
      }
    }
    return this.walk(bytes, i, end) >= 0;
  }

  /** Byte-at-a-time DFA; returns the index reached, or -1 when the input became invalid. */
  private walk(bytes: Uint8Array, i: number, end: number): number {
    let need = this.need;
    let lo = this.lo;
    let hi = this.hi;
    while (i < end) {
      const c = bytes[i++];
      if (need === 0) {
        if (c < 0x80) continue;
        if (c < 0xc2) return -1; // stray continuation byte or overlong 2-byte lead
        if (c < 0xe0) {
          need = 1;
          lo = 0x80;
          hi = 0xbf;
        } else if (c < 0xf0) {
          need = 2;
          lo = c === 0xe0 ? 0xa0 : 0x80; // E0 80..9F would be overlong
          hi = c === 0xed ? 0x9f : 0xbf; // ED A0..BF would be a surrogate
        } else if (c < 0xf5) {
          need = 3;
          lo = c === 0xf0 ? 0x90 : 0x80; // F0 80..8F would be overlong
          hi = c === 0xf4 ? 0x8f : 0xbf; // F4 90.. would exceed U+10FFFF
        } else {
          return -1;
        }
      } else {
        if (c < lo || c > hi) return -1;
        need--;
        lo = 0x80;
        hi = 0xbf;
      }
    }
    this.need = need;
    this.lo = lo;
    this.hi = hi;
    return i;
  }
}

/**
 * The index in [start, end] where the last complete character ends: everything before it can be
 * checked in one native call, everything after it is an unfinished sequence (or stray bytes the
 * DFA will reject).
 */
function lastBoundary(bytes: Uint8Array, start: number, end: number): number {
  const floor = Math.max(start, end - 4);
  for (let p = end - 1; p >= floor; p--) {
    const c = bytes[p];
    if ((c & 0xc0) === 0x80) continue; // continuation byte: keep looking for its lead
    const length = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    return end - p >= length ? end : p;
  }
  return end;
}

/** Validates a complete message in one call. */
export function isValidUtf8(bytes: Uint8Array): boolean {
  return isUtf8(bytes);
}
