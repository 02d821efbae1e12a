/*
 * batch.c — status words of atomic batches (batch.h).
 */
#include <sched.h>

#include "shm/batch.h"

struct shm_batch_word *shm_batch_word(const struct shm_seg *seg, uint64_t ref)
{
	uint32_t slot = shm_batch_ref_slot(ref), word = shm_batch_ref_word(ref);
	struct shm_batch_word *w;

	if (shm_batch_ref_tag(ref) == 0 || slot >= SHM_BATCH_SLOTS)
		return NULL;
	w = shm_ptr(seg, seg->hdr->batch_off, (uint64_t)SHM_BATCH_SLOTS * SHM_BATCH_WORDS * sizeof(*w));
	return w != NULL ? w + (uint64_t)slot * SHM_BATCH_WORDS + word : NULL;
}

static inline uint64_t st_tag(uint64_t st) { return st >> 24; }
static inline uint64_t st_make(uint64_t tag, uint32_t shard, int st)
{
	return tag << 24 | (uint64_t)(shard & 0xfffff) << 4 | (uint64_t)st;
}
static inline bool st_final(uint64_t st)
{
	return (st & 15) == SHM_BATCH_COMMITTED || (st & 15) == SHM_BATCH_ABORTED;
}

int shm_batch_status(const struct shm_batch_word *w, uint64_t ref, uint64_t *c, uint32_t *by)
{
	/* Acquire, pairs with the release stores (p0)-(p3) and aborts. */
	uint64_t st = atomic_load_explicit(&w->state, memory_order_acquire);

	if (st_tag(st) != shm_batch_ref_tag(ref))
		return SHM_BATCH_UNDECIDED;
	if ((st & 15) == SHM_BATCH_COMMITTED)
		*c = atomic_load_explicit(&w->commit, memory_order_relaxed);
	if (by != NULL)
		*by = (uint32_t)(st >> 4) & 0xfffff;
	return (int)(st & 15);
}

int shm_batch_visible(const struct shm_seg *seg, uint64_t ref, uint64_t s)
{
	const struct shm_batch_word *w = shm_batch_word(seg, ref);
	uint64_t c = 0;
	int st;

	if (w == NULL)
		return SHM_ECORRUPT;
	while ((st = shm_batch_status(w, ref, &c, NULL)) == SHM_BATCH_CLAIMING) {
		if (s == SHM_BATCH_ANY)
			return 0;
		sched_yield(); /* the primary is between (p1) and (p3) */
	}
	return st == SHM_BATCH_COMMITTED && c <= s;
}

int shm_kv_settle_slow(const struct shm_seg *seg, struct shm_kv *kv, uint64_t s)
{
	int vis = shm_batch_visible(seg, shm_intent_ref(kv), s);
	uint64_t prev;

	if (vis < 0)
		return vis;
	if (vis)
		return kv->tomb ? SHM_ENOTFOUND : SHM_OK;
	prev = shm_intent_prev(kv);
	if (prev == 0)
		return SHM_ENOTFOUND;
	if (shm_record_view(seg, prev, kv) != SHM_OK || kv->intent != NULL)
		return SHM_ECORRUPT;
	return SHM_OK;
}

/* Move the word from the previous tag's final state (or its initial one)
 * to `to`, one CAS at a time; false when it is elsewhere. */
static bool move_from_last(struct shm_batch_word *w, uint64_t ref, uint64_t to)
{
	uint64_t tag = shm_batch_ref_tag(ref);
	uint64_t st = atomic_load_explicit(&w->state, memory_order_relaxed);

	for (;;) {
		bool from_last = st_tag(st) == tag - 1 && (st_final(st) || st == 0);

		if (!from_last)
			return false;
		/* Release: what we did before (a logged abort cause, nothing
		 * here yet) is visible with the state; acquire on failure to
		 * re-read. */
		if (atomic_compare_exchange_weak_explicit(&w->state, &st, to, memory_order_acq_rel,
							  memory_order_acquire))
			return true;
	}
}

bool shm_batch_begin_commit(struct shm_batch_word *w, uint64_t ref, uint32_t shard)
{
	return move_from_last(w, ref, st_make(shm_batch_ref_tag(ref), shard, SHM_BATCH_COMMITTING));
}

