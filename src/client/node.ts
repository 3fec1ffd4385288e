/** `switchboard/client` in Node, over Switchboard's own client (connect.ts). */

import { nodeDial } from "./dial-node.js";
import {
  createSession as createSessionWith,
  type Session,
  type SessionOptions,
} from "./session.js";

export * from "./public.js";

/** A reconnecting session to `url`; `options.dial` defaults to nodeDial. */
export function createSession(url: string, options: SessionOptions = {}): Session {
  return createSessionWith(url, { ...options, dial: options.dial ?? nodeDial });
}
export { createNodeDial, nodeDial } from "./dial-node.js";
