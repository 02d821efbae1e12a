/*
 * shardd.c — the shard loop (DESIGN.md §8; sleeping: §6).
 *
 * A shard process is the single writer of its shard: its table, records
 * and log. It starts by adopting the table a previous incarnation left
 * (readers go on using it) and correcting it from its log (recover.c),
 * and then loops:
 *
 *   1. take the pending flag in each attached client's channel (or, every
 *      SHM_CHAN_SWEEP_MS, visit every attached client: the safety net);
 *   2. for each client with work, copy each request out of its SQ, check
 *      it, stage it (stage.h: built, nothing visible yet) and add its
 *      effect to the log batch, keeping a completion for it. A client whose
 *      CQ has no room for another completion is left for a later round (its
 *      requests wait in its SQ, nothing is dropped);
 *   3. write the batch to the log with one write(2) and make it durable
 *      per the sync mode (group commit);
 *   4. publish the staged writes: readers see a write only once the log
 *      holds it (publish after the log). Then record in each client's
 *      channel the last request id the log holds, add the round to the
 *      shard's counters (count_log), publish the completions and release
 *      the SQ space. A
 *      next incarnation re-reads what was not released: it answers the
 *      requests up to the recorded id without applying them again (a newer
 *      write of another client may have followed), and applies the rest,
 *      which nobody was told about (chan.h, "Crash safety");
 *   5. sleep when there is nothing to do, until a client or amorad wakes
 *      it (chan.h, "Doorbells"): the loop on the wake words of the clients
 *      that had work lately, a watcher thread on the others' ("Sleeping",
 *      below). No spinning: 64 shards share 2 cores.
 *
 * Failure policy is crash-only. A request with garbage in it, or rings in
 * an impossible state when the shard attaches them, cut off the client
 * (its channel's cut-off flag: it gets AMORA_EBADRING and amorad drops it;
 * the others go on). A log write or sync that fails is answered
 * with SHM_CHAN_EIO for the whole batch and the process exits without
 * publishing the batch: readers never saw it, and the restarted shard
 * recovers from the log on disk (whatever of the batch it may hold).
 */
#include <errno.h>
#include <pthread.h>
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

#include "shm/probe.h"
#include "shm/clock.h"
#include "shardd/log.h"
#include "shm/shard.h"
#include "shardd/recover.h"
#include "shardd/batch.h"
#include "shardd/ckpt.h"
#include "shardd/shardd.h"
#include "shardd/stage.h"
#include "shardd/wal.h"

#define PER_CLIENT_BATCH 256 /* requests taken from one client per round */
#define BATCH_BYTES_MAX (64u << 20) /* a round ends once its log batch is this big */
#define RECLAIM_IDLE_ITEMS 256
#define RECLAIM_IDLE_NS (20 * 1000000ull)
#define BATCH_POLL_NS (1000000ull) /* a batch part waiting for a grace looks again this often */

struct peer {
	bool active;  /* rings attached */
	bool bad;     /* cut off for garbage; ignored until its slot is reused */
	uint32_t gen;
	struct shm_ring sq, cq;
	uint64_t decided; /* requests up to this id succeeded and are logged */
	uint64_t last_id; /* last request that succeeded this round */
	bool touched;     /* requests taken this round */
	uint32_t taken;
	bool hot;         /* the loop waits on its wake word itself, else the watcher does */
	bool busy;        /* announced or had work since the last sweep */
	bool listed;      /* its word is in the watcher's list, with value `listed_val` */
	uint32_t listed_val;
};

struct pending {
	uint32_t slot;
	uint32_t gen; /* the client the completion is for, not a later one */
	struct shm_chan_cqe cqe;
};

/* The watcher thread and what it shares with the loop ("Sleeping").
 * Allocated once and never freed: the thread outlives shardd_run's frame
 * until the process exits. */
struct watcher {
	pthread_mutex_t mu;         /* guards `cold` */
	struct shm_chan_sleep cold;     /* [0]: `version`; then each cold client's word and
				     * the value the loop loaded */
	_Atomic uint32_t version;   /* loop: bumped after changing `cold` (private futex) */
	_Atomic uint32_t rang;      /* watcher: bumped when a cold word moved (private futex) */
	uint32_t rang_seen;         /* loop: `rang` when `cold` was last rebuilt */
	_Atomic int64_t deadline;   /* loop: when its next timed duty is due (ns,
				     * CLOCK_MONOTONIC); the watcher rings `rang` then */
	bool stale;                 /* loop: `cold` must be rebuilt before the next sleep */
	bool checked;               /* loop: the last re-check read every fresh flag */
};

/* A client channel as this shard maps it. */
struct chanmap {
	uint8_t *base; /* NULL: none */
	uint32_t gen;
	int incoming;  /* fd received for generation incoming_gen, -1: none */
	uint32_t incoming_gen;
	uint32_t failed_gen; /* generation whose mapping failed and was logged, 0: none */
};

struct shardd {
	struct engine *e;
	struct chanmap *chans;
	struct shm_epoch_slot **readers; /* each client's epoch slot, for reclamation,
					  * and the checkpoint walker's last */
	size_t nreaders;                 /* max_clients + 1 */
	struct ckpt ckpt;                /* checkpoints (ckpt.h) */
	uint32_t id;
	struct shm_shard *sh;
	struct shm_writer w;
	struct stage stage; /* the round's writes, published after the log */
	struct batches batch; /* atomic batches' parts and decisions (batch.h) */
	bool batch_waiting;   /* a part waits for a grace or a decision: poll soon */
	struct wal wal;
	struct shm_chan_sleep zz; /* the words of the next sleep */
	struct watcher *watch;
	struct peer *peers;
	uint64_t *again; /* clients with more requests than one round takes */
	uint64_t *hotmap;   /* bit per attached hot client: the loops of a round visit only these */
	uint64_t *freshmap; /* cold clients listed since the last sleep: flag read once more */
	uint64_t seen_version;
	uint64_t readers_version; /* registry version refresh_readers last looked at */
	bool retry;      /* a client's channel could not be mapped: look again at a sweep */
	bool sleep_failed; /* futex_waitv failed once (logged) */
	uint8_t *req;  /* private copy of one request */
	uint8_t *bulk; /* private copy of a bulk value */
	struct pending *pend; /* the round's completions, each a run (answer) */
	size_t npend, cap;
	size_t answered;      /* requests they answer */
	uint32_t *touched;  /* [max_clients]: the slots that took requests this round, */
	uint32_t ntouched;  /* ... so that finishing it costs per client with work */
	uint64_t next_sweep_ns;
	uint64_t next_reclaim_ns;
	int64_t told_deadline; /* the watcher's `deadline` as we last stored it */
	bool dirty;    /* the batch holds effects to log */
	/* The log's counters (struct wal, stat_*) as last added to the
	 * descriptor's (count_log). */
	uint64_t counted_batches, counted_records, counted_bytes, counted_syncs;
	uint64_t counted_committed, counted_aborted; /* struct batches' counts, likewise */
};

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* ---------- channels ---------- */

