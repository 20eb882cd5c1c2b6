/* The daemon's server (daemon/server.c) in this process, with a stub backend whose
 * outputs are written down by hand, driven by real clients (libfp8d, raw ZeroMQ sockets,
 * forked client processes). The stub "model" echoes: a request's i-th generated token is
 * its prompt's (i mod n)-th token, the text of token t is the byte t, token 0 is the end
 * of sequence; a prompt starting with '!' generates 1 token and then holds (stays running
 * without new tokens) until cancelled, one starting with '~' holds after 30 tokens. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "client/fp8d.h"
#include "common/clock.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "ipc/protocol.h"

#define TIMEOUT_MS 10000
#define MAX_REQ 64

/* ---- the stub backend ------------------------------------------------------------------ */

struct stub_req {
    bool used, cancelled, paused;
    uint64_t key;
    int32_t prompt[64];
    int32_t n_prompt, n_gen, max_tokens;
    bool ignore_eos;
    int32_t hold_after; /* generate this many tokens, then hold until cancelled (0: never) */
};

struct stub {
    pthread_mutex_t lock; /* only for the counters the test reads */
    struct stub_req req[MAX_REQ];
    int n_live;
    int n_paused;        /* pause(true) calls minus pause(false) calls */
    int32_t max_paused_gen; /* most tokens a request had generated when it was paused */
    int32_t cancelled_gen;  /* tokens the last cancelled request generated */
};

static int stub_tokenize(void *ctx, const char *text, size_t len, bool add_special,
                         int32_t **ids, size_t *n, struct fp8_err *err)
{
    (void)ctx;
    (void)add_special;
    int32_t *v = malloc((len ? len : 1) * sizeof(*v));
    if (!v)
        return fp8_err_set(err, -ENOMEM, "oom");
    for (size_t i = 0; i < len; i++)
        v[i] = (uint8_t)text[i];
    *ids = v;
    *n = len;
    return 0;
}

static int stub_detokenize(void *ctx, const int32_t *ids, size_t n, char **text, size_t *len,
                           struct fp8_err *err)
{
    (void)ctx;
    char *t = malloc(n + 1);
    if (!t)
        return fp8_err_set(err, -ENOMEM, "oom");
    for (size_t i = 0; i < n; i++)
        t[i] = (char)ids[i];
    t[n] = 0;
    *text = t;
    *len = n;
    return 0;
}

static int stub_chat(void *ctx, const struct fp8_msg_turn *turns, uint32_t n, bool gen,
                     int thinking, char **out, size_t *len, struct fp8_err *err)
{
    (void)ctx;
    (void)gen;
    (void)thinking;
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += turns[i].content.len;
    char *t = malloc(total + 1);
    if (!t)
        return fp8_err_set(err, -ENOMEM, "oom");
    size_t p = 0;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(t + p, turns[i].content.s, turns[i].content.len);
        p += turns[i].content.len;
    }
    t[p] = 0;
    *out = t;
    *len = p;
    return 0;
}

struct stub_detok {
    char c;
};

static void *stub_detok_new(void *ctx)
{
    (void)ctx;
    return calloc(1, sizeof(struct stub_detok));
}

static int stub_detok_push(void *d, int32_t id, const char **text, size_t *len)
{
    struct stub_detok *x = d;
    x->c = (char)id;
    *text = &x->c;
    *len = 1;
    return 0;
}

static int stub_detok_finish(void *d, const char **text, size_t *len)
{
    (void)d;
    *text = "";
    *len = 0;
    return 0;
}

