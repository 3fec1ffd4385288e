/*
 * idle-load: holds N idle WebSocket connections open against a server, for
 * Switchboard's idle-memory benchmark (bench/idle.ts), which reads the
 * server's memory while they are held.
 *
 * One thread, epoll, non-blocking sockets. Three phases, each bounded in time:
 *   1. open: N connections from --source (bind() before connect(), so that
 *      several generators, each on its own 127.0.0.x, can share the work and
 *      no one address's ephemeral ports or one process's open files are the
 *      limit), at most C of them in the TCP connect or the opening handshake
 *      at once, so that the SYNs do not overflow the server's listen backlog.
 *      Each upgrade gets the client's checks of RFC 6455 section 4.1: status
 *      101, "Upgrade: websocket", "Connection: Upgrade", the
 *      Sec-WebSocket-Accept for the key sent, and no extension or subprotocol
 *      that was not offered. When all N are open it prints
 *      {"ok":true,"phase":"open",...}, with the time it took and the latency
 *      of the upgrades (from connect() to the validated 101 response).
 *   2. hold: nothing is sent. A ping from the server (a heartbeat) is answered
 *      with a pong carrying its payload (sections 5.5.2 and 5.5.3) and an
 *      unsolicited pong is ignored; a data frame, a close frame or the end of
 *      a connection is an error: nothing here gives the server a reason for
 *      any of them. The hold ends when stdin has a line or is closed (the
 *      driver ends it, or the driver died), or fails after --hold-timeout-ms.
 *   3. close: every connection starts the closing handshake with code 1000
 *      (section 7.1.2); the server's close frame must echo it (section 5.5.1)
 *      and the server must then close the TCP connection first (section
 *      7.1.1), after which the client closes its socket. It then prints
 *      {"ok":true,"phase":"closed",...} and exits 0.
 * Any failure prints {"ok":false,"error":...} and exits 1; bad usage exits 2.
 *
 * Every connection uses the sample key of RFC 6455 section 1.3: the server's
 * accept value is still checked, and the memory a server keeps for an idle
 * connection does not depend on the key.
 */

#define _GNU_SOURCE
/* Upgrade responses are a few hundred bytes; every connection holds this
 * buffer for its whole life, and one generator holds thousands. */
#define HANDSHAKE_MAX 1024
/* A connection only ever writes an upgrade request, pongs and a close frame. */
#define OUT_BUF_MIN 256
#define LOADGEN_OWN_LOOP
#include "loadgen.h"

#define MAX_EVENTS 256
#define MAX_CONNS 1000000
#define MAX_CONCURRENCY 4096
/* Bounds the wait in epoll_wait, so that the phase deadlines are checked. */
#define TICK_MS 100
/* epoll's data for stdin; connections carry their struct conn. */
#define STDIN_TAG NULL

enum phase { PH_OPEN, PH_HOLD, PH_CLOSE };

enum stage {
  ST_NONE,       /* not started yet */
  ST_CONNECTING, /* connect() called, waiting for the TCP handshake */
  ST_UPGRADING,  /* request sent, waiting for the 101 response */
  ST_OPEN,       /* open and idle */
  ST_CLOSING,    /* close frame sent, waiting for the server's */
  ST_DRAINING,   /* the server's close frame received, waiting for its FIN */
  ST_DONE,       /* the server's FIN received and our socket closed */
};

static const char *const STAGE_WAITS[] = {
    "not started",
    "waiting for the TCP connect",
    "waiting for the 101 response",
    "open",
    "waiting for the server's close frame",
    "waiting for the server's FIN",
    "done",
};

struct options {
  struct target_options t;
  const char *source;
  int conns;
  int concurrency;
  int open_timeout_ms;
  int hold_timeout_ms;
  int close_timeout_ms;
};

struct conn {
  struct ws_conn ws;
  enum stage stage;
  /* The frame being received. Only control frames are acceptable here, so at
   * most a 2-byte header and 125 bytes of payload (section 5.5). */
  uint8_t frame[2 + 125];
  size_t frame_len;
};

_Static_assert(offsetof(struct conn, ws) == 0, "loadgen.h's conn_of needs ws first");

static struct options opt;
static struct conn *conns;
static enum phase phase = PH_OPEN;
static int started, done;
static uint64_t pings, pongs;
/* From each connection's connect() to its validated 101 response. */
static struct histogram upgrade_hist;
static double *started_at;

/* ---------------------------------------------------------------- opening */

static void start_next(void) {
  struct conn *c = &conns[started];
  c->stage = ST_CONNECTING;
  started_at[started] = now_s();
  open_connection(&c->ws, started);
  started++;
}

static void send_request(struct conn *c) {
  write_upgrade(&c->ws, opt.t.path, WS_KEY, "");
  c->stage = ST_UPGRADING;
}