/* The epoch slot of a client we do not map: never reading. */
static struct shm_epoch_slot idle_slot;

static void peer_unmap(struct shardd *d, uint32_t slot)
{
	struct chanmap *c = &d->chans[slot];

	d->readers[slot] = &idle_slot;
	if (c->base != NULL)
		munmap(c->base, d->e->chan_bytes);
	c->base = NULL;
}

static void peer_map(struct shardd *d, uint32_t slot, uint8_t *base, uint32_t gen)
{
	peer_unmap(d, slot);
	d->chans[slot].base = base;
	d->chans[slot].gen = gen;
	d->readers[slot] = &((struct shm_chan_hdr *)base)->epoch;
}

/* Take the channel fds queued on our socket (engine.h). */
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
		/* One socket, one sender, in order: a later fd for the slot is
		 * a later generation. */
		if (d->chans[m.slot].incoming >= 0)
			close(d->chans[m.slot].incoming);
		d->chans[m.slot].incoming = fd;
		d->chans[m.slot].incoming_gen = m.gen;
	}
}

/* Close a received fd of generation `gen` or older: that client is gone.
 * (A newer one may already be queued for the slot's next client.) */
static void drop_incoming(struct shardd *d, uint32_t slot, uint32_t gen)
{
	struct chanmap *c = &d->chans[slot];

	if (c->incoming >= 0 && (int32_t)(c->incoming_gen - gen) <= 0) {
		close(c->incoming);
		c->incoming = -1;
	}
}

/* Map the channel of client slot `slot`, generation gen, which the
 * registry says is ACTIVE. amorad queued its fd on our socket before it
 * published the slot (coordinator/slots.c, send_channel; sendmsg had queued it when
 * it returned), and we loaded the state (acquire) after that store: if the
 * fd is not among those taken so far, it is on the socket now, so one more
 * drain finds it whatever the interleaving. (A shard forked after the
 * attach inherited amorad's mapping instead: setup.) Returns false only if
 * the mapping fails; the fd is kept and the caller tries again later. */
static bool peer_ready(struct shardd *d, uint32_t slot, uint32_t gen)
{
	struct chanmap *c = &d->chans[slot];
	void *p;

	if (c->base != NULL && c->gen == gen)
		return true;
	if (c->incoming < 0 || c->incoming_gen != gen)
		receive_channels(d);
	if (c->incoming < 0 || c->incoming_gen != gen) {
		if (c->failed_gen != gen)
			log_error("client slot %u: the channel of generation %u is not on our socket, "
				  "although amorad published the slot; looking again at each sweep",
				  slot, gen);
		c->failed_gen = gen;
		return false;
	}
	p = mmap(NULL, d->e->chan_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c->incoming, 0);
	if (p == MAP_FAILED) {
		if (c->failed_gen != gen)
			log_error("cannot map the channel of client slot %u: %s; trying again at each "
				  "sweep", slot, strerror(errno));
		c->failed_gen = gen;
		return false;
	}
	close(c->incoming);
	c->incoming = -1;
	peer_map(d, slot, p, gen);
	return true;
}

/* The writer's refresh (struct shm_readers, shard.h): before it looks at
 * the epoch slots, map the channel of every ACTIVE client not mapped yet,
 * so its slot is among them. amorad publishes a slot (and bumps the
 * version) before it answers the attach, so a client that can be reading
 * is ACTIVE by the time the version load below could miss it only if it
 * entered its read section after the writer's epoch bump. Runs in the
 * middle of a round and during recovery: it maps, it never unmaps and
 * never touches peers (sync_peers does, between requests). */
static void refresh_readers(void *arg)
{
	struct shardd *d = arg;
	struct engine *e = d->e;
	uint64_t v = atomic_load_explicit(&e->reg->version, memory_order_seq_cst);

	if (v == d->readers_version)
		return;
	d->readers_version = v;
	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		uint32_t st = atomic_load_explicit(&e->clients[i].state, memory_order_acquire);
		uint32_t gen = atomic_load_explicit(&e->clients[i].gen, memory_order_acquire);

		if (st == REG_ACTIVE && d->chans[i].base == NULL)
			peer_ready(d, i, gen);
	}
}

/* ---------- the watcher ---------- */

