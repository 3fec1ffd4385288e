import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RouteResult, SERVICE_EXTENSIONS, ServiceRouter } from "../../src/services/router.js";

/** Each file's content names it, so a test can also check what would be imported. */
async function writeTree(root: string, files: readonly string[]): Promise<void> {
  for (const file of files) {
    const full = path.join(root, file);
    if (file.endsWith("/")) {
      await fs.mkdir(full, { recursive: true });
      continue;
    }
    await fs.mkdir(path.dirname(full), { recursive: true });
    await fs.writeFile(full, `export default ${JSON.stringify(file)};\n`);
  }
}

function expectFound(
  result: RouteResult,
  name: string,
  params: Record<string, string> | "unchecked" = {},
) {
  if (!result.found) throw new Error(`expected ${name}, got not-found: ${result.reason}`);
  expect(result.match.name).toBe(name);
  if (params !== "unchecked") expect(result.match.params).toEqual(params);
  return result.match;
}

function expectNotFound(result: RouteResult, reason?: RegExp): void {
  if (result.found) throw new Error(`expected not-found, got ${result.match.name}`);
  expect(result.reason.length).toBeGreaterThan(0);
  if (reason) expect(result.reason).toMatch(reason);
}

let base: string;
/** Static routes only. */
let basic: string;
/** Dynamic files and directories. */
let dynamic: string;
/** Symlinks, inside and out. */
let linked: string;
/** Files outside every root, which no path may reach. */
let outside: string;
/** 31 nested directories "d", a leaf in the last and one more level below it. */
let many: string;

const BASIC_FILES = [
  "index.ts",
  "echo.ts",
  "pref.ts",
  "pref.mts",
  "pref.js",
  "pref.mjs",
  "mtsjs.mts",
  "mtsjs.js",
  "jsmjs.mjs",
  "jsmjs.js",
  "both.ts",
  "both/index.ts",
  "onlyfile.ts",
  "onlydir/index.js",
  "empty/readme.txt",
  "deep/a/b/c.ts",
  "sub/page.ts",
  "sub/_helper.ts",
  "_private.ts",
  ".hidden.ts",
  "_lib/util.ts",
  ".git/hooks.ts",
  "node_modules/pkg.ts",
  "node_modules/pkg/index.js",
  "types.d.ts",
  "mod.d.mts",
  "README.md",
  "data.json",
  "notfile.ts/",
];

const DYNAMIC_FILES = [
  "[org]/feed.ts",
  "[org]/index.ts",
  "[org]/[repo]/issues.ts",
  "[dyn]/y.ts",
  "a/x.ts",
  "chat/[room].ts",
  "chat/[room].js",
  "chat/lobby.ts",
  "pick/[b].ts",
  "pick/[a].ts",
  "dup/[id]/[id].ts",
  "dup2/[id]/[id].ts",
  "dup2/[id]/[other].js",
  "bad/[1x].ts",
  "bad/[a-b].ts",
  "bad/[].ts",
  "bad/chat-[room].ts",
  "bad/[ok].d.ts",
  "bad/[ok].d.mts",
];

beforeAll(async () => {
  base = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "switchboard-router-")));
  basic = path.join(base, "basic");
  dynamic = path.join(base, "dynamic");
  linked = path.join(base, "linked");
  outside = path.join(base, "outside");
  await writeTree(basic, BASIC_FILES);
  await writeTree(dynamic, DYNAMIC_FILES);
  await writeTree(outside, ["evil.ts", "index.ts", "sub/evil.ts"]);
  many = path.join(base, "many");
  const d31 = Array(31).fill("d").join("/");
  await writeTree(many, [`${d31}/leaf.ts`, `${d31}/d/leaf.ts`]);
  await writeTree(linked, [
    "real/lobby.ts",
    "v2/feed.ts",
    "_private.ts",
    "data.json",
    "types.d.ts",
    "notfile.ts/",
  ]);
  const link = (target: string, name: string) => fs.symlink(target, path.join(linked, name));
  await link(path.join(outside, "evil.ts"), "escape.ts");
  await link("../outside/evil.ts", "relescape.ts");
  await link(outside, "outlink");
  await link("../outside/sub", "reloutlink");
  await link("real/lobby.ts", "alias.ts");
  await link("v2", "v");
  await link("_private.ts", "exposed.ts");
  await link("data.json", "jsonlink.ts");
  await link("types.d.ts", "typeslink.ts");
  await link("nowhere.ts", "dangling.ts");
  await link(".", "loop");
  // A file outside that points back in: only reachable by reading outside the root.
  await fs.symlink("../linked/real/lobby.ts", path.join(outside, "back.ts"));
});

