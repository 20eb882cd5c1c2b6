/* msgpack encode/decode of the request channel (wire reference: docs/protocol.md).
 *
 * Encoding uses msgpack-c's packer. Decoding walks the raw bytes itself instead of using
 * msgpack-c's unpacker: msgpack_unpack() allocates `count * sizeof(msgpack_object)` for an
 * array or map as soon as it reads the header, so five bytes declaring 2^32-1 elements
 * make it attempt a 100 GB allocation, and the C API has no limits to stop it. Here every
 * declared length is compared with the bytes that remain before it is used (each array
 * element and each map key or value takes at least one byte), values go straight into the
 * typed structs, and nothing but those structs' strings and arrays is ever allocated. The
 * walk is two passes over the top-level map: the first finds `v`, `op` and `id` wherever
 * they are, the second decodes the fields of that op. */
#include "protocol.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

static const char *const op_names[FP8_MSG_OP_COUNT] = {
    [FP8_MSG_OP_HELLO] = "hello",       [FP8_MSG_OP_GENERATE] = "generate",
    [FP8_MSG_OP_CANCEL] = "cancel",     [FP8_MSG_OP_TOKENIZE] = "tokenize",
    [FP8_MSG_OP_DETOKENIZE] = "detokenize", [FP8_MSG_OP_INFO] = "info",
    [FP8_MSG_OP_STATS] = "stats",       [FP8_MSG_OP_PING] = "ping",
    [FP8_MSG_OP_BYE] = "bye",           [FP8_MSG_OP_WELCOME] = "welcome",
    [FP8_MSG_OP_ACCEPTED] = "accepted", [FP8_MSG_OP_CHUNK] = "chunk",
    [FP8_MSG_OP_DONE] = "done",         [FP8_MSG_OP_TOKENS] = "tokens",
    [FP8_MSG_OP_TEXT] = "text",         [FP8_MSG_OP_MODEL] = "model",
    [FP8_MSG_OP_COUNTERS] = "counters", [FP8_MSG_OP_PONG] = "pong",
    [FP8_MSG_OP_OK] = "ok",             [FP8_MSG_OP_ERROR] = "error",
};

static const char *const errc_names[FP8_MSG_ERRC_COUNT] = {
    [FP8_MSG_ERRC_BAD_REQUEST] = "bad_request", [FP8_MSG_ERRC_TOO_LONG] = "too_long",
    [FP8_MSG_ERRC_BUSY] = "busy",               [FP8_MSG_ERRC_CANCELLED] = "cancelled",
    [FP8_MSG_ERRC_UNSUPPORTED] = "unsupported", [FP8_MSG_ERRC_SHUTTING_DOWN] = "shutting_down",
    [FP8_MSG_ERRC_INTERNAL] = "internal",
};

static const char *const finish_names[FP8_MSG_FINISH_COUNT] = {
    [FP8_MSG_FINISH_EOS] = "eos",
    [FP8_MSG_FINISH_STOP] = "stop",
    [FP8_MSG_FINISH_LENGTH] = "length",
};

const char *fp8_msg_op_name(enum fp8_msg_op op)
{
    return (unsigned)op < FP8_MSG_OP_COUNT ? op_names[op] : NULL;
}

const char *fp8_msg_errc_name(enum fp8_msg_errc code)
{
    return (unsigned)code < FP8_MSG_ERRC_COUNT ? errc_names[code] : NULL;
}

const char *fp8_msg_finish_name(enum fp8_msg_finish finish)
{
    return (unsigned)finish < FP8_MSG_FINISH_COUNT ? finish_names[finish] : NULL;
}

enum fp8_msg_errc fp8_msg_errc_from_errno(int code)
{
    switch (code) {
    case -EBADMSG: return FP8_MSG_ERRC_BAD_REQUEST;
    case -EMSGSIZE: return FP8_MSG_ERRC_TOO_LONG;
    case -EPROTONOSUPPORT:
    case -EOPNOTSUPP: return FP8_MSG_ERRC_UNSUPPORTED;
    default: return FP8_MSG_ERRC_INTERNAL;
    }
}

static bool op_is_request(enum fp8_msg_op op)
{
    return op < FP8_MSG_OP_WELCOME;
}

void fp8_msg_init(struct fp8_msg *msg, enum fp8_msg_op op, uint64_t id)
{
    memset(msg, 0, sizeof(*msg));
    msg->v = FP8_PROTO_VERSION;
    msg->op = op;
    msg->id = id;
    if (op == FP8_MSG_OP_HELLO)
        msg->u.hello.shm = true;
    if (op == FP8_MSG_OP_GENERATE) {
        msg->u.generate.add_generation_prompt = true;
        msg->u.generate.enable_thinking = -1;
    }
}

/* ---- validation shared by encode and decode --------------------------------------------- */

static int check_ids(const struct fp8_msg_ids *ids, const char *what, struct fp8_err *err)
{
    if (ids->n && !ids->ids)
        return fp8_err_set(err, -EINVAL, "%s: %u ids but no array", what, ids->n);
    for (uint32_t i = 0; i < ids->n; i++)
        if (ids->ids[i] < 0)
            return fp8_err_set(err, -EINVAL, "%s[%u]: token id %d is negative", what, i,
                               ids->ids[i]);
    return 0;
}

static int check_str(const struct fp8_msg_str *s, uint32_t max, const char *what,
                     struct fp8_err *err)
{
    if (s->len && !s->s)
        return fp8_err_set(err, -EINVAL, "%s: length %u but no bytes", what, s->len);
    if (s->len > max)
        return fp8_err_set(err, -EINVAL, "%s: %u bytes, at most %u", what, s->len, max);
    return 0;
}

