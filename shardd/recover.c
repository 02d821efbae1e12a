/*
 * recover.c — rebuilding a shard at start (recover.h).
 *
 * The table a previous incarnation left is adopted, not rebuilt beside:
 * readers go on using it, and recovery needs no shared memory beyond the
 * live data (shm_writer_open rebuilds the allocator around what the table
 * references, so memory the dead process had retired but not freed comes
 * back). The log is the truth; the table is corrected to match it:
 *
 *   pass 1 (load_checkpoint, wal_recover_from): for every key, the seq
 *          and op of its last effect in the newest usable checkpoint
 *          (ckpt.h; a damaged one is reported and the older one used) and
 *          the log after its replay seq: the largest seq wins. This index
 *          is private memory: 32-byte entries, at most half full, so 64 to
 *          128 bytes per distinct key they hold.
 *   pass 2 (fix_table: the checkpoint again, then wal_replay): each entry
 *          or record that is its key's last effect is applied unless the
 *          table already holds it (same seq): a SET writes the value, a DEL
 *          removes the key.
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
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "shardd/ckptfile.h"
#include "shardd/log.h"
#include "shardd/recover.h"
#include "shardd/shardd.h"
#include "shm/batch.h"
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

/* ---------- atomic batches in the log ---------- */

/* A batch the log names. */
struct bx {
	uint64_t boot, ref;
	uint32_t primary;
	uint8_t outcome;  /* WALFMT_COMMITTED/ABORTED: RESOLVED logged, or decided here */
	bool parts;       /* PSET/PDEL records of it: a part of this shard */
	bool decision;    /* its DECISION (this shard was its primary) */
	bool now;         /* decided by this recovery: RESOLVED to log */
	bool lookup;      /* to be decided by its primary's log */
	uint64_t commit;  /* C, committed by its word (the segment's boot) */
};

/* A PSET or PDEL: an effect if its batch committed. */
struct bx_effect {
	uint64_t lo, hi, seq;
	uint32_t op;      /* WALFMT_OP_SET or _DEL */
	uint32_t bx;      /* index into batches.v */
};

struct batches_seen {
	struct bx *v;
	size_t n, cap;
	uint32_t *slot;   /* open addressing: index + 1 into v */
	size_t nslot;     /* a power of two, at most half full */
	struct bx_effect *fx;
	size_t nfx, capfx;
};

struct pass1 {
	struct index ix;
	struct batches_seen bs;
};

static size_t bx_hash(uint64_t boot, uint64_t ref)
{
	return (size_t)((boot ^ ref) * 0x9e3779b97f4a7c15ull >> 17);
}

static uint32_t *bx_slot(const struct batches_seen *bs, uint64_t boot, uint64_t ref)
{
	for (size_t i = bx_hash(boot, ref) & (bs->nslot - 1);; i = (i + 1) & (bs->nslot - 1)) {
		uint32_t *s = &bs->slot[i];

		if (*s == 0 || (bs->v[*s - 1].boot == boot && bs->v[*s - 1].ref == ref))
			return s;
	}
}

static int bx_grow(struct batches_seen *bs)
{
	size_t n = bs->nslot ? bs->nslot * 2 : 1024;
	uint32_t *old = bs->slot;
	size_t oldn = bs->nslot;

	if ((bs->slot = calloc(n, sizeof(*bs->slot))) == NULL) {
		bs->slot = old;
		return -1;
	}
	bs->nslot = n;
	for (size_t i = 0; i < oldn; i++)
		if (old[i] != 0)
			*bx_slot(bs, bs->v[old[i] - 1].boot, bs->v[old[i] - 1].ref) = old[i];
	free(old);
	return 0;
}

/* The batch's entry, made if new; NULL: no memory. */
static struct bx *bx_get(struct batches_seen *bs, const struct walfmt_batch *b)
{
	uint32_t *s;

