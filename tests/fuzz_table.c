/*
 * fuzz_table.c — libFuzzer target for the reader path over damaged memory.
 *
 * A client maps the data segment read-only and must survive whatever bytes
 * it finds there. This target builds a small store once, then for each
 * input applies byte patches to the shard descriptor, the table (header,
 * control bytes, slots, Bloom filter) and the records, runs lookups
 * (hits, misses, with and without the Bloom filter) through
 * shm_shard_get, touches every byte of any record returned, and restores
 * the patched bytes. It must never crash or read outside the segment
 * (ASan would tell).
 *
 * Input: when its length is odd and at least 9, a byte ignored and a
 * shard table offset (u64); then a sequence of 5-byte patches { u32
 * position (mod the patched area), u8 value } (little-endian).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shard.h"
#include "tests/fuzz_input.h"

#define NKEYS 200

static struct shm_seg seg;
static uint64_t area_off, area_len;
static uint8_t *saved;
static volatile uint64_t sink;

static void build(void)
{
	struct shm_writer w;
	char k[16], v[40];

	CHECK(shm_seg_create(&seg, 16ULL << 20, 1) == SHM_OK &&
	      shm_writer_open(&w, &seg, 0, 0, NULL, NULL) == SHM_OK);
	for (int i = 0; i < NKEYS; i++) {
		int kl = sprintf(k, "k%d", i), vl = sprintf(v, "value-%d", i);
		CHECK(shm_writer_set(&w, k, (uint32_t)kl, v, (uint32_t)vl) == SHM_OK);
	}
	for (int i = 0; i < NKEYS; i += 3)
		shm_writer_del(&w, k, (uint32_t)sprintf(k, "k%d", i));
	/* A filter area to damage too (turned off and on per input below). */
	CHECK(shm_writer_set_bloom(&w, true) == SHM_OK);
	shm_writer_close(&w);
	/* Everything from the shard descriptor to the end of the used chunks. */
	area_off = seg.hdr->shard_off;
	area_len = seg.hdr->chunk_base + shm_chunks_in_use(&seg) * SHM_CHUNK_SIZE - area_off;
	saved = malloc(area_len);
	memcpy(saved, seg.base + area_off, area_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size };
	struct shm_shard *sh;
	uint64_t sum = 0;
	char k[16];

	if (seg.base == NULL)
		build();
	sh = shm_shard_at(&seg, 0);
	if (size % 2 == 1 && size >= 9) {
		fuzz_take8(&in);
		atomic_store(&sh->table_off, fuzz_take(&in, 8));
	}
	while (in.n >= 5) {
		uint32_t pos = (uint32_t)fuzz_take(&in, 4);

		seg.base[area_off + pos % area_len] = fuzz_take8(&in);
	}
	for (int bloom = 0; bloom < 2; bloom++) {
		atomic_store(&sh->bloom_on, (uint32_t)bloom);
		for (int i = 0; i < NKEYS + 20; i++) {
			struct shm_kv r;
			int kl = sprintf(k, "k%d", i);
			if (shm_shard_get(&seg, sh, k, (uint32_t)kl, shm_hash(k, (size_t)kl), &r) == SHM_OK)
				for (uint32_t j = 0; j < r.klen + r.vlen; j++)
					sum += r.key[j];
		}
	}
	memcpy(seg.base + area_off, saved, area_len);
	sink = sum;
	return 0;
}
