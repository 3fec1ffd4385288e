// Checks of the conformance harness itself: its UTF-8 validator against an independent oracle,
// its frame encoder and deflate code, Autobahn's verdict rules on fabricated outcomes, and,
// end to end, that deliberately broken servers are failed. A judge that could not fail would
// make autobahn.test.ts worthless.
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import * as zlib from "node:zlib";
import { afterEach, describe, expect, test } from "vitest";
import { WebSocketServer } from "ws";
import { MSG_SIZES, messageCount } from "./cases/compression.js";
import { stressSequences } from "./cases/group6.js";
import { allCases } from "./cases/index.js";
import {
  MessageDeflater,
  MessageInflater,
  offerString,
  parseDeflateResponse,
  parseExtensionsHeader,
} from "./deflate.js";
import { applyMask, encodeFrame, encodeHeader, repeatToLength } from "./frame-codec.js";
import type { FuzzingClient } from "./fuzzing-client.js";
import {
  Case,
  type CaseDefinition,
  FAILED,
  FAILED_BY_CLIENT,
  INFORMATIONAL,
  judge,
  NON_STRICT,
  OK,
  UNCLEAN,
  UNIMPLEMENTED,
  WRONG_CODE,
} from "./judge.js";
import { runCase } from "./runner.js";
import { isValidUtf8, Utf8Validator } from "./utf8.js";

const HOST = "127.0.0.1";

function oracle(bytes: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

describe("UTF-8 validator", () => {
  test("agrees with the platform's strict decoder on every group 6 payload", () => {
    let checked = 0;
    for (const group of stressSequences()) {
      for (const [valid, payload] of group.payloads) {
        expect(isValidUtf8(payload), `${group.title}: ${payload.toString("hex")}`).toBe(valid);
        expect(oracle(payload), payload.toString("hex")).toBe(valid);
        checked++;
      }
    }
    expect(checked).toBe(132);
  });

  test("agrees with the platform's decoder on random octet strings, fed in one piece or octet by octet", () => {
    let x = 0x2545f491;
    const next = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) & 0xff;
    };
    for (let n = 0; n < 3000; n++) {
      const len = 1 + (n % 9);
      // Bias towards lead and continuation octets so multi-octet forms are common.
      const bytes = Buffer.from(
        Array.from({ length: len }, () => (next() < 96 ? next() & 0x7f : 0x80 | next())),
      );
      const whole = isValidUtf8(bytes);
      expect(whole, bytes.toString("hex")).toBe(oracle(bytes));
      const v = new Utf8Validator();
      let ok = true;
      for (const b of bytes) ok = v.push(Buffer.from([b])) && ok;
      expect(ok && v.complete).toBe(whole);
    }
  });

  test("fails at the first octet that cannot continue a valid sequence (fail fast)", () => {
    const v = new Utf8Validator();
    expect(v.push(Buffer.from("cebae1bdb9cf83cebcceb5f4", "hex"))).toBe(true);
    expect(v.complete).toBe(false);
    expect(v.push(Buffer.from([0x90]))).toBe(false);
    expect(v.consumed).toBe(13);
  });
});

describe("frame encoder", () => {
  test("uses the 7-bit, 16-bit and 64-bit length forms at their boundaries", () => {
    const h = (length: number) =>
      encodeHeader({ opcode: 1, fin: true, rsv: 0, length, mask: null });
    expect(h(125).toString("hex")).toBe("817d");
    expect(h(126).toString("hex")).toBe("817e007e");
    expect(h(65535).toString("hex")).toBe("817effff");
    expect(h(65536).toString("hex")).toBe("817f0000000000010000");
  });

  test("encodes any opcode, RSV bits and FIN, and masks with the given key", () => {
    const mask = Buffer.from([1, 2, 3, 4]);
    const frame = encodeFrame({ opcode: 0xb, fin: false, rsv: 5, mask }, Buffer.from("abcde"));
    expect(frame.toString("hex")).toBe(
      `5b85${mask.toString("hex")}${applyMask(Buffer.from("abcde"), mask).toString("hex")}`,
    );
    expect(applyMask(applyMask(Buffer.from("abcde"), mask), mask).toString()).toBe("abcde");
  });

  test("masks a payload in pieces exactly as in one piece", () => {
    const mask = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
    const data = Buffer.from("the quick brown fox");
    const pieces = Buffer.concat([
      applyMask(data.subarray(0, 7), mask, 0),
      applyMask(data.subarray(7), mask, 7),
    ]);
    expect(pieces.equals(applyMask(data, mask))).toBe(true);
  });

  test("repeats a unit to an exact length", () => {
    expect(repeatToLength(Buffer.from("abc"), 8).toString()).toBe("abcabcab");
  });
});

