// Reading a suite's own flags from the values the orchestrator collected (see run.ts).
import type { FlagValues } from "./result.js";

function value(flags: FlagValues, flag: string): string | undefined {
  const v = flags.get(flag);
  return v === true ? undefined : v;
}

export function parseIntFlag(
  flag: string,
  raw: string | undefined,
  min: number,
  max: number,
): number {
  const n = Number(raw);
  if (raw === undefined || raw === "" || !Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${flag} needs an integer in [${min}, ${max}], got ${raw}`);
  }
  return n;
}

/** An integer flag, or `fallback` when it was not given. */
export function intFlag(
  flags: FlagValues,
  flag: string,
  fallback: number,
  min: number,
  max: number,
): number {
  return flags.has(flag) ? parseIntFlag(flag, value(flags, flag), min, max) : fallback;
}

/** A list of integers ("32,4096", or "none" for an empty list), or `fallback`. */
export function intsFlag(
  flags: FlagValues,
  flag: string,
  fallback: number[],
  min: number,
  max: number,
): number[] {
  if (!flags.has(flag)) return fallback;
  const raw = value(flags, flag) ?? "";
  if (raw === "none" || raw === "") return [];
  return raw.split(",").map((part) => parseIntFlag(flag, part, min, max));
}

/** A list of names out of `allowed` ("a,b", or "none"), in `allowed`'s order, or `fallback`. */
export function namesFlag<T extends string>(
  flags: FlagValues,
  flag: string,
  allowed: readonly T[],
  fallback: readonly T[],
): T[] {
  if (!flags.has(flag)) return [...fallback];
  return parseNames(flag, value(flags, flag), allowed);
}

export function parseNames<T extends string>(
  flag: string,
  raw: string | undefined,
  allowed: readonly T[],
): T[] {
  const items = raw === "none" || raw === undefined || raw === "" ? [] : raw.split(",");
  for (const item of items) {
    if (!allowed.includes(item as T)) {
      throw new Error(`${flag} takes ${allowed.join(", ")} or none, got ${item}`);
    }
  }
  return allowed.filter((item) => items.includes(item));
}

export function switchFlag(flags: FlagValues, flag: string): boolean {
  return flags.get(flag) === true;
}
