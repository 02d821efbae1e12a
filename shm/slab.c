/*
 * slab.c — one shard's allocator: boundary-tag blocks in owned chunks,
 * TLSF free lists, a frontier in the newest chunk (slab.h).
 *
 * Only the shard's writer changes anything here, so the writer state
 * needs no atomics; the counters are relaxed atomics only so that other
 * processes can read them for statistics without a data race. Readers
 * never look at headers or free blocks: a block is freed only once no
 * reader can reach it (epoch.h), so writing its links is safe.
 *
 * Invariants the code keeps (and shm_slab_rebuild re-establishes):
 *   - two free blocks are never adjacent (a free merges with both sides);
 *   - the block just below the frontier is never free (a free block that
 *     ends at the frontier moves the frontier down instead);
 *   - a free block's header has SLAB_FREE, its footer holds its size, and
 *     the header after it has SLAB_PREV_FREE; no other header has it;
 *   - a free block of 16 bytes (a split's remainder) is in no list: it
 *     cannot hold two links, but it merges like any other.
 * Size classes (TLSF): below 256 bytes one list per 16 bytes; above, 16
 * lists per power of two. A block sits in the list of its exact size; a
 * search starts one class up from the request's own (so anything found
 * fits), which wastes at most 1/16 of a request by picking a larger block.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "shm/segment.h"
#include "shm/slab.h"

#define POPULATE_STEP (64u << 10) /* chunk-aligned windows the frontier enters */

#define relaxed memory_order_relaxed
#define SLAB_FREE 1ull
#define SLAB_PREV_FREE 2ull
#define SLAB_FLAGS 15ull
#define ARENA_FIRST 8ull                  /* first header, from the chunk start */
#define ARENA_END (SHM_CHUNK_SIZE - 8ull) /* the sentinel header */
#define BLOCK_MAX (ARENA_END - ARENA_FIRST)

_Static_assert(SHM_SLAB_MAX == BLOCK_MAX - SHM_SLAB_HDR, "largest request fills a chunk");
_Static_assert(SHM_SLAB_FL == 21 - 7, "one first-level class per power of two up to 2 MiB");

static uint64_t *word(const struct shm_seg *seg, uint64_t off)
{
	return (uint64_t *)(seg->base + off);
}

static uint64_t bsize(const struct shm_seg *seg, uint64_t b)
{
	return *word(seg, b) & ~SLAB_FLAGS;
}

static uint32_t owner_id(const struct shm_slab *s)
{
	const struct shm_shard *sh =
		(const struct shm_shard *)((const char *)s - offsetof(struct shm_shard, slab));

	return sh->id + 1;
}

static uint64_t chunk_of(const struct shm_seg *seg, uint64_t off)
{
	uint64_t base = seg->hdr->chunk_base;

	return base + ((off - base) & ~(SHM_CHUNK_SIZE - 1));
}

static uint64_t chunks_for(uint64_t size)
{
	return (size + SHM_CHUNK_SIZE - 1) >> SHM_CHUNK_SHIFT;
}

static uint64_t block_for(uint64_t size)
{
	uint64_t b = (size + SHM_SLAB_HDR + 15) & ~15ull;

	return b < SHM_SLAB_MIN_BLOCK ? SHM_SLAB_MIN_BLOCK : b;
}

uint64_t shm_slab_rounded(uint64_t size)
{
	if (size == 0)
		return 0;
	if (size <= SHM_SLAB_MAX)
		return block_for(size);
	return chunks_for(size) << SHM_CHUNK_SHIFT;
}

/* ---------- counters ---------- */

/* The shard's writer alone changes the counters (slab.h): a relaxed load
 * and store, as shm_counter_add, no locked instruction (which cost this
 * allocator a third of its time). */
static void add(_Atomic uint64_t *c, int64_t d)
{
	atomic_store_explicit(c, atomic_load_explicit(c, relaxed) + (uint64_t)d, relaxed);
}

static void account(struct shm_slab *s, uint64_t block, uint64_t size, int sign)
{
	add(&s->live_bytes, sign * (int64_t)block);
	add(&s->requested_bytes, sign * (int64_t)size);
	add(sign > 0 ? &s->allocs : &s->frees, 1);
}

/* ---------- free lists ---------- */

static void mapping(uint64_t size, unsigned *fl, unsigned *sl)
{
	if (size < 256) {
		*fl = 0;
		*sl = (unsigned)(size >> 4);
		return;
	}
	unsigned f = 63u - (unsigned)__builtin_clzll(size);

	*fl = f - 7;
	*sl = (unsigned)(size >> (f - 4)) & (SHM_SLAB_SL - 1);
}

