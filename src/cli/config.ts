import { readFile, stat } from "node:fs/promises";
import { dirname, extname, isAbsolute, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { z } from "zod";
import type { Isolation } from "../services/define.js";
import type { TopicPolicy } from "../topics/hub.js";
import { describeParseError } from "./parse-error.js";

/**
 * Configuration of `switchboard serve`. Every setting comes from the first of these that gives
 * it: a command-line flag, an environment variable, the config file, the default. Resolution
 * is a pure function of argv, environment and working directory (it reads only the config
 * file), so every combination can be tested without starting a server.
 */

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** What a config file may set; every key is optional. */
export interface SwitchboardConfig {
  /** The service root; relative to the config file's directory. */
  root?: string;
  port?: number;
  host?: string;
  /** A directory of plain files served over HTTP; relative to the config file's directory. */
  static?: string;
  /**
   * PEM certificate (chain) and private key files: serve https:// and wss://. Both or neither;
   * relative to the config file's directory.
   */
  tlsCert?: string;
  tlsKey?: string;
  watch?: boolean;
  preload?: boolean;
  logLevel?: LogLevel;
  perMessageDeflate?: boolean;
  maxMessageSize?: number;
  heartbeat?: { interval: number; timeout: number } | false;
  closeTimeout?: number;
  isolation?: Isolation;
  maxHeapMb?: number;
  watchdogMs?: number;
  shutdownTimeoutMs?: number;
  /** Per-topic policies (history, announce, envelope, slow consumers); first match wins. */
  topics?: TopicPolicy[];
  /**
   * Where topics are shared with other Switchboard nodes: "memory" (this process only, the
   * default), a Redis URL (redis:// or rediss://) or a NATS URL (nats://, JetStream on).
   */
  engine?: string;
  /** I/O processes sharing the port (node:cluster); 1 runs the server in this process. */
  workers?: number;
}

/** Types a config file: `export default defineConfig({ port: 9000 })`. Returns its argument. */
export function defineConfig(config: SwitchboardConfig): SwitchboardConfig {
  return config;
}

export type ConfigSource = "flag" | "env" | "file" | "default";

/** The configuration `serve` runs with: paths are absolute, the core settings always present. */
export interface ResolvedConfig
  extends Omit<SwitchboardConfig, "root" | "port" | "host" | "watch" | "preload" | "logLevel"> {
  root: string;
  port: number;
  host: string;
  watch: boolean;
  preload: boolean;
  logLevel: LogLevel;
  shutdownTimeoutMs: number;
  /** Absolute path of the config file that was read, if any. */
  configFile?: string;
  /** Where each set key came from. */
  sources: Partial<Record<keyof SwitchboardConfig, ConfigSource>>;
}

export type ConfigResult =
  | { ok: true; config: ResolvedConfig }
  | {
      ok: false;
      /** 2: the command line is wrong; 1: the environment or the config file is. */
      exitCode: 1 | 2;
      code: ConfigErrorCode;
      /** One line, ready for stderr. */
      message: string;
    };

/** Stable codes: which of the three sources was wrong. */
export type ConfigErrorCode = "SB_ERR_USAGE" | "SB_ERR_CONFIG_ENV" | "SB_ERR_CONFIG_FILE";

export const DEFAULTS = {
  root: "services",
  port: 8080,
  host: "127.0.0.1",
  watch: false,
  preload: false,
  logLevel: "info",
  shutdownTimeoutMs: 10_000,
} as const satisfies SwitchboardConfig;

/** Looked for in the working directory, in this order, when --config is not given. */
export const CONFIG_FILE_NAMES = [
  "switchboard.config.ts",
  "switchboard.config.mts",
  "switchboard.config.js",
  "switchboard.config.mjs",
  "switchboard.config.json",
] as const;

const positiveInt = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

/**
 * One entry per key: its schema and the rule said in words, so that every error names the key,
 * its source and what would have been accepted.
 */
const FIELDS = {
  root: { schema: z.string().min(1), rule: "a non-empty path" },
  port: { schema: z.number().int().min(0).max(65535), rule: "an integer between 0 and 65535" },
  host: {
    schema: z.string().regex(/^[^\s/]+$/),
    rule: "a host name or IP address (no spaces or slashes)",
  },
  static: { schema: z.string().min(1), rule: "a non-empty path" },
  tlsCert: { schema: z.string().min(1), rule: "a non-empty path" },
  tlsKey: { schema: z.string().min(1), rule: "a non-empty path" },
  watch: { schema: z.boolean(), rule: "a boolean" },
  preload: { schema: z.boolean(), rule: "a boolean" },
  logLevel: { schema: z.enum(LOG_LEVELS), rule: `one of ${LOG_LEVELS.join(", ")}` },
  perMessageDeflate: { schema: z.boolean(), rule: "a boolean" },
  maxMessageSize: { schema: positiveInt, rule: "a positive integer (bytes)" },
  heartbeat: {
    schema: z.union([
      z.literal(false),
      z.object({ interval: positiveInt, timeout: positiveInt }).strict(),
    ]),
    rule: "false or { interval, timeout } with positive integers (milliseconds)",
  },
  closeTimeout: { schema: positiveInt, rule: "a positive integer (milliseconds)" },
  isolation: {
    schema: z.enum(["worker", "process", "main"]),
    rule: "one of worker, process, main",
  },
  maxHeapMb: { schema: positiveInt, rule: "a positive integer (MiB)" },
  watchdogMs: { schema: positiveInt, rule: "a positive integer (milliseconds)" },
  shutdownTimeoutMs: { schema: positiveInt, rule: "a positive integer (milliseconds)" },
  engine: {
    schema: z.string().regex(/^(memory|rediss?:\/\/\S*|nats:\/\/\S*)$/),
    rule: "memory, or a redis://, rediss:// or nats:// URL",
  },
  workers: { schema: z.number().int().min(1).max(256), rule: "an integer between 1 and 256" },
  topics: {
    schema: z.array(
      z
        .object({
          pattern: z.string().min(1),
          history: z
            .object({
              limit: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
              ttlMs: positiveInt.optional(),
            })
            .strict()
            .optional(),
          announce: z.boolean().optional(),
          envelope: z.boolean().optional(),
          slowConsumer: z
            .object({
              maxBufferedBytes: positiveInt,
              action: z.enum(["drop", "close"]),
              closeCode: z.union([z.literal(1008), z.literal(1013)]).optional(),
            })
            .strict()
            .optional(),
        })
        .strict(),
    ),
    rule: "a list of { pattern, history?: { limit?, ttlMs? }, announce?, envelope?, slowConsumer?: { maxBufferedBytes, action: drop|close, closeCode?: 1008|1013 } }",
  },
} as const satisfies Record<keyof SwitchboardConfig, { schema: z.ZodType; rule: string }>;

type Key = keyof typeof FIELDS;

const fileSchema = z
  .object(
    Object.fromEntries(
      Object.entries(FIELDS).map(([key, field]) => [key, field.schema.optional()]),
    ) as { [K in Key]: z.ZodOptional<(typeof FIELDS)[K]["schema"]> },
  )
  .strict();

/** The command-line options of `serve`, shared with its help text. */
const OPTIONS = {
  port: { type: "string", short: "p" },
  host: { type: "string" },
  config: { type: "string", short: "c" },
  watch: { type: "boolean" },
  preload: { type: "boolean" },
  static: { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  engine: { type: "string" },
  workers: { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "v" },
} as const;

export interface ServeFlags {
  root?: string;
  port?: string;
  host?: string;
  config?: string;
  watch?: boolean;
  preload?: boolean;
  static?: string;
  tlsCert?: string;
  tlsKey?: string;
  engine?: string;
  workers?: string;
  logLevel?: string;
  help?: boolean;
  version?: boolean;
}

export type FlagsResult =
  | { ok: true; flags: ServeFlags }
  | { ok: false; exitCode: 2; code: "SB_ERR_USAGE"; message: string };

/** Parses the arguments after `serve`; strict, so any unknown option is an error. */
export function parseServeArgs(argv: readonly string[]): FlagsResult {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: true });
  } catch (error) {
    const message = `switchboard: ${describeParseError(error)}`;
    return { ok: false, exitCode: 2, code: "SB_ERR_USAGE", message };
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) {
    return {
      ok: false,
      exitCode: 2,
      code: "SB_ERR_USAGE",
      message: `switchboard: serve takes one service root, got ${positionals.length}: ${positionals.join(" ")}`,
    };
  }
  return {
    ok: true,
    flags: {
      root: positionals[0],
      port: values.port,
      host: values.host,
      config: values.config,
      watch: values.watch,
      preload: values.preload,
      static: values.static,
      tlsCert: values["tls-cert"],
      tlsKey: values["tls-key"],
      engine: values.engine,
      workers: values.workers,
      logLevel: values["log-level"],
      help: values.help,
      version: values.version,
    },
  };
}

