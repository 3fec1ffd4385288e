import { realpathSync } from "node:fs";
import { isAbsolute } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_SERVICE_CONFIG, resolveServiceConfig } from "../services/config.js";
import {
  type Isolation,
  isServiceDefinition,
  type ServiceConfig,
  type ServiceDefinition,
  serviceOrigin,
} from "../services/define.js";
import { parseRequestPath, type RouteMatch, type RouteResult } from "../services/router.js";

/**
 * The programmatic router, for a program with no service directory:
 *
 *   const router = createRouter()
 *     .service("/chat/:room", chat, { isolation: "worker" })
 *     .service("/echo", new URL("./echo.ts", import.meta.url));
 *
 * A service is what `defineService` returned, or the module (an absolute path or a file URL)
 * whose default export it is. A pattern is a path of static segments and `:name` parameters,
 * each parameter matching one request segment (percent-decoded once) as `params.name`. It routes
 * the way a service root does: static segments win over parameters at each level, with
 * backtracking; `/chat` and `/chat/` are two routes, and where only one of them is registered
 * either spelling finds it.
 *
 * Isolation: a service given as an object runs as that very object on the I/O thread ("main"),
 * sharing the program's state. A worker or a child process cannot be handed functions, so it
 * imports the module that called `defineService` and takes the export defined there: such a
 * service must be exported by a module of its own (not the program's entry module, which the
 * worker would run again).
 */

export class RouterError extends Error {
  override readonly name = "RouterError";
  constructor(
    readonly code: "SB_ERR_ROUTE_PATTERN" | "SB_ERR_ROUTE_CONFLICT" | "SB_ERR_ROUTE_SERVICE",
    message: string,
  ) {
    super(message);
  }
}

/** A module whose default export is the service: an absolute path or a file URL. */
export type ServiceModule = string | URL;

/** One registered service. */
export interface Route {
  readonly pattern: string;
  /** The module the runtime imports in a worker or process (and "main" for a module route). */
  readonly file: string | undefined;
  /** The object given, for an object route. */
  readonly definition: ServiceDefinition | undefined;
  /** Which service of `file` it is, for an object route. */
  readonly exportOrdinal: number | undefined;
  /** What was given with the route (isolation and the other service settings), if anything. */
  readonly config: ServiceConfig | undefined;
}

