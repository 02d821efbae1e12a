/*
 * submit.c — the write core (client.h): requests into a shard's
 * submission ring, answers out of its completion ring. Nothing here
 * waits: where there is no room it says CLIENT_EAGAIN.
 *
 * A request is struct shm_chan_req, the key, (a batch's) struct
 * shm_chan_batch, then the value, or with
 * SHM_CHAN_REQ_BULK the value in the channel's bulk area (shm/chan.h).
 * Everything read back from the completion ring is checked: an answer
 * must have the size of one and carry an id we issued; anything else is
 * AMORA_ECORRUPT, never a crash.
 */
#include <string.h>

#include "libclient/client.h"

/* Whether shard s can take a request of `len` SQ bytes now (bulk: with
 * its value in the bulk area). */
static int room_check(amora *db, uint32_t s, uint32_t len, bool bulk)
{
	struct client_queue *q = &db->q[s];
	int rc;

	if ((bulk && client_bulk_busy(db)) || client_inflight_full(q))
		return CLIENT_EAGAIN;
	rc = shm_ring_wait_space(&q->sq, len, 0);
	if (rc == SHM_ETIMEDOUT)
		return CLIENT_EAGAIN;
	if (rc != SHM_OK)
		return client_fail(db, AMORA_ECORRUPT, "submission ring of shard %u: %s", s, shm_strerror(rc));
	return AMORA_OK;
}

int client_submit(amora *db, uint8_t op, const void *key, size_t klen, const void *val, size_t vlen,
		  struct client_ticket *t)
{
	uint32_t s = shm_place(key, klen, shm_hash(key, klen), db->shards, db->placement);

	return client_submit_to(db, s, op, key, klen, NULL, val, vlen, t);
}

int client_submit_to(amora *db, uint32_t s, uint8_t op, const void *key, size_t klen,
		     const struct shm_chan_batch *b, const void *val, size_t vlen, struct client_ticket *t)
{
	struct client_queue *q = &db->q[s];
	size_t extra = b != NULL ? sizeof(*b) : 0; /* after the key: sized as key bytes */
	bool bulk = client_req_bulk(q, klen + extra, vlen);
	uint32_t len = client_req_bytes(klen + extra, vlen, bulk);
	struct shm_chan_req r = { .id = q->next_id + 1, .op = op, .flags = bulk ? SHM_CHAN_REQ_BULK : 0,
				  .klen = (uint32_t)klen, .vlen = (uint32_t)vlen };
	int rc;

	t->shard = s;
	/* (Whether the coordinator lives is checked while waiting: a poll
	 * here would add a system call to every write.) */
	if (db->gone)
		return client_fail(db, AMORA_EGONE, "the coordinator closed the connection");
	if (atomic_load(&db->hdr->cut_off) != 0)
		return client_fail(db, AMORA_EBADRING, "a shard cut this client off");
	/* A FAILED shard never takes its requests again: refuse before
	 * queueing (one load; a shard failing later is seen while waiting). */
	if (client_shard_stopped(shm_shard_at(&db->seg, s)))
		return client_fail_shard_stopped(db, s);
	rc = room_check(db, s, len, bulk);
	if (rc != AMORA_OK)
		return rc;
	if (bulk)
		memcpy(db->chan + shm_chan_bulk_off(db->shards), val, vlen);
	memcpy(db->req, &r, sizeof(r));
	if (klen > 0)
		memcpy(db->req + sizeof(r), key, klen);
	if (b != NULL)
		memcpy(db->req + sizeof(r) + klen, b, sizeof(*b));
	if (!bulk && vlen > 0)
		memcpy(db->req + sizeof(r) + klen + extra, val, vlen);
	if (shm_ring_push(&q->sq, db->req, len) != SHM_OK)
		return client_fail(db, AMORA_ECORRUPT, "submission ring of shard %u is corrupt", s);
	q->next_id = r.id;
	q->staged++;
	AMORA_PROBE(req__submit, s, db->slot, r.id, op);
	if (bulk) {
		db->bulk_shard = s;
		db->bulk_id = r.id;
	}
	t->id = r.id;
	return AMORA_OK;
}

void client_publish(amora *db, uint32_t s)
{
	struct client_queue *q = &db->q[s];

	shm_ring_publish(&q->sq);
	q->staged = 0;
	/* Our flag and word only: nobody else's wake-up depends on us. */
	shm_chan_notify(q->words, q->asleep);
}

int client_reap(amora *db, uint32_t s, client_reap_fn fn, void *arg)
{
	struct client_queue *q = &db->q[s];
	const void *rec;
	uint32_t len;
	int rc, n = 0;

	while ((rc = shm_ring_peek(&q->cq, &rec, &len)) == SHM_OK) {
		struct shm_chan_cqe c;

		if (len != sizeof(c))
			return client_fail(db, AMORA_ECORRUPT, "shard %u sent a malformed completion", s);
		memcpy(&c, rec, sizeof(c));
		shm_ring_consume(&q->cq);
		if (c.count == 0 || c.count > c.id)
			return client_fail(db, AMORA_ECORRUPT, "shard %u sent a completion of %u requests "
					   "ending at %llu", s, c.count, (unsigned long long)c.id);
		if (c.id <= q->done_id)
			continue; /* answered again by a restarted shard */
		if (c.id > q->next_id)
			return client_fail(db, AMORA_ECORRUPT, "shard %u completed request %llu never sent", s,
					   (unsigned long long)c.id);
		/* A restarted shard may answer again the start of a run. */
		uint64_t first = c.id - c.count + 1 > q->done_id ? c.id - c.count + 1 : q->done_id + 1;

		q->done_id = c.id;
		for (uint64_t id = first; id <= c.id; id++)
			AMORA_PROBE(req__complete, s, db->slot, id, c.status);
		fn(arg, &(struct client_done){ .shard = s, .first = first, .id = c.id, .status = c.status,
					       .seq = c.seq });
		n++;
	}
	shm_ring_release(&q->cq);
	if (rc != SHM_EEMPTY)
		return client_fail(db, AMORA_ECORRUPT, "completion ring of shard %u is corrupt", s);
	return n;
}
