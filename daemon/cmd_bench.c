/* fp8d bench: decode throughput per batch size and time to first token, with the memory
 * the run holds and the fraction of the weight-streaming roofline it reaches.
 *
 * --synthetic on the cuda backend fills every weight on the device (random e4m3 codes
 * with the preset's exact shapes: nothing is generated on the host). Each batch row runs
 * B sequences, each first prefilled with --context tokens, then --tokens greedy decode
 * steps (drawn on the device by the `sample` op: only token ids cross to the host; greedy
 * unless --temperature is given, then with the sampling options), timed on the host clock
 * around the steps (each step ends with a device sync). Time to first token: one
 * --prompt-tokens prompt in one step, through its first greedy token, median of 3 after a
 * warm-up.
 *
 * --tensor-parallel-size N: the model split over N GPUs (engine/models/tp.c); each GPU
 * streams 1/N of the weights, so the roofline is (bytes / N) / bandwidth. After each
 * batch size's timed steps, three more run eager with CUDA events around every
 * all_reduce_sum on rank 0's stream (graph replays cannot be timed per node): the
 * all-reduce time per step, a late peer's wait included. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "daemon/commands.h"
#include "daemon/opts.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/weights.h"
#ifdef FP8D_WITH_CUDA
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_ops.h"
#endif

#define BENCH_BLOCK 16
#define BENCH_MAX_BATCH 64

struct bench_args {
    int32_t batch[16];
    int32_t n_batch;
    int32_t tokens, prompt_tokens, context;
    bool json;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d bench (--synthetic PRESET | --model DIR) [--batch 1,2,4,8,16] [--tokens 128]\n"
               "                  [--prompt-tokens 512] [--context 32] [--json] [options]\n"
               "decode tok/s per batch size (sampled on the device: greedy, or --temperature with\n"
               "the sampling options; a tensor-parallel group draws non-greedy rows on the host),\n"
               "peak memory by class, roofline\n"
               "fraction, and time to first token for a --prompt-tokens prompt\n%s",
            fp8d_opts_help);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_batches(const char *s, struct bench_args *a, struct fp8_err *err)
{
    int32_t *v = NULL, n = 0;
    int rc = fp8d_parse_token_list(s, &v, &n, err);
    if (rc < 0)
        return fp8_err_set(err, -EINVAL, "--batch: '%s' is not a list like 1,2,4", s);
    if (n > 16) {
        free(v);
        return fp8_err_set(err, -EINVAL, "--batch: at most 16 sizes");
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t b = v[i];
        if (b < 1 || b > BENCH_MAX_BATCH) {
            free(v);
            return fp8_err_set(err, -EINVAL, "--batch: %d is outside 1..%d", b, BENCH_MAX_BATCH);
        }
        a->batch[i] = v[i];
    }
    a->n_batch = n;
    free(v);
    return 0;
}

/* e4m3 bytes + fp32 row scales one decode step streams: every linear layer and lm_head. */
static double weight_bytes(const struct fp8_model_config *c)
{
    double d = c->hidden_size, hd = c->head_dim, in = c->intermediate_size;
    double qkv = (c->n_heads + 2.0 * c->n_kv_heads) * hd, o = c->n_heads * hd;
    double rows = qkv + d + 2 * in + d, bytes = qkv * d + d * o + 2 * in * d + d * in;
    return c->n_layers * (bytes + 4 * rows) + (double)c->vocab_size * (d + 4);
}

/* One step of B sequences: seq s has tokens ids[s][0..n) at positions p0[s].. . */
struct bench_seqs {
    int32_t n_seqs, max_blocks;
    int32_t *table;   /* (n_seqs, max_blocks) */
    int32_t *len;     /* (n_seqs) tokens in the cache */
    struct fp8_sample_row *rows; /* (n_seqs) with --temperature: each sequence's draw */
};

