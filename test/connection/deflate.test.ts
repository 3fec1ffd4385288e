import { randomBytes } from "node:crypto";
import zlib from "node:zlib";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DeflateClosedError, PerMessageDeflate } from "../../src/connection/deflate.js";
import {
  Limiter,
  setZlibConcurrency,
  sharedZlibLimiter,
} from "../../src/connection/zlib-limiter.js";
import { ProtocolError } from "../../src/protocol/errors.js";
import type { DeflateParams } from "../../src/protocol/permessage-deflate.js";

const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** What a plain zlib user does with a message: append the tail, inflate without expecting an end. */
function inflatePlain(payload: Buffer, windowBits = 15): Buffer {
  return zlib.inflateRawSync(Buffer.concat([payload, TRAILER]), {
    windowBits,
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
  });
}
const MiB = 1024 * 1024;

function params(overrides: Partial<DeflateParams> = {}): DeflateParams {
  return {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
    ...overrides,
  };
}

const open: PerMessageDeflate[] = [];

/** A server and a client sharing the same negotiated parameters. */
function pair(p: DeflateParams = params()) {
  const server = new PerMessageDeflate(p, "server");
  const client = new PerMessageDeflate(p, "client");
  open.push(server, client);
  return { server, client };
}

function make(p: DeflateParams, role: "server" | "client", options = {}) {
  const codec = new PerMessageDeflate(p, role, options);
  open.push(codec);
  return codec;
}

afterEach(() => {
  for (const codec of open.splice(0)) codec.close();
  vi.restoreAllMocks();
});

/** Text that compresses well and differs per message. */
function message(i: number, size = 2000): Buffer {
  const words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
  let text = "";
  for (let n = 0; text.length < size; n++) text += `${words[(n * 7 + i) % words.length]}-${i} `;
  return Buffer.from(text.slice(0, size));
}

async function roundTrip(from: PerMessageDeflate, to: PerMessageDeflate, data: Buffer) {
  const compressed = await from.compress(data, true);
  const out = Buffer.concat(await to.decompress(compressed, true, Number.POSITIVE_INFINITY));
  return { compressed, out };
}

