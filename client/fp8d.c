/* libfp8d: the client side of the protocol (docs/protocol.md) and the ring reader.
 *
 * One DEALER socket per client. Replies to different requests may interleave (tokens of
 * two streams, a tokenize reply in the middle of a generation), so every received message
 * goes through dispatch(): a message whose id belongs to an open stream updates that
 * stream; the reply a synchronous call waits for is parked in await_msg; anything else
 * (the `ok` to a cancel, replies to abandoned requests) is dropped. */
#include "fp8d.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "ipc/endpoint.h"
#include "ipc/protocol.h"
#include "ipc/ring.h"
#include "ipc/shm.h"

/* How often a reader waiting on a ring also checks the request channel (disconnects,
 * messages of a daemon that ended a stream without its FINAL record). */
#define PUMP_EVERY_MS 100

struct chunk {
    struct chunk *next;
    struct fp8_msg msg; /* op CHUNK, owned */
    uint32_t pos;       /* next token of msg.u.chunk.tokens to hand out */
};

struct fp8d_stream {
    fp8d_client *c;
    fp8d_stream *next;       /* in c->streams */
    uint64_t id;
    int32_t slot;            /* ring slot, -1 when tokens come as chunks */
    bool accepted;
    uint64_t handle;         /* daemon-wide, from `accepted` (0: none) */
    bool ended;              /* `done` or `error` received */
    bool ring_final;         /* FINAL record seen */
    bool need_advance;       /* the last token returned still lies in the ring */
    bool finished;           /* fp8d_stream_next has reported the end */
    int end_rc;              /* 0 for `done`, else the error as a negative errno */
    char end_msg[256];       /* the daemon's message with the error */
    struct fp8d_result result;
    struct chunk *chunks;    /* queue of received chunks, head first */
    struct chunk **chunks_tail;
};

struct fp8d_client {
    void *ctx;
    void *sock;
    void *mon;                  /* PAIR receiving the DEALER's disconnect events */
    bool lost;                  /* the connection to the daemon dropped: session over */
    int64_t last_pump_ms;       /* when non-blocking reads last looked at the socket */
    int timeout_ms;
    uint64_t next_id;
    bool has_shm;
    struct fp8_shm shm;
    struct fp8_ring_geom geom;
    struct fp8_ring_cons *cons; /* (geom.n_slots) */
    fp8d_stream *streams;
    uint64_t await_id;          /* id of the reply a synchronous call waits for, 0 none */
    bool await_done;
    struct fp8_msg await_msg;
    char server[FP8_MSG_MAX_NAME_BYTES + 1];
    char last_error[512];
};

/* ---- small helpers -------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline of a wait of timeout_ms (< 0: none). */
static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left before deadline (-1: unbounded, 0: expired). */
static int left_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

static int set_error(fp8d_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_error(fp8d_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof(c->last_error), fmt, ap);
    va_end(ap);
    return code;
}

static int errc_to_errno(enum fp8_msg_errc code)
{
    switch (code) {
    case FP8_MSG_ERRC_BAD_REQUEST: return -EINVAL;
    case FP8_MSG_ERRC_TOO_LONG: return -E2BIG;
    case FP8_MSG_ERRC_BUSY: return -EBUSY;
    case FP8_MSG_ERRC_CANCELLED: return -ECANCELED;
    case FP8_MSG_ERRC_UNSUPPORTED: return -EOPNOTSUPP;
    case FP8_MSG_ERRC_SHUTTING_DOWN: return -ESHUTDOWN;
    default: return -EIO;
    }
}

static void copy_str(char *dst, size_t cap, const struct fp8_msg_str *s)
{
    size_t n = s->len < cap - 1 ? s->len : cap - 1;
    if (n)
        memcpy(dst, s->s, n);
    dst[n] = '\0';
}

