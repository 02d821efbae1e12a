/*
 * client.h — libamora's insides: the handle, and the contract between the
 * files of libclient/. Nothing declared here leaves libamora.so (it
 * exports only what amora.h marks AMORA_API); the static libamora.a
 * carries the client_* symbols like the shm_* ones.
 *
 * The files, one idea each:
 *   attach.c   a handle's life: attach over the control socket, map the
 *              data segment and the channel, detach (amora_open,
 *              amora_set_timeout, amora_close)
 *   error.c    codes and messages (amora_strerror, amora_errmsg,
 *              client_fail*)
 *   read.c     reads from the shared tables (amora_get, amora_get_alloc,
 *              amora_has, amora_mget)
 *   scan.c     ordered scans merging the shards' sorted indexes
 *              (amora_iter_open/_next/_close, amora_count,
 *              amora_has_prefix)
 *   submit.c   the write core: submit, publish, reap. Never blocks.
 *   wait.c     the one blocking primitive: sleep until a shard has room
 *              or has answered, within the handle's timeout; the failures
 *              nobody waited for
 *   write.c    the public writes over submit.c and wait.c (amora_set,
 *              amora_del, amora_set_buffered, amora_flush)
 *   batch.c    atomic batches over submit.c and wait.c (amora_batch)
 *   store.c    the store's state (amora_stats, amora_shard_status,
 *              amora_heartbeat)
 *   version.c  amora_version
 *
 * Threads: one thread at a time per handle (amora.h). Nothing here takes
 * a lock; no function may run for one handle on two threads at once,
 * and a callback that client_reap or amora_mget runs must not call
 * libamora on the same handle.
 *
 * Errors: a function that can fail returns AMORA_OK or a negative
 * AMORA_E* code (amora.h) after client_fail has put the message into
 * db->errmsg. The one exception is CLIENT_EAGAIN: not a failure ("no room
 * now"), errmsg untouched, never returned by a public call.
 *
 * The write core (submit.c). Per shard s the handle has a submission ring
 * (SQ: we produce requests) and a completion ring (CQ: the shard produces
 * answers) in its channel (shm/chan.h). Requests to shard s get ids
 * 1, 2, 3, ... (q[s].next_id is the last issued); the shard answers them
 * in id order, so an answer is matched to its request by (shard, id) and
 * q[s].done_id is the last one answered.
 *
 *   client_submit   stage a SET or DEL in its key's shard's SQ and return
 *                   at once: a ticket (shard, id), or CLIENT_EAGAIN when
 *                   that shard has no room now (publish and reap, then
 *                   submit again; the blocking calls sleep in
 *                   client_wait_room first)
 *   client_publish  make what is staged for shard s visible, ring its
 *                   doorbell
 *   client_reap     hand each new answer of shard s (a run of ids with
 *                   one status, and a seq) to a callback, without waiting
 *
 * Flow control: per (handle, shard) at most CLIENT_INFLIGHT_MAX requests
 * are in flight (submitted, not answered), fewer than the CQ holds, so a
 * shard always has room to answer and never waits for this client. A
 * value too large for a ring record goes through the channel's bulk area,
 * one at a time for the whole handle, until its request is answered (a
 * restarted shard never re-reads an answered request: chan.h).
 *
 * Knowing when to reap: a CQ's bell is a futex word (shm/ring.h), which
 * poll(2) cannot wait on. The blocking calls sleep on it (wait.c). A
 * caller that must not block (amorad's event loop, DESIGN.md §12) has no
 * ready fd here yet: it can reap on its timer, or have a thread sleep on
 * the bell and feed an eventfd.
 */
#ifndef AMORA_LIBCLIENT_CLIENT_H
#define AMORA_LIBCLIENT_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libclient/amora.h"
#include "shm/chan.h"
#include "shm/probe.h"
#include "shm/shard.h"

/* Completions carry chan.h's wire codes; they are ours (amora.h). */
_Static_assert((int)SHM_CHAN_OK == (int)AMORA_OK && (int)SHM_CHAN_ENOTFOUND == (int)AMORA_ENOTFOUND &&
		       (int)SHM_CHAN_EINVAL == (int)AMORA_EINVAL && (int)SHM_CHAN_EFULL == (int)AMORA_EFULL &&
		       (int)SHM_CHAN_EIO == (int)AMORA_EIO && (int)SHM_CHAN_ECORRUPT == (int)AMORA_ECORRUPT,
	       "wire status codes are amora_err codes");
_Static_assert(AMORA_KEY_MAX == SHM_KEY_MAX && AMORA_VALUE_MAX == SHM_VALUE_MAX,
	       "amora.h's limits are the store's");

/* "No room now, try later": outside enum amora_err, internal only. */
enum { CLIENT_EAGAIN = -100 };

