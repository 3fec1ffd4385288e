import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { type CliIo, HELP, main } from "../../src/cli/main.js";

const run = promisify(execFile);
const tsx = new URL("../../node_modules/.bin/tsx", import.meta.url).pathname;
const cli = new URL("../../src/cli/main.ts", import.meta.url).pathname;
const { version } = JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
) as { version: string };

describe("switchboard CLI", () => {
  it("prints the package version with --version and -v", async () => {
    for (const flag of ["--version", "-v"]) {
      const { stdout } = await run(tsx, [cli, flag]);
      expect(stdout.trim()).toBe(version);
    }
  });

  it("prints usage with --help", async () => {
    const { stdout } = await run(tsx, [cli, "--help"]);
    expect(stdout).toContain(`switchboard ${version}`);
    expect(stdout).toContain("--version");
    expect(stdout).toContain("--help");
  });

  it("refuses unknown options with exit code 2", async () => {
    const failure = await run(tsx, [cli, "--frobnicate"]).catch((error: unknown) => error);
    expect(failure).toMatchObject({ code: 2 });
    expect((failure as { stderr: string }).stderr).toContain("--frobnicate");
  });
});

/** Runs `main` in this process with its output captured. */
async function runMain(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const io: Partial<CliIo> = {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    env: {},
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}

describe("main (in process)", () => {
  it("prints help and exits 0 with no command, with help, --help and -h", async () => {
    for (const argv of [[], ["help"], ["--help"], ["-h"]]) {
      expect(await runMain(argv), argv.join(" ")).toEqual({ code: 0, stdout: HELP, stderr: "" });
    }
    expect(HELP).toContain("switchboard serve [root] [options]");
  });

  it("prints the version with --version and -v", async () => {
    for (const argv of [["--version"], ["-v"]]) {
      expect(await runMain(argv)).toEqual({ code: 0, stdout: `${version}\n`, stderr: "" });
    }
  });

  it("refuses an unknown command with exit code 2", async () => {
    const run = await runMain(["start"]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe(
      "switchboard: unknown command \"start\" (commands: serve, connect)\nTry 'switchboard --help'.\n",
    );
  });

  it("refuses unknown options and stray arguments with exit code 2", async () => {
    const unknown = await runMain(["--port", "80"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("switchboard: unknown option --port");
    const stray = await runMain(["--version", "extra"]);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toContain("extra");
  });

  it("hands serve its own arguments", async () => {
    const run = await runMain(["serve", "--version"]);
    expect(run).toEqual({ code: 0, stdout: `${version}\n`, stderr: "" });
    const wrong = await runMain(["serve", "--nope"]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain("switchboard: unknown option --nope");
    expect(wrong.stderr).toContain("switchboard serve --help");
  });
});

describe("switchboard through a symlink", () => {
  it("still runs when started through a link, as npm's bin link does", async () => {
    const dir = mkdtempSync(join(tmpdir(), "switchboard-bin-"));
    try {
      const link = join(dir, "switchboard");
      symlinkSync(cli, link);
      const { stdout } = await run(process.execPath, ["--import", "tsx", link, "--version"], {
        cwd: new URL("../../", import.meta.url).pathname,
      });
      expect(stdout).toBe(`${version}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
