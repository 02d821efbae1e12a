/*
 * scan.c — iterators over the shards' sorted indexes (amora.h, "Scans"):
 * amora_iter_open/_next/_close, amora_count, amora_has_prefix.
 *
 * Keys are placed by hash, so an ordered scan merges every shard that can
 * hold keys of the range (../shared/DESIGN.md §9): one skip-list cursor
 * per shard (shm/skiplist.h) and a tree of losers over the shards' current
 * keys (see "The merge"). A prefix holding a whole hash tag
 * names one shard when the segment places keys by tag (shm_place).
 *
 * Read sections stay short (DESIGN.md §12, "Iterators resume"): the
 * iterator enters a section only to fill its buffer, merging a batch of
 * entries (256 at first, doubling to 4096, and at most ~1 MiB of copied
 * bytes) whose keys and values it copies out, then leaves it and hands the
 * copies out one per amora_iter_next. A consumer that sleeps between
 * entries holds no epoch, blocks no reclamation and is never cut off.
 *
 * Resuming. When the buffer is empty the iterator enters a new section.
 * Its cursors still point at the nodes (and, for reverse, the records)
 * they stood on in the previous section, which may have been freed since.
 * They resume where they stood only when the global epoch, loaded after
 * the new section's enter (and its fence), is still the value the previous
 * section entered with (e), and no shard's index_off changed; otherwise
 * every cursor seeks again just past the last key returned (exclusive;
 * for reverse, just before it). Why that is safe (checked against
 * shm/epoch.h and epoch.c):
 *   - a block is freed only by shm_retire_collect, and only once sealed
 *     with a tag E by shm_retire_seal, whose bump (++global, seq_cst RMW)
 *     comes after the block was unlinked. A restarted writer frees what
 *     its predecessor unlinked only after shm_epoch_bump and
 *     shm_epoch_wait (shard.h, shm_writer_open steps 3-4): a bump too.
 *   - a block tagged E <= e was unlinked before the bump to E, hence
 *     before our previous section loaded e: that section could not reach
 *     it (epoch.h, case (1)). So whatever our cursors hold is unsealed or
 *     tagged E > e, and freeing it needs the global epoch past e first.
 *   - the new section stores its epoch, fences (or relies on the writer's
 *     membarrier), then loads the global epoch. If that load still reads
 *     e, no bump past e precedes our fence: every collect that could free
 *     a block tagged E > e fences after its bump, so its slot scan comes
 *     after our fence and sees our slot busy with e < E (the store-
 *     buffering pairing of epoch.c, (2)). Such a block stays allocated for
 *     the whole new section, as it did during the previous one.
 *   - within and across such sections nothing our cursors reached was
 *     freed, so skiplist.h's guarantee (a reader standing on an unlinked
 *     node goes on forward; a key in the list throughout is not skipped)
 *     carries over from one section to the next as if they were one.
 * It relies on every free of memory a reader may have reached being
 * preceded by an epoch bump after its unlink (shm_skip_destroy of a
 * replaced index included: its caller must bump and wait first). The
 * bumps are frequent under writes (a seal per reclamation), so under
 * churn most batches re-seek; an idle store resumes.
 *
 * Index states. A shard whose `sorted` is 0 has no index (amorad
 * --sorted-index off): AMORA_ENOTSUP. index_off 0 with sorted 1 is a
 * shard building its index (a first start or a rebuild): the iterator
 * waits outside any section, 1 ms at a time, up to the handle's timeout
 * (AMORA_ETIMEDOUT), unless the shard is FAILED (AMORA_EFAILED: nothing
 * will build it). A FAILED or RESTARTING shard that has an index is read
 * like any other: the restarted writer adopts it.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libclient/client.h"
#include "shm/batch.h"
#include "shm/clock.h"
#include "shm/skiplist.h"

#define SCAN_BATCH_MIN 256
#define SCAN_BATCH_MAX 4096
#define SCAN_BYTES_MAX (1u << 20) /* copied bytes per batch (one entry may exceed it) */

/* One shard's part of a scan. */
struct scan_shard {
	uint32_t id;
	bool ended;                /* its cursor passed its last key */
	uint64_t index_off;        /* the index the cursor walks */
	uint64_t cur;              /* index_off as loaded in this section */
	struct shm_skip_cursor c;
	struct shm_kv kv;          /* the entry it stands on (valid in the section) */
};

/* A key's first 16 bytes as two big-endian integers, zero padded, in scan
 * order: complemented for reverse. Two keys whose words differ are ordered
 * by them (shm_skip_key_word); equal words need the whole keys. */
