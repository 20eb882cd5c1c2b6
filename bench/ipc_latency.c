/* Token delivery latency: the producer stamps CLOCK_MONOTONIC into a record and publishes
 * it; the consumer process reads the clock as soon as it has the record. Compared:
 *   spin   shared-memory ring, reader polls tail (no syscalls)
 *   sleep  shared-memory ring, reader sleeps on the futex when the ring is empty
 *   hybrid shared-memory ring, reader polls for up to 20 us, then sleeps on the futex
 *   zmq    the same tokens as msgpack `chunk` messages, ROUTER -> DEALER over ipc://
 * with 1 and 32 consumer processes (one ring segment or one DEALER each); each round the
 * producer sends one token to every consumer, like one decode step of a batch, then waits
 * for the next period (default 200 us, a fast decode step).
 *
 * Usage: ipc_latency [--tokens N] [--period-us P] [--consumers 1,32]
 *                    [--modes spin,sleep,hybrid,zmq]
 * Prints one line per (mode, consumers): samples, p50, p99, max in microseconds. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "common/clock.h"
#include "ipc/protocol.h"
#include "ipc/ring.h"
#include "ipc/shm.h"

#define WARMUP 100
#define SLOT_BYTES 65536u

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

enum mode { MODE_SPIN, MODE_SLEEP, MODE_HYBRID, MODE_ZMQ };
static const char *const mode_names[] = {"spin", "sleep", "hybrid", "zmq"};

#define HYBRID_SPIN_NS 20000

struct cfg {
    int n_tokens;
    int64_t period_ns;
};

/* ---- shared-memory ring --------------------------------------------------------------- */

static int ring_consumer(const char *name, size_t size, enum mode mode, int n, int64_t *lat)
{
    struct fp8_shm shm;
    struct fp8_ring_geom geom;
    struct fp8_ring_cons c;
    struct fp8_ring_rec r;
    if (fp8_shm_open(&shm, name, size, NULL) < 0 ||
        fp8_ring_attach(shm.base, shm.size, &geom, NULL) < 0)
        return 2;
    fp8_ring_cons_init(&c, shm.base, &geom, 0);
    for (int i = 0; i < n; i++) {
        int rc;
        int64_t spin_end = mode == MODE_HYBRID ? fp8_now_ns() + HYBRID_SPIN_NS : 0;
        for (uint32_t k = 0; (rc = fp8_ring_peek(&c, &r)) == 0; k++) {
            bool sleep = mode == MODE_SLEEP ||
                         (mode == MODE_HYBRID && (k & 63) == 63 && fp8_now_ns() > spin_end);
            if (sleep && fp8_ring_wait(&c, 10 * 1000000000ll) < 0)
                return 3;
        }
        int64_t t = fp8_now_ns(), stamp;
        if (rc < 0 || r.text_len != sizeof(stamp) || r.token != i)
            return 4;
        memcpy(&stamp, r.text, sizeof(stamp));
        lat[i] = t - stamp;
        fp8_ring_advance(&c);
    }
    fp8_shm_close(&shm);
    return 0;
}

static int run_ring(const struct cfg *cfg, enum mode mode, int n_cons, int64_t *lat,
                    pid_t *pids)
{
    struct fp8_ring_geom geom;
    struct fp8_shm *shm = calloc((size_t)n_cons, sizeof(*shm));
    struct fp8_ring_prod *prod = calloc((size_t)n_cons, sizeof(*prod));
    struct fp8_err err;
    int rc = 0;
    fp8_ring_geom_init(&geom, 1, SLOT_BYTES, NULL);
    for (int k = 0; k < n_cons; k++) {
        if (fp8_shm_create(&shm[k], geom.total_bytes, 0600, &err) < 0) {
            fprintf(stderr, "ipc_latency: %s\n", err.msg);
            exit(1);
        }
        fp8_ring_format(shm[k].base, &geom);
        fp8_ring_prod_init(&prod[k], shm[k].base, &geom, 0);
        pids[k] = fork();
        if (pids[k] == 0)
            _exit(ring_consumer(shm[k].name, geom.total_bytes, mode, cfg->n_tokens,
                                lat + (size_t)k * cfg->n_tokens));
    }
    for (int k = 0; k < n_cons; k++) {
        int64_t deadline = fp8_now_ns() + 10 * 1000000000ll;
        while (!fp8_ring_attached(shm[k].base) && fp8_now_ns() < deadline)
            sched_yield();
        fp8_shm_unlink(&shm[k], NULL);
    }
    int64_t next = fp8_now_ns() + cfg->period_ns;
    for (int i = 0; i < cfg->n_tokens && rc == 0; i++) {
        sleep_until(next);
        next += cfg->period_ns;
        for (int k = 0; k < n_cons; k++) {
            int64_t stamp = fp8_now_ns();
            rc = fp8_ring_publish(&prod[k], i, 0, 0, &stamp, sizeof(stamp));
            if (rc < 0) {
                fprintf(stderr, "ipc_latency: publish: %s\n", strerror(-rc));
                break;
            }
        }
    }
    for (int k = 0; k < n_cons; k++)
        fp8_shm_close(&shm[k]);
    free(shm);
    free(prod);
    return rc;
}

