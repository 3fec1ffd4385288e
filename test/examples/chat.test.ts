// The chat demo that `npm start` serves (examples/chat), over real sockets with the topic
// policies of its config file: the page and the browser client are served, names are unique,
// rooms are listed with live counts, messages and join/leave notices reach the room, a page that
// reconnects resumes without loss or duplicates, and bad or flooding input gets a clear answer.
import { get } from "node:http";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import chatConfig from "../../examples/chat/switchboard.config.js";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { createStaticHandler } from "../../src/server/static.js";
import { client, eventually, type TestClient } from "../services/helpers.js";

const ROOT = fileURLToPath(new URL("../../examples/chat/services", import.meta.url));
const PUBLIC = fileURLToPath(new URL("../../examples/chat/public", import.meta.url));

type Json = Record<string, unknown> & { type?: string };

let server: ServiceServer;
const open: TestClient[] = [];
let sessions = 0;

beforeAll(async () => {
  server = await startServiceServer({
    root: ROOT,
    port: 0,
    requestHandler: createStaticHandler(PUBLIC),
    topics: chatConfig.topics,
  });
});
afterAll(async () => {
  for (const c of open) c.ws.terminate();
  await server.shutdown();
});

function httpGet(path: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    get(`http://127.0.0.1:${server.port}${path}`, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body, type: String(res.headers["content-type"]) }),
      );
    }).on("error", reject);
  });
}

const newSession = () => `test-session-${String(++sessions).padStart(8, "0")}`;

async function person(name: string, session = newSession(), extra = ""): Promise<TestClient> {
  const query = `name=${encodeURIComponent(name)}&session=${session}${extra}`;
  const c = await client(server.url(`/chat?${query}`));
  open.push(c);
  return c;
}

const parsed = (c: TestClient) => c.messages.map((m) => JSON.parse(m) as Json);

/** Waits for a message matching `match` and returns it. */
async function expectMessage(c: TestClient, match: (m: Json) => boolean, what: string) {
  await eventually(() => parsed(c).some(match), 10_000, what);
  return parsed(c).find(match) as Json;
}

/** The entries of a room's topic a client got: [kind, name, text]. */
function entries(c: TestClient, room: string) {
  return parsed(c)
    .filter((m) => m.topic === `room:${room}`)
    .map((m) => {
      const data = JSON.parse(m.data as string) as { kind: string; name: string; text?: string };
      return [data.kind, data.name, data.text ?? ""];
    });
}