struct scan_key {
	uint64_t k0, k1;
};

/* A buffered entry: offsets into bytes. */
struct scan_entry {
	size_t koff, voff;
	uint32_t klen, vlen;
};

/* A bound after normalisation: mode AMORA_BOUND_*, key copied. */
struct scan_bound {
	int mode;
	uint32_t len;
	uint8_t key[AMORA_KEY_MAX];
};

struct amora_iter {
	amora *db;
	bool reverse, keys_only;
	uint64_t limit, returned;  /* limit 0: none; entries handed out */
	uint32_t n;                /* shards scanned */
	struct scan_shard *sh;
	struct scan_key *keys;     /* keys[s]: sh[s].kv's key (all ones once ended) */
	uint32_t *tree;            /* the merge's losers, tree[1 .. n) */
	uint32_t *work;            /* 2n: the tree's build, the seeks' active list */
	uint32_t win;              /* the shard whose entry comes next */
	bool positioned;           /* the cursors stand somewhere (a section ran) */
	uint64_t epoch;            /* the epoch the last section entered with */
	bool have_last;
	uint32_t last_len;         /* the last key of the previous batch (the seek
				    * key when re-seeking) */
	struct scan_key last_k;    /* the last key merged, as keys[] */
	struct scan_key far_k;     /* the far end's key, as keys[] */
	struct scan_entry *ents;
	size_t nents, next, ents_cap, batch;
	uint8_t *bytes;
	size_t nbytes, bytes_cap;
	bool done;                 /* nothing more to merge */
	bool started;              /* its first section ran: `start` holds, it is in db->iters */
	uint64_t start;            /* its start number (shm/batch.h): batches it sees */
	struct amora_iter *older, *newer; /* db->iters, by start */
	int err;                   /* the error the iterator ended with (0: none) */
	/* Not zeroed at open (12 KiB): each is written before it is read. */
	char errmsg[sizeof(((amora *)0)->errmsg)];
	struct scan_bound lo, hi;  /* the range: prefix and bounds intersected */
	uint8_t last[AMORA_KEY_MAX];
};

/* amora_iter_open's one block keeps each part aligned. */
_Static_assert(sizeof(struct amora_iter) % 8 == 0 && sizeof(struct scan_shard) % 8 == 0 &&
		       sizeof(struct scan_key) % 8 == 0,
	       "parts of the iterator's block are 8-aligned");

/* The key order: unsigned bytes, memcmp then length (as the skip list). */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;

	if (c)
		return c < 0 ? -1 : 1;
	return (alen > blen) - (alen < blen);
}

/* ---------- the range ---------- */

static int check_bound(amora *db, const char *what, const void *key, size_t len, int mode)
{
	if (mode < AMORA_BOUND_OPEN || mode > AMORA_BOUND_EXCLUSIVE)
		return client_fail(db, AMORA_EINVAL, "%s mode %d is not an enum amora_bound", what, mode);
	if (mode == AMORA_BOUND_OPEN)
		return AMORA_OK;
	if (key == NULL && len > 0)
		return client_fail(db, AMORA_EINVAL, "%s is NULL with length %zu", what, len);
	if (len > AMORA_KEY_MAX)
		return client_fail(db, AMORA_EINVAL, "%s is %zu bytes, the limit is %u", what, len,
				   AMORA_KEY_MAX);
	return AMORA_OK;
}

static void bound_set(struct scan_bound *b, int mode, const void *key, size_t len)
{
	b->mode = mode;
	b->len = mode == AMORA_BOUND_OPEN ? 0 : (uint32_t)len;
	if (b->len)
		memcpy(b->key, key, b->len);
}

/* cmp of two bounds' keys, both not open. */
static int bound_cmp(const struct scan_bound *a, const struct scan_bound *b)
{
	return key_cmp(a->key, a->len, b->key, b->len);
}

/* Narrow lower bound *b to also satisfy (mode, key): the larger key wins,
 * exclusive on a tie. Upper (upper=true): the smaller key wins. */
static void bound_narrow(struct scan_bound *b, int mode, const void *key, size_t len, bool upper)
{
	int c;

	if (mode == AMORA_BOUND_OPEN)
		return;
	if (b->mode == AMORA_BOUND_OPEN) {
		bound_set(b, mode, key, len);
		return;
	}
	c = key_cmp(key, len, b->key, b->len);
	if (upper ? c < 0 : c > 0)
		bound_set(b, mode, key, len);
	else if (c == 0 && mode == AMORA_BOUND_EXCLUSIVE)
		b->mode = mode;
}

