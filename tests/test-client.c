/* libfp8d against a small fake daemon: a ZeroMQ ROUTER in a thread that speaks the
 * protocol with ipc/ (welcome with a shared-memory segment, tokens through the ring or as
 * chunks). The fake "model" echoes: each prompt byte becomes one token whose id is the
 * byte and whose text is that byte, so every expected value is written down by hand. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "client/fp8d.h"
#include "ipc/protocol.h"
#include "ipc/ring.h"
#include "ipc/segment.h"
#include "ipc/shm.h"

#define N_SLOTS 2
#define SLOT_BYTES 4096
#define TIMEOUT_MS 10000

struct fake {
    char endpoint[128];
    void *ctx;
    void *sock;
    pthread_t thread;
    atomic_int stop;
    uint8_t ident[256];
    size_t ident_len;
    bool has_shm;
    struct fp8_seg seg;
    char shm_name[FP8_SHM_NAME_LEN + 1];
    atomic_int unlinked;
    /* the open-ended generation ("forever"), waiting for its cancel */
    uint64_t forever_id;
    int32_t forever_slot;
    bool forever_open;
    /* what the last generate asked for, for the sampling test */
    struct fp8_msg_sampling last_sampling;
    uint32_t last_n_stop;
    char last_stop0[32];
    atomic_int cancels;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void reply(struct fake *f, struct fp8_msg *m)
{
    void *buf;
    size_t len;
    struct fp8_err err;
    if (fp8_msg_encode(m, &buf, &len, &err) < 0) {
        fprintf(stderr, "fake: encode: %s\n", err.msg);
        abort();
    }
    zmq_send(f->sock, f->ident, f->ident_len, ZMQ_SNDMORE);
    zmq_send(f->sock, buf, len, 0);
    free(buf);
}

static void reply_error(struct fake *f, uint64_t id, enum fp8_msg_errc code, const char *text)
{
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_ERROR, id);
    m.u.error.code = code;
    m.u.error.message = (struct fp8_msg_str){text, (uint32_t)strlen(text)};
    reply(f, &m);
}

/* Publishes a token (or, with final, ends the stream), waiting (bounded) while the client
 * has not made room: backpressure. */
static void publish(struct fake *f, int32_t slot, bool final, int32_t token, uint16_t aux,
                    const void *text, uint32_t len)
{
    int64_t deadline = now_ms() + TIMEOUT_MS;
    int rc;
    while ((rc = final ? fp8_seg_slot_close(&f->seg, (uint32_t)slot, aux)
                       : fp8_seg_publish(&f->seg, (uint32_t)slot, token, text, len)) == -EAGAIN &&
           now_ms() < deadline)
        sched_yield();
    if (rc < 0) {
        fprintf(stderr, "fake: publish: %s\n", strerror(-rc));
        abort();
    }
}

static const struct fp8_msg_model fake_model = {
    .name = {"echo", 4}, .arch = {"qwen3", 5}, .backend = {"ref", 3}, .weights = {"fp8", 3},
    .kv_cache_dtype = {"fp8", 3}, .vocab_size = 256, .max_model_len = 4096,
    .max_num_seqs = N_SLOTS,
};

static void on_hello(struct fake *f, const struct fp8_msg *req)
{
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_WELCOME, req->id);
    m.u.welcome.session = 1;
    m.u.welcome.server = (struct fp8_msg_str){"fake-0", 6};
    m.u.welcome.model = fake_model;
    /* one session at a time: a new hello starts over */
    fp8_seg_free(&f->seg);
    f->has_shm = false;
    f->forever_open = false;
    if (req->u.hello.shm) {
        if (fp8_seg_create(&f->seg, N_SLOTS, SLOT_BYTES, 0600, NULL) < 0)
            abort();
        f->has_shm = true;
        memcpy(f->shm_name, f->seg.shm.name, sizeof(f->shm_name));
        m.u.welcome.shm = (struct fp8_msg_str){f->seg.shm.name, FP8_SHM_NAME_LEN};
        m.u.welcome.shm_bytes = f->seg.geom.total_bytes;
    }
    reply(f, &m);
}

