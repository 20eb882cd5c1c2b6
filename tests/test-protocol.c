/* The msgpack protocol: every message survives encode -> decode with every field intact,
 * the encoder's bytes match a hand-assembled message, and hostile input (built here with
 * msgpack-c's own packer or by hand, never with the code under test) gets the documented
 * error code and a message naming the fault. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "ipc/protocol.h"

#define STR(lit) ((struct fp8_msg_str){lit, (uint32_t)sizeof(lit) - 1})

static void assert_str(struct fp8_msg_str got, struct fp8_msg_str want)
{
    assert_int_equal(got.len, want.len);
    if (want.len)
        assert_memory_equal(got.s, want.s, want.len);
    if (got.s) /* decoded strings are NUL-terminated */
        assert_int_equal(got.s[got.len], '\0');
}

static void assert_ids(struct fp8_msg_ids got, struct fp8_msg_ids want)
{
    assert_int_equal(got.n, want.n);
    for (uint32_t i = 0; i < want.n; i++)
        assert_int_equal(got.ids[i], want.ids[i]);
}

/* encode + decode in the direction the op travels; returns the decoded message. */
static struct fp8_msg round_trip(const struct fp8_msg *in)
{
    struct fp8_err err = {{0}};
    void *buf = NULL;
    size_t len = 0;
    int rc = fp8_msg_encode(in, &buf, &len, &err);
    if (rc)
        fail_msg("encode: %s", err.msg);
    struct fp8_msg out;
    enum fp8_msg_dir dir = in->op < FP8_MSG_OP_WELCOME ? FP8_MSG_DIR_REQUEST : FP8_MSG_DIR_REPLY;
    rc = fp8_msg_decode(buf, len, dir, &out, &err);
    if (rc)
        fail_msg("decode: %s", err.msg);
    free(buf);
    assert_int_equal(out.v, FP8_PROTO_VERSION);
    assert_int_equal(out.op, in->op);
    assert_int_equal(out.id, in->id);
    return out;
}