/* The keys starting with p are [p, succ(p)): succ strips trailing 0xff
 * bytes and adds 1 to the last byte left; none left (p all 0xff): no upper
 * bound. Writes succ into out, returns its length (0: none). */
static size_t prefix_succ(const uint8_t *p, size_t len, uint8_t *out)
{
	while (len > 0 && p[len - 1] == 0xff)
		len--;
	if (len == 0)
		return 0;
	memcpy(out, p, len);
	out[len - 1]++;
	return len;
}

/* Whether the normalised range holds no key. */
static bool range_empty(const struct amora_iter *it)
{
	int c;

	if (it->lo.mode == AMORA_BOUND_OPEN || it->hi.mode == AMORA_BOUND_OPEN)
		return false;
	c = bound_cmp(&it->lo, &it->hi);
	return c > 0 || (c == 0 && (it->lo.mode == AMORA_BOUND_EXCLUSIVE || it->hi.mode == AMORA_BOUND_EXCLUSIVE));
}

/* ---------- errors ---------- */

/* End the iterator with db->errmsg's failure: later calls repeat it. */
static int iter_fail(struct amora_iter *it, int code)
{
	it->err = code;
	memcpy(it->errmsg, it->db->errmsg, sizeof(it->errmsg));
	return code;
}

static int corrupt(struct amora_iter *it, uint32_t s, int rc)
{
	client_fail(it->db, AMORA_ECORRUPT, "shard %u's sorted index failed validation: %s", it->sh[s].id,
		    shm_strerror(rc));
	return iter_fail(it, AMORA_ECORRUPT);
}

/* ---------- the merge ---------- */

/* The merge is a tree of losers (Knuth, TAOCP vol. 3, 5.4.1) over the n
 * shards scanned: shard s is leaf n + s, the parent of node p is p / 2,
 * tree[p] (1 <= p < n) holds the shard that lost the match at p, and win
 * the one that won them all. When the winner's cursor steps, its new key
 * plays one match per level on the way up: ceil(log2 n) comparisons (a
 * binary heap takes two per level), mostly of two integers (scan_key). An
 * ended shard loses every match. */

/* A key as keys[] holds it (scan order: complemented for reverse). */
static struct scan_key scan_key_of(const struct amora_iter *it, const uint8_t *key, uint32_t len)
{
	uint64_t flip = it->reverse ? ~0ULL : 0;

	return (struct scan_key){ shm_skip_key_word(key, len) ^ flip,
				  (len > 8 ? shm_skip_key_word(key + 8, len - 8) : 0) ^ flip };
}

/* keys[s] after shard s's cursor moved: rc is what the move returned
 * (SHM_OK: sh[s].kv holds its entry; SHM_ENOTFOUND: it is at its end,
 * and the shard ended). Returns rc. */
static int shard_moved(struct amora_iter *it, uint32_t s, int rc)
{
	if (rc == SHM_OK) {
		it->keys[s] = scan_key_of(it, it->sh[s].kv.key, it->sh[s].kv.klen);
	} else if (rc == SHM_ENOTFOUND) {
		it->sh[s].ended = true;
		it->keys[s] = (struct scan_key){ ~0ULL, ~0ULL };
	}
	return rc;
}

/* cmp in scan order of key a (words ka) and key b (words kb). */
static int scan_cmp(const struct amora_iter *it, const struct scan_key *ka, const uint8_t *a, uint32_t alen,
		    const struct scan_key *kb, const uint8_t *b, uint32_t blen)
{
	int c;

	if (ka->k0 != kb->k0)
		return ka->k0 < kb->k0 ? -1 : 1;
	if (ka->k1 != kb->k1)
		return ka->k1 < kb->k1 ? -1 : 1;
	c = key_cmp(a, alen, b, blen);
	return it->reverse ? -c : c;
}

/* tree_before when the words tie. */
static bool tree_tie(const struct amora_iter *it, uint32_t a, uint32_t b)
{
	const struct scan_key *x = &it->keys[a], *y = &it->keys[b];

	if (it->sh[a].ended || it->sh[b].ended)
		return !it->sh[a].ended;
	return scan_cmp(it, x, it->sh[a].kv.key, it->sh[a].kv.klen, y, it->sh[b].kv.key, it->sh[b].kv.klen) < 0;
}

