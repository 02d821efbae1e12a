/*
 * skiplist.c — the per-shard sorted index (skiplist.h): the writer's
 * search, link, unlink and O(n) build, and the readers' stepped seek.
 *
 * The reader's seek is a small state machine so that a client can run
 * the seeks of all shards in lock-step: each step touches only memory the
 * previous step prefetched (the node a link leads to, or the record a
 * comparison needs) and prefetches what the next step loads. A step:
 *   HEAD  load levels, stand on the head at levels - 1, read the first
 *         link (the head was prefetched by seek_start);
 *   NODE  validate the node the link leads to, compare the key against
 *         its inline prefix; if that cannot decide, prefetch its record;
 *   REC   compare against the record's key.
 * After a comparison the node is passed (the cursor stands on it and reads
 * its link at the same level) or not (one level down from the same node;
 * a link to the node just refused is refused again without a comparison,
 * as in Pugh's paper). Each step ends by reading the next link and
 * prefetching the node it names.
 *
 * Nothing a reader loads is trusted: every link goes through shm_ptr with
 * the node's whole size (height read once, checked against the level it
 * is reached at), plen is checked, records through shm_record_view and
 * must hold the node's prefix, and every pass is checked to go to a key
 * strictly greater than the last one passed (which bounds every walk; a
 * seek's passes between tied prefixes are checked from the 33rd in a row
 * on, pass_ok). The
 * writer trusts its list but still validates the records it dereferences.
 */
#include <string.h>

#include "shm/skiplist.h"
#include "shm/slab.h"

_Static_assert(sizeof(struct shm_skip_node) == 20, "node header is 20 bytes (skiplist.h layout)");
_Static_assert(offsetof(struct shm_skip_node, prefix) == 6, "layout");
_Static_assert(offsetof(struct shm_skip, next) == 8, "layout");

/* Cursor modes: which nodes a seek passes (stands on and goes beyond). */
enum {
	SKIP_MODE_REVERSE = 1, /* the result is the last node passed */
	SKIP_MODE_STRICT = 2,  /* pass nodes < key (else nodes <= key) */
	SKIP_MODE_ALL = 4,     /* pass every node (reverse, no key) */
	SKIP_MODE_NONE = 8,    /* pass no node (forward, no key) */
};

enum { SKIP_ST_HEAD, SKIP_ST_NODE, SKIP_ST_REC, SKIP_ST_DONE, SKIP_ST_CORRUPT };

/* The readers' hot path (a hop, a step of a scan) is a few integer
 * compares: its small helpers are inlined into it. */
#define HOT static inline __attribute__((always_inline))

/* A comparison the inline prefixes cannot decide. */
#define UNDECIDED 2

static inline uint64_t link_off(uint32_t l) { return (uint64_t)l << 4; }

static int sign(int c) { return (c > 0) - (c < 0); }

/* memcmp's sign over n bytes, without a call for short runs (the inline
 * prefixes, most keys): 8 bytes at a time as big-endian words. */
static inline int bytes_cmp(const uint8_t *a, const uint8_t *b, uint32_t n)
{
	if (n > 64)
		return sign(memcmp(a, b, n));
	for (; n >= 8; a += 8, b += 8, n -= 8) {
		uint64_t x, y;

		memcpy(&x, a, 8);
		memcpy(&y, b, 8);
		if (x != y)
			return __builtin_bswap64(x) < __builtin_bswap64(y) ? -1 : 1;
	}
	for (; n > 0; a++, b++, n--)
		if (*a != *b)
			return *a < *b ? -1 : 1;
	return 0;
}

/* The key order: memcmp over the shorter length, then the shorter first. */
static int key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	uint32_t n = alen < blen ? alen : blen;
	int c = bytes_cmp(a, b, n);

	return c ? c : (alen > blen) - (alen < blen);
}

/* The top n bytes of a word (n 0 .. 8). */
HOT uint64_t word_mask(uint32_t n)
{
	return n >= 8 ? ~0ULL : n == 0 ? 0 : ~0ULL << (64 - 8 * n);
}

/* *k for a whole key (a seek key, a record's): full known. */
static void ref_of_key(const uint8_t *key, uint32_t klen, struct shm_skip_keyref *k)
{
	uint32_t p = klen < SHM_SKIP_PREFIX ? klen : SHM_SKIP_PREFIX;
	uint64_t b;

	k->full = key;
	k->flen = klen;
	k->plen = p;
	k->w0 = shm_skip_key_word(key, p);
	if (klen >= 16) {
		memcpy(&b, key + 8, 8);
		k->w1 = __builtin_bswap64(b) & word_mask(SHM_SKIP_PREFIX - 8);
	} else {
		k->w1 = p > 8 ? shm_skip_key_word(key + 8, p - 8) : 0;
	}
}

/* *k for node n's inline prefix of plen bytes (full unknown). Two loads
 * within the 20-byte header (bytes 6-13 and 12-19: nothing of next[],
 * which the writer stores concurrently). */
HOT void ref_of_node(const struct shm_skip_node *n, uint32_t plen, struct shm_skip_keyref *k)
{
	uint64_t a, b;

	memcpy(&a, (const uint8_t *)n + offsetof(struct shm_skip_node, prefix), 8);
	memcpy(&b, (const uint8_t *)n + offsetof(struct shm_skip_node, prefix) + 6, 8);
	k->full = NULL;
	k->flen = 0;
	k->plen = plen;
	k->w0 = __builtin_bswap64(a) & word_mask(plen);
	/* b's top 2 bytes are prefix[6..7]: shifted out. */
	k->w1 = plen > 8 ? (__builtin_bswap64(b) << 16) & word_mask(plen - 8) : 0;
}

