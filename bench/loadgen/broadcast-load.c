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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
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

#define READ_BUF_SIZE (256 * 1024)
#define HANDSHAKE_MAX 4096
#define MAX_EVENTS 512
/* Connections in the TCP connect or handshake phase at once: a thousand SYNs at
 * once overflow a listen backlog of 511 and cost seconds of SYN retries. */
#define MAX_CONNECTING 128
#define SEQ_DIGITS 8
#define MIN_SIZE 16
#define PROBE_INTERVAL_S 0.01
#define MAX_LATENCIES (4u << 20)

static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
static const uint8_t MASK_KEY[4] = {0x37, 0xfa, 0x21, 0x3d};
static const uint8_t PROBE[] = "probe";
#define PROBE_LEN (sizeof PROBE - 1)

enum conn_state { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN };
enum parse_state { P_HEADER, P_PAYLOAD };
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
  int fd;
  enum conn_state state;
  int want_write;
  int publisher;

  char hs[HANDSHAKE_MAX];
  size_t hs_len;

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
  uint8_t *msg; /* the current data message, up to opt.size bytes */
  size_t msg_len;
  int msg_too_long;
  uint8_t ctrl[125];
  size_t ctrl_len;

  /* Subscriber state. */
  int joined;
  uint64_t next_seq;
  uint64_t received;
  uint64_t received_at_start;
  uint64_t received_in_window;
};

static struct options opt;
static struct conn *conns; /* conns[0] is the publisher */
static int nconns;
static int epfd = -1;
static enum phase phase = PH_CONNECT;
static int open_count, connecting, next_to_open, joined_count;
static struct sockaddr_in server_addr;

/* The publisher's window: per outstanding message, how many subscribers have it. */
static uint32_t *delivered_to;
static double *sent_at;
static uint64_t sent, completed, probes_sent;
static double last_probe_at, last_progress_at;

static uint8_t *frame_template; /* a masked data frame; only the sequence digits change */
static size_t frame_len, seq_offset;
static uint8_t *filler; /* the payload after the sequence digits */

static uint64_t total_deliveries, wire_bytes_in, reads_measured;
static double *latencies;
static size_t latency_count;

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
 * CPU, and separately the part counted as interrupts and softirqs. On loopback
 * the kernel's TCP work for a send (the receiving side included) mostly runs as
 * softirq on the sender's CPU; depending on the kernel's configuration it is
 * also charged to the process that was running, or to none, so the busy share
 * of the server's CPU tells better than its process's CPU whether the server
 * was saturated. -1 when unavailable. */
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

static long conn_index(const struct conn *c) { return (long)(c - conns); }

/* ---------------------------------------------------------------- frames out */

static size_t build_frame(uint8_t *dst, const uint8_t *data, size_t len, int opcode) {
  size_t h = 0;
  dst[h++] = (uint8_t)(0x80 | opcode);
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
  /* A fixed masking key: both ends are ours, on loopback, and the server's
   * unmasking work is the same for any key (RFC 6455 section 5.3 asks for an
   * unpredictable one to protect intermediaries, of which there are none). */
  memcpy(dst + h, MASK_KEY, 4);
  h += 4;
  for (size_t i = 0; i < len; i++) dst[h + i] = data[i] ^ MASK_KEY[i & 3];
  return h + len;
}

static void watch(struct conn *c, int want_write) {
  struct epoll_event ev;
  ev.events = EPOLLIN | (want_write ? EPOLLOUT : 0);
  ev.data.ptr = c;
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
  c->want_write = want_write;
}

/* Reserves `len` bytes at the end of the output buffer and returns them. */
static uint8_t *out_reserve(struct conn *c, size_t len) {
  if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + len > c->out_cap) {
    if (c->out_off > 0) {
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap : 1024;
      while (cap < c->out_len + len) cap *= 2;
      uint8_t *p = realloc(c->out, cap);
      if (!p) fail("out of memory");
      c->out = p;
      c->out_cap = cap;
    }
  }
  uint8_t *at = c->out + c->out_len;
  c->out_len += len;
  return at;
}

static void out_append(struct conn *c, const uint8_t *data, size_t len) {
  memcpy(out_reserve(c, len), data, len);
}

