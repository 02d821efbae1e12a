/*
 * slab.h — per-shard allocator over segment offsets.
 *
 * Each shard carves the memory for its records and tables out of chunks it
 * takes from the segment's chunk pool (segment.h). Only the shard's single
 * writer calls shm_slab_alloc/shm_slab_free/shm_slab_rebuild; any process
 * may read the counters.
 *
 * Blocks. A request of up to SHM_SLAB_MAX bytes is a block inside one
 * chunk: an 8-byte header just before its 16-aligned payload, the block
 * size a multiple of 16 (at least 32), so a block costs its request plus
 * 8 to 23 bytes. Chunk layout:
 *
 *   chunk + 0              8 bytes, unused
 *   chunk + 8              first block header, then blocks back to back
 *   chunk + SIZE - 8       sentinel header (size 0, in use)
 *
 *   header  u64  size | SLAB_FREE (bit 0) | SLAB_PREV_FREE (bit 1)
 *   free block:  payload+0 next free (header offset, 0: none),
 *                payload+8 previous free, last 8 bytes: size (footer)
 *
 * A freed block merges at once with free neighbours (boundary tags), so
 * free memory is never cut into pieces smaller than it could be, and a
 * chunk whose blocks are all free goes back to the pool, where any shard
 * and any size can use it. Free blocks are found by good fit in O(1): 16
 * lists per power of two and two bitmaps (TLSF). A new chunk is carved
 * from its start (the frontier): bytes past the frontier of a shard's
 * newest chunk were never written and are not counted as used; the memfd
 * is sparse, so they cost no RAM, but for the 64 KiB window the frontier
 * is in, whose pages the writer asks for in one madvise
 * (MADV_POPULATE_WRITE) as it enters it instead of a fault per page
 * (44 K faults -> 9 K for 1 M buffered sets): at most 64 KiB per shard
 * more than counted.
 *
 * A request above SHM_SLAB_MAX (a large table) takes a run of whole
 * chunks, returned to the pool when freed.
 *
 * Ownership. The segment records which shard owns each chunk
 * (shm_chunk_owner). A block's memory may be freed only once no reader can
 * reach it (epoch.h).
 *
 * Crash. The free lists, bitmaps and headers are not trusted across
 * incarnations of a shard process: one killed in the middle of a split
 * leaves them half-changed. A new writer calls shm_slab_rebuild with the
 * blocks that are live (what its table references) once no reader can see
 * anything else: it rewrites every header of every chunk the shard owns,
 * turns the gaps into free blocks and returns chunks with nothing live.
 *
 * Accounting: chunk_bytes (owned chunks), untouched_bytes (past the
 * frontier), live_bytes (blocks in use, headers included) and
 * requested_bytes (what callers asked for). Used memory is chunk_bytes -
 * untouched_bytes; fragmentation is 1 - requested / used.
 */
#ifndef AMORA_SHM_SLAB_H
#define AMORA_SHM_SLAB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_SLAB_MIN_BLOCK 32u
#define SHM_SLAB_HDR 8u
/* Largest request served inside a chunk (2 MiB chunks). */
#define SHM_SLAB_MAX ((1u << 21) - 24u)
#define SHM_SLAB_FL 14 /* size classes: 13 powers of two above 256, and below */
#define SHM_SLAB_SL 16

struct shm_seg;

struct shm_slab {
	/* writer state, rebuilt by shm_slab_rebuild at each writer start */
	uint32_t fl_map;                         /* bit f: sl_map[f] != 0 */
	uint32_t sl_map[SHM_SLAB_FL];            /* bit s: free[f][s] non-empty */
	uint64_t free[SHM_SLAB_FL][SHM_SLAB_SL]; /* header offset of a free block, 0: none */
	uint64_t cur;      /* chunk carved at its frontier (0: none) */
	uint64_t frontier; /* header offset of the next block carved there */
	uint64_t hwm;      /* highest frontier so far: bytes above were never written */
	/* counters, readable by any process */
	_Atomic uint64_t chunk_bytes;
	_Atomic uint64_t untouched_bytes;
	_Atomic uint64_t live_bytes;
	_Atomic uint64_t requested_bytes;
	_Atomic uint64_t allocs;
	_Atomic uint64_t frees;
};

struct shm_slab_stats {
	uint64_t chunk_bytes, used_bytes, live_bytes, requested_bytes, allocs, frees;
	double fragmentation; /* 0.0 .. 1.0 */
};

/* A block that shm_slab_rebuild must keep: the offset shm_slab_alloc gave
 * and the size it was asked for. */
struct shm_slab_live {
	uint64_t off;
	uint64_t size;
	size_t tag;   /* caller's, e.g. where it found the block */
	int dropped;  /* out: 1 if the block was not a valid block of this shard */
};

/* Bytes a request of `size` occupies: its block (header included), or
 * whole chunks above SHM_SLAB_MAX; 0 if size is 0. */
uint64_t shm_slab_rounded(uint64_t size);

/* Allocate `size` bytes (16-byte aligned). Errors: SHM_EINVAL (size 0 or
 * larger than the segment), SHM_ENOMEM. */
int shm_slab_alloc(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off);

/* Free a block returned by shm_slab_alloc with the same `size`.
 * Errors: SHM_ERANGE if `off` cannot be such a block (outside the shard's
 * chunks, misaligned, already free, a size its header disagrees with). */
int shm_slab_free(struct shm_seg *seg, struct shm_slab *s, uint64_t off, uint64_t size);

/* Sort live[0..n) by offset and mark dropped each block that overlaps an
 * earlier one, lies outside this shard's chunks or is misaligned. Writes
 * nothing in the segment. Returns the number dropped. */
size_t shm_slab_check(const struct shm_seg *seg, const struct shm_slab *s,
		      struct shm_slab_live *live, size_t n);

/* Forget every block but live[0..n) and rebuild the allocator over the
 * chunks this shard owns (shm_slab_check first: dropped blocks are not
 * kept). Call only when no reader can see any other memory of the shard:
 * it writes headers into every gap and returns chunks with nothing live to
 * the pool. Returns the number of blocks dropped. */
size_t shm_slab_rebuild(struct shm_seg *seg, struct shm_slab *s, struct shm_slab_live *live,
			size_t n);

void shm_slab_stats(const struct shm_slab *s, struct shm_slab_stats *out);

#endif