afterAll(async () => {
  await fs.rm(base, { recursive: true, force: true });
});

describe("ServiceRouter: static routes", () => {
  it("serves /a/b from a/b.ts and / from index.ts", async () => {
    const router = new ServiceRouter(basic);
    const match = expectFound(await router.resolve("/echo"), "echo.ts");
    expect(match.file).toBe(path.join(basic, "echo.ts"));
    expectFound(await router.resolve("/"), "index.ts");
    expectFound(await router.resolve("/deep/a/b/c"), "deep/a/b/c.ts");
  });

  it("serves /a/b/ from a/b/index.*", async () => {
    const router = new ServiceRouter(basic);
    expectFound(await router.resolve("/both/"), "both/index.ts");
    expectFound(await router.resolve("/onlydir/"), "onlydir/index.js");
  });

  it("lets the other spelling find the only file there is", async () => {
    const router = new ServiceRouter(basic);
    expectFound(await router.resolve("/onlydir"), "onlydir/index.js");
    expectFound(await router.resolve("/onlyfile/"), "onlyfile.ts");
  });

  it("lets the spelling decide when both a/b.ts and a/b/index.ts exist", async () => {
    const router = new ServiceRouter(basic);
    expectFound(await router.resolve("/both"), "both.ts");
    expectFound(await router.resolve("/both/"), "both/index.ts");
  });

  it("prefers .ts, then .mts, then .js, then .mjs", async () => {
    const router = new ServiceRouter(basic);
    expect(SERVICE_EXTENSIONS).toEqual([".ts", ".mts", ".js", ".mjs"]);
    expectFound(await router.resolve("/pref"), "pref.ts");
    expectFound(await router.resolve("/mtsjs"), "mtsjs.mts");
    expectFound(await router.resolve("/jsmjs"), "jsmjs.js");
  });

  it("does not serve a directory without an index", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("/empty"), /no service module/);
    expectNotFound(await router.resolve("/empty/"), /no service module/);
    expectNotFound(await router.resolve("/empty/readme"));
  });

  it("does not serve a name that is not a regular file", async () => {
    // "notfile.ts" is a directory: /notfile must not try to import it.
    expectNotFound(await new ServiceRouter(basic).resolve("/notfile"), /not a regular file/);
  });

  it("does not serve files without a service extension", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("/README"));
    expectNotFound(await router.resolve("/data"));
    expectNotFound(await router.resolve("/README.md"));
  });

  it("ignores anything from '?' or '#' on", async () => {
    const router = new ServiceRouter(basic);
    expectFound(await router.resolve("/echo?x=1"), "echo.ts");
    expectFound(await router.resolve("/echo#top"), "echo.ts");
    expectFound(await router.resolve("/echo?next=/../../outside/evil"), "echo.ts");
    expectFound(await router.resolve("/echo#a?b"), "echo.ts");
    expectNotFound(await router.resolve("/ec?ho"));
    expectNotFound(await router.resolve("?/echo"), /start with/);
  });

  it("refuses paths that do not start with '/'", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("echo"), /start with/);
    expectNotFound(await router.resolve(""), /start with/);
  });

  it("sees a module dropped into the root on the next request, and its removal", async () => {
    const root = path.join(base, "live");
    await fs.mkdir(root);
    const router = new ServiceRouter(root);
    expectNotFound(await router.resolve("/fresh"));
    await writeTree(root, ["fresh.ts", "later/[id].ts"]);
    expectFound(await router.resolve("/fresh"), "fresh.ts");
    expectFound(await router.resolve("/later/7"), "later/[id].ts", { id: "7" });
    await fs.rm(path.join(root, "fresh.ts"));
    expectNotFound(await router.resolve("/fresh"));
    router.invalidate();
    expectFound(await router.resolve("/later/8"), "later/[id].ts", { id: "8" });
  });
});

