/*
 * test_adopt.c — a writer taking over a shard a dead writer left
 * (shm_writer_open, shard.h): what it keeps, what it frees and when.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "shm/epoch.h"
#include "shm/segment.h"
#include "shm/shard.h"

#define MiB (1ULL << 20)

static struct shm_seg seg;

static void fini(void)
{
	if (seg.base)
		shm_seg_close(&seg);
}

TestSuite(adopt, .fini = fini, .timeout = 60);

/* A table large enough to be a run of chunks (here the first chunk of
 * the pool) is kept by the next writer with its keys. */
Test(adopt, keeps_a_table_that_is_a_run_of_chunks)
{
	struct shm_writer w1, w2;
	struct shm_kv kv;
	size_t dropped = 0;

	cr_assert_eq(shm_seg_create(&seg, 256 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w1, &seg, 0, 200000, NULL, NULL), SHM_OK);
	cr_assert_eq(shm_writer_set(&w1, "k", 1, "v", 1), SHM_OK);
	/* w1 dies: its private state is simply abandoned */
	cr_assert_eq(shm_writer_open(&w2, &seg, 0, 0, NULL, &dropped), SHM_OK);
	cr_assert_eq(dropped, 0);
	cr_assert_eq(shm_writer_get(&w2, "k", 1, &kv), SHM_OK, "the key was lost by adoption");
}

static uint64_t vm_size(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0;

	cr_assert_eq(fscanf(f, "%lu", &pages), 1);
	fclose(f);
	return (uint64_t)pages * 4096;
}

/* No private memory to list what the table holds: an error, and the shard
 * as it was (its keys still readable), never an emptied shard. */
Test(adopt, no_private_memory_changes_nothing)
{
	enum { N = 200000 };
	struct shm_writer w1, w2;
	struct rlimit rl;
	struct shm_kv kv;
	char key[16];
	int rc;

#ifdef __SANITIZE_ADDRESS__
	cr_skip_test("ASan needs more address space than this RLIMIT_AS leaves");
#endif
	cr_assert_eq(shm_seg_create(&seg, 256 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w1, &seg, 0, 0, NULL, NULL), SHM_OK);
	for (int i = 0; i < N; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(shm_writer_set(&w1, key, (uint32_t)n, "v", 1), SHM_OK);
	}
	shm_writer_reclaim(&w1);
	rl.rlim_cur = rl.rlim_max = vm_size() + 3 * MiB; /* not enough for 200 k entries */
	cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
	rc = shm_writer_open(&w2, &seg, 0, 0, NULL, NULL);
	rl.rlim_cur = rl.rlim_max = RLIM_INFINITY;
	setrlimit(RLIMIT_AS, &rl);
	cr_assert_eq(rc, SHM_ESYS);
	for (int i = 0; i < N; i += 997) {
		int n = snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(shm_shard_get(&seg, shm_shard_at(&seg, 0), key, (uint32_t)n,
					   shm_hash(key, (size_t)n), &kv), SHM_OK, "%s is gone", key);
	}
}

struct opener {
	struct shm_writer w;
	struct shm_readers r;
	int rc;
	_Atomic int done;
};

static void *open_thread(void *arg)
{
	struct opener *o = arg;

	o->rc = shm_writer_open(&o->w, &seg, 0, 0, &o->r, NULL);
	atomic_store(&o->done, 1);
	return NULL;
}

/* A record that overlaps the table (damage) makes the table impossible to
 * keep: readers are told the shard has none, and nothing of the table's
 * memory is written or handed out until a reader that was inside a read
 * section (still using the table) has left. */
Test(adopt, a_table_it_cannot_keep_is_left_alone_until_readers_leave)
{
	static struct shm_epoch_slot slot;
	struct shm_epoch_slot *slots[1] = { &slot };
	struct opener o = { .r = { slots, 1, NULL, NULL } };
	struct shm_writer w1;
	struct shm_record *r = NULL;
	uint64_t toff, best = 0, bytes;
	uint8_t *before;
	pthread_t th;
	char key[16];

	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w1, &seg, 0, 0, NULL, NULL), SHM_OK);
	for (int i = 0; i < 2000; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);
		cr_assert_eq(shm_writer_set(&w1, key, (uint32_t)n, "value", 5), SHM_OK);
	}
	toff = atomic_load(&shm_shard_at(&seg, 0)->table_off);
	bytes = ((struct shm_table *)(seg.base + toff))->bytes;
	/* the last record below the table, in its chunk, made to run into it */
	for (int i = 0; i < 2000; i++) {
		struct shm_kv kv;
		int n = snprintf(key, sizeof(key), "k%d", i);
		uint64_t off;

		cr_assert_eq(shm_writer_get(&w1, key, (uint32_t)n, &kv), SHM_OK);
		off = (uint64_t)(kv.key - seg.base) - SHM_RECORD_HDR;
		if (off < toff && off > best && (off >> 21) == (toff >> 21))
			best = off;
	}
	cr_assert_neq(best, 0, "no record below the table");
	r = (struct shm_record *)(seg.base + best);
	r->vlen = (uint32_t)(toff - best) + 64;
	before = malloc(bytes);
	memcpy(before, seg.base + toff, bytes);
	shm_epoch_slot_init(&slot, getpid());
	shm_epoch_enter(&slot, seg.hdr); /* a reader inside, using the table */
	cr_assert_eq(pthread_create(&th, NULL, open_thread, &o), 0);
	usleep(300 * 1000);
	cr_assert_eq(atomic_load(&o.done), 0, "the writer did not wait for the reader");
	cr_assert_eq(atomic_load(&shm_shard_at(&seg, 0)->table_off), 0, "readers were not told first");
	cr_assert_arr_eq(seg.base + toff, before, bytes, "the table was written under the reader");
	shm_epoch_leave(&slot);
	pthread_join(th, NULL);
	cr_assert_eq(o.rc, SHM_OK);
	cr_assert_neq(atomic_load(&shm_shard_at(&seg, 0)->table_off), 0, "a new table is published");
	free(before);
}
