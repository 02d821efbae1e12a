/*
 * recover.h — a shard process rebuilding its shard at start.
 *
 * Called once by shardd_run() after the log is open and before the shard
 * serves: afterwards the writer `w` owns the shard's table (published,
 * readers listed) and the log is ready for appends after *last.
 */
#ifndef AMORA_SHARDD_RECOVER_H
#define AMORA_SHARDD_RECOVER_H

#include <stddef.h>
#include <stdint.h>

#include "shm/shard.h"
#include "shardd/wal.h"

/* Batch decisions of earlier boots this shard logged as primary (found in
 * its log or its checkpoint): its checkpoints carry them while a part of
 * another shard may still need them (DESIGN.md §17). malloc'ed. */
struct old_decisions {
	struct walfmt_batch *v;
	size_t n, cap;
};

struct shard_recovery {
	struct shm_seg *seg;
	uint32_t id;
	struct wal *wal;
	enum wal_sync_mode mode;
	struct shm_readers readers; /* every client that may read, for reclamation */
	const char *data_dir;       /* where every shard's log lives (shard-NN) */
	struct old_decisions *old;  /* filled by recovery (NULL: not wanted) */
};

/* Atomic batches (DESIGN.md §16): a part the log holds with no RESOLVED
 * record is decided here: by its word (the segment's boot: a restart of
 * this shard alone; undecided, the shard aborts it), by this shard's own
 * DECISION, or by its primary's log (an earlier boot: amorad restarted),
 * read once that shard has read it (shm_shard.log_read). Committed parts'
 * effects then count as sets and deletes in the passes; RESOLVED records
 * are logged for what was decided here, and this shard's bits in the
 * words of the segment's boot are cleared. A word this shard left
 * COMMITTING or CLAIMING is finished first (DECISION in its log: commit,
 * else abort).
 *
 * Returns 0, or the shardd_exit code the shard should exit with (the
 * cause is logged). What the WAL repairs on the way (a torn tail cut) is
 * logged too, through its note callback. */
int shard_recover(struct shm_writer *w, const struct shard_recovery *r, uint64_t *last);

#endif
