/* Helpers for tests that run the built programs and work with files. Include after
 * <cmocka.h>: failures are cmocka assertions. */
#ifndef FP8_TESTS_TEST_UTIL_H
#define FP8_TESTS_TEST_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* The built program name ("fp8d", "fp8") in $FP8D_BUILD, or in build/ when that is unset. */
static inline void built_binary(const char *name, char *path, size_t cap)
{
    const char *b = getenv("FP8D_BUILD");
    snprintf(path, cap, "%s/%s", b ? b : "build", name);
}

/* Runs cmd through the shell, its stdout into out (at most cap - 1 bytes, NUL-terminated).
 * Returns the exit status, or -1 when it did not exit normally. */
static inline int capture_cmd(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs "fp8d ARGS" (the built binary) through the shell, stdout into out, and stderr too
 * when with_stderr (else it is discarded). Returns the exit status as capture_cmd does. */
static inline int run_fp8d(const char *args, bool with_stderr, char *out, size_t cap)
{
    char fp8d[512], cmd[8192];
    built_binary("fp8d", fp8d, sizeof(fp8d));
    snprintf(cmd, sizeof(cmd), "%s %s %s", fp8d, args, with_stderr ? "2>&1" : "2>/dev/null");
    return capture_cmd(cmd, out, cap);
}

/* Creates or replaces the file path with text. */
static inline void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

#endif
