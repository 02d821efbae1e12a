/*
 * amora-bench.c — the whole store (amorad + libamora) against LMDB, same
 * workload, same invocation.
 *
 * Workload: N keys (default 1 M) of 16 bytes ("key:%012u"), 100-byte values
 * derived from the key's number (so every sampled read is verified; a wrong
 * value fails the run loudly). Per run, on a fresh amorad (--sync periodic)
 * and a fresh LMDB environment in a temp dir:
 *
 *   buffered set (sorted)  N new keys in key order, amora_set_buffered,
 *                 one amora_flush at the end | LMDB: one txn for all N
 *                 puts (no latency figure). LMDB's best case: sorted puts
 *                 only append to its rightmost leaf. Then RAM per key (below).
 *   buffered update  the same N keys again (same values), amora_flush every
 *                 1024 | LMDB: one write txn per 1024 puts. Latency = one
 *                 batch of 1024 (sets + flush | puts + commit). A flush waits
 *                 for every shard the batch touched: 1024 keys over 64 shards
 *                 is 64 wake-ups for 16 keys each.
 *   sync set      S new keys (default 100 k, random order) with amora_set |
 *                 LMDB: one write txn per put. Every op timed. CPU per op
 *                 (a line under the row): this process's, the shard
 *                 processes' (amorad's children) and amorad's own, each
 *                 its CPU clock (all threads; the sum_exec_runtime of
 *                 /proc/PID/schedstat, perf/lib/usage.h) read before and
 *                 after the phase, over S | LMDB: this process's.
 *   get hit       N gets of random existing keys | LMDB: one read txn per get
 *                 (mdb_txn_renew + mdb_get + copy + mdb_txn_reset, as an LMDB
 *                 user who keeps a read txn handle does). Every 64th op timed.
 *   get miss      N gets of random missing keys (interleaved with the existing
 *                 ones in key order, so LMDB walks a real path). Every 64th op.
 *   delete        the S keys of "sync set", random order, synchronous; then
 *                 every 64th of them must be gone (not timed). CPU per op
 *                 as for sync set (the check's S/64 gets included).
 *   full scan     (printed under get miss, as are the two seek rows; run
 *                 after the deletes, when the store holds the N keys again)
 *                 one scan of every key in key order, each entry's key and
 *                 value copied out, every 64th checked, the count too:
 *                 amora_iter with no range | one read txn, a cursor
 *                 MDB_FIRST + MDB_NEXT to the end. entries/s, no latency.
 *   seek + 10     SEEKS (default 20 k, at most N) scans of a random
 *                 prefix: the first 14 bytes of key hit_idx[j] (all but its
 *                 last 2 digits: 100 keys match), limit 10, keys and values
 *                 copied out | MDB_SET_RANGE on the prefix + 9 MDB_NEXT in
 *                 the kept read txn (renewed, reset after). Every op timed
 *                 (open, the 10 entries, close), then its 10 entries
 *                 checked (not timed).
 *   seek + 10 {tag}  on stores of their own: a fresh amorad (--sync
 *                 periodic, the index as the other rows) and a fresh LMDB
 *                 environment, each holding only T tagged keys
 *                 "{u%06u}:%06u" (tag, j), 100 a tag (T = 100 k, 1000
 *                 tags; N rounded down to 100 for N < 100 k), loaded in key
 *                 order (buffered, one flush | one txn), then SEEKS seeks
 *                 as above of the prefix "{uNNNNNN}:" of a random tag: a
 *                 whole hash tag, so amora scans only that tag's shard.
 *                 Each store is removed afterwards.
 *   batch 10 / batch 100 / batch 1000  (printed under sync set; run after
 *                 the scans, when the store holds the N keys again) atomic
 *                 batches of B = 10, 100, 1000 sets: max(1, BATCH_OPS / B)
 *                 batches (BATCH_OPS: default min(N, 100 k), so 10 k, 1 k
 *                 and 100 batches at N = 1 M), each one amora_batch of B
 *                 AMORA_OP_SETs (nothing buffered before it) | one LMDB write
 *                 txn of B mdb_puts, committed (the periodic environment
 *                 the other rows use: MDB_NOSYNC, its mdb_env_sync every
 *                 100 ms landing in the batch that finds it due). Set k
 *                 of a row is of existing key hit_idx[k % N] (random
 *                 order, the keys of a batch distinct, spread over every
 *                 shard) with a new value (that of id 3*10^11 + B*10^8 +
 *                 the key's number, so each row writes values no earlier
 *                 write left). Existing keys, as the 2R+1W writer's: both
 *                 stores replace values rather than grow, the rows cost
 *                 the same whatever ran before, and the store stays the N
 *                 keys the rows after expect (new keys would add 300 k to
 *                 a 1 M-key store over the three rows). The ops
 *                 and values are laid out before the clock starts. ops/s
 *                 counts sets (a batch of 100 is 100 ops); latency: every
 *                 batch timed, p50/p99 per batch. Then (not timed) every
 *                 63rd set (63: prime to B, so every position in a batch
 *                 is sampled) and every set of the last batch are read
 *                 back and must have their new value; the keys are set
 *                 back to their own values (buffered, one flush | one
 *                 txn) and the same sample must read them so.
 *   2 readers + 1 writer, separate processes, MIXED_SECONDS (default 5):
 *                 readers: random gets (every 64th timed); writer: synchronous
 *                 sets of random existing keys (every op timed). LMDB: each
 *                 process opens the environment after fork().
 *   recovery      the last write is a synchronous set of key N-1; SIGTERM
 *                 amorad, start a new one on the same data dir and time until
 *                 amora_open succeeds, every shard is ready and a get of that
 *                 key returns its value. Then every one of the N keys is read
 *                 back and checked (not timed).
 *   sync always   a fresh amorad with --sync always, A sets (default 2000) |
 *                 LMDB with its default durability (fsync per commit).
 *   buffered set (random)  last in the run, on stores of its own: a fresh
 *                 amorad (--sync periodic) and a fresh LMDB environment, each
 *                 removed afterwards; the same N keys in a random order (that
 *                 of get hit), amora_set_buffered + one amora_flush | one txn.
 *                 Keys and values are laid out in that order and read in
 *                 sequence, as the sorted row reads its own (reading the
 *                 values at random costs the client a cache miss a key:
 *                 -25 % for amora here). Printed beside the sorted row; then
 *                 RAM per key again.
 *   buffered set, --sorted-index off  the index's cost: both buffered sets
 *                 again (sorted, then random), each on a fresh amorad
 *                 --sorted-index off of its own (whatever
 *                 AMORA_SORTED_INDEX says), then RAM per key; printed
 *                 under the two buffered set rows; no LMDB side.
 *   RAM per key   after each N-key load (the sorted one on the store the
 *                 other rows use, before the update; the random one and
 *                 the two index-off ones on their own stores), divided by N: amora_stats' memory_used (the
 *                 blocks the shards have written for records and tables,
 *                 in use or free; the target <= 160 B is checked on it),
 *                 its record_bytes, and the segment's resident size: the
 *                 allocated blocks of amorad's data segment, the memfd
 *                 "amora-data" (stat of /proc/<amorad>/fd/N: every page any
 *                 process touched, header and chunk arrays included; chosen
 *                 over an Rss from smaps, which counts only the pages mapped
 *                 in that one process) | LMDB: (mdb_env_info's me_last_pgno
 *                 + 1) * mdb_env_stat's page size.
 *
 * The table's heading gives amorad's shard count (amorad's default, 64,
 * unless AMORA_SHARDS says otherwise), which the write rows depend on.
 *
 * Durability is matched row by row: amora --sync periodic (ack after the log
 * write, fdatasync within 100 ms) is paired with LMDB MDB_NOSYNC plus
 * mdb_env_sync() every 100 ms, done inline by the writing process (its cost
 * lands in the op that triggers it); amora --sync always with LMDB's default
 * (fsync before the commit returns).
 *
 * Every figure is the median of RUNS runs (default 3). `amora-bench --json
 * FILE` also writes every printed figure, each run's and the medians, as
 * one JSON object to FILE (perf/lib/report.h has its shape; perf/plot
 * draws it): FILE.tmp is created before the first run (a path that cannot
 * be written fails at once), written after the last and renamed to FILE;
 * a failed run leaves FILE as it was.
 * Environment:
 *   RUNS, KEYS, SYNC_KEYS, ALWAYS_KEYS, SEEKS, BATCH_OPS (sets of each batch row,
 *   1000..10^8; default min(N, 100 k)), MIXED_SECONDS, AMORAD (path of the
 *   amorad binary), AMORA_SHARDS (passed as --shards; default: amorad's),
 *   AMORA_SORTED_INDEX (on | off, passed as --sorted-index; default on),
 *   AMORA_MEMORY (default 4G), BENCH_DIR (parent of the temp dir; default
 *   $TMPDIR or /tmp).
 *
 * With AMORA_SORTED_INDEX=off amora's scan rows are not run (amora "-").
 *
 * Targets (perf/lib/report.c, report_target_list): sync set and delete p50
 * <= 15 us and >= LMDB; buffered sets (both orders) >= 2.5 M/s and >= LMDB;
 * flush per 1024 >= 0.8x; the 2R+1W writer >= LMDB with each reader >= 2x;
 * get hit >= 2.5 M/s; recovery < 1 s; RAM per key <= 160 B; full scan
 * >= 10 M entries/s; seek + 10 {tag} >= 0.5x LMDB; seek + 10 (prefix) p50
 * <= 15 us; the index's cost (1 - with / without, buffered set ops/s)
 * <= 25 % in both orders; batch 100 ops/s >= LMDB's; batch 10's p50 (a
 * whole batch) <= 3x the p50 of one sync set (the sync set row of the
 * same runs, amora's; the figure prints the ratio).
 * Exit status: 0 when the benchmark ran (targets are printed as met or
 * missed, never enforced), 1 on any failure (wrong value, error from the
 * library or LMDB, amorad not starting or not stopping cleanly). amorad and
 * every child process are stopped and the temp dir removed on every exit
 * path; children also die with us (PR_SET_PDEATHSIG).
 *
 * This file is the driver: options, the runs, recovery, cleanup. Its parts
 * are under perf/lib/: each phase once on an engine with an amora side and
 * an LMDB side (engine.h, phases.h, mixed.h), the workload, figures and
 * report, and amorad started through tests/daemon.h (server.h).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "libclient/amora.h"
#include "perf/lib/engine.h"
#include "perf/lib/env.h"
#include "perf/lib/fail.h"
#include "perf/lib/files.h"
#include "perf/lib/figures.h"
#include "perf/lib/mixed.h"
#include "perf/lib/phases.h"
#include "perf/lib/report.h"
#include "perf/lib/server.h"
#include "perf/lib/usage.h"
#include "perf/lib/workload.h"
#include "shm/clock.h"

#define BATCH 1024
#define FIG_NONE ((struct fig){ -1, -1, -1 }) /* a row a side does not run */
#define SEGMENT_MEMFD "amora-data" /* the name amorad's data segment has (shm/segment.c) */

