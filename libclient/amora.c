/*
 * amora.c — libamora: a client's handle on the store (amora.h).
 *
 * Reads never leave the process: hash the key, pick its shard, announce an
 * epoch in our own slot, look the key up in the read-only mapping of the
 * data segment, copy the value, leave the epoch. The shard that may free
 * the record meanwhile waits for our epoch (epoch.h), so the copy is
 * always of a whole, live record.
 *
 * Writes are requests in our channel's submission ring for the owning
 * shard (chan.h). A synchronous write publishes the ring, rings the shard
 * through our own channel's words (shm_chan_notify: a futex wake only if the
 * shard sleeps) and sleeps on the completion ring's futex at once, in
 * slices, checking between slices that the coordinator is alive, that no shard cut us off and that
 * the handle's timeout has not passed. It does not spin first: measured on
 * this 2-vCPU VM, spinning 5, 30 or 100 us before sleeping gave a p50 of
 * 17-33 us against 18-22 us without (a spinning client holds a CPU the
 * woken shard could run on). Buffered writes stay staged in the
 * ring (invisible to the shard) until a batch is worth a wake-up.
 *
 * Per (handle, shard) the library bounds what it has in flight by the
 * completion ring's capacity, so a shard always has room to answer and
 * never has to wait for this client.
 *
 * Everything read from shared memory is checked: completions must carry
 * an id we issued; a violation is AMORA_ECORRUPT, never a crash.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"
#include "libclient/amora.h"
#include "shm/chan.h"
#include "shm/shard.h"

#define DEFAULT_TIMEOUT_MS 10000
#define WAIT_SLICE_MS 20           /* sleep at most this long between checks */
#define BUFFERED_BATCH 256         /* staged buffered sets that make a batch */
#define CQ_CAPACITY (SHM_CHAN_CQ_DATA / SHM_CHAN_CQE_BYTES)
#define MGET_WINDOW 16             /* lookups whose cache misses overlap */

struct shardq {
	struct shm_ring sq, cq;
	uint64_t next_id;  /* last id issued */
	uint64_t done_id;  /* last id completed */
	uint32_t staged;   /* pushed but not published */
	struct shm_chan_words *words;      /* our pending flag and wake word for the shard */
	const _Atomic uint32_t *asleep;/* the shard's sleeping flag (read-only mapping) */
};

struct amora {
	int sock;
	struct shm_seg seg;
	uint8_t *chan;
	size_t chan_bytes;
	struct shm_chan_hdr *hdr;
	uint32_t shards, slot;
	struct shardq *q;
	uint8_t *req;      /* one request being built */
	int timeout_ms;
	int deferred;      /* first failure of a buffered write, 0: none */
	char deferred_msg[160];
	bool bulk_busy;    /* the bulk area holds a value not yet applied */
	uint32_t bulk_shard;
	uint64_t bulk_id;
	bool gone;
	uint64_t gets, sets, dels;
	char errmsg[256];
};

/* ---------- errors ---------- */

/* Completions carry chan.h's wire codes; they are ours (amora.h). */
_Static_assert((int)SHM_CHAN_OK == (int)AMORA_OK && (int)SHM_CHAN_ENOTFOUND == (int)AMORA_ENOTFOUND &&
		       (int)SHM_CHAN_EINVAL == (int)AMORA_EINVAL && (int)SHM_CHAN_EFULL == (int)AMORA_EFULL &&
		       (int)SHM_CHAN_EIO == (int)AMORA_EIO && (int)SHM_CHAN_ECORRUPT == (int)AMORA_ECORRUPT,
	       "wire status codes are amora_err codes");
_Static_assert(AMORA_KEY_MAX == SHM_KEY_MAX && AMORA_VALUE_MAX == SHM_VALUE_MAX,
	       "amora.h's limits are the store's");

const char *amora_strerror(int code)
{
	switch (code) {
	case AMORA_OK: return "success";
	case AMORA_ENOTFOUND: return "key not found";
	case AMORA_EINVAL: return "invalid argument";
	case AMORA_EFULL: return "store full (memory limit reached)";
	case AMORA_EGONE: return "coordinator gone";
	case AMORA_ERESTARTING: return "shard restarting";
	case AMORA_EIO: return "shard could not write its log";
	case AMORA_ECORRUPT: return "shared data or a reply failed validation";
	case AMORA_ESYS: return "system call failed";
	case AMORA_EPROTO: return "unexpected reply from the coordinator";
	case AMORA_EDENIED: return "access denied by the coordinator";
	case AMORA_EBUSY: return "no free client slot or too many connections";
	case AMORA_EBADRING: return "cut off (malformed request, or stuck inside a read)";
	case AMORA_ETIMEDOUT: return "timed out waiting for a shard";
	case AMORA_EFAILED: return "shard stopped and will not restart";
	}
	return "unknown error";
}

