/* FP8 (e4m3) weight-streaming GEMV / skinny GEMM for decode: y = x W^T * scale.
 *
 * Decode reads every weight byte once per step, so the kernel is built around the weight
 * stream: each thread issues 16-byte loads that bypass L1 (4 x 16 B = 64 contiguous bytes
 * per weight row per 4 lanes, whole 32-byte sectors), 128 bytes in flight per thread.
 * The multiply runs on the tensor cores (mma.m16n8k16 bf16 -> fp32), because at 16 rows a
 * weight byte costs 16 FMAs, more than the CUDA cores can issue at HBM rate:
 * - A = 16 output channels x 16 in-dims of W, e4m3 widened to bf16 exactly (the bits move
 *   into place, giving value * 2^-120, and one bf16 multiply by 2^120 restores it,
 *   subnormals included);
 * - B = 16 in-dims x 8 activation rows, bf16 as stored;
 * - the in-dim order inside a 64-dim chunk is permuted identically for A and B so that
 *   each thread's 16 contiguous weight bytes land directly in its own fragments (a dot
 *   product does not care about the order of its terms).
 * A block's 8 warps split the in-dims; their partial sums meet in shared memory, in a
 * fixed order (deterministic), and the per-channel scale is applied once at the end.
 *
 * On sm_90 the kernel is launched as a programmatic dependent of the previous kernel in
 * the stream: weights do not depend on it, so each thread issues its first iteration's
 * weight loads while the previous kernel drains, and waits (griddepcontrol.wait) only
 * before it reads x. That hides the launch gap and the ramp-up of every GEMV in a decode
 * step, which at 5-50 us per GEMV is a large share of the time.
 *
 * Fusions (fp8_cuda_gemv_e4m3_fused), each removing a small kernel and its gap from the
 * decode step:
 * - RMSNorm prologue (up to 8 rows): after waiting for the previous kernel each block
 *   stages bf16(x * w') of the rows in shared memory, summing each row's squares on the
 *   way, and applies 1/rms once at the end: y = scale * inv_rms * sum bf16(x * w') W.
 *   (The unfused path rounds x * inv_rms * w' to bf16 instead: the same 2^-9 relative
 *   rounding at a different place.) Until the `decode2` branch the norm ran inside the
 *   loop, on every iteration (+4 us on qkv at 1 row, H100).
 * - GLU epilogue: the block's two 16-channel tiles are gate rows c.. and up rows
 *   I + c.. of the fused gate_up weight, so the epilogue has both halves and writes
 *   act(gate) * up with exactly the unfused rounding (bf16 gate and up, then bf16 out).
 * - Residual epilogue: y += bf16(result), rounded as the unfused add (bf16 of the sum of
 *   the two bf16 values); every y element is read and written by one thread.
 * (A norm in the tail of the residual GEMV, done by its last block, measured slower
 * still: +5.7 us at 1 row, +11.6 at 16.) */
#include <limits.h>

#include "kernels/cuda/cuda_common.cuh"

