/* Shared-memory segments and token rings: layout arithmetic worked by hand, record
 * semantics in one thread, wraparound, the full ring, hostile cursors, the sleeping
 * reader's futex wake-up, and a million records streamed between two processes. Waits
 * are bounded by deadlines; nothing sleeps to synchronize. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "ipc/ring.h"
#include "ipc/segment.h"
#include "ipc/shm.h"

/* A formatted one-process segment (anonymous shared memory). */
struct seg {
    void *base;
    struct fp8_ring_geom geom;
    struct fp8_ring_prod prod;
    struct fp8_ring_cons cons;
};

static void seg_init(struct seg *s, uint32_t n_slots, uint32_t slot_bytes)
{
    assert_int_equal(fp8_ring_geom_init(&s->geom, n_slots, slot_bytes, NULL), 0);
    s->base = mmap(NULL, s->geom.total_bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(s->base != MAP_FAILED);
    fp8_ring_format(s->base, &s->geom);
    struct fp8_ring_geom seen;
    assert_int_equal(fp8_ring_attach(s->base, s->geom.total_bytes, &seen, NULL), 0);
    fp8_ring_prod_init(&s->prod, s->base, &s->geom, 0);
    fp8_ring_cons_init(&s->cons, s->base, &seen, 0);
}

static void seg_free(struct seg *s)
{
    munmap(s->base, s->geom.total_bytes);
}

static void test_geometry(void **state)
{
    (void)state;
    struct fp8_ring_geom g;
    struct fp8_err err = {{0}};
    /* header line 64, each slot 3 control lines (192) + data */
    assert_int_equal(fp8_ring_geom_init(&g, 2, 256, NULL), 0);
    assert_int_equal(g.header_bytes, 64);
    assert_int_equal(g.slot_stride, 192 + 256);
    assert_int_equal(g.total_bytes, 64 + 2 * 448);
    assert_int_equal(fp8_ring_geom_init(&g, 0, 256, &err), -EINVAL);
    assert_int_equal(fp8_ring_geom_init(&g, 1025, 256, &err), -EINVAL);
    assert_int_equal(fp8_ring_geom_init(&g, 1, 128, &err), -EINVAL);
    assert_int_equal(fp8_ring_geom_init(&g, 1, 384, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "power of two"));

    /* the client refuses a header that does not describe the segment it mapped */
    struct seg s;
    seg_init(&s, 3, 1024);
    struct fp8_ring_header *h = s.base;
    assert_int_equal(fp8_ring_attach(s.base, s.geom.total_bytes - 64, &g, &err), -EPROTO);
    h->slot_bytes = 2048;
    assert_int_equal(fp8_ring_attach(s.base, s.geom.total_bytes, &g, &err), -EPROTO);
    h->slot_bytes = 1024;
    h->magic ^= 1;
    assert_int_equal(fp8_ring_attach(s.base, s.geom.total_bytes, &g, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "bad magic"));
    seg_free(&s);
}

static void test_records(void **state)
{
    (void)state;
    struct seg s;
    struct fp8_ring_rec r;
    seg_init(&s, 1, 256);
    assert_int_equal(fp8_ring_peek(&s.cons, &r), 0);

    assert_int_equal(fp8_ring_publish(&s.prod, 9707, 0, 0, "Hello", 5), 0);
    assert_int_equal(fp8_ring_publish(&s.prod, -1, 0, 0, NULL, 0), 0);
    assert_int_equal(fp8_ring_publish(&s.prod, 13, FP8_RING_FLAG_FINAL, 2, "!", 1), 0);
    /* sizes: 16 + 5 -> 24, 16 -> 16, 16 + 1 -> 24 */
    assert_int_equal(atomic_load(&s.prod.ctl->tail), 64);

    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
    assert_int_equal(r.token, 9707);
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.text_len, 5);
    assert_memory_equal(r.text, "Hello", 5);
    /* peeking again without advancing returns the same record */
    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
    assert_int_equal(r.token, 9707);
    fp8_ring_advance(&s.cons);
    assert_int_equal(atomic_load(&s.cons.ctl->head), 24);

    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
    assert_int_equal(r.token, -1);
    assert_int_equal(r.text_len, 0);
    fp8_ring_advance(&s.cons);
    assert_int_equal(fp8_ring_drained(&s.prod), 0);

    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
    assert_int_equal(r.token, 13);
    assert_int_equal(r.flags, FP8_RING_FLAG_FINAL);
    assert_int_equal(r.aux, 2);
    assert_memory_equal(r.text, "!", 1);
    fp8_ring_advance(&s.cons);
    fp8_ring_advance(&s.cons); /* nothing peeked: no effect */
    assert_int_equal(atomic_load(&s.cons.ctl->head), 64);
    assert_int_equal(fp8_ring_peek(&s.cons, &r), 0);
    assert_int_equal(fp8_ring_drained(&s.prod), 1);

    assert_int_equal(fp8_ring_publish(&s.prod, 1, 0, 0, NULL, 3), -EINVAL);
    seg_free(&s);
}

