/*
 * batch.h — a shard's side of atomic batches (DESIGN.md §16, shm/batch.h
 * for the words and intents).
 *
 * Requests (shm/chan.h), each staged in its round like any write, so it
 * is logged before anything of it is visible and answered after:
 *   PSET, PDEL  a participant stages an intent (shm_writer_stage_intent)
 *               and logs a PSET/PDEL record (shardd/walfmt.h). The first
 *               intent of a batch opens a *part* here and counts this
 *               shard in the word's holders. A PDEL of an absent key
 *               stages nothing. Busy (SHM_CHAN_EBUSY) when the key holds
 *               any batch's intent or the word still serves an earlier
 *               batch; SHM_CHAN_EABORTED when the batch was aborted
 *               already (a participant restarted before the decision).
 *   COMMIT      the primary moves the word to COMMITTING (CAS: refused,
 *               SHM_CHAN_EABORTED, if somebody aborted it) and logs
 *               DECISION; after the log write, (p1)-(p3) make it visible.
 *   ABORT       the primary aborts it (no record: no decision is abort).
 *   RESOLVE     nothing but a wake-up: the sweep does the work.
 * Every batch request names a ref of the requesting client's own slot.
 *
 * The sweep (batch_sweep, before each round gathers requests): each open
 * part whose word is final is resolved in that round (stage_settle of
 * each of its keys still holding its intent, a RESOLVED record), a
 * committed one only once shm_batch_settle_ready allows (its grace begins
 * in the sweep that sees COMMITTED, and is checked in the same sweep); an
 * undecided one whose client is gone is aborted (CAS). After a second
 * epoch grace, begun once the round has published the resolution
 * (batch_round_logged) and checked at once, the part leaves the holders
 * and is forgotten. So with no reader inside a read section, a part costs
 * its requests' rounds and the one round that resolves it.
 *
 * Participants are not told the outcome (no request wakes them for it):
 * while a shard holds open parts it looks at their words every
 * millisecond it would otherwise sleep (batch_sweep counts them as
 * waiting), and at every round it runs anyway. The primary resolves its
 * own part in the round right after the commit's (`again`).
 *
 * Private memory of the shard process; one user.
 */
#ifndef AMORA_SHARDD_BATCH_H
#define AMORA_SHARDD_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/chan.h"
#include "shm/shard.h"
#include "shardd/stage.h"
#include "shardd/wal.h"

struct batch_part;

struct batches {
	struct shm_seg *seg;
	uint32_t shard;
	struct batch_part *parts; /* open parts */
	size_t n, cap;
	uint64_t *decided;        /* refs of the round's COMMITs: (p1)-(p3) after its log write */
	size_t ndecided, cap_decided;
	uint64_t committed, aborted; /* batches this shard decided as primary (INFO) */
	bool again; /* the last round committed a batch this shard holds a part of:
		     * run the next round at once, to resolve it while awake */
};

/* Whether client `slot` of attach generation `gen` is still attached. */
typedef bool (*batch_alive_fn)(void *arg, uint32_t slot, uint32_t gen);

/* What a round's batch work needs of the shard. */
struct batch_round {
	struct shm_writer *w;
	struct stage *stage;
	struct wal *wal;
	struct shm_epoch_slot *const *readers;
	size_t nreaders;
	batch_alive_fn alive;
	void *arg;
};

void batch_init(struct batches *b, struct shm_seg *seg, uint32_t shard);
void batch_destroy(struct batches *b);

/* Stage batch request v of client `slot` (generation `gen`) in the round:
 * returns its wire status (enum shm_chan_status), *seq its log record's
 * seq (0: none). -1: out of private memory (the caller exits). */
int batch_request(struct batches *b, const struct batch_round *r, const struct shm_chan_op_view *v,
		  uint32_t slot, uint32_t gen, uint64_t *seq);

/* The round's log write succeeded and its writes are published: the
 * COMMITs decided in it become visible, and the parts it resolved begin
 * their second grace (dropped at once if no reader is inside). Returns
 * how many parts wait for a grace (as batch_sweep). */
int batch_round_logged(struct batches *b, const struct batch_round *r);

/* Stage what can be resolved now in the round about to gather (above).
 * Returns how many parts wait for something timed (a grace, a decision):
 * the loop must come back within a millisecond or so. -1: out of private
 * memory. */
int batch_sweep(struct batches *b, const struct batch_round *r);

/* The seq of the first record open part i (0 .. b->n - 1) logged: a
 * checkpoint's log replay must start below it (ckpt.c). */
uint64_t batch_part_first_seq(const struct batches *b, size_t i);

#endif
