import { CloseCode } from "./constants.js";

/** Stable error codes. Applications may match on these; they never change meaning. */
export type ProtocolErrorCode =
  | "WS_ERR_RESERVED_BITS"
  | "WS_ERR_RESERVED_OPCODE"
  | "WS_ERR_UNMASKED_FRAME"
  | "WS_ERR_MASKED_FRAME"
  | "WS_ERR_CONTROL_TOO_LONG"
  | "WS_ERR_CONTROL_FRAGMENTED"
  | "WS_ERR_UNEXPECTED_CONTINUATION"
  | "WS_ERR_EXPECTED_CONTINUATION"
  | "WS_ERR_LENGTH_MSB_SET"
  | "WS_ERR_INVALID_CLOSE_PAYLOAD"
  | "WS_ERR_INVALID_CLOSE_CODE"
  | "WS_ERR_INVALID_UTF8"
  | "WS_ERR_MESSAGE_TOO_BIG"
  | "WS_ERR_TOO_MANY_FRAGMENTS"
  | "WS_ERR_BUFFER_LIMIT"
  | "WS_ERR_INVALID_COMPRESSED_DATA"
  | "WS_ERR_DATA_AFTER_CLOSE";

/**
 * A violation by the peer. It carries the close code the connection is failed with
 * (RFC 6455 section 7.1.7) and a stable string code for logs and applications.
 */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly code: ProtocolErrorCode,
    readonly closeCode: number,
    message: string,
  ) {
    super(message);
  }
}

export function protocolError(code: ProtocolErrorCode, message: string): ProtocolError {
  return new ProtocolError(code, CLOSE_CODE_FOR[code], message);
}

const CLOSE_CODE_FOR: Record<ProtocolErrorCode, number> = {
  WS_ERR_RESERVED_BITS: CloseCode.ProtocolError,
  WS_ERR_RESERVED_OPCODE: CloseCode.ProtocolError,
  WS_ERR_UNMASKED_FRAME: CloseCode.ProtocolError,
  WS_ERR_MASKED_FRAME: CloseCode.ProtocolError,
  WS_ERR_CONTROL_TOO_LONG: CloseCode.ProtocolError,
  WS_ERR_CONTROL_FRAGMENTED: CloseCode.ProtocolError,
  WS_ERR_UNEXPECTED_CONTINUATION: CloseCode.ProtocolError,
  WS_ERR_EXPECTED_CONTINUATION: CloseCode.ProtocolError,
  WS_ERR_LENGTH_MSB_SET: CloseCode.ProtocolError,
  WS_ERR_INVALID_CLOSE_PAYLOAD: CloseCode.ProtocolError,
  WS_ERR_INVALID_CLOSE_CODE: CloseCode.ProtocolError,
  WS_ERR_INVALID_UTF8: CloseCode.InvalidPayload,
  WS_ERR_MESSAGE_TOO_BIG: CloseCode.MessageTooBig,
  WS_ERR_TOO_MANY_FRAGMENTS: CloseCode.MessageTooBig,
  WS_ERR_BUFFER_LIMIT: CloseCode.MessageTooBig,
  WS_ERR_INVALID_COMPRESSED_DATA: CloseCode.InvalidPayload,
  WS_ERR_DATA_AFTER_CLOSE: CloseCode.ProtocolError,
};

/** Stable codes for calls the API refuses (programming errors, not the peer's). */
export type UsageErrorCode =
  | "WS_ERR_CLOSE_CODE_NOT_SENDABLE"
  | "WS_ERR_CLOSE_REASON_TOO_LONG"
  | "WS_ERR_REASON_WITHOUT_CODE"
  | "WS_ERR_CONTROL_PAYLOAD_TOO_LONG"
  | "WS_ERR_MESSAGE_IN_PROGRESS";

/** A RangeError or TypeError that also carries a stable `code`, as Node's own errors do. */
export function usageError<E extends RangeError | TypeError | Error>(
  ErrorClass: new (message: string) => E,
  code: UsageErrorCode,
  message: string,
): E & { code: UsageErrorCode } {
  return Object.assign(new ErrorClass(message), { code });
}