static void on_generate(struct fake *f, const struct fp8_msg *req)
{
    const struct fp8_msg_generate *g = &req->u.generate;
    f->last_sampling = g->sampling;
    f->last_n_stop = g->n_stop;
    f->last_stop0[0] = '\0';
    if (g->n_stop)
        snprintf(f->last_stop0, sizeof(f->last_stop0), "%s", g->stop[0].s);

    const uint8_t *bytes = NULL;
    uint32_t n = 0;
    if (g->kind == FP8_MSG_PROMPT_TEXT)
        bytes = (const uint8_t *)g->prompt.s, n = g->prompt.len;
    else if (g->kind == FP8_MSG_PROMPT_CHAT)
        bytes = (const uint8_t *)g->messages[g->n_messages - 1].content.s,
        n = g->messages[g->n_messages - 1].content.len;
    else
        n = g->tokens.n;
    if (g->kind == FP8_MSG_PROMPT_TEXT && n == 6 && !memcmp(bytes, "refuse", 6)) {
        reply_error(f, req->id, FP8_MSG_ERRC_BUSY, "no free slot (test)");
        return;
    }
    bool forever = g->kind == FP8_MSG_PROMPT_TEXT && n == 7 && !memcmp(bytes, "forever", 7);

    int32_t slot = -1;
    if (f->has_shm) {
        slot = fp8_seg_slot_acquire(&f->seg);
        if (slot < 0) {
            reply_error(f, req->id, FP8_MSG_ERRC_BUSY, "all slots streaming (test)");
            return;
        }
    }
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_ACCEPTED, req->id);
    m.u.accepted.slot = slot;
    m.u.accepted.prompt_tokens = n;
    reply(f, &m);

    uint32_t out = forever ? 3 : n;
    if (g->sampling.set & FP8_MSG_SAMPLING_MAX_TOKENS && g->sampling.max_tokens < out)
        out = g->sampling.max_tokens;
    for (uint32_t i = 0; i < out; i++) {
        char text[16];
        int32_t tok;
        uint32_t len;
        if (bytes) {
            tok = bytes[i];
            text[0] = (char)bytes[i];
            len = 1;
        } else {
            tok = g->tokens.ids[i];
            len = (uint32_t)snprintf(text, sizeof(text), "<%d>", tok);
        }
        if (slot >= 0)
            publish(f, slot, false, tok, 0, text, len);
        else {
            fp8_msg_init(&m, FP8_MSG_OP_CHUNK, req->id);
            m.u.chunk.tokens = (struct fp8_msg_ids){&tok, 1};
            m.u.chunk.text = (struct fp8_msg_str){text, len};
            reply(f, &m);
        }
    }
    if (forever) {
        f->forever_id = req->id;
        f->forever_slot = slot;
        f->forever_open = true;
        return;
    }
    if (slot >= 0)
        publish(f, slot, true, -1, FP8_MSG_RING_END_LENGTH, NULL, 0);
    fp8_msg_init(&m, FP8_MSG_OP_DONE, req->id);
    m.u.done = (struct fp8_msg_done){
        .finish = FP8_MSG_FINISH_LENGTH, .prompt_tokens = n, .completion_tokens = out,
        .queue_us = 1, .prefill_us = 2, .decode_us = 3,
    };
    reply(f, &m);
}

static void on_cancel(struct fake *f, const struct fp8_msg *req)
{
    atomic_fetch_add(&f->cancels, 1);
    if (f->forever_open && req->u.cancel.target == f->forever_id) {
        f->forever_open = false;
        if (f->forever_slot >= 0)
            publish(f, f->forever_slot, true, -1, FP8_MSG_RING_END_CANCELLED, NULL, 0);
        reply_error(f, f->forever_id, FP8_MSG_ERRC_CANCELLED, "cancelled by client (test)");
    }
    struct fp8_msg m;
    fp8_msg_init(&m, FP8_MSG_OP_OK, req->id);
    reply(f, &m);
}