const char *fp8d_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case -EINVAL: return "invalid argument or request";
    case -E2BIG: return "prompt or message too long";
    case -EBUSY: return "daemon busy, retry later";
    case -ECANCELED: return "generation cancelled";
    case -EOPNOTSUPP: return "not supported by this daemon";
    case -ESHUTDOWN: return "daemon shutting down";
    case -EIO: return "daemon-side failure";
    case -EPROTO: return "protocol violation by the daemon";
    case -EPROTONOSUPPORT: return "daemon speaks another protocol version";
    case -ETIMEDOUT: return "timed out";
    case -EAGAIN: return "nothing available yet";
    case -ENOMEM: return "out of memory";
    case -EINTR: return "interrupted by a signal";
    case -ENOENT: return "shared-memory segment not found";
    case -EACCES: return "permission denied";
    case -ECONNRESET: return "connection to the daemon lost";
    default: return "unknown error";
    }
}

const char *fp8d_last_error(const fp8d_client *c)
{
    return c ? c->last_error : "";
}

void fp8d_sampling_init(struct fp8d_sampling *s)
{
    memset(s, 0, sizeof(*s));
    s->temperature = -1.0f;
    s->top_p = -1.0f;
    s->top_k = -1;
    s->min_p = -1.0f;
}

/* ---- the request channel ---------------------------------------------------------------- */

static int send_msg(fp8d_client *c, const struct fp8_msg *m)
{
    struct fp8_err err = {{0}};
    void *buf;
    size_t len;
    int rc = fp8_msg_encode(m, &buf, &len, &err);
    if (rc < 0)
        return set_error(c, rc == -EMSGSIZE ? -E2BIG : rc, "%s", err.msg);
    rc = zmq_send(c->sock, buf, len, 0) < 0 ? -errno : 0;
    free(buf);
    if (rc == -EAGAIN)
        return set_error(c, -ETIMEDOUT, "send: the daemon is not taking messages");
    if (rc < 0)
        return set_error(c, rc, "send: %s", zmq_strerror(-rc));
    return 0;
}

static void stream_end(fp8d_stream *s, int rc, const char *msg)
{
    s->ended = true;
    s->end_rc = rc;
    snprintf(s->end_msg, sizeof(s->end_msg), "%s", msg);
}

/* Hands one received message to whoever it belongs to; takes ownership of *m. */
static void dispatch(fp8d_client *c, struct fp8_msg *m)
{
    for (fp8d_stream *s = c->streams; s; s = s->next) {
        if (s->id != m->id || s->ended)
            continue;
        if (m->op == FP8_MSG_OP_ACCEPTED) {
            int32_t slot = m->u.accepted.slot;
            s->accepted = true;
            if (slot >= 0 && (!c->has_shm || (uint32_t)slot >= c->geom.n_slots))
                stream_end(s, -EPROTO, "daemon assigned a ring slot that does not exist");
            else
                s->slot = slot;
            s->result.prompt_tokens = m->u.accepted.prompt_tokens;
            s->handle = m->u.accepted.handle;
        } else if (m->op == FP8_MSG_OP_CHUNK && s->accepted && s->slot < 0) {
            struct chunk *k = calloc(1, sizeof(*k));
            if (!k) {
                stream_end(s, -ENOMEM, "out of memory for received tokens");
                break;
            }
            k->msg = *m;
            *s->chunks_tail = k;
            s->chunks_tail = &k->next;
            return; /* the chunk now owns the message */
        } else if (m->op == FP8_MSG_OP_DONE) {
            const struct fp8_msg_done *d = &m->u.done;
            s->result = (struct fp8d_result){
                .finish = (enum fp8d_finish)d->finish, .prompt_tokens = d->prompt_tokens,
                .completion_tokens = d->completion_tokens, .queue_us = d->queue_us,
                .prefill_us = d->prefill_us, .decode_us = d->decode_us,
            };
            stream_end(s, 0, "");
        } else if (m->op == FP8_MSG_OP_ERROR) {
            char line[256];
            copy_str(line, sizeof(line), &m->u.error.message);
            stream_end(s, errc_to_errno(m->u.error.code), line);
        } else {
            char line[64];
            snprintf(line, sizeof(line), "unexpected \"%s\" for a generation",
                     fp8_msg_op_name(m->op));
            stream_end(s, -EPROTO, line);
        }
        break;
    }
    if (c->await_id && m->id == c->await_id && !c->await_done) {
        c->await_msg = *m;
        c->await_done = true;
        return;
    }
    fp8_msg_free(m);
}

