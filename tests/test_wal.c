/*
 * test_wal.c — the write-ahead log's files (shardd/wal.c): round trips
 * across segments and reopen cycles, torn tails cut on disk and reported,
 * corruption inside the log named by file and offset, a segment another
 * writer made in the documented format, every fault of the I/O layer, sync
 * modes. The byte format itself is test_walfmt.c's.
 *
 * Records are generated from their seq (gen_*), so a replay is checked
 * record by record without keeping a model: the collector verifies each
 * record it is handed against what that seq must hold.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shardd/wal.h"
#include "shardd/walfmt.h"
#include "shardd/walio.h"
#include "tests/walfmt_sample.h"

/* ---- fixtures: one temp dir per test ---- */

static char dir[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(dir, "/tmp/amora-wal-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	walio_fault_clear();
}

static void teardown(void)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(wal, .init = setup, .fini = teardown, .timeout = 60);

/* ---- records generated from their seq ---- */

static int gen_op(uint64_t seq)
{
	return seq % 7 == 3 ? WALFMT_OP_DEL : WALFMT_OP_SET;
}

static uint32_t gen_key(uint64_t seq, char *k)
{
	return (uint32_t)sprintf(k, "key-%08" PRIu64, seq * 2654435761u % 100000000u);
}

static uint32_t gen_val(uint64_t seq, uint8_t *v)
{
	uint32_t n = gen_op(seq) == WALFMT_OP_DEL ? 0 : (uint32_t)(seq * 37 % 301);

	for (uint32_t i = 0; i < n; i++)
		v[i] = (uint8_t)(seq + i * 13);
	return n;
}

struct coll {
	uint64_t n, last, bad;
	uint64_t fail_at; /* return -7 at this seq (0: never) */
};

static int collect(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		   const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct coll *c = arg;
	char k[32];
	uint8_t v[512];

	if (c->fail_at && seq == c->fail_at)
		return -7;
	if (seq <= c->last || op != gen_op(seq) || b != NULL || klen != gen_key(seq, k) ||
	    memcmp(key, k, klen) != 0 || vlen != gen_val(seq, v) || memcmp(val, v, vlen) != 0)
		c->bad++;
	c->n++;
	c->last = seq;
	return 0;
}

static void add_gen(struct wal *w, uint64_t seq)
{
	char k[32];
	uint8_t v[512];
	uint32_t kl = gen_key(seq, k), vl = gen_val(seq, v);

	cr_assert_eq(wal_batch_add(w, seq, gen_op(seq), NULL, k, kl, v, vl), WAL_OK, "%s", wal_errmsg(w));
}

/* Commit `nb` batches of `per` records starting at *seq. */
static void commit_batches(struct wal *w, uint64_t *seq, int nb, int per)
{
	for (int b = 0; b < nb; b++) {
		wal_batch_begin(w);
		for (int i = 0; i < per; i++)
			add_gen(w, (*seq)++);
		cr_assert_eq(wal_batch_commit(w), WAL_OK, "%s", wal_errmsg(w));
	}
}

/* ---- what the last recovery reported (wal_set_note) ---- */

static struct {
	int warns, infos;
	char text[2048];
} notes;

static void keep_note(void *arg, enum wal_note kind, const char *msg)
{
	size_t n = strlen(notes.text);

	(void)arg;
	if (kind == WAL_NOTE_WARN)
		notes.warns++;
	else
		notes.infos++;
	snprintf(notes.text + n, sizeof(notes.text) - n, "%s\n", msg);
}

/* Open + recover, expecting `rc`; fills c and notes. Leaves w open. */
static int open_recover(struct wal *w, enum wal_sync_mode mode, uint64_t seg_bytes,
			struct coll *c)
{
	uint64_t last = 99;

	memset(c, 0, sizeof(*c));
	memset(&notes, 0, sizeof(notes));
	cr_assert_eq(wal_open(w, dir, 7, mode, 10), WAL_OK, "%s", wal_errmsg(w));
	wal_set_note(w, keep_note, NULL);
	if (seg_bytes)
		wal_set_segment_bytes(w, seg_bytes);
	int rc = wal_recover(w, collect, c, &last);
	cr_assert_eq(c->bad, 0, "replayed records differ from what was written");
	if (rc == WAL_OK) {
		cr_assert_eq(last, c->last);
		cr_assert_eq(w->last_seq, c->last);
	}
	return rc;
}

static void expect_recover(enum wal_sync_mode mode, uint64_t n_expected, uint64_t seg_bytes)
{
	struct wal w;
	struct coll c;

	cr_assert_eq(open_recover(&w, mode, seg_bytes, &c), WAL_OK, "%s", wal_errmsg(&w));
	cr_assert_eq(c.n, n_expected, "replayed %" PRIu64 " records, expected %" PRIu64, c.n,
		     n_expected);
	cr_assert(c.n == 0 || c.last == n_expected, "seqs are 1..n");
	wal_close(&w);
}

/* Open and recover the log (it must recover), then commit nb batches of
 * per records from *seq. Leaves w open. */
static void open_commit(struct wal *w, enum wal_sync_mode mode, uint64_t seg_bytes, uint64_t *seq,
			int nb, int per)
{
	struct coll c;

	cr_assert_eq(open_recover(w, mode, seg_bytes, &c), WAL_OK, "%s", wal_errmsg(w));
	commit_batches(w, seq, nb, per);
}

/* ---- files ---- */

static void seg_path(char *out, uint64_t first_seq)
{
	sprintf(out, "%s/wal-%016" PRIx64 ".log", dir, first_seq);
}

/* Files in the test dir: all of them, or only segments. */
static int count_files_of(int segments_only)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t seq;
	int n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d)) != NULL)
		if (segments_only ? walfmt_seg_name_parse(de->d_name, &seq)
				  : strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int count_segments(void)
{
	return count_files_of(1);
}

static int count_files(void)
{
	return count_files_of(0);
}

static uint8_t *read_all(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *b;

	cr_assert(fd >= 0, "open %s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	b = malloc(*len + 1);
	cr_assert_eq(pread(fd, b, *len, 0), (ssize_t)*len);
	close(fd);
	return b;
}

static void write_all(const char *path, const void *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, b, len), (ssize_t)len);
	close(fd);
}

static void write_at(const char *path, off_t off, const void *b, size_t len)
{
	int fd = open(path, O_WRONLY);

	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, b, len, off), (ssize_t)len);
	close(fd);
}

