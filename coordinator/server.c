/*
 * server.c — amorad's control socket.
 *
 * A Unix stream socket (mode 0660) speaking RESP2, so redis-cli and any
 * Redis client library can talk to it. Each connection is checked once
 * with SO_PEERCRED against the allowed uids/gids (root always passes).
 * Commands: PING, INFO, SHUTDOWN, QUIT, COMMAND (for redis-cli's start-up
 * probe) and AMORA.ATTACH, which makes the connection a libamora client:
 *
 *   AMORA.ATTACH  ->  *8 :1 :shards :segment-bytes :channel-bytes :slot
 *                        :generation :max-clients :doorbell-bytes
 *                     with three descriptors attached (SCM_RIGHTS): the data
 *                     segment (a read-only reopen), the doorbells and the
 *                     client's channel (read-write).
 *
 * An attached client is watched two ways: its socket (hang-up or EOF) and a
 * pidfd of its process (from SO_PEERCRED), which the kernel makes readable
 * when the process dies even if the socket was inherited by a child. On
 * either, amorad clears the client's epoch slot at once (a dead process is
 * not reading, and its stale epoch would stop every shard's reclamation),
 * marks the slot CLOSING and rings every shard; the slot is FREE again, and
 * its channel memfd closed, once every running shard has acknowledged that
 * it unmapped the channel (srv_tick). The next client of the slot gets a
 * new memfd: the previous owner may still map the old one. Shards also cut off a client that writes garbage into
 * its rings: srv_tick then drops that client's connection.
 *
 * Bytes from a peer are never trusted: the RESP parser bounds everything,
 * a protocol error is answered and the connection closed, and a peer that
 * sends more than RESP_MAX_REQUEST without completing a command is cut.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "amorad.h"
#include "log.h"
#include "table.h"

#define READ_CHUNK 65536
#define ATTACH_PROTO 1

struct conn {
	int fd;
	int pidfd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int slot; /* -1: not attached */
	char *in;
	size_t inlen, incap;
	struct resp_buf out;
	bool close_after_write;
};

/* ---------- connections ---------- */

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void epoll_add(struct amorad *a, int fd, uint32_t ev, void *ptr)
{
	struct epoll_event e = { .events = ev, .data.ptr = ptr };

	epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &e);
}

static void epoll_mod(struct amorad *a, int fd, uint32_t ev, void *ptr)
{
	struct epoll_event e = { .events = ev, .data.ptr = ptr };

	epoll_ctl(a->epfd, EPOLL_CTL_MOD, fd, &e);
}

bool srv_is_conn(const struct amorad *a, const void *ptr)
{
	for (size_t i = 0; i < a->nconns; i++)
		if (a->conns[i] == ptr)
			return true;
	return false;
}

/* The pidfd's epoll tag: the connection's address plus one, so an event
 * tells the socket and the pidfd apart. */
static void *pid_tag(struct conn *c)
{
	return (char *)c + 1;
}

static void detach_slot(struct amorad *a, struct conn *c)
{
	struct engine *e = &a->e;
	int slot = c->slot;

	if (slot < 0)
		return;
	shm_epoch_slot_clear(&engine_chan_hdr(e, (uint32_t)slot)->epoch);
	atomic_store_explicit(&e->clients[slot].state, REG_CLOSING, memory_order_release);
	atomic_fetch_add_explicit(&e->reg->version, 1, memory_order_acq_rel);
	engine_wake_shards(e);
	a->attached--;
	c->slot = -1;
	log_info("client pid %d detached from slot %d", c->pid, slot);
}

static void conn_close(struct amorad *a, struct conn *c)
{
	detach_slot(a, c);
	close(c->fd); /* also removes it from epoll */
	if (c->pidfd >= 0)
		close(c->pidfd);
	for (size_t i = 0; i < a->nconns; i++) {
		if (a->conns[i] == c) {
			a->conns[i] = a->conns[--a->nconns];
			break;
		}
	}
	free(c->in);
	resp_buf_free(&c->out);
	free(c);
}

