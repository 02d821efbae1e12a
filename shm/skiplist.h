/*
 * skiplist.h — the per-shard sorted index: a skip list in the data segment,
 * one writer, lock-free readers in other processes.
 *
 * A skip list after Pugh ("Skip Lists: A Probabilistic Alternative to
 * Balanced Trees", 1990), with these changes (as Redis's t_zset.c lists
 * its own):
 *   - one writer (the shard's), no lock: readers in other processes walk
 *     the list while it changes, inside an epoch section (epoch.h);
 *   - nodes are slab blocks of the shard (slab.h), referenced by 32-bit
 *     links holding segment offset / 16 (0 = end): a segment is at most
 *     64 GiB, as for the table's slots;
 *   - every offset a reader loads is bounds-checked (shm_ptr with the
 *     node's whole size) at every hop, each node field is read once, and a
 *     hop to a key not strictly greater than the one it leaves is
 *     SHM_ECORRUPT, which also bounds every walk on damaged memory (a
 *     seek leaves up to 32 hops in a row between keys of one 14-byte
 *     prefix unchecked: skiplist.c, pass_ok);
 *   - a node holds no key, only the offset of the record (record.h) that
 *     holds key and value, plus the key's first SHM_SKIP_PREFIX bytes
 *     inline: most comparisons on the way down load no record;
 *   - insert links a fully built node bottom-up, one release store per
 *     level; delete unlinks top-down and leaves the node's own links as
 *     they were; the caller retires the unlinked node through EBR, so a
 *     reader standing on it goes on forward (the guarantee, below);
 *   - no backward links and no span counts: reverse iteration is a
 *     predecessor search from the head, rank is not supported;
 *   - an update of a key's value does not touch the links: it stores the
 *     new record's offset in the node (release);
 *   - p = 1/4 (as Redis), heights from a splitmix64 state the writer keeps
 *     (deterministic for a seed), at most SHM_SKIP_MAX_HEIGHT = 24;
 *   - no counter of nodes (the shard's table counts keys);
 *   - a reader's seek runs in steps, one hop each, each step prefetching
 *     what the next one loads, so a client can step the seeks of all
 *     shards in lock-step and overlap their cache misses.
 *
 * Key order: unsigned bytes, memcmp over the shorter length, then the
 * shorter key first ("a" < "a\0" < "ab" < "b").
 *
 * Layout, little-endian, every block 16-byte aligned (slab blocks are).
 *
 * Node (one slab block of shm_skip_node_bytes(height) bytes):
 *   0   _Atomic u32 rec      record offset / 16; set before the node is
 *                            linked; shm_skip_set_rec stores a new one
 *                            (release). Never 0 in a linked node.
 *   4   u8  height           1 .. SHM_SKIP_MAX_HEIGHT
 *   5   u8  plen             min(klen, SHM_SKIP_PREFIX): 1 .. 14
 *   6   u8  prefix[14]       the key's first plen bytes, zero padded
 *   20  _Atomic u32 next[height]   node offset / 16 of the next node at
 *                            each level, 0 = end
 * A node of height 1 (3 in 4 nodes) is a 24-byte payload: a 32-byte
 * block; heights 2 to 4 take 48 bytes (about 36 bytes a node on average).
 * 14 inline bytes, not fewer: keys such as "key:%012u" or "user:1234:name"
 * share their first 6 to 10 bytes, and a prefix that decides only past them
 * spares a record load at nearly every hop.
 * When plen < SHM_SKIP_PREFIX the key is wholly inline (klen == plen).
 *
 * Head (struct shm_skip, one slab block of shm_skip_bytes()):
 *   0   u32 magic            SHM_SKIP_MAGIC
 *   4   _Atomic u32 levels   1 .. SHM_SKIP_MAX_HEIGHT: no node is linked
 *                            at a level >= levels, at any instruction
 *                            (link raises it before it links, unlink
 *                            lowers it after), so the writer's searches
 *                            and the readers start at levels - 1 (a
 *                            reader that loaded an older value starts
 *                            higher or lower: both correct)
 *   8   _Atomic u32 next[SHM_SKIP_MAX_HEIGHT]   first node at each level
 *
 * Invariant: every node linked at a level k > 0 is linked at level 0 too,
 * and at every level the linked nodes are in strictly increasing key order.
 * Linking bottom-up and unlinking top-down keep it at every instruction, so
 * a writer killed anywhere (mid-link, mid-unlink) leaves a list readers,
 * shm_skip_each, find, link and unlink work on: a node linked only at its
 * lower levels is an ordinary node of that height to all of them (its
 * links above are never read: nothing arrives at it there).
 *
 * Memory order (pairs with DESIGN.md §5 style):
 *   - link: the node's fields and all its next[] are written first; then
 *     pred.next[0] := node (release), then level 1, ... Readers load every
 *     link with acquire, so a node reached through any link is seen whole.
 *   - unlink: for each level from the top, pred.next[k] := node.next[k]
 *     (release: the reader that loads it must see that successor whole
 *     too). node.next[] are left as they were.
 *   - set_rec: the new record is written, then node.rec (release); readers
 *     load rec with acquire, then the record.
 *   - the list itself is published by the caller (e.g. a release store of
 *     its offset in the shard descriptor); shm_skip_build writes an
 *     unpublished list with plain stores.
 *
 * The guarantee (readers, inside one epoch section). Readers see keys in
 * strictly increasing order at level 0 (strictly decreasing in reverse).
 * A key that was in the list for the whole time from the reader's seek
 * until the reader passed its position is returned; a key inserted or
 * unlinked meanwhile may or may not be. Why: a reader standing on node a
 * with key(a) < k, k in the list, goes next to a.next[0]. If a is linked,
 * that is a's successor now, so its key is <= k. If a was unlinked
 * meanwhile, unlink set pred.next := a.next and never changed a.next (and
 * nothing else does: a is unreachable for the writer), so a.next[0] is
 * a's successor at the moment of the unlink; k was in the list then and
 * greater than key(a), so that successor is <= k too. Hence every hop from
 * below k lands at or below k: k is not skipped. a's memory is not reused
 * while the reader's epoch may hold it (the caller retires it through
 * EBR), and neither is that of any node it leads to (unlinked after a,
 * hence retired after the reader entered). The same holds for a seek
 * (its last level is a level-0 walk from a node < the seek key) and for
 * the predecessor search of reverse iteration.
 *
 * Errors: see each function. Nothing here allocates private memory, takes
 * a lock or makes a system call.
 */