namespace {

constexpr int kWarps = 8; /* per block, splitting the in-dims */

__device__ __forceinline__ uint4 load_stream16(const uint8_t *p)
{
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

__device__ __forceinline__ uint32_t u4_word(const uint4 &v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* One 64-in-dim chunk: this thread holds bytes [16t, 16t+16) of the chunk for weight rows
 * g and g+8 of each m-tile (wv) and loads the matching 16 activations of row g of each
 * n-tile. Word jj of the weight bytes feeds mma jj. */
/* NORM: xrow points into the block's shared copy of the normalized rows. */
template <int MT, int NT, bool NORM>
__device__ __forceinline__ void gemv_chunk(float (&acc)[MT][NT][4], const uint4 (&wv)[MT][2],
                                           const uint16_t *const (&xrow)[NT],
                                           const bool (&xok)[NT], bool tok, size_t k)
{
    uint4 xv[NT][2];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        if (xok[j] && tok) {
            const uint4 *p = reinterpret_cast<const uint4 *>(xrow[j] + k);
            xv[j][0] = NORM ? p[0] : __ldg(p);
            xv[j][1] = NORM ? p[1] : __ldg(p + 1);
        } else {
            xv[j][0] = make_uint4(0, 0, 0, 0);
            xv[j][1] = make_uint4(0, 0, 0, 0);
        }
    }
#pragma unroll
    for (int jj = 0; jj < 4; jj++) {
        uint32_t a[MT][4];
#pragma unroll
        for (int i = 0; i < MT; i++) {
            fp8_e4m3x4_to_bf16x2(u4_word(wv[i][0], jj), a[i][0], a[i][2]);
            fp8_e4m3x4_to_bf16x2(u4_word(wv[i][1], jj), a[i][1], a[i][3]);
        }
#pragma unroll
        for (int j = 0; j < NT; j++) {
            uint32_t x0 = u4_word(xv[j][jj >> 1], (jj & 1) * 2);
            uint32_t x1 = u4_word(xv[j][jj >> 1], (jj & 1) * 2 + 1);
            uint32_t b0 = __byte_perm(x0, x1, 0x5410); /* in-dims 0, 2 of the word */
            uint32_t b1 = __byte_perm(x0, x1, 0x7632); /* in-dims 1, 3 */
#pragma unroll
            for (int i = 0; i < MT; i++)
                fp8_mma_bf16_16816(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b0, b1);
        }
    }
}

/* One full iteration: U chunks of 64 in-dims starting at chunk c (c + (U-1) * kWarps must
 * be < nfull). h < H is known at compile time: the second row of an 8-channel tile (H = 1)
 * is a constant zero, no load and no registers. */
template <int MT, int NT, int U, int H>
__device__ __forceinline__ void gemv_load_iter(uint4 (&wv)[U][MT][2],
                                               const uint8_t *const (&wrow)[MT][2],
                                               const bool (&wok)[MT][2], int c)
{
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                wv[u][i][h] = h < H && wok[i][h]
                                  ? load_stream16(wrow[i][h] + (size_t)(c + u * kWarps) * 64)
                                  : make_uint4(0, 0, 0, 0);
}

struct gemv_args {
    void *y;
    const uint16_t *x;
    const uint8_t *w;
    const float *scale;
    const float *norm_w; /* NORM: (K) */
    int rows, K, N;      /* N: weight rows (2 I with glu) */
    float eps;
    int plus_one, out_f32, add, glu, prefetch; /* glu: 0 none, 1 + enum fp8_cuda_glu_act */
    /* The next norm's preparation (with add, rows <= 8): xw (rows, N) = bf16(y' * w'),
     * y' the updated residual and w' = out_norm_w (+ 1 with plus_one); ss_out (rows, n_ss)
     * the sums of squares of y' over each 16 channels. */
    const float *out_norm_w;
    uint16_t *xw;
    float *ss_out;
    /* Its use (rows <= 8): x is such an xw, and 1 / rms comes from ss_in (rows, n_ss) */
    const float *ss_in;
    int n_ss; /* ceil(K / 16) with ss_in, else ceil(N / 16): a GEMV has one or the other */
};

/* inv_rms[r] = 1 / sqrt(ss_r / K + eps) for the block's rows, ss_r the sum over the block
 * of each thread's share ss[r] (warp sums, then the warps in a fixed order). Synchronizes
 * once, after the warp sums: the caller syncs again before reading inv_rms. */
__device__ __forceinline__ void gemv_inv_rms(const float (&ss)[8], int rows, int K, float eps,
                                             float *inv_rms)
{
    __shared__ float ss_warp[kWarps][8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < 8; r++) {
        if (r >= rows) /* rows is the same for the whole block */
            continue;
        const float v = fp8_warp_sum(ss[r]);
        if (lane == 0)
            ss_warp[warp][r] = v;
    }
    __syncthreads();
    if ((int)threadIdx.x < rows) {
        float tot = 0.0f;
#pragma unroll
        for (int v = 0; v < kWarps; v++)
            tot += ss_warp[v][threadIdx.x];
        inv_rms[threadIdx.x] = 1.0f / sqrtf(tot / (float)K + eps); /* as rmsnorm */
    }
}

/* NORM (rows <= 8): the block stages bf16(x * w') of its rows in shared memory once (xs,
 * rows of K + 8 elements: 16 bytes of padding between rows), summing each row's squares
 * on the way (one warp-sum per row, the warps in a fixed order), so the weight loop reads
 * x as without a norm and the epilogue applies inv_rms. Every block repeats this 8 KB-a-row
 * prologue (from L2) instead of paying the norm's arithmetic and weight loads on every
 * iteration of the loop. Ends with the block synchronized. */
__device__ __forceinline__ void gemv_stage_norm(const gemv_args &a, uint16_t *xs, float *inv_rms)
{
    const int K = a.K, rows = a.rows, xs_stride = K + 8;
    const bool plus_one = a.plus_one != 0;
    float ss[8];
#pragma unroll
    for (int r = 0; r < 8; r++)
        ss[r] = 0.0f;
    /* all rows' loads of a piece of 8 columns go out together */
    for (int i = threadIdx.x * 8; i < K; i += kWarps * 32 * 8) {
        const float4 w0 = __ldg(reinterpret_cast<const float4 *>(a.norm_w + i));
        const float4 w1 = __ldg(reinterpret_cast<const float4 *>(a.norm_w + i) + 1);
        float wf[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
        if (plus_one) {
#pragma unroll
            for (int e = 0; e < 8; e++)
                wf[e] += 1.0f;
        }
        uint4 v[8];
#pragma unroll
        for (int r = 0; r < 8; r++)
            if (r < rows)
                v[r] = __ldg(reinterpret_cast<const uint4 *>(a.x + (size_t)r * K + i));
#pragma unroll
        for (int r = 0; r < 8; r++) {
            if (r >= rows)
                continue;
            const uint32_t in[4] = {v[r].x, v[r].y, v[r].z, v[r].w};
            uint32_t o[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float x0 = __uint_as_float(in[e] << 16),
                            x1 = __uint_as_float(in[e] & 0xffff0000u);
                ss[r] = fmaf(x0, x0, ss[r]);
                ss[r] = fmaf(x1, x1, ss[r]);
                o[e] = (uint32_t)fp8_f32_to_bf16_bits(x0 * wf[2 * e]) |
                       (uint32_t)fp8_f32_to_bf16_bits(x1 * wf[2 * e + 1]) << 16;
            }
            *reinterpret_cast<uint4 *>(xs + (size_t)r * xs_stride + i) =
                make_uint4(o[0], o[1], o[2], o[3]);
        }
    }
    gemv_inv_rms(ss, rows, K, a.eps, inv_rms);
    __syncthreads(); /* inv_rms and the staged rows */
}

/* This thread's weight rows (g and g + 8 of each 16-channel tile, g alone of an 8-channel
 * one (H = 1); with glu the tiles are gate channels c0.. and the up rows half + c0..), at
 * its 16 bytes of each 64-byte chunk, and which of them exist. */
template <int MT, int H>
__device__ __forceinline__ void gemv_weight_rows(const uint8_t *(&wrow)[MT][2], bool (&wok)[MT][2],
                                                 const gemv_args &a, int c0)
{
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3, half = a.N / 2;
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int ch = a.glu ? c0 + g + 8 * h : c0 + 8 * H * i + g + 8 * h;
            const int row = a.glu ? i * half + ch : ch;
            wok[i][h] = h < H && (a.glu ? ch < half : ch < a.N);
            wrow[i][h] = a.w + (size_t)(wok[i][h] ? row : 0) * a.K + 16 * t;
        }
    }
}

/* Where this thread's activation rows start (the staged norm copy with NORM) and
 * which of them exist. */
template <int NT, bool NORM>
__device__ __forceinline__ void gemv_x_rows(const uint16_t *(&xrow)[NT], bool (&xok)[NT],
                                            const gemv_args &a, const uint16_t *xs)
{
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        const int n = 8 * j + g;
        xok[j] = n < a.rows;
        xrow[j] = NORM ? xs + (size_t)(xok[j] ? n : 0) * (a.K + 8) + 16 * t
                       : a.x + (size_t)(xok[j] ? n : 0) * a.K + 16 * t;
    }
}

