import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  listsToken,
  MAX_HEADER_FIELDS,
  parseRequestHead,
  type RequestHeadResult,
} from "../../src/protocol/http-request.js";

const HANDSHAKE =
  "GET /chat/lobby?x=1 HTTP/1.1\r\n" +
  "Host: example.test:8080\r\n" +
  "Upgrade: websocket\r\n" +
  "Connection: keep-alive, Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Sec-WebSocket-Version: 13\r\n" +
  "\r\n";

function parse(text: string, max?: number): RequestHeadResult {
  return parseRequestHead(Buffer.from(text, "latin1"), max);
}

function request(text: string) {
  const result = parse(text);
  if (result.kind !== "request")
    throw new Error(`expected a request, got ${JSON.stringify(result)}`);
  return result;
}

function refusal(text: string, max?: number) {
  const result = parse(text, max);
  if (result.kind !== "invalid") throw new Error(`expected a refusal, got ${result.kind}`);
  return result;
}

describe("parseRequestHead", () => {
  it("reads an opening handshake as node:http would present it", () => {
    const { request: req, headLength } = request(HANDSHAKE);
    expect(headLength).toBe(HANDSHAKE.length);
    expect(req.method).toBe("GET");
    expect(req.url).toBe("/chat/lobby?x=1");
    expect(req.httpVersion).toBe("1.1");
    expect({ ...req.headers }).toEqual({
      host: "example.test:8080",
      upgrade: "websocket",
      connection: "keep-alive, Upgrade",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      "sec-websocket-version": "13",
    });
    expect(req.rawHeaders.slice(0, 4)).toEqual([
      "Host",
      "example.test:8080",
      "Upgrade",
      "websocket",
    ]);
  });

  it("leaves the bytes after the head to the caller", () => {
    const frame = Buffer.from([0x81, 0x80, 1, 2, 3, 4]);
    const bytes = Buffer.concat([Buffer.from(HANDSHAKE, "latin1"), frame]);
    const result = parseRequestHead(bytes);
    expect(result.kind).toBe("request");
    if (result.kind === "request") expect(bytes.subarray(result.headLength)).toEqual(frame);
  });

  it("is incomplete at every split point before the blank line, and complete after it", () => {
    for (let cut = 0; cut < HANDSHAKE.length; cut++) {
      expect(parse(HANDSHAKE.slice(0, cut)).kind, `cut at ${cut}`).toBe("incomplete");
    }
    expect(parse(HANDSHAKE).kind).toBe("request");
  });

  it("skips empty lines before the request line (RFC 9112 section 2.2)", () => {
    const { request: req, headLength } = request(`\r\n\r\n${HANDSHAKE}`);
    expect(req.method).toBe("GET");
    expect(headLength).toBe(HANDSHAKE.length + 4);
  });

  it("trims optional whitespace around values and keeps inner whitespace", () => {
    const { request: req } = request(
      "GET / HTTP/1.1\r\nHost:  a \t\r\nX-List: a ,  b\r\nX-Empty:\r\n\r\n",
    );
    expect(req.headers.host).toBe("a");
    expect(req.headers["x-list"]).toBe("a ,  b");
    expect(req.headers["x-empty"]).toBe("");
  });

  it("combines repeated fields as node:http does", () => {
    const { request: req } = request(
      "GET / HTTP/1.1\r\nHost: h\r\n" +
        "Sec-WebSocket-Protocol: chat\r\nsec-websocket-protocol: superchat\r\n" +
        "Cookie: a=1\r\nCookie: b=2\r\n" +
        "Set-Cookie: x=1\r\nSet-Cookie: y=2\r\n" +
        "User-Agent: first\r\nUser-Agent: second\r\n\r\n",
    );
    expect(req.headers["sec-websocket-protocol"]).toBe("chat, superchat");
    expect(req.headers.cookie).toBe("a=1; b=2");
    expect(req.headers["set-cookie"]).toEqual(["x=1", "y=2"]);
    expect(req.headers["user-agent"]).toBe("first");
  });

  it("names a field by its lower-case name however it is spelled, and keeps the spelling raw", () => {
    const { request: req } = request(
      "GET / HTTP/1.1\r\nHOST: h\r\nSec-Websocket-Key: k\r\nsec-websocket-version: 13\r\n" +
        "Sec-WebSocket-Protocol: a\r\nSEC-WEBSOCKET-PROTOCOL: b\r\nX-Custom-Field: c\r\n\r\n",
    );
    expect(req.headers).toEqual({
      host: "h",
      "sec-websocket-key": "k",
      "sec-websocket-version": "13",
      "sec-websocket-protocol": "a, b",
      "x-custom-field": "c",
    });
    expect(req.rawHeaders.filter((_, i) => i % 2 === 0)).toEqual([
      "HOST",
      "Sec-Websocket-Key",
      "sec-websocket-version",
      "Sec-WebSocket-Protocol",
      "SEC-WEBSOCKET-PROTOCOL",
      "X-Custom-Field",
    ]);
  });

  it("treats a field named __proto__ as a field like any other", () => {
    const { request: req } = request("GET / HTTP/1.1\r\nHost: h\r\n__proto__: x\r\n\r\n");
    expect(Object.getOwnPropertyDescriptor(req.headers, "__proto__")?.value).toBe("x");
    expect(Object.keys(req.headers)).toEqual(["host", "__proto__"]);
  });

  it("passes obs-text (bytes 0x80-0xff) in values through as latin1", () => {
    const { request: req } = request("GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\n\r\n");
    expect(req.headers["x-name"]).toBe("caf\xe9");
  });

  it.each([
    ["a missing target", "GET HTTP/1.1\r\n\r\n", "HTTP_ERR_REQUEST_LINE"],
    ["two spaces", "GET  / HTTP/1.1\r\n\r\n", "HTTP_ERR_REQUEST_LINE"],
    ["a method that is not a token", "G(T / HTTP/1.1\r\n\r\n", "HTTP_ERR_REQUEST_LINE"],
    ["a target with a control character", "GET /a\x01b HTTP/1.1\r\n\r\n", "HTTP_ERR_REQUEST_LINE"],
    ["a malformed version", "GET / HTTP/1\r\n\r\n", "HTTP_ERR_VERSION"],
    ["a lower-case version", "GET / http/1.1\r\n\r\n", "HTTP_ERR_VERSION"],
    ["a two-digit minor version", "GET / HTTP/1.10\r\n\r\n", "HTTP_ERR_VERSION"],
    ["a version that is not digits", "GET / HTTP/1.x\r\n\r\n", "HTTP_ERR_VERSION"],
    ["a comma in the version", "GET / HTTP/1,1\r\n\r\n", "HTTP_ERR_VERSION"],
    ["a space after the version", "GET / HTTP/1.1 \r\n\r\n", "HTTP_ERR_REQUEST_LINE"],
    ["obsolete line folding", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", "HTTP_ERR_LINE_FOLDING"],
    ["a field line without a colon", "GET / HTTP/1.1\r\nHost h\r\n\r\n", "HTTP_ERR_FIELD_LINE"],
    ["space before the colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", "HTTP_ERR_FIELD_NAME"],
    ["an empty field name", "GET / HTTP/1.1\r\n: h\r\n\r\n", "HTTP_ERR_FIELD_NAME"],
    ["a bare LF inside a line", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", "HTTP_ERR_FIELD_VALUE"],
    ["a bare CR inside a value", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", "HTTP_ERR_FIELD_VALUE"],
    ["NUL in a value", "GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n", "HTTP_ERR_FIELD_VALUE"],
    ["DEL in a value", "GET / HTTP/1.1\r\nHost: h\x7f\r\n\r\n", "HTTP_ERR_FIELD_VALUE"],
    ["two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", "HTTP_ERR_DUPLICATE_HOST"],
  ])("refuses %s with 400", (_label, text, code) => {
    const result = refusal(text);
    expect(result.status).toBe(400);
    expect(result.code).toBe(code);
  });

  it("answers another major version with 505", () => {
    const result = refusal("GET / HTTP/2.0\r\nHost: h\r\n\r\n");
    expect(result).toMatchObject({ status: 505, code: "HTTP_ERR_VERSION" });
  });

  it("keeps HTTP/1.0 as its version (the handshake then refuses it)", () => {
    expect(request("GET / HTTP/1.0\r\n\r\n").request.httpVersion).toBe("1.0");
  });

  it("answers a head over the limit with 431, complete or not", () => {
    const big = `GET / HTTP/1.1\r\nHost: h\r\nX-Big: ${"a".repeat(200)}\r\n\r\n`;
    expect(refusal(big, 100)).toMatchObject({ status: 431, code: "HTTP_ERR_HEAD_TOO_LARGE" });
    expect(refusal(big.slice(0, 150), 100)).toMatchObject({ status: 431 });
    expect(parse(big.slice(0, 90), 100).kind).toBe("incomplete");
    expect(parse(big, big.length).kind).toBe("request");
  });

  it("answers too many fields with 431", () => {
    const fields = Array.from({ length: MAX_HEADER_FIELDS + 1 }, (_, i) => `X-${i}: v\r\n`).join(
      "",
    );
    expect(refusal(`GET / HTTP/1.1\r\n${fields}\r\n`)).toMatchObject({
      status: 431,
      code: "HTTP_ERR_TOO_MANY_FIELDS",
    });
    const fewer = fields.split("\r\n").slice(1).join("\r\n");
    expect(parse(`GET / HTTP/1.1\r\n${fewer}\r\n`).kind).toBe("request");
  });

  it("never throws, and what it accepts has token names and clean values", () => {
    const alphabet = fc.constantFrom(
      ..."GETPOST /?=:;,.-_ \t\r\n\r\nHost: ws13 \x00\x7f\xff()".split(""),
    );
    fc.assert(
      fc.property(
        fc.array(alphabet, { maxLength: 300 }),
        fc.uint8Array({ maxLength: 64 }),
        (chars, tail) => {
          const bytes = Buffer.concat([Buffer.from(chars.join(""), "latin1"), tail]);
          const result = parseRequestHead(bytes, 256);
          if (result.kind !== "request") return;
          expect(result.headLength).toBeLessThanOrEqual(256);
          for (const [name, value] of Object.entries(result.request.headers)) {
            expect(name).toMatch(/^[!#$%&'*+\-.^_`|~0-9a-z]+$/);
            for (const v of Array.isArray(value) ? value : [value]) {
              expect(v).not.toMatch(/^[ \t]|[ \t]$/);
              expect([...v].every((c) => c === "\t" || (c >= " " && c !== "\x7f"))).toBe(true);
            }
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("listsToken", () => {
  it("finds a token in a comma list, in any case, across repeated fields", () => {
    expect(listsToken("keep-alive, Upgrade", "upgrade")).toBe(true);
    expect(listsToken(["close", " UPGRADE "], "upgrade")).toBe(true);
    expect(listsToken("upgrades", "upgrade")).toBe(false);
    expect(listsToken(undefined, "upgrade")).toBe(false);
  });
});
