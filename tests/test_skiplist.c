/*
 * test_skiplist.c — the per-shard skip list (shm/skiplist.h), suite
 * `skiplist`: in one process against a sorted reference (every seek mode,
 * both directions, find, unlink, set_rec, build, each, destroy), lists of
 * short keys that never load a record, lists left by a writer killed mid-
 * link or mid-unlink (simulated, and for real with SIGKILL), damaged lists,
 * seeks stepped in lock-step; and across processes: a writer process
 * inserting, updating and unlinking (retiring through EBR) while reader
 * processes that map the segment read-only scan and seek.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/crc32c.h"
#include "shm/epoch.h"
#include "shm/record.h"
#include "shm/skiplist.h"

#define MiB (1ULL << 20)
#define KMAX 300

static struct shm_seg seg;
static struct shm_slab *slab;
static uint64_t list;

static void open_seg(uint64_t size)
{
	cr_assert_eq(shm_seg_create(&seg, size, 1), SHM_OK);
	slab = &shm_shard_at(&seg, 0)->slab;
}

static void fini(void)
{
	if (seg.base)
		shm_seg_close(&seg);
	memset(&seg, 0, sizeof(seg));
}

TestSuite(skiplist, .fini = fini);

static int key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c ? c : (alen > blen) - (alen < blen);
}

/* --- the reference: what the list must hold, sorted --- */

struct ent {
	uint8_t key[KMAX];
	uint32_t klen;
	uint32_t ver;
	uint64_t node, rec;
};

static struct ent *ref;
static size_t nref;

static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;

	return key_cmp(x->key, x->klen, y->key, y->klen);
}

static void ref_sort(void)
{
	qsort(ref, nref, sizeof(*ref), ent_cmp);
}

static struct ent *ref_find(const uint8_t *k, uint32_t klen)
{
	for (size_t i = 0; i < nref; i++)
		if (key_cmp(ref[i].key, ref[i].klen, k, klen) == 0)
			return &ref[i];
	return NULL;
}

/* Value of a key at a version: the key, then the version. */
static uint32_t value_of(uint8_t *buf, const uint8_t *key, uint32_t klen, uint32_t ver)
{
	memcpy(buf, key, klen);
	memcpy(buf + klen, &ver, 4);
	return klen + 4;
}

static uint64_t new_record(const uint8_t *key, uint32_t klen, uint32_t ver)
{
	uint8_t v[KMAX + 4];
	uint64_t off;

	cr_assert_eq(shm_record_new(&seg, slab, key, klen, v, value_of(v, key, klen, ver), ver, &off), SHM_OK);
	return off;
}

static uint64_t rng = 12345;