/* ---------- configuration ---------- */

static int runs = 3;          /* RUNS */
static int scans_amora;       /* amora's rows run with its sorted index: it can scan */
static int mixed_seconds = 5; /* MIXED_SECONDS */
static const char *memory_opt = "4G";

static struct workload w; /* KEYS, SYNC_KEYS, ALWAYS_KEYS */
static struct results res;

/* ---------- process state for cleanup ---------- */

static pid_t main_pid;
static char root[256]; /* temp dir, removed at exit */
static char json_tmp[PATH_MAX]; /* --json's FILE.tmp until renamed, removed at exit */

static void cleanup(void)
{
	if (getpid() != main_pid)
		return;
	mixed_kill();
	server_kill();
	if (root[0]) {
		files_rm_tree(root);
		root[0] = 0;
	}
	if (json_tmp[0]) {
		unlink(json_tmp);
		json_tmp[0] = 0;
	}
}

static void on_signal(int sig)
{
	/* Not async-signal-safe (nftw), but this is a benchmark that is being
	 * interrupted: stopping amorad and removing the temp dir matters more. */
	static const char m[] = "\namora-bench: interrupted, cleaning up\n";
	if (write(2, m, sizeof(m) - 1) < 0) {
	}
	cleanup();
	_exit(128 + sig);
}

