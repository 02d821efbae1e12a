/*
 * stress_epoch.c — epoch-based reclamation under ThreadSanitizer.
 *
 * The multi-process stress in test_epoch.c cannot be checked by TSan (it
 * sees no races between processes, and Criterion does not run under it).
 * This program runs the same scenario with threads: one writer thread keeps
 * replacing a published block (allocate, poison, fill, checksum, release
 * store of its offset, retire the old one, seal, collect) and 3 reader
 * threads keep entering an epoch, following the offset and verifying the
 * block. The writer poisons every block the moment it is freed (and again
 * when it is reallocated), so a block freed too early shows up twice: as a
 * checksum failure in the reader, and under TSan as a race between the
 * writer's poison and the reader's loads.
 *
 * Exit 0 on success; non-zero with a message on the first bad block, an
 * allocation failure, or too little progress. Runs STRESS_SECONDS seconds
 * (environment, default 3) or until MAX_WRITES, whichever comes first.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shm/epoch.h"
#include "shm/segment.h"
#include "shm/slab.h"

#include "tests/epoch_scenario.h"

#define SEG_SIZE (64ULL << 20)
#define NREADERS 3
#define MAX_WRITES 2000000ULL
#define MIN_WRITES 1000ULL
#define MIN_READS 10000ULL

static struct shm_seg seg;
static struct shm_slab *slab;
static struct shm_epoch_slot slot_mem[NREADERS];
static struct shm_epoch_slot *slots[NREADERS];
static _Atomic uint64_t *cur; /* the published offset, inside the segment */
static double seconds = 3.0;

static _Atomic int stop;
static _Atomic int failed;
static struct {
	_Alignas(64) _Atomic uint64_t reads;
} rstat[NREADERS];
static uint64_t writes, freed;
static struct shm_retire_list retired; /* the writer's; main's after join */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const char *what)
{
	int expected = 0;

	if (atomic_compare_exchange_strong(&failed, &expected, 1))
		fprintf(stderr, "stress_epoch: FAIL: %s\n", what);
	atomic_store(&stop, 1);
}

/* NULL if the block is intact, else what is wrong with it. */
static const char *blk_check(uint64_t off)
{
	const struct blk *b = shm_ptr(&seg, off, sizeof(*b));

	if (b == NULL)
		return "published offset outside the segment";
	uint64_t seq = b->seq;
	uint32_t len = b->len;
	if (len != data_len(seq) || shm_ptr(&seg, off, sizeof(*b) + len) == NULL)
		return "bad length (block freed and reused?)";
	for (uint32_t i = 0; i < len; i++)
		if (b->data[i] != data_byte(seq, i))
			return "data changed under the reader";
	if (blk_crc(b) != b->crc)
		return "checksum mismatch";
	return NULL;
}

static void *reader(void *arg)
{
	int me = (int)(intptr_t)arg;
	struct shm_epoch_slot *s = slots[me];
	uint64_t n = 0;
	char msg[160];

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		shm_epoch_enter(s, seg.hdr);
		uint64_t off = atomic_load_explicit(cur, memory_order_acquire);
		const char *bad = blk_check(off);
		/* Now and then stay inside longer, re-checking. */
		for (int k = 0; bad == NULL && (n & 255) == 0 && k < 20; k++)
			bad = blk_check(off);
		shm_epoch_leave(s);
		if (bad) {
			snprintf(msg, sizeof(msg), "reader %d, block at offset %llu: %s", me,
				 (unsigned long long)off, bad);
			fail(msg);
			break;
		}
		if ((++n & 1023) == 0)
			atomic_store_explicit(&rstat[me].reads, n, memory_order_relaxed);
	}
	atomic_store_explicit(&rstat[me].reads, n, memory_order_relaxed);
	return NULL;
}

/* A fresh block for `seq`: poisoned first, then written. 0 on failure. */
static uint64_t make_block(uint64_t seq)
{
	uint64_t size = blk_size(seq), off;

	if (shm_slab_alloc(&seg, slab, size, &off) != SHM_OK)
		return 0;
	blk_write(shm_ptr(&seg, off, size), seq);
	return off;
}

