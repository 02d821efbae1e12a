/*
 * batch.h — atomic batches in shared memory: status words and intents
 * (DESIGN.md §16).
 *
 * A batch writes keys of several shards. Each shard's part is installed
 * in its table as *intents*: records flagged SHM_REC_INTENT (record.h)
 * whose trailer names the version they replace (`prev`) and the batch's
 * status word. The word decides for every intent at once: the batch
 * becomes visible everywhere with one store.
 *
 * Words. The segment holds SHM_BATCH_SLOTS x SHM_BATCH_WORDS words (one
 * set per client slot, segment.h "batch_off"). A batch is named by a ref:
 *
 *     ref = tag << 16 | slot << 6 | word      (tag 1 .. 2^40 - 1)
 *
 * and a word serves the batches of one client slot, one at a time, each
 * with the next tag.
 *
 *     state    tag << 24 | shard << 4 | st: who decided, and how:
 *              SHM_BATCH_COMMITTING the primary `shard` is logging the
 *                                   decision (readers: undecided)
 *              SHM_BATCH_CLAIMING   the decision is logged; the commit
 *                                   number is being taken (a few stores)
 *              SHM_BATCH_COMMITTED  commit holds the batch's number C
 *              SHM_BATCH_ABORTED    by the primary (the client asked, or
 *                                   died) or by a participant (the
 *                                   client died, or the participant
 *                                   restarted before the decision)
 *              A word whose tag is not the intent's says nothing of that
 *              intent's batch: undecided (or, for an older tag, long
 *              resolved; see "Reuse").
 *     commit   C, stored before COMMITTED (release), read after it
 *     holders  the tag `mask` speaks of, and
 *     mask     a bit per shard holding unresolved intents of that tag:
 *              a shard sets and clears its own bit only, so a restarted
 *              shard may clear it again without harm
 *
 * Who writes: `state` moves out of the previous tag's final state by one
 * CAS, either to COMMITTING by the primary or to ABORTED by anyone
 * allowed to abort; so a batch is aborted only before its primary began
 * to commit it, and committed only if nobody aborted it first. Afterwards
 * only the primary (any incarnation) writes `state` and `commit`. The
 * participants write `holders` (CAS) and their own bit of `mask`. Nobody clears a word: a
 * client that gets the slot next goes on with the word's next tag.
 *
 * The primary commits (shardd/batch.c):
 *     CAS state: last tag final -> tag|COMMITTING                (p0)
 *     log DECISION (a primary that restarts with COMMITTING in a word
 *     finds out from its log: DECISION there -> (p1)-(p3), else ABORTED)
 *     store state = tag|CLAIMING (release)                       (p1)
 *     C = fetch_add(hdr.commit_no, 1) + 1 (seq_cst)              (p2)
 *     store commit = C; store state = tag|COMMITTED (release)    (p3)
 *
 * Readers (shm_kv_settle). A plain record is read as ever. An intent's
 * value is visible to a reader with start number S iff its word says
 * COMMITTED for its tag with C <= S; otherwise the reader sees `prev`
 * (none: the key is absent), and a delete intent (SHM_REC_TOMB) that is
 * visible says the key is absent. S is SHM_BATCH_ANY for a single get
 * (every committed batch is visible; a CLAIMING one is not yet), or for a
 * multi-key read (mget, an iterator) hdr.commit_no loaded with acquire at
 * its start (shm_batch_start). Such a reader that meets CLAIMING waits
 * until the word is COMMITTED (p2-p3 are a few instructions; a primary
 * killed between them is restarted and finishes them): it cannot tell
 * otherwise whether C <= S. Why no multi-key read sees a batch in part:
 *   - undecided or ABORTED when read: if the read's S load came after
 *     (p2), it synchronized with (p2) and so sees (p1) or later: a word
 *     still undecided means C > S. So every intent of the batch is
 *     invisible to this read, also those it reads after (p3).
 *   - COMMITTED with C <= S: visible in every intent it reads; those it
 *     read before were visible too (C <= S was fixed before the read).
 *   - a key whose intent is resolved into a plain record: resolution
 *     waits until no reader with S < C can be running (below), so such a
 *     reader never meets the plain record.
 * A single get sees a batch once (p3) happened. A later multi-key read
 * of the same process then loads S >= C (its load happens after (p2));
 * of another process too, on x86, whose stores become visible to all
 * CPUs at once (C11 alone would allow an older value): once one process
 * read a batch's value, later reads see the batch.
 *
 * Resolution. A participant turns its intents into plain records once the
 * word is final: ABORTED, prev goes back (at once); COMMITTED, a plain
 * copy replaces the intent, only after an epoch grace that began after it
 * saw COMMITTED (every mget with S < C ran in a section that began
 * before) and once no open iterator started before C (each client
 * publishes its oldest open iterator's S in its epoch slot,
 * shm_epoch_slot.iter_start). Then, after a second epoch grace (no reader
 * still holds one of the intents it replaced, and so none can read the
 * word after it moves on to the next batch: a reader checks an intent's
 * word, then its commit number), it clears its bit.
 *
 * Reuse. A client starts a word's next batch (tag + 1) only when its
 * state is final for the last tag and no bit of `mask` is set. A
 * participant asked to install an intent of tag t moves `holders` from an
 * older tag to t (CAS) if no bit is set, or finds it at t, and sets its bit;
 * anything else is refused (busy: the previous batch is still being
 * resolved somewhere).
 */
#ifndef AMORA_SHM_BATCH_H
#define AMORA_SHM_BATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "shm/epoch.h"
#include "shm/record.h"
#include "shm/segment.h"

