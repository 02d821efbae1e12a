/*
 * attach.c — a handle's life (client.h): amora_open attaches over the
 * control socket (AMORA.ATTACH, whose reply carries the data segment and
 * this client's channel: shm/chan.h), maps both, checks them against the
 * reply and claims the channel's epoch slot; amora_close flushes and
 * undoes it all. amorad notices the closed socket and frees the slot
 * (DESIGN.md §7).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "libclient/client.h"

#define DEFAULT_TIMEOUT_MS 10000

static int connect_to(amora *db, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return client_fail(db, AMORA_EINVAL, "socket path %s is too long", path);
	strcpy(sa.sun_path, path);
	db->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (db->sock < 0)
		return client_fail(db, AMORA_ESYS, "socket: %s", strerror(errno));
	if (connect(db->sock, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return client_fail(db, AMORA_ESYS, "cannot connect to %s: %s", path, strerror(errno));
	/* A coordinator that accepts but never answers (stopped, hung) must
	 * not hang amora_open. */
	struct timeval tv = { DEFAULT_TIMEOUT_MS / 1000, 0 };
	setsockopt(db->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return AMORA_OK;
}

/* Read the attach reply: "*6" and 6 integers (server.c), or an error
 * line. The descriptors come with the first bytes. */
static int read_attach_reply(amora *db, uint64_t v[SHM_CHAN_ATTACH_FIELDS], int fds[SHM_CHAN_ATTACH_FDS], int *nfds)
{
	char buf[512];
	size_t len = 0;

	for (;;) {
		char ctl[CMSG_SPACE(sizeof(int) * (SHM_CHAN_ATTACH_FDS + 1))];
		struct iovec iov = { buf + len, sizeof(buf) - 1 - len };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
				      .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(db->sock, &msg, MSG_CMSG_CLOEXEC);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return client_fail(db, AMORA_ETIMEDOUT, "no attach reply within %d ms", DEFAULT_TIMEOUT_MS);
		if (n <= 0)
			return client_fail(db, AMORA_EPROTO, "coordinator closed the connection during attach");
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

				for (int i = 0; i < k; i++) {
					int fd;

					memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
					if (*nfds < SHM_CHAN_ATTACH_FDS)
						fds[(*nfds)++] = fd;
					else
						close(fd);
				}
			}
		}
		len += (size_t)n;
		buf[len] = 0;
		if (buf[0] == '-' && strstr(buf, "\r\n")) {
			*strstr(buf, "\r\n") = 0;
			if (strncmp(buf + 1, "DENIED", 6) == 0)
				return client_fail(db, AMORA_EDENIED, "%s", buf + 1);
			if (strncmp(buf + 1, "BUSY", 4) == 0)
				return client_fail(db, AMORA_EBUSY, "%s", buf + 1);
			return client_fail(db, AMORA_EPROTO, "coordinator: %s", buf + 1);
		}
		int lines = 0;
		for (char *p = buf; (p = strstr(p, "\r\n")) != NULL; p += 2)
			lines++;
		if (lines >= SHM_CHAN_ATTACH_FIELDS + 1)
			break;
		if (len >= sizeof(buf) - 1)
			return client_fail(db, AMORA_EPROTO, "attach reply too long");
	}
	if (strncmp(buf, "*6\r\n", 4) != 0) {
		/* Protocol 1 was an array of 8: say which side is old. */
		if (strncmp(buf, "*8\r\n:1\r\n", 8) == 0)
			return client_fail(db, AMORA_EPROTO, "coordinator speaks attach protocol 1, we "
					   "speak %d (upgrade amorad)", SHM_CHAN_ATTACH_PROTO);
		return client_fail(db, AMORA_EPROTO, "attach reply is not an array of %d",
				   SHM_CHAN_ATTACH_FIELDS);
	}
	char *p = buf + 4;
	for (int i = 0; i < SHM_CHAN_ATTACH_FIELDS; i++) {
		char *end;

		if (*p != ':')
			return client_fail(db, AMORA_EPROTO, "attach reply field %d is not an integer", i);
		v[i] = strtoull(p + 1, &end, 10);
		if (strncmp(end, "\r\n", 2) != 0)
			return client_fail(db, AMORA_EPROTO, "attach reply field %d is malformed", i);
		p = end + 2;
	}
	return AMORA_OK;
}

static void *map_fd(int fd, size_t bytes)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) != 0 || (size_t)st.st_size != bytes)
		return NULL;
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	return p == MAP_FAILED ? NULL : p;
}

