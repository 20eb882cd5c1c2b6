/* The IPC thread and the engine thread.
 *
 * Ownership, so that no lock guards a session: the IPC thread owns the ZeroMQ socket and
 * the session table (routing id -> struct session). A session's segment is written only
 * by the engine thread (ring records) once the IPC thread has created it and sent the
 * welcome; the IPC thread only unlinks its name (a field the engine never touches). When
 * a session ends (bye, dead peer, protocol violation, new hello) the IPC thread removes it
 * from its table and hands it to the engine thread with CMD_CLOSE; the engine cancels its
 * streams and frees it. The engine talks back through the outbox (encoded replies with
 * their routing ids, and requests to drop a session), which wakes zmq_poll through an
 * eventfd.
 *
 * A dead client is noticed three ways, each within a second: the socket monitor reports a
 * disconnect (the kernel closes a Unix socket the moment its process dies), ZMTP
 * heartbeats time out (a peer that stopped answering), or the periodic sweep finds that
 * the connection a session came in on is gone (its fd closed or now another socket) or
 * that the peer process no longer exists. */
#include "daemon/server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "common/clock.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "engine/sampling.h"
#include "ipc/endpoint.h"
#include "ipc/segment.h"

#define POLL_MS 100           /* IPC turn when nothing happens */
#define SWEEP_MS 250          /* liveness check of every session */
#define UNLINK_DEADLINE_MS 2000 /* a segment's name goes away even if never attached */
#define STATUS_MS 1000
#define HEARTBEAT_IVL_MS 300
#define HEARTBEAT_TIMEOUT_MS 900
#define PAUSED_POLL_NS 1000000 /* engine re-checks full rings every 1 ms */
#define MAX_STREAMS_PER_CHUNK_SESSION 64
#define MAX_LIVE_STREAMS 4096
#define N_BUCKETS 512
/* Messages a little over the protocol's limit still reach the decoder and get a
 * `too_long` reply; beyond this ZeroMQ drops the connection itself. */
#define ZMQ_MAX_BYTES (FP8_MSG_MAX_BYTES + (64u << 10))

/* ---- shared between the threads --------------------------------------------------- */

struct session {
    struct session *next;       /* IPC table */
    uint64_t id;
    uint8_t rid[256];           /* ZeroMQ routing id */
    size_t rid_len;
    int fd;                     /* the connection's fd in this process (ZMQ_SRCFD) */
    ino_t ino;                  /* its socket inode: a reused fd has another */
    pid_t pid;                  /* peer process (Unix sockets), 0 unknown */
    uid_t uid;                  /* peer user, when has_uid (Unix sockets) */
    bool has_uid;
    char name[64];
    bool has_shm;
    bool unlinked;
    bool broken;                /* engine: broke the ring rules, nothing more is written */
    int64_t welcome_ms;
    struct fp8_seg seg;         /* rings: written by the engine thread only */
};

enum cmd_kind { CMD_GENERATE, CMD_CANCEL, CMD_CANCEL_HANDLE, CMD_CLOSE, CMD_SHUTDOWN };

struct cmd {
    struct cmd *next;
    enum cmd_kind kind;
    struct session *sess;
    uint64_t id;                /* GENERATE: request id; CANCEL: target; CANCEL_HANDLE: handle */
    uint64_t req_id;            /* CANCEL_HANDLE: the cancel's id, for its reply */
    int32_t *prompt;            /* (n_prompt) */
    int32_t n_prompt;
    struct fp8d_gen_params params;
    char **stop;                /* (n_stop) NUL-terminated */
    int32_t n_stop;
};

struct out {
    struct out *next;
    uint8_t rid[256];
    size_t rid_len;
    void *buf;                  /* encoded message, NULL for a drop request */
    size_t len;
    uint64_t drop_session;      /* session to drop (protocol violation) */
    char why[128];
};

struct rec {
    struct rec *next;
    int32_t token;
    bool final;
    uint16_t aux;
    uint32_t len;
    char text[];
};

struct stream {
    struct stream *next, *hnext; /* all streams; hash bucket */
    uint64_t key;               /* the backend's */
    uint64_t id;                /* the client's request id */
    struct session *sess;       /* NULL once orphaned (session closed) */
    int32_t slot;               /* ring slot, -1: chunks */
    uint32_t prompt_tokens;
    void *detok;
    char **stop;                /* (n_stop) */
    int32_t n_stop;
    char *text;                 /* output so far (only with stop strings) */
    size_t text_len, text_cap, released;
    struct rec *pend, **pend_tail; /* records waiting for room in the ring */
    int64_t paused_ns;          /* when the ring was first found full, 0 not paused */
    bool be_paused;             /* the backend holds the generation (backpressure) */
    bool live;                  /* submitted and not yet ended by the backend */
    bool ended;
    struct fp8d_gen_result res;
    enum fp8_msg_errc errc;     /* for an end that is an error */
    char why[160];              /* its message, when the daemon chose it */
};

struct fp8d_server {
    struct fp8d_server_opts o;
    struct fp8d_backend *be;
    void *ctx, *sock, *mon;
    int wake_fd;
    atomic_int stop_req, hup_req;
    struct fp8_err fatal;       /* the engine cannot step any more (written once by the
                                   engine thread before it stops the server) */
    atomic_bool have_fatal;
    bool local;                 /* ipc:// endpoint: shared memory allowed */
    char sock_path[256];        /* to unlink on exit (not for socket activation) */
    char endpoint[FP8_ENDPOINT_MAX]; /* as bound (a tcp wildcard port resolved) */
    int64_t start_ms;

    /* IPC thread */
    struct session *sessions;
    uint32_t n_sessions;
    uint64_t next_session;
    bool stopping;

    /* engine thread */
    pthread_t engine;
    bool engine_started;
    pthread_mutex_t lock;       /* cmds, outbox, engine_done */
    pthread_cond_t cond;
    struct cmd *cmds, **cmds_tail;
    struct out *outbox, **outbox_tail;
    bool engine_done;
    struct stream *streams;
    struct stream *buckets[N_BUCKETS];
    uint32_t n_streams;
    uint64_t next_key;
    int64_t shutdown_deadline_ns; /* 0 until CMD_SHUTDOWN */
    uint64_t watchdog_usec;
    int64_t last_watchdog_ns;

    /* live load (engine writes, IPC reads) */
    atomic_uint load_running, load_waiting, kv_used, kv_total;
    atomic_ullong total_prompt, total_generated;
};

static int64_t now_ms(void)
{
    return fp8_now_ns() / 1000000;
}

static void wake_ipc(struct fp8d_server *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->wake_fd, &one, sizeof(one));
    (void)n; /* a full counter already wakes */
}

void fp8d_server_opts_init(struct fp8d_server_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->listen_fd = -1;
    o->stream_timeout_ms = 30000;
    o->n_slots = 16;
    o->slot_bytes = 64u << 10;
    o->max_sessions = 1024;
    o->drain_ms = 2000;
}

static void free_strs(char **v, int32_t n)
{
    for (int32_t i = 0; i < n && v; i++)
        free(v[i]);
    free(v);
}

static void cmd_free(struct cmd *c)
{
    if (!c)
        return;
    free(c->prompt);
    free_strs(c->stop, c->n_stop);
    free(c);
}

static void session_free(struct session *x)
{
    if (!x)
        return;
    fp8_seg_free(&x->seg);
    free(x);
}

/* ---- engine -> IPC: the outbox -------------------------------------------------------- */

