/* Decode-path kernel benchmark of the CUDA backend: measures the card's copy bandwidth,
 * then times each kernel with CUDA events (warm-up, many repetitions, median) on inputs
 * rotated across buffers several times the L2 size, and prints GB/s and the fraction of
 * the measured bandwidth. Closes with the Qwen3-8B decode-step weight stream (36 layers of
 * qkv, o, gate+up, down GEMVs + lm_head) replayed as one CUDA graph at batch 1 and 16,
 * projected to tok/s against the FP8 roofline.
 *
 * Also times the prefill kernels: the FP8 GEMM on Qwen3-8B's linears at 512 and 2048 rows
 * (TFLOP/s) and the causal flash attention over 512- and 2048-token prompts.
 *
 * Usage: cuda_bench [--quick | --prefill]   (--quick: fewer shapes and repetitions;
 *        --prefill: the copy bandwidth and the prefill kernels only) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if FP8D_WITH_CUDA

#include "kernels/cuda/cuda_ops.h"

#define MB (1024.0 * 1024.0)

/* Qwen3-8B */
#define Q_DIM 4096
#define Q_INTER 12288
#define Q_HEADS 32
#define Q_KV 8
#define Q_HD 128
#define Q_LAYERS 36
#define Q_VOCAB 151936

static int g_reps = 200;
static double g_copy_gbs; /* (read + write) bytes / s of a device-to-device copy, in GB/s */

