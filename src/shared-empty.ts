/**
 * One frozen empty array for the many lists that are usually empty (a connection's output, the
 * parser's pieces, a client's task queue): each points at it until it needs a list of its own,
 * so an idle connection allocates none. Frozen, so a push onto it throws instead of filling a
 * list every owner shares; callers check identity (`list === empty`) before they push or shift.
 */
const EMPTY: readonly never[] = Object.freeze([]);

export function sharedEmptyList<T>(): T[] {
  return EMPTY as unknown as T[];
}