/* Queues an encoded message for the client of sess (engine thread). */
static void outbox_msg(struct fp8d_server *s, const struct session *sess,
                       const struct fp8_msg *m)
{
    struct fp8_err err = {{0}};
    struct out *o = calloc(1, sizeof(*o));
    if (!o || fp8_msg_encode(m, &o->buf, &o->len, &err) < 0) {
        fp8d_log(FP8D_LOG_ERR, "session %llu: cannot encode %s: %s",
                 (unsigned long long)sess->id, fp8_msg_op_name(m->op),
                 o ? err.msg : "out of memory");
        free(o);
        return;
    }
    memcpy(o->rid, sess->rid, sess->rid_len);
    o->rid_len = sess->rid_len;
    pthread_mutex_lock(&s->lock);
    *s->outbox_tail = o;
    s->outbox_tail = &o->next;
    pthread_mutex_unlock(&s->lock);
    wake_ipc(s);
}

/* Asks the IPC thread to drop a session that broke the ring rules (engine thread). */
static void outbox_drop(struct fp8d_server *s, const struct session *sess, const char *why)
{
    struct out *o = calloc(1, sizeof(*o));
    if (!o)
        return;
    o->drop_session = sess->id;
    snprintf(o->why, sizeof(o->why), "%s", why);
    pthread_mutex_lock(&s->lock);
    *s->outbox_tail = o;
    s->outbox_tail = &o->next;
    pthread_mutex_unlock(&s->lock);
    wake_ipc(s);
}

static void outbox_error(struct fp8d_server *s, const struct session *sess, uint64_t id,
                         enum fp8_msg_errc code, const char *text)
{
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_ERROR, id);
    m.u.error.code = code;
    m.u.error.message = (struct fp8_msg_str){text, (uint32_t)strlen(text)};
    outbox_msg(s, sess, &m);
}

/* ---- engine thread: streams ------------------------------------------------------------- */

static struct stream *stream_by_key(struct fp8d_server *s, uint64_t key)
{
    for (struct stream *st = s->buckets[key % N_BUCKETS]; st; st = st->hnext)
        if (st->key == key)
            return st;
    return NULL;
}

static void pend_drop(struct stream *st)
{
    while (st->pend) {
        struct rec *r = st->pend;
        st->pend = r->next;
        free(r);
    }
    st->pend_tail = &st->pend;
}

static void stream_free(struct fp8d_server *s, struct stream *st)
{
    for (struct stream **p = &s->streams; *p; p = &(*p)->next)
        if (*p == st) {
            *p = st->next;
            break;
        }
    for (struct stream **p = &s->buckets[st->key % N_BUCKETS]; *p; p = &(*p)->hnext)
        if (*p == st) {
            *p = st->hnext;
            break;
        }
    pend_drop(st);
    if (st->detok)
        s->be->detok_free(st->detok);
    free_strs(st->stop, st->n_stop);
    free(st->text);
    free(st);
    s->n_streams--;
}

/* The session broke the ring rules: stop writing to it and have the IPC thread drop it
 * (its CMD_CLOSE then cancels its streams; cancelling here could run inside a step). */
static void session_violation(struct fp8d_server *s, struct session *sess, int32_t slot)
{
    if (sess->broken)
        return;
    sess->broken = true;
    fp8d_log(FP8D_LOG_WARN, "session %llu (%s): invalid ring cursor in slot %d; dropping the "
             "session", (unsigned long long)sess->id, sess->name, slot);
    outbox_drop(s, sess, "invalid ring cursor");
}

/* Publishes what waits in the ring's queue; returns true when the queue is empty. */
static bool stream_flush(struct fp8d_server *s, struct stream *st)
{
    while (st->pend && st->sess && !st->sess->broken) {
        struct rec *r = st->pend;
        int rc = r->final ? fp8_seg_slot_close(&st->sess->seg, (uint32_t)st->slot, r->aux)
                          : fp8_seg_publish(&st->sess->seg, (uint32_t)st->slot, r->token,
                                            r->text, r->len);
        if (rc == -EAGAIN) {
            if (!st->paused_ns)
                st->paused_ns = fp8_now_ns();
            /* Hold the sequence itself: it keeps its KV and resumes when the reader has
             * made room, so at most one token's records wait here. */
            if (st->live && !st->be_paused && s->be->pause(s->be->ctx, st->key, true) == 0)
                st->be_paused = true;
            return false;
        }
        if (rc < 0) {
            session_violation(s, st->sess, st->slot);
            break;
        }
        st->pend = r->next;
        if (!st->pend)
            st->pend_tail = &st->pend;
        free(r);
    }
    if (!st->sess || st->sess->broken) /* nobody reads */
        pend_drop(st);
    st->paused_ns = 0;
    if (st->be_paused) {
        st->be_paused = false;
        if (st->live)
            s->be->pause(s->be->ctx, st->key, false);
    }
    return true;
}

static int queue_rec(struct stream *st, int32_t token, bool final, uint16_t aux,
                     const char *text, uint32_t len)
{
    struct rec *r = malloc(sizeof(*r) + len);
    if (!r)
        return -ENOMEM;
    *r = (struct rec){NULL, token, final, aux, len};
    if (len)
        memcpy(r->text, text, len);
    *st->pend_tail = r;
    st->pend_tail = &r->next;
    return 0;
}

/* One token (or, with token -1, a piece of text) to the client: a ring record, or a chunk
 * message. Text longer than a record may carry is split, the token on the last piece. */
static void stream_emit(struct fp8d_server *s, struct stream *st, int32_t token,
                        const char *text, size_t len)
{
    if (!st->sess || st->sess->broken)
        return;
    if (st->slot < 0) {
        struct fp8_msg m;
        fp8_msg_init(&m, FP8_MSG_OP_CHUNK, st->id);
        m.u.chunk.tokens = (struct fp8_msg_ids){&token, token >= 0 ? 1u : 0u};
        m.u.chunk.text = (struct fp8_msg_str){text, (uint32_t)len};
        if (token >= 0 || len)
            outbox_msg(s, st->sess, &m);
        return;
    }
    uint32_t max = st->sess->seg.geom.slot_bytes / 2 - FP8_RING_REC_HDR_BYTES - 8;
    do {
        uint32_t n = len > max ? max : (uint32_t)len;
        bool last = n == len;
        if (last && token < 0 && n == 0)
            return;
        if (queue_rec(st, last ? token : -1, false, 0, text, n) < 0) {
            fp8d_log(FP8D_LOG_ERR, "out of memory for a ring record");
            return;
        }
        text += n;
        len -= n;
        if (last)
            break;
    } while (len);
    stream_flush(s, st);
}

static bool on_token(void *ctx, uint64_t key, int32_t token)
{
    struct fp8d_server *s = ctx;
    struct stream *st = stream_by_key(s, key);
    atomic_fetch_add(&s->total_generated, 1);
    if (!st || !st->sess)
        return false;
    const char *piece = "";
    size_t n = 0;
    if (s->be->detok_push(st->detok, token, &piece, &n) < 0)
        piece = "", n = 0;
    if (!st->n_stop) {
        stream_emit(s, st, token, piece, n);
        return false;
    }
    if (st->text_len + n + 1 > st->text_cap) {
        size_t cap = (st->text_len + n + 1) * 2;
        char *t = realloc(st->text, cap);
        if (!t) {
            stream_emit(s, st, token, piece, n);
            return false;
        }
        st->text = t;
        st->text_cap = cap;
    }
    memcpy(st->text + st->text_len, piece, n);
    st->text_len += n;
    int64_t at = fp8_stop_find(st->text, st->text_len, n, (const char *const *)st->stop,
                               st->n_stop);
    if (at >= 0) {
        size_t upto = (size_t)at > st->released ? (size_t)at : st->released;
        stream_emit(s, st, token, st->text + st->released, upto - st->released);
        st->released = st->text_len; /* the rest is cut */
        return true;
    }
    size_t keep = st->text_len - fp8_stop_holdback(st->text, st->text_len,
                                                   (const char *const *)st->stop, st->n_stop);
    if (keep < st->released)
        keep = st->released;
    stream_emit(s, st, token, st->text + st->released, keep - st->released);
    st->released = keep;
    return false;
}

