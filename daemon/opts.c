#include "daemon/opts.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char fp8d_opts_help[] =
    "  --model DIR                  Hugging Face model directory\n"
    "  --synthetic PRESET           random weights with a real model's shapes\n"
    "  --backend cuda|ref           (default cuda; ref is the CPU reference)\n"
    "  --weights auto|fp8|bf16      stored weight format (auto: fp8 e4m3)\n"
    "  --kv-cache-dtype fp8|bf16|f32  (f32: ref backend only)\n"
    "  --max-model-len N  --max-num-seqs N  --max-num-batched-tokens N  --enforce-eager\n"
    "  --tensor-parallel-size N     split the model over N GPUs (1..8; ref: N threads)\n"
    "  --temperature T  --top-p P  --top-k K  --min-p P  --seed S  --max-tokens N\n"
    "  --repetition-penalty R  --presence-penalty P  --ignore-eos\n";

void fp8d_opts_init(struct fp8d_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->backend = "cuda";
    o->max_num_seqs = 16;
    o->max_num_batched_tokens = 2048;
    o->kv_cache_dtype = FP8_DTYPE_E4M3;
    o->weights = FP8_DTYPE_E4M3;
    o->sampling = fp8_sampling_params_default();
}

int fp8d_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

int fp8d_parse_float(const char *s, double lo, double hi, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi)
        return -EINVAL;
    *out = (float)v;
    return 0;
}

int fp8d_parse_token_list(const char *s, int32_t **ids, int32_t *n, struct fp8_err *err)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = malloc(cap * sizeof(int32_t));
    if (!v)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    int32_t count = 0;
    const char *p = s;
    for (;;) {
        char num[24];
        size_t len = strcspn(p, ",");
        int64_t x;
        if (len == 0 || len >= sizeof(num)) {
            free(v);
            return fp8_err_set(err, -EINVAL, "--tokens: '%s' is not a comma-separated list of "
                               "token ids", s);
        }
        memcpy(num, p, len);
        num[len] = 0;
        if (fp8d_parse_i64(num, 0, INT32_MAX, &x) < 0) {
            free(v);
            return fp8_err_set(err, -EINVAL, "--tokens: '%s' is not a token id", num);
        }
        v[count++] = (int32_t)x;
        if (!p[len])
            break;
        p += len + 1;
    }
    *ids = v;
    *n = count;
    return 0;
}

static int parse_dtype(const char *opt, const char *v, bool kv, enum fp8_dtype *out,
                       struct fp8_err *err)
{
    if (!strcmp(v, "fp8") || (!kv && !strcmp(v, "auto")))
        *out = FP8_DTYPE_E4M3;
    else if (!strcmp(v, "bf16"))
        *out = FP8_DTYPE_BF16;
    else if (kv && !strcmp(v, "f32"))
        *out = FP8_DTYPE_F32;
    else if (!kv && !strcmp(v, "nvfp4"))
        return fp8_err_set(err, -ENOTSUP, "%s nvfp4 is not supported yet (fp8, bf16)", opt);
    else
        return fp8_err_set(err, -EINVAL, "%s '%s': expected %s", opt, v,
                           kv ? "fp8, bf16 or f32" : "auto, fp8 or bf16");
    return 0;
}

enum opt_kind { OPT_STR, OPT_I32, OPT_FLOAT, OPT_FLAG, OPT_SPECIAL };

