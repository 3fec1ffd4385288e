import { tsImport } from "tsx/esm/api";

/**
 * Loads a service module, TypeScript or JavaScript, with no build step, and says which files it
 * imported (for hot reload). `fresh` gives the module (and what it imports) a namespace of its
 * own, so loading a file again runs its current code: the I/O thread needs that; a worker or
 * child process loads one service once, with tsx registered by the bootstrap.
 */
export async function importService(
  url: string,
  fresh: boolean,
): Promise<{ module: Record<string, unknown>; imports: string[] }> {
  if (fresh) {
    const imports: string[] = [];
    const module = (await tsImport(url, {
      parentURL: import.meta.url,
      onImport: (imported) => imports.push(imported),
    })) as Record<string, unknown>;
    return { module, imports: localFiles([url, ...imports]) };
  }
  const module = (await import(url)) as Record<string, unknown>;
  const recorded = (globalThis as { __switchboardImports?: string[] }).__switchboardImports ?? [];
  return { module, imports: localFiles([url, ...recorded]) };
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
