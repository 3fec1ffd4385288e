// A smoke test of the benchmark suite (`npm run bench`), so that it cannot rot: the C load
// generators compile with the system `cc`, and each of them runs for about half a second
// against the service server on bench/services, with the services on the I/O thread and in a
// worker, and ends with `ok: true` having done work. Each generator verifies everything it
// receives (every echo byte for byte, every delivery exactly once and in order, every upgrade
// and close), so `ok: true` is a correctness check of both sides. Nothing here is timed: the
// figures of a shared CI machine mean nothing.
//
// Without `cc` the test is skipped with a notice on a developer's machine, and fails under CI.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  availableGenerators,
  buildServers,
  compiledPath,
  compileGenerators,
  type GeneratorName,
  haveCc,
  INSTALL_HINT,
} from "../../bench/lib/build.js";
import { chart } from "../../bench/lib/chart.js";
import { runGenerator } from "../../bench/lib/generator.js";
import { machineInfo } from "../../bench/lib/machine.js";
import { buildDir as benchBuildDir, rootDir } from "../../bench/lib/proc.js";
import { markdown, type Report } from "../../bench/lib/report.js";
import type { SuiteResult } from "../../bench/lib/result.js";
import {
  type ServerSpec,
  serverNodeArgs,
  serverScript,
  startServer,
  stopServer,
} from "../../bench/lib/server.js";
import { ratioOf } from "../../bench/lib/stats.js";
import { type GeneratorLine, IdleGenerator } from "../../bench/suites/idle.js";
import type { Logger } from "../../src/server/logger.js";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";

const ROOT = fileURLToPath(new URL("../../bench/services", import.meta.url));
const RUN = { limitMs: 20_000 };
/** Short runs: the generators' own warm-up and a measured window of one second. */
const WINDOW = ["--warmup-ms", "100", "--duration-ms", "1000"];

const cc = await haveCc();
if (!cc) {
  const notice =
    "test/bench/loadgen.test.ts: no C compiler (`cc`), so the benchmark's load generators " +
    `were not compiled or run. ${INSTALL_HINT}`;
  if (process.env.CI === "true" || process.env.CI === "1") throw new Error(notice);
  console.warn(`\n*** SKIPPED: ${notice} ***\n`);
}

const silent: Logger = {
  error: (context, message) => console.error("error:", message, context),
  warn: () => {},
  info: () => {},
  debug: () => {},
};

let binaries: Partial<Record<GeneratorName, string>> = {};
let buildDir = "";

beforeAll(async () => {
  if (!cc) return;
  // A directory of its own: a benchmark running meanwhile uses the binaries in bench/.build.
  buildDir = mkdtempSync(path.join(os.tmpdir(), "switchboard-loadgen-"));
  binaries = await compileGenerators(availableGenerators(), buildDir);
}, 120_000);

afterAll(() => {
  if (buildDir) rmSync(buildDir, { recursive: true, force: true });
});

