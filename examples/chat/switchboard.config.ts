import { defineConfig } from "../../src/cli/config.js";

// `npm start`: the chat services and their page, on http://127.0.0.1:8080.
export default defineConfig({
  root: "services",
  static: "public",
  port: 8080,
  topics: [
    {
      // Rooms keep their last 200 messages of the last day, and deliver positions so a page
      // that reconnects resumes where it stopped.
      pattern: "room:*",
      history: { limit: 200, ttlMs: 24 * 60 * 60 * 1000 },
      envelope: true,
      // A page that stops reading is closed (it reconnects and resumes from history).
      slowConsumer: { maxBufferedBytes: 1 << 20, action: "close", closeCode: 1013 },
    },
  ],
});