static uint64_t rnd(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* A key from a small alphabet (0x00, 0x01, 'a', 0xfe, 0xff) so that keys
 * share prefixes, are prefixes of each other, and sit around the SHM_SKIP_PREFIX-byte
 * inline boundary; some long, some of one byte. */
static uint32_t random_key(uint8_t *k)
{
	static const uint8_t alpha[] = {0x00, 0x01, 'a', 0xfe, 0xff};
	static const uint32_t lens[] = {1, 2, 3, 13, 14, 15, 16, 20, 40, 299};
	uint32_t len = lens[rnd() % 10];
	uint32_t shared = (uint32_t)(rnd() % 3) == 0 ? SHM_SKIP_PREFIX : 0; /* a common start as long as the inline prefix */

	for (uint32_t i = 0; i < len; i++)
		k[i] = i < shared ? (uint8_t)('0' + i) : alpha[rnd() % 5];
	return len;
}

static uint64_t hrng = 99;

/* A reference entry for key (not present), its record and its node,
 * not linked yet. */
static struct ent *new_ent(const uint8_t *key, uint32_t klen)
{
	struct ent *e = &ref[nref++];

	memcpy(e->key, key, klen);
	e->klen = klen;
	e->ver = 1;
	e->rec = new_record(key, klen, 1);
	cr_assert_eq(shm_skip_node_new(&seg, slab, key, klen, e->rec, shm_skip_height(&hrng), &e->node), SHM_OK);
	return e;
}

/* Insert key (not present) into list and reference. */
static void insert(const uint8_t *key, uint32_t klen)
{
	shm_skip_link(&seg, list, new_ent(key, klen)->node);
}

static const struct shm_skip_node *node(uint64_t off)
{
	return (const struct shm_skip_node *)(seg.base + off);
}

/* The invariant, read straight from memory: at every level the nodes are
 * in strictly increasing order, every node of a level k > 0 is a node of
 * level 0, no node is linked at a level >= levels, and level 0 holds
 * exactly the reference's nodes. */
static void check_structure(void)
{
	const struct shm_skip *h = (const struct shm_skip *)(seg.base + list);
	uint32_t lv = atomic_load(&h->levels);

	cr_assert(lv >= 1 && lv <= SHM_SKIP_MAX_HEIGHT);
	for (uint32_t k = lv; k < SHM_SKIP_MAX_HEIGHT; k++)
		cr_assert_eq(atomic_load(&h->next[k]), 0, "a node linked at level %u >= levels %u", k, lv);
	size_t i = 0;
	for (uint32_t l = atomic_load(&h->next[0]); l; l = atomic_load(&node((uint64_t)l << 4)->next[0]), i++) {
		cr_assert_lt(i, nref, "level 0 longer than the reference");
		cr_assert_eq((uint64_t)l << 4, ref[i].node, "level 0, position %zu: another node", i);
	}
	cr_assert_eq(i, nref, "level 0 holds %zu nodes, the reference %zu", i, nref);
	for (uint32_t k = 1; k < lv; k++) {
		size_t j = 0;
		for (uint32_t l = atomic_load(&h->next[k]); l; l = atomic_load(&node((uint64_t)l << 4)->next[k])) {
			while (j < nref && ref[j].node != (uint64_t)l << 4)
				j++;
			cr_assert_lt(j, nref, "a node of level %u is not at level 0, or out of order", k);
			cr_assert_gt(node(ref[j].node)->height, k);
			j++;
		}
	}
}

/* What a seek must find: index into ref, or -1 for the end. */
static long expect(const uint8_t *k, uint32_t klen, bool inclusive, bool reverse)
{
	if (klen == 0)
		return reverse ? (long)nref - 1 : (nref ? 0 : -1);
	if (!reverse) {
		for (size_t i = 0; i < nref; i++) {
			int c = key_cmp(ref[i].key, ref[i].klen, k, klen);
			if (c > 0 || (inclusive && c == 0))
				return (long)i;
		}
		return -1;
	}
	for (long i = (long)nref - 1; i >= 0; i--) {
		int c = key_cmp(ref[i].key, ref[i].klen, k, klen);
		if (c < 0 || (inclusive && c == 0))
			return i;
	}
	return -1;
}

static bool values_unknown; /* values are not value_of's (check_unknown after xproc) */

static void check_entry(struct shm_skip_cursor *c, long i)
{
	struct shm_kv kv;
	uint8_t v[KMAX + 4];

	if (i < 0) {
		cr_assert_eq(c->node, 0);
		cr_assert_eq(shm_skip_cursor_get(&seg, c, &kv), SHM_ENOTFOUND);
		return;
	}
	cr_assert_eq(c->node, ref[i].node, "positioned on another node than entry %ld", i);
	cr_assert_eq(shm_skip_cursor_get(&seg, c, &kv), SHM_OK);
	cr_assert_eq(kv.klen, ref[i].klen);
	cr_assert_eq(memcmp(kv.key, ref[i].key, kv.klen), 0);
	if (values_unknown)
		return;
	uint32_t vlen = value_of(v, ref[i].key, ref[i].klen, ref[i].ver);
	cr_assert_eq(kv.vlen, vlen);
	cr_assert_eq(memcmp(kv.val, v, vlen), 0, "a value of another version");
}

/* Seek in one mode, check the entry and the next `walk` ones. */
static void check_seek(const struct shm_skip_view *v, const uint8_t *k, uint32_t klen, bool inclusive,
		       bool reverse, int walk)
{
	struct shm_skip_cursor c;
	long i = expect(k, klen, inclusive, reverse);

	cr_assert_eq(shm_skip_seek(&seg, &c, v, klen ? k : NULL, klen, inclusive, reverse), SHM_OK);
	check_entry(&c, i);
	for (int s = 0; s < walk && i >= 0; s++) {
		int rc = shm_skip_cursor_next(&seg, &c, NULL);
		i = reverse ? i - 1 : (i + 1 < (long)nref ? i + 1 : -1);
		cr_assert_eq(rc, i >= 0 ? SHM_OK : SHM_ENOTFOUND);
		check_entry(&c, i);
	}
}

static int collect(void *arg, uint64_t node_off, uint64_t rec_off)
{
	size_t *i = arg;

	cr_assert_lt(*i, nref);
	cr_assert_eq(node_off, ref[*i].node);
	cr_assert_eq(rec_off, ref[*i].rec);
	(*i)++;
	return 0;
}

/* Everything a reader and the writer can ask, against the reference. */
static void check_all(void)
{
	struct shm_skip_view v;
	uint8_t k[KMAX + 1];
	size_t n = 0;

	ref_sort();
	check_structure();
	cr_assert_eq(shm_skip_view(&seg, list, &v), SHM_OK);
	cr_assert_eq(shm_skip_each(&seg, list, collect, &n), SHM_OK);
	cr_assert_eq(n, nref);
	/* Whole scans both ways. */
	check_seek(&v, NULL, 0, true, false, (int)nref + 1);
	check_seek(&v, NULL, 0, true, true, (int)nref + 1);
	/* Every key, and keys next to it: one byte more (0x00, 0xff), one
	 * less, the last byte changed by one; every mode. */
	for (size_t i = 0; i < nref; i++) {
		const struct ent *e = &ref[i];
		uint32_t lens[5];
		uint8_t keys[5][KMAX + 1];

		memcpy(keys[0], e->key, e->klen), lens[0] = e->klen;
		memcpy(keys[1], e->key, e->klen), keys[1][e->klen] = 0x00, lens[1] = e->klen + 1;
		memcpy(keys[2], e->key, e->klen), keys[2][e->klen] = 0xff, lens[2] = e->klen + 1;
		memcpy(keys[3], e->key, e->klen), lens[3] = e->klen - 1;
		memcpy(keys[4], e->key, e->klen), keys[4][e->klen - 1] ^= 1, lens[4] = e->klen;
		for (int j = 0; j < 5; j++)
			for (int m = 0; m < 4; m++)
				check_seek(&v, keys[j], lens[j], m & 1, m & 2, i % 64 == 0 ? 3 : 0);
		cr_assert_eq(shm_skip_find(&seg, list, e->key, e->klen), e->node);
	}
	for (int j = 0; j < 50; j++) {
		uint32_t len = random_key(k);
		struct ent *e = ref_find(k, len);
		cr_assert_eq(shm_skip_find(&seg, list, k, len), e ? e->node : 0);
		for (int m = 0; m < 4; m++)
			check_seek(&v, k, len, m & 1, m & 2, 2);
	}
}

static void new_list(void)
{
	open_seg(256 * MiB);
	ref = calloc(4096, sizeof(*ref));
	nref = 0;
	cr_assert_eq(shm_skip_create(&seg, slab, &list), SHM_OK);
}

Test(skiplist, empty_list)
{
	struct shm_skip_view v;
	struct shm_skip_cursor c;
	struct shm_kv kv;

	new_list();
	cr_assert_eq(shm_skip_view(&seg, list, &v), SHM_OK);
	for (int m = 0; m < 4; m++) {
		cr_assert_eq(shm_skip_seek(&seg, &c, &v, "k", 1, m & 1, m & 2), SHM_OK);
		cr_assert_eq(shm_skip_cursor_get(&seg, &c, &kv), SHM_ENOTFOUND);
		cr_assert_eq(shm_skip_cursor_next(&seg, &c, NULL), SHM_ENOTFOUND);
	}
	cr_assert_eq(shm_skip_find(&seg, list, "k", 1), 0);
	cr_assert_eq(shm_skip_unlink(&seg, list, "k", 1), 0);
	check_all();
}

Test(skiplist, against_a_sorted_reference)
{
	uint8_t k[KMAX];

	new_list();
	/* Keys that are prefixes of each other, and the extremes. */
	static const char *fixed[] = {"p", "p\0", "p\0\0", "pp", "\xff", "\xff\xff", "\0", "0123456789abcd",
				      "0123456789abcd\0", "0123456789abc", "0123456789abcde"};
	static const uint32_t flen[] = {1, 2, 3, 2, 1, 2, 1, 14, 15, 13, 15};
	for (int i = 0; i < 11; i++)
		insert((const uint8_t *)fixed[i], flen[i]);
	check_all();
	for (int batch = 0; batch < 16; batch++) {
		for (int op = 0; op < 120; op++) {
			uint32_t len = random_key(k);
			struct ent *e = ref_find(k, len);
			if (e == NULL) {
				insert(k, len);
				continue;
			}
			if (rnd() % 3 == 0) {
				/* unlink: returns the node; the reference drops it */
				cr_assert_eq(shm_skip_unlink(&seg, list, k, len), e->node);
				cr_assert_eq(shm_skip_unlink(&seg, list, k, len), 0);
				cr_assert_eq(shm_slab_free(&seg, slab, e->node, shm_skip_node_bytes(node(e->node)->height)),
					     SHM_OK);
				cr_assert_eq(shm_slab_free(&seg, slab, e->rec, shm_record_size(len, len + 4)), SHM_OK);
				*e = ref[--nref];
			} else {
				/* update: a new record, the old one freed */
				uint64_t old = e->rec;
				e->rec = new_record(k, len, ++e->ver);
				shm_skip_set_rec(&seg, e->node, e->rec);
				cr_assert_eq(shm_slab_free(&seg, slab, old, shm_record_size(len, len + 4)), SHM_OK);
			}
		}
		check_all();
	}
	cr_assert_gt(nref, 500);
	/* Unlink everything: the list is empty and levels back to 1. */
	while (nref) {
		struct ent *e = &ref[rnd() % nref];
		cr_assert_eq(shm_skip_unlink(&seg, list, e->key, e->klen), e->node);
		*e = ref[--nref];
		if (nref % 97 == 0)
			check_all();
	}
	check_all();
	cr_assert_eq(atomic_load(&((struct shm_skip *)(seg.base + list))->levels), 1);
	free(ref);
}

Test(skiplist, heights)
{
	uint64_t a = 7, b = 7, count[SHM_SKIP_MAX_HEIGHT + 1] = {0};

	for (int i = 0; i < 1 << 20; i++) {
		uint32_t h = shm_skip_height(&a);
		cr_assert(h >= 1 && h <= SHM_SKIP_MAX_HEIGHT);
		cr_assert_eq(h, shm_skip_height(&b), "not deterministic for a seed");
		count[h]++;
	}
	/* P(h) = (3/4) 4^-(h-1): about 786 k, 197 k, 49 k, 12 k ... */
	cr_assert(count[1] > 770000 && count[1] < 800000, "%lu of height 1", count[1]);
	cr_assert(count[2] > 190000 && count[2] < 204000, "%lu of height 2", count[2]);
	cr_assert(count[3] > 46000 && count[3] < 52000, "%lu of height 3", count[3]);
	cr_assert_eq(shm_skip_node_bytes(1), 24);
	cr_assert_eq(shm_slab_rounded(shm_skip_node_bytes(1)), 32, "3 in 4 nodes take a 32-byte block");
	cr_assert_eq(shm_slab_rounded(shm_skip_node_bytes(4)), 48);
}

Test(skiplist, node_new_errors)
{
	uint64_t off, rec;

	new_list();
	rec = new_record((const uint8_t *)"k", 1, 1);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 0, rec, 1, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", SHM_KEY_MAX + 1, rec, 1, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 1, rec, 0, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 1, rec, SHM_SKIP_MAX_HEIGHT + 1, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 1, 0, 1, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 1, rec + 8, 1, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 1, 64ULL << 30, 1, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_node_new(&seg, slab, "k", 1, rec, SHM_SKIP_MAX_HEIGHT, &off), SHM_OK);
	free(ref);
}

/* Keys of at most 9 bytes are wholly inline: with every record made
 * invalid (klen 0), seeks in every mode, both walks, find and unlink still
 * find the right nodes: none of them loads a record. get does, and says
 * so. */
Test(skiplist, short_keys_never_load_records)
{
	uint8_t k[KMAX];
	struct shm_skip_view v;

	new_list();
	while (nref < 1500) {
		uint32_t len = random_key(k);
		if (len > 9)
			len = 1 + len % 9;
		if (ref_find(k, len) == NULL)
			insert(k, len);
	}
	ref_sort();
	for (size_t i = 0; i < nref; i++)
		((struct shm_record *)(seg.base + ref[i].rec))->klen = 0;
	cr_assert_eq(shm_skip_view(&seg, list, &v), SHM_OK);
	for (size_t i = 0; i < nref; i++) {
		for (int m = 0; m < 4; m++) {
			struct shm_skip_cursor c;
			long want = expect(ref[i].key, ref[i].klen, m & 1, m & 2);
			cr_assert_eq(shm_skip_seek(&seg, &c, &v, ref[i].key, ref[i].klen, m & 1, m & 2), SHM_OK);
			cr_assert_eq(c.node, want < 0 ? 0 : ref[want].node);
			if (c.node) {
				struct shm_kv kv;
				cr_assert_eq(shm_skip_cursor_get(&seg, &c, &kv), SHM_ECORRUPT);
			}
		}
		cr_assert_eq(shm_skip_find(&seg, list, ref[i].key, ref[i].klen), ref[i].node);
	}
	for (int rev = 0; rev < 2; rev++) {
		struct shm_skip_cursor c;
		size_t n = 0;
		cr_assert_eq(shm_skip_seek(&seg, &c, &v, NULL, 0, true, rev), SHM_OK);
		for (int rc = SHM_OK; rc == SHM_OK; rc = shm_skip_cursor_next(&seg, &c, NULL), n++)
			cr_assert_eq(c.node, ref[rev ? nref - 1 - n : n].node, "walk %d, step %zu", rev, n);
		cr_assert_eq(n, nref);
	}
	for (size_t i = 0; i < nref; i += 3)
		cr_assert_eq(shm_skip_unlink(&seg, list, ref[i].key, ref[i].klen), ref[i].node);
	free(ref);
}

/* Long keys whose first SHM_SKIP_PREFIX bytes differ, records made invalid: seeks by
 * any key shorter than that load no record either (a search key
 * shorter than a node's prefix is decided by the prefix). */
Test(skiplist, short_search_keys_never_load_records)
{
	uint8_t k[KMAX];
	struct shm_skip_view v;

	new_list();
	while (nref < 1000) {
		uint32_t len = SHM_SKIP_PREFIX + 1 + (uint32_t)(rnd() % 30);
		for (uint32_t i = 0; i < len; i++)
			k[i] = i < SHM_SKIP_PREFIX ? (uint8_t)"ab\xff"[rnd() % 3] : (uint8_t)rnd();
		bool clash = false;
		for (size_t i = 0; i < nref && !clash; i++)
			clash = memcmp(ref[i].key, k, SHM_SKIP_PREFIX) == 0;
		if (!clash)
			insert(k, len);
	}
	ref_sort();
	for (size_t i = 0; i < nref; i++)
		((struct shm_record *)(seg.base + ref[i].rec))->klen = 0;
	cr_assert_eq(shm_skip_view(&seg, list, &v), SHM_OK);
	for (size_t i = 0; i < nref; i++)
		for (uint32_t len = 1; len < SHM_SKIP_PREFIX; len += 4)
			for (int m = 0; m < 4; m++) {
				struct shm_skip_cursor c;
				long want = expect(ref[i].key, len, m & 1, m & 2);
				cr_assert_eq(shm_skip_seek(&seg, &c, &v, ref[i].key, len, m & 1, m & 2), SHM_OK);
				cr_assert_eq(c.node, want < 0 ? 0 : ref[want].node);
			}
	free(ref);
}

static struct shm_slab_stats stats(void)
{
	struct shm_slab_stats st;

	shm_slab_stats(slab, &st);
	return st;
}

Test(skiplist, build_each_destroy)
{
	uint8_t k[KMAX];
	uint64_t recs[2000], r = 5, off;

	new_list();
	while (nref < 2000) {
		uint32_t len = random_key(k);
		if (ref_find(k, len) == NULL) {
			struct ent *e = &ref[nref++];
			memcpy(e->key, k, len);
			e->klen = len;
			e->ver = 1;
			e->rec = new_record(k, len, 1);
		}
	}
	ref_sort();
	for (size_t i = 0; i < nref; i++)
		recs[i] = ref[i].rec;
	struct shm_slab_stats before = stats();
	/* Not strictly increasing: a duplicate, a swap; an offset that is no
	 * record. Each frees what it allocated. */
	uint64_t dup[3] = {recs[0], recs[1], recs[1]}, swp[3] = {recs[0], recs[2], recs[1]};
	uint64_t bad[2] = {recs[0], recs[0] + 8};
	cr_assert_eq(shm_skip_build(&seg, slab, dup, 3, &r, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_build(&seg, slab, swp, 3, &r, &off), SHM_EINVAL);
	cr_assert_eq(shm_skip_build(&seg, slab, bad, 2, &r, &off), SHM_EINVAL);
	cr_assert_eq(stats().live_bytes, before.live_bytes);
	cr_assert_eq(stats().requested_bytes, before.requested_bytes);

	/* The old list destroyed; a built one holds every record in order. */
	shm_skip_destroy(&seg, slab, list);
	cr_assert_eq(stats().live_bytes, before.live_bytes - shm_slab_rounded(shm_skip_bytes(&seg, list)));
	cr_assert_eq(shm_skip_build(&seg, slab, recs, nref, &r, &list), SHM_OK);
	struct shm_skip_view v;
	struct shm_skip_cursor c;
	cr_assert_eq(shm_skip_view(&seg, list, &v), SHM_OK);
	cr_assert_eq(shm_skip_seek(&seg, &c, &v, NULL, 0, true, false), SHM_OK);
	for (size_t i = 0; i < nref; i++) {
		ref[i].node = c.node;
		cr_assert_eq(shm_skip_cursor_next(&seg, &c, NULL), i + 1 < nref ? SHM_OK : SHM_ENOTFOUND);
	}
	check_all();
	/* The built list is an ordinary one: link and unlink in it. */
	for (int i = 0; i < 200; i++) {
		uint32_t len = random_key(k);
		struct ent *e = ref_find(k, len);
		if (e == NULL) {
			insert(k, len);
		} else {
			cr_assert_eq(shm_skip_unlink(&seg, list, k, len), e->node);
			cr_assert_eq(shm_slab_free(&seg, slab, e->node, shm_skip_node_bytes(node(e->node)->height)), SHM_OK);
			cr_assert_eq(shm_slab_free(&seg, slab, e->rec, shm_record_size(len, len + 4)), SHM_OK);
			*e = ref[--nref];
		}
	}
	check_all();
	/* destroy returns every byte of nodes and head: what stays live is
	 * exactly the records. */
	uint64_t recbytes = 0, recreq = 0;
	for (size_t i = 0; i < nref; i++) {
		recbytes += shm_slab_rounded(shm_record_size(ref[i].klen, ref[i].klen + 4));
		recreq += shm_record_size(ref[i].klen, ref[i].klen + 4);
	}
	cr_assert_gt(stats().live_bytes, recbytes);
	shm_skip_destroy(&seg, slab, list);
	cr_assert_eq(stats().live_bytes, recbytes);
	cr_assert_eq(stats().requested_bytes, recreq);
	free(ref);
}

/* --- a writer killed mid-link or mid-unlink --- */

static struct shm_skip *head(void)
{
	return (struct shm_skip *)(seg.base + list);
}

/* Take node n out of its levels >= keep, as unlink does from the top:
 * the state a writer killed mid-unlink leaves, and the one a writer
 * killed mid-link leaves after linking levels < keep (link sets all of
 * the node's next[] first). */
static void cut_levels(uint64_t n, uint32_t keep)
{
	struct shm_skip_node *nd = (struct shm_skip_node *)(seg.base + n);

	for (uint32_t k = nd->height; k-- > keep;) {
		_Atomic uint32_t *p = &head()->next[k];
		while (*p && ((uint64_t)*p << 4) != n)
			p = &((struct shm_skip_node *)(seg.base + ((uint64_t)*p << 4)))->next[k];
		if (*p)
			*p = atomic_load(&nd->next[k]);
	}
}

static void unlink_and_free(struct ent *e)
{
	cr_assert_eq(shm_skip_unlink(&seg, list, e->key, e->klen), e->node);
	cr_assert_eq(shm_slab_free(&seg, slab, e->node, shm_skip_node_bytes(node(e->node)->height)), SHM_OK);
	cr_assert_eq(shm_slab_free(&seg, slab, e->rec, shm_record_size(e->klen, e->klen + 4)), SHM_OK);
	*e = ref[--nref];
}

Test(skiplist, killed_mid_link_or_unlink_leaves_a_valid_list)
{
	uint8_t k[KMAX];
	int cut = 0;

	new_list();
	while (nref < 1500) {
		uint32_t len = random_key(k);
		if (ref_find(k, len) == NULL)
			insert(k, len);
	}
	/* Partly linked nodes, and levels left higher than needed (a writer
	 * killed after raising it, before linking). */
	for (size_t i = 0; i < nref; i++) {
		uint32_t h = node(ref[i].node)->height;
		if (h >= 2 && rnd() % 2) {
			cut_levels(ref[i].node, 1 + (uint32_t)(rnd() % (h - 1)));
			cut++;
		}
	}
	atomic_store(&head()->levels, SHM_SKIP_MAX_HEIGHT);
	cr_assert_gt(cut, 50);
	check_all();
	/* The writer goes on: inserts, updates, unlinks (the partly linked
	 * nodes among them), with freed nodes reused at once, so a read of a
	 * stale link above a partly linked node would show. */
	for (int batch = 0; batch < 6; batch++) {
		for (int op = 0; op < 300; op++) {
			uint32_t len = random_key(k);
			struct ent *e = ref_find(k, len);
			if (e == NULL)
				insert(k, len);
			else
				unlink_and_free(e);
		}
		check_all();
	}
	while (nref)
		unlink_and_free(&ref[rnd() % nref]);
	check_all();
	free(ref);
}

/* Checks a list of unknown contents (made by another process): strictly
 * increasing at every level, levels above levels empty, every node of a
 * level also at level 0, each/find/both scans agree. Returns the count. */
static size_t check_unknown(void)
{
	ref = realloc(ref, 8192 * sizeof(*ref));
	nref = 0;
	for (uint32_t l = atomic_load(&head()->next[0]); l; l = atomic_load(&node((uint64_t)l << 4)->next[0])) {
		struct shm_kv kv;
		struct ent *e = &ref[nref++];
		cr_assert_lt(nref, 8192);
		e->node = (uint64_t)l << 4;
		e->rec = (uint64_t)atomic_load(&node(e->node)->rec) << 4;
		cr_assert_eq(shm_record_view(&seg, e->rec, &kv), SHM_OK);
		memcpy(e->key, kv.key, kv.klen);
		e->klen = kv.klen;
		memcpy(&e->ver, kv.val + kv.klen, 4);
		if (nref > 1)
			cr_assert_lt(key_cmp(ref[nref - 2].key, ref[nref - 2].klen, e->key, e->klen), 0);
	}
	check_all();
	return nref;
}

static uint32_t pool_key(uint8_t *k, int i)
{
	return (uint32_t)(i % 2 ? sprintf((char *)k, "%05d", i) : sprintf((char *)k, "long-prefix-%05d", i));
}

/* A writer process linking and unlinking, killed by SIGKILL at a random
 * moment, 100 times: whatever instruction it died at, the list it leaves
 * is valid for readers, each, find and unlink. */
Test(skiplist, writer_killed_anywhere, .timeout = 120)
{
	uint8_t k[KMAX];
	static bool present[600];

	for (int trial = 0; trial < 100; trial++) {
		open_seg(64 * MiB);
		cr_assert_eq(shm_skip_create(&seg, slab, &list), SHM_OK);
		ref = calloc(8192, sizeof(*ref));
		nref = 0;
		memset(present, 0, sizeof(present));
		for (int i = 0; i < 600; i += 2) {
			insert(k, pool_key(k, i));
			present[i] = true;
		}
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			rng += (uint64_t)trial * 7919;
			for (;;) {
				int i = (int)(rnd() % 600);
				uint32_t len = pool_key(k, i);
				if (present[i]) {
					shm_skip_unlink(&seg, list, k, len);
				} else {
					uint64_t rec = new_record(k, len, 2), n;
					/* tall nodes: more link stores to die between */
					uint32_t h = rnd() % 4 ? shm_skip_height(&hrng) : 2 + (uint32_t)(rnd() % 20);
					if (shm_skip_node_new(&seg, slab, k, len, rec, h, &n) != SHM_OK)
						_exit(3);
					shm_skip_link(&seg, list, n);
				}
				present[i] = !present[i];
			}
		}
		struct timespec ts = { 0, (long)(rnd() % 3000000) };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int st;
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		cr_assert(WIFSIGNALED(st), "the writer exited by itself (%d)", st);
		size_t n = check_unknown();
		/* Unlink them all: empty and valid again. */
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(shm_skip_unlink(&seg, list, ref[i].key, ref[i].klen), ref[i].node);
		nref = 0;
		check_all();
		free(ref);
		fini();
	}
}

/* The invariant read straight from memory, without asserting (for a
 * list another process is writing and that is stopped at any
 * instruction): NULL if it holds, else what is wrong. */
static const char *invariant_broken(void)
{
	static uint64_t level0[4096];
	uint32_t lv = atomic_load(&head()->levels), n = 0;

	if (lv < 1 || lv > SHM_SKIP_MAX_HEIGHT)
		return "levels out of range";
	for (uint32_t k = lv; k < SHM_SKIP_MAX_HEIGHT; k++)
		if (atomic_load(&head()->next[k]))
			return "a node linked at a level >= levels";
	struct shm_kv prev = {0}, kv;
	for (uint32_t l = atomic_load(&head()->next[0]); l; l = atomic_load(&node((uint64_t)l << 4)->next[0])) {
		if (n == 4096 || shm_record_view(&seg, (uint64_t)atomic_load(&node((uint64_t)l << 4)->rec) << 4, &kv))
			return "level 0 too long, or a bad record";
		if (n && key_cmp(prev.key, prev.klen, kv.key, kv.klen) >= 0)
			return "level 0 out of order";
		level0[n++] = (uint64_t)l << 4;
		prev = kv;
	}
	for (uint32_t k = 1; k < lv; k++) {
		uint32_t j = 0;
		for (uint32_t l = atomic_load(&head()->next[k]); l; l = atomic_load(&node((uint64_t)l << 4)->next[k])) {
			while (j < n && level0[j] != (uint64_t)l << 4)
				j++;
			if (j++ == n)
				return "a node linked at a level k > 0 and not at level 0 (or out of order)";
		}
	}
	return NULL;
}

/* A writer process stopped after every single instruction of link and
 * unlink (ptrace single-step) leaves, at each stop, exactly what a kill
 * there would: the invariant must hold at every one of them. */
Test(skiplist, invariant_holds_at_every_instruction, .timeout = 120)
{
	uint8_t k[KMAX];

	new_list();
	for (int i = 0; i < 120; i += 2)
		insert(k, pool_key(k, i));
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
			_exit(2);
		raise(SIGSTOP);
		/* Tall nodes linked, then unlinked, and an inline-key one. */
		for (int i = 1; i < 12; i += 2) {
			uint32_t len = pool_key(k, i);
			uint64_t rec = new_record(k, len, 1), n;
			if (shm_skip_node_new(&seg, slab, k, len, rec, 4 + (uint32_t)i, &n) != SHM_OK)
				_exit(3);
			shm_skip_link(&seg, list, n);
		}
		for (int i = 1; i < 12; i += 4)
			shm_skip_unlink(&seg, list, k, pool_key(k, i));
		_exit(0);
	}
	int st;
	uint64_t steps = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 2) {
		cr_log_warn("skipped: ptrace not permitted here");
		free(ref);
		return;
	}
	cr_assert(WIFSTOPPED(st));
	for (;;) {
		const char *why = invariant_broken();
		cr_assert_null(why, "after %lu instructions: %s", steps, why);
		cr_assert_eq(ptrace(PTRACE_SINGLESTEP, pid, NULL, NULL), 0);
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		if (WIFEXITED(st))
			break;
		cr_assert(WIFSTOPPED(st));
		steps++;
	}
	cr_assert_eq(WEXITSTATUS(st), 0);
	cr_assert_gt(steps, 1000);
	cr_log_info("invariant checked after each of %lu instructions", steps);
	free(ref);
}