/* cmp(a, b) of two keys from what is known of them: the prefixes' words
 * (zero padded, they order two keys whenever they differ), then their
 * lengths when a key is wholly inline (plen < SHM_SKIP_PREFIX: with equal
 * words, the shorter is a prefix of the longer), then the rest of the
 * full keys when both are known (UNDECIDED while one is not). */
HOT int ref_cmp(const struct shm_skip_keyref *a, const struct shm_skip_keyref *b)
{
	if (a->w0 != b->w0)
		return a->w0 < b->w0 ? -1 : 1;
	if (a->w1 != b->w1)
		return a->w1 < b->w1 ? -1 : 1;
	if (a->plen < SHM_SKIP_PREFIX || b->plen < SHM_SKIP_PREFIX)
		return (a->plen > b->plen) - (a->plen < b->plen);
	if (a->full == NULL || b->full == NULL)
		return UNDECIDED;
	return key_cmp(a->full + SHM_SKIP_PREFIX, a->flen - SHM_SKIP_PREFIX, b->full + SHM_SKIP_PREFIX,
		       b->flen - SHM_SKIP_PREFIX);
}

HOT void prefetch_at(const struct shm_seg *seg, uint64_t off)
{
	if (off < seg->size)
		__builtin_prefetch(seg->base + off);
}

uint64_t shm_skip_node_bytes(uint32_t height)
{
	return sizeof(struct shm_skip_node) + 4 * (uint64_t)height;
}

uint64_t shm_skip_bytes(const struct shm_seg *seg, uint64_t off)
{
	(void)seg;
	(void)off;
	return sizeof(struct shm_skip);
}

uint32_t shm_skip_height(uint64_t *rng)
{
	/* splitmix64 (Steele, Lea, Flood 2014); every pair of low zero bits
	 * is one more level: P(height > h) = 4^-h. */
	uint64_t z = (*rng += 0x9e3779b97f4a7c15ULL);
	uint32_t h;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	h = 1 + (z ? (uint32_t)__builtin_ctzll(z) : 64) / 2;
	return h > SHM_SKIP_MAX_HEIGHT ? SHM_SKIP_MAX_HEIGHT : h;
}

/* --- reader helpers: every offset untrusted --- */

/* The node at `off`, if it lies wholly in the segment with a height above
 * `level` (it was reached by a link of that level) and a sane plen; its
 * plen and prefix are copied into *k (full key unknown). NULL otherwise. */
HOT const struct shm_skip_node *node_at(const struct shm_seg *seg, uint64_t off, int level,
					   struct shm_skip_keyref *k)
{
	/* volatile: height and plen are loaded once; only the copies are used. */
	const volatile struct shm_skip_node *vn = shm_ptr(seg, off, sizeof(struct shm_skip_node));
	uint32_t h, plen;

	if (vn == NULL)
		return NULL;
	h = vn->height;
	plen = vn->plen;
	if (h == 0 || h > SHM_SKIP_MAX_HEIGHT || (int)h <= level || plen == 0 || plen > SHM_SKIP_PREFIX ||
	    shm_ptr(seg, off, shm_skip_node_bytes(h)) == NULL)
		return NULL;
	ref_of_node((const struct shm_skip_node *)vn, plen, k);
	return (const struct shm_skip_node *)vn;
}

/* The validated record of node n (whose prefix is in *k): rec non-zero,
 * a valid record, holding the prefix (exactly, for an inline key). Fills
 * *kv and k->full. Errors: SHM_ECORRUPT. */
static int node_record(const struct shm_seg *seg, const struct shm_skip_node *n,
		       struct shm_skip_keyref *k, struct shm_kv *kv)
{
	/* acquire: pairs with the release of shm_skip_set_rec (and of the
	 * link that published the node), so the record is seen whole. */
	uint32_t r = atomic_load_explicit(&n->rec, memory_order_acquire);
	struct shm_skip_keyref rk;

	if (r == 0 || shm_record_view(seg, link_off(r), kv) != SHM_OK)
		return SHM_ECORRUPT;
	ref_of_key(kv->key, kv->klen, &rk);
	if (rk.plen != k->plen || rk.w0 != k->w0 || rk.w1 != k->w1)
		return SHM_ECORRUPT;
	*k = rk;
	return SHM_OK;
}

/* order_ok's tie: the records of the nodes whose full key is unknown. */
static int order_records(const struct shm_seg *seg, uint64_t aoff, struct shm_skip_keyref *a, uint64_t boff,
			 struct shm_skip_keyref *b)
{
	struct shm_kv kv;

	if (a->full == NULL && node_record(seg, (const struct shm_skip_node *)(seg->base + aoff), a, &kv) != SHM_OK)
		return SHM_ECORRUPT;
	if (b->full == NULL && node_record(seg, (const struct shm_skip_node *)(seg->base + boff), b, &kv) != SHM_OK)
		return SHM_ECORRUPT;
	return ref_cmp(a, b) < 0 ? SHM_OK : SHM_ECORRUPT;
}

/* Whether node b (at boff, key *b) comes strictly after node a: loads the
 * records only when the prefixes tie. SHM_OK or SHM_ECORRUPT. */
