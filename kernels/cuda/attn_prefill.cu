/* Causal flash attention for prefill chunks and mixed steps over the paged FP8 KV cache,
 * on the tensor cores, GQA-aware, with an optional sliding window.
 *
 * The step's tokens are cut into tiles of consecutive tokens of one sequence (a small
 * kernel builds the tile list on the device from token -> sequence). One block of 4 warps
 * per (tile, kv head); its 64 rows are (token, query head of the group) pairs, token-major,
 * so the group's heads share every K/V read. Each warp owns 16 rows and walks the keys its
 * rows can see (from the lowest window start to the highest position) 16 at a time:
 * - S = Q K^T as mma.m16n8k16 (bf16 in, fp32 out): the 16 rows are A, the keys' e4m3
 *   bytes widen exactly to bf16 in registers as B, and head_dim is the reduction, its
 *   order permuted identically in Q and K so each lane loads 16 contiguous K bytes (as in
 *   the decode kernel, attn_decode.cu);
 * - the mask (key <= the row's position, and > position - window when window > 0) and an
 *   exact online softmax in fp32, base 2 with the scale folded in after the K scale;
 * - O += P V as mma with P (times each key's V scale, rounded to bf16) kept in registers:
 *   S's accumulator layout is the A layout of the second product.
 * The chunk's own keys are read back from the cache (qk_norm_rope_kv_write stored them
 * first), so a token attends to its stored key, as in decode and the ref backend. */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