#ifndef AMORA_SHM_SKIPLIST_H
#define AMORA_SHM_SKIPLIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shm/record.h"
#include "shm/segment.h"

#define SHM_SKIP_MAX_HEIGHT 24
#define SHM_SKIP_PREFIX 14
#define SHM_SKIP_MAGIC 0x50494b53u /* "SKIP" */

struct shm_skip_node {
	_Atomic uint32_t rec;
	uint8_t height;
	uint8_t plen;
	uint8_t prefix[SHM_SKIP_PREFIX];
	_Atomic uint32_t next[];
};

struct shm_skip {
	uint32_t magic;
	_Atomic uint32_t levels;
	_Atomic uint32_t next[SHM_SKIP_MAX_HEIGHT];
};

/* A key's first 8 bytes (of len) as a big-endian integer, zero padded:
 * two keys whose integers differ compare as these do in the key order (a
 * shorter key padded is at most any key it is a prefix of); equal ones
 * need the rest. For sorts and merges that compare mostly integers. One
 * unaligned load when len >= 8. */
static inline uint64_t shm_skip_key_word(const uint8_t *p, uint32_t len)
{
	uint64_t v = 0;

	if (len >= 8) {
		memcpy(&v, p, 8);
		return __builtin_bswap64(v);
	}
	for (uint32_t i = 0; i < len; i++)
		v |= (uint64_t)p[i] << (56 - 8 * i);
	return v;
}

/* What a cursor knows of a key: its first min(klen, SHM_SKIP_PREFIX)
 * bytes (a node's inline prefix) as two big-endian integers, zero padded,
 * so that most comparisons are two integer compares; and the whole key
 * once known (full != NULL: a record's, valid while the epoch is held, or
 * a seek key). */
struct shm_skip_keyref {
	const uint8_t *full;
	uint32_t flen;
	uint32_t plen;  /* 1 .. SHM_SKIP_PREFIX (0: a seek for no key) */
	uint64_t w0;    /* bytes 0-7 */
	uint64_t w1;    /* bytes 8-13 in the top 6 bytes; the low 2 are 0 */
};

/* --- writer side (the shard's single writer; nothing here takes a lock) --- */

/* An empty list (levels 1, every link 0) from `slab`; *off its offset.
 * Errors: SHM_ENOMEM. */
int shm_skip_create(struct shm_seg *seg, struct shm_slab *slab, uint64_t *off);

/* Bytes of the list head's block at `off` (what shm_skip_create asked
 * shm_slab_alloc for, to free or retire it). */
uint64_t shm_skip_bytes(const struct shm_seg *seg, uint64_t off);

/* A random height 1 .. SHM_SKIP_MAX_HEIGHT, P(height > h) = 4^-h, from
 * the splitmix64 state *rng (advanced; any seed, 0 included). */
uint32_t shm_skip_height(uint64_t *rng);

/* Bytes of a node of `height` (20 + 4 * height): for shm_slab_alloc and
 * shm_slab_free and the retire list. */