static void test_full_ring(void **state)
{
    (void)state;
    struct seg s;
    struct fp8_ring_rec r;
    char text[256];
    memset(text, 't', sizeof(text));
    seg_init(&s, 1, 256);

    /* 16-byte records: exactly 256 / 16 = 16 fit */
    for (int i = 0; i < 16; i++)
        assert_int_equal(fp8_ring_publish(&s.prod, i, 0, 0, NULL, 0), 0);
    assert_int_equal(fp8_ring_publish(&s.prod, 16, 0, 0, NULL, 0), -EAGAIN);
    assert_int_equal(atomic_load(&s.prod.ctl->tail), 256); /* the refused one wrote nothing */
    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
    assert_int_equal(r.token, 0);
    fp8_ring_advance(&s.cons);
    assert_int_equal(fp8_ring_publish(&s.prod, 16, 0, 0, NULL, 0), 0);
    assert_int_equal(fp8_ring_publish(&s.prod, 17, 0, 0, NULL, 0), -EAGAIN);
    for (int i = 1; i <= 16; i++) {
        assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
        assert_int_equal(r.token, i);
        fp8_ring_advance(&s.cons);
    }

    /* head = tail = 272: offset 16. 14 records bring tail to offset 240 with 224 bytes
     * in use; a 32-byte record then needs a 16-byte PAD + 32 = 48 bytes, only 32 free. */
    for (int i = 0; i < 14; i++)
        assert_int_equal(fp8_ring_publish(&s.prod, i, 0, 0, NULL, 0), 0);
    assert_int_equal(atomic_load(&s.prod.ctl->tail), 496);
    assert_int_equal(fp8_ring_publish(&s.prod, 99, 0, 0, text, 16), -EAGAIN);
    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1); /* free 16 more: exactly 48 */
    fp8_ring_advance(&s.cons);
    assert_int_equal(fp8_ring_publish(&s.prod, 99, 0, 0, text, 16), 0);
    assert_int_equal(atomic_load(&s.prod.ctl->tail), 496 + 16 + 32);
    for (int i = 1; i < 14; i++) {
        assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
        assert_int_equal(r.token, i);
        fp8_ring_advance(&s.cons);
    }
    assert_int_equal(fp8_ring_peek(&s.cons, &r), 1); /* the PAD was skipped */
    assert_int_equal(r.token, 99);
    assert_int_equal(r.text_len, 16);
    assert_memory_equal(r.text, text, 16);
    fp8_ring_advance(&s.cons);
    assert_int_equal(fp8_ring_drained(&s.prod), 1);

    /* Records are at most half the ring (so an empty ring takes any record, whatever the
     * offset): 16 + 112 = 128 fits, 16 + 113 -> 136 never does. Tail is at offset 32. */
    assert_int_equal(fp8_ring_publish(&s.prod, 1, 0, 0, text, 113), -EMSGSIZE);
    assert_int_equal(fp8_ring_publish(&s.prod, 1, 0, 0, text, UINT32_MAX), -EMSGSIZE);
    for (int k = 0; k < 4; k++) { /* from offsets 32, 160, 288 % 256 = 32, ... */
        assert_int_equal(fp8_ring_publish(&s.prod, k, 0, 0, text, 112), 0);
        assert_int_equal(fp8_ring_peek(&s.cons, &r), 1);
        assert_int_equal(r.token, k);
        assert_int_equal(r.text_len, 112);
        fp8_ring_advance(&s.cons);
    }
    assert_int_equal(fp8_ring_drained(&s.prod), 1);
    seg_free(&s);
}