static void server_bytes(struct conn *c, const uint8_t *p, size_t n);

static void upgrade_read(struct conn *c) {
  struct ws_conn *w = &c->ws;
  size_t head_len = read_upgrade_head(w, STAGE_WAITS[c->stage]);
  if (head_len == 0) return;
  check_upgrade_response(w, WS_ACCEPT, WS_KEY);
  hist_add(&upgrade_hist, now_s() - started_at[w->id]);
  connecting--;
  open_count++;
  c->stage = ST_OPEN;
  w->state = C_OPEN;
  /* Anything that came with the response is the server's first frame. */
  if (w->hs_len > head_len)
    server_bytes(c, (const uint8_t *)w->hs + head_len, w->hs_len - head_len);
  /* Keep C connections in progress until all N have started. */
  if (phase == PH_OPEN && started < opt.conns) start_next();
}

/* ---------------------------------------------------------------- frames in */

/* Section 5.5: what may arrive on an idle connection is a control frame. */
static void check_header(struct conn *c) {
  uint8_t b0 = c->frame[0], b1 = c->frame[1];
  int opcode = b0 & 0x0f;
  if (opcode == 1 || opcode == 2 || opcode == 0)
    fail("connection %ld: a data frame (opcode %d) from the server on an idle connection, %s",
         c->ws.id, opcode, STAGE_WAITS[c->stage]);
  if (opcode != 8 && opcode != 9 && opcode != 10)
    fail("connection %ld: reserved opcode %d from the server", c->ws.id, opcode);
  if (!(b0 & 0x80)) fail("connection %ld: fragmented control frame (section 5.5)", c->ws.id);
  if (b0 & 0x70) fail("connection %ld: RSV bits set on a control frame (section 5.2)", c->ws.id);
  if (b1 & 0x80) fail("connection %ld: the server's frame is masked (section 5.1)", c->ws.id);
  if ((b1 & 0x7f) > 125)
    fail("connection %ld: control frame longer than 125 bytes (section 5.5)", c->ws.id);
}

static void frame_complete(struct conn *c) {
  int opcode = c->frame[0] & 0x0f;
  size_t len = c->frame_len - 2;
  if (opcode == 9) {
    pings++;
    /* Section 5.5.2: answer with a pong carrying the ping's payload, unless
     * our close frame is already sent (section 5.5.1: the server's close
     * frame is all that is still awaited). */
    if (c->stage == ST_OPEN) {
      send_control(&c->ws, 10, c->frame + 2, len);
      pongs++;
    }
  } else if (opcode == 10) {
    /* An unsolicited pong is a heartbeat that needs no answer (section 5.5.3). */
  } else {
    unsigned code = len >= 2 ? (unsigned)c->frame[2] << 8 | c->frame[3] : 1005;
    if (c->stage != ST_CLOSING)
      fail("connection %ld: the server closed it with code %u while it was idle", c->ws.id,
           len == 1 ? 0 : code);
    if (len == 1 || code != 1000)
      fail("connection %ld: the server's close frame has code %u, not the 1000 it was sent "
           "(section 5.5.1)",
           c->ws.id, len == 1 ? 0 : code);
    c->stage = ST_DRAINING;
  }
}

/* Bytes from the server after the 101 response, parsed frame by frame. */
static void server_bytes(struct conn *c, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (c->stage == ST_DRAINING)
      fail("connection %ld: %zu bytes after the server's close frame (section 5.5.1)", c->ws.id,
           n);
    if (c->frame_len < 2) {
      c->frame[c->frame_len++] = *p++;
      n--;
      if (c->frame_len < 2) continue;
      check_header(c);
    }
    size_t want = 2 + (size_t)(c->frame[1] & 0x7f) - c->frame_len;
    size_t take = n < want ? n : want;
    memcpy(c->frame + c->frame_len, p, take);
    c->frame_len += take;
    p += take;
    n -= take;
    if (take == want) {
      frame_complete(c);
      c->frame_len = 0;
    }
  }
  /* Pongs leave at once, in one write per read. */
  if (c->ws.out_len > c->ws.out_off) out_flush(&c->ws);
}

/* The server's FIN after its close frame: this connection is done. */
static void finish(struct conn *c) {
  /* The server closed its side first (section 7.1.1); closing ours sends our
   * FIN and leaves the socket to the kernel until that is acknowledged. */
  close(c->ws.fd);
  c->ws.fd = -1;
  c->stage = ST_DONE;
  open_count--;
  done++;
}

