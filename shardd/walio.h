/*
 * walio.h — the thin file-I/O layer under the WAL, with a fault plan.
 *
 * Every write, sync, truncate and preallocation of the WAL goes through
 * these functions (DESIGN.md §9), so a test can make the log's I/O fail at a
 * chosen point, the way SQLite's crash-test VFS does, instead of only
 * killing processes. All functions return 0 or a negative errno.
 *
 * Fault plan
 * ----------
 * A plan is a list of up to WALIO_MAX_RULES rules; each fires once, at the
 * Nth call of its kind counted from the moment the plan was installed:
 *
 *     write:N:eio        the Nth walio_pwrite writes nothing, fails with EIO
 *     write:N:enospc     same, with ENOSPC (disk full)
 *     write:N:torn:K     the Nth walio_pwrite writes only its first K bytes
 *                        (fewer if the write is shorter), then fails with EIO
 *     write:N:drop       the Nth walio_pwrite writes nothing but reports
 *                        success: a lost write (a lying disk), which
 *                        recovery must report as damage, not skip
 *     sync:N:eio         the Nth sync (walio_datasync or walio_fsync_dir)
 *                        fails with EIO without syncing (also sync:N:enospc)
 *     write:N:slow:MS    the Nth walio_pwrite sleeps MS milliseconds (1 to
 *                        60000), then writes as usual: a slow disk, to
 *                        look at the store while a log write is under way
 *                        (also sync:N:slow:MS)
 *
 * N starts at 1. Rules are separated by commas:
 * "write:50:torn:100,sync:3:eio". What counts: every segment header and
 * every batch frame is one write; every fdatasync of a segment and every
 * fsync of the directory is one sync (walio_stats() tells how many so far,
 * so a test can aim at "the next one").
 *
 * In-process: walio_fault_set("...") (unit tests). From the environment:
 * AMORA_WAL_FAULT="..." is read by walio_fault_from_env(), which wal_open()
 * calls; it installs the plan once per process (a later call does nothing),
 * and a malformed value is an error, so a typo in a test cannot silently
 * test nothing. Counters and plan are per process: a shard forked from a
 * process that never installed the plan reads the variable itself and
 * counts its own writes from zero, so a restarted shard meets the same
 * fault again at its own Nth write.
 */
#ifndef AMORA_WALIO_H
#define AMORA_WALIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WALIO_ENV "AMORA_WAL_FAULT"
#define WALIO_MAX_RULES 8

struct walio_stats {
	uint64_t writes;   /* walio_pwrite calls since the plan was installed */
	uint64_t syncs;    /* walio_datasync + walio_fsync_dir calls since then */
	uint64_t faults;   /* rules that have fired */
};

/* Parse and install a plan (NULL or "" clears it); resets the counters.
 * Returns 0, or -EINVAL for a malformed spec (the old plan is kept). */
int walio_fault_set(const char *spec);
void walio_fault_clear(void);
/* Install the plan from AMORA_WAL_FAULT, once per process. 0 when unset. */
int walio_fault_from_env(void);
void walio_stats(struct walio_stats *out);

/* Write all of buf at off (loops over short writes), subject to the plan. */
int walio_pwrite(int fd, const void *buf, size_t len, off_t off);
int walio_datasync(int fd);
int walio_fsync_dir(int dirfd);
int walio_truncate(int fd, off_t len);
/* Allocate [0, len) (the file size grows to len; new bytes read as zeros).
 * -EOPNOTSUPP where the file system cannot (the caller then goes without). */
int walio_prealloc(int fd, off_t len);

#endif
