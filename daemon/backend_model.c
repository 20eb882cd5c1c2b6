#include "daemon/backend_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "engine/weights.h"
#ifdef FP8D_WITH_CUDA
#include "kernels/cuda/backend_cuda.h"
#endif

/* The KV pool when nothing else says: every sequence at the model length, at most this. */
#define KV_POOL_MAX_BYTES (1ll << 30)

struct mb {
    struct fp8_backend *be;
    struct fp8_engine engine;           /* model, sampler, scheduler */
    bool engine_ok;
    const struct fp8_model_config *cfg;
    struct fp8_tokenizer *tok;          /* NULL for a synthetic model */
    struct fp8_chat_template chat;
    bool has_chat;
    const struct fp8d_gen_events *ev;   /* of the step in progress */
    float repetition_penalty, presence_penalty; /* serve's options (not in the protocol) */
    char name[256], weights[16], kv[16], backend[16], arch[32];
};

/* Marks a request the stop hook ended (fp8_req_params.user): STOP then means a stop
 * string, not an end-of-sequence token. */
static char hook_stopped;

/* ---- text ------------------------------------------------------------------------------- */

static int mb_tokenize(void *ctx, const char *text, size_t len, bool add_special, int32_t **ids,
                       size_t *n, struct fp8_err *err)
{
    struct mb *m = ctx;
    if (!m->tok)
        return fp8_err_set(err, -ENOTSUP, "this model has no tokenizer.json: send token ids");
    return fp8_tokenizer_encode(m->tok, text, len, add_special, ids, n, err);
}

static int mb_detokenize(void *ctx, const int32_t *ids, size_t n, char **text, size_t *len,
                         struct fp8_err *err)
{
    struct mb *m = ctx;
    if (!m->tok)
        return fp8_err_set(err, -ENOTSUP, "this model has no tokenizer.json");
    return fp8_tokenizer_decode(m->tok, ids, n, false, text, len, err);
}

static int mb_chat(void *ctx, const struct fp8_msg_turn *turns, uint32_t n, bool add_generation,
                   int enable_thinking, char **out, size_t *len, struct fp8_err *err)
{
    struct mb *m = ctx;
    if (!m->has_chat)
        return fp8_err_set(err, -ENOTSUP, "no chat template for this model (%s)", m->cfg->arch_name);
    struct fp8_chat_message *msgs = calloc(n, sizeof(*msgs));
    if (!msgs)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        msgs[i].role = turns[i].role.s;
        msgs[i].content = turns[i].content.s ? turns[i].content.s : "";
    }
    int rc = fp8_chat_render(&m->chat, msgs, n, add_generation, enable_thinking, out, len, err);
    free(msgs);
    return rc;
}

struct mb_detok {
    struct fp8_detok d;
    bool on;
};

static void *mb_detok_new(void *ctx)
{
    struct mb *m = ctx;
    struct mb_detok *d = calloc(1, sizeof(*d));
    if (d && m->tok)
        d->on = fp8_detok_init(&d->d, m->tok, true, NULL) == 0;
    return d;
}

static int mb_detok_push(void *p, int32_t id, const char **text, size_t *len)
{
    struct mb_detok *d = p;
    *text = "";
    *len = 0;
    return d->on ? fp8_detok_push(&d->d, id, text, len, NULL) : 0;
}

static int mb_detok_finish(void *p, const char **text, size_t *len)
{
    struct mb_detok *d = p;
    *text = "";
    *len = 0;
    return d->on ? fp8_detok_finish(&d->d, text, len, NULL) : 0;
}

static void mb_detok_free(void *p)
{
    struct mb_detok *d = p;
    if (d && d->on)
        fp8_detok_free(&d->d);
    free(d);
}

/* ---- generation ---------------------------------------------------------------------------- */

static bool mb_on_token(void *ctx, struct fp8_request *req, int32_t token)
{
    struct mb *m = ctx;
    bool stop = m->ev->on_token(m->ev->ctx, req->id, token);
    if (stop)
        req->params.user = &hook_stopped;
    return stop;
}

