/* fp8d logits: teacher-forced logits of a token sequence, little-endian float32
 * [n_tokens, vocab], for comparing backends and checkpoints. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/commands.h"
#include "daemon/opts.h"
#include "daemon/single.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d logits (--model DIR | --synthetic PRESET) --tokens 1,2,3 --out FILE [options]\n"
               "writes teacher-forced logits, little-endian float32 [n_tokens, vocab]\n%s",
            fp8d_opts_help);
}

static int write_le_f32(const char *path, const float *v, size_t n, struct fp8_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return fp8_err_set(err, -errno, "%s: %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        if (fwrite(b, 1, 4, f) != 4)
            break;
    }
    if (ferror(f) | fclose(f))
        return fp8_err_set(err, -EIO, "%s: write failed", path);
    return 0;
}

int cmd_logits(int argc, char **argv)
{
    struct fp8d_opts o;
    struct fp8_err err = {{0}};
    const char *tokens_arg = NULL, *out_path = NULL;
    int32_t *tokens = NULL, n = 0;
    float *logits = NULL;
    struct fp8d_single s = {0};
    int status = 1;

    fp8d_opts_init(&o);
    for (int i = 1; i < argc;) {
        int rc = fp8d_opts_next(&o, argc, argv, &i, "logits", usage, &status);
        if (rc < 0)
            return status;
        if (rc > 0)
            continue;
        if ((!strcmp(argv[i], "--tokens") || !strcmp(argv[i], "--out")) && i + 1 < argc) {
            *(!strcmp(argv[i], "--tokens") ? &tokens_arg : &out_path) = argv[i + 1];
            i += 2;
            continue;
        }
        fprintf(stderr, "fp8d logits: unexpected argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if ((!o.model_dir && !o.synthetic) || !tokens_arg || !out_path) {
        fprintf(stderr, "fp8d logits: --model (or --synthetic), --tokens and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (fp8d_parse_token_list(tokens_arg, &tokens, &n, &err) < 0) {
        fprintf(stderr, "fp8d logits: %s\n", err.msg);
        return 2;
    }
    if (fp8d_single_open(&s, &o, n, &err) < 0)
        goto fail;
    size_t vocab = (size_t)fp8_model_get_config(s.model)->vocab_size;
    logits = malloc((size_t)n * vocab * sizeof(float));
    if (!logits) {
        fp8_err_set(&err, -ENOMEM, "out of memory for %d x %zu logits", n, vocab);
        goto fail;
    }
    if (fp8d_single_run(&s, tokens, 0, n, true, logits, &err) < 0 ||
        write_le_f32(out_path, logits, (size_t)n * vocab, &err) < 0)
        goto fail;
    status = 0;
fail:
    if (status)
        fprintf(stderr, "fp8d logits: %s\n", err.msg);
    fp8d_single_close(&s);
    free(logits);
    free(tokens);
    return status;
}
