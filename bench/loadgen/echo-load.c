/*
 * echo-load: a WebSocket echo load generator for Switchboard's benchmarks.
 *
 * One thread, epoll, non-blocking sockets. It opens N connections, performs the
 * RFC 6455 opening handshake itself (section 4.1), then keeps exactly K masked
 * frames in flight on every connection: each echoed message that arrives is
 * checked (opcode, length, content) and immediately replaced by a new one.
 * After a warm-up it counts echoed messages over a fixed wall-clock window and
 * prints one JSON object on stdout.
 *
 * Latency: every echo that arrives in the measured window adds the time from
 * the write of its message to its arrival to a histogram (loadgen.h). Echoes
 * come back in order on a connection (a server answers a connection's messages
 * in the order they arrived, and TCP keeps both directions in order), so the
 * send times of the messages in flight are a FIFO ring per connection. Both
 * ends are stamped with the time of the read being handled (loadgen.h's
 * loop_ns), one clock call per read rather than per message; a message sent in
 * answer is stamped a little before its write, an echo a little before its
 * read, by about the time it takes to handle one read (microseconds).
 *
 * It is written to cost as little CPU per message as possible so that the
 * server under test, not the generator, is the bottleneck:
 *   - every outgoing frame is built and masked once, up front, and reused. RFC
 *     6455 section 5.3 asks for an unpredictable masking key per frame; a fixed
 *     key is acceptable here because both ends are ours and on loopback, and a
 *     server must unmask whatever key it gets, so the server's work is the same;
 *   - frames produced while handling one read are written with one write();
 *   - echoed frames are parsed incrementally, straight out of the read buffer.
 *
 * With --deflate it offers permessage-deflate (RFC 7692). Every outgoing
 * message is compressed once, up front, without context takeover (a sender may
 * always choose to reset its context; section 7.2.1), and every echoed message
 * is inflated and verified, with the per-connection context the server chose.
 *
 * Exit status: 0 with {"ok":true,...}; 1 with {"ok":false,"error":...} on any
 * protocol, handshake or I/O error; 2 on bad usage.
 */

#define _GNU_SOURCE
#include <zlib.h>

#define HANDSHAKE_MAX 8192
#define OUT_BUF_MIN 4096
#include "loadgen.h"

#define MAX_EVENTS 256
#define INFLATE_CHUNK (64 * 1024)

enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DONE };

struct options {
  struct target_options t;
  int conns;
  int inflight;
  size_t size;
  int warmup_ms;
  int duration_ms;
  int connect_timeout_ms;
  int deflate;
  int binary;
};

struct conn {
  struct ws_conn ws;

  int msg_compressed;
  uint64_t msg_len; /* decoded bytes of the current message so far */

  int deflate; /* permessage-deflate negotiated */
  int client_window_bits;
  z_stream inf;
  int inf_ready;
  int inf_ended; /* a BFINAL block ended the stream inside this message */

  int inflight;
  uint64_t sent_seq; /* echoes come back in order, so sequence numbers pick the payload */
  uint64_t recv_seq;
  /* When each message in flight was sent, oldest at ring_out (opt.inflight entries). */
  uint64_t *sent_ns;
  int ring_in, ring_out;
  uint64_t received;
  uint64_t received_at_start;
};

_Static_assert(offsetof(struct conn, ws) == 0, "loadgen.h's conn_of needs ws first");

static struct options opt;
static struct conn *conns;
static enum phase phase = PH_CONNECT;

/* A pool of distinct payloads, sent in turn on every connection. Distinct
 * messages keep a compressing server honest: with context takeover, a server
 * echoing one repeated message would find all of it in its sliding window and
 * send a few bytes, which no real traffic does. */
static int pool;
static uint8_t **payloads;
static uint8_t **frame_plain; /* masked, uncompressed */
static size_t *frame_plain_len;
static uint8_t **frame_deflate[16]; /* masked, compressed, per client window bits */
static size_t *frame_deflate_len[16];
static uint8_t *inflate_out;

static uint64_t total_received;
static struct histogram latency;