static void test_round_trip_requests(void **state)
{
    (void)state;
    struct fp8_msg m, o;

    fp8_msg_init(&m, FP8_MSG_OP_HELLO, 1);
    m.u.hello.client = STR("editor");
    m.u.hello.shm = false;
    o = round_trip(&m);
    assert_str(o.u.hello.client, STR("editor"));
    assert_false(o.u.hello.shm);
    fp8_msg_free(&o);

    /* text prompt with every sampling field and stop strings */
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 0xfedcba9876543210ull);
    struct fp8_msg_generate *g = &m.u.generate;
    struct fp8_msg_str stop[2] = {STR("\n\n"), STR("</s>")};
    g->kind = FP8_MSG_PROMPT_TEXT;
    g->prompt = STR("Hello, \xe4\xb8\x96\xe7\x95\x8c"); /* UTF-8 passes through */
    g->sampling = (struct fp8_msg_sampling){
        .set = FP8_MSG_SAMPLING_ALL, .max_tokens = 128, .temperature = 0.7f, .top_p = 0.95f,
        .top_k = 20, .min_p = 0.05f, .seed = UINT64_MAX,
    };
    g->stop = stop;
    g->n_stop = 2;
    g->ignore_eos = true;
    g->priority = -3;
    o = round_trip(&m);
    assert_int_equal(o.u.generate.kind, FP8_MSG_PROMPT_TEXT);
    assert_str(o.u.generate.prompt, g->prompt);
    assert_int_equal(o.u.generate.sampling.set, FP8_MSG_SAMPLING_ALL);
    assert_int_equal(o.u.generate.sampling.max_tokens, 128);
    assert_true(o.u.generate.sampling.temperature == 0.7f);
    assert_true(o.u.generate.sampling.top_p == 0.95f);
    assert_int_equal(o.u.generate.sampling.top_k, 20);
    assert_true(o.u.generate.sampling.min_p == 0.05f);
    assert_true(o.u.generate.sampling.seed == UINT64_MAX);
    assert_int_equal(o.u.generate.n_stop, 2);
    assert_str(o.u.generate.stop[0], stop[0]);
    assert_str(o.u.generate.stop[1], stop[1]);
    assert_true(o.u.generate.ignore_eos);
    assert_int_equal(o.u.generate.priority, -3);
    fp8_msg_free(&o);

    /* token ids, including the extremes, and only some sampling fields */
    int32_t ids[] = {0, 1, 127, 128, 65535, 65536, INT32_MAX};
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 2);
    g->kind = FP8_MSG_PROMPT_TOKENS;
    g->tokens = (struct fp8_msg_ids){ids, 7};
    g->sampling.set = FP8_MSG_SAMPLING_TEMPERATURE;
    g->sampling.temperature = 0.0f;
    o = round_trip(&m);
    assert_int_equal(o.u.generate.kind, FP8_MSG_PROMPT_TOKENS);
    assert_ids(o.u.generate.tokens, g->tokens);
    assert_int_equal(o.u.generate.sampling.set, FP8_MSG_SAMPLING_TEMPERATURE);
    assert_true(o.u.generate.sampling.temperature == 0.0f);
    assert_int_equal(o.u.generate.n_stop, 0);
    assert_false(o.u.generate.ignore_eos);
    fp8_msg_free(&o);

    /* chat messages with the template flags */
    struct fp8_msg_turn turns[2] = {{STR("system"), STR("Be brief.")},
                                    {STR("user"), STR("")}};
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 3);
    g->kind = FP8_MSG_PROMPT_CHAT;
    g->messages = turns;
    g->n_messages = 2;
    g->add_generation_prompt = false;
    g->enable_thinking = 0;
    o = round_trip(&m);
    assert_int_equal(o.u.generate.kind, FP8_MSG_PROMPT_CHAT);
    assert_int_equal(o.u.generate.n_messages, 2);
    assert_str(o.u.generate.messages[0].role, STR("system"));
    assert_str(o.u.generate.messages[0].content, STR("Be brief."));
    assert_str(o.u.generate.messages[1].role, STR("user"));
    assert_str(o.u.generate.messages[1].content, STR(""));
    assert_false(o.u.generate.add_generation_prompt);
    assert_int_equal(o.u.generate.enable_thinking, 0);
    assert_int_equal(o.u.generate.sampling.set, 0);
    fp8_msg_free(&o);
    g->enable_thinking = -1; /* absent on the wire, -1 again after decoding */
    o = round_trip(&m);
    assert_int_equal(o.u.generate.enable_thinking, -1);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_CANCEL, 4);
    m.u.cancel.target = 0xfedcba9876543210ull;
    o = round_trip(&m);
    assert_true(o.u.cancel.target == 0xfedcba9876543210ull);
    assert_true(o.u.cancel.handle == 0); /* absent: a cancel of this session's request */
    fp8_msg_free(&o);
    m.u.cancel.handle = 0x8000000000000001ull;
    o = round_trip(&m);
    assert_true(o.u.cancel.handle == 0x8000000000000001ull);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_TOKENIZE, 5);
    m.u.tokenize.text = STR("a\0b"); /* embedded NUL kept: lengths are explicit */
    m.u.tokenize.add_special = true;
    o = round_trip(&m);
    assert_str(o.u.tokenize.text, STR("a\0b"));
    assert_true(o.u.tokenize.add_special);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_DETOKENIZE, 6);
    m.u.detokenize = (struct fp8_msg_ids){ids, 7};
    o = round_trip(&m);
    assert_ids(o.u.detokenize, m.u.detokenize);
    fp8_msg_free(&o);

    enum fp8_msg_op bare[] = {FP8_MSG_OP_INFO, FP8_MSG_OP_STATS, FP8_MSG_OP_PING,
                              FP8_MSG_OP_BYE};
    for (size_t i = 0; i < 4; i++) {
        fp8_msg_init(&m, bare[i], 100 + i);
        o = round_trip(&m);
        fp8_msg_free(&o);
    }
}

static const struct fp8_msg_model test_model = {
    .name = STR("Qwen3-0.6B"), .arch = STR("qwen3"), .backend = STR("ref"),
    .weights = STR("fp8"), .kv_cache_dtype = STR("fp8"),
    .vocab_size = 151936, .max_model_len = 40960, .max_num_seqs = 32,
};

