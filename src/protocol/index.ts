/** The protocol core on its own: no sockets, no timers, no zlib. */
export * from "./close-state.js";
export * from "./constants.js";
export * from "./errors.js";
export * from "./extension-header.js";
export * from "./frame.js";
export * from "./handshake.js";
export * from "./mask.js";
export * from "./permessage-deflate.js";
export * from "./protocol.js";
export * from "./utf8.js";
