/*
 * workload.c — making and checking amora-bench's data (perf/lib/workload.h).
 */
#include "perf/lib/workload.h"

#include <stdlib.h>

#include "perf/lib/fail.h"

void workload_make(struct workload *w, uint64_t n, uint64_t s, uint64_t a)
{
	uint64_t rng = 0x9E3779B97F4A7C15ull;

	w->n = n, w->s = s, w->a = a;
	w->tags = w->t = 0;
	w->tag_keys = w->tag_vals = NULL;
	w->keys = bench_malloc(n * KLEN);
	w->vals = bench_malloc(n * VLEN);
	w->hit_keys = bench_malloc(n * KLEN);
	w->hit_idx = bench_malloc(n * sizeof(*w->hit_idx));
	w->hit_vals = bench_malloc(n * VLEN);
	w->miss_keys = bench_malloc(n * KLEN);
	w->xidx = bench_malloc(s * sizeof(*w->xidx));
	uint32_t *perm = bench_malloc(n * sizeof(*perm));

	for (uint64_t i = 0; i < n; i++) {
		workload_key(w->keys + i * KLEN, i, 0);
		workload_val(w->vals + i * VLEN, i);
		w->hit_idx[i] = (uint32_t)i;
		perm[i] = (uint32_t)i;
	}
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = workload_splitmix(&rng) % (i + 1);
		uint32_t t = w->hit_idx[i];
		w->hit_idx[i] = w->hit_idx[j], w->hit_idx[j] = t;
		j = workload_splitmix(&rng) % (i + 1);
		t = perm[i];
		perm[i] = perm[j], perm[j] = t;
	}
	for (uint64_t j = 0; j < n; j++) {
		memcpy(w->hit_keys + j * KLEN, w->keys + (uint64_t)w->hit_idx[j] * KLEN, KLEN);
		memcpy(w->hit_vals + j * VLEN, w->vals + (uint64_t)w->hit_idx[j] * VLEN, VLEN);
		workload_key(w->miss_keys + j * KLEN, workload_splitmix(&rng) % n, 'A');
	}
	for (uint64_t j = 0; j < s; j++)
		w->xidx[j] = perm[j];
	free(perm);
}

void workload_make_tags(struct workload *w, uint64_t tags)
{
	if (tags < 1 || tags > 1000000)
		bench_die("workload_make_tags: %llu tags", (unsigned long long)tags);
	w->tags = tags;
	w->t = tags * WORKLOAD_TAG_KEYS;
	w->tag_keys = bench_malloc(w->t * KLEN);
	w->tag_vals = bench_malloc(w->t * VLEN);
	for (uint64_t i = 0; i < w->t; i++) {
		workload_tag_key(w->tag_keys + i * KLEN, i / WORKLOAD_TAG_KEYS, i % WORKLOAD_TAG_KEYS);
		workload_val(w->tag_vals + i * VLEN, WORKLOAD_TAG_ID0 + i);
	}
}

void workload_check(const char *what, uint64_t id, const char *got, size_t glen)
{
	char exp[VLEN];

	workload_val(exp, id);
	if (glen != VLEN || memcmp(got, exp, VLEN) != 0) {
		size_t d = 0;
		while (d < VLEN && d < glen && got[d] == exp[d])
			d++;
		bench_die("%s: WRONG VALUE for key %llu: length %zu (expected %d), first difference at byte %zu",
			  what, (unsigned long long)id, glen, VLEN, d);
	}
}