describe("ServiceRouter: kept listings", () => {
  /** Listings are kept once a directory has been still for this long (the default is 2 s). */
  const racyMs = 100;
  const settle = () => new Promise((resolve) => setTimeout(resolve, racyMs * 2));

  async function settledRoot(name: string, files: readonly string[]): Promise<string> {
    const root = path.join(base, name);
    await fs.mkdir(root);
    await writeTree(root, files);
    await settle();
    return root;
  }

  it("reads a still directory once and answers from its listing afterwards", async () => {
    const root = await settledRoot("kept", ["echo.ts", "chat/[room].ts", "chat/index.ts"]);
    const router = new ServiceRouter(root, { racyMs });
    expectFound(await router.resolve("/echo"), "echo.ts");
    expectFound(await router.resolve("/chat/lobby"), "chat/[room].ts", { room: "lobby" });
    const reads = router.directoryReads;
    expect(reads).toBe(2);
    for (let i = 0; i < 20; i++) {
      expectFound(await router.resolve("/echo"), "echo.ts");
      expectFound(await router.resolve(`/chat/r${i}`), "chat/[room].ts", { room: `r${i}` });
      expectFound(await router.resolve("/chat/"), "chat/index.ts");
      expectNotFound(await router.resolve("/missing"));
    }
    expect(router.directoryReads).toBe(reads);
  });

  it("does not keep a listing of a directory that has just changed", async () => {
    const root = path.join(base, "racy");
    await fs.mkdir(root);
    await writeTree(root, ["echo.ts"]);
    const router = new ServiceRouter(root);
    expectFound(await router.resolve("/echo"), "echo.ts");
    expectFound(await router.resolve("/echo"), "echo.ts");
    expect(router.directoryReads).toBe(2);
  });

  it("sees every change to a kept directory on the next lookup", async () => {
    const root = await settledRoot("changing", ["echo.ts", "gone.ts", "swap.ts", "room/index.ts"]);
    const router = new ServiceRouter(root, { racyMs });
    expectFound(await router.resolve("/echo"), "echo.ts");
    expectFound(await router.resolve("/gone"), "gone.ts");
    expectFound(await router.resolve("/swap"), "swap.ts");
    expectFound(await router.resolve("/room/"), "room/index.ts");
    const reads = router.directoryReads;
    expectFound(await router.resolve("/echo"), "echo.ts");
    expect(router.directoryReads).toBe(reads);

    // Added, removed, replaced by a directory, and a directory renamed: each changes the
    // directory's times, so no stale answer survives the change.
    await writeTree(root, ["fresh.ts"]);
    expectFound(await router.resolve("/fresh"), "fresh.ts");
    await fs.rm(path.join(root, "gone.ts"));
    expectNotFound(await router.resolve("/gone"));
    await fs.rm(path.join(root, "swap.ts"));
    await fs.mkdir(path.join(root, "swap.ts"));
    expectNotFound(await router.resolve("/swap"), /not a regular file/);
    await fs.rename(path.join(root, "room"), path.join(root, "moved"));
    expectNotFound(await router.resolve("/room/"));
    expectFound(await router.resolve("/moved/"), "moved/index.ts");
    expect(router.directoryReads).toBeGreaterThan(reads);
  });

  it("sees a change deep in a kept tree", async () => {
    const root = await settledRoot("deep-change", ["a/b/c.ts"]);
    const router = new ServiceRouter(root, { racyMs });
    expectFound(await router.resolve("/a/b/c"), "a/b/c.ts");
    await settle();
    expectFound(await router.resolve("/a/b/c"), "a/b/c.ts");
    await writeTree(root, ["a/b/d.ts"]);
    expectFound(await router.resolve("/a/b/d"), "a/b/d.ts");
    await fs.rm(path.join(root, "a", "b", "c.ts"));
    expectNotFound(await router.resolve("/a/b/c"));
  });

  it("follows a symlink on every lookup, because its target can change alone", async () => {
    const root = await settledRoot("relink", ["real/one.ts", "real/two.ts", "real/_helper.ts"]);
    await fs.symlink("real/one.ts", path.join(root, "link.ts"));
    await fs.symlink("real", path.join(root, "dir"));
    await settle();
    const router = new ServiceRouter(root, { racyMs });
    expectFound(await router.resolve("/link"), "real/one.ts");
    expectFound(await router.resolve("/dir/two"), "real/two.ts");
    // Rewriting the target of an existing link in place is not possible; replacing the file a
    // link points at leaves the link's directory untouched.
    await fs.rm(path.join(root, "real", "one.ts"));
    await fs.symlink("_helper.ts", path.join(root, "real", "one.ts"));
    expectNotFound(await router.resolve("/link"), /not a servable module/);
    await fs.rm(path.join(root, "real", "one.ts"));
    expectNotFound(await router.resolve("/link"));
  });

  it("keeps answers per path, each valid while the directories on its way are unchanged", async () => {
    const root = await settledRoot("answers", ["echo.ts", "chat/[room].ts", "chat/index.ts"]);
    const router = new ServiceRouter(root, { racyMs });
    expect(router.lookup("/echo")).toBeUndefined();
    expectFound(await router.resolve("/echo"), "echo.ts");
    expectFound(await router.resolve("/chat/lobby"), "chat/[room].ts", { room: "lobby" });
    expectNotFound(await router.resolve("/missing"));
    // Known without a search now, whatever the query says.
    expectFound(router.lookup("/echo?x=1") ?? { found: false, reason: "not kept" }, "echo.ts");
    const lobby = router.lookup("/chat/lobby");
    expect(lobby && expectFound(lobby, "chat/[room].ts", { room: "lobby" })).toBeTruthy();
    expect(router.lookup("/missing")).toMatchObject({ found: false });
    // Each answer is the caller's own.
    if (lobby?.found) (lobby.match.params as Record<string, string>).room = "changed";
    expectFound(router.lookup("/chat/lobby")!, "chat/[room].ts", { room: "lobby" });

    // A change in a directory on the way drops the answer; the next resolve sees the change.
    await writeTree(root, ["missing.ts"]);
    expect(router.lookup("/missing")).toBeUndefined();
    expect(router.lookup("/echo")).toBeUndefined();
    expectFound(await router.resolve("/missing"), "missing.ts");
    // A change in a directory off an answer's way leaves the answer kept.
    await settle();
    expectFound(await router.resolve("/echo"), "echo.ts");
    expectFound(await router.resolve("/echo"), "echo.ts");
    await writeTree(root, ["chat/other.ts"]);
    expect(router.lookup("/echo")).toBeDefined();
    expect(router.lookup("/chat/lobby")).toBeUndefined();
    expectFound(await router.resolve("/chat/lobby"), "chat/[room].ts", { room: "lobby" });
  });

  it("never keeps an answer that followed a symlink or read a directory that just changed", async () => {
    const root = await settledRoot("unkept", ["real/one.ts"]);
    await fs.symlink("real/one.ts", path.join(root, "link.ts"));
    await settle();
    const router = new ServiceRouter(root, { racyMs });
    expectFound(await router.resolve("/link"), "real/one.ts");
    expect(router.lookup("/link")).toBeUndefined();
    await writeTree(root, ["fresh.ts"]);
    expectFound(await router.resolve("/fresh"), "fresh.ts");
    expect(router.lookup("/fresh")).toBeUndefined();
  });

  it("invalidate() forgets every kept listing", async () => {
    const root = await settledRoot("forget", ["echo.ts"]);
    const router = new ServiceRouter(root, { racyMs });
    expectFound(await router.resolve("/echo"), "echo.ts");
    const reads = router.directoryReads;
    router.invalidate();
    expectFound(await router.resolve("/echo"), "echo.ts");
    expect(router.directoryReads).toBe(reads + 1);
  });
});

