/*
 * test_shard_index.c — a shard writer keeps its sorted index in step with
 * its table (shard_index.h): every write, a round of staged writes, a
 * restart after a writer died at a bad moment, an index built beside.
 *
 * The check after each step is the whole invariant: the index's level 0
 * holds exactly the table's keys, in order, each node pointing at the
 * record the table holds and that record naming the node.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shard.h"
#include "shm/shard_index.h"
#include "shm/skiplist.h"

#define MiB (1ULL << 20)

static struct shm_seg seg;
static struct shm_writer w;

static void setup(void)
{
	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 1), SHM_OK);
	atomic_store(&shm_shard_at(&seg, 0)->sorted, 1);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
	cr_assert_eq(w.index_off, 0, "no index until it is built");
	cr_assert_eq(shm_writer_index_build(&w), SHM_OK);
	cr_assert_neq(atomic_load(&w.sh->index_off), 0);
}

static void teardown(void)
{
	shm_writer_close(&w);
	shm_seg_close(&seg);
}

TestSuite(shard_index, .init = setup, .fini = teardown, .timeout = 60);

struct walk {
	uint64_t n;
	uint8_t last[64];
	uint32_t last_len;
};

static int check_node(void *arg, uint64_t node, uint64_t rec)
{
	struct walk *wk = arg;
	const struct shm_record *r = (const struct shm_record *)(seg.base + rec);
	struct shm_kv kv;

	cr_assert_eq(shm_writer_get(&w, r->data, r->klen, &kv), SHM_OK, "indexed key %.*s not in the table",
		     (int)r->klen, r->data);
	cr_assert_eq((const uint8_t *)kv.key, r->data, "node of %.*s points at another record than the table's",
		     (int)r->klen, r->data);
	cr_assert_eq((uint64_t)r->node << 4, node, "record of %.*s does not name its node", (int)r->klen,
		     r->data);
	wk->n++;
	return 0;
}

/* The invariant (above); returns the number of keys. */
static uint64_t check(void)
{
	struct walk wk = { 0 };
	uint64_t off = atomic_load(&w.sh->index_off);
	uint64_t live = atomic_load(&((struct shm_table *)(seg.base + w.table_off))->live);

	cr_assert_neq(off, 0);
	cr_assert_eq(shm_skip_each(&seg, off, check_node, &wk), SHM_OK, "the index fails a reader's checks");
	cr_assert_eq(wk.n, live, "index %lu keys, table %lu", (unsigned long)wk.n, (unsigned long)live);
	return wk.n;
}

static int key_of(char *k, int i)
{
	return sprintf(k, "key:%08d", i);
}

Test(shard_index, every_write_keeps_it_in_step)
{
	char k[32], v[32];
	uint64_t x = 1;

	for (int round = 0; round < 20; round++) {
		for (int op = 0; op < 500; op++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			int i = (int)(x % 2000), kl = key_of(k, i), vl = sprintf(v, "v%d.%d", i, round);

			if (x % 5 == 0)
				cr_assert(shm_writer_del(&w, k, (uint32_t)kl) != SHM_ECORRUPT);
			else
				cr_assert_eq(shm_writer_set(&w, k, (uint32_t)kl, v, (uint32_t)vl), SHM_OK);
		}
		shm_writer_reclaim(&w);
		check();
	}
}

/* Several writes of one key staged in one round (prev), published in
 * order: insert, update, delete, insert again. */
Test(shard_index, a_round_of_staged_writes_of_one_key)
{
	struct shm_staged s[4];
	const char *k = "same";
	uint64_t h = shm_hash(k, 4);

	cr_assert_eq(shm_writer_stage_set(&w, k, 4, h, "a", 1, NULL, &s[0]), SHM_OK);
	cr_assert_eq(shm_writer_stage_set(&w, k, 4, h, "b", 1, &s[0], &s[1]), SHM_OK);
	cr_assert_eq(shm_writer_stage_del(&w, k, 4, h, &s[1], &s[2]), SHM_OK);
	cr_assert_eq(shm_writer_stage_set(&w, k, 4, h, "c", 1, &s[2], &s[3]), SHM_OK);
	cr_assert_eq(check(), 0, "nothing visible before publication");
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(shm_writer_publish(&w, &s[i]), SHM_OK);
		cr_assert_eq(check(), i == 2 ? 0 : 1);
	}
}