static bool allowed(const struct amorad *a, uid_t uid, gid_t gid)
{
	const struct amorad_config *cfg = &a->e.cfg;

	if (uid == 0)
		return true;
	for (size_t i = 0; i < cfg->n_uids; i++)
		if (cfg->allow_uids[i] == uid)
			return true;
	for (size_t i = 0; i < cfg->n_gids; i++)
		if (cfg->allow_gids[i] == gid)
			return true;
	return false;
}

static void refuse(int fd, const char *msg)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "-%s\r\n", msg);

	if (send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("could not tell a refused peer why: %s", strerror(errno));
	close(fd);
}

void srv_accept(struct amorad *a)
{
	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct conn *c, **grown;
		int fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
			close(fd);
			continue;
		}
		if (!allowed(a, cred.uid, cred.gid)) {
			log_warn("refused a connection from uid %u gid %u (pid %d): not allowed",
				 cred.uid, cred.gid, cred.pid);
			refuse(fd, "DENIED uid not allowed by amorad's allow-uid/allow-gid");
			continue;
		}
		if (a->nconns >= 2 * (size_t)a->e.cfg.max_clients + 16) {
			refuse(fd, "ERR too many connections");
			continue;
		}
		c = calloc(1, sizeof(*c));
		grown = realloc(a->conns, (a->nconns + 1) * sizeof(*grown));
		if (c == NULL || grown == NULL) {
			free(c);
			if (grown)
				a->conns = grown;
			refuse(fd, "ERR out of memory");
			continue;
		}
		a->conns = grown;
		*c = (struct conn){ .fd = fd, .pidfd = -1, .pid = cred.pid, .uid = cred.uid,
				    .gid = cred.gid, .slot = -1 };
		a->conns[a->nconns++] = c;
		epoll_add(a, fd, EPOLLIN | EPOLLRDHUP, c);
	}
}

/* ---------- attach ---------- */

static int free_slot(const struct amorad *a)
{
	for (uint32_t i = 0; i < a->e.cfg.max_clients; i++)
		if (atomic_load(&a->e.clients[i].state) == REG_FREE)
			return (int)i;
	return -1;
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
	return n == (ssize_t)len ? 0 : -1;
}

static int attach_reply(struct amorad *a, struct conn *c, uint32_t slot, uint32_t gen)
{
	struct engine *e = &a->e;
	struct resp_buf b = { 0 };
	int fds[3], rc;
	uint64_t v[8] = { ATTACH_PROTO, e->cfg.shards, e->seg.size, e->chan_bytes, slot, gen,
			  e->cfg.max_clients, e->bells_bytes };

	fds[0] = shm_seg_reopen_rdonly(&e->seg);
	if (fds[0] < 0)
		return -1;
	fds[1] = e->bells_fd;
	fds[2] = e->chan_fd[slot];
	rc = resp_add_array(&b, 8);
	for (int i = 0; rc == RESP_OK && i < 8; i++)
		rc = resp_add_int(&b, (int64_t)v[i]);
	if (rc == RESP_OK)
		rc = send_with_fds(c->fd, b.data, b.len, fds, 3, 0);
	close(fds[0]);
	resp_buf_free(&b);
	return rc == RESP_OK ? 0 : -1;
}

/* Give every running shard the new channel (a shard forked later inherits
 * amorad's mapping). Before the slot is published: a shard that sees it
 * ACTIVE finds the fd already queued on its socket. */
static int send_channel(struct amorad *a, uint32_t slot, uint32_t gen)
{
	struct engine *e = &a->e;
	struct engine_chan_msg m = { slot, gen };

	for (uint32_t s = 0; s < e->cfg.shards; s++) {
		if (!sup_running(a, s))
			continue;
		if (send_with_fds(e->shard_sock[s][0], (const char *)&m, sizeof(m), &e->chan_fd[slot], 1,
				  MSG_DONTWAIT) != 0) {
			log_error("cannot send client slot %u's channel to shard %02u: %s", slot, s,
				  strerror(errno));
			return -1;
		}
	}
	return 0;
}