describe("permessage-deflate", () => {
  test("formats Autobahn's offers", () => {
    expect(offerString({})).toBe(
      "permessage-deflate; client_no_context_takeover; client_max_window_bits",
    );
    expect(offerString({ requestNoContextTakeover: true, requestMaxWindowBits: 8 })).toBe(
      "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=8",
    );
  });

  test("accepts valid responses and fills in default windows", () => {
    const [[name, params]] = parseExtensionsHeader(
      'permessage-deflate; server_max_window_bits="10"; client_no_context_takeover',
    );
    expect(name).toBe("permessage-deflate");
    const a = parseDeflateResponse(params, "");
    expect(a).toMatchObject({
      serverMaxWindowBits: 10,
      clientMaxWindowBits: 15,
      clientNoContextTakeover: true,
      serverNoContextTakeover: false,
    });
  });

  test.each([
    ["permessage-deflate; client_max_window_bits", "client_max_window_bits without a value"],
    ["permessage-deflate; server_max_window_bits=16", "window above 15"],
    ["permessage-deflate; server_max_window_bits=7", "window below 8"],
    [
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      "a repeated parameter",
    ],
    ["permessage-deflate; server_no_context_takeover=1", "a value on a flag"],
    ["permessage-deflate; mystery", "an unknown parameter"],
  ])("rejects %s (%s)", (header) => {
    const [[, params]] = parseExtensionsHeader(header);
    expect(() => parseDeflateResponse(params, header)).toThrow();
  });

  test("compresses messages that zlib inflates, keeping the window across messages when asked", async () => {
    const text = Buffer.from("a message that repeats a message that repeats ".repeat(20));
    const keep = new MessageDeflater(15, false);
    const first = await keep.compress(text);
    const second = await keep.compress(text);
    expect(second.length).toBeLessThan(first.length);
    const inflate = new MessageInflater(15, false);
    for (const compressed of [first, second]) {
      inflate.start();
      const out = Buffer.concat([await inflate.push(compressed), await inflate.end()]);
      expect(out.equals(text)).toBe(true);
    }
    const fresh = new MessageDeflater(15, true);
    const a = await fresh.compress(text);
    const b = await fresh.compress(text);
    expect(a.equals(b)).toBe(true);
    const tail = Buffer.from([0, 0, 0xff, 0xff]);
    const plain = zlib.inflateRawSync(Buffer.concat([b, tail]), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    expect(plain.equals(text)).toBe(true);
    keep.close();
    fresh.close();
    inflate.close();
  });

  test("keeps every reduced case under its byte budget and no case above Autobahn's 1000 messages", () => {
    for (const [length] of MSG_SIZES) {
      const n = messageCount(length);
      expect(n).toBeGreaterThanOrEqual(4);
      expect(n).toBeLessThanOrEqual(1000);
    }
  });
});

describe("case list", () => {
  test("has Autobahn's 517 case ids for groups 1-7, 9, 10, 12 and 13, each once", () => {
    const ids = allCases().map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length);
    const perGroup = new Map<string, number>();
    for (const id of ids) perGroup.set(id.split(".")[0], (perGroup.get(id.split(".")[0]) ?? 0) + 1);
    expect(Object.fromEntries(perGroup)).toEqual({
      "1": 16,
      "2": 11,
      "3": 7,
      "4": 10,
      "5": 20,
      "6": 145,
      "7": 37,
      "9": 54,
      "10": 1,
      "12": 90,
      "13": 126,
    });
  });
});

