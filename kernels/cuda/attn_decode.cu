/* Paged FP8 decode attention (one query token per sequence), GQA-aware and split along
 * the sequence (flash-decoding) when sequences x kv heads cannot fill the device.
 *
 * One block per (sequence, kv head, piece of the sequence): the group's G query heads
 * share each K/V read. A token's 128-byte K row is read by TPT lanes (16 or 8 bytes each,
 * whole 32-byte sectors); every group of TPT lanes walks its own tokens with an exact
 * online softmax in fp32 (base 2, the scale folded into q); groups, warps and then pieces
 * are merged with the usual max/sum rescaling.
 *
 * Sliding windows (Gemma3's local layers): the query sits at position len - 1, so only
 * keys at positions >= len - window are visible; the pieces tile [len - window, len)
 * instead of [0, len), so blocks before the window are never read and the plan splits
 * the window's span, not the whole sequence.
 *
 * On sm_90 the pieces of a (sequence, kv head), up to 8, run as one thread-block cluster
 * and merge through distributed shared memory before they exit, instead of through global
 * partials and a merge kernel: one dependent kernel less per layer, with the same
 * arithmetic in the same order (bit-identical output). */
#include <cooperative_groups.h>
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/qk_rope.cuh"

namespace {

constexpr int kHeadDim = 128; /* the CUDA-core variants; the tensor-core one also takes 256 */
constexpr int kThreads = 128;
constexpr int kMinSplitTokens = 64; /* a piece shorter than this costs more than it gains */

template <int N> struct bytes_vec;
template <> struct bytes_vec<16> {
    using type = uint4;
};
template <> struct bytes_vec<8> {
    using type = uint2;
};

__device__ __forceinline__ void e4m3x4_to_f32(uint32_t w, float *f)
{
    __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w & 0xffffu), __NV_E4M3);
    __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w >> 16), __NV_E4M3);
    float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    f[0] = a.x;
    f[1] = a.y;
    f[2] = b.x;
    f[3] = b.y;
}

template <int DPL>
__device__ __forceinline__ void unpack(const typename bytes_vec<DPL>::type &v, float (&f)[DPL])
{
    const uint32_t *w = reinterpret_cast<const uint32_t *>(&v);
#pragma unroll
    for (int i = 0; i < DPL / 4; i++)
        e4m3x4_to_f32(w[i], f + 4 * i);
}

struct attn_args {
    uint16_t *out;
    const uint16_t *q;
    const uint8_t *k, *v;
    const float *k_scale, *v_scale;
    const int32_t *block_table, *seq_len;
    float *part_o, *part_ml; /* (n_seqs, n_heads, n_splits, head_dim), (.., 2) */
    int n_heads, n_kv, n_blocks, block_size, max_blocks, n_splits, split_tokens;
    int window;          /* 0: every position */
    float qk_scale_log2; /* sm_scale * log2(e) */
    /* The fused front (QK): q/k-norm, RoPE and the KV write of the step's token from qkv
     * (n_seqs, (n_heads + 2 n_kv) * 128) instead of q */
    const uint16_t *qkv;
    const float *q_norm_w, *k_norm_w, *inv_freq;
    const int32_t *positions, *slots;
    uint8_t *k_out, *v_out;
    float *ks_out, *vs_out;
    float eps, attn_factor;
    int plus_one, n_slots_total;
};

/* The first visible position of a sequence of len tokens (its query at len - 1). */
__device__ __forceinline__ int visible_from(const attn_args &a, int len)
{
    return a.window > 0 && len > a.window ? len - a.window : 0;
}

/* The pieces that hold tokens of a sequence of len tokens: the first ones (a merge reads
 * only those). */
__device__ __forceinline__ int pieces_of(const attn_args &a, int len)
{
    const int span = len - visible_from(a, len);
    return span <= 0 ? 0 : min((span + a.split_tokens - 1) / a.split_tokens, a.n_splits);
}

/* Tokens [t0, t1) of piece split; the last piece takes any rest (lengths past the plan). */
__device__ __forceinline__ void piece_range(const attn_args &a, int len, int split, int &t0,
                                            int &t1)
{
    t0 = visible_from(a, len) + split * a.split_tokens;
    t1 = split == a.n_splits - 1 ? len : min(len, t0 + a.split_tokens);
}

/* Flash-decoding's merge of one output over the pieces holding tokens, in piece order
 * (the same bits wherever the pieces' results are kept): ml(p) = (max, weight sum) and
 * o(p) = normalized output of piece p; mx = pieces_max over them. */
template <class Ml>
__device__ __forceinline__ float pieces_max(int pieces, Ml ml)
{
    float mx = -INFINITY;
    for (int p = 0; p < pieces; p++)
        mx = fmaxf(mx, ml(p).x);
    return mx;
}

template <class Ml, class O>
__device__ __forceinline__ uint16_t pieces_merge(int pieces, float mx, Ml ml, O o)
{
    float lsum = 0.0f, acc = 0.0f;
    if (mx != -INFINITY) {
        for (int p = 0; p < pieces; p++) {
            const float2 v = ml(p);
            const float w = v.y * exp2f(v.x - mx);
            lsum += w;
            acc += w * o(p);
        }
    }
    return fp8_f32_to_bf16_bits(lsum > 0.0f ? acc / lsum : 0.0f);
}

/* The block's warps have left (m, l, acc) per head in shared memory: for each head g
 * their merge, handed over as out(g, d, normalized output at dim d) and, by thread 0,
 * ml(g, max, weight sum). */
template <int G, int HD, class Out, class Ml>
__device__ __forceinline__ void attn_block_merge(const float (&sm_m)[kThreads / 32][G],
                                                 const float (&sm_l)[kThreads / 32][G],
                                                 const float (&sm_acc)[kThreads / 32][G][HD],
                                                 Out out, Ml ml)
{
#pragma unroll
    for (int g = 0; g < G; g++) {
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < kThreads / 32; w++)
            mx = fmaxf(mx, sm_m[w][g]);
        float sc[kThreads / 32], lsum = 0.0f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; w++) {
            sc[w] = mx == -INFINITY ? 0.0f : exp2f(sm_m[w][g] - mx);
            lsum += sm_l[w][g] * sc[w];
        }
