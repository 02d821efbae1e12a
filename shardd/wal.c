/*
 * wal.c — the write-ahead log of one shard: format, append, recovery.
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
 * What follows a bad frame decides what the damage is:
 *   - nothing, or only zeros (the preallocated rest of the file), or bytes
 *     that hold no intact frame: a TORN TAIL, the normal result of a crash
 *     in the middle of a write. It is cut off (the file is truncated at the
 *     end of the last good frame and synced, so new frames follow the good
 *     prefix and no stale bytes can ever follow them) with a log_warn naming
 *     file and offset.
 *   - an intact frame: the damage is INSIDE the log (bit rot, a bug, a lost
 *     block). Skipping it would silently drop acknowledged writes and then
 *     apply later ones on top, so recovery stops with WAL_ECORRUPT and a
 *     message naming file and offset; a human decides.
 * A segment is closed with its size trimmed and an fdatasync before the
 * next one is created, so only the LAST segment can have a torn tail: any
 * damage in an earlier segment is corruption.
 *
 * Recovery never truncates valid data: it cuts only bytes after the last
 * intact frame, so any number of recover -> append -> recover cycles keeps
 * everything (AmoraDB truncated its WAL after replay and lost all data at
 * the second restart).
 *
 * Files
 * -----
 * DIR/wal-XXXXXXXXXXXXXXXX.log, XXXX.. = the seq of the segment's first
 * record as 16 lowercase hex digits, so names sort like seqs. Other files in
 * DIR (checkpoints) are not ours and are ignored. A segment is created when
 * a batch is committed and there is no current segment or the batch would
 * take the current one past segment_bytes (64 MiB by default). Its size
 * grows ahead of the writes by fallocate in steps of WAL_PREALLOC_STEP
 * (fdatasync into allocated space is 30-60 % cheaper here), so the file
 * normally ends in zeros after the last frame.
 *
 * Format (all integers little-endian)
 * -----------------------------------
 * Segment header, 40 bytes at offset 0:
 *
 *     0   u32  magic      0x4c574d41, the bytes "AMWL"
 *     4   u32  version    1
 *     8   u32  shard_id   the shard that owns the directory
 *     12  u32  hdr_size   40
 *     16  u64  first_seq  == the seq in the file name, >= 1
 *     24  u64  prev_seq   last seq logged before this segment (0: none), < first_seq
 *     32  u32  reserved   0
 *     36  u32  crc        CRC32C of bytes 0..35
 *
 * prev_seq chains the segments: a segment that goes missing between two
 * others breaks the chain and is reported, although seqs may have gaps.
 * The first segment's prev_seq says after which seq the log begins (older
 * segments are dropped once a checkpoint covers them): a checkpoint older
 * than that would leave a hole, which the caller can check (wal.base_seq).
 *
 * Then frames, back to back, each starting at an 8-aligned offset (40, ...):
 *
 *     0   u32  magic      0x46574d41, the bytes "AMWF"
 *     4   u32  hdr_crc    CRC32C of frame bytes 8..31
 *     8   u32  len        bytes of records, 17 .. WAL_BATCH_MAX (2^30)
 *     12  u32  nrec       number of records, >= 1
 *     16  u64  first_seq  seq of the first record
 *     24  u32  body_crc   CRC32C of the len record bytes and the pad
 *     28  u32  reserved   0
 *     32  records (len bytes), then pad: zero bytes up to the next multiple
 *         of 8; the frame is 32 + align8(len) bytes.
 *
 * Record, back to back inside the frame (no alignment):
 *
 *     0   u64  seq
 *     8   u8   op         1 = SET (key now holds value), 2 = DEL (key gone)
 *     9   u8   reserved   0
 *     10  u16  klen       1 .. 4096 (SHM_KEY_MAX)
 *     12  u32  vlen       0 .. 1 MiB (SHM_VALUE_MAX); 0 for DEL
 *     16  klen bytes of key, then vlen bytes of value
 *
 * Validity rules
 * --------------
 * Segment header: magic and crc right, else the header is damaged; a
 * damaged header followed by no intact frame is a torn file (only the last
 * segment may be one: it is removed), otherwise corruption. With a right
 * crc, version, hdr_size, reserved, shard_id, first_seq (equal to the
 * name's) and prev_seq (below first_seq; equal to the last seq of the
 * segment before, if any) must hold, else corruption.
 *
 * A frame is INTACT when its magic, hdr_crc, and body_crc match and the
 * whole frame lies inside the file. It is VALID when it is intact and:
 * reserved == 0, len and nrec in range, exactly nrec records fill exactly
 * len bytes, every record has op 1 or 2, reserved 0, klen and vlen in range
 * (vlen 0 for DEL), the first record's seq equals first_seq, seqs strictly
 * increase within the frame and across frames and segments, the first frame
 * of a segment starts at the segment's first_seq, and the pad is zeros. An
 * intact frame that is not valid is corruption (the checksums say the bytes
 * are what the writer wrote, so the writer broke a rule).
 *
 * Scanning a segment: frames are taken while valid. At the first offset
 * that is not a valid frame: if it is the end of the file, or only zeros
 * follow up to the end, the segment ends cleanly; else an intact frame
 * anywhere after it (at 8-aligned offsets) means corruption; else the tail
 * is torn. When the bad frame's header is intact, the search starts after
 * the extent it claims (for a frame cut short by the end of the file: no
 * search at all), so a half-written value that happens to contain the bytes
 * of a frame cannot pass for one.
 *
 * A segment holding no frame is possible only as the last one (a crash
 * between creating it and writing the first frame); recovery removes it,
 * because its name promises a first seq the next batch may not have.
 *
 * Appending, and its failures
 * ---------------------------
 * The batch is built in a private buffer (a 32-byte slot for the frame
 * header, then the records), sealed at commit (pad, both CRCs) and written
 * with one pwrite at the end of the last valid frame; "always" adds one
 * fdatasync. Every write, sync, truncate and fallocate goes through walio.c,
 * whose fault plan lets tests fail, tear or drop any of them. If the write
 * or (in "always" mode) the sync fails, the batch was not acknowledged, so
 * the file is truncated back to the batch start; if even that fails, the
 * partial frame fails its checksum and is a torn tail. Either way recovery
 * cannot replay it. The log then refuses everything with WAL_EIO: after a
 * failed write or fdatasync the page cache cannot be trusted, so the shard
 * exits and recovers from the file in a new process. A failed periodic sync
 * does not cut anything: those batches were acknowledged after write(2).
 *
 * Reading
 * -------
 * Recovery maps each segment read-only (MAP_POPULATE, sequential) and
 * decodes it in memory: no per-record syscall, CRC32C at ~9 GB/s, and the
 * same decoder (wal_scan_buf) runs under the fuzzer on plain buffers.
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
#include "shm/crc32c.h"
#include "shardd/log.h"
#include "shm/record.h"
#include "shardd/wal.h"
#include "shardd/walio.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the WAL format is little-endian");

#define SEG_MAGIC 0x4c574d41u   /* "AMWL" */
#define SEG_VERSION 1u
#define SEG_HDR 40u
#define FRAME_MAGIC 0x46574d41u /* "AMWF" */
#define FRAME_HDR 32u
#define REC_HDR 16u
#define REC_MIN (REC_HDR + 1u)
#define NAME_LEN 24             /* "wal-" + 16 hex + ".log" */

