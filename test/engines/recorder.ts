// What an engine's handlers received, for the engine tests that drive engines directly.
import type { EngineHandlers, PresenceChange, TopicMessage } from "../../src/engines/engine.js";

export function recorder(): {
  messages: TopicMessage[];
  changes: PresenceChange[];
  handlers: EngineHandlers;
} {
  const messages: TopicMessage[] = [];
  const changes: PresenceChange[] = [];
  return {
    messages,
    changes,
    handlers: {
      message: (message) => messages.push(message),
      presence: (change) => changes.push(change),
    },
  };
}
