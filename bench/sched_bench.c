/* Scheduler throughput with a model that costs nothing: how many sequence-steps (one
 * sequence advanced by one step, prefill chunk or decode) the scheduler itself sustains
 * per second on one core. Target: >= 100k, so that scheduling never shows next to a
 * ~2 ms GPU step. Usage: sched_bench [--quick] */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "engine/scheduler.h"

#define VOCAB 32000

/* Returns a (max_seqs, VOCAB) buffer that nobody writes or reads (calloc'd: its pages are
 * never touched), so the step costs only the scheduler's own work. */
static int stub_forward(void *ctx, const struct fp8_batch *b, const float **logits,
                        struct fp8_err *err)
{
    (void)b;
    (void)err;
    *logits = ctx;
    return 0;
}

static int stub_sample(void *ctx, const struct fp8_request *req, const float *logits,
                       int32_t vocab, int32_t *token)
{
    (void)ctx;
    (void)logits;
    *token = (int32_t)((req->n_tokens * 2654435761u) % (uint32_t)vocab);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct config {
    const char *name;
    int32_t max_seqs, prompt, gen, n_requests;
    bool caching;
};

static int run(const struct config *c)
{
    struct fp8_sched_params p = {
        .max_num_seqs = c->max_seqs,
        .max_num_batched_tokens = 8192,
        .max_model_len = 4096,
        .block_size = 16,
        .kv_bytes_per_block = 1 << 20,
        .prefix_caching = c->caching,
    };
    int64_t per_seq = (c->prompt + c->gen + 15) / 16;
    p.kv_budget_bytes = (per_seq * c->max_seqs + 256) << 20;
    struct fp8_sched s = {0};
    struct fp8_err err = {{0}};
    int32_t *prompt = malloc((size_t)c->prompt * sizeof(*prompt));
    float *logits = calloc((size_t)c->max_seqs * VOCAB, sizeof(*logits));
    struct fp8_model_iface mi = {.ctx = logits, .vocab = VOCAB, .forward = stub_forward};
    struct fp8_sampler_iface si = {.sample = stub_sample};
    int rc = 1;
    if (!prompt || !logits) {
        snprintf(err.msg, sizeof(err.msg), "out of memory");
        goto fail;
    }
    if (fp8_sched_init(&s, &p, &mi, &si, &err) < 0)
        goto fail;
    uint64_t rs = 42;
    struct fp8_req_params rp = {.max_tokens = c->gen, .ignore_eos = true};
    int32_t submitted = 0, finished = 0;
    double t0 = now_s();
    while (finished < c->n_requests) {
        /* Keep the running set full, with a little queue behind it. */
        while (submitted < c->n_requests &&
               s.n_waiting + s.n_running < c->max_seqs + c->max_seqs / 4) {
            for (int32_t i = 0; i < c->prompt; i++)
                prompt[i] = (int32_t)(splitmix64_next(&rs) % VOCAB);
            if (fp8_sched_submit(&s, (uint64_t)submitted, prompt, c->prompt, &rp, NULL, &err))
                goto fail;
            submitted++;
        }
        if (fp8_sched_step(&s, &err) < 0)
            goto fail;
        struct fp8_request *q;
        while (fp8_sched_reap(&s, &q)) {
            fp8_request_free(q);
            finished++;
        }
    }
    double dt = now_s() - t0;
    printf("%-22s %5d %6d %5d %9lld %11lld %8.3f %12.0f %9.2f\n", c->name, (int)c->max_seqs,
           (int)c->prompt, (int)c->gen, (long long)s.stats.n_steps, (long long)s.stats.n_seq_steps,
           dt, (double)s.stats.n_seq_steps / dt, dt / (double)s.stats.n_steps * 1e6);
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "sched_bench: %s: %s\n", c->name, err.msg);
    fp8_sched_free(&s);
    free(prompt);
    free(logits);
    return rc;
}

int main(int argc, char **argv)
{
    bool quick = argc > 1 && !strcmp(argv[1], "--quick");
    /* One core: pin to the one we start on. */
    cpu_set_t set;
    CPU_ZERO(&set);
    int cpu = sched_getcpu();
    CPU_SET(cpu < 0 ? 0 : cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);

    int32_t scale = quick ? 1 : 16;
    const struct config configs[] = {
        {"decode-heavy b256", 256, 128, 512, 512 * scale, true},
        {"decode-heavy b256 nopc", 256, 128, 512, 512 * scale, false},
        {"mixed b64", 64, 1024, 64, 256 * scale, true},
        {"small b8", 8, 64, 256, 64 * scale, true},
    };
    printf("%-22s %5s %6s %5s %9s %11s %8s %12s %9s\n", "config", "seqs", "prompt", "gen",
           "steps", "seq-steps", "seconds", "seq-steps/s", "us/step");
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        if (run(&configs[i]))
            return 1;
    return 0;
}
