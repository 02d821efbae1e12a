/*
 * ckpt.h — a shard's checkpoints (DESIGN.md §17): when one is taken, what
 * it holds, and the thread that writes it while the shard goes on serving.
 *
 * The loop (shardd.c) owns a struct ckpt and calls, between rounds:
 *   ckpt_wanted   whether one is due: the log on disk passed
 *                 max(floor, factor x the shard's live bytes), amorad asked
 *                 for one (AMORA.CHECKPOINT), or the shard is stopping;
 *   ckpt_start    rotate the log (so the checkpoint begins at a segment
 *                 boundary), note the position it covers and the one
 *                 recovery must replay from (below the first record of any
 *                 batch part still open), list the batch decisions it must
 *                 carry, and start the walker thread;
 *   ckpt_poll     once the thread is done: join it, count it, and tell
 *                 amorad (struct shm_shard's ckpt_* words).
 *
 * The walker is a reader with an epoch slot of its own, which the loop's
 * reclamation scans (it is one of the writer's readers): it walks the
 * table a group range per read section, copying records out, and writes
 * them outside the section. If the table was replaced meanwhile (the
 * writer's `tables` moved) the walk starts over on the new one; keys
 * written twice are harmless (the larger seq wins). Then the file is
 * synced and renamed (ckptfile.h); checkpoints beyond the two newest are
 * deleted, and so are log segments wholly before the older one's replay
 * seq, so that a damaged newest one can fall back to the older one.
 *
 * Private memory of the shard process; one loop, one thread.
 */
#ifndef AMORA_SHARDD_CKPT_H
#define AMORA_SHARDD_CKPT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shm/epoch.h"
#include "shm/shard.h"
#include "shardd/batch.h"
#include "shardd/recover.h"
#include "shardd/wal.h"

struct ckpt {
	/* set by ckpt_init */
	struct shm_seg *seg;
	struct shm_writer *w;
	uint32_t id;
	char *dir;
	uint64_t floor;           /* this shard's share of the floor, bytes */
	uint32_t factor;          /* 0: no automatic checkpoints */
	struct old_decisions old; /* earlier boots' decisions (recovery), carried */
	/* the loop's */
	bool running;
	pthread_t thread;
	uint64_t disk_base;       /* log bytes on disk when last measured ... */
	uint64_t stat_base;       /* ... and the log's stat_bytes then */
	uint64_t since_base;      /* the log's stat_bytes when the last one began */
	uint64_t req;             /* amorad's request number the running one serves */
	uint64_t newest;          /* the covered seq of the newest checkpoint (0: none) */
	uint64_t t0;
	/* the walker's input: the position, the decisions to carry */
	uint64_t covered, replay, boot;
	struct walfmt_batch *carry;
	size_t ncarry, capcarry;
	/* its output, read after `done` (acquire) */
	_Atomic int done;
	int rc;                   /* CKPT_OK or CKPT_E* */
	char why[640];
	uint64_t left_bytes;      /* log bytes left on disk after deleting */
	uint64_t kvs, file_bytes, raw_bytes, walks;
	struct shm_epoch_slot slot; /* the walker's read sections */
	_Atomic uint32_t *wake;   /* bumped (and woken) when done: the loop sleeps on it */
};

/* Set up (no thread yet). floor_total, factor: amorad's --checkpoint-*
 * (floor_total split evenly over `shards`). Returns 0, -1 out of memory. */
int ckpt_init(struct ckpt *c, struct shm_seg *seg, struct shm_writer *w, uint32_t id, uint32_t shards,
	      const char *dir, uint64_t floor_total, uint32_t factor);
/* The log's size on disk, measured at start (after recovery). */
int ckpt_measure(struct ckpt *c, const struct wal *wal);
/* 1 when a checkpoint should start now (none running): the log on disk
 * passed its bound or amorad's request number moved past the last served. */
bool ckpt_wanted(const struct ckpt *c, const struct wal *wal);
/* Begin one (between rounds: everything staged is logged). Returns 0, or
 * -1 with the cause logged (the log could not be rotated: the caller exits
 * as after a failed log write; or no thread: skipped, retried later). */
int ckpt_start(struct ckpt *c, struct wal *wal, const struct batches *b);
/* If the running one is done: join, count, publish; 1 when one finished. */
int ckpt_poll(struct ckpt *c, struct wal *wal);
/* Wait for the running one (shutdown). */
void ckpt_wait(struct ckpt *c, struct wal *wal);
/* Whether the log holds anything the newest checkpoint does not (a last
 * one at shutdown is worth writing). */
bool ckpt_final(const struct ckpt *c, const struct wal *wal);

#endif
