/*
 * record.c — creating records and reading them back safely.
 *
 * shm_record_view() is what makes reading shared memory safe: a reader takes
 * an offset from a table slot (which a concurrent writer may have just
 * changed, or which a bug may have damaged), so both the header and the
 * whole key+value extent are checked against the segment before any byte
 * is used.
 */
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shm/record.h"

uint64_t shm_hash(const void *key, size_t len)
{
	return XXH3_64bits(key, len);
}

int shm_record_new(struct shm_seg *seg, struct shm_slab *slab, const void *key, uint32_t klen,
		   const void *val, uint32_t vlen, uint64_t seq, uint64_t *off)
{
	struct shm_record *r;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX)
		return SHM_EINVAL;
	rc = shm_slab_alloc(seg, slab, shm_record_size(klen, vlen), off);
	if (rc != SHM_OK)
		return rc;
	r = (struct shm_record *)(seg->base + *off);
	r->seq = seq;
	r->klen = klen;
	r->vlen = vlen;
	r->node = 0;
	memcpy(r->data, key, klen);
	if (vlen)
		memcpy(r->data + klen, val, vlen);
	return SHM_OK;
}

int shm_record_new_intent(struct shm_seg *seg, struct shm_slab *slab, const void *key,
			  uint32_t klen, const void *val, uint32_t vlen, bool tomb, uint64_t prev,
			  uint64_t ref, uint64_t seq, uint64_t *off)
{
	uint32_t kfield = klen | SHM_REC_INTENT | (tomb ? SHM_REC_TOMB : 0);
	struct shm_record *r;
	uint8_t *t;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX || (tomb && vlen != 0))
		return SHM_EINVAL;
	rc = shm_slab_alloc(seg, slab, shm_record_bytes(kfield, vlen), off);
	if (rc != SHM_OK)
		return rc;
	r = (struct shm_record *)(seg->base + *off);
	r->seq = seq;
	r->klen = kfield;
	r->vlen = vlen;
	r->node = 0;
	memcpy(r->data, key, klen);
	if (vlen)
		memcpy(r->data + klen, val, vlen);
	t = r->data + klen + vlen;
	memcpy(t, &prev, 8);
	memcpy(t + 8, &ref, 8);
	return SHM_OK;
}

int shm_record_view(const struct shm_seg *seg, uint64_t off, struct shm_kv *kv)
{
	const struct shm_record *r = shm_ptr(seg, off, SHM_RECORD_HDR);
	uint64_t lens;
	uint32_t kfield, klen, vlen;

	if (r == NULL || (off & 15))
		return SHM_ECORRUPT;
	/* Both lengths in one atomic load: the compiler may not load them
	 * again after the check (volatile would say the same, but also forbid
	 * the compiler from scheduling the load well: README, "Costs behind
	 * the design"). */
	lens = __atomic_load_n((const uint64_t *)(const void *)&r->klen, __ATOMIC_RELAXED);
	kfield = (uint32_t)lens;
	klen = kfield & SHM_REC_KLEN;
	vlen = (uint32_t)(lens >> 32);
	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX ||
	    (kfield & ~(SHM_REC_KLEN | SHM_REC_INTENT | SHM_REC_TOMB)) != 0 ||
	    ((kfield & SHM_REC_TOMB) && (!(kfield & SHM_REC_INTENT) || vlen != 0)) ||
	    shm_ptr(seg, off, shm_record_bytes(kfield, vlen)) == NULL)
		return SHM_ECORRUPT;
	kv->seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
	kv->klen = klen;
	kv->vlen = vlen;
	kv->off = off;
	kv->key = seg->base + off + SHM_RECORD_HDR;
	kv->val = kv->key + klen;
	kv->intent = (kfield & SHM_REC_INTENT) ? kv->val + vlen : NULL;
	kv->tomb = (kfield & SHM_REC_TOMB) != 0;
	return SHM_OK;
}