static int stub_submit(void *ctx, uint64_t key, const int32_t *prompt, int32_t n,
                       const struct fp8d_gen_params *p, struct fp8_err *err)
{
    struct stub *s = ctx;
    if (n > 64)
        return fp8_err_set(err, -E2BIG, "too_long: stub prompts are at most 64 tokens");
    for (int i = 0; i < MAX_REQ; i++) {
        struct stub_req *r = &s->req[i];
        if (r->used)
            continue;
        *r = (struct stub_req){.used = true, .key = key, .n_prompt = n,
                               .max_tokens = p->max_tokens, .ignore_eos = p->ignore_eos,
                               .hold_after = prompt[0] == '!' ? 1 : prompt[0] == '~' ? 30 : 0};
        memcpy(r->prompt, prompt, (size_t)n * sizeof(*prompt));
        pthread_mutex_lock(&s->lock);
        s->n_live++;
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    return fp8_err_set(err, -EINVAL, "stub full");
}

static int stub_cancel(void *ctx, uint64_t key)
{
    struct stub *s = ctx;
    for (int i = 0; i < MAX_REQ; i++)
        if (s->req[i].used && s->req[i].key == key) {
            s->req[i].cancelled = true;
            return 0;
        }
    return -ENOENT;
}

static int stub_pause(void *ctx, uint64_t key, bool paused)
{
    struct stub *s = ctx;
    for (int i = 0; i < MAX_REQ; i++) {
        struct stub_req *r = &s->req[i];
        if (!r->used || r->key != key)
            continue;
        pthread_mutex_lock(&s->lock);
        if (paused != r->paused)
            s->n_paused += paused ? 1 : -1;
        if (paused && r->n_gen > s->max_paused_gen)
            s->max_paused_gen = r->n_gen;
        pthread_mutex_unlock(&s->lock);
        r->paused = paused;
        return 0;
    }
    return -ENOENT;
}

static bool stub_busy(void *ctx)
{
    struct stub *s = ctx;
    for (int i = 0; i < MAX_REQ; i++)
        if (s->req[i].used &&
            (s->req[i].cancelled || (!s->req[i].paused && (!s->req[i].hold_after ||
                                                           s->req[i].n_gen < s->req[i].hold_after))))
            return true;
    return false;
}

static void stub_end(struct stub *s, struct stub_req *r, const struct fp8d_gen_events *ev,
                     enum fp8d_gen_end end)
{
    struct fp8d_gen_result res = {end, (uint32_t)r->n_prompt, (uint32_t)r->n_gen, 1, 2, 3};
    uint64_t key = r->key;
    r->used = false;
    pthread_mutex_lock(&s->lock);
    if (r->paused)
        s->n_paused--;
    if (end == FP8D_GEN_END_CANCELLED)
        s->cancelled_gen = r->n_gen;
    s->n_live--;
    pthread_mutex_unlock(&s->lock);
    ev->on_end(ev->ctx, key, &res);
}

static int stub_step(void *ctx, const struct fp8d_gen_events *ev, struct fp8_err *err)
{
    (void)err;
    struct stub *s = ctx;
    for (int i = 0; i < MAX_REQ; i++) {
        struct stub_req *r = &s->req[i];
        if (!r->used)
            continue;
        if (r->cancelled) {
            stub_end(s, r, ev, FP8D_GEN_END_CANCELLED);
            continue;
        }
        if (r->paused || (r->hold_after && r->n_gen >= r->hold_after))
            continue;
        int32_t t = r->prompt[r->n_gen % r->n_prompt];
        r->n_gen++;
        bool stop = ev->on_token(ev->ctx, r->key, t);
        if (stop)
            stub_end(s, r, ev, FP8D_GEN_END_STOP);
        else if (t == 0 && !r->ignore_eos)
            stub_end(s, r, ev, FP8D_GEN_END_EOS);
        else if (r->n_gen >= r->max_tokens)
            stub_end(s, r, ev, FP8D_GEN_END_LENGTH);
    }
    return 0;
}

static void stub_load(void *ctx, struct fp8d_load *out)
{
    struct stub *s = ctx;
    pthread_mutex_lock(&s->lock);
    *out = (struct fp8d_load){.running = (uint32_t)s->n_live, .kv_blocks_total = 100};
    pthread_mutex_unlock(&s->lock);
}

static void stub_free(void *ctx)
{
    (void)ctx;
}

static void stub_detok_free(void *d)
{
    free(d);
}

static struct stub g_stub = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct fp8d_backend stub_backend(void)
{
    memset(g_stub.req, 0, sizeof(g_stub.req));
    g_stub.n_live = 0;
    g_stub.n_paused = 0;
    g_stub.max_paused_gen = 0;
    g_stub.cancelled_gen = 0;
    struct fp8d_backend b = {
        .ctx = &g_stub,
        .model = {.name = {"stub", 4}, .arch = {"qwen3", 5}, .backend = {"ref", 3},
                  .weights = {"fp8", 3}, .kv_cache_dtype = {"fp8", 3}, .vocab_size = 256,
                  .max_model_len = 200, .max_num_seqs = 8},
        .defaults = {.temperature = 0, .top_p = 1, .max_tokens = 16},
        .tokenize = stub_tokenize,
        .detokenize = stub_detokenize,
        .chat = stub_chat,
        .detok_new = stub_detok_new,
        .detok_push = stub_detok_push,
        .detok_finish = stub_detok_finish,
        .detok_free = stub_detok_free,
        .submit = stub_submit,
        .cancel = stub_cancel,
        .pause = stub_pause,
        .busy = stub_busy,
        .step = stub_step,
        .load = stub_load,
        .free = stub_free,
    };
    return b;
}

/* ---- a server in a thread ----------------------------------------------------------------- */

struct fixture {
    char dir[64];
    char endpoint[128];
    struct fp8d_backend be;
    struct fp8d_server *srv;
    pthread_t thread;
    int run_rc;
};

static void *serve(void *arg)
{
    struct fixture *f = arg;
    struct fp8_err err = {{0}};
    f->run_rc = fp8d_server_run(f->srv, &err);
    if (f->run_rc < 0)
        fprintf(stderr, "server: %s\n", err.msg);
    return NULL;
}

static void start(struct fixture *f, const struct fp8d_server_opts *o_in)
{
    struct fp8_err err = {{0}};
    strcpy(f->dir, "/tmp/fp8d-test-daemon-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->endpoint, sizeof(f->endpoint), "ipc://%s/d.sock", f->dir);
    struct fp8d_server_opts o;
    if (o_in)
        o = *o_in;
    else
        fp8d_server_opts_init(&o);
    o.endpoint = f->endpoint;
    f->be = stub_backend();
    int rc = fp8d_server_create(&f->srv, &o, &f->be, &err);
    if (rc < 0)
        fprintf(stderr, "create: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(pthread_create(&f->thread, NULL, serve, f), 0);
}

static void stop(struct fixture *f)
{
    fp8d_server_stop(f->srv);
    pthread_join(f->thread, NULL);
    assert_int_equal(f->run_rc, 0);
    fp8d_server_free(f->srv);
    char path[160];
    snprintf(path, sizeof(path), "%s/d.sock", f->dir);
    unlink(path);
    rmdir(f->dir);
}

static int64_t now_ms(void)
{
    return fp8_now_ns() / 1000000;
}

/* Reads a whole stream into text; returns fp8d_stream_next's last code. */
static int read_all(fp8d_stream *st, char *text, size_t cap, int32_t *ids, int *n_ids)
{
    struct fp8d_token t;
    int rc;
    size_t len = 0;
    *n_ids = 0;
    while ((rc = fp8d_stream_next(st, &t, TIMEOUT_MS)) == 1) {
        if (t.id >= 0)
            ids[(*n_ids)++] = t.id;
        assert_true(len + t.text_len < cap);
        memcpy(text + len, t.text, t.text_len);
        len += t.text_len;
    }
    text[len] = 0;
    return rc;
}

/* Asks the daemon for its counters over a raw socket until pred holds (bounded). */
struct counters {
    uint32_t running, sessions;
};

static void counters_get(const char *endpoint, struct counters *out)
{
    void *ctx = zmq_ctx_new(), *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, to = TIMEOUT_MS;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(d, ZMQ_RCVTIMEO, &to, sizeof(to));
    assert_int_equal(zmq_connect(d, endpoint), 0);
    struct fp8_msg m, r;
    void *buf;
    size_t len;
    fp8_msg_init(&m, FP8_MSG_OP_STATS, 7);
    assert_int_equal(fp8_msg_encode(&m, &buf, &len, NULL), 0);
    zmq_send(d, buf, len, 0);
    free(buf);
    char in[4096];
    int n = zmq_recv(d, in, sizeof(in), 0);
    assert_true(n > 0);
    assert_int_equal(fp8_msg_decode(in, (size_t)n, FP8_MSG_DIR_REPLY, &r, NULL), 0);
    assert_int_equal(r.op, FP8_MSG_OP_COUNTERS);
    out->running = r.u.counters.running;
    out->sessions = r.u.counters.sessions;
    fp8_msg_free(&r);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

/* Waits (bounded by limit_ms) until the daemon reports `sessions` sessions and `running`
 * running generations; returns the milliseconds it took, or -1. */
static int64_t wait_counters(const char *endpoint, uint32_t sessions, uint32_t running,
                             int64_t limit_ms)
{
    int64_t t0 = now_ms();
    for (;;) {
        struct counters c;
        counters_get(endpoint, &c);
        if (c.sessions == sessions && c.running == running)
            return now_ms() - t0;
        if (now_ms() - t0 > limit_ms)
            return -1;
        poll(NULL, 0, 10); /* pacing of a bounded poll, not synchronization */
    }
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_generate_ring_and_chunks(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    for (int mode = 0; mode < 2; mode++) {
        fp8d_client *c;
        fp8d_stream *st;
        assert_int_equal(fp8d_connect(f.endpoint, mode ? FP8D_CONNECT_NO_SHM : 0, TIMEOUT_MS, &c), 0);
        struct fp8d_sampling sp;
        fp8d_sampling_init(&sp);
        sp.max_tokens = 12;
        assert_int_equal(fp8d_generate(c, "hello", &sp, &st), 0);
        char text[256];
        int32_t ids[256];
        int n;
        assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
        assert_string_equal(text, "hellohellohe");
        assert_int_equal(n, 12);
        assert_int_equal(ids[0], 'h');
        assert_int_equal(ids[11], 'e');
        struct fp8d_result r;
        assert_int_equal(fp8d_stream_result(st, &r), 0);
        assert_int_equal(r.finish, FP8D_FINISH_LENGTH);
        assert_int_equal(r.prompt_tokens, 5);
        assert_int_equal(r.completion_tokens, 12);
        assert_int_equal(r.decode_us, 3);
        fp8d_stream_free(st);

        /* end of sequence: token 0 */
        int32_t prompt[] = {'a', 'b', 0, 'c'};
        assert_int_equal(fp8d_generate_tokens(c, prompt, 4, NULL, &st), 0);
        assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(fp8d_stream_result(st, &r), 0);
        assert_int_equal(r.finish, FP8D_FINISH_EOS);
        fp8d_stream_free(st);

        /* stop string across tokens; text cut before it */
        const char *stops[] = {"XYZ"};
        sp.max_tokens = 40;
        sp.stop = stops;
        sp.n_stop = 1;
        assert_int_equal(fp8d_generate(c, "abXYZcd", &sp, &st), 0);
        assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
        assert_string_equal(text, "ab");
        assert_int_equal(n, 5); /* a b X Y Z: the token that completed the stop counts */
        assert_int_equal(fp8d_stream_result(st, &r), 0);
        assert_int_equal(r.finish, FP8D_FINISH_STOP);
        fp8d_stream_free(st);

        /* a held-back prefix of a stop string that turns out not to be one */
        sp.max_tokens = 6;
        assert_int_equal(fp8d_generate(c, "aXYb", &sp, &st), 0);
        assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
        assert_string_equal(text, "aXYbaX");
        fp8d_stream_free(st);

        /* tokenize, detokenize, info */
        int32_t *tk;
        size_t ntk;
        assert_int_equal(fp8d_tokenize(c, "hi", 2, 0, &tk, &ntk), 0);
        assert_int_equal(ntk, 2);
        assert_int_equal(tk[1], 'i');
        char *dt;
        size_t ndt;
        assert_int_equal(fp8d_detokenize(c, tk, ntk, &dt, &ndt), 0);
        assert_string_equal(dt, "hi");
        free(tk);
        free(dt);
        int32_t bad = 300;
        assert_int_equal(fp8d_detokenize(c, &bad, 1, &dt, &ndt), -EINVAL);
        struct fp8d_info info;
        assert_int_equal(fp8d_info(c, &info), 0);
        assert_string_equal(info.name, "stub");
        assert_int_equal(info.max_model_len, 200);

        /* too long: prompt + max_tokens over the model length */
        sp.n_stop = 0;
        sp.max_tokens = 199;
        assert_int_equal(fp8d_generate(c, "hello", &sp, &st), -E2BIG);
        assert_non_null(strstr(fp8d_last_error(c), "model length 200"));
        fp8d_close(c);
    }
    stop(&f);
}

static void test_cancel_mid_stream(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    fp8d_client *c;
    fp8d_stream *st;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "!hold", NULL, &st), 0);
    struct fp8d_token t;
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), 1);
    assert_int_equal(t.id, '!');
    assert_int_equal(fp8d_cancel(st), 0);
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), -ECANCELED);
    fp8d_stream_free(st);
    /* the slot is free again: a full set of streams still fits */
    fp8d_stream *many[16];
    for (int i = 0; i < 16; i++)
        assert_int_equal(fp8d_generate(c, "!x", NULL, &many[i]), 0);
    assert_int_equal(fp8d_generate(c, "!x", NULL, &st), -EBUSY);
    for (int i = 0; i < 16; i++)
        fp8d_stream_free(many[i]);
    assert_true(wait_counters(f.endpoint, 1, 0, TIMEOUT_MS) >= 0);
    fp8d_close(c);
    stop(&f);
}