export interface ResolveConfigInput {
  /** The arguments after `serve`. */
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
}

type Failure = Extract<ConfigResult, { ok: false }>;

/**
 * Merges flags, environment, config file and defaults. Reads the config file (and imports it,
 * for .ts/.js); nothing else. `--help` and `--version` are the caller's business and ignored.
 */
export async function resolveConfig(input: ResolveConfigInput): Promise<ConfigResult> {
  const cwd = resolve(input.cwd);
  const parsed = parseServeArgs(input.argv);
  if (!parsed.ok) return parsed;
  const { flags } = parsed;

  const fromFlags = flagSettings(flags);
  if (!fromFlags.ok) return fromFlags;
  const fromEnv = envSettings(input.env);
  if (!fromEnv.ok) return fromEnv;

  const found = await findConfigFile(flags.config, cwd);
  if (!found.ok) return found;
  let fromFile: Partial<SwitchboardConfig> = {};
  if (found.path !== undefined) {
    const loaded = await loadConfigFile(found.path, cwd);
    if (!loaded.ok) return loaded;
    fromFile = loaded.settings;
  }

  const sources: ResolvedConfig["sources"] = {};
  const merged: Record<string, unknown> = {};
  const layers: Array<[ConfigSource, Partial<SwitchboardConfig>]> = [
    ["flag", fromFlags.settings],
    ["env", fromEnv.settings],
    ["file", fromFile],
    ["default", DEFAULTS],
  ];
  for (const key of Object.keys(FIELDS) as Key[]) {
    for (const [source, settings] of layers) {
      if (settings[key] === undefined) continue;
      merged[key] = settings[key];
      sources[key] = source;
      break;
    }
  }

  // Paths are relative to where they were written: the config file's directory for the file,
  // the working directory for flags, environment and the default.
  const fileDir = found.path === undefined ? cwd : dirname(found.path);
  for (const key of ["root", "static", "tlsCert", "tlsKey"] as const) {
    const value = merged[key];
    if (typeof value === "string") {
      merged[key] = resolve(sources[key] === "file" ? fileDir : cwd, value);
    }
  }

  // One without the other cannot serve TLS; say which is missing and where the other came from.
  if ((merged.tlsCert === undefined) !== (merged.tlsKey === undefined)) {
    const given = merged.tlsCert === undefined ? "tlsKey" : "tlsCert";
    const missing = given === "tlsCert" ? "a key (--tls-key)" : "a certificate (--tls-cert)";
    const source = sources[given];
    const name = given === "tlsCert" ? "--tls-cert" : "--tls-key";
    const message = `switchboard: ${source === "flag" ? name : `${given} (from the ${source === "env" ? "environment" : "config file"})`} needs ${missing} as well`;
    return source === "flag"
      ? { ok: false, exitCode: 2, code: "SB_ERR_USAGE", message }
      : {
          ok: false,
          exitCode: 1,
          code: source === "env" ? "SB_ERR_CONFIG_ENV" : "SB_ERR_CONFIG_FILE",
          message,
        };
  }

  // "[::1]" is how an IPv6 address is written in a URL; listen() wants it bare.
  if (typeof merged.host === "string") merged.host = merged.host.replace(/^\[(.*)\]$/, "$1");

  const config = { ...merged, sources } as unknown as ResolvedConfig;
  if (found.path !== undefined) config.configFile = found.path;
  return { ok: true, config };
}

