/*
 * test_txn.c — amora_batch against a real amorad (DESIGN.md §16): batches
 * over every shard applied whole, validation that changes nothing, a
 * later op of a key winning, deletes, a mget that never sees a batch in
 * part while another process commits batches, conflicting batches from
 * two processes ending all-A or all-B, EFULL in one shard and failed log
 * writes changing nothing anywhere, batches across shard restarts.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libclient/client.h"
#include "shm/batch.h"
#include "tests/proc.h"

#define SHARDS "8"

TestSuite(txn, .init = proc_init, .fini = proc_fini, .timeout = 120);

struct kv {
	char k[32], v[64];
};

static void op_set(struct amora_op *o, struct kv *b, const char *k, const char *v)
{
	snprintf(b->k, sizeof(b->k), "%s", k);
	snprintf(b->v, sizeof(b->v), "%s", v);
	*o = (struct amora_op){ AMORA_OP_SET, b->k, strlen(b->k), b->v, strlen(b->v) };
}

static void expect(amora *db, const char *k, const char *want)
{
	char got[128];
	size_t vlen = 0;
	int rc = amora_get(db, k, strlen(k), got, sizeof(got), &vlen);

	if (want == NULL) {
		cr_assert_eq(rc, AMORA_ENOTFOUND, "%s exists", k);
		return;
	}
	cr_assert_eq(rc, AMORA_OK, "get %s: %s %s", k, amora_strerror(rc), amora_errmsg(db));
	cr_assert(vlen == strlen(want) && memcmp(got, want, vlen) == 0, "%s = %.*s, want %s", k, (int)vlen, got,
		  want);
}

Test(txn, a_batch_over_every_shard_is_applied_whole)
{
	struct amora_op ops[100];
	struct kv b[100];
	amora *db;
	char k[32], v[32];

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	cr_assert_eq(amora_set(db, "gone", 4, "x", 1), AMORA_OK);
	for (int i = 0; i < 99; i++) {
		snprintf(k, sizeof(k), "acct:%d", i);
		snprintf(v, sizeof(v), "v%d", i);
		op_set(&ops[i], &b[i], k, v);
	}
	ops[99] = (struct amora_op){ AMORA_OP_DEL, "gone", 4, NULL, 0 };
	cr_assert_eq(amora_batch(db, ops, 100), AMORA_OK, "%s", amora_errmsg(db));
	for (int i = 0; i < 99; i++) {
		snprintf(k, sizeof(k), "acct:%d", i);
		snprintf(v, sizeof(v), "v%d", i);
		expect(db, k, v);
	}
	expect(db, "gone", NULL);
	/* again, over the same keys: the words are reused */
	for (int round = 0; round < 200; round++) {
		snprintf(v, sizeof(v), "r%d", round);
		for (int i = 0; i < 10; i++) {
			snprintf(k, sizeof(k), "acct:%d", i);
			op_set(&ops[i], &b[i], k, v);
		}
		cr_assert_eq(amora_batch(db, ops, 10), AMORA_OK, "round %d: %s", round, amora_errmsg(db));
		expect(db, "acct:0", v);
		expect(db, "acct:9", v);
	}
	/* a delete of a missing key, and nothing at all */
	ops[0] = (struct amora_op){ AMORA_OP_DEL, "never", 5, NULL, 0 };
	cr_assert_eq(amora_batch(db, ops, 1), AMORA_OK, "%s", amora_errmsg(db));
	cr_assert_eq(amora_batch(db, NULL, 0), AMORA_OK);
	amora_close(db);
}