static int mb_submit(void *ctx, uint64_t key, const int32_t *prompt, int32_t n_prompt,
                     const struct fp8d_gen_params *p, struct fp8_err *err)
{
    struct mb *m = ctx;
    struct fp8_req_params rp = {
        .sampling = {.temperature = p->temperature, .top_p = p->top_p, .min_p = p->min_p,
                     .top_k = p->top_k, .repetition_penalty = m->repetition_penalty,
                     .presence_penalty = m->presence_penalty,
                     .seed = p->seed},
        .max_tokens = p->max_tokens,
        .priority = -p->priority, /* the scheduler serves lower first */
        .ignore_eos = p->ignore_eos,
    };
    return fp8_sched_submit(&m->engine.sched, key, prompt, n_prompt, &rp, NULL, err);
}

static int mb_cancel(void *ctx, uint64_t key)
{
    struct mb *m = ctx;
    return fp8_sched_cancel(&m->engine.sched, key);
}

static int mb_pause(void *ctx, uint64_t key, bool paused)
{
    struct mb *m = ctx;
    return fp8_sched_pause(&m->engine.sched, key, paused);
}

static bool mb_busy(void *ctx)
{
    struct mb *m = ctx;
    return !fp8_sched_all_paused(&m->engine.sched) || m->engine.sched.n_done > 0;
}

static void mb_reap(struct mb *m, const struct fp8d_gen_events *ev)
{
    struct fp8_request *req;
    while (fp8_sched_reap(&m->engine.sched, &req)) {
        struct fp8_req_phases ph;
        fp8_req_phases_get(&req->timings, &ph);
        struct fp8d_gen_result r = {
            .prompt_tokens = (uint32_t)req->usage.prompt_tokens,
            .completion_tokens = (uint32_t)req->usage.completion_tokens,
            .queue_us = (uint64_t)ph.queue_ns / 1000,
            .prefill_us = (uint64_t)ph.prefill_ns / 1000,
            .decode_us = (uint64_t)ph.decode_ns / 1000,
        };
        switch (req->finish) {
        case FP8_REQ_FINISH_STOP:
            r.end = req->params.user == &hook_stopped ? FP8D_GEN_END_STOP : FP8D_GEN_END_EOS;
            break;
        case FP8_REQ_FINISH_LENGTH: r.end = FP8D_GEN_END_LENGTH; break;
        case FP8_REQ_FINISH_CANCELLED: r.end = FP8D_GEN_END_CANCELLED; break;
        default: r.end = FP8D_GEN_END_ERROR; break;
        }
        uint64_t key = req->id;
        fp8_request_free(req);
        ev->on_end(ev->ctx, key, &r);
    }
}

static int mb_step(void *ctx, const struct fp8d_gen_events *ev, struct fp8_err *err)
{
    struct mb *m = ctx;
    int rc = 0;
    m->ev = ev;
    mb_reap(m, ev); /* cancelled since the last step */
    if (!fp8_sched_all_paused(&m->engine.sched))
        rc = fp8_sched_step(&m->engine.sched, err);
    mb_reap(m, ev);
    m->ev = NULL;
    /* A failed tensor-parallel group cannot run another step: the daemon must go. */
    if (rc < 0 && m->be->group && fp8_backend_group_aborted(m->be->group))
        return fp8_err_prefix(err, -ENOTRECOVERABLE, "tensor-parallel group failed");
    return rc < 0 ? rc : 0;
}

static void mb_load(void *ctx, struct fp8d_load *out)
{
    struct mb *m = ctx;
    const struct fp8_kv_blocks *kv = &m->engine.sched.kv;
    *out = (struct fp8d_load){
        .running = (uint32_t)m->engine.sched.n_running,
        .waiting = (uint32_t)m->engine.sched.n_waiting,
        .kv_blocks_used = (uint32_t)(kv->n_blocks - kv->n_free - kv->n_cached),
        .kv_blocks_total = (uint32_t)kv->n_blocks,
    };
}

static void mb_free(void *ctx)
{
    struct mb *m = ctx;
    if (!m)
        return;
    if (m->engine_ok)
        fp8_engine_free(&m->engine);
    fp8_tokenizer_free(m->tok);
    fp8_backend_free(m->be);
    free(m);
}

