#include "mkmodel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/numeric.h"
#include "engine/files.h"
#include "engine/safetensors_write.h"
#include "engine/tensors.h"
#include "engine/weights.h"

#define TOKENIZER_MAX_BYTES (256u << 20)

static const struct {
    const char *arch, *arch_name, *tiny, *tokenizer;
} archs[] = {
    {"qwen3", "Qwen3ForCausalLM", "qwen3-tiny", "qwen3"},
    {"qwen3_moe", "Qwen3MoeForCausalLM", "qwen3-moe-tiny", "qwen3"},
    {"gemma3", "Gemma3", "gemma3-tiny", "gemma3"}, /* both Gemma3 architectures */
};

static int arch_index(const char *arch)
{
    for (size_t i = 0; arch && i < sizeof(archs) / sizeof(archs[0]); i++)
        if (!strcmp(archs[i].arch, arch))
            return (int)i;
    return -1;
}

const char *fp8_mkmodel_tokenizer_name(const char *arch)
{
    int i = arch_index(arch);
    return i < 0 ? NULL : archs[i].tokenizer;
}

int fp8_tokenizer_vocab_needed(const char *path, int32_t *out, struct fp8_err *err)
{
    json_error_t je;
    char *text = NULL;
    size_t len = 0;
    int rc = fp8_file_read(path, TOKENIZER_MAX_BYTES, &text, &len, err);
    if (rc < 0)
        return rc;
    json_t *root = json_loadb(text, len, 0, &je);
    free(text);
    if (!root)
        return fp8_err_set(err, -EINVAL, "%s: malformed JSON at line %d column %d: %s", path,
                           je.line, je.column, je.text);
    int64_t max_id = -1;
    const json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_object(vocab)) { /* BPE, WordPiece: piece -> id */
        json_object_foreach((json_t *)vocab, key, v)
            if (json_is_integer(v) && json_integer_value(v) > max_id)
                max_id = json_integer_value(v);
    } else if (json_is_array(vocab)) { /* Unigram: [piece, score], id = position */
        max_id = (int64_t)json_array_size(vocab) - 1;
    }
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        const json_t *id = json_object_get(v, "id");
        if (json_is_integer(id) && json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
    }
    json_decref(root);
    if (max_id < 0 || max_id >= (1 << 24))
        return fp8_err_set(err, -EINVAL, "%s: no usable token ids (largest %lld)", path,
                           (long long)max_id);
    *out = (int32_t)(max_id + 1);
    return 0;
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name,
                     struct fp8_err *err)
{
    char *from = fp8_path_join(from_dir, name), *to = fp8_path_join(to_dir, name), *text = NULL;
    size_t len = 0;
    FILE *f = NULL;
    int rc;
    if (!from || !to) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    rc = fp8_file_read(from, TOKENIZER_MAX_BYTES, &text, &len, err);
    if (rc < 0)
        goto out;
    f = fopen(to, "wbx");
    if (!f) {
        rc = fp8_err_set(err, -errno, "%s: %s", to, strerror(errno));
        goto out;
    }
    if (fwrite(text, 1, len, f) != len) {
        rc = fp8_err_set(err, -EIO, "%s: write failed", to);
        fclose(f);
        goto out;
    }
    if (fclose(f) != 0)
        rc = fp8_err_set(err, -EIO, "%s: write failed", to);
out:
    free(from);
    free(to);
    free(text);
    return rc;
}

static int dump_json(const json_t *j, const char *dir, const char *name, struct fp8_err *err)
{
    char *path = fp8_path_join(dir, name);
    /* 15 digits print the presets' short decimals as written (1e-06, not 9.99..e-07). */
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    int rc = 0;
    FILE *f = path ? fopen(path, "wx") : NULL;
    if (!path || !text)
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
    else if (!f)
        rc = fp8_err_set(err, -errno, "%s: %s", path, strerror(errno));
    else if (fputs(text, f) < 0 || fputc('\n', f) < 0)
        rc = fp8_err_set(err, -EIO, "%s: write failed", path);
    if (f && fclose(f) != 0 && rc == 0)
        rc = fp8_err_set(err, -EIO, "%s: write failed", path);
    free(path);
    free(text);
    return rc;
}

struct fill_ctx {
    const struct fp8_tensor_spec *specs;
    uint64_t seed;
    bool norm_plus_one;
    enum st_dtype dtype;
    float *buf; /* one write chunk of floats */
};

/* Writes the synthetic values of engine/weights.h, rounded to the file's dtype. */
static int fill_synth(void *ctx, int32_t i, uint64_t offset, void *out, uint64_t n,
                      struct fp8_err *err)
{
    (void)err;
    struct fill_ctx *f = ctx;
    size_t es = st_dtype_size(f->dtype);
    double mean, std;
    fp8_synth_init(f->specs[i].kind, f->norm_plus_one, &mean, &std);
    float *v = f->dtype == ST_DTYPE_F32 ? out : f->buf;
    fp8_synth_normal(fp8_synth_tensor_seed(f->seed, f->specs[i].name), offset / es, n / es, mean,
                     std, v);
    if (f->dtype == ST_DTYPE_BF16)
        for (uint64_t k = 0; k < n / es; k++)
            ((uint16_t *)out)[k] = f32_to_bf16(v[k]);
    return 0;
}

/* The preset's config with vocab_size and dtype set, as the JSON object to write. */
static int build_config(const char *text, int32_t vocab, enum st_dtype dtype, json_t **out,
                        struct fp8_err *err)
{
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root)
        return fp8_err_set(err, -EINVAL, "preset config: %s", je.text);
    json_t *t = json_object_get(root, "text_config");
    if (!t)
        t = root;
    json_object_set_new(t, "vocab_size", json_integer(vocab));
    json_object_del(root, "dtype");
    json_object_set_new(root, "torch_dtype",
                        json_string(dtype == ST_DTYPE_F32 ? "float32" : "bfloat16"));
    *out = root;
    return 0;
}