/* The daemon went away (crash, restart, SIGKILL): its session, ring slots and requests
 * are gone with it, so every open stream ends and later calls fail at once. */
static int connection_lost(fp8d_client *c)
{
    c->lost = true;
    for (fp8d_stream *s = c->streams; s; s = s->next)
        if (!s->ended)
            stream_end(s, -ECONNRESET, "connection to the daemon lost");
    return set_error(c, -ECONNRESET, "connection to the daemon lost");
}

/* Receives and dispatches one message if one is waiting (-EAGAIN if not). */
static int pump_one(fp8d_client *c)
{
    zmq_msg_t zm;
    zmq_msg_init(&zm);
    if (zmq_msg_recv(&zm, c->sock, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&zm);
        return e == EAGAIN ? -EAGAIN : set_error(c, -EIO, "receive: %s", zmq_strerror(e));
    }
    struct fp8_msg m;
    struct fp8_err err = {{0}};
    int rc = fp8_msg_decode(zmq_msg_data(&zm), zmq_msg_size(&zm), FP8_MSG_DIR_REPLY, &m, &err);
    zmq_msg_close(&zm);
    if (rc == -EPROTONOSUPPORT)
        return set_error(c, rc, "daemon: %s", err.msg);
    if (rc < 0)
        return set_error(c, rc == -ENOMEM ? rc : -EPROTO, "daemon sent a bad message: %s",
                         err.msg);
    dispatch(c, &m);
    return 0;
}

/* Receives and dispatches one message. -EAGAIN when none came within timeout_ms. */
static int pump(fp8d_client *c, int timeout_ms)
{
    if (c->lost)
        return -ECONNRESET;
    zmq_pollitem_t items[2] = {{.socket = c->sock, .events = ZMQ_POLLIN},
                               {.socket = c->mon, .events = ZMQ_POLLIN}};
    c->last_pump_ms = now_ms();
    int n = zmq_poll(items, 2, timeout_ms);
    if (n < 0)
        return errno == EINTR ? -EINTR : set_error(c, -EIO, "poll: %s", zmq_strerror(errno));
    if (n == 0)
        return -EAGAIN;
    if (items[1].revents & ZMQ_POLLIN) {
        /* two frames: event (u16) + value (u32), then the endpoint */
        uint8_t ev[6];
        char addr[256];
        int more = 0;
        size_t more_len = sizeof(more);
        int got = zmq_recv(c->mon, ev, sizeof(ev), ZMQ_DONTWAIT);
        zmq_getsockopt(c->mon, ZMQ_RCVMORE, &more, &more_len);
        if (more)
            zmq_recv(c->mon, addr, sizeof(addr), ZMQ_DONTWAIT);
        uint16_t event;
        memcpy(&event, ev, sizeof(event));
        if (got >= 2 && event == ZMQ_EVENT_DISCONNECTED) {
            /* What the daemon sent before it went away (a stream's shutting_down, say)
             * is delivered before the loss is reported. */
            while (pump_one(c) == 0)
                ;
            return connection_lost(c);
        }
        if (!(items[0].revents & ZMQ_POLLIN))
            return 0;
    }
    return pump_one(c);
}

/* Sends m with a fresh id and waits for its reply, which must be of op want (an `error`
 * reply becomes its errno). */
