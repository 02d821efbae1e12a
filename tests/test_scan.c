/*
 * test_scan.c — scans (amora.h, "Scans"; libclient/scan.c) against a real
 * amorad whose shards keep the sorted index:
 *   - bounds: every kind of range (prefix, inclusive/exclusive/open ends,
 *     reverse, limit, keys_only) compared entry by entry with a model of
 *     a static store, over binary keys (0x00 and 0xff bytes, shared
 *     prefixes, hash tags, 1 to 4096 bytes) with one shard left empty;
 *     the edge cases (start == end, start > end, a prefix of 0xff bytes,
 *     a prefix longer than any key, an empty store, limit 0 and 1),
 *     amora_has_prefix and amora_count;
 *   - --sorted-index off: AMORA_ENOTSUP with its message;
 *   - a writer process inserting, updating and deleting while two reader
 *     processes scan random ranges forward and reverse, checking the
 *     guarantee: strict order, in range, every value one the key had
 *     (id, version, CRC32C), every stable key in range returned;
 *   - a scan across kill -9 of a shard and of amorad;
 *   - a 200 K-entry scan whose consumer sleeps while a writer churns:
 *     memory is reclaimed meanwhile and the handle is not cut off;
 *   - the CLI's scan, range and count, escaping included.
 */
#include <poll.h>
#include <stdlib.h>

#include "shm/crc32c.h"
#include "shm/record.h"
#include "shm/shard.h"
#include "tests/proc.h"

TestSuite(scan, .init = proc_init, .fini = proc_fini, .timeout = 240);

/* ---------- keys and values ---------- */

#define ID_MAX 6000

/* The key order, written out byte by byte (the model's own, not the
 * library's memcmp). */
static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	const uint8_t *x = a, *y = b;

	for (size_t i = 0; i < alen && i < blen; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return alen < blen ? -1 : alen > blen;
}

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Key of id (injective): ids below 256 are the 1-byte key {id}; the others
 * a kind's prefix, the id big-endian, filler. Kinds: a hash tag "{tN}:",
 * 0x00 bytes, long keys (up to 4096 bytes), "user:", 0xff bytes, "u". */
static size_t key_of(uint8_t *k, uint32_t id)
{
	uint64_t h = mix(id);
	size_t n = 0, fill = 0;
	uint8_t fb = 'x';

	if (id < 256) {
		k[0] = (uint8_t)id;
		return 1;
	}
	switch (id % 6) {
	case 0:
		n = (size_t)sprintf((char *)k, "{t%u}:", (unsigned)(h % 5));
		fill = h >> 40 & 15;
		break;
	case 1:
		k[n++] = 0, k[n++] = 0;
		fill = h >> 40 & 7;
		fb = (h >> 50 & 1) ? 0xff : 0;
		break;
	case 2:
		memcpy(k, "long/", 5), n = 5;
		fill = (id / 6) % 7 == 0 ? AMORA_KEY_MAX - 9 : 100 + (h >> 32) % 1500;
		fb = 'L';
		break;
	case 3:
		memcpy(k, "user:", 5), n = 5;
		break;
	case 4:
		k[n++] = 0xff, k[n++] = 0xff;
		fill = h >> 40 & 31;
		fb = 0xff;
		break;
	default:
		k[n++] = 'u';
		fill = h >> 40 & 3;
		break;
	}
	put_be32(k + n, id);
	n += 4;
	memset(k + n, fb, fill);
	return n + fill;
}

/* A value: id, version, CRC32C of what follows the crc, filler. */
struct val_hdr {
	uint32_t id, ver, crc;
};

static size_t val_of(uint8_t *v, uint32_t id, uint32_t ver)
{
	uint64_t h = mix((uint64_t)id << 32 | ver);
	size_t len = sizeof(struct val_hdr) + (h % 7 == 0 ? h >> 8 & 2047 : h >> 8 & 63);
	struct val_hdr vh = { id, ver, 0 };

	for (size_t i = sizeof(vh); i < len; i++)
		v[i] = (uint8_t)(h >> (i % 7 * 8)) ^ (uint8_t)i;
	memcpy(v, &vh, sizeof(vh));
	vh.crc = shm_crc32c_extend(shm_crc32c(&vh.ver, 4), v + sizeof(vh), len - sizeof(vh));
	memcpy(v, &vh, sizeof(vh));
	return len;
}

/* The id of a value written by val_of for key k, or -1 with *why. */
static long val_check(const uint8_t *k, size_t kl, const void *v, size_t vl, const char **why)
{
	uint8_t want[AMORA_KEY_MAX];
	struct val_hdr vh;

	if (vl < sizeof(vh))
		return *why = "value too short", -1;
	memcpy(&vh, v, sizeof(vh));
	if (vh.crc != shm_crc32c_extend(shm_crc32c(&vh.ver, 4), (const uint8_t *)v + sizeof(vh), vl - sizeof(vh)))
		return *why = "value's CRC32C is wrong", -1;
	if (vh.id >= ID_MAX || key_cmp(want, key_of(want, vh.id), k, kl) != 0)
		return *why = "value belongs to another key", -1;
	return vh.id;
}

/* ---------- ranges and a model ---------- */

struct rng {
	const uint8_t *prefix, *start, *end;
	size_t plen, slen, elen;
	int smode, emode;
};

