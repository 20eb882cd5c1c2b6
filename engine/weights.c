#include "weights.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/numeric.h"
#include "common/rng.h"

#define SPLITMIX_GAMMA 0x9e3779b97f4a7c15ull

struct synth_tensor {
    struct st_tensor t;
    void *data; /* NULL until first lookup */
};

struct fp8_weights {
    struct fp8_model_config config;
    struct st_model *model; /* checkpoint; NULL for synthetic weights */
    uint64_t seed;
    int32_t n_specs;
    struct fp8_tensor_spec *specs; /* (n_specs) */
    int32_t *by_name;              /* (n_specs) spec indices sorted by name */
    struct synth_tensor *synth;    /* (n_specs) */
    pthread_mutex_t lock;          /* guards synth[].data */
};

uint64_t fp8_synth_tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    uint64_t state = seed ^ h;
    return splitmix64_next(&state);
}

static uint64_t synth_bits(uint64_t tensor_seed, uint64_t i)
{
    uint64_t state = tensor_seed + i * SPLITMIX_GAMMA;
    return splitmix64_next(&state);
}

void fp8_synth_normal(uint64_t tensor_seed, uint64_t first, uint64_t n, double mean, double std,
                      float *out)
{
    const double two_pi = 6.283185307179586;
    for (uint64_t j = first; j < first + n;) {
        uint64_t k = j / 2;
        double u1 = ((double)(synth_bits(tensor_seed, 2 * k) >> 11) + 0.5) * 0x1p-53;
        double u2 = (double)(synth_bits(tensor_seed, 2 * k + 1) >> 11) * 0x1p-53;
        double rad = sqrt(-2.0 * log(u1)), angle = two_pi * u2;
        if (j % 2 == 0) {
            out[j - first] = (float)(mean + std * rad * cos(angle));
            j++;
        }
        if (j < first + n) {
            out[j - first] = (float)(mean + std * rad * sin(angle));
            j++;
        }
    }
}

void fp8_synth_init(enum fp8_tensor_kind kind, bool norm_plus_one, double *mean, double *std)
{
    if (kind == FP8_TENSOR_NORM) {
        *mean = norm_plus_one ? 0.0 : 1.0;
        *std = 0.05;
    } else {
        *mean = 0.0;
        *std = 0.02;
    }
}

static int by_name_cmp(const void *a, const void *b, void *specs)
{
    const struct fp8_tensor_spec *s = specs;
    return strcmp(s[*(const int32_t *)a].name, s[*(const int32_t *)b].name);
}

static void defect_first(void *ctx, const char *line)
{
    struct fp8_err *err = ctx;
    if (!err->msg[0])
        snprintf(err->msg, sizeof(err->msg), "%s", line);
}

static int weights_new(const struct fp8_model_config *c, struct fp8_weights **out,
                       struct fp8_err *err)
{
    struct fp8_weights *w = calloc(1, sizeof(*w));
    if (!w)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    w->config = *c;
    pthread_mutex_init(&w->lock, NULL);
    *out = w;
    return 0;
}

int fp8_weights_open_dir(const char *dir, struct fp8_weights **out, struct fp8_err *err)
{
    struct fp8_model_config *c = calloc(1, sizeof(*c));
    struct fp8_weights *w = NULL;
    struct st_model *m = NULL;
    int rc;
    if (!c)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    if (!dir || !out) {
        rc = fp8_err_set(err, -EINVAL, "fp8_weights_open_dir: NULL argument");
        goto fail;
    }
    if ((rc = fp8_model_config_load(dir, c, err)) < 0 || (rc = st_model_open(dir, &m, err)) < 0)
        goto fail;
    if ((rc = fp8_tensors_resolve_prefix(c, m, err)) < 0) {
        fp8_err_prefix(err, rc, "%s", dir);
        goto fail;
    }
    struct fp8_err first = {{0}};
    int32_t n_defects = fp8_tensors_check(c, m, NULL, defect_first, &first);
    if (n_defects > 0) {
        rc = fp8_err_set(err, -EINVAL, "%s: %s (%d defect%s; `fp8d inspect --model %s` lists "
                         "them)", dir, first.msg, n_defects, n_defects == 1 ? "" : "s", dir);
        goto fail;
    }
    if ((rc = weights_new(c, &w, err)) < 0)
        goto fail;
    w->model = m;
    free(c);
    *out = w;
    return 0;
fail:
    st_model_free(m);
    free(c);
    return rc;
}

