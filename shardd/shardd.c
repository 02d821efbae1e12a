/*
 * shardd.c — the shard loop (DESIGN §1).
 *
 * A shard process is the single writer of its shard: its table, records
 * and log. It starts by rebuilding the shard from its log into a fresh
 * table that readers do not see yet (the table a previous incarnation left
 * stays readable meanwhile), publishes it with one store, and then loops:
 *
 *   1. take the doorbell's pending bits (or, every CHAN_SWEEP_MS, every
 *      attached client: a hostile client could have cleared bits);
 *   2. for each client with work, copy each request out of its SQ, check
 *      it, apply it to the table and add its effect to the log batch,
 *      keeping a completion for it. A client whose CQ has no room for
 *      another completion is left for a later round (its requests wait in
 *      its SQ, nothing is dropped);
 *   3. write the batch to the log with one write(2) and make it durable
 *      per the sync mode (group commit);
 *   4. record in each client's channel the last request id the log now
 *      holds, then publish the completions and release the SQ space. A
 *      next incarnation re-reads what was not released: it answers the
 *      requests up to the recorded id without applying them again (a newer
 *      write of another client may have followed), and applies the rest,
 *      which nobody was told about (chan.h, "Crash safety");
 *   5. sleep on the doorbell when there is nothing to do. No spinning:
 *      64 shards share 2 cores.
 *
 * Failure policy is crash-only. A request with garbage in it cuts off its
 * client (the others go on). A log write or sync that fails is answered
 * with AMORA_EIO for the whole batch and the process exits: the table
 * already holds the batch's effects, and the only state known to be right
 * is the log on disk, which the restarted shard recovers from.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "amora.h"
#include "log.h"
#include "shard.h"
#include "recover.h"
#include "shardd.h"
#include "wal.h"

#define PER_CLIENT_BATCH 256 /* requests taken from one client per round */
#define CQE_BYTES 32         /* ring bytes of one completion record */
#define BATCH_BYTES_MAX (64u << 20) /* a round ends once its log batch is this big */
#define RECLAIM_IDLE_ITEMS 256
#define RECLAIM_IDLE_NS (20 * 1000000ull)

struct peer {
	bool active;  /* rings attached */
	bool bad;     /* cut off for garbage; ignored until its slot is reused */
	uint32_t gen;
	struct ring sq, cq;
	uint64_t decided; /* requests up to this id are applied and logged */
	uint64_t last_id; /* last request taken this round */
	bool touched;     /* requests taken this round */
	uint32_t taken;
};

struct pending {
	uint32_t slot;
	uint32_t gen; /* the client the completion is for, not a later one */
	struct chan_cqe cqe;
};

/* A client channel as this shard maps it. */
struct chanmap {
	uint8_t *base; /* NULL: none */
	uint32_t gen;
	int incoming;  /* fd received for generation incoming_gen, -1: none */
	uint32_t incoming_gen;
};

struct shardd {
	struct engine *e;
	struct chanmap *chans;
	struct shm_epoch_slot **readers; /* each client's epoch slot, for reclamation */
	uint32_t id;
	struct shm_shard *sh;
	struct shm_writer w;
	struct wal wal;
	struct chan_doorbell *bell;
	struct peer *peers;
	uint64_t *again; /* clients with more requests than one round takes */
	uint64_t seen_version;
	uint8_t *req;  /* private copy of one request */
	uint8_t *bulk; /* private copy of a bulk value */
	struct pending *pend;
	size_t npend, cap;
	uint64_t next_sweep_ns;
	uint64_t next_reclaim_ns;
	bool dirty;    /* the batch holds effects to log */
};

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------- channels ---------- */

/* The epoch slot of a client we do not map: never reading. */
static struct shm_epoch_slot idle_slot;

static void chan_unmap(struct shardd *d, uint32_t slot)
{
	struct chanmap *c = &d->chans[slot];

	d->readers[slot] = &idle_slot;
	if (c->base != NULL)
		munmap(c->base, d->e->chan_bytes);
	c->base = NULL;
}