namespace {

constexpr int kHeadDim = 128;
constexpr int kWarps = 4;
constexpr int kRows = 16 * kWarps; /* (token, head) rows of a block */
constexpr int kMaxGroup = kRows;   /* a tile holds at least one token */

struct prefill_args {
    uint16_t *out;
    const uint16_t *q;
    const uint8_t *k, *v;
    const float *k_scale, *v_scale;
    const int32_t *positions, *tok_seq, *block_table;
    const int2 *tiles;
    int n_heads, n_kv, group, n_blocks, block_size, max_blocks, window;
    float qk_scale_log2; /* sm_scale * log2(e) */
};

/* tiles[i] = tokens [x, y) of one sequence, at most tile_tokens of them, or {-1, -1}.
 * seq_ws: 3 * n_seqs ints (first token, end, first tile of each sequence). One block; the
 * tokens of a sequence are contiguous in the step. */
__global__ void __launch_bounds__(1024)
prefill_tiles_kernel(int2 *tiles, int32_t max_tiles, int32_t *seq_ws, const int32_t *tok_seq,
                     int32_t n_tokens, int32_t n_seqs, int32_t tile_tokens)
{
    fp8_launch_dependents();
    int32_t *start = seq_ws, *end = seq_ws + n_seqs, *first = seq_ws + 2 * n_seqs;
    for (int i = threadIdx.x; i < n_seqs; i += blockDim.x) {
        start[i] = 0;
        end[i] = 0;
    }
    for (int i = threadIdx.x; i < max_tiles; i += blockDim.x)
        tiles[i] = make_int2(-1, -1);
    __syncthreads();
    for (int t = threadIdx.x; t < n_tokens; t += blockDim.x) {
        const int s = tok_seq[t];
        if (s < 0 || s >= n_seqs)
            continue;
        if (t == 0 || tok_seq[t - 1] != s)
            start[s] = t;
        if (t == n_tokens - 1 || tok_seq[t + 1] != s)
            end[s] = t + 1;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t acc = 0;
        for (int s = 0; s < n_seqs; s++) {
            first[s] = acc;
            acc += (end[s] - start[s] + tile_tokens - 1) / tile_tokens;
        }
    }
    __syncthreads();
    for (int t = threadIdx.x; t < n_tokens; t += blockDim.x) {
        const int s = tok_seq[t];
        if (s < 0 || s >= n_seqs)
            continue;
        const int rel = t - start[s];
        const int idx = first[s] + rel / tile_tokens;
        if (rel % tile_tokens == 0 && idx < max_tiles)
            tiles[idx] = make_int2(t, min(t + tile_tokens, end[s]));
    }
}

/* Slot of key j of the sequence, or -1 (fp8_paged_slot). */
__device__ __forceinline__ long long key_slot(const prefill_args &a, const int32_t *bt, int j,
                                              int end)
{
    return fp8_paged_slot(bt, j, end, a.block_size, a.max_blocks, a.n_blocks);
}

__global__ void __launch_bounds__(kWarps * 32)
attn_prefill_kernel(const prefill_args a)
{
    fp8_launch_dependents();
    const int2 tile = a.tiles[blockIdx.x];
    if (tile.x < 0)
        return;
    const int kvh = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int n_tok = tile.y - tile.x;

    /* this lane's rows: g and g + 8 of the warp's 16 */
    int pos[2], lo_key = INT32_MAX, hi_key = -1;
    size_t qoff[2];
    bool valid[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = warp * 16 + g + 8 * i, tl = r / a.group;
        valid[i] = tl < n_tok;
        const int tok = tile.x + (valid[i] ? tl : 0);
        qoff[i] = ((size_t)tok * a.n_heads + kvh * a.group + r % a.group) * kHeadDim;
        pos[i] = valid[i] ? a.positions[tok] : -1;
        if (valid[i]) {
            hi_key = max(hi_key, pos[i]);
            lo_key = min(lo_key, a.window > 0 ? max(0, pos[i] - a.window + 1) : 0);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        hi_key = max(hi_key, __shfl_xor_sync(0xffffffffu, hi_key, o));
        lo_key = min(lo_key, __shfl_xor_sync(0xffffffffu, lo_key, o));
    }
    if (hi_key < 0)
        return; /* no row of this warp in the tile (uniform over the warp) */

    /* Q rows g (qa[..][0..1]) and g + 8 (qa[..][2..3]), dims permuted as the K bytes */
    uint32_t qa[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int kc = 0; kc < 2; kc++) {
            uint4 w0 = make_uint4(0, 0, 0, 0), w1 = make_uint4(0, 0, 0, 0);
            if (valid[i]) {
                const uint4 *qp = reinterpret_cast<const uint4 *>(a.q + qoff[i] + kc * 64 + 16 * t);
                w0 = qp[0];
                w1 = qp[1];
            }
            const uint32_t w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                qa[kc][jj][2 * i] = __byte_perm(w[2 * jj], w[2 * jj + 1], 0x5410);
                qa[kc][jj][2 * i + 1] = __byte_perm(w[2 * jj], w[2 * jj + 1], 0x7632);
            }
        }

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[4][4][4]; /* (32-dim group q, byte j, C fragment: rows g, g, g+8, g+8) */
#pragma unroll
    for (int q = 0; q < 4; q++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[q][j][e] = 0.0f;

    const int32_t *bt = a.block_table + (size_t)a.tok_seq[tile.x] * a.max_blocks;
    const int end = hi_key + 1;
    /* the loop bound is uniform over the warp: every lane reaches every shuffle and mma */
    for (int base = lo_key; base < end; base += 16) {
        /* K rows: keys base + 8 nt + g; columns (scales, V, P): base + {2t, 2t+1, 2t+8, 2t+9} */
        uint4 kv[2][2];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            const long long sl = key_slot(a, bt, base + 8 * nt + g, end);
            const uint8_t *kp =
                a.k + ((size_t)(sl >= 0 ? sl : 0) * a.n_kv + kvh) * kHeadDim + 16 * t;
#pragma unroll
            for (int kc = 0; kc < 2; kc++)
                kv[nt][kc] = sl >= 0 ? *reinterpret_cast<const uint4 *>(kp + kc * 64)
                                     : make_uint4(0, 0, 0, 0);
        }
        uint32_t vw[4][4];
        float ks[4], vs[4];
        int kj[4];
        bool ok[4];
#pragma unroll
        for (int ci = 0; ci < 4; ci++) {
            kj[ci] = base + 2 * t + (ci & 1) + 8 * (ci >> 1);
            const long long sl = key_slot(a, bt, kj[ci], end);
            ok[ci] = sl >= 0;
            const size_t h = (size_t)(ok[ci] ? sl : 0) * a.n_kv + kvh;
            const uint8_t *vp = a.v + h * kHeadDim + 4 * g;
#pragma unroll
            for (int q = 0; q < 4; q++)
                vw[ci][q] = ok[ci] ? *reinterpret_cast<const uint32_t *>(vp + 32 * q) : 0u;
            ks[ci] = ok[ci] ? a.k_scale[h] : 0.0f;
            vs[ci] = ok[ci] ? a.v_scale[h] : 0.0f;
        }

        float sc[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++)
                sc[nt][e] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < 2; kc++) {
                const uint32_t kw[4] = {kv[nt][kc].x, kv[nt][kc].y, kv[nt][kc].z, kv[nt][kc].w};
#pragma unroll
                for (int jj = 0; jj < 4; jj++) {
                    uint32_t lo, hi;
                    fp8_e4m3x4_to_bf16x2(kw[jj], lo, hi);
                    fp8_mma_bf16_16816(sc[nt], qa[kc][jj][0], qa[kc][jj][2], qa[kc][jj][1],
                                       qa[kc][jj][3], lo, hi);
                }
            }
        }
        /* row i (g, g + 8), column key ci: C element (nt, e) = (ci >> 1, (ci & 1) + 2 i) */
        float p[2][4], corr[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int ci = 0; ci < 4; ci++) {
                const bool see = ok[ci] && kj[ci] <= pos[i] &&
                                 (a.window <= 0 || kj[ci] > pos[i] - a.window);
                p[i][ci] = see ? sc[ci >> 1][(ci & 1) + 2 * i] * ks[ci] * a.qk_scale_log2
                               : -INFINITY;
                mx = fmaxf(mx, p[i][ci]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            /* no visible key so far: nothing to add, and no -inf - -inf */
            const float m_new = fmaxf(m[i], mx);
            const bool none = m_new == -INFINITY;
            corr[i] = none ? 1.0f : exp2f(m[i] - m_new);
            m[i] = m_new;
            float psum = 0.0f;
#pragma unroll
            for (int ci = 0; ci < 4; ci++) {
                p[i][ci] = none ? 0.0f : exp2f(p[i][ci] - m_new);
                psum += p[i][ci];
            }
            l[i] = l[i] * corr[i] + psum;
        }
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                o[q][j][0] *= corr[0];
                o[q][j][1] *= corr[0];
                o[q][j][2] *= corr[1];
                o[q][j][3] *= corr[1];
            }
        /* A of P V: rows g, g+8 x keys 2t, 2t+1, then rows g, g+8 x keys 2t+8, 2t+9 */
        const uint32_t pa0 = fp8_pack_bf16x2(p[0][0] * vs[0], p[0][1] * vs[1]);
        const uint32_t pa1 = fp8_pack_bf16x2(p[1][0] * vs[0], p[1][1] * vs[1]);
        const uint32_t pa2 = fp8_pack_bf16x2(p[0][2] * vs[2], p[0][3] * vs[3]);
        const uint32_t pa3 = fp8_pack_bf16x2(p[1][2] * vs[2], p[1][3] * vs[3]);
#pragma unroll
        for (int q = 0; q < 4; q++) {
            uint32_t b0[4], b1[4]; /* per byte j: V[keys][dim 32q + 4g + j] */
            fp8_e4m3x4_to_bf16x2(__byte_perm(vw[0][q], vw[1][q], 0x5410), b0[0], b0[1]);
            fp8_e4m3x4_to_bf16x2(__byte_perm(vw[0][q], vw[1][q], 0x7632), b0[2], b0[3]);
            fp8_e4m3x4_to_bf16x2(__byte_perm(vw[2][q], vw[3][q], 0x5410), b1[0], b1[1]);
            fp8_e4m3x4_to_bf16x2(__byte_perm(vw[2][q], vw[3][q], 0x7632), b1[2], b1[3]);
#pragma unroll
            for (int j = 0; j < 4; j++)
                fp8_mma_bf16_16816(o[q][j], pa0, pa1, pa2, pa3, b0[j], b1[j]);
        }
    }

    /* l is split over the 4 lanes of a row; m is already uniform across them. C fragment
     * of mma (q, j): column 2t -> dim 32q + 8t + j, column 2t+1 -> dim 32q + 8t + 4 + j, so
     * each lane holds 8 contiguous dims per q and row. */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float li = l[i];
        li += __shfl_xor_sync(0xffffffffu, li, 1);
        li += __shfl_xor_sync(0xffffffffu, li, 2);
        if (!valid[i])
            continue;
        const float inv = li > 0.0f ? 1.0f / li : 0.0f;
        uint4 *op = reinterpret_cast<uint4 *>(a.out + qoff[i]);