static int request(fp8d_client *c, struct fp8_msg *m, enum fp8_msg_op want, struct fp8_msg *reply)
{
    m->id = c->next_id++;
    int rc = send_msg(c, m);
    if (rc < 0)
        return rc;
    c->await_id = m->id;
    c->await_done = false;
    int64_t deadline = deadline_of(c->timeout_ms);
    while (!c->await_done) {
        rc = pump(c, left_ms(deadline));
        if (rc == -EAGAIN && left_ms(deadline) == 0)
            rc = set_error(c, -ETIMEDOUT, "no reply to \"%s\" within %d ms",
                           fp8_msg_op_name(m->op), c->timeout_ms);
        if (rc < 0 && rc != -EAGAIN) {
            c->await_id = 0;
            return rc;
        }
    }
    c->await_id = 0;
    struct fp8_msg r = c->await_msg;
    if (r.op == FP8_MSG_OP_ERROR) {
        char line[256];
        copy_str(line, sizeof(line), &r.u.error.message);
        rc = set_error(c, errc_to_errno(r.u.error.code), "%s", line);
        fp8_msg_free(&r);
        return rc;
    }
    if (r.op != want) {
        rc = set_error(c, -EPROTO, "\"%s\" answered with \"%s\"", fp8_msg_op_name(m->op),
                       fp8_msg_op_name(r.op));
        fp8_msg_free(&r);
        return rc;
    }
    *reply = r;
    return 0;
}

/* ---- connect / close -------------------------------------------------------------------- */

static int map_segment(fp8d_client *c, const struct fp8_msg_welcome *w)
{
    struct fp8_err err = {{0}};
    char name[FP8_MSG_MAX_NAME_BYTES + 1];
    copy_str(name, sizeof(name), &w->shm);
    if (w->shm_bytes > FP8_SHM_MAX_BYTES)
        return set_error(c, -EPROTO, "daemon offers a %llu-byte segment",
                         (unsigned long long)w->shm_bytes);
    int rc = fp8_shm_open(&c->shm, name, (size_t)w->shm_bytes, &err);
    if (rc == 0)
        rc = fp8_ring_attach(c->shm.base, c->shm.size, &c->geom, &err);
    if (rc < 0)
        return set_error(c, rc == -EINVAL ? -EPROTO : rc, "%s", err.msg);
    c->cons = calloc(c->geom.n_slots, sizeof(*c->cons));
    if (!c->cons)
        return set_error(c, -ENOMEM, "out of memory for %u ring readers", c->geom.n_slots);
    for (uint32_t i = 0; i < c->geom.n_slots; i++)
        fp8_ring_cons_init(&c->cons[i], c->shm.base, &c->geom, i);
    c->has_shm = true;
    return 0;
}

int fp8d_connect(const char *endpoint, unsigned flags, int timeout_ms, fp8d_client **out)
{
    char def[FP8_ENDPOINT_MAX];
    if (!out || (flags & ~(unsigned)FP8D_CONNECT_NO_SHM))
        return -EINVAL;
    if (!endpoint) {
        if (fp8_endpoint_default(def, sizeof(def), NULL) < 0)
            return -EINVAL;
        endpoint = def;
    }
    fp8d_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->timeout_ms = timeout_ms;
    c->next_id = 1;
    int rc = -ENOMEM;
    c->ctx = zmq_ctx_new();
    if (!c->ctx)
        goto fail;
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        goto fail;
    int linger = 200; /* lets `bye` leave on close, never blocks close for longer */
    int64_t maxmsg = FP8_MSG_MAX_BYTES;
    int sndtimeo = timeout_ms;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof(sndtimeo));
    char mon_addr[64];
    snprintf(mon_addr, sizeof(mon_addr), "inproc://fp8d-monitor-%p", (void *)c);
    if (zmq_socket_monitor(c->sock, mon_addr, ZMQ_EVENT_DISCONNECTED) < 0)
        goto fail;
    c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
    if (!c->mon || zmq_connect(c->mon, mon_addr) < 0)
        goto fail;
    zmq_setsockopt(c->mon, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(c->sock, endpoint) < 0) {
        rc = -EINVAL;
        goto fail;
    }

    bool want_shm = !(flags & FP8D_CONNECT_NO_SHM) && fp8_endpoint_is_local(endpoint);
    struct fp8_msg m, w;
    fp8_msg_init(&m, FP8_MSG_OP_HELLO, 0);
    m.u.hello.client = (struct fp8_msg_str){"libfp8d", 7};
    m.u.hello.shm = want_shm;
    rc = request(c, &m, FP8_MSG_OP_WELCOME, &w);
    if (rc < 0)
        goto fail;
    copy_str(c->server, sizeof(c->server), &w.u.welcome.server);
    if (want_shm && w.u.welcome.shm.len)
        rc = map_segment(c, &w.u.welcome);
    else if (w.u.welcome.shm.len)
        rc = -EPROTO; /* a segment nobody asked for */
    fp8_msg_free(&w);
    if (rc < 0)
        goto fail;
    *out = c;
    return 0;