/** Buffer equality without vitest's element-by-element diffing, which is slow on large buffers. */
function expectBytes(actual: Buffer, expected: Buffer): void {
  expect(actual.length).toBe(expected.length);
  expect(actual.equals(expected)).toBe(true);
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

describe("round trips", () => {
  it.each<[string, Partial<DeflateParams>]>([
    ["with context takeover", {}],
    ["without context takeover", { serverNoContextTakeover: true, clientNoContextTakeover: true }],
    ["with takeover on the client side only", { serverNoContextTakeover: true }],
    ["with takeover on the server side only", { clientNoContextTakeover: true }],
  ])("carries 60 messages both ways %s", async (_, overrides) => {
    const { server, client } = pair(params(overrides));
    for (let i = 0; i < 30; i++) {
      const a = message(i, 100 + i * 97);
      expectBytes((await roundTrip(server, client, a)).out, a);
      const b = message(i + 1000, 50 + i * 131);
      expectBytes((await roundTrip(client, server, b)).out, b);
    }
  });

  it("uses the previous messages with context takeover and not without", async () => {
    const data = Buffer.from(randomBytes(3000).toString("base64"));
    const takeover = make(params(), "server");
    const first = await takeover.compress(data, true);
    const second = await takeover.compress(data, true);
    // The second copy is one long match into the first.
    expect(second.length).toBeLessThan(first.length / 4);

    const fresh = make(params({ serverNoContextTakeover: true }), "server");
    const a = await fresh.compress(data, true);
    const b = await fresh.compress(data, true);
    expectBytes(b, a);
    expectBytes(a, first);
  });

  it("resets the inflater after each message when the peer has no context takeover", async () => {
    // A peer that (wrongly) keeps its context refers back into the previous message; with
    // client_no_context_takeover agreed the server must not have that history.
    const data = message(2, 3000);
    const cheater = make(params(), "client");
    const m1 = await cheater.compress(data, true);
    const m2 = await cheater.compress(data, true);

    const strict = make(params({ clientNoContextTakeover: true }), "server");
    expectBytes(Buffer.concat(await strict.decompress(m1, true, Infinity)), data);
    const error = await rejection(strict.decompress(m2, true, Infinity));
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error).toMatchObject({ code: "WS_ERR_INVALID_COMPRESSED_DATA", closeCode: 1007 });

    const lenient = make(params(), "server");
    expectBytes(Buffer.concat(await lenient.decompress(m1, true, Infinity)), data);
    expectBytes(Buffer.concat(await lenient.decompress(m2, true, Infinity)), data);
  });

  for (let bits = 8; bits <= 15; bits++) {
    it(`works with ${bits}-bit windows in both roles`, async () => {
      const { server, client } = pair(
        params({ serverMaxWindowBits: bits, clientMaxWindowBits: bits }),
      );
      // Random bytes repeated at a distance just inside the window invite long-distance matches.
      const distance = Math.floor(2 ** bits * 0.8);
      for (let i = 0; i < 5; i++) {
        const chunk = randomBytes(Math.min(distance / 2, 2000));
        const data = Buffer.concat([chunk, message(i, distance - chunk.length), chunk, message(i)]);
        const toClient = await roundTrip(server, client, data);
        expectBytes(toClient.out, data);
        const toServer = await roundTrip(client, server, data);
        expectBytes(toServer.out, data);
        // The first message needs no history: a plain inflater with that window reads it.
        if (i === 0) expectBytes(inflatePlain(toServer.compressed, Math.max(bits, 9)), data);
      }
    });
  }

  it("respects an 8-bit window exactly (no match reaches back more than 256 bytes)", async () => {
    const codec = make(params({ serverMaxWindowBits: 8 }), "server");
    const unit = randomBytes(300);
    const data = Buffer.concat([unit, unit, unit]);
    const compressed = Buffer.concat([await codec.compress(data, true), TRAILER]);
    // Decode by hand with a window of exactly 256 bytes: copy any match distance > 256 fails.
    expect(() => checkDistances(compressed, 256)).not.toThrow();
    // The same data with a 15-bit window does use distance 300.
    const wide = make(params(), "server");
    const wideOut = Buffer.concat([await wide.compress(data, true), TRAILER]);
    expect(() => checkDistances(wideOut, 256)).toThrow(/distance/);
  });

  it("compresses and decompresses fragments piecewise", async () => {
    const { server, client } = pair();
    for (let round = 0; round < 3; round++) {
      const parts = [message(round, 3000), message(round + 1, 10), message(round + 2, 5000)];
      const compressed = [
        await server.compress(parts[0], false),
        await server.compress(parts[1], false),
        await server.compress(parts[2], true),
      ];
      // Non-final fragments end with a sync flush; only the final one loses it.
      expect(compressed[0].subarray(-4)).toEqual(TRAILER);
      expect(compressed[2].subarray(-4)).not.toEqual(TRAILER);
      const out: Buffer[] = [];
      for (let i = 0; i < 3; i++) {
        out.push(...(await client.decompress(compressed[i], i === 2, Infinity)));
      }
      expectBytes(Buffer.concat(out), Buffer.concat(parts));
      // Every fragment inflates on its own as it arrives.
      expectBytes((await roundTrip(server, client, parts[1])).out, parts[1]);
    }
  });

  it("sends an empty final fragment as a single 0x00 (RFC 7692 section 7.2.3.6)", async () => {
    const { server, client } = pair();
    const first = message(3, 500);
    const a = await server.compress(first, false);
    const b = await server.compress(new Uint8Array(0), true);
    expect(b).toEqual(Buffer.from([0x00]));
    const out = [
      ...(await client.decompress(a, false, Infinity)),
      ...(await client.decompress(b, true, Infinity)),
    ];
    expectBytes(Buffer.concat(out), first);
    // The context is intact for the next message.
    const next = message(4, 800);
    expectBytes((await roundTrip(server, client, next)).out, next);
  });

  it("round-trips empty messages", async () => {
    const { server, client } = pair();
    for (let i = 0; i < 3; i++) {
      const { compressed, out } = await roundTrip(server, client, Buffer.alloc(0));
      expect(compressed).toEqual(Buffer.from([0x00]));
      expect(out).toHaveLength(0);
    }
    const after = message(5);
    expectBytes((await roundTrip(server, client, after)).out, after);
  });

  it("keeps calls in order when they are not awaited one by one", async () => {
    const { server, client } = pair();
    const inputs = Array.from({ length: 40 }, (_, i) => message(i, 200 + ((i * 389) % 3000)));
    const compressed = await Promise.all(inputs.map((data) => server.compress(data, true)));
    const outputs = await Promise.all(compressed.map((c) => client.decompress(c, true, Infinity)));
    for (const [i, chunks] of outputs.entries()) expectBytes(Buffer.concat(chunks), inputs[i]);
  });

  it("exposes the threshold", () => {
    expect(make(params(), "server").threshold).toBe(1024);
    expect(make(params(), "server", { threshold: 0 }).threshold).toBe(0);
    expect(make(params(), "client", { threshold: 4096 }).threshold).toBe(4096);
    expect(() => make(params(), "client", { threshold: -1 })).toThrow(RangeError);
    expect(() => make(params({ serverMaxWindowBits: 16 }), "client")).toThrow(RangeError);
  });
});