/* A client process SIGKILLed mid-stream: its session, generation and segment are gone
 * within a second, and the daemon serves the next client. */
static void test_client_killed(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fp8d_client *c;
        fp8d_stream *st;
        struct fp8d_token t;
        if (fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c) < 0 ||
            fp8d_generate(c, "!forever", NULL, &st) < 0 ||
            fp8d_stream_next(st, &t, TIMEOUT_MS) != 1)
            _exit(1);
        char ok = 'k';
        if (write(p[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    char b;
    assert_int_equal(read(p[0], &b, 1), 1);
    close(p[0]);
    assert_true(wait_counters(f.endpoint, 1, 1, TIMEOUT_MS) >= 0);
    kill(pid, SIGKILL);
    int64_t t0 = now_ms();
    waitpid(pid, NULL, 0);
    int64_t took = wait_counters(f.endpoint, 0, 0, 3000);
    assert_true(took >= 0);
    assert_true(now_ms() - t0 < 1000 + 200); /* the promise: freed within a second */

    fp8d_client *c;
    fp8d_stream *st;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "ok", NULL, &st), 0);
    char text[256];
    int32_t ids[256];
    int n;
    assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
    assert_int_equal(n, 198); /* no max_tokens: up to the model length, 200 */
    assert_memory_equal(text, "okokok", 6);
    fp8d_stream_free(st);
    fp8d_close(c);
    stop(&f);
}

