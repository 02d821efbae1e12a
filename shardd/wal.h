/*
 * wal.h — the write-ahead log of one shard.
 *
 * The shard process is the only writer of its log, a directory
 * DATA_DIR/shard-NN/ holding segment files wal-<first seq, 16 hex>.log (the
 * byte format, its validity rules and the decoder are in walfmt.h; what is
 * done with the files is at the top of wal.c). Use:
 *
 *     wal_open(&w, dir, id, mode, interval_ms);
 *     wal_set_note(&w, fn, arg);                 // optional: hear what recovery cut
 *     wal_recover(&w, apply, arg, &last_seq);   // replay, then ready to append
 *     loop:
 *         wal_batch_begin(&w);
 *         wal_batch_add(&w, seq, WALFMT_OP_SET, NULL, k, kl, v, vl);  // per effect
 *         wal_batch_commit(&w);       // one write(2); + fdatasync if "always"
 *         ... acknowledge the batch ...
 *         sleep at most until wal_next_sync_ns(&w); wal_sync_if_due(&w, now);
 *     wal_sync(&w); wal_close(&w);
 *
 * A batch is one frame on disk, so recovery replays all of its records or
 * none. Seqs start at 1 and strictly increase across batches (gaps are
 * allowed); wal_recover's last_seq is 0 for an empty log.
 *
 * Errors: every function returns WAL_OK or a negative WAL_E* code and keeps
 * a message naming the file and offset (wal_errmsg). After WAL_EIO the log
 * is failed for good: every later call returns WAL_EIO, and the shard must
 * exit and recover from disk in a new process (after a failed write or
 * fdatasync the kernel's idea of the file cannot be trusted; this is the
 * PostgreSQL "fsyncgate" lesson). A failed commit never leaves a batch that
 * recovery would replay: the file is truncated back to the batch start, and
 * if even that fails the partial frame fails its checksum. The log writes
 * no log lines: what recovery repaired goes to the caller's note callback.
 *
 * WAL_SYNC_NONE keeps no files at all: every call succeeds and does
 * nothing, wal_recover replays nothing.
 *
 * Time: now_ns and wal_next_sync_ns() are CLOCK_MONOTONIC nanoseconds.
 * Not thread-safe: one struct wal per shard, used by its loop only.
 */
#ifndef AMORA_WAL_H
#define AMORA_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "shardd/walfmt.h"
#include "shardd/walsync.h"

enum wal_err {
	WAL_OK = 0,
	WAL_EIO = -1,       /* open, write, sync or truncate failed; the log is now failed */
	WAL_ECORRUPT = -2,  /* the log is damaged inside (not just a torn tail) */
	WAL_EINVAL = -3,    /* bad argument: op, lengths, seq not increasing, call order */
	WAL_ENOMEM = -4,    /* batch buffer could not grow */
	WAL_EFULL = -5,     /* the batch would pass WALFMT_BATCH_MAX: commit, then add again */
	WAL_EAPPLY = -6,    /* the replay callback returned non-zero */
};

#define WAL_DEFAULT_SEGMENT_BYTES (64ull << 20)
#define WAL_DEFAULT_SYNC_MS 100u
#define WAL_PREALLOC_STEP (4ull << 20) /* segments grow by fallocate in steps up to this, */
#define WAL_PREALLOC_MIN (256ull << 10) /* ... from this, as large as the file (wal.c) */

/* Replay callbacks are walfmt_apply_fn: one record of a valid batch,
 * oldest first; key/val point into the log's mapping and are valid only
 * during the call. Return 0 to go on; anything else stops recovery with
 * WAL_EAPPLY. */

/* What recovery did to the files that is no error but should be heard:
 * WAL_NOTE_WARN when it cut a torn tail, WAL_NOTE_INFO when it removed a
 * last segment holding no frame. msg is one line naming file and offset,
 * valid during the call only. */
enum wal_note { WAL_NOTE_INFO, WAL_NOTE_WARN };
typedef void (*wal_note_fn)(void *arg, enum wal_note kind, const char *msg);

