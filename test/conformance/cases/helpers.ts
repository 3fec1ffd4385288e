// Small vocabulary shared by the case files, so each reads like Autobahn's case source.
import type { ExpectedClose, Observed } from "../judge.js";

export { INFORMATIONAL, NON_STRICT, OK, UNIMPLEMENTED } from "../judge.js";

/** Close codes used by the cases (RFC 6455 section 7.4.1). */
export const NORMAL = 1000;
export const PROTOCOL_ERROR = 1002;
export const INVALID_PAYLOAD = 1007;

/** UTF-8 octets of a JavaScript string. */
export function utf8(text: string): Buffer {
  return Buffer.from(text, "utf8");
}

/** Octets written as a string of "\xNN" escapes (Autobahn's Python 2 byte strings). */
export function octets(text: string): Buffer {
  return Buffer.from(text, "latin1");
}

export function message(payload: Buffer, binary: boolean): Observed {
  return { kind: "message", payload, binary };
}

export function pong(payload: Buffer): Observed {
  return { kind: "pong", payload };
}

export function timeout(tag: string): Observed {
  return { kind: "timeout", tag };
}

/** The fuzzer closes once the expected events arrived; the close must complete cleanly. */
export function cleanClose(codes: number[] = [NORMAL]): ExpectedClose {
  return { closedByMe: true, closeCode: codes, requireClean: true };
}

/** The server must fail the connection with one of `codes`; a dropped TCP is tolerated. */
export function serverFails(code: number): ExpectedClose {
  return { closedByMe: false, closeCode: [code], requireClean: false };
}