type SettingsResult = { ok: true; settings: Partial<SwitchboardConfig> } | Failure;

function flagSettings(flags: ServeFlags): SettingsResult {
  const raw: Array<[Key, string, unknown]> = [
    ["root", "[root]", flags.root],
    ["port", "--port", flags.port === undefined ? undefined : parseInteger(flags.port)],
    ["host", "--host", flags.host],
    ["static", "--static", flags.static],
    ["tlsCert", "--tls-cert", flags.tlsCert],
    ["tlsKey", "--tls-key", flags.tlsKey],
    ["engine", "--engine", flags.engine],
    ["workers", "--workers", flags.workers === undefined ? undefined : parseInteger(flags.workers)],
    ["watch", "--watch", flags.watch],
    ["preload", "--preload", flags.preload],
    ["logLevel", "--log-level", flags.logLevel],
  ];
  const settings: Record<string, unknown> = {};
  for (const [key, name, value] of raw) {
    if (value === undefined) continue;
    const checked = FIELDS[key].schema.safeParse(value);
    if (!checked.success) {
      const message = `switchboard: ${name}: ${mustBe(key, value)}`;
      return { ok: false, exitCode: 2, code: "SB_ERR_USAGE", message };
    }
    settings[key] = checked.data;
  }
  return { ok: true, settings };
}

