/*
 * shard.c — set, delete and get on one shard (shard.h).
 *
 * The order of a set is what keeps readers safe and failures clean:
 *   1. allocate and fill the new record (invisible to readers);
 *   2. make sure the table has room for it and every write staged before
 *      it, rebuilding it aside if not;
 *   3. reserve room on the retire list for the record it may replace (can
 *      fail: then undo 1). Steps 1-3 are the staging;
 *   4. publish: queue the replaced record (cannot fail now), one release
 *      store of the slot (and control byte).
 * Every step that can fail comes before the publication, so a failed set
 * leaves the visible contents unchanged; and since a publication cannot
 * fail, the caller can log a staged write first and publish it after
 * (shardd: publish after the log).
 *
 * Growth sizes the rebuilt table for 10 keys per 16-slot group (5/8
 * full), so at least 1/4 of the slots are consumed by inserts or deletes
 * before the next rebuild (at 7/8): its O(n) cost is amortised over O(n)
 * writes. A table that filled with live keys grows 1.4x (14 keys a group
 * become 10), since a table may have any number of groups (table.h): the
 * table memory per key stays between 9 and 14.4 bytes, where doubling
 * gave 9 to 18 (and powers of two with a 7-key sizing, which quadrupled a
 * table one key past full, up to 36). A rebuild also drops tombstones,
 * and may shrink the table when most keys were deleted.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "shm/batch.h"
#include "shm/shard.h"
#include "shm/shard_index.h"

#define KEYS_PER_GROUP_AFTER_REBUILD 10
/* A table sized for an expected key count holds it at 3/4 load: below the
 * 7/8 limit, so the expected keys fit without a rebuild, and dense, since
 * the smaller the table the more of it stays in cache. */
#define KEYS_PER_GROUP_EXPECTED 12

static uint64_t groups_for(uint64_t keys, uint64_t per_group)
{
	if (keys > SHM_MAX_SIZE / 16) /* more than any segment holds */
		keys = SHM_MAX_SIZE / 16;
	uint64_t g = (keys + per_group - 1) / per_group;

	return g < SHM_TABLE_MIN_GROUPS ? SHM_TABLE_MIN_GROUPS : g;
}

static struct shm_table *table(const struct shm_writer *w)
{
	return (struct shm_table *)(w->seg->base + w->table_off);
}

/* Whether inserts keep the Bloom filter: while readers use it. bloom_on
 * is ours to write, so a relaxed load sees our own last store; it lives in
 * the shard descriptor, so a restarted writer goes on as the last did. */
static bool bloom_kept(const struct shm_writer *w)
{
	return atomic_load_explicit(&w->sh->bloom_on, memory_order_relaxed) != 0;
}

/* Make `off` the shard's table (one release store: readers mid-lookup
 * finish on the previous one). */
static void set_table(struct shm_writer *w, uint64_t off)
{
	atomic_fetch_add(&w->tables, 1); /* before the store: a walker that
					  * loads the new table_off, then
					  * `tables`, sees the bump */
	w->table_off = off;
	atomic_store_explicit(&w->sh->table_off, off, memory_order_release);
}

static int writer_init(struct shm_writer *w, struct shm_seg *seg, uint32_t index)
{
	memset(w, 0, sizeof(*w));
	w->seg = seg;
	w->sh = shm_shard_at(seg, index);
	if (w->sh == NULL)
		return SHM_EINVAL;
	shm_retire_init(&w->retired);
	w->rng = 0x9e3779b97f4a7c15ULL * (index + 1);
	return SHM_OK;
}

/* The table a previous writer left, if readers may use it and it is a
 * block of this shard; 0 otherwise. */
static uint64_t table_left(struct shm_writer *w)
{
	uint64_t off = atomic_load_explicit(&w->sh->table_off, memory_order_acquire);
	const struct shm_table *t = shm_ptr(w->seg, off, sizeof(*t));
	struct shm_table_view v;

	if (off == 0 || t == NULL || shm_table_view(w->seg, off, &v) != SHM_OK ||
	    shm_chunk_owner(w->seg, off) != w->sh->id + 1)
		return 0;
	return off;
}


/* An intent's prev, if it has one, passes a reader's checks and is no
 * intent itself (record.h). */
