/* The safetensors header parser on its own: a buffer holding a whole file in, the
 * validated tensor list out. No files involved, so tests and the fuzzer call it
 * directly; engine/safetensors.c maps files and hands them to it.
 *
 * Layout of a file: u64 little-endian header length N, N bytes of UTF-8 JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value"}}, then the data area; offsets are relative to
 * the data area's start (8 + N). */
#ifndef FP8_ENGINE_SAFETENSORS_HEADER_H
#define FP8_ENGINE_SAFETENSORS_HEADER_H

#include <stdint.h>

#include "common/err.h"
#include "engine/safetensors.h"

#define ST_HEADER_MAX_BYTES (100u << 20) /* real headers are well under 10 MB */
#define ST_HEADER_MAX_DEPTH 8            /* a valid header nests 3 deep */
#define ST_NAME_MAX_BYTES 1024

struct st_header {
    int32_t n_tensors;
    struct st_tensor *tensors; /* (n_tensors) in header order; data points into the buffer */
    char *names;               /* one block holding every tensors[i].name */
    uint64_t data_offset;      /* 8 + header length: where the data area starts */
};

/* Validates the header of the file image file[0..file_size) (length bound, UTF-8, nesting
 * depth, well-formed JSON without duplicate keys, known dtypes, shape x dtype size ==
 * byte span, spans inside the data area, aligned to their element size and not
 * overlapping) and fills *out. *out is untouched on failure. */
int st_header_parse(const void *file, uint64_t file_size, struct st_header *out,
                    struct fp8_err *err);
void st_header_free(struct st_header *h); /* accepts NULL; frees what parse allocated */

/* "BF16" -> ST_DTYPE_BF16; -1 for a name not in the supported set. */
int st_dtype_from_name(const char *name);

#endif
