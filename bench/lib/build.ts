// What a run builds before its first suite:
// - the C load generators (bench/loadgen/*.c), with the system `cc`, all at once and in
//   parallel. A generator is rebuilt only when its binary is missing, older than its sources, or
//   was built with another command; otherwise the binary from the last run is used;
// - the servers (bench/servers/), Switchboard's sources (src/) and the bench services
//   (bench/services/), compiled with the project's tsc into bench/.build/js, where the servers
//   run with plain node (see buildServers); again only when their sources changed.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { benchDir, buildDir, rootDir } from "./proc.js";

export type GeneratorName = "echo" | "broadcast" | "connect" | "idle";

const LIBRARIES: Record<GeneratorName, string[]> = {
  echo: ["-lz"],
  broadcast: [],
  connect: [],
  idle: [],
};

export const INSTALL_HINT =
  "The load generators need a C compiler and the zlib headers (Debian: apt-get install gcc zlib1g-dev).";

export function generatorSource(name: GeneratorName): string {
  return path.join(benchDir, "loadgen", `${name}-load.c`);
}

/** The generators whose source is present (idle-load.c may not be, in an older tree). */
export function availableGenerators(): GeneratorName[] {
  return (Object.keys(LIBRARIES) as GeneratorName[]).filter((name) =>
    existsSync(generatorSource(name)),
  );
}

function compileOne(name: GeneratorName, outDir: string): Promise<string> {
  const source = generatorSource(name);
  const binary = path.join(outDir, `${name}-load`);
  const args = ["-O2", "-Wall", "-Wextra", "-o", binary, source, ...LIBRARIES[name]];
  const command = `cc ${args.join(" ")}`;
  const stamp = `${binary}.cmd`;
  const header = path.join(benchDir, "loadgen", "loadgen.h");
  const fresh =
    existsSync(binary) &&
    existsSync(stamp) &&
    readFileSync(stamp, "utf8") === command &&
    statSync(binary).mtimeMs > Math.max(statSync(source).mtimeMs, statSync(header).mtimeMs);
  if (fresh) return Promise.resolve(binary);
  return new Promise((resolve, reject) => {
    const child = spawn("cc", args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`could not run \`${command}\`: ${err.message}\n${INSTALL_HINT}`));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(
          new Error(
            `\`${command}\` failed (${signal ?? `exit ${code}`}):\n${stderr}${INSTALL_HINT}`,
          ),
        );
        return;
      }
      if (stderr.trim() !== "") process.stderr.write(stderr);
      writeFileSync(stamp, command);
      resolve(binary);
    });
  });
}

/** Compiles the named generators into `outDir` (bench/.build by default); name -> binary. */
export async function compileGenerators(
  names: readonly GeneratorName[],
  outDir = buildDir,
): Promise<Partial<Record<GeneratorName, string>>> {
  mkdirSync(outDir, { recursive: true });
  const binaries = await Promise.all(names.map((name) => compileOne(name, outDir)));
  return Object.fromEntries(names.map((name, i) => [name, binaries[i]]));
}

/** Whether a C compiler answers here. */
export function haveCc(): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn("cc", ["--version"], { stdio: "ignore" });
    child.once("error", () => resolve(false));
    child.once("close", (code) => resolve(code === 0));
  });
}

// ---------------------------------------------------------------- the servers, compiled

/**
 * Where the servers are compiled to, mirroring the repository's layout: bench/.build/js/src/,
 * bench/.build/js/bench/servers/, bench/.build/js/bench/services/ and a copy of package.json
 * (src/version.ts reads ../package.json).
 */
export const serversJsDir = path.join(buildDir, "js");

/** The tsconfig of the build, written next to the output: `npx tsc -p` it to build by hand. */
const SERVERS_TSCONFIG = path.join(buildDir, "tsconfig.servers.json");
/** What was compiled, in serversJsDir: a hash of every input (see serverSourcesHash). */
const STAMP = ".stamp";
/** The directories compiled, relative to the repository's root. */
const SERVER_SOURCES = ["src", "bench/servers", "bench/services"];

/**
 * The compiled counterpart of a server script or a service: "bench/servers/ws-echo.ts"
 * (relative to the repository's root, or absolute) -> <root>/bench/.build/js/bench/servers/ws-echo.js.
 */
export function compiledPath(script: string, jsDir = serversJsDir): string {
  const relative = path.isAbsolute(script) ? path.relative(rootDir, script) : script;
  return path.join(
    jsDir,
    relative.replace(/\.(m|c)?ts$/, (_, m: string | undefined) => `.${m ?? ""}js`),
  );
}

function tsconfigText(): string {
  const tsconfig = {
    extends: "../../tsconfig.json",
    compilerOptions: {
      rootDir: "../..",
      outDir: "js",
      noEmit: false,
      declaration: false,
      sourceMap: false,
    },
    include: SERVER_SOURCES.map((dir) => path.posix.join("../..", dir)),
  };
  return `${JSON.stringify(tsconfig, null, 2)}\n`;
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name));
}

