/*
 * read.c — reads (amora.h), which never leave the process: hash the key,
 * pick its shard, announce an epoch in our own slot, look the key up in
 * the read-only mapping of the data segment, copy the value, leave the
 * epoch. The shard that may free the record meanwhile waits for our
 * epoch (shm/epoch.h), so the copy is always of a whole, live record.
 * Everything loaded from the segment is checked by shm/; a violation is
 * AMORA_ECORRUPT, never a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "libclient/client.h"
#include "shm/batch.h"

#define MGET_WINDOW 16             /* lookups whose cache misses overlap */

/* Shard s's current table, as a view validated once per table
 * (shm_table_view_memo, db->views[s]). SHM_ENOTFOUND: no table yet. */
static int shard_view(amora *db, const struct shm_shard *sh, uint32_t s,
		      const struct shm_table_view **v)
{
	/* Acquire, pairs with the shard's release store of table_off: the
	 * table's header and groups are visible before its offset. */
	uint64_t off = atomic_load_explicit(&sh->table_off, memory_order_acquire);

	if (off == 0)
		return SHM_ENOTFOUND;
	return shm_table_view_memo(&db->seg, off, &db->views[s], v);
}

static int read_status(amora *db, int rc)
{
	if (rc == SHM_OK)
		return AMORA_OK;
	if (rc == SHM_ENOTFOUND)
		return AMORA_ENOTFOUND;
	return client_fail(db, AMORA_ECORRUPT, "shard table failed validation: %s", shm_strerror(rc));
}

/* A FAILED shard's table cannot vouch for its keys (one that failed at
 * start has none: every key would read as missing), so a read of one is
 * AMORA_EFAILED. The state shares the descriptor line the lookup loads
 * table_off from: the check costs one load from a line in cache. */
static int lookup(amora *db, const void *key, size_t klen, uint64_t h, uint32_t s, struct shm_kv *kv)
{
	const struct shm_shard *sh = shm_shard_at(&db->seg, s);
	const struct shm_table_view *v;
	int rc;

	if (client_shard_stopped(sh))
		return client_fail_shard_stopped(db, s);
	rc = shard_view(db, sh, s, &v);
	if (rc == SHM_OK)
		rc = shm_shard_find(&db->seg, sh, v, key, (uint32_t)klen, h, SHM_BATCH_ANY, kv);
	return read_status(db, rc);
}

/* Look `key` up inside one read section and hand the record to fn (which
 * runs inside it: the record cannot be freed meanwhile). `op` names the
 * public call for the probes (shm/probe.h). */
static int with_value(amora *db, int op, const void *key, size_t klen,
		      int (*fn)(amora *db, const struct shm_kv *kv, void *arg), void *arg)
{
	struct shm_kv kv = { .vlen = 0 };
	uint64_t h;
	uint32_t s;
	int rc;

	AMORA_PROBE(op__begin, op, klen, 0);
	rc = client_check_key(db, key, klen);
	if (rc != AMORA_OK) {
		AMORA_PROBE(op__end, op, -1, klen, 0, rc);
		return rc;
	}
	db->gets++;
	h = shm_hash(key, klen);
	s = shm_place(key, klen, h, db->shards, db->placement);
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	rc = lookup(db, key, klen, h, s, &kv);
	if (rc == AMORA_OK && fn != NULL)
		rc = fn(db, &kv, arg);
	shm_epoch_leave(&db->hdr->epoch);
	AMORA_PROBE(op__end, op, s, klen, kv.vlen, rc);
	return rc;
}

struct copy_to { void *buf; size_t cap; size_t *vlen; };

static int copy_value(amora *db, const struct shm_kv *kv, void *arg)
{
	struct copy_to *c = arg;

	(void)db;
	*c->vlen = kv->vlen;
	if (c->cap > 0)
		memcpy(c->buf, kv->val, kv->vlen < c->cap ? kv->vlen : c->cap);
	return AMORA_OK;
}

int amora_get(amora *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
	struct copy_to c = { buf, cap, vlen };

	if (db == NULL)
		return AMORA_EINVAL;
	if (vlen == NULL)
		return client_fail(db, AMORA_EINVAL, "vlen is NULL");
	if (buf == NULL && cap > 0)
		return client_fail(db, AMORA_EINVAL, "buf is NULL with cap %zu", cap);
	return with_value(db, AMORA_PROBE_GET, key, klen, copy_value, &c);
}

struct alloc_to { void **val; size_t *vlen; };

static int alloc_value(amora *db, const struct shm_kv *kv, void *arg)
{
	struct alloc_to *a = arg;

	*a->val = malloc(kv->vlen ? kv->vlen : 1);
	if (*a->val == NULL)
		return client_fail(db, AMORA_ESYS, "out of memory for a %u-byte value", kv->vlen);
	memcpy(*a->val, kv->val, kv->vlen);
	*a->vlen = kv->vlen;
	return AMORA_OK;
}

