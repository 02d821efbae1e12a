/*
 * clock.h — the one clock every process of the store uses: CLOCK_MONOTONIC
 * in nanoseconds (timeouts, deadlines, sync intervals, log lines' durations).
 */
#ifndef AMORA_SHM_CLOCK_H
#define AMORA_SHM_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t shm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