Test(txn, a_bad_op_fails_the_call_and_changes_nothing)
{
	struct amora_op ops[3];
	struct kv b[3];
	char *huge = calloc(1, AMORA_VALUE_MAX + 1);
	amora *db;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	op_set(&ops[0], &b[0], "a", "1");
	op_set(&ops[1], &b[1], "b", "2");
	ops[2] = (struct amora_op){ AMORA_OP_SET, "c", 1, huge, AMORA_VALUE_MAX + 1 };
	cr_assert_eq(amora_batch(db, ops, 3), AMORA_EINVAL);
	cr_assert(strstr(amora_errmsg(db), "op 2"), "%s", amora_errmsg(db));
	ops[2] = (struct amora_op){ AMORA_OP_SET, "", 0, "x", 1 };
	cr_assert_eq(amora_batch(db, ops, 3), AMORA_EINVAL);
	cr_assert(strstr(amora_errmsg(db), "op 2: empty key"), "%s", amora_errmsg(db));
	ops[2] = (struct amora_op){ 7, "c", 1, "x", 1 };
	cr_assert_eq(amora_batch(db, ops, 3), AMORA_EINVAL);
	cr_assert_eq(amora_batch(db, NULL, 2), AMORA_EINVAL);
	cr_assert_eq(amora_batch(db, ops, AMORA_BATCH_OPS_MAX + 1), AMORA_EINVAL);
	expect(db, "a", NULL);
	expect(db, "b", NULL);
	/* the same key twice: the later op wins */
	op_set(&ops[0], &b[0], "a", "first");
	op_set(&ops[1], &b[1], "a", "second");
	cr_assert_eq(amora_batch(db, ops, 2), AMORA_OK, "%s", amora_errmsg(db));
	expect(db, "a", "second");
	ops[1] = (struct amora_op){ AMORA_OP_DEL, "a", 1, NULL, 0 };
	cr_assert_eq(amora_batch(db, ops, 2), AMORA_OK, "%s", amora_errmsg(db));
	expect(db, "a", NULL);
	free(huge);
	amora_close(db);
}

#define NK 16

/* Batch `round` of writer `who` over the NK keys: each holds "who:round". */
static int write_round(amora *db, int who, int round, int nk)
{
	struct amora_op ops[NK];
	struct kv b[NK];
	char k[32], v[32];

	snprintf(v, sizeof(v), "%d:%d", who, round);
	for (int i = 0; i < nk; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		op_set(&ops[i], &b[i], k, v);
	}
	return amora_batch(db, ops, (size_t)nk);
}

struct seen {
	char v[NK][32];
	int n;
};

static void seen_one(void *arg, size_t i, const void *val, size_t vlen)
{
	struct seen *s = arg;

	snprintf(s->v[i], sizeof(s->v[i]), "%.*s", (int)vlen, (const char *)val);
	s->n++;
}

/* One mget of the NK keys: NULL if they agree, else a description. */
static const char *fractured(amora *db)
{
	static char why[256];
	const void *keys[NK];
	size_t klens[NK];
	char kb[NK][32];
	struct seen s = { .n = 0 };
	int rc;

	for (int i = 0; i < NK; i++) {
		klens[i] = (size_t)snprintf(kb[i], sizeof(kb[i]), "k%d", i);
		keys[i] = kb[i];
	}
	rc = amora_mget(db, NK, keys, klens, seen_one, &s);
	cr_assert_eq(rc, NK, "mget: %d %s", rc, amora_errmsg(db));
	for (int i = 1; i < NK; i++)
		if (strcmp(s.v[i], s.v[0]) != 0) {
			snprintf(why, sizeof(why), "k0 = %s but k%d = %s", s.v[0], i, s.v[i]);
			return why;
		}
	return NULL;
}

/* Writers in child processes, the checking reader here. */
static pid_t spawn_writer(int who, int rounds)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		amora *db;

		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(2);
		for (int r = 1; r <= rounds; r++) {
			int rc = write_round(db, who, r, NK);

			if (rc != AMORA_OK) {
				fprintf(stderr, "writer %d round %d: %s\n", who, r, amora_errmsg(db));
				_exit(3);
			}
		}
		amora_close(db);
		_exit(0);
	}
	return pid;
}

Test(txn, mget_never_sees_a_batch_in_part_and_conflicts_serialize)
{
	amora *db;
	pid_t w[2];
	int status, reads = 0;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	cr_assert_eq(write_round(db, 0, 0, NK), AMORA_OK, "%s", amora_errmsg(db));
	w[0] = spawn_writer(1, 300);
	w[1] = spawn_writer(2, 300);
	for (;;) {
		const char *f = fractured(db);

		cr_assert_null(f, "a batch seen in part after %d reads: %s", reads, f);
		reads++;
		if (waitpid(w[0], &status, WNOHANG) == w[0]) {
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer 1 failed");
			w[0] = 0;
		}
		if (w[1] != 0 && waitpid(w[1], &status, WNOHANG) == w[1]) {
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer 2 failed");
			w[1] = 0;
		}
		if (w[0] == 0 && w[1] == 0)
			break;
		if (w[0] == 0)
			w[0] = w[1], w[1] = 0;
	}
	cr_assert_null(fractured(db), "the final state is no batch's");
	cr_log_info("%d mgets checked", reads);
	amora_close(db);
}

