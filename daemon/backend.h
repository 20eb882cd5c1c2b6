/* What the daemon serves, as seen by its two threads: text operations (IPC thread) and a
 * generation engine stepped by the engine thread. The real one is a model on a backend
 * behind the scheduler (daemon/backend_model.c); tests plug in a stub with hand-checkable
 * outputs. Nothing here knows about ZeroMQ, sessions or rings. */
#ifndef FP8D_DAEMON_BACKEND_H
#define FP8D_DAEMON_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "ipc/protocol.h"

/* One generation's settings, every field resolved (the daemon fills what the client left
 * out from the model's defaults). */
struct fp8d_gen_params {
    float temperature; /* 0: greedy */
    float top_p;       /* 1: off */
    int32_t top_k;     /* 0: off */
    float min_p;       /* 0: off */
    uint64_t seed;
    int32_t max_tokens; /* >= 1 */
    bool ignore_eos;
    int32_t priority;  /* protocol's sense: higher is admitted first */
};

enum fp8d_gen_end {
    FP8D_GEN_END_EOS,       /* an end-of-sequence token */
    FP8D_GEN_END_STOP,      /* the on_token callback said stop (a stop string) */
    FP8D_GEN_END_LENGTH,    /* max_tokens or the model length */
    FP8D_GEN_END_CANCELLED, /* cancel() */
    FP8D_GEN_END_ERROR,     /* the model failed on a step that carried it */
};

struct fp8d_gen_result {
    enum fp8d_gen_end end;
    uint32_t prompt_tokens, completion_tokens;
    uint64_t queue_us, prefill_us, decode_us;
};

/* Callbacks of one step, on the engine thread. */
struct fp8d_gen_events {
    void *ctx;
    /* A token was sampled for key (after it is appended). Return true to stop the
     * generation there (FP8D_GEN_END_STOP). */
    bool (*on_token)(void *ctx, uint64_t key, int32_t token);
    /* key finished; it is forgotten afterwards. Called exactly once per submitted key. */
    void (*on_end)(void *ctx, uint64_t key, const struct fp8d_gen_result *r);
};

struct fp8d_load {
    uint32_t running, waiting, kv_blocks_used, kv_blocks_total;
};

struct fp8d_backend {
    void *ctx;
    struct fp8_msg_model model;     /* what `info` answers; strings owned by the backend */
    struct fp8d_gen_params defaults; /* for fields a request leaves out */

    /* ---- IPC thread (may run while the engine thread steps) ---- */
    /* Token ids of text (*ids malloc'd). -EILSEQ for invalid UTF-8 etc., with err. */
    int (*tokenize)(void *ctx, const char *text, size_t len, bool add_special, int32_t **ids,
                    size_t *n, struct fp8_err *err);
    int (*detokenize)(void *ctx, const int32_t *ids, size_t n, char **text, size_t *len,
                      struct fp8_err *err);
    /* The prompt text of a conversation (*out malloc'd, NUL-terminated). */
    int (*chat)(void *ctx, const struct fp8_msg_turn *turns, uint32_t n, bool add_generation,
                int enable_thinking, char **out, size_t *len, struct fp8_err *err);

    /* ---- engine thread ---- */
    /* A streaming detokenizer for one generation (returns NULL on out of memory). push
     * gives the text that became final with id; finish what is still held back. Pieces
     * stay valid until the next call on the same detokenizer. */
    void *(*detok_new)(void *ctx);
    int (*detok_push)(void *d, int32_t id, const char **text, size_t *len);
    int (*detok_finish)(void *d, const char **text, size_t *len);
    void (*detok_free)(void *d);

    /* Queues a generation under key (unique among live ones). -E2BIG (prompt + max_tokens
     * over the model length, err starts with the reason), -EINVAL. */
    int (*submit)(void *ctx, uint64_t key, const int32_t *prompt, int32_t n_prompt,
                  const struct fp8d_gen_params *p, struct fp8_err *err);
    /* Ends key with FP8D_GEN_END_CANCELLED at the next step; its KV blocks are freed now.
     * -ENOENT when key is not live. */
    int (*cancel)(void *ctx, uint64_t key);
    /* Pauses (paused true) or resumes key (ring backpressure): a paused generation keeps
     * its KV blocks but makes no progress and holds no one else up. May be called from
     * on_token. -ENOENT when key is not live. */
    int (*pause)(void *ctx, uint64_t key, bool paused);
    /* Whether step has anything to do (unpaused running or waiting, or ended-but-unreported
     * work). */
    bool (*busy)(void *ctx);
    /* One engine step: reports new tokens and ends. 0, or a negative errno when the step
     * failed as a whole (the requests it carried were ended with FP8D_GEN_END_ERROR). */
    int (*step)(void *ctx, const struct fp8d_gen_events *ev, struct fp8_err *err);
    void (*load)(void *ctx, struct fp8d_load *out);

    void (*free)(void *ctx);
};

#endif