static void flip_byte(const char *path, off_t off)
{
	uint8_t b;
	int fd = open(path, O_RDWR);

	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x5a;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

/* ======================================================================
 * Round trips
 * ====================================================================== */

Test(wal, roundtrip_across_segments_and_reopen_cycles)
{
	uint64_t seq = 1, written = 0;

	for (int cycle = 0; cycle < 6; cycle++) {
		struct wal w;
		struct coll c;

		cr_assert_eq(open_recover(&w, cycle % 2 ? WAL_SYNC_ALWAYS : WAL_SYNC_PERIODIC, 8192, &c),
			     WAL_OK, "%s", wal_errmsg(&w));
		cr_assert_eq(c.n, written, "cycle %d: replayed %" PRIu64 " of %" PRIu64, cycle, c.n,
			     written);
		cr_assert_eq(seq, c.n + 1);
		commit_batches(&w, &seq, 20, 1 + cycle * 3);
		written = seq - 1;
		cr_assert_eq(wal_sync(&w), WAL_OK);
		wal_close(&w);
	}
	cr_assert_gt(count_segments(), 5, "small segments must rotate");
	expect_recover(WAL_SYNC_PERIODIC, written, 8192);
}

Test(wal, large_batches_big_values_max_keys)
{
	static uint8_t val[1u << 20];
	static char key[4096];
	struct wal w;
	struct coll c;
	uint64_t last;
	uint64_t seq;

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 7);
	memset(key, 'k', sizeof(key));
	cr_assert_eq(open_recover(&w, WAL_SYNC_PERIODIC, 0, &c), WAL_OK);
	seq = 1;
	commit_batches(&w, &seq, 1, 5000);  /* thousands of records in one frame */
	wal_batch_begin(&w);
	for (int i = 0; i < 3; i++) {
		key[0] = (char)('a' + i);
		cr_assert_eq(wal_batch_add(&w, 10000 + (uint64_t)i, WALFMT_OP_SET, NULL, key, 4096, val,
					   sizeof(val)), WAL_OK);
	}
	cr_assert_eq(wal_batch_commit(&w), WAL_OK, "%s", wal_errmsg(&w));
	wal_close(&w);

	/* Only the 5000 generated ones pass `collect`; count the big ones apart. */
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_PERIODIC, 0), WAL_OK);
	memset(&c, 0, sizeof(c));
	cr_assert_eq(wal_recover(&w, collect, &c, &last), WAL_OK, "%s", wal_errmsg(&w));
	cr_assert_eq(last, 10002);
	cr_assert_eq(c.n, 5003);
	cr_assert_eq(c.bad, 3, "the three big records are not generated ones");
	wal_close(&w);
}

static int check_big(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		     const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	int *ok = arg;
	const uint8_t *v = val;

	(void)op; (void)b; (void)key;
	if (seq < 10000)
		return 0;
	if (klen != 4096 || vlen != (1u << 20) || v[12345] != (uint8_t)(12345 * 7))
		*ok = 0;
	return 0;
}

Test(wal, big_values_read_back_intact)
{
	static uint8_t val[1u << 20];
	static char key[4096];
	struct wal w;
	uint64_t last;
	int ok = 1;

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (uint8_t)(i * 7);
	memset(key, 'z', sizeof(key));
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	wal_batch_begin(&w);
	cr_assert_eq(wal_batch_add(&w, 10000, WALFMT_OP_SET, NULL, key, 4096, val, sizeof(val)), WAL_OK);
	cr_assert_eq(wal_batch_add(&w, 10001, WALFMT_OP_SET, NULL, key, 4096, val, sizeof(val)), WAL_OK);
	cr_assert_eq(wal_batch_commit(&w), WAL_OK, "%s", wal_errmsg(&w));
	wal_close(&w);
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, check_big, &ok, &last), WAL_OK, "%s", wal_errmsg(&w));
	cr_assert(ok);
	cr_assert_eq(last, 10001);
	wal_close(&w);
}

Test(wal, preallocated_zero_tail_is_a_clean_end)
{
	struct wal w;
	uint64_t seq = 1;
	char path[128];
	struct stat st;

	open_commit(&w, WAL_SYNC_ALWAYS, 0, &seq, 3, 4);
	uint64_t end = w.write_off;
	wal_close(&w);
	seg_path(path, 1);
	cr_assert_eq(stat(path, &st), 0);
	if ((uint64_t)st.st_size == end)
		cr_log_warn("file system without fallocate: no zero tail to test");
	expect_recover(WAL_SYNC_ALWAYS, 12, 0);
	cr_assert_eq(notes.warns, 0, "a zero tail is not torn: %s", notes.text);
}

/* ======================================================================
 * Torn tails
 * ====================================================================== */

/* Writes 5 batches of 3, remembers where each frame starts. */
static void five_frames(uint64_t frame_off[6])
{
	struct wal w;
	struct coll c;
	uint64_t seq = 1;

	cr_assert_eq(open_recover(&w, WAL_SYNC_ALWAYS, 0, &c), WAL_OK);
	for (int i = 0; i < 5; i++) {
		frame_off[i] = w.write_off;
		commit_batches(&w, &seq, 1, 3);
	}
	frame_off[5] = w.write_off;
	wal_close(&w);
}

Test(wal, torn_tail_cut_mid_frame_keeps_prefix_and_warns)
{
	uint64_t off[6];
	char path[128];
	size_t len;
	uint8_t *pristine;

	five_frames(off);
	seg_path(path, 1);
	pristine = read_all(path, &len);
	uint64_t f4 = off[4], size4 = off[5] - off[4];
	uint64_t cuts[] = { 1, 4, 8, 31, 32, 33, size4 / 2, size4 - 8, size4 - 1 };

	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		write_all(path, pristine, f4 + cuts[i]); /* the file ends mid frame 5 */
		expect_recover(WAL_SYNC_ALWAYS, 12, 0);
		char want[64];
		snprintf(want, sizeof(want), "torn tail at offset %" PRIu64, f4);
		cr_assert_eq(notes.warns, 1, "cut %" PRIu64 ": no warning", cuts[i]);
		cr_assert_not_null(strstr(notes.text, want), "cut %" PRIu64 ": %s", cuts[i], notes.text);
		cr_assert_not_null(strstr(notes.text, "wal-0000000000000001.log"), "%s", notes.text);
		/* The cut is on disk: a second recovery is clean. */
		expect_recover(WAL_SYNC_ALWAYS, 12, 0);
		cr_assert_eq(notes.warns, 0, "%s", notes.text);
	}
	/* Appends follow the valid prefix and survive further cycles. */
	struct wal w;
	uint64_t seq = 13;
	open_commit(&w, WAL_SYNC_ALWAYS, 0, &seq, 2, 5);
	wal_close(&w);
	expect_recover(WAL_SYNC_ALWAYS, 22, 0);
	expect_recover(WAL_SYNC_ALWAYS, 22, 0);
	free(pristine);
}

Test(wal, cut_at_frame_boundary_is_clean)
{
	uint64_t off[6];
	char path[128];
	size_t len;
	uint8_t *b;

	five_frames(off);
	seg_path(path, 1);
	b = read_all(path, &len);
	write_all(path, b, off[3]);
	expect_recover(WAL_SYNC_ALWAYS, 9, 0);
	cr_assert_eq(notes.warns, 0, "%s", notes.text);
	free(b);
}

Test(wal, garbage_after_the_last_frame_is_a_torn_tail)
{
	uint64_t off[6];
	char path[128];
	uint8_t junk[300];

	five_frames(off);
	seg_path(path, 1);
	/* Garbage that even starts like a frame (magic "AMWF"). */
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 31 + 1);
	memcpy(junk, "AMWF", 4);
	write_at(path, (off_t)off[5], junk, sizeof(junk));
	expect_recover(WAL_SYNC_ALWAYS, 15, 0);
	char want[64];
	snprintf(want, sizeof(want), "offset %" PRIu64, off[5]);
	cr_assert_not_null(strstr(notes.text, want), "%s", notes.text);

	/* A single stray byte, far into the zero tail, is torn too. */
	uint8_t one = 1;
	write_at(path, (off_t)off[5] + 1000, &one, 1);
	expect_recover(WAL_SYNC_ALWAYS, 15, 0);
	cr_assert_not_null(strstr(notes.text, want), "%s", notes.text);
	expect_recover(WAL_SYNC_ALWAYS, 15, 0);
}

