/* The CUDA backend: struct fp8_backend_ops over device memory (kernels/cuda/backend_cuda.cu).
 * Built only with WITH_CUDA=1; fp8_backend_create("cuda") is the way in. */
#ifndef FP8_KERNELS_CUDA_BACKEND_CUDA_H
#define FP8_KERNELS_CUDA_BACKEND_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/kernels.h"

/* Fails with a message when no CUDA device is usable. */
int fp8_backend_cuda_create(struct fp8_backend **out, struct fp8_err *err);

/* Bytes of device memory the backend holds now (tensors, KV cache, step buffers and
 * workspace), for `fp8d bench`'s accounting; 0 for another backend. */
size_t fp8_backend_cuda_bytes(const struct fp8_backend *be);

#ifdef __cplusplus
}
#endif

#endif
