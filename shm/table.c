/*
 * table.c — Swiss table probing, writer mutations and rebuilds (table.h).
 *
 * The reader path (shm_table_find) is the hot path of every GET in every
 * client, so it is written for the memory system: the group's three cache
 * lines (control bytes and slots) are requested together before the
 * control bytes are compared, so a hit costs one miss for the group and one
 * for the record, and a miss usually one. Nothing the reader loads from
 * shared memory is trusted: offsets go through shm_ptr/shm_record_view and
 * the probe is bounded by the group count, so even a damaged table cannot
 * make a reader loop or fault.
 *
 * The writer functions trust the table (only this process writes it) but
 * still validate records they dereference.
 */
#include <emmintrin.h>
#include <string.h>

#include "shm/record.h"
#include "shm/table.h"

#define SLOT_OFF_MASK 0xffffffffULL

/* Slab blocks are only 16-aligned, but groups must start on a cache line
 * for the prefetch arithmetic: they start at the first line boundary after
 * the header, which the allocation leaves room for. */
_Static_assert(sizeof(struct shm_table) <= 64, "header plus alignment slack must fit in 128");
_Static_assert(sizeof(struct shm_group) % 16 == 0, "control bytes of every group 16-aligned");

static uint64_t hdr_bytes(void)
{
	return 128;
}

static uint64_t groups_start(uint64_t table_off)
{
	return (table_off + sizeof(struct shm_table) + 63) & ~63ULL;
}

static uint64_t groups_bytes(uint64_t ngroups)
{
	return (ngroups * sizeof(struct shm_group) + 63) & ~63ULL;
}

uint64_t shm_table_bytes(uint64_t ngroups, bool bloom)
{
	return hdr_bytes() + groups_bytes(ngroups) +
	       (bloom ? shm_bloom_blocks(ngroups) * sizeof(struct shm_bloom_block) : 0);
}

uint32_t shm_group_match_sse2(const struct shm_group *g, uint8_t byte)
{
	__m128i ctrl = _mm_load_si128((const __m128i *)(const void *)g->ctrl);
	uint32_t m = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(ctrl, _mm_set1_epi8((char)byte)));

	/* The vector load is not an atomic load in C11 terms; on x86 each byte
	 * is read whole, and this fence orders the slot loads that follow. */
	atomic_thread_fence(memory_order_acquire);
	return m;
}

uint32_t shm_group_match_scalar(const struct shm_group *g, uint8_t byte)
{
	uint32_t m = 0;

	for (int i = 0; i < SHM_GROUP_SLOTS; i++)
		if (atomic_load_explicit(&g->ctrl[i], memory_order_acquire) == byte)
			m |= 1u << i;
	return m;
}

#if defined(SHM_SCALAR) || defined(__SANITIZE_THREAD__)
#define group_match shm_group_match_scalar
#else
#define group_match shm_group_match_sse2
#endif

static struct shm_group *groups_of(const struct shm_seg *seg, const struct shm_table *t)
{
	return (struct shm_group *)(seg->base + t->groups_off);
}

static struct shm_bloom_block *bloom_of(const struct shm_seg *seg, const struct shm_table *t)
{
	return (struct shm_bloom_block *)(seg->base + t->bloom_off);
}

int shm_table_create(struct shm_seg *seg, struct shm_slab *slab, uint64_t ngroups, bool bloom,
		     uint64_t *off)
{
	uint64_t bytes, groups_off;
	struct shm_table *t;
	struct shm_group *g;
	int rc;

	if (ngroups == 0 || ngroups > SHM_TABLE_MAX_GROUPS ||
	    ngroups > seg->size / sizeof(struct shm_group))
		return SHM_EINVAL;
	bytes = shm_table_bytes(ngroups, bloom);
	rc = shm_slab_alloc(seg, slab, bytes, off);
	if (rc != SHM_OK)
		return rc;
	t = (struct shm_table *)(seg->base + *off);
	groups_off = groups_start(*off);
	t->ngroups = ngroups;
	t->nblocks = bloom ? shm_bloom_blocks(ngroups) : 0;
	t->bytes = bytes;
	t->groups_off = groups_off;
	t->bloom_off = groups_off + groups_bytes(ngroups);
	atomic_store_explicit(&t->live, 0, memory_order_relaxed);
	atomic_store_explicit(&t->dead, 0, memory_order_relaxed);
	g = groups_of(seg, t);
	for (uint64_t i = 0; i < ngroups; i++) {
		memset((void *)g[i].ctrl, SHM_CTRL_EMPTY, SHM_GROUP_SLOTS);
		memset((void *)g[i].slot, 0, sizeof(g[i].slot));
	}
	memset((void *)bloom_of(seg, t), 0, t->nblocks * sizeof(struct shm_bloom_block));
	return SHM_OK;
}

