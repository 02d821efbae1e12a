/*
 * phases.c — the single-client phases on any engine (perf/lib/phases.h).
 */
#include "perf/lib/phases.h"

#include <stdio.h>

#include "perf/lib/fail.h"
#include "shm/clock.h"

/* Gets k; op j, when it is a sampled one (every 64th), timed alone into s. */
static inline long phase_get(struct engine *e, const char *k, char *buf, size_t cap, uint64_t j,
			     struct samples *s)
{
	if (j & PHASE_SAMPLE_MASK)
		return e->get(e, k, KLEN, buf, cap);
	uint64_t a = shm_now_ns();
	long got = e->get(e, k, KLEN, buf, cap);
	samples_push(s, shm_now_ns() - a);
	return got;
}

struct fig phase_buffered(struct engine *e, const struct workload *w, uint64_t batch)
{
	struct samples s = {0};
	uint64_t t0 = shm_now_ns(), tb = t0;

	for (uint64_t i = 0; i < w->n; i++) {
		e->put_buffered(e, w->keys + i * KLEN, KLEN, w->vals + i * VLEN, VLEN);
		if ((batch && (i + 1) % batch == 0) || i + 1 == w->n) {
			e->flush(e);
			uint64_t t = shm_now_ns();
			samples_push(&s, t - tb);
			tb = t;
		}
	}
	return fig_of(&s, w->n, shm_now_ns() - t0);
}

struct fig phase_buffered_random(struct engine *e, const struct workload *w)
{
	struct samples s = {0};
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < w->n; j++)
		e->put_buffered(e, w->hit_keys + j * KLEN, KLEN, w->hit_vals + j * VLEN, VLEN);
	e->flush(e);
	struct fig f = fig_of(&s, w->n, shm_now_ns() - t0);
	f.p50 = f.p99 = -1;
	return f;
}

struct fig phase_sync_set(struct engine *e, const struct workload *w)
{
	struct samples s = {0};
	char k[KLEN], v[VLEN];
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < w->s; j++) {
		workload_key(k, w->xidx[j], 'a');
		workload_val(v, w->n + w->xidx[j]);
		uint64_t a = shm_now_ns();
		e->put(e, k, KLEN, v, VLEN);
		samples_push(&s, shm_now_ns() - a);
	}
	return fig_of(&s, w->s, shm_now_ns() - t0);
}

struct fig phase_hits(struct engine *e, const struct workload *w)
{
	struct samples s = {0};
	char buf[VLEN + 28], what[32];
	uint64_t t0 = shm_now_ns();

	snprintf(what, sizeof(what), "%s get hit", e->name);
	for (uint64_t j = 0; j < w->n; j++) {
		long got = phase_get(e, w->hit_keys + j * KLEN, buf, sizeof(buf), j, &s);
		if ((j & PHASE_SAMPLE_MASK) == 0) {
			if (got < 0)
				bench_die("%s: existing key %u not found", what, w->hit_idx[j]);
			workload_check(what, w->hit_idx[j], buf, (size_t)got);
		} else if (got != VLEN) {
			bench_die("%s: existing key %u: length %ld", what, w->hit_idx[j], got);
		}
	}
	return fig_of(&s, w->n, shm_now_ns() - t0);
}

struct fig phase_misses(struct engine *e, const struct workload *w)
{
	struct samples s = {0};
	char buf[VLEN + 28];
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < w->n; j++) {
		const char *k = w->miss_keys + j * KLEN;
		if (phase_get(e, k, buf, sizeof(buf), j, &s) != -1)
			bench_die("%s get miss: a missing key (%.16s) was found", e->name, k);
	}
	return fig_of(&s, w->n, shm_now_ns() - t0);
}

struct fig phase_dels(struct engine *e, const struct workload *w)
{
	struct samples s = {0};
	char k[KLEN], buf[VLEN + 28];
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < w->s; j++) {
		workload_key(k, w->xidx[w->s - 1 - j], 'a');
		uint64_t a = shm_now_ns();
		e->del(e, k, KLEN);
		samples_push(&s, shm_now_ns() - a);
	}
	struct fig f = fig_of(&s, w->s, shm_now_ns() - t0);
	for (uint64_t j = 0; j < w->s; j += 64) {
		workload_key(k, w->xidx[j], 'a');
		if (e->get(e, k, KLEN, buf, sizeof(buf)) != -1)
			bench_die("%s: a deleted key (%.16s) is still readable", e->name, k);
	}
	return f;
}

struct fig phase_always(struct engine *e, const struct workload *w)
{
	struct samples s = {0};
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < w->a; j++) {
		uint32_t i = w->hit_idx[j];
		uint64_t a = shm_now_ns();
		e->put(e, w->keys + (uint64_t)i * KLEN, KLEN, w->vals + (uint64_t)i * VLEN, VLEN);
		samples_push(&s, shm_now_ns() - a);
	}
	return fig_of(&s, w->a, shm_now_ns() - t0);
}