/* Output o of a block's epilogue (o < (glu ? 1 : MT) * NT * 128): its slot idx, lane l
 * in the reduction buffer, and its channel and activation row (none, n past every row,
 * for the zero rows g + 8 of an 8-channel tile). */
template <int NT, int H>
__device__ __forceinline__ void gemv_out_pos(int o, int c0, int &idx, int &l, int &ch, int &n)
{
    idx = o >> 5;
    l = o & 31;
    const int r = idx & 3, i = (idx >> 2) / NT, j = (idx >> 2) % NT;
    ch = c0 + 8 * H * i + (l >> 2) + ((r & 2) ? 8 : 0);
    n = H == 1 && (r & 2) ? INT_MAX : 8 * j + 2 * (l & 3) + (r & 1);
}

/* The operands of this thread's first output (o = threadIdx.x) that the epilogue would
 * otherwise fetch from L2 at the end of the block, on the critical path of the grid's
 * last blocks: the scales and norm weight (constant: fetched before waiting for the
 * previous kernel) and the residual (fetched right after). */
struct gemv_early {
    bool ok;
    float scale, scale_up, norm_w;
    uint16_t res;
};

template <int MT, int NT, int H>
__device__ __forceinline__ gemv_early gemv_early_const(const gemv_args &a, int c0)
{
    gemv_early e = {false, 0.0f, 0.0f, 0.0f, 0};
    if (NT > 2) /* more than 16 rows: the registers are the activation tiles' */
        return e;
    int idx, l, ch, n;
    gemv_out_pos<NT, H>(threadIdx.x, c0, idx, l, ch, n);
    const int outs = (a.glu ? 1 : MT) * NT * 4 * 32, half = a.N / 2;
    e.ok = (int)threadIdx.x < outs && n < a.rows && (a.glu ? ch < half : ch < a.N);
    if (!e.ok)
        return e;
    e.scale = __ldg(a.scale + ch);
    if (a.glu)
        e.scale_up = __ldg(a.scale + half + ch);
    if (a.xw)
        e.norm_w = __ldg(a.out_norm_w + ch);
    return e;
}

