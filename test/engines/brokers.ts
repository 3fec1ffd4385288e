// Real brokers for the engine tests: a redis-server or nats-server of our own on a free
// loopback port, started and stopped by the test. Where the binary is missing, a developer
// machine skips those tests with a notice; under CI=true a missing broker is a failure (CI
// installs them: .ci/run).
import { execFileSync } from "node:child_process";
import { join } from "node:path";

export { type Broker, startNats, startRedis } from "../../bench/lib/brokers.js";

/** The binary's path, or undefined; under CI=true its absence throws. */
export function brokerBinary(name: "redis-server" | "nats-server"): string | undefined {
  for (const dir of ["/usr/bin", "/usr/sbin", "/usr/local/bin"]) {
    const path = join(dir, name);
    try {
      execFileSync(path, ["--version"], { stdio: "ignore", timeout: 5_000 });
      return path;
    } catch {
      // Not here.
    }
  }
  if (process.env.CI === "true") {
    throw new Error(`${name} is not installed: CI must install it (.ci/run)`);
  }
  console.warn(
    `\n*** ${name} is not installed: its engine tests are SKIPPED on this machine ***\n`,
  );
  return undefined;
}