static void chan_use(struct shardd *d, uint32_t slot, uint8_t *base, uint32_t gen)
{
	chan_unmap(d, slot);
	d->chans[slot].base = base;
	d->chans[slot].gen = gen;
	d->readers[slot] = &((struct chan_hdr *)base)->epoch;
}

/* Take the channel fds amorad sent (engine.h); it sends them before it
 * publishes the slots, so they are here when the registry says so. */
static void receive_channels(struct shardd *d)
{
	for (;;) {
		struct engine_chan_msg m;
		char ctl[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { &m, sizeof(m) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
				      .msg_controllen = sizeof(ctl) };
		struct cmsghdr *cm;
		ssize_t n = recvmsg(SHARDD_SOCK_FD, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		int fd = -1;

		if (n < 0)
			return;
		cm = CMSG_FIRSTHDR(&msg);
		if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
		if (fd < 0)
			continue;
		if (n != sizeof(m) || m.slot >= d->e->cfg.max_clients) {
			close(fd);
			continue;
		}
		if (d->chans[m.slot].incoming >= 0)
			close(d->chans[m.slot].incoming);
		d->chans[m.slot].incoming = fd;
		d->chans[m.slot].incoming_gen = m.gen;
	}
}

/* Map the channel of client slot `slot`, generation gen. */
static bool chan_ready(struct shardd *d, uint32_t slot, uint32_t gen)
{
	struct chanmap *c = &d->chans[slot];
	void *p;

	if (c->base != NULL && c->gen == gen)
		return true;
	if (c->incoming < 0 || c->incoming_gen != gen)
		return false;
	p = mmap(NULL, d->e->chan_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->incoming, 0);
	close(c->incoming);
	c->incoming = -1;
	if (p == MAP_FAILED) {
		log_error("cannot map the channel of client slot %u: %s", slot, strerror(errno));
		return false;
	}
	chan_use(d, slot, p, gen);
	return true;
}

/* ---------- clients ---------- */

static void attach_peer(struct shardd *d, uint32_t slot, uint32_t gen)
{
	struct peer *p = &d->peers[slot];
	uint8_t *base;
	uint32_t n = d->e->cfg.shards;

	memset(p, 0, sizeof(*p));
	p->gen = gen;
	if (!chan_ready(d, slot, gen)) {
		log_error("client slot %u: amorad's channel never arrived; ignoring that client", slot);
		p->bad = true;
		return;
	}
	base = d->chans[slot].base;

	if (ring_attach(&p->sq, chan_sq_mem(base, n, d->id), chan_sq_bytes()) != SHM_OK ||
	    ring_attach(&p->cq, chan_cq_mem(base, n, d->id), chan_cq_bytes()) != SHM_OK) {
		log_warn("client slot %u: its rings fail validation; cut off", slot);
		p->bad = true;
		return;
	}
	p->decided = atomic_load_explicit(chan_decided(base, d->id), memory_order_acquire);
	p->active = true;
}

/* Follow the registry: attach new clients, let go of closing ones and
 * acknowledge that to amorad. */
static void sync_peers(struct shardd *d)
{
	struct engine *e = d->e;
	uint64_t v = atomic_load_explicit(&e->reg->version, memory_order_acquire);

	if (v == d->seen_version)
		return;
	d->seen_version = v;
	receive_channels(d);
	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		uint32_t st = atomic_load_explicit(&e->clients[i].state, memory_order_acquire);
		uint32_t gen = atomic_load_explicit(&e->clients[i].gen, memory_order_acquire);
		struct peer *p = &d->peers[i];

		if (st == REG_ACTIVE && (p->gen != gen || !(p->active || p->bad)))
			attach_peer(d, i, gen);
		else if (st != REG_ACTIVE) {
			p->active = p->bad = false;
			chan_unmap(d, i);
			if (st == REG_CLOSING)
				atomic_store_explicit(engine_ack(e, i, d->id), gen, memory_order_release);
		}
	}
}

static void cut_off(struct shardd *d, uint32_t slot, const char *why)
{
	struct peer *p = &d->peers[slot];

	log_warn("client slot %u (pid %d) %s; cut off", slot,
		 atomic_load(&d->e->clients[slot].pid), why);
	atomic_store_explicit(&((struct chan_hdr *)d->chans[slot].base)->cut_off, d->id + 1,
			      memory_order_release);
	p->active = false;
	p->bad = true;
}

/* ---------- requests ---------- */

static int amora_code(int shm_rc)
{
	switch (shm_rc) {
	case SHM_OK: return AMORA_OK;
	case SHM_ENOTFOUND: return AMORA_ENOTFOUND;
	case SHM_EINVAL: return AMORA_EINVAL;
	case SHM_ENOMEM: return AMORA_EFULL;
	default: return AMORA_ECORRUPT;
	}
}

static int add_pending(struct shardd *d, uint32_t slot, uint64_t id, int status, uint64_t seq)
{
	if (d->npend == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		struct pending *p = realloc(d->pend, cap * sizeof(*p));

		if (p == NULL)
			return -1;
		d->pend = p;
		d->cap = cap;
	}
	d->pend[d->npend++] = (struct pending){ slot, d->peers[slot].gen, { id, status, 0, seq } };
	return 0;
}

/* Apply one checked request; returns its status. Effects go to the log
 * batch; a log buffer that cannot grow is fatal (the table already
 * changed), reported as SHM_ESYS. */
static int apply(struct shardd *d, const struct chan_op_view *v, uint64_t *seq)
{
	int rc, wrc;

	if (v->klen == 0 || v->klen > SHM_KEY_MAX || v->vlen > SHM_VALUE_MAX)
		return AMORA_EINVAL;
	if (v->op == CHAN_OP_SET)
		rc = shm_writer_set(&d->w, v->key, v->klen, v->val, v->vlen);
	else
		rc = shm_writer_del(&d->w, v->key, v->klen);
	if (rc != SHM_OK)
		return amora_code(rc);
	*seq = atomic_load_explicit(&d->sh->seq, memory_order_relaxed);
	wrc = wal_batch_add(&d->wal, *seq, v->op == CHAN_OP_SET ? WAL_OP_SET : WAL_OP_DEL, v->key,
			    v->klen, v->val, v->vlen);
	if (wrc != WAL_OK) {
		log_error("cannot add to the log batch: %s", wal_errmsg(&d->wal));
		exit(SHARDD_EXIT_CRASH);
	}
	d->dirty = true;
	return AMORA_OK;
}

/* Take up to PER_CLIENT_BATCH requests from one client. Returns true if it
 * may have more (the caller visits it again next round). */
static bool take_requests(struct shardd *d, uint32_t slot)
{
	struct peer *p = &d->peers[slot];
	uint8_t *bulk_src = d->chans[slot].base + chan_bulk_off(d->e->cfg.shards);
	int64_t room = ring_space(&p->cq);

	if (room < 0) {
		cut_off(d, slot, "moved its completion ring impossibly");
		return false;
	}
	room -= (int64_t)p->taken * CQE_BYTES;
	while (p->taken < PER_CLIENT_BATCH && wal_batch_bytes(&d->wal) < BATCH_BYTES_MAX) {
		struct chan_op_view v;
		const void *rec;
		uint32_t len;
		uint64_t seq = 0;
		int rc;

		/* No room for the completion: only a client that ignores its
		 * completions gets here (libamora bounds what it has in
		 * flight); it waits for the next sweep. */
		if (room < CQE_BYTES)
			return false;
		rc = ring_peek(&p->sq, &rec, &len);
		if (rc == SHM_EEMPTY)
			return false;
		if (rc != SHM_OK || len > ring_max_record(&p->sq)) {
			cut_off(d, slot, "wrote garbage into its submission ring");
			return false;
		}
		/* Copy first: the client can change the bytes while we parse. */
		memcpy(d->req, rec, len);
		if (chan_req_decode(d->req, len, &v) != SHM_OK) {
			cut_off(d, slot, "sent a malformed request");
			return false;
		}
		if (v.id <= p->decided) {
			/* applied and logged by our previous incarnation, which
			 * died before answering: answer, never apply again */
			rc = AMORA_OK;
		} else {
			if (v.flags & CHAN_REQ_BULK) {
				memcpy(d->bulk, bulk_src, v.vlen);
				v.val = d->bulk;
			}
			rc = apply(d, &v, &seq);
			p->last_id = v.id;
		}
		if (add_pending(d, slot, v.id, rc, seq) != 0) {
			log_error("out of memory for completions");
			exit(SHARDD_EXIT_CRASH);
		}
		ring_consume(&p->sq);
		p->taken++;
		p->touched = true;
		room -= CQE_BYTES;
	}
	return true;
}

/* ---------- a round ---------- */

/* Clients to visit in word w: those that rang, those left with more work
 * last round, or all on a sweep. */
static uint64_t take_bits(struct shardd *d, uint32_t w, bool sweep)
{
	uint64_t bits = atomic_exchange_explicit(&d->bell->pending[w], 0, memory_order_acq_rel);

	bits |= d->again[w];
	d->again[w] = 0;
	return sweep ? ~0ull : bits;
}

/* Visit every client with pending work once; returns whether any may have
 * more right away. */
static bool gather(struct shardd *d, bool sweep)
{
	uint32_t n = d->e->cfg.max_clients;
	bool more = false;

	for (uint32_t w = 0; w < (n + 63) / 64; w++) {
		uint64_t bits = take_bits(d, w, sweep);

		while (bits) {
			uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(bits);

			bits &= bits - 1;
			/* A client that rang before we saw it attach: amorad
			 * registered it before answering it, so a fresh look at
			 * the registry finds it. */
			if (slot < n && !d->peers[slot].active)
				sync_peers(d);
			if (slot < n && d->peers[slot].active && take_requests(d, slot)) {
				d->again[w] |= 1ull << (slot % 64);
				more = true;
			}
		}
	}
	return more;
}

static void log_failure(struct shardd *d, const char *what)
{
	log_error("%s: %s; answering the batch with an I/O error and restarting", what,
		  wal_errmsg(&d->wal));
	for (size_t i = 0; i < d->npend; i++)
		if (d->pend[i].cqe.status == AMORA_OK)
			d->pend[i].cqe.status = AMORA_EIO;
}

/* The round is in the log: tell each client's channel how far, before
 * any completion is visible (see chan.h, "Crash safety"). */
static void mark_decided(struct shardd *d)
{
	for (uint32_t i = 0; i < d->e->cfg.max_clients; i++) {
		struct peer *p = &d->peers[i];

		if (p->active && p->last_id > p->decided) {
			p->decided = p->last_id;
			atomic_store_explicit(chan_decided(d->chans[i].base, d->id), p->decided,
					      memory_order_release);
		}
	}
}

/* Log the batch, then hand out completions and free the SQ space. */
static int finish_round(struct shardd *d)
{
	int fatal = 0;

	if (d->dirty) {
		if (wal_batch_commit(&d->wal) != WAL_OK) {
			log_failure(d, "log write failed");
			fatal = SHARDD_EXIT_IO;
		}
		d->dirty = false;
	}
	wal_batch_begin(&d->wal);
	if (!fatal)
		mark_decided(d);
	for (size_t i = 0; i < d->npend; i++) {
		struct pending *q = &d->pend[i];
		struct peer *p = &d->peers[q->slot];

		if (p->active && p->gen == q->gen && ring_push(&p->cq, &q->cqe, sizeof(q->cqe)) != SHM_OK)
			cut_off(d, q->slot, "moved its completion ring impossibly");
	}
	d->npend = 0;
	for (uint32_t i = 0; i < d->e->cfg.max_clients; i++) {
		struct peer *p = &d->peers[i];

		if (!p->touched)
			continue;
		if (p->active) {
			ring_publish(&p->cq);
			ring_release(&p->sq);
		}
		p->touched = false;
		p->taken = 0;
	}
	return fatal;
}

/* ---------- sleeping ---------- */

static int work_ready(void *arg)
{
	struct shardd *d = arg;
	uint32_t words = (d->e->cfg.max_clients + 63) / 64;

	if (stop_requested)
		return 1;
	if (atomic_load_explicit(&d->e->reg->version, memory_order_acquire) != d->seen_version)
		return 1;
	for (uint32_t w = 0; w < words; w++)
		if (atomic_load_explicit(&d->bell->pending[w], memory_order_relaxed))
			return 1;
	return 0;
}

/* Reclaim when idle, but not at every idle moment: a scan costs a
 * membarrier (an IPI to every CPU running a reader), which would double the
 * cost of a lone synchronous write. Returns when to try again (0: nothing
 * is waiting to be freed). */
static uint64_t reclaim_when_idle(struct shardd *d, uint64_t now)
{
	if (d->w.retired.n == 0)
		return 0;
	if (d->w.retired.n >= RECLAIM_IDLE_ITEMS || now >= d->next_reclaim_ns) {
		shm_writer_reclaim(&d->w);
		d->next_reclaim_ns = now + RECLAIM_IDLE_NS;
		if (d->w.retired.n == 0)
			return 0;
	}
	return d->next_reclaim_ns;
}

static void idle(struct shardd *d)
{
	uint64_t now = now_ns();
	int64_t due = wal_next_sync_ns(&d->wal);
	int64_t until = (int64_t)d->next_sweep_ns;
	int64_t reclaim = (int64_t)reclaim_when_idle(d, now);
	int timeout_ms;

	if (due >= 0 && due < until)
		until = due;
	if (reclaim > 0 && reclaim < until)
		until = reclaim;
	timeout_ms = until <= (int64_t)now ? 0 : (int)((until - (int64_t)now) / 1000000) + 1;
	ring_bell_wait(&d->bell->bell, work_ready, d, timeout_ms);
}

/* ---------- start and stop ---------- */

/* One process per shard log: a shard of a previous amorad that is still
 * dying (inside a write) must be gone before this one cuts its tail. */
static int lock_dir(const char *dir)
{
	char path[4300];
	int fd;

	snprintf(path, sizeof(path), "%s/LOCK", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX) != 0) {
		log_error("cannot lock %s: %s", path, strerror(errno));
		return -1;
	}
	return 0; /* held until the process exits */
}