/* Deleting everything gives the nodes back (once readers cannot see
 * them): the shard's live bytes return to what the empty store had. */
Test(shard_index, deletes_give_nodes_back)
{
	struct shm_slab_stats before, after;
	char k[32];

	shm_writer_reclaim(&w);
	shm_slab_stats(&w.sh->slab, &before);
	for (int i = 0; i < 3000; i++)
		cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, i), "v", 1), SHM_OK);
	check();
	for (int i = 0; i < 3000; i++)
		cr_assert_eq(shm_writer_del(&w, k, (uint32_t)key_of(k, i)), SHM_OK);
	cr_assert_eq(shm_writer_rebuild(&w, 4), SHM_OK); /* the grown table back to its first size */
	shm_writer_drain(&w);
	shm_slab_stats(&w.sh->slab, &after);
	cr_assert_eq(check(), 0);
	cr_assert_eq(after.live_bytes, before.live_bytes, "live %lu bytes, %lu before",
		     (unsigned long)after.live_bytes, (unsigned long)before.live_bytes);
}

static void fill(int n)
{
	char k[32], v[32];

	for (int i = 0; i < n; i++) {
		int kl = key_of(k, i), vl = sprintf(v, "v%d", i);

		cr_assert_eq(shm_writer_set(&w, k, (uint32_t)kl, v, (uint32_t)vl), SHM_OK);
	}
}

/* The writer dies (its private memory goes with it, what it retired is
 * never freed by it); a new one adopts. */
static void restart(void)
{
	shm_retire_destroy(&w.retired);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
}

static uint64_t node_of_key(const char *k)
{
	return shm_skip_find(&seg, w.index_off, k, (uint32_t)strlen(k));
}

/* A dead writer's index is adopted, not rebuilt: the same offset, the
 * same nodes, repaired where the writer died between its two stores. */
Test(shard_index, restart_adopts_and_repairs)
{
	char k[32];
	uint64_t off, rec, n;

	fill(500);
	off = w.index_off;
	/* Died inside an update after the node got the new record (index
	 * first) and before the table did: the node points at a record the
	 * table does not hold, which the restart frees. */
	n = node_of_key("key:00000007");
	cr_assert_eq(shm_record_new(&seg, &w.sh->slab, "key:00000007", 12, "new", 3, 99999, &rec), SHM_OK);
	shm_skip_set_rec(&seg, n, rec);
	/* Died inside a delete after the table slot and before the unlink. */
	struct shm_table *t = (struct shm_table *)(seg.base + w.table_off);
	shm_slot_pos pos;
	key_of(k, 9);
	cr_assert(shm_table_locate(&seg, t, k, 12, shm_hash(k, 12), &pos));
	shm_table_delete_at(&seg, t, pos);
	restart();
	cr_assert_eq(w.index_off, off, "the index was adopted");
	cr_assert_not(w.index_stale);
	cr_assert_eq(check(), 499);
	cr_assert_eq(node_of_key("key:00000009"), 0, "a key the table lost is unlinked");
	struct shm_kv kv;
	cr_assert_eq(shm_writer_get(&w, "key:00000007", 12, &kv), SHM_OK);
	cr_assert_eq(kv.vlen, 2, "the table's value stays: the update was never published");
	/* And the adopted index takes writes. */
	fill(600);
	check();
}

/* An index that lacks some of the table's keys is kept for readers and a
 * complete one is built beside it; one that fails validation is
 * unpublished (readers then see none) and built anew. */
Test(shard_index, restart_with_an_incomplete_or_damaged_index)
{
	uint64_t off;

	fill(300);
	off = w.index_off;
	cr_assert_neq(shm_skip_unlink(&seg, off, "key:00000042", 12), 0); /* died mid-insert, say */
	restart();
	cr_assert_eq(w.index_off, off);
	cr_assert(w.index_stale, "a key is missing from the index");
	cr_assert_eq(shm_writer_index_build(&w), SHM_OK);
	cr_assert_neq(w.index_off, off, "built beside the old one");
	cr_assert_eq(check(), 300);

	off = w.index_off;
	((struct shm_skip *)(seg.base + off))->magic = 0;
	restart();
	cr_assert_eq(w.index_off, 0);
	cr_assert_eq(atomic_load(&w.sh->index_off), 0, "a damaged index is unpublished");
	cr_assert_eq(shm_writer_index_build(&w), SHM_OK);
	cr_assert_eq(check(), 300);
}

