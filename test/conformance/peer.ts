// The echo server under test, started in-process: Switchboard by default, or the `ws`
// package's server for comparison (SWITCHBOARD_CONFORMANCE_PEER=ws). Both echo every message
// with the same opcode and negotiate permessage-deflate.
import { existsSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import { WebSocketServer } from "ws";

export type PeerKind = "switchboard" | "ws";

export interface Peer {
  kind: PeerKind;
  host: string;
  port: number;
  close(): Promise<void>;
}

export const HOST = "127.0.0.1";

/** 16 MiB: above every message the suite sends, so size limits never decide a case. */
const MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

export function peerKindFromEnv(): PeerKind {
  return process.env.SWITCHBOARD_CONFORMANCE_PEER === "ws" ? "ws" : "switchboard";
}

/** The part of Switchboard's public API this suite relies on (src/index.ts). */
interface SwitchboardConnection {
  on(event: "message", listener: (data: Buffer, isBinary: boolean) => void): unknown;
  send(data: string | Uint8Array, options?: { binary?: boolean }): void;
}

interface SwitchboardServer {
  readonly port: number;
  on(event: "connection", listener: (ws: SwitchboardConnection) => void): unknown;
  close(): Promise<void>;
}

interface SwitchboardModule {
  createServer(options: {
    port: number;
    host: string;
    perMessageDeflate: boolean;
    maxMessageSize: number;
  }): Promise<SwitchboardServer>;
}

export const SWITCHBOARD_ENTRY = fileURLToPath(new URL("../../src/index.ts", import.meta.url));

/** Whether src/index.ts exists yet (the suite is written ahead of the server). */
export function switchboardAvailable(): boolean {
  return existsSync(SWITCHBOARD_ENTRY);
}

async function startSwitchboard(): Promise<Peer> {
  // Imported by path at run time so that the ws comparison mode works on a tree without
  // src/index.ts, and a type error there cannot stop this file from compiling.
  const mod = (await import(
    /* @vite-ignore */ pathToFileURL(SWITCHBOARD_ENTRY).href
  )) as Partial<SwitchboardModule>;
  if (typeof mod.createServer !== "function") {
    throw new Error("src/index.ts does not export createServer");
  }
  const server = await mod.createServer({
    port: 0,
    host: HOST,
    perMessageDeflate: true,
    maxMessageSize: MAX_MESSAGE_SIZE,
  });
  server.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  return { kind: "switchboard", host: HOST, port: server.port, close: () => server.close() };
}

async function startWs(): Promise<Peer> {
  const wss = new WebSocketServer({
    port: 0,
    host: HOST,
    perMessageDeflate: true,
    maxPayload: MAX_MESSAGE_SIZE,
    // ws 8.18+ closes with 1008 after 16384 fragments by default; 9.3.1/9.4.1 send 16385
    // (Autobahn's originals 65537), and the comparison is about the protocol, not that policy.
    ...({ maxFragments: 0 } as object),
  });
  await new Promise<void>((resolve, reject) => {
    wss.once("listening", resolve);
    wss.once("error", reject);
  });
  wss.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
    ws.on("error", () => {});
  });
  const { port } = wss.address() as AddressInfo;
  return {
    kind: "ws",
    host: HOST,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
}

export function startPeer(kind: PeerKind): Promise<Peer> {
  return kind === "ws" ? startWs() : startSwitchboard();
}