/* bench_die in the main process: the message, then what amorad left. */
static void on_failure(const char *msg)
{
	fflush(stdout);
	fprintf(stderr, "\namora-bench: FAILED: %s\n", msg);
	server_explain();
	exit(1);
}

#define AMCHK(db, call)                                                                   \
	do {                                                                              \
		int rc_ = (call);                                                         \
		if (rc_ != 0)                                                             \
			bench_die("%s:%d: %s -> %s: %s", __FILE__, __LINE__, #call,       \
				  amora_strerror(rc_), amora_errmsg(db));                 \
	} while (0)

/* ---------- one run ---------- */

static unsigned shards_seen;
static double clock_ns;

/* RAM per key of e's store just after its N-key load: what the store
 * counts, and (amora) the pages amorad's data segment holds. */
static void run_memory(struct engine *e, int side, int load, int run)
{
	struct report_mem *out = &res.mem[load][side][run];
	struct engine_mem m;
	double seg = side == AM ? usage_memfd_bytes(server_pid(), SEGMENT_MEMFD) : -1;

	e->memory(e, &m);
	out->used = m.used / (double)w.n;
	out->records = m.records < 0 ? -1 : m.records / (double)w.n;
	out->resident = seg < 0 ? -1 : seg / (double)w.n;
}