fail:
    fp8d_close(c);
    return rc;
}

static void stream_unlink(fp8d_stream *s)
{
    for (fp8d_stream **p = &s->c->streams; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
}

static void stream_release(fp8d_stream *s)
{
    stream_unlink(s);
    while (s->chunks) {
        struct chunk *k = s->chunks;
        s->chunks = k->next;
        fp8_msg_free(&k->msg);
        free(k);
    }
    free(s);
}

void fp8d_close(fp8d_client *c)
{
    if (!c)
        return;
    while (c->streams)
        fp8d_stream_free(c->streams);
    if (c->sock && c->next_id > 1 && !c->lost) { /* say goodbye, expect no answer */
        struct fp8_msg m;
        fp8_msg_init(&m, FP8_MSG_OP_BYE, c->next_id++);
        send_msg(c, &m);
    }
    if (c->mon) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->mon);
    }
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->cons);
    fp8_shm_close(&c->shm);
    free(c);
}

/* ---- generation ------------------------------------------------------------------------- */

static void fill_sampling(struct fp8_msg_generate *g, const struct fp8d_sampling *s)
{
    struct fp8_msg_sampling *sp = &g->sampling;
    if (!s)
        return;
    if (s->max_tokens > 0)
        sp->set |= FP8_MSG_SAMPLING_MAX_TOKENS, sp->max_tokens = (uint32_t)s->max_tokens;
    if (s->temperature >= 0.0f)
        sp->set |= FP8_MSG_SAMPLING_TEMPERATURE, sp->temperature = s->temperature;
    if (s->top_p > 0.0f)
        sp->set |= FP8_MSG_SAMPLING_TOP_P, sp->top_p = s->top_p;
    if (s->top_k >= 0)
        sp->set |= FP8_MSG_SAMPLING_TOP_K, sp->top_k = s->top_k;
    if (s->min_p >= 0.0f)
        sp->set |= FP8_MSG_SAMPLING_MIN_P, sp->min_p = s->min_p;
    if (s->has_seed)
        sp->set |= FP8_MSG_SAMPLING_SEED, sp->seed = s->seed;
    g->ignore_eos = s->ignore_eos != 0;
    g->priority = s->priority;
}

static struct fp8_msg_str cstr(const char *s)
{
    return (struct fp8_msg_str){s, s ? (uint32_t)strnlen(s, FP8_MSG_MAX_BYTES + 1) : 0};
}