static void *writer(void *arg)
{
	struct shm_retire_list *l = &retired;
	uint64_t seq = 1;
	size_t n;
	double end = now() + seconds;

	(void)arg;
	atomic_store_explicit(cur, make_block(seq), memory_order_release);
	while (!atomic_load(&stop) && seq < MAX_WRITES) {
		uint64_t old = atomic_load_explicit(cur, memory_order_relaxed);
		uint64_t nw = make_block(++seq);
		if (nw == 0) {
			fail("slab allocation failed: memory is not being reclaimed");
			break;
		}
		atomic_store_explicit(cur, nw, memory_order_release);
		if (shm_retire_push(l, old, blk_size(seq - 1)) != SHM_OK) {
			fail("shm_retire_push: out of memory");
			break;
		}
		shm_retire_seal(l, seg.hdr);
		if (collect_and_poison(l, &seg, slab, slots, NREADERS, &n) != 0) {
			fail("out of memory");
			break;
		}
		freed += n;
		if ((seq & 255) == 0 && now() > end)
			break;
	}
	atomic_store(&stop, 1);
	writes = seq;
	return NULL;
}

int main(void)
{
	pthread_t w, r[NREADERS];
	const char *env = getenv("STRESS_SECONDS");
	uint64_t root, reads = 0;
	double start = now();

	if (env && atof(env) > 0)
		seconds = atof(env);
	if (shm_seg_create(&seg, SEG_SIZE, 1) != SHM_OK) {
		perror("stress_epoch: shm_seg_create");
		return 1;
	}
	slab = &shm_shard_at(&seg, 0)->slab;
	if (shm_slab_alloc(&seg, slab, sizeof(uint64_t), &root) != SHM_OK) {
		fprintf(stderr, "stress_epoch: cannot allocate the root\n");
		return 1;
	}
	cur = shm_ptr(&seg, root, sizeof(*cur));
	shm_retire_init(&retired);
	for (int i = 0; i < NREADERS; i++) {
		slots[i] = &slot_mem[i];
		shm_epoch_slot_init(slots[i], i + 1);
	}

	/* The writer publishes the first block before readers start. */
	atomic_store(cur, 0);
	if (pthread_create(&w, NULL, writer, NULL) != 0) {
		fprintf(stderr, "stress_epoch: pthread_create failed\n");
		return 1;
	}
	while (atomic_load_explicit(cur, memory_order_acquire) == 0 && !atomic_load(&stop))
		;
	for (int i = 0; i < NREADERS; i++)
		if (pthread_create(&r[i], NULL, reader, (void *)(intptr_t)i) != 0) {
			fprintf(stderr, "stress_epoch: pthread_create failed\n");
			return 1;
		}
	pthread_join(w, NULL);
	for (int i = 0; i < NREADERS; i++) {
		pthread_join(r[i], NULL);
		reads += atomic_load(&rstat[i].reads);
	}
	if (atomic_load(&failed))
		return 1;
	/* Every reader is idle now: whatever is still queued must go. */
	size_t n = 0;
	int rc = collect_and_poison(&retired, &seg, slab, slots, NREADERS, &n);

	freed += n;
	printf("stress_epoch: %llu writes, %llu reads, %llu freed, %d readers, %.2f s\n",
	       (unsigned long long)writes, (unsigned long long)reads, (unsigned long long)freed,
	       NREADERS, now() - start);
	if (writes < MIN_WRITES || reads < MIN_READS) {
		fprintf(stderr, "stress_epoch: FAIL: too little progress\n");
		return 1;
	}
	/* Every block retired (all but the published one) freed exactly once. */
	if (rc != 0 || retired.n != 0 || freed != writes - 1) {
		fprintf(stderr, "stress_epoch: FAIL: %llu of %llu retired blocks reclaimed, %zu queued\n",
			(unsigned long long)freed, (unsigned long long)(writes - 1), retired.n);
		return 1;
	}
	shm_retire_destroy(&retired);
	shm_seg_close(&seg);
	return 0;
}