static enum fp8_msg_ring_end ring_end_of(const struct stream *st)
{
    if (st->why[0])
        return st->errc == FP8_MSG_ERRC_INTERNAL ? FP8_MSG_RING_END_ERROR
                                                 : FP8_MSG_RING_END_CANCELLED;
    switch (st->res.end) {
    case FP8D_GEN_END_EOS: return FP8_MSG_RING_END_EOS;
    case FP8D_GEN_END_STOP: return FP8_MSG_RING_END_STOP;
    case FP8D_GEN_END_LENGTH: return FP8_MSG_RING_END_LENGTH;
    case FP8D_GEN_END_CANCELLED: return FP8_MSG_RING_END_CANCELLED;
    default: return FP8_MSG_RING_END_ERROR;
    }
}

/* Sends done or error once the FINAL record is out, and forgets the stream. */
static void stream_finalize(struct fp8d_server *s, struct stream *st)
{
    if (st->sess) {
        struct fp8_msg m;
        if (st->why[0]) {
            outbox_error(s, st->sess, st->id, st->errc, st->why);
        } else if (st->res.end == FP8D_GEN_END_CANCELLED) {
            outbox_error(s, st->sess, st->id, FP8_MSG_ERRC_CANCELLED, "cancelled by the client");
        } else if (st->res.end == FP8D_GEN_END_ERROR) {
            outbox_error(s, st->sess, st->id, FP8_MSG_ERRC_INTERNAL,
                         "the model failed on a step of this request (see the daemon log)");
        } else {
            fp8_msg_init(&m, FP8_MSG_OP_DONE, st->id);
            m.u.done = (struct fp8_msg_done){
                .finish = st->res.end == FP8D_GEN_END_EOS    ? FP8_MSG_FINISH_EOS
                          : st->res.end == FP8D_GEN_END_STOP ? FP8_MSG_FINISH_STOP
                                                             : FP8_MSG_FINISH_LENGTH,
                .prompt_tokens = st->res.prompt_tokens,
                .completion_tokens = st->res.completion_tokens,
                .queue_us = st->res.queue_us,
                .prefill_us = st->res.prefill_us,
                .decode_us = st->res.decode_us,
            };
            outbox_msg(s, st->sess, &m);
        }
    }
    stream_free(s, st);
}

static void on_end(void *ctx, uint64_t key, const struct fp8d_gen_result *r)
{
    struct fp8d_server *s = ctx;
    struct stream *st = stream_by_key(s, key);
    if (!st)
        return;
    st->live = false;
    st->ended = true;
    st->res = *r;
    if (!st->sess) {
        stream_free(s, st);
        return;
    }
    if (r->end == FP8D_GEN_END_EOS || r->end == FP8D_GEN_END_LENGTH) {
        const char *tail = "";
        size_t n = 0;
        if (s->be->detok_finish(st->detok, &tail, &n) < 0)
            n = 0;
        if (st->n_stop) { /* the held-back bytes were output after all */
            stream_emit(s, st, -1, st->text + st->released, st->text_len - st->released);
            st->released = st->text_len;
        }
        stream_emit(s, st, -1, tail, n);
    }
    if (st->slot >= 0 && st->sess) {
        if (queue_rec(st, -1, true, (uint16_t)ring_end_of(st), NULL, 0) < 0)
            fp8d_log(FP8D_LOG_ERR, "out of memory for a FINAL record");
        if (!stream_flush(s, st))
            return; /* finalized once the reader makes room */
    }
    stream_finalize(s, st);
}

/* Ends a live stream on the daemon's initiative (timeout, shutdown): the backend reports
 * the cancel at its next step and on_end finishes it with this code and message. */
static void stream_cut(struct fp8d_server *s, struct stream *st, enum fp8_msg_errc code,
                       const char *why)
{
    if (st->why[0])
        return;
    st->errc = code;
    snprintf(st->why, sizeof(st->why), "%s", why);
    if (st->live)
        s->be->cancel(s->be->ctx, st->key);
}

static void engine_generate(struct fp8d_server *s, struct cmd *c)
{
    struct session *sess = c->sess;
    struct fp8_err err = {{0}};
    if (s->shutdown_deadline_ns) {
        outbox_error(s, sess, c->id, FP8_MSG_ERRC_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    uint32_t mine = 0;
    for (struct stream *x = s->streams; x; x = x->next)
        if (x->sess == sess) {
            mine++;
            if (x->id == c->id && !x->ended) {
                outbox_error(s, sess, c->id, FP8_MSG_ERRC_BAD_REQUEST,
                             "a generation with this id is still running");
                return;
            }
        }
    if (s->n_streams >= MAX_LIVE_STREAMS ||
        (!sess->has_shm && mine >= MAX_STREAMS_PER_CHUNK_SESSION)) {
        outbox_error(s, sess, c->id, FP8_MSG_ERRC_BUSY, "too many generations queued");
        return;
    }
    if (sess->broken)
        return;
    struct stream *st = calloc(1, sizeof(*st));
    void *detok = s->be->detok_new(s->be->ctx);
    if (!st || !detok) {
        free(st);
        if (detok)
            s->be->detok_free(detok);
        outbox_error(s, sess, c->id, FP8_MSG_ERRC_INTERNAL, "out of memory");
        return;
    }
    uint64_t key = ++s->next_key;
    int rc = s->be->submit(s->be->ctx, key, c->prompt, c->n_prompt, &c->params, &err);
    int32_t slot = -1;
    if (rc >= 0 && sess->has_shm) {
        /* After the submit, so that a refused submit never holds a slot; the request
         * cancelled below ends unseen (no stream has its key). */
        slot = rc = fp8_seg_slot_acquire(&sess->seg);
        if (rc == -EPROTO)
            session_violation(s, sess, -1);
        else if (rc < 0)
            fp8_err_set(&err, -EBUSY, "all %u ring slots of this session are streaming",
                        sess->seg.geom.n_slots);
        if (rc < 0)
            s->be->cancel(s->be->ctx, key);
    }
    if (rc < 0) {
        s->be->detok_free(detok);
        free(st);
        if (rc != -EPROTO)
            outbox_error(s, sess, c->id,
                         rc == -E2BIG   ? FP8_MSG_ERRC_TOO_LONG
                         : rc == -EBUSY ? FP8_MSG_ERRC_BUSY
                                        : FP8_MSG_ERRC_BAD_REQUEST,
                         err.msg);
        return;
    }
    *st = (struct stream){
        .key = key, .id = c->id, .sess = sess, .slot = slot, .prompt_tokens = (uint32_t)c->n_prompt,
        .detok = detok, .stop = c->stop, .n_stop = c->n_stop, .live = true,
    };
    c->stop = NULL;
    c->n_stop = 0;
    st->pend_tail = &st->pend;
    st->next = s->streams;
    s->streams = st;
    st->hnext = s->buckets[key % N_BUCKETS];
    s->buckets[key % N_BUCKETS] = st;
    s->n_streams++;
    atomic_fetch_add(&s->total_prompt, (unsigned long long)c->n_prompt);

    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_ACCEPTED, c->id);
    m.u.accepted.slot = slot;
    m.u.accepted.prompt_tokens = (uint32_t)c->n_prompt;
    m.u.accepted.handle = key;
    outbox_msg(s, sess, &m);
}

static void engine_close(struct fp8d_server *s, struct session *sess)
{
    for (struct stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (st->sess != sess)
            continue;
        st->sess = NULL;
        if (st->live)
            s->be->cancel(s->be->ctx, st->key);
        else
            stream_free(s, st);
    }
    session_free(sess);
}

/* A cancel naming a daemon-wide handle, possibly another session's: honoured only for the
 * same peer uid (or root), known only on Unix sockets. A foreign handle is answered like
 * an unknown one, so that other users' handles cannot be probed. */
static void engine_cancel_handle(struct fp8d_server *s, const struct cmd *c)
{
    struct stream *st = stream_by_key(s, c->id);
    struct session *me = c->sess;
    if (!me->has_uid) {
        outbox_error(s, me, c->req_id, FP8_MSG_ERRC_UNSUPPORTED,
                     "cancel by handle needs a Unix-socket (ipc://) connection: the daemon "
                     "checks the peer's uid");
        return;
    }
    if (!st || !st->live || st->why[0] || !st->sess || !st->sess->has_uid ||
        (st->sess->uid != me->uid && me->uid != 0)) {
        char why[160];
        snprintf(why, sizeof(why), "no running generation with handle %llu owned by uid %u",
                 (unsigned long long)c->id, (unsigned)me->uid);
        outbox_error(s, me, c->req_id, FP8_MSG_ERRC_BAD_REQUEST, why);
        return;
    }
    s->be->cancel(s->be->ctx, st->key);
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_OK, c->req_id);
    outbox_msg(s, me, &m);
}