static int open_log(struct shardd *d)
{
	char dir[4200];

	snprintf(dir, sizeof(dir), "%s/shard-%02u", d->e->cfg.data_dir, d->id);
	if (d->e->cfg.sync != WAL_SYNC_NONE) {
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			log_error("cannot create %s: %s", dir, strerror(errno));
			return SHARDD_EXIT_CRASH;
		}
		if (lock_dir(dir) != 0)
			return SHARDD_EXIT_CRASH;
	}
	if (wal_open(&d->wal, dir, d->id, d->e->cfg.sync, d->e->cfg.sync_interval_ms) != WAL_OK) {
		log_error("cannot open the log in %s: %s", dir, wal_errmsg(&d->wal));
		return SHARDD_EXIT_CRASH;
	}
	return 0;
}

static int recover(struct shardd *d)
{
	struct shard_recovery r = { &d->e->seg, d->id, &d->wal, d->e->cfg.sync, d->readers,
				    d->e->cfg.max_clients };
	uint64_t last = 0, t0 = now_ns();
	int rc = open_log(d);

	if (rc == 0)
		rc = shard_recover(&d->w, &r, &last);
	if (rc != 0)
		return rc;
	log_msg(last ? LOG_INFO : LOG_DEBUG, "recovered to seq %llu in %.1f ms",
		(unsigned long long)last, (double)(now_ns() - t0) / 1e6);
	wal_batch_begin(&d->wal);
	return 0;
}

