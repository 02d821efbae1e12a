/*
 * test_slab.c — the per-shard allocator (slab.h): block sizes, reuse of
 * freed memory by any size, coalescing, chunks going back to the pool,
 * accounting, and the rebuild a restarted shard does from what is live.
 * Blocks are filled with a pattern of their own and checked when freed,
 * so any overlap between two blocks is seen.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "shm/segment.h"
#include "shm/slab.h"

#define MiB (1ULL << 20)

static struct shm_seg seg;
static struct shm_slab *s;

static void open_seg(uint64_t size, uint32_t shards)
{
	cr_assert_eq(shm_seg_create(&seg, size, shards), SHM_OK);
	s = &shm_shard_at(&seg, 0)->slab;
}

static void fini(void)
{
	if (seg.base)
		shm_seg_close(&seg);
}

TestSuite(slab, .fini = fini);

/* Byte i of block `id` (only every 64th byte and the last are written). */
static uint8_t pattern(uint32_t id, uint64_t i)
{
	return (uint8_t)(id * 131 + i * 7 + 1);
}

static void fill(uint64_t off, uint64_t size, uint32_t id)
{
	uint8_t *p = shm_ptr(&seg, off, size);

	cr_assert_not_null(p);
	for (uint64_t i = 0; i < size; i += 64)
		p[i] = pattern(id, i);
	p[size - 1] = pattern(id, size - 1);
}

static bool intact(uint64_t off, uint64_t size, uint32_t id)
{
	const uint8_t *p = shm_ptr(&seg, off, size);

	for (uint64_t i = 0; i < size; i += 64)
		if (p[i] != pattern(id, i))
			return false;
	return p[size - 1] == pattern(id, size - 1);
}

Test(slab, block_sizes)
{
	cr_assert_eq(shm_slab_rounded(0), 0);
	cr_assert_eq(shm_slab_rounded(1), 32);
	cr_assert_eq(shm_slab_rounded(24), 32);
	cr_assert_eq(shm_slab_rounded(25), 48);
	cr_assert_eq(shm_slab_rounded(132), 144, "a 16 B key + 100 B value record");
	cr_assert_eq(shm_slab_rounded(SHM_SLAB_MAX), SHM_CHUNK_SIZE - 16);
	cr_assert_eq(shm_slab_rounded(SHM_SLAB_MAX + 1), SHM_CHUNK_SIZE);
	for (uint64_t z = 1; z <= SHM_SLAB_MAX; z = z * 9 / 8 + 1) {
		uint64_t r = shm_slab_rounded(z);

		cr_assert(r >= z + 8 && (r - z <= 23 || r == 32) && r % 16 == 0, "size %lu takes %lu", z, r);
	}
}

Test(slab, alloc_free_reuse_and_accounting)
{
	struct shm_slab_stats st;
	uint64_t a, b, c;

	open_seg(32 * MiB, 1);
	cr_assert_eq(shm_slab_alloc(&seg, s, 0, &a), SHM_EINVAL);
	cr_assert_eq(shm_slab_alloc(&seg, s, 100, &a), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 100, &b), SHM_OK);
	cr_assert_eq(a % 16, 0);
	cr_assert_eq(b, a + 112);
	shm_slab_stats(s, &st);
	cr_assert_eq(st.chunk_bytes, SHM_CHUNK_SIZE);
	cr_assert_eq(st.live_bytes, 224);
	cr_assert_eq(st.requested_bytes, 200);
	cr_assert_eq(st.used_bytes, 16 + 224, "bytes past the frontier are not used: %lu",
		     st.used_bytes);
	cr_assert_eq(shm_slab_free(&seg, s, a, 100), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, a, 100), SHM_ERANGE, "double free");
	cr_assert_eq(shm_slab_alloc(&seg, s, 97, &c), SHM_OK);
	cr_assert_eq(c, a, "a freed block is reused");
	cr_assert_eq(shm_slab_free(&seg, s, 8, 100), SHM_ERANGE);
	cr_assert_eq(shm_slab_free(&seg, s, a + 8, 100), SHM_ERANGE);
	cr_assert_eq(shm_slab_free(&seg, s, a, 4000), SHM_ERANGE, "size larger than the block");
	cr_assert_eq(shm_slab_free(&seg, s, seg.size - 16, 100), SHM_ERANGE);
	cr_assert_eq(shm_slab_free(&seg, s, seg.size + (1ULL << 30), 32), SHM_ERANGE);
	cr_assert_eq(shm_slab_free(&seg, s, UINT64_MAX - 15, 32), SHM_ERANGE);

	/* Large blocks are runs of whole chunks and go back to the pool. */
	uint64_t before = shm_chunks_in_use(&seg);
	cr_assert_eq(shm_slab_alloc(&seg, s, 3 * MiB, &a), SHM_OK);
	cr_assert_eq(shm_chunks_in_use(&seg), before + 2);
	cr_assert_eq(shm_slab_free(&seg, s, a, 3 * MiB), SHM_OK);
	cr_assert_eq(shm_chunks_in_use(&seg), before);
	shm_slab_stats(s, &st);
	cr_assert_eq(st.allocs, 4);
	cr_assert_eq(st.frees, 2);
}

