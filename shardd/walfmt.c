/*
 * walfmt.c — encoding and decoding log segments in memory (walfmt.h).
 *
 * The decoder works on (buf, len) only, so the fuzzer runs exactly the
 * code recovery runs on each mapped segment.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shm/crc32c.h"
#include "shm/record.h"
#include "shardd/fmtbytes.h"
#include "shardd/walfmt.h"

#define SEG_MAGIC 0x4c574d41u   /* "AMWL" */
#define SEG_VERSION 1u
#define FRAME_MAGIC 0x46574d41u /* "AMWF" */
#define REC_MIN (WALFMT_REC_HDR + 1u)

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

/* =====================================================================
 * Names
 * ===================================================================== */

void walfmt_seg_name(char out[WALFMT_NAME_LEN + 1], uint64_t first_seq)
{
	snprintf(out, WALFMT_NAME_LEN + 1, "wal-%016" PRIx64 ".log", first_seq);
}

int walfmt_seg_name_parse(const char *name, uint64_t *first_seq)
{
	return strlen(name) == WALFMT_NAME_LEN && strncmp(name, "wal-", 4) == 0 &&
	       strcmp(name + 20, ".log") == 0 && hex16(name + 4, first_seq);
}

/* =====================================================================
 * Encoding
 * ===================================================================== */

void walfmt_seg_encode(uint8_t h[WALFMT_SEG_HDR], uint32_t shard_id, uint64_t first_seq,
		       uint64_t prev_seq)
{
	memset(h, 0, WALFMT_SEG_HDR);
	st32(h, SEG_MAGIC);
	st32(h + 4, SEG_VERSION);
	st32(h + 8, shard_id);
	st32(h + 12, WALFMT_SEG_HDR);
	st64(h + 16, first_seq);
	st64(h + 24, prev_seq);
	st32(h + 36, shm_crc32c(h, 36));
}

const char *walfmt_rec_check(int op, const struct walfmt_batch *b, uint32_t klen, uint32_t vlen)
{
	if (op < WALFMT_OP_SET || op > WALFMT_OP_RESOLVED)
		return "bad op";
	if (walfmt_op_batch(op) != (b != NULL))
		return b == NULL ? "batch record without its batch fields"
				 : "batch fields on a SET or DEL";
	if (op == WALFMT_OP_SET || op == WALFMT_OP_DEL || op == WALFMT_OP_PSET ||
	    op == WALFMT_OP_PDEL) {
		if (klen == 0 || klen > SHM_KEY_MAX)
			return "klen out of range";
		if (vlen > SHM_VALUE_MAX || ((op == WALFMT_OP_DEL || op == WALFMT_OP_PDEL) && vlen != 0))
			return "vlen out of range";
	} else if (klen != 0 || vlen != 0) {
		return "DECISION or RESOLVED with a key or value";
	}
	if (b == NULL)
		return NULL;
	if (b->ref == 0)
		return "batch ref 0";
	if (b->primary >= WALFMT_PRIMARY_MAX)
		return "primary shard out of range";
	if (op == WALFMT_OP_RESOLVED ? b->outcome != WALFMT_COMMITTED && b->outcome != WALFMT_ABORTED
				     : b->outcome != 0)
		return "bad outcome";
	return NULL;
}

void walfmt_rec_encode(uint8_t *p, uint64_t seq, enum walfmt_op op, const struct walfmt_batch *b,
		       const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	uint32_t hdr = WALFMT_REC_HDR;

	st64(p, seq);
	p[8] = (uint8_t)op;
	p[9] = 0;
	st16(p + 10, (uint16_t)klen);
	st32(p + 12, vlen);
	if (b != NULL) {
		p[9] = b->outcome;
		st64(p + 16, b->boot);
		st64(p + 24, b->ref);
		st32(p + 32, b->primary);
		st32(p + 36, 0);
		hdr = WALFMT_BATCH_HDR;
	}
	if (klen > 0)
		memcpy(p + hdr, key, klen);
	if (vlen > 0)
		memcpy(p + hdr + klen, val, vlen);
}

uint64_t walfmt_frame_seal(uint8_t *frame, uint64_t len, uint32_t nrec, uint64_t first_seq)
{
	uint64_t total = walfmt_frame_size(len);

	memset(frame + WALFMT_FRAME_HDR + len, 0, total - WALFMT_FRAME_HDR - len);
	st32(frame, FRAME_MAGIC);
	st32(frame + 8, (uint32_t)len);
	st32(frame + 12, nrec);
	st64(frame + 16, first_seq);
	st32(frame + 24, shm_crc32c(frame + WALFMT_FRAME_HDR, total - WALFMT_FRAME_HDR));
	st32(frame + 28, 0);
	st32(frame + 4, shm_crc32c(frame + 8, WALFMT_FRAME_HDR - 8));
	return total;
}

