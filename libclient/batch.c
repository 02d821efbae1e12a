/*
 * batch.c — amora_batch: atomic batches over the shards (amora.h;
 * DESIGN.md §16; the words and intents: shm/batch.h; the shards' side:
 * shardd/batch.h).
 *
 * One try: take a free status word of our slot (its last batch final and
 * resolved everywhere) and the next tag; send every op as PSET/PDEL to its
 * key's shard, all shards at once; wait for every answer. All prepared:
 * COMMIT to the primary (the shard of the first op), whose answer is the
 * batch's outcome; then RESOLVE to each participant, not waited for (it
 * only wakes them). Any failure: ABORT to the primary, RESOLVE to the
 * participants, and the failure decides: a conflict with another batch
 * (busy) or an abort by a restarting shard is tried again after a random
 * pause, up to the handle's timeout; anything else is returned.
 *
 * Answers to batch requests are taken out of wait.c's deferred failures
 * (they belong to the batch): db->bwatch says from which id on, per shard.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libclient/client.h"
#include "shm/batch.h"
#include "shm/clock.h"

/* The ops that count (the last of each key), in the caller's order. */
struct plan {
	size_t *keep;  /* indexes into ops */
	uint32_t *shard;
	size_t n;
	uint32_t primary;
	uint8_t *touched; /* [shards] */
	uint64_t *last;   /* [shards]: the last id sent there in this try */
};

static int check_ops(amora *db, const struct amora_op *ops, size_t n)
{
	uint64_t bytes = 0;

	if (ops == NULL && n > 0)
		return client_fail(db, AMORA_EINVAL, "ops is NULL with n %zu", n);
	if (n > AMORA_BATCH_OPS_MAX)
		return client_fail(db, AMORA_EINVAL, "%zu ops, the limit is %u", n, AMORA_BATCH_OPS_MAX);
	for (size_t i = 0; i < n; i++) {
		const struct amora_op *o = &ops[i];
		int rc;

		if (o->op != AMORA_OP_SET && o->op != AMORA_OP_DEL)
			return client_fail(db, AMORA_EINVAL, "op %zu: kind %d is neither AMORA_OP_SET nor AMORA_OP_DEL",
					   i, o->op);
		rc = o->op == AMORA_OP_SET ? client_check_kv(db, o->key, o->klen, o->val, o->vlen)
					   : client_check_key(db, o->key, o->klen);
		if (rc != AMORA_OK) {
			char why[sizeof(db->errmsg)];

			snprintf(why, sizeof(why), "%s", db->errmsg);
			return client_fail(db, rc, "op %zu: %s", i, why);
		}
		bytes += o->klen + (o->op == AMORA_OP_SET ? o->vlen : 0);
	}
	if (bytes > AMORA_BATCH_BYTES_MAX)
		return client_fail(db, AMORA_EINVAL, "%llu bytes of keys and values, the limit is %u",
				   (unsigned long long)bytes, AMORA_BATCH_BYTES_MAX);
	return AMORA_OK;
}

static bool same_key(const struct amora_op *a, const struct amora_op *b)
{
	return a->klen == b->klen && memcmp(a->key, b->key, a->klen) == 0;
}

/* The plan: drop every op a later op of the same key overrides. */
static int plan_make(amora *db, const struct amora_op *ops, size_t n, struct plan *p)
{
	size_t cap = 16;
	size_t *seen;

	while (cap < 2 * n)
		cap *= 2;
	seen = calloc(cap, sizeof(*seen)); /* index + 1 of the last op of a key */
	p->keep = malloc((n ? n : 1) * sizeof(*p->keep));
	p->shard = malloc((n ? n : 1) * sizeof(*p->shard));
	p->touched = calloc(db->shards, 1);
	p->last = calloc(db->shards, sizeof(*p->last));
	if (seen == NULL || p->keep == NULL || p->shard == NULL || p->touched == NULL || p->last == NULL) {
		free(seen);
		return client_fail(db, AMORA_ESYS, "out of memory for a batch of %zu ops", n);
	}
	for (size_t i = 0; i < n; i++) {
		size_t j = (size_t)shm_hash(ops[i].key, ops[i].klen) & (cap - 1);

		while (seen[j] != 0 && !same_key(&ops[seen[j] - 1], &ops[i]))
			j = (j + 1) & (cap - 1);
		seen[j] = i + 1;
	}
	p->n = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t h = shm_hash(ops[i].key, ops[i].klen);
		size_t j = (size_t)h & (cap - 1);

		while (!same_key(&ops[seen[j] - 1], &ops[i]))
			j = (j + 1) & (cap - 1);
		if (seen[j] != i + 1)
			continue; /* a later op of the key wins */
		p->keep[p->n] = i;
		p->shard[p->n] = shm_place(ops[i].key, ops[i].klen, h, db->shards, db->placement);
		p->touched[p->shard[p->n]] = 1;
		p->n++;
	}
	p->primary = p->n > 0 ? p->shard[0] : 0;
	free(seen);
	return AMORA_OK;
}

