/*
 * test_table.c — the Swiss table, the Bloom filter and a shard's set/get/del
 * in one process: group matching (SSE2 and scalar agree), collisions and
 * probing, tombstones, growth, Bloom switching, damaged tables, a reader's
 * memo of its validated view, exhaustion.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm/shard.h"

#define MiB (1ULL << 20)

static struct shm_seg seg;
static struct shm_writer w;

static void setup(void)
{
	cr_assert_eq(shm_seg_create(&seg, 256 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
}

static void teardown(void)
{
	shm_writer_close(&w);
	shm_seg_close(&seg);
}

static int key_of(char *buf, int i) { return sprintf(buf, "key:%08d", i); }

/* Value for key i: "i=<i>;" followed by `len` pattern bytes. */
static uint32_t val_of(char *buf, int i, uint32_t len)
{
	int n = sprintf(buf, "i=%d;", i);
	for (uint32_t j = 0; j < len; j++)
		buf[n + j] = (char)('a' + (i + j) % 26);
	return (uint32_t)n + len;
}

static int get(const char *key, struct shm_kv *r)
{
	return shm_shard_get(&seg, shm_shard_at(&seg, 0), key, (uint32_t)strlen(key),
			     shm_hash(key, strlen(key)), r);
}

static struct shm_table *cur_table(void)
{
	return (struct shm_table *)(seg.base + atomic_load(&w.sh->table_off));
}

Test(table, sse2_and_scalar_match_agree)
{
	struct shm_group g __attribute__((aligned(64)));
	const uint8_t interesting[] = {0, 1, 0x7f, SHM_CTRL_EMPTY, SHM_CTRL_DELETED};

	srand(1);
	for (int round = 0; round < 20000; round++) {
		for (int i = 0; i < SHM_GROUP_SLOTS; i++)
			atomic_store(&g.ctrl[i], round % 2 ? interesting[rand() % 5] : (uint8_t)rand());
		for (int b = 0; b < 256; b++)
			cr_assert_eq(shm_group_match_sse2(&g, (uint8_t)b), shm_group_match_scalar(&g, (uint8_t)b));
	}
	memset((void *)g.ctrl, SHM_CTRL_EMPTY, 16);
	cr_assert_eq(shm_group_match_scalar(&g, SHM_CTRL_EMPTY), 0xffff);
	atomic_store(&g.ctrl[3], 5);
	cr_assert_eq(shm_group_match_sse2(&g, 5), 1u << 3);
}

Test(shard, set_get_update_delete, .init = setup, .fini = teardown)
{
	struct shm_kv r;

	cr_assert_eq(get("a", &r), SHM_ENOTFOUND);
	cr_assert_eq(shm_writer_set(&w, "a", 1, "one", 3), SHM_OK);
	cr_assert_eq(get("a", &r), SHM_OK);
	cr_assert_eq(r.vlen, 3);
	cr_assert_eq(memcmp(r.val, "one", 3), 0);
	cr_assert_eq(r.seq, 1);

	cr_assert_eq(shm_writer_set(&w, "a", 1, "uno!", 4), SHM_OK);
	cr_assert_eq(get("a", &r), SHM_OK);
	cr_assert_eq(r.vlen, 4);
	cr_assert_eq(memcmp(r.val, "uno!", 4), 0);
	cr_assert_eq(r.seq, 2);
	cr_assert_eq(atomic_load(&cur_table()->live), 1);

	/* An empty value is a value, not "missing". */
	cr_assert_eq(shm_writer_set(&w, "e", 1, NULL, 0), SHM_OK);
	cr_assert_eq(get("e", &r), SHM_OK);
	cr_assert_eq(r.vlen, 0);

	cr_assert_eq(shm_writer_del(&w, "a", 1), SHM_OK);
	cr_assert_eq(get("a", &r), SHM_ENOTFOUND);
	cr_assert_eq(shm_writer_del(&w, "a", 1), SHM_ENOTFOUND);
	cr_assert_eq(atomic_load(&cur_table()->dead), 1);
	cr_assert_eq(shm_writer_set(&w, "a", 1, "again", 5), SHM_OK);
	cr_assert_eq(get("a", &r), SHM_OK);
	cr_assert_eq(memcmp(r.val, "again", 5), 0);
}