const PARAM = /^:([A-Za-z_][A-Za-z0-9_]*)$/;
const STATIC_FORBIDDEN = /[\s?#%:]/;

interface Node {
  statics: Map<string, Node>;
  param: { name: string; node: Node } | undefined;
  /** The route ending here without a trailing slash. */
  file: Route | undefined;
  /** The route ending here with a trailing slash. */
  index: Route | undefined;
}

function node(): Node {
  return { statics: new Map(), param: undefined, file: undefined, index: undefined };
}

const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({});

export class Router {
  readonly #root = node();
  readonly #routes: Route[] = [];

  /** The services registered, in order. */
  get routes(): readonly Route[] {
    return this.#routes;
  }

  /**
   * Serves `pattern` with `service`. `options` are the settings a service module exports as
   * `config` (isolation, headers, maxHeapMb, watchdogMs, maxMessageSize); given here, they
   * replace that export. Throws a RouterError for a bad pattern, a pattern that is already
   * served, or something that is not a service.
   */
  service(
    pattern: string,
    service: ServiceDefinition | ServiceModule,
    options?: ServiceConfig,
  ): this {
    const segments = parsePattern(pattern);
    if (options !== undefined) {
      const checked = resolveServiceConfig(options, DEFAULT_SERVICE_CONFIG);
      if (!checked.ok) {
        throw new RouterError("SB_ERR_ROUTE_SERVICE", `${pattern}: ${checked.message}`);
      }
    }
    const route = makeRoute(pattern, service, options);
    // Only an existing node can conflict, and the walk creates nodes only past the last
    // existing one: a refused registration leaves the router as it was.
    let at = this.#root;
    for (const segment of segments.parts) {
      const param = PARAM.exec(segment)?.[1];
      if (param === undefined) {
        let next = at.statics.get(segment);
        if (next === undefined) {
          next = node();
          at.statics.set(segment, next);
        }
        at = next;
        continue;
      }
      if (at.param === undefined) {
        at.param = { name: param, node: node() };
      } else if (at.param.name !== param) {
        throw new RouterError(
          "SB_ERR_ROUTE_CONFLICT",
          `${pattern}: :${param} where another route has :${at.param.name} (one parameter name per position)`,
        );
      }
      at = at.param.node;
    }
    const existing = segments.trailingSlash ? at.index : at.file;
    if (existing !== undefined) {
      throw new RouterError(
        "SB_ERR_ROUTE_CONFLICT",
        `${pattern}: already served (by the route ${existing.pattern})`,
      );
    }
    if (segments.trailingSlash) at.index = route;
    else at.file = route;
    this.#routes.push(route);
    return this;
  }

  /** Routes a request path (query and fragment ignored); never throws. */
  match(url: string): RouteResult {
    const parsed = parseRequestPath(url, { strictSegments: false });
    if (!parsed.ok) return { found: false, reason: parsed.reason };
    const found = matchIn(this.#root, parsed.segments, 0, parsed.trailingSlash, []);
    if (found === undefined) return { found: false, reason: "no route matches" };
    const { route, values } = found;
    let params: Readonly<Record<string, string>> = NO_PARAMS;
    if (values.length > 0) {
      const record: Record<string, string> = {};
      for (let i = 0; i < values.length; i += 2) record[values[i]] = values[i + 1];
      params = record;
    }
    return { found: true, match: routeMatch(route, params) };
  }

  /**
   * Problems that only show once the default isolation is known: an object service that would
   * run in a worker or process but cannot be imported there. One message per problem.
   */
  problems(defaultIsolation: Isolation): string[] {
    const out: string[] = [];
    const entry = entryModule();
    for (const route of this.#routes) {
      if (route.definition === undefined) continue;
      const isolation = route.config?.isolation ?? defaultIsolation;
      if (isolation === "main") continue;
      if (route.file === undefined) {
        out.push(
          `${route.pattern}: a ${isolation} must import the service, and where it was defined is unknown; register its module instead (new URL("./service.ts", import.meta.url)) or give it { isolation: "main" }`,
        );
      } else if (entry !== undefined && sameFile(route.file, entry)) {
        out.push(
          `${route.pattern}: the service is defined in the program's entry module (${route.file}), which a ${isolation} would run again; move it to a module of its own or give it { isolation: "main" }`,
        );
      }
    }
    return out;
  }
}

/** A new, empty programmatic router. */
export function createRouter(): Router {
  return new Router();
}

function parsePattern(pattern: string): { parts: string[]; trailingSlash: boolean } {
  if (typeof pattern !== "string" || !pattern.startsWith("/")) {
    throw new RouterError(
      "SB_ERR_ROUTE_PATTERN",
      `route pattern ${String(pattern)}: must start with "/"`,
    );
  }
  const raw = pattern.split("/");
  const trailingSlash = raw[raw.length - 1] === "";
  const parts = raw.slice(1, trailingSlash ? -1 : undefined);
  const names = new Set<string>();
  for (const part of parts) {
    const param = PARAM.exec(part)?.[1];
    if (param !== undefined) {
      if (names.has(param)) {
        throw new RouterError(
          "SB_ERR_ROUTE_PATTERN",
          `route pattern ${pattern}: parameter :${param} twice`,
        );
      }
      names.add(param);
      continue;
    }
    if (part === "" || part === "." || part === ".." || STATIC_FORBIDDEN.test(part)) {
      throw new RouterError(
        "SB_ERR_ROUTE_PATTERN",
        `route pattern ${pattern}: segment "${part}" is not a name or a :parameter`,
      );
    }
  }
  return { parts, trailingSlash };
}

function makeRoute(
  pattern: string,
  service: ServiceDefinition | ServiceModule,
  options: ServiceConfig | undefined,
): Route {
  const config = options === undefined ? undefined : Object.freeze({ ...options });
  if (isServiceDefinition(service)) {
    const origin = serviceOrigin(service);
    return Object.freeze({
      pattern,
      file: origin.file,
      definition: service,
      exportOrdinal: origin.ordinal,
      config,
    });
  }
  let file: string | undefined;
  if (service instanceof URL) {
    if (service.protocol === "file:") file = fileURLToPath(service);
  } else if (typeof service === "string") {
    file = service.startsWith("file:") ? fileURLToPath(service) : service;
  }
  if (file === undefined || !isAbsolute(file)) {
    throw new RouterError(
      "SB_ERR_ROUTE_SERVICE",
      `${pattern}: not a service (defineService) or a module's absolute path or file URL: ${String(service)}`,
    );
  }
  return Object.freeze({ pattern, file, definition: undefined, exportOrdinal: undefined, config });
}

/** What a route answers with, given the params a path bound (none: `preload` starts it). */
export function routeMatch(
  route: Route,
  params: Readonly<Record<string, string>> = NO_PARAMS,
): RouteMatch {
  return {
    // Checked at registration: a route without a file runs only on the I/O thread.
    file: route.file ?? "",
    name: route.pattern,
    params,
    exportOrdinal: route.exportOrdinal,
    definition: route.definition,
    config: route.config,
  };
}

/** Depth first, static before the parameter, backtracking; `values` holds name, value pairs. */
function matchIn(
  at: Node,
  segments: readonly string[],
  index: number,
  trailingSlash: boolean,
  values: string[],
): { route: Route; values: string[] } | undefined {
  if (index === segments.length) {
    const route = trailingSlash ? (at.index ?? at.file) : (at.file ?? at.index);
    return route === undefined ? undefined : { route, values };
  }
  const segment = segments[index];
  const next = at.statics.get(segment);
  if (next !== undefined) {
    const found = matchIn(next, segments, index + 1, trailingSlash, values);
    if (found !== undefined) return found;
  }
  if (at.param !== undefined) {
    values.push(at.param.name, segment);
    const found = matchIn(at.param.node, segments, index + 1, trailingSlash, values);
    if (found !== undefined) return found;
    values.length -= 2;
  }
  return undefined;
}

function entryModule(): string | undefined {
  const script = process.argv[1];
  return script === undefined ? undefined : script;
}

function sameFile(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}
