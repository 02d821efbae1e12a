/*
 * bench_skiplist.c — what the per-shard skip list (shm/skiplist.h) costs:
 * one shard's list at 1 M keys over 64 shards (16 K keys of 16 bytes,
 * "key:%012d", random order) built by shm_skip_build vs by 16 K links, a
 * seek, a full scan per key; then 64 such lists (1 M keys) sought one
 * after another vs in lock-step (shm_skip_seek_step round-robin, so their
 * cache misses overlap), as a client's merge seeks every shard.
 * Wall-clock figures of one run on a busy machine: ratios matter, not
 * absolute values. Exits 0 unless something fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "shm/skiplist.h"

#define NKEYS 16384
#define NLISTS 64
#define SEEKS 200000

static struct shm_seg seg;
static struct shm_slab *slab;

static void die(const char *what)
{
	fprintf(stderr, "bench_skiplist: %s\n", what);
	exit(1);
}

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

static uint64_t record(uint32_t i)
{
	char k[32], v[16];
	uint64_t off;
	int kl = sprintf(k, "key:%012u", i);

	memset(v, 'v', sizeof(v));
	if (shm_record_new(&seg, slab, k, (uint32_t)kl, v, sizeof(v), 1, &off) != SHM_OK)
		die("record");
	return off;
}

/* A list of keys ids[0..n) (random order) by links; *recs gets their records. */
static uint64_t link_list(const uint32_t *ids, size_t n, uint64_t *recs, uint64_t *rng)
{
	uint64_t list, node;
	char k[32];

	if (shm_skip_create(&seg, slab, &list) != SHM_OK)
		die("create");
	for (size_t i = 0; i < n; i++) {
		int kl = sprintf(k, "key:%012u", ids[i]);
		recs[i] = record(ids[i]);
		if (shm_skip_node_new(&seg, slab, k, (uint32_t)kl, recs[i], shm_skip_height(rng), &node) != SHM_OK)
			die("node");
		shm_skip_link(&seg, list, node);
	}
	return list;
}

