/** Errors the connection reports that are not the peer's protocol violations. */
export type ConnectionErrorCode =
  | "WS_ERR_HEARTBEAT_TIMEOUT"
  | "WS_ERR_CLOSE_TIMEOUT"
  | "WS_ERR_TRANSPORT"
  | "WS_ERR_SEND_FAILED"
  | "WS_ERR_LISTENER_FAILED";

export class ConnectionError extends Error {
  override readonly name = "ConnectionError";
  constructor(
    readonly code: ConnectionErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