static bool prev_valid(const struct shm_writer *w, const struct shm_kv *kv)
{
	struct shm_kv pv;

	return kv->intent == NULL || shm_intent_prev(kv) == 0 ||
	       (shm_record_view(w->seg, shm_intent_prev(kv), &pv) == SHM_OK && pv.intent == NULL);
}

/* List a record, and an intent's prev with it (same slot position: the
 * slot goes if either fails the slab's check). prev_valid said yes. */
static int live_add_kv(const struct shm_writer *w, struct shm_live_set *l, const struct shm_kv *kv,
		       shm_slot_pos pos)
{
	int rc = shm_live_add(l, kv->off, shm_kv_bytes(kv), pos);
	struct shm_kv pv;

	if (rc != SHM_OK || kv->intent == NULL || shm_intent_prev(kv) == 0 ||
	    shm_record_view(w->seg, shm_intent_prev(kv), &pv) != SHM_OK)
		return rc;
	return shm_live_add(l, pv.off, shm_kv_bytes(&pv), pos);
}

/* Every block the table at `off` references, and the table itself. A
 * record that fails a reader's checks is not listed: its slot is deleted. */
static int live_collect(struct shm_writer *w, uint64_t off, struct shm_live_set *l)
{
	struct shm_table *t = (struct shm_table *)(w->seg->base + off);
	struct shm_table_view v;
	int rc = shm_table_view(w->seg, off, &v);

	for (uint64_t g = 0; rc == SHM_OK && g < v.ngroups; g++) {
		for (int i = 0; rc == SHM_OK && i < SHM_GROUP_SLOTS; i++) {
			shm_slot_pos pos = g * SHM_GROUP_SLOTS + (uint64_t)i;
			struct shm_kv kv;
			uint64_t rec;

			if (atomic_load_explicit(&v.groups[g].ctrl[i], memory_order_relaxed) & 0x80)
				continue;
			rec = shm_table_record(w->seg, t, pos);
			if (shm_record_view(w->seg, rec, &kv) != SHM_OK || !prev_valid(w, &kv))
				shm_table_delete_at(w->seg, t, pos);
			else
				rc = live_add_kv(w, l, &kv, pos);
		}
	}
	return rc == SHM_OK ? shm_live_add(l, off, t->bytes, SHM_LIVE_TABLE) : rc;
}

/* Bump the epoch, let the owner list readers that appeared, wait for
 * those inside a read section to leave (shm_readers). */
static void writer_quiesce(struct shm_writer *w)
{
	uint64_t e = shm_epoch_bump(w->seg->hdr);

	if (w->refresh != NULL)
		w->refresh(w->refresh_arg);
	shm_epoch_wait(w->readers, w->nreaders, e);
}

/* Step 2b of shm_writer_open: the index, its blocks checked with the
 * others (`dropped` were dropped before it) before anything of it is
 * written: one that overlaps anything or lies outside the shard's chunks
 * is unpublished and not kept; else it is repaired. */
static int adopt_index(struct shm_writer *w, struct shm_live_set *l, size_t dropped)
{
	struct shm_index_found f = { 0 };
	size_t n = l->n, kept = 0;
	int rc = shm_index_adopt(w, l, &f);

	if (rc != SHM_OK || l->n == n) {
		free(f.v);
		return rc;
	}
	if (shm_slab_check(w->seg, &w->sh->slab, l->v, l->n) == dropped) {
		shm_index_repair(w, l, &f);
		free(f.v);
		return SHM_OK;
	}
	free(f.v);
	shm_index_unpublish(w);
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].tag != SHM_LIVE_INDEX)
			l->v[kept++] = l->v[i];
	l->n = kept;
	shm_slab_check(w->seg, &w->sh->slab, l->v, l->n);
	return SHM_OK;
}

/* Steps 2-5 of shm_writer_open for the table at *off (0: none): on return
 * *off is the table kept, 0 if it could not be. */
