/*
 * store.c — the store's state as a client sees it (amora.h): counters and
 * shard states read from the data segment (amora_stats,
 * amora_server_stats, amora_shard_stats, amora_shard_status), and a round
 * trip to amorad on the control socket (amora_heartbeat; amora_checkpoint,
 * which then waits for every shard's checkpoint in the segment).
 */
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>

#include "libclient/client.h"

int amora_stats(amora *db, struct amora_stats *st)
{
	struct shm_store_stats ss;

	if (db == NULL)
		return AMORA_EINVAL;
	if (st == NULL)
		return client_fail(db, AMORA_EINVAL, "st is NULL");
	memset(st, 0, sizeof(*st));
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	shm_store_stats(&db->seg, &ss);
	shm_epoch_leave(&db->hdr->epoch);
	st->shards = db->shards;
	st->shards_ready = ss.ready;
	st->shards_failed = ss.failed;
	st->keys = ss.keys;
	st->memory_limit = db->seg.size;
	st->memory_used = ss.used_bytes;
	st->record_bytes = ss.requested_bytes;
	st->fragmentation = ss.used_bytes ? 1.0 - (double)ss.requested_bytes / (double)ss.used_bytes : 0.0;
	st->gets = db->gets;
	st->sets = db->sets;
	st->dels = db->dels;
	return AMORA_OK;
}

/* The sizes of the structs' first versions (amora.h, "ABI"): a caller
 * passes at least this. They stay when fields are appended. */
#define SERVER_STATS_V1 (offsetof(struct amora_server_stats, writes) + sizeof(struct amora_write_counts))
#define SHARD_STATS_V1 (offsetof(struct amora_shard_stats, restarts) + sizeof(uint32_t))

/* A sized struct's arguments (amora.h, "ABI"): AMORA_OK or AMORA_EINVAL. */
static int check_sized(amora *db, const void *out, size_t size, size_t v1, const char *what)
{
	if (out == NULL)
		return client_fail(db, AMORA_EINVAL, "out is NULL");
	if (size < v1)
		return client_fail(db, AMORA_EINVAL, "size %zu is below struct %s's %zu", size, what, v1);
	return AMORA_OK;
}

static struct amora_write_counts write_counts(const struct shm_write_counts *w)
{
	return (struct amora_write_counts){ w->requests, w->log_writes, w->log_records, w->log_bytes,
					    w->log_syncs };
}

/* amora.h's rule for sized structs: the caller's first `size` bytes get
 * ours, what lies beyond ours is zeroed. */
static void fill_sized(void *out, size_t size, const void *ours, size_t have)
{
	memcpy(out, ours, size < have ? size : have);
	if (size > have)
		memset((char *)out + have, 0, size - have);
}

int amora_server_stats(amora *db, struct amora_server_stats *out, size_t size)
{
	struct amora_server_stats st;
	struct shm_amorad_stats as;
	struct shm_store_stats ss;

	if (db == NULL)
		return AMORA_EINVAL;
	if (check_sized(db, out, size, SERVER_STATS_V1, "amora_server_stats") != AMORA_OK)
		return AMORA_EINVAL;
	shm_amorad_stats(&db->seg, &as);
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	shm_store_stats(&db->seg, &ss);
	shm_epoch_leave(&db->hdr->epoch);
	st = (struct amora_server_stats){
		.commands_processed = as.commands_processed,
		.connections_received = as.connections_received,
		.connections_rejected = as.connections_rejected,
		.connected_clients = as.connected_clients,
		.attached_clients = as.attached_clients,
		.writes = write_counts(&ss.w),
		.batches_committed = ss.w.batches_committed,
		.batches_aborted = ss.w.batches_aborted,
		.batch_parts_recovered = ss.w.batch_parts_recovered,
		.checkpoints = ss.ck.checkpoints,
		.checkpoint_bytes = ss.ck.bytes,
		.log_disk_bytes = ss.ck.log_disk,
	};
	fill_sized(out, size, &st, sizeof(st));
	return AMORA_OK;
}

int amora_shard_stats(amora *db, uint32_t shard, struct amora_shard_stats *out, size_t size)
{
	struct amora_shard_stats st;
	struct shm_shard_stats ss;

	if (db == NULL)
		return AMORA_EINVAL;
	if (check_sized(db, out, size, SHARD_STATS_V1, "amora_shard_stats") != AMORA_OK)
		return AMORA_EINVAL;
	if (shard >= db->shards)
		return client_fail(db, AMORA_EINVAL, "no shard %u: the store has %u", shard, db->shards);
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	shm_shard_stats(&db->seg, shard, &ss);
	shm_epoch_leave(&db->hdr->epoch);
	st = (struct amora_shard_stats){
		.state = shm_shard_state_name(ss.state),
		.cause = shm_fail_cause_token(ss.cause),
		.keys = ss.keys,
		.memory_used = ss.used_bytes,
		.writes = write_counts(&ss.w),
		.restarts = ss.restarts,
		.batches_committed = ss.w.batches_committed,
		.batches_aborted = ss.w.batches_aborted,
		.batch_parts_recovered = ss.w.batch_parts_recovered,
		.checkpoints = ss.ck.checkpoints,
		.checkpoint_seq = ss.ck.seq,
		.log_disk_bytes = ss.ck.log_disk,
	};
	fill_sized(out, size, &st, sizeof(st));
	return AMORA_OK;
}

