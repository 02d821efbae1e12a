/*
 * bloom.c — blocked Bloom filter (see bloom.h).
 *
 * The key summary has only 39 bits, all of them used by the table (tag and
 * slot bits), so it is first spread over 64 bits with a strong mixer
 * (the splitmix64 finalizer): the eight bit positions (6 bits each) come
 * from the low 48 bits, the block from the rest.
 */
#include "shm/bloom.h"

static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* Bits 48..63 of m are not used for positions: they pick among the first
 * 65536 blocks; only larger filters pay for a second mix. */
static uint64_t block_of(uint64_t m, uint64_t nblocks)
{
	uint64_t b = m >> 48;

	if (nblocks > (1u << 16))
		b |= mix(m) << 16;
	return b & (nblocks - 1);
}

void shm_bloom_add(struct shm_bloom_block *blocks, uint64_t nblocks, uint64_t summary)
{
	uint64_t m = mix(summary);
	struct shm_bloom_block *b = &blocks[block_of(m, nblocks)];

	for (int i = 0; i < 8; i++) {
		uint64_t bit = 1ULL << ((m >> (6 * i)) & 63);
		uint64_t w = atomic_load_explicit(&b->w[i], memory_order_relaxed);
		if (!(w & bit))
			atomic_store_explicit(&b->w[i], w | bit, memory_order_relaxed);
	}
}

bool shm_bloom_maybe(const struct shm_bloom_block *blocks, uint64_t nblocks, uint64_t summary)
{
	uint64_t m = mix(summary);
	const struct shm_bloom_block *b = &blocks[block_of(m, nblocks)];
	uint64_t miss = 0;

	for (int i = 0; i < 8; i++) {
		uint64_t bit = 1ULL << ((m >> (6 * i)) & 63);
		miss |= ~atomic_load_explicit(&b->w[i], memory_order_relaxed) & bit;
	}
	return miss == 0;
}
