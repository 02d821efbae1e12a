/*
 * amora-bench.c — the whole store (amorad + libamora) against LMDB, same
 * workload, same invocation.
 *
 * Workload: N keys (default 1 M) of 16 bytes ("key:%012u"), 100-byte values
 * derived from the key's number (so every sampled read is verified; a wrong
 * value fails the run loudly). Per run, on a fresh amorad (--sync periodic)
 * and a fresh LMDB environment in a temp dir:
 *
 *   buffered set  N new keys in key order, amora_set_buffered, one
 *                 amora_flush at the end | LMDB: one txn for all N puts
 *                 (no latency figure).
 *   buffered update  the same N keys again (same values), amora_flush every
 *                 1024 | LMDB: one write txn per 1024 puts. Latency = one
 *                 batch of 1024 (sets + flush | puts + commit). A flush waits
 *                 for every shard the batch touched: 1024 keys over 64 shards
 *                 is 64 wake-ups for 16 keys each.
 *   sync set      S new keys (default 100 k, random order) with amora_set |
 *                 LMDB: one write txn per put. Every op timed.
 *   get hit       N gets of random existing keys | LMDB: one read txn per get
 *                 (mdb_txn_renew + mdb_get + copy + mdb_txn_reset, as an LMDB
 *                 user who keeps a read txn handle does). Every 64th op timed.
 *   get miss      N gets of random missing keys (interleaved with the existing
 *                 ones in key order, so LMDB walks a real path). Every 64th op.
 *   delete        the S keys of "sync set", random order, synchronous.
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
 *
 * Durability is matched row by row: amora --sync periodic (ack after the log
 * write, fdatasync within 100 ms) is paired with LMDB MDB_NOSYNC plus
 * mdb_env_sync() every 100 ms, done inline by the writing process (its cost
 * lands in the op that triggers it); amora --sync always with LMDB's default
 * (fsync before the commit returns).
 *
 * Every figure is the median of RUNS runs (default 3). Environment:
 *   RUNS, KEYS, SYNC_KEYS, ALWAYS_KEYS, MIXED_SECONDS, AMORAD (path of the
 *   amorad binary), AMORA_SHARDS (passed as --shards; default: amorad's),
 *   AMORA_MEMORY (default 4G), BENCH_DIR (parent of the temp dir; default
 *   $TMPDIR or /tmp).
 *
 * Exit status: 0 when the benchmark ran (targets are printed as met or
 * missed, never enforced), 1 on any failure (wrong value, error from the
 * library or LMDB, amorad not starting or not stopping cleanly). amorad and
 * every child process are stopped and the temp dir removed on every exit
 * path; children also die with us (PR_SET_PDEATHSIG).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <lmdb.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libclient/amora.h"

#ifndef AMORA_BUILD_DIR
#define AMORA_BUILD_DIR "build"
#endif

#define KLEN 16
#define VLEN 100
#define BATCH 1024
#define SAMPLE_MASK 63 /* reads: every 64th op is timed */
#define MAXRUNS 15
#define SYNC_INTERVAL_NS 100000000ull /* LMDB "periodic": mdb_env_sync every 100 ms */
#define OPEN_TIMEOUT_NS 10000000000ull

/* ---------- configuration ---------- */

static uint64_t N = 1000000;     /* KEYS */
static uint64_t S = 100000;      /* SYNC_KEYS: sync sets and deletes */
static uint64_t A = 2000;        /* ALWAYS_KEYS: --sync always / LMDB durable */
static int runs = 3;             /* RUNS */
static int mixed_seconds = 5;    /* MIXED_SECONDS */
static char amorad_path[PATH_MAX];
static const char *shards_opt;   /* AMORA_SHARDS */
static const char *memory_opt = "4G";

/* ---------- process state for cleanup ---------- */

static pid_t main_pid;
static char root[256];               /* temp dir, removed at exit */
static volatile pid_t srv_pid = -1;  /* running amorad */
static char srv_log[PATH_MAX];
static volatile pid_t kids[8];
static int nkids;

struct role_res {
	uint64_t ops, elapsed_ns;
	double p50, p99;
	int failed;
	char msg[512];
};
static struct role_res *child_res; /* this child's slot in shared memory */

static void rm_tree(const char *path);
static void print_log_tail(const char *path, int lines);

static void cleanup(void)
{
	if (getpid() != main_pid)
		return;
	for (int i = 0; i < nkids; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
			kids[i] = -1;
		}
	if (srv_pid > 0) {
		pid_t p = srv_pid;
		int st;
		kill(p, SIGTERM);
		for (int i = 0; i < 10000; i++) { /* 10 s */
			if (waitpid(p, &st, WNOHANG) == p) {
				p = -1;
				break;
			}
			usleep(1000);
		}
		if (p > 0) {
			fprintf(stderr, "amora-bench: amorad %d ignored SIGTERM for 10 s, killing it\n", (int)p);
			kill(p, SIGKILL);
			waitpid(p, NULL, 0);
		}
		srv_pid = -1;
	}
	if (root[0]) {
		rm_tree(root);
		root[0] = 0;
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

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (getpid() != main_pid) {
		fprintf(stderr, "amora-bench (child %d): FAILED: %s\n", (int)getpid(), msg);
		if (child_res) {
			child_res->failed = 1;
			snprintf(child_res->msg, sizeof(child_res->msg), "%s", msg);
		}
		_exit(2);
	}
	fflush(stdout);
	fprintf(stderr, "\namora-bench: FAILED: %s\n", msg);
	int st;
	if (srv_pid > 0 && waitpid(srv_pid, &st, WNOHANG) == srv_pid) {
		/* amorad stops only on SIGTERM/SIGINT/SHUTDOWN, and we sent none. */
		srv_pid = -1;
		if (WIFEXITED(st))
			fprintf(stderr, "amora-bench: amorad had already exited with status %d although "
					"amora-bench never stopped it: something else stopped it (a pkill/killall "
					"of amorad on this machine, or SHUTDOWN on its socket?)\n",
				WEXITSTATUS(st));
		else
			fprintf(stderr, "amora-bench: amorad had died of signal %d\n", WTERMSIG(st));
		if (srv_log[0]) {
			fprintf(stderr, "---- last lines of amorad's log (%s) ----\n", srv_log);
			print_log_tail(srv_log, 25);
			fprintf(stderr, "----\n");
		}
	} else if (srv_pid > 0 && srv_log[0]) {
		fprintf(stderr, "---- last lines of amorad's log (%s) ----\n", srv_log);
		print_log_tail(srv_log, 25);
		fprintf(stderr, "----\n");
	}
	exit(1);
}

#define AMCHK(db, call)                                                                   \
	do {                                                                              \
		int rc_ = (call);                                                         \
		if (rc_ != 0)                                                             \
			die("%s:%d: %s -> %s: %s", __FILE__, __LINE__, #call,             \
			    amora_strerror(rc_), amora_errmsg(db));                       \
	} while (0)

#define MDBCHK(call)                                                                      \
	do {                                                                              \
		int rc_ = (call);                                                         \
		if (rc_ != 0)                                                             \
			die("%s:%d: %s -> %s", __FILE__, __LINE__, #call, mdb_strerror(rc_)); \
	} while (0)

/* ---------- small helpers ---------- */

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

static uint64_t env_u64(const char *name, uint64_t def, uint64_t lo, uint64_t hi)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return def;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "amora-bench: %s=%s: expected an integer in %llu..%llu\n", name, s,
			(unsigned long long)lo, (unsigned long long)hi);
		exit(1);
	}
	return v;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	remove(p);
	return 0;
}