describe("ServiceRouter: dynamic segments", () => {
  it("serves /chat/anything from chat/[room].ts with params.room", async () => {
    const match = expectFound(
      await new ServiceRouter(dynamic).resolve("/chat/general"),
      "chat/[room].ts",
      {
        room: "general",
      },
    );
    expect(match.file).toBe(path.join(dynamic, "chat", "[room].ts"));
  });

  it("prefers .ts among dynamic files of one name", async () => {
    // chat/[room].js exists too.
    expectFound(await new ServiceRouter(dynamic).resolve("/chat/x"), "chat/[room].ts", {
      room: "x",
    });
  });

  it("serves dynamic directories: [org]/feed.ts, [org]/index.ts, [org]/[repo]/issues.ts", async () => {
    const router = new ServiceRouter(dynamic);
    expectFound(await router.resolve("/acme/feed"), "[org]/feed.ts", { org: "acme" });
    expectFound(await router.resolve("/acme/"), "[org]/index.ts", { org: "acme" });
    expectFound(await router.resolve("/acme"), "[org]/index.ts", { org: "acme" });
    expectFound(await router.resolve("/acme/switchboard/issues"), "[org]/[repo]/issues.ts", {
      org: "acme",
      repo: "switchboard",
    });
    expectNotFound(await router.resolve("/acme/switchboard/pulls"));
  });

  it("decodes parameters once, within the segment character set", async () => {
    const router = new ServiceRouter(dynamic);
    expectFound(await router.resolve("/chat/a%2Db"), "chat/[room].ts", { room: "a-b" });
    expectFound(await router.resolve("/chat/a.b_c-9"), "chat/[room].ts", { room: "a.b_c-9" });
    expectNotFound(await router.resolve("/chat/caf%C3%A9"), /outside \[A-Za-z0-9._-\]/);
    expectNotFound(await router.resolve("/chat/caf%C3"), /malformed/);
    expectNotFound(await router.resolve("/chat/%"), /malformed/);
    expectNotFound(await router.resolve("/chat/a%2"), /malformed/);
    expectNotFound(await router.resolve("/chat/a%20b"), /outside/);
  });

  it("prefers static names over dynamic ones", async () => {
    const router = new ServiceRouter(dynamic);
    expectFound(await router.resolve("/chat/lobby"), "chat/lobby.ts");
    expectFound(await router.resolve("/chat/lobby2"), "chat/[room].ts", { room: "lobby2" });
    expectFound(await router.resolve("/a/x"), "a/x.ts");
  });

  it("backtracks from a static directory to the dynamic ones of its level", async () => {
    const router = new ServiceRouter(dynamic);
    // a/ exists but has no y: [dyn]/y.ts takes it; nor has [dyn]/ a feed: [org]/feed.ts does.
    expectFound(await router.resolve("/a/y"), "[dyn]/y.ts", { dyn: "a" });
    expectFound(await router.resolve("/a/feed"), "[org]/feed.ts", { org: "a" });
    // chat/ has a match of its own, [room].ts, so nothing backtracks there.
    expectFound(await router.resolve("/chat/feed"), "chat/[room].ts", { room: "feed" });
    expectNotFound(await router.resolve("/a/zzz/zzz"));
  });

  it("tries dynamic names of one level in code-unit order", async () => {
    expectFound(await new ServiceRouter(dynamic).resolve("/pick/q"), "pick/[a].ts", { a: "q" });
  });

  it("never binds one parameter name twice", async () => {
    const router = new ServiceRouter(dynamic);
    expectNotFound(await router.resolve("/dup/1/2"));
    expectFound(await router.resolve("/dup2/1/2"), "dup2/[id]/[other].js", { id: "1", other: "2" });
  });

  it("ignores files with invalid parameter names and declaration files", async () => {
    const router = new ServiceRouter(dynamic);
    // Everything in bad/ is either an invalid name or a declaration file.
    expectNotFound(await router.resolve("/bad/foo"));
    expectNotFound(await router.resolve("/bad/1x"));
    expectNotFound(await router.resolve("/bad/ok"));
    // A path that bad/ cannot serve still backtracks to [org]/ at the level above.
    expectFound(await router.resolve("/bad/feed"), "[org]/feed.ts", { org: "bad" });
  });

  it("keeps a parameter named __proto__ an own property", async () => {
    const root = path.join(base, "proto");
    await writeTree(root, ["[__proto__].ts"]);
    const result = await new ServiceRouter(root).resolve("/x");
    const match = expectFound(result, "[__proto__].ts", "unchecked");
    expect(Object.getPrototypeOf(match.params)).toBe(Object.prototype);
    expect(Object.hasOwn(match.params, "__proto__")).toBe(true);
    expect(Object.getOwnPropertyDescriptor(match.params, "__proto__")?.value).toBe("x");
  });
});

