// The `resume` query parameter: positions a reconnecting client asks to resume from, validated
// as untrusted input (anything malformed is ignored as a whole) and bounded.
import { describe, expect, it } from "vitest";
import { parseResume } from "../../src/services/resume.js";

const query = (value: unknown) =>
  new URLSearchParams({ resume: typeof value === "string" ? value : JSON.stringify(value) });

describe("parseResume", () => {
  it("reads a position per topic", () => {
    const parsed = parseResume(
      query({ "room:a": { epoch: "e1", offset: 5 }, b: { epoch: "x", offset: 0 } }),
    );
    expect(parsed.ok && [...parsed.positions]).toEqual([
      ["room:a", { epoch: "e1", offset: 5 }],
      ["b", { epoch: "x", offset: 0 }],
    ]);
  });

  it("is empty without the parameter", () => {
    const parsed = parseResume(new URLSearchParams("name=ann"));
    expect(parsed.ok && parsed.positions.size).toBe(0);
  });

  it.each([
    ["{not json", "not JSON"],
    [[1, 2], "not an object of topics"],
    [null, "not an object of topics"],
    [{ t: 5 }, "no position for t"],
    [{ t: { epoch: "", offset: 1 } }, "bad epoch for t"],
    [{ t: { epoch: "e".repeat(129), offset: 1 } }, "bad epoch for t"],
    [{ t: { epoch: "e", offset: -1 } }, "bad offset for t"],
    [{ t: { epoch: "e", offset: 1.5 } }, "bad offset for t"],
    [{ t: { epoch: "e", offset: "3" } }, "bad offset for t"],
    [{ t: { epoch: "e", offset: 2 ** 60 } }, "bad offset for t"],
    [{ "": { epoch: "e", offset: 1 } }, "a topic name is empty or too long"],
  ])("refuses %j: %s", (value, reason) => {
    expect(parseResume(query(value))).toEqual({ ok: false, reason });
  });

  it("refuses more than 64 topics", () => {
    const many = Object.fromEntries(
      Array.from({ length: 65 }, (_, i) => [`t${i}`, { epoch: "e", offset: i }]),
    );
    expect(parseResume(query(many))).toEqual({ ok: false, reason: "more than 64 topics" });
  });
});
