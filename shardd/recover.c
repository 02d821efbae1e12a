/*
 * recover.c — rebuilding a shard at start (recover.h).
 *
 * The table a previous incarnation left is adopted, not rebuilt beside:
 * readers go on using it, and recovery needs no shared memory beyond the
 * live data (shm_writer_open rebuilds the allocator around what the table
 * references, so memory the dead process had retired but not freed comes
 * back). The log is the truth; the table is corrected to match it:
 *
 *   pass 1 (wal_recover): for every key, the seq and op of its last effect
 *          in the log. This index is private memory: 32-byte entries, at
 *          most half full, so 64 to 128 bytes per distinct key the log
 *          holds (checkpoints will bound the log; until then this is the
 *          memory recovery needs beyond the shared segment).
 *   pass 2 (wal_replay): each record that is its key's last effect is
 *          applied unless the table already holds it (same seq): a SET
 *          writes the value, a DEL removes the key.
 *   pass 3: a key in the table that the log does not end with (never
 *          logged, or logged as deleted) is removed. A safeguard: writes
 *          are published only after their log write, so only a log that
 *          lost a write it reported written (a lying disk, the `drop`
 *          fault) leaves such a key.
 *
 * Readers therefore see only corrections during recovery: a key goes from
 * what the dead incarnation had to its last logged value, never through an
 * older one. A record carries the seq it has in the log, so "the table
 * already holds it" is one comparison; after recovery no record carries a
 * seq above the log's last one (pass 2 or 3 replaced it), so seqs handed
 * out afterwards are never confused with an unlogged record's.
 *
 * With --sync none there is no log: the table is adopted as it is.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shardd/log.h"
#include "shardd/recover.h"
#include "shardd/shardd.h"
#include "shm/clock.h"

/* ---------- pass 1: the last effect of each key ---------- */

struct last_effect {
	uint64_t lo, hi; /* XXH3-128 of the key */
	uint64_t seq;    /* 0: empty entry */
	uint64_t op;
};

struct index {
	struct last_effect *e;
	size_t n, cap; /* cap a power of two, at most half full */
};

static struct last_effect *index_slot(const struct index *ix, XXH128_hash_t h)
{
	size_t i = (size_t)h.low64 & (ix->cap - 1);

	while (ix->e[i].seq != 0 && (ix->e[i].lo != h.low64 || ix->e[i].hi != h.high64))
		i = (i + 1) & (ix->cap - 1);
	return &ix->e[i];
}

static int index_grow(struct index *ix)
{
	struct index big = { calloc(ix->cap ? ix->cap * 2 : 4096, sizeof(*big.e)), ix->n,
			     ix->cap ? ix->cap * 2 : 4096 };

	if (big.e == NULL)
		return -1;
	for (size_t i = 0; i < ix->cap; i++) {
		if (ix->e[i].seq == 0)
			continue;
		XXH128_hash_t h = { ix->e[i].lo, ix->e[i].hi };
		*index_slot(&big, h) = ix->e[i];
	}
	free(ix->e);
	*ix = big;
	return 0;
}

static const struct last_effect *index_find(const struct index *ix, const void *key, uint32_t klen)
{
	const struct last_effect *e = index_slot(ix, XXH3_128bits(key, klen));

	return e->seq != 0 ? e : NULL;
}

static int note_effect(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		       const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct index *ix = arg;
	XXH128_hash_t h;
	struct last_effect *e;

	(void)b;
	(void)val;
	(void)vlen;
	if (op >= WALFMT_OP_PSET)
		return 0; /* batch records: issue 12, recovery of batches comes next */
	h = XXH3_128bits(key, klen);
	if ((ix->n + 1) * 2 > ix->cap && index_grow(ix) != 0)
		return -1;
	e = index_slot(ix, h);
	if (e->seq == 0)
		ix->n++;
	*e = (struct last_effect){ h.low64, h.high64, seq, (uint64_t)op };
	return 0;
}

/* ---------- passes 2 and 3: correcting the table ---------- */

struct fix {
	struct shm_writer *w;
	const struct index *ix;
	uint64_t last;       /* last seq in the log */
	uint64_t kept, written, removed;
	int rc;              /* shm_ result that stopped a pass */
};

/* Apply one effect with the seq it has in the log. A set that finds no
 * memory waits for readers to let go of what is retired and tries again. */
static int apply_effect(struct fix *f, uint64_t seq, int op, const void *key, uint32_t klen,
			const void *val, uint32_t vlen)
{
	struct shm_shard *sh = f->w->sh;
	int rc;

	atomic_store_explicit(&sh->seq, seq - 1, memory_order_relaxed);
	if (op == WALFMT_OP_SET) {
		rc = shm_writer_set(f->w, key, klen, val, vlen);
		if (rc == SHM_ENOMEM) {
			shm_writer_drain(f->w);
			rc = shm_writer_set(f->w, key, klen, val, vlen);
		}
	} else {
		rc = shm_writer_del(f->w, key, klen);
	}
	atomic_store_explicit(&sh->seq, f->last, memory_order_relaxed);
	return rc;
}

