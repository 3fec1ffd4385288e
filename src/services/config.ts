import { z } from "zod";
import type { Isolation } from "./define.js";

/**
 * A service's configuration: what its module exports as `config`, over the server's defaults.
 * The I/O thread validates it (the module's values come from user code) before the service
 * starts; a bad value is a load failure that names the key.
 */

export interface ResolvedServiceConfig {
  isolation: Isolation;
  headers: readonly string[];
  maxHeapMb: number;
  watchdogMs: number;
  maxMessageSize: number;
}

export type ServiceDefaults = ResolvedServiceConfig;

export const DEFAULT_SERVICE_CONFIG: ServiceDefaults = {
  isolation: "worker",
  headers: [],
  maxHeapMb: 512,
  watchdogMs: 10_000,
  maxMessageSize: 64 * 1024 * 1024,
};

const schema = z
  .object({
    isolation: z.enum(["worker", "process", "main"]),
    headers: z.array(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "not a header name")),
    maxHeapMb: z.number().int().min(16).max(65_536),
    watchdogMs: z.number().int().min(100).max(3_600_000),
    maxMessageSize: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31 - 1),
  })
  .partial()
  .strict();

export type ConfigResult =
  | { ok: true; config: ResolvedServiceConfig }
  | { ok: false; message: string };

/** Validates a module's `config` export (undefined when it has none) over `defaults`. */
export function resolveServiceConfig(exported: unknown, defaults: ServiceDefaults): ConfigResult {
  if (exported === undefined) return { ok: true, config: defaults };
  const parsed = schema.safeParse(exported);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path.length > 0 ? `config.${issue.path.join(".")}` : "config";
    return { ok: false, message: `${key}: ${issue.message}` };
  }
  const value = parsed.data;
  return {
    ok: true,
    config: {
      isolation: value.isolation ?? defaults.isolation,
      headers: (value.headers ?? defaults.headers).map((name) => name.toLowerCase()),
      maxHeapMb: value.maxHeapMb ?? defaults.maxHeapMb,
      watchdogMs: value.watchdogMs ?? defaults.watchdogMs,
      maxMessageSize: value.maxMessageSize ?? defaults.maxMessageSize,
    },
  };
}