static void conn_read(struct conn *c, uint8_t *rbuf) {
  for (int i = 0; i < 4; i++) {
    ssize_t n = read(c->ws.fd, rbuf, READ_BUF_SIZE);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      if (errno == ECONNRESET)
        fail("connection %ld: reset by the server (RST), %s", c->ws.id, STAGE_WAITS[c->stage]);
      fail("connection %ld: read, %s: %s", c->ws.id, STAGE_WAITS[c->stage], strerror(errno));
    }
    if (n == 0) {
      if (c->stage != ST_DRAINING)
        fail("connection %ld: the server closed the TCP connection without a closing handshake, "
             "%s (RFC 6455 section 7.1.1)",
             c->ws.id, STAGE_WAITS[c->stage]);
      finish(c);
      return;
    }
    bytes_in += (uint64_t)n;
    reads_done++;
    server_bytes(c, rbuf, (size_t)n);
  }
}

static void on_conn_event(struct conn *c, uint32_t events, uint8_t *rbuf) {
  if (c->stage == ST_DONE) return;
  if (c->stage == ST_CONNECTING) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->ws.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err)
      fail("connection %ld: connect to %s:%d from %s: %s", c->ws.id, server.host, server.port,
           opt.source ? opt.source : "any address", strerror(err));
    send_request(c);
    return;
  }
  if (events & EPOLLOUT) out_flush(&c->ws);
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  if (c->stage == ST_UPGRADING) upgrade_read(c);
  else conn_read(c, rbuf);
}

/* ---------------------------------------------------------------- stdin */

/* Whether the driver has asked for the close: a whole line, or end of file. */
static int stdin_says_stop(void) {
  char buf[256];
  ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
  if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : 1;
  return n == 0 || memchr(buf, '\n', (size_t)n) != NULL;
}

/* ---------------------------------------------------------------- main loop */

static void usage(void) {
  fprintf(stderr,
          "usage: idle-load --port N --conns N [--host 127.0.0.1] [--path /echo]\n"
          "                 [--source 127.0.0.2] [--concurrency 64]\n"
          "                 [--open-timeout-ms 120000] [--hold-timeout-ms 600000]\n"
          "                 [--close-timeout-ms 30000] [--server-pid PID] [--server-cpu N]\n"
          "                 [--cpu N]\n"
          "Opens N connections, prints {\"ok\":true,\"phase\":\"open\",...} and holds them\n"
          "until stdin has a line or is closed; then closes each with code 1000 and prints\n"
          "{\"ok\":true,\"phase\":\"closed\",...}.\n");
  exit(2);
}

/* One generator holds N sockets and a few other files: raise the soft limit
 * on open files to what that needs, within the hard limit. */
static void raise_file_limit(void) {
  struct rlimit rl;
  rlim_t need = (rlim_t)opt.conns + 32;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) fail("getrlimit: %s", strerror(errno));
  if (rl.rlim_cur >= need) return;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
    fail("%d connections need %lu open files; this process may have at most %lu (hard limit): "
         "spread them over more generators",
         opt.conns, (unsigned long)need, (unsigned long)rl.rlim_max);
  rl.rlim_cur = need;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) fail("setrlimit: %s", strerror(errno));
}

/* The connection the close phase is waiting for, for the error message. */
static const struct conn *first_not_done(void) {
  for (int i = 0; i < opt.conns; i++)
    if (conns[i].stage != ST_DONE) return &conns[i];
  return NULL;
}

static void phase_timeout(void) {
  if (phase == PH_OPEN) {
    fail("open phase: %d of %d connections open after %d ms, %d still connecting", open_count,
         opt.conns, opt.open_timeout_ms, connecting);
  }
  if (phase == PH_HOLD)
    fail("hold phase: not told to close (a line on stdin) within %d ms", opt.hold_timeout_ms);
  const struct conn *c = first_not_done();
  fail("close phase: %d of %d connections closed after %d ms; connection %ld is %s", done,
       opt.conns, opt.close_timeout_ms, c ? c->ws.id : -1L,
       c ? STAGE_WAITS[c->stage] : "unknown");
}

