// Switchboard's server against python-websockets' client (Debian's python3-websockets 10.4),
// an implementation written independently of ws and of Switchboard. The Python side runs a
// scripted plan (python/peer_client.py) and reports what it saw as JSON; the test checks that
// and what the server saw.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DEFAULT_WAIT_MS,
  describeExtensions,
  type EchoServer,
  FORBIDDEN_PATH,
  MiB,
  parseExtensions,
  reasonFor,
  type ServerPeer,
  sha256,
  startEchoServer,
  VALID_CLOSE_CODES,
  within,
} from "./helpers.js";

/** The system interpreter, which is where the Debian package installs the module. */
const PYTHON = "/usr/bin/python3";
const PEER_SCRIPT = fileURLToPath(new URL("./python/peer_client.py", import.meta.url));
const PEER_TIMEOUT_MS = 40_000;

interface PeerStep {
  op: string;
  kind?: "text" | "binary";
  length?: number;
  sha256?: string;
  hex?: string;
  equal?: boolean;
  sent?: { kind: string; length: number; sha256: string; hex?: string };
  pong?: boolean;
  closeCode?: number | null;
  closeReason?: string | null;
}

interface PeerConnection {
  name: string;
  connected: boolean;
  connectError?: { type: string; status?: number; message?: string };
  subprotocol?: string | null;
  extensions?: string[];
  extensionsHeader?: string | null;
  steps: PeerStep[];
  error: string | null;
  closeCode?: number | null;
  closeReason?: string | null;
}

interface PeerReport {
  ok: boolean;
  error?: string;
  websockets?: string;
  connections: PeerConnection[];
}

interface ConnectionPlan {
  name: string;
  url: string;
  compression: "deflate" | null;
  subprotocols?: string[];
  maxSize?: number;
  steps: Array<Record<string, unknown>>;
}

function runPeer(plan: { connections: ConnectionPlan[] }): Promise<PeerReport> {
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      [PEER_SCRIPT, JSON.stringify(plan)],
      { timeout: PEER_TIMEOUT_MS, maxBuffer: 16 * MiB },
      (err, stdout, stderr) => {
        if (err && (err as NodeJS.ErrnoException).code === "ENOENT") {
          reject(new Error(`${PYTHON} not found: install python3 and python3-websockets`));
          return;
        }
        let report: PeerReport;
        try {
          report = JSON.parse(stdout) as PeerReport;
        } catch {
          reject(
            new Error(
              `python peer printed no JSON (${err ? err.message : "exit 0"}); ` +
                `stdout: ${stdout.slice(0, 2000)} stderr: ${stderr.slice(0, 2000)}`,
            ),
          );
          return;
        }
        if (!report.ok) {
          reject(new Error(`python peer failed: ${report.error}`));
          return;
        }
        resolve(report);
      },
    );
  });
}

describe("python-websockets is available", () => {
  it("imports websockets 10+ under /usr/bin/python3 (CI installs python3-websockets)", async () => {
    const version = await new Promise<string>((resolve, reject) =>
      execFile(
        PYTHON,
        ["-c", "import websockets; print(websockets.__version__)"],
        { timeout: 10_000 },
        (err, stdout, stderr) =>
          err
            ? reject(
                new Error(
                  `${PYTHON} cannot import websockets; install the Debian package ` +
                    `python3-websockets. ${stderr.trim() || err.message}`,
                ),
              )
            : resolve(stdout.trim()),
      ),
    );
    expect(Number.parseInt(version, 10)).toBeGreaterThanOrEqual(10);
  });
});

const FRAGMENT_TEXTS = ["frag ", "mënt ", "✓ ", "🚀"];
const FRAGMENT_HEXES = ["000102", "fffefd", "", "808182838485"];
const PING_HEX = Buffer.from("ping ✓").toString("hex");
const SERVER_PING_HEX = Buffer.from("server ping ✓").toString("hex");

