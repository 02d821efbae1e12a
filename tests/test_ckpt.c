/*
 * test_ckpt.c — checkpoints (DESIGN.md §17): the file format read back
 * from bytes built by hand, every damaged or truncated file refused, and a
 * real amorad that checkpoints, deletes its old log, recovers from a
 * checkpoint, falls back from a damaged one, stops a shard that has
 * neither, and loses nothing to kill -9s while checkpoints run.
 */
#include <lz4frame.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "shardd/ckptfile.h"
#include "shardd/fmtbytes.h"
#include "shm/crc32c.h"
#include "tests/proc.h"

TestSuite(ckpt, .init = proc_init, .fini = proc_fini, .timeout = 120);

/* ---------- the format ---------- */

/* A checkpoint of shard 3 built byte by byte as ckptfile.c's top comment
 * says: header, KV "k\0y" = "" (seq 7), KV "a" = "b" (seq 9), a DECISION,
 * footer; one LZ4 frame with both checksums. */
static size_t hand_built(uint8_t *out, size_t cap)
{
	uint8_t raw[512] = { 0 }, *p = raw;
	uint32_t crc = 0;
	LZ4F_preferences_t pr = { .frameInfo = { .contentChecksumFlag = LZ4F_contentChecksumEnabled,
						 .blockChecksumFlag = LZ4F_blockChecksumEnabled } };
	uint8_t *e1;
	size_t n;

	st32(p, 0x4b434d41), st32(p + 4, 1), st32(p + 8, 3), st32(p + 12, 64);
	st64(p + 16, 10), st64(p + 24, 8), st64(p + 32, 0xb007), st64(p + 40, 1);
	st32(p + 60, shm_crc32c(p, 60));
	p += 64;
	e1 = p;
	p[4] = 1, p[6] = 3, st32(p + 8, 0), st64(p + 12, 7), memcpy(p + 20, "k\0y", 3);
	st32(p, shm_crc32c(p + 4, 19));
	p += 23;
	p[4] = 1, p[6] = 1, st32(p + 8, 1), st64(p + 12, 9), p[20] = 'a', p[21] = 'b';
	st32(p, shm_crc32c(p + 4, 18));
	p += 22;
	p[4] = 2, st32(p + 8, 3), st64(p + 12, 0xb007), st64(p + 20, 0x10041);
	st32(p, shm_crc32c(p + 4, 24));
	p += 28;
	crc = shm_crc32c(e1, (size_t)(p - e1));
	p[4] = 0xff, st64(p + 8, 2), st64(p + 16, 1), st64(p + 24, 7), st64(p + 32, 9);
	st64(p + 40, (uint64_t)(p - e1)), st32(p + 48, crc);
	st32(p, shm_crc32c(p + 4, 52));
	p += 56;
	n = LZ4F_compressFrame(out, cap, raw, (size_t)(p - raw), &pr);
	cr_assert(!LZ4F_isError(n), "%s", LZ4F_getErrorName(n));
	return n;
}

struct seen {
	int kvs, decisions;
	char keys[8][16];
	uint32_t klen[8], vlen[8];
	uint64_t seq[8], ref;
};

static int see(void *arg, const struct ckpt_entry *e)
{
	struct seen *s = arg;

	if (e->type == CKPT_DECISION) {
		s->decisions++;
		s->ref = e->ref;
		return 0;
	}
	memcpy(s->keys[s->kvs], e->key, e->klen);
	s->klen[s->kvs] = e->klen;
	s->vlen[s->kvs] = e->vlen;
	s->seq[s->kvs++] = e->seq;
	return 0;
}

