/*
 * connect-load: a WebSocket connection-rate load generator for Switchboard's
 * benchmarks: opening and closing handshakes per second.
 *
 * One thread, epoll, non-blocking sockets. It keeps exactly C connections in
 * progress, each going through one whole life:
 *   1. a non-blocking TCP connect to the server;
 *   2. the opening handshake (RFC 6455 section 4.1), with a fresh random
 *      Sec-WebSocket-Key every time, and the client's checks of the 101
 *      response, Sec-WebSocket-Accept included (section 4.2.2);
 *   3. the closing handshake started by the client: a masked close frame with
 *      code 1000, then the server's close frame, which must echo 1000
 *      (section 5.5.1);
 *   4. the server's TCP FIN: the server closes the TCP connection first
 *      (section 7.1.1), and only then does the client close its socket.
 * Each connection that completes is counted and immediately replaced by a new
 * one. Anything else ends the run with an error naming the connection: a
 * refused connect, a status other than 101, a wrong accept value, an
 * extension or subprotocol that was not offered, a close code other than
 * 1000, any other frame, data after the close frame, a reset, or a connection
 * that takes longer than --timeout-ms.
 *
 * Because the server sends its FIN first, TIME_WAIT (RFC 793: held by the
 * side that closes first) lands on the server's side of each connection, and
 * the client's ephemeral port is free again as soon as the client's own FIN
 * is acknowledged. A new connection that happens to reuse a port whose
 * server-side socket is still in TIME_WAIT is accepted by the kernel (its SYN
 * carries a newer timestamp, RFC 6191). Nothing here shortens the closing
 * handshake: SO_LINGER with a zero timeout would turn each clean close into
 * a reset and skip exactly the work this benchmark measures.
 *
 * After a warm-up it counts the connections that complete in a fixed
 * wall-clock window, with the latency of each whole cycle (from connect() to
 * the server's FIN) in a log-bucket histogram, then stops starting new ones
 * and waits, bounded, for those in progress to complete just as cleanly.
 *
 * Exit status: 0 with {"ok":true,...}; 1 with {"ok":false,"error":...} on the
 * first handshake, protocol or I/O error; 2 on bad usage.
 */

#define _GNU_SOURCE
#define HANDSHAKE_MAX 4096
/* A connection only ever writes an upgrade request and a close frame. */
#define OUT_BUF_MIN 512
#define LOADGEN_OWN_LOOP
#include "loadgen.h"

#include <sys/random.h>

#define MAX_EVENTS 256
#define MAX_CONCURRENCY 4096
/* Bounds the wait in epoll_wait, so that the timeout check runs this often. */
#define TICK_MS 50

enum phase { PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

/* Where a connection is in its life; one step per server event. */
enum stage {
  ST_IDLE,       /* no connection (after the measured window) */
  ST_CONNECTING, /* connect() called, waiting for the TCP handshake */
  ST_UPGRADING,  /* request sent, waiting for the 101 response */
  ST_CLOSING,    /* close frame sent, waiting for the server's */
  ST_DRAINING,   /* the server's close frame received, waiting for its FIN */
};

static const char *const STAGE_WAITS[] = {
    "idle",
    "waiting for the TCP connect",
    "waiting for the 101 response",
    "waiting for the server's close frame",
    "waiting for the server's FIN",
};

struct options {
  struct target_options t;
  int concurrency;
  int warmup_ms;
  int duration_ms;
  int timeout_ms;
};

struct conn {
  struct ws_conn ws;
  enum stage stage;
  double started;  /* when connect() was called */
  double upgraded; /* when the 101 response was validated */
  char key[25];    /* base64 of 16 bytes, and a NUL */
  char accept[29]; /* base64 of 20 bytes, and a NUL */
  /* The server's close frame: unmasked (section 5.1), at most 125 bytes of
   * payload (section 5.5), so a 2-byte header and at most 125 bytes. */
  uint8_t frame[2 + 125];
  size_t frame_len;
};

_Static_assert(offsetof(struct conn, ws) == 0, "loadgen.h's conn_of needs ws first");

static struct options opt;
static struct conn *conns;
static enum phase phase = PH_WARMUP;
static long next_id;
static int in_progress;
static uint64_t completed, completed_in_window;

/* ---------------------------------------------------------------- SHA-1 and base64 */

/* FIPS 180-4 section 6.1: SHA-1 is what section 4.2.2 of RFC 6455 derives the
 * accept value with. The input here is always 60 bytes (key and GUID). */
static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
  uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
  uint8_t block[64];
  size_t total = ((len + 8) / 64 + 1) * 64; /* the message, 0x80, zeros and the bit length */
  for (size_t off = 0; off < total; off += 64) {
    for (size_t i = 0; i < 64; i++) {
      size_t at = off + i;
      if (at < len) block[i] = msg[at];
      else if (at == len) block[i] = 0x80;
      else if (at >= total - 8) block[i] = (uint8_t)(((uint64_t)len * 8) >> (8 * (total - 1 - at)));
      else block[i] = 0;
    }
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
      w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
             (uint32_t)block[4 * t + 2] << 8 | block[4 * t + 3];
    for (int t = 16; t < 80; t++) {
      uint32_t x = w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16];
      w[t] = x << 1 | x >> 31;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
      uint32_t f, k;
      if (t < 20) f = (b & c) | (~b & d), k = 0x5a827999;
      else if (t < 40) f = b ^ c ^ d, k = 0x6ed9eba1;
      else if (t < 60) f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
      else f = b ^ c ^ d, k = 0xca62c1d6;
      uint32_t tmp = (a << 5 | a >> 27) + f + e + k + w[t];
      e = d, d = c, c = b << 30 | b >> 2, b = a, a = tmp;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
  }
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

/* RFC 4648 section 4, with padding, as section 4.1 of RFC 6455 asks. */
static void base64(const uint8_t *in, size_t len, char *out) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < len) v |= in[i + 2];
    out[o++] = digits[v >> 18 & 63];
    out[o++] = digits[v >> 12 & 63];
    out[o++] = i + 1 < len ? digits[v >> 6 & 63] : '=';
    out[o++] = i + 2 < len ? digits[v & 63] : '=';
  }
  out[o] = '\0';
}

