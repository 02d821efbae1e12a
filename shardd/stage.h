/*
 * stage.h — a round's writes between their log write and their
 * publication (DESIGN.md §8: publish after the log).
 *
 * The shard stages each write of a round (shm_writer_stage_*: record
 * built, room made, nothing visible), logs the round, and only once the
 * log write (periodic) or sync (always) has returned publishes them, in
 * the order staged. A reader therefore never sees a value that a failed
 * log write or a process crash takes back.
 *
 * Several writes of one key in a round are decided in order: the round
 * keeps, per key, its latest staged write (stage_find), which the writer
 * decides the next one from (shard.h, `prev`), and publication applies
 * them in order. So a round means the same as its requests applied one by
 * one, and a hot key costs no extra rounds.
 *
 * Private memory of the shard process; one user.
 */
#ifndef AMORA_SHARDD_STAGE_H
#define AMORA_SHARDD_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/shard.h"

struct stage_key {
	uint64_t h;
	uint64_t round; /* the entry belongs to the current round only if equal */
	size_t op;      /* the key's latest write: ops[op] */
};

#define STAGE_FILTER_BITS 16384

struct stage {
	const struct shm_seg *seg; /* where the staged records are */
	struct shm_staged *ops;
	size_t n, cap;
	/* A bit per hash value mod STAGE_FILTER_BITS of every key staged this
	 * round: a clear bit means no write of the key is staged. */
	uint64_t filter[STAGE_FILTER_BITS / 64];
	bool indexed;           /* the round is big enough to keep `keys` */
	struct stage_key *keys; /* open addressing, cap_keys a power of two */
	size_t cap_keys;
	uint64_t round;         /* starts at 1: a zeroed entry belongs to no round */
};

/* Errors: -1 (no memory). */
int stage_init(struct stage *s, const struct shm_seg *seg);
void stage_destroy(struct stage *s);

/* The latest write of `key` (hash h) staged this round, or NULL. Valid
 * until the next stage_slot. */
const struct shm_staged *stage_find(const struct stage *s, const void *key, uint32_t klen,
				    uint64_t h);

/* Room for one more write: the slot to stage it into, or NULL (no
 * memory). It counts only once stage_add is called. */
struct shm_staged *stage_slot(struct stage *s);

/* The write staged into the last stage_slot is part of the round, and its
 * key's latest. */
void stage_add(struct stage *s);

/* Publish the round's writes in the order staged and start a new round.
 * Returns SHM_OK or the first error of shm_writer_publish (a broken rule:
 * the caller stops). */
int stage_publish(struct stage *s, struct shm_writer *w);

#endif
