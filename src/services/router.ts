import type { Dirent } from "node:fs";
import { statSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as path from "node:path";
import type { ServiceConfig, ServiceDefinition } from "./define.js";

/**
 * The service-root router: maps a request path to the module file in the service root that
 * serves it. The request path comes straight from the network, so this is the place where a
 * hostile path must not reach a file outside the root or a file that was never meant to be a
 * service (a helper, a dotfile, a dependency, a declaration file).
 *
 * Routing:
 * - `/a/b` is served by `<root>/a/b.ts`, `/a/b/` by `<root>/a/b/index.ts`, `/` by
 *   `<root>/index.ts`; extensions are tried as `.ts`, `.mts`, `.js`, `.mjs`. Where only one of
 *   the two files exists, either spelling of the path finds it; where both exist, the spelling
 *   (trailing slash or not) decides.
 * - `[name]` in a file or directory name is a dynamic segment that matches any one request
 *   segment and exposes it as `params.name`. Static names win over dynamic ones at every level,
 *   with backtracking: when the static directory has no match for the rest of the path, the
 *   dynamic directories of that level are tried, in code-unit order of their names. A
 *   parameter name already bound further up the path is not bound again (`[id]/[id].ts` is
 *   never routed).
 *
 * Safety, because the path is attacker-controlled:
 * - The path is split on "/" first and each segment is percent-decoded exactly once, so an
 *   encoded "/" or "\" can never become a separator and `%252e` stays `%2e`, which then fails
 *   the character set below. A malformed escape is not-found.
 * - A decoded segment must match `[A-Za-z0-9._-]+`, which rules out separators, NUL, spaces and
 *   non-ASCII; `.`/`..`, names starting with "." (dotfiles) or "_" (private helper modules),
 *   `node_modules` and empty segments are refused. Paths over 1024 characters or 32 segments
 *   are refused before any file system access.
 * - Directory entries are compared by exact name from a listing, never by asking the file
 *   system to open a name built from the request, so case-insensitive file systems cannot map
 *   `/Chat` onto `chat.ts`, and nothing the request says is ever interpreted by the OS.
 * - The file found must be a regular file whose real path (symlinks resolved) lies inside the
 *   real path of the root, with a service extension, not a declaration file (`*.d.ts`,
 *   `*.d.mts`) and with no private segment in its real path either: a symlink is held to the
 *   same rules as the file it points at, so it can neither escape the root nor expose a helper.
 * - A module dropped into the root is live on the next request, and a removed one is gone. Each
 *   directory's listing is kept, with the entry types `readdir` reported, only for as long as
 *   the directory's change time and modification time are what they were when it was read
 *   (checked with one `stat` per directory on the path), and never while that time is so recent
 *   that a change in the same clock tick would leave it equal (the "racy" window git knows from
 *   its index). Adding, removing, renaming or replacing an entry changes both times, so a kept
 *   listing is always the directory's current one. A plain file or directory needs no further
 *   call; a symlink is resolved on every lookup, because its target can change without its
 *   directory changing. Directory reads are bounded by a budget so that symlink cycles cannot
 *   make backtracking explode.
 * - Answers are kept per request path, with the kept listings they were found in: a repeated
 *   path costs one map lookup and the `stat` of each directory on its way, and is answered
 *   afresh as soon as one of those listings is not the kept one any more. An answer that
 *   followed a symlink is never kept.
 *
 * Every refusal is a plain not-found with a reason for the log; `resolve` never throws for any
 * input. A file is named by its real path relative to the root, so one file has one name and
 * the caller can run one worker per file.
 */

/** Module extensions a service may have, in order of preference. */
export const SERVICE_EXTENSIONS: readonly string[] = Object.freeze([".ts", ".mts", ".js", ".mjs"]);

export interface RouteMatch {
  /** Absolute real path of the module file. */
  file: string;
  /** The file's path relative to the root, posix separators, e.g. "chat/[room].ts" — the service's name. */
  name: string;
  params: Readonly<Record<string, string>>;
  /** A programmatic router's object service (src/adapters/router.ts): which one `file` defined. */
  exportOrdinal?: number;
  /** A programmatic router's object service, run as it is on the I/O thread. */
  definition?: ServiceDefinition;
  /** Settings given with a programmatic route, in place of the module's `config` export. */
  config?: ServiceConfig;
}

export type RouteResult = { found: true; match: RouteMatch } | { found: false; reason: string };

export type ServiceRootErrorCode = "SB_ERR_ROOT_MISSING" | "SB_ERR_ROOT_TOO_LARGE";

/** The service root cannot be used: missing, not a directory, or too large to list. */
export class ServiceRootError extends Error {
  override readonly name = "ServiceRootError";
  constructor(
    readonly code: ServiceRootErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const MAX_PATH_LENGTH = 1024;
const MAX_SEGMENTS = 32;
/** Directory reads one `resolve` may spend; a real route needs a handful. */
const RESOLVE_BUDGET = 256;
/** Directories `list` may read before it gives up on the root. */
const LIST_BUDGET = 10_000;

const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;
const DYNAMIC = /^\[([A-Za-z_][A-Za-z0-9_]*)\]$/;
const DECLARATION = /\.d\.m?ts$/;
const INDEX = "index";

/** Why a request segment (or a static name in the root) cannot be routed, if it cannot. */
function segmentProblem(segment: string): string | undefined {
  if (!SEGMENT_CHARS.test(segment)) return "has characters outside [A-Za-z0-9._-]";
  // Covers "." and "..": both start with a dot.
  if (segment.startsWith(".")) return "starts with '.' (dot segments and dotfiles are refused)";
  if (segment.startsWith("_")) return "starts with '_' (private modules are refused)";
  if (segment === "node_modules") return "is node_modules";
  return undefined;
}

export type ParsedPath =
  | { ok: true; segments: string[]; trailingSlash: boolean }
  | { ok: false; reason: string };

/**
 * Splits and decodes a request path; no file system access. `strictSegments: false` (a
 * programmatic router, which never touches the file system with a segment) accepts any
 * non-empty decoded segment instead of the service root's safe set.
 */
export function parseRequestPath(
  input: unknown,
  { strictSegments = true }: { strictSegments?: boolean } = {},
): ParsedPath {
  if (typeof input !== "string") return { ok: false, reason: "the path is not a string" };
  const pathname = routeKey(input);
  if (pathname.length > MAX_PATH_LENGTH) {
    return { ok: false, reason: `the path is longer than ${MAX_PATH_LENGTH} characters` };
  }
  if (!pathname.startsWith("/")) return { ok: false, reason: "the path does not start with '/'" };
  const raw = pathname.split("/");
  // raw[0] is the empty string before the leading "/"; a trailing "/" leaves one more.
  const trailingSlash = raw[raw.length - 1] === "";
  const parts = raw.slice(1, trailingSlash ? -1 : undefined);
  if (parts.length > MAX_SEGMENTS) {
    return { ok: false, reason: `the path has more than ${MAX_SEGMENTS} segments` };
  }
  const segments: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (part === "") return { ok: false, reason: `segment ${i + 1} is empty` };
    let segment: string;
    try {
      // Once only: decoding again would let "%252f" become "/".
      segment = decodeURIComponent(part);
    } catch {
      return { ok: false, reason: `segment ${i + 1} has a malformed percent-escape` };
    }
    const problem = strictSegments ? segmentProblem(segment) : undefined;
    if (problem !== undefined) return { ok: false, reason: `segment ${i + 1} ${problem}` };
    segments.push(segment);
  }
  return { ok: true, segments, trailingSlash };
}

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

interface Dynamic {
  param: string;
  /** The directory entry's name, e.g. "[room].ts" or "[org]". */
  entry: string;
}

/** The routable names of one directory, sorted the way resolution tries them. */
interface Listing {
  /** Static service files by stem, each stem's entries in extension preference order. */
  files: Map<string, string[]>;
  /** `[param].ext` entries, by parameter name, then extension preference. */
  dynamicFiles: Dynamic[];
  /** Entries that may be static directories (their type is checked when used). */
  directories: Set<string>;
  /** `[param]` entries, by parameter name. */
  dynamicDirectories: Dynamic[];
  /** What `readdir` reported each entry to be. */
  kinds: Map<string, EntryKind>;
}

/**
 * An entry's type as its directory lists it. A "file" or "directory" entry of a real directory
 * is its own real path; a "symlink" must be resolved.
 */
type EntryKind = "file" | "directory" | "symlink" | "other";

function kindOf(entry: Dirent): EntryKind {
  if (entry.isFile()) return "file";
  if (entry.isDirectory()) return "directory";
  if (entry.isSymbolicLink()) return "symlink";
  return "other";
}

function extensionRank(entry: string): number {
  return SERVICE_EXTENSIONS.indexOf(path.extname(entry));
}

function toListing(dirents: readonly Dirent[]): Listing {
  const files = new Map<string, string[]>();
  const dynamicFiles: Dynamic[] = [];
  const directories = new Set<string>();
  const dynamicDirectories: Dynamic[] = [];
  const kinds = new Map<string, EntryKind>();
  for (const dirent of dirents) {
    const entry = dirent.name;
    kinds.set(entry, kindOf(dirent));
    const dynamicDirectory = DYNAMIC.exec(entry);
    if (dynamicDirectory) dynamicDirectories.push({ param: dynamicDirectory[1], entry });
    else if (segmentProblem(entry) === undefined) directories.add(entry);

    const extension = path.extname(entry);
    if (!SERVICE_EXTENSIONS.includes(extension) || DECLARATION.test(entry)) continue;
    const stem = entry.slice(0, -extension.length);
    const dynamicFile = DYNAMIC.exec(stem);
    if (dynamicFile) {
      dynamicFiles.push({ param: dynamicFile[1], entry });
    } else if (segmentProblem(stem) === undefined) {
      const same = files.get(stem);
      if (same) same.push(entry);
      else files.set(stem, [entry]);
    }
    // Anything else, such as "[1x].ts" or "chat-[room].ts", is not routable and ignored.
  }
  for (const same of files.values()) same.sort((a, b) => extensionRank(a) - extensionRank(b));
  dynamicFiles.sort(
    (a, b) => compareCodeUnits(a.param, b.param) || extensionRank(a.entry) - extensionRank(b.entry),
  );
  dynamicDirectories.sort((a, b) => compareCodeUnits(a.param, b.param));
  return { files, dynamicFiles, directories, dynamicDirectories, kinds };
}

/**
 * A directory's modification time within this many milliseconds of now may still be shared by
 * a change that is about to happen: timestamps come from a coarse clock (a few milliseconds on
 * Linux, up to 2 s on some file systems), so a listing read then is not kept.
 */
const DEFAULT_RACY_MS = 2_000;
/** Directories whose listings are kept at most; past it the cache starts over. */
const MAX_CACHED_LISTINGS = 4_096;

/**
 * Times in milliseconds as doubles (sub-microsecond at today's dates): a change after a listing
 * was kept happens more than the racy window after the times it was kept with, so it always
 * shows.
 */
interface CachedListing {
  listing: Listing;
  ino: number;
  mtimeMs: number;
  ctimeMs: number;
}

/**
 * Listings of real directories, valid while each directory's identity and times are unchanged
 * (see the module comment). The check is a synchronous `stat` of a directory that routing just
 * used, so it is served from the kernel's inode cache in about a microsecond; asking the thread
 * pool instead would cost more than the read it saves.
 */
class ListingCache {
  readonly #entries = new Map<string, CachedListing>();
  /** Directory reads so far, kept or not. */
  reads = 0;

  constructor(private readonly racyMs: number) {}

  /** The kept listing of a directory while the directory is unchanged. */
  get(directory: string): CachedListing | undefined {
    const cached = this.#entries.get(directory);
    if (cached === undefined) return undefined;
    const stats = statSync(directory, { throwIfNoEntry: false });
    if (
      stats !== undefined &&
      stats.ino === cached.ino &&
      stats.mtimeMs === cached.mtimeMs &&
      stats.ctimeMs === cached.ctimeMs
    ) {
      return cached;
    }
    this.#entries.delete(directory);
    return undefined;
  }

  /**
   * Reads a listing, keeping it when the directory has been still for long enough. Returns the
   * kept entry, or a listing that was not kept.
   */
  async read(directory: string): Promise<CachedListing | Listing> {
    // The times are taken before the read: a change during the read leaves them stale, so the
    // next lookup reads again rather than trusting a listing that may predate the change.
    const before = await fs.stat(directory);
    const listing = toListing(await fs.readdir(directory, { withFileTypes: true }));
    this.reads++;
    const newest = before.mtimeMs > before.ctimeMs ? before.mtimeMs : before.ctimeMs;
    if (Date.now() - newest <= this.racyMs) return listing;
    if (this.#entries.size >= MAX_CACHED_LISTINGS) this.#entries.clear();
    const kept: CachedListing = {
      listing,
      ino: before.ino,
      mtimeMs: before.mtimeMs,
      ctimeMs: before.ctimeMs,
    };
    this.#entries.set(directory, kept);
    return kept;
  }

  clear(): void {
    this.#entries.clear();
  }
}

type Params = ReadonlyArray<readonly [string, string]>;

function isBound(params: Params, name: string): boolean {
  return params.some(([bound]) => bound === name);
}

interface Found {
  file: string;
  name: string;
}

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : "unknown error";
}

/**
 * File system checks shared by `resolve` and `list`, against one real root. Every candidate
 * goes through `file` or `directory`, which are the only places that decide what is inside.
 */
class RootAccess {
  /** Why the last candidate that existed was refused, for the not-found reason. */
  refusal: string | undefined;
  /** True once a directory read was skipped for lack of budget, so the answer is incomplete. */
  exhausted = false;
  /**
   * The kept listings this lookup used, by directory, while its answer depends on nothing else;
   * null once it does (a listing that was not kept, a symlink followed).
   */
  used: Array<[string, CachedListing]> | null = [];
  #budget: number;
  readonly #prefix: string;

  constructor(
    readonly root: string,
    budget: number,
    private readonly cache: ListingCache,
  ) {
    this.#budget = budget;
    this.#prefix = root.endsWith(path.sep) ? root : root + path.sep;
  }

  /** The routable entries of a real directory, or undefined when it cannot be read. */
  async listing(directory: string): Promise<Listing | undefined> {
    if (this.#budget <= 0) {
      this.exhausted = true;
      return undefined;
    }
    this.#budget--;
    try {
      const entry = this.cache.get(directory) ?? (await this.cache.read(directory));
      if ("listing" in entry) {
        this.used?.push([directory, entry]);
        return entry.listing;
      }
      this.used = null;
      return entry;
    } catch {
      this.used = null;
      return undefined;
    }
  }

  /** The real path of an entry of the real directory `parent` when it is a directory inside the root. */
  async directory(parent: string, listing: Listing, entry: string): Promise<string | undefined> {
    const kind = listing.kinds.get(entry);
    // An entry of a real directory that is not a symlink is its own real path, inside the root.
    if (kind === "directory") return path.join(parent, entry);
    if (kind !== "symlink") return undefined;
    this.used = null;
    let real: string;
    try {
      real = await fs.realpath(path.join(parent, entry));
      if (!(await fs.stat(real)).isDirectory()) return undefined;
    } catch {
      return undefined;
    }
    if (real !== this.root && !real.startsWith(this.#prefix)) {
      this.refusal = "a directory on the path resolves outside the service root";
      return undefined;
    }
    return real;
  }

  /** The file and name of an entry of the real directory `parent` when it is a servable module inside the root. */
  async file(parent: string, listing: Listing, entry: string): Promise<Found | undefined> {
    const kind = listing.kinds.get(entry);
    let real: string;
    let isFile: boolean;
    if (kind === "symlink") {
      this.used = null;
      try {
        real = await fs.realpath(path.join(parent, entry));
        isFile = (await fs.stat(real)).isFile();
      } catch {
        // Gone since the listing, a dangling symlink, or unreadable: as if it were not there.
        return undefined;
      }
    } else if (kind === undefined) {
      return undefined;
    } else {
      real = path.join(parent, entry);
      isFile = kind === "file";
    }
    if (!real.startsWith(this.#prefix)) {
      this.refusal = "the module resolves outside the service root";
      return undefined;
    }
    if (!isFile) {
      this.refusal = "the module is not a regular file";
      return undefined;
    }
    // The target of a symlink is held to the rules its link name passed.
    const parts = real.slice(this.#prefix.length).split(path.sep);
    const base = parts[parts.length - 1];
    const extension = path.extname(base);
    const privateDirectory = parts
      .slice(0, -1)
      .some((part) => part.startsWith(".") || part.startsWith("_") || part === "node_modules");
    if (
      privateDirectory ||
      base.startsWith(".") ||
      base.startsWith("_") ||
      !SERVICE_EXTENSIONS.includes(extension) ||
      DECLARATION.test(base)
    ) {
      this.refusal = "the module resolves to a file that is not a servable module";
      return undefined;
    }
    return { file: real, name: parts.join("/") };
  }

  /** The first servable entry of `entries` (already in preference order) in `parent`. */
  async firstFile(
    parent: string,
    listing: Listing,
    entries: readonly string[] | undefined,
  ): Promise<Found | undefined> {
    for (const entry of entries ?? []) {
      const found = await this.file(parent, listing, entry);
      if (found) return found;
    }
    return undefined;
  }
}

type Attempt = () => Promise<RouteMatch | undefined>;

/** One `resolve`: a depth-first search over the root with static names tried first. */
class RouteSearch {
  readonly #access: RootAccess;
  readonly #segments: readonly string[];
  readonly #trailingSlash: boolean;

  constructor(access: RootAccess, segments: readonly string[], trailingSlash: boolean) {
    this.#access = access;
    this.#segments = segments;
    this.#trailingSlash = trailingSlash;
  }

  run(): Promise<RouteMatch | undefined> {
    const root = this.#access.root;
    if (this.#segments.length === 0) return this.#indexIn(root, []);
    return this.#matchIn(root, 0, []);
  }

  /** `index.*` inside a real directory. */
  async #indexIn(directory: string, params: Params): Promise<RouteMatch | undefined> {
    const listing = await this.#access.listing(directory);
    if (listing === undefined) return undefined;
    const found = await this.#access.firstFile(directory, listing, listing.files.get(INDEX));
    return found && { ...found, params: Object.fromEntries(params) };
  }

  /** `index.*` inside a directory entry, when the entry is a directory. */
  async #index(parent: string, listing: Listing, entry: string, params: Params) {
    const directory = await this.#access.directory(parent, listing, entry);
    return directory === undefined ? undefined : this.#indexIn(directory, params);
  }

  async #fileIn(directory: string, listing: Listing, entry: string, params: Params) {
    const found = await this.#access.file(directory, listing, entry);
    return found && { ...found, params: Object.fromEntries(params) };
  }

  /** Matches `segments[at..]` against the real directory `directory`. */
  async #matchIn(directory: string, at: number, params: Params): Promise<RouteMatch | undefined> {
    const listing = await this.#access.listing(directory);
    if (listing === undefined) return undefined;
    const segment = this.#segments[at];

    if (at === this.#segments.length - 1) {
      const staticFile: Attempt = async () => {
        const found = await this.#access.firstFile(directory, listing, listing.files.get(segment));
        return found && { ...found, params: Object.fromEntries(params) };
      };
      const staticIndex: Attempt = async () =>
        listing.directories.has(segment)
          ? this.#index(directory, listing, segment, params)
          : undefined;
      const dynamicFile: Attempt = async () => {
        for (const { param, entry } of listing.dynamicFiles) {
          if (isBound(params, param)) continue;
          const found = await this.#fileIn(directory, listing, entry, [
            ...params,
            [param, segment],
          ]);
          if (found) return found;
        }
        return undefined;
      };
      const dynamicIndex: Attempt = async () => {
        for (const { param, entry } of listing.dynamicDirectories) {
          if (isBound(params, param)) continue;
          const found = await this.#index(directory, listing, entry, [...params, [param, segment]]);
          if (found) return found;
        }
        return undefined;
      };
      // Static before dynamic; within each, the spelling of the path picks file or index first.
      const order = this.#trailingSlash
        ? [staticIndex, staticFile, dynamicIndex, dynamicFile]
        : [staticFile, staticIndex, dynamicFile, dynamicIndex];
      for (const attempt of order) {
        const found = await attempt();
        if (found) return found;
      }
      return undefined;
    }

    if (listing.directories.has(segment)) {
      const next = await this.#access.directory(directory, listing, segment);
      if (next !== undefined) {
        const found = await this.#matchIn(next, at + 1, params);
        if (found) return found;
      }
    }
    // Backtracking: the static directory had nothing for the rest of the path.
    for (const { param, entry } of listing.dynamicDirectories) {
      if (isBound(params, param)) continue;
      const next = await this.#access.directory(directory, listing, entry);
      if (next === undefined) continue;
      const found = await this.#matchIn(next, at + 1, [...params, [param, segment]]);
      if (found) return found;
    }
    return undefined;
  }
}

