/* fp8d run: one prompt, prefill then decode, tokens streamed to stdout as they come.
 * (The scheduler will take this over; this loop is the plain single-sequence path.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/commands.h"
#include "daemon/opts.h"
#include "daemon/single.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d run --model DIR [options] (--tokens 1,2,3 | \"prompt\")\n"
               "prints the generated token ids as they are sampled\n%s",
            fp8d_opts_help);
}

int cmd_run(int argc, char **argv)
{
    struct fp8d_opts o;
    struct fp8_err err = {{0}};
    const char *tokens_arg = NULL, *prompt = NULL;
    int32_t *seq = NULL, n_prompt = 0;
    float *logits = NULL;
    struct fp8d_single s = {0};
    struct fp8_sampler sampler = {0};
    int status = 1;

    fp8d_opts_init(&o);
    for (int i = 1; i < argc;) {
        int rc = fp8d_opts_parse(&o, argc, argv, &i, &err);
        if (rc < 0) {
            fprintf(stderr, "fp8d run: %s\n", err.msg);
            return 2;
        }
        if (rc > 0)
            continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
            tokens_arg = argv[i + 1];
            i += 2;
            continue;
        }
        if (argv[i][0] != '-' && !prompt) {
            prompt = argv[i++];
            continue;
        }
        fprintf(stderr, "fp8d run: unexpected argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    if (!o.model_dir || (!tokens_arg == !prompt)) {
        fprintf(stderr, "fp8d run: --model and one of --tokens or a prompt are required\n");
        usage(stderr);
        return 2;
    }
    if (prompt) {
        fprintf(stderr, "fp8d run: text prompts need the tokenizer, which this build does not "
                        "have yet; pass --tokens\n");
        return 2;
    }
    if (fp8_sampling_params_check(&o.sampling, &err) < 0 ||
        fp8d_parse_token_list(tokens_arg, &seq, &n_prompt, &err) < 0) {
        fprintf(stderr, "fp8d run: %s\n", err.msg);
        free(seq);
        return 2;
    }
    int32_t max_new = o.sampling.max_tokens, max_len = n_prompt + (max_new > 0 ? max_new : 0);
    int32_t *grown = realloc(seq, (size_t)max_len * sizeof(int32_t));
    if (!grown) {
        fp8_err_set(&err, -ENOMEM, "out of memory");
        goto fail;
    }
    seq = grown;
    if (fp8d_single_open(&s, &o, max_len, &err) < 0)
        goto fail;
    const struct fp8_model_config *cfg = fp8_model_get_config(s.model);
    if (!o.temperature_set)
        o.sampling.temperature = cfg->default_temperature;
    if (!o.top_p_set)
        o.sampling.top_p = cfg->default_top_p;
    if (!o.top_k_set)
        o.sampling.top_k = cfg->default_top_k;
    if (fp8_sampling_params_check(&o.sampling, &err) < 0)
        goto fail;
    logits = malloc((size_t)cfg->vocab_size * sizeof(float));
    if (!logits) {
        fp8_err_set(&err, -ENOMEM, "out of memory");
        goto fail;
    }
    if (fp8_sampler_init(&sampler, cfg->vocab_size, &err) < 0)
        goto fail;
    /* Prefill the prompt, then one token a step: sample from the last logits, stream it,
     * feed it back. */
    int32_t n = n_prompt, fed = 0;
    for (int32_t step = 0; step < max_new; step++) {
        if (fp8d_single_run(&s, seq + fed, fed, n - fed, false, logits, &err) < 0)
            goto fail;
        fed = n;
        int32_t t = fp8_sampler_sample(&sampler, logits, &o.sampling, seq, n, n_prompt,
                                       (uint32_t)step);
        seq[n++] = t;
        printf("%s%d", step ? " " : "", t);
        fflush(stdout);
        if (fp8_sampling_finish(&o.sampling, cfg->eos_token_ids, cfg->n_eos, t, step + 1) !=
            FP8_FINISH_NONE)
            break;
    }
    printf("\n");
    status = 0;
fail:
    if (status)
        fprintf(stderr, "fp8d run: %s\n", err.msg);
    fp8_sampler_free(&sampler);
    fp8d_single_close(&s);
    free(logits);
    free(seq);
    return status;
}
