/*
 * batch.c — a shard's side of atomic batches (batch.h).
 */
#include <stdlib.h>
#include <string.h>

#include "shm/batch.h"
#include "shardd/batch.h"

enum phase {
	OPEN,    /* waiting for the word to be final */
	GRACE1,  /* committed: waiting for shm_batch_settle_ready */
	SETTLED, /* resolved in a round: the second grace starts after it is published */
	GRACE2,  /* waiting for readers that may hold its intents */
};

struct batch_part {
	uint64_t ref;
	uint32_t primary, gen;
	enum phase phase;
	bool held;       /* counted among the word's holders */
	bool committed;
	uint64_t commit; /* C (GRACE1) */
	uint64_t epoch;  /* the grace's epoch (GRACE1, GRACE2) */
	uint64_t first_seq; /* its first PSET/PDEL record's (a checkpoint replays from below it) */
	uint8_t *keys;   /* u32 klen, then the key, for each key it staged an intent of */
	size_t kbytes, kcap;
};

void batch_init(struct batches *b, struct shm_seg *seg, uint32_t shard)
{
	*b = (struct batches){ .seg = seg, .shard = shard };
}

void batch_destroy(struct batches *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->parts[i].keys);
	free(b->parts);
	free(b->decided);
	*b = (struct batches){ 0 };
}

static int push_ref(uint64_t **v, size_t *n, size_t *cap, uint64_t ref)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		uint64_t *p = realloc(*v, c * sizeof(*p));

		if (p == NULL)
			return -1;
		*v = p;
		*cap = c;
	}
	(*v)[(*n)++] = ref;
	return 0;
}

uint64_t batch_part_first_seq(const struct batches *b, size_t i)
{
	return b->parts[i].first_seq;
}

static struct batch_part *part_find(struct batches *b, uint64_t ref)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->parts[i].ref == ref)
			return &b->parts[i];
	return NULL;
}

static struct batch_part *part_open(struct batches *b, uint64_t ref, uint32_t primary, uint32_t gen)
{
	if (b->n == b->cap) {
		size_t c = b->cap ? b->cap * 2 : 16;
		struct batch_part *p = realloc(b->parts, c * sizeof(*p));

		if (p == NULL)
			return NULL;
		b->parts = p;
		b->cap = c;
	}
	b->parts[b->n] = (struct batch_part){ .ref = ref, .primary = primary, .gen = gen };
	return &b->parts[b->n++];
}

static int part_add_key(struct batch_part *p, const void *key, uint32_t klen)
{
	if (p->kbytes + 4 + klen > p->kcap) {
		size_t c = p->kcap ? p->kcap : 256;
		uint8_t *k;

		while (c < p->kbytes + 4 + klen)
			c *= 2;
		if ((k = realloc(p->keys, c)) == NULL)
			return -1;
		p->keys = k;
		p->kcap = c;
	}
	memcpy(p->keys + p->kbytes, &klen, 4);
	memcpy(p->keys + p->kbytes + 4, key, klen);
	p->kbytes += 4 + klen;
	return 0;
}

static struct walfmt_batch log_id(const struct batches *b, uint64_t ref, uint32_t primary, uint8_t outcome)
{
	return (struct walfmt_batch){ .boot = b->seg->hdr->boot, .ref = ref, .primary = primary,
				      .outcome = outcome };
}

/* A record of the round that changes no key (DECISION, RESOLVED). */
static int log_mark(const struct batches *b, const struct batch_round *r, int op, uint64_t ref,
		    uint32_t primary, uint8_t outcome, uint64_t *seq)
{
	struct shm_staged *s = stage_slot(r->stage);
	struct walfmt_batch id = log_id(b, ref, primary, outcome);

	if (s == NULL)
		return -1;
	shm_writer_stage_mark(r->w, s);
	stage_add(r->stage);
	*seq = s->seq;
	return wal_batch_add(r->wal, s->seq, op, &id, NULL, 0, NULL, 0) == WAL_OK ? 0 : -1;
}

/* ---------- requests ---------- */

