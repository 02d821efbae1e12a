/*
 * slots.c — client slots: attaching a connection (AMORA.ATTACH), noticing
 * its client's death, recycling the slot, cutting off stuck readers.
 *
 *   AMORA.ATTACH  ->  the reply shm/chan.h specifies (SHM_CHAN_ATTACH_*):
 *                     *6 :2 :shards :segment-bytes :channel-bytes :slot :generation
 *                     with two descriptors attached (SCM_RIGHTS): the data
 *                     segment (a read-only reopen) and the client's channel
 *                     (read-write), the only memory the client can write.
 *                     amorad first hands the channel to every running shard
 *                     (send_channel), then publishes the slot and wakes the
 *                     shards (engine.h), then answers: a shard serves the
 *                     client's first request without waiting for a sweep.
 *                     (Protocol 1 also sent a doorbell memfd shared by all
 *                     clients, read-write: chan.h, "Doorbells".)
 *
 * An attached client is watched two ways: its socket (hang-up or EOF,
 * server.c) and a pidfd of its process (from SO_PEERCRED), which the kernel
 * makes readable when the process dies even if the socket was inherited by
 * a child. On either, amorad clears the client's epoch slot at once (a dead
 * process is not reading, and its stale epoch would stop every shard's
 * reclamation), marks the slot CLOSING and rings every shard; the slot is
 * FREE again, and its channel memfd closed, once every running shard has
 * acknowledged that it unmapped the channel (srv_tick). The next client of
 * the slot gets a new memfd: the previous owner may still map the old one.
 * Shards also cut off a client that writes garbage into its rings, and
 * amorad one that stays in a read section too long: srv_tick then drops
 * that client's connection.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "coordinator/server.h"
#include "shardd/log.h"
#include "shm/probe.h"

/* ---------- system-call wrappers (0 or -1 with errno) ---------- */

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int send_with_fds(int fd, const char *buf, size_t len, const int *fds, int nfds, int flags)
{
	char ctl[CMSG_SPACE(sizeof(int) * 3)];
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
			      .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	memset(ctl, 0, sizeof(ctl));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	n = sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
	if (n >= 0 && n != (ssize_t)len)
		errno = EMSGSIZE;
	return n == (ssize_t)len ? 0 : -1;
}

/* ---------- the client's process ---------- */

/* The pidfd's handler: the client's process died. */
static void on_client_death(struct amorad *a, void *obj, uint32_t events)
{
	struct conn *c = obj;

	(void)events;
	log_info("client pid %d died", c->pid);
	conn_close(a, c);
}

/* Watch the peer's process. Returns 0, or -1 with the reason in err. */
static int watch_pid(struct amorad *a, struct conn *c, char *err, size_t errlen)
{
	int fd = pidfd_open_(c->pid);

	if (fd < 0) {
		snprintf(err, errlen, "cannot watch pid %d: %s", c->pid, strerror(errno));
		return -1;
	}
	if (loop_add(&a->loop, &c->pidfd, fd, EPOLLIN, on_client_death, c, err, errlen) != 0) {
		close(fd);
		c->pidfd.fd = -1;
		return -1;
	}
	return 0;
}

static void unwatch_pid(struct amorad *a, struct conn *c)
{
	if (c->pidfd.fd < 0)
		return;
	loop_del(&a->loop, &c->pidfd);
	close(c->pidfd.fd);
	c->pidfd.fd = -1;
}

/* ---------- attach ---------- */

static int free_slot(const struct amorad *a)
{
	for (uint32_t i = 0; i < a->e.cfg.max_clients; i++)
		if (atomic_load(&a->e.clients[i].state) == REG_FREE)
			return (int)i;
	return -1;
}

/* The attach reply and its two descriptors, in one sendmsg. Returns 0, or
 * -1 with the reason in err. */
static int attach_reply(struct amorad *a, struct conn *c, uint32_t slot, uint32_t gen, char *err,
			size_t errlen)
{
	struct engine *e = &a->e;
	struct resp_buf b = { 0 };
	int fds[SHM_CHAN_ATTACH_FDS], rc;
	uint64_t v[SHM_CHAN_ATTACH_FIELDS] = { SHM_CHAN_ATTACH_PROTO, e->cfg.shards, e->seg.size, e->chan_bytes, slot, gen };

	fds[0] = shm_seg_reopen_rdonly(&e->seg);
	if (fds[0] < 0) {
		snprintf(err, errlen, "cannot reopen the data segment read-only: %s", strerror(errno));
		return -1;
	}
	fds[1] = e->chan_fd[slot];
	rc = resp_add_array(&b, SHM_CHAN_ATTACH_FIELDS);
	for (int i = 0; rc == RESP_OK && i < SHM_CHAN_ATTACH_FIELDS; i++)
		rc = resp_add_int(&b, (int64_t)v[i]);
	if (rc != RESP_OK)
		snprintf(err, errlen, "out of memory for the reply");
	else if ((rc = send_with_fds(c->sock.fd, b.data, b.len, fds, SHM_CHAN_ATTACH_FDS, 0)) != 0)
		snprintf(err, errlen, "%s", strerror(errno));
	close(fds[0]);
	resp_buf_free(&b);
	return rc == 0 ? 0 : -1;
}

