import { defineService } from "../../../src/index.js";

/** ws://127.0.0.1:8080/echo — every message comes back with the same opcode. */
export default defineService({
  message(client, message) {
    client.send(message);
  },
});
