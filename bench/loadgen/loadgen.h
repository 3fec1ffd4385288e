/*
 * loadgen.h: the client side that Switchboard's load generators (echo-load.c,
 * broadcast-load.c, connect-load.c) share, so that a fix to the protocol code,
 * the I/O or the accounting reaches all: error exits and JSON strings, clocks,
 * latency histograms and CPU readings, argument and process setup, non-blocking
 * connects, the RFC 6455 opening handshake (section 4.1), buffered writes,
 * masked frames out, the incremental parser for frames in, the event loop's
 * dispatch and the closing handshake.
 *
 * Each generator is a single translation unit that includes this header, so
 * everything here is static and a generator still builds with
 * `cc -O2 -Wall -Wextra -o bin generator.c` (the header is found beside it).
 *
 * A generator defines, before including this header:
 *   HANDSHAKE_MAX  bytes kept for one upgrade response;
 *   OUT_BUF_MIN    the first size of a connection's output buffer;
 * and after it:
 *   struct conn, whose first member is a struct ws_conn named ws (the parser
 *     and the hooks convert between the two; see conn_of);
 *   the hooks declared below, as static functions. They sit in the same
 *   translation unit as the parser that calls them, so the compiler calls or
 *   inlines them directly: the per-frame path costs what it did when every
 *   generator had its own parser.
 *
 * A generator whose connections do not fit the frame loop here defines
 * LOADGEN_OWN_LOOP before including this header and drives them itself
 * (connect-load.c: every connection there ends in a closing handshake, which
 * the loop here treats as an error, and each one upgrades with a fresh key).
 * It then defines no hook but usage, and gets neither the frame parser, nor
 * the fixed-key upgrade (send_upgrade, handshake_read), nor close_conn, nor
 * the event loop, but check_upgrade_response: the rest, from the error exits
 * to open_connection, write_upgrade, read_upgrade_head and header_value, is
 * the same code.
 */

#ifndef LOADGEN_H
#define LOADGEN_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef HANDSHAKE_MAX
#error "define HANDSHAKE_MAX before including loadgen.h"
#endif
#ifndef OUT_BUF_MIN
#error "define OUT_BUF_MIN before including loadgen.h"
#endif

#define READ_BUF_SIZE (256 * 1024)

/* RFC 6455 section 1.3: the sample nonce and the accept value it must produce.
 * Reusing one key for every connection keeps the generators free of SHA-1 and
 * still verifies that the server computed the accept value correctly. */
static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/* A fixed masking key: both ends are ours, on loopback, and the server's
 * unmasking work is the same for any key (RFC 6455 section 5.3 asks for an
 * unpredictable one to protect intermediaries, of which there are none). It
 * lets every outgoing frame be built and masked once and then reused. */
static const uint8_t MASK_KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN };
enum parse_state { P_HEADER, P_PAYLOAD };

/* The part of a connection this header's code works on. */
struct ws_conn {
  /* First, so that the fields used per frame below sit next to the
   * generator's own fields that follow in its struct conn. */
  char hs[HANDSHAKE_MAX];
  size_t hs_len;

  int fd;
  long id; /* the connection's index, for error messages */
  enum conn_state state;
  int want_write; /* EPOLLOUT registered */

  uint8_t *out;
  size_t out_off, out_len, out_cap;

  /* Frame parser (server-to-client frames are never masked, section 5.1). */
  enum parse_state ps;
  uint8_t hdr[14];
  size_t hdr_have, hdr_need;
  uint64_t payload_left;
  int frame_opcode;
  int frame_fin;
  int in_message;
  int msg_opcode;
  uint8_t ctrl[125];
  size_t ctrl_len;
};

/* ---------------------------------------------------------------- hooks */

struct conn;

/* A generator's struct conn begins with its struct ws_conn (C11 6.7.2.1: a
 * pointer to a structure, converted, points to its first member and back). */
static inline struct conn *conn_of(struct ws_conn *w) { return (struct conn *)(void *)w; }