#pragma unroll
        for (int d = threadIdx.x; d < HD; d += kThreads) {
            float o = 0.0f;
#pragma unroll
            for (int w = 0; w < kThreads / 32; w++)
                o += sm_acc[w][g][d] * sc[w];
            out(g, d, lsum > 0.0f ? o / lsum : 0.0f);
        }
        if (threadIdx.x == 0)
            ml(g, mx, lsum);
    }
}

/* The block's merge written as the output (one piece) or this piece's partial result. */
template <int G, int HD>
__device__ __forceinline__ void attn_block_finish(const attn_args &a,
                                                  const float (&sm_m)[kThreads / 32][G],
                                                  const float (&sm_l)[kThreads / 32][G],
                                                  const float (&sm_acc)[kThreads / 32][G][HD],
                                                  int s, int kvh, int split)
{
    const size_t h0 = (size_t)s * a.n_heads + kvh * G; /* the block's first head */
    attn_block_merge<G, HD>(
        sm_m, sm_l, sm_acc,
        [&](int g, int d, float res) {
            if (a.n_splits == 1)
                a.out[(h0 + g) * HD + d] = fp8_f32_to_bf16_bits(res);
            else
                a.part_o[((h0 + g) * a.n_splits + split) * HD + d] = res;
        },
        [&](int g, float mx, float lsum) {
            if (a.n_splits > 1) {
                a.part_ml[2 * ((h0 + g) * a.n_splits + split)] = mx;
                a.part_ml[2 * ((h0 + g) * a.n_splits + split) + 1] = lsum;
            }
        });
}

/* The cluster's merge (CL): each block stores its piece's (max, sum, normalized output)
 * per head, the partials attn_block_finish writes, into the shared memory of the cluster's
 * first block (remote stores, fire and forget; once every block has arrived at the
 * barrier the kernel opens with, so that the first block's shared memory exists); after
 * the cluster barrier that block merges them (pieces_merge, as attn_merge_kernel). */
constexpr int kClusterMax = 8;      /* pieces: the portable cluster size */
constexpr int kClusterHeadDims = 512; /* G * HD the first block's buffer takes (16 KB) */

template <int G, int HD>
__device__ __forceinline__ void attn_cluster_finish(const attn_args &a,
                                                    const float (&sm_m)[kThreads / 32][G],
                                                    const float (&sm_l)[kThreads / 32][G],
                                                    const float (&sm_acc)[kThreads / 32][G][HD],
                                                    int s, int kvh, int split)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr int P = G * HD <= kClusterHeadDims ? kClusterMax : 1; /* others never launch */
    __shared__ float cl_o[P][G][HD];
    __shared__ float cl_ml[P][G][2];
    cooperative_groups::cluster_group cl = cooperative_groups::this_cluster();
    /* the first block has started (the kernel's early arrive): its shared memory exists */
    asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
    float(*o0)[G][HD] = cl.map_shared_rank(cl_o, 0);
    float(*ml0)[G][2] = cl.map_shared_rank(cl_ml, 0);
    attn_block_merge<G, HD>(
        sm_m, sm_l, sm_acc, [&](int g, int d, float res) { o0[split][g][d] = res; },
        [&](int g, float mx, float lsum) {
            ml0[split][g][0] = mx;
            ml0[split][g][1] = lsum;
        });
    cl.sync(); /* the stores above are visible to the first block after it */
    if (split != 0)
        return;
    const int pieces = pieces_of(a, a.seq_len[s]);
    for (int i = threadIdx.x; i < G * HD; i += kThreads) {
        const int g = i / HD, d = i % HD;
        const auto ml = [&](int p) { return make_float2(cl_ml[p][g][0], cl_ml[p][g][1]); };
        a.out[((size_t)s * a.n_heads + kvh * G + g) * HD + d] = pieces_merge(
            pieces, pieces_max(pieces, ml), ml, [&](int p) { return cl_o[p][g][d]; });
    }
#else
    (void)a, (void)sm_m, (void)sm_l, (void)sm_acc, (void)s, (void)kvh, (void)split;
    __trap(); /* launched as a cluster on sm_90+ only */
#endif
}