static void assert_model(const struct fp8_msg_model *m)
{
    assert_str(m->name, test_model.name);
    assert_str(m->arch, test_model.arch);
    assert_str(m->backend, test_model.backend);
    assert_str(m->weights, test_model.weights);
    assert_str(m->kv_cache_dtype, test_model.kv_cache_dtype);
    assert_int_equal(m->vocab_size, 151936);
    assert_int_equal(m->max_model_len, 40960);
    assert_int_equal(m->max_num_seqs, 32);
}

static void test_round_trip_replies(void **state)
{
    (void)state;
    struct fp8_msg m, o;
    int32_t ids[] = {9707, 11, 1879};

    fp8_msg_init(&m, FP8_MSG_OP_WELCOME, 1);
    m.u.welcome.session = 42;
    m.u.welcome.server = STR("0.1.0");
    m.u.welcome.model = test_model;
    m.u.welcome.shm = STR("/fp8d-00112233445566778899aabbccddeeff");
    m.u.welcome.shm_bytes = 4 << 20;
    o = round_trip(&m);
    assert_int_equal(o.u.welcome.session, 42);
    assert_str(o.u.welcome.server, STR("0.1.0"));
    assert_model(&o.u.welcome.model);
    assert_str(o.u.welcome.shm, m.u.welcome.shm);
    assert_int_equal(o.u.welcome.shm_bytes, 4 << 20);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_ACCEPTED, 2);
    m.u.accepted.slot = -1;
    m.u.accepted.prompt_tokens = 77;
    o = round_trip(&m);
    assert_int_equal(o.u.accepted.slot, -1);
    assert_int_equal(o.u.accepted.prompt_tokens, 77);
    assert_true(o.u.accepted.handle == 0); /* a daemon without handles */
    fp8_msg_free(&o);
    m.u.accepted.handle = 123456789012ull;
    o = round_trip(&m);
    assert_true(o.u.accepted.handle == 123456789012ull);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_CHUNK, 2);
    m.u.chunk.tokens = (struct fp8_msg_ids){ids, 3};
    m.u.chunk.text = STR("Hello, world");
    o = round_trip(&m);
    assert_ids(o.u.chunk.tokens, m.u.chunk.tokens);
    assert_str(o.u.chunk.text, STR("Hello, world"));
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_DONE, 2);
    m.u.done = (struct fp8_msg_done){
        .finish = FP8_MSG_FINISH_LENGTH, .prompt_tokens = 77, .completion_tokens = 128,
        .queue_us = 12, .prefill_us = 3456, .decode_us = 1ull << 40,
    };
    o = round_trip(&m);
    assert_int_equal(o.u.done.finish, FP8_MSG_FINISH_LENGTH);
    assert_int_equal(o.u.done.prompt_tokens, 77);
    assert_int_equal(o.u.done.completion_tokens, 128);
    assert_int_equal(o.u.done.queue_us, 12);
    assert_int_equal(o.u.done.prefill_us, 3456);
    assert_true(o.u.done.decode_us == 1ull << 40);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_TOKENS, 3);
    m.u.tokens = (struct fp8_msg_ids){ids, 3};
    o = round_trip(&m);
    assert_ids(o.u.tokens, m.u.tokens);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_TEXT, 4);
    m.u.text = STR("Hello, world");
    o = round_trip(&m);
    assert_str(o.u.text, STR("Hello, world"));
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_MODEL, 5);
    m.u.model = test_model;
    o = round_trip(&m);
    assert_model(&o.u.model);
    fp8_msg_free(&o);

    fp8_msg_init(&m, FP8_MSG_OP_COUNTERS, 6);
    m.u.counters = (struct fp8_msg_counters){1, 2, 3, 4, 5, 6000, 7ull << 33, 8};
    o = round_trip(&m);
    assert_int_equal(o.u.counters.running, 1);
    assert_int_equal(o.u.counters.waiting, 2);
    assert_int_equal(o.u.counters.sessions, 3);
    assert_int_equal(o.u.counters.kv_blocks_used, 4);
    assert_int_equal(o.u.counters.kv_blocks_total, 5);
    assert_int_equal(o.u.counters.uptime_ms, 6000);
    assert_true(o.u.counters.prompt_tokens == 7ull << 33);
    assert_int_equal(o.u.counters.generated_tokens, 8);
    fp8_msg_free(&o);

    for (int c = 0; c < FP8_MSG_ERRC_COUNT; c++) {
        fp8_msg_init(&m, FP8_MSG_OP_ERROR, 7);
        m.u.error.code = c;
        m.u.error.message = STR("prompt of 50000 tokens, the model takes 40960");
        o = round_trip(&m);
        assert_int_equal(o.u.error.code, c);
        assert_str(o.u.error.message, m.u.error.message);
        fp8_msg_free(&o);
    }

    enum fp8_msg_op bare[] = {FP8_MSG_OP_PONG, FP8_MSG_OP_OK};
    for (size_t i = 0; i < 2; i++) {
        fp8_msg_init(&m, bare[i], 200 + i);
        o = round_trip(&m);
        fp8_msg_free(&o);
    }
}