#pragma unroll
        for (int q = 0; q < 4; q++)
            op[4 * q + t] = make_uint4(fp8_pack_bf16x2(o[q][0][2 * i] * inv, o[q][1][2 * i] * inv),
                                       fp8_pack_bf16x2(o[q][2][2 * i] * inv, o[q][3][2 * i] * inv),
                                       fp8_pack_bf16x2(o[q][0][2 * i + 1] * inv,
                                                   o[q][1][2 * i + 1] * inv),
                                       fp8_pack_bf16x2(o[q][2][2 * i + 1] * inv,
                                                   o[q][3][2 * i + 1] * inv));
    }
}

int32_t max_tiles(int32_t n_tokens, int32_t n_seqs, int32_t tile_tokens)
{
    return (n_tokens + tile_tokens - 1) / tile_tokens + n_seqs;
}

size_t tiles_bytes(int32_t n_tokens, int32_t n_seqs, int32_t tile_tokens)
{
    return ((size_t)max_tiles(n_tokens, n_seqs, tile_tokens) * sizeof(int2) + 255) & ~(size_t)255;
}

} // namespace

extern "C" size_t fp8_cuda_attn_prefill_workspace(int32_t n_tokens, int32_t n_seqs,
                                                  int32_t n_heads, int32_t n_kv_heads)
{
    if (n_tokens < 1 || n_seqs < 1 || n_kv_heads < 1 || n_heads < n_kv_heads)
        return 0;
    const int32_t tile_tokens = kRows / (n_heads / n_kv_heads);
    if (tile_tokens < 1)
        return 0;
    return tiles_bytes(n_tokens, n_seqs, tile_tokens) + 3 * (size_t)n_seqs * sizeof(int32_t);
}