#define CHECK(call)                                                                            \
    do {                                                                                       \
        if ((call) < 0) {                                                                      \
            fprintf(stderr, "cuda_bench: %s (line %d)\n", err.msg, __LINE__);                  \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static struct fp8_err err;

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void *dalloc(size_t bytes)
{
    void *p = NULL;
    CHECK(fp8_cuda_malloc(&p, bytes, &err));
    return p;
}

/* Per-launch event pairs; fn(i) enqueues repetition i. Returns the median in ms. */
typedef void (*launch_fn)(void *ctx, int i, void *stream);

static float time_median(launch_fn fn, void *ctx, void *stream, int reps)
{
    const int warm = reps / 10 + 3;
    void **ev = malloc(sizeof(void *) * 2 * reps);
    float *ms = malloc(sizeof(float) * reps);
    if (!ev || !ms) {
        fprintf(stderr, "cuda_bench: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < 2 * reps; i++)
        CHECK(fp8_cuda_event_create(&ev[i], &err));
    for (int i = 0; i < warm; i++)
        fn(ctx, i, stream);
    for (int i = 0; i < reps; i++) {
        CHECK(fp8_cuda_event_record(ev[2 * i], stream, &err));
        fn(ctx, i, stream);
        CHECK(fp8_cuda_event_record(ev[2 * i + 1], stream, &err));
    }
    for (int i = 0; i < reps; i++)
        CHECK(fp8_cuda_event_elapsed_ms(&ms[i], ev[2 * i], ev[2 * i + 1], &err));
    qsort(ms, reps, sizeof(float), cmp_float);
    float med = ms[reps / 2];
    for (int i = 0; i < 2 * reps; i++)
        fp8_cuda_event_destroy(ev[i]);
    free(ev);
    free(ms);
    return med;
}

/* ---- copy bandwidth ------------------------------------------------------------------- */

struct copy_ctx {
    char *a, *b;
    size_t bytes;
};

static void copy_launch(void *p, int i, void *stream)
{
    struct copy_ctx *c = p;
    CHECK(fp8_cuda_memcpy_d2d(i & 1 ? c->a : c->b, i & 1 ? c->b : c->a, c->bytes, stream, &err));
}

static void bench_copy(void *stream)
{
    struct copy_ctx c = {dalloc(1ull << 30), dalloc(1ull << 30), 1ull << 30};
    CHECK(fp8_cuda_memset(c.a, 1, c.bytes, stream, &err));
    CHECK(fp8_cuda_memset(c.b, 2, c.bytes, stream, &err));
    float ms = time_median(copy_launch, &c, stream, 30);
    g_copy_gbs = 2.0 * c.bytes / (ms * 1e-3) / 1e9;
    printf("copy: 1 GiB device-to-device, median %.3f ms: %.1f GB/s counting bytes read + "
           "written (the bandwidth every %%copy below is a fraction of)\n\n", ms, g_copy_gbs);
    fp8_cuda_free(c.a);
    fp8_cuda_free(c.b);
}

static void *dalloc_fill_f32(size_t n, float v)
{
    float *h = malloc(sizeof(float) * n);
    if (!h) {
        fprintf(stderr, "cuda_bench: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        h[i] = v;
    void *d = dalloc(sizeof(float) * n);
    CHECK(fp8_cuda_memcpy_h2d(d, h, sizeof(float) * n, &err));
    free(h);
    return d;
}

/* ---- GEMV ------------------------------------------------------------------------------ */

struct gemv_ctx {
    uint8_t **w;   /* n_copies weight buffers (out, in) */
    float *scale;
    uint16_t *x, *y;
    int n_copies, rows, in, out;
    const struct fp8_cuda_gemv_cfg *cfg;
    const struct fp8_cuda_gemv_fuse *fuse; /* NULL: plain */
};

static void gemv_launch(void *p, int i, void *stream)
{
    struct gemv_ctx *g = p;
    CHECK(fp8_cuda_gemv_e4m3_fused(g->y, 0, g->x, g->w[i % g->n_copies], g->scale, g->rows,
                                   g->in, g->out, g->fuse, g->cfg, stream, &err));
}

struct shape {
    const char *name;
    int in, out;
};

static const struct shape shapes[] = {
    {"qkv", Q_DIM, (Q_HEADS + 2 * Q_KV) * Q_HD},
    {"o", Q_HEADS * Q_HD, Q_DIM},
    {"gate_up", Q_DIM, 2 * Q_INTER},
    {"down", Q_INTER, Q_DIM},
    {"lm_head", Q_DIM, Q_VOCAB},
};

/* The weights of one shape, copied often enough to overflow L2 several times. */
static void gemv_ctx_build(struct gemv_ctx *g, const struct shape *s, int64_t l2, void *stream)
{
    const size_t wbytes = (size_t)s->in * s->out;
    g->n_copies = (int)((4 * (size_t)l2 + wbytes - 1) / wbytes);
    if (g->n_copies < 2)
        g->n_copies = 2;
    g->w = malloc(sizeof(uint8_t *) * g->n_copies);
    for (int c = 0; c < g->n_copies; c++) {
        g->w[c] = dalloc(wbytes);
        CHECK(fp8_cuda_fill_e4m3_random(g->w[c], wbytes, 1000 + c, stream, &err));
    }
    float *sc = malloc(sizeof(float) * s->out);
    for (int i = 0; i < s->out; i++)
        sc[i] = 1.0f / 448.0f;
    g->scale = dalloc(sizeof(float) * s->out);
    CHECK(fp8_cuda_memcpy_h2d(g->scale, sc, sizeof(float) * s->out, &err));
    free(sc);
    /* activations: random bf16 bit patterns of moderate magnitude */
    uint16_t *hx = malloc(2ull * FP8_CUDA_GEMV_MAX_ROWS * s->in);
    uint64_t st = 42;
    for (size_t i = 0; i < (size_t)FP8_CUDA_GEMV_MAX_ROWS * s->in; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        hx[i] = (uint16_t)(0x3c00 + ((st >> 40) & 0x3ff)) | (uint16_t)((st >> 63) << 15);
    }
    g->x = dalloc(2ull * FP8_CUDA_GEMV_MAX_ROWS * s->in);
    CHECK(fp8_cuda_memcpy_h2d(g->x, hx, 2ull * FP8_CUDA_GEMV_MAX_ROWS * s->in, &err));
    free(hx);
    g->y = dalloc(2ull * FP8_CUDA_GEMV_MAX_ROWS * s->out);
    g->in = s->in;
    g->out = s->out;
    g->fuse = NULL;
}

static void gemv_ctx_free(struct gemv_ctx *g)
{
    for (int c = 0; c < g->n_copies; c++)
        fp8_cuda_free(g->w[c]);
    free(g->w);
    fp8_cuda_free(g->scale);
    fp8_cuda_free(g->x);
    fp8_cuda_free(g->y);
}

static double gemv_gbs(const struct gemv_ctx *g, float ms)
{
    /* weights + scales + activations in + out: the bytes the op must move at least */
    double bytes = (double)g->in * g->out + 4.0 * g->out + 2.0 * g->rows * (g->in + g->out);
    return bytes / (ms * 1e-3) / 1e9;
}

static void bench_gemv(const struct fp8_cuda_device *dev, void *stream, int quick)
{
    static const int rows_all[] = {1, 2, 4, 8, 16, 32, 64};
    static const int rows_quick[] = {1, 16};
    const int *rows = quick ? rows_quick : rows_all;
    const int n_rows = quick ? 2 : 7;
    printf("gemv_e4m3 (W e4m3 [out, in] + per-channel scale, x bf16 [rows, in]): median of %d\n",
           g_reps);
    printf("%-8s %6s %6s %5s %3s %10s %9s %7s %s\n", "op", "in", "out", "rows", "mt", "us",
           "GB/s", "%copy", "(other m_tiles: us)");
    float *norm_w = dalloc_fill_f32(Q_INTER, 1.0f);
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        struct gemv_ctx g;
        gemv_ctx_build(&g, &shapes[s], dev->l2_bytes, stream);
        for (int r = 0; r < n_rows; r++) {
            g.rows = rows[r];
            struct fp8_cuda_gemv_cfg pick;
            CHECK(fp8_cuda_gemv_e4m3_cfg_pick(&pick, g.rows, g.in, g.out, &err));
            g.cfg = &pick;
            float ms = time_median(gemv_launch, &g, stream, g_reps);
            printf("%-8s %6d %6d %5d %3d %10.2f %9.1f %6.1f%%  ", shapes[s].name, g.in, g.out,
                   g.rows, pick.m_tiles, ms * 1e3, gemv_gbs(&g, ms),
                   100.0 * gemv_gbs(&g, ms) / (g_copy_gbs));
            for (int mt = 1; mt <= 2; mt++) {
                if (mt == pick.m_tiles || (mt == 2 && g.rows > 32))
                    continue;
                struct fp8_cuda_gemv_cfg c = {mt, pick.overlap, pick.prefetch};
                g.cfg = &c;
                printf(" mt%d %.2f", mt, time_median(gemv_launch, &g, stream, g_reps / 2) * 1e3);
            }
            /* the fusion the model runs on this shape: norm (qkv), norm + glu (gate_up),
             * residual add (o, down) */
            const struct fp8_cuda_gemv_fuse
                f_norm = {norm_w, 1e-6f, 0, 0, 0, 0, NULL, NULL, NULL, NULL},
                f_glu = {norm_w, 1e-6f, 0, 1, FP8_CUDA_GLU_SILU, 0, NULL, NULL, NULL, NULL},
                f_add = {NULL, 0.0f, 0, 0, 0, 1, NULL, NULL, NULL, NULL};
            const struct fp8_cuda_gemv_fuse *f = s == 0 ? &f_norm : s == 2 ? &f_glu
                                               : s == 1 || s == 3 ? &f_add : NULL;
            if (f && (!f->norm_w || g.rows <= 8) && (!f->glu || g.rows <= 32)) {
                g.cfg = NULL;
                g.fuse = f;
                printf(" fused(%s) %.2f", s == 0 ? "norm" : s == 2 ? "norm+glu" : "add",
                       time_median(gemv_launch, &g, stream, g_reps / 2) * 1e3);
                g.fuse = NULL;
            }
            printf("\n");
        }
        gemv_ctx_free(&g);
    }
    fp8_cuda_free(norm_w);
    printf("(GB/s counts weights + scales + activations; %%copy is against %.1f GB/s)\n\n",
           g_copy_gbs);
}

/* ---- the whole decode step's weight stream -------------------------------------------- */

struct layer_w {
    uint8_t *w[4];
    float *s[4];
};

/* Median (and minimum) of 21 replays of a graph, after 3 warm-up replays. */
static float graph_median_ms(void *exec, void *stream, float *min_ms)
{
    void *e0, *e1;
    CHECK(fp8_cuda_event_create(&e0, &err));
    CHECK(fp8_cuda_event_create(&e1, &err));
    float ms[21];
    for (int i = 0; i < 3; i++)
        CHECK(fp8_cuda_graph_launch(exec, stream, &err));
    for (int i = 0; i < 21; i++) {
        CHECK(fp8_cuda_event_record(e0, stream, &err));
        CHECK(fp8_cuda_graph_launch(exec, stream, &err));
        CHECK(fp8_cuda_event_record(e1, stream, &err));
        CHECK(fp8_cuda_event_elapsed_ms(&ms[i], e0, e1, &err));
    }
    qsort(ms, 21, sizeof(float), cmp_float);
    fp8_cuda_event_destroy(e0);
    fp8_cuda_event_destroy(e1);
    *min_ms = ms[0];
    return ms[10];
}

/* Every kernel of a Qwen3-8B decode step, one graph: per layer add+rmsnorm, qkv GEMV,
 * q/k-norm + RoPE + FP8 KV write, decode attention over ctx cached tokens per sequence,
 * o GEMV, add+rmsnorm, gate+up GEMV, SwiGLU, down GEMV (or the same with the norms, glu
 * and residual adds fused into the GEMVs); then the final norm and the fp32 lm_head.
 * Only embedding and sampling are missing. */
static void bench_full_step(struct layer_w *L, uint8_t *lm, float *lm_s, size_t wbytes,
                            void *stream, int quick)
{
    static const int cfgs[][2] = {{1, 128}, {16, 128}, {1, 4096}, {16, 4096}};
    const int hd = Q_HD, qkv_n = (Q_HEADS + 2 * Q_KV) * Q_HD, bs = 16;
    printf("Qwen3-8B full decode step (all kernels but embedding and sampling), one graph:\n");
    for (int c = 0; c < (quick ? 2 : 4); c++) {
        const int b = cfgs[c][0], ctx = cfgs[c][1];
        const int max_blocks = (ctx + bs - 1) / bs, n_blocks = b * max_blocks;
        const size_t kvb = (size_t)n_blocks * bs * Q_KV * hd, nsc = (size_t)n_blocks * bs * Q_KV;
        struct fp8_cuda_kv_cache kv[Q_LAYERS];
        for (int l = 0; l < Q_LAYERS; l++) {
            kv[l] = (struct fp8_cuda_kv_cache){dalloc(kvb), dalloc(kvb), dalloc_fill_f32(nsc, 1.0f / 448),
                                               dalloc_fill_f32(nsc, 1.0f / 448), n_blocks, bs,
                                               Q_KV, hd};
            CHECK(fp8_cuda_fill_e4m3_random(kv[l].k, kvb, 100 + l, stream, &err));
            CHECK(fp8_cuda_fill_e4m3_random(kv[l].v, kvb, 200 + l, stream, &err));
        }
        int32_t *h_bt = malloc(sizeof(int32_t) * n_blocks), h_len[16], h_pos[16], h_slot[16];
        for (int i = 0; i < n_blocks; i++)
            h_bt[i] = i;
        for (int s = 0; s < b; s++) {
            h_len[s] = ctx;
            h_pos[s] = ctx - 1;
            h_slot[s] = (s * max_blocks + (ctx - 1) / bs) * bs + (ctx - 1) % bs;
        }
        int32_t *bt = dalloc(sizeof(int32_t) * n_blocks), *len = dalloc(64), *pos = dalloc(64),
                *slot = dalloc(64);
        CHECK(fp8_cuda_memcpy_h2d(bt, h_bt, sizeof(int32_t) * n_blocks, &err));
        CHECK(fp8_cuda_memcpy_h2d(len, h_len, sizeof(int32_t) * b, &err));
        CHECK(fp8_cuda_memcpy_h2d(pos, h_pos, sizeof(int32_t) * b, &err));
        CHECK(fp8_cuda_memcpy_h2d(slot, h_slot, sizeof(int32_t) * b, &err));
        free(h_bt);
        float *norm_w = dalloc_fill_f32(Q_DIM, 1.0f), *qk_w = dalloc_fill_f32(hd, 1.0f);
        float *inv_freq = dalloc_fill_f32(hd / 2, 1e-3f);
        uint16_t *h = dalloc(2ull * b * Q_DIM), *xn = dalloc(2ull * b * Q_DIM);
        uint16_t *qkv = dalloc(2ull * b * qkv_n), *q = dalloc(2ull * b * Q_HEADS * hd);
        uint16_t *ao = dalloc(2ull * b * Q_HEADS * hd), *po = dalloc(2ull * b * Q_DIM);
        uint16_t *gu = dalloc(4ull * b * Q_INTER), *act = dalloc(2ull * b * Q_INTER);
        float *logits = dalloc(4ull * b * Q_VOCAB);
        CHECK(fp8_cuda_memset(h, 0x3c, 2ull * b * Q_DIM, stream, &err));
        CHECK(fp8_cuda_memset(po, 0x3c, 2ull * b * Q_DIM, stream, &err));
        struct fp8_cuda_attn_plan plan;
        CHECK(fp8_cuda_attn_decode_plan(&plan, b, Q_HEADS, &kv[0], ctx, 0, &err));
        void *ws = plan.workspace_bytes ? dalloc(plan.workspace_bytes) : NULL;
        const float eps = 1e-6f, sm = 0.08838834764831845f;

        /* mode 0: the unfused kernels; 1: norms (up to 4 rows), glu and residual adds
         * fused into the GEMVs, a norm kernel before qkv and gate_up above 4 rows; 2: up
         * to 8 rows each residual GEMV prepares the next norm in its epilogue and the next
         * GEMV applies it (what the backend runs up to 4 rows; above 8 rows mode 1); 3:
         * mode 2 without q/k-norm + attention (their share is the difference) */
        const int in_gemv = b <= 4;
        float *ss = dalloc(4ull * b * Q_DIM / 16);
        const struct fp8_cuda_gemv_fuse
            f_norm = {norm_w, eps, 0, 0, 0, 0, NULL, NULL, NULL, NULL},
            f_glu = {in_gemv ? norm_w : NULL, eps, 0, 1, FP8_CUDA_GLU_SILU, 0, NULL, NULL, NULL,
                     NULL},
            f_add = {NULL, 0.0f, 0, 0, 0, 1, NULL, NULL, NULL, NULL},
            f_prep = {NULL, 0.0f, 0, 0, 0, 1, norm_w, xn, ss, NULL},
            f_use = {NULL, eps, 0, 0, 0, 0, NULL, NULL, NULL, ss},
            f_use_glu = {NULL, eps, 0, 1, FP8_CUDA_GLU_SILU, 0, NULL, NULL, NULL, ss};
        static const char *const names[] = {"unfused", "norms staged", "norms in epilogues",
                                            "epilogues, no attn"};
        for (int mode = 0; mode < 4; mode++) {
            const int chain = mode >= 2 && b <= 8;
            void *exec = NULL;
            CHECK(fp8_cuda_graph_capture_begin(stream, &err));
            for (int l = 0; l < Q_LAYERS; l++) {
                if (mode == 0) {
                    CHECK(fp8_cuda_rmsnorm(xn, po, h, norm_w, b, Q_DIM, eps, 0, stream, &err));
                    CHECK(fp8_cuda_gemv_e4m3(qkv, 0, xn, L[l].w[0], L[l].s[0], b, Q_DIM, qkv_n,
                                             NULL, stream, &err));
                } else if (chain && l > 0) {
                    CHECK(fp8_cuda_gemv_e4m3_fused(qkv, 0, xn, L[l].w[0], L[l].s[0], b, Q_DIM,
                                                   qkv_n, &f_use, NULL, stream, &err));
                } else if (in_gemv) {
                    CHECK(fp8_cuda_gemv_e4m3_fused(qkv, 0, h, L[l].w[0], L[l].s[0], b, Q_DIM,
                                                   qkv_n, &f_norm, NULL, stream, &err));
                } else {
                    CHECK(fp8_cuda_rmsnorm(xn, h, NULL, norm_w, b, Q_DIM, eps, 0, stream, &err));
                    CHECK(fp8_cuda_gemv_e4m3(qkv, 0, xn, L[l].w[0], L[l].s[0], b, Q_DIM, qkv_n,
                                             NULL, stream, &err));
                }
                if (mode < 3) {
                    CHECK(fp8_cuda_qk_norm_rope_kv_write(q, qkv, qk_w, qk_w, eps, 0, inv_freq,
                                                         1.0f, pos, slot, &kv[l], b, Q_HEADS,
                                                         stream, &err));
                    CHECK(fp8_cuda_attn_decode(ao, q, &kv[l], bt, len, b, Q_HEADS, max_blocks,
                                               sm, &plan, ws, plan.workspace_bytes, stream,
                                               &err));
                }
                if (mode == 0) {
                    CHECK(fp8_cuda_gemv_e4m3(po, 0, ao, L[l].w[1], L[l].s[1], b, Q_HEADS * hd,
                                             Q_DIM, NULL, stream, &err));
                    CHECK(fp8_cuda_rmsnorm(xn, po, h, norm_w, b, Q_DIM, eps, 0, stream, &err));
                    CHECK(fp8_cuda_gemv_e4m3(gu, 0, xn, L[l].w[2], L[l].s[2], b, Q_DIM,
                                             2 * Q_INTER, NULL, stream, &err));
                    CHECK(fp8_cuda_glu(act, gu, b, Q_INTER, FP8_CUDA_GLU_SILU, stream, &err));
                    CHECK(fp8_cuda_gemv_e4m3(po, 0, act, L[l].w[3], L[l].s[3], b, Q_INTER,
                                             Q_DIM, NULL, stream, &err));
                    continue;
                }
                /* o, gate_up, down; the last down prepares nothing (a plain norm follows) */
                const int prep_down = chain && l + 1 < Q_LAYERS;
                CHECK(fp8_cuda_gemv_e4m3_fused(h, 0, ao, L[l].w[1], L[l].s[1], b, Q_HEADS * hd,
                                               Q_DIM, chain ? &f_prep : &f_add, NULL, stream,
                                               &err));
                if (!chain && !in_gemv)
                    CHECK(fp8_cuda_rmsnorm(xn, h, NULL, norm_w, b, Q_DIM, eps, 0, stream, &err));
                CHECK(fp8_cuda_gemv_e4m3_fused(act, 0, chain || !in_gemv ? xn : h, L[l].w[2],
                                               L[l].s[2], b, Q_DIM, 2 * Q_INTER,
                                               chain ? &f_use_glu : &f_glu, NULL, stream, &err));
                CHECK(fp8_cuda_gemv_e4m3_fused(h, 0, act, L[l].w[3], L[l].s[3], b, Q_INTER,
                                               Q_DIM, prep_down ? &f_prep : &f_add, NULL, stream,
                                               &err));
            }
            CHECK(fp8_cuda_rmsnorm(xn, po, h, norm_w, b, Q_DIM, eps, 0, stream, &err));
            CHECK(fp8_cuda_gemv_e4m3(logits, 1, xn, lm, lm_s, b, Q_DIM, Q_VOCAB, NULL, stream,
                                     &err));
            CHECK(fp8_cuda_graph_capture_end(stream, &exec, &err));
            float min_ms;
            const float med = graph_median_ms(exec, stream, &min_ms);
            const double kv_bytes = 36.0 * b * ctx * Q_KV * (2 * hd + 8);
            const double floor_ms = (wbytes + kv_bytes) / (g_copy_gbs * 1e9) * 1e3;
            printf("  batch %2d ctx %5d %-20s: step %.3f ms (min %.3f) -> %.0f tok/s; weights + "
                   "KV %.2f GB, floor at the copy bandwidth %.3f ms (%.1f%% of it)\n",
                   b, ctx, names[mode], med, min_ms, b / (med * 1e-3), (wbytes + kv_bytes) / 1e9,
                   floor_ms, 100.0 * floor_ms / med);
            fp8_cuda_graph_destroy(exec);
        }
        for (int l = 0; l < Q_LAYERS; l++) {
            fp8_cuda_free(kv[l].k);
            fp8_cuda_free(kv[l].v);
            fp8_cuda_free(kv[l].k_scale);
            fp8_cuda_free(kv[l].v_scale);
        }
        void *bufs[] = {bt, len, pos, slot, norm_w, qk_w, inv_freq, h, xn, qkv, q, ao, po, gu,
                        act, logits, ws, ss};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
            fp8_cuda_free(bufs[i]);
    }
    printf("\n");
}

static void bench_step(void *stream, int quick)
{
    const struct shape *ls = shapes; /* qkv, o, gate_up, down; then lm_head */
    struct layer_w *L = malloc(sizeof(*L) * Q_LAYERS);
    size_t total = 0;
    float *ones = malloc(sizeof(float) * Q_VOCAB);
    for (int i = 0; i < Q_VOCAB; i++)
        ones[i] = 1.0f / 448.0f;
    for (int l = 0; l < Q_LAYERS; l++) {
        for (int k = 0; k < 4; k++) {
            size_t b = (size_t)ls[k].in * ls[k].out;
            L[l].w[k] = dalloc(b);
            CHECK(fp8_cuda_fill_e4m3_random(L[l].w[k], b, 7 * l + k, stream, &err));
            L[l].s[k] = dalloc(sizeof(float) * ls[k].out);
            CHECK(fp8_cuda_memcpy_h2d(L[l].s[k], ones, sizeof(float) * ls[k].out, &err));
            total += b;
        }
    }
    const size_t lm_b = (size_t)Q_DIM * Q_VOCAB;
    uint8_t *lm = dalloc(lm_b);
    float *lm_s = dalloc(sizeof(float) * Q_VOCAB);
    CHECK(fp8_cuda_fill_e4m3_random(lm, lm_b, 999, stream, &err));
    CHECK(fp8_cuda_memcpy_h2d(lm_s, ones, sizeof(float) * Q_VOCAB, &err));
    total += lm_b;
    free(ones);
    const int rmax = 16;
    uint16_t *x = dalloc(2ull * rmax * Q_INTER), *y = dalloc(4ull * rmax * Q_VOCAB);
    CHECK(fp8_cuda_memset(x, 0x3c, 2ull * rmax * Q_INTER, stream, &err)); /* bf16 ~0.0115 */

    printf("Qwen3-8B decode-step weight stream: %d layers x (qkv, o, gate_up, down) + lm_head "
           "= %.3f GB of e4m3, one CUDA graph per batch size\n", Q_LAYERS, total / 1e9);
    const double roof_tps = g_copy_gbs * 1e9 / total;
    /* (batch, variant): variant 0 is the picked configuration; at batch 1 and 16 also
     * 1: no programmatic overlap, 2 and 3: overlap with an L2 prefetch of 1 and 4 KiB */
    static const int runs_all[][2] = {{1, 0}, {1, 1}, {1, 2}, {1, 3}, {2, 0}, {4, 0}, {8, 0},
                                      {16, 0}, {16, 1}, {16, 2}, {16, 3}};
    static const int runs_quick[][2] = {{1, 0}, {16, 0}};
    for (int run = 0; run < (quick ? 2 : 11); run++) {
        const int b = quick ? runs_quick[run][0] : runs_all[run][0];
        const int variant = quick ? runs_quick[run][1] : runs_all[run][1];
        void *exec = NULL;
        struct fp8_cuda_gemv_cfg cfg[5];
        for (int k = 0; k < 5; k++) {
            CHECK(fp8_cuda_gemv_e4m3_cfg_pick(&cfg[k], b, ls[k].in, ls[k].out, &err));
            if (variant == 1)
                cfg[k].overlap = 0;
            if (variant >= 2)
                cfg[k].prefetch = variant == 2 ? 1024 : 4096;
        }
        CHECK(fp8_cuda_graph_capture_begin(stream, &err));
        for (int l = 0; l < Q_LAYERS; l++)
            for (int k = 0; k < 4; k++)
                CHECK(fp8_cuda_gemv_e4m3(y, 0, x, L[l].w[k], L[l].s[k], b, ls[k].in, ls[k].out,
                                         &cfg[k], stream, &err));
        /* logits in fp32, as the model takes them */
        CHECK(fp8_cuda_gemv_e4m3(y, 1, x, lm, lm_s, b, Q_DIM, Q_VOCAB, &cfg[4], stream, &err));
        CHECK(fp8_cuda_graph_capture_end(stream, &exec, &err));
        float min_ms;
        const float med = graph_median_ms(exec, stream, &min_ms);
        char name[32];
        snprintf(name, sizeof(name), "%s pf %d", cfg[0].overlap ? "overlap" : "serial",
                 cfg[0].prefetch);
        printf("  batch %2d %-14s: step %.3f ms (min %.3f), %.1f GB/s = %.1f%% of copy -> "
               "%.0f tok/s (roofline at measured bandwidth %.0f tok/s; design's 413: %.1f%%)\n",
               b, name, med, min_ms, total / (med * 1e-3) / 1e9,
               100.0 * total / (med * 1e-3) / 1e9 / (g_copy_gbs), b / (med * 1e-3),
               b * roof_tps, 100.0 * (b / (med * 1e-3)) / (413.0 * b));
        fp8_cuda_graph_destroy(exec);
    }
    printf("\n");
    bench_full_step(L, lm, lm_s, total, stream, quick);
    for (int l = 0; l < Q_LAYERS; l++)
        for (int k = 0; k < 4; k++) {
            fp8_cuda_free(L[l].w[k]);
            fp8_cuda_free(L[l].s[k]);
        }
    free(L);
    fp8_cuda_free(lm);
    fp8_cuda_free(lm_s);
    fp8_cuda_free(x);
    fp8_cuda_free(y);
}

/* ---- decode attention ----------------------------------------------------------------- */

struct attn_ctx {
    struct fp8_cuda_kv_cache kv;
    uint16_t *q, *out;
    int32_t *bt, *len; /* per rotation: (n_seqs, max_blocks) */
    void *ws;
    size_t ws_bytes;
    int n_rot, n_seqs, max_blocks, ctx;
    struct fp8_cuda_attn_plan plan;
};

static void attn_launch(void *p, int i, void *stream)
{
    struct attn_ctx *a = p;
    const int r = i % a->n_rot;
    CHECK(fp8_cuda_attn_decode(a->out, a->q, &a->kv, a->bt + (size_t)r * a->n_seqs * a->max_blocks,
                               a->len, a->n_seqs, Q_HEADS, a->max_blocks, 0.0883883f, &a->plan,
                               a->ws, a->ws_bytes, stream, &err));
}

static void bench_attn(const struct fp8_cuda_device *dev, void *stream, int quick)
{
    static const int cfg_all[][2] = {{1, 1024}, {1, 4096}, {1, 16384}, {16, 1024},
                                     {16, 4096}, {64, 2048}};
    static const int cfg_quick[][2] = {{1, 160}, {1, 512}, {16, 160}, {16, 512}};
    const int n_cfg = quick ? 4 : 6;
    printf("attn_decode (Qwen3-8B: %d heads, %d kv heads, head_dim %d, block 16, FP8 KV): "
           "median of %d\n", Q_HEADS, Q_KV, Q_HD, g_reps);
    printf("%5s %6s %7s %4s %10s %9s %7s %12s   %s\n", "seqs", "ctx", "splits", "kern", "us",
           "GB/s", "%copy", "x36 layers",
           "(variants: splits/kernel us; kernel 0 mma, 1 lanes8, 2 lanes16, 3 mma in a "
           "cluster)");
    for (int c = 0; c < n_cfg; c++) {
        struct attn_ctx a;
        memset(&a, 0, sizeof(a));
        a.n_seqs = quick ? cfg_quick[c][0] : cfg_all[c][0];
        a.ctx = quick ? cfg_quick[c][1] : cfg_all[c][1];
        const int bs = 16;
        a.max_blocks = (a.ctx + bs - 1) / bs;
        const size_t per_rot = (size_t)a.n_seqs * a.max_blocks * bs * Q_KV * (2 * Q_HD + 8);
        a.n_rot = (int)((4 * (size_t)dev->l2_bytes + per_rot - 1) / per_rot);
        if (a.n_rot < 2)
            a.n_rot = 2;
        const int n_blocks = a.n_rot * a.n_seqs * a.max_blocks;
        const size_t kvb = (size_t)n_blocks * bs * Q_KV * Q_HD, nsc = (size_t)n_blocks * bs * Q_KV;
        a.kv = (struct fp8_cuda_kv_cache){dalloc(kvb), dalloc(kvb), dalloc(nsc * 4),
                                          dalloc(nsc * 4), n_blocks, bs, Q_KV, Q_HD};
        CHECK(fp8_cuda_fill_e4m3_random(a.kv.k, kvb, 1, stream, &err));
        CHECK(fp8_cuda_fill_e4m3_random(a.kv.v, kvb, 2, stream, &err));
        float *sc = malloc(nsc * 4);
        for (size_t i = 0; i < nsc; i++)
            sc[i] = 1.0f / 448.0f;
        CHECK(fp8_cuda_memcpy_h2d(a.kv.k_scale, sc, nsc * 4, &err));
        CHECK(fp8_cuda_memcpy_h2d(a.kv.v_scale, sc, nsc * 4, &err));
        free(sc);
        int32_t *bt = malloc(sizeof(int32_t) * n_blocks), *len = malloc(4 * a.n_seqs);
        for (int i = 0; i < n_blocks; i++) /* rotation r, seq s, block j: spread over the pool */
            bt[i] = (int32_t)(((int64_t)i * 7919) % n_blocks);
        for (int s = 0; s < a.n_seqs; s++)
            len[s] = a.ctx;
        a.bt = dalloc(sizeof(int32_t) * n_blocks);
        a.len = dalloc(4 * a.n_seqs);
        CHECK(fp8_cuda_memcpy_h2d(a.bt, bt, sizeof(int32_t) * n_blocks, &err));
        CHECK(fp8_cuda_memcpy_h2d(a.len, len, 4 * a.n_seqs, &err));
        free(bt);
        free(len);
        const size_t nq = (size_t)a.n_seqs * Q_HEADS * Q_HD;
        a.q = dalloc(nq * 2);
        a.out = dalloc(nq * 2);
        CHECK(fp8_cuda_memset(a.q, 0x3c, nq * 2, stream, &err));
        CHECK(fp8_cuda_attn_decode_plan(&a.plan, a.n_seqs, Q_HEADS, &a.kv, a.ctx, 0, &err));
        const struct fp8_cuda_attn_plan picked = a.plan;
        /* room for the variants' doubled split count */
        a.ws_bytes = (size_t)a.n_seqs * Q_HEADS * (2 * picked.n_splits + 2) * (Q_HD + 2) * 4;
        a.ws = dalloc(a.ws_bytes);
        float ms = time_median(attn_launch, &a, stream, g_reps);
        const double bytes = (double)a.n_seqs * a.ctx * Q_KV * (2 * Q_HD + 8);
        const double gbs = bytes / (ms * 1e-3) / 1e9;
        printf("%5d %6d %7d %5d %10.2f %9.1f %6.1f%% %9.3f ms  ", a.n_seqs, a.ctx,
               picked.n_splits, picked.variant, ms * 1e3, gbs,
               100.0 * gbs / g_copy_gbs, 36 * ms);
        for (int v = -1; v < 5; v++) {
            a.plan = picked;
            if (v == 4 && picked.variant != FP8_CUDA_ATTN_MMA_CLUSTER)
                continue;
            if (v == -1 || v == 0) /* the other kernels */
                a.plan.variant = v == -1 ? FP8_CUDA_ATTN_LANES8 : FP8_CUDA_ATTN_LANES16;
            if (v == 1 || v == 2) { /* twice / half the pieces */
                int64_t t = v == 1 ? (picked.split_tokens + 1) / 2 : 2 * (int64_t)picked.split_tokens;
                t = (t + 15) / 16 * 16;
                if (t > a.ctx)
                    t = a.ctx;
                a.plan.split_tokens = (int32_t)t;
                a.plan.n_splits = (int32_t)((a.ctx + t - 1) / t);
            }
            if (v == 3) { /* one piece per sequence */
                a.plan.n_splits = 1;
                a.plan.split_tokens = a.ctx;
            }
            if (v == 4) /* the same pieces merged by the merge kernel */
                a.plan.variant = FP8_CUDA_ATTN_MMA;
            else if (v > 0 && a.plan.n_splits == picked.n_splits)
                continue;
            if (a.plan.variant == FP8_CUDA_ATTN_MMA_CLUSTER &&
                !fp8_cuda_attn_decode_cluster_ok(a.n_seqs, Q_HEADS, &a.kv, a.plan.n_splits))
                a.plan.variant = FP8_CUDA_ATTN_MMA;
            printf(" %d/%d %.2f", a.plan.n_splits, a.plan.variant,
                   time_median(attn_launch, &a, stream, g_reps / 2) * 1e3);
        }
        printf("\n");
        fp8_cuda_free(a.kv.k);
        fp8_cuda_free(a.kv.v);
        fp8_cuda_free(a.kv.k_scale);
        fp8_cuda_free(a.kv.v_scale);
        fp8_cuda_free(a.bt);
        fp8_cuda_free(a.len);
        fp8_cuda_free(a.q);
        fp8_cuda_free(a.out);
        fp8_cuda_free(a.ws);
    }
    printf("(GB/s counts K + V bytes and their fp32 scales once)\n\n");
}

/* ---- small fused ops -------------------------------------------------------------------- */

struct small_ctx {
    int op, rows;
    uint16_t *x, *res, *y, *qkv, *q;
    float *w, *rope;
    int32_t *pos, *slot;
    struct fp8_cuda_kv_cache kv;
};

static void small_launch(void *p, int i, void *stream)
{
    struct small_ctx *s = p;
    (void)i;
    if (s->op == 0)
        CHECK(fp8_cuda_rmsnorm(s->y, s->x, s->res, s->w, s->rows, Q_DIM, 1e-6f, 0, stream, &err));
    else if (s->op == 1)
        CHECK(fp8_cuda_qk_norm_rope_kv_write(s->q, s->qkv, s->w, s->w, 1e-6f, 0, s->rope, 1.0f,
                                             s->pos, s->slot, &s->kv, s->rows, Q_HEADS, stream,
                                             &err));
    else
        CHECK(fp8_cuda_glu(s->y, s->x, s->rows, Q_INTER, FP8_CUDA_GLU_SILU, stream, &err));
}

static void bench_small(void *stream)
{
    struct small_ctx s;
    memset(&s, 0, sizeof(s));
    const int rmax = 16;
    s.x = dalloc(2ull * rmax * 2 * Q_INTER);
    s.res = dalloc(2ull * rmax * Q_DIM);
    s.y = dalloc(2ull * rmax * Q_INTER);
    s.qkv = dalloc(2ull * rmax * (Q_HEADS + 2 * Q_KV) * Q_HD);
    s.q = dalloc(2ull * rmax * Q_HEADS * Q_HD);
    s.w = dalloc(4ull * Q_DIM);
    s.rope = dalloc(4ull * 64 * Q_HD);
    s.pos = dalloc(4 * rmax);
    s.slot = dalloc(4 * rmax);
    CHECK(fp8_cuda_memset(s.x, 0x3c, 2ull * rmax * 2 * Q_INTER, stream, &err));
    CHECK(fp8_cuda_memset(s.res, 0x3c, 2ull * rmax * Q_DIM, stream, &err));
    CHECK(fp8_cuda_memset(s.qkv, 0x3c, 2ull * rmax * (Q_HEADS + 2 * Q_KV) * Q_HD, stream, &err));
    CHECK(fp8_cuda_memset(s.w, 0, 4ull * Q_DIM, stream, &err));
    CHECK(fp8_cuda_memset(s.rope, 0, 4ull * 64 * Q_HD, stream, &err));
    int32_t h[16];
    for (int i = 0; i < rmax; i++)
        h[i] = i;
    CHECK(fp8_cuda_memcpy_h2d(s.pos, h, sizeof(h), &err));
    CHECK(fp8_cuda_memcpy_h2d(s.slot, h, sizeof(h), &err));
    s.kv = (struct fp8_cuda_kv_cache){dalloc(16 * Q_KV * Q_HD * 4), dalloc(16 * Q_KV * Q_HD * 4),
                                      dalloc(16 * Q_KV * 16), dalloc(16 * Q_KV * 16), 4, 16,
                                      Q_KV, Q_HD};
    static const char *names[] = {"rmsnorm+residual (dim 4096)", "qk_norm_rope_kv_write",
                                  "glu silu (inter 12288)"};
    printf("small fused ops (latency, median of %d):\n", g_reps);
    for (int op = 0; op < 3; op++) {
        for (int r = 1; r <= 16; r *= 16) {
            s.op = op;
            s.rows = r;
            printf("  %-28s rows %2d: %6.2f us\n", names[op], r,
                   time_median(small_launch, &s, stream, g_reps) * 1e3);
        }
    }
    printf("\n");
    fp8_cuda_free(s.x);
    fp8_cuda_free(s.res);
    fp8_cuda_free(s.y);
    fp8_cuda_free(s.qkv);
    fp8_cuda_free(s.q);
    fp8_cuda_free(s.w);
    fp8_cuda_free(s.rope);
    fp8_cuda_free(s.pos);
    fp8_cuda_free(s.slot);
    fp8_cuda_free(s.kv.k);
    fp8_cuda_free(s.kv.v);
    fp8_cuda_free(s.kv.k_scale);
    fp8_cuda_free(s.kv.v_scale);
}

/* ---- prefill: FP8 GEMM and flash attention ----------------------------------------------- */

struct gemm_ctx {
    struct fp8_cuda_gemm *g;
    struct fp8_cuda_gemm_cfg cfg;
    uint8_t *w;
    float *scale;
    uint16_t *x, *y;
    void *ws;
    size_t ws_bytes;
    int rows, in, out;
};

static void gemm_launch(void *p, int i, void *stream)
{
    struct gemm_ctx *g = p;
    (void)i;
    CHECK(fp8_cuda_gemm_e4m3(g->g, g->y, 0, g->x, g->w, g->scale, g->rows, g->in, g->out, &g->cfg,
                             g->ws, g->ws_bytes, stream, &err));
}

struct prefill_ctx {
    struct fp8_cuda_kv_cache kv;
    uint16_t *q, *out;
    int32_t *pos, *seq, *bt;
    void *ws;
    size_t ws_bytes;
    int n_tok, max_blocks;
};

static void prefill_launch(void *p, int i, void *stream)
{
    struct prefill_ctx *c = p;
    (void)i;
    CHECK(fp8_cuda_attn_prefill(c->out, c->q, &c->kv, c->pos, c->seq, c->bt, c->n_tok, 1, Q_HEADS,
                                c->max_blocks, 0.08838834764831845f, 0, c->ws, c->ws_bytes,
                                stream, &err));
}

/* Qwen3-8B's prefill linears at 512 and 2048 rows (one and two activation terms, both
 * scale modes) in TFLOP/s of the product 2 rows in out, and one layer's causal attention
 * over a whole prompt of those lengths. */
static void bench_prefill(void *stream)
{
    static const int rows_list[] = {512, 2048};
    struct fp8_cuda_gemm *g = NULL;
    CHECK(fp8_cuda_gemm_create(&g, &err));
    printf("gemm_e4m3 (prefill linear: x quantized to e4m3 per row, cuBLASLt FP8, fp32 "
           "accumulation, bf16 out): median of %d; TFLOP/s of 2 rows in out (two terms do the "
           "matmul twice)\n", g_reps);
    printf("%-8s %6s %6s %5s %-28s %10s %9s\n", "op", "in", "out", "rows", "cfg", "us", "TFLOP/s");
    for (int si = 0; si < 4; si++) {
        const struct shape *s = &shapes[si];
        for (int ri = 0; ri < 2; ri++) {
            struct gemm_ctx c = {.g = g, .rows = rows_list[ri], .in = s->in, .out = s->out};
            c.w = dalloc((size_t)s->in * s->out);
            CHECK(fp8_cuda_fill_e4m3_random(c.w, (size_t)s->in * s->out, 7, stream, &err));
            c.scale = dalloc_fill_f32((size_t)s->out, 1.0f / 448.0f);
            c.x = dalloc(2ull * c.rows * s->in);
            CHECK(fp8_cuda_memset(c.x, 0x3c, 2ull * c.rows * s->in, stream, &err));
            c.y = dalloc(2ull * c.rows * s->out);
            for (int v = 0; v < 4; v++) {
                c.cfg.terms = 2 - v % 2;
                c.cfg.scales = v < 2 ? FP8_CUDA_GEMM_SCALES_OUTER : FP8_CUDA_GEMM_SCALES_EPILOGUE;
                c.ws_bytes = fp8_cuda_gemm_e4m3_workspace(c.rows, c.in, c.out, 0, &c.cfg);
                c.ws = dalloc(c.ws_bytes);
                float ms = time_median(gemm_launch, &c, stream, g_reps / 4);
                printf("%-8s %6d %6d %5d terms %d %-20s %10.2f %9.1f\n", s->name, s->in, s->out,
                       c.rows, c.cfg.terms, v < 2 ? "outer scales" : "epilogue", ms * 1e3,
                       2.0 * c.rows * s->in * s->out / (ms * 1e-3) / 1e12);
                fp8_cuda_free(c.ws);
            }
            fp8_cuda_free(c.w);
            fp8_cuda_free(c.scale);
            fp8_cuda_free(c.x);
            fp8_cuda_free(c.y);
        }
    }
    fp8_cuda_gemm_free(g);

    printf("\nattn_prefill (Qwen3-8B: 32 heads, 8 kv heads, head_dim 128, block 16, FP8 KV): one "
           "sequence, the whole prompt in one chunk, median of %d\n", g_reps / 4);
    for (int ri = 0; ri < 2; ri++) {
        struct prefill_ctx c = {.n_tok = rows_list[ri]};
        const int bs = 16, blocks = (c.n_tok + bs - 1) / bs;
        c.max_blocks = blocks;
        const size_t heads = (size_t)blocks * bs * Q_KV;
        c.kv = (struct fp8_cuda_kv_cache){dalloc(heads * Q_HD), dalloc(heads * Q_HD),
                                          dalloc_fill_f32(heads, 1.0f / 448.0f),
                                          dalloc_fill_f32(heads, 1.0f / 448.0f), blocks, bs,
                                          Q_KV, Q_HD};
        CHECK(fp8_cuda_fill_e4m3_random(c.kv.k, heads * Q_HD, 11, stream, &err));
        CHECK(fp8_cuda_fill_e4m3_random(c.kv.v, heads * Q_HD, 12, stream, &err));
        c.q = dalloc(2ull * c.n_tok * Q_HEADS * Q_HD);
        CHECK(fp8_cuda_memset(c.q, 0x3c, 2ull * c.n_tok * Q_HEADS * Q_HD, stream, &err));
        c.out = dalloc(2ull * c.n_tok * Q_HEADS * Q_HD);
        int32_t *h = malloc(sizeof(int32_t) * (size_t)(2 * c.n_tok + blocks));
        for (int i = 0; i < c.n_tok; i++) {
            h[i] = i;
            h[c.n_tok + i] = 0;
        }
        for (int i = 0; i < blocks; i++)
            h[2 * c.n_tok + i] = blocks - 1 - i;
        c.pos = dalloc(sizeof(int32_t) * (size_t)(2 * c.n_tok + blocks));
        CHECK(fp8_cuda_memcpy_h2d(c.pos, h, sizeof(int32_t) * (size_t)(2 * c.n_tok + blocks),
                                  &err));
        free(h);
        c.seq = c.pos + c.n_tok;
        c.bt = c.pos + 2 * c.n_tok;
        c.ws_bytes = fp8_cuda_attn_prefill_workspace(c.n_tok, 1, Q_HEADS, Q_KV);
        c.ws = dalloc(c.ws_bytes);
        float ms = time_median(prefill_launch, &c, stream, g_reps / 4);
        /* causal: about half of the n x n scores, each 2 x 2 x head_dim flops (QK and PV) */
        const double flops = 4.0 * Q_HEADS * Q_HD * (double)c.n_tok * (c.n_tok + 1) / 2.0;
        printf("  tokens %5d: %9.2f us per layer, %6.1f TFLOP/s, x%d layers %.2f ms\n", c.n_tok,
               ms * 1e3, flops / (ms * 1e-3) / 1e12, Q_LAYERS, ms * Q_LAYERS);
        fp8_cuda_free(c.kv.k);
        fp8_cuda_free(c.kv.v);
        fp8_cuda_free(c.kv.k_scale);
        fp8_cuda_free(c.kv.v_scale);
        fp8_cuda_free(c.q);
        fp8_cuda_free(c.out);
        fp8_cuda_free(c.pos);
        fp8_cuda_free(c.ws);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int prefill = argc > 1 && strcmp(argv[1], "--prefill") == 0;
    if (quick)
        g_reps = 50;
    int32_t n = 0;
    CHECK(fp8_cuda_device_count(&n, &err));
    if (n == 0) {
        printf("cuda_bench: no CUDA device\n");
        return 1;
    }
    struct fp8_cuda_device dev;
    CHECK(fp8_cuda_device_get(&dev, &err));
    printf("device: %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB\n\n", dev.name, dev.cc_major,
           dev.cc_minor, dev.sm_count, dev.global_mem_bytes / MB / 1024, dev.l2_bytes / MB);
    void *stream = NULL;
    CHECK(fp8_cuda_stream_create(&stream, &err));
    bench_copy(stream);
    bench_prefill(stream);
    if (prefill) {
        fp8_cuda_stream_destroy(stream);
        return 0;
    }
    bench_gemv(&dev, stream, quick);
    bench_attn(&dev, stream, quick);
    bench_small(stream);
    bench_step(stream, quick);
    CHECK(fp8_cuda_sync(&err));
    fp8_cuda_stream_destroy(stream);
    return 0;
}

#else

int main(void)
{
    printf("cuda_bench: built without CUDA (WITH_CUDA=0)\n");
    return 1;
}

#endif
