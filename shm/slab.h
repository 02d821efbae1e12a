/*
 * slab.h — per-shard slab allocator over segment offsets.
 *
 * Each shard carves the memory for its records and tables out of chunks it
 * takes from the segment's chunk pool. Requests up to SHM_SLAB_MAX (1 MiB)
 * are rounded up to one of SHM_SLAB_NCLASSES size classes (16, 32, 48, 64,
 * then four classes per power of two: 80, 96, 112, 128, 160, ...) and served
 * from that class's free list, else carved from the class's current chunk.
 * Larger requests take a run of whole chunks and give it back to the pool
 * when freed. Class chunks stay with the shard: a freed block is reused by
 * the same class.
 *
 * The state lives in the shard descriptor inside the segment, so that any
 * process can read the accounting; only the shard's single writer calls
 * shm_slab_alloc/shm_slab_free. A freed block's first 8 bytes become the
 * free-list link: free only what no reader can reach any more (see epoch.h).
 *
 * Accounting: chunk_bytes (taken from the pool), live_bytes (rounded sizes
 * of blocks in use), requested_bytes (what callers asked for). Fragmentation
 * is 1 - requested_bytes / chunk_bytes: rounding, carving leftovers and free
 * blocks all count as waste.
 */
#ifndef AMORA_SHM_SLAB_H
#define AMORA_SHM_SLAB_H

#include <stdatomic.h>
#include <stdint.h>

#define SHM_SLAB_MIN 16u
#define SHM_SLAB_MAX (1u << 20)
#define SHM_SLAB_NCLASSES 60

struct shm_seg;

struct shm_slab_class {
	uint64_t free_head; /* offset of first free block, 0: none */
	uint64_t cur;       /* next block to carve in the current chunk */
	uint64_t end;       /* end of the current chunk */
};

struct shm_slab {
	struct shm_slab_class cls[SHM_SLAB_NCLASSES];
	_Atomic uint64_t chunk_bytes;
	_Atomic uint64_t live_bytes;
	_Atomic uint64_t requested_bytes;
	_Atomic uint64_t allocs;
	_Atomic uint64_t frees;
};

struct shm_slab_stats {
	uint64_t chunk_bytes, live_bytes, requested_bytes, allocs, frees;
	double fragmentation; /* 0.0 .. 1.0 */
};

/* Rounded size that a request of `size` bytes occupies (a class size, or
 * whole chunks above SHM_SLAB_MAX); 0 if size is 0. */
uint64_t shm_slab_rounded(uint64_t size);

/* Allocate `size` bytes (16-byte aligned). Errors: SHM_EINVAL (size 0 or
 * larger than the segment), SHM_ENOMEM. */
int shm_slab_alloc(struct shm_seg *seg, struct shm_slab *s, uint64_t size, uint64_t *off);

/* Free a block returned by shm_slab_alloc with the same `size`.
 * Errors: SHM_ERANGE if `off` cannot be such a block. */
int shm_slab_free(struct shm_seg *seg, struct shm_slab *s, uint64_t off, uint64_t size);

void shm_slab_stats(const struct shm_slab *s, struct shm_slab_stats *out);

#endif
