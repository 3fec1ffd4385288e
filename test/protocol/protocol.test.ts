import { constants, inflateRawSync } from "node:zlib";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type ProtocolErrorCode, protocolError } from "../../src/protocol/errors.js";
import { encodeFrame } from "../../src/protocol/frame.js";
import {
  Protocol,
  type ProtocolHandler,
  type ProtocolOptions,
} from "../../src/protocol/protocol.js";
import {
  createProtocol,
  feedSplit,
  hex,
  type InflateMode,
  type ProtocolEvent,
  parseFrames,
  type Recorder,
  toHex,
} from "./recorder.js";

/** The masking key of the RFC 6455 section 5.7 examples. */
const KEY = hex`37 fa 21 3d`;

function server(options: Partial<ProtocolOptions> = {}, inflateMode?: InflateMode) {
  return createProtocol({ role: "server", ...options }, inflateMode);
}

/** A client whose masking keys are pinned, so its output can be compared as hex. */
function client(options: Partial<ProtocolOptions> = {}) {
  return createProtocol({ role: "client", maskKey: () => KEY, ...options });
}

/**
 * One frame with an arbitrary first byte (FIN, RSV1-3, opcode), masked with `key` or unmasked
 * when `key` is null. Used for frames the RFC examples do not spell out.
 */
function frame(
  b0: number,
  payload: Uint8Array | string = "",
  key: Uint8Array | null = KEY,
): Buffer {
  const bytes = typeof payload === "string" ? Buffer.from(payload) : payload;
  const encoded = encodeFrame(bytes, {
    opcode: b0 & 0x0f,
    fin: (b0 & 0x80) !== 0,
    rsv1: (b0 & 0x40) !== 0,
    mask: key,
  });
  const out = Buffer.concat(Array.isArray(encoded) ? encoded : [encoded]);
  out[0] = b0;
  return out;
}

function text(s: string): { type: "message"; hex: string; isBinary: false } {
  return { type: "message", hex: Buffer.from(s).toString("hex"), isBinary: false };
}

function binary(bytes: Uint8Array): { type: "message"; hex: string; isBinary: true } {
  return { type: "message", hex: toHex(bytes), isBinary: true };
}

function output(bytes: Uint8Array): { type: "output"; hex: string } {
  return { type: "output", hex: toHex(bytes) };
}

function bytes(length: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7) & 0xff;
  return out;
}

/**
 * Asserts that the events are exactly a failed connection (section 7.1.7): a close frame with
 * `closeCode` and the error's message as reason, the error, then closeTransport.
 */
function expectFailure(
  events: ProtocolEvent[],
  protocol: Protocol,
  code: ProtocolErrorCode,
  closeCode: number,
): void {
  expect(events.map((e) => e.type)).toEqual(["output", "error", "closeTransport"]);
  const error = events[1] as Extract<ProtocolEvent, { type: "error" }>;
  expect(error).toMatchObject({ code, closeCode });
  const frames = parseFrames(Buffer.from((events[0] as { hex: string }).hex, "hex"));
  expect(frames).toHaveLength(1);
  expect(frames[0]).toMatchObject({ fin: true, rsv1: false, opcode: 0x8 });
  // Clients mask every frame, servers none (section 5.1), even when failing.
  expect(frames[0].masked).toBe(protocol.role === "client");
  expect(frames[0].payload.readUInt16BE(0)).toBe(closeCode);
  expect(frames[0].payload.subarray(2).toString()).toBe(error.message);
  expect(protocol.state).toBe("closed");
  expect(protocol.close.failed).toBe(true);
}

/** Feeds the chunks and asserts the core failed with the given code. */
function expectRejects(
  made: { protocol: Protocol; rec: Recorder },
  chunks: Buffer[],
  code: ProtocolErrorCode,
  closeCode = 1002,
): void {
  for (const chunk of chunks) made.protocol.receive(chunk);
  expectFailure(made.rec.take(), made.protocol, code, closeCode);
  // Nothing is read after a failure.
  made.protocol.receive(hex`81 01 41`);
  made.protocol.receive(frame(0x81, "A"));
  expect(made.rec.take()).toEqual([]);
}

describe("RFC 6455 section 5.7 examples", () => {
  it("a single-frame unmasked text message, received by a client", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`81 05 48 65 6c 6c 6f`);
    expect(rec.take()).toEqual([text("Hello")]);
  });

  it("a single-frame masked text message, received by a server", () => {
    const { protocol, rec } = server();
    protocol.receive(hex`81 85 37 fa 21 3d 7f 9f 4d 51 58`);
    expect(rec.take()).toEqual([text("Hello")]);
  });

  it("a fragmented unmasked text message: nothing until the final fragment", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`01 03 48 65 6c`);
    expect(rec.take()).toEqual([]);
    protocol.receive(hex`80 02 6c 6f`);
    expect(rec.take()).toEqual([text("Hello")]);
  });

  it("an unmasked ping is answered by the masked pong of the example", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`89 05 48 65 6c 6c 6f`);
    expect(rec.take()).toEqual([
      // The pong goes out before the application hears of the ping (section 5.5.2).
      output(hex`8a 85 37 fa 21 3d 7f 9f 4d 51 58`),
      { type: "ping", hex: "48656c6c6f" },
    ]);
  });

  it("a masked ping to a server is answered unmasked", () => {
    const { protocol, rec } = server();
    protocol.receive(hex`89 85 37 fa 21 3d 7f 9f 4d 51 58`);
    expect(rec.take()).toEqual([
      output(hex`8a 05 48 65 6c 6c 6f`),
      { type: "ping", hex: "48656c6c6f" },
    ]);
  });

  it("a masked pong is reported and not answered", () => {
    const { protocol, rec } = server();
    protocol.receive(hex`8a 85 37 fa 21 3d 7f 9f 4d 51 58`);
    expect(rec.take()).toEqual([{ type: "pong", hex: "48656c6c6f" }]);
  });

  it("256 bytes of binary data with a 16-bit length", () => {
    const payload = bytes(256);
    const { protocol, rec } = client();
    protocol.receive(hex`82 7e 01 00 ${payload}`);
    expect(rec.take()).toEqual([binary(payload)]);
  });

  it("64 KiB of binary data with a 64-bit length", () => {
    const payload = bytes(65536);
    const { protocol, rec } = client();
    protocol.receive(hex`82 7f 00 00 00 00 00 01 00 00 ${payload}`);
    expect(rec.take()).toEqual([binary(payload)]);
  });

  it("the same messages sent by a server", () => {
    const { protocol, rec } = server();
    expect(protocol.sendMessage(Buffer.from("Hello"), false)).toBe(true);
    protocol.sendFragment(Buffer.from("Hel"), false, false);
    protocol.sendFragment(Buffer.from("lo"), false, true);
    protocol.ping(Buffer.from("Hello"));
    const b256 = bytes(256);
    protocol.sendMessage(b256, true);
    const b64k = bytes(65536);
    protocol.sendMessage(b64k, true);
    expect(rec.outputHex()).toBe(
      toHex(
        hex`81 05 48 65 6c 6c 6f  01 03 48 65 6c  80 02 6c 6f  89 05 48 65 6c 6c 6f
            82 7e 01 00 ${b256}  82 7f 00 00 00 00 00 01 00 00 ${b64k}`,
      ),
    );
  });

  it("the same messages sent by a client, masked with the injected key", () => {
    const { protocol, rec } = client();
    protocol.sendMessage(Buffer.from("Hello"), false);
    protocol.sendFragment(Buffer.from("Hel"), false, false);
    protocol.sendFragment(Buffer.from("lo"), false, true);
    protocol.pong(Buffer.from("Hello"));
    expect(rec.take()).toEqual([
      output(hex`81 85 37 fa 21 3d 7f 9f 4d 51 58`),
      output(hex`01 83 37 fa 21 3d 7f 9f 4d`),
      output(hex`80 82 37 fa 21 3d 5b 95`),
      output(hex`8a 85 37 fa 21 3d 7f 9f 4d 51 58`),
    ]);
  });
});

