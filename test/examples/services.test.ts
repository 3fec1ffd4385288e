// The example service tree that `npm start` serves, with its page: echo, and the rooms chat
// (name rules in the upgrade hook, join/message/leave fan-out through a topic).
import { get } from "node:http";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { createStaticHandler } from "../../src/server/static.js";
import { client, upgradeRequest } from "../services/helpers.js";

const ROOT = fileURLToPath(new URL("../../examples/services", import.meta.url));
const PUBLIC = fileURLToPath(new URL("../../examples/public", import.meta.url));

describe("examples/services", () => {
  let server: ServiceServer;
  beforeAll(async () => {
    server = await startServiceServer({
      root: ROOT,
      port: 0,
      requestHandler: createStaticHandler(PUBLIC),
    });
  });
  afterAll(() => server.shutdown());

  it("serves the page over plain HTTP", async () => {
    const page = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      get(`http://127.0.0.1:${server.port}/`, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      }).on("error", reject);
    });
    expect(page.status).toBe(200);
    expect(page.body).toContain("<title>Switchboard rooms</title>");
  });

  it("echoes with the same opcode", async () => {
    const c = await client(server.url("/echo"));
    c.ws.send("text");
    c.ws.send(Buffer.from([1, 2]));
    expect(await c.waitFor(2)).toEqual(["text", "binary:0102"]);
    c.ws.close();
  });

  it("runs a room: names checked, joins, messages and leaves reach everyone in it", async () => {
    expect((await upgradeRequest(server.port, "/rooms/lobby")).status).toBe(400);
    expect((await upgradeRequest(server.port, "/rooms/lobby?name=%3Cscript%3E")).status).toBe(400);
    const ann = await client(server.url("/rooms/lobby?name=ann"));
    expect(JSON.parse(await ann.next())).toEqual({ type: "join", name: "ann" });
    const bob = await client(server.url("/rooms/lobby?name=bob"));
    expect(JSON.parse(await ann.next())).toEqual({ type: "join", name: "bob" });
    expect(JSON.parse(await bob.next())).toEqual({ type: "join", name: "bob" });
    bob.ws.send("hello <b>there</b>");
    const said = { type: "message", name: "bob", text: "hello <b>there</b>" };
    expect(JSON.parse(await ann.next())).toEqual(said);
    expect(JSON.parse(await bob.next())).toEqual(said);
    bob.ws.close();
    expect(JSON.parse(await ann.next())).toEqual({ type: "leave", name: "bob" });
    ann.ws.close();
  });
});
