/*
 * server.c — amorad's control socket.
 *
 * A Unix stream socket speaking RESP2, so redis-cli and any Redis client
 * library can talk to it. Each connection is checked once with SO_PEERCRED
 * (and SO_PEERGROUPS) against the allowed uids/gids (root and amorad's own
 * uid always pass); the file modes of the socket and its directory follow
 * the lists so that whom they name can reach it (srv_listen).
 * Commands: PING, INFO, SHUTDOWN, QUIT, COMMAND (for redis-cli's start-up
 * probe) and AMORA.ATTACH, which makes the connection a libamora client:
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
 *
 * Nor is a peer's patience (Redis's maxclients, per-user limits and
 * timeouts play the same part): at most max-connections connections, of
 * which max-connections-per-uid from one uid; root and amorad's uid are
 * not counted per uid and have CONFIG_OWNER_RESERVE more beyond the total,
 * so the owner always gets in. A request begun but not complete after
 * request-timeout-ms closes its connection (an idle connection is not a
 * request: attached clients are idle by design). Unfinished requests are
 * buffered within input-buffer-budget over all connections. Every refusal
 * is one RESP error line that says why (-BUSY for a limit, -DENIED for the
 * allow-lists: libamora maps both), then the connection is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "coordinator/amorad.h"
#include "shardd/log.h"
#include "shm/shard.h"
#include "shm/version.h"

#define READ_CHUNK 65536

struct conn {
	int fd;
	int pidfd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int slot; /* -1: not attached */
	char *in;   /* an unfinished request (mmap, see in_reserve), NULL: none */
	size_t inlen, incap;
	uint64_t req_since_ns;     /* when the request in `in` began */
	uint64_t closing_since_ns; /* close_after_write seen by srv_expire; 0: not yet */
	struct resp_buf out;
	bool close_after_write;
	struct conn *next_closed; /* on a->closed until srv_free_closed */
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

/* ---------- input buffers ---------- */

/* The bytes of a connection's unfinished request live in a mapping of its
 * own (mmap, grown with mremap), not in malloc memory: its pages go back to
 * the kernel as soon as the request completes or the connection closes, so
 * amorad's RSS follows what is pending now, not the largest request it ever
 * saw. Every byte mapped counts in a->in_bytes, which never passes
 * --input-buffer-budget. A request that arrives whole in one read never
 * needs a mapping: it is parsed where it was read, in `scratch`. */
static char scratch[READ_CHUNK];
#define IN_MAX ((size_t)RESP_MAX_REQUEST + READ_CHUNK) /* never needed beyond */
#define IN_PAGE 4096u

static size_t in_round(size_t n)
{
	return (n + IN_PAGE - 1) & ~(size_t)(IN_PAGE - 1);
}

static void in_free(struct amorad *a, struct conn *c)
{
	if (c->in != NULL)
		munmap(c->in, c->incap);
	a->in_bytes -= c->incap;
	c->in = NULL;
	c->inlen = c->incap = 0;
}

/* Room for `need` (<= IN_MAX) bytes in c->in, keeping its bytes: doubling
 * while the budget allows, else just enough. Returns 0, or -1 with errno
 * ENOBUFS (the budget would be passed) or ENOMEM. */
static int in_reserve(struct amorad *a, struct conn *c, size_t need)
{
	uint64_t others = a->in_bytes - c->incap, budget = a->cfg.input_budget;
	size_t cap = in_round(need);
	void *p;

	if (need <= c->incap)
		return 0;
	if (c->incap * 2 > cap)
		cap = c->incap * 2 < IN_MAX ? c->incap * 2 : in_round(IN_MAX);
	if (others + cap > budget)
		cap = in_round(need);
	if (others + cap > budget) {
		errno = ENOBUFS;
		return -1;
	}
	if (c->in != NULL)
		p = mremap(c->in, c->incap, cap, MREMAP_MAYMOVE);
	else
		p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return -1;
	}
	if (c->in == NULL)
		madvise(p, cap, MADV_DONTFORK); /* a shard forked later has no use for it */
	a->in_bytes = others + cap;
	c->in = p;
	c->incap = cap;
	return 0;
}

/* After a request was taken off the front: give back what the rest does
 * not need (a small tail left after a large request). */
