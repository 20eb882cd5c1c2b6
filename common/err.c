#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int fp8_err_set(struct fp8_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

int fp8_err_prefix(struct fp8_err *err, int code, const char *fmt, ...)
{
    if (err) {
        char old[sizeof(err->msg)];
        va_list ap;
        memcpy(old, err->msg, sizeof(old));
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        /* The message is cut at the buffer's end, never overrun. */
        size_t used = n < 0 ? 0 : (size_t)n < sizeof(err->msg) ? (size_t)n : sizeof(err->msg) - 1;
        size_t room = sizeof(err->msg) - 1 - used;
        size_t sep = room < 2 ? room : 2;
        memcpy(err->msg + used, ": ", sep);
        size_t len = strnlen(old, sizeof(old) - 1);
        if (len > room - sep)
            len = room - sep;
        memcpy(err->msg + used + sep, old, len);
        err->msg[used + sep + len] = '\0';
    }
    return code;
}