HOT int order_ok(const struct shm_seg *seg, uint64_t aoff, struct shm_skip_keyref *a, uint64_t boff,
		 struct shm_skip_keyref *b)
{
	int c = ref_cmp(a, b);

	if (c == UNDECIDED)
		return order_records(seg, aoff, a, boff, b);
	return c < 0 ? SHM_OK : SHM_ECORRUPT;
}

int shm_skip_view(const struct shm_seg *seg, uint64_t off, struct shm_skip_view *v)
{
	const volatile struct shm_skip *h = shm_ptr(seg, off, sizeof(struct shm_skip));
	uint32_t lv;

	if (h == NULL || (off & 15) || h->magic != SHM_SKIP_MAGIC)
		return SHM_ECORRUPT;
	lv = atomic_load_explicit(&((const struct shm_skip *)h)->levels, memory_order_relaxed);
	if (lv == 0 || lv > SHM_SKIP_MAX_HEIGHT)
		return SHM_ECORRUPT;
	v->head = (const struct shm_skip *)h;
	v->off = off;
	return SHM_OK;
}

/* --- the stepped seek --- */

static int cursor_corrupt(struct shm_skip_cursor *c)
{
	c->state = SKIP_ST_CORRUPT;
	c->node = 0;
	return SHM_ECORRUPT;
}

HOT const _Atomic uint32_t *cursor_links(const struct shm_seg *seg, const struct shm_skip_cursor *c,
					    uint64_t x)
{
	return x == 0 ? c->head->next : ((const struct shm_skip_node *)(seg->base + x))->next;
}

void shm_skip_seek_start(struct shm_skip_cursor *c, const struct shm_skip_view *v, const void *key,
			 uint32_t klen, bool inclusive, bool reverse)
{
	const char *h = (const char *)v->head;

	c->head = v->head;
	ref_of_key(key, key == NULL ? 0 : klen, &c->kk);
	if (key == NULL || klen == 0)
		c->mode = reverse ? SKIP_MODE_REVERSE | SKIP_MODE_ALL : SKIP_MODE_NONE;
	else
		c->mode = (uint8_t)((reverse ? SKIP_MODE_REVERSE : 0) |
				    (inclusive != reverse ? SKIP_MODE_STRICT : 0));
	c->state = SKIP_ST_HEAD;
	c->level = 0;
	c->ties = 0;
	c->x = c->y = c->last = c->node = 0;
	/* The head's levels and links (104 bytes, 16-aligned: 2 or 3 lines). */
	__builtin_prefetch(h);
	__builtin_prefetch(h + 64);
	__builtin_prefetch(h + sizeof(struct shm_skip) - 1);
}

/* The seek is over: the node refused at level 0 (forward; 0: the end) or
 * the last node passed (reverse; 0: the head, so the end). */
static int cursor_finish(const struct shm_seg *seg, struct shm_skip_cursor *c, uint64_t refused)
{
	if (c->mode & SKIP_MODE_REVERSE) {
		c->node = c->x;
		c->nk = c->xk;
	} else {
		/* refused > key (or >= key) > every node passed: in order. */
		c->node = refused;
		if (refused != 0 && node_at(seg, refused, 0, &c->nk) == NULL)
			return cursor_corrupt(c);
	}
	c->state = SKIP_ST_DONE;
	return 0;
}

/* Standing on c->x at c->level (validated: its height is above the
 * level): read the link, go down past empty links and the node just
 * refused, and prefetch the next node to compare. */
HOT int cursor_advance(const struct shm_seg *seg, struct shm_skip_cursor *c)
{
	for (;;) {
		/* acquire: pairs with the release store of shm_skip_link or
		 * shm_skip_unlink that wrote the link: the node is seen whole. */
		uint32_t l = atomic_load_explicit(&cursor_links(seg, c, c->x)[c->level], memory_order_acquire);
		uint64_t y = link_off(l);

		if (l != 0 && y != c->last && (c->mode & SKIP_MODE_NONE))
			c->last = y; /* passes no node: refused unseen */
		if (l == 0 || y == c->last) {
			if (c->level == 0)
				return cursor_finish(seg, c, y);
			c->level--;
			continue;
		}
		c->y = y;
		c->state = SKIP_ST_NODE;
		/* Its header, and the link the next step reads if it passes it. */
		prefetch_at(seg, y);
		prefetch_at(seg, y + sizeof(struct shm_skip_node) + 4 * (uint64_t)c->level);
		/* And where a refusal of y leads: x's link one level down (in
		 * x's line, loaded), so that going down costs no miss of its
		 * own. Only a prefetch: the link is loaded again, acquire. */
		if (c->level > 0) {
			uint32_t d = atomic_load_explicit(&cursor_links(seg, c, c->x)[c->level - 1], memory_order_relaxed);

			if (d != l)
				prefetch_at(seg, link_off(d));
		}
		return 1;
	}
}

/* Whether the seek may pass from x to y: y's key must be greater. When
 * their prefixes tie (keys sharing their first SHM_SKIP_PREFIX bytes, as
 * "user:1234:name" and "user:1234:mail"), telling needs both records, two
 * more misses a hop; such passes go unchecked up to SKIP_TIES_UNCHECKED in
 * a row, then every tie is checked. That still bounds every walk: along
 * passes the prefixes never decrease (checked), so a cycle in damaged
 * memory is a run of tied passes only, and it turns into checked ones
 * within SKIP_TIES_UNCHECKED hops, which no cycle survives. What an
 * unchecked tie lets through on damaged memory is a wrong position among
 * keys of one prefix, never a crash or an endless walk; cursor_next checks
 * every step in full (and the iterator checks what it returns). */
