/* Small file helpers shared by the checkpoint readers and writers. */
#ifndef FP8_ENGINE_FILES_H
#define FP8_ENGINE_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* "dir/name", malloc'ed; NULL when out of memory. */
char *fp8_path_join(const char *dir, const char *name);

/* Maps a regular file read-only; *map is NULL for an empty file. Unmap with
 * munmap(*map, *size) when *map is non-NULL. Outputs untouched on failure. */
int fp8_file_map(const char *path, void **map, uint64_t *size, struct fp8_err *err);

/* Reads a whole file of at most max bytes into a malloc'ed NUL-terminated buffer. A file
 * that does not exist fails with -ENOENT. Outputs untouched on failure. */
int fp8_file_read(const char *path, size_t max, char **text, size_t *len, struct fp8_err *err);

#endif
