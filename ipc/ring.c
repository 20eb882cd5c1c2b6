#include "ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Cursors and the futex word live in memory shared between processes: they must be
 * lock-free atomics (a lock would live in one process only). */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(sizeof(struct fp8_ring_header) <= FP8_RING_LINE, "header is one line");
_Static_assert(sizeof(struct fp8_ring_ctl) == 3 * FP8_RING_LINE, "ctl is three lines");
_Static_assert(sizeof(struct fp8_ring_rec_hdr) == FP8_RING_REC_HDR_BYTES, "record header");
_Static_assert(sizeof(_Atomic uint32_t) == sizeof(uint32_t), "futex word is 32 bits");

static uint32_t rec_bytes(uint32_t text_len)
{
    return (FP8_RING_REC_HDR_BYTES + text_len + 7u) & ~7u;
}

int fp8_ring_geom_init(struct fp8_ring_geom *geom, uint32_t n_slots, uint32_t slot_bytes,
                       struct fp8_err *err)
{
    if (!geom)
        return fp8_err_set(err, -EINVAL, "ring: NULL geometry");
    if (n_slots < 1 || n_slots > FP8_RING_MAX_SLOTS)
        return fp8_err_set(err, -EINVAL, "ring: %u slots, expected 1..%u", n_slots,
                           FP8_RING_MAX_SLOTS);
    if (slot_bytes < FP8_RING_MIN_SLOT_BYTES || slot_bytes > FP8_RING_MAX_SLOT_BYTES ||
        (slot_bytes & (slot_bytes - 1)))
        return fp8_err_set(err, -EINVAL, "ring: slot of %u bytes, expected a power of two in "
                           "[%u, %u]", slot_bytes, FP8_RING_MIN_SLOT_BYTES,
                           FP8_RING_MAX_SLOT_BYTES);
    struct fp8_ring_geom g = {
        .n_slots = n_slots,
        .slot_bytes = slot_bytes,
        .header_bytes = FP8_RING_LINE,
        .slot_stride = (uint32_t)sizeof(struct fp8_ring_ctl) + slot_bytes,
    };
    g.total_bytes = g.header_bytes + (uint64_t)n_slots * g.slot_stride;
    *geom = g;
    return 0;
}

void fp8_ring_format(void *base, const struct fp8_ring_geom *geom)
{
    struct fp8_ring_header *h = base;
    h->magic = FP8_RING_MAGIC;
    h->version = FP8_RING_VERSION;
    h->header_bytes = geom->header_bytes;
    h->n_slots = geom->n_slots;
    h->slot_bytes = geom->slot_bytes;
    h->slot_stride = geom->slot_stride;
    h->total_bytes = geom->total_bytes;
    atomic_store_explicit(&h->attached, 0, memory_order_relaxed);
}

bool fp8_ring_attached(const void *base)
{
    struct fp8_ring_header *h = (struct fp8_ring_header *)base;
    return atomic_load_explicit(&h->attached, memory_order_relaxed) != 0;
}

int fp8_ring_attach(void *base, size_t size, struct fp8_ring_geom *geom, struct fp8_err *err)
{
    struct fp8_ring_header *h = base;
    struct fp8_ring_geom g;
    if (!base || !geom || size < sizeof(*h))
        return fp8_err_set(err, -EINVAL, "ring: segment of %zu bytes has no header", size);
    if (h->magic != FP8_RING_MAGIC)
        return fp8_err_set(err, -EPROTO, "ring: bad magic 0x%08x", h->magic);
    if (h->version != FP8_RING_VERSION)
        return fp8_err_set(err, -EPROTO, "ring: layout version %u, this side reads %u",
                           h->version, FP8_RING_VERSION);
    int rc = fp8_ring_geom_init(&g, h->n_slots, h->slot_bytes, err);
    if (rc < 0)
        return fp8_err_prefix(err, -EPROTO, "ring header");
    if (h->header_bytes != g.header_bytes || h->slot_stride != g.slot_stride ||
        h->total_bytes != g.total_bytes || g.total_bytes != size)
        return fp8_err_set(err, -EPROTO, "ring: header geometry does not match a %zu-byte "
                           "segment of %u slots of %u bytes", size, g.n_slots, g.slot_bytes);
    atomic_store_explicit(&h->attached, 1, memory_order_release);
    *geom = g;
    return 0;
}

static struct fp8_ring_ctl *slot_ctl(void *base, const struct fp8_ring_geom *geom, uint32_t slot)
{
    return (struct fp8_ring_ctl *)((uint8_t *)base + geom->header_bytes +
                                   (size_t)slot * geom->slot_stride);
}

/* ---- producer ---------------------------------------------------------------------------- */

void fp8_ring_prod_init(struct fp8_ring_prod *p, void *base, const struct fp8_ring_geom *geom,
                        uint32_t slot)
{
    p->ctl = slot_ctl(base, geom, slot);
    p->data = (uint8_t *)(p->ctl + 1);
    p->cap = geom->slot_bytes;
    p->tail = 0;
    p->head = 0;
}

/* Reads the consumer's head and checks it against what the producer knows to be possible. */
static int prod_load_head(struct fp8_ring_prod *p)
{
    uint64_t h = atomic_load_explicit(&p->ctl->head, memory_order_acquire);
    if (h < p->head || h > p->tail || p->tail - h > p->cap || (h & 7u))
        return -EPROTO;
    p->head = h;
    return 0;
}