static int wire(int shm_rc)
{
	switch (shm_rc) {
	case SHM_OK: return SHM_CHAN_OK;
	case SHM_EBUSY: return SHM_CHAN_EBUSY;
	case SHM_EINVAL: return SHM_CHAN_EINVAL;
	case SHM_ENOMEM: return SHM_CHAN_EFULL;
	default: return SHM_CHAN_ECORRUPT;
	}
}

static int stage_part_op(struct batches *b, const struct batch_round *r, const struct shm_chan_op_view *v,
			 uint32_t gen, struct shm_batch_word *bw, uint64_t *seq)
{
	uint64_t ref = v->batch.ref, h = shm_hash(v->key, v->klen), c;
	struct batch_part *p = part_find(b, ref);
	bool del = v->op == SHM_CHAN_OP_PDEL;
	struct shm_staged *s;
	struct walfmt_batch id;
	int rc;

	if (p == NULL) {
		/* The first of its part here: the word must be on the batch
		 * before it, and nobody may hold that one any more. */
		int st = shm_batch_status(bw, ref, &c, NULL);

		/* Aborted already: a participant that restarted before the
		 * decision aborted it (recover.c, release_strays) while this
		 * part was on its way; the client tries again. */
		if (st == SHM_BATCH_ABORTED)
			return SHM_CHAN_EABORTED;
		if (st != SHM_BATCH_UNDECIDED)
			return SHM_CHAN_EINVAL; /* committed already: a stale or forged request */
		if (!shm_batch_reusable(bw, ref) &&
		    atomic_load_explicit(&bw->holders, memory_order_acquire) != shm_batch_ref_tag(ref))
			return SHM_CHAN_EBUSY;
	}
	if ((s = stage_slot(r->stage)) == NULL)
		return -1;
	rc = shm_writer_stage_intent(r->w, v->key, v->klen, h, v->val, v->vlen, del, ref,
				     stage_find(r->stage, v->key, v->klen, h), s);
	if (rc == SHM_ENOTFOUND)
		return SHM_CHAN_OK; /* a delete of an absent key: nothing to do */
	if (rc != SHM_OK)
		return wire(rc);
	stage_add(r->stage);
	*seq = s->seq;
	id = log_id(b, ref, v->batch.primary, 0);
	if (wal_batch_add(r->wal, s->seq, del ? WALFMT_OP_PDEL : WALFMT_OP_PSET, &id, v->key, v->klen, v->val,
			  del ? 0 : v->vlen) != WAL_OK)
		return -1;
	if (p == NULL) {
		if ((p = part_open(b, ref, v->batch.primary, gen)) == NULL)
			return -1;
		p->first_seq = s->seq;
		/* Counted now, with the first intent staged: a restart finds
		 * its PSET/PDEL in the log exactly when this happened (unless
		 * the log write fails: the count is then lost with the word). */
		p->held = shm_batch_hold(bw, ref, b->shard);
	}
	return part_add_key(p, v->key, v->klen) == 0 ? SHM_CHAN_OK : -1;
}

static int stage_commit(struct batches *b, const struct batch_round *r, uint64_t ref,
			struct shm_batch_word *bw, uint64_t *seq)
{
	uint64_t c;

	if (!shm_batch_begin_commit(bw, ref, b->shard)) {
		int st = shm_batch_status(bw, ref, &c, NULL);

		if (st == SHM_BATCH_COMMITTED)
			return SHM_CHAN_OK; /* a repeat after our restart finished it */
		return st == SHM_BATCH_ABORTED ? SHM_CHAN_EABORTED : SHM_CHAN_EINVAL;
	}
	if (log_mark(b, r, WALFMT_OP_DECISION, ref, b->shard, 0, seq) != 0 ||
	    push_ref(&b->decided, &b->ndecided, &b->cap_decided, ref) != 0)
		return -1;
	return SHM_CHAN_OK;
}

