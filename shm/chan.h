/*
 * chan.h — a client's channel to the shards, and the shards' doorbells.
 *
 * Writes travel from a client to the shard that owns the key over shared
 * memory, never through the control socket. Each attached client has a
 * channel: a memfd of its own, created at attach, mapped read-write by the
 * client, by amorad and by every shard (sent over the shard's socket, or
 * inherited when the shard is forked later). A client can therefore damage
 * only its own channel, and a shard never trusts what it reads there.
 *
 * Channel layout (offsets from the start of the channel memfd):
 *
 *   0                      struct shm_chan_hdr: geometry, the client's epoch
 *                          slot (epoch.h), the cut-off flag
 *   SHM_CHAN_HDR_BYTES + 64*s  struct shm_chan_words of shard s: its "decided"
 *                          word (below), the pending flag and the wake
 *                          word of the doorbell ("Doorbells", below)
 *   shm_chan_sq_mem(s)         shard s's submission ring (SQ: client produces
 *                          requests, shard consumes), then its completion
 *                          ring (CQ: shard produces, client consumes)
 *   shm_chan_bulk_off()        the bulk area: one value too large for a ring
 *                          record (a request with SHM_CHAN_REQ_BULK)
 *
 * Geometry is a function of the shard count alone (shm_chan_bytes), computed
 * by each side for itself: nothing in the header is trusted for layout.
 *
 * SQ record: struct shm_chan_req, then klen key bytes, then (a batch's
 * request, op >= SHM_CHAN_OP_PSET) a struct shm_chan_batch, then vlen
 * value bytes (none when the value is in the bulk area). CQ record:
 * struct shm_chan_cqe.
 * Requests carry an id that grows by one per request on each (client,
 * shard) pair; a completion names the last id of the run it answers.
 *
 * Crash safety. A shard handles a round of requests in this order: stage
 * them (nothing visible), write them to its log, publish them to readers,
 * store in each client's "decided" word the id of the last request of
 * this round that succeeded, then publish the completions and release the
 * SQ space. A request that fails ends its
 * client's turn in the round, so the word never covers a failed request
 * still in the ring. A restarted shard re-reads the requests it had not
 * released. Those with an id up to the decided word were applied and
 * logged: it only completes them again (as SHM_CHAN_OK), it never re-applies
 * them, since another client may have written the same key since. The
 * others were never acknowledged and are applied as new (a failed one may
 * now succeed: nobody saw its first answer). The client drops a completion
 * whose id it has already seen. The word is in the client's own memory: a
 * client that forges it only confuses itself.
 *
 * Doorbells: how a client wakes a sleeping shard, with no memory shared
 * between clients. Per (client, shard) the client's channel holds a pending
 * flag and a futex word (struct shm_chan_words); the shard's "sleeping" flag is
 * in its descriptor in the data segment (struct shm_shard), which clients
 * map read-only; amorad's "registry changed" futex word is in the registry
 * (engine.h), which clients do not map at all.
 *
 *   client, after publishing to shard s (shm_chan_notify):
 *     store_release(pending, 1)                            (d)
 *     fence(seq_cst)
 *     if load(cold) or load(shard.sleeping):
 *         fetch_add(wake, 1); FUTEX_WAKE(&wake)            (e)
 *
 *   shard s, about to sleep (shm_chan_sleep_begin/_add/_wait):
 *     v[i] = load_acquire(wake word of every client it serves, and
 *            amorad's)                                     (a)
 *     store(shard.sleeping, 1)                             (b)
 *     fence(seq_cst)
 *     if a pending flag is set (or the registry moved): do not sleep  (c)
 *     else futex_waitv(every word, expecting v[i])
 *     store(shard.sleeping, 0)
 *   (The words are split between the shard's loop and a watcher thread,
 *   see "Cost and limits"; each compares values loaded in (a). The
 *   re-check (c) reads the flags of the clients whose `cold` is 0; those
 *   whose `cold` is 1 wake the shard after every publish instead.)
 *
 *   shard s, serving: takes a client's flag with one exchange (acquire,
 *   pairs with (d): it then sees the records published before it) and
 *   reads that client's rings.
 *
 * This is ring.h's bell (store, full fence, load on each side), with one
 * futex word per client instead of one per bell: either (c) sees the
 * pending flag, or (e) sees the flag set by (b), and then the bump comes
 * after (a) read the word, so futex_waitv either finds the word changed or
 * is woken. No wake-up is lost, and no futex call is made while the shard
 * is awake. A client the shard does not serve yet is not among its words:
 * amorad publishes the slot, then bumps and wakes its own word (engine.h)
 * before it answers the client, so the shard either re-reads the registry
 * before it sleeps again (it loaded the bumped word, then (c) sees the new
 * registry version) or finds amorad's word changed.
 *
 * What a hostile client can do: set its own flag or bump its own word (the
 * shard wakes and finds its rings empty: a spurious wake-up, as many as
 * the client pays system calls for), clear its own flag or never bump (it
 * delays only itself). It cannot write any other client's words,
 * the sleeping flag or amorad's word, so it cannot delay anyone else. The
 * shard's periodic sweep of every channel (SHM_CHAN_SWEEP_MS) stays as a
 * safety net (and serves a client that left its completion ring full,
 * shardd.c).
 *
 * Cost and limits. futex_waitv(2) (Linux 5.16+; amorad checks at start)
 * waits on at most FUTEX_WAITV_MAX (128) words, and queueing costs time per
 * word (README, "Costs behind the design"), paid at each sleep and again at
 * each wake-up. So a shard's loop waits only on the words of the clients
 * that had work lately, and a watcher thread of the shard keeps one long
 * wait on those of the others, which it renews only when one of them rings
 * (shardd.c, "Sleeping"): a shard serving one busy writer and 60 idle
 * handles sleeps on 3 words, not 62. Nor does it read 60 idle clients'
 * flags in every round (60 cache lines in 60 memfds): it sets `cold` in
 * their words, so they ring after each publish, and it looks at their flags
 * only when the watcher reports a ring (or at a sweep). A client that
 * clears its `cold` delays only itself; one that sets it pays a wake-up
 * call per publish. Going cold, the shard stores `cold` before the full
 * fence of its next sleep and reads the flag once more after it: either it
 * sees the flag, or the client sees `cold` and rings. The loop's wait has
 * two words of the shard's own (amorad's and the watcher's), hence at most
 * SHM_CHAN_MAX_CLIENTS (126) clients; amorad refuses a larger --max-clients
 * (engine.c).
 */