static void stub_counts(int *n_paused, int32_t *max_paused_gen, int32_t *cancelled_gen)
{
    pthread_mutex_lock(&g_stub.lock);
    *n_paused = g_stub.n_paused;
    *max_paused_gen = g_stub.max_paused_gen;
    *cancelled_gen = g_stub.cancelled_gen;
    pthread_mutex_unlock(&g_stub.lock);
}

/* A reader that does not read: its ring fills and the daemon pauses the sequence itself,
 * which stops generating at the ring's capacity (not at its 150 tokens) while another
 * client is served in full; after the stream timeout it is cancelled with a message saying
 * so, and what was published is intact. */
static void test_slow_reader(void **state)
{
    (void)state;
    struct fixture f;
    struct fp8d_server_opts o;
    fp8d_server_opts_init(&o);
    o.slot_bytes = 256; /* 24-byte records: 10 fit in a ring */
    o.stream_timeout_ms = 300;
    start(&f, &o);
    fp8d_client *c, *c2;
    fp8d_stream *st, *st2;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c2), 0);
    struct fp8d_sampling sp;
    fp8d_sampling_init(&sp);
    sp.max_tokens = 150;
    assert_int_equal(fp8d_generate(c, "abcdefghij", &sp, &st), 0);
    /* another client is unaffected meanwhile */
    sp.max_tokens = 100;
    assert_int_equal(fp8d_generate(c2, "xy", &sp, &st2), 0);
    char text[512];
    int32_t ids[512];
    int n;
    assert_int_equal(read_all(st2, text, sizeof(text), ids, &n), 0);
    assert_int_equal(n, 100);
    fp8d_stream_free(st2);
    /* the slow one is cut: no generation runs any more */
    assert_true(wait_counters(f.endpoint, 2, 0, TIMEOUT_MS) >= 0);
    assert_int_equal(read_all(st, text, sizeof(text), ids, &n), -ECANCELED);
    assert_non_null(strstr(fp8d_last_error(c), "backpressure"));
    assert_true(n >= 9 && n <= 10); /* what the ring held */
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], "abcdefghij"[i % 10]);
    int n_paused;
    int32_t max_paused_gen, cancelled_gen;
    stub_counts(&n_paused, &max_paused_gen, &cancelled_gen);
    /* it generated what the ring held plus the one token that found the ring full */
    assert_int_equal(cancelled_gen, n + 1);
    assert_int_equal(n_paused, 0);
    fp8d_stream_free(st);
    fp8d_close(c);
    fp8d_close(c2);
    stop(&f);
}

