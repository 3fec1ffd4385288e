// A TCP proxy on 127.0.0.1 in front of a NATS server that loses chosen publishes, as core NATS
// may (it is at-most-once): a client's PUB or HPUB that `drop` picks (by subject and the
// bytes of its headers and payload) never reaches the server. Everything else passes unchanged, both ways.
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";

export interface LossyNats {
  readonly url: string;
  /** Publishes dropped so far. */
  readonly dropped: number;
  /** Publishes this picks are dropped from now on (null: none). */
  drop: ((subject: string, payload: Buffer) => boolean) | null;
  close(): Promise<void>;
}

const CRLF = Buffer.from("\r\n");

export async function startLossyNats(natsPort: number): Promise<LossyNats> {
  const sockets = new Set<Socket>();
  let dropped = 0;
  let url = "";
  const proxy: LossyNats = {
    get url() {
      return url;
    },
    get dropped() {
      return dropped;
    },
    drop: null,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
  const server = createServer((client) => {
    const upstream = connect(natsPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => undefined);
      socket.on("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    upstream.pipe(client);
    let pending: Buffer = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      // Whole protocol operations only: a line, plus the payload a PUB or HPUB announces.
      for (;;) {
        const eol = pending.indexOf(CRLF);
        if (eol === -1) break;
        const line = pending.subarray(0, eol).toString("latin1");
        const words = line.split(" ").filter((word) => word !== "");
        const op = (words[0] ?? "").toUpperCase();
        let end = eol + 2;
        if (op === "PUB" || op === "HPUB") end += Number(words.at(-1)) + 2;
        if (pending.length < end) break;
        const operation = pending.subarray(0, end);
        pending = pending.subarray(end);
        const payload = operation.subarray(eol + 2, end - 2);
        if ((op === "PUB" || op === "HPUB") && proxy.drop?.(words[1] ?? "", payload) === true) {
          dropped++;
          continue;
        }
        upstream.write(operation);
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  url = `nats://127.0.0.1:${address.port}`;
  return proxy;
}
