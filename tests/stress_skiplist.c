/*
 * stress_skiplist.c — the skip list's writer and readers as threads of
 * one process, so ThreadSanitizer can check the memory ordering of the
 * whole read path (epoch enter, head, links, nodes, record offsets,
 * records) against the writer's links, unlinks, record updates and EBR
 * reclamation. `make tsan` runs it instrumented (TSan cannot follow
 * other processes; tests/test_skiplist.c covers the same protocol across
 * processes).
 *
 * One writer inserts, updates and unlinks keys; a quarter of them are
 * "stable": inserted before the readers start, never unlinked, only
 * updated. Two readers scan forward and backward and check: keys strictly
 * increasing (decreasing), every stable key in every scan, every value
 * intact (key id, version, CRC32C), of its key, of a version really
 * written. Exit status 0 on success; a message and 1 on the first
 * violation.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/crc32c.h"
#include "shm/epoch.h"
#include "shm/skiplist.h"

#define NKEYS 1024
#define NREADERS 2
#define SCANS 300

struct value {
	uint32_t id, crc; /* crc over version and pad */
	uint64_t version;
	uint8_t pad[32];
};

static struct shm_seg seg;
static struct shm_slab *slab;
static uint64_t list;
static struct shm_epoch_slot slots[NREADERS];
static _Atomic uint64_t maxver[NKEYS];
static _Atomic int readers_left = NREADERS;

static void die(const char *what, long id)
{
	fprintf(stderr, "stress_skiplist: %s (key %ld)\n", what, id);
	exit(1);
}

static bool stable(uint32_t id) { return id % 4 == 0; }

/* Key of id: 6 digits, long or short (inline) by id, so keys are both. */
static uint32_t key_of(char *k, uint32_t id)
{
	return (uint32_t)(id % 2 ? sprintf(k, "%06u", id) : sprintf(k, "%06u/a-longer-key", id));
}

static long id_of(const uint8_t *k, uint32_t klen)
{
	char buf[32], want[32];
	uint32_t id;

	if (klen >= sizeof(buf))
		return -1;
	memcpy(buf, k, klen);
	buf[klen] = 0;
	if (sscanf(buf, "%6u", &id) != 1 || id >= NKEYS || key_of(want, id) != klen ||
	    memcmp(want, k, klen) != 0)
		return -1;
	return id;
}

static uint32_t crc_of(const struct value *v, uint32_t len)
{
	return shm_crc32c(&v->version, len - offsetof(struct value, version));
}

static int key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	return c ? c : (alen > blen) - (alen < blen);
}

static void *reader(void *arg)
{
	int me = (int)(intptr_t)arg;
	uint8_t prev[32];
	uint32_t plen = 0;

	shm_epoch_slot_init(&slots[me], 1);
	for (int scan = 0; scan < SCANS; scan++) {
		bool rev = scan & 1, seen[NKEYS] = {false};
		struct shm_skip_view v;
		struct shm_skip_cursor c;
		int rc, n = 0;

		shm_epoch_enter(&slots[me], seg.hdr);
		if (shm_skip_view(&seg, list, &v) != SHM_OK)
			die("view", -1);
		rc = shm_skip_seek(&seg, &c, &v, NULL, 0, true, rev);
		while (rc == SHM_OK) {
			struct shm_kv kv;
			struct value val;
			long id;

			if ((rc = shm_skip_cursor_get(&seg, &c, &kv)) != SHM_OK)
				break;
			id = id_of(kv.key, kv.klen);
			if (id < 0)
				die("a key never written", id);
			if (n++ && (key_cmp(prev, plen, kv.key, kv.klen) < 0) == rev)
				die("scan out of order", id);
			memcpy(prev, kv.key, kv.klen);
			plen = kv.klen;
			if (kv.vlen < offsetof(struct value, pad) || kv.vlen > sizeof(val))
				die("value of a wrong size", id);
			memcpy(&val, kv.val, kv.vlen);
			if (val.id != id || val.crc != crc_of(&val, kv.vlen))
				die("value damaged or of another key", id);
			if (val.version > atomic_load(&maxver[id]))
				die("a version never written", id);
			seen[id] = true;
			rc = shm_skip_cursor_next(&seg, &c, NULL);
		}
		shm_epoch_leave(&slots[me]);
		if (rc != SHM_ENOTFOUND)
			die(shm_strerror(rc), -1);
		for (uint32_t id = 0; id < NKEYS; id += 4)
			if (!seen[id])
				die(rev ? "reverse scan missed a stable key" : "scan missed a stable key", id);
	}
	atomic_fetch_sub(&readers_left, 1);
	return NULL;
}