int amora_get_alloc(amora *db, const void *key, size_t klen, void **val, size_t *vlen)
{
	struct alloc_to a = { val, vlen };

	if (db == NULL)
		return AMORA_EINVAL;
	if (val == NULL || vlen == NULL)
		return client_fail(db, AMORA_EINVAL, "%s is NULL", val == NULL ? "val" : "vlen");
	*val = NULL;
	return with_value(db, AMORA_PROBE_GET_ALLOC, key, klen, alloc_value, &a);
}

int amora_has(amora *db, const void *key, size_t klen)
{
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	rc = with_value(db, AMORA_PROBE_HAS, key, klen, NULL, NULL);
	if (rc == AMORA_ENOTFOUND)
		return 0;
	return rc == AMORA_OK ? 1 : rc;
}

/* Prefix the message of a failure about keys[i] of an amora_mget with
 * "key i: " (formatted from a copy: client_fail overwrites the message). */
static int fail_at_key(amora *db, int code, size_t i)
{
	char why[sizeof(db->errmsg)];

	memcpy(why, db->errmsg, sizeof(why));
	return client_fail(db, code, "key %zu: %s", i, why);
}

#define MGET_STOPPED 1 /* rc[j] of a key whose shard is FAILED (not an shm_ code) */

/* Look up keys[i..i+n) (n <= MGET_WINDOW) in three passes, so that the
 * cache misses of the window overlap instead of queueing: hash every key,
 * check its shard's state and start loading its first group; then start
 * loading the record its first matching slot points at; then probe.
 * Returns the number found or an error naming the key. */
static int mget_window(amora *db, size_t i, size_t n, const void *const keys[],
		       const size_t klens[], uint64_t start, amora_mget_fn fn, void *arg)
{
	const struct shm_table_view *v[MGET_WINDOW];
	const struct shm_shard *sh[MGET_WINDOW];
	uint32_t si[MGET_WINDOW];
	uint64_t h[MGET_WINDOW];
	int rc[MGET_WINDOW], found = 0;

	for (size_t j = 0; j < n; j++) {
		h[j] = shm_hash(keys[i + j], klens[i + j]);
		si[j] = shm_place(keys[i + j], klens[i + j], h[j], db->shards, db->placement);
		sh[j] = shm_shard_at(&db->seg, si[j]);
		if (client_shard_stopped(sh[j]))
			rc[j] = MGET_STOPPED;
		else if ((rc[j] = shard_view(db, sh[j], si[j], &v[j])) == SHM_OK)
			shm_table_prefetch(v[j], h[j]);
	}
	for (size_t j = 0; j < n; j++)
		if (rc[j] == SHM_OK)
			shm_table_prefetch_record(&db->seg, v[j], h[j]);
	for (size_t j = 0; j < n; j++) {
		struct shm_kv kv;

		if (rc[j] == SHM_OK)
			rc[j] = shm_shard_find(&db->seg, sh[j], v[j], keys[i + j], (uint32_t)klens[i + j],
					       h[j], start, &kv);
		if (rc[j] == SHM_OK) {
			fn(arg, i + j, kv.val, kv.vlen);
			found++;
		} else if (rc[j] == MGET_STOPPED) {
			client_fail_shard_stopped(db, si[j]);
			return fail_at_key(db, AMORA_EFAILED, i + j);
		} else if (rc[j] != SHM_ENOTFOUND) {
			return fail_at_key(db, read_status(db, rc[j]), i + j);
		}
	}
	return found;
}

int amora_mget(amora *db, size_t n, const void *const keys[], const size_t klens[],
	       amora_mget_fn fn, void *arg)
{
	int found = 0;
	uint64_t start;

	if (db == NULL)
		return AMORA_EINVAL;
	if (fn == NULL)
		return client_fail(db, AMORA_EINVAL, "fn is NULL");
	if (n > 0 && (keys == NULL || klens == NULL))
		return client_fail(db, AMORA_EINVAL, "%s is NULL with n %zu", keys == NULL ? "keys" : "klens", n);
	AMORA_PROBE(op__begin, AMORA_PROBE_MGET, n, 0);
	for (size_t i = 0; i < n; i++) {
		int rc = client_check_key(db, keys[i], klens[i]);

		if (rc != AMORA_OK) {
			AMORA_PROBE(op__end, AMORA_PROBE_MGET, -1, n, 0, rc);
			return fail_at_key(db, rc, i);
		}
	}
	/* One read section for the whole batch, and one start number: no
	 * atomic batch is seen in part (shm/batch.h); taken inside the
	 * section, so batches resolved meanwhile waited for it. */
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	start = shm_batch_start(&db->seg);
	for (size_t i = 0; i < n && found >= 0; i += MGET_WINDOW) {
		size_t w = n - i < MGET_WINDOW ? n - i : MGET_WINDOW;
		int rc = mget_window(db, i, w, keys, klens, start, fn, arg);

		found = rc < 0 ? rc : found + rc;
	}
	shm_epoch_leave(&db->hdr->epoch);
	db->gets += n;
	AMORA_PROBE(op__end, AMORA_PROBE_MGET, -1, n, 0, found);
	return found;
}