/* The start-up lines: KV pool, decode graphs captured, device memory by class. */
static void mb_log_start(const struct mb *m, const struct fp8_engine_params *p)
{
    const struct fp8_kv_blocks *kv = &m->engine.sched.kv;
    fp8d_log(FP8D_LOG_INFO, "KV pool: %d blocks x %d slots = %.3f GB (%lld bytes a block; "
             "%d positions a sequence, %d sequences)", (int)kv->n_blocks, (int)p->block_size,
             (double)kv->n_blocks * (double)m->engine.sched.params.kv_bytes_per_block / 1e9,
             (long long)m->engine.sched.params.kv_bytes_per_block,
             (int)m->engine.sched.params.max_model_len, (int)p->max_num_seqs);
    const struct fp8_model_warmup *w = &m->engine.warmup;
    if (m->engine.warmed) {
        char sizes[128] = "";
        size_t off = 0;
        for (int32_t i = w->n_buckets - 1; i >= 0 && off < sizeof(sizes); i--)
            off += (size_t)snprintf(sizes + off, sizeof(sizes) - off, "%s%d",
                                    i == w->n_buckets - 1 ? "" : ",", (int)w->buckets[i]);
        bool group = m->be->group && m->be->group->n_ranks > 1;
        fp8d_log(FP8D_LOG_INFO, "CUDA graphs: decode batch sizes %s captured in %.3f s "
                 "(%lld graphs); %s", sizes, w->seconds, (long long)w->n_captures,
                 group ? "a tensor-parallel group captures other batch sizes on first use"
                       : "smaller batches are padded to the next size");
    } else if (m->be->decode_graphs) {
        fp8d_log(FP8D_LOG_INFO, "CUDA graphs: off (--enforce-eager)");
    }
#ifdef FP8D_WITH_CUDA
    struct fp8_cuda_mem mem;
    struct fp8_err err;
    if (!strcmp(m->be->name, "cuda") && fp8_backend_cuda_mem(m->be, &mem, &err) == 0) {
        double used = (double)(mem.device_total - mem.device_free);
        double sum = (double)(mem.weights + mem.kv + mem.activations + mem.scratch +
                              mem.workspace + mem.graphs);
        fp8d_log(FP8D_LOG_INFO, "device memory: %.3f GB used of %.1f GB (cudaMemGetInfo) = "
                 "weights %.3f + KV pool %.3f + activations %.3f + scratch %.3f + cuBLASLt "
                 "workspace %.3f + graphs %.3f + unexplained %.3f (CUDA context, cuBLASLt, "
                 "rounding, other processes)", used / 1e9, (double)mem.device_total / 1e9,
                 (double)mem.weights / 1e9, (double)mem.kv / 1e9, (double)mem.activations / 1e9,
                 (double)mem.scratch / 1e9, (double)mem.workspace / 1e9,
                 (double)mem.graphs / 1e9, (used - sum) / 1e9);
    }
#endif
}

static const char *dtype_name(enum fp8_dtype d)
{
    return d == FP8_DTYPE_E4M3 ? "fp8" : d == FP8_DTYPE_BF16 ? "bf16" : "f32";
}

