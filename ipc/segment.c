#include "segment.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int fp8_seg_create(struct fp8_seg *seg, uint32_t n_slots, uint32_t slot_bytes, unsigned mode,
                   struct fp8_err *err)
{
    if (!seg)
        return fp8_err_set(err, -EINVAL, "segment: NULL argument");
    struct fp8_seg s = {0};
    int rc = fp8_ring_geom_init(&s.geom, n_slots, slot_bytes, err);
    if (rc < 0)
        return rc;
    s.prod = calloc(n_slots, sizeof(*s.prod));
    s.open = calloc(n_slots, sizeof(*s.open));
    if (!s.prod || !s.open) {
        rc = fp8_err_set(err, -ENOMEM, "segment: out of memory for %u slots", n_slots);
        goto fail;
    }
    rc = fp8_shm_create(&s.shm, s.geom.total_bytes, mode, err);
    if (rc < 0)
        goto fail;
    fp8_ring_format(s.shm.base, &s.geom);
    for (uint32_t i = 0; i < n_slots; i++)
        fp8_ring_prod_init(&s.prod[i], s.shm.base, &s.geom, i);
    *seg = s;
    return 0;

fail:
    free(s.prod);
    free(s.open);
    return rc;
}

int fp8_seg_unlink_if_attached(struct fp8_seg *seg)
{
    if (!seg->shm.linked)
        return 1;
    if (!fp8_ring_attached(seg->shm.base))
        return 0;
    fp8_shm_unlink(&seg->shm, NULL);
    return 1;
}

int fp8_seg_slot_acquire(struct fp8_seg *seg)
{
    for (uint32_t i = 0; i < seg->geom.n_slots; i++) {
        if (seg->open[i])
            continue;
        int rc = fp8_ring_drained(&seg->prod[i]);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            seg->open[i] = 1;
            return (int)i;
        }
    }
    return -EBUSY;
}

int fp8_seg_publish(struct fp8_seg *seg, uint32_t slot, int32_t token, const void *text,
                    uint32_t text_len)
{
    if (slot >= seg->geom.n_slots || !seg->open[slot])
        return -EINVAL;
    return fp8_ring_publish(&seg->prod[slot], token, 0, 0, text, text_len);
}

int fp8_seg_slot_close(struct fp8_seg *seg, uint32_t slot, uint16_t aux)
{
    if (slot >= seg->geom.n_slots || !seg->open[slot])
        return -EINVAL;
    int rc = fp8_ring_publish(&seg->prod[slot], -1, FP8_RING_FLAG_FINAL, aux, NULL, 0);
    if (rc == 0)
        seg->open[slot] = 0;
    return rc;
}

void fp8_seg_free(struct fp8_seg *seg)
{
    if (!seg)
        return;
    fp8_shm_close(&seg->shm);
    free(seg->prod);
    free(seg->open);
    memset(seg, 0, sizeof(*seg));
}