Test(shard, key_and_value_limits, .init = setup, .fini = teardown)
{
	static char big[SHM_VALUE_MAX + 1];
	static char key[SHM_KEY_MAX + 1];
	struct shm_kv r;

	memset(key, 'k', sizeof(key));
	cr_assert_eq(shm_writer_set(&w, key, 0, "v", 1), SHM_EINVAL);
	cr_assert_eq(shm_writer_set(&w, key, SHM_KEY_MAX + 1, "v", 1), SHM_EINVAL);
	cr_assert_eq(shm_writer_set(&w, "k", 1, big, SHM_VALUE_MAX + 1), SHM_EINVAL);
	cr_assert_eq(shm_writer_del(&w, key, 0), SHM_EINVAL);
	cr_assert_eq(shm_shard_get(&seg, w.sh, key, 0, 0, &r), SHM_EINVAL);
	cr_assert_eq(shm_shard_get(&seg, w.sh, key, SHM_KEY_MAX + 1, 0, &r), SHM_EINVAL);

	big[SHM_VALUE_MAX - 1] = 'z';
	cr_assert_eq(shm_writer_set(&w, key, SHM_KEY_MAX, big, SHM_VALUE_MAX), SHM_OK);
	cr_assert_eq(shm_shard_get(&seg, w.sh, key, SHM_KEY_MAX, shm_hash(key, SHM_KEY_MAX), &r), SHM_OK);
	cr_assert_eq(r.klen, SHM_KEY_MAX);
	cr_assert_eq(r.vlen, SHM_VALUE_MAX);
	cr_assert_eq(r.val[SHM_VALUE_MAX - 1], 'z');
	cr_assert_eq(atomic_load(&cur_table()->live), 1);
}

Test(shard, growth_delete_and_rebuild, .init = setup, .fini = teardown, .timeout = 60)
{
	enum { N = 200000 };
	char k[32], v[128];
	struct shm_kv r;

	uint64_t first_groups = cur_table()->ngroups;
	for (int i = 0; i < N; i++) {
		uint32_t vl = val_of(v, i, (uint32_t)(i % 90));
		cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, i), v, vl), SHM_OK);
	}
	cr_assert_gt(cur_table()->ngroups, first_groups * 1000);
	cr_assert_eq(atomic_load(&cur_table()->live), N);
	for (int i = 0; i < N; i++) {
		key_of(k, i);
		cr_assert_eq(get(k, &r), SHM_OK, "key %d lost after growth", i);
		uint32_t vl = val_of(v, i, (uint32_t)(i % 90));
		cr_assert_eq(r.vlen, vl);
		cr_assert_eq(memcmp(r.val, v, vl), 0);
	}
	for (int i = 0; i < N; i += 2)
		cr_assert_eq(shm_writer_del(&w, k, (uint32_t)key_of(k, i)), SHM_OK);
	for (int i = 0; i < N; i++) {
		key_of(k, i);
		cr_assert_eq(get(k, &r), i % 2 ? SHM_OK : SHM_ENOTFOUND);
	}
	/* Rebuilding drops the tombstones and may shrink the table. */
	uint64_t groups = cur_table()->ngroups;
	cr_assert_eq(shm_writer_rebuild(&w, groups / 2), SHM_OK);
	cr_assert_eq(atomic_load(&cur_table()->dead), 0);
	cr_assert_eq(atomic_load(&cur_table()->live), N / 2);
	cr_assert_eq(shm_writer_rebuild(&w, 1), SHM_ENOMEM, "too small for the live keys");
	cr_assert_eq(shm_writer_rebuild(&w, 0), SHM_EINVAL);
	cr_assert_eq(shm_writer_rebuild(&w, SHM_TABLE_MAX_GROUPS + 1), SHM_EINVAL);
	for (int i = 0; i < N; i++) {
		key_of(k, i);
		cr_assert_eq(get(k, &r), i % 2 ? SHM_OK : SHM_ENOTFOUND);
	}
	/* With no reader registered, everything retired is reclaimed. */
	shm_writer_reclaim(&w);
	cr_assert_eq(w.retired.n, 0);
}

/* Insert a record for `key` under a chosen hash, as a writer would. */
static void insert_hashed(struct shm_table *t, const char *key, uint64_t h)
{
	uint64_t rec;
	shm_slot_pos pos;

	cr_assert_eq(shm_record_new(&seg, &w.sh->slab, key, (uint32_t)strlen(key), key,
				    (uint32_t)strlen(key), 0, &rec), SHM_OK);
	cr_assert_not(shm_table_locate(&seg, t, key, (uint32_t)strlen(key), h, &pos));
	cr_assert_neq(pos, UINT64_MAX);
	shm_table_insert_at(&seg, t, pos, h, rec, true);
}

