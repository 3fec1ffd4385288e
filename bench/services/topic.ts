// The service of the broadcast benchmark (`npm run bench:broadcast`,
// bench/servers/switchboard-broadcast.ts): one publisher, many subscribers, through a topic.
// Every client is subscribed to "bench" when it opens, except the publisher, which connects with
// `?role=publisher`; each message the publisher sends is published to "bench" and fanned out to
// the subscribers on the I/O thread. No `config` export, so it runs where the server's
// `isolation` option says (a worker thread by default).
import { defineService } from "../../src/services/define.js";

export default defineService({
  open(client) {
    if (client.query.get("role") === "publisher") return;
    // Not awaited: nothing here depends on when the subscription lands. The load generator
    // probes until every subscriber receives, before the first counted message.
    void client.subscribe("bench");
  },
  message(_client, message, ctx) {
    // Published as it arrived, with its opcode: a text message is neither decoded nor checked
    // for UTF-8 again (the I/O thread validated it on the way in, RFC 6455 section 8.1).
    ctx.publish("bench", message);
  },
});
