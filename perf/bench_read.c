/*
 * bench_read.c — libamora's read paths, this build against a previous one,
 * in the same invocation, on the same amorad and the same data.
 *
 *   bench_read [--base PATH]
 *
 * Both libraries are loaded with dlopen: this build's libamora.so (next to
 * the benchmark: ../libamora.so.0) and, with --base, another build's (for
 * instance one made by `make bench-read BASE_REV=HEAD~1`). Each opens its own
 * handle on one amorad holding KEYS keys of amora-bench's workload
 * (16-byte keys, 100-byte values, perf/lib/workload.h). Then, RUNS times,
 * each library in turn (the order alternates per run):
 *
 *   get hit   KEYS amora_get of random existing keys (every value checked)
 *   get miss  KEYS amora_get of random missing keys
 *   mget      KEYS keys in amora_mget calls of MGET (default 64) random
 *             existing keys each (every value checked)
 *
 * It prints the median over runs of each phase's ops/s (keys/s for mget)
 * per library and the ratio this / base. Without --base it prints this
 * build's figures alone. Environment: RUNS (5), KEYS (1000000), MGET (64),
 * AMORAD, AMORA_SHARDS, AMORA_MEMORY (2G), BENCH_DIR.
 *
 * Exit status 0 when it ran, 1 on any failure (a wrong value, a library
 * that cannot be loaded, amorad not starting).
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf/lib/fail.h"
#include "perf/lib/figures.h"
#include "perf/lib/files.h"
#include "perf/lib/server.h"
#include "perf/lib/workload.h"
#include "shm/clock.h"

#define PHASES 3

static const char *const phase_names[PHASES] = { "get hit", "get miss", "mget" };

/* The calls a phase makes, through one loaded library. */
struct lib {
	const char *path;
	int (*open)(const char *, amora **);
	int (*close)(amora *);
	int (*get)(amora *, const void *, size_t, void *, size_t, size_t *);
	int (*mget)(amora *, size_t, const void *const[], const size_t[], amora_mget_fn, void *);
	const char *(*errmsg)(amora *);
	amora *db;
	double fig[PHASES][FIG_MAXRUNS];
};

static void *sym(void *h, const char *path, const char *name)
{
	void *p = dlsym(h, name);

	if (p == NULL)
		bench_die("%s has no %s", path, name);
	return p;
}

static void lib_load(struct lib *l, const char *path)
{
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);

	if (h == NULL)
		bench_die("cannot load %s: %s", path, dlerror());
	l->path = path;
	l->open = sym(h, path, "amora_open");
	l->close = sym(h, path, "amora_close");
	l->get = sym(h, path, "amora_get");
	l->mget = sym(h, path, "amora_mget");
	l->errmsg = sym(h, path, "amora_errmsg");
}

static uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 10) : def;
}

/* ---------- the phases ---------- */

static double get_phase(struct lib *l, const struct workload *w, bool hit)
{
	const char *keys = hit ? w->hit_keys : w->miss_keys;
	char buf[VLEN];
	size_t vlen;
	uint64_t t0 = shm_now_ns();

	for (uint64_t j = 0; j < w->n; j++) {
		int rc = l->get(l->db, keys + j * KLEN, KLEN, buf, sizeof(buf), &vlen);

		if (hit && rc != AMORA_OK)
			bench_die("%s: get hit %llu: %s", l->path, (unsigned long long)j, l->errmsg(l->db));
		if (!hit && rc != AMORA_ENOTFOUND)
			bench_die("%s: get miss %llu: %d", l->path, (unsigned long long)j, rc);
		if (hit && (j & 63) == 0)
			workload_check("get hit", w->hit_idx[j], buf, vlen);
	}
	return (double)w->n * 1e9 / (double)(shm_now_ns() - t0);
}

struct mget_arg {
	const struct workload *w;
	uint64_t base; /* hit_keys index of the call's first key */
	uint64_t seen;
};

static void mget_got(void *arg, size_t i, const void *val, size_t vlen)
{
	struct mget_arg *a = arg;

	a->seen++;
	workload_check("mget", a->w->hit_idx[a->base + i], val, vlen);
}

static double mget_phase(struct lib *l, const struct workload *w, size_t batch)
{
	const void *keys[1024];
	size_t klens[1024];
	struct mget_arg a = { w, 0, 0 };
	uint64_t t0 = shm_now_ns();

	for (size_t i = 0; i < batch; i++)
		klens[i] = KLEN;
	for (uint64_t j = 0; j + batch <= w->n; j += batch) {
		for (size_t i = 0; i < batch; i++)
			keys[i] = w->hit_keys + (j + i) * KLEN;
		a.base = j;
		if (l->mget(l->db, batch, keys, klens, mget_got, &a) != (int)batch)
			bench_die("%s: mget at %llu: %s", l->path, (unsigned long long)j, l->errmsg(l->db));
	}
	return (double)a.seen * 1e9 / (double)(shm_now_ns() - t0);
}

