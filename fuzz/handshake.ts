/**
 * Fuzz targets for the opening handshake and permessage-deflate negotiation:
 *
 * - handshake-parse: random and corrupted header text.
 *   - parseExtensions() accepts exactly what an independent regular-expression rendering of the
 *     RFC 6455 section 9.1 grammar accepts (with RFC 7230 list rules: empty elements and optional
 *     whitespace), and returns the same extensions and parameters; it throws only HandshakeError.
 *   - negotiateServer() on anything parsed answers null or a response our parser reads back as
 *     one permessage-deflate element with window bits in 8..15 (RFC 7692 section 7.1.2).
 *   - serverHandshake() never throws (bar the documented TypeError for a selectProtocol that
 *     picks something not offered); its response serializes; a rejection carries its error's
 *     status; a 101 carries Sec-WebSocket-Accept for the key sent (section 4.2.2).
 *   - validateServerResponse() and acceptServerResponse() throw only HandshakeError.
 * - handshake-negotiate: random client and server preferences. The server accepts our own
 *   offer, the client accepts the server's answer, both agree on the parameters, the section 7.1
 *   promises hold (a no_context_takeover asked for is kept, window bits never exceed what either
 *   side allowed), and codecs built from the agreement round-trip messages both ways, checked by
 *   a strict inflater with exactly the agreed window and context rules.
 */
import zlib from "node:zlib";
import { PerMessageDeflate } from "../src/connection/deflate.js";
import { Limiter } from "../src/connection/zlib-limiter.js";
import { HandshakeError, parseExtensions } from "../src/protocol/extension-header.js";
import {
  acceptKey,
  clientRequestHeaders,
  serializeResponse,
  serverHandshake,
  validateServerResponse,
} from "../src/protocol/handshake.js";
import {
  acceptServerResponse,
  clientOffer,
  type DeflateParams,
  negotiateServer,
  type PerMessageDeflateOptions,
} from "../src/protocol/permessage-deflate.js";
import type { Random } from "./random.js";
import { searchLoop, type Target, Violation } from "./target.js";

// ───────────────────────────── random header text ─────────────────────────────

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const NAMES = [
  "permessage-deflate",
  "server_no_context_takeover",
  "client_no_context_takeover",
  "server_max_window_bits",
  "client_max_window_bits",
  "x-webkit-deflate-frame",
  "foo",
];
/** Window-bit values in range, out of range, and not quite decimal integers. */
const VALUES = ["8", "9", "10", "15", "16", "7", "08", "0", "", "1e1", "015", " 9", "9 "];

function token(random: Random): string {
  if (random.chance(0.5)) return random.pick(NAMES);
  let s = "";
  for (let n = 1 + random.int(6); n > 0; n--) s += random.pick([...TOKEN_CHARS]);
  return s;
}

function quoted(random: Random): string {
  let s = '"';
  for (let n = random.int(5); n > 0; n--) {
    const k = random.int(10);
    if (k < 6) s += random.pick([...TOKEN_CHARS]);
    else if (k < 8) {
      s += `\\${random.pick([...TOKEN_CHARS, '"', "\\", " ", ",", ";", "\t", "\x7f", "\xff", "é"])}`;
    } else s += random.pick([" ", ",", ";", "=", "\t", "\x80", "\u0100", "\x00", "\\"]);
  }
  if (random.chance(0.95)) s += '"';
  return s;
}

function whitespace(random: Random): string {
  return random.chance(0.7) ? "" : random.pick([" ", "  ", "\t", " \t "]);
}

function value(random: Random): string {
  switch (random.int(4)) {
    case 0:
      return random.pick(VALUES);
    case 1:
      return `"${random.pick(VALUES)}"`;
    case 2:
      return quoted(random);
    default:
      return token(random);
  }
}