static int map_store(amora *db, const uint64_t v[SHM_CHAN_ATTACH_FIELDS], const int fds[SHM_CHAN_ATTACH_FDS])
{
	int rc;

	if (v[0] != SHM_CHAN_ATTACH_PROTO)
		return client_fail(db, AMORA_EPROTO, "coordinator speaks attach protocol %llu, we speak %d",
				   (unsigned long long)v[0], SHM_CHAN_ATTACH_PROTO);
	db->shards = (uint32_t)v[1];
	db->slot = (uint32_t)v[4];
	db->chan_bytes = shm_chan_bytes(db->shards);
	rc = shm_seg_attach(&db->seg, fds[0], false);
	if (rc != SHM_OK)
		return client_fail(db, AMORA_ECORRUPT, "data segment: %s", shm_strerror(rc));
	if (db->seg.hdr->shard_count != db->shards || v[3] != db->chan_bytes)
		return client_fail(db, AMORA_EPROTO, "attach reply disagrees with the segments");
	db->placement = db->seg.hdr->placement; /* checked by shm_seg_attach */
	db->chan = map_fd(fds[1], db->chan_bytes);
	if (db->chan == NULL)
		return client_fail(db, AMORA_ESYS, "cannot map the channel: %s", strerror(errno));
	db->hdr = (struct shm_chan_hdr *)db->chan;
	if (db->hdr->magic != SHM_CHAN_MAGIC || db->hdr->slot != db->slot || db->hdr->gen != v[5])
		return client_fail(db, AMORA_EPROTO, "channel header does not match the attach reply");
	return AMORA_OK;
}

static int attach_rings(amora *db)
{
	db->q = calloc(db->shards, sizeof(*db->q));
	db->views = calloc(db->shards, sizeof(*db->views));
	db->req = malloc(SHM_CHAN_SQ_DATA / 2);
	if (db->q == NULL || db->views == NULL || db->req == NULL)
		return client_fail(db, AMORA_ESYS, "out of memory");
	for (uint32_t s = 0; s < db->shards; s++) {
		if (shm_ring_attach(&db->q[s].sq, shm_chan_sq_mem(db->chan, db->shards, s), shm_chan_sq_bytes()) != SHM_OK ||
		    shm_ring_attach(&db->q[s].cq, shm_chan_cq_mem(db->chan, db->shards, s), shm_chan_cq_bytes()) != SHM_OK)
			return client_fail(db, AMORA_ECORRUPT, "channel rings fail validation");
		db->q[s].words = shm_chan_words(db->chan, s);
		db->q[s].asleep = &shm_shard_at(&db->seg, s)->sleeping;
	}
	shm_epoch_slot_init(&db->hdr->epoch, getpid());
	return AMORA_OK;
}

static void release(amora *db)
{
	if (db->chan)
		munmap(db->chan, db->chan_bytes);
	if (db->seg.base)
		shm_seg_close(&db->seg);
	if (db->sock >= 0)
		close(db->sock);
	free(db->q);
	free(db->views);
	free(db->req);
	free(db);
}

int amora_open(const char *socket_path, amora **out)
{
	static const char attach[] = "*1\r\n$12\r\nAMORA.ATTACH\r\n";
	uint64_t v[8];
	int fds[3] = { -1, -1, -1 }, nfds = 0, rc, err;
	amora *db;

	if (out == NULL)
		return client_fail_open(AMORA_EINVAL, "out is NULL");
	*out = NULL;
	if (socket_path == NULL)
		return client_fail_open(AMORA_EINVAL, "socket_path is NULL");
	db = calloc(1, sizeof(*db));
	if (db == NULL)
		return client_fail_open(AMORA_ESYS, "out of memory for a handle");
	db->sock = -1;
	db->seg.fd = -1;
	db->timeout_ms = DEFAULT_TIMEOUT_MS;
	rc = connect_to(db, socket_path);
	if (rc == AMORA_OK && send(db->sock, attach, sizeof(attach) - 1, MSG_NOSIGNAL) !=
				      (ssize_t)sizeof(attach) - 1) {
		char c;

		err = errno;
		/* amorad may have refused us at accept (too many connections,
		 * uid not allowed) and hung up before we sent: its reason
		 * waits to be read, and is the real cause. */
		if (recv(db->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1 && c == '-')
			rc = read_attach_reply(db, v, fds, &nfds);
		else
			rc = client_fail(db, AMORA_ESYS, "cannot send to %s: %s", socket_path, strerror(err));
		errno = err;
	}
	if (rc == AMORA_OK)
		rc = read_attach_reply(db, v, fds, &nfds);
	if (rc == AMORA_OK && nfds != SHM_CHAN_ATTACH_FDS)
		rc = client_fail(db, AMORA_EPROTO, "attach reply carried %d descriptors, not %d", nfds,
				 SHM_CHAN_ATTACH_FDS);
	if (rc == AMORA_OK)
		rc = map_store(db, v, fds);
	if (rc == AMORA_OK)
		rc = attach_rings(db);
	/* fds[0] belongs to db->seg once attached (closed by release). */
	for (int i = db->seg.base != NULL ? 1 : 0; i < nfds; i++)
		close(fds[i]);
	if (rc != AMORA_OK) {
		/* The message outlives the handle; errno stays the failed
		 * system call's (amora.h). */
		err = errno;
		client_fail_open(rc, "%s", db->errmsg);
		release(db);
		errno = err;
		return rc;
	}
	*out = db;
	return AMORA_OK;
}

void amora_set_timeout(amora *db, int timeout_ms)
{
	if (db)
		db->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
}

int amora_close(amora *db)
{
	int rc = AMORA_OK;

	if (db == NULL)
		return AMORA_OK;
	if (!db->gone)
		rc = amora_flush(db);
	release(db);
	return rc;
}
