/* RMSNorm (+ residual add), SwiGLU, and the per-head q/k RMSNorm + RoPE + FP8 KV-cache write that
 * follows the fused qkv projection of Qwen3. */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/qk_rope.cuh"

namespace {

constexpr int kNormThreads = 256;

/* bf16x8 (one 16-byte word) -> 8 floats */
__device__ __forceinline__ void bf16x8_to_f32(const uint4 &v, float (&f)[8])
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

__device__ __forceinline__ uint4 f32_to_bf16x8(const float (&f)[8])
{
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
        w[i] = (uint32_t)fp8_f32_to_bf16_bits(f[2 * i]) |
               (uint32_t)fp8_f32_to_bf16_bits(f[2 * i + 1]) << 16;
    return make_uint4(w[0], w[1], w[2], w[3]);
}

/* One block per row. VEC: dim a multiple of 8 and 16-byte aligned rows, read and written
 * 8 values (16 bytes) at a time: two such words per thread at dim 4096, where the scalar
 * loop's sixteen dependent 2-byte loads per pass took ~9 us (H100). */
template <bool VEC>
__global__ void __launch_bounds__(kNormThreads)
rmsnorm_kernel(uint16_t *y, const uint16_t *x, uint16_t *residual, const float *__restrict__ w,
               int dim, float eps, bool plus_one)
{
    fp8_launch_dependents();
    fp8_grid_wait();
    const size_t row = (size_t)blockIdx.x * dim;
    const int step = VEC ? 8 : 1;
    float ss = 0.0f;
#pragma unroll 4
    for (int i = threadIdx.x * step; i < dim; i += kNormThreads * step) {
        float v[8];
        if (VEC) {
            bf16x8_to_f32(*reinterpret_cast<const uint4 *>(x + row + i), v);
        } else {
            v[0] = fp8_bf16_bits_to_f32(x[row + i]);
        }
        if (residual) {
            float r[8];
            if (VEC)
                bf16x8_to_f32(*reinterpret_cast<const uint4 *>(residual + row + i), r);
            else
                r[0] = fp8_bf16_bits_to_f32(residual[row + i]);
#pragma unroll
            for (int e = 0; e < step; e++) /* rounded as stored */
                v[e] = fp8_bf16_bits_to_f32(fp8_f32_to_bf16_bits(v[e] + r[e]));
            if (VEC)
                *reinterpret_cast<uint4 *>(residual + row + i) = f32_to_bf16x8(v);
            else
                residual[row + i] = fp8_f32_to_bf16_bits(v[0]);
        }
#pragma unroll
        for (int e = 0; e < step; e++)
            ss = fmaf(v[e], v[e], ss);
    }
    __shared__ float part[kNormThreads / 32];
    ss = fp8_warp_sum(ss);
    if ((threadIdx.x & 31) == 0)
        part[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < kNormThreads / 32; i++)
        tot += part[i];
    const float inv = 1.0f / sqrtf(tot / (float)dim + eps); /* as the ref backend */
    /* each thread reads back only what it wrote itself: no barrier needed */
    const uint16_t *src = residual ? residual : x;
#pragma unroll 4
    for (int i = threadIdx.x * step; i < dim; i += kNormThreads * step) {
        if (VEC) {
            float v[8];
            bf16x8_to_f32(*reinterpret_cast<const uint4 *>(src + row + i), v);
            const float4 w0 = *reinterpret_cast<const float4 *>(w + i);
            const float4 w1 = *reinterpret_cast<const float4 *>(w + i + 4);
            const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
            for (int e = 0; e < 8; e++)
                v[e] = v[e] * inv * (plus_one ? 1.0f + wv[e] : wv[e]);
            *reinterpret_cast<uint4 *>(y + row + i) = f32_to_bf16x8(v);
        } else {
            y[row + i] = fp8_f32_to_bf16_bits(fp8_bf16_bits_to_f32(src[row + i]) * inv *
                                              (plus_one ? 1.0f + w[i] : w[i]));
        }
    }
}

struct qk_args {
    uint16_t *q_out;
    const uint16_t *qkv;
    const float *q_norm_w, *k_norm_w, *inv_freq;
    const int32_t *positions, *slots;
    uint8_t *k_cache, *v_cache;
    float *k_scale, *v_scale;
    int n_tokens, n_heads, n_kv, n_slots_total;
    float eps, attn_factor;
    bool plus_one;
};

/* One warp per (token, head of the fused projection): kernels/cuda/qk_rope.cuh. The
 * slot, like the norm weights and the rotation, is read before waiting for the GEMV that
 * writes the projection: the wait is this kernel's critical path in a decode step. */
__global__ void __launch_bounds__(128) qk_norm_rope_kv_kernel(const qk_args a)
{
    fp8_launch_dependents();
    const int heads = a.n_heads + 2 * a.n_kv;
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (int64_t)a.n_tokens * heads)
        return;
    const int t = (int)(wid / heads), hs = (int)(wid % heads);
    const bool normed = hs < a.n_heads + a.n_kv; /* q and k; v is only quantized */
    const fp8_qk_lane p = fp8_qk_prep(normed, hs < a.n_heads ? a.q_norm_w : a.k_norm_w,
                                      a.plus_one, a.inv_freq, a.attn_factor, a.positions[t]);
    const int slot = hs < a.n_heads ? -1 : a.slots[t];
    fp8_grid_wait();
    float v[4];
    fp8_qk_apply(v, fp8_qk_load(a.qkv + ((size_t)t * heads + hs) * kQkHeadDim), normed, p,
                 a.eps);
    if (hs < a.n_heads) {
        *reinterpret_cast<uint2 *>(a.q_out + ((size_t)t * a.n_heads + hs) * kQkHeadDim +
                                   4 * (threadIdx.x & 31)) = fp8_qk_bf16x4(v);
        return;
    }
    if (slot < 0 || slot >= a.n_slots_total)
        return;
    const bool is_k = hs < a.n_heads + a.n_kv;
    const int kvh = is_k ? hs - a.n_heads : hs - a.n_heads - a.n_kv;
    float scale;
    fp8_qk_store_kv(v, is_k ? a.k_cache : a.v_cache, is_k ? a.k_scale : a.v_scale,
                    (size_t)slot * a.n_kv + kvh, scale);
}

