/* systemd glue: sd_notify state (READY, STATUS, WATCHDOG, STOPPING) and socket activation.
 * Every call is a no-op outside systemd (no NOTIFY_SOCKET, no LISTEN_FDS), so the daemon
 * runs the same from a terminal. Thread-safe: the engine thread pets the watchdog while
 * the IPC thread reports status. */
#ifndef FP8D_DAEMON_NOTIFY_H
#define FP8D_DAEMON_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Reads WATCHDOG_USEC (for this process) once; 0 when the watchdog is off. */
uint64_t fp8d_notify_watchdog_usec(void);

/* READY=1 with a STATUS line. */
void fp8d_notify_ready(const char *status);

/* STATUS=... (printf-style). */
void fp8d_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* WATCHDOG=1. Call at least every fp8d_notify_watchdog_usec() / 2. */
void fp8d_notify_watchdog(void);

/* STOPPING=1 with a STATUS line. */
void fp8d_notify_stopping(const char *status);

/* Socket activation: 0 when systemd passed no socket; 1 with *fd (the listening socket)
 * and its endpoint URL (ipc://PATH or tcp://ADDR:PORT) in buf when it passed exactly one;
 * -EINVAL when it passed more, or one that is not a Unix or TCP stream listener. */
int fp8d_listen_fd(int *fd, char *buf, size_t cap, struct fp8_err *err);

#endif