/* A phase of `ops` ops with the CPU it took per op (this process;
 * amora: amorad and its shard processes too) into res.cpu[c]. */
static struct fig run_cpu_phase(struct fig (*phase)(struct engine *, const struct workload *),
				struct engine *e, int side, int c, int run, uint64_t ops)
{
	static struct usage_snap a, b; /* 16 KiB each */
	pid_t srv = side == AM ? server_pid() : 0;

	usage_snap_before(&a, srv);
	struct fig f = phase(e, &w);
	usage_snap_after(&b, srv);
	res.cpu[c][side][run] = usage_cpu_per_op(&a, &b, ops);
	return f;
}

/* The rows above the line but the mixed ones, the random-order
 * buffered set, the tagged seeks and the index-off ones, on either
 * engine; RAM per key after the first load. */
static void run_phases(struct engine *e, int side, int run)
{
	res.row[R_BUF][side][run] = phase_buffered(e, &w, 0);
	res.row[R_BUF][side][run].p50 = res.row[R_BUF][side][run].p99 = -1;
	run_memory(e, side, L_SORTED, run);
	res.row[R_BUF_END][side][run] = phase_buffered(e, &w, BATCH);
	res.row[R_SYNC][side][run] = run_cpu_phase(phase_sync_set, e, side, C_SYNC, run, w.s);
	res.row[R_HIT][side][run] = phase_hits(e, &w);
	res.row[R_MISS][side][run] = phase_misses(e, &w);
	res.row[R_DEL][side][run] = run_cpu_phase(phase_dels, e, side, C_DEL, run, w.s);
	if (side == LM || scans_amora) {
		res.row[R_SCAN][side][run] = phase_scan_all(e, &w);
		res.row[R_SEEK][side][run] = phase_seek_prefix(e, &w, res.seeks);
	} else {
		res.row[R_SCAN][side][run] = res.row[R_SEEK][side][run] = FIG_NONE;
	}
	for (int row = R_BATCH10; row <= R_BATCH1000; row++)
		res.row[row][side][run] = phase_batch(e, &w, report_batch_size(row), res.batch_ops);
}

/* A fresh store of its own, dir = root/<name>-<run>: an amorad --sync
 * periodic with --sorted-index ix, and the engine on it. */
static struct engine *run_own_amora(char *dir, size_t cap, const char *name, int run, const char *ix)
{
	snprintf(dir, cap, "%s/%s-%d", root, name, run);
	files_mkdir(dir);
	server_start_index(dir, "periodic", ix);
	return engine_amora(server_open(200000));
}

/* ... a fresh LMDB environment (periodic) and the engine on it. */
static struct engine *run_own_lmdb(char *dir, size_t cap, const char *name, int run)
{
	snprintf(dir, cap, "%s/%s-%d", root, name, run);
	files_mkdir(dir);
	return engine_lmdb_open(dir, 1, 1);
}

/* Closes e and removes its store (amora: stops its amorad first). */
static void run_own_end(struct engine *e, int side, const char *dir)
{
	e->close(e);
	if (side == AM)
		server_stop();
	files_rm_tree(dir);
}

/* seek + 10 {tag}: the tagged keys alone on a fresh store of each engine
 * (amora with the index as the other rows have it), loaded in key order
 * and flushed, then the seeks; each store removed right after. */