static bool in_range(const struct rng *r, const uint8_t *k, size_t kl)
{
	int c;

	if (r->plen && (kl < r->plen || memcmp(k, r->prefix, r->plen) != 0))
		return false;
	if (r->smode) {
		c = key_cmp(k, kl, r->start, r->slen);
		if (c < 0 || (c == 0 && r->smode == AMORA_BOUND_EXCLUSIVE))
			return false;
	}
	if (r->emode) {
		c = key_cmp(k, kl, r->end, r->elen);
		if (c > 0 || (c == 0 && r->emode == AMORA_BOUND_EXCLUSIVE))
			return false;
	}
	return true;
}

static struct amora_range to_range(const struct rng *r, int reverse, uint64_t limit, int keys_only)
{
	return (struct amora_range){ .prefix = r->prefix, .prefix_len = r->plen, .start = r->start,
				     .start_len = r->slen, .start_mode = r->smode, .end = r->end,
				     .end_len = r->elen, .end_mode = r->emode, .reverse = reverse,
				     .limit = limit, .keys_only = keys_only };
}

/* Buffers for a random range's keys. */
struct rng_buf {
	uint8_t p[AMORA_KEY_MAX], s[AMORA_KEY_MAX], e[AMORA_KEY_MAX];
};

/* A random bound key: a key of some id, cut or not, or a few random bytes. */
static size_t rand_key(uint8_t *b, unsigned *seed)
{
	size_t n;

	if (rand_r(seed) % 4 == 0) {
		n = 1 + (size_t)rand_r(seed) % 3;
		for (size_t i = 0; i < n; i++)
			b[i] = (uint8_t)(rand_r(seed) % 3 == 0 ? (rand_r(seed) % 2 ? 0xff : 0) : rand_r(seed));
		return n;
	}
	n = key_of(b, (uint32_t)rand_r(seed) % ID_MAX);
	if (rand_r(seed) % 2)
		n = 1 + (size_t)rand_r(seed) % n;
	return n;
}

static void rand_range(struct rng *r, struct rng_buf *b, unsigned *seed)
{
	static const char *const prefixes[] = { "{t1}", "{t3}:", "user:", "u", "\xff", "\xff\xff\xff\xff\xff\xff",
						"long/", "zzz" };

	memset(r, 0, sizeof(*r));
	switch (rand_r(seed) % 4) {
	case 0:
		break;
	case 1: {
		const char *p = prefixes[rand_r(seed) % 8];

		r->plen = strlen(p);
		memcpy(b->p, p, r->plen);
		r->prefix = b->p;
		break;
	}
	default:
		r->plen = rand_key(b->p, seed);
		if (r->plen > 6)
			r->plen = 1 + (size_t)rand_r(seed) % 6;
		r->prefix = b->p;
	}
	if (rand_r(seed) % 3) {
		r->smode = rand_r(seed) % 3;
		r->slen = rand_key(b->s, seed);
		r->start = b->s;
	}
	if (rand_r(seed) % 3) {
		r->emode = rand_r(seed) % 3;
		r->elen = rand_key(b->e, seed);
		r->end = b->e;
	}
	if (r->smode && r->emode && key_cmp(r->start, r->slen, r->end, r->elen) > 0) {
		const uint8_t *t = r->start;
		size_t tl = r->slen;

		r->start = r->end, r->slen = r->elen;
		r->end = t, r->elen = tl;
	}
}

/* The model of a static store: present ids sorted by key. */
static struct {
	uint32_t id;
	uint16_t klen;
	uint8_t *key;
} model[ID_MAX];
static size_t model_n;

static int model_order(const void *a, const void *b)
{
	const __typeof__(model[0]) *x = a, *y = b;

	return key_cmp(x->key, x->klen, y->key, y->klen);
}

static void model_add(uint32_t id)
{
	uint8_t k[AMORA_KEY_MAX];
	size_t kl = key_of(k, id);

	model[model_n].id = id;
	model[model_n].klen = (uint16_t)kl;
	model[model_n].key = malloc(kl);
	memcpy(model[model_n].key, k, kl);
	model_n++;
}

/* Write every id of the model (version 1), buffered. */
static void model_write(amora *db)
{
	uint8_t k[AMORA_KEY_MAX], v[4096];

	for (size_t i = 0; i < model_n; i++) {
		size_t kl = key_of(k, model[i].id), vl = val_of(v, model[i].id, 1);

		cr_assert_eq(amora_set_buffered(db, k, kl, v, vl), AMORA_OK, "%s", amora_errmsg(db));
	}
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	qsort(model, model_n, sizeof(model[0]), model_order);
}