int shm_table_view(const struct shm_seg *seg, uint64_t off, struct shm_table_view *v)
{
	/* volatile: each field is loaded once, then only the checked copy is
	 * used, whatever happens to the shared bytes afterwards. */
	const volatile struct shm_table *t = shm_ptr(seg, off, sizeof(struct shm_table));
	uint64_t ng, nb, bytes, goff, boff;

	if (t == NULL || (off & 15))
		return SHM_ECORRUPT;
	ng = t->ngroups;
	nb = t->nblocks;
	bytes = t->bytes;
	goff = t->groups_off;
	boff = t->bloom_off;
	if (ng == 0 || ng > SHM_TABLE_MAX_GROUPS || ng > seg->size / sizeof(struct shm_group) ||
	    (nb != 0 && nb != shm_bloom_blocks(ng)) || bytes != shm_table_bytes(ng, nb != 0) ||
	    goff != groups_start(off) || boff != goff + groups_bytes(ng) ||
	    shm_ptr(seg, off, bytes) == NULL)
		return SHM_ECORRUPT;
	v->groups = (const struct shm_group *)(seg->base + goff);
	v->bloom = (const struct shm_bloom_block *)(seg->base + boff);
	v->ngroups = ng;
	v->nblocks = nb;
	return SHM_OK;
}

int shm_table_view_memo(const struct shm_seg *seg, uint64_t off, struct shm_table_memo *m,
			const struct shm_table_view **v)
{
	int rc;

	if (off != 0 && off == m->off) {
		const volatile struct shm_table *t = (const volatile struct shm_table *)(seg->base + off);

		if (t->ngroups == m->v.ngroups && t->nblocks == m->v.nblocks) {
			*v = &m->v;
			return SHM_OK;
		}
	}
	rc = shm_table_view(seg, off, &m->v);
	m->off = rc == SHM_OK ? off : 0;
	*v = &m->v;
	return rc;
}

void shm_table_prefetch_record(const struct shm_seg *seg, const struct shm_table_view *v,
			       uint64_t h)
{
	uint32_t shash = shm_hash_slot(h);
	const struct shm_group *g = &v->groups[shm_group_home(shash, v->ngroups)];

	for (uint32_t m = group_match(g, shm_hash_tag(h)); m; m &= m - 1) {
		uint64_t sv = atomic_load_explicit(&g->slot[__builtin_ctz(m)], memory_order_relaxed);
		uint64_t off = (sv & SLOT_OFF_MASK) << 4;

		if (sv != 0 && (uint32_t)(sv >> 32) == shash) {
			if (off < seg->size)
				__builtin_prefetch(seg->base + off);
			return;
		}
	}
}

static void prefetch_group(const struct shm_group *g)
{
	__builtin_prefetch((const char *)g + 64);
	__builtin_prefetch((const char *)g + 128);
}

/* Does slot value `sv` hold `key`? 1 yes (*kv is its record), 0 no,
 * SHM_ECORRUPT. */
static int slot_holds(const struct shm_seg *seg, uint64_t sv, uint32_t shash, const void *key,
		      uint32_t klen, struct shm_kv *kv)
{
	if (sv == 0 || (uint32_t)(sv >> 32) != shash)
		return 0;
	if (shm_record_view(seg, (sv & SLOT_OFF_MASK) << 4, kv) != SHM_OK)
		return SHM_ECORRUPT;
	return kv->klen == klen && memcmp(kv->key, key, klen) == 0;
}

int shm_table_find(const struct shm_seg *seg, const struct shm_table_view *v, const void *key,
		   uint32_t klen, uint64_t h, bool use_bloom, struct shm_kv *kv)
{
	const struct shm_group *groups = v->groups;
	uint64_t ng = v->ngroups;
	uint32_t shash = shm_hash_slot(h);
	uint8_t tag = shm_hash_tag(h);
	uint64_t gi = shm_group_home(shash, ng);

	if (use_bloom && v->nblocks != 0 &&
	    !shm_bloom_maybe(v->bloom, v->nblocks, shm_hash_summary(h)))
		return SHM_ENOTFOUND;
	prefetch_group(&groups[gi]);
	for (uint64_t step = 1; step <= ng; step++) {
		const struct shm_group *g = &groups[gi];
		for (uint32_t m = group_match(g, tag); m; m &= m - 1) {
			int s = __builtin_ctz(m);
			uint64_t sv = atomic_load_explicit(&g->slot[s], memory_order_acquire);
			int rc = slot_holds(seg, sv, shash, key, klen, kv);
			if (rc != 0)
				return rc < 0 ? rc : SHM_OK;
		}
		if (group_match(g, SHM_CTRL_EMPTY))
			return SHM_ENOTFOUND;
		gi = shm_group_next(gi, ng);
	}
	return SHM_ENOTFOUND;
}

