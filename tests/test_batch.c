/*
 * test_batch.c — atomic batches in shared memory (shm/batch.h): intents
 * staged and published by a shard's writer, what readers see of them
 * under each state of the status word and each start number, their
 * resolution, single writes over them, a restarted writer adopting them,
 * and the word's state machine.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "shm/batch.h"
#include "shm/shard.h"

#define MiB (1ULL << 20)

static struct shm_seg seg;
static struct shm_writer w;

static void setup(void)
{
	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 1), SHM_OK);
	atomic_store(&shm_shard_at(&seg, 0)->sorted, 1);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
	cr_assert_eq(shm_writer_index_build(&w), SHM_OK);
}

static void teardown(void)
{
	shm_writer_close(&w);
	shm_seg_close(&seg);
}

TestSuite(batch, .init = setup, .fini = teardown, .timeout = 60);

static const uint64_t REF = 1ull << 16 | 3 << 6 | 5; /* tag 1, slot 3, word 5 */

static void put(const char *k, const char *v)
{
	cr_assert_eq(shm_writer_set(&w, k, (uint32_t)strlen(k), v, (uint32_t)strlen(v)), SHM_OK);
}

static int intent(const char *k, const char *v, bool del, uint64_t ref)
{
	uint32_t klen = (uint32_t)strlen(k);
	struct shm_staged s;
	int rc = shm_writer_stage_intent(&w, k, klen, shm_hash(k, klen), v, v ? (uint32_t)strlen(v) : 0,
					 del, ref, NULL, &s);

	if (rc == SHM_OK)
		cr_assert_eq(shm_writer_publish(&w, &s), SHM_OK);
	return rc;
}

/* What a reader with start number s sees of k: its value, or NULL. */
static const char *seen(const char *k, uint64_t s)
{
	static char buf[64];
	uint32_t klen = (uint32_t)strlen(k);
	struct shm_table_view v;
	struct shm_kv kv;
	int rc;

	cr_assert_eq(shm_shard_view(&seg, w.sh, &v), SHM_OK);
	rc = shm_shard_find(&seg, w.sh, &v, k, klen, shm_hash(k, klen), s, &kv);
	if (rc == SHM_ENOTFOUND)
		return NULL;
	cr_assert_eq(rc, SHM_OK, "find %s: %s", k, shm_strerror(rc));
	cr_assert_lt(kv.vlen, sizeof(buf));
	memcpy(buf, kv.val, kv.vlen);
	buf[kv.vlen] = 0;
	return buf;
}

static void expect(const char *k, uint64_t s, const char *want)
{
	const char *got = seen(k, s);

	if (want == NULL)
		cr_assert_null(got, "%s: saw \"%s\", wanted none", k, got);
	else
		cr_assert(got != NULL && strcmp(got, want) == 0, "%s: saw %s, wanted \"%s\"", k,
			  got ? got : "none", want);
}

static uint64_t commit(uint64_t ref)
{
	struct shm_batch_word *bw = shm_batch_word(&seg, ref);

	cr_assert_not_null(bw);
	cr_assert(shm_batch_begin_commit(bw, ref, 0));
	return shm_batch_commit(&seg, bw, ref, 0);
}

/* Resolve k's intent (it must still be in the table). */
static void settle(const char *k, bool committed)
{
	uint32_t klen = (uint32_t)strlen(k);
	struct shm_kv kv;
	struct shm_staged s;

	cr_assert_eq(shm_writer_get(&w, k, klen, &kv), SHM_OK);
	cr_assert_not_null(kv.intent, "%s holds no intent", k);
	cr_assert_eq(shm_writer_stage_settle(&w, kv.off, committed, &s), SHM_OK);
	cr_assert_eq(shm_writer_publish(&w, &s), SHM_OK);
	cr_assert_eq(shm_writer_get(&w, k, klen, &kv) == SHM_OK && kv.intent != NULL, false);
}

