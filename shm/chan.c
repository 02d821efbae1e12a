/*
 * chan.c — channel layout, doorbells and request decoding (see chan.h).
 *
 * Everything here is arithmetic on a layout both sides compute from the
 * shard count, the two halves of the doorbell protocol (chan.h,
 * "Doorbells"), plus the one function that turns untrusted ring bytes into
 * a request. That function is the shard's first line of defence against a
 * broken client, so it accepts exactly the documented shape and nothing
 * else: reserved bytes must be zero, the lengths must add up to the record
 * length exactly, the op and flags must be known. Anything else is garbage
 * and the shard cuts the client off.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shm/chan.h"

#define PAGE 4096u

static size_t round_page(size_t n)
{
	return (n + PAGE - 1) & ~(size_t)(PAGE - 1);
}

size_t shm_chan_sq_bytes(void)
{
	return round_page(shm_ring_bytes(SHM_CHAN_SQ_DATA));
}

size_t shm_chan_cq_bytes(void)
{
	return round_page(shm_ring_bytes(SHM_CHAN_CQ_DATA));
}

static size_t pair_bytes(void)
{
	return shm_chan_sq_bytes() + shm_chan_cq_bytes();
}

/* Offset of the first ring: after the header and the shards' words. */
static size_t rings_off(uint32_t shard_count)
{
	return SHM_CHAN_HDR_BYTES + round_page((size_t)shard_count * sizeof(struct shm_chan_words));
}

size_t shm_chan_bulk_off(uint32_t shard_count)
{
	return rings_off(shard_count) + (size_t)shard_count * pair_bytes();
}

size_t shm_chan_bytes(uint32_t shard_count)
{
	return shm_chan_bulk_off(shard_count) + round_page(SHM_CHAN_BULK_BYTES);
}

void *shm_chan_sq_mem(void *base, uint32_t shard_count, uint32_t s)
{
	return (uint8_t *)base + rings_off(shard_count) + (size_t)s * pair_bytes();
}

void *shm_chan_cq_mem(void *base, uint32_t shard_count, uint32_t s)
{
	return (uint8_t *)shm_chan_sq_mem(base, shard_count, s) + shm_chan_sq_bytes();
}

struct shm_chan_words *shm_chan_words(void *base, uint32_t s)
{
	return (struct shm_chan_words *)((uint8_t *)base + SHM_CHAN_HDR_BYTES) + s;
}

int shm_chan_format(void *base, uint32_t shard_count, uint32_t slot, uint32_t gen, int32_t pid)
{
	struct shm_chan_hdr *h = base;

	if (base == NULL || shard_count == 0)
		return SHM_EINVAL;
	memset(h, 0, sizeof(*h));
	h->magic = SHM_CHAN_MAGIC;
	h->version = SHM_CHAN_VERSION;
	h->shard_count = shard_count;
	h->bytes = shm_chan_bytes(shard_count);
	h->slot = slot;
	h->gen = gen;
	for (uint32_t s = 0; s < shard_count; s++) {
		int rc = shm_ring_format(shm_chan_sq_mem(base, shard_count, s), shm_chan_sq_bytes());
		struct shm_chan_words *w = shm_chan_words(base, s);

		atomic_store_explicit(&w->decided, 0, memory_order_relaxed);
		atomic_store_explicit(&w->pending, 0, memory_order_relaxed);
		atomic_store_explicit(&w->wake, 0, memory_order_relaxed);
		atomic_store_explicit(&w->cold, 0, memory_order_relaxed);
		if (rc == SHM_OK)
			rc = shm_ring_format(shm_chan_cq_mem(base, shard_count, s), shm_chan_cq_bytes());
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

/* ---------- doorbells ---------- */

static long futex_wake(_Atomic uint32_t *word, int n, int private_)
{
	int op = FUTEX_WAKE | (private_ ? FUTEX_PRIVATE_FLAG : 0);

	return syscall(SYS_futex, (uint32_t *)word, op, n, NULL, NULL, 0);
}

void shm_chan_word_wake(_Atomic uint32_t *word, int private_)
{
	/* Release: a waiter that loads the new value (acquire) sees what was
	 * done before the bump (the registry change, for amorad's word). */
	atomic_fetch_add_explicit(word, 1, memory_order_release);
	futex_wake(word, INT_MAX, private_);
}

int shm_chan_notify(struct shm_chan_words *w, const _Atomic uint32_t *sleeping)
{
	/* (d) Release: the shard's exchange that takes the flag (acquire)
	 * then sees the ring's tail published before it. */
	atomic_store_explicit(&w->pending, 1, memory_order_release);
	/* Pairs with the fence in shm_chan_sleep_wait after (b): either the
	 * shard's re-check (c) sees the flag above, or the loads below see
	 * sleeping (or cold: the shard's fence is after its store) set. */
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&w->cold, memory_order_relaxed) &&
	    !atomic_load_explicit(sleeping, memory_order_relaxed))
		return 0;
	/* (e) The bump comes after the shard loaded the word in (a) (it set
	 * the flag after that load), so its futex_waitv fails or is woken.
	 * Release pairs with the shard's acquire load in (a). */
	atomic_fetch_add_explicit(&w->wake, 1, memory_order_release);
	futex_wake(&w->wake, 1, 0);
	return 1;
}

