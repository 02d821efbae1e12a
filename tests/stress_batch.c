/*
 * stress_batch.c — atomic batches over two shards as threads of one
 * process (ThreadSanitizer: `make tsan`): one thread writes both shards
 * (each batch puts its number into key x of shard 0 and key y of shard 1
 * as intents, then commits or aborts it and resolves both parts, a
 * committed one only once shm_batch_settle_ready says so); readers read
 * x and y in one section with one start number, as amora_mget does, and
 * check they never see two batches at once (Read Atomic), never see an
 * aborted one, and never go back.
 * Exit status 0 on success; a message and 1 on the first violation.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/batch.h"
#include "shm/shard.h"

#define NREADERS 2
#define READS 300000

static struct shm_seg seg;
static struct shm_epoch_slot slots[NREADERS];
static _Atomic int readers_left = NREADERS;
static char kx[16], ky[16];

static void die(const char *what, uint64_t a, uint64_t b)
{
	fprintf(stderr, "stress_batch: %s (%lu, %lu)\n", what, (unsigned long)a, (unsigned long)b);
	exit(1);
}

/* A batch's number is odd when it aborts: readers must never see one. */
static bool aborts(uint64_t n) { return n % 3 == 2; }

static uint64_t read_one(int id, const char *k, uint64_t start)
{
	const struct shm_shard *sh = shm_shard_at(&seg, shm_shard_of(shm_hash(k, strlen(k)), 2));
	struct shm_table_view v;
	struct shm_kv kv;
	uint64_t n;
	int rc;

	(void)id;
	if ((rc = shm_shard_view(&seg, sh, &v)) != SHM_OK ||
	    (rc = shm_shard_find(&seg, sh, &v, k, (uint32_t)strlen(k), shm_hash(k, strlen(k)), start, &kv)) !=
		    SHM_OK)
		die(shm_strerror(rc), 0, 0);
	if (kv.vlen != sizeof(n))
		die("bad value size", kv.vlen, 0);
	memcpy(&n, kv.val, sizeof(n));
	return n;
}

static void *reader(void *arg)
{
	int id = (int)(intptr_t)arg;
	uint64_t last = 0;

	shm_epoch_slot_init(&slots[id], 1);
	for (int i = 0; i < READS; i++) {
		uint64_t x, y, start;
		bool y_first = i & 1;

		shm_epoch_enter(&slots[id], seg.hdr);
		start = shm_batch_start(&seg);
		if (y_first) {
			y = read_one(id, ky, start);
			x = read_one(id, kx, start);
		} else {
			x = read_one(id, kx, start);
			y = read_one(id, ky, start);
		}
		shm_epoch_leave(&slots[id]);
		if (x != y)
			die("a batch seen in part: x and y from different batches", x, y);
		if (aborts(x))
			die("an aborted batch seen", x, y);
		if (x < last)
			die("went back in time", last, x);
		last = x;
	}
	atomic_fetch_sub(&readers_left, 1);
	return NULL;
}

static void put_intent(struct shm_writer *w, const char *k, uint64_t n, uint64_t ref)
{
	struct shm_staged s;
	int rc = shm_writer_stage_intent(w, k, (uint32_t)strlen(k), shm_hash(k, strlen(k)), &n, sizeof(n), false,
					 ref, NULL, &s);

	if (rc != SHM_OK || (rc = shm_writer_publish(w, &s)) != SHM_OK)
		die(shm_strerror(rc), n, 0);
}

static void settle(struct shm_writer *w, const char *k, bool commit)
{
	struct shm_staged s;
	struct shm_kv kv;
	int rc;

	if ((rc = shm_writer_get(w, k, (uint32_t)strlen(k), &kv)) != SHM_OK ||
	    (rc = shm_writer_stage_settle(w, kv.off, commit, &s)) != SHM_OK ||
	    (rc = shm_writer_publish(w, &s)) != SHM_OK)
		die(shm_strerror(rc), 0, 0);
}

static void writer(void)
{
	struct shm_writer w[2];
	struct shm_epoch_slot *ptrs[NREADERS];
	uint64_t n = 0, waits = 0;

	for (int i = 0; i < NREADERS; i++)
		ptrs[i] = &slots[i];
	for (uint32_t s = 0; s < 2; s++) {
		if (shm_writer_open(&w[s], &seg, s, 0, NULL, NULL) != SHM_OK)
			die("writer open", s, 0);
		w[s].readers = ptrs;
		w[s].nreaders = NREADERS;
	}
	while (atomic_load(&readers_left) > 0) {
		uint64_t ref = shm_batch_ref(++n, 0, 0);
		struct shm_batch_word *bw = shm_batch_word(&seg, ref);
		bool commit = !aborts(n);

		if (!shm_batch_reusable(bw, ref) || !shm_batch_hold(bw, ref, 0) || !shm_batch_hold(bw, ref, 1))
			die("word not free", n, 0);
		put_intent(&w[0], kx, n, ref);
		put_intent(&w[1], ky, n, ref);
		if (commit) {
			uint64_t c, e;

			if (!shm_batch_begin_commit(bw, ref, 0))
				die("begin commit", n, 0);
			c = shm_batch_commit(&seg, bw, ref, 0);
			e = shm_epoch_bump(seg.hdr);
			while (!shm_batch_settle_ready(ptrs, NREADERS, shm_epoch_min(ptrs, NREADERS), e, c)) {
				waits++;
				sched_yield();
			}
		} else if (!shm_batch_abort(bw, ref, 1)) {
			die("abort", n, 0);
		}
		settle(&w[0], kx, commit);
		settle(&w[1], ky, commit);
		/* The word is reused only once no reader can hold one of the
		 * intents: a second grace (batch.h, "Resolution"). */
		shm_epoch_wait(ptrs, NREADERS, shm_epoch_bump(seg.hdr));
		shm_batch_release(bw, ref, 0);
		shm_batch_release(bw, ref, 1);
		if (n % 16 == 0) {
			shm_writer_reclaim(&w[0]);
			shm_writer_reclaim(&w[1]);
		}
	}
	shm_writer_close(&w[0]);
	shm_writer_close(&w[1]);
	printf("stress_batch: %lu batches (%lu waits for readers), %d x %d reads: ok\n", (unsigned long)n,
	       (unsigned long)waits, NREADERS, READS);
}

/* Key `name`N for the first N that lands in shard s of 2. */
static void key_for(char *out, const char *name, uint32_t s)
{
	for (int i = 0;; i++) {
		snprintf(out, 16, "%s%d", name, i);
		if (shm_shard_of(shm_hash(out, strlen(out)), 2) == s)
			return;
	}
}

int main(void)
{
	pthread_t th[NREADERS];
	uint64_t zero = 0;

	if (shm_seg_create(&seg, 256ULL << 20, 2) != SHM_OK)
		die("segment", 0, 0);
	key_for(kx, "x", 0);
	key_for(ky, "y", 1);
	/* Both keys exist, as batch 0, before readers start. */
	for (uint32_t s = 0; s < 2; s++) {
		struct shm_writer w0;
		const char *k = s == 0 ? kx : ky;

		if (shm_writer_open(&w0, &seg, s, 0, NULL, NULL) != SHM_OK ||
		    shm_writer_set(&w0, k, (uint32_t)strlen(k), &zero, sizeof(zero)) != SHM_OK)
			die("setup", s, 0);
		shm_writer_close(&w0);
	}
	for (int i = 0; i < NREADERS; i++)
		pthread_create(&th[i], NULL, reader, (void *)(intptr_t)i);
	writer();
	for (int i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	shm_seg_close(&seg);
	return 0;
}