static void in_shrink(struct amorad *a, struct conn *c)
{
	size_t cap = in_round(c->inlen + READ_CHUNK);

	if (c->inlen == 0) {
		in_free(a, c);
	} else if (cap < c->incap && mremap(c->in, c->incap, cap, 0) != MAP_FAILED) {
		a->in_bytes -= c->incap - cap;
		c->incap = cap;
	}
}

/* ---------- closing and accepting ---------- */

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
	in_free(a, c);
	resp_buf_free(&c->out);
	/* Freed only after the current batch of epoll events: an event of
	 * this connection later in the batch must not find its address
	 * reused by a connection accepted meanwhile. */
	c->next_closed = a->closed;
	a->closed = c;
}

void srv_free_closed(struct amorad *a)
{
	while (a->closed != NULL) {
		struct conn *c = a->closed;

		a->closed = c->next_closed;
		free(c);
	}
}

static bool is_owner(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

static bool gid_listed(const struct amorad_config *cfg, gid_t gid)
{
	for (size_t i = 0; i < cfg->n_gids; i++)
		if (cfg->allow_gids[i] == gid)
			return true;
	return false;
}

/* Whether one of the peer's supplementary groups is allowed. SO_PEERGROUPS
 * (Linux 4.13) gives them as they were at connect(2), like SO_PEERCRED. */
static bool peer_groups_listed(const struct amorad_config *cfg, int fd)
{
	gid_t small[64], *groups = small;
	socklen_t len = sizeof(small);
	bool found = false;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
		if (errno != ERANGE || (groups = malloc(len)) == NULL)
			return false;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
			len = 0;
	}
	for (size_t i = 0; !found && i < len / sizeof(gid_t); i++)
		found = gid_listed(cfg, groups[i]);
	if (groups != small)
		free(groups);
	return found;
}

/* The allow-lists. Root and amorad's own uid always pass: they can read
 * amorad's memory anyway, and the owner must always have a way in. */
static bool allowed(const struct amorad *a, int fd, const struct ucred *cred)
{
	const struct amorad_config *cfg = &a->cfg;

	if (is_owner(cred->uid))
		return true;
	for (size_t i = 0; i < cfg->n_uids; i++)
		if (cfg->allow_uids[i] == cred->uid)
			return true;
	return cfg->n_gids > 0 && (gid_listed(cfg, cred->gid) || peer_groups_listed(cfg, fd));
}

static uint32_t conns_of_uid(const struct amorad *a, uid_t uid)
{
	uint32_t n = 0;

	for (size_t i = 0; i < a->nconns; i++)
		n += a->conns[i]->uid == uid;
	return n;
}

/* Tell a peer in one RESP error line why it is refused, and hang up. The
 * line is sent before the peer's first request is read: a peer that only
 * reads (libamora after its attach request) finds it there. */
