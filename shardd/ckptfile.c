/*
 * ckptfile.c — the byte format of a checkpoint file, its writer and its
 * reader (ckptfile.h; DESIGN.md §17 for what a checkpoint means).
 *
 * Names
 * -----
 * DATA_DIR/shard-NN/ckpt-CCCCCCCCCCCCCCCC-RRRRRRRRRRRRRRRR.lz4: C = the
 * covered seq, R = the replay seq (below), 16 lowercase hex digits each,
 * so names sort like covered seqs. While it is written the file is
 * <name>.tmp; a temp file is never read, and ckpt_list removes the ones a
 * crash left.
 *
 * Format
 * ------
 * The file is exactly one LZ4 frame (the LZ4 frame format 1.6.x, as liblz4
 * writes it) with block checksums and a content checksum, block size
 * 4 MiB, linked blocks, no content size, nothing before or after it: so
 * `lz4 -t FILE` checks it. Its decompressed content is, all integers
 * little-endian:
 *
 * Header, 64 bytes:
 *
 *     0   u32  magic       0x4b434d41, the bytes "AMCK"
 *     4   u32  version     1
 *     8   u32  shard_id    the shard whose directory holds it
 *     12  u32  hdr_size    64
 *     16  u64  covered     the shard's log position when the checkpoint
 *                          began: every write with seq <= covered is in
 *                          it, unless a later write (in the log after
 *                          `replay`) replaced or deleted its key
 *     24  u64  replay      <= covered: recovery applies the log's records
 *                          with seq > replay on top of the entries
 *     32  u64  boot        the data segment's boot id when it was written
 *     40  u64  created     CLOCK_REALTIME nanoseconds
 *     48  u64  reserved    0
 *     56  u32  reserved    0
 *     60  u32  crc         CRC32C of bytes 0..59
 *
 * Entries, back to back (no alignment); byte 4 is the type:
 *
 *   KV (a live key), 20 bytes + key + value:
 *     0   u32  crc         CRC32C of bytes 4 .. the entry's end
 *     4   u8   type        1
 *     5   u8   reserved    0
 *     6   u16  klen        1 .. 4096
 *     8   u32  vlen        0 .. 1 MiB
 *     12  u64  seq         the seq the key's value has in the log, >= 1
 *     20  klen bytes of key, then vlen bytes of value
 *
 *   DECISION (a batch decision this shard logged as primary that a part
 *   may still need, DESIGN.md §17), 28 bytes:
 *     0   u32  crc         CRC32C of bytes 4..27
 *     4   u8   type        2
 *     5   u8×3 reserved    0
 *     8   u32  primary     < 65536 (this shard)
 *     12  u64  boot        the batch id, as in walfmt.h's DECISION record
 *     20  u64  ref         != 0
 *
 * Footer, 56 bytes, the last bytes of the content:
 *     0   u32  crc         CRC32C of bytes 4..55
 *     4   u8   type        0xff
 *     5   u8×3 reserved    0
 *     8   u64  kvs         KV entries
 *     16  u64  decisions   DECISION entries
 *     24  u64  min_seq     smallest KV seq (0 when no KV)
 *     32  u64  max_seq     largest KV seq (0 when no KV)
 *     40  u64  entry_bytes bytes of all entries (header and footer excluded)
 *     48  u32  entries_crc CRC32C of all entry bytes, in order
 *     52  u32  reserved    0
 *
 * Validity rules: the frame decodes with every checksum right and ends
 * with the file; the header's magic, crc, version, hdr_size, reserved
 * fields, shard_id (the reader's) hold, and replay <= covered; every entry
 * has a known type, its crc, zero reserved bytes, lengths in range, seq >=
 * 1 (KV), primary < 65536 and ref != 0 (DECISION); a footer follows the
 * last entry, its crc, counts, seq range, entry_bytes and entries_crc
 * match the entries, and nothing follows it. A key may appear in more
 * than one KV entry (the walk starts over when the table is replaced,
 * ckpt.c): the entry with the larger seq is the key's. Anything else is
 * damage, and the file is refused whole (CKPT_EBAD, naming the byte offset
 * in the file and, inside the content, the offset there).
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

#include "shm/crc32c.h"
#include "shm/record.h"
#include "shardd/ckptfile.h"
#include "shardd/fmtbytes.h"
#include "shardd/walfmt.h"

#define CKPT_MAGIC 0x4b434d41u
#define CKPT_VERSION 1u
#define IN_FLUSH (256u << 10)           /* compress once this much is queued */
#define IN_CAP (2u << 20)               /* > IN_FLUSH + the largest entry */
#define WINDOW (4u << 20)               /* the reader's decompressed window */
#define ENTRY_MAX (CKPT_KV_HDR + SHM_KEY_MAX + SHM_VALUE_MAX)