static void cmd_attach(struct amorad *a, struct conn *c)
{
	struct engine *e = &a->e;
	int slot;
	uint32_t gen;

	if (c->slot >= 0) {
		resp_add_error(&c->out, "ERR this connection is already attached");
		return;
	}
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
		resp_add_errorf(&c->out, "BUSY all %u client slots are taken (max-clients)",
				e->cfg.max_clients);
		return;
	}
	c->pidfd = pidfd_open_(c->pid);
	if (c->pidfd < 0) {
		resp_add_errorf(&c->out, "ERR cannot watch pid %d: %s", c->pid, strerror(errno));
		return;
	}
	gen = atomic_load(&e->clients[slot].gen) + 1;
	if (engine_chan_open(e, (uint32_t)slot, gen, c->pid) != 0) {
		resp_add_errorf(&c->out, "ERR cannot create the client channel: %s", strerror(errno));
		close(c->pidfd);
		c->pidfd = -1;
		return;
	}
	if (send_channel(a, (uint32_t)slot, gen) != 0) {
		resp_add_errorf(&c->out, "ERR cannot hand the channel to the shards: %s", strerror(errno));
		engine_chan_close(e, (uint32_t)slot);
		close(c->pidfd);
		c->pidfd = -1;
		return;
	}
	atomic_store(&e->clients[slot].pid, c->pid);
	atomic_store(&e->clients[slot].gen, gen);
	atomic_store_explicit(&e->clients[slot].state, REG_ACTIVE, memory_order_release);
	atomic_fetch_add_explicit(&e->reg->version, 1, memory_order_acq_rel);
	c->slot = slot;
	a->attached++;
	epoll_add(a, c->pidfd, EPOLLIN, pid_tag(c));
	if (attach_reply(a, c, (uint32_t)slot, gen) != 0) {
		log_warn("could not send the attach reply to pid %d: %s", c->pid, strerror(errno));
		c->close_after_write = true;
		return;
	}
	log_info("client pid %d (uid %u) attached to slot %d", c->pid, c->uid, slot);
}

/* ---------- other commands ---------- */

/* Bytes of the segment shard sh has written (slab.h). */
static uint64_t shard_used(const struct shm_shard *sh)
{
	struct shm_slab_stats ss;

	shm_slab_stats(&sh->slab, &ss);
	return ss.used_bytes;
}

static void cmd_info(struct amorad *a, struct conn *c)
{
	static const char *const sync_names[] = { "always", "periodic", "none" };
	struct engine *e = &a->e;
	uint64_t keys = 0, used = 0;
	uint32_t ready = 0;
	char buf[2048];
	int n;

	for (uint32_t s = 0; s < e->cfg.shards; s++) {
		struct shm_shard *sh = shm_shard_at(&e->seg, s);
		uint64_t toff = atomic_load(&sh->table_off);
		struct shm_table *t = shm_ptr(&e->seg, toff, sizeof(*t));

		keys += t ? atomic_load(&t->live) : 0;
		used += shard_used(sh);
		ready += atomic_load(&sh->state) == SHM_SHARD_READY;
	}
	n = snprintf(buf, sizeof(buf),
		     "# Server\r\namora_version:0.1\r\nprocess_id:%d\r\nuptime_in_seconds:%llu\r\n"
		     "data_dir:%s\r\nsync:%s\r\nshards:%u\r\nshards_ready:%u\r\n"
		     "# Clients\r\nconnected_clients:%zu\r\nattached_clients:%u\r\nmax_clients:%u\r\n"
		     "# Memory\r\nused_memory:%llu\r\nmemory_limit:%llu\r\n"
		     "# Keyspace\r\nkeys:%llu\r\n",
		     getpid(), (unsigned long long)((amorad_now_ns() - a->started_ns) / 1000000000ull),
		     e->cfg.data_dir, sync_names[e->cfg.sync], e->cfg.shards, ready, a->nconns,
		     a->attached, e->cfg.max_clients, (unsigned long long)used,
		     (unsigned long long)e->seg.size, (unsigned long long)keys);
	resp_add_bulk(&c->out, buf, (size_t)n);
}

