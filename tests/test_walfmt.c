/*
 * test_walfmt.c — the log's byte format (shardd/walfmt.h), in memory:
 * segments composed by hand from the documented format read back record by
 * record, the encoder writes exactly those bytes (batch records included,
 * field by field at the documented offsets), intact frames that break
 * a rule (each rule of the batch ops too) and seqs that go backwards are corruption, damage followed by no
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
		put8(h, r[i].b != NULL ? r[i].b->outcome : 0);   /* SET, DEL: reserved */
		put16(h, (uint16_t)r[i].klen);
		put32(h, r[i].vlen);
		if (r[i].b != NULL) {                            /* ops 3..6: 40 bytes */
			put64(h, r[i].b->boot);
			put64(h, r[i].b->ref);
			put32(h, r[i].b->primary);
			put32(h, 0);
		}
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

/* The whole sample segment (three frames), *third where the batch frame
 * starts. */
static void hand_sample(struct hb *h, size_t *second, size_t *third)
{
	hand_segment(h, second);
	*third = h->n;
	hand_frame(h, sample_f3, 4);
}

/* Recompute both checksums of the frame at off after patching its bytes
 * (so it is intact and only the rules can reject it). */
static void reseal(struct hb *h, size_t off)
{
	uint8_t *f = h->b + off;
	uint32_t len = (uint32_t)(f[8] | f[9] << 8 | f[10] << 16 | (uint32_t)f[11] << 24);
	size_t body = (len + 7) & ~7u;

	set32(h, off + 24, shm_crc32c(f + 32, body));
	set32(h, off + 4, shm_crc32c(f + 8, 24));
}

/* ---- scanning ---- */

#define SEEN_MAX 16
struct seen {
	int n;
	uint64_t seq[SEEN_MAX];
	int op[SEEN_MAX], has_b[SEEN_MAX];
	struct walfmt_batch b[SEEN_MAX];
	uint32_t klen[SEEN_MAX], vlen[SEEN_MAX];
	uint8_t k0[SEEN_MAX], v0[SEEN_MAX];
};

static int remember(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		    const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct seen *s = arg;

	if (s->n == SEEN_MAX)
		return 1;
	s->seq[s->n] = seq;
	s->op[s->n] = op;
	s->has_b[s->n] = b != NULL;
	if (b != NULL)
		s->b[s->n] = *b;
	s->klen[s->n] = klen;
	s->vlen[s->n] = vlen;
	s->k0[s->n] = klen ? ((const uint8_t *)key)[klen - 1] : 0;
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
	size_t second, third;

	hand_sample(&h, &second, &third);
	cr_assert_eq(walfmt_scan(h.b, h.n, remember, &s, &sc), 0);
	cr_assert_eq(sc.status, WALFMT_CLEAN, "%s", sc.why);
	cr_assert_eq(sc.end, h.n);
	cr_assert_eq(sc.frames, 3);
	cr_assert_eq(sc.records, SAMPLE_RECORDS);
	cr_assert_eq(sc.last_seq, SAMPLE_LAST);
	cr_assert_eq(sc.base_seq, 0);
	cr_assert_eq(s.n, SAMPLE_RECORDS);
	uint64_t seqs[] = { 5, 6, 9, 10, 11, 14, 15, 16, 17 };
	int ops[] = { 1, 1, 2, 1, 1, 3, 4, 5, 6 };
	uint32_t kl[] = { 5, 4, 5, 4096, 1, 6, 6, 0, 0 }, vl[] = { 3, 0, 0, 4, 1, 3, 0, 0, 0 };
	uint8_t k0[] = { 'a', 'a', 'a', 'Z', 'g', '1', '2', 0, 0 };
	uint8_t v0[] = { 'e', 0, 0, '!', 'v', '0', 0, 0, 0 };
	const struct walfmt_batch *bs[] = { NULL, NULL, NULL, NULL, NULL, &sample_part,
					    &sample_part, &sample_decided, &sample_resolved };
	for (int i = 0; i < SAMPLE_RECORDS; i++) {
		cr_assert_eq(s.seq[i], seqs[i]);
		cr_assert_eq(s.op[i], ops[i]);
		cr_assert_eq(s.klen[i], kl[i]);
		cr_assert_eq(s.vlen[i], vl[i]);
		cr_assert_eq(s.k0[i], k0[i]);
		cr_assert_eq(s.v0[i], v0[i]);
		cr_assert_eq(s.has_b[i], bs[i] != NULL, "record %d: batch fields iff op 3..6", i);
		if (bs[i] == NULL)
			continue;
		cr_assert_eq(s.b[i].boot, bs[i]->boot, "record %d", i);
		cr_assert_eq(s.b[i].ref, bs[i]->ref, "record %d", i);
		cr_assert_eq(s.b[i].primary, bs[i]->primary, "record %d", i);
		cr_assert_eq(s.b[i].outcome, bs[i]->outcome, "record %d", i);
	}
	/* Zeros after the last frame (a preallocated tail) are a clean end. */
	memset(h.b + h.n, 0, 4096);
	sc = scan(&h, h.n + 4096, 0, 0);
	cr_assert_eq(sc.status, WALFMT_CLEAN, "%s", sc.why);
	cr_assert_eq(sc.end, h.n);
	cr_assert_eq(sc.records, SAMPLE_RECORDS);
}

