/* The CUDA backend: kernels.h's ops over device memory on one stream, with a sticky first
 * error, the step layout copied to the device once per step, and CUDA graphs for decode
 * steps.
 *
 * Which kernel serves which op (docs/cuda.md has the table):
 * - linear: up to 64 rows (decode), fp8_cuda_gemv_e4m3 (tensor cores, weight streaming).
 *   More rows (prefill): fp8_cuda_gemm_e4m3, the activation rows quantized to e4m3 (two
 *   terms) and cuBLASLt FP8 x FP8 matmuls with fp32 accumulation.
 * - attention: decode steps (every sequence one token, at its last position) with
 *   head_dim 128 or 256 and 1/2/4/8 query heads per KV head go to fp8_cuda_attn_decode,
 *   sliding windows included; every other head_dim-128 step (prefill chunks, mixed steps)
 *   to fp8_cuda_attn_prefill (flash attention on the tensor cores); other head sizes
 *   (the tiny test checkpoints, Gemma3-1B's 256 outside decode) to attn_rows_kernel below,
 *   one block per (token, head) with an online softmax over the visible positions.
 * - qk_norm_rope_kv_write: fp8_cuda_qk_norm_rope_kv_write for head_dim 128, the general
 *   qk_rows_kernel below for other even head_dim up to 256.
 * - the fused decode ops (rms_norm_linear, rms_norm_linear_glu, linear_add): one
 *   fp8_cuda_gemv_e4m3_fused each at decode sizes (the norm inside it up to 4 rows, a norm
 *   kernel before it above; glu up to 32 rows), their compositions otherwise;
 *   linear_add_rms_norm_linear: two GEMVs up to 4 rows, the first preparing the norm in
 *   its epilogue and the second applying it, the composition above.
 *
 * CUDA graphs: a decode step's ops are captured the first time a (tokens, sequences,
 * logit rows, block size) shape is seen, and that graph is replayed for every later step
 * of the shape: step_begin copies the step's layout into the same device buffer, the ops
 * only check that the model calls them (the captured launches already hold every
 * pointer), and sync launches the graph. Block tables are copied at one device width,
 * the widest seen (a wider one drops the graphs), and attention is planned for that
 * capacity, so neither the table width nor the sequence lengths are in the key. The
 * `sample` op is never captured: it runs after the graph (its parameters change every
 * step). be->enforce_eager turns graphs off; fp8_model_warmup captures every decode
 * bucket before serving. The graphs hold one model's tensors, so a backend serves one
 * model: a second KV cache is refused, and freeing the cache drops the graphs.
 *
 * Memory is counted by class (weights = tensors filled from the host or the random
 * filler, KV pool, activations = other tensors, scratch = step, sampling and kernel
 * buffers, the FP8 GEMM handle's cuBLASLt workspace, graphs = what instantiating them
 * took from cudaMemGetInfo) for fp8_backend_cuda_mem.
 *
 * Tensor parallel (fp8_backend_cuda_group_create): each backend owns one device (every
 * entry point that may run first on a thread makes it current) and its rank of one NCCL
 * communicator. all_reduce_sum is ncclAllReduce in place on the rank's stream, so a
 * decode graph captures it like any kernel (NCCL supports stream capture; the capture
 * mode stays Relaxed). sync waits for the stream with a deadline and watches the
 * communicator's asynchronous error and the group's abort flag: a missing peer or an NCCL
 * failure aborts the communicator and fails the step naming the rank, never hangs. */
#include <cuda_fp16.h>
#include <math.h>
#include <nccl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_common.cuh"

namespace {

constexpr int kMaxGraphs = 128;
constexpr int kMaxRetired = 64;
constexpr int kRowsHeadDimMax = 256;
constexpr int kAttnWarps = 4;
constexpr int kMaxTimed = 512; /* all_reduce_sum calls timed per step (2 per layer) */

struct graph_key {
    int32_t n_tokens, n_seqs, n_logit_rows, block_size;
};

/* A decode graph's draw (the sample op captured with the step): its logits and shape. */
struct graph_draw {
    bool on;
    const float *logits;
    int32_t rows, vocab;
};

struct graph_entry {
    graph_key key;
    cudaGraphExec_t exec;
    size_t bytes; /* what instantiating it took (cudaMemGetInfo) */
    graph_draw draw;
};

/* Mapped pinned bytes for a draw inside a decode graph: [ids | rows | penalty ids] */
constexpr size_t kGraphDrawBytes = 1 << 20;

/* Where a draw of n rows keeps its rows in those bytes (after the ids). */
size_t draw_rows_at(int32_t n)
{
    return ((size_t)n * sizeof(int32_t) + 63) & ~(size_t)63;
}

enum step_mode { MODE_EAGER, MODE_CAPTURE, MODE_REPLAY };

enum mem_class { MEM_WEIGHTS, MEM_KV, MEM_ACT, MEM_SCRATCH, MEM_WORKSPACE, MEM_COUNT };

struct cuda_ctx {
    int device; /* made current by every entry point a thread may call first */
    cudaStream_t stream;
    ncclComm_t comm; /* this rank's (a group of more than one); NULL after an abort */
    bool time_ar;    /* fp8_backend_cuda_time_collectives */
    cudaEvent_t ar_ev[2][kMaxTimed];
    int n_ar_ev;     /* event pairs created */
    int n_timed;     /* pairs recorded in this step */
    double ar_ms;
    int64_t ar_calls;
    int err_code; /* first failure since the last sync, 0 when none */
    struct fp8_err err;
    size_t bytes[MEM_COUNT]; /* device memory held, by class */
    size_t graph_bytes;      /* taken by instantiating graphs (cudaMemGetInfo deltas) */
    void **weights;          /* (n_weights) data pointers of tensors counted as weights */
    int n_weights, cap_weights;

    /* The current step; d_* point into d_step. */
    bool have_step, decode;
    int32_t n_tokens, n_seqs, max_blocks, block_size, n_logit_rows;
    int32_t width; /* block-table width on the device: the widest step so far */
    int32_t *h_step; /* pinned staging */
    int32_t *d_step;
    size_t step_cap; /* int32 values */
    int32_t *d_tokens, *d_positions, *d_slots, *d_tok_seq, *d_seq_len, *d_block_table,
        *d_logit_rows;

    bool have_kv;
    struct fp8_kv_cache_desc kv;

    void *ws; /* decode-attention partial results */
    size_t ws_cap;
    void *pws; /* prefill-attention tile list */
    size_t pws_cap;
    struct fp8_cuda_gemm *gemm; /* prefill GEMMs */
    void *gemm_ws;              /* quantized activations (and the sm_89 epilogue's sum) */
    size_t gemm_ws_cap;
    void *retired[kMaxRetired]; /* outgrown workspaces a captured graph may still use */
    int n_retired;

    /* The sample op: its rows and penalty ids staged in host memory by the op (which may
     * run inside a capture, where nothing may be allocated or freed), then at launch
     * (sample_launch: after the graph, or at once when eager) copied through the pinned
     * buffer to the device as [rows | penalty ids]; the drawn ids come back into the
     * pinned buffer behind them, where tensor_get of the ids tensor reads them. */
    void *samp_host;
    size_t samp_host_cap;
    void *h_samp, *d_samp;
    size_t samp_cap;        /* bytes of each */
    cudaEvent_t samp_done;  /* the last launch's copies have completed */
    bool samp_pending;      /* a call waits for the graph launch */
    bool samp_mirror;       /* samp_mirror_ids holds samp_rows ids of samp_ids */
    const int32_t *samp_mirror_ids;
    /* The draw of a decode step inside its graph: the op writes the step's rows into
     * mapped pinned memory (h_draw, the device's alias d_draw) before the graph is
     * launched; the captured kernel reads them from there and writes the ids there, where
     * tensor_get reads them: no copies, no launch after the graph. */
    void *h_draw, *d_draw;
    graph_draw cap_draw; /* the capture in progress */
    bool step_drawn;     /* this step's draw is its graph's */
    int32_t *samp_ids;
    float *samp_logits;
    int32_t samp_rows, samp_vocab;
    size_t samp_pen_off, samp_used; /* bytes of the staged rows, of rows + penalty ids */

    step_mode mode;
    graph_key key;
    int replay; /* graphs[] index in MODE_REPLAY */
    graph_entry graphs[kMaxGraphs];
    int n_graphs;
};

cuda_ctx *ctx_of(struct fp8_backend *be)
{
    return (cuda_ctx *)be->ctx;
}

/* Makes the backend's device current on the calling thread (a cheap call when it is). */
int use_device(cuda_ctx *c, struct fp8_err *err)
{
    return fp8_cuda_check(cudaSetDevice(c->device), err, "cudaSetDevice(%d)", c->device);
}

bool in_group(const struct fp8_backend *be)
{
    return be->group && be->group->n_ranks > 1;
}

__attribute__((format(printf, 3, 4))) void fail(struct fp8_backend *be, int code,
                                                const char *fmt, ...)
{
    cuda_ctx *c = ctx_of(be);
    if (c->err_code)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
    va_end(ap);
    c->err_code = code;
}

/* Records a failed kernel-wrapper call (its message already names op and shape). */
bool ok(struct fp8_backend *be, int rc, const struct fp8_err *e)
{
    if (rc < 0)
        fail(be, rc, "%s", e->msg);
    return rc >= 0;
}

bool launched(struct fp8_backend *be, const char *op)
{
    struct fp8_err e;
    return ok(be, fp8_cuda_check(cudaGetLastError(), &e, "%s", op), &e);
}

/* True when the op should enqueue work: no earlier failure, a step is open, and the step
 * is not a replayed graph (whose launches were captured). */
bool active(struct fp8_backend *be, const char *op)
{
    cuda_ctx *c = ctx_of(be);
    if (c->err_code)
        return false;
    if (!c->have_step) {
        fail(be, -EINVAL, "%s: no step_begin before the op", op);
        return false;
    }
    return c->mode != MODE_REPLAY;
}

bool is_act(const struct fp8_tensor *t)
{
    return t && t->data && t->n_dims >= 1 && t->dtype == FP8_DTYPE_BF16;
}

bool check_act(struct fp8_backend *be, const char *op, const char *what,
               const struct fp8_tensor *t, int64_t rows, int64_t cols)
{
    if (!is_act(t)) {
        fail(be, -EINVAL, "%s: %s must be a bf16 activation tensor (the cuda backend's)", op,
             what);
        return false;
    }
    int64_t cc = t->ne[t->n_dims - 1], r = fp8_tensor_rows(t);
    if ((rows >= 0 && r != rows) || (cols >= 0 && cc != cols)) {
        fail(be, -EINVAL, "%s: %s is %lld x %lld, expected %lld x %lld", op, what, (long long)r,
             (long long)cc, (long long)rows, (long long)cols);
        return false;
    }
    if (r > INT32_MAX || cc > INT32_MAX) {
        fail(be, -EINVAL, "%s: %s of %lld x %lld exceeds the kernels' int32 sizes", op, what,
             (long long)r, (long long)cc);
        return false;
    }
    return true;
}

bool check_f32_vec(struct fp8_backend *be, const char *op, const char *what,
                   const struct fp8_tensor *t, int64_t n)
{
    if (!t || !t->data || t->dtype != FP8_DTYPE_F32 || fp8_tensor_numel(t) != n) {
        fail(be, -EINVAL, "%s: %s must be f32 of %lld values", op, what, (long long)n);
        return false;
    }
    return true;
}

/* A glu over gate_up rows of width two (gate, then up): even, and an activation the
 * kernels have. */
bool check_glu(struct fp8_backend *be, const char *op, int64_t two, enum fp8_glu_act act)
{
    if (two % 2 || (act != FP8_GLU_SILU && act != FP8_GLU_GELU_TANH)) {
        fail(be, -EINVAL, "%s: odd gate_up width %lld or unknown activation", op,
             (long long)two);
        return false;
    }
    return true;
}

enum fp8_cuda_glu_act cuda_glu_act(enum fp8_glu_act act)
{
    return act == FP8_GLU_SILU ? FP8_CUDA_GLU_SILU : FP8_CUDA_GLU_GELU_TANH;
}

/* ---- kernels the wrappers in cuda_ops.h do not cover --------------------------------- */

__device__ __forceinline__ float e4m3_to_f32(uint8_t b)
{
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
}

__global__ void embed_kernel(uint16_t *out, const uint16_t *table, const int32_t *tokens,
                             int32_t vocab, int32_t dim, float scale)
{
    const int32_t id = tokens[blockIdx.x];
    uint16_t *o = out + (size_t)blockIdx.x * dim;
    const bool in = id >= 0 && id < vocab; /* the model checked ids; never read outside */
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = in ? fp8_f32_to_bf16_bits(fp8_bf16_bits_to_f32(table[(size_t)id * dim + i]) *
                                         scale)
                  : 0;
}

__global__ void gather_rows_kernel(uint16_t *out, const uint16_t *x, const int32_t *rows,
                                   int32_t dim)
{
    fp8_launch_dependents();
    fp8_grid_wait();
    const uint16_t *src = x + (size_t)rows[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = src[i];
}

__global__ void softcap_kernel(float *x, size_t n, float cap)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] = cap * tanhf(x[i] / cap);
}