Test(wal, torn_new_segment_header_is_removed)
{
	struct wal w;
	uint64_t seq = 1;
	char path[128];

	open_commit(&w, WAL_SYNC_ALWAYS, 4096, &seq, 10, 10);
	wal_close(&w);
	int nseg = count_segments();
	cr_assert_gt(nseg, 1);
	/* A segment whose creation was cut after 10 bytes of its header. */
	seg_path(path, seq);
	write_all(path, "AMWL\1\0\0\0\7\0", 10);
	expect_recover(WAL_SYNC_ALWAYS, seq - 1, 4096);
	cr_assert_eq(notes.warns, 1, "%s", notes.text);
	cr_assert_eq(count_segments(), nseg);
	/* A header-only segment (crash before the first frame) goes too. */
	uint8_t h[WALFMT_SEG_HDR];
	walfmt_seg_encode(h, 7, seq, seq - 1);
	write_all(path, h, sizeof(h));
	expect_recover(WAL_SYNC_ALWAYS, seq - 1, 4096);
	cr_assert_eq(notes.infos, 1, "%s", notes.text);
	cr_assert_not_null(strstr(notes.text, "no frame"), "%s", notes.text);
	cr_assert_eq(count_segments(), nseg);
	/* And the next batch starts a fresh one. */
	open_commit(&w, WAL_SYNC_ALWAYS, 4096, &seq, 1, 1);
	wal_close(&w);
	expect_recover(WAL_SYNC_ALWAYS, seq - 1, 4096);
}

/* ======================================================================
 * Corruption inside the log
 * ====================================================================== */

