/*
 * broadcast-load: a WebSocket fan-out load generator for Switchboard's benchmarks.
 *
 * One thread, epoll, non-blocking sockets. It opens one publisher connection and
 * N subscriber connections to the same server, performs the RFC 6455 opening
 * handshake itself (section 4.1), and then has the publisher send messages that
 * the server is expected to deliver to every subscriber (a topic publish, or a
 * loop over the server's clients; the server decides how).
 *
 * The publisher keeps at most W messages outstanding, where a message is
 * outstanding from the moment it is written until the last subscriber has
 * received it. That keeps the server busy without flooding it: a server that
 * falls behind makes the publisher wait, as a real publisher with
 * acknowledgements would, instead of growing its queues without limit. W
 * messages of S bytes per subscriber is also all a server may have queued for
 * one subscriber, far below any slow-consumer limit (uWebSockets.js skips a
 * subscriber with more than 64 KiB of backpressure by default).
 *
 * Every message carries its sequence number (8 hex digits, then a fixed
 * filler), so every delivery is verified: each subscriber must receive every
 * message exactly once, in order, with the right opcode, length and bytes. A
 * wrong, missing, duplicated or reordered delivery ends the run with an error
 * rather than a figure, and so does a message that stops making progress.
 * After the measured window the publisher stops and the generator waits until
 * every message it sent has reached every subscriber, so the check covers the
 * whole run.
 *
 * Joining: a server subscribes a client when it opens, but not necessarily
 * before the upgrade response leaves (a service in a worker thread subscribes
 * asynchronously). So before the first counted message the publisher sends a
 * short "probe" message every few milliseconds until every subscriber has
 * received one; probes that arrive before a subscriber's first real message
 * are ignored, which is only possible because every server keeps one
 * publisher's messages in order.
 *
 * Latency is measured from the write of a message to its delivery to the last
 * subscriber, so it includes waiting in the window: with W messages in flight
 * it is about W / (messages per second) when the server is the bottleneck.
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
#define SEQ_DIGITS 8
#define MIN_SIZE 16
#define PROBE_INTERVAL_S 0.01
#define MAX_LATENCIES (4u << 20)

static const uint8_t PROBE[] = "probe";
#define PROBE_LEN (sizeof PROBE - 1)

enum phase { PH_CONNECT, PH_JOIN, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

struct options {
  const char *host;
  int port;
  const char *path;
  const char *publisher_query;
  int subs;
  int window;
  size_t size;
  int warmup_ms;
  int duration_ms;
  int connect_timeout_ms;
  int stall_ms;
  int binary;
  long server_pid;
  int cpu;
  int server_cpu;
};

struct conn {
  struct ws_conn ws;
  int publisher;

  uint8_t *msg; /* the current data message, up to opt.size bytes */
  size_t msg_len;
  int msg_too_long;

  /* Subscriber state. */
  int joined;
  uint64_t next_seq;
  uint64_t received;
  uint64_t received_at_start;
  uint64_t received_in_window;
};

_Static_assert(offsetof(struct conn, ws) == 0, "loadgen.h's conn_of needs ws first");

static struct options opt;
static struct conn *conns; /* conns[0] is the publisher */
static int nconns;
static enum phase phase = PH_CONNECT;
static int next_to_open, joined_count;

/* The publisher's window: per outstanding message, how many subscribers have it. */
static uint32_t *delivered_to;
static double *sent_at;
static uint64_t sent, completed, probes_sent;
static double last_probe_at, last_progress_at;

static uint8_t *frame_template; /* a masked data frame; only the sequence digits change */
static size_t frame_len, seq_offset;
static uint8_t *filler; /* the payload after the sequence digits */

static uint64_t total_deliveries;
static double *latencies;
static size_t latency_count;

/* ---------------------------------------------------------------- frames out */

static const char HEX[] = "0123456789abcdef";

/* Appends data message `seq` to the publisher's output. */
static void publish_one(struct conn *pub, double now) {
  uint64_t seq = sent++;
  uint8_t *dst = out_reserve(&pub->ws, frame_len);
  memcpy(dst, frame_template, frame_len);
  for (int i = 0; i < SEQ_DIGITS; i++) {
    size_t at = seq_offset + (size_t)i;
    uint8_t digit = (uint8_t)HEX[(seq >> (4 * (SEQ_DIGITS - 1 - i))) & 0xf];
    dst[at] = digit ^ MASK_KEY[i & 3];
  }
  sent_at[seq % (uint64_t)opt.window] = now;
}