#define CLIENT_CQ_CAPACITY (SHM_CHAN_CQ_DATA / SHM_CHAN_CQE_BYTES) /* completions a CQ holds */
#define CLIENT_INFLIGHT_MAX (CLIENT_CQ_CAPACITY - 1)

/* One shard's rings as this handle sees them. Set up by attach.c; the
 * rings, ids and `staged` are the write core's (submit.c), which alone
 * pushes to sq, consumes cq and moves the ids. wait.c reads the ids and
 * sleeps on the rings' bells (shm_ring_wait_space and _wait_data, which
 * also publish sq's tail and release cq's consumed space). */
struct client_queue {
	struct shm_ring sq, cq;
	uint64_t next_id;  /* last id issued */
	uint64_t done_id;  /* last id answered */
	uint32_t staged;   /* pushed since the doorbell last rang */
	struct shm_chan_words *words;  /* our pending flag and wake word for the shard */
	const _Atomic uint32_t *asleep;/* the shard's sleeping flag (read-only mapping) */
};

/* While amora_batch runs: answers to requests from `from[s]` on (per
 * shard) are the batch's, and the first failure among them is kept here
 * instead of among the deferred ones (wait.c). */
struct client_batch_watch {
	uint64_t *from;  /* [shards] */
	int status;      /* the first failed answer's (a wire status), 0: none */
	uint32_t shard;  /* ... and its shard */
};

/* A handle. Who writes what:
 *   attach.c  sock, seg, chan, chan_bytes, hdr, shards, slot, placement, q, req
 *             (at amora_open; fixed until amora_close frees them),
 *             timeout_ms (amora_set_timeout)
 *   submit.c  q[s]'s rings, ids and staged; req; bulk_shard, bulk_id
 *   wait.c    deferred, deferred_msg; gone (store.c's heartbeat too)
 *   read.c, write.c  gets, sets, dels
 *   error.c   errmsg (client_fail, from every file) */
struct amora {
	int sock;
	struct shm_seg seg;
	uint8_t *chan;
	size_t chan_bytes;
	struct shm_chan_hdr *hdr;
	uint32_t shards, slot;
	uint32_t placement; /* enum shm_placement: the segment's, read once at attach */
	struct client_queue *q;
	struct shm_table_memo *views; /* [shards]: each shard's last validated table view (read.c) */
	uint8_t *req;      /* one request being built */
	int timeout_ms;
	int deferred;      /* first failure nobody waited for, 0: none */
	char deferred_msg[160];
	uint32_t bulk_shard;/* the request whose value is in the bulk area: */
	uint64_t bulk_id;   /* busy until q[bulk_shard].done_id reaches it (0: never used) */
	bool gone;         /* the coordinator closed the control socket */
	struct amora_iter *iters; /* open iterators that began (scan.c), oldest start first */
	struct client_batch_watch *bwatch; /* the batch under way (batch.c), NULL: none */
	uint32_t batch_next; /* the status word batch.c looks at first */
	uint64_t batches;    /* batches committed */
	uint64_t gets, sets, dels;
	char errmsg[256];
};

/* ---------- errors (error.c) ---------- */