static int find_hashed(const struct shm_table *t, const char *key, uint64_t h, bool bloom)
{
	struct shm_table_view v;
	struct shm_kv kv;

	cr_assert_eq(shm_table_view(&seg, shm_off(&seg, t), &v), SHM_OK);
	return shm_table_find(&seg, &v, key, (uint32_t)strlen(key), h, bloom, &kv);
}

Test(table, full_hash_collisions_and_long_probes, .init = setup, .fini = teardown)
{
	struct shm_table *t = cur_table();
	char k[32];
	int n = (int)(t->ngroups * SHM_GROUP_SLOTS * 7 / 8) - 1;

	/* Every key has the same hash: one probe sequence, same tag, same slot
	 * hash; only the key comparison tells them apart. */
	for (int i = 0; i < n; i++) {
		key_of(k, i);
		insert_hashed(t, k, 0x1234);
	}
	for (int i = 0; i < n; i++) {
		key_of(k, i);
		cr_assert_eq(find_hashed(t, k, 0x1234, false), SHM_OK);
		cr_assert_eq(find_hashed(t, k, 0x1234, true), SHM_OK);
	}
	cr_assert_eq(find_hashed(t, "missing", 0x1234, false), SHM_ENOTFOUND);
	/* A different tag with the same slot hash probes the same groups. */
	cr_assert_eq(find_hashed(t, "key:00000001", 0x1235, false), SHM_ENOTFOUND);
	/* Tombstones are probed past, then reused. */
	shm_slot_pos pos;
	key_of(k, 3);
	cr_assert(shm_table_locate(&seg, t, k, (uint32_t)strlen(k), 0x1234, &pos));
	shm_table_delete_at(&seg, t, pos);
	cr_assert_eq(find_hashed(t, k, 0x1234, false), SHM_ENOTFOUND);
	key_of(k, n - 1);
	cr_assert_eq(find_hashed(t, k, 0x1234, false), SHM_OK, "probe passes the tombstone");
	cr_assert_not(shm_table_locate(&seg, t, "new", 3, 0x1234, &pos));
	cr_assert_eq(pos / SHM_GROUP_SLOTS, shm_group_home(0x1234 >> 7, t->ngroups));
}

Test(table, probe_is_bounded_without_empty_slots, .init = setup, .fini = teardown)
{
	struct shm_table *t = cur_table();
	struct shm_group *g = (struct shm_group *)(seg.base + t->groups_off);

	/* A table whose every slot is a tombstone (only a bug or damage can
	 * make one): lookups must still end. */
	for (uint64_t i = 0; i < t->ngroups; i++)
		memset((void *)g[i].ctrl, SHM_CTRL_DELETED, SHM_GROUP_SLOTS);
	cr_assert_eq(find_hashed(t, "x", 99, false), SHM_ENOTFOUND);
	shm_slot_pos pos;
	cr_assert_not(shm_table_locate(&seg, t, "x", 1, 99, &pos));
	cr_assert_neq(pos, UINT64_MAX, "a tombstone is usable");
}

Test(table, damaged_tables_are_detected, .init = setup, .fini = teardown)
{
	struct shm_kv r;
	struct shm_table *t;
	uint64_t good;

	cr_assert_eq(shm_writer_set(&w, "k", 1, "v", 1), SHM_OK);
	t = cur_table();
	good = atomic_load(&w.sh->table_off);
	struct shm_table_view v;
	cr_assert_eq(shm_table_view(&seg, good, &v), SHM_OK);
	cr_assert_eq(shm_table_view(&seg, 0, &v), SHM_ECORRUPT);
	cr_assert_eq(shm_table_view(&seg, good + 8, &v), SHM_ECORRUPT);
	cr_assert_eq(shm_table_view(&seg, seg.size - 16, &v), SHM_ECORRUPT);

	t->ngroups *= 2;
	cr_assert_eq(get("k", &r), SHM_ECORRUPT);
	t->ngroups /= 2;
	t->bloom_off += 64;
	cr_assert_eq(get("k", &r), SHM_ECORRUPT);
	t->bloom_off -= 64;
	atomic_store(&w.sh->table_off, seg.size - 64);
	cr_assert_eq(get("k", &r), SHM_ECORRUPT);
	atomic_store(&w.sh->table_off, good);
	cr_assert_eq(get("k", &r), SHM_OK);

	/* A slot whose record offset points past the end of the segment. */
	shm_slot_pos pos;
	uint64_t h = shm_hash("k", 1);
	cr_assert(shm_table_locate(&seg, t, "k", 1, h, &pos));
	struct shm_group *g = (struct shm_group *)(seg.base + t->groups_off);
	uint64_t saved = atomic_load(&g[pos / 16].slot[pos % 16]);
	atomic_store(&g[pos / 16].slot[pos % 16], (saved & ~0xffffffffULL) | 0xfffffff0ULL);
	cr_assert_eq(get("k", &r), SHM_ECORRUPT);
	atomic_store(&g[pos / 16].slot[pos % 16], saved);
	cr_assert_eq(get("k", &r), SHM_OK);
}