static void run_tagged(int run)
{
	char dir[PATH_MAX];
	struct engine *e;

	res.row[R_SEEK_TAG][AM][run] = FIG_NONE;
	if (scans_amora) {
		e = run_own_amora(dir, sizeof(dir), "amora-tagged", run, server_sorted_index());
		phase_tag_load(e, &w);
		res.row[R_SEEK_TAG][AM][run] = phase_seek_tag(e, &w, res.seeks);
		run_own_end(e, AM, dir);
	}
	e = run_own_lmdb(dir, sizeof(dir), "lmdb-tagged", run);
	phase_tag_load(e, &w);
	res.row[R_SEEK_TAG][LM][run] = phase_seek_tag(e, &w, res.seeks);
	run_own_end(e, LM, dir);
}

/* The index's cost: both buffered sets again, each on a fresh amorad
 * --sorted-index off of its own, then RAM per key; no LMDB side. */
static void run_noindex(int run)
{
	char dir[PATH_MAX];
	struct engine *e;

	e = run_own_amora(dir, sizeof(dir), "amora-noindex-sorted", run, "off");
	res.row[R_BUF_NOIX][AM][run] = phase_buffered(e, &w, 0);
	res.row[R_BUF_NOIX][AM][run].p50 = res.row[R_BUF_NOIX][AM][run].p99 = -1;
	run_memory(e, AM, L_SORTED_NOIX, run);
	run_own_end(e, AM, dir);

	e = run_own_amora(dir, sizeof(dir), "amora-noindex-random", run, "off");
	res.row[R_BUF_RAND_NOIX][AM][run] = phase_buffered_random(e, &w);
	run_memory(e, AM, L_RANDOM_NOIX, run);
	run_own_end(e, AM, dir);

	res.row[R_BUF_NOIX][LM][run] = res.row[R_BUF_RAND_NOIX][LM][run] = FIG_NONE;
	res.mem[L_SORTED_NOIX][LM][run] = res.mem[L_RANDOM_NOIX][LM][run] = (struct report_mem){ -1, -1, -1 };
}

/* buffered set (random): the N keys in random order on a fresh store of
 * each engine (a fresh amorad, a fresh LMDB environment), then RAM per
 * key; each store is removed right after. */
static void run_random(int run)
{
	char dir[PATH_MAX];
	struct engine *e;

	e = run_own_amora(dir, sizeof(dir), "amora-random", run, server_sorted_index());
	res.row[R_BUF_RAND][AM][run] = phase_buffered_random(e, &w);
	run_memory(e, AM, L_RANDOM, run);
	run_own_end(e, AM, dir);

	e = run_own_lmdb(dir, sizeof(dir), "lmdb-random", run);
	res.row[R_BUF_RAND][LM][run] = phase_buffered_random(e, &w);
	run_memory(e, LM, L_RANDOM, run);
	run_own_end(e, LM, dir);
}

static void run_mixed(const struct engine_kind *kind, const char *dir, int side, int run)
{
	struct fig f[MIXED_ROLES];

	mixed_run(kind, dir, &w, mixed_seconds, f);
	for (int k = 0; k < MIXED_ROLES; k++)
		res.row[R_MIX_R1 + k][side][run] = f[k];
}

/* Restart amorad on dir and time until the last key written before the
 * stop is readable; then every key must be there with its value (not
 * timed). */
