#include "safetensors_header.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static const struct {
    const char *name;
    size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_DTYPE_F32] = {"F32", 4},     [ST_DTYPE_F16] = {"F16", 2}, [ST_DTYPE_BF16] = {"BF16", 2},
    [ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [ST_DTYPE_U8] = {"U8", 1}, [ST_DTYPE_I8] = {"I8", 1},
    [ST_DTYPE_I32] = {"I32", 4},
};

const char *st_dtype_name(enum st_dtype dtype)
{
    return (unsigned)dtype < ST_DTYPE_COUNT ? st_dtypes[dtype].name : "?";
}

size_t st_dtype_size(enum st_dtype dtype)
{
    return (unsigned)dtype < ST_DTYPE_COUNT ? st_dtypes[dtype].size : 0;
}

int st_dtype_from_name(const char *name)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (!strcmp(name, st_dtypes[i].name))
            return i;
    return -1;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one (overlong forms,
 * surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_seq_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* One pass over the raw JSON before jansson sees it: UTF-8 validity, reported with the
 * string it occurs in, and a nesting bound, so that a nesting bomb costs no recursion. */
static int header_prescan(const uint8_t *h, size_t n, struct fp8_err *err)
{
    int depth = 0;
    bool in_string = false, escaped = false;
    size_t string_start = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len(h + i, n - i);
        if (!len) {
            if (in_string)
                return fp8_err_set(err, -EINVAL,
                                   "invalid UTF-8 byte 0x%02x at header byte %zu, in the "
                                   "string (tensor name or value) starting at header byte %zu",
                                   h[i], i, string_start);
            return fp8_err_set(err, -EINVAL, "invalid UTF-8 byte 0x%02x at header byte %zu",
                               h[i], i);
        }
        uint8_t c = h[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
            string_start = i;
        } else if (c == '{' || c == '[') {
            if (++depth > ST_HEADER_MAX_DEPTH)
                return fp8_err_set(err, -EINVAL,
                                   "JSON nested deeper than %d levels at header byte %zu",
                                   ST_HEADER_MAX_DEPTH, i);
        } else if (c == '}' || c == ']') {
            depth--;
        }
        i += len;
    }
    return 0;
}

/* Reads a JSON array of at most max non-negative integers into v. Returns the count, or
 * -1 when it is not such an array. */
static int json_u64_array(const json_t *a, int64_t *v, int max)
{
    if (!json_is_array(a) || json_array_size(a) > (size_t)max)
        return -1;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return -1;
        v[i] = json_integer_value(x);
    }
    return (int)json_array_size(a);
}

void st_shape_format(char *buf, size_t size, const int64_t *shape, int32_t n_dims)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int32_t d = 0; d < n_dims && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static int check_metadata(const json_t *meta, struct fp8_err *err)
{
    const char *key;
    const json_t *value;
    if (!json_is_object(meta))
        return fp8_err_set(err, -EINVAL, "\"__metadata__\" is not an object of strings");
    json_object_foreach((json_t *)meta, key, value)
        if (!json_is_string(value))
            return fp8_err_set(err, -EINVAL, "\"__metadata__\" key \"%s\" is not a string", key);
    return 0;
}

/* Validates one tensor entry and fills t (data still relative: begin in t->data's place). */
static int parse_entry(const char *name, size_t name_len, const json_t *e, uint64_t data_size,
                       struct st_tensor *t, uint64_t *begin, struct fp8_err *err)
{
    const char *key;
    const json_t *value;
    if (name_len == 0)
        return fp8_err_set(err, -EINVAL, "empty tensor name");
    if (name_len > ST_NAME_MAX_BYTES)
        return fp8_err_set(err, -EINVAL, "tensor name of %zu bytes (limit %d) starting \"%.40s\"",
                           name_len, ST_NAME_MAX_BYTES, name);
    for (size_t i = 0; i < name_len; i++)
        if ((uint8_t)name[i] < 0x20 || name[i] == 0x7f)
            return fp8_err_set(err, -EINVAL, "tensor name \"%.64s\" contains control character 0x%02x",
                               name, (uint8_t)name[i]);
    if (!json_is_object(e))
        return fp8_err_set(err, -EINVAL, "tensor \"%s\": entry is not an object", name);
    json_object_foreach((json_t *)e, key, value)
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return fp8_err_set(err, -EINVAL, "tensor \"%s\": unknown key \"%.64s\"", name, key);

