import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type BatchItem, decodeBatch, encodeBatch } from "../../src/engines/nats-batch.js";

describe("NATS engine batches", () => {
  it("decode what they encode: payloads, opcodes and excepts, none of them lost or mixed up", () => {
    const item = fc.record({
      payload: fc.uint8Array({ maxLength: 300 }),
      binary: fc.boolean(),
      except: fc.option(fc.string({ maxLength: 40 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(item, { minLength: 1, maxLength: 20 }), (items: BatchItem[]) => {
        const decoded = decodeBatch(encodeBatch(items), items.length);
        expect(decoded).toEqual(items);
      }),
      { numRuns: 300 },
    );
  });

  it("refuses a truncated body instead of reading past it", () => {
    const body = encodeBatch([{ payload: new Uint8Array([1, 2, 3]), binary: true, except: "a" }]);
    for (let cut = 0; cut < body.length; cut++) {
      expect(() => decodeBatch(body.subarray(0, cut), 1)).toThrow(RangeError);
    }
    expect(() => decodeBatch(body, 2)).toThrow(RangeError);
  });
});