/* The wire form of a ping, assembled from the msgpack spec by hand. */
static void test_encode_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        0x83,                          /* fixmap, 3 entries */
        0xa1, 'v', 0x01,               /* "v": 1 */
        0xa2, 'o', 'p', 0xa4, 'p', 'i', 'n', 'g',
        0xa2, 'i', 'd', 0xcd, 0x12, 0x34, /* "id": uint16 0x1234 */
    };
    struct fp8_msg m;
    void *buf;
    size_t len;
    fp8_msg_init(&m, FP8_MSG_OP_PING, 0x1234);
    assert_int_equal(fp8_msg_encode(&m, &buf, &len, NULL), 0);
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    free(buf);
}

/* ---- hostile input, built with msgpack-c's packer ----------------------------------------- */

struct pk {
    msgpack_sbuffer sb;
    msgpack_packer p;
};

static void pk_init(struct pk *k)
{
    msgpack_sbuffer_init(&k->sb);
    msgpack_packer_init(&k->p, &k->sb, msgpack_sbuffer_write);
}

static void pk_str(struct pk *k, const char *s)
{
    msgpack_pack_str(&k->p, strlen(s));
    msgpack_pack_str_body(&k->p, s, strlen(s));
}

static void pk_raw(struct pk *k, const void *bytes, size_t n)
{
    msgpack_sbuffer_write(&k->sb, bytes, n);
}

/* Starts a request map of n_extra fields after v/op/id. */
static void pk_head(struct pk *k, uint32_t v, const char *op, uint32_t n_extra)
{
    pk_init(k);
    msgpack_pack_map(&k->p, 3 + n_extra);
    pk_str(k, "v");
    msgpack_pack_uint32(&k->p, v);
    pk_str(k, "op");
    pk_str(k, op);
    pk_str(k, "id");
    msgpack_pack_uint32(&k->p, 99);
}

/* Decodes k's bytes as a request and expects rc with `needle` in the message. */
static void expect_fail(struct pk *k, int rc, const char *needle)
{
    struct fp8_err err = {{0}};
    struct fp8_msg m;
    memset(&m, 0xa5, sizeof(m));
    struct fp8_msg before = m;
    int got = fp8_msg_decode(k->sb.data, k->sb.size, FP8_MSG_DIR_REQUEST, &m, &err);
    if (got != rc || !strstr(err.msg, needle))
        fail_msg("want %d with \"%s\", got %d: \"%s\"", rc, needle, got, err.msg);
    assert_memory_equal(&m, &before, sizeof(m)); /* output untouched on failure */
    msgpack_sbuffer_destroy(&k->sb);
}

static void test_wrong_version(void **state)
{
    (void)state;
    struct pk k;
    pk_head(&k, 2, "ping", 0);
    expect_fail(&k, -EPROTONOSUPPORT, "protocol version 2 is not supported");
    pk_head(&k, 0, "ping", 0);
    expect_fail(&k, -EPROTONOSUPPORT, "version 0");

    pk_init(&k); /* no v at all */
    msgpack_pack_map(&k.p, 2);
    pk_str(&k, "op");
    pk_str(&k, "ping");
    pk_str(&k, "id");
    msgpack_pack_uint32(&k.p, 1);
    expect_fail(&k, -EBADMSG, "missing protocol version");

    pk_init(&k); /* v of the wrong type */
    msgpack_pack_map(&k.p, 1);
    pk_str(&k, "v");
    pk_str(&k, "1");
    expect_fail(&k, -EBADMSG, "v: expected integer, got string");
}