/* Many wraps with every record length from 0 to 40 bytes of text, consumer lagging by a
 * varying amount: every record comes out once, in order, intact. */
static void test_wraparound(void **state)
{
    (void)state;
    struct seg s;
    struct fp8_ring_rec r;
    seg_init(&s, 2, 256);
    /* use slot 1 so that slot arithmetic is exercised too */
    fp8_ring_prod_init(&s.prod, s.base, &s.geom, 1);
    fp8_ring_cons_init(&s.cons, s.base, &s.geom, 1);
    uint8_t text[64];
    int32_t next_pub = 0, next_read = 0;
    while (next_read < 5000) {
        int burst = 1 + next_pub % 7;
        for (int b = 0; b < burst && next_pub < 5000; b++) {
            uint32_t len = (uint32_t)next_pub % 41;
            for (uint32_t j = 0; j < len; j++)
                text[j] = (uint8_t)(next_pub + j);
            int rc = fp8_ring_publish(&s.prod, next_pub, 0, 0, text, len);
            if (rc == -EAGAIN)
                break;
            assert_int_equal(rc, 0);
            next_pub++;
        }
        int reads = 1 + next_read % 5;
        for (int b = 0; b < reads; b++) {
            int rc = fp8_ring_peek(&s.cons, &r);
            if (rc == 0)
                break;
            assert_int_equal(rc, 1);
            assert_int_equal(r.token, next_read);
            assert_int_equal(r.text_len, (uint32_t)next_read % 41);
            for (uint32_t j = 0; j < r.text_len; j++)
                assert_int_equal((uint8_t)r.text[j], (uint8_t)(next_read + j));
            fp8_ring_advance(&s.cons);
            next_read++;
        }
    }
    assert_true(atomic_load(&s.prod.ctl->tail) > 100 * 256); /* it really wrapped */
    /* slot 0 was never touched */
    struct fp8_ring_cons c0;
    fp8_ring_cons_init(&c0, s.base, &s.geom, 0);
    assert_int_equal(fp8_ring_peek(&c0, &r), 0);
    seg_free(&s);
}

/* The consumer's head is client-written: every impossible value is refused with -EPROTO
 * and the producer writes nothing. */