/* ---------------------------------------------------------------- payloads */

/* Deterministic text that looks like chat or JSON traffic: it is valid UTF-8
 * (servers validate text frames, section 8.1) and compresses the way real text
 * does rather than collapsing to nothing like a run of one byte. */
static void make_payload(uint8_t *dst, size_t n, uint32_t seed) {
  static const char *words[] = {"switch", "board", "message", "topic", "\"id\":", "42,",
                                "{\"type\":", "\"chat\",", "hello", "world", "the", "quick",
                                "brown", "fox", "jumps", "over", "lazy", "dog", "0123456789",
                                "payload", "}", "stream", "echo", "frame"};
  uint32_t state = 2463534242u ^ (seed * 2654435761u);
  if (!state) state = 1;
  size_t i = 0;
  while (i < n) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    const char *w = words[state % (sizeof words / sizeof words[0])];
    for (const char *c = w; *c && i < n; c++) dst[i++] = (uint8_t)*c;
    if (i < n) dst[i++] = ' ';
  }
}

/* RFC 7692 section 7.2.1: compress, flush to a byte boundary, and drop the
 * trailing 0x00 0x00 0xff 0xff that the receiver will append again. */
static uint8_t *make_deflate_frame(int window_bits, const uint8_t *data, size_t *frame_len) {
  z_stream z;
  memset(&z, 0, sizeof z);
  /* zlib refuses a raw window of 8; 9 produces streams valid for 8 as well. */
  int wb = window_bits < 9 ? 9 : window_bits;
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -wb, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fail("deflateInit2 failed");
  size_t cap = deflateBound(&z, opt.size) + 16;
  uint8_t *tmp = malloc(cap);
  if (!tmp) fail("out of memory");
  z.next_in = (Bytef *)data;
  z.avail_in = (uInt)opt.size;
  z.next_out = tmp;
  z.avail_out = (uInt)cap;
  if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in != 0) fail("deflate failed");
  size_t clen = cap - z.avail_out;
  deflateEnd(&z);
  if (clen < 4 || memcmp(tmp + clen - 4, "\x00\x00\xff\xff", 4) != 0)
    fail("deflate output lacks the sync flush trailer");
  clen -= 4;
  uint8_t *frame = malloc(clen + 14);
  if (!frame) fail("out of memory");
  *frame_len = build_frame(frame, tmp, clen, opt.binary ? 2 : 1, 1);
  free(tmp);
  return frame;
}

static void make_deflate_frames(int window_bits) {
  if (frame_deflate[window_bits]) return;
  frame_deflate[window_bits] = calloc((size_t)pool, sizeof(uint8_t *));
  frame_deflate_len[window_bits] = calloc((size_t)pool, sizeof(size_t));
  if (!frame_deflate[window_bits] || !frame_deflate_len[window_bits]) fail("out of memory");
  for (int i = 0; i < pool; i++) {
    size_t len;
    frame_deflate[window_bits][i] = make_deflate_frame(window_bits, payloads[i], &len);
    frame_deflate_len[window_bits][i] = len;
  }
}

/* ---------------------------------------------------------------- output */

/* Appends the next message; `now` is when it will be written (mono_ns). */
static void send_message(struct conn *c, uint64_t now) {
  int i = (int)(c->sent_seq++ % (uint64_t)pool);
  if (c->deflate) {
    int wb = c->client_window_bits;
    out_append(&c->ws, frame_deflate[wb][i], frame_deflate_len[wb][i]);
  } else {
    out_append(&c->ws, frame_plain[i], frame_plain_len[i]);
  }
  c->inflight++;
  c->sent_ns[c->ring_in] = now;
  if (++c->ring_in == opt.inflight) c->ring_in = 0;
}

/* ---------------------------------------------------------------- frames */

static void check_chunk(struct conn *c, const uint8_t *data, size_t len) {
  if (c->msg_len + len > opt.size)
    fail("echoed message longer than %zu bytes on connection %ld", opt.size, c->ws.id);
  const uint8_t *expected = payloads[c->recv_seq % (uint64_t)pool];
  if (memcmp(data, expected + c->msg_len, len) != 0)
    fail("echoed payload differs from what was sent on connection %ld", c->ws.id);
  c->msg_len += len;
}