function extension(random: Random): string {
  let s = token(random) + whitespace(random);
  for (let n = random.int(4); n > 0; n--) {
    s += `;${whitespace(random)}${token(random)}${whitespace(random)}`;
    if (random.chance(0.5)) s += `=${whitespace(random)}${value(random)}${whitespace(random)}`;
  }
  return s;
}

/** A header line: a list of extensions, often well-formed, then maybe a few characters changed. */
function headerLine(random: Random): string {
  let s = whitespace(random);
  for (let n = random.int(4); n > 0; n--) {
    if (random.chance(0.85)) s += extension(random);
    s += whitespace(random);
    if (n > 1) s += `,${whitespace(random)}`;
  }
  const odd = [",", ";", "=", '"', "\\", " ", "\t", "\r", "\n", "\x00", "\x7f", "\x80", "\xff"];
  const corruptions = random.chance(0.5) ? random.int(3) : 0;
  for (let i = 0; i < corruptions; i++) {
    const at = random.int(s.length + 1);
    const c = random.pick([...odd, "é", "\u{1F600}", "a"]);
    s = random.chance(0.5) ? s.slice(0, at) + c + s.slice(at) : s.slice(0, at) + s.slice(at + 1);
  }
  return s;
}

/** Any header value: absent, repeated, huge, or random text. */
function headerValue(random: Random): string | string[] | undefined {
  switch (random.int(10)) {
    case 0:
      return undefined;
    case 1:
      return Array.from({ length: random.int(50) }, () => headerLine(random));
    case 2:
      return "x".repeat(random.int(200_000));
    case 3:
      return Array.from({ length: 1 + random.int(3) }, () =>
        random.pick(["websocket", "Upgrade", "13", "", " ", "keep-alive, Upgrade", "WebSocket"]),
      );
    case 4:
      return String.fromCharCode(
        ...Array.from({ length: random.int(30) }, () => random.int(0x3000)),
      );
    default:
      return headerLine(random);
  }
}

function deflateOptions(random: Random): PerMessageDeflateOptions {
  const o: PerMessageDeflateOptions = {};
  if (random.chance(0.4)) o.serverNoContextTakeover = random.chance(0.7);
  if (random.chance(0.4)) o.clientNoContextTakeover = random.chance(0.7);
  if (random.chance(0.4)) o.serverMaxWindowBits = 8 + random.int(8);
  if (random.chance(0.4)) o.clientMaxWindowBits = 8 + random.int(8);
  return o;
}

/** A Sec-WebSocket-Key from the seeded generator, so runs reproduce. */
function key(random: Random): string {
  return random.bytes(16).toString("base64");
}

// ───────────────────────────── the reference grammar ─────────────────────────────

// RFC 6455 section 9.1 with RFC 7230 tokens, quoted-strings and optional whitespace.
const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const QUOTED =
  '"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t\\x20-\\x7e\\x80-\\xff])*"';
const EXTENSION = `${TOKEN}[ \\t]*(?:;[ \\t]*${TOKEN}[ \\t]*(?:=[ \\t]*(?:${TOKEN}|${QUOTED})[ \\t]*)?)*`;
const LINE = new RegExp(
  `^[ \\t]*(?:(?:${EXTENSION})[ \\t]*)?(?:,[ \\t]*(?:(?:${EXTENSION})[ \\t]*)?)*$`,
);
const TOKEN_ONLY = new RegExp(`^${TOKEN}$`);

type Parsed = Array<{ name: string; params: Array<[string, string | true]> }>;

function splitOutsideQuotes(s: string, separator: string): string[] {
  const parts: string[] = [];
  let current = "";
  let inQuotes = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inQuotes) {
      current += c;
      if (c === "\\") current += s[++i] ?? "";
      else if (c === '"') inQuotes = false;
    } else if (c === '"') {
      inQuotes = true;
      current += c;
    } else if (c === separator) {
      parts.push(current);
      current = "";
    } else {
      current += c;
    }
  }
  parts.push(current);
  return parts;
}

