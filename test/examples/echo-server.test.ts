import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { connect, HandshakeError } from "../../src/index.js";

const tsx = new URL("../../node_modules/.bin/tsx", import.meta.url).pathname;
const example = new URL("../../examples/echo-server.ts", import.meta.url).pathname;

/** Starts the example on a free port and resolves with the URL it prints. */
async function startExample(args: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(tsx, [example, "--port", "0", "--quiet", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line; output: ${output}`)), 15_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /ws:\/\/127\.0\.0\.1:\d+\/echo/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[0]);
      }
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code}: ${output}`)));
  });
  return { child, url };
}

for (const deflate of [false, true]) {
  describe(`examples/echo-server.ts${deflate ? " --deflate" : ""}`, () => {
    let child: ChildProcess;
    let url: string;

    beforeAll(async () => {
      ({ child, url } = await startExample(deflate ? ["--deflate"] : []));
    });

    afterAll(async () => {
      child.kill("SIGTERM");
      if (child.exitCode === null) await once(child, "exit");
    });

    it("echoes text as text and binary as binary on /echo", async () => {
      const ws = await connect(url, { perMessageDeflate: deflate });
      expect(ws.extensions.includes("permessage-deflate")).toBe(deflate);
      const received: Array<[string, boolean]> = [];
      const done = new Promise<void>((resolve) => {
        ws.on("message", (data, isBinary) => {
          received.push([isBinary ? data.toString("hex") : data.toString(), isBinary]);
          if (received.length === 3) resolve();
        });
      });
      ws.send("héllo");
      ws.send(Buffer.from([0, 1, 2, 255]));
      ws.send("x".repeat(5000));
      await done;
      expect(received).toEqual([
        ["héllo", false],
        ["000102ff", true],
        ["x".repeat(5000), false],
      ]);
      ws.close(1000);
      await once(ws, "close");
    });

    it("answers 404 on other paths", async () => {
      const other = url.replace(/\/echo$/, "/elsewhere");
      const error = await connect(other).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(HandshakeError);
      expect((error as HandshakeError).status).toBe(404);

      // A peer no one here wrote sees the same status.
      const peer = new WebSocket(other);
      peer.on("error", () => {});
      const [request, response] = await once(peer, "unexpected-response");
      expect(response.statusCode).toBe(404);
      request.destroy();
    });
  });
}
