/* The serve-style options that serve, run, logits and bench share (DESIGN.md's
 * command-line surface), parsed one at a time so each command adds its own around them. */
#ifndef FP8D_DAEMON_OPTS_H
#define FP8D_DAEMON_OPTS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/sampling.h"
#include "kernels/kernels.h"

struct fp8d_opts {
    const char *model_dir;      /* --model DIR */
    const char *synthetic;      /* --synthetic PRESET */
    const char *backend;        /* --backend cuda|ref (default cuda) */
    const char *endpoint;       /* --endpoint URL */
    const char *config_file;    /* --config FILE */
    int32_t max_model_len;      /* --max-model-len N (0: the model's) */
    int32_t max_num_seqs;       /* --max-num-seqs N */
    int32_t max_num_batched_tokens; /* --max-num-batched-tokens N */
    enum fp8_dtype kv_cache_dtype;  /* --kv-cache-dtype fp8|bf16|f32 */
    enum fp8_dtype weights;         /* --weights auto|fp8|bf16 (auto: fp8) */
    bool enforce_eager;             /* --enforce-eager */
    int32_t tensor_parallel_size;   /* --tensor-parallel-size N (0: not given, one backend) */

    /* Per-request sampling (run, and the defaults of serve). */
    struct fp8_sampling_params sampling; /* --temperature --top-p --top-k --min-p --seed
                                            --max-tokens --ignore-eos
                                            --repetition-penalty --presence-penalty */
    bool temperature_set, top_p_set, top_k_set; /* given on the command line: else the
                                                   model's generation_config defaults */
};

void fp8d_opts_init(struct fp8d_opts *o);

/* Parses the option at argv[*i] (with its value at argv[*i + 1] when it takes one).
 * Returns 1 and advances *i past it when it is one of these options, 0 when it is not
 * (the caller's own option or an argument), or a negative errno with a message naming
 * the option and the accepted values. */
int fp8d_opts_parse(struct fp8d_opts *o, int argc, char **argv, int *i, struct fp8_err *err);

/* One step of a command's argument loop: the shared options above, then --help/-h.
 * --endpoint and --config are refused for every command but serve.
 * Returns 1 when argv[*i] was taken (*i advanced), 0 when it is the command's own, and -1
 * when the command must return *exit_status now: 2 after "fp8d CMD: <message>" on stderr
 * for a bad shared option, 0 after usage(stdout) for --help. */
int fp8d_opts_next(struct fp8d_opts *o, int argc, char **argv, int *i, const char *cmd,
                   void (*usage)(FILE *), int *exit_status);

/* The backend the options name: one, or with --tensor-parallel-size N a group of N (cuda:
 * devices 0..N-1 over NCCL; ref: N host threads), *out its rank 0; --enforce-eager set on
 * every rank. fp8_backend_free(*out) frees it either way. */
int fp8d_opts_backend(const struct fp8d_opts *o, struct fp8_backend **out, struct fp8_err *err);

/* Help text for these options, for the commands' --help. */
extern const char fp8d_opts_help[];

/* Strict number parsing shared by the commands: the whole string, in [lo, hi]. */
int fp8d_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
int fp8d_parse_float(const char *s, double lo, double hi, float *out);

/* "1,2,3" -> a malloc'ed array of ids in [0, INT32_MAX]; *n its length (>= 1). */
int fp8d_parse_token_list(const char *s, int32_t **ids, int32_t *n, struct fp8_err *err);

#endif