static void engine_commands(struct fp8d_server *s, struct cmd *c)
{
    while (c) {
        struct cmd *next = c->next;
        switch (c->kind) {
        case CMD_GENERATE:
            engine_generate(s, c);
            break;
        case CMD_CANCEL:
            for (struct stream *st = s->streams; st; st = st->next)
                if (st->sess == c->sess && st->id == c->id && st->live)
                    s->be->cancel(s->be->ctx, st->key);
            break;
        case CMD_CANCEL_HANDLE:
            engine_cancel_handle(s, c);
            break;
        case CMD_CLOSE:
            engine_close(s, c->sess);
            break;
        case CMD_SHUTDOWN:
            s->shutdown_deadline_ns = fp8_now_ns() + (int64_t)s->o.drain_ms * 1000000;
            for (struct stream *st = s->streams; st; st = st->next)
                if (!st->ended)
                    stream_cut(s, st, FP8_MSG_ERRC_SHUTTING_DOWN,
                               "the daemon is shutting down");
            break;
        }
        cmd_free(c);
        c = next;
    }
}

/* Paused streams: retry their queues; cut those whose reader stalled too long. */
static bool engine_paused(struct fp8d_server *s)
{
    bool any = false;
    int64_t t = fp8_now_ns();
    for (struct stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (!st->pend)
            continue;
        if (stream_flush(s, st)) {
            if (st->ended)
                stream_finalize(s, st);
            continue;
        }
        any = true;
        if (!st->why[0] && t - st->paused_ns > (int64_t)s->o.stream_timeout_ms * 1000000) {
            char why[160];
            snprintf(why, sizeof(why), "cancelled: the client did not read its stream for %u ms "
                     "(backpressure timeout)", s->o.stream_timeout_ms);
            fp8d_log(FP8D_LOG_WARN, "session %llu request %llu: %s",
                     (unsigned long long)st->sess->id, (unsigned long long)st->id, why);
            /* What was not published is dropped; the FINAL record waits for room: queued
             * here when the generation already ended, by on_end after the cancel if not. */
            pend_drop(st);
            stream_cut(s, st, FP8_MSG_ERRC_CANCELLED, why);
            if (st->ended)
                queue_rec(st, -1, true, FP8_MSG_RING_END_CANCELLED, NULL, 0);
        }
    }
    return any;
}

static void engine_publish_load(struct fp8d_server *s)
{
    struct fp8d_load l = {0};
    s->be->load(s->be->ctx, &l);
    atomic_store(&s->load_running, l.running);
    atomic_store(&s->load_waiting, l.waiting);
    atomic_store(&s->kv_used, l.kv_blocks_used);
    atomic_store(&s->kv_total, l.kv_blocks_total);
}

