// The chat page: one reconnecting session to ws://<host>/chat (examples/chat/services/chat.ts).
// Everything shown comes from the server and is put in the page as text, never as HTML.
import { createSession } from "/switchboard/client.js";

const NAME = /^[\p{L}\p{N}_.-](?:[\p{L}\p{N} _.-]{0,22}[\p{L}\p{N}_.-])?$/u;
const ROOM = /^[a-z0-9][a-z0-9-]{0,23}$/;
/** Entries kept per room in the page; older ones scroll away. */
const MAX_ENTRIES = 500;

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  welcome: $("welcome"),
  nameForm: $("name-form"),
  name: $("name"),
  nameError: $("name-error"),
  chat: $("chat"),
  roomList: $("room-list"),
  roomForm: $("room-form"),
  newRoom: $("new-room"),
  roomTitle: $("room-title"),
  roomCount: $("room-count"),
  log: $("log"),
  sayForm: $("say-form"),
  say: $("say"),
  chatError: $("chat-error"),
  memberList: $("member-list"),
};

const chat = {
  session: null,
  name: "",
  room: null,
  /** name -> member count */
  rooms: new Map(),
  /** room -> entries shown (kept while switching rooms; the session resumes the rest) */
  logs: new Map(),
  members: [],
};

/** A per-tab id: a page that reconnects keeps its name; another tab cannot take it. */
function sessionId() {
  let id = sessionStorage.getItem("switchboard-chat-session");
  if (id === null) {
    const bytes = crypto.getRandomValues(new Uint8Array(18));
    id = btoa(String.fromCharCode(...bytes))
      .replaceAll("+", "-")
      .replaceAll("/", "_");
    sessionStorage.setItem("switchboard-chat-session", id);
  }
  return id;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function showState(state, detail = "") {
  ui.state.dataset.state = state;
  const words = {
    connecting: "connecting…",
    open: "online",
    reconnecting: "reconnecting…",
    closed: "offline",
  };
  ui.state.textContent = `${words[state] ?? state}${detail}`;
}

// ─────────────────────────── rendering ───────────────────────────

function renderRooms() {
  ui.roomList.replaceChildren(
    ...[...chat.rooms]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, count]) => {
        const button = el(
          "button",
          { type: "button", className: "room-link", title: `Join ${name}` },
          el("span", { textContent: `# ${name}` }),
          el("span", { className: "count", textContent: String(count) }),
        );
        button.dataset.room = name;
        button.setAttribute("aria-current", String(name === chat.room));
        button.addEventListener("click", () => switchRoom(name));
        return el("li", {}, button);
      }),
  );
  if (chat.room !== null) {
    const count = chat.rooms.get(chat.room) ?? 0;
    ui.roomCount.textContent = `${count} ${count === 1 ? "person" : "people"}`;
  }
}

function renderMembers() {
  ui.memberList.replaceChildren(
    ...chat.members.map((name) =>
      el("li", { textContent: name === chat.name ? `${name} (you)` : name }),
    ),
  );
}

function entryNode(entry) {
  if (entry.kind === "message") {
    return el(
      "li",
      {},
      el("span", { className: "at", textContent: time(entry.at) }),
      el("span", { className: "who", textContent: entry.name }),
      el("span", { className: "text", textContent: entry.text }),
    );
  }
  if (entry.kind === "gap") return el("li", { className: "gap", textContent: entry.text });
  const verb = entry.kind === "join" ? "joined" : "left";
  return el("li", { className: "notice", textContent: `${entry.name} ${verb}` });
}

function time(at) {
  return typeof at === "number" && at > 0
    ? new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : "";
}

