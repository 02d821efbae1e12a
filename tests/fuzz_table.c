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
 * Input: a sequence of 5-byte patches { u32 position (mod the patched
 * area), u8 value }, and optionally a shard table offset in the first 8
 * bytes when the input length is odd.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shard.h"

#define NKEYS 200

static struct shm_seg seg;
static uint64_t area_off, area_len;
static uint8_t *saved;
static volatile uint64_t sink;

static void build(void)
{
	struct shm_writer w;
	char k[16], v[40];

	if (shm_seg_create(&seg, 16ULL << 20, 1) != SHM_OK || shm_writer_open(&w, &seg, 0, 0, NULL, NULL) != SHM_OK)
		abort();
	for (int i = 0; i < NKEYS; i++) {
		int kl = sprintf(k, "k%d", i), vl = sprintf(v, "value-%d", i);
		if (shm_writer_set(&w, k, (uint32_t)kl, v, (uint32_t)vl) != SHM_OK)
			abort();
	}
	for (int i = 0; i < NKEYS; i += 3)
		shm_writer_del(&w, k, (uint32_t)sprintf(k, "k%d", i));
	shm_writer_close(&w);
	/* Everything from the shard descriptor to the end of the used chunks. */
	area_off = seg.hdr->shard_off;
	area_len = seg.hdr->chunk_base + shm_chunks_in_use(&seg) * SHM_CHUNK_SIZE - area_off;
	saved = malloc(area_len);
	memcpy(saved, seg.base + area_off, area_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct shm_shard *sh;
	uint64_t sum = 0;
	char k[16];

	if (seg.base == NULL)
		build();
	sh = shm_shard_at(&seg, 0);
	if (size % 2 == 1 && size >= 9) {
		uint64_t off;
		memcpy(&off, data + 1, sizeof(off));
		atomic_store(&sh->table_off, off);
		data += 9;
		size -= 9;
	}
	for (size_t i = 0; i + 5 <= size; i += 5) {
		uint32_t pos;
		memcpy(&pos, data + i, sizeof(pos));
		seg.base[area_off + pos % area_len] = data[i + 4];
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