static int check_sampling(const struct fp8_msg_sampling *sp, struct fp8_err *err)
{
    if (sp->set & ~(uint32_t)FP8_MSG_SAMPLING_ALL)
        return fp8_err_set(err, -EINVAL, "sampling: unknown field bits 0x%x", sp->set);
    if ((sp->set & FP8_MSG_SAMPLING_MAX_TOKENS) && sp->max_tokens < 1)
        return fp8_err_set(err, -EINVAL, "max_tokens: must be at least 1");
    if ((sp->set & FP8_MSG_SAMPLING_TEMPERATURE) &&
        !(sp->temperature >= 0.0f && sp->temperature <= 100.0f))
        return fp8_err_set(err, -EINVAL, "temperature: %g is not in [0, 100]",
                           (double)sp->temperature);
    if ((sp->set & FP8_MSG_SAMPLING_TOP_P) && !(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return fp8_err_set(err, -EINVAL, "top_p: %g is not in (0, 1]", (double)sp->top_p);
    if ((sp->set & FP8_MSG_SAMPLING_TOP_K) && sp->top_k < 0)
        return fp8_err_set(err, -EINVAL, "top_k: %d is negative (0 turns it off)", sp->top_k);
    if ((sp->set & FP8_MSG_SAMPLING_MIN_P) && !(sp->min_p >= 0.0f && sp->min_p <= 1.0f))
        return fp8_err_set(err, -EINVAL, "min_p: %g is not in [0, 1]", (double)sp->min_p);
    return 0;
}

static int check_model(const struct fp8_msg_model *m, struct fp8_err *err)
{
    const struct fp8_msg_str *s[] = {&m->name, &m->arch, &m->backend, &m->weights,
                                     &m->kv_cache_dtype};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        int rc = check_str(s[i], FP8_MSG_MAX_NAME_BYTES, "model", err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Whether a complete message is valid: the rules the decoder enforces beyond types. */
static int check_msg(const struct fp8_msg *m, struct fp8_err *err)
{
    int rc = 0;
    switch (m->op) {
    case FP8_MSG_OP_HELLO:
        return check_str(&m->u.hello.client, FP8_MSG_MAX_NAME_BYTES, "client", err);
    case FP8_MSG_OP_GENERATE: {
        const struct fp8_msg_generate *g = &m->u.generate;
        if (g->kind == FP8_MSG_PROMPT_TEXT)
            rc = check_str(&g->prompt, FP8_MSG_MAX_BYTES, "prompt", err);
        else if (g->kind == FP8_MSG_PROMPT_TOKENS) {
            if (g->tokens.n == 0)
                return fp8_err_set(err, -EINVAL, "tokens: empty prompt");
            rc = check_ids(&g->tokens, "tokens", err);
        } else if (g->kind == FP8_MSG_PROMPT_CHAT) {
            if (g->n_messages == 0 || !g->messages)
                return fp8_err_set(err, -EINVAL, "messages: empty conversation");
            for (uint32_t i = 0; i < g->n_messages && rc == 0; i++) {
                if (g->messages[i].role.len == 0)
                    return fp8_err_set(err, -EINVAL, "messages[%u]: empty role", i);
                rc = check_str(&g->messages[i].role, FP8_MSG_MAX_NAME_BYTES, "role", err);
                if (rc == 0)
                    rc = check_str(&g->messages[i].content, FP8_MSG_MAX_BYTES, "content", err);
            }
        } else
            return fp8_err_set(err, -EINVAL, "generate: unknown prompt kind %d", (int)g->kind);
        if (rc < 0)
            return rc;
        if (g->enable_thinking < -1 || g->enable_thinking > 1)
            return fp8_err_set(err, -EINVAL, "enable_thinking: %d is not -1, 0 or 1",
                               g->enable_thinking);
        if (g->n_stop > FP8_MSG_MAX_STOP)
            return fp8_err_set(err, -EINVAL, "stop: %u strings, at most %u", g->n_stop,
                               FP8_MSG_MAX_STOP);
        if (g->n_stop && !g->stop)
            return fp8_err_set(err, -EINVAL, "stop: %u strings but no array", g->n_stop);
        for (uint32_t i = 0; i < g->n_stop; i++) {
            if (g->stop[i].len == 0)
                return fp8_err_set(err, -EINVAL, "stop[%u]: empty string", i);
            rc = check_str(&g->stop[i], FP8_MSG_MAX_STOP_BYTES, "stop", err);
            if (rc < 0)
                return rc;
        }
        return check_sampling(&g->sampling, err);
    }
    case FP8_MSG_OP_TOKENIZE:
        return check_str(&m->u.tokenize.text, FP8_MSG_MAX_BYTES, "text", err);
    case FP8_MSG_OP_DETOKENIZE:
        return check_ids(&m->u.detokenize, "tokens", err);
    case FP8_MSG_OP_WELCOME:
        rc = check_str(&m->u.welcome.server, FP8_MSG_MAX_NAME_BYTES, "server", err);
        if (rc == 0)
            rc = check_str(&m->u.welcome.shm, FP8_MSG_MAX_NAME_BYTES, "shm", err);
        return rc < 0 ? rc : check_model(&m->u.welcome.model, err);
    case FP8_MSG_OP_ACCEPTED:
        if (m->u.accepted.slot < -1)
            return fp8_err_set(err, -EINVAL, "slot: %d is below -1", m->u.accepted.slot);
        return 0;
    case FP8_MSG_OP_CHUNK:
        rc = check_ids(&m->u.chunk.tokens, "tokens", err);
        return rc < 0 ? rc : check_str(&m->u.chunk.text, FP8_MSG_MAX_BYTES, "text", err);
    case FP8_MSG_OP_DONE:
        if ((unsigned)m->u.done.finish >= FP8_MSG_FINISH_COUNT)
            return fp8_err_set(err, -EINVAL, "finish: unknown reason %d", (int)m->u.done.finish);
        return 0;
    case FP8_MSG_OP_TOKENS:
        return check_ids(&m->u.tokens, "tokens", err);
    case FP8_MSG_OP_TEXT:
        return check_str(&m->u.text, FP8_MSG_MAX_BYTES, "text", err);
    case FP8_MSG_OP_MODEL:
        return check_model(&m->u.model, err);
    case FP8_MSG_OP_ERROR:
        if ((unsigned)m->u.error.code >= FP8_MSG_ERRC_COUNT)
            return fp8_err_set(err, -EINVAL, "code: unknown error code %d", (int)m->u.error.code);
        return check_str(&m->u.error.message, FP8_MSG_MAX_BYTES, "message", err);
    case FP8_MSG_OP_CANCEL:
    case FP8_MSG_OP_INFO:
    case FP8_MSG_OP_STATS:
    case FP8_MSG_OP_PING:
    case FP8_MSG_OP_BYE:
    case FP8_MSG_OP_COUNTERS:
    case FP8_MSG_OP_PONG:
    case FP8_MSG_OP_OK:
        return 0;
    case FP8_MSG_OP_COUNT:
        break;
    }
    return fp8_err_set(err, -EINVAL, "unknown op %d", (int)m->op);
}

/* ---- encode ---------------------------------------------------------------------------- */

/* msgpack-c's pack calls return nonzero only when the sbuffer cannot grow; each helper
 * folds that into pk_fail so that encode checks once at the end. */
struct enc {
    msgpack_packer pk;
    int fail;
};

static void put_key(struct enc *e, const char *key)
{
    size_t n = strlen(key);
    e->fail |= msgpack_pack_str(&e->pk, n);
    e->fail |= msgpack_pack_str_body(&e->pk, key, n);
}

static void put_bytes(struct enc *e, const char *s, uint32_t len)
{
    e->fail |= msgpack_pack_str(&e->pk, len);
    if (len) /* an empty body may come with a NULL pointer: never hand that to memcpy */
        e->fail |= msgpack_pack_str_body(&e->pk, s, len);
}

static void put_str(struct enc *e, const char *key, const struct fp8_msg_str *s)
{
    put_key(e, key);
    put_bytes(e, s->s, s->len);
}

static void put_cstr(struct enc *e, const char *key, const char *s)
{
    put_key(e, key);
    put_bytes(e, s, (uint32_t)strlen(s));
}

static void put_u64(struct enc *e, const char *key, uint64_t v)
{
    put_key(e, key);
    e->fail |= msgpack_pack_uint64(&e->pk, v);
}

static void put_i64(struct enc *e, const char *key, int64_t v)
{
    put_key(e, key);
    e->fail |= msgpack_pack_int64(&e->pk, v);
}

static void put_f32(struct enc *e, const char *key, float v)
{
    put_key(e, key);
    e->fail |= msgpack_pack_float(&e->pk, v);
}

static void put_bool(struct enc *e, const char *key, bool v)
{
    put_key(e, key);
    e->fail |= v ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
}

static void put_ids(struct enc *e, const char *key, const struct fp8_msg_ids *ids)
{
    put_key(e, key);
    e->fail |= msgpack_pack_array(&e->pk, ids->n);
    for (uint32_t i = 0; i < ids->n; i++)
        e->fail |= msgpack_pack_int32(&e->pk, ids->ids[i]);
}

static void put_map(struct enc *e, uint32_t n)
{
    e->fail |= msgpack_pack_map(&e->pk, n);
}

static const char *const model_keys[] = {"name", "arch", "backend", "weights",
                                         "kv_cache_dtype", "vocab_size", "max_model_len",
                                         "max_num_seqs"};

static void put_model_fields(struct enc *e, const struct fp8_msg_model *m)
{
    put_str(e, model_keys[0], &m->name);
    put_str(e, model_keys[1], &m->arch);
    put_str(e, model_keys[2], &m->backend);
    put_str(e, model_keys[3], &m->weights);
    put_str(e, model_keys[4], &m->kv_cache_dtype);
    put_u64(e, model_keys[5], m->vocab_size);
    put_u64(e, model_keys[6], m->max_model_len);
    put_u64(e, model_keys[7], m->max_num_seqs);
}

#define N_MODEL_KEYS (uint32_t)(sizeof(model_keys) / sizeof(model_keys[0]))

static void put_generate(struct enc *e, const struct fp8_msg_generate *g, uint32_t base)
{
    uint32_t n = base + 1 /* prompt */ + 2 /* ignore_eos, priority */ + (g->n_stop > 0) +
                 (uint32_t)__builtin_popcount(g->sampling.set);
    if (g->kind == FP8_MSG_PROMPT_CHAT)
        n += 1 + (g->enable_thinking >= 0);
    put_map(e, n);
}

static void put_generate_fields(struct enc *e, const struct fp8_msg_generate *g)
{
    const struct fp8_msg_sampling *sp = &g->sampling;
    if (g->kind == FP8_MSG_PROMPT_TEXT)
        put_str(e, "prompt", &g->prompt);
    else if (g->kind == FP8_MSG_PROMPT_TOKENS)
        put_ids(e, "tokens", &g->tokens);
    else {
        put_key(e, "messages");
        e->fail |= msgpack_pack_array(&e->pk, g->n_messages);
        for (uint32_t i = 0; i < g->n_messages; i++) {
            put_map(e, 2);
            put_str(e, "role", &g->messages[i].role);
            put_str(e, "content", &g->messages[i].content);
        }
        put_bool(e, "add_generation_prompt", g->add_generation_prompt);
        if (g->enable_thinking >= 0)
            put_bool(e, "enable_thinking", g->enable_thinking);
    }
    if (sp->set & FP8_MSG_SAMPLING_MAX_TOKENS)
        put_u64(e, "max_tokens", sp->max_tokens);
    if (sp->set & FP8_MSG_SAMPLING_TEMPERATURE)
        put_f32(e, "temperature", sp->temperature);
    if (sp->set & FP8_MSG_SAMPLING_TOP_P)
        put_f32(e, "top_p", sp->top_p);
    if (sp->set & FP8_MSG_SAMPLING_TOP_K)
        put_i64(e, "top_k", sp->top_k);
    if (sp->set & FP8_MSG_SAMPLING_MIN_P)
        put_f32(e, "min_p", sp->min_p);
    if (sp->set & FP8_MSG_SAMPLING_SEED)
        put_u64(e, "seed", sp->seed);
    if (g->n_stop) {
        put_key(e, "stop");
        e->fail |= msgpack_pack_array(&e->pk, g->n_stop);
        for (uint32_t i = 0; i < g->n_stop; i++)
            put_bytes(e, g->stop[i].s, g->stop[i].len);
    }
    put_bool(e, "ignore_eos", g->ignore_eos);
    put_i64(e, "priority", g->priority);
}

int fp8_msg_encode(const struct fp8_msg *msg, void **buf, size_t *len, struct fp8_err *err)
{
    if (!msg || !buf || !len)
        return fp8_err_set(err, -EINVAL, "fp8_msg_encode: NULL argument");
    int rc = check_msg(msg, err);
    if (rc < 0)
        return fp8_err_prefix(err, rc, "encode %s",
                              fp8_msg_op_name(msg->op) ? fp8_msg_op_name(msg->op) : "?");

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    struct enc e = {.fail = 0};
    msgpack_packer_init(&e.pk, &sb, msgpack_sbuffer_write);

    const uint32_t base = 3; /* v, op, id */
    switch (msg->op) {
    case FP8_MSG_OP_HELLO: put_map(&e, base + 2); break;
    case FP8_MSG_OP_GENERATE: put_generate(&e, &msg->u.generate, base); break;
    case FP8_MSG_OP_CANCEL: put_map(&e, base + 1 + (msg->u.cancel.handle != 0)); break;
    case FP8_MSG_OP_TOKENIZE: put_map(&e, base + 2); break;
    case FP8_MSG_OP_DETOKENIZE: put_map(&e, base + 1); break;
    case FP8_MSG_OP_WELCOME: put_map(&e, base + 5); break;
    case FP8_MSG_OP_ACCEPTED: put_map(&e, base + 2 + (msg->u.accepted.handle != 0)); break;
    case FP8_MSG_OP_CHUNK: put_map(&e, base + 2); break;
    case FP8_MSG_OP_DONE: put_map(&e, base + 3); break;
    case FP8_MSG_OP_TOKENS: put_map(&e, base + 1); break;
    case FP8_MSG_OP_TEXT: put_map(&e, base + 1); break;
    case FP8_MSG_OP_MODEL: put_map(&e, base + N_MODEL_KEYS); break;
    case FP8_MSG_OP_COUNTERS: put_map(&e, base + 8); break;
    case FP8_MSG_OP_ERROR: put_map(&e, base + 2); break;
    default: put_map(&e, base); break;
    }
    put_u64(&e, "v", FP8_PROTO_VERSION);
    put_cstr(&e, "op", fp8_msg_op_name(msg->op));
    put_u64(&e, "id", msg->id);

    switch (msg->op) {
    case FP8_MSG_OP_HELLO:
        put_str(&e, "client", &msg->u.hello.client);
        put_bool(&e, "shm", msg->u.hello.shm);
        break;
    case FP8_MSG_OP_GENERATE:
        put_generate_fields(&e, &msg->u.generate);
        break;
    case FP8_MSG_OP_CANCEL:
        put_u64(&e, "target", msg->u.cancel.target);
        if (msg->u.cancel.handle)
            put_u64(&e, "handle", msg->u.cancel.handle);
        break;
    case FP8_MSG_OP_TOKENIZE:
        put_str(&e, "text", &msg->u.tokenize.text);
        put_bool(&e, "add_special", msg->u.tokenize.add_special);
        break;
    case FP8_MSG_OP_DETOKENIZE:
        put_ids(&e, "tokens", &msg->u.detokenize);
        break;
    case FP8_MSG_OP_WELCOME:
        put_u64(&e, "session", msg->u.welcome.session);
        put_str(&e, "server", &msg->u.welcome.server);
        put_key(&e, "model");
        put_map(&e, N_MODEL_KEYS);
        put_model_fields(&e, &msg->u.welcome.model);
        put_str(&e, "shm", &msg->u.welcome.shm);
        put_u64(&e, "shm_bytes", msg->u.welcome.shm_bytes);
        break;
    case FP8_MSG_OP_ACCEPTED:
        put_i64(&e, "slot", msg->u.accepted.slot);
        put_u64(&e, "prompt_tokens", msg->u.accepted.prompt_tokens);
        if (msg->u.accepted.handle)
            put_u64(&e, "handle", msg->u.accepted.handle);
        break;
    case FP8_MSG_OP_CHUNK:
        put_ids(&e, "tokens", &msg->u.chunk.tokens);
        put_str(&e, "text", &msg->u.chunk.text);
        break;
    case FP8_MSG_OP_DONE: {
        const struct fp8_msg_done *d = &msg->u.done;
        put_cstr(&e, "finish", fp8_msg_finish_name(d->finish));
        put_key(&e, "usage");
        put_map(&e, 2);
        put_u64(&e, "prompt_tokens", d->prompt_tokens);
        put_u64(&e, "completion_tokens", d->completion_tokens);
        put_key(&e, "timings");
        put_map(&e, 3);
        put_u64(&e, "queue_us", d->queue_us);
        put_u64(&e, "prefill_us", d->prefill_us);
        put_u64(&e, "decode_us", d->decode_us);
        break;
    }
    case FP8_MSG_OP_TOKENS:
        put_ids(&e, "tokens", &msg->u.tokens);
        break;
    case FP8_MSG_OP_TEXT:
        put_str(&e, "text", &msg->u.text);
        break;
    case FP8_MSG_OP_MODEL:
        put_model_fields(&e, &msg->u.model);
        break;
    case FP8_MSG_OP_COUNTERS: {
        const struct fp8_msg_counters *c = &msg->u.counters;
        put_u64(&e, "running", c->running);
        put_u64(&e, "waiting", c->waiting);
        put_u64(&e, "sessions", c->sessions);
        put_u64(&e, "kv_blocks_used", c->kv_blocks_used);
        put_u64(&e, "kv_blocks_total", c->kv_blocks_total);
        put_u64(&e, "uptime_ms", c->uptime_ms);
        put_u64(&e, "prompt_tokens", c->prompt_tokens);
        put_u64(&e, "generated_tokens", c->generated_tokens);
        break;
    }
    case FP8_MSG_OP_ERROR:
        put_cstr(&e, "code", fp8_msg_errc_name(msg->u.error.code));
        put_str(&e, "message", &msg->u.error.message);
        break;
    default:
        break;
    }

    if (e.fail) {
        msgpack_sbuffer_destroy(&sb);
        return fp8_err_set(err, -ENOMEM, "encode %s: out of memory", op_names[msg->op]);
    }
    if (sb.size > FP8_MSG_MAX_BYTES) {
        size_t n = sb.size;
        msgpack_sbuffer_destroy(&sb);
        return fp8_err_set(err, -EMSGSIZE, "encode %s: %zu bytes, at most %u",
                           op_names[msg->op], n, FP8_MSG_MAX_BYTES);
    }
    *len = sb.size;
    *buf = msgpack_sbuffer_release(&sb);
    return 0;
}

/* ---- decode ---------------------------------------------------------------------------- */

enum kind { K_NIL, K_BOOL, K_UINT, K_NINT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP, K_EXT };

static const char *const kind_names[] = {"nil", "bool", "integer", "integer", "float",
                                         "string", "binary", "array", "map", "extension"};

/* One value's header: its kind, scalar value, or the length of what follows. */
struct head {
    enum kind kind;
    bool b;
    uint64_t u;    /* K_UINT */
    int64_t i;     /* K_NINT (always < 0) */
    double f;      /* K_FLOAT */
    uint64_t len;  /* K_STR/K_BIN/K_EXT: bytes; K_ARRAY: elements; K_MAP: pairs */
    size_t at;     /* byte offset of the header */
};

struct rd {
    const uint8_t *base;
    size_t pos, end;
    struct fp8_err *err;
};

static int rd_fail(struct rd *r, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int rd_fail(struct rd *r, size_t at, const char *fmt, ...)
{
    char line[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    return fp8_err_set(r->err, -EBADMSG, "byte %zu: %s", at, line);
}

static uint64_t load_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int k = 0; k < n; k++)
        v = v << 8 | p[k];
    return v;
}

/* Reads n big-endian bytes of a header field. */
static int rd_be(struct rd *r, int n, uint64_t *v, size_t at)
{
    if (r->end - r->pos < (size_t)n)
        return rd_fail(r, at, "truncated: a %d-byte header field runs past the end", n);
    *v = load_be(r->base + r->pos, n);
    r->pos += (size_t)n;
    return 0;
}

static int rd_head(struct rd *r, struct head *h)
{
    memset(h, 0, sizeof(*h));
    h->at = r->pos;
    if (r->pos >= r->end)
        return rd_fail(r, r->pos, "truncated: expected a value, the message ended");
    uint8_t t = r->base[r->pos++];
    uint64_t v = 0;
    int rc = 0, n = 0;

    if (t <= 0x7f) {
        h->kind = K_UINT, h->u = t;
        return 0;
    }
    if (t >= 0xe0) {
        h->kind = K_NINT, h->i = (int8_t)t;
        return 0;
    }
    if ((t & 0xf0) == 0x80)
        h->kind = K_MAP, h->len = t & 0x0f;
    else if ((t & 0xf0) == 0x90)
        h->kind = K_ARRAY, h->len = t & 0x0f;
    else if ((t & 0xe0) == 0xa0)
        h->kind = K_STR, h->len = t & 0x1f;
    else {
        switch (t) {
        case 0xc0: h->kind = K_NIL; return 0;
        case 0xc2: h->kind = K_BOOL, h->b = false; return 0;
        case 0xc3: h->kind = K_BOOL, h->b = true; return 0;
        case 0xc4: case 0xc5: case 0xc6:
            n = 1 << (t - 0xc4);
            rc = rd_be(r, n, &v, h->at);
            h->kind = K_BIN, h->len = v;
            break;
        case 0xc7: case 0xc8: case 0xc9:
            n = 1 << (t - 0xc7);
            rc = rd_be(r, n, &v, h->at);
            h->kind = K_EXT, h->len = v + 1; /* the type byte, then the data */
            break;
        case 0xca:
            rc = rd_be(r, 4, &v, h->at);
            if (rc == 0) {
                uint32_t w = (uint32_t)v;
                float f;
                memcpy(&f, &w, sizeof(f));
                h->kind = K_FLOAT, h->f = f;
            }
            return rc;
        case 0xcb:
            rc = rd_be(r, 8, &v, h->at);
            if (rc == 0) {
                double d;
                memcpy(&d, &v, sizeof(d));
                h->kind = K_FLOAT, h->f = d;
            }
            return rc;
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            rc = rd_be(r, 1 << (t - 0xcc), &v, h->at);
            h->kind = K_UINT, h->u = v;
            return rc;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3:
            n = 1 << (t - 0xd0);
            rc = rd_be(r, n, &v, h->at);
            if (rc == 0) {
                /* sign-extend the n-byte two's complement value */
                int64_t s = n == 8 ? (int64_t)v : (int64_t)(v ^ (1ull << (8 * n - 1))) - (int64_t)(1ull << (8 * n - 1));
                if (s >= 0)
                    h->kind = K_UINT, h->u = (uint64_t)s;
                else
                    h->kind = K_NINT, h->i = s;
            }
            return rc;
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            h->kind = K_EXT, h->len = 1 + (1u << (t - 0xd4));
            break;
        case 0xd9: case 0xda: case 0xdb:
            rc = rd_be(r, 1 << (t - 0xd9), &v, h->at);
            h->kind = K_STR, h->len = v;
            break;
        case 0xdc: case 0xdd:
            rc = rd_be(r, 2 << (t - 0xdc), &v, h->at);
            h->kind = K_ARRAY, h->len = v;
            break;
        case 0xde: case 0xdf:
            rc = rd_be(r, 2 << (t - 0xde), &v, h->at);
            h->kind = K_MAP, h->len = v;
            break;
        default: /* 0xc1 is the one byte msgpack never uses */
            return rd_fail(r, h->at, "invalid msgpack type byte 0x%02x", t);
        }
        if (rc < 0)
            return rc;
    }

    /* The check that keeps every later allocation and loop bounded by the input size. */
    size_t left = r->end - r->pos;
    if ((h->kind == K_STR || h->kind == K_BIN || h->kind == K_EXT) && h->len > left)
        return rd_fail(r, h->at, "truncated: %s of %llu bytes, %zu bytes left",
                       kind_names[h->kind], (unsigned long long)h->len, left);
    if (h->kind == K_ARRAY && h->len > left)
        return rd_fail(r, h->at, "array declares %llu elements, only %zu bytes left",
                       (unsigned long long)h->len, left);
    if (h->kind == K_MAP && h->len > left / 2)
        return rd_fail(r, h->at, "map declares %llu entries, only %zu bytes left",
                       (unsigned long long)h->len, left);
    return 0;
}

/* Skips one value of any type. depth is the nesting level of the value itself. */
static int rd_skip(struct rd *r, int depth)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc < 0)
        return rc;
    switch (h.kind) {
    case K_STR: case K_BIN: case K_EXT:
        r->pos += h.len;
        return 0;
    case K_ARRAY: case K_MAP:
        if (depth > FP8_MSG_MAX_DEPTH)
            return rd_fail(r, h.at, "nesting deeper than %d levels", FP8_MSG_MAX_DEPTH);
        for (uint64_t k = 0; k < (h.kind == K_MAP ? 2 * h.len : h.len); k++) {
            rc = rd_skip(r, depth + 1);
            if (rc < 0)
                return rc;
        }
        return 0;
    default:
        return 0;
    }
}

static int rd_want(struct rd *r, const struct head *h, enum kind kind, const char *key)
{
    if (h->kind == kind)
        return 0;
    return rd_fail(r, h->at, "%s: expected %s, got %s", key, kind_names[kind],
                   kind_names[h->kind]);
}

static int rd_uint(struct rd *r, const char *key, uint64_t max, uint64_t *out)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc == 0 && h.kind == K_NINT)
        return rd_fail(r, h.at, "%s: %lld is negative", key, (long long)h.i);
    if (rc == 0)
        rc = rd_want(r, &h, K_UINT, key);
    if (rc == 0 && h.u > max)
        return rd_fail(r, h.at, "%s: %llu is over %llu", key, (unsigned long long)h.u,
                       (unsigned long long)max);
    if (rc == 0)
        *out = h.u;
    return rc;
}