/* Tops the window up and writes everything in one write(). */
static void pump(double now) {
  if (phase != PH_WARMUP && phase != PH_MEASURE) return;
  struct conn *pub = &conns[0];
  int added = 0;
  while (sent - completed < (uint64_t)opt.window) {
    publish_one(pub, now);
    added = 1;
  }
  if (added) out_flush(&pub->ws);
}

/* ---------------------------------------------------------------- frames in */

static void on_data_start(struct conn *c, int rsv1) {
  if (rsv1)
    fail("RSV1 set by the server on connection %ld (nothing was negotiated)", c->ws.id);
  if (c->publisher) fail("the publisher received a message; it is not subscribed");
  c->msg_len = 0;
  c->msg_too_long = 0;
}

static void on_data(struct conn *c, const uint8_t *p, size_t n) {
  size_t room = opt.size - c->msg_len;
  if (n > room) c->msg_too_long = 1;
  memcpy(c->msg + c->msg_len, p, n < room ? n : room);
  c->msg_len += n < room ? n : room;
}

static void on_message(struct conn *c, int opcode) {
  int want = opt.binary ? 2 : 1;
  if (c->msg_too_long)
    fail("subscriber %ld got a message longer than %zu bytes", c->ws.id, opt.size);
  if (opcode != want)
    fail("subscriber %ld got opcode %d, the publisher sent %d", c->ws.id, opcode, want);
  if (c->msg_len == PROBE_LEN && memcmp(c->msg, PROBE, PROBE_LEN) == 0) {
    /* Probes only precede a subscriber's first real message: one publisher's
     * messages reach each subscriber in the order they were sent. */
    if (c->next_seq != 0)
      fail("subscriber %ld got a probe after message %llu (reordered delivery)", c->ws.id,
           (unsigned long long)(c->next_seq - 1));
    if (!c->joined) {
      c->joined = 1;
      joined_count++;
    }
    return;
  }
  if (c->msg_len != opt.size)
    fail("subscriber %ld got a %zu-byte message, the publisher sent %zu", c->ws.id,
         c->msg_len, opt.size);
  if (!c->joined)
    fail("subscriber %ld got a message before the data stream started", c->ws.id);
  uint64_t seq = 0;
  for (int i = 0; i < SEQ_DIGITS; i++) {
    uint8_t ch = c->msg[i];
    int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (v < 0) fail("subscriber %ld got a message without a sequence number", c->ws.id);
    seq = (seq << 4) | (uint64_t)v;
  }
  if (seq != (c->next_seq & 0xffffffffu)) {
    const char *what = seq < (c->next_seq & 0xffffffffu) ? "a duplicate or reordered message"
                                                        : "a gap (a message was lost)";
    fail("subscriber %ld got message %llu, expected %llu: %s", c->ws.id,
         (unsigned long long)seq, (unsigned long long)c->next_seq, what);
  }
  if (memcmp(c->msg + SEQ_DIGITS, filler, opt.size - SEQ_DIGITS) != 0)
    fail("subscriber %ld got message %llu with different bytes than were sent", c->ws.id,
         (unsigned long long)seq);
  if (c->next_seq >= sent)
    fail("subscriber %ld got message %llu, which was not sent yet", c->ws.id,
         (unsigned long long)c->next_seq);
  uint64_t slot = c->next_seq % (uint64_t)opt.window;
  c->next_seq++;
  c->received++;
  total_deliveries++;
  if (++delivered_to[slot] == (uint32_t)opt.subs) {
    /* Every subscriber receives in order, so the last one to get message n has
     * every message before it as well: messages complete in order. */
    delivered_to[slot] = 0;
    completed++;
    double now = now_s();
    last_progress_at = now;
    if (phase == PH_MEASURE && latency_count < MAX_LATENCIES)
      latencies[latency_count++] = now - sent_at[slot];
  }
}

/* ---------------------------------------------------------------- handshake */

static void send_request(struct conn *c) {
  char path[1024];
  if (c->publisher)
    snprintf(path, sizeof path, "%s%c%s", opt.path, strchr(opt.path, '?') ? '&' : '?',
             opt.publisher_query);
  else
    snprintf(path, sizeof path, "%s", opt.path);
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
          "usage: broadcast-load --port N [--host 127.0.0.1] [--path /topic]\n"
          "                      [--publisher-query role=publisher] [--subs 1000] [--size 64]\n"
          "                      [--window 32] [--warmup-ms 1000] [--duration-ms 3000]\n"
          "                      [--connect-timeout-ms 20000] [--stall-ms 5000] [--binary]\n"
          "                      [--server-pid PID] [--server-cpu N] [--cpu N]\n");
  exit(2);
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double percentile(double q) {
  if (latency_count == 0) return -1;
  size_t i = (size_t)(q * (double)(latency_count - 1) + 0.5);
  return latencies[i];
}

