#include "inspect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/files.h"
#include "engine/mkmodel.h"

struct counter {
    fp8_defect_fn defect;
    void *ctx;
    int32_t n;
};

static void count_defect(void *ctx, const char *line)
{
    struct counter *c = ctx;
    c->n++;
    if (c->defect)
        c->defect(c->ctx, line);
}

int32_t fp8_inspect_dir(const char *dir, struct fp8_inspect *out, fp8_defect_fn defect, void *ctx)
{
    struct counter k = {defect, ctx, 0};
    struct st_model *m = NULL;
    struct fp8_err err = {{0}};
    char *tok = NULL;

    memset(out, 0, sizeof(*out));
    if (!dir) {
        count_defect(&k, "no model directory given");
        return k.n;
    }
    if (fp8_model_config_load(dir, &out->config, &err) < 0)
        count_defect(&k, err.msg);
    else
        out->have_config = true;
    if (st_model_open(dir, &m, &err) < 0) {
        count_defect(&k, err.msg);
    } else {
        out->have_tensors = true;
        out->n_tensors = st_model_n_tensors(m);
        out->n_files = st_model_n_files(m);
        for (int32_t i = 0; i < out->n_tensors; i++) {
            const struct st_tensor *t = st_model_tensor(m, i);
            out->dtype_tensors[t->dtype]++;
            out->dtype_bytes[t->dtype] += t->n_bytes;
        }
    }
    if (out->have_config && out->have_tensors) {
        if (fp8_tensors_resolve_prefix(&out->config, m, &err) < 0) {
            count_defect(&k, err.msg);
        } else {
            fp8_tensors_check(&out->config, m, &out->report, count_defect, &k);
            out->checked = true;
        }
    }
    if (out->have_config) {
        struct fp8_tensor_spec *specs = NULL;
        int32_t n = fp8_tensor_specs(&out->config, &specs, &err);
        if (n < 0)
            count_defect(&k, err.msg);
        else
            out->n_params = fp8_tensor_specs_n_params(specs, n);
        free(specs);
    }

    /* Every id the tokenizer can produce must have an embedding row. */
    tok = fp8_path_join(dir, "tokenizer.json");
    if (tok && access(tok, F_OK) == 0) {
        if (fp8_tokenizer_vocab_needed(tok, &out->tokenizer_vocab, &err) < 0)
            count_defect(&k, err.msg);
        else if (out->have_config && out->tokenizer_vocab > out->config.vocab_size) {
            char line[256];
            snprintf(line, sizeof(line), "tokenizer.json has ids up to %d, beyond vocab_size %d",
                     out->tokenizer_vocab - 1, out->config.vocab_size);
            count_defect(&k, line);
        }
    }
    free(tok);
    st_model_free(m);
    return k.n;
}