/*
 * Sleeping. The shard sleeps on futex words (chan.h, "Doorbells"), and
 * futex_waitv pays for every word it queues, at every sleep and again at
 * every wake-up (README, "Costs behind the design"): waiting on the words
 * of every idle client would tax each synchronous write of a busy one. So
 * the words are split:
 *
 *   hot clients (work since the last sweep): the loop waits on their
 *   words itself, with amorad's word and `rang`;
 *
 *   cold clients (new ones, and those without work since the sweep
 *   before): a watcher thread keeps one
 *   futex_waitv on their words, with the values the loop loaded when it
 *   last rebuilt the list (watch_rebuild), and on `version`. When one of
 *   them moves (the client saw the shard sleeping and bumped it), the
 *   watcher bumps `rang` and waits for a new list; the loop, woken by
 *   `rang`, takes that client's pending flag (it becomes hot) and rebuilds
 *   the list before it sleeps again, reloading every cold word.
 *
 * A cold client's channel says so (shm_chan_words.cold): it rings after every
 * publish, so the loop reads only the hot clients' pending flags in each
 * round (chan.h, "Cost and limits"), and a cold one's once more at the
 * first sleep after it went cold (`fresh`: the flag store came before that
 * sleep's fence, the read after it).
 *
 * No wake-up is lost: every value the watcher compares was loaded by the
 * loop before the flag store (b) of the sleep it covers, like the loop's
 * own words; a bump after that makes the watcher's wait fail or wake, and
 * the watcher's bump of `rang` comes after the loop loaded `rang` for that
 * sleep. A watcher waiting for a new list has bumped `rang` first, and the
 * loop rebuilds whenever `rang` moved. The watcher never dereferences a
 * client's memory (the kernel compares the words, and fails a wait on an
 * unmapped one with EFAULT): the loop removes a cold client from the list
 * (new `version`) before it unmaps that channel, and the watcher, failing
 * or woken, sees the new version and starts over. It never spins either:
 * it waits for a new version after any failure. Cost: the loop sleeps on
 * 2 + hot words; the watcher re-queues its words only when a cold client
 * rings, the sets change (a client goes cold at a sweep, wakes, leaves)
 * or a timed duty comes (below).
 *
 * Timed duties (the sweep, a periodic log sync, reclamation) are the
 * watcher's too: arming a timer at every sleep cost the loop ~3 us of CPU
 * per synchronous write (README, "Costs behind the design"). The loop
 * stores when its next duty is due in `deadline` and sleeps without a
 * timeout; the watcher waits with that deadline and rings `rang` when it
 * passes. A deadline that moves earlier (writes after a quiet spell: a
 * sync is due in 100 ms, not at the next sweep) is followed by a bump of
 * `version`, after the store: a watcher that loaded the old version fails
 * its wait and reloads both. One that moves later is stored alone: the
 * watcher rings at the old one, the loop wakes for nothing and its
 * rebuild of the list (`rang` moved) hands the watcher the new one.
 */

/* Whether the loop itself waits on client `slot`'s word and reads its
 * pending flag in every round (hot), or leaves that to the watcher (cold:
 * the client then rings after every publish, chan.h). Relaxed: a client
 * going cold is read once more after the fence of the next sleep (fresh). */
static void set_hot(struct shardd *d, struct peer *p, uint32_t slot, bool hot)
{
	uint64_t bit = 1ull << (slot % 64);

	p->hot = hot;
	if (hot)
		d->hotmap[slot / 64] |= bit;
	else
		d->hotmap[slot / 64] &= ~bit;
	atomic_store_explicit(&shm_chan_words(d->chans[slot].base, d->id)->cold, !hot,
			      memory_order_relaxed);
}

/* Client `slot` is no longer served: out of the maps (its `hot` stays, for
 * peer_forget and cut_off to know whether the watcher may list it). */
static void peer_unmap_bits(struct shardd *d, uint32_t slot)
{
	uint64_t bit = 1ull << (slot % 64);

	d->hotmap[slot / 64] &= ~bit;
	d->freshmap[slot / 64] &= ~bit;
	d->again[slot / 64] &= ~bit;
}

/* Rebuild the watcher's list from the cold clients, each word loaded now
 * (before the next sleep's flag store: step (a)). A client whose word
 * moved since the last list rang (or bumps it for nothing: a hostile one
 * would make every ring re-queue all the cold words) and goes hot instead,
 * until the next sweep finds it idle. `rang` is the value of the watcher's
 * bell the caller acted on. */
static void watch_rebuild(struct shardd *d, uint32_t rang)
{
	struct watcher *w = d->watch;

	pthread_mutex_lock(&w->mu);
	shm_chan_sleep_begin(&w->cold);
	shm_chan_sleep_add(&w->cold, &w->version, 0, 1); /* the value is the thread's */
	for (uint32_t i = 0; i < d->e->cfg.max_clients; i++) {
		struct peer *p = &d->peers[i];
		_Atomic uint32_t *word;
		uint32_t v;

		if (!p->active || p->hot) {
			p->listed = false;
			continue;
		}
		word = &shm_chan_words(d->chans[i].base, d->id)->wake;
		v = atomic_load_explicit(word, memory_order_acquire);
		if (p->listed && v != p->listed_val) {
			set_hot(d, p, i, true);
			p->listed = false;
			continue;
		}
		/* at most SHM_CHAN_MAX_CLIENTS + 1 words: always room */
		shm_chan_sleep_add(&w->cold, word, v, 0);
		if (!p->listed)
			d->freshmap[i / 64] |= 1ull << (i % 64);
		p->listed = true;
		p->listed_val = v;
	}
	pthread_mutex_unlock(&w->mu);
	w->rang_seen = rang;
	w->stale = false;
	/* Release (in shm_chan_word_wake), pairs with the watcher's acquire load
	 * of `version`: it then copies this list or a later one. */
	shm_chan_word_wake(&w->version, 1);
}

/* Wait until `version` leaves v, or until `due` (ns; INT64_MAX: none). */
static int watch_wait_version(struct watcher *w, uint32_t v, int64_t due)
{
	struct shm_chan_sleep z;

	shm_chan_sleep_begin(&z);
	shm_chan_sleep_add(&z, &w->version, v, 1);
	return shm_chan_sleep_wait(&z, NULL, NULL, NULL, due == INT64_MAX ? -1 : due);
}

static void *watch_run(void *arg)
{
	struct watcher *w = arg;
	struct shm_chan_sleep z;

	for (;;) {
		/* Acquire, pairs with the release of the loop's bump (in
		 * shm_chan_word_wake): the deadline loaded next is the one
		 * stored before that bump, or a later one. */
		uint32_t v = atomic_load_explicit(&w->version, memory_order_acquire);
		int64_t due = atomic_load_explicit(&w->deadline, memory_order_relaxed);
		int rc;

		pthread_mutex_lock(&w->mu);
		z = w->cold;
		pthread_mutex_unlock(&w->mu);
		if (z.n > 0) {
			z.w[0].val = v;
			rc = shm_chan_sleep_wait(&z, NULL, NULL, NULL, due == INT64_MAX ? -1 : due);
			if (atomic_load_explicit(&w->version, memory_order_acquire) != v)
				continue; /* a new list (also after EFAULT on a channel going away) */
			/* a cold word moved, or a duty is due: tell the loop. A
			 * wait that failed (its words could not be queued) still
			 * keeps the deadline: the loop's duties wait on it. */
			if (rc == SHM_OK || rc == SHM_ETIMEDOUT ||
			    watch_wait_version(w, v, due) == SHM_ETIMEDOUT)
				shm_chan_word_wake(&w->rang, 1);
		}
		/* Until the loop rebuilds the list. */
		watch_wait_version(w, v, INT64_MAX);
	}
	return NULL;
}