static int adopt(struct shm_writer *w, uint64_t *off, size_t *dropped)
{
	struct shm_table *t = (struct shm_table *)(w->seg->base + *off);
	struct shm_live_set l = { 0 };

	if (*off != 0 && live_collect(w, *off, &l) != SHM_OK) {
		free(l.v);
		return SHM_ESYS;
	}
	*dropped = shm_slab_check(w->seg, &w->sh->slab, l.v, l.n);
	for (size_t i = 0; i < l.n && *off != 0; i++) {
		if (l.v[i].dropped && l.v[i].tag == SHM_LIVE_TABLE) {
			set_table(w, 0); /* its memory is not the shard's: keep nothing */
			*off = 0;
			l.n = 0;
		}
	}
	for (size_t i = 0; i < l.n; i++)
		if (l.v[i].dropped)
			shm_table_delete_at(w->seg, t, l.v[i].tag);
	if (*off != 0) {
		w->table_off = *off; /* published already; shm_index_adopt looks keys up in it */
		shm_table_recount(w->seg, t);
	}
	if (adopt_index(w, &l, *dropped) != SHM_OK) {
		free(l.v);
		return SHM_ESYS;
	}
	/* Only now is anything freed: what the dead writer unlinked and what
	 * was just unlinked above is out of every reader's reach. */
	writer_quiesce(w);
	shm_slab_rebuild(w->seg, &w->sh->slab, l.v, l.n);
	free(l.v);
	if (*off != 0)
		shm_table_recount(w->seg, t);
	return SHM_OK;
}

int shm_writer_open(struct shm_writer *w, struct shm_seg *seg, uint32_t index,
		    uint64_t expected_keys, const struct shm_readers *r, size_t *dropped)
{
	size_t lost = 0;
	uint64_t off;
	int rc;

	if (writer_init(w, seg, index) != SHM_OK)
		return SHM_EINVAL;
	if (r != NULL) {
		w->readers = r->slots;
		w->nreaders = r->n;
		w->refresh = r->refresh;
		w->refresh_arg = r->arg;
	}
	off = table_left(w);
	if (off == 0)
		set_table(w, 0);
	rc = adopt(w, &off, &lost);
	if (dropped != NULL)
		*dropped = lost;
	if (rc != SHM_OK)
		return rc;
	if (off == 0) {
		rc = shm_table_create(seg, &w->sh->slab,
				      groups_for(expected_keys, KEYS_PER_GROUP_EXPECTED), bloom_kept(w),
				      &off);
		if (rc != SHM_OK)
			return rc;
	}
	set_table(w, off);
	return SHM_OK;
}

void shm_writer_close(struct shm_writer *w)
{
	shm_writer_reclaim(w);
	shm_retire_destroy(&w->retired);
}

void shm_writer_drain(struct shm_writer *w)
{
	shm_writer_reclaim(w);
	if (w->retired.n == 0)
		return;
	writer_quiesce(w);
	shm_writer_reclaim(w);
}

size_t shm_writer_reclaim(struct shm_writer *w)
{
	w->since_reclaim = 0;
	w->retired_bytes = 0;
	shm_retire_seal(&w->retired, w->seg->hdr);
	if (w->refresh != NULL)
		w->refresh(w->refresh_arg); /* after the bump: see struct shm_readers */
	return shm_retire_collect(&w->retired, w->seg, &w->sh->slab, w->readers, w->nreaders);
}

bool shm_writer_reclaim_wait(struct shm_writer *w)
{
	uint64_t e;

	if (w->retired.n == 0)
		return false;
	if (shm_writer_reclaim(w) > 0)
		return true;
	e = shm_epoch_bump(w->seg->hdr);
	if (w->refresh != NULL)
		w->refresh(w->refresh_arg);
	shm_epoch_wait_for(w->readers, w->nreaders, e, SHM_WRITER_ROOM_WAIT_NS);
	return shm_writer_reclaim(w) > 0;
}

/* Queue a block just unlinked (or about to be) for freeing. */
static int retire(struct shm_writer *w, uint64_t off, uint64_t size)
{
	int rc = shm_retire_push(&w->retired, off, size);

	if (rc == SHM_OK)
		w->retired_bytes += size;
	return rc;
}

/* After a publication: reclaim now and then so the retire list stays
 * short. Never between queueing and unlinking: sealing an item that is
 * still reachable would let a reader that enters afterwards see it freed. */
static void maybe_reclaim(struct shm_writer *w)
{
	if (++w->since_reclaim >= SHM_WRITER_RECLAIM_EVERY ||
	    w->retired_bytes >= SHM_WRITER_RECLAIM_BYTES)
		shm_writer_reclaim(w);
}

/* Rebuild the table with `ngroups` groups, with a Bloom filter area (and
 * the filter filled) if `bloom`. */