struct rows_kv {
    uint8_t *k, *v;     /* this layer's (n_blocks, block_size, kvh, hd) */
    float *ks, *vs;     /* this layer's (n_blocks, block_size, kvh) */
    int32_t n_slots, kvh, hd, block_size;
};

/* One warp per (token, head of the fused projection) for any even head_dim <= 256: lane l
 * holds dims l, l + 32, ...; rotate-half partners go through shared memory. The same
 * arithmetic as the head_dim-128 kernel and the ref backend. */
__global__ void qk_rows_kernel(uint16_t *q_out, const uint16_t *qkv, const float *qw,
                               const float *kw, const float *inv_freq, float attn_factor,
                               float eps, bool plus_one, const int32_t *positions,
                               const int32_t *slots, rows_kv kv, int32_t n_tokens,
                               int32_t n_heads)
{
    fp8_launch_dependents();
    __shared__ float buf[4][kRowsHeadDimMax];
    const int heads = n_heads + 2 * kv.kvh, hd = kv.hd, half = hd / 2;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t wid = (int64_t)blockIdx.x * 4 + warp;
    if (wid >= (int64_t)n_tokens * heads)
        return;
    const int t = (int)(wid / heads), hs = (int)(wid % heads);
    const uint16_t *src = qkv + ((size_t)t * heads + hs) * hd;
    float v[kRowsHeadDimMax / 32];
    float ss = 0.0f, amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
        const int d = lane + 32 * i;
        v[i] = d < hd ? fp8_bf16_bits_to_f32(src[d]) : 0.0f;
        ss = fmaf(v[i], v[i], ss);
    }
    if (hs < n_heads + kv.kvh) {
        const float *nw = hs < n_heads ? qw : kw;
        const float inv = 1.0f / sqrtf(fp8_warp_sum(ss) / (float)hd + eps);
#pragma unroll
        for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
            const int d = lane + 32 * i;
            if (d < hd) {
                v[i] = v[i] * inv * (plus_one ? 1.0f + nw[d] : nw[d]);
                buf[warp][d] = v[i];
            }
        }
        __syncwarp();
        const float pos = (float)positions[t];
#pragma unroll
        for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
            const int d = lane + 32 * i;
            if (d < hd) {
                const int j = d < half ? d : d - half;
                const float a = pos * inv_freq[j];
                const float cs = cosf(a) * attn_factor, sn = sinf(a) * attn_factor;
                v[i] = d < half ? buf[warp][d] * cs - buf[warp][d + half] * sn
                                : buf[warp][d] * cs + buf[warp][d - half] * sn;
            }
        }
    }
    if (hs < n_heads) {
#pragma unroll
        for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                q_out[((size_t)t * n_heads + hs) * hd + d] = fp8_f32_to_bf16_bits(v[i]);
        }
        return;
    }
    const int32_t slot = slots[t];
    if (slot < 0 || slot >= kv.n_slots)
        return;
    const bool is_k = hs < n_heads + kv.kvh;
    const int g = is_k ? hs - n_heads : hs - n_heads - kv.kvh;
#pragma unroll
    for (int i = 0; i < kRowsHeadDimMax / 32; i++)
        amax = fmaxf(amax, fabsf(v[i]));
    amax = fp8_warp_max(amax);
    const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
    const size_t idx = (size_t)slot * kv.kvh + g;
    uint8_t *dst = (is_k ? kv.k : kv.v) + idx * hd;
#pragma unroll
    for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
        const int d = lane + 32 * i;
        if (d < hd)
            dst[d] = fp8_f32_to_e4m3(__fdiv_rn(v[i], s));
    }
    if (lane == 0)
        (is_k ? kv.ks : kv.vs)[idx] = s;
}

/* Attention for any query row: one block of kAttnWarps warps per (token, query head); each
 * warp keeps an online softmax over every kAttnWarps-th visible position, then the warps
 * merge. O(positions) per row, CUDA cores: serves the head sizes fp8_cuda_attn_prefill
 * does not (head_dim != 128). */
__global__ void __launch_bounds__(kAttnWarps * 32)
attn_rows_kernel(uint16_t *out, const uint16_t *q, rows_kv kv, const int32_t *positions,
                 const int32_t *tok_seq, const int32_t *block_table, int32_t max_blocks,
                 int32_t n_blocks, int32_t n_heads, float sm_scale, int32_t window)
{
    fp8_launch_dependents();
    __shared__ float qs[kRowsHeadDimMax];
    __shared__ float wm[kAttnWarps], wl[kAttnWarps];
    __shared__ float wacc[kAttnWarps][kRowsHeadDimMax];
    const int t = blockIdx.x, h = blockIdx.y, hd = kv.hd;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = h / (n_heads / kv.kvh);
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = fp8_bf16_bits_to_f32(q[((size_t)t * n_heads + h) * hd + d]);
    __syncthreads();
    const int32_t pos = positions[t];
    const int32_t *bt = block_table + (size_t)tok_seq[t] * max_blocks;
    const int32_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    float m = -INFINITY, l = 0.0f, acc[kRowsHeadDimMax / 32];
#pragma unroll
    for (int i = 0; i < kRowsHeadDimMax / 32; i++)
        acc[i] = 0.0f;
    for (int32_t j = lo + warp; j <= pos; j += kAttnWarps) {
        const int32_t blk = bt[j / kv.block_size];
        if (blk < 0 || blk >= n_blocks) /* step_begin checked the table; never read outside */
            continue;
        const size_t idx = ((size_t)blk * kv.block_size + j % kv.block_size) * kv.kvh + g;
        const uint8_t *kr = kv.k + idx * hd, *vr = kv.v + idx * hd;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                dot = fmaf(qs[d], e4m3_to_f32(kr[d]), dot);
        }
        const float s = fp8_warp_sum(dot) * kv.ks[idx] * sm_scale;
        const float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
        const float vsc = kv.vs[idx] * p;
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                acc[i] = acc[i] * corr + vsc * e4m3_to_f32(vr[d]);
        }
        m = mn;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < kRowsHeadDimMax / 32; i++) {
        const int d = lane + 32 * i;
        if (d < hd)
            wacc[warp][d] = acc[i];
    }
    __syncthreads();
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kAttnWarps; w++)
        mx = fmaxf(mx, wm[w]);
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; w++)
        sum += wm[w] == -INFINITY ? 0.0f : wl[w] * expf(wm[w] - mx);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < kAttnWarps; w++)
            o += wm[w] == -INFINITY ? 0.0f : wacc[w][d] * expf(wm[w] - mx);
        out[((size_t)t * n_heads + h) * hd + d] = fp8_f32_to_bf16_bits(sum > 0.0f ? o / sum : 0.0f);
    }
}

/* argmax_value: one block per row; lowest index on ties. */
__global__ void __launch_bounds__(1024) argmax_kernel(int32_t *ids, float *values,
                                                      const float *x, int32_t v)
{
    const float *row = x + (size_t)blockIdx.x * v;
    float best = -INFINITY;
    int32_t bi = INT32_MAX;
    for (int32_t i = threadIdx.x; i < v; i += blockDim.x)
        if (row[i] > best || (row[i] == best && i < bi)) {
            best = row[i];
            bi = i;
        }
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) {
            best = ob;
            bi = oi;
        }
    }
    __shared__ float sb[32];
    __shared__ int32_t si[32];
    if ((threadIdx.x & 31) == 0) {
        sb[threadIdx.x >> 5] = best;
        si[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (sb[w] > best || (sb[w] == best && si[w] < bi)) {
                best = sb[w];
                bi = si[w];
            }
        ids[blockIdx.x] = bi == INT32_MAX ? 0 : bi; /* all-NaN row: 0 */
        values[blockIdx.x] = bi == INT32_MAX ? row[0] : best;
    }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* bf16: uniform with std 0.02; f32: uniform in [0.9, 1.1]. */
__global__ void fill_uniform_kernel(void *dst, size_t n, uint64_t seed, bool bf16)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float u = (float)(mix64(seed + (i + 1) * 0x9e3779b97f4a7c15ull) >> 40) * 0x1p-24f;
        if (bf16)
            ((uint16_t *)dst)[i] = fp8_f32_to_bf16_bits((2.0f * u - 1.0f) * 0.0346f);
        else
            ((float *)dst)[i] = 0.9f + 0.2f * u;
    }
}

__global__ void fill_f32_kernel(float *dst, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = v;
}

/* ---- memory --------------------------------------------------------------------------- */

int dev_alloc(cuda_ctx *c, void **p, size_t bytes, mem_class cls, struct fp8_err *err)
{
    int rc = fp8_cuda_malloc(p, bytes ? bytes : 1, err);
    if (rc == 0)
        c->bytes[cls] += bytes;
    return rc;
}

void dev_free(cuda_ctx *c, void *p, size_t bytes, mem_class cls)
{
    if (!p)
        return;
    cudaFree(p);
    c->bytes[cls] -= bytes;
}

int weight_index(const cuda_ctx *c, const void *p)
{
    for (int i = c->n_weights - 1; i >= 0; i--)
        if (c->weights[i] == p)
            return i;
    return -1;
}

size_t scale_bytes(const struct fp8_tensor *t)
{
    return t->dtype == FP8_DTYPE_E4M3 ? (size_t)fp8_tensor_rows(t) * sizeof(float) : 0;
}

int cuda_tensor_alloc(struct fp8_backend *be, struct fp8_tensor *t, enum fp8_dtype dtype,
                      int32_t n_dims, const int64_t *ne, struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    struct fp8_tensor n;
    memset(&n, 0, sizeof(n));
    n.dtype = dtype;
    n.n_dims = n_dims;
    if (!t || !ne || n_dims < 1 || n_dims > FP8_TENSOR_MAX_DIMS || dtype >= FP8_DTYPE_COUNT)
        return fp8_err_set(err, -EINVAL, "tensor_alloc: bad dtype or rank %d", (int)n_dims);
    int rc = use_device(c, err);
    if (rc < 0)
        return rc;
    int64_t numel = 1;
    for (int32_t i = 0; i < n_dims; i++) {
        if (ne[i] <= 0 || ne[i] > ((int64_t)1 << 40) / numel)
            return fp8_err_set(err, -EINVAL, "tensor_alloc: dimension %lld makes more than "
                               "2^40 elements", (long long)ne[i]);
        numel *= ne[i];
        n.ne[i] = ne[i];
    }
    rc = dev_alloc(c, &n.data, fp8_tensor_nbytes(&n), MEM_ACT, err);
    if (rc == 0 && dtype == FP8_DTYPE_E4M3) {
        void *s = NULL;
        rc = dev_alloc(c, &s, scale_bytes(&n), MEM_ACT, err);
        n.scale = (float *)s;
        if (rc < 0)
            dev_free(c, n.data, fp8_tensor_nbytes(&n), MEM_ACT);
    }
    if (rc < 0)
        return fp8_err_prefix(err, rc, "tensor_alloc(%s, %lld elements)", fp8_dtype_name(dtype),
                              (long long)numel);
    *t = n;
    return 0;
}

