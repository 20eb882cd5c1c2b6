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

/* Device memory by class, for `fp8d bench` and serve's start-up log. The classes are
 * what the backend allocated itself; device_total - device_free is everything the device
 * holds (cudaMemGetInfo), so the difference from their sum is the CUDA context, cuBLASLt,
 * allocation rounding and any other process. */
struct fp8_cuda_mem {
    size_t weights;     /* tensors filled from the host or the random filler */
    size_t kv;          /* the KV pool, scales included */
    size_t activations; /* the model's other tensors */
    size_t scratch;     /* step layout, sampling parameters, attention and GEMM scratch */
    size_t workspace;   /* cuBLASLt's */
    size_t graphs;      /* instantiated decode graphs (cudaMemGetInfo around each) */
    size_t device_free, device_total;
};
int fp8_backend_cuda_mem(const struct fp8_backend *be, struct fp8_cuda_mem *out,
                         struct fp8_err *err);

/* Fills g->rank[0..n_ranks) with cuda backends on devices 0..n_ranks-1, each with its rank
 * of one NCCL communicator (ncclCommInitAll): all_reduce_sum is ncclAllReduce on the
 * rank's stream. Fails naming the sizes when fewer devices are visible. */
int fp8_backend_cuda_group_create(struct fp8_backend_group *g, struct fp8_err *err);

/* Timing of all_reduce_sum in eager steps (CUDA events around each call on the rank's
 * stream, so a late peer's wait counts): on sets it going and clears the totals; *ms and
 * *calls are the totals since. Graph replays are not timed (their nodes have no events). */
void fp8_backend_cuda_time_collectives(struct fp8_backend *be, bool on);
void fp8_backend_cuda_collective_time(const struct fp8_backend *be, double *ms, int64_t *calls);

#ifdef __cplusplus
}
#endif

#endif
