/**
 * The public names of `switchboard/client` that do not depend on the platform; browser.ts and
 * node.ts re-export them beside their own createSession.
 */
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
