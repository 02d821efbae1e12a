/*
 * bench_ckpt.c — checkpoints (DESIGN.md §17) against the store without
 * them, in one invocation:
 *
 *   1. KEYS keys (16-byte keys, 100-byte values) loaded, then OVERWRITES
 *      overwrites of random keys (buffered sets), on SHARDS shards, once
 *      with checkpoints (amorad's defaults) and once with automatic ones
 *      off (--checkpoint-factor 0, the build before them): the log and
 *      checkpoint bytes on disk against the live data, and the recovery
 *      time after kill -9 of amorad (fork to the first attach that finds
 *      every shard up), the median of RUNS restarts.
 *   2. The p99 of synchronous sets to a one-shard store of KEYS keys,
 *      without a checkpoint and while one runs (a child process calls
 *      amora_checkpoint over and over), the median of RUNS runs.
 *
 * Environment: KEYS (1000000), OVERWRITES (10000000), SHARDS (64), RUNS
 * (3), MEMORY (4G), BENCH_DIR (/tmp). Keep the machine quiet.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libclient/amora.h"
#include "perf/lib/env.h"
#include "perf/lib/fail.h"
#include "perf/lib/figures.h"
#include "perf/lib/files.h"
#include "perf/lib/server.h"
#include "shm/clock.h"
#include "tests/daemon.h"

static struct daemon D;
static const char *memory = "4G";

static void key_of(char k[17], uint64_t i)
{
	snprintf(k, 17, "key%013llu", (unsigned long long)i);
}

static void val_of(char v[100], uint64_t i, uint64_t version)
{
	memset(v, 'a' + (int)(version % 26), 100);
	memcpy(v, &i, sizeof(i));
	memcpy(v + 8, &version, sizeof(version));
}

static amora *start(const char *shards, const char *const *extra)
{
	const char *args[24] = { "--shards", shards, "--memory", memory, "--log-level", "warn" };
	int n = 6;
	amora *db;

	for (; extra != NULL && *extra != NULL; extra++)
		args[n++] = *extra;
	args[n] = NULL;
	if (daemon_start(&D, server_find(), NULL, args) != DAEMON_OK ||
	    daemon_open(&D, 600000000000ull, 1000000ull, &db, NULL) != DAEMON_OK)
		bench_die("amorad did not start; see %s", D.log);
	return db;
}

/* Wait until every shard answers (the attach may come first). */
static void until_up(amora *db)
{
	while (amora_heartbeat(db) == AMORA_ERESTARTING)
		usleep(1000);
	if (amora_heartbeat(db) != AMORA_OK)
		bench_die("store not up: %s", amora_errmsg(db));
}

static void put_buffered(amora *db, uint64_t i, uint64_t version)
{
	char k[17], v[100];

	key_of(k, i);
	val_of(v, i, version);
	if (amora_set_buffered(db, k, 16, v, 100) != AMORA_OK)
		bench_die("set: %s", amora_errmsg(db));
}

/* Bytes of files under the shard directories whose names start with p. */
static uint64_t bytes_named(const char *p)
{
	uint64_t sum = 0;

	for (int s = 0;; s++) {
		char dir[600];
		struct dirent *de;
		DIR *d;

		snprintf(dir, sizeof(dir), "%s/shard-%02d", D.dir, s);
		if ((d = opendir(dir)) == NULL)
			return sum;
		while ((de = readdir(d)) != NULL) {
			char path[900];
			struct stat st;

			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			if (strncmp(de->d_name, p, strlen(p)) == 0 && stat(path, &st) == 0)
				sum += (uint64_t)st.st_blocks * 512;
		}
		closedir(d);
	}
}

struct disk_row {
	double load_s, log_mb, ckpt_mb, recover_ms;
};

static struct disk_row disk_case(const char *shards, uint64_t keys, uint64_t overwrites, int runs,
				 const char *const *extra)
{
	struct disk_row r;
	double rec[16];
	uint64_t x = 88172645463325252ull, t0 = shm_now_ns();
	amora *db;

	files_rm_tree(D.dir);
	files_mkdir(D.dir);
	db = start(shards, extra);
	for (uint64_t i = 0; i < keys; i++)
		put_buffered(db, i, 0);
	for (uint64_t n = 1; n <= overwrites; n++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		put_buffered(db, x % keys, n);
	}
	if (amora_flush(db) != AMORA_OK)
		bench_die("flush: %s", amora_errmsg(db));
	r.load_s = (double)(shm_now_ns() - t0) / 1e9;
	sleep(2); /* checkpoints begun by the last writes end */
	r.log_mb = (double)bytes_named("wal-") / 1048576.0;
	r.ckpt_mb = (double)bytes_named("ckpt-") / 1048576.0;
	amora_close(db);
	for (int k = 0; k < runs; k++) {
		uint64_t s;

		daemon_kill(&D);
		s = shm_now_ns();
		db = start(shards, extra);
		until_up(db);
		rec[k] = (double)(shm_now_ns() - s) / 1e6;
		amora_close(db);
	}
	daemon_kill(&D);
	r.recover_ms = fig_median(rec, runs);
	return r;
}

