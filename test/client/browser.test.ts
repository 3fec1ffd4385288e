// The browser entry of `switchboard/client`, bundled as the server will bundle it, and run in a
// context that has only what a page has (WebSocket, URL, TextDecoder, atob, timers): no Buffer,
// no process, no require. The WebSocket is the `ws` package's, which follows the standard's API.
import vm from "node:vm";
import { build } from "esbuild";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { client } from "../services/helpers.js";
import { freePort, nextEvent, record, startServer, until } from "./fixtures/helpers.js";
import { startProxy } from "./proxy.js";

type BrowserClient = typeof import("../../src/client/browser.js");

const ENTRY = new URL("../../src/client/browser.ts", import.meta.url).pathname;

const cleanups: Array<() => unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function bundle() {
  const result = await build({
    entryPoints: [ENTRY],
    bundle: true,
    write: false,
    metafile: true,
    format: "iife",
    globalName: "SwitchboardClient",
    platform: "browser",
    target: "es2022",
    logLevel: "silent",
  });
  return { code: result.outputFiles[0]!.text, inputs: Object.keys(result.metafile.inputs).sort() };
}

function load(code: string): { lib: BrowserClient; context: vm.Context } {
  const context = vm.createContext({
    WebSocket,
    URL,
    URLSearchParams,
    TextEncoder,
    TextDecoder,
    atob,
    btoa,
    setTimeout,
    clearTimeout,
    queueMicrotask,
  });
  vm.runInContext(code, context);
  return { lib: context.SwitchboardClient as BrowserClient, context };
}

describe("the browser entry", () => {
  it("bundles from five modules, none of them Node's", async () => {
    const { code, inputs } = await bundle();
    expect(inputs).toEqual([
      "src/client/browser.ts",
      "src/client/dial-browser.ts",
      "src/client/emitter.ts",
      "src/client/public.ts",
      "src/client/session.ts",
    ]);
    expect(code).not.toMatch(/\brequire\(|["']node:/);
  });

  it("runs with a page's globals only: topics, JSON, and a resumed reconnect", async () => {
    const { lib, context } = load((await bundle()).code);
    expect(vm.runInContext("typeof Buffer + typeof process + typeof require", context)).toBe(
      "undefinedundefinedundefined",
    );
    const target = await startServer();
    cleanups.push(() => target.shutdown());
    const proxy = await startProxy(target.port);
    cleanups.push(() => proxy.close());
    const live = lib.createSession(`ws://127.0.0.1:${proxy.port}/feed`, {
      backoff: { initialMs: 5, maxMs: 20 },
    });
    cleanups.push(() => live.close());
    const log = record(live);
    await until(() => log.notices("subscribed").length === 1, "the subscription");
    const pub = await client(target.url("/publish"));
    cleanups.push(() => pub.ws.terminate());
    pub.ws.send("text");
    pub.ws.send(new Uint8Array([1, 2, 250]));
    await until(() => log.topics.length === 2, "two topic messages");
    expect(log.topics[0]).toMatchObject({ topic: "feed", data: "text", isBinary: false });
    expect(log.topics[1]!.isBinary).toBe(true);
    expect(Array.from(log.topics[1]!.data as Uint8Array)).toEqual([1, 2, 250]);

    live.sendJson({ from: "page" });
    live.send(new Uint8Array([5, 6]));
    await until(() => log.messages.length === 3, "the echoes");
    expect(log.messages[1]!.json()).toEqual({ from: "page" });
    expect(log.messages[2]!.isBinary).toBe(true);
    expect(Array.from(log.messages[2]!.data as Uint8Array)).toEqual([5, 6]);

    // Dropped and kept out while a message goes by: it comes back through `resume`.
    proxy.block();
    proxy.cut();
    await until(() => live.state === "reconnecting", "the drop");
    pub.ws.send("missed");
    await pub.waitFor(3);
    const reopened = nextEvent(live, "open");
    proxy.unblock();
    expect(await reopened).toEqual({ protocol: "", resumed: true });
    await until(() => log.topics.length === 3, "the missed message");
    expect(log.topics[2]).toMatchObject({ data: "missed", offset: log.topics[1]!.offset + 1 });
    await until(() => log.notices("subscribed").length === 2, "the second subscription");
    expect(log.notices("subscribed")[1]).toMatchObject({ result: { ok: true, recovered: 1 } });
    expect(live.stats).toEqual({ opens: 2, duplicates: 0, gaps: 0 });
  });

  it("sees a failed connection as a close with 1006", async () => {
    const { lib } = load((await bundle()).code);
    const port = await freePort();
    const live = lib.createSession(`ws://127.0.0.1:${port}/`, { maxAttempts: 0 });
    const log = record(live);
    const closed = await nextEvent(live, "close");
    expect(closed).toMatchObject({ code: 1006, willReconnect: false });
    expect(live.state).toBe("closed");
    expect(log.errors.map((e) => e.code)).toEqual(["SB_CLIENT_GAVE_UP"]);
  });
});
