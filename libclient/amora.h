/*
 * amora.h — the Amora client library (libamora).
 *
 * Amora is a key-value store shared by several processes on one machine. A
 * coordinator process (amorad) owns the store; a client attaches to it
 * through its control socket (amora_open) and from then on:
 *
 *   - reads (amora_get, amora_has, amora_mget) go straight to the store's
 *     shared memory, mapped read-only into the client: no system call, no
 *     message, no lock. A read sees every write that was acknowledged (its
 *     amora_set/amora_del/amora_flush returned) before the read began, in
 *     any process.
 *   - writes (amora_set, amora_del, amora_set_buffered) travel over
 *     lock-free rings in shared memory to the shard process that owns the
 *     key. amora_set and amora_del return once the write is applied and as
 *     durable as the store's sync mode promises:
 *       always    on disk (fdatasync) before the call returns;
 *       periodic  written to the log before the call returns, on disk
 *                 within 100 ms: a crash of any process loses nothing that
 *                 was acknowledged, a power cut at most the last interval;
 *       none      in memory only.
 *
 * Keys are 1..AMORA_KEY_MAX bytes, values 0..AMORA_VALUE_MAX bytes; both
 * are arbitrary bytes. An empty value is a value: amora_get finds it.
 *
 * Threads: a handle is used by one thread at a time (like a SQLite
 * connection); open one handle per thread. Handles are independent. A
 * handle must not be used in a child after fork(): open a new one there.
 *
 * Errors: every function that can fail returns 0 (or a documented
 * non-negative result) on success and a negative AMORA_E* code on failure;
 * amora_strerror() names the code and amora_errmsg() gives the message of
 * the handle's last failure with its cause ("key is 5000 bytes, the limit
 * is 4096"). A failed write changes nothing that lasts, with one exception
 * spelled out at AMORA_ERESTARTING. (A shard publishes a write to readers
 * only once its log write returned: if the log write fails, the writer
 * gets AMORA_EIO and no reader ever saw the value.) No call blocks
 * forever: waits for a shard are
 * bounded by the handle's timeout (amora_set_timeout, default 10 s).
 *
 * Version: AMORA_VERSION_MAJOR, _MINOR, _PATCH and AMORA_VERSION_STRING
 * ("0.2.0") are the version of this header; amora_version() gives that of
 * the library a program runs with. libamora.so's SONAME is
 * libamora.so.MAJOR: a new major version is one a program must be rebuilt
 * for. (In this tree the numbers live in shm/version.h, included below;
 * the installed amora.h carries them inline and includes no other header of
 * Amora's.) The shared library exports the amora_* functions declared here
 * and nothing else.
 *
 * Caveats:
 *
 *   - One handle per thread. A handle has no lock: two threads calling
 *     libamora on one handle at once break its single-producer rings (the
 *     shard then cuts the handle off, AMORA_EBADRING) or its state. Open a
 *     handle for each thread; handles are independent.
 *   - At most 126 handles at once on one store, over all processes: each
 *     takes one of amorad's client slots, --max-clients (default 64, at
 *     most 126: a shard sleeps on every client's futex word and two of its
 *     own with one futex_waitv, which takes at most 128). amora_open
 *     beyond it fails with AMORA_EBUSY; more threads than that share a
 *     pool of handles.
 *   - fork(): the child inherits the handle's mappings and rings, but it
 *     is not a client of its own. Neither use nor amora_close the inherited
 *     handle in the child (closing flushes buffered writes into the
 *     parent's rings); open a new handle there. exec() drops the handle
 *     (its socket is close-on-exec).
 *   - Read sections are bounded. A read (amora_get, amora_get_alloc,
 *     amora_has, amora_mget with its callbacks) announces an epoch that
 *     keeps the shards from freeing memory; a handle that stays inside one
 *     read for amorad's --reader-timeout-ms (default 10 s: the process was
 *     stopped by a signal or a debugger inside a read, a callback blocked)
 *     is cut off: amorad detaches it, its writes fail with AMORA_EBADRING
 *     and it can only be closed (its reads are not refused, but nothing
 *     guards them against reclamation any more: open a new handle). Many
 *     short reads are never cut off.
 *   - The memory limit. amorad's --memory is the store's limit, counting
 *     record headers, tables and free space inside chunks as well as keys
 *     and values (expect to store at least three quarters of it as live
 *     data). A write that does not fit fails with AMORA_EFULL and changes
 *     nothing: the old value, if any, stays. Reads and deletes go on, and
 *     what deletes and overwrites free is reused once no reader can still
 *     see it.
 *   - A value is visible once its shard's log holds it (the log write
 *     returned; with --sync always, the fdatasync too), a moment before its
 *     writer is answered: a reader may see a write not yet acknowledged,
 *     but never one that a failed log write (the writer gets AMORA_EIO) or
 *     a crash of any process takes back (what the log holds survives it;
 *     a power cut may still take back the last --sync-interval-ms of
 *     periodic mode, and mode none keeps nothing across an amorad restart). What is guaranteed: a read sees every write
 *     acknowledged before it began.
 *   - Outcomes that are unknown: AMORA_ERESTARTING and AMORA_ETIMEDOUT
 *     leave a write queued that may still be applied; a delete that
 *     removed its key and was logged just before its shard was killed is
 *     applied again after the restart and reports AMORA_ENOTFOUND.
 *   - Reads do not notice that amorad is gone: they answer from the
 *     mapping as the store was when it went (writes fail with AMORA_EGONE).
 *   - The store's own limits (README, "Known limits"): recovery keeps 64
 *     to 128 bytes of private memory per distinct key of a shard's newest
 *     checkpoint and the log after it; a shard killed in the instant between taking
 *     a 2 MiB chunk from the pool and recording it as its own (or between
 *     the reverse steps) loses that chunk until amorad restarts; tables
 *     larger than 2 MiB take runs of chunks that come only from never-used
 *     chunks; after a restart, amora_stats' memory_used counts the tail of
 *     one chunk per shard as never written, which it may have been.
 *   - Atomic batches (amora_batch) contend: a batch meeting another
 *     batch's unresolved write on one of its keys is retried after a
 *     random pause, so batches on hot keys serialize (and one that keeps
 *     meeting them fails with AMORA_ETIMEDOUT, having changed nothing); an
 *     iterator left open delays the clean-up of batches committed after
 *     it began; `keys` in the stats counts a key a pending batch creates.
 *     A batch uses one of 64 status words of its handle's slot, reused
 *     once every shard resolved the batch before.
 *   - Linux only, one machine: amorad needs Linux 5.16 or later
 *     (futex_waitv).
 */