bool shm_table_locate(const struct shm_seg *seg, struct shm_table *t, const void *key,
		      uint32_t klen, uint64_t h, shm_slot_pos *pos)
{
	struct shm_group *groups = groups_of(seg, t);
	uint32_t shash = shm_hash_slot(h);
	uint8_t tag = shm_hash_tag(h);
	uint64_t gi = shm_group_home(shash, t->ngroups);

	*pos = UINT64_MAX;
	for (uint64_t step = 1; step <= t->ngroups; step++) {
		struct shm_group *g = &groups[gi];
		for (uint32_t m = group_match(g, tag); m; m &= m - 1) {
			int s = __builtin_ctz(m);
			uint64_t sv = atomic_load_explicit(&g->slot[s], memory_order_relaxed);
			struct shm_kv kv;
			if (slot_holds(seg, sv, shash, key, klen, &kv) == 1) {
				*pos = gi * SHM_GROUP_SLOTS + (uint64_t)s;
				return true;
			}
		}
		uint32_t empty = group_match(g, SHM_CTRL_EMPTY);
		uint32_t usable = empty | group_match(g, SHM_CTRL_DELETED);
		if (*pos == UINT64_MAX && usable)
			*pos = gi * SHM_GROUP_SLOTS + (uint64_t)__builtin_ctz(usable);
		if (empty)
			break;
		gi = shm_group_next(gi, t->ngroups);
	}
	return false;
}

/* live and dead have one writer, the shard's: a relaxed load and store,
 * no locked instruction; readers (stats) load them relaxed. */
static void count_add(_Atomic uint64_t *c, int64_t d)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)d,
			      memory_order_relaxed);
}

static uint64_t slot_value(uint64_t h, uint64_t rec_off)
{
	return (uint64_t)shm_hash_slot(h) << 32 | (rec_off >> 4);
}

void shm_table_insert_at(struct shm_seg *seg, struct shm_table *t, shm_slot_pos pos, uint64_t h,
			 uint64_t rec_off, bool bloom)
{
	struct shm_group *g = &groups_of(seg, t)[pos / SHM_GROUP_SLOTS];
	unsigned s = pos % SHM_GROUP_SLOTS;
	bool was_dead = atomic_load_explicit(&g->ctrl[s], memory_order_relaxed) == SHM_CTRL_DELETED;

	if (bloom && t->nblocks != 0)
		shm_bloom_add(bloom_of(seg, t), t->nblocks, shm_hash_summary(h));
	atomic_store_explicit(&g->slot[s], slot_value(h, rec_off), memory_order_release);
	atomic_store_explicit(&g->ctrl[s], shm_hash_tag(h), memory_order_release);
	count_add(&t->live, 1);
	if (was_dead)
		count_add(&t->dead, -1);
}

void shm_table_prefetch_group(const struct shm_seg *seg, const struct shm_table *t, uint64_t h)
{
	const char *g = (const char *)&groups_of(seg, t)[shm_group_home(shm_hash_slot(h), t->ngroups)];

	__builtin_prefetch(g, 1);
	__builtin_prefetch(g + 64, 1);
}

uint64_t shm_table_view_record(const struct shm_table_view *v, uint64_t g, unsigned i)
{
	/* acquire: pairs with the release store of the control byte that
	 * made the slot full (insert), so the slot word is the one it holds */
	if (atomic_load_explicit(&v->groups[g].ctrl[i], memory_order_acquire) & 0x80)
		return 0;
	return (atomic_load_explicit(&v->groups[g].slot[i], memory_order_acquire) & SLOT_OFF_MASK) << 4;
}

uint64_t shm_table_record(const struct shm_seg *seg, const struct shm_table *t, shm_slot_pos pos)
{
	const struct shm_group *g = &groups_of(seg, t)[pos / SHM_GROUP_SLOTS];
	uint64_t sv = atomic_load_explicit(&g->slot[pos % SHM_GROUP_SLOTS], memory_order_relaxed);

	return (sv & SLOT_OFF_MASK) << 4;
}

void shm_table_replace_at(struct shm_seg *seg, struct shm_table *t, shm_slot_pos pos, uint64_t h,
			  uint64_t rec_off)
{
	struct shm_group *g = &groups_of(seg, t)[pos / SHM_GROUP_SLOTS];

	atomic_store_explicit(&g->slot[pos % SHM_GROUP_SLOTS], slot_value(h, rec_off),
			      memory_order_release);
}

