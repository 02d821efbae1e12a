/*
 * engine.c — creating the memory amorad shares with its shards (engine.h).
 *
 * The segment, the registry and one socket pair per shard exist before
 * the first fork and live as long as amorad. Channels come
 * and go with clients: each attach gets a new memfd (engine_chan_open),
 * which the shards running then receive over their socket and the shards
 * forked later inherit mapped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shardd/engine.h"

/* A sealed memfd of `bytes`, mapped shared. NULL with errno on failure;
 * this and the two create_ helpers are this file's system-call wrappers. */
static void *map_memfd(const char *name, size_t bytes, int *fd_out)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *p;

	if (fd < 0)
		return NULL;
	/* A client gets its channel's fd read-write: sealed, it cannot shrink
	 * the file under amorad and the shards (their next access would be
	 * SIGBUS). */
	if (ftruncate(fd, (off_t)bytes) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
		close(fd);
		return NULL;
	}
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		close(fd);
		return NULL;
	}
	*fd_out = fd;
	return p;
}

static int create_channels(struct engine *e)
{
	uint32_t n = e->cfg.max_clients;

	e->chan_bytes = shm_chan_bytes(e->cfg.shards);
	e->chan_fd = calloc(n, sizeof(*e->chan_fd));
	e->chan = calloc(n, sizeof(*e->chan));
	e->shard_sock = calloc(e->cfg.shards, sizeof(*e->shard_sock));
	if (e->chan_fd == NULL || e->chan == NULL || e->shard_sock == NULL)
		return -1;
	for (uint32_t i = 0; i < n; i++)
		e->chan_fd[i] = -1;
	for (uint32_t s = 0; s < e->cfg.shards; s++)
		e->shard_sock[s][0] = e->shard_sock[s][1] = -1;
	for (uint32_t s = 0; s < e->cfg.shards; s++)
		if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, e->shard_sock[s]) != 0)
			return -1;
	return 0;
}

int engine_chan_open(struct engine *e, uint32_t slot, uint32_t gen, int32_t pid, char *err,
		     size_t errlen)
{
	int fd, rc;
	uint8_t *p = map_memfd("amora-channel", e->chan_bytes, &fd);

	if (p == NULL) {
		snprintf(err, errlen, "cannot create the client channel: %s", strerror(errno));
		return -1;
	}
	rc = shm_chan_format(p, e->cfg.shards, slot, gen, pid);
	if (rc != SHM_OK) {
		snprintf(err, errlen, "cannot format the client channel: %s", shm_strerror(rc));
		munmap(p, e->chan_bytes);
		close(fd);
		return -1;
	}
	e->chan[slot] = p;
	e->chan_fd[slot] = fd;
	return 0;
}

void engine_chan_close(struct engine *e, uint32_t slot)
{
	if (e->chan[slot] != NULL)
		munmap(e->chan[slot], e->chan_bytes);
	if (e->chan_fd[slot] >= 0)
		close(e->chan_fd[slot]);
	e->chan[slot] = NULL;
	e->chan_fd[slot] = -1;
}

static int create_registry(struct engine *e)
{
	size_t nacks = (size_t)e->cfg.max_clients * e->cfg.shards;
	void *p;

	e->reg_bytes = sizeof(struct reg) + e->cfg.max_clients * sizeof(struct reg_client) +
		       nacks * sizeof(uint32_t);
	p = mmap(NULL, e->reg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	e->reg = p;
	e->clients = (struct reg_client *)(e->reg + 1);
	e->acks = (_Atomic uint32_t *)(e->clients + e->cfg.max_clients);
	e->reg->amorad_pid = getpid();
	return 0;
}

int engine_create(struct engine *e, const struct engine_config *cfg, char *err, size_t errlen)
{
	int rc;

	memset(e, 0, sizeof(*e));
	e->cfg = *cfg;
	e->seg.fd = -1;
	if (cfg->max_clients > SHM_CHAN_MAX_CLIENTS) {
		snprintf(err, errlen, "--max-clients %u is above %u: a sleeping shard waits on one futex "
			 "word per client plus two of its own, and futex_waitv takes at most %u",
			 cfg->max_clients, SHM_CHAN_MAX_CLIENTS, SHM_CHAN_WAIT_WORDS);
		return -1;
	}
	if (!shm_chan_sleep_supported()) {
		snprintf(err, errlen, "this kernel lacks futex_waitv(2) (Linux 5.16 or later), on which "
			 "shards sleep: %s", strerror(errno));
		return -1;
	}
	rc = shm_seg_create(&e->seg, cfg->memory, cfg->shards);
	if (rc != SHM_OK) {
		snprintf(err, errlen, "cannot create the data segment (%llu bytes, %u shards): %s%s%s",
			 (unsigned long long)cfg->memory, cfg->shards, shm_strerror(rc),
			 rc == SHM_ESYS ? ": " : "", rc == SHM_ESYS ? strerror(errno) : "");
		return -1;
	}
	e->seg.hdr->placement = cfg->placement;
	for (uint32_t i = 0; i < cfg->shards; i++)
		atomic_store_explicit(&shm_shard_at(&e->seg, i)->sorted, cfg->sorted_index,
				      memory_order_relaxed);
	if (create_channels(e) != 0 || create_registry(e) != 0) {
		snprintf(err, errlen, "cannot create the shared memory and shard sockets: %s",
			 strerror(errno));
		return -1;
	}
	rc = shm_seg_seal(&e->seg);
	if (rc != SHM_OK) {
		snprintf(err, errlen, "cannot seal the data segment: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void engine_destroy(struct engine *e)
{
	for (uint32_t i = 0; e->chan != NULL && i < e->cfg.max_clients; i++)
		engine_chan_close(e, i);
	for (uint32_t s = 0; e->shard_sock != NULL && s < e->cfg.shards; s++) {
		if (e->shard_sock[s][0] >= 0)
			close(e->shard_sock[s][0]);
		if (e->shard_sock[s][1] >= 0)
			close(e->shard_sock[s][1]);
	}
	free(e->shard_sock);
	free(e->chan);
	free(e->chan_fd);
	if (e->reg != NULL)
		munmap(e->reg, e->reg_bytes);
	if (e->seg.fd >= 0)
		shm_seg_close(&e->seg);
	memset(e, 0, sizeof(*e));
}

void engine_wake_shards(const struct engine *e)
{
	/* One word for all shards: FUTEX_WAKE wakes every one asleep on it. */
	shm_chan_word_wake(&e->reg->wake, 0);
}