static void *engine_main(void *arg)
{
    struct fp8d_server *s = arg;
    struct fp8_err err = {{0}};
    for (;;) {
        bool paused = engine_paused(s);
        bool busy = s->be->busy(s->be->ctx);
        int64_t t = fp8_now_ns();
        if (s->watchdog_usec && t - s->last_watchdog_ns >= (int64_t)s->watchdog_usec * 1000 / 3) {
            fp8d_notify_watchdog();
            s->last_watchdog_ns = t;
        }
        if (s->shutdown_deadline_ns && !busy && (!s->streams || t > s->shutdown_deadline_ns))
            break;

        pthread_mutex_lock(&s->lock);
        if (!s->cmds && !busy) {
            /* Sleep until a command comes; wake for the watchdog, paused rings and the
             * shutdown deadline. */
            int64_t wait_ns = paused ? PAUSED_POLL_NS : (int64_t)POLL_MS * 1000000;
            if (s->watchdog_usec && (int64_t)s->watchdog_usec * 1000 / 3 < wait_ns)
                wait_ns = (int64_t)s->watchdog_usec * 1000 / 3;
            int64_t until = fp8_now_ns() + wait_ns; /* the cond waits on CLOCK_MONOTONIC */
            struct timespec ts = {until / 1000000000, until % 1000000000};
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
        struct cmd *c = s->cmds;
        s->cmds = NULL;
        s->cmds_tail = &s->cmds;
        pthread_mutex_unlock(&s->lock);
        engine_commands(s, c);

        if (s->be->busy(s->be->ctx)) {
            struct fp8d_gen_events ev = {s, on_token, on_end};
            int rc = s->be->step(s->be->ctx, &ev, &err);
            if (rc < 0)
                fp8d_log(FP8D_LOG_ERR, "engine step failed: %s", err.msg);
            if (rc == -ENOTRECOVERABLE && !atomic_load(&s->have_fatal)) {
                /* Unhealthy: systemd sees the status, then the failed exit (and restarts
                 * the unit under Restart=on-failure). */
                s->fatal = err;
                atomic_store(&s->have_fatal, true);
                fp8d_notify_status("unhealthy: %s", err.msg);
                fp8d_server_stop(s);
            }
            engine_publish_load(s);
        }
    }
    /* Shutdown: whatever could not be finalized in time ends now, without its FINAL. */
    while (s->streams) {
        struct stream *st = s->streams;
        if (st->sess && !st->why[0])
            snprintf(st->why, sizeof(st->why), "the daemon is shutting down"),
                st->errc = FP8_MSG_ERRC_SHUTTING_DOWN;
        stream_finalize(s, st);
    }
    engine_publish_load(s);
    pthread_mutex_lock(&s->lock);
    s->engine_done = true;
    pthread_mutex_unlock(&s->lock);
    wake_ipc(s);
    return NULL;
}

static void engine_send(struct fp8d_server *s, struct cmd *c)
{
    pthread_mutex_lock(&s->lock);
    *s->cmds_tail = c;
    s->cmds_tail = &c->next;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- IPC thread --------------------------------------------------------------------------- */

/* Returns -EHOSTUNREACH when the peer is gone (ZMQ_ROUTER_MANDATORY). */
static int send_raw(struct fp8d_server *s, const uint8_t *rid, size_t rid_len, const void *buf,
                    size_t len)
{
    if (zmq_send(s->sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(s->sock, buf, len, ZMQ_DONTWAIT) < 0) {
        int rc = -errno;
        fp8d_log(FP8D_LOG_DEBUG, "reply not sent: %s", zmq_strerror(-rc));
        return rc;
    }
    return 0;
}

static void send_msg(struct fp8d_server *s, const uint8_t *rid, size_t rid_len,
                     const struct fp8_msg *m)
{
    struct fp8_err err = {{0}};
    void *buf;
    size_t len;
    if (fp8_msg_encode(m, &buf, &len, &err) < 0) {
        fp8d_log(FP8D_LOG_ERR, "cannot encode %s: %s", fp8_msg_op_name(m->op), err.msg);
        return;
    }
    send_raw(s, rid, rid_len, buf, len);
    free(buf);
}

static void send_error(struct fp8d_server *s, const uint8_t *rid, size_t rid_len, uint64_t id,
                       enum fp8_msg_errc code, const char *text)
{
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_ERROR, id);
    m.u.error.code = code;
    m.u.error.message = (struct fp8_msg_str){text, (uint32_t)strlen(text)};
    send_msg(s, rid, rid_len, &m);
}

static struct session *session_find(struct fp8d_server *s, const uint8_t *rid, size_t len)
{
    for (struct session *x = s->sessions; x; x = x->next)
        if (x->rid_len == len && !memcmp(x->rid, rid, len))
            return x;
    return NULL;
}

/* Removes a session from the table and hands it to the engine to cancel and free. */
static void session_close(struct fp8d_server *s, struct session *x, const char *why)
{
    for (struct session **p = &s->sessions; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            break;
        }
    s->n_sessions--;
    fp8d_log(FP8D_LOG_INFO, "session %llu (%s) closed: %s", (unsigned long long)x->id, x->name, why);
    struct cmd *c = calloc(1, sizeof(*c));
    if (!c) { /* cannot hand it over: its streams would write to freed memory */
        fp8d_log(FP8D_LOG_ERR, "out of memory closing a session; stopping");
        abort();
    }
    c->kind = CMD_CLOSE;
    c->sess = x;
    engine_send(s, c);
}

static void fill_model(struct fp8d_server *s, struct fp8_msg_model *m)
{
    *m = s->be->model;
}

static void on_hello(struct fp8d_server *s, const uint8_t *rid, size_t rid_len, int fd,
                     const struct fp8_msg *req)
{
    struct session *old = session_find(s, rid, rid_len);
    if (old)
        session_close(s, old, "new hello on the same connection");
    if (s->stopping) {
        send_error(s, rid, rid_len, req->id, FP8_MSG_ERRC_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    if (s->n_sessions >= s->o.max_sessions) {
        send_error(s, rid, rid_len, req->id, FP8_MSG_ERRC_BUSY, "too many sessions");
        return;
    }
    struct session *x = calloc(1, sizeof(*x));
    if (!x) {
        send_error(s, rid, rid_len, req->id, FP8_MSG_ERRC_INTERNAL, "out of memory");
        return;
    }
    x->id = ++s->next_session;
    memcpy(x->rid, rid, rid_len);
    x->rid_len = rid_len;
    x->fd = fd;
    struct stat stt;
    if (fd >= 0 && fstat(fd, &stt) == 0)
        x->ino = stt.st_ino;
    else
        x->fd = -1;
    struct ucred cr;
    socklen_t crl = sizeof(cr);
    if (fd >= 0 && s->local && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) == 0) {
        x->pid = cr.pid;
        x->uid = cr.uid;
        x->has_uid = true;
    }
    /* the client's name goes into log lines: printable ASCII only */
    char cname[41];
    uint32_t cn = req->u.hello.client.len < 40 ? req->u.hello.client.len : 40;
    for (uint32_t i = 0; i < cn; i++) {
        char ch = req->u.hello.client.s[i];
        cname[i] = ch >= 0x20 && ch < 0x7f && ch != '(' && ch != ')' ? ch : '?';
    }
    cname[cn] = '\0';
    snprintf(x->name, sizeof(x->name), "%s pid %d", cname, (int)x->pid);

    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_WELCOME, req->id);
    if (req->u.hello.shm && s->local) {
        struct fp8_err err = {{0}};
        if (fp8_seg_create(&x->seg, s->o.n_slots, s->o.slot_bytes, s->o.system ? 0660 : 0600,
                           &err) < 0) {
            fp8d_log(FP8D_LOG_ERR, "session %llu: %s", (unsigned long long)x->id, err.msg);
            send_error(s, rid, rid_len, req->id, FP8_MSG_ERRC_INTERNAL, err.msg);
            free(x);
            return;
        }
        x->has_shm = true;
        m.u.welcome.shm = (struct fp8_msg_str){x->seg.shm.name, (uint32_t)strlen(x->seg.shm.name)};
        m.u.welcome.shm_bytes = x->seg.geom.total_bytes;
    } else {
        x->unlinked = true;
    }
    x->welcome_ms = now_ms();
    x->next = s->sessions;
    s->sessions = x;
    s->n_sessions++;
    m.u.welcome.session = x->id;
    m.u.welcome.server = (struct fp8_msg_str){"fp8d " FP8D_VERSION, sizeof("fp8d " FP8D_VERSION) - 1};
    fill_model(s, &m.u.welcome.model);
    send_msg(s, rid, rid_len, &m);
    fp8d_log(FP8D_LOG_INFO, "session %llu (%s) opened, %s%s", (unsigned long long)x->id, x->name,
             x->has_shm ? "shared-memory rings in " : "chunk messages", x->has_shm ? x->seg.shm.name : "");
}

static char **copy_stops(const struct fp8_msg_generate *g)
{
    char **v = calloc(g->n_stop ? g->n_stop : 1, sizeof(*v));
    if (!v)
        return NULL;
    for (uint32_t i = 0; i < g->n_stop; i++) {
        v[i] = malloc(g->stop[i].len + 1);
        if (!v[i] || memchr(g->stop[i].s, 0, g->stop[i].len)) {
            free_strs(v, (int32_t)g->n_stop);
            return NULL;
        }
        memcpy(v[i], g->stop[i].s, g->stop[i].len);
        v[i][g->stop[i].len] = '\0';
    }
    return v;
}

static void on_generate(struct fp8d_server *s, struct session *x, const uint8_t *rid,
                        size_t rid_len, const struct fp8_msg *req)
{
    const struct fp8_msg_generate *g = &req->u.generate;
    struct fp8_err err = {{0}};
    const struct fp8d_backend *be = s->be;
    uint32_t max_len = be->model.max_model_len;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    char *chat = NULL;
    struct cmd *c = NULL;

    if (!x) {
        send_error(s, rid, rid_len, req->id, FP8_MSG_ERRC_BAD_REQUEST, "generate before hello");
        return;
    }
    if (s->stopping) {
        send_error(s, rid, rid_len, req->id, FP8_MSG_ERRC_SHUTTING_DOWN, "the daemon is stopping");
        return;
    }
    if (g->kind == FP8_MSG_PROMPT_TOKENS) {
        for (uint32_t i = 0; i < g->tokens.n; i++)
            if ((uint32_t)g->tokens.ids[i] >= be->model.vocab_size) {
                fp8_err_set(&err, -EINVAL, "tokens[%u] = %d is not below the vocabulary size %u",
                            i, g->tokens.ids[i], be->model.vocab_size);
                rc = -EINVAL;
                goto fail;
            }
        ids = malloc(g->tokens.n * sizeof(*ids));
        if (!ids) {
            rc = fp8_err_set(&err, -ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(ids, g->tokens.ids, g->tokens.n * sizeof(*ids));
        n = g->tokens.n;
    } else if (g->kind == FP8_MSG_PROMPT_TEXT) {
        rc = be->tokenize(be->ctx, g->prompt.s ? g->prompt.s : "", g->prompt.len, true, &ids,
                          &n, &err);
    } else {
        size_t len;
        rc = be->chat(be->ctx, g->messages, g->n_messages, g->add_generation_prompt,
                      g->enable_thinking, &chat, &len, &err);
        if (rc >= 0)
            rc = be->tokenize(be->ctx, chat, len, false, &ids, &n, &err);
    }
    if (rc < 0)
        goto fail;
    if (n == 0) {
        rc = fp8_err_set(&err, -EINVAL, "the prompt is empty after tokenization");
        goto fail;
    }
    if (n >= max_len) {
        rc = fp8_err_set(&err, -E2BIG, "prompt of %zu tokens leaves no room to generate "
                         "within the model length %u", n, max_len);
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->stop = copy_stops(g))) {
        rc = fp8_err_set(&err, -EINVAL, c ? "stop strings may not contain NUL bytes"
                                          : "out of memory");
        goto fail;
    }
    c->n_stop = (int32_t)g->n_stop;
    struct fp8d_gen_params p = be->defaults;
    const struct fp8_msg_sampling *sp = &g->sampling;
    p.max_tokens = (int32_t)(max_len - n);
    if (sp->set & FP8_MSG_SAMPLING_MAX_TOKENS) {
        if ((uint64_t)sp->max_tokens + n > max_len) {
            rc = fp8_err_set(&err, -E2BIG, "prompt (%zu tokens) + max_tokens (%u) is over the "
                             "model length %u", n, sp->max_tokens, max_len);
            goto fail;
        }
        p.max_tokens = (int32_t)sp->max_tokens;
    }
    if (sp->set & FP8_MSG_SAMPLING_TEMPERATURE)
        p.temperature = sp->temperature;
    if (sp->set & FP8_MSG_SAMPLING_TOP_P)
        p.top_p = sp->top_p;
    if (sp->set & FP8_MSG_SAMPLING_TOP_K)
        p.top_k = sp->top_k;
    if (sp->set & FP8_MSG_SAMPLING_MIN_P)
        p.min_p = sp->min_p;
    if (sp->set & FP8_MSG_SAMPLING_SEED)
        p.seed = sp->seed;
    else if (getrandom(&p.seed, sizeof(p.seed), 0) != sizeof(p.seed))
        p.seed = (uint64_t)fp8_now_ns();
    p.ignore_eos = g->ignore_eos;
    p.priority = g->priority;
    c->kind = CMD_GENERATE;
    c->sess = x;
    c->id = req->id;
    c->prompt = ids;
    c->n_prompt = (int32_t)n;
    c->params = p;
    free(chat);
    engine_send(s, c);
    return;

fail:
    free(chat);
    free(ids);
    cmd_free(c);
    send_error(s, rid, rid_len, req->id,
               rc == -E2BIG ? FP8_MSG_ERRC_TOO_LONG
               : rc == -ENOMEM ? FP8_MSG_ERRC_INTERNAL
                               : FP8_MSG_ERRC_BAD_REQUEST,
               err.msg);
}

static void on_request(struct fp8d_server *s, const uint8_t *rid, size_t rid_len, int fd,
                       const void *buf, size_t len)
{
    struct fp8_err err = {{0}};
    struct fp8_msg req, m;
    int rc = fp8_msg_decode(buf, len, FP8_MSG_DIR_REQUEST, &req, &err);
    if (rc < 0) {
        uint64_t id = 0;
        fp8_msg_peek_id(buf, len, &id);
        enum fp8_msg_errc code = fp8_msg_errc_from_errno(rc);
        char text[sizeof(err.msg) + 64];
        if (rc == -EPROTONOSUPPORT)
            snprintf(text, sizeof(text), "this daemon speaks protocol version %d: %s",
                     FP8_PROTO_VERSION, err.msg);
        else
            snprintf(text, sizeof(text), "%s", err.msg);
        fp8d_log(FP8D_LOG_DEBUG, "bad message (%zu bytes): %s", len, text);
        send_error(s, rid, rid_len, id, code, text);
        return;
    }
    struct session *x = session_find(s, rid, rid_len);
    switch (req.op) {
    case FP8_MSG_OP_HELLO:
        on_hello(s, rid, rid_len, fd, &req);
        break;
    case FP8_MSG_OP_GENERATE:
        on_generate(s, x, rid, rid_len, &req);
        break;
    case FP8_MSG_OP_CANCEL: {
        struct cmd *c = x ? calloc(1, sizeof(*c)) : NULL;
        if (req.u.cancel.handle) { /* the engine thread knows the owner and replies */
            if (!c) {
                send_error(s, rid, rid_len, req.id, x ? FP8_MSG_ERRC_INTERNAL
                                                      : FP8_MSG_ERRC_BAD_REQUEST,
                           x ? "out of memory" : "no session: send hello first");
                break;
            }
            *c = (struct cmd){.kind = CMD_CANCEL_HANDLE, .sess = x, .id = req.u.cancel.handle,
                              .req_id = req.id};
            engine_send(s, c);
            break;
        }
        if (c) {
            c->kind = CMD_CANCEL;
            c->sess = x;
            c->id = req.u.cancel.target;
            engine_send(s, c);
        }
        fp8_msg_init(&m, FP8_MSG_OP_OK, req.id);
        send_msg(s, rid, rid_len, &m);
        break;
    }
    case FP8_MSG_OP_TOKENIZE: {
        int32_t *ids = NULL;
        size_t n = 0;
        const struct fp8_msg_tokenize *t = &req.u.tokenize;
        rc = s->be->tokenize(s->be->ctx, t->text.s ? t->text.s : "", t->text.len, t->add_special,
                             &ids, &n, &err);
        if (rc < 0) {
            send_error(s, rid, rid_len, req.id, rc == -ENOMEM ? FP8_MSG_ERRC_INTERNAL
                                                              : FP8_MSG_ERRC_BAD_REQUEST, err.msg);
            break;
        }
        fp8_msg_init(&m, FP8_MSG_OP_TOKENS, req.id);
        m.u.tokens = (struct fp8_msg_ids){ids, (uint32_t)n};
        send_msg(s, rid, rid_len, &m);
        free(ids);
        break;
    }
    case FP8_MSG_OP_DETOKENIZE: {
        char *text = NULL;
        size_t n = 0;
        const struct fp8_msg_ids *d = &req.u.detokenize;
        for (uint32_t i = 0; i < d->n; i++)
            if ((uint32_t)d->ids[i] >= s->be->model.vocab_size) {
                rc = fp8_err_set(&err, -EINVAL, "tokens[%u] = %d is not below the vocabulary "
                                 "size %u", i, d->ids[i], s->be->model.vocab_size);
                break;
            }
        if (rc == 0)
            rc = s->be->detokenize(s->be->ctx, d->ids, d->n, &text, &n, &err);
        if (rc < 0) {
            send_error(s, rid, rid_len, req.id, rc == -ENOMEM ? FP8_MSG_ERRC_INTERNAL
                                                              : FP8_MSG_ERRC_BAD_REQUEST, err.msg);
            break;
        }
        fp8_msg_init(&m, FP8_MSG_OP_TEXT, req.id);
        m.u.text = (struct fp8_msg_str){text ? text : "", (uint32_t)n};
        send_msg(s, rid, rid_len, &m);
        free(text);
        break;
    }
    case FP8_MSG_OP_INFO:
        fp8_msg_init(&m, FP8_MSG_OP_MODEL, req.id);
        fill_model(s, &m.u.model);
        send_msg(s, rid, rid_len, &m);
        break;
    case FP8_MSG_OP_STATS:
        fp8_msg_init(&m, FP8_MSG_OP_COUNTERS, req.id);
        m.u.counters = (struct fp8_msg_counters){
            .running = atomic_load(&s->load_running),
            .waiting = atomic_load(&s->load_waiting),
            .sessions = s->n_sessions,
            .kv_blocks_used = atomic_load(&s->kv_used),
            .kv_blocks_total = atomic_load(&s->kv_total),
            .uptime_ms = (uint64_t)(now_ms() - s->start_ms),
            .prompt_tokens = atomic_load(&s->total_prompt),
            .generated_tokens = atomic_load(&s->total_generated),
        };
        send_msg(s, rid, rid_len, &m);
        break;
    case FP8_MSG_OP_PING:
        fp8_msg_init(&m, FP8_MSG_OP_PONG, req.id);
        send_msg(s, rid, rid_len, &m);
        break;
    case FP8_MSG_OP_BYE:
        if (x)
            session_close(s, x, "bye");
        fp8_msg_init(&m, FP8_MSG_OP_OK, req.id);
        send_msg(s, rid, rid_len, &m);
        break;
    default: /* the decoder refuses reply ops in requests */
        break;
    }
    fp8_msg_free(&req);
}

/* Reads one ROUTER message: [routing id][payload]. */
static void ipc_recv(struct fp8d_server *s)
{
    zmq_msg_t idm, body;
    zmq_msg_init(&idm);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&idm, s->sock, ZMQ_DONTWAIT) < 0)
        goto out;
    if (!zmq_msg_more(&idm) || zmq_msg_size(&idm) > sizeof(((struct session *)0)->rid))
        goto out;
    if (zmq_msg_recv(&body, s->sock, 0) < 0)
        goto out;
    const uint8_t *rid = zmq_msg_data(&idm);
    size_t rid_len = zmq_msg_size(&idm);
    if (zmq_msg_more(&body)) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        while (zmq_msg_more(&body) && zmq_msg_recv(&extra, s->sock, 0) >= 0 &&
               zmq_msg_more(&extra))
            ;
        zmq_msg_close(&extra);
        send_error(s, rid, rid_len, 0, FP8_MSG_ERRC_BAD_REQUEST,
                   "a message must be a single frame");
        goto out;
    }
    on_request(s, rid, rid_len, zmq_msg_get(&body, ZMQ_SRCFD), zmq_msg_data(&body),
               zmq_msg_size(&body));
out:
    zmq_msg_close(&idm);
    zmq_msg_close(&body);
}