static void handle(struct fake *f, const struct fp8_msg *req)
{
    struct fp8_msg m;
    /* the client has had the welcome and mapped the segment by now: unlink it */
    if (f->has_shm)
        atomic_store(&f->unlinked, fp8_seg_unlink_if_attached(&f->seg));
    switch (req->op) {
    case FP8_MSG_OP_HELLO: on_hello(f, req); break;
    case FP8_MSG_OP_GENERATE: on_generate(f, req); break;
    case FP8_MSG_OP_CANCEL: on_cancel(f, req); break;
    case FP8_MSG_OP_TOKENIZE: {
        const struct fp8_msg_tokenize *t = &req->u.tokenize;
        int32_t ids[64];
        uint32_t n = 0;
        if (t->add_special)
            ids[n++] = 1000;
        for (uint32_t i = 0; i < t->text.len && n < 64; i++)
            ids[n++] = (uint8_t)t->text.s[i];
        fp8_msg_init(&m, FP8_MSG_OP_TOKENS, req->id);
        m.u.tokens = (struct fp8_msg_ids){ids, n};
        reply(f, &m);
        break;
    }
    case FP8_MSG_OP_DETOKENIZE: {
        char text[64];
        uint32_t n = 0;
        for (uint32_t i = 0; i < req->u.detokenize.n && n < 64; i++)
            text[n++] = (char)req->u.detokenize.ids[i];
        fp8_msg_init(&m, FP8_MSG_OP_TEXT, req->id);
        m.u.text = (struct fp8_msg_str){text, n};
        reply(f, &m);
        break;
    }
    case FP8_MSG_OP_INFO:
        fp8_msg_init(&m, FP8_MSG_OP_MODEL, req->id);
        m.u.model = fake_model;
        reply(f, &m);
        break;
    default:
        fp8_msg_init(&m, FP8_MSG_OP_OK, req->id);
        reply(f, &m);
        break;
    }
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        zmq_pollitem_t item = {.socket = f->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 20) <= 0)
            continue;
        uint8_t payload[65536];
        int n = zmq_recv(f->sock, f->ident, sizeof(f->ident), 0);
        if (n < 0)
            continue;
        f->ident_len = (size_t)n;
        n = zmq_recv(f->sock, payload, sizeof(payload), 0);
        struct fp8_msg req;
        struct fp8_err err;
        if (n < 0 || fp8_msg_decode(payload, (size_t)n, FP8_MSG_DIR_REQUEST, &req, &err) < 0) {
            reply_error(f, 0, FP8_MSG_ERRC_BAD_REQUEST, "fake: undecodable");
            continue;
        }
        handle(f, &req);
        fp8_msg_free(&req);
    }
    return NULL;
}

static int fake_start(void **state)
{
    static int n;
    struct fake *f = calloc(1, sizeof(*f));
    snprintf(f->endpoint, sizeof(f->endpoint), "ipc:///tmp/fp8d-test-client-%d-%d.sock",
             (int)getpid(), n++);
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_bind(f->sock, f->endpoint) < 0)
        return -1;
    /* the socket moves to the server thread; pthread_create is the barrier ZeroMQ asks for */
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0)
        return -1;
    *state = f;
    return 0;
}

/* The daemon goes away: its thread stops and its socket closes. */
static void fake_kill(struct fake *f)
{
    if (!f->sock)
        return;
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    f->sock = NULL;
}

static int fake_stop(void **state)
{
    struct fake *f = *state;
    fake_kill(f);
    zmq_ctx_term(f->ctx);
    unlink(f->endpoint + strlen("ipc://"));
    fp8_seg_free(&f->seg);
    free(f);
    return 0;
}

/* Reads a stream to its end; returns the final code and the text in buf. */
static int read_all(fp8d_stream *s, char *buf, size_t cap, int32_t *ids, size_t *n)
{
    struct fp8d_token t;
    size_t len = 0, k = 0;
    int rc;
    while ((rc = fp8d_stream_next(s, &t, TIMEOUT_MS)) == 1) {
        assert_true(len + t.text_len < cap);
        memcpy(buf + len, t.text, t.text_len);
        len += t.text_len;
        if (ids)
            ids[k] = t.id;
        k++;
    }
    buf[len] = '\0';
    if (n)
        *n = k;
    return rc;
}

