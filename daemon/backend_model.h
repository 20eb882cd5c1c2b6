/* The real backend of `fp8d serve`: the model the options name on its kernel backend,
 * behind the continuous-batching scheduler, with the checkpoint's tokenizer and chat
 * template, as the daemon's struct fp8d_backend. */
#ifndef FP8D_DAEMON_BACKEND_MODEL_H
#define FP8D_DAEMON_BACKEND_MODEL_H

#include "common/err.h"
#include "daemon/backend.h"
#include "daemon/opts.h"

/* Loads everything (this is where serve spends its start-up time). *out is filled with
 * the backend; out->free(out->ctx) releases it. */
int fp8d_backend_model_open(struct fp8d_backend *out, const struct fp8d_opts *o,
                            struct fp8_err *err);

#endif
