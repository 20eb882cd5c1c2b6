/* Writing safetensors checkpoints: what `fp8d mkmodel` produces and what tests use to
 * craft files. The output is what the Python safetensors library writes and accepts:
 * header padded with spaces to a multiple of 8 bytes, data contiguous with no holes,
 * tensors laid out by element size (largest first) then name, so every tensor is aligned
 * to its element size. */
#ifndef FP8_ENGINE_SAFETENSORS_WRITE_H
#define FP8_ENGINE_SAFETENSORS_WRITE_H

#include <stdint.h>

#include "common/err.h"
#include "engine/safetensors.h"

struct st_write_tensor {
    const char *name;
    enum st_dtype dtype;
    int32_t n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* n_bytes of it, or NULL to have the fill callback produce it */
};

/* Produces bytes [offset, offset + n) of tensor i (offset and n are multiples of 8 except
 * for a tensor's last chunk). */
typedef int (*st_fill_fn)(void *ctx, int32_t i, uint64_t offset, void *buf, uint64_t n,
                          struct fp8_err *err);

/* Bytes of tensor t's data (its shape times its element size); 0 on overflow. */
uint64_t st_write_tensor_bytes(const struct st_write_tensor *t);

/* Writes one safetensors file with __metadata__ {"format": "pt"}. The file is removed
 * again when writing fails. */
int st_file_write(const char *path, const struct st_write_tensor *tensors, int32_t n,
                  st_fill_fn fill, void *ctx, struct fp8_err *err);

/* Writes DIR/model.safetensors, or, when the tensors exceed shard_bytes (> 0), shards
 * DIR/model-0000k-of-0000N.safetensors of at most shard_bytes each (a larger tensor gets a
 * shard of its own) plus DIR/model.safetensors.index.json. Returns the number of files
 * holding tensors (1 for a single file). */
int st_model_write(const char *dir, const struct st_write_tensor *tensors, int32_t n,
                   uint64_t shard_bytes, st_fill_fn fill, void *ctx, struct fp8_err *err);

#endif
