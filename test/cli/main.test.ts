import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

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