static void test_hostile_cursor(void **state)
{
    (void)state;
    const uint64_t bad[] = {
        32 * 16 + 8,   /* ahead of tail */
        UINT64_MAX,    /* far ahead */
        4,             /* not on a record boundary */
        16,            /* behind the head already seen (set below to 64) */
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        struct seg s;
        seg_init(&s, 1, 256);
        for (int i = 0; i < 32; i++) { /* 512 bytes through a 256-byte ring */
            if (i == 20) {
                assert_int_equal(atomic_load(&s.cons.ctl->head), 0);
                atomic_store(&s.cons.ctl->head, 64); /* honest: 4 records read */
            }
            int rc = fp8_ring_publish(&s.prod, i, 0, 0, NULL, 0);
            if (i >= 16 && i < 20)
                assert_int_equal(rc, -EAGAIN);
            else if (i >= 20 && i < 24)
                assert_int_equal(rc, 0);
            else if (i >= 24)
                assert_int_equal(rc, -EAGAIN);
        }
        uint64_t tail = atomic_load(&s.prod.ctl->tail);
        assert_int_equal(tail, 320);
        atomic_store(&s.cons.ctl->head, bad[k] == 32 * 16 + 8 ? tail + 8 : bad[k]);
        assert_int_equal(fp8_ring_publish(&s.prod, 0, 0, 0, NULL, 0), -EPROTO);
        assert_int_equal(fp8_ring_drained(&s.prod), -EPROTO);
        assert_int_equal(atomic_load(&s.prod.ctl->tail), tail);
        seg_free(&s);
    }

    /* head more than a ring behind tail: only possible if it moved backwards */
    struct seg s;
    seg_init(&s, 1, 256);
    for (int i = 0; i < 16; i++)
        assert_int_equal(fp8_ring_publish(&s.prod, i, 0, 0, NULL, 0), 0);
    atomic_store(&s.cons.ctl->head, 256);
    for (int i = 0; i < 16; i++)
        assert_int_equal(fp8_ring_publish(&s.prod, i, 0, 0, NULL, 0), 0);
    atomic_store(&s.cons.ctl->head, 0);
    assert_int_equal(fp8_ring_publish(&s.prod, 0, 0, 0, NULL, 0), -EPROTO);

    /* the client side does not trust garbage either: a zero-size record is refused */
    struct fp8_ring_rec r;
    struct fp8_ring_cons c;
    fp8_ring_cons_init(&c, s.base, &s.geom, 0);
    c.head = 256;
    memset((uint8_t *)(s.prod.ctl + 1), 0, 8);
    assert_int_equal(fp8_ring_peek(&c, &r), -EPROTO);
    seg_free(&s);
}

static void test_wait_timeout(void **state)
{
    (void)state;
    struct seg s;
    seg_init(&s, 1, 256);
    int64_t t0 = fp8_now_ns();
    assert_int_equal(fp8_ring_wait(&s.cons, 1000000), -ETIMEDOUT);
    assert_true(fp8_now_ns() - t0 >= 1000000);
    assert_int_equal(atomic_load(&s.cons.ctl->sleeping), 0);
    assert_int_equal(fp8_ring_wait(&s.cons, 0), -ETIMEDOUT);
    assert_int_equal(fp8_ring_publish(&s.prod, 5, 0, 0, NULL, 0), 0);
    assert_int_equal(fp8_ring_wait(&s.cons, 0), 0); /* ready: no sleep at all */
    assert_int_equal(fp8_ring_wait(&s.cons, -1), 0);
    seg_free(&s);
}

/* A reader in another process declares itself asleep; the producer sees the flag, then
 * publishes, and the reader wakes with the record long before its 20 s deadline. */
static void test_sleeping_reader_wakes(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        struct seg s;
        seg_init(&s, 1, 256);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct fp8_ring_rec r;
            int rc = fp8_ring_wait(&s.cons, 20 * 1000000000ll);
            _exit(rc == 0 && fp8_ring_peek(&s.cons, &r) == 1 && r.token == 4242 ? 0 : 1);
        }
        int64_t deadline = fp8_now_ns() + 20 * 1000000000ll;
        while (atomic_load(&s.prod.ctl->sleeping) == 0 && fp8_now_ns() < deadline)
            sched_yield();
        assert_int_equal(atomic_load(&s.prod.ctl->sleeping), 1);
        assert_int_equal(fp8_ring_publish(&s.prod, 4242, FP8_RING_FLAG_FINAL, 0, NULL, 0), 0);
        assert_int_equal(atomic_load(&s.prod.ctl->sleeping), 0); /* the producer cleared it */
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        seg_free(&s);
    }
}

