/* Device, memory, stream, event and graph wrappers for callers without CUDA headers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

int fp8_cuda_check(cudaError_t status, struct fp8_err *err, const char *fmt, ...)
{
    if (status == cudaSuccess)
        return 0;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    int code = status == cudaErrorMemoryAllocation ? -ENOMEM
               : status == cudaErrorInvalidValue   ? -EINVAL
                                                   : -EIO;
    return fp8_err_set(err, code, "%s: %s: %s", what, cudaGetErrorName(status),
                       cudaGetErrorString(status));
}

int fp8_cuda_sm_count(int32_t *count, struct fp8_err *err)
{
    int dev = 0, sms = 0;
    int rc = fp8_cuda_check(cudaGetDevice(&dev), err, "cudaGetDevice");
    if (rc == 0)
        rc = fp8_cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
                            err, "cudaDeviceGetAttribute(multiprocessor count)");
    if (rc == 0)
        *count = sms;
    return rc;
}

int fp8_cuda_device_count(int32_t *count, struct fp8_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError();
        *count = 0;
        return 0;
    }
    int rc = fp8_cuda_check(e, err, "cudaGetDeviceCount");
    if (rc == 0)
        *count = n;
    return rc;
}

int fp8_cuda_device_get(struct fp8_cuda_device *info, struct fp8_err *err)
{
    int dev = 0;
    cudaDeviceProp p;
    int rc = fp8_cuda_check(cudaGetDevice(&dev), err, "cudaGetDevice");
    if (rc == 0)
        rc = fp8_cuda_check(cudaGetDeviceProperties(&p, dev), err, "cudaGetDeviceProperties");
    if (rc < 0)
        return rc;
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", p.name);
    info->sm_count = p.multiProcessorCount;
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->global_mem_bytes = (int64_t)p.totalGlobalMem;
    info->l2_bytes = p.l2CacheSize;
    return 0;
}

int fp8_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, struct fp8_err *err)
{
    size_t f = 0, t = 0;
    int rc = fp8_cuda_check(cudaMemGetInfo(&f, &t), err, "cudaMemGetInfo");
    if (rc == 0) {
        *free_bytes = f;
        *total_bytes = t;
    }
    return rc;
}

int fp8_cuda_malloc(void **d_ptr, size_t bytes, struct fp8_err *err)
{
    void *p = NULL;
    int rc = fp8_cuda_check(cudaMalloc(&p, bytes), err, "cudaMalloc(%zu bytes)", bytes);
    if (rc == 0)
        *d_ptr = p;
    return rc;
}

void fp8_cuda_free(void *d_ptr)
{
    if (d_ptr)
        cudaFree(d_ptr);
}

int fp8_cuda_memcpy_h2d(void *d_dst, const void *src, size_t bytes, struct fp8_err *err)
{
    return fp8_cuda_check(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice), err,
                          "copy of %zu bytes to the device", bytes);
}

int fp8_cuda_memcpy_d2h(void *dst, const void *d_src, size_t bytes, struct fp8_err *err)
{
    return fp8_cuda_check(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost), err,
                          "copy of %zu bytes from the device", bytes);
}

int fp8_cuda_memcpy_d2d(void *d_dst, const void *d_src, size_t bytes, void *stream,
                        struct fp8_err *err)
{
    return fp8_cuda_check(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice,
                                          (cudaStream_t)stream),
                          err, "device-to-device copy of %zu bytes", bytes);
}

int fp8_cuda_memset(void *d_dst, int value, size_t bytes, void *stream, struct fp8_err *err)
{
    return fp8_cuda_check(cudaMemsetAsync(d_dst, value, bytes, (cudaStream_t)stream), err,
                          "memset of %zu bytes", bytes);
}

int fp8_cuda_sync(struct fp8_err *err)
{
    return fp8_cuda_check(cudaDeviceSynchronize(), err, "device synchronize");
}

int fp8_cuda_stream_create(void **stream, struct fp8_err *err)
{
    cudaStream_t s;
    int rc = fp8_cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), err,
                            "cudaStreamCreate");
    if (rc == 0)
        *stream = s;
    return rc;
}

void fp8_cuda_stream_destroy(void *stream)
{
    if (stream)
        cudaStreamDestroy((cudaStream_t)stream);
}

int fp8_cuda_event_create(void **event, struct fp8_err *err)
{
    cudaEvent_t e;
    int rc = fp8_cuda_check(cudaEventCreate(&e), err, "cudaEventCreate");
    if (rc == 0)
        *event = e;
    return rc;
}

void fp8_cuda_event_destroy(void *event)
{
    if (event)
        cudaEventDestroy((cudaEvent_t)event);
}

int fp8_cuda_event_record(void *event, void *stream, struct fp8_err *err)
{
    return fp8_cuda_check(cudaEventRecord((cudaEvent_t)event, (cudaStream_t)stream), err,
                          "cudaEventRecord");
}

int fp8_cuda_event_elapsed_ms(float *ms, void *start, void *end, struct fp8_err *err)
{
    float t = 0;
    int rc = fp8_cuda_check(cudaEventSynchronize((cudaEvent_t)end), err,
                            "waiting for a timing event");
    if (rc == 0)
        rc = fp8_cuda_check(cudaEventElapsedTime(&t, (cudaEvent_t)start, (cudaEvent_t)end),
                            err, "cudaEventElapsedTime");
    if (rc == 0)
        *ms = t;
    return rc;
}

int fp8_cuda_graph_capture_begin(void *stream, struct fp8_err *err)
{
    return fp8_cuda_check(cudaStreamBeginCapture((cudaStream_t)stream,
                                                 cudaStreamCaptureModeThreadLocal),
                          err, "cudaStreamBeginCapture");
}

int fp8_cuda_graph_capture_end(void *stream, void **exec, struct fp8_err *err)
{
    cudaGraph_t graph = NULL;
    cudaGraphExec_t ge = NULL;
    int rc = fp8_cuda_check(cudaStreamEndCapture((cudaStream_t)stream, &graph), err,
                            "cudaStreamEndCapture");
    if (rc == 0)
        rc = fp8_cuda_check(cudaGraphInstantiate(&ge, graph, 0), err, "cudaGraphInstantiate");
    if (graph)
        cudaGraphDestroy(graph);
    if (rc == 0)
        *exec = ge;
    return rc;
}

int fp8_cuda_graph_launch(void *exec, void *stream, struct fp8_err *err)
{
    return fp8_cuda_check(cudaGraphLaunch((cudaGraphExec_t)exec, (cudaStream_t)stream), err,
                          "cudaGraphLaunch");
}

void fp8_cuda_graph_destroy(void *exec)
{
    if (exec)
        cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

static __global__ void fill_e4m3_random_kernel(uint8_t *dst, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* splitmix64 of (seed, i): one independent draw per byte */
        uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        uint8_t b = (uint8_t)((z ^ (z >> 31)) >> 56);
        if ((b & 0x7f) == 0x7f) /* NaN codes -> +-448 */
            b ^= 0x01;
        dst[i] = b;
    }
}

int fp8_cuda_fill_e4m3_random(uint8_t *d_dst, size_t n, uint64_t seed, void *stream,
                              struct fp8_err *err)
{
    if (!d_dst && n)
        return fp8_err_set(err, -EINVAL, "fill_e4m3_random: NULL destination");
    if (n == 0)
        return 0;
    fill_e4m3_random_kernel<<<1024, 256, 0, (cudaStream_t)stream>>>(d_dst, n, seed);
    return fp8_cuda_check(cudaGetLastError(), err, "fill_e4m3_random(n=%zu)", n);
}