/* Prints the generator's usage to stderr and exits with status 2. */
static void usage(void) __attribute__((noreturn));
#ifndef LOADGEN_OWN_LOOP
/* The TCP connection is up: write the upgrade request, with send_upgrade. */
static void send_request(struct conn *c);
/* The server accepted the upgrade: check or adopt the extensions it chose
 * (`headers` is the response, one header per CRLF-terminated line). */
static void accept_extensions(struct conn *c, const char *headers);
/* The handshake is done and what arrived with the response has been parsed. */
static void on_open(struct conn *c);
/* The first frame of a data message (opcode 1 or 2) begins; RSV1 as sent. */
static void on_data_start(struct conn *c, int rsv1);
/* Payload bytes of a data message, as they arrive. */
static void on_data(struct conn *c, const uint8_t *p, size_t n);
/* The data message is complete; opcode is its first frame's. */
static void on_message(struct conn *c, int opcode);
#endif

/* ---------------------------------------------------------------- errors */

/* Messages may quote server headers, so escape what JSON requires. */
static void print_json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch < 0x20) printf("\\u%04x", ch);
    else putchar(ch);
  }
  putchar('"');
}

/* Ends the run with the one JSON line the benchmark drivers read. */
static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void fail(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("{\"ok\":false,\"error\":");
  print_json_string(msg);
  printf("}\n");
  fflush(stdout);
  exit(1);
}

/* ---------------------------------------------------------------- clocks */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_self_s(double *user, double *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
  *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  return *user + *sys;
}

/* CPU seconds (all threads) and resident set of another process, from
 * /proc/PID/stat fields 14 (utime), 15 (stime) and 24 (rss, pages); -1 when
 * unavailable. */
static double proc_cpu_s(long pid, long *rss_kb) {
  char path[64], buf[2048];
  *rss_kb = -1;
  if (pid <= 0) return -1;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name may contain spaces; fields resume after the last ')'. */
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  p += 2;
  unsigned long long utime = 0, stime = 0;
  long rss = 0;
  int field = 3;
  char *save = NULL;
  for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
    if (field == 14) utime = strtoull(tok, NULL, 10);
    else if (field == 15) stime = strtoull(tok, NULL, 10);
    else if (field == 24) {
      rss = strtol(tok, NULL, 10);
      break;
    }
  }
  *rss_kb = rss * (sysconf(_SC_PAGESIZE) / 1024);
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Busy CPU seconds from /proc/stat: of the whole machine (cpu = -1) or of one
 * CPU, and separately the part counted as interrupts and softirqs. Minus the
 * server's and our own CPU, the machine's figure is the load that other
 * processes put on the machine during a run, which is what makes a figure
 * noisy. On loopback the kernel's TCP work for a send (the receiving side
 * included) mostly runs as softirq on the sender's CPU; depending on the
 * kernel's configuration it is also charged to the process that was running,
 * or to none, so the busy share of the server's CPU tells better than its
 * process's CPU whether the server was saturated. -1 when unavailable. */
static double cpu_busy_s(int cpu, double *irq_s) {
  *irq_s = -1;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  char want[32], line[512];
  if (cpu < 0) snprintf(want, sizeof want, "cpu ");
  else snprintf(want, sizeof want, "cpu%d ", cpu);
  double busy = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, want, strlen(want)) != 0) continue;
    unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
    if (sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys,
               &idle, &iowait, &irq, &softirq) == 7) {
      double hz = (double)sysconf(_SC_CLK_TCK);
      busy = (double)(user + nice + sys + irq + softirq) / hz;
      *irq_s = (double)(irq + softirq) / hz;
    }
    break;
  }
  fclose(f);
  return busy;
}

/* Traffic since the start; a generator reports what changed across its
 * measured window (messages per read shows how much the server batches). */
static uint64_t bytes_in, reads_done, writes_done;

/* What is read at each end of the measured window; -1 where unavailable. */
struct reading {
  double t;                   /* monotonic seconds */
  double self, user, sys;     /* this process's CPU seconds */
  double server;              /* the server process's CPU seconds (--server-pid) */
  long server_rss_kb;
  double machine, machine_irq; /* busy seconds of all CPUs */
  double core, core_irq;      /* busy seconds of the server's CPU (when known) */
  uint64_t bytes_in, reads, writes;
};