#define SHM_BATCH_SLOTS 128u /* client slots with words (>= SHM_CHAN_MAX_CLIENTS) */
#define SHM_BATCH_WORDS 64u  /* words per client slot: batches it may have open */
#define SHM_BATCH_ANY UINT64_MAX /* a start number that sees every committed batch */
#define SHM_BATCH_TAG_MAX ((1ULL << 40) - 1)

enum shm_batch_st {
	SHM_BATCH_UNDECIDED = 0, /* for this tag: a word's initial state */
	SHM_BATCH_COMMITTING = 1,
	SHM_BATCH_CLAIMING = 2,
	SHM_BATCH_COMMITTED = 3,
	SHM_BATCH_ABORTED = 4,
};

#define SHM_BATCH_MASK_WORDS (SHM_MAX_SHARDS / 64)

struct shm_batch_word {
	_Atomic uint64_t state;   /* tag << 24 | shard << 4 | st */
	_Atomic uint64_t commit;  /* C once COMMITTED */
	_Atomic uint64_t holders; /* the tag mask is about */
	uint64_t pad_;
	_Atomic uint64_t mask[SHM_BATCH_MASK_WORDS]; /* bit s: shard s holds intents of it */
};

static inline uint64_t shm_batch_ref(uint64_t tag, uint32_t slot, uint32_t word)
{
	return tag << 16 | (uint64_t)slot << 6 | word;
}
static inline uint64_t shm_batch_ref_tag(uint64_t ref) { return ref >> 16; }
static inline uint32_t shm_batch_ref_slot(uint64_t ref) { return (uint32_t)(ref >> 6) & 1023u; }
static inline uint32_t shm_batch_ref_word(uint64_t ref) { return (uint32_t)ref & 63u; }

/* The word a ref names, or NULL if the ref is malformed (tag 0, slot out
 * of range): safe on refs read from shared memory or rings. */
struct shm_batch_word *shm_batch_word(const struct shm_seg *seg, uint64_t ref);

/* The state the word gives the batch `ref` (enum shm_batch_st; UNDECIDED
 * when the word is on another tag), *c its commit number once COMMITTED,
 * *by the shard that moved it there (may be NULL). Acquire: what that
 * shard stored before is visible. */
int shm_batch_status(const struct shm_batch_word *w, uint64_t ref, uint64_t *c, uint32_t *by);

/* A multi-key read's start number (above). */
static inline uint64_t shm_batch_start(const struct shm_seg *seg)
{
	return atomic_load_explicit(&seg->hdr->commit_no, memory_order_acquire);
}

/* Whether an intent of `ref` is visible to a reader with start number s:
 * 1 yes, 0 no. A multi-key reader (s != SHM_BATCH_ANY) waits out
 * CLAIMING, yielding the CPU; SHM_ECORRUPT for a malformed ref. */
int shm_batch_visible(const struct shm_seg *seg, uint64_t ref, uint64_t s);

/* The version of kv's record a reader with start number s sees (above):
 * kv itself (a plain record, or a visible intent of a set), its prev (the
 * view replaced by prev's), or none. Returns SHM_OK, SHM_ENOTFOUND (no
 * version: a visible delete intent, or an invisible intent with no
 * prev), SHM_ECORRUPT (a malformed ref, or a prev that fails its checks
 * or is an intent). Safe on records read from shared memory; hold the
 * epoch as for the record. */
int shm_kv_settle_slow(const struct shm_seg *seg, struct shm_kv *kv, uint64_t s);
static inline int shm_kv_settle(const struct shm_seg *seg, struct shm_kv *kv, uint64_t s)
{
	return __builtin_expect(kv->intent == NULL, 1) ? SHM_OK : shm_kv_settle_slow(seg, kv, s);
}

/* ---- the primary (shardd/batch.c) ---- */

/* (p0): true, or false when the batch was aborted (or the word is on
 * another batch: a stale or early ref). */
bool shm_batch_begin_commit(struct shm_batch_word *w, uint64_t ref, uint32_t shard);
/* (p1)-(p3): the decision is logged. Returns C. */
uint64_t shm_batch_commit(struct shm_seg *seg, struct shm_batch_word *w, uint64_t ref,
			  uint32_t shard);
/* Abort batch `ref` unless its primary began to commit it: true when it
 * is ABORTED now (by us or before), false when COMMITTING or past it. By
 * the primary after a COMMITTING it finds no DECISION for, also. */
bool shm_batch_abort(struct shm_batch_word *w, uint64_t ref, uint32_t shard);

/* ---- participants ---- */

/* Count `shard` as holding intents of `ref`'s batch (the first intent it
 * installs): true, or false when the word still serves an earlier batch
 * that some shard has not resolved, or a later one (the client reused it
 * too early, or sent a stale ref). */
bool shm_batch_hold(struct shm_batch_word *w, uint64_t ref, uint32_t shard);
/* `shard` resolved all its intents of `ref`'s batch (again after a
 * restart: harmless; nothing once the word serves another batch). */
void shm_batch_release(struct shm_batch_word *w, uint64_t ref, uint32_t shard);

/* Whether a participant may now resolve its intents of a committed batch
 * with number c into plain records ("Resolution" above): e is the epoch
 * it bumped (shm_epoch_bump) after it saw the word COMMITTED, min what
 * shm_epoch_min(slots, n) returned since: every reader among `slots` has
 * left the sections it was in then, and none has an open iterator that
 * started before c. Never waits. */
bool shm_batch_settle_ready(struct shm_epoch_slot *const *slots, size_t n, uint64_t min, uint64_t e,
			    uint64_t c);

/* Whether a client may start batch `ref` on its word: the word's last
 * batch (tag - 1) is final and held by no shard. */
bool shm_batch_reusable(const struct shm_batch_word *w, uint64_t ref);

#endif