#define SKIP_TIES_UNCHECKED 32

HOT int pass_ok(const struct shm_seg *seg, struct shm_skip_cursor *c)
{
	int o = ref_cmp(&c->xk, &c->yk);

	if (o != UNDECIDED) {
		c->ties = 0;
		return o < 0 ? SHM_OK : SHM_ECORRUPT;
	}
	if (c->ties < SKIP_TIES_UNCHECKED) {
		c->ties++;
		return SHM_OK;
	}
	return order_records(seg, c->x, &c->xk, c->y, &c->yk);
}

/* c->y compared: cmp = cmp(key, y). Pass it or go down. */
static int cursor_decide(const struct shm_seg *seg, struct shm_skip_cursor *c, int cmp)
{
	bool pass = (c->mode & SKIP_MODE_ALL) || ((c->mode & SKIP_MODE_STRICT) ? cmp > 0 : cmp >= 0);

	if (pass) {
		if (c->x != 0 && pass_ok(seg, c) != SHM_OK)
			return cursor_corrupt(c);
		c->x = c->y;
		c->xk = c->yk;
	} else {
		c->last = c->y;
		if (c->level == 0)
			return cursor_finish(seg, c, c->y);
		c->level--;
	}
	return cursor_advance(seg, c);
}

static int step_head(const struct shm_seg *seg, struct shm_skip_cursor *c)
{
	uint32_t lv = atomic_load_explicit(&c->head->levels, memory_order_relaxed);

	if (lv == 0 || lv > SHM_SKIP_MAX_HEIGHT)
		return cursor_corrupt(c);
	c->level = (int8_t)(lv - 1);
	c->x = 0;
	return cursor_advance(seg, c);
}

static int step_node(const struct shm_seg *seg, struct shm_skip_cursor *c)
{
	const struct shm_skip_node *n = node_at(seg, c->y, c->level, &c->yk);
	int cmp = 1;

	if (n == NULL)
		return cursor_corrupt(c);
	if (!(c->mode & SKIP_MODE_ALL)) {
		cmp = ref_cmp(&c->kk, &c->yk);
		if (cmp == UNDECIDED) {
			/* Only a prefetch: step_rec loads rec again (acquire). */
			uint32_t r = atomic_load_explicit(&n->rec, memory_order_relaxed);

			if (r == 0)
				return cursor_corrupt(c);
			prefetch_at(seg, link_off(r));
			c->state = SKIP_ST_REC;
			return 1;
		}
	}
	return cursor_decide(seg, c, cmp);
}

static int step_rec(const struct shm_seg *seg, struct shm_skip_cursor *c)
{
	struct shm_kv kv;

	/* c->y passed node_at in step_node: its 20-byte header is in bounds. */
	if (node_record(seg, (const struct shm_skip_node *)(seg->base + c->y), &c->yk, &kv) != SHM_OK)
		return cursor_corrupt(c);
	return cursor_decide(seg, c, ref_cmp(&c->kk, &c->yk));
}

int shm_skip_seek_step(const struct shm_seg *seg, struct shm_skip_cursor *c)
{
	switch (c->state) {
	case SKIP_ST_HEAD:
		return step_head(seg, c);
	case SKIP_ST_NODE:
		return step_node(seg, c);
	case SKIP_ST_REC:
		return step_rec(seg, c);
	case SKIP_ST_DONE:
		return 0;
	default:
		return SHM_ECORRUPT;
	}
}

int shm_skip_seek(const struct shm_seg *seg, struct shm_skip_cursor *c, const struct shm_skip_view *v,
		  const void *key, uint32_t klen, bool inclusive, bool reverse)
{
	int rc;

	shm_skip_seek_start(c, v, key, klen, inclusive, reverse);
	while ((rc = shm_skip_seek_step(seg, c)) == 1)
		;
	return rc;
}

int shm_skip_cursor_get(const struct shm_seg *seg, struct shm_skip_cursor *c, struct shm_kv *kv)
{
	if (c->state != SKIP_ST_DONE)
		return SHM_ECORRUPT;
	if (c->node == 0)
		return SHM_ENOTFOUND;
	/* c->node passed node_at when the cursor came to it. Its full key
	 * stays known for the next step's order check. */
	return node_record(seg, (const struct shm_skip_node *)(seg->base + c->node), &c->nk, kv);
}

/* Reverse: the predecessor of the current key, searched from the head.
 * The key: an inline one copied, else the record's (valid while the
 * epoch is held). */
static int cursor_prev(const struct shm_seg *seg, struct shm_skip_cursor *c, const struct shm_skip_node *n)
{
	struct shm_skip_view v = { c->head, 0 };
	uint64_t inline_key[2] = { __builtin_bswap64(c->nk.w0), __builtin_bswap64(c->nk.w1) };
	const uint8_t *key = (const uint8_t *)inline_key;
	uint32_t klen = c->nk.plen;
	struct shm_kv kv;
	int rc;

	if (c->nk.plen == SHM_SKIP_PREFIX) {
		if (c->nk.full == NULL && node_record(seg, n, &c->nk, &kv) != SHM_OK)
			return cursor_corrupt(c);
		key = c->nk.full;
		klen = c->nk.flen;
	}
	rc = shm_skip_seek(seg, c, &v, key, klen, false, true);
	if (rc != SHM_OK)
		return rc;
	return c->node ? SHM_OK : SHM_ENOTFOUND;
}

