// Helpers for tests of the service server: a client that records what it receives, raw
// upgrade requests for the HTTP answers, and a logger that keeps its lines.
import { request } from "node:http";
import { type ConnectOptions, connect } from "../../src/client/connect.js";
import type { WebSocketConnection } from "../../src/connection/connection.js";
import type { Logger } from "../../src/server/logger.js";

export interface TestClient {
  ws: WebSocketConnection;
  messages: string[];
  /** Resolves with the next message not yet taken by next(). */
  next(timeoutMs?: number): Promise<string>;
  /** Waits until `count` messages arrived in total. */
  waitFor(count: number, timeoutMs?: number): Promise<string[]>;
  closed: Promise<{ code: number; reason: string }>;
}

export async function client(url: string, options: ConnectOptions = {}): Promise<TestClient> {
  const ws = await connect(url, options);
  const messages: string[] = [];
  let taken = 0;
  const waiters: Array<() => void> = [];
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    messages.push(isBinary ? `binary:${data.toString("hex")}` : data.toString());
    for (const wake of waiters.splice(0)) wake();
  });
  ws.on("error", () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on("close", (code: number, reason: string) => {
      resolve({ code, reason });
      for (const wake of waiters.splice(0)) wake();
    });
  });
  const waitUntil = (ready: () => boolean, timeoutMs: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages)}`)),
        timeoutMs,
      );
      const check = () => {
        if (ready()) {
          clearTimeout(timer);
          resolve();
        } else waiters.push(check);
      };
      check();
    });
  return {
    ws,
    messages,
    closed,
    async next(timeoutMs = 10_000) {
      await waitUntil(() => messages.length > taken, timeoutMs, "a message");
      return messages[taken++]!;
    },
    async waitFor(count, timeoutMs = 10_000) {
      await waitUntil(() => messages.length >= count, timeoutMs, `${count} messages`);
      taken = Math.max(taken, count);
      return messages.slice(0, count);
    },
  };
}

export interface HttpAnswer {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/** Sends an upgrade request and returns the HTTP answer (a 101 is reported and the socket closed). */
export function upgradeRequest(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1",
      port,
      path,
      method: options.method ?? "GET",
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        ...options.headers,
      },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, body: "", headers: res.headers });
    });
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on("error", reject);
    req.setTimeout(10_000, () => req.destroy(new Error("no answer in time")));
    req.end();
  });
}

export interface LogLine {
  level: string;
  context: Record<string, unknown>;
  message: string;
}

export function recordingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at =
    (level: string) =>
    (context: object, message: string): void => {
      lines.push({ level, context: context as Record<string, unknown>, message });
    };
  return { lines, error: at("error"), warn: at("warn"), info: at("info"), debug: at("debug") };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every 10 ms until it is true, for at most `timeoutMs`. */
export async function eventually(
  check: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
