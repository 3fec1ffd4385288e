import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import {
  type ConfigResult,
  type ConfigSource,
  defineConfig,
  type ResolvedConfig,
  resolveConfig,
  type SwitchboardConfig,
} from "../../src/cli/config.js";

const base = mkdtempSync(join(tmpdir(), "switchboard-config-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let dirCount = 0;
/** A fresh directory holding the given files (paths relative to it). */
function makeDir(files: Record<string, string> = {}): string {
  dirCount += 1;
  const dir = join(base, `case-${dirCount}`);
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return dir;
}

const json = (config: unknown): string => JSON.stringify(config);

async function resolveOk(
  argv: string[],
  env: Record<string, string> = {},
  cwd = makeDir(),
): Promise<ResolvedConfig> {
  const result = await resolveConfig({ argv, env, cwd });
  if (!result.ok) throw new Error(`expected success, got: ${result.message}`);
  return result.config;
}

async function resolveFail(
  argv: string[],
  env: Record<string, string> = {},
  cwd = makeDir(),
): Promise<Extract<ConfigResult, { ok: false }>> {
  const result = await resolveConfig({ argv, env, cwd });
  if (result.ok) throw new Error(`expected a failure, got: ${JSON.stringify(result.config)}`);
  expect(result.message.split("\n")).toHaveLength(1);
  expect(result.message.startsWith("switchboard: ")).toBe(true);
  return result;
}

describe("resolveConfig: defaults", () => {
  it("uses the defaults when nothing is set", async () => {
    const cwd = makeDir();
    const config = await resolveOk([], {}, cwd);
    expect(config).toEqual({
      root: join(cwd, "services"),
      port: 8080,
      host: "127.0.0.1",
      watch: false,
      preload: false,
      logLevel: "info",
      shutdownTimeoutMs: 10_000,
      sources: {
        root: "default",
        port: "default",
        host: "default",
        watch: "default",
        preload: "default",
        logLevel: "default",
        shutdownTimeoutMs: "default",
      },
    });
  });

  it("ignores unrelated and empty environment variables", async () => {
    const config = await resolveOk([], {
      SWITCHBOARD_PORT: "",
      SWITCHBOARD_WATCH: "",
      SWITCHBOARD_UNKNOWN: "x",
      PORT: "1234",
    });
    expect(config.port).toBe(8080);
    expect(config.watch).toBe(false);
  });
});

describe("resolveConfig: precedence is flag, then environment, then file, then default", () => {
  // Every subset of {flag, env, file} for one key; the highest-ranked layer present must win.
  const layers = ["flag", "env", "file"] as const;
  const subsets = Array.from({ length: 8 }, (_, mask) => layers.filter((_, i) => mask & (1 << i)));

  for (const present of subsets) {
    const expected: ConfigSource = present.length > 0 ? present[0] : "default";
    it(`port from {${present.join(", ")}} comes from ${expected}`, async () => {
      const ports = { flag: 1001, env: 1002, file: 1003, default: 8080 };
      const cwd = makeDir(
        present.includes("file") ? { "switchboard.config.json": json({ port: ports.file }) } : {},
      );
      const argv = present.includes("flag") ? ["--port", String(ports.flag)] : [];
      const env: Record<string, string> = present.includes("env")
        ? { SWITCHBOARD_PORT: String(ports.env) }
        : {};
      const config = await resolveOk(argv, env, cwd);
      expect(config.port).toBe(ports[expected]);
      expect(config.sources.port).toBe(expected);
    });

    it(`host, log level and static from {${present.join(", ")}} come from ${expected}`, async () => {
      const cwd = makeDir(
        present.includes("file")
          ? {
              "switchboard.config.json": json({
                host: "file.example",
                logLevel: "warn",
                static: "file-static",
              }),
            }
          : {},
      );
      const argv = present.includes("flag")
        ? ["--host", "flag.example", "--log-level", "debug", "--static", "flag-static"]
        : [];
      const env: Record<string, string> = present.includes("env")
        ? {
            SWITCHBOARD_HOST: "env.example",
            SWITCHBOARD_LOG_LEVEL: "error",
            SWITCHBOARD_STATIC: "env-static",
          }
        : {};
      const config = await resolveOk(argv, env, cwd);
      const host = { flag: "flag.example", env: "env.example", file: "file.example" };
      const level = { flag: "debug", env: "error", file: "warn" };
      if (expected === "default") {
        expect(config.host).toBe("127.0.0.1");
        expect(config.logLevel).toBe("info");
        expect(config.static).toBeUndefined();
      } else {
        expect(config.host).toBe(host[expected]);
        expect(config.logLevel).toBe(level[expected]);
        expect(config.static).toBe(join(cwd, `${expected}-static`));
      }
    });

    it(`root from {${present.join(", ")}} comes from ${expected}`, async () => {
      // The file lives in a subdirectory so "relative to the file" and "relative to the
      // working directory" give different answers.
      const cwd = makeDir(
        present.includes("file") ? { "conf/switchboard.json": json({ root: "file-root" }) } : {},
      );
      const argv = [
        ...(present.includes("file") ? ["--config", "conf/switchboard.json"] : []),
        ...(present.includes("flag") ? ["flag-root"] : []),
      ];
      const env: Record<string, string> = present.includes("env")
        ? { SWITCHBOARD_ROOT: "env-root" }
        : {};
      const config = await resolveOk(argv, env, cwd);
      const roots = {
        flag: join(cwd, "flag-root"),
        env: join(cwd, "env-root"),
        file: join(cwd, "conf", "file-root"),
        default: join(cwd, "services"),
      };
      expect(config.root).toBe(roots[expected]);
      expect(config.sources.root).toBe(expected);
    });
  }

  it("lets a false from the environment override a true from the file", async () => {
    const cwd = makeDir({ "switchboard.config.json": json({ watch: true, preload: true }) });
    const config = await resolveOk(
      [],
      { SWITCHBOARD_WATCH: "0", SWITCHBOARD_PRELOAD: "false" },
      cwd,
    );
    expect(config.watch).toBe(false);
    expect(config.preload).toBe(false);
    expect(config.sources.watch).toBe("env");
  });

  it("lets a flag switch on what the environment switched off", async () => {
    const config = await resolveOk(["--watch", "--preload"], {
      SWITCHBOARD_WATCH: "0",
      SWITCHBOARD_PRELOAD: "0",
    });
    expect(config.watch).toBe(true);
    expect(config.preload).toBe(true);
    expect(config.sources.preload).toBe("flag");
  });

  it("accepts 1, 0, true and false in any case for boolean variables", async () => {
    for (const [text, value] of [
      ["1", true],
      ["true", true],
      ["TRUE", true],
      ["0", false],
      ["false", false],
      ["False", false],
    ] as const) {
      const config = await resolveOk([], { SWITCHBOARD_WATCH: text, SWITCHBOARD_PRELOAD: text });
      expect(config.watch, text).toBe(value);
      expect(config.preload, text).toBe(value);
    }
  });

  it("takes an IPv6 host with or without URL brackets", async () => {
    expect((await resolveOk(["--host", "[::1]"])).host).toBe("::1");
    expect((await resolveOk([], { SWITCHBOARD_HOST: "::" })).host).toBe("::");
  });

  it("resolves absolute paths as given", async () => {
    const config = await resolveOk(["/srv/services", "--static", "/srv/public"]);
    expect(config.root).toBe("/srv/services");
    expect(config.static).toBe("/srv/public");
  });

  it("accepts -p and -c as short forms and --opt=value", async () => {
    const cwd = makeDir({ "my.json": json({ host: "from.file" }) });
    const config = await resolveOk(["-p", "0", "-c", "my.json", "--log-level=trace"], {}, cwd);
    expect(config.port).toBe(0);
    expect(config.host).toBe("from.file");
    expect(config.logLevel).toBe("trace");
  });
});

describe("resolveConfig: the config file", () => {
  const everything: Required<SwitchboardConfig> = {
    root: "svc",
    port: 9000,
    host: "::1",
    static: "public",
    tlsCert: "tls/cert.pem",
    tlsKey: "/etc/tls/key.pem",
    engine: "redis://127.0.0.1:6379/2",
    workers: 4,
    watch: true,
    preload: true,
    logLevel: "debug",
    perMessageDeflate: true,
    maxMessageSize: 1_048_576,
    heartbeat: { interval: 30_000, timeout: 10_000 },
    closeTimeout: 2000,
    isolation: "process",
    maxHeapMb: 256,
    watchdogMs: 5000,
    shutdownTimeoutMs: 3000,
    topics: [
      {
        pattern: "room:*",
        history: { limit: 100, ttlMs: 60_000 },
        announce: true,
        envelope: true,
        slowConsumer: { maxBufferedBytes: 1_048_576, action: "close", closeCode: 1013 },
      },
      { pattern: "feed" },
    ],
  };

  it("rejects a topic policy with a bad entry, naming the key", async () => {
    const failure = await resolveFail(
      [],
      {},
      makeDir({
        "switchboard.config.json": json({
          topics: [{ pattern: "a", slowConsumer: { maxBufferedBytes: 10, action: "explode" } }],
        }),
      }),
    );
    expect(failure.message).toContain("switchboard.config.json");
    expect(failure.message).toContain("topics");
  });

  it("reads every key from switchboard.config.json", async () => {
    const cwd = makeDir({ "switchboard.config.json": json(everything) });
    const config = await resolveOk([], {}, cwd);
    expect(config).toMatchObject({
      ...everything,
      root: join(cwd, "svc"),
      static: join(cwd, "public"),
      // Relative to the file's directory, as root and static are; absolute ones as written.
      tlsCert: join(cwd, "tls/cert.pem"),
      tlsKey: "/etc/tls/key.pem",
      configFile: join(cwd, "switchboard.config.json"),
    });
    for (const key of Object.keys(everything)) {
      expect(config.sources[key as keyof SwitchboardConfig], key).toBe("file");
    }
  });

  it("wants a TLS certificate and key together, naming the one given and where from", async () => {
    const flag = await resolveFail(["--tls-cert", "cert.pem"]);
    expect(flag).toMatchObject({ exitCode: 2, code: "SB_ERR_USAGE" });
    expect(flag.message).toBe("switchboard: --tls-cert needs a key (--tls-key) as well");
    const env = await resolveFail([], { SWITCHBOARD_TLS_KEY: "key.pem" });
    expect(env).toMatchObject({ exitCode: 1, code: "SB_ERR_CONFIG_ENV" });
    expect(env.message).toContain("needs a certificate (--tls-cert)");
    const file = await resolveFail(
      [],
      {},
      makeDir({ "switchboard.config.json": json({ tlsCert: "c.pem" }) }),
    );
    expect(file).toMatchObject({ exitCode: 1, code: "SB_ERR_CONFIG_FILE" });
    // Given in two places, the pair is complete.
    const both = await resolveOk(["--tls-key", "k.pem"], { SWITCHBOARD_TLS_CERT: "c.pem" }, "/srv");
    expect([both.tlsCert, both.tlsKey]).toEqual(["/srv/c.pem", "/srv/k.pem"]);
  });

  it("takes the engine as memory or a Redis URL, and names the rule otherwise", async () => {
    expect((await resolveOk(["--engine", "rediss://cache.internal:6380"])).engine).toBe(
      "rediss://cache.internal:6380",
    );
    expect((await resolveOk([], { SWITCHBOARD_ENGINE: "memory" })).engine).toBe("memory");
    expect((await resolveOk(["--engine", "nats://10.0.0.7:4222"])).engine).toBe(
      "nats://10.0.0.7:4222",
    );
    const bad = await resolveFail(["--engine", "postgres://db"]);
    expect(bad.message).toBe(
      'switchboard: --engine: must be memory, or a redis://, rediss:// or nats:// URL, not "postgres://db"',
    );
  });

  it("accepts heartbeat: false", async () => {
    const cwd = makeDir({ "switchboard.config.json": json({ heartbeat: false }) });
    expect((await resolveOk([], {}, cwd)).heartbeat).toBe(false);
  });

  it("loads a TypeScript config file with defineConfig, without a build step", async () => {
    const configModule = pathToFileURL(join(import.meta.dirname, "../../src/cli/config.ts")).href;
    const cwd = makeDir({
      "switchboard.config.ts": [
        `import { defineConfig } from ${JSON.stringify(configModule)};`,
        "const port: number = 9100 + 1;",
        'export default defineConfig({ port, isolation: "main", heartbeat: false });',
      ].join("\n"),
    });
    const config = await resolveOk([], {}, cwd);
    expect(config.port).toBe(9101);
    expect(config.isolation).toBe("main");
    expect(config.heartbeat).toBe(false);
    expect(config.configFile).toBe(join(cwd, "switchboard.config.ts"));
  });

  it("loads .mts, .js and .mjs config files", async () => {
    const cases = {
      "switchboard.config.mts": "export default { port: 9201 as number };",
      "switchboard.config.mjs": "export default { port: 9202 };",
      // A .js file outside a "type": "module" package is CommonJS.
      "switchboard.config.js": "module.exports = { port: 9203 };",
    };
    for (const [name, source] of Object.entries(cases)) {
      const cwd = makeDir({ [name]: source });
      const config = await resolveOk([], {}, cwd);
      expect(config.configFile, name).toBe(join(cwd, name));
      expect(config.port, name).toBe(Number(/92\d\d/.exec(source)?.[0]));
    }
  });

  it("discovers the first of .ts, .mts, .js, .mjs, .json in the working directory", async () => {
    const names = [
      "switchboard.config.ts",
      "switchboard.config.mts",
      "switchboard.config.js",
      "switchboard.config.mjs",
      "switchboard.config.json",
    ];
    const sources: Record<string, string> = {
      "switchboard.config.ts": "export default { port: 9300 };",
      "switchboard.config.mts": "export default { port: 9301 };",
      "switchboard.config.js": "module.exports = { port: 9302 };",
      "switchboard.config.mjs": "export default { port: 9303 };",
      "switchboard.config.json": json({ port: 9304 }),
    };
    // Drop the winner one at a time: the next one in the order must take over.
    for (let first = 0; first < names.length; first++) {
      const present = names.slice(first);
      const cwd = makeDir(Object.fromEntries(present.map((name) => [name, sources[name]])));
      const config = await resolveOk([], {}, cwd);
      expect(config.configFile).toBe(join(cwd, names[first]));
      expect(config.port).toBe(9300 + first);
    }
  });

  it("prefers --config over a discovered file", async () => {
    const cwd = makeDir({
      "switchboard.config.json": json({ port: 9400 }),
      "other.json": json({ port: 9401 }),
    });
    const config = await resolveOk(["--config", "other.json"], {}, cwd);
    expect(config.port).toBe(9401);
    expect(config.configFile).toBe(join(cwd, "other.json"));
  });

  it("reads no file when there is none", async () => {
    const config = await resolveOk([]);
    expect(config.configFile).toBeUndefined();
  });
});

describe("resolveConfig: errors name the key and where it came from", () => {
  const fileCases: Array<[string, unknown, string]> = [
    ["port", 70_000, '"port" must be an integer between 0 and 65535, not 70000'],
    ["port", 80.5, '"port" must be an integer between 0 and 65535, not 80.5'],
    ["port", "8080", '"port" must be an integer between 0 and 65535, not "8080"'],
    ["host", "", '"host" must be a host name or IP address'],
    ["root", 5, '"root" must be a non-empty path, not 5'],
    ["static", "", '"static" must be a non-empty path, not ""'],
    ["watch", "yes", '"watch" must be a boolean, not "yes"'],
    ["preload", 1, '"preload" must be a boolean, not 1'],
    ["logLevel", "loud", '"logLevel" must be one of fatal, error, warn, info, debug, trace'],
    ["perMessageDeflate", "on", '"perMessageDeflate" must be a boolean'],
    ["maxMessageSize", 0, '"maxMessageSize" must be a positive integer (bytes), not 0'],
    ["heartbeat", true, '"heartbeat" must be false or { interval, timeout }'],
    ["heartbeat", { interval: "1s", timeout: 5 }, '"heartbeat" must be false or'],
    ["heartbeat", { interval: 1000 }, '"heartbeat" must be false or'],
    ["closeTimeout", -1, '"closeTimeout" must be a positive integer (milliseconds), not -1'],
    ["isolation", "thread", '"isolation" must be one of worker, process, main, not "thread"'],
    ["maxHeapMb", 1.5, '"maxHeapMb" must be a positive integer (MiB), not 1.5'],
    ["watchdogMs", null, '"watchdogMs" must be a positive integer (milliseconds), not null'],
    ["shutdownTimeoutMs", "10s", '"shutdownTimeoutMs" must be a positive integer'],
  ];

  for (const [key, value, expected] of fileCases) {
    it(`config file ${key}: ${JSON.stringify(value)}`, async () => {
      const cwd = makeDir({ "switchboard.config.json": json({ [key]: value }) });
      const failure = await resolveFail([], {}, cwd);
      expect(failure.exitCode).toBe(1);
      expect(failure.code).toBe("SB_ERR_CONFIG_FILE");
      expect(failure.message).toContain(
        `switchboard: config file switchboard.config.json: ${expected}`,
      );
    });
  }

  it("names unknown keys in the file", async () => {
    const one = await resolveFail(
      [],
      {},
      makeDir({ "switchboard.config.json": json({ prot: 1 }) }),
    );
    expect(one.message).toBe(
      'switchboard: config file switchboard.config.json: unknown key "prot"',
    );
    const two = await resolveFail(
      [],
      {},
      makeDir({ "switchboard.config.json": json({ port: 1, prot: 1, hots: "x" }) }),
    );
    expect(two.message).toBe(
      'switchboard: config file switchboard.config.json: unknown keys "prot", "hots"',
    );
    const nested = await resolveFail(
      [],
      {},
      makeDir({
        "switchboard.config.json": json({ heartbeat: { interval: 1, timeout: 1, jitter: 2 } }),
      }),
    );
    expect(nested.message).toBe(
      'switchboard: config file switchboard.config.json: unknown key "heartbeat.jitter"',
    );
  });

  it("names the file by its path relative to the working directory", async () => {
    const cwd = makeDir({ "etc/sb.json": json({ port: -5 }) });
    const failure = await resolveFail(["-c", "etc/sb.json"], {}, cwd);
    expect(failure.message).toBe(
      'switchboard: config file etc/sb.json: "port" must be an integer between 0 and 65535, not -5',
    );
  });

  it("refuses a file whose content is not an object of settings", async () => {
    for (const [name, source, expected] of [
      ["switchboard.config.json", "[1, 2]", "must hold an object of settings, not [1,2]"],
      ["switchboard.config.json", "null", "must hold an object of settings, not null"],
      ["switchboard.config.mjs", "export default 42;", "must export an object"],
      ["switchboard.config.mjs", "export const port = 1;", "has no default export"],
    ]) {
      const failure = await resolveFail([], {}, makeDir({ [name]: source }));
      expect(failure.exitCode).toBe(1);
      expect(failure.message, source).toContain(`switchboard: config file ${name}: ${expected}`);
    }
  });

  it("reports a file that cannot be loaded with exit code 1", async () => {
    const cases = [
      ["switchboard.config.json", "{ port: 1 }", "cannot load: "],
      ["switchboard.config.mjs", 'throw new Error("boom\\nsecond line");', "cannot load: boom"],
      ["switchboard.config.ts", "export default { port: };", "cannot load: "],
    ];
    for (const [name, source, expected] of cases) {
      const failure = await resolveFail([], {}, makeDir({ [name]: source }));
      expect(failure.exitCode, name).toBe(1);
      expect(failure.message, name).toContain(`switchboard: config file ${name}: ${expected}`);
    }
  });

  it("refuses a config file type it cannot read", async () => {
    const failure = await resolveFail(["-c", "sb.yaml"], {}, makeDir({ "sb.yaml": "port: 1" }));
    expect(failure.exitCode).toBe(1);
    expect(failure.message).toBe(
      "switchboard: config file sb.yaml: unsupported file type (use .ts, .mts, .js, .mjs or .json)",
    );
  });

  it("refuses a --config that does not name a file, with exit code 2", async () => {
    const cwd = makeDir({ "dir/x.txt": "" });
    const missing = await resolveFail(["--config", "nope.json"], {}, cwd);
    expect(missing).toEqual({
      ok: false,
      exitCode: 2,
      code: "SB_ERR_USAGE",
      message: "switchboard: --config: no such file: nope.json",
    });
    const directory = await resolveFail(["--config", "dir"], {}, cwd);
    expect(directory.message).toBe("switchboard: --config: not a file: dir");
  });

  it("names the variable for a bad environment value, with exit code 1", async () => {
    const cases: Array<[string, string, string]> = [
      ["SWITCHBOARD_PORT", "abc", 'must be an integer between 0 and 65535, not "abc"'],
      ["SWITCHBOARD_PORT", "65536", 'must be an integer between 0 and 65535, not "65536"'],
      ["SWITCHBOARD_PORT", "0x50", 'must be an integer between 0 and 65535, not "0x50"'],
      ["SWITCHBOARD_PORT", " 80", 'must be an integer between 0 and 65535, not " 80"'],
      ["SWITCHBOARD_WATCH", "yes", 'must be 1, 0, true or false, not "yes"'],
      ["SWITCHBOARD_PRELOAD", "2", 'must be 1, 0, true or false, not "2"'],
      ["SWITCHBOARD_LOG_LEVEL", "loud", "must be one of fatal, error, warn, info, debug, trace"],
      ["SWITCHBOARD_HOST", "a b", "must be a host name or IP address"],
    ];
    for (const [name, value, expected] of cases) {
      const failure = await resolveFail([], { [name]: value });
      expect(failure.exitCode, name).toBe(1);
      expect(failure.code, name).toBe("SB_ERR_CONFIG_ENV");
      expect(failure.message, `${name}=${value}`).toContain(`switchboard: ${name}: ${expected}`);
    }
  });

  it("names the flag for a bad flag value, with exit code 2", async () => {
    const cases: Array<[string[], string]> = [
      [["--port", "abc"], 'switchboard: --port: must be an integer between 0 and 65535, not "abc"'],
      [["-p", "70000"], "switchboard: --port: must be an integer between 0 and 65535, not 70000"],
      [["--port=-1"], 'switchboard: --port: must be an integer between 0 and 65535, not "-1"'],
      [
        ["--port", "80.5"],
        'switchboard: --port: must be an integer between 0 and 65535, not "80.5"',
      ],
      [["--log-level", "loud"], "switchboard: --log-level: must be one of fatal, error, warn"],
      [
        ["--host="],
        'switchboard: --host: must be a host name or IP address (no spaces or slashes), not ""',
      ],
      [["--static="], 'switchboard: --static: must be a non-empty path, not ""'],
      [[""], 'switchboard: [root]: must be a non-empty path, not ""'],
    ];
    for (const [argv, expected] of cases) {
      const failure = await resolveFail(argv);
      expect(failure.exitCode, argv.join(" ")).toBe(2);
      expect(failure.code, argv.join(" ")).toBe("SB_ERR_USAGE");
      expect(failure.message, argv.join(" ")).toContain(expected);
    }
  });

  it("refuses unknown flags, missing values and extra arguments with exit code 2", async () => {
    const cases: Array<[string[], string]> = [
      [["--frobnicate"], "switchboard: unknown option --frobnicate"],
      [["-x"], "switchboard: unknown option -x"],
      [["--port"], "switchboard: --port needs a value"],
      [["--port", "--watch"], "switchboard: --port needs a value"],
      [["--watch=1"], "switchboard: --watch does not take a value"],
      [["a", "b"], "switchboard: serve takes one service root, got 2: a b"],
    ];
    for (const [argv, expected] of cases) {
      const failure = await resolveFail(argv);
      expect(failure.exitCode, argv.join(" ")).toBe(2);
      expect(failure.code, argv.join(" ")).toBe("SB_ERR_USAGE");
      expect(failure.message, argv.join(" ")).toContain(expected);
    }
  });

  it("checks the command line before it reads the environment or the file", async () => {
    const cwd = makeDir({ "switchboard.config.json": "not json" });
    const failure = await resolveFail(["--port", "x"], { SWITCHBOARD_PORT: "y" }, cwd);
    expect(failure.message).toContain("--port");
    expect(failure.exitCode).toBe(2);
  });
});

describe("defineConfig", () => {
  it("returns its argument unchanged", () => {
    const config = { port: 1, heartbeat: false as const };
    expect(defineConfig(config)).toBe(config);
  });
});
