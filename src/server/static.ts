import type { IncomingMessage, ServerResponse } from "node:http";
import sirv from "sirv";

export interface StaticOptions {
  /**
   * Look files up on disk at every request instead of indexing the directory once at start.
   * Files added or changed later are then served as they are now (for development with
   * --watch); the index is faster and never touches the disk for a miss.
   */
  reload?: boolean;
}

/**
 * Serves the plain files of `dir` over HTTP: GET and HEAD only, `index.html` for a directory,
 * never a dotfile, never a directory listing, and nothing outside `dir`.
 */
export function createStaticHandler(
  dir: string,
  options: StaticOptions = {},
): (req: IncomingMessage, res: ServerResponse) => void {
  const serve = sirv(dir, {
    dev: options.reload === true,
    dotfiles: false,
    etag: true,
    // sirv's own miss answers 404 with no body; say what happened.
    onNoMatch: (_req, res) => sendText(res, 404, "Not Found"),
  });

  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      // RFC 9110 section 15.5.6: a 405 lists the methods the resource does support.
      res.setHeader("Allow", "GET, HEAD");
      sendText(res, 405, "Method Not Allowed");
      return;
    }
    const path = decodedPath(req.url ?? "/");
    if (path === undefined) {
      sendText(res, 400, "Bad Request");
      return;
    }
    // sirv's per-request mode (reload) does not apply its dotfile rule, and its indexed mode
    // keeps .well-known; refuse every dotted segment here, which also refuses "." and ".."
    // however they were encoded, before any path reaches the file system.
    if (path.split("/").some((segment) => segment.startsWith(".") || segment.includes("\\"))) {
      sendText(res, 404, "Not Found");
      return;
    }
    serve(req, res);
  };
}

/** The path of a request target, percent-decoded; undefined when the encoding is malformed. */
function decodedPath(target: string): string | undefined {
  const end = target.search(/[?#]/);
  const raw = end === -1 ? target : target.slice(0, end);
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

function sendText(res: ServerResponse, status: number, text: string): void {
  const body = `${text}\n`;
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
  });
  // A HEAD answer carries the headers of the GET answer but no body (RFC 9110 section 9.3.2).
  res.end(res.req?.method === "HEAD" ? undefined : body);
}