static int step(struct fp8_model *m, struct bench_seqs *q, const int32_t *tokens, int32_t per_seq,
                int32_t *out_ids, struct fp8_err *err)
{
    int32_t n = q->n_seqs * per_seq;
    int32_t *pos = malloc((size_t)n * 3 * sizeof(int32_t)), *slots = pos ? pos + n : NULL,
            *start = malloc((size_t)(q->n_seqs + 1) * sizeof(int32_t)),
            *seq_len = malloc((size_t)q->n_seqs * sizeof(int32_t));
    uint8_t *want = malloc((size_t)q->n_seqs);
    int rc = -ENOMEM;
    if (!pos || !start || !seq_len || !want) {
        fp8_err_set(err, rc, "out of memory");
        goto out;
    }
    for (int32_t s = 0; s < q->n_seqs; s++) {
        start[s] = s * per_seq;
        for (int32_t i = 0; i < per_seq; i++) {
            int32_t p = q->len[s] + i, t = s * per_seq + i;
            pos[t] = p;
            slots[t] = q->table[(size_t)s * q->max_blocks + p / BENCH_BLOCK] * BENCH_BLOCK +
                       p % BENCH_BLOCK;
        }
        seq_len[s] = q->len[s] + per_seq;
        want[s] = 1;
    }
    start[q->n_seqs] = n;
    struct fp8_batch b = {
        .n_tokens = n, .tokens = tokens, .positions = pos, .slots = slots, .n_seqs = q->n_seqs,
        .seq_start = start, .seq_len = seq_len, .block_table = q->table,
        .max_blocks_per_seq = q->max_blocks, .block_size = BENCH_BLOCK, .want_logits = want,
    };
    if (q->rows && per_seq == 1) {
        for (int32_t s = 0; s < q->n_seqs; s++)
            q->rows[s].step = (uint32_t)q->len[s];
        rc = fp8_model_forward_sample(m, &b, q->rows, NULL, out_ids, err);
    } else {
        rc = fp8_model_forward_greedy(m, &b, out_ids, err);
    }
    if (rc >= 0) {
        for (int32_t s = 0; s < q->n_seqs; s++)
            q->len[s] += per_seq;
        rc = 0;
    }
out:
    free(pos);
    free(start);
    free(seq_len);
    free(want);
    return rc;
}

static int32_t *random_tokens(int32_t n, int32_t vocab, uint64_t seed)
{
    int32_t *t = malloc((size_t)n * sizeof(int32_t));
    for (int32_t i = 0; t && i < n; i++)
        t[i] = (int32_t)(splitmix64_next(&seed) % (uint64_t)vocab);
    return t;
}

/* The device's memory: used = total - free (cudaMemGetInfo), its peak over the samples,
 * and the backend's own allocations by class at the last sample. */
struct mem_info {
    bool have;
    double used, peak, total;
#ifdef FP8D_WITH_CUDA
    struct fp8_cuda_mem by_class;
#endif
};

static void mem_sample(struct mem_info *mi, struct fp8_backend *be)
{
#ifdef FP8D_WITH_CUDA
    struct fp8_err e;
    if (strcmp(be->name, "cuda") || fp8_backend_cuda_mem(be, &mi->by_class, &e) < 0)
        return;
    mi->have = true;
    mi->total = (double)mi->by_class.device_total;
    mi->used = mi->total - (double)mi->by_class.device_free;
    mi->peak = mi->used > mi->peak ? mi->used : mi->peak;
#else
    (void)mi;
    (void)be;
#endif
}

/* The used memory split into the backend's classes and what they leave unexplained. */
static void mem_print(FILE *f, const struct mem_info *mi, bool json)
{
#ifdef FP8D_WITH_CUDA
    const struct fp8_cuda_mem *m = &mi->by_class;
    const double parts[6] = {(double)m->weights, (double)m->kv, (double)m->activations,
                             (double)m->scratch, (double)m->workspace, (double)m->graphs};
    const char *names[6] = {"weights", "kv_pool", "activations", "scratch", "cublaslt_workspace",
                            "graphs"};
    double sum = 0;
    for (int i = 0; i < 6; i++)
        sum += parts[i];
    if (json) {
        fprintf(f, ", \"memory_gb\": {\"device_used\": %.4f, \"device_total\": %.4f",
                mi->used / 1e9, mi->total / 1e9);
        for (int i = 0; i < 6; i++)
            fprintf(f, ", \"%s\": %.4f", names[i], parts[i] / 1e9);
        fprintf(f, ", \"unexplained\": %.4f}", (mi->used - sum) / 1e9);
        return;
    }
    fprintf(f, "memory: device used %.3f GB of %.1f GB (cudaMemGetInfo total - free) =\n",
            mi->used / 1e9, mi->total / 1e9);
    const char *labels[6] = {"weights", "KV pool", "activations", "scratch (step, sampling, "
                             "attention, GEMM)", "cuBLASLt workspace", "CUDA graphs"};
    for (int i = 0; i < 6; i++)
        fprintf(f, "  %-44s %8.3f GB\n", labels[i], parts[i] / 1e9);
    fprintf(f, "  %-44s %8.3f GB (CUDA context, cuBLASLt, rounding, other processes)\n",
            "unexplained", (mi->used - sum) / 1e9);
#else
    (void)f;
    (void)mi;
    (void)json;
#endif
}

