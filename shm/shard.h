/*
 * shard.h — one shard's key/value operations on the shared table.
 *
 * The writer side (struct shm_writer) is what a shard process runs: set and
 * delete build immutable records, publish them in the Swiss table, retire
 * what they replaced and grow the table when it fills. The reader side,
 * shm_shard_get(), is what a client runs directly on the read-only mapping.
 *
 * Writer rules: exactly one shm_writer per shard at a time, used by one
 * thread. A failed set or delete changes nothing readers can see (a grown
 * table is not a change of contents).
 *
 * Reclamation: replaced records and tables go on the writer's retire list.
 * shm_writer_reclaim() seals the pending ones (one global-epoch bump) and
 * frees whatever no reader in w->readers can still see. The owner calls it
 * when it likes (shardd: when idle, DESIGN.md §4); set/delete also call it by themselves every
 * SHM_WRITER_RECLAIM_EVERY writes so memory is recycled even when the
 * caller forgets (or once SHM_WRITER_RECLAIM_BYTES were retired, so large
 * values do not pile up). w->readers must list every reader slot: with no
 * slots listed, reclamation assumes nobody reads.
 */
#ifndef AMORA_SHM_SHARD_H
#define AMORA_SHM_SHARD_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "shm/epoch.h"
#include "shm/record.h"
#include "shm/segment.h"
#include "shm/skiplist.h"
#include "shm/table.h"

#define SHM_WRITER_RECLAIM_EVERY 1024
#define SHM_WRITER_RECLAIM_BYTES (1u << 20) /* ... or once this much was retired */
#define SHM_TABLE_MIN_GROUPS 4
#define SHM_WRITER_PATHS 16 /* index searches run ahead of publication (shm_writer_prefetch) */

/* Who may be reading the shard: every reader's epoch slot (a slot not in
 * use may point at an idle one), and a function that brings the array up
 * to date with readers that appeared since (NULL: the array is always
 * current). The writer calls refresh after each epoch bump and before it
 * looks at the slots, so a reader that appears later entered after the
 * bump and cannot reach what was unlinked before it. */
struct shm_readers {
	struct shm_epoch_slot *const *slots;
	size_t n;
	void (*refresh)(void *arg);
	void *arg;
};

struct shm_writer {
	struct shm_seg *seg;
	struct shm_shard *sh;
	struct shm_retire_list retired;
	size_t since_reclaim;
	uint64_t retired_bytes; /* since the last reclamation */
	/* Reader epoch slots that guard reclamation (struct shm_readers);
	 * the owner keeps the array current, with refresh's help. */
	struct shm_epoch_slot *const *readers;
	size_t nreaders;
	void (*refresh)(void *arg);
	void *refresh_arg;
	uint64_t table_off;     /* the shard's table */
	/* Tables published (set_table), bumped before each publication: the
	 * one field another thread of the writer's process may load (the
	 * checkpoint walk, shardd/ckpt.c, starts over when it moved). */
	_Atomic uint64_t tables;
	uint64_t index_off;     /* its sorted index (shard_index.h), 0: none kept */
	bool index_stale;       /* the index lacks keys: build a complete one */
	uint64_t rng;           /* node heights (skiplist.h) */
	struct shm_skip_tail tail; /* the index's last nodes: appends need no search */
	struct shm_skip_path paths[SHM_WRITER_PATHS]; /* searches of inserts ahead (shard_index.c) */
	uint32_t paths_used;    /* bit i: paths[i] is one */
	uint32_t paths_searching; /* ... and has not found its place yet */
	size_t staged;          /* writes staged and not yet published */
	uint64_t staged_inserts; /* ... of which may insert (a slot is kept for each) */
};

/* A write prepared by shm_writer_stage_set/_del: invisible to readers
 * until shm_writer_publish. */
enum shm_staged_kind {
	SHM_STAGED_SET = 0,
	SHM_STAGED_DEL,
	SHM_STAGED_INTENT, /* an atomic batch's intent, of a set or a delete (batch.h) */
	SHM_STAGED_SETTLE, /* an intent resolved: what replaces it */
	SHM_STAGED_MARK,   /* a sequence number only (a batch's decision or resolution logged) */
};

struct shm_staged {
	uint64_t seq;  /* its sequence number: the shard's seq once published */
	uint64_t h;    /* shm_hash of the key */
	uint64_t rec;  /* a set or intent: its new record; a delete: the record it
			* removes; a settle: what replaces the intent (0: nothing) */
	uint64_t old;  /* an intent: the record it replaces (0: none); a settle: the intent */
	uint64_t node; /* a set that may insert, with an index: its node (shard_index.h) */
	uint8_t kind;  /* enum shm_staged_kind */
	bool del;      /* the key is absent once it is published */
	bool insert;   /* a set that may add a slot (one is kept for it) */
};