static void test_ops_and_keys(void **state)
{
    (void)state;
    struct pk k;
    pk_head(&k, 1, "launch_missiles", 0);
    expect_fail(&k, -EOPNOTSUPP, "unknown op \"launch_missiles\"");
    pk_head(&k, 1, "welcome", 0); /* a reply sent as a request */
    expect_fail(&k, -EOPNOTSUPP, "\"welcome\" is a reply");

    pk_init(&k);
    msgpack_pack_map(&k.p, 2);
    pk_str(&k, "v");
    msgpack_pack_uint32(&k.p, 1);
    pk_str(&k, "op");
    pk_str(&k, "ping");
    expect_fail(&k, -EBADMSG, "missing key \"id\"");

    pk_head(&k, 1, "cancel", 0);
    expect_fail(&k, -EBADMSG, "missing required key \"target\"");

    pk_head(&k, 1, "cancel", 2);
    pk_str(&k, "target");
    msgpack_pack_uint32(&k.p, 1);
    pk_str(&k, "target");
    msgpack_pack_uint32(&k.p, 2);
    expect_fail(&k, -EBADMSG, "duplicate key \"target\"");

    pk_head(&k, 1, "ping", 1); /* an integer key */
    msgpack_pack_uint32(&k.p, 5);
    msgpack_pack_uint32(&k.p, 5);
    expect_fail(&k, -EBADMSG, "keys must be strings");

    pk_init(&k);
    msgpack_pack_array(&k.p, 0);
    expect_fail(&k, -EBADMSG, "a message is a map, got array");

    pk_head(&k, 1, "ping", 0);
    msgpack_pack_nil(&k.p); /* a second value after the map */
    expect_fail(&k, -EBADMSG, "1 trailing bytes");

    pk_head(&k, 1, "ping", 1);
    pk_str(&k, "x");
    pk_raw(&k, "\xc1", 1); /* the one byte msgpack never uses */
    expect_fail(&k, -EBADMSG, "invalid msgpack type byte 0xc1");
}

/* Unknown keys (even nested ones) are skipped, nil means absent, keys come in any order,
 * and integers are accepted for float fields. */
static void test_lenient_parts(void **state)
{
    (void)state;
    struct pk k;
    pk_init(&k);
    msgpack_pack_map(&k.p, 7);
    pk_str(&k, "future_field");
    msgpack_pack_map(&k.p, 1);
    pk_str(&k, "nested");
    msgpack_pack_array(&k.p, 2);
    msgpack_pack_double(&k.p, 1.5);
    msgpack_pack_bin(&k.p, 3);
    msgpack_pack_bin_body(&k.p, "abc", 3);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "temperature");
    msgpack_pack_uint8(&k.p, 0);
    pk_str(&k, "seed");
    msgpack_pack_nil(&k.p);
    pk_str(&k, "id");
    msgpack_pack_uint64(&k.p, 5);
    pk_str(&k, "op");
    pk_str(&k, "generate");
    pk_str(&k, "v");
    msgpack_pack_uint8(&k.p, 1);

    struct fp8_msg m;
    struct fp8_err err = {{0}};
    int rc = fp8_msg_decode(k.sb.data, k.sb.size, FP8_MSG_DIR_REQUEST, &m, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(m.id, 5);
    assert_int_equal(m.u.generate.kind, FP8_MSG_PROMPT_TEXT);
    assert_str(m.u.generate.prompt, STR("hi"));
    assert_int_equal(m.u.generate.sampling.set, FP8_MSG_SAMPLING_TEMPERATURE);
    assert_true(m.u.generate.sampling.temperature == 0.0f);
    fp8_msg_free(&m);
    msgpack_sbuffer_destroy(&k.sb);
}