static void expect_corrupt(const char *name, uint64_t offset, uint64_t seg_bytes)
{
	struct wal w;
	uint64_t last;
	char want[64];

	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	if (seg_bytes)
		wal_set_segment_bytes(&w, seg_bytes);
	int rc = wal_recover(&w, NULL, NULL, &last);
	cr_assert_eq(rc, WAL_ECORRUPT, "rc %d: %s", rc, wal_errmsg(&w));
	cr_assert_not_null(strstr(wal_errmsg(&w), name), "%s", wal_errmsg(&w));
	snprintf(want, sizeof(want), "offset %" PRIu64 ":", offset);
	cr_assert_not_null(strstr(wal_errmsg(&w), want), "%s", wal_errmsg(&w));
	/* No append is possible on a log that did not recover. */
	cr_assert_eq(wal_batch_add(&w, UINT64_MAX, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_EINVAL);
	wal_close(&w);
}

Test(wal, flipped_byte_in_an_early_frame_body_is_corruption)
{
	uint64_t off[6];
	char path[128];

	five_frames(off);
	seg_path(path, 1);
	flip_byte(path, (off_t)(off[1] + 40));
	expect_corrupt("wal-0000000000000001.log", off[1], 0);
}

Test(wal, flipped_byte_in_an_early_frame_header_is_corruption)
{
	uint64_t off[6];
	char path[128];

	five_frames(off);
	seg_path(path, 1);
	flip_byte(path, (off_t)(off[2] + 9)); /* its length field */
	expect_corrupt("wal-0000000000000001.log", off[2], 0);
	flip_byte(path, (off_t)(off[2] + 9));
	flip_byte(path, (off_t)off[2]);       /* its magic */
	expect_corrupt("wal-0000000000000001.log", off[2], 0);
}

Test(wal, damaged_segment_header_with_frames_after_is_corruption)
{
	uint64_t off[6];
	char path[128];

	five_frames(off);
	seg_path(path, 1);
	flip_byte(path, 20);
	expect_corrupt("wal-0000000000000001.log", 0, 0);
}

Test(wal, damage_in_a_segment_that_is_not_the_last_is_corruption)
{
	struct wal w;
	struct coll c;
	uint64_t seq = 1;
	char path[128];
	size_t len;

	open_commit(&w, WAL_SYNC_ALWAYS, 4096, &seq, 20, 5);
	wal_close(&w);
	cr_assert_gt(count_segments(), 2);
	/* Flip the LAST byte of the first segment: would be a "tail" if it were the last. */
	seg_path(path, 1);
	free(read_all(path, &len));
	flip_byte(path, (off_t)len - 3);
	struct wal w2;
	cr_assert_eq(open_recover(&w2, WAL_SYNC_ALWAYS, 4096, &c), WAL_ECORRUPT);
	cr_assert_not_null(strstr(wal_errmsg(&w2), "wal-0000000000000001.log"), "%s",
			   wal_errmsg(&w2));
	cr_assert_not_null(strstr(wal_errmsg(&w2), "offset"), "%s", wal_errmsg(&w2));
	wal_close(&w2);
	/* Truncating the first segment mid frame is corruption too. */
	flip_byte(path, (off_t)len - 3);
	cr_assert_eq(truncate(path, (off_t)len - 10), 0);
	cr_assert_eq(open_recover(&w2, WAL_SYNC_ALWAYS, 4096, &c), WAL_ECORRUPT);
	wal_close(&w2);
}

Test(wal, missing_middle_segment_is_corruption)
{
	/* Seqs may have gaps, so only the prev_seq chain can tell. */
	struct wal w;
	struct coll c;
	uint64_t seq = 1;
	char path[128], name[64];

	cr_assert_eq(open_recover(&w, WAL_SYNC_ALWAYS, 4096, &c), WAL_OK);
	uint64_t firsts[4] = { 0 };
	int nseg = 0;
	for (int b = 0; b < 20; b++) {
		uint64_t before = w.seg_first_seq;
		commit_batches(&w, &seq, 1, 5);
		if (w.seg_first_seq != before && nseg < 4)
			firsts[nseg++] = w.seg_first_seq;
	}
	wal_close(&w);
	cr_assert_eq(nseg, 4);
	seg_path(path, firsts[1]);
	cr_assert_eq(unlink(path), 0);
	sprintf(name, "wal-%016" PRIx64 ".log", firsts[2]);
	expect_corrupt(name, 0, 4096);
}

Test(wal, base_seq_tells_where_the_log_begins)
{
	struct wal w;
	struct coll c;
	uint64_t seq = 1;

	open_commit(&w, WAL_SYNC_ALWAYS, 4096, &seq, 30, 5);
	cr_assert_eq(wal_drop_upto(&w, 70), WAL_OK);
	wal_close(&w);
	cr_assert_eq(open_recover(&w, WAL_SYNC_ALWAYS, 4096, &c), WAL_OK);
	cr_assert_gt(w.base_seq, 0);
	cr_assert_leq(w.base_seq, 70, "only segments covered by seq 70 were dropped");
	cr_assert_eq(c.n, 150 - w.base_seq, "every record after base_seq is there");
	wal_close(&w);
}

Test(wal, wrong_shard_id_is_corruption)
{
	uint64_t off[6];
	struct wal w;
	uint64_t last;

	five_frames(off);
	cr_assert_eq(wal_open(&w, dir, 8, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_ECORRUPT);
	cr_assert_not_null(strstr(wal_errmsg(&w), "shard 7"), "%s", wal_errmsg(&w));
	wal_close(&w);
}

/* ======================================================================
 * Segments in the documented format made without struct wal
 * (tests/walfmt_sample.h; test_walfmt.c holds its bytes to the format)
 * ====================================================================== */

static int count_record(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
			const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	(void)seq; (void)op; (void)b; (void)key; (void)klen; (void)val; (void)vlen;
	++*(int *)arg;
	return 0;
}

/* Recover the log in dir with count_record; returns the last seq. */
static uint64_t recover_count(struct wal *w, int *n)
{
	uint64_t last;

	*n = 0;
	cr_assert_eq(wal_open(w, dir, SAMPLE_SHARD, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(w, count_record, n, &last), WAL_OK, "%s", wal_errmsg(w));
	return last;
}

Test(wal, segment_from_another_writer_is_adopted_and_appended_to)
{
	static uint8_t seg[8192];
	char path[128];
	size_t second, third, len = sample_segment(seg, &second, &third);
	struct wal w;
	int n;

	seg_path(path, SAMPLE_FIRST);
	write_all(path, seg, len);
	cr_assert_eq(recover_count(&w, &n), SAMPLE_LAST);
	cr_assert_eq(n, SAMPLE_RECORDS);
	/* Appends continue in that file and the seq floor holds. */
	wal_batch_begin(&w);
	cr_assert_eq(wal_batch_add(&w, SAMPLE_LAST, WALFMT_OP_SET, NULL, "x", 1, "y", 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, SAMPLE_LAST + 1, WALFMT_OP_SET, NULL, "x", 1, "y", 1), WAL_OK);
	cr_assert_eq(wal_batch_commit(&w), WAL_OK);
	cr_assert_eq(w.seg_first_seq, SAMPLE_FIRST, "no new segment");
	wal_close(&w);
	cr_assert_eq(recover_count(&w, &n), SAMPLE_LAST + 1);
	cr_assert_eq(n, SAMPLE_RECORDS + 1);
	wal_close(&w);
}

/* One batch holding r[0..n). */
static void commit_sample(struct wal *w, const struct sample_rec *r, int n)
{
	wal_batch_begin(w);
	for (int i = 0; i < n; i++)
		cr_assert_eq(wal_batch_add(w, r[i].seq, r[i].op, r[i].b, r[i].key, r[i].klen, r[i].val,
					   r[i].vlen), WAL_OK, "%s", wal_errmsg(w));
	cr_assert_eq(wal_batch_commit(w), WAL_OK, "%s", wal_errmsg(w));
}

Test(wal, api_writes_exactly_the_documented_bytes)
{
	static uint8_t want[8192];
	char path[128];
	size_t second, third, n = sample_segment(want, &second, &third), len;
	struct wal w;
	int got;

	recover_count(&w, &got);
	commit_sample(&w, sample_f1, 2);
	cr_assert_eq(w.write_off, second, "one frame per batch, after the header");
	commit_sample(&w, sample_f2, 3);
	cr_assert_eq(w.write_off, third);
	commit_sample(&w, sample_f3, 4);
	cr_assert_eq(w.write_off, n);
	wal_close(&w);
	seg_path(path, SAMPLE_FIRST);
	uint8_t *b = read_all(path, &len);
	cr_assert_geq(len, n);
	cr_assert_eq(memcmp(b, want, n), 0, "the file differs from the documented format");
	for (size_t i = n; i < len; i++)
		cr_assert_eq(b[i], 0, "preallocated tail must be zeros");
	free(b);
}

/* ======================================================================
 * Faults of the I/O layer
 * ====================================================================== */

/* Commits 4 batches of 5, then arms `spec` relative to the next write/sync,
 * commits a 5th batch that must fail; recovery must give exactly 20. */
static void fault_case(enum wal_sync_mode mode, const char *kind, const char *what)
{
	struct wal w;
	struct walio_stats st;
	uint64_t seq = 1;
	char spec[64];

	open_commit(&w, mode, 0, &seq, 4, 5);
	walio_stats(&st);
	/* Counting starts when the plan is installed: 1 is the next call. */
	snprintf(spec, sizeof(spec), "%s:1:%s", kind, what);
	cr_assert_eq(walio_fault_set(spec), 0, "%s", spec);
	wal_batch_begin(&w);
	for (int i = 0; i < 5; i++)
		add_gen(&w, seq++);
	cr_assert_eq(wal_batch_commit(&w), WAL_EIO, "%s must fail the commit", spec);
	cr_assert_not_null(strstr(wal_errmsg(&w), "wal-0000000000000001.log"), "%s", wal_errmsg(&w));
	cr_assert_not_null(strstr(wal_errmsg(&w), "offset"), "%s", wal_errmsg(&w));
	walio_stats(&st);
	cr_assert_eq(st.faults, 1);
	/* The log is failed for good: the shard must restart. */
	wal_batch_begin(&w);
	cr_assert_eq(wal_batch_add(&w, seq, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_EIO);
	cr_assert_eq(wal_batch_commit(&w), WAL_EIO);
	cr_assert_eq(wal_sync(&w), WAL_EIO);
	wal_close(&w);
	walio_fault_clear();
	expect_recover(mode, 20, 0);
	/* Life goes on after the restart. */
	seq = 21;
	open_commit(&w, mode, 0, &seq, 2, 5);
	wal_close(&w);
	expect_recover(mode, 30, 0);
}

Test(wal, fault_write_eio)
{
	fault_case(WAL_SYNC_ALWAYS, "write", "eio");
}

Test(wal, fault_write_enospc)
{
	fault_case(WAL_SYNC_PERIODIC, "write", "enospc");
}

Test(wal, fault_torn_writes)
{
	const char *keep[] = { "torn:0", "torn:1", "torn:31", "torn:32", "torn:40", "torn:100",
			       "torn:100000" };

	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
		teardown();
		setup();
		fault_case(i % 2 ? WAL_SYNC_PERIODIC : WAL_SYNC_ALWAYS, "write", keep[i]);
	}
}

Test(wal, fault_sync_eio_in_always_mode)
{
	fault_case(WAL_SYNC_ALWAYS, "sync", "eio");
}

Test(wal, fault_sync_eio_in_periodic_mode_keeps_written_batches)
{
	struct wal w;
	uint64_t seq = 1;

	open_commit(&w, WAL_SYNC_PERIODIC, 0, &seq, 4, 5);
	cr_assert_eq(walio_fault_set("sync:1:eio"), 0);
	/* Periodic mode acknowledged these after write(2): a failed sync must
	 * not take them back (the process restarts and replays the file). */
	cr_assert_eq(wal_sync(&w), WAL_EIO);
	cr_assert_not_null(strstr(wal_errmsg(&w), "fdatasync"), "%s", wal_errmsg(&w));
	cr_assert_eq(wal_batch_commit(&w), WAL_EIO);
	wal_close(&w);
	expect_recover(WAL_SYNC_PERIODIC, 20, 0);
}

Test(wal, fault_while_rotating)
{
	/* Fail each write and each sync of a rotation in turn: creating the
	 * new segment (header write, its fdatasync, the directory fsync) and
	 * closing the old one (its fdatasync). */
	const char *specs[] = { "write:1:eio", "write:1:torn:5", "write:2:eio", "sync:1:eio",
				"sync:2:eio", "sync:3:eio" };

	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct wal w;
		uint64_t seq = 1;
		int rc = WAL_OK;

		teardown();
		setup();
		open_commit(&w, WAL_SYNC_PERIODIC, 4096, &seq, 1, 10);
		uint64_t committed = seq - 1;
		cr_assert_eq(walio_fault_set(specs[i]), 0);
		/* Keep committing until the fault hits (one rotation at most). */
		for (int b = 0; b < 30 && rc == WAL_OK; b++) {
			wal_batch_begin(&w);
			for (int k = 0; k < 10; k++)
				add_gen(&w, seq++);
			rc = wal_batch_commit(&w);
			if (rc == WAL_OK)
				committed = seq - 1;
		}
		cr_assert_eq(rc, WAL_EIO, "%s never hit", specs[i]);
		wal_close(&w);
		walio_fault_clear();
		expect_recover(WAL_SYNC_PERIODIC, committed, 4096);
		/* And appending after the restart works. */
		seq = committed + 1;
		open_commit(&w, WAL_SYNC_PERIODIC, 4096, &seq, 3, 10);
		wal_close(&w);
		expect_recover(WAL_SYNC_PERIODIC, seq - 1, 4096);
	}
}

Test(wal, dropped_write_in_the_middle_is_reported_not_skipped)
{
	struct wal w;
	struct coll c;
	uint64_t seq = 1;

	open_commit(&w, WAL_SYNC_PERIODIC, 0, &seq, 2, 5);
	uint64_t hole = w.write_off;
	cr_assert_eq(walio_fault_set("write:1:drop"), 0);
	commit_batches(&w, &seq, 3, 5);   /* the first of these never reaches the file */
	wal_close(&w);
	walio_fault_clear();
	cr_assert_eq(open_recover(&w, WAL_SYNC_PERIODIC, 0, &c), WAL_ECORRUPT);
	char want[64];
	snprintf(want, sizeof(want), "offset %" PRIu64 ":", hole);
	cr_assert_not_null(strstr(wal_errmsg(&w), want), "%s", wal_errmsg(&w));
	cr_assert_eq(c.n, 10, "the batches before the hole were replayed");
	wal_close(&w);
}

Test(wal, fault_plan_from_environment)
{
	struct wal w;
	struct coll c;
	uint64_t seq = 1;

	/* First commit: write 1 is the segment header, write 2 the frame. */
	setenv(WALIO_ENV, "write:2:torn:20", 1);
	cr_assert_eq(open_recover(&w, WAL_SYNC_ALWAYS, 0, &c), WAL_OK);
	wal_batch_begin(&w);
	add_gen(&w, seq++);
	cr_assert_eq(wal_batch_commit(&w), WAL_EIO);
	wal_close(&w);
	/* Once per process: the plan is not installed again. */
	expect_recover(WAL_SYNC_ALWAYS, 0, 0);
	seq = 1;
	open_commit(&w, WAL_SYNC_ALWAYS, 0, &seq, 3, 2);
	wal_close(&w);
	expect_recover(WAL_SYNC_ALWAYS, 6, 0);
	unsetenv(WALIO_ENV);
}

Test(wal, malformed_fault_plan_in_environment_is_refused)
{
	struct wal w;

	setenv(WALIO_ENV, "write:0:eio", 1);
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_EINVAL);
	cr_assert_not_null(strstr(wal_errmsg(&w), WALIO_ENV), "%s", wal_errmsg(&w));
	wal_close(&w);
	unsetenv(WALIO_ENV);
}

Test(wal, fault_plan_syntax)
{
	const char *good[] = { "write:1:eio", "write:50:enospc", "write:50:torn:100", "sync:3:eio",
			       "write:7:drop",
			       "sync:1:enospc", "write:2:eio,sync:9:eio", "write:3:slow:200",
			       "sync:1:slow:60000", "" };
	const char *bad[] = { "write", "write:0:eio", "write:x:eio", "write:5", "write:5:eperm",
			      "read:5:eio", "sync:5:torn:3", "sync:5:drop", "write:5:drop:1", "write:5:torn:", "write:5:torn:3x",
			      "write:5:eio,", ",", "write:-1:eio", "write:5:eio:extra",
			      "write:5:slow:0", "write:5:slow:60001", "write:5:slow:", "sync:2:slow:9x" };

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		cr_assert_eq(walio_fault_set(good[i]), 0, "%s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(walio_fault_set(bad[i]), -EINVAL, "%s", bad[i]);
}

Test(wal, fault_fires_once_at_exactly_the_nth_call)
{
	char path[128];
	struct walio_stats st;
	int fd;

	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT, 0644);
	cr_assert_eq(walio_fault_set("write:3:torn:2,sync:2:eio"), 0);
	cr_assert_eq(walio_pwrite(fd, "aaaa", 4, 0), 0);
	cr_assert_eq(walio_pwrite(fd, "bbbb", 4, 4), 0);
	cr_assert_eq(walio_pwrite(fd, "cccc", 4, 8), -EIO);
	cr_assert_eq(walio_pwrite(fd, "dddd", 4, 12), 0);
	cr_assert_eq(walio_datasync(fd), 0);
	cr_assert_eq(walio_datasync(fd), -EIO);
	cr_assert_eq(walio_datasync(fd), 0);
	walio_stats(&st);
	cr_assert_eq(st.writes, 4);
	cr_assert_eq(st.syncs, 3);
	cr_assert_eq(st.faults, 2);
	close(fd);
	size_t len;
	char *b = (char *)read_all(path, &len);
	cr_assert_eq(len, 16);
	cr_assert_eq(memcmp(b, "aaaabbbbcc\0\0dddd", 16), 0, "torn write keeps 2 bytes");
	free(b);
}

/* A slow rule delays its call and then does it: the bytes land, no error. */
Test(wal, slow_fault_delays_and_then_writes)
{
	char path[128];
	struct timespec t0, t1;
	int fd;

	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT, 0644);
	cr_assert_eq(walio_fault_set("write:2:slow:50,sync:1:slow:50"), 0);
	cr_assert_eq(walio_pwrite(fd, "aaaa", 4, 0), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(walio_pwrite(fd, "bbbb", 4, 4), 0);
	cr_assert_eq(walio_datasync(fd), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	cr_assert_geq((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 100,
		      "both calls slept their 50 ms");
	close(fd);
	size_t len;
	char *b = (char *)read_all(path, &len);
	cr_assert_eq(len, 8);
	cr_assert_eq(memcmp(b, "aaaabbbb", 8), 0);
	free(b);
}

/* ======================================================================
 * Modes, syncing, API rules
 * ====================================================================== */

Test(wal, mode_none_touches_no_files)
{
	struct wal w;
	uint64_t last = 5;
	char missing[128];

	snprintf(missing, sizeof(missing), "%s/does-not-exist", dir);
	const char *dirs[] = { dir, missing, NULL };
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(wal_open(&w, dirs[i], 7, WAL_SYNC_NONE, 0), WAL_OK);
		cr_assert_eq(wal_recover(&w, collect, NULL, &last), WAL_OK);
		cr_assert_eq(last, 0);
		wal_batch_begin(&w);
		cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_OK);
		cr_assert_eq(wal_batch_commit(&w), WAL_OK);
		cr_assert_eq(wal_next_sync_ns(&w), -1);
		cr_assert_eq(wal_sync_if_due(&w, UINT64_MAX), WAL_OK);
		cr_assert_eq(wal_sync(&w), WAL_OK);
		cr_assert_eq(wal_drop_upto(&w, 100), WAL_OK);
		wal_close(&w);
	}
	cr_assert_eq(count_files(), 0);
	cr_assert_eq(access(missing, F_OK), -1);
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

Test(wal, periodic_sync_is_due_one_interval_after_the_first_unsynced_commit)
{
	struct wal w;
	struct walio_stats a, b;
	uint64_t last, seq = 1;

	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_PERIODIC, 50), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	cr_assert_eq(wal_next_sync_ns(&w), -1, "clean: nothing due");
	uint64_t t0 = mono_ns();
	commit_batches(&w, &seq, 1, 3);
	uint64_t t1 = mono_ns();
	int64_t due = wal_next_sync_ns(&w);
	cr_assert_geq(due, (int64_t)(t0 + 50000000));
	cr_assert_leq(due, (int64_t)(t1 + 50000000));
	/* More commits do not push the deadline. */
	commit_batches(&w, &seq, 2, 3);
	cr_assert_eq(wal_next_sync_ns(&w), due);
	walio_stats(&a);
	cr_assert_eq(wal_sync_if_due(&w, (uint64_t)due - 1), WAL_OK);
	walio_stats(&b);
	cr_assert_eq(b.syncs, a.syncs, "not due yet: no fdatasync");
	cr_assert_eq(wal_next_sync_ns(&w), due);
	cr_assert_eq(wal_sync_if_due(&w, (uint64_t)due), WAL_OK);
	walio_stats(&b);
	cr_assert_eq(b.syncs, a.syncs + 1, "due: one fdatasync");
	cr_assert_eq(wal_next_sync_ns(&w), -1);
	cr_assert_eq(wal_sync_if_due(&w, UINT64_MAX), WAL_OK);
	cr_assert_eq(wal_sync(&w), WAL_OK);
	walio_stats(&a);
	cr_assert_eq(a.syncs, b.syncs, "clean: wal_sync does nothing");
	/* The next commit starts a new interval. */
	commit_batches(&w, &seq, 1, 1);
	cr_assert_geq(wal_next_sync_ns(&w), (int64_t)(t1 + 50000000));
	cr_assert_eq(wal_sync(&w), WAL_OK);
	walio_stats(&b);
	cr_assert_eq(b.syncs, a.syncs + 1);
	wal_close(&w);
}

/* After a first batch that creates the segment, the writes and syncs nb
 * batches of per records take. Leaves w open. */
static struct walio_stats batches_cost(struct wal *w, enum wal_sync_mode mode, int nb, int per)
{
	struct walio_stats a, b;
	uint64_t seq = 1;

	open_commit(w, mode, 0, &seq, 1, 3);
	walio_stats(&a);
	commit_batches(w, &seq, nb, per);
	walio_stats(&b);
	return (struct walio_stats){ .writes = b.writes - a.writes, .syncs = b.syncs - a.syncs,
				     .faults = b.faults - a.faults };
}

Test(wal, always_mode_syncs_every_commit_and_is_never_due)
{
	struct wal w;
	struct walio_stats cost = batches_cost(&w, WAL_SYNC_ALWAYS, 4, 3);

	cr_assert_eq(cost.syncs, 4, "one fdatasync per batch");
	cr_assert_eq(cost.writes, 4, "one write per batch");
	cr_assert_eq(wal_next_sync_ns(&w), -1);
	wal_close(&w);
}

Test(wal, periodic_mode_writes_once_per_batch_without_syncing)
{
	struct wal w;
	struct walio_stats cost = batches_cost(&w, WAL_SYNC_PERIODIC, 10, 300);

	cr_assert_eq(cost.writes, 10);
	cr_assert_eq(cost.syncs, 0);
	wal_close(&w);
}

Test(wal, batch_add_checks_its_arguments)
{
	struct wal w;
	uint64_t last;
	static uint8_t big[(1u << 20) + 1];

	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_PERIODIC, 0), WAL_OK);
	wal_batch_begin(&w);
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_EINVAL, "before recover");
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_EINVAL, "twice");
	cr_assert_eq(wal_batch_add(&w, 0, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_EINVAL, "seq 0");
	cr_assert_eq(wal_batch_add(&w, 1, 0, NULL, "k", 1, "v", 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, 1, 3, NULL, "k", 1, "v", 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, "k", 0, "v", 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, big, 4097, "v", 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, "k", 1, big, sizeof(big)), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, NULL, 1, "v", 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_SET, NULL, "k", 1, NULL, 1), WAL_EINVAL);
	cr_assert_eq(wal_batch_bytes(&w), 0);
	cr_assert_eq(wal_batch_add(&w, 3, WALFMT_OP_SET, NULL, "k", 1, NULL, 0), WAL_OK);
	cr_assert_eq(wal_batch_bytes(&w), 17);
	cr_assert_eq(wal_batch_add(&w, 3, WALFMT_OP_DEL, NULL, "k", 1, NULL, 0), WAL_EINVAL, "same seq");
	cr_assert_eq(wal_batch_add(&w, 4, WALFMT_OP_DEL, NULL, "k", 1, "ignored", 7), WAL_OK);
	cr_assert_eq(wal_batch_bytes(&w), 34, "a DEL carries no value");
	cr_assert_eq(wal_batch_commit(&w), WAL_OK);
	cr_assert_eq(wal_batch_commit(&w), WAL_OK, "empty batch: no-op");
	wal_batch_begin(&w);
	cr_assert_eq(wal_batch_add(&w, 4, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_EINVAL, "below committed");
	/* begin discards uncommitted records */
	cr_assert_eq(wal_batch_add(&w, 9, WALFMT_OP_SET, NULL, "k", 1, "v", 1), WAL_OK);
	wal_batch_begin(&w);
	cr_assert_eq(wal_batch_commit(&w), WAL_OK);
	wal_close(&w);
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_PERIODIC, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	cr_assert_eq(last, 4);
	wal_close(&w);
	cr_assert_eq(wal_open(&w, dir, 7, (enum wal_sync_mode)7, 0), WAL_EINVAL);
	wal_close(&w);
	snprintf((char *)big, 200, "%s/nope", dir);
	cr_assert_eq(wal_open(&w, (char *)big, 7, WAL_SYNC_ALWAYS, 0), WAL_EIO);
	cr_assert_not_null(strstr(wal_errmsg(&w), "nope"));
	wal_close(&w);
}