int batch_request(struct batches *b, const struct batch_round *r, const struct shm_chan_op_view *v,
		  uint32_t slot, uint32_t gen, uint64_t *seq)
{
	uint64_t ref = v->batch.ref;
	struct shm_batch_word *bw = shm_batch_word(b->seg, ref);

	*seq = 0;
	/* A client names its own slot's words only. */
	if (bw == NULL || shm_batch_ref_slot(ref) != slot || v->batch.primary >= b->seg->hdr->shard_count)
		return SHM_CHAN_EINVAL;
	switch (v->op) {
	case SHM_CHAN_OP_PSET:
	case SHM_CHAN_OP_PDEL:
		if (v->klen == 0 || v->klen > SHM_KEY_MAX || v->vlen > SHM_VALUE_MAX)
			return SHM_CHAN_EINVAL;
		return stage_part_op(b, r, v, gen, bw, seq);
	case SHM_CHAN_OP_COMMIT:
		return v->batch.primary == b->shard ? stage_commit(b, r, ref, bw, seq) : SHM_CHAN_EINVAL;
	case SHM_CHAN_OP_ABORT:
		if (v->batch.primary != b->shard)
			return SHM_CHAN_EINVAL;
		if (!shm_batch_abort(bw, ref, b->shard))
			return SHM_CHAN_EINVAL; /* committing or committed: too late */
		b->aborted++;
		return SHM_CHAN_OK;
	default: /* RESOLVE: the sweep before the next round does it */
		return SHM_CHAN_OK;
	}
}

/* ---------- resolution ---------- */

/* Stage the resolution of every key of p that still holds its intent,
 * and the RESOLVED record. -1: no memory (nothing else failed: the round
 * has just begun, no key of p is staged in it). */
static int part_resolve(struct batches *b, const struct batch_round *r, struct batch_part *p)
{
	uint64_t seq;

	for (size_t off = 0; off < p->kbytes;) {
		uint32_t klen;
		const uint8_t *key;
		struct shm_kv kv;
		struct shm_staged *s;
		int rc;

		memcpy(&klen, p->keys + off, 4);
		key = p->keys + off + 4;
		off += 4 + klen;
		if (shm_writer_get(r->w, key, klen, &kv) != SHM_OK || kv.intent == NULL ||
		    shm_intent_ref(&kv) != p->ref)
			continue; /* replaced by a later write */
		if ((s = stage_slot(r->stage)) == NULL)
			return -1;
		rc = shm_writer_stage_settle(r->w, kv.off, p->committed, s);
		if (rc == SHM_ENOMEM)
			return 1; /* the copy: try again at the next sweep */
		if (rc == SHM_OK)
			stage_add(r->stage);
	}
	if (log_mark(b, r, WALFMT_OP_RESOLVED, p->ref, p->primary,
		     p->committed ? WALFMT_COMMITTED : WALFMT_ABORTED, &seq) != 0)
		return -1;
	p->phase = SETTLED;
	return 0;
}

static void part_drop(struct batches *b, size_t i)
{
	struct batch_part *p = &b->parts[i];

	if (p->held)
		shm_batch_release(shm_batch_word(b->seg, p->ref), p->ref, b->shard);
	free(p->keys);
	b->parts[i] = b->parts[--b->n];
}

/* A part whose word may have become final: committed, its first grace
 * begins (resolved in part_grace); aborted (by anybody, or now by us: a
 * client gone before its decision), resolved at once. Returns 1 if it
 * waits for something timed, 0 if not (a request or a registry change
 * wakes the shard), -1 (no memory). */
static int part_news(struct batches *b, const struct batch_round *r, struct batch_part *p)
{
	struct shm_batch_word *bw = shm_batch_word(b->seg, p->ref);
	uint64_t c = 0;

	switch (shm_batch_status(bw, p->ref, &c, NULL)) {
	case SHM_BATCH_COMMITTED:
		p->committed = true;
		p->commit = c;
		p->epoch = shm_epoch_bump(b->seg->hdr);
		p->phase = GRACE1;
		return 1;
	case SHM_BATCH_UNDECIDED:
		if (r->alive(r->arg, shm_batch_ref_slot(p->ref), p->gen))
			return 1;
		if (!shm_batch_abort(bw, p->ref, b->shard))
			return 1;
		b->aborted++;
		/* fall through */
	case SHM_BATCH_ABORTED:
		p->committed = false;
		return part_resolve(b, r, p) < 0 ? -1 : 1;
	default: /* COMMITTING, CLAIMING: the primary is at it */
		return 1;
	}
}