/* p99 of n synchronous sets, in ns. */
static double sync_p99(amora *db, uint64_t keys, uint64_t n, uint64_t version)
{
	struct samples s = { 0 };
	char k[17], v[100];
	struct fig f;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t t = shm_now_ns();

		key_of(k, (i * 7919) % keys);
		val_of(v, i, version);
		if (amora_set(db, k, 16, v, 100) != AMORA_OK)
			bench_die("set: %s", amora_errmsg(db));
		samples_push(&s, shm_now_ns() - t);
	}
	f = fig_of(&s, n, 1);
	return f.p99;
}

static void stall_case(uint64_t keys, int runs)
{
	static const char *const extra[] = { "--checkpoint-factor", "0", NULL };
	double quiet[16], busy[16];
	amora *db;
	int ckpts = 0;

	files_rm_tree(D.dir);
	files_mkdir(D.dir);
	db = start("1", extra);
	for (uint64_t i = 0; i < keys; i++)
		put_buffered(db, i, 0);
	if (amora_flush(db) != AMORA_OK)
		bench_die("flush: %s", amora_errmsg(db));
	for (int k = 0; k < runs; k++) {
		int pfd[2];
		pid_t child;

		quiet[k] = sync_p99(db, keys, 20000, 1);
		if (pipe(pfd) != 0 || (child = fork()) < 0)
			bench_die("fork");
		if (child == 0) {
			amora *c;
			char b;

			close(pfd[1]);
			if (amora_open(D.sock, &c) != AMORA_OK)
				_exit(1);
			/* checkpoints back to back until the parent closes the pipe */
			for (;;) {
				struct timeval tv = { 0, 0 };
				fd_set fs;

				if (amora_checkpoint(c) != AMORA_OK)
					_exit(2);
				FD_ZERO(&fs);
				FD_SET(pfd[0], &fs);
				if (select(pfd[0] + 1, &fs, NULL, NULL, &tv) > 0 && read(pfd[0], &b, 1) <= 0)
					_exit(0);
			}
		}
		close(pfd[0]);
		usleep(20000); /* the first one is under way */
		busy[k] = sync_p99(db, keys, 20000, 2);
		close(pfd[1]);
		waitpid(child, NULL, 0);
	}
	{
		struct amora_server_stats sv;

		if (amora_server_stats(db, &sv, sizeof(sv)) == AMORA_OK)
			ckpts = (int)sv.checkpoints;
	}
	amora_close(db);
	daemon_kill(&D);
	printf("\nsync sets to a 1-shard store of %llu keys, p99 (median of %d runs of 20000):\n"
	       "  without a checkpoint   %8.1f us\n  while checkpointing    %8.1f us   (%.2fx; %d checkpoints "
	       "written)\n", (unsigned long long)keys, runs, fig_median(quiet, runs) / 1e3,
	       fig_median(busy, runs) / 1e3, fig_median(busy, runs) / fig_median(quiet, runs), ckpts);
}

int main(void)
{
	static const char *const none[] = { "--checkpoint-factor", "0", "--checkpoint-min-log", "1T", NULL };
	uint64_t keys = env_u64("KEYS", 1000000, 1000, 100000000, 2);
	uint64_t overwrites = env_u64("OVERWRITES", 10000000, 0, 1000000000, 2);
	int runs = (int)env_u64("RUNS", 3, 1, 16, 2);
	const char *shards = getenv("SHARDS") ? getenv("SHARDS") : "64";
	const char *base = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/tmp";
	char dir[512], log[600];
	double live_mb = (double)keys * 116 / 1048576.0;
	struct disk_row with, without;

	if (getenv("MEMORY"))
		memory = getenv("MEMORY");
	if (files_tmpdir(dir, sizeof(dir), base, "amora-bench-ckpt") != 0)
		bench_die("no temp dir under %s", base);
	snprintf(log, sizeof(log), "%s.log", dir);
	if (daemon_paths(&D, dir, log) != 0)
		bench_die("path too long");
	printf("bench_ckpt: %llu keys (16 B / 100 B: %.0f MiB live), %llu overwrites, %s shards, %d runs, "
	       "load %.2f\n", (unsigned long long)keys, live_mb, (unsigned long long)overwrites, shards, runs,
	       env_loadavg());
	with = disk_case(shards, keys, overwrites, runs, NULL);
	without = disk_case(shards, keys, overwrites, runs, none);
	printf("\n%-28s %10s %10s %12s %12s %14s\n", "", "load s", "log MiB", "ckpt MiB", "disk/live",
	       "recovery ms");
	printf("%-28s %10.1f %10.1f %12.1f %11.2fx %14.0f\n", "checkpoints (defaults)", with.load_s,
	       with.log_mb, with.ckpt_mb, (with.log_mb + with.ckpt_mb) / live_mb, with.recover_ms);
	printf("%-28s %10.1f %10.1f %12.1f %11.2fx %14.0f\n", "no automatic checkpoints", without.load_s,
	       without.log_mb, without.ckpt_mb, (without.log_mb + without.ckpt_mb) / live_mb,
	       without.recover_ms);
	stall_case(keys, runs);
	files_rm_tree(dir);
	unlink(log);
	return 0;
}