Test(wal, replay_callback_failure_stops_recovery)
{
	struct wal w;
	struct coll c = { .fail_at = 7 };
	uint64_t last, seq = 1;

	open_commit(&w, WAL_SYNC_ALWAYS, 0, &seq, 3, 4);
	wal_close(&w);
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, collect, &c, &last), WAL_EAPPLY);
	cr_assert_eq(c.n, 6);
	cr_assert_not_null(strstr(wal_errmsg(&w), "seq 7"), "%s", wal_errmsg(&w));
	wal_close(&w);
}

Test(wal, drop_upto_removes_only_covered_segments)
{
	struct wal w;
	struct coll c;
	uint64_t seq = 1;

	open_commit(&w, WAL_SYNC_ALWAYS, 4096, &seq, 30, 5);
	int n = count_segments();
	cr_assert_gt(n, 3);
	cr_assert_eq(wal_drop_upto(&w, 0), WAL_OK);
	cr_assert_eq(count_segments(), n);
	cr_assert_eq(wal_drop_upto(&w, 60), WAL_OK);
	int m = count_segments();
	cr_assert_lt(m, n);
	cr_assert_eq(wal_drop_upto(&w, UINT64_MAX - 1), WAL_OK);
	cr_assert_eq(count_segments(), 1, "the current segment stays");
	commit_batches(&w, &seq, 2, 5);
	wal_close(&w);
	/* What is left replays, starting after a gap, and seqs stay ordered. */
	cr_assert_eq(open_recover(&w, WAL_SYNC_ALWAYS, 4096, &c), WAL_OK);
	cr_assert_gt(c.n, 0);
	cr_assert_eq(c.last, seq - 1);
	wal_close(&w);
}