/* Sends a filled generate message and waits for `accepted` (or the refusal). */
static int start(fp8d_client *c, struct fp8_msg *m, const struct fp8d_sampling *sampling,
                 fp8d_stream **out)
{
    struct fp8_msg_str stop[FP8_MSG_MAX_STOP];
    fill_sampling(&m->u.generate, sampling);
    if (sampling && sampling->n_stop) {
        if (sampling->n_stop > FP8_MSG_MAX_STOP || !sampling->stop)
            return set_error(c, -EINVAL, "stop: %u strings, at most %u", sampling->n_stop,
                             FP8_MSG_MAX_STOP);
        for (uint32_t i = 0; i < sampling->n_stop; i++)
            stop[i] = cstr(sampling->stop[i]);
        m->u.generate.stop = stop;
        m->u.generate.n_stop = sampling->n_stop;
    }
    fp8d_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return set_error(c, -ENOMEM, "out of memory for a stream");
    s->c = c;
    s->id = m->id = c->next_id++;
    s->slot = -1;
    s->chunks_tail = &s->chunks;
    int rc = send_msg(c, m);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s->next = c->streams;
    c->streams = s;

    int64_t deadline = deadline_of(c->timeout_ms);
    while (!s->accepted && !s->ended) {
        rc = pump(c, left_ms(deadline));
        if (rc == -EAGAIN && left_ms(deadline) == 0)
            rc = set_error(c, -ETIMEDOUT, "generate: no answer within %d ms", c->timeout_ms);
        if (rc < 0 && rc != -EAGAIN)
            break;
        rc = 0;
    }
    if (rc == 0 && !s->accepted) /* refused */
        rc = set_error(c, s->end_rc, "%s", s->end_msg);
    if (rc < 0) {
        /* refused or no answer: if the daemon admits it later, its replies are dropped */
        stream_release(s);
        return rc;
    }
    *out = s;
    return 0;
}

int fp8d_generate(fp8d_client *c, const char *prompt, const struct fp8d_sampling *sampling,
                  fp8d_stream **out)
{
    if (!c || !prompt || !out)
        return -EINVAL;
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 0);
    m.u.generate.kind = FP8_MSG_PROMPT_TEXT;
    m.u.generate.prompt = cstr(prompt);
    return start(c, &m, sampling, out);
}

int fp8d_generate_tokens(fp8d_client *c, const int32_t *ids, size_t n_ids,
                         const struct fp8d_sampling *sampling, fp8d_stream **out)
{
    if (!c || !ids || !out || n_ids == 0 || n_ids > FP8_MSG_MAX_BYTES)
        return -EINVAL;
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 0);
    m.u.generate.kind = FP8_MSG_PROMPT_TOKENS;
    m.u.generate.tokens = (struct fp8_msg_ids){(int32_t *)ids, (uint32_t)n_ids};
    return start(c, &m, sampling, out);
}

int fp8d_chat(fp8d_client *c, const struct fp8d_message *messages, size_t n_messages,
              const struct fp8d_sampling *sampling, fp8d_stream **out)
{
    if (!c || !messages || !out || n_messages == 0 || n_messages > FP8_MSG_MAX_BYTES)
        return -EINVAL;
    struct fp8_msg_turn *turns = calloc(n_messages, sizeof(*turns));
    if (!turns)
        return set_error(c, -ENOMEM, "out of memory for %zu messages", n_messages);
    for (size_t i = 0; i < n_messages; i++) {
        turns[i].role = cstr(messages[i].role);
        turns[i].content = cstr(messages[i].content);
    }
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 0);
    m.u.generate.kind = FP8_MSG_PROMPT_CHAT;
    m.u.generate.messages = turns;
    m.u.generate.n_messages = (uint32_t)n_messages;
    int rc = start(c, &m, sampling, out);
    free(turns);
    return rc;
}

/* Releases what the previous fp8d_stream_next handed out. */
static void stream_release_last(fp8d_stream *s)
{
    if (s->need_advance) {
        fp8_ring_advance(&s->c->cons[s->slot]);
        s->need_advance = false;
    }
    struct chunk *k = s->chunks;
    if (k && k->pos >= k->msg.u.chunk.tokens.n) {
        s->chunks = k->next;
        if (!s->chunks)
            s->chunks_tail = &s->chunks;
        fp8_msg_free(&k->msg);
        free(k);
    }
}

static int stream_finish(fp8d_stream *s)
{
    s->finished = true;
    if (s->end_rc < 0)
        set_error(s->c, s->end_rc, "%s", s->end_msg);
    return s->end_rc;
}

