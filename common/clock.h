/* The one clock for latencies and deadlines: CLOCK_MONOTONIC, which wall-clock changes do
 * not move. */
#ifndef FP8_COMMON_CLOCK_H
#define FP8_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t fp8_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
