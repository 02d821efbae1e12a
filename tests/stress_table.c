/*
 * stress_table.c — the table's writer and readers as threads of one
 * process, so ThreadSanitizer can check the memory ordering of the whole
 * read path (epoch enter, table view, group match, slot, record) against
 * the writer's inserts, updates, deletes, rebuilds and reclamation.
 * `make tsan` runs it instrumented (TSan cannot follow other processes;
 * tests/test_table_xproc.c covers the same protocol across processes).
 *
 * Values carry key id, version and a CRC32C; readers check each value is
 * intact, belongs to their key, and never goes back in time.
 * Exit status 0 on success; a message and 1 on the first violation.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/crc32c.h"
#include "shm/shard.h"

#define NKEYS 2048
#define NREADERS 2
#define READS 200000

struct value {
	uint32_t key, crc;
	uint64_t version;
	uint8_t pad[64];
};

static struct shm_seg seg;
static struct shm_epoch_slot slots[NREADERS];
static _Atomic uint64_t maxver[NKEYS];
static _Atomic int readers_left = NREADERS;

static void die(const char *what, uint32_t key)
{
	fprintf(stderr, "stress_table: %s (key %u)\n", what, key);
	exit(1);
}

static uint32_t crc_of(const struct value *v, uint32_t len)
{
	return shm_crc32c(&v->version, len - offsetof(struct value, version));
}

static void *reader(void *arg)
{
	int id = (int)(intptr_t)arg;
	static _Thread_local uint64_t last[NKEYS];
	uint64_t x = 0x1234567ULL * (uint64_t)(id + 1);
	char key[16];
	struct value v;

	shm_epoch_slot_init(&slots[id], 1);
	for (int i = 0; i < READS; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t k = (uint32_t)(x % NKEYS), vlen = 0;
		int klen = sprintf(key, "k%u", k);
		struct shm_kv r;

		shm_epoch_enter(&slots[id], seg.hdr);
		int rc = shm_shard_get(&seg, shm_shard_at(&seg, 0), key, (uint32_t)klen,
				       shm_hash(key, (size_t)klen), &r);
		if (rc == SHM_OK) {
			vlen = r.vlen;
			if (vlen > sizeof(v) || vlen < offsetof(struct value, pad))
				die("bad value size", k);
			memcpy(&v, r.val, vlen);
		}
		shm_epoch_leave(&slots[id]);
		if (rc == SHM_ENOTFOUND)
			continue;
		if (rc != SHM_OK)
			die(shm_strerror(rc), k);
		if (v.key != k || v.crc != crc_of(&v, vlen))
			die("value damaged or of another key", k);
		if (v.version > atomic_load(&maxver[k]) || v.version < last[k])
			die("version out of order", k);
		last[k] = v.version;
	}
	atomic_fetch_sub(&readers_left, 1);
	return NULL;
}

static void writer(void)
{
	struct shm_writer w;
	struct shm_epoch_slot *ptrs[NREADERS];
	uint64_t x = 42, version = 0, ops = 0;
	struct value v;
	char key[16];

	if (shm_writer_open(&w, &seg, 0, 0, NULL, NULL) != SHM_OK)
		die("writer open", 0);
	for (int i = 0; i < NREADERS; i++)
		ptrs[i] = &slots[i];
	w.readers = ptrs;
	w.nreaders = NREADERS;
	if (shm_writer_set_bloom(&w, true) != SHM_OK)
		die("bloom on", 0);
	while (atomic_load(&readers_left) > 0) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t k = (uint32_t)(x % NKEYS);
		int klen = sprintf(key, "k%u", k);
		if (x % 8 == 0) {
			int rc = shm_writer_del(&w, key, (uint32_t)klen);
			if (rc != SHM_OK && rc != SHM_ENOTFOUND)
				die(shm_strerror(rc), k);
		} else {
			uint32_t len = (uint32_t)(offsetof(struct value, pad) + (version % sizeof(v.pad)));
			v.key = k;
			v.version = ++version;
			memset(v.pad, (int)version, sizeof(v.pad));
			v.crc = crc_of(&v, len);
			atomic_store(&maxver[k], version);
			if (shm_writer_set(&w, key, (uint32_t)klen, &v, len) != SHM_OK)
				die("set", k);
		}
		if (++ops % 32 == 0)
			shm_writer_reclaim(&w);
		if (ops % 20000 == 0) {
			struct shm_table *t = (struct shm_table *)(seg.base + atomic_load(&w.sh->table_off));
			if (shm_writer_rebuild(&w, t->ngroups * (ops % 40000 ? 2 : 1)) != SHM_OK)
				die("rebuild", 0);
		}
	}
	shm_writer_close(&w);
	printf("stress_table: %lu writes, %d x %d reads: ok\n", ops, NREADERS, READS);
}

int main(void)
{
	pthread_t th[NREADERS];

	if (shm_seg_create(&seg, 256ULL << 20, 1) != SHM_OK)
		die("segment", 0);
	/* The table exists before readers start. */
	struct shm_writer w0;
	if (shm_writer_open(&w0, &seg, 0, 0, NULL, NULL) != SHM_OK)
		die("writer open", 0);
	shm_writer_close(&w0);
	for (intptr_t i = 0; i < NREADERS; i++)
		pthread_create(&th[i], NULL, reader, (void *)i);
	writer();
	for (int i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	shm_seg_close(&seg);
	return 0;
}