/* ======================================================================
 * Batch records (ops 3..6) through the API
 * ====================================================================== */

Test(wal, batch_add_rejects_bad_batch_records)
{
	const struct walfmt_batch ok = { 1, 2, 3, 0 }, committed = { 1, 2, 3, WALFMT_COMMITTED },
				  out3 = { 1, 2, 3, 3 }, ref0 = { 1, 0, 3, 0 },
				  far = { 1, 2, 65536, 0 };
	static uint8_t big[(1u << 20) + 1];
	const struct {
		int op;
		const struct walfmt_batch *b;
		const void *key;
		uint32_t klen;
		const void *val;
		uint32_t vlen;
		const char *cause;
	} bad[] = {
		{ WALFMT_OP_PSET, NULL, "k", 1, "v", 1, "without its batch fields" },
		{ WALFMT_OP_SET, &ok, "k", 1, "v", 1, "batch fields on a SET" },
		{ WALFMT_OP_DEL, &ok, "k", 1, NULL, 0, "batch fields on a SET" },
		{ 7, &ok, "k", 1, "v", 1, "bad op" },
		{ WALFMT_OP_PSET, &ok, "k", 0, "v", 1, "klen" },
		{ WALFMT_OP_PSET, &ok, big, 4097, "v", 1, "klen" },
		{ WALFMT_OP_PSET, &ok, "k", 1, big, sizeof(big), "vlen" },
		{ WALFMT_OP_PSET, &ok, NULL, 1, "v", 1, "NULL key" },
		{ WALFMT_OP_PSET, &ok, "k", 1, NULL, 1, "NULL key or value" },
		{ WALFMT_OP_PDEL, &ok, "", 0, NULL, 0, "klen" },
		{ WALFMT_OP_DECISION, &ok, "k", 1, NULL, 0, "with a key or value" },
		{ WALFMT_OP_DECISION, &ok, NULL, 0, "v", 1, "with a key or value" },
		{ WALFMT_OP_RESOLVED, &ok, NULL, 0, NULL, 0, "outcome" },
		{ WALFMT_OP_RESOLVED, &out3, NULL, 0, NULL, 0, "outcome" },
		{ WALFMT_OP_PSET, &committed, "k", 1, "v", 1, "outcome" },
		{ WALFMT_OP_DECISION, &committed, NULL, 0, NULL, 0, "outcome" },
		{ WALFMT_OP_PSET, &ref0, "k", 1, "v", 1, "ref 0" },
		{ WALFMT_OP_RESOLVED, &ref0, NULL, 0, NULL, 0, "ref 0" },
		{ WALFMT_OP_PDEL, &far, "k", 1, NULL, 0, "primary" },
	};
	struct wal w;
	uint64_t last;

	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_PERIODIC, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	wal_batch_begin(&w);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(wal_batch_add(&w, 1, bad[i].op, bad[i].b, bad[i].key, bad[i].klen,
					   bad[i].val, bad[i].vlen), WAL_EINVAL, "case %zu", i);
		cr_assert_not_null(strstr(wal_errmsg(&w), bad[i].cause), "case %zu: %s", i,
				   wal_errmsg(&w));
	}
	cr_assert_eq(wal_batch_bytes(&w), 0, "nothing was added");
	cr_assert_eq(wal_batch_add(&w, 1, WALFMT_OP_PDEL, &ok, "k", 1, "ignored", 7), WAL_OK);
	cr_assert_eq(wal_batch_bytes(&w), 41, "a PDEL carries no value");
	cr_assert_eq(wal_batch_add(&w, 2, WALFMT_OP_DECISION, &ok, NULL, 0, NULL, 0), WAL_OK);
	cr_assert_eq(wal_batch_add(&w, 2, WALFMT_OP_RESOLVED, &committed, NULL, 0, NULL, 0),
		     WAL_EINVAL, "batch records take seqs like any record");
	cr_assert_eq(wal_batch_add(&w, 3, WALFMT_OP_RESOLVED, &committed, NULL, 0, NULL, 0),
		     WAL_OK);
	cr_assert_eq(wal_batch_bytes(&w), 121);
	cr_assert_eq(wal_batch_commit(&w), WAL_OK, "%s", wal_errmsg(&w));
	wal_close(&w);
}

