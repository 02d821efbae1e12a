/*
 * record.h — immutable key/value records and key hashing.
 *
 * A record is written once by its shard's writer, then published (its offset
 * stored with release semantics in a table slot) and never modified again:
 * an update writes a new record and retires the old one. A reader that
 * obtained a record offset therefore sees either the whole old or the whole
 * new record, never a mix.
 *
 * Layout, 16-byte aligned, little-endian, at a segment offset:
 *
 *   0   u64  seq    sequence number of the write that created it
 *   8   u32  klen   1 .. SHM_KEY_MAX
 *   12  u32  vlen   0 .. SHM_VALUE_MAX (an empty value is a value)
 *   16  u32  node   the writer's own: offset / 16 of the sorted-index node
 *                   (skiplist.h) that points at this record, 0: none. The
 *                   one field a writer may change after publication
 *                   (shard.c); readers never read it, and the writer
 *                   trusts it only once that node points back here.
 *   20  klen bytes of key, then vlen bytes of value
 *
 * Keys are hashed with XXH3-64. The hash is split (see table.h): the low 7
 * bits are the control-byte tag, the next 32 bits are kept in the slot.
 */
#ifndef AMORA_SHM_RECORD_H
#define AMORA_SHM_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "shm/segment.h"

#define SHM_KEY_MAX 4096u
#define SHM_VALUE_MAX (1u << 20)

struct shm_record {
	uint64_t seq;
	uint32_t klen;
	uint32_t vlen;
	uint32_t node;
	uint8_t data[]; /* key, then value */
};

/* Bytes before the key (sizeof would round the struct up to 24). */
#define SHM_RECORD_HDR offsetof(struct shm_record, data)
_Static_assert(SHM_RECORD_HDR == 20, "record layout (above)");

uint64_t shm_hash(const void *key, size_t len);

static inline uint64_t shm_record_size(uint32_t klen, uint32_t vlen)
{
	return SHM_RECORD_HDR + (uint64_t)klen + vlen;
}

/* Allocate and fill a record from `slab`. Errors: SHM_EINVAL (klen 0 or
 * > SHM_KEY_MAX, vlen > SHM_VALUE_MAX), SHM_ENOMEM. Writer only. */
int shm_record_new(struct shm_seg *seg, struct shm_slab *slab, const void *key, uint32_t klen,
		   const void *val, uint32_t vlen, uint64_t seq, uint64_t *off);

/* A reader's validated view of a record. Each length is read from shared
 * memory once, checked, and only the checked copy is used afterwards: even
 * if the bytes changed later (a bug, damage), key and val stay inside the
 * segment. */
struct shm_kv {
	const uint8_t *key;
	const uint8_t *val;
	uint32_t klen, vlen;
	uint64_t seq;
};

/* Fill *kv from the record at `off` if it lies wholly inside the segment
 * with sane lengths. Returns SHM_OK or SHM_ECORRUPT. Safe on offsets read
 * from shared memory. */
int shm_record_view(const struct shm_seg *seg, uint64_t off, struct shm_kv *kv);

#endif