Test(batch, an_intent_is_invisible_until_its_batch_commits)
{
	put("a", "old");
	cr_assert_eq(intent("a", "new", false, REF), SHM_OK);
	cr_assert_eq(intent("b", "born", false, REF), SHM_OK);
	cr_assert_eq(intent("a", "x", false, REF + (1ull << 16)), SHM_EBUSY, "a key holds one intent");
	expect("a", SHM_BATCH_ANY, "old");
	expect("b", SHM_BATCH_ANY, NULL);
	commit(REF);
	expect("a", SHM_BATCH_ANY, "new");
	expect("b", SHM_BATCH_ANY, "born");
}

Test(batch, a_start_number_before_the_commit_keeps_it_hidden)
{
	uint64_t before, c;

	put("a", "old");
	cr_assert_eq(intent("a", "new", false, REF), SHM_OK);
	before = shm_batch_start(&seg);
	c = commit(REF);
	cr_assert_eq(c, before + 1);
	expect("a", before, "old");
	expect("a", shm_batch_start(&seg), "new");
}

Test(batch, an_aborted_batch_gives_back_what_it_replaced)
{
	struct shm_kv kv;
	uint64_t old_rec;

	put("a", "old");
	cr_assert_eq(shm_writer_get(&w, "a", 1, &kv), SHM_OK);
	old_rec = kv.off;
	cr_assert_eq(intent("a", "new", false, REF), SHM_OK);
	cr_assert_eq(intent("b", "born", false, REF), SHM_OK);
	cr_assert_eq(intent("a", NULL, true, REF), SHM_EBUSY);
	cr_assert(shm_batch_abort(shm_batch_word(&seg, REF), REF, 2));
	cr_assert_not(shm_batch_begin_commit(shm_batch_word(&seg, REF), REF, 0), "aborted stays aborted");
	expect("a", shm_batch_start(&seg), "old");
	settle("a", false);
	settle("b", false);
	cr_assert_eq(shm_writer_get(&w, "a", 1, &kv), SHM_OK);
	cr_assert_eq(kv.off, old_rec, "the very record comes back");
	cr_assert_eq(shm_writer_get(&w, "b", 1, &kv), SHM_ENOTFOUND);
	cr_assert_eq(atomic_load(&shm_shard_at(&seg, 0)->seq) > 0, true);
}

Test(batch, a_committed_intent_settles_into_a_plain_copy)
{
	struct shm_kv kv;
	uint64_t seq;

	put("a", "old");
	cr_assert_eq(intent("a", "new", false, REF), SHM_OK);
	cr_assert_eq(shm_writer_get(&w, "a", 1, &kv), SHM_OK);
	seq = kv.seq;
	commit(REF);
	settle("a", true);
	cr_assert_eq(shm_writer_get(&w, "a", 1, &kv), SHM_OK);
	cr_assert_null(kv.intent);
	cr_assert_eq(kv.seq, seq, "the copy keeps the intent's seq");
	cr_assert_eq(kv.vlen, 3);
	cr_assert_eq(memcmp(kv.val, "new", 3), 0);
	shm_writer_drain(&w);
	expect("a", 0, "new");
}

Test(batch, a_delete_intent_hides_the_key_once_committed)
{
	put("a", "old");
	cr_assert_eq(intent("a", NULL, true, REF), SHM_OK);
	cr_assert_eq(intent("gone", NULL, true, REF), SHM_ENOTFOUND, "deleting an absent key is nothing");
	expect("a", SHM_BATCH_ANY, "old");
	commit(REF);
	expect("a", SHM_BATCH_ANY, NULL);
	expect("a", 0, "old");
	settle("a", true);
	expect("a", 0, NULL);
}

Test(batch, a_single_write_replaces_an_intent_and_its_prev)
{
	struct shm_slab_stats before, after;
	struct shm_kv kv;

	put("a", "old");
	shm_writer_drain(&w);
	shm_slab_stats(&w.sh->slab, &before);
	cr_assert_eq(intent("a", "new", false, REF), SHM_OK);
	put("a", "single");
	expect("a", SHM_BATCH_ANY, "single");
	commit(REF);
	expect("a", SHM_BATCH_ANY, "single");
	cr_assert_eq(shm_writer_get(&w, "a", 1, &kv), SHM_OK);
	cr_assert_null(kv.intent);
	cr_assert_eq(shm_writer_stage_settle(&w, kv.off, true, &(struct shm_staged){ 0 }), SHM_ECORRUPT);
	shm_writer_drain(&w);
	shm_slab_stats(&w.sh->slab, &after);
	cr_assert_eq(after.requested_bytes, before.requested_bytes + 3, "intent and old record freed (%lu -> %lu)",
		     (unsigned long)before.requested_bytes, (unsigned long)after.requested_bytes);
}