static int rebuild(struct shm_writer *w, uint64_t ngroups, bool bloom)
{
	struct shm_table *old = table(w), *t;
	uint64_t old_off = w->table_off;
	uint64_t off;
	int rc;

	rc = shm_table_create(w->seg, &w->sh->slab, ngroups, bloom, &off);
	if (rc != SHM_OK)
		return rc;
	t = (struct shm_table *)(w->seg->base + off);
	rc = shm_table_copy(w->seg, old, t, bloom);
	if (rc == SHM_OK)
		rc = retire(w, old_off, old->bytes);
	if (rc != SHM_OK) {
		shm_slab_free(w->seg, &w->sh->slab, off, t->bytes);
		return rc;
	}
	set_table(w, off);
	return SHM_OK;
}

int shm_writer_rebuild(struct shm_writer *w, uint64_t ngroups)
{
	return rebuild(w, ngroups, bloom_kept(w));
}

/* Room for `more` inserts beyond the table's entries. */
static int make_room(struct shm_writer *w, uint64_t more)
{
	struct shm_table *t = table(w);
	uint64_t live = atomic_load_explicit(&t->live, memory_order_relaxed);

	if (shm_table_has_room(t, more))
		return SHM_OK;
	return shm_writer_rebuild(w, groups_for(live + more, KEYS_PER_GROUP_AFTER_REBUILD));
}

static uint64_t record_bytes(const struct shm_writer *w, uint64_t off)
{
	const struct shm_record *r = (const struct shm_record *)(w->seg->base + off);

	return shm_record_bytes(r->klen, r->vlen);
}

/* Everything a staged write may need at its publication, for it and the
 * writes staged before it: a slot if it may insert (`inserts` counts the
 * staged writes that may), and a place on the retire list (each staged
 * write may retire one record). */
static int reserve(struct shm_writer *w, uint64_t inserts)
{
	/* Before make_room: a rebuild queues the old table, and must not take
	 * a place kept for a write staged before (each may retire a record,
	 * an intent's prev and an index node; +1: that table). */
	int rc = shm_retire_reserve(&w->retired, 3 * (w->staged + 1) + 1);

	return rc == SHM_OK ? make_room(w, inserts) : rc;
}

/* Whether a set of `key`, with no write of it staged before, may insert:
 * a key present now stays present until the set is published. Looked up
 * only when the table is too full to count the set as an insert anyway,
 * so that a full table still takes updates. */
static bool set_may_insert(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h)
{
	shm_slot_pos pos;

	return shm_table_has_room(table(w), w->staged_inserts + 1) ||
	       !shm_table_locate(w->seg, table(w), key, klen, h, &pos);
}

static int stage_set_once(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			  const void *val, uint32_t vlen, const struct shm_staged *prev,
			  struct shm_staged *s)
{
	int rc = shm_record_new(w->seg, &w->sh->slab, key, klen, val, vlen, s->seq, &s->rec);

	if (rc != SHM_OK)
		return rc;
	/* After a staged set the key is present; after a staged delete not. */
	s->insert = prev != NULL ? prev->del : set_may_insert(w, key, klen, h);
	rc = s->insert ? shm_index_stage(w, s->rec, &s->node) : SHM_OK;
	if (rc == SHM_OK)
		rc = reserve(w, w->staged_inserts + s->insert);
	if (rc != SHM_OK) {
		shm_index_unstage(w, s->node);
		shm_slab_free(w->seg, &w->sh->slab, s->rec, shm_record_size(klen, vlen));
		s->node = 0;
	}
	return rc;
}

/* The sequence number of the next write staged: the shard's (that of the
 * last one published) plus those staged since. */
static uint64_t next_seq(const struct shm_writer *w)
{
	return atomic_load_explicit(&w->sh->seq, memory_order_relaxed) + w->staged + 1;
}

int shm_writer_stage_set(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			 const void *val, uint32_t vlen, const struct shm_staged *prev,
			 struct shm_staged *s)
{
	int rc;

	*s = (struct shm_staged){ .seq = next_seq(w), .h = h, .del = false };
	rc = stage_set_once(w, key, klen, h, val, vlen, prev, s);
	if (rc == SHM_ENOMEM && shm_writer_reclaim_wait(w))
		rc = stage_set_once(w, key, klen, h, val, vlen, prev, s);
	if (rc != SHM_OK)
		return rc;
	w->staged++;
	w->staged_inserts += s->insert;
	return SHM_OK;
}