static void plan_free(struct plan *p)
{
	free(p->keep);
	free(p->shard);
	free(p->touched);
	free(p->last);
}

/* A word whose last batch is final and resolved everywhere, and the ref of
 * its next batch; 0 when all 64 are in use. */
static uint64_t word_take(amora *db)
{
	for (uint32_t k = 0; k < SHM_BATCH_WORDS; k++) {
		uint32_t w = (db->batch_next + k) % SHM_BATCH_WORDS;
		const struct shm_batch_word *bw = shm_batch_word(&db->seg, shm_batch_ref(1, db->slot, w));
		uint64_t tag = (atomic_load_explicit(&bw->state, memory_order_acquire) >> 24) + 1;
		uint64_t ref = shm_batch_ref(tag, db->slot, w);

		if (tag <= SHM_BATCH_TAG_MAX && shm_batch_reusable(bw, ref)) {
			db->batch_next = w + 1;
			return ref;
		}
	}
	return 0;
}

/* Send one request, waiting for room. */
static int send_req(amora *db, uint32_t s, uint8_t op, const void *key, size_t klen,
		    const struct shm_chan_batch *b, const void *val, size_t vlen, uint64_t *id)
{
	struct client_ticket t;
	int rc;

	while ((rc = client_submit_to(db, s, op, key, klen, b, val, vlen, &t)) == CLIENT_EAGAIN) {
		rc = client_wait_room(db, s, klen + sizeof(*b), vlen);
		if (rc != AMORA_OK)
			return rc;
	}
	if (rc == AMORA_OK)
		*id = t.id;
	return rc;
}

/* Wait for shard s's answers up to `upto`; the batch's failures land in
 * db->bwatch. */
static int wait_for(amora *db, uint32_t s, uint64_t upto)
{
	int status;

	if (db->q[s].staged > 0)
		client_publish(db, s);
	return client_wait_done(db, s, upto, 0, &status);
}

/* Tell every participant to look at the word (RESOLVE), without waiting. */
static void resolve_hint(amora *db, const struct plan *p, const struct shm_chan_batch *b)
{
	for (uint32_t s = 0; s < db->shards; s++) {
		uint64_t id;

		if (!p->touched[s] || send_req(db, s, SHM_CHAN_OP_RESOLVE, NULL, 0, b, NULL, 0, &id) != AMORA_OK)
			continue;
		client_publish(db, s);
	}
}

/* Ask the primary to abort (the batch had not been committed). */
static void abort_batch(amora *db, const struct plan *p, const struct shm_chan_batch *b)
{
	uint64_t id;
	char keep[sizeof(db->errmsg)];

	memcpy(keep, db->errmsg, sizeof(keep)); /* the failure that made us abort */
	if (send_req(db, p->primary, SHM_CHAN_OP_ABORT, NULL, 0, b, NULL, 0, &id) == AMORA_OK &&
	    wait_for(db, p->primary, id) == AMORA_OK)
		resolve_hint(db, p, b);
	memcpy(db->errmsg, keep, sizeof(keep));
}

/* The failure an answer brought (bwatch), as the call reports it. */
static int answer_fail(amora *db, const struct client_batch_watch *bw)
{
	if (bw->status == SHM_CHAN_EBUSY)
		return client_fail(db, CLIENT_EAGAIN, "keys of the batch are held by other batches");
	if (bw->status == SHM_CHAN_EABORTED)
		return client_fail(db, CLIENT_EAGAIN, "the batch was aborted by a restarting shard");
	return client_fail(db, bw->status, "shard %u refused its part of the batch: %s", bw->shard,
			   amora_strerror(bw->status));
}

/* The commit's answer did not come (rc): the word may still tell. */
static int commit_outcome(amora *db, uint64_t ref, int rc)
{
	uint64_t c;
	int st = shm_batch_status(shm_batch_word(&db->seg, ref), ref, &c, NULL);
	char why[sizeof(db->errmsg)];

	if (st == SHM_BATCH_COMMITTED)
		return AMORA_OK;
	if (st == SHM_BATCH_ABORTED)
		return client_fail(db, CLIENT_EAGAIN, "the batch was aborted while its primary restarted");
	snprintf(why, sizeof(why), "%s", db->errmsg);
	return client_fail(db, rc, "%s; the batch's outcome is not known yet (all or nothing: its primary "
			   "decides it when it comes back)", why);
}

