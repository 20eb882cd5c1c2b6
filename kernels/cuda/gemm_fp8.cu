/* FP8 x FP8 GEMM for prefill linears: y = x W^T with both operands e4m3 on the tensor
 * cores (cuBLASLt, fp32 accumulation), one fp32 scale per activation row and per weight
 * row.
 *
 * The bf16 activation rows are quantized first (quant_rows_kernel): scale s = amax / 448
 * (1 for an all-zero row, the KV cache's rule), u = x / s, hi = e4m3(u). With two terms
 * (the default) the rounding error is quantized too, lo = e4m3(16 (u - hi)), and
 * y = s (W hi) + (s / 16) (W lo): two FP8 matmuls, the second accumulating onto the
 * first. One e4m3 term carries 3 mantissa bits (relative error up to 2^-4, rms ~2^-5.5 on
 * the test checkpoints), which on its own costs the tiny golden models ~0.045 relative L2
 * of logits and breaks their FP8 bounds against transformers (docs/numerics.md); the
 * residual term brings the activation error to ~2^-8, below bf16 rounding. One term runs
 * at twice the rate: a benchmark choice (cfg), not the product's.
 *
 * cuBLASLt's FP8 kernels take one layout, "TN": in column-major terms
 * y^T (out x rows) = W^T (op T of W stored in x out) x x^T (in x rows), K-major operands,
 * rows 16-byte aligned. The row scales are applied either by cuBLASLt as outer-vector
 * scales (A's vector = the out weight scales, B's = the rows activation scales; sm_90 on),
 * with the second term accumulated onto the stored first one (beta = 1, so y is rounded
 * to bf16 twice), or, on sm_89, where FP8 matmuls take tensor-wide scalar scales only,
 * by an epilogue kernel over the unit-scaled fp32 sum of the terms (one more fp32 write
 * and read of y).
 *
 * Descriptors and the heuristic's algorithm are cached per shape: the model calls the
 * same few shapes every layer. */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

namespace {

constexpr size_t kLtWorkspace = (size_t)32 << 20;
constexpr int kCache = 32;
constexpr int kQuantThreads = 256;

struct gemm_key {
    int32_t rows, in, out, y_f32, mode;
};

struct gemm_plan {
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
};

/* One row per block: amax, then the e4m3 bytes of one or two terms; in is a multiple of
 * 16. qs[r] = s, qs16[r] = s / 16 (exact), the second term's scale. */
__global__ void __launch_bounds__(kQuantThreads)
quant_rows_kernel(uint8_t *hi, uint8_t *lo, float *qs, float *qs16, const uint16_t *x,
                  int32_t in)
{
    fp8_launch_dependents();
    const uint4 *xr = reinterpret_cast<const uint4 *>(x + (size_t)blockIdx.x * in);
    const int n8 = in / 8;
    float amax = 0.0f;
    for (int i = threadIdx.x; i < n8; i += kQuantThreads) {
        const uint4 v = xr[i];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; j++)
            amax = fmaxf(amax, fmaxf(fabsf(fp8_bf16_bits_to_f32((uint16_t)w[j])),
                                     fabsf(fp8_bf16_bits_to_f32((uint16_t)(w[j] >> 16)))));
    }
    __shared__ float red[kQuantThreads / 32];
    amax = fp8_warp_max(amax);
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = 0.0f;
#pragma unroll
    for (int w = 0; w < kQuantThreads / 32; w++)
        amax = fmaxf(amax, red[w]);
    const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
    const size_t row = (size_t)blockIdx.x * in;
    for (int i = threadIdx.x; i < n8; i += kQuantThreads) {
        const uint4 v = xr[i];
        const uint32_t w[4] = {v.x, v.y, v.z, v.w};
        uint32_t oh[2] = {0, 0}, ol[2] = {0, 0};
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const uint16_t b = (uint16_t)(w[j / 2] >> (16 * (j % 2)));
            const float u = __fdiv_rn(fp8_bf16_bits_to_f32(b), s);
            const uint8_t h = fp8_f32_to_e4m3(u);
            oh[j / 4] |= (uint32_t)h << (8 * (j % 4));
            if (lo) {
                /* |u - hi| <= half an e4m3 step <= |u| / 16: 16 (u - hi) stays in range */
                const float hv = __half2float(__half(__nv_cvt_fp8_to_halfraw(h, __NV_E4M3)));
                ol[j / 4] |= (uint32_t)fp8_f32_to_e4m3(16.0f * (u - hv)) << (8 * (j % 4));
            }
        }
        reinterpret_cast<uint2 *>(hi + row)[i] = make_uint2(oh[0], oh[1]);
        if (lo)
            reinterpret_cast<uint2 *>(lo + row)[i] = make_uint2(ol[0], ol[1]);
    }
    if (threadIdx.x == 0) {
        qs[blockIdx.x] = s;
        qs16[blockIdx.x] = s * 0.0625f;
    }
}