/* Become the writer of shard `index` with the readers `r` (NULL: nobody
 * reads), adopting whatever a previous writer left, which may have been
 * killed at any instruction:
 *   1. its table, if it passes the checks a reader makes and lies in the
 *      shard's own memory; else readers are told the shard has no table;
 *   2. list what the table references and check it against the shard's
 *      chunks (slab.h): an entry whose record is not a valid block of the
 *      shard is deleted (*dropped counts them; NULL: not wanted). Until
 *      here the shard's memory is only read;
 *   2b. the sorted index it left, if any (shard_index.h, shm_index_adopt):
 *      validated, repaired against the table, its blocks kept; one that
 *      fails validation is unpublished;
 *   3. wait until every reader that was inside a read section has left
 *      it: memory the previous writer had unlinked but not freed, and
 *      what steps 2 and 2b unlinked, is then unreachable;
 *   4. rebuild the allocator around what is live: all other memory of the
 *      shard is free again, chunks with nothing live go back to the pool;
 *   5. recount the table. With no table, create one sized for
 *      `expected_keys` (may be 0).
 * A shard whose descriptor says `sorted` then needs shm_writer_index_build
 * if it has no index (w->index_off 0) or an incomplete one
 * (w->index_stale): the caller does it after recovery, so that replaying a
 * log into an empty table does not pay an index insert per key.
 * Memory needed: none in the segment beyond what is live; private memory
 * for the list of step 2 (32 to 64 bytes per live key). Errors:
 * SHM_EINVAL (no such shard), SHM_ESYS (no private memory for the list:
 * nothing changed), SHM_ENOMEM (no table could be created). */
int shm_writer_open(struct shm_writer *w, struct shm_seg *seg, uint32_t index,
		    uint64_t expected_keys, const struct shm_readers *r, size_t *dropped);
void shm_writer_close(struct shm_writer *w);

/*
 * Staged writes: publish after the log. A stage call does everything that
 * can fail (builds the record, makes room in the table, reserves the retire
 * list) and changes nothing readers can see; it returns the write's
 * sequence number in s->seq for the caller to log. shm_writer_publish then
 * makes it visible and cannot fail in a correct program. Rules:
 *   - publish every staged write, in the order staged, before any other
 *     write call (shm_writer_set/_del/_rebuild); or publish none of them
 *     and stop writing: a writer that never publishes is abandoned (the
 *     next shm_writer_open gives their records back);
 *   - a write of a key that already has a write staged names the latest
 *     one as `prev` (else NULL): the table does not show it yet, so the
 *     writer decides from prev (a delete after a staged delete is
 *     SHM_ENOTFOUND, after a staged set it removes that set's record).
 *     The caller keeps track of the staged keys (shardd/stage.h).
 * Errors: stage_set as shm_writer_set; stage_del as shm_writer_del;
 * publish returns SHM_OK, or SHM_ECORRUPT when the rules were broken
 * (nothing changed then).
 */
int shm_writer_stage_set(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			 const void *val, uint32_t vlen, const struct shm_staged *prev,
			 struct shm_staged *s);
int shm_writer_stage_del(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			 const struct shm_staged *prev, struct shm_staged *s);
int shm_writer_publish(struct shm_writer *w, const struct shm_staged *s);

/*
 * Atomic batches (batch.h). An intent is staged and published like a set:
 * the table and the index then reference the intent, which keeps the
 * record it replaces (`prev`, its trailer) allocated; readers settle it
 * (shm_kv_settle). A later set or delete of the key replaces the intent
 * like any record and retires its prev with it.
 *
 * stage_intent: an intent of batch `ref`, a delete one when `del` (val and
 * vlen unread). Errors: as stage_set; SHM_ENOTFOUND (a delete of an absent
 * key: nothing staged, nothing to do); SHM_EBUSY (the key holds an intent
 * of a batch, any batch: the caller's batch conflicts and is aborted).
 *
 * stage_settle: resolve the intent at `intent`: committed, a plain copy of
 * it (same key, value and seq) replaces it, or for a delete intent the key
 * goes; aborted, its prev comes back, or the key goes if it had none. No
 * write of the key may be staged in the round. Errors: SHM_ENOTFOUND (the
 * table holds another record for the key: a later write replaced the
 * intent, nothing to do), SHM_ENOMEM (no room for the copy), SHM_ECORRUPT
 * (not an intent).
 *
 * stage_mark: a sequence number for a log record that changes no key.
 */
int shm_writer_stage_intent(struct shm_writer *w, const void *key, uint32_t klen, uint64_t h,
			    const void *val, uint32_t vlen, bool del, uint64_t ref,
			    const struct shm_staged *prev, struct shm_staged *s);
