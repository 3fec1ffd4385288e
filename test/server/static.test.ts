import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createStaticHandler } from "../../src/server/static.js";

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** Sends the request target byte for byte: node:http does not normalize `path`. */
function fetchRaw(port: number, path: string, method = "GET"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error(`no answer for ${method} ${path}`)));
    req.end();
  });
}

// The directory layout every case below reads from. `outside.txt` sits next to the served
// directory: reading it through any path is the traversal these tests must never allow.
const parent = mkdtempSync(join(tmpdir(), "switchboard-static-"));
const dir = join(parent, "public");
mkdirSync(join(dir, "sub"), { recursive: true });
mkdirSync(join(dir, "empty"));
mkdirSync(join(dir, ".hidden"));
writeFileSync(join(dir, "index.html"), "<h1>home</h1>");
writeFileSync(join(dir, "hello.txt"), "hello, static");
writeFileSync(join(dir, "sub", "index.html"), "<h1>sub</h1>");
writeFileSync(join(dir, "empty", "note.txt"), "not an index");
writeFileSync(join(dir, ".env"), "SECRET=1");
writeFileSync(join(dir, ".hidden", "file.txt"), "hidden");
writeFileSync(join(parent, "outside.txt"), "outside the root");

afterAll(() => rmSync(parent, { recursive: true, force: true }));

for (const reload of [false, true]) {
  describe(`createStaticHandler (${reload ? "per-request lookup" : "indexed"})`, () => {
    let server: Server;
    let port: number;

    beforeAll(async () => {
      server = createServer(createStaticHandler(dir, { reload }));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      port = (server.address() as AddressInfo).port;
    });

    afterAll(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it("serves a file with its content type and length", async () => {
      const reply = await fetchRaw(port, "/hello.txt?cache=bust");
      expect(reply.status).toBe(200);
      expect(reply.body).toBe("hello, static");
      expect(reply.headers["content-type"]).toMatch(/^text\/plain/);
      expect(reply.headers["content-length"]).toBe(String("hello, static".length));
    });

    it("serves index.html for the root and for a directory", async () => {
      const root = await fetchRaw(port, "/");
      expect(root.status).toBe(200);
      expect(root.body).toBe("<h1>home</h1>");
      expect(root.headers["content-type"]).toMatch(/^text\/html/);
      for (const path of ["/sub/", "/sub"]) {
        const sub = await fetchRaw(port, path);
        expect(sub.status, path).toBe(200);
        expect(sub.body, path).toBe("<h1>sub</h1>");
      }
    });

    it("answers 404 with a short plain-text body for a missing file", async () => {
      const reply = await fetchRaw(port, "/nope.txt");
      expect(reply.status).toBe(404);
      expect(reply.headers["content-type"]).toMatch(/^text\/plain/);
      expect(reply.body).toBe("Not Found\n");
    });

    it("does not list a directory that has no index.html", async () => {
      const reply = await fetchRaw(port, "/empty/");
      expect(reply.status).toBe(404);
      expect(reply.body).not.toContain("note.txt");
    });

    it("refuses dotfiles and files in dot-directories, however encoded", async () => {
      for (const path of ["/.env", "/%2eenv", "/.hidden/file.txt", "/%2Ehidden/file.txt"]) {
        const reply = await fetchRaw(port, path);
        expect(reply.status, path).toBe(404);
        expect(reply.body, path).toBe("Not Found\n");
      }
    });

    it("never serves a file outside the directory", async () => {
      const paths = [
        "/../outside.txt",
        "/../package.json",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/%2e%2e%2foutside.txt",
        "/sub/../../outside.txt",
        "/sub/..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "//../outside.txt",
      ];
      for (const path of paths) {
        const reply = await fetchRaw(port, path);
        expect(reply.status, path).toBe(404);
        expect(reply.body, path).not.toContain("outside the root");
      }
    });

    it("answers 400 for a malformed percent-encoding", async () => {
      const reply = await fetchRaw(port, "/hello%zz.txt");
      expect(reply.status).toBe(400);
    });

    it("answers HEAD with the headers of GET and no body", async () => {
      const reply = await fetchRaw(port, "/hello.txt", "HEAD");
      expect(reply.status).toBe(200);
      expect(reply.headers["content-length"]).toBe(String("hello, static".length));
      expect(reply.body).toBe("");
      const missing = await fetchRaw(port, "/nope.txt", "HEAD");
      expect(missing.status).toBe(404);
      expect(missing.body).toBe("");
    });

    it("answers other methods with 405 and Allow: GET, HEAD", async () => {
      for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
        const reply = await fetchRaw(port, "/hello.txt", method);
        expect(reply.status, method).toBe(405);
        expect(reply.headers.allow, method).toBe("GET, HEAD");
      }
    });
  });
}

describe("createStaticHandler with reload", () => {
  it("serves a file created after the handler", async () => {
    const handler = createStaticHandler(dir, { reload: true });
    const server = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      expect((await fetchRaw(port, "/late.txt")).status).toBe(404);
      writeFileSync(join(dir, "late.txt"), "added later");
      const reply = await fetchRaw(port, "/late.txt");
      expect(reply.status).toBe(200);
      expect(reply.body).toBe("added later");
    } finally {
      rmSync(join(dir, "late.txt"), { force: true });
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
