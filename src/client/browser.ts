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

export * from "./public.js";

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
