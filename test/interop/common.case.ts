// The interop scenarios that hold whichever end of the connection Switchboard plays, written once
// and run by both directions: ws-client.test.ts (Switchboard's server, the ws package's client)
// and ws-server.test.ts (Switchboard's `connect`, a ws server). Each direction hands over a small
// driver that opens a connection and says which end is ours; the other end is always a ws
// `WebSocket`, and in both directions the server echoes every message the client sends.
import type { Socket } from "node:net";
import { expect, it } from "vitest";
import type WebSocket from "ws";
import { WebSocketConnection } from "../../src/index.js";
import {
  DEFAULT_WAIT_MS,
  expectFailedWith,
  type FrameTap,
  fromArray,
  INVALID_CLOSE_CODES,
  LARGE_WAIT_MS,
  LONGEST_REASON,
  MiB,
  multibyteText,
  type Observed,
  patternBytes,
  type ReceivedMessage,
  reasonFor,
  splitBytes,
  VALID_CLOSE_CODES,
  within,
} from "./helpers.js";

export type Role = "client" | "server";

/** Switchboard's end of a connection and what it emitted. */
export interface OurEnd extends Observed {
  ws: WebSocketConnection;
}

/** The ws package's end of a connection and what it emitted. */
export interface WsEnd extends Observed {
  ws: WebSocket;
}

export type End = OurEnd | WsEnd;

/** One open connection, as a driver hands it over. */
export interface Connection {
  ours: OurEnd;
  foreign: WsEnd;
  /** Headers of the frames our end sent, read off the socket of ws's end. */
  tap: FrameTap;
  /** The server's socket: `bytesRead` counts what the client sent, `bytesWritten` the server. */
  serverSocket: Socket;
}

export interface InteropDriver {
  /** The end Switchboard plays; ws plays the other. */
  ours: Role;
  /** How test titles and wait messages name each end, e.g. "the ws server". */
  names: Record<Role, string>;
}

export interface ConfigurationDriver extends InteropDriver {
  /** Opens a connection in the configuration under test. */
  open(): Promise<Connection>;
  /** Whether this configuration negotiates permessage-deflate. */
  deflate: boolean;
  /** Whether this configuration runs the slow round trips of 16 MiB and past the high-water mark. */
  large: boolean;
}

export interface EdgeDriver extends InteropDriver {
  /**
   * Opens a connection whose Switchboard end accepts messages of at most 1 MiB in at most 4
   * fragments. `deflate: true` negotiates permessage-deflate with ws compressing every message,
   * `false` offers nothing, and leaving it out keeps the direction's defaults.
   */
  open(options?: { deflate?: boolean }): Promise<Connection>;
}

/** Sends with ws and resolves once ws handed the frame to the socket. */
export function wsSend(
  ws: WebSocket,
  data: string | Buffer,
  options: { binary?: boolean; fin?: boolean } = {},
): Promise<void> {
  return new Promise((resolve, reject) =>
    ws.send(data, options, (err) => (err ? reject(err) : resolve())),
  );
}

/** Sends a whole message from either end: ours queues it at once, ws reports when it wrote it. */
export async function sendFrom(
  end: End,
  data: string | Buffer,
  options: { binary: boolean },
): Promise<void> {
  if (end.ws instanceof WebSocketConnection) end.ws.send(data, options);
  else await wsSend(end.ws, data, options);
}

/** Sends from the client end and waits for the server's echo. */
export async function echo(
  client: End,
  data: string | Buffer,
  binary: boolean,
  ms = DEFAULT_WAIT_MS,
): Promise<ReceivedMessage> {
  await sendFrom(client, data, { binary });
  return client.messages.next(`the echo of a ${Buffer.byteLength(data)}-byte message`, ms);
}

/** Waits until the socket is gone, so byte counters and close events are final. */
export async function settle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 20));
}

interface Pair extends Connection {
  client: End;
  server: End;
}

function other(role: Role): Role {
  return role === "client" ? "server" : "client";
}

