/**
 * Checks that the fuzzers still catch bugs: plants known bugs ("mutants"), one at a time, in a
 * temporary copy of src/ and fuzz/, and runs the targets meant to catch each. A mutant that
 * survives means a fuzzer lost its teeth; a stale one means the code it patches has changed and
 * the mutant needs updating. src/ itself is never touched.
 *
 *   npx tsx fuzz/mutants.ts [mutant ...] [--seconds N] [--seed S]
 *
 * Several of these are the bugs the fuzzers originally found, put back.
 */
import { spawn } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

interface Mutant {
  name: string;
  /** The bug, in a phrase. */
  bug: string;
  file: string;
  find: string;
  replace: string;
  /** The targets expected to catch it. */
  targets: string[];
}

const MUTANTS: Mutant[] = [
  {
    name: "reentrant-receive",
    bug: "receive() from inside a callback parses before the rest of the current chunk",
    file: "src/protocol/protocol.ts",
    find: "if (this.parseState === INFLATING || this.draining || this.parsing) {",
    replace: "if (this.parseState === INFLATING || this.draining) {",
    targets: ["protocol-exact"],
  },
  {
    name: "inflated-reentry",
    bug: "receive() from a callback fired by inflated() parses ahead of input held back",
    file: "src/protocol/protocol.ts",
    find: "const wasParsing = this.parsing;\n      this.parsing = true;\n      try {\n        this.deliverMessage();\n      } finally {\n        this.parsing = wasParsing;\n      }",
    replace: "this.deliverMessage();",
    targets: ["protocol-exact"],
  },
  {
    name: "compressed-wire-limit",
    bug: "compressed messages limited by their wire size, refusing valid ones near the limit",
    file: "src/protocol/protocol.ts",
    find: "const wireLimit = compressed ? maxDeflatedSize(this.maxMessageSize) : this.maxMessageSize;",
    replace: "const wireLimit = this.maxMessageSize;",
    targets: ["protocol-exact"],
  },
  {
    name: "compressed-held-bytes",
    bug: "a compressed message's buffered bytes counted by wire size, not inflated size",
    file: "src/protocol/protocol.ts",
    find: "const held = compressed ? this.messageSize + length : this.wireSize + length;",
    replace: "const held = this.wireSize + length;",
    targets: ["protocol-exact"],
  },
  {
    name: "mask-phase",
    bug: "unmasking restarts the key at every read of a payload split across reads",
    file: "src/protocol/protocol.ts",
    find: "this.maskPhase = applyMask(piece, this.frameMask, 0, take, this.maskPhase);",
    replace: "this.maskPhase = applyMask(piece, this.frameMask, 0, take, 0);",
    targets: ["protocol-exact"],
  },
  {
    name: "pong-after-close",
    bug: "pings answered after our close frame was sent",
    file: "src/protocol/protocol.ts",
    find: 'if (this.close.state !== "open") return; // no pongs after our close frame (section 5.5.1)',
    replace: "",
    targets: ["protocol-exact"],
  },
  {
    name: "control-length",
    bug: "control frames of 126 bytes accepted",
    file: "src/protocol/protocol.ts",
    find: "if (length > MAX_CONTROL_PAYLOAD) {",
    replace: "if (length > MAX_CONTROL_PAYLOAD + 1) {",
    targets: ["protocol-mutate", "protocol-diff"],
  },
  {
    name: "continuation-rsv1",
    bug: "RSV1 accepted on continuation frames",
    file: "src/protocol/protocol.ts",
    find: 'if (rsv1) return this.failed("WS_ERR_RESERVED_BITS", "RSV1 set on a continuation frame");',
    replace: "",
    targets: ["protocol-diff"],
  },
  {
    name: "close-code-1005",
    bug: "close codes 1004-1006, which may never be sent, accepted on the wire",
    file: "src/protocol/protocol.ts",
    find: "if (!isValidWireCloseCode(code)) {\n        this.fail(",
    replace:
      "if (!isValidWireCloseCode(code) && (code < 1004 || code > 1006)) {\n        this.fail(",
    targets: ["protocol-diff"],
  },
  {
    name: "text-ends-mid-character",
    bug: "a text message ending inside a character accepted",
    file: "src/protocol/protocol.ts",
    find: "if (this.messageOpcode === Opcode.Text && !this.utf8.complete) {",
    replace: "if (false) {",
    targets: ["protocol-diff"],
  },
  {
    name: "utf8-overlong",
    bug: "overlong 2-byte leads C0 and C1 accepted",
    file: "src/protocol/utf8.ts",
    find: "if (c < 0xc2) return -1;",
    replace: "if (c < 0xc0) return -1;",
    targets: ["utf8"],
  },
  {
    name: "utf8-surrogates",
    bug: "UTF-8 encoded surrogates (ED A0..BF) accepted",
    file: "src/protocol/utf8.ts",
    find: "hi = c === 0xed ? 0x9f : 0xbf;",
    replace: "hi = 0xbf;",
    targets: ["utf8"],
  },
  {
    name: "utf8-past-10ffff",
    bug: "code points past U+10FFFF (F4 90..) accepted",
    file: "src/protocol/utf8.ts",
    find: "hi = c === 0xf4 ? 0x8f : 0xbf;",
    replace: "hi = 0xbf;",
    targets: ["utf8"],
  },
  {
    name: "quoted-non-token",
    bug: "quoted extension parameter values that are not tokens accepted",
    file: "src/protocol/extension-header.ts",
    find: "if (!isToken(value)) throw invalid();",
    replace: "",
    targets: ["handshake-parse"],
  },
  {
    name: "server-window-cap",
    bug: "the server ignores the client's server_max_window_bits",
    file: "src/protocol/permessage-deflate.ts",
    find: "serverMaxWindowBits = Math.min(\n        serverMaxWindowBits ?? DEFAULT_WINDOW_BITS,\n        options.serverMaxWindowBits,\n      );",
    replace: "serverMaxWindowBits = options.serverMaxWindowBits;",
    targets: ["handshake-negotiate"],
  },
  {
    name: "deflate-window",
    bug: "the compressor uses a 15-bit window whatever was agreed",
    file: "src/connection/deflate.ts",
    find: "windowBits: zlibWindowBits(this.#ourWindowBits),",
    replace: "windowBits: 15,",
    targets: ["handshake-negotiate"],
  },
  {
    name: "deflate-context-takeover",
    bug: "the compressor keeps its window across messages despite no_context_takeover",
    file: "src/connection/deflate.ts",
    find: "if (this.#ourNoContextTakeover) stream.reset();",
    replace: "",
    targets: ["handshake-negotiate"],
  },
  {
    name: "paused-reading-deaf",
    bug: "reading paused for backpressure resumes only on 'drain' (a connection goes deaf)",
    file: "src/connection/connection.ts",
    find: "const written = this.readingPaused ? this.onWritten : undefined;",
    replace: "const written = undefined;",
    targets: ["connection"],
  },
  {
    name: "sends-after-fin",
    bug: "after the peer's FIN the connection stays open and accepts sends that cannot arrive",
    file: "src/connection/connection.ts",
    find: "cannot drain.\n    this.endTransport();",
    replace: "cannot drain.\n    if (!this.socket.destroyed) this.socket.end();",
    targets: ["connection"],
  },
  {
    name: "write-after-fin",
    bug: "on the peer's FIN the socket is ended before this turn's output is flushed",
    file: "src/connection/connection.ts",
    find: "cannot drain.\n    this.endTransport();",
    replace:
      "cannot drain.\n    this.closeRequested = true;\n    this.stopHeartbeat();\n    this.sender.stop();\n    if (!this.socket.destroyed) this.socket.end();\n    this.armCloseTimer();",
    targets: ["connection"],
  },
  {
    name: "ping-after-fin",
    bug: "ping() still queues a frame once the connection is closing (written after the end)",
    file: "src/connection/connection.ts",
    find: 'return this.readyState === "open" && this.core.ping(payload);',
    replace: "return this.core.ping(payload);",
    targets: ["connection"],
  },
  {
    name: "stream-cut-short-resolves",
    bug: "sendStream() resolves when the closing handshake cut the message short",
    file: "src/connection/sender.ts",
    find: "if (this.stopped || !this.core.sendFragment(payload, isBinary, fin, deflate)) throw notSent();",
    replace:
      "if (this.stopped) return;\n    this.core.sendFragment(payload, isBinary, fin, deflate);",
    targets: ["connection"],
  },
  {
    name: "codec-error-after-close",
    bug: "a compression cut off by the closing connection reported as an error",
    file: "src/connection/sender.ts",
    find: 'if (this.stopped || this.core.state !== "open" || error instanceof DeflateClosedError) {',
    replace: "if (this.stopped) {",
    targets: ["connection"],
  },
  {
    name: "close-jumps-queue",
    bug: "close() sends its frame ahead of messages still queued",
    file: "src/connection/sender.ts",
    find: "  close(code: number | undefined, reason: string): void {\n    if (this.stopped) return;\n    if (!this.busy && this.queue.length === 0) {",
    replace:
      "  close(code: number | undefined, reason: string): void {\n    if (this.stopped) return;\n    if (true) {",
    targets: ["connection"],
  },
];

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

