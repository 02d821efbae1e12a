/*
 * wal.c — the write-ahead log of one shard: segment files, append, sync,
 * recovery. The bytes of a segment, their validity rules and the decoder
 * are in walfmt.h / walfmt.c.
 *
 * The idea
 * --------
 * A shard applies a batch of effects ("key K now holds V", "key K is gone")
 * to memory, writes them to its log as ONE frame with ONE write(2), and in
 * "always" mode calls fdatasync once for the whole batch before it answers
 * any of the clients in it (group commit: one sync carries many writes). In
 * "periodic" mode it answers after the write(2) and syncs at most every
 * interval. After a crash the shard replays every intact frame, oldest
 * first, on top of its newest checkpoint.
 *
 * A frame carries a header checksum and a body checksum (CRC32C), so a
 * batch is all-or-nothing: a write cut short by a crash or an I/O error
 * leaves a frame whose body checksum fails, and recovery ignores all of it.
 * What follows a bad frame decides what the damage is (walfmt_scan):
 *   - nothing, or only zeros (the preallocated rest of the file), or bytes
 *     that hold no intact frame: a TORN TAIL, the normal result of a crash
 *     in the middle of a write. It is cut off (the file is truncated at the
 *     end of the last good frame and synced, so new frames follow the good
 *     prefix and no stale bytes can ever follow them) and reported to the
 *     caller as a warning naming file and offset (wal_set_note).
 *   - an intact frame: the damage is INSIDE the log (bit rot, a bug, a lost
 *     block). Skipping it would silently drop acknowledged writes and then
 *     apply later ones on top, so recovery stops with WAL_ECORRUPT and a
 *     message naming file and offset; a human decides.
 * A segment is closed with its size trimmed and an fdatasync before the
 * next one is created, so only the LAST segment can have a torn tail (or a
 * torn header: it is removed): any damage in an earlier segment is
 * corruption.
 *
 * Recovery never truncates valid data: it cuts only bytes after the last
 * intact frame, so any number of recover -> append -> recover cycles keeps
 * everything (AmoraDB truncated its WAL after replay and lost all data at
 * the second restart).
 *
 * Files
 * -----
 * DIR/wal-XXXXXXXXXXXXXXXX.log (walfmt.h, "Names"). Other files in DIR
 * (checkpoints, ckptfile.h) are not ours and are ignored; a checkpoint
 * rotates the log (wal_rotate), recovery then reads only the segments
 * after its replay seq (wal_recover_from), and the checkpoint thread
 * deletes whole segments before the older checkpoint (wal_drop_dir). A segment is created when
 * a batch is committed and there is no current segment or the batch would
 * take the current one past segment_bytes (64 MiB by default). Its size
 * grows ahead of the writes by fallocate in steps as large as the file,
 * from WAL_PREALLOC_MIN up to WAL_PREALLOC_STEP
 * (fdatasync into allocated space is cheaper: README, "Costs behind the
 * design"), so the file normally ends in zeros after the last frame.
 *
 * A segment holding no frame is possible only as the last one (a crash
 * between creating it and writing the first frame); recovery removes it,
 * because its name promises a first seq the next batch may not have.
 *
 * Appending, and its failures
 * ---------------------------
 * The batch is built in a private buffer (a 32-byte slot for the frame
 * header, then the records), sealed at commit (walfmt_frame_seal: pad,
 * both CRCs) and written with one pwrite at the end of the last valid
 * frame; "always" adds one fdatasync. Every write, sync, truncate and
 * fallocate goes through walio.c, whose fault plan lets tests fail, tear or
 * drop any of them. If the write or (in "always" mode) the sync fails, the
 * batch was not acknowledged, so the file is truncated back to the batch
 * start; if even that fails, the partial frame fails its checksum and is a
 * torn tail. Either way recovery cannot replay it. The log then refuses
 * everything with WAL_EIO: after a failed write or fdatasync the page cache
 * cannot be trusted, so the shard exits and recovers from the file in a new
 * process. A failed periodic sync does not cut anything: those batches were
 * acknowledged after write(2).
 *
 * Reading
 * -------
 * Recovery maps each segment read-only (MAP_POPULATE, sequential) and
 * decodes it in memory with walfmt_scan: no per-record syscall, and the
 * same decoder runs under the fuzzer on plain buffers. wal_scan_dir, the
 * reader of another shard's log, reads each segment into private memory
 * instead: the owner may cut or trim the file meanwhile, and a mapping past
 * the new end would fault.
 *
 * A known trade-off: after a power cut in "periodic" mode the kernel may
 * have written a later page of unsynced frames but not an earlier one. That
 * looks exactly like damage inside the log and is reported as corruption,
 * not guessed away. Segments are synced when closed, so this can only
 * involve the unsynced frames at the end of the last segment.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"
#include "shm/probe.h"
#include "shm/record.h"
#include "shardd/wal.h"
#include "shardd/walio.h"

__attribute__((format(printf, 3, 4)))
static int fail(struct wal *w, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->err, sizeof(w->err), fmt, ap);
	va_end(ap);
	if (code == WAL_EIO)
		w->failed = 1;
	return code;
}

/* Hand the caller a line about something recovery did (wal_set_note). */
__attribute__((format(printf, 3, 4)))
static void note(struct wal *w, enum wal_note kind, const char *fmt, ...)
{
	char msg[1024]; /* as long as a log line */
	va_list ap;

	if (w->note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	w->note(w->note_arg, kind, msg);
}

const char *wal_strerror(int code)
{
	switch (code) {
	case WAL_OK: return "ok";
	case WAL_EIO: return "I/O error";
	case WAL_ECORRUPT: return "log corrupt";
	case WAL_EINVAL: return "invalid argument";
	case WAL_ENOMEM: return "out of memory";
	case WAL_EFULL: return "batch full";
	case WAL_EAPPLY: return "replay callback failed";
	default: return "unknown error";
	}
}

const char *wal_errmsg(const struct wal *w)
{
	return w->err;
}

/* =====================================================================
 * Segment files
 * ===================================================================== */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The seqs of all segment files in the directory, ascending (*out malloc'ed). */
static int list_segments(struct wal *w, uint64_t **out, size_t *n)
{
	DIR *d = opendir(w->dir);
	struct dirent *de;
	uint64_t *v = NULL, seq;
	size_t cap = 0;

	*n = 0;
	if (d == NULL)
		return fail(w, WAL_EIO, "%s: cannot list: %s", w->dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		if (!walfmt_seg_name_parse(de->d_name, &seq))
			continue;
		if (*n == cap) {
			uint64_t *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));
			if (nv == NULL) {
				closedir(d);
				free(v);
				return fail(w, WAL_ENOMEM, "%s: out of memory listing segments", w->dir);
			}
			v = nv;
		}
		v[(*n)++] = seq;
	}
	closedir(d);
	if (*n > 1)
		qsort(v, *n, sizeof(*v), cmp_u64);
	*out = v;
	return WAL_OK;
}