/* y[r, o] = acc[r, o] * xs[r] * ws[o], to bf16 or in place as fp32. */
__global__ void scale_rows_kernel(void *y, int32_t y_f32, const float *acc, const float *xs,
                                  const float *ws, size_t n, int32_t out)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float v = acc[i] * (xs[i / out] * ws[i % out]);
        if (y_f32)
            ((float *)y)[i] = v;
        else
            ((uint16_t *)y)[i] = fp8_f32_to_bf16_bits(v);
    }
}

size_t align256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

void plan_destroy(gemm_plan *p)
{
    if (p->ld)
        cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof(*p));
}

} // namespace

struct fp8_cuda_gemm {
    cublasLtHandle_t lt;
    void *lt_ws; /* kLtWorkspace bytes */
    int32_t cc;  /* compute capability, 10 * major + minor */
    gemm_plan plans[kCache];
    int32_t n_plans, next; /* next: the entry a full cache replaces */
};

static int gemm_fail(struct fp8_err *err, int rc, const char *what, int32_t rows, int32_t in,
                     int32_t out, const char *why)
{
    return fp8_err_set(err, rc, "linear fp8 gemm (rows=%d in=%d out=%d): %s%s", (int)rows,
                       (int)in, (int)out, what, why);
}

extern "C" int fp8_cuda_gemm_create(struct fp8_cuda_gemm **g, struct fp8_err *err)
{
    if (!g)
        return fp8_err_set(err, -EINVAL, "fp8 gemm: no output given");
    struct fp8_cuda_device dev;
    int rc = fp8_cuda_device_get(&dev, err);
    if (rc < 0)
        return rc;
    const int32_t cc = 10 * dev.cc_major + dev.cc_minor;
    if (cc < 89)
        return fp8_err_set(err, -ENOTSUP, "fp8 gemm: %s (sm_%d) has no FP8 tensor cores "
                           "(sm_89 or newer needed)", dev.name, (int)cc);
    struct fp8_cuda_gemm *n = (struct fp8_cuda_gemm *)calloc(1, sizeof(*n));
    if (!n)
        return fp8_err_set(err, -ENOMEM, "fp8 gemm: out of memory");
    n->cc = cc;
    cublasStatus_t st = cublasLtCreate(&n->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        free(n);
        return fp8_err_set(err, -EIO, "fp8 gemm: cublasLtCreate: %s",
                           cublasLtGetStatusString(st));
    }
    rc = fp8_cuda_malloc(&n->lt_ws, kLtWorkspace, err);
    if (rc < 0) {
        cublasLtDestroy(n->lt);
        free(n);
        return rc;
    }
    *g = n;
    return 0;
}

extern "C" void fp8_cuda_gemm_free(struct fp8_cuda_gemm *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_plans; i++)
        plan_destroy(&g->plans[i]);
    fp8_cuda_free(g->lt_ws);
    cublasLtDestroy(g->lt);
    free(g);
}

extern "C" size_t fp8_cuda_gemm_bytes(const struct fp8_cuda_gemm *g)
{
    return g ? kLtWorkspace : 0;
}

extern "C" int fp8_cuda_gemm_cfg_pick(const struct fp8_cuda_gemm *g,
                                      struct fp8_cuda_gemm_cfg *cfg)
{
    if (!g || !cfg)
        return -EINVAL;
    cfg->terms = 2;
    cfg->scales = g->cc >= 90 ? FP8_CUDA_GEMM_SCALES_OUTER : FP8_CUDA_GEMM_SCALES_EPILOGUE;
    return 0;
}

/* hi [| lo] (rows, in) e4m3, s and s / 16 (rows), [the epilogue's fp32 sum (rows, out)] */
struct ws_layout {
    size_t lo, qs, qs16, acc, total;
};