static int rd_u32(struct rd *r, const char *key, uint32_t *out)
{
    uint64_t v;
    int rc = rd_uint(r, key, UINT32_MAX, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

static int rd_i32(struct rd *r, const char *key, int32_t *out)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc < 0)
        return rc;
    if (h.kind == K_UINT && h.u <= INT32_MAX)
        *out = (int32_t)h.u;
    else if (h.kind == K_NINT && h.i >= INT32_MIN)
        *out = (int32_t)h.i;
    else if (h.kind == K_UINT || h.kind == K_NINT)
        return rd_fail(r, h.at, "%s: out of the 32-bit signed range", key);
    else
        return rd_want(r, &h, K_UINT, key);
    return 0;
}

/* Integers are accepted where a float is expected (a client may send `temperature: 0`);
 * the value must be finite and fit a float. */
static int rd_f32(struct rd *r, const char *key, float *out)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc < 0)
        return rc;
    double d;
    if (h.kind == K_FLOAT)
        d = h.f;
    else if (h.kind == K_UINT)
        d = (double)h.u;
    else if (h.kind == K_NINT)
        d = (double)h.i;
    else
        return rd_want(r, &h, K_FLOAT, key);
    if (!isfinite(d) || fabs(d) > 3.0e38)
        return rd_fail(r, h.at, "%s: %g is not a finite float", key, d);
    *out = (float)d;
    return 0;
}