    const json_t *jd = json_object_get(e, "dtype");
    if (!json_is_string(jd))
        return fp8_err_set(err, -EINVAL, "tensor \"%s\": \"dtype\" missing or not a string", name);
    int dtype = st_dtype_from_name(json_string_value(jd));
    if (dtype < 0)
        return fp8_err_set(err, -EINVAL,
                           "tensor \"%s\": unsupported dtype \"%.32s\" (supported: F32 F16 BF16 "
                           "F8_E4M3 U8 I8 I32)", name, json_string_value(jd));

    int64_t shape[ST_MAX_DIMS];
    const json_t *js = json_object_get(e, "shape");
    if (!js)
        return fp8_err_set(err, -EINVAL, "tensor \"%s\": \"shape\" missing", name);
    if (json_is_array(js) && json_array_size(js) > ST_MAX_DIMS)
        return fp8_err_set(err, -EINVAL, "tensor \"%s\": %zu dimensions (at most %d supported)",
                           name, json_array_size(js), ST_MAX_DIMS);
    int n_dims = json_u64_array(js, shape, ST_MAX_DIMS);
    if (n_dims < 0)
        return fp8_err_set(err, -EINVAL,
                           "tensor \"%s\": \"shape\" is not an array of non-negative integers", name);

    int64_t off[2];
    const json_t *jo = json_object_get(e, "data_offsets");
    if (!jo)
        return fp8_err_set(err, -EINVAL, "tensor \"%s\": \"data_offsets\" missing", name);
    if (json_u64_array(jo, off, 2) != 2)
        return fp8_err_set(err, -EINVAL,
                           "tensor \"%s\": \"data_offsets\" is not [begin, end] of non-negative "
                           "integers", name);
    if (off[0] > off[1])
        return fp8_err_set(err, -EINVAL, "tensor \"%s\": data_offsets [%" PRId64 ", %" PRId64
                           "] end before they begin", name, off[0], off[1]);

    char shape_s[128];
    st_shape_format(shape_s, sizeof(shape_s), shape, n_dims);
    uint64_t n_bytes = st_dtype_size((enum st_dtype)dtype);
    for (int d = 0; d < n_dims; d++)
        if (__builtin_mul_overflow(n_bytes, (uint64_t)shape[d], &n_bytes))
            return fp8_err_set(err, -EINVAL, "tensor \"%s\": shape %s x %s overflows 64 bits",
                               name, shape_s, st_dtype_name((enum st_dtype)dtype));
    uint64_t span = (uint64_t)(off[1] - off[0]);
    if (n_bytes != span)
        return fp8_err_set(err, -EINVAL,
                           "tensor \"%s\": shape %s x %s (%zu bytes each) is %" PRIu64
                           " bytes, but data_offsets [%" PRId64 ", %" PRId64 "] span %" PRIu64,
                           name, shape_s, st_dtype_name((enum st_dtype)dtype),
                           st_dtype_size((enum st_dtype)dtype), n_bytes, off[0], off[1], span);
    if ((uint64_t)off[1] > data_size)
        return fp8_err_set(err, -EINVAL,
                           "tensor \"%s\": data_offsets [%" PRId64 ", %" PRId64
                           "] run past the end of the data area (%" PRIu64 " bytes)",
                           name, off[0], off[1], data_size);

    t->dtype = (enum st_dtype)dtype;
    t->n_dims = n_dims;
    memset(t->shape, 0, sizeof(t->shape));
    memcpy(t->shape, shape, (size_t)n_dims * sizeof(shape[0]));
    t->n_bytes = n_bytes;
    *begin = (uint64_t)off[0];
    return 0;
}

struct span {
    uint64_t begin, end;
    int32_t index;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

int st_header_parse(const void *file, uint64_t file_size, struct st_header *out,
                    struct fp8_err *err)
{
    const uint8_t *f = file;
    json_t *root = NULL;
    struct st_tensor *tensors = NULL;
    struct span *spans = NULL;
    char *names = NULL;
    int rc;

