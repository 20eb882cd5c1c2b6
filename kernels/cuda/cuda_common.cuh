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

/* f32 -> e4m3 byte, round to nearest even, saturating to +-448 (common/numeric.h). */
static __device__ __forceinline__ uint8_t fp8_f32_to_e4m3(float f)
{
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}

/* bf16x2 bit pattern times 2^120 (exact: a power of two, results within bf16 range;
 * bf16 arithmetic keeps subnormal inputs). */
static __device__ __forceinline__ uint32_t fp8_bf16x2_mul_2p120(uint32_t v)
{
    uint32_t d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(v), "r"(0x7b807b80u), "r"(0x80008000u));
    return d;
}

/* Four e4m3 bytes b0..b3 of q -> bf16x2 (b0, b2) in lo and (b1, b3) in hi, exactly: the
 * sign and the 7 exponent+mantissa bits move into bf16 position, which is the value times
 * 2^-120 (subnormals included, e4m3's exponent bias is 7, bf16's 127), and one bf16
 * multiply by 2^120 restores it. The NaN codes 0x7f/0xff become +-480 (weights and KV
 * entries never hold them). */
static __device__ __forceinline__ void fp8_e4m3x4_to_bf16x2(uint32_t q, uint32_t &lo,
                                                           uint32_t &hi)
{
    lo = fp8_bf16x2_mul_2p120(((q << 8) & 0x80008000u) | ((q << 4) & 0x07f007f0u));
    hi = fp8_bf16x2_mul_2p120((q & 0x80008000u) | ((q >> 4) & 0x07f007f0u));
}

/* Two floats as one bf16x2 word, lo in the low half (the mma fragment order). */
static __device__ __forceinline__ uint32_t fp8_pack_bf16x2(float lo, float hi)
{
    return (uint32_t)fp8_f32_to_bf16_bits(lo) | (uint32_t)fp8_f32_to_bf16_bits(hi) << 16;
}

/* Slot of token j of a sequence in the paged KV cache (kernels.h): bt is the sequence's
 * row of the block table (max_blocks entries) over a pool of n_blocks blocks of
 * block_size slots. -1 at or past end, or where the table points outside the pool. */
static __device__ __forceinline__ long long fp8_paged_slot(const int32_t *bt, int j, int end,
                                                           int block_size, int max_blocks,
                                                           int n_blocks)
{
    if (j >= end)
        return -1;
    const int bi = j / block_size;
    if (bi >= max_blocks)
        return -1;
    const int blk = bt[bi];
    if (blk < 0 || blk >= n_blocks)
        return -1;
    return (long long)blk * block_size + j % block_size;
}

/* D = A B + C on the tensor cores, m16n8k16, bf16 inputs, fp32 accumulators (sm_80+):
 * a0..a3, b0..b1 and c in the PTX fragment layout. */
static __device__ __forceinline__ void fp8_mma_bf16_16816(float (&c)[4], uint32_t a0, uint32_t a1,
                                                         uint32_t a2, uint32_t a3, uint32_t b0,
                                                         uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Asks L2 for the line holding p (no data returned, nothing to wait for): for memory
 * that a kernel reads right after its griddepcontrol.wait but that no earlier kernel
 * writes, issued before the wait. */
static __device__ __forceinline__ void fp8_prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* Lets the next kernel of the stream start now when it was launched as a programmatic
 * dependent (the GEMV): it only streams its weights until its griddepcontrol.wait, which
 * still waits for this whole grid to finish. Called first thing by the small kernels so
 * that the following GEMV's weight loads overlap them. No-op before sm_90. */
static __device__ __forceinline__ void fp8_launch_dependents()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Waits for the previous kernel of the stream to finish and its writes to be visible,
 * when this kernel was launched as its programmatic dependent (fp8_cuda_launch_pdl);
 * returns at once otherwise. Everything before it may only read what no earlier kernel
 * of the step writes. No-op before sm_90. */
static __device__ __forceinline__ void fp8_grid_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Launches kernel k as a programmatic dependent of the previous kernel in the stream on
 * sm_90+ (a plain launch before): its blocks may start while that kernel drains, so k
 * must call fp8_grid_wait() before it touches anything an earlier kernel writes (or
 * writes anything an earlier kernel reads). */
template <typename... KArgs, typename... Args>
static cudaError_t fp8_cuda_launch_pdl_smem(void (*k)(KArgs...), dim3 grid, dim3 block,
                                            size_t smem, cudaStream_t stream, Args... args)
{
    int dev = 0, major = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e != cudaSuccess)
        return e;
    cudaLaunchConfig_t lc = {};
    lc.gridDim = grid;
    lc.blockDim = block;
    lc.dynamicSmemBytes = smem;
    lc.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = &attr;
    lc.numAttrs = major >= 9 ? 1 : 0;
    return cudaLaunchKernelEx(&lc, k, static_cast<KArgs>(args)...);
}

template <typename... KArgs, typename... Args>
static cudaError_t fp8_cuda_launch_pdl(void (*k)(KArgs...), dim3 grid, dim3 block,
                                       cudaStream_t stream, Args... args)
{
    return fp8_cuda_launch_pdl_smem(k, grid, block, 0, stream, args...);
}

/* The gated activations of kernels.h's glu (act 0: silu, 1: PyTorch's tanh gelu), in fp32
 * as the ref backend; shared by the glu kernel and the GEMV's glu epilogue so both round
 * identically. */
static __device__ __forceinline__ float fp8_glu_act_f32(float g, int act)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return act == 0 ? g / (1.0f + expf(-g))
                    : 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g)));
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