static int io_fail(struct wal *w, const char *what, uint64_t off, int neg_errno)
{
	return fail(w, WAL_EIO, "%s/%s: %s at offset %" PRIu64 " failed: %s", w->dir, w->seg_name,
		    what, off, strerror(-neg_errno));
}

/* Make the file at least `need` bytes of allocated space, ahead by a step:
 * as large as the file is (doubling, from WAL_PREALLOC_MIN) up to
 * WAL_PREALLOC_STEP, so a small log (64 shards, a checkpoint rotating
 * each often) is not mostly preallocated zeros. */
static int seg_grow(struct wal *w, uint64_t need)
{
	uint64_t step = WAL_PREALLOC_MIN, target;
	int rc;

	while (step < w->alloc_end && step < WAL_PREALLOC_STEP)
		step *= 2;
	if (step > w->segment_bytes)
		step = w->segment_bytes;
	target = (w->alloc_end / step + 1) * step; /* the next step boundary */
	if (!w->prealloc_ok || need <= w->alloc_end)
		return WAL_OK;
	if (target > w->segment_bytes)
		target = w->segment_bytes;
	if (target < need)
		target = need;
	rc = walio_prealloc(w->fd, (off_t)target);
	if (rc == -EOPNOTSUPP) {
		w->prealloc_ok = 0; /* e.g. tmpfs without it: plain appends work too */
		return WAL_OK;
	}
	if (rc < 0)
		return io_fail(w, "fallocate", target, rc);
	w->alloc_end = target;
	return WAL_OK;
}

/* Trim the preallocated rest and sync: a closed segment is complete on
 * disk, which is why damage in it can only be corruption. */