/* ---- little helpers ---- */

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t ld64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void st64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

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

__attribute__((format(printf, 2, 3)))
static void why(struct wal_scan *sc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sc->why, sizeof(sc->why), fmt, ap);
	va_end(ap);
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
 * Decoding a segment in memory. Everything here works on (buf, len) only,
 * so the fuzzer runs exactly the code recovery runs.
 * ===================================================================== */

struct frame {
	uint32_t len, nrec, body_crc, reserved;
	uint64_t first_seq;
	uint64_t total;   /* 32 + align8(len) */
};

enum frame_state {
	F_NOHDR,      /* no intact frame header here */
	F_TRUNCATED,  /* intact header, the frame runs past the end of the buffer */
	F_BADBODY,    /* intact header, body checksum wrong */
	F_INTACT,     /* both checksums right, frame inside the buffer */
};

/* Checksums and extent only; the rules come later (frame_rules). */
static enum frame_state frame_at(const uint8_t *buf, size_t len, uint64_t off, struct frame *f)
{
	const uint8_t *p = buf + off;

	if (len - off < FRAME_HDR || ld32(p) != FRAME_MAGIC ||
	    shm_crc32c(p + 8, FRAME_HDR - 8) != ld32(p + 4))
		return F_NOHDR;
	f->len = ld32(p + 8);
	f->nrec = ld32(p + 12);
	f->first_seq = ld64(p + 16);
	f->body_crc = ld32(p + 24);
	f->reserved = ld32(p + 28);
	f->total = FRAME_HDR + align8(f->len);
	if (f->total > len - off)
		return F_TRUNCATED;
	if (shm_crc32c(p + FRAME_HDR, f->total - FRAME_HDR) != f->body_crc)
		return F_BADBODY;
	return F_INTACT;
}