static void run_recovery(const char *dir, int run)
{
	char buf[VLEN + 28];
	const char *last_key = w.keys + (w.n - 1) * KLEN;
	size_t vlen;
	struct amora_stats st;
	uint64_t t0 = shm_now_ns();

	server_start(dir, "periodic");
	amora *db = server_open(100000);
	res.rec_open_ms[run] = (shm_now_ns() - t0) / 1e6;
	for (;;) {
		int hb = amora_heartbeat(db);
		if (hb == 0 && amora_stats(db, &st) == 0 && st.shards_ready == st.shards) {
			int rc = amora_get(db, last_key, KLEN, buf, sizeof(buf), &vlen);
			if (rc == 0) {
				workload_check("recovery: last key", w.n - 1, buf, vlen);
				break;
			}
			if (rc != AMORA_ENOTFOUND)
				bench_die("recovery: amora_get: %s: %s", amora_strerror(rc), amora_errmsg(db));
		} else if (hb != 0 && hb != AMORA_ERESTARTING) {
			bench_die("recovery: amora_heartbeat: %s: %s", amora_strerror(hb), amora_errmsg(db));
		}
		server_check();
		if (shm_now_ns() - t0 > 60000000000ull)
			bench_die("recovery: the last key is still not readable 60 s after the restart");
		usleep(100);
	}
	res.rec_ms[run] = (shm_now_ns() - t0) / 1e6;
	for (uint64_t i = 0; i < w.n; i++) {
		int rc = amora_get(db, w.keys + i * KLEN, KLEN, buf, sizeof(buf), &vlen);
		if (rc)
			bench_die("after recovery, key %llu is not readable: %s (the store said it was ready)",
				  (unsigned long long)i, amora_strerror(rc));
		workload_check("after recovery", i, buf, vlen);
	}
	AMCHK(db, amora_stats(db, &st));
	res.rec_keys[run] = st.keys;
	if (st.keys != w.n)
		fprintf(stderr, "amora-bench: WARNING: after recovery amora_stats says %llu keys, expected %llu\n",
			(unsigned long long)st.keys, (unsigned long long)w.n);
	AMCHK(db, amora_close(db));
	server_stop();
}

/* amora --sync periodic: the phases, 2R+1W, the last write and the stop. */
static void run_amora(const char *dir, int run)
{
	struct amora_stats st;
	uint64_t t0 = shm_now_ns();

	server_start(dir, "periodic");
	amora *db = server_open(200000);
	res.start_ms[run] = (shm_now_ns() - t0) / 1e6;
	AMCHK(db, amora_stats(db, &st));
	shards_seen = st.shards;

	struct engine *e = engine_amora(db);
	run_phases(e, AM, run);
	AMCHK(db, amora_stats(db, &st));
	if (st.keys != w.n)
		fprintf(stderr, "amora-bench: WARNING: amora_stats says %llu keys after the deletes, expected %llu\n",
			(unsigned long long)st.keys, (unsigned long long)w.n);
	run_mixed(&engine_amora_kind, dir, AM, run);

	/* The last write before the restart. */
	e->put(e, w.keys + (w.n - 1) * KLEN, KLEN, w.vals + (w.n - 1) * VLEN, VLEN);
	e->close(e);
	res.stop_ms[run] = server_stop();
	res.data_mb[run] = files_du(dir) / 1048576.0;
}

/* LMDB, periodic-equivalent: the phases, 2R+1W, then reopen + first get. */
static void run_lmdb(const char *dir, int run)
{
	char buf[VLEN + 28];
	struct engine *e = engine_lmdb_open(dir, 1, 1);

	run_phases(e, LM, run);
	e->close(e); /* the children open their own environments */
	run_mixed(&engine_lmdb_kind, dir, LM, run);
	res.lmdb_mb[run] = files_du(dir) / 1048576.0;
	uint64_t t0 = shm_now_ns();
	e = engine_lmdb_open(dir, 1, 0);
	if (e->get(e, w.keys + (w.n - 1) * KLEN, KLEN, buf, sizeof(buf)) < 0)
		bench_die("LMDB lost the last key");
	res.lmdb_reopen_ms[run] = (shm_now_ns() - t0) / 1e6;
	e->close(e);
}

