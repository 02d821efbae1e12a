/*
 * shard_index.c — the writer's side of a shard's sorted index
 * (shard_index.h): staging and publishing nodes with the table's writes,
 * adopting a dead writer's index, building one from the table.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shm/shard_index.h"
#include "shm/skiplist.h"

/* Steps each begun index search takes per publication: with 8 writes
 * prefetched ahead (shardd/stage.c), about the ~25 steps a search of a
 * 16 K-key list takes. */
#define ADVANCE_STEPS 4

static struct shm_record *rec_at(const struct shm_writer *w, uint64_t off)
{
	return (struct shm_record *)(w->seg->base + off);
}

static struct shm_skip_node *node_at(const struct shm_writer *w, uint64_t off)
{
	return (struct shm_skip_node *)(w->seg->base + off);
}

static uint64_t node_bytes(const struct shm_writer *w, uint64_t node)
{
	return shm_skip_node_bytes(node_at(w, node)->height);
}

/* Room in a private array *v of *cap elements of `size` bytes for one
 * more after n (doubling, from 1024). Returns false if it cannot grow. */
static bool room_for_one(void **v, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap ? *cap * 2 : 1024;
	void *p;

	if (n < *cap)
		return true;
	if ((p = realloc(*v, c * size)) == NULL)
		return false;
	*v = p;
	*cap = c;
	return true;
}

int shm_live_add(struct shm_live_set *l, uint64_t off, uint64_t size, size_t tag)
{
	if (!room_for_one((void **)&l->v, &l->cap, l->n, sizeof(*l->v)))
		return SHM_ENOMEM;
	l->v[l->n++] = (struct shm_slab_live){ .off = off, .size = size, .tag = tag };
	return SHM_OK;
}

/* The node record `rec` names, if it is a block of this shard that points
 * back at `rec` (0 otherwise: the writer then searches). */
static uint64_t node_of(const struct shm_writer *w, uint64_t rec)
{
	uint64_t n = (uint64_t)rec_at(w, rec)->node << 4;
	const struct shm_skip_node *x = shm_ptr(w->seg, n, sizeof(*x));

	if (n == 0 || x == NULL || shm_chunk_owner(w->seg, n) != w->sh->id + 1 ||
	    x->height == 0 || x->height > SHM_SKIP_MAX_HEIGHT ||
	    atomic_load_explicit(&x->rec, memory_order_relaxed) != (uint32_t)(rec >> 4))
		return 0;
	return n;
}

int shm_index_stage(struct shm_writer *w, uint64_t rec, uint64_t *node)
{
	struct shm_record *r = rec_at(w, rec);
	int rc;

	*node = 0;
	if (w->index_off == 0)
		return SHM_OK;
	rc = shm_skip_node_new(w->seg, &w->sh->slab, r->data, shm_rec_klen(r), rec, shm_skip_height(&w->rng),
			       node);
	if (rc == SHM_OK)
		r->node = (uint32_t)(*node >> 4);
	return rc;
}

/* ---------- searches ahead of publication ---------- */

void shm_index_prefetch(struct shm_writer *w, const struct shm_staged *s)
{
	uint32_t free_paths = ~w->paths_used & ((1u << SHM_WRITER_PATHS) - 1);

	if (w->index_off == 0 || s->node == 0 || free_paths == 0)
		return;
	int i = __builtin_ctz(free_paths);

	shm_skip_path_start(w->seg, w->index_off, &w->paths[i], s->node, &w->tail);
	w->paths_used |= 1u << i;
	if (w->paths[i].level >= 0)
		w->paths_searching |= 1u << i;
}

void shm_index_advance(struct shm_writer *w)
{
	/* Round-robin, so that the searches' cache misses overlap. */
	for (int step = 0; step < ADVANCE_STEPS && w->paths_searching; step++)
		for (uint32_t m = w->paths_searching; m; m &= m - 1) {
			int i = __builtin_ctz(m);

			if (!shm_skip_path_step(w->seg, w->index_off, &w->paths[i]))
				w->paths_searching &= ~(1u << i);
		}
}

