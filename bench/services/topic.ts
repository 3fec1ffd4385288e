// The service of the broadcast benchmark (`npm run bench:broadcast`,
// bench/servers/switchboard-broadcast.ts): publishers and subscribers, through topics. A client
// names its topic with `?topic=N` and is on "bench/N"; without it, on "bench" (one publisher,
// one topic). Every client is subscribed to its topic when it opens, except publishers, which
// connect with `?role=publisher`; each message a publisher sends is published to its topic and
// fanned out to the subscribers on the I/O thread. No `config` export, so it runs where the
// server's `isolation` option says (a worker thread by default).
import { defineService } from "../../src/services/define.js";

export default defineService<string>({
  open(client) {
    const topic = client.query.get("topic");
    // Kept per client so that a message costs no query lookup.
    client.data = topic === null ? "bench" : `bench/${topic}`;
    if (client.query.get("role") === "publisher") return;
    // Not awaited: nothing here depends on when the subscription lands. The load generator
    // probes until every subscriber receives, before the first counted message.
    void client.subscribe(client.data);
  },
  message(client, message, ctx) {
    // Published as it arrived, with its opcode: a text message is neither decoded nor checked
    // for UTF-8 again (the I/O thread validated it on the way in, RFC 6455 section 8.1).
    ctx.publish(client.data, message);
  },
});
