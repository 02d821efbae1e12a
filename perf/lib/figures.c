/*
 * figures.c — percentiles, medians and their text (perf/lib/figures.h).
 */
#include "perf/lib/figures.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int fig_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int fig_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct fig fig_of(struct samples *s, uint64_t ops, uint64_t elapsed_ns)
{
	struct fig f = {0};

	f.ops = elapsed_ns ? ops * 1e9 / (double)elapsed_ns : 0;
	if (s->n) {
		qsort(s->v, s->n, sizeof(*s->v), fig_cmp_u64);
		f.p50 = (double)s->v[(size_t)(s->n * 0.50)];
		size_t i99 = (size_t)ceil(s->n * 0.99) - 1;
		f.p99 = (double)s->v[i99 < s->n ? i99 : s->n - 1];
	}
	free(s->v);
	s->v = NULL, s->n = s->cap = 0;
	return f;
}

double fig_median(const double *v, int n)
{
	double t[FIG_MAXRUNS];

	memcpy(t, v, n * sizeof(double));
	qsort(t, n, sizeof(double), fig_cmp_double);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

const char *fig_fmt_ops(char *b, double v)
{
	if (v >= 1e6)
		sprintf(b, "%.2f M", v / 1e6);
	else if (v >= 1e3)
		sprintf(b, "%.1f k", v / 1e3);
	else
		sprintf(b, "%.0f", v);
	return b;
}

const char *fig_fmt_lat(char *b, double ns)
{
	if (ns < 0)
		sprintf(b, "-");
	else if (ns < 1e3)
		sprintf(b, "%.0f ns", ns);
	else if (ns < 1e5)
		sprintf(b, "%.1f us", ns / 1e3);
	else if (ns < 1e6)
		sprintf(b, "%.0f us", ns / 1e3);
	else
		sprintf(b, "%.2f ms", ns / 1e6);
	return b;
}

const char *fig_fmt_count(char *b, uint64_t n)
{
	if (n >= 1000000 && n % 1000000 == 0)
		sprintf(b, "%llu M", (unsigned long long)(n / 1000000));
	else if (n >= 1000 && n % 1000 == 0)
		sprintf(b, "%llu k", (unsigned long long)(n / 1000));
	else
		sprintf(b, "%llu", (unsigned long long)n);
	return b;
}