static ws_layout ws_of(int32_t rows, int32_t in, int32_t out, int32_t y_f32,
                       const struct fp8_cuda_gemm_cfg &cfg)
{
    ws_layout l;
    const size_t q = align256((size_t)rows * in), v = align256((size_t)rows * sizeof(float));
    l.lo = q;
    l.qs = l.lo + (cfg.terms == 2 ? q : 0);
    l.qs16 = l.qs + v;
    l.acc = l.qs16 + v;
    /* y itself holds the fp32 sum when it is fp32 (scaled in place) */
    l.total = l.acc + (cfg.scales == FP8_CUDA_GEMM_SCALES_EPILOGUE && !y_f32
                           ? (size_t)rows * out * sizeof(float)
                           : 0);
    return l;
}

extern "C" size_t fp8_cuda_gemm_e4m3_workspace(int32_t rows, int32_t in, int32_t out,
                                               int32_t y_f32,
                                               const struct fp8_cuda_gemm_cfg *cfg)
{
    if (rows < 1 || in < 1 || out < 1 || !cfg)
        return 0;
    return ws_of(rows, in, out, y_f32, *cfg).total;
}

/* The cached plan for a shape, or a new one: descriptors and the heuristic's best
 * algorithm. NULL with err set when cuBLASLt has none. The heuristic refuses vector scale
 * modes without scale pointers: sa, sb (this call's) are set first. */
static gemm_plan *plan_get(struct fp8_cuda_gemm *g, const gemm_key &k, const float *sa,
                           const float *sb, struct fp8_err *err)
{
    for (int i = 0; i < g->n_plans; i++)
        if (!memcmp(&g->plans[i].key, &k, sizeof(k)))
            return &g->plans[i];
    gemm_plan p;
    memset(&p, 0, sizeof(p));
    p.key = k;
    const bool outer = k.mode == FP8_CUDA_GEMM_SCALES_OUTER;
    const cudaDataType_t yt = k.y_f32 || !outer ? CUDA_R_32F : CUDA_R_16BF;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const size_t wsb = kLtWorkspace;
    const int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    if (st == CUBLAS_STATUS_SUCCESS && outer)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec,
                                            sizeof(vec));
    if (st == CUBLAS_STATUS_SUCCESS && outer)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec,
                                            sizeof(vec));
    if (st == CUBLAS_STATUS_SUCCESS && outer)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa,
                                            sizeof(sa));
    if (st == CUBLAS_STATUS_SUCCESS && outer)
        st = cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb,
                                            sizeof(sb));
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p.la, CUDA_R_8F_E4M3, (uint64_t)k.in, (uint64_t)k.out,
                                        k.in);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_8F_E4M3, (uint64_t)k.in, (uint64_t)k.rows,
                                        k.in);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p.ld, yt, (uint64_t)k.out, (uint64_t)k.rows, k.out);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceCreate(&pref);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &wsb, sizeof(wsb));
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(g->lt, p.op, p.la, p.lb, p.ld, p.ld, pref, 1, &h,
                                            &found);
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_SUCCESS && !found)
        st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (st != CUBLAS_STATUS_SUCCESS) {
        plan_destroy(&p);
        gemm_fail(err, -ENOTSUP, outer ? "cuBLASLt e4m3 matmul with outer-vector scales: "
                                       : "cuBLASLt e4m3 matmul: ",
                  k.rows, k.in, k.out, cublasLtGetStatusString(st));
        return NULL;
    }
    p.algo = h.algo;
    int i = g->n_plans;
    if (i < kCache) {
        g->n_plans++;
    } else {
        i = g->next;
        g->next = (g->next + 1) % kCache;
        plan_destroy(&g->plans[i]);
    }
    g->plans[i] = p;
    return &g->plans[i];
}

static cublasStatus_t matmul(struct fp8_cuda_gemm *g, gemm_plan *p, bool outer,
                             const float *sa, const float *sb, float alpha, float beta,
                             const uint8_t *w, const uint8_t *xq, void *d, cudaStream_t st)
{
    cublasStatus_t cs = CUBLAS_STATUS_SUCCESS;
    if (outer)
        cs = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa,
                                            sizeof(sa));
    if (cs == CUBLAS_STATUS_SUCCESS && outer)
        cs = cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb,
                                            sizeof(sb));
    if (cs == CUBLAS_STATUS_SUCCESS)
        cs = cublasLtMatmul(g->lt, p->op, &alpha, w, p->la, xq, p->lb, &beta, d, p->ld, d, p->ld,
                            &p->algo, g->lt_ws, kLtWorkspace, st);
    return cs;
}