#ifndef AMORA_SHM_CHAN_H
#define AMORA_SHM_CHAN_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/epoch.h"
#include "shm/record.h"
#include "shm/ring.h"

#define SHM_CHAN_MAGIC 0x4e4148434d524f4dULL /* "MORMCHAN" */
#define SHM_CHAN_VERSION 3u /* 3: a completion answers a run of requests */
#define SHM_CHAN_HDR_BYTES 4096u
#define SHM_CHAN_SQ_DATA (64u << 10)         /* SQ data bytes per shard */
#define SHM_CHAN_CQ_DATA (16u << 10)         /* CQ data bytes per shard */
#define SHM_CHAN_BULK_BYTES SHM_VALUE_MAX
#define SHM_CHAN_SWEEP_MS 200                /* shards look at every ring this often */
#define SHM_CHAN_WAIT_WORDS FUTEX_WAITV_MAX  /* 128: words one sleep can wait on */
#define SHM_CHAN_MAX_CLIENTS (SHM_CHAN_WAIT_WORDS - 2) /* two words go to the shard's own (shardd.c) */

/* The attach reply (amorad's AMORA.ATTACH, coordinator/slots.c; read by
 * libclient/attach.c): a RESP array of SHM_CHAN_ATTACH_FIELDS integers
 *   :SHM_CHAN_ATTACH_PROTO :shards :segment-bytes :channel-bytes :slot :generation
 * with SHM_CHAN_ATTACH_FDS descriptors (SCM_RIGHTS): the data segment
 * (read-only) and the client's channel. */
#define SHM_CHAN_ATTACH_PROTO 2 /* 2: no doorbell memfd */
#define SHM_CHAN_ATTACH_FIELDS 6
#define SHM_CHAN_ATTACH_FDS 2

/* Ops. An atomic batch's (shm/batch.h, DESIGN.md §16): PSET and PDEL go
 * to each key's shard and install an intent; COMMIT and ABORT go to the
 * batch's primary; RESOLVE tells a participant its batch is decided.
 * COMMIT, ABORT and RESOLVE carry no key and no value. */
