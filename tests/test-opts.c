/* The shared serve-style option parser: values land where they should, the caller's own
 * arguments are left alone, and bad values are refused with the option's name. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/opts.h"

/* Parses argv like a command does; returns the index of the first argument that is not
 * one of the shared options (or a negative errno). */
static int parse_all(struct fp8d_opts *o, int argc, char **argv, struct fp8_err *err)
{
    int i = 0;
    while (i < argc) {
        int rc = fp8d_opts_parse(o, argc, argv, &i, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return i;
    }
    return i;
}

static void test_values(void **state)
{
    (void)state;
    char *argv[] = {"--model", "/m", "--backend", "ref", "--weights", "bf16", "--kv-cache-dtype",
                    "f32", "--max-num-batched-tokens", "64", "--temperature", "0.5", "--top-p",
                    "0.9", "--top-k", "40", "--min-p", "0.05", "--seed", "18446744", "--max-tokens",
                    "7", "--ignore-eos", "--enforce-eager", "--tensor-parallel-size", "4",
                    "--repetition-penalty", "1.1", "--presence-penalty", "-0.5", "prompt"};
    int argc = (int)(sizeof(argv) / sizeof(argv[0]));
    struct fp8d_opts o;
    fp8d_opts_init(&o);
    assert_string_equal(o.backend, "cuda");
    assert_int_equal(o.weights, FP8_DTYPE_E4M3);
    assert_int_equal(parse_all(&o, argc, argv, NULL), argc - 1);
    assert_string_equal(o.model_dir, "/m");
    assert_string_equal(o.backend, "ref");
    assert_int_equal(o.weights, FP8_DTYPE_BF16);
    assert_int_equal(o.kv_cache_dtype, FP8_DTYPE_F32);
    assert_int_equal(o.max_num_batched_tokens, 64);
    assert_true(o.sampling.temperature == 0.5f && o.sampling.top_p == 0.9f);
    assert_int_equal(o.sampling.top_k, 40);
    assert_true(o.sampling.min_p == 0.05f);
    assert_true(o.sampling.seed == 18446744u);
    assert_int_equal(o.sampling.max_tokens, 7);
    assert_true(o.sampling.ignore_eos && o.enforce_eager);
    assert_int_equal(o.tensor_parallel_size, 4);
    assert_true(o.sampling.repetition_penalty == 1.1f && o.sampling.presence_penalty == -0.5f);
    assert_true(o.temperature_set && o.top_p_set && o.top_k_set);

    /* Options not given stay unset, so run can take the model's generation defaults. */
    char *only[] = {"--seed", "4"};
    fp8d_opts_init(&o);
    assert_int_equal(parse_all(&o, 2, only, NULL), 2);
    assert_true(!o.temperature_set && !o.top_p_set && !o.top_k_set);
    assert_int_equal(o.tensor_parallel_size, 0); /* not given: one backend, no group */
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        char *opt, *value, *needle;
        int code;
    } cases[] = {
        {"--backend", "tpu", "--backend 'tpu'", -EINVAL},
        {"--weights", "nvfp4", "nvfp4 is not supported yet", -ENOTSUP},
        {"--weights", "f32", "--weights 'f32'", -EINVAL},
        {"--kv-cache-dtype", "auto", "--kv-cache-dtype 'auto'", -EINVAL},
        {"--top-k", "-1", "--top-k '-1'", -EINVAL},
        {"--top-p", "1.5", "--top-p '1.5'", -EINVAL},
        {"--max-tokens", "12x", "--max-tokens '12x'", -EINVAL},
        {"--seed", "-3", "--seed '-3'", -EINVAL},
        {"--temperature", "nan", "--temperature 'nan'", -EINVAL},
        {"--max-model-len", NULL, "--max-model-len needs a value", -EINVAL},
        {"--gpu-memory-utilization", "0.8", "--gpu-memory-utilization is not supported yet", -ENOTSUP},
        {"--tensor-parallel-size", "0", "--tensor-parallel-size '0': expected an integer in [1, 8]",
         -EINVAL},
        {"--tensor-parallel-size", "9", "--tensor-parallel-size '9'", -EINVAL},
        {"--tensor-parallel-size", "two", "--tensor-parallel-size 'two'", -EINVAL},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char *argv[2] = {cases[k].opt, cases[k].value};
        struct fp8d_opts o;
        struct fp8_err err = {{0}};
        fp8d_opts_init(&o);
        int i = 0;
        assert_int_equal(fp8d_opts_parse(&o, cases[k].value ? 2 : 1, argv, &i, &err),
                         cases[k].code);
        assert_int_equal(i, 0);
        if (!strstr(err.msg, cases[k].needle))
            fail_msg("'%s' lacks '%s'", err.msg, cases[k].needle);
    }
}