/* One reply line of the control socket (up to \r\n, which is cut). */
static int control_line(amora *db, const char *what, char *buf, size_t cap)
{
	size_t got = 0;

	while (got < 2 || buf[got - 2] != '\r' || buf[got - 1] != '\n') {
		struct pollfd p = { .fd = db->sock, .events = POLLIN };
		ssize_t n;

		if (got + 1 >= cap)
			return client_fail(db, AMORA_EPROTO, "answer to %s too long", what);
		if (poll(&p, 1, db->timeout_ms) <= 0)
			return client_fail(db, AMORA_ETIMEDOUT, "no answer to %s within %d ms", what, db->timeout_ms);
		if ((n = recv(db->sock, buf + got, 1, 0)) <= 0) {
			db->gone = true;
			return client_fail(db, AMORA_EGONE, "the coordinator closed the connection");
		}
		got += (size_t)n;
	}
	buf[got - 2] = '\0';
	return AMORA_OK;
}

int amora_heartbeat(amora *db)
{
	static const char ping[] = "*1\r\n$4\r\nPING\r\n";
	char buf[64];
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	if (db->gone || send(db->sock, ping, sizeof(ping) - 1, MSG_NOSIGNAL) != sizeof(ping) - 1)
		return client_fail(db, AMORA_EGONE, "the coordinator closed the connection");
	if ((rc = control_line(db, "PING", buf, sizeof(buf))) != AMORA_OK)
		return rc;
	if (strcmp(buf, "+PONG") != 0)
		return client_fail(db, AMORA_EPROTO, "unexpected answer to PING");
	/* A shard stopped for good outweighs one that is coming back. */
	for (uint32_t s = 0; s < db->shards; s++) {
		const struct shm_shard *sh = shm_shard_at(&db->seg, s);
		uint32_t st = atomic_load_explicit(&sh->state, memory_order_acquire);

		if (st == SHM_SHARD_FAILED)
			return client_fail_shard_stopped(db, s);
		if (st != SHM_SHARD_READY && rc == AMORA_OK)
			rc = client_fail(db, AMORA_ERESTARTING, "shard %u is %s, not serving yet", s,
					 shm_shard_state_name(st));
	}
	return rc;
}

int amora_checkpoint(amora *db)
{
	static const char req[] = "*1\r\n$16\r\nAMORA.CHECKPOINT\r\n";
	struct timespec nap = { 0, 2000000 };
	char line[256], *end;
	unsigned long long n;
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	if (db->gone || send(db->sock, req, sizeof(req) - 1, MSG_NOSIGNAL) != sizeof(req) - 1)
		return client_fail(db, AMORA_EGONE, "the coordinator closed the connection");
	if ((rc = control_line(db, "AMORA.CHECKPOINT", line, sizeof(line))) != AMORA_OK)
		return rc;
	if (line[0] == '-')
		return client_fail(db, strstr(line, "--sync none") ? AMORA_EINVAL : AMORA_EPROTO, "%s", line + 1);
	n = strtoull(line + 1, &end, 10);
	if (line[0] != ':' || *end != '\0' || n == 0)
		return client_fail(db, AMORA_EPROTO, "unexpected answer to AMORA.CHECKPOINT");
	for (uint32_t s = 0; s < db->shards; s++) {
		const struct shm_shard *sh = shm_shard_at(&db->seg, s);

		/* acquire: pairs with the shard's release store once the file is renamed */
		while (atomic_load_explicit(&sh->ckpt_served, memory_order_acquire) < n) {
			if (atomic_load_explicit(&sh->state, memory_order_acquire) == SHM_SHARD_FAILED)
				return client_fail_shard_stopped(db, s);
			if (!client_coordinator_alive(db))
				return client_fail(db, AMORA_EGONE, "the coordinator went away during the checkpoint");
			nanosleep(&nap, NULL);
		}
	}
	return AMORA_OK;
}

_Static_assert((int)AMORA_SHARD_STARTING == (int)SHM_SHARD_STARTING &&
	       (int)AMORA_SHARD_READY == (int)SHM_SHARD_READY &&
	       (int)AMORA_SHARD_RESTARTING == (int)SHM_SHARD_RESTARTING &&
	       (int)AMORA_SHARD_FAILED == (int)SHM_SHARD_FAILED &&
	       (int)AMORA_SHARD_STOPPED == (int)SHM_SHARD_STOPPED, "amora.h's shard states are segment.h's");

int amora_shard_status(amora *db, uint32_t shard, struct amora_shard_status *out)
{
	const struct shm_shard *sh;
	uint32_t st;

	if (db == NULL)
		return AMORA_EINVAL;
	if (out == NULL)
		return client_fail(db, AMORA_EINVAL, "out is NULL");
	if (shard >= db->shards)
		return client_fail(db, AMORA_EINVAL, "no shard %u: the store has %u", shard, db->shards);
	sh = shm_shard_at(&db->seg, shard);
	st = atomic_load_explicit(&sh->state, memory_order_acquire);
	out->state = (int)st;
	out->name = shm_shard_state_name(st);
	out->cause = st == SHM_SHARD_FAILED ? shm_fail_cause_str(atomic_load(&sh->cause)) : "";
	out->restarts = atomic_load(&sh->restarts);
	return AMORA_OK;
}