static int seg_finish(struct wal *w)
{
	int rc = WAL_OK;

	if (w->fd < 0)
		return WAL_OK;
	if (w->alloc_end > w->write_off && (rc = walio_truncate(w->fd, (off_t)w->write_off)) < 0)
		return io_fail(w, "truncate", w->write_off, rc);
	if ((rc = walio_datasync(w->fd)) < 0)
		return io_fail(w, "fdatasync", w->write_off, rc);
	w->stat_syncs++;
	close(w->fd);
	w->fd = -1;
	w->dirty = 0;
	return WAL_OK;
}

/* Header, allocation, file and directory synced before any frame goes
 * in, so the new name survives a power cut. */
static int seg_init(struct wal *w, uint64_t first_seq)
{
	uint8_t h[WALFMT_SEG_HDR];
	int rc;

	walfmt_seg_encode(h, w->shard_id, first_seq, w->last_seq);
	if ((rc = walio_pwrite(w->fd, h, WALFMT_SEG_HDR, 0)) < 0)
		return io_fail(w, "write of the segment header", 0, rc);
	w->write_off = w->alloc_end = WALFMT_SEG_HDR;
	if ((rc = seg_grow(w, WALFMT_SEG_HDR + 1)) != WAL_OK)
		return rc;
	if ((rc = walio_datasync(w->fd)) < 0)
		return io_fail(w, "fdatasync of the new segment", 0, rc);
	if ((rc = walio_fsync_dir(w->dirfd)) < 0)
		return io_fail(w, "fsync of the directory for", 0, rc);
	w->stat_syncs += 2;
	return WAL_OK;
}

/* Create wal-<first_seq>.log. A half-made one is removed again (best
 * effort: recovery also removes a last segment that holds no frame). */
static int seg_create(struct wal *w, uint64_t first_seq)
{
	int rc;

	walfmt_seg_name(w->seg_name, first_seq);
	w->fd = openat(w->dirfd, w->seg_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0)
		return io_fail(w, "create", 0, -errno);
	w->seg_first_seq = first_seq;
	w->write_off = w->alloc_end = 0;
	rc = seg_init(w, first_seq);
	if (rc != WAL_OK) {
		unlinkat(w->dirfd, w->seg_name, 0);
		close(w->fd);
		w->fd = -1;
	}
	return rc;
}

/* A segment with room for `need` more bytes, rotating when this one is full. */
static int seg_ensure(struct wal *w, uint64_t need)
{
	int rc;

	if (w->fd >= 0 && w->write_off > WALFMT_SEG_HDR && w->write_off + need > w->segment_bytes &&
	    (rc = seg_finish(w)) != WAL_OK)
		return rc;
	if (w->fd < 0 && (rc = seg_create(w, w->batch_first_seq)) != WAL_OK)
		return rc;
	return seg_grow(w, w->write_off + need);
}

/* =====================================================================
 * Open, close
 * ===================================================================== */

int wal_open(struct wal *w, const char *dir, uint32_t shard_id, enum wal_sync_mode mode,
	     uint32_t sync_interval_ms)
{
	memset(w, 0, sizeof(*w));
	w->fd = w->dirfd = -1;
	w->mode = mode;
	w->shard_id = shard_id;
	w->segment_bytes = WAL_DEFAULT_SEGMENT_BYTES;
	w->sync_interval_ns = (uint64_t)(sync_interval_ms ? sync_interval_ms : WAL_DEFAULT_SYNC_MS) *
			      1000000ull;
	w->prealloc_ok = 1;
	if (mode != WAL_SYNC_ALWAYS && mode != WAL_SYNC_PERIODIC && mode != WAL_SYNC_NONE)
		return fail(w, WAL_EINVAL, "bad sync mode %d", (int)mode);
	if (mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (dir == NULL)
		return fail(w, WAL_EINVAL, "no directory");
	if (walio_fault_from_env() < 0)
		return fail(w, WAL_EINVAL, "malformed %s: \"%s\"", WALIO_ENV, getenv(WALIO_ENV));
	w->dir = strdup(dir);
	w->buf_cap = 64 << 10;
	w->buf = malloc(w->buf_cap);
	if (w->dir == NULL || w->buf == NULL) {
		wal_close(w);
		return fail(w, WAL_ENOMEM, "out of memory");
	}
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0) {
		int e = errno;
		wal_close(w);
		return fail(w, WAL_EIO, "%s: cannot open directory: %s", dir, strerror(e));
	}
	wal_batch_begin(w);
	return WAL_OK;
}

void wal_set_segment_bytes(struct wal *w, uint64_t bytes)
{
	w->segment_bytes = bytes < 4096 ? 4096 : bytes;
}