function addEntry(room, entry) {
  let log = chat.logs.get(room);
  if (log === undefined) {
    log = [];
    chat.logs.set(room, log);
  }
  log.push(entry);
  if (log.length > MAX_ENTRIES) log.splice(0, log.length - MAX_ENTRIES);
  if (room !== chat.room) return;
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  ui.log.append(entryNode(entry));
  while (ui.log.childElementCount > MAX_ENTRIES) ui.log.firstElementChild.remove();
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

function renderLog() {
  ui.log.replaceChildren(...(chat.logs.get(chat.room) ?? []).map(entryNode));
  ui.log.scrollTop = ui.log.scrollHeight;
}

function showError(text) {
  ui.chatError.textContent = text;
  if (text === "") return;
  setTimeout(() => {
    if (ui.chatError.textContent === text) ui.chatError.textContent = "";
  }, 5000);
}

// ─────────────────────────── protocol ───────────────────────────

function switchRoom(room) {
  if (room === chat.room) return;
  if (chat.room !== null) chat.session.sendJson({ type: "leave", room: chat.room });
  chat.room = room;
  chat.members = [];
  ui.roomTitle.textContent = `# ${room}`;
  renderRooms();
  renderMembers();
  renderLog();
  chat.session.sendJson({ type: "join", room });
  ui.say.focus();
}

function onMessage(message) {
  let data;
  try {
    data = message.json();
  } catch {
    return;
  }
  switch (data.type) {
    case "welcome": {
      chat.rooms = new Map(data.rooms.map((r) => [r.name, r.count]));
      const room = chat.room ?? "lobby";
      chat.room = room;
      ui.roomTitle.textContent = `# ${room}`;
      renderRooms();
      renderLog();
      // After a reconnect too: the session sends where each room's stream stopped, so joining
      // again replays exactly what was missed.
      chat.session.sendJson({ type: "join", room });
      return;
    }
    case "room":
      chat.rooms.set(data.room.name, data.room.count);
      renderRooms();
      return;
    case "joined":
      if (data.room !== chat.room) return;
      chat.members = data.members;
      renderMembers();
      if (!data.result.ok && data.result.reason !== "closed") {
        addEntry(data.room, { kind: "gap", text: "Some earlier messages could not be recovered." });
      }
      return;
    case "error":
      if (data.code === "name-taken" || data.code === "bad-name") {
        ui.nameError.textContent = data.message;
      } else {
        showError(data.message);
      }
      return;
    default:
  }
}

function onTopic(message) {
  if (!message.topic.startsWith("room:")) return;
  const room = message.topic.slice("room:".length);
  let entry;
  try {
    entry = message.json();
  } catch {
    return;
  }
  addEntry(room, entry);
  if (room !== chat.room) return;
  if (entry.kind === "join" && !chat.members.includes(entry.name)) {
    chat.members = [...chat.members, entry.name].sort((a, b) => a.localeCompare(b));
    renderMembers();
  } else if (entry.kind === "leave") {
    chat.members = chat.members.filter((name) => name !== entry.name);
    renderMembers();
  }
}

function start(name) {
  const url = new URL("/chat", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("name", name);
  url.searchParams.set("session", sessionId());
  const session = createSession(url.toString());
  chat.session = session;
  chat.name = name;
  session.on("state", (event) => {
    const wait =
      event.state === "reconnecting" && event.delayMs
        ? ` in ${Math.ceil(event.delayMs / 1000)} s`
        : "";
    showState(event.state, wait);
  });
  session.on("open", () => {
    ui.welcome.hidden = true;
    ui.chat.hidden = false;
    localStorage.setItem("switchboard-chat-name", name);
  });
  session.on("message", onMessage);
  session.on("topic", onTopic);
  session.on("close", (event) => {
    if (event.willReconnect) return;
    if (event.code === 4409 || event.code === 4400) {
      // Name refused: back to the name form, with the server's explanation (already shown).
      ui.chat.hidden = true;
      ui.welcome.hidden = false;
      chat.session = null;
      ui.name.focus();
    } else {
      showError(`Disconnected (${event.code}${event.reason ? `: ${event.reason}` : ""}).`);
    }
  });
}

// ─────────────────────────── forms ───────────────────────────

ui.name.value = localStorage.getItem("switchboard-chat-name") ?? "";
ui.name.focus();
ui.nameForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = ui.name.value.trim();
  if (!NAME.test(name)) {
    ui.nameError.textContent = "A name is 1–24 letters, digits, spaces or _ . - characters.";
    return;
  }
  ui.nameError.textContent = "";
  chat.session?.close();
  start(name);
});

ui.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const room = ui.newRoom.value.trim().toLowerCase();
  if (!ROOM.test(room)) {
    showError("A room name is 1–24 lower-case letters, digits or -.");
    return;
  }
  ui.newRoom.value = "";
  if (chat.room !== null && chat.room !== room)
    chat.session.sendJson({ type: "leave", room: chat.room });
  chat.room = room;
  chat.members = [];
  ui.roomTitle.textContent = `# ${room}`;
  renderLog();
  renderMembers();
  chat.session.sendJson({ type: "create", room });
});

ui.sayForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.say.value.trim();
  if (text === "" || chat.room === null) return;
  try {
    chat.session.sendJson({ type: "say", room: chat.room, text });
    ui.say.value = "";
  } catch (error) {
    showError(error.message);
  }
});
