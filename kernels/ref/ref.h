/* The reference backend: plain C11, fp32 arithmetic over the stored formats of
 * kernels/kernels.h, host memory. Slow on purpose-free grounds: it is the oracle. */
#ifndef FP8_KERNELS_REF_REF_H
#define FP8_KERNELS_REF_REF_H

#include "kernels/kernels.h"

int fp8_backend_ref_create(struct fp8_backend **out, struct fp8_err *err);
/* Fills g->rank[0..n_ranks) with ref backends whose all_reduce_sum meet at a host barrier
 * (kernels/ref/group.c): the CPU stand-in for NCCL, one thread per rank. */
int fp8_backend_ref_group_create(struct fp8_backend_group *g, struct fp8_err *err);

#endif