static int watch_start(struct shardd *d)
{
	sigset_t all, old;
	pthread_t t;
	int rc;

	d->watch = calloc(1, sizeof(*d->watch));
	if (d->watch == NULL)
		return ENOMEM;
	pthread_mutex_init(&d->watch->mu, NULL);
	d->watch->stale = true;
	atomic_init(&d->watch->deadline, INT64_MAX);
	d->told_deadline = INT64_MAX;
	/* Signals go to the loop (SIGTERM stops it), never to the watcher. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&t, NULL, watch_run, d->watch);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0)
		pthread_detach(t);
	return rc;
}

/* Client `slot` had work: the loop waits on its word from now on. */
static void peer_busy(struct shardd *d, uint32_t slot)
{
	struct peer *p = &d->peers[slot];

	p->busy = true;
	if (!p->hot) {
		set_hot(d, p, slot, true);
		d->watch->stale = true;
	}
}

/* At a sweep: clients without work since the last one go cold. */
static void peers_cool(struct shardd *d)
{
	for (uint32_t i = 0; i < d->e->cfg.max_clients; i++) {
		struct peer *p = &d->peers[i];

		if (p->active && p->hot && !p->busy) {
			set_hot(d, p, i, false);
			d->watch->stale = true;
		}
		p->busy = false;
	}
}

/* Stop serving client `slot` before its channel goes away: if the watcher
 * may wait on its word, take it off the list first. */
static void peer_forget(struct shardd *d, uint32_t slot)
{
	struct peer *p = &d->peers[slot];
	bool listed = p->listed; /* also a client cut off since the last list */

	p->active = p->bad = false;
	peer_unmap_bits(d, slot);
	if (listed)
		watch_rebuild(d, d->watch->rang_seen);
}

/* ---------- clients ---------- */

/* Stop serving client `slot` and tell it why: its channel's cut-off flag,
 * which libamora reports as AMORA_EBADRING and on which amorad drops the
 * client (coordinator/slots.c, srv_tick). */
static void cut_off(struct shardd *d, uint32_t slot, const char *why)
{
	struct peer *p = &d->peers[slot];

	log_warn("client slot %u (pid %d) %s; cut off", slot,
		 atomic_load(&d->e->clients[slot].pid), why);
	atomic_store_explicit(&((struct shm_chan_hdr *)d->chans[slot].base)->cut_off, d->id + 1,
			      memory_order_release);
	if (p->listed)
		d->watch->stale = true; /* its channel stays mapped until amorad closes the slot */
	p->active = false;
	p->bad = true;
	peer_unmap_bits(d, slot);
}

static void attach_peer(struct shardd *d, uint32_t slot, uint32_t gen)
{
	struct peer *p = &d->peers[slot];
	uint8_t *base;
	uint32_t n = d->e->cfg.shards;

	peer_forget(d, slot); /* a previous client of the slot, whose channel peer_ready unmaps */
	memset(p, 0, sizeof(*p));
	p->gen = gen;
	if (!peer_ready(d, slot, gen)) {
		d->retry = true; /* neither active nor bad: attached at a later sweep */
		return;
	}
	base = d->chans[slot].base;

	if (shm_ring_attach(&p->sq, shm_chan_sq_mem(base, n, d->id), shm_chan_sq_bytes()) != SHM_OK ||
	    shm_ring_attach(&p->cq, shm_chan_cq_mem(base, n, d->id), shm_chan_cq_bytes()) != SHM_OK) {
		cut_off(d, slot, "left its rings in an impossible state (positions or size)");
		return;
	}
	p->decided = atomic_load_explicit(&shm_chan_words(base, d->id)->decided, memory_order_acquire);
	p->active = true;
	/* Cold until it has work: a burst of attaches must not make every
	 * sleep wait on all of them ("Sleeping"). */
	set_hot(d, p, slot, false);
	d->watch->stale = true;
}

/* Follow the registry: attach new clients, let go of closing ones and
 * acknowledge that to amorad. Runs when the registry moved, or at a sweep
 * when a channel could not be mapped. */
static void sync_peers(struct shardd *d, bool sweep)
{
	struct engine *e = d->e;
	uint64_t v = atomic_load_explicit(&e->reg->version, memory_order_acquire);

	if (v == d->seen_version && !(sweep && d->retry))
		return;
	d->seen_version = v;
	d->retry = false;
	receive_channels(d);
	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		/* Acquire, pairs with amorad's release store of the state:
		 * the gen (stored before it) and the queued fd are there. */
		uint32_t st = atomic_load_explicit(&e->clients[i].state, memory_order_acquire);
		uint32_t gen = atomic_load_explicit(&e->clients[i].gen, memory_order_acquire);
		struct peer *p = &d->peers[i];

		if (st == REG_ACTIVE && (p->gen != gen || !(p->active || p->bad)))
			attach_peer(d, i, gen);
		else if (st != REG_ACTIVE) {
			peer_forget(d, i);
			peer_unmap(d, i);
			drop_incoming(d, i, gen);
			if (st == REG_CLOSING)
				atomic_store_explicit(engine_ack(e, i, d->id), gen, memory_order_release);
		}
	}
}

/* ---------- requests ---------- */

