/*
 * test_reads.c — libamora's read paths against a model of what was
 * written: amora_get, amora_has and amora_mget (windows of every size)
 * must give the same answers as each other and as the model, on random
 * keys and values, while tables grow and after shards are killed. The
 * reading handle keeps its memo of each shard's table view (read.c) all
 * along, so every growth and every restart is a table it must notice.
 * A reader in another process checks keys that never change while the
 * writer grows the tables under it.
 */
#include <poll.h>
#include <stdlib.h>

#include "tests/proc.h"

#define NKEYS 40000   /* model size: indices that may be written */
#define STABLE 2000   /* keys 0..STABLE-1: written once, never changed */
#define ROUNDS 6
#define CHECKS 3000   /* random single-key reads per check */
#define MGETS 200     /* random multi-gets per check, 1..100 keys each */
#define VAL_MAX 300

TestSuite(reads, .init = proc_init, .fini = proc_fini, .timeout = 180);

/* What the model knows of key i: its value's version and length
 * (version 0: absent). */
static struct { int ver; int len; } model[NKEYS];

/* Key i: unique ("k<i>."), then 0..30 filler bytes chosen by i. */
static size_t key_of(char *buf, int i)
{
	int n = sprintf(buf, "k%d.", i);
	int fill = (int)(((unsigned)i * 2654435761u) >> 27);

	for (int j = 0; j < fill; j++)
		buf[n + j] = (char)('A' + (i + j) % 26);
	return (size_t)(n + fill);
}

static void val_of(char *buf, int i, int ver, int len)
{
	for (int j = 0; j < len; j++)
		buf[j] = (char)('a' + (i * 7 + ver * 13 + j) % 26);
}

/* Whether (v, n) is key i's value per the model (or i is absent). */
static bool val_is(int i, const void *v, size_t n)
{
	char want[VAL_MAX];

	if (model[i].ver == 0 || (size_t)model[i].len != n)
		return false;
	val_of(want, i, model[i].ver, model[i].len);
	return memcmp(v, want, n) == 0;
}

/* One batch of random writes: new keys, updates and deletes among
 * 0..upto-1 (never a stable key after round 0). */
static void write_round(amora *db, int upto, int ops, unsigned *seed)
{
	char k[64], v[VAL_MAX];

	for (int n = 0; n < ops; n++) {
		int i = STABLE + rand_r(seed) % (upto - STABLE);
		size_t kl = key_of(k, i);
		int rc;

		if (model[i].ver > 0 && rand_r(seed) % 4 == 0) {
			rc = amora_del(db, k, kl);
			cr_assert_eq(rc, AMORA_OK, "del %d: %s", i, amora_errmsg(db));
			model[i].ver = 0;
			continue;
		}
		model[i].ver++;
		model[i].len = rand_r(seed) % VAL_MAX;
		val_of(v, i, model[i].ver, model[i].len);
		rc = amora_set_buffered(db, k, kl, v, (size_t)model[i].len);
		cr_assert_eq(rc, AMORA_OK, "set %d: %s", i, amora_errmsg(db));
	}
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
}

struct seen {
	const int *idx;
	int found;
	bool bad;
	size_t bad_at;
};

static void mget_check(void *arg, size_t i, const void *val, size_t vlen)
{
	struct seen *s = arg;

	s->found++;
	if (!val_is(s->idx[i], val, vlen) && !s->bad) {
		s->bad = true;
		s->bad_at = i;
	}
}

/* Every read path against the model, on random indices (absent ones too). */
static void check_reads(amora *db, unsigned *seed, const char *when)
{
	char k[100][64], buf[VAL_MAX];
	const void *keys[100];
	size_t klens[100], vlen;
	int idx[100];

	for (int n = 0; n < CHECKS; n++) {
		int i = rand_r(seed) % NKEYS;
		size_t kl = key_of(k[0], i);
		int rc = amora_get(db, k[0], kl, buf, sizeof(buf), &vlen);

		if (model[i].ver == 0) {
			cr_assert_eq(rc, AMORA_ENOTFOUND, "%s: get %d: %s", when, i, amora_strerror(rc));
			cr_assert_eq(amora_has(db, k[0], kl), 0, "%s: has %d", when, i);
		} else {
			cr_assert_eq(rc, AMORA_OK, "%s: get %d: %s %s", when, i, amora_strerror(rc),
				     amora_errmsg(db));
			cr_assert(val_is(i, buf, vlen), "%s: get %d: another value", when, i);
			cr_assert_eq(amora_has(db, k[0], kl), 1, "%s: has %d", when, i);
		}
	}
	for (int n = 0; n < MGETS; n++) {
		int want = 0, cnt = 1 + rand_r(seed) % 100;
		struct seen s = { idx, 0, false, 0 };

		for (int j = 0; j < cnt; j++) {
			idx[j] = rand_r(seed) % NKEYS;
			klens[j] = key_of(k[j], idx[j]);
			keys[j] = k[j];
			want += model[idx[j]].ver > 0;
		}
		cr_assert_eq(amora_mget(db, (size_t)cnt, keys, klens, mget_check, &s), want,
			     "%s: mget of %d keys: %s", when, cnt, amora_errmsg(db));
		cr_assert_eq(s.found, want);
		cr_assert(!s.bad, "%s: mget of %d keys: key %d has another value", when, cnt,
			  idx[s.bad_at]);
	}
}