struct wal {
	enum wal_sync_mode mode;
	uint32_t shard_id;
	uint64_t sync_interval_ns;
	uint64_t segment_bytes;   /* rotate once a segment would pass this */
	char *dir;
	int dirfd;
	int fd;                   /* current segment, -1 until the first commit */
	char seg_name[WALFMT_NAME_LEN + 1]; /* its file name */
	uint64_t seg_first_seq;
	uint64_t write_off;       /* end of the last valid frame: next frame goes here */
	uint64_t alloc_end;       /* file size (preallocated zeros past write_off) */
	int prealloc_ok;          /* 0 once the file system said "not supported" */
	uint64_t last_seq;        /* last seq committed (or recovered) */
	uint64_t base_seq;        /* after recovery: the log holds every record after
				     this seq (older segments were dropped); a checkpoint
				     below it would leave a hole */
	uint64_t from_seg;        /* first seq of the first segment wal_recover_from read:
				     wal_replay reads from there too */
	int recovered;            /* appends are allowed only after wal_recover */
	int failed;               /* sticky after WAL_EIO */
	int dirty;                /* written but not yet fdatasync'ed (periodic) */
	uint64_t dirty_since_ns;
	/* the open batch: a frame header slot, then its records */
	uint8_t *buf;
	size_t buf_len, buf_cap;
	uint32_t batch_nrec;
	uint64_t batch_first_seq, batch_last_seq;
	/* Counters of this struct wal's life (private, plain): the shard adds
	 * what they grew by to its shared counters (segment.h, struct
	 * shm_shard_counters; shardd.c, count_log) for INFO. stat_batches:
	 * frames written (one write(2) each); stat_records: records in them;
	 * stat_bytes: their bytes, headers included; stat_syncs: fdatasync
	 * and directory fsync calls that succeeded (a batch's in "always",
	 * periodic ones, two per new segment, one per closed one). All stay
	 * 0 with WAL_SYNC_NONE. */
	uint64_t stat_batches, stat_records, stat_bytes, stat_syncs;
	wal_note_fn note;         /* NULL: notes are dropped */
	void *note_arg;
	char err[320];
};

/* dir must exist (the caller creates it; NULL is fine for WAL_SYNC_NONE);
 * sync_interval_ms 0 means WAL_DEFAULT_SYNC_MS. Reads AMORA_WAL_FAULT (see
 * walio.h): a malformed value is WAL_EINVAL. Nothing is read or written
 * until wal_recover; wal_close is safe after a failed open. */
int wal_open(struct wal *w, const char *dir, uint32_t shard_id, enum wal_sync_mode mode,
	     uint32_t sync_interval_ms);
/* Rotate segments at this size (at least 4096; default 64 MiB). For tests. */
void wal_set_segment_bytes(struct wal *w, uint64_t bytes);
/* Where recovery's notes go (fn NULL: nowhere, the default after wal_open).
 * The caller logs them; the shard's is in recover.c. */
void wal_set_note(struct wal *w, wal_note_fn fn, void *arg);
/* Replay every valid batch of every segment, oldest first (fn may be NULL),
 * cut a torn tail of the last segment (a WAL_NOTE_WARN names file and
 * offset), then leave the log ready for appends after *last_seq.
 * WAL_ECORRUPT for damage inside the log, WAL_EAPPLY when fn fails,
 * WAL_EIO. Once only. */
int wal_recover(struct wal *w, walfmt_apply_fn fn, void *arg, uint64_t *last_seq);
/* The same from a checkpoint: segments holding only seqs <= from are not
 * read (not even checked), the first one read is not chained to the one
 * before, and wal_replay skips the same ones. Every record of the
 * segments read is passed to fn, some may be <= from. base_seq then says
 * whether the log reaches back far enough (base_seq <= from). */
int wal_recover_from(struct wal *w, uint64_t from, walfmt_apply_fn fn, void *arg,
		     uint64_t *last_seq);

/* Replay the recovered log again, oldest first, read-only (recovery that
 * needs two passes). Only after wal_recover and before any commit.
 * WAL_EINVAL (call order), WAL_EAPPLY, WAL_ECORRUPT (the files changed
 * since wal_recover), WAL_EIO. */
