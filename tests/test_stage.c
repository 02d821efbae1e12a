/*
 * test_stage.c — staged writes (shm/shard.h) and a shard's round of them
 * (shardd/stage.h): invisible until published, and a round of writes,
 * published after the fact, decides and leaves exactly what the same
 * writes applied one by one do, also with many writes of one key in a
 * round and tables that grow while writes are staged.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardd/stage.h"

#define MiB (1ULL << 20)

static struct shm_seg seg;
static struct shm_writer staged, direct; /* shard 0 through rounds, shard 1 one by one */
static struct stage round_;

static void setup(void)
{
	cr_assert_eq(shm_seg_create(&seg, 256 * MiB, 2), SHM_OK);
	cr_assert_eq(shm_writer_open(&staged, &seg, 0, 0, NULL, NULL), SHM_OK);
	cr_assert_eq(shm_writer_open(&direct, &seg, 1, 0, NULL, NULL), SHM_OK);
	cr_assert_eq(stage_init(&round_, &seg), 0);
}

static void teardown(void)
{
	stage_destroy(&round_);
	shm_writer_close(&staged);
	shm_writer_close(&direct);
	shm_seg_close(&seg);
}

TestSuite(stage, .init = setup, .fini = teardown, .timeout = 60);

static int get(uint32_t shard, const char *key, struct shm_kv *kv)
{
	return shm_shard_get(&seg, shm_shard_at(&seg, shard), key, (uint32_t)strlen(key),
			     shm_hash(key, strlen(key)), kv);
}

/* Stage a set (val != NULL) or a delete of `key` into the round, as
 * shardd's apply does. */
static int stage_op(const char *key, const char *val)
{
	uint32_t klen = (uint32_t)strlen(key);
	uint64_t h = shm_hash(key, klen);
	struct shm_staged *s = stage_slot(&round_);
	const struct shm_staged *prev;
	int rc;

	cr_assert_not_null(s);
	prev = stage_find(&round_, key, klen, h);
	if (val != NULL)
		rc = shm_writer_stage_set(&staged, key, klen, h, val, (uint32_t)strlen(val), prev, s);
	else
		rc = shm_writer_stage_del(&staged, key, klen, h, prev, s);
	if (rc == SHM_OK)
		stage_add(&round_);
	return rc;
}

static const struct shm_table *table_of(const struct shm_writer *w)
{
	return (const struct shm_table *)(seg.base + w->table_off);
}

static uint64_t seq_of(struct shm_writer *w)
{
	return atomic_load(&w->sh->seq);
}

Test(stage, staged_writes_are_invisible_until_published)
{
	struct shm_kv kv;
	uint64_t seq;

	cr_assert_eq(shm_writer_set(&staged, "old", 3, "1", 1), SHM_OK);
	cr_assert_eq(shm_writer_set(&staged, "gone", 4, "1", 1), SHM_OK);
	seq = seq_of(&staged);
	cr_assert_eq(stage_op("new", "2"), SHM_OK);
	cr_assert_eq(stage_op("old", "2"), SHM_OK);
	cr_assert_eq(stage_op("gone", NULL), SHM_OK);
	cr_assert_eq(round_.ops[0].seq, seq + 1, "staged writes take the next seqs, in order");
	cr_assert_eq(round_.ops[2].seq, seq + 3);
	cr_assert_eq(get(0, "new", &kv), SHM_ENOTFOUND, "a staged insert is not visible");
	cr_assert_eq(get(0, "old", &kv), SHM_OK);
	cr_assert_eq(kv.val[0], '1', "a staged update is not visible");
	cr_assert_eq(get(0, "gone", &kv), SHM_OK, "a staged delete is not visible");
	cr_assert_eq(seq_of(&staged), seq, "the shard's seq is that of the last published write");
	cr_assert_eq(stage_publish(&round_, &staged), SHM_OK);
	cr_assert_eq(get(0, "new", &kv), SHM_OK);
	cr_assert_eq(get(0, "old", &kv), SHM_OK);
	cr_assert_eq(kv.val[0], '2');
	cr_assert_eq(get(0, "gone", &kv), SHM_ENOTFOUND);
	cr_assert_eq(seq_of(&staged), seq + 3);
}