enum shm_chan_op {
	SHM_CHAN_OP_SET = 1,
	SHM_CHAN_OP_DEL = 2,
	SHM_CHAN_OP_PSET = 3,
	SHM_CHAN_OP_PDEL = 4,
	SHM_CHAN_OP_COMMIT = 5,
	SHM_CHAN_OP_ABORT = 6,
	SHM_CHAN_OP_RESOLVE = 7,
};

/* After the key of a batch's request. */
struct shm_chan_batch {
	uint64_t ref;     /* the batch (shm/batch.h) */
	uint32_t primary; /* its primary shard */
	uint32_t zero;    /* must be 0 */
};
#define SHM_CHAN_REQ_BULK 0x1u
#define SHM_CHAN_CUT_BY_AMORAD 0xffffffffu

struct shm_chan_req {
	uint64_t id;
	uint8_t op;      /* enum shm_chan_op */
	uint8_t flags;   /* SHM_CHAN_REQ_BULK: the value is in the bulk area */
	uint16_t zero;   /* must be 0 */
	uint32_t klen;
	uint32_t vlen;
	uint32_t zero2;  /* must be 0 */
};

/* Status of a completion: the wire codes, equal to the amora_err codes
 * (amora.h) they become; libamora checks they agree (libclient/client.h). */
enum shm_chan_status {
	SHM_CHAN_OK = 0,
	SHM_CHAN_ENOTFOUND = -1, /* delete of a missing key */
	SHM_CHAN_EINVAL = -2,    /* key or value size out of range */
	SHM_CHAN_EFULL = -3,     /* no shared memory for it; nothing changed */
	SHM_CHAN_EIO = -6,       /* the log write or sync failed; the shard restarts */
	SHM_CHAN_ECORRUPT = -7,  /* anything else the shard could not do */
	/* A batch's, which libamora retries whole (never returned by it): */
	SHM_CHAN_EBUSY = -64,    /* PSET/PDEL: the key holds another batch's
				  * unresolved intent, or the word still serves
				  * an unresolved batch */
	SHM_CHAN_EABORTED = -65, /* COMMIT, or a part's first PSET/PDEL: the batch
				  * was aborted (a shard holding part of it
				  * restarted) */
};

/* A completion answers `count` requests: ids id - count + 1 .. id, all
 * with `status`. A shard answers a run of consecutive requests of one
 * client that succeeded in one round, logged with consecutive sequence
 * numbers, with one completion, so a buffered stream costs both sides one
 * ring record per run, not per write (if the round's log write then
 * fails, the run is answered SHM_CHAN_EIO whole). */
struct shm_chan_cqe {
	uint64_t id;     /* the last request answered */
	int32_t status;  /* enum shm_chan_status */
	uint32_t count;  /* requests answered, >= 1 */
	uint64_t seq;    /* sequence number the last one got in its shard's log (0: none) */
};

/* Ring bytes one completion takes: the record header (ring.h) and the
 * struct. A shard answers only when its client's CQ has room for this
 * much; libamora keeps fewer than SHM_CHAN_CQ_DATA / SHM_CHAN_CQE_BYTES requests in
 * flight per shard. */
#define SHM_CHAN_CQE_BYTES 32u
_Static_assert(sizeof(struct shm_chan_cqe) + 8 == SHM_CHAN_CQE_BYTES, "a completion is one 32-byte record");

struct shm_chan_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t shard_count;
	uint64_t bytes;
	uint32_t slot;   /* the client slot this channel is */
	uint32_t gen;    /* attach generation of that slot */
	struct shm_epoch_slot epoch;
	/* Shard id + 1 of a shard that cut this client off for garbage, or
	 * SHM_CHAN_CUT_BY_AMORAD (it held a read section far too long). */
	_Alignas(SHM_CACHELINE) _Atomic uint32_t cut_off;
};

/* The words of one (client, shard) pair, in the client's channel, one
 * cache line per shard (shards do not share lines). */
struct shm_chan_words {
	_Atomic uint64_t decided; /* shard: requests up to this id succeeded and are logged */
	_Atomic uint32_t pending; /* client: 1 after publishing; the shard takes it (0) */
	_Atomic uint32_t wake;    /* futex word: bumped by the client to wake the shard */
	_Atomic uint32_t cold;    /* shard: 1 while it looks at `pending` only when woken:
				   * the client bumps `wake` after every publish */
} __attribute__((aligned(SHM_CACHELINE)));

/* Words to wait on at once, each with the value it had (see "Doorbells").
 * Private to the process that waits. */