uint64_t shm_skip_node_bytes(uint32_t height);

/* Build an unlinked node (visible to nobody) for `key` whose record is at
 * rec_off (the record must hold that key: nothing checks it). Errors:
 * SHM_EINVAL (klen 0 or > SHM_KEY_MAX, height outside 1 ..
 * SHM_SKIP_MAX_HEIGHT, rec_off 0, not 16-aligned or >= 64 GiB),
 * SHM_ENOMEM. */
int shm_skip_node_new(struct shm_seg *seg, struct shm_slab *slab, const void *key, uint32_t klen,
		      uint64_t rec_off, uint32_t height, uint64_t *node_off);

/* Link a built node whose key is not in the list yet (a duplicate would
 * make readers report SHM_ECORRUPT): one search for its predecessors,
 * levels raised to the node's height if lower, then bottom-up, each level
 * with one release store of pred.next (pairs with the readers' acquire
 * loads). Cannot fail. */
void shm_skip_link(struct shm_seg *seg, uint64_t list_off, uint64_t node_off);

/* The writer's memory of a list's last node at every level (its own
 * plain memory; zeroed: unknown): with it, linking a key above every key
 * in the list appends without a search, which makes a load in key order
 * (or a replay of one) cost two comparisons a key, not a search. Valid for
 * `list` while every link and unlink of that list passes it. */
struct shm_skip_tail {
	uint64_t list;
	uint64_t last[SHM_SKIP_MAX_HEIGHT]; /* 0: the head (the level is empty) */
	bool valid;
};

/* shm_skip_link with the writer's tail (NULL: none), kept up to date. */
void shm_skip_link_tail(struct shm_seg *seg, uint64_t list_off, uint64_t node_off,
			struct shm_skip_tail *tail);

/* A writer's search for where to link a node, in steps, so that the
 * searches of a round's inserts can run interleaved and their cache
 * misses overlap (shard_index.c). Until shm_skip_link_path, the list may
 * gain nodes (a pred found is then moved forward past keys below the
 * node's at link time) but must not lose one the path uses
 * (shm_skip_path_uses): after an unlink of such a node, start the path
 * again. */
struct shm_skip_path {
	uint64_t preds[SHM_SKIP_MAX_HEIGHT]; /* found so far (0: the head) */
	uint64_t node;                       /* the node to link */
	struct shm_skip_keyref kk;           /* its key (inline or its record's) */
	uint32_t lv;                         /* levels when the search began */
	uint64_t x, refused;
	int level;                           /* being searched, -1: done */
};

/* Begin the search for node_off (a built, unlinked node); with the tail
 * (NULL: none) a node above every key is done at once. */
void shm_skip_path_start(const struct shm_seg *seg, uint64_t list_off, struct shm_skip_path *p,
			 uint64_t node_off, struct shm_skip_tail *tail);
/* One hop, prefetching what the next loads; false once the search is done. */
bool shm_skip_path_step(const struct shm_seg *seg, uint64_t list_off, struct shm_skip_path *p);
/* Whether the path stands on or has kept node_off. */
bool shm_skip_path_uses(const struct shm_skip_path *p, uint64_t node_off);
/* Finish the search and link its node, as shm_skip_link_tail. */
void shm_skip_link_path(struct shm_seg *seg, uint64_t list_off, struct shm_skip_path *p,
			struct shm_skip_tail *tail);

/* The writer's exact lookup: the node holding key, or 0. */
uint64_t shm_skip_find(const struct shm_seg *seg, uint64_t list_off, const void *key, uint32_t klen);

/* Point a linked node at a new record of the same key (release). */
void shm_skip_set_rec(struct shm_seg *seg, uint64_t node_off, uint64_t rec_off);

/* Unlink the node holding key, top-down (each level where it is linked:
 * pred.next := node.next, release), lower levels afterwards if their
 * top became empty; return it (0: none) for the caller to retire
 * (shm_retire_push with shm_skip_node_bytes(height)). The unlinked node's
 * own next[] are NOT changed: a reader standing on it goes on forward
 * (the guarantee). Its record is the caller's to retire too. */
uint64_t shm_skip_unlink(struct shm_seg *seg, uint64_t list_off, const void *key, uint32_t klen);
/* shm_skip_unlink with the writer's tail (NULL: none), kept up to date. */
uint64_t shm_skip_unlink_tail(struct shm_seg *seg, uint64_t list_off, const void *key, uint32_t klen,
			      struct shm_skip_tail *tail);

/* Build a whole new list in O(n) from n record offsets whose keys are
 * strictly increasing (a restart or recovery builds one beside the old
 * one, then publishes it), heights from *rng. Errors: SHM_EINVAL (keys not
 * strictly increasing, or an offset that is no valid record);
 * SHM_ENOMEM. On an error everything it allocated is freed again and
 * *off is left alone. */