extern "C" int fp8_cuda_gemm_e4m3(struct fp8_cuda_gemm *g, void *y, int32_t y_f32,
                                  const uint16_t *x, const uint8_t *w, const float *scale,
                                  int32_t rows, int32_t in, int32_t out,
                                  const struct fp8_cuda_gemm_cfg *cfg, void *workspace,
                                  size_t workspace_bytes, void *stream, struct fp8_err *err)
{
    if (!g || !y || !x || !w || !scale || rows < 1 || in < 1 || out < 1)
        return gemm_fail(err, -EINVAL, "", rows, in, out,
                         "missing handle or tensor, or an empty shape");
    struct fp8_cuda_gemm_cfg c;
    fp8_cuda_gemm_cfg_pick(g, &c);
    if (cfg)
        c = *cfg;
    if ((c.terms != 1 && c.terms != 2) ||
        (c.scales != FP8_CUDA_GEMM_SCALES_OUTER && c.scales != FP8_CUDA_GEMM_SCALES_EPILOGUE))
        return gemm_fail(err, -EINVAL, "", rows, in, out, "terms must be 1 or 2 and the scale "
                         "mode outer or epilogue");
    if (c.scales == FP8_CUDA_GEMM_SCALES_OUTER && g->cc < 90)
        return gemm_fail(err, -ENOTSUP, "", rows, in, out,
                         "outer-vector scales need sm_90 or newer (sm_89 takes the epilogue)");
    /* cuBLASLt's FP8 kernels want 16-byte aligned rows: in e4m3 bytes, out outputs */
    if (in % 16 || (size_t)out * (y_f32 ? 4 : 2) % 16)
        return gemm_fail(err, -ENOTSUP, "", rows, in, out,
                         y_f32 ? "in must be a multiple of 16 and out of 4 (FP8 GEMM rows are "
                                 "16-byte aligned)"
                               : "in must be a multiple of 16 and out of 8 (FP8 GEMM rows are "
                                 "16-byte aligned)");
    const ws_layout l = ws_of(rows, in, out, y_f32, c);
    if (!workspace || workspace_bytes < l.total)
        return fp8_err_set(err, -EINVAL, "linear fp8 gemm (rows=%d in=%d out=%d): workspace of "
                           "%zu bytes needed, %zu given", (int)rows, (int)in, (int)out, l.total,
                           workspace ? workspace_bytes : (size_t)0);
    const bool outer = c.scales == FP8_CUDA_GEMM_SCALES_OUTER;
    uint8_t *ws = (uint8_t *)workspace;
    uint8_t *hi = ws, *lo = c.terms == 2 ? ws + l.lo : NULL;
    float *qs = (float *)(ws + l.qs), *qs16 = (float *)(ws + l.qs16);
    const gemm_key k = {rows, in, out, y_f32 ? 1 : 0, c.scales};
    gemm_plan *p = plan_get(g, k, scale, qs, err);
    if (!p)
        return -ENOTSUP;
    cudaStream_t st = (cudaStream_t)stream;
    quant_rows_kernel<<<(unsigned)rows, kQuantThreads, 0, st>>>(hi, lo, qs, qs16, x, in);
    int rc = fp8_cuda_check(cudaGetLastError(), err, "linear fp8 gemm (rows=%d in=%d): "
                            "activation quantization", (int)rows, (int)in);
    if (rc < 0)
        return rc;
    void *d = outer || y_f32 ? y : (void *)(ws + l.acc);
    cublasStatus_t cs = matmul(g, p, outer, scale, qs, 1.0f, 0.0f, w, hi, d, st);
    if (cs == CUBLAS_STATUS_SUCCESS && lo)
        cs = matmul(g, p, outer, scale, qs16, outer ? 1.0f : 0.0625f, 1.0f, w, lo, d, st);
    if (cs != CUBLAS_STATUS_SUCCESS)
        return gemm_fail(err, -EIO, "cuBLASLt e4m3 matmul: ", rows, in, out,
                         cublasLtGetStatusString(cs));
    if (outer)
        return 0;
    const size_t n = (size_t)rows * out;
    scale_rows_kernel<<<(unsigned)((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096), 256, 0,
                        st>>>(y, y_f32, (const float *)d, qs, scale, n, out);
    return fp8_cuda_check(cudaGetLastError(), err, "linear fp8 gemm (rows=%d in=%d out=%d): "
                          "scale epilogue", (int)rows, (int)in, (int)out);
}