int main(void)
{
	static uint32_t ids[NKEYS * NLISTS];
	static uint64_t recs[NKEYS * NLISTS], sorted[NKEYS];
	uint64_t x = 88172645463325252ULL, rng = 1, list, built, t0, t1;
	struct shm_skip_view v;
	struct shm_skip_cursor c;
	char k[32];

	if (shm_seg_create(&seg, 1ULL << 30, 1) != SHM_OK)
		die("segment");
	slab = &shm_shard_at(&seg, 0)->slab;
	/* Keys 0, 64, 128, ...: one shard's share of 1 M keys, shuffled. */
	for (uint32_t i = 0; i < NKEYS; i++)
		ids[i] = i * NLISTS;
	for (uint32_t i = NKEYS - 1; i > 0; i--) {
		uint32_t j = (uint32_t)(rnd(&x) % (i + 1)), t = ids[i];
		ids[i] = ids[j], ids[j] = t;
	}
	t0 = shm_now_ns();
	list = link_list(ids, NKEYS, recs, &rng);
	t1 = shm_now_ns();
	printf("link   %d keys one by one: %7.1f ns/key\n", NKEYS, (double)(t1 - t0) / NKEYS);
	/* The same records sorted (their ids are key order). */
	for (uint32_t i = 0; i < NKEYS; i++)
		sorted[ids[i] / NLISTS] = recs[i];
	t0 = shm_now_ns();
	if (shm_skip_build(&seg, slab, sorted, NKEYS, &rng, &built) != SHM_OK)
		die("build");
	t1 = shm_now_ns();
	printf("build  %d keys (O(n)):      %7.1f ns/key\n", NKEYS, (double)(t1 - t0) / NKEYS);

	if (shm_skip_view(&seg, list, &v) != SHM_OK)
		die("view");
	t0 = shm_now_ns();
	for (int i = 0; i < SEEKS; i++) {
		int kl = sprintf(k, "key:%012u", (uint32_t)(rnd(&x) % (NKEYS * NLISTS)));
		if (shm_skip_seek(&seg, &c, &v, k, (uint32_t)kl, true, false) != SHM_OK)
			die("seek");
	}
	t1 = shm_now_ns();
	printf("seek   in %d keys:          %7.1f ns/seek (key formatting included)\n", NKEYS,
	       (double)(t1 - t0) / SEEKS);
	uint64_t n = 0, sum = 0;
	t0 = shm_now_ns();
	for (int rep = 0; rep < 20; rep++) {
		struct shm_kv kv;
		for (int rc = shm_skip_seek(&seg, &c, &v, NULL, 0, true, false); rc == SHM_OK;
		     rc = shm_skip_cursor_next(&seg, &c, NULL)) {
			if (shm_skip_cursor_get(&seg, &c, &kv) != SHM_OK)
				break;
			sum += kv.val[0];
			n++;
		}
	}
	t1 = shm_now_ns();
	if (n != 20ull * NKEYS)
		die("scan count");
	printf("scan   forward, get included: %7.1f ns/key\n", (double)(t1 - t0) / (double)n);
	n = 0;
	t0 = shm_now_ns();
	for (int rc = shm_skip_seek(&seg, &c, &v, NULL, 0, true, true); rc == SHM_OK;
	     rc = shm_skip_cursor_next(&seg, &c, NULL))
		n++;
	t1 = shm_now_ns();
	printf("scan   reverse (a predecessor search per key): %7.1f ns/key\n", (double)(t1 - t0) / (double)n);

	/* 64 lists of 16 K keys: 1 M keys, records and nodes interleaved in
	 * memory as 64 shards' would not be, but each seek's misses are real. */
	static uint64_t lists[NLISTS];
	static struct shm_skip_view views[NLISTS];
	static struct shm_skip_cursor cs[NLISTS];
	for (uint32_t l = 0; l < NLISTS; l++) {
		for (uint32_t i = 0; i < NKEYS; i++)
			ids[i] = ids[i] / NLISTS * NLISTS + l;
		lists[l] = link_list(ids, NKEYS, recs, &rng);
		if (shm_skip_view(&seg, lists[l], &views[l]) != SHM_OK)
			die("view");
	}
	const int rounds = 2000;
	t0 = shm_now_ns();
	for (int r = 0; r < rounds; r++) {
		int kl = sprintf(k, "key:%012u", (uint32_t)(rnd(&x) % (NKEYS * NLISTS)));
		for (int l = 0; l < NLISTS; l++)
			if (shm_skip_seek(&seg, &cs[l], &views[l], k, (uint32_t)kl, true, false) != SHM_OK)
				die("seek");
	}
	t1 = shm_now_ns();
	printf("seek   64 lists of %d, one after another: %7.1f us per 64 seeks\n", NKEYS,
	       (double)(t1 - t0) / rounds / 1000);
	uint64_t steps = 0;
	t0 = shm_now_ns();
	for (int r = 0; r < rounds; r++) {
		int kl = sprintf(k, "key:%012u", (uint32_t)(rnd(&x) % (NKEYS * NLISTS)));
		bool busy = true;
		for (int l = 0; l < NLISTS; l++)
			shm_skip_seek_start(&cs[l], &views[l], k, (uint32_t)kl, true, false);
		while (busy) {
			busy = false;
			for (int l = 0; l < NLISTS; l++) {
				int rc = shm_skip_seek_step(&seg, &cs[l]);
				if (rc < 0)
					die("step");
				busy |= rc == 1;
				steps += (uint64_t)rc;
			}
		}
	}
	t1 = shm_now_ns();
	printf("seek   64 lists of %d, in lock-step:      %7.1f us per 64 seeks (%.1f steps per seek)\n", NKEYS,
	       (double)(t1 - t0) / rounds / 1000, (double)steps / rounds / NLISTS);
	if (sum == 1)
		printf("\n");
	shm_seg_close(&seg);
	return 0;
}