/* The clock is read innermost at both ends, so the window that rates are
 * divided by leaves out the cost of reading /proc. */
static void read_window_start(struct reading *r, long server_pid, int server_cpu) {
  r->bytes_in = bytes_in;
  r->reads = reads_done;
  r->writes = writes_done;
  r->server = proc_cpu_s(server_pid, &r->server_rss_kb);
  r->machine = cpu_busy_s(-1, &r->machine_irq);
  r->core = r->core_irq = -1;
  if (server_cpu >= 0) r->core = cpu_busy_s(server_cpu, &r->core_irq);
  r->self = cpu_self_s(&r->user, &r->sys);
  r->t = now_s();
}

static void read_window_end(struct reading *r, long server_pid, int server_cpu) {
  r->t = now_s();
  r->self = cpu_self_s(&r->user, &r->sys);
  r->server = proc_cpu_s(server_pid, &r->server_rss_kb);
  r->machine = cpu_busy_s(-1, &r->machine_irq);
  r->core = r->core_irq = -1;
  if (server_cpu >= 0) r->core = cpu_busy_s(server_cpu, &r->core_irq);
  r->bytes_in = bytes_in;
  r->reads = reads_done;
  r->writes = writes_done;
}

/* b - a, or -1 when either reading was unavailable. */
static double delta(double a, double b) { return a >= 0 && b >= 0 ? b - a : -1; }

/* Seconds of CPU as a percentage of the window, keeping -1 for unavailable. */
static double pct(double s, double wall) { return s >= 0 ? s / wall * 100.0 : -1; }

/* The CPU fields of both generators' result, "gen_cpu_user_s" to
 * "machine_cpu_pct", without a comma on either side. */
static void print_cpu_json(const struct reading *a, const struct reading *b) {
  double wall = b->t - a->t;
  double server = delta(a->server, b->server);
  printf("\"gen_cpu_user_s\":%.4f,\"gen_cpu_sys_s\":%.4f,\"gen_cpu_pct\":%.1f,"
         "\"server_cpu_s\":%.4f,\"server_cpu_pct\":%.1f,\"server_rss_kb\":%ld,"
         "\"machine_cpu_pct\":%.1f",
         b->user - a->user, b->sys - a->sys, (b->self - a->self) / wall * 100.0, server,
         pct(server, wall), b->server_rss_kb, pct(delta(a->machine, b->machine), wall));
}

/* ---------------------------------------------------------------- latency */

/* Monotonic nanoseconds: latencies are differences of these. */
static inline uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Latencies go into fixed log buckets, so that a sample costs a few
 * instructions and no memory, however many there are (the broadcast generator
 * records millions per second): exact below 16 us, then 16 buckets per power
 * of two, each at most 1/16 of its lower bound wide, so the middle of a bucket
 * is within 3% of every sample in it; up to 2^37 us. */
#define HIST_SUB 16
#define HIST_SHIFTS 33
#define HIST_BUCKETS (HIST_SUB + HIST_SHIFTS * HIST_SUB)

struct histogram {
  uint64_t counts[HIST_BUCKETS];
  uint64_t n;
  uint64_t max_ns;
};

static inline void hist_add_ns(struct histogram *h, uint64_t ns) {
  uint64_t us = ns / 1000;
  int i;
  if (us < HIST_SUB) {
    i = (int)us;
  } else {
    int msb = 63 - __builtin_clzll(us);
    int shift = msb - 4;
    if (shift >= HIST_SHIFTS) shift = HIST_SHIFTS - 1, us = ((uint64_t)2 * HIST_SUB << shift) - 1;
    i = HIST_SUB + shift * HIST_SUB + (int)((us >> shift) - HIST_SUB);
  }
  h->counts[i]++;
  h->n++;
  if (ns > h->max_ns) h->max_ns = ns;
}

static inline void hist_add(struct histogram *h, double seconds) {
  hist_add_ns(h, seconds > 0 ? (uint64_t)(seconds * 1e9) : 0);
}

/* The middle of the bucket holding the q-quantile (but not above the largest
 * sample), in milliseconds; -1 if empty. */