/* Scan r on db and compare with the model, entry by entry. */
static void check_against_model(amora *db, const struct rng *r, int reverse, uint64_t limit, int keys_only,
				const char *what)
{
	struct amora_range ar = to_range(r, reverse, limit, keys_only);
	uint8_t v[4096];
	amora_iter *it;
	uint64_t got = 0, want = 0, n;
	int rc = amora_iter_open(db, &ar, &it);

	cr_assert_eq(rc, AMORA_OK, "%s: open: %s: %s", what, amora_strerror(rc), amora_errmsg(db));
	for (size_t j = 0; j < model_n; j++) {
		size_t i = reverse ? model_n - 1 - j : j;
		const void *k, *val;
		size_t kl, vl;

		if (!in_range(r, model[i].key, model[i].klen))
			continue;
		if (limit && want == limit)
			break;
		want++;
		rc = amora_iter_next(it, &k, &kl, &val, &vl);
		cr_assert_eq(rc, 1, "%s: entry %llu: %d %s (model: id %u)", what, (unsigned long long)got, rc,
			     amora_errmsg(db), model[i].id);
		got++;
		cr_assert_eq(key_cmp(k, kl, model[i].key, model[i].klen), 0,
			     "%s: entry %llu is not the model's key (id %u, %zu bytes; got %zu bytes)", what,
			     (unsigned long long)got, model[i].id, (size_t)model[i].klen, kl);
		if (keys_only) {
			cr_assert(val == NULL && vl == 0, "%s: keys_only gave a value", what);
		} else {
			size_t wl = val_of(v, model[i].id, 1);

			cr_assert(vl == wl && memcmp(val, v, wl) == 0, "%s: wrong value for id %u", what, model[i].id);
		}
	}
	{
		const void *k;
		size_t kl;

		rc = amora_iter_next(it, &k, &kl, NULL, NULL);
		cr_assert_eq(rc, 0, "%s: an entry past the model's %llu (%d: %s)", what, (unsigned long long)want,
			     rc, amora_errmsg(db));
		cr_assert_eq(amora_iter_next(it, &k, &kl, NULL, NULL), 0, "%s: the end does not stay", what);
	}
	amora_iter_close(it);
	rc = amora_count(db, &ar, &n);
	cr_assert(rc == AMORA_OK && n == want, "%s: count %llu, model %llu (%s)", what, (unsigned long long)n,
		  (unsigned long long)want, amora_errmsg(db));
}

/* Number of entries a scan of ar gives (failing the test on an error). */
static uint64_t scan_n(amora *db, const struct amora_range *ar)
{
	const void *k;
	size_t kl;
	uint64_t n = 0;
	amora_iter *it;
	int rc = amora_iter_open(db, ar, &it);

	cr_assert_eq(rc, AMORA_OK, "open: %s", amora_errmsg(db));
	while ((rc = amora_iter_next(it, &k, &kl, NULL, NULL)) == 1)
		n++;
	cr_assert_eq(rc, 0, "next: %s: %s", amora_strerror(rc), amora_errmsg(db));
	amora_iter_close(it);
	return n;
}

/* ---------- bounds ---------- */

Test(scan, an_empty_store_scans_nothing)
{
	struct amora_range all = { 0 }, rev = { .reverse = 1 }, pre = { .prefix = "a", .prefix_len = 1 };
	uint64_t n = 7;
	amora *db;

	proc_start(&D, "--shards", "4", "--memory", "64M", "--sync", "none", NULL);
	db = proc_open();
	cr_assert_eq(scan_n(db, NULL), 0);
	cr_assert_eq(scan_n(db, &all), 0);
	cr_assert_eq(scan_n(db, &rev), 0);
	cr_assert_eq(scan_n(db, &pre), 0);
	cr_assert_eq(amora_has_prefix(db, "", 0), 0);
	cr_assert_eq(amora_has_prefix(db, "a", 1), 0);
	cr_assert_eq(amora_count(db, NULL, &n), AMORA_OK);
	cr_assert_eq(n, 0);
	amora_close(db);
}

Test(scan, ranges_match_a_model_of_the_store)
{
	uint8_t k[AMORA_KEY_MAX];
	unsigned seed = 11;
	struct amora_shard_stats ss;
	struct rng_buf b;
	struct rng r;
	amora *db;

	proc_start(&D, "--shards", "4", "--memory", "128M", "--sync", "none", NULL);
	db = proc_open();
	/* Every id whose key is not placed in shard 3 (it stays empty). */
	for (uint32_t id = 0; id < ID_MAX; id++) {
		size_t kl = key_of(k, id);

		if (shm_place(k, kl, shm_hash(k, kl), 4, SHM_PLACE_TAGS) != 3)
			model_add(id);
	}
	model_write(db);
	cr_assert_eq(amora_shard_stats(db, 3, &ss, sizeof(ss)), AMORA_OK);
	cr_assert_eq(ss.keys, 0, "shard 3 holds %llu keys", (unsigned long long)ss.keys);

	memset(&r, 0, sizeof(r));
	check_against_model(db, &r, 0, 0, 0, "every key");
	check_against_model(db, &r, 1, 0, 0, "every key, reverse");
	check_against_model(db, &r, 0, 1, 0, "limit 1");
	check_against_model(db, &r, 1, 1, 1, "limit 1, reverse, keys only");
	check_against_model(db, &r, 0, 0, 1, "keys only");
	for (int i = 0; i < 1500; i++) {
		char what[64];
		int reverse = rand_r(&seed) % 2, keys_only = rand_r(&seed) % 4 == 0;
		uint64_t limit = rand_r(&seed) % 4 == 0 ? (uint64_t)(rand_r(&seed) % 300) : 0;

		rand_range(&r, &b, &seed);
		snprintf(what, sizeof(what), "random range %d", i);
		check_against_model(db, &r, reverse, limit, keys_only, what);
	}
	amora_close(db);
}

