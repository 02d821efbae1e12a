/*
 * admit.c — who may connect to the control socket, and how many at once.
 *
 * Each connection is checked once, at accept, with SO_PEERCRED (and
 * SO_PEERGROUPS) against the allowed uids/gids; root and amorad's own uid
 * always pass. Nor is a peer's patience unlimited (Redis's maxclients and
 * per-user limits play the same part): at most max-connections
 * connections, of which max-connections-per-uid from one uid; root and
 * amorad's uid are not counted per uid and have CONFIG_OWNER_RESERVE more
 * beyond the total, so the owner always gets in. Every refusal is one RESP
 * error line that says why (-BUSY for a limit, -DENIED for the
 * allow-lists: libamora maps both), sent before the peer's first request
 * is read, then the connection is closed.
 *
 * Counted (segment.h, struct shm_amorad_counters): each admitted peer in
 * connections_received, each refused one in connections_rejected (Redis's
 * total_connections_received and rejected_connections).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coordinator/server.h"
#include "shardd/log.h"

bool admit_is_owner(uid_t uid)
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

	if (admit_is_owner(cred->uid))
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

/* At most one line a second, with a count of those left out, so a flood
 * of connections does not flood the log. */
void admit_log_refusal(const char *fmt, ...)
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

static void count_rejected(struct amorad *a)
{
	shm_counter_add(&a->e.seg.hdr->amorad.connections_rejected, 1);
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
	fd = accept4(a->listener.fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0) {
		count_rejected(a);
		admit_log_refusal("refused a connection: amorad has no file descriptor left (RLIMIT_NOFILE)");
		refuse(fd, "BUSY amorad has no file descriptor left (RLIMIT_NOFILE); try again later");
	}
	a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd >= 0;
}

/* Whether a peer with these credentials may have one more connection now:
 * 0, or -1 with the limit it meets in err. */
static int check_limits(const struct amorad *a, const struct ucred *cred, char *err, size_t errlen)
{
	const struct amorad_config *cfg = &a->cfg;
	uint32_t mine;

	if (admit_is_owner(cred->uid)) {
		if (a->nconns < (size_t)cfg->max_connections + CONFIG_OWNER_RESERVE)
			return 0;
		snprintf(err, errlen, "too many connections: %zu open, max-connections %u plus %u kept "
			 "for root and amorad's uid", a->nconns, cfg->max_connections, CONFIG_OWNER_RESERVE);
		return -1;
	}
	if (a->nconns >= cfg->max_connections) {
		snprintf(err, errlen, "too many connections: %zu open, max-connections is %u", a->nconns,
			 cfg->max_connections);
		return -1;
	}
	mine = conns_of_uid(a, cred->uid);
	if (mine >= cfg->max_conns_per_uid) {
		snprintf(err, errlen, "too many connections from uid %u: %u open, "
			 "max-connections-per-uid is %u", cred->uid, mine, cfg->max_conns_per_uid);
		return -1;
	}
	return 0;
}

/* One accepted peer: refused with its reason, or made a connection. */
static void admit_peer(struct amorad *a, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char err[256];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		count_rejected(a);
		close(fd);
		return;
	}
	if (!allowed(a, fd, &cred)) {
		count_rejected(a);
		admit_log_refusal("refused a connection from uid %u gid %u (pid %d): not allowed",
				  cred.uid, cred.gid, cred.pid);
		refuse(fd, "DENIED uid %u (gid %u) is not allowed: amorad's allow-uid and allow-gid "
		       "do not list it", cred.uid, cred.gid);
		return;
	}
	if (check_limits(a, &cred, err, sizeof(err)) != 0) {
		count_rejected(a);
		admit_log_refusal("refused a connection from uid %u (pid %d): %s", cred.uid, cred.pid,
				  err);
		refuse(fd, "BUSY %s", err);
		return;
	}
	if (conn_open(a, fd, &cred, err, sizeof(err)) != 0) {
		count_rejected(a);
		admit_log_refusal("refused a connection from uid %u (pid %d): %s", cred.uid, cred.pid,
				  err);
		refuse(fd, "ERR %s", err);
		return;
	}
	shm_counter_add(&a->e.seg.hdr->amorad.connections_received, 1);
}

/* The listening socket's handler: admit every pending peer. */
void admit_accept(struct amorad *a, void *obj, uint32_t events)
{
	(void)obj;
	(void)events;
	for (;;) {
		int fd = accept4(a->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if ((errno == EMFILE || errno == ENFILE) && refuse_out_of_fds(a))
				continue;
			return;
		}
		admit_peer(a, fd);
	}
}
