// The chat demo in a real browser (Debian's chromium through playwright-core): two pages join a
// room, exchange messages and see each other in the member list and the counts; one page loses
// its network (a proxy between it and the server is cut) and, once it is back, shows what it
// missed exactly once; a browser switched offline does the same. Screenshots of the chat are
// saved to artifacts/chat.png and artifacts/chat-phone.png.
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import chatConfig from "../../examples/chat/switchboard.config.js";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import { createStaticHandler } from "../../src/server/static.js";
import { startProxy, type TcpProxy } from "../client/proxy.js";

const CHROMIUM = "/usr/bin/chromium";
const ROOT = fileURLToPath(new URL("../../examples/chat/services", import.meta.url));
const PUBLIC = fileURLToPath(new URL("../../examples/chat/public", import.meta.url));
const ARTIFACTS = fileURLToPath(new URL("../../artifacts", import.meta.url));
const WAIT = 15_000;

// CI installs chromium (.ci/run), so there a missing browser fails the run; elsewhere the
// browser tests are skipped with this reason.
const haveBrowser = existsSync(CHROMIUM) || process.env.CI === "true";
const describeInBrowser = haveBrowser ? describe : describe.skip;

describeInBrowser("the chat in a browser", () => {
  let server: ServiceServer;
  let proxy: TcpProxy;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    server = await startServiceServer({
      root: ROOT,
      port: 0,
      requestHandler: createStaticHandler(PUBLIC),
      topics: chatConfig.topics,
    });
    proxy = await startProxy(server.port);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
  });
  afterAll(async () => {
    for (const context of contexts) await context.close();
    await browser?.close();
    await proxy?.close();
    await server?.shutdown();
  });

  async function enter(port: number, name: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    expect(await page.isVisible("#chat")).toBe(false);
    await page.fill("#name", name);
    await page.press("#name", "Enter");
    await page.locator("#state", { hasText: "online" }).waitFor({ timeout: WAIT });
    await page.locator("#room-title", { hasText: "# lobby" }).waitFor({ timeout: WAIT });
    expect(await page.isVisible("#name-form")).toBe(false);
    return page;
  }

  async function say(page: Page, text: string): Promise<void> {
    await page.fill("#say", text);
    await page.press("#say", "Enter");
  }

  const inLog = (page: Page, text: string) => page.locator("#log li", { hasText: text });

  let ann: Page;
  let bob: Page;

  it("two pages join a room, talk, and see each other in the members and the counts", async () => {
    ann = await enter(server.port, "Ann");
    // Bob's page goes through the proxy, so its network can be cut later.
    bob = await enter(proxy.port, "Bob");

    await say(ann, "hello from <b>Ann</b>");
    await inLog(bob, "hello from <b>Ann</b>").waitFor({ timeout: WAIT });
    await say(bob, "hi Ann");
    await inLog(ann, "hi Ann").waitFor({ timeout: WAIT });
    // Text stays text: no element was made from it.
    expect(await bob.locator("#log b").count()).toBe(0);

    await ann.locator("#member-list li", { hasText: "Bob" }).waitFor({ timeout: WAIT });
    await bob.locator("#member-list li", { hasText: "Ann" }).waitFor({ timeout: WAIT });
    for (const page of [ann, bob]) {
      await page
        .locator('#room-list button[data-room="lobby"] .count', { hasText: /^2$/ })
        .waitFor({ timeout: WAIT });
      await page.locator("#room-count", { hasText: "2 people" }).waitFor({ timeout: WAIT });
    }

    mkdirSync(ARTIFACTS, { recursive: true });
    await ann.screenshot({ path: `${ARTIFACTS}/chat.png`, fullPage: true });
    expect(existsSync(`${ARTIFACTS}/chat.png`)).toBe(true);
    // And on a phone-sized screen.
    await bob.setViewportSize({ width: 390, height: 844 });
    await bob.screenshot({ path: `${ARTIFACTS}/chat-phone.png`, fullPage: true });
  }, 60_000);

  it("a page that goes offline and comes back sees what it missed, once", async () => {
    // The network goes: open connections die and new ones are refused until it is back.
    proxy.block();
    proxy.cut();
    await bob.locator("#state", { hasText: /reconnecting|connecting/ }).waitFor({ timeout: WAIT });
    await say(ann, "while away 1");
    await say(ann, "while away 2");
    await inLog(ann, "while away 2").waitFor({ timeout: WAIT });
    proxy.unblock();
    await bob.locator("#state", { hasText: "online" }).waitFor({ timeout: 30_000 });
    await say(ann, "welcome back");
    await inLog(bob, "welcome back").waitFor({ timeout: WAIT });
    for (const text of ["hello from <b>Ann</b>", "hi Ann", "while away 1", "while away 2"]) {
      expect(await inLog(bob, text).count(), text).toBe(1);
    }
    expect(await inLog(bob, "welcome back").count()).toBe(1);
    // In order.
    const texts = await bob.locator("#log li .text").allTextContents();
    expect(texts).toEqual([
      "hello from <b>Ann</b>",
      "hi Ann",
      "while away 1",
      "while away 2",
      "welcome back",
    ]);
  }, 60_000);

  it("a browser that reports it is offline drops at once, and resumes when back online", async () => {
    const context = ann.context();
    await context.setOffline(true);
    // The page hears "offline": the session drops its connection without waiting for TCP.
    await ann.locator("#state", { hasText: /reconnecting|connecting/ }).waitFor({ timeout: WAIT });
    await say(bob, "while Ann is offline");
    await inLog(bob, "while Ann is offline").waitFor({ timeout: WAIT });
    await context.setOffline(false);
    await ann.locator("#state", { hasText: "online" }).waitFor({ timeout: 30_000 });
    await inLog(ann, "while Ann is offline").waitFor({ timeout: WAIT });
    await say(bob, "seen?");
    await inLog(ann, "seen?").waitFor({ timeout: WAIT });
    for (const text of ["while Ann is offline", "seen?", "welcome back", "hi Ann"]) {
      expect(await inLog(ann, text).count(), text).toBe(1);
    }
  }, 60_000);

  it("refuses a name that is taken, and shows a created room to everyone", async () => {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${server.port}/`);
    await page.fill("#name", "bob"); // names are unique whatever their case
    await page.press("#name", "Enter");
    await page.locator("#name-error", { hasText: "taken" }).waitFor({ timeout: WAIT });
    expect(await page.isVisible("#name-form")).toBe(true);

    await ann.fill("#new-room", "books");
    await ann.press("#new-room", "Enter");
    await ann.locator("#room-title", { hasText: "# books" }).waitFor({ timeout: WAIT });
    await bob.locator('#room-list button[data-room="books"]').waitFor({ timeout: WAIT });
    // Bob follows with the keyboard: the room button, then Enter.
    await bob.focus('#room-list button[data-room="books"]');
    await bob.keyboard.press("Enter");
    await bob.locator("#room-title", { hasText: "# books" }).waitFor({ timeout: WAIT });
    await ann.locator("#member-list li", { hasText: "Bob" }).waitFor({ timeout: WAIT });
    await say(bob, "a new room");
    await inLog(ann, "a new room").waitFor({ timeout: WAIT });
    // The lobby's history is still there when Ann goes back; each room now counts one person.
    await ann.click('#room-list button[data-room="lobby"]');
    await inLog(ann, "seen?").waitFor({ timeout: WAIT });
    for (const room of ["books", "lobby"]) {
      await bob
        .locator(`#room-list button[data-room="${room}"] .count`, { hasText: /^1$/ })
        .waitFor({ timeout: WAIT });
    }
  }, 60_000);
});