template <int G, int TPT>
__global__ void __launch_bounds__(kThreads)
attn_decode_kernel(const attn_args a)
{
    fp8_launch_dependents();
    fp8_grid_wait();
    /* DPL dims per lane; NGRP lane groups per block; kUnroll tokens per group in flight
     * (32 K+V bytes per lane either way) */
    constexpr int DPL = kHeadDim / TPT, NGRP = kThreads / TPT, GPW = 32 / TPT;
    constexpr int kUnroll = TPT == 8 ? 2 : 4;
    using vec = typename bytes_vec<DPL>::type;
    const int split = blockIdx.x, kvh = blockIdx.y, s = blockIdx.z;
    const int lt = threadIdx.x % TPT, grp = threadIdx.x / TPT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t0, t1;
    piece_range(a, a.seq_len[s], split, t0, t1);
    if (t0 >= t1 && a.n_splits > 1)
        return; /* the merge reads only pieces that hold tokens */

    float q[G][DPL];
#pragma unroll
    for (int g = 0; g < G; g++) {
        const uint16_t *qp = a.q + ((size_t)s * a.n_heads + kvh * G + g) * kHeadDim + lt * DPL;
#pragma unroll
        for (int d = 0; d < DPL; d++)
            q[g][d] = fp8_bf16_bits_to_f32(qp[d]) * a.qk_scale_log2;
    }
    float m[G], l[G], acc[G][DPL];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < DPL; d++)
            acc[g][d] = 0.0f;
    }

    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;
    /* the loop bound is the same for the whole block: every lane reaches every shuffle */
    for (int base = t0; base < t1; base += NGRP * kUnroll) {
        vec kv_k[kUnroll], kv_v[kUnroll];
        float ks[kUnroll], vs[kUnroll];
        bool ok[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            const int tok = base + u * NGRP + grp;
            const int bi = tok / a.block_size;
            int blk = -1;
            if (tok < t1 && bi < a.max_blocks)
                blk = bt[bi];
            ok[u] = blk >= 0 && blk < a.n_blocks;
            if (ok[u]) {
                const size_t slot = (size_t)blk * a.block_size + tok % a.block_size;
                const size_t h = slot * a.n_kv + kvh;
                kv_k[u] = *reinterpret_cast<const vec *>(a.k + h * kHeadDim + lt * DPL);
                kv_v[u] = *reinterpret_cast<const vec *>(a.v + h * kHeadDim + lt * DPL);
                ks[u] = a.k_scale[h];
                vs[u] = a.v_scale[h];
            } else {
                kv_k[u] = vec{};
                kv_v[u] = vec{};
                ks[u] = 0.0f;
                vs[u] = 0.0f;
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            float kf[DPL];
            unpack<DPL>(kv_k[u], kf);
            float sc[G];
#pragma unroll
            for (int g = 0; g < G; g++) {
                float d0 = 0.0f;
#pragma unroll
                for (int d = 0; d < DPL; d++)
                    d0 = fmaf(q[g][d], kf[d], d0);
#pragma unroll
                for (int o = TPT / 2; o > 0; o >>= 1)
                    d0 += __shfl_xor_sync(0xffffffffu, d0, o);
                sc[g] = d0 * ks[u];
            }
            if (!ok[u])
                continue;
            float vf[DPL];
            unpack<DPL>(kv_v[u], vf);
#pragma unroll
            for (int g = 0; g < G; g++) {
                if (sc[g] > m[g]) {
                    const float corr = exp2f(m[g] - sc[g]);
                    m[g] = sc[g];
                    l[g] *= corr;
#pragma unroll
                    for (int d = 0; d < DPL; d++)
                        acc[g][d] *= corr;
                }
                const float p = exp2f(sc[g] - m[g]);
                l[g] += p;
                const float pv = p * vs[u];
#pragma unroll
                for (int d = 0; d < DPL; d++)
                    acc[g][d] = fmaf(pv, vf[d], acc[g][d]);
            }
        }
    }

    /* merge the lane groups of each warp (lanes lt, lt + TPT, ... hold the same dims) */
    __shared__ float sm_m[kThreads / 32][G], sm_l[kThreads / 32][G];
    __shared__ float sm_acc[kThreads / 32][G][kHeadDim];
#pragma unroll
    for (int g = 0; g < G; g++) {
        float mx = m[g];
#pragma unroll
        for (int o = TPT; o < 32; o <<= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float sc = mx == -INFINITY ? 0.0f : exp2f(m[g] - mx);
        float lw = l[g] * sc;
#pragma unroll
        for (int o = TPT; o < 32; o <<= 1)
            lw += __shfl_xor_sync(0xffffffffu, lw, o);
#pragma unroll
        for (int d = 0; d < DPL; d++) {
            float v = acc[g][d] * sc;
#pragma unroll
            for (int o = TPT; o < 32; o <<= 1)
                v += __shfl_xor_sync(0xffffffffu, v, o);
            if (grp % GPW == 0)
                sm_acc[warp][g][lt * DPL + d] = v;
        }
        if (lane == 0) {
            sm_m[warp][g] = mx;
            sm_l[warp][g] = lw;
        }
    }
    __syncthreads();

    attn_block_finish<G, kHeadDim>(a, sm_m, sm_l, sm_acc, s, kvh, split);
}

/* ---- tensor-core variant ----------------------------------------------------------------
 * A warp takes 16 tokens at a time. S = Q K^T runs as mma.m16n8k16 (bf16 in, fp32 out)
 * with the G query heads as the 16 rows (G <= 8 used), the tokens as columns and head_dim
 * as the reduction; K's e4m3 bytes widen exactly to bf16 in registers (as in the GEMV) and
 * its dims are permuted identically in Q, so each lane loads 16 contiguous K bytes per 64
 * dims. The accumulator layout of S is the A-operand layout of O += P V, so the
 * probabilities (times the per-token V scale, rounded to bf16) feed the second mma without
 * leaving registers; V's bytes are gathered per dim with byte permutes. Softmax stays exact
 * fp32 online. HD is 128 or 256 (Gemma3 1b/4b/12b). */

/* Slot of token tok of the sequence, or -1 (fp8_paged_slot). */
__device__ __forceinline__ long long token_slot(const attn_args &a, const int32_t *bt, int tok,
                                                int t1)
{
    return fp8_paged_slot(bt, tok, t1, a.block_size, a.max_blocks, a.n_blocks);
}

/* The fused front (QK, head_dim 128): the block's warps take the G query heads of its
 * kv head, and in the block holding the sequence's newest token also that token's k and
 * v heads, through qk_rope.cuh as qk_norm_rope_kv_kernel does; q goes to shared memory,
 * k and v to the cache (read back by this block's own loop after the barrier that ends
 * this). Norm weights and rotations are prepared before the wait, as there. */
template <int G>
struct qk_front {
    static constexpr int kTasks = (G + 2 + kThreads / 32 - 1) / (kThreads / 32);
    fp8_qk_lane lane[kTasks];
    int slot;
    bool own_new;
};

template <int G>
__device__ __forceinline__ void qk_front_prep(qk_front<G> &f, const attn_args &a, int s, int kvh,
                                              bool own_new)
{
    const int warp = threadIdx.x >> 5;
    f.own_new = own_new;
    f.slot = a.slots[s];
#pragma unroll
    for (int i = 0; i < qk_front<G>::kTasks; i++) {
        const int task = warp + i * (kThreads / 32); /* < G: q head; G: k; G + 1: v */
        const bool normed = task <= G;
        f.lane[i] = fp8_qk_prep(normed && (task < G || own_new),
                                task < G ? a.q_norm_w : a.k_norm_w, a.plus_one != 0, a.inv_freq,
                                a.attn_factor, a.positions[s]);
    }
}

/* The step's token's k and v rows as the front wrote them to the cache, for the block's
 * first tile, loaded before the front ran (4-byte words: lane l's dims 4l..4l+3). */
struct qk_newest {
    uint32_t k[kQkHeadDim / 4], v[kQkHeadDim / 4];
    float ks, vs;
};

template <int G>
__device__ __forceinline__ void qk_front_run(const qk_front<G> &f, const attn_args &a, int s,
                                             int kvh, uint16_t (*q_s)[kQkHeadDim],
                                             qk_newest &nw)
{
    const int warp = threadIdx.x >> 5, heads = a.n_heads + 2 * a.n_kv;
    uint2 raw[qk_front<G>::kTasks]; /* every task's row requested before any is used */
#pragma unroll
    for (int i = 0; i < qk_front<G>::kTasks; i++) {
        const int task = warp + i * (kThreads / 32);
        const int hs = task < G ? kvh * G + task : a.n_heads + (task - G) * a.n_kv + kvh;
        raw[i] = task < G + (f.own_new ? 2 : 0)
                     ? fp8_qk_load(a.qkv + ((size_t)s * heads + hs) * kQkHeadDim)
                     : make_uint2(0, 0);
    }
#pragma unroll
    for (int i = 0; i < qk_front<G>::kTasks; i++) {
        const int task = warp + i * (kThreads / 32);
        if (task >= G + (f.own_new ? 2 : 0))
            continue;
        float v[4];
        fp8_qk_apply(v, raw[i], task <= G, f.lane[i], a.eps);
        if (task < G) {
            *reinterpret_cast<uint2 *>(&q_s[task][4 * (threadIdx.x & 31)]) = fp8_qk_bf16x4(v);
        } else if (f.slot >= 0 && f.slot < a.n_slots_total) {
            float scale;
            (task == G ? nw.k : nw.v)[threadIdx.x & 31] =
                fp8_qk_store_kv(v, task == G ? a.k_out : a.v_out, task == G ? a.ks_out : a.vs_out,
                                (size_t)f.slot * a.n_kv + kvh, scale);
            (task == G ? nw.ks : nw.vs) = scale;
        }
    }
    __syncthreads();
}

/* One warp's tile of 16 tokens: K rows base + 8 nt + g (16 bytes a lane per 64 dims), and
 * for the columns base + {2t, 2t+1, 2t+8, 2t+9} (ci) the V bytes of dims 4g + 32q.., the
 * scales and whether the token exists; the slots they came from (-1: none). */
template <int HD>
struct attn_tile {
    uint4 kv[2][HD / 64];
    uint32_t vw[4][HD / 32];
    float ks[4], vs[4];
    bool ok[4];
    long long k_slot[2], v_slot[4];
};

template <int HD>
__device__ __forceinline__ void attn_tile_load(attn_tile<HD> &x, const attn_args &a,
                                               const int32_t *bt, int base, int t1, int kvh)
{
    constexpr int KC = HD / 64, NQ = HD / 32;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    /* K rows: tokens base + 8 nt + g; columns (scales, V, P): base + {2t, 2t+1, 2t+8, 2t+9} */
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
        const long long sl = token_slot(a, bt, base + 8 * nt + g, t1);
        const uint8_t *kp = a.k + ((size_t)sl * a.n_kv + kvh) * HD + 16 * t;
#pragma unroll
        for (int kc = 0; kc < KC; kc++)
            x.kv[nt][kc] = sl >= 0 ? *reinterpret_cast<const uint4 *>(kp + kc * 64)
                                 : make_uint4(0, 0, 0, 0);
        x.k_slot[nt] = sl;
    }
#pragma unroll
    for (int ci = 0; ci < 4; ci++) {
        const int tok = base + 2 * t + (ci & 1) + 8 * (ci >> 1);
        const long long sl = token_slot(a, bt, tok, t1);
        x.v_slot[ci] = sl;
        x.ok[ci] = sl >= 0;
        const size_t h = (size_t)(x.ok[ci] ? sl : 0) * a.n_kv + kvh;
        const uint8_t *vp = a.v + h * HD + 4 * g;
#pragma unroll
        for (int q = 0; q < NQ; q++)
            x.vw[ci][q] = x.ok[ci] ? *reinterpret_cast<const uint32_t *>(vp + 32 * q) : 0u;
        x.ks[ci] = x.ok[ci] ? a.k_scale[h] : 0.0f;
        x.vs[ci] = x.ok[ci] ? a.v_scale[h] : 0.0f;
    }
}

