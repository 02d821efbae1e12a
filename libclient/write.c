/*
 * write.c — the public writes (amora.h), thin layers over the write core
 * (client_submit, client_publish) and its wait (client_wait_*).
 *
 * A synchronous write (amora_set, amora_del) submits, rings its shard
 * and waits for its own answer. A buffered set is submitted only: its
 * shard is rung once BUFFERED_BATCH sets are staged for it (a batch worth
 * a wake-up), or by amora_flush, which rings every shard with staged sets
 * and waits until every request in flight is answered. A failure among
 * answers nobody waited for is reported by the next amora_set, amora_del
 * or amora_flush (wait.c keeps it).
 */
#include "libclient/client.h"

#define BUFFERED_BATCH 256 /* staged buffered sets that make a batch */

/* The start of every write: check the arguments, count the call. */
static int write_begin(amora *db, uint8_t op, const void *key, size_t klen, const void *val,
		       size_t vlen)
{
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	rc = client_check_kv(db, key, klen, val, vlen);
	if (rc != AMORA_OK)
		return rc;
	if (op == SHM_CHAN_OP_DEL)
		db->dels++;
	else
		db->sets++;
	return AMORA_OK;
}

/* client_submit, waiting for room whenever the shard has none. */
static int submit_wait(amora *db, uint8_t op, const void *key, size_t klen, const void *val,
		       size_t vlen, struct client_ticket *t)
{
	int rc;

	while ((rc = client_submit(db, op, key, klen, val, vlen, t)) == CLIENT_EAGAIN) {
		rc = client_wait_room(db, t->shard, klen, vlen);
		if (rc != AMORA_OK)
			return rc;
	}
	return rc;
}

static int write_sync(amora *db, uint8_t op, const void *key, size_t klen, const void *val,
		      size_t vlen, struct client_ticket *t)
{
	int status = AMORA_OK, rc;

	rc = write_begin(db, op, key, klen, val, vlen);
	if (rc == AMORA_OK)
		rc = submit_wait(db, op, key, klen, val, vlen, t);
	if (rc != AMORA_OK)
		return rc;
	client_publish(db, t->shard);
	rc = client_wait_done(db, t->shard, t->id, t->id, &status);
	if (rc != AMORA_OK)
		return rc;
	if (status != AMORA_OK) {
		if (status != AMORA_ENOTFOUND)
			client_fail(db, status, "shard %u: %s", t->shard, amora_strerror(status));
		else
			client_fail(db, status, "no such key");
		return status;
	}
	return client_take_deferred(db);
}

int amora_set(amora *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct client_ticket t = { .shard = UINT32_MAX };
	int rc;

	AMORA_PROBE(op__begin, AMORA_PROBE_SET, klen, vlen);
	rc = write_sync(db, SHM_CHAN_OP_SET, key, klen, val, vlen, &t);
	AMORA_PROBE(op__end, AMORA_PROBE_SET, (int32_t)t.shard, klen, vlen, rc);
	return rc;
}

int amora_del(amora *db, const void *key, size_t klen)
{
	struct client_ticket t = { .shard = UINT32_MAX };
	int rc;

	AMORA_PROBE(op__begin, AMORA_PROBE_DEL, klen, 0);
	rc = write_sync(db, SHM_CHAN_OP_DEL, key, klen, NULL, 0, &t);
	AMORA_PROBE(op__end, AMORA_PROBE_DEL, (int32_t)t.shard, klen, 0, rc);
	return rc;
}

static int set_buffered(amora *db, const void *key, size_t klen, const void *val, size_t vlen,
			struct client_ticket *t)
{
	int rc;

	rc = write_begin(db, SHM_CHAN_OP_SET, key, klen, val, vlen);
	if (rc == AMORA_OK)
		rc = submit_wait(db, SHM_CHAN_OP_SET, key, klen, val, vlen, t);
	if (rc != AMORA_OK)
		return rc;
	if (db->q[t->shard].staged >= BUFFERED_BATCH)
		client_publish(db, t->shard);
	return AMORA_OK;
}

int amora_set_buffered(amora *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct client_ticket t = { .shard = UINT32_MAX };
	int rc;

	AMORA_PROBE(op__begin, AMORA_PROBE_SET_BUFFERED, klen, vlen);
	rc = set_buffered(db, key, klen, val, vlen, &t);
	AMORA_PROBE(op__end, AMORA_PROBE_SET_BUFFERED, (int32_t)t.shard, klen, vlen, rc);
	return rc;
}

static int flush(amora *db)
{
	int status, rc = AMORA_OK;

	for (uint32_t s = 0; s < db->shards; s++)
		if (db->q[s].staged > 0)
			client_publish(db, s);
	for (uint32_t s = 0; s < db->shards && rc == AMORA_OK; s++)
		if (db->q[s].done_id < db->q[s].next_id)
			rc = client_wait_done(db, s, db->q[s].next_id, 0, &status);
	if (rc != AMORA_OK)
		return rc;
	return client_take_deferred(db);
}

int amora_flush(amora *db)
{
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	AMORA_PROBE(op__begin, AMORA_PROBE_FLUSH, 0, 0);
	rc = flush(db);
	AMORA_PROBE(op__end, AMORA_PROBE_FLUSH, -1, 0, 0, rc);
	return rc;
}