static void list_insert(struct shm_seg *seg, struct shm_slab *s, uint64_t b, uint64_t size)
{
	unsigned fl, sl;
	uint64_t next;

	if (size < SHM_SLAB_MIN_BLOCK)
		return; /* too small for links: free, merged by its neighbours, never listed */
	mapping(size, &fl, &sl);
	next = s->free[fl][sl];
	*word(seg, b + 8) = next;
	*word(seg, b + 16) = 0;
	if (next != 0)
		*word(seg, next + 16) = b;
	s->free[fl][sl] = b;
	s->sl_map[fl] |= 1u << sl;
	s->fl_map |= 1u << fl;
}

static void list_remove(struct shm_seg *seg, struct shm_slab *s, uint64_t b, uint64_t size)
{
	uint64_t next, prev;
	unsigned fl, sl;

	if (size < SHM_SLAB_MIN_BLOCK)
		return;
	next = *word(seg, b + 8);
	prev = *word(seg, b + 16);
	mapping(size, &fl, &sl);
	if (prev != 0)
		*word(seg, prev + 8) = next;
	else
		s->free[fl][sl] = next;
	if (next != 0)
		*word(seg, next + 16) = prev;
	if (s->free[fl][sl] == 0) {
		s->sl_map[fl] &= ~(1u << sl);
		if (s->sl_map[fl] == 0)
			s->fl_map &= ~(1u << fl);
	}
}

/* A free block that fits `need`, or 0. The head of need's own class is
 * tried first (it often fits: a block just freed by the same size). */
static uint64_t list_find(const struct shm_seg *seg, const struct shm_slab *s, uint64_t need)
{
	unsigned fl, sl;
	uint32_t map;

	mapping(need, &fl, &sl);
	if (fl < SHM_SLAB_FL && s->free[fl][sl] != 0 && bsize(seg, s->free[fl][sl]) >= need)
		return s->free[fl][sl];
	if (need >= 256)
		need += (1ull << (63 - __builtin_clzll(need) - 4)) - 1;
	mapping(need, &fl, &sl);
	if (fl >= SHM_SLAB_FL)
		return 0;
	map = s->sl_map[fl] & (~0u << sl);
	if (map == 0) {
		uint32_t fmap = s->fl_map & (~0u << (fl + 1));

		if (fmap == 0)
			return 0;
		fl = (unsigned)__builtin_ctz(fmap);
		map = s->sl_map[fl];
	}
	return s->free[fl][__builtin_ctz(map)];
}

/* Make [b, b + size) one free block (its neighbours are in use). */
static void make_free(struct shm_seg *seg, struct shm_slab *s, uint64_t b, uint64_t size)
{
	*word(seg, b) = size | SLAB_FREE;
	*word(seg, b + size - 8) = size;
	*word(seg, b + size) |= SLAB_PREV_FREE;
	list_insert(seg, s, b, size);
}

/* ---------- the frontier ---------- */

/* Ask the kernel for the pages of the POPULATE_STEP window at `w` in one
 * call (MADV_POPULATE_WRITE, Linux 5.14) rather than a page fault each:
 * blocks are carved there next. Only a hint: an older kernel, a read-only
 * mapping (a test's) or no memory leaves the pages to the faults. */
static void populate(struct shm_seg *seg, uint64_t w)
{
	madvise(seg->base + w, POPULATE_STEP, MADV_POPULATE_WRITE);
}

static void frontier_advance(struct shm_seg *seg, struct shm_slab *s, uint64_t to)
{
	s->frontier = to;
	if (to > s->hwm) {
		uint64_t w = (to - 1) & ~(uint64_t)(POPULATE_STEP - 1);

		if (w > s->hwm - 1)
			populate(seg, w);
		add(&s->untouched_bytes, -(int64_t)(to - s->hwm));
		s->hwm = to;
	}
}

/* The current chunk stops being carved: what is left past the frontier
 * becomes a free block, and the sentinel is set. */
static void frontier_close(struct shm_seg *seg, struct shm_slab *s)
{
	uint64_t end = s->cur + ARENA_END, rem = end - s->frontier;

	if (s->cur == 0)
		return;
	add(&s->untouched_bytes, -(int64_t)(end - s->hwm));
	*word(seg, end) = 0;
	if (rem > 0)
		make_free(seg, s, s->frontier, rem);
	s->cur = s->frontier = s->hwm = 0;
}

