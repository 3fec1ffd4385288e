import { describe, expect, it } from "vitest";
import { Opcode } from "../../src/protocol/constants.js";
import {
  encodeFrame,
  type FrameOptions,
  headerLength,
  writeHeader,
} from "../../src/protocol/frame.js";
import { hex, toHex } from "./recorder.js";

const KEY = hex`37 fa 21 3d`;

function text(mask: Uint8Array | null = null, fin = true): FrameOptions {
  return { opcode: Opcode.Text, fin, rsv1: false, mask };
}

function binary(mask: Uint8Array | null = null): FrameOptions {
  return { opcode: Opcode.Binary, fin: true, rsv1: false, mask };
}

/** A frame as one buffer, whichever shape encodeFrame returned. */
function flat(frame: Buffer | [Buffer, Uint8Array]): Buffer {
  return Array.isArray(frame) ? Buffer.concat(frame) : frame;
}

function headerHex(payloadLength: number, options: FrameOptions): string {
  const target = new Uint8Array(14);
  const end = writeHeader(target, 0, payloadLength, options);
  expect(end).toBe(headerLength(payloadLength, options.mask !== null));
  return toHex(target.subarray(0, end));
}

describe("headerLength", () => {
  // Section 5.2: 7-bit length up to 125, 16-bit up to 65535, 64-bit beyond; +4 for the key.
  it.each([
    [0, 2],
    [125, 2],
    [126, 4],
    [65535, 4],
    [65536, 10],
    [2 ** 32, 10],
    [Number.MAX_SAFE_INTEGER, 10],
  ])("length %d needs %d bytes unmasked and 4 more masked", (length, size) => {
    expect(headerLength(length, false)).toBe(size);
    expect(headerLength(length, true)).toBe(size + 4);
  });
});

describe("writeHeader", () => {
  it("uses the minimal length encoding at each boundary (section 5.2)", () => {
    expect(headerHex(0, text())).toBe("8100");
    expect(headerHex(125, binary())).toBe("827d");
    expect(headerHex(126, binary())).toBe("827e007e");
    expect(headerHex(256, binary())).toBe("827e0100");
    expect(headerHex(65535, binary())).toBe("827effff");
    expect(headerHex(65536, binary())).toBe("827f0000000000010000");
  });

  it("writes 64-bit lengths past 2^32 with the high word intact and the top bit clear", () => {
    expect(headerHex(2 ** 32 + 5, binary())).toBe("827f0000000100000005");
    expect(headerHex(Number.MAX_SAFE_INTEGER, binary())).toBe("827f001fffffffffffff");
  });

  it("sets FIN, RSV1, the opcode and the mask bit and key", () => {
    expect(headerHex(5, text(KEY))).toBe("818537fa213d");
    expect(headerHex(3, text(null, false))).toBe("0103");
    expect(headerHex(3, { opcode: Opcode.Continuation, fin: true, rsv1: false, mask: null })).toBe(
      "8003",
    );
    expect(headerHex(1, { opcode: Opcode.Text, fin: false, rsv1: true, mask: null })).toBe("4101");
    expect(headerHex(0, { opcode: Opcode.Close, fin: true, rsv1: false, mask: KEY })).toBe(
      "888037fa213d",
    );
    expect(headerHex(300, binary(KEY))).toBe("82fe012c37fa213d");
    expect(headerHex(70000, binary(KEY))).toBe("82ff000000000001117037fa213d");
  });

  it("writes at an offset and returns the offset past the header", () => {
    const target = new Uint8Array(20).fill(0xee);
    expect(writeHeader(target, 3, 200, binary(KEY))).toBe(3 + 8);
    expect(toHex(target)).toBe("eeeeee82fe00c837fa213deeeeeeeeeeeeeeeeee");
  });
});

describe("encodeFrame", () => {
  it("encodes the section 5.7 examples", () => {
    expect(encodeFrame(Buffer.from("Hello"), text())).toEqual(hex`81 05 48 65 6c 6c 6f`);
    expect(encodeFrame(Buffer.from("Hello"), text(KEY))).toEqual(
      hex`81 85 37 fa 21 3d 7f 9f 4d 51 58`,
    );
    expect(encodeFrame(Buffer.from("Hel"), text(null, false))).toEqual(hex`01 03 48 65 6c`);
    expect(
      encodeFrame(Buffer.from("lo"), { opcode: 0, fin: true, rsv1: false, mask: null }),
    ).toEqual(hex`80 02 6c 6f`);
    expect(
      encodeFrame(Buffer.from("Hello"), {
        opcode: Opcode.Ping,
        fin: true,
        rsv1: false,
        mask: null,
      }),
    ).toEqual(hex`89 05 48 65 6c 6c 6f`);
    expect(
      encodeFrame(Buffer.from("Hello"), { opcode: Opcode.Pong, fin: true, rsv1: false, mask: KEY }),
    ).toEqual(hex`8a 85 37 fa 21 3d 7f 9f 4d 51 58`);
    const b256 = Buffer.alloc(256, 0x5a);
    expect(flat(encodeFrame(b256, binary()))).toEqual(hex`82 7e 01 00 ${b256}`);
    const b64k = Buffer.alloc(65536, 0xa5);
    // Compared with equals(): a 64 KiB toEqual diff is slow.
    const frame64k = flat(encodeFrame(b64k, binary()));
    expect(frame64k.equals(hex`82 7f 00 00 00 00 00 01 00 00 ${b64k}`)).toBe(true);
  });

  it("returns small unmasked frames as one buffer", () => {
    const payload = Buffer.alloc(1024, 1);
    const frame = encodeFrame(payload, binary());
    expect(Buffer.isBuffer(frame)).toBe(true);
    expect(frame).toEqual(Buffer.concat([hex`82 7e 04 00`, payload]));
  });

  it("returns large unmasked frames as [header, payload] without copying the payload", () => {
    const payload = Buffer.alloc(1025, 2);
    const frame = encodeFrame(payload, binary());
    expect(Array.isArray(frame)).toBe(true);
    const [header, body] = frame as [Buffer, Uint8Array];
    expect(header).toEqual(hex`82 7e 04 01`);
    expect(body).toBe(payload);
  });

  it("masks into a copy and never modifies the caller's payload", () => {
    for (const length of [0, 1, 5, 125, 126, 1024, 1025, 65536]) {
      const payload = Buffer.alloc(length, 0x33);
      const frame = encodeFrame(payload, binary(KEY));
      expect(Buffer.isBuffer(frame)).toBe(true);
      expect(payload.every((b) => b === 0x33)).toBe(true);
      const f = frame as Buffer;
      const start = headerLength(length, true);
      expect(f.length).toBe(start + length);
      expect(f.subarray(start - 4, start)).toEqual(KEY);
      for (let i = 0; i < length; i++) {
        if ((f[start + i] ^ KEY[i % 4]) !== 0x33) throw new Error(`byte ${i} of ${length} wrong`);
      }
    }
  });

  it("encodes an empty masked frame as the header and key only", () => {
    expect(encodeFrame(Buffer.alloc(0), text(KEY))).toEqual(hex`81 80 37 fa 21 3d`);
  });
});