static bool is(const struct resp_cmd *cmd, size_t i, const char *name)
{
	return cmd->argl[i] == strlen(name) && strncasecmp(cmd->argv[i], name, cmd->argl[i]) == 0;
}

static void dispatch(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	if (is(cmd, 0, "PING")) {
		if (cmd->argc > 1)
			resp_add_bulk(&c->out, cmd->argv[1], cmd->argl[1]);
		else
			resp_add_simple(&c->out, "PONG");
	} else if (is(cmd, 0, "INFO")) {
		cmd_info(a, c);
	} else if (is(cmd, 0, "AMORA.ATTACH")) {
		cmd_attach(a, c);
	} else if (is(cmd, 0, "COMMAND")) {
		resp_add_array(&c->out, 0);
	} else if (is(cmd, 0, "QUIT")) {
		resp_add_simple(&c->out, "OK");
		c->close_after_write = true;
	} else if (is(cmd, 0, "SHUTDOWN")) {
		resp_add_simple(&c->out, "OK");
		c->close_after_write = true;
		amorad_begin_stop(a, "SHUTDOWN command");
	} else {
		int len = cmd->argl[0] > 64 ? 64 : (int)cmd->argl[0];

		resp_add_errorf(&c->out, "ERR unknown command '%.*s'", len, cmd->argv[0]);
	}
}

/* ---------- reading and writing ---------- */

/* Returns false if the connection was closed. */
static bool flush_out(struct amorad *a, struct conn *c)
{
	while (c->out.len > 0) {
		ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* stop reading from a peer we are about to drop */
			epoll_mod(a, c->fd, (c->close_after_write ? 0 : EPOLLIN) | EPOLLOUT | EPOLLRDHUP, c);
			return true;
		}
		if (n <= 0) {
			conn_close(a, c);
			return false;
		}
		resp_buf_consume(&c->out, (size_t)n);
	}
	epoll_mod(a, c->fd, EPOLLIN | EPOLLRDHUP, c);
	if (c->close_after_write) {
		conn_close(a, c);
		return false;
	}
	return true;
}

static bool read_in(struct conn *c)
{
	if (c->incap - c->inlen < READ_CHUNK) {
		size_t cap = c->incap ? c->incap * 2 : READ_CHUNK * 2;
		char *p = realloc(c->in, cap);

		if (p == NULL)
			return false;
		c->in = p;
		c->incap = cap;
	}
	ssize_t n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);

	if (n <= 0)
		return n < 0 && (errno == EAGAIN || errno == EINTR);
	c->inlen += (size_t)n;
	return true;
}

/* A peer that sends commands without reading the replies is dropped once
 * this much output waits for it (Redis's client-output-buffer-limit). */
#define OUT_LIMIT (1u << 20)

static void handle_input(struct amorad *a, struct conn *c)
{
	size_t off = 0;
	char err[160];

	while (!c->close_after_write && off < c->inlen) {
		size_t used;
		int rc = resp_parse(c->in + off, c->inlen - off, a->cmd, &used, err, sizeof(err));

		if (rc == RESP_INCOMPLETE)
			break;
		if (rc != RESP_OK) {
			resp_add_errorf(&c->out, "ERR %s", err);
			c->close_after_write = true;
			break;
		}
		off += used;
		if (a->cmd->argc > 0)
			dispatch(a, c, a->cmd);
		if (c->out.len > OUT_LIMIT) {
			log_warn("dropping pid %d: it does not read its replies", c->pid);
			resp_buf_consume(&c->out, c->out.len);
			c->close_after_write = true;
		}
	}
	memmove(c->in, c->in + off, c->inlen - off);
	c->inlen -= off;
	if (c->inlen > RESP_MAX_REQUEST) {
		resp_add_error(&c->out, "ERR Protocol error: request too large");
		c->close_after_write = true;
	}
}