describe("interoperability with plain zlib", () => {
  it("our output inflates with zlib.inflateRawSync after appending 00 00 ff ff", async () => {
    for (const level of [undefined, 1, 9]) {
      const codec = make(params(), "client", { level, memLevel: 9 });
      for (let i = 0; i < 5; i++) {
        const data = Buffer.concat([message(i, 3000), randomBytes(100)]);
        const out = await codec.compress(data, true);
        const codecFresh = make(params({ clientNoContextTakeover: true }), "client", { level });
        const independent = await codecFresh.compress(data, true);
        expectBytes(inflatePlain(independent), data);
        if (i === 0) expectBytes(inflatePlain(out), data);
      }
    }
  });

  it("a message stream with context takeover inflates with one zlib inflater", async () => {
    const codec = make(params(), "server");
    const inflate = zlib.createInflateRaw();
    const messages = Array.from({ length: 10 }, (_, i) => message(i % 3, 1500));
    for (const data of messages) {
      const out = await codec.compress(data, true);
      const inflated = await new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        const onData = (c: Buffer) => chunks.push(c);
        inflate.on("data", onData);
        inflate.write(Buffer.concat([out, TRAILER]));
        inflate.flush(zlib.constants.Z_SYNC_FLUSH, () => {
          inflate.off("data", onData);
          resolve(Buffer.concat(chunks));
        });
      });
      expectBytes(inflated, data);
    }
    inflate.close();
  });

  it("inflates zlib's sync-flushed output with the tail removed", async () => {
    const codec = make(params(), "server");
    for (let i = 0; i < 5; i++) {
      const data = message(i, 5000);
      const raw = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      expect(raw.subarray(-4)).toEqual(TRAILER);
      const out = await codec.decompress(raw.subarray(0, -4), true, Infinity);
      expectBytes(Buffer.concat(out), data);
    }
  });

  it("inflates messages ending in a final (BFINAL) block, then later messages", async () => {
    // RFC 7692 section 7.2.3.4: a sender may end a message with BFINAL set; the next message
    // then starts a new DEFLATE stream.
    const codec = make(params(), "server");
    for (let i = 0; i < 4; i++) {
      const data = message(i, 2500);
      const finished = zlib.deflateRawSync(data);
      expectBytes(Buffer.concat(await codec.decompress(finished, true, Infinity)), data);
    }
  });

  it("rejects data after a final block within a message", async () => {
    const codec = make(params(), "server");
    const finished = zlib.deflateRawSync(message(1, 100));
    await codec.decompress(finished, false, Infinity);
    const error = await rejection(codec.decompress(Buffer.from([1, 2, 3]), true, Infinity));
    expect(error).toMatchObject({ code: "WS_ERR_INVALID_COMPRESSED_DATA", closeCode: 1007 });
  });
});

