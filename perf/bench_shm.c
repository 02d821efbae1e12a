/*
 * bench_shm.c — the shared-memory table, measured in one process.
 *
 * 1 M keys of 16 bytes with 100-byte values over 64 shards (the store's
 * default layout): insert, lookup hit, lookup miss with and without the
 * Bloom filter, update, delete. A lookup is what a client GET does: enter
 * the epoch, hash, find, copy the value out, leave.
 *
 * Two references run in the same invocation, so the ratios survive a noisy
 * machine:
 *   - a plain chained hash table in private memory (malloc'd nodes), the
 *     same keys and lookup order;
 *   - "two dependent random reads": for each lookup, one random 8-byte load
 *     in an array the size of the tables, whose value indexes a second
 *     random load in an array the size of the records (memfd memory, like
 *     the segment): the two misses a hit cannot avoid (slot, then record).
 *     Measured twice: serially (each key waits for the previous one: the
 *     latency of a lone GET) and overlapped (the CPU may run successive
 *     keys' loads in parallel: a bound no branchy lookup reaches).
 * Every figure is the median of RUNS runs; each run starts from an empty
 * segment.
 *
 * Usage: bench_shm [keys] [runs]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/clock.h"
#include "shm/shard.h"

#define KLEN 16
#define VLEN 100
#define SHARDS 64

static uint64_t nkeys = 1000000;
static int runs = 5;

enum phase { INSERT, HIT, MISS, MISS_BLOOM, UPDATE, DELETE, REF_HIT, REF_MISS, REF_DEP2, REF_DEP2_LAT,
	     NPHASES };
static const char *phase_name[NPHASES] = {
	"insert", "lookup hit", "lookup miss (no Bloom)", "lookup miss (Bloom)", "update",
	"delete", "chained table: hit", "chained table: miss", "2 dependent reads, overlapped",
	"2 dependent reads, serial",
};
static double results[NPHASES][16];

static double now_ns(void)
{
	return (double)shm_now_ns();
}

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static uint64_t next_rand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* keys[i] for insert order, lookup[i] a random permutation of them (laid
 * out in lookup order so reading the key is sequential), missing[i] keys
 * that were never inserted. */
static char *keys, *lookup, *missing;