/* --- damage: never a crash or a loop, SHM_ECORRUPT --- */

static int count_node(void *arg, uint64_t node_off, uint64_t rec_off)
{
	(void)node_off, (void)rec_off;
	++*(size_t *)arg;
	return 0;
}

/* Scan both ways and each: whether anything reported SHM_ECORRUPT. Every
 * key a scan returns comes strictly after (before) the one before it. */
static bool any_corrupt(void)
{
	struct shm_skip_view v;
	bool bad = false;
	size_t n = 0;

	if (shm_skip_view(&seg, list, &v) != SHM_OK)
		return true;
	for (int rev = 0; rev < 2; rev++) {
		struct shm_skip_cursor c;
		uint8_t prev[KMAX];
		uint32_t plen = 0;
		int rc = shm_skip_seek(&seg, &c, &v, NULL, 0, true, rev), steps = 0;
		while (rc == SHM_OK) {
			struct shm_kv kv;
			rc = shm_skip_cursor_get(&seg, &c, &kv);
			if (rc != SHM_OK)
				break;
			if (steps++)
				cr_assert_eq(key_cmp(prev, plen, kv.key, kv.klen) < 0, !rev, "scan out of order");
			memcpy(prev, kv.key, kv.klen);
			plen = kv.klen;
			rc = shm_skip_cursor_next(&seg, &c, NULL);
		}
		cr_assert(rc == SHM_ENOTFOUND || rc == SHM_ECORRUPT, "rc %d", rc);
		bad |= rc == SHM_ECORRUPT;
	}
	for (size_t i = 0; i < nref; i++)
		for (int m = 0; m < 4; m++) {
			struct shm_skip_cursor c;
			struct shm_kv kv;
			int rc = shm_skip_seek(&seg, &c, &v, ref[i].key, ref[i].klen, m & 1, m & 2);
			if (rc == SHM_OK)
				rc = shm_skip_cursor_get(&seg, &c, &kv);
			bad |= rc == SHM_ECORRUPT;
		}
	bad |= shm_skip_each(&seg, list, count_node, &n) == SHM_ECORRUPT;
	return bad;
}

