/*
 * test_memory.c — memory as users meet it, on a real amorad: restarts of a
 * store whose log is far larger than its memory, a nearly full store
 * surviving kill -9 of every shard and repeated restarts, memory freed by
 * deletes serving any size, and memory_used against the RAM the segment
 * really takes (the memfd's allocated blocks, read through /proc).
 */
#include <dirent.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "tests/proc.h"

TestSuite(memory, .init = proc_init, .fini = proc_fini, .timeout = 240);

/* Value of key i at `version`: `len` bytes that differ per key and version. */
static void make_value(uint8_t *v, size_t len, int i, int version)
{
	uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull ^ (uint64_t)version * 0xc2b2ae3d27d4eb4full;

	for (size_t j = 0; j < len; j += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(v + j, &x, len - j < 8 ? len - j : 8);
	}
}

static void expect_big(amora *db, int i, int version, size_t len, const char *when)
{
	uint8_t *want = malloc(len);
	char k[32];
	void *got;
	size_t n;
	int rc;

	snprintf(k, sizeof(k), "big:%06d", i);
	make_value(want, len, i, version);
	rc = amora_get_alloc(db, k, strlen(k), &got, &n);
	cr_assert_eq(rc, AMORA_OK, "%s: get %s: %s %s", when, k, amora_strerror(rc), amora_errmsg(db));
	cr_assert_eq(n, len, "%s: %s has %zu bytes", when, k, n);
	cr_assert_arr_eq(got, want, len, "%s: %s holds another version", when, k);
	free(got);
	free(want);
}

static void wait_ready(amora *db)
{
	uint64_t t0 = proc_now_ms();
	int rc;

	while ((rc = amora_heartbeat(db)) != AMORA_OK) {
		cr_assert(proc_now_ms() - t0 < 60000, "shards not back: %s", amora_errmsg(db));
		usleep(20000);
	}
}

static uint64_t used(amora *db)
{
	struct amora_stats st;

	cr_assert_eq(amora_stats(db, &st), AMORA_OK);
	return st.memory_used;
}

/* The minimal case: one small key, one 64 KiB value overwritten
 * until the log holds 20x --memory; a restart used to need memory for
 * every version and left the shard FAILED (the small key "not found"). */
Test(memory, restart_when_the_log_outgrows_memory)
{
	enum { LEN = 64 << 10, VERSIONS = 1200 };
	uint8_t *v = malloc(LEN);
	pid_t shard;
	amora *db;

	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	db = proc_open();
	cr_assert_eq(amora_set(db, "small", 5, "kept", 4), AMORA_OK);
	for (int ver = 1; ver <= VERSIONS; ver++) {
		make_value(v, LEN, 0, ver);
		cr_assert_eq(amora_set_buffered(db, "big:000000", 10, v, LEN), AMORA_OK, "%s",
			     amora_errmsg(db));
	}
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	amora_close(db);
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(proc_stop(&D, SIGTERM), 0);
		proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
		db = proc_open();
		char got[8];
		size_t n;
		cr_assert_eq(amora_get(db, "small", 5, got, sizeof(got), &n), AMORA_OK, "%s",
			     amora_errmsg(db));
		expect_big(db, 0, VERSIONS, LEN, "after restart");
		amora_close(db);
	}
	/* kill -9 of the shard: it recovers while amorad runs */
	cr_assert_eq(proc_children(D.pid, &shard, 1), 1);
	kill(shard, SIGKILL);
	db = proc_open();
	usleep(50000);
	wait_ready(db);
	expect_big(db, 0, VERSIONS, LEN, "after kill -9");
	amora_close(db);
	free(v);
}

/* A store at 80 % of --memory, 20x as many overwrites, then kill -9 of
 * every shard in turn and 5 restarts: every key keeps its last value and
 * memory does not grow from one incarnation to the next. */