int shm_skip_build(struct shm_seg *seg, struct shm_slab *slab, const uint64_t *recs, size_t n,
		   uint64_t *rng, uint64_t *off);

/* Free a list no reader can reach any more (every node and the head) into
 * `slab`. Walks level 0 validating as a reader does and stops freeing
 * nodes at the first bad one (what lies beyond is not touched). */
void shm_skip_destroy(struct shm_seg *seg, struct shm_slab *slab, uint64_t off);

/* Call fn for every node at level 0 in order (the writer: e.g. a restart
 * listing what is live), with the node's offset and its record's. Each
 * node is validated as a reader does (bounds, height, plen, record valid
 * and holding the node's prefix, keys strictly increasing). Returns
 * SHM_OK, SHM_ECORRUPT at the first bad node or head (fn was called for
 * every node before it), or the first non-zero value fn returned (the
 * walk stops there). fn must not change the list. */
int shm_skip_each(const struct shm_seg *seg, uint64_t list_off,
		  int (*fn)(void *arg, uint64_t node_off, uint64_t rec_off), void *arg);

/* --- reader side (any process, inside an epoch section; every offset
 * untrusted) --- */

/* A validated list head: offset in bounds, 16-aligned, magic. */
struct shm_skip_view {
	const struct shm_skip *head;
	uint64_t off;
};

/* Validate the head at `off` and fill *v. Errors: SHM_ECORRUPT. */
int shm_skip_view(const struct shm_seg *seg, uint64_t off, struct shm_skip_view *v);

/* A reader's position. Plain memory of the reader; may be copied. */
struct shm_skip_cursor {
	const struct shm_skip *head;
	struct shm_skip_keyref kk; /* the seek key (the caller's bytes, kept
				    * valid until the seek is done) */
	uint8_t mode;        /* SKIP_MODE_* bits (skiplist.c) */
	uint8_t state;       /* SKIP_ST_* (skiplist.c) */
	int8_t level;        /* level being walked */
	uint8_t ties;        /* passes in a row whose order went unchecked
			      * (skiplist.c, pass_ok) */
	uint64_t x;          /* node stood on at `level` (0: the head) */
	uint64_t y;          /* x.next[level], being compared */
	uint64_t last;       /* the last node compared and not passed (0: none) */
	uint64_t node;       /* once done: the entry (0: at the end) */
	struct shm_skip_keyref xk; /* x's key (x != 0) */
	struct shm_skip_keyref yk; /* y's key */
	struct shm_skip_keyref nk; /* node's key */
};

/* Seek to the first key >= key (inclusive) or > key (!inclusive); with
 * reverse, the last key <= key (inclusive) or < key. key NULL or klen 0:
 * the first (or, reverse, the last) key. Only records what to do and
 * prefetches the head: the work is done by shm_skip_seek_step. The key's
 * bytes must stay valid until the seek is done. */
void shm_skip_seek_start(struct shm_skip_cursor *c, const struct shm_skip_view *v, const void *key,
			 uint32_t klen, bool inclusive, bool reverse);

/* One hop; prefetches what the next hop loads (the next node, or the
 * record a comparison needs). Returns 1 while the seek is not done, 0
 * done (positioned or at the end), SHM_ECORRUPT (and the cursor stays
 * so: get and next say SHM_ECORRUPT too). */
int shm_skip_seek_step(const struct shm_seg *seg, struct shm_skip_cursor *c);

/* shm_skip_seek_start, then steps until done. Returns SHM_OK (positioned
 * or at the end: shm_skip_cursor_get tells) or SHM_ECORRUPT. */
int shm_skip_seek(const struct shm_seg *seg, struct shm_skip_cursor *c, const struct shm_skip_view *v,
		  const void *key, uint32_t klen, bool inclusive, bool reverse);

/* The entry the cursor is on: SHM_OK and *kv (the record's validated view:
 * key, value, seq; the record holds the node's key prefix), SHM_ENOTFOUND
 * at the end, SHM_ECORRUPT (node or record invalid, or a seek not done).
 * The cursor keeps the key's place in the record for its next step. */
int shm_skip_cursor_get(const struct shm_seg *seg, struct shm_skip_cursor *c, struct shm_kv *kv);

/* Forward: follow next[0] (checking the key grows). Reverse: a
 * predecessor search of the current key (O(log n)). Then, with kv not
 * NULL, as get (forward, the record is loaded once for both): SHM_OK (on
 * an entry), SHM_ENOTFOUND (at the end, and stays there), SHM_ECORRUPT. */
int shm_skip_cursor_next(const struct shm_seg *seg, struct shm_skip_cursor *c, struct shm_kv *kv);

#endif