Test(skiplist, damaged_lists_report_corrupt)
{
	uint8_t k[KMAX], *save = malloc(16 * MiB);

	new_list();
	while (nref < 300) {
		uint32_t len = random_key(k);
		if (ref_find(k, len) == NULL)
			insert(k, len);
	}
	ref_sort();
	cr_assert(!any_corrupt());
	uint64_t area = seg.hdr->chunk_base;
	memcpy(save, seg.base + area, 16 * MiB);
	struct shm_skip_node *a = (struct shm_skip_node *)(seg.base + ref[100].node);
	struct shm_skip_node *b = (struct shm_skip_node *)(seg.base + ref[200].node);
	uint32_t a32 = (uint32_t)(ref[100].node >> 4);
	for (int kind = 0; kind < 12; kind++) {
		switch (kind) {
		case 0: atomic_store(&b->next[0], a32); break;                    /* a cycle */
		case 1: b->height = 0; break;
		case 2: b->height = SHM_SKIP_MAX_HEIGHT + 1; break;
		case 3: b->plen = 0; break;
		case 4: b->plen = SHM_SKIP_PREFIX + 1; break;
		case 5: atomic_store(&b->rec, 0); break;
		case 6: atomic_store(&b->rec, atomic_load(&a->rec)); break;       /* another key's record */
		case 7: atomic_store(&a->next[0], (uint32_t)((seg.size >> 4) - 1)); break; /* off the end */
		case 8: head()->magic ^= 1; break;
		case 9: atomic_store(&head()->levels, SHM_SKIP_MAX_HEIGHT + 1); break;
		case 10: /* a link at level 1 to a node of height 1 */
			for (size_t i = 0; i < nref; i++)
				if (node(ref[i].node)->height == 1) {
					atomic_store(&head()->next[1], (uint32_t)(ref[i].node >> 4));
					break;
				}
			break;
		case 11: /* two neighbours' keys swapped (rec, plen, prefix) */ {
			struct shm_skip_node *c = (struct shm_skip_node *)(seg.base + ref[101].node);
			uint32_t r = atomic_load(&a->rec);
			uint8_t t[11];
			atomic_store(&a->rec, atomic_load(&c->rec));
			atomic_store(&c->rec, r);
			memcpy(t, &a->plen, 11), memcpy(&a->plen, &c->plen, 11), memcpy(&c->plen, t, 11);
			break;
		}
		}
		cr_assert(any_corrupt(), "damage %d not reported", kind);
		memcpy(seg.base + area, save, 16 * MiB);
		memcpy(seg.base + list, save + (list - area), sizeof(struct shm_skip));
		cr_assert(!any_corrupt());
	}
	free(save);
	free(ref);
}