/* far_k: the far end of the range (hi forward, lo reverse) as keys[]. */
static void far_end(struct amora_iter *it)
{
	const struct scan_bound *b = it->reverse ? &it->lo : &it->hi;

	it->far_k = scan_key_of(it, b->key, b->len);
}

/* Whether shard s's key lies beyond the far end of the range (the near
 * end is the seek's). */
static bool past_end(const struct amora_iter *it, uint32_t s)
{
	const struct scan_bound *b = it->reverse ? &it->lo : &it->hi;
	int c;

	if (b->mode == AMORA_BOUND_OPEN)
		return false;
	c = scan_cmp(it, &it->keys[s], it->sh[s].kv.key, it->sh[s].kv.klen, &it->far_k, b->key, b->len);
	return c > 0 || (c == 0 && b->mode == AMORA_BOUND_EXCLUSIVE);
}

/* Whether shard a's entry comes before shard b's; ended ones last. */
static inline __attribute__((always_inline)) bool tree_before(const struct amora_iter *it, uint32_t a, uint32_t b)
{
	const struct scan_key *x = &it->keys[a], *y = &it->keys[b];

	if (x->k0 != y->k0)
		return x->k0 < y->k0;
	if (x->k1 != y->k1)
		return x->k1 < y->k1;
	return tree_tie(it, a, b);
}

/* Play every match from the leaves up (n - 1 of them). */
static void tree_build(struct amora_iter *it)
{
	uint32_t n = it->n, *w = it->work;

	for (uint32_t s = 0; s < n; s++)
		w[n + s] = s;
	for (uint32_t p = n - 1; p >= 1; p--) {
		uint32_t a = w[2 * p], b = w[2 * p + 1];
		bool ab = tree_before(it, a, b);

		w[p] = ab ? a : b;
		it->tree[p] = ab ? b : a;
	}
	it->win = n > 1 ? w[1] : 0;
}

/* Shard s (the winner) has a new key: replay its way up. */
static void tree_replay(struct amora_iter *it, uint32_t s)
{
	for (uint32_t p = (it->n + s) / 2; p >= 1; p /= 2)
		if (tree_before(it, it->tree[p], s)) {
			uint32_t t = it->tree[p];

			it->tree[p] = s;
			s = t;
		}
	it->win = s;
}

/* ---------- sections ---------- */

static void sleep_1ms(void)
{
	struct timespec ts = { 0, 1000000 };

	nanosleep(&ts, NULL);
}

/* Enter a read section in which every shard still scanned shows an index:
 * sh[s].cur gets its index_off. A shard building its index (index_off 0,
 * sorted 1) is waited for outside the section. Errors: AMORA_EFAILED (a
 * FAILED shard without an index), AMORA_ETIMEDOUT. */
static int section_enter(struct amora_iter *it)
{
	amora *db = it->db;
	uint64_t start = shm_now_ns();

	for (;;) {
		const struct shm_shard *sh = NULL;
		uint32_t s;

		shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
		for (s = 0; s < it->n; s++) {
			if (it->sh[s].ended)
				continue;
			sh = shm_shard_at(&db->seg, it->sh[s].id);
			/* acquire: pairs with the shard's release store of
			 * index_off, so the list's head is seen whole. */
			it->sh[s].cur = atomic_load_explicit(&sh->index_off, memory_order_acquire);
			if (it->sh[s].cur == 0)
				break;
		}
		if (s == it->n)
			return AMORA_OK;
		shm_epoch_leave(&db->hdr->epoch);
		if (client_shard_stopped(sh))
			return client_fail_shard_stopped(db, it->sh[s].id);
		if (shm_now_ns() - start > (uint64_t)db->timeout_ms * 1000000ull)
			return client_fail(db, AMORA_ETIMEDOUT,
					   "shard %u is building its sorted index (still none after %d ms)",
					   it->sh[s].id, db->timeout_ms);
		sleep_1ms();
	}
}

/* Load the entry every cursor stands on (after a seek; or, resuming where
 * it stood, its node may point at a newer record of the same key now),
 * then the merge's tree. */
static int load_all(struct amora_iter *it)
{
	for (uint32_t s = 0; s < it->n; s++) {
		int rc;

		if (it->sh[s].ended)
			it->keys[s] = (struct scan_key){ ~0ULL, ~0ULL };
		else if ((rc = shard_moved(it, s, shm_skip_cursor_get(&it->db->seg, &it->sh[s].c, &it->sh[s].kv))) !=
				 SHM_OK &&
			 rc != SHM_ENOTFOUND)
			return corrupt(it, s, rc);
	}
	tree_build(it);
	return AMORA_OK;
}