int main(int argc, char **argv) {
  opt.host = "127.0.0.1";
  opt.path = "/topic";
  opt.publisher_query = "role=publisher";
  opt.subs = 1000;
  opt.window = 32;
  opt.size = 64;
  opt.warmup_ms = 1000;
  opt.duration_ms = 3000;
  opt.connect_timeout_ms = 20000;
  opt.stall_ms = 5000;
  opt.cpu = -1;
  opt.server_cpu = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--binary")) opt.binary = 1;
    else if (!v) usage();
    else if (!strcmp(a, "--host")) opt.host = v, i++;
    else if (!strcmp(a, "--port")) opt.port = (int)arg_long(v, 1, 65535), i++;
    else if (!strcmp(a, "--path")) opt.path = v, i++;
    else if (!strcmp(a, "--publisher-query")) opt.publisher_query = v, i++;
    else if (!strcmp(a, "--subs")) opt.subs = (int)arg_long(v, 1, 15000), i++;
    else if (!strcmp(a, "--window")) opt.window = (int)arg_long(v, 1, 4096), i++;
    else if (!strcmp(a, "--size")) opt.size = (size_t)arg_long(v, MIN_SIZE, 65535), i++;
    else if (!strcmp(a, "--warmup-ms")) opt.warmup_ms = (int)arg_long(v, 0, 600000), i++;
    else if (!strcmp(a, "--duration-ms")) opt.duration_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--connect-timeout-ms"))
      opt.connect_timeout_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--stall-ms")) opt.stall_ms = (int)arg_long(v, 100, 600000), i++;
    else if (!strcmp(a, "--server-pid")) opt.server_pid = arg_long(v, 1, 1L << 30), i++;
    else if (!strcmp(a, "--cpu")) opt.cpu = (int)arg_long(v, 0, 1023), i++;
    else if (!strcmp(a, "--server-cpu")) opt.server_cpu = (int)arg_long(v, 0, 1023), i++;
    else usage();
  }
  if (!opt.port) usage();
  setup_process(opt.cpu);
  nconns = opt.subs + 1;
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)nconns + 16) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_NOFILE, &nofile);
    if (nofile.rlim_cur < (rlim_t)nconns + 16)
      fail("%d connections need more open files than the limit of %llu", nconns,
           (unsigned long long)nofile.rlim_cur);
  }
  setup_loop(opt.host, opt.port);

  /* The payload: 8 hex digits of the sequence number, then printable filler, so
   * the message is valid UTF-8 and may go as text (section 8.1). */
  uint8_t *payload = malloc(opt.size);
  filler = malloc(opt.size);
  frame_template = malloc(opt.size + 14);
  delivered_to = calloc((size_t)opt.window, sizeof *delivered_to);
  sent_at = calloc((size_t)opt.window, sizeof *sent_at);
  latencies = malloc(MAX_LATENCIES * sizeof *latencies);
  uint8_t *rbuf = malloc(READ_BUF_SIZE);
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!payload || !filler || !frame_template || !delivered_to || !sent_at || !latencies || !rbuf ||
      !conns)
    fail("out of memory");
  memset(payload, '0', SEQ_DIGITS);
  for (size_t i = SEQ_DIGITS; i < opt.size; i++) payload[i] = (uint8_t)('a' + (i * 7) % 26);
  memcpy(filler, payload + SEQ_DIGITS, opt.size - SEQ_DIGITS);
  frame_len = build_frame(frame_template, payload, opt.size, opt.binary ? 2 : 1, 0);
  seq_offset = frame_len - opt.size;
  for (int i = 0; i < nconns; i++) {
    conns[i].ws.fd = -1;
    conns[i].publisher = i == 0;
    if (!conns[i].publisher) {
      conns[i].msg = malloc(opt.size);
      if (!conns[i].msg) fail("out of memory");
    }
  }

  double t_connect = now_s();
  open_next();

  struct epoll_event events[MAX_EVENTS];
  double deadline = t_connect + opt.connect_timeout_ms / 1e3;
  double t_join = 0, t_data = 0;
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
      last_progress_at = now;
      deadline = now + opt.warmup_ms / 1e3;
      pump(now);
    }
    if (phase == PH_JOIN && now - last_probe_at >= PROBE_INTERVAL_S) {
      uint8_t frame[6 + PROBE_LEN];
      out_append(&conns[0].ws, frame, build_frame(frame, PROBE, PROBE_LEN, opt.binary ? 2 : 1, 0));
      out_flush(&conns[0].ws);
      probes_sent++;
      last_probe_at = now;
    }
    if (phase >= PH_WARMUP && phase <= PH_DRAIN && sent > completed &&
        now - last_progress_at > opt.stall_ms / 1e3) {
      uint64_t slot = completed % (uint64_t)opt.window;
      fail("no progress for %d ms: message %llu reached %u of %d subscribers", opt.stall_ms,
           (unsigned long long)completed, delivered_to[slot], opt.subs);
    }
    if (phase == PH_DRAIN && completed == sent) {
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
        completed_start = completed;
        for (int i = 1; i < nconns; i++) conns[i].received_at_start = conns[i].received;
        read_window_start(&start, opt.server_pid, opt.server_cpu);
        deadline = start.t + opt.duration_ms / 1e3;
      } else if (phase == PH_MEASURE) {
        read_window_end(&end, opt.server_pid, opt.server_cpu);
        deliveries_end = total_deliveries;
        completed_end = completed;
        for (int i = 1; i < nconns; i++)
          conns[i].received_in_window = conns[i].received - conns[i].received_at_start;
        /* Stop publishing, and wait until what was sent has reached everyone. */
        phase = PH_DRAIN;
        last_progress_at = now;
        deadline = now + opt.stall_ms / 1e3 + 1;
      } else {
        fail("%llu of %llu messages still undelivered %d ms after the publisher stopped",
             (unsigned long long)(sent - completed), (unsigned long long)sent, opt.stall_ms);
      }
      continue;
    }
    double wait_s = deadline - now;
    if (phase == PH_JOIN && wait_s > PROBE_INTERVAL_S) wait_s = PROBE_INTERVAL_S;
    if (phase >= PH_WARMUP && wait_s > 0.1) wait_s = 0.1; /* for the stall check */
    int timeout = (int)(wait_s * 1e3) + 1;
    if (poll_events(events, MAX_EVENTS, timeout, rbuf) > 0) pump(now_s());
  }

  /* Every subscriber got every message sent, exactly once and in order: the
   * per-message checks above saw no gap, duplicate or reordering, and here
   * each one's count matches the publisher's. */
  uint64_t sub_min = UINT64_MAX, sub_max = 0;
  for (int i = 1; i < nconns; i++) {
    if (conns[i].next_seq != sent)
      fail("subscriber %d received %llu of the %llu messages sent", i,
           (unsigned long long)conns[i].next_seq, (unsigned long long)sent);
    uint64_t got = conns[i].received_in_window;
    if (got < sub_min) sub_min = got;
    if (got > sub_max) sub_max = got;
  }
  qsort(latencies, latency_count, sizeof *latencies, compare_double);

  double wall = end.t - start.t;
  uint64_t deliveries = deliveries_end - deliveries_start;
  uint64_t messages = completed_end - completed_start;
  printf("{\"ok\":true,\"subs\":%d,\"size\":%zu,\"window\":%d,\"binary\":%s,"
         "\"connect_s\":%.3f,\"join_s\":%.3f,\"probes\":%llu,\"warmup_s\":%.3f,"
         "\"duration_s\":%.6f,\"deliveries\":%llu,\"deliveries_per_s\":%.1f,"
         "\"messages\":%llu,\"msgs_per_s\":%.1f,\"verified_messages\":%llu,"
         "\"latency_samples\":%zu,\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,"
         "\"latency_max_ms\":%.3f,\"reads\":%llu,\"wire_bytes_in_per_s\":%.1f,"
         "\"sub_min\":%llu,\"sub_max\":%llu,",
         opt.subs, opt.size, opt.window, opt.binary ? "true" : "false", t_join - t_connect,
         t_data - t_join, (unsigned long long)probes_sent, opt.warmup_ms / 1e3, wall,
         (unsigned long long)deliveries, (double)deliveries / wall, (unsigned long long)messages,
         (double)messages / wall, (unsigned long long)sent, latency_count,
         percentile(0.5) * 1e3, percentile(0.99) * 1e3,
         latency_count ? latencies[latency_count - 1] * 1e3 : -1.0,
         (unsigned long long)(end.reads - start.reads),
         (double)(end.bytes_in - start.bytes_in) / wall, (unsigned long long)sub_min,
         (unsigned long long)sub_max);
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
