import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createRouter, RouterError } from "../../src/adapters/router.js";
import { defineService } from "../../src/index.js";
import { serviceOrigin } from "../../src/services/define.js";
import * as fixtures from "./fixtures/services.js";

const a = defineService({});
const b = defineService({});
const c = defineService({});
const fixtureFile = fileURLToPath(new URL("./fixtures/services.ts", import.meta.url));

function found(result: ReturnType<ReturnType<typeof createRouter>["match"]>) {
  if (!result.found) throw new Error(`not found: ${result.reason}`);
  return result.match;
}

function errorOf(make: () => unknown): RouterError {
  try {
    make();
  } catch (error) {
    if (error instanceof RouterError) return error;
    throw error;
  }
  throw new Error("did not throw");
}

describe("createRouter: patterns", () => {
  it("matches static paths and binds :params, decoded once", () => {
    const router = createRouter().service("/chat/:room", a).service("/users/:id/inbox", b);
    const chat = found(router.match("/chat/lobby"));
    expect(chat.name).toBe("/chat/:room");
    expect(chat.params).toEqual({ room: "lobby" });
    expect(chat.definition).toBe(a);
    expect(found(router.match("/chat/caf%C3%A9%252F?x=1")).params).toEqual({ room: "café%2F" });
    expect(found(router.match("/users/42/inbox")).params).toEqual({ id: "42" });
    expect(found(router.match("/users/42/inbox")).definition).toBe(b);
  });

  it("prefers a static segment over a parameter, and backtracks when the static branch fails", () => {
    const router = createRouter()
      .service("/chat/admin", a)
      .service("/chat/:room", b)
      .service("/chat/:room/log", c);
    expect(found(router.match("/chat/admin")).definition).toBe(a);
    expect(found(router.match("/chat/other")).definition).toBe(b);
    // "admin" is static at that level, but nothing static continues with /log.
    const log = found(router.match("/chat/admin/log"));
    expect(log.definition).toBe(c);
    expect(log.params).toEqual({ room: "admin" });
  });

  it("keeps /x and /x/ apart where both are served, and finds the one that is otherwise", () => {
    const both = createRouter().service("/chat", a).service("/chat/", b);
    expect(found(both.match("/chat")).definition).toBe(a);
    expect(found(both.match("/chat/")).definition).toBe(b);
    const one = createRouter().service("/chat/", b);
    expect(found(one.match("/chat")).definition).toBe(b);
    const root = createRouter().service("/", a);
    expect(found(root.match("/")).definition).toBe(a);
    expect(root.match("/x").found).toBe(false);
  });

  it("answers not-found with a reason for paths it cannot route", () => {
    const router = createRouter().service("/chat/:room", a);
    for (const path of ["/chat", "/chat/a/b", "/chat//", "/chat/%E0%A4%A", "chat/a", "/other"]) {
      const result = router.match(path);
      expect(result.found, path).toBe(false);
      if (!result.found) expect(result.reason.length).toBeGreaterThan(0);
    }
    expect(router.match(`/chat/${"x".repeat(2000)}`).found).toBe(false);
  });

  it("never throws, whatever the path", () => {
    const router = createRouter().service("/a/:b/c", a).service("/:x", b);
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (path) => {
        const result = router.match(path);
        expect(typeof result.found).toBe("boolean");
      }),
      { numRuns: 500 },
    );
  });

  it("refuses bad patterns and conflicting routes with stable codes", () => {
    expect(errorOf(() => createRouter().service("chat", a)).code).toBe("SB_ERR_ROUTE_PATTERN");
    expect(errorOf(() => createRouter().service("/a//b", a)).code).toBe("SB_ERR_ROUTE_PATTERN");
    expect(errorOf(() => createRouter().service("/a/../b", a)).code).toBe("SB_ERR_ROUTE_PATTERN");
    expect(errorOf(() => createRouter().service("/a?b", a)).code).toBe("SB_ERR_ROUTE_PATTERN");
    expect(errorOf(() => createRouter().service("/:id/:id", a)).code).toBe("SB_ERR_ROUTE_PATTERN");
    expect(errorOf(() => createRouter().service("/:1x", a)).code).toBe("SB_ERR_ROUTE_PATTERN");
    const router = createRouter().service("/chat/:room", a);
    const same = errorOf(() => router.service("/chat/:room", b));
    expect(same.code).toBe("SB_ERR_ROUTE_CONFLICT");
    expect(same.message).toContain("/chat/:room");
    expect(errorOf(() => router.service("/chat/:name", b)).code).toBe("SB_ERR_ROUTE_CONFLICT");
    // A failed registration leaves the router as it was.
    expect(router.routes.map((route) => route.pattern)).toEqual(["/chat/:room"]);
  });

  it("takes a module by absolute path or file URL, and refuses anything else", () => {
    const byUrl = createRouter().service(
      "/m",
      new URL("./fixtures/module-service.ts", import.meta.url),
    );
    const match = found(byUrl.match("/m"));
    expect(match.file).toBe(
      fileURLToPath(new URL("./fixtures/module-service.ts", import.meta.url)),
    );
    expect(match.definition).toBeUndefined();
    expect(match.exportOrdinal).toBeUndefined();
    const byPath = createRouter().service("/m", fixtureFile);
    expect(found(byPath.match("/m")).file).toBe(fixtureFile);
    const byHref = createRouter().service("/m", pathToFileURL(fixtureFile).href);
    expect(found(byHref.match("/m")).file).toBe(fixtureFile);
    for (const bad of ["./relative.ts", new URL("https://example.com/x.ts"), 42, {}]) {
      const error = errorOf(() => createRouter().service("/m", bad as never));
      expect(error.code).toBe("SB_ERR_ROUTE_SERVICE");
    }
  });

  it("checks the settings given with a route as a module's config export is checked", () => {
    const error = errorOf(() => createRouter().service("/m", a, { isolation: "thread" as never }));
    expect(error.code).toBe("SB_ERR_ROUTE_SERVICE");
    expect(error.message).toContain("config.isolation");
    expect(errorOf(() => createRouter().service("/m", a, { maxHeapMb: 1 })).message).toContain(
      "config.maxHeapMb",
    );
    const ok = createRouter().service("/m", a, { isolation: "main", headers: ["cookie"] });
    expect(found(ok.match("/m")).config).toEqual({ isolation: "main", headers: ["cookie"] });
  });
});