void wal_set_note(struct wal *w, wal_note_fn fn, void *arg)
{
	w->note = fn;
	w->note_arg = arg;
}

void wal_close(struct wal *w)
{
	if (w->fd >= 0)
		close(w->fd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	free(w->buf);
	free(w->dir);
	w->fd = w->dirfd = -1;
	w->buf = NULL;
	w->dir = NULL;
	w->buf_len = w->buf_cap = 0;
}

/* =====================================================================
 * Recovery
 * ===================================================================== */

/* Read the open segment into malloc'ed memory: the file may shrink under
 * a reader that is not its owner (wal_scan_dir), which would make a
 * mapping fault (SIGBUS); *len is what could be read. */
static int seg_copy(struct wal *w, int fd, const char *name, size_t size, uint8_t **out,
		    size_t *len)
{
	uint8_t *p = malloc(size);
	size_t got = 0;

	if (p == NULL)
		return fail(w, WAL_ENOMEM, "%s/%s: out of memory reading %zu bytes", w->dir, name,
			    size);
	while (got < size) {
		ssize_t r = pread(fd, p + got, size - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			free(p);
			return fail(w, WAL_EIO, "%s/%s: read at offset %zu: %s", w->dir, name, got,
				    strerror(e));
		}
		if (r == 0)
			break; /* cut shorter since the fstat */
		got += (size_t)r;
	}
	*out = p;
	*len = got;
	return WAL_OK;
}

/* The whole segment in memory, read-only: mapped, or with copy read into a
 * private buffer (seg_copy); *map NULL for an empty file. Undo with
 * seg_unmap. */
static int seg_map(struct wal *w, int fd, const char *name, int copy, const uint8_t **map,
		   size_t *len)
{
	struct stat st;
	void *p;

	*map = NULL;
	if (fstat(fd, &st) < 0)
		return fail(w, WAL_EIO, "%s/%s: fstat: %s", w->dir, name, strerror(errno));
	*len = (size_t)st.st_size;
	if (*len == 0)
		return WAL_OK;
	if (copy)
		return seg_copy(w, fd, name, *len, (uint8_t **)map, len);
	p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (p == MAP_FAILED)
		return fail(w, WAL_EIO, "%s/%s: mmap: %s", w->dir, name, strerror(errno));
	madvise(p, *len, MADV_SEQUENTIAL);
	*map = p;
	return WAL_OK;
}

static void seg_unmap(const uint8_t *map, size_t len, int copy)
{
	if (map == NULL)
		return;
	if (copy)
		free((void *)map);
	else
		munmap((void *)map, len);
}

/* Remove a last segment holding no frame (see the top comment). */
static int seg_remove(struct wal *w, const char *name)
{
	int rc;

	if (unlinkat(w->dirfd, name, 0) < 0)
		return fail(w, WAL_EIO, "%s/%s: unlink: %s", w->dir, name, strerror(errno));
	if ((rc = walio_fsync_dir(w->dirfd)) < 0)
		return fail(w, WAL_EIO, "%s: fsync: %s", w->dir, strerror(-rc));
	return WAL_OK;
}

/* The last segment after its scan: cut a torn tail, keep it for appends
 * (fd is taken over), or remove it when it holds no frame. */
static int seg_adopt(struct wal *w, int fd, const char *name, const struct walfmt_scan *sc,
		     size_t len)
{
	int rc;

	if (sc->status == WALFMT_TORN)
		note(w, WAL_NOTE_WARN, "%s/%s: torn tail at offset %" PRIu64 " (%s): cutting %" PRIu64
		     " bytes", w->dir, name, sc->bad_off, sc->why, (uint64_t)len - sc->end);
	if (sc->frames == 0) {
		close(fd);
		if (sc->status != WALFMT_TORN)
			note(w, WAL_NOTE_INFO, "%s/%s: no frame in the last segment, removing it", w->dir,
			     name);
		return seg_remove(w, name);
	}
	w->fd = fd;
	snprintf(w->seg_name, sizeof(w->seg_name), "%s", name);
	w->seg_first_seq = sc->name_seq;
	w->write_off = sc->end;
	w->alloc_end = len;
	if (sc->status != WALFMT_TORN)
		return WAL_OK;
	/* Cut and sync before appending, so stale bytes never follow new frames. */
	if ((rc = walio_truncate(fd, (off_t)sc->end)) < 0)
		return io_fail(w, "truncate of the torn tail", sc->end, rc);
	if ((rc = walio_datasync(fd)) < 0)
		return io_fail(w, "fdatasync of the cut", sc->end, rc);
	w->alloc_end = sc->end;
	return WAL_OK;
}

static int scan_report(struct wal *w, const char *name, const struct walfmt_scan *sc, int last)
{
	if (sc->status == WALFMT_CORRUPT)
		return fail(w, WAL_ECORRUPT, "%s/%s: corrupt at offset %" PRIu64 ": %s", w->dir,
			    name, sc->bad_off, sc->why);
	if (last)
		return WAL_OK;
	if (sc->status == WALFMT_TORN)
		return fail(w, WAL_ECORRUPT, "%s/%s: damaged at offset %" PRIu64
			    " in a segment that is not the last: %s", w->dir, name, sc->bad_off, sc->why);
	if (sc->frames == 0)
		return fail(w, WAL_ECORRUPT, "%s/%s: segment holds no frame but is not the last",
			    w->dir, name);
	return WAL_OK;
}

/* Open segment `seq` (its name into name). On failure errno is open's. */
static int seg_open(struct wal *w, uint64_t seq, int flags, char name[WALFMT_NAME_LEN + 1],
		    int *fd)
{
	int e;

	walfmt_seg_name(name, seq);
	*fd = openat(w->dirfd, name, flags | O_CLOEXEC);
	if (*fd >= 0)
		return WAL_OK;
	e = errno;
	fail(w, WAL_EIO, "%s/%s: open: %s", w->dir, name, strerror(e));
	errno = e;
	return WAL_EIO;
}

/* Map (or with copy, read: seg_map) the open segment and scan at most
 * `cap` bytes of it, calling fn (*len: the file's size). */
static int seg_scan(struct wal *w, int fd, const char *name, size_t cap, int copy,
		    walfmt_apply_fn fn, void *arg, struct walfmt_scan *sc, size_t *len)
{
	const uint8_t *map;
	int rc = seg_map(w, fd, name, copy, &map, len);

	if (rc != WAL_OK)
		return rc;
	rc = walfmt_scan(map, *len < cap ? *len : cap, fn, arg, sc);
	seg_unmap(map, *len, copy);
	if (rc != 0)
		return fail(w, WAL_EAPPLY, "%s/%s: offset %" PRIu64 ": %s", w->dir, name, sc->end, sc->why);
	return WAL_OK;
}

/* Replay one segment; the last one is kept open for appends. */
static int recover_segment(struct wal *w, uint64_t seq, int first, int last, walfmt_apply_fn fn,
			   void *arg)
{
	struct walfmt_scan sc = { .shard_id = w->shard_id, .name_seq = seq, .prev_seq = w->last_seq,
			       .chained = !first };
	char name[WALFMT_NAME_LEN + 1];
	size_t len = 0;
	int fd, rc = seg_open(w, seq, last ? O_RDWR : O_RDONLY, name, &fd);

	if (rc != WAL_OK)
		return rc;
	rc = seg_scan(w, fd, name, SIZE_MAX, 0, fn, arg, &sc, &len);
	if (rc == WAL_OK)
		rc = scan_report(w, name, &sc, last);
	w->last_seq = sc.last_seq;
	if (first)
		w->base_seq = sc.base_seq;
	if (rc == WAL_OK && last)
		return seg_adopt(w, fd, name, &sc, len);
	close(fd);
	return rc;
}

/* The first of the n segments recovery reads: the one holding seq
 * from + 1 (segment i holds seqs below segs[i + 1]); never past the last. */
static size_t first_needed(const uint64_t *segs, size_t n, uint64_t from)
{
	size_t i = 0;

	while (i + 1 < n && segs[i + 1] - 1 <= from)
		i++;
	return i;
}

int wal_recover_from(struct wal *w, uint64_t from, walfmt_apply_fn fn, void *arg, uint64_t *last_seq)
{
	uint64_t *segs = NULL;
	size_t n = 0, i0;
	int rc = WAL_OK;

	*last_seq = 0;
	if (w->mode == WAL_SYNC_NONE) {
		w->recovered = 1;
		return WAL_OK;
	}
	if (w->dirfd < 0 || w->recovered)
		return fail(w, WAL_EINVAL, "wal_recover: log not open or already recovered");
	if ((rc = list_segments(w, &segs, &n)) != WAL_OK)
		return rc;
	i0 = first_needed(segs, n, from);
	w->from_seg = n > 0 ? segs[i0] : 0;
	for (size_t i = i0; i < n && rc == WAL_OK; i++)
		rc = recover_segment(w, segs[i], i == i0, i + 1 == n, fn, arg);
	free(segs);
	*last_seq = w->last_seq;
	if (rc == WAL_OK)
		w->recovered = 1;
	return rc;
}

int wal_recover(struct wal *w, walfmt_apply_fn fn, void *arg, uint64_t *last_seq)
{
	return wal_recover_from(w, 0, fn, arg, last_seq);
}

/* Replay one segment again, read-only, up to where recovery left it (the
 * current segment ends in preallocated zeros past write_off). */
static int replay_segment(struct wal *w, uint64_t seq, int first, uint64_t *prev, walfmt_apply_fn fn,
			  void *arg)
{
	struct walfmt_scan sc = { .shard_id = w->shard_id, .name_seq = seq, .prev_seq = *prev,
			       .chained = !first };
	size_t cap = w->fd >= 0 && seq == w->seg_first_seq ? (size_t)w->write_off : SIZE_MAX, len;
	char name[WALFMT_NAME_LEN + 1];
	int fd, rc = seg_open(w, seq, O_RDONLY, name, &fd);

	if (rc != WAL_OK)
		return rc;
	rc = seg_scan(w, fd, name, cap, 0, fn, arg, &sc, &len);
	close(fd);
	if (rc == WAL_OK && sc.status != WALFMT_CLEAN)
		rc = fail(w, WAL_ECORRUPT, "%s/%s: changed since recovery at offset %" PRIu64 ": %s",
			  w->dir, name, sc.bad_off, sc.why);
	if (rc == WAL_OK)
		*prev = sc.last_seq;
	return rc;
}

int wal_replay(struct wal *w, walfmt_apply_fn fn, void *arg)
{
	uint64_t *segs = NULL, prev = 0;
	size_t n = 0;
	int rc;

	if (w->mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (!w->recovered || w->stat_batches != 0)
		return fail(w, WAL_EINVAL, "wal_replay: only after wal_recover and before appends");
	if ((rc = list_segments(w, &segs, &n)) != WAL_OK)
		return rc;
	for (size_t i = 0, first = 1; i < n && rc == WAL_OK; i++) {
		if (segs[i] < w->from_seg)
			continue; /* before what wal_recover_from read */
		rc = replay_segment(w, segs[i], first, &prev, fn, arg);
		first = 0;
	}
	free(segs);
	return rc;
}

/* =====================================================================
 * Reading another shard's log (wal_scan_dir)
 * ===================================================================== */

/* fn's own return, which seg_scan turns into WAL_EAPPLY. */
struct scan_dir {
	walfmt_apply_fn fn;
	void *arg;
	int rc;
};

static int scan_dir_apply(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
			  const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct scan_dir *sd = arg;

	sd->rc = sd->fn(sd->arg, seq, op, b, key, klen, val, vlen);
	return sd->rc;
}

/* One segment alone (unchained: a cut in the one before must not hide this
 * one); its verdict is ignored, the records of its valid prefix count. */
static int scan_dir_segment(struct wal *w, uint64_t seq, struct scan_dir *sd)
{
	struct walfmt_scan sc = { .shard_id = w->shard_id, .name_seq = seq };
	char name[WALFMT_NAME_LEN + 1];
	size_t len = 0;
	int fd, rc = seg_open(w, seq, O_RDONLY, name, &fd);

	if (rc != WAL_OK)
		return errno == ENOENT ? WAL_OK : rc; /* removed since the listing */
	rc = seg_scan(w, fd, name, SIZE_MAX, 1, sd->fn != NULL ? scan_dir_apply : NULL, sd, &sc,
		      &len);
	close(fd);
	return rc;
}

int wal_scan_dir(const char *dir, uint32_t shard_id, walfmt_apply_fn fn, void *arg, char *why,
		 size_t whylen)
{
	/* A struct wal only for the listing and reading code and its messages:
	 * nothing in it can write. */
	struct wal w = { .fd = -1, .shard_id = shard_id, .dir = (char *)dir };
	struct scan_dir sd = { fn, arg, 0 };
	uint64_t *segs = NULL;
	size_t n = 0;
	int rc;

	why[0] = '\0';
	w.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w.dirfd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(why, whylen, "%s: cannot open directory: %s", dir, strerror(errno));
		return -1;
	}
	rc = list_segments(&w, &segs, &n);
	for (size_t i = 0; i < n && rc == WAL_OK; i++)
		rc = scan_dir_segment(&w, segs[i], &sd);
	free(segs);
	close(w.dirfd);
	if (rc == WAL_OK)
		return 0;
	snprintf(why, whylen, "%s", w.err);
	return rc == WAL_EAPPLY ? sd.rc : -1;
}

/* =====================================================================
 * Appending
 * ===================================================================== */

void wal_batch_begin(struct wal *w)
{
	w->buf_len = WALFMT_FRAME_HDR; /* the header is filled in at commit */
	w->batch_nrec = 0;
	w->batch_first_seq = w->batch_last_seq = 0;
}

size_t wal_batch_bytes(const struct wal *w)
{
	return w->batch_nrec ? w->buf_len - WALFMT_FRAME_HDR : 0;
}

static int batch_reserve(struct wal *w, size_t more)
{
	size_t need = w->buf_len + more + 8; /* + room for the pad */
	size_t cap = w->buf_cap;
	uint8_t *nb;

	if (need <= cap)
		return WAL_OK;
	while (cap < need)
		cap *= 2;
	nb = realloc(w->buf, cap);
	if (nb == NULL)
		return fail(w, WAL_ENOMEM, "batch buffer of %zu bytes: out of memory", cap);
	w->buf = nb;
	w->buf_cap = cap;
	return WAL_OK;
}

static int add_check(struct wal *w, uint64_t seq, int op, const struct walfmt_batch *b,
		     const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	uint64_t floor = w->batch_nrec ? w->batch_last_seq : w->last_seq;
	const char *bad;

	if (w->failed)
		return WAL_EIO;
	if (!w->recovered)
		return fail(w, WAL_EINVAL, "wal_batch_add before wal_recover");
	if ((bad = walfmt_rec_check(op, b, klen, vlen)) != NULL)
		return fail(w, WAL_EINVAL, "bad record: %s (op %d klen %u vlen %u)", bad, op, klen,
			    vlen);
	if ((klen > 0 && key == NULL) || (vlen > 0 && val == NULL))
		return fail(w, WAL_EINVAL, "bad record: NULL key or value (op %d klen %u vlen %u)",
			    op, klen, vlen);
	if (seq <= floor)
		return fail(w, WAL_EINVAL, "seq %" PRIu64 " not above %" PRIu64, seq, floor);
	return WAL_OK;
}

int wal_batch_add(struct wal *w, uint64_t seq, int op, const struct walfmt_batch *b,
		  const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	uint64_t size;
	int rc;

	if (w->mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (op == WALFMT_OP_DEL || op == WALFMT_OP_PDEL)
		vlen = 0; /* an effect: "the key is gone" has no value */
	if ((rc = add_check(w, seq, op, b, key, klen, val, vlen)) != WAL_OK)
		return rc;
	size = walfmt_rec_size(op, klen, vlen);
	if (wal_batch_bytes(w) + size > WALFMT_BATCH_MAX)
		return fail(w, WAL_EFULL, "batch would pass %u bytes", WALFMT_BATCH_MAX);
	if ((rc = batch_reserve(w, size)) != WAL_OK)
		return rc;
	walfmt_rec_encode(w->buf + w->buf_len, seq, op, b, key, klen, val, vlen);
	w->buf_len += size;
	if (w->batch_nrec++ == 0)
		w->batch_first_seq = seq;
	w->batch_last_seq = seq;
	return WAL_OK;
}

/* A commit failed after (part of) the frame may have reached the file: cut
 * the file back to the batch start so recovery cannot replay it. If even
 * that fails, the partial frame's checksum still makes it a torn tail. */
static int commit_fail(struct wal *w, const char *what, int neg_errno)
{
	int rc = io_fail(w, what, w->write_off, neg_errno);

	if (walio_truncate(w->fd, (off_t)w->write_off) == 0)
		w->alloc_end = w->write_off;
	return rc;
}

int wal_batch_commit(struct wal *w)
{
	uint64_t total;
	int rc;

	if (w->mode == WAL_SYNC_NONE || w->batch_nrec == 0)
		return w->failed ? WAL_EIO : WAL_OK;
	if (w->failed)
		return WAL_EIO;
	if (!w->recovered)
		return fail(w, WAL_EINVAL, "wal_batch_commit before wal_recover");
	total = walfmt_frame_seal(w->buf, w->buf_len - WALFMT_FRAME_HDR, w->batch_nrec,
				  w->batch_first_seq);
	if ((rc = seg_ensure(w, total)) != WAL_OK)
		return rc;
	if ((rc = walio_pwrite(w->fd, w->buf, total, (off_t)w->write_off)) < 0)
		return commit_fail(w, "write of a batch", rc);
	AMORA_PROBE(log__write, w->shard_id, total, w->batch_nrec);
	if (w->mode == WAL_SYNC_ALWAYS) {
		if ((rc = walio_datasync(w->fd)) < 0)
			return commit_fail(w, "fdatasync of a batch", rc);
		w->stat_syncs++;
		AMORA_PROBE(log__sync, w->shard_id, w->batch_last_seq);
	} else if (!w->dirty) {
		w->dirty = 1;
		w->dirty_since_ns = shm_now_ns();
	}
	w->write_off += total;
	w->last_seq = w->batch_last_seq;
	w->stat_batches++;
	w->stat_records += w->batch_nrec;
	w->stat_bytes += total;
	wal_batch_begin(w);
	return WAL_OK;
}

/* =====================================================================
 * Syncing, dropping old segments
 * ===================================================================== */

int wal_sync(struct wal *w)
{
	int rc;

	if (w->failed)
		return WAL_EIO;
	if (w->mode == WAL_SYNC_NONE || !w->dirty || w->fd < 0)
		return WAL_OK;
	/* No cut-back here: these batches were acknowledged after write(2). */
	if ((rc = walio_datasync(w->fd)) < 0)
		return io_fail(w, "fdatasync", w->write_off, rc);
	w->dirty = 0;
	w->stat_syncs++;
	AMORA_PROBE(log__sync, w->shard_id, w->last_seq);
	return WAL_OK;
}

int wal_sync_if_due(struct wal *w, uint64_t now)
{
	int64_t due = wal_next_sync_ns(w);

	if (w->failed)
		return WAL_EIO;
	if (due < 0 || now < (uint64_t)due)
		return WAL_OK;
	return wal_sync(w);
}

int64_t wal_next_sync_ns(const struct wal *w)
{
	if (w->mode != WAL_SYNC_PERIODIC || !w->dirty)
		return -1;
	return (int64_t)(w->dirty_since_ns + w->sync_interval_ns);
}

int wal_rotate(struct wal *w)
{
	if (w->mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (w->failed)
		return WAL_EIO;
	return seg_finish(w);
}

int wal_drop_dir(const char *dir, uint64_t seq, uint64_t count_below, uint64_t *left_bytes, char *why,
		 size_t whylen)
{
	struct wal tmp = { .dir = (char *)dir, .fd = -1 };
	uint64_t *segs = NULL;
	size_t n = 0, dropped = 0;
	char name[WALFMT_NAME_LEN + 1];
	struct stat st;
	int rc;

	*left_bytes = 0;
	tmp.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tmp.dirfd < 0) {
		snprintf(why, whylen, "%s: cannot open directory: %s", dir, strerror(errno));
		return WAL_EIO;
	}
	rc = list_segments(&tmp, &segs, &n);
	/* Segment i holds seqs below segs[i+1]; the newest is never dropped. */
	for (size_t i = 0; rc == WAL_OK && i < n; i++) {
		walfmt_seg_name(name, segs[i]);
		if (i + 1 < n && segs[i + 1] - 1 <= seq) {
			if (unlinkat(tmp.dirfd, name, 0) < 0)
				rc = fail(&tmp, WAL_EIO, "%s/%s: unlink: %s", dir, name, strerror(errno));
			dropped++;
		} else if (segs[i] < count_below && fstatat(tmp.dirfd, name, &st, 0) == 0) {
			*left_bytes += (uint64_t)st.st_size;
		}
	}
	free(segs);
	if (rc == WAL_OK && dropped > 0 && fsync(tmp.dirfd) != 0)
		rc = fail(&tmp, WAL_EIO, "%s: fsync: %s", dir, strerror(errno));
	if (rc != WAL_OK)
		snprintf(why, whylen, "%s", tmp.err);
	close(tmp.dirfd);
	return rc;
}

int wal_drop_upto(struct wal *w, uint64_t seq)
{
	uint64_t left;
	int rc;

	if (w->mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (w->failed)
		return WAL_EIO;
	if (w->dirfd < 0)
		return fail(w, WAL_EINVAL, "log not open");
	rc = wal_drop_dir(w->dir, seq, 0, &left, w->err, sizeof(w->err));
	if (rc == WAL_EIO)
		w->failed = 1;
	return rc;
}