/* ---- ZeroMQ ------------------------------------------------------------------------------ */

static int zmq_consumer(const char *endpoint, int n, int64_t *lat)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, rc = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(s, endpoint) < 0 || zmq_send(s, "hi", 2, 0) < 0)
        return 2;
    for (int i = 0; i < n && rc == 0; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, s, 0) < 0) {
            rc = 3;
            break;
        }
        int64_t t = fp8_now_ns(), stamp;
        struct fp8_msg m;
        if (fp8_msg_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), FP8_MSG_DIR_REPLY, &m,
                           NULL) < 0 ||
            m.op != FP8_MSG_OP_CHUNK || m.u.chunk.text.len != sizeof(stamp))
            rc = 4;
        else {
            memcpy(&stamp, m.u.chunk.text.s, sizeof(stamp));
            lat[i] = t - stamp;
        }
        fp8_msg_free(&m);
        zmq_msg_close(&msg);
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return rc;
}

static int run_zmq(const struct cfg *cfg, int n_cons, int64_t *lat, pid_t *pids)
{
    char endpoint[128];
    snprintf(endpoint, sizeof(endpoint), "ipc:///tmp/fp8d-ipc-latency-%d.sock", (int)getpid());
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0, hwm = 0, rc = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    if (zmq_bind(s, endpoint) < 0) {
        fprintf(stderr, "ipc_latency: bind %s: %s\n", endpoint, zmq_strerror(errno));
        exit(1);
    }
    for (int k = 0; k < n_cons; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            /* a forked child must not touch the parent's ZeroMQ context */
            _exit(zmq_consumer(endpoint, cfg->n_tokens, lat + (size_t)k * cfg->n_tokens));
        }
    }
    /* routing ids of the consumers, in the order their hellos arrive */
    uint8_t (*ids)[256] = calloc((size_t)n_cons, sizeof(*ids));
    size_t *id_len = calloc((size_t)n_cons, sizeof(*id_len));
    int timeout = 10000;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    for (int k = 0; k < n_cons; k++) {
        int n = zmq_recv(s, ids[k], sizeof(ids[k]), 0);
        char hi[8];
        if (n < 0 || zmq_recv(s, hi, sizeof(hi), 0) < 0) {
            fprintf(stderr, "ipc_latency: consumer %d never said hello\n", k);
            exit(1);
        }
        id_len[k] = (size_t)n;
    }
    int64_t next = fp8_now_ns() + cfg->period_ns;
    for (int i = 0; i < cfg->n_tokens && rc == 0; i++) {
        sleep_until(next);
        next += cfg->period_ns;
        for (int k = 0; k < n_cons; k++) {
            int64_t stamp = fp8_now_ns();
            int32_t tok = i;
            struct fp8_msg m;
            void *buf;
            size_t len;
            fp8_msg_init(&m, FP8_MSG_OP_CHUNK, 1);
            m.u.chunk.tokens = (struct fp8_msg_ids){&tok, 1};
            m.u.chunk.text = (struct fp8_msg_str){(const char *)&stamp, sizeof(stamp)};
            rc = fp8_msg_encode(&m, &buf, &len, NULL);
            if (rc == 0 && (zmq_send(s, ids[k], id_len[k], ZMQ_SNDMORE) < 0 ||
                            zmq_send(s, buf, len, 0) < 0))
                rc = -errno;
            free(buf);
            if (rc < 0)
                break;
        }
    }
    free(ids);
    free(id_len);
    zmq_close(s);
    zmq_ctx_term(ctx);
    unlink(endpoint + strlen("ipc://"));
    return rc;
}