async function openPair(driver: InteropDriver, connection: Promise<Connection>): Promise<Pair> {
  const opened = await connection;
  const [client, server] =
    driver.ours === "client" ? [opened.ours, opened.foreign] : [opened.foreign, opened.ours];
  return { ...opened, client, server };
}

const PING_PAYLOADS = [Buffer.alloc(0), Buffer.from("ping ✓"), patternBytes(125)];

/** One message ws sends in pieces; "ping" pings between two pieces and waits for the pong. */
interface FragmentedMessage {
  binary: boolean;
  steps: Array<Buffer | "ping">;
  expected: Buffer;
}

/**
 * The scenarios every permessage-deflate configuration runs, registered in the caller's
 * `describe` block: message shapes, fragmentation both ways, large messages, pings and every
 * valid close code from each end.
 */
export function defineConfigurationCases(driver: ConfigurationDriver): void {
  const { names } = driver;
  const foreign = other(driver.ours);
  // Both servers echo, so what ws sends as the client comes back to it.
  const foreignGetsEcho = foreign === "client";
  // Only some configurations run the big round trips: they are the slow part of the suite.
  const itLarge = driver.large ? it : () => undefined;
  const open = () => openPair(driver, driver.open());

  it("echoes text, binary, empty and multibyte UTF-8 messages with their opcode", async () => {
    const { client, server, tap } = await open();
    const cases: Array<[string | Buffer, boolean]> = [
      ["hello", false],
      [Buffer.from([0, 1, 2, 0xff, 0xfe]), true],
      ["", false],
      [Buffer.alloc(0), true],
      ["héllo wörld ✓ € 🚀 日本語", false],
      [multibyteText(70_000), false],
      [patternBytes(70_000), true],
    ];
    for (const [data, binary] of cases) {
      const echoed = await echo(client, data, binary);
      expect(echoed.isBinary).toBe(binary);
      expect(echoed.data.equals(Buffer.from(data))).toBe(true);
      const seen = await server.messages.next(`${names.server}'s message event`);
      expect(seen.isBinary).toBe(binary);
      expect(seen.data.equals(Buffer.from(data))).toBe(true);
      const atOurs = driver.ours === "server" ? seen : echoed;
      expect(atOurs.wasBuffer, "Switchboard hands payloads over as Buffers").toBe(true);
    }
    // RFC 6455 section 5.1: a client masks every frame it sends, a server none.
    expect(tap.frames.length).toBeGreaterThanOrEqual(cases.length);
    const masked = driver.ours === "client";
    expect(
      tap.frames.every((f) => f.masked === masked),
      `masked: ${masked}`,
    ).toBe(true);
  });

  it("sends strings as text and bytes as binary unless told otherwise", async () => {
    const { ours, foreign } = await open();
    ours.ws.send("a string");
    ours.ws.send(Buffer.from("some bytes"));
    ours.ws.send(Buffer.from("bytes as text"), { binary: false });
    const seen = [
      await foreign.messages.next("message 1"),
      await foreign.messages.next("message 2"),
      await foreign.messages.next("message 3"),
    ].map((m) => [m.data.toString(), m.isBinary]);
    expect(seen).toEqual([
      ["a string", false],
      ["some bytes", true],
      ["bytes as text", false],
    ]);
  });

  itLarge(
    "keeps reading after sending messages larger than its 1 MiB write high-water mark",
    async () => {
      // Sending more than the high-water mark pauses reading until the output drains; a write
      // the kernel takes at once must not leave reading paused.
      const { client } = await open();
      for (const size of [MiB + 1, 1.5 * MiB, 2 * MiB]) {
        const payload = patternBytes(size);
        const echoed = await echo(client, payload, true);
        expect(echoed.data.equals(payload), `echo of ${size} bytes`).toBe(true);
        expect((await echo(client, `after ${size}`, false)).data.toString()).toBe(`after ${size}`);
      }
    },
  );

  it("compresses a compressible message in both directions only when deflate is on", async () => {
    const { client, tap, serverSocket } = await open();
    const readBefore = serverSocket.bytesRead;
    const writtenBefore = serverSocket.bytesWritten;
    const framesBefore = tap.dataFrames.length;
    const payload = Buffer.alloc(MiB, "switchboard ");
    const echoed = await echo(client, payload, true);
    expect(echoed.data.equals(payload)).toBe(true);
    const sentByClient = serverSocket.bytesRead - readBefore;
    const sentByServer = serverSocket.bytesWritten - writtenBefore;
    const frames = tap.dataFrames.slice(framesBefore);
    if (driver.deflate) {
      const what = "for a 1 MiB compressible message";
      expect(sentByClient, `bytes ${names.client} sent ${what}`).toBeLessThan(MiB / 4);
      expect(sentByServer, `bytes ${names.server} sent ${what}`).toBeLessThan(MiB / 4);
      expect(frames[0]?.rsv1, `RSV1 marks ${names[driver.ours]}'s compressed message`).toBe(true);
    } else {
      expect(sentByClient).toBeGreaterThan(MiB);
      expect(sentByServer).toBeGreaterThan(MiB);
      expect(frames.every((f) => !f.rsv1)).toBe(true);
    }
  });

  it("sends fragmented messages with sendStream that ws reassembles", async () => {
    const { ours, foreign, tap } = await open();
    const framesBefore = tap.dataFrames.length;
    const binary = patternBytes(40_000);
    await within(
      ours.ws.sendStream(fromArray(splitBytes(binary, 4)), { binary: true }),
      DEFAULT_WAIT_MS,
      "sendStream of 4 binary pieces",
    );
    let seen = await foreign.messages.next("the streamed binary message");
    expect(seen.isBinary).toBe(true);
    expect(seen.data.equals(binary)).toBe(true);

    // A multibyte character split across fragments: UTF-8 is checked per message.
    const text = Buffer.from("stream: a€b🚀c ✓");
    const pieces = [text.subarray(0, 9), text.subarray(9, 12), text.subarray(12)];
    await within(
      ours.ws.sendStream(fromArray(pieces), { binary: false }),
      DEFAULT_WAIT_MS,
      "sendStream of split UTF-8",
    );
    seen = await foreign.messages.next("the streamed text message");
    expect(seen.isBinary).toBe(false);
    expect(seen.data.toString("utf8")).toBe("stream: a€b🚀c ✓");

    await ours.ws.sendStream(fromArray(["str", "ing ", "chunks"]), { binary: false });
    seen = await foreign.messages.next("the streamed string chunks");
    expect([seen.data.toString(), seen.isBinary]).toEqual(["string chunks", false]);

    if (!foreignGetsEcho) {
      // Our client's messages come back from the ws server, whole too.
      expect((await ours.messages.next("echo 1")).data.equals(binary)).toBe(true);
      expect((await ours.messages.next("echo 2")).data.toString()).toBe("stream: a€b🚀c ✓");
      expect((await ours.messages.next("echo 3")).data.toString()).toBe("string chunks");
    }

    const frames = tap.dataFrames.slice(framesBefore);
    expect(frames.length, "streamed messages span several frames").toBeGreaterThan(3);
    // Per message: one opening frame with the opcode, continuations after, FIN on the last.
    expect(frames.filter((f) => f.opcode !== 0).map((f) => f.opcode)).toEqual([2, 1, 1]);
    expect(frames.filter((f) => f.fin).length).toBe(3);
    // RFC 7692 section 6.1: RSV1 only ever on the first frame of a message.
    expect(frames.filter((f) => f.opcode === 0).every((f) => !f.rsv1)).toBe(true);
  });

  it(`reassembles messages ${names[foreign]} fragments, with a ping between fragments`, async () => {
    const { ours, foreign: ws } = await open();
    const binary = patternBytes(30_000);
    const [b1, b2, b3] = splitBytes(binary, 3);
    const text = Buffer.from("a€b🚀c");
    const empty = Buffer.alloc(0);
    const messages: FragmentedMessage[] = [
      { binary: true, steps: [b1, b2, b3], expected: binary },
      // An empty final fragment ends a message like any other.
      { binary: true, steps: [b1, b2, b3, empty], expected: binary },
      // A multibyte character split across fragments is valid: UTF-8 is checked per message
      // (RFC 6455 section 5.6), not per frame.
      {
        binary: false,
        steps: [text.subarray(0, 2), text.subarray(2, 6), text.subarray(6), empty],
        expected: text,
      },
      // Control frames may be injected between fragments (RFC 6455 section 5.4).
      {
        binary: false,
        steps: [Buffer.from("first "), "ping", Buffer.from("second")],
        expected: Buffer.from("first second"),
      },
      {
        binary: false,
        steps: [text.subarray(0, 2), "ping", text.subarray(2, 6), text.subarray(6)],
        expected: text,
      },
    ];
    for (const [index, message] of messages.entries()) {
      const pieces = message.steps.filter((step) => step !== "ping").length;
      let sent = 0;
      for (const step of message.steps) {
        if (step === "ping") {
          // The pong must come before the message is complete: control frames are not queued
          // behind a fragmented message (RFC 6455 section 5.4).
          ws.ws.ping(Buffer.from("between fragments"));
          const pong = await ws.pongs.next("the pong between fragments");
          expect(pong.toString()).toBe("between fragments");
          const ping = await ours.pings.next("Switchboard's ping event between fragments");
          expect(ping.toString()).toBe("between fragments");
          continue;
        }
        sent += 1;
        const options = sent === 1 ? { binary: message.binary } : {};
        await wsSend(ws.ws, step, { ...options, fin: sent === pieces });
      }
      const got = await ours.messages.next(`fragmented message ${index + 1}`);
      expect([got.isBinary, got.data.equals(message.expected)]).toEqual([message.binary, true]);
      if (foreignGetsEcho) {
        const echoed = await ws.messages.next(`the echo of fragmented message ${index + 1}`);
        expect([echoed.isBinary, echoed.data.equals(message.expected)]).toEqual([
          message.binary,
          true,
        ]);
      }
    }
  });

  itLarge("echoes 16 MiB binary and text messages both ways", async () => {
    const { client, server } = await open();
    const binary = patternBytes(16 * MiB);
    let echoed = await echo(client, binary, true, LARGE_WAIT_MS);
    expect(echoed.isBinary).toBe(true);
    expect(echoed.data.length).toBe(16 * MiB);
    expect(echoed.data.equals(binary)).toBe(true);
    const seen = await server.messages.next(`${names.server}'s 16 MiB message`);
    expect(seen.data.equals(binary)).toBe(true);

    const text = multibyteText(16 * MiB);
    echoed = await echo(client, text, false, LARGE_WAIT_MS);
    expect(echoed.isBinary).toBe(false);
    expect(echoed.data.length).toBe(16 * MiB);
    expect(echoed.data.toString("utf8") === text).toBe(true);
  });

  it(`answers ${names[foreign]}'s pings with the same payload and reports them`, async () => {
    const { ours, foreign: ws } = await open();
    for (const payload of PING_PAYLOADS) {
      ws.ws.ping(payload);
      const pong = await ws.pongs.next(`the pong for a ${payload.length}-byte ping`);
      expect(pong.equals(payload)).toBe(true);
      expect((await ours.pings.next("Switchboard's ping event")).equals(payload)).toBe(true);
    }
  });

  it(`pings ${names[foreign]} and sees its pong`, async () => {
    const { ours, foreign: ws } = await open();
    for (const payload of PING_PAYLOADS) {
      ours.ws.ping(payload);
      expect((await ws.pings.next(`${names[foreign]}'s ping event`)).equals(payload)).toBe(true);
      const pong = await ours.pongs.next(`the pong for a ${payload.length}-byte ping`);
      expect(pong.equals(payload)).toBe(true);
    }
  });

  for (const closer of ["client", "server"] as const) {
    const receiver = other(closer);
    it(`delivers every valid close code and reason ${names[closer]} sends`, async () => {
      const observed: unknown[] = [];
      const expected: unknown[] = [];
      for (const code of VALID_CLOSE_CODES) {
        const pair = await open();
        pair[closer].ws.close(code, reasonFor(code));
        const wait = (role: Role) =>
          within(pair[role].closed, DEFAULT_WAIT_MS, `${names[role]}'s close for ${code}`);
        const atReceiver = await wait(receiver);
        const atCloser = await wait(closer);
        // Our close event carries what the peer's close frame said: the code and reason when ws
        // closed, and their echo when we did, since ws answers with the code and reason it got.
        const atOurs = closer === driver.ours ? atCloser : atReceiver;
        observed.push({
          code,
          received: [atReceiver.code, atReceiver.reason],
          // The closing handshake completed: the closer got a close frame back, not 1006.
          closerGotCloseFrame: atCloser.code !== 1006,
          ours: [atOurs.code, atOurs.reason, typeof atOurs.rawReason, pair.ours.ws.readyState],
        });
        expected.push({
          code,
          received: [code, reasonFor(code)],
          closerGotCloseFrame: true,
          ours: [code, reasonFor(code), "string", "closed"],
        });
      }
      expect(observed).toEqual(expected);
    });
  }
}

