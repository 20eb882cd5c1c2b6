/* libFuzzer over the protocol decoder, both directions. Whatever decodes must re-encode
 * and decode again to the same bytes (the encoder and the decoder agree on validity), and
 * fp8_msg_peek_id must never fault on the same input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t id;
    (void)fp8_msg_peek_id(data, size, &id);
    for (int dir = FP8_MSG_DIR_REQUEST; dir <= FP8_MSG_DIR_REPLY; dir++) {
        struct fp8_msg m, again;
        if (fp8_msg_decode(data, size, dir, &m, NULL) < 0)
            continue;
        void *buf, *buf2;
        size_t len, len2;
        if (fp8_msg_encode(&m, &buf, &len, NULL) < 0)
            abort(); /* decoded but cannot be encoded: the two disagree */
        if (fp8_msg_decode(buf, len, dir, &again, NULL) < 0)
            abort();
        if (fp8_msg_encode(&again, &buf2, &len2, NULL) < 0 || len2 != len ||
            memcmp(buf, buf2, len) != 0)
            abort();
        free(buf);
        free(buf2);
        fp8_msg_free(&again);
        fp8_msg_free(&m);
    }
    return 0;
}