static void inflate_chunk(struct conn *c, const uint8_t *data, size_t len) {
  if (c->inf_ended) return; /* bytes after a final block are ignored */
  c->inf.next_in = (Bytef *)data;
  c->inf.avail_in = (uInt)len;
  while (c->inf.avail_in > 0) {
    c->inf.next_out = inflate_out;
    c->inf.avail_out = INFLATE_CHUNK;
    int rc = inflate(&c->inf, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
      fail("inflate failed on connection %ld: %d", c->ws.id, rc);
    size_t produced = INFLATE_CHUNK - c->inf.avail_out;
    if (produced) check_chunk(c, inflate_out, produced);
    if (rc == Z_STREAM_END) {
      c->inf_ended = 1;
      return;
    }
    if (rc == Z_BUF_ERROR && produced == 0) break;
  }
}

static void on_data_start(struct conn *c, int rsv1) {
  if (rsv1 && !c->deflate) fail("RSV1 set without permessage-deflate");
  c->msg_compressed = rsv1;
  c->msg_len = 0;
}

static void on_data(struct conn *c, const uint8_t *p, size_t n) {
  if (c->msg_compressed) inflate_chunk(c, p, n);
  else check_chunk(c, p, n);
}

static void on_message(struct conn *c, int opcode) {
  if (c->msg_compressed) {
    /* RFC 7692 section 7.2.2: append the trailer the sender removed. */
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    inflate_chunk(c, tail, 4);
    if (c->inf_ended) {
      inflateReset(&c->inf);
      c->inf_ended = 0;
    }
  }
  int want = opt.binary ? 2 : 1;
  if (opcode != want)
    fail("echoed message has opcode %d, sent %d, on connection %ld", opcode, want, c->ws.id);
  if (c->msg_len != opt.size)
    fail("echoed message has %llu bytes, sent %zu, on connection %ld",
         (unsigned long long)c->msg_len, opt.size, c->ws.id);
  if (c->inflight <= 0) fail("unsolicited message on connection %ld", c->ws.id);
  c->inflight--;
  uint64_t sent_ns = c->sent_ns[c->ring_out];
  if (++c->ring_out == opt.inflight) c->ring_out = 0;
  if (phase == PH_MEASURE) hist_add_ns(&latency, loop_ns > sent_ns ? loop_ns - sent_ns : 0);
  c->recv_seq++;
  c->received++;
  total_received++;
  c->msg_len = 0;
  c->msg_compressed = 0;
  if (phase != PH_DONE) send_message(c, loop_ns);
}

/* ---------------------------------------------------------------- handshake */

static char negotiated[256];

static void send_request(struct conn *c) {
  send_upgrade(&c->ws, opt.t.path,
               opt.deflate
                   ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                   : "");
}

static void accept_extensions(struct conn *c, const char *headers) {
  char v[256];
  c->client_window_bits = 15;
  if (header_value(headers, "Sec-WebSocket-Extensions", v, sizeof v)) {
    if (!opt.deflate) fail("server accepted an extension that was not offered: %s", v);
    if (strncasecmp(v, "permessage-deflate", 18) != 0) fail("unexpected extension: %s", v);
    c->deflate = 1;
    const char *cmw = strcasestr(v, "client_max_window_bits");
    if (cmw) {
      const char *eq = strchr(cmw, '=');
      const char *semi = strchr(cmw, ';');
      if (eq && (!semi || eq < semi)) {
        int bits = atoi(eq + 1 + (eq[1] == '"'));
        if (bits < 8 || bits > 15) fail("bad client_max_window_bits: %s", v);
        c->client_window_bits = bits;
      }
    }
    snprintf(negotiated, sizeof negotiated, "%s", v);
  } else if (opt.deflate) {
    fail("server did not accept permessage-deflate");
  }
  if (c->deflate) {
    make_deflate_frames(c->client_window_bits);
    memset(&c->inf, 0, sizeof c->inf);
    if (inflateInit2(&c->inf, -15) != Z_OK) fail("inflateInit2 failed");
    c->inf_ready = 1;
  }
}

/* Fills the connection's window of messages in flight, in one write. */
static void start_open(struct conn *c) {
  uint64_t now = mono_ns();
  for (int i = c->inflight; i < opt.inflight; i++) send_message(c, now);
  out_flush(&c->ws);
}

/* Connections that open during the connect phase start together when the last one is open. */
static void on_open(struct conn *c) {
  if (phase != PH_CONNECT) start_open(c);
}

/* ---------------------------------------------------------------- main loop */

static void usage(void) {
  fprintf(stderr,
          "usage: echo-load --port N [--host 127.0.0.1] [--path /echo] [--conns 64]\n"
          "                 [--inflight 16] [--size 32] [--warmup-ms 1000]\n"
          "                 [--duration-ms 3000] [--connect-timeout-ms 10000]\n"
          "                 [--deflate] [--binary] [--server-pid PID] [--server-cpu N] [--cpu N]\n");
  exit(2);
}

int main(int argc, char **argv) {
  target_defaults(&opt.t, "/echo");
  opt.conns = 64;
  opt.inflight = 16;
  opt.size = 32;
  opt.warmup_ms = 1000;
  opt.duration_ms = 3000;
  opt.connect_timeout_ms = 10000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--deflate")) opt.deflate = 1;
    else if (!strcmp(a, "--binary")) opt.binary = 1;
    else if (!v) usage();
    else if (parse_target_option(&opt.t, a, v)) i++;
    else if (!strcmp(a, "--conns")) opt.conns = (int)arg_long(v, 1, 10000), i++;
    else if (!strcmp(a, "--inflight")) opt.inflight = (int)arg_long(v, 1, 4096), i++;
    else if (!strcmp(a, "--size")) opt.size = (size_t)arg_long(v, 0, 16 * 1024 * 1024), i++;
    else if (!strcmp(a, "--warmup-ms")) opt.warmup_ms = (int)arg_long(v, 0, 600000), i++;
    else if (!strcmp(a, "--duration-ms")) opt.duration_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--connect-timeout-ms"))
      opt.connect_timeout_ms = (int)arg_long(v, 1, 600000), i++;
    else usage();
  }
  if (!opt.t.port) usage();
  setup_process(opt.t.cpu);
  setup_loop(opt.t.host, opt.t.port);

  /* Up to 64 distinct payloads, at most ~32 MiB of them. */
  pool = opt.size > 0 ? (int)((32u << 20) / opt.size) : 64;
  if (pool > 64) pool = 64;
  if (pool < 1) pool = 1;
  payloads = calloc((size_t)pool, sizeof *payloads);
  frame_plain = calloc((size_t)pool, sizeof *frame_plain);
  frame_plain_len = calloc((size_t)pool, sizeof *frame_plain_len);
  inflate_out = malloc(INFLATE_CHUNK);
  uint8_t *rbuf = malloc(READ_BUF_SIZE);
  conns = calloc((size_t)opt.conns, sizeof *conns);
  uint64_t *send_times = calloc((size_t)opt.conns * (size_t)opt.inflight, sizeof *send_times);
  if (!payloads || !frame_plain || !frame_plain_len || !inflate_out || !rbuf || !conns ||
      !send_times)
    fail("out of memory");
  for (int i = 0; i < opt.conns; i++) conns[i].sent_ns = send_times + (size_t)i * opt.inflight;
  for (int i = 0; i < pool; i++) {
    payloads[i] = malloc(opt.size + 1);
    frame_plain[i] = malloc(opt.size + 14);
    if (!payloads[i] || !frame_plain[i]) fail("out of memory");
    make_payload(payloads[i], opt.size, (uint32_t)i + 1);
    frame_plain_len[i] = build_frame(frame_plain[i], payloads[i], opt.size, opt.binary ? 2 : 1, 0);
  }

  for (int i = 0; i < opt.conns; i++) open_connection(&conns[i].ws, i);

  struct epoll_event events[MAX_EVENTS];
  double t_connect = now_s();
  double deadline = t_connect + opt.connect_timeout_ms / 1e3;
  struct reading start = {0}, end = {0};
  uint64_t count_start = 0, count_end = 0;

  while (phase != PH_DONE) {
    double now = now_s();
    if (phase == PH_CONNECT && open_count == opt.conns) {
      phase = PH_WARMUP;
      for (int i = 0; i < opt.conns; i++) start_open(&conns[i]);
      deadline = now + opt.warmup_ms / 1e3;
    }
    if (now >= deadline) {
      if (phase == PH_CONNECT) {
        fail("only %d of %d connections open after %d ms", open_count, opt.conns,
             opt.connect_timeout_ms);
      } else if (phase == PH_WARMUP) {
        phase = PH_MEASURE;
        count_start = total_received;
        for (int i = 0; i < opt.conns; i++) conns[i].received_at_start = conns[i].received;
        read_window_start(&start, opt.t.server_pid, opt.t.server_cpu);
        deadline = start.t + opt.duration_ms / 1e3;
      } else {
        read_window_end(&end, opt.t.server_pid, opt.t.server_cpu);
        count_end = total_received;
        phase = PH_DONE;
        break;
      }
      continue;
    }
    int timeout = (int)((deadline - now) * 1e3) + 1;
    poll_events(events, MAX_EVENTS, timeout, rbuf);
  }

  uint64_t min = UINT64_MAX, max = 0;
  for (int i = 0; i < opt.conns; i++) {
    uint64_t got = conns[i].received - conns[i].received_at_start;
    if (got < min) min = got;
    if (got > max) max = got;
  }
  /* Mean size of what the generator sends per message, to compare with what it receives. */
  double mean_frame = 0;
  size_t *lens = opt.deflate ? frame_deflate_len[conns[0].client_window_bits] : frame_plain_len;
  for (int i = 0; i < pool; i++) mean_frame += (double)lens[i] / pool;
  double wall = end.t - start.t;
  uint64_t messages = count_end - count_start;
  printf("{\"ok\":true,\"size\":%zu,\"conns\":%d,\"inflight\":%d,\"deflate\":%s,"
         "\"binary\":%s,\"warmup_s\":%.3f,\"duration_s\":%.6f,"
         "\"messages\":%llu,\"msgs_per_s\":%.1f,\"payload_bytes_per_s\":%.1f,"
         "\"wire_bytes_in_per_s\":%.1f,\"reads\":%llu,\"writes\":%llu,"
         "\"conn_min\":%llu,\"conn_max\":%llu,",
         opt.size, opt.conns, opt.inflight, opt.deflate ? "true" : "false",
         opt.binary ? "true" : "false", opt.warmup_ms / 1e3, wall,
         (unsigned long long)messages, (double)messages / wall,
         (double)messages * (double)opt.size / wall, (double)(end.bytes_in - start.bytes_in) / wall,
         (unsigned long long)(end.reads - start.reads),
         (unsigned long long)(end.writes - start.writes), (unsigned long long)min,
         (unsigned long long)max);
  print_latency_json(&latency);
  putchar(',');
  print_cpu_json(&start, &end);
  if (opt.t.server_cpu >= 0) {
    printf(",\"server_core_busy_pct\":%.1f,\"server_core_irq_pct\":%.1f",
           pct(delta(start.core, end.core), wall), pct(delta(start.core_irq, end.core_irq), wall));
  }
  printf(",\"client_frame_bytes\":%.1f,\"payloads\":%d,\"negotiated\":", mean_frame, pool);
  print_json_string(negotiated);
  printf("}\n");
  fflush(stdout);

  for (int i = 0; i < opt.conns; i++) {
    if (conns[i].inf_ready) inflateEnd(&conns[i].inf);
    close_conn(&conns[i].ws);
  }
  close(epfd);
  return 0;
}