/* Neighbours merge: three freed blocks make one that a bigger request
 * takes; a chunk emptied of everything goes back to the pool. */
Test(slab, coalescing_and_empty_chunks)
{
	uint64_t a, b, c, big, first[3], more;

	open_seg(32 * MiB, 1);
	cr_assert_eq(shm_slab_alloc(&seg, s, 1000, &a), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 1000, &b), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 1000, &c), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 100, &more), SHM_OK); /* keeps c off the frontier */
	cr_assert_eq(shm_slab_free(&seg, s, a, 1000), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, c, 1000), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, b, 1000), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 3000, &big), SHM_OK);
	cr_assert_eq(big, a, "the three blocks merged into one");

	/* Fill the first chunk, move to a second, then empty the first. */
	uint64_t chunks = shm_chunks_in_use(&seg), off, n = 0;
	uint64_t *offs = malloc(4096 * sizeof(*offs));
	cr_assert_eq(shm_slab_free(&seg, s, big, 3000), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, more, 100), SHM_OK);
	while (shm_chunks_in_use(&seg) == chunks) {
		cr_assert_eq(shm_slab_alloc(&seg, s, 4000, &offs[n++]), SHM_OK);
	}
	first[0] = offs[0];
	for (uint64_t i = 0; i + 1 < n; i++)
		cr_assert_eq(shm_slab_free(&seg, s, offs[i], 4000), SHM_OK);
	cr_assert_eq(shm_chunks_in_use(&seg), chunks, "the emptied chunk went back to the pool");
	cr_assert_eq(shm_chunk_owner(&seg, first[0]), 0);
	cr_assert_eq(shm_slab_free(&seg, s, offs[n - 1], 4000), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 10, &off), SHM_OK);
	free(offs);
}

/* Memory freed by one size is usable by any other: fill the store with
 * small blocks, free them all, then it takes the largest blocks, and the
 * other way round. */
Test(slab, freed_memory_serves_any_size)
{
	uint64_t *offs = malloc(40000 * sizeof(*offs)), off;
	size_t n = 0, big = 0;

	open_seg(16 * MiB, 1);
	while (shm_slab_alloc(&seg, s, 600, &off) == SHM_OK)
		offs[n++] = off;
	cr_assert_gt(n, 7 * 2 * MiB / 620, "7 chunks of small blocks");
	cr_assert_eq(shm_slab_alloc(&seg, s, 1 * MiB, &off), SHM_ENOMEM);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(shm_slab_free(&seg, s, offs[i], 600), SHM_OK);
	while (shm_slab_alloc(&seg, s, 1 * MiB, &off) == SHM_OK)
		offs[big++] = off;
	cr_assert_geq(big, 6, "whole chunks again after deleting small ones: %zu", big);
	for (size_t i = 0; i < big; i++)
		cr_assert_eq(shm_slab_free(&seg, s, offs[i], 1 * MiB), SHM_OK);
	cr_assert_leq(shm_chunks_in_use(&seg), 1, "only the frontier chunk stays");
	n = 0;
	while (shm_slab_alloc(&seg, s, 17, &off) == SHM_OK)
		n++;
	cr_assert_gt(n, 6 * 2 * MiB / 32, "%zu blocks of 32 bytes", n);
	free(offs);
}

struct held {
	uint64_t off, size;
	uint32_t id;
};

/* Random sizes, random frees, every block checked for overlap when freed;
 * at the end the pool has every chunk back. */
