// A TCP proxy on 127.0.0.1 for network failures a client must survive: cut() destroys every
// connection through it (both sides, as a dropped network does; the proxy keeps listening), and
// while blocked it accepts connections only to destroy them (a server that cannot be reached).
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";

export interface TcpProxy {
  readonly port: number;
  /** Connections accepted and passed on, in total. */
  readonly forwarded: number;
  /** Connections accepted and dropped while blocked, in total. */
  readonly refused: number;
  /** Pairs of sockets open now. */
  readonly open: number;
  /** Destroys every open connection; returns how many there were. */
  cut(): number;
  block(): void;
  unblock(): void;
  /** New connections go to this port from now on (a load balancer moving to another node). */
  retarget(port: number): void;
  close(): Promise<void>;
}

export async function startProxy(initialPort: number): Promise<TcpProxy> {
  let targetPort = initialPort;
  const pairs = new Set<[Socket, Socket]>();
  let blocked = false;
  let forwarded = 0;
  let refused = 0;
  const server = createServer((downstream) => {
    downstream.on("error", () => undefined);
    if (blocked) {
      refused++;
      downstream.destroy();
      return;
    }
    forwarded++;
    const upstream = connect(targetPort, "127.0.0.1");
    upstream.on("error", () => undefined);
    const pair: [Socket, Socket] = [downstream, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("close", drop);
    upstream.on("close", drop);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  const cut = () => {
    const count = pairs.size;
    for (const [downstream, upstream] of [...pairs]) {
      downstream.destroy();
      upstream.destroy();
    }
    pairs.clear();
    return count;
  };
  return {
    port,
    get forwarded() {
      return forwarded;
    },
    get refused() {
      return refused;
    },
    get open() {
      return pairs.size;
    },
    cut,
    block() {
      blocked = true;
    },
    unblock() {
      blocked = false;
    },
    retarget(port) {
      targetPort = port;
    },
    async close() {
      cut();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