void cuda_tensor_free(struct fp8_backend *be, struct fp8_tensor *t)
{
    cuda_ctx *c = ctx_of(be);
    if (!t || !t->data)
        return;
    struct fp8_err e;
    use_device(c, &e);
    if (t->data == c->samp_ids) /* the next tensor here is not these draws */
        c->samp_mirror = false;
    const int w = weight_index(c, t->data);
    mem_class cls = MEM_ACT;
    if (w >= 0) {
        c->weights[w] = c->weights[--c->n_weights];
        cls = MEM_WEIGHTS;
    }
    dev_free(c, t->data, fp8_tensor_nbytes(t), cls);
    dev_free(c, t->scale, scale_bytes(t), cls);
    t->data = NULL;
    t->scale = NULL;
}

/* A tensor whose contents came from the host or the random filler is a weight from now
 * on (activations are only ever written by ops). */
int count_as_weight(cuda_ctx *c, const struct fp8_tensor *t, struct fp8_err *err)
{
    if (weight_index(c, t->data) >= 0)
        return 0;
    if (c->n_weights == c->cap_weights) {
        int cap = c->cap_weights ? 2 * c->cap_weights : 256;
        void **p = (void **)realloc(c->weights, (size_t)cap * sizeof(*p));
        if (!p)
            return fp8_err_set(err, -ENOMEM, "out of memory");
        c->weights = p;
        c->cap_weights = cap;
    }
    c->weights[c->n_weights++] = t->data;
    const size_t b = fp8_tensor_nbytes(t) + scale_bytes(t);
    c->bytes[MEM_ACT] -= b;
    c->bytes[MEM_WEIGHTS] += b;
    return 0;
}

int copy_sync(cuda_ctx *c, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
              struct fp8_err *err, const char *what)
{
    int rc = use_device(c, err);
    if (rc < 0)
        return rc;
    rc = fp8_cuda_check(cudaMemcpyAsync(dst, src, bytes, kind, c->stream), err,
                            "%s of %zu bytes", what, bytes);
    if (rc == 0)
        rc = fp8_cuda_check(cudaStreamSynchronize(c->stream), err, "%s of %zu bytes", what,
                            bytes);
    return rc;
}

int cuda_tensor_set(struct fp8_backend *be, struct fp8_tensor *t, const void *data,
                    const float *scale, struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    if (!t || !t->data || !data || (t->dtype == FP8_DTYPE_E4M3 && !scale))
        return fp8_err_set(err, -EINVAL, "tensor_set: missing tensor, data or e4m3 scales");
    int rc = count_as_weight(c, t, err);
    if (t->data == c->samp_ids)
        c->samp_mirror = false;
    if (rc == 0)
        rc = copy_sync(c, t->data, data, fp8_tensor_nbytes(t), cudaMemcpyHostToDevice, err,
                       "tensor_set");
    if (rc == 0 && t->dtype == FP8_DTYPE_E4M3)
        rc = copy_sync(c, t->scale, scale, scale_bytes(t), cudaMemcpyHostToDevice, err,
                       "tensor_set scales");
    return rc;
}

int cuda_tensor_get(struct fp8_backend *be, const struct fp8_tensor *t, void *data, float *scale,
                    struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    if (!t || !t->data || !data)
        return fp8_err_set(err, -EINVAL, "tensor_get: missing tensor or destination");
    if (c->samp_mirror && t->data == c->samp_ids && t->dtype == FP8_DTYPE_I32 &&
        fp8_tensor_nbytes(t) <= (size_t)c->samp_rows * sizeof(int32_t)) {
        /* The draws are already on their way to pinned memory: no second copy. */
        int rc = fp8_cuda_check(cudaStreamSynchronize(c->stream), err, "tensor_get");
        if (rc == 0)
            memcpy(data, c->samp_mirror_ids, fp8_tensor_nbytes(t));
        return rc;
    }
    int rc = copy_sync(c, data, t->data, fp8_tensor_nbytes(t), cudaMemcpyDeviceToHost, err,
                       "tensor_get");
    if (rc == 0 && t->dtype == FP8_DTYPE_E4M3 && scale)
        rc = copy_sync(c, scale, t->scale, scale_bytes(t), cudaMemcpyDeviceToHost, err,
                       "tensor_get scales");
    return rc;
}

int cuda_tensor_fill_random(struct fp8_backend *be, struct fp8_tensor *t, uint64_t seed,
                            struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    if (!t || !t->data || t->dtype == FP8_DTYPE_I32)
        return fp8_err_set(err, -EINVAL, "tensor_fill_random: missing or i32 tensor");
    const size_t n = (size_t)fp8_tensor_numel(t);
    int rc = use_device(c, err);
    if (rc == 0)
        rc = count_as_weight(c, t, err);
    if (rc < 0)
        return rc;
    if (t->dtype == FP8_DTYPE_E4M3) {
        rc = fp8_cuda_fill_e4m3_random((uint8_t *)t->data, n, seed, c->stream, err);
        if (rc < 0)
            return rc;
        /* Uniform finite codes have an rms near 128 (the top binades dominate): this row
         * scale makes a dot product over `cols` O(1) inputs O(1). */
        const float cols = (float)t->ne[t->n_dims - 1];
        fill_f32_kernel<<<256, 256, 0, c->stream>>>(t->scale, (size_t)fp8_tensor_rows(t),
                                                    1.0f / (128.0f * sqrtf(cols)));
    } else {
        fill_uniform_kernel<<<1024, 256, 0, c->stream>>>(t->data, n, seed,
                                                         t->dtype == FP8_DTYPE_BF16);
    }
    rc = fp8_cuda_check(cudaGetLastError(), err, "tensor_fill_random(%s, %zu elements)",
                        fp8_dtype_name(t->dtype), n);
    if (rc == 0)
        rc = fp8_cuda_check(cudaStreamSynchronize(c->stream), err, "tensor_fill_random");
    return rc;
}

void graphs_clear(cuda_ctx *c)
{
    for (int i = 0; i < c->n_graphs; i++) {
        cudaGraphExecDestroy(c->graphs[i].exec);
        c->graph_bytes -= c->graphs[i].bytes;
    }
    c->n_graphs = 0;
}

int cuda_kv_cache_alloc(struct fp8_backend *be, struct fp8_kv_cache *kc,
                        const struct fp8_kv_cache_desc *d, struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    if (!kc || !d)
        return fp8_err_set(err, -EINVAL, "kv_cache_alloc: missing cache or description");
    int rc = use_device(c, err);
    if (rc < 0)
        return rc;
    if (c->have_kv)
        return fp8_err_set(err, -EBUSY, "kv_cache_alloc: this cuda backend already holds a "
                           "KV cache (one model per backend: its decode graphs hold that "
                           "model's tensors)");
    if (d->dtype != FP8_DTYPE_E4M3)
        return fp8_err_set(err, -ENOTSUP, "kv cache dtype %s is not supported on the cuda "
                           "backend (fp8 only; bf16 is not yet)", fp8_dtype_name(d->dtype));
    if (fp8_kv_block_bytes(d) <= 0 || d->n_blocks <= 0)
        return fp8_err_set(err, -EINVAL, "kv cache: bad shape (%d layers, %d blocks of %d, "
                           "%d kv heads x %d)", d->n_layers, d->n_blocks, d->block_size,
                           d->n_kv_heads, d->head_dim);
    if (d->head_dim % 2 || d->head_dim > kRowsHeadDimMax ||
        (int64_t)d->n_blocks * d->block_size > INT32_MAX)
        return fp8_err_set(err, -ENOTSUP, "kv cache: head_dim %d (even, at most %d) or %lld "
                           "slots (int32) not supported on the cuda backend", d->head_dim,
                           kRowsHeadDimMax, (long long)d->n_blocks * d->block_size);
    const size_t heads = (size_t)d->n_layers * d->n_blocks * d->block_size * d->n_kv_heads;
    const size_t bytes = heads * (size_t)d->head_dim;
    struct fp8_kv_cache n;
    memset(&n, 0, sizeof(n));
    n.desc = *d;
    void *ks = NULL, *vs = NULL;
    if ((rc = dev_alloc(c, &n.k, bytes, MEM_KV, err)) < 0 ||
        (rc = dev_alloc(c, &n.v, bytes, MEM_KV, err)) < 0 ||
        (rc = dev_alloc(c, &ks, heads * sizeof(float), MEM_KV, err)) < 0 ||
        (rc = dev_alloc(c, &vs, heads * sizeof(float), MEM_KV, err)) < 0) {
        dev_free(c, n.k, bytes, MEM_KV);
        dev_free(c, n.v, n.v ? bytes : 0, MEM_KV);
        dev_free(c, ks, ks ? heads * sizeof(float) : 0, MEM_KV);
        return fp8_err_prefix(err, rc, "kv cache (%zu bytes)", 2 * bytes);
    }
    n.k_scale = (float *)ks;
    n.v_scale = (float *)vs;
    /* Real steps never read unwritten slots (attention stops at each token's position);
     * padding sequences of decode buckets read slot 0 of block 0, which zeroes keep
     * finite (a NaN byte times a zero scale would not be). */
    rc = fp8_cuda_check(cudaMemsetAsync(ks, 0, heads * sizeof(float), c->stream), err,
                        "kv cache clear");
    if (rc == 0)
        rc = fp8_cuda_check(cudaMemsetAsync(vs, 0, heads * sizeof(float), c->stream), err,
                            "kv cache clear");
    if (rc == 0)
        rc = fp8_cuda_check(cudaMemsetAsync(n.k, 0, bytes, c->stream), err, "kv cache clear");
    if (rc == 0)
        rc = fp8_cuda_check(cudaMemsetAsync(n.v, 0, bytes, c->stream), err, "kv cache clear");
    if (rc == 0)
        rc = fp8_cuda_check(cudaStreamSynchronize(c->stream), err, "kv cache clear");
    if (rc < 0) {
        dev_free(c, n.k, bytes, MEM_KV);
        dev_free(c, n.v, bytes, MEM_KV);
        dev_free(c, ks, heads * sizeof(float), MEM_KV);
        dev_free(c, vs, heads * sizeof(float), MEM_KV);
        return rc;
    }
    c->kv = *d;
    c->have_kv = true;
    *kc = n;
    return 0;
}

void cuda_kv_cache_free(struct fp8_backend *be, struct fp8_kv_cache *kc)
{
    cuda_ctx *c = ctx_of(be);
    if (!kc || !kc->k)
        return;
    struct fp8_err e;
    use_device(c, &e);
    const struct fp8_kv_cache_desc *d = &kc->desc;
    const size_t heads = (size_t)d->n_layers * d->n_blocks * d->block_size * d->n_kv_heads;
    dev_free(c, kc->k, heads * d->head_dim, MEM_KV);
    dev_free(c, kc->v, heads * d->head_dim, MEM_KV);
    dev_free(c, kc->k_scale, heads * sizeof(float), MEM_KV);
    dev_free(c, kc->v_scale, heads * sizeof(float), MEM_KV);
    memset(kc, 0, sizeof(*kc));
    c->have_kv = false;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    graphs_clear(c);
}

/* ---- stepping and graphs -------------------------------------------------------------- */

bool key_eq(const graph_key &a, const graph_key &b)
{
    return a.n_tokens == b.n_tokens && a.n_seqs == b.n_seqs &&
           a.n_logit_rows == b.n_logit_rows && a.block_size == b.block_size;
}

/* Slots inside the pool (or < 0: padding), blocks a sequence can reach inside the pool. */
int check_step_cache(const cuda_ctx *c, const struct fp8_batch *b, struct fp8_err *err)
{
    if (!c->have_kv)
        return fp8_err_set(err, -EINVAL, "step: no KV cache allocated on the cuda backend");
    if (b->block_size != c->kv.block_size)
        return fp8_err_set(err, -EINVAL, "step: block_size %d differs from the cache's %d",
                           b->block_size, c->kv.block_size);
    const int64_t n_slots = (int64_t)c->kv.n_blocks * c->kv.block_size;
    for (int32_t t = 0; t < b->n_tokens; t++)
        if (b->slots[t] >= n_slots)
            return fp8_err_set(err, -EINVAL, "step: token %d's slot %d is outside the cache's "
                               "%lld", t, b->slots[t], (long long)n_slots);
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const int32_t used = (b->seq_len[s] + b->block_size - 1) / b->block_size;
        for (int32_t i = 0; i < used; i++) {
            const int32_t blk = b->block_table[(size_t)s * b->max_blocks_per_seq + i];
            if (blk < 0 || blk >= c->kv.n_blocks)
                return fp8_err_set(err, -EINVAL, "step: sequence %d's block %d is %d, outside "
                                   "the pool of %d", s, i, blk, c->kv.n_blocks);
        }
    }
    return 0;
}