int main(int argc, char **argv) {
  target_defaults(&opt.t, "/echo");
  opt.concurrency = 64;
  opt.open_timeout_ms = 120000;
  opt.hold_timeout_ms = 600000;
  opt.close_timeout_ms = 30000;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    else if (parse_target_option(&opt.t, a, v)) i++;
    else if (!strcmp(a, "--source")) opt.source = v, i++;
    else if (!strcmp(a, "--conns")) opt.conns = (int)arg_long(v, 1, MAX_CONNS), i++;
    else if (!strcmp(a, "--concurrency"))
      opt.concurrency = (int)arg_long(v, 1, MAX_CONCURRENCY), i++;
    else if (!strcmp(a, "--open-timeout-ms"))
      opt.open_timeout_ms = (int)arg_long(v, 1, 3600000), i++;
    else if (!strcmp(a, "--hold-timeout-ms"))
      opt.hold_timeout_ms = (int)arg_long(v, 1, 3600000), i++;
    else if (!strcmp(a, "--close-timeout-ms"))
      opt.close_timeout_ms = (int)arg_long(v, 1, 3600000), i++;
    else usage();
  }
  if (!opt.t.port || !opt.conns) usage();
  setup_process(opt.t.cpu);
  raise_file_limit();
  setup_loop(opt.t.host, opt.t.port);
  if (opt.source) {
    source_addr.sin_family = AF_INET;
    source_addr.sin_port = 0; /* the kernel picks the port at connect() */
    if (inet_pton(AF_INET, opt.source, &source_addr.sin_addr) != 1)
      fail("bad IPv4 source address: %s", opt.source);
  }

  /* stdin ends the hold. A regular file or /dev/null cannot be watched with
   * epoll (EPERM): such a stdin is already at its end, so the hold ends as
   * soon as it begins. */
  int stdin_watched = 1;
  struct epoll_event sev = {.events = EPOLLIN, .data.ptr = STDIN_TAG};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, STDIN_FILENO, &sev) < 0) {
    if (errno != EPERM) fail("epoll_ctl on stdin: %s", strerror(errno));
    stdin_watched = 0;
  }

  uint8_t *rbuf = malloc(READ_BUF_SIZE);
  conns = calloc((size_t)opt.conns, sizeof *conns);
  started_at = calloc((size_t)opt.conns, sizeof *started_at);
  if (!rbuf || !conns || !started_at) fail("out of memory");

  struct reading open_start = {0}, open_end = {0};
  read_window_start(&open_start, opt.t.server_pid, opt.t.server_cpu);
  double phase_started = open_start.t, held_at = 0, close_at = 0;
  double deadline = phase_started + opt.open_timeout_ms / 1e3;
  while (started < opt.conns && started < opt.concurrency) start_next();

  struct epoll_event events[MAX_EVENTS];
  int stop = 0;
  for (;;) {
    double now = now_s();
    if (phase == PH_OPEN && open_count == opt.conns) {
      read_window_end(&open_end, opt.t.server_pid, opt.t.server_cpu);
      double wall = open_end.t - open_start.t;
      printf("{\"ok\":true,\"phase\":\"open\",\"conns\":%d,\"source\":", opt.conns);
      print_json_string(opt.source ? opt.source : "");
      printf(",\"concurrency\":%d,\"open_s\":%.4f,\"conns_per_s\":%.1f,", opt.concurrency, wall,
             opt.conns / wall);
      print_latency_json(&upgrade_hist);
      putchar(',');
      print_cpu_json(&open_start, &open_end);
      printf("}\n");
      fflush(stdout);
      phase = PH_HOLD;
      held_at = now;
      deadline = now + opt.hold_timeout_ms / 1e3;
      if (!stdin_watched) stop = 1;
    }
    if (phase == PH_HOLD && stop) {
      phase = PH_CLOSE;
      close_at = now_s();
      deadline = close_at + opt.close_timeout_ms / 1e3;
      if (stdin_watched) epoll_ctl(epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
      /* Section 7.1.2: the client starts the closing handshake, code 1000. */
      static const uint8_t normal[2] = {0x03, 0xe8};
      for (int i = 0; i < opt.conns; i++) {
        conns[i].stage = ST_CLOSING;
        send_control(&conns[i].ws, 8, normal, 2);
        out_flush(&conns[i].ws);
      }
    }
    if (phase == PH_CLOSE && done == opt.conns) break;
    if (now >= deadline) phase_timeout();
    int timeout = (int)((deadline - now) * 1e3) + 1;
    if (timeout > TICK_MS) timeout = TICK_MS;
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == STDIN_TAG) {
        if (!stdin_says_stop()) continue;
        if (phase == PH_OPEN)
          fail("told to stop (stdin) with %d of %d connections open", open_count, opt.conns);
        stop = 1;
        /* Until the close starts, stdin at its end would report every time. */
        epoll_ctl(epfd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
        stdin_watched = 0;
        continue;
      }
      on_conn_event(events[i].data.ptr, events[i].events, rbuf);
    }
  }

  double end = now_s();
  printf("{\"ok\":true,\"phase\":\"closed\",\"conns\":%d,\"closed\":%d,\"held_s\":%.3f,"
         "\"close_s\":%.4f,\"pings\":%llu,\"pongs\":%llu}\n",
         opt.conns, done, close_at - held_at, end - close_at, (unsigned long long)pings,
         (unsigned long long)pongs);
  fflush(stdout);
  for (int i = 0; i < opt.conns; i++) free(conns[i].ws.out);
  free(conns);
  free(started_at);
  free(rbuf);
  close(epfd);
  return 0;
}