describe.each([
  { compression: null, name: "without compression" },
  { compression: "deflate" as const, name: "with permessage-deflate" },
])("Switchboard server, python-websockets client, $name", ({ compression }) => {
  let server: EchoServer;
  let report: PeerReport;
  const seen = new Map<string, ServerPeer>();

  function connection(name: string): PeerConnection {
    const found = report.connections.find((c) => c.name === name);
    if (!found) throw new Error(`the python peer reported no connection named ${name}`);
    return found;
  }

  function peer(name: string): ServerPeer {
    const found = seen.get(name);
    if (!found) throw new Error(`the server saw no connection named ${name}`);
    return found;
  }

  beforeAll(async () => {
    server = await startEchoServer({
      maxMessageSize: 17 * MiB,
      perMessageDeflate: true,
      selectProtocol: (offered: readonly string[]) => offered.find((p) => p === "chat.v2"),
    });
    const url = (path: string, name: string) => {
      const u = new URL(server.url(path));
      u.searchParams.set("name", name);
      return u.toString();
    };
    const connections: ConnectionPlan[] = [
      {
        name: "main",
        url: url("/echo", "main"),
        compression,
        maxSize: 2 ** 25,
        steps: [
          { op: "echo", text: "hello" },
          { op: "echo", text: "héllo wörld ✓ € 🚀 日本語" },
          { op: "echo", text: "" },
          { op: "echo", hex: "" },
          { op: "echo", hex: "00ff10ee7f80" },
          { op: "echo_fragments", texts: FRAGMENT_TEXTS },
          { op: "echo_fragments", hexes: FRAGMENT_HEXES },
          { op: "ping", hex: PING_HEX },
          { op: "ping", hex: "" },
          { op: "echo_large", size: 16 * MiB, kind: "binary" },
          { op: "echo_large", size: 16 * MiB, kind: "text" },
          { op: "close", code: 1000, reason: "done ✓" },
        ],
      },
      ...VALID_CLOSE_CODES.map((code) => ({
        name: `client-close-${code}`,
        url: url("/echo", `client-close-${code}`),
        compression,
        steps: [
          { op: "echo", text: `before ${code}` },
          { op: "close", code, reason: reasonFor(code) },
        ],
      })),
      ...VALID_CLOSE_CODES.map((code) => {
        const u = new URL(url("/server-close", `server-close-${code}`));
        u.searchParams.set("code", String(code));
        u.searchParams.set("reason", reasonFor(code));
        return {
          name: `server-close-${code}`,
          url: u.toString(),
          compression,
          steps: [{ op: "wait_closed" }],
        };
      }),
      {
        name: "server-ping",
        url: `${url("/server-ping", "server-ping")}&payload=${SERVER_PING_HEX}`,
        compression,
        steps: [{ op: "recv" }, { op: "close", code: 1000, reason: "" }],
      },
      {
        name: "subprotocol",
        url: url("/echo", "subprotocol"),
        compression,
        subprotocols: ["chat.v1", "chat.v2"],
        steps: [
          { op: "echo", text: "over chat.v2" },
          { op: "close", code: 1000, reason: "" },
        ],
      },
      {
        name: "forbidden",
        url: url(`${FORBIDDEN_PATH}/x`, "forbidden"),
        compression,
        steps: [],
      },
    ];
    report = await runPeer({ connections });
    // The Python side waits for each TCP connection to end, so the server has seen every
    // connection that passed the handshake. Missing ones are reported by the tests that need
    // them, rather than failing everything here.
    const expectedPeers = connections.length - 1;
    for (let i = 0; i < expectedPeers; i++) {
      const p = await server.peers.next(`server connection ${i + 1}`, 2_000).catch(() => undefined);
      if (!p) break;
      seen.set(p.query.get("name") ?? "", p);
    }
    await within(
      Promise.all([...seen.values()].map((p) => p.closed)),
      DEFAULT_WAIT_MS,
      "every server-side close event",
    ).catch(() => undefined);
  }, 60_000);

  afterAll(async () => {
    await server?.close();
  });

  it("negotiates permessage-deflate only when Python offers it", () => {
    const main = connection("main");
    expect(main.connected).toBe(true);
    if (compression === null) {
      expect(main.extensions).toEqual([]);
      expect(describeExtensions(peer("main").ws.extensions)).not.toContain("permessage-deflate");
    } else {
      expect(main.extensions).toEqual(["permessage-deflate"]);
      expect(Object.keys(parseExtensions(main.extensionsHeader ?? ""))).toEqual([
        "permessage-deflate",
      ]);
      expect(describeExtensions(peer("main").ws.extensions)).toContain("permessage-deflate");
    }
  });

  it("compresses on the wire only with permessage-deflate", () => {
    // The main connection carries 16 MiB of random bytes (incompressible) and 16 MiB of
    // repetitive text each way; compressed, the text shrinks to almost nothing.
    const socket = peer("main").req.socket;
    if (compression === null) {
      expect(socket.bytesRead).toBeGreaterThan(32 * MiB);
      expect(socket.bytesWritten).toBeGreaterThan(32 * MiB);
    } else {
      expect(socket.bytesRead).toBeLessThan(20 * MiB);
      expect(socket.bytesWritten).toBeLessThan(20 * MiB);
    }
  });

  it("echoes text, binary, empty, multibyte and fragmented messages", () => {
    const main = connection("main");
    expect(main.error).toBeNull();
    const echoes = main.steps.filter((s) => s.op === "echo" || s.op === "echo_fragments");
    expect(echoes.map((s) => [s.kind, s.equal])).toEqual([
      ["text", true],
      ["text", true],
      ["text", true],
      ["binary", true],
      ["binary", true],
      ["text", true],
      ["binary", true],
    ]);
    const messages = peer("main").messages.all;
    const asSeen = messages
      .slice(0, 7)
      .map((m) => [m.isBinary, m.isBinary ? m.data.toString("hex") : m.data.toString("utf8")]);
    expect(asSeen).toEqual([
      [false, "hello"],
      [false, "héllo wörld ✓ € 🚀 日本語"],
      [false, ""],
      [true, ""],
      [true, "00ff10ee7f80"],
      // The fragmented messages arrive whole, as one message each.
      [false, FRAGMENT_TEXTS.join("")],
      [true, FRAGMENT_HEXES.join("")],
    ]);
  });

  it("answers pings with the same payload", () => {
    const main = connection("main");
    const pings = main.steps.filter((s) => s.op === "ping");
    expect(pings).toEqual([
      { op: "ping", pong: true },
      { op: "ping", pong: true },
    ]);
    expect(peer("main").pings.all.map((p) => p.toString("hex"))).toEqual([PING_HEX, ""]);
  });

  it("pings Python and sees its pong", () => {
    const result = connection("server-ping");
    expect(result.error).toBeNull();
    expect(result.steps[0]).toMatchObject({
      op: "recv",
      kind: "text",
      hex: Buffer.from(`pong:${SERVER_PING_HEX}`).toString("hex"),
    });
    expect(peer("server-ping").pongs.all.map((p) => p.toString("hex"))).toEqual([SERVER_PING_HEX]);
  });

  it("echoes 16 MiB binary and text messages both ways", () => {
    const main = connection("main");
    const large = main.steps.filter((s) => s.op === "echo_large");
    expect(large.map((s) => [s.kind, s.length, s.equal])).toEqual([
      ["binary", 16 * MiB, true],
      ["text", 16 * MiB, true],
    ]);
    const seenLarge = peer("main").messages.all.slice(7, 9);
    expect(seenLarge.map((m) => [m.isBinary, m.data.length, sha256(m.data)])).toEqual([
      [true, 16 * MiB, large[0].sent?.sha256],
      [false, 16 * MiB, large[1].sent?.sha256],
    ]);
  });

  it("completes the client's closing handshake and reports code and reason", () => {
    const main = connection("main");
    expect(main.steps.at(-1)).toMatchObject({ op: "close" });
    expect(main.steps.at(-1)?.closeCode).not.toBe(1006);
    expect(peer("main").closeEvents.map((c) => [c.code, c.reason])).toEqual([[1000, "done ✓"]]);
  });

  it("delivers every valid close code and reason Python sends", () => {
    const observed = VALID_CLOSE_CODES.map((code) => {
      const name = `client-close-${code}`;
      const client = connection(name);
      const server = peer(name);
      return {
        code,
        error: client.error,
        echoed: client.steps[0]?.equal,
        // Python got a close frame back (1006 would mean the TCP connection just dropped).
        pythonGotCloseFrame: client.steps[1]?.closeCode !== 1006 && client.steps[1] !== undefined,
        server: server.closeEvents.map((c) => [c.code, c.reason]),
      };
    });
    expect(observed).toEqual(
      VALID_CLOSE_CODES.map((code) => ({
        code,
        error: null,
        echoed: true,
        pythonGotCloseFrame: true,
        server: [[code, reasonFor(code)]],
      })),
    );
  });

  it("delivers every valid close code and reason the server sends to Python", () => {
    const observed = VALID_CLOSE_CODES.map((code) => {
      const client = connection(`server-close-${code}`);
      return { code, error: client.error, step: client.steps[0] };
    });
    expect(observed).toEqual(
      VALID_CLOSE_CODES.map((code) => ({
        code,
        error: null,
        step: { op: "wait_closed", closeCode: code, closeReason: reasonFor(code) },
      })),
    );
    // Python echoes the code it received (RFC 6455 section 5.5.1), so the server sees it back.
    expect(
      VALID_CLOSE_CODES.map((code) => peer(`server-close-${code}`).closeEvents[0]?.code),
    ).toEqual([...VALID_CLOSE_CODES]);
  });

  it("agrees with Python on the subprotocol picked by selectProtocol", () => {
    const result = connection("subprotocol");
    expect(result.subprotocol).toBe("chat.v2");
    expect(result.steps[0]).toMatchObject({ kind: "text", equal: true });
    expect(peer("subprotocol").ws.protocol).toBe("chat.v2");
  });

  it("lets Python see a verify rejection as HTTP 404", () => {
    expect(connection("forbidden")).toMatchObject({
      connected: false,
      connectError: { type: "InvalidStatusCode", status: 404 },
    });
    expect(seen.has("forbidden")).toBe(false);
  });
});