Test(batch, a_restarted_writer_keeps_intents_and_what_they_replaced)
{
	put("a", "old");
	cr_assert_eq(intent("a", "new", false, REF), SHM_OK);
	cr_assert_eq(intent("b", "born", false, REF), SHM_OK);
	shm_writer_close(&w);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
	if (w.index_off == 0 || w.index_stale)
		cr_assert_eq(shm_writer_index_build(&w), SHM_OK);
	/* Fill the memory the rebuilt allocator believes free with records
	 * of prev's size: a prev it lost would be overwritten. */
	for (int i = 0; i < 1000; i++) {
		char k[8];

		snprintf(k, sizeof(k), "f%03d", i);
		put(k, "");
	}
	expect("a", SHM_BATCH_ANY, "old");
	expect("b", SHM_BATCH_ANY, NULL);
	settle("a", false);
	expect("a", SHM_BATCH_ANY, "old");
}

Test(batch, the_word_decides_once)
{
	struct shm_batch_word *bw = shm_batch_word(&seg, REF);
	uint64_t next = REF + (1ull << 16), c = 0;
	uint32_t by = 99;

	cr_assert_null(shm_batch_word(&seg, 3 << 6), "tag 0 names no batch");
	cr_assert_null(shm_batch_word(&seg, 1ull << 16 | (uint64_t)SHM_BATCH_SLOTS << 6));
	cr_assert(shm_batch_reusable(bw, REF), "a fresh word takes tag 1");
	cr_assert_not(shm_batch_begin_commit(bw, next, 0), "tag 2 before tag 1");
	cr_assert(shm_batch_hold(bw, REF, 0));
	cr_assert(shm_batch_hold(bw, REF, 65));
	cr_assert_not(shm_batch_hold(bw, next, 1), "tag 1 is held");
	cr_assert(shm_batch_begin_commit(bw, REF, 7));
	cr_assert_eq(shm_batch_status(bw, REF, &c, &by), SHM_BATCH_COMMITTING);
	cr_assert_eq(by, 7);
	cr_assert_not(shm_batch_abort(bw, REF, 1), "a participant cannot abort a commit under way");
	cr_assert_eq(shm_batch_visible(&seg, REF, SHM_BATCH_ANY), 0);
	shm_batch_commit(&seg, bw, REF, 7);
	cr_assert_eq(shm_batch_status(bw, REF, &c, NULL), SHM_BATCH_COMMITTED);
	cr_assert_eq(c, 1);
	cr_assert_eq(shm_batch_visible(&seg, REF, 1), 1);
	cr_assert_eq(shm_batch_visible(&seg, REF, 0), 0);
	cr_assert_not(shm_batch_reusable(bw, next), "still held");
	shm_batch_release(bw, REF, 0);
	shm_batch_release(bw, REF, 0); /* again, as a restarted shard would */
	cr_assert_not(shm_batch_reusable(bw, next));
	shm_batch_release(bw, REF, 65);
	cr_assert(shm_batch_reusable(bw, next));
	cr_assert_eq(shm_batch_status(bw, next, &c, NULL), SHM_BATCH_UNDECIDED);
	/* A primary restarted with COMMITTING and no DECISION aborts. */
	cr_assert(shm_batch_hold(bw, next, 3));
	shm_batch_release(bw, REF, 3); /* an older batch's release touches nothing */
	cr_assert_not(shm_batch_reusable(bw, next + (1ull << 16)));
	cr_assert(shm_batch_begin_commit(bw, next, 4));
	cr_assert_not(shm_batch_abort(bw, next, 5));
	cr_assert(shm_batch_abort(bw, next, 4));
	cr_assert_eq(shm_batch_status(bw, next, &c, NULL), SHM_BATCH_ABORTED);
}
