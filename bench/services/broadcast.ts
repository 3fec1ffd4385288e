// Fan-out for the isolation benchmark: every message goes to every client connected to this
// service, its sender included, with the opcode it came with.
import { defineService } from "../../src/services/define.js";

export default defineService({
  message(_client, message, ctx) {
    ctx.broadcast(message);
  },
});