/** Codes close() must refuse: the wire's invalid codes and a code that is not an integer. */
const NOT_SENDABLE = [...INVALID_CLOSE_CODES, 1000.5];

/** How a call was refused: the error's class and its stable code. */
function refusalOf(call: () => void): { error: string; code: unknown } | "not refused" {
  try {
    call();
    return "not refused";
  } catch (err) {
    const error =
      err instanceof TypeError ? "TypeError" : err instanceof RangeError ? "RangeError" : `${err}`;
    return { error, code: (err as { code?: unknown }).code };
  }
}

/**
 * The handshake-independent edge cases, registered in the caller's `describe` block: close()
 * refusals, the longest close reason, 1005, and the limits Switchboard enforces on what ws sends.
 */
export function defineEdgeCases(driver: EdgeDriver): void {
  const { names } = driver;
  const foreign = other(driver.ours);
  const foreignGetsEcho = foreign === "client";
  const open = (options?: { deflate?: boolean }) => openPair(driver, driver.open(options));
  const foreignClosed = (ws: WsEnd) =>
    within(ws.closed, DEFAULT_WAIT_MS, `${names[foreign]}'s close event`);

  it("refuses invalid close codes and over-long reasons in close() and stays open", async () => {
    const { client, ours, foreign: ws } = await open();
    const attempts: Array<{ what: string; call: () => void; error: string; code: string }> = [
      ...NOT_SENDABLE.map((code) => ({
        what: `code ${code}`,
        call: () => ours.ws.close(code, "nope"),
        error: "RangeError",
        code: "WS_ERR_CLOSE_CODE_NOT_SENDABLE",
      })),
      {
        what: "a 124-byte reason",
        call: () => ours.ws.close(1000, `${LONGEST_REASON}x`),
        error: "RangeError",
        code: "WS_ERR_CLOSE_REASON_TOO_LONG",
      },
      {
        // RFC 6455 section 5.5.1: a close frame carries a reason only after a code.
        what: "a reason without a code",
        call: () => ours.ws.close(undefined, "nope"),
        error: "TypeError",
        code: "WS_ERR_REASON_WITHOUT_CODE",
      },
    ];
    expect(attempts.map(({ what, call }) => [what, refusalOf(call)])).toEqual(
      attempts.map(({ what, error, code }) => [what, { error, code }]),
    );
    expect(ours.ws.readyState).toBe("open");
    expect((await echo(client, "still open", false)).data.toString()).toBe("still open");
    expect(ws.closeEvents, "no close frame went out").toEqual([]);
  });

  it("carries the longest reason (123 bytes) both ways", async () => {
    let { client, server } = await open();
    client.ws.close(4001, LONGEST_REASON);
    expect(await within(server.closed, DEFAULT_WAIT_MS, `${names.server}'s close`)).toMatchObject({
      code: 4001,
      reason: LONGEST_REASON,
    });
    ({ client, server } = await open());
    server.ws.close(4002, LONGEST_REASON);
    expect(await within(client.closed, DEFAULT_WAIT_MS, `${names.client}'s close`)).toMatchObject({
      code: 4002,
      reason: LONGEST_REASON,
    });
  });

  it(`reports 1005 when ${names[foreign]} closes without a code, and emits close once`, async () => {
    const { ours, foreign: ws } = await open();
    ws.ws.close();
    const atOurs = await within(ours.closed, DEFAULT_WAIT_MS, "Switchboard's close event");
    expect([atOurs.code, atOurs.reason]).toEqual([1005, ""]);
    await foreignClosed(ws);
    await settle();
    expect(ours.closeEvents.length).toBe(1);
    expect(ours.ws.readyState).toBe("closed");
  });

  it("closes with 1009 when a message exceeds maxMessageSize", async () => {
    const { ours, foreign: ws } = await open({ deflate: false });
    ws.ws.send(patternBytes(MiB + 1));
    expect((await foreignClosed(ws)).code).toBe(1009);
    await expectFailedWith(ours, "WS_ERR_MESSAGE_TOO_BIG", 1009);
    expect(ours.messages.all.length).toBe(0);
  });

  it("closes with 1009 when a small compressed message inflates past maxMessageSize", async () => {
    const { ours, foreign: ws, serverSocket } = await open({ deflate: true });
    expect(ws.ws.extensions).toBe("permessage-deflate");
    const sentByWs = () =>
      foreign === "client" ? serverSocket.bytesRead : serverSocket.bytesWritten;
    const sentBefore = sentByWs();
    ws.ws.send(Buffer.alloc(4 * MiB));
    expect((await foreignClosed(ws)).code).toBe(1009);
    await expectFailedWith(ours, "WS_ERR_MESSAGE_TOO_BIG", 1009);
    expect(sentByWs() - sentBefore, "the bomb was small on the wire").toBeLessThan(64 * 1024);
    expect(ours.messages.all.length).toBe(0);
  });

  it("closes with 1009 past maxFragments but accepts fewer fragments", async () => {
    const { ours, foreign: ws } = await open({ deflate: false });
    await wsSend(ws.ws, Buffer.from("ab"), { binary: true, fin: false });
    await wsSend(ws.ws, Buffer.from("cd"), { fin: true });
    expect((await ours.messages.next("the message in 2 fragments")).data.toString()).toBe("abcd");
    if (foreignGetsEcho) {
      expect((await ws.messages.next("echo of 2 fragments")).data.toString()).toBe("abcd");
    }
    // Once Switchboard has closed, ws refuses further sends; those refusals are expected.
    for (let i = 0; i < 10; i++) {
      const options = i === 0 ? { binary: true, fin: false } : { fin: i === 9 };
      await wsSend(ws.ws, Buffer.from([i]), options).catch(() => undefined);
    }
    expect((await foreignClosed(ws)).code).toBe(1009);
    await expectFailedWith(ours, "WS_ERR_TOO_MANY_FRAGMENTS", 1009);
    expect(ours.messages.all.length).toBe(1);
  });

  it("closes with 1007 on invalid UTF-8 in a text message, whole or fragmented", async () => {
    let { ours, foreign: ws } = await open({ deflate: false });
    ws.ws.send(Buffer.from([0x61, 0xc3, 0x28]), { binary: false });
    expect((await foreignClosed(ws)).code).toBe(1007);
    await expectFailedWith(ours, "WS_ERR_INVALID_UTF8", 1007);
    expect(ours.messages.all.length).toBe(0);

    ({ ours, foreign: ws } = await open({ deflate: false }));
    // A truncated sequence at the end of the message is invalid even though each fragment
    // could be the prefix of a valid one.
    await wsSend(ws.ws, Buffer.from("ok "), { binary: false, fin: false });
    await wsSend(ws.ws, Buffer.from([0xe2, 0x82]), { fin: true });
    expect((await foreignClosed(ws)).code).toBe(1007);
    await expectFailedWith(ours, "WS_ERR_INVALID_UTF8", 1007);
    expect(ours.messages.all.length).toBe(0);
  });
}