static int frontier_open(struct shm_seg *seg, struct shm_slab *s)
{
	uint64_t c;
	int rc = shm_chunk_alloc(seg, 1, &c);

	if (rc != SHM_OK)
		return rc;
	shm_chunk_set_owner(seg, c, 1, owner_id(s));
	add(&s->chunk_bytes, SHM_CHUNK_SIZE);
	frontier_close(seg, s);
	s->cur = c;
	s->frontier = s->hwm = c + ARENA_FIRST;
	add(&s->untouched_bytes, BLOCK_MAX);
	populate(seg, c);
	return SHM_OK;
}

/* ---------- blocks ---------- */

/* Take `need` bytes of free block b (size `have`), leaving the rest free. */
static void block_take(struct shm_seg *seg, struct shm_slab *s, uint64_t b, uint64_t have,
		       uint64_t need)
{
	list_remove(seg, s, b, have);
	if (have > need) { /* at least 16 bytes: a free block of its own */
		*word(seg, b) = need;
		make_free(seg, s, b + need, have - need);
	} else {
		*word(seg, b) = have;
		*word(seg, b + have) &= ~SLAB_PREV_FREE;
	}
}

static int alloc_small(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off)
{
	uint64_t need = block_for(size), b = list_find(seg, s, need);

	if (b != 0) {
		block_take(seg, s, b, bsize(seg, b), need);
	} else {
		if (s->cur == 0 || s->cur + ARENA_END - s->frontier < need) {
			int rc = frontier_open(seg, s);
			if (rc != SHM_OK)
				return rc;
		}
		b = s->frontier;
		*word(seg, b) = need; /* the block below the frontier is in use */
		frontier_advance(seg, s, b + need);
	}
	account(s, bsize(seg, b), size, 1);
	*off = b + SHM_SLAB_HDR;
	return SHM_OK;
}

static int alloc_run(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off)
{
	uint64_t n = chunks_for(size);
	int rc;

	if (n > seg->hdr->nchunks)
		return SHM_ENOMEM;
	rc = shm_chunk_alloc(seg, (uint32_t)n, off);
	if (rc != SHM_OK)
		return rc;
	shm_chunk_set_owner(seg, *off, (uint32_t)n, owner_id(s));
	add(&s->chunk_bytes, (int64_t)(n << SHM_CHUNK_SHIFT));
	account(s, n << SHM_CHUNK_SHIFT, size, 1);
	return SHM_OK;
}

int shm_slab_alloc(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off)
{
	if (size == 0 || size > seg->size)
		return SHM_EINVAL;
	return size <= SHM_SLAB_MAX ? alloc_small(seg, s, size, off) : alloc_run(seg, s, size, off);
}

static void chunk_release(struct shm_seg *seg, struct shm_slab *s, uint64_t c, uint32_t n)
{
	shm_chunk_set_owner(seg, c, n, 0);
	if (shm_chunk_free(seg, c, n) == SHM_OK)
		add(&s->chunk_bytes, -(int64_t)((uint64_t)n << SHM_CHUNK_SHIFT));
}

/* Whether `off` (from a caller) is a block of this shard in use whose
 * header fits a request of `size`. */
static bool small_valid(const struct shm_seg *seg, const struct shm_slab *s, uint64_t off,
			uint64_t size)
{
	uint64_t b = off - SHM_SLAB_HDR, c, h, sz;

	if (off < seg->hdr->chunk_base + 16 || (off & 15) || off >= seg->size ||
	    shm_chunk_owner(seg, off) != owner_id(s))
		return false;
	c = chunk_of(seg, off);
	h = *word(seg, b);
	sz = h & ~SLAB_FLAGS;
	return b >= c + ARENA_FIRST && !(h & SLAB_FREE) && sz >= block_for(size) &&
	       b + sz <= c + ARENA_END;
}

static int free_small(struct shm_seg *seg, struct shm_slab *s, uint64_t off, uint64_t size)
{
	uint64_t b = off - SHM_SLAB_HDR, c = chunk_of(seg, off), sz, n;

	if (!small_valid(seg, s, off, size))
		return SHM_ERANGE;
	sz = bsize(seg, b);
	account(s, sz, size, -1);
	*word(seg, b) |= SLAB_FREE; /* stays set once merged away: a second free is refused */
	if (*word(seg, b) & SLAB_PREV_FREE) {
		uint64_t psz = *word(seg, b - 8);

		list_remove(seg, s, b - psz, psz);
		b -= psz;
		sz += psz;
	}
	n = b + sz;
	if (c == s->cur && n == s->frontier) {
		s->frontier = b; /* back into the never-carved part (already touched) */
		return SHM_OK;
	}
	if (*word(seg, n) & SLAB_FREE) {
		uint64_t nsz = bsize(seg, n);

		list_remove(seg, s, n, nsz);
		sz += nsz;
	}
	if (sz == BLOCK_MAX)
		chunk_release(seg, s, c, 1);
	else
		make_free(seg, s, b, sz);
	return SHM_OK;
}

