import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

/**
 * Serves the browser build of the `switchboard/client` session at CLIENT_BUNDLE_PATH, so a page
 * can `import { createSession } from "/switchboard/client.js"` with no build step of its own.
 * The bundle is made once, on first request, from the library's browser entry (TypeScript when
 * running from source, JavaScript from the built package), and cached with its ETag.
 */

export const CLIENT_BUNDLE_PATH = "/switchboard/client.js";

interface Bundle {
  code: Buffer;
  etag: string;
}

/** The browser entry beside this module: src/client/browser.ts, or dist/client/browser.js. */
function entryPoint(): string {
  for (const name of ["../client/browser.js", "../client/browser.ts"]) {
    const path = fileURLToPath(new URL(name, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw Object.assign(new Error("the browser client's entry (client/browser) is missing"), {
    code: "SB_ERR_CLIENT_BUNDLE",
  });
}

let bundle: Promise<Bundle> | null = null;

/** Builds (once) the single-file ES module the page imports. */
export function clientBundle(): Promise<Bundle> {
  // Any failure, a missing entry included, rejects (and is not cached) rather than throwing.
  bundle ??= Promise.resolve()
    .then(() =>
      build({
        entryPoints: [entryPoint()],
        bundle: true,
        format: "esm",
        platform: "browser",
        target: "es2020",
        write: false,
        legalComments: "none",
      }),
    )
    .then(
      (result) => {
        const code = Buffer.from(result.outputFiles[0].contents);
        const etag = `"${createHash("sha1").update(code).digest("base64url")}"`;
        return { code, etag };
      },
      (error: unknown) => {
        // Not cached: the next request tries again (the failure is answered and logged).
        bundle = null;
        throw error;
      },
    );
  return bundle;
}

/**
 * Answers requests for the bundle; returns false for any other path so the caller can go on
 * (to the static files, or a 404).
 */
export function serveClientBundle(
  req: IncomingMessage,
  res: ServerResponse,
  onError: (error: unknown) => void,
): boolean {
  const path = (req.url ?? "/").split("?", 1)[0];
  if (path !== CLIENT_BUNDLE_PATH) return false;
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8" });
    res.end("Method Not Allowed\n");
    return true;
  }
  clientBundle().then(
    ({ code, etag }) => {
      const headers = {
        "Content-Type": "text/javascript; charset=utf-8",
        ETag: etag,
        // Revalidated each time: the library changes with the server that serves it.
        "Cache-Control": "no-cache",
        // Library code with no credentials: pages served from elsewhere may import it too.
        "Access-Control-Allow-Origin": "*",
      };
      if (req.headers["if-none-match"] === etag) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      res.writeHead(200, { ...headers, "Content-Length": code.length });
      res.end(req.method === "HEAD" ? undefined : code);
    },
    (error: unknown) => {
      onError(error);
      res.writeHead(500, { "Content-Type": "text/plain; charset=utf-8" });
      res.end("Internal Server Error\n");
    },
  );
  return true;
}