int shm_skip_cursor_next(const struct shm_seg *seg, struct shm_skip_cursor *c, struct shm_kv *kv)
{
	const struct shm_skip_node *n, *m;
	struct shm_skip_keyref k;
	struct shm_kv tmp;
	bool loaded = false;
	uint32_t l;
	int rc;

	if (c->state != SKIP_ST_DONE)
		return SHM_ECORRUPT;
	if (c->node == 0)
		return SHM_ENOTFOUND;
	n = (const struct shm_skip_node *)(seg->base + c->node);
	if (c->mode & SKIP_MODE_REVERSE) {
		rc = cursor_prev(seg, c, n);
		return rc == SHM_OK && kv != NULL ? shm_skip_cursor_get(seg, c, kv) : rc;
	}
	/* acquire: pairs with the release store that wrote the link. */
	l = atomic_load_explicit(&n->next[0], memory_order_acquire);
	if (l == 0) {
		c->node = 0;
		return SHM_ENOTFOUND;
	}
	if ((m = node_at(seg, link_off(l), 0, &k)) == NULL)
		return cursor_corrupt(c);
	/* The key must grow. On a tie of the prefixes both records are
	 * needed: the next one's then serves *kv too. */
	rc = ref_cmp(&c->nk, &k);
	if (rc == UNDECIDED) {
		if ((c->nk.full == NULL && node_record(seg, n, &c->nk, &tmp) != SHM_OK) ||
		    node_record(seg, m, &k, kv ? kv : &tmp) != SHM_OK)
			return cursor_corrupt(c);
		loaded = kv != NULL;
		rc = ref_cmp(&c->nk, &k);
	}
	if (rc >= 0)
		return cursor_corrupt(c);
	c->node = link_off(l);
	c->nk = k;
	if (kv != NULL && !loaded && node_record(seg, m, &c->nk, kv) != SHM_OK)
		return cursor_corrupt(c);
	return SHM_OK;
}

/* --- writer side: the writer trusts its list's links, validates records --- */

static struct shm_skip *head_of(const struct shm_seg *seg, uint64_t off)
{
	return (struct shm_skip *)(seg->base + off);
}

static struct shm_skip_node *node_of(const struct shm_seg *seg, uint64_t off)
{
	return (struct shm_skip_node *)(seg->base + off);
}

/* The links of node `x`, or of the head when x is 0. */
static _Atomic uint32_t *links_of(const struct shm_seg *seg, uint64_t list_off, uint64_t x)
{
	return x == 0 ? head_of(seg, list_off)->next : node_of(seg, x)->next;
}

/* The writer's cmp(key, node). A record that fails validation (never, in
 * the writer's own list) counts as greater than the key, so a search
 * stops there rather than fault. */
static int writer_cmp(const struct shm_seg *seg, const struct shm_skip_node *n,
		      const struct shm_skip_keyref *kk)
{
	struct shm_skip_keyref nk;
	struct shm_kv kv;
	int c;

	ref_of_node(n, n->plen, &nk);
	if ((c = ref_cmp(kk, &nk)) != UNDECIDED)
		return c;
	if (shm_record_view(seg, link_off(atomic_load_explicit(&n->rec, memory_order_relaxed)), &kv) != SHM_OK)
		return -1;
	return key_cmp(kk->full, kk->flen, kv.key, kv.klen);
}

/* preds[k] for k < levels: the last node (0: the head) whose key is below
 * `key` at level k. Returns levels. (Only this thread writes the list:
 * its loads need no ordering.) */
static uint32_t writer_search(const struct shm_seg *seg, uint64_t list_off,
			      const struct shm_skip_keyref *kk, uint64_t preds[SHM_SKIP_MAX_HEIGHT])
{
	uint32_t lv = atomic_load_explicit(&head_of(seg, list_off)->levels, memory_order_relaxed);
	uint64_t x = 0, refused = 0;

	for (int k = (int)lv - 1; k >= 0; k--) {
		for (;;) {
			uint32_t l = atomic_load_explicit(&links_of(seg, list_off, x)[k], memory_order_relaxed);
			uint64_t y = link_off(l);

			if (l == 0 || y == refused)
				break;
			if (writer_cmp(seg, node_of(seg, y), kk) <= 0) {
				refused = y;
				break;
			}
			x = y;
		}
		preds[k] = x;
	}
	return lv;
}

int shm_skip_create(struct shm_seg *seg, struct shm_slab *slab, uint64_t *off)
{
	struct shm_skip *h;
	int rc = shm_slab_alloc(seg, slab, sizeof(struct shm_skip), off);

	if (rc != SHM_OK)
		return rc;
	h = head_of(seg, *off);
	h->magic = SHM_SKIP_MAGIC;
	atomic_store_explicit(&h->levels, 1, memory_order_relaxed);
	for (int k = 0; k < SHM_SKIP_MAX_HEIGHT; k++)
		atomic_store_explicit(&h->next[k], 0, memory_order_relaxed);
	return SHM_OK;
}