static void test_wrong_types_and_values(void **state)
{
    (void)state;
    struct pk k;

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "temperature");
    pk_str(&k, "hot");
    expect_fail(&k, -EBADMSG, "temperature: expected float, got string");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "max_tokens");
    msgpack_pack_double(&k.p, 3.0);
    expect_fail(&k, -EBADMSG, "max_tokens: expected integer, got float");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "max_tokens");
    msgpack_pack_int32(&k.p, -1);
    expect_fail(&k, -EBADMSG, "max_tokens: -1 is negative");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "max_tokens");
    msgpack_pack_uint64(&k.p, 1ull << 32);
    expect_fail(&k, -EBADMSG, "max_tokens: 4294967296 is over 4294967295");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "max_tokens");
    msgpack_pack_uint32(&k.p, 0);
    expect_fail(&k, -EBADMSG, "max_tokens: must be at least 1");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "temperature");
    msgpack_pack_double(&k.p, NAN);
    expect_fail(&k, -EBADMSG, "temperature: nan is not a finite float");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "top_p");
    msgpack_pack_float(&k.p, 0.0f);
    expect_fail(&k, -EBADMSG, "top_p: 0 is not in (0, 1]");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "top_k");
    msgpack_pack_int32(&k.p, -1);
    expect_fail(&k, -EBADMSG, "top_k: -1 is negative");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "ignore_eos");
    msgpack_pack_uint8(&k.p, 1);
    expect_fail(&k, -EBADMSG, "ignore_eos: expected bool, got integer");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "tokens");
    msgpack_pack_array(&k.p, 2);
    msgpack_pack_uint32(&k.p, 5);
    msgpack_pack_int32(&k.p, -7);
    expect_fail(&k, -EBADMSG, "tokens: -7 is negative");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "tokens");
    msgpack_pack_array(&k.p, 1);
    msgpack_pack_uint64(&k.p, 1ull << 31);
    expect_fail(&k, -EBADMSG, "tokens: 2147483648 is over 2147483647");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "tokens");
    msgpack_pack_array(&k.p, 0);
    expect_fail(&k, -EBADMSG, "tokens: empty prompt");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "tokens");
    msgpack_pack_array(&k.p, 1);
    msgpack_pack_uint32(&k.p, 5);
    expect_fail(&k, -EBADMSG, "exactly one of \"prompt\", \"tokens\", \"messages\" (got 2)");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "seed");
    msgpack_pack_uint32(&k.p, 5);
    expect_fail(&k, -EBADMSG, "(got 0)");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "messages");
    msgpack_pack_array(&k.p, 1);
    msgpack_pack_map(&k.p, 1);
    pk_str(&k, "content");
    pk_str(&k, "hi");
    expect_fail(&k, -EBADMSG, "missing required key \"role\"");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "messages");
    msgpack_pack_array(&k.p, 1);
    pk_str(&k, "user: hi");
    expect_fail(&k, -EBADMSG, "messages[]: expected map, got string");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "stop");
    msgpack_pack_array(&k.p, FP8_MSG_MAX_STOP + 1);
    for (int i = 0; i <= FP8_MSG_MAX_STOP; i++)
        pk_str(&k, "x");
    expect_fail(&k, -EBADMSG, "stop: 17 elements, at most 16");

    pk_head(&k, 1, "generate", 2);
    pk_str(&k, "prompt");
    pk_str(&k, "hi");
    pk_str(&k, "stop");
    msgpack_pack_array(&k.p, 1);
    pk_str(&k, "");
    expect_fail(&k, -EBADMSG, "stop[0]: empty string");

    pk_head(&k, 1, "hello", 1);
    pk_str(&k, "client");
    char name[FP8_MSG_MAX_NAME_BYTES + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    pk_str(&k, name);
    expect_fail(&k, -EBADMSG, "client: 257 bytes, at most 256");
}

/* Declared lengths far beyond the bytes present: refused before anything is allocated
 * (under ASan a 4 GiB-element allocation attempt would abort the test). */