/* The device's copy bandwidth (bytes read + written per second), 0 when not measurable. */
static double copy_bandwidth(struct fp8_backend *be)
{
#ifdef FP8D_WITH_CUDA
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL, *e0 = NULL, *e1 = NULL;
    struct fp8_err e;
    double bw = 0;
    float ms = 0;
    if (strcmp(be->name, "cuda") || fp8_cuda_malloc(&a, bytes, &e) < 0)
        return 0;
    if (fp8_cuda_malloc(&b, bytes, &e) == 0 && fp8_cuda_event_create(&e0, &e) == 0 &&
        fp8_cuda_event_create(&e1, &e) == 0 && fp8_cuda_memset(a, 1, bytes, NULL, &e) == 0 &&
        fp8_cuda_memcpy_d2d(b, a, bytes, NULL, &e) == 0 &&
        fp8_cuda_event_record(e0, NULL, &e) == 0) {
        int ok = 1;
        for (int i = 0; i < 10 && ok; i++)
            ok = fp8_cuda_memcpy_d2d(i % 2 ? a : b, i % 2 ? b : a, bytes, NULL, &e) == 0;
        if (ok && fp8_cuda_event_record(e1, NULL, &e) == 0 &&
            fp8_cuda_event_elapsed_ms(&ms, e0, e1, &e) == 0 && ms > 0)
            bw = 10.0 * 2.0 * (double)bytes / (ms * 1e-3);
    }
    fp8_cuda_event_destroy(e0);
    fp8_cuda_event_destroy(e1);
    fp8_cuda_free(a);
    fp8_cuda_free(b);
    return bw;
#else
    (void)be;
    return 0;
#endif
}

/* Three eager steps of the current batch with rank 0's all_reduce_sum calls timed: the
 * all-reduce milliseconds per step and the calls per step, and the eager step time. */
