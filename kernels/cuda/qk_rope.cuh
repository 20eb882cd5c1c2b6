/* One head of the fused projection through q/k-norm, RoPE and the FP8 KV-cache write, by
 * one warp (lane l holds dims 4l..4l+3 of a 128-dim head, so the rotate-half partner of a
 * lane is lane ^ 16): shared by qk_norm_rope_kv_kernel (norm_rope.cu) and decode
 * attention's fused front (attn_decode.cu), which therefore round alike bit for bit. Split
 * in two so that everything but the projection itself (norm weights, the rotation) is
 * fetched and computed before waiting for the GEMV that writes it. */
#ifndef FP8D_KERNELS_CUDA_QK_ROPE_CUH
#define FP8D_KERNELS_CUDA_QK_ROPE_CUH

#include "kernels/cuda/cuda_common.cuh"

constexpr int kQkHeadDim = 128;

/* The lane's norm weights and rotation (normed: q and k heads; v is only quantized). */
struct fp8_qk_lane {
    float nw[4], cs[4], sn[4];
};

static __device__ __forceinline__ fp8_qk_lane fp8_qk_prep(bool normed, const float *norm_w,
                                                           bool plus_one, const float *inv_freq,
                                                           float attn_factor, int position)
{
    fp8_qk_lane p = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
    if (!normed)
        return p;
    const int d0 = 4 * (threadIdx.x & 31), di = d0 & (kQkHeadDim / 2 - 1);
    /* the ref backend's angle: fp32 position * inv_freq, accurate cosf/sinf */
    const float pos = (float)position;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        p.nw[i] = plus_one ? 1.0f + norm_w[d0 + i] : norm_w[d0 + i];
        sincosf(pos * inv_freq[di + i], &p.sn[i], &p.cs[i]);
        p.cs[i] *= attn_factor;
        p.sn[i] *= attn_factor;
    }
    return p;
}

/* This lane's 4 bf16 values of a head's projection row. */
static __device__ __forceinline__ uint2 fp8_qk_load(const uint16_t *row)
{
    return *reinterpret_cast<const uint2 *>(row + 4 * (threadIdx.x & 31));
}

/* The lane's 4 values (raw: fp8_qk_load), normalized and rotated when normed. Every lane
 * of the warp takes part (shuffles). */
static __device__ __forceinline__ void fp8_qk_apply(float (&v)[4], uint2 raw, bool normed,
                                                    const fp8_qk_lane &p, float eps)
{
    const int lane = threadIdx.x & 31;
    v[0] = __uint_as_float(raw.x << 16);
    v[1] = __uint_as_float(raw.x & 0xffff0000u);
    v[2] = __uint_as_float(raw.y << 16);
    v[3] = __uint_as_float(raw.y & 0xffff0000u);
    if (!normed)
        return;
    const float ss = fp8_warp_sum(v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3]);
    const float inv = 1.0f / sqrtf(ss / (float)kQkHeadDim + eps);
    float q[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
        v[i] = v[i] * inv * p.nw[i];
#pragma unroll
    for (int i = 0; i < 4; i++)
        q[i] = __shfl_xor_sync(0xffffffffu, v[i], 16);
#pragma unroll
    for (int i = 0; i < 4; i++)
        v[i] = lane < 16 ? v[i] * p.cs[i] - q[i] * p.sn[i] : v[i] * p.cs[i] + q[i] * p.sn[i];
}

/* The lane's 4 values as bf16, packed. */
static __device__ __forceinline__ uint2 fp8_qk_bf16x4(const float (&v)[4])
{
    return make_uint2(fp8_pack_bf16x2(v[0], v[1]), fp8_pack_bf16x2(v[2], v[3]));
}

/* The head (k or v) into the cache row at h = slot * n_kv + kv head, e4m3 with the head's
 * scale amax / 448 (1 when all zero, as kernels.h). Every lane takes part. Returns the
 * lane's 4 bytes as written, and the scale in scale. */
static __device__ __forceinline__ uint32_t fp8_qk_store_kv(const float (&v)[4], uint8_t *cache,
                                                           float *scales, size_t h, float &scale)
{
    const int lane = threadIdx.x & 31;
    const float amax = fp8_warp_max(fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])),
                                          fmaxf(fabsf(v[2]), fabsf(v[3]))));
    scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    uint32_t packed = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        packed |= (uint32_t)fp8_f32_to_e4m3(v[i] / scale) << (8 * i);
    *reinterpret_cast<uint32_t *>(cache + h * kQkHeadDim + 4 * lane) = packed;
    if (lane == 0)
        scales[h] = scale;
    return packed;
}

#endif