	if ((bs->n + 1) * 2 > bs->nslot && bx_grow(bs) != 0)
		return NULL;
	s = bx_slot(bs, b->boot, b->ref);
	if (*s != 0)
		return &bs->v[*s - 1];
	if (bs->n == bs->cap) {
		size_t c = bs->cap ? bs->cap * 2 : 256;
		struct bx *v = realloc(bs->v, c * sizeof(*v));

		if (v == NULL)
			return NULL;
		bs->v = v;
		bs->cap = c;
	}
	bs->v[bs->n] = (struct bx){ .boot = b->boot, .ref = b->ref, .primary = b->primary };
	*s = (uint32_t)++bs->n;
	return &bs->v[bs->n - 1];
}

static int note_batch(struct batches_seen *bs, uint64_t seq, int op, const struct walfmt_batch *b,
		      const void *key, uint32_t klen)
{
	struct bx *x = bx_get(bs, b);
	XXH128_hash_t h;

	if (x == NULL)
		return -1;
	if (op == WALFMT_OP_DECISION) {
		x->decision = true;
		return 0;
	}
	if (op == WALFMT_OP_RESOLVED) {
		x->outcome = b->outcome;
		return 0;
	}
	x->parts = true;
	if (bs->nfx == bs->capfx) {
		size_t c = bs->capfx ? bs->capfx * 2 : 1024;
		struct bx_effect *fx = realloc(bs->fx, c * sizeof(*fx));

		if (fx == NULL)
			return -1;
		bs->fx = fx;
		bs->capfx = c;
	}
	h = XXH3_128bits(key, klen);
	bs->fx[bs->nfx++] = (struct bx_effect){ h.low64, h.high64, seq,
						 op == WALFMT_OP_PSET ? WALFMT_OP_SET : WALFMT_OP_DEL,
						 (uint32_t)(x - bs->v) };
	return 0;
}

static void batches_free(struct batches_seen *bs)
{
	free(bs->v);
	free(bs->slot);
	free(bs->fx);
}

/* The key's effect at seq, unless the index holds a later one (the log
 * comes in seq order; a checkpoint's entries do not). */
static int index_note(struct index *ix, XXH128_hash_t h, uint64_t seq, uint64_t op)
{
	struct last_effect *e;

	if ((ix->n + 1) * 2 > ix->cap && index_grow(ix) != 0)
		return -1;
	e = index_slot(ix, h);
	if (e->seq == 0)
		ix->n++;
	if (e->seq < seq)
		*e = (struct last_effect){ h.low64, h.high64, seq, op };
	return 0;
}

static int note_effect(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		       const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct pass1 *p1 = arg;

	(void)val;
	(void)vlen;
	if (op >= WALFMT_OP_PSET)
		return note_batch(&p1->bs, seq, op, b, key, klen);
	return index_note(&p1->ix, XXH3_128bits(key, klen), seq, (uint64_t)op);
}

/* A checkpoint's entry: a set with its seq, or a decision it carries. */
static int note_ckpt_entry(void *arg, const struct ckpt_entry *e)
{
	struct pass1 *p1 = arg;
	struct walfmt_batch b = { e->boot, e->ref, e->primary, 0 };

	if (e->type == CKPT_DECISION)
		return note_batch(&p1->bs, 0, WALFMT_OP_DECISION, &b, NULL, 0);
	return index_note(&p1->ix, XXH3_128bits(e->key, e->klen), e->seq, WALFMT_OP_SET);
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
	if (op == WALFMT_OP_DECISION || op == WALFMT_OP_RESOLVED)
		return 0;
	e = index_find(f->ix, key, klen);
	if (e == NULL || e->seq != seq)
		return 0; /* a later effect of this key follows (or an aborted batch's) */
	/* A committed batch's part is its sets and deletes (pass 1 put only
	 * those into the index). */
	op = op == WALFMT_OP_PSET ? WALFMT_OP_SET : op == WALFMT_OP_PDEL ? WALFMT_OP_DEL : op;
	have = shm_writer_get(f->w, key, klen, &kv) == SHM_OK;
	if (op == WALFMT_OP_SET ? have && kv.seq == seq && kv.intent == NULL : !have) {
		f->kept++;
		return 0;
	}
	f->rc = apply_effect(f, seq, op, key, klen, val, vlen);
	if (f->rc != SHM_OK)
		return -1;
	f->written++;
	return 0;
}

