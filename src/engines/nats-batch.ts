/**
 * The NATS engine stores and sends the messages a node publishes to one topic while its
 * previous store is in flight as one JetStream message: a batch, whose headers name the first
 * offset and the count, and whose body holds each message. Per message, big-endian:
 *
 *   u8 binary (0/1) | u16 except length (0xffff: none) | except (UTF-8) | u32 length | payload
 */

export interface BatchItem {
  payload: Uint8Array;
  binary: boolean;
  except: string | undefined;
}

const NO_EXCEPT = 0xffff;

export function encodeBatch(items: readonly BatchItem[]): Uint8Array {
  const excepts = items.map((item) =>
    item.except === undefined ? null : Buffer.from(item.except, "utf8"),
  );
  let size = 0;
  for (let i = 0; i < items.length; i++) {
    size += 1 + 2 + (excepts[i]?.length ?? 0) + 4 + items[i]!.payload.length;
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < items.length; i++) {
    const item = items[i]!;
    const except = excepts[i];
    out[at++] = item.binary ? 1 : 0;
    if (except === null || except === undefined) {
      out.writeUInt16BE(NO_EXCEPT, at);
      at += 2;
    } else {
      if (except.length >= NO_EXCEPT) throw new RangeError("a client id of 64 KiB or more");
      out.writeUInt16BE(except.length, at);
      at += 2;
      except.copy(out, at);
      at += except.length;
    }
    out.writeUInt32BE(item.payload.length, at);
    at += 4;
    out.set(item.payload, at);
    at += item.payload.length;
  }
  return out;
}

/** The items of a batch body; throws a RangeError on a malformed one. */
export function decodeBatch(body: Uint8Array, count: number): BatchItem[] {
  const data = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const items: BatchItem[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 3 > data.length) throw new RangeError("a truncated batch");
    const binary = data[at++] === 1;
    const exceptLength = data.readUInt16BE(at);
    at += 2;
    let except: string | undefined;
    if (exceptLength !== NO_EXCEPT) {
      except = data.toString("utf8", at, at + exceptLength);
      at += exceptLength;
    }
    if (at + 4 > data.length) throw new RangeError("a truncated batch");
    const length = data.readUInt32BE(at);
    at += 4;
    if (at + length > data.length) throw new RangeError("a truncated batch");
    // A copy: the message outlives the NATS buffer it came in.
    items.push({ payload: new Uint8Array(data.subarray(at, at + length)), binary, except });
    at += length;
  }
  return items;
}