/* The search begun for `node`, taken off the list (NULL: none). */
static struct shm_skip_path *path_take(struct shm_writer *w, uint64_t node)
{
	for (uint32_t m = w->paths_used; m; m &= m - 1) {
		int i = __builtin_ctz(m);

		if (w->paths[i].node == node) {
			w->paths_used &= ~(1u << i);
			w->paths_searching &= ~(1u << i);
			return &w->paths[i];
		}
	}
	return NULL;
}

/* Node `gone` was unlinked: searches that stand on it or kept it start
 * again (its links are no longer the list's). */
static void paths_forget(struct shm_writer *w, uint64_t gone)
{
	for (uint32_t m = w->paths_used; m; m &= m - 1) {
		int i = __builtin_ctz(m);
		struct shm_skip_path *p = &w->paths[i];

		if (shm_skip_path_uses(p, gone)) {
			shm_skip_path_start(w->seg, w->index_off, p, p->node, &w->tail);
			if (p->level >= 0)
				w->paths_searching |= 1u << i;
		}
	}
}

void shm_index_unstage(struct shm_writer *w, uint64_t node)
{
	if (node != 0) {
		path_take(w, node);
		shm_slab_free(w->seg, &w->sh->slab, node, node_bytes(w, node));
	}
}

void shm_index_publish_set(struct shm_writer *w, uint64_t node, uint64_t old, uint64_t rec)
{
	struct shm_record *r = rec_at(w, rec);
	uint64_t n;

	if (w->index_off == 0)
		return;
	/* A stale index (a restart's, until its rebuild) may leave records
	 * naming freed nodes: search instead. */
	n = old != 0 && !w->index_stale ? node_of(w, old) : 0;
	if (old != 0 && n == 0)
		n = shm_skip_find(w->seg, w->index_off, r->data, shm_rec_klen(r));
	if (n != 0) {
		/* An update: the record names its node before the node names
		 * the record (readers never read the field). */
		r->node = (uint32_t)(n >> 4);
		shm_skip_set_rec(w->seg, n, rec);
		shm_index_unstage(w, node);
		return;
	}
	/* An insert (or a replaced key the index lacked: a restarted writer
	 * builds a complete index anyway, shm_index_adopt). */
	if (node == 0) {
		/* A replaced key a stale index lacks, set while the table was
		 * too full to stage a node for it: the rebuild will have it. */
		w->index_stale = true;
		return;
	}
	{
		struct shm_skip_path *p = path_take(w, node);

		if (p != NULL)
			shm_skip_link_path(w->seg, w->index_off, p, &w->tail);
		else
			shm_skip_link_tail(w->seg, w->index_off, node, &w->tail);
	}
}

void shm_index_publish_del(struct shm_writer *w, uint64_t rec)
{
	const struct shm_record *r = rec_at(w, rec);
	uint64_t n;
	int rc;

	if (w->index_off == 0)
		return;
	n = shm_skip_unlink_tail(w->seg, w->index_off, r->data, shm_rec_klen(r), &w->tail);
	if (n == 0)
		return;
	paths_forget(w, n);
	rc = shm_retire_push(&w->retired, n, node_bytes(w, n));
	assert(rc == SHM_OK); /* reserved at staging */
	(void)rc;
}

/* ---------- a restart: adopting the index a dead writer left ---------- */

static int found_add(void *arg, uint64_t node, uint64_t rec)
{
	struct shm_index_found *f = arg;

	if (!room_for_one((void **)&f->v, &f->cap, f->n, sizeof(*f->v)))
		return SHM_ESYS;
	f->v[f->n++] = (struct shm_index_node){ node, rec };
	return 0;
}