/* A seek leaves passes between keys whose inline prefixes tie unchecked
 * up to 32 in a row (skiplist.c, pass_ok): a cycle among such keys must
 * still end the seek with SHM_ECORRUPT. */
Test(skiplist, a_cycle_among_keys_of_one_prefix_ends_a_seek, .timeout = 20)
{
	uint8_t k[KMAX];
	struct shm_skip_view v;

	new_list();
	for (int i = 0; i < 200; i++) {
		uint32_t len = (uint32_t)snprintf((char *)k, sizeof(k), "shared-prefix:%04d", i);
		insert(k, len);
	}
	ref_sort();
	cr_assert(!any_corrupt());
	cr_assert_eq(shm_skip_view(&seg, list, &v), SHM_OK);
	/* Every node but the first links back to the first at level 0: a
	 * walk there goes round between the first two. */
	for (size_t i = 1; i < nref; i++) {
		struct shm_skip_node *n = (struct shm_skip_node *)(seg.base + ref[i].node);
		atomic_store(&n->next[0], (uint32_t)(ref[0].node >> 4));
	}
	/* Above every key, told by the prefixes alone: no record is loaded
	 * on the way, so no pass's order is known for free. */
	uint32_t len = (uint32_t)snprintf((char *)k, sizeof(k), "shared-prefix;");
	for (int m = 0; m < 4; m++) {
		struct shm_skip_cursor c;
		cr_assert_eq(shm_skip_seek(&seg, &c, &v, k, len, m & 1, m & 2), SHM_ECORRUPT, "mode %d", m);
	}
	free(ref);
}

