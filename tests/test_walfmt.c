/*
 * test_walfmt.c — the log's byte format (shardd/walfmt.h), in memory:
 * segments composed by hand from the documented format read back record by
 * record, the encoder writes exactly those bytes, intact frames that break
 * a rule and seqs that go backwards are corruption, damage followed by no
 * intact frame is a torn tail, segment names.
 *
 * The files around these bytes (cutting, rotating, which segment may be
 * torn) are test_wal.c's.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "shm/crc32c.h"
#include "shardd/walfmt.h"
#include "tests/walfmt_sample.h"

TestSuite(walfmt, .timeout = 60);

/* ---- segments composed by hand, following the format in walfmt.h ---- */

struct hb {
	uint8_t b[1 << 16];
	size_t n;
};

static void put8(struct hb *h, uint8_t v) { h->b[h->n++] = v; }
static void put16(struct hb *h, uint16_t v) { put8(h, v & 0xff); put8(h, v >> 8); }
static void put32(struct hb *h, uint32_t v) { put16(h, v & 0xffff); put16(h, v >> 16); }
static void put64(struct hb *h, uint64_t v) { put32(h, (uint32_t)v); put32(h, (uint32_t)(v >> 32)); }
static void putb(struct hb *h, const void *p, size_t n) { if (n) memcpy(h->b + h->n, p, n); h->n += n; }
static void set32(struct hb *h, size_t at, uint32_t v) { size_t n = h->n; h->n = at; put32(h, v); h->n = n; }

static void hand_header(struct hb *h, uint32_t shard, uint64_t first, uint64_t prev)
{
	size_t start = h->n;

	put32(h, 0x4c574d41);       /* "AMWL" */
	put32(h, 1);                /* version */
	put32(h, shard);
	put32(h, 40);               /* header size */
	put64(h, first);
	put64(h, prev);
	put32(h, 0);
	put32(h, shm_crc32c(h->b + start, 36));
}

static void hand_frame(struct hb *h, const struct sample_rec *r, int n)
{
	size_t start = h->n, body;

	put32(h, 0x46574d41);       /* "AMWF" */
	put32(h, 0);                /* hdr_crc, below */
	put32(h, 0);                /* len, below */
	put32(h, (uint32_t)n);
	put64(h, r[0].seq);
	put32(h, 0);                /* body_crc, below */
	put32(h, 0);
	body = h->n;
	for (int i = 0; i < n; i++) {
		put64(h, r[i].seq);
		put8(h, r[i].op);
		put8(h, 0);
		put16(h, (uint16_t)r[i].klen);
		put32(h, r[i].vlen);
		putb(h, r[i].key, r[i].klen);
		putb(h, r[i].val, r[i].vlen);
	}
	set32(h, start + 8, (uint32_t)(h->n - body));
	while (h->n % 8)
		put8(h, 0);
	set32(h, start + 24, shm_crc32c(h->b + body, h->n - body));
	set32(h, start + 4, shm_crc32c(h->b + start + 8, 24));
}

/* The sample segment (walfmt_sample.h) composed by hand; *second is where
 * its second frame starts. */
static void hand_segment(struct hb *h, size_t *second)
{
	h->n = 0;
	hand_header(h, SAMPLE_SHARD, SAMPLE_FIRST, 0);
	hand_frame(h, sample_f1, 2);
	*second = h->n;
	hand_frame(h, sample_f2, 3);
}

/* ---- scanning ---- */

struct seen { int n; uint64_t seq[8]; int op[8]; uint32_t klen[8], vlen[8]; uint8_t k0[8], v0[8]; };

static int remember(void *arg, uint64_t seq, int op, const void *key, uint32_t klen,
		    const void *val, uint32_t vlen)
{
	struct seen *s = arg;

	if (s->n == 8)
		return 1;
	s->seq[s->n] = seq;
	s->op[s->n] = op;
	s->klen[s->n] = klen;
	s->vlen[s->n] = vlen;
	s->k0[s->n] = ((const uint8_t *)key)[klen - 1];
	s->v0[s->n] = vlen ? ((const uint8_t *)val)[vlen - 1] : 0;
	s->n++;
	return 0;
}