/* The record the table holds for the key of record `rec`, 0: none. */
static uint64_t table_rec_for(const struct shm_writer *w, uint64_t rec)
{
	const struct shm_record *r = rec_at(w, rec);
	struct shm_table *t = (struct shm_table *)(w->seg->base + w->table_off);
	shm_slot_pos pos;

	if (!shm_table_locate(w->seg, t, r->data, shm_rec_klen(r), shm_hash(r->data, shm_rec_klen(r)), &pos))
		return 0;
	return shm_table_record(w->seg, t, pos);
}

void shm_index_unpublish(struct shm_writer *w)
{
	w->index_off = 0;
	w->index_stale = false;
	/* Release, before the quiescence: a reader that enters after it
	 * cannot reach the memory the rebuild frees. */
	atomic_store_explicit(&w->sh->index_off, 0, memory_order_release);
}

int shm_index_adopt(struct shm_writer *w, struct shm_live_set *l, struct shm_index_found *f)
{
	uint64_t off = atomic_load_explicit(&w->sh->index_off, memory_order_acquire);
	struct shm_skip_view v;
	int rc;

	w->index_off = 0;
	w->index_stale = false;
	if (off == 0)
		return SHM_OK;
	if (w->table_off == 0 || shm_skip_view(w->seg, off, &v) != SHM_OK ||
	    shm_chunk_owner(w->seg, off) != w->sh->id + 1) {
		shm_index_unpublish(w);
		return SHM_OK;
	}
	rc = shm_skip_each(w->seg, off, found_add, f);
	for (size_t i = 0; rc == SHM_OK && i < f->n; i++)
		if (shm_chunk_owner(w->seg, f->v[i].node) != w->sh->id + 1)
			rc = SHM_ECORRUPT;
	for (size_t i = 0; rc == SHM_OK && i < f->n; i++)
		rc = shm_live_add(l, f->v[i].node, node_bytes(w, f->v[i].node), SHM_LIVE_INDEX);
	if (rc == SHM_OK)
		rc = shm_live_add(l, off, shm_skip_bytes(w->seg, off), SHM_LIVE_INDEX);
	if (rc == SHM_ECORRUPT) {
		shm_index_unpublish(w);
		f->n = 0;
		return SHM_OK;
	}
	if (rc == SHM_OK)
		w->index_off = off;
	return rc == SHM_OK ? SHM_OK : SHM_ESYS;
}

/* The live entry of block `off` in l (sorted by offset: shm_slab_check). */
static struct shm_slab_live *live_find(struct shm_live_set *l, uint64_t off)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->v[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->v[lo].off == off ? &l->v[lo] : NULL;
}

void shm_index_repair(struct shm_writer *w, struct shm_live_set *l, const struct shm_index_found *f)
{
	uint64_t kept = 0, live;

	for (size_t i = 0; i < f->n; i++) {
		uint64_t trec = table_rec_for(w, f->v[i].rec);

		if (trec == 0)
			continue; /* unlinked below, after the walk's records were read */
		if (trec != f->v[i].rec)
			shm_skip_set_rec(w->seg, f->v[i].node, trec);
		rec_at(w, trec)->node = (uint32_t)(f->v[i].node >> 4);
		kept++;
	}
	for (size_t i = 0; i < f->n; i++) {
		const struct shm_record *r = rec_at(w, f->v[i].rec);
		struct shm_slab_live *e;

		if (table_rec_for(w, f->v[i].rec) != 0)
			continue;
		shm_skip_unlink(w->seg, w->index_off, r->data, shm_rec_klen(r));
		if ((e = live_find(l, f->v[i].node)) != NULL)
			e->dropped = 1; /* freed by the rebuild, after the quiescence */
	}
	live = atomic_load_explicit(&((struct shm_table *)(w->seg->base + w->table_off))->live,
				    memory_order_relaxed);
	w->index_stale = kept != live;
}

/* ---------- building an index from the table ---------- */

/* A live record and the first 16 bytes of its key, big-endian, so that
 * most comparisons of the sort touch no record. */
struct sort_ent {
	uint64_t k0, k1;
	uint64_t rec;
	const struct shm_record *r;
};

