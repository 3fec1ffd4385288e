// Brokers of our own for the engine tests and the scale-out benchmark: a redis-server or
// nats-server on a free loopback port, started, stopped (gently or with SIGKILL), started again
// on the same port with the same data directory, and disposed of.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Broker {
  readonly port: number;
  readonly url: string;
  /** The broker's process id while it runs (for its CPU figures). */
  readonly pid: number | undefined;
  /** Stops the broker (SIGKILL with `abrupt`), keeping its port for a restart. */
  stop(abrupt?: boolean): Promise<void>;
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>;
  /** Stops it for good and removes its files. */
  dispose(): Promise<void>;
}

/** A loopback port nothing listens on now (bound, read, released). */
export async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** Waits until something accepts TCP connections on the port; bounded. */
async function accepting(port: number, child: ChildProcess, output: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the broker exited: ${output()}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`the broker did not listen on ${port}: ${output()}`);
}

async function startBroker(
  binary: string,
  args: (port: number, dir: string) => string[],
  scheme: string,
): Promise<Broker> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "switchboard-broker-"));
  let child: ChildProcess | null = null;
  let output = "";
  const start = async (): Promise<void> => {
    output = "";
    const started = spawn(binary, args(port, dir), { stdio: ["ignore", "pipe", "pipe"] });
    started.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    started.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child = started;
    await accepting(port, started, () => output);
  };
  const stop = async (abrupt = false): Promise<void> => {
    const running = child;
    child = null;
    const ended = (process: ChildProcess) =>
      process.exitCode !== null || process.signalCode !== null;
    if (running === null || ended(running)) return;
    const exited = once(running, "exit");
    running.kill(abrupt ? "SIGKILL" : "SIGTERM");
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    if (!ended(running)) running.kill("SIGKILL");
  };
  await start();
  return {
    port,
    url: `${scheme}://127.0.0.1:${port}`,
    get pid() {
      return (child as ChildProcess | null)?.pid;
    },
    stop,
    start,
    async dispose() {
      await stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function startRedis(binary: string): Promise<Broker> {
  return startBroker(
    binary,
    (port, dir) => [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    "redis",
  );
}

export function startNats(binary: string): Promise<Broker> {
  return startBroker(
    binary,
    (port, dir) => [
      "--addr",
      "127.0.0.1",
      "--port",
      String(port),
      "--jetstream",
      "--store_dir",
      dir,
    ],
    "nats",
  );
}