static int time_all_reduce(struct fp8_model *m, struct fp8_backend *be, struct bench_seqs *q,
                           int32_t context,
                           int32_t *ids, double *ar_ms, double *calls, double *step_ms,
                           struct fp8_err *err)
{
    *ar_ms = *calls = *step_ms = 0.0;
#ifdef FP8D_WITH_CUDA
    struct fp8_backend_group *g = be->group;
    bool eager[FP8_BACKEND_MAX_RANKS];
    for (int32_t r = 0; r < g->n_ranks; r++) {
        eager[r] = g->rank[r]->enforce_eager;
        g->rank[r]->enforce_eager = true;
    }
    fp8_backend_cuda_time_collectives(g->rank[0], true);
    for (int32_t s = 0; s < q->n_seqs; s++)
        q->len[s] = context; /* over the timed steps' positions: the cache holds no more */
    double s0 = now_s();
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = step(m, q, ids, 1, ids, err);
    *step_ms = (now_s() - s0) * 1e3 / 3;
    int64_t n = 0;
    fp8_backend_cuda_collective_time(g->rank[0], ar_ms, &n);
    fp8_backend_cuda_time_collectives(g->rank[0], false);
    *ar_ms /= 3;
    *calls = (double)n / 3;
    for (int32_t r = 0; r < g->n_ranks; r++)
        g->rank[r]->enforce_eager = eager[r];
    return rc;
#else
    (void)m;
    (void)be;
    (void)q;
    (void)context;
    (void)ids;
    (void)err;
    return 0;
#endif
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench(int argc, char **argv)
{
    struct fp8d_opts o;
    struct fp8_err err = {{0}};
    struct bench_args a = {.batch = {1, 2, 4, 8, 16}, .n_batch = 5, .tokens = 128,
                           .prompt_tokens = 512, .context = 32};
    struct fp8_backend *be = NULL;
    struct fp8_weights *w = NULL;
    struct fp8_model *m = NULL;
    struct bench_seqs q = {0};
    int32_t *toks = NULL, *ids = NULL;
    struct mem_info mi = {0};
    int status = 1;

    fp8d_opts_init(&o);
    for (int i = 1; i < argc;) {
        int rc = fp8d_opts_next(&o, argc, argv, &i, "bench", usage, &status);
        if (rc < 0)
            return status;
        if (rc > 0)
            continue;
        if (!strcmp(argv[i], "--json")) {
            a.json = true;
            i++;
            continue;
        }
        int64_t v;
        if (i + 1 < argc && !strcmp(argv[i], "--batch")) {
            if (parse_batches(argv[i + 1], &a, &err) < 0) {
                fprintf(stderr, "fp8d bench: %s\n", err.msg);
                return 2;
            }
            i += 2;
            continue;
        }
        if (i + 1 < argc && (!strcmp(argv[i], "--tokens") || !strcmp(argv[i], "--prompt-tokens") ||
                             !strcmp(argv[i], "--context"))) {
            if (fp8d_parse_i64(argv[i + 1], 1, 1 << 16, &v) < 0) {
                fprintf(stderr, "fp8d bench: %s wants a number in 1..65536, not '%s'\n",
                        argv[i], argv[i + 1]);
                return 2;
            }
            *(!strcmp(argv[i], "--tokens")          ? &a.tokens
              : !strcmp(argv[i], "--prompt-tokens") ? &a.prompt_tokens
                                                    : &a.context) = (int32_t)v;
            i += 2;
            continue;
        }
        fprintf(stderr, "fp8d bench: unexpected argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (!o.model_dir == !o.synthetic) {
        fprintf(stderr, "fp8d bench: one of --synthetic PRESET or --model DIR is required\n");
        usage(stderr);
        return 2;
    }

    int32_t max_batch = 1;
    for (int32_t i = 0; i < a.n_batch; i++)
        max_batch = a.batch[i] > max_batch ? a.batch[i] : max_batch;
    int32_t seq_cap = (a.context + a.tokens > a.prompt_tokens ? a.context + a.tokens
                                                               : a.prompt_tokens);
    q.max_blocks = (seq_cap + BENCH_BLOCK - 1) / BENCH_BLOCK;
    struct fp8_model_opts mo = fp8_model_opts_default();
    mo.weight_dtype = o.weights;
    mo.kv_dtype = o.kv_cache_dtype;
    mo.block_size = BENCH_BLOCK;
    mo.n_kv_blocks = max_batch * q.max_blocks;
    mo.max_tokens = a.prompt_tokens > max_batch * a.context ? a.prompt_tokens
                                                            : max_batch * a.context;
    if (fp8d_opts_backend(&o, &be, &err) < 0)
        goto fail;
    double t0 = now_s();
    if (o.synthetic) {
        mo.device_random_weights = !strcmp(be->name, "cuda");
        if (fp8_weights_open_synthetic(o.synthetic, 0, &w, &err) < 0 ||
            fp8_model_create(w, be, &mo, &m, &err) < 0)
            goto fail;
    } else if (fp8_model_load(o.model_dir, be, &mo, &m, &err) < 0) {
        goto fail;
    }
    double load_s = now_s() - t0;
    const struct fp8_model_config *cfg = fp8_model_get_config(m);
    struct fp8_kv_cache_desc kd = fp8_model_kv_desc(cfg, mo.kv_dtype, mo.block_size, mo.n_kv_blocks);
    double kv_gb = (double)fp8_kv_block_bytes(&kd) * mo.n_kv_blocks / 1e9;
    double wbytes = weight_bytes(cfg);
    const char *what = o.synthetic ? o.synthetic : o.model_dir;
    bool cuda = !strcmp(be->name, "cuda");
    int32_t n_gpus = be->group ? be->group->n_ranks : 1;
    bool time_ar = cuda && n_gpus > 1;
    double ar_ms[16] = {0}, ar_calls[16] = {0}, eager_ms[16] = {0};
    /* with --json only the JSON object goes to stdout */
    FILE *info = a.json ? stderr : stdout;
    fprintf(info, "fp8d bench: %s on %s", what, be->name);
    if (be->group)
        fprintf(info, " x %d (tensor parallel, one thread per %s, %s)", n_gpus,
                cuda ? "GPU" : "rank", cuda ? "NCCL all-reduce, NVLS off" : "host all-reduce");
    fprintf(info, "%s, weights %s (%s), KV %s\n",
           !cuda ? "" : be->enforce_eager ? " (eager)" : " (CUDA graphs for decode steps)",
           fp8_dtype_name(mo.weight_dtype),
           mo.device_random_weights ? "random, generated on the device" : "loaded",
           fp8_dtype_name(mo.kv_dtype));
    fprintf(info, "KV pool: %d blocks x %d slots = %.3f GB (%d sequences x %d positions)\n",
           mo.n_kv_blocks, mo.block_size, kv_gb, max_batch, q.max_blocks * BENCH_BLOCK);
    fprintf(info, "load: %.2f s; weights streamed per decode step: %.3f GB (linear layers + lm_head, "
           "e4m3 + row scales)%s\n", load_s, wbytes / 1e9,
            n_gpus > 1 ? ", split over the ranks" : "");
    if (cuda)
        fprintf(info, "prefill: linear layers quantize the activation rows to e4m3 (two terms) "
                "for cuBLASLt FP8 x FP8 GEMMs; attention is a tensor-core flash-attention kernel "
                "for head_dim 128\n");
    double bw = copy_bandwidth(be);
    if (bw > 0)
        fprintf(info, "bandwidth: %.0f GB/s measured (1 GiB device-to-device copy, read + write)\n",
               bw / 1e9);
    else {
        bw = 3.0e12;
        fprintf(info, "bandwidth: not measured on this backend; roofline uses a stated 3000 GB/s "
               "(H100 copy)\n");
    }

    q.table = malloc((size_t)max_batch * q.max_blocks * sizeof(int32_t));
    q.len = calloc((size_t)max_batch, sizeof(int32_t));
    ids = malloc((size_t)(max_batch > 1 ? max_batch : 1) * sizeof(int32_t));
    toks = random_tokens(a.prompt_tokens > max_batch * a.context ? a.prompt_tokens
                                                                 : max_batch * a.context,
                         cfg->vocab_size, 1);
    bool sampled = o.temperature_set && o.sampling.temperature > 0.0f;
    if (sampled) {
        q.rows = calloc((size_t)max_batch, sizeof(*q.rows));
        struct fp8_sampling_params sp = o.sampling;
        sp.repetition_penalty = 1.0f; /* no history here */
        sp.presence_penalty = 0.0f;
        for (int32_t s = 0; q.rows && s < max_batch; s++) {
            sp.seed = o.sampling.seed + (uint64_t)s;
            fp8_sample_row_fill(&q.rows[s], &sp, 0, NULL, 0, 0, cfg->vocab_size, NULL, NULL, 0);
        }
    }
    if (!q.table || !q.len || !ids || !toks || (sampled && !q.rows)) {
        fp8_err_set(&err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < max_batch * q.max_blocks; i++)
        q.table[i] = i;

    /* Time to first token: one sequence, the whole prompt in one step. */
    double ttft[3];
    for (int32_t r = 0; r < 4; r++) {
        q.n_seqs = 1;
        q.len[0] = 0;
        double s0 = now_s();
        if (step(m, &q, toks, a.prompt_tokens, ids, &err) < 0)
            goto fail;
        if (r > 0)
            ttft[r - 1] = now_s() - s0;
    }
    qsort(ttft, 3, sizeof(double), cmp_double);
    mem_sample(&mi, be);

    if (!a.json)
        printf("\n%6s %12s %9s %10s %9s %11s\n", "batch", "tokens", "seconds", "tok/s",
               "peak GB", "roofline %");
    else
        printf("{\"model\": \"%s\", \"backend\": \"%s\", \"graphs\": %s, \"kv_pool_gb\": %.4f, "
               "\"weights_gb\": %.4f, \"bandwidth_gbs\": %.1f, \"ttft_s\": %.5f, "
               "\"prompt_tokens\": %d, \"context\": %d, \"rows\": [",
               what, be->name, cuda && !be->enforce_eager ? "true" : "false", kv_gb, wbytes / 1e9,
               bw / 1e9, ttft[1], a.prompt_tokens, a.context);
    for (int32_t bi = 0; bi < a.n_batch; bi++) {
        int32_t B = a.batch[bi];
        q.n_seqs = B;
        for (int32_t s = 0; s < B; s++)
            q.len[s] = 0;
        if (step(m, &q, toks, a.context, ids, &err) < 0)
            goto fail;
        /* two untimed steps: the first captures the graph */
        for (int32_t r = 0; r < 2; r++)
            if (step(m, &q, ids, 1, ids, &err) < 0)
                goto fail;
        for (int32_t s = 0; s < B; s++)
            q.len[s] = a.context; /* overwrite the warm-up positions */
        double s0 = now_s();
        for (int32_t t = 0; t < a.tokens; t++)
            if (step(m, &q, ids, 1, ids, &err) < 0)
                goto fail;
        double secs = now_s() - s0;
        mem_sample(&mi, be);
        if (time_ar && time_all_reduce(m, be, &q, a.context, ids, &ar_ms[bi], &ar_calls[bi],
                                       &eager_ms[bi], &err) < 0)
            goto fail;
        double tps = (double)B * a.tokens / secs;
        double roof = wbytes / n_gpus / bw; /* seconds per step at the bandwidth */
        double pct = 100.0 * roof / (secs / a.tokens);
        double peak = mi.have ? mi.peak / 1e9 : NAN;
        if (!a.json)
            printf("%6d %12d %9.3f %10.1f %9.2f %10.1f%%\n", B, B * a.tokens, secs, tps, peak,
                   pct);
        else
            printf("%s{\"batch\": %d, \"tokens\": %d, \"seconds\": %.5f, \"tok_s\": %.2f, "
                   "\"peak_gb\": %.3f, \"roofline_pct\": %.2f, \"tensor_parallel\": %d, "
                   "\"allreduce_ms_per_step\": %.4f, \"allreduce_calls_per_step\": %.1f, "
                   "\"eager_step_ms\": %.4f}",
                   bi ? ", " : "", B, B * a.tokens, secs, tps, mi.have ? peak : -1.0, pct,
                   n_gpus, ar_ms[bi], ar_calls[bi], eager_ms[bi]);
    }
    if (a.json) {
        printf("]");
        if (mi.have)
            mem_print(stdout, &mi, true);
        printf("}\n");
    } else {
        printf("\ntime to first token (%d-token prompt, one sequence, median of 3): %.1f ms "
               "(min %.1f, max %.1f)\n", a.prompt_tokens, ttft[1] * 1e3, ttft[0] * 1e3,
               ttft[2] * 1e3);
        if (q.rows)
            printf("decode: each sequence prefilled with %d tokens, then %d steps sampled %s "
                   "(temperature %g, top-k %d, top-p %g, min-p %g); roofline %% = (%.3f GB "
                   "/ %d GPU%s / %.0f GB/s) / measured step time\n", a.context, a.tokens,
                   n_gpus > 1 ? "on the host from the logit shards gathered off the GPUs"
                              : "on the device",
                   (double)o.sampling.temperature, o.sampling.top_k, (double)o.sampling.top_p,
                   (double)o.sampling.min_p, wbytes / 1e9, n_gpus, n_gpus > 1 ? "s" : "", bw / 1e9);
        else
            printf("decode: each sequence prefilled with %d tokens, then %d greedy steps (on the "
                   "device); roofline %% = (%.3f GB / %d GPU%s / %.0f GB/s) / measured step "
                   "time\n", a.context, a.tokens, wbytes / 1e9, n_gpus, n_gpus > 1 ? "s" : "",
                   bw / 1e9);
        if (time_ar) {
            printf("all-reduce per decode step (3 eager steps after each row, CUDA events "
                   "around each ncclAllReduce on rank 0's stream, bf16, in place):\n");
            for (int32_t bi = 0; bi < a.n_batch; bi++)
                printf("  batch %2d: %.3f ms in %.0f calls (%.1f us each); eager step %.3f ms "
                       "(%.0f%% all-reduce)\n", a.batch[bi], ar_ms[bi], ar_calls[bi],
                       ar_calls[bi] > 0 ? 1e3 * ar_ms[bi] / ar_calls[bi] : 0.0, eager_ms[bi],
                       eager_ms[bi] > 0 ? 100.0 * ar_ms[bi] / eager_ms[bi] : 0.0);
        }
        if (mi.have) {
            printf("peak GB = the most device memory in use (cudaMemGetInfo total - free) at "
                   "the samples after each row\n");
            mem_print(stdout, &mi, false);
        } else {
            printf("peak GB: not measured on the %s backend\n", be->name);
        }
    }
    status = 0;
fail:
    if (status)
        fprintf(stderr, "fp8d bench: %s\n", err.msg);
    fp8_model_free(m);
    fp8_weights_free(w);
    fp8_backend_free(be);
    free(q.table);
    free(q.len);
    free(q.rows);
    free(ids);
    free(toks);
    return status;
}