/* Seeks of 8 lists stepped in lock-step (as a client merging shards
 * does) end where a seek of each alone ends. */
Test(skiplist, lock_step_seeks)
{
	uint8_t k[KMAX];
	uint64_t lists[8];
	struct shm_skip_view v[8];

	open_seg(256 * MiB);
	for (int l = 0; l < 8; l++) {
		cr_assert_eq(shm_skip_create(&seg, slab, &lists[l]), SHM_OK);
		cr_assert_eq(shm_skip_view(&seg, lists[l], &v[l]), SHM_OK);
	}
	for (int i = 0; i < 4000; i++) {
		uint32_t len = random_key(k);
		int l = (int)(rnd() % 8);
		if (shm_skip_find(&seg, lists[l], k, len) == 0) {
			uint64_t n, rec = new_record(k, len, 1);
			cr_assert_eq(shm_skip_node_new(&seg, slab, k, len, rec, shm_skip_height(&hrng), &n), SHM_OK);
			shm_skip_link(&seg, lists[l], n);
		}
	}
	uint64_t steps = 0;
	for (int q = 0; q < 2000; q++) {
		struct shm_skip_cursor c[8], one;
		uint32_t len = random_key(k);
		bool inc = q & 1, rev = q & 2, busy = true;
		for (int l = 0; l < 8; l++)
			shm_skip_seek_start(&c[l], &v[l], k, len, inc, rev);
		while (busy) {
			busy = false;
			for (int l = 0; l < 8; l++) {
				int rc = shm_skip_seek_step(&seg, &c[l]);
				cr_assert_geq(rc, 0);
				busy |= rc == 1;
				steps += (uint64_t)rc;
			}
		}
		for (int l = 0; l < 8; l++) {
			cr_assert_eq(shm_skip_seek(&seg, &one, &v[l], k, len, inc, rev), SHM_OK);
			cr_assert_eq(c[l].node, one.node);
		}
	}
	cr_assert_gt(steps, 2000 * 8 * 3, "seeks took %lu steps", steps);
}