/* The command-loop step: --help and bad values end the command with their exit status;
 * serve-only options are refused elsewhere instead of being ignored. */
static void noop_usage(FILE *f)
{
    (void)f;
}

static void test_next_step(void **state)
{
    (void)state;
    struct fp8d_opts o;
    int status = -1, i = 0;
    fp8d_opts_init(&o);
    char *help[] = {"--help"};
    assert_int_equal(fp8d_opts_next(&o, 1, help, &i, "run", noop_usage, &status), -1);
    assert_int_equal(status, 0);
    char *mine[] = {"--chat"};
    assert_int_equal(fp8d_opts_next(&o, 1, mine, &i, "run", noop_usage, &status), 0);
    char *seed[] = {"--seed", "3"};
    assert_int_equal(fp8d_opts_next(&o, 2, seed, &i, "run", noop_usage, &status), 1);
    assert_int_equal(i, 2);
    char *bad[] = {"--top-k", "x"};
    i = 0;
    assert_int_equal(fp8d_opts_next(&o, 2, bad, &i, "run", noop_usage, &status), -1);
    assert_int_equal(status, 2);
    char *ep[] = {"--endpoint", "ipc:///tmp/x"};
    status = -1;
    assert_int_equal(fp8d_opts_next(&o, 2, ep, &i, "logits", noop_usage, &status), -1);
    assert_int_equal(status, 2);
    assert_null(o.endpoint);
    assert_int_equal(fp8d_opts_next(&o, 2, ep, &i, "serve", noop_usage, &status), 1);
    assert_string_equal(o.endpoint, "ipc:///tmp/x");
}

/* The backend the options name: a ref group of N ranks (each eager when asked), or one
 * backend without the option; the cuda group fails with a line here (no GPU or no CUDA in
 * this build) unless the machine has the GPUs. */
static void test_backend(void **state)
{
    (void)state;
    struct fp8d_opts o;
    struct fp8_err err = {{0}};
    struct fp8_backend *be = NULL;
    fp8d_opts_init(&o);
    o.backend = "ref";
    o.enforce_eager = true;
    assert_int_equal(fp8d_opts_backend(&o, &be, &err), 0);
    assert_null(be->group);
    assert_true(be->enforce_eager);
    fp8_backend_free(be);
    o.tensor_parallel_size = 3;
    be = NULL;
    assert_int_equal(fp8d_opts_backend(&o, &be, &err), 0);
    assert_non_null(be->group);
    assert_int_equal(be->group->n_ranks, 3);
    for (int32_t r = 0; r < 3; r++) {
        assert_int_equal(be->group->rank[r]->tp_rank, r);
        assert_true(be->group->rank[r]->enforce_eager);
    }
    assert_ptr_equal(be->group->rank[0], be);
    fp8_backend_free(be);

    o.backend = "cuda";
    o.tensor_parallel_size = 8;
    be = NULL;
    int rc = fp8d_opts_backend(&o, &be, &err);
    if (rc == 0) {
        assert_int_equal(be->group->n_ranks, 8);
        fp8_backend_free(be);
    } else if (!strstr(err.msg, "no CUDA device found") && !strstr(err.msg, "built without CUDA") &&
               !strstr(err.msg, "tensor-parallel-size 8 exceeds the")) {
        fail_msg("cuda group of 8: '%s'", err.msg);
    } else {
        assert_null(be);
    }
}

static void test_token_list(void **state)
{
    (void)state;
    int32_t *ids = NULL, n = 0;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8d_parse_token_list("3,0,2147483647", &ids, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[2], 2147483647);
    free(ids);
    const char *bad[] = {"", "1,", ",1", "1,,2", "1,-2", "2147483648", "1 2", "a"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        ids = NULL;
        assert_int_equal(fp8d_parse_token_list(bad[k], &ids, &n, &err), -EINVAL);
        assert_null(ids);
        assert_non_null(strstr(err.msg, "--tokens"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_next_step),
        cmocka_unit_test(test_token_list),
        cmocka_unit_test(test_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