describe("the chat demo", () => {
  it("serves the page and the browser client bundle", async () => {
    const page = await httpGet("/");
    expect(page.status).toBe(200);
    expect(page.body).toContain("<title>Switchboard chat</title>");
    const bundle = await httpGet("/switchboard/client.js");
    expect(bundle.status).toBe(200);
    expect(bundle.type).toContain("text/javascript");
    expect(bundle.body).toContain("createSession");
    expect(bundle.body).not.toMatch(/from\s+["']node:/);
  });

  it("welcomes with the rooms, and keeps names unique among those online", async () => {
    const ann = await person("Ann");
    const welcome = await expectMessage(ann, (m) => m.type === "welcome", "welcome");
    expect(welcome).toMatchObject({ name: "Ann", maxText: 500 });
    expect(welcome.rooms).toEqual(
      expect.arrayContaining([
        { name: "lobby", count: expect.any(Number) },
        { name: "random", count: expect.any(Number) },
      ]),
    );
    // Another page with the same name (any case) is told and closed with 4409.
    const other = await person("ann");
    expect(await other.closed).toEqual({ code: 4409, reason: "name taken" });
    expect(parsed(other)[0]).toMatchObject({ type: "error", code: "name-taken" });
    // A bad name: 4400 with the rule.
    const bad = await person("<script>");
    expect(await bad.closed).toEqual({ code: 4400, reason: "bad name" });
    expect(parsed(bad)[0]).toMatchObject({ type: "error", code: "bad-name" });
    ann.ws.close();
    await ann.closed;
  });

  it("runs a room: joins with members, messages, notices and live counts", async () => {
    const bea = await person("Bea");
    await expectMessage(bea, (m) => m.type === "welcome", "welcome");
    // Someone already online sees the new room appear in the list.
    const ivy = await person("Ivy");
    await expectMessage(ivy, (m) => m.type === "welcome", "welcome");
    bea.ws.send(JSON.stringify({ type: "create", room: "books" }));
    await expectMessage(
      ivy,
      (m) => m.type === "room" && (m.room as Json).name === "books",
      "the new room",
    );
    const joined = await expectMessage(
      bea,
      (m) => m.type === "joined" && m.room === "books",
      "joined",
    );
    expect(joined.members).toEqual(["Bea"]);

    const cal = await person("Cal");
    const welcome = await expectMessage(cal, (m) => m.type === "welcome", "welcome");
    // The new room is listed for newcomers, with its count.
    expect(welcome.rooms).toContainEqual({ name: "books", count: 1 });
    cal.ws.send(JSON.stringify({ type: "join", room: "books" }));
    const calJoined = await expectMessage(cal, (m) => m.type === "joined", "joined");
    expect(calJoined.members).toEqual(["Bea", "Cal"]);
    // Everyone following the room list sees the count go to 2.
    await expectMessage(
      bea,
      (m) => m.type === "room" && (m.room as Json).name === "books" && (m.room as Json).count === 2,
      "count 2",
    );

    cal.ws.send(JSON.stringify({ type: "say", room: "books", text: "hi <b>Bea</b>" }));
    await eventually(() => entries(bea, "books").length >= 3, 10_000, "the message");
    // Text comes through as written (the page shows it as text, never as HTML).
    expect(entries(bea, "books")).toEqual([
      ["join", "Bea", ""],
      ["join", "Cal", ""],
      ["message", "Cal", "hi <b>Bea</b>"],
    ]);
    cal.ws.send(JSON.stringify({ type: "leave", room: "books" }));
    await expectMessage(cal, (m) => m.type === "left", "left");
    await eventually(() => entries(bea, "books").length >= 4, 10_000, "the leave notice");
    expect(entries(bea, "books")[3]).toEqual(["leave", "Cal", ""]);
    // A newcomer sees the recent history on joining.
    const dan = await person("Dan");
    dan.ws.send(JSON.stringify({ type: "join", room: "books" }));
    await expectMessage(dan, (m) => m.type === "joined", "joined");
    expect(entries(dan, "books").slice(0, 4)).toEqual(entries(bea, "books").slice(0, 4));
    for (const c of [bea, cal, dan, ivy]) c.ws.close();
  });

  it("resumes a page that reconnects: what it missed, once, in order", async () => {
    const session = newSession();
    const eve = await person("Eve", session);
    eve.ws.send(JSON.stringify({ type: "join", room: "random" }));
    await expectMessage(eve, (m) => m.type === "joined", "joined");
    const fox = await person("Fox");
    fox.ws.send(JSON.stringify({ type: "join", room: "random" }));
    await expectMessage(fox, (m) => m.type === "joined", "joined");
    fox.ws.send(JSON.stringify({ type: "say", room: "random", text: "before" }));
    await eventually(
      () => entries(eve, "random").some(([, , text]) => text === "before"),
      10_000,
      "before",
    );
    const last = parsed(eve)
      .filter((m) => m.topic === "room:random")
      .at(-1) as Json;

    // The network drops; the page reconnects with the same session and its last position.
    eve.ws.terminate();
    fox.ws.send(JSON.stringify({ type: "say", room: "random", text: "while away" }));
    const resume = encodeURIComponent(
      JSON.stringify({ "room:random": { epoch: last.epoch, offset: last.offset } }),
    );
    const back = await person("Eve", session, `&resume=${resume}`);
    back.ws.send(JSON.stringify({ type: "join", room: "random" }));
    const joined = await expectMessage(back, (m) => m.type === "joined", "joined");
    expect(joined.result).toMatchObject({ ok: true });
    fox.ws.send(JSON.stringify({ type: "say", room: "random", text: "after" }));
    await eventually(
      () => entries(back, "random").some(([, , text]) => text === "after"),
      10_000,
      "after",
    );
    const texts = entries(back, "random").map(([kind, name, text]) => `${kind}:${name}:${text}`);
    expect(texts.filter((t) => t.startsWith("message:"))).toEqual([
      "message:Fox:while away",
      "message:Fox:after",
    ]);
    const offsets = parsed(back)
      .filter((m) => m.topic === "room:random")
      .map((m) => m.offset as number);
    expect(offsets).toEqual([...new Set(offsets)].sort((a, b) => a - b));
    expect(offsets[0]).toBe((last.offset as number) + 1);
    back.ws.close();
    fox.ws.close();
  });

  it("answers bad input clearly and closes a client that floods", async () => {
    const gil = await person("Gil");
    await expectMessage(gil, (m) => m.type === "welcome", "welcome");
    gil.ws.send("not json");
    await expectMessage(gil, (m) => m.code === "bad-message", "bad-message");
    gil.ws.send(JSON.stringify({ type: "join", room: "No Such Room!" }));
    await expectMessage(gil, (m) => m.code === "bad-room", "bad-room");
    gil.ws.send(JSON.stringify({ type: "join", room: "nowhere" }));
    await expectMessage(gil, (m) => m.code === "unknown-room", "unknown-room");
    gil.ws.send(JSON.stringify({ type: "say", room: "lobby", text: "x" }));
    await expectMessage(gil, (m) => m.code === "not-in-room", "not-in-room");
    gil.ws.send(JSON.stringify({ type: "join", room: "lobby" }));
    await expectMessage(gil, (m) => m.type === "joined", "joined");
    gil.ws.send(JSON.stringify({ type: "say", room: "lobby", text: "y".repeat(501) }));
    await expectMessage(gil, (m) => m.code === "bad-text", "bad-text");
    // Past the service's maxMessageSize: the I/O thread closes with 1009 (RFC 6455 7.4.1).
    const big = await person("Hal");
    big.ws.send("z".repeat(5000));
    expect((await big.closed).code).toBe(1009);

    // Flooding: told to slow down, then closed with 1008. (200 messages: a refill while they
    // are handled, on a slow machine, starts the count of refusals in a row again.)
    const floodStart = Date.now();
    for (let i = 0; i < 200; i++) {
      gil.ws.send(JSON.stringify({ type: "say", room: "lobby", text: `flood ${i}` }));
    }
    expect(await gil.closed).toEqual({ code: 1008, reason: "flooding: too many messages" });
    const floodSeconds = (Date.now() - floodStart) / 1000;
    expect(parsed(gil).some((m) => m.code === "slow-down")).toBe(true);
    // At most the burst got through, and what the bucket refilled meanwhile (4 a second).
    const said = entries(gil, "lobby").filter(([kind]) => kind === "message").length;
    expect(said).toBeLessThanOrEqual(20 + Math.ceil(floodSeconds * 4));
  });
});