Test(ckpt, bytes_built_by_hand_read_back)
{
	uint8_t file[1024];
	size_t n = hand_built(file, sizeof(file));
	struct ckpt_info in;
	struct seen s = { 0 };
	char why[300];

	cr_assert_eq(ckpt_decode(file, n, 3, see, &s, &in, why, sizeof(why)), CKPT_OK, "%s", why);
	cr_assert_eq(s.kvs, 2);
	cr_assert_eq(s.klen[0], 3);
	cr_assert_eq(memcmp(s.keys[0], "k\0y", 3), 0);
	cr_assert_eq(s.vlen[0], 0, "an empty value stays empty");
	cr_assert_eq(s.seq[1], 9);
	cr_assert_eq(s.decisions, 1);
	cr_assert_eq(s.ref, 0x10041);
	cr_assert_eq(in.covered, 10);
	cr_assert_eq(in.replay, 8);
	cr_assert_eq(in.boot, 0xb007);
	cr_assert_eq(in.kvs, 2);
	cr_assert_eq(in.min_seq, 7);
	cr_assert_eq(in.max_seq, 9);
	cr_assert_eq(ckpt_decode(file, n, 4, NULL, NULL, NULL, why, sizeof(why)), CKPT_EBAD);
	cr_assert(strstr(why, "shard 3, not 4") != NULL, "%s", why);
}

/* Every byte of a file flipped, every prefix of it: refused (CKPT_EBAD),
 * never read as a valid checkpoint. */
Test(ckpt, every_flipped_byte_and_every_truncation_is_refused)
{
	uint8_t file[1024];
	size_t n = hand_built(file, sizeof(file));
	char why[300];

	for (size_t i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			file[i] ^= (uint8_t)(1u << bit);
			cr_assert_eq(ckpt_decode(file, n, 3, NULL, NULL, NULL, why, sizeof(why)), CKPT_EBAD,
				     "byte %zu bit %d flipped was accepted", i, bit);
			file[i] ^= (uint8_t)(1u << bit);
		}
	}
	for (size_t len = 0; len < n; len++)
		cr_assert_eq(ckpt_decode(file, len, 3, NULL, NULL, NULL, why, sizeof(why)), CKPT_EBAD,
			     "a file cut at %zu bytes was accepted", len);
	cr_assert_eq(ckpt_decode(file, n, 3, NULL, NULL, NULL, why, sizeof(why)), CKPT_OK, "%s", why);
}

/* The writer's file: read back whole, accepted by `lz4 -t`, named by its
 * seqs; a temp file is left by nothing but a crash, and listing removes it. */
Test(ckpt, the_writer_round_trips_and_lz4_accepts_it)
{
	struct ckpt_writer cw;
	struct ckpt_file *v;
	struct ckpt_info in;
	struct seen s = { 0 };
	char why[600], cmd[600], out[256], tmp[400];
	static uint8_t big[1 << 20];
	size_t n;
	int fd;

	memset(big, 'v', sizeof(big));
	cr_assert_eq(ckpt_writer_open(&cw, D.dir, 5, 100, 90, 42), CKPT_OK, "%s", cw.why);
	cr_assert_eq(ckpt_writer_kv(&cw, 3, "\xff\x00k", 3, "", 0), CKPT_OK);
	cr_assert_eq(ckpt_writer_kv(&cw, 4, "big", 3, big, sizeof(big)), CKPT_OK);
	cr_assert_eq(ckpt_writer_kv(&cw, 5, "", 0, "x", 1), CKPT_EINVAL, "an empty key is refused");
	cr_assert_eq(ckpt_writer_decision(&cw, 42, 0x20000, 5), CKPT_OK);
	cr_assert_eq(ckpt_writer_finish(&cw), CKPT_OK, "%s", cw.why);
	snprintf(tmp, sizeof(tmp), "%s/ckpt-0000000000000077-0000000000000001.lz4.tmp", D.dir);
	fd = open(tmp, O_CREAT | O_WRONLY, 0600);
	cr_assert(fd >= 0);
	close(fd);
	cr_assert_eq(ckpt_list(D.dir, 1, &v, &n, why, sizeof(why)), CKPT_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].covered, 100);
	cr_assert_eq(v[0].replay, 90);
	free(v);
	cr_assert_neq(access(tmp, F_OK), 0, "the temp file is removed");
	cr_assert_eq(ckpt_read(D.dir, "ckpt-0000000000000064-000000000000005a.lz4", 5, see, &s, &in, why,
			       sizeof(why)), CKPT_OK, "%s", why);
	cr_assert_eq(s.kvs, 2);
	cr_assert_eq(s.vlen[1], sizeof(big));
	cr_assert_eq(s.decisions, 1);
	cr_assert_eq(in.boot, 42);
	snprintf(cmd, sizeof(cmd), "lz4 -t %s/ckpt-0000000000000064-000000000000005a.lz4 2>&1", D.dir);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "lz4 -t refused it: %s", out);
}