/* Section 4.2.2, step 5.4: base64(SHA-1(key + GUID)). */
static void accept_for(const char *key, char out[29]) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  uint8_t buf[24 + sizeof guid - 1], digest[20];
  memcpy(buf, key, 24);
  memcpy(buf + 24, guid, sizeof guid - 1);
  sha1(buf, sizeof buf, digest);
  base64(digest, 20, out);
}

/* ---------------------------------------------------------------- keys */

/* Section 4.1 asks for a randomly selected 16-byte nonce per connection. A
 * xorshift generator seeded from the kernel's randomness gives a different
 * key every time without a getrandom() call per connection; the key only
 * proves that the server computes its accept value per request (section 10.3
 * is about intermediaries, of which there are none on loopback). */
static uint64_t rng_state;

static uint64_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void new_key(char out[25]) {
  uint8_t nonce[16];
  uint64_t a = next_random(), b = next_random();
  memcpy(nonce, &a, 8);
  memcpy(nonce + 8, &b, 8);
  base64(nonce, 16, out);
}

/* ---------------------------------------------------------------- latency */

/* Whole cycles and upgrades, in loadgen.h's log-bucket histograms. */
static struct histogram cycle_hist, upgrade_hist;

/* ---------------------------------------------------------------- one connection */

static void start_connection(struct conn *c) {
  /* A new connection in the same slot keeps the slot's output buffer. */
  uint8_t *out = c->ws.out;
  size_t out_cap = c->ws.out_cap;
  memset(c, 0, sizeof *c);
  c->ws.out = out;
  c->ws.out_cap = out_cap;
  new_key(c->key);
  accept_for(c->key, c->accept);
  c->stage = ST_CONNECTING;
  c->started = now_s();
  open_connection(&c->ws, next_id++);
  in_progress++;
}

static void send_request(struct conn *c) {
  write_upgrade(&c->ws, opt.t.path, c->key, "");
  c->stage = ST_UPGRADING;
}

/* The server's FIN after its close frame: the connection is complete. */
static void finish(struct conn *c) {
  double t = now_s();
  /* The server has closed its side; closing ours now sends our FIN and leaves
   * the socket to the kernel until that is acknowledged (section 7.1.1). */
  close(c->ws.fd);
  c->ws.fd = -1;
  c->stage = ST_IDLE;
  in_progress--;
  open_count--;
  completed++;
  if (phase == PH_MEASURE) {
    completed_in_window++;
    hist_add(&cycle_hist, t - c->started);
    hist_add(&upgrade_hist, c->upgraded - c->started);
  }
  if (phase == PH_WARMUP || phase == PH_MEASURE) start_connection(c);
}