static void rm_tree(const char *path)
{
	nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_bytes;
static int du_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)p, (void)ftw;
	if (flag == FTW_F)
		du_bytes += (uint64_t)sb->st_blocks * 512;
	return 0;
}

static uint64_t du(const char *path)
{
	du_bytes = 0;
	nftw(path, du_cb, 32, FTW_PHYS);
	return du_bytes;
}

static void print_log_tail(const char *path, int lines)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	static char buf[1 << 16];
	fseek(f, 0, SEEK_END);
	long sz = ftell(f), off = sz > (long)sizeof(buf) - 1 ? sz - (long)sizeof(buf) + 1 : 0;
	fseek(f, off, SEEK_SET);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = buf + n;
	int seen = 0;
	while (p > buf && seen <= lines)
		if (*--p == '\n')
			seen++;
	if (*p == '\n')
		p++;
	fputs(p, stderr);
}

static void mkdir_or_die(const char *p)
{
	if (mkdir(p, 0700) != 0)
		die("mkdir %s: %s", p, strerror(errno));
}

/* ---------- keys and values ---------- */

static inline void put_digits(char *dst, uint64_t v)
{
	for (int p = 11; p >= 0; p--) {
		dst[p] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* Key i: "key:%012u". A key of another family replaces the last digit with a
 * letter: 'a'+i%10 for the keys of the sync-set/delete phases, 'A'+i%10 for
 * missing keys. Both sort between existing keys, so in LMDB's B-tree they are
 * spread over the whole tree rather than appended at one end. */
static inline void make_key(char *k, uint64_t i, char family)
{
	memcpy(k, "key:", 4);
	put_digits(k + 4, i);
	if (family)
		k[15] = (char)(family + i % 10);
}

static inline uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Value of id: "val:" + 12 digits + 84 pseudo-random bytes seeded by id. */
static inline void make_val(char *v, uint64_t id)
{
	uint64_t st = id * 0x2545F4914F6CDD1Dull + 1, w;
	memcpy(v, "val:", 4);
	put_digits(v + 4, id);
	for (int o = 16; o < VLEN; o += 8) {
		w = splitmix(&st);
		memcpy(v + o, &w, VLEN - o < 8 ? (size_t)(VLEN - o) : 8);
	}
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static inline uint64_t rnd(void)
{
	return splitmix(&rng_state);
}

static char *keys;      /* N keys in key order */
static char *vals;      /* their values */
static char *hit_keys;  /* N existing keys in random order, laid out in that order */
static uint32_t *hit_idx;
static char *miss_keys; /* N missing keys, random */
static uint32_t *xidx;  /* S distinct numbers for the sync-set/delete keys, random order */

static void make_data(void)
{
	keys = xmalloc(N * KLEN);
	vals = xmalloc(N * VLEN);
	hit_keys = xmalloc(N * KLEN);
	hit_idx = xmalloc(N * sizeof(*hit_idx));
	miss_keys = xmalloc(N * KLEN);
	xidx = xmalloc(S * sizeof(*xidx));
	uint32_t *perm = xmalloc(N * sizeof(*perm));

	for (uint64_t i = 0; i < N; i++) {
		make_key(keys + i * KLEN, i, 0);
		make_val(vals + i * VLEN, i);
		hit_idx[i] = (uint32_t)i;
		perm[i] = (uint32_t)i;
	}
	for (uint64_t i = N - 1; i > 0; i--) {
		uint64_t j = rnd() % (i + 1);
		uint32_t t = hit_idx[i];
		hit_idx[i] = hit_idx[j], hit_idx[j] = t;
		j = rnd() % (i + 1);
		t = perm[i];
		perm[i] = perm[j], perm[j] = t;
	}
	for (uint64_t j = 0; j < N; j++) {
		memcpy(hit_keys + j * KLEN, keys + (uint64_t)hit_idx[j] * KLEN, KLEN);
		make_key(miss_keys + j * KLEN, rnd() % N, 'A');
	}
	for (uint64_t j = 0; j < S; j++)
		xidx[j] = perm[j];
	free(perm);
}

/* ---------- latency samples and figures ---------- */

struct samples {
	uint64_t *v;
	size_t n, cap;
};

static inline void s_push(struct samples *s, uint64_t x)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			die("out of memory (samples)");
	}
	s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct fig {
	double ops, p50, p99; /* ops/s, ns, ns */
	int set;
};

static struct fig fig_of(struct samples *s, uint64_t ops, uint64_t elapsed_ns)
{
	struct fig f = {0};
	f.set = 1;
	f.ops = elapsed_ns ? ops * 1e9 / (double)elapsed_ns : 0;
	if (s->n) {
		qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
		f.p50 = (double)s->v[(size_t)(s->n * 0.50)];
		size_t i99 = (size_t)ceil(s->n * 0.99) - 1;
		f.p99 = (double)s->v[i99 < s->n ? i99 : s->n - 1];
	}
	free(s->v);
	s->v = NULL, s->n = s->cap = 0;
	return f;
}

enum row { R_BUF, R_BUF_END, R_SYNC, R_HIT, R_MISS, R_DEL, R_MIX_R1, R_MIX_R2, R_MIX_W, R_ALWAYS, NROWS };
enum { AM, LM };
static struct fig res[NROWS][2][MAXRUNS];
static double rec_ms[MAXRUNS], rec_open_ms[MAXRUNS], stop_ms[MAXRUNS], start_ms[MAXRUNS],
	lmdb_reopen_ms[MAXRUNS], data_mb[MAXRUNS], lmdb_mb[MAXRUNS];
static uint64_t rec_keys[MAXRUNS];

/* ---------- amorad ---------- */

static int srv_count;

static void srv_start(const char *dir, const char *sync_mode)
{
	char sock[PATH_MAX];
	snprintf(srv_log, sizeof(srv_log), "%s/amorad-%d.log", root, ++srv_count);
	snprintf(sock, sizeof(sock), "%s/amora.sock", dir);
	fflush(stdout);
	fflush(stderr);
	pid_t parent = getpid();
	pid_t p = fork();
	if (p < 0)
		die("fork: %s", strerror(errno));
	if (p == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int fd = open(srv_log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		const char *argv[16];
		int a = 0;
		argv[a++] = amorad_path;
		argv[a++] = "--data-dir";
		argv[a++] = dir;
		argv[a++] = "--sync";
		argv[a++] = sync_mode;
		argv[a++] = "--memory";
		argv[a++] = memory_opt;
		if (shards_opt) {
			argv[a++] = "--shards";
			argv[a++] = shards_opt;
		}
		argv[a] = NULL;
		execv(amorad_path, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", amorad_path, strerror(errno));
		_exit(127);
	}
	srv_pid = p;
}

static void srv_check_alive(void)
{
	int st;
	if (srv_pid > 0 && waitpid(srv_pid, &st, WNOHANG) == srv_pid) {
		srv_pid = -1;
		fflush(stdout);
		fprintf(stderr, "---- amorad's log (%s) ----\n", srv_log);
		print_log_tail(srv_log, 25);
		if (WIFEXITED(st))
			die("amorad exited with status %d", WEXITSTATUS(st));
		die("amorad was killed by signal %d", WTERMSIG(st));
	}
}

/* Retry amora_open until it succeeds (up to 10 s). */
static amora *srv_open(const char *dir, uint64_t poll_ns)
{
	char sock[PATH_MAX];
	snprintf(sock, sizeof(sock), "%s/amora.sock", dir);
	uint64_t t0 = now_ns();
	int rc;
	for (;;) {
		amora *db = NULL;
		rc = amora_open(sock, &db);
		if (rc == 0)
			return db;
		srv_check_alive();
		if (now_ns() - t0 > OPEN_TIMEOUT_NS)
			break;
		struct timespec ts = {0, (long)poll_ns};
		nanosleep(&ts, NULL);
	}
	die("amora_open(%s) still failing after 10 s: %s", sock, amora_strerror(rc));
}

/* SIGTERM and wait for exit 0. Returns the time it took in ms. */
static double srv_stop(void)
{
	pid_t p = srv_pid;
	int st;
	uint64_t t0 = now_ns();
	if (p <= 0)
		die("srv_stop: no amorad running");
	kill(p, SIGTERM);
	for (;;) {
		pid_t r = waitpid(p, &st, WNOHANG);
		if (r == p)
			break;
		if (r < 0)
			die("waitpid(amorad): %s", strerror(errno));
		if (now_ns() - t0 > 30000000000ull)
			die("amorad did not exit within 30 s of SIGTERM");
		usleep(500);
	}
	double ms = (now_ns() - t0) / 1e6;
	srv_pid = -1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "---- amorad's log (%s) ----\n", srv_log);
		print_log_tail(srv_log, 25);
		if (WIFEXITED(st))
			die("amorad exited with status %d after SIGTERM (expected 0)", WEXITSTATUS(st));
		die("amorad died of signal %d after SIGTERM", WTERMSIG(st));
	}
	return ms;
}

/* ---------- LMDB ---------- */

struct lm {
	MDB_env *env;
	MDB_dbi dbi;
	int periodic;       /* MDB_NOSYNC + mdb_env_sync every 100 ms */
	uint64_t last_sync;
};

static void lm_open(struct lm *l, const char *dir, int periodic, int writer)
{
	MDB_txn *t;
	memset(l, 0, sizeof(*l));
	l->periodic = periodic;
	MDBCHK(mdb_env_create(&l->env));
	MDBCHK(mdb_env_set_mapsize(l->env, (size_t)4 << 30));
	MDBCHK(mdb_env_open(l->env, dir, periodic ? MDB_NOSYNC : 0, 0644));
	MDBCHK(mdb_txn_begin(l->env, NULL, writer ? 0 : MDB_RDONLY, &t));
	MDBCHK(mdb_dbi_open(t, NULL, 0, &l->dbi));
	MDBCHK(mdb_txn_commit(t));
	l->last_sync = now_ns();
}

static void lm_close(struct lm *l)
{
	if (l->periodic)
		MDBCHK(mdb_env_sync(l->env, 1));
	mdb_env_close(l->env);
	l->env = NULL;
}

static inline void lm_maybe_sync(struct lm *l)
{
	if (l->periodic) {
		uint64_t t = now_ns();
		if (t - l->last_sync >= SYNC_INTERVAL_NS) {
			MDBCHK(mdb_env_sync(l->env, 1));
			l->last_sync = t;
		}
	}
}

static inline void lm_put1(struct lm *l, const char *k, const char *v)
{
	MDB_txn *t;
	MDB_val mk = {KLEN, (void *)k}, mv = {VLEN, (void *)v};
	MDBCHK(mdb_txn_begin(l->env, NULL, 0, &t));
	MDBCHK(mdb_put(t, l->dbi, &mk, &mv, 0));
	MDBCHK(mdb_txn_commit(t));
	lm_maybe_sync(l);
}

/* A read: renew the kept read txn, get, copy the value out, reset.
 * Returns the value length, or -1 when not found. */
static inline long lm_get(struct lm *l, MDB_txn *rt, const char *k, char *buf, size_t cap)
{
	MDB_val mk = {KLEN, (void *)k}, mv;
	long r;
	MDBCHK(mdb_txn_renew(rt));
	int rc = mdb_get(rt, l->dbi, &mk, &mv);
	if (rc == 0) {
		memcpy(buf, mv.mv_data, mv.mv_size < cap ? mv.mv_size : cap);
		r = (long)mv.mv_size;
	} else if (rc == MDB_NOTFOUND) {
		r = -1;
	} else {
		die("mdb_get: %s", mdb_strerror(rc));
	}
	mdb_txn_reset(rt);
	return r;
}

/* ---------- verification ---------- */

static void check_val(const char *what, uint64_t id, const char *got, size_t glen)
{
	char exp[VLEN];
	make_val(exp, id);
	if (glen != VLEN || memcmp(got, exp, VLEN) != 0) {
		size_t d = 0;
		while (d < VLEN && d < glen && got[d] == exp[d])
			d++;
		die("%s: WRONG VALUE for key %llu: length %zu (expected %d), first difference at byte %zu",
		    what, (unsigned long long)id, glen, VLEN, d);
	}
}

/* ---------- amora phases ---------- */

/* batch: flush every `batch` sets and at the end; 0: only at the end (no
 * latency figure then). */
static struct fig am_buffered(amora *db, uint64_t batch)
{
	struct samples s = {0};
	uint64_t t0 = now_ns(), tb = t0;
	for (uint64_t i = 0; i < N; i++) {
		AMCHK(db, amora_set_buffered(db, keys + i * KLEN, KLEN, vals + i * VLEN, VLEN));
		if ((batch && (i + 1) % batch == 0) || i + 1 == N) {
			AMCHK(db, amora_flush(db));
			uint64_t t = now_ns();
			s_push(&s, t - tb);
			tb = t;
		}
	}
	return fig_of(&s, N, now_ns() - t0);
}

static struct fig am_sync(amora *db)
{
	struct samples s = {0};
	char k[KLEN], v[VLEN];
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < S; j++) {
		make_key(k, xidx[j], 'a');
		make_val(v, N + xidx[j]);
		uint64_t a = now_ns();
		int rc = amora_set(db, k, KLEN, v, VLEN);
		uint64_t b = now_ns();
		if (rc)
			die("amora_set: %s: %s", amora_strerror(rc), amora_errmsg(db));
		s_push(&s, b - a);
	}
	return fig_of(&s, S, now_ns() - t0);
}

static struct fig am_hits(amora *db, const char *what)
{
	struct samples s = {0};
	char buf[VLEN + 28];
	size_t vlen;
	int rc;
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < N; j++) {
		const char *k = hit_keys + j * KLEN;
		if ((j & SAMPLE_MASK) == 0) {
			uint64_t a = now_ns();
			rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
			uint64_t b = now_ns();
			s_push(&s, b - a);
			if (rc)
				die("%s: amora_get of an existing key (%u): %s: %s", what, hit_idx[j],
				    amora_strerror(rc), amora_errmsg(db));
			check_val(what, hit_idx[j], buf, vlen);
		} else {
			rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
			if (rc || vlen != VLEN)
				die("%s: amora_get of existing key %u: %s (vlen %zu)", what, hit_idx[j],
				    rc ? amora_strerror(rc) : "ok", vlen);
		}
	}
	return fig_of(&s, N, now_ns() - t0);
}

