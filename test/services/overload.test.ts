// A service that falls behind: past maxInFlightBytes of unhandled messages its clients stop
// being read (so memory stays bounded) and new connections get 503 with Retry-After; once it
// catches up, everything sent was handled, in order, and connections are accepted again.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, eventually, upgradeRequest } from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/basic", import.meta.url));

// The I/O thread itself is what a blocked "main" service blocks, so there is nobody to answer.
describe.each<Isolation>(["worker", "process"])("overload in isolation %s", (isolation) => {
  let server: ServiceServer;
  beforeAll(async () => {
    server = await startServiceServer({
      root: ROOT,
      port: 0,
      isolation,
      maxInFlightBytes: 64 * 1024,
    });
  });
  afterAll(() => server.shutdown());

  it("stops reading and answers 503 while behind, loses nothing, then accepts again", async () => {
    const c = await client(server.url("/slow"));
    c.ws.send("block");
    const filler = "x".repeat(4096);
    for (let i = 0; i < 64; i++) c.ws.send(`${String(i).padStart(3, "0")}${filler}`);
    await eventually(() => server.service("slow.ts")?.status === "ready", 5_000, "the service");
    const refused = await upgradeRequest(server.port, "/slow");
    expect(refused.status).toBe(503);
    expect(refused.headers["retry-after"]).toBe("1");
    const all = await c.waitFor(65, 20_000);
    expect(all[0]).toBe("done:block");
    expect(all.slice(1)).toEqual(
      Array.from({ length: 64 }, (_, i) => `done:${String(i).padStart(3, "0")}xxxxx`),
    );
    let status = 0;
    for (let i = 0; i < 100 && status !== 101; i++) {
      status = (await upgradeRequest(server.port, "/slow")).status;
      if (status !== 101) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(status).toBe(101);
  });
});
