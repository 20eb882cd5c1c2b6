/* Helpers shared by the CUDA backend's translation units (not a public header). */
#ifndef FP8_KERNELS_CUDA_COMMON_CUH
#define FP8_KERNELS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>

#include "kernels/cuda/cuda_ops.h"

/* Turns a CUDA status into the backend's error convention: 0 on success, else a negative
 * errno and "<what formatted>: <CUDA error name>: <description>" in err. */
int fp8_cuda_check(cudaError_t status, struct fp8_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The number of multiprocessors of the current device, or a negative errno. */
int fp8_cuda_sm_count(int32_t *count, struct fp8_err *err);

static __device__ __forceinline__ float fp8_bf16_bits_to_f32(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

static __device__ __forceinline__ uint16_t fp8_f32_to_bf16_bits(float f)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* e4m3 byte -> f32, exact (through the hardware f16 conversion on sm_89+). */
static __device__ __forceinline__ float fp8_e4m3_to_f32(uint8_t b)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    return __half2float(__half(h));
}

/* f32 -> e4m3 byte, round to nearest even, saturating to +-448 (common/numeric.h). */
static __device__ __forceinline__ uint8_t fp8_f32_to_e4m3(float f)
{
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}

static __device__ __forceinline__ float fp8_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float fp8_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
