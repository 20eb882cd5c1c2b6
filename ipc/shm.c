#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static int random_name(char name[FP8_SHM_NAME_LEN + 1], struct fp8_err *err)
{
    unsigned char rnd[16];
    size_t got = 0;
    while (got < sizeof(rnd)) {
        ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fp8_err_set(err, -errno, "getrandom: %s", strerror(errno));
        got += (size_t)n;
    }
    int off = snprintf(name, FP8_SHM_NAME_LEN + 1, "%s", FP8_SHM_PREFIX);
    for (size_t i = 0; i < sizeof(rnd); i++)
        off += snprintf(name + off, FP8_SHM_NAME_LEN + 1 - (size_t)off, "%02x", rnd[i]);
    return 0;
}

static bool name_is_ours(const char *name)
{
    size_t plen = sizeof(FP8_SHM_PREFIX) - 1;
    if (strnlen(name, FP8_SHM_NAME_LEN + 1) != FP8_SHM_NAME_LEN ||
        strncmp(name, FP8_SHM_PREFIX, plen) != 0)
        return false;
    for (size_t i = plen; i < FP8_SHM_NAME_LEN; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return false;
    return true;
}

int fp8_shm_create(struct fp8_shm *shm, size_t size, unsigned mode, struct fp8_err *err)
{
    if (!shm || size == 0 || size > FP8_SHM_MAX_BYTES)
        return fp8_err_set(err, -EINVAL, "shm: size %zu is not in [1, %zu]", size,
                           FP8_SHM_MAX_BYTES);
    if (mode != 0600 && mode != 0660)
        return fp8_err_set(err, -EINVAL, "shm: mode %o, only 0600 and 0660 are allowed", mode);

    struct fp8_shm s = {0};
    int fd = -1, rc;
    /* A collision of 128 random bits means a broken RNG, but EEXIST is cheap to retry. */
    for (int attempt = 0;; attempt++) {
        rc = random_name(s.name, err);
        if (rc < 0)
            return rc;
        fd = shm_open(s.name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd >= 0 || errno != EEXIST || attempt == 3)
            break;
    }
    if (fd < 0)
        return fp8_err_set(err, -errno, "shm_open %s: %s", s.name, strerror(errno));
    s.linked = true;
    if (fchmod(fd, mode) < 0) {
        rc = fp8_err_set(err, -errno, "fchmod %s: %s", s.name, strerror(errno));
        goto fail;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        rc = fp8_err_set(err, -errno, "ftruncate %s to %zu bytes: %s", s.name, size,
                         strerror(errno));
        goto fail;
    }
    s.base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s.base == MAP_FAILED) {
        s.base = NULL;
        rc = fp8_err_set(err, -errno, "mmap %s: %s", s.name, strerror(errno));
        goto fail;
    }
    s.size = size;
    close(fd);
    *shm = s;
    return 0;

fail:
    close(fd);
    shm_unlink(s.name);
    return rc;
}

int fp8_shm_open(struct fp8_shm *shm, const char *name, size_t size, struct fp8_err *err)
{
    if (!shm || !name)
        return fp8_err_set(err, -EINVAL, "shm: NULL argument");
    if (!name_is_ours(name))
        return fp8_err_set(err, -EINVAL, "shm: \"%.64s\" is not a segment name fp8d makes",
                           name);
    if (size == 0 || size > FP8_SHM_MAX_BYTES)
        return fp8_err_set(err, -EINVAL, "shm: size %zu is not in [1, %zu]", size,
                           FP8_SHM_MAX_BYTES);

    struct fp8_shm s = {0};
    struct stat st;
    int rc;
    memcpy(s.name, name, FP8_SHM_NAME_LEN + 1);
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return fp8_err_set(err, -errno, "shm_open %s: %s", name, strerror(errno));
    if (fstat(fd, &st) < 0) {
        rc = fp8_err_set(err, -errno, "fstat %s: %s", name, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size != size) {
        rc = fp8_err_set(err, -EPROTO, "shm %s: %lld bytes, expected %zu", name,
                         (long long)st.st_size, size);
        goto fail;
    }
    s.base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s.base == MAP_FAILED) {
        s.base = NULL;
        rc = fp8_err_set(err, -errno, "mmap %s: %s", name, strerror(errno));
        goto fail;
    }
    s.size = size;
    close(fd);
    *shm = s;
    return 0;

fail:
    close(fd);
    return rc;
}

int fp8_shm_unlink(struct fp8_shm *shm, struct fp8_err *err)
{
    if (!shm)
        return fp8_err_set(err, -EINVAL, "shm: NULL argument");
    if (!shm->linked)
        return 0;
    shm->linked = false;
    if (shm_unlink(shm->name) < 0 && errno != ENOENT)
        return fp8_err_set(err, -errno, "shm_unlink %s: %s", shm->name, strerror(errno));
    return 0;
}

void fp8_shm_close(struct fp8_shm *shm)
{
    if (!shm)
        return;
    fp8_shm_unlink(shm, NULL);
    if (shm->base)
        munmap(shm->base, shm->size);
    memset(shm, 0, sizeof(*shm));
}