/**
 * A hash of everything the build depends on: every file under src/, bench/servers/ and
 * bench/services/ (paths and contents), tsconfig.json, package.json, the build's own tsconfig and
 * tsc's version. Reading them takes a few milliseconds; compiling, a few seconds.
 */
export function serverSourcesHash(): string {
  const hash = createHash("sha256");
  const tscPackage = path.join(rootDir, "node_modules", "typescript", "package.json");
  hash.update(tsconfigText());
  const files = [
    ...SERVER_SOURCES.flatMap((dir) => filesUnder(path.join(rootDir, dir))).sort(),
    path.join(rootDir, "tsconfig.json"),
    path.join(rootDir, "package.json"),
    tscPackage,
  ];
  for (const file of files) {
    hash.update(`\0${path.relative(rootDir, file)}\0`);
    if (existsSync(file)) hash.update(readFileSync(file));
  }
  return hash.digest("hex");
}

export interface ServersBuild {
  /** Where the compiled servers are (serversJsDir). */
  jsDir: string;
  /** False when the last build's output matched the sources and was used as it was. */
  rebuilt: boolean;
  /** How long deciding and, if it ran, compiling took. */
  ms: number;
  /** tsc reported errors (it emits anyway): the first lines. */
  warning?: string;
}

function runTsc(outDir: string): Promise<{ status: number | null; output: string; error?: Error }> {
  const tsc = path.join(rootDir, "node_modules", ".bin", "tsc");
  return new Promise((resolve) => {
    const child = spawn(tsc, ["-p", SERVERS_TSCONFIG, "--outDir", outDir], {
      cwd: rootDir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      resolve({ status: null, output, error });
    });
    child.once("close", (status) => {
      clearTimeout(timer);
      resolve({ status, output });
    });
  });
}

/**
 * Compiles the bench servers, Switchboard's sources and the bench services with the project's
 * tsc into bench/.build/js, where the servers run with plain node: Switchboard ships compiled
 * (dist/), and ws and uWebSockets.js run as published JavaScript. Run through tsx instead
 * (`--tsx`), every named function carries its name as an own property (tsx runs esbuild with
 * keepNames), which gives each closure a property dictionary of its own: memory and CPU on
 * every Switchboard connection, and none of it Switchboard's.
 *
 * Skipped when the last build's stamp matches the sources' hash (`force` rebuilds anyway). The
 * output goes to a directory of its own first and then replaces the old one whole, so no stale
 * file survives and a run reading the old one meanwhile sees either.
 */
export async function buildServers(
  options: { force?: boolean; jsDir?: string } = {},
): Promise<ServersBuild> {
  const started = Date.now();
  // Another directory (a test's) must be inside the repository too, for node_modules.
  const jsDir = options.jsDir ?? serversJsDir;
  const sources = serverSourcesHash();
  const stamp = path.join(jsDir, STAMP);
  if (!options.force && existsSync(stamp) && readFileSync(stamp, "utf8") === sources) {
    return { jsDir, rebuilt: false, ms: Date.now() - started };
  }
  mkdirSync(buildDir, { recursive: true });
  writeFileSync(SERVERS_TSCONFIG, tsconfigText());
  const fresh = `${jsDir}.${process.pid}.new`;
  rmSync(fresh, { recursive: true, force: true });
  const result = await runTsc(fresh);
  const probe = compiledPath("bench/servers/switchboard-service.ts", fresh);
  if (result.error || !existsSync(probe)) {
    rmSync(fresh, { recursive: true, force: true });
    const detail = result.error?.message ?? result.output.trim();
    throw new Error(
      `could not compile the servers with \`tsc -p ${path.relative(rootDir, SERVERS_TSCONFIG)}\`:\n${detail}`,
    );
  }
  // src/version.ts reads the package's version from ../package.json.
  writeFileSync(path.join(fresh, "package.json"), readFileSync(path.join(rootDir, "package.json")));
  // tsc emits despite type errors; a tree that others are editing may have some for a moment.
  // Such a build gets no stamp, so the next run compiles again.
  let warning: string | undefined;
  if (result.status !== 0) {
    const first = result.output.trim().split("\n").slice(0, 3).join("; ");
    warning = `tsc reported errors and built the servers anyway: ${first}`;
  } else writeFileSync(path.join(fresh, STAMP), sources);
  const old = `${jsDir}.${process.pid}.old`;
  try {
    renameSync(jsDir, old);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  try {
    renameSync(fresh, jsDir);
  } catch (error) {
    // Another run put its build there in between (from the same sources, unless they changed
    // in those few seconds): use it.
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw error;
  }
  rmSync(fresh, { recursive: true, force: true });
  rmSync(old, { recursive: true, force: true });
  return { jsDir, rebuilt: true, ms: Date.now() - started, ...(warning ? { warning } : {}) };
}
