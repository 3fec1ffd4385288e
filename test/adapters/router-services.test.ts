import { afterEach, describe, expect, it } from "vitest";
import { createRouter } from "../../src/adapters/router.js";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, recordingLogger, upgradeRequest } from "../services/helpers.js";
import * as fixtures from "./fixtures/services.js";

// Services registered on a programmatic router, run in each isolation by the standalone server:
// an object service is that very object on the I/O thread, and in a worker or process the
// export its module defined at the same place.

const moduleService = new URL("./fixtures/module-service.ts", import.meta.url);
let server: ServiceServer | undefined;

afterEach(async () => {
  await server?.shutdown();
  server = undefined;
});

describe.each<Isolation>(["main", "worker", "process"])("router services in %s", (isolation) => {
  it("runs object services, with the route's params and settings", async () => {
    const before = fixtures.seen.length;
    const router = createRouter()
      .service("/echo", fixtures.echo)
      .service("/rooms/:room/", fixtures.describe)
      .service("/default", fixtures.default);
    server = await startServiceServer({ router, port: 0, isolation, shutdownTimeoutMs: 3_000 });

    const echo = await client(server.url("/echo"));
    echo.ws.send("hello");
    expect(await echo.next()).toBe("hello");

    const described = await client(server.url("/rooms/lobby?since=3"));
    const info = JSON.parse(await described.next());
    expect(info).toMatchObject({
      name: "/rooms/:room/",
      params: { room: "lobby" },
      query: "since=3",
      isolation,
    });
    // Only on the I/O thread does the service share the program's module state.
    if (isolation === "main") {
      expect(fixtures.seen.slice(before)).toEqual(["hello"]);
      expect(info.seen).toBe(fixtures.seen.length);
    } else {
      expect(fixtures.seen.length).toBe(before);
      expect(info.seen).toBe(0);
    }

    const fallback = await client(server.url("/default"));
    expect(await fallback.next()).toBe("default");
    expect((await upgradeRequest(server.port, "/nothing")).status).toBe(404);
  });

  it("runs a module given by URL; the route's settings replace its config export", async () => {
    const router = createRouter()
      .service("/own", moduleService)
      .service("/given", moduleService, { isolation });
    server = await startServiceServer({ router, port: 0, shutdownTimeoutMs: 3_000 });
    const own = await client(server.url("/own"));
    expect(await own.next()).toBe("module main");
    const given = await client(server.url("/given"));
    expect(await given.next()).toBe(`module ${isolation}`);
  });
});

describe("router services that a worker cannot load", () => {
  it("answers 500 and logs why for a service its module does not export", async () => {
    const logger = recordingLogger();
    const router = createRouter()
      .service("/hidden", fixtures.holder.unexported, { isolation: "worker" })
      .service("/shown", fixtures.holder.unexported, { isolation: "main" });
    server = await startServiceServer({ router, port: 0, logger, shutdownTimeoutMs: 3_000 });
    expect((await upgradeRequest(server.port, "/hidden")).status).toBe(500);
    const failure = logger.lines.find((line) => line.message.includes("failed to load"));
    expect(failure?.context).toMatchObject({
      service: "/hidden",
      err: { code: "SB_ERR_SERVICE_NOT_EXPORTED" },
    });
    // The same object runs on the I/O thread, where nothing needs importing.
    const shown = await client(server.url("/shown"));
    expect(await shown.next()).toBe("unexported");
  });
});