describe.skipIf(!cc).each<Isolation>(["main", "worker"])(
  "load generators against isolation %s",
  (isolation) => {
    let server: ServiceServer;
    beforeAll(async () => {
      // permessage-deflate enabled: it is negotiated only when the generator offers it (--deflate).
      server = await startServiceServer({
        root: ROOT,
        port: 0,
        host: "127.0.0.1",
        isolation,
        perMessageDeflate: true,
        logger: silent,
      });
    });
    afterAll(async () => {
      await server?.shutdown();
    });
    const port = () => new URL(server.url("/")).port;

    it("echo: 8 connections x 4 in flight, every echo verified", async () => {
      const result = await runGenerator<{ messages: number; latency_samples: number }>(
        binaries.echo!,
        ["--port", port(), "--size", "32", "--conns", "8", "--inflight", "4", ...WINDOW],
        RUN,
      );
      expect(result).toMatchObject({ ok: true });
      if (!result.ok) return;
      expect(result.messages).toBeGreaterThan(0);
      expect(result.latency_samples).toBeGreaterThan(0);
    });

    it("echo with permessage-deflate, 4 KiB, every echo inflated and verified", async () => {
      const result = await runGenerator<{ messages: number; negotiated: string }>(
        binaries.echo!,
        [
          "--port",
          port(),
          "--size",
          "4096",
          "--conns",
          "4",
          "--inflight",
          "2",
          "--deflate",
          ...WINDOW,
        ],
        RUN,
      );
      expect(result).toMatchObject({ ok: true });
      if (!result.ok) return;
      expect(result.messages).toBeGreaterThan(0);
      expect(result.negotiated).toContain("permessage-deflate");
    });

    it("broadcast: 4 publishers into 2 topics of 20 subscribers, every delivery verified", async () => {
      const result = await runGenerator<{
        deliveries: number;
        messages: number;
        verified_messages: number;
      }>(
        binaries.broadcast!,
        [
          "--port",
          port(),
          "--path",
          "/topic",
          "--publisher-query",
          "role=publisher",
          "--publishers",
          "4",
          "--topics",
          "2",
          "--subs",
          "40",
          "--window",
          "8",
          ...WINDOW,
        ],
        RUN,
      );
      expect(result).toMatchObject({ ok: true });
      if (!result.ok) return;
      // ok: every message sent reached every subscriber of its topic, once, in order.
      expect(result.deliveries).toBeGreaterThan(0);
      expect(result.verified_messages).toBeGreaterThan(0);
    });

    it("connect: 4 concurrent connectors, every upgrade and close checked", async () => {
      const result = await runGenerator<{ handshakes: number; errors: number }>(
        binaries.connect!,
        ["--port", port(), "--path", "/echo", "--concurrency", "4", ...WINDOW],
        RUN,
      );
      expect(result).toMatchObject({ ok: true, errors: 0 });
      if (!result.ok) return;
      expect(result.handshakes).toBeGreaterThan(0);
    });

    it.skipIf(!availableGenerators().includes("idle"))(
      "idle: 50 connections from 127.0.0.2 held open, then closed cleanly",
      async () => {
        const gen = new IdleGenerator({
          binary: binaries.idle!,
          port: Number(port()),
          source: "127.0.0.2",
          conns: 50,
          concurrency: 8,
        });
        try {
          const open = await gen.next("while opening", 15_000);
          expect(open).toMatchObject({ ok: true, phase: "open", conns: 50 });
          gen.close();
          const closed: GeneratorLine = await gen.next("while closing", 15_000);
          expect(closed).toMatchObject({ ok: true, phase: "closed", conns: 50, closed: 50 });
          expect(await gen.exited(5_000)).toBe("exit 0");
        } finally {
          gen.kill();
        }
      },
    );
  },
);

describe("how the servers run", () => {
  const spec: ServerSpec = {
    name: "switchboard worker",
    kind: "switchboard",
    isolation: "worker",
    script: serverScript("switchboard-service.ts"),
    args: ["--isolation", "worker"],
  };

  it("maps a server's TypeScript to its compiled JavaScript", () => {
    expect(compiledPath("bench/servers/ws-echo.ts", "/x/js")).toBe(
      "/x/js/bench/servers/ws-echo.js",
    );
    expect(compiledPath(path.join(rootDir, "src/index.ts"), "/x/js")).toBe("/x/js/src/index.js");
  });

  it("runs the TypeScript through tsx with --tsx, the preloads the same way", () => {
    const args = serverNodeArgs(spec, {
      mode: "tsx",
      nodeFlags: ["--expose-gc"],
      preload: [serverScript("memory-probe.ts")],
    });
    expect(args).toEqual([
      "--expose-gc",
      "--import",
      "tsx",
      "--import",
      pathToFileURL(path.join(rootDir, "bench/servers/memory-probe.ts")).href,
      path.join(rootDir, "bench/servers/switchboard-service.ts"),
      "--port",
      "0",
      "--isolation",
      "worker",
    ]);
  });

  // Compiled with tsc into a directory of its own (inside the repository, where node_modules
  // resolves), then started as every suite starts it, with the service in a worker thread (which
  // loads the compiled runtime and the compiled service), and echoing.
  it.skipIf(!cc)(
    "compiles the servers, which run with plain node: the service server with a worker, ws, and the connect floor",
    async () => {
      // A fresh clone has no bench/.build yet.
      mkdirSync(benchBuildDir, { recursive: true });
      const jsDir = mkdtempSync(path.join(benchBuildDir, "js-test-"));
      try {
        const build = await buildServers({ jsDir, force: true });
        expect(build.rebuilt).toBe(true);
        expect(existsSync(path.join(jsDir, "package.json"))).toBe(true);
        expect(existsSync(compiledPath("bench/services/echo.ts", jsDir))).toBe(true);
        const ws: ServerSpec = {
          name: "ws",
          kind: "ws",
          script: serverScript("ws-echo.ts"),
          args: [],
        };
        for (const s of [spec, ws]) {
          expect(serverNodeArgs(s, { jsDir })[0]).toBe(compiledPath(s.script, jsDir));
          const server = await startServer(s, { where: { note: "not pinned" }, jsDir });
          try {
            const result = await runGenerator<{ messages: number }>(
              binaries.echo!,
              ["--port", String(server.port), "--conns", "2", "--inflight", "2", ...WINDOW],
              RUN,
            );
            expect(result).toMatchObject({ ok: true });
          } finally {
            await stopServer(server);
          }
        }
        // The connect suite's floor is a measuring stick only if the generator's checks of
        // every upgrade, close frame and FIN pass against it too.
        const floor: ServerSpec = {
          name: "node:net floor",
          kind: "reference",
          script: serverScript("net-floor.ts"),
          args: [],
        };
        const server = await startServer(floor, { where: { note: "not pinned" }, jsDir });
        try {
          const result = await runGenerator<{ handshakes: number; errors: number }>(
            binaries.connect!,
            ["--port", String(server.port), "--path", "/echo", "--concurrency", "4", ...WINDOW],
            RUN,
          );
          expect(result).toMatchObject({ ok: true, errors: 0 });
          if (result.ok) expect(result.handshakes).toBeGreaterThan(0);
        } finally {
          await stopServer(server);
        }
      } finally {
        rmSync(jsDir, { recursive: true, force: true });
      }
    },
    120_000,
  );
});