/* Without `sorted` the writer keeps no index and a set takes no node. */
Test(shard_index, off_keeps_none)
{
	struct shm_slab_stats a, b;

	teardown();
	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
	shm_slab_stats(&w.sh->slab, &a);
	cr_assert_eq(shm_writer_set(&w, "k", 1, "v", 1), SHM_OK);
	shm_slab_stats(&w.sh->slab, &b);
	cr_assert_eq(b.allocs - a.allocs, 1, "one block: the record");
	cr_assert_eq(atomic_load(&w.sh->index_off), 0);
}

/* Rounds published as shardd does (stage.c): each write's group and index
 * search begun 8 ahead, so the searches of inserts run while the writes
 * before them link and unlink nodes, deletes among them (a search that
 * kept a node unlinked meanwhile starts again). */
Test(shard_index, rounds_with_searches_ahead)
{
	enum { KEYS = 300, OPS = 400, AHEAD = 8 };
	static struct shm_staged s[OPS];
	int last[KEYS];
	bool present[KEYS] = { false };
	char k[32], v[32];
	uint64_t x = 7;

	for (int round = 0; round < 60; round++) {
		int n = 0;

		for (int i = 0; i < KEYS; i++)
			last[i] = -1;
		for (int op = 0; op < OPS; op++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			int i = (int)(x % KEYS), kl = key_of(k, i), vl = sprintf(v, "%d.%d", round, op);
			const struct shm_staged *prev = last[i] >= 0 ? &s[last[i]] : NULL;
			bool here = prev != NULL ? !prev->del : present[i];
			int rc;

			if (here && x % 3 == 0)
				rc = shm_writer_stage_del(&w, k, (uint32_t)kl, shm_hash(k, (size_t)kl), prev, &s[n]);
			else
				rc = shm_writer_stage_set(&w, k, (uint32_t)kl, shm_hash(k, (size_t)kl), v, (uint32_t)vl,
							  prev, &s[n]);
			cr_assert_eq(rc, SHM_OK);
			last[i] = n++;
		}
		for (int i = 0; i < n && i < AHEAD; i++)
			shm_writer_prefetch(&w, &s[i]);
		for (int i = 0; i < n; i++) {
			if (i + AHEAD < n)
				shm_writer_prefetch(&w, &s[i + AHEAD]);
			cr_assert_eq(shm_writer_publish(&w, &s[i]), SHM_OK);
		}
		cr_assert_eq(w.paths_used, 0, "every search begun was used or dropped");
		for (int i = 0; i < KEYS; i++)
			if (last[i] >= 0)
				present[i] = !s[last[i]].del;
		shm_writer_reclaim(&w);
		cr_assert_eq(check(), (uint64_t)({ int c = 0; for (int i = 0; i < KEYS; i++) c += present[i]; c; }));
	}
}

/* A restart adopts an index that lacks a key while the table is too full
 * to stage a node for a set (the set may not insert): the set of that key
 * is published without one, the index stays marked stale, and the build
 * that recovery runs next makes it whole (a reviewer's case: it aborted). */
Test(shard_index, a_set_of_a_key_a_stale_index_lacks)
{
	struct shm_table *t;
	char k[32];
	int n = 0;

	/* Fill until one more insert would not fit. */
	for (t = (struct shm_table *)(seg.base + w.table_off); shm_table_has_room(t, 1);
	     t = (struct shm_table *)(seg.base + w.table_off))
		cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, n++), "v", 1), SHM_OK);
	cr_assert_neq(shm_skip_unlink(&seg, w.index_off, "key:00000042", 12), 0);
	restart();
	cr_assert(w.index_stale);
	cr_assert_eq(shm_writer_set(&w, "key:00000042", 12, "new", 3), SHM_OK);
	cr_assert(w.index_stale, "still lacking the key: the build must run");
	cr_assert_eq(shm_writer_index_build(&w), SHM_OK);
	cr_assert_eq(check(), (uint64_t)n);
}