describe("client masking (section 5.3)", () => {
  it("draws a fresh key for every frame", () => {
    const keys = [hex`01 02 03 04`, hex`a0 b0 c0 d0`, hex`00 00 00 00`];
    let calls = 0;
    const { protocol, rec } = createProtocol({ role: "client", maskKey: () => keys[calls++ % 3] });
    protocol.sendMessage(hex`10 20 30 40 50`, true);
    protocol.ping(hex`ff`);
    protocol.sendClose(1000);
    expect(calls).toBe(3);
    expect(rec.take()).toEqual([
      output(hex`82 85 01 02 03 04 11 22 33 44 51`),
      output(hex`89 81 a0 b0 c0 d0 5f`),
      output(hex`88 82 00 00 00 00 03 e8`),
    ]);
  });

  it("does not modify the caller's payload", () => {
    const { protocol } = client();
    const payload = Buffer.from("Hello");
    protocol.sendMessage(payload, false);
    expect(payload.toString()).toBe("Hello");
  });

  it("masks with a random key by default, and never masks as a server", () => {
    const { protocol, rec } = createProtocol({ role: "client" });
    protocol.sendMessage(Buffer.from("Hello, Switchboard"), false);
    const [sent] = parseFrames(Buffer.from(rec.outputHex(), "hex"));
    expect(sent.masked).toBe(true);
    expect(sent.payload.toString()).toBe("Hello, Switchboard");

    const srv = server();
    srv.protocol.sendMessage(Buffer.from("x"), false);
    expect(srv.rec.outputHex()).toBe("810178");
  });
});

describe("framing rules (section 5.2)", () => {
  it("rejects RSV2 and RSV3 with 1002", () => {
    expectRejects(client(), [hex`a1 01 41`], "WS_ERR_RESERVED_BITS");
    expectRejects(client(), [hex`91 01 41`], "WS_ERR_RESERVED_BITS");
    expectRejects(server(), [frame(0xb1, "A")], "WS_ERR_RESERVED_BITS");
    // Negotiating permessage-deflate only gives meaning to RSV1 (RFC 7692 section 6).
    expectRejects(client({ compression: true }), [hex`e1 01 41`], "WS_ERR_RESERVED_BITS");
  });

  it("rejects RSV1 when no extension was negotiated", () => {
    expectRejects(client(), [hex`c1 01 41`], "WS_ERR_RESERVED_BITS");
    expectRejects(server(), [frame(0xc2, "A")], "WS_ERR_RESERVED_BITS");
  });

  it("rejects RSV1 on a continuation frame even with compression (RFC 7692 section 6.1)", () => {
    expectRejects(
      client({ compression: true }),
      [hex`01 01 41`, hex`c0 01 42`],
      "WS_ERR_RESERVED_BITS",
    );
    const made = client({ compression: true });
    made.protocol.receive(hex`41 01 aa`);
    expect(made.rec.take()).toEqual([{ type: "inflate", hex: "aa", fin: false }]);
    made.protocol.inflated([Buffer.from("A")]);
    expectRejects(made, [hex`c0 01 bb`], "WS_ERR_RESERVED_BITS");
  });

  it("rejects RSV1 on control frames, with or without compression", () => {
    for (const b0 of [0xc8, 0xc9, 0xca]) {
      expectRejects(client(), [hex`${b0.toString(16)} 00`], "WS_ERR_RESERVED_BITS");
      expectRejects(
        client({ compression: true }),
        [hex`${b0.toString(16)} 00`],
        "WS_ERR_RESERVED_BITS",
      );
    }
  });

  it.each([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])("rejects reserved opcode %d with 1002", (op) => {
    expectRejects(client(), [Buffer.from([0x80 | op, 0])], "WS_ERR_RESERVED_OPCODE");
    expectRejects(server(), [frame(0x80 | op, "x")], "WS_ERR_RESERVED_OPCODE");
    // Also in the middle of a fragmented message, and without FIN.
    expectRejects(client(), [hex`01 01 41`, Buffer.from([op, 0])], "WS_ERR_RESERVED_OPCODE");
  });

  it("rejects unmasked frames sent to a server (section 5.1)", () => {
    expectRejects(server(), [hex`81 05 48 65 6c 6c 6f`], "WS_ERR_UNMASKED_FRAME");
    expectRejects(server(), [hex`89 00`], "WS_ERR_UNMASKED_FRAME");
    expectRejects(server(), [hex`88 02 03 e8`], "WS_ERR_UNMASKED_FRAME");
  });

  it("rejects masked frames sent to a client (section 5.1)", () => {
    expectRejects(client(), [hex`81 85 37 fa 21 3d 7f 9f 4d 51 58`], "WS_ERR_MASKED_FRAME");
    expectRejects(client(), [hex`8a 80 00 00 00 00`], "WS_ERR_MASKED_FRAME");
  });

  it("rejects control frames over 125 bytes from the header alone (section 5.5)", () => {
    // The 126-byte payload never arrives: the header is enough to refuse it.
    expectRejects(client(), [hex`89 7e 00 7e`], "WS_ERR_CONTROL_TOO_LONG");
    expectRejects(client(), [hex`8a 7f 00 00 00 00 00 00 01 00`], "WS_ERR_CONTROL_TOO_LONG");
    expectRejects(server(), [frame(0x88, bytes(126))], "WS_ERR_CONTROL_TOO_LONG");
  });

  it("accepts a 125-byte control frame", () => {
    const payload = bytes(125);
    const { protocol, rec } = client();
    protocol.receive(hex`89 7d ${payload}`);
    expect(rec.appEvents()).toEqual([{ type: "ping", hex: toHex(payload) }]);
    const [pong] = parseFrames(Buffer.from(rec.outputHex(), "hex"));
    expect(pong).toMatchObject({ opcode: 0xa, fin: true, payload });
  });

  it("rejects fragmented control frames (section 5.5)", () => {
    expectRejects(client(), [hex`09 00`], "WS_ERR_CONTROL_FRAGMENTED");
    expectRejects(client(), [hex`0a 00`], "WS_ERR_CONTROL_FRAGMENTED");
    expectRejects(server(), [frame(0x08, hex`03 e8`)], "WS_ERR_CONTROL_FRAGMENTED");
  });

  it("rejects a continuation frame without a message to continue (section 5.4)", () => {
    expectRejects(client(), [hex`80 00`], "WS_ERR_UNEXPECTED_CONTINUATION");
    expectRejects(client(), [hex`00 01 41`], "WS_ERR_UNEXPECTED_CONTINUATION");
    const made = client();
    made.protocol.receive(hex`81 01 41`);
    expect(made.rec.take()).toEqual([text("A")]);
    expectRejects(made, [hex`80 01 42`], "WS_ERR_UNEXPECTED_CONTINUATION");
  });

  it("rejects a new data frame inside a fragmented message (section 5.4)", () => {
    expectRejects(client(), [hex`01 01 41`, hex`81 01 42`], "WS_ERR_EXPECTED_CONTINUATION");
    expectRejects(client(), [hex`02 01 41`, hex`02 01 42`], "WS_ERR_EXPECTED_CONTINUATION");
    // Also after a control frame passed between the fragments.
    const made = server();
    made.protocol.receive(Buffer.concat([frame(0x01, "A"), frame(0x89)]));
    expect(made.rec.take()).toEqual([output(hex`8a 00`), { type: "ping", hex: "" }]);
    expectRejects(made, [frame(0x82, "B")], "WS_ERR_EXPECTED_CONTINUATION");
  });

  it("rejects a 64-bit length with its most significant bit set", () => {
    expectRejects(client(), [hex`82 7f 80 00 00 00 00 00 00 01`], "WS_ERR_LENGTH_MSB_SET");
    expectRejects(client(), [hex`82 7f ff ff ff ff ff ff ff ff`], "WS_ERR_LENGTH_MSB_SET");
  });

  it("allows control frames between the fragments of a message (section 5.4)", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`01 03 48 65 6c  89 02 70 31  8a 00  00 00  89 00  80 02 6c 6f`);
    expect(rec.take()).toEqual([
      output(hex`8a 82 37 fa 21 3d 47 cb`),
      { type: "ping", hex: "7031" },
      { type: "pong", hex: "" },
      output(hex`8a 80 37 fa 21 3d`),
      { type: "ping", hex: "" },
      text("Hello"),
    ]);
  });

  it("delivers empty messages", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`81 00  82 00  01 00 80 00`);
    expect(rec.take()).toEqual([text(""), binary(hex``), text("")]);
  });

  it("ignores an empty chunk", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`81`);
    protocol.receive(hex``);
    protocol.receive(hex`01 41`);
    expect(rec.take()).toEqual([text("A")]);
  });
});

describe("close frames received (sections 5.5.1 and 7.4)", () => {
  it("rejects a close payload of one byte", () => {
    expectRejects(client(), [hex`88 01 03`], "WS_ERR_INVALID_CLOSE_PAYLOAD");
    expectRejects(server(), [frame(0x88, hex`03`)], "WS_ERR_INVALID_CLOSE_PAYLOAD");
  });

  it.each([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])(
    "rejects close code %d with 1002",
    (code) => {
      const payload = Buffer.alloc(2);
      payload.writeUInt16BE(code);
      expectRejects(client(), [hex`88 02 ${payload}`], "WS_ERR_INVALID_CLOSE_CODE");
      expectRejects(server(), [frame(0x88, payload)], "WS_ERR_INVALID_CLOSE_CODE");
    },
  );

  it.each([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])(
    "accepts close code %d and echoes it",
    (code) => {
      const codeBytes = Buffer.alloc(2);
      codeBytes.writeUInt16BE(code);
      const { protocol, rec } = server();
      protocol.receive(frame(0x88, Buffer.concat([codeBytes, Buffer.from("ok")])));
      expect(rec.take()).toEqual([
        // The echo carries the code and no reason.
        output(hex`88 02 ${codeBytes}`),
        { type: "closeReceived", code, reason: "ok" },
        { type: "closeTransport" },
      ]);
      expect(protocol.close.received).toEqual({ code, reason: "ok" });
      expect(protocol.close.sent).toEqual({ code, reason: "" });
    },
  );

  it("rejects a close reason that is not UTF-8 with 1007", () => {
    expectRejects(client(), [hex`88 04 03 e8 c3 28`], "WS_ERR_INVALID_UTF8", 1007);
    expectRejects(client(), [hex`88 05 03 e8 ed a0 80`], "WS_ERR_INVALID_UTF8", 1007);
    // A reason cut inside a character is invalid too.
    expectRejects(server(), [frame(0x88, hex`03 e8 e2 82`)], "WS_ERR_INVALID_UTF8", 1007);
  });

  it("decodes a UTF-8 reason", () => {
    const reason = "héllo €😀";
    const { protocol, rec } = client();
    const payload = Buffer.concat([hex`0f a0`, Buffer.from(reason)]);
    protocol.receive(hex`88 ${payload.length.toString(16).padStart(2, "0")} ${payload}`);
    expect(rec.appEvents()).toEqual([{ type: "closeReceived", code: 4000, reason }]);
  });

  it("reports 1005 for an empty close frame and echoes an empty one", () => {
    const { protocol, rec } = server();
    protocol.receive(frame(0x88));
    expect(rec.take()).toEqual([
      output(hex`88 00`),
      { type: "closeReceived", code: 1005, reason: "" },
      { type: "closeTransport" },
    ]);
    expect(protocol.transportClosed()).toEqual({ code: 1005, reason: "", wasClean: true });
  });
});

describe("limits", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("refuses a message over maxMessageSize from its header, before any payload", () => {
    const { protocol, rec } = client({ maxMessageSize: 10 });
    protocol.receive(hex`81 0a 30 31 32 33 34 35 36 37 38 39`);
    expect(rec.take()).toEqual([text("0123456789")]);
    expectRejects({ protocol, rec }, [hex`82 0b`], "WS_ERR_MESSAGE_TOO_BIG", 1009);
  });

  it("counts every fragment of a message against maxMessageSize, not control frames", () => {
    const ok = client({ maxMessageSize: 10 });
    ok.protocol.receive(hex`02 06 00 01 02 03 04 05  89 05 68 65 6c 6c 6f  80 04 06 07 08 09`);
    expect(ok.rec.appEvents()).toEqual([
      { type: "ping", hex: "68656c6c6f" },
      binary(hex`00 01 02 03 04 05 06 07 08 09`),
    ]);
    // The limit restarts with each message.
    ok.protocol.receive(hex`82 0a ${bytes(10)}`);
    expect(ok.rec.appEvents().at(-1)).toEqual(binary(bytes(10)));

    const tooBig = client({ maxMessageSize: 10 });
    tooBig.protocol.receive(hex`01 06 61 62 63 64 65 66`);
    // The second header says 5 more bytes: refused before they arrive.
    expectRejects(tooBig, [hex`80 05`], "WS_ERR_MESSAGE_TOO_BIG", 1009);
  });

  it("refuses a 2^40-byte frame at once, allocating nothing for it", () => {
    const spies = [
      vi.spyOn(Buffer, "alloc"),
      vi.spyOn(Buffer, "allocUnsafe"),
      vi.spyOn(Buffer, "allocUnsafeSlow"),
    ];
    const { protocol, rec } = server();
    // Header, then a mask key: 2^40 bytes are announced and none follow.
    protocol.receive(hex`82 ff 00 00 01 00 00 00 00 00 37 fa 21 3d`);
    expectFailure(rec.take(), protocol, "WS_ERR_MESSAGE_TOO_BIG", 1009);
    for (const spy of spies) {
      for (const [size] of spy.mock.calls) expect(size).toBeLessThan(1024);
    }
  });

  it("holds the default limit of 64 MiB", () => {
    const atLimit = server();
    atLimit.protocol.receive(hex`82 ff 00 00 00 00 04 00 00 00 37 fa 21 3d`);
    expect(atLimit.rec.take()).toEqual([]);
    expectRejects(
      server(),
      [hex`82 ff 00 00 00 00 04 00 00 01 37 fa 21 3d`],
      "WS_ERR_MESSAGE_TOO_BIG",
      1009,
    );
  });

  it("refuses a message spanning more than maxFragments frames, counting per message", () => {
    const { protocol, rec } = client({ maxFragments: 3 });
    protocol.receive(hex`01 01 61  89 00  00 01 62  80 01 63`);
    expect(rec.appEvents()).toEqual([{ type: "ping", hex: "" }, text("abc")]);
    rec.take();
    protocol.receive(hex`82 01 00`);
    expect(rec.take()).toEqual([binary(hex`00`)]);
    protocol.receive(hex`01 01 61  00 01 62  00 00`);
    expect(rec.take()).toEqual([]);
    expectRejects({ protocol, rec }, [hex`80 01 64`], "WS_ERR_TOO_MANY_FRAGMENTS", 1009);
  });

  it("refuses input piling up while a frame is inflated beyond maxBufferedBytes", () => {
    const { protocol, rec } = client({ compression: true, maxBufferedBytes: 20 });
    protocol.receive(hex`c1 03 aa bb cc`);
    expect(rec.take()).toEqual([{ type: "inflate", hex: "aabbcc", fin: true }]);
    protocol.receive(bytes(12));
    protocol.receive(bytes(8));
    expect(rec.take()).toEqual([]); // exactly 20 bytes waiting: still allowed
    protocol.receive(hex`00`);
    expectFailure(rec.take(), protocol, "WS_ERR_BUFFER_LIMIT", 1009);
    // The answer to the abandoned request changes nothing.
    protocol.inflated([Buffer.from("late")]);
    expect(rec.take()).toEqual([]);
  });

  it("counts the inflated part of the message against maxBufferedBytes", () => {
    const { protocol, rec } = client({ compression: true, maxBufferedBytes: 20 });
    protocol.receive(hex`42 01 aa`);
    rec.take();
    protocol.inflated([bytes(15)]);
    protocol.receive(hex`80 01 bb`);
    expect(rec.take()).toEqual([{ type: "inflate", hex: "bb", fin: true }]);
    protocol.receive(hex`81 01 41`); // 15 inflated + 3 waiting: allowed
    expect(rec.take()).toEqual([]);
    protocol.receive(hex`81 01 42`); // 15 + 6 > 20
    expectFailure(rec.take(), protocol, "WS_ERR_BUFFER_LIMIT", 1009);
  });

  it("maxBufferedBytes also bounds an uncompressed message being assembled (as documented)", () => {
    // ProtocolOptions.maxBufferedBytes: "Most bytes held for the peer at once: the message
    // being assembled plus input waiting while a compressed frame is inflated."
    const { protocol, rec } = client({ maxMessageSize: 1000, maxBufferedBytes: 10 });
    protocol.receive(hex`02 08 ${bytes(8)}`);
    protocol.receive(hex`80 08 ${bytes(8)}`);
    expectFailure(rec.take(), protocol, "WS_ERR_BUFFER_LIMIT", 1009);
  });
});

describe("inflating compressed messages (RFC 7692)", () => {
  it("hands compressed payloads out and delivers what comes back", () => {
    const { protocol, rec } = server({ compression: true });
    protocol.receive(frame(0xc1, hex`f2 48 cd c9 c9 07 00`));
    expect(rec.take()).toEqual([{ type: "inflate", hex: "f248cdc9c90700", fin: true }]);
    expect(protocol.inflating).toBe(true);
    expect(protocol.inflateBudget).toBe(64 * 1024 * 1024);
    protocol.inflated([Buffer.from("Hel"), Buffer.from("lo")]);
    expect(rec.take()).toEqual([text("Hello")]);
    expect(protocol.inflating).toBe(false);
  });

  it("inflates each frame of a fragmented message; RSV1 on the first frame covers all", () => {
    const { protocol, rec } = client({ compression: true });
    protocol.receive(hex`42 02 aa bb`);
    expect(rec.take()).toEqual([{ type: "inflate", hex: "aabb", fin: false }]);
    protocol.inflated([hex`01 02`]);
    protocol.receive(hex`89 00`);
    protocol.receive(hex`80 01 cc`);
    expect(rec.take()).toEqual([
      output(hex`8a 80 37 fa 21 3d`),
      { type: "ping", hex: "" },
      { type: "inflate", hex: "cc", fin: true },
    ]);
    expect(protocol.inflateBudget).toBe(64 * 1024 * 1024 - 2);
    protocol.inflated([hex`03`, hex``]);
    expect(rec.take()).toEqual([binary(hex`01 02 03`)]);
    // An uncompressed message on a compressing connection is not inflated.
    protocol.receive(hex`81 01 41`);
    expect(rec.take()).toEqual([text("A")]);
  });

  it("holds input that arrives while inflating and processes it in order afterwards", () => {
    const { protocol, rec } = client({ compression: true });
    protocol.receive(hex`c1 01 aa  81 01 42`);
    protocol.receive(hex`89 00 81 01 43`);
    expect(rec.take()).toEqual([{ type: "inflate", hex: "aa", fin: true }]);
    protocol.inflated([Buffer.from("A")]);
    expect(rec.take()).toEqual([
      text("A"),
      text("B"),
      output(hex`8a 80 37 fa 21 3d`),
      { type: "ping", hex: "" },
      text("C"),
    ]);
  });

  it("processes every chunk that arrived while inflating, even when one ends inside a frame", () => {
    // Regression: two chunks arrive while the first message is inflated; the first ends inside
    // the next frame's payload. `resumePending` only loops while the state is READ_HEADER, so it
    // stopped in READ_PAYLOAD and left the second chunk behind: the frame never completed and the
    // next chunk was read as the rest of its payload.
    const { protocol, rec } = client({ compression: true });
    protocol.receive(hex`c1 02 aa bb`);
    protocol.receive(hex`82 04 01 02`);
    protocol.receive(hex`03 04`);
    rec.take();
    protocol.inflated([Buffer.from("AB")]);
    expect(rec.take()).toEqual([text("AB"), binary(hex`01 02 03 04`)]);
    // And the next frame is a frame of its own, not the rest of an old payload.
    protocol.receive(hex`81 01 43`);
    expect(rec.take()).toEqual([text("C")]);
  });

  it("an inflater that answers synchronously handles thousands of frames in one chunk", () => {
    // Regression: the core supports synchronous answers ("Set aside first, so an inflater that
    // answers synchronously resumes in order"), but each answer nests inflated -> resumePending
    // -> parse -> handler.inflate on the stack, so ~3000 empty compressed frames (18 KB) threw
    // RangeError (stack overflow) out of receive().
    const { protocol, rec } = server({ compression: true }, "identity-sync");
    const count = 5000;
    const one = frame(0xc1, "", hex`00 00 00 00`);
    expect(() => protocol.receive(Buffer.concat(new Array(count).fill(one)))).not.toThrow();
    expect(rec.events.filter((e) => e.type === "message")).toHaveLength(count);
  });

  it("fails with 1007 when the inflated text is not UTF-8", () => {
    const { protocol, rec } = client({ compression: true });
    protocol.receive(hex`c1 01 aa`);
    rec.take();
    protocol.inflated([hex`41 ff`]);
    expectFailure(rec.take(), protocol, "WS_ERR_INVALID_UTF8", 1007);

    const cut = client({ compression: true });
    cut.protocol.receive(hex`c1 01 aa`);
    cut.rec.take();
    cut.protocol.inflated([hex`41 e2 82`]);
    expectFailure(cut.rec.take(), cut.protocol, "WS_ERR_INVALID_UTF8", 1007);
  });

  it("fails with 1009 when the inflated message passes maxMessageSize", () => {
    const { protocol, rec } = client({ compression: true, maxMessageSize: 8 });
    protocol.receive(hex`42 01 aa`);
    rec.take();
    expect(protocol.inflateBudget).toBe(8);
    protocol.inflated([bytes(5)]);
    expect(protocol.inflateBudget).toBe(3);
    protocol.receive(hex`80 01 bb`);
    rec.take();
    protocol.inflated([bytes(3), bytes(1)]);
    expectFailure(rec.take(), protocol, "WS_ERR_MESSAGE_TOO_BIG", 1009);
  });

  it("fails with the inflater's error", () => {
    const { protocol, rec } = server({ compression: true });
    protocol.receive(frame(0xc1, "x"));
    rec.take();
    protocol.inflateFailed(protocolError("WS_ERR_INVALID_COMPRESSED_DATA", "bad stream"));
    expectFailure(rec.take(), protocol, "WS_ERR_INVALID_COMPRESSED_DATA", 1007);
  });

  it("ignores inflate answers when nothing is being inflated", () => {
    const { protocol, rec } = client({ compression: true });
    protocol.inflated([Buffer.from("stray")]);
    protocol.inflateFailed(protocolError("WS_ERR_INVALID_COMPRESSED_DATA", "stray"));
    expect(rec.take()).toEqual([]);
    expect(protocol.state).toBe("open");
  });
});

describe("UTF-8 fails fast (sections 5.6 and 8.1)", () => {
  /** Feeds one byte at a time; returns the index of the byte after which the error appeared. */
  function errorIndex(made: { protocol: Protocol; rec: Recorder }, input: Buffer): number {
    let at = -1;
    for (let i = 0; i < input.length; i++) {
      made.protocol.receive(Buffer.from(input.subarray(i, i + 1)));
      const failed = made.rec.events.some((e) => e.type === "error");
      if (failed && at === -1) at = i;
    }
    return at;
  }

  it("fails at the byte that makes a single frame invalid, byte by byte (client)", () => {
    const input = hex`81 0c 48 65 6c 6c 6f 20 ed a0 80 77 6f 72`;
    const made = client();
    const seen: number[] = [];
    for (let i = 0; i < input.length; i++) {
      made.protocol.receive(Buffer.from(input.subarray(i, i + 1)));
      seen.push(made.rec.events.length);
    }
    // Nothing until A0 (index 9, the byte that turns ED into a surrogate), then the failure
    // (close frame, error, closeTransport) and nothing after it.
    expect(seen).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3]);
    expectFailure(made.rec.take(), made.protocol, "WS_ERR_INVALID_UTF8", 1007);
  });

  it("fails at the bad byte of a masked frame fed byte by byte (server)", () => {
    const payload = hex`48 65 6c 6c 6f 20 f4 90 80 80 77`;
    const input = frame(0x81, payload);
    const made = server();
    // Header 2 + key 4, then F4 90: the 90 can no longer be below U+10FFFF.
    expect(errorIndex(made, input)).toBe(2 + 4 + 7);
    expectFailure(made.rec.take(), made.protocol, "WS_ERR_INVALID_UTF8", 1007);
  });

  it("fails inside a non-final fragment, without waiting for the message to end", () => {
    const made = client();
    expect(errorIndex(made, hex`01 04 41 42 ff 43`)).toBe(4);
    expectFailure(made.rec.take(), made.protocol, "WS_ERR_INVALID_UTF8", 1007);
  });

  it("carries a character across fragments and fails at the first byte that breaks it", () => {
    const made = client();
    // E2 82 ends the first fragment; a ping passes; the continuation starts with 41.
    const input = hex`01 03 48 e2 82  89 00  80 02 41 42`;
    expect(errorIndex(made, input)).toBe(9);
    const events = made.rec.take();
    expect(events.slice(0, 2)).toEqual([output(hex`8a 80 37 fa 21 3d`), { type: "ping", hex: "" }]);
    expectFailure(events.slice(2), made.protocol, "WS_ERR_INVALID_UTF8", 1007);
  });

  it("fails when the final frame ends inside a character", () => {
    const made = client();
    expect(errorIndex(made, hex`01 02 41 e2  80 00`)).toBe(5);
    expectFailure(made.rec.take(), made.protocol, "WS_ERR_INVALID_UTF8", 1007);
    const single = client();
    expect(errorIndex(single, hex`81 03 41 f0 9f`)).toBe(4);
  });

  it("fails on a whole invalid frame received at once", () => {
    expectRejects(client(), [hex`81 02 c0 af`], "WS_ERR_INVALID_UTF8", 1007);
    expectRejects(server(), [frame(0x81, hex`41 80`)], "WS_ERR_INVALID_UTF8", 1007);
  });

  it("accepts characters split across fragments and chunks", () => {
    const input = hex`01 01 e2  00 01 82  80 01 ac  01 02 f0 9f  80 02 98 80`;
    for (let cut = 0; cut <= input.length; cut++) {
      const { protocol, rec } = client();
      feedSplit(protocol, input, [cut]);
      expect(rec.take()).toEqual([text("€"), text("😀")]);
    }
  });

  it("does not check binary messages", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`82 02 ff fe`);
    expect(rec.take()).toEqual([binary(hex`ff fe`)]);
  });
});

describe("closing handshake (section 7)", () => {
  it("server closes first: close frame out, reply in, then the server closes TCP", () => {
    const { protocol, rec } = server();
    expect(protocol.sendClose(1000, "bye")).toBe(true);
    expect(rec.take()).toEqual([output(hex`88 05 03 e8 62 79 65`)]);
    expect(protocol.state).toBe("closing");
    expect(protocol.close.initiator).toBe("local");
    expect(protocol.close.sent).toEqual({ code: 1000, reason: "bye" });

    protocol.receive(frame(0x88, hex`03 e8`));
    expect(rec.take()).toEqual([
      { type: "closeReceived", code: 1000, reason: "" },
      // Section 7.1.1: the server closes the TCP connection first.
      { type: "closeTransport" },
    ]);
    expect(protocol.state).toBe("closed");
    expect(protocol.close.handshakeComplete).toBe(true);
    expect(protocol.transportClosed()).toEqual({ code: 1000, reason: "", wasClean: true });
  });

  it("client closes first: it does not close TCP but waits for the server to", () => {
    const { protocol, rec } = client();
    expect(protocol.sendClose(1000, "bye")).toBe(true);
    expect(rec.take()).toEqual([output(hex`88 85 37 fa 21 3d 34 12 43 44 52`)]);
    protocol.receive(hex`88 02 03 e8`);
    expect(rec.take()).toEqual([{ type: "closeReceived", code: 1000, reason: "" }]);
    expect(protocol.state).toBe("closed");
    expect(protocol.transportClosed()).toEqual({ code: 1000, reason: "", wasClean: true });
    expect(protocol.close.transportClosed).toBe(true);
  });

  it("the peer closes a server: the code is echoed and TCP closed", () => {
    const { protocol, rec } = server();
    protocol.receive(frame(0x88, hex`03 e9 67 6f 69 6e 67`));
    expect(rec.take()).toEqual([
      output(hex`88 02 03 e9`),
      { type: "closeReceived", code: 1001, reason: "going" },
      { type: "closeTransport" },
    ]);
    expect(protocol.close.initiator).toBe("remote");
    expect(protocol.close.received).toEqual({ code: 1001, reason: "going" });
    expect(protocol.transportClosed()).toEqual({ code: 1001, reason: "going", wasClean: true });
  });

  it("holds the reply while messages are being prepared, sends them, then replies (5.5.1)", () => {
    const { protocol, rec } = server();
    rec.holdCloseReply = true;
    protocol.receive(frame(0x88, hex`03 e8`));
    // Nothing is written yet, nothing more is read, and the close is reported.
    expect(rec.take()).toEqual([{ type: "closeReceived", code: 1000, reason: "" }]);
    expect(protocol.closeReplyOwed).toBe(true);
    protocol.receive(frame(0x81, hex`68 69`));
    expect(rec.take()).toEqual([]);
    // What was being prepared still goes out, before the reply.
    expect(protocol.sendMessage(Buffer.from("late"), false)).toBe(true);
    expect(rec.take()).toEqual([output(hex`81 04 6c 61 74 65`)]);
    protocol.replyClose();
    expect(rec.take()).toEqual([output(hex`88 02 03 e8`), { type: "closeTransport" }]);
    expect(protocol.closeReplyOwed).toBe(false);
    expect(protocol.state).toBe("closed");
    expect(protocol.sendMessage(Buffer.from("after"), false)).toBe(false);
    // A second call does nothing.
    protocol.replyClose();
    expect(rec.take()).toEqual([]);
  });

  it("the peer closes a client: the echo is masked and the client waits", () => {
    const { protocol, rec } = client();
    protocol.receive(hex`88 02 03 e9`);
    expect(rec.take()).toEqual([
      output(hex`88 82 37 fa 21 3d 34 13`),
      { type: "closeReceived", code: 1001, reason: "" },
    ]);
    expect(protocol.state).toBe("closed");
  });

  it("an empty close frame from us reads as 1005", () => {
    const { protocol, rec } = server();
    protocol.sendClose();
    expect(rec.take()).toEqual([output(hex`88 00`)]);
    expect(protocol.close.sent).toEqual({ code: 1005, reason: "" });
  });

  it("reports 1006 when the transport closes without a close frame", () => {
    const { protocol, rec } = server();
    expect(protocol.transportClosed()).toEqual({ code: 1006, reason: "", wasClean: false });
    expect(protocol.state).toBe("closed");
    protocol.receive(frame(0x81, "late"));
    expect(protocol.sendMessage(Buffer.from("x"), false)).toBe(false);
    expect(rec.take()).toEqual([]);
    // Reporting it twice is harmless.
    expect(protocol.transportClosed().code).toBe(1006);
  });

  it("reports 1006 when our close frame was never answered", () => {
    const { protocol } = client();
    protocol.sendClose(1000);
    expect(protocol.transportClosed()).toEqual({ code: 1006, reason: "", wasClean: false });
  });

  it("reports 1006 and an unclean close after a failure", () => {
    const { protocol } = client();
    protocol.receive(hex`83 00`);
    expect(protocol.transportClosed()).toEqual({ code: 1006, reason: "", wasClean: false });
  });

  it("sends no pong after our close frame (section 5.5.1)", () => {
    const { protocol, rec } = server();
    protocol.sendClose(1000);
    rec.take();
    protocol.receive(frame(0x89, "are you there"));
    protocol.receive(frame(0x8a, "pong"));
    expect(rec.take()).toEqual([]);
    expect(protocol.ping()).toBe(false);
    expect(protocol.pong()).toBe(false);
    expect(rec.take()).toEqual([]);
  });

  it("still delivers data the peer sent before it saw our close frame", () => {
    const { protocol, rec } = server();
    protocol.sendClose(1000);
    rec.take();
    protocol.receive(Buffer.concat([frame(0x81, "in flight"), frame(0x88, hex`03 e8`)]));
    expect(rec.take()).toEqual([
      text("in flight"),
      { type: "closeReceived", code: 1000, reason: "" },
      { type: "closeTransport" },
    ]);
  });

  it("ignores everything after the peer's close frame, in the same chunk and later", () => {
    const { protocol, rec } = server();
    protocol.receive(
      Buffer.concat([frame(0x88, hex`03 e8`), frame(0x81, "after"), frame(0x89, "ping")]),
    );
    protocol.receive(frame(0x81, "later"));
    protocol.receive(frame(0x88, hex`03 e9`));
    expect(rec.take()).toEqual([
      output(hex`88 02 03 e8`),
      { type: "closeReceived", code: 1000, reason: "" },
      { type: "closeTransport" },
    ]);
    expect(protocol.sendClose(1000)).toBe(false);
    expect(protocol.sendMessage(Buffer.from("x"), false)).toBe(false);
    expect(rec.take()).toEqual([]);
  });

  it("a failure after our close frame sends no second close frame", () => {
    const { protocol, rec } = server();
    protocol.sendClose(4000, "done");
    rec.take();
    protocol.receive(frame(0x83));
    expect(rec.take()).toEqual([
      {
        type: "error",
        code: "WS_ERR_RESERVED_OPCODE",
        closeCode: 1002,
        message: expect.any(String),
      },
      { type: "closeTransport" },
    ]);
    expect(protocol.close.sent).toEqual({ code: 4000, reason: "done" });
    expect(protocol.state).toBe("closed");
  });

  it("an invalid close frame in reply to ours fails without a second close frame", () => {
    const { protocol, rec } = client();
    protocol.sendClose(1000);
    rec.take();
    protocol.receive(hex`88 02 03 ed`);
    expect(rec.take().map((e) => e.type)).toEqual(["error", "closeTransport"]);
    expect(protocol.close.received).toBe(null);
  });
});

describe("sending API", () => {
  it.each([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 1000.5])(
    "sendClose(%d) throws RangeError and sends nothing",
    (code) => {
      const { protocol, rec } = server();
      expect(() => protocol.sendClose(code)).toThrow(RangeError);
      expect(rec.take()).toEqual([]);
      expect(protocol.state).toBe("open");
    },
  );

  it("limits close reasons to 123 bytes, counted in UTF-8", () => {
    const { protocol, rec } = server();
    expect(() => protocol.sendClose(1000, "x".repeat(124))).toThrow(RangeError);
    expect(() => protocol.sendClose(1000, "é".repeat(62))).toThrow(RangeError);
    expect(() => protocol.sendClose(undefined, "why")).toThrow(TypeError);
    expect(rec.take()).toEqual([]);
    expect(protocol.sendClose(1000, "x".repeat(123))).toBe(true);
    expect(rec.take()).toEqual([output(hex`88 7d 03 e8 ${"78".repeat(123)}`)]);
  });

  it("limits ping and pong payloads to 125 bytes", () => {
    const { protocol, rec } = server();
    expect(() => protocol.ping(bytes(126))).toThrow(RangeError);
    expect(() => protocol.pong(bytes(126))).toThrow(RangeError);
    expect(rec.take()).toEqual([]);
    expect(protocol.ping(bytes(125))).toBe(true);
    expect(protocol.ping()).toBe(true);
    expect(rec.take()).toEqual([output(hex`89 7d ${bytes(125)}`), output(hex`89 00`)]);
  });

  it("returns false for everything sent after close", () => {
    for (const closeIt of [
      (p: Protocol) => p.sendClose(1000),
      (p: Protocol) => p.receive(frame(0x88)),
      (p: Protocol) => p.transportClosed(),
    ]) {
      const { protocol, rec } = server();
      closeIt(protocol);
      rec.take();
      expect(protocol.sendMessage(Buffer.from("x"), false)).toBe(false);
      expect(protocol.sendFragment(Buffer.from("x"), true, false)).toBe(false);
      expect(protocol.ping()).toBe(false);
      expect(protocol.pong()).toBe(false);
      expect(protocol.sendClose(1000)).toBe(false);
      expect(rec.take()).toEqual([]);
    }
  });

  it("sets RSV1 on the first frame of a compressed message only", () => {
    const { protocol, rec } = server({ compression: true });
    protocol.sendMessage(hex`aa`, true, true);
    protocol.sendFragment(hex`bb`, false, false, true);
    protocol.sendFragment(hex`cc`, false, false, true);
    protocol.sendFragment(hex`dd`, false, true, true);
    expect(rec.outputHex()).toBe(toHex(hex`c2 01 aa  41 01 bb  00 01 cc  80 01 dd`));
  });

  it("refuses a whole message while a fragmented one is being sent, but allows control", () => {
    const { protocol, rec } = server();
    protocol.sendFragment(Buffer.from("Hel"), false, false);
    expect(() => protocol.sendMessage(Buffer.from("x"), false)).toThrow();
    protocol.ping();
    protocol.sendFragment(Buffer.from("lo"), false, true);
    protocol.sendMessage(hex`01`, true);
    expect(rec.outputHex()).toBe(toHex(hex`01 03 48 65 6c  89 00  80 02 6c 6f  82 01 01`));
  });
});

/**
 * Regressions for one bug: when a chunk ends exactly after a frame header, `parse` still calls
 * `readPayload` with no bytes available. That allocates the whole payload buffer, marks the frame
 * as UTF-8-checked without checking anything, and leaves the buffer in `this.payload`; the next
 * chunk then takes the in-place path (payloadFilled is 0), so the payload skips validation, and
 * a later frame read in pieces reuses the stale buffer of the wrong size.
 */
describe("a chunk that ends exactly after a frame header", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("still validates the text payload that arrives in the next chunk", () => {
    // Section 8.1: FF FE is never UTF-8, however the frame is split.
    expectRejects(client(), [hex`81 02`, hex`ff fe`], "WS_ERR_INVALID_UTF8", 1007);
    expectRejects(
      server(),
      [frame(0x81, hex`ff fe`).subarray(0, 6), hex`c8 04`],
      "WS_ERR_INVALID_UTF8",
      1007,
    );
  });

  it("still feeds that payload to the validator when a character spans fragments", () => {
    const { protocol, rec } = client();
    feedSplit(protocol, hex`01 01 e2  00 01 82  80 01 ac`, [2]);
    expect(rec.take()).toEqual([text("€")]);
  });

  it("does not reuse a stale payload buffer for a later frame", () => {
    // A 5-byte payload that arrives whole after its header, then a 2-byte one in two pieces:
    // the second message must be exactly AA BB, not AA BB plus three stale bytes.
    const longer = client();
    feedSplit(longer.protocol, hex`82 05 01 02 03 04 05  82 02 aa bb`, [2, 10]);
    expect(longer.rec.take()).toEqual([binary(hex`01 02 03 04 05`), binary(hex`aa bb`)]);
    // And the other way round: a 5-byte frame must not be cut to an earlier 2-byte buffer.
    const shorter = client();
    feedSplit(shorter.protocol, hex`82 02 01 02  82 05 aa bb cc dd ee`, [2, 7]);
    expect(shorter.rec.take()).toEqual([binary(hex`01 02`), binary(hex`aa bb cc dd ee`)]);
  });

  it("does not allocate a payload buffer before any payload byte arrives", () => {
    const allocUnsafe = vi.spyOn(Buffer, "allocUnsafe");
    const { protocol, rec } = client();
    // 1 MiB announced, nothing sent: 1 MiB held for 10 bytes of input is an amplification.
    protocol.receive(hex`82 7f 00 00 00 00 00 10 00 00`);
    expect(rec.take()).toEqual([]);
    for (const [size] of allocUnsafe.mock.calls) expect(size).toBeLessThan(1024);
  });
});

describe("every split point gives the same events", () => {
  const big = bytes(65536 + 7, 3);
  const b300 = bytes(300, 5);
  const t126 = "ü".repeat(63); // 126 bytes: the smallest 16-bit length
  const keys = [hex`37 fa 21 3d`, hex`01 02 03 04`, hex`ff 00 ff 00`, hex`9a 5c 00 e1`];
  let k = 0;
  const m = (b0: number, payload: Uint8Array | string = "") => frame(b0, payload, keys[k++ % 4]);
  const input = Buffer.concat([
    m(0x01, "Hel"),
    m(0x89, "p1"),
    m(0x80, "lo, wörld €"),
    m(0x82, b300),
    m(0x8a),
    m(0x01, hex`f0 9f`),
    m(0x00, hex`98 80`),
    m(0x80, "!"),
    m(0x82, big),
    m(0x81, t126),
    m(0x81),
    m(0x88, hex`03 e8 64 6f 6e 65`),
    m(0x81, "ignored after close"),
  ]);
  const expected: ProtocolEvent[] = [
    output(hex`8a 02 70 31`),
    { type: "ping", hex: "7031" },
    text("Hello, wörld €"),
    binary(b300),
    { type: "pong", hex: "" },
    text("😀!"),
    binary(big),
    text(t126),
    text(""),
    output(hex`88 02 03 e8`),
    { type: "closeReceived", code: 1000, reason: "done" },
    { type: "closeTransport" },
  ];

  function run(cuts: number[]): ProtocolEvent[] {
    const { protocol, rec } = server();
    feedSplit(protocol, input, cuts);
    return rec.events;
  }

  it("whole", () => {
    expect(run([])).toEqual(expected);
  });

  /**
   * The same check as `run(cuts)` plus toEqual, but made cheap enough to repeat 66 000 times:
   * events are compared as they arrive, payloads with Buffer.equals, nothing converted to hex.
   */
  const expectedBytes = expected.map((e) => ("hex" in e ? Buffer.from(e.hex, "hex") : null));
  function matches(cut: number): boolean {
    let i = 0;
    let ok = true;
    const next = (type: ProtocolEvent["type"], data?: Uint8Array, more = true) => {
      const want = expected[i];
      const bytes = expectedBytes[i++];
      if (want?.type !== type || !more) ok = false;
      else if (data && !bytes?.equals(data)) ok = false;
    };
    const handler: ProtocolHandler = {
      output: (data) => next("output", data),
      message: (data, isBinary) => {
        const want = expected[i];
        next("message", data, want?.type === "message" && want.isBinary === isBinary);
      },
      ping: (data) => next("ping", data),
      pong: (data) => next("pong", data),
      closeReceived: (code, reason) => {
        const want = expected[i];
        next("closeReceived", undefined, want?.type === "closeReceived" && want.code === code);
        ok &&= want?.type === "closeReceived" && want.reason === reason;
      },
      inflate: () => next("inflate"),
      error: () => next("error"),
      closeTransport: () => next("closeTransport"),
    };
    const protocol = new Protocol({ role: "server" }, handler);
    scratch.set(input); // the core unmasks in place; the events were checked already
    protocol.receive(scratch.subarray(0, cut));
    protocol.receive(scratch.subarray(cut));
    return ok && i === expected.length;
  }
  const scratch = Buffer.alloc(input.length);

  it("in two pieces, at every split point", () => {
    let checked = 0;
    for (let cut = 0; cut <= input.length; cut++) {
      // On a mismatch, run again with the recorder for a readable diff.
      if (!matches(cut)) expect({ cut, events: run([cut]) }).toEqual({ cut, events: expected });
      checked++;
    }
    expect(checked).toBe(input.length + 1);
  });

  it("one byte at a time", () => {
    const { protocol, rec } = server();
    for (let i = 0; i < input.length; i++) protocol.receive(Buffer.from(input.subarray(i, i + 1)));
    expect(rec.events).toEqual(expected);
  });

  it("one byte at a time, unmasked, as a client", () => {
    const unmasked = Buffer.concat(
      parseFrames(input).map((f) =>
        frame((f.fin ? 0x80 : 0) | (f.rsv1 ? 0x40 : 0) | f.opcode, f.payload, null),
      ),
    );
    const { protocol, rec } = client();
    for (let i = 0; i < unmasked.length; i++) {
      protocol.receive(Buffer.from(unmasked.subarray(i, i + 1)));
    }
    // The same, except that a client waits for the server to close TCP (section 7.1.1).
    expect(rec.appEvents()).toEqual(
      expected.filter((e) => e.type !== "output" && e.type !== "closeTransport"),
    );
  });
});

describe("usage errors carry stable codes", () => {
  const core = () =>
    new Protocol(
      { role: "server" },
      {
        output() {},
        message() {},
        ping() {},
        pong() {},
        closeReceived() {},
        inflate() {},
        error() {},
        closeTransport() {},
      },
    );

  it.each([
    [() => core().sendClose(1005), RangeError, "WS_ERR_CLOSE_CODE_NOT_SENDABLE"],
    [() => core().sendClose(1000, "x".repeat(124)), RangeError, "WS_ERR_CLOSE_REASON_TOO_LONG"],
    [() => core().sendClose(undefined, "why"), TypeError, "WS_ERR_REASON_WITHOUT_CODE"],
    [() => core().ping(new Uint8Array(126)), RangeError, "WS_ERR_CONTROL_PAYLOAD_TOO_LONG"],
  ] as const)("%#", (call, ErrorClass, code) => {
    expect(call).toThrow(ErrorClass);
    expect(call).toThrow(expect.objectContaining({ code }));
  });
});

// Regressions found by long fuzzing runs.
describe("fuzzing regressions", () => {
  const handlerFor = (events: string[], hooks: Partial<ProtocolHandler> = {}): ProtocolHandler => ({
    output() {},
    ping() {},
    pong() {},
    closeReceived() {},
    inflate() {},
    closeTransport: () => events.push("closeTransport"),
    error: (error) => events.push(`error ${error.code}`),
    message: (data) => events.push(`message ${data.toString()}`),
    ...hooks,
  });

  // Compressed messages were limited by their size on the wire instead of their inflated size:
  // RFC 7692's "Hello" takes 7 bytes compressed and was refused with maxMessageSize 5.
  it("limits a compressed message by its inflated size, not its wire size", () => {
    const events: string[] = [];
    const core: Protocol = new Protocol(
      { role: "client", compression: true, maxMessageSize: 5 },
      handlerFor(events, {
        inflate: (payload) =>
          core.inflated([
            inflateRawSync(Buffer.concat([payload, Buffer.from("0000ffff", "hex")]), {
              finishFlush: constants.Z_SYNC_FLUSH,
            }),
          ]),
      }),
    );
    core.receive(Buffer.from("c107f248cdc9c90700", "hex"));
    expect(events).toEqual(["message Hello"]);
  });

  // receive() called from a message callback fired by an asynchronous inflated() parsed the new
  // bytes ahead of input held back while the frame was inflating.
  it("keeps byte order when a callback of inflated() feeds input", () => {
    const events: string[] = [];
    let answer: (() => void) | null = null;
    let fed = false;
    const core: Protocol = new Protocol(
      { role: "client", compression: true },
      handlerFor(events, {
        inflate: (payload) => {
          answer = () =>
            core.inflated([
              inflateRawSync(Buffer.concat([payload, Buffer.from("0000ffff", "hex")]), {
                finishFlush: constants.Z_SYNC_FLUSH,
              }),
            ]);
        },
        message: (data) => {
          events.push(`message ${data.toString()}`);
          if (!fed) {
            fed = true;
            core.receive(Buffer.from("810143", "hex")); // "C", sent last
          }
        },
      }),
    );
    // Compressed "Hello", then "B" which arrives while "Hello" is still inflating.
    core.receive(Buffer.from("c107f248cdc9c90700", "hex"));
    core.receive(Buffer.from("810142", "hex"));
    expect(events).toEqual([]);
    answer!();
    expect(events).toEqual(["message Hello", "message B", "message C"]);
  });

  // receive() called from inside a message callback parsed the new bytes before the rest of
  // the current chunk, silently corrupting the stream.
  it("keeps byte order when receive() is called from inside a callback", () => {
    const events: string[] = [];
    let fed = false;
    const core: Protocol = new Protocol(
      { role: "client" },
      handlerFor(events, {
        message: (data) => {
          events.push(`message ${data.toString()}`);
          if (!fed) {
            fed = true;
            core.receive(Buffer.from("024242810143", "hex"));
          }
        },
      }),
    );
    core.receive(Buffer.from("81014181", "hex"));
    expect(events).toEqual(["message A", "message BB", "message C"]);
  });
});