Test(memory, nearly_full_store_survives_kills_and_restarts)
{
	enum { LEN = 16 << 10, SHARDS = 2, OVERWRITES = 20 };
	const uint64_t memory = 64 << 20;
	const int keys = (int)(memory * 8 / 10 / LEN);
	uint8_t *v = malloc(LEN);
	pid_t shards[SHARDS];
	uint64_t first_used, t0;
	amora *db;

	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	db = proc_open();
	for (int ver = 1; ver <= OVERWRITES + 1; ver++) {
		for (int i = 0; i < keys; i++) {
			char k[32];
			int rc;

			snprintf(k, sizeof(k), "big:%06d", i);
			make_value(v, LEN, i, ver);
			rc = amora_set_buffered(db, k, strlen(k), v, LEN);
			cr_assert_eq(rc, AMORA_OK, "version %d key %d: %s", ver, i, amora_errmsg(db));
		}
		cr_assert_eq(amora_flush(db), AMORA_OK, "version %d: %s", ver, amora_errmsg(db));
	}
	for (int i = 0; i < keys; i++)
		expect_big(db, i, OVERWRITES + 1, LEN, "written");
	first_used = used(db);
	cr_assert_eq(proc_children(D.pid, shards, SHARDS), SHARDS);
	for (int s = 0; s < SHARDS; s++) {
		t0 = proc_now_ms();
		kill(shards[s], SIGKILL);
		usleep(50000);
		wait_ready(db);
		fprintf(stderr, "memory: shard %d recovered %d x %d KiB (log %d x that) in %llu ms\n", s,
			keys / SHARDS, LEN >> 10, OVERWRITES + 1,
			(unsigned long long)(proc_now_ms() - t0));
		for (int i = 0; i < keys; i++)
			expect_big(db, i, OVERWRITES + 1, LEN, "after kill -9");
	}
	amora_close(db);
	for (int round = 0; round < 5; round++) {
		cr_assert_eq(proc_stop(&D, SIGTERM), 0);
		t0 = proc_now_ms();
		proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
		if (round == 0)
			fprintf(stderr, "memory: restart with %d MiB of log for %d MiB live: %llu ms\n",
				(int)((uint64_t)keys * LEN * (OVERWRITES + 1) >> 20),
				(int)((uint64_t)keys * LEN >> 20), (unsigned long long)(proc_now_ms() - t0));
		db = proc_open();
		for (int i = 0; i < keys; i++)
			expect_big(db, i, OVERWRITES + 1, LEN, "after restart");
		if (round == 4)
			fprintf(stderr, "memory: memory_used %llu MiB before the kills, %llu MiB after 5 "
				"restarts (--memory 64M)\n", (unsigned long long)(first_used >> 20),
				(unsigned long long)(used(db) >> 20));
		cr_assert_leq(used(db), first_used + first_used / 10, "memory grew across restarts");
		amora_close(db);
	}
	free(v);
}

/* Random value sizes fill >= 75 % of --memory with live data before
 * AMORA_EFULL; after deleting everything, any size fits again. */
Test(memory, random_sizes_fill_three_quarters_and_deletes_give_back)
{
	const uint64_t memory = 256 << 20;
	uint8_t *v = calloc(1, 1 << 20);
	uint64_t seed = 7, live = 0;
	int n = 0, rc;
	amora *db;

	proc_start(&D, "--shards", "8", "--memory", "256M", NULL);
	db = proc_open();
	for (;; n++) {
		char k[32];
		size_t len;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		len = 1 + (seed >> 33) % (64 << 10);
		snprintf(k, sizeof(k), "r:%08d", n);
		rc = amora_set(db, k, strlen(k), v, len);
		if (rc != AMORA_OK)
			break;
		live += strlen(k) + len;
	}
	cr_assert_eq(rc, AMORA_EFULL, "%s", amora_errmsg(db));
	fprintf(stderr, "memory: random sizes 1..64 KiB: %d keys, %.1f%% of --memory live at EFULL\n",
		n, 100.0 * (double)live / (double)memory);
	cr_assert_geq(live, memory * 3 / 4, "full at %llu MiB of live data",
		      (unsigned long long)(live >> 20));
	for (int i = 0; i < n; i++) {
		char k[32];

		snprintf(k, sizeof(k), "r:%08d", i);
		cr_assert_eq(amora_del(db, k, strlen(k)), AMORA_OK, "%s", amora_errmsg(db));
	}
	/* every size again, the largest first */
	for (size_t len = 1 << 20; len >= 8; len /= 4) {
		char k[32];

		for (int i = 0; i < 16; i++) {
			snprintf(k, sizeof(k), "again:%zu:%d", len, i);
			rc = amora_set(db, k, strlen(k), v, len);
			cr_assert_eq(rc, AMORA_OK, "%zu bytes after deleting all: %s", len,
				     amora_errmsg(db));
		}
	}
	amora_close(db);
	free(v);
}

/* Bytes of RAM the data segment takes: amorad's memfd, as the kernel
 * accounts it (allocated blocks of the shmem file). */