/** The extensions of one header line by the reference grammar, or null if it does not match. */
function referenceParse(line: string): Parsed | null {
  if (!LINE.test(line)) return null;
  const out: Parsed = [];
  for (const element of splitOutsideQuotes(line, ",")) {
    if (element.trim() === "") continue;
    const [head, ...params] = splitOutsideQuotes(element, ";");
    const ext = { name: head.trim(), params: [] as Array<[string, string | true]> };
    for (const p of params) {
      const eq = p.indexOf("=");
      if (eq < 0) {
        ext.params.push([p.trim(), true]);
        continue;
      }
      let v = p.slice(eq + 1).trim();
      if (v.startsWith('"')) {
        // Section 9.1: a quoted value must be a token once unescaped.
        v = v.slice(1, -1).replace(/\\(.)/gs, "$1");
        if (!TOKEN_ONLY.test(v)) return null;
      }
      ext.params.push([p.slice(0, eq).trim(), v]);
    }
    out.push(ext);
  }
  return out;
}

function inWindowRange(bits: number): boolean {
  return bits >= 8 && bits <= 15;
}

// ───────────────────────────── handshake-parse ─────────────────────────────

const parseCounters = { headers: 0, accepted: 0, handshakes: 0, upgrades: 0, responses: 0 };

function checkExtensionHeader(random: Random): string[] {
  const lines = random.chance(0.8)
    ? [headerLine(random)]
    : Array.from({ length: 1 + random.int(4) }, () => headerLine(random));
  let parsed: Parsed | null;
  try {
    parsed = parseExtensions(lines.length === 1 ? lines[0] : lines);
  } catch (error) {
    if (!(error instanceof HandshakeError)) {
      throw new Violation(`parseExtensions threw ${String(error)}`, { lines });
    }
    parsed = null;
  }
  const perLine = lines.map(referenceParse);
  const reference = perLine.some((r) => r === null) ? null : (perLine.flat() as Parsed);
  parseCounters.headers++;
  if ((parsed === null) !== (reference === null)) {
    throw new Violation(
      `parseExtensions ${parsed === null ? "refused" : "accepted"} what the grammar ${reference === null ? "refuses" : "accepts"}`,
      { lines, parsed, reference },
    );
  }
  if (parsed === null) return lines;
  if (JSON.stringify(parsed) !== JSON.stringify(reference)) {
    throw new Violation("parseExtensions read it differently from the grammar", {
      lines,
      parsed,
      reference,
    });
  }
  parseCounters.accepted++;

  const serverOptions = deflateOptions(random);
  const negotiated = negotiateServer(parsed, serverOptions);
  if (negotiated) {
    const back = parseExtensions(negotiated.response);
    if (back.length !== 1 || back[0].name !== "permessage-deflate") {
      throw new Violation("the server's response is not one permessage-deflate element", {
        lines,
        serverOptions,
        negotiated,
      });
    }
    const { serverMaxWindowBits, clientMaxWindowBits } = negotiated.params;
    if (!inWindowRange(serverMaxWindowBits) || !inWindowRange(clientMaxWindowBits)) {
      throw new Violation("negotiated window bits outside 8..15", {
        lines,
        serverOptions,
        negotiated,
      });
    }
  }
  const clientOptions = deflateOptions(random);
  try {
    const p = acceptServerResponse(parsed, clientOptions);
    if (!inWindowRange(p.serverMaxWindowBits) || !inWindowRange(p.clientMaxWindowBits)) {
      throw new Violation("accepted window bits outside 8..15", { lines, clientOptions, p });
    }
  } catch (error) {
    if (!(error instanceof HandshakeError)) {
      throw new Violation(`acceptServerResponse threw ${String(error)}`, { lines, clientOptions });
    }
  }
  return lines;
}

