/*
 * bloom.h — blocked Bloom filter: one cache line per lookup.
 *
 * A classic Bloom filter with k hash functions touches k random cache lines
 * per lookup; that costs more than the table miss it is meant to avoid. A
 * blocked filter picks one 64-byte block per key and sets one bit in each of
 * the block's eight 64-bit words, so a lookup is one cache line and eight
 * AND tests. The filter is built for a table's 39-bit key summary (see
 * table.h), not the raw key, so a table rebuild can refill it from the slots
 * alone, without touching a record.
 *
 * Sizing: one block per SHM_BLOOM_GROUPS_PER_BLOCK table groups, rounded
 * up to a power of two (the block index is a mask), i.e. at least 9 bits
 * per key at the table's highest load and 12.8 after a growth, which gives
 * a false-positive rate of a few percent at worst.
 *
 * One writer sets bits (before it publishes the slot that needs them);
 * readers in other processes test them concurrently with relaxed loads.
 * Deleting a key cannot clear its bits: the filter is rebuilt with the table.
 */
#ifndef AMORA_SHM_BLOOM_H
#define AMORA_SHM_BLOOM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define SHM_BLOOM_GROUPS_PER_BLOCK 4u

struct shm_bloom_block {
	_Atomic uint64_t w[8];
} __attribute__((aligned(64)));

/* Blocks for a table of `ngroups` groups (at least 1): a power of two, one
 * per SHM_BLOOM_GROUPS_PER_BLOCK groups rounded up to a power of two. */
static inline uint64_t shm_bloom_blocks(uint64_t ngroups)
{
	uint64_t b = (ngroups + SHM_BLOOM_GROUPS_PER_BLOCK - 1) / SHM_BLOOM_GROUPS_PER_BLOCK;

	return b <= 1 ? 1 : 1ULL << (64 - __builtin_clzll(b - 1));
}

/* `nblocks` must be a power of two; `summary` is the key's 39-bit summary. */
void shm_bloom_add(struct shm_bloom_block *blocks, uint64_t nblocks, uint64_t summary);
bool shm_bloom_maybe(const struct shm_bloom_block *blocks, uint64_t nblocks, uint64_t summary);

#endif