/* --- across processes: one writer, readers mapping the segment read-only --- */

#define XK 3000
#define XREADERS 2
#define XSCANS 300
#define XSEEKS 300

struct xshared {
	struct shm_epoch_slot slots[XREADERS];
	_Atomic uint64_t maxver[XK];
	uint64_t list;
	_Atomic uint64_t entries, seeks;
	char error[256];
};

struct xvalue {
	uint32_t id, crc; /* crc over version and pad */
	uint64_t version;
	uint8_t pad[40];
};

static pid_t xpids[XREADERS];

static void kill_readers(void)
{
	for (int i = 0; i < XREADERS; i++)
		if (xpids[i] > 0) {
			kill(xpids[i], SIGKILL);
			waitpid(xpids[i], NULL, 0);
		}
	fini();
}

/* Key of id: group id / 3 as 5 digits, then "", "/long/key/x" or "\0":
 * the three keys of a group are prefixes of each other, inline and not. */
static uint32_t xkey(uint8_t *k, uint32_t id)
{
	static const char *suffix[] = {"", "/long/key/x", ""};
	int n = sprintf((char *)k, "%05u%s", id / 3, suffix[id % 3]);

	if (id % 3 == 2)
		k[n++] = 0;
	return (uint32_t)n;
}

/* Rank of id in key order ("g" < "g\0" < "g/long..."), -1: not a key of ours. */
static long xrank(const uint8_t *k, uint32_t klen)
{
	uint32_t g = 0, v;

	if (klen < 5)
		return -1;
	for (int i = 0; i < 5; i++) {
		if (k[i] < '0' || k[i] > '9')
			return -1;
		g = g * 10 + (k[i] - '0');
	}
	if (klen == 5)
		v = 0;
	else if (klen == 6 && k[5] == 0)
		v = 1;
	else if (klen == 16 && memcmp(k + 5, "/long/key/x", 11) == 0)
		v = 2;
	else
		return -1;
	return g * 3 + v;
}

static uint32_t xrank_id(long rank) { return (uint32_t)(rank / 3 * 3 + (uint32_t[]){0, 2, 1}[rank % 3]); }

static bool xstable(uint32_t id) { return id % 4 == 0; }

static uint32_t xcrc(const struct xvalue *v, uint32_t len)
{
	return shm_crc32c(&v->version, len - offsetof(struct xvalue, version));
}

static void xfail(struct xshared *sh, const char *what, long rank)
{
	snprintf(sh->error, sizeof(sh->error), "%s (rank %ld)", what, rank);
	_exit(1);
}

/* Check the entry the cursor is on: a key of ours, its value intact, of
 * that key, a version really written. Returns its rank. */
static long xentry(struct xshared *sh, struct shm_skip_cursor *c)
{
	struct shm_kv kv;
	struct xvalue v;
	int rc = shm_skip_cursor_get(&seg, c, &kv);
	long r;

	if (rc != SHM_OK)
		xfail(sh, shm_strerror(rc), -1);
	r = xrank(kv.key, kv.klen);
	if (r < 0 || r >= XK)
		xfail(sh, "a key never written", r);
	if (kv.vlen < offsetof(struct xvalue, pad) || kv.vlen > sizeof(v))
		xfail(sh, "value of a wrong size", r);
	memcpy(&v, kv.val, kv.vlen);
	if (v.id != xrank_id(r) || v.crc != xcrc(&v, kv.vlen))
		xfail(sh, "value damaged or of another key", r);
	if (v.version > atomic_load(&sh->maxver[v.id]))
		xfail(sh, "a version never written", r);
	return r;
}

static void xreader(int id, int ro, struct xshared *sh)
{
	struct shm_skip_view v;
	long stable_ranks[XK];
	int nstable = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (shm_seg_attach(&seg, ro, false) != SHM_OK)
		xfail(sh, "attach", -1);
	shm_epoch_slot_init(&sh->slots[id], getpid());
	for (long r = 0; r < XK; r++)
		if (xstable(xrank_id(r)))
			stable_ranks[nstable++] = r;
	rng += (uint64_t)id * 1000003;
	for (int scan = 0; scan < XSCANS; scan++) {
		bool rev = scan & 1, seen[XK] = {false};
		struct shm_skip_cursor c;
		long prev = -1;
		int rc;

		shm_epoch_enter(&sh->slots[id], seg.hdr);
		if (shm_skip_view(&seg, sh->list, &v) != SHM_OK)
			xfail(sh, "view", -1);
		rc = shm_skip_seek(&seg, &c, &v, NULL, 0, true, rev);
		while (rc == SHM_OK) {
			long r = xentry(sh, &c);
			if (prev >= 0 && (rev ? r >= prev : r <= prev))
				xfail(sh, "scan out of order", r);
			seen[r] = true;
			prev = r;
			atomic_fetch_add(&sh->entries, 1);
			rc = shm_skip_cursor_next(&seg, &c, NULL);
		}
		shm_epoch_leave(&sh->slots[id]);
		if (rc != SHM_ENOTFOUND)
			xfail(sh, shm_strerror(rc), prev);
		for (int i = 0; i < nstable; i++)
			if (!seen[stable_ranks[i]])
				xfail(sh, rev ? "reverse scan missed a stable key" : "scan missed a stable key",
				      stable_ranks[i]);
		/* Seeks from stable keys: inclusive finds the key itself;
		 * exclusive the next key, never past the next stable one. */
		for (int q = 0; q < XSEEKS; q++) {
			int si = (int)(rnd() % (uint64_t)nstable);
			long s = stable_ranks[si], r;
			uint8_t k[32];
			uint32_t klen = xkey(k, xrank_id(s));
			bool inc = q & 1;

			shm_epoch_enter(&sh->slots[id], seg.hdr);
			if (shm_skip_seek(&seg, &c, &v, k, klen, inc, rev) != SHM_OK)
				xfail(sh, "seek", s);
			if (c.node == 0) {
				if (inc || (rev ? si > 0 : si + 1 < nstable))
					xfail(sh, "seek ran past a stable key", s);
			} else {
				r = xentry(sh, &c);
				if (inc && r != s)
					xfail(sh, "inclusive seek missed a stable key", s);
				if (!inc && (rev ? (r >= s || (si > 0 && r < stable_ranks[si - 1]))
						 : (r <= s || (si + 1 < nstable && r > stable_ranks[si + 1]))))
					xfail(sh, "exclusive seek skipped a stable key", s);
			}
			shm_epoch_leave(&sh->slots[id]);
			atomic_fetch_add(&sh->seeks, 1);
		}
	}
	_exit(0);
}