export const ENV_VARS = {
  SWITCHBOARD_ROOT: "root",
  SWITCHBOARD_PORT: "port",
  SWITCHBOARD_HOST: "host",
  SWITCHBOARD_STATIC: "static",
  SWITCHBOARD_TLS_CERT: "tlsCert",
  SWITCHBOARD_TLS_KEY: "tlsKey",
  SWITCHBOARD_ENGINE: "engine",
  SWITCHBOARD_WORKERS: "workers",
  SWITCHBOARD_WATCH: "watch",
  SWITCHBOARD_PRELOAD: "preload",
  SWITCHBOARD_LOG_LEVEL: "logLevel",
} as const satisfies Record<string, Key>;

function envSettings(env: ResolveConfigInput["env"]): SettingsResult {
  const settings: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV_VARS)) {
    const text = env[name];
    // An empty variable counts as unset, so `SWITCHBOARD_PORT= switchboard serve` clears it.
    if (text === undefined || text === "") continue;
    let value: unknown = text;
    if (key === "port" || key === "workers") value = parseInteger(text);
    if (key === "watch" || key === "preload") {
      value = parseBoolean(text);
      if (value === undefined) {
        return {
          ok: false,
          exitCode: 1,
          code: "SB_ERR_CONFIG_ENV",
          message: `switchboard: ${name}: must be 1, 0, true or false, not ${quote(text)}`,
        };
      }
    }
    const checked = FIELDS[key].schema.safeParse(value);
    if (!checked.success) {
      const message = `switchboard: ${name}: ${mustBe(key, text)}`;
      return { ok: false, exitCode: 1, code: "SB_ERR_CONFIG_ENV", message };
    }
    settings[key] = checked.data;
  }
  return { ok: true, settings };
}

/** Decimal digits only: "8080" but not "0x1f90", "8e3", " 8080" or "". */
function parseInteger(text: string): number | string {
  return /^[0-9]{1,16}$/.test(text) ? Number(text) : text;
}

function parseBoolean(text: string): boolean | undefined {
  const lower = text.toLowerCase();
  if (lower === "1" || lower === "true") return true;
  if (lower === "0" || lower === "false") return false;
  return undefined;
}

function mustBe(key: string, value: unknown): string {
  return `must be ${FIELDS[key as Key].rule}, not ${quote(value)}`;
}

/** A short, printable rendering of a bad value for an error message. */
function quote(value: unknown): string {
  let text: string;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : (JSON.stringify(value) ?? "");
  } catch {
    text = "";
  }
  if (text === "") text = typeof value === "function" ? "a function" : String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

type FoundFile = { ok: true; path: string | undefined } | Failure;