function checkServerHandshake(random: Random, extensionLines: string[]): void {
  const sentKey = random.chance(0.7)
    ? key(random)
    : random.pick([
        "",
        "abc",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        "AAAAAAAAAAAAAAAAAAAAAB==",
        `${key(random)} `,
        key(random).slice(1),
      ]);
  const headers: Record<string, string | string[] | undefined> = {
    host: random.chance(0.9) ? "example.com" : (headerValue(random) as string | undefined),
    upgrade: random.chance(0.8) ? "websocket" : headerValue(random),
    connection: random.chance(0.8) ? "Upgrade" : headerValue(random),
    "sec-websocket-version": random.chance(0.9) ? "13" : headerValue(random),
    "sec-websocket-key": random.chance(0.95) ? sentKey : headerValue(random),
    "sec-websocket-protocol": random.chance(0.5)
      ? headerValue(random)
      : random.pick([undefined, "chat", "chat, superchat", "a,b,,c", "a, a"]),
    "sec-websocket-extensions": random.chance(0.6) ? extensionLines : headerValue(random),
  };
  for (let n = random.int(3); n > 0; n--)
    headers[token(random).toLowerCase()] = headerValue(random);
  const request = {
    method: random.chance(0.9) ? "GET" : random.pick(["POST", "get", "", "GET "]),
    httpVersion: random.chance(0.9)
      ? "1.1"
      : random.pick(["1.0", "2.0", "1.10", "x", "", "01.1", "1.1.1"]),
    url: "/",
    headers,
  };
  // 0: no selector; 1: picks an offered protocol; 2: picks none; 3: may pick one not offered.
  const selector = random.int(4);
  const selectorSeed = random.fork();
  const perMessageDeflate = random.chance(0.7) ? deflateOptions(random) : false;
  const input = () => ({ request, selector, selectorSeed, perMessageDeflate });
  let result: ReturnType<typeof serverHandshake>;
  try {
    let pickIndex = selectorSeed;
    result = serverHandshake(request, {
      perMessageDeflate,
      selectProtocol:
        selector === 0
          ? undefined
          : (offered) => {
              const i = pickIndex++;
              if (selector === 1) return offered[i % offered.length];
              if (selector === 2) return [undefined, null, ""][i % 3];
              return [...offered, "nope"][i % (offered.length + 1)];
            },
    });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (
      error instanceof TypeError &&
      code === "WS_ERR_INVALID_SELECTED_PROTOCOL" &&
      selector === 3
    ) {
      return;
    }
    throw new Violation(`serverHandshake threw ${String(error)}`, input());
  }
  parseCounters.handshakes++;
  let text: string;
  try {
    text = serializeResponse(result.response);
  } catch (error) {
    throw new Violation(`serializeResponse threw on serverHandshake's response: ${error}`, input());
  }
  if (!result.ok) {
    if (!(result.error instanceof HandshakeError)) {
      throw new Violation("error is not a HandshakeError", input());
    }
    if (result.response.status !== result.error.status) {
      throw new Violation(
        `status ${result.response.status} for an error of status ${result.error.status}`,
        input(),
      );
    }
    return;
  }
  parseCounters.upgrades++;
  if (!text.startsWith("HTTP/1.1 101 ")) {
    throw new Violation("accepted without a 101", { ...input(), text });
  }
  // Section 4.2.2 step 5.4: the accept value is derived from the key as sent, less the optional
  // whitespace around a header value (RFC 7230 section 3.2.4).
  const accept = result.response.headers.find(([n]) => n === "Sec-WebSocket-Accept")?.[1];
  const trimmedKey = (headers["sec-websocket-key"] as string).replace(/^[ \t]+|[ \t]+$/g, "");
  if (accept !== acceptKey(trimmedKey)) {
    throw new Violation(`wrong Sec-WebSocket-Accept ${accept}`, input());
  }

  const responseHeaders: Record<string, string | string[]> = {};
  for (const [n, v] of result.response.headers) responseHeaders[n.toLowerCase()] = v;
  const offeredProtocols =
    typeof headers["sec-websocket-protocol"] === "string"
      ? headers["sec-websocket-protocol"]
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s)
      : [];
  try {
    validateServerResponse({ status: 101, headers: responseHeaders }, trimmedKey, {
      protocols: offeredProtocols,
      perMessageDeflate: result.deflate ? {} : false,
    });
  } catch (error) {
    if (!(error instanceof HandshakeError)) {
      throw new Violation(`validateServerResponse threw ${String(error)}`, input());
    }
  }
}

