/*
 * slab.c — size-class allocator for one shard's records and tables.
 *
 * Only the shard's writer allocates and frees, so the class state needs no
 * atomics; the counters are atomics (relaxed) only so that other processes
 * can read them for statistics without a data race.
 *
 * Size classes grow by a quarter of the power of two below them, which
 * bounds rounding waste to 25% (20% on average for uniform sizes) while
 * keeping the class count small. A class carves its blocks from one chunk at
 * a time; the tail of a chunk too small for one more block is left unused
 * and shows up as fragmentation.
 */
#include <string.h>

#include "segment.h"
#include "slab.h"

#define relaxed memory_order_relaxed

static unsigned class_of(uint64_t size)
{
	unsigned p;

	if (size <= 64)
		return (unsigned)((size - 1) / 16);
	p = 63u - (unsigned)__builtin_clzll(size - 1); /* 2^p < size <= 2^(p+1) */
	uint64_t step = 1ULL << (p - 2);
	uint64_t j = (size - (1ULL << p) + step - 1) / step; /* 1..4 */
	return 4 + (p - 6) * 4 + (unsigned)(j - 1);
}

static uint64_t class_size(unsigned c)
{
	if (c < 4)
		return 16ULL * (c + 1);
	unsigned p = 6 + (c - 4) / 4;
	return (1ULL << p) + ((c - 4) % 4 + 1) * (1ULL << (p - 2));
}

static uint64_t chunks_for(uint64_t size)
{
	return (size + SHM_CHUNK_SIZE - 1) >> SHM_CHUNK_SHIFT;
}

uint64_t shm_slab_rounded(uint64_t size)
{
	if (size == 0)
		return 0;
	if (size <= SHM_SLAB_MAX)
		return class_size(class_of(size));
	return chunks_for(size) << SHM_CHUNK_SHIFT;
}

static void account(struct shm_slab *s, uint64_t rounded, uint64_t size, int sign)
{
	if (sign > 0) {
		atomic_fetch_add_explicit(&s->live_bytes, rounded, relaxed);
		atomic_fetch_add_explicit(&s->requested_bytes, size, relaxed);
		atomic_fetch_add_explicit(&s->allocs, 1, relaxed);
	} else {
		atomic_fetch_sub_explicit(&s->live_bytes, rounded, relaxed);
		atomic_fetch_sub_explicit(&s->requested_bytes, size, relaxed);
		atomic_fetch_add_explicit(&s->frees, 1, relaxed);
	}
}

static int alloc_large(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off)
{
	uint64_t n = chunks_for(size);
	int rc;

	if (n > seg->hdr->nchunks)
		return SHM_ENOMEM;
	rc = shm_chunk_alloc(seg, (uint32_t)n, off);
	if (rc != SHM_OK)
		return rc;
	atomic_fetch_add_explicit(&s->chunk_bytes, n << SHM_CHUNK_SHIFT, relaxed);
	account(s, n << SHM_CHUNK_SHIFT, size, 1);
	return SHM_OK;
}

static int carve(struct shm_seg *seg, struct shm_slab *s, struct shm_slab_class *c, uint64_t csize,
		 uint64_t *off)
{
	/* A shard killed between the stores below leaves this state to its
	 * next incarnation: cur is cleared first and set last, and a state
	 * that does not describe part of one chunk is never carved from
	 * (that chunk leaks; carving past it would hand out other shards'
	 * memory). */
	if (c->cur == 0 || c->end < c->cur || c->end - c->cur > SHM_CHUNK_SIZE ||
	    c->end - c->cur < csize) {
		uint64_t chunk;
		int rc = shm_chunk_alloc(seg, 1, &chunk);
		if (rc != SHM_OK)
			return rc;
		atomic_fetch_add_explicit(&s->chunk_bytes, SHM_CHUNK_SIZE, relaxed);
		c->cur = 0;
		atomic_signal_fence(memory_order_seq_cst); /* keep the stores, in order */
		c->end = chunk + SHM_CHUNK_SIZE;
		atomic_signal_fence(memory_order_seq_cst);
		c->cur = chunk;
	}
	*off = c->cur;
	c->cur += csize;
	return SHM_OK;
}

int shm_slab_alloc(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off)
{
	if (size == 0 || size > seg->size)
		return SHM_EINVAL;
	if (size > SHM_SLAB_MAX)
		return alloc_large(seg, s, size, off);

	unsigned ci = class_of(size);
	uint64_t csize = class_size(ci);
	struct shm_slab_class *c = &s->cls[ci];

	if (c->free_head != 0) {
		uint64_t *link = shm_ptr(seg, c->free_head, sizeof(uint64_t));
		if (link == NULL)
			return SHM_ECORRUPT;
		*off = c->free_head;
		c->free_head = *link;
	} else {
		int rc = carve(seg, s, c, csize, off);
		if (rc != SHM_OK)
			return rc;
	}
	account(s, csize, size, 1);
	return SHM_OK;
}

int shm_slab_free(struct shm_seg *seg, struct shm_slab *s, uint64_t off, uint64_t size)
{
	uint64_t rounded = shm_slab_rounded(size);
	const struct shm_header *h = seg->hdr;

	if (size == 0 || off < h->chunk_base || off >= seg->size || (off & 15) ||
	    rounded > seg->size - off)
		return SHM_ERANGE;
	if (size > SHM_SLAB_MAX) {
		int rc = shm_chunk_free(seg, off, (uint32_t)(rounded >> SHM_CHUNK_SHIFT));
		if (rc != SHM_OK)
			return rc;
		atomic_fetch_sub_explicit(&s->chunk_bytes, rounded, relaxed);
		account(s, rounded, size, -1);
		return SHM_OK;
	}

	struct shm_slab_class *c = &s->cls[class_of(size)];
	uint64_t *link = (uint64_t *)(seg->base + off);

	*link = c->free_head;
	c->free_head = off;
	account(s, rounded, size, -1);
	return SHM_OK;
}

void shm_slab_stats(const struct shm_slab *s, struct shm_slab_stats *out)
{
	out->chunk_bytes = atomic_load_explicit(&s->chunk_bytes, relaxed);
	out->live_bytes = atomic_load_explicit(&s->live_bytes, relaxed);
	out->requested_bytes = atomic_load_explicit(&s->requested_bytes, relaxed);
	out->allocs = atomic_load_explicit(&s->allocs, relaxed);
	out->frees = atomic_load_explicit(&s->frees, relaxed);
	out->fragmentation = out->chunk_bytes == 0 ? 0.0 :
		1.0 - (double)out->requested_bytes / (double)out->chunk_bytes;
}
