/* A fixed-rate control loop (100 Hz) that takes whatever tokens have arrived each period
 * without ever blocking on the model: fp8d_stream_next with timeout 0 costs no system
 * call when the tokens come through shared memory. The loop keeps its period whether the
 * model is fast, slow or done; here it just reports how many tokens each tick saw. */
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include <fp8d.h>

#define PERIOD_NS 10000000L /* 100 Hz */

int main(int argc, char **argv)
{
    fp8d_client *c;
    fp8d_stream *s = NULL;
    struct fp8d_token t;
    struct timespec next;
    int rc = fp8d_connect(NULL, 0, 5000, &c);
    if (rc == 0)
        rc = fp8d_generate(c, argc > 1 ? argv[1] : "List three robot arm joints:", NULL, &s);
    if (rc < 0) {
        fprintf(stderr, "fp8d: %s\n", fp8d_strerror(rc));
        fp8d_close(c);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &next);
    int done = 0, late = 0;
    for (int tick = 0; tick < 1000 && !done; tick++) {
        int got = 0;
        while ((rc = fp8d_stream_next(s, &t, 0)) == 1) { /* drain, never wait */
            fwrite(t.text, 1, t.text_len, stdout);
            got++;
        }
        if (rc != -EAGAIN) /* finished (0) or failed */
            done = 1;
        /* ... the control law would run here, using the `got` new tokens ... */
        (void)got;
        next.tv_nsec += PERIOD_NS;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
            late++;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    printf("\n%s; periods overrun: %d\n", rc < 0 && rc != -EAGAIN ? fp8d_strerror(rc) : "done",
           late);
    fp8d_stream_free(s);
    fp8d_close(c);
    return rc < 0 && rc != -EAGAIN;
}