Test(scan, edge_cases_of_bounds_and_prefixes)
{
	static const uint8_t ff[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t k[AMORA_KEY_MAX], k2[AMORA_KEY_MAX], longp[AMORA_KEY_MAX];
	struct amora_range ar;
	amora_iter *it = (amora_iter *)&ar;
	uint64_t n;
	size_t kl, k2l;
	struct rng r;
	amora *db;

	proc_start(&D, "--shards", "8", "--memory", "128M", "--sync", "none", NULL);
	db = proc_open();
	for (uint32_t id = 0; id < ID_MAX; id += 5) /* every kind of key: 5 and 6 are coprime */
		model_add(id);
	model_write(db);

	/* start == end: inclusive gives that key, exclusive nothing. */
	kl = key_of(k, 305);
	memset(&r, 0, sizeof(r));
	r.start = r.end = k, r.slen = r.elen = kl;
	r.smode = r.emode = AMORA_BOUND_INCLUSIVE;
	ar = to_range(&r, 0, 0, 0);
	cr_assert_eq(scan_n(db, &ar), 1);
	ar.reverse = 1;
	cr_assert_eq(scan_n(db, &ar), 1);
	check_against_model(db, &r, 0, 0, 0, "start == end, inclusive");
	r.emode = AMORA_BOUND_EXCLUSIVE;
	check_against_model(db, &r, 0, 0, 0, "start == end, end exclusive");
	ar = to_range(&r, 1, 0, 0);
	cr_assert_eq(scan_n(db, &ar), 0);
	r.smode = AMORA_BOUND_EXCLUSIVE, r.emode = AMORA_BOUND_INCLUSIVE;
	check_against_model(db, &r, 1, 0, 0, "start == end, start exclusive");

	/* start > end: AMORA_EINVAL, *out NULL. */
	k2l = key_of(k2, 3000);
	ar = (struct amora_range){ .start = k2, .start_len = k2l, .start_mode = AMORA_BOUND_INCLUSIVE,
				   .end = k, .end_len = kl, .end_mode = AMORA_BOUND_INCLUSIVE };
	if (key_cmp(k2, k2l, k, kl) < 0) {
		ar.start = k, ar.start_len = kl;
		ar.end = k2, ar.end_len = k2l;
	}
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_EINVAL);
	cr_assert_null(it);
	cr_assert(strstr(amora_errmsg(db), "start is after end"), "%s", amora_errmsg(db));
	ar.start_mode = AMORA_BOUND_EXCLUSIVE;
	cr_assert_eq(amora_count(db, &ar, &n), AMORA_EINVAL);
	/* ... but a prefix outside the bounds is only empty. */
	ar = (struct amora_range){ .prefix = "user:", .prefix_len = 5, .start = "v", .start_len = 1,
				   .start_mode = AMORA_BOUND_INCLUSIVE };
	cr_assert_eq(scan_n(db, &ar), 0);

	/* Other argument errors. */
	ar = (struct amora_range){ .start_mode = 3 };
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_EINVAL);
	ar = (struct amora_range){ .end_mode = -1 };
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_EINVAL);
	ar = (struct amora_range){ .prefix = longp, .prefix_len = AMORA_KEY_MAX + 1 };
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_EINVAL);
	ar = (struct amora_range){ .start = k, .start_len = AMORA_KEY_MAX + 1, .start_mode = 1 };
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_EINVAL);
	ar = (struct amora_range){ .prefix = NULL, .prefix_len = 3 };
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_EINVAL);
	cr_assert_eq(amora_iter_open(db, NULL, NULL), AMORA_EINVAL);
	cr_assert_eq(amora_iter_open(NULL, NULL, &it), AMORA_EINVAL);
	cr_assert_eq(amora_has_prefix(db, NULL, 2), AMORA_EINVAL);
	cr_assert_eq(amora_count(db, NULL, NULL), AMORA_EINVAL);
	/* An open end ignores its key, NULL with a length included. */
	ar = (struct amora_range){ .end = NULL, .end_len = 9, .end_mode = AMORA_BOUND_OPEN };
	cr_assert_eq(scan_n(db, &ar), model_n);

	/* Prefixes of 0xff bytes (no successor: no upper bound) and longer
	 * than any key. */
	for (size_t l = 1; l <= sizeof(ff); l++) {
		char what[48];

		memset(&r, 0, sizeof(r));
		r.prefix = ff, r.plen = l;
		snprintf(what, sizeof(what), "prefix of %zu 0xff bytes", l);
		check_against_model(db, &r, 0, 0, 0, what);
		check_against_model(db, &r, 1, 0, 0, what);
	}
	memset(longp, 'L', sizeof(longp));
	memcpy(longp, "long/", 5);
	memset(&r, 0, sizeof(r));
	r.prefix = longp, r.plen = AMORA_KEY_MAX;
	check_against_model(db, &r, 0, 0, 0, "a 4096-byte prefix no key has");
	kl = key_of(k, 380); /* the longest key: 4096 bytes */
	cr_assert_eq(kl, AMORA_KEY_MAX);
	r.prefix = k, r.plen = kl;
	check_against_model(db, &r, 0, 0, 0, "a whole 4096-byte key as prefix");
	check_against_model(db, &r, 1, 0, 0, "a whole 4096-byte key as prefix, reverse");
	cr_assert_eq(amora_has_prefix(db, k, kl), 1);
	kl = key_of(k, 290); /* a long key */
	r.prefix = k, r.plen = kl;
	check_against_model(db, &r, 0, 0, 0, "a whole long key as prefix");
	cr_assert_eq(amora_has_prefix(db, k, kl), 1);
	k[kl] = 0;
	r.plen = kl + 1;
	check_against_model(db, &r, 0, 0, 0, "a prefix longer than any key it starts");
	cr_assert_eq(amora_has_prefix(db, k, kl + 1), 0, "a prefix longer than the key");
	cr_assert_eq(amora_has_prefix(db, "user:", 5), 1);
	cr_assert_eq(amora_has_prefix(db, "user;", 5), 0);
	cr_assert_eq(amora_has_prefix(db, "", 0), 1);
	cr_assert_eq(amora_has_prefix(db, "\xff\xff\xff\xff\xff\xff\xff", 7), 0);

	/* A tag's prefix (one shard) and a cut tag (every shard). */
	memset(&r, 0, sizeof(r));
	r.prefix = (const uint8_t *)"{t2}", r.plen = 4;
	check_against_model(db, &r, 0, 0, 0, "a whole tag as prefix");
	r.prefix = (const uint8_t *)"{t2", r.plen = 3;
	check_against_model(db, &r, 1, 0, 0, "a cut tag as prefix");

	/* limit 0 is no limit; limit 1 one entry; count. */
	ar = (struct amora_range){ .limit = 0 };
	cr_assert_eq(scan_n(db, &ar), model_n);
	ar.limit = 1;
	cr_assert_eq(scan_n(db, &ar), 1);
	cr_assert_eq(amora_count(db, NULL, &n), AMORA_OK);
	cr_assert_eq(n, model_n);
	amora_close(db);
}