describe("defineService origins", () => {
  it("records the defining module and the order of its services", () => {
    const here = fileURLToPath(import.meta.url);
    expect(serviceOrigin(a)).toEqual({ file: here, ordinal: 0 });
    expect(serviceOrigin(b)).toEqual({ file: here, ordinal: 1 });
    expect(serviceOrigin(c)).toEqual({ file: here, ordinal: 2 });
    expect(serviceOrigin(fixtures.echo)).toEqual({ file: fixtureFile, ordinal: 0 });
    expect(serviceOrigin(fixtures.describe)).toEqual({ file: fixtureFile, ordinal: 1 });
    expect(serviceOrigin(fixtures.holder.unexported)).toEqual({ file: fixtureFile, ordinal: 2 });
    expect(serviceOrigin(fixtures.default)).toEqual({ file: fixtureFile, ordinal: 3 });
  });

  it("a route to an object service names its module and ordinal", () => {
    const match = found(createRouter().service("/e", fixtures.echo).match("/e"));
    expect(match.file).toBe(fixtureFile);
    expect(match.exportOrdinal).toBe(0);
  });
});

describe("Router#problems", () => {
  it("names object services a worker or process could not import", () => {
    const router = createRouter()
      .service("/a", fixtures.echo)
      .service("/b", fixtures.echo, { isolation: "main" });
    expect(router.problems("worker")).toEqual([]);
    expect(router.problems("main")).toEqual([]);
  });

  it("refuses, at mount time, a service defined in the program's entry module", () => {
    const dir = mkdtempSync(join(tmpdir(), "switchboard-entry-"));
    try {
      const index = pathToFileURL(join(process.cwd(), "src/index.ts")).href;
      const entry = join(dir, "app.mts");
      writeFileSync(
        entry,
        `import { createRouter, defineService, startServiceServer } from ${JSON.stringify(index)};
const chat = defineService({});
const router = createRouter().service("/chat", chat);
try {
  await startServiceServer({ router, port: 0 });
  console.log("started");
  process.exit(1);
} catch (error) {
  console.log(error.code);
  console.log(error.message);
}
`,
      );
      const out = execFileSync(process.execPath, ["--import", "tsx", entry], {
        encoding: "utf8",
        timeout: 30_000,
      });
      const [code, message] = out.trim().split("\n");
      expect(code).toBe("SB_ERR_SERVICE_NOT_IMPORTABLE");
      expect(message).toContain("/chat: the service is defined in the program's entry module");
      expect(message).toContain('isolation: "main"');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