static inline double hist_quantile_ms(const struct histogram *h, double q) {
  if (h->n == 0) return -1;
  uint64_t rank = (uint64_t)(q * (double)h->n);
  if (rank >= h->n) rank = h->n - 1;
  uint64_t seen = 0;
  double max_ms = (double)h->max_ns / 1e6;
  for (int i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen > rank) {
      double mid_ms;
      if (i < HIST_SUB) {
        mid_ms = (i + 0.5) / 1e3;
      } else {
        int shift = (i - HIST_SUB) / HIST_SUB;
        uint64_t m = (uint64_t)((i - HIST_SUB) % HIST_SUB + HIST_SUB);
        double lo = (double)(m << shift), hi = (double)((m + 1) << shift);
        mid_ms = (lo + hi) / 2 / 1e3;
      }
      return mid_ms < max_ms ? mid_ms : max_ms;
    }
  }
  return max_ms;
}

/* The latency fields every generator's result has, "latency_samples" to
 * "latency_max_ms", without a comma on either side; -1 where there was no
 * sample. */
static inline void print_latency_json(const struct histogram *h) {
  printf("\"latency_samples\":%llu,\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,"
         "\"latency_p999_ms\":%.3f,\"latency_max_ms\":%.3f",
         (unsigned long long)h->n, hist_quantile_ms(h, 0.5), hist_quantile_ms(h, 0.99),
         hist_quantile_ms(h, 0.999), h->n ? (double)h->max_ns / 1e6 : -1.0);
}

/* ---------------------------------------------------------------- setup */

static long arg_long(const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < min || v > max) usage();
  return v;
}

/* The options every generator takes: where the server is, which process and CPU
 * to measure it by, and the CPU to keep to. */
#define MAX_PORTS 16

struct target_options {
  const char *host;
  int port;
  /* With --ports: several servers (nodes of one service) on one host;
   * connection i goes to ports[i % nports]. */
  int ports[MAX_PORTS];
  int nports;
  const char *path;
  long server_pid;
  int server_cpu;
  int cpu;
};

static void target_defaults(struct target_options *t, const char *path) {
  t->host = "127.0.0.1";
  t->port = 0;
  t->nports = 0;
  t->path = path;
  t->server_pid = 0;
  t->server_cpu = -1;
  t->cpu = -1;
}

/* Reads `a` (whose value is `v`) into `t` when it is one of those options;
 * returns 1 if it was. */
static int parse_target_option(struct target_options *t, const char *a, const char *v) {
  if (!strcmp(a, "--host")) t->host = v;
  else if (!strcmp(a, "--port")) t->port = (int)arg_long(v, 1, 65535);
  else if (!strcmp(a, "--ports")) {
    char list[256];
    snprintf(list, sizeof list, "%s", v);
    t->nports = 0;
    for (char *part = strtok(list, ","); part; part = strtok(NULL, ",")) {
      if (t->nports == MAX_PORTS) usage();
      t->ports[t->nports++] = (int)arg_long(part, 1, 65535);
    }
    if (t->nports == 0) usage();
    t->port = t->ports[0];
  }
  else if (!strcmp(a, "--path")) t->path = v;
  else if (!strcmp(a, "--server-pid")) t->server_pid = arg_long(v, 1, 1L << 30);
  else if (!strcmp(a, "--server-cpu")) t->server_cpu = (int)arg_long(v, 0, 1023);
  else if (!strcmp(a, "--cpu")) t->cpu = (int)arg_long(v, 0, 1023);
  else return 0;
  return 1;
}

/* A write to a connection the server has closed must fail with EPIPE rather
 * than kill the generator; and with --cpu the generator keeps off the CPU the
 * driver gave the server. */
static void setup_process(int cpu) {
  signal(SIGPIPE, SIG_IGN);
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((size_t)cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) fail("sched_setaffinity: %s", strerror(errno));
  }
}

/* The server under test, for connects, the Host header and messages. */
static struct {
  const char *host;
  int port;
  struct sockaddr_in addr;
  /* More than one: connection i goes to ports[i % nports] (set by the caller). */
  int ports[MAX_PORTS];
  int nports;
} server;

