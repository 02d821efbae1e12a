/*
 * phases.c — the single-client phases on any engine (perf/lib/phases.h).
 */
#include "perf/lib/phases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* n keys and their values, read in sequence, with put_buffered, one
 * flush at the end; no latency. */
static struct fig phase_load(struct engine *e, const char *keys, const char *vals, uint64_t n)
{
	struct samples s = {0};
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < n; j++)
		e->put_buffered(e, keys + j * KLEN, KLEN, vals + j * VLEN, VLEN);
	e->flush(e);
	struct fig f = fig_of(&s, n, shm_now_ns() - t0);
	f.p50 = f.p99 = -1;
	return f;
}

struct fig phase_buffered_random(struct engine *e, const struct workload *w)
{
	return phase_load(e, w->hit_keys, w->hit_vals, w->n);
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

/* Dies unless set k of phase_batch's (key w->hit_idx[k % n], batch k /
 * b) reads back with the batch's value (id0 + its key; set_back: its
 * own), naming what it holds instead. */
static void phase_batch_check(struct engine *e, const struct workload *w, const char *what,
			      uint64_t k, uint64_t b, uint64_t id0, int set_back)
{
	char buf[VLEN + 28], batch[VLEN], own[VLEN];
	uint32_t i = w->hit_idx[k % w->n];
	long got = e->get(e, w->keys + (uint64_t)i * KLEN, KLEN, buf, sizeof(buf));

	if (got < 0)
		bench_die("%s: existing key %u (set %llu of batch %llu) not found", what, i,
			  (unsigned long long)(k % b), (unsigned long long)(k / b));
	workload_val(batch, id0 + i);
	workload_val(own, i);
	int is_batch = got == VLEN && memcmp(buf, batch, VLEN) == 0;
	int is_own = got == VLEN && memcmp(buf, own, VLEN) == 0;
	if (set_back ? is_own : is_batch)
		return;
	const char *held = is_own ? "its own value" : is_batch ? "the batch's value"
			   : got == VLEN ? "another value" : "a value of another length";
	bench_die("%s: WRONG VALUE for key %u (set %llu of batch %llu): %s, expected %s", what, i,
		  (unsigned long long)(k % b), (unsigned long long)(k / b), held,
		  set_back ? "its own" : "the batch's");
}

/* phase_batch_check of every PHASE_BATCH_STRIDE-th of the m sets and of
 * every set of the last batch (of b). */
static void phase_batch_sample(struct engine *e, const struct workload *w, const char *what,
			       uint64_t m, uint64_t b, uint64_t id0, int set_back)
{
	for (uint64_t k = 0; k < m; k += PHASE_BATCH_STRIDE)
		phase_batch_check(e, w, what, k, b, id0, set_back);
	for (uint64_t k = m - b; k < m; k++)
		phase_batch_check(e, w, what, k, b, id0, set_back);
}

struct fig phase_batch(struct engine *e, const struct workload *w, uint64_t b, uint64_t ops)
{
	struct samples s = {0};
	uint64_t nb = ops / b ? ops / b : 1, m = nb * b;
	uint64_t id0 = PHASE_BATCH_ID0 + b * PHASE_BATCH_ID_STEP;
	char what[64];

	if (b > w->n)
		bench_die("batch of %llu: only %llu keys", (unsigned long long)b, (unsigned long long)w->n);
	struct amora_op *op = bench_malloc(m * sizeof(*op));
	char *vals = bench_malloc(m * VLEN);
	for (uint64_t k = 0; k < m; k++) {
		uint32_t i = w->hit_idx[k % w->n];
		workload_val(vals + k * VLEN, id0 + i);
		op[k] = (struct amora_op){ AMORA_OP_SET, w->keys + (uint64_t)i * KLEN, KLEN, vals + k * VLEN,
					   VLEN };
	}
	uint64_t t0 = shm_now_ns();
	for (uint64_t j = 0; j < nb; j++) {
		uint64_t a = shm_now_ns();
		e->put_batch(e, op + j * b, b);
		samples_push(&s, shm_now_ns() - a);
	}
	struct fig f = fig_of(&s, m, shm_now_ns() - t0);

	snprintf(what, sizeof(what), "%s batch %llu", e->name, (unsigned long long)b);
	phase_batch_sample(e, w, what, m, b, id0, 0);
	for (uint64_t k = 0; k < m && k < w->n; k++)
		e->put_buffered(e, w->hit_keys + k * KLEN, KLEN, w->hit_vals + k * VLEN, VLEN);
	e->flush(e);
	snprintf(what, sizeof(what), "%s batch %llu, keys set back", e->name, (unsigned long long)b);
	phase_batch_sample(e, w, what, m, b, id0, 1);
	free(op);
	free(vals);
	return f;
}

struct fig phase_scan_all(struct engine *e, const struct workload *w)
{
	char kb[KLEN], vb[VLEN];
	const char *k, *v;
	size_t klen, vlen;
	uint64_t j = 0, t0 = shm_now_ns();