static struct fig am_misses(amora *db)
{
	struct samples s = {0};
	char buf[VLEN + 28];
	size_t vlen;
	int rc;
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < N; j++) {
		const char *k = miss_keys + j * KLEN;
		if ((j & SAMPLE_MASK) == 0) {
			uint64_t a = now_ns();
			rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
			uint64_t b = now_ns();
			s_push(&s, b - a);
		} else {
			rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
		}
		if (rc != AMORA_ENOTFOUND)
			die("get miss: amora_get of a missing key (%.16s) returned %s, expected %s", k,
			    amora_strerror(rc), amora_strerror(AMORA_ENOTFOUND));
	}
	return fig_of(&s, N, now_ns() - t0);
}

static struct fig am_dels(amora *db)
{
	struct samples s = {0};
	char k[KLEN], buf[VLEN + 28];
	size_t vlen;
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < S; j++) {
		make_key(k, xidx[S - 1 - j], 'a');
		uint64_t a = now_ns();
		int rc = amora_del(db, k, KLEN);
		uint64_t b = now_ns();
		if (rc)
			die("amora_del of a key set earlier (%.16s): %s: %s", k, amora_strerror(rc),
			    amora_errmsg(db));
		s_push(&s, b - a);
	}
	struct fig f = fig_of(&s, S, now_ns() - t0);
	for (uint64_t j = 0; j < S; j += 64) {
		make_key(k, xidx[j], 'a');
		int rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
		if (rc != AMORA_ENOTFOUND)
			die("a deleted key (%.16s) is still readable: amora_get -> %s", k, amora_strerror(rc));
	}
	return f;
}