static void out_flush(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n > 0) {
      c->out_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->want_write) watch(c, 1);
      return;
    }
    fail("write on connection %ld: %s", conn_index(c), strerror(errno));
  }
  c->out_off = c->out_len = 0;
  if (c->want_write) watch(c, 0);
}

static void send_control(struct conn *c, int opcode, const uint8_t *data, size_t len) {
  uint8_t frame[6 + 125];
  out_append(c, frame, build_frame(frame, data, len, opcode));
}

static const char HEX[] = "0123456789abcdef";

/* Appends data message `seq` to the publisher's output. */
static void publish_one(struct conn *pub, double now) {
  uint64_t seq = sent++;
  uint8_t *dst = out_reserve(pub, frame_len);
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
  if (added) out_flush(pub);
}

/* ---------------------------------------------------------------- frames in */

static void data_message(struct conn *c) {
  int want = opt.binary ? 2 : 1;
  if (c->msg_too_long)
    fail("subscriber %ld got a message longer than %zu bytes", conn_index(c), opt.size);
  if (c->msg_opcode != want)
    fail("subscriber %ld got opcode %d, the publisher sent %d", conn_index(c), c->msg_opcode, want);
  if (c->msg_len == PROBE_LEN && memcmp(c->msg, PROBE, PROBE_LEN) == 0) {
    /* Probes only precede a subscriber's first real message: one publisher's
     * messages reach each subscriber in the order they were sent. */
    if (c->next_seq != 0)
      fail("subscriber %ld got a probe after message %llu (reordered delivery)", conn_index(c),
           (unsigned long long)(c->next_seq - 1));
    if (!c->joined) {
      c->joined = 1;
      joined_count++;
    }
    return;
  }
  if (c->msg_len != opt.size)
    fail("subscriber %ld got a %zu-byte message, the publisher sent %zu", conn_index(c),
         c->msg_len, opt.size);
  if (!c->joined)
    fail("subscriber %ld got a message before the data stream started", conn_index(c));
  uint64_t seq = 0;
  for (int i = 0; i < SEQ_DIGITS; i++) {
    uint8_t ch = c->msg[i];
    int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (v < 0) fail("subscriber %ld got a message without a sequence number", conn_index(c));
    seq = (seq << 4) | (uint64_t)v;
  }
  if (seq != (c->next_seq & 0xffffffffu)) {
    const char *what = seq < (c->next_seq & 0xffffffffu) ? "a duplicate or reordered message"
                                                        : "a gap (a message was lost)";
    fail("subscriber %ld got message %llu, expected %llu: %s", conn_index(c),
         (unsigned long long)seq, (unsigned long long)c->next_seq, what);
  }
  if (memcmp(c->msg + SEQ_DIGITS, filler, opt.size - SEQ_DIGITS) != 0)
    fail("subscriber %ld got message %llu with different bytes than were sent", conn_index(c),
         (unsigned long long)seq);
  if (c->next_seq >= sent)
    fail("subscriber %ld got message %llu, which was not sent yet", conn_index(c),
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

static void frame_header_done(struct conn *c) {
  uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
  int fin = b0 & 0x80, opcode = b0 & 0x0f;
  uint64_t len = b1 & 0x7f;
  if (b0 & 0x70)
    fail("RSV bits set by the server on connection %ld (nothing was negotiated)", conn_index(c));
  if (b1 & 0x80) fail("server frame is masked (RFC 6455 section 5.1)");
  if (len == 126) {
    len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
  } else if (len == 127) {
    len = 0;
    for (int i = 2; i < 10; i++) len = (len << 8) | c->hdr[i];
  }
  c->frame_opcode = opcode;
  c->frame_fin = fin != 0;
  c->payload_left = len;
  c->ctrl_len = 0;
  if (opcode >= 8) {
    if (!fin || len > 125) fail("invalid control frame from the server (section 5.5)");
  } else if (opcode == 1 || opcode == 2) {
    if (c->in_message) fail("new data frame inside a fragmented message (section 5.4)");
    if (c->publisher) fail("the publisher received a message; it is not subscribed");
    c->in_message = 1;
    c->msg_opcode = opcode;
    c->msg_len = 0;
    c->msg_too_long = 0;
  } else if (opcode == 0) {
    if (!c->in_message) fail("continuation frame outside a message (section 5.4)");
  } else {
    fail("reserved opcode %d from the server", opcode);
  }
  c->ps = P_PAYLOAD;
}

static void frame_done(struct conn *c) {
  int op = c->frame_opcode;
  if (op == 9) {
    send_control(c, 10, c->ctrl, c->ctrl_len); /* section 5.5.2: answer pings */
  } else if (op == 10) {
    /* an unsolicited pong: ignored (section 5.5.3) */
  } else if (op == 8) {
    unsigned code = c->ctrl_len >= 2 ? ((unsigned)c->ctrl[0] << 8) | c->ctrl[1] : 1005;
    fail("server closed connection %ld with code %u", conn_index(c), code);
  } else if (c->frame_fin) {
    c->in_message = 0;
    data_message(c);
  }
  c->ps = P_HEADER;
  c->hdr_have = 0;
  c->hdr_need = 2;
}

static void parse(struct conn *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (c->ps == P_HEADER) {
      while (n > 0 && c->hdr_have < c->hdr_need) {
        c->hdr[c->hdr_have++] = *p++;
        n--;
        if (c->hdr_have == 2) {
          uint8_t l = c->hdr[1] & 0x7f;
          c->hdr_need = 2u + (l == 126 ? 2u : l == 127 ? 8u : 0u) + ((c->hdr[1] & 0x80) ? 4u : 0u);
        }
      }
      if (c->hdr_have < c->hdr_need) return;
      frame_header_done(c);
      if (c->payload_left == 0) frame_done(c);
      continue;
    }
    size_t take = n < c->payload_left ? n : (size_t)c->payload_left;
    if (c->frame_opcode >= 8) {
      memcpy(c->ctrl + c->ctrl_len, p, take);
      c->ctrl_len += take;
    } else {
      size_t room = opt.size - c->msg_len;
      if (take > room) c->msg_too_long = 1;
      memcpy(c->msg + c->msg_len, p, take < room ? take : room);
      c->msg_len += take < room ? take : room;
    }
    p += take;
    n -= take;
    c->payload_left -= take;
    if (c->payload_left == 0) frame_done(c);
  }
}

/* ---------------------------------------------------------------- handshake */

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

static void open_next(void);

static void handshake_read(struct conn *c) {
  ssize_t n = read(c->fd, c->hs + c->hs_len, HANDSHAKE_MAX - 1 - c->hs_len);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    fail("read during the handshake of connection %ld: %s", conn_index(c), strerror(errno));
  }
  if (n == 0) fail("server closed connection %ld during the handshake", conn_index(c));
  c->hs_len += (size_t)n;
  c->hs[c->hs_len] = '\0';
  char *end = strstr(c->hs, "\r\n\r\n");
  if (!end) {
    if (c->hs_len >= HANDSHAKE_MAX - 1) fail("handshake response too large");
    return;
  }
  size_t head_len = (size_t)(end - c->hs) + 4;
  end[2] = '\0'; /* keep the last header's CRLF for header_value */
  if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
    char *eol = strstr(c->hs, "\r\n");
    if (eol) *eol = '\0';
    fail("upgrade of connection %ld refused: %s", conn_index(c), c->hs);
  }
  char v[256];
  if (!header_value(c->hs, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, WS_ACCEPT) != 0)
    fail("bad Sec-WebSocket-Accept (RFC 6455 section 4.2.2)");
  if (header_value(c->hs, "Sec-WebSocket-Extensions", v, sizeof v))
    fail("server accepted an extension that was not offered: %s", v);
  c->state = C_OPEN;
  open_count++;
  connecting--;
  size_t rest = c->hs_len - head_len;
  if (rest > 0) {
    uint8_t tmp[HANDSHAKE_MAX];
    memcpy(tmp, c->hs + head_len, rest);
    parse(c, tmp, rest);
  }
  open_next();
}