static int sort_cmp(const void *pa, const void *pb)
{
	const struct sort_ent *a = pa, *b = pb;
	uint32_t n;
	int c;

	if (a->k0 != b->k0)
		return a->k0 < b->k0 ? -1 : 1;
	if (a->k1 != b->k1)
		return a->k1 < b->k1 ? -1 : 1;
	n = shm_rec_klen(a->r) < shm_rec_klen(b->r) ? shm_rec_klen(a->r) : shm_rec_klen(b->r);
	c = memcmp(a->r->data, b->r->data, n);
	if (c != 0)
		return c;
	return shm_rec_klen(a->r) < shm_rec_klen(b->r) ? -1 : shm_rec_klen(a->r) > shm_rec_klen(b->r);
}

struct collect {
	const struct shm_writer *w;
	struct sort_ent *v;
	size_t n, cap;
};

static int collect_rec(void *arg, const struct shm_kv *kv)
{
	struct collect *c = arg;
	uint64_t rec = shm_off(c->w->seg, kv->key) - SHM_RECORD_HDR;

	if (c->n == c->cap)
		return SHM_ECORRUPT; /* more keys than the table counts */
	c->v[c->n++] = (struct sort_ent){ shm_skip_key_word(kv->key, kv->klen),
					   kv->klen > 8 ? shm_skip_key_word(kv->key + 8, kv->klen - 8) : 0, rec,
					   rec_at(c->w, rec) };
	return 0;
}

static int name_node(void *arg, uint64_t node, uint64_t rec)
{
	rec_at(arg, rec)->node = (uint32_t)(node >> 4);
	return 0;
}

static int retire_node(void *arg, uint64_t node, uint64_t rec)
{
	struct shm_writer *w = arg;

	(void)rec;
	return shm_retire_push(&w->retired, node, node_bytes(w, node));
}

/* An index of every key the table holds, unpublished, in *off. */
static int build(struct shm_writer *w, uint64_t *off)
{
	struct shm_table *t = (struct shm_table *)(w->seg->base + w->table_off);
	struct collect c = { w, NULL, 0, atomic_load_explicit(&t->live, memory_order_relaxed) };
	uint64_t *recs;
	int rc;

	c.v = malloc((c.cap ? c.cap : 1) * sizeof(*c.v));
	recs = malloc((c.cap ? c.cap : 1) * sizeof(*recs));
	if (c.v == NULL || recs == NULL) {
		free(c.v);
		free(recs);
		return SHM_ESYS;
	}
	rc = shm_writer_each(w, collect_rec, &c);
	if (rc == SHM_OK) {
		qsort(c.v, c.n, sizeof(*c.v), sort_cmp);
		for (size_t i = 0; i < c.n; i++)
			recs[i] = c.v[i].rec;
		rc = shm_skip_build(w->seg, &w->sh->slab, recs, c.n, &w->rng, off);
	}
	free(c.v);
	free(recs);
	return rc == SHM_EINVAL ? SHM_ECORRUPT : rc;
}

int shm_writer_index_build(struct shm_writer *w)
{
	uint64_t old = w->index_off, off = 0;
	int rc = build(w, &off);

	if (rc == SHM_ENOMEM && shm_writer_reclaim_wait(w))
		rc = build(w, &off);
	if (rc != SHM_OK)
		return rc;
	shm_skip_each(w->seg, off, name_node, w);
	w->index_off = off;
	w->index_stale = false;
	/* Release: a reader that loads the offset sees the whole list. */
	atomic_store_explicit(&w->sh->index_off, off, memory_order_release);
	if (old != 0) {
		/* Unreachable for readers that enter from now on; retired, so
		 * those inside finish on it. If the retire list cannot grow,
		 * what it could not take stays allocated until the next
		 * restart (which frees whatever no index or table holds). */
		if (shm_skip_each(w->seg, old, retire_node, w) == SHM_OK)
			shm_retire_push(&w->retired, old, shm_skip_bytes(w->seg, old));
	}
	return SHM_OK;
}