template <int NT, int H>
__device__ __forceinline__ void gemv_early_res(const gemv_args &a, gemv_early &e, int c0)
{
    int idx, l, ch, n;
    gemv_out_pos<NT, H>(threadIdx.x, c0, idx, l, ch, n);
    if (e.ok && a.add)
        e.res = static_cast<const uint16_t *>(a.y)[(size_t)n * a.N + ch];
}

/* ss_in: this thread's share of each row's sum of squares (issued right after the wait,
 * summed at the end, so the loads hide behind the weight loop); a fixed order. */
__device__ __forceinline__ void gemv_ss_load(const gemv_args &a, float (&part)[8])
{
#pragma unroll
    for (int n = 0; n < 8; n++) {
        part[n] = 0.0f;
        if (n < a.rows)
            for (int i = threadIdx.x; i < a.n_ss; i += kWarps * 32)
                part[n] += a.ss_in[(size_t)n * a.n_ss + i];
    }
}

/* The block's warps hold partial sums over their in-dims: they meet in red
 * ((kWarps, MT * NT * 4, 32) floats) in a fixed order (deterministic), and the per-channel
 * scale, 1 / rms and the glu or residual epilogue are applied once. */
template <int MT, int NT, bool NORM, int H>
__device__ __forceinline__ void gemv_reduce_store(const gemv_args &a, const float (&acc)[MT][NT][4],
                                                  float *red, float *inv_rms, int c0,
                                                  const float (&ss_part)[8], const gemv_early &e)
{
    constexpr int kIdx = MT * NT * 4;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int rows = a.rows, N = a.N, half = N / 2;
    const bool rms = NORM || a.ss_in;
    __shared__ float sq[8][16 * MT]; /* xw: the squares of this block's outputs */
    if (a.ss_in)
        gemv_inv_rms(ss_part, rows, a.K, a.eps, inv_rms);
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                red[(warp * kIdx + (i * NT + j) * 4 + r) * 32 + lane] = acc[i][j][r];
    __syncthreads(); /* the partial sums (and inv_rms) */
    const int outs = (a.glu ? 1 : MT) * NT * 4 * 32;
    for (int o = threadIdx.x; o < outs; o += kWarps * 32) {
        int idx, l, ch, n;
        gemv_out_pos<NT, H>(o, c0, idx, l, ch, n);
        const bool first = o == (int)threadIdx.x && e.ok; /* operands fetched early */
        float s = 0.0f;
#pragma unroll
        for (int v = 0; v < kWarps; v++)
            s += red[(v * kIdx + idx) * 32 + l];
        if (n >= rows)
            continue;
        if (rms)
            s *= inv_rms[n];
        if (a.glu) {
            if (ch >= half)
                continue;
            /* the up channel: same place in the second tile */
            float su = 0.0f;
#pragma unroll
            for (int v = 0; v < kWarps; v++)
                su += red[(v * kIdx + idx + NT * 4) * 32 + l];
            if (rms)
                su *= inv_rms[n];
            const float sg = first ? e.scale : a.scale[ch];
            const float sup = first ? e.scale_up : a.scale[half + ch];
            const float gate = fp8_bf16_bits_to_f32(fp8_f32_to_bf16_bits(s * sg));
            const float up = fp8_bf16_bits_to_f32(fp8_f32_to_bf16_bits(su * sup));
            static_cast<uint16_t *>(a.y)[(size_t)n * half + ch] =
                fp8_f32_to_bf16_bits(fp8_glu_act_f32(gate, a.glu - 1) * up);
            continue;
        }
        if (ch >= N)
            continue;
        const size_t yi = (size_t)n * N + ch;
        const float sc = first ? e.scale : a.scale[ch];
        if (a.out_f32) {
            static_cast<float *>(a.y)[yi] = s * sc;
            continue;
        }
        uint16_t b = fp8_f32_to_bf16_bits(s * sc);
        if (a.add) {
            const uint16_t res = first ? e.res : static_cast<const uint16_t *>(a.y)[yi];
            b = fp8_f32_to_bf16_bits(fp8_bf16_bits_to_f32(b) + fp8_bf16_bits_to_f32(res));
        }
        static_cast<uint16_t *>(a.y)[yi] = b;
        if (a.xw) {
            const float v = fp8_bf16_bits_to_f32(b);
            const float wn = (first ? e.norm_w : a.out_norm_w[ch]) + (a.plus_one ? 1.0f : 0.0f);
            a.xw[yi] = fp8_f32_to_bf16_bits(v * wn); /* as the staged norm's bf16(x * w') */
            sq[n][ch - c0] = v * v;
        }
    }
    if (a.xw) {
        __syncthreads();
        /* one sum per row and 16-channel tile, in channel order */
        for (int o = threadIdx.x; o < rows * MT; o += kWarps * 32) {
            const int n = o / MT, i = o % MT;
            if (c0 + 16 * i >= N)
                continue;
            float s = 0.0f;
            for (int q = 0; q < 16 && c0 + 16 * i + q < N; q++)
                s += sq[n][16 * i + q];
            a.ss_out[(size_t)n * a.n_ss + c0 / 16 + i] = s;
        }
    }
}

