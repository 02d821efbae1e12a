/*
 * test_txn_log.c — what recovery makes of atomic batches' log records
 * (shardd/walfmt.h, ops PSET/PDEL/DECISION/RESOLVED; DESIGN.md §16
 * "Recovery"), on logs built by hand: a real amorad (2 shards, --sync
 * always) writes some keys and stops; frames composed here are appended
 * to its shards' logs; amorad starts again and the keys must say what the
 * batches' outcomes were. The batches carry a boot id no segment has, as
 * after a full restart: the log alone decides them.
 *
 *   no DECISION anywhere              aborted: nothing of the part applied
 *   DECISION in the primary's log     committed: every op applied
 *   the DECISION's frame torn         no decision: aborted
 *   RESOLVED in the part's own log    its outcome wins over the primary's log
 *   primary holding a part too        committed by its own DECISION
 *
 * Each is checked after a second restart as well (recovery logged
 * RESOLVED, so nothing is decided again: batch_parts_recovered is 0 then).
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "shardd/walfmt.h"
#include "shm/batch.h"
#include "shm/shard.h"
#include "tests/proc.h"

TestSuite(txn_log, .init = proc_init, .fini = proc_fini, .timeout = 120);

#define BOOT 0x0b0070000000b007ull /* no segment's boot */
#define A 0u                        /* the participant */
#define B 1u                        /* the primary */

static void start(void)
{
	proc_start(&D, "--shards", "2", "--memory", "64M", "--sync", "always", NULL);
}

static void restart(void)
{
	cr_assert_eq(proc_stop(&D, SIGTERM), 0, "amorad did not stop cleanly; see %s", D.log);
	start();
}

/* The first key "<prefix><n>" on shard s (into buf). */
static const char *key_on(char *buf, const char *prefix, uint32_t s)
{
	for (int n = 0;; n++) {
		sprintf(buf, "%s%d", prefix, n);
		if (shm_shard_of(shm_hash(buf, strlen(buf)), 2) == s)
			return buf;
	}
}

/* One record to append: op, key, value, and its batch. */
struct rec {
	int op;
	const char *key, *val;
	uint64_t ref;
	uint32_t primary;
	uint8_t outcome;
};

/* Append one frame of r[0..n) (seqs after the log's last) to shard s's
 * log, amorad stopped; cut: drop that many bytes off its end (a torn
 * write). */
static void append_frame(uint32_t s, const struct rec *r, int n, size_t cut)
{
	char path[512];
	struct walfmt_scan sc = { .shard_id = s, .name_seq = 1 };
	struct stat st;
	uint8_t *buf, frame[4096];
	uint64_t len = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/shard-%02u/wal-0000000000000001.log", D.dir, s);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "no %s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size);
	cr_assert_eq(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	cr_assert_eq(walfmt_scan(buf, (size_t)st.st_size, NULL, NULL, &sc), 0);
	cr_assert_eq(sc.status, WALFMT_CLEAN, "%s does not end cleanly", path);
	free(buf);
	for (int i = 0; i < n; i++) {
		struct walfmt_batch b = { BOOT, r[i].ref, r[i].primary, r[i].outcome };
		uint32_t kl = r[i].key ? (uint32_t)strlen(r[i].key) : 0;
		uint32_t vl = r[i].val ? (uint32_t)strlen(r[i].val) : 0;

		walfmt_rec_encode(frame + WALFMT_FRAME_HDR + len, sc.last_seq + 1 + (uint64_t)i,
				  (enum walfmt_op)r[i].op, &b, r[i].key, kl, r[i].val, vl);
		len += walfmt_rec_size(r[i].op, kl, vl);
	}
	len = walfmt_frame_seal(frame, len, (uint32_t)n, sc.last_seq + 1);
	cr_assert_eq(pwrite(fd, frame, len - cut, (off_t)sc.end), (ssize_t)(len - cut));
	cr_assert_eq(ftruncate(fd, (off_t)(sc.end + len - cut)), 0);
	close(fd);
}

static void expect_value(amora *db, const char *k, const char *want)
{
	void *v = NULL;
	size_t vl = 0;
	int rc = amora_get_alloc(db, k, strlen(k), &v, &vl);

	if (want == NULL) {
		cr_assert_eq(rc, AMORA_ENOTFOUND, "%s: found '%.*s', want no key", k, (int)vl, (char *)v);
		return;
	}
	cr_assert_eq(rc, AMORA_OK, "%s: %s, want '%s'", k, amora_strerror(rc), want);
	cr_assert(vl == strlen(want) && memcmp(v, want, vl) == 0, "%s: '%.*s', want '%s'", k,
		  (int)vl, (char *)v, want);
	free(v);
}