function checkClientValidation(random: Random): void {
  const sentKey = key(random);
  const headers: Record<string, string | string[] | undefined> = {
    upgrade: random.chance(0.8) ? "websocket" : headerValue(random),
    connection: random.chance(0.8) ? "Upgrade" : headerValue(random),
    "sec-websocket-accept": random.chance(0.8) ? acceptKey(sentKey) : headerValue(random),
    "sec-websocket-protocol": random.chance(0.5)
      ? undefined
      : random.chance(0.5)
        ? headerValue(random)
        : random.pick(["chat", "", "a, b"]),
    "sec-websocket-extensions": random.chance(0.3)
      ? undefined
      : random.chance(0.5)
        ? [headerLine(random)]
        : headerValue(random),
  };
  const options = {
    protocols: random.chance(0.5) ? ["chat", "superchat"] : [],
    perMessageDeflate: random.chance(0.7) ? deflateOptions(random) : (false as const),
  };
  const status = random.chance(0.9) ? 101 : random.int(600);
  parseCounters.responses++;
  try {
    const r = validateServerResponse({ status, headers }, sentKey, options);
    if (
      r.deflate &&
      (!inWindowRange(r.deflate.serverMaxWindowBits) ||
        !inWindowRange(r.deflate.clientMaxWindowBits))
    ) {
      throw new Violation("accepted window bits outside 8..15", { status, headers, options, r });
    }
  } catch (error) {
    if (error instanceof Violation) throw error;
    if (!(error instanceof HandshakeError)) {
      throw new Violation(`validateServerResponse threw ${String(error)}`, {
        status,
        headers,
        options,
      });
    }
  }
}

// ───────────────────────────── handshake-negotiate ─────────────────────────────

const negotiateCounters = { agreements: new Set<string>(), messages: 0 };

function message(random: Random): Buffer {
  const n = random.chance(0.1) ? random.int(100_000) : random.int(3000);
  switch (random.int(6)) {
    case 0:
      return Buffer.alloc(0);
    case 1:
      return random.bytes(n);
    case 2: {
      // A random block repeated at a period that crosses small windows (256..2000 bytes), so a
      // compressor that ignored the agreed window would reach back too far.
      const block = random.bytes(200 + random.int(1800));
      const out = Buffer.alloc(n);
      for (let i = 0; i < n; i++) out[i] = block[i % block.length];
      return out;
    }
    case 3:
      return Buffer.from("hello world ".repeat(1 + random.int(500)));
    default:
      return Buffer.from(Array.from({ length: n }, () => 97 + random.int(4)));
  }
}

/**
 * Inflates what one side sent exactly as the agreement allows: the sender's window (small
 * output chunks so the window truly bounds distances) and, when the sender promised no context
 * takeover (RFC 7692 section 7.1.1), a fresh inflater for every message.
 */
class StrictInflater {
  private stream: zlib.InflateRaw | null = null;

  constructor(
    private readonly windowBits: number,
    private readonly noContextTakeover: boolean,
  ) {}