/* ---------- a real amorad ---------- */

#define SMALL_LOG "--checkpoint-min-log", "64K"

static int put(amora *db, const char *prefix, int i, int version)
{
	char k[64], v[160];
	int kl = proc_key(k, prefix, i), vl = proc_val(v, i, version);

	return amora_set(db, k, (size_t)kl, v, (size_t)vl);
}

static void expect_value(amora *db, const char *prefix, int i, int version)
{
	char k[64], want[160], got[256];
	size_t gl = 0;
	int kl = proc_key(k, prefix, i), wl = proc_val(want, i, version);
	int rc = amora_get(db, k, (size_t)kl, got, sizeof(got), &gl);

	cr_assert_eq(rc, AMORA_OK, "%s: %s (%s)", k, amora_strerror(rc), amora_errmsg(db));
	cr_assert(gl == (size_t)wl && memcmp(got, want, gl) == 0, "%s holds %.*s, not version %d", k,
		  (int)gl, got, version);
}

/* Files of shard `s` whose names start with `prefix` (temp files of a
 * checkpoint being written not counted). */
static int count_files(int s, const char *prefix)
{
	char dir[400];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/shard-%02d", D.dir, s);
	d = opendir(dir);
	cr_assert_not_null(d, "%s", dir);
	while ((de = readdir(d)) != NULL)
		n += strncmp(de->d_name, prefix, strlen(prefix)) == 0 && strstr(de->d_name, ".tmp") == NULL;
	closedir(d);
	return n;
}

/* Overwrite keys 0..n-1 `rounds` times with buffered sets and a flush. */
static void overwrite(amora *db, int n, int rounds, int first_version)
{
	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < n; i++) {
			char k[64], v[160];
			int kl = proc_key(k, "w", i), vl = proc_val(v, i, first_version + r);

			cr_assert_eq(amora_set_buffered(db, k, (size_t)kl, v, (size_t)vl), AMORA_OK, "%s",
				     amora_errmsg(db));
		}
		cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	}
}

Test(ckpt, checkpoints_bound_the_log_and_recovery_reads_them)
{
	amora *db;
	struct amora_server_stats sv;

	proc_start(&D, "--shards", "2", "--memory", "128M", SMALL_LOG, "--log-level", "debug", NULL);
	db = proc_open();
	overwrite(db, 2000, 30, 1);
	/* Two checkpoints kept, old segments deleted (a third checkpoint lives
	 * only from its rename to the deletion right after it). */
	for (uint64_t t0 = proc_now_ms(); count_files(0, "ckpt-") != 2 || count_files(0, "wal-") >= 4;
	     usleep(10000))
		cr_assert_lt(proc_now_ms() - t0, 10000, "after 60 000 overwrites: %d checkpoints, %d log segments",
			     count_files(0, "ckpt-"), count_files(0, "wal-"));
	cr_assert_eq(amora_server_stats(db, &sv, sizeof(sv)), AMORA_OK);
	cr_assert_geq(sv.checkpoints, 2);
	cr_assert_lt(sv.log_disk_bytes, 30 * 2000 * 100, "the log on disk is bounded");
	amora_close(db);
	/* kill -9: the next amorad starts from a checkpoint and the log after */
	daemon_kill(&D);
	proc_start(&D, "--shards", "2", "--memory", "128M", SMALL_LOG, "--log-level", "debug", NULL);
	cr_assert(proc_log_has(&D, "checkpoint ckpt-"), "recovery did not start from a checkpoint");
	db = proc_open();
	for (int i = 0; i < 2000; i++)
		expect_value(db, "w", i, 30);
	overwrite(db, 2000, 1, 31);
	amora_close(db);
	/* and again, after a clean stop (its final checkpoint) */
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	proc_start(&D, "--shards", "2", "--memory", "128M", SMALL_LOG, NULL);
	db = proc_open();
	for (int i = 0; i < 2000; i++)
		expect_value(db, "w", i, 31);
	amora_close(db);
}