#ifndef AMORA_H
#define AMORA_H

#include <stddef.h>
#include <stdint.h>

#include "shm/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What libamora.so exports (it is built with -fvisibility=hidden). */
#if defined(__GNUC__)
#define AMORA_API __attribute__((visibility("default")))
#else
#define AMORA_API
#endif

#define AMORA_KEY_MAX 4096u
#define AMORA_VALUE_MAX (1u << 20)

enum amora_err {
	AMORA_OK = 0,
	AMORA_ENOTFOUND = -1,  /* no such key (get, del) */
	AMORA_EINVAL = -2,     /* invalid argument: empty or over-long key, over-large
				* value, NULL where data is required */
	AMORA_EFULL = -3,      /* the store's memory limit is reached; nothing changed */
	AMORA_EGONE = -4,      /* the coordinator is gone (stopped or killed); the
				* handle can only be closed */
	AMORA_ERESTARTING = -5,/* the owning shard is restarting and did not come back
				* within the timeout. The write is still queued: it
				* may be applied once the shard is back (like a
				* network timeout, its outcome is unknown) */
	AMORA_EIO = -6,        /* the shard could not write its log (disk full, I/O
				* error); the write was not applied */
	AMORA_ECORRUPT = -7,   /* shared data or a reply failed validation */
	AMORA_ESYS = -8,       /* a system call failed; amora_errmsg names it */
	AMORA_EPROTO = -9,     /* the control socket answered something unexpected */
	AMORA_EDENIED = -10,   /* the coordinator refused this user (allowed uids/gids) */
	AMORA_EBUSY = -11,     /* the coordinator has no free client slot (max
				* clients) or refused the connection (too many,
				* in total or for this uid) */
	AMORA_EBADRING = -12,  /* cut off: a shard found garbage in this client's
				* rings, or amorad saw its epoch slot keep every
				* shard from freeing memory for --reader-timeout-ms
				* (10 s: stopped, stuck in an amora_mget callback);
				* the handle can only be closed */
	AMORA_ETIMEDOUT = -13, /* a serving shard did not answer within the timeout
				* (overload); outcome unknown, as AMORA_ERESTARTING */
	AMORA_EFAILED = -14,   /* the key's shard stopped and will not restart:
				* corruption inside its log, not enough shared memory
				* to recover its data, or it could not start.
				* amora_errmsg names the shard and the cause ("shard 3
				* stopped: corrupt log (see amorad's log)"), amorad's
				* log the details. Every read and write of its keys
				* fails so until amorad is restarted (a missing key
				* is never reported as AMORA_ENOTFOUND: the shard
				* cannot vouch for it); the other shards serve on */
	AMORA_ENOTSUP = -15,   /* the store does not do this: scans of a store
				* whose amorad runs with --sorted-index off */
};

