/* fp8d run: one prompt, prefill then decode, output streamed to stdout as it is sampled:
 * text for a text prompt (DIR/tokenizer.json; the model's chat template unless
 * --no-chat), token ids for --tokens. (This loop is the plain single-sequence path.)
 * With --requests FILE.jsonl: an offline batch through the scheduler (engine/offline.h),
 * one JSON result line per request on stdout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/commands.h"
#include "daemon/opts.h"
#include "daemon/single.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "engine/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: fp8d run (--model DIR | --synthetic PRESET) [options] [--chat|--no-chat] (\"prompt\" | --tokens 1,2,3)\n"
               "       fp8d run (--model DIR | --synthetic PRESET) [options] [--chat|--no-chat]\n"
               "                --requests FILE.jsonl [--kv-cache-memory BYTES]\n"
               "streams the generated text (token ids for --tokens) to stdout; with --requests,\n"
               "runs the file's requests through the scheduler (sampling options are their\n"
               "defaults; KV pool default: max-num-seqs full-length sequences, at most 1 GiB)\n"
               "and prints one JSON result per request\n%s",
            fp8d_opts_help);
}

/* The prompt's token ids: rendered through the chat template as one user message (the
 * template writes any BOS itself), or encoded as is with the tokenizer's special tokens. */
static int encode_prompt(const char *dir, const struct fp8_tokenizer *tok, const char *prompt,
                         bool chat, int32_t **ids, int32_t *n, struct fp8_err *err)
{
    char *text = NULL;
    size_t len = strlen(prompt), n_ids = 0;
    int rc = 0;
    if (chat) {
        struct fp8_model_config *cfg = malloc(sizeof(*cfg));
        struct fp8_chat_template t;
        struct fp8_chat_message msg = {.role = "user", .content = prompt};
        if (!cfg)
            return fp8_err_set(err, -ENOMEM, "out of memory");
        if ((rc = fp8_model_config_load(dir, cfg, err)) < 0 ||
            (rc = fp8_chat_template_init(&t, cfg->arch_name, err)) < 0 ||
            (rc = fp8_chat_render(&t, &msg, 1, true, -1, &text, &len, err)) < 0) {
            free(cfg);
            return rc;
        }
        free(cfg);
    }
    rc = fp8_tokenizer_encode(tok, text ? text : prompt, len, !chat, ids, &n_ids, err);
    free(text);
    if (rc < 0)
        return rc;
    if (n_ids == 0 || n_ids > INT32_MAX) {
        free(*ids);
        return fp8_err_set(err, -EINVAL, "the prompt encodes to %zu tokens", n_ids);
    }
    *n = (int32_t)n_ids;
    return 0;
}

/* ---- --requests: the offline batch through the scheduler ---------------------------- */

struct run_text {
    const char *dir;
    const struct fp8_tokenizer *tok;
    bool chat;
};

static int text_tokenize(void *ctx, const char *text, int32_t **ids, int32_t *n_ids,
                         struct fp8_err *err)
{
    const struct run_text *t = ctx;
    return encode_prompt(t->dir, t->tok, text, t->chat, ids, n_ids, err);
}

static int text_detokenize(void *ctx, const int32_t *ids, int32_t n_ids, char **text,
                           struct fp8_err *err)
{
    const struct run_text *t = ctx;
    size_t len;
    for (int32_t i = 0; i < n_ids; i++)
        if (ids[i] >= fp8_tokenizer_n_vocab(t->tok))
            return fp8_err_set(err, -ERANGE, "id %d has no text in the tokenizer", ids[i]);
    return fp8_tokenizer_decode(t->tok, ids, (size_t)n_ids, true, text, &len, err);
}

/* The request defaults: the command line's sampling options, the model's generation
 * defaults where those were not given. */
static struct fp8_req_params request_defaults(const struct fp8d_opts *o,
                                              const struct fp8_model_config *cfg)
{
    const struct fp8_sampling_params *s = &o->sampling;
    return (struct fp8_req_params){
        .sampling = {
            .temperature = o->temperature_set ? s->temperature : cfg->default_temperature,
            .top_p = o->top_p_set ? s->top_p : cfg->default_top_p,
            .top_k = o->top_k_set ? s->top_k : cfg->default_top_k,
            .min_p = s->min_p,
            .repetition_penalty = s->repetition_penalty,
            .presence_penalty = s->presence_penalty,
            .seed = s->seed,
        },
        .max_tokens = s->max_tokens,
        .ignore_eos = s->ignore_eos,
    };
}

