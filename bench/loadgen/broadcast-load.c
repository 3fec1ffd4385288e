/*
 * broadcast-load: a WebSocket fan-out load generator for Switchboard's benchmarks.
 *
 * One thread, epoll, non-blocking sockets. It opens P publisher connections and
 * N subscriber connections to the same server, performs the RFC 6455 opening
 * handshake itself (section 4.1), and then has the publishers send messages
 * that the server is expected to deliver to every subscriber of the
 * publisher's topic (a topic publish, or a loop over the server's clients; the
 * server decides how). There are T topics: subscriber i is on topic i % T and
 * publisher j publishes to topic j % T, so the subscribers are spread evenly
 * and every topic has at least one publisher. The topic goes in the query
 * string (`topic=t`) when T > 1; with one topic (the default, with one
 * publisher) no topic is named and the server uses its only one.
 *
 * Each publisher keeps at most W messages outstanding, where a message is
 * outstanding from the moment it is written until the last subscriber of its
 * topic has received it. That keeps the server busy without flooding it: a
 * server that falls behind makes the publishers wait, as real publishers with
 * acknowledgements would, instead of growing its queues without limit. W
 * messages of S bytes per publisher of a topic is also all a server may have
 * queued for one subscriber, far below any slow-consumer limit (uWebSockets.js
 * skips a subscriber with more than 64 KiB of backpressure by default).
 *
 * Every message carries its publisher's number and its sequence number within
 * that publisher's stream (4 and 8 hex digits, then a fixed filler), so every
 * delivery is verified: each subscriber must receive every message of every
 * publisher of its topic exactly once, in the order that publisher sent them,
 * with the right opcode, length and bytes, and nothing from another topic.
 * Messages of different publishers may interleave in any way: a server owes
 * an order only to what one connection sent. A wrong, missing, duplicated or
 * reordered delivery ends the run with an error rather than a figure, and so
 * does a stall: no message completing for --stall-ms. (Stalls are judged over
 * all publishers: a server that reads its publishers in turn may leave one
 * waiting for as long as it takes to fan out what all the others sent, and a
 * message that never arrives stops its publisher for good, which the end of
 * the run finds.) After the measured window the publishers stop and the
 * generator waits until every message sent has reached every subscriber of its
 * topic, so the check covers the whole run.
 *
 * Joining: a server subscribes a client when it opens, but not necessarily
 * before the upgrade response leaves (a service in a worker thread subscribes
 * asynchronously). So before the first counted message one publisher per topic
 * sends a short "probe" message every few milliseconds until every subscriber
 * has received one. A probe proves the subscription is in place before any
 * counted message of any publisher of the topic is written, so each of them
 * reaches it. Probes that arrive before a subscriber's first real message from
 * the probing publisher are ignored, which is only possible because every
 * server keeps one publisher's messages in order.
 *
 * Latency is measured per delivery, from the publisher's write of a message to
 * its arrival at each subscriber, for the deliveries that arrive in the
 * measured window, into a log-bucket histogram (loadgen.h). It includes the
 * wait in the windows: with P x W messages outstanding it is about
 * P x W / (messages per second) when the server is the bottleneck. Arrivals
 * are stamped with the time of the read that brought them (loadgen.h's
 * loop_ns): one clock call per read, however many messages it holds.
 *
 * Exit status: 0 with {"ok":true,...}; 1 with {"ok":false,"error":...} on any
 * protocol, handshake, verification or I/O error; 2 on bad usage.
 */

#define _GNU_SOURCE
#define HANDSHAKE_MAX 4096
/* Subscribers only ever write a handshake, pongs and a close. */
#define OUT_BUF_MIN 1024
#include "loadgen.h"

#define MAX_EVENTS 512
/* Connections in the TCP connect or handshake phase at once: a thousand SYNs at
 * once overflow a listen backlog of 511 and cost seconds of SYN retries. */
#define MAX_CONNECTING 128
#define PUB_DIGITS 4
#define SEQ_DIGITS 8
#define ID_DIGITS (PUB_DIGITS + SEQ_DIGITS)
#define MAX_PUBLISHERS 4096
#define MIN_SIZE 16
#define PROBE_INTERVAL_S 0.01
/* How often the stall check runs. */
#define STALL_CHECK_S 0.1