/** The part of a request path that routing reads: up to "?" or "#". */
function routeKey(input: string): string {
  if (typeof input !== "string") return input;
  let end = input.length;
  const query = input.indexOf("?");
  if (query !== -1) end = query;
  const fragment = input.indexOf("#");
  if (fragment !== -1 && fragment < end) end = fragment;
  return end === input.length ? input : input.slice(0, end);
}

/** No params: one frozen object for every match without dynamic segments. */
const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({});

/** A kept answer is handed out as a copy: callers own their params. */
function copyResult(result: RouteResult): RouteResult {
  if (!result.found) return result;
  const { file, name, params } = result.match;
  let copy: Readonly<Record<string, string>> = NO_PARAMS;
  for (const _ in params) {
    copy = { ...params };
    break;
  }
  return { found: true, match: { file, name, params: copy } };
}

async function realDirectory(root: string): Promise<string> {
  let real: string;
  try {
    real = await fs.realpath(root);
  } catch (error) {
    throw new ServiceRootError(
      "SB_ERR_ROOT_MISSING",
      `service root ${root} cannot be opened (${errorCode(error)})`,
      { cause: error },
    );
  }
  let isDirectory = false;
  try {
    isDirectory = (await fs.stat(real)).isDirectory();
  } catch {
    // Removed between the two calls: reported as missing below.
  }
  if (!isDirectory) {
    throw new ServiceRootError("SB_ERR_ROOT_MISSING", `service root ${root} is not a directory`);
  }
  return real;
}