__global__ void glu_kernel(uint16_t *y, const uint16_t *gu, int rows, int inter, int act)
{
    fp8_launch_dependents();
    fp8_grid_wait();
    const size_t n = (size_t)rows * inter;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / inter, c = i % inter;
        const float g = fp8_bf16_bits_to_f32(gu[r * 2 * inter + c]);
        const float u = fp8_bf16_bits_to_f32(gu[r * 2 * inter + inter + c]);
        y[i] = fp8_f32_to_bf16_bits(fp8_glu_act_f32(g, act) * u);
    }
}

} // namespace

int fp8_cuda_glu(uint16_t *y, const uint16_t *gu, int32_t rows, int32_t inter,
                 enum fp8_cuda_glu_act act, void *stream, struct fp8_err *err)
{
    if (!y || !gu || rows < 1 || inter < 1 ||
        (act != FP8_CUDA_GLU_SILU && act != FP8_CUDA_GLU_GELU_TANH))
        return fp8_err_set(err, -EINVAL,
                           "glu(rows=%d inter=%d act=%d): NULL tensor, empty shape or unknown "
                           "activation",
                           (int)rows, (int)inter, (int)act);
    const size_t n = (size_t)rows * inter;
    const unsigned blocks = (unsigned)(n / 256 + 1 < 4096 ? n / 256 + 1 : 4096);
    return fp8_cuda_check(fp8_cuda_launch_pdl(glu_kernel, dim3(blocks), dim3(256),
                                              (cudaStream_t)stream, y, gu, (int)rows,
                                              (int)inter, (int)act),
                          err, "glu(rows=%d inter=%d act=%d)", (int)rows,
                          (int)inter, (int)act);
}

