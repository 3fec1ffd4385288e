import { describe, expect, it } from "vitest";
import { HandshakeError, parseExtensions } from "../../src/protocol/extension-header.js";
import {
  acceptServerResponse,
  clientOffer,
  type DeflateParams,
  negotiateServer,
  type PerMessageDeflateOptions,
  validateDeflateOptions,
  zlibWindowBits,
} from "../../src/protocol/permessage-deflate.js";

const DEFAULTS: DeflateParams = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
};

function negotiate(header: string | undefined, options: PerMessageDeflateOptions = {}) {
  return negotiateServer(parseExtensions(header), options);
}

describe("negotiateServer", () => {
  type Row = [
    description: string,
    offer: string | undefined,
    options: PerMessageDeflateOptions,
    response: string | null,
    params?: Partial<DeflateParams>,
  ];

  // RFC 7692 section 5.1, the negotiation examples, with a server that has no preferences.
  const rfcExamples: Row[] = [
    ["the simplest offer", "permessage-deflate", {}, "permessage-deflate", {}],
    [
      "an offer limiting the server window, with client_max_window_bits support",
      "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
      {},
      "permessage-deflate; server_max_window_bits=10",
      { serverMaxWindowBits: 10 },
    ],
    [
      "the same with a fallback offer: the first acceptable one wins",
      "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits",
      {},
      "permessage-deflate; server_max_window_bits=10",
      { serverMaxWindowBits: 10 },
    ],
    [
      "the fallback offer, accepted with a client window the server asks for",
      "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits",
      { clientMaxWindowBits: 10 },
      "permessage-deflate; server_max_window_bits=10; client_max_window_bits=10",
      { serverMaxWindowBits: 10, clientMaxWindowBits: 10 },
    ],
  ];

  // Section 7.1, parameter by parameter: the offer against the server's options.
  const parameters: Row[] = [
    // 7.1.1.1 server_no_context_takeover
    [
      "server_no_context_takeover offered is accepted",
      "permessage-deflate; server_no_context_takeover",
      {},
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
    ],
    [
      "server_no_context_takeover is added when the server wants it",
      "permessage-deflate",
      { serverNoContextTakeover: true },
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
    ],
    [
      "server_no_context_takeover offered and wanted",
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
    ],
    [
      "serverNoContextTakeover: false does not override an offer",
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: false },
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
    ],
    // 7.1.1.2 client_no_context_takeover
    [
      "client_no_context_takeover offered is echoed",
      "permessage-deflate; client_no_context_takeover",
      {},
      "permessage-deflate; client_no_context_takeover",
      { clientNoContextTakeover: true },
    ],
    [
      "client_no_context_takeover is added when the server wants it",
      "permessage-deflate",
      { clientNoContextTakeover: true },
      "permessage-deflate; client_no_context_takeover",
      { clientNoContextTakeover: true },
    ],
    // 7.1.2.1 server_max_window_bits
    [
      "server_max_window_bits=8 is accepted",
      "permessage-deflate; server_max_window_bits=8",
      {},
      "permessage-deflate; server_max_window_bits=8",
      { serverMaxWindowBits: 8 },
    ],
    [
      "server_max_window_bits=15 is accepted",
      "permessage-deflate; server_max_window_bits=15",
      {},
      "permessage-deflate; server_max_window_bits=15",
      {},
    ],
    [
      "a smaller server window than offered is used when the server wants it",
      "permessage-deflate; server_max_window_bits=12",
      { serverMaxWindowBits: 10 },
      "permessage-deflate; server_max_window_bits=10",
      { serverMaxWindowBits: 10 },
    ],
    [
      "the offered server window caps the server's preference",
      "permessage-deflate; server_max_window_bits=12",
      { serverMaxWindowBits: 14 },
      "permessage-deflate; server_max_window_bits=12",
      { serverMaxWindowBits: 12 },
    ],
    [
      "server_max_window_bits is sent unasked when the server limits its window",
      "permessage-deflate",
      { serverMaxWindowBits: 11 },
      "permessage-deflate; server_max_window_bits=11",
      { serverMaxWindowBits: 11 },
    ],
    [
      "a quoted window value is accepted",
      'permessage-deflate; server_max_window_bits="9"',
      {},
      "permessage-deflate; server_max_window_bits=9",
      { serverMaxWindowBits: 9 },
    ],
    // 7.1.2.2 client_max_window_bits
    [
      "client_max_window_bits without value and no preference: not sent",
      "permessage-deflate; client_max_window_bits",
      {},
      "permessage-deflate",
      {},
    ],
    [
      "client_max_window_bits without value: the server picks",
      "permessage-deflate; client_max_window_bits",
      { clientMaxWindowBits: 8 },
      "permessage-deflate; client_max_window_bits=8",
      { clientMaxWindowBits: 8 },
    ],
    [
      "client_max_window_bits with a value is echoed",
      "permessage-deflate; client_max_window_bits=12",
      {},
      "permessage-deflate; client_max_window_bits=12",
      { clientMaxWindowBits: 12 },
    ],
    [
      "client_max_window_bits with a value, the server wants less",
      "permessage-deflate; client_max_window_bits=12",
      { clientMaxWindowBits: 10 },
      "permessage-deflate; client_max_window_bits=10",
      { clientMaxWindowBits: 10 },
    ],
    [
      "client_max_window_bits with a value, the server would allow more",
      "permessage-deflate; client_max_window_bits=9",
      { clientMaxWindowBits: 10 },
      "permessage-deflate; client_max_window_bits=9",
      { clientMaxWindowBits: 9 },
    ],
    [
      "client_max_window_bits is never sent when not offered",
      "permessage-deflate",
      { clientMaxWindowBits: 10 },
      "permessage-deflate",
      {},
    ],
    [
      "all four parameters",
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=9",
      {},
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=9",
      {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 9,
        clientMaxWindowBits: 9,
      },
    ],
    [
      "all four options against a bare offer",
      "permessage-deflate; client_max_window_bits",
      {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 11,
      },
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11",
      {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 11,
      },
    ],
  ];

  // Section 7: a malformed offer is declined and the next one tried; never a 400.
  const declined: Row[] = [
    ["no header", undefined, {}, null],
    ["other extensions only", "x-webkit-deflate-frame, foo; bar", {}, null],
    ["names are case-sensitive", "Permessage-Deflate", {}, null],
    ["an unknown parameter", "permessage-deflate; foo", {}, null],
    ["an unknown parameter with a value", "permessage-deflate; foo=1", {}, null],
    [
      "a duplicate flag",
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      {},
      null,
    ],
    [
      "a duplicate window",
      "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
      {},
      null,
    ],
    [
      "client_max_window_bits with and without a value",
      "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
      {},
      null,
    ],
    [
      "server_no_context_takeover with a value",
      "permessage-deflate; server_no_context_takeover=1",
      {},
      null,
    ],
    [
      "client_no_context_takeover with a value",
      'permessage-deflate; client_no_context_takeover="x"',
      {},
      null,
    ],
    [
      "server_max_window_bits without a value",
      "permessage-deflate; server_max_window_bits",
      {},
      null,
    ],
    ["server_max_window_bits=7", "permessage-deflate; server_max_window_bits=7", {}, null],
    ["server_max_window_bits=16", "permessage-deflate; server_max_window_bits=16", {}, null],
    ["server_max_window_bits=08", "permessage-deflate; server_max_window_bits=08", {}, null],
    ["server_max_window_bits=010", "permessage-deflate; server_max_window_bits=010", {}, null],
    ["server_max_window_bits=+9", "permessage-deflate; server_max_window_bits=+9", {}, null],
    ["server_max_window_bits=9.0", "permessage-deflate; server_max_window_bits=9.0", {}, null],
    ["client_max_window_bits=0", "permessage-deflate; client_max_window_bits=0", {}, null],
    ["client_max_window_bits=abc", "permessage-deflate; client_max_window_bits=abc", {}, null],
    ["every offer malformed", "permessage-deflate; a, permessage-deflate; b", {}, null],
  ];

  const fallback: Row[] = [
    [
      "a malformed offer, then a good one",
      "permessage-deflate; foo, permessage-deflate; server_no_context_takeover",
      {},
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
    ],
    [
      "a duplicate-parameter offer, then a good one",
      "permessage-deflate; client_max_window_bits; client_max_window_bits, permessage-deflate",
      {},
      "permessage-deflate",
      {},
    ],
    [
      "an invalid window, then a good one",
      "permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=14",
      {},
      "permessage-deflate; server_max_window_bits=14",
      { serverMaxWindowBits: 14 },
    ],
    [
      "another extension first",
      "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
      {},
      "permessage-deflate; client_no_context_takeover",
      { clientNoContextTakeover: true },
    ],
    [
      "offers on several header lines",
      "permessage-deflate; nope=1,, permessage-deflate; server_max_window_bits=11",
      {},
      "permessage-deflate; server_max_window_bits=11",
      { serverMaxWindowBits: 11 },
    ],
  ];

  it.each([...rfcExamples, ...parameters, ...declined, ...fallback])(
    "%s",
    (_, offer, options, response, params) => {
      const result = negotiate(offer, options);
      if (response === null) {
        expect(result).toBeNull();
        return;
      }
      expect(result).not.toBeNull();
      expect(result!.response).toBe(response);
      expect(result!.params).toEqual({ ...DEFAULTS, ...params });
    },
  );

  it("accepts offers spread over several header lines", () => {
    const result = negotiateServer(
      parseExtensions([
        "permessage-deflate; bogus",
        "permessage-deflate; server_max_window_bits=12",
      ]),
      {},
    );
    expect(result?.response).toBe("permessage-deflate; server_max_window_bits=12");
  });

  it("rejects options outside the RFC ranges as programming errors", () => {
    expect(() => negotiate("permessage-deflate", { serverMaxWindowBits: 7 })).toThrow(RangeError);
    expect(() => negotiate("permessage-deflate", { clientMaxWindowBits: 16 })).toThrow(RangeError);
  });
});