static bool present[NKEYS];
static uint64_t node_off[NKEYS], rec_off[NKEYS], rec_size[NKEYS];
static struct shm_retire_list retired;
static uint64_t version, hrng = 1, xr = 42;

static uint64_t put(uint32_t id)
{
	struct value v;
	uint32_t len = (uint32_t)(offsetof(struct value, pad) + (id + version) % sizeof(v.pad)), klen;
	uint64_t off;
	char k[32];

	v.id = id;
	v.version = ++version;
	memset(v.pad, (int)version, sizeof(v.pad));
	v.crc = crc_of(&v, len);
	atomic_store(&maxver[id], version); /* announced before it is published */
	klen = key_of(k, id);
	if (shm_record_new(&seg, slab, k, klen, &v, len, version, &off) != SHM_OK)
		die("record", id);
	rec_size[id] = shm_record_size(klen, len);
	return off;
}

static void op(uint32_t id)
{
	char k[32];
	uint32_t klen = key_of(k, id);

	if (!present[id]) {
		rec_off[id] = put(id);
		if (shm_skip_node_new(&seg, slab, k, klen, rec_off[id], shm_skip_height(&hrng), &node_off[id]) !=
		    SHM_OK)
			die("node", id);
		shm_skip_link(&seg, list, node_off[id]);
		present[id] = true;
	} else if (stable(id) || (xr >> 20) % 2) {
		uint64_t old = rec_off[id], old_size = rec_size[id];
		rec_off[id] = put(id);
		shm_skip_set_rec(&seg, node_off[id], rec_off[id]);
		if (shm_retire_push(&retired, old, old_size) != SHM_OK)
			die("retire", id);
	} else {
		const struct shm_skip_node *n = (const struct shm_skip_node *)(seg.base + node_off[id]);
		if (shm_skip_unlink(&seg, list, k, klen) != node_off[id])
			die("unlink", id);
		if (shm_retire_push(&retired, node_off[id], shm_skip_node_bytes(n->height)) != SHM_OK ||
		    shm_retire_push(&retired, rec_off[id], rec_size[id]) != SHM_OK)
			die("retire", id);
		present[id] = false;
	}
}

int main(void)
{
	pthread_t th[NREADERS];
	struct shm_epoch_slot *ptrs[NREADERS];
	uint64_t ops = 0;

	if (shm_seg_create(&seg, 256ULL << 20, 1) != SHM_OK)
		die("segment", -1);
	slab = &shm_shard_at(&seg, 0)->slab;
	if (shm_skip_create(&seg, slab, &list) != SHM_OK)
		die("list", -1);
	shm_retire_init(&retired);
	for (uint32_t id = 0; id < NKEYS; id++)
		if (stable(id) || id % 2)
			op(id);
	for (int i = 0; i < NREADERS; i++)
		ptrs[i] = &slots[i];
	for (intptr_t i = 0; i < NREADERS; i++)
		pthread_create(&th[i], NULL, reader, (void *)i);
	while (atomic_load(&readers_left) > 0) {
		xr ^= xr << 13, xr ^= xr >> 7, xr ^= xr << 17;
		op((uint32_t)(xr % NKEYS));
		if (++ops % 32 == 0) {
			shm_retire_seal(&retired, seg.hdr);
			shm_retire_collect(&retired, &seg, slab, ptrs, NREADERS);
		}
	}
	for (int i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	shm_retire_seal(&retired, seg.hdr);
	shm_retire_collect(&retired, &seg, slab, ptrs, NREADERS);
	if (retired.n != 0)
		die("retired memory left after the readers ended", -1);
	shm_retire_destroy(&retired);
	shm_skip_destroy(&seg, slab, list);
	shm_seg_close(&seg);
	printf("stress_skiplist: %lu writes, %d x %d scans: ok\n", ops, NREADERS, SCANS);
	return 0;
}
