/*
 * figures.h — latency samples and the figures made of them: ops/s, p50,
 * p99, medians over runs, and how the report prints them.
 */
#ifndef AMORA_PERF_FIGURES_H
#define AMORA_PERF_FIGURES_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "perf/lib/fail.h"

/* Latencies in ns, grown as needed; {0} is empty. fig_of frees them. */
struct samples {
	uint64_t *v;
	size_t n, cap;
};

/* One phase of one run. p50/p99 are -1 for a phase without a latency. */
struct fig {
	double ops, p50, p99; /* ops/s, ns, ns */
};

static inline void samples_push(struct samples *s, uint64_t x)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			bench_die("out of memory (samples)");
	}
	s->v[s->n++] = x;
}

/* ops over elapsed_ns, p50 and p99 of the samples (0 without samples);
 * sorts and frees s (empty again afterwards). */
struct fig fig_of(struct samples *s, uint64_t ops, uint64_t elapsed_ns);

/* Median of v[0..n) (the mean of the middle two when n is even); n is
 * 1..FIG_MAXRUNS; v is not changed. */
#define FIG_MAXRUNS 15
double fig_median(const double *v, int n);

/* Text for the report, written to b (32 bytes are enough) and returned:
 * "1.23 M" / "45.6 k" / "789" ops; "-" / "850 ns" / "12.3 us" / "250 us" /
 * "1.50 ms" for a latency in ns (negative: none); "1 M" / "20 k" / "1234"
 * for a count. */
const char *fig_fmt_ops(char *b, double v);
const char *fig_fmt_lat(char *b, double ns);
const char *fig_fmt_count(char *b, uint64_t n);

#endif