/* Every shard ended: nothing to merge. */
static int end_all(struct amora_iter *it)
{
	for (uint32_t s = 0; s < it->n; s++)
		it->sh[s].ended = true;
	return load_all(it);
}

/* Seek every cursor still scanning, in lock-step so that their cache
 * misses overlap: to the near end of the range, or just past the last key
 * merged. Then load each one's entry. */
static int seek_all(struct amora_iter *it)
{
	const struct shm_seg *seg = &it->db->seg;
	const struct scan_bound *near = it->reverse ? &it->hi : &it->lo;
	const uint8_t *key = NULL;
	uint32_t klen = 0, pending = 0, *act = it->work;
	bool inclusive = true;
	int rc;

	if (it->have_last) {
		key = it->last;
		klen = it->last_len;
		inclusive = false;
	} else if (near->mode != AMORA_BOUND_OPEN && near->len > 0) {
		key = near->key;
		klen = near->len;
		inclusive = near->mode == AMORA_BOUND_INCLUSIVE;
	} else if (near->mode == AMORA_BOUND_EXCLUSIVE) {
		/* exclusive of "": forward, every key; reverse, none */
		if (it->reverse)
			return end_all(it);
	} else if (near->mode == AMORA_BOUND_INCLUSIVE && it->reverse) {
		/* reverse from "" inclusive: no key is <= "" */
		return end_all(it);
	}
	for (uint32_t s = 0; s < it->n; s++) {
		struct shm_skip_view v;

		if (it->sh[s].ended)
			continue;
		if ((rc = shm_skip_view(seg, it->sh[s].cur, &v)) != SHM_OK)
			return corrupt(it, s, rc);
		it->sh[s].index_off = it->sh[s].cur;
		shm_skip_seek_start(&it->sh[s].c, &v, key, klen, inclusive, it->reverse);
		act[pending++] = s;
	}
	/* Round after round over the seeks not done yet (each leaves once
	 * done; the order of the rest does not matter). */
	while (pending > 0) {
		for (uint32_t i = 0; i < pending;) {
			uint32_t s = act[i];

			rc = shm_skip_seek_step(seg, &it->sh[s].c);
			if (rc < 0)
				return corrupt(it, s, rc);
			if (rc == 1)
				i++;
			else
				act[i] = act[--pending];
		}
	}
	return load_all(it);
}


/* Room for `more` bytes and one more entry. Errors: AMORA_ESYS. */
static int buffer_room(struct amora_iter *it, size_t more)
{
	/* Small at first, doubling: a short scan (a seek + 10) allocates
	 * little, a long one reaches its batch size in a few steps. */
	if (it->nents == it->ents_cap) {
		size_t cap = it->ents_cap ? 2 * it->ents_cap : 16;
		struct scan_entry *e = realloc(it->ents, cap * sizeof(*e));

		if (e == NULL)
			return client_fail(it->db, AMORA_ESYS, "out of memory for %zu scan entries", cap);
		it->ents = e;
		it->ents_cap = cap;
	}
	if (it->nbytes + more > it->bytes_cap) {
		size_t cap = it->bytes_cap ? it->bytes_cap : 2048;
		uint8_t *b;

		while (cap < it->nbytes + more)
			cap *= 2;
		if ((b = realloc(it->bytes, cap)) == NULL)
			return client_fail(it->db, AMORA_ESYS, "out of memory for %zu bytes of scan entries", cap);
		it->bytes = b;
		it->bytes_cap = cap;
	}
	return AMORA_OK;
}

/* Prefetching for a forward merge. Each entry costs two dependent misses,
 * its node and the node's record (records lie in write order, not key
 * order: after updates in random order, anywhere), and the merge takes a
 * different shard nearly every time, so a shard's turn comes about once
 * in n entries. Each step of a shard onto node n1 starts what its next
 * turn needs and the one after: n2 := n1.next (n1's line is loaded), then
 * through n2's line (prefetched at the shard's previous step) n2's record
 * and n3's line. Only prefetches: every offset is bounds-checked, and
 * shm_skip_cursor_next validates what it loads. A full scan of 1 M keys
 * (16 B / 100 B) over 64 shards, overwritten in random order: 3.6-4.1 M
 * entries/s with one node ahead and one shard's record round-robin,
 * 4.8-5.0 with this, 5.1-7.1 with the record's third line too (a record
 * of 136 bytes spans three lines when it starts past a line's 56th byte);
 * starting the record two turns ahead gained nothing (4.3-6.4). */
