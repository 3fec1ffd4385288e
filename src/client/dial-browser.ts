import { type Dial, SessionError } from "./session.js";

/**
 * The session's dial in a browser: the page's WebSocket. Browsers say nothing about why a
 * connection failed (by design, so pages cannot probe networks): a failed connection is just a
 * close with 1006, and the error event carries no detail worth reporting.
 */

/** The part of the WebSockets standard's WebSocket that the dial uses. */
export interface BrowserWebSocket {
  binaryType: string;
  readonly protocol: string;
  readonly bufferedAmount: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string[]) => BrowserWebSocket;

/** A dial over `WebSocketClass`, by default the global WebSocket when a connection is made. */
export function createBrowserDial(WebSocketClass?: WebSocketConstructor): Dial {
  return (url, protocols, handlers) => {
    const Socket = WebSocketClass ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Socket === undefined) {
      throw new SessionError("SB_CLIENT_DIAL_FAILED", "this environment has no WebSocket");
    }
    const socket = new Socket(url, protocols);
    // Bytes as ArrayBuffers, read at once, rather than Blobs read asynchronously (out of order).
    socket.binaryType = "arraybuffer";
    socket.onopen = () => handlers.open(socket.protocol);
    socket.onmessage = (event) => {
      const { data } = event;
      if (typeof data === "string") handlers.message(data, false);
      else handlers.message(new Uint8Array(data as ArrayBuffer), true);
    };
    socket.onclose = (event) => {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      handlers.close(event.code, event.reason);
    };
    socket.onerror = () => {};
    return {
      send: (data) => socket.send(data),
      close: (code, reason) => socket.close(code, reason),
      get bufferedAmount() {
        return socket.bufferedAmount;
      },
    };
  };
}

/** The default dial of `switchboard/client` in a browser. */
export const browserDial: Dial = createBrowserDial();
