/*
 * server.c — the control socket's connections: reading requests, running
 * them (commands.c), writing replies, closing, timeouts.
 *
 * Bytes from a peer are never trusted: the RESP parser bounds everything,
 * a protocol error is answered and the connection closed, and a peer that
 * sends more than RESP_MAX_REQUEST without completing a command is cut.
 * Nor is a peer's patience: a request begun but not complete after
 * request-timeout-ms closes its connection (an idle connection is not a
 * request: attached clients are idle by design), unfinished requests are
 * buffered within input-buffer-budget over all connections, and a peer that
 * does not read its replies is dropped once OUT_LIMIT of them wait. Each
 * such refusal is one RESP error line that says why, then the connection
 * is closed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coordinator/server.h"
#include "shardd/log.h"

#define READ_CHUNK 65536

/* A peer that sends commands without reading the replies is dropped once
 * this much output waits for it (Redis's client-output-buffer-limit). */
#define OUT_LIMIT (1u << 20)

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

/* Whether the budget leaves room for `need` bytes in c->in. */
static bool in_fits(const struct amorad *a, const struct conn *c, size_t need)
{
	return need <= c->incap || a->in_bytes - c->incap + in_round(need) <= a->cfg.input_budget;
}

/* Room for `need` (<= IN_MAX, in_fits) bytes in c->in, keeping its bytes:
 * doubling while the budget allows, else just enough. Returns 0, or -1
 * with errno (mmap or mremap failed). */
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
	if (c->in != NULL)
		p = mremap(c->in, c->incap, cap, MREMAP_MAYMOVE);
	else
		p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
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

/* The input buffer cannot grow: say why (the budget, or amorad's memory)
 * and close. */