static int fix_from_log(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
			const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct fix *f = arg;
	const struct last_effect *e;
	struct shm_kv kv;
	int have;

	(void)b;
	if (op >= WALFMT_OP_PSET)
		return 0; /* batch records: issue 12, recovery of batches comes next */
	e = index_find(f->ix, key, klen);
	if (e == NULL || e->seq != seq)
		return 0; /* a later effect of this key follows */
	have = shm_writer_get(f->w, key, klen, &kv) == SHM_OK;
	if (op == WALFMT_OP_SET ? have && kv.seq == seq : !have) {
		f->kept++;
		return 0;
	}
	f->rc = apply_effect(f, seq, op, key, klen, val, vlen);
	if (f->rc != SHM_OK)
		return -1;
	f->written++;
	return 0;
}

static int drop_unlogged(void *arg, const struct shm_kv *kv)
{
	struct fix *f = arg;
	const struct last_effect *e = index_find(f->ix, kv->key, kv->klen);

	if (e != NULL && e->op == WALFMT_OP_SET)
		return 0;
	f->rc = apply_effect(f, f->last + 1, WALFMT_OP_DEL, kv->key, kv->klen, NULL, 0);
	f->removed++;
	return f->rc == SHM_OK ? 0 : -1;
}

static int failed_pass(const struct shard_recovery *r, int wrc, const struct fix *f)
{
	if (wrc == WAL_EAPPLY && f->rc == SHM_ENOMEM) {
		log_error("not enough shared memory for the shard's live data; raise --memory");
		return SHARDD_EXIT_NOMEM;
	}
	if (wrc == WAL_EAPPLY && f->rc == SHM_OK) {
		log_error("out of memory for the recovery index");
		return SHARDD_EXIT_CRASH;
	}
	log_error("recovery failed: %s", wrc == WAL_EAPPLY ? shm_strerror(f->rc) : wal_errmsg(r->wal));
	return wrc == WAL_ECORRUPT ? SHARDD_EXIT_CORRUPT : SHARDD_EXIT_CRASH;
}

/* What the log repaired in its files (a torn tail cut, an empty segment
 * removed) goes to the shard's log. */
static void log_wal_note(void *arg, enum wal_note kind, const char *msg)
{
	(void)arg;
	log_msg(kind == WAL_NOTE_WARN ? LOG_WARN : LOG_INFO, "wal: %s", msg);
}

static int replay_log(struct shm_writer *w, const struct shard_recovery *r, uint64_t *last)
{
	struct index ix = { 0 };
	struct fix f = { .w = w, .ix = &ix };
	int rc;

	wal_set_note(r->wal, log_wal_note, NULL);
	rc = index_grow(&ix) != 0 ? WAL_EAPPLY : wal_recover(r->wal, note_effect, &ix, last);

	f.last = *last;
	if (rc == WAL_OK)
		rc = wal_replay(r->wal, fix_from_log, &f);
	if (rc == WAL_OK && shm_writer_each(w, drop_unlogged, &f) != 0)
		rc = WAL_EAPPLY;
	free(ix.e);
	if (rc != WAL_OK)
		return failed_pass(r, rc, &f);
	log_msg(f.written + f.removed ? LOG_INFO : LOG_DEBUG,
		"log: %zu keys; table: %llu kept, %llu rewritten, %llu removed", ix.n,
		(unsigned long long)f.kept, (unsigned long long)f.written,
		(unsigned long long)f.removed);
	return 0;
}

/* After the table is right: the sorted index, if the store keeps one and
 * the shard has none (a first start: replay fills the table alone, then
 * the index is built in one pass) or an incomplete one (a restart after
 * damage). */
static int build_index(struct shm_writer *w)
{
	uint64_t t0 = shm_now_ns();
	int rc;

	if (!atomic_load_explicit(&w->sh->sorted, memory_order_relaxed) ||
	    (w->index_off != 0 && !w->index_stale))
		return 0;
	rc = shm_writer_index_build(w);
	if (rc == SHM_ENOMEM) {
		log_error("not enough shared memory for the sorted index; raise --memory or run with "
			  "--sorted-index off");
		return SHARDD_EXIT_NOMEM;
	}
	if (rc != SHM_OK) {
		log_error("cannot build the sorted index: %s", shm_strerror(rc));
		return SHARDD_EXIT_CRASH;
	}
	log_msg(LOG_DEBUG, "sorted index built in %.1f ms", (double)(shm_now_ns() - t0) / 1e6);
	return 0;
}

int shard_recover(struct shm_writer *w, const struct shard_recovery *r, uint64_t *last)
{
	size_t dropped = 0;
	int rc = shm_writer_open(w, r->seg, r->id, 0, &r->readers, &dropped);

	*last = 0;
	if (rc != SHM_OK) {
		log_error("cannot adopt the shard's table: %s%s", shm_strerror(rc),
			  rc == SHM_ESYS ? " (no private memory to list what it holds)" : "");
		return rc == SHM_ENOMEM ? SHARDD_EXIT_NOMEM : SHARDD_EXIT_CRASH;
	}
	if (dropped > 0)
		log_warn("%zu table entries did not point at records of this shard; dropped them%s",
			 dropped, r->mode == WAL_SYNC_NONE ? " (no log to restore them from)" : "");
	if (r->mode == WAL_SYNC_NONE)
		*last = atomic_load(&w->sh->seq);
	else if ((rc = replay_log(w, r, last)) != 0)
		return rc;
	atomic_store_explicit(&w->sh->seq, *last, memory_order_release);
	return build_index(w);
}