Test(scan, without_a_sorted_index_scans_are_not_supported)
{
	char out[512];
	amora_iter *it;
	uint64_t n;
	amora *db;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--sorted-index", "off", NULL);
	db = proc_open();
	cr_assert_eq(amora_set(db, "a", 1, "1", 1), AMORA_OK);
	cr_assert_eq(amora_iter_open(db, NULL, &it), AMORA_ENOTSUP);
	cr_assert_null(it);
	cr_assert_str_eq(amora_errmsg(db), "the store runs without a sorted index (amorad --sorted-index off)");
	cr_assert_str_eq(amora_strerror(AMORA_ENOTSUP), "not supported by this store");
	cr_assert_eq(amora_has_prefix(db, "a", 1), AMORA_ENOTSUP);
	cr_assert_eq(amora_count(db, NULL, &n), AMORA_ENOTSUP);
	cr_assert_eq(proc_cli(out, sizeof(out), "scan '' 2>&1"), 2);
	cr_assert(strstr(out, "amora: scan: not supported by this store: the store runs without a sorted index"),
		  "%s", out);
	amora_close(db);
}

/* ---------- the guarantee under writes ---------- */

#define STABLE 1500         /* ids 0..STABLE-1: written first, updated, never deleted */
#define MC_IDS 4000
#define MC_SCANS 800

/* A child process's handle, or its exit. */
static amora *child_open(const char *sock)
{
	amora *db;

	if (amora_open(sock, &db) != AMORA_OK) {
		fprintf(stderr, "child: open: %s\n", amora_errmsg(NULL));
		_exit(1);
	}
	return db;
}

/* The writer: random sets (new versions) and deletes until killed; a
 * stable id is only ever set. Exits 1 on a failure. */
static void mc_writer(const char *sock, unsigned seed)
{
	uint8_t k[AMORA_KEY_MAX], v[4096];
	uint32_t ver = 2;
	amora *db = child_open(sock);

	for (;;) {
		for (int i = 0; i < 64; i++) {
			uint32_t id = (uint32_t)rand_r(&seed) % MC_IDS;
			size_t kl = key_of(k, id);
			int rc;

			if (id >= STABLE && rand_r(&seed) % 3 == 0) {
				rc = amora_del(db, k, kl);
				if (rc == AMORA_ENOTFOUND)
					rc = AMORA_OK;
			} else {
				rc = amora_set_buffered(db, k, kl, v, val_of(v, id, ver++));
			}
			if (rc != AMORA_OK) {
				fprintf(stderr, "writer: %s: %s\n", amora_strerror(rc), amora_errmsg(db));
				_exit(1);
			}
		}
		if (amora_flush(db) != AMORA_OK) {
			fprintf(stderr, "writer: flush: %s\n", amora_errmsg(db));
			_exit(1);
		}
	}
}