/* Bytes from the server after the 101 response: its close frame, once. */
static void closing_data(struct conn *c, const uint8_t *p, size_t n) {
  if (c->stage == ST_DRAINING)
    fail("connection %ld: %zu bytes after the server's close frame (RFC 6455 section 5.5.1)",
         c->ws.id, n);
  size_t room = sizeof c->frame - c->frame_len;
  size_t take = n < room ? n : room;
  memcpy(c->frame + c->frame_len, p, take);
  c->frame_len += take;
  if (c->frame_len < 2) return;
  uint8_t b0 = c->frame[0], b1 = c->frame[1];
  if (b0 != 0x88) {
    fail("connection %ld: expected the server's close frame (0x88), got a frame starting 0x%02x "
         "(opcode %d)",
         c->ws.id, b0, b0 & 0x0f);
  }
  if (b1 & 0x80) fail("connection %ld: the server's close frame is masked (section 5.1)", c->ws.id);
  size_t len = b1 & 0x7f;
  if (len > 125) fail("connection %ld: close frame longer than 125 bytes (section 5.5)", c->ws.id);
  if (c->frame_len < 2 + len) return;
  if (c->frame_len > 2 + len || take < n)
    fail("connection %ld: data after the server's close frame (section 5.5.1)", c->ws.id);
  unsigned code = len >= 2 ? (unsigned)c->frame[2] << 8 | c->frame[3] : 1005;
  if (len == 1 || code != 1000)
    fail("connection %ld: the server's close frame has code %u, not the 1000 it was sent "
         "(section 5.5.1)",
         c->ws.id, len == 1 ? 0 : code);
  c->stage = ST_DRAINING;
}


static void upgrade_read(struct conn *c) {
  struct ws_conn *w = &c->ws;
  size_t head_len = read_upgrade_head(w, STAGE_WAITS[c->stage]);
  if (head_len == 0) return;
  check_upgrade_response(w, c->accept, c->key);
  c->upgraded = now_s();
  connecting--;
  open_count++;
  /* Section 7.1.2: the client starts the closing handshake with code 1000. */
  static const uint8_t normal[2] = {0x03, 0xe8};
  send_control(w, 8, normal, 2);
  c->stage = ST_CLOSING;
  w->state = C_OPEN;
  out_flush(w);
  /* Anything that came with the response is the server's first frame. */
  if (w->hs_len > head_len)
    closing_data(c, (const uint8_t *)w->hs + head_len, w->hs_len - head_len);
}

/* After the close frame was sent: read the server's close frame, then its FIN.
 * Both usually arrive together, so it reads on until the socket is empty. */
static void closing_read(struct conn *c, uint8_t *rbuf) {
  for (int i = 0; i < 4; i++) {
    ssize_t n = read(c->ws.fd, rbuf, READ_BUF_SIZE);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      if (errno == ECONNRESET)
        fail("connection %ld: reset by the server (RST) %s", c->ws.id, STAGE_WAITS[c->stage]);
      fail("connection %ld: read %s: %s", c->ws.id, STAGE_WAITS[c->stage], strerror(errno));
    }
    if (n == 0) {
      if (c->stage != ST_DRAINING)
        fail("connection %ld: the server closed TCP before its close frame (RFC 6455 section "
             "7.1.1)",
             c->ws.id);
      finish(c);
      return;
    }
    bytes_in += (uint64_t)n;
    reads_done++;
    closing_data(c, rbuf, (size_t)n);
  }
}

static void on_conn_event(struct conn *c, uint32_t events, uint8_t *rbuf) {
  if (c->stage == ST_CONNECTING) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->ws.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err)
      fail("connection %ld: connect to %s:%d: %s", c->ws.id, server.host, server.port,
           strerror(err));
    send_request(c);
    return;
  }
  if (events & EPOLLOUT) out_flush(&c->ws);
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  if (c->stage == ST_UPGRADING) upgrade_read(c);
  else if (c->stage == ST_CLOSING || c->stage == ST_DRAINING) closing_read(c, rbuf);
}

static void check_timeouts(double now) {
  for (int i = 0; i < opt.concurrency; i++) {
    struct conn *c = &conns[i];
    if (c->stage != ST_IDLE && now - c->started > opt.timeout_ms / 1e3)
      fail("connection %ld: no progress in %d ms, %s", c->ws.id, opt.timeout_ms,
           STAGE_WAITS[c->stage]);
  }
}

/* ---------------------------------------------------------------- main loop */

static void usage(void) {
  fprintf(stderr,
          "usage: connect-load --port N [--host 127.0.0.1] [--path /echo] [--concurrency 32]\n"
          "                    [--warmup-ms 1000] [--duration-ms 3000] [--timeout-ms 5000]\n"
          "                    [--server-pid PID] [--server-cpu N] [--cpu N]\n");
  exit(2);
}

