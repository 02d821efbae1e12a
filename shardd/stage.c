/*
 * stage.c — a round's staged writes and the index of their keys (stage.h).
 *
 * The index is open addressing over the key hashes, linear probing, kept
 * at most half full; an entry names the key's latest write, whose record
 * holds the key's bytes (a set's new record, or the record a delete
 * removes), so two keys with one hash are told apart. An entry is in the
 * index only if it carries the current round: starting a round is one
 * increment, not a clear.
 *
 * Most rounds stage no key twice, and the index is cold by the time a
 * shard's next round comes (63 other shards ran meanwhile): a lookup and
 * an insert there are a cache miss each. So a filter of 16 Ki bits (2 KiB,
 * bit = hash mod its size) answers most lookups: a clear bit is "no write
 * of this key staged". Only a set bit searches, newest first through the
 * ops while the round has fewer than STAGE_INDEX_FROM writes, else in the
 * index, which is built when the round reaches that size.
 */
#include <stdlib.h>
#include <string.h>

#include "shardd/stage.h"

#define STAGE_MIN_OPS 1024
#define STAGE_INDEX_FROM 512

int stage_init(struct stage *s, const struct shm_seg *seg)
{
	*s = (struct stage){ .seg = seg, .round = 1 };
	s->ops = malloc(STAGE_MIN_OPS * sizeof(*s->ops));
	s->keys = calloc(2 * STAGE_MIN_OPS, sizeof(*s->keys));
	if (s->ops == NULL || s->keys == NULL) {
		stage_destroy(s);
		return -1;
	}
	s->cap = STAGE_MIN_OPS;
	s->cap_keys = 2 * STAGE_MIN_OPS;
	return 0;
}

void stage_destroy(struct stage *s)
{
	free(s->ops);
	free(s->keys);
	*s = (struct stage){ 0 };
}

/* The record holding staged write `op`'s key (an intent's settle: the
 * intent's). */
static const struct shm_record *op_rec(const struct stage *s, size_t op)
{
	const struct shm_staged *o = &s->ops[op];

	return (const struct shm_record *)(s->seg->base + (o->kind == SHM_STAGED_SETTLE ? o->old : o->rec));
}

/* Whether staged write `op` is of `key`. */
static bool op_is_of(const struct stage *s, size_t op, const void *key, uint32_t klen)
{
	const struct shm_record *r = op_rec(s, op);

	return s->ops[op].kind != SHM_STAGED_MARK && shm_rec_klen(r) == klen && memcmp(r->data, key, klen) == 0;
}

/* The entry of `key`: its own, or the free one where it would go. */
static struct stage_key *key_slot(const struct stage *s, struct stage_key *keys, size_t cap,
				  const void *key, uint32_t klen, uint64_t h)
{
	for (size_t i = (size_t)h & (cap - 1);; i = (i + 1) & (cap - 1)) {
		struct stage_key *k = &keys[i];

		if (k->round != s->round || (k->h == h && op_is_of(s, k->op, key, klen)))
			return k;
	}
}

static bool filter_has(const struct stage *s, uint64_t h)
{
	uint64_t b = h % STAGE_FILTER_BITS;

	return (s->filter[b / 64] >> (b % 64)) & 1;
}

const struct shm_staged *stage_find(const struct stage *s, const void *key, uint32_t klen,
				    uint64_t h)
{
	const struct stage_key *k;

	if (!filter_has(s, h))
		return NULL;
	if (!s->indexed) {
		for (size_t i = s->n; i-- > 0;)
			if (s->ops[i].h == h && op_is_of(s, i, key, klen))
				return &s->ops[i];
		return NULL;
	}
	k = key_slot(s, s->keys, s->cap_keys, key, klen, h);
	return k->round == s->round ? &s->ops[k->op] : NULL;
}

/* Where `op`'s key goes in `keys`. */
static struct stage_key *op_slot(const struct stage *s, struct stage_key *keys, size_t cap, size_t op)
{
	const struct shm_record *r = op_rec(s, op);

	return key_slot(s, keys, cap, r->data, shm_rec_klen(r), s->ops[op].h);
}

/* Index ops [from, to) of the round, in order (each key ends with its latest). */
static void index_ops(struct stage *s, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (s->ops[i].kind != SHM_STAGED_MARK) /* no key */
			*op_slot(s, s->keys, s->cap_keys, i) = (struct stage_key){ s->ops[i].h, s->round, i };
}

/* Double both arrays; the index is rebuilt from the ops, in order, so
 * that each key ends with its latest. */
static int stage_grow(struct stage *s)
{
	size_t cap = s->cap * 2;
	struct shm_staged *ops = realloc(s->ops, cap * sizeof(*ops));
	struct stage_key *keys;

	if (ops == NULL)
		return -1;
	s->ops = ops;
	keys = calloc(2 * cap, sizeof(*keys));
	if (keys == NULL)
		return -1; /* ops grew, the index did not: still consistent */
	free(s->keys);
	s->keys = keys;
	s->cap = cap;
	s->cap_keys = 2 * cap;
	if (s->indexed)
		index_ops(s, 0, s->n);
	return 0;
}

struct shm_staged *stage_slot(struct stage *s)
{
	if (s->n == s->cap && stage_grow(s) != 0)
		return NULL;
	return &s->ops[s->n];
}

void stage_add(struct stage *s)
{
	uint64_t b = s->ops[s->n].h % STAGE_FILTER_BITS;

	s->filter[b / 64] |= 1ull << (b % 64);
	s->n++;
	if (s->indexed) {
		index_ops(s, s->n - 1, s->n);
	} else if (s->n == STAGE_INDEX_FROM) {
		s->indexed = true;
		index_ops(s, 0, s->n); /* every write so far */
	}
}

/* Empty the filter: bit by bit after a small round, whole after a big one. */
static void filter_clear(struct stage *s)
{
	if (s->n > STAGE_FILTER_BITS / 64) {
		memset(s->filter, 0, sizeof(s->filter));
		return;
	}
	for (size_t i = 0; i < s->n; i++) {
		uint64_t b = s->ops[i].h % STAGE_FILTER_BITS;

		s->filter[b / 64] &= ~(1ull << (b % 64));
	}
}

/* How many writes ahead stage_publish loads the groups of. */
#define PREFETCH_AHEAD 8

int stage_publish(struct stage *s, struct shm_writer *w)
{
	for (size_t i = 0; i < s->n && i < PREFETCH_AHEAD; i++)
		shm_writer_prefetch(w, &s->ops[i]);
	for (size_t i = 0; i < s->n; i++) {
		int rc;

		if (i + PREFETCH_AHEAD < s->n)
			shm_writer_prefetch(w, &s->ops[i + PREFETCH_AHEAD]);
		rc = shm_writer_publish(w, &s->ops[i]);

		if (rc != SHM_OK)
			return rc;
	}
	filter_clear(s);
	s->n = 0;
	s->indexed = false;
	s->round++;
	return SHM_OK;
}