/* Sessions whose connection or process is gone. */
static void ipc_sweep(struct fp8d_server *s)
{
    for (struct session *x = s->sessions, *next; x; x = next) {
        next = x->next;
        const char *why = NULL;
        struct stat st;
        if (x->fd >= 0 && (fstat(x->fd, &st) < 0 || st.st_ino != x->ino))
            why = "connection closed";
        else if (x->pid > 0 && kill(x->pid, 0) < 0 && errno == ESRCH)
            why = "client process gone";
        if (why)
            session_close(s, x, why);
    }
}

static void ipc_unlink(struct fp8d_server *s)
{
    int64_t t = now_ms();
    for (struct session *x = s->sessions; x; x = x->next) {
        if (x->unlinked)
            continue;
        if (fp8_seg_unlink_if_attached(&x->seg) == 1) {
            x->unlinked = true;
        } else if (t - x->welcome_ms > UNLINK_DEADLINE_MS) {
            fp8_shm_unlink(&x->seg.shm, NULL);
            x->unlinked = true;
        }
    }
}

/* Sends what the engine queued; returns true once the engine thread has finished. */
static bool ipc_outbox(struct fp8d_server *s)
{
    uint64_t v;
    ssize_t r = read(s->wake_fd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&s->lock);
    struct out *o = s->outbox;
    s->outbox = NULL;
    s->outbox_tail = &s->outbox;
    bool done = s->engine_done;
    pthread_mutex_unlock(&s->lock);
    while (o) {
        struct out *next = o->next;
        if (o->buf) {
            struct session *x;
            if (send_raw(s, o->rid, o->rid_len, o->buf, o->len) == -EHOSTUNREACH &&
                (x = session_find(s, o->rid, o->rid_len)))
                session_close(s, x, "client disconnected");
        } else {
            for (struct session *x = s->sessions; x; x = x->next)
                if (x->id == o->drop_session) {
                    session_close(s, x, o->why);
                    break;
                }
        }
        free(o->buf);
        free(o);
        o = next;
    }
    return done;
}