export interface ServiceRouterOptions {
  /**
   * How long ago, in milliseconds, a directory must last have changed for its listing to be kept
   * between lookups (default 2000). Lower only where the file system's timestamps are known to
   * be fine-grained, such as in tests.
   */
  racyMs?: number;
}

/** Answers kept per request path at most; past it they start over. */
const MAX_KEPT_ROUTES = 10_000;

interface KeptRoute {
  result: RouteResult;
  /** The kept listings the answer was found in; it holds while each is still the kept one. */
  listings: Array<[string, CachedListing]>;
}

export class ServiceRouter {
  readonly #input: string;
  #realRoot: string | undefined;
  #rootPromise: Promise<string> | undefined;
  readonly #listings: ListingCache;
  /** Answers by request path (query and fragment cut). */
  readonly #routes = new Map<string, KeptRoute>();

  constructor(root: string, options: ServiceRouterOptions = {}) {
    this.#input = path.resolve(root);
    this.#listings = new ListingCache(options.racyMs ?? DEFAULT_RACY_MS);
  }

  /** Directories read from the file system so far; a kept listing is not read again. */
  get directoryReads(): number {
    return this.#listings.reads;
  }

  /**
   * The real path of the root once a call resolved it, the absolute input path before. A missing
   * root makes `resolve` and `list` reject with an Error whose code is "SB_ERR_ROOT_MISSING".
   */
  get root(): string {
    return this.#realRoot ?? this.#input;
  }