/* A reader: random scans, each checked. Exits 0, or 1 with a message. */
static void mc_reader(const char *sock, unsigned seed)
{
	static uint8_t seen[MC_IDS], stable_keys[STABLE][AMORA_KEY_MAX];
	static size_t stable_len[STABLE];
	uint8_t last[AMORA_KEY_MAX];
	amora *db = child_open(sock);

	for (uint32_t id = 0; id < STABLE; id++)
		stable_len[id] = key_of(stable_keys[id], id);
	for (int s = 0; s < MC_SCANS; s++) {
		struct rng_buf b;
		struct rng r;
		int reverse = rand_r(&seed) % 2, slow = rand_r(&seed) % 3 == 0;
		uint64_t limit = rand_r(&seed) % 5 == 0 ? 1 + (uint64_t)(rand_r(&seed) % 500) : 0, n = 0;
		struct amora_range ar;
		size_t last_len = 0;
		const void *k, *v;
		size_t kl, vl;
		amora_iter *it;
		int rc;

		rand_range(&r, &b, &seed);
		if (s % 10 == 0)
			memset(&r, 0, sizeof(r)); /* now and then everything */
		ar = to_range(&r, reverse, limit, 0);
		memset(seen, 0, sizeof(seen));
		if ((rc = amora_iter_open(db, &ar, &it)) != AMORA_OK) {
			fprintf(stderr, "reader: open: %s\n", amora_errmsg(db));
			_exit(1);
		}
		while ((rc = amora_iter_next(it, &k, &kl, &v, &vl)) == 1) {
			const char *why = NULL;
			long id = val_check(k, kl, v, vl, &why);

			if (id < 0 || id >= MC_IDS)
				break;
			if (!in_range(&r, k, kl))
				why = "a key out of range";
			else if (n > 0 && (reverse ? key_cmp(k, kl, last, last_len) >= 0
						   : key_cmp(k, kl, last, last_len) <= 0))
				why = "keys out of order (or twice)";
			else if (seen[id]++)
				why = "an id twice";
			if (why) {
				fprintf(stderr, "reader: scan %d entry %llu: %s\n", s, (unsigned long long)n, why);
				_exit(1);
			}
			memcpy(last, k, kl);
			last_len = kl;
			if (++n % 200 == 0 && slow)
				usleep(500); /* the writer deletes and frees meanwhile */
		}
		if (rc != 0) {
			const char *why = NULL;

			if (rc == 1)
				val_check(k, kl, v, vl, &why);
			fprintf(stderr, "reader: scan %d entry %llu: %s %s\n", s, (unsigned long long)n,
				rc == 1 ? why : amora_strerror(rc), rc == 1 ? "" : amora_errmsg(db));
			_exit(1);
		}
		amora_iter_close(it);
		if (limit && n > limit) {
			fprintf(stderr, "reader: scan %d: %llu entries over limit %llu\n", s, (unsigned long long)n,
				(unsigned long long)limit);
			_exit(1);
		}
		/* Every stable key in range (and, if the limit stopped the scan,
		 * not beyond where it stopped) was returned. */
		for (uint32_t id = 0; id < STABLE; id++) {
			const uint8_t *sk = stable_keys[id];
			size_t sl = stable_len[id];

			if (seen[id] || !in_range(&r, sk, sl))
				continue;
			if (limit && n == limit &&
			    (reverse ? key_cmp(sk, sl, last, last_len) < 0 : key_cmp(sk, sl, last, last_len) > 0))
				continue;
			fprintf(stderr, "reader: scan %d (%s, %llu entries) missed stable id %u\n", s,
				reverse ? "reverse" : "forward", (unsigned long long)n, id);
			_exit(1);
		}
	}
	amora_close(db);
	_exit(0);
}

static pid_t fork_child(void (*fn)(const char *, unsigned), unsigned seed)
{
	pid_t pid = fork();

	cr_assert(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fn(D.sock, seed);
		_exit(1);
	}
	return pid;
}

Test(scan, concurrent_scans_keep_the_guarantee_under_writes)
{
	uint8_t k[AMORA_KEY_MAX], v[4096];
	pid_t w, r[2];
	int status;
	amora *db;

	proc_start(&D, "--shards", "8", "--memory", "256M", "--sync", "none", NULL);
	db = proc_open();
	for (uint32_t id = 0; id < MC_IDS; id++) {
		size_t kl = key_of(k, id);

		if (id < STABLE || id % 2)
			cr_assert_eq(amora_set_buffered(db, k, kl, v, val_of(v, id, 1)), AMORA_OK);
	}
	cr_assert_eq(amora_flush(db), AMORA_OK);
	w = fork_child(mc_writer, 7);
	r[0] = fork_child(mc_reader, 1);
	r[1] = fork_child(mc_reader, 2);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(waitpid(r[i], &status, 0), r[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reader %d failed (status %d)", i, status);
	}
	cr_assert_eq(waitpid(w, &status, WNOHANG), 0, "the writer stopped (status %d)", status);
	kill(w, SIGKILL);
	waitpid(w, &status, 0);
	amora_close(db);
}

/* ---------- restarts ---------- */

#define KR_KEYS 20000

/* Start amorad (4 shards) and write KR_KEYS keys; the handle. */
static amora *kr_load(void)
{
	char k[32], v[128];
	amora *db;

	proc_start(&D, "--shards", "4", "--memory", "128M", "--sync", "none", NULL);
	db = proc_open();

	for (int i = 0; i < KR_KEYS; i++)
		cr_assert_eq(amora_set_buffered(db, k, (size_t)proc_key(k, "k", i), v, (size_t)proc_val(v, i, 1)),
			     AMORA_OK);
	cr_assert_eq(amora_flush(db), AMORA_OK);
	return db;
}

/* Scan every key, calling at(i) before entry i; check each is there once
 * in order with its value. */
static void kr_scan(amora *db, int reverse, void (*at)(int i))
{
	struct amora_range ar = { .reverse = reverse };
	char k[32], v[128];
	amora_iter *it;
	int rc;

	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_OK);
	for (int j = 0; j < KR_KEYS; j++) {
		int i = reverse ? KR_KEYS - 1 - j : j;
		const void *key, *val;
		size_t kl, vl, wk = (size_t)proc_key(k, "k", i), wv = (size_t)proc_val(v, i, 1);

		at(j);
		rc = amora_iter_next(it, &key, &kl, &val, &vl);
		cr_assert_eq(rc, 1, "entry %d: %s: %s", j, amora_strerror(rc), amora_errmsg(db));
		cr_assert(kl == wk && memcmp(key, k, wk) == 0, "entry %d: %.*s, not %s", j, (int)kl,
			  (const char *)key, k);
		cr_assert(vl == wv && memcmp(val, v, wv) == 0, "entry %d: wrong value", j);
	}
	{
		const void *key;
		size_t kl;

		cr_assert_eq(amora_iter_next(it, &key, &kl, NULL, NULL), 0);
	}
	amora_iter_close(it);
}