static int wire_status(int shm_rc)
{
	switch (shm_rc) {
	case SHM_OK: return SHM_CHAN_OK;
	case SHM_ENOTFOUND: return SHM_CHAN_ENOTFOUND;
	case SHM_EINVAL: return SHM_CHAN_EINVAL;
	case SHM_ENOMEM: return SHM_CHAN_EFULL;
	default: return SHM_CHAN_ECORRUPT;
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
	d->pend[d->npend++] = (struct pending){ slot, d->peers[slot].gen, { id, status, 1, seq } };
	return 0;
}

/* Answer request `id` of client `slot`: extend the run of the last
 * completion (chan.h, struct shm_chan_cqe) when both succeeded, the ids
 * follow each other and so do their sequence numbers; else a completion of
 * its own. */
static int answer(struct shardd *d, uint32_t slot, uint64_t id, int status, uint64_t seq)
{
	struct pending *last = d->npend > 0 ? &d->pend[d->npend - 1] : NULL;

	d->answered++;
	if (last != NULL && last->slot == slot && last->gen == d->peers[slot].gen &&
	    status == SHM_CHAN_OK && last->cqe.status == SHM_CHAN_OK && id == last->cqe.id + 1 &&
	    seq != 0 && last->cqe.seq != 0 && seq == last->cqe.seq + 1) {
		last->cqe.id = id;
		last->cqe.seq = seq;
		last->cqe.count++;
		return 0;
	}
	return add_pending(d, slot, id, status, seq);
}

static bool peer_alive(void *arg, uint32_t slot, uint32_t gen)
{
	struct shardd *d = arg;

	return slot < d->e->cfg.max_clients && d->peers[slot].active && d->peers[slot].gen == gen;
}

static struct batch_round batch_round_of(struct shardd *d)
{
	return (struct batch_round){ &d->w, &d->stage, &d->wal, d->readers, d->nreaders, peer_alive, d };
}

/* A batch's request (batch.h). */
static int apply_batch(struct shardd *d, const struct shm_chan_op_view *v, uint32_t slot, uint64_t *seq)
{
	struct batch_round r = batch_round_of(d);
	int rc = batch_request(&d->batch, &r, v, slot, d->peers[slot].gen, seq);

	if (rc == -1) {
		log_error("out of memory for a batch: %s", wal_errmsg(&d->wal));
		exit(SHARDD_EXIT_CRASH);
	}
	if (*seq != 0)
		d->dirty = true;
	return rc;
}

/* Stage one checked request; returns its status. Effects go to the log
 * batch; private memory that cannot grow (for the stage or the log
 * buffer) is fatal. */
static int apply(struct shardd *d, const struct shm_chan_op_view *v, uint32_t slot, uint64_t *seq)
{
	struct shm_staged *s = stage_slot(&d->stage);
	const struct shm_staged *prev;
	uint64_t h;
	int rc, wrc;

	if (v->op >= SHM_CHAN_OP_PSET)
		return apply_batch(d, v, slot, seq);
	if (v->klen == 0 || v->klen > SHM_KEY_MAX || v->vlen > SHM_VALUE_MAX)
		return SHM_CHAN_EINVAL;
	if (s == NULL) {
		log_error("out of memory for the round's writes");
		exit(SHARDD_EXIT_CRASH);
	}
	h = shm_hash(v->key, v->klen);
	prev = stage_find(&d->stage, v->key, v->klen, h);
	if (v->op == SHM_CHAN_OP_SET)
		rc = shm_writer_stage_set(&d->w, v->key, v->klen, h, v->val, v->vlen, prev, s);
	else
		rc = shm_writer_stage_del(&d->w, v->key, v->klen, h, prev, s);
	if (rc != SHM_OK)
		return wire_status(rc);
	stage_add(&d->stage);
	*seq = s->seq;
	wrc = wal_batch_add(&d->wal, *seq, v->op == SHM_CHAN_OP_SET ? WALFMT_OP_SET : WALFMT_OP_DEL,
			    NULL, v->key, v->klen, v->val, v->vlen);
	if (wrc != WAL_OK) {
		log_error("cannot add to the log batch: %s", wal_errmsg(&d->wal));
		exit(SHARDD_EXIT_CRASH);
	}
	d->dirty = true;
	return SHM_CHAN_OK;
}

/* Take up to PER_CLIENT_BATCH requests from one client. Returns true if it
 * may have more (the caller visits it again next round). */
static bool take_requests(struct shardd *d, uint32_t slot)
{
	struct peer *p = &d->peers[slot];
	uint8_t *bulk_src = d->chans[slot].base + shm_chan_bulk_off(d->e->cfg.shards);
	int64_t room = shm_ring_space(&p->cq);

	if (room < 0) {
		cut_off(d, slot, "moved its completion ring impossibly");
		return false;
	}
	room -= (int64_t)p->taken * SHM_CHAN_CQE_BYTES;
	while (p->taken < PER_CLIENT_BATCH && wal_batch_bytes(&d->wal) < BATCH_BYTES_MAX) {
		struct shm_chan_op_view v;
		const void *rec;
		uint32_t len;
		uint64_t seq = 0;
		int rc;

		/* No room for the completion: only a client that ignores its
		 * completions gets here (libamora bounds what it has in
		 * flight); it waits for the next sweep. */
		if (room < SHM_CHAN_CQE_BYTES)
			return false;
		rc = shm_ring_peek(&p->sq, &rec, &len);
		if (rc == SHM_EEMPTY)
			return false;
		if (rc != SHM_OK || len > shm_ring_max_record(&p->sq)) {
			cut_off(d, slot, "wrote garbage into its submission ring");
			return false;
		}
		/* Copy first: the client can change the bytes while we parse. */
		memcpy(d->req, rec, len);
		if (shm_chan_req_decode(d->req, len, &v) != SHM_OK) {
			cut_off(d, slot, "sent a malformed request");
			return false;
		}
		AMORA_PROBE(req__take, d->id, slot, v.id);
		if (v.id <= p->decided) {
			/* applied and logged by our previous incarnation, which
			 * died before answering: answer, never apply again */
			rc = SHM_CHAN_OK;
		} else {
			if (v.flags & SHM_CHAN_REQ_BULK) {
				memcpy(d->bulk, bulk_src, v.vlen);
				v.val = d->bulk;
			}
			rc = apply(d, &v, slot, &seq);
			if (rc == SHM_CHAN_OK)
				p->last_id = v.id;
		}
		AMORA_PROBE(req__apply, d->id, slot, v.id, rc, seq);
		if (answer(d, slot, v.id, rc, seq) != 0) {
			log_error("out of memory for completions");
			exit(SHARDD_EXIT_CRASH);
		}
		shm_ring_consume(&p->sq);
		p->taken++;
		if (!p->touched)
			d->touched[d->ntouched++] = slot;
		p->touched = true;
		room -= SHM_CHAN_CQE_BYTES;
		/* A request that failed changed nothing and is not in the log:
		 * the decided word must not cover it (a restarted shard would
		 * answer it SHM_CHAN_OK). So it ends this client's turn, and no
		 * later request of this round raises the word past it. */
		if (rc != SHM_CHAN_OK && v.id > p->decided)
			return true;
	}
	return true;
}

/* ---------- a round ---------- */

/* Whether client `slot` announced work since we last looked: its pending
 * flag, taken. A plain load first: an idle client's line stays in our
 * cache, and the exchange would take it away from the client. */
static bool take_pending(struct shardd *d, uint32_t slot)
{
	_Atomic uint32_t *f = &shm_chan_words(d->chans[slot].base, d->id)->pending;

	if (atomic_load_explicit(f, memory_order_relaxed) == 0)
		return false;
	/* Acquire, pairs with the release store in shm_chan_notify: the records
	 * published before the flag are visible to take_requests. */
	return atomic_exchange_explicit(f, 0, memory_order_acquire) != 0;
}

/* Visit every attached client that announced work, was left with more
 * work last round, or all of them on a sweep; returns whether any may have
 * more right away. */
static bool gather(struct shardd *d, bool sweep)
{
	uint32_t n = d->e->cfg.max_clients;
	bool more = false;

	if (sweep)
		peers_cool(d);
	for (uint32_t w = 0; w < (n + 63) / 64; w++) {
		uint64_t again = d->again[w];
		/* A cold client's flag is read when it rings (work_ready) or
		 * at a sweep. */
		uint64_t bits = sweep ? ~0ull : again | d->hotmap[w];

		d->again[w] = 0;
		while (bits) {
			uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(bits);
			uint64_t bit = bits & -bits;
			struct peer *p = &d->peers[slot];
			bool rang;

			bits &= bits - 1;
			if (slot >= n || !p->active)
				continue;
			/* Taken even on a sweep, so that it does not cost an
			 * empty round afterwards. */
			rang = take_pending(d, slot);
			if (!rang && !(again & bit) && !sweep)
				continue;
			if (take_requests(d, slot)) {
				d->again[w] |= bit;
				more = true;
			}
			if (p->active && (rang || p->taken > 0))
				peer_busy(d, slot);
		}
	}
	return more;
}

static void log_failure(struct shardd *d, const char *what)
{
	log_error("%s: %s; answering the batch with an I/O error and restarting", what,
		  wal_errmsg(&d->wal));
	for (size_t i = 0; i < d->npend; i++)
		if (d->pend[i].cqe.status == SHM_CHAN_OK)
			d->pend[i].cqe.status = SHM_CHAN_EIO;
}

/* The round is in the log: tell each client's channel how far, before
 * any completion is visible (see chan.h, "Crash safety"). */
static void mark_decided(struct shardd *d)
{
	for (uint32_t t = 0; t < d->ntouched; t++) {
		uint32_t i = d->touched[t];
		struct peer *p = &d->peers[i];

		if (p->active && p->last_id > p->decided) {
			p->decided = p->last_id;
			atomic_store_explicit(&shm_chan_words(d->chans[i].base, d->id)->decided, p->decided,
					      memory_order_release);
		}
	}
}

/* ---------- counters ---------- */

/* Add what the log counted since the last call to the shard's shared
 * counters (segment.h, struct shm_shard_counters): after each commit,
 * before the round's completions are published, and after a periodic
 * sync. The counters go on from a previous incarnation's: each adds only
 * what its own struct wal counted. */
static void count_log(struct shardd *d)
{
	struct shm_shard_counters *c = &d->sh->ctr;
	const struct wal *w = &d->wal;

	if (w->stat_batches != d->counted_batches) {
		shm_counter_add(&c->log_writes, w->stat_batches - d->counted_batches);
		shm_counter_add(&c->log_records, w->stat_records - d->counted_records);
		shm_counter_add(&c->log_bytes, w->stat_bytes - d->counted_bytes);
		d->counted_batches = w->stat_batches;
		d->counted_records = w->stat_records;
		d->counted_bytes = w->stat_bytes;
	}
	if (d->batch.committed != d->counted_committed || d->batch.aborted != d->counted_aborted) {
		shm_counter_add(&c->batches_committed, d->batch.committed - d->counted_committed);
		shm_counter_add(&c->batches_aborted, d->batch.aborted - d->counted_aborted);
		d->counted_committed = d->batch.committed;
		d->counted_aborted = d->batch.aborted;
	}
	if (w->stat_syncs != d->counted_syncs) {
		shm_counter_add(&c->log_syncs, w->stat_syncs - d->counted_syncs);
		d->counted_syncs = w->stat_syncs;
	}
}

/* Log the batch, then hand out completions and free the SQ space. */
static int finish_round(struct shardd *d)
{
	size_t completions;
	uint32_t clients;
	int fatal = 0;

	if (d->dirty) {
		if (wal_batch_commit(&d->wal) != WAL_OK) {
			log_failure(d, "log write failed");
			fatal = SHARDD_EXIT_IO;
		}
		d->dirty = false;
	}
	wal_batch_begin(&d->wal);
	/* Publish after the log; a failed log write publishes nothing. */
	if (!fatal && stage_publish(&d->stage, &d->w) != SHM_OK) {
		log_error("a staged write could not be published (a bug); restarting");
		exit(SHARDD_EXIT_CRASH);
	}
	if (!fatal) {
		struct batch_round r = batch_round_of(d);

		/* decisions visible before they are answered */
		if (batch_round_logged(&d->batch, &r) > 0)
			d->batch_waiting = true;
	}
	if (!fatal)
		mark_decided(d);
	/* Counted before any completion is visible (struct shm_shard_counters). */
	count_log(d);
	if (d->answered > 0)
		shm_counter_add(&d->sh->ctr.requests, d->answered);
	for (size_t i = 0; i < d->npend; i++) {
		struct pending *q = &d->pend[i];
		struct peer *p = &d->peers[q->slot];

		if (p->active && p->gen == q->gen && shm_ring_push(&p->cq, &q->cqe, sizeof(q->cqe)) != SHM_OK)
			cut_off(d, q->slot, "moved its completion ring impossibly");
	}
	completions = d->answered;
	d->npend = 0;
	d->answered = 0;
	for (uint32_t t = 0; t < d->ntouched; t++) {
		struct peer *p = &d->peers[d->touched[t]];

		if (p->active) {
			shm_ring_publish(&p->cq);
			shm_ring_release(&p->sq);
		}
		p->touched = false;
		p->taken = 0;
	}
	clients = d->ntouched;
	d->ntouched = 0;
	AMORA_PROBE(round__end, d->id, completions, clients);
	return fatal;
}

/* Resolve what batches allow at the start of a round (batch.h). */
static void batch_step(struct shardd *d)
{
	struct batch_round r = batch_round_of(d);
	int rc;

	if (d->batch.n == 0) {
		d->batch_waiting = false;
		return;
	}
	rc = batch_sweep(&d->batch, &r);
	if (rc < 0) {
		log_error("out of memory resolving batches");
		exit(SHARDD_EXIT_CRASH);
	}
	d->batch_waiting = rc > 0;
	if (d->stage.n > 0)
		d->dirty = true;
}

/* ---------- sleeping ---------- */

/* Step (c) of chan.h's "Doorbells", after the shard announced its sleep:
 * anything that must keep it awake. */
static int work_ready(void *arg)
{
	struct shardd *d = arg;

	if (stop_requested)
		return 1;
	if (d->ckpt.running && atomic_load_explicit(&d->ckpt.done, memory_order_acquire))
		return 1;
	if (atomic_load_explicit(&d->e->reg->version, memory_order_acquire) != d->seen_version)
		return 1;
	for (uint32_t w = 0; w < (d->e->cfg.max_clients + 63) / 64; w++) {
		for (uint64_t bits = d->hotmap[w] | d->freshmap[w]; bits; bits &= bits - 1) {
			uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);

			if (atomic_load_explicit(&shm_chan_words(d->chans[i].base, d->id)->pending,
						 memory_order_relaxed)) {
				peer_busy(d, i); /* a fresh one: gather reads hot clients' flags */
				return 1;
			}
		}
	}
	d->watch->checked = true; /* every fresh flag read after the fence */
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

/* Tell the watcher when the loop's next timed duty is due ("Sleeping"). */
static void tell_deadline(struct shardd *d, int64_t until)
{
	struct watcher *w = d->watch;

	if (until == d->told_deadline)
		return;
	atomic_store_explicit(&w->deadline, until, memory_order_relaxed);
	if (until < d->told_deadline)
		shm_chan_word_wake(&w->version, 1); /* release: after the store above */
	d->told_deadline = until;
}

/* Sleep until a client announces work, amorad changes the registry, or
 * the next timed duty (sweep, periodic log sync, reclamation) is due: the
 * watcher rings then. */
static void idle(struct shardd *d)
{
	uint64_t now = shm_now_ns();
	int64_t due = wal_next_sync_ns(&d->wal);
	int64_t until = (int64_t)d->next_sweep_ns;
	int64_t reclaim = (int64_t)reclaim_when_idle(d, now);
	struct timespec ts;
	uint32_t rang;
	int rc;

	if (due >= 0 && due < until)
		until = due;
	if (reclaim > 0 && reclaim < until)
		until = reclaim;
	if (d->batch_waiting && (int64_t)(now + BATCH_POLL_NS) < until)
		until = (int64_t)(now + BATCH_POLL_NS);
	/* Step (a): every word loaded before the sleeping flag is set, the
	 * cold clients' by watch_rebuild ("Sleeping"). At most
	 * SHM_CHAN_MAX_CLIENTS clients (engine_create), so all fit. */
	tell_deadline(d, until); /* before a rebuild hands the watcher a new version */
	rang = atomic_load_explicit(&d->watch->rang, memory_order_acquire);
	if (d->watch->stale || rang != d->watch->rang_seen)
		watch_rebuild(d, rang);
	shm_chan_sleep_begin(&d->zz);
	shm_chan_sleep_add(&d->zz, &d->e->reg->wake,
		       atomic_load_explicit(&d->e->reg->wake, memory_order_acquire), 0);
	shm_chan_sleep_add(&d->zz, &d->watch->rang, rang, 1);
	for (uint32_t w = 0; w < (d->e->cfg.max_clients + 63) / 64; w++) {
		for (uint64_t bits = d->hotmap[w]; bits; bits &= bits - 1) {
			uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(bits);
			_Atomic uint32_t *word = &shm_chan_words(d->chans[i].base, d->id)->wake;

			shm_chan_sleep_add(&d->zz, word, atomic_load_explicit(word, memory_order_acquire), 0);
		}
	}
	d->watch->checked = false;
	AMORA_PROBE(shard__sleep, d->id);
	rc = shm_chan_sleep_wait(&d->zz, &d->sh->sleeping, work_ready, d, -1);
	AMORA_PROBE(shard__wake, d->id);
	if (d->watch->checked)
		memset(d->freshmap, 0, (d->e->cfg.max_clients + 63) / 64 * sizeof(*d->freshmap));
	if (rc != SHM_ESYS)
		return;
	/* Never seen on a kernel amorad accepted. Sleeping on nothing until
	 * the timed duty keeps the shard from spinning; writes then wait for
	 * the sweep. */
	if (!d->sleep_failed)
		log_error("futex_waitv failed: %s; polling every %d ms instead", strerror(errno),
			  SHM_CHAN_SWEEP_MS);
	d->sleep_failed = true;
	ts.tv_sec = until / 1000000000;
	ts.tv_nsec = until % 1000000000;
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
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

static void shard_dir(const struct shardd *d, char dir[4200])
{
	snprintf(dir, 4200, "%s/shard-%02u", d->e->cfg.data_dir, d->id);
}

/* A log directory that cannot be created, locked or opened is not fixed
 * by a restart: the shard stops for good (SHARDD_EXIT_START). */
static int open_log(struct shardd *d)
{
	char dir[4200];

	shard_dir(d, dir);
	if (d->e->cfg.sync != WAL_SYNC_NONE) {
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			log_error("cannot create %s: %s", dir, strerror(errno));
			return SHARDD_EXIT_START;
		}
		if (lock_dir(dir) != 0)
			return SHARDD_EXIT_START;
	}
	if (wal_open(&d->wal, dir, d->id, d->e->cfg.sync, d->e->cfg.sync_interval_ms) != WAL_OK) {
		log_error("cannot open the log in %s: %s", dir, wal_errmsg(&d->wal));
		return SHARDD_EXIT_START;
	}
	return 0;
}

static int recover(struct shardd *d)
{
	struct shard_recovery r = { &d->e->seg, d->id, &d->wal, d->e->cfg.sync,
				    { d->readers, d->nreaders, refresh_readers, d }, d->e->cfg.data_dir,
				    &d->ckpt.old };
	uint64_t last = 0, t0 = shm_now_ns();
	int rc = open_log(d);

	if (rc == 0)
		rc = shard_recover(&d->w, &r, &last);
	if (rc != 0)
		return rc;
	log_msg(last ? LOG_INFO : LOG_DEBUG, "recovered to seq %llu in %.1f ms",
		(unsigned long long)last, (double)(shm_now_ns() - t0) / 1e6);
	wal_batch_begin(&d->wal);
	ckpt_measure(&d->ckpt, &d->wal);
	return 0;
}

static int setup(struct shardd *d, struct engine *e, uint32_t id)
{
	char tag[32], dir[4200];
	struct sigaction sa = { 0 };
	int rc;

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
	d->peers = calloc(e->cfg.max_clients, sizeof(*d->peers));
	d->chans = calloc(e->cfg.max_clients, sizeof(*d->chans));
	d->nreaders = e->cfg.max_clients + 1;
	d->readers = calloc(d->nreaders, sizeof(*d->readers));
	shard_dir(d, dir);
	if (d->chans == NULL || d->readers == NULL ||
	    ckpt_init(&d->ckpt, &e->seg, &d->w, id, e->cfg.shards, e->cfg.sync == WAL_SYNC_NONE ? NULL : dir,
		      e->cfg.ckpt_floor, e->cfg.ckpt_factor) != 0) {
		log_error("out of memory at start");
		return SHARDD_EXIT_CRASH;
	}
	d->readers[e->cfg.max_clients] = &d->ckpt.slot;
	/* Channels amorad had mapped when it forked us are mapped here too. */
	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		d->chans[i].incoming = -1;
		d->readers[i] = &idle_slot;
		if (e->chan[i] != NULL)
			peer_map(d, i, e->chan[i], atomic_load(&e->clients[i].gen));
	}
	d->again = calloc((e->cfg.max_clients + 63) / 64, sizeof(*d->again));
	d->hotmap = calloc((e->cfg.max_clients + 63) / 64, sizeof(*d->hotmap));
	d->freshmap = calloc((e->cfg.max_clients + 63) / 64, sizeof(*d->freshmap));
	d->touched = calloc(e->cfg.max_clients, sizeof(*d->touched));
	d->req = malloc(SHM_CHAN_SQ_DATA);
	batch_init(&d->batch, &e->seg, id);
	if (stage_init(&d->stage, &e->seg) != 0) {
		log_error("out of memory at start");
		return SHARDD_EXIT_CRASH;
	}
	d->bulk = malloc(SHM_CHAN_BULK_BYTES);
	if (d->sh == NULL || d->peers == NULL || d->again == NULL || d->hotmap == NULL ||
	    d->freshmap == NULL || d->touched == NULL || d->req == NULL || d->bulk == NULL) {
		log_error("out of memory at start");
		return SHARDD_EXIT_CRASH;
	}
	d->seen_version = UINT64_MAX;
	d->readers_version = UINT64_MAX;
	rc = watch_start(d);
	if (rc != 0) {
		log_error("cannot start the watcher thread: %s", strerror(rc));
		return SHARDD_EXIT_CRASH;
	}
	d->ckpt.wake = &d->watch->rang; /* the loop sleeps on it */
	/* A previous incarnation killed asleep left its flag set (clients
	 * would make wake-up calls nobody waits for until our first sleep). */
	atomic_store_explicit(&d->sh->sleeping, 0, memory_order_relaxed);
	return 0;
}