__attribute__((format(printf, 2, 3)))
static void refuse(int fd, const char *fmt, ...)
{
	char line[320];
	va_list ap;
	int n;

	line[0] = '-';
	va_start(ap, fmt);
	n = vsnprintf(line + 1, sizeof(line) - 3, fmt, ap);
	va_end(ap);
	n = 1 + (n < (int)sizeof(line) - 3 ? n : (int)sizeof(line) - 4);
	memcpy(line + n, "\r\n", 2);
	if (send(fd, line, (size_t)n + 2, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("could not tell a refused peer why: %s", strerror(errno));
	close(fd);
}

/* A refusal in the log: at most one line a second, with a count of those
 * left out, so a flood of connections does not flood the log. */
__attribute__((format(printf, 1, 2)))
static void log_refusal(const char *fmt, ...)
{
	static uint64_t last_ns;
	static unsigned quiet;
	uint64_t now = shm_now_ns();
	char msg[320];
	va_list ap;

	if (last_ns != 0 && now - last_ns < 1000000000ull) {
		quiet++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (quiet)
		log_warn("%s (and %u more refusals in the last second)", msg, quiet);
	else
		log_warn("%s", msg);
	last_ns = now;
	quiet = 0;
}

/* Out of descriptors (EMFILE): accept one peer with the descriptor kept in
 * reserve, tell it why, and take the reserve back; without this the
 * listening socket would stay readable and amorad would spin. Returns
 * whether a peer was refused. */
static bool refuse_out_of_fds(struct amorad *a)
{
	int fd;

	if (a->spare_fd < 0)
		return false;
	close(a->spare_fd);
	fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0) {
		log_refusal("refused a connection: amorad has no file descriptor left (RLIMIT_NOFILE)");
		refuse(fd, "BUSY amorad has no file descriptor left (RLIMIT_NOFILE); try again later");
	}
	a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd >= 0;
}

/* Why a peer with these credentials may not have one more connection now,
 * as the error line it gets; NULL if it may. */
static const char *over_limit(const struct amorad *a, const struct ucred *cred, char *why, size_t n)
{
	const struct amorad_config *cfg = &a->cfg;
	uint32_t mine;

	if (is_owner(cred->uid)) {
		if (a->nconns < (size_t)cfg->max_connections + CONFIG_OWNER_RESERVE)
			return NULL;
		snprintf(why, n, "BUSY too many connections: %zu open, max-connections %u plus %u kept "
			 "for root and amorad's uid", a->nconns, cfg->max_connections, CONFIG_OWNER_RESERVE);
		return why;
	}
	if (a->nconns >= cfg->max_connections) {
		snprintf(why, n, "BUSY too many connections: %zu open, max-connections is %u", a->nconns,
			 cfg->max_connections);
		return why;
	}
	mine = conns_of_uid(a, cred->uid);
	if (mine >= cfg->max_conns_per_uid) {
		snprintf(why, n, "BUSY too many connections from uid %u: %u open, "
			 "max-connections-per-uid is %u", cred->uid, mine, cfg->max_conns_per_uid);
		return why;
	}
	return NULL;
}

void srv_accept(struct amorad *a)
{
	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		struct conn *c, **grown;
		char why[256];
		const char *busy;
		int fd = accept4(a->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if ((errno == EMFILE || errno == ENFILE) && refuse_out_of_fds(a))
				continue;
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
			close(fd);
			continue;
		}
		if (!allowed(a, fd, &cred)) {
			log_refusal("refused a connection from uid %u gid %u (pid %d): not allowed",
				    cred.uid, cred.gid, cred.pid);
			refuse(fd, "DENIED uid %u (gid %u) is not allowed: amorad's allow-uid and allow-gid "
			       "do not list it", cred.uid, cred.gid);
			continue;
		}
		busy = over_limit(a, &cred, why, sizeof(why));
		if (busy) {
			log_refusal("refused a connection from uid %u (pid %d): %s", cred.uid, cred.pid,
				    busy + 5);
			refuse(fd, "%s", busy);
			continue;
		}
		c = calloc(1, sizeof(*c));
		grown = realloc(a->conns, (a->nconns + 1) * sizeof(*grown));
		if (c == NULL || grown == NULL) {
			free(c);
			if (grown)
				a->conns = grown;
			refuse(fd, "ERR amorad is out of memory for a new connection");
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
	int fds[SHM_CHAN_ATTACH_FDS], rc;
	uint64_t v[SHM_CHAN_ATTACH_FIELDS] = { SHM_CHAN_ATTACH_PROTO, e->cfg.shards, e->seg.size, e->chan_bytes, slot, gen };

	fds[0] = shm_seg_reopen_rdonly(&e->seg);
	if (fds[0] < 0)
		return -1;
	fds[1] = e->chan_fd[slot];
	rc = resp_add_array(&b, SHM_CHAN_ATTACH_FIELDS);
	for (int i = 0; rc == RESP_OK && i < SHM_CHAN_ATTACH_FIELDS; i++)
		rc = resp_add_int(&b, (int64_t)v[i]);
	if (rc == RESP_OK)
		rc = send_with_fds(c->fd, b.data, b.len, fds, SHM_CHAN_ATTACH_FDS, 0);
	close(fds[0]);
	resp_buf_free(&b);
	return rc == RESP_OK ? 0 : -1;
}

/* Give every running shard the new channel (a shard forked later inherits
 * amorad's mapping). Before the slot is published: a shard that sees it
 * ACTIVE finds the fd queued on its socket, if it has not taken it yet
 * (sendmsg has queued it when it returns; shardd.c, peer_ready). */
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
	/* Before the reply: a sleeping shard does not wait on this client's
	 * word yet, so it must re-read the registry (chan.h, "Doorbells"). */
	engine_wake_shards(e);
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

static void cmd_info(struct amorad *a, struct conn *c)
{
	struct engine *e = &a->e;
	struct shm_store_stats ss;
	/* Room for the fixed part, the data directory and one line a shard
	 * ("shard1023:state=restarting,cause=out_of_memory,restarts=4294967295"). */
	size_t cap = 1024 + strlen(e->cfg.data_dir) + (size_t)e->cfg.shards * 80, len;
	char *buf = malloc(cap);

	if (buf == NULL) {
		resp_add_error(&c->out, "ERR out of memory for INFO");
		return;
	}
	shm_store_stats(&e->seg, &ss);
	len = (size_t)snprintf(buf, cap,
		     "# Server\r\namora_version:" AMORA_VERSION_STRING "\r\nprocess_id:%d\r\nuptime_in_seconds:%llu\r\n"
		     "data_dir:%s\r\nsync:%s\r\nshards:%u\r\nshards_ready:%u\r\nshards_failed:%u\r\n"
		     "# Clients\r\nconnected_clients:%zu\r\nattached_clients:%u\r\nmax_clients:%u\r\n"
		     "# Memory\r\nused_memory:%llu\r\nmemory_limit:%llu\r\n"
		     "# Keyspace\r\nkeys:%llu\r\n# Shards\r\n",
		     getpid(), (unsigned long long)((shm_now_ns() - a->started_ns) / 1000000000ull),
		     e->cfg.data_dir, wal_sync_name(e->cfg.sync), e->cfg.shards, ss.ready, ss.failed,
		     a->nconns, a->attached, e->cfg.max_clients, (unsigned long long)ss.used_bytes,
		     (unsigned long long)e->seg.size, (unsigned long long)ss.keys);
	/* One line a shard: state, why it failed (cause=none unless FAILED),
	 * restarts. The cause is loaded after the state (shardd.h). */
	for (uint32_t s = 0; s < e->cfg.shards && len < cap; s++) {
		struct shm_shard *sh = shm_shard_at(&e->seg, s);
		uint32_t st = atomic_load_explicit(&sh->state, memory_order_acquire);
		uint32_t cause = st == SHM_SHARD_FAILED ? atomic_load(&sh->cause) : SHM_FAIL_NONE;

		len += (size_t)snprintf(buf + len, cap - len, "shard%u:state=%s,cause=%s,restarts=%u\r\n", s,
					shm_shard_state_name(st), shm_fail_cause_token(cause),
					atomic_load(&sh->restarts));
	}
	resp_add_bulk(&c->out, buf, len < cap ? len : cap - 1);
	free(buf);
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

/* A peer that sends commands without reading the replies is dropped once
 * this much output waits for it (Redis's client-output-buffer-limit). */
#define OUT_LIMIT (1u << 20)

/* Run the complete requests at the start of buf[0..len); returns the bytes
 * they took. Stops at an unfinished request, or once the connection is to
 * be closed. */
static size_t run_requests(struct amorad *a, struct conn *c, const char *buf, size_t len)
{
	size_t off = 0;
	char err[160];

	while (!c->close_after_write && off < len) {
		size_t used;
		int rc = resp_parse(buf + off, len - off, a->cmd, &used, err, sizeof(err));

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
	return off;
}

/* The input buffer cannot grow (budget or memory): say why and close. */
static void refuse_input(struct amorad *a, struct conn *c)
{
	unsigned long long mib = 1ull << 20;

	if (errno == ENOBUFS) {
		log_refusal("closing the connection of pid %d (uid %u): its request needs more than "
			    "the %llu MiB of input-buffer-budget left (%llu MiB held by all connections)",
			    c->pid, c->uid, (unsigned long long)(a->cfg.input_budget / mib),
			    (unsigned long long)(a->in_bytes / mib));
		resp_add_errorf(&c->out, "ERR amorad's input buffers are full: unfinished requests of "
				"all connections hold %llu MiB, input-buffer-budget is %llu MiB; closing "
				"the connection", (unsigned long long)(a->in_bytes / mib),
				(unsigned long long)(a->cfg.input_budget / mib));
	} else {
		resp_add_error(&c->out, "ERR amorad is out of memory for this request; closing the connection");
	}
	in_free(a, c);
	c->close_after_write = true;
}

/* Read once from the peer and run what is complete. With nothing pending,
 * the bytes go to `scratch` and only an unfinished tail is kept in the
 * connection's buffer (in_reserve); else they go after what is pending.
 * Returns false if the peer hung up or the read failed. */
static bool conn_read(struct amorad *a, struct conn *c)
{
	bool pending = c->inlen > 0;
	size_t off, len;
	ssize_t n;
	char *buf;

	if (pending) {
		size_t need = c->inlen + READ_CHUNK < IN_MAX ? c->inlen + READ_CHUNK : IN_MAX;

		if (in_reserve(a, c, need) != 0) {
			refuse_input(a, c);
			return true;
		}
		buf = c->in;
		n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
	} else {
		buf = scratch;
		n = recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT);
	}
	if (n <= 0)
		return n < 0 && (errno == EAGAIN || errno == EINTR);
	len = (pending ? c->inlen : 0) + (size_t)n;
	off = run_requests(a, c, buf, len);
	if (c->close_after_write) {
		in_free(a, c);
		return true;
	}
	if (off == len) {
		in_free(a, c);
		return true;
	}
	if (!pending) {
		/* an unfinished request begins */
		if (in_reserve(a, c, len - off) != 0) {
			refuse_input(a, c);
			return true;
		}
		memcpy(c->in, scratch + off, len - off);
		c->req_since_ns = shm_now_ns();
	} else if (off > 0) {
		/* requests completed; the rest is a new one */
		memmove(c->in, c->in + off, len - off);
		c->req_since_ns = shm_now_ns();
	}
	c->inlen = len - off;
	if (off > 0)
		in_shrink(a, c);
	if (c->inlen > RESP_MAX_REQUEST) {
		resp_add_error(&c->out, "ERR Protocol error: request too large");
		in_free(a, c);
		c->close_after_write = true;
	}
	return true;
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
		if (!conn_read(a, c)) {
			conn_close(a, c);
			return;
		}
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

void srv_tick(struct amorad *a)
{
	struct engine *e = &a->e;

	for (uint32_t i = 0; i < e->cfg.max_clients; i++) {
		uint32_t st = atomic_load(&e->clients[i].state);
		uint32_t gen = atomic_load(&e->clients[i].gen);

		if (st != REG_ACTIVE)
			a->watch[i].since_ns = 0;
		if (st == REG_CLOSING && all_acked(a, i, gen)) {
			engine_chan_close(e, i);
			atomic_store(&e->clients[i].pid, 0);
			atomic_store_explicit(&e->clients[i].state, REG_FREE, memory_order_release);
			atomic_fetch_add(&e->reg->version, 1);
		} else if (st == REG_ACTIVE && cut_stuck_reader(a, i, gen)) {
			struct conn *c = conn_of_slot(a, i);

			log_warn("dropping client pid %d: it stayed in one read section for %u ms while "
				 "writers waited to reclaim memory (reader-timeout-ms)", c ? c->pid : 0,
				 a->cfg.reader_timeout_ms);
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

void srv_expire(struct amorad *a)
{
	uint32_t ms = a->cfg.request_timeout_ms;
	uint64_t now = shm_now_ns(), limit = (uint64_t)ms * 1000000ull;

	/* backwards: conn_close moves the last connection into the hole */
	for (size_t i = a->nconns; i-- > 0;) {
		struct conn *c = a->conns[i];

		if (c->close_after_write) {
			/* its last words could not be sent: the peer does not read */
			if (c->closing_since_ns == 0)
				c->closing_since_ns = now;
			else if (now - c->closing_since_ns >= limit)
				conn_close(a, c);
			continue;
		}
		if (c->inlen == 0 || now - c->req_since_ns < limit)
			continue;
		log_refusal("closing the connection of pid %d (uid %u): its request (%zu bytes so far) "
			    "is not complete after %u ms (request-timeout-ms)", c->pid, c->uid, c->inlen, ms);
		resp_add_errorf(&c->out, "ERR request not complete after %u ms (request-timeout-ms); "
				"closing the connection", ms);
		in_free(a, c);
		c->close_after_write = true;
		if (flush_out(a, c))
			conn_close(a, c); /* best effort: the line did not fit */
	}
}

/* ---------- who may reach the socket ---------- */

/* The file modes follow the allow-lists, so that whom they name can reach
 * the socket; SO_PEERCRED and SO_PEERGROUPS still decide each connection
 * (srv_accept). The directory is the socket's directory when that is the
 * data directory (the default), which then holds nothing else anyone but
 * amorad can open (shard directories 0700, lock file 0600):
 *
 *   lists name nobody but root and   socket 0600, directory 0700
 *   amorad's uid
 *   one group G, no other uid        socket 0660 group G, directory 0710
 *                                    group G (members may pass, not list)
 *   other uids, or several groups    socket 0666, directory 0711 (anyone
 *                                    may pass, nobody may list): file
 *                                    modes cannot name single users or
 *                                    several groups, so amorad itself
 *                                    refuses, with a -DENIED line, whom
 *                                    the lists do not name
 *
 * An amorad that may not give the socket to G (neither root nor a member
 * of G) falls back to the last scheme and says so. A socket outside the
 * data directory (--socket) gets its mode and group; its directory is the
 * administrator's, and the data directory is then 0700. */
struct access_plan {
	mode_t sock_mode, dir_mode;
	gid_t group; /* (gid_t)-1: leave the group alone */
};

static struct access_plan access_plan(const struct amorad_config *cfg)
{
	bool others = false;

	for (size_t i = 0; i < cfg->n_uids; i++)
		others |= !is_owner(cfg->allow_uids[i]);
	if (!others && cfg->n_gids == 0)
		return (struct access_plan){ 0600, 0700, (gid_t)-1 };
	if (!others && cfg->n_gids == 1)
		return (struct access_plan){ 0660, 0710, cfg->allow_gids[0] };
	return (struct access_plan){ 0666, 0711, (gid_t)-1 };
}

static bool same_dir(const char *x, const char *y)
{
	struct stat sx, sy;

	return stat(x, &sx) == 0 && stat(y, &sy) == 0 && sx.st_dev == sy.st_dev &&
	       sx.st_ino == sy.st_ino;
}

/* Give the socket at `path` (and the data directory) the plan's modes.
 * Returns 0, or -1 with the reason in err. */
static int apply_access(struct amorad *a, const char *path, char *err, size_t errlen)
{
	const struct amorad_config *cfg = &a->cfg;
	struct access_plan p = access_plan(cfg);
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *data = cfg->data_dir;
	char group[32] = "";
	bool in_data;

	snprintf(dir, sizeof(dir), "%s", path);
	in_data = same_dir(dirname(dir), data);
	if (p.group != (gid_t)-1 && chown(path, (uid_t)-1, p.group) != 0) {
		log_warn("cannot give %s to group %u (%s): amorad is neither root nor a member; the "
			 "socket is 0666 instead and the allow-lists alone decide who connects", path,
			 (unsigned)p.group, strerror(errno));
		p = (struct access_plan){ 0666, 0711, (gid_t)-1 };
	}
	if (chmod(path, p.sock_mode) != 0) {
		snprintf(err, errlen, "cannot set %s to mode %04o: %s", path, (unsigned)p.sock_mode,
			 strerror(errno));
		return -1;
	}
	if (!in_data)
		p.dir_mode = 0700;
	if (in_data && p.group != (gid_t)-1 && chown(data, (uid_t)-1, p.group) != 0)
		log_warn("cannot give the data directory %s to group %u (%s): members of the group "
			 "may not reach the socket", data, (unsigned)p.group, strerror(errno));
	if (chmod(data, p.dir_mode) != 0)
		log_warn("cannot set the data directory %s to mode %04o (%s)%s", data,
			 (unsigned)p.dir_mode, strerror(errno),
			 in_data && p.dir_mode != 0700 ? ": allowed users may not reach the socket" : "");
	if (p.group != (gid_t)-1)
		snprintf(group, sizeof(group), " group %u", (unsigned)p.group);
	log_info("socket %s mode %04o%s; data directory mode %04o", path, (unsigned)p.sock_mode,
		 group, (unsigned)p.dir_mode);
	return 0;
}

/* ---------- the listening socket ---------- */

int srv_listen(struct amorad *a, char *err, size_t errlen)
{
	const char *path = a->cfg.socket_path;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old_mask;
	int fd, rc;

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
	old_mask = umask(0177); /* never wider than 0600 before apply_access */
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_mask);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (apply_access(a, path, err, errlen) != 0) {
		close(fd);
		unlink(path);
		return -1;
	}
	if (listen(fd, 128) != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
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
	unlink(a->cfg.socket_path);
	a->listen_fd = -1;
}

void srv_close_all(struct amorad *a)
{
	while (a->nconns > 0)
		conn_close(a, a->conns[0]);
	srv_free_closed(a);
	free(a->conns);
	a->conns = NULL;
}