/* Give every running shard the new channel (a shard forked later inherits
 * amorad's mapping). Before the slot is published: a shard that sees it
 * ACTIVE finds the fd queued on its socket, if it has not taken it yet
 * (sendmsg has queued it when it returns; shardd.c, peer_ready). Returns 0,
 * or -1 with the reason in err. */
static int send_channel(struct amorad *a, uint32_t slot, uint32_t gen, char *err, size_t errlen)
{
	struct engine *e = &a->e;
	struct engine_chan_msg m = { slot, gen };

	for (uint32_t s = 0; s < e->cfg.shards; s++) {
		if (!sup_running(a, s))
			continue;
		if (send_with_fds(e->shard_sock[s][0], (const char *)&m, sizeof(m), &e->chan_fd[slot], 1,
				  MSG_DONTWAIT) != 0) {
			snprintf(err, errlen, "cannot hand the channel to the shards: shard %02u: %s", s,
				 strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Registry publication: the shards serve the slot from now on. */
static void publish_slot(struct amorad *a, struct conn *c, uint32_t slot, uint32_t gen)
{
	struct engine *e = &a->e;

	atomic_store(&e->clients[slot].pid, c->pid);
	atomic_store(&e->clients[slot].gen, gen);
	atomic_store_explicit(&e->clients[slot].state, REG_ACTIVE, memory_order_release);
	atomic_fetch_add_explicit(&e->reg->version, 1, memory_order_acq_rel);
	/* Before the reply: a sleeping shard does not wait on this client's
	 * word yet, so it must re-read the registry (chan.h, "Doorbells"). */
	engine_wake_shards(e);
	c->slot = (int)slot;
	a->attached++;
	srv_count_clients(a); /* before the reply: the client may read it at once */
}

/* amorad could not give the connection a slot for a cause of its own (a
 * channel or a descriptor it could not make): say why to the operator and
 * to the peer. */
static void attach_fail(struct amorad *a, struct conn *c, const char *err)
{
	log_warn("cannot attach pid %d: %s", c->pid, err);
	resp_add_errorf(&c->out, "ERR %s", err);
	unwatch_pid(a, c);
}

void cmd_attach(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	struct engine *e = &a->e;
	char err[256];
	int slot;
	uint32_t gen;

	(void)cmd;
	if (c->out.len > 0) {
		resp_add_error(&c->out, "ERR AMORA.ATTACH cannot be pipelined");
		return;
	}
	slot = free_slot(a);
	if (slot < 0) {
		/* A slot whose client just left may be waiting only for the
		 * tick to see the shards' acknowledgements. */
		srv_tick(a);
		slot = free_slot(a);
	}
	if (slot < 0) {
		admit_log_refusal("refusing to attach pid %d (uid %u): all %u client slots are taken "
				  "(max-clients)", c->pid, c->uid, e->cfg.max_clients);
		resp_add_errorf(&c->out, "BUSY all %u client slots are taken (max-clients)",
				e->cfg.max_clients);
		return;
	}
	if (watch_pid(a, c, err, sizeof(err)) != 0) {
		resp_add_errorf(&c->out, "ERR %s", err);
		return;
	}
	gen = atomic_load(&e->clients[slot].gen) + 1;
	if (engine_chan_open(e, (uint32_t)slot, gen, c->pid, err, sizeof(err)) != 0) {
		attach_fail(a, c, err);
		return;
	}
	if (send_channel(a, (uint32_t)slot, gen, err, sizeof(err)) != 0) {
		engine_chan_close(e, (uint32_t)slot);
		attach_fail(a, c, err);
		return;
	}
	publish_slot(a, c, (uint32_t)slot, gen);
	if (attach_reply(a, c, (uint32_t)slot, gen, err, sizeof(err)) != 0) {
		log_warn("could not send the attach reply to pid %d: %s", c->pid, err);
		c->close_after_write = true;
		return;
	}
	AMORA_PROBE(client__attach, slot, gen, c->pid, c->uid);
	log_info("client pid %d (uid %u) attached to slot %d", c->pid, c->uid, slot);
}

/* ---------- detach, recycle, cut off ---------- */

void slot_detach(struct amorad *a, struct conn *c)
{
	struct engine *e = &a->e;
	int slot = c->slot;

	unwatch_pid(a, c);
	if (slot < 0)
		return;
	shm_epoch_slot_clear(&engine_chan_hdr(e, (uint32_t)slot)->epoch);
	atomic_store_explicit(&e->clients[slot].state, REG_CLOSING, memory_order_release);
	atomic_fetch_add_explicit(&e->reg->version, 1, memory_order_acq_rel);
	engine_wake_shards(e);
	a->attached--;
	c->slot = -1;
	AMORA_PROBE(client__detach, slot, c->pid);
	log_info("client pid %d detached from slot %d", c->pid, slot);
}

static bool all_acked(const struct amorad *a, uint32_t slot, uint32_t gen)
{
	for (uint32_t s = 0; s < a->e.cfg.shards; s++)
		if (sup_running(a, s) && atomic_load(engine_ack(&a->e, slot, s)) != gen)
			return false;
	return true;
}

static struct conn *conn_of_slot(const struct amorad *a, uint32_t slot)
{
	for (size_t i = 0; i < a->nconns; i++)
		if (a->conns[i]->slot == (int)slot)
			return a->conns[i];
	return NULL;
}

/* A reader that stays inside one read section while the store moves on
 * (stopped with SIGSTOP, stuck in a callback, or hostile) holds every
 * shard's reclamation: memory fills up and writes fail. Past
 * --reader-timeout-ms it is cut off, as LMDB users wish their stale
 * readers were. Returns whether slot i (attach generation gen) was cut off.
 *
 * What counts is that the slot keeps reclamation back, not the values it
 * writes. It is behind when its epoch is non-zero and below the global
 * epoch: the shards cannot free what was retired after it. When amorad
 * first sees it behind, it notes the global epoch as the bar. A read
 * section entered after that has an epoch >= bar (the global epoch only
 * grows, and amorad reads it before the slot), so a slot still below the
 * bar reader-timeout-ms later has held back everything retired since,
 * whatever it wrote meanwhile: a client writing 1, 2, 1, 2 into its slot
 * while the global epoch is 1000 stays below. A slot that is idle (0),
 * caught up (>= global) or that re-entered (>= bar) starts over; a reader
 * doing many short reads re-enters between two ticks, so however busy the
 * writers are, it is never cut off. A new client in the slot (a new
 * generation) starts with a clean watch. */
static bool cut_stuck_reader(struct amorad *a, uint32_t i, uint32_t gen)
{
	struct engine *e = &a->e;
	struct shm_chan_hdr *h = engine_chan_hdr(e, i);
	struct reader_watch *w = &a->watch[i];
	uint64_t g = atomic_load(&e->seg.hdr->global_epoch);
	uint64_t ep = atomic_load(&h->epoch.epoch);
	uint64_t now = shm_now_ns();

	if (w->gen != gen)
		*w = (struct reader_watch){ .gen = gen };
	if (ep == 0 || ep >= g) {
		w->since_ns = 0;
		return false;
	}
	if (w->since_ns == 0 || ep >= w->bar) {
		w->bar = g;
		w->since_ns = now;
		return false;
	}
	if (now - w->since_ns < (uint64_t)a->cfg.reader_timeout_ms * 1000000ull)
		return false;
	atomic_store_explicit(&h->cut_off, SHM_CHAN_CUT_BY_AMORAD, memory_order_release);
	return true;
}

/* Every running shard has let go of the slot's channel: FREE it. */
static void recycle_slot(struct engine *e, uint32_t i)
{
	engine_chan_close(e, i);
	atomic_store(&e->clients[i].pid, 0);
	atomic_store_explicit(&e->clients[i].state, REG_FREE, memory_order_release);
	atomic_fetch_add(&e->reg->version, 1);
}

void srv_tick(struct amorad *a)
{
	struct engine *e = &a->e;

	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		uint32_t st = atomic_load(&e->clients[i].state);
		uint32_t gen = atomic_load(&e->clients[i].gen);
		struct conn *c;

		if (st != REG_ACTIVE)
			a->watch[i].since_ns = 0;
		if (st == REG_CLOSING && all_acked(a, i, gen)) {
			recycle_slot(e, i);
		} else if (st == REG_ACTIVE && cut_stuck_reader(a, i, gen)) {
			c = conn_of_slot(a, i);
			log_warn("dropping client pid %d: it stayed in one read section for %u ms while "
				 "writers waited to reclaim memory (reader-timeout-ms)", c ? c->pid : 0,
				 a->cfg.reader_timeout_ms);
			if (c)
				conn_close(a, c);
		} else if (st == REG_ACTIVE && atomic_load(&engine_chan_hdr(e, i)->cut_off) != 0) {
			c = conn_of_slot(a, i);
			log_warn("dropping client pid %d: shard %u cut it off", c ? c->pid : 0,
				 atomic_load(&engine_chan_hdr(e, i)->cut_off) - 1);
			if (c)
				conn_close(a, c);
		}
	}
}
