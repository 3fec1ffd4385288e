#!/usr/bin/env node
import { parseArgs } from "node:util";
import { VERSION } from "../version.js";

const HELP = `switchboard ${VERSION}

A WebSocket application server for TypeScript.

Usage:
  switchboard [options]

Options:
  -h, --help      Show this help and exit.
  -v, --version   Print the version and exit.
`;

export function main(argv: string[]): number {
  let values: { help?: boolean; version?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    process.stderr.write(`switchboard: ${(error as Error).message}\nTry 'switchboard --help'.\n`);
    return 2;
  }
  if (values.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  process.stdout.write(HELP);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
