#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

char *fp8_path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int fp8_file_map(const char *path, void **map, uint64_t *size, struct fp8_err *err)
{
    struct stat st;
    int rc;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer before fstat rejects it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fp8_err_set(err, -errno, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        rc = fp8_err_set(err, -errno, "%s: %s", path, strerror(errno));
        goto fail;
    }
    /* A FIFO or device could block or never end; a directory has no bytes. */
    if (!S_ISREG(st.st_mode)) {
        rc = fp8_err_set(err, -EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    void *p = NULL;
    if (st.st_size > 0) {
        p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            rc = fp8_err_set(err, -errno, "%s: mmap: %s", path, strerror(errno));
            goto fail;
        }
    }
    close(fd);
    *map = p;
    *size = (uint64_t)st.st_size;
    return 0;
fail:
    close(fd);
    return rc;
}

int fp8_file_read(const char *path, size_t max, char **text, size_t *len, struct fp8_err *err)
{
    void *map;
    uint64_t size;
    int rc = fp8_file_map(path, &map, &size, err);
    if (rc < 0)
        return rc;
    char *buf = NULL;
    if (size > max) {
        rc = fp8_err_set(err, -EFBIG, "%s: %llu bytes, more than the %zu-byte limit", path,
                         (unsigned long long)size, max);
        goto out;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        rc = fp8_err_set(err, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (size)
        memcpy(buf, map, (size_t)size);
    buf[size] = '\0';
    *text = buf;
    if (len)
        *len = (size_t)size;
out:
    if (map)
        munmap(map, (size_t)size);
    return rc;
}
