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
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
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
#include <zlib.h>

#define READ_BUF_SIZE (256 * 1024)
#define HANDSHAKE_MAX 8192
#define MAX_EVENTS 256
#define INFLATE_CHUNK (64 * 1024)

/* RFC 6455 section 1.3: the sample nonce and the accept value it must produce.
 * Reusing one key for every connection keeps the generator free of SHA-1 and
 * still verifies that the server computed the accept value correctly. */
static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
static const uint8_t MASK_KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_OPEN };
enum parse_state { P_HEADER, P_PAYLOAD };
enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DONE };

struct options {
  const char *host;
  int port;
  const char *path;
  int conns;
  int inflight;
  size_t size;
  int warmup_ms;
  int duration_ms;
  int connect_timeout_ms;
  int deflate;
  int binary;
  long server_pid;
  int cpu;
};

struct conn {
  int fd;
  enum conn_state state;
  int want_write; /* EPOLLOUT registered */

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
  int msg_compressed;
  uint64_t msg_len; /* decoded bytes of the current message so far */
  uint8_t ctrl[125];
  size_t ctrl_len;

  int deflate; /* permessage-deflate negotiated */
  int client_window_bits;
  z_stream inf;
  int inf_ready;
  int inf_ended; /* a BFINAL block ended the stream inside this message */

  int inflight;
  uint64_t sent_seq; /* echoes come back in order, so sequence numbers pick the payload */
  uint64_t recv_seq;
  uint64_t received;
  uint64_t received_at_start;
};

static struct options opt;
static struct conn *conns;
static int epfd = -1;
static enum phase phase = PH_CONNECT;
static int open_count;

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
static uint64_t wire_bytes_in;
/* Syscalls in the measured window: messages per read shows how much the server batches. */
static uint64_t reads_measured, writes_measured;

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
 * /proc/PID/stat fields 14 (utime), 15 (stime) and 24 (rss, pages). Returns -1
 * when unavailable. */
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
  long tck = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);
  *rss_kb = rss * (page / 1024);
  return (double)(utime + stime) / (double)tck;
}

/* CPU seconds spent by the whole machine (all CPUs, all processes) outside
 * idle, from the first line of /proc/stat. Minus the server's and our own CPU
 * this is the load that other processes put on the machine during a run,
 * which is what makes a figure noisy. Returns -1 when unavailable. */
static double machine_busy_s(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle, &iowait,
                 &irq, &softirq);
  fclose(f);
  if (n != 7) return -1;
  return (double)(user + nice + sys + irq + softirq) / (double)sysconf(_SC_CLK_TCK);
}

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

static void watch(struct conn *c, int want_write) {
  struct epoll_event ev;
  ev.events = EPOLLIN | (want_write ? EPOLLOUT : 0);
  ev.data.ptr = c;
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
  c->want_write = want_write;
}

static void out_append(struct conn *c, const uint8_t *data, size_t len) {
  if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
  if (c->out_len + len > c->out_cap) {
    /* Compact first; grow only if that is not enough. */
    if (c->out_off > 0) {
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap : 4096;
      while (cap < c->out_len + len) cap *= 2;
      uint8_t *p = realloc(c->out, cap);
      if (!p) fail("out of memory");
      c->out = p;
      c->out_cap = cap;
    }
  }
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
}

static void out_flush(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n > 0) {
      if (phase == PH_MEASURE) writes_measured++;
      c->out_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->want_write) watch(c, 1);
      return;
    }
    fail("write on connection %ld: %s", (long)(c - conns), strerror(errno));
  }
  c->out_off = c->out_len = 0;
  if (c->want_write) watch(c, 0);
}

static void send_message(struct conn *c) {
  int i = (int)(c->sent_seq++ % (uint64_t)pool);
  if (c->deflate) {
    int wb = c->client_window_bits;
    out_append(c, frame_deflate[wb][i], frame_deflate_len[wb][i]);
  } else {
    out_append(c, frame_plain[i], frame_plain_len[i]);
  }
  c->inflight++;
}

static void send_control(struct conn *c, int opcode, const uint8_t *data, size_t len) {
  uint8_t frame[6 + 125];
  size_t n = build_frame(frame, data, len, opcode, 0);
  out_append(c, frame, n);
}

/* ---------------------------------------------------------------- frames */