static int fix_from_ckpt(void *arg, const struct ckpt_entry *c)
{
	if (c->type != CKPT_KV)
		return 0;
	return fix_from_log(arg, c->seq, WALFMT_OP_SET, NULL, c->key, c->klen, c->val, c->vlen);
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

/* ---------- deciding the batches the log left open ---------- */

#define WAIT_NS (1000000ull) /* polling another shard's progress */

static void nap(void)
{
	struct timespec ts = { 0, (long)WAIT_NS };

	nanosleep(&ts, NULL);
}

/* Words this shard left COMMITTING or CLAIMING (it died committing):
 * finished from its log. */
static void finish_own_words(const struct shard_recovery *r, struct batches_seen *bs)
{
	for (uint32_t slot = 0; slot < SHM_BATCH_SLOTS; slot++) {
		for (uint32_t i = 0; i < SHM_BATCH_WORDS; i++) {
			struct shm_batch_word *w = shm_batch_word(r->seg, shm_batch_ref(1, slot, i));
			uint64_t st = atomic_load(&w->state), ref = shm_batch_ref(st >> 24, slot, i);
			uint32_t *x = st >> 24 ? bx_slot(bs, r->seg->hdr->boot, ref) : NULL;
			bool logged = x != NULL && *x != 0 && bs->v[*x - 1].decision;

			if (((st >> 4) & 0xfffff) != r->id ||
			    ((st & 15) != SHM_BATCH_COMMITTING && (st & 15) != SHM_BATCH_CLAIMING))
				continue;
			if (logged || (st & 15) == SHM_BATCH_CLAIMING)
				shm_batch_commit(r->seg, w, ref, r->id);
			else
				shm_batch_abort(w, ref, r->id);
			log_msg(LOG_INFO, "batch %llx: finished its commit as %s", (unsigned long long)ref,
				logged ? "committed" : "aborted (no decision in the log)");
		}
	}
}

/* A part of the segment's boot: its word says, or this shard aborts it
 * (it restarted before the decision). 1: decided, 0: look in the
 * primary's log (the word serves a later batch already), -1: the primary
 * stopped for good while committing it. */
static int decide_by_word(const struct shard_recovery *r, struct bx *x)
{
	struct shm_batch_word *w = shm_batch_word(r->seg, x->ref);
	uint64_t c = 0;
	uint32_t by = 0;

	for (;;) {
		int st = shm_batch_status(w, x->ref, &c, &by);

		if (st == SHM_BATCH_COMMITTED) {
			x->outcome = WALFMT_COMMITTED;
			x->commit = c;
			return 1;
		}
		if (st == SHM_BATCH_ABORTED) {
			x->outcome = WALFMT_ABORTED;
			return 1;
		}
		if (st == SHM_BATCH_UNDECIDED) {
			if (shm_batch_abort(w, x->ref, r->id)) {
				x->outcome = WALFMT_ABORTED;
				return 1;
			}
			if ((atomic_load(&w->state) >> 24) > shm_batch_ref_tag(x->ref))
				return 0;
			continue; /* the primary began to commit meanwhile */
		}
		/* COMMITTING, CLAIMING: its primary is at it, or restarting */
		if (atomic_load(&shm_shard_at(r->seg, by)->state) == SHM_SHARD_FAILED)
			return -1;
		nap();
	}
}

struct lookup {
	struct batches_seen *bs;
	uint32_t primary;
};

static int found_decision(void *arg, uint64_t seq, int op, const struct walfmt_batch *b, const void *key,
			  uint32_t klen, const void *val, uint32_t vlen)
{
	struct lookup *l = arg;
	uint32_t *x;

	(void)seq, (void)key, (void)klen, (void)val, (void)vlen;
	if (op != WALFMT_OP_DECISION || b->primary != l->primary)
		return 0;
	x = bx_slot(l->bs, b->boot, b->ref);
	if (*x != 0 && l->bs->v[*x - 1].lookup)
		l->bs->v[*x - 1].outcome = WALFMT_COMMITTED;
	return 0;
}

static int found_ckpt_decision(void *arg, const struct ckpt_entry *e)
{
	struct walfmt_batch b = { e->boot, e->ref, e->primary, 0 };

	if (e->type != CKPT_DECISION)
		return 0;
	return found_decision(arg, 0, WALFMT_OP_DECISION, &b, NULL, 0, NULL, 0);
}

/* The decisions the primary's checkpoints carry (DESIGN.md §17: those
 * its log may have dropped). A damaged one is skipped: each entry has its
 * own checksum, and the other checkpoint or the log may hold the rest. */
static int primary_checkpoints(const char *dir, struct lookup *l)
{
	struct ckpt_file *v;
	char name[CKPT_NAME_LEN + 1], why[600];
	size_t n;

	if (ckpt_list(dir, 0, &v, &n, why, sizeof(why)) != CKPT_OK) {
		log_error("cannot list the checkpoints of shard %u: %s", l->primary, why);
		return SHARDD_EXIT_CRASH;
	}
	for (size_t i = 0; i < n; i++) {
		ckpt_name(name, v[i].covered, v[i].replay);
		if (ckpt_read(dir, name, l->primary, found_ckpt_decision, l, NULL, why, sizeof(why)) != CKPT_OK)
			log_warn("batch decisions: %s", why);
	}
	free(v);
	return 0;
}

/* Parts whose primary's log decides: read it (and its checkpoints) once
 * that shard has read it itself (its torn tail cut: a DECISION there is
 * for good). No DECISION: aborted. */
static int decide_by_primary(const struct shard_recovery *r, struct batches_seen *bs, uint32_t p)
{
	struct shm_shard *sh = shm_shard_at(r->seg, p);
	struct lookup l = { bs, p };
	char dir[PATH_MAX + 16], why[200];

	while (atomic_load_explicit(&sh->log_read, memory_order_acquire) == 0) {
		if (atomic_load(&sh->state) == SHM_SHARD_FAILED) {
			log_error("shard %u, primary of batches this shard holds parts of, stopped before "
				  "reading its log: their outcome is unknown", p);
			return SHARDD_EXIT_CORRUPT;
		}
		nap();
	}
	snprintf(dir, sizeof(dir), "%s/shard-%02u", r->data_dir, p);
	if (wal_scan_dir(dir, p, found_decision, &l, why, sizeof(why)) != 0) {
		log_error("cannot read the log of shard %u for batch decisions: %s", p, why);
		return SHARDD_EXIT_CRASH;
	}
	if (primary_checkpoints(dir, &l) != 0)
		return SHARDD_EXIT_CRASH;
	for (size_t i = 0; i < bs->n; i++) {
		struct bx *x = &bs->v[i];

		if (x->lookup && x->primary == p) {
			if (x->outcome == 0)
				x->outcome = WALFMT_ABORTED;
			x->lookup = false;
		}
	}
	return 0;
}

/* Wait until committed intents (numbers up to cmax; 0: none) may become
 * plain records: no reader with an older start number runs. */
static void grace_before_plain(const struct shard_recovery *r, uint64_t cmax)
{
	uint64_t e;

	if (cmax == 0)
		return;
	e = shm_epoch_bump(r->seg->hdr);
	for (;;) {
		if (r->readers.refresh != NULL)
			r->readers.refresh(r->readers.arg);
		if (shm_batch_settle_ready(r->readers.slots, r->readers.n,
					   shm_epoch_min(r->readers.slots, r->readers.n), e, cmax))
			return;
		nap();
	}
}

/* Decide every part the log left open; the committed ones' effects join
 * the index. */
static int decide_batches(struct shm_writer *w, const struct shard_recovery *r, struct pass1 *p1)
{
	struct batches_seen *bs = &p1->bs;
	uint64_t boot = r->seg->hdr->boot, cmax = 0;
	int rc;

	finish_own_words(r, bs);
	for (size_t i = 0; i < bs->n; i++) {
		struct bx *x = &bs->v[i];

		if (!x->parts || x->outcome != 0)
			continue;
		x->now = true;
		/* The word first, while it speaks for the batch: a primary
		 * that aborts its own batch must also stop a COMMIT still on
		 * its way. */
		rc = x->boot == boot ? decide_by_word(r, x) : 0;
		if (rc < 0) {
			log_error("the primary of batch %llx stopped while committing it: its outcome is unknown",
				  (unsigned long long)x->ref);
			return SHARDD_EXIT_CORRUPT;
		}
		if (rc > 0)
			;
		else if (x->decision)
			x->outcome = WALFMT_COMMITTED;
		else if (x->primary == r->id)
			x->outcome = WALFMT_ABORTED; /* nobody else could decide it */
		else
			x->lookup = true;
		if (x->commit > cmax)
			cmax = x->commit;
	}
	for (size_t i = 0; i < bs->n; i++)
		if (bs->v[i].lookup && (rc = decide_by_primary(r, bs, bs->v[i].primary)) != 0)
			return rc;
	/* Intents of committed batches readers may see become plain records
	 * in pass 2: only once no reader with an older start number runs. */
	grace_before_plain(r, cmax);
	for (size_t i = 0; i < bs->nfx; i++) {
		const struct bx_effect *fx = &bs->fx[i];
		XXH128_hash_t h = { fx->lo, fx->hi };
		struct last_effect *e;

		if (bs->v[fx->bx].outcome != WALFMT_COMMITTED)
			continue;
		if ((p1->ix.n + 1) * 2 > p1->ix.cap && index_grow(&p1->ix) != 0)
			return SHARDD_EXIT_CRASH;
		e = index_slot(&p1->ix, h);
		if (e->seq == 0)
			p1->ix.n++;
		if (e->seq < fx->seq)
			*e = (struct last_effect){ fx->lo, fx->hi, fx->seq, fx->op };
	}
	(void)w;
	return 0;
}

/* After the passes: RESOLVED for what was decided here, then (a grace
 * later: readers that saw intents have left) this shard's bits cleared in
 * the words of the segment's boot. */
static int close_batches(const struct shard_recovery *r, struct batches_seen *bs, uint64_t *last)
{
	uint64_t boot = r->seg->hdr->boot;
	size_t resolved = 0;

	wal_batch_begin(r->wal);
	for (size_t i = 0; i < bs->n; i++) {
		struct bx *x = &bs->v[i];
		struct walfmt_batch b = { x->boot, x->ref, x->primary, x->outcome };

		if (!x->now)
			continue;
		if (wal_batch_add(r->wal, ++*last, WALFMT_OP_RESOLVED, &b, NULL, 0, NULL, 0) != WAL_OK)
			return SHARDD_EXIT_CRASH;
		resolved++;
	}
	if (wal_batch_commit(r->wal) != WAL_OK) {
		log_error("cannot log the batches resolved at start: %s", wal_errmsg(r->wal));
		return SHARDD_EXIT_IO;
	}
	shm_epoch_wait(r->readers.slots, r->readers.n, shm_epoch_bump(r->seg->hdr));
	for (size_t i = 0; i < bs->n; i++)
		if (bs->v[i].parts && bs->v[i].boot == boot)
			shm_batch_release(shm_batch_word(r->seg, bs->v[i].ref), bs->v[i].ref, r->id);
	if (resolved > 0)
		log_msg(LOG_INFO, "batches: %zu parts resolved at start", resolved);
	shm_counter_add(&shm_shard_at(r->seg, r->id)->ctr.batch_parts_recovered, resolved);
	return 0;
}

/* ---------- the checkpoint to start from ---------- */

struct chosen {
	bool found;
	char name[CKPT_NAME_LEN + 1];
	struct ckpt_info info;
};

static int pass1_init(struct pass1 *p1)
{
	memset(p1, 0, sizeof(*p1));
	return index_grow(&p1->ix);
}

static void pass1_free(struct pass1 *p1)
{
	free(p1->ix.e);
	batches_free(&p1->bs);
}

/* The newest checkpoint that reads back whole goes into pass 1's index
 * (its entries are effects with their seqs); a damaged one is reported
 * and the next older one tried, which needs a longer log (DESIGN.md §17). */
static int load_checkpoint(const struct shard_recovery *r, struct pass1 *p1, struct chosen *ck)
{
	const char *dir = r->wal->dir;
	struct ckpt_file *v;
	char why[600];
	size_t n;
	int rc = 0;

	if (ckpt_list(dir, 1, &v, &n, why, sizeof(why)) != CKPT_OK) {
		log_error("%s", why);
		return SHARDD_EXIT_CRASH;
	}
	for (size_t i = n; i-- > 0 && rc == 0;) {
		int crc;

		ckpt_name(ck->name, v[i].covered, v[i].replay);
		crc = ckpt_read(dir, ck->name, r->id, note_ckpt_entry, p1, &ck->info, why, sizeof(why));
		if (crc == CKPT_OK) {
			ck->found = true;
			break;
		}
		pass1_free(p1);
		if (pass1_init(p1) != 0 || crc == CKPT_ENOMEM || crc == CKPT_EAPPLY) {
			log_error("out of memory reading checkpoint %s", ck->name);
			rc = SHARDD_EXIT_CRASH;
		} else if (crc == CKPT_EIO) {
			log_error("cannot read a checkpoint: %s", why);
			rc = SHARDD_EXIT_CRASH;
		} else {
			log_warn("checkpoint unusable: %s; %s", why,
				 i > 0 ? "trying the older one, with a longer log" : "trying the whole log");
		}
	}
	free(v);
	return rc;
}

/* The log must hold every record after the checkpoint's replay seq (or,
 * without one, from seq 1). */
static int check_reach(const struct shard_recovery *r, const struct chosen *ck)
{
	uint64_t from = ck->found ? ck->info.replay : 0;

	if (r->wal->base_seq <= from)
		return 0;
	if (ck->found)
		log_error("checkpoint %s needs the log from seq %llu on, but it begins after seq %llu",
			  ck->name, (unsigned long long)from + 1, (unsigned long long)r->wal->base_seq);
	else
		log_error("no usable checkpoint, and the log begins after seq %llu (older segments were "
			  "deleted after a checkpoint): cannot recover", (unsigned long long)r->wal->base_seq);
	return SHARDD_EXIT_CORRUPT;
}

/* Decisions of earlier boots this shard logged or carried as primary:
 * later checkpoints carry them while a part elsewhere may need them. */
static int keep_old_decisions(const struct shard_recovery *r, const struct batches_seen *bs)
{
	struct old_decisions *od = r->old;

	for (size_t i = 0; od != NULL && i < bs->n; i++) {
		const struct bx *x = &bs->v[i];

		if (!x->decision || x->boot == r->seg->hdr->boot || x->primary != r->id)
			continue;
		if (od->n == od->cap) {
			size_t c = od->cap ? od->cap * 2 : 64;
			struct walfmt_batch *nv = realloc(od->v, c * sizeof(*nv));

			if (nv == NULL)
				return SHARDD_EXIT_CRASH;
			od->v = nv;
			od->cap = c;
		}
		od->v[od->n++] = (struct walfmt_batch){ x->boot, x->ref, x->primary, 0 };
	}
	return 0;
}

/* Pass 2 over the checkpoint, then the log. */
static int fix_table(struct shm_writer *w, const struct shard_recovery *r, const struct chosen *ck,
		     struct fix *f)
{
	char why[600];
	int rc;

	if (ck->found &&
	    (rc = ckpt_read(r->wal->dir, ck->name, r->id, fix_from_ckpt, f, NULL, why, sizeof(why))) != CKPT_OK) {
		if (rc == CKPT_EAPPLY)
			return WAL_EAPPLY;
		log_error("checkpoint changed while it was read: %s", why);
		return WAL_ECORRUPT;
	}
	rc = wal_replay(r->wal, fix_from_log, f);
	if (rc == WAL_OK && shm_writer_each(w, drop_unlogged, f) != 0)
		rc = WAL_EAPPLY;
	return rc;
}

static int replay_log(struct shm_writer *w, const struct shard_recovery *r, uint64_t *last)
{
	struct pass1 p1;
	struct fix f = { .w = w, .ix = &p1.ix };
	struct chosen ck = { 0 };
	int rc = WAL_OK, xrc;

	wal_set_note(r->wal, log_wal_note, NULL);
	xrc = pass1_init(&p1) != 0 ? SHARDD_EXIT_CRASH : load_checkpoint(r, &p1, &ck);
	if (xrc == 0)
		rc = wal_recover_from(r->wal, ck.found ? ck.info.replay : 0, note_effect, &p1, last);
	if (rc == WAL_OK && xrc == 0)
		xrc = check_reach(r, &ck);
	if (rc == WAL_OK && xrc == 0) {
		/* Our decisions are final now: others may look them up. */
		atomic_store_explicit(&w->sh->log_read, 1, memory_order_release);
		xrc = decide_batches(w, r, &p1);
	}
	if (rc == WAL_OK && xrc == 0)
		xrc = keep_old_decisions(r, &p1.bs);
	/* No record may carry a seq above the shard's: a checkpoint may hold
	 * writes a power cut took from the log's unsynced end. */
	if (ck.found && ck.info.max_seq > *last)
		*last = ck.info.max_seq;
	if (ck.found && ck.info.covered > *last)
		*last = ck.info.covered;
	f.last = *last;
	if (rc == WAL_OK && xrc == 0)
		rc = fix_table(w, r, &ck, &f);
	if (rc == WAL_OK && xrc == 0)
		xrc = close_batches(r, &p1.bs, last);
	pass1_free(&p1);
	if (rc != WAL_OK)
		return failed_pass(r, rc, &f);
	if (xrc != 0)
		return xrc;
	log_msg(f.written + f.removed ? LOG_INFO : LOG_DEBUG,
		"%s%s%slog: %zu keys; table: %llu kept, %llu rewritten, %llu removed",
		ck.found ? "checkpoint " : "", ck.found ? ck.name : "", ck.found ? " + " : "", p1.ix.n,
		(unsigned long long)f.kept, (unsigned long long)f.written,
		(unsigned long long)f.removed);
	return 0;
}

/* ---------- --sync none: intents the table kept ---------- */

struct adopted {
	struct bx *v;      /* one per intent: ref, and the key in `keys` */
	size_t n, cap;
	uint8_t *keys;     /* u32 klen, key */
	size_t kbytes, kcap;
};

static int adopt_intent(void *arg, const struct shm_kv *kv)
{
	struct adopted *a = arg;

	if (kv->intent == NULL)
		return 0;
	if (a->n == a->cap) {
		size_t c = a->cap ? a->cap * 2 : 64;
		struct bx *v = realloc(a->v, c * sizeof(*v));

		if (v == NULL)
			return -1;
		a->v = v;
		a->cap = c;
	}
	while (a->kbytes + 4 + kv->klen > a->kcap) {
		size_t c = a->kcap ? a->kcap * 2 : 4096;
		uint8_t *k = realloc(a->keys, c);

		if (k == NULL)
			return -1;
		a->keys = k;
		a->kcap = c;
	}
	a->v[a->n++] = (struct bx){ .ref = shm_intent_ref(kv), .primary = 0 };
	memcpy(a->keys + a->kbytes, &kv->klen, 4);
	memcpy(a->keys + a->kbytes + 4, kv->key, kv->klen);
	a->kbytes += 4 + kv->klen;
	return 0;
}
/* Decide and resolve them in place (there is no log to replay), then
 * clear this shard's bits. */
static int settle_adopted(struct shm_writer *w, const struct shard_recovery *r)
{
	struct adopted a = { 0 };
	uint64_t cmax = 0;
	int rc = 0;

	if (shm_writer_each(w, adopt_intent, &a) != 0)
		rc = SHARDD_EXIT_CRASH;
	for (size_t i = 0; rc == 0 && i < a.n; i++) {
		int d = decide_by_word(r, &a.v[i]);

		if (d < 0)
			rc = SHARDD_EXIT_CORRUPT;
		else if (d == 0)
			a.v[i].outcome = WALFMT_ABORTED; /* cannot happen while we hold it */
		if (a.v[i].commit > cmax)
			cmax = a.v[i].commit;
	}
	grace_before_plain(r, rc == 0 ? cmax : 0);
	for (size_t i = 0, off = 0; rc == 0 && i < a.n; i++) {
		uint32_t klen;
		struct shm_kv kv;
		struct shm_staged s;
		int src;

		memcpy(&klen, a.keys + off, 4);
		if (shm_writer_get(w, a.keys + off + 4, klen, &kv) == SHM_OK && kv.intent != NULL) {
			src = shm_writer_stage_settle(w, kv.off, a.v[i].outcome == WALFMT_COMMITTED, &s);
			if (src == SHM_ENOMEM) {
				shm_writer_drain(w);
				src = shm_writer_stage_settle(w, kv.off, a.v[i].outcome == WALFMT_COMMITTED, &s);
			}
			if (src == SHM_OK)
				src = shm_writer_publish(w, &s);
			if (src != SHM_OK)
				rc = src == SHM_ENOMEM ? SHARDD_EXIT_NOMEM : SHARDD_EXIT_CRASH;
		}
		off += 4 + klen;
	}
	if (rc == 0 && a.n > 0) {
		shm_epoch_wait(r->readers.slots, r->readers.n, shm_epoch_bump(r->seg->hdr));
		for (size_t i = 0; i < a.n; i++)
			shm_batch_release(shm_batch_word(r->seg, a.v[i].ref), a.v[i].ref, r->id);
		log_msg(LOG_INFO, "batches: %zu intents the table kept resolved at start", a.n);
	}
	free(a.v);
	free(a.keys);
	return rc;
}

/* The word (slot, i) if this shard's bit is set in it, its ref in *ref. */
static struct shm_batch_word *stray_word(const struct shard_recovery *r, uint32_t slot, uint32_t i,
					 uint64_t *ref)
{
	struct shm_batch_word *w = shm_batch_word(r->seg, shm_batch_ref(1, slot, i));

	if (w == NULL || !(atomic_load(&w->mask[r->id / 64]) & (1ull << (r->id % 64))))
		return NULL;
	*ref = shm_batch_ref(atomic_load(&w->holders), slot, i);
	return w;
}

/* Bits of this shard that no part it still has explains: a part resolved
 * before the kill whose bit the second grace had not cleared yet, or an
 * intent staged but never answered. Every part left is decided by now
 * (logged modes: close_batches; none: settle_adopted), so each such word
 * is decided too (an undecided one aborted: the client never heard the
 * part was prepared), and the bit cleared after a reader grace. */
static void release_strays(const struct shard_recovery *r)
{
	struct shm_batch_word *w;
	size_t n = 0;
	uint64_t ref;

	for (uint32_t slot = 0; slot < SHM_BATCH_SLOTS; slot++)
		for (uint32_t i = 0; i < SHM_BATCH_WORDS; i++)
			if ((w = stray_word(r, slot, i, &ref)) != NULL) {
				struct bx x = { .ref = ref };

				if (decide_by_word(r, &x) < 0)
					log_warn("batch %llx: its primary stopped while committing it",
						 (unsigned long long)ref);
				n++;
			}
	if (n == 0)
		return;
	shm_epoch_wait(r->readers.slots, r->readers.n, shm_epoch_bump(r->seg->hdr));
	for (uint32_t slot = 0; slot < SHM_BATCH_SLOTS; slot++)
		for (uint32_t i = 0; i < SHM_BATCH_WORDS; i++)
			if ((w = stray_word(r, slot, i, &ref)) != NULL)
				shm_batch_release(w, ref, r->id);
	log_msg(LOG_INFO, "batches: %zu bits of resolved batches cleared at start", n);
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
	int rc;

	atomic_store_explicit(&shm_shard_at(r->seg, r->id)->log_read, 0, memory_order_relaxed);
	rc = shm_writer_open(w, r->seg, r->id, 0, &r->readers, &dropped);

	*last = 0;
	if (rc != SHM_OK) {
		log_error("cannot adopt the shard's table: %s%s", shm_strerror(rc),
			  rc == SHM_ESYS ? " (no private memory to list what it holds)" : "");
		return rc == SHM_ENOMEM ? SHARDD_EXIT_NOMEM : SHARDD_EXIT_CRASH;
	}
	if (dropped > 0)
		log_warn("%zu table entries did not point at records of this shard; dropped them%s",
			 dropped, r->mode == WAL_SYNC_NONE ? " (no log to restore them from)" : "");
	if (r->mode == WAL_SYNC_NONE) {
		if ((rc = settle_adopted(w, r)) != 0)
			return rc;
		*last = atomic_load(&w->sh->seq);
	} else if ((rc = replay_log(w, r, last)) != 0)
		return rc;
	release_strays(r);
	atomic_store_explicit(&w->sh->seq, *last, memory_order_release);
	return build_index(w);
}