static void kill_a_shard(int j)
{
	pid_t shards[4];
	int n;

	if (j != 3000 && j != 9000 && j != 15000)
		return;
	n = proc_children(D.pid, shards, 4); /* one may be restarting */
	cr_assert_gt(n, 0);
	cr_assert_eq(kill(shards[j / 3000 % n], SIGKILL), 0);
	usleep(20000); /* the next batches meet it dead or restarting */
}

static void kill_amorad(int j)
{
	if (j == 7000 && D.pid != 0)
		cr_assert_eq(proc_stop(&D, SIGKILL), -SIGKILL);
}

Test(scan, a_scan_goes_on_across_kill_9_of_a_shard)
{
	amora *db = kr_load();

	kr_scan(db, 0, kill_a_shard);
	kr_scan(db, 1, kill_a_shard);
	amora_close(db);
}

Test(scan, a_scan_goes_on_after_amorad_is_killed)
{
	amora *db = kr_load();
	uint64_t n;

	kr_scan(db, 1, kill_amorad);
	kr_scan(db, 0, kill_amorad);
	cr_assert_eq(amora_count(db, NULL, &n), AMORA_OK);
	cr_assert_eq(n, KR_KEYS);
	amora_close(db);
}

/* ---------- a long scan, a sleeping consumer, a churning writer ---------- */

#define LS_KEYS 200000

static void ls_val(char *v, int i, uint32_t ver)
{
	memset(v, 'a' + (int)(ver % 26), 100);
	memcpy(v, &i, sizeof(i));
}

/* Overwrite random keys with same-sized values until killed: every write
 * retires a record. Exits 1 on a failure (AMORA_EFULL: nothing freed). */
static void ls_writer(const char *sock, unsigned seed)
{
	char k[32], v[100];
	uint32_t ver = 1;
	amora *db = child_open(sock);

	for (;;) {
		for (int j = 0; j < 256; j++) {
			int i = rand_r(&seed) % LS_KEYS;

			ls_val(v, i, ver++);
			if (amora_set_buffered(db, k, (size_t)proc_key(k, "k", i), v, sizeof(v)) != AMORA_OK)
				break;
		}
		if (amora_flush(db) != AMORA_OK) {
			fprintf(stderr, "churn writer: %s\n", amora_errmsg(db));
			_exit(1);
		}
	}
}