int shm_writer_stage_del(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			 const struct shm_staged *prev, struct shm_staged *s)
{
	struct shm_table *t = table(w);
	shm_slot_pos pos;
	uint64_t rec;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX)
		return SHM_EINVAL;
	if (prev != NULL) {
		if (prev->del)
			return SHM_ENOTFOUND;
		rec = prev->rec; /* what the table will hold once prev is published */
	} else {
		if (!shm_table_locate(w->seg, t, key, klen, h, &pos))
			return SHM_ENOTFOUND;
		rec = shm_table_record(w->seg, t, pos);
	}
	rc = shm_retire_reserve(&w->retired, 3 * (w->staged + 1)); /* its record(s) and node */
	if (rc != SHM_OK)
		return rc;
	*s = (struct shm_staged){ .seq = next_seq(w), .h = h, .rec = rec, .del = true };
	w->staged++;
	return SHM_OK;
}

/* An intent's prev (0: none, or not an intent). The writer's own record. */
static uint64_t intent_prev(const struct shm_writer *w, uint64_t off)
{
	const struct shm_record *r = (const struct shm_record *)(w->seg->base + off);
	uint64_t prev;

	if (!(r->klen & SHM_REC_INTENT))
		return 0;
	memcpy(&prev, r->data + shm_rec_klen(r) + r->vlen, 8);
	return prev;
}

static void retire_rec(struct shm_writer *w, uint64_t off)
{
	int rc = retire(w, off, record_bytes(w, off));

	assert(rc == SHM_OK); /* reserved at staging */
	(void)rc;
}

/* Queue the record slot `pos` holds now, and if it is an intent the prev
 * it kept unless that is `keep`; room was reserved at staging. */
static void retire_slot(struct shm_writer *w, const struct shm_table *t, shm_slot_pos pos, uint64_t keep)
{
	uint64_t old = shm_table_record(w->seg, t, pos), prev = intent_prev(w, old);

	retire_rec(w, old);
	if (prev != 0 && prev != keep)
		retire_rec(w, prev);
}

void shm_writer_prefetch(struct shm_writer *w, const struct shm_staged *s)
{
	shm_table_prefetch_group(w->seg, table(w), s->h);
	shm_index_prefetch(w, s);
}

/* A set, an intent, or a settle that shows a record: s->rec goes into the
 * key's slot (found: it holds `cur`). The index before the table
 * (shard_index.h): a key a get finds is in the index. */
static int publish_rec(struct shm_writer *w, const struct shm_staged *s, struct shm_table *t,
		       bool found, shm_slot_pos pos)
{
	if (!found) {
		if (pos == UINT64_MAX || s->kind == SHM_STAGED_SETTLE)
			return SHM_ECORRUPT; /* room was made at staging; a settle replaces */
		shm_index_publish_set(w, s->node, 0, s->rec);
		shm_table_insert_at(w->seg, t, pos, s->h, s->rec, bloom_kept(w));
		return SHM_OK;
	}
	shm_index_publish_set(w, s->node, shm_table_record(w->seg, t, pos), s->rec);
	/* An intent keeps what it replaces; an aborted one's prev comes back. */
	if (s->kind != SHM_STAGED_INTENT)
		retire_slot(w, t, pos, s->rec);
	shm_table_replace_at(w->seg, t, pos, s->h, s->rec);
	return SHM_OK;
}

int shm_writer_publish(struct shm_writer *w, const struct shm_staged *s)
{
	struct shm_table *t = table(w);
	/* The key's bytes: the new record's, or for a delete those of the
	 * record it removes, for a settle the intent's (linked until now, so
	 * not freed). */
	uint64_t key_rec = s->kind == SHM_STAGED_SETTLE ? s->old : s->rec;
	const struct shm_record *r = (const struct shm_record *)(w->seg->base + key_rec);
	shm_slot_pos pos = 0;
	bool found = false;
	int rc = SHM_OK;

	assert(w->staged > 0 && s->seq == atomic_load_explicit(&w->sh->seq, memory_order_relaxed) + 1);
	if (s->kind != SHM_STAGED_MARK) {
		found = shm_table_locate(w->seg, t, r->data, shm_rec_klen(r), s->h, &pos);
		shm_index_advance(w);
	}
	if (s->kind == SHM_STAGED_MARK) {
		/* a sequence number only */
	} else if (s->del) {
		/* A delete, or a settle that removes the key: after the table
		 * for the index. */
		if (!found || shm_table_record(w->seg, t, pos) != key_rec)
			return SHM_ECORRUPT; /* the caller broke a rule (prev) */
		retire_slot(w, t, pos, 0);
		shm_table_delete_at(w->seg, t, pos);
		shm_index_publish_del(w, key_rec);
	} else {
		bool replaces = s->kind == SHM_STAGED_SETTLE || (s->kind == SHM_STAGED_INTENT && s->old != 0);

		if (replaces && (!found || shm_table_record(w->seg, t, pos) != s->old))
			return SHM_ECORRUPT; /* the caller broke a rule (prev, or a staged write) */
		rc = publish_rec(w, s, t, found, pos);
		if (rc != SHM_OK)
			return rc;
	}
	w->staged--;
	w->staged_inserts -= s->insert;
	/* Release: a reader that loads seq sees the table as of that write. */
	atomic_store_explicit(&w->sh->seq, s->seq, memory_order_release);
	maybe_reclaim(w);
	return SHM_OK;
}