void srv_event(struct amorad *a, struct conn *c, uint32_t events)
{
	if (!srv_is_conn(a, c)) {
		/* the pidfd tag: the client's process died */
		c = (struct conn *)((char *)c - 1);
		if (srv_is_conn(a, c)) {
			log_info("client pid %d died", c->pid);
			conn_close(a, c);
		}
		return;
	}
	if ((events & EPOLLIN) && !c->close_after_write) {
		if (!read_in(c)) {
			conn_close(a, c);
			return;
		}
		handle_input(a, c);
	} else if (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
		conn_close(a, c);
		return;
	}
	flush_out(a, c);
}

/* ---------- periodic work ---------- */

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
 * STUCK_READER_MS it is cut off, as LMDB users wish their stale readers
 * were. Returns whether slot i was cut off. */
#define STUCK_READER_MS 10000

static bool cut_stuck_reader(struct amorad *a, uint32_t i)
{
	struct engine *e = &a->e;
	struct chan_hdr *h = engine_chan_hdr(e, i);
	uint64_t ep = atomic_load_explicit(&h->epoch.epoch, memory_order_relaxed);
	uint64_t now = amorad_now_ns();

	if (ep == 0 || ep >= atomic_load(&e->seg.hdr->global_epoch) || ep != a->stuck_epoch[i]) {
		a->stuck_epoch[i] = ep;
		a->stuck_since_ns[i] = now;
		return false;
	}
	if (now - a->stuck_since_ns[i] < STUCK_READER_MS * 1000000ull)
		return false;
	atomic_store_explicit(&h->cut_off, CHAN_CUT_BY_AMORAD, memory_order_release);
	return true;
}

void srv_tick(struct amorad *a)
{
	struct engine *e = &a->e;

	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		uint32_t st = atomic_load(&e->clients[i].state);
		uint32_t gen = atomic_load(&e->clients[i].gen);

		if (st == REG_CLOSING && all_acked(a, i, gen)) {
			engine_chan_close(e, i);
			atomic_store(&e->clients[i].pid, 0);
			atomic_store_explicit(&e->clients[i].state, REG_FREE, memory_order_release);
			atomic_fetch_add(&e->reg->version, 1);
		} else if (st == REG_ACTIVE && cut_stuck_reader(a, i)) {
			struct conn *c = conn_of_slot(a, i);

			log_warn("dropping client pid %d: it stayed in one read section for %d s while "
				 "writers waited to reclaim memory", c ? c->pid : 0, STUCK_READER_MS / 1000);
			if (c)
				conn_close(a, c);
		} else if (st == REG_ACTIVE && atomic_load(&engine_chan_hdr(e, i)->cut_off) != 0) {
			struct conn *c = conn_of_slot(a, i);

			log_warn("dropping client pid %d: shard %u cut it off", c ? c->pid : 0,
				 atomic_load(&engine_chan_hdr(e, i)->cut_off) - 1);
			if (c)
				conn_close(a, c);
		}
	}
}

/* ---------- the listening socket ---------- */

int srv_listen(struct amorad *a, char *err, size_t errlen)
{
	const char *path = a->e.cfg.socket_path;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is longer than %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		snprintf(err, errlen, "%s is in use by a running server", path);
		close(fd);
		return -1;
	}
	unlink(path); /* a stale socket of a dead amorad (we hold the data-dir lock) */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0660) != 0 ||
	    listen(fd, 128) != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	a->listen_fd = fd;
	epoll_add(a, fd, EPOLLIN, &a->listen_fd);
	return 0;
}

void srv_close_listener(struct amorad *a)
{
	if (a->listen_fd < 0)
		return;
	close(a->listen_fd);
	unlink(a->e.cfg.socket_path);
	a->listen_fd = -1;
}

void srv_close_all(struct amorad *a)
{
	while (a->nconns > 0)
		conn_close(a, a->conns[0]);
	free(a->conns);
	a->conns = NULL;
}