static void run_phases(struct lib *l, const struct workload *w, size_t batch, int run)
{
	l->fig[0][run] = get_phase(l, w, true);
	l->fig[1][run] = get_phase(l, w, false);
	l->fig[2][run] = mget_phase(l, w, batch);
}

/* ---------- main ---------- */

static void load_data(amora *db, const struct workload *w)
{
	for (uint64_t i = 0; i < w->n; i++)
		if (amora_set_buffered(db, w->keys + i * KLEN, KLEN, w->vals + i * VLEN, VLEN) != AMORA_OK)
			bench_die("loading key %llu: %s", (unsigned long long)i, amora_errmsg(db));
	if (amora_flush(db) != AMORA_OK)
		bench_die("loading: %s", amora_errmsg(db));
}

static void report(struct lib *libs, int nlibs, int runs)
{
	char b[32];

	printf("%-10s %14s", "phase", "this build");
	if (nlibs == 2)
		printf(" %14s %8s", "base", "ratio");
	printf("\n");
	for (int p = 0; p < PHASES; p++) {
		double m0 = fig_median(libs[0].fig[p], runs);

		printf("%-10s %12s/s", phase_names[p], fig_fmt_ops(b, m0));
		if (nlibs == 2) {
			double m1 = fig_median(libs[1].fig[p], runs);

			printf(" %12s/s %7.2fx", fig_fmt_ops(b, m1), m0 / m1);
		}
		printf("\n");
	}
}

static char root[4096];

static void cleanup(void)
{
	server_kill();
	if (root[0])
		files_rm_tree(root);
}

int main(int argc, char **argv)
{
	static char self[4096], here[4200], dir[4200], sock[4300];
	struct lib libs[2] = { { 0 } };
	int nlibs = 1, runs = (int)env_u64("RUNS", 5);
	size_t batch = env_u64("MGET", 64);
	const char *shards = getenv("AMORA_SHARDS"), *memory = getenv("AMORA_MEMORY");
	const char *base = getenv("BENCH_DIR");
	struct workload w;
	amora *loader;
	ssize_t n;

	if (argc == 3 && strcmp(argv[1], "--base") == 0) {
		nlibs = 2;
	} else if (argc != 1) {
		fprintf(stderr, "usage: bench_read [--base PATH/libamora.so]\n");
		return 2;
	}
	if (runs < 1 || runs > FIG_MAXRUNS || batch < 1 || batch > 1024)
		bench_die("RUNS must be 1..%d and MGET 1..1024", FIG_MAXRUNS);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		bench_die("cannot find this program's path");
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	snprintf(here, sizeof(here), "%s/../libamora.so.0", self);
	lib_load(&libs[0], here);
	if (nlibs == 2)
		lib_load(&libs[1], argv[2]);

	server_find();
	if (!base || !*base)
		base = getenv("TMPDIR");
	if (files_tmpdir(root, sizeof(root), base && *base ? base : "/tmp", "bench_read") != 0)
		bench_die("cannot make a temp dir");
	atexit(cleanup);
	snprintf(dir, sizeof(dir), "%s/data", root);
	snprintf(sock, sizeof(sock), "%s/amora.sock", dir);
	files_mkdir(dir);
	workload_make(&w, env_u64("KEYS", 1000000), 1, 1);
	server_config(memory && *memory ? memory : "2G", shards && *shards ? shards : NULL, root);
	server_start(dir, "periodic");
	loader = server_open(100000);
	load_data(loader, &w);
	amora_close(loader);
	for (int i = 0; i < nlibs; i++)
		if (libs[i].open(sock, &libs[i].db) != AMORA_OK)
			bench_die("%s: amora_open: %s", libs[i].path, libs[i].errmsg(NULL));
	printf("bench_read: %llu keys of %d/%d bytes, mget of %zu, %d runs, medians\n",
	       (unsigned long long)w.n, KLEN, VLEN, batch, runs);
	fflush(stdout);
	for (int r = 0; r < runs; r++)
		for (int k = 0; k < nlibs; k++)
			run_phases(&libs[(k + r) % nlibs], &w, batch, r);
	report(libs, nlibs, runs);
	for (int i = 0; i < nlibs; i++)
		libs[i].close(libs[i].db);
	server_stop();
	return 0;
}