static int rd_bool(struct rd *r, const char *key, bool *out)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc == 0)
        rc = rd_want(r, &h, K_BOOL, key);
    if (rc == 0)
        *out = h.b;
    return rc;
}

/* A string of at most max bytes, copied with a terminating NUL (an empty one is ""). */
static int rd_str(struct rd *r, const char *key, uint32_t max, struct fp8_msg_str *out)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc == 0)
        rc = rd_want(r, &h, K_STR, key);
    if (rc < 0)
        return rc;
    if (h.len > max)
        return rd_fail(r, h.at, "%s: %llu bytes, at most %u", key, (unsigned long long)h.len,
                       max);
    char *s = malloc(h.len + 1);
    if (!s)
        return fp8_err_set(r->err, -ENOMEM, "%s: out of memory for %llu bytes", key,
                           (unsigned long long)h.len);
    memcpy(s, r->base + r->pos, h.len);
    s[h.len] = '\0';
    r->pos += h.len;
    out->s = s;
    out->len = (uint32_t)h.len;
    return 0;
}

/* An array header of at most max elements (the byte check already ran in rd_head). */
static int rd_array(struct rd *r, const char *key, uint32_t max, uint32_t *n, int depth)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc == 0)
        rc = rd_want(r, &h, K_ARRAY, key);
    if (rc < 0)
        return rc;
    if (depth > FP8_MSG_MAX_DEPTH)
        return rd_fail(r, h.at, "nesting deeper than %d levels", FP8_MSG_MAX_DEPTH);
    if (h.len > max)
        return rd_fail(r, h.at, "%s: %llu elements, at most %u", key, (unsigned long long)h.len,
                       max);
    *n = (uint32_t)h.len;
    return 0;
}