  async inflate(data: Buffer, fin: boolean): Promise<Buffer> {
    if (this.stream === null) {
      this.stream = zlib.createInflateRaw({ windowBits: this.windowBits, chunkSize: 64 });
    }
    const stream = this.stream;
    const input = fin ? Buffer.concat([data, Buffer.from([0, 0, 0xff, 0xff])]) : data;
    const out = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const onData = (c: Buffer) => chunks.push(c);
      const onError = (e: Error) => {
        stream.off("data", onData);
        reject(e);
      };
      stream.on("data", onData);
      stream.once("error", onError);
      stream.write(input);
      stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        stream.off("data", onData);
        stream.off("error", onError);
        resolve(Buffer.concat(chunks));
      });
    });
    if (fin && this.noContextTakeover) this.close();
    return out;
  }

  close(): void {
    this.stream?.close();
    this.stream = null;
  }
}

const limiter = new Limiter(4);

async function negotiation(random: Random): Promise<void> {
  const clientOptions = deflateOptions(random);
  const serverOptions = deflateOptions(random);
  const offer = clientOffer(clientOptions);
  // Our offer may travel among other extensions, and on several header lines.
  const line = random.chance(0.5)
    ? offer
    : random.pick([`foo, ${offer}`, `${offer}, permessage-deflate; bogus`, `x; a=1,${offer}`]);
  const header = random.chance(0.8) ? line : [line, "bar"];
  const input: Record<string, unknown> = { clientOptions, serverOptions, header };
  const negotiated = negotiateServer(parseExtensions(header), serverOptions);
  if (negotiated === null) throw new Violation("the server declined our own valid offer", input);
  input.response = negotiated.response;
  let agreed: DeflateParams;
  try {
    agreed = acceptServerResponse(parseExtensions(negotiated.response), clientOptions);
  } catch (error) {
    throw new Violation(`the client rejected the answer to its own offer: ${error}`, input);
  }
  if (JSON.stringify(agreed) !== JSON.stringify(negotiated.params)) {
    throw new Violation("the two sides disagree", {
      ...input,
      server: negotiated.params,
      client: agreed,
    });
  }
  // RFC 7692 section 7.1: what either side asked for is kept, and neither window grows past
  // what either side allowed.
  const p = agreed;
  const broken: string[] = [];
  for (const [side, o] of [
    ["client", clientOptions],
    ["server", serverOptions],
  ] as const) {
    if (o.serverNoContextTakeover && !p.serverNoContextTakeover) {
      broken.push(`${side}'s server_no_context_takeover dropped`);
    }
    if (o.clientNoContextTakeover && !p.clientNoContextTakeover) {
      broken.push(`${side}'s client_no_context_takeover dropped`);
    }
    if (o.serverMaxWindowBits !== undefined && p.serverMaxWindowBits > o.serverMaxWindowBits) {
      broken.push(
        `server window ${p.serverMaxWindowBits} above the ${side}'s ${o.serverMaxWindowBits}`,
      );
    }
    if (o.clientMaxWindowBits !== undefined && p.clientMaxWindowBits > o.clientMaxWindowBits) {
      broken.push(
        `client window ${p.clientMaxWindowBits} above the ${side}'s ${o.clientMaxWindowBits}`,
      );
    }
  }
  if (broken.length > 0) throw new Violation(broken.join("; "), { ...input, agreed });
  negotiateCounters.agreements.add(JSON.stringify(p));

  // The same through the handshake functions.
  const sentKey = key(random);
  const requestHeaders: Record<string, string> = { host: "h" };
  for (const [n, v] of Object.entries(
    clientRequestHeaders(sentKey, { perMessageDeflate: clientOptions }),
  )) {
    requestHeaders[n.toLowerCase()] = v;
  }
  const handshake = serverHandshake(
    { method: "GET", httpVersion: "1.1", url: "/", headers: requestHeaders },
    { perMessageDeflate: serverOptions },
  );
  if (!handshake.ok) throw new Violation(`the handshake failed: ${handshake.error.message}`, input);
  const responseHeaders: Record<string, string> = {};
  for (const [n, v] of handshake.response.headers) responseHeaders[n.toLowerCase()] = v;
  const validated = validateServerResponse({ status: 101, headers: responseHeaders }, sentKey, {
    perMessageDeflate: clientOptions,
  });
  if (JSON.stringify(validated.deflate) !== JSON.stringify(handshake.deflate)) {
    throw new Violation("the handshakes disagree", {
      ...input,
      client: validated.deflate,
      server: handshake.deflate,
    });
  }

  // Codecs built from the agreement round-trip messages both ways.
  const server = new PerMessageDeflate(p, "server", { limiter, threshold: 0 });
  const client = new PerMessageDeflate(p, "client", { limiter, threshold: 0 });
  const fromServer = new StrictInflater(p.serverMaxWindowBits, p.serverNoContextTakeover);
  const fromClient = new StrictInflater(p.clientMaxWindowBits, p.clientNoContextTakeover);
  const sent: Array<{ serverSent: boolean; length: number; fragments: number }> = [];
  try {
    for (let m = 3 + random.int(8); m > 0; m--) {
      const serverSends = random.chance(0.5);
      const [sender, receiver, strict] = serverSends
        ? [server, client, fromServer]
        : [client, server, fromClient];
      const data = message(random);
      const fragments = random.chance(0.7) ? 1 : 1 + random.int(4);
      sent.push({ serverSent: serverSends, length: data.length, fragments });
      const cuts = Array.from({ length: fragments - 1 }, () => random.int(data.length + 1)).sort(
        (a, b) => a - b,
      );
      const bounds = [0, ...cuts, data.length];
      const received: Buffer[] = [];
      for (let f = 0; f + 1 < bounds.length; f++) {
        const fin = f + 2 === bounds.length;
        const compressed = await sender.compress(data.subarray(bounds[f], bounds[f + 1]), fin);
        let strictOutput: Buffer;
        try {
          strictOutput = await strict.inflate(compressed, fin);
        } catch (error) {
          throw new Violation(`compressed data breaks the agreement: ${error}`, {
            ...input,
            agreed,
            sent,
          });
        }
        const inflated = Buffer.concat(await receiver.decompress(compressed, fin, 1 << 30));
        if (!strictOutput.equals(inflated)) {
          throw new Violation("the strict inflater and the codec disagree", {
            ...input,
            agreed,
            sent,
          });
        }
        received.push(inflated);
      }
      if (!Buffer.concat(received).equals(data)) {
        throw new Violation("a message did not round-trip", { ...input, agreed, sent });
      }
      negotiateCounters.messages++;
    }
  } finally {
    server.close();
    client.close();
    fromServer.close();
    fromClient.close();
  }
}