/* A stalled reader's sequence is paused at the ring's capacity and, once the reader reads,
 * resumes and delivers every token, in order, none lost or repeated. */
static void test_stalled_reader_resumes(void **state)
{
    (void)state;
    struct fixture f;
    struct fp8d_server_opts o;
    fp8d_server_opts_init(&o);
    o.slot_bytes = 256; /* 10 records fit in a ring */
    start(&f, &o);
    fp8d_client *c;
    fp8d_stream *st;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    struct fp8d_sampling sp;
    fp8d_sampling_init(&sp);
    sp.max_tokens = 150;
    assert_int_equal(fp8d_generate(c, "abcdefghij", &sp, &st), 0);
    int n_paused;
    int32_t max_paused_gen, cancelled_gen;
    int64_t t0 = now_ms();
    do {
        poll(NULL, 0, 5); /* pacing of a bounded poll, not synchronization */
        stub_counts(&n_paused, &max_paused_gen, &cancelled_gen);
    } while (n_paused != 1 && now_ms() - t0 < TIMEOUT_MS);
    assert_int_equal(n_paused, 1);
    assert_true(max_paused_gen <= 11); /* 10 in the ring, 1 waiting for room */
    char text[512];
    int32_t ids[512];
    int n;
    assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
    assert_int_equal(n, 150);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], "abcdefghij"[i % 10]);
    stub_counts(&n_paused, &max_paused_gen, &cancelled_gen);
    assert_int_equal(n_paused, 0);
    fp8d_stream_free(st);
    fp8d_close(c);
    stop(&f);
}

/* Raw messages: garbage, oversized, wrong version, multi-frame, reply ops; the daemon
 * answers each with an error and keeps serving. */
static int raw_roundtrip(void *d, const void *buf, size_t len, int flags_more_frame,
                         struct fp8_msg *r)
{
    if (flags_more_frame)
        zmq_send(d, "x", 1, ZMQ_SNDMORE);
    zmq_send(d, buf, len, 0);
    static char in[1 << 16];
    int n = zmq_recv(d, in, sizeof(in), 0);
    if (n < 0)
        return -errno;
    return fp8_msg_decode(in, (size_t)n, FP8_MSG_DIR_REPLY, r, NULL);
}

