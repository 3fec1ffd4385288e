// Building the C load generators (bench/loadgen/*.c) with the system `cc`, all at once and in
// parallel. A generator is rebuilt only when its binary is missing, older than its sources, or
// was built with another command; otherwise the binary from the last run is used.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { benchDir, buildDir } from "./proc.js";

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