static int setup(struct shardd *d, struct engine *e, uint32_t id)
{
	char tag[32];
	struct sigaction sa = { 0 };

	memset(d, 0, sizeof(*d));
	d->e = e;
	d->id = id;
	snprintf(tag, sizeof(tag), "shard %02u", id);
	log_set_tag(tag);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->sh = shm_shard_at(&e->seg, id);
	d->bell = engine_doorbell(e, id);
	d->peers = calloc(e->cfg.max_clients, sizeof(*d->peers));
	d->chans = calloc(e->cfg.max_clients, sizeof(*d->chans));
	d->readers = calloc(e->cfg.max_clients, sizeof(*d->readers));
	if (d->chans == NULL || d->readers == NULL) {
		log_error("out of memory at start");
		return SHARDD_EXIT_CRASH;
	}
	/* Channels amorad had mapped when it forked us are mapped here too. */
	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		d->chans[i].incoming = -1;
		d->readers[i] = &idle_slot;
		if (e->chan[i] != NULL)
			chan_use(d, i, e->chan[i], atomic_load(&e->clients[i].gen));
	}
	d->again = calloc((e->cfg.max_clients + 63) / 64, sizeof(*d->again));
	d->req = malloc(CHAN_SQ_DATA);
	d->bulk = malloc(CHAN_BULK_BYTES);
	if (d->sh == NULL || d->peers == NULL || d->again == NULL || d->req == NULL || d->bulk == NULL) {
		log_error("out of memory at start");
		return SHARDD_EXIT_CRASH;
	}
	d->seen_version = UINT64_MAX;
	return 0;
}