static const struct shm_skip_node *node_after(const struct shm_seg *seg, const struct shm_skip_node *n)
{
	return shm_ptr(seg, (uint64_t)atomic_load_explicit(&n->next[0], memory_order_relaxed) << 4,
		       sizeof(*n) + 4);
}

static void prefetch_ahead(const struct amora_iter *it, uint32_t stepped)
{
	const struct shm_seg *seg = &it->db->seg;
	const struct shm_skip_node *n1, *n2, *n3;
	const uint8_t *r;

	if (it->sh[stepped].ended || (n1 = shm_ptr(seg, it->sh[stepped].c.node, sizeof(*n1) + 4)) == NULL ||
	    (n2 = node_after(seg, n1)) == NULL)
		return;
	/* 192: three lines, all in the segment (a record near its end: none). */
	r = shm_ptr(seg, (uint64_t)atomic_load_explicit(&n2->rec, memory_order_relaxed) << 4, 192);
	if (r != NULL) {
		__builtin_prefetch(r);
		__builtin_prefetch(r + 64);
		__builtin_prefetch(r + 128);
	}
	if ((n3 = node_after(seg, n2)) != NULL)
		__builtin_prefetch(n3);
}

/* The last key merged: the buffer's last entry, else the previous
 * batch's (have_last). */
static const uint8_t *last_key(const struct amora_iter *it, uint32_t *len)
{
	if (it->nents == 0) {
		*len = it->last_len;
		return it->last;
	}
	*len = it->ents[it->nents - 1].klen;
	return it->bytes + it->ents[it->nents - 1].koff;
}

/* Copy shard s's entry into the buffer. Errors: AMORA_ESYS. */
static int buffer_put(struct amora_iter *it, uint32_t s, const struct shm_kv *kv)
{
	size_t vlen = it->keys_only ? 0 : kv->vlen;
	struct scan_entry *e;
	int rc;

	if ((rc = buffer_room(it, kv->klen + vlen)) != AMORA_OK)
		return rc;
	e = &it->ents[it->nents++];
	e->koff = it->nbytes;
	e->klen = kv->klen;
	memcpy(it->bytes + it->nbytes, kv->key, kv->klen);
	it->nbytes += kv->klen;
	e->voff = it->nbytes;
	e->vlen = (uint32_t)vlen;
	if (vlen)
		memcpy(it->bytes + it->nbytes, kv->val, vlen);
	it->nbytes += vlen;
	it->last_k = it->keys[s];
	it->have_last = true;
	return AMORA_OK;
}

/* ---------- atomic batches: what an iterator sees ---------- */

/* The handle's oldest open iterator's start + 1, for the shards
 * (iter_start, shm/epoch.h); 0 with none open. */
static void iters_publish(amora *db)
{
	struct amora_iter *o = db->iters;

	/* Release, inside a section for a new iterator (see begin): a shard
	 * that waited for the section's end reads it. */
	atomic_store_explicit(&db->hdr->epoch.iter_start, o != NULL ? o->start + 1 : 0, memory_order_release);
}

/* In its first section: take the start number and publish it. Later
 * iterators start later: appending keeps db->iters sorted. */
static void iter_begin(struct amora_iter *it)
{
	amora *db = it->db;
	struct amora_iter *last = db->iters;

	it->start = shm_batch_start(&db->seg);
	it->started = true;
	while (last != NULL && last->newer != NULL)
		last = last->newer;
	it->older = last;
	if (last != NULL)
		last->newer = it;
	else
		db->iters = it;
	iters_publish(db);
}

static void iter_end(struct amora_iter *it)
{
	amora *db = it->db;

	if (!it->started)
		return;
	if (it->older != NULL)
		it->older->newer = it->newer;
	else
		db->iters = it->newer;
	if (it->newer != NULL)
		it->newer->older = it->older;
	iters_publish(db);
}