int cuda_step_begin(struct fp8_backend *be, const struct fp8_batch *b, const int32_t *logit_rows,
                    int32_t n_logit_rows, struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    int rc = fp8_batch_check(b, logit_rows, n_logit_rows, err);
    if (rc < 0)
        return rc;
    if ((rc = use_device(c, err)) < 0 || (rc = check_step_cache(c, b, err)) < 0)
        return rc;
    if (c->mode != MODE_EAGER || c->err_code)
        return fp8_err_set(err, -EINVAL, "step: the previous step was not synced");
    if ((rc = fp8_cuda_check(cudaStreamSynchronize(c->stream), err, "step: waiting for the "
                             "previous step")) < 0)
        return rc;
    if (b->max_blocks_per_seq > c->width) {
        /* Captured graphs index the tables with the old width and planned attention for
         * its capacity. */
        graphs_clear(c);
        c->width = b->max_blocks_per_seq;
    }
    const size_t nt = (size_t)b->n_tokens, ns = (size_t)b->n_seqs,
                 w = (size_t)c->width, nbt = ns * w, nl = (size_t)n_logit_rows;
    const size_t need = 4 * nt + ns + nbt + nl;
    if (need > c->step_cap) {
        /* Captured graphs hold the old buffer's addresses. */
        graphs_clear(c);
        cudaFreeHost(c->h_step);
        dev_free(c, c->d_step, c->step_cap * sizeof(int32_t), MEM_SCRATCH);
        c->h_step = NULL;
        c->d_step = NULL;
        c->step_cap = 0;
        size_t cap = need * 2;
        void *d = NULL;
        rc = fp8_cuda_check(cudaMallocHost((void **)&c->h_step, cap * sizeof(int32_t)), err,
                            "step: pinned buffer of %zu bytes", cap * sizeof(int32_t));
        if (rc == 0)
            rc = dev_alloc(c, &d, cap * sizeof(int32_t), MEM_SCRATCH, err);
        if (rc < 0)
            return rc;
        c->d_step = (int32_t *)d;
        c->step_cap = cap;
    }
    int32_t *h = c->h_step;
    memcpy(h, b->tokens, nt * sizeof(int32_t));
    memcpy(h + nt, b->positions, nt * sizeof(int32_t));
    memcpy(h + 2 * nt, b->slots, nt * sizeof(int32_t));
    bool decode = true;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            h[3 * nt + t] = s;
        if (b->seq_start[s + 1] - b->seq_start[s] != 1 ||
            b->positions[b->seq_start[s]] != b->seq_len[s] - 1)
            decode = false;
    }
    memcpy(h + 4 * nt, b->seq_len, ns * sizeof(int32_t));
    const size_t bw = (size_t)b->max_blocks_per_seq;
    for (size_t s = 0; s < ns; s++) {
        int32_t *row = h + 4 * nt + ns + s * w;
        memcpy(row, b->block_table + s * bw, bw * sizeof(int32_t));
        for (size_t i = bw; i < w; i++)
            row[i] = -1;
    }
    if (nl)
        memcpy(h + 4 * nt + ns + nbt, logit_rows, nl * sizeof(int32_t));
    rc = fp8_cuda_check(cudaMemcpyAsync(c->d_step, h, need * sizeof(int32_t),
                                        cudaMemcpyHostToDevice, c->stream),
                        err, "step: copy of %zu bytes to the device", need * sizeof(int32_t));
    if (rc < 0)
        return rc;
    c->d_tokens = c->d_step;
    c->d_positions = c->d_step + nt;
    c->d_slots = c->d_step + 2 * nt;
    c->d_tok_seq = c->d_step + 3 * nt;
    c->d_seq_len = c->d_step + 4 * nt;
    c->d_block_table = c->d_step + 4 * nt + ns;
    c->d_logit_rows = c->d_step + 4 * nt + ns + nbt;
    c->n_tokens = b->n_tokens;
    c->n_seqs = b->n_seqs;
    c->max_blocks = c->width;
    c->block_size = b->block_size;
    c->n_logit_rows = n_logit_rows;
    c->decode = decode;
    c->have_step = true;
    c->mode = MODE_EAGER;
    c->samp_mirror = false;
    c->step_drawn = false;
    if (decode && !be->enforce_eager) {
        c->key = {b->n_tokens, b->n_seqs, n_logit_rows, b->block_size};
        for (int i = 0; i < c->n_graphs; i++)
            if (key_eq(c->graphs[i].key, c->key)) {
                c->mode = MODE_REPLAY;
                c->replay = i;
                return 0;
            }
        if (c->n_graphs < kMaxGraphs) {
            /* Relaxed: the ops may still allocate workspace while being captured. */
            rc = fp8_cuda_check(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed),
                                err, "step: begin graph capture");
            if (rc < 0)
                return rc;
            c->mode = MODE_CAPTURE;
            c->cap_draw = {};
        }
    }
    return 0;
}

/* The staged sampling call, on the stream: parameters to the device, the draws, the ids
 * back into pinned memory. Never inside a capture. */
void sample_launch(struct fp8_backend *be)
{
    cuda_ctx *c = ctx_of(be);
    struct fp8_err e;
    const size_t need = c->samp_used + (size_t)c->samp_rows * sizeof(int32_t);
    /* The pinned buffer is rewritten below: the previous launch's copies must be done. */
    if (!ok(be, fp8_cuda_check(cudaEventSynchronize(c->samp_done), &e, "sample: waiting for "
                               "the previous draw"), &e))
        return;
    if (need > c->samp_cap) {
        cudaFreeHost(c->h_samp);
        dev_free(c, c->d_samp, c->samp_cap, MEM_SCRATCH);
        c->h_samp = c->d_samp = NULL;
        c->samp_cap = 0;
        const size_t cap = need * 2 > 65536 ? need * 2 : 65536;
        if (!ok(be, fp8_cuda_check(cudaMallocHost(&c->h_samp, cap), &e, "sample: pinned "
                                   "buffer of %zu bytes", cap), &e) ||
            !ok(be, dev_alloc(c, &c->d_samp, cap, MEM_SCRATCH, &e), &e))
            return;
        c->samp_cap = cap;
    }
    memcpy(c->h_samp, c->samp_host, c->samp_used);
    int32_t *h_ids = (int32_t *)((char *)c->h_samp + c->samp_used);
    const size_t ids_bytes = (size_t)c->samp_rows * sizeof(int32_t);
    if (!ok(be, fp8_cuda_check(cudaMemcpyAsync(c->d_samp, c->h_samp, c->samp_used,
                                               cudaMemcpyHostToDevice, c->stream),
                               &e, "sample: copy of %zu bytes of parameters", c->samp_used),
            &e) ||
        !ok(be, fp8_cuda_sample(c->samp_ids, c->samp_logits,
                                (const struct fp8_sample_row *)c->d_samp,
                                (const int32_t *)((char *)c->d_samp + c->samp_pen_off),
                                c->samp_rows, c->samp_vocab, c->stream, &e),
            &e) ||
        !ok(be, fp8_cuda_check(cudaMemcpyAsync(h_ids, c->samp_ids, ids_bytes,
                                               cudaMemcpyDeviceToHost, c->stream),
                               &e, "sample: copy of %zu bytes of ids", ids_bytes),
            &e) ||
        !ok(be, fp8_cuda_check(cudaEventRecord(c->samp_done, c->stream), &e, "sample: event"),
            &e))
        return;
    c->samp_mirror = true;
    c->samp_mirror_ids = h_ids;
}

/* Ends this rank's part in the group: its communicator aborted (which releases a kernel
 * stuck waiting for a peer), the group told, the stream drained. */
void abort_rank(struct fp8_backend *be)
{
    cuda_ctx *c = ctx_of(be);
    fp8_backend_group_abort(be->group);
    if (c->comm) {
        ncclCommAbort(c->comm);
        c->comm = NULL;
    }
    cudaStreamSynchronize(c->stream);
}

/* The end of a step: the stream drained. Alone, a plain synchronize. In a group, polled
 * with a deadline (the group's timeout), watching the communicator's asynchronous error
 * and the group's abort flag, so that a dead or failed peer ends the wait. */
int wait_step(struct fp8_backend *be, struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    if (!in_group(be))
        return fp8_cuda_check(cudaStreamSynchronize(c->stream), err, "step");
    struct fp8_backend_group *g = be->group;
    const int64_t deadline = fp8_now_ns() + (int64_t)g->timeout_ms * 1000000;
    for (;;) {
        const cudaError_t q = cudaStreamQuery(c->stream);
        if (q == cudaSuccess)
            return 0;
        if (q != cudaErrorNotReady) {
            int rc = fp8_cuda_check(q, err, "step (rank %d of %d)", be->tp_rank, g->n_ranks);
            fp8_backend_group_abort(g);
            return rc;
        }
        ncclResult_t ae = ncclSuccess;
        if (c->comm && ncclCommGetAsyncError(c->comm, &ae) == ncclSuccess && ae != ncclSuccess &&
            ae != ncclInProgress) {
            int rc = fp8_err_set(err, -EIO, "all_reduce_sum: rank %d of %d: NCCL: %s (%s)",
                                 be->tp_rank, g->n_ranks, ncclGetErrorString(ae),
                                 ncclGetLastError(c->comm));
            abort_rank(be);
            return rc;
        }
        if (fp8_backend_group_aborted(g)) {
            abort_rank(be);
            return fp8_err_set(err, -ECANCELED, "step: rank %d of %d: the tensor-parallel group "
                               "was aborted (another rank failed)", be->tp_rank, g->n_ranks);
        }
        if (fp8_now_ns() > deadline) {
            abort_rank(be);
            return fp8_err_set(err, -ETIMEDOUT, "step: rank %d of %d did not finish within %d "
                               "ms (a peer never joined an all_reduce_sum); NCCL aborted",
                               be->tp_rank, g->n_ranks, g->timeout_ms);
        }
        sched_yield();
    }
}

void collect_timings(cuda_ctx *c)
{
    for (int i = 0; i < c->n_timed; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, c->ar_ev[0][i], c->ar_ev[1][i]) == cudaSuccess) {
            c->ar_ms += ms;
            c->ar_calls++;
        }
    }
}

int cuda_sync(struct fp8_backend *be, struct fp8_err *err)
{
    cuda_ctx *c = ctx_of(be);
    struct fp8_err e;
    int rc = use_device(c, &e);
    if (rc < 0)
        return fp8_err_set(err, rc, "%s", e.msg);
    if (c->mode == MODE_CAPTURE) {
        cudaGraph_t g = NULL;
        cudaGraphExec_t exec = NULL;
        size_t free0 = 0, free1 = 0, total = 0;
        rc = fp8_cuda_check(cudaStreamEndCapture(c->stream, &g), &e, "end of graph capture");
        if (rc == 0 && !c->err_code) {
            cudaMemGetInfo(&free0, &total);
            rc = fp8_cuda_check(cudaGraphInstantiate(&exec, g, 0), &e, "graph instantiate");
            cudaMemGetInfo(&free1, &total);
        }
        if (g)
            cudaGraphDestroy(g);
        if (rc < 0)
            fail(be, rc, "decode step graph (%d tokens): %s", c->key.n_tokens, e.msg);
        if (exec && !c->err_code) {
            graph_entry *ge = &c->graphs[c->n_graphs];
            ge->key = c->key;
            ge->exec = exec;
            ge->bytes = free0 > free1 ? free0 - free1 : 0;
            ge->draw = c->cap_draw;
            c->graph_bytes += ge->bytes;
            c->replay = c->n_graphs++;
            be->n_graph_captures++;
        } else if (exec) {
            cudaGraphExecDestroy(exec);
        }
    }
    if (c->mode == MODE_REPLAY && c->graphs[c->replay].draw.on && !c->step_drawn) {
        /* A step without a draw replays a graph with one: the last rows stay, without
         * their penalties (which the kernel applies to the logits in place). */
        const graph_draw &d = c->graphs[c->replay].draw;
        struct fp8_sample_row *r =
            (struct fp8_sample_row *)((char *)c->h_draw + draw_rows_at(d.rows));
        for (int32_t i = 0; i < d.rows; i++)
            r[i].n_pen = 0;
    }
    if ((c->mode == MODE_CAPTURE || c->mode == MODE_REPLAY) && !c->err_code) {
        rc = fp8_cuda_check(cudaGraphLaunch(c->graphs[c->replay].exec, c->stream), &e,
                            "decode step graph (%d tokens) launch", c->key.n_tokens);
        if (rc < 0)
            fail(be, rc, "%s", e.msg);
    }
    c->mode = MODE_EAGER;
    if (c->samp_pending && !c->err_code)
        sample_launch(be);
    c->samp_pending = false;
    rc = wait_step(be, &e);
    if (rc < 0)
        fail(be, rc, "%s", e.msg);
    else
        collect_timings(c);
    c->n_timed = 0;
    rc = c->err_code;
    if (rc) {
        fp8_err_set(err, rc, "%s", c->err.msg);
        c->err_code = 0;
    }
    return rc;
}