int shm_skip_node_new(struct shm_seg *seg, struct shm_slab *slab, const void *key, uint32_t klen,
		      uint64_t rec_off, uint32_t height, uint64_t *node_off)
{
	uint32_t plen = klen < SHM_SKIP_PREFIX ? klen : SHM_SKIP_PREFIX;
	struct shm_skip_node *n;
	int rc;

	if (klen == 0 || klen > SHM_KEY_MAX || height == 0 || height > SHM_SKIP_MAX_HEIGHT || rec_off == 0 ||
	    (rec_off & 15) || (rec_off >> 4) > UINT32_MAX)
		return SHM_EINVAL;
	rc = shm_slab_alloc(seg, slab, shm_skip_node_bytes(height), node_off);
	if (rc != SHM_OK)
		return rc;
	n = node_of(seg, *node_off);
	atomic_store_explicit(&n->rec, (uint32_t)(rec_off >> 4), memory_order_relaxed);
	n->height = (uint8_t)height;
	n->plen = (uint8_t)plen;
	memset(n->prefix, 0, sizeof(n->prefix));
	memcpy(n->prefix, key, plen);
	for (uint32_t k = 0; k < height; k++)
		atomic_store_explicit(&n->next[k], 0, memory_order_relaxed);
	return SHM_OK;
}

/* The last node at every level (0: the level is empty), by walking each
 * level to its end from the last node of the level above. */
static void tail_fill(const struct shm_seg *seg, uint64_t list_off, struct shm_skip_tail *t)
{
	uint32_t lv = atomic_load_explicit(&head_of(seg, list_off)->levels, memory_order_relaxed);
	uint64_t x = 0;

	for (int k = SHM_SKIP_MAX_HEIGHT - 1; k >= 0; k--) {
		for (uint32_t l; k < (int)lv && (l = atomic_load_explicit(&links_of(seg, list_off, x)[k],
								 memory_order_relaxed)) != 0;)
			x = link_off(l);
		t->last[k] = k < (int)lv ? x : 0;
	}
	t->list = list_off;
	t->valid = true;
}

/* preds for a key above every key in the list: the tail, if known. */
static bool tail_preds(const struct shm_seg *seg, uint64_t list_off, struct shm_skip_tail *t,
		       const struct shm_skip_keyref *kk, uint64_t preds[SHM_SKIP_MAX_HEIGHT])
{
	if (t == NULL)
		return false;
	if (!t->valid || t->list != list_off)
		tail_fill(seg, list_off, t);
	if (t->last[0] != 0 && writer_cmp(seg, node_of(seg, t->last[0]), kk) <= 0)
		return false;
	memcpy(preds, t->last, sizeof(t->last));
	return true;
}

/* The key of node n: inline, or its record's (a bad record: the prefix,
 * so that linking cannot fail; readers report the node SHM_ECORRUPT). */
static void node_key(const struct shm_seg *seg, const struct shm_skip_node *n, struct shm_skip_keyref *kk)
{
	struct shm_kv kv;

	if (n->plen == SHM_SKIP_PREFIX &&
	    shm_record_view(seg, link_off(atomic_load_explicit(&n->rec, memory_order_relaxed)), &kv) == SHM_OK &&
	    kv.klen >= SHM_SKIP_PREFIX) {
		ref_of_key(kv.key, kv.klen, kk);
		return;
	}
	ref_of_node(n, n->plen, kk);
	kk->full = n->prefix;
	kk->flen = n->plen;
}

/* Link node n at its height after preds[0 .. lv) (the head above lv),
 * each pred first moved forward past keys below n's that were linked since
 * it was found (a path searched ahead, shm_skip_path_*). */
static void link_after(struct shm_seg *seg, uint64_t list_off, uint64_t node_off,
		       uint64_t preds[SHM_SKIP_MAX_HEIGHT], uint32_t lv, struct shm_skip_tail *tail)
{
	struct shm_skip *h = head_of(seg, list_off);
	struct shm_skip_node *n = node_of(seg, node_off);
	uint32_t height = n->height;
	struct shm_skip_keyref kk;

	node_key(seg, n, &kk);
	for (uint32_t k = lv; k < height; k++)
		preds[k] = 0;
	for (uint32_t k = 0; k < height; k++) {
		for (uint32_t l; (l = atomic_load_explicit(&links_of(seg, list_off, preds[k])[k],
							   memory_order_relaxed)) != 0 &&
				 writer_cmp(seg, node_of(seg, link_off(l)), &kk) > 0;)
			preds[k] = link_off(l);
		atomic_store_explicit(&n->next[k],
				      atomic_load_explicit(&links_of(seg, list_off, preds[k])[k], memory_order_relaxed),
				      memory_order_relaxed);
	}
	/* levels first, so that no node is ever linked at a level >= levels
	 * (a writer killed mid-link leaves levels at least as high as what it
	 * linked; the release stores below keep the order). */
	if (height > atomic_load_explicit(&h->levels, memory_order_relaxed))
		atomic_store_explicit(&h->levels, height, memory_order_relaxed);
	/* Bottom-up: level k is linked only once level k - 1 is. release:
	 * pairs with the readers' acquire loads of the link, so a reader that
	 * reaches the node sees its fields and next[] whole. */
	for (uint32_t k = 0; k < height; k++)
		atomic_store_explicit(&links_of(seg, list_off, preds[k])[k], (uint32_t)(node_off >> 4),
				      memory_order_release);
	for (uint32_t k = 0; tail != NULL && k < height; k++)
		if (atomic_load_explicit(&n->next[k], memory_order_relaxed) == 0)
			tail->last[k] = node_off;
}