/* The numbers this library was built with (shm/version.h, through
 * amora.h), not those of the header the caller was compiled with. */
const char *amora_version(int *major, int *minor, int *patch)
{
	if (major)
		*major = AMORA_VERSION_MAJOR;
	if (minor)
		*minor = AMORA_VERSION_MINOR;
	if (patch)
		*patch = AMORA_VERSION_PATCH;
	return AMORA_VERSION_STRING;
}

/* The message of this thread's last failed amora_open, which leaves no
 * handle to hold it. */
static __thread char open_errmsg[256];

const char *amora_errmsg(const amora *db)
{
	return db ? db->errmsg : open_errmsg;
}

static int fail(amora *db, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(amora *db, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
	va_end(ap);
	return code;
}

/* Prefix the message of a failure about keys[i] of an amora_mget with
 * "key i: " (the message is formatted from a copy: fail() overwrites it). */
static int fail_at_key(amora *db, int code, size_t i)
{
	char why[sizeof(db->errmsg)];

	memcpy(why, db->errmsg, sizeof(why));
	return fail(db, code, "key %zu: %s", i, why);
}

/* AMORA_EFAILED for shard s, whose state was loaded (acquire) as FAILED:
 * its cause was stored before that state (shardd.h). */
static int fail_shard_stopped(amora *db, uint32_t s)
{
	const struct shm_shard *sh = shm_shard_at(&db->seg, s);

	return fail(db, AMORA_EFAILED, "shard %u stopped: %s (see amorad's log)", s,
		    shm_fail_cause_str(atomic_load_explicit(&sh->cause, memory_order_relaxed)));
}

static bool shard_stopped(const struct shm_shard *sh)
{
	return atomic_load_explicit(&sh->state, memory_order_acquire) == SHM_SHARD_FAILED;
}

static int check_key(amora *db, const void *key, size_t klen)
{
	if (key == NULL && klen > 0)
		return fail(db, AMORA_EINVAL, "key is NULL with length %zu", klen);
	if (key == NULL || klen == 0)
		return fail(db, AMORA_EINVAL, "empty key");
	if (klen > AMORA_KEY_MAX)
		return fail(db, AMORA_EINVAL, "key is %zu bytes, the limit is %u", klen, AMORA_KEY_MAX);
	return AMORA_OK;
}

static int check_kv(amora *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	int rc = check_key(db, key, klen);

	if (rc != AMORA_OK)
		return rc;
	if (vlen > AMORA_VALUE_MAX)
		return fail(db, AMORA_EINVAL, "value is %zu bytes, the limit is %u", vlen,
			    AMORA_VALUE_MAX);
	if (val == NULL && vlen > 0)
		return fail(db, AMORA_EINVAL, "value is NULL with length %zu", vlen);
	return AMORA_OK;
}

/* ---------- attaching ---------- */

static int connect_to(amora *db, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return fail(db, AMORA_EINVAL, "socket path %s is too long", path);
	strcpy(sa.sun_path, path);
	db->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (db->sock < 0)
		return fail(db, AMORA_ESYS, "socket: %s", strerror(errno));
	if (connect(db->sock, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return fail(db, AMORA_ESYS, "cannot connect to %s: %s", path, strerror(errno));
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
			return fail(db, AMORA_ETIMEDOUT, "no attach reply within %d ms", DEFAULT_TIMEOUT_MS);
		if (n <= 0)
			return fail(db, AMORA_EPROTO, "coordinator closed the connection during attach");
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
				return fail(db, AMORA_EDENIED, "%s", buf + 1);
			if (strncmp(buf + 1, "BUSY", 4) == 0)
				return fail(db, AMORA_EBUSY, "%s", buf + 1);
			return fail(db, AMORA_EPROTO, "coordinator: %s", buf + 1);
		}
		int lines = 0;
		for (char *p = buf; (p = strstr(p, "\r\n")) != NULL; p += 2)
			lines++;
		if (lines >= SHM_CHAN_ATTACH_FIELDS + 1)
			break;
		if (len >= sizeof(buf) - 1)
			return fail(db, AMORA_EPROTO, "attach reply too long");
	}
	if (strncmp(buf, "*6\r\n", 4) != 0) {
		/* Protocol 1 was an array of 8: say which side is old. */
		if (strncmp(buf, "*8\r\n:1\r\n", 8) == 0)
			return fail(db, AMORA_EPROTO, "coordinator speaks attach protocol 1, we speak %d "
				    "(upgrade amorad)", SHM_CHAN_ATTACH_PROTO);
		return fail(db, AMORA_EPROTO, "attach reply is not an array of %d", SHM_CHAN_ATTACH_FIELDS);
	}
	char *p = buf + 4;
	for (int i = 0; i < SHM_CHAN_ATTACH_FIELDS; i++) {
		char *end;

		if (*p != ':')
			return fail(db, AMORA_EPROTO, "attach reply field %d is not an integer", i);
		v[i] = strtoull(p + 1, &end, 10);
		if (strncmp(end, "\r\n", 2) != 0)
			return fail(db, AMORA_EPROTO, "attach reply field %d is malformed", i);
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
		return fail(db, AMORA_EPROTO, "coordinator speaks attach protocol %llu, we speak %d",
			    (unsigned long long)v[0], SHM_CHAN_ATTACH_PROTO);
	db->shards = (uint32_t)v[1];
	db->slot = (uint32_t)v[4];
	db->chan_bytes = shm_chan_bytes(db->shards);
	rc = shm_seg_attach(&db->seg, fds[0], false);
	if (rc != SHM_OK)
		return fail(db, AMORA_ECORRUPT, "data segment: %s", shm_strerror(rc));
	if (db->seg.hdr->shard_count != db->shards || v[3] != db->chan_bytes)
		return fail(db, AMORA_EPROTO, "attach reply disagrees with the segments");
	db->chan = map_fd(fds[1], db->chan_bytes);
	if (db->chan == NULL)
		return fail(db, AMORA_ESYS, "cannot map the channel: %s", strerror(errno));
	db->hdr = (struct shm_chan_hdr *)db->chan;
	if (db->hdr->magic != SHM_CHAN_MAGIC || db->hdr->slot != db->slot || db->hdr->gen != v[5])
		return fail(db, AMORA_EPROTO, "channel header does not match the attach reply");
	return AMORA_OK;
}

static int attach_rings(amora *db)
{
	db->q = calloc(db->shards, sizeof(*db->q));
	db->req = malloc(SHM_CHAN_SQ_DATA / 2);
	if (db->q == NULL || db->req == NULL)
		return fail(db, AMORA_ESYS, "out of memory");
	for (uint32_t s = 0; s < db->shards; s++) {
		if (shm_ring_attach(&db->q[s].sq, shm_chan_sq_mem(db->chan, db->shards, s), shm_chan_sq_bytes()) != SHM_OK ||
		    shm_ring_attach(&db->q[s].cq, shm_chan_cq_mem(db->chan, db->shards, s), shm_chan_cq_bytes()) != SHM_OK)
			return fail(db, AMORA_ECORRUPT, "channel rings fail validation");
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
	free(db->req);
	free(db);
}

int amora_open(const char *socket_path, amora **out)
{
	static const char attach[] = "*1\r\n$12\r\nAMORA.ATTACH\r\n";
	uint64_t v[8];
	int fds[3] = { -1, -1, -1 }, nfds = 0, rc, err;
	amora *db;

	if (out == NULL) {
		snprintf(open_errmsg, sizeof(open_errmsg), "out is NULL");
		return AMORA_EINVAL;
	}
	*out = NULL;
	if (socket_path == NULL) {
		snprintf(open_errmsg, sizeof(open_errmsg), "socket_path is NULL");
		return AMORA_EINVAL;
	}
	db = calloc(1, sizeof(*db));
	if (db == NULL) {
		snprintf(open_errmsg, sizeof(open_errmsg), "out of memory for a handle");
		return AMORA_ESYS;
	}
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
			rc = fail(db, AMORA_ESYS, "cannot send to %s: %s", socket_path, strerror(err));
		errno = err;
	}
	if (rc == AMORA_OK)
		rc = read_attach_reply(db, v, fds, &nfds);
	if (rc == AMORA_OK && nfds != SHM_CHAN_ATTACH_FDS)
		rc = fail(db, AMORA_EPROTO, "attach reply carried %d descriptors, not %d", nfds,
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
		snprintf(open_errmsg, sizeof(open_errmsg), "%s", db->errmsg);
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

/* ---------- reads ---------- */

/* A FAILED shard's table cannot vouch for its keys (one that failed at
 * start has none: every key would read as missing), so a read of one is
 * AMORA_EFAILED. The state shares the descriptor line the lookup loads
 * table_off from: the check costs one load from a line in cache. */
static int lookup(amora *db, const void *key, size_t klen, struct shm_kv *kv)
{
	uint64_t h = shm_hash(key, klen);
	uint32_t s = shm_shard_of(h, db->shards);
	const struct shm_shard *sh = shm_shard_at(&db->seg, s);
	int rc;

	if (shard_stopped(sh))
		return fail_shard_stopped(db, s);
	rc = shm_shard_get(&db->seg, sh, key, (uint32_t)klen, h, kv);
	if (rc == SHM_OK)
		return AMORA_OK;
	if (rc == SHM_ENOTFOUND)
		return AMORA_ENOTFOUND;
	return fail(db, AMORA_ECORRUPT, "shard table failed validation: %s", shm_strerror(rc));
}

/* Look `key` up inside one read section and hand the record to fn (which
 * runs inside it: the record cannot be freed meanwhile). */
static int with_value(amora *db, const void *key, size_t klen,
		      int (*fn)(amora *db, const struct shm_kv *kv, void *arg), void *arg)
{
	struct shm_kv kv;
	int rc = check_key(db, key, klen);

	if (rc != AMORA_OK)
		return rc;
	db->gets++;
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	rc = lookup(db, key, klen, &kv);
	if (rc == AMORA_OK && fn != NULL)
		rc = fn(db, &kv, arg);
	shm_epoch_leave(&db->hdr->epoch);
	return rc;
}

struct copy_to { void *buf; size_t cap; size_t *vlen; };

static int copy_value(amora *db, const struct shm_kv *kv, void *arg)
{
	struct copy_to *c = arg;

	(void)db;
	*c->vlen = kv->vlen;
	if (c->cap > 0)
		memcpy(c->buf, kv->val, kv->vlen < c->cap ? kv->vlen : c->cap);
	return AMORA_OK;
}

int amora_get(amora *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
	struct copy_to c = { buf, cap, vlen };

	if (db == NULL)
		return AMORA_EINVAL;
	if (vlen == NULL)
		return fail(db, AMORA_EINVAL, "vlen is NULL");
	if (buf == NULL && cap > 0)
		return fail(db, AMORA_EINVAL, "buf is NULL with cap %zu", cap);
	return with_value(db, key, klen, copy_value, &c);
}

struct alloc_to { void **val; size_t *vlen; };

static int alloc_value(amora *db, const struct shm_kv *kv, void *arg)
{
	struct alloc_to *a = arg;

	*a->val = malloc(kv->vlen ? kv->vlen : 1);
	if (*a->val == NULL)
		return fail(db, AMORA_ESYS, "out of memory for a %u-byte value", kv->vlen);
	memcpy(*a->val, kv->val, kv->vlen);
	*a->vlen = kv->vlen;
	return AMORA_OK;
}

int amora_get_alloc(amora *db, const void *key, size_t klen, void **val, size_t *vlen)
{
	struct alloc_to a = { val, vlen };

	if (db == NULL)
		return AMORA_EINVAL;
	if (val == NULL || vlen == NULL)
		return fail(db, AMORA_EINVAL, "%s is NULL", val == NULL ? "val" : "vlen");
	*val = NULL;
	return with_value(db, key, klen, alloc_value, &a);
}

int amora_has(amora *db, const void *key, size_t klen)
{
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	rc = with_value(db, key, klen, NULL, NULL);
	if (rc == AMORA_ENOTFOUND)
		return 0;
	return rc == AMORA_OK ? 1 : rc;
}

#define MGET_STOPPED 1 /* rc[j] of a key whose shard is FAILED (not an shm_ code) */

/* Look up keys[i..i+n) (n <= MGET_WINDOW): first hash every key, check its
 * shard's state and start loading its first group, then probe. Returns
 * the number found or an error naming the key. */
static int mget_window(amora *db, size_t i, size_t n, const void *const keys[],
		       const size_t klens[], amora_mget_fn fn, void *arg)
{
	struct shm_table_view v[MGET_WINDOW];
	const struct shm_shard *sh[MGET_WINDOW];
	uint64_t h[MGET_WINDOW];
	int rc[MGET_WINDOW], found = 0;

	for (size_t j = 0; j < n; j++) {
		h[j] = shm_hash(keys[i + j], klens[i + j]);
		sh[j] = shm_shard_at(&db->seg, shm_shard_of(h[j], db->shards));
		if (shard_stopped(sh[j]))
			rc[j] = MGET_STOPPED;
		else if ((rc[j] = shm_shard_view(&db->seg, sh[j], &v[j])) == SHM_OK)
			shm_table_prefetch(&v[j], h[j]);
	}
	for (size_t j = 0; j < n; j++) {
		struct shm_kv kv;

		if (rc[j] == SHM_OK)
			rc[j] = shm_shard_find(&db->seg, sh[j], &v[j], keys[i + j], (uint32_t)klens[i + j],
					       h[j], &kv);
		if (rc[j] == SHM_OK) {
			fn(arg, i + j, kv.val, kv.vlen);
			found++;
		} else if (rc[j] == MGET_STOPPED) {
			fail_shard_stopped(db, shm_shard_of(h[j], db->shards));
			return fail_at_key(db, AMORA_EFAILED, i + j);
		} else if (rc[j] != SHM_ENOTFOUND) {
			fail(db, AMORA_ECORRUPT, "shard table failed validation: %s", shm_strerror(rc[j]));
			return fail_at_key(db, AMORA_ECORRUPT, i + j);
		}
	}
	return found;
}

int amora_mget(amora *db, size_t n, const void *const keys[], const size_t klens[],
	       amora_mget_fn fn, void *arg)
{
	int found = 0;

	if (db == NULL)
		return AMORA_EINVAL;
	if (fn == NULL)
		return fail(db, AMORA_EINVAL, "fn is NULL");
	if (n > 0 && (keys == NULL || klens == NULL))
		return fail(db, AMORA_EINVAL, "%s is NULL with n %zu", keys == NULL ? "keys" : "klens", n);
	for (size_t i = 0; i < n; i++) {
		int rc = check_key(db, keys[i], klens[i]);

		if (rc != AMORA_OK)
			return fail_at_key(db, rc, i);
	}
	/* One read section for the whole batch. */
	shm_epoch_enter(&db->hdr->epoch, db->seg.hdr);
	for (size_t i = 0; i < n && found >= 0; i += MGET_WINDOW) {
		size_t w = n - i < MGET_WINDOW ? n - i : MGET_WINDOW;
		int rc = mget_window(db, i, w, keys, klens, fn, arg);

		found = rc < 0 ? rc : found + rc;
	}
	shm_epoch_leave(&db->hdr->epoch);
	db->gets += n;
	return found;
}

/* ---------- waiting for shards ---------- */

static bool coordinator_alive(amora *db)
{
	struct pollfd p = { .fd = db->sock, .events = POLLIN | POLLRDHUP };
	char c;

	if (db->gone)
		return false;
	if (poll(&p, 1, 0) > 0 &&
	    ((p.revents & (POLLHUP | POLLRDHUP | POLLERR)) ||
	     recv(db->sock, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0))
		db->gone = true;
	return !db->gone;
}

static void note_deferred(amora *db, int status, uint32_t s)
{
	if (db->deferred != 0)
		return;
	db->deferred = status;
	snprintf(db->deferred_msg, sizeof(db->deferred_msg), "a buffered write to shard %u failed: %s",
		 s, amora_strerror(status));
}

/* Consume shard s's completions. *status receives the one for `want` if it
 * is among them. Returns AMORA_OK or AMORA_ECORRUPT. */
static int reap(amora *db, uint32_t s, uint64_t want, int *status)
{
	struct shardq *q = &db->q[s];
	const void *rec;
	uint32_t len;
	int rc;

	while ((rc = shm_ring_peek(&q->cq, &rec, &len)) == SHM_OK) {
		struct shm_chan_cqe c;

		if (len != sizeof(c))
			return fail(db, AMORA_ECORRUPT, "shard %u sent a malformed completion", s);
		memcpy(&c, rec, sizeof(c));
		shm_ring_consume(&q->cq);
		if (c.id <= q->done_id)
			continue; /* answered again by a restarted shard */
		if (c.id > q->next_id)
			return fail(db, AMORA_ECORRUPT, "shard %u completed request %llu never sent", s,
				    (unsigned long long)c.id);
		q->done_id = c.id;
		if (c.id == want)
			*status = c.status;
		else if (c.status != AMORA_OK)
			note_deferred(db, c.status, s);
	}
	shm_ring_release(&q->cq);
	if (rc != SHM_EEMPTY)
		return fail(db, AMORA_ECORRUPT, "completion ring of shard %u is corrupt", s);
	return AMORA_OK;
}

/* Why waiting for shard s must stop now, or AMORA_OK to go on. */
static int wait_problem(amora *db, uint32_t s, uint64_t start)
{
	uint32_t cut = atomic_load_explicit(&db->hdr->cut_off, memory_order_acquire);
	uint32_t st = atomic_load(&shm_shard_at(&db->seg, s)->state);

	if (cut == SHM_CHAN_CUT_BY_AMORAD)
		return fail(db, AMORA_EBADRING, "amorad cut this client off: it stayed in one read "
			    "section for seconds (stopped or stuck) while writers waited");
	if (cut != 0)
		return fail(db, AMORA_EBADRING, "shard %u cut this client off", cut - 1);
	if (!coordinator_alive(db))
		return fail(db, AMORA_EGONE, "the coordinator closed the connection");
	if (st == SHM_SHARD_FAILED)
		return fail_shard_stopped(db, s);
	if (shm_now_ns() - start > (uint64_t)db->timeout_ms * 1000000ull) {
		if (st != SHM_SHARD_READY)
			return fail(db, AMORA_ERESTARTING, "shard %u did not come back within %d ms", s,
				    db->timeout_ms);
		return fail(db, AMORA_ETIMEDOUT, "shard %u did not answer within %d ms", s,
			    db->timeout_ms);
	}
	return AMORA_OK;
}

/* Wait until shard s has completed every id up to `upto`; *status gets
 * the status of `want` (0 if want is 0). */
static int wait_done(amora *db, uint32_t s, uint64_t upto, uint64_t want, int *status)
{
	struct shardq *q = &db->q[s];
	uint64_t start = shm_now_ns();
	int rc;

	for (;;) {
		rc = reap(db, s, want, status);
		if (rc != AMORA_OK || q->done_id >= upto)
			return rc;
		/* Problems are looked for only when a slice passes without
		 * an answer: the checks cost a system call. */
		if (shm_ring_wait_data(&q->cq, WAIT_SLICE_MS) == SHM_ETIMEDOUT) {
			rc = wait_problem(db, s, start);
			if (rc != AMORA_OK)
				return rc;
		}
	}
}

/* ---------- submitting ---------- */

static void publish(amora *db, uint32_t s)
{
	struct shardq *q = &db->q[s];

	shm_ring_publish(&q->sq);
	q->staged = 0;
	/* Our flag and word only: nobody else's wake-up depends on us. */
	shm_chan_notify(q->words, q->asleep);
}

/* Room for one more request to shard s: in flight below the completion
 * ring's capacity, and `len` bytes free in the submission ring. */
static int make_room(amora *db, uint32_t s, uint32_t len)
{
	struct shardq *q = &db->q[s];
	uint64_t start = 0; /* read the clock only once we have to wait */
	int status, rc;

	if (q->next_id - q->done_id >= CQ_CAPACITY - 1) {
		publish(db, s);
		rc = wait_done(db, s, q->next_id - CQ_CAPACITY / 2, 0, &status);
		if (rc != AMORA_OK)
			return rc;
	}
	while ((rc = shm_ring_wait_space(&q->sq, len, 0)) == SHM_ETIMEDOUT) {
		if (q->staged > 0)
			publish(db, s);
		if (start == 0)
			start = shm_now_ns();
		rc = wait_problem(db, s, start);
		if (rc != AMORA_OK)
			return rc;
		rc = reap(db, s, 0, &status);
		if (rc != AMORA_OK)
			return rc;
		shm_ring_wait_space(&q->sq, len, WAIT_SLICE_MS);
	}
	if (rc != SHM_OK)
		return fail(db, AMORA_ECORRUPT, "submission ring of shard %u: %s", s, shm_strerror(rc));
	return AMORA_OK;
}

/* A value too large for a ring record goes through the bulk area, which
 * holds one value at a time: wait until the shard has taken the previous
 * one (its request is answered, and a restarted shard never re-reads an
 * answered request: chan.h). */
static int bulk_wait(amora *db)
{
	uint32_t bs = db->bulk_shard;
	int status, rc;

	if (!db->bulk_busy)
		return AMORA_OK;
	if (db->q[bs].staged > 0)
		publish(db, bs);
	rc = wait_done(db, bs, db->bulk_id, 0, &status);
	if (rc == AMORA_OK)
		db->bulk_busy = false;
	return rc;
}

/* Stage one request for the key's shard; *shard and *id identify it. */
static int submit(amora *db, uint8_t op, const void *key, size_t klen, const void *val,
		  size_t vlen, uint32_t *shard, uint64_t *id)
{
	uint32_t s = shm_shard_of(shm_hash(key, klen), db->shards);
	struct shardq *q = &db->q[s];
	struct shm_chan_req r = { .op = op, .klen = (uint32_t)klen, .vlen = (uint32_t)vlen };
	size_t len = sizeof(r) + klen + vlen;
	int rc;

	/* (Whether the coordinator lives is checked while waiting: a poll
	 * here would add a system call to every write.) */
	if (db->gone)
		return fail(db, AMORA_EGONE, "the coordinator closed the connection");
	if (atomic_load(&db->hdr->cut_off) != 0)
		return fail(db, AMORA_EBADRING, "a shard cut this client off");
	/* A FAILED shard never takes its requests again: refuse before
	 * queueing (one load; a shard failing later is seen while waiting). */
	if (shard_stopped(shm_shard_at(&db->seg, s)))
		return fail_shard_stopped(db, s);
	if (len > shm_ring_max_record(&q->sq)) {
		rc = bulk_wait(db);
		if (rc != AMORA_OK)
			return rc;
		r.flags = SHM_CHAN_REQ_BULK;
		len = sizeof(r) + klen;
	}
	rc = make_room(db, s, (uint32_t)len);
	if (rc != AMORA_OK)
		return rc;
	r.id = ++q->next_id;
	if (r.flags & SHM_CHAN_REQ_BULK) {
		memcpy(db->chan + shm_chan_bulk_off(db->shards), val, vlen);
		db->bulk_busy = true;
		db->bulk_shard = s;
		db->bulk_id = r.id;
	}
	memcpy(db->req, &r, sizeof(r));
	memcpy(db->req + sizeof(r), key, klen);
	if (!(r.flags & SHM_CHAN_REQ_BULK) && vlen > 0)
		memcpy(db->req + sizeof(r) + klen, val, vlen);
	if (shm_ring_push(&q->sq, db->req, (uint32_t)len) != SHM_OK) {
		q->next_id--;
		db->bulk_busy = false;
		return fail(db, AMORA_ECORRUPT, "submission ring of shard %u is corrupt", s);
	}
	q->staged++;
	*shard = s;
	*id = r.id;
	return AMORA_OK;
}

static int take_deferred(amora *db)
{
	int rc = db->deferred;

	if (rc != 0) {
		snprintf(db->errmsg, sizeof(db->errmsg), "%s", db->deferred_msg);
		db->deferred = 0;
	}
	return rc;
}

static int write_sync(amora *db, uint8_t op, const void *key, size_t klen, const void *val,
		      size_t vlen)
{
	uint32_t s;
	uint64_t id;
	int status = AMORA_OK, rc;

	rc = submit(db, op, key, klen, val, vlen, &s, &id);
	if (rc != AMORA_OK)
		return rc;
	publish(db, s);
	rc = wait_done(db, s, id, id, &status);
	if (rc != AMORA_OK)
		return rc;
	if (status != AMORA_OK) {
		if (status != AMORA_ENOTFOUND)
			fail(db, status, "shard %u: %s", s, amora_strerror(status));
		else
			fail(db, status, "no such key");
		return status;
	}
	return take_deferred(db);
}

int amora_set(amora *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	rc = check_kv(db, key, klen, val, vlen);
	if (rc != AMORA_OK)
		return rc;
	db->sets++;
	return write_sync(db, SHM_CHAN_OP_SET, key, klen, val, vlen);
}

int amora_del(amora *db, const void *key, size_t klen)
{
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	rc = check_key(db, key, klen);
	if (rc != AMORA_OK)
		return rc;
	db->dels++;
	return write_sync(db, SHM_CHAN_OP_DEL, key, klen, NULL, 0);
}

int amora_set_buffered(amora *db, const void *key, size_t klen, const void *val, size_t vlen)
{
	uint32_t s;
	uint64_t id;
	int rc;

	if (db == NULL)
		return AMORA_EINVAL;
	rc = check_kv(db, key, klen, val, vlen);
	if (rc != AMORA_OK)
		return rc;
	db->sets++;
	rc = submit(db, SHM_CHAN_OP_SET, key, klen, val, vlen, &s, &id);
	if (rc != AMORA_OK)
		return rc;
	if (db->q[s].staged >= BUFFERED_BATCH)
		publish(db, s);
	return AMORA_OK;
}

int amora_flush(amora *db)
{
	int status, rc = AMORA_OK;

	if (db == NULL)
		return AMORA_EINVAL;
	for (uint32_t s = 0; s < db->shards; s++)
		if (db->q[s].staged > 0)
			publish(db, s);
	for (uint32_t s = 0; s < db->shards && rc == AMORA_OK; s++)
		if (db->q[s].done_id < db->q[s].next_id)
			rc = wait_done(db, s, db->q[s].next_id, 0, &status);
	if (rc != AMORA_OK)
		return rc;
	return take_deferred(db);
}

/* ---------- the store ---------- */

int amora_stats(amora *db, struct amora_stats *st)
{
	struct shm_store_stats ss;

	if (db == NULL)
		return AMORA_EINVAL;
	if (st == NULL)
		return fail(db, AMORA_EINVAL, "st is NULL");
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

int amora_heartbeat(amora *db)
{
	static const char ping[] = "*1\r\n$4\r\nPING\r\n";
	struct pollfd p;
	char buf[16];
	size_t got = 0;
	int rc = AMORA_OK;

	if (db == NULL)
		return AMORA_EINVAL;
	if (db->gone || send(db->sock, ping, sizeof(ping) - 1, MSG_NOSIGNAL) != sizeof(ping) - 1)
		return fail(db, AMORA_EGONE, "the coordinator closed the connection");
	while (got < 7) {
		ssize_t n;

		p = (struct pollfd){ .fd = db->sock, .events = POLLIN };
		if (poll(&p, 1, db->timeout_ms) <= 0)
			return fail(db, AMORA_ETIMEDOUT, "no answer to PING within %d ms", db->timeout_ms);
		n = recv(db->sock, buf + got, 7 - got, 0);
		if (n <= 0) {
			db->gone = true;
			return fail(db, AMORA_EGONE, "the coordinator closed the connection");
		}
		got += (size_t)n;
	}
	if (memcmp(buf, "+PONG\r\n", 7) != 0)
		return fail(db, AMORA_EPROTO, "unexpected answer to PING");
	/* A shard stopped for good outweighs one that is coming back. */
	for (uint32_t s = 0; s < db->shards; s++) {
		const struct shm_shard *sh = shm_shard_at(&db->seg, s);
		uint32_t st = atomic_load_explicit(&sh->state, memory_order_acquire);

		if (st == SHM_SHARD_FAILED)
			return fail_shard_stopped(db, s);
		if (st != SHM_SHARD_READY && rc == AMORA_OK)
			rc = fail(db, AMORA_ERESTARTING, "shard %u is %s, not serving yet", s,
				  shm_shard_state_name(st));
	}
	return rc;
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
		return fail(db, AMORA_EINVAL, "out is NULL");
	if (shard >= db->shards)
		return fail(db, AMORA_EINVAL, "no shard %u: the store has %u", shard, db->shards);
	sh = shm_shard_at(&db->seg, shard);
	st = atomic_load_explicit(&sh->state, memory_order_acquire);
	out->state = (int)st;
	out->name = shm_shard_state_name(st);
	out->cause = st == SHM_SHARD_FAILED ? shm_fail_cause_str(atomic_load(&sh->cause)) : "";
	out->restarts = atomic_load(&sh->restarts);
	return AMORA_OK;
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