static void serve(struct shardd *d)
{
	bool more = true;

	while (!stop_requested || more) {
		uint64_t now = now_ns();
		bool sweep = now >= d->next_sweep_ns;
		int fatal;

		sync_peers(d);
		if (sweep)
			d->next_sweep_ns = now + CHAN_SWEEP_MS * 1000000ull;
		more = gather(d, sweep);
		fatal = finish_round(d);
		if (fatal || wal_sync_if_due(&d->wal, now_ns()) != WAL_OK) {
			if (!fatal)
				log_error("periodic log sync failed: %s; restarting", wal_errmsg(&d->wal));
			exit(SHARDD_EXIT_IO);
		}
		if (more)
			continue;
		if (stop_requested)
			break;
		idle(d);
	}
}

int shardd_run(struct engine *e, uint32_t id)
{
	struct shardd d;
	int rc;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != e->reg->amorad_pid)
		return SHARDD_EXIT_ORPHAN;
	rc = setup(&d, e, id);
	if (rc == 0)
		rc = recover(&d);
	if (rc != 0) {
		if (rc == SHARDD_EXIT_CORRUPT || rc == SHARDD_EXIT_NOMEM)
			atomic_store(&d.sh->state, SHM_SHARD_FAILED);
		return rc;
	}
	atomic_store_explicit(&d.sh->state, SHM_SHARD_READY, memory_order_release);
	serve(&d);
	/* Drained: every request taken was answered. Make it all durable. */
	if (wal_sync(&d.wal) != WAL_OK) {
		log_error("final log sync failed: %s", wal_errmsg(&d.wal));
		return SHARDD_EXIT_IO;
	}
	shm_writer_close(&d.w);
	wal_close(&d.wal);
	atomic_store(&d.sh->state, SHM_SHARD_STOPPED);
	return SHARDD_EXIT_OK;
}
