/*
 * test_table_xproc.c — one writer process, two reader processes, one table.
 *
 * The writer inserts, updates, deletes and grows (and explicitly rebuilds)
 * the table of shard 0 and reclaims memory through EBR, while two readers
 * that map the segment read-only (as clients do) look keys up. Every value
 * carries its key id, a version and a checksum; the writer announces each
 * version in `maxver` before publishing it. A reader checks that every
 * value it reads is intact, belongs to the key it asked for, was really
 * written (version <= maxver) and never goes back in time for that reader.
 * A premature free would show up as a checksum or key mismatch, since freed
 * blocks are reused for other keys at once.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/crc32c.h"
#include "shm/shard.h"

#define MiB (1ULL << 20)
#define NKEYS 4096
#define READS_PER_READER 1000000
#define NREADERS 2

struct shared {
	struct shm_epoch_slot slots[NREADERS];
	_Atomic uint64_t maxver[NKEYS];
	_Atomic int readers_done;
	_Atomic uint64_t hits, misses;
	char error[256];
};

struct value {
	uint32_t key;
	uint32_t crc; /* over version and pad */
	uint64_t version;
	uint8_t pad[200];
};

static pid_t pids[NREADERS];

static void kill_children(void)
{
	for (int i = 0; i < NREADERS; i++)
		if (pids[i] > 0) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
}

static uint32_t value_crc(const struct value *v, uint32_t vlen)
{
	return shm_crc32c(&v->version, vlen - offsetof(struct value, version));
}

static int make_value(struct value *v, uint32_t key, uint64_t version)
{
	uint32_t len = (uint32_t)(offsetof(struct value, pad) + (key * 7 + version) % sizeof(v->pad));

	v->key = key;
	v->version = version;
	memset(v->pad, (int)(key ^ version), sizeof(v->pad));
	v->crc = value_crc(v, len);
	return (int)len;
}

static void fail(struct shared *sh, const char *msg, uint32_t key)
{
	snprintf(sh->error, sizeof(sh->error), "%s (key %u)", msg, key);
	_exit(1);
}

static void reader(int id, int ro_fd, struct shared *sh)
{
	struct shm_seg seg;
	static uint64_t last_seen[NKEYS];
	struct value v;
	char key[16];

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (shm_seg_attach(&seg, ro_fd, false) != SHM_OK)
		fail(sh, "attach", 0);
	shm_epoch_slot_init(&sh->slots[id], getpid());
	const struct shm_shard *shard = shm_shard_at(&seg, 0);
	uint64_t x = 88172645463325252ULL + (uint64_t)id;
	for (int i = 0; i < READS_PER_READER; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint32_t k = (uint32_t)(x % NKEYS);
		int klen = sprintf(key, "k%u", k);
		struct shm_kv r;

		shm_epoch_enter(&sh->slots[id], seg.hdr);
		int rc = shm_shard_get(&seg, shard, key, (uint32_t)klen, shm_hash(key, (size_t)klen), &r);
		uint32_t vlen = 0;
		if (rc == SHM_OK) {
			vlen = r.vlen;
			if (vlen > sizeof(v) || vlen < offsetof(struct value, pad) || r.klen != (uint32_t)klen ||
			    memcmp(r.key, key, (size_t)klen) != 0)
				fail(sh, "record with wrong key or size", k);
			memcpy(&v, r.val, vlen);
		}
		shm_epoch_leave(&sh->slots[id]);

		if (rc == SHM_ENOTFOUND) {
			atomic_fetch_add(&sh->misses, 1);
			continue;
		}
		if (rc != SHM_OK)
			fail(sh, shm_strerror(rc), k);
		if (v.key != k || v.crc != value_crc(&v, vlen))
			fail(sh, "value damaged or of another key", k);
		if (v.version > atomic_load(&sh->maxver[k]))
			fail(sh, "version never written", k);
		if (v.version < last_seen[k])
			fail(sh, "went back in time", k);
		last_seen[k] = v.version;
		atomic_fetch_add(&sh->hits, 1);
	}
	_exit(0);
}

Test(table_xproc, writer_and_two_readers, .timeout = 180, .fini = kill_children)
{
	struct shm_seg seg;
	struct shm_writer w;
	struct value v;
	char key[16];
	uint64_t version = 0, writes = 0, rebuilds = 0;

	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	cr_assert_eq(shm_seg_create(&seg, 512 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_writer_open(&w, &seg, 0, 0, NULL, NULL), SHM_OK);
	struct shm_epoch_slot *slots[NREADERS] = {&sh->slots[0], &sh->slots[1]};
	w.readers = slots;
	w.nreaders = NREADERS;
	cr_assert_eq(shm_seg_seal(&seg), SHM_OK);

	for (int i = 0; i < NREADERS; i++) {
		int ro = shm_seg_reopen_rdonly(&seg);
		cr_assert_geq(ro, 0);
		pids[i] = fork();
		cr_assert_geq(pids[i], 0);
		if (pids[i] == 0)
			reader(i, ro, sh);
		close(ro);
	}

	uint64_t x = 0x9E3779B97F4A7C15ULL;
	int exited = 0;
	while (exited < NREADERS) {
		for (int batch = 0; batch < 64; batch++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			uint32_t k = (uint32_t)(x % NKEYS);
			int klen = sprintf(key, "k%u", k);
			if (x % 8 == 0) {
				int rc = shm_writer_del(&w, key, (uint32_t)klen);
				cr_assert(rc == SHM_OK || rc == SHM_ENOTFOUND);
			} else {
				int vlen = make_value(&v, k, ++version);
				atomic_store(&sh->maxver[k], version);
				cr_assert_eq(shm_writer_set(&w, key, (uint32_t)klen, &v, (uint32_t)vlen), SHM_OK);
			}
			writes++;
		}
		shm_writer_reclaim(&w);
		if (writes % (64 * 512) == 0) {
			/* Force a table swap under the readers now and then. */
			struct shm_table *t = (struct shm_table *)(seg.base + atomic_load(&w.sh->table_off));
			uint64_t g = t->ngroups * ((rebuilds & 1) ? 1 : 2);
			cr_assert_eq(shm_writer_rebuild(&w, g), SHM_OK);
			rebuilds++;
		}
		for (int i = 0; i < NREADERS; i++) {
			int st;
			if (pids[i] > 0 && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
				pids[i] = 0;
				exited++;
				cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d: %s", i, sh->error);
			}
		}
	}
	cr_log_info("writes %lu, rebuilds %lu, reader hits %lu, misses %lu", writes, rebuilds,
		    atomic_load(&sh->hits), atomic_load(&sh->misses));
	cr_assert_eq(atomic_load(&sh->hits) + atomic_load(&sh->misses), (uint64_t)NREADERS * READS_PER_READER);
	cr_assert_gt(atomic_load(&sh->hits), READS_PER_READER);
	cr_assert_gt(rebuilds, 0);
	/* Memory was recycled while readers ran, and once they are gone
	 * everything retired can be freed. */
	shm_writer_reclaim(&w);
	cr_assert_eq(w.retired.n, 0);
	struct shm_slab_stats st;
	shm_slab_stats(&w.sh->slab, &st);
	cr_assert_gt(st.frees, writes / 2);
	shm_writer_close(&w);
	shm_seg_close(&seg);
}