/* One record header at p (n bytes left); 0 if it breaks a rule. */
static int record_ok(const uint8_t *p, uint64_t n, uint64_t prev_seq, struct wal_scan *sc,
		     uint64_t *size)
{
	uint64_t seq;
	uint32_t klen, vlen;
	uint8_t op;

	if (n < REC_HDR)
		return why(sc, "record header runs past the frame"), 0;
	seq = ld64(p);
	op = p[8];
	klen = ld16(p + 10);
	vlen = ld32(p + 12);
	if (seq <= prev_seq)
		return why(sc, "seq %" PRIu64 " not above %" PRIu64, seq, prev_seq), 0;
	if ((op != WAL_OP_SET && op != WAL_OP_DEL) || p[9] != 0)
		return why(sc, "bad op %u/%u at seq %" PRIu64, op, p[9], seq), 0;
	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX ||
	    (op == WAL_OP_DEL && vlen != 0))
		return why(sc, "bad lengths klen %u vlen %u at seq %" PRIu64, klen, vlen, seq), 0;
	*size = REC_HDR + (uint64_t)klen + vlen;
	if (*size > n)
		return why(sc, "record at seq %" PRIu64 " runs past the frame", seq), 0;
	return 1;
}

/* The rules of an intact frame at p (see the top comment). */
static int frame_rules(const uint8_t *p, const struct frame *f, uint64_t prev_seq,
		       uint64_t seg_first, int first_in_seg, struct wal_scan *sc)
{
	const uint8_t *r = p + FRAME_HDR;
	uint64_t left = f->len, seq = prev_seq, size;

	if (f->reserved != 0 || f->len < REC_MIN || f->len > WAL_BATCH_MAX || f->nrec == 0)
		return why(sc, "bad frame header (len %u, nrec %u)", f->len, f->nrec), 0;
	if (first_in_seg && f->first_seq != seg_first)
		return why(sc, "first frame starts at seq %" PRIu64 ", segment at %" PRIu64,
			   f->first_seq, seg_first), 0;
	if (f->first_seq <= prev_seq)
		return why(sc, "seq goes backwards: frame starts at %" PRIu64 " after %" PRIu64,
			   f->first_seq, prev_seq), 0;
	for (uint32_t i = 0; i < f->nrec; i++) {
		if (!record_ok(r, left, seq, sc, &size))
			return 0;
		if (i == 0 && ld64(r) != f->first_seq)
			return why(sc, "first record seq %" PRIu64 " != frame first_seq %" PRIu64,
				   ld64(r), f->first_seq), 0;
		seq = ld64(r);
		r += size;
		left -= size;
	}
	if (left != 0)
		return why(sc, "%" PRIu64 " bytes after the last of %u records", left, f->nrec), 0;
	for (uint64_t i = f->len; i < align8(f->len); i++)
		if (p[FRAME_HDR + i] != 0)
			return why(sc, "non-zero pad"), 0;
	return 1;
}

/* Call fn for each record of a frame that passed frame_rules. */
static int frame_apply(const uint8_t *p, const struct frame *f, wal_apply_fn fn, void *arg,
		       struct wal_scan *sc)
{
	const uint8_t *r = p + FRAME_HDR;

