import type { WebSocketConnection } from "../connection/connection.js";
import { type ConnectOptions, connect } from "./connect.js";
import type { Dial } from "./session.js";

/**
 * The session's dial in Node: our own client (connect.ts). A connection that cannot be made
 * (refused, a status other than 101, a handshake timeout) is reported as the error it was and
 * then as a close with 1006, as a browser reports a failed connection.
 */
export function createNodeDial(options: Omit<ConnectOptions, "protocols"> = {}): Dial {
  return (url, protocols, handlers) => {
    let connection: WebSocketConnection | null = null;
    /** close() before the handshake finished: the connection is closed as soon as it opens. */
    let abandoned: { code?: number; reason?: string } | null = null;
    connect(url, { ...options, protocols }).then(
      (opened) => {
        connection = opened;
        opened.on("error", (error) => handlers.error(error));
        opened.on("message", (data, isBinary) => {
          if (isBinary) {
            // A plain view, no copy: the same type the browser dial hands over.
            handlers.message(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), true);
          } else {
            handlers.message(data.toString("utf8"), false);
          }
        });
        opened.once("close", (code, reason) => handlers.close(code, reason));
        if (abandoned !== null) opened.close(abandoned.code, abandoned.reason);
        else handlers.open(opened.protocol);
      },
      (error: unknown) => {
        handlers.error(error);
        handlers.close(1006, error instanceof Error ? error.message : String(error));
      },
    );
    return {
      send(data) {
        connection?.send(data);
      },
      close(code, reason) {
        if (connection !== null) connection.close(code, reason);
        else abandoned ??= { code, reason };
      },
      get bufferedAmount() {
        return connection?.bufferedAmount ?? 0;
      },
    };
  };
}

/** The default dial of `switchboard/client` in Node. */
export const nodeDial: Dial = createNodeDial();
