/*
 * engine.h — the memory amorad shares with the shard processes it forks.
 *
 * amorad creates everything before it forks a shard, and shards inherit it
 * (fork, never exec: the data segment is sealed against new writable
 * mappings, so inheriting is the only way a shard can write it):
 *
 *   seg        the data segment (segment.h): tables, records, shard
 *              descriptors (with each shard's "sleeping" flag, chan.h
 *              "Doorbells"). Clients map it read-only.
 *   chan[i]    the channel memfd (chan.h) of the client attached to slot
 *              i: a new memfd per attach, so a process that once had a
 *              slot can never write into its next owner's channel. amorad
 *              sends it to every running shard over that shard's socket
 *              (SCM_RIGHTS) before it publishes the slot; a shard forked
 *              later inherits amorad's mapping of it.
 *   reg        the registry: anonymous shared memory only amorad and the
 *              shards see (no client can forge a slot's state). Per client
 *              slot: state, generation, pid; per (slot, shard): the
 *              generation whose closing the shard acknowledged; amorad's
 *              wake word, on which every sleeping shard also waits.
 *
 * Clients write only their own channel: no memory a client can write is
 * read by a shard on behalf of another client (chan.h, "Doorbells").
 *
 * Client slot life: FREE -> ACTIVE (amorad formats the channel, then
 * publishes the state and bumps reg->version) -> CLOSING (the client died
 * or detached: amorad clears its epoch slot and bumps the version) -> FREE
 * once every live shard has written ack = gen, i.e. has stopped touching
 * the channel; only then may amorad format it for the next client. After
 * publishing ACTIVE or CLOSING amorad calls engine_wake_shards: a sleeping
 * shard waits only on the words of clients it already serves, so a new
 * client could not wake it, and a closing one must be acknowledged.
 */
#ifndef AMORA_ENGINE_H
#define AMORA_ENGINE_H

#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/chan.h"
#include "shm/segment.h"
#include "shardd/wal.h"

enum reg_state { REG_FREE = 0, REG_ACTIVE = 1, REG_CLOSING = 2 };

struct reg_client {
	_Atomic uint32_t state; /* enum reg_state */
	_Atomic uint32_t gen;   /* bumped at each attach */
	_Atomic int32_t pid;
	uint32_t pad_;
};

struct reg {
	_Atomic uint64_t version; /* bumped on every client state change */
	pid_t amorad_pid;
	_Atomic uint32_t wake;    /* futex word: amorad bumps it after a change (engine_wake_shards) */
};

/* What the engine and its shards need of amorad's configuration
 * (coordinator/config.h checks and documents each value). */
struct engine_config {
	char data_dir[PATH_MAX];     /* shard logs go to data_dir/shard-NN/ */
	uint64_t memory;             /* bytes of the data segment */
	uint32_t shards;             /* a power of two */
	uint32_t max_clients;        /* client slots, at most SHM_CHAN_MAX_CLIENTS */
	enum wal_sync_mode sync;
	uint32_t sync_interval_ms;
	uint32_t placement;          /* enum shm_placement: the data directory's (datadir.c) */
	bool sorted_index;           /* shards keep a sorted index (--sorted-index) */
	uint64_t ckpt_floor;         /* --checkpoint-min-log (the store's, bytes) */
	uint32_t ckpt_factor;        /* --checkpoint-factor */
};

struct engine {
	struct engine_config cfg;
	struct shm_seg seg;
	int *chan_fd;    /* per client slot, -1: no channel */
	uint8_t **chan;  /* per client slot, NULL: no channel */
	size_t chan_bytes;
	int (*shard_sock)[2]; /* per shard: [0] amorad's end, [1] the shard's */
	struct reg *reg;
	struct reg_client *clients;
	_Atomic uint32_t *acks; /* [slot * shards + shard] */
	size_t reg_bytes;
};

/* What amorad sends a shard with a channel's fd. */
struct engine_chan_msg {
	uint32_t slot;
	uint32_t gen;
};

/* Create every shared region for `cfg` and seal the data segment.
 * Returns 0 or -1 with a message in err (also when cfg->max_clients is
 * above SHM_CHAN_MAX_CLIENTS, or the kernel lacks futex_waitv: chan.h). */
int engine_create(struct engine *e, const struct engine_config *cfg, char *err, size_t errlen);
void engine_destroy(struct engine *e);

static inline _Atomic uint32_t *engine_ack(const struct engine *e, uint32_t slot, uint32_t s)
{
	return &e->acks[(size_t)slot * e->cfg.shards + s];
}

static inline struct shm_chan_hdr *engine_chan_hdr(const struct engine *e, uint32_t slot)
{
	return (struct shm_chan_hdr *)e->chan[slot];
}

/* Wake every sleeping shard through amorad's word (after a registry
 * change, i.e. after bumping reg->version: a shard that sees the new word
 * value sees the new version). */
void engine_wake_shards(const struct engine *e);

/* A fresh channel for client slot `slot` (generation gen, client pid),
 * formatted and mapped by amorad. Returns 0, or -1 with the reason in err. */
int engine_chan_open(struct engine *e, uint32_t slot, uint32_t gen, int32_t pid, char *err,
		     size_t errlen);
/* amorad's side of a channel nobody uses any more. */
void engine_chan_close(struct engine *e, uint32_t slot);

#endif