/* ---- driver ------------------------------------------------------------------------------ */

static int run_one(const struct cfg *cfg, enum mode mode, int n_cons)
{
    size_t n_lat = (size_t)n_cons * cfg->n_tokens;
    int64_t *lat = mmap(NULL, n_lat * sizeof(int64_t), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t *pids = calloc((size_t)n_cons, sizeof(*pids));
    if (lat == MAP_FAILED || !pids) {
        fprintf(stderr, "ipc_latency: out of memory\n");
        exit(1);
    }
    int rc = mode == MODE_ZMQ ? run_zmq(cfg, n_cons, lat, pids)
                              : run_ring(cfg, mode, n_cons, lat, pids);
    int failed = rc < 0;
    for (int k = 0; k < n_cons; k++) {
        int status;
        if (rc < 0)
            kill(pids[k], SIGKILL);
        if (waitpid(pids[k], &status, 0) != pids[k] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            fprintf(stderr, "ipc_latency: %s consumer %d failed (status %d)\n",
                    mode_names[mode], k, status);
            failed = 1;
        }
    }
    if (!failed) {
        /* drop each consumer's warm-up tokens, then pool the rest */
        size_t per = (size_t)cfg->n_tokens - WARMUP, m = 0;
        int64_t *all = malloc((size_t)n_cons * per * sizeof(*all));
        for (int k = 0; k < n_cons; k++)
            for (size_t i = WARMUP; i < (size_t)cfg->n_tokens; i++)
                all[m++] = lat[(size_t)k * cfg->n_tokens + i];
        qsort(all, m, sizeof(*all), cmp_i64);
        printf("%-6s %9d %9zu %9.1f %9.1f %9.1f\n", mode_names[mode], n_cons, m,
               all[m / 2] / 1e3, all[m * 99 / 100] / 1e3, all[m - 1] / 1e3);
        fflush(stdout);
        free(all);
    }
    munmap(lat, n_lat * sizeof(int64_t));
    free(pids);
    return failed;
}

int main(int argc, char **argv)
{
    struct cfg cfg = {.n_tokens = 5000, .period_ns = 200000};
    const char *consumers = "1,32", *modes = "spin,sleep,hybrid,zmq";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            cfg.n_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--period-us") && i + 1 < argc)
            cfg.period_ns = atoll(argv[++i]) * 1000;
        else if (!strcmp(argv[i], "--consumers") && i + 1 < argc)
            consumers = argv[++i];
        else if (!strcmp(argv[i], "--modes") && i + 1 < argc)
            modes = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--tokens N] [--period-us P] [--consumers 1,32] "
                            "[--modes spin,sleep,hybrid,zmq]\n", argv[0]);
            return 2;
        }
    }
    if (cfg.n_tokens <= WARMUP || cfg.period_ns <= 0) {
        fprintf(stderr, "ipc_latency: --tokens must be over %d, --period-us positive\n", WARMUP);
        return 2;
    }
    printf("%-6s %9s %9s %9s %9s %9s\n", "mode", "consumers", "samples", "p50_us", "p99_us",
           "max_us");
    int failed = 0;
    char mbuf[64];
    snprintf(mbuf, sizeof(mbuf), "%s", modes);
    for (char *ms = strtok(mbuf, ","); ms; ms = strtok(NULL, ",")) {
        int mode = -1;
        for (int k = 0; k < (int)(sizeof(mode_names) / sizeof(mode_names[0])); k++)
            if (!strcmp(ms, mode_names[k]))
                mode = k;
        if (mode < 0) {
            fprintf(stderr, "ipc_latency: unknown mode \"%s\"\n", ms);
            return 2;
        }
        for (const char *c = consumers; *c;) {
            int n = atoi(c);
            if (n < 1 || n > 256) {
                fprintf(stderr, "ipc_latency: consumers must be in 1..256\n");
                return 2;
            }
            failed |= run_one(&cfg, mode, n);
            c = strchr(c, ',');
            if (!c)
                break;
            c++;
        }
    }
    return failed;
}
