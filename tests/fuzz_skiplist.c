/*
 * fuzz_skiplist.c — libFuzzer target for the skip list's reader path over
 * damaged memory (shm/skiplist.h).
 *
 * A client maps the data segment read-only and must survive whatever bytes
 * it finds there. This target builds a list once (keys short and long,
 * sharing prefixes, prefixes of each other), then for each input applies
 * byte patches to the shard's memory (list head, nodes, records), runs
 * seeks in every mode (forward, reverse, inclusive, exclusive, from no
 * key) with walks of a few steps, full scans both ways and
 * shm_skip_each, touches every byte of every record returned, checks that
 * every scan's keys strictly increase (decrease) whatever the damage, and
 * restores the patched bytes. It must never crash, loop or read outside
 * the segment (ASan would tell).
 *
 * Input: when its length is odd and at least 9, a byte ignored and a list
 * offset (u64) used instead of the real one; then a sequence of 5-byte
 * patches { u32 position (mod the patched area), u8 value }
 * (little-endian).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/skiplist.h"
#include "tests/fuzz_input.h"

#define NKEYS 200

static struct shm_seg seg;
static uint64_t list, area_off, area_len;
static uint8_t *saved;
static uint8_t keys[NKEYS][24];
static uint32_t klens[NKEYS];
static volatile uint64_t sink;

static int key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c ? c : (alen > blen) - (alen < blen);
}

static void build(void)
{
	struct shm_slab *slab;
	uint64_t rng = 1;

	CHECK(shm_seg_create(&seg, 16ULL << 20, 1) == SHM_OK);
	slab = &shm_shard_at(&seg, 0)->slab;
	CHECK(shm_skip_create(&seg, slab, &list) == SHM_OK);
	for (int i = 0; i < NKEYS; i++) {
		char v[32];
		uint64_t rec, node;
		int vl = sprintf(v, "value-%d", i);

		/* "k12", "k12\0", "k12-and-a-long-tail": inline and not */
		klens[i] = (uint32_t)sprintf((char *)keys[i], i % 3 == 2 ? "k%d-and-a-long-tail" : "k%d", i / 3);
		if (i % 3 == 1)
			keys[i][klens[i]++] = 0;
		CHECK(shm_record_new(&seg, slab, keys[i], klens[i], v, (uint32_t)vl, 1, &rec) == SHM_OK);
		CHECK(shm_skip_node_new(&seg, slab, keys[i], klens[i], rec, shm_skip_height(&rng), &node) == SHM_OK);
		shm_skip_link(&seg, list, node);
	}
	for (int i = 0; i < NKEYS; i += 7)
		CHECK(shm_skip_unlink(&seg, list, keys[i], klens[i]) != 0);
	/* Everything from the shard descriptor to the end of the used chunks. */
	area_off = seg.hdr->shard_off;
	area_len = seg.hdr->chunk_base + shm_chunks_in_use(&seg) * SHM_CHUNK_SIZE - area_off;
	saved = malloc(area_len);
	memcpy(saved, seg.base + area_off, area_len);
}

static uint64_t touch(const struct shm_kv *kv)
{
	uint64_t sum = kv->seq;

	for (uint32_t j = 0; j < kv->klen + kv->vlen; j++)
		sum += kv->key[j];
	return sum;
}

/* Walk from a done seek for at most `steps` entries (a whole scan: the
 * list cannot hold more than the area's nodes); keys must keep their
 * order. */
static uint64_t walk(struct shm_skip_cursor *c, bool reverse, uint64_t steps)
{
	uint8_t prev[SHM_KEY_MAX];
	uint32_t plen = 0;
	uint64_t sum = 0;
	struct shm_kv kv;

	for (uint64_t n = 0; n < steps; n++) {
		if (shm_skip_cursor_get(&seg, c, &kv) != SHM_OK)
			break;
		CHECK(n == 0 || (key_cmp(prev, plen, kv.key, kv.klen) < 0) == !reverse);
		memcpy(prev, kv.key, kv.klen);
		plen = kv.klen;
		sum += touch(&kv);
		if (shm_skip_cursor_next(&seg, c, NULL) != SHM_OK)
			break;
	}
	return sum;
}

static int each_fn(void *arg, uint64_t node_off, uint64_t rec_off)
{
	struct shm_kv kv;

	CHECK(shm_record_view(&seg, rec_off, &kv) == SHM_OK);
	*(uint64_t *)arg += touch(&kv) + node_off;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size };
	struct shm_skip_view v;
	uint64_t off, sum = 0, all = area_len / 16;

	if (seg.base == NULL)
		build();
	off = list;
	if (size % 2 == 1 && size >= 9) {
		fuzz_take8(&in);
		off = fuzz_take(&in, 8);
	}
	while (in.n >= 5) {
		uint32_t pos = (uint32_t)fuzz_take(&in, 4);

		seg.base[area_off + pos % area_len] = fuzz_take8(&in);
	}
	if (shm_skip_view(&seg, off, &v) == SHM_OK) {
		struct shm_skip_cursor c;

		for (int rev = 0; rev < 2; rev++)
			if (shm_skip_seek(&seg, &c, &v, NULL, 0, true, rev) == SHM_OK)
				sum += walk(&c, rev, all);
		for (int i = 0; i < NKEYS; i += 3)
			for (int m = 0; m < 4; m++)
				for (uint32_t len = klens[i]; len + 2 > klens[i] && len > 0; len--)
					if (shm_skip_seek(&seg, &c, &v, keys[i], len, m & 1, m & 2) == SHM_OK)
						sum += walk(&c, m & 2, 3);
		shm_skip_each(&seg, off, each_fn, &sum);
	}
	memcpy(seg.base + area_off, saved, area_len);
	sink = sum;
	return 0;
}
