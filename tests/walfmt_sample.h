/*
 * walfmt_sample.h — one sample segment for the WAL's tests, encoded with
 * shardd/walfmt.h: segment 5 of shard 7, two frames whose records cover the
 * format's corners (an empty value, a DEL, a 4096-byte key, a gap in seqs).
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
};

#define SAMPLE_SHARD 7
#define SAMPLE_FIRST 5  /* the segment's first seq */
#define SAMPLE_LAST 11

static const char sample_bigkey[4096] = { [0] = 'B', [4095] = 'Z' };
static const struct sample_rec sample_f1[2] = {
	{ 5, 1, "alpha", 5, "one", 3 },
	{ 6, 1, "beta", 4, "", 0 },              /* an empty value is a value */
};
static const struct sample_rec sample_f2[3] = {
	{ 9, 2, "alpha", 5, NULL, 0 },           /* DEL; seqs may have gaps */
	{ 10, 1, sample_bigkey, 4096, "xyz!", 4 },
	{ 11, 1, "g", 1, "v", 1 },
};

/* r[0..n) as one frame at out (room for walfmt_frame_size of its records);
 * returns the frame's size. */
static inline uint64_t sample_frame(uint8_t *out, const struct sample_rec *r, int n)
{
	uint64_t len = 0;

	for (int i = 0; i < n; i++) {
		walfmt_rec_encode(out + WALFMT_FRAME_HDR + len, r[i].seq, (enum walfmt_op)r[i].op,
				  r[i].key, r[i].klen, r[i].val, r[i].vlen);
		len += walfmt_rec_size(r[i].klen, r[i].vlen);
	}
	/* the pad must be written by the encoder, not assumed */
	memset(out + WALFMT_FRAME_HDR + len, 0xee, walfmt_frame_size(len) - WALFMT_FRAME_HDR - len);
	return walfmt_frame_seal(out, len, (uint32_t)n, r[0].seq);
}

/* The whole sample segment at out (8 KiB is plenty); returns its size and
 * in *second where the frame of sample_f2 starts. */
static inline size_t sample_segment(uint8_t *out, size_t *second)
{
	size_t n = WALFMT_SEG_HDR;

	walfmt_seg_encode(out, SAMPLE_SHARD, SAMPLE_FIRST, 0);
	n += sample_frame(out + n, sample_f1, 2);
	*second = n;
	n += sample_frame(out + n, sample_f2, 3);
	return n;
}

#endif
