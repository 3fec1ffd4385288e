import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ExtensionOffer,
  formatExtension,
  formatExtensions,
  HandshakeError,
  isToken,
  parseExtensions,
} from "../../src/protocol/extension-header.js";

describe("parseExtensions", () => {
  const valid: Array<[string, string | string[] | undefined, ExtensionOffer[]]> = [
    ["no header", undefined, []],
    ["empty value", "", []],
    ["only whitespace", " \t ", []],
    ["only commas", " , ,,", []],
    ["a bare extension", "permessage-deflate", [{ name: "permessage-deflate", params: [] }]],
    [
      "parameters with and without values",
      "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
      [
        {
          name: "permessage-deflate",
          params: [
            ["client_max_window_bits", true],
            ["server_max_window_bits", "10"],
          ],
        },
      ],
    ],
    [
      "no whitespace at all",
      "a;b;c=1,d",
      [
        {
          name: "a",
          params: [
            ["b", true],
            ["c", "1"],
          ],
        },
        { name: "d", params: [] },
      ],
    ],
    [
      "odd whitespace everywhere",
      " \ta \t; \tb \t= \t1 \t, \t d\t;e\t ",
      [
        { name: "a", params: [["b", "1"]] },
        { name: "d", params: [["e", true]] },
      ],
    ],
    ["quoted value", 'a; b="10"', [{ name: "a", params: [["b", "10"]] }]],
    ["quoted value with escapes", 'a; b="1\\0"', [{ name: "a", params: [["b", "10"]] }]],
    [
      "quoted value followed by another parameter",
      'a; b = "x" ; c',
      [
        {
          name: "a",
          params: [
            ["b", "x"],
            ["c", true],
          ],
        },
      ],
    ],
    [
      "empty elements between extensions",
      ", a ,, ,b,",
      [
        { name: "a", params: [] },
        { name: "b", params: [] },
      ],
    ],
    [
      "duplicate parameters are kept",
      "a; b; b=1; b",
      [
        {
          name: "a",
          params: [
            ["b", true],
            ["b", "1"],
            ["b", true],
          ],
        },
      ],
    ],
    [
      "the same extension twice",
      "a; x=1, a; x=2",
      [
        { name: "a", params: [["x", "1"]] },
        { name: "a", params: [["x", "2"]] },
      ],
    ],
    [
      "several header lines, in order",
      ["a; x", "", "b, c; y=2"],
      [
        { name: "a", params: [["x", true]] },
        { name: "b", params: [] },
        { name: "c", params: [["y", "2"]] },
      ],
    ],
    [
      "all token characters",
      "!#$%&'*+-.^_`|~09AZaz; !#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~09AZaz",
      [
        {
          name: "!#$%&'*+-.^_`|~09AZaz",
          params: [["!#$%&'*+-.^_`|~09AZaz", "!#$%&'*+-.^_`|~09AZaz"]],
        },
      ],
    ],
  ];

  it.each(valid)("parses %s", (_, header, expected) => {
    expect(parseExtensions(header)).toEqual(expected);
  });

  const invalid: Array<[string, string | string[]]> = [
    ["a dangling semicolon", "a;"],
    ["an empty parameter", "a;;b"],
    ["a parameter without an extension", ";a"],
    ["two tokens without a separator", "a b"],
    ["a value on the extension name", "a=1"],
    ["a missing value after =", "a; b="],
    ["a missing value before the next element", "a; b=, c"],
    ["an empty quoted value", 'a; b=""'],
    ["a quoted value that is not a token", 'a; b="1 2"'],
    ["a quoted value with a separator", 'a; b="x,y"'],
    ["an unterminated quoted value", 'a; b="10'],
    ["an escape at the end", 'a; b="1\\'],
    ["text after a quoted value", 'a; b="1"2'],
    ["two values", "a; b=1 2"],
    ["a separator as a value", "a; b=@"],
    ["a parameter without a name", "a; =1"],
    ["a space inside an element", "a, b c"],
    ["a non-ASCII name", "ä"],
    ["a control character", "a\u0001"],
    ["CRLF inside the value", "a\r\n b"],
    ["a quote in the name", 'a"b'],
    ["a bad line among good ones", ["a", "b;"]],
  ];

  it.each(invalid)("rejects %s with a 400", (_, header) => {
    let caught: unknown;
    try {
      parseExtensions(header);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(HandshakeError);
    expect((caught as HandshakeError).code).toBe("WS_ERR_INVALID_EXTENSION_HEADER");
    expect((caught as HandshakeError).status).toBe(400);
  });
});

describe("formatExtension", () => {
  it("formats names, flags and values", () => {
    expect(formatExtension({ name: "permessage-deflate", params: [] })).toBe("permessage-deflate");
    expect(
      formatExtension({
        name: "permessage-deflate",
        params: [
          ["server_no_context_takeover", true],
          ["client_max_window_bits", "10"],
        ],
      }),
    ).toBe("permessage-deflate; server_no_context_takeover; client_max_window_bits=10");
    expect(
      formatExtensions([
        { name: "a", params: [] },
        { name: "b", params: [["c", true]] },
      ]),
    ).toBe("a, b; c");
  });

  it.each<[string, ExtensionOffer]>([
    ["an empty name", { name: "", params: [] }],
    ["a name with a space", { name: "a b", params: [] }],
    ["a parameter name with a separator", { name: "a", params: [["b=c", true]] }],
    ["a value that is not a token", { name: "a", params: [["b", "x y"]] }],
    ["an empty value", { name: "a", params: [["b", ""]] }],
  ])("refuses %s", (_, offer) => {
    expect(() => formatExtension(offer)).toThrow(TypeError);
  });

  it("isToken follows RFC 7230", () => {
    expect(isToken("permessage-deflate")).toBe(true);
    expect(isToken("")).toBe(false);
    expect(isToken("a b")).toBe(false);
    expect(isToken("a,b")).toBe(false);
    expect(isToken("é")).toBe(false);
  });
});

describe("parseExtensions, generated inputs", () => {
  const tokenChar = fc.constantFrom(
    ..."!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".split(""),
  );
  const token = fc.array(tokenChar, { minLength: 1, maxLength: 8 }).map((c) => c.join(""));
  const offer = fc.record({
    name: token,
    params: fc.array(fc.tuple(token, fc.oneof(token, fc.constant(true as const))), {
      maxLength: 4,
    }),
  });
  const ws = fc.constantFrom("", " ", "\t", " \t ");

  /** Serializes with random whitespace, random quoting and escaping, and empty elements. */
  const rendered = fc.array(offer, { maxLength: 4 }).chain((offers) =>
    fc
      .tuple(
        fc.array(ws, { minLength: 64, maxLength: 64 }),
        fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }),
        fc.array(fc.nat({ max: 2 }), { minLength: 8, maxLength: 8 }),
      )
      .map(([spaces, flags, empties]) => {
        let i = 0;
        const s = () => spaces[i++ % spaces.length];
        const f = () => flags[i++ % flags.length];
        const parts = offers.map((o) => {
          let text = s() + o.name + s();
          for (const [name, value] of o.params) {
            text += `;${s()}${name}${s()}`;
            if (value !== true) {
              const body = f()
                ? `"${[...value].map((c) => (f() ? `\\${c}` : c)).join("")}"`
                : value;
              text += `=${s()}${body}${s()}`;
            }
          }
          return text;
        });
        const withEmpties = parts.flatMap((p, n) => [...Array(empties[n % 8]).fill(s()), p]);
        return { offers, header: withEmpties.join(",") };
      }),
  );

  it("parses what it formats, whatever the whitespace and quoting", () => {
    fc.assert(
      fc.property(rendered, ({ offers, header }) => {
        expect(parseExtensions(header)).toEqual(offers);
        expect(parseExtensions(formatExtensions(offers))).toEqual(offers);
      }),
      { numRuns: 500 },
    );
  });

  it("either parses or throws a HandshakeError on arbitrary input", () => {
    const alphabet = fc.constantFrom(...'ab=;," \t\\\r\n\u0000\u00e9\u00ff\u0100x1'.split(""));
    const garbage = fc.array(alphabet, { maxLength: 30 }).map((c) => c.join(""));
    fc.assert(
      fc.property(garbage, (header) => {
        try {
          const offers = parseExtensions(header);
          // Whatever parses is well-formed and formats back to something equivalent.
          expect(parseExtensions(formatExtensions(offers))).toEqual(offers);
        } catch (error) {
          expect(error).toBeInstanceOf(HandshakeError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