typedef struct amora amora;

/* Attach to the amorad listening on the Unix socket `socket_path`
 * (amorad --data-dir DIR listens on DIR/amora.sock). On success *out is a
 * new handle. Errors: AMORA_EINVAL (NULL, path too long), AMORA_ESYS
 * (cannot connect: no such socket, permission denied, nobody listening;
 * errno is the system call's), AMORA_EPROTO (an unexpected answer or
 * refusal), AMORA_EDENIED, AMORA_EBUSY (no free client slot, too many
 * connections), AMORA_ETIMEDOUT (no reply within 10 s: a stopped
 * coordinator). On failure *out is NULL; amora_strerror names the
 * code and amora_errmsg(NULL) gives the message with its cause ("cannot
 * connect to amora-data/amora.sock: No such file or directory"). */
AMORA_API int amora_open(const char *socket_path, amora **out);

/* Flush buffered writes (as amora_flush; its result is returned), detach
 * and free the handle. NULL is accepted. */
AMORA_API int amora_close(amora *db);

/* Bound, in milliseconds, on any wait for a shard (default 10000). A
 * value <= 0 restores the default. */
AMORA_API void amora_set_timeout(amora *db, int timeout_ms);

/* --- reads: direct, lock-free --- */

/* Look `key` up. On success copies min(*vlen, cap) bytes of the value
 * into `buf` (which may be NULL when cap is 0) and sets *vlen to the
 * value's full length: a caller with a short buffer sees *vlen > cap and
 * can call again with a larger one. Errors: AMORA_ENOTFOUND, AMORA_EINVAL,
 * AMORA_EFAILED (the key's shard stopped), AMORA_ECORRUPT. Reads need no
 * coordinator: after it is gone they still answer from the mapping, as
 * the store was when it went. */
AMORA_API int amora_get(amora *db, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen);

/* As amora_get, into a buffer from malloc() (*val, free it with free();
 * a zero-length value still gets a 1-byte allocation). */
AMORA_API int amora_get_alloc(amora *db, const void *key, size_t klen, void **val, size_t *vlen);

/* 1 if `key` exists, 0 if not, or a negative error (AMORA_EINVAL,
 * AMORA_EFAILED, AMORA_ECORRUPT, as amora_get). */
AMORA_API int amora_has(amora *db, const void *key, size_t klen);

/* Called by amora_mget for each key found: `val` points into the shared
 * store and is valid only during the call. The callback must not call
 * libamora on the same handle. */
typedef void (*amora_mget_fn)(void *arg, size_t index, const void *val, size_t vlen);

/* Look up `n` keys at once, overlapping their memory accesses; fn is
 * called for each key found (in index order). Returns the number found,
 * or a negative error: AMORA_EINVAL if any key is invalid (then fn was not
 * called at all; amora_errmsg names the first bad key by index and says
 * why: "key 1: key is 5000 bytes, the limit is 4096"), AMORA_EFAILED (a
 * key's shard stopped) or AMORA_ECORRUPT: then fn was called for the keys
 * found before the one that failed, and amora_errmsg names its index
 * ("key 7: shard 3 stopped: corrupt log (see amorad's log)"). */