    if (!file || !out)
        return fp8_err_set(err, -EINVAL, "st_header_parse: NULL argument");
    if (file_size < 8)
        return fp8_err_set(err, -EINVAL,
                           "file of %" PRIu64 " bytes is too short for the 8-byte header length",
                           file_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f[i];
    if (hlen > ST_HEADER_MAX_BYTES)
        return fp8_err_set(err, -EINVAL, "header length %" PRIu64 " exceeds the %u-byte limit",
                           hlen, ST_HEADER_MAX_BYTES);
    if (hlen > file_size - 8)
        return fp8_err_set(err, -EINVAL,
                           "header length %" PRIu64 " runs past the end of the file (%" PRIu64
                           " bytes): truncated file?", hlen, file_size);
    if (hlen < 2 || f[8] != '{')
        return fp8_err_set(err, -EINVAL, "header does not start with a JSON object");
    rc = header_prescan(f + 8, hlen, err);
    if (rc < 0)
        return rc;

    json_error_t je;
    root = json_loadb((const char *)f + 8, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (strstr(je.text, "duplicate object key"))
            rc = fp8_err_set(err, -EINVAL, "duplicate key (tensor name) at header byte %d: %s",
                             je.position, je.text);
        else
            rc = fp8_err_set(err, -EINVAL, "malformed JSON at header byte %d: %s", je.position,
                             je.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = fp8_err_set(err, -EINVAL, "header is not a JSON object");
        goto fail;
    }

    size_t n_keys = json_object_size(root), names_bytes = 0;
    const char *key;
    size_t key_len;
    json_t *value;
    json_object_keylen_foreach(root, key, key_len, value) names_bytes += key_len + 1;
    tensors = calloc(n_keys ? n_keys : 1, sizeof(*tensors));
    spans = calloc(n_keys ? n_keys : 1, sizeof(*spans));
    names = malloc(names_bytes ? names_bytes : 1);
    if (!tensors || !spans || !names) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory for %zu header entries", n_keys);
        goto fail;
    }

    uint64_t data_offset = 8 + hlen, data_size = file_size - data_offset;
    int32_t n = 0;
    size_t names_used = 0;
    json_object_keylen_foreach(root, key, key_len, value) {
        if (!strcmp(key, "__metadata__")) {
            rc = check_metadata(value, err);
            if (rc < 0)
                goto fail;
            continue;
        }
        struct st_tensor *t = &tensors[n];
        uint64_t begin = 0;
        rc = parse_entry(key, key_len, value, data_size, t, &begin, err);
        if (rc < 0)
            goto fail;
        if ((data_offset + begin) % st_dtype_size(t->dtype)) {
            rc = fp8_err_set(err, -EINVAL,
                             "tensor \"%s\": data at file offset %" PRIu64
                             " is not aligned to its %s element size (%zu)", key,
                             data_offset + begin, st_dtype_name(t->dtype), st_dtype_size(t->dtype));
            goto fail;
        }
        memcpy(names + names_used, key, key_len + 1);
        t->name = names + names_used;
        t->data = f + data_offset + begin;
        names_used += key_len + 1;
        spans[n] = (struct span){begin, begin + t->n_bytes, n};
        n++;
    }

    /* Sorted by start, a span overlaps an earlier one iff it starts before the furthest
     * end seen so far; empty tensors occupy no bytes and overlap nothing. */
    qsort(spans, (size_t)n, sizeof(*spans), span_cmp);
    const struct span *furthest = NULL;
    for (int32_t i = 0; i < n; i++) {
        const struct span *a = furthest, *b = &spans[i];
        if (b->end == b->begin)
            continue;
        if (!a || b->end > a->end)
            furthest = b;
        if (a && b->begin < a->end) {
            rc = fp8_err_set(err, -EINVAL,
                             "tensors \"%s\" [%" PRIu64 ", %" PRIu64 ") and \"%s\" [%" PRIu64
                             ", %" PRIu64 ") overlap in the data area",
                             tensors[a->index].name, a->begin, a->end, tensors[b->index].name,
                             b->begin, b->end);
            goto fail;
        }
    }

    json_decref(root);
    free(spans);
    out->n_tensors = n;
    out->tensors = tensors;
    out->names = names;
    out->data_offset = data_offset;
    return 0;

fail:
    json_decref(root);
    free(spans);
    free(tensors);
    free(names);
    return rc;
}

void st_header_free(struct st_header *h)
{
    if (!h)
        return;
    free(h->tensors);
    free(h->names);
    h->tensors = NULL;
    h->names = NULL;
    h->n_tensors = 0;
}