int fp8d_opts_parse(struct fp8d_opts *o, int argc, char **argv, int *i, struct fp8_err *err)
{
    const char *a = argv[*i];
    struct fp8_sampling_params *sp = &o->sampling;
    struct {
        const char *name;
        enum opt_kind kind;
        void *dst;
        double lo, hi;
    } table[] = {
        {"--model", OPT_STR, &o->model_dir, 0, 0},
        {"--synthetic", OPT_STR, &o->synthetic, 0, 0},
        {"--backend", OPT_SPECIAL, NULL, 0, 0},
        {"--endpoint", OPT_STR, &o->endpoint, 0, 0},
        {"--config", OPT_STR, &o->config_file, 0, 0},
        {"--max-model-len", OPT_I32, &o->max_model_len, 1, INT32_MAX},
        {"--max-num-seqs", OPT_I32, &o->max_num_seqs, 1, 65536},
        {"--max-num-batched-tokens", OPT_I32, &o->max_num_batched_tokens, 1, INT32_MAX},
        {"--gpu-memory-utilization", OPT_SPECIAL, NULL, 0, 0},
        {"--kv-cache-dtype", OPT_SPECIAL, NULL, 0, 0},
        {"--weights", OPT_SPECIAL, NULL, 0, 0},
        {"--enforce-eager", OPT_FLAG, &o->enforce_eager, 0, 0},
        {"--tensor-parallel-size", OPT_I32, &o->tensor_parallel_size, 1, FP8_BACKEND_MAX_RANKS},
        {"--temperature", OPT_FLOAT, &sp->temperature, 0.0, 100.0},
        {"--top-p", OPT_FLOAT, &sp->top_p, 1e-6, 1.0},
        {"--top-k", OPT_I32, &sp->top_k, 0, INT32_MAX},
        {"--min-p", OPT_FLOAT, &sp->min_p, 0.0, 1.0},
        {"--repetition-penalty", OPT_FLOAT, &sp->repetition_penalty, 1e-3, 100.0},
        {"--presence-penalty", OPT_FLOAT, &sp->presence_penalty, -100.0, 100.0},
        {"--max-tokens", OPT_I32, &sp->max_tokens, 0, INT32_MAX},
        {"--seed", OPT_SPECIAL, NULL, 0, 0},
        {"--ignore-eos", OPT_FLAG, &sp->ignore_eos, 0, 0},
    };
    for (size_t k = 0; k < sizeof(table) / sizeof(table[0]); k++) {
        if (strcmp(a, table[k].name))
            continue;
        if (table[k].kind == OPT_FLAG) {
            *(bool *)table[k].dst = true;
            (*i)++;
            return 1;
        }
        if (*i + 1 >= argc)
            return fp8_err_set(err, -EINVAL, "%s needs a value", a);
        const char *v = argv[*i + 1];
        int64_t x;
        int rc = 0;
        switch (table[k].kind) {
        case OPT_STR:
            *(const char **)table[k].dst = v;
            break;
        case OPT_I32:
            if (fp8d_parse_i64(v, (int64_t)table[k].lo, (int64_t)table[k].hi, &x) < 0)
                return fp8_err_set(err, -EINVAL, "%s '%s': expected an integer in [%.0f, %.0f]",
                                   a, v, table[k].lo, table[k].hi);
            *(int32_t *)table[k].dst = (int32_t)x;
            break;
        case OPT_FLOAT:
            if (fp8d_parse_float(v, table[k].lo, table[k].hi, table[k].dst) < 0)
                return fp8_err_set(err, -EINVAL, "%s '%s': expected a number in [%g, %g]", a, v,
                                   table[k].lo, table[k].hi);
            break;
        default:
            if (!strcmp(a, "--backend")) {
                if (strcmp(v, "cuda") && strcmp(v, "ref"))
                    return fp8_err_set(err, -EINVAL, "--backend '%s': expected cuda or ref", v);
                o->backend = v;
            } else if (!strcmp(a, "--gpu-memory-utilization")) {
                /* Refused rather than ignored: the pool is not sized from free memory yet. */
                return fp8_err_set(err, -ENOTSUP,
                                   "--gpu-memory-utilization is not supported yet: the KV pool "
                                   "holds --max-num-seqs sequences of --max-model-len tokens");
            } else if (!strcmp(a, "--seed")) {
                if (fp8d_parse_i64(v, 0, INT64_MAX, &x) < 0)
                    return fp8_err_set(err, -EINVAL, "--seed '%s': expected an integer >= 0", v);
                sp->seed = (uint64_t)x;
            } else {
                rc = parse_dtype(a, v, !strcmp(a, "--kv-cache-dtype"),
                                 !strcmp(a, "--weights") ? &o->weights : &o->kv_cache_dtype, err);
            }
            break;
        }
        if (rc < 0)
            return rc;
        o->temperature_set |= table[k].dst == &sp->temperature;
        o->top_p_set |= table[k].dst == &sp->top_p;
        o->top_k_set |= table[k].dst == &sp->top_k;
        *i += 2;
        return 1;
    }
    return 0;
}

int fp8d_opts_backend(const struct fp8d_opts *o, struct fp8_backend **out, struct fp8_err *err)
{
    struct fp8_backend *be = NULL;
    int rc = o->tensor_parallel_size
                 ? fp8_backend_group_create(o->backend, o->tensor_parallel_size, &be, err)
                 : fp8_backend_create(o->backend, &be, err);
    if (rc < 0)
        return rc;
    if (be->group)
        for (int32_t r = 0; r < be->group->n_ranks; r++)
            be->group->rank[r]->enforce_eager = o->enforce_eager;
    else
        be->enforce_eager = o->enforce_eager;
    *out = be;
    return 0;
}

int fp8d_opts_next(struct fp8d_opts *o, int argc, char **argv, int *i, const char *cmd,
                   void (*usage)(FILE *), int *exit_status)
{
    struct fp8_err err = {{0}};
    int rc;
    /* Refused, not ignored, where they would have no effect. */
    if (strcmp(cmd, "serve") && (!strcmp(argv[*i], "--endpoint") || !strcmp(argv[*i], "--config")))
        rc = fp8_err_set(&err, -EINVAL, "%s is read by serve only", argv[*i]);
    else
        rc = fp8d_opts_parse(o, argc, argv, i, &err);
    if (rc < 0) {
        fprintf(stderr, "fp8d %s: %s\n", cmd, err.msg);
        *exit_status = 2;
        return -1;
    }
    if (rc > 0)
        return 1;
    if (!strcmp(argv[*i], "--help") || !strcmp(argv[*i], "-h")) {
        usage(stdout);
        *exit_status = 0;
        return -1;
    }
    return 0;
}
