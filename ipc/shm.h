/* POSIX shared-memory segments for token rings: one per client session.
 *
 * The daemon creates a segment with O_CREAT|O_EXCL under a name nobody can guess (128 bits
 * from getrandom), mode 0600 (0660 for a system daemon serving a group; set with fchmod so
 * the umask cannot widen or narrow it), sized with ftruncate. It sends the name to the
 * client, which maps it; the daemon unlinks it as soon as the client has mapped it (see
 * ring.h, `attached`), so a crash of either side leaves no name behind for long and no
 * third process can open it later. */
#ifndef FP8_IPC_SHM_H
#define FP8_IPC_SHM_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define FP8_SHM_PREFIX   "/fp8d-"
#define FP8_SHM_NAME_LEN (sizeof(FP8_SHM_PREFIX) - 1 + 32) /* prefix + 32 hex digits */
#define FP8_SHM_MAX_BYTES ((size_t)1 << 30)

struct fp8_shm {
    char name[FP8_SHM_NAME_LEN + 1];
    void *base;  /* (size) bytes, MAP_SHARED read-write */
    size_t size;
    bool linked; /* this side created the name and has not unlinked it yet */
};

/* Creates, sizes and maps a new segment (zero-filled). mode is 0600 or 0660. */
int fp8_shm_create(struct fp8_shm *shm, size_t size, unsigned mode, struct fp8_err *err);

/* Maps an existing segment by name. The name must have the form fp8_shm_create makes and
 * the object must be a regular file of exactly `size` bytes. */
int fp8_shm_open(struct fp8_shm *shm, const char *name, size_t size, struct fp8_err *err);

/* Removes the name (the mapping stays valid). Idempotent; only the creator's call unlinks. */
int fp8_shm_unlink(struct fp8_shm *shm, struct fp8_err *err);

/* Unmaps, unlinking first if this side created the name and still holds it. Accepts NULL
 * and a zeroed struct. */
void fp8_shm_close(struct fp8_shm *shm);

#endif