Test(walfmt, encoder_writes_exactly_the_documented_bytes)
{
	static struct hb h;
	static uint8_t enc[1 << 16];
	size_t second, third, enc_second, enc_third, n;

	hand_sample(&h, &second, &third);
	memset(enc, 0xee, sizeof(enc));
	n = sample_segment(enc, &enc_second, &enc_third);
	cr_assert_eq(enc_second, second);
	cr_assert_eq(enc_third, third);
	cr_assert_eq(n, h.n);
	cr_assert_eq(memcmp(enc, h.b, h.n), 0, "the encoder differs from the documented format");
}

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* The batch records' fields, one by one at the offsets walfmt.h gives. */
Test(walfmt, batch_records_put_each_field_at_its_offset)
{
	static uint8_t p[256];
	const struct walfmt_batch part = { 0x0102030405060708ull, 0xa1a2a3a4a5a6a7a8ull, 0xbeef, 0 };
	const struct walfmt_batch res = { 0x1111, 0x2222, 5, WALFMT_COMMITTED };

	cr_assert_eq(walfmt_rec_size(WALFMT_OP_PSET, 3, 2), 45);
	cr_assert_eq(walfmt_rec_size(WALFMT_OP_SET, 3, 2), 21);
	cr_assert_eq(walfmt_rec_size(WALFMT_OP_DECISION, 0, 0), 40);
	memset(p, 0xee, sizeof(p));
	walfmt_rec_encode(p, 0x123456789abcull, WALFMT_OP_PSET, &part, "key", 3, "vv", 2);
	cr_assert_eq(le(p, 8), 0x123456789abcull);
	cr_assert_eq(p[8], 3);
	cr_assert_eq(p[9], 0, "outcome 0 for PSET");
	cr_assert_eq(le(p + 10, 2), 3);
	cr_assert_eq(le(p + 12, 4), 2);
	cr_assert_eq(le(p + 16, 8), part.boot);
	cr_assert_eq(le(p + 24, 8), part.ref);
	cr_assert_eq(le(p + 32, 4), 0xbeef);
	cr_assert_eq(le(p + 36, 4), 0, "reserved");
	cr_assert_eq(memcmp(p + 40, "keyvv", 5), 0);
	cr_assert_eq(p[45], 0xee, "nothing written past the record");

	memset(p, 0xee, sizeof(p));
	walfmt_rec_encode(p, 77, WALFMT_OP_RESOLVED, &res, NULL, 0, NULL, 0);
	cr_assert_eq(le(p, 8), 77);
	cr_assert_eq(p[8], 6);
	cr_assert_eq(p[9], 1, "outcome committed");
	cr_assert_eq(le(p + 10, 2), 0);
	cr_assert_eq(le(p + 12, 4), 0);
	cr_assert_eq(le(p + 16, 8), 0x1111);
	cr_assert_eq(le(p + 24, 8), 0x2222);
	cr_assert_eq(le(p + 32, 4), 5);
	cr_assert_eq(le(p + 36, 4), 0);
	cr_assert_eq(p[40], 0xee);
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

static int stop_at_9(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		     const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	(void)arg; (void)op; (void)b; (void)key; (void)klen; (void)val; (void)vlen;
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
	const struct sample_rec back[] = { { 6, 1, "k", 1, "v", 1, NULL } };  /* after 5, 6 */
	const struct sample_rec inner[] = { { 20, 1, "k", 1, "v", 1, NULL }, { 20, 1, "k", 1, "v", 1, NULL } };
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
	const struct sample_rec badop[] = { { 5, 7, "k", 1, "v", 1, NULL } };
	const struct sample_rec badop3[] = { { 5, 3, "k", 1, "v", 1, NULL } }; /* PSET, no batch header */
	const struct sample_rec delval[] = { { 5, 2, "k", 1, "v", 1, NULL } };
	const struct sample_rec nokey[] = { { 5, 1, "", 0, "v", 1, NULL } };
	const struct sample_rec late[] = { { 6, 1, "k", 1, "v", 1, NULL } };  /* segment starts at 5 */
	const struct sample_rec *cases[] = { badop, badop3, delval, nokey, late };

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

/* One record as the only frame of a segment starting at 5: corrupt for
 * the cause named (NULL: valid, a clean end). */
static void expect_record(const struct sample_rec *r, const char *cause)
{
	static struct hb h;
	struct walfmt_scan sc;

	h.n = 0;
	hand_header(&h, 7, 5, 0);
	hand_frame(&h, r, 1);
	if (cause != NULL) {
		expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
		sc = scan(&h, h.n, 0, 0);
		cr_assert_not_null(strstr(sc.why, cause), "op %u: %s, not %s", r->op, sc.why, cause);
		return;
	}
	sc = scan(&h, h.n, 0, 0);
	cr_assert_eq(sc.status, WALFMT_CLEAN, "op %u: %s", r->op, sc.why);
	cr_assert_eq(sc.records, 1);
}

Test(walfmt, batch_records_breaking_rules_are_corruption)
{
	const struct walfmt_batch ok = { 9, 1, 3, 0 }, ref0 = { 9, 0, 3, 0 },
				  far = { 9, 1, 65536, 0 }, edge = { 0, UINT64_MAX, 65535, 0 },
				  out1 = { 9, 1, 3, WALFMT_COMMITTED }, out2 = { 9, 1, 3, WALFMT_ABORTED },
				  out0 = { 9, 1, 3, 0 }, out3 = { 9, 1, 3, 3 };
	const struct sample_rec bad[][1] = {
		{ { 5, 3, "", 0, "v", 1, &ok } },        /* PSET klen 0 */
		{ { 5, 4, "k", 1, "v", 1, &ok } },       /* PDEL vlen 1 */
		{ { 5, 5, "k", 1, NULL, 0, &ok } },      /* DECISION klen 1 */
		{ { 5, 5, "", 0, "v", 1, &ok } },        /* DECISION vlen 1 */
		{ { 5, 6, "k", 1, NULL, 0, &out1 } },    /* RESOLVED klen 1 */
		{ { 5, 6, "", 0, NULL, 0, &out0 } },     /* RESOLVED outcome 0 */
		{ { 5, 6, "", 0, NULL, 0, &out3 } },     /* RESOLVED outcome 3 */
		{ { 5, 3, "k", 1, "v", 1, &out1 } },     /* PSET with an outcome */
		{ { 5, 5, "", 0, NULL, 0, &out2 } },     /* DECISION with an outcome */
		{ { 5, 3, "k", 1, "v", 1, &ref0 } },     /* ref 0 */
		{ { 5, 5, "", 0, NULL, 0, &ref0 } },
		{ { 5, 4, "k", 1, NULL, 0, &far } },     /* primary >= 65536 */
	};
	const struct sample_rec good[][1] = {
		{ { 5, 3, "k", 1, "", 0, &edge } },      /* PSET, empty value, limits of ids */
		{ { 5, 4, sample_bigkey, 4096, NULL, 0, &ok } },
		{ { 5, 5, "", 0, NULL, 0, &ok } },
		{ { 5, 6, "", 0, NULL, 0, &out1 } },
		{ { 5, 6, "", 0, NULL, 0, &out2 } },
	};

	const char *cause[] = { "klen", "vlen", "with a key", "with a key", "with a key",
				"outcome", "outcome", "outcome", "outcome", "ref 0", "ref 0", "primary" };

	cr_assert_eq(sizeof(cause) / sizeof(cause[0]), sizeof(bad) / sizeof(bad[0]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_record(bad[i], cause[i]);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		expect_record(good[i], NULL);
}

/* The segment of one frame holding r alone, its record's byte `at` set to
 * v and the frame resealed: intact, so only the rules judge it. */
static void patched(struct hb *h, const struct sample_rec *r, size_t at, uint8_t v)
{
	h->n = 0;
	hand_header(h, 7, 5, 0);
	hand_frame(h, r, 1);
	h->b[WALFMT_SEG_HDR + WALFMT_FRAME_HDR + at] = v;
	reseal(h, WALFMT_SEG_HDR);
}

/* Bytes the record rules say must be zero, patched into intact frames. */
Test(walfmt, non_zero_reserved_bytes_are_corruption)
{
	static struct hb h;
	const struct sample_rec set[] = { { 5, 1, "k", 1, "v", 1, NULL } };
	const struct sample_rec pset[] = { { 5, 3, "k", 1, "v", 1, &sample_part } };

	/* SET with byte 9 non-zero (reserved; only batch records have an outcome). */
	patched(&h, set, 9, WALFMT_COMMITTED);
	expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
	cr_assert_not_null(strstr(scan(&h, h.n, 0, 0).why, "bad op 1/1"));
	/* Each byte of a batch record's reserved u32 (bytes 36..39). */
	for (int i = 36; i < 40; i++) {
		patched(&h, pset, (size_t)i, 0x80);
		expect_corrupt_at(&h, 0, 0, WALFMT_SEG_HDR);
		cr_assert_not_null(strstr(scan(&h, h.n, 0, 0).why, "reserved"));
	}
	/* The same frames unpatched are valid (the patch is what breaks them). */
	expect_record(set, NULL);
	expect_record(pset, NULL);
}

/* A frame whose last record's op says "batch" but whose bytes end before
 * the record does: corruption, and the decoder reads nothing past the frame. */
static void expect_runs_past(struct hb *h)
{
	struct walfmt_scan sc = scan(h, h->n, 0, 0);

	cr_assert_eq(sc.status, WALFMT_CORRUPT, "%s", sc.why);
	cr_assert_not_null(strstr(sc.why, "runs past the frame"), "%s", sc.why);
}

Test(walfmt, batch_record_running_past_the_frame_is_corruption)
{
	static struct hb h;
	/* As a SET: 16 + 24 bytes. As a PSET the 24 key bytes are its batch
	 * fields (boot, ref 1, primary 3, reserved 0), and klen 24 runs past. */
	static const char fields[24] = { [8] = 1, [16] = 3 };
	const struct sample_rec set[] = { { 5, 1, fields, 24, "", 0, NULL } };
	const struct sample_rec one[] = { { 5, 1, "k", 1, NULL, 0, NULL } };

	patched(&h, set, 8, WALFMT_OP_PSET);
	expect_runs_past(&h);
	/* A 17-byte record: the 40-byte header itself runs past. */
	patched(&h, one, 8, WALFMT_OP_DECISION);
	expect_runs_past(&h);
}

Test(walfmt, rec_check_names_the_cause)
{
	const struct walfmt_batch ok = { 1, 2, 3, 0 }, res = { 1, 2, 3, WALFMT_ABORTED };

	cr_assert_null(walfmt_rec_check(WALFMT_OP_SET, NULL, 1, 0));
	cr_assert_null(walfmt_rec_check(WALFMT_OP_PSET, &ok, 4096, 1u << 20));
	cr_assert_null(walfmt_rec_check(WALFMT_OP_RESOLVED, &res, 0, 0));
	cr_assert_not_null(walfmt_rec_check(0, NULL, 1, 0));
	cr_assert_not_null(walfmt_rec_check(7, &ok, 1, 0));
	cr_assert_not_null(walfmt_rec_check(WALFMT_OP_SET, &ok, 1, 0), "batch fields on a SET");
	cr_assert_not_null(walfmt_rec_check(WALFMT_OP_PSET, NULL, 1, 0), "PSET without them");
	cr_assert_not_null(walfmt_rec_check(WALFMT_OP_PSET, &ok, 4097, 0));
	cr_assert_not_null(walfmt_rec_check(WALFMT_OP_PSET, &ok, 1, (1u << 20) + 1));
	cr_assert_not_null(strstr(walfmt_rec_check(WALFMT_OP_RESOLVED, &ok, 0, 0), "outcome"));
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
	const struct sample_rec three[] = { { 1, 1, "a", 1, "x", 1, NULL }, { 2, 1, "b", 1, "y", 1, NULL },
				      { 3, 2, "a", 1, NULL, 0, NULL } };

	hand_header(&h, 7, 1, 0);
	hand_frame(&h, three, 3);
	size_t f2 = h.n, flen = f2 - WALFMT_SEG_HDR;
	memcpy(val, h.b + WALFMT_SEG_HDR, flen);      /* an intact frame, as a value */
	/* klen 8: the value starts at f2 + 32 + 16 + 8, 8-aligned like a frame */
	const struct sample_rec big[] = { { 4, 1, "12345678", 8, val, (uint32_t)flen + 200, NULL } };
	hand_frame(&h, big, 1);

	/* Cut short by the end of the buffer, the embedded frame complete. */
	expect_torn_at(&h, f2 + 56 + flen + 8, f2, 3);
	/* Whole, but the big frame's body checksum wrong (last value byte). */
	h.b[f2 + 56 + flen + 199] ^= 0x5a;
	expect_torn_at(&h, h.n, f2, 3);
}
