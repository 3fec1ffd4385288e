export { type ConnectOptions, connect } from "./client/connect.js";
export {
  ConnectionError,
  type ConnectionOptions,
  type HeartbeatOptions,
  type ReadyState,
  WebSocketConnection,
} from "./connection/connection.js";
export { CloseCode, Opcode } from "./protocol/constants.js";
export { ProtocolError, type ProtocolErrorCode } from "./protocol/errors.js";
export { HandshakeError, type HandshakeResponse } from "./protocol/handshake.js";
export type { PerMessageDeflateOptions } from "./protocol/permessage-deflate.js";
export type { Logger } from "./server/logger.js";
export { createServer, type ServerOptions, WebSocketServer } from "./server/server.js";
export {
  handleUpgrade,
  type Rejection,
  type UpgradeCallback,
  type UpgradeOptions,
} from "./server/upgrade.js";
export { VERSION } from "./version.js";