static int rd_ids(struct rd *r, const char *key, struct fp8_msg_ids *out, int depth)
{
    uint32_t n;
    int rc = rd_array(r, key, UINT32_MAX, &n, depth);
    if (rc < 0)
        return rc;
    int32_t *ids = NULL;
    if (n) {
        ids = malloc((size_t)n * sizeof(*ids));
        if (!ids)
            return fp8_err_set(r->err, -ENOMEM, "%s: out of memory for %u ids", key, n);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t v;
        rc = rd_uint(r, key, INT32_MAX, &v);
        if (rc < 0) {
            free(ids);
            return rc;
        }
        ids[i] = (int32_t)v;
    }
    out->ids = ids;
    out->n = n;
    return 0;
}

/* ---- field tables ---------------------------------------------------------------------- */

/* Decodes the value of keys[idx] into ctx; depth is the value's nesting level. */
typedef int (*field_fn)(struct rd *r, int idx, void *ctx, int depth);

struct fields {
    const char *const *keys;
    int n;
    uint32_t required; /* bit per key index */
};

/* Walks a map of npairs entries: unknown keys and nil values are skipped, `v`/`op`/`id`
 * skipped at the top level (skip_common), duplicates and missing required keys rejected. */
static int rd_fields(struct rd *r, uint64_t npairs, size_t map_at, const struct fields *f,
                     field_fn fn, void *ctx, int depth, bool skip_common)
{
    uint32_t seen = 0;
    for (uint64_t k = 0; k < npairs; k++) {
        struct head h;
        int rc = rd_head(r, &h);
        if (rc < 0)
            return rc;
        if (h.kind != K_STR)
            return rd_fail(r, h.at, "map key is %s, keys must be strings", kind_names[h.kind]);
        const char *key = (const char *)r->base + r->pos;
        size_t klen = h.len;
        r->pos += h.len;

        int idx = -1;
        for (int i = 0; i < f->n; i++)
            if (strlen(f->keys[i]) == klen && memcmp(f->keys[i], key, klen) == 0)
                idx = i;
        bool common = skip_common && ((klen == 1 && key[0] == 'v') ||
                                      (klen == 2 && memcmp(key, "op", 2) == 0) ||
                                      (klen == 2 && memcmp(key, "id", 2) == 0));
        bool is_nil = r->pos < r->end && r->base[r->pos] == 0xc0;
        if (idx < 0 || common || is_nil) {
            rc = rd_skip(r, depth + 1);
            if (rc < 0)
                return rc;
            continue;
        }
        if (seen & (1u << idx))
            return rd_fail(r, h.at, "duplicate key \"%s\"", f->keys[idx]);
        seen |= 1u << idx;
        rc = fn(r, idx, ctx, depth + 1);
        if (rc < 0)
            return rc;
    }
    uint32_t missing = f->required & ~seen;
    if (missing)
        return rd_fail(r, map_at, "missing required key \"%s\"",
                       f->keys[__builtin_ctz(missing)]);
    return 0;
}

