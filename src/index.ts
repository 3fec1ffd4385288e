export {
  type AttachableServer,
  type Attachment,
  type AttachOptions,
  attach,
} from "./adapters/attach.js";
export {
  createRouter,
  type Route,
  Router,
  RouterError,
  type ServiceModule,
} from "./adapters/router.js";
export { defineConfig, type SwitchboardConfig } from "./cli/config.js";
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
  type ServiceMount,
  ServiceMountError,
  type ServiceMountOptions,
} from "./server/service-mount.js";
export {
  type ServiceServer,
  ServiceServerError,
  type ServiceServerOptions,
  startServiceServer,
} from "./server/service-server.js";
export { createStaticHandler } from "./server/static.js";
export {
  handleUpgrade,
  type Rejection,
  type UpgradeCallback,
  type UpgradeHttpRequest,
  type UpgradeOptions,
} from "./server/upgrade.js";
export {
  type BroadcastOptions,
  type Client,
  defineService,
  type Isolation,
  reject,
  type SendData,
  type SendOptions,
  type ServiceConfig,
  type ServiceContext,
  type ServiceDefinition,
  type ServiceError,
  type ServiceHooks,
  type ServiceMessage,
  type SubscribeOptions,
  type UpgradeRequest,
  type UpgradeResult,
} from "./services/define.js";
export { VERSION } from "./version.js";