Test(slab, random_sizes_never_overlap)
{
	enum { SLOTS = 3000, ROUNDS = 60000 };
	struct held *h = calloc(SLOTS, sizeof(*h));
	uint64_t seed = 12345;
	size_t full = 0;

	open_seg(64 * MiB, 1);
	for (uint32_t r = 1; r <= ROUNDS; r++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		struct held *x = &h[(seed >> 33) % SLOTS];
		uint64_t size = 1 + (seed >> 13) % ((seed & 7) ? 2000 : 300000);

		if (x->size) {
			cr_assert(intact(x->off, x->size, x->id), "block %u was overwritten", x->id);
			cr_assert_eq(shm_slab_free(&seg, s, x->off, x->size), SHM_OK);
			x->size = 0;
			continue;
		}
		if (shm_slab_alloc(&seg, s, size, &x->off) != SHM_OK) {
			full++;
			continue;
		}
		x->size = size;
		x->id = r;
		fill(x->off, size, r);
	}
	for (size_t i = 0; i < SLOTS; i++) {
		if (!h[i].size)
			continue;
		cr_assert(intact(h[i].off, h[i].size, h[i].id));
		cr_assert_eq(shm_slab_free(&seg, s, h[i].off, h[i].size), SHM_OK);
	}
	cr_assert_lt(full, ROUNDS / 100, "%zu allocations found no room", full);
	cr_assert_leq(shm_chunks_in_use(&seg), 1);
	struct shm_slab_stats st;
	shm_slab_stats(s, &st);
	cr_assert_eq(st.live_bytes, 0);
	cr_assert_eq(st.requested_bytes, 0);
	free(h);
}

/* A writer killed mid-way leaves headers and lists in any state; the next
 * one rebuilds from what is live. Afterwards the live blocks are intact,
 * new blocks never overlap them, and chunks holding nothing live (also
 * whole chunks of another shard's: untouched) are back in the pool. */
Test(slab, rebuild_from_live_blocks)
{
	enum { N = 4000 };
	struct held *h = calloc(N, sizeof(*h));
	struct shm_slab_live *live = calloc(N + 2, sizeof(*live));
	struct shm_slab *other;
	uint64_t other_off, off;
	size_t nl = 0;

	open_seg(64 * MiB, 2);
	other = &shm_shard_at(&seg, 1)->slab;
	cr_assert_eq(shm_slab_alloc(&seg, other, 5000, &other_off), SHM_OK);
	fill(other_off, 5000, 99);
	for (uint32_t i = 0; i < N; i++) {
		h[i].size = 1 + (i * 7919) % 9000;
		h[i].id = i + 1;
		cr_assert_eq(shm_slab_alloc(&seg, s, h[i].size, &h[i].off), SHM_OK);
		fill(h[i].off, h[i].size, h[i].id);
	}
	cr_assert_eq(shm_slab_alloc(&seg, s, 5 * MiB, &off), SHM_OK); /* a run, kept */
	/* Keep every third block of the first half and the run; the rest is
	 * what the dead writer had freed or retired (so the chunks of the
	 * second half hold nothing live). Scribble over the allocator state. */
	for (uint32_t i = 0; i < N / 2; i += 3)
		live[nl++] = (struct shm_slab_live){ .off = h[i].off, .size = h[i].size, .tag = i };
	live[nl++] = (struct shm_slab_live){ .off = off, .size = 5 * MiB, .tag = N };
	live[nl++] = (struct shm_slab_live){ .off = other_off, .size = 5000, .tag = N + 1 };
	memset(s->free, 0x5a, sizeof(s->free));
	s->fl_map = ~0u;
	for (uint32_t i = 1; i < N; i += 3)
		*(uint64_t *)(seg.base + h[i].off - 8) = 0xdeadbeef;

	uint64_t chunks = shm_chunks_in_use(&seg);
	cr_assert_eq(shm_slab_rebuild(&seg, s, live, nl), 1, "the other shard's block is not ours");
	for (size_t i = 0; i < nl; i++)
		cr_assert_eq(live[i].dropped, live[i].tag == N + 1);
	cr_assert_lt(shm_chunks_in_use(&seg), chunks, "chunks with nothing live went back");
	cr_assert(intact(other_off, 5000, 99));

	/* Allocate everything there is; no new block may touch a kept one. */
	uint32_t id = N + 10;
	while (shm_slab_alloc(&seg, s, 700, &off) == SHM_OK)
		fill(off, 700, id++);
	for (uint32_t i = 0; i < N / 2; i += 3)
		cr_assert(intact(h[i].off, h[i].size, h[i].id), "kept block %u overwritten", i);
	/* The kept blocks free normally and merge with what is around them. */
	for (uint32_t i = 0; i < N / 2; i += 3)
		cr_assert_eq(shm_slab_free(&seg, s, h[i].off, h[i].size), SHM_OK);
	free(h);
	free(live);
}