int shm_writer_stage_settle(struct shm_writer *w, uint64_t intent, bool commit,
			    struct shm_staged *s);
void shm_writer_stage_mark(struct shm_writer *w, struct shm_staged *s);
/* Start loading what publishing s will touch first (its key's group), so
 * that publishing a round overlaps its cache misses; for a set that may
 * insert, with an index, also begin its index search, which each later
 * publication advances a step (up to SHM_WRITER_PATHS at once). Changes
 * nothing readers can see. */
void shm_writer_prefetch(struct shm_writer *w, const struct shm_staged *s);

/* Stage and publish at once. Insert or replace. Out of memory (for the record or a bigger table), it
 * first frees what readers no longer see (shm_writer_reclaim_wait) and tries
 * once more. Errors: SHM_EINVAL (klen 0
 * or > SHM_KEY_MAX, vlen > SHM_VALUE_MAX), SHM_ENOMEM (nothing changed). */
int shm_writer_set(struct shm_writer *w, const void *key, uint32_t klen, const void *val,
		   uint32_t vlen);

/* Stage and publish at once. Remove. Errors: SHM_ENOTFOUND, SHM_EINVAL, SHM_ENOMEM (nothing changed). */
int shm_writer_del(struct shm_writer *w, const void *key, uint32_t klen);

/* The writer's own lookup (no epoch needed: it frees nothing meanwhile).
 * Errors: SHM_ENOTFOUND, SHM_EINVAL. */
int shm_writer_get(struct shm_writer *w, const void *key, uint32_t klen, struct shm_kv *kv);

/* Call fn for every key of the table, in table order; fn may delete the
 * key it is given (a delete leaves a tombstone, the walk goes on), but
 * must not insert. Stops at the first non-zero return and returns it. */
int shm_writer_each(struct shm_writer *w, int (*fn)(void *arg, const struct shm_kv *kv), void *arg);

/* Seal pending retirements and free what readers can no longer see.
 * Returns the number of blocks freed. */
size_t shm_writer_reclaim(struct shm_writer *w);

/* After an allocation failed: free what readers no longer see; if they
 * still see all of it, wait up to SHM_WRITER_ROOM_WAIT_NS for them to
 * leave the sections they are in (a lookup, a checkpoint's walk step: a
 * reader preempted inside one must not make a store with room look full),
 * then free again. True if a block was freed (worth trying once more). */
#define SHM_WRITER_ROOM_WAIT_NS 100000000ull
bool shm_writer_reclaim_wait(struct shm_writer *w);

/* Free everything retired, waiting for readers to leave the sections they
 * are in (shm_epoch_wait): for a writer that ran out of memory while much
 * waits to be freed. */
void shm_writer_drain(struct shm_writer *w);

/* Build the sorted index from the table (its keys sorted, then the skip
 * list in one pass: skiplist.h, shm_skip_build), name each record's node,
 * publish it in the descriptor (release) and retire the one it replaces.
 * Private memory: 40 bytes per key while it runs. Errors: SHM_ENOMEM (no
 * shared memory for it: nothing changed), SHM_ESYS (no private memory),
 * SHM_ECORRUPT (the table holds a key twice). */
int shm_writer_index_build(struct shm_writer *w);

/* Turn Bloom-filter use by readers on or off. The filter is kept only
 * while it is on (an insert with it off costs no filter write, a table
 * built with it off has no filter area: ~2 B per key less); turning it on
 * first gives the table a filter (a rebuild at the same size, if it has
 * none) filled from its slots, then tells readers (release), so a reader
 * never consults a filter missing a key. Turning it off keeps the area
 * until the next rebuild. Errors: SHM_ENOMEM (no memory for a table with
 * a filter: it stays off). */
int shm_writer_set_bloom(struct shm_writer *w, bool on);

/* Rebuild the table with `ngroups` groups (enough for the live keys):
 * drops tombstones and refreshes the Bloom filter. Errors: SHM_EINVAL (0
 * groups, or more than SHM_TABLE_MAX_GROUPS), SHM_ENOMEM (no memory, or
 * too few groups for the live keys); nothing changed. */
int shm_writer_rebuild(struct shm_writer *w, uint64_t ngroups);

/* Reader: look `key` (h = shm_hash(key)) up in shard `sh`; *kv points
 * into the segment and stays valid while the caller's epoch is held. It
 * is the version a single get sees (an intent settled with SHM_BATCH_ANY,
 * batch.h). Errors: SHM_ENOTFOUND, SHM_EINVAL (bad key length),
 * SHM_ECORRUPT (the table fails validation). */
int shm_shard_get(const struct shm_seg *seg, const struct shm_shard *sh, const void *key,
		  uint32_t klen, uint64_t h, struct shm_kv *kv);