static void send_request(struct conn *c) {
  char path[1024];
  if (c->publisher)
    snprintf(path, sizeof path, "%s%c%s", opt.path, strchr(opt.path, '?') ? '&' : '?',
             opt.publisher_query);
  else
    snprintf(path, sizeof path, "%s", opt.path);
  char req[1536];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\n"
                   "Host: %s:%d\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "\r\n",
                   path, opt.host, opt.port, WS_KEY);
  out_append(c, (const uint8_t *)req, (size_t)n);
  c->state = C_HANDSHAKE;
  out_flush(c);
  if (!c->want_write) watch(c, 0);
}

static void open_connection(struct conn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) fail("socket: %s", strerror(errno));
  int one = 1;
  /* Frames are small and latency-bound; Nagle would add delay, not save work. */
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->state = C_CONNECTING;
  c->ps = P_HEADER;
  c->hdr_need = 2;
  struct epoll_event ev;
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c;
  c->want_write = 1;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
  if (connect(c->fd, (const struct sockaddr *)&server_addr, sizeof server_addr) < 0 &&
      errno != EINPROGRESS)
    fail("connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
  connecting++;
}

static void open_next(void) {
  while (connecting < MAX_CONNECTING && next_to_open < nconns)
    open_connection(&conns[next_to_open++]);
}