Test(slab, exhaustion_is_an_error)
{
	uint64_t off, last = 0;
	size_t n = 0;
	int rc;

	open_seg(8 * MiB, 1);
	while ((rc = shm_slab_alloc(&seg, s, 4000, &off)) == SHM_OK) {
		last = off;
		n++;
	}
	cr_assert_eq(rc, SHM_ENOMEM);
	cr_assert_gt(n, 1000);
	cr_assert_eq(shm_slab_alloc(&seg, s, 64 * MiB, &off), SHM_EINVAL);
	cr_assert_eq(shm_slab_alloc(&seg, s, 4 * MiB, &off), SHM_ENOMEM);
	cr_assert_eq(shm_slab_free(&seg, s, last, 4000), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 16, &off), SHM_OK, "freed room serves another size");
}

/* A chunk closed with 16 bytes left past its frontier still goes back to
 * the pool once its blocks are freed (the 16 bytes are a free block). */
Test(slab, chunk_closed_with_16_bytes_left_goes_back)
{
	uint64_t a, b;

	open_seg(64 * MiB, 1);
	/* block of BLOCK_MAX - 16 bytes: the frontier is left 16 bytes short */
	cr_assert_eq(shm_slab_alloc(&seg, s, (2 * MiB - 32) - 8, &a), SHM_OK);
	cr_assert_eq(shm_slab_rounded((2 * MiB - 32) - 8), 2 * MiB - 32);
	cr_assert_eq(shm_slab_alloc(&seg, s, 16, &b), SHM_OK); /* opens chunk 2, closes 1 */
	cr_assert_eq(shm_chunks_in_use(&seg), 2);
	cr_assert_eq(shm_slab_free(&seg, s, a, (2 * MiB - 32) - 8), SHM_OK);
	cr_assert_eq(shm_chunks_in_use(&seg), 1, "chunk 1 holds nothing live but is still owned (%lu in use)",
		     (unsigned long)shm_chunks_in_use(&seg));
}

/* Same after a rebuild: a block that left 16 bytes of a larger free block
 * behind, rebuilt, freed with its neighbours: the chunk goes back. */
Test(slab, rebuild_keeps_16_byte_gaps_free)
{
	uint64_t a, b, c, x;

	open_seg(64 * MiB, 1);
	cr_assert_eq(shm_slab_alloc(&seg, s, 100, &a), SHM_OK); /* 112 */
	cr_assert_eq(shm_slab_alloc(&seg, s, 40, &b), SHM_OK);  /* 48 */
	cr_assert_eq(shm_slab_alloc(&seg, s, 100, &c), SHM_OK); /* 112: b stays between */
	cr_assert_eq(shm_slab_free(&seg, s, b, 40), SHM_OK);    /* a 48-byte hole */
	cr_assert_eq(shm_slab_alloc(&seg, s, 20, &x), SHM_OK);  /* need 32: 16 bytes stay free */
	cr_assert_eq(x, b);
	struct shm_slab_live live[3] = { { a, 100, 0, 0 }, { x, 20, 1, 0 }, { c, 100, 2, 0 } };
	cr_assert_eq(shm_slab_rebuild(&seg, s, live, 3), 0);
	/* free everything: the chunk should go back */
	cr_assert_eq(shm_slab_free(&seg, s, a, 100), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, x, 20), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, c, 100), SHM_OK);
	/* the frontier chunk is kept by design; force it closed by opening another */
	uint64_t big;
	cr_assert_eq(shm_slab_alloc(&seg, s, 2 * MiB - 100, &big), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, s, big, 2 * MiB - 100), SHM_OK);
	struct shm_slab_stats st;
	shm_slab_stats(s, &st);
	cr_assert_eq(st.live_bytes, 0);
	cr_assert_leq(shm_chunks_in_use(&seg), 1, "nothing live, %lu chunks still owned",
		      (unsigned long)shm_chunks_in_use(&seg));
}

/* A run that starts at the first chunk is a valid live block. */
Test(slab, rebuild_keeps_a_run_at_chunk_zero)
{
	uint64_t r;

	open_seg(64 * MiB, 1);
	cr_assert_eq(shm_slab_alloc(&seg, s, 5 * MiB, &r), SHM_OK);
	cr_assert_eq(r, seg.hdr->chunk_base);
	struct shm_slab_live live = { r, 5 * MiB, 0, 0 };
	cr_assert_eq(shm_slab_rebuild(&seg, s, &live, 1), 0, "a valid run was dropped");
}

/* After a rebuild chunk_bytes counts the chunks kept, not minus the
 * ones given back. */
