#include "safetensors_write.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/files.h"

#define ST_WRITE_CHUNK (1u << 20)

static bool tensor_bytes(const struct st_write_tensor *t, uint64_t *out)
{
    uint64_t n = st_dtype_size(t->dtype);
    if (n == 0 || t->n_dims < 0 || t->n_dims > ST_MAX_DIMS)
        return false;
    for (int d = 0; d < t->n_dims; d++)
        if (t->shape[d] < 0 || __builtin_mul_overflow(n, (uint64_t)t->shape[d], &n))
            return false;
    *out = n;
    return true;
}

uint64_t st_write_tensor_bytes(const struct st_write_tensor *t)
{
    uint64_t n = 0;
    return tensor_bytes(t, &n) ? n : 0;
}

/* Layout order: element size descending, then name, as the Python library does. */
static int layout_cmp(const void *a, const void *b, void *base)
{
    const struct st_write_tensor *x = (const struct st_write_tensor *)base + *(const int32_t *)a;
    const struct st_write_tensor *y = (const struct st_write_tensor *)base + *(const int32_t *)b;
    size_t sx = st_dtype_size(x->dtype), sy = st_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static json_t *shape_json(const struct st_write_tensor *t)
{
    json_t *a = json_array();
    for (int d = 0; a && d < t->n_dims; d++)
        json_array_append_new(a, json_integer(t->shape[d]));
    return a;
}

static int write_tensor_data(FILE *fp, const struct st_write_tensor *t, int32_t index,
                             uint64_t n_bytes, st_fill_fn fill, void *ctx, void *chunk,
                             struct fp8_err *err)
{
    for (uint64_t off = 0; off < n_bytes; off += ST_WRITE_CHUNK) {
        uint64_t n = n_bytes - off < ST_WRITE_CHUNK ? n_bytes - off : ST_WRITE_CHUNK;
        const void *src = t->data ? (const uint8_t *)t->data + off : chunk;
        if (!t->data) {
            if (!fill)
                return fp8_err_set(err, -EINVAL, "tensor \"%s\": no data and no fill callback",
                                   t->name);
            int rc = fill(ctx, index, off, chunk, n, err);
            if (rc < 0)
                return rc;
        }
        if (fwrite(src, 1, n, fp) != n)
            return fp8_err_set(err, -EIO, "write failed");
    }
    return 0;
}

/* Writes tensors[idx[0..n)] into path; fill sees indices into tensors. */
static int write_file(const char *path, const struct st_write_tensor *tensors,
                      const int32_t *idx_in, int32_t n, st_fill_fn fill, void *ctx,
                      struct fp8_err *err)
{
    int32_t *idx = malloc(sizeof(*idx) * (size_t)(n ? n : 1));
    json_t *root = json_object();
    char *header = NULL;
    void *chunk = malloc(ST_WRITE_CHUNK);
    FILE *fp = NULL;
    bool created = false;
    int rc;

    if (!idx || !root || !chunk) {
        rc = fp8_err_set(err, -ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    memcpy(idx, idx_in, sizeof(*idx) * (size_t)n);
    qsort_r(idx, (size_t)n, sizeof(*idx), layout_cmp, (void *)tensors);

    json_t *meta = json_pack("{s:s}", "format", "pt");
    if (!meta || json_object_set_new(root, "__metadata__", meta) < 0) {
        rc = fp8_err_set(err, -ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    uint64_t offset = 0;
    for (int32_t k = 0; k < n; k++) {
        const struct st_write_tensor *t = &tensors[idx[k]];
        uint64_t bytes;
        if (!t->name || !tensor_bytes(t, &bytes)) {
            rc = fp8_err_set(err, -EINVAL, "%s: tensor \"%s\": bad dtype or shape", path, t->name);
            goto fail;
        }
        json_t *e = json_pack("{s:s,s:o,s:[I,I]}", "dtype", st_dtype_name(t->dtype), "shape",
                              shape_json(t), "data_offsets", (json_int_t)offset,
                              (json_int_t)(offset + bytes));
        if (!e || json_object_set_new(root, t->name, e) < 0) {
            rc = fp8_err_set(err, -ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        offset += bytes;
    }
    header = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (!header) {
        rc = fp8_err_set(err, -ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    size_t hlen = strlen(header), padded = (hlen + 7) & ~(size_t)7;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++)
        len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));

    fp = fopen(path, "wbx");
    if (!fp) {
        rc = fp8_err_set(err, -errno, "%s: %s", path, strerror(errno));
        goto fail;
    }
    created = true;
    if (fwrite(len_le, 1, 8, fp) != 8 || fwrite(header, 1, hlen, fp) != hlen ||
        fwrite("        ", 1, padded - hlen, fp) != padded - hlen) {
        rc = fp8_err_set(err, -EIO, "%s: write failed", path);
        goto fail;
    }
    for (int32_t k = 0; k < n; k++) {
        const struct st_write_tensor *t = &tensors[idx[k]];
        rc = write_tensor_data(fp, t, idx[k], st_write_tensor_bytes(t), fill, ctx, chunk, err);
        if (rc < 0) {
            fp8_err_prefix(err, rc, "%s", path);
            goto fail;
        }
    }
    rc = fclose(fp);
    fp = NULL;
    if (rc != 0) {
        rc = fp8_err_set(err, -EIO, "%s: write failed", path);
        goto fail;
    }
    free(idx);
    free(chunk);
    free(header);
    json_decref(root);
    return 0;

fail:
    if (fp)
        fclose(fp);
    if (created)
        unlink(path);
    free(idx);
    free(chunk);
    free(header);
    json_decref(root);
    return rc;
}

int st_file_write(const char *path, const struct st_write_tensor *tensors, int32_t n,
                  st_fill_fn fill, void *ctx, struct fp8_err *err)
{
    if (!path || (!tensors && n) || n < 0)
        return fp8_err_set(err, -EINVAL, "st_file_write: bad argument");
    int32_t *idx = malloc(sizeof(*idx) * (size_t)(n ? n : 1));
    if (!idx)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (int32_t i = 0; i < n; i++)
        idx[i] = i;
    int rc = write_file(path, tensors, idx, n, fill, ctx, err);
    free(idx);
    return rc;
}

int st_model_write(const char *dir, const struct st_write_tensor *tensors, int32_t n,
                   uint64_t shard_bytes, st_fill_fn fill, void *ctx, struct fp8_err *err)
{
    if (!dir || (!tensors && n) || n < 0)
        return fp8_err_set(err, -EINVAL, "st_model_write: bad argument");
    uint64_t total = 0;
    for (int32_t i = 0; i < n; i++)
        total += st_write_tensor_bytes(&tensors[i]);
    if (shard_bytes == 0 || total <= shard_bytes) {
        char *path = fp8_path_join(dir, "model.safetensors");
        if (!path)
            return fp8_err_set(err, -ENOMEM, "out of memory");
        int rc = st_file_write(path, tensors, n, fill, ctx, err);
        free(path);
        return rc < 0 ? rc : 1;
    }

    /* Shards take tensors in name order, as transformers' save_pretrained does. */
    int32_t *order = malloc(sizeof(*order) * (size_t)n), *shard_of = malloc(sizeof(*shard_of) * (size_t)n);
    json_t *index = json_object(), *weight_map = json_object();
    char *path = NULL;
    int rc;
    if (!order || !shard_of || !index || !weight_map) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    for (int32_t i = 1; i < n; i++) /* insertion sort by name: stable and allocation-free */
        for (int32_t j = i; j > 0 && strcmp(tensors[order[j - 1]].name, tensors[order[j]].name) > 0; j--) {
            int32_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int32_t n_shards = 0;
    uint64_t used = 0;
    for (int32_t k = 0; k < n; k++) {
        uint64_t b = st_write_tensor_bytes(&tensors[order[k]]);
        if (n_shards == 0 || (used > 0 && used + b > shard_bytes)) {
            n_shards++;
            used = 0;
        }
        used += b;
        shard_of[k] = n_shards - 1;
    }
    if (n_shards > 99999) {
        rc = fp8_err_set(err, -EINVAL, "%d shards: shard size too small", n_shards);
        goto out;
    }
    char name[64];
    for (int32_t s = 0, k = 0; s < n_shards; s++) {
        int32_t first = k;
        while (k < n && shard_of[k] == s)
            k++;
        snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        path = fp8_path_join(dir, name);
        if (!path) {
            rc = fp8_err_set(err, -ENOMEM, "out of memory");
            goto out;
        }
        rc = write_file(path, tensors, order + first, k - first, fill, ctx, err);
        free(path);
        path = NULL;
        if (rc < 0)
            goto out;
        for (int32_t j = first; j < k; j++)
            json_object_set_new(weight_map, tensors[order[j]].name, json_string(name));
    }
    json_object_set_new(index, "metadata", json_pack("{s:I}", "total_size", (json_int_t)total));
    json_object_set(index, "weight_map", weight_map);
    path = fp8_path_join(dir, "model.safetensors.index.json");
    if (!path || json_dump_file(index, path, JSON_INDENT(2) | JSON_SORT_KEYS) < 0) {
        rc = fp8_err_set(err, -EIO, "%s/model.safetensors.index.json: write failed", dir);
        goto out;
    }
    rc = n_shards;
out:
    free(path);
    free(order);
    free(shard_of);
    json_decref(index);
    json_decref(weight_map);
    return rc;
}
