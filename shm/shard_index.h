/*
 * shard_index.h — a shard writer's sorted index kept in step with its
 * table. Internal to shm/: shard.c calls these at each step of a write and
 * of a restart; users see shm_writer_index_build and the descriptor's
 * index_off (shard.h, segment.h).
 *
 * Order of the stores (what a reader may trust):
 *   insert  the node is linked (skiplist.h), then the table slot stored;
 *   update  the node is pointed at the new record, then the table slot;
 *   delete  the table slot is deleted, then the node unlinked.
 * So a key a get finds is in the index already, and a scan that starts
 * after a write was acknowledged sees it (both stores come before the
 * answer). Records keep the offset of their node (record.h, `node`), so an
 * update finds its node without a search; the writer trusts that field
 * only when the node points back at the record, and searches otherwise.
 *
 * Memory: a staged set takes a node from the slab at staging (that can
 * fail, as the record can); one that turns out to replace a key gives it
 * back at publication. A delete retires its node with its record.
 */
#ifndef AMORA_SHM_SHARD_INDEX_H
#define AMORA_SHM_SHARD_INDEX_H

#include "shm/shard.h"
#include "shm/slab.h"

/* The blocks a restarted writer keeps (shard.c, shm_writer_open). */
struct shm_live_set {
	struct shm_slab_live *v;
	size_t n, cap;
};

/* Add a block; tag as struct shm_slab_live's. Errors: SHM_ENOMEM. */
int shm_live_add(struct shm_live_set *l, uint64_t off, uint64_t size, size_t tag);

/* Tags of live blocks that are no table slot's record. */
#define SHM_LIVE_TABLE SIZE_MAX
#define SHM_LIVE_INDEX (SIZE_MAX - 1)

/* Staging a set whose record is `rec`: a node for it if the writer keeps
 * an index (*node 0 otherwise), its offset stored in the record. Errors:
 * SHM_ENOMEM (nothing allocated). */
int shm_index_stage(struct shm_writer *w, uint64_t rec, uint64_t *node);

/* Begin the index search of staged set s (shm_writer_prefetch), and
 * advance every search begun by one step (each publication). */
void shm_index_prefetch(struct shm_writer *w, const struct shm_staged *s);
void shm_index_advance(struct shm_writer *w);

/* Give back a staged node that was never linked. */
void shm_index_unstage(struct shm_writer *w, uint64_t node);

/* Publication of a set of record `rec` with its staged `node`: `old` is
 * the record it replaces (0: an insert). Cannot fail. */
void shm_index_publish_set(struct shm_writer *w, uint64_t node, uint64_t old, uint64_t rec);

/* Publication of a delete of the key of record `rec` (after its table
 * slot was deleted): unlinks its node and queues it on the retire list
 * (room was reserved at staging). */
void shm_index_publish_del(struct shm_writer *w, uint64_t rec);

/* The nodes of an adopted index, as walked (shm_index_adopt). */
struct shm_index_node {
	uint64_t node, rec;
};
struct shm_index_found {
	struct shm_index_node *v;
	size_t n, cap;
};

/* Restart, before the quiescence, step one (writes nothing but to
 * unpublish): validate the index a previous writer left and add its
 * blocks to `l` (tag SHM_LIVE_INDEX), its nodes to *f. An index that
 * fails validation is unpublished (nothing added). Sets w->index_off (0:
 * none). Errors: SHM_ESYS (no private memory; nothing changed). */
int shm_index_adopt(struct shm_writer *w, struct shm_live_set *l, struct shm_index_found *f);

/* Step two, only once shm_slab_check found the index's blocks overlap
 * nothing: repair it against the adopted table (a node whose key the table
 * lacks is unlinked, and marked dropped in l, which shm_slab_check left
 * sorted by offset; one pointing at another record than the table's is
 * pointed at the table's; each kept record names its node). Sets
 * w->index_stale when the index lacks some of the table's keys
 * (shm_writer_index_build then builds a complete one beside it). */
void shm_index_repair(struct shm_writer *w, struct shm_live_set *l, const struct shm_index_found *f);

/* Readers are told there is no index (release, before the quiescence). */
void shm_index_unpublish(struct shm_writer *w);

#endif