static void ipc_monitor(struct fp8d_server *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s->mon, ZMQ_DONTWAIT) >= 0) {
        /* event frames: [u16 event, u32 value][endpoint]; only disconnects are subscribed */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
    }
    zmq_msg_close(&m);
    ipc_sweep(s);
}

static void status_line(struct fp8d_server *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "serving %s: %u sessions, %u running, %u waiting, KV %u/%u blocks, "
             "%llu tokens generated", s->be->model.name.s, s->n_sessions,
             atomic_load(&s->load_running), atomic_load(&s->load_waiting),
             atomic_load(&s->kv_used), atomic_load(&s->kv_total),
             (unsigned long long)atomic_load(&s->total_generated));
}

int fp8d_server_run(struct fp8d_server *s, struct fp8_err *err)
{
    if (!s)
        return fp8_err_set(err, -EINVAL, "server: NULL");
    s->start_ms = now_ms();
    s->watchdog_usec = fp8d_notify_watchdog_usec();
    s->last_watchdog_ns = 0;
    int rc = pthread_create(&s->engine, NULL, engine_main, s);
    if (rc)
        return fp8_err_set(err, -rc, "cannot start the engine thread: %s", strerror(rc));
    s->engine_started = true;

    char status[256], last_status[256] = "";
    status_line(s, status, sizeof(status));
    fp8d_notify_ready(status);
    fp8d_log(FP8D_LOG_INFO, "ready: %s on %s", s->be->model.name.s, s->endpoint);
    int64_t last_sweep = now_ms(), last_status_ms = 0;
    bool engine_done = false;
    while (!engine_done) {
        zmq_pollitem_t items[3] = {
            {.socket = s->sock, .events = ZMQ_POLLIN},
            {.socket = s->mon, .events = ZMQ_POLLIN},
            {.fd = s->wake_fd, .events = ZMQ_POLLIN},
        };
        if (zmq_poll(items, 3, POLL_MS) < 0 && errno != EINTR) {
            rc = fp8_err_set(err, -errno, "zmq_poll: %s", zmq_strerror(errno));
            fp8d_server_stop(s);
        }
        if (atomic_exchange(&s->hup_req, 0))
            fp8d_log_reopen();
        if (atomic_load(&s->stop_req) && !s->stopping) {
            s->stopping = true;
            fp8d_log(FP8D_LOG_INFO, "stopping: refusing new generations, cutting running ones");
            fp8d_notify_stopping("stopping");
            struct cmd *c = calloc(1, sizeof(*c));
            if (!c)
                abort();
            c->kind = CMD_SHUTDOWN;
            engine_send(s, c);
        }
        if (items[0].revents & ZMQ_POLLIN)
            for (int i = 0; i < 64; i++) {
                int ev = 0;
                size_t evl = sizeof(ev);
                if (zmq_getsockopt(s->sock, ZMQ_EVENTS, &ev, &evl) < 0 || !(ev & ZMQ_POLLIN))
                    break;
                ipc_recv(s);
            }
        if (items[1].revents & ZMQ_POLLIN)
            ipc_monitor(s);
        engine_done = ipc_outbox(s);
        ipc_unlink(s);
        int64_t t = now_ms();
        if (t - last_sweep >= SWEEP_MS) {
            ipc_sweep(s);
            last_sweep = t;
        }
        if (t - last_status_ms >= STATUS_MS && !s->stopping) {
            status_line(s, status, sizeof(status));
            if (strcmp(status, last_status)) {
                fp8d_notify_status("%s", status);
                memcpy(last_status, status, sizeof(status));
            }
            last_status_ms = t;
        }
    }
    pthread_join(s->engine, NULL);
    s->engine_started = false;
    ipc_outbox(s); /* the engine's last replies */
    while (s->cmds) { /* handed over after the engine stopped */
        struct cmd *c = s->cmds;
        s->cmds = c->next;
        if (c->kind == CMD_CLOSE)
            session_free(c->sess);
        cmd_free(c);
    }
    s->cmds_tail = &s->cmds;
    while (s->sessions) {
        struct session *x = s->sessions;
        s->sessions = x->next;
        session_free(x);
    }
    s->n_sessions = 0;
    fp8d_log(FP8D_LOG_INFO, "stopped");
    if (rc == 0 && atomic_load(&s->have_fatal))
        rc = fp8_err_set(err, -ENOTRECOVERABLE, "the engine cannot continue: %s", s->fatal.msg);
    return rc < 0 ? rc : 0;
}