/* ---- ops ------------------------------------------------------------------------------ */

void cuda_embed(struct fp8_backend *be, const struct fp8_tensor *table, float scale,
                struct fp8_tensor *out)
{
    cuda_ctx *c = ctx_of(be);
    if (!active(be, "embed"))
        return;
    if (!table || !table->data || table->dtype != FP8_DTYPE_BF16 || table->n_dims != 2) {
        fail(be, -ENOTSUP, "embed: the cuda backend takes a bf16 (vocab, dim) table");
        return;
    }
    if (!check_act(be, "embed", "out", out, -1, table->ne[1]))
        return;
    const int64_t n = fp8_tensor_rows(out);
    if (n > c->n_tokens) {
        fail(be, -EINVAL, "embed: %lld rows but the step has %d tokens", (long long)n,
             c->n_tokens);
        return;
    }
    embed_kernel<<<(unsigned)n, 256, 0, c->stream>>>((uint16_t *)out->data,
                                                     (const uint16_t *)table->data, c->d_tokens,
                                                     (int32_t)table->ne[0], (int32_t)table->ne[1],
                                                     scale);
    launched(be, "embed");
}

bool check_norm(struct fp8_backend *be, const char *op, const struct fp8_tensor *x,
                const struct fp8_tensor *w, const struct fp8_tensor *out)
{
    if (!check_act(be, op, "x", x, -1, -1))
        return false;
    const int64_t cols = x->ne[x->n_dims - 1];
    return check_f32_vec(be, op, "weight", w, cols) &&
           check_act(be, op, "out", out, fp8_tensor_rows(x), cols);
}

void cuda_rms_norm(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                   float eps, enum fp8_norm kind, struct fp8_tensor *out)
{
    struct fp8_err e;
    if (!active(be, "rms_norm") || !check_norm(be, "rms_norm", x, w, out))
        return;
    ok(be, fp8_cuda_rmsnorm((uint16_t *)out->data, (const uint16_t *)x->data, NULL,
                            (const float *)w->data, (int32_t)fp8_tensor_rows(x),
                            (int32_t)x->ne[x->n_dims - 1], eps, kind == FP8_NORM_RMS_PLUS_ONE,
                            ctx_of(be)->stream, &e),
       &e);
}

void cuda_add_rms_norm(struct fp8_backend *be, struct fp8_tensor *residual,
                       const struct fp8_tensor *x, const struct fp8_tensor *w, float eps,
                       enum fp8_norm kind, struct fp8_tensor *out)
{
    struct fp8_err e;
    if (!active(be, "add_rms_norm") || !check_norm(be, "add_rms_norm", x, w, out) ||
        !check_act(be, "add_rms_norm", "residual", residual, fp8_tensor_rows(x),
                   x->ne[x->n_dims - 1]))
        return;
    ok(be, fp8_cuda_rmsnorm((uint16_t *)out->data, (const uint16_t *)x->data,
                            (uint16_t *)residual->data, (const float *)w->data,
                            (int32_t)fp8_tensor_rows(x), (int32_t)x->ne[x->n_dims - 1], eps,
                            kind == FP8_NORM_RMS_PLUS_ONE, ctx_of(be)->stream, &e),
       &e);
}

/* Grows a scratch buffer to at least bytes. The old one may sit in a captured graph (or a
 * capture in progress): it is kept until destroy. */
bool grow(struct fp8_backend *be, void **buf, size_t *cap, size_t bytes, const char *what)
{
    cuda_ctx *c = ctx_of(be);
    if (bytes <= *cap)
        return true;
    if (c->n_retired == kMaxRetired) {
        fail(be, -ENOMEM, "%s: scratch regrown too often", what);
        return false;
    }
    if (*buf)
        c->retired[c->n_retired++] = *buf;
    *buf = NULL;
    *cap = 0;
    struct fp8_err e;
    void *p = NULL;
    if (!ok(be, dev_alloc(c, &p, bytes, MEM_SCRATCH, &e), &e))
        return false;
    *buf = p;
    *cap = bytes;
    return true;
}

/* Steps of more than 64 rows: FP8 x FP8 on the tensor cores (fp8_cuda_gemm_e4m3). */
void linear_gemm(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                 struct fp8_tensor *out, int32_t n)
{
    cuda_ctx *c = ctx_of(be);
    const int32_t in = (int32_t)w->ne[1], n_out = (int32_t)w->ne[0];
    const int32_t f32 = out->dtype == FP8_DTYPE_F32;
    struct fp8_cuda_gemm_cfg cfg;
    fp8_cuda_gemm_cfg_pick(c->gemm, &cfg);
    const size_t need = fp8_cuda_gemm_e4m3_workspace(n, in, n_out, f32, &cfg);
    if (!grow(be, &c->gemm_ws, &c->gemm_ws_cap, need, "linear"))
        return;
    struct fp8_err e;
    ok(be, fp8_cuda_gemm_e4m3(c->gemm, out->data, f32, (const uint16_t *)x->data,
                              (const uint8_t *)w->data, w->scale, n, in, n_out, &cfg, c->gemm_ws,
                              c->gemm_ws_cap, c->stream, &e),
       &e);
}

/* The checks every linear op makes: w e4m3 (out, in) with row scales, x bf16 (n, in),
 * out bf16 (or f32 when f32_ok) (n, out_cols). */
bool check_linear(struct fp8_backend *be, const char *op, const struct fp8_tensor *x,
                  const struct fp8_tensor *w, const struct fp8_tensor *out, int64_t out_cols,
                  bool f32_ok)
{
    if (!w || !w->data || w->n_dims != 2) {
        fail(be, -EINVAL, "%s: w must be 2-d (out, in)", op);
        return false;
    }
    if (w->dtype != FP8_DTYPE_E4M3 || !w->scale) {
        fail(be, -ENOTSUP, "%s: %s weights (%lld x %lld) are not supported on the cuda "
             "backend (e4m3 with row scales only; --weights bf16 is ref-only for now)", op,
             fp8_dtype_name(w->dtype), (long long)w->ne[0], (long long)w->ne[1]);
        return false;
    }
    if (!check_act(be, op, "x", x, -1, w->ne[1]))
        return false;
    const int64_t n = fp8_tensor_rows(x);
    if (!out || !out->data ||
        (out->dtype != FP8_DTYPE_BF16 && !(f32_ok && out->dtype == FP8_DTYPE_F32)) ||
        fp8_tensor_rows(out) != n || out->ne[out->n_dims - 1] != out_cols) {
        fail(be, -EINVAL, "%s: out must be %s (%lld, %lld)", op, f32_ok ? "bf16 or f32" : "bf16",
             (long long)n, (long long)out_cols);
        return false;
    }
    if (n > FP8_CUDA_GEMV_MAX_ROWS && w->ne[1] % 16) {
        fail(be, -ENOTSUP, "%s (n=%lld in=%lld out=%lld): in must be a multiple of 16", op,
             (long long)n, (long long)w->ne[1], (long long)w->ne[0]);
        return false;
    }
    return true;
}

void cuda_linear(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                 struct fp8_tensor *out)
{
    cuda_ctx *c = ctx_of(be);
    if (!active(be, "linear") || !check_linear(be, "linear", x, w, out, w ? w->ne[0] : 0, true))
        return;
    const int64_t n = fp8_tensor_rows(x);
    const int32_t in = (int32_t)w->ne[1], n_out = (int32_t)w->ne[0];
    if (n > FP8_CUDA_GEMV_MAX_ROWS) {
        linear_gemm(be, x, w, out, (int32_t)n);
        return;
    }
    struct fp8_err e;
    ok(be, fp8_cuda_gemv_e4m3(out->data, out->dtype == FP8_DTYPE_F32, (const uint16_t *)x->data,
                              (const uint8_t *)w->data, w->scale, (int32_t)n, in, n_out, NULL,
                              c->stream, &e),
       &e);
}

/* One fused GEMV (decode rows); fu says which fusions. */
void gemv_fused(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                struct fp8_tensor *y, const struct fp8_cuda_gemv_fuse *fu)
{
    struct fp8_err e;
    ok(be, fp8_cuda_gemv_e4m3_fused(y->data, 0, (const uint16_t *)x->data,
                                    (const uint8_t *)w->data, w->scale,
                                    (int32_t)fp8_tensor_rows(x), (int32_t)w->ne[1],
                                    (int32_t)w->ne[0], fu, NULL, ctx_of(be)->stream, &e),
       &e);
}

/* Whether the norm runs inside the GEMV: up to 4 rows whose staged copy fits the block's
 * shared memory (fp8_cuda_gemv_e4m3_fused). Every block stages all rows after waiting
 * for the previous kernel, so with more rows a separate norm kernel is cheaper (H100,
 * Qwen3-8B batch 8: 1904 tok/s staging 8 rows vs 1967 with the norm in the loop). */
bool norm_in_gemv(int64_t rows, int64_t in)
{
    return rows <= 4 && fp8_cuda_gemv_norm_stage_bytes((int32_t)rows, (int32_t)in) <=
                            FP8_CUDA_GEMV_NORM_STAGE_MAX;
}

/* Rows norm_in_gemv allows: one GEMV with the norm inside; more rows the composition. */
void cuda_rms_norm_linear(struct fp8_backend *be, const struct fp8_tensor *x,
                          const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                          const struct fp8_tensor *w, struct fp8_tensor *xn,
                          struct fp8_tensor *out)
{
    const char *op = "rms_norm_linear";
    if (!active(be, op) || !check_linear(be, op, x, w, out, w ? w->ne[0] : 0, false) ||
        !check_f32_vec(be, op, "norm_w", norm_w, w->ne[1]))
        return;
    if (!norm_in_gemv(fp8_tensor_rows(x), w->ne[1])) {
        cuda_rms_norm(be, x, norm_w, eps, kind, xn);
        cuda_linear(be, xn, w, out);
        return;
    }
    const struct fp8_cuda_gemv_fuse fu = {(const float *)norm_w->data, eps,
                                          kind == FP8_NORM_RMS_PLUS_ONE, 0, 0, 0, NULL, NULL,
                                          NULL, NULL};
    gemv_fused(be, x, w, out, &fu);
}

void cuda_glu(struct fp8_backend *be, const struct fp8_tensor *gate_up, enum fp8_glu_act act,
              struct fp8_tensor *out);

/* Up to 32 rows the glu is the GEMV's epilogue (gate and up tiles side by side), with the
 * norm inside it where norm_in_gemv allows and a norm kernel before it otherwise; more rows
 * the composition. */
