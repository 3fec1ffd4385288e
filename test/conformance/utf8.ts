// The harness's own incremental UTF-8 validator (RFC 3629 section 4), kept apart from
// src/protocol/utf8.ts on purpose: the conformance suite judges the server's UTF-8 handling, so it
// must not share that code. Like Autobahn's validator it fails on the first octet that can no
// longer start or continue a well-formed sequence, so "fail fast" can be measured against it.

/** Incremental validator: feed octets in any chunking, ask whether they are still valid. */
export class Utf8Validator {
  /** Continuation octets still owed by the current sequence. */
  private need = 0;
  /** Allowed range of the next continuation octet (narrowed after E0, ED, F0 and F4). */
  private lo = 0x80;
  private hi = 0xbf;
  private failed = false;
  /** Octets consumed so far, including the one that failed. */
  consumed = 0;

  reset(): void {
    this.need = 0;
    this.lo = 0x80;
    this.hi = 0xbf;
    this.failed = false;
    this.consumed = 0;
  }

  /** Feeds octets; returns false as soon as the stream can no longer be valid UTF-8. */
  push(bytes: Uint8Array): boolean {
    if (this.failed) return false;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      this.consumed++;
      if (this.need === 0) {
        if (b < 0x80) continue;
        if (!this.lead(b)) {
          this.failed = true;
          return false;
        }
      } else {
        if (b < this.lo || b > this.hi) {
          this.failed = true;
          return false;
        }
        this.need--;
        this.lo = 0x80;
        this.hi = 0xbf;
      }
    }
    return true;
  }

  /** True when everything fed so far is valid and ends on a code point boundary. */
  get complete(): boolean {
    return !this.failed && this.need === 0;
  }

  get valid(): boolean {
    return !this.failed;
  }

  /**
   * Sets up the state for a lead octet. The narrowed ranges exclude overlong forms (E0 80-9F,
   * F0 80-8F), UTF-16 surrogates (ED A0-BF) and code points above U+10FFFF (F4 90-BF);
   * C0, C1 and F5-FF never start a sequence.
   */
  private lead(b: number): boolean {
    if (b >= 0xc2 && b <= 0xdf) return this.expect(1, 0x80, 0xbf);
    if (b === 0xe0) return this.expect(2, 0xa0, 0xbf);
    if ((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) return this.expect(2, 0x80, 0xbf);
    if (b === 0xed) return this.expect(2, 0x80, 0x9f);
    if (b === 0xf0) return this.expect(3, 0x90, 0xbf);
    if (b >= 0xf1 && b <= 0xf3) return this.expect(3, 0x80, 0xbf);
    if (b === 0xf4) return this.expect(3, 0x80, 0x8f);
    return false;
  }

  private expect(need: number, lo: number, hi: number): boolean {
    this.need = need;
    this.lo = lo;
    this.hi = hi;
    return true;
  }
}

/** Whole-buffer check: valid and complete. */
export function isValidUtf8(bytes: Uint8Array): boolean {
  const v = new Utf8Validator();
  return v.push(bytes) && v.complete;
}