Test(slab, rebuild_counts_chunks)
{
	uint64_t a, b;
	struct shm_slab_stats st;

	open_seg(64 * MiB, 1);
	cr_assert_eq(shm_slab_alloc(&seg, s, 2 * MiB - 100, &a), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 2 * MiB - 100, &b), SHM_OK);
	cr_assert_eq(shm_slab_alloc(&seg, s, 2 * MiB - 100, &b), SHM_OK);
	struct shm_slab_live live = { a, 2 * MiB - 100, 0, 0 };
	shm_slab_rebuild(&seg, s, &live, 1);
	shm_slab_stats(s, &st);
	cr_assert_eq(shm_chunks_in_use(&seg), 1);
	cr_assert_eq(st.chunk_bytes, SHM_CHUNK_SIZE, "chunk_bytes %ld after rebuild, used_bytes %lu",
		     (long)st.chunk_bytes, (unsigned long)st.used_bytes);
}

/* Random sizes (runs and near-chunk blocks too) with a crash and a rebuild
 * every 20000 operations keeping a random half: kept blocks stay intact,
 * accounting matches, and at the end no chunk stays pinned. */
Test(slab, random_sizes_with_crashes_and_rebuilds, .timeout = 120)
{
	enum { SLOTS = 2000, ROUNDS = 20000, REBUILDS = 15 };
	struct held *h = calloc(SLOTS, sizeof(*h));
	struct shm_slab_live *live = calloc(SLOTS, sizeof(*live));
	uint64_t seed = 99;
	uint32_t id = 1;

	open_seg(128 * MiB, 2);
	for (int rb = 0; rb < REBUILDS; rb++) {
		for (int r = 0; r < ROUNDS; r++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			struct held *x = &h[(seed >> 33) % SLOTS];
			uint64_t k = (seed >> 8) & 63, size;
			if (k == 0) size = SHM_SLAB_MAX + 1 + (seed >> 20) % (3 * MiB);
			else if (k < 4) size = SHM_SLAB_MAX - (seed >> 20) % 64;
			else if (k < 8) size = 1 + (seed >> 20) % 300000;
			else size = 1 + (seed >> 20) % 700;
			if (x->size) {
				cr_assert(intact(x->off, x->size, x->id), "block %u overwritten", x->id);
				cr_assert_eq(shm_slab_free(&seg, s, x->off, x->size), SHM_OK);
				x->size = 0;
				continue;
			}
			if (shm_slab_alloc(&seg, s, size, &x->off) != SHM_OK)
				continue;
			x->size = size;
			x->id = id++;
			fill(x->off, size, x->id);
		}
		/* crash: drop a random half, scribble allocator state, rebuild */
		size_t n = 0;
		for (int i = 0; i < SLOTS; i++) {
			if (!h[i].size) continue;
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			if (seed >> 63) { h[i].size = 0; continue; }
			live[n++] = (struct shm_slab_live){ h[i].off, h[i].size, (size_t)i, 0 };
		}
		memset(s->free, 0x33, sizeof(s->free));
		s->cur = 12345;
		cr_assert_eq(shm_slab_rebuild(&seg, s, live, n), 0);
		uint64_t sum = 0;
		for (int i = 0; i < SLOTS; i++) {
			if (!h[i].size) continue;
			cr_assert(intact(h[i].off, h[i].size, h[i].id), "kept block overwritten by rebuild");
			sum += shm_slab_rounded(h[i].size);
		}
		struct shm_slab_stats st;
		shm_slab_stats(s, &st);
		cr_assert_eq(st.live_bytes, sum);
		{
			uint64_t owned = 0;
			for (uint32_t ci = 0; ci < shm_chunks_touched(&seg); ci++)
				owned += shm_chunk_owner(&seg, shm_chunk_offset(&seg, ci)) == 1;
			cr_assert_eq(st.chunk_bytes, owned * SHM_CHUNK_SIZE,
				     "round %d: chunk_bytes %lu chunks, owner map %lu, in use %lu", rb,
				     (unsigned long)(st.chunk_bytes >> 21), (unsigned long)owned,
				     (unsigned long)shm_chunks_in_use(&seg));
		}
		cr_assert_leq(atomic_load(&s->untouched_bytes), st.chunk_bytes);
	}
	for (int i = 0; i < SLOTS; i++)
		if (h[i].size) {
			cr_assert(intact(h[i].off, h[i].size, h[i].id));
			cr_assert_eq(shm_slab_free(&seg, s, h[i].off, h[i].size), SHM_OK);
		}
	struct shm_slab_stats st;
	shm_slab_stats(s, &st);
	cr_assert_eq(st.live_bytes, 0);
	cr_assert_leq(atomic_load(&s->untouched_bytes), st.chunk_bytes);
	cr_assert_leq(shm_chunks_in_use(&seg), 1, "chunks pinned with nothing live: %lu",
		      (unsigned long)shm_chunks_in_use(&seg));
	free(h); free(live);
}