/* What a replay handed out, copied. */
struct got {
	int n;
	uint64_t seq[16];
	int op[16], has_b[16];
	struct walfmt_batch b[16];
	char key[16][16], val[16][16];
};

static int keep_record(void *arg, uint64_t seq, int op, const struct walfmt_batch *b,
		       const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	struct got *g = arg;

	if (g->n == 16 || klen >= 16 || vlen >= 16)
		return 1;
	g->seq[g->n] = seq;
	g->op[g->n] = op;
	g->has_b[g->n] = b != NULL;
	if (b != NULL)
		g->b[g->n] = *b;
	memcpy(g->key[g->n], key, klen);
	g->key[g->n][klen] = '\0';
	memcpy(g->val[g->n], val, vlen);
	g->val[g->n][vlen] = '\0';
	g->n++;
	return 0;
}

static const struct walfmt_batch mixed_part = { 0xb007, 42, 3, 0 };
static const struct walfmt_batch mixed_res = { 0xb007, 41, 2, WALFMT_ABORTED };
static const struct sample_rec mixed[] = {
	{ 1, WALFMT_OP_SET, "a", 1, "va", 2, NULL },
	{ 2, WALFMT_OP_PSET, "b", 1, "vb", 2, &mixed_part },
	{ 3, WALFMT_OP_PDEL, "c", 1, NULL, 0, &mixed_part },
	{ 5, WALFMT_OP_DECISION, NULL, 0, NULL, 0, &mixed_part },
	{ 6, WALFMT_OP_RESOLVED, NULL, 0, NULL, 0, &mixed_res },
	{ 7, WALFMT_OP_DEL, "a", 1, NULL, 0, NULL },
};
#define NMIXED ((int)(sizeof(mixed) / sizeof(mixed[0])))

static void expect_mixed(const struct got *g, int from)
{
	for (int i = 0; i < NMIXED; i++) {
		const struct sample_rec *r = &mixed[i];
		int j = from + i;

		cr_assert_eq(g->seq[j], r->seq, "record %d", j);
		cr_assert_eq(g->op[j], r->op, "record %d", j);
		cr_assert_eq(g->has_b[j], r->b != NULL, "record %d", j);
		cr_assert_eq(strlen(g->key[j]), r->klen, "record %d", j);
		cr_assert_eq(strncmp(g->key[j], r->klen ? r->key : "", r->klen), 0, "record %d", j);
		cr_assert_eq(strlen(g->val[j]), r->vlen, "record %d", j);
		cr_assert_eq(strncmp(g->val[j], r->vlen ? r->val : "", r->vlen), 0, "record %d", j);
		if (r->b == NULL)
			continue;
		cr_assert_eq(g->b[j].boot, r->b->boot, "record %d", j);
		cr_assert_eq(g->b[j].ref, r->b->ref, "record %d", j);
		cr_assert_eq(g->b[j].primary, r->b->primary, "record %d", j);
		cr_assert_eq(g->b[j].outcome, r->b->outcome, "record %d", j);
	}
}

Test(wal, mixed_frame_of_single_and_batch_records_recovers_record_by_record)
{
	struct wal w;
	struct got g = { 0 };
	uint64_t last;

	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	commit_sample(&w, mixed, NMIXED);
	cr_assert_eq(w.stat_batches, 1, "one frame");
	wal_close(&w);
	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, keep_record, &g, &last), WAL_OK, "%s", wal_errmsg(&w));
	cr_assert_eq(last, 7);
	cr_assert_eq(g.n, NMIXED);
	expect_mixed(&g, 0);
	memset(&g, 0, sizeof(g));
	cr_assert_eq(wal_replay(&w, keep_record, &g), WAL_OK, "%s", wal_errmsg(&w));
	cr_assert_eq(g.n, NMIXED);
	expect_mixed(&g, 0);
	wal_close(&w);
}