static int epfd = -1;

static void setup_loop(const char *host, int port) {
  server.host = host;
  server.port = port;
  memset(&server.addr, 0, sizeof server.addr);
  server.addr.sin_family = AF_INET;
  server.addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &server.addr.sin_addr) != 1) fail("bad IPv4 address: %s", host);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
}

/* ---------------------------------------------------------------- frames out */

/* Writes one masked frame (FIN set) to dst, which has room for len + 14 bytes;
 * returns its length. */
static size_t build_frame(uint8_t *dst, const uint8_t *data, size_t len, int opcode, int rsv1) {
  size_t h = 0;
  dst[h++] = (uint8_t)(0x80 | (rsv1 ? 0x40 : 0) | opcode);
  if (len < 126) {
    dst[h++] = (uint8_t)(0x80 | len);
  } else if (len <= 0xffff) {
    dst[h++] = 0x80 | 126;
    dst[h++] = (uint8_t)(len >> 8);
    dst[h++] = (uint8_t)len;
  } else {
    dst[h++] = 0x80 | 127;
    for (int s = 56; s >= 0; s -= 8) dst[h++] = (uint8_t)((uint64_t)len >> s);
  }
  memcpy(dst + h, MASK_KEY, 4);
  h += 4;
  for (size_t i = 0; i < len; i++) dst[h + i] = data[i] ^ MASK_KEY[i & 3];
  return h + len;
}

static void watch(struct ws_conn *w, int want_write) {
  struct epoll_event ev;
  ev.events = EPOLLIN | (want_write ? EPOLLOUT : 0);
  ev.data.ptr = w;
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
  w->want_write = want_write;
}

/* Reserves `len` bytes at the end of the output buffer and returns them. */
static uint8_t *out_reserve(struct ws_conn *w, size_t len) {
  if (w->out_off == w->out_len) w->out_off = w->out_len = 0;
  if (w->out_len + len > w->out_cap) {
    /* Compact first; grow only if that is not enough. */
    if (w->out_off > 0) {
      memmove(w->out, w->out + w->out_off, w->out_len - w->out_off);
      w->out_len -= w->out_off;
      w->out_off = 0;
    }
    if (w->out_len + len > w->out_cap) {
      size_t cap = w->out_cap ? w->out_cap : OUT_BUF_MIN;
      while (cap < w->out_len + len) cap *= 2;
      uint8_t *p = realloc(w->out, cap);
      if (!p) fail("out of memory");
      w->out = p;
      w->out_cap = cap;
    }
  }
  uint8_t *at = w->out + w->out_len;
  w->out_len += len;
  return at;
}

static void out_append(struct ws_conn *w, const uint8_t *data, size_t len) {
  memcpy(out_reserve(w, len), data, len);
}

static void out_flush(struct ws_conn *w) {
  while (w->out_off < w->out_len) {
    ssize_t n = write(w->fd, w->out + w->out_off, w->out_len - w->out_off);
    if (n > 0) {
      writes_done++;
      w->out_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!w->want_write) watch(w, 1);
      return;
    }
    fail("write on connection %ld: %s", w->id, strerror(errno));
  }
  w->out_off = w->out_len = 0;
  if (w->want_write) watch(w, 0);
}

static void send_control(struct ws_conn *w, int opcode, const uint8_t *data, size_t len) {
  uint8_t frame[6 + 125];
  out_append(w, frame, build_frame(frame, data, len, opcode, 0));
}

#ifndef LOADGEN_OWN_LOOP
/* Best-effort closing handshake (section 7.1.2), then let the kernel tidy up. */
static void close_conn(struct ws_conn *w) {
  static const uint8_t normal[2] = {0x03, 0xe8};
  send_control(w, 8, normal, 2);
  (void)!write(w->fd, w->out + w->out_off, w->out_len - w->out_off);
  close(w->fd);
  free(w->out);
}

/* ---------------------------------------------------------------- frames in */