_Static_assert(IN_FLUSH + ENTRY_MAX <= IN_CAP, "an entry always fits the queue");
_Static_assert(2 * ENTRY_MAX <= WINDOW, "the window holds an entry and what precedes it");

static int whyf(char *why, size_t len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int whyf(char *why, size_t len, int code, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && len > 0) {
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return code;
}

const char *ckpt_strerror(int code)
{
	switch (code) {
	case CKPT_OK: return "ok";
	case CKPT_EIO: return "I/O error";
	case CKPT_EBAD: return "damaged checkpoint";
	case CKPT_ENOMEM: return "out of memory";
	case CKPT_EINVAL: return "invalid argument";
	case CKPT_EAPPLY: return "entry callback failed";
	}
	return "unknown error";
}

/* ---------- names ---------- */

void ckpt_name(char out[CKPT_NAME_LEN + 1], uint64_t covered, uint64_t replay)
{
	snprintf(out, CKPT_NAME_LEN + 1, "ckpt-%016" PRIx64 "-%016" PRIx64 ".lz4", covered, replay);
}

int ckpt_name_parse(const char *name, uint64_t *covered, uint64_t *replay)
{
	return strlen(name) == CKPT_NAME_LEN && memcmp(name, "ckpt-", 5) == 0 && name[21] == '-' &&
	       strcmp(name + 38, ".lz4") == 0 && hex16(name + 5, covered) && hex16(name + 22, replay);
}

static int cmp_file(const void *a, const void *b)
{
	const struct ckpt_file *x = a, *y = b;

	return x->covered < y->covered ? -1 : x->covered > y->covered;
}

static int is_temp(const char *name)
{
	size_t n = strlen(name);
	char base[CKPT_NAME_LEN + 1];
	uint64_t c, r;

	if (n != CKPT_NAME_LEN + 4 || strcmp(name + CKPT_NAME_LEN, ".tmp") != 0)
		return 0;
	memcpy(base, name, CKPT_NAME_LEN);
	base[CKPT_NAME_LEN] = '\0';
	return ckpt_name_parse(base, &c, &r);
}

int ckpt_list(const char *dir, int remove_temps, struct ckpt_file **out, size_t *n, char *why,
	      size_t whylen)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct ckpt_file *v = NULL;
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	if (d == NULL)
		return errno == ENOENT ? CKPT_OK
				       : whyf(why, whylen, CKPT_EIO, "%s: cannot list: %s", dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		struct ckpt_file f;

		if (remove_temps && is_temp(de->d_name)) {
			unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (!ckpt_name_parse(de->d_name, &f.covered, &f.replay))
			continue;
		if (*n == cap) {
			struct ckpt_file *nv = realloc(v, (cap = cap ? cap * 2 : 8) * sizeof(*v));

			if (nv == NULL) {
				closedir(d);
				free(v);
				*n = 0;
				return whyf(why, whylen, CKPT_ENOMEM, "%s: out of memory listing checkpoints", dir);
			}
			v = nv;
		}
		v[(*n)++] = f;
	}
	closedir(d);
	if (*n > 1)
		qsort(v, *n, sizeof(*v), cmp_file);
	*out = v;
	return CKPT_OK;
}

/* ---------- writing ---------- */

static const LZ4F_preferences_t prefs = {
	.frameInfo = { .blockSizeID = LZ4F_max4MB, .blockMode = LZ4F_blockLinked,
		       .contentChecksumFlag = LZ4F_contentChecksumEnabled,
		       .blockChecksumFlag = LZ4F_blockChecksumEnabled },
	.compressionLevel = 0,
};

static int write_all(struct ckpt_writer *cw, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(cw->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return whyf(cw->why, sizeof(cw->why), CKPT_EIO, "%s: write at byte %" PRIu64 ": %s",
				    cw->tmp, cw->file_off, n < 0 ? strerror(errno) : "no progress");
		p += n;
		len -= (size_t)n;
		cw->file_off += (uint64_t)n;
	}
	return CKPT_OK;
}

static int lz4_fail(struct ckpt_writer *cw, size_t r)
{
	return whyf(cw->why, sizeof(cw->why), CKPT_EIO, "%s: LZ4: %s", cw->tmp, LZ4F_getErrorName(r));
}

/* Compress and write what is queued. */
static int flush_in(struct ckpt_writer *cw)
{
	size_t r;

	if (cw->inlen == 0)
		return CKPT_OK;
	r = LZ4F_compressUpdate(cw->cctx, cw->out, cw->outcap, cw->in, cw->inlen, NULL);
	if (LZ4F_isError(r))
		return lz4_fail(cw, r);
	cw->inlen = 0;
	return write_all(cw, cw->out, r);
}

/* Queue raw content bytes. */
static void put(struct ckpt_writer *cw, const void *p, size_t len)
{
	memcpy(cw->in + cw->inlen, p, len);
	cw->inlen += len;
	cw->raw_bytes += len;
}

/* Room for one more entry: below IN_FLUSH any entry fits (IN_CAP). */
static int entry_room(struct ckpt_writer *cw)
{
	return cw->inlen >= IN_FLUSH ? flush_in(cw) : CKPT_OK;
}

static void writer_free(struct ckpt_writer *cw)
{
	if (cw->fd >= 0)
		close(cw->fd);
	if (cw->dirfd >= 0)
		close(cw->dirfd);
	LZ4F_freeCompressionContext(cw->cctx);
	free(cw->in);
	free(cw->out);
	cw->fd = cw->dirfd = -1;
	cw->cctx = NULL;
	cw->in = cw->out = NULL;
}

int ckpt_writer_open(struct ckpt_writer *cw, const char *dir, uint32_t shard_id, uint64_t covered,
		     uint64_t replay, uint64_t boot)
{
	uint8_t h[CKPT_HDR] = { 0 };
	struct timespec ts;
	size_t r;

	memset(cw, 0, sizeof(*cw));
	cw->fd = cw->dirfd = -1;
	cw->shard_id = shard_id;
	ckpt_name(cw->name, covered, replay);
	snprintf(cw->tmp, sizeof(cw->tmp), "%s.tmp", cw->name);
	cw->outcap = LZ4F_compressBound(IN_CAP, &prefs) + LZ4F_HEADER_SIZE_MAX;
	cw->in = malloc(IN_CAP);
	cw->out = malloc(cw->outcap);
	if (cw->in == NULL || cw->out == NULL ||
	    LZ4F_isError(LZ4F_createCompressionContext(&cw->cctx, LZ4F_VERSION))) {
		writer_free(cw);
		return whyf(cw->why, sizeof(cw->why), CKPT_ENOMEM, "out of memory for a checkpoint");
	}
	cw->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cw->dirfd >= 0)
		cw->fd = openat(cw->dirfd, cw->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (cw->fd < 0) {
		int e = errno;

		writer_free(cw);
		return whyf(cw->why, sizeof(cw->why), CKPT_EIO, "%s/%s: create: %s", dir, cw->tmp, strerror(e));
	}
	r = LZ4F_compressBegin(cw->cctx, cw->out, cw->outcap, &prefs);
	if (LZ4F_isError(r) || write_all(cw, cw->out, r) != CKPT_OK) {
		if (LZ4F_isError(r))
			lz4_fail(cw, r);
		ckpt_writer_abort(cw);
		return CKPT_EIO;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	st32(h, CKPT_MAGIC);
	st32(h + 4, CKPT_VERSION);
	st32(h + 8, shard_id);
	st32(h + 12, CKPT_HDR);
	st64(h + 16, covered);
	st64(h + 24, replay);
	st64(h + 32, boot);
	st64(h + 40, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	st32(h + 60, shm_crc32c(h, 60));
	put(cw, h, sizeof(h));
	return CKPT_OK;
}

/* The entry just queued at `e` (len bytes): its crc, and the running one. */
static void seal_entry(struct ckpt_writer *cw, uint8_t *e, size_t len)
{
	st32(e, shm_crc32c(e + 4, len - 4));
	cw->crc = shm_crc32c_extend(cw->crc, e, len);
	cw->entry_bytes += len;
}

int ckpt_writer_kv(struct ckpt_writer *cw, uint64_t seq, const void *key, uint32_t klen,
		   const void *val, uint32_t vlen)
{
	size_t len = CKPT_KV_HDR + (size_t)klen + vlen;
	uint8_t *e;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX || vlen > SHM_VALUE_MAX || seq == 0)
		return whyf(cw->why, sizeof(cw->why), CKPT_EINVAL, "entry out of range (klen %u, vlen %u, seq %" PRIu64 ")",
			    klen, vlen, seq);
	if ((rc = entry_room(cw)) != CKPT_OK)
		return rc;
	e = cw->in + cw->inlen;
	memset(e, 0, CKPT_KV_HDR);
	e[4] = CKPT_KV;
	st16(e + 6, (uint16_t)klen);
	st32(e + 8, vlen);
	st64(e + 12, seq);
	memcpy(e + CKPT_KV_HDR, key, klen);
	if (vlen > 0)
		memcpy(e + CKPT_KV_HDR + klen, val, vlen);
	cw->inlen += len;
	cw->raw_bytes += len;
	seal_entry(cw, e, len);
	cw->kvs++;
	if (cw->min_seq == 0 || seq < cw->min_seq)
		cw->min_seq = seq;
	if (seq > cw->max_seq)
		cw->max_seq = seq;
	return CKPT_OK;
}

int ckpt_writer_decision(struct ckpt_writer *cw, uint64_t boot, uint64_t ref, uint32_t primary)
{
	uint8_t *e;
	int rc;

	if (ref == 0 || primary >= WALFMT_PRIMARY_MAX)
		return whyf(cw->why, sizeof(cw->why), CKPT_EINVAL, "decision out of range");
	if ((rc = entry_room(cw)) != CKPT_OK)
		return rc;
	e = cw->in + cw->inlen;
	memset(e, 0, CKPT_DECISION_BYTES);
	e[4] = CKPT_DECISION;
	st32(e + 8, primary);
	st64(e + 12, boot);
	st64(e + 20, ref);
	cw->inlen += CKPT_DECISION_BYTES;
	cw->raw_bytes += CKPT_DECISION_BYTES;
	seal_entry(cw, e, CKPT_DECISION_BYTES);
	cw->decisions++;
	return CKPT_OK;
}

int ckpt_writer_finish(struct ckpt_writer *cw)
{
	uint8_t f[CKPT_FOOTER] = { 0 };
	size_t r;
	int rc;

	f[4] = CKPT_END;
	st64(f + 8, cw->kvs);
	st64(f + 16, cw->decisions);
	st64(f + 24, cw->min_seq);
	st64(f + 32, cw->max_seq);
	st64(f + 40, cw->entry_bytes);
	st32(f + 48, cw->crc);
	st32(f, shm_crc32c(f + 4, CKPT_FOOTER - 4));
	if ((rc = entry_room(cw)) == CKPT_OK) {
		put(cw, f, sizeof(f));
		rc = flush_in(cw);
	}
	if (rc == CKPT_OK) {
		r = LZ4F_compressEnd(cw->cctx, cw->out, cw->outcap, NULL);
		rc = LZ4F_isError(r) ? lz4_fail(cw, r) : write_all(cw, cw->out, r);
	}
	if (rc == CKPT_OK && fdatasync(cw->fd) != 0)
		rc = whyf(cw->why, sizeof(cw->why), CKPT_EIO, "%s: fdatasync: %s", cw->tmp, strerror(errno));
	if (rc == CKPT_OK && renameat(cw->dirfd, cw->tmp, cw->dirfd, cw->name) != 0)
		rc = whyf(cw->why, sizeof(cw->why), CKPT_EIO, "%s: rename: %s", cw->tmp, strerror(errno));
	if (rc != CKPT_OK) {
		ckpt_writer_abort(cw);
		return rc;
	}
	if (fsync(cw->dirfd) != 0)
		rc = whyf(cw->why, sizeof(cw->why), CKPT_EIO, "%s: directory fsync: %s", cw->name, strerror(errno));
	writer_free(cw);
	return rc;
}

void ckpt_writer_abort(struct ckpt_writer *cw)
{
	if (cw->dirfd >= 0)
		unlinkat(cw->dirfd, cw->tmp, 0);
	writer_free(cw);
}

/* ---------- reading ---------- */

struct decoder {
	uint32_t shard_id;
	ckpt_entry_fn fn;
	void *arg;
	struct ckpt_info *info;
	char *why;
	size_t whylen;
	uint64_t file_off;   /* compressed bytes consumed so far */
	uint64_t raw_off;    /* content offset of win[0] */
	bool have_hdr, have_footer;
	uint32_t crc;
	uint64_t entry_bytes, kvs, decisions, min_seq, max_seq;
};

static int bad(struct decoder *d, uint64_t raw, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(struct decoder *d, uint64_t raw, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return whyf(d->why, d->whylen, CKPT_EBAD, "byte %" PRIu64 " of the file (content byte %" PRIu64 "): %s",
		    d->file_off, raw, msg);
}

static int take_header(struct decoder *d, const uint8_t *h)
{
	struct ckpt_info *in = d->info;

	if (ld32(h) != CKPT_MAGIC)
		return bad(d, 0, "not a checkpoint (magic %08x)", ld32(h));
	if (ld32(h + 60) != shm_crc32c(h, 60))
		return bad(d, 0, "header checksum mismatch");
	if (ld32(h + 4) != CKPT_VERSION || ld32(h + 12) != CKPT_HDR || ld64(h + 48) != 0 || ld32(h + 56) != 0)
		return bad(d, 0, "unknown version %u or header layout", ld32(h + 4));
	if (ld32(h + 8) != d->shard_id)
		return bad(d, 0, "a checkpoint of shard %u, not %u", ld32(h + 8), d->shard_id);
	in->shard_id = ld32(h + 8);
	in->covered = ld64(h + 16);
	in->replay = ld64(h + 24);
	in->boot = ld64(h + 32);
	in->created_ns = ld64(h + 40);
	if (in->replay > in->covered)
		return bad(d, 16, "replay seq %" PRIu64 " above covered seq %" PRIu64, in->replay, in->covered);
	d->have_hdr = true;
	return CKPT_OK;
}

static int take_footer(struct decoder *d, const uint8_t *f, uint64_t raw)
{
	if (ld32(f) != shm_crc32c(f + 4, CKPT_FOOTER - 4))
		return bad(d, raw, "footer checksum mismatch");
	if (f[5] | f[6] | f[7] || ld32(f + 52) != 0)
		return bad(d, raw, "footer reserved bytes not zero");
	if (ld64(f + 8) != d->kvs || ld64(f + 16) != d->decisions)
		return bad(d, raw, "footer counts %" PRIu64 "/%" PRIu64 " but the file holds %" PRIu64 "/%" PRIu64,
			   ld64(f + 8), ld64(f + 16), d->kvs, d->decisions);
	if (ld64(f + 24) != d->min_seq || ld64(f + 32) != d->max_seq)
		return bad(d, raw, "footer seq range does not match the entries");
	if (ld64(f + 40) != d->entry_bytes || ld32(f + 48) != d->crc)
		return bad(d, raw, "footer entry bytes or checksum do not match the entries");
	d->info->kvs = d->kvs;
	d->info->decisions = d->decisions;
	d->info->min_seq = d->min_seq;
	d->info->max_seq = d->max_seq;
	d->have_footer = true;
	return CKPT_OK;
}

/* Bytes the entry at p needs (0: more bytes needed to tell), or -1 with
 * why filled. */
static int64_t entry_len(struct decoder *d, const uint8_t *p, size_t avail, uint64_t raw)
{
	if (avail < 8)
		return 0;
	switch (p[4]) {
	case CKPT_KV:
		if (p[5] != 0 || ld16(p + 6) == 0 || ld16(p + 6) > SHM_KEY_MAX || ld32(p + 8) > SHM_VALUE_MAX)
			return bad(d, raw, "entry lengths out of range (klen %u, vlen %u)", ld16(p + 6), ld32(p + 8)), -1;
		return CKPT_KV_HDR + (int64_t)ld16(p + 6) + ld32(p + 8);
	case CKPT_DECISION:
		return CKPT_DECISION_BYTES;
	case CKPT_END:
		return CKPT_FOOTER;
	}
	return bad(d, raw, "unknown entry type %u", p[4]), -1;
}

static int take_entry(struct decoder *d, const uint8_t *p, size_t len, uint64_t raw)
{
	struct ckpt_entry e = { .type = p[4] };

	if (p[4] == CKPT_END)
		return take_footer(d, p, raw);
	if (ld32(p) != shm_crc32c(p + 4, len - 4))
		return bad(d, raw, "entry checksum mismatch");
	if (e.type == CKPT_KV) {
		e.klen = ld16(p + 6);
		e.vlen = ld32(p + 8);
		e.seq = ld64(p + 12);
		e.key = p + CKPT_KV_HDR;
		e.val = p + CKPT_KV_HDR + e.klen;
		if (e.seq == 0)
			return bad(d, raw, "entry with seq 0");
		d->kvs++;
		if (d->min_seq == 0 || e.seq < d->min_seq)
			d->min_seq = e.seq;
		if (e.seq > d->max_seq)
			d->max_seq = e.seq;
	} else {
		e.primary = ld32(p + 8);
		e.boot = ld64(p + 12);
		e.ref = ld64(p + 20);
		if (p[5] | p[6] | p[7] || ld16(p + 6) != 0 || e.ref == 0 || e.primary >= WALFMT_PRIMARY_MAX)
			return bad(d, raw, "decision entry out of range");
		d->decisions++;
	}
	d->crc = shm_crc32c_extend(d->crc, p, len);
	d->entry_bytes += len;
	if (d->fn != NULL && d->fn(d->arg, &e) != 0)
		return whyf(d->why, d->whylen, CKPT_EAPPLY, "content byte %" PRIu64 ": the entry was refused", raw);
	return CKPT_OK;
}

/* Parse what the window holds; *used: bytes consumed. */
static int parse(struct decoder *d, const uint8_t *win, size_t len, size_t *used)
{
	size_t pos = 0;
	int rc = CKPT_OK;

	if (!d->have_hdr) {
		if (len < CKPT_HDR)
			return *used = 0, CKPT_OK;
		if ((rc = take_header(d, win)) != CKPT_OK)
			return rc;
		pos = CKPT_HDR;
	}
	while (pos < len) {
		int64_t need;

		if (d->have_footer)
			return bad(d, d->raw_off + pos, "bytes after the footer");
		need = entry_len(d, win + pos, len - pos, d->raw_off + pos);
		if (need < 0)
			return CKPT_EBAD;
		if (need == 0 || (size_t)need > len - pos)
			break;
		if ((rc = take_entry(d, win + pos, (size_t)need, d->raw_off + pos)) != CKPT_OK)
			return rc;
		pos += (size_t)need;
	}
	*used = pos;
	return CKPT_OK;
}

int ckpt_decode(const uint8_t *buf, size_t len, uint32_t shard_id, ckpt_entry_fn fn, void *arg,
		struct ckpt_info *info, char *why, size_t whylen)
{
	struct ckpt_info scratch;
	struct decoder d = { .shard_id = shard_id, .fn = fn, .arg = arg, .info = info ? info : &scratch,
			     .why = why, .whylen = whylen };
	LZ4F_dctx *dctx = NULL;
	uint8_t *win = malloc(WINDOW);
	size_t wlen = 0, hint = 1;
	int rc = CKPT_OK;

	memset(d.info, 0, sizeof(*d.info));
	if (win == NULL || LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
		free(win);
		return whyf(why, whylen, CKPT_ENOMEM, "out of memory reading a checkpoint");
	}
	while (rc == CKPT_OK && hint != 0 && d.file_off < len) {
		size_t dst = WINDOW - wlen, src = len - d.file_off, used = 0;

		hint = LZ4F_decompress(dctx, win + wlen, &dst, buf + d.file_off, &src, NULL);
		if (LZ4F_isError(hint)) {
			rc = bad(&d, d.raw_off + wlen, "LZ4: %s", LZ4F_getErrorName(hint));
			break;
		}
		d.file_off += src;
		wlen += dst;
		if ((rc = parse(&d, win, wlen, &used)) != CKPT_OK)
			break;
		memmove(win, win + used, wlen - used);
		wlen -= used;
		d.raw_off += used;
		if (src == 0 && dst == 0 && hint != 0) {
			rc = bad(&d, d.raw_off, "the LZ4 frame makes no progress");
			break;
		}
	}
	if (rc == CKPT_OK && hint != 0)
		rc = bad(&d, d.raw_off + wlen, "truncated: the file ends inside the LZ4 frame");
	else if (rc == CKPT_OK && d.file_off != len)
		rc = bad(&d, d.raw_off, "%zu bytes after the end of the LZ4 frame", len - (size_t)d.file_off);
	else if (rc == CKPT_OK && wlen != 0)
		rc = bad(&d, d.raw_off, "the content ends inside an entry");
	else if (rc == CKPT_OK && !d.have_footer)
		rc = bad(&d, d.raw_off, "no footer: the content ends early");
	LZ4F_freeDecompressionContext(dctx);
	free(win);
	return rc;
}

int ckpt_read(const char *dir, const char *name, uint32_t shard_id, ckpt_entry_fn fn, void *arg,
	      struct ckpt_info *info, char *why, size_t whylen)
{
	char path[4400], inner[300];
	struct stat st;
	uint8_t *map;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return whyf(why, whylen, CKPT_EIO, "%s: open: %s", path, strerror(e));
	}
	if (st.st_size == 0) {
		close(fd);
		return whyf(why, whylen, CKPT_EBAD, "%s: empty file", path);
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return whyf(why, whylen, CKPT_EIO, "%s: mmap: %s", path, strerror(errno));
	madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
	rc = ckpt_decode(map, (size_t)st.st_size, shard_id, fn, arg, info, inner, sizeof(inner));
	munmap(map, (size_t)st.st_size);
	if (rc != CKPT_OK)
		whyf(why, whylen, rc, "%s: %s", path, inner);
	return rc;
}