extern "C" int fp8_cuda_attn_prefill(uint16_t *out, const uint16_t *q,
                                     const struct fp8_cuda_kv_cache *kv,
                                     const int32_t *positions, const int32_t *tok_seq,
                                     const int32_t *block_table, int32_t n_tokens,
                                     int32_t n_seqs, int32_t n_heads,
                                     int32_t max_blocks_per_seq, float sm_scale,
                                     int32_t window, void *workspace, size_t workspace_bytes,
                                     void *stream, struct fp8_err *err)
{
    if (!kv || n_tokens < 1 || n_seqs < 1 || n_heads < 1 || kv->n_kv_heads < 1 ||
        n_heads % kv->n_kv_heads || kv->head_dim != kHeadDim ||
        n_heads / kv->n_kv_heads > kMaxGroup)
        return fp8_err_set(err, -EINVAL,
                           "attn_prefill(n_tokens=%d n_seqs=%d n_heads=%d n_kv_heads=%d "
                           "head_dim=%d): supported are head_dim %d and up to %d query heads "
                           "per kv head", (int)n_tokens, (int)n_seqs, (int)n_heads,
                           kv ? (int)kv->n_kv_heads : 0, kv ? (int)kv->head_dim : 0, kHeadDim,
                           kMaxGroup);
    if (!out || !q || !kv->k || !kv->v || !kv->k_scale || !kv->v_scale || !positions ||
        !tok_seq || !block_table || kv->block_size < 1 || kv->n_blocks < 1 ||
        max_blocks_per_seq < 1)
        return fp8_err_set(err, -EINVAL,
                           "attn_prefill(n_tokens=%d n_heads=%d): NULL tensor, or empty cache "
                           "geometry (n_blocks=%d block_size=%d max_blocks_per_seq=%d)",
                           (int)n_tokens, (int)n_heads, (int)kv->n_blocks,
                           (int)kv->block_size, (int)max_blocks_per_seq);
    const size_t need = fp8_cuda_attn_prefill_workspace(n_tokens, n_seqs, n_heads,
                                                        kv->n_kv_heads);
    if (!workspace || workspace_bytes < need)
        return fp8_err_set(err, -EINVAL,
                           "attn_prefill(n_tokens=%d n_seqs=%d): workspace of %zu bytes "
                           "needed, %zu given", (int)n_tokens, (int)n_seqs, need,
                           workspace ? workspace_bytes : (size_t)0);
    const int32_t group = n_heads / kv->n_kv_heads, tile_tokens = kRows / group;
    const int32_t tiles = max_tiles(n_tokens, n_seqs, tile_tokens);
    if (tiles > INT32_MAX / 2)
        return fp8_err_set(err, -EINVAL, "attn_prefill(n_tokens=%d n_seqs=%d): too many tiles",
                           (int)n_tokens, (int)n_seqs);
    cudaStream_t st = (cudaStream_t)stream;
    int2 *tl = (int2 *)workspace;
    int32_t *seq_ws =
        (int32_t *)((uint8_t *)workspace + tiles_bytes(n_tokens, n_seqs, tile_tokens));
    prefill_tiles_kernel<<<1, 1024, 0, st>>>(tl, tiles, seq_ws, tok_seq, n_tokens, n_seqs,
                                             tile_tokens);
    int rc = fp8_cuda_check(cudaGetLastError(), err, "attn_prefill tiles(n_tokens=%d n_seqs=%d)",
                            (int)n_tokens, (int)n_seqs);
    if (rc < 0)
        return rc;
    prefill_args a;
    a.out = out;
    a.q = q;
    a.k = kv->k;
    a.v = kv->v;
    a.k_scale = kv->k_scale;
    a.v_scale = kv->v_scale;
    a.positions = positions;
    a.tok_seq = tok_seq;
    a.block_table = block_table;
    a.tiles = tl;
    a.n_heads = n_heads;
    a.n_kv = kv->n_kv_heads;
    a.group = group;
    a.n_blocks = kv->n_blocks;
    a.block_size = kv->block_size;
    a.max_blocks = max_blocks_per_seq;
    a.window = window;
    a.qk_scale_log2 = sm_scale * 1.4426950408889634f;
    attn_prefill_kernel<<<dim3((unsigned)tiles, (unsigned)kv->n_kv_heads), kWarps * 32, 0, st>>>(a);
    return fp8_cuda_check(cudaGetLastError(), err,
                          "attn_prefill(n_tokens=%d n_seqs=%d n_heads=%d n_kv_heads=%d "
                          "window=%d)", (int)n_tokens, (int)n_seqs, (int)n_heads,
                          (int)kv->n_kv_heads, (int)window);
}