/* A reader's memo validates a table once per (offset, group count): it
 * trusts what it validated while both stay, and validates again when
 * either changes (growth moves the table; another table built at the same
 * offset has another group count). */
Test(table, view_memo_validates_once_per_offset_and_group_count, .init = setup, .fini = teardown)
{
	struct shm_table_memo m = { 0 };
	const struct shm_table_view *v;
	struct shm_table_view fresh;
	struct shm_table *t;
	uint64_t off, first;
	char k[32];

	cr_assert_eq(shm_writer_set(&w, "k", 1, "v", 1), SHM_OK);
	t = cur_table();
	off = atomic_load(&w.sh->table_off);
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_OK);
	cr_assert_eq(v, &m.v);
	cr_assert_eq(m.off, off);
	cr_assert_eq(v->ngroups, t->ngroups);

	/* The memo does not look again at what it validated... */
	t->bytes += 16;
	cr_assert_eq(shm_table_view(&seg, off, &fresh), SHM_ECORRUPT);
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_OK);
	/* ...until the group count at that offset is another one. */
	t->ngroups *= 2;
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_ECORRUPT);
	cr_assert_eq(m.off, 0, "a failed validation empties the memo");
	t->ngroups /= 2;
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_ECORRUPT, "validated afresh");
	t->bytes -= 16;
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_OK);
	/* ...or its Bloom block count is. */
	t->nblocks = shm_bloom_blocks(t->ngroups);
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_ECORRUPT, "a filter its size lacks");
	t->nblocks = 0;
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_OK);

	/* Growth: a new offset, a new view, the same as a fresh one. */
	first = off;
	for (int i = 0; atomic_load(&w.sh->table_off) == first; i++)
		cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, i), "v", 1), SHM_OK);
	off = atomic_load(&w.sh->table_off);
	cr_assert_eq(shm_table_view_memo(&seg, off, &m, &v), SHM_OK);
	cr_assert_eq(shm_table_view(&seg, off, &fresh), SHM_OK);
	cr_assert_eq(m.off, off);
	cr_assert_eq(v->groups, fresh.groups);
	cr_assert_eq(v->bloom, fresh.bloom);
	cr_assert_eq(v->ngroups, fresh.ngroups);
	cr_assert_eq(v->nblocks, fresh.nblocks);
}