void shm_table_delete_at(struct shm_seg *seg, struct shm_table *t, shm_slot_pos pos)
{
	struct shm_group *g = &groups_of(seg, t)[pos / SHM_GROUP_SLOTS];
	unsigned s = pos % SHM_GROUP_SLOTS;

	atomic_store_explicit(&g->ctrl[s], SHM_CTRL_DELETED, memory_order_release);
	atomic_store_explicit(&g->slot[s], 0, memory_order_release);
	count_add(&t->live, -1);
	count_add(&t->dead, 1);
}

void shm_table_recount(struct shm_seg *seg, struct shm_table *t)
{
	const struct shm_group *groups = groups_of(seg, t);
	uint64_t live = 0, dead = 0;

	for (uint64_t gi = 0; gi < t->ngroups; gi++) {
		for (int s = 0; s < SHM_GROUP_SLOTS; s++) {
			uint8_t c = atomic_load_explicit(&groups[gi].ctrl[s], memory_order_relaxed);

			live += !(c & 0x80);
			dead += c == SHM_CTRL_DELETED;
		}
	}
	atomic_store_explicit(&t->live, live, memory_order_relaxed);
	atomic_store_explicit(&t->dead, dead, memory_order_relaxed);
}

bool shm_table_has_room(const struct shm_table *t, uint64_t more)
{
	uint64_t used = atomic_load_explicit(&t->live, memory_order_relaxed) +
			atomic_load_explicit(&t->dead, memory_order_relaxed) + more;

	return used * SHM_TABLE_MAX_LOAD_DEN <=
	       t->ngroups * SHM_GROUP_SLOTS * SHM_TABLE_MAX_LOAD_NUM;
}

/* Place a summary in a table that has no tombstones and no duplicates:
 * the first empty slot on its probe sequence. */
static int place(struct shm_seg *seg, struct shm_table *t, uint64_t summary, uint64_t rec_off,
		 bool bloom)
{
	struct shm_group *groups = groups_of(seg, t);
	uint64_t gi = shm_group_home(shm_hash_slot(summary), t->ngroups);

	for (uint64_t step = 1; step <= t->ngroups; step++) {
		uint32_t empty = group_match(&groups[gi], SHM_CTRL_EMPTY);
		if (empty) {
			shm_table_insert_at(seg, t, gi * SHM_GROUP_SLOTS + (uint64_t)__builtin_ctz(empty),
					    summary, rec_off, bloom);
			return SHM_OK;
		}
		gi = shm_group_next(gi, t->ngroups);
	}
	return SHM_ENOMEM;
}

/* The summary of a live slot (control byte c, slot value sv), or -1 for
 * an empty, deleted or cleared one. */
static int64_t live_summary(uint8_t c, uint64_t sv)
{
	if ((c & 0x80) || sv == 0)
		return -1;
	return (int64_t)((sv >> 32) << 7 | c);
}

void shm_table_bloom_fill(struct shm_seg *seg, struct shm_table *t)
{
	const struct shm_group *groups = groups_of(seg, t);

	if (t->nblocks == 0)
		return;
	for (uint64_t gi = 0; gi < t->ngroups; gi++)
		for (int s = 0; s < SHM_GROUP_SLOTS; s++) {
			int64_t summary = live_summary(atomic_load_explicit(&groups[gi].ctrl[s], memory_order_relaxed),
						       atomic_load_explicit(&groups[gi].slot[s], memory_order_relaxed));

			if (summary >= 0)
				shm_bloom_add(bloom_of(seg, t), t->nblocks, (uint64_t)summary);
		}
}

int shm_table_copy(struct shm_seg *seg, const struct shm_table *from, struct shm_table *to,
		   bool bloom)
{
	const struct shm_group *groups = groups_of(seg, from);

	if (atomic_load_explicit(&from->live, memory_order_relaxed) * SHM_TABLE_MAX_LOAD_DEN >
	    to->ngroups * SHM_GROUP_SLOTS * SHM_TABLE_MAX_LOAD_NUM)
		return SHM_ENOMEM;
	for (uint64_t gi = 0; gi < from->ngroups; gi++) {
		const struct shm_group *g = &groups[gi];
		for (int s = 0; s < SHM_GROUP_SLOTS; s++) {
			uint64_t sv = atomic_load_explicit(&g->slot[s], memory_order_relaxed);
			int64_t summary = live_summary(atomic_load_explicit(&g->ctrl[s], memory_order_relaxed), sv);
			if (summary < 0)
				continue;
			int rc = place(seg, to, (uint64_t)summary, (sv & SLOT_OFF_MASK) << 4, bloom);
			if (rc != SHM_OK)
				return rc;
		}
	}
	return SHM_OK;
}