static void test_shm_lifecycle(void **state)
{
    (void)state;
    struct fp8_shm a, b;
    struct fp8_err err = {{0}};
    struct stat st;
    assert_int_equal(fp8_shm_create(&a, 4096, 0600, &err), 0);
    assert_int_equal(strlen(a.name), FP8_SHM_NAME_LEN);
    assert_int_equal(strncmp(a.name, "/fp8d-", 6), 0);
    int fd = shm_open(a.name, O_RDONLY, 0);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 4096);
    close(fd);

    assert_int_equal(fp8_shm_open(&b, a.name, 8192, &err), -EPROTO); /* wrong size */
    assert_int_equal(fp8_shm_open(&b, "/etc-passwd", 4096, &err), -EINVAL);
    assert_int_equal(fp8_shm_open(&b, a.name, 4096, &err), 0);
    ((volatile char *)a.base)[100] = 'x';
    assert_int_equal(((volatile char *)b.base)[100], 'x'); /* same memory */
    assert_int_equal(fp8_shm_unlink(&b, &err), 0);          /* not the creator: no-op */
    assert_int_equal(fp8_shm_unlink(&a, &err), 0);
    assert_int_equal(fp8_shm_unlink(&a, &err), 0);          /* idempotent */
    struct fp8_shm c;
    assert_int_equal(fp8_shm_open(&c, a.name, 4096, &err), -ENOENT);
    assert_int_equal(((volatile char *)b.base)[100], 'x'); /* mappings outlive the name */
    fp8_shm_close(&b);
    fp8_shm_close(&a);
    fp8_shm_close(NULL);

    assert_int_equal(fp8_shm_create(&a, 4096, 0660, &err), 0);
    fd = shm_open(a.name, O_RDONLY, 0);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);
    close(fd);
    fp8_shm_close(&a); /* unlinks too */
    assert_int_equal(shm_open(a.name, O_RDONLY, 0), -1);
    assert_int_equal(fp8_shm_create(&a, 4096, 0644, &err), -EINVAL);
}

/* The daemon's per-session bookkeeping: slots are handed out only when free and read to
 * the end, the name disappears once the client attached, hostile cursors surface. */
static void test_segment_slots(void **state)
{
    (void)state;
    struct fp8_seg seg;
    struct fp8_ring_geom g;
    struct fp8_ring_cons c0;
    struct fp8_ring_rec r;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_seg_create(&seg, 2, 256, 0600, &err), 0);
    assert_int_equal(fp8_seg_unlink_if_attached(&seg), 0);
    int fd = shm_open(seg.shm.name, O_RDONLY, 0);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(fp8_ring_attach(seg.shm.base, seg.shm.size, &g, &err), 0);
    assert_int_equal(fp8_seg_unlink_if_attached(&seg), 1);
    assert_int_equal(shm_open(seg.shm.name, O_RDONLY, 0), -1);
    assert_int_equal(fp8_seg_unlink_if_attached(&seg), 1);

    assert_int_equal(fp8_seg_publish(&seg, 0, 1, NULL, 0), -EINVAL); /* not open */
    assert_int_equal(fp8_seg_slot_acquire(&seg), 0);
    assert_int_equal(fp8_seg_slot_acquire(&seg), 1);
    assert_int_equal(fp8_seg_slot_acquire(&seg), -EBUSY);
    assert_int_equal(fp8_seg_publish(&seg, 0, 42, "hi", 2), 0);
    assert_int_equal(fp8_seg_slot_close(&seg, 0, 3), 0);
    assert_int_equal(fp8_seg_slot_close(&seg, 0, 3), -EINVAL); /* already closed */
    assert_int_equal(fp8_seg_slot_acquire(&seg), -EBUSY);      /* closed but unread */
    fp8_ring_cons_init(&c0, seg.shm.base, &g, 0);
    assert_int_equal(fp8_ring_peek(&c0, &r), 1);
    assert_int_equal(r.token, 42);
    fp8_ring_advance(&c0);
    assert_int_equal(fp8_seg_slot_acquire(&seg), -EBUSY);      /* FINAL not read yet */
    assert_int_equal(fp8_ring_peek(&c0, &r), 1);
    assert_int_equal(r.flags, FP8_RING_FLAG_FINAL);
    assert_int_equal(r.aux, 3);
    assert_int_equal(r.token, -1);
    fp8_ring_advance(&c0);
    assert_int_equal(fp8_seg_slot_acquire(&seg), 0);           /* reused */

    assert_int_equal(fp8_seg_slot_close(&seg, 1, 0), 0);
    fp8_ring_cons_init(&c0, seg.shm.base, &g, 1);
    atomic_store(&c0.ctl->head, 1ull << 40); /* slot 1's head, hostile */
    assert_int_equal(fp8_seg_slot_acquire(&seg), -EPROTO);
    fp8_seg_free(&seg);
    fp8_seg_free(NULL);
}

