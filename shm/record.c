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

int shm_record_view(const struct shm_seg *seg, uint64_t off, struct shm_kv *kv)
{
	const struct shm_record *r = shm_ptr(seg, off, SHM_RECORD_HDR);
	uint64_t lens;
	uint32_t klen, vlen;

	if (r == NULL || (off & 15))
		return SHM_ECORRUPT;
	/* Both lengths in one atomic load: the compiler may not load them
	 * again after the check (volatile would say the same, but also forbid
	 * the compiler from scheduling the load well: README, "Costs behind
	 * the design"). */
	lens = __atomic_load_n((const uint64_t *)(const void *)&r->klen, __ATOMIC_RELAXED);
	klen = (uint32_t)lens;
	vlen = (uint32_t)(lens >> 32);
	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX ||
	    shm_ptr(seg, off, shm_record_size(klen, vlen)) == NULL)
		return SHM_ECORRUPT;
	kv->seq = __atomic_load_n(&r->seq, __ATOMIC_RELAXED);
	kv->klen = klen;
	kv->vlen = vlen;
	kv->key = seg->base + off + SHM_RECORD_HDR;
	kv->val = kv->key + klen;
	return SHM_OK;
}