	e->scan_open(e, NULL, 0, 0);
	while (e->scan_next(e, &k, &klen, &v, &vlen)) {
		if (klen != KLEN || vlen != VLEN || j >= w->n)
			bench_die("%s full scan: entry %llu: key of %zu bytes, value of %zu (expected %d, %d; %llu keys)",
				  e->name, (unsigned long long)j, klen, vlen, KLEN, VLEN, (unsigned long long)w->n);
		memcpy(kb, k, KLEN);
		memcpy(vb, v, VLEN);
		if ((j & PHASE_SAMPLE_MASK) == 0 &&
		    (memcmp(kb, w->keys + j * KLEN, KLEN) != 0 || memcmp(vb, w->vals + j * VLEN, VLEN) != 0))
			bench_die("%s full scan: entry %llu is %.16s, expected key %llu with its value", e->name,
				  (unsigned long long)j, kb, (unsigned long long)j);
		j++;
	}
	e->scan_close(e);
	uint64_t t1 = shm_now_ns();
	if (j != w->n)
		bench_die("%s full scan: %llu entries, expected %llu", e->name, (unsigned long long)j,
			  (unsigned long long)w->n);
	struct samples s = {0};
	struct fig f = fig_of(&s, j, t1 - t0);
	f.p50 = f.p99 = -1;
	return f;
}

/* One seek + PHASE_SEEK_LIMIT: the prefix's first entries copied to kb,
 * vb; returns how many. */
static uint64_t phase_seek(struct engine *e, const char *prefix, size_t plen, char kb[][KLEN],
			   char vb[][VLEN])
{
	const char *k, *v;
	size_t klen, vlen;
	uint64_t m = 0;

	e->scan_open(e, prefix, plen, PHASE_SEEK_LIMIT);
	while (e->scan_next(e, &k, &klen, &v, &vlen)) {
		if (klen != KLEN || vlen != VLEN || m >= PHASE_SEEK_LIMIT)
			bench_die("%s seek %.*s: entry %llu: key of %zu bytes, value of %zu", e->name, (int)plen,
				  prefix, (unsigned long long)m, klen, vlen);
		memcpy(kb[m], k, KLEN);
		memcpy(vb[m], v, VLEN);
		m++;
	}
	e->scan_close(e);
	return m;
}

/* Dies unless the m entries of a seek are `want` entries from keys/vals. */
static void phase_seek_check(const struct engine *e, const char *what, uint64_t m, uint64_t want,
			     char kb[][KLEN], char vb[][VLEN], const char *keys, const char *vals)
{
	if (m != want)
		bench_die("%s %s: %llu entries, expected %llu", e->name, what, (unsigned long long)m,
			  (unsigned long long)want);
	for (uint64_t i = 0; i < m; i++)
		if (memcmp(kb[i], keys + i * KLEN, KLEN) != 0 || memcmp(vb[i], vals + i * VLEN, VLEN) != 0)
			bench_die("%s %s: entry %llu is %.16s, expected %.16s with its value", e->name, what,
				  (unsigned long long)i, kb[i], keys + i * KLEN);
}

struct fig phase_seek_prefix(struct engine *e, const struct workload *w, uint64_t ops)
{
	struct samples s = {0};
	char kb[PHASE_SEEK_LIMIT][KLEN], vb[PHASE_SEEK_LIMIT][VLEN];
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < ops; j++) {
		uint64_t i = w->hit_idx[j % w->n], first = i / 100 * 100; /* 14 bytes: all but 2 digits */
		const char *prefix = w->keys + i * KLEN;
		uint64_t a = shm_now_ns();
		uint64_t m = phase_seek(e, prefix, PHASE_SEEK_PREFIX, kb, vb);
		samples_push(&s, shm_now_ns() - a);
		uint64_t want = w->n - first < PHASE_SEEK_LIMIT ? w->n - first : PHASE_SEEK_LIMIT;
		phase_seek_check(e, "seek + 10", m, want, kb, vb, w->keys + first * KLEN, w->vals + first * VLEN);
	}
	return fig_of(&s, ops, shm_now_ns() - t0);
}

struct fig phase_tag_load(struct engine *e, const struct workload *w)
{
	return phase_load(e, w->tag_keys, w->tag_vals, w->t);
}

struct fig phase_seek_tag(struct engine *e, const struct workload *w, uint64_t ops)
{
	struct samples s = {0};
	char kb[PHASE_SEEK_LIMIT][KLEN], vb[PHASE_SEEK_LIMIT][VLEN];
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < ops; j++) {
		uint64_t first = w->hit_idx[j % w->n] % w->tags * WORKLOAD_TAG_KEYS;
		const char *prefix = w->tag_keys + first * KLEN;
		uint64_t a = shm_now_ns();
		uint64_t m = phase_seek(e, prefix, WORKLOAD_TAG_PREFIX, kb, vb);
		samples_push(&s, shm_now_ns() - a);
		phase_seek_check(e, "tagged seek + 10", m, PHASE_SEEK_LIMIT, kb, vb, w->tag_keys + first * KLEN,
				 w->tag_vals + first * VLEN);
	}
	return fig_of(&s, ops, shm_now_ns() - t0);
}