/** A stand-in for the fuzzing client with just the state the verdict rules read. */
function fakeClient(state: Partial<FuzzingClient>): FuzzingClient {
  const sent: number[] = [];
  return {
    connectionWasOpen: true,
    closedByMe: true,
    wasClean: true,
    droppedByMe: false,
    remoteCloseCode: 1000,
    sendClose: (code?: number) => sent.push(code ?? -1),
    sentCloses: sent,
    ...state,
  } as unknown as FuzzingClient;
}

function judged(
  setup: (c: Case) => void,
  state: Partial<FuzzingClient>,
  def: Partial<CaseDefinition> = {},
) {
  const c = new Case(
    { id: "x", description: "", expectation: "", onOpen: () => {}, ...def },
    fakeClient(state),
  );
  setup(c);
  c.onConnectionLost();
  return judge(c);
}

const msg = (s: string) => ({ kind: "message" as const, payload: Buffer.from(s), binary: false });

describe("verdict rules", () => {
  const echo = (c: Case) => {
    c.expect(OK, [msg("hi")]);
    c.expect(NON_STRICT, []);
    c.received.push(msg("hi"));
  };

  test("OK when the events match and the fuzzer closed cleanly with an expected code", () => {
    expect(judged(echo, {})).toMatchObject({ pass: true, behavior: OK, behaviorClose: OK });
  });

  test("NON-STRICT when only the lenient expectation matched, and that fails", () => {
    const v = judged((c) => {
      c.expect(OK, [msg("hi")]);
      c.expect(NON_STRICT, []);
    }, {});
    expect(v).toMatchObject({ pass: false, behavior: NON_STRICT, behaviorClose: OK });
  });

  test("FAILED when the events match no expectation", () => {
    const v = judged((c) => {
      c.expect(OK, [msg("hi")]);
      c.received.push(msg("ho"));
    }, {});
    expect(v).toMatchObject({ pass: false, behavior: FAILED });
  });

  test("close failed by the wrong endpoint; fatal for UTF-8 cases", () => {
    expect(judged(echo, { closedByMe: false })).toMatchObject({
      pass: false,
      behavior: OK,
      behaviorClose: FAILED,
    });
    const v = judged(
      (c) => {
        c.expect(OK, []);
        c.expectedClose = {
          closedByMe: false,
          closeCode: [1007],
          requireClean: false,
          closedByWrongEndpointIsFatal: true,
        };
      },
      { closedByMe: true },
    );
    expect(v).toMatchObject({ pass: false, behavior: FAILED, behaviorClose: FAILED });
  });

  test("UNCLEAN when a clean close was required but did not happen", () => {
    expect(judged(echo, { wasClean: false })).toMatchObject({
      pass: false,
      behaviorClose: UNCLEAN,
    });
  });

  test("WRONG CODE for a close code outside the expected list; an absent code is fine", () => {
    expect(judged(echo, { remoteCloseCode: 1001 })).toMatchObject({
      pass: false,
      behaviorClose: WRONG_CODE,
    });
    expect(judged(echo, { remoteCloseCode: null })).toMatchObject({ pass: true });
  });

  test("FAILED BY CLIENT when the fuzzer had to drop TCP itself", () => {
    expect(judged(echo, { droppedByMe: true })).toMatchObject({
      pass: false,
      behaviorClose: FAILED_BY_CLIENT,
    });
  });

  test("FAILED when the opening handshake never completed", () => {
    expect(judged(echo, { connectionWasOpen: false })).toMatchObject({
      pass: false,
      behaviorClose: FAILED,
    });
  });

  test("informational cases pass whatever happened; UNIMPLEMENTED fails", () => {
    const info = judged(
      () => {},
      { closedByMe: false, wasClean: false },
      {
        informational: true,
        onConnectionLost: (c) => {
          c.behavior = INFORMATIONAL;
          c.behaviorClose = INFORMATIONAL;
        },
      },
    );
    expect(info.pass).toBe(true);
    const unimplemented = judged((c) => {
      c.behavior = UNIMPLEMENTED;
    }, {});
    expect(unimplemented).toMatchObject({ pass: false, behavior: UNIMPLEMENTED });
  });

  test("finishWhenDone closes only once every expectation matches", () => {
    const p = fakeClient({});
    const c = new Case({ id: "x", description: "", expectation: "", onOpen: () => {} }, p);
    c.expect(OK, [msg("a"), msg("b")]);
    c.onMessage(Buffer.from("a"), false);
    const sent = (p as unknown as { sentCloses: number[] }).sentCloses;
    expect(sent).toEqual([]);
    c.onMessage(Buffer.from("b"), false);
    expect(sent).toEqual([1000]);
  });
});