/* Three blocks an SM up to 8 rows (at most 85 registers: a few bytes of spill), two
 * above and with the staged norm: at batch 1 on H100 three gave 286.6 / 285.5 tok/s
 * against 283.5 / 282.6 (Qwen3-8B, one call), at 16 rows the spills cost 11 %.
 * UW: chunks per iteration instead of the default (whole_slab). */
template <int MT, int NT, bool NORM, int UW = 0, int H = 2>
__global__ void __launch_bounds__(kWarps * 32, NT == 1 && !NORM && !UW ? 3 : 2)
    gemv_e4m3_kernel(const gemv_args a)
{
    /* chunks per iteration: 128 weight bytes in flight per thread (twice the chunks with
     * 8-channel tiles), fewer where the wide activation tiles (rows > 16) need the
     * registers */
    constexpr int U =
        UW ? UW : (MT * NT >= 8 ? 1 : MT * NT == 4 && NT == 4 ? 2 : 4 / MT) * (2 / H);
    const int warp = threadIdx.x >> 5, t = threadIdx.x & 3;
    const int K = a.K;
    const int c0 = a.glu ? blockIdx.x * 8 * H : blockIdx.x * 8 * H * MT;

    const uint8_t *wrow[MT][2];
    bool wok[MT][2];
    gemv_weight_rows<MT, H>(wrow, wok, a, c0);
    const int nfull = K >> 6;
    int c = warp;

    /* Weights do not depend on the previous kernel: the first iteration's loads (and an
     * optional L2 prefetch of the rows' start) go out before waiting for it. Without a
     * programmatic launch the wait returns at once. */
    uint4 wv0[U][MT][2];
    const bool early = c + (U - 1) * kWarps < nfull;
    if (early)
        gemv_load_iter<MT, NT, U, H>(wv0, wrow, wok, c);
    gemv_early ep = gemv_early_const<MT, NT, H>(a, c0);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (a.prefetch > 0 && threadIdx.x < 16 * MT && !a.glu && c0 + (int)threadIdx.x < a.N) {
        const uint32_t bytes = (uint32_t)(K < a.prefetch ? K : a.prefetch);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;"
                     :
                     : "l"(a.w + (size_t)(c0 + threadIdx.x) * K), "r"(bytes)
                     : "memory");
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    float ss_part[8];
    if (a.ss_in)
        gemv_ss_load(a, ss_part);
    gemv_early_res<NT, H>(a, ep, c0);

    extern __shared__ uint4 stage_raw[];
    uint16_t *const xs = reinterpret_cast<uint16_t *>(stage_raw);
    __shared__ float inv_rms[8];
    if (NORM)
        gemv_stage_norm(a, xs, inv_rms);

    const uint16_t *xrow[NT];
    bool xok[NT];
    gemv_x_rows<NT, NORM>(xrow, xok, a, xs);
    float acc[MT][NT][4] = {};

    if (early) {
#pragma unroll
        for (int u = 0; u < U; u++)
            gemv_chunk<MT, NT, NORM>(acc, wv0[u], xrow, xok, true, (size_t)(c + u * kWarps) * 64);
        c += U * kWarps;
    }
    /* Single-buffered on purpose: a double-buffered loop (next iteration's loads before
     * this one's mma) measured 5-30% slower on H100 (bench/RESULTS.md, 2026-11-25). */
    for (; c + (U - 1) * kWarps < nfull; c += U * kWarps) {
        uint4 wv[U][MT][2];
        gemv_load_iter<MT, NT, U, H>(wv, wrow, wok, c);
#pragma unroll
        for (int u = 0; u < U; u++)
            gemv_chunk<MT, NT, NORM>(acc, wv[u], xrow, xok, true, (size_t)(c + u * kWarps) * 64);
    }
    for (; c <= nfull; c += kWarps) {
        /* the last chunk may be partial (K % 64 of 16, 32 or 48): whole 16-byte pieces only */
        const bool tok = (size_t)c * 64 + 16 * t + 16 <= (size_t)K;
        if (c == nfull && (K & 63) == 0)
            break;
        uint4 wv[MT][2];
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                wv[i][h] = wok[i][h] && tok ? load_stream16(wrow[i][h] + (size_t)c * 64)
                                            : make_uint4(0, 0, 0, 0);
        gemv_chunk<MT, NT, NORM>(acc, wv, xrow, xok, tok, (size_t)c * 64);
    }

    __shared__ float red[kWarps * MT * NT * 4 * 32];
    gemv_reduce_store<MT, NT, NORM, H>(a, acc, red, inv_rms, c0, ss_part, ep);
}