static uint64_t segment_ram(pid_t pid)
{
	char dir[64], link[128], path[352];
	struct dirent *e;
	uint64_t ram = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		ssize_t n;

		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		if (strstr(link, "memfd:amora-data") && stat(path, &st) == 0)
			ram = (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	cr_assert_gt(ram, 0, "no data segment among amorad's descriptors");
	return ram;
}

/* 1 M keys of 16 B with 100 B values on 64 shards: memory_used tracks the
 * RAM the segment takes (it used to count whole chunks per size class:
 * 1 GiB for 212 MiB). */
Test(memory, memory_used_tracks_ram)
{
	char k[32], val[100];
	uint64_t ram, u;
	amora *db;

	memset(val, 'v', sizeof(val));
	proc_start(&D, "--memory", "4G", NULL);
	db = proc_open();
	for (int i = 0; i < 1000000; i++) {
		snprintf(k, sizeof(k), "key:%012d", i); /* 16 bytes */
		cr_assert_eq(amora_set_buffered(db, k, 16, val, sizeof(val)), AMORA_OK, "%s",
			     amora_errmsg(db));
	}
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	u = used(db);
	ram = segment_ram(D.pid);
	fprintf(stderr, "memory: 1 M keys 16 B / 100 B: memory_used %llu MiB, segment RAM %llu MiB\n",
		(unsigned long long)(u >> 20), (unsigned long long)(ram >> 20));
	cr_assert_leq(u, ram + ram * 3 / 10, "memory_used %llu for %llu bytes of RAM",
		      (unsigned long long)u, (unsigned long long)ram);
	cr_assert_geq(u, 1000000ull * 132, "memory_used below the records' own size");
	amora_close(db);
}

/* Value of key i at version v: "v=<version>:" then bytes derived from
 * both, of a length that changes with the version (so a recovery that
 * hands out memory still being read shows up as a torn value). */
static size_t versioned(uint8_t *buf, int i, int v)
{
	int n = snprintf((char *)buf, 32, "v=%d:", v);
	size_t len = (size_t)n + 50 + (size_t)((i * 31 + v * 17) % 3000);

	make_value(buf + n, len - (size_t)n, i, v);
	return len;
}

static int version_of(const uint8_t *got, size_t len, int i)
{
	uint8_t want[3200];
	int v;

	if (len < 4 || sscanf((const char *)got, "v=%d:", &v) != 1 || v < 1)
		return -1;
	if (versioned(want, i, v) != len || memcmp(want, got, len) != 0)
		return -1;
	return v;
}

/* While shards are killed and adopt their tables again, readers in other
 * processes never see an acknowledged write undone, nor a value that is
 * not one the key was given (a torn or recycled record). The checker
 * fails if recovery applies a key's older log records over its newer
 * value or frees memory a reader is still in. */
Test(memory, readers_never_lose_acknowledged_writes_across_shard_kills)
{
	enum { N = 400, READERS = 2, SHARDS = 4, KILLS = 16 };
	_Atomic int *acked = mmap(NULL, N * sizeof(int), PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	_Atomic int *stop = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[1 + READERS], shards[SHARDS];

	proc_start(&D, "--shards", "4", "--memory", "64M", NULL);
	for (int c = 0; c < 1 + READERS; c++) {
		pids[c] = fork();
		if (pids[c] != 0)
			continue;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		uint8_t buf[3200];
		char k[32];
		amora *db;
		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(10);
		amora_set_timeout(db, 30000);
		for (int round = 0; !atomic_load(stop); round++) {
			int i = (int)(((uint64_t)round * 7919) % N);
			size_t len;

			snprintf(k, sizeof(k), "x:%04d", i);
			if (c == 0) { /* the writer */
				int v = atomic_load(&acked[i]) + 1;
				len = versioned(buf, i, v);
				if (amora_set(db, k, strlen(k), buf, len) != AMORA_OK)
					_exit(11);
				atomic_store(&acked[i], v);
				continue;
			}
			int a = atomic_load(&acked[i]), rc;
			rc = amora_get(db, k, strlen(k), buf, sizeof(buf), &len);
			if (rc == AMORA_ENOTFOUND && a == 0)
				continue;
			if (rc != AMORA_OK)
				_exit(12);
			int v = version_of(buf, len, i);
			if (v < 0)
				_exit(13); /* not a value this key ever had */
			if (v < a)
				_exit(14); /* an acknowledged write undone */
		}
		amora_close(db);
		_exit(0);
	}
	cr_assert_eq(proc_children(D.pid, shards, SHARDS), SHARDS);
	for (int kill_no = 0; kill_no < KILLS; kill_no++) {
		usleep(150000);
		pid_t now[SHARDS];
		int n = proc_children(D.pid, now, SHARDS);
		if (n > 0)
			kill(now[kill_no % n], SIGKILL);
	}
	usleep(300000);
	atomic_store(stop, 1);
	for (int c = 0; c < 1 + READERS; c++) {
		int status;

		cr_assert_eq(waitpid(pids[c], &status, 0), pids[c]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "client %d failed: status %d (13: a value the key never had, 14: an "
			  "acknowledged write undone)", c, WEXITSTATUS(status));
	}
	int writes = 0;
	for (int i = 0; i < N; i++)
		writes += atomic_load(&acked[i]);
	cr_assert_gt(writes, N, "the writer made progress: %d writes", writes);
	fprintf(stderr, "memory: %d writes, %d shard kills, readers saw every acknowledged write\n",
		writes, KILLS);
}