/* A part in a grace (min: shm_epoch_min, loaded after every bump of this
 * sweep): resolved once its first grace allows; 0 once its second is over
 * (to drop); 1 while it waits; -1 (no memory). */
static int part_grace(struct batches *b, const struct batch_round *r, struct batch_part *p, uint64_t min)
{
	switch (p->phase) {
	case GRACE1:
		if (!shm_batch_settle_ready(r->readers, r->nreaders, min, p->epoch, p->commit))
			return 1;
		return part_resolve(b, r, p) < 0 ? -1 : 1;
	case GRACE2:
		return min >= p->epoch ? 0 : 1;
	default: /* not in a grace */
		return 1;
	}
}

/* After a round: drop the parts whose second grace is over; returns how
 * many are still in a grace. */
static int parts_drop_done(struct batches *b, const struct batch_round *r)
{
	uint64_t min = shm_epoch_min(r->readers, r->nreaders);
	int waiting = 0;

	for (size_t i = 0; i < b->n;) {
		if (b->parts[i].phase == GRACE2 && min >= b->parts[i].epoch) {
			part_drop(b, i);
			continue;
		}
		waiting += b->parts[i].phase == GRACE1 || b->parts[i].phase == GRACE2;
		i++;
	}
	return waiting;
}

int batch_round_logged(struct batches *b, const struct batch_round *r)
{
	bool settled = false;

	b->again = false;
	for (size_t i = 0; i < b->ndecided; i++) {
		uint64_t ref = b->decided[i];

		shm_batch_commit(b->seg, shm_batch_word(b->seg, ref), ref, b->shard);
		b->committed++;
		b->again |= part_find(b, ref) != NULL; /* our own part: resolvable now */
	}
	b->ndecided = 0;
	/* Parts resolved in this round are published now: their second
	 * grace begins, and is often over at once (no reader inside). */
	for (size_t i = 0; i < b->n; i++) {
		struct batch_part *p = &b->parts[i];

		if (p->phase == SETTLED) {
			p->epoch = shm_epoch_bump(b->seg->hdr);
			p->phase = GRACE2;
			settled = true;
		}
	}
	return settled ? parts_drop_done(b, r) : 0;
}

int batch_sweep(struct batches *b, const struct batch_round *r)
{
	bool graces = false;
	int waiting = 0, rc;

	/* First every word's news (bumping the epoch for first graces), then
	 * one shm_epoch_min for every grace: one that began in this sweep is
	 * often over at once. */
	for (size_t i = 0; i < b->n; i++) {
		struct batch_part *p = &b->parts[i];

		if (p->phase == OPEN) {
			if ((rc = part_news(b, r, p)) < 0)
				return -1;
			waiting += rc > 0 && p->phase == OPEN;
		} else if (p->phase == SETTLED) { /* published by the last round */
			p->epoch = shm_epoch_bump(b->seg->hdr);
			p->phase = GRACE2;
		}
		graces |= p->phase == GRACE1 || p->phase == GRACE2;
	}
	if (!graces)
		return waiting;
	uint64_t min = shm_epoch_min(r->readers, r->nreaders);

	for (size_t i = 0; i < b->n;) {
		struct batch_part *p = &b->parts[i];
		bool grace = p->phase == GRACE1 || p->phase == GRACE2;

		if (grace && (rc = part_grace(b, r, p, min)) < 0)
			return -1;
		if (grace && rc == 0) {
			part_drop(b, i);
			continue;
		}
		/* one resolved now (SETTLED) waits for its round instead */
		waiting += p->phase == GRACE1 || p->phase == GRACE2;
		i++;
	}
	return waiting;
}