static int free_run(struct shm_seg *seg, struct shm_slab *s, uint64_t off, uint64_t size)
{
	uint64_t n = chunks_for(size);

	if (off < seg->hdr->chunk_base || ((off - seg->hdr->chunk_base) & (SHM_CHUNK_SIZE - 1)) ||
	    off >= seg->size)
		return SHM_ERANGE;
	for (uint64_t i = 0; i < n; i++)
		if (shm_chunk_owner(seg, off + (i << SHM_CHUNK_SHIFT)) != owner_id(s))
			return SHM_ERANGE;
	account(s, n << SHM_CHUNK_SHIFT, size, -1);
	chunk_release(seg, s, off, (uint32_t)n);
	return SHM_OK;
}

int shm_slab_free(struct shm_seg *seg, struct shm_slab *s, uint64_t off, uint64_t size)
{
	if (size == 0 || size > seg->size || off >= seg->size)
		return SHM_ERANGE;
	return size <= SHM_SLAB_MAX ? free_small(seg, s, off, size) : free_run(seg, s, off, size);
}

/* ---------- rebuild ---------- */

static int cmp_live(const void *a, const void *b)
{
	const struct shm_slab_live *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* Extent [*start, *end) of a live block, or false if it cannot be one of
 * this shard's blocks. */
static bool live_extent(const struct shm_seg *seg, const struct shm_slab *s,
			const struct shm_slab_live *l, uint64_t *start, uint64_t *end)
{
	uint64_t base = seg->hdr->chunk_base;

	if (l->size == 0 || l->off < base || l->off >= seg->size)
		return false;
	if (l->size > SHM_SLAB_MAX) {
		uint64_t n = chunks_for(l->size);

		if ((l->off - base) & (SHM_CHUNK_SIZE - 1))
			return false;
		for (uint64_t i = 0; i < n; i++)
			if (shm_chunk_owner(seg, l->off + (i << SHM_CHUNK_SHIFT)) != owner_id(s))
				return false;
		*start = l->off;
		*end = l->off + (n << SHM_CHUNK_SHIFT);
		return true;
	}
	uint64_t c = chunk_of(seg, l->off);

	*start = l->off - SHM_SLAB_HDR;
	*end = *start + block_for(l->size);
	return !(l->off & 15) && shm_chunk_owner(seg, l->off) == owner_id(s) &&
	       *start >= c + ARENA_FIRST && *end <= c + ARENA_END;
}

size_t shm_slab_check(const struct shm_seg *seg, const struct shm_slab *s,
		      struct shm_slab_live *live, size_t n)
{
	uint64_t prev_end = 0, start, end;
	size_t dropped = 0;

	if (n > 0)
		qsort(live, n, sizeof(*live), cmp_live);

	for (size_t i = 0; i < n; i++) {
		live[i].dropped = !live_extent(seg, s, &live[i], &start, &end) || start < prev_end;
		if (live[i].dropped)
			dropped++;
		else
			prev_end = end;
	}
	return dropped;
}

/* Gap [pos, pos + gap) between blocks of an arena: a free block or
 * nothing. Returns whether the next header must say SLAB_PREV_FREE. */
static bool fill_gap(struct shm_seg *seg, struct shm_slab *s, uint64_t pos, uint64_t gap)
{
	if (gap == 0)
		return false;
	*word(seg, pos) = gap | SLAB_FREE;
	*word(seg, pos + gap - 8) = gap;
	list_insert(seg, s, pos, gap);
	return true;
}

/* Rewrite the headers of chunk c's live blocks live[i..j); returns the
 * end of the last one. */
static uint64_t arena_rebuild(struct shm_seg *seg, struct shm_slab *s, uint64_t c,
			      const struct shm_slab_live *live, size_t i, size_t j)
{
	uint64_t pos = c + ARENA_FIRST;

	for (; i < j; i++) {
		uint64_t b = live[i].off - SHM_SLAB_HDR, sz = block_for(live[i].size);

		if (live[i].dropped)
			continue;
		bool prev_free = fill_gap(seg, s, pos, b - pos);
		*word(seg, b) = sz | (prev_free ? SLAB_PREV_FREE : 0);
		add(&s->live_bytes, (int64_t)sz);
		add(&s->requested_bytes, (int64_t)live[i].size);
		pos = b + sz;
	}
	return pos;
}

/* The chunk with the most room after its last live block: it becomes the
 * frontier again (its tail was most likely never written). */
static uint64_t best_tail(const struct shm_seg *seg, const struct shm_slab_live *live, size_t n)
{
	uint64_t best = 0, room = 0, c = 0, end = 0;

	for (size_t i = 0; i <= n; i++) {
		uint64_t ci = i < n ? chunk_of(seg, live[i].off) : 0;

		if (i < n && (live[i].dropped || live[i].size > SHM_SLAB_MAX))
			continue;
		if (c != 0 && ci != c && c + ARENA_END - end > room) {
			room = c + ARENA_END - end; /* chunk c is done: end is its last block's */
			best = c;
		}
		if (i < n) {
			c = ci;
			end = live[i].off - SHM_SLAB_HDR + block_for(live[i].size);
		}
	}
	return best;
}

/* After the last live block of chunk c (ending at pos): the frontier, or
 * a free block (filler) and the sentinel. */
static void arena_finish(struct shm_seg *seg, struct shm_slab *s, uint64_t c, uint64_t pos,
			 uint64_t frontier_chunk)
{
	uint64_t end = c + ARENA_END;

	if (c == frontier_chunk) {
		s->cur = c;
		s->frontier = s->hwm = pos;
		add(&s->untouched_bytes, (int64_t)(end - pos));
		return;
	}
	*word(seg, end) = 0;
	if (fill_gap(seg, s, pos, end - pos))
		*word(seg, end) = SLAB_PREV_FREE;
}

static void slab_reset(struct shm_slab *s)
{
	s->fl_map = 0;
	memset(s->sl_map, 0, sizeof(s->sl_map));
	memset(s->free, 0, sizeof(s->free));
	s->cur = s->frontier = s->hwm = 0;
	atomic_store_explicit(&s->chunk_bytes, 0, relaxed);
	atomic_store_explicit(&s->untouched_bytes, 0, relaxed);
	atomic_store_explicit(&s->live_bytes, 0, relaxed);
	atomic_store_explicit(&s->requested_bytes, 0, relaxed);
}

size_t shm_slab_rebuild(struct shm_seg *seg, struct shm_slab *s, struct shm_slab_live *live,
			size_t n)
{
	uint32_t touched = shm_chunks_touched(seg), me = owner_id(s);
	uint64_t frontier_chunk;
	size_t i = 0, dropped;

	slab_reset(s);
	dropped = shm_slab_check(seg, s, live, n);
	frontier_chunk = best_tail(seg, live, n);
	for (uint32_t idx = 0; idx < touched; idx++) {
		uint64_t c = shm_chunk_offset(seg, idx), cend = c + SHM_CHUNK_SIZE;
		size_t j;

		while (i < n && (live[i].dropped || live[i].off < c))
			i++;
		if (shm_chunk_owner(seg, c) != me)
			continue;
		if (i < n && live[i].off == c && live[i].size > SHM_SLAB_MAX) {
			uint64_t k = chunks_for(live[i].size);

			add(&s->chunk_bytes, (int64_t)(k << SHM_CHUNK_SHIFT));
			add(&s->live_bytes, (int64_t)(k << SHM_CHUNK_SHIFT));
			add(&s->requested_bytes, (int64_t)live[i].size);
			idx += (uint32_t)k - 1;
			i++;
			continue;
		}
		for (j = i; j < n && live[j].off < cend; j++)
			;
		if (j == i) {
			add(&s->chunk_bytes, SHM_CHUNK_SIZE); /* chunk_release counts it out */
			chunk_release(seg, s, c, 1);          /* nothing live here */
			continue;
		}
		add(&s->chunk_bytes, SHM_CHUNK_SIZE);
		arena_finish(seg, s, c, arena_rebuild(seg, s, c, live, i, j), frontier_chunk);
		i = j;
	}
	return dropped;
}

void shm_slab_stats(const struct shm_slab *s, struct shm_slab_stats *out)
{
	uint64_t untouched = atomic_load_explicit(&s->untouched_bytes, relaxed);

	out->chunk_bytes = atomic_load_explicit(&s->chunk_bytes, relaxed);
	out->used_bytes = out->chunk_bytes > untouched ? out->chunk_bytes - untouched : 0;
	out->live_bytes = atomic_load_explicit(&s->live_bytes, relaxed);
	out->requested_bytes = atomic_load_explicit(&s->requested_bytes, relaxed);
	out->allocs = atomic_load_explicit(&s->allocs, relaxed);
	out->frees = atomic_load_explicit(&s->frees, relaxed);
	out->fragmentation = out->used_bytes == 0 ? 0.0 :
		1.0 - (double)out->requested_bytes / (double)out->used_bytes;
}