/* A nested map value: header check, then its fields. */
static int rd_submap(struct rd *r, const char *key, const struct fields *f, field_fn fn,
                     void *ctx, int depth)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc == 0)
        rc = rd_want(r, &h, K_MAP, key);
    if (rc < 0)
        return rc;
    if (depth > FP8_MSG_MAX_DEPTH)
        return rd_fail(r, h.at, "nesting deeper than %d levels", FP8_MSG_MAX_DEPTH);
    return rd_fields(r, h.len, h.at, f, fn, ctx, depth, false);
}

#define FIELDS(keys_, required_) {keys_, (int)(sizeof(keys_) / sizeof(keys_[0])), required_}

static const char *const hello_keys[] = {"client", "shm"};

static int hello_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_hello *m = ctx;
    (void)depth;
    if (idx == 0)
        return rd_str(r, "client", FP8_MSG_MAX_NAME_BYTES, &m->client);
    return rd_bool(r, "shm", &m->shm);
}

static const char *const turn_keys[] = {"role", "content"};

static int turn_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_turn *t = ctx;
    (void)depth;
    if (idx == 0)
        return rd_str(r, "role", FP8_MSG_MAX_NAME_BYTES, &t->role);
    return rd_str(r, "content", FP8_MSG_MAX_BYTES, &t->content);
}

enum {
    GEN_PROMPT, GEN_TOKENS, GEN_MESSAGES, GEN_ADD_GENERATION_PROMPT, GEN_ENABLE_THINKING,
    GEN_MAX_TOKENS, GEN_TEMPERATURE, GEN_TOP_P, GEN_TOP_K, GEN_MIN_P, GEN_SEED, GEN_STOP,
    GEN_IGNORE_EOS, GEN_PRIORITY,
};
static const char *const generate_keys[] = {
    "prompt", "tokens", "messages", "add_generation_prompt", "enable_thinking",
    "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "ignore_eos",
    "priority",
};

struct gen_ctx {
    struct fp8_msg_generate *g;
    int n_prompts; /* how many of prompt/tokens/messages were given */
};

static int generate_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct gen_ctx *c = ctx;
    struct fp8_msg_generate *g = c->g;
    struct fp8_msg_sampling *sp = &g->sampling;
    const char *key = generate_keys[idx];
    int rc = 0;
    bool b;

    switch (idx) {
    case GEN_PROMPT:
        c->n_prompts++;
        g->kind = FP8_MSG_PROMPT_TEXT;
        return rd_str(r, key, FP8_MSG_MAX_BYTES, &g->prompt);
    case GEN_TOKENS:
        c->n_prompts++;
        g->kind = FP8_MSG_PROMPT_TOKENS;
        return rd_ids(r, key, &g->tokens, depth);
    case GEN_MESSAGES: {
        uint32_t n;
        c->n_prompts++;
        g->kind = FP8_MSG_PROMPT_CHAT;
        rc = rd_array(r, key, UINT32_MAX, &n, depth);
        if (rc < 0 || n == 0)
            return rc;
        g->messages = calloc(n, sizeof(*g->messages));
        if (!g->messages)
            return fp8_err_set(r->err, -ENOMEM, "messages: out of memory for %u turns", n);
        static const struct fields tf = FIELDS(turn_keys, 0x3);
        for (uint32_t i = 0; i < n; i++) {
            g->n_messages = i + 1; /* so that fp8_msg_free sees what was decoded */
            rc = rd_submap(r, "messages[]", &tf, turn_field, &g->messages[i], depth + 1);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case GEN_ADD_GENERATION_PROMPT:
        return rd_bool(r, key, &g->add_generation_prompt);
    case GEN_ENABLE_THINKING:
        rc = rd_bool(r, key, &b);
        g->enable_thinking = b;
        return rc;
    case GEN_MAX_TOKENS:
        sp->set |= FP8_MSG_SAMPLING_MAX_TOKENS;
        return rd_u32(r, key, &sp->max_tokens);
    case GEN_TEMPERATURE:
        sp->set |= FP8_MSG_SAMPLING_TEMPERATURE;
        return rd_f32(r, key, &sp->temperature);
    case GEN_TOP_P:
        sp->set |= FP8_MSG_SAMPLING_TOP_P;
        return rd_f32(r, key, &sp->top_p);
    case GEN_TOP_K:
        sp->set |= FP8_MSG_SAMPLING_TOP_K;
        return rd_i32(r, key, &sp->top_k);
    case GEN_MIN_P:
        sp->set |= FP8_MSG_SAMPLING_MIN_P;
        return rd_f32(r, key, &sp->min_p);
    case GEN_SEED:
        sp->set |= FP8_MSG_SAMPLING_SEED;
        return rd_uint(r, key, UINT64_MAX, &sp->seed);
    case GEN_STOP: {
        uint32_t n;
        rc = rd_array(r, key, FP8_MSG_MAX_STOP, &n, depth);
        if (rc < 0 || n == 0)
            return rc;
        g->stop = calloc(n, sizeof(*g->stop));
        if (!g->stop)
            return fp8_err_set(r->err, -ENOMEM, "stop: out of memory");
        for (uint32_t i = 0; i < n; i++) {
            g->n_stop = i + 1;
            rc = rd_str(r, key, FP8_MSG_MAX_STOP_BYTES, &g->stop[i]);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case GEN_IGNORE_EOS:
        return rd_bool(r, key, &g->ignore_eos);
    default:
        return rd_i32(r, key, &g->priority);
    }
}

static const char *const cancel_keys[] = {"target", "handle"};

static int cancel_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_cancel *m = ctx;
    (void)depth;
    if (idx == 0)
        return rd_uint(r, "target", UINT64_MAX, &m->target);
    return rd_uint(r, "handle", UINT64_MAX, &m->handle);
}

static const char *const tokenize_keys[] = {"text", "add_special"};

static int tokenize_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_tokenize *m = ctx;
    (void)depth;
    if (idx == 0)
        return rd_str(r, "text", FP8_MSG_MAX_BYTES, &m->text);
    return rd_bool(r, "add_special", &m->add_special);
}

static const char *const tokens_keys[] = {"tokens"};

static int tokens_field(struct rd *r, int idx, void *ctx, int depth)
{
    (void)idx;
    return rd_ids(r, "tokens", ctx, depth);
}

static int model_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_model *m = ctx;
    struct fp8_msg_str *strs[] = {&m->name, &m->arch, &m->backend, &m->weights,
                                  &m->kv_cache_dtype};
    uint32_t *nums[] = {&m->vocab_size, &m->max_model_len, &m->max_num_seqs};
    (void)depth;
    if (idx < 5)
        return rd_str(r, model_keys[idx], FP8_MSG_MAX_NAME_BYTES, strs[idx]);
    return rd_u32(r, model_keys[idx], nums[idx - 5]);
}

