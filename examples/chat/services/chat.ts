import { type Client, defineService, reject, type ServiceContext } from "../../../src/index.js";

/**
 * ws://127.0.0.1:8080/chat?name=<name>&session=<id> — the chatroom behind the demo page.
 *
 * Rooms are topics (`room:<name>`) that keep their recent history and deliver envelopes with
 * positions, so a page that drops and reconnects (its `switchboard/client` session sends the
 * last positions in `resume`) gets exactly what it missed. Who is in a room is the topic's
 * presence; the live room list with member counts is the `chat:rooms` topic every client
 * follows silently. The wire protocol is in examples/chat/README.md.
 */

export const config = {
  // Far above the longest valid message (500 characters of text in JSON): larger frames are
  // refused by the I/O thread with 1009 before the service sees them.
  maxMessageSize: 4096,
};

interface Member {
  name: string;
  /** Rooms joined on this connection (kept in client data so a hot reload keeps them). */
  rooms: string[];
  /** Flood control: a token bucket per connection. */
  tokens: number;
  refilledAt: number;
  refused: number;
}

interface Room {
  name: string;
  createdBy: string;
  createdAt: number;
}

type ChatClient = Client<Member>;
type Ctx = ServiceContext<Member>;

const NAME = /^[\p{L}\p{N}_.-](?:[\p{L}\p{N} _.-]{0,22}[\p{L}\p{N}_.-])?$/u;
const ROOM = /^[a-z0-9][a-z0-9-]{0,23}$/;
const SESSION = /^[A-Za-z0-9_-]{16,64}$/;
const MAX_TEXT = 500;
const MAX_ROOMS = 50;
const MAX_ROOMS_PER_CLIENT = 10;
const RECENT = 50;
/** A burst of 20 messages, then 4 a second; past 20 refused in a row the client is closed. */
const BUCKET = { size: 20, perSecond: 4, refusedLimit: 20 };
/** Application close codes (RFC 6455 section 7.4.2: 4000-4999 are private use). */
const CLOSE = { badName: 4400, nameTaken: 4409, replaced: 4001 } as const;

const ROOMS_TOPIC = "chat:rooms";
const roomTopic = (room: string) => `room:${room}`;

const rooms = new Map<string, Room>();
for (const name of ["lobby", "random"]) rooms.set(name, { name, createdBy: "", createdAt: 0 });
/** Names online on this server: lower-cased name -> the session and connection holding it. */
const online = new Map<string, { session: string; client: ChatClient }>();
/** Connections per (room, name): join and leave notices only when a person comes or goes. */
const inRoom = new Map<string, Map<string, number>>();

function send(client: ChatClient, message: Record<string, unknown>): void {
  client.send(JSON.stringify(message));
}

function refuse(client: ChatClient, code: string, message: string): void {
  send(client, { type: "error", code, message });
}

async function roomList(ctx: Ctx): Promise<Array<{ name: string; count: number }>> {
  return Promise.all(
    [...rooms.values()].map(async (room) => ({
      name: room.name,
      count: await ctx.presenceCount(roomTopic(room.name)),
    })),
  );
}

/** Counts this connection in or out of a room; returns the person's connections there now. */
function countIn(room: string, name: string, delta: 1 | -1): number {
  let names = inRoom.get(room);
  if (names === undefined) {
    names = new Map();
    inRoom.set(room, names);
  }
  const count = (names.get(name) ?? 0) + delta;
  if (count > 0) names.set(name, count);
  else names.delete(name);
  return count;
}

function notice(ctx: Ctx, room: string, kind: "join" | "leave", name: string): void {
  ctx.publish(roomTopic(room), JSON.stringify({ kind, name, at: Date.now() }));
}

/** Flood control: false when the client is over its rate (and closed when it keeps on). */
function allowed(client: ChatClient): boolean {
  const data = client.data;
  const now = Date.now();
  data.tokens = Math.min(
    BUCKET.size,
    data.tokens + ((now - data.refilledAt) / 1000) * BUCKET.perSecond,
  );
  data.refilledAt = now;
  if (data.tokens >= 1) {
    data.tokens -= 1;
    data.refused = 0;
    return true;
  }
  data.refused += 1;
  if (data.refused > BUCKET.refusedLimit) {
    client.close(1008, "flooding: too many messages");
  } else if (data.refused === 1) {
    refuse(client, "slow-down", "You are sending too fast; wait a moment.");
  }
  return false;
}

async function join(client: ChatClient, room: string, ctx: Ctx): Promise<void> {
  if (!rooms.has(room)) return refuse(client, "unknown-room", `There is no room "${room}".`);
  const name = client.data.name;
  if (!client.data.rooms.includes(room)) {
    if (client.data.rooms.length >= MAX_ROOMS_PER_CLIENT) {
      return refuse(
        client,
        "too-many-rooms",
        `Leave a room first (${MAX_ROOMS_PER_CLIENT} at most).`,
      );
    }
    client.data.rooms.push(room);
    if (countIn(room, name, 1) === 1) notice(ctx, room, "join", name);
  }
  // Resumes from the position the page's session sent, if any; otherwise the recent history.
  const result = await client.subscribe(roomTopic(room), { member: { name }, recent: RECENT });
  const members = (await ctx.presence(roomTopic(room)))
    .map((m) => (m.info as { name: string }).name)
    .filter((member, i, all) => all.indexOf(member) === i)
    .sort((a, b) => a.localeCompare(b));
  send(client, { type: "joined", room, members, result });
}

