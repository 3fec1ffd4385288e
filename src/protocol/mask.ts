import { endianness } from "node:os";

/**
 * XOR masking (RFC 6455 section 5.3), a 32-bit word at a time over the aligned middle of the
 * buffer. Pure TypeScript: typed-array word XOR is within a small factor of native code here, so
 * no native addon is needed (see bench/mask.ts).
 */

const LITTLE_ENDIAN = endianness() === "LE";
/** Below this many bytes, creating a word view costs more than it saves. */
const WORD_THRESHOLD = 32;

/**
 * Unmasks (or masks: XOR is its own inverse) `data[start, end)` in place. `phase` is the index
 * into the 4-byte key of the byte at `start`, so a payload can be unmasked piece by piece as it
 * arrives. Returns the phase of the byte after `end`.
 */
export function applyMask(
  data: Uint8Array,
  key: Uint8Array,
  start = 0,
  end = data.length,
  phase = 0,
): number {
  let i = start;
  if (end - i >= WORD_THRESHOLD && LITTLE_ENDIAN) {
    // Bytes until the absolute address is 4-aligned, so a Uint32Array view can cover the rest.
    const misalignment = (data.byteOffset + i) & 3;
    const head = misalignment === 0 ? 0 : 4 - misalignment;
    for (const stop = i + head; i < stop; i++) data[i] ^= key[phase++ & 3];
    phase &= 3;
    const words = (end - i) >>> 2;
    const word =
      (key[phase] |
        (key[(phase + 1) & 3] << 8) |
        (key[(phase + 2) & 3] << 16) |
        (key[(phase + 3) & 3] << 24)) >>>
      0;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    for (let w = 0; w < words; w++) view[w] ^= word;
    i += words << 2;
  }
  for (; i < end; i++) data[i] ^= key[phase++ & 3];
  return phase & 3;
}