describe("ServiceRouter: traversal", () => {
  it("finds the files the attacks aim at through their plain paths", async () => {
    // The controls: each attack below would reach one of these if it worked.
    const router = new ServiceRouter(linked);
    expectFound(await router.resolve("/real/lobby"), "real/lobby.ts");
    expectFound(await router.resolve("/alias"), "real/lobby.ts");
  });

  const attacks: Array<[string, RegExp]> = [
    ["/../outside/evil", /starts with '\.'/],
    ["/real/../alias", /starts with '\.'/],
    ["/./alias", /starts with '\.'/],
    ["/real/./lobby", /starts with '\.'/],
    ["/%2e%2e/outside/evil", /starts with '\.'/],
    ["/%2E%2E/outside/evil", /starts with '\.'/],
    ["/.%2e/outside/evil", /starts with '\.'/],
    ["/%2E%2E%2Foutside%2Fevil", /outside \[A-Za-z0-9._-\]/],
    ["/real%2flobby", /outside/],
    ["/real%2Flobby", /outside/],
    ["/real%5clobby", /outside/],
    ["/real\\lobby", /outside/],
    ["/..\\outside\\evil", /outside/],
    ["/real/lobby%00", /outside/],
    ["/real/lobby\u0000", /outside/],
    ["/real/lobby%00.ts", /outside/],
    // Decoded once, "%252e%252e" is "%2e%2e": '%' is outside the set, so it never becomes "..".
    ["/%252e%252e/outside/evil", /outside \[A-Za-z0-9._-\]/],
    ["/real%252flobby", /outside/],
    ["/real//lobby", /empty/],
    ["//real/lobby", /empty/],
    ["/real/lobby//", /empty/],
    ["/real/lob by", /outside/],
    ["/%C0%AE%C0%AE/outside/evil", /malformed/],
  ];

  it.each(attacks)("refuses %j", async (attack, reason) => {
    expectNotFound(await new ServiceRouter(linked).resolve(attack), reason);
  });

  it("refuses paths longer than 1024 characters", async () => {
    const root = path.join(base, "long");
    const dirs = ["a", "b", "c", "d"].map((c) => c.repeat(200));
    // "/" + 4 * 200 + "/" + 219 = 1024 characters; one more is too long.
    await writeTree(root, [
      `${dirs.join("/")}/${"e".repeat(219)}.ts`,
      `${dirs.join("/")}/${"f".repeat(220)}.ts`,
    ]);
    const router = new ServiceRouter(root);
    const fits = `/${dirs.join("/")}/${"e".repeat(219)}`;
    expect(fits.length).toBe(1024);
    expectFound(await router.resolve(fits), `${dirs.join("/")}/${"e".repeat(219)}.ts`);
    const tooLong = `/${dirs.join("/")}/${"f".repeat(220)}`;
    expect(tooLong.length).toBe(1025);
    expectNotFound(await router.resolve(tooLong), /longer than 1024/);
    expectNotFound(await router.resolve(`/${"a".repeat(100_000)}`), /longer than 1024/);
  });

  it("refuses paths with more than 32 segments", async () => {
    const d31 = Array(31).fill("d").join("/");
    const router = new ServiceRouter(many);
    expectFound(await router.resolve(`/${d31}/leaf`), `${d31}/leaf.ts`);
    expectNotFound(await router.resolve(`/${d31}/d/leaf`), /more than 32 segments/);
    expectNotFound(await router.resolve("/x".repeat(33)), /more than 32 segments/);
  });
  it("bounds the search when symlinked dynamic directories form cycles", async () => {
    const root = path.join(base, "cycles");
    await writeTree(root, ["ok.ts"]);
    // Twelve dynamic directories that are all the root itself: an unbounded backtracking
    // search for a path that matches nothing would try 12! orders.
    for (let i = 0; i < 12; i++) await fs.symlink(".", path.join(root, `[p${i}]`));
    const router = new ServiceRouter(root);
    expectFound(await router.resolve("/x/ok"), "ok.ts", { p0: "x" });
    const deep = `/${"abcdefghijkl".split("").join("/")}/nothing`;
    expectNotFound(await router.resolve(deep), /gave up after 256 directory reads/);
    expect((await router.list()).map((entry) => entry.name)).toEqual(["ok.ts"]);
  });
});