int fp8_mkmodel_write(const struct fp8_mkmodel_opts *o, struct fp8_mkmodel_result *r,
                      struct fp8_err *err)
{
    json_t *config = NULL, *gen = NULL;
    char *tok_json = NULL, *probe = NULL, *config_text = NULL, *gen_text = NULL;
    struct fp8_tensor_spec *specs = NULL;
    struct st_write_tensor *wt = NULL;
    struct fill_ctx fill = {0};
    struct fp8_mkmodel_result *res = calloc(1, sizeof(*res));
    int rc;

    if (!res)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    if (!o || !o->out_dir || !o->tokenizer_dir || !r) {
        rc = fp8_err_set(err, -EINVAL, "fp8_mkmodel_write: NULL argument");
        goto out;
    }
    int a = arch_index(o->arch);
    if (a < 0) {
        rc = fp8_err_set(err, -EINVAL, "unknown --arch \"%s\" (supported: qwen3, qwen3_moe, gemma3)",
                         o->arch ? o->arch : "");
        goto out;
    }
    if (o->dtype != ST_DTYPE_BF16 && o->dtype != ST_DTYPE_F32) {
        rc = fp8_err_set(err, -EINVAL, "unsupported weight dtype %s (supported: bf16, f32)",
                         st_dtype_name(o->dtype));
        goto out;
    }
    const char *preset = o->preset ? o->preset : archs[a].tiny;
    const char *preset_config, *preset_gen;
    if (fp8_model_config_preset(preset, &res->config, err) < 0 ||
        fp8_model_config_preset_json(preset, &preset_config, &preset_gen) < 0) {
        rc = -ENOENT;
        goto out;
    }
    if (strncmp(res->config.arch_name, archs[a].arch_name, strlen(archs[a].arch_name))) {
        rc = fp8_err_set(err, -EINVAL, "preset %s is a %s, not --arch %s", preset,
                         res->config.arch_name, o->arch);
        goto out;
    }
    snprintf(res->preset, sizeof(res->preset), "%s", preset);
    res->preset_vocab = res->config.vocab_size;

    tok_json = fp8_path_join(o->tokenizer_dir, "tokenizer.json");
    probe = fp8_path_join(o->out_dir, "config.json");
    if (!tok_json || !probe) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (access(tok_json, R_OK) != 0) {
        rc = fp8_err_set(err, -ENOENT, "%s: %s", tok_json, strerror(errno));
        goto out;
    }
    rc = fp8_tokenizer_vocab_needed(tok_json, &res->tokenizer_vocab, err);
    if (rc < 0)
        goto out;
    int32_t vocab = res->preset_vocab;
    if (vocab < res->tokenizer_vocab)
        vocab = (res->tokenizer_vocab + 63) / 64 * 64;

    if (mkdir(o->out_dir, 0755) < 0 && errno != EEXIST) {
        rc = fp8_err_set(err, -errno, "%s: %s", o->out_dir, strerror(errno));
        goto out;
    }
    if (access(probe, F_OK) == 0) {
        rc = fp8_err_set(err, -EEXIST, "%s already holds a checkpoint (config.json); mkmodel "
                         "writes only into a new or empty directory", o->out_dir);
        goto out;
    }
    json_error_t je;
    if ((rc = build_config(preset_config, vocab, o->dtype, &config, err)) < 0)
        goto out;
    gen = json_loads(preset_gen, 0, &je);
    config_text = json_dumps(config, JSON_COMPACT);
    gen_text = gen ? json_dumps(gen, JSON_COMPACT) : NULL;
    if (!config_text || !gen_text) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    /* The description is re-read from what is written, so the weights match the files. */
    rc = fp8_model_config_parse(config_text, gen_text, &res->config, err);
    if (rc < 0)
        goto out;
    rc = fp8_tensor_specs(&res->config, &specs, err);
    if (rc < 0)
        goto out;
    res->n_tensors = rc;
    res->n_params = fp8_tensor_specs_n_params(specs, res->n_tensors);
    wt = calloc((size_t)res->n_tensors, sizeof(*wt));
    fill = (struct fill_ctx){specs, o->seed, res->config.norm_plus_one, o->dtype,
                             malloc((1u << 20) / 2 * sizeof(float))};
    if (!wt || !fill.buf) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < res->n_tensors; i++) {
        wt[i] = (struct st_write_tensor){specs[i].name, o->dtype, specs[i].n_dims,
                                         {specs[i].shape[0], specs[i].shape[1]}, NULL};
        res->n_bytes += st_write_tensor_bytes(&wt[i]);
    }

    if ((rc = dump_json(config, o->out_dir, "config.json", err)) < 0 ||
        (rc = dump_json(gen, o->out_dir, "generation_config.json", err)) < 0 ||
        (rc = copy_file(o->tokenizer_dir, o->out_dir, "tokenizer.json", err)) < 0 ||
        (rc = copy_file(o->tokenizer_dir, o->out_dir, "tokenizer_config.json", err)) < 0)
        goto out;
    rc = st_model_write(o->out_dir, wt, res->n_tensors, o->shard_bytes, fill_synth, &fill, err);
    if (rc < 0)
        goto out;
    res->n_files = rc;
    *r = *res;
    rc = 0;
out:
    json_decref(config);
    json_decref(gen);
    free(tok_json);
    free(probe);
    free(config_text);
    free(gen_text);
    free(specs);
    free(wt);
    free(fill.buf);
    free(res);
    return rc;
}