/* A residual GEMV up to 8 rows whose block's whole slab (16 rows of K <= 4096 bytes) fits
 * one iteration in registers (128 of them, two blocks an SM) loads all of its weights
 * before it waits. In a decode step that is the attention output projection, the
 * programmatic dependent of the attention kernel, which leaves HBM idle: its 256 blocks
 * are resident during attention and stream o's 16.8 MB then. H100, Qwen3-8B, one call,
 * three rounds: 290.6 / 289.1 / 291.9 vs 286.9 / 288.3 / 288.2 tok/s at batch 1, 1130 /
 * 1119 / 1127 vs 1110 / 1112 / 1106 at 4. */
constexpr int kWholeChunks = 8;

bool whole_slab(const gemv_args &a)
{
    return a.add && !a.norm_w && a.rows <= 8 && a.K <= kWholeChunks * kWarps * 64;
}

int n_tiles_for(int rows)
{
    return rows <= 8 ? 1 : rows <= 16 ? 2 : rows <= 32 ? 4 : 8;
}

/* Up to 8 rows the glu GEMV (gate_up) and the fp32 one (the vocabulary projection) take
 * 8-channel tiles (8 weight rows a tile, the mma rows g + 8 zero): twice the blocks, each
 * half as long, so that the grid's last blocks, which start as the first ones finish at
 * uneven times, end sooner. With 16-channel tiles Qwen3-8B's gate_up is 768 blocks, under
 * two waves of three a multiprocessor, and took ~42 us for 101 MB (80 % of the copy
 * bandwidth) in a batch-1 step. H100, one call each: gate_up 296.4 / 296.4 / 296.4 vs
 * 289.7 / 291.0 / 291.0 tok/s at batch 1, 1135 vs 1124 at 4; lm_head 299.6 / 299.8 /
 * 299.5 vs 299.2 / 297.6 / 298.6. (The residual GEMV of down, 256 blocks in one wave,
 * lost with them: 280.5 vs 290.3; 32-channel glu tiles, one wave of 384 blocks: 282.3 vs
 * 291.4.) */
bool half_tiles(const gemv_args &a, int mt, int nt)
{
    return nt == 1 && !a.norm_w && ((a.glu && mt == 2) || (a.out_f32 && mt == 1));
}

template <int MT, int NT>
cudaError_t launch(const gemv_args &a, bool overlap, cudaStream_t stream)
{
    cudaLaunchConfig_t lc = {};
    const bool half = half_tiles(a, MT, NT);
    const int ch = a.glu ? a.N / 2 : a.N, per = (half ? 8 : 16) * (a.glu ? 1 : MT);
    lc.gridDim = dim3((unsigned)((ch + per - 1) / per));
    lc.blockDim = dim3(kWarps * 32);
    lc.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = &attr;
    lc.numAttrs = overlap ? 1 : 0;
    if (NT == 1 && a.norm_w) {
        const size_t stage = fp8_cuda_gemv_norm_stage_bytes(a.rows, a.K);
        cudaError_t e = cudaFuncSetAttribute(gemv_e4m3_kernel<MT, 1, true>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)stage);
        if (e != cudaSuccess)
            return e;
        lc.dynamicSmemBytes = stage;
        return cudaLaunchKernelEx(&lc, gemv_e4m3_kernel<MT, 1, true>, a);
    }
    if constexpr (MT == 2 && NT == 1) {
        if (half)
            return cudaLaunchKernelEx(&lc, gemv_e4m3_kernel<2, 1, false, 0, 1>, a);
    }
    if constexpr (MT == 1 && NT == 1) {
        if (half)
            return cudaLaunchKernelEx(&lc, gemv_e4m3_kernel<1, 1, false, 0, 1>, a);
        if (whole_slab(a))
            return cudaLaunchKernelEx(&lc, gemv_e4m3_kernel<1, 1, false, kWholeChunks>, a);
    }
    return cudaLaunchKernelEx(&lc, gemv_e4m3_kernel<MT, NT, false>, a);
}

} // namespace

