// Hot reload (--watch): a changed service, or a module it imports, is taken over by a new
// instance without dropping a connection; state crosses through snapshot()/restore(), each
// client's data is kept, and a broken edit leaves the running instance serving.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ServiceServer, startServiceServer } from "../../src/server/service-server.js";
import type { Isolation } from "../../src/services/define.js";
import { client, eventually, recordingLogger, type TestClient } from "./helpers.js";

const DEFINE = pathToFileURL(
  fileURLToPath(new URL("../../src/services/define.ts", import.meta.url)),
).href;

/** A counter service; `version` shows in every answer so a test sees which code runs. */
function counterSource(version: string, label = "./_label.ts"): string {
  return `
import { defineService } from ${JSON.stringify(DEFINE)};
import { label } from ${JSON.stringify(label)};

let count = 0;

export default defineService<{ name: string }, { count: number }>({
  upgrade(request) {
    return { data: { name: request.query.get("name") ?? "anonymous" } };
  },
  open(client) {
    client.send(\`${version}:open:\${client.data?.name}:handover=\${client.handover}\`);
  },
  message(client, message) {
    count++;
    client.send(\`${version}:\${label()}:\${client.data.name}:\${count}:\${message.text()}\`);
  },
  snapshot() {
    return { count };
  },
  restore(state) {
    count = state.count;
  },
});
`;
}

describe.each<Isolation>(["worker", "main", "process"])(
  "hot reload in isolation %s",
  (isolation) => {
    let dir: string;
    let server: ServiceServer;
    const logger = recordingLogger();
    const open: TestClient[] = [];

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "switchboard-reload-"));
      // An ESM project, as a service root usually lives in.
      await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
      await writeFile(join(dir, "_label.ts"), `export const label = () => "label1";\n`);
      await writeFile(join(dir, "counter.ts"), counterSource("v1"));
      server = await startServiceServer({ root: dir, port: 0, isolation, logger, watch: true });
    });
    afterEach(() => {
      for (const c of open.splice(0)) c.ws.terminate();
    });
    afterAll(async () => {
      await server.shutdown();
      await rm(dir, { recursive: true, force: true });
    });

    it("hands live connections to the new code, with state and client data", async () => {
      const ann = await client(server.url("/counter?name=ann"));
      const bob = await client(server.url("/counter?name=bob"));
      open.push(ann, bob);
      expect(await ann.next()).toBe("v1:open:ann:handover=false");
      expect(await bob.next()).toBe("v1:open:bob:handover=false");
      ann.ws.send("a");
      bob.ws.send("b");
      expect(await ann.next()).toBe("v1:label1:ann:1:a");
      expect(await bob.next()).toBe("v1:label1:bob:2:b");

      await writeFile(join(dir, "counter.ts"), counterSource("v2"));
      // The new instance greets every live client as a handover, with its data kept.
      expect(await ann.next()).toBe("v2:open:ann:handover=true");
      expect(await bob.next()).toBe("v2:open:bob:handover=true");
      ann.ws.send("c");
      expect(await ann.next()).toBe("v2:label1:ann:3:c");
      expect(ann.ws.readyState).toBe("open");
      expect(bob.ws.readyState).toBe("open");

      // A change to an imported module reloads the service too.
      await writeFile(join(dir, "_label.ts"), `export const label = () => "label2";\n`);
      expect(await bob.next()).toBe("v2:open:bob:handover=true");
      bob.ws.send("d");
      expect(await bob.next()).toBe("v2:label2:bob:4:d");
    });

    it("delivers messages sent during a reload once each, in order", async () => {
      const dee = await client(server.url("/counter?name=dee"));
      open.push(dee);
      const greeting = await dee.next();
      const version = greeting.slice(0, greeting.indexOf(":"));
      const next = `${version}x`;
      dee.ws.send("first");
      const before = Number((await dee.next()).split(":")[3]);
      await writeFile(join(dir, "counter.ts"), counterSource(next));
      // A steady stream across the handover: none lost, none twice, the count continuous. It
      // goes on (at least 40, at most 1,000 messages) until the new version has greeted and
      // answered a few, however long the reload takes on a loaded machine.
      const handover = `${next}:open:dee:handover=true`;
      let sent = 0;
      let afterHandover = -1;
      while (sent < 1_000 && (sent < 40 || afterHandover === -1 || sent < afterHandover + 5)) {
        dee.ws.send(`m${sent++}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (afterHandover === -1 && dee.messages.includes(handover)) afterHandover = sent;
      }
      const replies = await dee.waitFor(2 + sent + 1, 15_000);
      const counted = replies.slice(2).filter((reply) => !reply.includes(":open:"));
      expect(counted.map((reply) => reply.split(":").at(-1))).toEqual(
        Array.from({ length: sent }, (_, i) => `m${i}`),
      );
      expect(counted.map((reply) => Number(reply.split(":")[3]))).toEqual(
        Array.from({ length: sent }, (_, i) => before + 1 + i),
      );
      expect(replies).toContain(handover);
      expect(counted.at(-1)!.startsWith(`${next}:`)).toBe(true);
    });

    it("keeps the running instance when the new code does not load", async () => {
      const cy = await client(server.url("/counter?name=cy"));
      open.push(cy);
      expect(await cy.next()).toMatch(/^v2x?:open:cy:handover=false$/);
      const before = logger.lines.length;
      await writeFile(join(dir, "counter.ts"), `${counterSource("v3")}\nthis is not TypeScript(\n`);
      await eventually(
        () => logger.lines.slice(before).some((l) => l.message.startsWith("reload failed")),
        10_000,
        "the failed reload to be logged",
      );
      cy.ws.send("e");
      expect(await cy.next()).toMatch(/^v2x?:label2:cy:\d+:e$/);
      expect(cy.ws.readyState).toBe("open");
      // Fixing the file brings the new code in.
      await writeFile(join(dir, "counter.ts"), counterSource("v4"));
      expect(await cy.next()).toBe("v4:open:cy:handover=true");
    });
  },
);