/* Inside the section: merge up to a batch into the buffer. */
static int merge_batch(struct amora_iter *it)
{
	const struct shm_seg *seg = &it->db->seg;
	size_t want = it->batch;
	int rc;

	if (it->limit > 0 && it->limit - it->returned < want)
		want = (size_t)(it->limit - it->returned);
	while (it->nents < want) {
		uint32_t s = it->win, llen;
		struct shm_kv kv = it->sh[s].kv;
		const uint8_t *last;

		if (it->sh[s].ended || past_end(it, s)) {
			/* the nearest key of all is out: so are the rest */
			it->done = true;
			return AMORA_OK;
		}
		/* The version this iterator sees (an intent's, its prev's, or
		 * none: the key is skipped). */
		rc = shm_kv_settle(seg, &kv, it->start);
		if (rc != SHM_OK && rc != SHM_ENOTFOUND)
			return corrupt(it, s, rc);
		if (rc == SHM_OK && it->nents > 0 &&
		    it->nbytes + kv.klen + (it->keys_only ? 0 : kv.vlen) > SCAN_BYTES_MAX)
			return AMORA_OK;
		/* Shards hold disjoint keys and each walks in strict order, so
		 * an entry not beyond the last one is damage (or a bug). */
		if (it->have_last) {
			last = last_key(it, &llen);
			if (scan_cmp(it, &it->keys[s], kv.key, kv.klen, &it->last_k, last, llen) <= 0)
				return corrupt(it, s, SHM_ECORRUPT);
		}
		if (rc == SHM_OK && (rc = buffer_put(it, s, &kv)) != AMORA_OK)
			return iter_fail(it, rc);
		rc = shard_moved(it, s, shm_skip_cursor_next(seg, &it->sh[s].c, &it->sh[s].kv));
		if (rc != SHM_OK && rc != SHM_ENOTFOUND)
			return corrupt(it, s, rc);
		if (!it->reverse)
			prefetch_ahead(it, s);
		tree_replay(it, s);
	}
	return AMORA_OK;
}

/* Fill the buffer: one read section. */
static int refill(struct amora_iter *it)
{
	amora *db = it->db;
	bool resume;
	int rc;

	it->nents = it->next = it->nbytes = 0;
	if ((rc = section_enter(it)) != AMORA_OK)
		return iter_fail(it, rc);
	/* After enter (and its fence): see "Resuming" above. */
	resume = it->positioned &&
		 atomic_load_explicit(&db->seg.hdr->global_epoch, memory_order_acquire) == it->epoch;
	for (uint32_t s = 0; resume && s < it->n; s++)
		resume = it->sh[s].ended || it->sh[s].index_off == it->sh[s].cur;
	it->epoch = atomic_load_explicit(&db->hdr->epoch.epoch, memory_order_relaxed);
	it->positioned = true;
	if (!it->started)
		iter_begin(it);
	rc = resume ? load_all(it) : seek_all(it);
	if (rc == AMORA_OK)
		rc = merge_batch(it);
	shm_epoch_leave(&db->hdr->epoch);
	/* The batch's last key, where a re-seek starts (a copy: the buffer
	 * is refilled first). */
	if (it->nents > 0) {
		const struct scan_entry *e = &it->ents[it->nents - 1];

		memcpy(it->last, it->bytes + e->koff, e->klen);
		it->last_len = e->klen;
	}
	if (it->batch < SCAN_BATCH_MAX)
		it->batch *= 2;
	return rc;
}

/* ---------- the API ---------- */

