/*
 * table.h — the per-shard Swiss table: one writer, lock-free readers.
 *
 * Open addressing over groups of 16 slots. A group is 16 control bytes
 * followed by 16 slots of 8 bytes (144 bytes): a lookup loads the control
 * bytes, compares all 16 against the key's 7-bit tag at once (SSE2, or a
 * scalar SWAR fallback), and only for a matching tag loads the slot.
 *
 *   control byte   0x00..0x7f  full, holds the tag (hash bits 0..6)
 *                  0x80        empty (never used since the table was built)
 *                  0xfe        deleted (tombstone)
 *   slot           bits 63..32 hash bits 7..38 ("slot hash")
 *                  bits 31..0  record offset / 16
 *
 * Tag and slot hash together, the key's 39-bit "summary", are compared
 * before the record is touched, so a lookup for a missing key dereferences a
 * record only on a 39-bit collision (the group index also comes from the
 * slot hash, so the bits that differ within a group are 39 - log2(groups)).
 * The summary is all a rebuild needs to place an entry and refill the Bloom
 * filter: growing never reads records. Record offsets in units of 16 bytes
 * are why a segment is at most 64 GiB.
 *
 * Any number of groups (not only powers of two, so that growth can be by
 * 1.4x rather than 2x: the table memory per key follows the keys more
 * closely). A key's home group is the slot hash scaled to the group count
 * (shm_group_home: a multiply and a shift, no modulo), and probing is
 * linear over groups (g, g+1, ... wrapping), which visits every group
 * once; the 16 slots of a group absorb what linear probing of single slots
 * would cluster. A probe stops at the first group holding an empty byte.
 *
 * Concurrency (one writer, readers in any process, no locks):
 *   - insert: write the slot, then store the control byte with release;
 *     readers load control bytes, then an acquire fence, then the slot.
 *   - update: one release store of the new slot (same control byte); the
 *     old record is retired through EBR, never freed under a reader.
 *   - delete: control byte := deleted (release), then slot := 0. A reader
 *     that saw the old control byte may read either slot; 0 is a miss.
 *   - empty bytes only ever become full, never the reverse, so a reader
 *     cannot stop early on a key that was present before it started.
 *   - growth: build a new table aside, publish its offset in the shard
 *     descriptor (release), retire the old one; readers finish on the old.
 * A reader validates every offset it loads (table, groups, record), bounds
 * its probe by the group count, and compares full keys, so a torn view or
 * a damaged table gives a miss or SHM_ECORRUPT, never a crash.
 *
 * A table and its Bloom filter are one allocation:
 *   struct shm_table | groups[ngroups] | bloom blocks[nblocks]
 * where nblocks is 0 (no filter: a table built while the filter is off,
 * which is how shardd runs) or shm_bloom_blocks(ngroups).
 */
#ifndef AMORA_SHM_TABLE_H
#define AMORA_SHM_TABLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shm/bloom.h"
#include "shm/record.h"
#include "shm/segment.h"

#define SHM_GROUP_SLOTS 16
#define SHM_CTRL_EMPTY 0x80u
#define SHM_CTRL_DELETED 0xfeu
#define SHM_SUMMARY_BITS 39
/* Grow (or rebuild) when full + deleted slots would exceed 7/8. */
#define SHM_TABLE_MAX_LOAD_NUM 7
#define SHM_TABLE_MAX_LOAD_DEN 8
/* Group indexes are 32-bit slot hashes scaled to the group count. */
#define SHM_TABLE_MAX_GROUPS (1ULL << 32)

struct shm_group {
	_Atomic uint8_t ctrl[SHM_GROUP_SLOTS];
	_Atomic uint64_t slot[SHM_GROUP_SLOTS];
};

struct shm_table {
	uint64_t ngroups;      /* 1 .. SHM_TABLE_MAX_GROUPS */
	uint64_t nblocks;      /* Bloom blocks: 0 (none) or shm_bloom_blocks(ngroups) */
	uint64_t bytes;        /* size of the whole allocation */
	uint64_t groups_off;   /* segment offset of groups[0] (64-aligned) */
	uint64_t bloom_off;    /* segment offset of the Bloom blocks */
	_Atomic uint64_t live; /* full slots */
	_Atomic uint64_t dead; /* deleted slots */
};