/* ---------- atomic batches (batch.h) ---------- */

/* The record a write of the key would replace: the latest staged write's
 * (prev), or the table's; 0 when the key is absent then. */
static uint64_t current_rec(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			    const struct shm_staged *prev)
{
	shm_slot_pos pos;

	if (prev != NULL)
		return prev->del ? 0 : prev->rec;
	return shm_table_locate(w->seg, table(w), key, klen, h, &pos) ? shm_table_record(w->seg, table(w), pos)
								       : 0;
}

static int stage_intent_once(struct shm_writer *w, const void *key, uint32_t klen, const void *val, uint32_t vlen, bool del, uint64_t ref,
			     struct shm_staged *s)
{
	int rc = shm_record_new_intent(w->seg, &w->sh->slab, key, klen, val, vlen, del, s->old, ref,
				       s->seq, &s->rec);

	if (rc != SHM_OK)
		return rc;
	/* A slot is kept only for a key absent now; its node likewise. */
	s->insert = s->old == 0;
	rc = s->insert ? shm_index_stage(w, s->rec, &s->node) : SHM_OK;
	if (rc == SHM_OK)
		rc = reserve(w, w->staged_inserts + s->insert);
	if (rc != SHM_OK) {
		shm_index_unstage(w, s->node);
		shm_slab_free(w->seg, &w->sh->slab, s->rec, record_bytes(w, s->rec));
		s->node = 0;
	}
	return rc;
}

int shm_writer_stage_intent(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			    const void *val, uint32_t vlen, bool del, uint64_t ref,
			    const struct shm_staged *prev, struct shm_staged *s)
{
	uint64_t cur;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX)
		return SHM_EINVAL;
	cur = current_rec(w, key, klen, h, prev);
	if (cur != 0 && (((const struct shm_record *)(w->seg->base + cur))->klen & SHM_REC_INTENT))
		return SHM_EBUSY;
	if (del && cur == 0)
		return SHM_ENOTFOUND;
	*s = (struct shm_staged){ .seq = next_seq(w), .h = h, .old = cur, .kind = SHM_STAGED_INTENT };
	rc = stage_intent_once(w, key, klen, val, del ? 0 : vlen, del, ref, s);
	if (rc == SHM_ENOMEM && shm_writer_reclaim_wait(w))
		rc = stage_intent_once(w, key, klen, val, del ? 0 : vlen, del, ref, s);
	if (rc != SHM_OK)
		return rc;
	w->staged++;
	w->staged_inserts += s->insert;
	return SHM_OK;
}

int shm_writer_stage_settle(struct shm_writer *w, uint64_t intent, bool commit, struct shm_staged *s)
{
	const struct shm_record *r = (const struct shm_record *)(w->seg->base + intent);
	uint32_t klen = shm_rec_klen(r);
	uint64_t h = shm_hash(r->data, klen), rec = 0;
	bool tomb = (r->klen & SHM_REC_TOMB) != 0;
	int rc;

	if (!(r->klen & SHM_REC_INTENT))
		return SHM_ECORRUPT;
	if (current_rec(w, r->data, klen, h, NULL) != intent)
		return SHM_ENOTFOUND;
	/* The intent, maybe its prev, and a node go on the retire list. */
	rc = shm_retire_reserve(&w->retired, 3 * (w->staged + 1));
	if (rc == SHM_OK && commit && !tomb) {
		rc = shm_record_new(w->seg, &w->sh->slab, r->data, klen, r->data + klen, r->vlen, r->seq, &rec);
		if (rc == SHM_ENOMEM && shm_writer_reclaim_wait(w))
			rc = shm_record_new(w->seg, &w->sh->slab, r->data, klen, r->data + klen, r->vlen,
					    r->seq, &rec);
	} else if (!commit) {
		rec = intent_prev(w, intent);
	}
	if (rc != SHM_OK)
		return rc;
	*s = (struct shm_staged){ .seq = next_seq(w), .h = h, .rec = rec, .old = intent,
				  .kind = SHM_STAGED_SETTLE, .del = rec == 0 };
	w->staged++;
	return SHM_OK;
}