describe("ServiceRouter: private names", () => {
  it("refuses dotfiles and dot directories", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("/.hidden"), /starts with '\.'/);
    expectNotFound(await router.resolve("/%2ehidden"), /starts with '\.'/);
    expectNotFound(await router.resolve("/.git/hooks"), /starts with '\.'/);
  });

  it("refuses _private modules and _directories", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("/_private"), /starts with '_'/);
    expectNotFound(await router.resolve("/%5Fprivate"), /starts with '_'/);
    expectNotFound(await router.resolve("/_lib/util"), /starts with '_'/);
    expectNotFound(await router.resolve("/sub/_helper"), /starts with '_'/);
    expectFound(await router.resolve("/sub/page"), "sub/page.ts");
  });

  it("refuses node_modules", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("/node_modules/pkg"), /node_modules/);
    expectNotFound(await router.resolve("/node_modules/pkg/"), /node_modules/);
    expectNotFound(await router.resolve("/node%5Fmodules/pkg"), /node_modules/);
  });

  it("never serves declaration files", async () => {
    const router = new ServiceRouter(basic);
    expectNotFound(await router.resolve("/types.d"), /no service module/);
    expectNotFound(await router.resolve("/types"));
    expectNotFound(await router.resolve("/mod.d"), /no service module/);
  });
});

