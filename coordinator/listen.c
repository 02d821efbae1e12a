/*
 * listen.c — amorad's control socket: a Unix stream socket speaking RESP2,
 * so redis-cli and any Redis client library can talk to it, with file
 * modes that follow the allow-lists.
 *
 * The file modes follow the allow-lists, so that whom they name can reach
 * the socket; SO_PEERCRED and SO_PEERGROUPS still decide each connection
 * (admit.c). The directory is the socket's directory when that is the
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
 * administrator's, and the data directory is then 0700.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "coordinator/server.h"
#include "shardd/log.h"

struct access_plan {
	mode_t sock_mode, dir_mode;
	gid_t group; /* (gid_t)-1: leave the group alone */
};

static struct access_plan access_plan(const struct amorad_config *cfg)
{
	bool others = false;

	for (size_t i = 0; i < cfg->n_uids; i++)
		others |= !admit_is_owner(cfg->allow_uids[i]);
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
 * Returns 0, or -1 with the reason in err. What only narrows who can reach
 * the socket (the group or the directory's mode) is a warning in the log. */
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

/* Bind fd to path with the modes of the plan. Returns 0, or -1 with the
 * reason in err (nothing left at path that was not there). */
static int bind_socket(struct amorad *a, int fd, const struct sockaddr_un *sa, char *err,
		       size_t errlen)
{
	const char *path = sa->sun_path;
	mode_t old_mask;
	int rc;

	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		snprintf(err, errlen, "%s is in use by a running server", path);
		return -1;
	}
	unlink(path); /* a stale socket of a dead amorad (we hold the data-dir lock) */
	old_mask = umask(0177); /* never wider than 0600 before apply_access */
	rc = bind(fd, (const struct sockaddr *)sa, sizeof(*sa));
	umask(old_mask);
	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
		return -1;
	}
	if (apply_access(a, path, err, errlen) != 0) {
		unlink(path);
		return -1;
	}
	return 0;
}

int srv_listen(struct amorad *a, char *err, size_t errlen)
{
	const char *path = a->cfg.socket_path;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
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
	if (bind_socket(a, fd, &sa, err, errlen) != 0) {
		close(fd);
		return -1;
	}
	rc = listen(fd, 128);
	if (rc != 0)
		snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
	else
		rc = loop_add(&a->loop, &a->listener, fd, EPOLLIN, admit_accept, NULL, err, errlen);
	if (rc != 0) {
		close(fd);
		unlink(path);
		return -1;
	}
	return 0;
}

void srv_close_listener(struct amorad *a)
{
	if (a->listener.proc == NULL)
		return;
	loop_del(&a->loop, &a->listener);
	close(a->listener.fd);
	unlink(a->cfg.socket_path);
	a->listener.fd = -1;
}