static struct fig am_always(amora *db)
{
	struct samples s = {0};
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < A; j++) {
		uint32_t i = hit_idx[j];
		uint64_t a = now_ns();
		int rc = amora_set(db, keys + (uint64_t)i * KLEN, KLEN, vals + (uint64_t)i * VLEN, VLEN);
		uint64_t b = now_ns();
		if (rc)
			die("amora_set (--sync always): %s: %s", amora_strerror(rc), amora_errmsg(db));
		s_push(&s, b - a);
	}
	return fig_of(&s, A, now_ns() - t0);
}

/* ---------- LMDB phases ---------- */

static struct fig lm_buffered(struct lm *l, uint64_t batch)
{
	struct samples s = {0};
	uint64_t t0 = now_ns(), tb = t0;
	MDB_txn *t = NULL;
	for (uint64_t i = 0; i < N; i++) {
		if (!t)
			MDBCHK(mdb_txn_begin(l->env, NULL, 0, &t));
		MDB_val mk = {KLEN, keys + i * KLEN}, mv = {VLEN, vals + i * VLEN};
		MDBCHK(mdb_put(t, l->dbi, &mk, &mv, 0));
		if ((batch && (i + 1) % batch == 0) || i + 1 == N) {
			MDBCHK(mdb_txn_commit(t));
			t = NULL;
			lm_maybe_sync(l);
			uint64_t x = now_ns();
			s_push(&s, x - tb);
			tb = x;
		}
	}
	return fig_of(&s, N, now_ns() - t0);
}

static struct fig lm_sync(struct lm *l)
{
	struct samples s = {0};
	char k[KLEN], v[VLEN];
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < S; j++) {
		make_key(k, xidx[j], 'a');
		make_val(v, N + xidx[j]);
		uint64_t a = now_ns();
		lm_put1(l, k, v);
		s_push(&s, now_ns() - a);
	}
	return fig_of(&s, S, now_ns() - t0);
}

static struct fig lm_hits(struct lm *l, const char *what)
{
	struct samples s = {0};
	char buf[VLEN + 28];
	MDB_txn *rt;
	long vlen;
	MDBCHK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &rt));
	mdb_txn_reset(rt);
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < N; j++) {
		const char *k = hit_keys + j * KLEN;
		if ((j & SAMPLE_MASK) == 0) {
			uint64_t a = now_ns();
			vlen = lm_get(l, rt, k, buf, sizeof(buf));
			s_push(&s, now_ns() - a);
			if (vlen < 0)
				die("%s: LMDB lost key %u", what, hit_idx[j]);
			check_val(what, hit_idx[j], buf, (size_t)vlen);
		} else {
			vlen = lm_get(l, rt, k, buf, sizeof(buf));
			if (vlen != VLEN)
				die("%s: LMDB get of key %u: length %ld", what, hit_idx[j], vlen);
		}
	}
	struct fig f = fig_of(&s, N, now_ns() - t0);
	mdb_txn_abort(rt);
	return f;
}