static void one_run(int run)
{
	char dir[PATH_MAX];
	uint64_t r0 = shm_now_ns();
	struct engine *e;

	snprintf(dir, sizeof(dir), "%s/amora-%d", root, run);
	files_mkdir(dir);
	run_amora(dir, run);
	run_recovery(dir, run);
	files_rm_tree(dir);

	/* --- amora, --sync always --- */
	snprintf(dir, sizeof(dir), "%s/amora-always-%d", root, run);
	files_mkdir(dir);
	server_start(dir, "always");
	e = engine_amora(server_open(200000));
	res.row[R_ALWAYS][AM][run] = phase_always(e, &w);
	e->close(e);
	server_stop();
	files_rm_tree(dir);

	snprintf(dir, sizeof(dir), "%s/lmdb-%d", root, run);
	files_mkdir(dir);
	run_lmdb(dir, run);
	files_rm_tree(dir);

	/* --- LMDB, default durability --- */
	snprintf(dir, sizeof(dir), "%s/lmdb-durable-%d", root, run);
	files_mkdir(dir);
	e = engine_lmdb_open(dir, 0, 1);
	res.row[R_ALWAYS][LM][run] = phase_always(e, &w);
	e->close(e);
	files_rm_tree(dir);

	run_random(run);
	run_tagged(run);
	run_noindex(run);

	res.run_s[run] = (shm_now_ns() - r0) / 1e9;
	printf("run %d/%d: %.1f s  (amora: buffered %.2f M/s, random %.2f M/s, sync p50 %.1f us, hit %.2f M/s,"
	       " recover %.0f ms, scan %.2f M/s, seek+10 p50 %.1f us, batch 100 %.2f M/s, batch 10 p50 %.1f us;"
	       " lmdb: buffered %.2f M/s, random %.2f M/s, hit %.2f M/s, scan %.2f M/s, batch 100 %.2f M/s)\n",
	       run + 1, runs, res.run_s[run], res.row[R_BUF][AM][run].ops / 1e6,
	       res.row[R_BUF_RAND][AM][run].ops / 1e6, res.row[R_SYNC][AM][run].p50 / 1e3,
	       res.row[R_HIT][AM][run].ops / 1e6, res.rec_ms[run], res.row[R_SCAN][AM][run].ops / 1e6,
	       res.row[R_SEEK][AM][run].p50 / 1e3, res.row[R_BATCH100][AM][run].ops / 1e6,
	       res.row[R_BATCH10][AM][run].p50 / 1e3, res.row[R_BUF][LM][run].ops / 1e6,
	       res.row[R_BUF_RAND][LM][run].ops / 1e6, res.row[R_HIT][LM][run].ops / 1e6,
	       res.row[R_SCAN][LM][run].ops / 1e6, res.row[R_BATCH100][LM][run].ops / 1e6);
	fflush(stdout);
}

/* ---------- main ---------- */

static const char *fs_name(const char *path)
{
	struct statfs sf;
	if (statfs(path, &sf) != 0)
		return "?";
	switch ((unsigned long)sf.f_type) {
	case 0xEF53: return "ext4";
	case 0x01021994: return "tmpfs";
	case 0x58465342: return "xfs";
	case 0x9123683E: return "btrfs";
	case 0x794c7630: return "overlayfs";
	default: return "other";
	}
}

