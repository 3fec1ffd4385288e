// The service of the isolation benchmark (`npm run bench`, bench/servers/switchboard-service.ts):
// echoes every message with the same opcode, as bench/servers/switchboard-echo.ts does with the
// plain server. No `config` export, so it runs where the server's `isolation` option says.
import { defineService } from "../../src/services/define.js";

export default defineService({
  message(client, message) {
    // Forwarded as it arrived, with its opcode: a text message is neither decoded to a string
    // and encoded again nor checked for UTF-8 a second time (the I/O thread validated it on
    // the way in, RFC 6455 section 8.1).
    client.send(message);
  },
});
