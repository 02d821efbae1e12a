/*
 * env.h — what a benchmark reads of its surroundings: integer settings
 * from environment variables, and the machine's load average.
 */
#ifndef AMORA_PERF_ENV_H
#define AMORA_PERF_ENV_H

#include <stdint.h>

/* $name as an integer in lo..hi, or def when it is unset or empty. A value
 * that is not such an integer prints "<program>: NAME=VALUE: expected an
 * integer in LO..HI" and exits with bad_status. */
uint64_t env_u64(const char *name, uint64_t def, uint64_t lo, uint64_t hi, int bad_status);

/* The 1-minute load average, or -1 when /proc/loadavg cannot be read. */
double env_loadavg(void);

#endif