AMORA_API int amora_mget(amora *db, size_t n, const void *const keys[], const size_t klens[],
			 amora_mget_fn fn, void *arg);

/* --- scans: ordered iteration over the sorted index ---
 *
 * Every shard keeps its keys in a sorted index beside its table (amorad
 * --sorted-index on, the default); a scan merges the shards' indexes in
 * the client, straight from shared memory like the other reads. Key order:
 * unsigned bytes, memcmp over the shorter length, then the shorter key
 * first ("a" < "a\0" < "ab" < "b").
 *
 * Guarantee (as of one scan, from amora_iter_open to the last
 * amora_iter_next): keys come in strictly increasing order (reverse:
 * strictly decreasing), each at most once; every key that existed from
 * the start of the scan until the scan passed it is returned, with a value
 * it really had (at some moment between the scan's start and the entry's
 * return); keys written or deleted meanwhile may or may not appear. A scan
 * is no snapshot: two keys returned may never have existed together.
 * Shard restarts (kill -9 of a shard or of amorad) do not break it: reads
 * need no coordinator and a restarted shard keeps its index readable.
 *
 * Cost. The iterator never holds a read section between two calls: it
 * enters one to fill a buffer, copying a batch of entries (256 at first,
 * doubling to 4096, at most ~1 MiB of keys and values, at least one
 * entry) out of shared memory, leaves it and hands the copies out one by
 * one, so a consumer that sleeps between entries blocks no reclamation and
 * is never cut off (amorad --reader-timeout-ms). Each entry is thus copied
 * once (keys_only: the key alone) and the buffer takes up to ~1 MiB plus
 * one value of private memory. A new batch resumes the shards' cursors
 * where they stood if no shard freed memory since the last batch, else
 * seeks every shard again past the last key (O(shards x log n), the seeks
 * interleaved: their cache misses overlap). Forward, an entry costs a
 * level-0 hop and a merge step (O(log shards)); reverse, a predecessor
 * search from the head of its shard's index (O(log n), ~1 us). A prefix
 * holding a whole hash tag ("{user:42}:...") scans only that tag's shard
 * when the store places keys by tag (data directories made since hash
 * tags); otherwise every shard is visited. Measured: a full forward scan
 * of 1 M keys (16 B / 100 B) over 64 shards, 9.7-13 M entries/s loaded in
 * key order, 5-7 M/s after random-order overwrites (each entry's record a
 * cache miss); reverse 0.5-0.8 M/s; seek + 10 entries p50 50-80 us over
 * 64 shards, 1.5-2.5 us within one hash tag.
 *
 * Iterators use the handle (its thread rule applies) but hold nothing of
 * it between calls: other calls on the handle, and other iterators, may
 * come between two amora_iter_next calls. */

/* The ends of a range. */
enum amora_bound {
	AMORA_BOUND_OPEN = 0,      /* no bound at this end (its key is ignored) */
	AMORA_BOUND_INCLUSIVE = 1, /* keys >= start (<= end) */
	AMORA_BOUND_EXCLUSIVE = 2, /* keys > start (< end) */
};

/* What to scan: the keys that start with `prefix` AND lie between start
 * and end (the intersection). A NULL range, or one all zero: every key in
 * increasing order. A bound's key is 0..AMORA_KEY_MAX bytes (an empty one
 * is below every key). start == end with an exclusive bound, or a prefix
 * outside the bounds, is an empty range (not an error); start > end in
 * key order is AMORA_EINVAL. The iterator copies prefix and bounds: they
 * need not outlive amora_iter_open. */
struct amora_range {
	const void *prefix; size_t prefix_len;        /* keys starting with it; len 0: every key */
	const void *start;  size_t start_len;  int start_mode; /* enum amora_bound */
	const void *end;    size_t end_len;    int end_mode;   /* enum amora_bound */
	int reverse;        /* strictly decreasing order (from end down to start) */
	uint64_t limit;     /* at most this many entries; 0: no limit */
	int keys_only;      /* amora_iter_next gives no value (val NULL, vlen 0):
			     * cheaper, only the keys are copied */
};

