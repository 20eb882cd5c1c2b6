/* Token rings in a shared-memory segment: the daemon produces, one client consumes.
 *
 * Segment layout (all offsets fixed by the geometry, little-endian, 64-byte lines):
 *
 *   struct fp8_ring_header                        one line at offset 0
 *   slot 0: struct fp8_ring_ctl, data[slot_bytes] at header_bytes + 0 * slot_stride
 *   slot 1: ...                                   at header_bytes + 1 * slot_stride
 *
 * Each slot is a single-producer single-consumer ring of variable-length records. Cursors
 * are byte counts that only grow (never wrapped), so "empty" is head == tail and "full" is
 * tail - head == slot_bytes; a record starts at data[cursor % slot_bytes]. A record is
 * struct fp8_ring_rec_hdr, then text_len bytes, padded to a multiple of 8. A record never
 * straddles the end of data: when it would, the producer first fills the rest of the line
 * with a PAD record (only its size and flags are meaningful; it may be 8 bytes long).
 *
 * Ordering: the producer writes the record bytes, then stores tail with release; the
 * consumer loads tail with acquire, reads the bytes, then stores head with release, which
 * the producer loads with acquire before reusing the space.
 *
 * Sleeping reader (the lost-wakeup race): a reader that found the ring empty
 *   1. stores sleeping = 1, then a seq_cst fence,
 *   2. loads tail again; if it moved, stores sleeping = 0 and reads (no syscall),
 *   3. otherwise futex_wait(&sleeping, 1, timeout), which sleeps only while the word is
 *      still 1, then goes back to step 1 (spurious wakeups are harmless).
 * The producer, after storing tail, issues a seq_cst fence and loads sleeping; if it is
 * nonzero, it exchanges it to 0 and, if it was nonzero, calls futex_wake. The two fences
 * order (store sleeping; load tail) against (store tail; load sleeping): at least one side
 * sees the other's store, so either the reader sees the new tail in step 2 or the producer
 * sees sleeping = 1. If the wake comes before the reader reached futex_wait, the word is
 * already 0, so futex_wait returns at once: no wakeup is lost. The producer makes a
 * syscall only for a reader that declared itself asleep.
 *
 * Trust: the daemon treats the whole segment as client-writable. It keeps its own copy of
 * the geometry and of tail and never reads them back; of the client's words it reads only
 * head (checked: aligned, not behind the last valid head, not ahead of tail, at most
 * slot_bytes behind it; anything else is -EPROTO and the session should be dropped),
 * sleeping (any nonzero value only costs one futex_wake per publish) and attached (only
 * compared with zero). No daemon loop runs on a client value. */
#ifndef FP8_IPC_RING_H
#define FP8_IPC_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define FP8_RING_MAGIC   0x52385046u /* "FP8R" */
#define FP8_RING_VERSION 1u
#define FP8_RING_MIN_SLOT_BYTES 256u
#define FP8_RING_MAX_SLOT_BYTES (1u << 24)
#define FP8_RING_MAX_SLOTS      1024u
#define FP8_RING_REC_HDR_BYTES  16u
#define FP8_RING_LINE           64u

enum fp8_ring_flag {
    FP8_RING_FLAG_PAD = 1u << 0,   /* filler up to the end of data; no token, no text */
    FP8_RING_FLAG_FINAL = 1u << 1, /* last record of this slot's stream */
};

struct fp8_ring_header {
    uint32_t magic;        /* FP8_RING_MAGIC */
    uint32_t version;      /* FP8_RING_VERSION */
    uint32_t header_bytes; /* offset of slot 0 */
    uint32_t n_slots;
    uint32_t slot_bytes;   /* data bytes of one ring, a power of two */
    uint32_t slot_stride;  /* bytes from one slot to the next */
    uint64_t total_bytes;  /* the segment's size */
    _Atomic uint32_t attached; /* client-written: nonzero once it has mapped the segment */
};

/* One slot's shared words, each written by one side on its own cache line. */
struct fp8_ring_ctl {
    _Alignas(64) _Atomic uint64_t tail;   /* producer: bytes published */
    _Alignas(64) _Atomic uint64_t head;   /* consumer: bytes consumed */
    _Alignas(64) _Atomic uint32_t sleeping; /* futex word: consumer asleep (or about to be) */
};

