/*
 * wait.c — the one blocking primitive of libamora (client.h), for the
 * public blocking calls (write.c) alone: wait until a shard has room for
 * a request, or has answered.
 *
 * A wait sleeps on the completion ring's futex at once (or the SQ's
 * space bell), in slices of WAIT_SLICE_MS, and between slices looks for
 * a reason to stop: a cut-off, a dead coordinator, a FAILED shard, the
 * handle's timeout. It does not spin before sleeping: a spinning client
 * holds a CPU the woken shard could run on, and spinning measured slower
 * (README, "Costs behind the design").
 *
 * The answers it reaps on the way include those of requests nobody waits
 * for (buffered sets, a write whose caller stopped waiting at a timeout):
 * the first failure among them is kept in the handle for the next public
 * call that reports it (client_take_deferred).
 */
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>

#include "libclient/client.h"
#include "shm/clock.h"

#define WAIT_SLICE_MS 20 /* sleep at most this long between checks */

bool client_coordinator_alive(amora *db)
{
	struct pollfd p = { .fd = db->sock, .events = POLLIN | POLLRDHUP };
	char c;

	if (db->gone)
		return false;
	if (poll(&p, 1, 0) > 0 &&
	    ((p.revents & (POLLHUP | POLLRDHUP | POLLERR)) ||
	     recv(db->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0))
		db->gone = true;
	return !db->gone;
}

/* Why waiting for shard s must stop now, or AMORA_OK to go on. */
static int wait_problem(amora *db, uint32_t s, uint64_t start)
{
	uint32_t cut = atomic_load_explicit(&db->hdr->cut_off, memory_order_acquire);
	uint32_t st = atomic_load(&shm_shard_at(&db->seg, s)->state);

	if (cut == SHM_CHAN_CUT_BY_AMORAD)
		return client_fail(db, AMORA_EBADRING, "amorad cut this client off: it stayed in one read "
				   "section for seconds (stopped or stuck) while writers waited");
	if (cut != 0)
		return client_fail(db, AMORA_EBADRING, "shard %u cut this client off", cut - 1);
	if (!client_coordinator_alive(db))
		return client_fail(db, AMORA_EGONE, "the coordinator closed the connection");
	if (st == SHM_SHARD_FAILED)
		return client_fail_shard_stopped(db, s);
	if (shm_now_ns() - start > (uint64_t)db->timeout_ms * 1000000ull) {
		if (st != SHM_SHARD_READY)
			return client_fail(db, AMORA_ERESTARTING, "shard %u did not come back within %d ms", s,
					   db->timeout_ms);
		return client_fail(db, AMORA_ETIMEDOUT, "shard %u did not answer within %d ms", s,
				   db->timeout_ms);
	}
	return AMORA_OK;
}

/* What a wait does with each answer it reaps. */
struct awaited {
	amora *db;
	uint64_t want; /* the id whose status the waiter wants, 0: none */
	int *status;
};

static void answer_take(void *arg, const struct client_done *d)
{
	struct awaited *w = arg;
	amora *db = w->db;

	bool wanted = w->want != 0 && d->first <= w->want && w->want <= d->id;
	struct client_batch_watch *bw = db->bwatch;

	/* A batch's answer (batch.c): a failed one is a single request. */
	if (bw != NULL && d->id >= bw->from[d->shard]) {
		if (d->status != AMORA_OK && bw->status == 0) {
			bw->status = d->status;
			bw->shard = d->shard;
		}
		return;
	}
	if (wanted)
		*w->status = d->status;
	if ((!wanted || d->first < d->id) && d->status != AMORA_OK && db->deferred == 0) {
		db->deferred = d->status;
		snprintf(db->deferred_msg, sizeof(db->deferred_msg), "a buffered write to shard %u failed: %s",
			 d->shard, amora_strerror(d->status));
	}
}

/* Reap shard s's answers; *status gets the one to `want`. */
static int reap(amora *db, uint32_t s, uint64_t want, int *status)
{
	struct awaited w = { db, want, status };
	int rc = client_reap(db, s, answer_take, &w);

	return rc < 0 ? rc : AMORA_OK;
}

int client_wait_done(amora *db, uint32_t s, uint64_t upto, uint64_t want, int *status)
{
	struct client_queue *q = &db->q[s];
	uint64_t start = shm_now_ns();
	int rc;

	for (;;) {
		rc = reap(db, s, want, status);
		if (rc != AMORA_OK || q->done_id >= upto)
			return rc;
		/* Problems are looked for only when a slice passes without
		 * an answer: the checks cost a system call. */
		if (shm_ring_wait_data(&q->cq, WAIT_SLICE_MS) == SHM_ETIMEDOUT) {
			rc = wait_problem(db, s, start);
			if (rc != AMORA_OK)
				return rc;
		}
	}
}

/* Ring shard s for what it has staged and wait for its answers up to
 * `upto`. */
static int wait_answered(amora *db, uint32_t s, uint64_t upto)
{
	int status;

	if (db->q[s].staged > 0)
		client_publish(db, s);
	return client_wait_done(db, s, upto, 0, &status);
}

/* Wait until shard s's SQ has `len` bytes free, reaping meanwhile (an
 * answer the shard cannot push keeps it from freeing space). A corrupt SQ
 * is left for client_submit to report. */
static int wait_space(amora *db, uint32_t s, uint32_t len)
{
	struct client_queue *q = &db->q[s];
	uint64_t start = 0; /* read the clock only once we have to wait */
	int status, rc;

	while (shm_ring_wait_space(&q->sq, len, 0) == SHM_ETIMEDOUT) {
		if (q->staged > 0)
			client_publish(db, s);
		if (start == 0)
			start = shm_now_ns();
		rc = wait_problem(db, s, start);
		if (rc != AMORA_OK)
			return rc;
		rc = reap(db, s, 0, &status);
		if (rc != AMORA_OK)
			return rc;
		shm_ring_wait_space(&q->sq, len, WAIT_SLICE_MS);
	}
	return AMORA_OK;
}

int client_wait_room(amora *db, uint32_t s, size_t klen, size_t vlen)
{
	struct client_queue *q = &db->q[s];
	bool bulk = client_req_bulk(q, klen, vlen);
	int rc;

	if (bulk && client_bulk_busy(db)) {
		rc = wait_answered(db, db->bulk_shard, db->bulk_id);
		if (rc != AMORA_OK)
			return rc;
	}
	if (client_inflight_full(q)) {
		rc = wait_answered(db, s, q->next_id - CLIENT_CQ_CAPACITY / 2);
		if (rc != AMORA_OK)
			return rc;
	}
	return wait_space(db, s, client_req_bytes(klen, vlen, bulk));
}

int client_take_deferred(amora *db)
{
	int rc = db->deferred;

	if (rc != 0) {
		snprintf(db->errmsg, sizeof(db->errmsg), "%s", db->deferred_msg);
		db->deferred = 0;
	}
	return rc;
}