static void test_lying_lengths(void **state)
{
    (void)state;
    struct pk k;

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "tokens");
    pk_raw(&k, "\xdd\xff\xff\xff\xff\x01\x02", 7); /* array32 of 2^32-1, two elements */
    expect_fail(&k, -EBADMSG, "array declares 4294967295 elements, only 2 bytes left");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "prompt");
    pk_raw(&k, "\xdb\x40\x00\x00\x00hi", 7); /* str32 of 1 GiB, two bytes */
    expect_fail(&k, -EBADMSG, "truncated: string of 1073741824 bytes, 2 bytes left");

    pk_head(&k, 1, "generate", 1);
    pk_str(&k, "messages");
    pk_raw(&k, "\xdc\xff\xff\x80", 4); /* array16 of 65535 maps, one empty map */
    expect_fail(&k, -EBADMSG, "array declares 65535 elements, only 1 bytes left");

    pk_head(&k, 1, "ping", 1);
    pk_str(&k, "junk");
    pk_raw(&k, "\xdf\x7f\xff\xff\xff\x01\x01", 7); /* map32 of 2^31-1 pairs, 2 bytes */
    expect_fail(&k, -EBADMSG, "map declares 2147483647 entries, only 2 bytes left");

    pk_head(&k, 1, "ping", 1);
    pk_str(&k, "junk");
    pk_raw(&k, "\xc6\xff\xff\xff\xf0", 5); /* bin32 */
    expect_fail(&k, -EBADMSG, "truncated: binary of 4294967280 bytes, 0 bytes left");

    pk_init(&k);
    pk_raw(&k, "\xdf\xff\xff\xff\xff", 5); /* the top-level map itself lies */
    expect_fail(&k, -EBADMSG, "map declares 4294967295 entries, only 0 bytes left");

    pk_init(&k);
    pk_raw(&k, "\x81\xa1v\xcf\x00\x00", 6); /* uint64 cut after two of its eight bytes */
    expect_fail(&k, -EBADMSG, "truncated: a 8-byte header field runs past the end");
}

static void test_deep_nesting(void **state)
{
    (void)state;
    struct pk k;
    /* 7 nested arrays under an unknown key: the value sits at depth 2, the innermost
     * array at depth 8 = FP8_MSG_MAX_DEPTH: accepted. */
    pk_head(&k, 1, "ping", 1);
    pk_str(&k, "deep");
    for (int i = 0; i < FP8_MSG_MAX_DEPTH - 1; i++)
        msgpack_pack_array(&k.p, 1);
    msgpack_pack_nil(&k.p);
    struct fp8_msg m;
    assert_int_equal(fp8_msg_decode(k.sb.data, k.sb.size, FP8_MSG_DIR_REQUEST, &m, NULL), 0);
    fp8_msg_free(&m);
    msgpack_sbuffer_destroy(&k.sb);

    pk_head(&k, 1, "ping", 1);
    pk_str(&k, "deep");
    for (int i = 0; i < FP8_MSG_MAX_DEPTH; i++)
        msgpack_pack_array(&k.p, 1);
    msgpack_pack_nil(&k.p);
    expect_fail(&k, -EBADMSG, "nesting deeper than 8 levels");

    /* 100000 levels: a recursive decoder without a limit would overflow its stack */
    pk_head(&k, 1, "ping", 1);
    pk_str(&k, "deep");
    for (int i = 0; i < 100000; i++)
        pk_raw(&k, "\x91", 1);
    msgpack_pack_nil(&k.p);
    expect_fail(&k, -EBADMSG, "nesting deeper than 8 levels");
}

/* Every strict prefix of a valid message is refused (and nothing leaks under ASan). */
static void test_truncated(void **state)
{
    (void)state;
    struct fp8_msg m;
    struct fp8_msg_turn turn = {STR("user"), STR("Hello there")};
    struct fp8_msg_str stop = STR("END");
    fp8_msg_init(&m, FP8_MSG_OP_GENERATE, 77);
    m.u.generate.kind = FP8_MSG_PROMPT_CHAT;
    m.u.generate.messages = &turn;
    m.u.generate.n_messages = 1;
    m.u.generate.stop = &stop;
    m.u.generate.n_stop = 1;
    m.u.generate.sampling.set = FP8_MSG_SAMPLING_SEED | FP8_MSG_SAMPLING_TOP_P;
    m.u.generate.sampling.seed = 1ull << 60;
    m.u.generate.sampling.top_p = 0.5f;
    void *buf;
    size_t len;
    assert_int_equal(fp8_msg_encode(&m, &buf, &len, NULL), 0);
    for (size_t n = 0; n < len; n++) {
        struct fp8_msg o;
        struct fp8_err err = {{0}};
        int rc = fp8_msg_decode(buf, n, FP8_MSG_DIR_REQUEST, &o, &err);
        if (rc != -EBADMSG)
            fail_msg("prefix of %zu/%zu bytes: rc %d (%s)", n, len, rc, err.msg);
        assert_non_null(strstr(err.msg, "truncated") ? err.msg : strstr(err.msg, "left"));
    }
    free(buf);
}