async function findConfigFile(flag: string | undefined, cwd: string): Promise<FoundFile> {
  if (flag !== undefined) {
    const path = resolve(cwd, flag);
    const kind = await fileKind(path);
    if (kind === "file") return { ok: true, path };
    // A file named on the command line that is not there is a command-line mistake.
    const problem = kind === "missing" ? "no such file" : "not a file";
    const message = `switchboard: --config: ${problem}: ${flag}`;
    return { ok: false, exitCode: 2, code: "SB_ERR_USAGE", message };
  }
  for (const name of CONFIG_FILE_NAMES) {
    const path = resolve(cwd, name);
    if ((await fileKind(path)) === "file") return { ok: true, path };
  }
  return { ok: true, path: undefined };
}

async function fileKind(path: string): Promise<"file" | "other" | "missing"> {
  try {
    return (await stat(path)).isFile() ? "file" : "other";
  } catch {
    return "missing";
  }
}

async function loadConfigFile(
  path: string,
  cwd: string,
): Promise<{ ok: true; settings: Partial<SwitchboardConfig> } | Failure> {
  const shown = displayPath(path, cwd);
  const fail = (detail: string): Failure => ({
    ok: false,
    exitCode: 1,
    code: "SB_ERR_CONFIG_FILE",
    message: `switchboard: config file ${shown}: ${detail}`,
  });

  let content: unknown;
  const extension = extname(path).toLowerCase();
  try {
    if (extension === ".json") {
      content = JSON.parse(await readFile(path, "utf8"));
    } else if ([".ts", ".mts", ".cts"].includes(extension)) {
      content = defaultExport(await importTypeScript(path));
    } else if ([".js", ".mjs", ".cjs"].includes(extension)) {
      content = defaultExport(await import(pathToFileURL(path).href));
    } else {
      return fail("unsupported file type (use .ts, .mts, .js, .mjs or .json)");
    }
  } catch (error) {
    const reason = (error as Error)?.message?.split("\n")[0] ?? String(error);
    return fail(`cannot load: ${reason}`);
  }

  if (content === undefined) return fail("has no default export");
  const checked = fileSchema.safeParse(content);
  if (checked.success) return { ok: true, settings: checked.data as Partial<SwitchboardConfig> };
  return fail(describeFileIssue(checked.error.issues[0], content, extension === ".json"));
}

/**
 * An ES module's default export. A .ts file outside a `"type": "module"` package is compiled
 * to CommonJS, and its `export default` then arrives one level down, marked `__esModule`.
 */
function defaultExport(namespace: Record<string, unknown>): unknown {
  const value = namespace.default as { __esModule?: unknown; default?: unknown } | undefined;
  if (typeof value === "object" && value !== null && value.__esModule === true) {
    return value.default;
  }
  return value;
}

/**
 * TypeScript config files load through tsx, so they work without a build step. tsx is loaded
 * only for them: .js and .json configs do not need it installed.
 */
async function importTypeScript(path: string): Promise<Record<string, unknown>> {
  let api: typeof import("tsx/esm/api");
  try {
    api = await import("tsx/esm/api");
  } catch {
    throw new Error(
      "a TypeScript config file needs the tsx package (npm install tsx); or use .js or .json",
    );
  }
  return (await api.tsImport(pathToFileURL(path).href, import.meta.url)) as Record<string, unknown>;
}

function describeFileIssue(issue: z.core.$ZodIssue, content: unknown, json: boolean): string {
  if (issue.path.length === 0) {
    if (issue.code === "unrecognized_keys") return unknownKeys(issue.keys, "");
    const what = json ? "hold an object" : "export an object (export default { ... })";
    return `must ${what} of settings, not ${quote(content)}`;
  }
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") return unknownKeys(issue.keys, `${path.join(".")}.`);
  const key = path[0];
  return `"${key}" ${mustBe(key, valueAt(content, [key]))}`;
}

function unknownKeys(keys: readonly string[], prefix: string): string {
  const names = keys.map((key) => `"${prefix}${key}"`).join(", ");
  return `unknown key${keys.length === 1 ? "" : "s"} ${names}`;
}

function valueAt(content: unknown, path: readonly string[]): unknown {
  let value = content;
  for (const part of path) value = (value as Record<string, unknown> | undefined)?.[part];
  return value;
}

/** Relative to the working directory when inside it, so messages stay short. */
function displayPath(path: string, cwd: string): string {
  const rel = relative(cwd, path);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? rel : path;
}
