/** The GUID every server appends to the client's key (RFC 6455 section 1.3). */
export const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Frame opcodes (RFC 6455 section 5.2). */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;
export type Opcode = (typeof Opcode)[keyof typeof Opcode];

/** Close status codes (RFC 6455 section 7.4.1, plus 1012-1014 from the IANA registry). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  UnsupportedData: 1003,
  /** Never on the wire: "no status code was present". */
  NoStatus: 1005,
  /** Never on the wire: the connection closed without a close frame. */
  Abnormal: 1006,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  MandatoryExtension: 1010,
  InternalError: 1011,
  ServiceRestart: 1012,
  TryAgainLater: 1013,
  BadGateway: 1014,
  /** Never on the wire: the TLS handshake failed. */
  TlsHandshake: 1015,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * Whether a close code may appear in a close frame (RFC 6455 section 7.4).
 * 1000-1003 and 1007-1014 are defined (1012-1014 by the IANA registry); 1004 is reserved;
 * 1005, 1006 and 1015 are reserved for local use and MUST NOT be sent; 1016-2999 are reserved
 * for future protocol revisions; 3000-3999 are registered by libraries; 4000-4999 are private.
 */
export function isValidWireCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1003) ||
    (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999)
  );
}

/** Control frames carry at most 125 bytes of payload (RFC 6455 section 5.5). */
export const MAX_CONTROL_PAYLOAD = 125;

/** A close reason must fit in a control frame after the two-byte code. */
export const MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD - 2;