	for (uint32_t i = 0; i < f->nrec; i++) {
		uint64_t seq = ld64(r);
		uint32_t klen = ld16(r + 10), vlen = ld32(r + 12);
		int rc = fn != NULL ? fn(arg, seq, r[8], r + REC_HDR, klen, r + REC_HDR + klen, vlen) : 0;

		if (rc != 0) {
			why(sc, "replay callback returned %d at seq %" PRIu64, rc, seq);
			return WAL_EAPPLY;
		}
		sc->last_seq = seq;
		r += REC_HDR + (uint64_t)klen + vlen;
	}
	return WAL_OK;
}

static int all_zero(const uint8_t *p, size_t n)
{
	while (n >= 8) {
		if (ld64(p) != 0)
			return 0;
		p += 8;
		n -= 8;
	}
	while (n > 0) {
		if (*p++ != 0)
			return 0;
		n--;
	}
	return 1;
}

/* First 8-aligned offset >= from holding an intact frame, or 0. */
static uint64_t find_intact(const uint8_t *buf, size_t len, uint64_t from)
{
	struct frame f;

	for (uint64_t off = align8(from); off + FRAME_HDR <= len; off += 8)
		if (ld32(buf + off) == FRAME_MAGIC && frame_at(buf, len, off, &f) == F_INTACT)
			return off;
	return 0;
}

/* Damage starts at `bad`: a torn tail unless an intact frame follows. */
static void classify_tail(const uint8_t *buf, size_t len, uint64_t bad, uint64_t skip_to,
			  struct wal_scan *sc)
{
	uint64_t next = skip_to < len ? find_intact(buf, len, skip_to) : 0;
	size_t n = strlen(sc->why);

	sc->bad_off = bad;
	if (next == 0) {
		sc->status = WAL_SCAN_TORN;
		return;
	}
	snprintf(sc->why + n, sizeof(sc->why) - n, ", yet an intact frame follows at offset %" PRIu64,
		 next);
	sc->status = WAL_SCAN_CORRUPT;
}

static void corrupt(struct wal_scan *sc, uint64_t off)
{
	sc->status = WAL_SCAN_CORRUPT;
	sc->bad_off = off;
}

/* Segment header; returns 1 when frames may follow at SEG_HDR. */
static int seg_header_ok(const uint8_t *buf, size_t len, struct wal_scan *sc, uint64_t *first)
{
	if (len < SEG_HDR || ld32(buf) != SEG_MAGIC || shm_crc32c(buf, 36) != ld32(buf + 36)) {
		why(sc, len < SEG_HDR ? "file shorter than its header" : "segment header damaged");
		sc->end = 0;
		if (len < SEG_HDR || all_zero(buf, len))
			sc->status = WAL_SCAN_TORN;
		else
			classify_tail(buf, len, 0, SEG_HDR, sc);
		return 0;
	}
	*first = ld64(buf + 16);
	sc->base_seq = ld64(buf + 24);
	if (ld32(buf + 4) != SEG_VERSION || ld32(buf + 12) != SEG_HDR || ld32(buf + 32) != 0)
		why(sc, "unsupported segment header (version %u)", ld32(buf + 4));
	else if (ld32(buf + 8) != sc->shard_id)
		why(sc, "segment belongs to shard %u, not %u", ld32(buf + 8), sc->shard_id);
	else if (*first == 0 || (sc->name_seq != 0 && *first != sc->name_seq))
		why(sc, "header first seq %" PRIu64 " does not match the name", *first);
	else if (sc->base_seq >= *first)
		why(sc, "header prev seq %" PRIu64 " not below first seq %" PRIu64, sc->base_seq,
		    *first);
	else if (sc->chained && sc->base_seq != sc->prev_seq)
		why(sc, "segment follows seq %" PRIu64 " but the segment before ends at %" PRIu64
		    " (a segment is missing or seqs go backwards)", sc->base_seq, sc->prev_seq);
	else
		return 1;
	corrupt(sc, 0);
	return 0;
}

/* The bytes at off are not a valid frame (state st, frame f if it has an
 * intact header): decide between clean end, torn tail and corruption. */
