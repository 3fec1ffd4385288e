import { isMainThread } from "node:worker_threads";
import { register, tsImport } from "tsx/esm/api";

let registered = !isMainThread;

/**
 * Loads a service module, TypeScript or JavaScript, ESM or CommonJS, with no build step, and
 * says which local files it imported (what hot reload watches). Each load gets a module
 * namespace of its own, so loading a file again on the I/O thread runs its current code.
 */
export async function importService(
  url: string,
): Promise<{ module: Record<string, unknown>; imports: string[] }> {
  if (!registered) {
    // CommonJS services require() their TypeScript imports through tsx's global hooks; a
    // worker or child process registered them at boot (bootstrap.ts), the I/O thread does here.
    registered = true;
    register();
  }
  const imports: string[] = [];
  let module = (await tsImport(url, {
    parentURL: import.meta.url,
    onImport: (imported) => imports.push(imported),
  })) as Record<string, unknown>;
  await settled(imports);
  // A CommonJS module's namespace has its exports object as `default`; the service is then
  // that object's `default` (what `export default` compiles to).
  const inner = module.default as Record<string, unknown> | undefined;
  if (inner !== null && typeof inner === "object" && "default" in inner && !("hooks" in inner)) {
    module = inner;
  }
  return { module, imports: localFiles([url, ...imports]) };
}

/**
 * tsx reports imports from its loader thread over a message port, so the last reports may
 * arrive after the import resolved: wait until the list has been still for a moment (bounded).
 */
async function settled(imports: string[]): Promise<void> {
  const deadline = Date.now() + 250;
  let seen = -1;
  while (imports.length !== seen && Date.now() < deadline) {
    seen = imports.length;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The files worth watching: on disk, outside node_modules, each once. */
function localFiles(urls: string[]): string[] {
  const files = new Set<string>();
  for (const url of urls) {
    if (!url.startsWith("file:")) continue;
    const path = decodeURIComponent(new URL(url).pathname);
    if (path.includes("/node_modules/")) continue;
    files.add(path);
  }
  return [...files];
}
