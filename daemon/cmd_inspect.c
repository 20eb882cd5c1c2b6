/* fp8d inspect --model DIR: validate a checkpoint and print its summary. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "daemon/commands.h"
#include "engine/inspect.h"

#define MAX_DEFECT_LINES 100

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d inspect --model DIR\n\n"
               "Validates a Hugging Face checkpoint directory (config.json, generation_config.json,\n"
               "model.safetensors or its shards, tokenizer.json) and prints its architecture,\n"
               "dimensions, tensors, bytes per dtype, weight format and parameter count.\n"
               "Exits 1 after printing one line per defect to stderr, 2 on bad usage.\n\n"
               "  --model DIR  the checkpoint directory\n"
               "  --help       this text\n");
}

struct defects {
    const char *dir;
    int n;
};

static void print_defect(void *ctx, const char *line)
{
    struct defects *d = ctx;
    if (d->n++ < MAX_DEFECT_LINES)
        fprintf(stderr, "fp8d inspect: %s\n", line);
}

static void print_quantization(const struct fp8_inspect *s)
{
    const struct fp8_tensors_report *r = &s->report;
    enum st_dtype wide = ST_DTYPE_BF16;
    if (s->dtype_bytes[ST_DTYPE_F32] > s->dtype_bytes[wide])
        wide = ST_DTYPE_F32;
    if (s->dtype_bytes[ST_DTYPE_F16] > s->dtype_bytes[wide])
        wide = ST_DTYPE_F16;
    if (!s->checked)
        printf("quantization:  unknown (tensors not checked against the config)\n");
    else if (r->n_fp8 == 0)
        printf("quantization:  %s weights, quantized to fp8 e4m3 at load\n", st_dtype_name(wide));
    else if (r->n_float == 0)
        printf("quantization:  fp8 e4m3 weights with %s scales\n", r->fp8_scales);
    else
        printf("quantization:  fp8 e4m3 weights with %s scales (%d), %d %s weights quantized "
               "at load\n", r->fp8_scales, r->n_fp8, r->n_float, st_dtype_name(wide));
}

static void print_summary(const char *dir, const struct fp8_inspect *s)
{
    const struct fp8_model_config *c = &s->config;
    printf("model:         %s\n", dir);
    if (s->have_config) {
        printf("architecture:  %s\n", c->arch_name);
        printf("model dtype:   %s\n", c->torch_dtype);
        printf("tensor prefix: %s\n", c->tensor_prefix);
        printf("vocab:         %d\n", c->vocab_size);
        printf("hidden:        %d\n", c->hidden_size);
        printf("intermediate:  %d\n", c->intermediate_size);
        printf("layers:        %d\n", c->n_layers);
        printf("heads:         %d (kv %d, head_dim %d)\n", c->n_heads, c->n_kv_heads, c->head_dim);
        if (c->n_experts) {
            int sparse = 0;
            for (int i = 0; i < c->n_layers; i++)
                sparse += c->layers[i].moe;
            printf("experts:       %d (%d per token, intermediate %d%s), %d of %d layers sparse\n",
                   c->n_experts, c->n_experts_per_tok, c->moe_intermediate_size,
                   c->norm_topk_prob ? ", top-k renormalized" : "", sparse, c->n_layers);
        }
        if (c->sliding_window || c->n_experts) {
            printf("layer pattern: ");
            for (int i = 0; i < c->n_layers; i++)
                putchar(c->n_experts ? (c->layers[i].moe ? 'M' : 'D') : (c->layers[i].sliding ? 'S' : 'G'));
            printf(c->n_experts ? "  (M sparse MoE, D dense MLP)\n"
                                : "  (S sliding window of %d, G global)\n", c->sliding_window);
        }
        printf("rope:          theta %g%s", c->rope.theta, c->rope.type == FP8_ROPE_LINEAR ? "" : "\n");
        if (c->rope.type == FP8_ROPE_LINEAR)
            printf(", linear factor %g\n", c->rope.factor);
        if (c->sliding_window)
            printf("rope local:    theta %g\n", c->rope_local.theta);
        if (c->arch == FP8_ARCH_GEMMA3)
            printf("gemma3:        query_pre_attn_scalar %g, embed_scale %g, final_logit_softcapping %g\n",
                   c->query_pre_attn_scalar, c->embed_scale, c->final_logit_softcapping);
        printf("tied embeddings: %s\n", c->tie_word_embeddings ? "yes" : "no");
        printf("eos ids:      ");
        for (int i = 0; i < c->n_eos; i++)
            printf(" %d", c->eos_token_ids[i]);
        printf("%s\n", c->n_eos ? "" : " none");
    }
    if (s->have_tensors) {
        printf("tensors:       %d in %d file%s\n", s->n_tensors, s->n_files, s->n_files == 1 ? "" : "s");
        for (int d = 0; d < ST_DTYPE_COUNT; d++) {
            char key[32];
            if (!s->dtype_tensors[d])
                continue;
            snprintf(key, sizeof(key), "bytes %s:", st_dtype_name((enum st_dtype)d));
            printf("%-15s%llu in %d tensors\n", key, (unsigned long long)s->dtype_bytes[d],
                   s->dtype_tensors[d]);
        }
        if (s->report.n_ignored)
            printf("ignored:       %d tensors the text model does not use\n", s->report.n_ignored);
        print_quantization(s);
    }
    if (s->have_config)
        printf("parameters:    %lld\n", (long long)s->n_params);
    if (s->tokenizer_vocab)
        printf("tokenizer:     ids 0..%d\n", s->tokenizer_vocab - 1);
    else
        printf("tokenizer:     none (no tokenizer.json)\n");
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'm') {
            dir = optarg;
        } else if (o == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!dir || optind != argc) {
        fprintf(stderr, "fp8d inspect: %s\n", dir ? "unexpected argument" : "--model DIR is required");
        usage(stderr);
        return 2;
    }
    struct fp8_inspect s;
    struct defects d = {dir, 0};
    int32_t n = fp8_inspect_dir(dir, &s, print_defect, &d);
    print_summary(dir, &s);
    if (n > MAX_DEFECT_LINES)
        fprintf(stderr, "fp8d inspect: ... and %d more defects\n", n - MAX_DEFECT_LINES);
    if (n) {
        fprintf(stderr, "fp8d inspect: %s: %d defect%s\n", dir, n, n == 1 ? "" : "s");
        return 1;
    }
    printf("status:        ok\n");
    return 0;
}