const char *fp8d_server_endpoint(const struct fp8d_server *s)
{
    return s->endpoint;
}

void fp8d_server_stop(struct fp8d_server *s)
{
    atomic_store(&s->stop_req, 1);
    wake_ipc(s);
}

void fp8d_server_hup(struct fp8d_server *s)
{
    atomic_store(&s->hup_req, 1);
    wake_ipc(s);
}

static bool socket_in_use(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path))
        return false;
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return live;
}

int fp8d_server_create(struct fp8d_server **out, const struct fp8d_server_opts *o,
                       struct fp8d_backend *be, struct fp8_err *err)
{
    if (!out || !o || !be || !o->endpoint)
        return fp8_err_set(err, -EINVAL, "server: NULL argument");
    struct fp8d_server *s = calloc(1, sizeof(*s));
    if (!s)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    int rc;
    s->o = *o;
    s->be = be;
    s->wake_fd = -1;
    s->cmds_tail = &s->cmds;
    s->outbox_tail = &s->outbox;
    s->local = fp8_endpoint_is_local(o->endpoint);
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);

    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->ctx = zmq_ctx_new();
    if (s->wake_fd < 0 || !s->ctx) {
        rc = fp8_err_set(err, -ENOMEM, "cannot create the event fd or ZeroMQ context");
        goto fail;
    }
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    if (!s->sock) {
        rc = fp8_err_set(err, -errno, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    int64_t maxmsg = ZMQ_MAX_BYTES;
    int linger = 1000, zero = 0, one = 1, hb_ivl = HEARTBEAT_IVL_MS, hb_to = HEARTBEAT_TIMEOUT_MS;
    /* Unlimited send queue: a chunk stream is never silently dropped by the ROUTER (its
     * length is bounded by the model length); mandatory routing reports vanished peers. */
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s->sock, ZMQ_SNDHWM, &zero, sizeof(zero));
    zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof(hb_ivl));
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_to, sizeof(hb_to));
    if (o->listen_fd >= 0 && zmq_setsockopt(s->sock, ZMQ_USE_FD, &o->listen_fd,
                                            sizeof(o->listen_fd)) < 0) {
        rc = fp8_err_set(err, -errno, "ZMQ_USE_FD: %s", zmq_strerror(errno));
        goto fail;
    }
    rc = fp8_endpoint_allow(s->sock, o->allow_uids, o->n_allow_uids, o->allow_gids,
                            o->n_allow_gids, err);
    if (rc < 0)
        goto fail;
    if (s->local && o->listen_fd < 0) {
        rc = fp8_endpoint_path(o->endpoint, s->sock_path, sizeof(s->sock_path), err);
        if (rc < 0)
            goto fail;
        /* ZeroMQ replaces an existing socket file: right for one a dead daemon left,
         * wrong for one a live daemon listens on. */
        if (socket_in_use(s->sock_path)) {
            rc = fp8_err_set(err, -EADDRINUSE, "%s: another daemon is listening there",
                             s->sock_path);
            s->sock_path[0] = '\0';
            goto fail;
        }
    }
    if (zmq_bind(s->sock, o->endpoint) < 0) {
        rc = fp8_err_set(err, -errno, "cannot listen on %s: %s", o->endpoint, zmq_strerror(errno));
        s->sock_path[0] = '\0';
        goto fail;
    }
    size_t eplen = sizeof(s->endpoint);
    if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->endpoint, &eplen) < 0 || !s->endpoint[0])
        snprintf(s->endpoint, sizeof(s->endpoint), "%s", o->endpoint);
    if (s->sock_path[0] && chmod(s->sock_path, o->system ? 0660 : 0600) < 0) {
        rc = fp8_err_set(err, -errno, "chmod %s: %s", s->sock_path, strerror(errno));
        goto fail;
    }
    char mon_addr[64];
    snprintf(mon_addr, sizeof(mon_addr), "inproc://fp8d-server-monitor-%p", (void *)s);
    if (zmq_socket_monitor(s->sock, mon_addr, ZMQ_EVENT_DISCONNECTED) < 0 ||
        !(s->mon = zmq_socket(s->ctx, ZMQ_PAIR)) || zmq_connect(s->mon, mon_addr) < 0) {
        rc = fp8_err_set(err, -errno, "socket monitor: %s", zmq_strerror(errno));
        goto fail;
    }
    zmq_setsockopt(s->mon, ZMQ_LINGER, &zero, sizeof(zero));
    *out = s;
    return 0;

fail:
    fp8d_server_free(s);
    return rc;
}

void fp8d_server_free(struct fp8d_server *s)
{
    if (!s)
        return;
    while (s->sessions) {
        struct session *x = s->sessions;
        s->sessions = x->next;
        session_free(x);
    }
    while (s->cmds) {
        struct cmd *c = s->cmds;
        s->cmds = c->next;
        cmd_free(c);
    }
    while (s->outbox) {
        struct out *o = s->outbox;
        s->outbox = o->next;
        free(o->buf);
        free(o);
    }
    if (s->mon) {
        zmq_socket_monitor(s->sock, NULL, 0);
        zmq_close(s->mon);
    }
    if (s->sock)
        zmq_close(s->sock);
    if (s->ctx)
        zmq_ctx_term(s->ctx);
    if (s->sock_path[0])
        unlink(s->sock_path);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}
