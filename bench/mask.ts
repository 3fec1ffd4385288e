/**
 * Masking micro-benchmark: the pure TypeScript word-at-a-time `applyMask` against a byte loop
 * and against a native implementation (the `bufferutil` addon, a dev dependency used only here).
 * It decides whether Switchboard needs a native fast path: only if native wins by a wide margin
 * at sizes that matter.
 *
 *   npx tsx bench/mask.ts
 */
import { createRequire } from "node:module";

// Measure the pure TypeScript path: the native one is what it is compared against.
process.env.SWITCHBOARD_NATIVE_MASK = "0";
const { applyMask } = await import("../src/protocol/mask.js");

const require = createRequire(import.meta.url);
const native = require("bufferutil") as {
  unmask(buffer: Buffer, mask: Buffer): void;
};

function byteLoop(data: Uint8Array, key: Uint8Array): void {
  for (let i = 0; i < data.length; i++) data[i] ^= key[i & 3];
}

const key = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
const sizes = [16, 32, 64, 125, 256, 1024, 16 * 1024, 1024 * 1024];
const budgetMs = 300;

function rate(run: (buffer: Buffer) => void, buffer: Buffer): number {
  // Warm up, then count bytes masked in a fixed time budget (bounded in time and count).
  for (let i = 0; i < 1000; i++) run(buffer);
  let bytes = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(budgetMs * 1e6);
  let now = start;
  for (let rounds = 0; rounds < 1e8 && now < deadline; rounds++) {
    for (let i = 0; i < 64; i++) run(buffer);
    bytes += buffer.length * 64;
    now = process.hrtime.bigint();
  }
  return bytes / (Number(now - start) / 1e9);
}

const gb = (bytesPerSecond: number): string => `${(bytesPerSecond / 1e9).toFixed(2)} GB/s`;
const rows: string[][] = [["size", "byte loop", "applyMask", "native", "native / applyMask"]];
for (const size of sizes) {
  // Offset 1 into a larger allocation: real payloads are rarely 4-byte aligned.
  const buffer = Buffer.alloc(size + 1).subarray(1);
  const loop = rate((b) => byteLoop(b, key), buffer);
  const ours = rate((b) => applyMask(b, key), buffer);
  const theirs = rate((b) => native.unmask(b, key), buffer);
  rows.push([String(size), gb(loop), gb(ours), gb(theirs), (theirs / ours).toFixed(2)]);
}
for (const row of rows) console.log(row.map((cell) => cell.padStart(18)).join(""));