typedef struct amora_iter amora_iter;

/* Open an iterator over range r (NULL: every key) in *out; nothing is read
 * yet (the first amora_iter_next seeks). Errors: AMORA_EINVAL (db or out
 * NULL, a key NULL with a length, a prefix or bound over AMORA_KEY_MAX
 * bytes, a mode that is no enum amora_bound, start > end), AMORA_ENOTSUP
 * ("the store runs without a sorted index": amorad --sorted-index off),
 * AMORA_ESYS (no memory for it). On failure *out is NULL (unless out is). */
AMORA_API int amora_iter_open(amora *db, const struct amora_range *r, amora_iter **out);

/* The next entry: returns 1 and sets *key, *klen and (each may be NULL)
 * *val, *vlen; 0 at the end (again at every later call); or a negative
 * error, after which the iterator is done and every later call returns
 * the same error with the same amora_errmsg. The pointers are into the
 * iterator's buffer: valid until the next call on it or its close. Errors:
 * AMORA_EINVAL (it, key or klen NULL), AMORA_ECORRUPT (a shard's index
 * or a record failed validation), AMORA_EFAILED (a shard that stopped for
 * good has no index to read; a FAILED shard that has one is read: its
 * keys are returned), AMORA_ETIMEDOUT (a shard showed no index for longer
 * than the handle's timeout: it was building it), AMORA_ESYS (no memory
 * for the buffer). Never AMORA_EGONE: scans go on after amorad is gone,
 * from the mapping as the store was when it went. Most calls copy nothing
 * and touch no shared memory; one in a batch reads a batch (see "Cost"). */
AMORA_API int amora_iter_next(amora_iter *it, const void **key, size_t *klen, const void **val,
			      size_t *vlen);

/* Free the iterator and its buffer. NULL is accepted. */
AMORA_API void amora_iter_close(amora_iter *it);

/* 1 if some key starts with `prefix` (len 0: if the store holds any key),
 * 0 if none, or a negative error (as amora_iter_open and amora_iter_next;
 * AMORA_EINVAL for a NULL prefix with a length or one over
 * AMORA_KEY_MAX). One seek per shard scanned. */
AMORA_API int amora_has_prefix(amora *db, const void *prefix, size_t len);

/* The exact number of keys in range r (its limit applies, keys_only and
 * reverse make no difference) into *n, by iterating: O(entries), with the
 * scan's guarantee (keys written meanwhile may or may not count). Errors:
 * AMORA_EINVAL (n NULL) and those of amora_iter_open and amora_iter_next;
 * *n is then the count so far. */
AMORA_API int amora_count(amora *db, const struct amora_range *r, uint64_t *n);

/* --- writes: through the owning shard --- */

/* Insert or replace; returns once durable per the sync mode.
 * Errors: AMORA_EINVAL, AMORA_EFULL, AMORA_EIO, AMORA_EGONE,
 * AMORA_ERESTARTING, AMORA_ETIMEDOUT, AMORA_EBADRING, AMORA_EFAILED (the
 * key's shard stopped and will not restart; nothing was sent),
 * AMORA_ECORRUPT (a reply failed validation). Also reports the first
 * failure of earlier buffered writes, if any (as amora_flush), and the
 * late failure of an earlier write that ended in
 * AMORA_ERESTARTING/AMORA_ETIMEDOUT. */
AMORA_API int amora_set(amora *db, const void *key, size_t klen, const void *val, size_t vlen);

/* Remove. Errors: AMORA_ENOTFOUND and those of amora_set. A delete that
 * removed its key and was logged just before its shard was killed is
 * applied again after the restart and then reports AMORA_ENOTFOUND. */
AMORA_API int amora_del(amora *db, const void *key, size_t klen);

/* Queue a set and return without waiting: sets are sent to the shards in
 * batches and applied in the order given. Argument errors (AMORA_EINVAL)
 * and a key whose shard has stopped (AMORA_EFAILED: nothing queued) are
 * reported at once; failures of the write itself (AMORA_EFULL, ...)
 * are reported by the next amora_flush, amora_set, amora_del or
 * amora_close. A buffered set is acknowledged (and visible to every
 * reader) only once amora_flush has returned 0. */