/* =====================================================================
 * Decoding
 * ===================================================================== */

__attribute__((format(printf, 2, 3)))
static void why(struct walfmt_scan *sc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sc->why, sizeof(sc->why), fmt, ap);
	va_end(ap);
}

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

	if (len - off < WALFMT_FRAME_HDR || ld32(p) != FRAME_MAGIC ||
	    shm_crc32c(p + 8, WALFMT_FRAME_HDR - 8) != ld32(p + 4))
		return F_NOHDR;
	f->len = ld32(p + 8);
	f->nrec = ld32(p + 12);
	f->first_seq = ld64(p + 16);
	f->body_crc = ld32(p + 24);
	f->reserved = ld32(p + 28);
	f->total = walfmt_frame_size(f->len);
	if (f->total > len - off)
		return F_TRUNCATED;
	if (shm_crc32c(p + WALFMT_FRAME_HDR, f->total - WALFMT_FRAME_HDR) != f->body_crc)
		return F_BADBODY;
	return F_INTACT;
}

/* The record header at p (n >= WALFMT_REC_HDR bytes left): its batch
 * fields into *b when it has them; returns b or NULL. */
static const struct walfmt_batch *rec_batch(const uint8_t *p, struct walfmt_batch *b)
{
	if (!walfmt_op_batch(p[8]))
		return NULL;
	b->outcome = p[9];
	b->boot = ld64(p + 16);
	b->ref = ld64(p + 24);
	b->primary = ld32(p + 32);
	return b;
}

/* One record header at p (n bytes left); 0 if it breaks a rule. */
static int record_ok(const uint8_t *p, uint64_t n, uint64_t prev_seq, struct walfmt_scan *sc,
		     uint64_t *size)
{
	struct walfmt_batch bb;
	const struct walfmt_batch *b;
	const char *bad;
	uint64_t seq;
	uint32_t klen, vlen;
	uint8_t op;

	if (n < WALFMT_REC_HDR)
		return why(sc, "record header runs past the frame"), 0;
	seq = ld64(p);
	op = p[8];
	klen = ld16(p + 10);
	vlen = ld32(p + 12);
	if (seq <= prev_seq)
		return why(sc, "seq %" PRIu64 " not above %" PRIu64, seq, prev_seq), 0;
	if (op < WALFMT_OP_SET || op > WALFMT_OP_RESOLVED || (!walfmt_op_batch(op) && p[9] != 0))
		return why(sc, "bad op %u/%u at seq %" PRIu64, op, p[9], seq), 0;
	if (walfmt_op_batch(op) && n < WALFMT_BATCH_HDR)
		return why(sc, "record header runs past the frame"), 0;
	b = rec_batch(p, &bb);
	if (b != NULL && ld32(p + 36) != 0)
		return why(sc, "reserved bytes not zero at seq %" PRIu64, seq), 0;
	if ((bad = walfmt_rec_check(op, b, klen, vlen)) != NULL)
		return why(sc, "%s (op %u klen %u vlen %u) at seq %" PRIu64, bad, op, klen, vlen,
			   seq), 0;
	*size = walfmt_rec_size(op, klen, vlen);
	if (*size > n)
		return why(sc, "record at seq %" PRIu64 " runs past the frame", seq), 0;
	return 1;
}

/* The rules of an intact frame at p (see walfmt.h). */
static int frame_rules(const uint8_t *p, const struct frame *f, uint64_t prev_seq,
		       uint64_t seg_first, int first_in_seg, struct walfmt_scan *sc)
{
	const uint8_t *r = p + WALFMT_FRAME_HDR;
	uint64_t left = f->len, seq = prev_seq, size;

	if (f->reserved != 0 || f->len < REC_MIN || f->len > WALFMT_BATCH_MAX || f->nrec == 0)
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
		if (p[WALFMT_FRAME_HDR + i] != 0)
			return why(sc, "non-zero pad"), 0;
	return 1;
}

/* Call fn for each record of a frame that passed frame_rules; -1 when fn
 * stops. */
static int frame_apply(const uint8_t *p, const struct frame *f, walfmt_apply_fn fn, void *arg,
		       struct walfmt_scan *sc)
{
	const uint8_t *r = p + WALFMT_FRAME_HDR;

	for (uint32_t i = 0; i < f->nrec; i++) {
		struct walfmt_batch bb;
		const struct walfmt_batch *b = rec_batch(r, &bb);
		uint64_t seq = ld64(r);
		uint32_t klen = ld16(r + 10), vlen = ld32(r + 12);
		const uint8_t *key = r + (b != NULL ? WALFMT_BATCH_HDR : WALFMT_REC_HDR);
		int rc = fn != NULL ? fn(arg, seq, r[8], b, key, klen, key + klen, vlen) : 0;

		if (rc != 0) {
			why(sc, "replay callback returned %d at seq %" PRIu64, rc, seq);
			return -1;
		}
		sc->last_seq = seq;
		r += walfmt_rec_size(r[8], klen, vlen);
	}
	return 0;
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

	for (uint64_t off = align8(from); off + WALFMT_FRAME_HDR <= len; off += 8)
		if (ld32(buf + off) == FRAME_MAGIC && frame_at(buf, len, off, &f) == F_INTACT)
			return off;
	return 0;
}

/* Damage starts at `bad`: a torn tail unless an intact frame follows. */
static void classify_tail(const uint8_t *buf, size_t len, uint64_t bad, uint64_t skip_to,
			  struct walfmt_scan *sc)
{
	uint64_t next = skip_to < len ? find_intact(buf, len, skip_to) : 0;
	size_t n = strlen(sc->why);

	sc->bad_off = bad;
	if (next == 0) {
		sc->status = WALFMT_TORN;
		return;
	}
	snprintf(sc->why + n, sizeof(sc->why) - n, ", yet an intact frame follows at offset %" PRIu64,
		 next);
	sc->status = WALFMT_CORRUPT;
}

static void corrupt(struct walfmt_scan *sc, uint64_t off)
{
	sc->status = WALFMT_CORRUPT;
	sc->bad_off = off;
}

/* Segment header; returns 1 when frames may follow at WALFMT_SEG_HDR. */
static int seg_header_ok(const uint8_t *buf, size_t len, struct walfmt_scan *sc, uint64_t *first)
{
	if (len < WALFMT_SEG_HDR || ld32(buf) != SEG_MAGIC || shm_crc32c(buf, 36) != ld32(buf + 36)) {
		why(sc, len < WALFMT_SEG_HDR ? "file shorter than its header" : "segment header damaged");
		sc->end = 0;
		if (len < WALFMT_SEG_HDR || all_zero(buf, len))
			sc->status = WALFMT_TORN;
		else
			classify_tail(buf, len, 0, WALFMT_SEG_HDR, sc);
		return 0;
	}
	*first = ld64(buf + 16);
	sc->base_seq = ld64(buf + 24);
	if (ld32(buf + 4) != SEG_VERSION || ld32(buf + 12) != WALFMT_SEG_HDR || ld32(buf + 32) != 0)
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
		      const struct frame *f, struct walfmt_scan *sc)
{
	sc->end = off;
	if (all_zero(buf + off, len - off)) {
		sc->status = WALFMT_CLEAN;
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

int walfmt_scan(const void *vbuf, size_t len, walfmt_apply_fn fn, void *arg,
		struct walfmt_scan *sc)
{
	const uint8_t *buf = vbuf;
	uint64_t off = WALFMT_SEG_HDR, first = 0;
	struct frame f;
	enum frame_state st = F_NOHDR;

	sc->status = WALFMT_CLEAN;
	sc->end = sc->bad_off = sc->frames = sc->records = 0;
	sc->base_seq = 0;
	sc->why[0] = '\0';
	sc->last_seq = sc->prev_seq;
	if (!seg_header_ok(buf, len, sc, &first))
		return 0;
	if (!sc->chained)
		sc->last_seq = sc->base_seq;
	while (off < len) {
		st = frame_at(buf, len, off, &f);
		if (st != F_INTACT)
			break;
		if (!frame_rules(buf + off, &f, sc->last_seq, first, sc->frames == 0, sc)) {
			sc->end = off;
			corrupt(sc, off);
			return 0;
		}
		if (frame_apply(buf + off, &f, fn, arg, sc) != 0) {
			sc->end = off;
			return -1;
		}
		sc->frames++;
		sc->records += f.nrec;
		off += f.total;
	}
	if (off >= len) {
		sc->end = len;
		return 0;
	}
	scan_stop(buf, len, off, st, &f, sc);
	return 0;
}