void cuda_rms_norm_linear_glu(struct fp8_backend *be, const struct fp8_tensor *x,
                              const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                              const struct fp8_tensor *w_gate_up, enum fp8_glu_act act,
                              struct fp8_tensor *xn, struct fp8_tensor *gate_up,
                              struct fp8_tensor *out)
{
    const char *op = "rms_norm_linear_glu";
    const int64_t two = w_gate_up ? w_gate_up->ne[0] : 0, n = fp8_tensor_rows(x);
    if (!active(be, op) || !check_linear(be, op, x, w_gate_up, out, two / 2, false) ||
        !check_f32_vec(be, op, "norm_w", norm_w, w_gate_up->ne[1]))
        return;
    if (!check_glu(be, op, two, act))
        return;
    if (n > 32) {
        cuda_rms_norm(be, x, norm_w, eps, kind, xn);
        cuda_linear(be, xn, w_gate_up, gate_up);
        cuda_glu(be, gate_up, act, out);
        return;
    }
    struct fp8_cuda_gemv_fuse fu = {
        (const float *)norm_w->data, eps, kind == FP8_NORM_RMS_PLUS_ONE, 1, cuda_glu_act(act),
        0, NULL, NULL, NULL, NULL};
    if (!norm_in_gemv(n, w_gate_up->ne[1])) {
        cuda_rms_norm(be, x, norm_w, eps, kind, xn);
        if (ctx_of(be)->err_code)
            return;
        fu.norm_w = NULL;
        gemv_fused(be, xn, w_gate_up, out, &fu);
        return;
    }
    gemv_fused(be, x, w_gate_up, out, &fu);
}

/* residual = bf16(residual + x), as rmsnorm_kernel's residual update. */
__global__ void add_bf16_kernel(uint16_t *residual, const uint16_t *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        residual[i] = fp8_f32_to_bf16_bits(fp8_bf16_bits_to_f32(x[i]) +
                                           fp8_bf16_bits_to_f32(residual[i]));
}

void cuda_linear_add(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                     struct fp8_tensor *y, struct fp8_tensor *residual)
{
    cuda_ctx *c = ctx_of(be);
    const char *op = "linear_add";
    if (!active(be, op) || !check_linear(be, op, x, w, residual, w ? w->ne[0] : 0, false))
        return;
    const int64_t n = fp8_tensor_rows(x);
    if (n > FP8_CUDA_GEMV_MAX_ROWS) {
        if (!check_act(be, op, "y", y, n, w->ne[0]))
            return;
        cuda_linear(be, x, w, y);
        if (c->err_code)
            return;
        const size_t ne = (size_t)n * (size_t)w->ne[0];
        add_bf16_kernel<<<(unsigned)(ne / 256 + 1 < 4096 ? ne / 256 + 1 : 4096), 256, 0,
                          c->stream>>>((uint16_t *)residual->data, (const uint16_t *)y->data,
                                       ne);
        launched(be, op);
        return;
    }
    const struct fp8_cuda_gemv_fuse fu = {NULL, 0.0f, 0, 0, 0, 1, NULL, NULL, NULL, NULL};
    gemv_fused(be, x, w, residual, &fu);
}

/* Where norm_in_gemv allows (up to 4 rows) the residual GEMV's epilogue prepares the next
 * norm (xn = bf16(residual * w'), and in y the sums of squares per 16 channels) and the
 * next GEMV applies it, so nothing normalizes in between: no per-block staging prologue
 * (H100, Qwen3-8B, one graph of a batch-1 step: 3.585 vs 3.606 ms; at 8 rows it measured
 * slower than a norm kernel, 1962 vs 2041 tok/s). More rows: the composition. */
void cuda_linear_add_rms_norm_linear(struct fp8_backend *be, const struct fp8_tensor *x,
                                     const struct fp8_tensor *w_out, struct fp8_tensor *y,
                                     struct fp8_tensor *residual, const struct fp8_tensor *norm_w,
                                     float eps, enum fp8_norm kind, const struct fp8_tensor *w_in,
                                     enum fp8_glu_act act, struct fp8_tensor *xn,
                                     struct fp8_tensor *gate_up, struct fp8_tensor *out)
{
    const char *op = "linear_add_rms_norm_linear";
    if (!active(be, op) ||
        !check_linear(be, op, x, w_out, residual, w_out ? w_out->ne[0] : 0, false))
        return;
    const int64_t n = fp8_tensor_rows(x), d = w_out->ne[0];
    const int64_t n_in = w_in ? w_in->ne[0] : 0;
    if (!check_linear(be, op, residual, w_in, out, gate_up ? n_in / 2 : n_in, false) ||
        !check_f32_vec(be, op, "norm_w", norm_w, d) || !check_act(be, op, "y", y, n, d) ||
        !check_act(be, op, "xn", xn, n, d))
        return;
    if (gate_up && !check_glu(be, op, n_in, act))
        return;
    /* (an in-dim the GEMV refuses takes the composition, which refuses it by name) */
    if (!norm_in_gemv(n, d) || d % 16) {
        cuda_linear_add(be, x, w_out, y, residual);
        if (ctx_of(be)->err_code)
            return;
        if (gate_up)
            cuda_rms_norm_linear_glu(be, residual, norm_w, eps, kind, w_in, act, xn, gate_up,
                                     out);
        else
            cuda_rms_norm_linear(be, residual, norm_w, eps, kind, w_in, xn, out);
        return;
    }
    const struct fp8_cuda_gemv_fuse prep = {NULL, 0.0f, kind == FP8_NORM_RMS_PLUS_ONE, 0, 0, 1,
                                            (const float *)norm_w->data, (uint16_t *)xn->data,
                                            (float *)y->data, NULL};
    gemv_fused(be, x, w_out, residual, &prep);
    if (ctx_of(be)->err_code)
        return;
    const struct fp8_cuda_gemv_fuse use = {NULL, eps, 0, gate_up != NULL, cuda_glu_act(act), 0,
                                           NULL, NULL, NULL, (const float *)y->data};
    gemv_fused(be, xn, w_in, out, &use);
}

bool check_cache(struct fp8_backend *be, const char *op, const struct fp8_kv_cache *kc,
                 int32_t layer)
{
    cuda_ctx *c = ctx_of(be);
    if (!kc || !kc->k || layer < 0 || layer >= kc->desc.n_layers) {
        fail(be, -EINVAL, "%s: no cache or layer %d outside it", op, layer);
        return false;
    }
    if (c->block_size != kc->desc.block_size) {
        fail(be, -EINVAL, "%s: step block_size %d differs from the cache's %d", op,
             c->block_size, kc->desc.block_size);
        return false;
    }
    return true;
}

rows_kv layer_view(const struct fp8_kv_cache *kc, int32_t layer)
{
    const struct fp8_kv_cache_desc *d = &kc->desc;
    const size_t heads = (size_t)layer * d->n_blocks * d->block_size * d->n_kv_heads;
    rows_kv v;
    v.k = (uint8_t *)kc->k + heads * d->head_dim;
    v.v = (uint8_t *)kc->v + heads * d->head_dim;
    v.ks = kc->k_scale + heads;
    v.vs = kc->v_scale + heads;
    v.n_slots = d->n_blocks * d->block_size;
    v.kvh = d->n_kv_heads;
    v.hd = d->head_dim;
    v.block_size = d->block_size;
    return v;
}

struct fp8_cuda_kv_cache cuda_layer(const struct fp8_kv_cache *kc, int32_t layer)
{
    const rows_kv v = layer_view(kc, layer);
    struct fp8_cuda_kv_cache l;
    l.k = v.k;
    l.v = v.v;
    l.k_scale = v.ks;
    l.v_scale = v.vs;
    l.n_blocks = kc->desc.n_blocks;
    l.block_size = kc->desc.block_size;
    l.n_kv_heads = kc->desc.n_kv_heads;
    l.head_dim = kc->desc.head_dim;
    return l;
}

void cuda_qk_norm_rope_kv_write(struct fp8_backend *be, const struct fp8_tensor *qkv,
                                const struct fp8_tensor *q_norm, const struct fp8_tensor *k_norm,
                                float eps, enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                                float attn_factor, struct fp8_kv_cache *kc, int32_t layer,
                                struct fp8_tensor *q_out)
{
    cuda_ctx *c = ctx_of(be);
    const char *op = "qk_norm_rope_kv_write";
    if (!active(be, op) || !check_cache(be, op, kc, layer) || !check_act(be, op, "qkv", qkv, -1, -1))
        return;
    const int64_t hd = kc->desc.head_dim, kvh = kc->desc.n_kv_heads, n = fp8_tensor_rows(qkv);
    const int64_t h = qkv->ne[qkv->n_dims - 1] / hd - 2 * kvh;
    if (h <= 0 || (h + 2 * kvh) * hd != qkv->ne[qkv->n_dims - 1] || n > c->n_tokens) {
        fail(be, -EINVAL, "%s: qkv must be (n <= %d, (heads + 2 x %lld) x %lld)", op,
             c->n_tokens, (long long)kvh, (long long)hd);
        return;
    }
    if (!check_f32_vec(be, op, "q_norm", q_norm, hd) ||
        !check_f32_vec(be, op, "k_norm", k_norm, hd) ||
        !check_f32_vec(be, op, "inv_freq", inv_freq, hd / 2) ||
        !check_act(be, op, "q_out", q_out, n * h, hd))
        return;
    const bool plus_one = kind == FP8_NORM_RMS_PLUS_ONE;
    if (hd == 128) {
        struct fp8_err e;
        const struct fp8_cuda_kv_cache l = cuda_layer(kc, layer);
        ok(be, fp8_cuda_qk_norm_rope_kv_write((uint16_t *)q_out->data,
                                              (const uint16_t *)qkv->data,
                                              (const float *)q_norm->data,
                                              (const float *)k_norm->data, eps, plus_one,
                                              (const float *)inv_freq->data, attn_factor,
                                              c->d_positions, c->d_slots, &l, (int32_t)n,
                                              (int32_t)h, c->stream, &e),
           &e);
        return;
    }
    const int64_t warps = n * (h + 2 * kvh);
    qk_rows_kernel<<<(unsigned)((warps + 3) / 4), 128, 0, c->stream>>>(
        (uint16_t *)q_out->data, (const uint16_t *)qkv->data, (const float *)q_norm->data,
        (const float *)k_norm->data, (const float *)inv_freq->data, attn_factor, eps, plus_one,
        c->d_positions, c->d_slots, layer_view(kc, layer), (int32_t)n, (int32_t)h);
    launched(be, op);
}

/* Whether a step's attention runs as decode attention (fp8_cuda_attn_decode): one token
 * a sequence, head_dim 128 or 256, 1, 2, 4 or 8 query heads a kv head. */
bool decode_attention(const cuda_ctx *c, int64_t n, int64_t hd, int64_t g)
{
    return c->decode && n == c->n_seqs && (hd == 128 || hd == 256) &&
           (g == 1 || g == 2 || g == 4 || g == 8);
}

/* Decode attention's plan, for the block table's capacity so that a captured graph holds
 * for every length up to it, and its workspace. */
bool decode_plan(struct fp8_backend *be, const struct fp8_cuda_kv_cache *l, int64_t h,
                 int32_t window, struct fp8_cuda_attn_plan *plan)
{
    cuda_ctx *c = ctx_of(be);
    struct fp8_err e;
    return ok(be, fp8_cuda_attn_decode_plan(plan, c->n_seqs, (int32_t)h, l,
                                            c->max_blocks * c->block_size, window, &e),
              &e) &&
           grow(be, &c->ws, &c->ws_cap, 2 * plan->workspace_bytes, "attention");
}

