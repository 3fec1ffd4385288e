/** `switchboard/client` in Node, over Switchboard's own client (connect.ts). */

import { nodeDial } from "./dial-node.js";
import {
  createSession as createSessionWith,
  type Session,
  type SessionOptions,
} from "./session.js";

export type { Unsubscribe } from "./emitter.js";
export {
  type BackoffOptions,
  type CloseEvent,
  type CloseInfo,
  DEFAULT_BACKOFF,
  type Dial,
  type DialHandlers,
  type DialTransport,
  defaultShouldReconnect,
  type OpenEvent,
  type Session,
  SessionError,
  type SessionErrorCode,
  type SessionEvents,
  type SessionMessage,
  type SessionOptions,
  type SessionState,
  type SessionStats,
  type SessionTimers,
  type StateEvent,
  type TopicMessage,
  type TopicPosition,
} from "./session.js";

/** A reconnecting session to `url`; `options.dial` defaults to nodeDial. */
export function createSession(url: string, options: SessionOptions = {}): Session {
  return createSessionWith(url, { ...options, dial: options.dial ?? nodeDial });
}
export { createNodeDial, nodeDial } from "./dial-node.js";