static void frame_header_done(struct ws_conn *w) {
  uint8_t b0 = w->hdr[0], b1 = w->hdr[1];
  int fin = b0 & 0x80, rsv1 = b0 & 0x40, opcode = b0 & 0x0f;
  uint64_t len = b1 & 0x7f;
  if (b0 & 0x30) fail("RSV2/RSV3 set by the server on connection %ld", w->id);
  if (b1 & 0x80) fail("server frame is masked (RFC 6455 section 5.1)");
  if (len == 126) {
    len = ((uint64_t)w->hdr[2] << 8) | w->hdr[3];
  } else if (len == 127) {
    len = 0;
    for (int i = 2; i < 10; i++) len = (len << 8) | w->hdr[i];
  }
  w->frame_opcode = opcode;
  w->frame_fin = fin != 0;
  w->payload_left = len;
  w->ctrl_len = 0;
  if (opcode >= 8) {
    if (!fin || len > 125 || rsv1) fail("invalid control frame from the server (section 5.5)");
  } else if (opcode == 1 || opcode == 2) {
    if (w->in_message) fail("new data frame inside a fragmented message (section 5.4)");
    w->in_message = 1;
    w->msg_opcode = opcode;
    on_data_start(conn_of(w), rsv1 != 0);
  } else if (opcode == 0) {
    if (!w->in_message) fail("continuation frame outside a message (section 5.4)");
    if (rsv1) fail("RSV1 set on a continuation frame (RFC 7692 section 6.1)");
  } else {
    fail("reserved opcode %d from the server", opcode);
  }
  w->ps = P_PAYLOAD;
}

static void frame_done(struct ws_conn *w) {
  int op = w->frame_opcode;
  if (op == 9) {
    send_control(w, 10, w->ctrl, w->ctrl_len); /* section 5.5.2: answer pings */
  } else if (op == 10) {
    /* an unsolicited pong: ignored (section 5.5.3) */
  } else if (op == 8) {
    unsigned code = w->ctrl_len >= 2 ? ((unsigned)w->ctrl[0] << 8) | w->ctrl[1] : 1005;
    fail("server closed connection %ld with code %u", w->id, code);
  } else if (w->frame_fin) {
    w->in_message = 0;
    on_message(conn_of(w), w->msg_opcode);
  }
  w->ps = P_HEADER;
  w->hdr_have = 0;
  w->hdr_need = 2;
}

/* Parses frames incrementally, straight out of the read buffer. */
static void parse(struct ws_conn *w, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (w->ps == P_HEADER) {
      while (n > 0 && w->hdr_have < w->hdr_need) {
        w->hdr[w->hdr_have++] = *p++;
        n--;
        if (w->hdr_have == 2) {
          uint8_t l = w->hdr[1] & 0x7f;
          w->hdr_need = 2u + (l == 126 ? 2u : l == 127 ? 8u : 0u) + ((w->hdr[1] & 0x80) ? 4u : 0u);
        }
      }
      if (w->hdr_have < w->hdr_need) return;
      frame_header_done(w);
      if (w->payload_left == 0) frame_done(w);
      continue;
    }
    size_t take = n < w->payload_left ? n : (size_t)w->payload_left;
    if (w->frame_opcode >= 8) {
      memcpy(w->ctrl + w->ctrl_len, p, take);
      w->ctrl_len += take;
    } else {
      on_data(conn_of(w), p, take);
    }
    p += take;
    n -= take;
    w->payload_left -= take;
    if (w->payload_left == 0) frame_done(w);
  }
}
#endif

/* ---------------------------------------------------------------- handshake */

/* Connections in the TCP connect or the opening handshake, and past it. */
static int connecting, open_count;

/* The address connections are made from; sin_family 0 (the default) leaves
 * it to the kernel. idle-load.c sets it so that several generators each
 * connect from their own 127.0.0.x and their connections together can pass
 * what one address's ephemeral port range holds. */
static struct sockaddr_in source_addr;