static struct amora_server_stats server_stats(amora *db)
{
	struct amora_server_stats st;

	cr_assert_eq(amora_server_stats(db, &st, sizeof(st)), AMORA_OK, "%s", amora_errmsg(db));
	return st;
}

Test(txn, efull_in_one_shard_changes_nothing_anywhere)
{
	enum { BIG = 60 };
	struct amora_op ops[BIG + 8];
	struct kv b[8];
	char (*names)[32] = calloc(BIG, 32);
	char *mb = malloc(AMORA_VALUE_MAX);
	uint64_t committed;
	amora *db;
	int rc;

	proc_start(&D, "--shards", SHARDS, "--memory", "64M", NULL);
	db = proc_open();
	memset(mb, 'm', AMORA_VALUE_MAX);
	cr_assert_eq(amora_set(db, "small0", 6, "before", 6), AMORA_OK);
	committed = server_stats(db).batches_committed;
	/* small keys over the shards, then 60 MiB into one shard ({big}) */
	for (int i = 0; i < 8; i++) {
		char k[16];

		snprintf(k, sizeof(k), "small%d", i);
		op_set(&ops[i], &b[i], k, "after");
	}
	for (int i = 0; i < BIG; i++) {
		snprintf(names[i], 32, "{big}:%d", i);
		ops[8 + i] = (struct amora_op){ AMORA_OP_SET, names[i], strlen(names[i]), mb, AMORA_VALUE_MAX };
	}
	rc = amora_batch(db, ops, BIG + 8);
	cr_assert_eq(rc, AMORA_EFULL, "rc %d: %s", rc, amora_errmsg(db));
	cr_assert(strstr(amora_errmsg(db), "refused its part"), "%s", amora_errmsg(db));
	expect(db, "small0", "before");
	for (int i = 1; i < 8; i++) {
		char k[16];

		snprintf(k, sizeof(k), "small%d", i);
		expect(db, k, NULL);
	}
	for (int i = 0; i < BIG; i++)
		cr_assert_eq(amora_has(db, names[i], strlen(names[i])), 0, "%s was applied", names[i]);
	cr_assert_eq(server_stats(db).batches_committed, committed);
	cr_assert_geq(server_stats(db).batches_aborted, 1);
	/* the memory came back: a batch that fits goes through */
	for (int tries = 0; tries < 200; tries++) {
		rc = amora_batch(db, ops + 8, 20);
		if (rc != AMORA_EFULL)
			break;
		usleep(10000);
	}
	cr_assert_eq(rc, AMORA_OK, "%s", amora_errmsg(db));
	cr_assert_eq(amora_has(db, names[19], strlen(names[19])), 1);
	free(names);
	free(mb);
	amora_close(db);
}

/* Log writes that fail (the fault plan: each shard's 25th write, again
 * after each restart, a few times in all: amorad's restarts back off
 * when a shard keeps failing): a batch either commits or returns
 * AMORA_EIO and changes nothing anywhere; the failed shard restarts and
 * the next batches go through. */