static void scan_stop(const uint8_t *buf, size_t len, uint64_t off, enum frame_state st,
		      const struct frame *f, struct wal_scan *sc)
{
	sc->end = off;
	if (all_zero(buf + off, len - off)) {
		sc->status = WAL_SCAN_CLEAN;
		return;
	}
	if (st == F_NOHDR)
		why(sc, "no intact frame header");
	else if (st == F_TRUNCATED)
		why(sc, "frame of %" PRIu64 " bytes runs past the end of the file", f->total);
	else
		why(sc, "frame body checksum mismatch");
	/* An intact header's length is what the writer wrote: look past it. */
	classify_tail(buf, len, off, st == F_NOHDR ? off + 8 : off + f->total, sc);
}

int wal_scan_buf(const void *vbuf, size_t len, wal_apply_fn fn, void *arg, struct wal_scan *sc)
{
	const uint8_t *buf = vbuf;
	uint64_t off = SEG_HDR, first = 0;
	struct frame f;
	enum frame_state st = F_NOHDR;

	sc->status = WAL_SCAN_CLEAN;
	sc->end = sc->bad_off = sc->frames = sc->records = 0;
	sc->base_seq = 0;
	sc->why[0] = '\0';
	sc->last_seq = sc->prev_seq;
	if (!seg_header_ok(buf, len, sc, &first))
		return WAL_OK;
	if (!sc->chained)
		sc->last_seq = sc->base_seq;
	while (off < len) {
		st = frame_at(buf, len, off, &f);
		if (st != F_INTACT)
			break;
		if (!frame_rules(buf + off, &f, sc->last_seq, first, sc->frames == 0, sc)) {
			sc->end = off;
			corrupt(sc, off);
			return WAL_OK;
		}
		if (frame_apply(buf + off, &f, fn, arg, sc) != WAL_OK) {
			sc->end = off;
			return WAL_EAPPLY;
		}
		sc->frames++;
		sc->records += f.nrec;
		off += f.total;
	}
	if (off >= len) {
		sc->end = len;
		return WAL_OK;
	}
	scan_stop(buf, len, off, st, &f, sc);
	return WAL_OK;
}

/* =====================================================================
 * Segment files
 * ===================================================================== */

static void seg_name(char out[32], uint64_t seq)
{
	snprintf(out, 32, "wal-%016" PRIx64 ".log", seq);
}

static int parse_seg_name(const char *name, uint64_t *seq)
{
	uint64_t v = 0;

	if (strlen(name) != NAME_LEN || strncmp(name, "wal-", 4) != 0 ||
	    strcmp(name + 20, ".log") != 0)
		return 0;
	for (int i = 4; i < 20; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return 0;
		v = v << 4 | (uint64_t)d;
	}
	*seq = v;
	return 1;
}

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
		if (!parse_seg_name(de->d_name, &seq))
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