/* Put the message into db->errmsg; returns code. */
int client_fail(amora *db, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same for amora_open, which has no handle to keep it: the message
 * amora_errmsg(NULL) gives on this thread. Returns code. */
int client_fail_open(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* AMORA_EFAILED for shard s, whose state was loaded (acquire) as FAILED:
 * its cause was stored before that state (shardd.h). */
int client_fail_shard_stopped(amora *db, uint32_t s);

static inline bool client_shard_stopped(const struct shm_shard *sh)
{
	return atomic_load_explicit(&sh->state, memory_order_acquire) == SHM_SHARD_FAILED;
}

/* AMORA_OK, or AMORA_EINVAL for a key no call accepts. */
static inline int client_check_key(amora *db, const void *key, size_t klen)
{
	if (key == NULL && klen > 0)
		return client_fail(db, AMORA_EINVAL, "key is NULL with length %zu", klen);
	if (key == NULL || klen == 0)
		return client_fail(db, AMORA_EINVAL, "empty key");
	if (klen > AMORA_KEY_MAX)
		return client_fail(db, AMORA_EINVAL, "key is %zu bytes, the limit is %u", klen, AMORA_KEY_MAX);
	return AMORA_OK;
}

/* As client_check_key, and the value (NULL with vlen 0 is fine). */
static inline int client_check_kv(amora *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	int rc = client_check_key(db, key, klen);

	if (rc != AMORA_OK)
		return rc;
	if (vlen > AMORA_VALUE_MAX)
		return client_fail(db, AMORA_EINVAL, "value is %zu bytes, the limit is %u", vlen,
				   AMORA_VALUE_MAX);
	if (val == NULL && vlen > 0)
		return client_fail(db, AMORA_EINVAL, "value is NULL with length %zu", vlen);
	return AMORA_OK;
}

/* ---------- the write core (submit.c): never blocks ---------- */

/* A submitted request: answered once q[shard].done_id >= id. */
struct client_ticket {
	uint32_t shard;
	uint64_t id;
};

/* An answer, as client_reap hands it over: requests first .. id of one
 * shard, answered with one status (a completion's run, chan.h). */
struct client_done {
	uint32_t shard;
	uint64_t first, id;
	int status; /* AMORA_OK, or the writes' AMORA_E* code (chan.h's wire codes) */
	uint64_t seq; /* the sequence number the last one got in its shard's log */
};

typedef void (*client_reap_fn)(void *arg, const struct client_done *d);

/* Whether a request with this key and value sends its value through the
 * bulk area, and the SQ bytes it takes then. */
static inline bool client_req_bulk(const struct client_queue *q, size_t klen, size_t vlen)
{
	return sizeof(struct shm_chan_req) + klen + vlen > shm_ring_max_record(&q->sq);
}

static inline uint32_t client_req_bytes(size_t klen, size_t vlen, bool bulk)
{
	return (uint32_t)(sizeof(struct shm_chan_req) + klen + (bulk ? 0 : vlen));
}

/* The bulk area holds a value its shard has not answered for yet. */
static inline bool client_bulk_busy(const amora *db)
{
	return db->q[db->bulk_shard].done_id < db->bulk_id;
}

static inline bool client_inflight_full(const struct client_queue *q)
{
	return q->next_id - q->done_id >= CLIENT_INFLIGHT_MAX;
}

/* Stage a request (op SHM_CHAN_OP_SET or SHM_CHAN_OP_DEL; key and value
 * checked by client_check_kv) for the key's shard, which sees it once
 * client_publish rings it. t->shard is always set; t->id on AMORA_OK.
 * Returns AMORA_OK; CLIENT_EAGAIN when that shard has no room now (the
 * bulk area is busy, CLIENT_INFLIGHT_MAX requests are in flight, or the
 * SQ is full); AMORA_EGONE, AMORA_EBADRING (cut off) or AMORA_EFAILED
 * (the shard stopped for good), staging nothing; AMORA_ECORRUPT (the SQ
 * failed validation). Checking for room publishes the SQ's tail
 * (shm_ring_wait_space), so a shard that looks at our rings anyway may
 * take staged requests before it is rung. */
int client_submit(amora *db, uint8_t op, const void *key, size_t klen, const void *val, size_t vlen,
		  struct client_ticket *t);

/* The same for shard s, any op (chan.h): a batch's request carries b
 * (else NULL), and COMMIT, ABORT and RESOLVE no key (klen 0). Sized for
 * client_wait_room as klen + sizeof(*b) key bytes. */
int client_submit_to(amora *db, uint32_t s, uint8_t op, const void *key, size_t klen,
		     const struct shm_chan_batch *b, const void *val, size_t vlen, struct client_ticket *t);

/* Make shard s's staged requests visible and ring its doorbell
 * (shm_chan_notify: a futex wake only if it sleeps). */
void client_publish(amora *db, uint32_t s);

/* Consume shard s's new answers, in id order, calling fn for each run of
 * ids a completion answers (a restarted shard's second answer to a
 * request is dropped, also from the start of a run). Returns how many
 * runs it handed over, or AMORA_ECORRUPT (a malformed completion, an id
 * never issued, a corrupt CQ): those before it were handed over. */
int client_reap(amora *db, uint32_t s, client_reap_fn fn, void *arg);

/* ---------- waiting (wait.c): the blocking calls only ---------- */

/* Wait until shard s has answered every id up to `upto`; *status gets the
 * answer to `want` if it comes (0: wait for none). Any other failed answer
 * is kept for client_take_deferred. Sleeps in slices; between them stops
 * with AMORA_EBADRING (cut off), AMORA_EGONE, AMORA_EFAILED,
 * AMORA_ERESTARTING or AMORA_ETIMEDOUT (db->timeout_ms passed), or
 * returns client_reap's AMORA_ECORRUPT. */
int client_wait_done(amora *db, uint32_t s, uint64_t upto, uint64_t want, int *status);

/* Wait until client_submit of a request with these key and value lengths
 * finds room in shard s (after a CLIENT_EAGAIN): publishes what blocks it,
 * waits for the bulk area, for in-flight requests (down to half the CQ)
 * and for SQ space. Errors as client_wait_done. */
int client_wait_room(amora *db, uint32_t s, size_t klen, size_t vlen);
/* Whether the control socket is still open (a poll, no blocking); sets
 * db->gone once it is not. */
bool client_coordinator_alive(amora *db);

/* The first failure kept since the last call (its message into errmsg),
 * or 0; forgets it. */
int client_take_deferred(amora *db);

#endif