Test(bloom, switchable_and_rebuilt, .init = setup, .fini = teardown, .timeout = 60)
{
	enum { N = 100000 };
	char k[32];
	struct shm_kv r;
	int maybe = 0;

	for (int i = 0; i < N; i++)
		cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, i), "v", 1), SHM_OK);
	struct shm_table *t = cur_table();
	struct shm_bloom_block *b;
	cr_assert_eq(t->nblocks, 0, "a table built with the filter off has no filter area");
	cr_assert_eq(t->bytes, shm_table_bytes(t->ngroups, false));
	for (int on = 0; on < 2; on++) {
		cr_assert_eq(shm_writer_set_bloom(&w, on), SHM_OK);
		for (int i = 0; i < N; i++) {
			key_of(k, i);
			cr_assert_eq(get(k, &r), SHM_OK, "no false negatives");
			key_of(k, N + i);
			cr_assert_eq(get(k, &r), SHM_ENOTFOUND);
		}
	}
	/* Turning it on gave the table (rebuilt at its size) a filter. */
	cr_assert_neq(cur_table(), t);
	cr_assert_eq(cur_table()->ngroups, t->ngroups);
	t = cur_table();
	cr_assert_eq(t->nblocks, shm_bloom_blocks(t->ngroups));
	b = (struct shm_bloom_block *)(seg.base + t->bloom_off);
	for (int i = 0; i < N; i++) {
		key_of(k, N + i);
		maybe += shm_bloom_maybe(b, t->nblocks, shm_hash_summary(shm_hash(k, strlen(k))));
	}
	cr_assert_lt(maybe, N / 20, "false-positive rate %.2f%% too high", 100.0 * maybe / N);

	/* Kept while on (inserts add to it), filled again when turned back on
	 * after inserts that skipped it. */
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(shm_writer_set_bloom(&w, round == 1), SHM_OK); /* inserted with it off, then on */
		for (int i = 2 * N + round * 1000; i < 2 * N + round * 1000 + 1000; i++)
			cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, i), "v", 1), SHM_OK);
		cr_assert_eq(shm_writer_set_bloom(&w, true), SHM_OK);
		for (int i = 2 * N; i < 2 * N + round * 1000 + 1000; i++) {
			key_of(k, i);
			cr_assert_eq(get(k, &r), SHM_OK, "key %d not in the filter", i);
		}
	}
	t = cur_table();
	b = (struct shm_bloom_block *)(seg.base + t->bloom_off);

	/* Deleted keys leave their bits until the rebuild. */
	for (int i = 0; i < N; i++)
		cr_assert_eq(shm_writer_del(&w, k, (uint32_t)key_of(k, i)), SHM_OK);
	key_of(k, 5);
	cr_assert(shm_bloom_maybe(b, t->nblocks, shm_hash_summary(shm_hash(k, strlen(k)))));
	cr_assert_eq(shm_writer_rebuild(&w, t->ngroups), SHM_OK);
	t = cur_table();
	b = (struct shm_bloom_block *)(seg.base + t->bloom_off);
	maybe = 0;
	for (int i = 0; i < N; i++) {
		key_of(k, i);
		maybe += shm_bloom_maybe(b, t->nblocks, shm_hash_summary(shm_hash(k, strlen(k))));
	}
	cr_assert_eq(maybe, 0, "a rebuilt filter of an empty table is empty");

	/* Off, the area stays until the next rebuild, which drops it. */
	cr_assert_eq(shm_writer_set_bloom(&w, false), SHM_OK);
	cr_assert_eq(cur_table()->nblocks, t->nblocks);
	cr_assert_eq(shm_writer_rebuild(&w, t->ngroups), SHM_OK);
	cr_assert_eq(cur_table()->nblocks, 0);
	key_of(k, 7);
	cr_assert_eq(get(k, &r), SHM_ENOTFOUND);
}