#define N_STREAM 1000000

static uint32_t stream_text(int32_t i, uint8_t *buf)
{
    uint32_t len = (uint32_t)i % 13;
    for (uint32_t j = 0; j < len; j++)
        buf[j] = (uint8_t)(i * 31 + j);
    return len;
}

/* Consumer process: opens the segment by name, checks every record. */
static int stream_consumer(const char *name, size_t size)
{
    struct fp8_shm shm;
    struct fp8_ring_geom geom;
    struct fp8_ring_cons c;
    struct fp8_ring_rec r;
    uint8_t want[16];
    if (fp8_shm_open(&shm, name, size, NULL) < 0 ||
        fp8_ring_attach(shm.base, shm.size, &geom, NULL) < 0)
        return 2;
    fp8_ring_cons_init(&c, shm.base, &geom, 1);
    for (int32_t i = 0; i < N_STREAM; i++) {
        int rc;
        while ((rc = fp8_ring_peek(&c, &r)) == 0)
            if (fp8_ring_wait(&c, 20 * 1000000000ll) < 0)
                return 3; /* stalled: a lost wakeup or a lost record */
        if (rc < 0 || r.token != i)
            return 4;
        uint32_t len = stream_text(i, want);
        if (r.text_len != len || memcmp(r.text, want, len) != 0)
            return 5;
        if ((r.flags & FP8_RING_FLAG_FINAL) != (i == N_STREAM - 1 ? FP8_RING_FLAG_FINAL : 0))
            return 6;
        fp8_ring_advance(&c);
    }
    if (fp8_ring_peek(&c, &r) != 0)
        return 7; /* a duplicate or stray record after the final one */
    fp8_shm_close(&shm);
    return 0;
}

static void test_two_process_stream(void **state)
{
    (void)state;
    struct fp8_ring_geom geom;
    struct fp8_shm shm;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_ring_geom_init(&geom, 2, 4096, NULL), 0);
    assert_int_equal(fp8_shm_create(&shm, geom.total_bytes, 0600, &err), 0);
    fp8_ring_format(shm.base, &geom);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(stream_consumer(shm.name, geom.total_bytes));

    /* unlink as soon as the client says it has mapped the segment */
    int64_t deadline = fp8_now_ns() + 30 * 1000000000ll;
    while (!fp8_ring_attached(shm.base) && fp8_now_ns() < deadline)
        sched_yield();
    assert_true(fp8_ring_attached(shm.base));
    assert_int_equal(fp8_shm_unlink(&shm, &err), 0);

    struct fp8_ring_prod p;
    uint8_t text[16];
    uint64_t full = 0;
    fp8_ring_prod_init(&p, shm.base, &geom, 1);
    for (int32_t i = 0; i < N_STREAM; i++) {
        uint32_t len = stream_text(i, text);
        uint16_t flags = i == N_STREAM - 1 ? FP8_RING_FLAG_FINAL : 0;
        int rc;
        while ((rc = fp8_ring_publish(&p, i, flags, 0, text, len)) == -EAGAIN) {
            full++; /* backpressure: the daemon would pause this sequence */
            if (fp8_now_ns() > deadline)
                fail_msg("consumer stopped reading at record %d", i);
            sched_yield();
        }
        assert_int_equal(rc, 0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(fp8_ring_drained(&p), 1);
    print_message("streamed %d records, producer found the ring full %llu times\n", N_STREAM,
                  (unsigned long long)full);
    fp8_shm_close(&shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_full_ring),
        cmocka_unit_test(test_wraparound),
        cmocka_unit_test(test_hostile_cursor),
        cmocka_unit_test(test_wait_timeout),
        cmocka_unit_test(test_sleeping_reader_wakes),
        cmocka_unit_test(test_shm_lifecycle),
        cmocka_unit_test(test_segment_slots),
        cmocka_unit_test(test_two_process_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
