/* safetensors checkpoints, single-file or sharded (model.safetensors.index.json),
 * mmap'ed read-only. Every header is validated before any tensor is exposed: header
 * length bound, well-formed JSON, known dtypes, shape x dtype size == byte span, spans
 * inside the file and not overlapping, unique names. */
#ifndef FP8_ENGINE_SAFETENSORS_H
#define FP8_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define ST_MAX_DIMS 4

enum st_dtype {
    ST_DTYPE_F32,
    ST_DTYPE_F16,
    ST_DTYPE_BF16,
    ST_DTYPE_F8_E4M3,
    ST_DTYPE_U8,
    ST_DTYPE_I8,
    ST_DTYPE_I32,
    ST_DTYPE_COUNT,
};

struct st_tensor {
    const char *name;
    enum st_dtype dtype;
    int32_t n_dims;
    int64_t shape[ST_MAX_DIMS]; /* outermost first, as in the file */
    const void *data;           /* inside the mapping; little-endian */
    uint64_t n_bytes;
};

struct st_model; /* opaque: the open files of one checkpoint */

/* Opens DIR/model.safetensors or, when present, DIR/model.safetensors.index.json and
 * every shard it names. *out is untouched on failure. */
int st_model_open(const char *dir, struct st_model **out, struct fp8_err *err);
void st_model_free(struct st_model *m); /* accepts NULL */

int32_t st_model_n_tensors(const struct st_model *m);
const struct st_tensor *st_model_tensor(const struct st_model *m, int32_t i);
const struct st_tensor *st_model_find(const struct st_model *m, const char *name); /* NULL: absent */
int32_t st_model_index(const struct st_model *m, const char *name); /* -1: absent; tensors are by name */

int32_t st_model_n_files(const struct st_model *m);
const char *st_model_file_path(const struct st_model *m, int32_t i); /* NULL past the end */

/* "[a, b]" into buf (cut at size). */
void st_shape_format(char *buf, size_t size, const int64_t *shape, int32_t n_dims);

const char *st_dtype_name(enum st_dtype dtype);
size_t st_dtype_size(enum st_dtype dtype);

#endif