static void check_chunk(struct conn *c, const uint8_t *data, size_t len) {
  if (c->msg_len + len > opt.size)
    fail("echoed message longer than %zu bytes on connection %ld", opt.size, (long)(c - conns));
  const uint8_t *expected = payloads[c->recv_seq % (uint64_t)pool];
  if (memcmp(data, expected + c->msg_len, len) != 0)
    fail("echoed payload differs from what was sent on connection %ld", (long)(c - conns));
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
      fail("inflate failed on connection %ld: %d", (long)(c - conns), rc);
    size_t produced = INFLATE_CHUNK - c->inf.avail_out;
    if (produced) check_chunk(c, inflate_out, produced);
    if (rc == Z_STREAM_END) {
      c->inf_ended = 1;
      return;
    }
    if (rc == Z_BUF_ERROR && produced == 0) break;
  }
}

static void message_done(struct conn *c) {
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
  if (c->msg_opcode != want)
    fail("echoed message has opcode %d, sent %d, on connection %ld", c->msg_opcode, want,
         (long)(c - conns));
  if (c->msg_len != opt.size)
    fail("echoed message has %llu bytes, sent %zu, on connection %ld",
         (unsigned long long)c->msg_len, opt.size, (long)(c - conns));
  if (c->inflight <= 0) fail("unsolicited message on connection %ld", (long)(c - conns));
  c->inflight--;
  c->recv_seq++;
  c->received++;
  total_received++;
  c->in_message = 0;
  c->msg_len = 0;
  c->msg_compressed = 0;
  if (phase != PH_DONE) send_message(c);
}

static void frame_header_done(struct conn *c) {
  uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
  int fin = b0 & 0x80, rsv1 = b0 & 0x40, opcode = b0 & 0x0f;
  uint64_t len = b1 & 0x7f;
  if (b0 & 0x30) fail("RSV2/RSV3 set by server");
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
    if (!fin || len > 125 || rsv1) fail("invalid control frame from server (section 5.5)");
  } else if (opcode == 1 || opcode == 2) {
    if (c->in_message) fail("new data frame inside a fragmented message (section 5.4)");
    if (rsv1 && !c->deflate) fail("RSV1 set without permessage-deflate");
    c->in_message = 1;
    c->msg_opcode = opcode;
    c->msg_compressed = rsv1 != 0;
    c->msg_len = 0;
  } else if (opcode == 0) {
    if (!c->in_message) fail("continuation frame outside a message (section 5.4)");
    if (rsv1) fail("RSV1 set on a continuation frame (RFC 7692 section 6.1)");
  } else {
    fail("reserved opcode %d from server", opcode);
  }
  c->ps = P_PAYLOAD;
}

static void frame_done(struct conn *c) {
  int op = c->frame_opcode;
  if (op == 9) {
    send_control(c, 10, c->ctrl, c->ctrl_len); /* section 5.5.2: answer pings */
  } else if (op == 10) {
    /* unsolicited pong: ignore (section 5.5.3) */
  } else if (op == 8) {
    unsigned code = c->ctrl_len >= 2 ? ((unsigned)c->ctrl[0] << 8) | c->ctrl[1] : 1005;
    fail("server closed connection %ld with code %u", (long)(c - conns), code);
  } else if (c->frame_fin) {
    message_done(c);
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
    } else if (c->msg_compressed) {
      inflate_chunk(c, p, take);
    } else {
      check_chunk(c, p, take);
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

static char negotiated[256];

static void start_open(struct conn *c);

static void handshake_read(struct conn *c) {
  ssize_t n = read(c->fd, c->hs + c->hs_len, HANDSHAKE_MAX - 1 - c->hs_len);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    fail("read during handshake: %s", strerror(errno));
  }
  if (n == 0) fail("server closed connection %ld during the handshake", (long)(c - conns));
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
    fail("upgrade refused: %s", c->hs);
  }
  char v[256];
  if (!header_value(c->hs, "Sec-WebSocket-Accept", v, sizeof v) || strcmp(v, WS_ACCEPT) != 0)
    fail("bad Sec-WebSocket-Accept (RFC 6455 section 4.2.2)");
  c->client_window_bits = 15;
  if (header_value(c->hs, "Sec-WebSocket-Extensions", v, sizeof v)) {
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
  c->state = C_OPEN;
  open_count++;
  size_t rest = c->hs_len - head_len;
  if (rest > 0) {
    /* Frames that arrived with the response belong to the parser. */
    uint8_t tmp[HANDSHAKE_MAX];
    memcpy(tmp, c->hs + head_len, rest);
    parse(c, tmp, rest);
  }
  if (phase != PH_CONNECT) start_open(c);
}

static void send_request(struct conn *c) {
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\n"
                   "Host: %s:%d\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "%s"
                   "\r\n",
                   opt.path, opt.host, opt.port, WS_KEY,
                   opt.deflate
                       ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                       : "");
  out_append(c, (const uint8_t *)req, (size_t)n);
  c->state = C_HANDSHAKE;
  out_flush(c);
  if (!c->want_write) watch(c, 0);
}