static void usage(FILE *to)
{
	fprintf(to, "usage: amora-bench [--json FILE]\n"
		    "  --json FILE  also write every figure (medians and each run's) as JSON to FILE\n"
		    "Environment (see the top of perf/amora-bench.c): RUNS KEYS SYNC_KEYS ALWAYS_KEYS\n"
		    "  SEEKS BATCH_OPS MIXED_SECONDS AMORAD AMORA_SHARDS AMORA_SORTED_INDEX AMORA_MEMORY\n"
		    "  BENCH_DIR\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *json_path = NULL;
	FILE *json = NULL;

	for (int c; (c = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
		if (c == 'j') {
			json_path = optarg;
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "amora-bench: unexpected argument %s\n", argv[optind]);
		usage(stderr);
		return 1;
	}
	/* Before the runs, so a path that cannot be written fails at once. */
	if (json_path) {
		if ((size_t)snprintf(json_tmp, sizeof(json_tmp), "%s.tmp", json_path) >= sizeof(json_tmp)) {
			fprintf(stderr, "amora-bench: --json %s: path too long\n", json_path);
			return 1;
		}
		if (!(json = fopen(json_tmp, "w"))) {
			fprintf(stderr, "amora-bench: --json %s: cannot create %s: %s\n", json_path, json_tmp,
				strerror(errno));
			json_tmp[0] = 0;
			return 1;
		}
	}
	main_pid = getpid();
	bench_die_hook_set(on_failure);
	setvbuf(stdout, NULL, _IOLBF, 0);
	runs = (int)env_u64("RUNS", 3, 1, FIG_MAXRUNS, 1);
	uint64_t n = env_u64("KEYS", 1000000, 1000, 100000000, 1);
	uint64_t s = env_u64("SYNC_KEYS", n < 100000 ? n : 100000, 1, n, 1);
	uint64_t a = env_u64("ALWAYS_KEYS", n < 2000 ? n : 2000, 1, n, 1);
	res.seeks = env_u64("SEEKS", n < 20000 ? n : 20000, 1, 100000000, 1);
	res.batch_ops = env_u64("BATCH_OPS", n < 100000 ? n : 100000, 1000, 100000000, 1);
	mixed_seconds = (int)env_u64("MIXED_SECONDS", 5, 1, 3600, 1);
	const char *shards_opt = getenv("AMORA_SHARDS");
	if (shards_opt && !*shards_opt)
		shards_opt = NULL;
	if (getenv("AMORA_MEMORY") && *getenv("AMORA_MEMORY"))
		memory_opt = getenv("AMORA_MEMORY");

	atexit(cleanup);
	bench_signals_set(on_signal);

	const char *amorad = server_find();
	const char *base = getenv("BENCH_DIR");
	if (!base || !*base)
		base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	if (strlen(base) > sizeof(root) - 32)
		bench_die("BENCH_DIR/TMPDIR %s: path too long", base);
	if (files_tmpdir(root, sizeof(root), base, "amora-bench") != 0)
		bench_die("mkdtemp in %s: %s", base, strerror(errno));
	server_config(memory_opt, shards_opt, root);

	uint64_t c0 = shm_now_ns();
	for (int i = 0; i < 1000000; i++)
		shm_now_ns();
	clock_ns = (shm_now_ns() - c0) / 1e6;

	uint64_t t0 = shm_now_ns();
	workload_make(&w, n, s, a);
	/* 100 k tagged keys (1000 tags), fewer for fewer than 100 k keys */
	workload_make_tags(&w, (n < 100000 ? n : 100000) / WORKLOAD_TAG_KEYS);
	scans_amora = strcmp(server_sorted_index(), "on") == 0;
	char nb[32];
	printf("amora-bench: %s keys of %d bytes, %d-byte values; %d run(s); amorad %s, sorted index %s\n",
	       fig_fmt_count(nb, n), KLEN, VLEN, runs, amorad, server_sorted_index());
	printf("  temp dir %s (%s); key data generated in %.2f s; %s\n", root, fs_name(root),
	       (shm_now_ns() - t0) / 1e9, engine_lmdb_version());
	printf("  sync sets / deletes on %llu keys (a 1 M-key sync phase alone would take 10-20 s), "
	       "--sync always / durable LMDB on %llu\n",
	       (unsigned long long)s, (unsigned long long)a);
	printf("  seek + 10 rows: %llu seeks each; %llu tagged keys (%llu tags)%s\n", (unsigned long long)res.seeks,
	       (unsigned long long)w.t, (unsigned long long)w.tags,
	       scans_amora ? "" : "; amora's scan rows not run (AMORA_SORTED_INDEX=off)");
	printf("  batch rows: %llu sets each (batches of 10, 100, 1000 existing keys)\n",
	       (unsigned long long)res.batch_ops);

	double l0 = env_loadavg();
	printf("  load average at start %.2f on %ld CPUs%s\n", l0, sysconf(_SC_NPROCESSORS_ONLN),
	       l0 > 1.0 ? "  (the machine is busy: figures will be noisy)" : "");
	for (int r = 0; r < runs; r++)
		one_run(r);
	double l1 = env_loadavg();
	printf("  amorad: %u shards, --memory %s; load average at the end %.2f (includes this benchmark)\n", shards_seen, memory_opt,
	       l1);
	struct report_setup setup = { .amorad = amorad, .lmdb = engine_lmdb_version(), .memory = memory_opt,
				      .fs = fs_name(root), .sorted_index = server_sorted_index(),
				      .shards = shards_seen, .load_start = l0, .load_end = l1 };
	report_print(&res, runs, &w, mixed_seconds, clock_ns, &setup);
	if (json) {
		if (report_json(json, &res, runs, &w, mixed_seconds, clock_ns, &setup) != 0 || fclose(json) != 0)
			bench_die("--json %s: writing %s failed: %s", json_path, json_tmp, strerror(errno));
		if (rename(json_tmp, json_path) != 0)
			bench_die("--json: rename %s to %s: %s", json_tmp, json_path, strerror(errno));
		json_tmp[0] = 0;
		printf("\nfigures written to %s (JSON)\n", json_path);
	}
	cleanup();
	return 0;
}