AMORA_API int amora_set_buffered(amora *db, const void *key, size_t klen, const void *val, size_t vlen);

/* Wait until every buffered write is applied and durable per the sync
 * mode. Returns 0, or the first error among them (the others were still
 * attempted; a failed one changed nothing). */
AMORA_API int amora_flush(amora *db);

/* --- atomic batches --- */

/* One op of a batch. */
enum amora_op_kind { AMORA_OP_SET = 1, AMORA_OP_DEL = 2 };

struct amora_op {
	int op;            /* AMORA_OP_SET or AMORA_OP_DEL */
	const void *key;
	size_t klen;
	const void *val;   /* AMORA_OP_SET only (NULL with vlen 0 is fine) */
	size_t vlen;
};

#define AMORA_BATCH_OPS_MAX 100000          /* ops in one batch */
#define AMORA_BATCH_BYTES_MAX (64u << 20)   /* bytes of keys and values in one batch */

/* Apply n sets and deletes over any keys of any shards atomically, and
 * return once the whole batch is durable per the sync mode:
 *   - all or nothing, through a kill -9 of any process at any moment
 *     (this client, any shard, amorad): after recovery either every op is
 *     there or none;
 *   - visible at one instant: before it no reader sees any of its writes,
 *     after it every reader sees all of them (or newer ones);
 *   - amora_mget and iterators never return a batch in part (Read Atomic);
 *   - batches over the same keys end in the state of some serial order.
 * The same key twice: the later op wins. A delete of a missing key is not
 * an error. n == 0 is a batch that does nothing.
 *
 * Validated whole first; nothing is sent unless every op passes. Errors:
 * AMORA_EINVAL (ops NULL, n > AMORA_BATCH_OPS_MAX, more than
 * AMORA_BATCH_BYTES_MAX of keys and values, or a bad op: amora_errmsg
 * names its index and the cause); AMORA_EFULL (a shard had no memory for
 * its part), AMORA_EIO (a shard's log write failed), AMORA_EFAILED (a
 * shard of the batch stopped for good), AMORA_ERESTARTING,
 * AMORA_ETIMEDOUT (also: the batch kept meeting other batches' unfinished
 * writes on its keys, or a shard holding part of it kept restarting, for
 * the whole timeout; it is retried until then), AMORA_EGONE,
 * AMORA_EBADRING, AMORA_ECORRUPT. After any error nothing of the batch is
 * applied, except when the error came while waiting for the commit's
 * answer (the primary restarting or gone, amorad gone): then amora_errmsg
 * says the outcome is not known yet, and the batch is still all or
 * nothing, decided by its primary (a read tells which). Also reports the
 * first failure of earlier buffered writes, if any (as amora_flush),
 * before it starts.
 *
 * Costs: two round trips to the shards (prepare to every shard of the
 * batch at once, then commit to the shard of its first op); each key's
 * write is logged once. Caveats: a batch that meets another batch's
 * unresolved write on one of its keys is retried after a random pause,
 * so batches contending on hot keys serialize; an iterator left open
 * delays the clean-up (not the visibility) of batches committed after it
 * began. */
AMORA_API int amora_batch(amora *db, const struct amora_op *ops, size_t n);

/* --- the store --- */

struct amora_stats {
	uint32_t shards;          /* shard processes */
	uint32_t shards_ready;    /* of which serving writes now */
	uint32_t shards_failed;   /* of which stopped for good (AMORA_EFAILED; see
				   * amora_shard_status for which and why) */
	uint64_t keys;            /* live keys in all shards */
	uint64_t memory_limit;    /* bytes of the shared segment */
	uint64_t memory_used;     /* bytes of it the shards have written: blocks in
				   * use or free in their chunks (a chunk's never-
				   * written tail is not counted: it takes no RAM).
				   * Close to the RAM the segment takes */
	uint64_t record_bytes;    /* bytes requested for records and tables */
	double fragmentation;     /* 1 - record_bytes / memory_used: headers,
				   * rounding and free blocks */
	uint64_t gets, sets, dels;/* operations of this handle */
};

/* Fill *st from the shared segment (no system call). Errors: AMORA_EINVAL
 * (st is NULL). */
