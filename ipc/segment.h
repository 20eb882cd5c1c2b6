/* The daemon's side of one client session's shared memory: the segment (shm.h), one ring
 * producer per slot (ring.h), which slots carry a stream, and the unlink-once-attached
 * rule. Knows nothing of requests or the engine: the daemon maps its request ids to slot
 * numbers and decides what to do with -EAGAIN (pause) and -EPROTO (drop the session). */
#ifndef FP8_IPC_SEGMENT_H
#define FP8_IPC_SEGMENT_H

#include <stdint.h>

#include "common/err.h"
#include "ipc/ring.h"
#include "ipc/shm.h"

struct fp8_seg {
    struct fp8_shm shm;
    struct fp8_ring_geom geom;
    struct fp8_ring_prod *prod; /* (geom.n_slots) */
    uint8_t *open;              /* (geom.n_slots) 1 from acquire until the FINAL record */
};

/* Creates and formats a segment of n_slots rings of slot_bytes, mode 0600 or 0660. Send
 * seg->shm.name and seg->geom.total_bytes to the client. */
int fp8_seg_create(struct fp8_seg *seg, uint32_t n_slots, uint32_t slot_bytes, unsigned mode,
                   struct fp8_err *err);

/* Unlinks the name as soon as the client has attached: 1 when the name is gone (now or
 * before), 0 while the client has not attached yet. Call it each IPC loop turn after the
 * welcome, and fp8_shm_unlink(&seg->shm) once a deadline passes. */
int fp8_seg_unlink_if_attached(struct fp8_seg *seg);

/* A slot for a new stream: one that is not open and whose previous stream the client has
 * read to the end. Returns the slot, -EBUSY when none is free, -EPROTO when the client's
 * cursor of some slot is invalid. */
int fp8_seg_slot_acquire(struct fp8_seg *seg);

/* Appends a token record to an open slot's stream (fp8_ring_publish's codes; -EINVAL for a
 * slot that is not open). */
int fp8_seg_publish(struct fp8_seg *seg, uint32_t slot, int32_t token, const void *text,
                    uint32_t text_len);

/* Ends an open slot's stream with a FINAL record carrying aux (enum fp8_msg_ring_end) and
 * no token. -EAGAIN when the ring is full: the slot stays open, retry later. */
int fp8_seg_slot_close(struct fp8_seg *seg, uint32_t slot, uint16_t aux);

/* Unmaps and unlinks. Accepts NULL and a zeroed struct. */
void fp8_seg_free(struct fp8_seg *seg);

#endif