static void test_malformed(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    void *ctx = zmq_ctx_new(), *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, to = TIMEOUT_MS;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(d, ZMQ_RCVTIMEO, &to, sizeof(to));
    assert_int_equal(zmq_connect(d, f.endpoint), 0);
    struct fp8_msg r;

    assert_int_equal(raw_roundtrip(d, "\xc1garbage", 8, 0, &r), 0);
    assert_int_equal(r.op, FP8_MSG_OP_ERROR);
    assert_int_equal(r.u.error.code, FP8_MSG_ERRC_BAD_REQUEST);
    assert_int_equal(r.id, 0);
    fp8_msg_free(&r);

    /* {v: 9, op: "ping", id: 5} */
    static const char v9[] = "\x83\xa1v\x09\xa2op\xa4ping\xa2id\x05";
    assert_int_equal(raw_roundtrip(d, v9, sizeof(v9) - 1, 0, &r), 0);
    assert_int_equal(r.u.error.code, FP8_MSG_ERRC_UNSUPPORTED);
    assert_int_equal(r.id, 5);
    assert_non_null(strstr(r.u.error.message.s, "version 1"));
    assert_non_null(strstr(r.u.error.message.s, "9"));
    fp8_msg_free(&r);

    /* a reply op sent as a request */
    static const char pong[] = "\x83\xa1v\x01\xa2op\xa4pong\xa2id\x06";
    assert_int_equal(raw_roundtrip(d, pong, sizeof(pong) - 1, 0, &r), 0);
    assert_int_equal(r.u.error.code, FP8_MSG_ERRC_UNSUPPORTED);
    fp8_msg_free(&r);

    /* two frames */
    static const char ping[] = "\x83\xa1v\x01\xa2op\xa4ping\xa2id\x07";
    assert_int_equal(raw_roundtrip(d, ping, sizeof(ping) - 1, 1, &r), 0);
    assert_int_equal(r.u.error.code, FP8_MSG_ERRC_BAD_REQUEST);
    assert_non_null(strstr(r.u.error.message.s, "single frame"));
    fp8_msg_free(&r);

    /* a message over the protocol's 8 MiB: too_long */
    size_t big = FP8_MSG_MAX_BYTES + 100;
    char *huge = calloc(1, big);
    memcpy(huge, ping, sizeof(ping) - 1);
    assert_int_equal(raw_roundtrip(d, huge, big, 0, &r), 0);
    assert_int_equal(r.u.error.code, FP8_MSG_ERRC_TOO_LONG);
    fp8_msg_free(&r);
    free(huge);

    /* a generate before hello */
    static const char gen[] = "\x84\xa1v\x01\xa2op\xa8generate\xa2id\x08\xa6prompt\xa1x";
    assert_int_equal(raw_roundtrip(d, gen, sizeof(gen) - 1, 0, &r), 0);
    assert_int_equal(r.u.error.code, FP8_MSG_ERRC_BAD_REQUEST);
    assert_int_equal(r.id, 8);
    fp8_msg_free(&r);

    /* still alive */
    assert_int_equal(raw_roundtrip(d, ping, sizeof(ping) - 1, 0, &r), 0);
    assert_int_equal(r.op, FP8_MSG_OP_PONG);
    assert_int_equal(r.id, 7);
    fp8_msg_free(&r);
    zmq_close(d);
    zmq_ctx_term(ctx);
    stop(&f);
}

/* Shutdown mid-stream: the client reads what was published, then gets shutting_down; a
 * session that never mapped its segment has the name removed. */
static void test_shutdown(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    fp8d_client *c;
    fp8d_stream *st;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "!hold", NULL, &st), 0);
    struct fp8d_token t;
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), 1);

    /* a raw hello asking for shared memory, never attaching */
    void *ctx = zmq_ctx_new(), *d = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, to = TIMEOUT_MS;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(d, ZMQ_RCVTIMEO, &to, sizeof(to));
    assert_int_equal(zmq_connect(d, f.endpoint), 0);
    struct fp8_msg m, r;
    void *buf;
    size_t len;
    fp8_msg_init(&m, FP8_MSG_OP_HELLO, 1);
    assert_int_equal(fp8_msg_encode(&m, &buf, &len, NULL), 0);
    assert_int_equal(raw_roundtrip(d, buf, len, 0, &r), 0);
    free(buf);
    assert_int_equal(r.op, FP8_MSG_OP_WELCOME);
    char shm_path[128];
    snprintf(shm_path, sizeof(shm_path), "/dev/shm%s", r.u.welcome.shm.s);
    fp8_msg_free(&r);
    assert_int_equal(access(shm_path, F_OK), 0);

    fp8d_server_stop(f.srv);
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), -ESHUTDOWN);
    pthread_join(f.thread, NULL);
    assert_int_equal(f.run_rc, 0);
    assert_int_equal(access(shm_path, F_OK), -1);
    fp8d_stream_free(st);
    fp8d_close(c);
    zmq_close(d);
    zmq_ctx_term(ctx);
    fp8d_server_free(f.srv);
    rmdir(f.dir);
}

/* sd_notify: READY, STATUS, WATCHDOG and STOPPING on a NOTIFY_SOCKET of our own. */
static bool notify_wait(int fd, const char *what, int64_t limit_ms)
{
    int64_t t0 = now_ms();
    char buf[1024];
    while (now_ms() - t0 < limit_ms) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(limit_ms - (now_ms() - t0))) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
            continue;
        buf[n] = 0;
        if (strstr(buf, what))
            return true;
    }
    return false;
}

