/*
 * recover.c — rebuilding a shard at start (recover.h).
 */
#include <stdatomic.h>

#include "log.h"
#include "recover.h"
#include "shardd.h"

struct replay_ctx {
	struct shm_writer *w;
	int rc; /* shm_ result of the last record replayed */
};

static int replay(void *arg, uint64_t seq, int op, const void *key, uint32_t klen, const void *val,
		  uint32_t vlen)
{
	struct replay_ctx *c = arg;
	struct shm_shard *sh = c->w->sh;
	int rc;

	/* The record gets the sequence number it had in the log. */
	atomic_store_explicit(&sh->seq, seq - 1, memory_order_relaxed);
	if (op == WAL_OP_SET)
		rc = shm_writer_set(c->w, key, klen, val, vlen);
	else
		rc = shm_writer_del(c->w, key, klen);
	if (rc == SHM_ENOTFOUND)
		rc = SHM_OK;
	atomic_store_explicit(&sh->seq, seq, memory_order_relaxed);
	c->rc = rc;
	return rc == SHM_OK ? 0 : -1;
}

/* Rebuild the shard from its log into a fresh table, then publish it. */
static int replay_log(struct shm_writer *w, const struct shard_recovery *r, uint64_t *last)
{
	struct replay_ctx c = { w, SHM_OK };
	int rc = shm_writer_open_fresh(w, r->seg, r->id, 0);

	if (rc != SHM_OK) {
		log_error("cannot create the table: %s", shm_strerror(rc));
		return rc == SHM_ENOMEM ? SHARDD_EXIT_NOMEM : SHARDD_EXIT_CRASH;
	}
	atomic_store_explicit(&w->sh->seq, 0, memory_order_relaxed);
	rc = wal_recover(r->wal, replay, &c, last);
	if (rc != WAL_OK) {
		shm_writer_discard(w);
		if (rc == WAL_EAPPLY && c.rc == SHM_ENOMEM) {
			log_error("not enough shared memory to rebuild the shard beside the table readers "
				  "use; raise --memory or restart amorad");
			return SHARDD_EXIT_NOMEM;
		}
		log_error("recovery failed: %s", wal_errmsg(r->wal));
		return rc == WAL_ECORRUPT ? SHARDD_EXIT_CORRUPT : SHARDD_EXIT_CRASH;
	}
	w->readers = r->readers;
	w->nreaders = r->nreaders;
	if (shm_writer_publish(w) != SHM_OK)
		log_warn("the previous table could not be queued for freeing; its memory stays taken");
	return 0;
}

int shard_recover(struct shm_writer *w, const struct shard_recovery *r, uint64_t *last)
{
	int rc;

	*last = 0;
	if (r->mode == WAL_SYNC_NONE) {
		/* No log to rebuild from: adopt the table the previous
		 * incarnation left (every published state of it is whole). */
		rc = shm_writer_open(w, r->seg, r->id, 0);
		if (rc != SHM_OK) {
			log_error("cannot create the table: %s", shm_strerror(rc));
			return SHARDD_EXIT_CRASH;
		}
		w->readers = r->readers;
		w->nreaders = r->nreaders;
		*last = atomic_load(&w->sh->seq);
	} else if ((rc = replay_log(w, r, last)) != 0) {
		return rc;
	}
	atomic_store_explicit(&w->sh->seq, *last, memory_order_release);
	return 0;
}