static void start_open(struct conn *c) {
  for (int i = c->inflight; i < opt.inflight; i++) send_message(c);
  out_flush(c);
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
      fail("read on connection %ld: %s", (long)(c - conns), strerror(errno));
    }
    if (n == 0) fail("server closed connection %ld", (long)(c - conns));
    if (phase == PH_MEASURE) {
      wire_bytes_in += (uint64_t)n;
      reads_measured++;
    }
    parse(c, rbuf, (size_t)n);
    out_flush(c); /* everything this read produced leaves in one write */
  }
}

static void open_connection(struct conn *c, const struct sockaddr_in *addr) {
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
  if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) < 0 && errno != EINPROGRESS)
    fail("connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
}

static void usage(void) {
  fprintf(stderr,
          "usage: echo-load --port N [--host 127.0.0.1] [--path /echo] [--conns 64]\n"
          "                 [--inflight 16] [--size 32] [--warmup-ms 1000]\n"
          "                 [--duration-ms 3000] [--connect-timeout-ms 10000]\n"
          "                 [--deflate] [--binary] [--server-pid PID] [--cpu N]\n");
  exit(2);
}

static long arg_long(const char *s, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < min || v > max) usage();
  return v;
}

int main(int argc, char **argv) {
  opt.host = "127.0.0.1";
  opt.path = "/echo";
  opt.conns = 64;
  opt.inflight = 16;
  opt.size = 32;
  opt.warmup_ms = 1000;
  opt.duration_ms = 3000;
  opt.connect_timeout_ms = 10000;
  opt.cpu = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--deflate")) opt.deflate = 1;
    else if (!strcmp(a, "--binary")) opt.binary = 1;
    else if (!v) usage();
    else if (!strcmp(a, "--host")) opt.host = v, i++;
    else if (!strcmp(a, "--port")) opt.port = (int)arg_long(v, 1, 65535), i++;
    else if (!strcmp(a, "--path")) opt.path = v, i++;
    else if (!strcmp(a, "--conns")) opt.conns = (int)arg_long(v, 1, 10000), i++;
    else if (!strcmp(a, "--inflight")) opt.inflight = (int)arg_long(v, 1, 4096), i++;
    else if (!strcmp(a, "--size")) opt.size = (size_t)arg_long(v, 0, 16 * 1024 * 1024), i++;
    else if (!strcmp(a, "--warmup-ms")) opt.warmup_ms = (int)arg_long(v, 0, 600000), i++;
    else if (!strcmp(a, "--duration-ms")) opt.duration_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--connect-timeout-ms"))
      opt.connect_timeout_ms = (int)arg_long(v, 1, 600000), i++;
    else if (!strcmp(a, "--server-pid")) opt.server_pid = arg_long(v, 1, 1L << 30), i++;
    else if (!strcmp(a, "--cpu")) opt.cpu = (int)arg_long(v, 0, 1023), i++;
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

  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)opt.port);
  if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) fail("bad IPv4 address: %s", opt.host);

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
  if (!payloads || !frame_plain || !frame_plain_len || !inflate_out || !rbuf || !conns)
    fail("out of memory");
  for (int i = 0; i < pool; i++) {
    payloads[i] = malloc(opt.size + 1);
    frame_plain[i] = malloc(opt.size + 14);
    if (!payloads[i] || !frame_plain[i]) fail("out of memory");
    make_payload(payloads[i], opt.size, (uint32_t)i + 1);
    frame_plain_len[i] = build_frame(frame_plain[i], payloads[i], opt.size, opt.binary ? 2 : 1, 0);
  }

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
  for (int i = 0; i < opt.conns; i++) open_connection(&conns[i], &addr);

  struct epoll_event events[MAX_EVENTS];
  double t_connect = now_s();
  double deadline = t_connect + opt.connect_timeout_ms / 1e3;
  double t_start = 0, t_end = 0, cpu_start = 0, cpu_end = 0, srv_start = -1, srv_end = -1;
  double u0 = 0, s0 = 0, u1 = 0, s1 = 0, machine_start = -1, machine_end = -1;
  uint64_t count_start = 0, count_end = 0, wire_end = 0, reads_end = 0, writes_end = 0;
  long rss_kb = -1;

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
        wire_bytes_in = reads_measured = writes_measured = 0;
        count_start = total_received;
        for (int i = 0; i < opt.conns; i++) conns[i].received_at_start = conns[i].received;
        srv_start = proc_cpu_s(opt.server_pid, &rss_kb);
        machine_start = machine_busy_s();
        cpu_start = cpu_self_s(&u0, &s0);
        t_start = now_s();
        deadline = t_start + opt.duration_ms / 1e3;
      } else {
        t_end = now_s();
        cpu_end = cpu_self_s(&u1, &s1);
        srv_end = proc_cpu_s(opt.server_pid, &rss_kb);
        machine_end = machine_busy_s();
        count_end = total_received;
        wire_end = wire_bytes_in;
        reads_end = reads_measured;
        writes_end = writes_measured;
        phase = PH_DONE;
        break;
      }
      continue;
    }
    int timeout = (int)((deadline - now) * 1e3) + 1;
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events, rbuf);
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
  double wall = t_end - t_start;
  uint64_t messages = count_end - count_start;
  double machine_cpu = machine_start >= 0 && machine_end >= 0 ? machine_end - machine_start : -1;
  double srv_cpu = srv_start >= 0 && srv_end >= 0 ? srv_end - srv_start : -1;
  printf("{\"ok\":true,\"size\":%zu,\"conns\":%d,\"inflight\":%d,\"deflate\":%s,"
         "\"binary\":%s,\"warmup_s\":%.3f,\"duration_s\":%.6f,"
         "\"messages\":%llu,\"msgs_per_s\":%.1f,\"payload_bytes_per_s\":%.1f,"
         "\"wire_bytes_in_per_s\":%.1f,\"reads\":%llu,\"writes\":%llu,"
         "\"conn_min\":%llu,\"conn_max\":%llu,"
         "\"gen_cpu_user_s\":%.4f,\"gen_cpu_sys_s\":%.4f,\"gen_cpu_pct\":%.1f,"
         "\"server_cpu_s\":%.4f,\"server_cpu_pct\":%.1f,\"server_rss_kb\":%ld,"
         "\"machine_cpu_pct\":%.1f,"
         "\"client_frame_bytes\":%.1f,\"payloads\":%d,\"negotiated\":",
         opt.size, opt.conns, opt.inflight, opt.deflate ? "true" : "false",
         opt.binary ? "true" : "false", opt.warmup_ms / 1e3, wall,
         (unsigned long long)messages, (double)messages / wall,
         (double)messages * (double)opt.size / wall, (double)wire_end / wall,
         (unsigned long long)reads_end, (unsigned long long)writes_end, (unsigned long long)min,
         (unsigned long long)max, u1 - u0, s1 - s0,
         (cpu_end - cpu_start) / wall * 100.0, srv_cpu, srv_cpu >= 0 ? srv_cpu / wall * 100.0 : -1,
         rss_kb, machine_cpu >= 0 ? machine_cpu / wall * 100.0 : -1, mean_frame, pool);
  print_json_string(negotiated);
  printf("}\n");
  fflush(stdout);

  /* Best-effort closing handshake (section 7.1.2), then let the kernel tidy up. */
  for (int i = 0; i < opt.conns; i++) {
    struct conn *c = &conns[i];
    static const uint8_t normal[2] = {0x03, 0xe8};
    send_control(c, 8, normal, 2);
    (void)!write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (c->inf_ready) inflateEnd(&c->inf);
    close(c->fd);
    free(c->out);
  }
  close(epfd);
  return 0;
}