static void test_size_cap(void **state)
{
    (void)state;
    size_t n = FP8_MSG_MAX_BYTES + 1;
    uint8_t *big = calloc(1, n);
    assert_non_null(big);
    struct fp8_msg m;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_msg_decode(big, n, FP8_MSG_DIR_REQUEST, &m, &err), -EMSGSIZE);
    assert_non_null(strstr(err.msg, "at most 8388608"));
    assert_int_equal(fp8_msg_errc_from_errno(-EMSGSIZE), FP8_MSG_ERRC_TOO_LONG);
    free(big);

    /* the encoder refuses to build what the decoder would refuse */
    struct fp8_msg g;
    fp8_msg_init(&g, FP8_MSG_OP_GENERATE, 1);
    g.u.generate.prompt.len = FP8_MSG_MAX_BYTES;
    g.u.generate.prompt.s = calloc(1, FP8_MSG_MAX_BYTES);
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(fp8_msg_encode(&g, &buf, &len, &err), -EMSGSIZE);
    assert_null(buf);
    free((void *)g.u.generate.prompt.s);

    fp8_msg_init(&g, FP8_MSG_OP_GENERATE, 1);
    g.u.generate.prompt = STR("x");
    g.u.generate.sampling.set = FP8_MSG_SAMPLING_TEMPERATURE;
    g.u.generate.sampling.temperature = -1.0f;
    assert_int_equal(fp8_msg_encode(&g, &buf, &len, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "temperature: -1 is not in [0, 100]"));
}

static void test_peek_id_and_codes(void **state)
{
    (void)state;
    struct pk k;
    uint64_t id = 0;
    pk_head(&k, 9, "generate", 1); /* bad version, then a broken field */
    pk_str(&k, "prompt");
    pk_raw(&k, "\xdb\xff\xff\xff\xff", 5);
    assert_int_equal(fp8_msg_peek_id(k.sb.data, k.sb.size, &id), 0);
    assert_int_equal(id, 99);
    msgpack_sbuffer_destroy(&k.sb);
    assert_int_equal(fp8_msg_peek_id("\x90", 1, &id), -ENOENT);

    assert_int_equal(fp8_msg_errc_from_errno(-EBADMSG), FP8_MSG_ERRC_BAD_REQUEST);
    assert_int_equal(fp8_msg_errc_from_errno(-EPROTONOSUPPORT), FP8_MSG_ERRC_UNSUPPORTED);
    assert_int_equal(fp8_msg_errc_from_errno(-EOPNOTSUPP), FP8_MSG_ERRC_UNSUPPORTED);
    assert_int_equal(fp8_msg_errc_from_errno(-ENOMEM), FP8_MSG_ERRC_INTERNAL);
    assert_string_equal(fp8_msg_errc_name(FP8_MSG_ERRC_SHUTTING_DOWN), "shutting_down");
    assert_null(fp8_msg_errc_name(FP8_MSG_ERRC_COUNT));
    assert_string_equal(fp8_msg_op_name(FP8_MSG_OP_DETOKENIZE), "detokenize");
    assert_string_equal(fp8_msg_finish_name(FP8_MSG_FINISH_EOS), "eos");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_requests),
        cmocka_unit_test(test_round_trip_replies),
        cmocka_unit_test(test_encode_bytes),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_ops_and_keys),
        cmocka_unit_test(test_lenient_parts),
        cmocka_unit_test(test_wrong_types_and_values),
        cmocka_unit_test(test_lying_lengths),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_size_cap),
        cmocka_unit_test(test_peek_id_and_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