int fp8_cuda_rmsnorm(uint16_t *y, const uint16_t *x, uint16_t *residual, const float *weight,
                     int32_t rows, int32_t dim, float eps, int32_t plus_one, void *stream,
                     struct fp8_err *err)
{
    if (!y || !x || !weight || rows < 1 || dim < 1 || !(eps >= 0.0f))
        return fp8_err_set(err, -EINVAL,
                           "rmsnorm(rows=%d dim=%d eps=%g): NULL tensor, empty shape or bad eps",
                           (int)rows, (int)dim, (double)eps);
    const bool vec = dim % 8 == 0 && (((uintptr_t)y | (uintptr_t)x | (uintptr_t)residual |
                                       (uintptr_t)weight) & 15) == 0;
    return fp8_cuda_check(fp8_cuda_launch_pdl(vec ? rmsnorm_kernel<true> : rmsnorm_kernel<false>,
                                              dim3((unsigned)rows), dim3(kNormThreads),
                                              (cudaStream_t)stream, y, x, residual, weight,
                                              (int)dim, eps, plus_one != 0),
                          err, "rmsnorm(rows=%d dim=%d residual=%s)",
                          (int)rows, (int)dim, residual ? "yes" : "no");
}

int fp8_cuda_qk_norm_rope_kv_write(uint16_t *q_out, const uint16_t *qkv, const float *q_norm_w,
                                   const float *k_norm_w, float eps, int32_t plus_one,
                                   const float *inv_freq, float attn_factor,
                                   const int32_t *positions, const int32_t *slots,
                                   const struct fp8_cuda_kv_cache *kv, int32_t n_tokens,
                                   int32_t n_heads, void *stream, struct fp8_err *err)
{
    if (!q_out || !qkv || !q_norm_w || !k_norm_w || !inv_freq || !positions || !slots || !kv ||
        !kv->k || !kv->v || !kv->k_scale || !kv->v_scale)
        return fp8_err_set(err, -EINVAL, "qk_norm_rope_kv_write(n_tokens=%d): NULL tensor",
                           (int)n_tokens);
    if (n_tokens < 1 || n_heads < 1 || kv->n_kv_heads < 1 || kv->head_dim != kQkHeadDim ||
        kv->n_blocks < 1 || kv->block_size < 1 || !(eps >= 0.0f))
        return fp8_err_set(err, -EINVAL,
                           "qk_norm_rope_kv_write(n_tokens=%d n_heads=%d n_kv_heads=%d "
                           "head_dim=%d): supported is head_dim 128 with every count >= 1",
                           (int)n_tokens, (int)n_heads, (int)kv->n_kv_heads, (int)kv->head_dim);
    const int64_t slots_total = (int64_t)kv->n_blocks * kv->block_size;
    if (slots_total > INT32_MAX)
        return fp8_err_set(err, -EINVAL,
                           "qk_norm_rope_kv_write: %lld KV slots exceed the int32 slot ids",
                           (long long)slots_total);
    qk_args a;
    a.q_out = q_out;
    a.qkv = qkv;
    a.q_norm_w = q_norm_w;
    a.k_norm_w = k_norm_w;
    a.inv_freq = inv_freq;
    a.attn_factor = attn_factor;
    a.plus_one = plus_one != 0;
    a.positions = positions;
    a.slots = slots;
    a.k_cache = kv->k;
    a.v_cache = kv->v;
    a.k_scale = kv->k_scale;
    a.v_scale = kv->v_scale;
    a.n_tokens = n_tokens;
    a.n_heads = n_heads;
    a.n_kv = kv->n_kv_heads;
    a.n_slots_total = (int)slots_total;
    a.eps = eps;
    const int64_t warps = (int64_t)n_tokens * (n_heads + 2 * kv->n_kv_heads);
    return fp8_cuda_check(fp8_cuda_launch_pdl(qk_norm_rope_kv_kernel,
                                              dim3((unsigned)((warps + 3) / 4)), dim3(128),
                                              (cudaStream_t)stream, a),
                          err,
                          "qk_norm_rope_kv_write(n_tokens=%d n_heads=%d n_kv_heads=%d)",
                          (int)n_tokens, (int)n_heads, (int)kv->n_kv_heads);
}
