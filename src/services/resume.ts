import type { TopicPosition } from "./define.js";

/**
 * The positions a reconnecting client asks to resume from: the `resume` query parameter, JSON
 * `{"<topic>":{"epoch":"...","offset":n}}`, which the `switchboard/client` session adds when it
 * reconnects. A service's `client.subscribe(topic)` without `since` starts from the position
 * given for that topic, so any service gets resumption without reading the parameter itself.
 *
 * The parameter comes from the network: anything malformed is ignored as a whole (the client
 * then resubscribes live and sees the gap in the offsets), and the size is bounded.
 */

export const RESUME_PARAMETER = "resume";
/** Topics one client may name; a chat client follows a handful. */
const MAX_TOPICS = 64;
/** Longer than any epoch an engine makes (a UUID, or a counter). */
const MAX_EPOCH_LENGTH = 128;
const MAX_TOPIC_LENGTH = 256;

const EMPTY: ReadonlyMap<string, TopicPosition> = new Map();

export type ResumeParse =
  | { ok: true; positions: ReadonlyMap<string, TopicPosition> }
  | { ok: false; reason: string };

export function parseResume(query: URLSearchParams): ResumeParse {
  const raw = query.get(RESUME_PARAMETER);
  if (raw === null || raw === "") return { ok: true, positions: EMPTY };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { ok: false, reason: "not JSON" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, reason: "not an object of topics" };
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > MAX_TOPICS) return { ok: false, reason: `more than ${MAX_TOPICS} topics` };
  const positions = new Map<string, TopicPosition>();
  for (const [topic, position] of entries) {
    if (topic.length === 0 || topic.length > MAX_TOPIC_LENGTH) {
      return { ok: false, reason: "a topic name is empty or too long" };
    }
    if (typeof position !== "object" || position === null) {
      return { ok: false, reason: `no position for ${topic}` };
    }
    const { epoch, offset } = position as Record<string, unknown>;
    if (typeof epoch !== "string" || epoch.length === 0 || epoch.length > MAX_EPOCH_LENGTH) {
      return { ok: false, reason: `bad epoch for ${topic}` };
    }
    if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) {
      return { ok: false, reason: `bad offset for ${topic}` };
    }
    positions.set(topic, Object.freeze({ epoch, offset }));
  }
  return { ok: true, positions };
}