static void check_hello_stream(fp8d_client *c)
{
    fp8d_stream *s;
    char text[64];
    int32_t ids[16];
    size_t n;
    struct fp8d_result r;
    assert_int_equal(fp8d_generate(c, "hello", NULL, &s), 0);
    assert_int_equal(fp8d_stream_result(s, &r), -EAGAIN);
    assert_int_equal(read_all(s, text, sizeof(text), ids, &n), 0);
    assert_string_equal(text, "hello");
    assert_int_equal(n, 5);
    assert_int_equal(ids[0], 'h');
    assert_int_equal(ids[4], 'o');
    struct fp8d_token t;
    assert_int_equal(fp8d_stream_next(s, &t, 0), 0); /* stays finished */
    assert_int_equal(fp8d_stream_result(s, &r), 0);
    assert_int_equal(r.finish, FP8D_FINISH_LENGTH);
    assert_int_equal(r.prompt_tokens, 5);
    assert_int_equal(r.completion_tokens, 5);
    assert_int_equal(r.queue_us, 1);
    assert_int_equal(r.prefill_us, 2);
    assert_int_equal(r.decode_us, 3);
    fp8d_stream_free(s);

    struct fp8d_message chat[2] = {{"system", "be brief"}, {"user", "hey"}};
    assert_int_equal(fp8d_chat(c, chat, 2, NULL, &s), 0);
    assert_int_equal(read_all(s, text, sizeof(text), NULL, NULL), 0);
    assert_string_equal(text, "hey");
    fp8d_stream_free(s);

    int32_t prompt[2] = {7, 300};
    assert_int_equal(fp8d_generate_tokens(c, prompt, 2, NULL, &s), 0);
    assert_int_equal(read_all(s, text, sizeof(text), ids, &n), 0);
    assert_string_equal(text, "<7><300>");
    assert_int_equal(ids[1], 300);
    fp8d_stream_free(s);
}

