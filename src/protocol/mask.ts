import { createRequire } from "node:module";
import { endianness } from "node:os";

/**
 * XOR masking (RFC 6455 section 5.3), a 32-bit word at a time over the aligned middle of the
 * buffer, in pure TypeScript. bench/mask.ts measured a native implementation about 3x faster
 * from 1 KiB up and slower below 128 bytes (the call costs more than the work), so payloads of
 * NATIVE_THRESHOLD bytes and more use the optional `bufferutil` addon when it is installed.
 * Set SWITCHBOARD_NATIVE_MASK=0 to measure without it.
 */

const LITTLE_ENDIAN = endianness() === "LE";
/**
 * Below this many bytes, creating a word view costs more than it saves: four bytes a turn with
 * the key rotated beforehand is faster up to about 128 bytes (bench/mask.ts), which covers most
 * chat-sized messages.
 */
const WORD_THRESHOLD = 128;
const NATIVE_THRESHOLD = 1024;

type NativeMask = (buffer: Buffer, key: Buffer) => void;

const nativeUnmask: NativeMask | null = loadNative();

function loadNative(): NativeMask | null {
  if (process.env.SWITCHBOARD_NATIVE_MASK === "0") return null;
  try {
    const addon = createRequire(import.meta.url)("bufferutil") as { unmask?: NativeMask };
    return typeof addon.unmask === "function" ? addon.unmask : null;
  } catch {
    return null;
  }
}

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
  if (nativeUnmask !== null && end - start >= NATIVE_THRESHOLD) {
    const target = Buffer.from(data.buffer, data.byteOffset + start, end - start);
    const rotated = Buffer.allocUnsafe(4);
    for (let k = 0; k < 4; k++) rotated[k] = key[(phase + k) & 3];
    nativeUnmask(target, rotated);
    return (phase + end - start) & 3;
  }
  const after = (phase + end - start) & 3;
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
    let w = 0;
    for (const unrolled = words & ~3; w < unrolled; w += 4) {
      view[w] ^= word;
      view[w + 1] ^= word;
      view[w + 2] ^= word;
      view[w + 3] ^= word;
    }
    for (; w < words; w++) view[w] ^= word;
    i += words << 2;
  }
  // The rest (or all of a short range) four bytes a turn, the key rotated to the phase first.
  const k0 = key[phase & 3];
  const k1 = key[(phase + 1) & 3];
  const k2 = key[(phase + 2) & 3];
  const k3 = key[(phase + 3) & 3];
  for (const stop = end - 3; i < stop; i += 4) {
    data[i] ^= k0;
    data[i + 1] ^= k1;
    data[i + 2] ^= k2;
    data[i + 3] ^= k3;
  }
  if (i < end) data[i++] ^= k0;
  if (i < end) data[i++] ^= k1;
  if (i < end) data[i] ^= k2;
  return after;
}