void shm_writer_stage_mark(struct shm_writer *w, struct shm_staged *s)
{
	*s = (struct shm_staged){ .seq = next_seq(w), .kind = SHM_STAGED_MARK };
	w->staged++;
}

int shm_writer_set(struct shm_writer *w, const void *key, uint32_t klen, const void *val,
		   uint32_t vlen)
{
	struct shm_staged s;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX)
		return SHM_EINVAL;
	rc = shm_writer_stage_set(w, key, klen, shm_hash(key, klen), val, vlen, NULL, &s);
	return rc == SHM_OK ? shm_writer_publish(w, &s) : rc;
}

int shm_writer_del(struct shm_writer *w, const void *key, uint32_t klen)
{
	struct shm_staged s;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX)
		return SHM_EINVAL;
	rc = shm_writer_stage_del(w, key, klen, shm_hash(key, klen), NULL, &s);
	return rc == SHM_OK ? shm_writer_publish(w, &s) : rc;
}

int shm_writer_get(struct shm_writer *w, const void *key, uint32_t klen, struct shm_kv *kv)
{
	shm_slot_pos pos;

	if (klen == 0 || klen > SHM_KEY_MAX)
		return SHM_EINVAL;
	if (!shm_table_locate(w->seg, table(w), key, klen, shm_hash(key, klen), &pos))
		return SHM_ENOTFOUND;
	return shm_record_view(w->seg, shm_table_record(w->seg, table(w), pos), kv);
}

int shm_writer_each(struct shm_writer *w, int (*fn)(void *arg, const struct shm_kv *kv), void *arg)
{
	struct shm_table *t = table(w);
	struct shm_table_view v;
	int rc = shm_table_view(w->seg, w->table_off, &v);

	for (uint64_t g = 0; rc == SHM_OK && g < v.ngroups; g++) {
		for (int i = 0; rc == 0 && i < SHM_GROUP_SLOTS; i++) {
			struct shm_kv kv;

			if (atomic_load_explicit(&v.groups[g].ctrl[i], memory_order_relaxed) & 0x80)
				continue;
			if (shm_record_view(w->seg, shm_table_record(w->seg, t, g * SHM_GROUP_SLOTS + (uint64_t)i),
					    &kv) == SHM_OK)
				rc = fn(arg, &kv);
		}
	}
	return rc;
}

int shm_writer_set_bloom(struct shm_writer *w, bool on)
{
	if (on && !bloom_kept(w)) {
		if (table(w)->nblocks == 0) {
			/* The copy fills the new table's filter. */
			int rc = rebuild(w, table(w)->ngroups, true);

			if (rc != SHM_OK)
				return rc;
		} else {
			shm_table_bloom_fill(w->seg, table(w));
		}
	}
	/* Release, pairs with shm_shard_find's load of bloom_on: the filled
	 * filter (and the table that has it) is visible before readers trust
	 * it. */
	atomic_store_explicit(&w->sh->bloom_on, on ? 1 : 0, memory_order_release);
	return SHM_OK;
}

int shm_shard_view(const struct shm_seg *seg, const struct shm_shard *sh,
		   struct shm_table_view *v)
{
	uint64_t toff = atomic_load_explicit(&sh->table_off, memory_order_acquire);

	if (toff == 0)
		return SHM_ENOTFOUND;
	return shm_table_view(seg, toff, v);
}

int shm_shard_find(const struct shm_seg *seg, const struct shm_shard *sh,
		   const struct shm_table_view *v, const void *key, uint32_t klen, uint64_t h,
		   uint64_t s, struct shm_kv *kv)
{
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX)
		return SHM_EINVAL;
	/* Acquire, pairs with shm_writer_set_bloom's release: a filter that
	 * is on was filled before it was turned on. */
	rc = shm_table_find(seg, v, key, klen, h, atomic_load_explicit(&sh->bloom_on, memory_order_acquire),
			    kv);
	return rc == SHM_OK ? shm_kv_settle(seg, kv, s) : rc;
}