/* Starts a non-blocking connect; the event loop takes it from there. */
static void open_connection(struct ws_conn *w, long id) {
  w->id = id;
  w->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (w->fd < 0) fail("socket: %s", strerror(errno));
  int one = 1;
  /* Frames are small and latency-bound; Nagle would add delay, not save work. */
  setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (source_addr.sin_family == AF_INET) {
#ifdef IP_BIND_ADDRESS_NO_PORT
    /* Bind the address now and let connect() pick the port (port 0 here),
     * knowing the whole 4-tuple: bind() alone would reserve a port per socket
     * (Linux 4.2+; without it bind() picks the port, which still works). */
    setsockopt(w->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    if (bind(w->fd, (const struct sockaddr *)&source_addr, sizeof source_addr) < 0) {
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &source_addr.sin_addr, ip, sizeof ip);
      fail("bind to source address %s: %s", ip, strerror(errno));
    }
  }
  w->state = C_CONNECTING;
  w->ps = P_HEADER;
  w->hdr_need = 2;
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = w;
  w->want_write = 1;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
  struct sockaddr_in to = server.addr;
  if (server.nports > 1) to.sin_port = htons((uint16_t)server.ports[id % server.nports]);
  if (connect(w->fd, (const struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS)
    fail("connect to %s:%d: %s", server.host, server.port, strerror(errno));
  connecting++;
}

/* Writes the opening handshake (RFC 6455 section 4.1) with `key`; `extensions`
 * is empty or whole header lines. */
static void write_upgrade(struct ws_conn *w, const char *path, const char *key,
                          const char *extensions) {
  char req[2048];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\n"
                   "Host: %s:%d\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "%s"
                   "\r\n",
                   path, server.host, server.port, key, extensions);
  /* A truncated request would be sent as it stands, cut mid-header. */
  if (n < 0 || (size_t)n >= sizeof req)
    fail("upgrade request too long (path of %zu bytes)", strlen(path));
  out_append(w, (const uint8_t *)req, (size_t)n);
  w->state = C_HANDSHAKE;
  out_flush(w);
}

#ifndef LOADGEN_OWN_LOOP
/* The fixed-key upgrade of the frame-loop generators. */
static void send_upgrade(struct ws_conn *w, const char *path, const char *extensions) {
  write_upgrade(w, path, WS_KEY, extensions);
  if (!w->want_write) watch(w, 0);
}
#endif

static const char *header_value(const char *headers, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  const char *line = strstr(headers, "\r\n");
  while (line) {
    line += 2;
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1;
      while (*v == ' ' || *v == '\t') v++;
      const char *end = strstr(v, "\r\n");
      size_t len = end ? (size_t)(end - v) : strlen(v);
      while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
      if (len >= cap) len = cap - 1;
      memcpy(out, v, len);
      out[len] = '\0';
      return out;
    }
    line = strstr(line, "\r\n");
  }
  return NULL;
}

/* Reads the server's handshake response into w->hs. Returns the length of its
 * head once the blank line has arrived (the head is then NUL-terminated after
 * its last header's CRLF, for header_value), 0 while it has not; `waiting` says
 * what the connection was waiting for, in errors. */
static size_t read_upgrade_head(struct ws_conn *w, const char *waiting) {
  ssize_t n = read(w->fd, w->hs + w->hs_len, HANDSHAKE_MAX - 1 - w->hs_len);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return 0;
    fail("connection %ld: read %s: %s", w->id, waiting, strerror(errno));
  }
  if (n == 0) fail("connection %ld: the server closed it %s", w->id, waiting);
  w->hs_len += (size_t)n;
  w->hs[w->hs_len] = '\0';
  char *end = strstr(w->hs, "\r\n\r\n");
  if (!end) {
    if (w->hs_len >= HANDSHAKE_MAX - 1) fail("connection %ld: upgrade response too large", w->id);
    return 0;
  }
  end[2] = '\0'; /* keep the last header's CRLF for header_value */
  return (size_t)(end - w->hs) + 4;
}

#ifdef LOADGEN_OWN_LOOP
/* Section 4.1: the client's checks of a 101 to a request that offered no
 * extension and no subprotocol; `accept` is what the key calls for (4.2.2). */