/* Scan h[0..len) as shard 7's segment following prev (chained) or the
 * first one; the scan must return 0. */
static struct walfmt_scan scan(const struct hb *h, size_t len, int chained, uint64_t prev)
{
	struct walfmt_scan sc = { .shard_id = 7, .chained = chained, .prev_seq = prev };

	cr_assert_eq(walfmt_scan(h->b, len, NULL, NULL, &sc), 0);
	return sc;
}

static void expect_corrupt_at(const struct hb *h, int chained, uint64_t prev, uint64_t off)
{
	struct walfmt_scan sc = scan(h, h->n, chained, prev);

	cr_assert_eq(sc.status, WALFMT_CORRUPT, "status %d: %s", sc.status, sc.why);
	cr_assert_eq(sc.bad_off, off, "damage at %" PRIu64 ", expected %" PRIu64 ": %s", sc.bad_off,
		     off, sc.why);
}

static void expect_torn_at(const struct hb *h, size_t len, uint64_t off, uint64_t records)
{
	struct walfmt_scan sc = scan(h, len, 0, 0);

	cr_assert_eq(sc.status, WALFMT_TORN, "len %zu: status %d: %s", len, sc.status, sc.why);
	cr_assert_eq(sc.end, off, "len %zu", len);
	cr_assert_eq(sc.bad_off, off, "len %zu", len);
	cr_assert_eq(sc.records, records, "len %zu", len);
}

/* ======================================================================
 * Reading the documented format back, writing it
 * ====================================================================== */

Test(walfmt, hand_written_segment_reads_back)
{
	static struct hb h;
	struct walfmt_scan sc = { .shard_id = 7, .name_seq = SAMPLE_FIRST };
	struct seen s = { 0 };
	size_t second;

	hand_segment(&h, &second);
	cr_assert_eq(walfmt_scan(h.b, h.n, remember, &s, &sc), 0);
	cr_assert_eq(sc.status, WALFMT_CLEAN, "%s", sc.why);
	cr_assert_eq(sc.end, h.n);
	cr_assert_eq(sc.frames, 2);
	cr_assert_eq(sc.records, 5);
	cr_assert_eq(sc.last_seq, 11);
	cr_assert_eq(sc.base_seq, 0);
	cr_assert_eq(s.n, 5);
	uint64_t seqs[] = { 5, 6, 9, 10, 11 };
	int ops[] = { 1, 1, 2, 1, 1 };
	uint32_t kl[] = { 5, 4, 5, 4096, 1 }, vl[] = { 3, 0, 0, 4, 1 };
	uint8_t k0[] = { 'a', 'a', 'a', 'Z', 'g' }, v0[] = { 'e', 0, 0, '!', 'v' };
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(s.seq[i], seqs[i]);
		cr_assert_eq(s.op[i], ops[i]);
		cr_assert_eq(s.klen[i], kl[i]);
		cr_assert_eq(s.vlen[i], vl[i]);
		cr_assert_eq(s.k0[i], k0[i]);
		cr_assert_eq(s.v0[i], v0[i]);
	}
	/* Zeros after the last frame (a preallocated tail) are a clean end. */
	memset(h.b + h.n, 0, 4096);
	sc = scan(&h, h.n + 4096, 0, 0);
	cr_assert_eq(sc.status, WALFMT_CLEAN, "%s", sc.why);
	cr_assert_eq(sc.end, h.n);
	cr_assert_eq(sc.records, 5);
}

Test(walfmt, encoder_writes_exactly_the_documented_bytes)
{
	static struct hb h;
	static uint8_t enc[1 << 16];
	size_t second, enc_second, n;

	hand_segment(&h, &second);
	memset(enc, 0xee, sizeof(enc));
	n = sample_segment(enc, &enc_second);
	cr_assert_eq(enc_second, second);
	cr_assert_eq(n, h.n);
	cr_assert_eq(memcmp(enc, h.b, h.n), 0, "the encoder differs from the documented format");
}