/* One try: AMORA_OK (committed), CLIENT_EAGAIN (try again), or the error. */
static int batch_try(amora *db, const struct amora_op *ops, struct plan *p, uint64_t ref)
{
	struct shm_chan_batch b = { .ref = ref, .primary = p->primary };
	struct client_batch_watch *bw = db->bwatch;
	uint64_t id = 0;
	int rc = AMORA_OK;

	bw->status = 0;
	for (uint32_t s = 0; s < db->shards; s++)
		bw->from[s] = db->q[s].next_id + 1;
	for (size_t i = 0; i < p->n && rc == AMORA_OK; i++) {
		const struct amora_op *o = &ops[p->keep[i]];
		bool set = o->op == AMORA_OP_SET;

		rc = send_req(db, p->shard[i], set ? SHM_CHAN_OP_PSET : SHM_CHAN_OP_PDEL, o->key, o->klen, &b,
			      set ? o->val : NULL, set ? o->vlen : 0, &p->last[p->shard[i]]);
	}
	for (uint32_t s = 0; s < db->shards; s++)
		if (p->touched[s] && db->q[s].staged > 0)
			client_publish(db, s);
	for (uint32_t s = 0; s < db->shards && rc == AMORA_OK; s++)
		if (p->touched[s])
			rc = wait_for(db, s, p->last[s]);
	if (rc == AMORA_OK && bw->status != 0)
		rc = answer_fail(db, bw);
	if (rc != AMORA_OK) {
		abort_batch(db, p, &b);
		return rc;
	}
	rc = send_req(db, p->primary, SHM_CHAN_OP_COMMIT, NULL, 0, &b, NULL, 0, &id);
	if (rc == AMORA_OK)
		rc = wait_for(db, p->primary, id);
	if (rc == AMORA_OK && bw->status != 0)
		rc = answer_fail(db, bw);
	if (rc != AMORA_OK && rc != CLIENT_EAGAIN)
		rc = commit_outcome(db, ref, rc);
	if (rc == CLIENT_EAGAIN) {
		resolve_hint(db, p, &b); /* aborted: the parts go back */
		return rc;
	}
	return rc;
}

/* A random pause before the next try: 50 us doubling to 5 ms. */
static void backoff(unsigned attempt)
{
	uint64_t max_us = 50ull << (attempt < 7 ? attempt : 7);
	uint64_t us = max_us / 2 + (uint64_t)rand() % (max_us / 2 + 1);
	struct timespec ts = { 0, (long)(us * 1000) };

	nanosleep(&ts, NULL);
}

int amora_batch(amora *db, const struct amora_op *ops, size_t n)
{
	struct client_batch_watch watch = { 0 };
	struct plan p = { 0 };
	uint64_t start = shm_now_ns(), limit;
	unsigned attempt = 0;
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	if ((rc = check_ops(db, ops, n)) != AMORA_OK)
		return rc;
	if ((rc = amora_flush(db)) != AMORA_OK)
		return rc;
	if ((rc = plan_make(db, ops, n, &p)) != AMORA_OK) {
		plan_free(&p);
		return rc;
	}
	if ((watch.from = calloc(db->shards, sizeof(*watch.from))) == NULL) {
		plan_free(&p);
		return client_fail(db, AMORA_ESYS, "out of memory for a batch");
	}
	limit = (uint64_t)db->timeout_ms * 1000000ull;
	db->bwatch = &watch;
	for (;;) {
		uint64_t ref = word_take(db);

		rc = ref != 0 ? batch_try(db, ops, &p, ref) : client_fail(db, CLIENT_EAGAIN, "all 64 batch words of this client are still being resolved");
		if (rc != CLIENT_EAGAIN)
			break;
		if (shm_now_ns() - start > limit) {
			char why[sizeof(db->errmsg)];

			snprintf(why, sizeof(why), "%s", db->errmsg);
			rc = client_fail(db, AMORA_ETIMEDOUT, "batch not applied within %d ms: %s", db->timeout_ms, why);
			break;
		}
		backoff(attempt++);
	}
	db->bwatch = NULL;
	free(watch.from);
	plan_free(&p);
	if (rc == AMORA_OK) {
		db->batches++;
		db->sets += n;
	}
	return rc;
}