/* Damage the newest checkpoint of shard 0 (a byte in its middle). */
static void damage_newest(int shard, int which_from_newest)
{
	struct ckpt_file *v;
	char dir[400], name[CKPT_NAME_LEN + 1], path[500], why[600];
	size_t n;
	struct stat st;
	int fd;
	char b;

	snprintf(dir, sizeof(dir), "%s/shard-%02d", D.dir, shard);
	cr_assert_eq(ckpt_list(dir, 0, &v, &n, why, sizeof(why)), CKPT_OK);
	cr_assert_gt(n, (size_t)which_from_newest);
	ckpt_name(name, v[n - 1 - which_from_newest].covered, v[n - 1 - which_from_newest].replay);
	free(v);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0 && fstat(fd, &st) == 0);
	cr_assert_eq(pread(fd, &b, 1, st.st_size / 2), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, st.st_size / 2), 1);
	close(fd);
}

/* Two checkpoints or more, then writes in a log segment after the newest,
 * then kill -9 (no checkpoint at the end): the newest needs the last
 * segment, the older one the segments before it too. */
static void two_checkpoints_then_kill(void)
{
	amora *db;

	proc_start(&D, "--shards", "2", "--memory", "128M", SMALL_LOG, NULL);
	db = proc_open();
	overwrite(db, 1000, 21, 1);
	for (uint64_t t0 = proc_now_ms(); count_files(0, "ckpt-") < 2; usleep(10000))
		cr_assert_lt(proc_now_ms() - t0, 10000, "no two checkpoints");
	usleep(300000); /* a checkpoint the last writes began is done */
	cr_assert_eq(amora_set(db, "last", 4, "1", 1), AMORA_OK); /* in a segment after it */
	amora_close(db);
	daemon_kill(&D);
}

static void expect_all(amora *db)
{
	char got[8];
	size_t gl;

	for (int i = 0; i < 1000; i++)
		expect_value(db, "w", i, 21);
	cr_assert_eq(amora_get(db, "last", 4, got, sizeof(got), &gl), AMORA_OK);
}

Test(ckpt, a_damaged_newest_falls_back_to_the_older_one)
{
	amora *db;

	two_checkpoints_then_kill();
	damage_newest(0, 0);
	damage_newest(1, 0);
	proc_start(&D, "--shards", "2", "--memory", "128M", SMALL_LOG, NULL);
	cr_assert(proc_log_has(&D, "checkpoint unusable"), "no warning about the damaged checkpoint");
	cr_assert(proc_log_has(&D, "byte "), "the warning does not name the offset");
	db = proc_open();
	expect_all(db);
	cr_assert_eq(amora_heartbeat(db), AMORA_OK, "%s", amora_errmsg(db));
	amora_close(db);
}

Test(ckpt, no_usable_checkpoint_and_a_cut_log_stops_the_shard)
{
	amora *db;
	int failed = 0;

	two_checkpoints_then_kill();
	damage_newest(0, 0);
	damage_newest(0, 1);
	proc_start(&D, "--shards", "2", "--memory", "128M", SMALL_LOG, NULL);
	db = proc_open();
	for (uint64_t t0 = proc_now_ms(); amora_heartbeat(db) != AMORA_EFAILED; usleep(10000))
		cr_assert_lt(proc_now_ms() - t0, 10000, "shard 0 did not stop");
	cr_assert(strstr(amora_errmsg(db), "shard 0") != NULL, "%s", amora_errmsg(db));
	cr_assert(proc_log_has(&D, "no usable checkpoint"), "the cause is not logged");
	for (int i = 0; i < 1000; i++) {
		char k[64], got[256];
		size_t gl;
		int kl = proc_key(k, "w", i), rc = amora_get(db, k, (size_t)kl, got, sizeof(got), &gl);

		cr_assert(rc == AMORA_OK || rc == AMORA_ENOTFOUND || rc == AMORA_EFAILED, "%s", amora_errmsg(db));
		failed += rc != AMORA_OK;
	}
	cr_assert_lt(failed, 1000, "shard 1 serves");
	amora_close(db);
}

