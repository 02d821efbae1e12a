/*
 * walfmt_sample.h — one sample segment for the WAL's tests, encoded with
 * shardd/walfmt.h: segment 5 of shard 7, three frames whose records cover the
 * format's corners (an empty value, a DEL, a 4096-byte key, a gap in seqs,
 * and one record of each batch op: PSET, PDEL, DECISION, RESOLVED).
 *
 * test_walfmt.c holds these bytes to the format composed by hand from the
 * documentation; test_wal.c uses them as a segment another writer made, and
 * as what its own API must write.
 */
#ifndef AMORA_TESTS_WALFMT_SAMPLE_H
#define AMORA_TESTS_WALFMT_SAMPLE_H

#include <stdint.h>
#include <string.h>

#include "shardd/walfmt.h"

struct sample_rec {
	uint64_t seq;
	uint8_t op;
	const char *key;
	uint32_t klen;
	const void *val;
	uint32_t vlen;
	const struct walfmt_batch *b; /* ops 3..6; NULL for SET, DEL */
};

#define SAMPLE_SHARD 7
#define SAMPLE_FIRST 5  /* the segment's first seq */
#define SAMPLE_LAST 17
#define SAMPLE_RECORDS 9

static const char sample_bigkey[4096] = { [0] = 'B', [4095] = 'Z' };
static const struct sample_rec sample_f1[2] = {
	{ 5, 1, "alpha", 5, "one", 3, NULL },
	{ 6, 1, "beta", 4, "", 0, NULL },              /* an empty value is a value */
};
static const struct sample_rec sample_f2[3] = {
	{ 9, 2, "alpha", 5, NULL, 0, NULL },           /* DEL; seqs may have gaps */
	{ 10, 1, sample_bigkey, 4096, "xyz!", 4, NULL },
	{ 11, 1, "g", 1, "v", 1, NULL },
};
/* Batch ids with every byte distinct, so a field at a wrong offset shows. */
static const struct walfmt_batch sample_part = { 0x0102030405060708ull, 0x1112131415161718ull,
						 3, 0 };
static const struct walfmt_batch sample_decided = { 0x2122232425262728ull,
						    0x3132333435363738ull, SAMPLE_SHARD, 0 };
static const struct walfmt_batch sample_resolved = { 0x0102030405060708ull,
						     0x1112131415161718ull, 3, WALFMT_ABORTED };
static const struct sample_rec sample_f3[4] = {
	{ 14, 3, "acct-1", 6, "100", 3, &sample_part },    /* PSET */
	{ 15, 4, "acct-2", 6, NULL, 0, &sample_part },     /* PDEL */
	{ 16, 5, "", 0, NULL, 0, &sample_decided },        /* DECISION, this shard primary */
	{ 17, 6, "", 0, NULL, 0, &sample_resolved },       /* RESOLVED: aborted */
};

/* r[0..n) as one frame at out (room for walfmt_frame_size of its records);
 * returns the frame's size. */
static inline uint64_t sample_frame(uint8_t *out, const struct sample_rec *r, int n)
{
	uint64_t len = 0;

	for (int i = 0; i < n; i++) {
		walfmt_rec_encode(out + WALFMT_FRAME_HDR + len, r[i].seq, (enum walfmt_op)r[i].op,
				  r[i].b, r[i].key, r[i].klen, r[i].val, r[i].vlen);
		len += walfmt_rec_size(r[i].op, r[i].klen, r[i].vlen);
	}
	/* the pad must be written by the encoder, not assumed */
	memset(out + WALFMT_FRAME_HDR + len, 0xee, walfmt_frame_size(len) - WALFMT_FRAME_HDR - len);
	return walfmt_frame_seal(out, len, (uint32_t)n, r[0].seq);
}

/* The whole sample segment at out (8 KiB is plenty); returns its size and
 * in *second and *third where the frames of sample_f2 and sample_f3 start. */
static inline size_t sample_segment(uint8_t *out, size_t *second, size_t *third)
{
	size_t n = WALFMT_SEG_HDR;

	walfmt_seg_encode(out, SAMPLE_SHARD, SAMPLE_FIRST, 0);
	n += sample_frame(out + n, sample_f1, 2);
	*second = n;
	n += sample_frame(out + n, sample_f2, 3);
	*third = n;
	n += sample_frame(out + n, sample_f3, 4);
	return n;
}

#endif