static int run_requests(const struct fp8d_opts *o, const char *path, bool chat,
                        int64_t kv_bytes, struct fp8_err *err)
{
    struct fp8_backend *be = NULL;
    struct fp8_weights *w = NULL;
    struct fp8_tokenizer *tok = NULL;
    struct fp8_engine e = {0};
    FILE *in = NULL;
    int rc;
    if (!(in = fopen(path, "r")))
        return fp8_err_set(err, -errno, "--requests %s: %s", path, strerror(errno));
    if ((rc = fp8d_opts_backend(o, &be, err)) < 0)
        goto out;
    rc = o->model_dir ? fp8_weights_open_dir(o->model_dir, &w, err)
                      : fp8_weights_open_synthetic(o->synthetic, 0, &w, err);
    if (rc < 0)
        goto out;
    const struct fp8_model_config *cfg = fp8_weights_config(w);
    struct fp8_engine_params p = fp8_engine_params_default();
    p.weight_dtype = o->weights;
    p.kv_dtype = o->kv_cache_dtype;
    p.max_num_seqs = o->max_num_seqs;
    p.max_num_batched_tokens = o->max_num_batched_tokens;
    p.max_model_len = o->max_model_len ? o->max_model_len : cfg->max_position_embeddings;
    if (kv_bytes > 0) {
        p.kv_budget_bytes = kv_bytes;
    } else {
        struct fp8_kv_cache_desc one = fp8_model_kv_desc(cfg, p.kv_dtype, p.block_size, 1);
        int64_t blocks = (int64_t)p.max_num_seqs * ((p.max_model_len + p.block_size - 1) /
                                                    p.block_size);
        p.kv_budget_bytes = blocks * fp8_kv_block_bytes(&one);
        if (p.kv_budget_bytes > (1ll << 30))
            p.kv_budget_bytes = 1ll << 30;
    }
    if ((rc = fp8_engine_init(&e, w, be, &p, err)) < 0)
        goto out;
    char tpath[4096];
    snprintf(tpath, sizeof(tpath), "%s/tokenizer.json", o->model_dir ? o->model_dir : "");
    if (o->model_dir && access(tpath, R_OK) == 0 &&
        (rc = fp8_tokenizer_load(&tok, tpath, err)) < 0)
        goto out;
    struct run_text t = {.dir = o->model_dir, .tok = tok, .chat = chat};
    struct fp8_offline_text text = {.ctx = &t};
    if (tok) {
        text.tokenize = text_tokenize;
        text.detokenize = text_detokenize;
    }
    struct fp8_req_params defaults = request_defaults(o, cfg);
    rc = fp8_offline_run_file(&e.sched, in, stdout, &defaults, &text, err);
out:
    fclose(in);
    fp8_tokenizer_free(tok);
    fp8_engine_free(&e);
    fp8_weights_free(w);
    fp8_backend_free(be);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    struct fp8d_opts o;
    struct fp8_err err = {{0}};
    const char *tokens_arg = NULL, *prompt = NULL, *requests = NULL;
    int64_t kv_bytes = 0;
    bool chat = true;
    int32_t *seq = NULL, n_prompt = 0, *pen = NULL;
    uint8_t *seen = NULL;
    struct fp8d_single s = {0};
    struct fp8_tokenizer *tok = NULL;
    struct fp8_detok detok = {0};
    int status = 1;

    fp8d_opts_init(&o);
    for (int i = 1; i < argc;) {
        int rc = fp8d_opts_next(&o, argc, argv, &i, "run", usage, &status);
        if (rc < 0)
            return status;
        if (rc > 0)
            continue;
        if (!strcmp(argv[i], "--chat") || !strcmp(argv[i], "--no-chat")) {
            chat = !strcmp(argv[i++], "--chat");
            continue;
        }
        if (!strcmp(argv[i], "--requests") && i + 1 < argc) {
            requests = argv[i + 1];
            i += 2;
            continue;
        }
        if (!strcmp(argv[i], "--kv-cache-memory") && i + 1 < argc) {
            if (fp8d_parse_i64(argv[i + 1], 1, INT64_MAX, &kv_bytes) < 0) {
                fprintf(stderr, "fp8d run: --kv-cache-memory '%s': expected a byte count\n",
                        argv[i + 1]);
                return 2;
            }
            i += 2;
            continue;
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
    if (requests) {
        if (tokens_arg || prompt || (!o.model_dir && !o.synthetic)) {
            fprintf(stderr, "fp8d run: --requests needs --model (or --synthetic) and takes no "
                            "prompt or --tokens\n");
            usage(stderr);
            return 2;
        }
        if (fp8_sampling_params_check(&o.sampling, &err) < 0 ||
            run_requests(&o, requests, chat, kv_bytes, &err) < 0) {
            fprintf(stderr, "fp8d run: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if ((!o.model_dir && !o.synthetic) || (!tokens_arg == !prompt)) {
        fprintf(stderr, "fp8d run: --model (or --synthetic) and one of --tokens or a prompt are required "
                        "(interactive mode is not there yet)\n");
        usage(stderr);
        return 2;
    }
    if (fp8_sampling_params_check(&o.sampling, &err) < 0 ||
        (tokens_arg && fp8d_parse_token_list(tokens_arg, &seq, &n_prompt, &err) < 0)) {
        fprintf(stderr, "fp8d run: %s\n", err.msg);
        return 2;
    }
    if (prompt) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/tokenizer.json", o.model_dir);
        if (fp8_tokenizer_load(&tok, path, &err) < 0 ||
            encode_prompt(o.model_dir, tok, prompt, chat, &seq, &n_prompt, &err) < 0 ||
            fp8_detok_init(&detok, tok, true, &err) < 0)
            goto fail;
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
    pen = malloc((size_t)max_len * sizeof(int32_t));
    seen = calloc((size_t)cfg->vocab_size, 1);
    if (!pen || !seen) {
        fp8_err_set(&err, -ENOMEM, "out of memory");
        goto fail;
    }
    /* Prefill the prompt, then one token a step: the backend draws from the last logits
     * (only the id comes back); stream it, feed it back. */
    int32_t n = n_prompt, fed = 0;
    for (int32_t step = 0; step < max_new; step++) {
        struct fp8_sample_row row;
        int32_t t = 0;
        fp8_sample_row_fill(&row, &o.sampling, (uint32_t)step, seq, n, n_prompt,
                            cfg->vocab_size, seen, pen, 0);
        if (fp8d_single_sample(&s, seq + fed, fed, n - fed, &row, pen, &t, &err) < 0)
            goto fail;
        fed = n;
        seq[n++] = t;
        if (tok) {
            const char *piece;
            size_t len;
            if (t >= fp8_tokenizer_n_vocab(tok)) {
                fp8_err_set(&err, -ERANGE, "sampled id %d has no text in the tokenizer (%d ids)",
                            t, fp8_tokenizer_n_vocab(tok));
                goto fail;
            }
            if (fp8_detok_push(&detok, t, &piece, &len, &err) < 0)
                goto fail;
            fwrite(piece, 1, len, stdout);
        } else {
            printf("%s%d", step ? " " : "", t);
        }
        fflush(stdout);
        if (fp8_sampling_finish(&o.sampling, cfg->eos_token_ids, cfg->n_eos, t, step + 1) !=
            FP8_FINISH_NONE)
            break;
    }
    if (tok) {
        const char *piece;
        size_t len;
        if (fp8_detok_finish(&detok, &piece, &len, &err) < 0)
            goto fail;
        fwrite(piece, 1, len, stdout);
    }
    printf("\n");
    status = 0;
fail:
    if (status)
        fprintf(stderr, "fp8d run: %s\n", err.msg);
    fp8_detok_free(&detok);
    fp8_tokenizer_free(tok);
    fp8d_single_close(&s);
    free(pen);
    free(seen);
    free(seq);
    return status;
}
