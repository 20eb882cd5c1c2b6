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
 * step, which at 5-50 us per GEMV is a large share of the time. */
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
template <int MT, int NT>
__device__ __forceinline__ void gemv_chunk(float (&acc)[MT][NT][4], const uint4 (&wv)[MT][2],
                                           const uint16_t *const (&xrow)[NT],
                                           const bool (&xok)[NT], bool tok, size_t k)
{
    uint4 xv[NT][2];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        if (xok[j] && tok) {
            const uint4 *p = reinterpret_cast<const uint4 *>(xrow[j] + k);
            xv[j][0] = __ldg(p);
            xv[j][1] = __ldg(p + 1);
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
 * be < nfull). */
template <int MT, int NT, int U>
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
                wv[u][i][h] = wok[i][h] ? load_stream16(wrow[i][h] + (size_t)(c + u * kWarps) * 64)
                                        : make_uint4(0, 0, 0, 0);
}

template <int MT, int NT>
__global__ void __launch_bounds__(kWarps * 32, 2)
gemv_e4m3_kernel(void *__restrict__ y, const uint16_t *__restrict__ x,
                 const uint8_t *__restrict__ w, const float *__restrict__ scale, int rows,
                 int K, int N, bool out_f32, int prefetch)
{
    /* chunks per iteration: 128 weight bytes in flight per thread, fewer where the wide
     * activation tiles (rows > 16) need the registers */
    constexpr int U = MT * NT >= 8 ? 1 : MT * NT == 4 && NT == 4 ? 2 : 4 / MT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int ch0 = blockIdx.x * 16 * MT;

    const uint8_t *wrow[MT][2];
    bool wok[MT][2];
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int ch = ch0 + 16 * i + g + 8 * h;
            wok[i][h] = ch < N;
            wrow[i][h] = w + (size_t)(wok[i][h] ? ch : 0) * K + 16 * t;
        }
    }
    const int nfull = K >> 6;
    int c = warp;

    /* Weights do not depend on the previous kernel: the first iteration's loads (and an
     * optional L2 prefetch of the rows' start) go out before waiting for it. Without a
     * programmatic launch the wait returns at once. */
    uint4 wv0[U][MT][2];
    const bool early = c + (U - 1) * kWarps < nfull;
    if (early)
        gemv_load_iter<MT, NT, U>(wv0, wrow, wok, c);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (prefetch > 0 && threadIdx.x < 16 * MT && ch0 + (int)threadIdx.x < N) {
        const uint32_t bytes = (uint32_t)(K < prefetch ? K : prefetch);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;"
                     :
                     : "l"(w + (size_t)(ch0 + threadIdx.x) * K), "r"(bytes)
                     : "memory");
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
#else
    (void)prefetch;
#endif

    const uint16_t *xrow[NT];
    bool xok[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        int n = 8 * j + g;
        xok[j] = n < rows;
        xrow[j] = x + (size_t)(xok[j] ? n : 0) * K + 16 * t;
    }

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[i][j][r] = 0.0f;

    if (early) {
#pragma unroll
        for (int u = 0; u < U; u++)
            gemv_chunk<MT, NT>(acc, wv0[u], xrow, xok, true, (size_t)(c + u * kWarps) * 64);
        c += U * kWarps;
    }
    /* Single-buffered on purpose: a double-buffered loop (next iteration's loads before
     * this one's mma) measured 5-30% slower on H100 (bench/RESULTS.md, 2026-11-25). */
    for (; c + (U - 1) * kWarps < nfull; c += U * kWarps) {
        uint4 wv[U][MT][2];
        gemv_load_iter<MT, NT, U>(wv, wrow, wok, c);
#pragma unroll
        for (int u = 0; u < U; u++)
            gemv_chunk<MT, NT>(acc, wv[u], xrow, xok, true, (size_t)(c + u * kWarps) * 64);
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
        gemv_chunk<MT, NT>(acc, wv, xrow, xok, tok, (size_t)c * 64);
    }

    __shared__ float red[kWarps][MT * NT * 4][32];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                red[warp][(i * NT + j) * 4 + r][lane] = acc[i][j][r];
    __syncthreads();
    for (int o = threadIdx.x; o < MT * NT * 4 * 32; o += kWarps * 32) {
        const int idx = o >> 5, l = o & 31;
        float s = 0.0f;
#pragma unroll
        for (int v = 0; v < kWarps; v++)
            s += red[v][idx][l];
        const int r = idx & 3, i = (idx >> 2) / NT, j = (idx >> 2) % NT;
        const int ch = ch0 + 16 * i + (l >> 2) + ((r & 2) ? 8 : 0);
        const int n = 8 * j + 2 * (l & 3) + (r & 1);
        if (ch < N && n < rows) {
            if (out_f32)
                static_cast<float *>(y)[(size_t)n * N + ch] = s * scale[ch];
            else
                static_cast<uint16_t *>(y)[(size_t)n * N + ch] = fp8_f32_to_bf16_bits(s * scale[ch]);
        }
    }
}