static void refuse_input(struct amorad *a, struct conn *c, bool over_budget)
{
	unsigned long long mib = 1ull << 20;

	if (over_budget) {
		admit_log_refusal("closing the connection of pid %d (uid %u): its request needs more "
				  "than the %llu MiB of input-buffer-budget left (%llu MiB held by all "
				  "connections)", c->pid, c->uid,
				  (unsigned long long)(a->cfg.input_budget / mib),
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

/* Room for `need` bytes in c->in, or the refusal (see refuse_input).
 * Returns whether there is room. */
static bool in_grow(struct amorad *a, struct conn *c, size_t need)
{
	if (!in_fits(a, c, need)) {
		refuse_input(a, c, true);
		return false;
	}
	if (in_reserve(a, c, need) != 0) {
		refuse_input(a, c, false);
		return false;
	}
	return true;
}

/* ---------- writing ---------- */

/* Send what waits in c->out. Returns false if the connection was closed. */
static bool flush_out(struct amorad *a, struct conn *c)
{
	while (c->out.len > 0) {
		ssize_t n = send(c->sock.fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* stop reading from a peer we are about to drop */
			loop_mod(&a->loop, &c->sock,
				 (c->close_after_write ? 0 : EPOLLIN) | EPOLLOUT | EPOLLRDHUP);
			return true;
		}
		if (n <= 0) {
			conn_close(a, c);
			return false;
		}
		resp_buf_consume(&c->out, (size_t)n);
	}
	loop_mod(&a->loop, &c->sock, EPOLLIN | EPOLLRDHUP);
	if (c->close_after_write) {
		conn_close(a, c);
		return false;
	}
	return true;
}

/* ---------- reading ---------- */

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
			cmd_run(a, c, a->cmd);
		if (c->out.len > OUT_LIMIT) {
			log_warn("dropping pid %d: it does not read its replies", c->pid);
			resp_buf_consume(&c->out, c->out.len);
			c->close_after_write = true;
		}
	}
	return off;
}

/* Keep what run_requests left of buf[0..len) (it took `off` bytes) as the
 * connection's unfinished request; `pending`: buf is c->in. */
static void keep_rest(struct amorad *a, struct conn *c, bool pending, size_t off, size_t len)
{
	if (!pending) {
		/* an unfinished request begins */
		if (!in_grow(a, c, len - off))
			return;
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
}

/* Read once from the peer and run what is complete. With nothing pending,
 * the bytes go to `scratch` and only an unfinished tail is kept in the
 * connection's buffer; else they go after what is pending. Returns false
 * if the peer hung up or the read failed (the connection is to be closed). */
static bool conn_read(struct amorad *a, struct conn *c)
{
	bool pending = c->inlen > 0;
	size_t off, len;
	ssize_t n;
	char *buf;

	if (pending) {
		size_t need = c->inlen + READ_CHUNK < IN_MAX ? c->inlen + READ_CHUNK : IN_MAX;

		if (!in_grow(a, c, need))
			return true;
		buf = c->in;
		n = recv(c->sock.fd, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
	} else {
		buf = scratch;
		n = recv(c->sock.fd, scratch, sizeof(scratch), MSG_DONTWAIT);
	}
	if (n <= 0)
		return n < 0 && (errno == EAGAIN || errno == EINTR);
	len = (pending ? c->inlen : 0) + (size_t)n;
	off = run_requests(a, c, buf, len);
	if (c->close_after_write || off == len)
		in_free(a, c);
	else
		keep_rest(a, c, pending, off, len);
	return true;
}

/* The socket's handler. */
static void on_conn_event(struct amorad *a, void *obj, uint32_t events)
{
	struct conn *c = obj;

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

/* ---------- opening and closing ---------- */

int conn_open(struct amorad *a, int fd, const struct ucred *cred, char *err, size_t errlen)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct conn **grown = realloc(a->conns, (a->nconns + 1) * sizeof(*grown));

	if (grown != NULL)
		a->conns = grown;
	if (c == NULL || grown == NULL) {
		free(c);
		snprintf(err, errlen, "amorad is out of memory for a new connection");
		return -1;
	}
	*c = (struct conn){ .pidfd.fd = -1, .pid = cred->pid, .uid = cred->uid, .gid = cred->gid,
			    .slot = -1 };
	if (loop_add(&a->loop, &c->sock, fd, EPOLLIN | EPOLLRDHUP, on_conn_event, c, err,
		     errlen) != 0) {
		free(c);
		return -1;
	}
	a->conns[a->nconns++] = c;
	srv_count_clients(a);
	return 0;
}

void conn_close(struct amorad *a, struct conn *c)
{
	slot_detach(a, c);
	loop_del(&a->loop, &c->sock);
	close(c->sock.fd);
	for (size_t i = 0; i < a->nconns; i++) {
		if (a->conns[i] == c) {
			a->conns[i] = a->conns[--a->nconns];
			break;
		}
	}
	srv_count_clients(a);
	in_free(a, c);
	resp_buf_free(&c->out);
	/* Freed only after the current batch of events (loop.h): an event of
	 * this connection later in the batch finds its handler removed. */
	c->next_closed = a->closed;
	a->closed = c;
}

void srv_count_clients(struct amorad *a)
{
	struct shm_amorad_counters *k = &a->e.seg.hdr->amorad;

	atomic_store_explicit(&k->connected_clients, (uint32_t)a->nconns, memory_order_relaxed);
	atomic_store_explicit(&k->attached_clients, a->attached, memory_order_relaxed);
}

void srv_free_closed(struct amorad *a)
{
	while (a->closed != NULL) {
		struct conn *c = a->closed;

		a->closed = c->next_closed;
		free(c);
	}
}

void srv_close_all(struct amorad *a)
{
	while (a->nconns > 0)
		conn_close(a, a->conns[0]);
	srv_free_closed(a);
	free(a->conns);
	a->conns = NULL;
}

/* ---------- timeouts ---------- */

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
		admit_log_refusal("closing the connection of pid %d (uid %u): its request (%zu bytes "
				  "so far) is not complete after %u ms (request-timeout-ms)", c->pid,
				  c->uid, c->inlen, ms);
		resp_add_errorf(&c->out, "ERR request not complete after %u ms (request-timeout-ms); "
				"closing the connection", ms);
		in_free(a, c);
		c->close_after_write = true;
		if (flush_out(a, c))
			conn_close(a, c); /* best effort: the line did not fit */
	}
}