/* Reader, in two steps (for multi-get): the validated view of shard sh's
 * current table, then a lookup in it, settled for start number s
 * (batch.h: SHM_BATCH_ANY, or a multi-key read's shm_batch_start).
 * Errors as shm_shard_get. */
int shm_shard_view(const struct shm_seg *seg, const struct shm_shard *sh,
		   struct shm_table_view *v);
int shm_shard_find(const struct shm_seg *seg, const struct shm_shard *sh,
		   const struct shm_table_view *v, const void *key, uint32_t klen, uint64_t h,
		   uint64_t s, struct shm_kv *kv);

/* A shard's counters as loaded (segment.h, struct shm_shard_counters). */
struct shm_write_counts {
	uint64_t requests, log_writes, log_records, log_bytes, log_syncs;
	uint64_t batches_committed, batches_aborted, batch_parts_recovered;
};

/* A shard's checkpoint words (segment.h, struct shm_shard: ckpt_*). */
struct shm_ckpt_counts {
	uint64_t checkpoints;  /* written since amorad started */
	uint64_t seq;          /* the newest one covers (summed: meaningless) */
	uint64_t bytes;        /* its file's size */
	uint64_t log_disk;     /* log bytes on disk (an estimate) */
};

/* One shard as INFO's # Shards line and amora_shard_stats report it. The
 * table is validated before its header is read; hold an epoch (a reader)
 * so that a table freed meanwhile is not read. Each field is loaded on its
 * own (segment.h, "Counters"): the whole is no snapshot. */
struct shm_shard_stats {
	uint32_t state;           /* enum shm_shard_state (acquire) */
	uint32_t cause;           /* enum shm_fail_cause, loaded after state; NONE unless FAILED */
	uint32_t restarts;
	uint64_t keys;            /* live keys of its table (0: no valid table) */
	uint64_t used_bytes;      /* segment bytes it has written (slab.h) */
	uint64_t requested_bytes; /* bytes asked for by its records and tables */
	struct shm_write_counts w;
	struct shm_ckpt_counts ck;
};
/* Shard i (< shard_count) of seg. */
void shm_shard_stats(const struct shm_seg *seg, uint32_t i, struct shm_shard_stats *out);

/* The shards of a segment, summed (amora_stats, INFO); same rules. */
struct shm_store_stats {
	uint64_t keys;            /* live keys */
	uint64_t used_bytes;      /* segment bytes the shards have written (slab.h) */
	uint64_t requested_bytes; /* bytes asked for by records and tables */
	uint32_t ready, failed;   /* shards in those states */
	uint32_t loading;         /* shards STARTING or RESTARTING (recovering their log) */
	struct shm_write_counts w; /* summed */
	struct shm_ckpt_counts ck; /* summed (but seq) */
};
void shm_store_stats(const struct shm_seg *seg, struct shm_store_stats *out);

/* Shard that owns a key hash among `shard_count` (a power of two). Uses the
 * high hash bits, which the table does not use for placement. */
static inline uint32_t shm_shard_of(uint64_t h, uint32_t shard_count)
{
	return (uint32_t)(h >> 52) & (shard_count - 1);
}

/* A key's hash tag, as Redis Cluster defines it: if the key holds a '{'
 * and a '}' after the first '{', with at least one byte between the first
 * '{' and the first '}' after it, those bytes (*tlen of them); else NULL.
 * "{user:42}:name" -> "user:42"; "{}x", "{x", "x}" -> NULL; "a{b}{c}" ->
 * "b"; "{{a}}" -> "{a". */
static inline const uint8_t *shm_key_tag(const void *key, size_t klen, size_t *tlen)
{
	const uint8_t *k = key, *open = memchr(k, '{', klen), *close;

	if (open == NULL)
		return NULL;
	close = memchr(open + 1, '}', klen - (size_t)(open + 1 - k));
	if (close == NULL || close == open + 1)
		return NULL;
	*tlen = (size_t)(close - open - 1);
	return open + 1;
}

/* Shard of `key` (h = shm_hash(key)) among `shard_count` under
 * `placement` (enum shm_placement, segment.h): with SHM_PLACE_TAGS a key
 * with a hash tag goes where its tag would, so "{user:42}:name" and
 * "{user:42}:mail" share a shard (the table still hashes the whole key). */
static inline uint32_t shm_place(const void *key, size_t klen, uint64_t h, uint32_t shard_count,
				 uint32_t placement)
{
	size_t tlen = 0;
	const uint8_t *tag = placement == SHM_PLACE_TAGS ? shm_key_tag(key, klen, &tlen) : NULL;

	return shm_shard_of(tag != NULL ? shm_hash(tag, tlen) : h, shard_count);
}

#endif