/* The rows of the slot the front wrote (the step's token), as it wrote them (qk_newest),
 * in place of the cache's bytes loaded before it ran. */
template <int HD>
__device__ __forceinline__ void attn_tile_newest(attn_tile<HD> &x, const qk_newest &nw,
                                                 long long slot)
{
    constexpr int KC = HD / 64, NQ = HD / 32;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
        if (x.k_slot[nt] == slot)
#pragma unroll
            for (int kc = 0; kc < KC; kc++)
                x.kv[nt][kc] = *reinterpret_cast<const uint4 *>(&nw.k[4 * t + 16 * kc]);
#pragma unroll
    for (int ci = 0; ci < 4; ci++)
        if (x.v_slot[ci] == slot) {
#pragma unroll
            for (int q = 0; q < NQ; q++)
                x.vw[ci][q] = nw.v[g + 8 * q];
            x.ks[ci] = nw.ks;
            x.vs[ci] = nw.vs;
        }
}

/* The online softmax and P V of one tile for the warp's heads (rows g < G of qa). */
template <int HD>
__device__ __forceinline__ void attn_tile_step(const attn_tile<HD> &x,
                                               const uint32_t (&qa)[HD / 64][4][2], float &m,
                                               float &l, float (&o)[HD / 32][4][4],
                                               float qk_scale_log2)
{
    constexpr int KC = HD / 64, NQ = HD / 32;
    float sc[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++)
            sc[nt][e] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            const uint32_t kw[4] = {x.kv[nt][kc].x, x.kv[nt][kc].y, x.kv[nt][kc].z, x.kv[nt][kc].w};
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                uint32_t lo, hi;
                fp8_e4m3x4_to_bf16x2(kw[jj], lo, hi);
                /* rows g + 8 of A are zero: at most 8 query heads */
                fp8_mma_bf16_16816(sc[nt], qa[kc][jj][0], 0u, qa[kc][jj][1], 0u, lo, hi);
            }
        }
    }
    /* head g, column tokens ci = (2t, 2t+1, 2t+8, 2t+9): C elements (nt, e) = (ci >> 1, ci & 1) */
    float p[4];
    float mx = -INFINITY;