Test(shard, out_of_memory_changes_nothing, .timeout = 60)
{
	char k[32], v[1000];
	struct shm_kv r;
	int n = 0, rc;

	cr_assert_eq(shm_seg_create(&seg, 32 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
	memset(v, 'v', sizeof(v));
	while ((rc = shm_writer_set(&w, k, (uint32_t)key_of(k, n), v, sizeof(v))) == SHM_OK)
		n++;
	cr_assert_eq(rc, SHM_ENOMEM);
	cr_assert_gt(n, 10000);
	key_of(k, n);
	cr_assert_eq(get(k, &r), SHM_ENOTFOUND, "the failed set left nothing behind");
	for (int i = 0; i < n; i++) {
		key_of(k, i);
		cr_assert_eq(get(k, &r), SHM_OK);
	}
	/* Deleting and reclaiming makes room again. */
	for (int i = 0; i < 100; i++)
		cr_assert_eq(shm_writer_del(&w, k, (uint32_t)key_of(k, i)), SHM_OK);
	shm_writer_reclaim(&w);
	cr_assert_eq(shm_writer_set(&w, k, (uint32_t)key_of(k, n), v, sizeof(v)), SHM_OK);
	shm_writer_close(&w);
	shm_seg_close(&seg);
}

/* A reader preempted inside a read section holds back what the writer
 * retired; a store with room must not look full for that. The writer
 * waits (shm_writer_reclaim_wait) up to SHM_WRITER_ROOM_WAIT_NS for the
 * reader to leave, and only a reader that stays longer makes it ENOMEM. */
static struct shm_epoch_slot held;

static void *hold_section(void *ms)
{
	uintptr_t n = (uintptr_t)ms;
	struct timespec t = { (time_t)(n / 1000), (long)(n % 1000) * 1000000 };

	nanosleep(&t, NULL);
	shm_epoch_leave(&held);
	return NULL;
}

static int overwrite_until_full(const char *k, const char *v, size_t len, int times)
{
	int i = 0;

	while (i < times && shm_writer_set(&w, k, (uint32_t)strlen(k), v, (uint32_t)len) == SHM_OK)
		i++;
	return i;
}

Test(shard, a_reader_inside_a_section_delays_full_but_does_not_fake_it, .timeout = 60)
{
	struct shm_epoch_slot *slots[1] = { &held };
	const struct shm_readers r = { slots, 1, NULL, NULL };
	char k[32];
	static char v[16 << 10];
	pthread_t t;
	int n = 0;

	cr_assert_eq(shm_seg_create(&seg, 32 * MiB, 1), SHM_OK);
	shm_epoch_slot_init(&held, getpid());
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, &r, NULL), SHM_OK);
	memset(v, 'v', sizeof(v));
	while (shm_writer_set(&w, k, (uint32_t)key_of(k, n), v, sizeof(v)) == SHM_OK)
		n++;
	for (int i = 0; i < 20; i++)
		cr_assert_eq(shm_writer_del(&w, k, (uint32_t)key_of(k, i)), SHM_OK);
	shm_writer_reclaim(&w);
	key_of(k, 30);
	/* Room for about 20 values (the slab is full, not the table); 200
	 * overwrites need the retired ones. */
	shm_epoch_enter(&held, seg.hdr);
	cr_assert_eq(pthread_create(&t, NULL, hold_section, (void *)(uintptr_t)20), 0);
	cr_assert_eq(overwrite_until_full(k, v, sizeof(v), 200), 200, "full while a reader was inside for 20 ms");
	pthread_join(t, NULL);
	/* A reader that stays inside for longer than the wait: ENOMEM, and the
	 * store goes on once it leaves. */
	shm_epoch_enter(&held, seg.hdr);
	cr_assert_eq(pthread_create(&t, NULL, hold_section, (void *)(uintptr_t)1000), 0);
	cr_assert_lt(overwrite_until_full(k, v, sizeof(v), 200), 200);
	pthread_join(t, NULL);
	cr_assert_eq(overwrite_until_full(k, v, sizeof(v), 200), 200);
	shm_writer_close(&w);
	shm_seg_close(&seg);
}

/* Redis Cluster's hash tag rule, and placement by it. */
Test(placement, hash_tags)
{
	static const struct { const char *key, *tag; } cases[] = {
		{ "{user:42}:name", "user:42" }, { "x{a}y", "a" }, { "a{b}{c}", "b" }, { "{{a}}", "{a" },
		{ "{}x", NULL }, { "{x", NULL }, { "x}", NULL }, { "plain", NULL }, { "}{a}", "a" },
		{ "{}{a}", NULL }, { "a{", NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t tlen = 0, klen = strlen(cases[i].key);
		const uint8_t *t = shm_key_tag(cases[i].key, klen, &tlen);

		if (cases[i].tag == NULL) {
			cr_assert_null(t, "%s has no tag", cases[i].key);
			cr_assert_eq(shm_place(cases[i].key, klen, shm_hash(cases[i].key, klen), 64, SHM_PLACE_TAGS),
				     shm_shard_of(shm_hash(cases[i].key, klen), 64));
		} else {
			cr_assert_not_null(t, "%s", cases[i].key);
			cr_assert_eq(tlen, strlen(cases[i].tag), "%s", cases[i].key);
			cr_assert_arr_eq(t, cases[i].tag, tlen, "%s", cases[i].key);
		}
	}
	/* A tag picks the shard: 64 keys with one tag share it; by the whole
	 * key (SHM_PLACE_KEY) they spread. */
	char k[32];
	uint32_t first = 0, spread = 0, tagged_same = 1;
	for (int i = 0; i < 64; i++) {
		size_t kl = (size_t)sprintf(k, "{user:42}:%d", i);
		uint64_t h = shm_hash(k, kl);
		uint32_t s = shm_place(k, kl, h, 64, SHM_PLACE_TAGS);

		if (i == 0)
			first = s;
		tagged_same &= s == first;
		cr_assert_eq(s, shm_shard_of(shm_hash("user:42", 7), 64));
		spread |= 1u << (shm_place(k, kl, h, 64, SHM_PLACE_KEY) & 31);
	}
	cr_assert(tagged_same);
	cr_assert_gt(__builtin_popcount(spread), 8, "whole-key placement spreads the keys");
}