Test(scan, a_long_scan_with_a_sleeping_consumer_blocks_no_reclamation)
{
	char k[32], v[100];
	struct amora_range ar = { 0 };
	struct amora_stats st;
	struct amora_server_stats s0, s1;
	uint64_t base, peak = 0, t0;
	amora_iter *it;
	amora *db, *mon; /* mon samples memory: its reads must not be the scan's */
	pid_t w;
	int rc, status;

	proc_start(&D, "--shards", "4", "--memory", "256M", "--sync", "none", "--reader-timeout-ms", "500", NULL);
	db = proc_open();
	mon = proc_open();
	for (int i = 0; i < LS_KEYS; i++) {
		ls_val(v, i, 0);
		cr_assert_eq(amora_set_buffered(db, k, (size_t)proc_key(k, "k", i), v, sizeof(v)), AMORA_OK);
	}
	cr_assert_eq(amora_flush(db), AMORA_OK);
	cr_assert_eq(amora_stats(db, &st), AMORA_OK);
	base = st.memory_used;
	cr_assert_eq(amora_server_stats(db, &s0, sizeof(s0)), AMORA_OK);
	w = fork_child(ls_writer, 3);
	cr_assert_eq(amora_iter_open(db, &ar, &it), AMORA_OK);
	t0 = proc_now_ms();
	for (int i = 0; i < LS_KEYS; i++) {
		const void *key, *val;
		size_t kl, vl, wk = (size_t)proc_key(k, "k", i);
		int vi;

		rc = amora_iter_next(it, &key, &kl, &val, &vl);
		cr_assert_eq(rc, 1, "entry %d: %s: %s", i, amora_strerror(rc), amora_errmsg(db));
		memcpy(&vi, val, sizeof(vi));
		cr_assert(kl == wk && memcmp(key, k, wk) == 0 && vl == 100 && vi == i, "entry %d: %s wrong", i, k);
		if (i % 1000 == 999) {
			usleep(15000); /* 200 sleeps: ~3 s, six reader timeouts */
			cr_assert_eq(amora_stats(mon, &st), AMORA_OK);
			if (st.memory_used > peak)
				peak = st.memory_used;
		}
	}
	cr_assert_eq(amora_server_stats(mon, &s1, sizeof(s1)), AMORA_OK);
	cr_assert_eq(waitpid(w, &status, WNOHANG), 0, "the churn writer stopped (status %d)", status);
	kill(w, SIGKILL);
	waitpid(w, &status, 0);
	fprintf(stderr, "long scan: %d entries in %llu ms while %llu writes churned; memory_used %llu -> "
		"peak %llu\n", LS_KEYS, (unsigned long long)(proc_now_ms() - t0),
		(unsigned long long)(s1.writes.requests - s0.writes.requests), (unsigned long long)base,
		(unsigned long long)peak);
	/* The churn rewrote more than the whole store's live data... */
	cr_assert_gt(s1.writes.requests - s0.writes.requests, LS_KEYS, "too little churn to tell");
	/* ... and memory stayed near the live data's: what it retired was freed. */
	cr_assert_lt(peak, base + base / 2, "memory_used %llu -> %llu: nothing reclaimed during the scan",
		     (unsigned long long)base, (unsigned long long)peak);
	/* Not cut off: the handle still writes. */
	rc = amora_set(db, "after", 5, "x", 1);
	cr_assert_eq(rc, AMORA_OK, "%s: %s", amora_strerror(rc), amora_errmsg(db));
	amora_iter_close(it);
	amora_close(mon);
	amora_close(db);
}

/* ---------- the CLI ---------- */

Test(scan, cli_scan_range_and_count)
{
	static const struct { const char *k; size_t kl; const char *v; size_t vl; } kv[] = {
		{ "a", 1, "1", 1 },
		{ "a b", 3, "x y", 3 },
		{ "a\n\"\\", 4, "\x01\xff", 2 },
		{ "ab", 2, "", 0 },
		{ "b", 1, "\"q", 2 },
		{ "user:1", 6, "alice", 5 },
		{ "user:2", 6, "bob", 3 },
		{ "\xff\x00z", 3, "\t\r\a\b", 4 },
	};
	char out[4096];
	amora *db;

	proc_start(&D, "--shards", "4", "--memory", "64M", "--sync", "none", NULL);
	db = proc_open();
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
		cr_assert_eq(amora_set(db, kv[i].k, kv[i].kl, kv[i].v, kv[i].vl), AMORA_OK);
	amora_close(db);

	cr_assert_eq(proc_cli(out, sizeof(out), "scan ''"), 0);
	cr_assert_str_eq(out, "a 1\n"
			      "\"a\\n\\\"\\\\\" \"\\x01\\xff\"\n"
			      "\"a b\" \"x y\"\n"
			      "ab \"\"\n"
			      "b \"\\\"q\"\n"
			      "user:1 alice\n"
			      "user:2 bob\n"
			      "\"\\xff\\x00z\" \"\\t\\r\\a\\b\"\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "scan --keys-only a"), 0);
	cr_assert_str_eq(out, "a\n\"a\\n\\\"\\\\\"\n\"a b\"\nab\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "scan --reverse --limit 2 user:"), 0);
	cr_assert_str_eq(out, "user:2 bob\nuser:1 alice\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "scan --limit 0 ''"), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(proc_cli(out, sizeof(out), "scan nothing"), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(proc_cli(out, sizeof(out), "range --keys-only '(a' '[b'"), 0);
	cr_assert_str_eq(out, "\"a\\n\\\"\\\\\"\n\"a b\"\nab\nb\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "range --keys-only --reverse '[b' +"), 0);
	cr_assert_str_eq(out, "\"\\xff\\x00z\"\nuser:2\nuser:1\nb\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "range --keys-only - '(a b'"), 0);
	cr_assert_str_eq(out, "a\n\"a\\n\\\"\\\\\"\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "range + -"), 0);
	cr_assert_str_eq(out, "");
	cr_assert_eq(proc_cli(out, sizeof(out), "count user:"), 0);
	cr_assert_str_eq(out, "2\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "count ''"), 0);
	cr_assert_str_eq(out, "8\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "count zz"), 0);
	cr_assert_str_eq(out, "0\n");
	/* Usage and range errors: exit 2 with the cause. */
	cr_assert_eq(proc_cli(out, sizeof(out), "range a b 2>&1"), 2);
	cr_assert(strstr(out, "range bound 'a' must start with '[' or '('"), "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "range '[b' '[a' 2>&1"), 2);
	cr_assert(strstr(out, "amora: range: invalid argument: start is after end in key order"), "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "scan --limit x a 2>&1"), 2);
	cr_assert(strstr(out, "--limit needs a number"), "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "scan --sideways a 2>&1"), 2);
	cr_assert_eq(proc_cli(out, sizeof(out), "scan 2>&1"), 2);
	cr_assert_eq(proc_cli(out, sizeof(out), "scan -- --odd"), 0);
	cr_assert_str_eq(out, "");
}