static void test_systemd_notify(void **state)
{
    (void)state;
    char sock[108];
    snprintf(sock, sizeof(sock), "/tmp/fp8d-test-notify-%d", (int)getpid());
    unlink(sock);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strcpy(a.sun_path, sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("NOTIFY_SOCKET", sock, 1);
    setenv("WATCHDOG_USEC", "150000", 1);
    setenv("WATCHDOG_PID", pid, 1);
    struct fixture f;
    start(&f, NULL);
    assert_true(notify_wait(fd, "READY=1", TIMEOUT_MS));
    fp8d_client *c;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_true(notify_wait(fd, "STATUS=serving stub: 1 sessions", TIMEOUT_MS));
    assert_true(notify_wait(fd, "WATCHDOG=1", TIMEOUT_MS));
    assert_true(notify_wait(fd, "WATCHDOG=1", TIMEOUT_MS)); /* again: it keeps petting */
    fp8d_close(c);
    fp8d_server_stop(f.srv);
    assert_true(notify_wait(fd, "STOPPING=1", TIMEOUT_MS));
    pthread_join(f.thread, NULL);
    fp8d_server_free(f.srv);
    rmdir(f.dir);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    close(fd);
    unlink(sock);
}

static void test_second_daemon_refused(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    struct fp8d_server_opts o;
    fp8d_server_opts_init(&o);
    o.endpoint = f.endpoint;
    struct fp8d_server *s2 = NULL;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8d_server_create(&s2, &o, &f.be, &err), -EADDRINUSE);
    assert_non_null(strstr(err.msg, "another daemon"));
    stop(&f);
}

/* Access control: the socket file's mode (0600, 0660 for a system daemon) and the peer
 * credential filter (a uid that is not ours cannot get through; ours can). */
static void test_access(void **state)
{
    (void)state;
    for (int system = 0; system < 2; system++) {
        struct fixture f;
        struct fp8d_server_opts o;
        fp8d_server_opts_init(&o);
        o.system = system;
        o.allow_uids[o.n_allow_uids++] = (uint32_t)getuid() + 4242;
        if (system)
            o.allow_uids[o.n_allow_uids++] = (uint32_t)getuid();
        start(&f, &o);
        char path[160];
        snprintf(path, sizeof(path), "%s/d.sock", f.dir);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, system ? 0660 : 0600);
        fp8d_client *c = NULL;
        int rc = fp8d_connect(f.endpoint, 0, system ? TIMEOUT_MS : 300, &c);
        if (system)
            assert_int_equal(rc, 0);
        else /* the filter closes the connection unread: lost, or no answer in time */
            assert_true(rc == -ECONNRESET || rc == -ETIMEDOUT);
        fp8d_close(c);
        stop(&f);
    }
}

/* tcp:// (a wildcard port, resolved by the server): no shared memory, tokens as chunks. */
/* Another session of the same user cancels a generation by the daemon-wide handle that
 * `accepted` carried; unknown, finished and zero handles are refused with a clear error.
 * Other uids: test_cancel_by_handle_other_uid. */
static void test_cancel_by_handle(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    fp8d_client *c, *other;
    fp8d_stream *st, *st2;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &other), 0);
    assert_int_equal(fp8d_generate(c, "!hold", NULL, &st), 0);
    assert_int_equal(fp8d_generate(c, "!also", NULL, &st2), 0);
    uint64_t h = fp8d_stream_handle(st), h2 = fp8d_stream_handle(st2);
    assert_true(h != 0 && h2 != 0 && h != h2);
    struct fp8d_token t;
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), 1);
    assert_int_equal(fp8d_cancel_handle(other, h), 0);
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), -ECANCELED);
    /* the other generation of that session runs on */
    assert_int_equal(fp8d_stream_next(st2, &t, TIMEOUT_MS), 1);
    assert_int_equal(t.id, '!');
    assert_true(wait_counters(f.endpoint, 2, 1, TIMEOUT_MS) >= 0);
    assert_int_equal(fp8d_cancel_handle(other, h), -EINVAL); /* already ended */
    assert_non_null(strstr(fp8d_last_error(other), "no running generation with handle"));
    assert_int_equal(fp8d_cancel_handle(other, h2 + 1000), -EINVAL);
    assert_int_equal(fp8d_cancel_handle(other, 0), -EINVAL);
    fp8d_stream_free(st);
    fp8d_stream_free(st2);
    fp8d_close(other);
    fp8d_close(c);
    stop(&f);
}

/* As root (skipped otherwise): a process of uid 65534 cannot cancel root's generation by
 * its handle, and root can cancel the other user's. */
