/* libFuzzer over the ring with a hostile consumer: the input is a script of operations
 * (publish a record of some length, read and release, overwrite the consumer's head or
 * sleep word with arbitrary bytes). The data area is its own heap block, so ASan traps any
 * write the producer makes outside it; the producer must also never publish more than the
 * ring holds past the last head it accepted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fp8_ring_geom geom;
    if (fp8_ring_geom_init(&geom, 1, 256, NULL) < 0)
        abort();
    /* header and control lines in one block, the ring data in another */
    uint8_t *seg = aligned_alloc(64, geom.total_bytes);
    memset(seg, 0, geom.total_bytes);
    fp8_ring_format(seg, &geom);
    struct fp8_ring_prod p;
    struct fp8_ring_cons c;
    fp8_ring_prod_init(&p, seg, &geom, 0);
    fp8_ring_cons_init(&c, seg, &geom, 0);
    uint8_t *own = malloc(geom.slot_bytes);
    p.data = own;
    c.data = own;

    uint8_t text[256] = {0};
    size_t i = 0;
    while (i < size) {
        uint8_t op = data[i++];
        switch (op % 4) {
        case 0: { /* publish op/4 bytes of text */
            uint32_t len = op / 4u;
            uint64_t head_before = p.head;
            int rc = fp8_ring_publish(&p, 7, 0, 0, text, len);
            if (rc == 0 && p.tail - p.head > geom.slot_bytes)
                abort();
            if (rc == 0 && p.head < head_before)
                abort();
            break;
        }
        case 1: { /* the consumer reads one record */
            struct fp8_ring_rec r;
            if (fp8_ring_peek(&c, &r) == 1) {
                if (r.text + r.text_len > (const char *)own + geom.slot_bytes)
                    abort();
                fp8_ring_advance(&c);
            }
            break;
        }
        case 2: { /* hostile: arbitrary head */
            uint64_t v = 0;
            size_t n = size - i < 8 ? size - i : 8;
            memcpy(&v, data + i, n);
            i += n;
            atomic_store(&p.ctl->head, v);
            c.head = v;
            break;
        }
        default: /* hostile: arbitrary sleep word */
            atomic_store(&p.ctl->sleeping, i < size ? data[i++] : 1);
            break;
        }
    }
    (void)fp8_ring_drained(&p);
    free(own);
    free(seg);
    return 0;
}