describe("clientOffer", () => {
  it.each<[PerMessageDeflateOptions, string]>([
    [{}, "permessage-deflate; client_max_window_bits"],
    [{ clientMaxWindowBits: 12 }, "permessage-deflate; client_max_window_bits=12"],
    [
      { serverMaxWindowBits: 8 },
      "permessage-deflate; server_max_window_bits=8; client_max_window_bits",
    ],
    [
      { serverNoContextTakeover: true, clientNoContextTakeover: true },
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits",
    ],
    [
      {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 11,
        threshold: 0,
        level: 9,
      },
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11",
    ],
  ])("offers %j as %s", (options, expected) => {
    expect(clientOffer(options)).toBe(expected);
  });
});

describe("acceptServerResponse", () => {
  type Row = [
    description: string,
    response: string,
    options: PerMessageDeflateOptions,
    result: Partial<DeflateParams> | "error",
  ];
  const rows: Row[] = [
    ["the simplest response", "permessage-deflate", {}, {}],
    [
      "server_no_context_takeover unasked",
      "permessage-deflate; server_no_context_takeover",
      {},
      { serverNoContextTakeover: true },
    ],
    [
      "server_no_context_takeover asked and given",
      "permessage-deflate; server_no_context_takeover",
      { serverNoContextTakeover: true },
      { serverNoContextTakeover: true },
    ],
    [
      "server_no_context_takeover asked, missing",
      "permessage-deflate",
      { serverNoContextTakeover: true },
      "error",
    ],
    [
      "client_no_context_takeover from the server",
      "permessage-deflate; client_no_context_takeover",
      {},
      { clientNoContextTakeover: true },
    ],
    [
      "client_no_context_takeover offered binds us even if not echoed",
      "permessage-deflate",
      { clientNoContextTakeover: true },
      { clientNoContextTakeover: true },
    ],
    [
      "server_max_window_bits unasked",
      "permessage-deflate; server_max_window_bits=12",
      {},
      { serverMaxWindowBits: 12 },
    ],
    [
      "server_max_window_bits equal to the offer",
      "permessage-deflate; server_max_window_bits=10",
      { serverMaxWindowBits: 10 },
      { serverMaxWindowBits: 10 },
    ],
    [
      "server_max_window_bits below the offer",
      "permessage-deflate; server_max_window_bits=8",
      { serverMaxWindowBits: 10 },
      { serverMaxWindowBits: 8 },
    ],
    [
      "server_max_window_bits above the offer",
      "permessage-deflate; server_max_window_bits=11",
      { serverMaxWindowBits: 10 },
      "error",
    ],
    [
      "server_max_window_bits asked, missing",
      "permessage-deflate",
      { serverMaxWindowBits: 10 },
      "error",
    ],
    [
      "client_max_window_bits chosen by the server",
      "permessage-deflate; client_max_window_bits=9",
      {},
      { clientMaxWindowBits: 9 },
    ],
    [
      "client_max_window_bits below our value",
      "permessage-deflate; client_max_window_bits=9",
      { clientMaxWindowBits: 12 },
      { clientMaxWindowBits: 9 },
    ],
    [
      "client_max_window_bits omitted: our value holds",
      "permessage-deflate",
      { clientMaxWindowBits: 12 },
      { clientMaxWindowBits: 12 },
    ],
    [
      "client_max_window_bits above our value",
      "permessage-deflate; client_max_window_bits=13",
      { clientMaxWindowBits: 12 },
      "error",
    ],
    [
      "client_max_window_bits without a value",
      "permessage-deflate; client_max_window_bits",
      {},
      "error",
    ],
    ["an unknown parameter", "permessage-deflate; foo", {}, "error"],
    [
      "a duplicate parameter",
      "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
      {},
      "error",
    ],
    ["server_max_window_bits=16", "permessage-deflate; server_max_window_bits=16", {}, "error"],
    ["server_max_window_bits=7", "permessage-deflate; server_max_window_bits=7", {}, "error"],
    [
      "server_max_window_bits without a value",
      "permessage-deflate; server_max_window_bits",
      {},
      "error",
    ],
    ["a flag with a value", "permessage-deflate; server_no_context_takeover=1", {}, "error"],
    ["two elements", "permessage-deflate, permessage-deflate", {}, "error"],
    ["an extension we did not offer", "x-webkit-deflate-frame", {}, "error"],
  ];

  it.each(rows)("%s", (_, response, options, result) => {
    const run = () => acceptServerResponse(parseExtensions(response), options);
    if (result === "error") {
      let caught: unknown;
      try {
        run();
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(HandshakeError);
      expect((caught as HandshakeError).code).toBe("WS_ERR_HANDSHAKE_EXTENSION");
    } else {
      expect(run()).toEqual({ ...DEFAULTS, ...result });
    }
  });
});

describe("client and server agree", () => {
  // Every combination of preferences on both sides: the client's view of the server's response
  // must be exactly what the server negotiated, and within what the client asked for.
  const flags = [undefined, true];
  const bits = [undefined, 8, 12, 15];
  const all: PerMessageDeflateOptions[] = [];
  for (const serverNoContextTakeover of flags) {
    for (const clientNoContextTakeover of flags) {
      for (const serverMaxWindowBits of bits) {
        for (const clientMaxWindowBits of bits) {
          all.push({
            serverNoContextTakeover,
            clientNoContextTakeover,
            serverMaxWindowBits,
            clientMaxWindowBits,
          });
        }
      }
    }
  }

  it(`for all ${all.length * all.length} pairs of options`, () => {
    let checked = 0;
    for (const client of all) {
      const offer = parseExtensions(clientOffer(client));
      for (const server of all) {
        const negotiated = negotiateServer(offer, server);
        expect(negotiated).not.toBeNull();
        const agreed = acceptServerResponse(parseExtensions(negotiated!.response), client);
        expect(agreed).toEqual(negotiated!.params);

        if (client.serverNoContextTakeover || server.serverNoContextTakeover) {
          expect(agreed.serverNoContextTakeover).toBe(true);
        }
        if (client.clientNoContextTakeover || server.clientNoContextTakeover) {
          expect(agreed.clientNoContextTakeover).toBe(true);
        }
        expect(agreed.serverMaxWindowBits).toBeLessThanOrEqual(client.serverMaxWindowBits ?? 15);
        expect(agreed.serverMaxWindowBits).toBeLessThanOrEqual(server.serverMaxWindowBits ?? 15);
        expect(agreed.clientMaxWindowBits).toBeLessThanOrEqual(client.clientMaxWindowBits ?? 15);
        // The client always offers client_max_window_bits, so the server's wish is honoured.
        expect(agreed.clientMaxWindowBits).toBeLessThanOrEqual(server.clientMaxWindowBits ?? 15);
        checked++;
      }
    }
    expect(checked).toBe(all.length * all.length);
  });
});

describe("options and window bits", () => {
  it.each<[PerMessageDeflateOptions]>([
    [{ serverMaxWindowBits: 7 }],
    [{ serverMaxWindowBits: 16 }],
    [{ clientMaxWindowBits: 10.5 }],
    [{ clientMaxWindowBits: Number.NaN }],
    [{ threshold: -1 }],
    [{ concurrency: 0 }],
    [{ concurrency: 1.5 }],
    [{ level: 10 }],
    [{ level: -2 }],
    [{ memLevel: 0 }],
    [{ memLevel: 10 }],
  ])("rejects %j", (options) => {
    expect(() => validateDeflateOptions(options)).toThrow(RangeError);
    expect(() => clientOffer(options)).toThrow(RangeError);
  });

  it("accepts the full valid ranges", () => {
    expect(() =>
      validateDeflateOptions({
        serverMaxWindowBits: 8,
        clientMaxWindowBits: 15,
        threshold: 0,
        concurrency: 1,
        level: -1,
        memLevel: 9,
      }),
    ).not.toThrow();
  });

  it("raises 8 to 9 for zlib and keeps 9..15", () => {
    expect(zlibWindowBits(8)).toBe(9);
    for (let bits = 9; bits <= 15; bits++) expect(zlibWindowBits(bits)).toBe(bits);
    expect(() => zlibWindowBits(7)).toThrow(RangeError);
    expect(() => zlibWindowBits(16)).toThrow(RangeError);
  });
});