static const struct fields model_fields = FIELDS(model_keys, 0x61); /* name, vocab, len */

static const char *const welcome_keys[] = {"session", "server", "model", "shm", "shm_bytes"};

static int welcome_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_welcome *m = ctx;
    switch (idx) {
    case 0: return rd_uint(r, "session", UINT64_MAX, &m->session);
    case 1: return rd_str(r, "server", FP8_MSG_MAX_NAME_BYTES, &m->server);
    case 2: return rd_submap(r, "model", &model_fields, model_field, &m->model, depth);
    case 3: return rd_str(r, "shm", FP8_MSG_MAX_NAME_BYTES, &m->shm);
    default: return rd_uint(r, "shm_bytes", UINT64_MAX, &m->shm_bytes);
    }
}

static const char *const accepted_keys[] = {"slot", "prompt_tokens", "handle"};

static int accepted_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_accepted *m = ctx;
    (void)depth;
    if (idx == 0)
        return rd_i32(r, "slot", &m->slot); /* >= -1: check_msg */
    if (idx == 1)
        return rd_u32(r, "prompt_tokens", &m->prompt_tokens);
    return rd_uint(r, "handle", UINT64_MAX, &m->handle);
}

static const char *const chunk_keys[] = {"tokens", "text"};

static int chunk_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_chunk *m = ctx;
    if (idx == 0)
        return rd_ids(r, "tokens", &m->tokens, depth);
    return rd_str(r, "text", FP8_MSG_MAX_BYTES, &m->text);
}

/* Reads a string naming one of names[0..n) into *out. */
static int rd_enum(struct rd *r, const char *key, const char *const *names, int n, int *out)
{
    struct head h;
    int rc = rd_head(r, &h);
    if (rc == 0)
        rc = rd_want(r, &h, K_STR, key);
    if (rc < 0)
        return rc;
    const char *s = (const char *)r->base + r->pos;
    r->pos += h.len;
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == h.len && memcmp(names[i], s, h.len) == 0) {
            *out = i;
            return 0;
        }
    return rd_fail(r, h.at, "%s: unknown value \"%.*s\"", key, (int)(h.len > 64 ? 64 : h.len), s);
}

static const char *const usage_keys[] = {"prompt_tokens", "completion_tokens"};
static const char *const timings_keys[] = {"queue_us", "prefill_us", "decode_us"};

static int usage_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_done *d = ctx;
    (void)depth;
    return rd_u32(r, usage_keys[idx], idx == 0 ? &d->prompt_tokens : &d->completion_tokens);
}

static int timings_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_done *d = ctx;
    uint64_t *v[] = {&d->queue_us, &d->prefill_us, &d->decode_us};
    (void)depth;
    return rd_uint(r, timings_keys[idx], UINT64_MAX, v[idx]);
}

static const char *const done_keys[] = {"finish", "usage", "timings"};

static int done_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_done *d = ctx;
    static const struct fields uf = FIELDS(usage_keys, 0x3);
    static const struct fields tf = FIELDS(timings_keys, 0x7);
    int v = 0, rc;
    switch (idx) {
    case 0:
        rc = rd_enum(r, "finish", finish_names, FP8_MSG_FINISH_COUNT, &v);
        d->finish = (enum fp8_msg_finish)v;
        return rc;
    case 1: return rd_submap(r, "usage", &uf, usage_field, d, depth);
    default: return rd_submap(r, "timings", &tf, timings_field, d, depth);
    }
}

static const char *const text_keys[] = {"text"};

static int text_field(struct rd *r, int idx, void *ctx, int depth)
{
    (void)idx, (void)depth;
    return rd_str(r, "text", FP8_MSG_MAX_BYTES, ctx);
}

static const char *const counters_keys[] = {"running", "waiting", "sessions", "kv_blocks_used",
                                            "kv_blocks_total", "uptime_ms", "prompt_tokens",
                                            "generated_tokens"};

static int counters_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_counters *c = ctx;
    uint32_t *u32s[] = {&c->running, &c->waiting, &c->sessions, &c->kv_blocks_used,
                        &c->kv_blocks_total};
    uint64_t *u64s[] = {&c->uptime_ms, &c->prompt_tokens, &c->generated_tokens};
    (void)depth;
    if (idx < 5)
        return rd_u32(r, counters_keys[idx], u32s[idx]);
    return rd_uint(r, counters_keys[idx], UINT64_MAX, u64s[idx - 5]);
}

static const char *const error_keys[] = {"code", "message"};

static int error_field(struct rd *r, int idx, void *ctx, int depth)
{
    struct fp8_msg_error *e = ctx;
    int v = 0, rc;
    (void)depth;
    if (idx == 1)
        return rd_str(r, "message", FP8_MSG_MAX_BYTES, &e->message);
    rc = rd_enum(r, "code", errc_names, FP8_MSG_ERRC_COUNT, &v);
    e->code = (enum fp8_msg_errc)v;
    return rc;
}

/* Pass 1: `v`, `op` and `id` of the top-level map, wherever they sit. */
struct common {
    bool has_v, has_op, has_id;
    uint64_t v, id;
    int op;
};