void shm_skip_link(struct shm_seg *seg, uint64_t list_off, uint64_t node_off)
{
	shm_skip_link_tail(seg, list_off, node_off, NULL);
}

void shm_skip_link_tail(struct shm_seg *seg, uint64_t list_off, uint64_t node_off,
			struct shm_skip_tail *tail)
{
	uint64_t preds[SHM_SKIP_MAX_HEIGHT];
	uint32_t lv = atomic_load_explicit(&head_of(seg, list_off)->levels, memory_order_relaxed);
	struct shm_skip_keyref kk;

	node_key(seg, node_of(seg, node_off), &kk);
	if (!tail_preds(seg, list_off, tail, &kk, preds))
		lv = writer_search(seg, list_off, &kk, preds);
	link_after(seg, list_off, node_off, preds, lv, tail);
}

/* --- a writer's search in steps (shm_skip_path_*) --- */

void shm_skip_path_start(const struct shm_seg *seg, uint64_t list_off, struct shm_skip_path *p,
			 uint64_t node_off, struct shm_skip_tail *tail)
{
	p->node = node_off;
	node_key(seg, node_of(seg, node_off), &p->kk);
	p->lv = atomic_load_explicit(&head_of(seg, list_off)->levels, memory_order_relaxed);
	p->x = p->refused = 0;
	if (tail_preds(seg, list_off, tail, &p->kk, p->preds)) {
		p->level = -1;
		return;
	}
	memset(p->preds, 0, sizeof(p->preds));
	p->level = (int)p->lv - 1;
}

bool shm_skip_path_step(const struct shm_seg *seg, uint64_t list_off, struct shm_skip_path *p)
{
	uint32_t l;
	uint64_t y;

	if (p->level < 0)
		return false;
	l = atomic_load_explicit(&links_of(seg, list_off, p->x)[p->level], memory_order_relaxed);
	y = link_off(l);
	if (l == 0 || y == p->refused || writer_cmp(seg, node_of(seg, y), &p->kk) <= 0) {
		if (l != 0)
			p->refused = y;
		p->preds[p->level--] = p->x;
		if (p->level < 0)
			return false;
		/* The node the next step compares: x's link one level down. */
		l = atomic_load_explicit(&links_of(seg, list_off, p->x)[p->level], memory_order_relaxed);
		if (l != 0)
			prefetch_at(seg, link_off(l));
		return true;
	}
	p->x = y;
	/* What the next step loads: x's link at this level, and through it
	 * the node it names (prefetched once it is known, next step). */
	__builtin_prefetch(&node_of(seg, y)->next[p->level]);
	l = atomic_load_explicit(&node_of(seg, y)->next[p->level], memory_order_relaxed);
	if (l != 0)
		prefetch_at(seg, link_off(l));
	return true;
}

bool shm_skip_path_uses(const struct shm_skip_path *p, uint64_t node_off)
{
	for (uint32_t k = 0; k < SHM_SKIP_MAX_HEIGHT; k++)
		if (p->preds[k] == node_off)
			return true;
	return p->x == node_off;
}

void shm_skip_link_path(struct shm_seg *seg, uint64_t list_off, struct shm_skip_path *p,
			struct shm_skip_tail *tail)
{
	/* Still above every key (appends: the writes before it appended
	 * too): the tail now, rather than walking past what they added. */
	if (tail_preds(seg, list_off, tail, &p->kk, p->preds)) {
		link_after(seg, list_off, p->node, p->preds,
			   atomic_load_explicit(&head_of(seg, list_off)->levels, memory_order_relaxed), tail);
		return;
	}
	while (shm_skip_path_step(seg, list_off, p))
		;
	link_after(seg, list_off, p->node, p->preds, p->lv, tail);
}

uint64_t shm_skip_find(const struct shm_seg *seg, uint64_t list_off, const void *key, uint32_t klen)
{
	uint64_t preds[SHM_SKIP_MAX_HEIGHT];
	struct shm_skip_keyref kk;
	uint32_t l;

	if (klen == 0)
		return 0;
	ref_of_key(key, klen, &kk);
	writer_search(seg, list_off, &kk, preds);
	l = atomic_load_explicit(&links_of(seg, list_off, preds[0])[0], memory_order_relaxed);
	if (l == 0 || writer_cmp(seg, node_of(seg, link_off(l)), &kk) != 0)
		return 0;
	return link_off(l);
}

void shm_skip_set_rec(struct shm_seg *seg, uint64_t node_off, uint64_t rec_off)
{
	/* release: the new record is written before readers can load its
	 * offset (pairs with node_record's acquire). */
	atomic_store_explicit(&node_of(seg, node_off)->rec, (uint32_t)(rec_off >> 4), memory_order_release);
}

uint64_t shm_skip_unlink(struct shm_seg *seg, uint64_t list_off, const void *key, uint32_t klen)
{
	return shm_skip_unlink_tail(seg, list_off, key, klen, NULL);
}

uint64_t shm_skip_unlink_tail(struct shm_seg *seg, uint64_t list_off, const void *key, uint32_t klen,
			      struct shm_skip_tail *tail)
{
	struct shm_skip *h = head_of(seg, list_off);
	uint64_t preds[SHM_SKIP_MAX_HEIGHT], off;
	struct shm_skip_keyref kk;
	struct shm_skip_node *n;
	uint32_t lv, l, height;