int n_tiles_for(int rows)
{
    return rows <= 8 ? 1 : rows <= 16 ? 2 : rows <= 32 ? 4 : 8;
}

template <int MT, int NT>
cudaError_t launch(void *y, const uint16_t *x, const uint8_t *w, const float *scale, int rows,
                   int K, int N, bool out_f32, bool overlap, int prefetch, cudaStream_t stream)
{
    cudaLaunchConfig_t lc = {};
    lc.gridDim = dim3((unsigned)((N + 16 * MT - 1) / (16 * MT)));
    lc.blockDim = dim3(kWarps * 32);
    lc.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = &attr;
    lc.numAttrs = overlap ? 1 : 0;
    return cudaLaunchKernelEx(&lc, gemv_e4m3_kernel<MT, NT>, y, x, w, scale, rows, K, N,
                              out_f32, prefetch);
}

} // namespace

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
    cfg->overlap = major >= 9;
    cfg->prefetch = 0;
    return 0;
}

int fp8_cuda_gemv_e4m3(void *y, int32_t y_f32, const uint16_t *x, const uint8_t *w,
                       const float *scale, int32_t rows, int32_t in, int32_t out,
                       const struct fp8_cuda_gemv_cfg *cfg, void *stream, struct fp8_err *err)
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
    struct fp8_cuda_gemv_cfg picked;
    if (!cfg) {
        int rc = fp8_cuda_gemv_e4m3_cfg_pick(&picked, rows, in, out, err);
        if (rc < 0)
            return rc;
        cfg = &picked;
    }
    const int nt = n_tiles_for(rows), mt = cfg->m_tiles;
    const bool ov = cfg->overlap != 0, f32 = y_f32 != 0;
    if (cfg->prefetch < 0 || cfg->prefetch % 16 != 0 || cfg->prefetch > (1 << 20))
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): prefetch=%d must be a multiple of "
                           "16 in 0..1 MiB",
                           (int)rows, (int)in, (int)out, (int)cfg->prefetch);
    const int pf = ov ? cfg->prefetch : 0;
    cudaStream_t s = (cudaStream_t)stream;
    cudaError_t e;
    switch (mt * 16 + nt) {
    case 16 + 1: e = launch<1, 1>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    case 16 + 2: e = launch<1, 2>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    case 16 + 4: e = launch<1, 4>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    case 16 + 8: e = launch<1, 8>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    case 32 + 1: e = launch<2, 1>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    case 32 + 2: e = launch<2, 2>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    case 32 + 4: e = launch<2, 4>(y, x, w, scale, rows, in, out, f32, ov, pf, s); break;
    default:
        return fp8_err_set(err, -EINVAL,
                           "gemv_e4m3(rows=%d in=%d out=%d): m_tiles=%d unsupported "
                           "(1 or 2, and 1 above 32 rows)",
                           (int)rows, (int)in, (int)out, mt);
    }
    return fp8_cuda_check(e, err, "gemv_e4m3(rows=%d in=%d out=%d m_tiles=%d overlap=%d)",
                          (int)rows, (int)in, (int)out, mt, (int)ov);
}