static void test_generate_ring(void **state)
{
    struct fake *f = *state;
    fp8d_client *c;
    struct fp8d_info info;
    assert_int_equal(fp8d_connect(f->endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_true(f->has_shm);
    assert_int_equal(fp8d_info(c, &info), 0);
    assert_string_equal(info.name, "echo");
    assert_string_equal(info.arch, "qwen3");
    assert_string_equal(info.server_version, "fake-0");
    assert_int_equal(info.vocab_size, 256);
    assert_int_equal(info.max_num_seqs, N_SLOTS);
    /* the segment was unlinked once the client had mapped it */
    assert_int_equal(atomic_load(&f->unlinked), 1);
    assert_int_equal(shm_open(f->shm_name, O_RDONLY, 0), -1);
    assert_int_equal(errno, ENOENT);
    check_hello_stream(c);
    fp8d_close(c);
}

static void test_generate_chunks(void **state)
{
    struct fake *f = *state;
    fp8d_client *c;
    assert_int_equal(fp8d_connect(f->endpoint, FP8D_CONNECT_NO_SHM, TIMEOUT_MS, &c), 0);
    assert_false(f->has_shm);
    check_hello_stream(c);
    fp8d_close(c);
}

/* 2000 tokens through a 4096-byte ring: the fake daemon is paused by a full ring many
 * times and nothing is lost or repeated. */
static void test_long_stream(void **state)
{
    struct fake *f = *state;
    fp8d_client *c;
    fp8d_stream *s;
    char prompt[2001], text[2001];
    for (int i = 0; i < 2000; i++)
        prompt[i] = (char)('a' + i % 26);
    prompt[2000] = '\0';
    assert_int_equal(fp8d_connect(f->endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, prompt, NULL, &s), 0);
    assert_int_equal(read_all(s, text, sizeof(text), NULL, NULL), 0);
    assert_string_equal(text, prompt);
    fp8d_stream_free(s);
    fp8d_close(c);
}

static void test_sampling_and_errors(void **state)
{
    struct fake *f = *state;
    fp8d_client *c;
    fp8d_stream *s = NULL;
    char text[64];
    assert_int_equal(fp8d_connect(f->endpoint, 0, TIMEOUT_MS, &c), 0);

    struct fp8d_sampling sp;
    const char *stop[] = {"\n\n"};
    fp8d_sampling_init(&sp);
    sp.max_tokens = 3;
    sp.temperature = 0.5f;
    sp.has_seed = 1;
    sp.seed = 7;
    sp.stop = stop;
    sp.n_stop = 1;
    assert_int_equal(fp8d_generate(c, "sampling", &sp, &s), 0);
    assert_int_equal(read_all(s, text, sizeof(text), NULL, NULL), 0);
    assert_string_equal(text, "sam");
    fp8d_stream_free(s);
    assert_int_equal(f->last_sampling.set, FP8_MSG_SAMPLING_MAX_TOKENS |
                                               FP8_MSG_SAMPLING_TEMPERATURE |
                                               FP8_MSG_SAMPLING_SEED);
    assert_true(f->last_sampling.temperature == 0.5f);
    assert_int_equal(f->last_sampling.seed, 7);
    assert_int_equal(f->last_n_stop, 1);
    assert_string_equal(f->last_stop0, "\n\n");

    s = NULL;
    assert_int_equal(fp8d_generate(c, "refuse", NULL, &s), -EBUSY);
    assert_null(s);
    assert_string_equal(fp8d_last_error(c), "no free slot (test)");

    sp.temperature = 200.0f; /* refused before it is sent */
    assert_int_equal(fp8d_generate(c, "x", &sp, &s), -EINVAL);
    assert_non_null(strstr(fp8d_last_error(c), "temperature: 200 is not in [0, 100]"));
    assert_null(s);

    int32_t *ids;
    size_t n;
    assert_int_equal(fp8d_tokenize(c, "a\0b", 3, 0, &ids, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 'a');
    assert_int_equal(ids[1], 0);
    assert_int_equal(ids[2], 'b');
    free(ids);
    assert_int_equal(fp8d_tokenize(c, "hi", 2, 1, &ids, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1000);
    free(ids);
    const int32_t hi[] = {'h', 'i'};
    char *out;
    size_t len;
    assert_int_equal(fp8d_detokenize(c, hi, 2, &out, &len), 0);
    assert_int_equal(len, 2);
    assert_string_equal(out, "hi");
    free(out);
    fp8d_close(c);
}

static void check_cancel(struct fake *f, unsigned flags)
{
    fp8d_client *c;
    fp8d_stream *s;
    struct fp8d_token t;
    struct fp8d_result r;
    assert_int_equal(fp8d_connect(f->endpoint, flags, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "forever", NULL, &s), 0);
    for (int i = 0; i < 3; i++) {
        int rc = fp8d_stream_next(s, &t, TIMEOUT_MS);
        if (rc != 1)
            fail_msg("flags %u token %d: %d %s", flags, i, rc, fp8d_last_error(c));
        assert_int_equal(t.id, "for"[i]);
    }
    assert_int_equal(fp8d_stream_next(s, &t, 0), -EAGAIN);
    assert_int_equal(fp8d_stream_next(s, &t, 1), -ETIMEDOUT);
    assert_int_equal(fp8d_cancel(s), 0);
    assert_int_equal(fp8d_stream_next(s, &t, TIMEOUT_MS), -ECANCELED);
    assert_string_equal(fp8d_last_error(c), "cancelled by client (test)");
    assert_int_equal(fp8d_stream_result(s, &r), -ECANCELED);
    fp8d_stream_free(s);

    /* freeing a running stream cancels it and drains it: the slot is reusable */
    int before = atomic_load(&f->cancels);
    assert_int_equal(fp8d_generate(c, "forever", NULL, &s), 0);
    fp8d_stream_free(s);
    assert_int_equal(atomic_load(&f->cancels), before + 1);
    check_hello_stream(c);
    fp8d_close(c);
}

static void test_cancel(void **state)
{
    check_cancel(*state, 0);
    check_cancel(*state, FP8D_CONNECT_NO_SHM);
}

/* Two generations in flight at once, on two ring slots, read alternately. */
static void test_two_streams(void **state)
{
    struct fake *f = *state;
    fp8d_client *c;
    fp8d_stream *a, *b;
    struct fp8d_token t;
    assert_int_equal(fp8d_connect(f->endpoint, 0, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "abc", NULL, &a), 0);
    assert_int_equal(fp8d_generate(c, "xyz", NULL, &b), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fp8d_stream_next(a, &t, TIMEOUT_MS), 1);
        assert_int_equal(t.id, "abc"[i]);
        assert_int_equal(fp8d_stream_next(b, &t, TIMEOUT_MS), 1);
        assert_int_equal(t.id, "xyz"[i]);
    }
    assert_int_equal(fp8d_stream_next(b, &t, TIMEOUT_MS), 0);
    assert_int_equal(fp8d_stream_next(a, &t, TIMEOUT_MS), 0);
    fp8d_stream_free(a);
    fp8d_stream_free(b);
    fp8d_close(c);
}

/* The daemon dies mid-stream: the reader gets -ECONNRESET instead of waiting out its
 * timeout, and the client refuses further requests at once. */
static void check_daemon_gone(unsigned flags)
{
    struct fake *f;
    fp8d_client *c;
    fp8d_stream *s;
    struct fp8d_token t;
    struct fp8d_info info;
    assert_int_equal(fake_start((void **)&f), 0);
    assert_int_equal(fp8d_connect(f->endpoint, flags, TIMEOUT_MS, &c), 0);
    assert_int_equal(fp8d_generate(c, "forever", NULL, &s), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fp8d_stream_next(s, &t, TIMEOUT_MS), 1);
    fake_kill(f);
    assert_int_equal(fp8d_stream_next(s, &t, TIMEOUT_MS), -ECONNRESET);
    assert_string_equal(fp8d_last_error(c), "connection to the daemon lost");
    assert_int_equal(fp8d_stream_next(s, &t, TIMEOUT_MS), -ECONNRESET);
    assert_int_equal(fp8d_info(c, &info), -ECONNRESET);
    fp8d_stream_free(s);
    fp8d_close(c);
    fake_stop((void **)&f);
}

static void test_daemon_gone(void **state)
{
    (void)state;
    check_daemon_gone(0);
    check_daemon_gone(FP8D_CONNECT_NO_SHM);
}

static void test_no_daemon(void **state)
{
    (void)state;
    fp8d_client *c = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(fp8d_connect("ipc:///tmp/fp8d-test-nobody-listens.sock", 0, 100, &c),
                     -ETIMEDOUT);
    assert_null(c);
    assert_true(now_ms() - t0 >= 100);
    assert_int_equal(fp8d_connect("bogus://x", 0, 100, &c), -EINVAL);
    assert_string_equal(fp8d_strerror(-ECANCELED), "generation cancelled");
    assert_string_equal(fp8d_strerror(-12345), "unknown error");
    fp8d_close(NULL);
    fp8d_stream_free(NULL);
}

/* Runs the fp8 CLI against the fake daemon; returns its exit status and its output. */
static int run_fp8(struct fake *f, const char *args, char *out, size_t cap)
{
    const char *build = getenv("FP8D_BUILD") ? getenv("FP8D_BUILD") : "build";
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/fp8 --endpoint %s --timeout %d %s 2>&1", build, f->endpoint,
             TIMEOUT_MS, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_cli(void **state)
{
    struct fake *f = *state;
    char out[1024];
    assert_int_equal(run_fp8(f, "generate --json --max-tokens 3 --seed 9 hello", out,
                             sizeof(out)), 0);
    assert_string_equal(out, "{\"tokens\":[104,101,108],\"text\":\"hel\","
                             "\"finish_reason\":\"length\","
                             "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3},"
                             "\"timings\":{\"queue_us\":1,\"prefill_us\":2,\"decode_us\":3}}\n");
    assert_int_equal(run_fp8(f, "generate 'hello world'", out, sizeof(out)), 0);
    assert_string_equal(out, "hello world\n");
    assert_int_equal(run_fp8(f, "--no-shm generate --tokens 7,300", out, sizeof(out)), 0);
    assert_string_equal(out, "<7><300>\n");
    assert_int_equal(run_fp8(f, "tokenize hi", out, sizeof(out)), 0);
    assert_string_equal(out, "[104, 105]\n");
    assert_int_equal(run_fp8(f, "info", out, sizeof(out)), 0);
    assert_non_null(strstr(out, "\"name\":\"echo\",\"arch\":\"qwen3\""));
    assert_int_equal(run_fp8(f, "chat --system 'be brief' < /dev/null", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    char input[] = "/tmp/fp8d-test-chat-XXXXXX", args[128];
    int fd = mkstemp(input);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hey\n\nyo\n", 8), 8); /* the empty line is skipped */
    close(fd);
    snprintf(args, sizeof(args), "chat < %s", input);
    assert_int_equal(run_fp8(f, args, out, sizeof(out)), 0);
    unlink(input);
    assert_string_equal(out, "hey\nyo\n"); /* the fake echoes each user turn */
    assert_int_equal(run_fp8(f, "generate refuse", out, sizeof(out)), 1);
    assert_string_equal(out, "fp8: generate: daemon busy, retry later (no free slot (test))\n");
    assert_int_equal(run_fp8(f, "generate --temperature hot x", out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--temperature: \"hot\" is not a number"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_ring, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_generate_chunks, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_long_stream, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_sampling_and_errors, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_cancel, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_two_streams, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(test_cli, fake_start, fake_stop),
        cmocka_unit_test(test_daemon_gone),
        cmocka_unit_test(test_no_daemon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
