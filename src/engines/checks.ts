import { EngineError, type HistoryPolicy, type PresenceMember } from "./engine.js";

/**
 * What every engine checks the same way: history policies and presence members, with the same
 * EngineError codes whichever engine is behind the hub.
 */

/** The policy as given, or undefined when it keeps nothing (neither limit nor ttlMs). */
export function checkPolicy(policy: HistoryPolicy | undefined): HistoryPolicy | undefined {
  if (policy === undefined) return undefined;
  const { limit, ttlMs } = policy;
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 0)) {
    throw new EngineError(
      "ENGINE_INVALID_HISTORY_POLICY",
      `history limit must be a non-negative integer, got ${String(limit)}`,
    );
  }
  if (ttlMs !== undefined && !(Number.isFinite(ttlMs) && ttlMs >= 0)) {
    throw new EngineError(
      "ENGINE_INVALID_HISTORY_POLICY",
      `history ttlMs must be a non-negative finite number, got ${String(ttlMs)}`,
    );
  }
  if (limit === undefined && ttlMs === undefined) return undefined;
  return { limit, ttlMs };
}

/** A member's info as the JSON an engine stores (`undefined` becomes `null`). */
export function memberInfoJson(member: PresenceMember): { clientId: string; infoJson: string } {
  const { clientId, info } = member;
  if (typeof clientId !== "string" || clientId === "") {
    throw new EngineError("ENGINE_INVALID_MEMBER", "a member needs a non-empty string clientId");
  }
  let infoJson: string | undefined;
  try {
    infoJson = info === undefined ? "null" : JSON.stringify(info);
  } catch (error) {
    throw new EngineError("ENGINE_INVALID_MEMBER", "member info is not JSON-serializable", {
      cause: error,
    });
  }
  if (infoJson === undefined) {
    throw new EngineError("ENGINE_INVALID_MEMBER", "member info is not JSON-serializable");
  }
  return { clientId, infoJson };
}

/** A frozen member from stored JSON info. */
export function frozenMember(clientId: string, infoJson: string): PresenceMember {
  return Object.freeze({ clientId, info: deepFreeze(JSON.parse(infoJson)) });
}

export function deepFreeze(value: unknown): unknown {
  if (typeof value === "object" && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
