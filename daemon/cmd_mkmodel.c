/* fp8d mkmodel: a deterministic random checkpoint in the Hugging Face layout. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/commands.h"
#include "engine/mkmodel.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d mkmodel --arch qwen3|qwen3_moe|gemma3 --out DIR [--preset NAME]\n"
               "                    [--seed N] [--tokenizer DIR] [--dtype bf16|f32]\n"
               "                    [--shard-size BYTES]\n\n"
               "Writes a checkpoint with random weights (N(0, 0.02); norms near 1) that are a pure\n"
               "function of the seed: config.json and generation_config.json in the Hub's style,\n"
               "model.safetensors (or shards of at most --shard-size bytes with\n"
               "model.safetensors.index.json), and the architecture's real tokenizer.json and\n"
               "tokenizer_config.json, with vocab_size grown to hold every tokenizer id.\n\n"
               "  --arch A          qwen3, qwen3_moe or gemma3\n"
               "  --out DIR         created if missing; must not hold a checkpoint\n"
               "  --preset NAME     default: the arch's tiny preset (qwen3-tiny, qwen3-moe-tiny,\n"
               "                    gemma3-tiny); also");
    for (int i = 0; fp8_model_config_preset_names[i]; i++)
        fprintf(f, " %s", fp8_model_config_preset_names[i]);
    fprintf(f, "\n"
               "  --seed N          default 0\n"
               "  --tokenizer DIR   holds tokenizer.json and tokenizer_config.json; default\n"
               "                    $FP8D_TOKENIZERS/<qwen3|gemma3>, else the source tree's\n"
               "                    .cache/tokenizers/<qwen3|gemma3> (`make tokenizers`)\n"
               "  --dtype bf16|f32  stored weight type, default bf16\n"
               "  --shard-size B    split the weights into shards of at most B bytes (suffix k,\n"
               "                    M or G allowed); default one file\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1;
    if (errno || end == s || s[0] == '-')
        return -1;
    if (*end == 'k' || *end == 'K')
        mul = 1ull << 10, end++;
    else if (*end == 'M')
        mul = 1ull << 20, end++;
    else if (*end == 'G')
        mul = 1ull << 30, end++;
    if (*end || (mul > 1 && v > UINT64_MAX / mul))
        return -1;
    *out = v * mul;
    return 0;
}

int cmd_mkmodel(int argc, char **argv)
{
    static const struct option opts[] = {
        {"arch", required_argument, NULL, 'a'},   {"out", required_argument, NULL, 'o'},
        {"preset", required_argument, NULL, 'p'}, {"seed", required_argument, NULL, 's'},
        {"tokenizer", required_argument, NULL, 't'}, {"dtype", required_argument, NULL, 'd'},
        {"shard-size", required_argument, NULL, 'z'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct fp8_mkmodel_opts mo = {.dtype = ST_DTYPE_BF16};
    char tokdir[4096];
    int o;
    optind = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'a': mo.arch = optarg; break;
        case 'o': mo.out_dir = optarg; break;
        case 'p': mo.preset = optarg; break;
        case 't': mo.tokenizer_dir = optarg; break;
        case 's':
            if (parse_u64(optarg, &mo.seed) < 0) {
                fprintf(stderr, "fp8d mkmodel: --seed \"%s\" is not a non-negative integer\n", optarg);
                return 2;
            }
            break;
        case 'z':
            if (parse_u64(optarg, &mo.shard_bytes) < 0 || mo.shard_bytes == 0) {
                fprintf(stderr, "fp8d mkmodel: --shard-size \"%s\" is not a positive byte count\n", optarg);
                return 2;
            }
            break;
        case 'd':
            if (!strcmp(optarg, "bf16"))
                mo.dtype = ST_DTYPE_BF16;
            else if (!strcmp(optarg, "f32"))
                mo.dtype = ST_DTYPE_F32;
            else {
                fprintf(stderr, "fp8d mkmodel: --dtype \"%s\" is not bf16 or f32\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!mo.arch || !mo.out_dir || optind != argc) {
        fprintf(stderr, "fp8d mkmodel: %s\n", optind != argc ? "unexpected argument"
                                                               : "--arch and --out are required");
        usage(stderr);
        return 2;
    }
    const char *family = fp8_mkmodel_tokenizer_name(mo.arch);
    if (!family) {
        fprintf(stderr, "fp8d mkmodel: unknown --arch \"%s\" (supported: qwen3, qwen3_moe, gemma3)\n",
                mo.arch);
        return 2;
    }
    if (!mo.tokenizer_dir) {
        const char *base = getenv("FP8D_TOKENIZERS");
        snprintf(tokdir, sizeof(tokdir), "%s/%s",
                 base && *base ? base : FP8D_SOURCE_DIR "/.cache/tokenizers", family);
        mo.tokenizer_dir = tokdir;
        char probe[4200];
        snprintf(probe, sizeof(probe), "%s/tokenizer.json", tokdir);
        if (access(probe, R_OK) != 0) {
            fprintf(stderr, "fp8d mkmodel: no %s tokenizer in %s: run `make tokenizers` in the "
                            "fp8d source tree (or pass --tokenizer DIR)\n", family, tokdir);
            return 1;
        }
    }

    struct fp8_mkmodel_result *r = calloc(1, sizeof(*r));
    struct fp8_err err = {{0}};
    if (!r || fp8_mkmodel_write(&mo, r, &err) < 0) {
        fprintf(stderr, "fp8d mkmodel: %s\n", r ? err.msg : "out of memory");
        free(r);
        return 1;
    }
    const struct fp8_model_config *c = &r->config;
    printf("wrote %s: %s from preset %s, seed %llu\n", mo.out_dir, c->arch_name, r->preset,
           (unsigned long long)mo.seed);
    printf("  vocab %d", c->vocab_size);
    if (c->vocab_size != r->preset_vocab)
        printf(" (the preset's %d grown to hold tokenizer ids 0..%d)", r->preset_vocab,
               r->tokenizer_vocab - 1);
    else
        printf(" (tokenizer ids 0..%d)", r->tokenizer_vocab - 1);
    printf(", %d layers, hidden %d\n", c->n_layers, c->hidden_size);
    printf("  %d tensors, %lld parameters, %llu bytes of %s in %s\n", r->n_tensors,
           (long long)r->n_params, (unsigned long long)r->n_bytes,
           mo.dtype == ST_DTYPE_F32 ? "F32" : "BF16",
           r->n_files == 1 ? "model.safetensors" : "shards + model.safetensors.index.json");
    if (r->n_files > 1)
        printf("  %d shards of at most %llu bytes\n", r->n_files, (unsigned long long)mo.shard_bytes);
    printf("  config.json generation_config.json tokenizer.json tokenizer_config.json (from %s)\n",
           mo.tokenizer_dir);
    free(r);
    return 0;
}