export const handshakeTargets: Target[] = [
  {
    name: "handshake-parse",
    summary: "extension headers match the RFC 6455 9.1 grammar; handshake functions never throw",
    async run(options) {
      for (const k of Object.keys(parseCounters) as Array<keyof typeof parseCounters>)
        parseCounters[k] = 0;
      const { runs, failure } = await searchLoop(
        options,
        (random) => {
          const lines = checkExtensionHeader(random);
          checkServerHandshake(random, lines);
          checkClientValidation(random);
        },
        50,
      );
      return {
        runs,
        failure,
        stats: {
          "headers accepted": parseCounters.accepted,
          "server handshakes": parseCounters.handshakes,
          upgrades: parseCounters.upgrades,
          "client validations": parseCounters.responses,
        },
      };
    },
  },
  {
    name: "handshake-negotiate",
    summary: "permessage-deflate: both sides agree, RFC 7692 7.1 holds, codecs round-trip strictly",
    async run(options) {
      negotiateCounters.agreements.clear();
      negotiateCounters.messages = 0;
      const { runs, failure } = await searchLoop(options, negotiation);
      return {
        runs,
        failure,
        stats: {
          "distinct agreements": negotiateCounters.agreements.size,
          "messages round-tripped": negotiateCounters.messages,
        },
      };
    },
  },
];
