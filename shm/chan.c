/*
 * chan.c — channel layout, doorbells and request decoding (see chan.h).
 *
 * Everything here is arithmetic on a layout both sides compute from the
 * shard count, plus the one function that turns untrusted ring bytes into
 * a request. That function is the shard's first line of defence against a
 * broken client, so it accepts exactly the documented shape and nothing
 * else: reserved bytes must be zero, the lengths must add up to the record
 * length exactly, the op and flags must be known. Anything else is garbage
 * and the shard cuts the client off.
 */
#include <string.h>

#include "chan.h"

#define PAGE 4096u

static size_t round_page(size_t n)
{
	return (n + PAGE - 1) & ~(size_t)(PAGE - 1);
}

size_t chan_sq_bytes(void)
{
	return round_page(ring_bytes(CHAN_SQ_DATA));
}

size_t chan_cq_bytes(void)
{
	return round_page(ring_bytes(CHAN_CQ_DATA));
}

static size_t pair_bytes(void)
{
	return chan_sq_bytes() + chan_cq_bytes();
}

/* Offset of the first ring: after the header and the decided words. */
static size_t rings_off(uint32_t shard_count)
{
	return CHAN_HDR_BYTES + round_page((size_t)shard_count * 8);
}

size_t chan_bulk_off(uint32_t shard_count)
{
	return rings_off(shard_count) + (size_t)shard_count * pair_bytes();
}

size_t chan_bytes(uint32_t shard_count)
{
	return chan_bulk_off(shard_count) + round_page(CHAN_BULK_BYTES);
}

void *chan_sq_mem(void *base, uint32_t shard_count, uint32_t s)
{
	return (uint8_t *)base + rings_off(shard_count) + (size_t)s * pair_bytes();
}

void *chan_cq_mem(void *base, uint32_t shard_count, uint32_t s)
{
	return (uint8_t *)chan_sq_mem(base, shard_count, s) + chan_sq_bytes();
}

_Atomic uint64_t *chan_decided(void *base, uint32_t s)
{
	return (_Atomic uint64_t *)((uint8_t *)base + CHAN_HDR_BYTES) + s;
}

int chan_format(void *base, uint32_t shard_count, uint32_t slot, uint32_t gen, int32_t pid)
{
	struct chan_hdr *h = base;

	if (base == NULL || shard_count == 0)
		return SHM_EINVAL;
	memset(h, 0, sizeof(*h));
	h->magic = CHAN_MAGIC;
	h->version = CHAN_VERSION;
	h->shard_count = shard_count;
	h->bytes = chan_bytes(shard_count);
	h->slot = slot;
	h->gen = gen;
	for (uint32_t s = 0; s < shard_count; s++) {
		int rc = ring_format(chan_sq_mem(base, shard_count, s), chan_sq_bytes());

		atomic_store_explicit(chan_decided(base, s), 0, memory_order_relaxed);
		if (rc == SHM_OK)
			rc = ring_format(chan_cq_mem(base, shard_count, s), chan_cq_bytes());
		if (rc != SHM_OK)
			return rc;
	}
	/* The slot is written last: a reader is registered only once its
	 * rings are ready. shm_epoch_slot_init also registers *this* process
	 * with membarrier, which is harmless for amorad. */
	atomic_store_explicit(&h->epoch.epoch, 0, memory_order_relaxed);
	atomic_store_explicit(&h->epoch.pid, pid, memory_order_release);
	return SHM_OK;
}

size_t chan_doorbell_stride(uint32_t max_clients)
{
	size_t words = (max_clients + 63) / 64;

	return (sizeof(struct chan_doorbell) + words * 8 + SHM_CACHELINE - 1) &
	       ~(size_t)(SHM_CACHELINE - 1);
}

struct chan_doorbell *chan_doorbell_at(void *base, uint32_t max_clients, uint32_t s)
{
	return (struct chan_doorbell *)((uint8_t *)base + (size_t)s * chan_doorbell_stride(max_clients));
}

void chan_notify(struct chan_doorbell *d, uint32_t slot)
{
	atomic_fetch_or_explicit(&d->pending[slot / 64], 1ULL << (slot % 64), memory_order_seq_cst);
	ring_bell_ring(&d->bell);
}

int chan_req_decode(const void *rec, uint32_t len, struct chan_op_view *v)
{
	struct chan_req r;
	uint64_t need;

	if (len < sizeof(r))
		return SHM_ECORRUPT;
	memcpy(&r, rec, sizeof(r));
	if (r.zero != 0 || r.zero2 != 0 || (r.flags & ~CHAN_REQ_BULK) != 0)
		return SHM_ECORRUPT;
	if (r.op != CHAN_OP_SET && r.op != CHAN_OP_DEL)
		return SHM_ECORRUPT;
	if (r.op == CHAN_OP_DEL && (r.vlen != 0 || r.flags != 0))
		return SHM_ECORRUPT;
	if ((r.flags & CHAN_REQ_BULK) && r.vlen > CHAN_BULK_BYTES)
		return SHM_ECORRUPT;
	need = sizeof(r) + (uint64_t)r.klen + ((r.flags & CHAN_REQ_BULK) ? 0 : r.vlen);
	if (need != len)
		return SHM_ECORRUPT;
	v->id = r.id;
	v->op = r.op;
	v->flags = r.flags;
	v->klen = r.klen;
	v->vlen = r.vlen;
	v->key = (const uint8_t *)rec + sizeof(r);
	v->val = (r.flags & CHAN_REQ_BULK) ? NULL : v->key + r.klen;
	return SHM_OK;
}
