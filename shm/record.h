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
 *   8   u32  klen   bits 0-15: the key's length, 1 .. SHM_KEY_MAX; bit 31
 *                   (SHM_REC_INTENT): an atomic batch's intent, with a
 *                   trailer; bit 30 (SHM_REC_TOMB, intents only): the
 *                   batch deletes the key (vlen 0); bits 16-29: 0
 *   12  u32  vlen   0 .. SHM_VALUE_MAX (an empty value is a value)
 *   16  u32  node   the writer's own: offset / 16 of the sorted-index node
 *                   (skiplist.h) that points at this record, 0: none. The
 *                   one field a writer may change after publication
 *                   (shard.c); readers never read it, and the writer
 *                   trusts it only once that node points back here.
 *   20  klen bytes of key, then vlen bytes of value
 *   then, for an intent, 16 bytes (unaligned; written before publication):
 *       u64 prev  offset of the record it replaces (0: none; never an
 *                 intent itself), which stays allocated while it is
 *       u64 ref   its batch (batch.h): which status word decides it
 *
 * An intent is published like any record, and shm_kv_settle (batch.h)
 * gives a reader the version it may see: the intent's, prev's, or none.
 *
 * Keys are hashed with XXH3-64. The hash is split (see table.h): the low 7
 * bits are the control-byte tag, the next 32 bits are kept in the slot.
 */
#ifndef AMORA_SHM_RECORD_H
#define AMORA_SHM_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/segment.h"

#define SHM_KEY_MAX 4096u
#define SHM_VALUE_MAX (1u << 20)
#define SHM_REC_INTENT 0x80000000u
#define SHM_REC_TOMB 0x40000000u
#define SHM_REC_KLEN 0xffffu
#define SHM_INTENT_BYTES 16u

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

/* The key length of a record the writer reads (its own, so trusted). */
static inline uint32_t shm_rec_klen(const struct shm_record *r)
{
	return r->klen & SHM_REC_KLEN;
}

/* Bytes of a record from its klen field (flags included) and vlen. */
static inline uint64_t shm_record_bytes(uint32_t kfield, uint32_t vlen)
{
	return shm_record_size(kfield & SHM_REC_KLEN, vlen) +
	       ((kfield & SHM_REC_INTENT) ? SHM_INTENT_BYTES : 0);
}

/* Allocate and fill a record from `slab`. Errors: SHM_EINVAL (klen 0 or
 * > SHM_KEY_MAX, vlen > SHM_VALUE_MAX), SHM_ENOMEM. Writer only. */
int shm_record_new(struct shm_seg *seg, struct shm_slab *slab, const void *key, uint32_t klen,
		   const void *val, uint32_t vlen, uint64_t seq, uint64_t *off);

/* The same for an intent of batch `ref` replacing `prev` (0: none); a
 * delete intent when `tomb` (val unread, vlen must be 0). Errors as
 * shm_record_new. Writer only. */
int shm_record_new_intent(struct shm_seg *seg, struct shm_slab *slab, const void *key,
			  uint32_t klen, const void *val, uint32_t vlen, bool tomb, uint64_t prev,
			  uint64_t ref, uint64_t seq, uint64_t *off);

/* A reader's validated view of a record. Each length is read from shared
 * memory once, checked, and only the checked copy is used afterwards: even
 * if the bytes changed later (a bug, damage), key and val stay inside the
 * segment. */
struct shm_kv {
	const uint8_t *key;
	const uint8_t *val;
	uint32_t klen, vlen;
	uint64_t seq;
	uint64_t off;            /* the record's offset */
	const uint8_t *intent;   /* an intent's trailer, NULL for a plain record */
	bool tomb;               /* a delete intent */
};

/* Bytes of the record a view shows. */
static inline uint64_t shm_kv_bytes(const struct shm_kv *kv)
{
	return shm_record_size(kv->klen, kv->vlen) + (kv->intent != NULL ? SHM_INTENT_BYTES : 0);
}

/* prev and ref from an intent's trailer. */
static inline uint64_t shm_intent_prev(const struct shm_kv *kv)
{
	uint64_t v;

	__builtin_memcpy(&v, kv->intent, 8);
	return v;
}
static inline uint64_t shm_intent_ref(const struct shm_kv *kv)
{
	uint64_t v;

	__builtin_memcpy(&v, kv->intent + 8, 8);
	return v;
}

/* Fill *kv from the record at `off` if it lies wholly inside the segment
 * with sane lengths. Returns SHM_OK or SHM_ECORRUPT. Safe on offsets read
 * from shared memory. */
int shm_record_view(const struct shm_seg *seg, uint64_t off, struct shm_kv *kv);

#endif