#pragma unroll
    for (int ci = 0; ci < 4; ci++) {
        p[ci] = x.ok[ci] ? sc[ci >> 1][ci & 1] * x.ks[ci] * qk_scale_log2 : -INFINITY;
        mx = fmaxf(mx, p[ci]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    /* no valid token so far (a tile of bad block-table entries): nothing to add, and
     * no -inf - -inf; branch-free so the whole warp stays on the mma path */
    const float m_new = fmaxf(m, mx);
    const bool none = m_new == -INFINITY;
    const float corr = none ? 1.0f : exp2f(m - m_new);
    m = m_new;
    float psum = 0.0f;
#pragma unroll
    for (int ci = 0; ci < 4; ci++) {
        p[ci] = none ? 0.0f : exp2f(p[ci] - m);
        psum += p[ci];
    }
    l = l * corr + psum;
    if (corr != 1.0f) {
#pragma unroll
        for (int q = 0; q < NQ; q++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    o[q][j][e] *= corr;
    }
    const uint32_t pa0 = fp8_pack_bf16x2(p[0] * x.vs[0], p[1] * x.vs[1]);
    const uint32_t pa2 = fp8_pack_bf16x2(p[2] * x.vs[2], p[3] * x.vs[3]);
#pragma unroll
    for (int q = 0; q < NQ; q++) {
        uint32_t b0[4], b1[4]; /* per byte j: V[tokens][dim 32q + 4g + j] */
        fp8_e4m3x4_to_bf16x2(__byte_perm(x.vw[0][q], x.vw[1][q], 0x5410), b0[0], b0[1]);
        fp8_e4m3x4_to_bf16x2(__byte_perm(x.vw[0][q], x.vw[1][q], 0x7632), b0[2], b0[3]);
        fp8_e4m3x4_to_bf16x2(__byte_perm(x.vw[2][q], x.vw[3][q], 0x5410), b1[0], b1[1]);
        fp8_e4m3x4_to_bf16x2(__byte_perm(x.vw[2][q], x.vw[3][q], 0x7632), b1[2], b1[3]);
#pragma unroll
        for (int j = 0; j < 4; j++)
            fp8_mma_bf16_16816(o[q][j], pa0, 0u, pa2, 0u, b0[j], b1[j]);
    }
}

template <int G, int HD, bool CL, bool QK>
__global__ void __launch_bounds__(kThreads)
attn_decode_mma_kernel(const attn_args a)
{
    static_assert(!QK || HD == kQkHeadDim, "the fused front takes head_dim 128");
    /* With the front the next kernel (the o projection, whose blocks load all their weights
     * at once) is let in only after the loop: launched at the start its loads queue ahead
     * of this kernel's, which are all latency (H100, Qwen3-8B, with the first tile loaded
     * before the wait: 297.4 / 296.5 / 297.1 vs 296.4 tok/s at batch 1, 4124 vs 4068 at 16). */
    if (!QK)
        fp8_launch_dependents();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (CL) /* this block has started; attn_cluster_finish waits for all to have */
        asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
#endif
    constexpr int KC = HD / 64, NQ = HD / 32; /* 64-dim K chunks; 32-dim output groups */
    const int split = blockIdx.x, kvh = blockIdx.y, s = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    int t0, t1;
    const int len = a.seq_len[s];
    piece_range(a, len, split, t0, t1); /* the step's layout: no kernel writes it */
    if (!CL && t0 >= t1 && a.n_splits > 1)
        return; /* (in a cluster an empty piece still takes part in the merge's barriers) */
    __shared__ __align__(16) uint16_t q_s[QK ? G : 1][kQkHeadDim];
    qk_front<G> front;
    if (QK)
        qk_front_prep<G>(front, a, s, kvh, t0 < t1 && t1 == len);
    const int32_t *bt = a.block_table + (size_t)s * a.max_blocks;
    /* With the front the warp's first tile is loaded before the wait (the cache's other
     * rows are written by earlier steps; the step's token is taken from the front below),
     * so that after the wait only the projection rows are fetched; without it, the tile
     * is prefetched into L2. */
    const int base0 = t0 + 16 * warp;
    const bool early = QK && base0 < t1; /* uniform over the warp */
    attn_tile<HD> first;
    if (early) {
        attn_tile_load<HD>(first, a, bt, base0, t1, kvh);
    } else if (!QK) {
        const long long sk = token_slot(a, bt, base0 + g + 8 * (t & 1), t1);
        if (sk >= 0) {
            const size_t h = (size_t)sk * a.n_kv + kvh;
            fp8_prefetch_l2(a.k + h * HD + (t >> 1) * 64);
            fp8_prefetch_l2(a.v + h * HD + (t >> 1) * 64);
            if (t < 2) {
                fp8_prefetch_l2(a.k_scale + h);
                fp8_prefetch_l2(a.v_scale + h);
            }
        }
    }
    fp8_grid_wait();
    __shared__ __align__(16) qk_newest newest;
    if (QK) {
        qk_front_run<G>(front, a, s, kvh, q_s, newest);
        if (early && front.own_new && front.slot >= 0 && front.slot < a.n_slots_total)
            attn_tile_newest<HD>(first, newest, front.slot);
    }

    /* Q of head g (row g of A), dims permuted as the K bytes: chunk kc, k-step jj */
    uint32_t qa[KC][4][2];
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
        uint4 w0 = make_uint4(0, 0, 0, 0), w1 = make_uint4(0, 0, 0, 0);
        if (g < G) {
            const uint16_t *qh = QK ? &q_s[g][0]
                                    : a.q + ((size_t)s * a.n_heads + kvh * G + g) * HD;
            const uint4 *qp = reinterpret_cast<const uint4 *>(qh + kc * 64 + 16 * t);
            w0 = qp[0];
            w1 = qp[1];
        }
        const uint32_t w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            qa[kc][jj][0] = __byte_perm(w[2 * jj], w[2 * jj + 1], 0x5410);
            qa[kc][jj][1] = __byte_perm(w[2 * jj], w[2 * jj + 1], 0x7632);
        }
    }

    float m = -INFINITY, l = 0.0f;
    float o[NQ][4][4]; /* (32-dim group q, byte j, C fragment) */
#pragma unroll
    for (int q = 0; q < NQ; q++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[q][j][e] = 0.0f;

    /* the loop bound is uniform over the warp: every lane reaches every mma */
    int base = base0;
    if (early) {
        attn_tile_step<HD>(first, qa, m, l, o, a.qk_scale_log2);
        base += 16 * (kThreads / 32);
    }
    for (; base < t1; base += 16 * (kThreads / 32)) {
        attn_tile<HD> x;
        attn_tile_load<HD>(x, a, bt, base, t1, kvh);
        attn_tile_step<HD>(x, qa, m, l, o, a.qk_scale_log2);
    }
    __syncwarp();
    if (QK)
        fp8_launch_dependents();

    /* l is split over the 4 lanes of a head; m is already uniform across them */
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    __shared__ float sm_m[kThreads / 32][G], sm_l[kThreads / 32][G];
    __shared__ float sm_acc[kThreads / 32][G][HD];
    if (g < G) {
        /* C fragment of mma (q, j): c0 = dim 32q + 8t + j, c1 = dim 32q + 8t + 4 + j */
#pragma unroll
        for (int q = 0; q < NQ; q++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                sm_acc[warp][g][32 * q + 8 * t + j] = o[q][j][0];
                sm_acc[warp][g][32 * q + 8 * t + 4 + j] = o[q][j][1];
            }
        if (t == 0) {
            sm_m[warp][g] = m;
            sm_l[warp][g] = l;
        }
    }
    __syncthreads();
    if (CL)
        attn_cluster_finish<G, HD>(a, sm_m, sm_l, sm_acc, s, kvh, split);
    else
        attn_block_finish<G, HD>(a, sm_m, sm_l, sm_acc, s, kvh, split);
}

template <int HD>
__global__ void __launch_bounds__(kThreads) attn_merge_kernel(const attn_args a)
{
    fp8_launch_dependents();
    const int h = blockIdx.x, s = blockIdx.y;
    /* the step's layout, which no kernel writes: known before the pieces are done */
    const int pieces = pieces_of(a, a.seq_len[s]);
    fp8_grid_wait();
    const size_t p0 = ((size_t)s * a.n_heads + h) * a.n_splits;
    const auto ml = [&](int p) {
        return make_float2(a.part_ml[2 * (p0 + p)], a.part_ml[2 * (p0 + p) + 1]);
    };
    const float mx = pieces_max(pieces, ml);
    for (int d = threadIdx.x; d < HD; d += kThreads)
        a.out[((size_t)s * a.n_heads + h) * HD + d] =
            pieces_merge(pieces, mx, ml, [&](int p) { return a.part_o[(p0 + p) * HD + d]; });
}

template <int G>
cudaError_t launch(const attn_args &a, int n_seqs, int head_dim, int variant, bool cl, bool qk,
                   cudaStream_t stream)
{
    const dim3 grid((unsigned)a.n_splits, (unsigned)a.n_kv, (unsigned)n_seqs);
    if (cl) {
        cudaLaunchConfig_t lc = {};
        lc.gridDim = grid;
        lc.blockDim = dim3(kThreads);
        lc.stream = stream;
        cudaLaunchAttribute attr[2];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        attr[1].id = cudaLaunchAttributeClusterDimension;
        attr[1].val.clusterDim.x = (unsigned)a.n_splits;
        attr[1].val.clusterDim.y = 1;
        attr[1].val.clusterDim.z = 1;
        lc.attrs = attr;
        lc.numAttrs = 2;
        void (*kc)(attn_args) =
            qk                ? attn_decode_mma_kernel<G, kHeadDim, true, true>
            : head_dim == 256 ? attn_decode_mma_kernel<G, 256, true, false>
                              : attn_decode_mma_kernel<G, kHeadDim, true, false>;
        return cudaLaunchKernelEx(&lc, kc, a);
    }
    void (*k)(attn_args) = qk                ? attn_decode_mma_kernel<G, kHeadDim, false, true>
                           : head_dim == 256 ? attn_decode_mma_kernel<G, 256, false, false>
                           : variant == FP8_CUDA_ATTN_MMA
                               ? attn_decode_mma_kernel<G, kHeadDim, false, false>
                           : variant == FP8_CUDA_ATTN_LANES8 ? attn_decode_kernel<G, 8>
                                                             : attn_decode_kernel<G, 16>;
    return fp8_cuda_launch_pdl(k, grid, dim3(kThreads), stream, a);
}

size_t workspace_for(int n_seqs, int n_heads, int head_dim, int n_splits)
{
    return n_splits > 1
               ? (size_t)n_seqs * n_heads * n_splits * (head_dim + 2) * sizeof(float)
               : 0;
}

} // namespace