/* Staying awake for more work: a cold client that rang meanwhile (the
 * watcher bumped `rang`) goes hot now, as before a sleep, so that a shard
 * kept busy by one client serves the others at its next round, not at the
 * next sweep. */
static void watch_follow(struct shardd *d)
{
	uint32_t rang = atomic_load_explicit(&d->watch->rang, memory_order_acquire);

	if (rang != d->watch->rang_seen)
		watch_rebuild(d, rang);
}

/* Between rounds: a checkpoint finished, or one is due (ckpt.h). */
static void ckpt_step(struct shardd *d)
{
	ckpt_poll(&d->ckpt, &d->wal);
	if (ckpt_wanted(&d->ckpt, &d->wal) && ckpt_start(&d->ckpt, &d->wal, &d->batch) != 0)
		exit(SHARDD_EXIT_IO); /* the log could not be rotated: as a failed log write */
}

static void serve(struct shardd *d)
{
	bool more = true;

	while (!stop_requested || more) {
		uint64_t now = shm_now_ns();
		bool sweep = now >= d->next_sweep_ns;
		int fatal;

		sync_peers(d, sweep);
		if (sweep)
			d->next_sweep_ns = now + SHM_CHAN_SWEEP_MS * 1000000ull;
		AMORA_PROBE(round__begin, d->id, sweep);
		batch_step(d);
		more = gather(d, sweep);
		fatal = finish_round(d);
		if (fatal || wal_sync_if_due(&d->wal, shm_now_ns()) != WAL_OK) {
			if (!fatal)
				log_error("periodic log sync failed: %s; restarting", wal_errmsg(&d->wal));
			exit(SHARDD_EXIT_IO);
		}
		count_log(d); /* a periodic sync */
		ckpt_step(d);
		if (more || d->batch.again) {
			watch_follow(d);
			continue;
		}
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
		uint32_t cause = shardd_exit_cause(rc);

		/* Cause first: a reader that sees FAILED finds why (shardd.h). */
		if (cause != SHM_FAIL_NONE && d.sh != NULL) {
			atomic_store_explicit(&d.sh->cause, cause, memory_order_release);
			atomic_store_explicit(&d.sh->state, SHM_SHARD_FAILED, memory_order_release);
		}
		return rc;
	}
	atomic_store_explicit(&d.sh->state, SHM_SHARD_READY, memory_order_release);
	serve(&d);
	/* Drained: every request taken was answered. A last checkpoint, so
	 * that the next start reads it and no log. */
	ckpt_wait(&d.ckpt, &d.wal);
	if (ckpt_final(&d.ckpt, &d.wal) && ckpt_start(&d.ckpt, &d.wal, &d.batch) == 0)
		ckpt_wait(&d.ckpt, &d.wal);
	if (wal_sync(&d.wal) != WAL_OK) {
		log_error("final log sync failed: %s", wal_errmsg(&d.wal));
		return SHARDD_EXIT_IO;
	}
	count_log(&d);
	shm_writer_close(&d.w);
	wal_close(&d.wal);
	atomic_store(&d.sh->state, SHM_SHARD_STOPPED);
	return SHARDD_EXIT_OK;
}
