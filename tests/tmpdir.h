/* Scratch directories for tests: made under $TMPDIR (or /tmp), removed with their contents. */
#ifndef FP8_TESTS_TMPDIR_H
#define FP8_TESTS_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline char *tmpdir_make(void)
{
    const char *base = getenv("TMPDIR");
    char buf[512];
    snprintf(buf, sizeof(buf), "%s/fp8d-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(buf);
    return d ? strdup(d) : NULL;
}

static inline int tmpdir_remove_one(const char *path, const struct stat *sb, int flag,
                                    struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static inline void tmpdir_remove(char *dir)
{
    if (dir)
        nftw(dir, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

#endif