static void prod_wake(struct fp8_ring_prod *p)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&p->ctl->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&p->ctl->sleeping, 0, memory_order_relaxed))
        syscall(SYS_futex, &p->ctl->sleeping, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int fp8_ring_publish(struct fp8_ring_prod *p, int32_t token, uint16_t flags, uint16_t aux,
                     const void *text, uint32_t text_len)
{
    if (text_len && !text)
        return -EINVAL;
    /* At most half the ring: then an empty ring takes any record at any offset (the PAD
     * before it is shorter than the record), so a reader that catches up always frees
     * enough room and the stream cannot wedge. */
    if (text_len > p->cap / 2 || rec_bytes(text_len) > p->cap / 2)
        return -EMSGSIZE;
    uint32_t need = rec_bytes(text_len);
    uint32_t off = (uint32_t)(p->tail & (p->cap - 1));
    uint32_t pad = p->cap - off < need ? p->cap - off : 0;
    if (p->tail + pad + need - p->head > p->cap) {
        int rc = prod_load_head(p);
        if (rc < 0)
            return rc;
        if (p->tail + pad + need - p->head > p->cap)
            return -EAGAIN;
    }
    if (pad) {
        struct fp8_ring_rec_hdr ph = {.size = pad, .flags = FP8_RING_FLAG_PAD};
        memcpy(p->data + off, &ph, 8); /* size and flags: all a PAD record has room for */
        p->tail += pad;
        off = 0;
    }
    struct fp8_ring_rec_hdr rh = {
        .size = need, .flags = (uint16_t)(flags & ~FP8_RING_FLAG_PAD), .aux = aux,
        .token = token, .text_len = text_len,
    };
    memcpy(p->data + off, &rh, sizeof(rh));
    if (text_len)
        memcpy(p->data + off + sizeof(rh), text, text_len);
    p->tail += need;
    atomic_store_explicit(&p->ctl->tail, p->tail, memory_order_release);
    prod_wake(p);
    return 0;
}

int fp8_ring_drained(struct fp8_ring_prod *p)
{
    int rc = prod_load_head(p);
    return rc < 0 ? rc : p->head == p->tail;
}

/* ---- consumer ---------------------------------------------------------------------------- */

void fp8_ring_cons_init(struct fp8_ring_cons *c, void *base, const struct fp8_ring_geom *geom,
                        uint32_t slot)
{
    c->ctl = slot_ctl(base, geom, slot);
    c->data = (const uint8_t *)(c->ctl + 1);
    c->cap = geom->slot_bytes;
    c->head = atomic_load_explicit(&c->ctl->head, memory_order_relaxed);
    c->peeked = 0;
}

int fp8_ring_peek(struct fp8_ring_cons *c, struct fp8_ring_rec *rec)
{
    for (;;) {
        uint64_t tail = atomic_load_explicit(&c->ctl->tail, memory_order_acquire);
        if (tail == c->head)
            return 0;
        uint64_t avail = tail - c->head;
        uint32_t off = (uint32_t)(c->head & (c->cap - 1));
        struct fp8_ring_rec_hdr h;
        if (avail > c->cap || avail < 8 || (off & 7u))
            return -EPROTO;
        memcpy(&h, c->data + off, 8);
        if (h.size < 8 || (h.size & 7u) || h.size > avail || h.size > c->cap - off)
            return -EPROTO;
        if (h.flags & FP8_RING_FLAG_PAD) {
            c->head += h.size;
            atomic_store_explicit(&c->ctl->head, c->head, memory_order_release);
            continue;
        }
        memcpy(&h, c->data + off, sizeof(h));
        if (h.size < rec_bytes(0) || h.text_len > h.size - FP8_RING_REC_HDR_BYTES)
            return -EPROTO;
        rec->token = h.token;
        rec->flags = h.flags;
        rec->aux = h.aux;
        rec->text = (const char *)c->data + off + FP8_RING_REC_HDR_BYTES;
        rec->text_len = h.text_len;
        c->peeked = h.size;
        return 1;
    }
}

void fp8_ring_advance(struct fp8_ring_cons *c)
{
    if (!c->peeked)
        return;
    c->head += c->peeked;
    c->peeked = 0;
    atomic_store_explicit(&c->ctl->head, c->head, memory_order_release);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool cons_ready(struct fp8_ring_cons *c)
{
    return atomic_load_explicit(&c->ctl->tail, memory_order_acquire) != c->head;
}

int fp8_ring_wait(struct fp8_ring_cons *c, int64_t timeout_ns)
{
    int64_t deadline = timeout_ns < 0 ? 0 : now_ns() + timeout_ns;
    for (;;) {
        if (cons_ready(c))
            return 0;
        atomic_store_explicit(&c->ctl->sleeping, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (cons_ready(c)) {
            atomic_store_explicit(&c->ctl->sleeping, 0, memory_order_relaxed);
            return 0;
        }
        struct timespec ts, *tsp = NULL;
        if (timeout_ns >= 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0) {
                atomic_store_explicit(&c->ctl->sleeping, 0, memory_order_relaxed);
                return -ETIMEDOUT;
            }
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            tsp = &ts;
        }
        long r = syscall(SYS_futex, &c->ctl->sleeping, FUTEX_WAIT, 1, tsp, NULL, 0);
        if (r < 0 && errno == EINTR) {
            atomic_store_explicit(&c->ctl->sleeping, 0, memory_order_relaxed);
            return -EINTR;
        }
        /* woken, EAGAIN (the producer already cleared the word) or ETIMEDOUT: re-check */
    }
}