size_t fp8_cuda_gemv_norm_stage_bytes(int32_t rows, int32_t in)
{
    return rows < 1 || in < 1 ? 0 : (size_t)rows * ((size_t)in + 8) * sizeof(uint16_t);
}

int fp8_cuda_gemv_e4m3_cfg_pick(struct fp8_cuda_gemv_cfg *cfg, int32_t rows, int32_t in,
                                int32_t out, struct fp8_err *err)
{
    if (rows < 1 || rows > FP8_CUDA_GEMV_MAX_ROWS || in < 1 || out < 1)
        return fp8_err_set(err, -EINVAL, "gemv_e4m3: no configuration for rows=%d in=%d out=%d",
                           (int)rows, (int)in, (int)out);
    int dev = 0, major = 0;
    int rc = fp8_cuda_check(cudaGetDevice(&dev), err, "cudaGetDevice");
    if (rc == 0)
        rc = fp8_cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
                            err, "cudaDeviceGetAttribute(compute capability)");
    if (rc < 0)
        return rc;
    /* Measured on H100 (bench/RESULTS.md): 16 channels per block win for 1..16 rows (more,
     * smaller blocks balance the SMs and start faster); 32 channels win for 17..32 rows,
     * where each activation tile is then re-read half as often. Above 32 rows only 16. */
    const int nt = n_tiles_for(rows);
    cfg->m_tiles = nt == 4 ? 2 : 1;
    /* 9..16 rows: 32 channels also win when the layer is wider than deep (qkv 4096 ->
     * 6144: 16.5 vs 19.4 us; gate_up 46.2 vs 47.8), not for o and down (14.1 vs 13.5,
     * 31.5 vs 26.5) nor the vocabulary projection (equal, or 16 us slower in an earlier
     * run): H100, bench/RESULTS.md */
    if (nt == 2 && out > in && out <= 8 * in)
        cfg->m_tiles = 2;
    cfg->overlap = major >= 9;
    cfg->prefetch = 0;
    return 0;
}