static struct fig lm_misses(struct lm *l)
{
	struct samples s = {0};
	char buf[VLEN + 28];
	MDB_txn *rt;
	long vlen;
	MDBCHK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &rt));
	mdb_txn_reset(rt);
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < N; j++) {
		const char *k = miss_keys + j * KLEN;
		if ((j & SAMPLE_MASK) == 0) {
			uint64_t a = now_ns();
			vlen = lm_get(l, rt, k, buf, sizeof(buf));
			s_push(&s, now_ns() - a);
		} else {
			vlen = lm_get(l, rt, k, buf, sizeof(buf));
		}
		if (vlen != -1)
			die("LMDB found a missing key %.16s", k);
	}
	struct fig f = fig_of(&s, N, now_ns() - t0);
	mdb_txn_abort(rt);
	return f;
}

static struct fig lm_dels(struct lm *l)
{
	struct samples s = {0};
	char k[KLEN];
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < S; j++) {
		make_key(k, xidx[S - 1 - j], 'a');
		uint64_t a = now_ns();
		MDB_txn *t;
		MDB_val mk = {KLEN, k};
		MDBCHK(mdb_txn_begin(l->env, NULL, 0, &t));
		MDBCHK(mdb_del(t, l->dbi, &mk, NULL));
		MDBCHK(mdb_txn_commit(t));
		lm_maybe_sync(l);
		s_push(&s, now_ns() - a);
	}
	return fig_of(&s, S, now_ns() - t0);
}

static struct fig lm_always(struct lm *l)
{
	struct samples s = {0};
	uint64_t t0 = now_ns();
	for (uint64_t j = 0; j < A; j++) {
		uint32_t i = hit_idx[j];
		uint64_t a = now_ns();
		lm_put1(l, keys + (uint64_t)i * KLEN, vals + (uint64_t)i * VLEN);
		s_push(&s, now_ns() - a);
	}
	return fig_of(&s, A, now_ns() - t0);
}

/* ---------- 2 readers + 1 writer ---------- */

/* Reader/writer body. Keys walk the random lookup order from a per-role
 * offset, so each role reads or writes random existing keys; the writer
 * writes each key's own value, so the readers' checks stay valid. */
static void role_body(int impl, int role, const char *where, int readyfd, int startfd)
{
	amora *db = NULL;
	struct lm l;
	MDB_txn *rt = NULL;
	char buf[VLEN + 28], c = 'r';
	size_t vlen;
	int writer = role == 2;

	if (impl == AM) {
		char sock[PATH_MAX];
		snprintf(sock, sizeof(sock), "%s/amora.sock", where);
		int rc = amora_open(sock, &db);
		if (rc)
			die("child amora_open: %s", amora_strerror(rc));
	} else {
		lm_open(&l, where, writer, writer);
		if (!writer) {
			MDBCHK(mdb_txn_begin(l.env, NULL, MDB_RDONLY, &rt));
			mdb_txn_reset(rt);
		}
	}
	if (write(readyfd, &c, 1) != 1)
		die("ready pipe: %s", strerror(errno));
	if (read(startfd, &c, 1) != 0)
		die("start pipe: unexpected data");

	struct samples s = {0};
	uint64_t j = (N / 3) * (uint64_t)role, ops = 0;
	uint64_t t0 = now_ns(), end = t0 + (uint64_t)mixed_seconds * 1000000000ull, t = t0;
	if (!writer) {
		for (;; ops++, j = j + 1 == N ? 0 : j + 1) {
			const char *k = hit_keys + j * KLEN;
			long got;
			if ((ops & SAMPLE_MASK) == 0) {
				uint64_t a = now_ns();
				if (impl == AM) {
					int rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
					got = rc ? -1 : (long)vlen;
				} else {
					got = lm_get(&l, rt, k, buf, sizeof(buf));
				}
				t = now_ns();
				s_push(&s, t - a);
				if (got < 0)
					die("reader: existing key %u not found", hit_idx[j]);
				check_val("mixed reader", hit_idx[j], buf, (size_t)got);
				if (t >= end)
					break;
			} else if (impl == AM) {
				int rc = amora_get(db, k, KLEN, buf, sizeof(buf), &vlen);
				if (rc || vlen != VLEN)
					die("reader: amora_get of key %u: %s", hit_idx[j], amora_strerror(rc));
			} else if (lm_get(&l, rt, k, buf, sizeof(buf)) != VLEN) {
				die("reader: LMDB get of key %u failed", hit_idx[j]);
			}
		}
		ops++;
	} else {
		while (t < end) {
			uint32_t i = hit_idx[j];
			const char *k = hit_keys + j * KLEN, *v = vals + (uint64_t)i * VLEN;
			uint64_t a = now_ns();
			if (impl == AM) {
				int rc = amora_set(db, k, KLEN, v, VLEN);
				if (rc)
					die("writer: amora_set: %s: %s", amora_strerror(rc), amora_errmsg(db));
			} else {
				lm_put1(&l, k, v);
			}
			t = now_ns();
			s_push(&s, t - a);
			ops++;
			j = j + 1 == N ? 0 : j + 1;
		}
	}
	struct fig f = fig_of(&s, ops, t - t0);
	child_res->ops = ops;
	child_res->elapsed_ns = t - t0;
	child_res->p50 = f.p50;
	child_res->p99 = f.p99;
	if (impl == AM) {
		int rc = amora_close(db);
		if (rc)
			die("child amora_close: %s", amora_strerror(rc));
	} else {
		if (rt)
			mdb_txn_abort(rt);
		lm_close(&l);
	}
}