	if (klen == 0)
		return 0;
	ref_of_key(key, klen, &kk);
	lv = writer_search(seg, list_off, &kk, preds);
	l = atomic_load_explicit(&links_of(seg, list_off, preds[0])[0], memory_order_relaxed);
	off = link_off(l);
	if (l == 0 || writer_cmp(seg, node_of(seg, off), &kk) != 0)
		return 0;
	n = node_of(seg, off);
	height = n->height < lv ? n->height : lv;
	/* Top-down, only where it is linked (a writer killed mid-link or
	 * mid-unlink left it linked at its lower levels only). release: pairs
	 * with the readers' acquire loads, so the successor is seen whole.
	 * n->next[] stays as it is: a reader standing on n goes on from it. */
	for (int k = (int)height - 1; k >= 0; k--) {
		_Atomic uint32_t *p = &links_of(seg, list_off, preds[k])[k];

		if (atomic_load_explicit(p, memory_order_relaxed) == l)
			atomic_store_explicit(p, atomic_load_explicit(&n->next[k], memory_order_relaxed),
					      memory_order_release);
		if (tail != NULL && tail->valid && tail->list == list_off && tail->last[k] == off)
			tail->last[k] = preds[k];
	}
	/* Then levels down past empty tops (after the unlink: the invariant). */
	while (lv > 1 && atomic_load_explicit(&h->next[lv - 1], memory_order_relaxed) == 0)
		lv--;
	atomic_store_explicit(&h->levels, lv, memory_order_relaxed);
	return off;
}

int shm_skip_build(struct shm_seg *seg, struct shm_slab *slab, const uint64_t *recs, size_t n,
		   uint64_t *rng, uint64_t *off)
{
	uint64_t list, tail[SHM_SKIP_MAX_HEIGHT] = {0}, node;
	const uint8_t *prev = NULL;
	uint32_t prevlen = 0, top = 1;
	int rc = shm_skip_create(seg, slab, &list);

	if (rc != SHM_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		struct shm_kv kv;
		uint32_t height;

		if (shm_record_view(seg, recs[i], &kv) != SHM_OK ||
		    (prev != NULL && key_cmp(prev, prevlen, kv.key, kv.klen) >= 0)) {
			rc = SHM_EINVAL;
			goto fail;
		}
		height = shm_skip_height(rng);
		rc = shm_skip_node_new(seg, slab, kv.key, kv.klen, recs[i], height, &node);
		if (rc != SHM_OK)
			goto fail;
		/* Appended at every level it has: nobody sees this list yet
		 * (the caller publishes its offset with release). */
		for (uint32_t k = 0; k < height; k++) {
			atomic_store_explicit(&links_of(seg, list, tail[k])[k], (uint32_t)(node >> 4),
					      memory_order_relaxed);
			tail[k] = node;
		}
		if (height > top)
			top = height;
		prev = kv.key;
		prevlen = kv.klen;
	}
	atomic_store_explicit(&head_of(seg, list)->levels, top, memory_order_relaxed);
	*off = list;
	return SHM_OK;
fail:
	shm_skip_destroy(seg, slab, list);
	return rc;
}

void shm_skip_destroy(struct shm_seg *seg, struct shm_slab *slab, uint64_t off)
{
	struct shm_skip_view v;
	struct shm_skip_keyref k;
	uint32_t l;

	if (shm_skip_view(seg, off, &v) != SHM_OK)
		return;
	l = atomic_load_explicit(&v.head->next[0], memory_order_relaxed);
	while (l != 0) {
		uint64_t node = link_off(l);
		const struct shm_skip_node *n = node_at(seg, node, 0, &k);
		uint32_t height;

		if (n == NULL)
			break;
		height = n->height;
		/* The link first: freeing writes free-list words into the block. */
		l = atomic_load_explicit(&n->next[0], memory_order_relaxed);
		if (height == 0 || shm_slab_free(seg, slab, node, shm_skip_node_bytes(height)) != SHM_OK)
			break; /* not a block of ours (or freed already: a cycle) */
	}
	shm_slab_free(seg, slab, off, shm_skip_bytes(seg, off));
}

int shm_skip_each(const struct shm_seg *seg, uint64_t list_off,
		  int (*fn)(void *arg, uint64_t node_off, uint64_t rec_off), void *arg)
{
	struct shm_skip_view v;
	struct shm_skip_keyref prev, k;
	uint64_t prev_off = 0;
	uint32_t l;

	if (shm_skip_view(seg, list_off, &v) != SHM_OK)
		return SHM_ECORRUPT;
	l = atomic_load_explicit(&v.head->next[0], memory_order_acquire);
	while (l != 0) {
		uint64_t node = link_off(l);
		const struct shm_skip_node *n = node_at(seg, node, 0, &k);
		struct shm_kv kv;
		int rc;

		if (n == NULL || node_record(seg, n, &k, &kv) != SHM_OK ||
		    (prev_off != 0 && order_ok(seg, prev_off, &prev, node, &k) != SHM_OK))
			return SHM_ECORRUPT;
		rc = fn(arg, node, shm_off(seg, kv.key) - SHM_RECORD_HDR);
		if (rc != 0)
			return rc;
		prev = k;
		prev_off = node;
		/* acquire: as the readers' (each may run beside a writer). */
		l = atomic_load_explicit(&n->next[0], memory_order_acquire);
	}
	return SHM_OK;
}
