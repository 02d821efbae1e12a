/*
 * epoch_scenario.h — the block published in the epoch stress scenario, shared
 * by test_epoch.c (reader processes) and stress_epoch.c (reader threads, run
 * under TSan) so that both write, poison and checksum blocks the same way.
 *
 * A block is a header then len bytes derived from seq; its CRC32C covers seq,
 * len and the data. The writer poisons a block (0xdd) before filling it and
 * again the moment it is freed, so a reader still inside a block freed too
 * early fails its check at once.
 */
#ifndef AMORA_TESTS_EPOCH_SCENARIO_H
#define AMORA_TESTS_EPOCH_SCENARIO_H

#include <isa-l/crc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/epoch.h"
#include "shm/segment.h"
#include "shm/slab.h"

#define DATA_MAX 200

struct blk {
	uint64_t seq;
	uint32_t len;
	uint32_t crc; /* CRC32C of seq, len and data */
	uint8_t data[];
};

static inline uint8_t data_byte(uint64_t seq, size_t i) { return (uint8_t)(seq * 131 + i * 7 + 1); }
static inline uint32_t data_len(uint64_t seq) { return 40 + (uint32_t)((seq * 37) % (DATA_MAX - 40)); }
static inline uint64_t blk_size(uint64_t seq) { return sizeof(struct blk) + data_len(seq); }

static inline uint32_t blk_crc(const struct blk *b)
{
	uint32_t c = crc32_iscsi((unsigned char *)b, (int)offsetof(struct blk, crc), 0xffffffff);

	return ~crc32_iscsi((unsigned char *)b->data, (int)b->len, c);
}

/* Write block `seq` into a freshly allocated slab block of blk_size(seq)
 * bytes: poison all of it first, then fill in the header, data and CRC. */
static inline void blk_write(struct blk *b, uint64_t seq)
{
	memset(b, 0xdd, blk_size(seq));
	b->seq = seq;
	b->len = data_len(seq);
	for (uint32_t i = 0; i < b->len; i++)
		b->data[i] = data_byte(seq, i);
	b->crc = blk_crc(b);
}

/* Poison n just-freed blocks, sparing what the allocator keeps in a free
 * block (slab.h): its two links (the first 16 bytes) and its footer (the
 * last 8 of the block, which ends at least 8 bytes past the request). */
static inline void poison_freed(const struct shm_seg *seg, const struct shm_retired *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = shm_ptr(seg, r[i].off, r[i].size);
		memset(p + 16, 0xdd, r[i].size - 24);
	}
}

/* Collect what no slot among `slots` can still reach, then poison what was
 * freed (poison_freed), so a reader still inside a freed block fails its
 * check at once. Sets *freed to the number freed. -1 if no memory for the
 * copy of the list (nothing was collected). */
static inline int collect_and_poison(struct shm_retire_list *l, struct shm_seg *seg,
				     struct shm_slab *slab, struct shm_epoch_slot *const *slots,
				     size_t nslots, size_t *freed)
{
	struct shm_retired *before = NULL;
	size_t had = l->n;

	if (had && (before = malloc(had * sizeof(*before))) == NULL)
		return -1;
	if (had)
		memcpy(before, l->items, had * sizeof(*before));
	*freed = shm_retire_collect(l, seg, slab, slots, nslots);
	poison_freed(seg, before, had - l->n);
	free(before);
	return 0;
}

#endif
