/*
 * env.c — settings and load average (perf/lib/env.h).
 */
#include "perf/lib/env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

uint64_t env_u64(const char *name, uint64_t def, uint64_t lo, uint64_t hi, int bad_status)
{
	const char *s = getenv(name);
	char *end;

	if (!s || !*s)
		return def;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "%s: %s=%s: expected an integer in %llu..%llu\n", program_invocation_short_name, name,
			s, (unsigned long long)lo, (unsigned long long)hi);
		exit(bad_status);
	}
	return v;
}

double env_loadavg(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}