/* ---------------------------------------------------------------- main loop */

static void on_event(struct conn *c, uint32_t events, uint8_t *rbuf) {
  if (c->state == C_CONNECTING) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) fail("connect to %s:%d: %s", opt.host, opt.port, strerror(err));
    send_request(c);
    return;
  }
  if (events & EPOLLOUT) out_flush(c);
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (c->state == C_HANDSHAKE) {
      handshake_read(c);
      return;
    }
    ssize_t n = read(c->fd, rbuf, READ_BUF_SIZE);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      fail("read on connection %ld: %s", conn_index(c), strerror(errno));
    }
    if (n == 0) fail("server closed connection %ld", conn_index(c));
    if (phase == PH_MEASURE) {
      wire_bytes_in += (uint64_t)n;
      reads_measured++;
    }
    parse(c, rbuf, (size_t)n);
    if (c->out_len > c->out_off) out_flush(c); /* pongs */
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: broadcast-load --port N [--host 127.0.0.1] [--path /topic]\n"
          "                      [--publisher-query role=publisher] [--subs 1000] [--size 64]\n"
          "                      [--window 32] [--warmup-ms 1000] [--duration-ms 3000]\n"
          "                      [--connect-timeout-ms 20000] [--stall-ms 5000] [--binary]\n"
          "                      [--server-pid PID] [--server-cpu N] [--cpu N]\n");
  exit(2);
}