void cuda_attention(struct fp8_backend *be, const struct fp8_tensor *q,
                    const struct fp8_kv_cache *kc, int32_t layer, float scale, int32_t window,
                    struct fp8_tensor *out)
{
    cuda_ctx *c = ctx_of(be);
    if (!active(be, "attention") || !check_cache(be, "attention", kc, layer))
        return;
    const int64_t hd = kc->desc.head_dim, kvh = kc->desc.n_kv_heads;
    if (!check_act(be, "attention", "q", q, -1, hd))
        return;
    const int64_t h = q->n_dims == 3 ? q->ne[1] : 0, n = q->n_dims == 3 ? q->ne[0] : 0;
    if (h <= 0 || h % kvh || n > c->n_tokens || n > 65535 * 65535LL) {
        fail(be, -EINVAL, "attention: q must be (n <= %d, heads multiple of %lld, %lld)",
             c->n_tokens, (long long)kvh, (long long)hd);
        return;
    }
    if (!check_act(be, "attention", "out", out, n, h * hd))
        return;
    const int64_t g = h / kvh;
    if (window < 0) {
        fail(be, -EINVAL, "attention: negative window %d", (int)window);
        return;
    }
    if (decode_attention(c, n, hd, g)) {
        struct fp8_err e;
        const struct fp8_cuda_kv_cache l = cuda_layer(kc, layer);
        struct fp8_cuda_attn_plan plan;
        if (!decode_plan(be, &l, h, window, &plan))
            return;
        ok(be, fp8_cuda_attn_decode((uint16_t *)out->data, (const uint16_t *)q->data, &l,
                                    c->d_block_table, c->d_seq_len, c->n_seqs, (int32_t)h,
                                    c->max_blocks, scale, &plan, c->ws, c->ws_cap, c->stream,
                                    &e),
           &e);
        return;
    }
    if (hd == 128) {
        struct fp8_err e;
        const struct fp8_cuda_kv_cache l = cuda_layer(kc, layer);
        if (!grow(be, &c->pws, &c->pws_cap,
                  fp8_cuda_attn_prefill_workspace((int32_t)n, c->n_seqs, (int32_t)h,
                                                  (int32_t)kvh),
                  "attention"))
            return;
        ok(be, fp8_cuda_attn_prefill((uint16_t *)out->data, (const uint16_t *)q->data, &l,
                                     c->d_positions, c->d_tok_seq, c->d_block_table,
                                     (int32_t)n, c->n_seqs, (int32_t)h, c->max_blocks, scale,
                                     window, c->pws, c->pws_cap, c->stream, &e),
           &e);
        return;
    }
    /* the tiny checkpoints' head sizes (16, 32, ...): the general per-row kernel */
    attn_rows_kernel<<<dim3((unsigned)n, (unsigned)h), kAttnWarps * 32, 0, c->stream>>>(
        (uint16_t *)out->data, (const uint16_t *)q->data, layer_view(kc, layer), c->d_positions,
        c->d_tok_seq, c->d_block_table, c->max_blocks, kc->desc.n_blocks, (int32_t)h, scale,
        window);
    launched(be, "attention");
}

/* Decode steps with head_dim 128: one kernel, q/k-norm + RoPE + KV write in front of the
 * attention (fp8_cuda_attn_decode_qk; q_out is not written); other steps the two ops. */
void cuda_qk_norm_rope_kv_attention(struct fp8_backend *be, const struct fp8_tensor *qkv,
                                    const struct fp8_tensor *q_norm,
                                    const struct fp8_tensor *k_norm, float eps,
                                    enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                                    float attn_factor, struct fp8_kv_cache *kc, int32_t layer,
                                    struct fp8_tensor *q_out, float scale, int32_t window,
                                    struct fp8_tensor *out)
{
    cuda_ctx *c = ctx_of(be);
    const char *op = "qk_norm_rope_kv_attention";
    if (!active(be, op) || !check_cache(be, op, kc, layer) ||
        !check_act(be, op, "qkv", qkv, -1, -1))
        return;
    const int64_t hd = kc->desc.head_dim, kvh = kc->desc.n_kv_heads, n = fp8_tensor_rows(qkv);
    const int64_t cols = qkv->ne[qkv->n_dims - 1], h = cols / hd - 2 * kvh;
    if (hd != 128 || h <= 0 || h % kvh || (h + 2 * kvh) * hd != cols ||
        !decode_attention(c, n, hd, h / kvh)) {
        cuda_qk_norm_rope_kv_write(be, qkv, q_norm, k_norm, eps, kind, inv_freq, attn_factor, kc,
                                   layer, q_out);
        cuda_attention(be, q_out, kc, layer, scale, window, out);
        return;
    }
    if (!check_f32_vec(be, op, "q_norm", q_norm, hd) ||
        !check_f32_vec(be, op, "k_norm", k_norm, hd) ||
        !check_f32_vec(be, op, "inv_freq", inv_freq, hd / 2) ||
        !check_act(be, op, "out", out, n, h * hd))
        return;
    if (window < 0) {
        fail(be, -EINVAL, "%s: negative window %d", op, (int)window);
        return;
    }
    struct fp8_err e;
    const struct fp8_cuda_kv_cache l = cuda_layer(kc, layer);
    struct fp8_cuda_attn_plan plan;
    if (!decode_plan(be, &l, h, window, &plan))
        return;
    const struct fp8_cuda_qk_front front = {
        (const uint16_t *)qkv->data, (const float *)q_norm->data, (const float *)k_norm->data,
        eps, kind == FP8_NORM_RMS_PLUS_ONE, (const float *)inv_freq->data, attn_factor,
        c->d_positions, c->d_slots};
    ok(be, fp8_cuda_attn_decode_qk((uint16_t *)out->data, &front, &l, c->d_block_table,
                                   c->d_seq_len, c->n_seqs, (int32_t)h, c->max_blocks, scale,
                                   &plan, c->ws, c->ws_cap, c->stream, &e),
       &e);
}

void cuda_glu(struct fp8_backend *be, const struct fp8_tensor *gate_up, enum fp8_glu_act act,
              struct fp8_tensor *out)
{
    if (!active(be, "glu") || !check_act(be, "glu", "gate_up", gate_up, -1, -1))
        return;
    const int64_t two = gate_up->ne[gate_up->n_dims - 1], n = fp8_tensor_rows(gate_up);
    if (!check_glu(be, "glu", two, act) || !check_act(be, "glu", "out", out, n, two / 2))
        return;
    struct fp8_err e;
    ok(be, fp8_cuda_glu((uint16_t *)out->data, (const uint16_t *)gate_up->data, (int32_t)n,
                        (int32_t)(two / 2), cuda_glu_act(act), ctx_of(be)->stream, &e),
       &e);
}

void cuda_gather_rows(struct fp8_backend *be, const struct fp8_tensor *x, struct fp8_tensor *out)
{
    cuda_ctx *c = ctx_of(be);
    if (!active(be, "gather_rows") || !check_act(be, "gather_rows", "x", x, -1, -1) ||
        !check_act(be, "gather_rows", "out", out, c->n_logit_rows, x->ne[x->n_dims - 1]))
        return;
    if (fp8_tensor_rows(x) > c->n_tokens || fp8_tensor_rows(x) < c->n_tokens) {
        fail(be, -EINVAL, "gather_rows: x has %lld rows, the step %d tokens",
             (long long)fp8_tensor_rows(x), c->n_tokens);
        return;
    }
    if (c->n_logit_rows == 0)
        return;
    struct fp8_err e;
    ok(be, fp8_cuda_check(fp8_cuda_launch_pdl(gather_rows_kernel, dim3((unsigned)c->n_logit_rows),
                                              dim3(256), c->stream, (uint16_t *)out->data,
                                              (const uint16_t *)x->data,
                                              (const int32_t *)c->d_logit_rows,
                                              (int32_t)x->ne[x->n_dims - 1]),
                          &e, "gather_rows"),
       &e);
}

void cuda_softcap(struct fp8_backend *be, struct fp8_tensor *x, float cap)
{
    cuda_ctx *c = ctx_of(be);
    if (!active(be, "softcap"))
        return;
    if (!x || !x->data || x->dtype != FP8_DTYPE_F32 || !(cap > 0.0f)) {
        fail(be, -EINVAL, "softcap: x must be f32 logits and cap positive (got %g)", (double)cap);
        return;
    }
    softcap_kernel<<<1024, 256, 0, c->stream>>>((float *)x->data, (size_t)fp8_tensor_numel(x),
                                                cap);
    launched(be, "softcap");
}

/* A decode step's draw inside its graph, where it fits kGraphDrawBytes and (replaying)
 * the graph was captured with the same draw: the rows and penalty ids written into the
 * mapped buffer, the kernel captured (reading them at each launch). False: stage it. */
bool sample_in_graph(struct fp8_backend *be, const float *logits, int32_t n, int32_t v,
                     const struct fp8_sample_row *rows, size_t rb, const int32_t *pen_ids,
                     size_t pb, int32_t *ids)
{
    cuda_ctx *c = ctx_of(be);
    const size_t ids_b = draw_rows_at(n);
    if ((c->mode != MODE_CAPTURE && c->mode != MODE_REPLAY) || !c->h_draw ||
        ids_b + rb + pb > kGraphDrawBytes)
        return false;
    if (c->mode == MODE_REPLAY) {
        const graph_draw &d = c->graphs[c->replay].draw;
        if (!d.on || d.logits != logits || d.rows != n || d.vocab != v)
            return false;
    }
    char *h = (char *)c->h_draw, *d = (char *)c->d_draw;
    memcpy(h + ids_b, rows, rb);
    if (pb)
        memcpy(h + ids_b + rb, pen_ids, pb);
    if (c->mode == MODE_CAPTURE) {
        struct fp8_err e;
        if (!ok(be, fp8_cuda_sample((int32_t *)d, (float *)logits,
                                    (const struct fp8_sample_row *)(d + ids_b),
                                    (const int32_t *)(d + ids_b + rb), n, v, c->stream, &e),
                &e))
            return true;
        c->cap_draw = {true, logits, n, v};
    }
    c->samp_ids = ids;
    c->samp_rows = n;
    c->samp_mirror = true;
    c->samp_mirror_ids = (const int32_t *)h;
    c->step_drawn = true;
    return true;
}

/* Stages rows and their penalty ids, then draws now, or after the graph when the step is
 * captured or replayed (unless the graph draws itself: sample_in_graph). */
void cuda_sample(struct fp8_backend *be, struct fp8_tensor *logits,
                 const struct fp8_sample_row *rows, const int32_t *pen_ids,
                 struct fp8_tensor *ids)
{
    cuda_ctx *c = ctx_of(be);
    if (c->err_code)
        return;
    if (!logits || !logits->data || logits->dtype != FP8_DTYPE_F32 || logits->n_dims != 2 ||
        logits->ne[1] > INT32_MAX || !ids || !ids->data || ids->dtype != FP8_DTYPE_I32 ||
        fp8_tensor_numel(ids) != logits->ne[0] || !rows) {
        fail(be, -EINVAL, "sample: logits must be f32 (rows, vocab), ids i32 (rows), with one "
             "parameter row each");
        return;
    }
    const int64_t n = logits->ne[0], v = logits->ne[1];
    struct fp8_err e;
    int64_t n_pen = 0;
    if (!ok(be, fp8_sample_rows_check(rows, n, pen_ids, v, &n_pen, &e), &e))
        return;
    const size_t rb = (size_t)n * sizeof(*rows), pb = (size_t)n_pen * sizeof(int32_t);
    if (sample_in_graph(be, (const float *)logits->data, (int32_t)n, (int32_t)v, rows, rb,
                        pen_ids, pb, (int32_t *)ids->data))
        return;
    if (rb + pb > c->samp_host_cap) {
        void *p = realloc(c->samp_host, rb + pb);
        if (!p) {
            fail(be, -ENOMEM, "sample: out of memory staging %zu bytes", rb + pb);
            return;
        }
        c->samp_host = p;
        c->samp_host_cap = rb + pb;
    }
    memcpy(c->samp_host, rows, rb);
    if (pb)
        memcpy((char *)c->samp_host + rb, pen_ids, pb);
    c->samp_ids = (int32_t *)ids->data;
    c->samp_logits = (float *)logits->data;
    c->samp_rows = (int32_t)n;
    c->samp_vocab = (int32_t)v;
    c->samp_pen_off = rb;
    c->samp_used = rb + pb;
    c->samp_mirror = false;
    if (c->mode == MODE_EAGER)
        sample_launch(be);
    else
        c->samp_pending = true;
}

void cuda_argmax_value(struct fp8_backend *be, const struct fp8_tensor *logits,
                       struct fp8_tensor *ids, struct fp8_tensor *values)
{
    cuda_ctx *c = ctx_of(be);
    if (c->err_code)
        return;
    if (!logits || !logits->data || logits->dtype != FP8_DTYPE_F32 || logits->n_dims != 2 ||
        !ids || !ids->data || ids->dtype != FP8_DTYPE_I32 ||
        fp8_tensor_numel(ids) != logits->ne[0] || logits->ne[1] > INT32_MAX ||
        !values || !values->data || values->dtype != FP8_DTYPE_F32 ||
        fp8_tensor_numel(values) != logits->ne[0]) {
        fail(be, -EINVAL, "argmax_value: logits must be f32 (rows, vocab), ids i32 (rows) and values "
             "f32 (rows)");
        return;
    }
    argmax_kernel<<<(unsigned)logits->ne[0], 1024, 0, c->stream>>>(
        (int32_t *)ids->data, (float *)values->data,
        (const float *)logits->data, (int32_t)logits->ne[1]);
    launched(be, "argmax_value");
}

