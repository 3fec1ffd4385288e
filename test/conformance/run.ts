// Command-line runner for the conformance suite, for looking at results without vitest:
//
//   npx tsx test/conformance/run.ts [--peer ws|switchboard] [--verbose] [PATTERN ...]
//
// PATTERN selects cases like Autobahn's config: "6.4.*", "12.1.1", "7.*". Prints one line per
// case and, for every case that did not pass, the full report with the wire log.
import { allCases } from "./cases/index.js";
import { type PeerKind, peerKindFromEnv, startPeer } from "./peer.js";
import { runCase } from "./runner.js";

function matches(id: string, patterns: string[]): boolean {
  if (patterns.length === 0) return true;
  return patterns.some((p) => {
    const re = new RegExp(`^${p.replace(/\./g, "\\.").replace(/\*/g, ".*")}$`);
    return re.test(id);
  });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let kind: PeerKind = peerKindFromEnv();
  let verbose = false;
  const patterns: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--peer") kind = args[++i] === "ws" ? "ws" : "switchboard";
    else if (args[i] === "--verbose") verbose = true;
    else patterns.push(args[i]);
  }
  const peer = await startPeer(kind);
  const started = Date.now();
  const counts = new Map<string, number>();
  const failures: string[] = [];
  try {
    for (const def of allCases().filter((d) => matches(d.id, patterns))) {
      const run = await runCase(def, peer);
      const v = run.verdict;
      const key = v.pass
        ? v.behavior === "INFORMATIONAL"
          ? "INFORMATIONAL"
          : "OK"
        : `${v.behavior}/${v.behaviorClose}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      console.log(
        `${def.id.padEnd(9)} ${v.pass ? "pass" : "FAIL"} ${v.behavior.padEnd(16)} ${v.behaviorClose.padEnd(16)} ${String(run.durationMs).padStart(6)} ms  ${v.pass ? "" : v.result}`,
      );
      if (!v.pass || verbose) failures.push(run.report());
    }
  } finally {
    await peer.close();
  }
  for (const report of failures) console.log(`\n${report}`);
  console.log(
    `\npeer ${kind}: ${[...counts].map(([k, n]) => `${k}=${n}`).join(" ")} in ${Date.now() - started} ms`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
