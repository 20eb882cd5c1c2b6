/* Error reporting shared by every library in fp8d.
 *
 * Functions return 0 (or a count) on success and a negative errno-style code on failure.
 * Callers that want to know *why* pass a struct fp8_err; the callee leaves one
 * human-readable line in it that names the file, tensor, option or byte offset at fault.
 * Libraries never print: the daemon and the CLI decide where the line goes. */
#ifndef FP8_COMMON_ERR_H
#define FP8_COMMON_ERR_H

#include <stddef.h>

struct fp8_err {
    char msg[512];
};

/* Formats the message into err (when err is non-NULL) and returns code, so that a failure
 * path reads `return fp8_err_set(err, -EINVAL, "...", ...);`. */
int fp8_err_set(struct fp8_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the message already in err (context added on the way up). */
int fp8_err_prefix(struct fp8_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
