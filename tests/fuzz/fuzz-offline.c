/* libFuzzer target: offline JSONL requests, parsed and run through the scheduler with the
 * fake model. Whatever the input, every line ends as a result or a named error, the KV
 * accounting holds after every step, no block leaks, and result lines are valid JSON;
 * never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/offline.h"
#include "tests/fake-model.h"

#define MAX_LINES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_step(void *ctx, struct fp8_sched *s)
{
    (void)ctx;
    if (fp8_sched_check(s, NULL) < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fp8_offline_req reqs[MAX_LINES];
    int32_t n = 0;
    size_t at = 0;
    while (at < size && n < MAX_LINES) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (data + at)) : size - at;
        /* A private copy, so that reads past the line are caught by ASan. */
        char *line = malloc(len ? len : 1);
        if (!line)
            break;
        memcpy(line, data + at, len);
        struct fp8_err err = {{0}};
        if (fp8_offline_parse(line, len, NULL, &reqs[n], &err) < 0) {
            if (!err.msg[0])
                abort();
            memcpy(reqs[n].error, err.msg, sizeof(reqs[n].error));
        }
        free(line);
        n++;
        at += len + 1;
    }

    struct fake_model m;
    struct fp8_sched s;
    struct fp8_sched_params p = {
        .max_num_seqs = 3, .max_num_batched_tokens = 8, .max_model_len = 48, .block_size = 4,
        .kv_budget_bytes = 14, .kv_bytes_per_block = 1, .prefix_caching = true,
        .n_eos_ids = 1, .eos_ids = {1},
    };
    if (fake_init(&m, 64, 14, 4, 3) < 0)
        abort();
    struct fp8_model_iface mi = {.ctx = &m, .vocab = 64, .forward = fake_forward};
    struct fp8_sampler_iface si = {.sample = fake_sample};
    if (fp8_sched_init(&s, &p, &mi, &si, NULL) < 0)
        abort();
    struct fp8_offline_step_hook hook = {.after_step = check_step};
    if (fp8_offline_run(&s, reqs, n, NULL, &hook, NULL) < 0)
        abort();
    if (s.kv.n_free + s.kv.n_cached != s.kv.n_blocks || !fp8_sched_idle(&s))
        abort();
    for (int32_t i = 0; i < n; i++) {
        if (!reqs[i].result && !reqs[i].error[0])
            abort();
        char *j = fp8_offline_result_json(&reqs[i]);
        if (!j)
            abort();
        free(j);
        fp8_offline_req_free(&reqs[i]);
    }
    fp8_sched_free(&s);
    fake_free(&m);
    return 0;
}