describe("ServiceRouter: symlinks", () => {
  it("refuses a symlinked file that escapes the root", async () => {
    const router = new ServiceRouter(linked);
    expectNotFound(await router.resolve("/escape"), /outside the service root/);
    expectNotFound(await router.resolve("/relescape"), /outside the service root/);
  });

  it("refuses a symlinked directory that escapes the root", async () => {
    const router = new ServiceRouter(linked);
    expectNotFound(await router.resolve("/outlink/evil"), /outside the service root/);
    expectNotFound(await router.resolve("/outlink/"), /outside the service root/);
    expectNotFound(await router.resolve("/reloutlink/evil"), /outside the service root/);
    // The search stops at the link: it never lists the outside directory, even for a file
    // there whose real path is back inside the root.
    expectNotFound(await router.resolve("/outlink/back"), /directory on the path/);
  });

  it("serves symlinks that stay inside the root, named by their real path", async () => {
    const router = new ServiceRouter(linked);
    const viaFile = expectFound(await router.resolve("/alias"), "real/lobby.ts");
    expect(viaFile.file).toBe(path.join(linked, "real", "lobby.ts"));
    const viaDirectory = expectFound(await router.resolve("/v/feed"), "v2/feed.ts");
    expect(viaDirectory.file).toBe(path.join(linked, "v2", "feed.ts"));
    expectFound(await router.resolve("/loop/loop/real/lobby"), "real/lobby.ts");
  });

  it("holds a symlink's target to the same rules as its name", async () => {
    const router = new ServiceRouter(linked);
    expectNotFound(await router.resolve("/exposed"), /not a servable module/); // -> _private.ts
    expectNotFound(await router.resolve("/jsonlink"), /not a servable module/); // -> data.json
    expectNotFound(await router.resolve("/typeslink"), /not a servable module/); // -> types.d.ts
    expectNotFound(await router.resolve("/dangling"));
  });

  it("resolves the root through a symlink to its real path", async () => {
    const rootLink = path.join(base, "root-link");
    await fs.symlink(basic, rootLink);
    const router = new ServiceRouter(rootLink);
    expect(router.root).toBe(rootLink);
    const match = expectFound(await router.resolve("/echo"), "echo.ts");
    expect(router.root).toBe(basic);
    expect(match.file).toBe(path.join(basic, "echo.ts"));
  });
});

describe("ServiceRouter: the root", () => {
  it("rejects with SB_ERR_ROOT_MISSING while the root is missing, and finds it once it exists", async () => {
    const root = path.join(base, "not-yet");
    const router = new ServiceRouter(root);
    await expect(router.resolve("/")).rejects.toMatchObject({ code: "SB_ERR_ROOT_MISSING" });
    await expect(router.list()).rejects.toMatchObject({ code: "SB_ERR_ROOT_MISSING" });
    await writeTree(root, ["index.ts"]);
    expectFound(await router.resolve("/"), "index.ts");
  });

  it("rejects with SB_ERR_ROOT_MISSING when the root is a file", async () => {
    const router = new ServiceRouter(path.join(basic, "echo.ts"));
    await expect(router.resolve("/echo")).rejects.toMatchObject({ code: "SB_ERR_ROOT_MISSING" });
  });
});