int fp8_weights_open_config(const struct fp8_model_config *c, uint64_t seed,
                            struct fp8_weights **out, struct fp8_err *err)
{
    struct fp8_weights *w = NULL;
    if (!c || !out)
        return fp8_err_set(err, -EINVAL, "fp8_weights_open_config: NULL argument");
    int rc = weights_new(c, &w, err);
    if (rc < 0)
        return rc;
    w->seed = seed;
    rc = fp8_tensor_specs(&w->config, &w->specs, err);
    if (rc < 0)
        goto fail;
    w->n_specs = rc;
    w->by_name = malloc(sizeof(*w->by_name) * (size_t)w->n_specs);
    w->synth = calloc((size_t)w->n_specs, sizeof(*w->synth));
    if (!w->by_name || !w->synth) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < w->n_specs; i++) {
        const struct fp8_tensor_spec *s = &w->specs[i];
        struct st_tensor *t = &w->synth[i].t;
        w->by_name[i] = i;
        t->name = s->name;
        t->dtype = ST_DTYPE_BF16;
        t->n_dims = s->n_dims;
        t->shape[0] = s->shape[0];
        t->shape[1] = s->n_dims == 2 ? s->shape[1] : 0;
        t->n_bytes = (uint64_t)s->shape[0] * (uint64_t)(s->n_dims == 2 ? s->shape[1] : 1) * 2;
    }
    qsort_r(w->by_name, (size_t)w->n_specs, sizeof(*w->by_name), by_name_cmp, w->specs);
    *out = w;
    return 0;
fail:
    fp8_weights_free(w);
    return rc;
}

int fp8_weights_open_synthetic(const char *preset, uint64_t seed, struct fp8_weights **out,
                               struct fp8_err *err)
{
    struct fp8_model_config *c = calloc(1, sizeof(*c));
    if (!c)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    int rc = fp8_model_config_preset(preset, c, err);
    if (rc == 0)
        rc = fp8_weights_open_config(c, seed, out, err);
    free(c);
    return rc;
}