Test(txn, a_failed_log_write_fails_the_batch_and_changes_nothing)
{
	char last[32] = "0:0";
	int eio = 0, ok = 0;
	amora *db;

	proc_start_env(&D, "AMORA_WAL_FAULT=write:25:eio", "--shards", SHARDS, "--memory", "64M", NULL);
	db = proc_open();
	amora_set_timeout(db, 3000);
	cr_assert_eq(write_round(db, 0, 0, NK), AMORA_OK, "%s", amora_errmsg(db));
	for (int r = 1; r <= 50; r++) {
		int rc = write_round(db, 0, r, NK);
		const char *f;

		if (rc == AMORA_OK) {
			snprintf(last, sizeof(last), "0:%d", r);
			ok++;
		} else {
			cr_assert_eq(rc, AMORA_EIO, "round %d: %s %s", r, amora_strerror(rc), amora_errmsg(db));
			cr_assert(strstr(amora_errmsg(db), "could not write its log"), "%s", amora_errmsg(db));
			eio++;
		}
		for (uint64_t t0 = proc_now_ms(); amora_heartbeat(db) != AMORA_OK; usleep(5000))
			cr_assert(proc_now_ms() - t0 < 5000, "the failed shard did not come back");
		f = fractured(db);
		cr_assert_null(f, "round %d (%s): %s", r, amora_strerror(rc), f);
		expect(db, "k0", last);
	}
	cr_log_info("%d batches committed, %d failed with EIO", ok, eio);
	cr_assert_gt(eio, 0, "the injected fault never surfaced");
	cr_assert_gt(ok, 25);
	cr_assert(proc_log_has(&D, "log write failed"));
	amora_close(db);
	/* and after a restart without faults, the same */
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	proc_start(&D, "--shards", SHARDS, "--memory", "64M", NULL);
	db = proc_open();
	cr_assert_null(fractured(db));
	expect(db, "k0", last);
	amora_close(db);
}

/* Batches while the shards holding them are killed: each call returns
 * within the timeout, and every batch is there whole or not at all. */
static void across_restarts(const char *sync)
{
	pid_t shards[16];
	amora *db;
	int ok = 0, failed = 0, n;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--sync", sync, NULL);
	db = proc_open();
	amora_set_timeout(db, 3000);
	cr_assert_eq(write_round(db, 0, 0, NK), AMORA_OK, "%s", amora_errmsg(db));
	n = proc_children(D.pid, shards, 16);
	cr_assert_eq(n, 8);
	for (int r = 1; r <= 400; r++) {
		uint64_t t0 = proc_now_ms();
		int rc;
		const char *f;

		if (r % 50 == 0) {
			kill(shards[(r / 50) % n], SIGKILL);
			usleep(2000);
		}
		rc = write_round(db, 0, r, NK);
		cr_assert_lt(proc_now_ms() - t0, 3000 + 2000, "round %d took %llu ms", r,
			     (unsigned long long)(proc_now_ms() - t0));
		if (rc == AMORA_OK)
			ok++;
		else
			failed++;
		/* whole or nothing, either way (a failed batch whose outcome
		 * was unknown is decided by now or soon: reads agree anyway) */
		f = fractured(db);
		cr_assert_null(f, "round %d (%s): %s", r, amora_strerror(rc), f);
		if (rc == AMORA_OK) {
			char want[32];

			snprintf(want, sizeof(want), "0:%d", r);
			expect(db, "k3", want);
		}
		if (r % 50 == 0)
			n = proc_children(D.pid, shards, 16);
	}
	cr_assert(proc_log_has(&D, "died (signal 9); restarting"));
	cr_log_info("%d batches committed, %d failed", ok, failed);
	cr_assert_gt(ok, 300);
	cr_assert_geq(server_stats(db).batches_committed, (uint64_t)ok);
	/* and every status word of ours is resolved everywhere in the end:
	 * no restart left a part behind */
	for (uint32_t w = 0; w < SHM_BATCH_WORDS; w++) {
		const struct shm_batch_word *bw = shm_batch_word(&db->seg, shm_batch_ref(1, db->slot, w));
		uint64_t ref = shm_batch_ref((atomic_load(&bw->state) >> 24) + 1, db->slot, w);
		uint64_t t0 = proc_now_ms();

		while (!shm_batch_reusable(bw, ref) && proc_now_ms() - t0 < 5000)
			usleep(1000);
		cr_assert(shm_batch_reusable(bw, ref), "word %u still held: state %llx holders %llu mask %llx", w,
			  (unsigned long long)atomic_load(&bw->state), (unsigned long long)atomic_load(&bw->holders),
			  (unsigned long long)atomic_load(&bw->mask[0]));
	}
	amora_close(db);
}

Test(txn, batches_across_shard_restarts_complete_or_fail_whole)
{
	across_restarts("periodic");
}

/* No log: a restarted shard resolves the intents its table kept. */
Test(txn, batches_across_shard_restarts_without_a_log)
{
	across_restarts("none");
}