/* ======================================================================
 * wal_scan_dir: another shard's log, read-only
 * ====================================================================== */

/* Every file of the test dir: name, bytes, mtime. */
struct snap {
	int n;
	char name[64][64];
	uint8_t *data[64];
	size_t len[64];
	struct timespec mtime[64];
};

static void snap_take(struct snap *s)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[384];
	struct stat st;

	cr_assert_not_null(d);
	s->n = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		cr_assert_lt(s->n, 64);
		snprintf(s->name[s->n], sizeof(s->name[0]), "%.63s", de->d_name);
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		cr_assert_eq(stat(path, &st), 0);
		s->mtime[s->n] = st.st_mtim;
		s->data[s->n] = read_all(path, &s->len[s->n]);
		s->n++;
	}
	closedir(d);
}

/* The dir holds exactly what `before` saw; frees both. */
static void snap_expect_same(struct snap *before)
{
	static struct snap now;

	snap_take(&now);
	cr_assert_eq(now.n, before->n, "files were added or removed");
	for (int i = 0; i < before->n; i++) {
		int j = 0;
		while (j < now.n && strcmp(now.name[j], before->name[i]) != 0)
			j++;
		cr_assert_lt(j, now.n, "%s is gone", before->name[i]);
		cr_assert_eq(now.len[j], before->len[i], "%s changed size", before->name[i]);
		cr_assert_eq(memcmp(now.data[j], before->data[i], now.len[j]), 0, "%s changed",
			     before->name[i]);
		cr_assert(now.mtime[j].tv_sec == before->mtime[i].tv_sec &&
			  now.mtime[j].tv_nsec == before->mtime[i].tv_nsec, "%s was written",
			  before->name[i]);
		free(now.data[j]);
		free(before->data[i]);
	}
}

static int scan_collect(const char *d, struct coll *c)
{
	char why[256] = "unset";
	int rc;

	memset(c, 0, sizeof(*c));
	rc = wal_scan_dir(d, 7, collect, c, why, sizeof(why));
	cr_assert_eq(c->bad, 0, "scanned records differ from what was written");
	cr_assert(rc != 0 || why[0] == '\0', "why is empty on success: %s", why);
	return rc;
}

/* Segment first seqs of the test dir, ascending. */
static int seg_seqs(uint64_t *out, int max)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d)) != NULL)
		if (n < max && walfmt_seg_name_parse(de->d_name, &out[n]))
			n++;
	closedir(d);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
			uint64_t t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return n;
}

Test(wal, scan_dir_reads_every_segment_and_changes_nothing)
{
	static struct snap before;
	struct wal w;
	struct coll c;
	uint64_t seq = 1;

	open_commit(&w, WAL_SYNC_PERIODIC, 4096, &seq, 30, 5);
	cr_assert_gt(count_segments(), 3);
	/* The owner is still open (its last segment preallocated): the reader
	 * must not care. */
	snap_take(&before);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 150);
	cr_assert_eq(c.last, 150);
	snap_expect_same(&before);
	/* The owner appends on; a later scan sees the new frames too. */
	commit_batches(&w, &seq, 2, 5);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 160);
	wal_close(&w);
	/* And the owner's recovery afterwards finds its log as it left it. */
	expect_recover(WAL_SYNC_PERIODIC, 160, 4096);
}

Test(wal, scan_dir_hands_out_batch_records)
{
	struct wal w;
	struct got g = { 0 };
	uint64_t last;
	char why[256];

	cr_assert_eq(wal_open(&w, dir, 7, WAL_SYNC_ALWAYS, 0), WAL_OK);
	cr_assert_eq(wal_recover(&w, NULL, NULL, &last), WAL_OK);
	commit_sample(&w, mixed, NMIXED);
	cr_assert_eq(wal_scan_dir(dir, 7, keep_record, &g, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(g.n, NMIXED);
	expect_mixed(&g, 0);
	wal_close(&w);
}

Test(wal, scan_dir_torn_tail_ends_its_segment_quietly)
{
	static struct snap before;
	static const uint8_t junk[100] = { 'A', 'M', 'W', 'F', 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	struct wal w;
	struct coll c;
	uint64_t seq = 1, segs[64], frame_off[6];
	char path[128];
	int n;

	/* A frame cut short at the end of the last segment: a torn record is
	 * no record, and the file stays as it was (the owner cuts it). */
	five_frames(frame_off);
	seg_path(path, 1);
	cr_assert_eq(truncate(path, (off_t)frame_off[4] + 20), 0);
	snap_take(&before);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 4 * 3, "the records of the 4 whole frames");
	snap_expect_same(&before);
	expect_recover(WAL_SYNC_PERIODIC, 12, 0);

	/* Garbage after the last frame: a torn tail too. */
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	cr_assert_eq(mkdir(dir, 0700), 0);
	open_commit(&w, WAL_SYNC_PERIODIC, 4096, &seq, 30, 5);
	wal_close(&w);
	n = seg_seqs(segs, 64);
	cr_assert_gt(n, 3);
	seg_path(path, segs[n - 1]);
	size_t len;
	free(read_all(path, &len));
	write_at(path, (off_t)len, junk, sizeof(junk));
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 150);

	/* A segment that is not the last cut inside: its records end there,
	 * the later segments are still read (each is judged alone; the
	 * owner's recovery will call this corruption). */
	seg_path(path, segs[1]);
	cr_assert_eq(truncate(path, WALFMT_SEG_HDR + 8), 0);
	snap_take(&before);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 150 - (segs[2] - segs[1]));
	snap_expect_same(&before);
	/* A damaged segment header: that segment gives nothing. */
	seg_path(path, segs[2]);
	flip_byte(path, 3);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 150 - (segs[3] - segs[1]));
	/* An empty segment file (created, never written). */
	seg_path(path, 1000);
	write_all(path, "", 0);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 150 - (segs[3] - segs[1]));
}

Test(wal, scan_dir_without_a_log_sees_nothing)
{
	char missing[128], why[256] = "unset", path[128];
	struct coll c;

	snprintf(missing, sizeof(missing), "%s/no-such-shard", dir);
	cr_assert_eq(scan_collect(missing, &c), 0);
	cr_assert_eq(c.n, 0);
	cr_assert_eq(scan_collect(dir, &c), 0, "an empty directory");
	cr_assert_eq(c.n, 0);
	cr_assert_eq(access(missing, F_OK), -1, "nothing was created");
	/* Other files are not segments. */
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	write_all(path, "", 0);
	cr_assert_eq(scan_collect(dir, &c), 0);
	cr_assert_eq(c.n, 0);
	/* Not a directory: an I/O error, named. */
	cr_assert_eq(wal_scan_dir(path, 7, collect, &c, why, sizeof(why)), -1);
	cr_assert_not_null(strstr(why, "LOCK"), "%s", why);
}

Test(wal, scan_dir_stops_with_the_callbacks_return)
{
	struct wal w;
	struct coll c = { .fail_at = 23 };
	uint64_t seq = 1;
	char why[256];

	open_commit(&w, WAL_SYNC_PERIODIC, 4096, &seq, 10, 5);
	wal_close(&w);
	cr_assert_eq(wal_scan_dir(dir, 7, collect, &c, why, sizeof(why)), -7);
	cr_assert_eq(c.n, 22);
	cr_assert_not_null(strstr(why, "seq 23"), "%s", why);
	cr_assert_eq(wal_scan_dir(dir, 7, NULL, NULL, why, sizeof(why)), 0, "fn may be NULL");
}
