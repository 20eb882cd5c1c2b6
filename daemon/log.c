#include "daemon/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include <systemd/sd-journal.h>

static struct {
    pthread_mutex_t lock;
    bool journal;
    char *path;        /* the --log-file, NULL for stderr */
    FILE *file;        /* path opened for appending, NULL for stderr */
    enum fp8d_log_level max_level;
} g_log = {PTHREAD_MUTEX_INITIALIZER, false, NULL, NULL, FP8D_LOG_INFO};

static const int priorities[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
static const char *const names[] = {"error", "warn", "info", "debug"};

bool fp8d_log_under_systemd(void)
{
    return getenv("JOURNAL_STREAM") || getenv("INVOCATION_ID");
}

int fp8d_log_level_parse(const char *name, enum fp8d_log_level *out)
{
    for (int i = 0; i <= FP8D_LOG_DEBUG; i++)
        if (!strcmp(name, names[i])) {
            *out = (enum fp8d_log_level)i;
            return 0;
        }
    return -EINVAL;
}

int fp8d_log_open(bool journal, const char *file, enum fp8d_log_level max_level)
{
    FILE *f = NULL;
    char *path = NULL;
    if (file) {
        path = strdup(file);
        f = path ? fopen(file, "ae") : NULL;
        if (!f) {
            int rc = path ? -errno : -ENOMEM;
            free(path);
            return rc;
        }
        setvbuf(f, NULL, _IOLBF, 0);
    }
    pthread_mutex_lock(&g_log.lock);
    if (g_log.file)
        fclose(g_log.file);
    free(g_log.path);
    g_log.journal = journal && !file;
    g_log.file = f;
    g_log.path = path;
    g_log.max_level = max_level;
    pthread_mutex_unlock(&g_log.lock);
    return 0;
}

void fp8d_log_reopen(void)
{
    int rc = 0;
    pthread_mutex_lock(&g_log.lock);
    if (g_log.path) {
        FILE *f = fopen(g_log.path, "ae");
        if (f) {
            setvbuf(f, NULL, _IOLBF, 0);
            fclose(g_log.file);
            g_log.file = f;
        } else {
            rc = -errno;
        }
    }
    pthread_mutex_unlock(&g_log.lock);
    if (rc < 0)
        fp8d_log(FP8D_LOG_ERR, "SIGHUP: cannot reopen the log file: %s (still writing to "
                 "the old one)", strerror(-rc));
    else
        fp8d_log(FP8D_LOG_INFO, "log reopened");
}

void fp8d_log_close(void)
{
    pthread_mutex_lock(&g_log.lock);
    if (g_log.file)
        fclose(g_log.file);
    free(g_log.path);
    g_log.file = NULL;
    g_log.path = NULL;
    g_log.journal = false;
    pthread_mutex_unlock(&g_log.lock);
}

void fp8d_log(enum fp8d_log_level level, const char *fmt, ...)
{
    if (level > g_log.max_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_log.lock);
    if (g_log.journal) {
        sd_journal_print(priorities[level], "%s", line);
    } else {
        /* The journal stamps its own lines; a file or a terminal needs the time. */
        struct timespec ts;
        struct tm tm;
        char stamp[32];
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(g_log.file ? g_log.file : stderr, "%s.%03ldZ fp8d %s: %s\n", stamp,
                ts.tv_nsec / 1000000, names[level], line);
    }
    pthread_mutex_unlock(&g_log.lock);
}