/* A writer checks every acknowledged write while shards are killed in
 * the middle of frequent checkpoints. */
Test(ckpt, kill9_during_checkpoints_loses_nothing, .timeout = 180)
{
	_Atomic int *acked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t shards[4], writer;
	int status;
	amora *db;

	proc_start(&D, "--shards", "2", "--memory", "128M", "--checkpoint-min-log", "64K",
		   "--checkpoint-factor", "1", NULL);
	acked[0] = -1;
	writer = fork();
	if (writer == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(10);
		amora_set_timeout(db, 20000);
		for (int i = 0; i < 30000; i++) {
			int rc = put(db, "k", i % 500, i);

			if (rc != AMORA_OK) {
				fprintf(stderr, "write %d: %s: %s\n", i, amora_strerror(rc), amora_errmsg(db));
				_exit(11);
			}
			atomic_store(&acked[0], i);
		}
		_exit(amora_close(db) == AMORA_OK ? 0 : 12);
	}
	for (int k = 0; k < 8; k++) {
		while (atomic_load(&acked[0]) < 3000 * (k + 1) && waitpid(writer, NULL, WNOHANG) == 0)
			usleep(1000);
		cr_assert_eq(proc_children(D.pid, shards, 4), 2);
		kill(shards[k % 2], SIGKILL);
	}
	cr_assert_eq(waitpid(writer, &status, 0), writer);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer failed: %d", status);
	db = proc_open();
	for (int i = 30000 - 500; i < 30000; i++)
		expect_value(db, "k", i % 500, i);
	amora_close(db);
	/* and after amorad itself goes: from checkpoints and logs alone */
	daemon_kill(&D);
	proc_start(&D, "--shards", "2", "--memory", "128M", "--checkpoint-min-log", "64K", NULL);
	db = proc_open();
	for (int i = 30000 - 500; i < 30000; i++)
		expect_value(db, "k", i % 500, i);
	amora_close(db);
	cr_assert(proc_log_has(&D, "checkpoint ckpt-"));
}

Test(ckpt, amora_checkpoint_waits_for_every_shard)
{
	char out[512], cmd[600];
	amora *db;
	struct amora_shard_stats sh;

	proc_start(&D, "--shards", "4", "--memory", "128M", NULL);
	db = proc_open();
	overwrite(db, 100, 1, 1);
	cr_assert_eq(amora_checkpoint(db), AMORA_OK, "%s", amora_errmsg(db));
	for (int s = 0; s < 4; s++) {
		cr_assert_eq(count_files(s, "ckpt-"), 1, "shard %d wrote no checkpoint", s);
		cr_assert_eq(amora_shard_stats(db, (uint32_t)s, &sh, sizeof(sh)), AMORA_OK);
		cr_assert_eq(sh.checkpoints, 1);
		cr_assert_gt(sh.checkpoint_seq, 0);
	}
	cr_assert_eq(amora_checkpoint(db), AMORA_OK, "nothing new: done at once");
	cr_assert_eq(count_files(0, "ckpt-"), 1, "nothing new: no second file");
	amora_close(db);
	cr_assert_eq(proc_cli(out, sizeof(out), "checkpoint"), 0, "%s", out);
	cr_assert_str_eq(out, "OK\n");
	snprintf(cmd, sizeof(cmd), "redis-cli -s %s AMORA.CHECKPOINT", D.sock);
	cr_assert_eq(proc_run(out, sizeof(out), cmd), 0, "%s", out);
	cr_assert(strncmp(out, "(integer) ", 10) == 0 || atoi(out) > 0, "%s", out);
}

Test(ckpt, no_checkpoints_without_a_log)
{
	char out[512];
	amora *db;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--sync", "none", NULL);
	db = proc_open();
	cr_assert_eq(amora_checkpoint(db), AMORA_EINVAL);
	cr_assert(strstr(amora_errmsg(db), "--sync none") != NULL, "%s", amora_errmsg(db));
	amora_close(db);
	cr_assert_eq(proc_cli(out, sizeof(out), "checkpoint 2>&1"), 2);
	cr_assert(strstr(out, "--sync none") != NULL, "%s", out);
}