describe("the report of a run", () => {
  // A made-up run: the report and the chart render it, with a target met and one missed.
  const figure = (server: string, value: number) => ({
    server,
    value,
    perServerCpuS: value,
    p50Ms: 1,
    p99Ms: 2,
    p999Ms: 3,
    serverCpuPct: 99,
    generatorCpuPct: 40,
    spreadPct: 0,
    runs: 1,
    flags: [],
    extra: {},
  });
  const c = {
    id: "32B-x16",
    label: "32 B x 16 in flight",
    metric: { name: "msg/s", higherIsBetter: true },
    figures: [figure("switchboard main", 400_000), figure("ws", 100_000), figure("uWS", 800_000)],
    runs: {},
  };
  const ratios = [
    ratioOf(
      "echo",
      c,
      c.figures,
      {},
      { ours: "switchboard main", peer: "ws", target: 3, chart: true },
      () => Number.NaN,
    )!,
    ratioOf(
      "echo",
      c,
      c.figures,
      {},
      { ours: "switchboard main", peer: "uWS", target: 0.6, chart: true },
      () => Number.NaN,
    )!,
  ];
  const suite: SuiteResult = {
    id: "echo",
    title: "Echo",
    description: "A made-up echo.",
    options: {},
    servers: [],
    cases: [c],
    ratios,
    notices: [],
    warnings: [],
    failed: false,
    elapsedS: 1,
  };
  const report: Report = {
    date: "2026-01-01T00:00:00.000Z",
    elapsed_s: 1,
    command: "npm run bench",
    argv: [],
    quick: false,
    machine: machineInfo("3.0.6"),
    placement: "server on CPU 0, generator on CPU 1",
    server_mode: "compiled",
    server_build: { dir: "bench/.build/js", rebuilt: false, ms: 5 },
    background_load_pct: 0,
    options: {
      shared: { quick: false, pin: true, isolation: ["main"], peers: ["ws", "uws"], tsx: false },
      suites: {},
    },
    suites: [suite],
    skipped: [],
    targets: ratios,
    notices: [],
  };

  it("judges the targets", () => {
    expect(ratios.map((r) => [r.ratio, r.verdict])).toEqual([
      [4, "met"],
      [0.5, "missed"],
    ]);
  });

  it("renders the markdown report and the chart", () => {
    const md = markdown(report, { chart: "latest.svg", docs: "benchmarks.md" });
    expect(md).toContain("![Switchboard's figures relative to ws and uWebSockets.js](latest.svg)");
    expect(md).toContain("| Echo | 32 B x 16 in flight: switchboard main / ws >= 3.00 | 4.00 |");
    expect(md).toContain("- **Servers:** compiled with tsc");
    const svg = chart(report);
    expect(svg).toMatch(/^<svg [^>]*width="800"/);
    expect(svg).toContain("4.00x \u2713");
    expect(svg).toContain("0.50x \u2717");
    expect(svg.trimEnd().endsWith("</svg>")).toBe(true);
  });
});