static long arg_long(const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < min || v > max) usage();
  return v;
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
  signal(SIGPIPE, SIG_IGN);

  if (opt.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((size_t)opt.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) fail("sched_setaffinity: %s", strerror(errno));
  }
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

  memset(&server_addr, 0, sizeof server_addr);
  server_addr.sin_family = AF_INET;
  server_addr.sin_port = htons((uint16_t)opt.port);
  if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1)
    fail("bad IPv4 address: %s", opt.host);

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
  frame_len = build_frame(frame_template, payload, opt.size, opt.binary ? 2 : 1);
  seq_offset = frame_len - opt.size;
  for (int i = 0; i < nconns; i++) {
    conns[i].fd = -1;
    conns[i].publisher = i == 0;
    if (!conns[i].publisher) {
      conns[i].msg = malloc(opt.size);
      if (!conns[i].msg) fail("out of memory");
    }
  }

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
  double t_connect = now_s();
  open_next();

  struct epoll_event events[MAX_EVENTS];
  double deadline = t_connect + opt.connect_timeout_ms / 1e3;
  double t_join = 0, t_data = 0, t_start = 0, t_end = 0, cpu_start = 0, cpu_end = 0;
  double srv_start = -1, srv_end = -1, u0 = 0, s0 = 0, u1 = 0, s1 = 0;
  double machine_start = -1, machine_end = -1, irq_start = -1, irq_end = -1;
  double core_start = -1, core_end = -1, core_irq_start = -1, core_irq_end = -1;
  uint64_t deliveries_start = 0, deliveries_end = 0, completed_start = 0, completed_end = 0;
  uint64_t wire_end = 0, reads_end = 0;
  long rss_kb = -1;

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
      out_append(&conns[0], frame, build_frame(frame, PROBE, PROBE_LEN, opt.binary ? 2 : 1));
      out_flush(&conns[0]);
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
        wire_bytes_in = reads_measured = 0;
        deliveries_start = total_deliveries;
        completed_start = completed;
        for (int i = 1; i < nconns; i++) conns[i].received_at_start = conns[i].received;
        srv_start = proc_cpu_s(opt.server_pid, &rss_kb);
        machine_start = cpu_busy_s(-1, &irq_start);
        if (opt.server_cpu >= 0) core_start = cpu_busy_s(opt.server_cpu, &core_irq_start);
        cpu_start = cpu_self_s(&u0, &s0);
        t_start = now_s();
        deadline = t_start + opt.duration_ms / 1e3;
      } else if (phase == PH_MEASURE) {
        t_end = now_s();
        cpu_end = cpu_self_s(&u1, &s1);
        srv_end = proc_cpu_s(opt.server_pid, &rss_kb);
        machine_end = cpu_busy_s(-1, &irq_end);
        if (opt.server_cpu >= 0) core_end = cpu_busy_s(opt.server_cpu, &core_irq_end);
        deliveries_end = total_deliveries;
        completed_end = completed;
        wire_end = wire_bytes_in;
        reads_end = reads_measured;
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
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events, rbuf);
    if (n > 0) pump(now_s());
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

  double wall = t_end - t_start;
  uint64_t deliveries = deliveries_end - deliveries_start;
  uint64_t messages = completed_end - completed_start;
  double machine_cpu = machine_start >= 0 && machine_end >= 0 ? machine_end - machine_start : -1;
  double srv_cpu = srv_start >= 0 && srv_end >= 0 ? srv_end - srv_start : -1;
  double irq = irq_start >= 0 && irq_end >= 0 ? irq_end - irq_start : -1;
  double core = core_start >= 0 && core_end >= 0 ? core_end - core_start : -1;
  double core_irq = core_irq_start >= 0 && core_irq_end >= 0 ? core_irq_end - core_irq_start : -1;
  printf("{\"ok\":true,\"subs\":%d,\"size\":%zu,\"window\":%d,\"binary\":%s,"
         "\"connect_s\":%.3f,\"join_s\":%.3f,\"probes\":%llu,\"warmup_s\":%.3f,"
         "\"duration_s\":%.6f,\"deliveries\":%llu,\"deliveries_per_s\":%.1f,"
         "\"messages\":%llu,\"msgs_per_s\":%.1f,\"verified_messages\":%llu,"
         "\"latency_samples\":%zu,\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,"
         "\"latency_max_ms\":%.3f,\"reads\":%llu,\"wire_bytes_in_per_s\":%.1f,"
         "\"sub_min\":%llu,\"sub_max\":%llu,"
         "\"gen_cpu_user_s\":%.4f,\"gen_cpu_sys_s\":%.4f,\"gen_cpu_pct\":%.1f,"
         "\"server_cpu_s\":%.4f,\"server_cpu_pct\":%.1f,\"server_rss_kb\":%ld,"
         "\"machine_cpu_pct\":%.1f,\"machine_irq_pct\":%.1f,"
         "\"server_core_busy_pct\":%.1f,\"server_core_irq_pct\":%.1f}\n",
         opt.subs, opt.size, opt.window, opt.binary ? "true" : "false", t_join - t_connect,
         t_data - t_join, (unsigned long long)probes_sent, opt.warmup_ms / 1e3, wall,
         (unsigned long long)deliveries, (double)deliveries / wall, (unsigned long long)messages,
         (double)messages / wall, (unsigned long long)sent, latency_count,
         percentile(0.5) * 1e3, percentile(0.99) * 1e3,
         latency_count ? latencies[latency_count - 1] * 1e3 : -1.0, (unsigned long long)reads_end,
         (double)wire_end / wall, (unsigned long long)sub_min, (unsigned long long)sub_max,
         u1 - u0, s1 - s0, (cpu_end - cpu_start) / wall * 100.0, srv_cpu,
         srv_cpu >= 0 ? srv_cpu / wall * 100.0 : -1, rss_kb,
         machine_cpu >= 0 ? machine_cpu / wall * 100.0 : -1, irq >= 0 ? irq / wall * 100.0 : -1,
         core >= 0 ? core / wall * 100.0 : -1, core_irq >= 0 ? core_irq / wall * 100.0 : -1);
  fflush(stdout);

  /* Best-effort closing handshake (section 7.1.2), then let the kernel tidy up. */
  for (int i = 0; i < nconns; i++) {
    struct conn *c = &conns[i];
    static const uint8_t normal[2] = {0x03, 0xe8};
    send_control(c, 8, normal, 2);
    (void)!write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    close(c->fd);
    free(c->out);
    free(c->msg);
  }
  close(epfd);
  return 0;
}