int shm_shard_get(const struct shm_seg *seg, const struct shm_shard *sh, const void *key,
		  uint32_t klen, uint64_t h, struct shm_kv *kv)
{
	struct shm_table_view v;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX)
		return SHM_EINVAL;
	rc = shm_shard_view(seg, sh, &v);
	if (rc != SHM_OK)
		return rc;
	return shm_shard_find(seg, sh, &v, key, klen, h, SHM_BATCH_ANY, kv);
}

void shm_shard_stats(const struct shm_seg *seg, uint32_t i, struct shm_shard_stats *out)
{
	const struct shm_shard *sh = shm_shard_at(seg, i);
	const struct shm_shard_counters *c = &sh->ctr;
	struct shm_table_view v;
	struct shm_slab_stats ss;
	const struct shm_table *t;

	memset(out, 0, sizeof(*out));
	/* Acquire, then the cause: stored before FAILED (DESIGN.md §5 #12). */
	out->state = atomic_load_explicit(&sh->state, memory_order_acquire);
	if (out->state == SHM_SHARD_FAILED)
		out->cause = atomic_load_explicit(&sh->cause, memory_order_relaxed);
	out->restarts = atomic_load_explicit(&sh->restarts, memory_order_relaxed);
	if (shm_shard_view(seg, sh, &v) == SHM_OK &&
	    (t = shm_ptr(seg, atomic_load_explicit(&sh->table_off, memory_order_acquire),
			 sizeof(*t))) != NULL)
		out->keys = atomic_load_explicit(&t->live, memory_order_relaxed);
	shm_slab_stats(&sh->slab, &ss);
	out->used_bytes = ss.used_bytes;
	out->requested_bytes = ss.requested_bytes;
	out->w.requests = atomic_load_explicit(&c->requests, memory_order_relaxed);
	out->w.log_writes = atomic_load_explicit(&c->log_writes, memory_order_relaxed);
	out->w.log_records = atomic_load_explicit(&c->log_records, memory_order_relaxed);
	out->w.log_bytes = atomic_load_explicit(&c->log_bytes, memory_order_relaxed);
	out->w.log_syncs = atomic_load_explicit(&c->log_syncs, memory_order_relaxed);
	out->w.batches_committed = atomic_load_explicit(&c->batches_committed, memory_order_relaxed);
	out->w.batches_aborted = atomic_load_explicit(&c->batches_aborted, memory_order_relaxed);
	out->w.batch_parts_recovered = atomic_load_explicit(&c->batch_parts_recovered, memory_order_relaxed);
	out->ck.checkpoints = atomic_load_explicit(&sh->checkpoints, memory_order_relaxed);
	out->ck.seq = atomic_load_explicit(&sh->ckpt_seq, memory_order_relaxed);
	out->ck.bytes = atomic_load_explicit(&sh->ckpt_bytes, memory_order_relaxed);
	out->ck.log_disk = atomic_load_explicit(&sh->log_disk, memory_order_relaxed);
}

void shm_store_stats(const struct shm_seg *seg, struct shm_store_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < seg->hdr->shard_count; i++) {
		struct shm_shard_stats st;

		shm_shard_stats(seg, i, &st);
		out->keys += st.keys;
		out->used_bytes += st.used_bytes;
		out->requested_bytes += st.requested_bytes;
		out->ready += st.state == SHM_SHARD_READY;
		out->failed += st.state == SHM_SHARD_FAILED;
		out->loading += st.state == SHM_SHARD_STARTING || st.state == SHM_SHARD_RESTARTING;
		out->w.requests += st.w.requests;
		out->w.log_writes += st.w.log_writes;
		out->w.log_records += st.w.log_records;
		out->w.log_bytes += st.w.log_bytes;
		out->w.log_syncs += st.w.log_syncs;
		out->w.batches_committed += st.w.batches_committed;
		out->w.batches_aborted += st.w.batches_aborted;
		out->w.batch_parts_recovered += st.w.batch_parts_recovered;
		out->ck.checkpoints += st.ck.checkpoints;
		out->ck.bytes += st.ck.bytes;
		out->ck.log_disk += st.ck.log_disk;
	}
}