static int rd_common(struct rd *r, uint64_t npairs, struct common *c)
{
    for (uint64_t k = 0; k < npairs; k++) {
        struct head h;
        int rc = rd_head(r, &h);
        if (rc < 0)
            return rc;
        if (h.kind != K_STR)
            return rd_fail(r, h.at, "map key is %s, keys must be strings", kind_names[h.kind]);
        const char *key = (const char *)r->base + r->pos;
        r->pos += h.len;
        if (h.len == 1 && key[0] == 'v') {
            if (c->has_v)
                return rd_fail(r, h.at, "duplicate key \"v\"");
            c->has_v = true;
            rc = rd_uint(r, "v", UINT32_MAX, &c->v);
        } else if (h.len == 2 && memcmp(key, "id", 2) == 0) {
            if (c->has_id)
                return rd_fail(r, h.at, "duplicate key \"id\"");
            c->has_id = true;
            rc = rd_uint(r, "id", UINT64_MAX, &c->id);
        } else if (h.len == 2 && memcmp(key, "op", 2) == 0) {
            struct head oh;
            if (c->has_op)
                return rd_fail(r, h.at, "duplicate key \"op\"");
            c->has_op = true;
            size_t at = r->pos;
            rc = rd_head(r, &oh);
            if (rc == 0)
                rc = rd_want(r, &oh, K_STR, "op");
            if (rc < 0)
                return rc;
            const char *s = (const char *)r->base + r->pos;
            r->pos += oh.len;
            c->op = -1;
            for (int i = 0; i < FP8_MSG_OP_COUNT; i++)
                if (strlen(op_names[i]) == oh.len && memcmp(op_names[i], s, oh.len) == 0)
                    c->op = i;
            if (c->op < 0)
                return fp8_err_set(r->err, -EOPNOTSUPP, "byte %zu: unknown op \"%.*s\"", at,
                                   (int)(oh.len > 64 ? 64 : oh.len), s);
        } else
            rc = rd_skip(r, 2);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int rd_top(struct rd *r, struct head *h)
{
    int rc = rd_head(r, h);
    if (rc == 0 && h->kind != K_MAP)
        return rd_fail(r, h->at, "a message is a map, got %s", kind_names[h->kind]);
    return rc;
}

int fp8_msg_decode(const void *buf, size_t len, enum fp8_msg_dir dir, struct fp8_msg *out,
                   struct fp8_err *err)
{
    if ((!buf && len) || !out)
        return fp8_err_set(err, -EINVAL, "fp8_msg_decode: NULL argument");
    if (len > FP8_MSG_MAX_BYTES)
        return fp8_err_set(err, -EMSGSIZE, "message of %zu bytes, at most %u", len,
                           FP8_MSG_MAX_BYTES);
    struct rd r = {.base = buf, .pos = 0, .end = len, .err = err};
    struct head top;
    struct common c = {.op = -1};
    int rc = rd_top(&r, &top);
    if (rc == 0)
        rc = rd_common(&r, top.len, &c);
    if (rc < 0)
        return rc;
    if (r.pos != r.end)
        return rd_fail(&r, r.pos, "%zu trailing bytes after the message", r.end - r.pos);
    if (!c.has_v)
        return fp8_err_set(err, -EBADMSG, "missing protocol version \"v\"");
    if (c.v != FP8_PROTO_VERSION)
        return fp8_err_set(err, -EPROTONOSUPPORT,
                           "protocol version %llu is not supported (this side speaks %d)",
                           (unsigned long long)c.v, FP8_PROTO_VERSION);
    if (!c.has_op)
        return fp8_err_set(err, -EBADMSG, "missing key \"op\"");
    if (!c.has_id)
        return fp8_err_set(err, -EBADMSG, "missing key \"id\"");
    if (op_is_request(c.op) != (dir == FP8_MSG_DIR_REQUEST))
        return fp8_err_set(err, -EOPNOTSUPP, "\"%s\" is a %s, not accepted here", op_names[c.op],
                           op_is_request(c.op) ? "request" : "reply");

    struct fp8_msg m;
    fp8_msg_init(&m, c.op, c.id);
    struct gen_ctx gc = {.g = &m.u.generate};
    struct fields f = {0};
    field_fn fn = NULL;
    void *ctx = &m.u;
    switch (m.op) {
    case FP8_MSG_OP_HELLO: f = (struct fields)FIELDS(hello_keys, 0), fn = hello_field; break;
    case FP8_MSG_OP_GENERATE:
        f = (struct fields)FIELDS(generate_keys, 0), fn = generate_field, ctx = &gc;
        break;
    case FP8_MSG_OP_CANCEL: f = (struct fields)FIELDS(cancel_keys, 1), fn = cancel_field; break;
    case FP8_MSG_OP_TOKENIZE:
        f = (struct fields)FIELDS(tokenize_keys, 1), fn = tokenize_field;
        break;
    case FP8_MSG_OP_DETOKENIZE:
    case FP8_MSG_OP_TOKENS: f = (struct fields)FIELDS(tokens_keys, 1), fn = tokens_field; break;
    case FP8_MSG_OP_WELCOME:
        f = (struct fields)FIELDS(welcome_keys, 0x7), fn = welcome_field;
        break;
    case FP8_MSG_OP_ACCEPTED:
        f = (struct fields)FIELDS(accepted_keys, 0x3), fn = accepted_field;
        break;
    case FP8_MSG_OP_CHUNK: f = (struct fields)FIELDS(chunk_keys, 0x1), fn = chunk_field; break;
    case FP8_MSG_OP_DONE: f = (struct fields)FIELDS(done_keys, 0x7), fn = done_field; break;
    case FP8_MSG_OP_TEXT: f = (struct fields)FIELDS(text_keys, 1), fn = text_field; break;
    case FP8_MSG_OP_MODEL: f = model_fields, fn = model_field; break;
    case FP8_MSG_OP_COUNTERS:
        f = (struct fields)FIELDS(counters_keys, 0), fn = counters_field;
        break;
    case FP8_MSG_OP_ERROR: f = (struct fields)FIELDS(error_keys, 0x3), fn = error_field; break;
    default: break; /* info, stats, ping, bye, pong, ok: no fields */
    }

    /* Pass 2 over the same map; pass 1 proved it well-formed up to the decoding of values. */
    r.pos = 0;
    rc = rd_top(&r, &top);
    if (rc == 0 && fn)
        rc = rd_fields(&r, top.len, top.at, &f, fn, ctx, 1, true);
    if (rc == 0 && m.op == FP8_MSG_OP_GENERATE && gc.n_prompts != 1)
        rc = fp8_err_set(err, -EBADMSG,
                         "generate needs exactly one of \"prompt\", \"tokens\", \"messages\" "
                         "(got %d)", gc.n_prompts);
    if (rc == 0) {
        rc = check_msg(&m, err);
        if (rc < 0) /* the checks say -EINVAL for the encoder; for input it is a bad message */
            rc = fp8_err_prefix(err, -EBADMSG, "%s", op_names[m.op]);
    }
    if (rc < 0) {
        fp8_msg_free(&m);
        return rc;
    }
    *out = m;
    return 0;
}

int fp8_msg_peek_id(const void *buf, size_t len, uint64_t *id)
{
    if (!buf || !id || len > FP8_MSG_MAX_BYTES)
        return -ENOENT;
    struct rd r = {.base = buf, .pos = 0, .end = len, .err = NULL};
    struct head top;
    struct common c = {.op = -1};
    if (rd_top(&r, &top) < 0)
        return -ENOENT;
    /* Stop at the first malformed value: the id may well sit before it. */
    (void)rd_common(&r, top.len, &c);
    if (!c.has_id)
        return -ENOENT;
    *id = c.id;
    return 0;
}

static void str_free(struct fp8_msg_str *s)
{
    free((void *)s->s);
}

static void model_free(struct fp8_msg_model *m)
{
    str_free(&m->name);
    str_free(&m->arch);
    str_free(&m->backend);
    str_free(&m->weights);
    str_free(&m->kv_cache_dtype);
}

void fp8_msg_free(struct fp8_msg *msg)
{
    if (!msg)
        return;
    switch (msg->op) {
    case FP8_MSG_OP_HELLO: str_free(&msg->u.hello.client); break;
    case FP8_MSG_OP_GENERATE: {
        struct fp8_msg_generate *g = &msg->u.generate;
        str_free(&g->prompt);
        free(g->tokens.ids);
        for (uint32_t i = 0; i < g->n_messages; i++) {
            str_free(&g->messages[i].role);
            str_free(&g->messages[i].content);
        }
        free(g->messages);
        for (uint32_t i = 0; i < g->n_stop; i++)
            str_free(&g->stop[i]);
        free(g->stop);
        break;
    }
    case FP8_MSG_OP_TOKENIZE: str_free(&msg->u.tokenize.text); break;
    case FP8_MSG_OP_DETOKENIZE: free(msg->u.detokenize.ids); break;
    case FP8_MSG_OP_WELCOME:
        str_free(&msg->u.welcome.server);
        model_free(&msg->u.welcome.model);
        str_free(&msg->u.welcome.shm);
        break;
    case FP8_MSG_OP_CHUNK:
        free(msg->u.chunk.tokens.ids);
        str_free(&msg->u.chunk.text);
        break;
    case FP8_MSG_OP_TOKENS: free(msg->u.tokens.ids); break;
    case FP8_MSG_OP_TEXT: str_free(&msg->u.text); break;
    case FP8_MSG_OP_MODEL: model_free(&msg->u.model); break;
    case FP8_MSG_OP_ERROR: str_free(&msg->u.error.message); break;
    default: break;
    }
    memset(msg, 0, sizeof(*msg));
}
