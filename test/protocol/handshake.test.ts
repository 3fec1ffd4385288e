import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  acceptKey,
  type ClientHandshakeOptions,
  clientRequestHeaders,
  errorResponse,
  generateKey,
  HandshakeError,
  type ServerHandshakeOptions,
  type ServerHandshakeResult,
  serializeResponse,
  serverHandshake,
  type UpgradeRequest,
  validateServerResponse,
} from "../../src/protocol/handshake.js";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
// The sample of RFC 6455 section 1.3: base64(SHA-1(key + GUID)).
const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

type Headers = Record<string, string | string[] | undefined>;

function request(headers: Headers = {}, overrides: Partial<UpgradeRequest> = {}): UpgradeRequest {
  return {
    method: "GET",
    httpVersion: "1.1",
    url: "/chat",
    headers: {
      host: "server.example.com",
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": KEY,
      "sec-websocket-version": "13",
      ...headers,
    },
    ...overrides,
  };
}

function header(response: { headers: Array<[string, string]> }, name: string): string | undefined {
  return response.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

function expectOk(result: ServerHandshakeResult): Extract<ServerHandshakeResult, { ok: true }> {
  if (!result.ok) throw new Error(`handshake failed: ${result.error.code}`);
  return result;
}

describe("acceptKey and generateKey", () => {
  it("computes the RFC 6455 section 1.3 sample", () => {
    expect(acceptKey(KEY)).toBe(ACCEPT);
  });

  it("generates distinct keys of 16 random bytes", () => {
    const keys = new Set(Array.from({ length: 50 }, generateKey));
    expect(keys.size).toBe(50);
    for (const key of keys) {
      expect(Buffer.from(key, "base64")).toHaveLength(16);
      expect(expectOk(serverHandshake(request({ "sec-websocket-key": key }))).ok).toBe(true);
    }
  });
});

describe("the key's form (section 4.2.1 item 4)", () => {
  it("accepts exactly the canonical base64 of 16 bytes", () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ ";
    fc.assert(
      fc.property(
        fc.oneof(
          fc
            .uint8Array({ minLength: 16, maxLength: 16 })
            .map((b) => Buffer.from(b).toString("base64")),
          fc.string({ unit: fc.constantFrom(...alphabet), minLength: 22, maxLength: 26 }),
        ),
        (key) => {
          const bytes = Buffer.from(key, "base64");
          const canonical = bytes.length === 16 && bytes.toString("base64") === key;
          const result = serverHandshake(request({ "sec-websocket-key": key }));
          expect(result.ok).toBe(canonical);
          if (result.ok) {
            const sha1 = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`);
            expect(result.response.headers).toContainEqual([
              "Sec-WebSocket-Accept",
              sha1.digest("base64"),
            ]);
          }
        },
      ),
      { numRuns: 2_000 },
    );
  });
});

describe("serverHandshake accepts", () => {
  it("the RFC 6455 section 1.2 example", () => {
    const result = expectOk(
      serverHandshake(
        request({
          "sec-websocket-protocol": "chat, superchat",
          origin: "http://example.com",
        }),
        { selectProtocol: (offered) => offered[0] },
      ),
    );
    expect(result.response.status).toBe(101);
    expect(result.response.statusText).toBe("Switching Protocols");
    expect(result.response.headers).toEqual([
      ["Upgrade", "websocket"],
      ["Connection", "Upgrade"],
      ["Sec-WebSocket-Accept", ACCEPT],
      ["Sec-WebSocket-Protocol", "chat"],
    ]);
    expect(result.protocol).toBe("chat");
    expect(result.extensions).toBe("");
    expect(result.deflate).toBeNull();
    expect(serializeResponse(result.response)).toBe(
      "HTTP/1.1 101 Switching Protocols\r\n" +
        "Upgrade: websocket\r\n" +
        "Connection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${ACCEPT}\r\n` +
        "Sec-WebSocket-Protocol: chat\r\n" +
        "\r\n",
    );
  });

  it.each<[string, Headers, Partial<UpgradeRequest>?]>([
    ["upgrade in any case", { upgrade: "WebSocket" }],
    ["upgrade in a token list", { upgrade: "foo/2, websocket" }],
    ["upgrade on several lines", { upgrade: ["h2c", "websocket"] }],
    ["connection in any case", { connection: "UPGRADE" }],
    ["connection in a token list", { connection: "keep-alive, Upgrade" }],
    ["connection with odd spacing", { connection: " keep-alive ,\tupgrade ," }],
    ["connection on several lines", { connection: ["keep-alive", "Upgrade"] }],
    ["a host with a port", { host: "127.0.0.1:8080" }],
    ["a host given as a one-element array", { host: ["example.com"] }],
    ["HTTP/2.0", {}, { httpVersion: "2.0" }],
    ["HTTP/1.2", {}, { httpVersion: "1.2" }],
    ["an empty extensions header", { "sec-websocket-extensions": "" }],
    ["unknown extensions", { "sec-websocket-extensions": "x-foo; bar=1, baz" }],
    ["an empty protocol header", { "sec-websocket-protocol": "" }],
  ])("%s", (_, headers, overrides) => {
    const result = expectOk(serverHandshake(request(headers, overrides)));
    expect(header(result.response, "Sec-WebSocket-Accept")).toBe(ACCEPT);
    expect(header(result.response, "Sec-WebSocket-Extensions")).toBeUndefined();
  });
});

describe("serverHandshake rejects", () => {
  type Row = [
    description: string,
    headers: Headers,
    overrides: Partial<UpgradeRequest>,
    code: string,
    status: number,
  ];
  const rows: Row[] = [
    ["POST", {}, { method: "POST" }, "WS_ERR_HANDSHAKE_METHOD", 405],
    ["HEAD", {}, { method: "HEAD" }, "WS_ERR_HANDSHAKE_METHOD", 405],
    ["a lower-case method", {}, { method: "get" }, "WS_ERR_HANDSHAKE_METHOD", 405],
    ["HTTP/1.0", {}, { httpVersion: "1.0" }, "WS_ERR_HANDSHAKE_HTTP_VERSION", 400],
    ["HTTP/0.9", {}, { httpVersion: "0.9" }, "WS_ERR_HANDSHAKE_HTTP_VERSION", 400],
    ["a malformed version", {}, { httpVersion: "1.x" }, "WS_ERR_HANDSHAKE_HTTP_VERSION", 400],
    ["an empty version", {}, { httpVersion: "" }, "WS_ERR_HANDSHAKE_HTTP_VERSION", 400],
    ["no Host", { host: undefined }, {}, "WS_ERR_HANDSHAKE_HOST", 400],
    ["an empty Host", { host: "" }, {}, "WS_ERR_HANDSHAKE_HOST", 400],
    ["two Hosts", { host: ["a", "b"] }, {}, "WS_ERR_HANDSHAKE_HOST", 400],
    ["a Host with a space", { host: "a b" }, {}, "WS_ERR_HANDSHAKE_HOST", 400],
    ["no Upgrade", { upgrade: undefined }, {}, "WS_ERR_HANDSHAKE_UPGRADE", 400],
    ["another Upgrade", { upgrade: "h2c" }, {}, "WS_ERR_HANDSHAKE_UPGRADE", 400],
    ["a versioned websocket", { upgrade: "websocket/13" }, {}, "WS_ERR_HANDSHAKE_UPGRADE", 400],
    ["a misspelt Upgrade", { upgrade: "websockets" }, {}, "WS_ERR_HANDSHAKE_UPGRADE", 400],
    ["no Connection", { connection: undefined }, {}, "WS_ERR_HANDSHAKE_CONNECTION", 400],
    [
      "Connection: keep-alive",
      { connection: "keep-alive" },
      {},
      "WS_ERR_HANDSHAKE_CONNECTION",
      400,
    ],
    [
      "upgrade only as a substring",
      { connection: "upgraded, keep-alive" },
      {},
      "WS_ERR_HANDSHAKE_CONNECTION",
      400,
    ],
    ["no version", { "sec-websocket-version": undefined }, {}, "WS_ERR_HANDSHAKE_VERSION", 426],
    ["version 8", { "sec-websocket-version": "8" }, {}, "WS_ERR_HANDSHAKE_VERSION", 426],
    ["version 14", { "sec-websocket-version": "14" }, {}, "WS_ERR_HANDSHAKE_VERSION", 426],
    ["version 013", { "sec-websocket-version": "013" }, {}, "WS_ERR_HANDSHAKE_VERSION", 426],
    ["a version list", { "sec-websocket-version": "13, 8" }, {}, "WS_ERR_HANDSHAKE_VERSION", 426],
    [
      "two version lines",
      { "sec-websocket-version": ["13", "13"] },
      {},
      "WS_ERR_HANDSHAKE_VERSION",
      426,
    ],
    [
      "hixie-76 (no version, no key)",
      { "sec-websocket-version": undefined, "sec-websocket-key": undefined },
      {},
      "WS_ERR_HANDSHAKE_VERSION",
      426,
    ],
    ["no key", { "sec-websocket-key": undefined }, {}, "WS_ERR_HANDSHAKE_KEY", 400],
    ["an empty key", { "sec-websocket-key": "" }, {}, "WS_ERR_HANDSHAKE_KEY", 400],
    [
      "a key of 15 bytes",
      { "sec-websocket-key": Buffer.alloc(15, 1).toString("base64") },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    [
      "a key of 17 bytes",
      { "sec-websocket-key": Buffer.alloc(17, 1).toString("base64") },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    [
      "a key without padding",
      { "sec-websocket-key": KEY.slice(0, 22) },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    [
      "a base64url key",
      { "sec-websocket-key": "-_-_-_-_-_-_-_-_-_-_-A==" },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    [
      "a key with non-zero padding bits",
      { "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZR==" },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    [
      "a key with an inner space",
      { "sec-websocket-key": "dGhlIHNhbXBs ZSBub25jZQ==" },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    ["two keys", { "sec-websocket-key": [KEY, KEY] }, {}, "WS_ERR_HANDSHAKE_KEY", 400],
    [
      "two keys joined by node",
      { "sec-websocket-key": `${KEY}, ${KEY}` },
      {},
      "WS_ERR_HANDSHAKE_KEY",
      400,
    ],
    [
      "a protocol that is not a token",
      { "sec-websocket-protocol": "chat, super chat" },
      {},
      "WS_ERR_INVALID_PROTOCOL_HEADER",
      400,
    ],
    [
      "a protocol with a separator",
      { "sec-websocket-protocol": "chat/1.0" },
      {},
      "WS_ERR_INVALID_PROTOCOL_HEADER",
      400,
    ],
    [
      "a duplicated protocol",
      { "sec-websocket-protocol": ["chat", "chat"] },
      {},
      "WS_ERR_INVALID_PROTOCOL_HEADER",
      400,
    ],
    [
      "a malformed extensions header",
      { "sec-websocket-extensions": "permessage-deflate;" },
      {},
      "WS_ERR_INVALID_EXTENSION_HEADER",
      400,
    ],
    [
      "a malformed extensions line among good ones",
      { "sec-websocket-extensions": ["permessage-deflate", "a b"] },
      {},
      "WS_ERR_INVALID_EXTENSION_HEADER",
      400,
    ],
  ];

  it.each(rows)("%s", (_, headers, overrides, code, status) => {
    const result = serverHandshake(request(headers, overrides), {
      perMessageDeflate: {},
      selectProtocol: (offered) => offered[0],
    });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toBeInstanceOf(HandshakeError);
    expect(result.error.code).toBe(code);
    expect(result.error.status).toBe(status);
    expect(result.response.status).toBe(status);
    expect(result.response.body.length).toBeGreaterThan(0);
    expect(result.response.body.length).toBeLessThan(80);
    // The body never echoes what the client sent.
    expect(result.response.body).not.toContain(KEY);
    const text = serializeResponse(result.response);
    expect(text.startsWith(`HTTP/1.1 ${status} `)).toBe(true);
    expect(text).toContain("\r\nConnection: ");
    expect(text).toContain(`\r\nContent-Length: ${Buffer.byteLength(result.response.body)}\r\n`);
    expect(text).toContain("\r\nContent-Type: text/plain; charset=utf-8\r\n");
    expect(text.endsWith(`\r\n\r\n${result.response.body}`)).toBe(true);
  });

  it("answers 405 with Allow: GET", () => {
    const result = serverHandshake(request({}, { method: "PUT" }));
    expect(result.ok).toBe(false);
    expect(result.response.statusText).toBe("Method Not Allowed");
    expect(header(result.response, "Allow")).toBe("GET");
    expect(serializeResponse(result.response)).toContain("\r\nConnection: close\r\n");
  });

  it("answers 426 with the version it speaks and the protocol to upgrade to", () => {
    const result = serverHandshake(request({ "sec-websocket-version": "8" }));
    expect(result.ok).toBe(false);
    expect(result.response.statusText).toBe("Upgrade Required");
    expect(header(result.response, "Sec-WebSocket-Version")).toBe("13");
    expect(header(result.response, "Upgrade")).toBe("websocket");
    const text = serializeResponse(result.response);
    expect(text).toContain("\r\nConnection: Upgrade, close\r\n");
    expect(text.match(/\r\nConnection:/g)).toHaveLength(1);
  });
});

describe("subprotocol selection", () => {
  it.each<[string, Headers, ServerHandshakeOptions, string]>([
    ["nothing offered", {}, { selectProtocol: () => "chat" }, ""],
    ["no selector", { "sec-websocket-protocol": "chat" }, {}, ""],
    [
      "the selector declines with undefined",
      { "sec-websocket-protocol": "chat" },
      { selectProtocol: () => undefined },
      "",
    ],
    [
      "the selector declines with null",
      { "sec-websocket-protocol": "chat" },
      { selectProtocol: () => null },
      "",
    ],
    [
      "the selector declines with an empty string",
      { "sec-websocket-protocol": "chat" },
      { selectProtocol: () => "" },
      "",
    ],
    [
      "the second of a list",
      { "sec-websocket-protocol": "v1.chat, v2.chat" },
      { selectProtocol: (offered) => offered[1] },
      "v2.chat",
    ],
    [
      "from several lines, odd spacing, empty elements",
      { "sec-websocket-protocol": [" a ,, b", "c\t"] },
      { selectProtocol: (offered) => (offered.join() === "a,b,c" ? "c" : undefined) },
      "c",
    ],
  ])("%s", (_, headers, options, expected) => {
    const result = expectOk(serverHandshake(request(headers), options));
    expect(result.protocol).toBe(expected);
    expect(header(result.response, "Sec-WebSocket-Protocol")).toBe(expected || undefined);
  });

  it("passes the offer in order and the request to the selector", () => {
    let seen: { offered: readonly string[]; url: string } | undefined;
    const req = request({ "sec-websocket-protocol": "b, a, c" });
    serverHandshake(req, {
      selectProtocol: (offered, r) => {
        seen = { offered, url: r.url };
        return "a";
      },
    });
    expect(seen).toEqual({ offered: ["b", "a", "c"], url: "/chat" });
  });

  it("throws a programming error when the selector answers something not offered", () => {
    const run = () =>
      serverHandshake(request({ "sec-websocket-protocol": "chat" }), {
        selectProtocol: () => "Chat",
      });
    expect(run).toThrow(TypeError);
    expect(run).toThrow(expect.objectContaining({ code: "WS_ERR_INVALID_SELECTED_PROTOCOL" }));
  });

  it("turns a HandshakeError thrown by the selector into its response", () => {
    const result = serverHandshake(request({ "sec-websocket-protocol": "chat" }), {
      selectProtocol: () => {
        throw new HandshakeError("WS_ERR_HANDSHAKE_PROTOCOL", 400, "Unsupported subprotocol");
      },
    });
    expect(result.ok).toBe(false);
    expect(result.response.status).toBe(400);
    expect(result.response.body).toBe("Unsupported subprotocol");
  });

  it("lets other exceptions from the selector through", () => {
    const boom = new Error("boom");
    expect(() =>
      serverHandshake(request({ "sec-websocket-protocol": "chat" }), {
        selectProtocol: () => {
          throw boom;
        },
      }),
    ).toThrow(boom);
  });
});

describe("permessage-deflate in the server handshake", () => {
  const offer = "permessage-deflate; client_max_window_bits";

  it("is not negotiated unless enabled", () => {
    for (const perMessageDeflate of [undefined, false] as const) {
      const result = expectOk(
        serverHandshake(request({ "sec-websocket-extensions": offer }), { perMessageDeflate }),
      );
      expect(result.deflate).toBeNull();
      expect(result.extensions).toBe("");
      expect(header(result.response, "Sec-WebSocket-Extensions")).toBeUndefined();
    }
  });

  it("is negotiated when enabled and offered", () => {
    const result = expectOk(
      serverHandshake(request({ "sec-websocket-extensions": offer }), {
        perMessageDeflate: { serverNoContextTakeover: true, clientMaxWindowBits: 10 },
      }),
    );
    const expected = "permessage-deflate; server_no_context_takeover; client_max_window_bits=10";
    expect(result.extensions).toBe(expected);
    expect(header(result.response, "Sec-WebSocket-Extensions")).toBe(expected);
    expect(result.deflate).toEqual({
      serverNoContextTakeover: true,
      clientNoContextTakeover: false,
      serverMaxWindowBits: 15,
      clientMaxWindowBits: 10,
    });
  });

  it("is skipped, not failed, when every offer is declined", () => {
    const result = expectOk(
      serverHandshake(request({ "sec-websocket-extensions": "permessage-deflate; bogus" }), {
        perMessageDeflate: {},
      }),
    );
    expect(result.deflate).toBeNull();
    expect(header(result.response, "Sec-WebSocket-Extensions")).toBeUndefined();
  });

  it("rejects invalid options as a programming error", () => {
    expect(() =>
      serverHandshake(request({ "sec-websocket-extensions": offer }), {
        perMessageDeflate: { serverMaxWindowBits: 20 },
      }),
    ).toThrow(RangeError);
  });
});

describe("errorResponse and serializeResponse", () => {
  it("builds a plain-text error response", () => {
    const response = errorResponse(404, "Not Found");
    expect(response).toEqual({
      status: 404,
      statusText: "Not Found",
      headers: [],
      body: "Not Found",
    });
    expect(serializeResponse(response)).toBe(
      "HTTP/1.1 404 Not Found\r\n" +
        "Content-Type: text/plain; charset=utf-8\r\n" +
        "Content-Length: 9\r\n" +
        "Connection: close\r\n" +
        "\r\n" +
        "Not Found",
    );
  });

  it("counts body bytes, not characters, and keeps caller headers", () => {
    const response = errorResponse(403, "nein ✋", [["X-Reason", "policy"]]);
    response.headers.push(["Content-Type", "text/plain"], ["Content-Length", "1"]);
    const text = serializeResponse(response);
    expect(text).toContain("\r\nX-Reason: policy\r\n");
    expect(text).toContain("\r\nContent-Type: text/plain\r\n");
    expect(text).not.toContain("charset");
    expect(text).toContain(`\r\nContent-Length: ${Buffer.byteLength("nein ✋")}\r\n`);
    expect(text.match(/Content-Length/g)).toHaveLength(1);
  });

  it("lets the caller amend a 101 response", () => {
    const result = expectOk(serverHandshake(request()));
    result.response.headers.push(["Set-Cookie", "id=1; HttpOnly"]);
    const text = serializeResponse(result.response);
    expect(text).toContain("\r\nSet-Cookie: id=1; HttpOnly\r\n");
    expect(text).not.toContain("Content-Length");
    expect(text.endsWith("\r\n\r\n")).toBe(true);
  });

  it("uses a generic reason phrase for unknown statuses", () => {
    expect(errorResponse(499, "x").statusText).toBe("Unknown");
    expect(() => errorResponse(99, "x")).toThrow(RangeError);
    expect(() => errorResponse(1000, "x")).toThrow(RangeError);
  });

  it.each<[string, (r: ReturnType<typeof errorResponse>) => void]>([
    ["CRLF in a header value", (r) => r.headers.push(["X-A", "a\r\nSet-Cookie: evil"])],
    ["LF in a header value", (r) => r.headers.push(["X-A", "a\nb"])],
    ["NUL in a header value", (r) => r.headers.push(["X-A", "a\0b"])],
    ["a header name with a colon", (r) => r.headers.push(["X-A: b", "c"])],
    ["an empty header name", (r) => r.headers.push(["", "c"])],
    ["CRLF in the status text", (r) => (r.statusText = "OK\r\nX: y")],
  ])("refuses to serialize %s", (_, amend) => {
    const response = errorResponse(400, "Bad Request");
    amend(response);
    expect(() => serializeResponse(response)).toThrow(TypeError);
  });

  it("refuses a body on a 101 response", () => {
    const result = expectOk(serverHandshake(request()));
    result.response.body = "x";
    expect(() => serializeResponse(result.response)).toThrow(TypeError);
  });
});

describe("clientRequestHeaders", () => {
  it("builds the handshake headers", () => {
    expect(clientRequestHeaders(KEY, {})).toEqual({
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": KEY,
      "Sec-WebSocket-Version": "13",
    });
  });

  it("adds protocols, the deflate offer, origin and extra headers", () => {
    const headers = clientRequestHeaders(KEY, {
      protocols: ["chat", "superchat"],
      perMessageDeflate: { serverNoContextTakeover: true },
      origin: "http://example.com",
      headers: { Authorization: "Bearer x", origin: "http://other.example" },
    });
    expect(headers).toEqual({
      Authorization: "Bearer x",
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": KEY,
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Protocol": "chat, superchat",
      "Sec-WebSocket-Extensions":
        "permessage-deflate; server_no_context_takeover; client_max_window_bits",
      Origin: "http://example.com",
    });
  });

  it("keeps an Origin given among the extra headers when no origin option is set", () => {
    expect(clientRequestHeaders(KEY, { headers: { Origin: "http://a" } }).Origin).toBe("http://a");
  });

  it.each([
    "upgrade",
    "Connection",
    "SEC-WEBSOCKET-KEY",
    "Sec-WebSocket-Version",
    "sec-websocket-protocol",
    "Sec-WebSocket-Extensions",
  ])("refuses an extra %s header", (name) => {
    expect(() => clientRequestHeaders(KEY, { headers: { [name]: "x" } })).toThrow(TypeError);
  });

  it.each([[["a b"]], [["chat", "chat"]], [[""]], [["a,b"]]])(
    "refuses protocols %j",
    (protocols) => {
      expect(() => clientRequestHeaders(KEY, { protocols })).toThrow(TypeError);
    },
  );
});

describe("validateServerResponse", () => {
  function response(headers: Headers = {}, status = 101) {
    return {
      status,
      headers: {
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-accept": ACCEPT,
        ...headers,
      },
    };
  }

  it("accepts the RFC 6455 section 1.3 response", () => {
    expect(validateServerResponse(response(), KEY, {})).toEqual({ protocol: "", deflate: null });
  });

  it.each<[string, Headers, ClientHandshakeOptions, string, boolean]>([
    ["Upgrade in any case", { upgrade: "WEBSOCKET" }, {}, "", false],
    ["Connection in a list", { connection: "keep-alive, upgrade" }, {}, "", false],
    [
      "an offered protocol",
      { "sec-websocket-protocol": "b" },
      { protocols: ["a", "b"] },
      "b",
      false,
    ],
    ["no protocol although some were offered", {}, { protocols: ["a"] }, "", false],
    ["an empty protocol header", { "sec-websocket-protocol": "" }, { protocols: ["a"] }, "", false],
    [
      "permessage-deflate as offered",
      { "sec-websocket-extensions": "permessage-deflate; client_max_window_bits=10" },
      { perMessageDeflate: {} },
      "",
      true,
    ],
    ["no extensions although deflate was offered", {}, { perMessageDeflate: {} }, "", false],
    ["an empty extensions header", { "sec-websocket-extensions": "" }, {}, "", false],
  ])("accepts %s", (_, headers, options, protocol, deflate) => {
    const result = validateServerResponse(response(headers), KEY, options);
    expect(result.protocol).toBe(protocol);
    expect(result.deflate !== null).toBe(deflate);
  });

  it("returns the agreed deflate parameters", () => {
    const result = validateServerResponse(
      response({
        "sec-websocket-extensions":
          "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
      }),
      KEY,
      { perMessageDeflate: { clientNoContextTakeover: true } },
    );
    expect(result.deflate).toEqual({
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      serverMaxWindowBits: 15,
      clientMaxWindowBits: 9,
    });
  });

  type Row = [string, Headers, number, ClientHandshakeOptions, string];
  const rows: Row[] = [
    ["a 200", {}, 200, {}, "WS_ERR_HANDSHAKE_STATUS"],
    ["a 404", {}, 404, {}, "WS_ERR_HANDSHAKE_STATUS"],
    ["a 426", {}, 426, {}, "WS_ERR_HANDSHAKE_STATUS"],
    ["no Upgrade", { upgrade: undefined }, 101, {}, "WS_ERR_HANDSHAKE_UPGRADE"],
    ["another Upgrade", { upgrade: "h2c" }, 101, {}, "WS_ERR_HANDSHAKE_UPGRADE"],
    ["an Upgrade list", { upgrade: "websocket, h2c" }, 101, {}, "WS_ERR_HANDSHAKE_UPGRADE"],
    ["no Connection", { connection: undefined }, 101, {}, "WS_ERR_HANDSHAKE_CONNECTION"],
    ["Connection: close", { connection: "close" }, 101, {}, "WS_ERR_HANDSHAKE_CONNECTION"],
    ["no accept", { "sec-websocket-accept": undefined }, 101, {}, "WS_ERR_HANDSHAKE_ACCEPT"],
    [
      "the accept of another key",
      { "sec-websocket-accept": acceptKey(generateKey()) },
      101,
      {},
      "WS_ERR_HANDSHAKE_ACCEPT",
    ],
    [
      "the key itself as accept",
      { "sec-websocket-accept": KEY },
      101,
      {},
      "WS_ERR_HANDSHAKE_ACCEPT",
    ],
    [
      "two accept headers",
      { "sec-websocket-accept": [ACCEPT, ACCEPT] },
      101,
      {},
      "WS_ERR_HANDSHAKE_ACCEPT",
    ],
    [
      "a protocol although none was offered",
      { "sec-websocket-protocol": "chat" },
      101,
      {},
      "WS_ERR_HANDSHAKE_PROTOCOL",
    ],
    [
      "a protocol that was not offered",
      { "sec-websocket-protocol": "c" },
      101,
      { protocols: ["a", "b"] },
      "WS_ERR_HANDSHAKE_PROTOCOL",
    ],
    [
      "a protocol differing in case",
      { "sec-websocket-protocol": "A" },
      101,
      { protocols: ["a"] },
      "WS_ERR_HANDSHAKE_PROTOCOL",
    ],
    [
      "several protocols",
      { "sec-websocket-protocol": "a, b" },
      101,
      { protocols: ["a", "b"] },
      "WS_ERR_HANDSHAKE_PROTOCOL",
    ],
    [
      "two protocol headers",
      { "sec-websocket-protocol": ["a", "a"] },
      101,
      { protocols: ["a"] },
      "WS_ERR_HANDSHAKE_PROTOCOL",
    ],
    [
      "an extension although none was offered",
      { "sec-websocket-extensions": "permessage-deflate" },
      101,
      {},
      "WS_ERR_HANDSHAKE_EXTENSION",
    ],
    [
      "an extension although deflate was disabled",
      { "sec-websocket-extensions": "permessage-deflate" },
      101,
      { perMessageDeflate: false },
      "WS_ERR_HANDSHAKE_EXTENSION",
    ],
    [
      "an unknown extension",
      { "sec-websocket-extensions": "x-foo" },
      101,
      { perMessageDeflate: {} },
      "WS_ERR_HANDSHAKE_EXTENSION",
    ],
    [
      "a malformed extensions header",
      { "sec-websocket-extensions": "permessage-deflate;" },
      101,
      { perMessageDeflate: {} },
      "WS_ERR_HANDSHAKE_EXTENSION",
    ],
    [
      "a deflate response that does not match the offer",
      { "sec-websocket-extensions": "permessage-deflate; server_max_window_bits=12" },
      101,
      { perMessageDeflate: { serverMaxWindowBits: 10 } },
      "WS_ERR_HANDSHAKE_EXTENSION",
    ],
  ];

  it.each(rows)("rejects %s", (_, headers, status, options, code) => {
    let caught: unknown;
    try {
      validateServerResponse(response(headers, status), KEY, options);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(HandshakeError);
    expect((caught as HandshakeError).code).toBe(code);
    expect((caught as HandshakeError).status).toBe(status);
  });
});

describe("client and server handshakes together", () => {
  it.each<[string, ClientHandshakeOptions, ServerHandshakeOptions]>([
    ["plain", {}, {}],
    ["with a protocol", { protocols: ["v1", "v2"] }, { selectProtocol: (o) => o.at(-1) }],
    [
      "with deflate on both sides",
      { perMessageDeflate: { clientMaxWindowBits: 12 } },
      { perMessageDeflate: { serverNoContextTakeover: true, serverMaxWindowBits: 10 } },
    ],
    ["with deflate on the client only", { perMessageDeflate: {} }, {}],
  ])("%s", (_, clientOptions, serverOptions) => {
    const key = generateKey();
    const requestHeaders = clientRequestHeaders(key, clientOptions);
    const lower: Headers = { host: "localhost" };
    for (const [name, value] of Object.entries(requestHeaders)) lower[name.toLowerCase()] = value;
    const server = expectOk(serverHandshake(request(lower), serverOptions));
    const responseHeaders: Headers = {};
    for (const [name, value] of server.response.headers)
      responseHeaders[name.toLowerCase()] = value;
    const client = validateServerResponse(
      { status: server.response.status, headers: responseHeaders },
      key,
      clientOptions,
    );
    expect(client.protocol).toBe(server.protocol);
    expect(client.deflate).toEqual(server.deflate);
  });
});