describe("limits and failures", () => {
  /** 1 MiB of zeros, sync-flushed: copies of it concatenate into a valid raw deflate stream. */
  function bomb(mebibytes: number): Buffer {
    const unit = zlib.deflateRawSync(Buffer.alloc(MiB), {
      level: 9,
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    const whole = Buffer.concat(Array.from({ length: mebibytes }, () => unit));
    return whole.subarray(0, -4); // the receiver appends the tail again
  }

  /** Counts every byte the inflater emits, whether or not the codec keeps it. */
  function countInflated() {
    const counter = { bytes: 0 };
    const original = zlib.createInflateRaw;
    vi.spyOn(zlib, "createInflateRaw").mockImplementation((options) => {
      const stream = original(options);
      stream.on("data", (chunk: Buffer) => {
        counter.bytes += chunk.length;
      });
      return stream;
    });
    return counter;
  }

  it("cuts 10 MB of zeros at 1 MiB with 1009", async () => {
    const counter = countInflated();
    const compressed = zlib.deflateRawSync(Buffer.alloc(10_000_000), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    expect(compressed.length).toBeLessThan(20_000);
    const codec = make(params(), "server");
    const error = await rejection(codec.decompress(compressed.subarray(0, -4), true, MiB));
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error).toMatchObject({ code: "WS_ERR_MESSAGE_TOO_BIG", closeCode: 1009 });
    expect(counter.bytes).toBeGreaterThan(MiB);
    expect(counter.bytes).toBeLessThanOrEqual(MiB + 64 * 1024);
  });

  it("cuts a 1 GiB bomb of 1 MB without inflating it", async () => {
    const counter = countInflated();
    const compressed = bomb(1024);
    expect(compressed.length).toBeLessThan(2 * MiB);
    const codec = make(params(), "client");
    const rssBefore = process.memoryUsage().rss;
    const error = await rejection(codec.decompress(compressed, true, MiB));
    const rssAfter = process.memoryUsage().rss;
    expect(error).toMatchObject({ code: "WS_ERR_MESSAGE_TOO_BIG", closeCode: 1009 });
    expect(counter.bytes).toBeLessThanOrEqual(MiB + 64 * 1024);
    expect(rssAfter - rssBefore).toBeLessThan(256 * MiB);
    expect(codec.closed).toBe(true);
  });

  it("cuts a bomb spread over fragments, per call", async () => {
    const counter = countInflated();
    const compressed = bomb(64);
    const codec = make(params(), "server");
    const fragments = [compressed.subarray(0, 1000), compressed.subarray(1000)];
    const first = await codec.decompress(fragments[0], false, 4 * MiB);
    const firstBytes = Buffer.concat(first).length;
    expect(firstBytes).toBeLessThanOrEqual(4 * MiB);
    // The caller passes what is left of its budget.
    const error = await rejection(codec.decompress(fragments[1], true, 4 * MiB - firstBytes));
    expect(error).toMatchObject({ code: "WS_ERR_MESSAGE_TOO_BIG" });
    expect(counter.bytes).toBeLessThanOrEqual(4 * MiB + 64 * 1024);
  });

  it("allows output of exactly maxBytes and rejects one byte less", async () => {
    const data = message(7, 50_000);
    const sender = make(params({ serverNoContextTakeover: true }), "server");
    const compressed = await sender.compress(data, true);
    const fits = make(params(), "client");
    expectBytes(Buffer.concat(await fits.decompress(compressed, true, data.length)), data);
    const tight = make(params(), "client");
    const error = await rejection(tight.decompress(compressed, true, data.length - 1));
    expect(error).toMatchObject({ code: "WS_ERR_MESSAGE_TOO_BIG", closeCode: 1009 });
  });

  it("rejects corrupt data with 1007 and is unusable afterwards", async () => {
    const codec = make(params(), "server");
    const error = await rejection(
      codec.decompress(Buffer.from([0xff, 0xff, 0xff, 0xff]), true, MiB),
    );
    expect(error).toBeInstanceOf(ProtocolError);
    expect(error).toMatchObject({ code: "WS_ERR_INVALID_COMPRESSED_DATA", closeCode: 1007 });
    expect(codec.closed).toBe(true);
    expect(await rejection(codec.decompress(Buffer.from([0x00]), true, MiB))).toBeInstanceOf(
      DeflateClosedError,
    );
    expect(await rejection(codec.compress(Buffer.from("x"), true))).toBeInstanceOf(
      DeflateClosedError,
    );
  });

  it("rejects calls queued behind a failure with DeflateClosedError", async () => {
    const codec = make(params(), "server");
    const good = zlib.deflateRawSync(message(1), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    const results = await Promise.allSettled([
      codec.decompress(Buffer.from([0xff, 0xff]), true, MiB),
      codec.decompress(good.subarray(0, -4), true, MiB),
    ]);
    expect(results[0]).toMatchObject({
      status: "rejected",
      reason: { code: "WS_ERR_INVALID_COMPRESSED_DATA" },
    });
    expect(results[1]).toMatchObject({
      status: "rejected",
      reason: { code: "WS_ERR_DEFLATE_CLOSED" },
    });
  });

  it("refuses a negative maxBytes", () => {
    const codec = make(params(), "server");
    expect(() => codec.decompress(Buffer.alloc(1), true, -1)).toThrow(RangeError);
    expect(() => codec.decompress(Buffer.alloc(1), true, Number.NaN)).toThrow(RangeError);
  });

  it("close() during pending work neither throws nor leaves promises hanging", async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      for (let round = 0; round < 5; round++) {
        const { server, client } = pair();
        const big = Buffer.concat([randomBytes(200_000), message(round, 500_000)]);
        const compressed = await server.compress(big, true);
        const pending = [
          server.compress(big, true),
          server.compress(big, false),
          client.decompress(compressed, true, Infinity),
          client.decompress(compressed, true, Infinity),
        ];
        // Close at different moments: immediately, after a tick, after some zlib work.
        if (round === 1) await Promise.resolve();
        if (round >= 2) await new Promise((r) => setImmediate(r));
        expect(() => {
          server.close();
          client.close();
          server.close();
        }).not.toThrow();
        const settled = await Promise.allSettled(pending);
        for (const result of settled) {
          if (result.status === "rejected")
            expect(result.reason).toBeInstanceOf(DeflateClosedError);
        }
        expect(await rejection(server.compress(big, true))).toBeInstanceOf(DeflateClosedError);
      }
      // Give late zlib callbacks a chance to misbehave.
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });
});

describe("Limiter", () => {
  function deferred() {
    let resolve!: () => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  }

  it("runs jobs in FIFO order, at most `concurrency` at once", async () => {
    const limiter = new Limiter(2);
    const started: number[] = [];
    const gates = Array.from({ length: 6 }, deferred);
    let active = 0;
    let peak = 0;
    const results = gates.map((gate, i) =>
      limiter.run(async () => {
        started.push(i);
        active++;
        peak = Math.max(peak, active);
        await gate.promise;
        active--;
        return i * 10;
      }),
    );
    expect(started).toEqual([0, 1]);
    expect(limiter.running).toBe(2);
    expect(limiter.queued).toBe(4);
    // Finishing out of order still starts the waiting jobs in the order they were queued.
    gates[1].resolve();
    await results[1];
    expect(started).toEqual([0, 1, 2]);
    gates[0].resolve();
    await results[0];
    expect(started).toEqual([0, 1, 2, 3]);
    for (const gate of gates) gate.resolve();
    expect(await Promise.all(results)).toEqual([0, 10, 20, 30, 40, 50]);
    expect(started).toEqual([0, 1, 2, 3, 4, 5]);
    expect(peak).toBe(2);
    expect(limiter.running).toBe(0);
  });

  it("frees the slot of a job that rejects or throws", async () => {
    const limiter = new Limiter(1);
    const boom = new Error("boom");
    await expect(limiter.run(() => Promise.reject(boom))).rejects.toBe(boom);
    await expect(
      limiter.run(() => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    await expect(limiter.run(async () => "ok")).resolves.toBe("ok");
    expect(limiter.running).toBe(0);
  });

  it("starts queued jobs when the cap is raised", async () => {
    const limiter = new Limiter(1);
    const gate = deferred();
    const started: number[] = [];
    const jobs = [0, 1, 2].map((i) =>
      limiter.run(async () => {
        started.push(i);
        await gate.promise;
      }),
    );
    expect(started).toEqual([0]);
    limiter.concurrency = 3;
    expect(started).toEqual([0, 1, 2]);
    gate.resolve();
    await Promise.all(jobs);
    expect(() => {
      limiter.concurrency = 0;
    }).toThrow(RangeError);
    expect(() => new Limiter(1.5)).toThrow(RangeError);
    expect(new Limiter(Number.POSITIVE_INFINITY).concurrency).toBe(Number.POSITIVE_INFINITY);
  });

  it("has a shared instance with a settable cap, default 10", () => {
    expect(sharedZlibLimiter.concurrency).toBe(10);
    setZlibConcurrency(3);
    expect(sharedZlibLimiter.concurrency).toBe(3);
    make(params(), "server", { concurrency: 4 });
    expect(sharedZlibLimiter.concurrency).toBe(4);
    setZlibConcurrency(10);
  });

  it("caps zlib jobs across many instances", async () => {
    const limiter = new Limiter(2);
    let active = 0;
    let peak = 0;
    let jobs = 0;
    const run = limiter.run.bind(limiter);
    vi.spyOn(limiter, "run").mockImplementation((job) =>
      run(async () => {
        jobs++;
        active++;
        peak = Math.max(peak, active);
        try {
          return await job();
        } finally {
          active--;
        }
      }),
    );
    const codecs = Array.from({ length: 5 }, (_, i) =>
      make(params(), i % 2 === 0 ? "server" : "client", { limiter }),
    );
    const peers = codecs.map((c) =>
      make(params(), c.role === "server" ? "client" : "server", { limiter }),
    );
    const work = codecs.map(async (codec, i) => {
      for (let n = 0; n < 4; n++) {
        const data = message(i * 10 + n, 20_000);
        const compressed = await codec.compress(data, true);
        const out = await peers[i].decompress(compressed, true, Infinity);
        expectBytes(Buffer.concat(out), data);
      }
    });
    await Promise.all(work);
    expect(jobs).toBe(5 * 4 * 2);
    expect(peak).toBe(2);
  });
});

/**
 * A minimal DEFLATE decoder that only checks match distances, so a test can prove the
 * compressor kept to a window smaller than zlib's smallest inflate window.
 */
function checkDistances(data: Buffer, window: number): void {
  let pos = 0;
  let bit = 0;
  const bits = (n: number) => {
    let v = 0;
    for (let i = 0; i < n; i++) {
      if (pos >= data.length) throw new Error("eof");
      v |= ((data[pos] >> bit) & 1) << i;
      if (++bit === 8) {
        bit = 0;
        pos++;
      }
    }
    return v;
  };
  const LBASE = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
  ];
  const LEXT = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
  ];
  const DBASE = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049,
    3073, 4097, 6145, 8193, 12289, 16385, 24577,
  ];
  const DEXT = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
  ];
  type Table = Map<number, number>; // (length << 16 | code) -> symbol
  const build = (lengths: number[]): Table => {
    const count = new Array(16).fill(0);
    for (const l of lengths) if (l) count[l]++;
    const next = new Array(16).fill(0);
    let code = 0;
    for (let l = 1; l < 16; l++) {
      code = (code + count[l - 1]) << 1;
      next[l] = code;
    }
    const table: Table = new Map();
    lengths.forEach((l, sym) => {
      if (l) table.set((l << 16) | next[l]++, sym);
    });
    return table;
  };
  const decode = (table: Table) => {
    let code = 0;
    for (let len = 1; len < 16; len++) {
      code = (code << 1) | bits(1);
      const sym = table.get((len << 16) | code);
      if (sym !== undefined) return sym;
    }
    throw new Error("bad code");
  };
  let produced = 0;
  for (;;) {
    if (pos >= data.length - 1 && bit === 0 && pos >= data.length) return;
    if (pos >= data.length) return;
    const final = bits(1);
    const type = bits(2);
    if (type === 0) {
      if (bit !== 0) {
        bit = 0;
        pos++;
      }
      const len = data.readUInt16LE(pos);
      pos += 4 + len;
      produced += len;
    } else {
      let lit: Table;
      let dist: Table;
      if (type === 1) {
        lit = build([
          ...Array(144).fill(8),
          ...Array(112).fill(9),
          ...Array(24).fill(7),
          ...Array(8).fill(8),
        ]);
        dist = build(Array(30).fill(5));
      } else {
        const hlit = bits(5) + 257;
        const hdist = bits(5) + 1;
        const hclen = bits(4) + 4;
        const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
        const cl = new Array(19).fill(0);
        for (let i = 0; i < hclen; i++) cl[order[i]] = bits(3);
        const clTable = build(cl);
        const lengths: number[] = [];
        while (lengths.length < hlit + hdist) {
          const sym = decode(clTable);
          if (sym < 16) lengths.push(sym);
          else if (sym === 16) lengths.push(...Array(3 + bits(2)).fill(lengths.at(-1)));
          else if (sym === 17) lengths.push(...Array(3 + bits(3)).fill(0));
          else lengths.push(...Array(11 + bits(7)).fill(0));
        }
        lit = build(lengths.slice(0, hlit));
        dist = build(lengths.slice(hlit));
      }
      for (;;) {
        const sym = decode(lit);
        if (sym < 256) produced++;
        else if (sym === 256) break;
        else {
          const length = LBASE[sym - 257] + bits(LEXT[sym - 257]);
          const dsym = decode(dist);
          const distance = DBASE[dsym] + bits(DEXT[dsym]);
          if (distance > window) throw new Error(`distance ${distance} beyond the window`);
          if (distance > produced) throw new Error("distance before the start");
          produced += length;
        }
      }
    }
    if (final) return;
  }
}