AMORA_API int amora_stats(amora *db, struct amora_stats *st);

/* Life of a shard as amora_shard_status reports it. */
enum amora_shard_state {
	AMORA_SHARD_STARTING = 0,   /* recovering its log at first start */
	AMORA_SHARD_READY = 1,      /* serving */
	AMORA_SHARD_RESTARTING = 2, /* died; amorad restarts it (reads go on) */
	AMORA_SHARD_FAILED = 3,     /* stopped for good: AMORA_EFAILED, see cause */
	AMORA_SHARD_STOPPED = 4,    /* shut down with amorad */
};

struct amora_shard_status {
	int state;          /* enum amora_shard_state (another value: unknown) */
	const char *name;   /* the state in words: "ready", "failed", ... */
	const char *cause;  /* why it failed ("corrupt log", "not enough shared
			     * memory to recover its data", "could not start");
			     * "" unless state is AMORA_SHARD_FAILED */
	uint32_t restarts;  /* times amorad restarted it */
};

/* Fill *out with the state of shard `shard` (0 .. amora_stats' shards - 1)
 * from the shared segment (no system call; the strings are static).
 * Errors: AMORA_EINVAL (out is NULL, no such shard). */
AMORA_API int amora_shard_status(amora *db, uint32_t shard, struct amora_shard_status *out);

/* Counters and gauges beyond amora_stats, read from the shared segment
 * like it (no system call): what INFO prints under the same names, and
 * what `amora stats` prints. Counts run from amorad's start; a restarted
 * shard goes on from its predecessor's. Each field is read on its own: the
 * whole is no snapshot, and two calls may differ by activity in between.
 *
 * ABI: new functions rather than new fields in struct amora_stats: a
 * program built against an older amora.h passes a smaller struct
 * amora_stats, which a newer library would write past. These structs are
 * filled through a size argument instead (pass sizeof(struct ...)), as
 * Linux's extensible structs (clone3, openat2): a later version appends
 * fields at the end, fills only the first `size` bytes for a program
 * built against this header, and zeroes the fields of a newer header it
 * does not know. */

/* What the shards count of writes (in struct amora_server_stats summed,
 * in struct amora_shard_stats one shard's); INFO's names. Fixed: new
 * counters go at the end of the structs holding it. */
struct amora_write_counts {
	uint64_t requests;    /* INFO's total_requests, a shard's requests=:
			       * writes answered (sets and deletes, failed ones
			       * included) */
	uint64_t log_writes;  /* log_writes: log writes (one write(2) per batch
			       * of requests) */
	uint64_t log_records; /* log_records: writes logged in them;
			       * log_records / log_writes is INFO's mean_batch */
	uint64_t log_bytes;   /* log_bytes: bytes written to the logs */
	uint64_t log_syncs;   /* log_syncs: fdatasync calls on the logs */
};

struct amora_server_stats {
	/* amorad's, since it started (INFO's # Stats and # Clients) */
	uint64_t commands_processed;   /* total_commands_processed: control-socket
					* commands whose handler ran (attaches,
					* INFO, PING ...; not unknown ones) */
	uint64_t connections_received; /* total_connections_received: connections
					* admitted */
	uint64_t connections_rejected; /* rejected_connections: refused by the
					* allow-lists or the connection limits,
					* or for want of a descriptor or memory */
	uint32_t connected_clients;    /* connected_clients: connections open now,
					* this handle's included */
	uint32_t attached_clients;     /* attached_clients: of which attached
					* handles */
	/* the shards', summed (INFO's # Stats and # Persistence) */
	struct amora_write_counts writes;
	/* atomic batches (INFO's # Persistence) */
	uint64_t batches_committed;     /* batches_committed: since amorad started */
	uint64_t batches_aborted;       /* batches_aborted: by their primary or a
					 * participant (a conflict, a client gone, a
					 * shard restarted before the decision) */
	uint64_t batch_parts_recovered; /* batch_parts_recovered: parts a shard's
					 * restart found undecided in its log and
					 * decided */
	/* checkpoints (INFO's # Persistence; amora_checkpoint) */
	uint64_t checkpoints;           /* checkpoints: written by the shards since
					 * amorad started */
	uint64_t checkpoint_bytes;      /* checkpoint_bytes: the newest checkpoint
					 * files' sizes, summed */
	uint64_t log_disk_bytes;        /* log_disk_bytes: log bytes on disk, an
					 * estimate each shard updates after each
					 * checkpoint */
};