int fp8_cuda_gemv_e4m3_fused(void *y, int32_t y_f32, const uint16_t *x, const uint8_t *w,
                             const float *scale, int32_t rows, int32_t in, int32_t out,
                             const struct fp8_cuda_gemv_fuse *fuse,
                             const struct fp8_cuda_gemv_cfg *cfg, void *stream,
                             struct fp8_err *err)
{
    if (!y || !x || !w || !scale)
        return fp8_err_set(err, -EINVAL, "gemv_e4m3(rows=%d in=%d out=%d): NULL tensor",
                           (int)rows, (int)in, (int)out);
    if (rows < 1 || rows > FP8_CUDA_GEMV_MAX_ROWS)
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): rows must be 1..%d", (int)rows,
                           (int)in, (int)out, FP8_CUDA_GEMV_MAX_ROWS);
    if (in < 16 || in % 16 != 0 || out < 1)
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): in must be a positive multiple "
                           "of 16 (16-byte weight rows) and out >= 1",
                           (int)rows, (int)in, (int)out);
    if (((uintptr_t)x | (uintptr_t)w) & 15)
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): x and w must be 16-byte aligned",
                           (int)rows, (int)in, (int)out);
    gemv_args a;
    a.y = y;
    a.x = x;
    a.w = w;
    a.scale = scale;
    a.norm_w = fuse ? fuse->norm_w : NULL;
    a.rows = rows;
    a.K = in;
    a.N = out;
    a.eps = fuse ? fuse->eps : 0.0f;
    a.plus_one = fuse && fuse->plus_one;
    a.out_f32 = y_f32 != 0;
    a.add = fuse && fuse->add;
    a.glu = fuse && fuse->glu ? 1 + (int)fuse->glu_act : 0;
    a.out_norm_w = fuse ? fuse->out_norm_w : NULL;
    a.xw = fuse && fuse->out_norm_w ? fuse->out_xw : NULL;
    a.ss_out = fuse && fuse->out_norm_w ? fuse->out_ss : NULL;
    a.ss_in = fuse ? fuse->in_ss : NULL;
    a.n_ss = a.ss_in ? (in + 15) / 16 : (out + 15) / 16;
    if (fuse && (fuse->out_norm_w || fuse->in_ss) &&
        (rows > 8 || (fuse->out_norm_w && (!a.add || !a.xw || !a.ss_out)) ||
         (fuse->in_ss && (a.norm_w || fuse->out_norm_w))))
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d out_norm=%s in_ss=%s): the norm "
                           "prepared in the epilogue needs at most 8 rows, add and both "
                           "outputs; its use at most 8 rows, no norm_w and no out_norm "
                           "(one GEMV prepares a norm or applies one)",
                           (int)rows, (int)in, (int)out, a.out_norm_w ? "yes" : "no",
                           a.ss_in ? "yes" : "no");
    if (fuse && (!(a.eps >= 0.0f) || (a.norm_w && ((uintptr_t)a.norm_w & 15)) ||
                 (a.glu && (out % 2 || a.out_f32 || a.add || rows > 32 ||
                            (fuse->glu_act != FP8_CUDA_GLU_SILU &&
                             fuse->glu_act != FP8_CUDA_GLU_GELU_TANH))) ||
                 (a.add && a.out_f32)))
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d norm=%s glu=%d add=%d): unsupported "
                           "fusion (eps >= 0, 16-byte aligned norm weight; glu needs an even "
                           "out, at most 32 rows, bf16 y and no add; add needs bf16 y)",
                           (int)rows, (int)in, (int)out, a.norm_w ? "yes" : "no", (int)a.glu,
                           (int)a.add);
    if (a.norm_w && (rows > 8 || fp8_cuda_gemv_norm_stage_bytes(rows, in) >
                                     FP8_CUDA_GEMV_NORM_STAGE_MAX))
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): the norm inside the GEMV needs at "
                           "most 8 rows of at most %d staged bytes (%zu here)",
                           (int)rows, (int)in, (int)out, FP8_CUDA_GEMV_NORM_STAGE_MAX,
                           fp8_cuda_gemv_norm_stage_bytes(rows, in));
    struct fp8_cuda_gemv_cfg picked;
    if (!cfg) {
        int rc = fp8_cuda_gemv_e4m3_cfg_pick(&picked, rows, in, out, err);
        if (rc < 0)
            return rc;
        if (a.glu)
            picked.m_tiles = 2; /* the gate tile and its up tile */
        cfg = &picked;
    }
    const int nt = n_tiles_for(rows), mt = cfg->m_tiles;
    const bool ov = cfg->overlap != 0;
    if (a.glu && mt != 2)
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): glu needs m_tiles 2 (got %d)",
                           (int)rows, (int)in, (int)out, (int)mt);
    if (cfg->prefetch < 0 || cfg->prefetch % 16 != 0 || cfg->prefetch > (1 << 20))
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): prefetch=%d must be a multiple of "
                           "16 in 0..1 MiB",
                           (int)rows, (int)in, (int)out, (int)cfg->prefetch);
    a.prefetch = ov ? cfg->prefetch : 0;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e;
    switch (mt * 16 + nt) {
    case 16 + 1: e = launch<1, 1>(a, ov, s); break;
    case 16 + 2: e = launch<1, 2>(a, ov, s); break;
    case 16 + 4: e = launch<1, 4>(a, ov, s); break;
    case 16 + 8: e = launch<1, 8>(a, ov, s); break;
    case 32 + 1: e = launch<2, 1>(a, ov, s); break;
    case 32 + 2: e = launch<2, 2>(a, ov, s); break;
    case 32 + 4: e = launch<2, 4>(a, ov, s); break;
    default:
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): m_tiles=%d unsupported "
                           "(1 or 2, and 1 above 32 rows)",
                           (int)rows, (int)in, (int)out, mt);
    }
    return fp8_cuda_check(e, err, "gemv_e4m3(rows=%d in=%d out=%d m_tiles=%d overlap=%d norm=%d "
                          "glu=%d add=%d)",
                          (int)rows, (int)in, (int)out, mt, (int)ov, a.norm_w != NULL, a.glu,
                          a.add);
}

int fp8_cuda_gemv_e4m3(void *y, int32_t y_f32, const uint16_t *x, const uint8_t *w,
                       const float *scale, int32_t rows, int32_t in, int32_t out,
                       const struct fp8_cuda_gemv_cfg *cfg, void *stream, struct fp8_err *err)
{
    return fp8_cuda_gemv_e4m3_fused(y, y_f32, x, w, scale, rows, in, out, NULL, cfg, stream,
                                    err);
}