int amora_iter_open(amora *db, const struct amora_range *r, amora_iter **out)
{
	static const struct amora_range all;
	struct amora_iter *it;
	uint32_t first = 0, n;
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	if (out == NULL)
		return client_fail(db, AMORA_EINVAL, "out is NULL");
	*out = NULL;
	if (r == NULL)
		r = &all;
	if (r->prefix == NULL && r->prefix_len > 0)
		return client_fail(db, AMORA_EINVAL, "prefix is NULL with length %zu", r->prefix_len);
	if (r->prefix_len > AMORA_KEY_MAX)
		return client_fail(db, AMORA_EINVAL, "prefix is %zu bytes, the limit is %u", r->prefix_len,
				   AMORA_KEY_MAX);
	if ((rc = check_bound(db, "start", r->start, r->start_len, r->start_mode)) != AMORA_OK ||
	    (rc = check_bound(db, "end", r->end, r->end_len, r->end_mode)) != AMORA_OK)
		return rc;
	if (r->start_mode != AMORA_BOUND_OPEN && r->end_mode != AMORA_BOUND_OPEN &&
	    key_cmp(r->start, r->start_len, r->end, r->end_len) > 0)
		return client_fail(db, AMORA_EINVAL, "start is after end in key order");

	/* One shard when the prefix holds a whole hash tag and keys are
	 * placed by tag: every key with the prefix has that tag. */
	n = db->shards;
	if (db->placement == SHM_PLACE_TAGS && r->prefix_len > 0) {
		size_t tlen;

		if (shm_key_tag(r->prefix, r->prefix_len, &tlen) != NULL) {
			first = shm_place(r->prefix, r->prefix_len, shm_hash(r->prefix, r->prefix_len), db->shards,
					  db->placement);
			n = 1;
		}
	}
	for (uint32_t s = first; s < first + n; s++)
		if (atomic_load_explicit(&shm_shard_at(&db->seg, s)->sorted, memory_order_relaxed) == 0)
			return client_fail(db, AMORA_ENOTSUP,
					   "the store runs without a sorted index (amorad --sorted-index off)");

	/* One block: the iterator, then sh[n], keys[n], tree[n], work[2n]. */
	if ((it = malloc(sizeof(*it) + n * (sizeof(*it->sh) + sizeof(*it->keys) + 3 * sizeof(*it->tree)))) ==
	    NULL)
		return client_fail(db, AMORA_ESYS, "out of memory for an iterator over %u shards", n);
	memset(it, 0, offsetof(struct amora_iter, errmsg));
	it->sh = (struct scan_shard *)(it + 1);
	it->keys = (struct scan_key *)(it->sh + n);
	it->tree = (uint32_t *)(it->keys + n);
	it->work = it->tree + n;
	memset(it->sh, 0, n * sizeof(*it->sh));
	it->db = db;
	it->n = n;
	for (uint32_t i = 0; i < n; i++)
		it->sh[i].id = first + i;
	it->reverse = r->reverse != 0;
	it->keys_only = r->keys_only != 0;
	it->limit = r->limit;
	it->batch = SCAN_BATCH_MIN;
	bound_set(&it->lo, r->start_mode, r->start, r->start_len);
	bound_set(&it->hi, r->end_mode, r->end, r->end_len);
	if (r->prefix_len > 0) {
		uint8_t succ[AMORA_KEY_MAX];
		size_t slen = prefix_succ(r->prefix, r->prefix_len, succ);

		bound_narrow(&it->lo, AMORA_BOUND_INCLUSIVE, r->prefix, r->prefix_len, false);
		if (slen > 0)
			bound_narrow(&it->hi, AMORA_BOUND_EXCLUSIVE, succ, slen, true);
	}
	it->done = range_empty(it);
	far_end(it);
	*out = it;
	return AMORA_OK;
}

int amora_iter_next(amora_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
	const struct scan_entry *e;
	int rc;

	if (it == NULL)
		return AMORA_EINVAL;
	if (key == NULL || klen == NULL)
		return client_fail(it->db, AMORA_EINVAL, "%s is NULL", key == NULL ? "key" : "klen");
	if (it->err) {
		memcpy(it->db->errmsg, it->errmsg, sizeof(it->errmsg));
		return it->err;
	}
	if (it->next == it->nents) {
		if (it->done || (it->limit > 0 && it->returned >= it->limit))
			return 0;
		if ((rc = refill(it)) != AMORA_OK)
			return rc;
		if (it->nents == 0)
			return 0;
	}
	e = &it->ents[it->next++];
	it->returned++;
	*key = it->bytes + e->koff;
	*klen = e->klen;
	if (val)
		*val = it->keys_only ? NULL : it->bytes + e->voff;
	if (vlen)
		*vlen = e->vlen;
	return 1;
}

void amora_iter_close(amora_iter *it)
{
	if (it == NULL)
		return;
	iter_end(it);
	free(it->ents);
	free(it->bytes);
	free(it);
}

int amora_count(amora *db, const struct amora_range *r, uint64_t *n)
{
	struct amora_range kr = r ? *r : (struct amora_range){ 0 };
	const void *k;
	size_t kl;
	amora_iter *it;
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	if (n == NULL)
		return client_fail(db, AMORA_EINVAL, "n is NULL");
	*n = 0;
	kr.keys_only = 1;
	if ((rc = amora_iter_open(db, &kr, &it)) != AMORA_OK)
		return rc;
	while ((rc = amora_iter_next(it, &k, &kl, NULL, NULL)) == 1)
		(*n)++;
	amora_iter_close(it);
	return rc;
}

int amora_has_prefix(amora *db, const void *prefix, size_t len)
{
	struct amora_range r = { .prefix = prefix, .prefix_len = len, .limit = 1 };
	uint64_t n;
	int rc = amora_count(db, &r, &n);

	return rc < 0 ? rc : n > 0;
}