static void mixed(int impl, const char *where, int run)
{
	int ready[2], start[2];
	struct role_res *rr = mmap(NULL, 3 * sizeof(*rr), PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rr == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	memset(rr, 0, 3 * sizeof(*rr));
	if (pipe(ready) || pipe(start))
		die("pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	nkids = 0;
	for (int role = 0; role < 3; role++) {
		pid_t p = fork();
		if (p < 0)
			die("fork: %s", strerror(errno));
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != main_pid)
				_exit(1);
			child_res = &rr[role];
			close(ready[0]);
			close(start[1]);
			role_body(impl, role, where, ready[1], start[0]);
			_exit(0);
		}
		kids[nkids++] = p;
	}
	close(ready[1]);
	close(start[0]);
	/* Wait for the three to be attached, then start them at once. */
	int got = 0;
	while (got < 3) {
		struct pollfd pfd = {ready[0], POLLIN, 0};
		int pr = poll(&pfd, 1, 15000);
		if (pr <= 0)
			die("mixed phase: children not ready within 15 s");
		char c;
		ssize_t n = read(ready[0], &c, 1);
		if (n <= 0)
			break; /* a child died before it was ready: reported below */
		got++;
	}
	close(start[1]);
	close(ready[0]);
	int failed = got < 3;
	uint64_t deadline = now_ns() + (uint64_t)(mixed_seconds + 30) * 1000000000ull;
	for (int k = 0; k < nkids; k++) {
		int st;
		for (;;) {
			pid_t r = waitpid(kids[k], &st, WNOHANG);
			if (r == kids[k])
				break;
			if (now_ns() > deadline)
				die("mixed phase: child %d did not finish", (int)kids[k]);
			usleep(2000);
		}
		kids[k] = -1;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || rr[k].failed) {
			failed = 1;
			fprintf(stderr, "mixed phase (%s): %s %d %s: %s\n", impl == AM ? "amora" : "lmdb",
				k == 2 ? "writer" : "reader", k + 1,
				WIFSIGNALED(st) ? "killed by a signal" : "failed",
				rr[k].msg[0] ? rr[k].msg : "(no message)");
		}
	}
	nkids = 0;
	if (failed)
		die("mixed phase (%s) failed", impl == AM ? "amora" : "lmdb");
	for (int k = 0; k < 3; k++) {
		struct fig *f = &res[R_MIX_R1 + k][impl][run];
		f->set = 1;
		f->ops = rr[k].elapsed_ns ? rr[k].ops * 1e9 / (double)rr[k].elapsed_ns : 0;
		f->p50 = rr[k].p50;
		f->p99 = rr[k].p99;
	}
	munmap(rr, 3 * sizeof(*rr));
}

/* ---------- one run ---------- */

static unsigned shards_seen;
static double clock_ns;

static void one_run(int run)
{
	char dir[PATH_MAX], ldir[PATH_MAX];
	char buf[VLEN + 28], last_key[KLEN];
	size_t vlen;
	uint64_t r0 = now_ns();
	struct amora_stats st;

	/* --- amora, --sync periodic --- */
	snprintf(dir, sizeof(dir), "%s/amora-%d", root, run);
	mkdir_or_die(dir);
	uint64_t t0 = now_ns();
	srv_start(dir, "periodic");
	amora *db = srv_open(dir, 200000);
	start_ms[run] = (now_ns() - t0) / 1e6;
	AMCHK(db, amora_stats(db, &st));
	shards_seen = st.shards;

	res[R_BUF][AM][run] = am_buffered(db, 0);
	res[R_BUF][AM][run].p50 = res[R_BUF][AM][run].p99 = -1;
	res[R_BUF_END][AM][run] = am_buffered(db, BATCH);
	res[R_SYNC][AM][run] = am_sync(db);
	res[R_HIT][AM][run] = am_hits(db, "get hit");
	res[R_MISS][AM][run] = am_misses(db);
	res[R_DEL][AM][run] = am_dels(db);
	AMCHK(db, amora_stats(db, &st));
	if (st.keys != N)
		fprintf(stderr, "amora-bench: WARNING: amora_stats says %llu keys after the deletes, expected %llu\n",
			(unsigned long long)st.keys, (unsigned long long)N);
	mixed(AM, dir, run);

	/* The last write before the restart. */
	memcpy(last_key, keys + (N - 1) * KLEN, KLEN);
	AMCHK(db, amora_set(db, last_key, KLEN, vals + (N - 1) * VLEN, VLEN));
	AMCHK(db, amora_close(db));
	stop_ms[run] = srv_stop();
	data_mb[run] = du(dir) / 1048576.0;

	/* --- recovery --- */
	t0 = now_ns();
	srv_start(dir, "periodic");
	db = srv_open(dir, 100000);
	rec_open_ms[run] = (now_ns() - t0) / 1e6;
	for (;;) {
		int hb = amora_heartbeat(db);
		if (hb == 0 && amora_stats(db, &st) == 0 && st.shards_ready == st.shards) {
			int rc = amora_get(db, last_key, KLEN, buf, sizeof(buf), &vlen);
			if (rc == 0) {
				check_val("recovery: last key", N - 1, buf, vlen);
				break;
			}
			if (rc != AMORA_ENOTFOUND)
				die("recovery: amora_get: %s: %s", amora_strerror(rc), amora_errmsg(db));
		} else if (hb != 0 && hb != AMORA_ERESTARTING) {
			die("recovery: amora_heartbeat: %s: %s", amora_strerror(hb), amora_errmsg(db));
		}
		srv_check_alive();
		if (now_ns() - t0 > 60000000000ull)
			die("recovery: the last key is still not readable 60 s after the restart");
		usleep(100);
	}
	rec_ms[run] = (now_ns() - t0) / 1e6;
	/* Every key must be there with its value (not timed). */
	for (uint64_t i = 0; i < N; i++) {
		int rc = amora_get(db, keys + i * KLEN, KLEN, buf, sizeof(buf), &vlen);
		if (rc)
			die("after recovery, key %llu is not readable: %s (the store said it was ready)",
			    (unsigned long long)i, amora_strerror(rc));
		check_val("after recovery", i, buf, vlen);
	}
	AMCHK(db, amora_stats(db, &st));
	rec_keys[run] = st.keys;
	if (st.keys != N)
		fprintf(stderr, "amora-bench: WARNING: after recovery amora_stats says %llu keys, expected %llu\n",
			(unsigned long long)st.keys, (unsigned long long)N);
	AMCHK(db, amora_close(db));
	srv_stop();
	rm_tree(dir);

	/* --- amora, --sync always --- */
	snprintf(dir, sizeof(dir), "%s/amora-always-%d", root, run);
	mkdir_or_die(dir);
	srv_start(dir, "always");
	db = srv_open(dir, 200000);
	res[R_ALWAYS][AM][run] = am_always(db);
	AMCHK(db, amora_close(db));
	srv_stop();
	rm_tree(dir);

	/* --- LMDB, periodic-equivalent --- */
	struct lm l;
	snprintf(ldir, sizeof(ldir), "%s/lmdb-%d", root, run);
	mkdir_or_die(ldir);
	lm_open(&l, ldir, 1, 1);
	res[R_BUF][LM][run] = lm_buffered(&l, 0);
	res[R_BUF][LM][run].p50 = res[R_BUF][LM][run].p99 = -1;
	res[R_BUF_END][LM][run] = lm_buffered(&l, BATCH);
	res[R_SYNC][LM][run] = lm_sync(&l);
	res[R_HIT][LM][run] = lm_hits(&l, "lmdb get hit");
	res[R_MISS][LM][run] = lm_misses(&l);
	res[R_DEL][LM][run] = lm_dels(&l);
	lm_close(&l); /* the children open their own environments */
	mixed(LM, ldir, run);
	lmdb_mb[run] = du(ldir) / 1048576.0;
	t0 = now_ns();
	lm_open(&l, ldir, 1, 0);
	{
		MDB_txn *rt;
		MDBCHK(mdb_txn_begin(l.env, NULL, MDB_RDONLY, &rt));
		mdb_txn_reset(rt);
		long got = lm_get(&l, rt, keys + (N - 1) * KLEN, buf, sizeof(buf));
		if (got < 0)
			die("LMDB lost the last key");
		mdb_txn_abort(rt);
	}
	lmdb_reopen_ms[run] = (now_ns() - t0) / 1e6;
	lm_close(&l);
	rm_tree(ldir);

	/* --- LMDB, default durability --- */
	snprintf(ldir, sizeof(ldir), "%s/lmdb-durable-%d", root, run);
	mkdir_or_die(ldir);
	lm_open(&l, ldir, 0, 1);
	res[R_ALWAYS][LM][run] = lm_always(&l);
	lm_close(&l);
	rm_tree(ldir);

	printf("run %d/%d: %.1f s  (amora: buffered %.2f M/s, sync p50 %.1f us, hit %.2f M/s, recover %.0f ms;"
	       " lmdb: hit %.2f M/s)\n",
	       run + 1, runs, (now_ns() - r0) / 1e9, res[R_BUF][AM][run].ops / 1e6,
	       res[R_SYNC][AM][run].p50 / 1e3, res[R_HIT][AM][run].ops / 1e6, rec_ms[run],
	       res[R_HIT][LM][run].ops / 1e6);
	fflush(stdout);
}