static uint64_t parts_recovered(amora *db)
{
	struct amora_server_stats sv;

	cr_assert_eq(amora_server_stats(db, &sv, sizeof(sv)), AMORA_OK);
	return sv.batch_parts_recovered;
}

/* The keys of a test: old (existing, on A), fresh (new, on A), prim (new,
 * on B). */
struct keys {
	char old[32], fresh[32], prim[32];
};

/* amorad with key old = "before" (and one key on B, so B has a log). */
static void setup(struct keys *k)
{
	char b[32];
	amora *db;

	key_on(k->old, "old", A);
	key_on(k->fresh, "fresh", A);
	key_on(k->prim, "prim", B);
	start();
	db = proc_open();
	cr_assert_eq(amora_set(db, k->old, strlen(k->old), "before", 6), AMORA_OK);
	key_on(b, "b", B);
	cr_assert_eq(amora_set(db, b, strlen(b), "x", 1), AMORA_OK);
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
}

/* After a restart and after a second one: the part's keys hold what the
 * outcome says (committed: fresh = "new", old gone; aborted: as before);
 * the first restart decided `decided` parts, the second none. */
static void expect_outcome(const struct keys *k, bool committed, uint64_t decided)
{
	for (int round = 0; round < 2; round++) {
		amora *db;

		if (round == 0)
			start();
		else
			restart();
		db = proc_open();
		expect_value(db, k->fresh, committed ? "new" : NULL);
		expect_value(db, k->old, committed ? NULL : "before");
		cr_assert_eq(parts_recovered(db), round == 0 ? decided : 0,
			     "restart %d: batch_parts_recovered", round + 1);
		amora_close(db);
	}
}

/* The participant's part: PSET fresh = "new", PDEL old. */
static void append_part(const struct keys *k, uint64_t ref)
{
	struct rec part[2] = {
		{ WALFMT_OP_PSET, k->fresh, "new", ref, B, 0 },
		{ WALFMT_OP_PDEL, k->old, NULL, ref, B, 0 },
	};

	append_frame(A, part, 2, 0);
}

Test(txn_log, a_part_without_a_decision_is_aborted)
{
	struct keys k;

	setup(&k);
	append_part(&k, shm_batch_ref(7, 0, 1));
	expect_outcome(&k, false, 1);
}

/* A part, and its DECISION in the primary's log, cut bytes short of it. */
static void part_and_decision(uint64_t ref, size_t cut, bool committed)
{
	struct rec decision = { WALFMT_OP_DECISION, NULL, NULL, ref, B, 0 };
	struct keys k;

	setup(&k);
	append_part(&k, ref);
	append_frame(B, &decision, 1, cut);
	expect_outcome(&k, committed, 1);
}

Test(txn_log, a_decision_in_the_primarys_log_commits_the_part)
{
	part_and_decision(shm_batch_ref(7, 0, 2), 0, true);
}

Test(txn_log, a_torn_decision_is_no_decision)
{
	/* its last 8 bytes never reached the disk */
	part_and_decision(shm_batch_ref(7, 0, 3), 8, false);
}

Test(txn_log, a_resolved_record_decides_its_part)
{
	uint64_t ref = shm_batch_ref(7, 0, 4);
	struct rec committed = { WALFMT_OP_RESOLVED, NULL, NULL, ref, B, WALFMT_COMMITTED };
	struct rec aborted = { WALFMT_OP_RESOLVED, NULL, NULL, ref, B, WALFMT_ABORTED };
	struct rec decision = { WALFMT_OP_DECISION, NULL, NULL, ref, B, 0 };
	struct keys k;

	/* committed by its RESOLVED, although the primary's log has no
	 * DECISION (a checkpoint will drop such old segments) */
	setup(&k);
	append_part(&k, ref);
	append_frame(A, &committed, 1, 0);
	expect_outcome(&k, true, 0);
	/* and aborted by it, although a DECISION is there */
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	proc_fini();
	proc_init();
	setup(&k);
	append_part(&k, ref);
	append_frame(A, &aborted, 1, 0);
	append_frame(B, &decision, 1, 0);
	expect_outcome(&k, false, 0);
}

Test(txn_log, a_primary_holding_a_part_commits_it_by_its_own_decision)
{
	uint64_t ref = shm_batch_ref(7, 0, 5);
	struct rec mine[2] = {
		{ WALFMT_OP_PSET, NULL, "new", ref, B, 0 },
		{ WALFMT_OP_DECISION, NULL, NULL, ref, B, 0 },
	};
	struct keys k;
	amora *db;

	setup(&k);
	mine[0].key = k.prim;
	append_part(&k, ref);
	append_frame(B, mine, 2, 0);
	expect_outcome(&k, true, 2);
	db = proc_open();
	expect_value(db, k.prim, "new");
	amora_close(db);
}