Test(stage, writes_of_one_key_in_a_round_decide_in_order)
{
	struct shm_kv kv;

	cr_assert_eq(stage_op("k", NULL), SHM_ENOTFOUND, "no such key yet");
	cr_assert_eq(stage_op("k", "1"), SHM_OK);
	cr_assert_eq(stage_op("k", NULL), SHM_OK, "deletes the staged set");
	cr_assert_eq(stage_op("k", NULL), SHM_ENOTFOUND, "after a staged delete");
	cr_assert_eq(stage_op("k", "2"), SHM_OK);
	cr_assert_eq(stage_op("k", "3"), SHM_OK);
	cr_assert_eq(get(0, "k", &kv), SHM_ENOTFOUND);
	cr_assert_eq(stage_publish(&round_, &staged), SHM_OK);
	cr_assert_eq(get(0, "k", &kv), SHM_OK);
	cr_assert_eq(kv.vlen, 1);
	cr_assert_eq(kv.val[0], '3');
	cr_assert_eq(stage_op("k", NULL), SHM_OK, "a new round looks at the table again");
	cr_assert_eq(stage_publish(&round_, &staged), SHM_OK);
	cr_assert_eq(get(0, "k", &kv), SHM_ENOTFOUND);
}

/* Every key of both shards holds the same value. */
static void expect_same(int keys)
{
	for (int i = 0; i < keys; i++) {
		char k[32];
		struct shm_kv a, b;
		int ra, rb;

		snprintf(k, sizeof(k), "key:%d", i);
		ra = get(0, k, &a);
		rb = get(1, k, &b);
		cr_assert_eq(ra, rb, "%s: %d staged, %d direct", k, ra, rb);
		if (ra == SHM_OK) {
			cr_assert_eq(a.vlen, b.vlen, "%s", k);
			cr_assert_eq(memcmp(a.val, b.val, a.vlen), 0, "%s", k);
			cr_assert_eq(a.seq, b.seq, "%s: the same seq", k);
		}
	}
}

/* Random rounds of random sets and deletes over few keys (many repeats in
 * a round), from an empty table that grows and shrinks meanwhile: each
 * write's result, and after each round the whole table, are those of the
 * same writes one by one. */
Test(stage, rounds_match_one_by_one)
{
	enum { KEYS = 3000, ROUNDS = 400 };

	srand(7);
	for (int r = 0; r < ROUNDS; r++) {
		int n = rand() % (r % 10 == 0 ? 2000 : 100);
		int keys = r < ROUNDS / 2 ? KEYS : 50; /* later: few keys, many deletes */

		for (int i = 0; i < n; i++) {
			char k[32], v[64];
			bool del = rand() % 3 == 0;
			int kl = snprintf(k, sizeof(k), "key:%d", rand() % keys);
			int vl = snprintf(v, sizeof(v), "v%d.%d.%.*s", r, i, rand() % 40,
					  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
			int want = del ? shm_writer_del(&direct, k, (uint32_t)kl)
				       : shm_writer_set(&direct, k, (uint32_t)kl, v, (uint32_t)vl);

			cr_assert_eq(stage_op(k, del ? NULL : v), want, "round %d op %d (%s %s)", r, i,
				     del ? "del" : "set", k);
		}
		cr_assert_eq(stage_publish(&round_, &staged), SHM_OK);
		cr_assert(shm_table_has_room(table_of(&staged), 0), "round %d: above the load limit", r);
		cr_assert_eq(staged.staged, 0);
		cr_assert_eq(seq_of(&staged), seq_of(&direct));
		if (r % 20 == 0 || r == ROUNDS - 1)
			expect_same(KEYS);
	}
}

/* One round staged until the shard's memory runs out, with the table
 * grown by rebuilds meanwhile (each queues the old table on the retire
 * list): the write that failed changed nothing, and publishing the round
 * still cannot fail — every write staged before it is then visible. */
Test(stage_memory, a_round_staged_until_memory_runs_out_publishes_whole, .timeout = 60)
{
	char k[32], v[600];
	struct shm_kv kv;
	int n = 0, rc;

	cr_assert_eq(shm_seg_create(&seg, 16 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&staged, &seg, 0, 0, NULL, NULL), SHM_OK);
	cr_assert_eq(stage_init(&round_, &seg), 0);
	memset(v, 'v', sizeof(v));
	v[sizeof(v) - 1] = '\0';
	for (;; n++) {
		snprintf(k, sizeof(k), "key:%d", n);
		rc = stage_op(k, v);
		if (rc != SHM_OK)
			break;
	}
	cr_assert_eq(rc, SHM_ENOMEM);
	cr_assert_gt(n, 1000, "the round grew the table several times");
	cr_assert_eq(get(0, "key:0", &kv), SHM_ENOTFOUND, "nothing visible before the publication");
	cr_assert_eq(stage_publish(&round_, &staged), SHM_OK);
	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "key:%d", i);
		cr_assert_eq(get(0, k, &kv), SHM_OK, "%s", k);
	}
	snprintf(k, sizeof(k), "key:%d", n);
	cr_assert_eq(get(0, k, &kv), SHM_ENOTFOUND, "the failed write left nothing");
	cr_assert(shm_table_has_room(table_of(&staged), 0));
	stage_destroy(&round_);
	shm_writer_close(&staged);
	shm_seg_close(&seg);
}