uint64_t shm_batch_commit(struct shm_seg *seg, struct shm_batch_word *w, uint64_t ref,
			  uint32_t shard)
{
	uint64_t tag = shm_batch_ref_tag(ref), c;

	/* (p1): before (p2), so a reader whose S load saw (p2) sees it. */
	atomic_store_explicit(&w->state, st_make(tag, shard, SHM_BATCH_CLAIMING), memory_order_release);
	c = atomic_fetch_add_explicit(&seg->hdr->commit_no, 1, memory_order_seq_cst) + 1; /* (p2) */
	atomic_store_explicit(&w->commit, c, memory_order_relaxed);
	/* (p3): pairs with the acquire in shm_batch_status; commit before it. */
	atomic_store_explicit(&w->state, st_make(tag, shard, SHM_BATCH_COMMITTED), memory_order_release);
	return c;
}

bool shm_batch_abort(struct shm_batch_word *w, uint64_t ref, uint32_t shard)
{
	uint64_t tag = shm_batch_ref_tag(ref);
	uint64_t st = atomic_load_explicit(&w->state, memory_order_acquire);

	if (st_tag(st) == tag) {
		if ((st & 15) == SHM_BATCH_COMMITTING && ((st >> 4) & 0xfffff) == shard) {
			/* the primary, restarted, found no DECISION */
			atomic_store_explicit(&w->state, st_make(tag, shard, SHM_BATCH_ABORTED),
					      memory_order_release);
			return true;
		}
		return (st & 15) == SHM_BATCH_ABORTED;
	}
	return move_from_last(w, ref, st_make(tag, shard, SHM_BATCH_ABORTED));
}

static bool mask_empty(const struct shm_batch_word *w)
{
	for (uint32_t i = 0; i < SHM_BATCH_MASK_WORDS; i++)
		if (atomic_load_explicit(&w->mask[i], memory_order_acquire) != 0)
			return false;
	return true;
}

bool shm_batch_hold(struct shm_batch_word *w, uint64_t ref, uint32_t shard)
{
	uint64_t tag = shm_batch_ref_tag(ref);
	uint64_t h = atomic_load_explicit(&w->holders, memory_order_acquire);

	if (shard >= SHM_MAX_SHARDS)
		return false;
	while (h != tag) {
		/* An earlier batch must be resolved everywhere: no bit set.
		 * None can be set for it any more (the client moved on), so
		 * the check holds until the CAS. */
		if (h > tag || !mask_empty(w))
			return false;
		if (atomic_compare_exchange_weak_explicit(&w->holders, &h, tag, memory_order_acq_rel,
							  memory_order_acquire))
			break;
	}
	atomic_fetch_or_explicit(&w->mask[shard / 64], 1ull << (shard % 64), memory_order_relaxed);
	return true;
}

void shm_batch_release(struct shm_batch_word *w, uint64_t ref, uint32_t shard)
{
	/* The tag cannot move on while our bit is set; once it is clear, a
	 * later batch's bits are not ours to touch. */
	if (shard >= SHM_MAX_SHARDS || atomic_load_explicit(&w->holders, memory_order_acquire) != shm_batch_ref_tag(ref))
		return;
	/* Release: the client that sees every bit clear reuses the word
	 * after our resolution (shm_batch_reusable's acquire). */
	atomic_fetch_and_explicit(&w->mask[shard / 64], ~(1ull << (shard % 64)), memory_order_release);
}

bool shm_batch_settle_ready(struct shm_epoch_slot *const *slots, size_t n, uint64_t min, uint64_t e,
			    uint64_t c)
{
	if (min < e)
		return false;
	for (size_t i = 0; i < n; i++) {
		/* Acquire, pairs with the iterator's release (libclient/scan.c);
		 * one that began inside a section we waited out is visible. */
		uint64_t s = atomic_load_explicit(&slots[i]->iter_start, memory_order_acquire);

		if (s != 0 && s - 1 < c) /* it holds start + 1 */
			return false;
	}
	return true;
}

bool shm_batch_reusable(const struct shm_batch_word *w, uint64_t ref)
{
	uint64_t tag = shm_batch_ref_tag(ref);
	uint64_t h = atomic_load_explicit(&w->holders, memory_order_acquire);
	uint64_t st = atomic_load_explicit(&w->state, memory_order_acquire);

	return h < tag && st_tag(st) == tag - 1 && (st_final(st) || st == 0) && mask_empty(w);
}