/* bf16 partials summed by NCCL (its bf16 sum accumulates each pair in fp32 and rounds the
 * result once): docs/tensor-parallel.md compares this with fp32 partials. */
void cuda_all_reduce_sum(struct fp8_backend *be, struct fp8_tensor *x)
{
    cuda_ctx *c = ctx_of(be);
    if (!in_group(be) || !active(be, "all_reduce_sum"))
        return;
    if (!check_act(be, "all_reduce_sum", "x", x, -1, -1))
        return;
    if (!c->comm) {
        fail(be, -ECANCELED, "all_reduce_sum: rank %d: the NCCL communicator was aborted",
             be->tp_rank);
        return;
    }
    const bool timed = c->time_ar && c->mode == MODE_EAGER && c->n_timed < kMaxTimed;
    if (timed && c->n_timed == c->n_ar_ev) {
        struct fp8_err e;
        if (!ok(be, fp8_cuda_check(cudaEventCreate(&c->ar_ev[0][c->n_ar_ev]), &e,
                                   "all_reduce_sum timing event"), &e))
            return;
        if (!ok(be, fp8_cuda_check(cudaEventCreate(&c->ar_ev[1][c->n_ar_ev]), &e,
                                   "all_reduce_sum timing event"), &e)) {
            cudaEventDestroy(c->ar_ev[0][c->n_ar_ev]);
            return;
        }
        c->n_ar_ev++;
    }
    if (timed)
        cudaEventRecord(c->ar_ev[0][c->n_timed], c->stream);
    const ncclResult_t r = ncclAllReduce(x->data, x->data, (size_t)fp8_tensor_numel(x),
                                         ncclBfloat16, ncclSum, c->comm, c->stream);
    if (r != ncclSuccess && r != ncclInProgress) {
        fail(be, -EIO, "all_reduce_sum (%lld values): rank %d of %d: NCCL: %s (%s)",
             (long long)fp8_tensor_numel(x), be->tp_rank, be->group->n_ranks,
             ncclGetErrorString(r), ncclGetLastError(c->comm));
        fp8_backend_group_abort(be->group);
        return;
    }
    if (timed)
        cudaEventRecord(c->ar_ev[1][c->n_timed++], c->stream);
}

void cuda_destroy(struct fp8_backend *be)
{
    cuda_ctx *c = ctx_of(be);
    struct fp8_err e;
    use_device(c, &e);
    if (c->mode == MODE_CAPTURE) {
        cudaGraph_t g = NULL;
        cudaStreamEndCapture(c->stream, &g);
        if (g)
            cudaGraphDestroy(g);
    }
    if (c->comm && fp8_backend_group_aborted(be->group))
        abort_rank(be);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    if (c->comm)
        ncclCommDestroy(c->comm);
    for (int i = 0; i < c->n_ar_ev; i++) {
        cudaEventDestroy(c->ar_ev[0][i]);
        cudaEventDestroy(c->ar_ev[1][i]);
    }
    graphs_clear(c);
    for (int i = 0; i < c->n_retired; i++)
        cudaFree(c->retired[i]);
    cudaFree(c->ws);
    cudaFree(c->pws);
    cudaFree(c->gemm_ws);
    fp8_cuda_gemm_free(c->gemm);
    cudaFree(c->d_step);
    cudaFreeHost(c->h_step);
    cudaFree(c->d_samp);
    cudaFreeHost(c->h_samp);
    cudaFreeHost(c->h_draw);
    free(c->samp_host);
    if (c->samp_done)
        cudaEventDestroy(c->samp_done);
    free(c->weights);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
    free(be);
}

const struct fp8_backend_ops cuda_ops = {
    .tensor_alloc = cuda_tensor_alloc,
    .tensor_free = cuda_tensor_free,
    .tensor_set = cuda_tensor_set,
    .tensor_get = cuda_tensor_get,
    .kv_cache_alloc = cuda_kv_cache_alloc,
    .kv_cache_free = cuda_kv_cache_free,
    .step_begin = cuda_step_begin,
    .sync = cuda_sync,
    .destroy = cuda_destroy,
    .embed = cuda_embed,
    .rms_norm = cuda_rms_norm,
    .add_rms_norm = cuda_add_rms_norm,
    .linear = cuda_linear,
    .rms_norm_linear = cuda_rms_norm_linear,
    .rms_norm_linear_glu = cuda_rms_norm_linear_glu,
    .linear_add = cuda_linear_add,
    .linear_add_rms_norm_linear = cuda_linear_add_rms_norm_linear,
    .rope = NULL,
    .kv_write = NULL,
    .qk_norm_rope_kv_write = cuda_qk_norm_rope_kv_write,
    .attention = cuda_attention,
    .qk_norm_rope_kv_attention = cuda_qk_norm_rope_kv_attention,
    .glu = cuda_glu,
    .moe_route = NULL,
    .moe_experts = NULL,
    .gather_rows = cuda_gather_rows,
    .softcap = cuda_softcap,
    .tensor_fill_random = cuda_tensor_fill_random,
    .sample = cuda_sample,
    .all_reduce_sum = cuda_all_reduce_sum,
    .argmax_value = cuda_argmax_value,
};

/* A backend on device (made current on this thread). */
int create_on(int device, struct fp8_backend **out, struct fp8_err *err)
{
    struct fp8_backend *be = (struct fp8_backend *)calloc(1, sizeof(*be));
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof(*c));
    if (!be || !c) {
        free(be);
        free(c);
        return fp8_err_set(err, -ENOMEM, "backend cuda: out of memory");
    }
    c->device = device;
    void *s = NULL;
    int rc = use_device(c, err);
    if (rc == 0)
        rc = fp8_cuda_stream_create(&s, err);
    if (rc < 0) {
        free(be);
        free(c);
        return fp8_err_prefix(err, rc, "backend cuda (device %d)", device);
    }
    c->stream = (cudaStream_t)s;
    rc = fp8_cuda_gemm_create(&c->gemm, err);
    if (rc < 0)
        fp8_err_prefix(err, rc, "backend cuda");
    else
        rc = fp8_cuda_check(cudaEventCreateWithFlags(&c->samp_done, cudaEventDisableTiming),
                            err, "backend cuda: sampling event");
    if (rc == 0)
        rc = fp8_cuda_check(cudaHostAlloc(&c->h_draw, kGraphDrawBytes, cudaHostAllocMapped),
                            err, "backend cuda: %zu bytes of mapped pinned memory for draws",
                            kGraphDrawBytes);
    if (rc == 0)
        rc = fp8_cuda_check(cudaHostGetDevicePointer(&c->d_draw, c->h_draw, 0), err,
                            "backend cuda: device address of the draws' pinned memory");
    if (rc < 0) {
        if (c->h_draw)
            cudaFreeHost(c->h_draw);
        if (c->samp_done)
            cudaEventDestroy(c->samp_done);
        fp8_cuda_gemm_free(c->gemm);
        cudaStreamDestroy(c->stream);
        free(be);
        free(c);
        return rc;
    }
    c->bytes[MEM_WORKSPACE] += fp8_cuda_gemm_bytes(c->gemm);
    be->ops = &cuda_ops;
    be->name = "cuda";
    be->act_dtype = FP8_DTYPE_BF16;
    be->kv_f32_ok = false;
    be->decode_graphs = true;
    be->ctx = c;
    *out = be;
    return 0;
}

int visible_devices(int32_t *n, struct fp8_err *err)
{
    int rc = fp8_cuda_device_count(n, err);
    if (rc < 0)
        return fp8_err_prefix(err, rc, "backend cuda");
    if (*n == 0)
        return fp8_err_set(err, -ENODEV, "backend cuda: no CUDA device found (no driver or no "
                           "GPU; use --backend ref for the CPU reference)");
    return 0;
}

} // namespace

extern "C" int fp8_backend_cuda_create(struct fp8_backend **out, struct fp8_err *err)
{
    if (!out)
        return fp8_err_set(err, -EINVAL, "backend cuda: no output given");
    int32_t n = 0;
    int dev = 0;
    int rc = visible_devices(&n, err);
    if (rc == 0)
        rc = fp8_cuda_check(cudaGetDevice(&dev), err, "backend cuda: cudaGetDevice");
    return rc < 0 ? rc : create_on(dev, out, err);
}

extern "C" int fp8_backend_cuda_group_create(struct fp8_backend_group *g, struct fp8_err *err)
{
    int32_t n = 0;
    int rc = visible_devices(&n, err);
    if (rc < 0)
        return rc;
    if (g->n_ranks > n)
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d exceeds the %d visible CUDA "
                           "device%s", g->n_ranks, n, n == 1 ? "" : "s");
    int devs[FP8_BACKEND_MAX_RANKS], caller = 0;
    ncclComm_t comms[FP8_BACKEND_MAX_RANKS] = {};
    if ((rc = fp8_cuda_check(cudaGetDevice(&caller), err, "tensor parallel: cudaGetDevice")) < 0)
        return rc;
    for (int32_t r = 0; r < g->n_ranks && rc == 0; r++) {
        devs[r] = r;
        rc = create_on(r, &g->rank[r], err);
    }
    if (rc == 0) {
        /* NVLink multicast (NVLS) stays off on every machine fp8d runs on. Peers connect
         * at init rather than at their first collective, which may be inside a decode
         * graph's capture (unless the environment chose otherwise). */
        setenv("NCCL_NVLS_ENABLE", "0", 1);
        setenv("NCCL_RUNTIME_CONNECT", "0", 0);
        const ncclResult_t res = ncclCommInitAll(comms, g->n_ranks, devs);
        if (res != ncclSuccess)
            rc = fp8_err_set(err, -EIO, "tensor parallel: ncclCommInitAll over %d devices: %s",
                             g->n_ranks, ncclGetErrorString(res));
    }
    for (int32_t r = 0; r < g->n_ranks && rc == 0; r++)
        ctx_of(g->rank[r])->comm = comms[r];
    cudaSetDevice(caller); /* creating the ranks made each device current in turn */
    return rc;
}

extern "C" void fp8_backend_cuda_time_collectives(struct fp8_backend *be, bool on)
{
    if (!be || !be->name || strcmp(be->name, "cuda"))
        return;
    cuda_ctx *c = ctx_of(be);
    c->time_ar = on;
    c->ar_ms = 0.0;
    c->ar_calls = 0;
}

extern "C" void fp8_backend_cuda_collective_time(const struct fp8_backend *be, double *ms,
                                                 int64_t *calls)
{
    *ms = 0.0;
    *calls = 0;
    if (!be || !be->name || strcmp(be->name, "cuda"))
        return;
    const cuda_ctx *c = (const cuda_ctx *)be->ctx;
    *ms = c->ar_ms;
    *calls = c->ar_calls;
}

extern "C" int fp8_backend_cuda_mem(const struct fp8_backend *be, struct fp8_cuda_mem *out,
                                    struct fp8_err *err)
{
    if (!be || !be->name || strcmp(be->name, "cuda") || !out)
        return fp8_err_set(err, -EINVAL, "memory accounting: not a cuda backend");
    const cuda_ctx *c = (const cuda_ctx *)be->ctx;
    size_t f = 0, t = 0;
    int rc = fp8_cuda_check(cudaMemGetInfo(&f, &t), err, "cudaMemGetInfo");
    if (rc < 0)
        return rc;
    struct fp8_cuda_mem m;
    m.weights = c->bytes[MEM_WEIGHTS];
    m.kv = c->bytes[MEM_KV];
    m.activations = c->bytes[MEM_ACT];
    m.scratch = c->bytes[MEM_SCRATCH];
    m.workspace = c->bytes[MEM_WORKSPACE];
    m.graphs = c->graph_bytes;
    m.device_free = f;
    m.device_total = t;
    *out = m;
    return 0;
}