  /**
   * The answer `resolve` would give, when it is known without reading a directory: the path was
   * resolved before and every directory on its way is unchanged. Undefined otherwise.
   */
  lookup(pathname: string): RouteResult | undefined {
    const key = routeKey(pathname);
    const kept = this.#routes.get(key);
    if (kept === undefined) return undefined;
    for (const [directory, listing] of kept.listings) {
      if (this.#listings.get(directory) !== listing) {
        this.#routes.delete(key);
        return undefined;
      }
    }
    return copyResult(kept.result);
  }

  /**
   * The module that serves `pathname` (a request path without its query; anything from "?" or
   * "#" on is ignored). Never throws for any input: refusals are not-found with a reason. Rejects
   * only when the root itself is missing.
   */
  async resolve(pathname: string): Promise<RouteResult> {
    const root = await this.#root();
    const known = this.lookup(pathname);
    if (known !== undefined) return known;
    try {
      const key = routeKey(pathname);
      const parsed = parseRequestPath(pathname);
      if (!parsed.ok) return { found: false, reason: parsed.reason };
      const access = new RootAccess(root, RESOLVE_BUDGET, this.#listings);
      const match = await new RouteSearch(access, parsed.segments, parsed.trailingSlash).run();
      let result: RouteResult;
      if (match) result = { found: true, match };
      else if (access.exhausted) {
        return { found: false, reason: `gave up after ${RESOLVE_BUDGET} directory reads` };
      } else {
        result = { found: false, reason: access.refusal ?? "no service module matches the path" };
      }
      if (access.used !== null) {
        if (this.#routes.size >= MAX_KEPT_ROUTES) this.#routes.clear();
        this.#routes.set(key, { result: copyResult(result), listings: access.used });
      }
      return result;
    } catch (error) {
      return { found: false, reason: `lookup failed (${errorCode(error)})` };
    }
  }

  /**
   * Every service file that a path can route to, sorted by name, each once: the preferred
   * extension of each name and the first dynamic file of each directory, as `resolve` picks
   * them. For preloading.
   */
  async list(): Promise<Array<{ file: string; name: string }>> {
    const root = await this.#root();
    const access = new RootAccess(root, LIST_BUDGET, this.#listings);
    const found = new Map<string, string>();
    const visited = new Set<string>();

    const walk = async (directory: string, depth: number, bound: readonly string[]) => {
      // Symlinks inside the root may form cycles: each real directory is walked once, with the
      // parameters bound on the first way to it. Without symlinks that is the only way.
      if (visited.has(directory)) return;
      visited.add(directory);
      const listing = await access.listing(directory);
      if (listing === undefined) return;
      const add = (file: Found | undefined) => {
        if (file && !found.has(file.file)) found.set(file.file, file.name);
      };
      // A directory at the last allowed depth is reachable only as "<path>/".
      if (depth === MAX_SEGMENTS) {
        add(await access.firstFile(directory, listing, listing.files.get(INDEX)));
        return;
      }
      for (const entries of listing.files.values()) {
        add(await access.firstFile(directory, listing, entries));
      }
      for (const { param, entry } of listing.dynamicFiles) {
        if (bound.includes(param)) continue;
        const file = await access.file(directory, listing, entry);
        if (file) {
          add(file);
          break;
        }
      }
      for (const entry of listing.directories) {
        const next = await access.directory(directory, listing, entry);
        if (next !== undefined) await walk(next, depth + 1, bound);
      }
      for (const { param, entry } of listing.dynamicDirectories) {
        if (bound.includes(param)) continue;
        const next = await access.directory(directory, listing, entry);
        if (next !== undefined) await walk(next, depth + 1, [...bound, param]);
      }
    };

    await walk(root, 0, []);
    if (access.exhausted) {
      throw new ServiceRootError(
        "SB_ERR_ROOT_TOO_LARGE",
        `service root ${root} has more than ${LIST_BUDGET} routable directories`,
      );
    }
    return [...found]
      .map(([file, name]) => ({ file, name }))
      .sort((a, b) => compareCodeUnits(a.name, b.name));
  }

  /** Forgets the root's real path and every kept listing, so the next call reads them again. */
  invalidate(): void {
    this.#rootPromise = undefined;
    this.#listings.clear();
    this.#routes.clear();
  }

  #root(): Promise<string> {
    if (this.#rootPromise === undefined) {
      const pending = realDirectory(this.#input).then(
        (real) => {
          this.#realRoot = real;
          return real;
        },
        (error: unknown) => {
          // A root that appears later is picked up by the next call.
          if (this.#rootPromise === pending) this.#rootPromise = undefined;
          throw error;
        },
      );
      this.#rootPromise = pending;
    }
    return this.#rootPromise;
  }
}