/* A child that reads the stable keys, one at a time and in multi-gets of
 * 1..64, until `stop` is readable; exits 0 if every answer was right. */
static pid_t stable_reader(int *stop)
{
	int fd;
	pid_t pid = proc_fork_piped(&fd);

	if (pid == 0) {
		char k[64][64], buf[VAL_MAX];
		const void *keys[64];
		size_t klens[64], vlen;
		int idx[64];
		unsigned seed = 7;
		struct pollfd pf = { fd, POLLIN, 0 };
		amora *db;

		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(2);
		while (poll(&pf, 1, 0) == 0) {
			int i = rand_r(&seed) % STABLE, cnt = 1 + rand_r(&seed) % 64;
			size_t kl = key_of(k[0], i);
			struct seen s = { idx, 0, false, 0 };

			if (amora_get(db, k[0], kl, buf, sizeof(buf), &vlen) != AMORA_OK || !val_is(i, buf, vlen))
				_exit(3);
			for (int j = 0; j < cnt; j++) {
				idx[j] = rand_r(&seed) % STABLE;
				klens[j] = key_of(k[j], idx[j]);
				keys[j] = k[j];
			}
			if (amora_mget(db, (size_t)cnt, keys, klens, mget_check, &s) != cnt || s.bad)
				_exit(4);
		}
		amora_close(db);
		_exit(0);
	}
	*stop = fd;
	return pid;
}

static void wait_ready(amora *db)
{
	uint64_t t0 = proc_now_ms();

	while (amora_heartbeat(db) != AMORA_OK) {
		cr_assert(proc_now_ms() - t0 < 60000, "shards not back: %s", amora_errmsg(db));
		usleep(20000);
	}
}

Test(reads, get_has_and_mget_agree_with_the_model_across_growth_and_restarts)
{
	char k[64], v[VAL_MAX];
	unsigned seed = 1;
	pid_t shards[4], rd;
	amora *w, *r;
	int stop, status;

	proc_start(&D, "--shards", "4", "--memory", "256M", NULL);
	w = proc_open();
	r = proc_open();
	for (int i = 0; i < STABLE; i++) {
		size_t kl = key_of(k, i);

		model[i].ver = 1;
		model[i].len = i % VAL_MAX;
		val_of(v, i, 1, model[i].len);
		cr_assert_eq(amora_set_buffered(w, k, kl, v, (size_t)model[i].len), AMORA_OK);
	}
	cr_assert_eq(amora_flush(w), AMORA_OK);
	check_reads(r, &seed, "stable keys written");
	rd = stable_reader(&stop);
	for (int round = 1; round <= ROUNDS; round++) {
		char when[64];

		/* The key range widens each round: the tables grow. */
		write_round(w, STABLE + (NKEYS - STABLE) * round / ROUNDS, 8000, &seed);
		snprintf(when, sizeof(when), "round %d", round);
		check_reads(r, &seed, when);
		if (round % 2 == 0) {
			cr_assert_eq(proc_children(D.pid, shards, 4), 4);
			kill(shards[rand_r(&seed) % 4], SIGKILL);
			usleep(50000);
			wait_ready(w);
			snprintf(when, sizeof(when), "round %d, after a shard's kill -9", round);
			check_reads(r, &seed, when);
		}
	}
	cr_assert_eq(write(stop, "s", 1), 1);
	cr_assert_eq(waitpid(rd, &status, 0), rd);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the reader of the stable keys saw a wrong answer (status %d)", status);
	amora_close(r);
	amora_close(w);
}