int fp8d_stream_next(fp8d_stream *s, struct fp8d_token *tok, int timeout_ms)
{
    if (!s || !tok)
        return -EINVAL;
    if (s->finished)
        return s->end_rc;
    fp8d_client *c = s->c;
    stream_release_last(s);
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        if (s->slot >= 0 && !s->ring_final) {
            struct fp8_ring_cons *rc_ = &c->cons[s->slot];
            struct fp8_ring_rec rec;
            int rc = fp8_ring_peek(rc_, &rec);
            if (rc < 0) {
                stream_end(s, -EPROTO, "daemon wrote a malformed ring record");
                return stream_finish(s);
            }
            if (rc == 1) {
                if (rec.flags & FP8_RING_FLAG_FINAL)
                    s->ring_final = true;
                if (rec.token < 0 && rec.text_len == 0) {
                    fp8_ring_advance(rc_);
                    continue;
                }
                *tok = (struct fp8d_token){rec.token, rec.text, rec.text_len};
                s->need_advance = true;
                return 1;
            }
            /* The daemon publishes FINAL before it sends done/error: a stream that has
             * ended with an empty ring will never get one (a daemon that broke the rule
             * or a lost connection), so it ends here. */
            if (s->ended)
                return stream_finish(s);
            /* Look at the socket now and then, never on every poll: a non-blocking
             * reader costs no system call while tokens flow. */
            if (now_ms() - c->last_pump_ms >= PUMP_EVERY_MS) {
                rc = pump(c, 0);
                if (rc < 0 && rc != -EAGAIN && rc != -ECONNRESET)
                    return rc;
                continue;
            }
            int left = left_ms(deadline);
            if (left == 0)
                return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
            int slice = left < 0 || left > PUMP_EVERY_MS ? PUMP_EVERY_MS : left;
            rc = fp8_ring_wait(rc_, (int64_t)slice * 1000000);
            if (rc == -EINTR)
                return rc;
            continue;
        }
        struct chunk *k = s->chunks;
        if (k && k->pos < k->msg.u.chunk.tokens.n) {
            const struct fp8_msg_chunk *ch = &k->msg.u.chunk;
            bool last = k->pos + 1 == ch->tokens.n;
            /* a chunk's text belongs to all its tokens: it goes out with the last one */
            *tok = (struct fp8d_token){ch->tokens.ids[k->pos], last ? ch->text.s : "",
                                       last ? ch->text.len : 0};
            k->pos++;
            return 1;
        }
        if (k && k->msg.u.chunk.tokens.n == 0 && k->msg.u.chunk.text.len) {
            *tok = (struct fp8d_token){-1, k->msg.u.chunk.text.s, k->msg.u.chunk.text.len};
            k->pos = 1; /* released on the next call: pos >= n */
            return 1;
        }
        if (k) { /* an empty chunk */
            stream_release_last(s);
            continue;
        }
        if (s->ended)
            return stream_finish(s);
        int left = left_ms(deadline);
        int rc = pump(c, left);
        if (rc == -EAGAIN && left_ms(deadline) == 0)
            return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
        if (rc < 0 && rc != -EAGAIN && !s->ended) /* else its own end comes first */
            return rc;
    }
}

int fp8d_stream_result(const fp8d_stream *s, struct fp8d_result *result)
{
    if (!s || !result)
        return -EINVAL;
    if (!s->finished)
        return -EAGAIN;
    if (s->end_rc < 0)
        return s->end_rc;
    *result = s->result;
    return 0;
}

int fp8d_cancel(fp8d_stream *s)
{
    if (!s)
        return -EINVAL;
    if (s->ended)
        return 0;
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_CANCEL, s->c->next_id++);
    m.u.cancel.target = s->id;
    return send_msg(s->c, &m);
}

uint64_t fp8d_stream_handle(const fp8d_stream *s)
{
    return s ? s->handle : 0;
}