/* Fill the first `size` bytes of *out (size: sizeof(*out)). Errors:
 * AMORA_EINVAL (out is NULL, size smaller than this first version of the
 * struct). */
AMORA_API int amora_server_stats(amora *db, struct amora_server_stats *out, size_t size);

/* One shard: INFO's line "shardN:state=...,cause=...,keys=...,..." */
struct amora_shard_stats {
	const char *state;    /* state=: "starting", "ready", "restarting",
			       * "failed", "stopped" (amora_shard_status's name) */
	const char *cause;    /* cause=: "none" unless failed, then
			       * "corrupt_log", "out_of_memory" or "start_failed"
			       * (INFO's tokens; amora_shard_status has the words) */
	uint64_t keys;        /* keys=: live keys */
	uint64_t memory_used; /* used_memory=: this shard's part of
			       * amora_stats.memory_used */
	struct amora_write_counts writes; /* requests=, log_writes= ...: this shard's */
	uint32_t restarts;    /* restarts=: times amorad restarted it */
	uint64_t batches_committed, batches_aborted, batch_parts_recovered; /* as in
			       * amora_server_stats: this shard's (as primary) */
	uint64_t checkpoints;    /* checkpoints=: as in amora_server_stats, this shard's */
	uint64_t checkpoint_seq; /* checkpoint_seq=: the log position its newest
				  * checkpoint of this amorad's run covers (0: none) */
	uint64_t log_disk_bytes; /* log_disk_bytes=: this shard's */
};

/* Fill the first `size` bytes of *out with shard `shard` (0 .. shards - 1;
 * the strings are static). Errors: AMORA_EINVAL (out is NULL, size too
 * small, no such shard). */
AMORA_API int amora_shard_stats(amora *db, uint32_t shard, struct amora_shard_stats *out, size_t size);

/* Make every shard write a checkpoint holding every write acknowledged
 * before the call (DESIGN.md §17), and wait until each is on disk: the
 * next start then reads the checkpoints and little or no log. Shards
 * also checkpoint by themselves (amorad's --checkpoint-min-log and
 * --checkpoint-factor) and when amorad stops. Returns 0, AMORA_EGONE
 * (coordinator gone), AMORA_EPROTO, AMORA_EFAILED (a shard stopped for
 * good before it was done; amora_errmsg names it), AMORA_EINVAL (the
 * store runs with --sync none: no files), AMORA_ETIMEDOUT (no answer
 * within the handle's timeout; the checkpoint itself may take longer and
 * is waited for as long as the shards are alive and make progress). A
 * checkpoint that failed (a full disk) is logged by the shard and counts
 * as done: the log is then kept whole. */
AMORA_API int amora_checkpoint(amora *db);

/* Ask the coordinator whether it and every shard are up (one round trip
 * on the control socket). Returns 0, AMORA_EGONE (coordinator gone),
 * AMORA_ETIMEDOUT (no answer within the timeout), AMORA_EPROTO,
 * AMORA_ERESTARTING (a shard is not serving yet) or AMORA_EFAILED (a
 * shard stopped for good; amora_errmsg names the first and its cause). */
AMORA_API int amora_heartbeat(amora *db);

/* Name of an error code; never NULL. */
AMORA_API const char *amora_strerror(int code);

/* Message of the handle's last failure, with its cause ("" if none).
 * Every failure sets it, argument errors included ("vlen is NULL"). With
 * db NULL: the message of this thread's last failed amora_open ("" if
 * none), since a failed open leaves no handle. */
AMORA_API const char *amora_errmsg(const amora *db);

/* The version of the libamora a program runs with, which may be newer than
 * the amora.h it was compiled with (AMORA_VERSION_*): sets *major, *minor
 * and *patch (each may be NULL) and returns the version as a string
 * ("0.2.0"; static, never NULL). */
AMORA_API const char *amora_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif
