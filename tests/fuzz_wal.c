/*
 * fuzz_wal.c — libFuzzer target for the WAL: its decoder (shardd/walfmt.c)
 * and its recovery of files (shardd/wal.c).
 *
 * The first input byte picks a mode (byte % 3):
 *
 * 0 raw:     the rest is a whole segment file as a disk could hold it, fed
 *            to walfmt_scan(), the decoder recovery runs on each mapped
 *            segment. It must not read outside the buffer (ASan), and every
 *            record it hands out must obey the rules (op 1..6, batch fields
 *            exactly for ops 3..6 and valid, lengths per op, seqs strictly
 *            increasing); the result must be consistent (end inside
 *            the buffer and 8-aligned, a status that exists).
 * 1 fixed:   same, but a valid segment header is put in front and the
 *            checksums of frame-looking regions are recomputed, so the
 *            fuzzer gets past the CRCs and explores the frame and record
 *            rules instead.
 * 2 files:   the input describes batches (record counts and sizes), a small
 *            segment size and one mutation of the files: truncate a segment,
 *            flip a byte, or write garbage after the last frame. The batches
 *            go through the real API into a directory on tmpfs (single and
 *            batch records mixed), the mutation is applied, wal_scan_dir()
 *            must see exactly the records recovery will keep (when recovery
 *            succeeds) and change no file, and wal_recover() must give exactly what the rules
 *            say: a torn tail of the last segment loses exactly the batches
 *            it touches, damage anywhere else is WAL_ECORRUPT, replayed
 *            records are complete batches with the right bytes. After an OK
 *            recovery one more batch is appended and a second recovery must
 *            see everything (recover -> append -> recover keeps data).
 * Any disagreement traps.
 */
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/crc32c.h"
#include "shardd/wal.h"
#include "shardd/walfmt.h"
#include "shardd/walio.h"
#include "tests/fuzz_input.h"

/* ---- modes 0 and 1: the decoder on memory ---- */

struct rules {
	uint64_t last;
	int started;
};

static int check_record(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
			const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct rules *r = arg;
	volatile uint8_t sink = 0;
	int keyed = op <= WALFMT_OP_PDEL, valued = op == WALFMT_OP_SET || op == WALFMT_OP_PSET;

	/* The rules of walfmt.h restated here, not through walfmt_rec_check. */
	CHECK(!r->started || seq > r->last);
	CHECK(op >= WALFMT_OP_SET && op <= WALFMT_OP_RESOLVED);
	CHECK((b != NULL) == (op >= WALFMT_OP_PSET));
	CHECK(keyed ? klen >= 1 && klen <= 4096 : klen == 0);
	CHECK(valued ? vlen <= (1u << 20) : vlen == 0);
	if (b != NULL) {
		CHECK(b->ref != 0 && b->primary < 65536);
		CHECK(op == WALFMT_OP_RESOLVED ? b->outcome == WALFMT_COMMITTED ||
						 b->outcome == WALFMT_ABORTED
					       : b->outcome == 0);
	}
	for (uint32_t i = 0; i < klen; i++)
		sink ^= ((const uint8_t *)key)[i];
	for (uint32_t i = 0; i < vlen; i++)
		sink ^= ((const uint8_t *)val)[i];
	(void)sink;
	r->started = 1;
	r->last = seq;
	return 0;
}

static void scan_checked(const uint8_t *buf, size_t len, uint64_t prev, int chained)
{
	struct walfmt_scan sc = { .shard_id = 7, .name_seq = 0, .prev_seq = prev, .chained = chained };
	struct rules r = { .last = prev, .started = chained };

	CHECK(walfmt_scan(buf, len, check_record, &r, &sc) == 0);
	CHECK(sc.status == WALFMT_CLEAN || sc.status == WALFMT_TORN || sc.status == WALFMT_CORRUPT);
	CHECK(sc.end <= len && sc.bad_off <= len);
	CHECK(sc.end == 0 || sc.end == len || sc.end % 8 == 0);
	CHECK(sc.records == 0 || sc.last_seq == r.last);
	CHECK(sc.frames <= sc.records);
	if (sc.status == WALFMT_TORN)
		CHECK(sc.bad_off == sc.end);
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* A valid header (prev/first from the input), then the input with each
 * frame-looking region's magic, length and checksums made right (its
 * other fields and pad stay as the input has them). */
static void mode_fixed(struct fuzz_input *in)
{
	size_t len = WALFMT_SEG_HDR + in->n;
	uint8_t *b = malloc(len ? len : 1);
	uint64_t first = 1, prev;
	size_t off = WALFMT_SEG_HDR;

	memcpy(b + WALFMT_SEG_HDR, in->p, in->n);
	/* the first record's seq, if any, so the first-frame rule can pass */
	if (len >= WALFMT_SEG_HDR + WALFMT_FRAME_HDR + 8)
		memcpy(&first, b + WALFMT_SEG_HDR + WALFMT_FRAME_HDR, 8);
	prev = first > 0 ? first - 1 : 0;
	walfmt_seg_encode(b, 7, first, prev);
	while (off + WALFMT_FRAME_HDR <= len) {
		uint8_t *f = b + off;
		size_t room = len - off - WALFMT_FRAME_HDR;
		uint32_t flen = (uint32_t)(get32(f + 8) % (room + 1));
		size_t total = walfmt_frame_size(flen);
		if (total > len - off)
			break;
		put32(f, 0x46574d41); /* "AMWF" */
		put32(f + 8, flen);
		put32(f + 24, shm_crc32c(f + WALFMT_FRAME_HDR, total - WALFMT_FRAME_HDR));
		put32(f + 4, shm_crc32c(f + 8, 24));
		off += total;
	}
	scan_checked(b, len, prev, 1);
	scan_checked(b, len, 0, 0);
	free(b);
}

/* ---- mode 2: real files ---- */

static char root[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

/* The record of seq: SET mostly, DEL, and batch records of every op (b
 * filled for ops 3..6). */
static void gen(uint64_t seq, uint32_t size, char *k, uint32_t *kl, uint8_t *v, uint32_t *vl,
		int *op, struct walfmt_batch *b)
{
	static const int ops[8] = { WALFMT_OP_SET, WALFMT_OP_PSET, WALFMT_OP_SET, WALFMT_OP_PDEL,
				    WALFMT_OP_DEL, WALFMT_OP_DECISION, WALFMT_OP_SET,
				    WALFMT_OP_RESOLVED };

	*op = ops[seq * 5 % 8];
	*b = (struct walfmt_batch){ seq * 0x9e3779b97f4a7c15ull, seq, (uint32_t)(seq * 31 % 65536),
				    0 };
	if (*op == WALFMT_OP_RESOLVED)
		b->outcome = seq % 3 == 0 ? WALFMT_ABORTED : WALFMT_COMMITTED;
	*kl = *op == WALFMT_OP_DECISION || *op == WALFMT_OP_RESOLVED ? 0 : 1 + (uint32_t)(seq % 23);
	for (uint32_t i = 0; i < *kl; i++)
		k[i] = (char)('a' + (seq + i) % 26);
	*vl = *op == WALFMT_OP_SET || *op == WALFMT_OP_PSET ? size : 0;
	for (uint32_t i = 0; i < *vl; i++)
		v[i] = (uint8_t)(seq * 7 + i);
}

#define MAXB 24

/* Up to MAXB batches, then one more appended after recovery. */
struct model {
	int nb;
	uint64_t first[MAXB + 2];   /* batch b holds seqs first[b] .. first[b+1]-1 */
	uint32_t vsize[MAXB + 1];   /* value size of all its records */
	int seg[MAXB + 1];          /* index of its segment */
	uint64_t off[MAXB + 1], end[MAXB + 1];
	uint64_t seg_first[MAXB + 1];
	int nseg;
	/* replay check */
	uint64_t n, last;
	int bad;
	int gaps_ok;                /* wal_scan_dir of a damaged log: seqs may skip */
};

static uint32_t vsize_of(const struct model *m, uint64_t seq)
{
	for (int b = m->nb - 1; b >= 0; b--)
		if (seq >= m->first[b])
			return m->vsize[b];
	return 0;
}

static int replay(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		  const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct model *m = arg;
	char k[32];
	static uint8_t v[4096];
	struct walfmt_batch wb;
	uint32_t kl, vl;
	int o;

	gen(seq, vsize_of(m, seq), k, &kl, v, &vl, &o, &wb);
	if ((m->gaps_ok ? seq <= m->last : seq != m->last + 1) || op != o || klen != kl || vlen != vl || memcmp(key, k, kl) != 0 ||
	    memcmp(val, v, vl) != 0)
		m->bad = 1;
	if ((b != NULL) != (o >= WALFMT_OP_PSET) ||
	    (b != NULL && (b->boot != wb.boot || b->ref != wb.ref || b->primary != wb.primary ||
			   b->outcome != wb.outcome)))
		m->bad = 1;
	m->n++;
	m->last = seq;
	return 0;
}

static void commit_one(struct wal *w, struct model *m, int nrec, uint32_t vsize)
{
	char k[32];
	static uint8_t v[4096];
	struct walfmt_batch wb;
	uint32_t kl, vl;
	int op, b = m->nb;
	uint64_t seq = m->first[b];

	wal_batch_begin(w);
	for (int i = 0; i < nrec; i++, seq++) {
		gen(seq, vsize, k, &kl, v, &vl, &op, &wb);
		CHECK(wal_batch_add(w, seq, op, op >= WALFMT_OP_PSET ? &wb : NULL, k, kl, v, vl) ==
		      WAL_OK);
	}
	uint64_t before = w->write_off, seg_before = w->seg_first_seq;
	int had_seg = w->fd >= 0;
	CHECK(wal_batch_commit(w) == WAL_OK);
	if (!had_seg || w->seg_first_seq != seg_before) {
		m->seg_first[m->nseg++] = w->seg_first_seq;
		before = WALFMT_SEG_HDR;
	}
	m->vsize[b] = vsize;
	m->seg[b] = m->nseg - 1;
	m->off[b] = before;
	m->end[b] = w->write_off;
	m->first[b + 1] = seq;
	m->nb++;
}

static void seg_file(char *out, uint64_t first)
{
	sprintf(out, "%s/wal-%016" PRIx64 ".log", root, first);
}

static off_t file_size(const char *path)
{
	struct stat st;

	CHECK(stat(path, &st) == 0);
	return st.st_size;
}

/* Recover into a fresh model check; returns the wal_recover code. */
static int recover(struct model *m, uint64_t seg_bytes, struct wal *w)
{
	uint64_t last;
	int rc;

	m->n = m->last = 0;
	m->bad = 0;
	CHECK(wal_open(w, root, 7, WAL_SYNC_PERIODIC, 0) == WAL_OK);
	wal_set_segment_bytes(w, seg_bytes);
	rc = wal_recover(w, replay, m, &last);
	CHECK(!m->bad);
	CHECK(rc == WAL_OK || rc == WAL_ECORRUPT);
	CHECK(rc != WAL_OK || last == m->last);
	return rc;
}

/* The batches that must survive `keep` bytes of segment s (the last). */
static int batches_kept(const struct model *m, int s, uint64_t keep)
{
	int n = 0;

	while (n < m->nb && (m->seg[n] < s || (m->seg[n] == s && m->end[n] <= keep)))
		n++;
	return n;
}

static int expect_after(const struct model *m, int s, uint64_t pos, int what, int *corrupt)
{
	int last = s == m->nseg - 1;
	int b = 0;

	*corrupt = 0;
	if (!last) {
		*corrupt = 1;     /* any damage to a closed segment */
		return 0;
	}
	if (what == 0)            /* truncated at pos */
		return pos < WALFMT_SEG_HDR ? batches_kept(m, s, 0) : batches_kept(m, s, pos);
	if (what == 2)            /* garbage after the last frame */
		return m->nb;
	/* a flipped byte: in the header, in a frame, or in the zero tail */
	if (pos < WALFMT_SEG_HDR) {
		*corrupt = 1;
		return 0;
	}
	while (b < m->nb && !(m->seg[b] == s && pos >= m->off[b] && pos < m->end[b]))
		b++;
	if (b == m->nb)
		return m->nb;     /* zero tail: torn, nothing lost */
	if (b != m->nb - 1)
		*corrupt = 1;     /* an intact frame follows */
	return b;
}

static void mode_files(struct fuzz_input *in)
{
	struct model m = { 0 };
	struct wal w;
	uint64_t seg_bytes = 4096 + (uint64_t)fuzz_take8(in) * 64;
	int nb = 1 + fuzz_take8(in) % MAXB;
	char path[128];
	uint8_t junk[64];

	walio_fault_clear();
	nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	CHECK(mkdir(root, 0755) == 0);
	CHECK(recover(&m, seg_bytes, &w) == WAL_OK && m.n == 0);
	m.first[0] = 1;
	for (int b = 0; b < nb; b++)
		commit_one(&w, &m, 1 + fuzz_take8(in) % 16, fuzz_take(in, 2) % 600);
	wal_close(&w);

	/* One mutation of one segment. */
	int what = fuzz_take8(in) % 3, s = fuzz_take8(in) % m.nseg, corrupt;
	seg_file(path, m.seg_first[s]);
	off_t size = file_size(path);
	uint64_t pos = fuzz_take(in, 3) % (uint64_t)size;
	if (what == 2) {
		s = m.nseg - 1;
		seg_file(path, m.seg_first[s]);
		pos = m.end[m.nb - 1];
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = fuzz_take8(in) | 1;   /* non-zero, so it is not a clean end */
	}
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	if (what == 0) {
		CHECK(ftruncate(fd, (off_t)pos) == 0);
	} else if (what == 1) {
		uint8_t c;
		CHECK(pread(fd, &c, 1, (off_t)pos) == 1);
		c ^= (uint8_t)(1 + fuzz_take8(in) % 255);
		CHECK(pwrite(fd, &c, 1, (off_t)pos) == 1);
	} else {
		CHECK(pwrite(fd, junk, sizeof(junk), (off_t)pos) == (ssize_t)sizeof(junk));
	}
	close(fd);

	int kept = expect_after(&m, s, pos, what, &corrupt);
	/* Another shard's reader first: the records of every segment's valid
	 * prefix, the files untouched. */
	char why[256];
	off_t mutated = file_size(path);
	m.n = m.last = 0;
	m.bad = 0;
	m.gaps_ok = corrupt;
	CHECK(wal_scan_dir(root, 7, replay, &m, why, sizeof(why)) == 0);
	CHECK(!m.bad);
	CHECK(file_size(path) == mutated);
	CHECK(corrupt || m.n == m.first[kept] - 1);
	m.gaps_ok = 0;
	int rc = recover(&m, seg_bytes, &w);
	if (corrupt) {
		CHECK(rc == WAL_ECORRUPT);
		wal_close(&w);
		return;
	}
	CHECK(rc == WAL_OK);
	CHECK(m.n == m.first[kept] - 1);
	/* Life goes on: append one batch after the kept prefix. */
	m.nb = kept;
	m.nseg = kept > 0 ? m.seg[kept - 1] + 1 : 0;
	CHECK(w.fd < 0 || (kept > 0 && w.seg_first_seq == m.seg_first[m.nseg - 1]));
	commit_one(&w, &m, 3, 10);
	wal_close(&w);
	CHECK(recover(&m, seg_bytes, &w) == WAL_OK);
	CHECK(m.n == m.first[kept + 1] - 1);
	wal_close(&w);
}

static void cleanup(void)
{
	nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	snprintf(root, sizeof(root), "%s/amora-fuzz-wal-%d",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size };
	uint8_t mode = fuzz_take8(&in) % 3;

	if (mode == 0) {
		uint8_t *copy = malloc(in.n ? in.n : 1); /* exact size: ASan sees overreads */
		memcpy(copy, in.p, in.n);
		scan_checked(copy, in.n, 0, 0);
		scan_checked(copy, in.n, 3, 1);
		free(copy);
	} else if (mode == 1) {
		mode_fixed(&in);
	} else {
		mode_files(&in);
	}
	return 0;
}