Test(walfmt, segment_names)
{
	const uint64_t seqs[] = { 0, 1, 0xdeadbeef, UINT64_MAX };
	const char *bad[] = { "wal-000000000000000g.log", "wal-000000000000000A.log",
			      "wal-00000000000001.log", "wal-0000000000000001.log.tmp",
			      "xal-0000000000000001.log", "wal-0000000000000001.lo",
			      "checkpoint-0000000000000001", "" };
	char name[WALFMT_NAME_LEN + 1];
	uint64_t seq;

	walfmt_seg_name(name, 1);
	cr_assert_str_eq(name, "wal-0000000000000001.log");
	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
		walfmt_seg_name(name, seqs[i]);
		cr_assert_eq(walfmt_seg_name_parse(name, &seq), 1, "%s", name);
		cr_assert_eq(seq, seqs[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(walfmt_seg_name_parse(bad[i], &seq), 0, "%s", bad[i]);
}

static int stop_at_9(void *arg, uint64_t seq, int op, const void *key, uint32_t klen,
		     const void *val, uint32_t vlen)
{
	(void)arg; (void)op; (void)key; (void)klen; (void)val; (void)vlen;
	return seq == 9 ? -7 : 0;
}

Test(walfmt, callback_failure_stops_the_scan_at_its_frame)
{
	static struct hb h;
	struct walfmt_scan sc = { .shard_id = 7 };
	size_t second;

	hand_segment(&h, &second);
	cr_assert_eq(walfmt_scan(h.b, h.n, stop_at_9, NULL, &sc), -1);
	cr_assert_eq(sc.end, second);
	cr_assert_eq(sc.last_seq, 6, "the records before it were handed out");
	cr_assert_not_null(strstr(sc.why, "seq 9"), "%s", sc.why);
}

/* ======================================================================
 * Corruption: intact bytes that break a rule, damage with data after it
 * ====================================================================== */

Test(walfmt, seq_going_backwards_is_corruption)
{
	static struct hb h;
	const struct sample_rec back[] = { { 6, 1, "k", 1, "v", 1 } };  /* after 5, 6 */
	const struct sample_rec inner[] = { { 20, 1, "k", 1, "v", 1 }, { 20, 1, "k", 1, "v", 1 } };
	size_t second;

	hand_segment(&h, &second);
	h.n = second;
	hand_frame(&h, back, 1);
	expect_corrupt_at(&h, 0, 0, second);
	/* ... also within one frame (intact frame breaking a rule, even as the last). */
	h.n = second;
	hand_frame(&h, inner, 2);
	expect_corrupt_at(&h, 0, 0, second);
	/* ... and across segments: one starting below the last seq of the one before. */
	h.n = 0;
	hand_header(&h, 7, 6, 6);   /* claims to follow seq 6: wrong, and not below 6 */
	hand_frame(&h, back, 1);
	expect_corrupt_at(&h, 1, 6, 0);
	h.n = 0;
	hand_header(&h, 7, 6, 5);   /* follows seq 5, but the segment before ends at 6 */
	hand_frame(&h, back, 1);
	expect_corrupt_at(&h, 1, 6, 0);
}

Test(walfmt, intact_frame_breaking_rules_is_corruption)
{
	static struct hb h;
	const struct sample_rec badop[] = { { 5, 3, "k", 1, "v", 1 } };
	const struct sample_rec delval[] = { { 5, 2, "k", 1, "v", 1 } };
	const struct sample_rec nokey[] = { { 5, 1, "", 0, "v", 1 } };
	const struct sample_rec late[] = { { 6, 1, "k", 1, "v", 1 } };  /* segment starts at 5 */
	const struct sample_rec *cases[] = { badop, delval, nokey, late };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		h.n = 0;
		hand_header(&h, 7, 5, 0);
		hand_frame(&h, cases[i], 1);
		expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
	}
	/* A pad that is not zeros (the checksums cover it, so it is intact). */
	h.n = 0;
	hand_header(&h, 7, 5, 0);
	hand_frame(&h, sample_f1, 2);
	h.b[h.n - 1] = 1;
	uint8_t *frame = h.b + WALFMT_SEG_HDR;
	set32(&h, WALFMT_SEG_HDR + 24, shm_crc32c(frame + 32, h.n - WALFMT_SEG_HDR - 32));
	set32(&h, WALFMT_SEG_HDR + 4, shm_crc32c(frame + 8, 24));
	expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
}

Test(walfmt, damage_before_an_intact_frame_is_corruption)
{
	static struct hb h;
	size_t second;

	hand_segment(&h, &second);
	h.b[WALFMT_SEG_HDR + 40] ^= 0x5a;     /* the first frame's body */
	expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
	h.b[WALFMT_SEG_HDR + 40] ^= 0x5a;
	h.b[WALFMT_SEG_HDR + 9] ^= 0x5a;      /* its length */
	expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
	h.b[WALFMT_SEG_HDR + 9] ^= 0x5a;
	h.b[20] ^= 0x5a;                      /* the segment header */
	expect_corrupt_at(&h, 0, 0, 0);
	h.b[20] ^= 0x5a;
	struct walfmt_scan sc = { .shard_id = 8 };
	cr_assert_eq(walfmt_scan(h.b, h.n, NULL, NULL, &sc), 0);
	cr_assert_eq(sc.status, WALFMT_CORRUPT);
	cr_assert_not_null(strstr(sc.why, "shard 7"), "%s", sc.why);
}

/* ======================================================================
 * Torn tails: damage followed by no intact frame
 * ====================================================================== */

Test(walfmt, frame_cut_short_or_with_a_bad_body_is_a_torn_tail)
{
	static struct hb h;
	size_t second;

	hand_segment(&h, &second);
	for (size_t cut = second + 1; cut < h.n; cut += 7)
		expect_torn_at(&h, cut, second, 2);
	h.b[h.n - 6] ^= 0x5a;                 /* the last value byte, before 5 of pad */
	expect_torn_at(&h, h.n, second, 2);
	h.b[h.n - 6] ^= 0x5a;
	/* Garbage after the last frame, even starting like one. */
	memcpy(h.b + h.n, "AMWF", 4);
	for (size_t i = 4; i < 300; i++)
		h.b[h.n + i] = (uint8_t)(i * 31 + 1);
	expect_torn_at(&h, h.n + 300, h.n, 5);
	/* A header cut short, or nothing but zeros, is a torn file. */
	expect_torn_at(&h, 10, 0, 0);
	memset(h.b, 0, 200);
	expect_torn_at(&h, 200, 0, 0);
}

Test(walfmt, frame_bytes_inside_a_torn_value_do_not_look_like_corruption)
{
	/* A value may hold anything, including the bytes of an intact frame
	 * (someone stores a WAL file as a value). When the frame carrying it is
	 * torn, the decoder must still see a torn tail, not corruption. */
	static struct hb h;
	static uint8_t val[4096];
	const struct sample_rec three[] = { { 1, 1, "a", 1, "x", 1 }, { 2, 1, "b", 1, "y", 1 },
				      { 3, 2, "a", 1, NULL, 0 } };

	hand_header(&h, 7, 1, 0);
	hand_frame(&h, three, 3);
	size_t f2 = h.n, flen = f2 - WALFMT_SEG_HDR;
	memcpy(val, h.b + WALFMT_SEG_HDR, flen);      /* an intact frame, as a value */
	/* klen 8: the value starts at f2 + 32 + 16 + 8, 8-aligned like a frame */
	const struct sample_rec big[] = { { 4, 1, "12345678", 8, val, (uint32_t)flen + 200 } };
	hand_frame(&h, big, 1);

	/* Cut short by the end of the buffer, the embedded frame complete. */
	expect_torn_at(&h, f2 + 56 + flen + 8, f2, 3);
	/* Whole, but the big frame's body checksum wrong (last value byte). */
	h.b[f2 + 56 + flen + 199] ^= 0x5a;
	expect_torn_at(&h, h.n, f2, 3);
}