/* Sm_90+, 2..8 pieces (the portable cluster size), G * HD the first block's buffer takes,
 * and one wave of blocks: with more blocks it measured slower than the merge kernel (H100,
 * Qwen3-8B shapes, 16 sequences x 8 kv heads x 3 pieces: 18.5 vs 14.1 us at 160 tokens).
 * No device to ask: no. */
int32_t fp8_cuda_attn_decode_cluster_ok(int32_t n_seqs, int32_t n_heads,
                                        const struct fp8_cuda_kv_cache *kv, int32_t n_splits)
{
    int dev = 0, major = 0, sms = 0;
    if (!kv || kv->n_kv_heads < 1 || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 0;
    return major >= 9 && n_splits > 1 && n_splits <= kClusterMax &&
           (int64_t)n_heads / kv->n_kv_heads * kv->head_dim <= kClusterHeadDims &&
           (int64_t)n_seqs * kv->n_kv_heads * n_splits <= sms;
}

static int check_geometry(int32_t n_seqs, int32_t n_heads, const struct fp8_cuda_kv_cache *kv,
                          struct fp8_err *err)
{
    if (!kv || n_seqs < 1 || n_heads < 1 || kv->n_kv_heads < 1)
        return fp8_err_set(err, -EINVAL,
                           "attn_decode: needs n_seqs, n_heads, n_kv_heads >= 1 (got %d, %d, %d)",
                           (int)n_seqs, (int)n_heads, kv ? (int)kv->n_kv_heads : 0);
    const int g = n_heads / kv->n_kv_heads;
    if ((kv->head_dim != 128 && kv->head_dim != 256) || n_heads % kv->n_kv_heads != 0 ||
        (g != 1 && g != 2 && g != 4 && g != 8))
        return fp8_err_set(err, -EINVAL,
                           "attn_decode(n_heads=%d n_kv_heads=%d head_dim=%d): supported are "
                           "head_dim 128 or 256 and 1, 2, 4 or 8 query heads per kv head",
                           (int)n_heads, (int)kv->n_kv_heads, (int)kv->head_dim);
    return 0;
}

int fp8_cuda_attn_decode_plan(struct fp8_cuda_attn_plan *plan, int32_t n_seqs, int32_t n_heads,
                              const struct fp8_cuda_kv_cache *kv, int32_t max_seq_len,
                              int32_t window, struct fp8_err *err)
{
    int rc = check_geometry(n_seqs, n_heads, kv, err);
    if (rc < 0)
        return rc;
    if (max_seq_len < 1 || window < 0)
        return fp8_err_set(err, -EINVAL,
                           "attn_decode: max_seq_len must be >= 1 and window >= 0 (got %d, %d)",
                           (int)max_seq_len, (int)window);
    int32_t sms = 0;
    rc = fp8_cuda_sm_count(&sms, err);
    if (rc < 0)
        return rc;
    /* A windowed query sees at most window keys: the pieces split that span. */
    const int32_t span = window > 0 && window < max_seq_len ? window : max_seq_len;
    /* About two blocks per SM, and two pieces while (sequences x kv heads) is under six
     * blocks per SM, where one piece per sequence leaves a ragged last wave: on H100 this
     * picks the fastest of the measured split counts for batch 1/16/64 and 1k-16k tokens
     * (bench/RESULTS.md). */
    const int64_t base = (int64_t)n_seqs * kv->n_kv_heads;
    int64_t splits = (2 * (int64_t)sms + base - 1) / base;
    if (splits == 1 && base < 6 * (int64_t)sms)
        splits = 2;
    const int64_t max_pieces = (span + kMinSplitTokens - 1) / kMinSplitTokens;
    if (splits > max_pieces)
        splits = max_pieces;
    struct fp8_cuda_attn_plan p;
    if (splits <= 1) {
        p.n_splits = 1;
        p.split_tokens = span;
    } else {
        int64_t tokens = (span + splits - 1) / splits;
        tokens = (tokens + 15) / 16 * 16;
        p.split_tokens = (int32_t)tokens;
        p.n_splits = (int32_t)((span + tokens - 1) / tokens);
    }
    p.variant = fp8_cuda_attn_decode_cluster_ok(n_seqs, n_heads, kv, p.n_splits)
                    ? FP8_CUDA_ATTN_MMA_CLUSTER
                    : FP8_CUDA_ATTN_MMA;
    p.window = window;
    /* also for the cluster variant, which needs none: any variant may run on this plan */
    p.workspace_bytes = workspace_for(n_seqs, n_heads, kv->head_dim, p.n_splits);
    *plan = p;
    return 0;
}

/* fp8_cuda_attn_decode (q) or fp8_cuda_attn_decode_qk (qk): one of the two is given. */
static int attn_decode_run(uint16_t *out, const uint16_t *q, const struct fp8_cuda_qk_front *qk,
                           const struct fp8_cuda_kv_cache *kv, const int32_t *block_table,
                           const int32_t *seq_len, int32_t n_seqs, int32_t n_heads,
                           int32_t max_blocks_per_seq, float sm_scale,
                           const struct fp8_cuda_attn_plan *plan, void *workspace,
                           size_t workspace_bytes, void *stream, struct fp8_err *err)
{
    int rc = check_geometry(n_seqs, n_heads, kv, err);
    if (rc < 0)
        return rc;
    if (!out || !(q || qk) || !kv->k || !kv->v || !kv->k_scale || !kv->v_scale || !block_table ||
        !seq_len || !plan || kv->block_size < 1 || kv->n_blocks < 1 || max_blocks_per_seq < 1)
        return fp8_err_set(err, -EINVAL,
                           "attn_decode(n_seqs=%d n_heads=%d): NULL tensor or plan, or empty "
                           "cache geometry (n_blocks=%d block_size=%d max_blocks_per_seq=%d)",
                           (int)n_seqs, (int)n_heads, (int)kv->n_blocks, (int)kv->block_size,
                           (int)max_blocks_per_seq);
    if (plan->n_splits < 1 || plan->split_tokens < 1 || plan->window < 0 ||
        (plan->variant != FP8_CUDA_ATTN_LANES8 && plan->variant != FP8_CUDA_ATTN_LANES16 &&
         plan->variant != FP8_CUDA_ATTN_MMA && plan->variant != FP8_CUDA_ATTN_MMA_CLUSTER) ||
        (kv->head_dim != kHeadDim && plan->variant != FP8_CUDA_ATTN_MMA &&
         plan->variant != FP8_CUDA_ATTN_MMA_CLUSTER))
        return fp8_err_set(err, -EINVAL,
                           "attn_decode(n_seqs=%d n_heads=%d head_dim=%d): bad plan (splits=%d "
                           "tokens=%d window=%d variant=%d; the CUDA-core variants take "
                           "head_dim 128 only)",
                           (int)n_seqs, (int)n_heads, (int)kv->head_dim, (int)plan->n_splits,
                           (int)plan->split_tokens, (int)plan->window, (int)plan->variant);
    const bool cl = plan->variant == FP8_CUDA_ATTN_MMA_CLUSTER;
    if (qk && (!qk->qkv || !qk->q_norm_w || !qk->k_norm_w || !qk->inv_freq || !qk->positions ||
               !qk->slots || !(qk->eps >= 0.0f) || kv->head_dim != kQkHeadDim ||
               (plan->variant != FP8_CUDA_ATTN_MMA && !cl) ||
               (int64_t)kv->n_blocks * kv->block_size > INT32_MAX))
        return fp8_err_set(err, -EINVAL,
                           "attn_decode_qk(n_seqs=%d n_heads=%d head_dim=%d variant=%d): the "
                           "fused q/k-norm front needs qkv, norm weights, inv_freq, positions "
                           "and slots, eps >= 0, head_dim %d, a tensor-core variant and int32 "
                           "slot ids",
                           (int)n_seqs, (int)n_heads, (int)kv->head_dim, (int)plan->variant,
                           kQkHeadDim);
    if (cl && !fp8_cuda_attn_decode_cluster_ok(n_seqs, n_heads, kv, plan->n_splits))
        return fp8_err_set(err, -EINVAL,
                           "attn_decode(n_seqs=%d n_heads=%d n_kv_heads=%d head_dim=%d "
                           "splits=%d): the cluster variant needs sm_90+, 2..%d pieces, query "
                           "heads per kv head x head_dim <= %d and at most one block per SM",
                           (int)n_seqs, (int)n_heads, (int)kv->n_kv_heads, (int)kv->head_dim,
                           (int)plan->n_splits, kClusterMax, kClusterHeadDims);
    const size_t need = cl ? 0 : workspace_for(n_seqs, n_heads, kv->head_dim, plan->n_splits);
    if (need > 0 && (!workspace || workspace_bytes < need))
        return fp8_err_set(err, -EINVAL,
                           "attn_decode(n_seqs=%d n_heads=%d splits=%d): workspace of %zu bytes "
                           "needed, %zu given",
                           (int)n_seqs, (int)n_heads, (int)plan->n_splits, need,
                           workspace ? workspace_bytes : (size_t)0);
    attn_args a;
    a.out = out;
    a.q = q;
    a.k = kv->k;
    a.v = kv->v;
    a.k_scale = kv->k_scale;
    a.v_scale = kv->v_scale;
    a.block_table = block_table;
    a.seq_len = seq_len;
    a.part_o = (float *)workspace;
    a.part_ml =
        need ? a.part_o + (size_t)n_seqs * n_heads * plan->n_splits * kv->head_dim : NULL;
    a.n_heads = n_heads;
    a.n_kv = kv->n_kv_heads;
    a.n_blocks = kv->n_blocks;
    a.block_size = kv->block_size;
    a.max_blocks = max_blocks_per_seq;
    a.n_splits = plan->n_splits;
    a.split_tokens = plan->split_tokens;
    a.window = plan->window;
    a.qk_scale_log2 = sm_scale * 1.4426950408889634f;
    a.qkv = qk ? qk->qkv : NULL;
    a.q_norm_w = qk ? qk->q_norm_w : NULL;
    a.k_norm_w = qk ? qk->k_norm_w : NULL;
    a.inv_freq = qk ? qk->inv_freq : NULL;
    a.positions = qk ? qk->positions : NULL;
    a.slots = qk ? qk->slots : NULL;
    a.k_out = kv->k;
    a.v_out = kv->v;
    a.ks_out = kv->k_scale;
    a.vs_out = kv->v_scale;
    a.eps = qk ? qk->eps : 0.0f;
    a.attn_factor = qk ? qk->attn_factor : 0.0f;
    a.plus_one = qk ? qk->plus_one != 0 : 0;
    a.n_slots_total = (int)((int64_t)kv->n_blocks * kv->block_size);
    cudaStream_t st = (cudaStream_t)stream;
    const int hd = kv->head_dim;
    cudaError_t e;
    switch (n_heads / kv->n_kv_heads) {
    case 1: e = launch<1>(a, n_seqs, hd, plan->variant, cl, qk != NULL, st); break;
    case 2: e = launch<2>(a, n_seqs, hd, plan->variant, cl, qk != NULL, st); break;
    case 4: e = launch<4>(a, n_seqs, hd, plan->variant, cl, qk != NULL, st); break;
    default: e = launch<8>(a, n_seqs, hd, plan->variant, cl, qk != NULL, st); break;
    }
    rc = fp8_cuda_check(e, err,
                        "attn_decode(n_seqs=%d n_heads=%d n_kv_heads=%d head_dim=%d splits=%d x "
                        "%d tokens window=%d)",
                        (int)n_seqs, (int)n_heads, (int)kv->n_kv_heads, hd, (int)plan->n_splits,
                        (int)plan->split_tokens, (int)plan->window);
    if (rc < 0 || plan->n_splits == 1 || cl)
        return rc;
    const dim3 mgrid((unsigned)n_heads, (unsigned)n_seqs);
    return fp8_cuda_check(fp8_cuda_launch_pdl(hd == 256 ? attn_merge_kernel<256>
                                                        : attn_merge_kernel<kHeadDim>,
                                              mgrid, dim3(kThreads), st, a),
                          err,
                          "attn_decode merge(n_seqs=%d n_heads=%d head_dim=%d splits=%d)",
                          (int)n_seqs, (int)n_heads, hd, (int)plan->n_splits);
}

int fp8_cuda_attn_decode(uint16_t *out, const uint16_t *q, const struct fp8_cuda_kv_cache *kv,
                         const int32_t *block_table, const int32_t *seq_len, int32_t n_seqs,
                         int32_t n_heads, int32_t max_blocks_per_seq, float sm_scale,
                         const struct fp8_cuda_attn_plan *plan, void *workspace,
                         size_t workspace_bytes, void *stream, struct fp8_err *err)
{
    if (!q)
        return fp8_err_set(err, -EINVAL, "attn_decode(n_seqs=%d n_heads=%d): NULL q",
                           (int)n_seqs, (int)n_heads);
    return attn_decode_run(out, q, NULL, kv, block_table, seq_len, n_seqs, n_heads,
                           max_blocks_per_seq, sm_scale, plan, workspace, workspace_bytes, stream,
                           err);
}

int fp8_cuda_attn_decode_qk(uint16_t *out, const struct fp8_cuda_qk_front *qk,
                            const struct fp8_cuda_kv_cache *kv, const int32_t *block_table,
                            const int32_t *seq_len, int32_t n_seqs, int32_t n_heads,
                            int32_t max_blocks_per_seq, float sm_scale,
                            const struct fp8_cuda_attn_plan *plan, void *workspace,
                            size_t workspace_bytes, void *stream, struct fp8_err *err)
{
    if (!qk)
        return fp8_err_set(err, -EINVAL, "attn_decode_qk(n_seqs=%d n_heads=%d): NULL front",
                           (int)n_seqs, (int)n_heads);
    return attn_decode_run(out, NULL, qk, kv, block_table, seq_len, n_seqs, n_heads,
                           max_blocks_per_seq, sm_scale, plan, workspace, workspace_bytes, stream,
                           err);
}