function parseArguments(argv: string[]): { names: string[]; seconds: number; seed: number } {
  const args = { names: [] as string[], seconds: 20, seed: Date.now() % 2 ** 31 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--seconds") args.seconds = Number(argv[++i]);
    else if (argv[i] === "--seed") args.seed = Number(argv[++i]);
    else args.names.push(argv[i]);
  }
  return args;
}

/** Runs fuzz/run.ts in the copy; resolves with its exit code and output. */
function fuzz(
  copy: string,
  targets: string[],
  seconds: number,
  seed: number,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [
        ...process.execArgv,
        "fuzz/run.ts",
        ...targets,
        "--seconds",
        String(seconds),
        "--seed",
        String(seed),
      ],
      { cwd: copy, stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk;
    });
    child.on("exit", (code) => resolve({ code, output }));
  });
}

/** The first line of what broke, for the summary. */
function firstInvariant(output: string): string {
  const lines = output.split("\n");
  const at = lines.findIndex((l) => l.includes("invariant broken:"));
  return at >= 0 && lines[at + 1] ? lines[at + 1].trim().slice(0, 110) : "";
}

async function main(): Promise<void> {
  const args = parseArguments(process.argv.slice(2));
  const chosen =
    args.names.length === 0 ? MUTANTS : MUTANTS.filter((m) => args.names.includes(m.name));
  if (chosen.length === 0) {
    console.error(`no such mutant; known: ${MUTANTS.map((m) => m.name).join(", ")}`);
    process.exit(2);
  }
  const copy = mkdtempSync(join(tmpdir(), "switchboard-mutants-"));
  console.log(`mutants: seed ${args.seed}, ${args.seconds} s per target, working copy ${copy}`);
  let survived = 0;
  let stale = 0;
  try {
    cpSync(join(root, "src"), join(copy, "src"), { recursive: true });
    cpSync(join(root, "fuzz"), join(copy, "fuzz"), { recursive: true });
    cpSync(join(root, "package.json"), join(copy, "package.json"));
    cpSync(join(root, "tsconfig.json"), join(copy, "tsconfig.json"));
    symlinkSync(join(root, "node_modules"), join(copy, "node_modules"), "dir");
    for (const mutant of chosen) {
      const file = join(copy, mutant.file);
      const original = readFileSync(file, "utf8");
      const occurrences = original.split(mutant.find).length - 1;
      if (occurrences !== 1) {
        stale++;
        console.log(
          `${mutant.name.padEnd(26)} STALE     the text to patch occurs ${occurrences} times in ${mutant.file}`,
        );
        continue;
      }
      writeFileSync(file, original.replace(mutant.find, mutant.replace));
      const started = Date.now();
      const { code, output } = await fuzz(copy, mutant.targets, args.seconds, args.seed);
      writeFileSync(file, original);
      const seconds = ((Date.now() - started) / 1000).toFixed(0).padStart(4);
      const failedTargets = mutant.targets.filter((t) =>
        new RegExp(`^${t}\\s+FAILED`, "m").test(output),
      );
      if (code === 1 && failedTargets.length > 0) {
        console.log(
          `${mutant.name.padEnd(26)} caught    ${seconds} s  by ${failedTargets.join(", ")}: ${firstInvariant(output)}`,
        );
      } else {
        survived++;
        console.log(
          `${mutant.name.padEnd(26)} SURVIVED  ${seconds} s  (${mutant.bug}; exit ${code})`,
        );
      }
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
  const caught = chosen.length - survived - stale;
  console.log(
    `mutants: ${caught} of ${chosen.length} caught, ${survived} survived, ${stale} stale`,
  );
  if (survived > 0 || stale > 0) process.exitCode = 1;
}

await main();