/* The parts of a key's hash the table uses. */
static inline uint8_t shm_hash_tag(uint64_t h) { return (uint8_t)(h & 0x7f); }
static inline uint32_t shm_hash_slot(uint64_t h) { return (uint32_t)(h >> 7); }
static inline uint64_t shm_hash_summary(uint64_t h)
{
	return h & ((1ULL << SHM_SUMMARY_BITS) - 1);
}

/* The group a probe for slot hash `shash` starts at: shash scaled from
 * [0, 2^32) to [0, ngroups). */
static inline uint64_t shm_group_home(uint32_t shash, uint64_t ngroups)
{
	return (uint64_t)shash * ngroups >> 32;
}

/* The group a probe visits after group gi. */
static inline uint64_t shm_group_next(uint64_t gi, uint64_t ngroups)
{
	return gi + 1 == ngroups ? 0 : gi + 1;
}

/* Bit i set: control byte i equals `byte`. Both versions are always built
 * so the scalar one is tested; lookups use SSE2 unless built with
 * SHM_SCALAR (or under TSan, which cannot see a 16-byte vector load as
 * atomic byte loads). */
uint32_t shm_group_match_sse2(const struct shm_group *g, uint8_t byte);
uint32_t shm_group_match_scalar(const struct shm_group *g, uint8_t byte);

/* Bytes of a table with `ngroups` groups, with or without its Bloom filter. */
uint64_t shm_table_bytes(uint64_t ngroups, bool bloom);

/* Allocate an empty table from `slab` (with a Bloom filter area if
 * `bloom`), *off its offset. Errors: SHM_EINVAL (ngroups 0 or more than
 * SHM_TABLE_MAX_GROUPS or the segment holds), SHM_ENOMEM. */
int shm_table_create(struct shm_seg *seg, struct shm_slab *slab, uint64_t ngroups, bool bloom,
		     uint64_t *off);

/* A reader's snapshot of a table's geometry: each header field is read
 * once and validated, so a reader never re-reads a field that might have
 * changed under it (even with reclamation gone wrong it stays in bounds). */
struct shm_table_view {
	const struct shm_group *groups;
	const struct shm_bloom_block *bloom;
	uint64_t ngroups, nblocks;
};

/* Validate the table at `off` and fill *v. Errors: SHM_ECORRUPT. */
int shm_table_view(const struct shm_seg *seg, uint64_t off, struct shm_table_view *v);

/* A reader walking a table (a checkpoint, shardd/ckpt.c): the record in
 * slot i of group g of the view, 0 when the slot is empty or deleted. The
 * record may be replaced or deleted right after; it stays readable until
 * the reader leaves its section. */
uint64_t shm_table_view_record(const struct shm_table_view *v, uint64_t g, unsigned i);

/* A reader's memo of the last view it validated for one shard: off 0 is
 * none. Zero-initialised is empty. */
struct shm_table_memo {
	uint64_t off;
	struct shm_table_view v;
};

/* The view of the table at `off`, validated once per (off, ngroups,
 * nblocks): when the memo holds `off` and the table there still says the
 * memo's group and Bloom block counts, *v points at the memo's view
 * without validating again; else the table is validated (shm_table_view)
 * and memoised. Why that is enough: a view is a function of (off,
 * ngroups, nblocks) alone -- validation accepts only the one size and
 * group/bloom offsets those determine -- and off was in bounds when it
 * was validated (the segment never shrinks). A table freed and another
 * built at the same offset with the same counts has the same view. Memory at `off` that
 * is no table any more (reclamation gone wrong) is read within the old
 * view's bounds, as every view is. Errors: SHM_ECORRUPT (the memo is then
 * empty). */
int shm_table_view_memo(const struct shm_seg *seg, uint64_t off, struct shm_table_memo *m,
			const struct shm_table_view **v);

