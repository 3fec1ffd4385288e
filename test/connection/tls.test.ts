import { once } from "node:events";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { connect, handleUpgrade, type WebSocketConnection } from "../../src/index.js";
import { selfSigned } from "./self-signed.js";

describe("connections over TLS (wss://)", () => {
  let server: Server;
  let url: string;
  let cert: string;
  const accepted: WebSocketConnection[] = [];

  beforeAll(async () => {
    const pair = selfSigned();
    cert = pair.cert;
    server = createHttpsServer({ key: pair.key, cert: pair.cert });
    server.on("upgrade", (req, socket, head) => {
      handleUpgrade(req, socket, head, { perMessageDeflate: true }, (ws) => {
        accepted.push(ws);
        ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    url = `wss://127.0.0.1:${(server.address() as AddressInfo).port}/secure`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    server.close();
  });

  it("echoes through our client, with compression, and closes cleanly", async () => {
    const ws = await connect(url, { tls: { ca: cert }, perMessageDeflate: true });
    expect(ws.extensions).toContain("permessage-deflate");
    const big = Buffer.alloc(3 * 1024 * 1024, 0x61);
    const replies: Buffer[] = [];
    const done = new Promise<void>((resolve) => {
      ws.on("message", (data) => {
        replies.push(data);
        if (replies.length === 2) resolve();
      });
    });
    ws.send("over tls");
    ws.send(big);
    await done;
    expect(replies[0].toString()).toBe("over tls");
    expect(replies[1].equals(big)).toBe(true);
    ws.close(1000, "done");
    const [code, reason] = await once(ws, "close");
    expect([code, reason]).toEqual([1000, ""]);
  });

  it("refuses a server whose certificate it does not trust", async () => {
    await expect(connect(url)).rejects.toThrow(/self.signed|certificate/i);
  });

  it("serves a client no one here wrote", async () => {
    const peer = new WebSocket(url, { ca: cert });
    await once(peer, "open");
    peer.send("from ws");
    const [data] = await once(peer, "message");
    expect(data.toString()).toBe("from ws");
    peer.close(4001, "bye");
    const [code] = await once(peer, "close");
    expect(code).toBe(4001);
  });
});