/* ---------- report ---------- */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median_of(const double *v, int n)
{
	double t[MAXRUNS];
	memcpy(t, v, n * sizeof(double));
	qsort(t, n, sizeof(double), cmp_d);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static struct fig median_fig(int row, int impl)
{
	double o[MAXRUNS], a[MAXRUNS], b[MAXRUNS];
	for (int r = 0; r < runs; r++) {
		o[r] = res[row][impl][r].ops;
		a[r] = res[row][impl][r].p50;
		b[r] = res[row][impl][r].p99;
	}
	return (struct fig){median_of(o, runs), median_of(a, runs), median_of(b, runs), 1};
}

static const char *fmt_ops(char *b, double v)
{
	if (v >= 1e6)
		sprintf(b, "%.2f M", v / 1e6);
	else if (v >= 1e3)
		sprintf(b, "%.1f k", v / 1e3);
	else
		sprintf(b, "%.0f", v);
	return b;
}

static const char *fmt_lat(char *b, double ns)
{
	if (ns < 0)
		sprintf(b, "-");
	else if (ns < 1e3)
		sprintf(b, "%.0f ns", ns);
	else if (ns < 1e5)
		sprintf(b, "%.1f us", ns / 1e3);
	else if (ns < 1e6)
		sprintf(b, "%.0f us", ns / 1e3);
	else
		sprintf(b, "%.2f ms", ns / 1e6);
	return b;
}

static const char *fmt_count(char *b, uint64_t n)
{
	if (n >= 1000000 && n % 1000000 == 0)
		sprintf(b, "%llu M", (unsigned long long)(n / 1000000));
	else if (n >= 1000 && n % 1000 == 0)
		sprintf(b, "%llu k", (unsigned long long)(n / 1000));
	else
		sprintf(b, "%llu", (unsigned long long)n);
	return b;
}

static const char *met(int ok)
{
	return ok ? "met" : "MISSED";
}

static void report(void)
{
	char nb[32], sb[32], ab[32], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
	const char *name[NROWS];
	char names[NROWS][96];

	fmt_count(nb, N), fmt_count(sb, S), fmt_count(ab, A);
	snprintf(names[R_BUF], 96, "buffered set, %s new keys, 1 flush at end", nb);
	snprintf(names[R_BUF_END], 96, "buffered update, %s keys, flush per 1024", nb);
	snprintf(names[R_SYNC], 96, "sync set, %s new keys", sb);
	snprintf(names[R_HIT], 96, "get hit, %s random", nb);
	snprintf(names[R_MISS], 96, "get miss, %s random", nb);
	snprintf(names[R_DEL], 96, "delete (sync), %s keys", sb);
	snprintf(names[R_MIX_R1], 96, "2R+1W %d s: reader 1 (get)", mixed_seconds);
	snprintf(names[R_MIX_R2], 96, "2R+1W %d s: reader 2 (get)", mixed_seconds);
	snprintf(names[R_MIX_W], 96, "2R+1W %d s: writer (sync set)", mixed_seconds);
	snprintf(names[R_ALWAYS], 96, "sync set, --sync always, %s keys", ab);
	for (int r = 0; r < NROWS; r++)
		name[r] = names[r];

	static const char dash[] = "----------------------------------------------------------------";
	printf("\n%-46s | %11s %9s %9s | %11s %9s %9s | %7s\n", "phase (median of runs)", "amora ops/s",
	       "p50", "p99", "lmdb ops/s", "p50", "p99", "ratio");
	printf("%.46s-+-%.31s-+-%.31s-+-%.7s\n", dash, dash, dash, dash);
	struct fig m[NROWS][2];
	for (int r = 0; r < NROWS; r++) {
		m[r][AM] = median_fig(r, AM);
		m[r][LM] = median_fig(r, LM);
		if (r == R_ALWAYS)
			printf("%.46s-+-%.31s-+-%.31s-+-%.7s\n", dash, dash, dash, dash);
		printf("%-46s | %11s %9s %9s | %11s %9s %9s | %6.2fx\n", name[r], fmt_ops(b1, m[r][AM].ops),
		       fmt_lat(b2, m[r][AM].p50), fmt_lat(b3, m[r][AM].p99), fmt_ops(b4, m[r][LM].ops),
		       fmt_lat(b5, m[r][LM].p50), fmt_lat(b6, m[r][LM].p99),
		       m[r][LM].ops > 0 ? m[r][AM].ops / m[r][LM].ops : 0.0);
	}
	printf("\nrows above the line: amora --sync periodic vs LMDB MDB_NOSYNC + mdb_env_sync every 100 ms;\n"
	       "below: amora --sync always vs LMDB default durability (fsync per commit). ratio = amora/lmdb ops/s.\n"
	       "Latency: sync sets, deletes and the writer: every op timed; gets: every 64th op timed alone\n"
	       "(ops/s counts every op); buffered set: N new keys, one amora_flush | one LMDB txn for all;\n"
	       "\"flush per 1024\": the same keys again, latency = one batch of 1024 sets + flush (LMDB: 1024 puts + commit).\n"
	       "Each sample includes one clock_gettime (%.0f ns here).\n",
	       clock_ns);

	double rec = median_of(rec_ms, runs), reco = median_of(rec_open_ms, runs);
	printf("\nrecover %s keys: %.0f ms  (amora_open succeeded at %.0f ms; then every shard ready and the last\n"
	       "  written key readable; %llu keys counted afterwards, all %s read back and verified)\n",
	       nb, rec, reco, (unsigned long long)rec_keys[0], nb);
	printf("  data dir %.0f MiB at the restart; amorad stop (SIGTERM -> exit 0) %.0f ms;"
	       " start on an empty dir %.0f ms\n",
	       median_of(data_mb, runs), median_of(stop_ms, runs), median_of(start_ms, runs));
	printf("  reference: LMDB reopen + first get %.1f ms (no recovery step; data file %.0f MiB)\n",
	       median_of(lmdb_reopen_ms, runs), median_of(lmdb_mb, runs));

	double rh = m[R_HIT][AM].ops / m[R_HIT][LM].ops, rm = m[R_MISS][AM].ops / m[R_MISS][LM].ops;
	char t1[64], t2[64], t3[64], t4[64], t5[64];
	snprintf(t1, sizeof(t1), "hit %.2fx, miss %.2fx", rh, rm);
	snprintf(t2, sizeof(t2), "%.2f M/s", m[R_BUF][AM].ops / 1e6);
	snprintf(t3, sizeof(t3), "%.1f us (--sync always: %.1f us)", m[R_SYNC][AM].p50 / 1e3,
		 m[R_ALWAYS][AM].p50 / 1e3);
	snprintf(t4, sizeof(t4), "%.0f ms", rec);
	snprintf(t5, sizeof(t5), "recover %s keys < 1 s", nb);
	printf("\ntargets (printed, not enforced):\n");
	printf("  %-28s %-40s %s\n", "reads >= 5x LMDB", t1, met(rh >= 5 && rm >= 5));
	printf("  %-28s %-40s %s\n", "buffered sets >= 1.5 M/s", t2, met(m[R_BUF][AM].ops >= 1.5e6));
	printf("  %-28s %-40s %s\n", "sync set p50 < 15 us", t3, met(m[R_SYNC][AM].p50 < 15e3));
	printf("  %-28s %-40s %s\n", t5, t4, met(rec < 1000));
}

/* ---------- main ---------- */

static void find_amorad(void)
{
	const char *e = getenv("AMORAD");
	if (e && *e) {
		snprintf(amorad_path, sizeof(amorad_path), "%s", e);
	} else {
		snprintf(amorad_path, sizeof(amorad_path), "%s", AMORA_BUILD_DIR "/amorad");
		if (access(amorad_path, X_OK) != 0) {
			/* Not run from the repository root: try next to this binary
			 * (build/perf/amora-bench -> build/amorad). */
			char self[PATH_MAX - 16];
			ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
			if (n > 0) {
				self[n] = 0;
				char *s = strrchr(self, '/');
				if (s) {
					*s = 0;
					char alt[PATH_MAX];
					snprintf(alt, sizeof(alt), "%s/../amorad", self);
					if (access(alt, X_OK) == 0)
						snprintf(amorad_path, sizeof(amorad_path), "%s", alt);
				}
			}
		}
	}
	if (access(amorad_path, X_OK) != 0)
		die("cannot run amorad at %s (%s); build it (make) or set AMORAD", amorad_path,
		    strerror(errno));
	if (amorad_path[0] != '/') {
		char abs[PATH_MAX];
		if (realpath(amorad_path, abs))
			snprintf(amorad_path, sizeof(amorad_path), "%s", abs);
	}
}

/* 1-minute load average, or -1. */
static double loadavg(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

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

int main(int argc, char **argv)
{
	(void)argv;
	if (argc > 1) {
		fprintf(stderr, "usage: amora-bench (no arguments; see the environment variables at the top of perf/amora-bench.c:\n"
				"  RUNS KEYS SYNC_KEYS ALWAYS_KEYS MIXED_SECONDS AMORAD AMORA_SHARDS AMORA_MEMORY BENCH_DIR)\n");
		return 1;
	}
	main_pid = getpid();
	setvbuf(stdout, NULL, _IOLBF, 0);
	runs = (int)env_u64("RUNS", 3, 1, MAXRUNS);
	N = env_u64("KEYS", 1000000, 1000, 100000000);
	S = env_u64("SYNC_KEYS", N < 100000 ? N : 100000, 1, N);
	A = env_u64("ALWAYS_KEYS", N < 2000 ? N : 2000, 1, N);
	mixed_seconds = (int)env_u64("MIXED_SECONDS", 5, 1, 3600);
	shards_opt = getenv("AMORA_SHARDS");
	if (shards_opt && !*shards_opt)
		shards_opt = NULL;
	if (getenv("AMORA_MEMORY") && *getenv("AMORA_MEMORY"))
		memory_opt = getenv("AMORA_MEMORY");

	atexit(cleanup);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	find_amorad();
	const char *base = getenv("BENCH_DIR");
	if (!base || !*base)
		base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	if (strlen(base) > sizeof(root) - 32)
		die("BENCH_DIR/TMPDIR %s: path too long", base);
	snprintf(root, sizeof(root), "%s/amora-bench.XXXXXX", base);
	if (!mkdtemp(root)) {
		int e = errno;
		root[0] = 0;
		die("mkdtemp in %s: %s", base, strerror(e));
	}

	uint64_t c0 = now_ns();
	for (int i = 0; i < 1000000; i++)
		now_ns();
	clock_ns = (now_ns() - c0) / 1e6;

	uint64_t t0 = now_ns();
	make_data();
	char nb[32];
	printf("amora-bench: %s keys of %d bytes, %d-byte values; %d run(s); amorad %s\n", fmt_count(nb, N),
	       KLEN, VLEN, runs, amorad_path);
	printf("  temp dir %s (%s); key data generated in %.2f s; %s\n", root, fs_name(root),
	       (now_ns() - t0) / 1e9, mdb_version(NULL, NULL, NULL));
	printf("  sync sets / deletes on %llu keys (a 1 M-key sync phase alone would take 10-20 s), "
	       "--sync always / durable LMDB on %llu\n",
	       (unsigned long long)S, (unsigned long long)A);

	double l0 = loadavg();
	printf("  load average at start %.2f on %ld CPUs%s\n", l0, sysconf(_SC_NPROCESSORS_ONLN),
	       l0 > 1.0 ? "  (the machine is busy: figures will be noisy)" : "");
	for (int r = 0; r < runs; r++)
		one_run(r);
	printf("  amorad: %u shards, --memory %s; load average at the end %.2f (includes this benchmark)\n", shards_seen, memory_opt,
	       loadavg());
	report();
	cleanup();
	return 0;
}