static void check_upgrade_response(const struct ws_conn *w, const char *accept, const char *key) {
  char v[256];
  const char *hs = w->hs;
  if (strncmp(hs, "HTTP/1.1 101", 12) != 0 || (hs[12] != ' ' && hs[12] != '\r')) {
    const char *eol = strstr(hs, "\r\n");
    fail("connection %ld: upgrade refused: %.*s", w->id, (int)(eol ? eol - hs : 80), hs);
  }
  if (!header_value(hs, "Upgrade", v, sizeof v) || strcasecmp(v, "websocket") != 0)
    fail("connection %ld: the 101 response lacks \"Upgrade: websocket\"", w->id);
  if (!header_value(hs, "Connection", v, sizeof v) || !strcasestr(v, "upgrade"))
    fail("connection %ld: the 101 response lacks \"Connection: Upgrade\"", w->id);
  if (!header_value(hs, "Sec-WebSocket-Accept", v, sizeof v))
    fail("connection %ld: the 101 response has no Sec-WebSocket-Accept", w->id);
  if (strcmp(v, accept) != 0)
    fail("connection %ld: Sec-WebSocket-Accept is %s, expected %s for key %s (section 4.2.2)",
         w->id, v, accept, key);
  if (header_value(hs, "Sec-WebSocket-Extensions", v, sizeof v))
    fail("connection %ld: the server chose an extension that was not offered: %s", w->id, v);
  if (header_value(hs, "Sec-WebSocket-Protocol", v, sizeof v))
    fail("connection %ld: the server chose a subprotocol that was not offered: %s", w->id, v);
}
#endif

#ifndef LOADGEN_OWN_LOOP
static void handshake_read(struct ws_conn *w) {
  size_t head_len = read_upgrade_head(w, "during the handshake");
  if (head_len == 0) return;
  if (strncmp(w->hs, "HTTP/1.1 101", 12) != 0) {
    char *eol = strstr(w->hs, "\r\n");
    if (eol) *eol = '\0';
    fail("upgrade of connection %ld refused: %s", w->id, w->hs);
  }
  char v[256];
  if (!header_value(w->hs, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, WS_ACCEPT) != 0)
    fail("bad Sec-WebSocket-Accept (RFC 6455 section 4.2.2)");
  accept_extensions(conn_of(w), w->hs);
  w->state = C_OPEN;
  open_count++;
  connecting--;
  size_t rest = w->hs_len - head_len;
  if (rest > 0) {
    /* Frames that arrived with the response belong to the parser. */
    uint8_t tmp[HANDSHAKE_MAX];
    memcpy(tmp, w->hs + head_len, rest);
    parse(w, tmp, rest);
  }
  on_open(conn_of(w));
}

/* ---------------------------------------------------------------- event loop */

/* When the loop began handling the read in progress (mono_ns). The hooks stamp
 * what they receive and what they send in answer with it, so the clock is read
 * once per read() rather than once per message: at 16 echoes per read that is
 * a sixteenth of the calls, and a read's messages arrived together anyway. */
static uint64_t loop_ns;

static void on_event(struct ws_conn *w, uint32_t events, uint8_t *rbuf) {
  if (w->state == C_CONNECTING) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) fail("connect to %s:%d: %s", server.host, server.port, strerror(err));
    send_request(conn_of(w));
    return;
  }
  if (events & EPOLLOUT) out_flush(w);
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    loop_ns = mono_ns();
    if (w->state == C_HANDSHAKE) {
      handshake_read(w);
      return;
    }
    ssize_t n = read(w->fd, rbuf, READ_BUF_SIZE);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      fail("read on connection %ld: %s", w->id, strerror(errno));
    }
    if (n == 0) fail("server closed connection %ld", w->id);
    bytes_in += (uint64_t)n;
    reads_done++;
    parse(w, rbuf, (size_t)n);
    /* Everything this read produced (the next messages, pongs) leaves in one write. */
    if (w->out_len > w->out_off) out_flush(w);
  }
}

/* Waits up to timeout_ms and handles what happened; returns the number of
 * events handled (0 when interrupted by a signal). */
static int poll_events(struct epoll_event *events, int max, int timeout_ms, uint8_t *rbuf) {
  int n = epoll_wait(epfd, events, max, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return 0;
    fail("epoll_wait: %s", strerror(errno));
  }
  for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events, rbuf);
  return n;
}
#endif

#endif
