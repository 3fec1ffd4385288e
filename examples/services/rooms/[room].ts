import { defineService, reject } from "../../../src/index.js";

/**
 * ws://127.0.0.1:8080/rooms/<room>?name=<name> — a small chat room: everyone in the room gets
 * every message, as JSON, with join and leave notices. One worker serves every room.
 */

interface Member {
  name: string;
  room: string;
}

const NAME = /^[\p{L}\p{N} _.-]{1,24}$/u;
const MAX_TEXT = 2_000;

export default defineService<Member>({
  upgrade(request) {
    const name = request.query.get("name")?.trim() ?? "";
    if (!NAME.test(name))
      return reject(400, "choose a name of 1-24 letters, digits, spaces or _.-");
    return { data: { name, room: request.params.room! } };
  },

  open(client, ctx) {
    client.subscribe(`room:${client.data.room}`);
    ctx.publish(
      `room:${client.data.room}`,
      JSON.stringify({ type: "join", name: client.data.name }),
    );
  },

  message(client, message, ctx) {
    if (message.isBinary) return client.close(1003, "text only");
    const text = message.text().slice(0, MAX_TEXT);
    ctx.publish(
      `room:${client.data.room}`,
      JSON.stringify({ type: "message", name: client.data.name, text }),
    );
  },

  close(client, _code, _reason, ctx) {
    ctx.publish(
      `room:${client.data.room}`,
      JSON.stringify({ type: "leave", name: client.data.name }),
    );
  },
});