function leave(client: ChatClient, room: string, ctx: Ctx): void {
  const at = client.data.rooms.indexOf(room);
  if (at < 0) return;
  client.data.rooms.splice(at, 1);
  client.unsubscribe(roomTopic(room));
  if (countIn(room, client.data.name, -1) === 0) notice(ctx, room, "leave", client.data.name);
  send(client, { type: "left", room });
}

async function create(client: ChatClient, room: string, ctx: Ctx): Promise<void> {
  if (rooms.has(room)) return join(client, room, ctx);
  if (rooms.size >= MAX_ROOMS) {
    return refuse(client, "too-many-rooms", `There are ${MAX_ROOMS} rooms already.`);
  }
  rooms.set(room, { name: room, createdBy: client.data.name, createdAt: Date.now() });
  ctx.publish(ROOMS_TOPIC, JSON.stringify({ type: "room", room: { name: room, count: 0 } }));
  await join(client, room, ctx);
}

export default defineService<Member, { rooms: Room[] }>({
  upgrade(request) {
    // Validated here so a bad request never opens; the page checks the same rules first.
    const name = (request.query.get("name") ?? "").trim();
    const session = request.query.get("session") ?? "";
    if (!SESSION.test(session)) return reject(400, "bad session id");
    return {
      data: { name, rooms: [], tokens: BUCKET.size, refilledAt: Date.now(), refused: 0 },
    };
  },

  async open(client, ctx) {
    const { name } = client.data;
    if (!NAME.test(name)) {
      refuse(client, "bad-name", "A name is 1-24 letters, digits, spaces or _ . - characters.");
      return client.close(CLOSE.badName, "bad name");
    }
    const session = client.query.get("session") as string;
    const key = name.toLocaleLowerCase();
    const holder = online.get(key);
    if (holder?.client.open && holder.session !== session) {
      refuse(client, "name-taken", `"${name}" is taken right now; choose another name.`);
      return client.close(CLOSE.nameTaken, "name taken");
    }
    online.set(key, { session, client });
    // The same page reconnecting before its old connection was found dead: the new one wins.
    if (holder !== undefined && holder.client !== client && holder.client.open) {
      holder.client.close(CLOSE.replaced, "replaced by a newer connection");
    }
    if (client.handover) {
      // A hot reload: subscriptions stayed on the I/O thread; rebuild the counts.
      for (const room of client.data.rooms) countIn(room, name, 1);
      return;
    }
    await client.subscribe(ROOMS_TOPIC, { silent: true, since: null });
    send(client, { type: "welcome", name, rooms: await roomList(ctx), maxText: MAX_TEXT });
  },

  async message(client, message, ctx) {
    if (!allowed(client)) return;
    if (message.isBinary) return refuse(client, "bad-message", "Messages are JSON text.");
    let request: { type?: unknown; room?: unknown; text?: unknown };
    try {
      request = message.json();
    } catch {
      return refuse(client, "bad-message", "Messages are JSON text.");
    }
    const room = typeof request.room === "string" ? request.room : "";
    if (!ROOM.test(room)) {
      return refuse(client, "bad-room", "A room name is 1-24 lower-case letters, digits or -.");
    }
    switch (request.type) {
      case "join":
        return join(client, room, ctx);
      case "leave":
        return leave(client, room, ctx);
      case "create":
        return create(client, room, ctx);
      case "say": {
        if (!client.data.rooms.includes(room)) {
          return refuse(client, "not-in-room", `Join "${room}" first.`);
        }
        // Control characters other than newlines and tabs are dropped; the page escapes HTML.
        const raw = typeof request.text === "string" ? request.text : "";
        // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point
        const text = raw.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, "").trim();
        if (text.length === 0 || text.length > MAX_TEXT) {
          return refuse(client, "bad-text", `A message is 1-${MAX_TEXT} characters.`);
        }
        ctx.publish(
          roomTopic(room),
          JSON.stringify({ kind: "message", name: client.data.name, text, at: Date.now() }),
        );
        return;
      }
      default:
        return refuse(client, "bad-message", "Unknown message type.");
    }
  },

  close(client, _code, _reason, ctx) {
    const { name } = client.data;
    const key = name.toLocaleLowerCase();
    if (online.get(key)?.client === client) online.delete(key);
    for (const room of client.data.rooms) {
      if (countIn(room, name, -1) === 0) notice(ctx, room, "leave", name);
    }
  },

  async presence(change, ctx) {
    // Live member counts for every page's room list.
    if (!change.topic.startsWith("room:")) return;
    const name = change.topic.slice("room:".length);
    if (!rooms.has(name)) return;
    const count = await ctx.presenceCount(change.topic);
    ctx.publish(ROOMS_TOPIC, JSON.stringify({ type: "room", room: { name, count } }));
  },

  snapshot() {
    return { rooms: [...rooms.values()] };
  },

  restore(state) {
    for (const room of state.rooms) rooms.set(room.name, room);
  },
});
