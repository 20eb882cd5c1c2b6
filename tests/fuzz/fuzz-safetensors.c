/* libFuzzer target: the safetensors header parser over arbitrary file images. Whatever the
 * input, it returns 0 with tensors that lie inside the image, or a negative code with a
 * message; never a crash, a leak or an out-of-bounds read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/safetensors_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_header h;
    struct fp8_err err;
    /* A private copy, so that reads past the input are caught by ASan rather than landing
     * in libFuzzer's own buffer. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (st_header_parse(copy, size, &h, &err) == 0) {
        for (int32_t i = 0; i < h.n_tensors; i++) {
            const struct st_tensor *t = &h.tensors[i];
            const uint8_t *p = t->data;
            if (p < copy + h.data_offset || t->n_bytes > size ||
                (size_t)(p - copy) > size - t->n_bytes)
                abort();
            volatile uint8_t sink = 0;
            for (uint64_t k = 0; k < t->n_bytes; k++)
                sink ^= p[k];
            (void)sink;
        }
        st_header_free(&h);
    } else if (!memchr(err.msg, '\0', sizeof(err.msg)) || !err.msg[0]) {
        abort();
    }
    free(copy);
    return 0;
}