int main(int argc, char **argv) {
  target_defaults(&opt.t, "/echo");
  opt.concurrency = 32;
  opt.warmup_ms = 1000;
  opt.duration_ms = 3000;
  opt.timeout_ms = 5000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    else if (parse_target_option(&opt.t, a, v)) i++;
    else if (!strcmp(a, "--concurrency"))
      opt.concurrency = (int)arg_long(v, 1, MAX_CONCURRENCY), i++;
    else if (!strcmp(a, "--warmup-ms")) opt.warmup_ms = (int)arg_long(v, 0, 600000), i++;
    else if (!strcmp(a, "--duration-ms")) opt.duration_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--timeout-ms")) opt.timeout_ms = (int)arg_long(v, 1, 600000), i++;
    else usage();
  }
  if (!opt.t.port) usage();
  setup_process(opt.t.cpu);
  setup_loop(opt.t.host, opt.t.port);

  /* The accept computation, checked against RFC 6455 section 1.3's example. */
  char sample[29];
  accept_for(WS_KEY, sample);
  if (strcmp(sample, WS_ACCEPT) != 0) fail("SHA-1 self-test failed: %s", sample);
  if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state)
    fail("getrandom: %s", strerror(errno));
  rng_state |= 1; /* xorshift never leaves zero */

  uint8_t *rbuf = malloc(READ_BUF_SIZE);
  conns = calloc((size_t)opt.concurrency, sizeof *conns);
  if (!rbuf || !conns) fail("out of memory");

  double t0 = now_s();
  for (int i = 0; i < opt.concurrency; i++) start_connection(&conns[i]);

  struct epoll_event events[MAX_EVENTS];
  double deadline = t0 + opt.warmup_ms / 1e3;
  double drain_started = 0, drain_s = 0, last_check = t0;
  struct reading start = {0}, end = {0};
  int in_progress_at_end = 0;

  while (phase != PH_DONE) {
    double now = now_s();
    if (now - last_check >= TICK_MS / 1e3) {
      check_timeouts(now);
      last_check = now;
    }
    if (phase == PH_DRAIN && in_progress == 0) {
      drain_s = now - drain_started;
      phase = PH_DONE;
      break;
    }
    if (now >= deadline) {
      if (phase == PH_WARMUP) {
        phase = PH_MEASURE;
        read_window_start(&start, opt.t.server_pid, opt.t.server_cpu);
        deadline = start.t + opt.duration_ms / 1e3;
      } else if (phase == PH_MEASURE) {
        read_window_end(&end, opt.t.server_pid, opt.t.server_cpu);
        in_progress_at_end = in_progress;
        /* No new connections; those in progress must still end cleanly. */
        phase = PH_DRAIN;
        drain_started = now;
        deadline = now + opt.timeout_ms / 1e3 + 1;
      } else {
        fail("%d connections still in progress %d ms after the measured window", in_progress,
             opt.timeout_ms + 1000);
      }
      continue;
    }
    int timeout = (int)((deadline - now) * 1e3) + 1;
    if (timeout > TICK_MS) timeout = TICK_MS;
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) on_conn_event(events[i].data.ptr, events[i].events, rbuf);
  }

  double wall = end.t - start.t;
  printf("{\"ok\":true,\"concurrency\":%d,\"warmup_s\":%.3f,\"duration_s\":%.6f,"
         "\"handshakes\":%llu,\"handshakes_per_s\":%.1f,\"errors\":0,"
         "\"total_handshakes\":%llu,\"drained\":%d,\"drain_s\":%.4f,",
         opt.concurrency, opt.warmup_ms / 1e3, wall, (unsigned long long)completed_in_window,
         (double)completed_in_window / wall, (unsigned long long)completed, in_progress_at_end,
         drain_s);
  print_latency_json(&cycle_hist);
  printf(",\"upgrade_p50_ms\":%.3f,\"upgrade_p99_ms\":%.3f,",
         hist_quantile_ms(&upgrade_hist, 0.5), hist_quantile_ms(&upgrade_hist, 0.99));
  print_cpu_json(&start, &end);
  printf(",\"machine_irq_pct\":%.1f,\"server_core_busy_pct\":%.1f,\"server_core_irq_pct\":%.1f}\n",
         pct(delta(start.machine_irq, end.machine_irq), wall),
         pct(delta(start.core, end.core), wall), pct(delta(start.core_irq, end.core_irq), wall));
  fflush(stdout);

  for (int i = 0; i < opt.concurrency; i++) free(conns[i].ws.out);
  free(conns);
  free(rbuf);
  close(epfd);
  return 0;
}
