/*
 * workload.h — amora-bench's keys and values, made once per invocation.
 *
 * Key i is "key:%012u" (KLEN = 16 bytes). A key of another family replaces
 * the last digit with a letter: 'a'+i%10 for the keys of the sync-set and
 * delete phases, 'A'+i%10 for missing keys. Both sort between existing
 * keys, so in LMDB's B-tree they are spread over the whole tree rather
 * than appended at one end. The value of id is "val:" + 12 digits + 84
 * pseudo-random bytes seeded by id (VLEN = 100), so every sampled read can
 * be checked. The random orders come from a fixed seed: every run and
 * every invocation uses the same ones.
 *
 * The tagged keys (workload_make_tags, for the hash-tag seek row): key j
 * of tag t is "{u%06u}:%06u" (t, j), also KLEN bytes, WORKLOAD_TAG_KEYS
 * keys a tag; its value is that of id WORKLOAD_TAG_ID0 + t *
 * WORKLOAD_TAG_KEYS + j. Laid out in key order (t, then j).
 */
#ifndef AMORA_PERF_WORKLOAD_H
#define AMORA_PERF_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KLEN 16
#define VLEN 100

struct workload {
	uint64_t n;          /* KEYS: the existing keys */
	uint64_t s;          /* SYNC_KEYS: sync sets and deletes, s <= n */
	uint64_t a;          /* ALWAYS_KEYS: --sync always / LMDB durable, a <= n */
	char *keys;          /* n keys in key order */
	char *vals;          /* their values */
	char *hit_keys;      /* the n keys in random order, laid out in that order */
	uint32_t *hit_idx;   /* hit_keys[j] is key hit_idx[j] */
	char *hit_vals;      /* their values in the same order, so that the random-order
			      * inserts read their input in sequence, as the sorted ones do */
	char *miss_keys;     /* n missing keys, random */
	uint32_t *xidx;      /* s distinct numbers for the sync-set/delete keys, random order */
	uint64_t tags;       /* tags of the tagged keys (0 before workload_make_tags) */
	uint64_t t;          /* tagged keys: tags * WORKLOAD_TAG_KEYS */
	char *tag_keys;      /* the t tagged keys in key order */
	char *tag_vals;      /* their values */
};

#define WORKLOAD_TAG_KEYS 100             /* keys a tag */
#define WORKLOAD_TAG_PREFIX 10            /* bytes of "{uNNNNNN}:", a tag's prefix */
#define WORKLOAD_TAG_ID0 200000000000ull /* the value id of tagged key 0 */

static inline void workload_digits(char *dst, uint64_t v)
{
	for (int p = 11; p >= 0; p--) {
		dst[p] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* Key i of `family` (0: existing keys, 'a' or 'A': see above) into k. */
static inline void workload_key(char *k, uint64_t i, char family)
{
	memcpy(k, "key:", 4);
	workload_digits(k + 4, i);
	if (family)
		k[15] = (char)(family + i % 10);
}

static inline uint64_t workload_splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* The value of id into v (VLEN bytes). */
static inline void workload_val(char *v, uint64_t id)
{
	uint64_t st = id * 0x2545F4914F6CDD1Dull + 1, w;

	memcpy(v, "val:", 4);
	workload_digits(v + 4, id);
	for (int o = 16; o < VLEN; o += 8) {
		w = workload_splitmix(&st);
		memcpy(v + o, &w, VLEN - o < 8 ? (size_t)(VLEN - o) : 8);
	}
}

/* Tagged key j of tag t into k (KLEN bytes; t, j < 1000000). */
static inline void workload_tag_key(char *k, uint64_t t, uint64_t j)
{
	char d[12];

	k[0] = '{', k[1] = 'u';
	workload_digits(d, t);
	memcpy(k + 2, d + 6, 6);
	k[8] = '}', k[9] = ':';
	workload_digits(d, j);
	memcpy(k + 10, d + 6, 6);
}

/* Fills w for n keys, s sync keys and a always-keys (the arrays are
 * w's for the life of the program). Dies when memory runs out. */
void workload_make(struct workload *w, uint64_t n, uint64_t s, uint64_t a);

/* Makes w's tagged keys: `tags` tags (1..1000000) of WORKLOAD_TAG_KEYS
 * keys, and their values (w's for the life of the program). */
void workload_make_tags(struct workload *w, uint64_t tags);

/* Dies, naming `what` and the first differing byte, unless got[0..glen)
 * is the value of id. */
void workload_check(const char *what, uint64_t id, const char *got, size_t glen);

#endif