struct fp8_ring_rec_hdr {
    uint32_t size;     /* bytes of the whole record, a multiple of 8 */
    uint16_t flags;    /* enum fp8_ring_flag */
    uint16_t aux;      /* meaning is the protocol's (e.g. finish reason on FINAL) */
    int32_t token;     /* token id, or -1 for a record that carries only text */
    uint32_t text_len; /* bytes of text after this header */
};

/* A segment's geometry. Each side keeps its own copy and never re-reads the shared one. */
struct fp8_ring_geom {
    uint32_t n_slots;
    uint32_t slot_bytes;
    uint32_t header_bytes;
    uint32_t slot_stride;
    uint64_t total_bytes;
};

/* Computes the layout of n_slots rings of slot_bytes (a power of two in
 * [FP8_RING_MIN_SLOT_BYTES, FP8_RING_MAX_SLOT_BYTES], n_slots in [1, FP8_RING_MAX_SLOTS]). */
int fp8_ring_geom_init(struct fp8_ring_geom *geom, uint32_t n_slots, uint32_t slot_bytes,
                       struct fp8_err *err);

/* Daemon: writes the header into a zero-filled segment of geom->total_bytes. */
void fp8_ring_format(void *base, const struct fp8_ring_geom *geom);

/* Daemon: whether the client has marked the segment mapped (time to unlink it). */
bool fp8_ring_attached(const void *base);

/* Client: validates the header of a mapped segment of size bytes, fills geom and marks the
 * segment attached. -EPROTO names what is wrong. */
int fp8_ring_attach(void *base, size_t size, struct fp8_ring_geom *geom, struct fp8_err *err);

/* ---- producer (daemon) ---------------------------------------------------------------- */

struct fp8_ring_prod {
    struct fp8_ring_ctl *ctl;
    uint8_t *data;     /* (cap) bytes */
    uint32_t cap;
    uint64_t tail;     /* the truth; the shared copy is only ever written */
    uint64_t head;     /* last head read back and found valid */
};

/* For a freshly formatted segment: the daemon keeps one producer per slot for the whole
 * session (its cursors are the truth), and gives the slot a new stream only once
 * fp8_ring_drained says the last one was read to the end. */
void fp8_ring_prod_init(struct fp8_ring_prod *p, void *base, const struct fp8_ring_geom *geom,
                        uint32_t slot);

/* Appends one record and publishes it, waking the reader if it sleeps. Returns 0, or
 *   -EAGAIN   the ring is full: nothing was written; pause this sequence and retry later
 *   -EMSGSIZE the record is over half the ring (16 + text_len > slot_bytes / 2)
 *   -EPROTO   the consumer's head is invalid (hostile or corrupt client)
 *   -EINVAL   text_len > 0 with text NULL */
int fp8_ring_publish(struct fp8_ring_prod *p, int32_t token, uint16_t flags, uint16_t aux,
                     const void *text, uint32_t text_len);

/* 1 when the consumer has read everything published (the slot may take a new stream),
 * 0 when not, -EPROTO when its head is invalid. */
int fp8_ring_drained(struct fp8_ring_prod *p);

/* ---- consumer (client) ---------------------------------------------------------------- */

struct fp8_ring_cons {
    struct fp8_ring_ctl *ctl;
    const uint8_t *data; /* (cap) bytes */
    uint32_t cap;
    uint64_t head;       /* private copy of the shared head */
    uint32_t peeked;     /* size of the record fp8_ring_peek returned, 0 if none */
};

struct fp8_ring_rec {
    int32_t token;
    uint16_t flags;
    uint16_t aux;
    const char *text;    /* (text_len) bytes inside the ring, valid until fp8_ring_advance */
    uint32_t text_len;
};

void fp8_ring_cons_init(struct fp8_ring_cons *c, void *base, const struct fp8_ring_geom *geom,
                        uint32_t slot);

/* Without a syscall: 1 and the next record in *rec, 0 when the ring is empty, -EPROTO when
 * the producer wrote something impossible. PAD records are skipped here. */
int fp8_ring_peek(struct fp8_ring_cons *c, struct fp8_ring_rec *rec);

/* Releases the record last returned by fp8_ring_peek (its space goes back to the producer);
 * does nothing when there is none. */
void fp8_ring_advance(struct fp8_ring_cons *c);

/* Sleeps until the ring is not empty (0), timeout_ns passes (-ETIMEDOUT; < 0 waits forever)
 * or a signal arrives (-EINTR). Returns 0 at once when a record is already there. */
int fp8_ring_wait(struct fp8_ring_cons *c, int64_t timeout_ns);

#endif