describe("ServiceRouter.list", () => {
  it("lists every routable file of a static root, preferred extensions only, sorted", async () => {
    const listed = await new ServiceRouter(basic).list();
    expect(listed.map((entry) => entry.name)).toEqual([
      "both.ts",
      "both/index.ts",
      "deep/a/b/c.ts",
      "echo.ts",
      "index.ts",
      "jsmjs.js",
      "mtsjs.mts",
      "onlydir/index.js",
      "onlyfile.ts",
      "pref.ts",
      "sub/page.ts",
    ]);
    for (const entry of listed) expect(entry.file).toBe(path.join(basic, ...entry.name.split("/")));
  });

  it("lists dynamic routes as resolve picks them", async () => {
    const names = (await new ServiceRouter(dynamic).list()).map((entry) => entry.name);
    expect(names).toEqual([
      "[dyn]/y.ts",
      "[org]/[repo]/issues.ts",
      "[org]/feed.ts",
      "[org]/index.ts",
      "a/x.ts",
      "chat/[room].ts",
      "chat/lobby.ts",
      "dup2/[id]/[other].js",
      "pick/[a].ts",
    ]);
  });

  it("lists symlinked modules once, by real name, and nothing outside or private", async () => {
    const names = (await new ServiceRouter(linked).list()).map((entry) => entry.name);
    expect(names).toEqual(["real/lobby.ts", "v2/feed.ts"]);
  });

  it("lists nothing deeper than a 32-segment path can reach", async () => {
    const d31 = Array(31).fill("d").join("/");
    const names = (await new ServiceRouter(many).list()).map((e) => e.name);
    expect(names).toEqual([`${d31}/leaf.ts`]);
  });

  it("sees files added since the last call", async () => {
    const root = path.join(base, "list-live");
    await writeTree(root, ["one.ts"]);
    const router = new ServiceRouter(root);
    expect((await router.list()).map((entry) => entry.name)).toEqual(["one.ts"]);
    await writeTree(root, ["two/index.mjs"]);
    expect((await router.list()).map((entry) => entry.name)).toEqual(["one.ts", "two/index.mjs"]);
  });
});

describe("ServiceRouter: any input", () => {
  const tokens = [
    "/",
    "/",
    "/",
    "..",
    ".",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%00",
    "%",
    "%25",
    "\\",
    "?",
    "#",
    "a",
    "x",
    "y",
    "feed",
    "chat",
    "lobby",
    "real",
    "alias",
    "loop",
    "outlink",
    "escape",
    "evil",
    "v",
    "_private",
    ".hidden",
    "node_modules",
    "[org]",
    "index",
    "%C3%A9",
    "\u0000",
    "\uD800",
  ];
  /** Inputs for a root: its real routes with suffixes, random strings and URL-ish token soup. */
  const pathsOver = (routes: readonly string[]) =>
    fc.oneof(
      {
        // Enough inputs that do find a module, so the property checks found files too.
        weight: 4,
        arbitrary: fc
          .tuple(
            fc.constantFrom(...routes),
            fc.constantFrom("", "/", "?q=1", "#f", "/x", "%2f", "/..", "/%2e%2e", "%00"),
          )
          .map(([route, suffix]) => route + suffix),
      },
      fc.string({ unit: "binary", maxLength: 80 }),
      fc.webPath(),
      fc.array(fc.constantFrom(...tokens), { maxLength: 24 }).map((parts) => parts.join("")),
      fc.array(fc.constantFrom(...tokens), { maxLength: 12 }).map((parts) => `/${parts.join("/")}`),
    );

  const cases = [
    [
      "dynamic",
      () => dynamic,
      [
        "/acme/feed",
        "/acme",
        "/chat/x",
        "/a/y",
        "/dup2/1/2",
        "/pick/q",
        "/acme/r/issues",
        "/dup/1/2",
      ],
    ],
    [
      "linked",
      () => linked,
      ["/alias", "/real/lobby", "/v/feed", "/loop/loop/alias", "/escape", "/outlink/back"],
    ],
  ] as const;
  for (const [label, getRoot, routes] of cases) {
    it(`never throws, and finds only service modules inside the root (${label})`, async () => {
      const root = getRoot();
      const router = new ServiceRouter(root);
      let found = 0;
      await fc.assert(
        fc.asyncProperty(pathsOver(routes), async (input) => {
          const result = await router.resolve(input);
          if (!result.found) {
            expect(typeof result.reason).toBe("string");
            expect(result.reason.length).toBeGreaterThan(0);
            return;
          }
          found++;
          const { file, name } = result.match;
          expect(file.startsWith(root + path.sep)).toBe(true);
          expect(SERVICE_EXTENSIONS).toContain(path.extname(file));
          expect(file).toBe(path.join(root, ...name.split("/")));
          expect((await fs.lstat(file)).isFile()).toBe(true);
          for (const part of name.split("/")) expect(part).not.toMatch(/^[._]|^node_modules$/);
        }),
        { numRuns: 400 },
      );
      // The property saw both outcomes, so it did check found files.
      expect(found).toBeGreaterThan(20);
    });
  }

  it("returns not-found for non-string input", async () => {
    const router = new ServiceRouter(basic);
    for (const input of [undefined, null, 42, {}, ["/echo"]]) {
      expectNotFound(await router.resolve(input as unknown as string), /not a string/);
    }
  });
});