void fp8_weights_free(struct fp8_weights *w)
{
    if (!w)
        return;
    st_model_free(w->model);
    for (int32_t i = 0; w->synth && i < w->n_specs; i++)
        free(w->synth[i].data);
    free(w->synth);
    free(w->by_name);
    free(w->specs);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

const struct fp8_model_config *fp8_weights_config(const struct fp8_weights *w)
{
    return w ? &w->config : NULL;
}

static int synth_find(const struct fp8_weights *w, const char *name)
{
    int32_t lo = 0, hi = w->n_specs - 1;
    while (lo <= hi) {
        int32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, w->specs[w->by_name[mid]].name);
        if (c == 0)
            return w->by_name[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

/* Generates one synthetic tensor in BF16, a chunk at a time through a float buffer. */
static int synth_make(const struct fp8_weights *w, int32_t i, struct fp8_err *err)
{
    enum { CHUNK = 4096 };
    const struct fp8_tensor_spec *s = &w->specs[i];
    struct synth_tensor *st = &w->synth[i];
    uint64_t n = st->t.n_bytes / 2;
    uint16_t *data = malloc(st->t.n_bytes ? st->t.n_bytes : 1);
    float buf[CHUNK];
    if (!data)
        return fp8_err_set(err, -ENOMEM, "%s: out of memory for %llu bytes", s->name,
                           (unsigned long long)st->t.n_bytes);
    double mean, std;
    fp8_synth_init(s->kind, w->config.norm_plus_one, &mean, &std);
    uint64_t ts = fp8_synth_tensor_seed(w->seed, s->name);
    for (uint64_t j = 0; j < n; j += CHUNK) {
        uint64_t m = n - j < CHUNK ? n - j : CHUNK;
        fp8_synth_normal(ts, j, m, mean, std, buf);
        for (uint64_t k = 0; k < m; k++)
            data[j + k] = f32_to_bf16(buf[k]);
    }
    st->data = data;
    st->t.data = data;
    return 0;
}

/* Tensor name: the checkpoint's (*file), or else the index of the synthetic one (*synth). */
static int weights_find(const struct fp8_weights *w, const char *name,
                        const struct st_tensor **file, int32_t *synth, struct fp8_err *err)
{
    if (w->model) {
        *file = st_model_find(w->model, name);
        if (!*file)
            return fp8_err_set(err, -ENOENT, "no tensor %s in the checkpoint", name);
        return 0;
    }
    *file = NULL;
    *synth = synth_find(w, name);
    if (*synth < 0)
        return fp8_err_set(err, -ENOENT, "no tensor %s in the synthetic %s", name,
                           w->config.arch_name);
    return 0;
}

int fp8_weights_get(struct fp8_weights *w, const char *name, const struct st_tensor **out,
                    struct fp8_err *err)
{
    if (!w || !name || !out)
        return fp8_err_set(err, -EINVAL, "fp8_weights_get: NULL argument");
    const struct st_tensor *t;
    int32_t i;
    int rc = weights_find(w, name, &t, &i, err);
    if (rc < 0)
        return rc;
    if (t) {
        *out = t;
        return 0;
    }
    pthread_mutex_lock(&w->lock);
    if (!w->synth[i].data)
        rc = synth_make(w, i, err);
    pthread_mutex_unlock(&w->lock);
    if (rc == 0)
        *out = &w->synth[i].t;
    return rc;
}

int fp8_weights_getf(struct fp8_weights *w, const struct st_tensor **out, struct fp8_err *err,
                     const char *fmt, ...)
{
    char name[256];
    if (!w || !fmt)
        return fp8_err_set(err, -EINVAL, "fp8_weights_getf: NULL argument");
    int used = snprintf(name, sizeof(name), "%s", w->config.tensor_prefix);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(name + used, sizeof(name) - (size_t)used, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)(used + len) >= sizeof(name))
        return fp8_err_set(err, -ENAMETOOLONG, "tensor name too long");
    return fp8_weights_get(w, name, out, err);
}

int fp8_weights_lm_head(struct fp8_weights *w, const struct st_tensor **out, struct fp8_err *err)
{
    if (!w)
        return fp8_err_set(err, -EINVAL, "fp8_weights_lm_head: NULL argument");
    if (w->config.lm_head_name[0])
        return fp8_weights_get(w, w->config.lm_head_name, out, err);
    return fp8_weights_getf(w, out, err, "embed_tokens.weight");
}

int fp8_weights_meta(struct fp8_weights *w, const char *name, struct st_tensor *out,
                     struct fp8_err *err)
{
    if (!w || !name || !out)
        return fp8_err_set(err, -EINVAL, "fp8_weights_meta: NULL argument");
    const struct st_tensor *t;
    int32_t i;
    int rc = weights_find(w, name, &t, &i, err);
    if (rc < 0)
        return rc;
    if (t) {
        *out = *t;
        return 0;
    }
    pthread_mutex_lock(&w->lock);
    *out = w->synth[i].t;
    pthread_mutex_unlock(&w->lock);
    return 0;
}

bool fp8_weights_synthetic(const struct fp8_weights *w, uint64_t *seed)
{
    if (!w || w->model)
        return false;
    if (seed)
        *seed = w->seed;
    return true;
}