static void test_cancel_by_handle_other_uid(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    struct fixture f;
    start(&f, NULL);
    char path[160];
    snprintf(path, sizeof(path), "%s/d.sock", f.dir);
    assert_int_equal(chmod(f.dir, 0755), 0);
    assert_int_equal(chmod(path, 0666), 0);
    fp8d_client *c;
    fp8d_stream *st;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "!root", NULL, &st), 0);
    uint64_t h = fp8d_stream_handle(st);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        fp8d_client *o;
        fp8d_stream *s2;
        struct fp8d_token t;
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(10);
        if (fp8d_connect(f.endpoint, FP8D_CONNECT_NO_SHM, TIMEOUT_MS, &o) < 0)
            _exit(11);
        if (fp8d_cancel_handle(o, h) != -EINVAL) /* root's: refused */
            _exit(12);
        if (fp8d_generate(o, "!nobody", NULL, &s2) < 0)
            _exit(13);
        uint64_t h2 = fp8d_stream_handle(s2);
        if (write(pfd[1], &h2, sizeof(h2)) != (ssize_t)sizeof(h2))
            _exit(14);
        int rc;
        while ((rc = fp8d_stream_next(s2, &t, TIMEOUT_MS)) == 1)
            ;
        _exit(rc == -ECANCELED ? 0 : 15); /* root cancelled it */
    }
    close(pfd[1]);
    uint64_t h2 = 0;
    assert_int_equal(read(pfd[0], &h2, sizeof(h2)), (ssize_t)sizeof(h2));
    close(pfd[0]);
    assert_true(h2 != 0 && h2 != h);
    assert_int_equal(fp8d_cancel_handle(c, h2), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* root's own generation was not touched */
    struct fp8d_token t;
    assert_int_equal(fp8d_stream_next(st, &t, TIMEOUT_MS), 1);
    assert_int_equal(t.id, '!');
    assert_true(wait_counters(f.endpoint, 1, 1, TIMEOUT_MS) >= 0);
    fp8d_stream_free(st);
    fp8d_close(c);
    stop(&f);
}

static void test_tcp(void **state)
{
    (void)state;
    struct fp8_err err = {{0}};
    struct fp8d_server_opts o;
    fp8d_server_opts_init(&o);
    o.endpoint = "tcp://127.0.0.1:*";
    struct fixture f = {.be = stub_backend()};
    assert_int_equal(fp8d_server_create(&f.srv, &o, &f.be, &err), 0);
    snprintf(f.endpoint, sizeof(f.endpoint), "%s", fp8d_server_endpoint(f.srv));
    assert_non_null(strstr(f.endpoint, "tcp://127.0.0.1:"));
    assert_null(strchr(f.endpoint, '*'));
    assert_int_equal(pthread_create(&f.thread, NULL, serve, &f), 0);
    fp8d_client *c;
    fp8d_stream *st;
    assert_int_equal(fp8d_connect(f.endpoint, 0, TIMEOUT_MS, &c), 0);
    struct fp8d_sampling sp;
    fp8d_sampling_init(&sp);
    sp.max_tokens = 7;
    assert_int_equal(fp8d_generate(c, "tcp", &sp, &st), 0);
    char text[64];
    int32_t ids[64];
    int n;
    assert_int_equal(read_all(st, text, sizeof(text), ids, &n), 0);
    assert_string_equal(text, "tcptcpt");
    fp8d_stream_free(st);
    /* no peer uid over tcp: cancel by handle is refused, saying why */
    assert_int_equal(fp8d_generate(c, "!hold", NULL, &st), 0);
    assert_true(fp8d_stream_handle(st) != 0);
    assert_int_equal(fp8d_cancel_handle(c, fp8d_stream_handle(st)), -EOPNOTSUPP);
    assert_non_null(strstr(fp8d_last_error(c), "ipc://"));
    fp8d_stream_free(st);
    fp8d_close(c);
    fp8d_server_stop(f.srv);
    pthread_join(f.thread, NULL);
    assert_int_equal(f.run_rc, 0);
    fp8d_server_free(f.srv);
}

/* The daemon's last messages come before its disconnect: a client that looks only after
 * the daemon is gone still gets shutting_down, not a lost connection. */
static void test_shutdown_then_read(void **state)
{
    (void)state;
    struct fixture f;
    start(&f, NULL);
    fp8d_client *c[2];
    fp8d_stream *st[2];
    struct fp8d_token t;
    for (int i = 0; i < 2; i++) { /* ring, then chunks */
        assert_int_equal(fp8d_connect(f.endpoint, i ? FP8D_CONNECT_NO_SHM : 0, TIMEOUT_MS,
                                      &c[i]), 0);
        assert_int_equal(fp8d_generate(c[i], "!hold", NULL, &st[i]), 0);
        assert_int_equal(fp8d_stream_next(st[i], &t, TIMEOUT_MS), 1);
    }
    fp8d_server_stop(f.srv);
    pthread_join(f.thread, NULL);
    assert_int_equal(f.run_rc, 0);
    fp8d_server_free(f.srv); /* socket closed: the disconnect is on its way too */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fp8d_stream_next(st[i], &t, TIMEOUT_MS), -ESHUTDOWN);
        fp8d_stream_free(st[i]);
        fp8d_close(c[i]);
    }
    rmdir(f.dir);
}

int main(void)
{
    fp8d_log_open(false, NULL, getenv("FP8D_TEST_VERBOSE") ? FP8D_LOG_DEBUG : FP8D_LOG_ERR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_ring_and_chunks),
        cmocka_unit_test(test_cancel_mid_stream),
        cmocka_unit_test(test_client_killed),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_stalled_reader_resumes),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_systemd_notify),
        cmocka_unit_test(test_second_daemon_refused),
        cmocka_unit_test(test_access),
        cmocka_unit_test(test_cancel_by_handle),
        cmocka_unit_test(test_cancel_by_handle_other_uid),
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_shutdown_then_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