void shm_chan_sleep_begin(struct shm_chan_sleep *z)
{
	z->n = 0;
}

int shm_chan_sleep_add(struct shm_chan_sleep *z, _Atomic uint32_t *word, uint32_t expect, int private_)
{
	if (z->n >= SHM_CHAN_WAIT_WORDS)
		return SHM_EFULL;
	z->w[z->n++] = (struct futex_waitv){
		.val = expect,
		.uaddr = (uint64_t)(uintptr_t)word,
		/* shared unless private: client words are in MAP_SHARED memory */
		.flags = FUTEX_32 | (private_ ? FUTEX_PRIVATE_FLAG : 0),
	};
	return SHM_OK;
}

static long futex_waitv(struct futex_waitv *w, uint32_t n, const struct timespec *abs)
{
	return syscall(SYS_futex_waitv, w, n, 0, abs, CLOCK_MONOTONIC);
}

int shm_chan_sleep_wait(struct shm_chan_sleep *z, _Atomic uint32_t *sleeping, int (*ready)(void *),
			void *arg, int64_t deadline_ns)
{
	struct timespec ts, *tp = NULL;
	long rc = 0;
	int err = 0;

	if (z->n == 0)
		return SHM_EINVAL;
	/* (b) Relaxed: the fence below orders it before the re-check. */
	if (sleeping != NULL)
		atomic_store_explicit(sleeping, 1, memory_order_relaxed);
	/* Pairs with the fence in shm_chan_notify (after (d)). */
	atomic_thread_fence(memory_order_seq_cst);
	if (ready == NULL || !ready(arg)) { /* (c) */
		if (deadline_ns >= 0) {
			ts.tv_sec = deadline_ns / 1000000000;
			ts.tv_nsec = deadline_ns % 1000000000;
			tp = &ts;
		}
		rc = futex_waitv(z->w, z->n, tp);
		err = errno;
	}
	/* No fence needed: a client that still sees the flag wakes us for
	 * nothing; one that sees it clear is found by our next re-check,
	 * after the fence of our next sleep. */
	if (sleeping != NULL)
		atomic_store_explicit(sleeping, 0, memory_order_relaxed);
	if (rc >= 0 || err == EAGAIN || err == EINTR)
		return SHM_OK;
	if (err == ETIMEDOUT)
		return SHM_ETIMEDOUT;
	errno = err;
	return SHM_ESYS;
}

int shm_chan_sleep_supported(void)
{
	/* An empty list is EINVAL where the call exists, ENOSYS where not. */
	return futex_waitv(NULL, 0, NULL) != 0 && errno == EINVAL;
}

int shm_chan_req_decode(const void *rec, uint32_t len, struct shm_chan_op_view *v)
{
	struct shm_chan_req r;
	uint64_t need, bhdr;

	if (len < sizeof(r))
		return SHM_ECORRUPT;
	memcpy(&r, rec, sizeof(r));
	if (r.zero != 0 || r.zero2 != 0 || (r.flags & ~SHM_CHAN_REQ_BULK) != 0)
		return SHM_ECORRUPT;
	if (r.op < SHM_CHAN_OP_SET || r.op > SHM_CHAN_OP_RESOLVE)
		return SHM_ECORRUPT;
	if ((r.op == SHM_CHAN_OP_DEL || r.op == SHM_CHAN_OP_PDEL) && (r.vlen != 0 || r.flags != 0))
		return SHM_ECORRUPT;
	if (r.op >= SHM_CHAN_OP_COMMIT && (r.klen != 0 || r.vlen != 0 || r.flags != 0))
		return SHM_ECORRUPT;
	if ((r.flags & SHM_CHAN_REQ_BULK) && r.vlen > SHM_CHAN_BULK_BYTES)
		return SHM_ECORRUPT;
	bhdr = r.op >= SHM_CHAN_OP_PSET ? sizeof(v->batch) : 0;
	need = sizeof(r) + (uint64_t)r.klen + bhdr + ((r.flags & SHM_CHAN_REQ_BULK) ? 0 : r.vlen);
	if (need != len)
		return SHM_ECORRUPT;
	memset(&v->batch, 0, sizeof(v->batch));
	if (bhdr) {
		memcpy(&v->batch, (const uint8_t *)rec + sizeof(r) + r.klen, sizeof(v->batch));
		if (v->batch.zero != 0)
			return SHM_ECORRUPT;
	}
	v->id = r.id;
	v->op = r.op;
	v->flags = r.flags;
	v->klen = r.klen;
	v->vlen = r.vlen;
	v->key = (const uint8_t *)rec + sizeof(r);
	v->val = (r.flags & SHM_CHAN_REQ_BULK) ? NULL : v->key + r.klen + bhdr;
	return SHM_OK;
}
