// The service server over real sockets: routing, the HTTP answers before the upgrade, and the
// service API, run as one suite over the three isolation modes (the I/O thread, a worker thread,
// a child process). The fixtures are TypeScript modules loaded with no build step.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, recordingLogger, type TestClient, upgradeRequest } from "./helpers.js";

const ROOT = fileURLToPath(new URL("./fixtures/basic", import.meta.url));

describe.each<Isolation>(["main", "worker", "process"])("services in isolation %s", (isolation) => {
  let server: ServiceServer;
  const logger = recordingLogger();
  const open: TestClient[] = [];
  const join = async (path: string, options = {}) => {
    const c = await client(server.url(path), options);
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await startServiceServer({ root: ROOT, port: 0, isolation, logger });
  });
  afterAll(async () => {
    for (const c of open) c.ws.terminate();
    await server.shutdown();
  });

  it("echoes text and binary with the same opcode", async () => {
    const c = await join("/echo");
    c.ws.send("héllo");
    c.ws.send(Buffer.from([0, 1, 2, 255]));
    c.ws.send("");
    expect(await c.waitFor(3)).toEqual(["héllo", "binary:000102ff", ""]);
  });

  it("keeps the order of many pipelined messages", async () => {
    const c = await join("/echo");
    const sent = Array.from({ length: 2000 }, (_, i) => `m${i}`);
    for (const m of sent) c.ws.send(m);
    expect(await c.waitFor(sent.length)).toEqual(sent);
  });

  it("carries large messages both ways", async () => {
    const c = await join("/echo");
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    c.ws.send(big);
    const [echo] = await c.waitFor(1);
    expect(echo!.length).toBe("binary:".length + big.length * 2);
  });

  it("serves / from index.ts", async () => {
    const c = await join("/");
    expect(await c.next()).toBe("root");
  });

  it("gives the service params, query, selected headers and its own name", async () => {
    const c = await join("/info?a=1&b=two", { headers: { "X-Custom": "yes", "X-Other": "no" } });
    const info = JSON.parse(await c.next());
    expect(info).toMatchObject({
      remoteAddress: "127.0.0.1",
      params: {},
      query: { a: "1", b: "two" },
      headers: { "x-custom": "yes" },
      protocol: "",
      handover: false,
      name: "info.ts",
      isolation,
      clients: 1,
    });
    expect(info.headers["x-other"]).toBeUndefined();
    expect(typeof info.id).toBe("string");
  });

  it("accepts with per-connection data, rejects with the hook's status, and fans out topics", async () => {
    expect((await upgradeRequest(server.port, "/rooms/lobby")).status).toBe(401);
    const banned = await upgradeRequest(server.port, "/rooms/lobby?user=banned");
    expect(banned.status).toBe(403);
    expect(banned.body).toBe("banned");
    const ann = await join("/rooms/lobby?user=ann");
    expect(JSON.parse(await ann.next())).toEqual({ kind: "joined", value: "ann" });
    const bob = await join("/rooms/lobby?user=bob");
    expect(JSON.parse(await ann.next())).toEqual({ kind: "joined", value: "bob" });
    expect(JSON.parse(await bob.next())).toEqual({ kind: "joined", value: "bob" });
    const other = await join("/rooms/kitchen?user=cy");
    expect(JSON.parse(await other.next())).toEqual({ kind: "joined", value: "cy" });
    bob.ws.send("hi");
    expect(JSON.parse(await ann.next())).toEqual({ kind: "said", value: "bob: hi" });
    expect(JSON.parse(await bob.next())).toEqual({ kind: "said", value: "bob: hi" });
    other.ws.send("alone");
    expect(JSON.parse(await other.next())).toEqual({ kind: "said", value: "cy: alone" });
    // Nothing from the kitchen reached the lobby.
    bob.ws.send("again");
    expect(JSON.parse(await ann.next())).toEqual({ kind: "said", value: "bob: again" });
  });

  it("lets an async upgrade hook choose the subprotocol", async () => {
    const c = await join("/proto", { protocols: ["chat.v1", "chat.v2"] });
    expect(c.ws.protocol).toBe("chat.v2");
    expect(await c.next()).toBe("protocol=chat.v2");
    const none = await join("/proto", { protocols: ["chat.v1"] });
    expect(none.ws.protocol).toBe("");
    expect(await none.next()).toBe("protocol=");
  });

  it("supports the pull style: for await (const message of client)", async () => {
    const c = await join("/pull");
    for (let i = 0; i < 600; i++) c.ws.send(`p${i}`);
    const got = await c.waitFor(600);
    expect(got[0]).toBe("1:p0");
    expect(got[599]).toBe("600:p599");
  });

  it("runs a client's hooks in order: an async open finishes before its messages", async () => {
    const c = await join("/ordered");
    c.ws.send("a");
    c.ws.send("b");
    c.ws.send("done");
    expect(await c.next()).toBe("open,a,b,done");
  });

  it("logs a hook that throws, tells the error hook, and keeps serving", async () => {
    const c = await join("/thrower");
    c.ws.send("boom");
    c.ws.send("async boom");
    c.ws.send("still here");
    expect(await c.waitFor(3)).toEqual([
      "error:SB_ERR_HOOK_FAILED:the message hook threw: boom requested",
      "error:SB_ERR_HOOK_FAILED:the message hook threw: async boom requested",
      "ok:still here",
    ]);
    const line = logger.lines.find(
      (l) => l.message === "the message hook threw" && l.context.service === "thrower.ts",
    );
    expect(line).toBeDefined();
    expect(line!.level).toBe("error");
    expect(typeof line!.context.clientId).toBe("string");
    expect(String((line!.context.err as { stack?: string }).stack)).toContain("boom requested");
  });

  it("parses JSON and reports bad JSON through the error hook", async () => {
    const c = await join("/json");
    c.ws.send(JSON.stringify({ n: 21 }));
    c.ws.send("{not json");
    expect(await c.waitFor(2)).toEqual([
      JSON.stringify({ doubled: 42, binary: false }),
      "error:SB_ERR_HOOK_FAILED",
    ]);
  });

  it("broadcasts to the other clients and reports closes with their code", async () => {
    const a = await join("/broadcast");
    const b = await join("/broadcast");
    const c = await join("/broadcast");
    a.ws.send("from a");
    expect(await b.next()).toBe("from a");
    expect(await c.next()).toBe("from a");
    c.ws.close(4000, "bye");
    await c.closed;
    expect(await a.next()).toMatch(/^left:\d+:4000:bye$/);
    expect(await b.next()).toMatch(/^left:\d+:4000:bye$/);
    expect(a.messages).not.toContain("from a");
  });

  it("closes a client with the code and reason the service chose", async () => {
    const c = await join("/closer");
    c.ws.send("4321 enough");
    expect(await c.closed).toEqual({ code: 4321, reason: "enough" });
  });

  it("applies the service's maxMessageSize and reports the protocol error to its error hook", async () => {
    const observer = await join("/limited");
    const offender = await join("/limited");
    offender.ws.send(Buffer.alloc(1024));
    expect(await offender.next()).toBe("got 1024");
    offender.ws.send(Buffer.alloc(1025));
    expect((await offender.closed).code).toBe(1009);
    expect(await observer.next()).toMatch(/^error:\d+:WS_ERR_MESSAGE_TOO_BIG$/);
  });

  it("answers 404 for missing services and traversal attempts", async () => {
    for (const path of [
      "/missing",
      "/_shared",
      "/rooms",
      "/../package.json",
      "/%2e%2e/x",
      "/echo%2f",
    ]) {
      const answer = await upgradeRequest(server.port, path);
      expect(answer.status, path).toBe(404);
    }
  });

  it("answers 500 for a module that fails to load or is not a service, and logs why", async () => {
    for (const [path, why] of [
      ["/broken", "broken on purpose"],
      ["/not-a-service", "not a service"],
      ["/bad-config", "config.isolation"],
    ] as const) {
      const answer = await upgradeRequest(server.port, path);
      expect(answer.status, path).toBe(500);
      expect(answer.body, path).not.toContain(why);
      expect(
        logger.lines.some((l) => l.level === "error" && `${l.message}`.includes(why)),
        why,
      ).toBe(true);
    }
  });

  it("answers 405 to another method, 400 to a bad handshake, 426 to another version", async () => {
    expect((await upgradeRequest(server.port, "/echo", { method: "POST" })).status).toBe(405);
    const bad = await upgradeRequest(server.port, "/echo", {
      headers: { "Sec-WebSocket-Key": "short" },
    });
    expect(bad.status).toBe(400);
    const version = await upgradeRequest(server.port, "/echo", {
      headers: { "Sec-WebSocket-Version": "8" },
    });
    expect(version.status).toBe(426);
    expect(version.headers["sec-websocket-version"]).toBe("13");
  });
});