/* A probe is "probe" and the publisher's number: 9 bytes, shorter than any data
 * message (MIN_SIZE), so the two cannot be confused. */
static const uint8_t PROBE[] = "probe";
#define PROBE_PREFIX (sizeof PROBE - 1)
#define PROBE_LEN (PROBE_PREFIX + PUB_DIGITS)

enum phase { PH_CONNECT, PH_JOIN, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

struct options {
  struct target_options t;
  const char *publisher_query;
  int publishers;
  int topics;
  int subs;
  int window;
  size_t size;
  int warmup_ms;
  int duration_ms;
  int connect_timeout_ms;
  int stall_ms;
  int binary;
};

struct conn {
  struct ws_conn ws;
  int publisher;
  int index; /* the publisher's or the subscriber's number */
  int topic;

  uint8_t *msg; /* the current data message, up to opt.size bytes */
  size_t msg_len;
  int msg_too_long;

  /* Subscriber state. */
  int joined;
  /* The next sequence number expected from each publisher of the topic:
   * publisher j is entry j / topics. */
  uint64_t *next_seq;
  uint64_t received;
  uint64_t received_at_start;
  uint64_t received_in_window;
};

_Static_assert(offsetof(struct conn, ws) == 0, "loadgen.h's conn_of needs ws first");

/* A publisher and its window. */
struct publisher {
  struct conn *conn;
  uint64_t sent, completed;
  uint64_t completed_at_start, completed_in_window;
  /* Per outstanding message (slot seq % window): how many subscribers have it,
   * and when it was written. */
  uint32_t *delivered_to;
  uint64_t *sent_ns;
  uint64_t progress_ns; /* its last completion, or when its window last left empty */
  uint8_t *frame;       /* a masked data frame; only the sequence digits change */
};

static struct options opt;
static struct conn *conns; /* the publishers first, then the subscribers */
static struct publisher *pubs;
static int nconns;
static int *subs_on; /* subscribers per topic */
static enum phase phase = PH_CONNECT;
static int next_to_open, joined_count;

static uint64_t sent_total, completed_total, probes_sent;
static uint64_t progress_ns; /* the last completion of any publisher's message */
static double last_probe_at;

static size_t frame_len, id_offset;
static uint8_t *filler; /* the payload after the digits */

static uint64_t total_deliveries;
static struct histogram latency;

/* ---------------------------------------------------------------- frames out */

static const char HEX[] = "0123456789abcdef";

/* Writes `value` as `digits` lowercase hex digits, masked as the bytes at
 * offset `at` of a frame's payload are (section 5.3: byte i ^ key[i % 4]). */
static void put_hex_masked(uint8_t *dst, size_t at, uint64_t value, int digits) {
  for (int i = 0; i < digits; i++) {
    uint8_t digit = (uint8_t)HEX[(value >> (4 * (digits - 1 - i))) & 0xf];
    dst[i] = digit ^ MASK_KEY[(at + (size_t)i) & 3];
  }
}

/* Appends publisher p's next data message to its output. */
static void publish_one(struct publisher *p, uint64_t now) {
  uint64_t seq = p->sent++;
  sent_total++;
  uint8_t *dst = out_reserve(&p->conn->ws, frame_len);
  memcpy(dst, p->frame, frame_len);
  put_hex_masked(dst + id_offset + PUB_DIGITS, PUB_DIGITS, seq, SEQ_DIGITS);
  p->sent_ns[seq % (uint64_t)opt.window] = now;
}

/* Tops every publisher's window up, each with one write(). */
static void pump(uint64_t now) {
  if (phase != PH_WARMUP && phase != PH_MEASURE) return;
  for (int j = 0; j < opt.publishers; j++) {
    struct publisher *p = &pubs[j];
    if (p->sent - p->completed >= (uint64_t)opt.window) continue;
    if (p->sent == p->completed) p->progress_ns = now; /* the stall clock starts now */
    while (p->sent - p->completed < (uint64_t)opt.window) publish_one(p, now);
    out_flush(&p->conn->ws);
  }
}

/* Sends one probe from each topic's first publisher (publisher t for topic t). */
static void send_probes(void) {
  for (int t = 0; t < opt.topics; t++) {
    uint8_t payload[PROBE_LEN], frame[6 + PROBE_LEN];
    memcpy(payload, PROBE, PROBE_PREFIX);
    for (int i = 0; i < PUB_DIGITS; i++)
      payload[PROBE_PREFIX + (size_t)i] = (uint8_t)HEX[(t >> (4 * (PUB_DIGITS - 1 - i))) & 0xf];
    struct ws_conn *w = &pubs[t].conn->ws;
    out_append(w, frame, build_frame(frame, payload, PROBE_LEN, opt.binary ? 2 : 1, 0));
    out_flush(w);
    probes_sent++;
  }
}

/* ---------------------------------------------------------------- frames in */

static void on_data_start(struct conn *c, int rsv1) {
  if (rsv1)
    fail("RSV1 set by the server on connection %ld (nothing was negotiated)", c->ws.id);
  if (c->publisher) fail("publisher %d received a message; it is not subscribed", c->index);
  c->msg_len = 0;
  c->msg_too_long = 0;
}

static void on_data(struct conn *c, const uint8_t *p, size_t n) {
  size_t room = opt.size - c->msg_len;
  if (n > room) c->msg_too_long = 1;
  memcpy(c->msg + c->msg_len, p, n < room ? n : room);
  c->msg_len += n < room ? n : room;
}

/* The value of `digits` hex digits, or -1 if one is not a lowercase hex digit. */
static int64_t parse_hex(const uint8_t *s, int digits) {
  int64_t v = 0;
  for (int i = 0; i < digits; i++) {
    uint8_t ch = s[i];
    int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = (v << 4) | d;
  }
  return v;
}

/* The publisher named at the start of a subscriber's message, checked to be
 * one that publishes to the subscriber's topic. */
static struct publisher *publisher_of(struct conn *c, const uint8_t *digits, const char *what) {
  int64_t j = parse_hex(digits, PUB_DIGITS);
  if (j < 0 || j >= opt.publishers)
    fail("subscriber %d got a %s without a valid publisher number", c->index, what);
  if (j % opt.topics != c->topic)
    fail("subscriber %d (topic %d) got a %s of publisher %lld, which publishes to topic %lld",
         c->index, c->topic, what, (long long)j, (long long)(j % opt.topics));
  return &pubs[j];
}

static void on_message(struct conn *c, int opcode) {
  int want = opt.binary ? 2 : 1;
  if (c->msg_too_long)
    fail("subscriber %d got a message longer than %zu bytes", c->index, opt.size);
  if (opcode != want)
    fail("subscriber %d got opcode %d, the publishers sent %d", c->index, opcode, want);
  if (c->msg_len == PROBE_LEN && memcmp(c->msg, PROBE, PROBE_PREFIX) == 0) {
    struct publisher *p = publisher_of(c, c->msg + PROBE_PREFIX, "probe");
    int j = (int)(p - pubs);
    /* Probes only precede a subscriber's first real message from the same
     * publisher: one publisher's messages reach each subscriber in the order
     * they were sent. */
    if (c->next_seq[j / opt.topics] != 0)
      fail("subscriber %d got a probe of publisher %d after its message %llu (reordered "
           "delivery)",
           c->index, j, (unsigned long long)(c->next_seq[j / opt.topics] - 1));
    if (!c->joined) {
      c->joined = 1;
      joined_count++;
    }
    return;
  }
  if (c->msg_len != opt.size)
    fail("subscriber %d got a %zu-byte message, the publishers sent %zu", c->index, c->msg_len,
         opt.size);
  if (!c->joined)
    fail("subscriber %d got a message before the data stream started", c->index);
  struct publisher *p = publisher_of(c, c->msg, "message");
  int j = (int)(p - pubs);
  uint64_t *next = &c->next_seq[j / opt.topics];
  int64_t seq = parse_hex(c->msg + PUB_DIGITS, SEQ_DIGITS);
  if (seq < 0) fail("subscriber %d got a message without a sequence number", c->index);
  if ((uint64_t)seq != (*next & 0xffffffffu)) {
    const char *what = (uint64_t)seq < (*next & 0xffffffffu) ? "a duplicate or reordered message"
                                                             : "a gap (a message was lost)";
    fail("subscriber %d got message %lld of publisher %d, expected %llu: %s", c->index,
         (long long)seq, j, (unsigned long long)*next, what);
  }
  if (memcmp(c->msg + ID_DIGITS, filler, opt.size - ID_DIGITS) != 0)
    fail("subscriber %d got message %lld of publisher %d with different bytes than were sent",
         c->index, (long long)seq, j);
  if (*next >= p->sent)
    fail("subscriber %d got message %llu of publisher %d, which was not sent yet", c->index,
         (unsigned long long)*next, j);
  uint64_t slot = *next % (uint64_t)opt.window;
  (*next)++;
  c->received++;
  total_deliveries++;
  if (phase == PH_MEASURE) {
    uint64_t at = p->sent_ns[slot];
    hist_add_ns(&latency, loop_ns > at ? loop_ns - at : 0);
  }
  if (++p->delivered_to[slot] == (uint32_t)subs_on[c->topic]) {
    /* Every subscriber receives a publisher's messages in order, so the last
     * one to get message n has every message before it as well: a
     * publisher's messages complete in order. */
    p->delivered_to[slot] = 0;
    p->completed++;
    p->progress_ns = progress_ns = loop_ns;
    completed_total++;
  }
}

/* ---------------------------------------------------------------- handshake */

static void send_request(struct conn *c) {
  char path[1024];
  char sep = strchr(opt.t.path, '?') ? '&' : '?';
  if (c->publisher && opt.topics > 1)
    snprintf(path, sizeof path, "%s%c%s&topic=%d", opt.t.path, sep, opt.publisher_query, c->topic);
  else if (c->publisher)
    snprintf(path, sizeof path, "%s%c%s", opt.t.path, sep, opt.publisher_query);
  else if (opt.topics > 1)
    snprintf(path, sizeof path, "%s%ctopic=%d", opt.t.path, sep, c->topic);
  else
    snprintf(path, sizeof path, "%s", opt.t.path);
  send_upgrade(&c->ws, path, "");
}

static void accept_extensions(struct conn *c, const char *headers) {
  char v[256];
  (void)c;
  if (header_value(headers, "Sec-WebSocket-Extensions", v, sizeof v))
    fail("server accepted an extension that was not offered: %s", v);
}

static void open_next(void) {
  while (connecting < MAX_CONNECTING && next_to_open < nconns) {
    open_connection(&conns[next_to_open].ws, next_to_open);
    next_to_open++;
  }
}

static void on_open(struct conn *c) {
  (void)c;
  open_next();
}

/* ---------------------------------------------------------------- main loop */

static void usage(void) {
  fprintf(stderr,
          "usage: broadcast-load --port N | --ports N,N,... [--host 127.0.0.1] [--path /topic]\n"
          "                      [--publisher-query role=publisher] [--publishers 1]\n"
          "                      [--topics 1] [--subs 1000] [--size 64] [--window 32]\n"
          "                      [--warmup-ms 1000] [--duration-ms 3000]\n"
          "                      [--connect-timeout-ms 20000] [--stall-ms 5000] [--binary]\n"
          "                      [--server-pid PID] [--server-cpu N] [--cpu N]\n"
          "  --topics T needs at least T publishers and T subscribers; the window is per\n"
          "  publisher\n");
  exit(2);
}

/* Fails the run if messages are outstanding and none has completed for longer
 * than --stall-ms, naming the publisher that has waited longest. */
static void check_stall(uint64_t now) {
  if (completed_total == sent_total || now - progress_ns <= (uint64_t)opt.stall_ms * 1000000u)
    return;
  struct publisher *oldest = NULL;
  for (int j = 0; j < opt.publishers; j++) {
    struct publisher *p = &pubs[j];
    if (p->sent > p->completed && (!oldest || p->progress_ns < oldest->progress_ns)) oldest = p;
  }
  int j = (int)(oldest - pubs);
  fail("no progress for %d ms: message %llu of publisher %d reached %u of the %d subscribers of "
       "topic %d",
       opt.stall_ms, (unsigned long long)oldest->completed, j,
       oldest->delivered_to[oldest->completed % (uint64_t)opt.window], subs_on[j % opt.topics],
       j % opt.topics);
}

int main(int argc, char **argv) {
  target_defaults(&opt.t, "/topic");
  opt.publisher_query = "role=publisher";
  opt.publishers = 1;
  opt.topics = 1;
  opt.subs = 1000;
  opt.window = 32;
  opt.size = 64;
  opt.warmup_ms = 1000;
  opt.duration_ms = 3000;
  opt.connect_timeout_ms = 20000;
  opt.stall_ms = 5000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--binary")) opt.binary = 1;
    else if (!v) usage();
    else if (parse_target_option(&opt.t, a, v)) i++;
    else if (!strcmp(a, "--publisher-query")) opt.publisher_query = v, i++;
    else if (!strcmp(a, "--publishers"))
      opt.publishers = (int)arg_long(v, 1, MAX_PUBLISHERS), i++;
    else if (!strcmp(a, "--topics")) opt.topics = (int)arg_long(v, 1, MAX_PUBLISHERS), i++;
    else if (!strcmp(a, "--subs")) opt.subs = (int)arg_long(v, 1, 15000), i++;
    else if (!strcmp(a, "--window")) opt.window = (int)arg_long(v, 1, 4096), i++;
    else if (!strcmp(a, "--size")) opt.size = (size_t)arg_long(v, MIN_SIZE, 65535), i++;
    else if (!strcmp(a, "--warmup-ms")) opt.warmup_ms = (int)arg_long(v, 0, 600000), i++;
    else if (!strcmp(a, "--duration-ms")) opt.duration_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--connect-timeout-ms"))
      opt.connect_timeout_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--stall-ms")) opt.stall_ms = (int)arg_long(v, 100, 600000), i++;
    else usage();
  }
  /* Every topic needs a publisher to probe and feed it and a subscriber to
   * complete its messages. */
  if (!opt.t.port || opt.topics > opt.publishers || opt.topics > opt.subs) usage();
  setup_process(opt.t.cpu);
  nconns = opt.publishers + opt.subs;
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)nconns + 16) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < (rlim_t)nconns + 16)
      fail("%d connections need more open files than the limit of %llu", nconns,
           (unsigned long long)nofile.rlim_cur);
  }
  setup_loop(opt.t.host, opt.t.port);
  server.nports = opt.t.nports;
  for (int i = 0; i < opt.t.nports; i++) server.ports[i] = opt.t.ports[i];

  /* The payload: the publisher's number and the sequence number in hex, then
   * printable filler, so the message is valid UTF-8 and may go as text
   * (section 8.1). */
  uint8_t *payload = malloc(opt.size);
  filler = malloc(opt.size);
  pubs = calloc((size_t)opt.publishers, sizeof *pubs);
  subs_on = calloc((size_t)opt.topics, sizeof *subs_on);
  uint32_t *delivered = calloc((size_t)opt.publishers * (size_t)opt.window, sizeof *delivered);
  uint64_t *send_times = calloc((size_t)opt.publishers * (size_t)opt.window, sizeof *send_times);
  /* Each subscriber expects, per publisher of its topic, at most
   * ceil(publishers / topics) entries. */
  size_t per_sub = (size_t)((opt.publishers + opt.topics - 1) / opt.topics);
  uint64_t *next_seqs = calloc((size_t)opt.subs * per_sub, sizeof *next_seqs);
  uint8_t *rbuf = malloc(READ_BUF_SIZE);
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!payload || !filler || !pubs || !subs_on || !delivered || !send_times || !next_seqs ||
      !rbuf || !conns)
    fail("out of memory");
  memset(payload, '0', ID_DIGITS);
  for (size_t i = ID_DIGITS; i < opt.size; i++) payload[i] = (uint8_t)('a' + (i * 7) % 26);
  memcpy(filler, payload + ID_DIGITS, opt.size - ID_DIGITS);
  for (int i = 0; i < nconns; i++) {
    struct conn *c = &conns[i];
    c->ws.fd = -1;
    c->publisher = i < opt.publishers;
    c->index = c->publisher ? i : i - opt.publishers;
    c->topic = c->index % opt.topics;
    if (c->publisher) {
      struct publisher *p = &pubs[c->index];
      p->conn = c;
      p->delivered_to = delivered + (size_t)c->index * (size_t)opt.window;
      p->sent_ns = send_times + (size_t)c->index * (size_t)opt.window;
      p->frame = malloc(opt.size + 14);
      if (!p->frame) fail("out of memory");
      frame_len = build_frame(p->frame, payload, opt.size, opt.binary ? 2 : 1, 0);
      id_offset = frame_len - opt.size;
      put_hex_masked(p->frame + id_offset, 0, (uint64_t)c->index, PUB_DIGITS);
    } else {
      subs_on[c->topic]++;
      c->next_seq = next_seqs + (size_t)c->index * per_sub;
      c->msg = malloc(opt.size);
      if (!c->msg) fail("out of memory");
    }
  }

  double t_connect = now_s();
  open_next();

  struct epoll_event events[MAX_EVENTS];
  double deadline = t_connect + opt.connect_timeout_ms / 1e3;
  double t_join = 0, t_data = 0, t_drain = 0, last_stall_check = 0;
  struct reading start = {0}, end = {0};
  uint64_t deliveries_start = 0, deliveries_end = 0, completed_start = 0, completed_end = 0;

  while (phase != PH_DONE) {
    double now = now_s();
    if (phase == PH_CONNECT && open_count == nconns) {
      phase = PH_JOIN;
      t_join = now;
      last_probe_at = 0;
    }
    if (phase == PH_JOIN && joined_count == opt.subs) {
      phase = PH_WARMUP;
      t_data = now;
      deadline = now + opt.warmup_ms / 1e3;
      progress_ns = mono_ns();
      pump(progress_ns);
    }
    if (phase == PH_JOIN && now - last_probe_at >= PROBE_INTERVAL_S) {
      send_probes();
      last_probe_at = now;
    }
    if (phase >= PH_WARMUP && phase <= PH_DRAIN && now - last_stall_check >= STALL_CHECK_S) {
      check_stall(mono_ns());
      last_stall_check = now;
    }
    if (phase == PH_DRAIN && completed_total == sent_total) {
      t_drain = now - t_drain;
      phase = PH_DONE;
      break;
    }
    if (now >= deadline) {
      if (phase == PH_CONNECT || phase == PH_JOIN) {
        fail("after %d ms: %d of %d connections open, %d of %d subscribers receiving",
             opt.connect_timeout_ms, open_count, nconns, joined_count, opt.subs);
      } else if (phase == PH_WARMUP) {
        phase = PH_MEASURE;
        deliveries_start = total_deliveries;
        completed_start = completed_total;
        for (int i = opt.publishers; i < nconns; i++)
          conns[i].received_at_start = conns[i].received;
        for (int j = 0; j < opt.publishers; j++) pubs[j].completed_at_start = pubs[j].completed;
        read_window_start(&start, opt.t.server_pid, opt.t.server_cpu);
        deadline = start.t + opt.duration_ms / 1e3;
      } else if (phase == PH_MEASURE) {
        read_window_end(&end, opt.t.server_pid, opt.t.server_cpu);
        deliveries_end = total_deliveries;
        completed_end = completed_total;
        for (int i = opt.publishers; i < nconns; i++)
          conns[i].received_in_window = conns[i].received - conns[i].received_at_start;
        for (int j = 0; j < opt.publishers; j++)
          pubs[j].completed_in_window = pubs[j].completed - pubs[j].completed_at_start;
        /* Stop publishing, and wait until what was sent has reached everyone:
         * as long as messages keep completing (the stall check bounds it). */
        phase = PH_DRAIN;
        t_drain = now;
        deadline = now + STALL_CHECK_S;
      } else {
        deadline = now + STALL_CHECK_S;
      }
      continue;
    }
    double wait_s = deadline - now;
    if (phase == PH_JOIN && wait_s > PROBE_INTERVAL_S) wait_s = PROBE_INTERVAL_S;
    if (phase >= PH_WARMUP && wait_s > STALL_CHECK_S) wait_s = STALL_CHECK_S;
    int timeout = (int)(wait_s * 1e3) + 1;
    if (poll_events(events, MAX_EVENTS, timeout, rbuf) > 0) pump(mono_ns());
  }

  /* Every subscriber got every message its topic's publishers sent, exactly
   * once and in order: the per-message checks above saw no gap, duplicate or
   * reordering, and here each one's count matches each publisher's. */
  uint64_t sub_min = UINT64_MAX, sub_max = 0;
  for (int i = opt.publishers; i < nconns; i++) {
    struct conn *c = &conns[i];
    for (int j = c->topic; j < opt.publishers; j += opt.topics) {
      if (c->next_seq[j / opt.topics] != pubs[j].sent)
        fail("subscriber %d received %llu of the %llu messages publisher %d sent", c->index,
             (unsigned long long)c->next_seq[j / opt.topics], (unsigned long long)pubs[j].sent,
             j);
    }
    uint64_t got = c->received_in_window;
    if (got < sub_min) sub_min = got;
    if (got > sub_max) sub_max = got;
  }
  uint64_t pub_min = UINT64_MAX, pub_max = 0;
  for (int j = 0; j < opt.publishers; j++) {
    uint64_t done = pubs[j].completed_in_window;
    if (done < pub_min) pub_min = done;
    if (done > pub_max) pub_max = done;
  }

  double wall = end.t - start.t;
  uint64_t deliveries = deliveries_end - deliveries_start;
  uint64_t messages = completed_end - completed_start;
  printf("{\"ok\":true,\"publishers\":%d,\"topics\":%d,\"subs\":%d,\"size\":%zu,\"window\":%d,"
         "\"binary\":%s,\"connect_s\":%.3f,\"join_s\":%.3f,\"probes\":%llu,\"warmup_s\":%.3f,"
         "\"duration_s\":%.6f,\"drain_s\":%.3f,\"deliveries\":%llu,\"deliveries_per_s\":%.1f,"
         "\"messages\":%llu,\"msgs_per_s\":%.1f,\"verified_messages\":%llu,",
         opt.publishers, opt.topics, opt.subs, opt.size, opt.window,
         opt.binary ? "true" : "false", t_join - t_connect, t_data - t_join,
         (unsigned long long)probes_sent, opt.warmup_ms / 1e3, wall, t_drain,
         (unsigned long long)deliveries, (double)deliveries / wall, (unsigned long long)messages,
         (double)messages / wall, (unsigned long long)sent_total);
  print_latency_json(&latency);
  printf(",\"reads\":%llu,\"wire_bytes_in_per_s\":%.1f,\"sub_min\":%llu,\"sub_max\":%llu,"
         "\"pub_min\":%llu,\"pub_max\":%llu,",
         (unsigned long long)(end.reads - start.reads),
         (double)(end.bytes_in - start.bytes_in) / wall, (unsigned long long)sub_min,
         (unsigned long long)sub_max, (unsigned long long)pub_min, (unsigned long long)pub_max);
  print_cpu_json(&start, &end);
  printf(",\"machine_irq_pct\":%.1f,\"server_core_busy_pct\":%.1f,\"server_core_irq_pct\":%.1f}\n",
         pct(delta(start.machine_irq, end.machine_irq), wall),
         pct(delta(start.core, end.core), wall), pct(delta(start.core_irq, end.core_irq), wall));
  fflush(stdout);

  for (int i = 0; i < nconns; i++) {
    close_conn(&conns[i].ws);
    free(conns[i].msg);
  }
  close(epfd);
  return 0;
}
