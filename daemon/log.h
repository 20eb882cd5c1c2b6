/* The daemon's log: one line per event with a level. Under systemd (JOURNAL_STREAM or
 * INVOCATION_ID set) lines go to the journal through sd_journal_print with their syslog
 * priority; otherwise to stderr, or to --log-file, which SIGHUP reopens (logrotate).
 * Thread-safe: the IPC and engine threads both log. */
#ifndef FP8D_DAEMON_LOG_H
#define FP8D_DAEMON_LOG_H

#include <stdbool.h>

enum fp8d_log_level {
    FP8D_LOG_ERR,   /* LOG_ERR: the daemon cannot go on, or a request failed on its side */
    FP8D_LOG_WARN,  /* LOG_WARNING: a client broke the protocol, a stream timed out */
    FP8D_LOG_INFO,  /* LOG_INFO: start, ready, sessions, stop */
    FP8D_LOG_DEBUG, /* LOG_DEBUG: every request */
};

/* Where lines go: the journal when journal is true, else file (NULL: stderr), appended
 * to. Lines above max_level are dropped. -errno when the file cannot be opened. */
int fp8d_log_open(bool journal, const char *file, enum fp8d_log_level max_level);

/* Reopens the log file (after logrotate moved it); a no-op for stderr and the journal.
 * On failure the old file stays in use and the failure is logged there. */
void fp8d_log_reopen(void);

void fp8d_log_close(void);

/* Whether the environment says systemd started us with its journal attached. */
bool fp8d_log_under_systemd(void);

/* "error", "warn", "info", "debug" -> level; -EINVAL otherwise. */
int fp8d_log_level_parse(const char *name, enum fp8d_log_level *out);

void fp8d_log(enum fp8d_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
