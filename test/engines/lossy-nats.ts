// A TCP proxy on 127.0.0.1 in front of a NATS server that loses chosen messages, as core NATS
// may (it is at-most-once): a client's PUB or HPUB that `drop` picks (by subject and the bytes
// of its headers and payload) never reaches the server, and a MSG or HMSG that `dropDelivery`
// picks (by subject, reply subject and bytes) never reaches the client. Everything else passes
// unchanged, both ways.
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";

export interface LossyNats {
  readonly url: string;
  /** Messages dropped so far, both ways. */
  readonly dropped: number;
  /** Publishes this picks are dropped from now on (null: none). */
  drop: ((subject: string, payload: Buffer) => boolean) | null;
  /** Deliveries to a client this picks are dropped from now on (null: none). */
  dropDelivery: ((subject: string, reply: string, payload: Buffer) => boolean) | null;
  close(): Promise<void>;
}

const CRLF = Buffer.from("\r\n");

/** The operations that carry a payload, with its byte count as their line's last word. */
const WITH_PAYLOAD = new Set(["PUB", "HPUB", "MSG", "HMSG"]);

interface Operation {
  op: string;
  words: string[];
  payload: Buffer;
  bytes: Buffer;
}

/** Splits a stream of protocol bytes into whole operations: a line, plus any payload it announces. */
function operations(onOperation: (operation: Operation) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      const eol = pending.indexOf(CRLF);
      if (eol === -1) break;
      const words = pending
        .subarray(0, eol)
        .toString("latin1")
        .split(" ")
        .filter((word) => word !== "");
      const op = (words[0] ?? "").toUpperCase();
      let end = eol + 2;
      if (WITH_PAYLOAD.has(op)) end += Number(words.at(-1)) + 2;
      if (pending.length < end) break;
      const bytes = pending.subarray(0, end);
      pending = pending.subarray(end);
      onOperation({ op, words, payload: bytes.subarray(eol + 2, end - 2), bytes });
    }
  };
}

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
    dropDelivery: null,
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
    client.on(
      "data",
      operations(({ op, words, payload, bytes }) => {
        if ((op === "PUB" || op === "HPUB") && proxy.drop?.(words[1] ?? "", payload) === true) {
          dropped++;
          return;
        }
        upstream.write(bytes);
      }),
    );
    upstream.on(
      "data",
      operations(({ op, words, payload, bytes }) => {
        // MSG <subject> <sid> [reply] <bytes>; HMSG <subject> <sid> [reply] <header bytes> <bytes>
        const withReply = words.length === (op === "HMSG" ? 6 : 5);
        const reply = withReply ? words[3]! : "";
        if (
          (op === "MSG" || op === "HMSG") &&
          proxy.dropDelivery?.(words[1] ?? "", reply, payload) === true
        ) {
          dropped++;
          return;
        }
        client.write(bytes);
      }),
    );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  url = `nats://127.0.0.1:${address.port}`;
  return proxy;
}