static void make_keys(void)
{
	uint64_t *perm = malloc(nkeys * sizeof(*perm));
	char buf[32];

	keys = malloc(nkeys * KLEN);
	lookup = malloc(nkeys * KLEN);
	missing = malloc(nkeys * KLEN);
	for (uint64_t i = 0; i < nkeys; i++) {
		snprintf(buf, sizeof(buf), "key:%012lu", i);
		memcpy(keys + i * KLEN, buf, KLEN);
		snprintf(buf, sizeof(buf), "nah:%012lu", i);
		memcpy(missing + i * KLEN, buf, KLEN);
		perm[i] = i;
	}
	for (uint64_t i = nkeys - 1; i > 0; i--) {
		uint64_t j = next_rand() % (i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (uint64_t i = 0; i < nkeys; i++)
		memcpy(lookup + i * KLEN, keys + perm[i] * KLEN, KLEN);
	free(perm);
}

/* Every value is VLEN bytes of 'v' but for its first byte. */
#define VAL_BYTE 'v'

/* Looks up every key of ks with find (which copies a found value to out
 * and returns whether it found one); returns ns per lookup. Exits unless
 * it found all of them (expect) or none. Always inlined, so that find is
 * a direct call at each use. */
static inline __attribute__((always_inline)) double
time_gets(const char *ks, int expect, bool (*find)(void *ctx, const char *k, uint64_t h, char *out),
	  void *ctx)
{
	char out[VLEN] = {0};
	uint64_t found = 0;
	double t0 = now_ns();

	for (uint64_t i = 0; i < nkeys; i++) {
		const char *k = ks + i * KLEN;
		found += find(ctx, k, shm_hash(k, KLEN), out);
	}
	double ns = (now_ns() - t0) / (double)nkeys;
	if (found != (expect ? nkeys : 0) || (expect && out[1] != VAL_BYTE)) {
		fprintf(stderr, "lookup found %lu of %lu\n", found, nkeys);
		exit(1);
	}
	return ns;
}

/* --- Amora's table --- */

struct store {
	struct shm_seg seg;
	struct shm_writer w[SHARDS];
	struct shm_epoch_slot slot;
	struct shm_epoch_slot *slots[1];
};

static int store_open(struct store *s)
{
	if (shm_seg_create(&s->seg, 4ULL << 30, SHARDS) != SHM_OK)
		return -1;
	shm_epoch_slot_init(&s->slot, 1);
	s->slots[0] = &s->slot;
	for (int i = 0; i < SHARDS; i++) {
		if (shm_writer_open(&s->w[i], &s->seg, (uint32_t)i, nkeys / SHARDS, NULL, NULL) != SHM_OK)
			return -1;
		s->w[i].readers = s->slots;
		s->w[i].nreaders = 1;
	}
	return 0;
}

static void store_close(struct store *s)
{
	for (int i = 0; i < SHARDS; i++)
		shm_writer_close(&s->w[i]);
	shm_seg_close(&s->seg);
}

static struct shm_writer *writer_for(struct store *s, const char *k)
{
	return &s->w[shm_shard_of(shm_hash(k, KLEN), SHARDS)];
}

static double run_sets(struct store *s, const char *ks, char *val)
{
	double t0 = now_ns();
	for (uint64_t i = 0; i < nkeys; i++) {
		const char *k = ks + i * KLEN;
		val[0] = (char)i;
		if (shm_writer_set(writer_for(s, k), k, KLEN, val, VLEN) != SHM_OK) {
			fprintf(stderr, "set failed\n");
			exit(1);
		}
	}
	return (now_ns() - t0) / (double)nkeys;
}

/* What a client GET does: enter the epoch, find, copy the value, leave. */
static bool store_find(void *ctx, const char *k, uint64_t h, char *out)
{
	struct store *s = ctx;
	struct shm_kv r;
	bool found = false;

	shm_epoch_enter(&s->slot, s->seg.hdr);
	if (shm_shard_get(&s->seg, shm_shard_at(&s->seg, shm_shard_of(h, SHARDS)), k, KLEN, h, &r) == SHM_OK) {
		memcpy(out, r.val, r.vlen);
		found = true;
	}
	shm_epoch_leave(&s->slot);
	return found;
}

static double run_gets(struct store *s, const char *ks, int expect)
{
	return time_gets(ks, expect, store_find, s);
}

static void set_bloom(struct store *s, bool on)
{
	for (int i = 0; i < SHARDS; i++)
		if (shm_writer_set_bloom(&s->w[i], on) != SHM_OK) {
			fprintf(stderr, "bloom on: out of memory\n");
			exit(1);
		}
}

static double run_dels(struct store *s)
{
	double t0 = now_ns();
	for (uint64_t i = 0; i < nkeys; i++) {
		const char *k = lookup + i * KLEN;
		if (shm_writer_del(writer_for(s, k), k, KLEN) != SHM_OK) {
			fprintf(stderr, "delete failed\n");
			exit(1);
		}
	}
	return (now_ns() - t0) / (double)nkeys;
}

static uint64_t store_bytes(struct store *s)
{
	return shm_chunks_in_use(&s->seg) * SHM_CHUNK_SIZE;
}

static uint64_t table_bytes(struct store *s)
{
	uint64_t b = 0;
	for (int i = 0; i < SHARDS; i++)
		b += ((struct shm_table *)(s->seg.base + atomic_load(&s->w[i].sh->table_off)))->bytes;
	return b;
}

/* --- reference: chained hash table in private memory --- */

struct node {
	struct node *next;
	uint64_t h;
	char key[KLEN];
	char val[VLEN];
};

static struct node **buckets;
static uint64_t nbuckets;

static void chain_build(void)
{
	nbuckets = 1;
	while (nbuckets < nkeys)
		nbuckets <<= 1;
	buckets = calloc(nbuckets, sizeof(*buckets));
	for (uint64_t i = 0; i < nkeys; i++) {
		struct node *n = malloc(sizeof(*n));
		memcpy(n->key, keys + i * KLEN, KLEN);
		memset(n->val, VAL_BYTE, VLEN);
		n->h = shm_hash(n->key, KLEN);
		n->next = buckets[n->h & (nbuckets - 1)];
		buckets[n->h & (nbuckets - 1)] = n;
	}
}

static bool chain_find(void *ctx, const char *k, uint64_t h, char *out)
{
	(void)ctx;
	for (struct node *n = buckets[h & (nbuckets - 1)]; n; n = n->next)
		if (n->h == h && memcmp(n->key, k, KLEN) == 0) {
			memcpy(out, n->val, VLEN);
			return true;
		}
	return false;
}

static double chain_gets(const char *ks, int expect)
{
	return time_gets(ks, expect, chain_find, NULL);
}

/* --- reference: two dependent random reads --- */

/* Memory of the same kind as the segment (a memfd, 4 KiB pages). */
static uint64_t *memfd_array(uint64_t bytes)
{
	int fd = memfd_create("bench-ref", MFD_CLOEXEC);
	void *p;

	if (fd < 0 || ftruncate(fd, (off_t)bytes) < 0)
		exit(1);
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		exit(1);
	return p;
}

/* Per key: a random load in an array the size of the tables, whose value
 * indexes a random load in an array the size of the records. With
 * `chained`, each key's first load also depends on the previous key's
 * result, so nothing overlaps: pure latency. Without, successive keys may
 * overlap in the CPU, as successive lookups can. */
static double dep2(uint64_t first_bytes, uint64_t second_bytes, bool chained)
{
	uint64_t n1 = first_bytes / 8, n2 = second_bytes / 8, prev = 0;
	uint64_t *a = memfd_array(n1 * 8), *b = memfd_array(n2 * 8);

	for (uint64_t i = 0; i < n1; i++)
		a[i] = next_rand() % n2;
	for (uint64_t i = 0; i < n2; i++)
		b[i] = i & 1;
	double t0 = now_ns();
	for (uint64_t i = 0; i < nkeys; i++) {
		uint64_t h = shm_hash(lookup + i * KLEN, KLEN) + (chained ? prev : 0);
		prev += b[a[h % n1]];
	}
	double ns = (now_ns() - t0) / (double)nkeys;
	if (prev == 42)
		printf(" ");
	munmap(a, n1 * 8);
	munmap(b, n2 * 8);
	return ns;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(enum phase p)
{
	double v[16];
	memcpy(v, results[p], sizeof(double) * (size_t)runs);
	qsort(v, (size_t)runs, sizeof(double), cmp_double);
	return v[runs / 2];
}

int main(int argc, char **argv)
{
	char val[VLEN];
	uint64_t tbytes = 0, sbytes = 0;

	if (argc > 1)
		nkeys = strtoull(argv[1], NULL, 10);
	if (argc > 2)
		runs = atoi(argv[2]);
	if (nkeys < 1000 || runs < 1 || runs > 16) {
		fprintf(stderr, "usage: bench_shm [keys >= 1000] [runs 1..16]\n");
		return 2;
	}
	memset(val, VAL_BYTE, sizeof(val));
	make_keys();
	chain_build();

	for (int r = 0; r < runs; r++) {
		static struct store s;
		if (store_open(&s) != 0) {
			fprintf(stderr, "cannot create the segment\n");
			return 1;
		}
		results[INSERT][r] = run_sets(&s, keys, val);
		set_bloom(&s, false);
		results[HIT][r] = run_gets(&s, lookup, 1);
		results[MISS][r] = run_gets(&s, missing, 0);
		set_bloom(&s, true);
		results[MISS_BLOOM][r] = run_gets(&s, missing, 0);
		results[UPDATE][r] = run_sets(&s, lookup, val);
		tbytes = table_bytes(&s);
		sbytes = store_bytes(&s);
		results[DELETE][r] = run_dels(&s);
		store_close(&s);
		results[REF_HIT][r] = chain_gets(lookup, 1);
		results[REF_MISS][r] = chain_gets(missing, 0);
		results[REF_DEP2][r] = dep2(tbytes, sbytes - tbytes, false);
		results[REF_DEP2_LAT][r] = dep2(tbytes, sbytes - tbytes, true);
	}

	printf("shm table: %lu keys, %d-byte keys, %d-byte values, %d shards, median of %d runs\n",
	       nkeys, KLEN, VLEN, SHARDS, runs);
	printf("segment in use %.1f MiB (tables %.1f MiB); read sections %s\n\n", sbytes / 1048576.0,
	       tbytes / 1048576.0, shm_epoch_fence_free() ? "fence-free (membarrier)" : "with a CPU fence");
	printf("%-30s %10s %12s\n", "phase", "ns/op", "ops/s");
	for (int p = 0; p < NPHASES; p++) {
		double m = median(p);
		printf("%-30s %10.1f %12.0f\n", phase_name[p], m, 1e9 / m);
	}
	printf("\nratios (lower is better for Amora)\n");
	printf("  hit  / chained hit           %.2f\n", median(HIT) / median(REF_HIT));
	printf("  miss / chained miss          %.2f\n", median(MISS) / median(REF_MISS));
	printf("  hit  / 2 dep. reads, serial  %.2f   (target <= 1.5)\n", median(HIT) / median(REF_DEP2_LAT));
	printf("  hit  / 2 dep. reads, overlap %.2f\n", median(HIT) / median(REF_DEP2));
	printf("  miss with Bloom / without    %.2f\n", median(MISS_BLOOM) / median(MISS));
	return 0;
}