/* The writer's state. */
static struct xshared *sh;
static bool present[XK];
static uint64_t xnode[XK], xrec[XK], xrecsize[XK];
static struct shm_retire_list rl;
static uint64_t version, unlinked;

/* A new version of key id: a new record, announced in maxver before the
 * caller publishes it; returns its offset. */
static uint64_t xput(uint32_t id)
{
	struct xvalue v;
	uint32_t len = (uint32_t)(offsetof(struct xvalue, pad) + (id + version) % sizeof(v.pad)), klen;
	uint64_t off;
	uint8_t k[32];

	v.id = id;
	v.version = ++version;
	memset(v.pad, (int)version, sizeof(v.pad));
	v.crc = xcrc(&v, len);
	atomic_store(&sh->maxver[id], version);
	klen = xkey(k, id);
	cr_assert_eq(shm_record_new(&seg, slab, k, klen, &v, len, version, &off), SHM_OK);
	xrecsize[id] = shm_record_size(klen, len);
	return off;
}

/* Insert key id if absent; else update it, or (not a stable key) unlink
 * it, retiring what readers may still hold. */
static void xop(uint32_t id)
{
	uint8_t k[32];
	uint32_t klen = xkey(k, id);

	if (!present[id]) {
		xrec[id] = xput(id);
		cr_assert_eq(shm_skip_node_new(&seg, slab, k, klen, xrec[id], shm_skip_height(&hrng), &xnode[id]),
			     SHM_OK);
		shm_skip_link(&seg, list, xnode[id]);
		present[id] = true;
	} else if (xstable(id) || rnd() % 2) {
		uint64_t old = xrec[id], oldsize = xrecsize[id];
		xrec[id] = xput(id);
		shm_skip_set_rec(&seg, xnode[id], xrec[id]);
		cr_assert_eq(shm_retire_push(&rl, old, oldsize), SHM_OK);
	} else {
		cr_assert_eq(shm_skip_unlink(&seg, list, k, klen), xnode[id]);
		cr_assert_eq(shm_retire_push(&rl, xnode[id], shm_skip_node_bytes(node(xnode[id])->height)), SHM_OK);
		cr_assert_eq(shm_retire_push(&rl, xrec[id], xrecsize[id]), SHM_OK);
		present[id] = false;
		unlinked++;
	}
}

Test(skiplist, writer_and_readers_across_processes, .timeout = 240, .fini = kill_readers)
{
	uint64_t ops = 0;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	open_seg(512 * MiB);
	cr_assert_eq(shm_skip_create(&seg, slab, &sh->list), SHM_OK);
	list = sh->list;
	shm_retire_init(&rl);
	struct shm_epoch_slot *slots[XREADERS] = {&sh->slots[0], &sh->slots[1]};

	for (uint32_t id = 0; id < XK; id++)
		if (xstable(id) || id % 2)
			xop(id);
	cr_assert_eq(shm_seg_seal(&seg), SHM_OK);
	for (int i = 0; i < XREADERS; i++) {
		int ro = shm_seg_reopen_rdonly(&seg);
		cr_assert_geq(ro, 0);
		xpids[i] = fork();
		cr_assert_geq(xpids[i], 0);
		if (xpids[i] == 0)
			xreader(i, ro, sh);
		close(ro);
	}
	int exited = 0;
	while (exited < XREADERS) {
		for (int b = 0; b < 64; b++, ops++)
			xop((uint32_t)(rnd() % XK));
		shm_retire_seal(&rl, seg.hdr);
		shm_retire_collect(&rl, &seg, slab, slots, XREADERS);
		for (int i = 0; i < XREADERS; i++) {
			int st;
			if (xpids[i] > 0 && waitpid(xpids[i], &st, WNOHANG) == xpids[i]) {
				xpids[i] = 0;
				exited++;
				cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d: %s", i, sh->error);
			}
		}
	}
	cr_log_info("skiplist xproc: %lu writes (%lu unlinks), %lu entries scanned, %lu seeks", ops, unlinked,
		    atomic_load(&sh->entries), atomic_load(&sh->seeks));
	cr_assert_eq(atomic_load(&sh->seeks), (uint64_t)XREADERS * XSCANS * XSEEKS);
	cr_assert_gt(unlinked, 1000, "the writer unlinked only %lu nodes while readers ran", unlinked);
	shm_retire_seal(&rl, seg.hdr);
	shm_retire_collect(&rl, &seg, slab, slots, XREADERS);
	cr_assert_eq(rl.n, 0);
	shm_retire_destroy(&rl);
	ref = NULL;
	values_unknown = true;
	check_unknown();
	free(ref);
}

/* The writer's tail (shm_skip_link_tail): keys in increasing order append
 * without a search, mixed with inserts below the tail and unlinks of the
 * last nodes, and the list stays what the reference says. */
Test(skiplist, appends_through_the_tail)
{
	struct shm_skip_tail tail = { 0 };
	uint8_t k[16];

	new_list();
	for (int i = 0; i < 3000; i++) {
		uint32_t len = (uint32_t)sprintf((char *)k, "a%06d", i * 2);
		struct ent *e = new_ent(k, len);

		shm_skip_link_tail(&seg, list, e->node, &tail);
		cr_assert_eq(tail.last[0], e->node, "an append is the new last node");
		if (i % 7 == 3) {
			/* the last key goes again: the tail steps back */
			cr_assert_eq(shm_skip_unlink_tail(&seg, list, k, len, &tail), e->node);
			nref--;
		} else if (i % 11 == 5) {
			/* a key below the tail: searched for, the tail stays */
			uint32_t l2 = (uint32_t)sprintf((char *)k, "a%06d", i * 2 - 3);
			struct ent *f = new_ent(k, l2);

			shm_skip_link_tail(&seg, list, f->node, &tail);
			cr_assert_eq(tail.last[0], e->node);
		}
		if (i % 500 == 499)
			check_all();
	}
	/* What the tail remembers is what a walk of each level finds. */
	const struct shm_skip *h = (const struct shm_skip *)(seg.base + list);
	for (int lv = 0; lv < SHM_SKIP_MAX_HEIGHT; lv++) {
		uint64_t x = 0;

		for (uint32_t l = atomic_load(&h->next[lv]); l != 0; l = atomic_load(&node(x)->next[lv]))
			x = (uint64_t)l << 4;
		cr_assert_eq(tail.last[lv], x, "level %d: the tail says %lu, the list ends at %lu", lv,
			     (unsigned long)tail.last[lv], (unsigned long)x);
	}
	check_all();
}