struct shm_chan_sleep {
	struct futex_waitv w[SHM_CHAN_WAIT_WORDS];
	uint32_t n;
};

/* Bytes of one shard's SQ and CQ memory. */
size_t shm_chan_sq_bytes(void);
size_t shm_chan_cq_bytes(void);

/* Bytes of a channel for `shard_count` shards. */
size_t shm_chan_bytes(uint32_t shard_count);
size_t shm_chan_bulk_off(uint32_t shard_count);

/* Memory of shard s's rings and words inside a channel for `shard_count`
 * shards mapped at `base`. */
void *shm_chan_sq_mem(void *base, uint32_t shard_count, uint32_t s);
void *shm_chan_cq_mem(void *base, uint32_t shard_count, uint32_t s);
struct shm_chan_words *shm_chan_words(void *base, uint32_t s);

/* Format a channel (amorad, while no client or shard uses it): header,
 * epoch slot owned by `pid`, every ring empty. Errors: SHM_EINVAL. */
int shm_chan_format(void *base, uint32_t shard_count, uint32_t slot, uint32_t gen, int32_t pid);

/* --- doorbells (see "Doorbells") --- */

/* Client: tell the shard whose words in our channel are `w` and whose
 * sleeping flag is `sleeping` (its struct shm_shard, read-only for us) that
 * we published requests. Issues the full fence the protocol needs. Returns
 * 1 if it woke the shard (FUTEX_WAKE), 0 if the shard was awake. */
int shm_chan_notify(struct shm_chan_words *w, const _Atomic uint32_t *sleeping);

/* Bump futex word `word` (release: a waiter that loads the new value sees
 * what came before) and wake everybody waiting on it. `private_`: the
 * word is in memory only this process maps (FUTEX_PRIVATE_FLAG). Used for
 * amorad's registry word and a shard's own words. */
void shm_chan_word_wake(_Atomic uint32_t *word, int private_);

/* Empty `z`, then add `word` expecting `expect`, a value the caller loaded
 * (acquire) before announcing the sleep: step (a). Returns SHM_EFULL past
 * SHM_CHAN_WAIT_WORDS words. */
void shm_chan_sleep_begin(struct shm_chan_sleep *z);
int shm_chan_sleep_add(struct shm_chan_sleep *z, _Atomic uint32_t *word, uint32_t expect, int private_);

/* Set *sleeping, issue the full fence, and unless ready(arg) (which
 * re-checks every pending flag and whatever else wakes the shard), wait
 * until a word in `z` differs from its value or is woken, a signal
 * arrives, or CLOCK_MONOTONIC passes `deadline_ns` (< 0: no limit). Clears
 * *sleeping. sleeping and ready may be NULL (a plain wait on the words).
 * Returns 0 (ready, woken, interrupted: the caller re-checks everything),
 * SHM_ETIMEDOUT, or SHM_ESYS (errno set: EFAULT if a word is not mapped,
 * ENOSYS on kernels without futex_waitv; the caller must not retry at
 * once, it would spin). */
int shm_chan_sleep_wait(struct shm_chan_sleep *z, _Atomic uint32_t *sleeping, int (*ready)(void *),
			void *arg, int64_t deadline_ns);

/* Whether this kernel has futex_waitv(2). */
int shm_chan_sleep_supported(void);

/* A request copied out of a ring, checked. key and val point into the
 * caller's copy (or its copy of the bulk area). */
struct shm_chan_op_view {
	uint64_t id;
	uint8_t op;
	uint8_t flags;
	uint32_t klen, vlen;
	const uint8_t *key;
	const uint8_t *val;
	struct shm_chan_batch batch; /* ops >= SHM_CHAN_OP_PSET */
};

/* Check the shape of the request `rec` of `len` bytes (a private copy).
 * SHM_OK: *v is filled (key/value sizes may still exceed the limits: the
 * caller answers those with AMORA_EINVAL). SHM_ECORRUPT: the bytes are not
 * a request (bad op, flags, reserved bytes, lengths that disagree with
 * `len`): the client is broken or hostile. With SHM_CHAN_REQ_BULK the value is
 * not in `rec`: v->val is NULL and the caller copies vlen bytes (checked
 * against SHM_CHAN_BULK_BYTES here) from the bulk area. */
int shm_chan_req_decode(const void *rec, uint32_t len, struct shm_chan_op_view *v);

#endif

