#!/usr/bin/env node
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { VERSION } from "../version.js";

/** What the CLI touches of its process, so commands can run inside a test. */
export interface CliIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  /** Where SIGINT and SIGTERM arrive. */
  signals: {
    on(signal: "SIGINT" | "SIGTERM", listener: (signal: NodeJS.Signals) => void): unknown;
    off(signal: "SIGINT" | "SIGTERM", listener: (signal: NodeJS.Signals) => void): unknown;
  };
  /** Ends the process now; only for a second signal during shutdown. */
  exit(code: number): void;
}

export const HELP = `switchboard ${VERSION}

A WebSocket application server for TypeScript.

Usage:
  switchboard serve [root] [options]   Serve every module in the service root
  switchboard connect <url> [options]  Open an interactive session with a WebSocket server
  switchboard --help                   Show this help
  switchboard --version                Print the version

Options:
  -h, --help      Show this help and exit.
  -v, --version   Print the version and exit.

Run 'switchboard serve --help' or 'switchboard connect --help' for their options.
`;

const COMMANDS = ["serve", "connect"] as const;

/**
 * Runs one command line and resolves with the exit code: 0 for success, 1 when the command
 * failed, 2 when the command line itself is wrong. `serve` resolves when the server has shut
 * down after a signal.
 */
export async function main(argv: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const cli: CliIo = { ...processIo(), ...io };
  const [command, ...rest] = argv;

  if (command === undefined || command === "help") {
    cli.stdout.write(HELP);
    return 0;
  }
  if (command === "serve") {
    // Loaded on demand: --help and usage errors never pay for the server and its dependencies.
    const { serve } = await import("./serve.js");
    return serve(rest, cli);
  }
  if (command === "connect") {
    const { runConnect } = await import("./connect.js");
    return runConnect(rest, { ...cli, stdin: process.stdin });
  }
  if (!command.startsWith("-")) {
    cli.stderr.write(
      `switchboard: unknown command "${command}" (commands: ${COMMANDS.join(", ")})\n` +
        "Try 'switchboard --help'.\n",
    );
    return 2;
  }

  let values: { help?: boolean; version?: boolean };
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    const option = /'([^']+)'/.exec(message)?.[1];
    const problem =
      code === "ERR_PARSE_ARGS_UNKNOWN_OPTION" && option !== undefined
        ? `unknown option ${option}`
        : message.split("\n")[0];
    cli.stderr.write(`switchboard: ${problem}\nTry 'switchboard --help'.\n`);
    return 2;
  }
  if (values.version && !values.help) {
    cli.stdout.write(`${VERSION}\n`);
    return 0;
  }
  cli.stdout.write(HELP);
  return 0;
}

function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    signals: process,
    exit: (code) => process.exit(code),
  };
}

/**
 * True when this module is the program being run rather than an import (tests, the package's
 * bin link). Both paths go through realpath, so the symlink npm puts in node_modules/.bin
 * still counts.
 */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
  // Let stdout drain (pipes are asynchronous on some platforms), but do not let a handle left
  // open after shutdown keep the process alive: unref'd, this fires only if something else
  // still holds the event loop.
  setTimeout(() => process.exit(code), 1000).unref();
}