/* Reader: find `key` (hash h) in the viewed table; *kv receives the
 * validated view of its record. With use_bloom, a Bloom miss answers
 * without probing (a table without a filter area is probed).
 * Returns SHM_OK, SHM_ENOTFOUND, or SHM_ECORRUPT (a matching slot points
 * outside the segment). The caller holds an epoch (epoch.h) while it uses
 * the view and the record. */
int shm_table_find(const struct shm_seg *seg, const struct shm_table_view *v, const void *key,
		   uint32_t klen, uint64_t h, bool use_bloom, struct shm_kv *kv);

/* Reader: start loading the first group a lookup of hash h probes, so
 * that the lookups of a multi-get overlap their cache misses instead of
 * taking them one after another. */
static inline void shm_table_prefetch(const struct shm_table_view *v, uint64_t h)
{
	const char *g = (const char *)&v->groups[shm_group_home(shm_hash_slot(h), v->ngroups)];

	__builtin_prefetch(g);
	__builtin_prefetch(g + 64);
}

/* Reader, the second stage of a multi-get's prefetch (after
 * shm_table_prefetch had the first group loading): start loading the
 * record of the first slot in that group whose summary is the key's, so
 * that a hit's record miss overlaps the others' too. Only a prefetch:
 * nothing it reads is trusted (a record offset outside the segment is not
 * prefetched). */
void shm_table_prefetch_record(const struct shm_seg *seg, const struct shm_table_view *v,
			       uint64_t h);

/* --- writer side (the shard's single writer) --- */

/* Position of a slot: group index * 16 + slot index. */
typedef uint64_t shm_slot_pos;

/* Look `key` up for writing. Returns true and *pos if present; otherwise
 * false and *pos the slot an insert should use (a tombstone or empty slot),
 * or false and *pos == UINT64_MAX if the table has no usable slot. */
bool shm_table_locate(const struct shm_seg *seg, struct shm_table *t, const void *key,
		      uint32_t klen, uint64_t h, shm_slot_pos *pos);

/* Start loading the first group `h` probes (a prefetch: the writer
 * publishing a round loads the groups of the writes ahead). */
void shm_table_prefetch_group(const struct shm_seg *seg, const struct shm_table *t, uint64_t h);

/* Record offset held by present slot `pos`. */
uint64_t shm_table_record(const struct shm_seg *seg, const struct shm_table *t, shm_slot_pos pos);

/* Fill slot `pos` (from shm_table_locate) with the record at `rec_off`;
 * with `bloom`, add it to the Bloom filter too, if the table has one (the
 * filter is kept only while readers use it: shm_writer_set_bloom). */
void shm_table_insert_at(struct shm_seg *seg, struct shm_table *t, shm_slot_pos pos, uint64_t h,
			 uint64_t rec_off, bool bloom);

/* Point present slot `pos` at a new record. */
void shm_table_replace_at(struct shm_seg *seg, struct shm_table *t, shm_slot_pos pos,
			      uint64_t h, uint64_t rec_off);

/* Turn present slot `pos` into a tombstone. */
void shm_table_delete_at(struct shm_seg *seg, struct shm_table *t, shm_slot_pos pos);

/* Count full and deleted slots again (a writer killed between a slot
 * store and its counter update leaves them off by one). */
void shm_table_recount(struct shm_seg *seg, struct shm_table *t);

/* Whether `more` more inserts fit under the load limit. */
bool shm_table_has_room(const struct shm_table *t, uint64_t more);

/* Copy every live entry of `from` into the empty table `to` (and, with
 * `bloom`, its Bloom filter), reading only slots. Errors: SHM_ENOMEM if
 * `to` is too small. */
int shm_table_copy(struct shm_seg *seg, const struct shm_table *from, struct shm_table *to,
		   bool bloom);

/* Add every live entry's summary to the table's Bloom filter (before
 * readers are told to use a filter that inserts did not keep). A table
 * without a filter area is left as it is. */
void shm_table_bloom_fill(struct shm_seg *seg, struct shm_table *t);

#endif
