/**
 * `switchboard/client` in browsers, over the page's WebSocket. The server bundles this file into
 * the one module a page imports, so nothing it reaches may need Node: it reaches session.ts,
 * emitter.ts and dial-browser.ts only (test/client/browser.test.ts checks).
 */
import { browserDial } from "./dial-browser.js";
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

/** A reconnecting session to `url`; `options.dial` defaults to browserDial. */
export function createSession(url: string, options: SessionOptions = {}): Session {
  return createSessionWith(url, { ...options, dial: options.dial ?? browserDial });
}
export {
  type BrowserWebSocket,
  browserDial,
  createBrowserDial,
  type WebSocketConstructor,
} from "./dial-browser.js";