int wal_replay(struct wal *w, walfmt_apply_fn fn, void *arg);

/* Read ANOTHER shard's log in dir (shard shard_id), read-only: call fn
 * for every record of every valid frame of every segment, oldest segment
 * first. Opens each segment O_RDONLY and reads it into private memory
 * (no mapping: the owner may shrink the file meanwhile); never writes,
 * truncates, removes or locks anything, so the owner may be recovering or
 * appending concurrently. Each segment is judged alone (not chained to the
 * one before): a torn or corrupt part ends that segment's records quietly
 * (the owner's recovery judges it; a torn record is no record), and so does
 * a damaged segment header; a frame being written meanwhile looks torn, so
 * only records the owner had written before the read are seen. A missing
 * directory, no segments, or a segment removed between listing and open
 * (the owner's recovery removes an empty last one) give no records, not an
 * error. Returns 0, -1 with why filled (NUL-terminated, whylen > 0) on an
 * I/O error or out of memory, or fn's non-zero return (why names the
 * record). Works without a struct wal; not for WAL_SYNC_NONE logs (there
 * are no files). */
int wal_scan_dir(const char *dir, uint32_t shard_id, walfmt_apply_fn fn, void *arg, char *why,
		 size_t whylen);

/* Start a batch (discarding any records added but not committed). */
void wal_batch_begin(struct wal *w);
/* Copy one record into the batch buffer (op a walfmt_op; b: the batch
 * fields for ops 3..6, NULL for SET and DEL; for DEL and PDEL, val/vlen
 * are ignored and logged as empty). WAL_EINVAL, with a message naming the
 * cause, for a record the format forbids (walfmt_rec_check: bad op, b given
 * or missing, klen or vlen out of range for the op, ref 0, primary >=
 * 65536, outcome not 0, or for RESOLVED not WALFMT_COMMITTED/ABORTED), a
 * NULL key or value with a length, or a seq not above every earlier one
 * (also before wal_recover); WAL_EFULL when the batch would pass
 * WALFMT_BATCH_MAX. */
int wal_batch_add(struct wal *w, uint64_t seq, int op, const struct walfmt_batch *b,
		  const void *key, uint32_t klen, const void *val, uint32_t vlen);
/* Bytes of records in the open batch (to commit early on a size budget). */
size_t wal_batch_bytes(const struct wal *w);
/* Write the batch as one frame with one write(2); in "always" mode also
 * fdatasync before returning (group commit). An empty batch is a no-op. */
int wal_batch_commit(struct wal *w);

/* Periodic mode: fdatasync when dirty and the interval since the first
 * unsynced commit has elapsed. */
int wal_sync_if_due(struct wal *w, uint64_t now_ns);
/* When the next periodic sync is due (CLOCK_MONOTONIC ns), -1 if clean. */
int64_t wal_next_sync_ns(const struct wal *w);
/* fdatasync now if dirty (shutdown). */
int wal_sync(struct wal *w);
/* Delete whole segments holding only seqs <= seq (after a checkpoint that
 * covers them). Never deletes the segment being appended to. */
int wal_drop_upto(struct wal *w, uint64_t seq);
/* The same on a log directory without its struct wal, so another thread
 * than the log's writer may do it (the checkpoint thread, ckpt.c): the
 * newest segment is never deleted, the writer may append meanwhile.
 * *left_bytes: the sizes of the segments left whose first seq is below
 * count_below (closed ones: the one appended to is preallocated ahead).
 * WAL_EIO with why. */
int wal_drop_dir(const char *dir, uint64_t seq, uint64_t count_below, uint64_t *left_bytes, char *why,
		 size_t whylen);
/* Close the current segment (trimmed, synced) so that the next commit
 * starts a new one: a checkpoint begins at a segment boundary, so the
 * segments before it can later be deleted whole. WAL_EIO. */
int wal_rotate(struct wal *w);
/* Closes files and frees memory; does not sync (call wal_sync first). */
void wal_close(struct wal *w);
const char *wal_errmsg(const struct wal *w);
const char *wal_strerror(int code);

#endif