// ------------------------------------------------------------------ broken servers

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()?.();
});

function caseById(id: string): CaseDefinition {
  const def = allCases().find((d) => d.id === id);
  if (!def) throw new Error(`no case ${id}`);
  return def;
}

async function wsServer(
  options: ConstructorParameters<typeof WebSocketServer>[0],
): Promise<number> {
  const wss = new WebSocketServer({ port: 0, host: HOST, ...options });
  await new Promise((resolve) => wss.once("listening", resolve));
  wss.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    ws.on("error", () => {});
  });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  );
  return (wss.address() as AddressInfo).port;
}

/**
 * A server that completes the opening handshake and answers a close frame with a close frame,
 * but never closes the TCP connection (RFC 6455 section 7.1.1 wants the server to).
 */
async function lingeringServer(): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    let buffered = Buffer.alloc(0);
    let open = false;
    socket.on("data", (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!open) {
        const end = buffered.indexOf("\r\n\r\n");
        if (end < 0) return;
        const key =
          /sec-websocket-key:\s*(\S+)/i.exec(buffered.subarray(0, end).toString())?.[1] ?? "";
        const accept = createHash("sha1")
          .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
          .digest("base64");
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
        );
        buffered = buffered.subarray(end + 4);
        open = true;
      }
      // Client frames here are short and masked: 2 header octets, 4 mask octets, payload.
      while (buffered.length >= 6 && buffered.length >= 6 + (buffered[1] & 0x7f)) {
        const opcode = buffered[0] & 0x0f;
        buffered = buffered.subarray(6 + (buffered[1] & 0x7f));
        if (opcode === 8) socket.write(Buffer.from([0x88, 0x02, 0x03, 0xe8]));
      }
    });
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

describe("the judge fails broken servers", () => {
  test("a server that echoes invalid UTF-8 instead of failing with 1007 (6.3.1)", async () => {
    const port = await wsServer({ skipUTF8Validation: true });
    const run = await runCase(caseById("6.3.1"), { host: HOST, port });
    expect(run.verdict, run.report()).toMatchObject({ pass: false, behavior: FAILED });
    expect(run.case.p.closedByMe).toBe(true);
  });

  test("a server without permessage-deflate is UNIMPLEMENTED for group 12 (12.1.1)", async () => {
    const port = await wsServer({ perMessageDeflate: false });
    const run = await runCase(caseById("12.1.1"), { host: HOST, port });
    expect(run.verdict, run.report()).toMatchObject({ pass: false, behavior: UNIMPLEMENTED });
  });

  test("a server that never drops TCP after the closing handshake (7.3.3)", async () => {
    const port = await lingeringServer();
    const run = await runCase(caseById("7.3.3"), { host: HOST, port });
    // As in Autobahn, the case's 1 s kill timer fires before the 1 s drop timeout armed a
    // moment later, so the fuzzer drops TCP itself: FAILED BY CLIENT.
    expect(run.verdict, run.report()).toMatchObject({
      pass: false,
      behavior: OK,
      behaviorClose: FAILED_BY_CLIENT,
    });
    expect(run.case.p.droppedByMe).toBe(true);
  });

  test("a conformant server passes the same cases", async () => {
    const port = await wsServer({ perMessageDeflate: true });
    for (const id of ["6.3.1", "12.1.1", "7.3.3"]) {
      const run = await runCase(caseById(id), { host: HOST, port });
      expect(run.verdict.pass, run.report()).toBe(true);
    }
  });
});