int fp8d_cancel_handle(fp8d_client *c, uint64_t handle)
{
    if (!c || !handle)
        return -EINVAL;
    struct fp8_msg m, r;
    fp8_msg_init(&m, FP8_MSG_OP_CANCEL, 0);
    m.u.cancel.handle = handle;
    int rc = request(c, &m, FP8_MSG_OP_OK, &r);
    if (rc < 0)
        return rc;
    fp8_msg_free(&r);
    return 0;
}

void fp8d_stream_free(fp8d_stream *s)
{
    if (!s)
        return;
    if (!s->finished) {
        /* Drain to the end so that the daemon sees the ring slot read and can reuse it. */
        struct fp8d_token t;
        int64_t deadline = deadline_of(s->c->timeout_ms);
        fp8d_cancel(s);
        while (fp8d_stream_next(s, &t, left_ms(deadline)) == 1)
            ;
        stream_release_last(s);
    }
    stream_release(s);
}

/* ---- one-shot requests ------------------------------------------------------------------ */

int fp8d_tokenize(fp8d_client *c, const char *text, size_t len, int add_special,
                  int32_t **ids, size_t *n)
{
    if (!c || (!text && len) || !ids || !n || len > FP8_MSG_MAX_BYTES)
        return -EINVAL;
    struct fp8_msg m, r;
    fp8_msg_init(&m, FP8_MSG_OP_TOKENIZE, 0);
    m.u.tokenize.text = (struct fp8_msg_str){text, (uint32_t)len};
    m.u.tokenize.add_special = add_special != 0;
    int rc = request(c, &m, FP8_MSG_OP_TOKENS, &r);
    if (rc < 0)
        return rc;
    *n = r.u.tokens.n;
    *ids = r.u.tokens.ids ? r.u.tokens.ids : malloc(sizeof(int32_t));
    r.u.tokens.ids = NULL; /* handed to the caller */
    fp8_msg_free(&r);
    if (!*ids)
        return set_error(c, -ENOMEM, "out of memory");
    return 0;
}

int fp8d_detokenize(fp8d_client *c, const int32_t *ids, size_t n, char **text, size_t *len)
{
    if (!c || (!ids && n) || !text || !len || n > FP8_MSG_MAX_BYTES)
        return -EINVAL;
    struct fp8_msg m, r;
    fp8_msg_init(&m, FP8_MSG_OP_DETOKENIZE, 0);
    m.u.detokenize = (struct fp8_msg_ids){(int32_t *)ids, (uint32_t)n};
    int rc = request(c, &m, FP8_MSG_OP_TEXT, &r);
    if (rc < 0)
        return rc;
    *len = r.u.text.len;
    *text = r.u.text.s ? (char *)r.u.text.s : calloc(1, 1);
    r.u.text.s = NULL;
    fp8_msg_free(&r);
    if (!*text)
        return set_error(c, -ENOMEM, "out of memory");
    return 0;
}

int fp8d_info(fp8d_client *c, struct fp8d_info *info)
{
    if (!c || !info)
        return -EINVAL;
    struct fp8_msg m, r;
    fp8_msg_init(&m, FP8_MSG_OP_INFO, 0);
    int rc = request(c, &m, FP8_MSG_OP_MODEL, &r);
    if (rc < 0)
        return rc;
    const struct fp8_msg_model *mo = &r.u.model;
    struct fp8d_info i = {.vocab_size = mo->vocab_size, .max_model_len = mo->max_model_len,
                          .max_num_seqs = mo->max_num_seqs};
    copy_str(i.name, sizeof(i.name), &mo->name);
    copy_str(i.arch, sizeof(i.arch), &mo->arch);
    copy_str(i.backend, sizeof(i.backend), &mo->backend);
    copy_str(i.weights, sizeof(i.weights), &mo->weights);
    copy_str(i.kv_cache_dtype, sizeof(i.kv_cache_dtype), &mo->kv_cache_dtype);
    snprintf(i.server_version, sizeof(i.server_version), "%s", c->server);
    fp8_msg_free(&r);
    *info = i;
    return 0;
}