int fp8d_backend_model_open(struct fp8d_backend *out, const struct fp8d_opts *o,
                            struct fp8_err *err)
{
    struct fp8_weights *w = NULL;
    struct mb *m = calloc(1, sizeof(*m));
    int rc;
    if (!m)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    if (!o->model_dir == !o->synthetic) {
        rc = fp8_err_set(err, -EINVAL, "one of --model DIR or --synthetic PRESET is required");
        goto fail;
    }
    rc = o->model_dir ? fp8_weights_open_dir(o->model_dir, &w, err)
                      : fp8_weights_open_synthetic(o->synthetic, 0, &w, err);
    if (rc < 0)
        goto fail;
    const struct fp8_model_config *cfg = fp8_weights_config(w);
    int32_t max_len = o->max_model_len ? o->max_model_len : cfg->max_position_embeddings;
    struct fp8_engine_params p = fp8_engine_params_default();
    p.weight_dtype = o->weights;
    p.kv_dtype = o->kv_cache_dtype;
    p.max_num_seqs = o->max_num_seqs;
    p.max_num_batched_tokens = o->max_num_batched_tokens;
    p.max_model_len = max_len;
    /* Every sequence at the model length, at most KV_POOL_MAX_BYTES (beyond that the
     * scheduler preempts). Sizing it from --gpu-memory-utilization needs a free-memory
     * query the backends do not offer yet. */
    struct fp8_kv_cache_desc one = fp8_model_kv_desc(cfg, p.kv_dtype, p.block_size, 1);
    p.kv_budget_bytes = (int64_t)p.max_num_seqs * ((max_len + p.block_size - 1) / p.block_size) *
                        fp8_kv_block_bytes(&one);
    if (p.kv_budget_bytes > KV_POOL_MAX_BYTES)
        p.kv_budget_bytes = KV_POOL_MAX_BYTES;
    rc = fp8d_opts_backend(o, &m->be, err);
    if (rc < 0)
        goto fail;
    rc = fp8_engine_init(&m->engine, w, m->be, &p, err);
    if (rc < 0)
        goto fail;
    m->engine_ok = true;
    mb_log_start(m, &p);
    m->repetition_penalty = o->sampling.repetition_penalty;
    m->presence_penalty = o->sampling.presence_penalty;
    m->cfg = cfg = fp8_model_get_config(m->engine.model);
    struct fp8_token_hook hook = {m, mb_on_token};
    fp8_sched_set_hook(&m->engine.sched, &hook);

    if (o->model_dir) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/tokenizer.json", o->model_dir);
        rc = fp8_tokenizer_load(&m->tok, path, err);
        if (rc < 0)
            goto fail;
        m->has_chat = fp8_chat_template_init(&m->chat, cfg->arch_name, NULL) == 0;
    }

    const char *base = o->model_dir ? strrchr(o->model_dir, '/') : NULL;
    snprintf(m->name, sizeof(m->name), "%s", o->synthetic ? o->synthetic
                                            : base && base[1] ? base + 1 : o->model_dir);
    snprintf(m->weights, sizeof(m->weights), "%s", dtype_name(o->weights));
    snprintf(m->kv, sizeof(m->kv), "%s", dtype_name(o->kv_cache_dtype));
    snprintf(m->backend, sizeof(m->backend), "%s", o->backend);
    snprintf(m->arch, sizeof(m->arch), "%s",
             cfg->arch == FP8_ARCH_GEMMA3 ? "gemma3" : cfg->n_experts ? "qwen3_moe" : "qwen3");
    fp8_weights_free(w);
    w = NULL;

    struct fp8d_backend b = {
        .ctx = m,
        .model = {
            .name = {m->name, (uint32_t)strlen(m->name)},
            .arch = {m->arch, (uint32_t)strlen(m->arch)},
            .backend = {m->backend, (uint32_t)strlen(m->backend)},
            .weights = {m->weights, (uint32_t)strlen(m->weights)},
            .kv_cache_dtype = {m->kv, (uint32_t)strlen(m->kv)},
            .vocab_size = (uint32_t)cfg->vocab_size,
            .max_model_len = (uint32_t)max_len,
            .max_num_seqs = (uint32_t)o->max_num_seqs,
        },
        /* the model's generation_config.json, unless the command line said otherwise */
        .defaults = {
            .temperature = o->temperature_set ? o->sampling.temperature : cfg->default_temperature,
            .top_p = o->top_p_set ? o->sampling.top_p : cfg->default_top_p,
            .top_k = o->top_k_set ? o->sampling.top_k : cfg->default_top_k,
            .min_p = o->sampling.min_p,
        },
        .tokenize = mb_tokenize,
        .detokenize = mb_detokenize,
        .chat = mb_chat,
        .detok_new = mb_detok_new,
        .detok_push = mb_detok_push,
        .detok_finish = mb_detok_finish,
        .detok_free = mb_detok_free,
        .submit = mb_submit,
        .cancel = mb_cancel,
        .pause = mb_pause,
        .busy = mb_busy,
        .step = mb_step,
        .load = mb_load,
        .free = mb_free,
    };
    *out = b;
    return 0;

fail:
    fp8_weights_free(w);
    mb_free(m);
    return rc;
}