/* Make the file at least `need` bytes of allocated space, ahead by a step. */
static int seg_grow(struct wal *w, uint64_t need)
{
	uint64_t step = w->segment_bytes < WAL_PREALLOC_STEP ? w->segment_bytes : WAL_PREALLOC_STEP;
	uint64_t target = (w->alloc_end / step + 1) * step; /* the next step boundary */
	int rc;

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

static void seg_header(uint8_t h[SEG_HDR], uint32_t shard_id, uint64_t first_seq,
		       uint64_t prev_seq)
{
	memset(h, 0, SEG_HDR);
	st32(h, SEG_MAGIC);
	st32(h + 4, SEG_VERSION);
	st32(h + 8, shard_id);
	st32(h + 12, SEG_HDR);
	st64(h + 16, first_seq);
	st64(h + 24, prev_seq);
	st32(h + 36, shm_crc32c(h, 36));
}

/* Header, allocation, file and directory synced before any frame goes
 * in, so the new name survives a power cut. */
static int seg_init(struct wal *w, uint64_t first_seq)
{
	uint8_t h[SEG_HDR];
	int rc;

	seg_header(h, w->shard_id, first_seq, w->last_seq);
	if ((rc = walio_pwrite(w->fd, h, SEG_HDR, 0)) < 0)
		return io_fail(w, "write of the segment header", 0, rc);
	w->write_off = w->alloc_end = SEG_HDR;
	if ((rc = seg_grow(w, SEG_HDR + 1)) != WAL_OK)
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

	seg_name(w->seg_name, first_seq);
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

	if (w->fd >= 0 && w->write_off > SEG_HDR && w->write_off + need > w->segment_bytes &&
	    (rc = seg_finish(w)) != WAL_OK)
		return rc;
	if (w->fd < 0 && (rc = seg_create(w, w->batch_first_seq)) != WAL_OK)
		return rc;
	return seg_grow(w, w->write_off + need);
}

/* =====================================================================
 * Open, close
 * ===================================================================== */

static const char *const sync_names[] = { "always", "periodic", "none" };

const char *wal_sync_name(enum wal_sync_mode m)
{
	return (unsigned)m < 3 ? sync_names[m] : "unknown";
}

int wal_sync_parse(const char *name)
{
	for (int m = 0; m < 3; m++)
		if (strcmp(name, sync_names[m]) == 0)
			return m;
	return -1;
}

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

/* Map a whole segment read-only; *map NULL for an empty file. */
static int seg_map(struct wal *w, int fd, const char *name, const uint8_t **map, size_t *len)
{
	struct stat st;
	void *p;

	*map = NULL;
	if (fstat(fd, &st) < 0)
		return fail(w, WAL_EIO, "%s/%s: fstat: %s", w->dir, name, strerror(errno));
	*len = (size_t)st.st_size;
	if (*len == 0)
		return WAL_OK;
	p = mmap(NULL, *len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (p == MAP_FAILED)
		return fail(w, WAL_EIO, "%s/%s: mmap: %s", w->dir, name, strerror(errno));
	madvise(p, *len, MADV_SEQUENTIAL);
	*map = p;
	return WAL_OK;
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
static int seg_adopt(struct wal *w, int fd, const char *name, const struct wal_scan *sc,
		     size_t len)
{
	int rc;

	if (sc->status == WAL_SCAN_TORN)
		log_warn("wal: %s/%s: torn tail at offset %" PRIu64 " (%s): cutting %" PRIu64
			 " bytes", w->dir, name, sc->bad_off, sc->why, (uint64_t)len - sc->end);
	if (sc->frames == 0) {
		close(fd);
		if (sc->status != WAL_SCAN_TORN)
			log_info("wal: %s/%s: no frame in the last segment, removing it", w->dir, name);
		return seg_remove(w, name);
	}
	w->fd = fd;
	snprintf(w->seg_name, sizeof(w->seg_name), "%s", name);
	w->seg_first_seq = sc->name_seq;
	w->write_off = sc->end;
	w->alloc_end = len;
	if (sc->status != WAL_SCAN_TORN)
		return WAL_OK;
	/* Cut and sync before appending, so stale bytes never follow new frames. */
	if ((rc = walio_truncate(fd, (off_t)sc->end)) < 0)
		return io_fail(w, "truncate of the torn tail", sc->end, rc);
	if ((rc = walio_datasync(fd)) < 0)
		return io_fail(w, "fdatasync of the cut", sc->end, rc);
	w->alloc_end = sc->end;
	return WAL_OK;
}

static int scan_report(struct wal *w, const char *name, const struct wal_scan *sc, int last)
{
	if (sc->status == WAL_SCAN_CORRUPT)
		return fail(w, WAL_ECORRUPT, "%s/%s: corrupt at offset %" PRIu64 ": %s", w->dir,
			    name, sc->bad_off, sc->why);
	if (last)
		return WAL_OK;
	if (sc->status == WAL_SCAN_TORN)
		return fail(w, WAL_ECORRUPT, "%s/%s: damaged at offset %" PRIu64
			    " in a segment that is not the last: %s", w->dir, name, sc->bad_off, sc->why);
	if (sc->frames == 0)
		return fail(w, WAL_ECORRUPT, "%s/%s: segment holds no frame but is not the last",
			    w->dir, name);
	return WAL_OK;
}

/* Open segment `seq` (its name into name[32]). */
static int seg_open(struct wal *w, uint64_t seq, int flags, char name[32], int *fd)
{
	seg_name(name, seq);
	*fd = openat(w->dirfd, name, flags | O_CLOEXEC);
	if (*fd < 0)
		return fail(w, WAL_EIO, "%s/%s: open: %s", w->dir, name, strerror(errno));
	return WAL_OK;
}

/* Map the open segment and scan at most `cap` bytes of it, calling fn
 * (*len: the file's size). */
static int seg_scan(struct wal *w, int fd, const char *name, size_t cap, wal_apply_fn fn, void *arg,
		    struct wal_scan *sc, size_t *len)
{
	const uint8_t *map;
	int rc = seg_map(w, fd, name, &map, len);

	if (rc != WAL_OK)
		return rc;
	rc = wal_scan_buf(map, *len < cap ? *len : cap, fn, arg, sc);
	if (map != NULL)
		munmap((void *)map, *len);
	if (rc == WAL_EAPPLY)
		return fail(w, WAL_EAPPLY, "%s/%s: offset %" PRIu64 ": %s", w->dir, name, sc->end, sc->why);
	return rc;
}

/* Replay one segment; the last one is kept open for appends. */
static int recover_segment(struct wal *w, uint64_t seq, int first, int last, wal_apply_fn fn,
			   void *arg)
{
	struct wal_scan sc = { .shard_id = w->shard_id, .name_seq = seq, .prev_seq = w->last_seq,
			       .chained = !first };
	char name[32];
	size_t len = 0;
	int fd, rc = seg_open(w, seq, last ? O_RDWR : O_RDONLY, name, &fd);

	if (rc != WAL_OK)
		return rc;
	rc = seg_scan(w, fd, name, SIZE_MAX, fn, arg, &sc, &len);
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

int wal_recover(struct wal *w, wal_apply_fn fn, void *arg, uint64_t *last_seq)
{
	uint64_t *segs = NULL;
	size_t n = 0;
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
	for (size_t i = 0; i < n && rc == WAL_OK; i++)
		rc = recover_segment(w, segs[i], i == 0, i + 1 == n, fn, arg);
	free(segs);
	*last_seq = w->last_seq;
	if (rc == WAL_OK)
		w->recovered = 1;
	return rc;
}

/* Replay one segment again, read-only, up to where recovery left it (the
 * current segment ends in preallocated zeros past write_off). */
static int replay_segment(struct wal *w, uint64_t seq, int first, uint64_t *prev, wal_apply_fn fn,
			  void *arg)
{
	struct wal_scan sc = { .shard_id = w->shard_id, .name_seq = seq, .prev_seq = *prev,
			       .chained = !first };
	size_t cap = w->fd >= 0 && seq == w->seg_first_seq ? (size_t)w->write_off : SIZE_MAX, len;
	char name[32];
	int fd, rc = seg_open(w, seq, O_RDONLY, name, &fd);

	if (rc != WAL_OK)
		return rc;
	rc = seg_scan(w, fd, name, cap, fn, arg, &sc, &len);
	close(fd);
	if (rc == WAL_OK && sc.status != WAL_SCAN_CLEAN)
		rc = fail(w, WAL_ECORRUPT, "%s/%s: changed since recovery at offset %" PRIu64 ": %s",
			  w->dir, name, sc.bad_off, sc.why);
	if (rc == WAL_OK)
		*prev = sc.last_seq;
	return rc;
}

int wal_replay(struct wal *w, wal_apply_fn fn, void *arg)
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
	for (size_t i = 0; i < n && rc == WAL_OK; i++)
		rc = replay_segment(w, segs[i], i == 0, &prev, fn, arg);
	free(segs);
	return rc;
}

/* =====================================================================
 * Appending
 * ===================================================================== */

void wal_batch_begin(struct wal *w)
{
	w->buf_len = FRAME_HDR; /* the header is filled in at commit */
	w->batch_nrec = 0;
	w->batch_first_seq = w->batch_last_seq = 0;
}

size_t wal_batch_bytes(const struct wal *w)
{
	return w->batch_nrec ? w->buf_len - FRAME_HDR : 0;
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

static int add_check(struct wal *w, uint64_t seq, int op, const void *key, uint32_t klen,
		     const void *val, uint32_t vlen)
{
	uint64_t floor = w->batch_nrec ? w->batch_last_seq : w->last_seq;

	if (w->failed)
		return WAL_EIO;
	if (!w->recovered)
		return fail(w, WAL_EINVAL, "wal_batch_add before wal_recover");
	if (op != WAL_OP_SET && op != WAL_OP_DEL)
		return fail(w, WAL_EINVAL, "bad op %d", op);
	if (key == NULL || klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX ||
	    (vlen > 0 && val == NULL))
		return fail(w, WAL_EINVAL, "bad record: op %d klen %u vlen %u", op, klen, vlen);
	if (seq <= floor)
		return fail(w, WAL_EINVAL, "seq %" PRIu64 " not above %" PRIu64, seq, floor);
	return WAL_OK;
}

int wal_batch_add(struct wal *w, uint64_t seq, int op, const void *key, uint32_t klen,
		  const void *val, uint32_t vlen)
{
	uint64_t size;
	uint8_t *r;
	int rc;

	if (w->mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (op == WAL_OP_DEL)
		vlen = 0; /* an effect: "the key is gone" has no value */
	size = REC_HDR + (uint64_t)klen + vlen;
	if ((rc = add_check(w, seq, op, key, klen, val, vlen)) != WAL_OK)
		return rc;
	if (wal_batch_bytes(w) + size > WAL_BATCH_MAX)
		return fail(w, WAL_EFULL, "batch would pass %u bytes", WAL_BATCH_MAX);
	if ((rc = batch_reserve(w, size)) != WAL_OK)
		return rc;
	r = w->buf + w->buf_len;
	st64(r, seq);
	r[8] = (uint8_t)op;
	r[9] = 0;
	st16(r + 10, (uint16_t)klen);
	st32(r + 12, vlen);
	memcpy(r + REC_HDR, key, klen);
	if (vlen > 0)
		memcpy(r + REC_HDR + klen, val, vlen);
	w->buf_len += size;
	if (w->batch_nrec++ == 0)
		w->batch_first_seq = seq;
	w->batch_last_seq = seq;
	return WAL_OK;
}

/* Pad, checksum and fill in the frame header; returns the frame length. */
static uint64_t batch_seal(struct wal *w)
{
	uint64_t len = w->buf_len - FRAME_HDR, total = FRAME_HDR + align8(len);
	uint8_t *h = w->buf;

	memset(w->buf + w->buf_len, 0, total - w->buf_len);
	st32(h, FRAME_MAGIC);
	st32(h + 8, (uint32_t)len);
	st32(h + 12, w->batch_nrec);
	st64(h + 16, w->batch_first_seq);
	st32(h + 24, shm_crc32c(h + FRAME_HDR, total - FRAME_HDR));
	st32(h + 28, 0);
	st32(h + 4, shm_crc32c(h + 8, FRAME_HDR - 8));
	return total;
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
	total = batch_seal(w);
	if ((rc = seg_ensure(w, total)) != WAL_OK)
		return rc;
	if ((rc = walio_pwrite(w->fd, w->buf, total, (off_t)w->write_off)) < 0)
		return commit_fail(w, "write of a batch", rc);
	if (w->mode == WAL_SYNC_ALWAYS) {
		if ((rc = walio_datasync(w->fd)) < 0)
			return commit_fail(w, "fdatasync of a batch", rc);
		w->stat_syncs++;
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

int wal_drop_upto(struct wal *w, uint64_t seq)
{
	uint64_t *segs = NULL;
	size_t n = 0, dropped = 0;
	char name[32];
	int rc;

	if (w->mode == WAL_SYNC_NONE)
		return WAL_OK;
	if (w->failed)
		return WAL_EIO;
	if (w->dirfd < 0)
		return fail(w, WAL_EINVAL, "log not open");
	if ((rc = list_segments(w, &segs, &n)) != WAL_OK)
		return rc;
	/* Segment i holds seqs below segs[i+1]; the newest is never dropped. */
	for (size_t i = 0; i + 1 < n && segs[i + 1] - 1 <= seq; i++, dropped++) {
		seg_name(name, segs[i]);
		if (unlinkat(w->dirfd, name, 0) < 0) {
			free(segs);
			return fail(w, WAL_EIO, "%s/%s: unlink: %s", w->dir, name, strerror(errno));
		}
	}
	free(segs);
	if (dropped > 0 && (rc = walio_fsync_dir(w->dirfd)) < 0)
		return fail(w, WAL_EIO, "%s: fsync: %s", w->dir, strerror(-rc));
	return WAL_OK;
}
