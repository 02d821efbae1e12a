/*
 * bench_probes.c — what Amora's USDT probes (shm/probe.h) cost: compiled
 * in but not traced, against the same program built with -DAMORA_NO_PROBES;
 * and per traced event, with amora-trace attached against not.
 *
 *   bench_probes [--noprobes PATH] [--trace PATH] [--trace-json FILE]
 *   bench_probes --child [--wait]
 *
 * The first form is the driver (`make bench-probes` builds the no-probes
 * twin into $(BUILD)/noprobes and runs it). Every figure comes from runs
 * of the second form, one process each, and every such run starts its own
 * amorad --sync always from its own build (AMORAD set by the driver to the
 * amorad beside the binary), with one client: it fills KEYS keys
 * (buffered, one flush; not timed), then runs amora-bench's "get hit"
 * phase (KEYS gets of random existing keys, every 64th value checked) and
 * its "sync set" phase (SET_KEYS new keys, amora_set, each op waiting for
 * fdatasync), and prints one line "result get_ns=.. get_cpu=.. get_p50=..
 * set_ns=.. set_p50=..", in ns: per phase the mean per op (elapsed / ops)
 * and the p50 of its timed ops; get_cpu is the thread's CPU time per get
 * (CLOCK_THREAD_CPUTIME_ID: what other processes take of the CPU does not
 * count; a traced probe's trap does). With --wait it prints "ready" after
 * the fill and waits for a line on stdin before the timed phases. Both
 * builds are checked first: the probes build's program and amorad must
 * have a .note.stapsdt section, the other's none.
 *
 *   0. Instructions: one run of each build under callgrind, counting what
 *      the client executes in phase_hits (20000 gets): deterministic where
 *      timings on a shared VM are not. (A set's count is not: the client
 *      polls its completion while the shard works.) Skipped without
 *      valgrind.
 *   1. Untraced: RUNS pairs (default 5), the probes build and the
 *      no-probes build alternating (ABBA: the first of a pair switches),
 *      so drift of a busy machine falls on both. Prints each run, the
 *      medians, the ratio probes / no probes and its spread over the
 *      pairs; the "< 1 %" target is printed on get hit CPU per op and sync
 *      set p50, the figures least moved by other processes (a sync set's
 *      mean follows its fdatasync tail).
 *   2. Traced: TRACE_RUNS pairs (default 3) of the probes build with
 *      --wait, once with `amora-trace -j -p CHILD` attached (started after
 *      the fill, the phases begin once it says it is tracing) and once
 *      without. Probe hits per op are counted from amora-trace's own totals
 *      (get: op__begin and op__end per traced get; set: those two, then
 *      req__submit and req__complete per request seen, and req__take,
 *      req__apply, log__write, log__sync per request the stages matched);
 *      cost per traced hit = (traced - untraced median per op) / hits per op.
 *      amora-trace -p traces the client calls of CHILD only, but the shard
 *      probes of every running Amora binary (so that it sees the shard
 *      stages of CHILD's writes): other amorads on the machine are traced
 *      meanwhile too. A machine that cannot trace (amora-trace exits 77)
 *      skips this part with the tracer's reason. --trace-json FILE keeps
 *      the last traced run's JSON lines (perf/plot trace draws them).
 *
 * Environment: RUNS, TRACE_RUNS, KEYS (default 1 M), SET_KEYS (default
 * 2000), AMORA_SHARDS (--shards; default amorad's), AMORA_MEMORY (default
 * 4G), BENCH_DIR (parent of each run's temp dir; default $TMPDIR or /tmp).
 *
 * Figures are printed, never enforced (the "< 1 %" is printed as
 * met or not). Exit status 0 when the benchmark ran, 1 on any failure (a
 * run that failed, a build with probes where none should be or the
 * reverse, a tracer that failed for another reason than 77), 2 on bad
 * usage. Children die with the driver (PR_SET_PDEATHSIG); a child stops
 * its amorad and removes its temp dir on every exit path.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libclient/amora.h"
#include "perf/lib/engine.h"
#include "perf/lib/env.h"
#include "perf/lib/fail.h"
#include "perf/lib/files.h"
#include "perf/lib/figures.h"
#include "perf/lib/phases.h"
#include "perf/lib/server.h"
#include "perf/lib/workload.h"
#include "shm/clock.h"

#define MAX_RUNS FIG_MAXRUNS
#define TRACER_READY_NS 30000000000ull
#define EXIT_CANNOT_TRACE 77

/* ---------- one run (--child) ---------- */

/* CPU time of the calling thread, ns: a get's cost without the time other
 * processes held the CPU (a traced probe's trap is charged to it too). */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char child_root[PATH_MAX]; /* its temp dir, removed at exit */

static void child_cleanup(void)
{
	server_kill();
	if (child_root[0]) {
		files_rm_tree(child_root);
		child_root[0] = 0;
	}
}

static void child_on_signal(int sig)
{
	child_cleanup(); /* not async-signal-safe; a benchmark being stopped */
	_exit(128 + sig);
}

static void child_on_failure(const char *msg)
{
	fprintf(stderr, "bench_probes (run): FAILED: %s\n", msg);
	server_explain();
	exit(1);
}

static int child_main(int wait_go)
{
	uint64_t n = env_u64("KEYS", 1000000, 1000, 100000000, 2);
	uint64_t s = env_u64("SET_KEYS", n < 2000 ? n : 2000, 1, n, 2);
	const char *memory = getenv("AMORA_MEMORY"), *shards = getenv("AMORA_SHARDS");
	const char *base = getenv("BENCH_DIR");
	struct workload w;
	char dir[PATH_MAX + 8], line[64];

	bench_die_hook_set(child_on_failure);
	atexit(child_cleanup);
	bench_signals_set(child_on_signal);
	if (!base || !*base)
		base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	if (files_tmpdir(child_root, sizeof(child_root), base, "amora-probes") != 0)
		bench_die("mkdtemp in %s: %s", base, strerror(errno));
	server_find();
	server_config(memory && *memory ? memory : "4G", shards && *shards ? shards : NULL, child_root);
	workload_make(&w, n, s, 1);
	snprintf(dir, sizeof(dir), "%s/data", child_root);
	files_mkdir(dir);
	server_start(dir, "always");
	struct engine *e = engine_amora(server_open(200000));
	phase_buffered(e, &w, 0);
	if (wait_go) {
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			bench_die("the driver went away before the go line");
	}
	uint64_t c0 = thread_cpu_ns();
	struct fig get = phase_hits(e, &w);
	double get_cpu = (double)(thread_cpu_ns() - c0) / (double)w.n;
	struct fig set = phase_sync_set(e, &w);
	printf("result get_ns=%.3f get_cpu=%.3f get_p50=%.0f set_ns=%.1f set_p50=%.0f\n", 1e9 / get.ops, get_cpu,
	       get.p50, 1e9 / set.ops, set.p50);
	fflush(stdout);
	e->close(e);
	server_stop();
	child_cleanup();
	return 0;
}

/* ---------- the driver: processes ---------- */

struct child {
	pid_t pid;
	FILE *out; /* its stdout */
	int in;    /* its stdin (--wait), else -1 */
};

struct tracer {
	pid_t pid;
	int out, err;    /* its stdout (JSON lines) and stderr */
	char *json;      /* what stdout held at the end */
	size_t json_len;
	char errbuf[4096];
};

static struct child cur_child = { .pid = 0, .in = -1 };
static struct tracer cur_tracer;

static void driver_cleanup(void)
{
	if (cur_tracer.pid > 0) {
		kill(cur_tracer.pid, SIGINT);
		waitpid(cur_tracer.pid, NULL, 0);
		cur_tracer.pid = 0;
	}
	if (cur_child.pid > 0) {
		kill(cur_child.pid, SIGTERM); /* it stops its amorad, removes its dir */
		waitpid(cur_child.pid, NULL, 0);
		cur_child.pid = 0;
	}
}

static void driver_on_signal(int sig)
{
	driver_cleanup();
	_exit(128 + sig);
}

/* fork + exec argv with stdin/stdout/stderr from in/out/err (-1: ours) and
 * env (NULL or NAME=value strings up to a NULL) added to our environment;
 * the child dies with us. */
static pid_t spawn(char *const argv[], char *const env[], int in, int out, int err)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		for (int i = 0; env && env[i]; i++)
			putenv(env[i]);
		if ((in >= 0 && dup2(in, 0) < 0) || (out >= 0 && dup2(out, 1) < 0) || (err >= 0 && dup2(err, 2) < 0))
			_exit(127);
		execv(argv[0], argv);
		fprintf(stderr, "bench_probes: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static void make_pipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC) != 0)
		bench_die("pipe: %s", strerror(errno));
}

static void child_start(struct child *c, const char *bin, const char *amorad, int wait_go)
{
	char *argv[] = { (char *)bin, "--child", wait_go ? "--wait" : NULL, NULL };
	int out[2], in[2] = { -1, -1 };
	char env_amorad[PATH_MAX + 8];
	char *env[] = { env_amorad, NULL };

	snprintf(env_amorad, sizeof(env_amorad), "AMORAD=%s", amorad);
	make_pipe(out);
	if (wait_go)
		make_pipe(in);
	c->pid = spawn(argv, env, in[0], out[1], -1);
	close(out[1]);
	if (wait_go)
		close(in[0]);
	c->in = in[1];
	c->out = fdopen(out[0], "r");
	if (!c->out)
		bench_die("fdopen: %s", strerror(errno));
}

/* Its next stdout line into buf; dies (after reaping it) if it ends. */
static void child_line(struct child *c, char *buf, size_t cap, const char *bin)
{
	if (fgets(buf, (int)cap, c->out))
		return;
	int st;
	waitpid(c->pid, &st, 0);
	c->pid = 0;
	bench_die("a run of %s ended without its result (%s %d; its messages are above)", bin,
		  WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static void child_end(struct child *c, const char *bin)
{
	int st;

	if (c->in >= 0)
		close(c->in);
	c->in = -1;
	fclose(c->out);
	if (waitpid(c->pid, &st, 0) != c->pid)
		bench_die("waitpid: %s", strerror(errno));
	c->pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		bench_die("a run of %s failed (%s %d)", bin, WIFEXITED(st) ? "exit status" : "signal",
			  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* Reads the tracer's stderr into errbuf until it holds needle, the pipe
 * ends or TRACER_READY_NS pass. */
static int tracer_said(struct tracer *t, const char *needle)
{
	size_t len = strlen(t->errbuf);
	uint64_t t0 = shm_now_ns();

	while (!strstr(t->errbuf, needle) && shm_now_ns() - t0 < TRACER_READY_NS) {
		struct pollfd p = { t->err, POLLIN, 0 };
		if (poll(&p, 1, 500) <= 0)
			continue;
		ssize_t k = read(t->err, t->errbuf + len, sizeof(t->errbuf) - 1 - len);
		if (k <= 0)
			break;
		len += (size_t)k;
		t->errbuf[len] = 0;
	}
	return strstr(t->errbuf, needle) != NULL;
}

/* The tracer's exit status, or -signal. */
static int tracer_reap(struct tracer *t)
{
	int st;

	waitpid(t->pid, &st, 0);
	t->pid = 0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* Starts `trace -j -p pid` and waits until it traces. Returns 0, or
 * EXIT_CANNOT_TRACE with t->errbuf saying why; dies on any other failure. */
static int tracer_start(struct tracer *t, const char *trace, pid_t pid)
{
	char pidbuf[16];
	char *argv[] = { (char *)trace, "-j", "-p", pidbuf, NULL };
	int out[2], err[2];

	snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
	make_pipe(out);
	make_pipe(err);
	memset(t, 0, sizeof(*t));
	t->pid = spawn(argv, NULL, -1, out[1], err[1]);
	close(out[1]);
	close(err[1]);
	t->out = out[0];
	t->err = err[0];
	if (tracer_said(t, "Tracing Amora"))
		return 0;
	kill(t->pid, SIGINT);
	int rc = tracer_reap(t);
	close(t->out);
	close(t->err);
	if (rc == EXIT_CANNOT_TRACE)
		return rc;
	bench_die("%s -j -p %d did not start tracing (status %d): %s", trace, (int)pid, rc, t->errbuf);
}

/* SIGINT, then all of its stdout (the totals) into t->json. */
static void tracer_stop(struct tracer *t, const char *trace)
{
	size_t cap = 1 << 16;
	ssize_t k;

	kill(t->pid, SIGINT);
	t->json = bench_malloc(cap);
	t->json_len = 0;
	while ((k = read(t->out, t->json + t->json_len, cap - 1 - t->json_len)) > 0) {
		t->json_len += (size_t)k;
		if (t->json_len + 1 == cap) {
			cap *= 2;
			if (!(t->json = realloc(t->json, cap)))
				bench_die("out of memory (tracer output)");
		}
	}
	t->json[t->json_len] = 0;
	tracer_said(t, "\n\n"); /* drains stderr until it closes */
	int rc = tracer_reap(t);
	close(t->out);
	close(t->err);
	if (rc != 0)
		bench_die("%s ended with status %d: %s", trace, rc, t->errbuf);
}

/* ---------- the driver: figures ---------- */

/* One run's figures, ns; the field order is that of run_fig_rows. */
struct run_fig {
	double get_ns, get_cpu, get_p50, set_ns, set_p50;
};
#define RUN_FIGS 5

/* The rows of the tables: name, unit divisor and unit. */
static const struct {
	const char *name;
	double div;
	const char *unit;
} run_fig_rows[RUN_FIGS] = {
	{ "get hit, mean per op", 1, "ns" },
	{ "get hit, CPU per op", 1, "ns" },
	{ "get hit, p50 (every 64th op)", 1, "ns" },
	{ "sync set, mean per op", 1e3, "us" },
	{ "sync set, p50", 1e3, "us" },
};

static double run_fig_at(const struct run_fig *f, int i)
{
	return ((const double *)f)[i];
}

static struct run_fig parse_result(const char *line, const char *bin)
{
	struct run_fig f;

	if (sscanf(line, "result get_ns=%lf get_cpu=%lf get_p50=%lf set_ns=%lf set_p50=%lf", &f.get_ns, &f.get_cpu,
		   &f.get_p50, &f.set_ns, &f.set_p50) != RUN_FIGS)
		bench_die("a run of %s printed \"%s\", not its result line", bin, line);
	return f;
}

/* One untraced run without --wait. */
static struct run_fig run_plain(const char *bin, const char *amorad)
{
	char line[256];

	child_start(&cur_child, bin, amorad, 0);
	child_line(&cur_child, line, sizeof(line), bin);
	child_end(&cur_child, bin);
	return parse_result(line, bin);
}

/* amora-trace's "total" line of op, or NULL. */
static const char *trace_line(const char *json, const char *op)
{
	char want[32];

	snprintf(want, sizeof(want), "\"op\":\"%s\"", op);
	for (const char *l = json; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		const char *e = strchr(l, '\n'), *p = strstr(l, want), *q = strstr(l, "\"period\":\"total\"");
		if (p && q && (!e || (p < e && q < e)))
			return l;
	}
	return NULL;
}

/* The first "count" after `key` in line (key NULL: the op's own), or 0. */
static double trace_count(const char *line, const char *key)
{
	const char *e = strchr(line, '\n'), *p = line;

	if (!line)
		return 0;
	if (key && !(p = strstr(line, key)))
		return 0;
	p = strstr(p, "\"count\":");
	if (!p || (e && p > e))
		return 0;
	return strtod(p + 8, NULL);
}

struct traced_fig {
	struct run_fig f;
	double get_hits, set_hits; /* probe hits per op, counted by the tracer */
	double gets_seen, sets_seen;
};

/* One run with --wait, amora-trace attached when `trace` is not NULL.
 * Returns 0, or EXIT_CANNOT_TRACE. */
static int run_waiting(const char *bin, const char *amorad, const char *trace, uint64_t gets, uint64_t sets,
		       struct traced_fig *out, const char *json_path)
{
	char line[256];

	memset(out, 0, sizeof(*out));
	child_start(&cur_child, bin, amorad, 1);
	child_line(&cur_child, line, sizeof(line), bin);
	if (strcmp(line, "ready\n") != 0)
		bench_die("a run of %s printed \"%s\", expected \"ready\"", bin, line);
	if (trace && tracer_start(&cur_tracer, trace, cur_child.pid) == EXIT_CANNOT_TRACE) {
		driver_cleanup(); /* SIGTERM: it stops its amorad and removes its dir */
		fclose(cur_child.out);
		close(cur_child.in);
		cur_child.in = -1;
		return EXIT_CANNOT_TRACE;
	}
	if (write(cur_child.in, "go\n", 3) != 3)
		bench_die("writing to a run of %s: %s", bin, strerror(errno));
	child_line(&cur_child, line, sizeof(line), bin);
	out->f = parse_result(line, bin);
	if (trace) {
		tracer_stop(&cur_tracer, trace);
		const char *g = trace_line(cur_tracer.json, "get"), *s = trace_line(cur_tracer.json, "set");
		out->gets_seen = trace_count(g, NULL);
		out->sets_seen = trace_count(s, NULL);
		double total = trace_count(s, "\"total\":{");
		out->get_hits = 2 * out->gets_seen / (double)gets;
		out->set_hits = (2 * out->sets_seen + 2 * total + trace_count(s, "\"taken\":{") +
				 trace_count(s, "\"applied\":{") + trace_count(s, "\"logged\":{") +
				 trace_count(s, "\"durable\":{")) /
				(double)sets;
		if (json_path) {
			FILE *f = fopen(json_path, "w");
			if (!f || fwrite(cur_tracer.json, 1, cur_tracer.json_len, f) != cur_tracer.json_len ||
			    fclose(f) != 0)
				bench_die("--trace-json %s: %s", json_path, strerror(errno));
		}
		free(cur_tracer.json);
	}
	child_end(&cur_child, bin);
	return 0;
}

/* Whether the ELF file at path has a section named `want` (.note.stapsdt:
 * USDT probes). Dies when it cannot be read as a 64-bit ELF file. */
static int has_section(const char *path, const char *want)
{
	FILE *f = fopen(path, "rb");
	Elf64_Ehdr eh;
	Elf64_Shdr sh, strs;
	int found = 0;

	if (!f)
		bench_die("%s: %s", path, strerror(errno));
	if (fread(&eh, sizeof(eh), 1, f) != 1 || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(sh) || eh.e_shstrndx >= eh.e_shnum ||
	    fseek(f, (long)(eh.e_shoff + (uint64_t)eh.e_shstrndx * sizeof(sh)), SEEK_SET) != 0 ||
	    fread(&strs, sizeof(strs), 1, f) != 1)
		bench_die("%s: not a 64-bit ELF file with section names", path);
	for (unsigned i = 0; i < eh.e_shnum && !found; i++) {
		char name[64] = "";
		if (fseek(f, (long)(eh.e_shoff + (uint64_t)i * sizeof(sh)), SEEK_SET) != 0 ||
		    fread(&sh, sizeof(sh), 1, f) != 1 || sh.sh_name >= strs.sh_size ||
		    fseek(f, (long)(strs.sh_offset + sh.sh_name), SEEK_SET) != 0)
			bench_die("%s: cannot read section %u", path, i);
		if (!fgets(name, sizeof(name), f) && ferror(f))
			bench_die("%s: cannot read section %u's name", path, i);
		found = strncmp(name, want, sizeof(name)) == 0;
	}
	fclose(f);
	return found;
}

static int has_probes(const char *path)
{
	return has_section(path, ".note.stapsdt");
}

/* dir of path's dir + "/" + rel, made absolute, into out. */
static void beside(char *out, size_t cap, const char *path, const char *rel)
{
	char tmp[PATH_MAX], abs[PATH_MAX];
	const char *slash = strrchr(path, '/');

	snprintf(tmp, sizeof(tmp), "%.*s/%s", slash ? (int)(slash - path) : 1, slash ? path : ".", rel);
	snprintf(out, cap, "%s", realpath(tmp, abs) ? abs : tmp);
}

static void check_build(const char *bin, const char *amorad, int want)
{
	if (access(bin, X_OK) != 0)
		bench_die("%s: %s%s", bin, strerror(errno),
			  want ? "" : " (build it: make bench-probes, or make BUILD=<dir> EXTRA_CFLAGS=-DAMORA_NO_PROBES)");
	if (access(amorad, X_OK) != 0)
		bench_die("%s: %s (the amorad of %s's build)", amorad, strerror(errno), bin);
	if (has_probes(bin) != want || has_probes(amorad) != want)
		bench_die("%s or %s %s USDT probes, but this is the %s build", bin, amorad, want ? "lacks" : "has",
			  want ? "probes" : "-DAMORA_NO_PROBES");
}

/* Median over n runs of figure i. */
static double median_at(const struct run_fig *v, int n, int i)
{
	double x[MAX_RUNS];

	for (int k = 0; k < n; k++)
		x[k] = run_fig_at(&v[k], i);
	return fig_median(x, n);
}

/* valgrind's path in PATH, into out; 0 when there is none. */
static int find_valgrind(char *out, size_t cap)
{
	const char *path = getenv("PATH");

	for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(out, cap, "%.*s/valgrind", (int)n, p);
		if (n && access(out, X_OK) == 0)
			return 1;
		p += n + (p[n] == ':');
	}
	return 0;
}

/* Instructions the client executed in function fn (a phase) of one
 * --child run under callgrind (KEYS=keys, SET_KEYS=sets), per op. */
static double callgrind_per_op(const char *valgrind, const char *bin, const char *amorad, const char *fn,
			       uint64_t keys, uint64_t sets, uint64_t ops)
{
	char toggle[64], e_amorad[PATH_MAX + 8], e_keys[32], e_sets[32], e_mem[32], out[8192];
	char *argv[] = { (char *)valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", toggle,
			 (char *)bin, "--child", NULL };
	char *env[] = { e_amorad, e_keys, e_sets, e_mem, NULL };
	int err[2], devnull = open("/dev/null", O_WRONLY | O_CLOEXEC), st;
	size_t len = 0;
	ssize_t k;
	const char *mem = getenv("AMORA_MEMORY");

	snprintf(toggle, sizeof(toggle), "--toggle-collect=%s", fn);
	snprintf(e_amorad, sizeof(e_amorad), "AMORAD=%s", amorad);
	snprintf(e_keys, sizeof(e_keys), "KEYS=%llu", (unsigned long long)keys);
	snprintf(e_sets, sizeof(e_sets), "SET_KEYS=%llu", (unsigned long long)sets);
	snprintf(e_mem, sizeof(e_mem), "AMORA_MEMORY=%s", mem && *mem ? mem : "1G");
	make_pipe(err);
	pid_t pid = spawn(argv, env, -1, devnull, err[1]);
	cur_child.pid = pid; /* for driver_cleanup */
	close(err[1]);
	close(devnull);
	while ((k = read(err[0], out + len, sizeof(out) - 1 - len)) > 0) {
		len += (size_t)k;
		if (len == sizeof(out) - 1) { /* keep the end: the summary */
			memmove(out, out + len / 2, len - len / 2);
			len -= len / 2;
		}
	}
	out[len] = 0;
	close(err[0]);
	waitpid(pid, &st, 0);
	cur_child.pid = 0;
	const char *c = strstr(out, "Collected : ");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !c)
		bench_die("%s --tool=callgrind %s --child failed (status %d):\n%s", valgrind, bin,
			  WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), out);
	return strtod(c + 12, NULL) / (double)ops;
}

static void part_instructions(const char *pbin, const char *pamorad, const char *nbin, const char *namorad)
{
	const uint64_t keys = 20000;
	char valgrind[PATH_MAX];

	printf("\n0. instructions per get hit in the client, callgrind (%llu gets; deterministic, unlike the\n"
	       "   timings; a set's count is not: it includes polling its completion while the shard works):\n",
	       (unsigned long long)keys);
	if (!find_valgrind(valgrind, sizeof(valgrind))) {
		printf("  skipped: no valgrind in PATH (make deps installs it)\n");
		return;
	}
	double a = callgrind_per_op(valgrind, pbin, pamorad, "phase_hits", keys, 1, keys);
	double b = callgrind_per_op(valgrind, nbin, namorad, "phase_hits", keys, 1, keys);
	printf("  probes %.1f, no probes %.1f: %+.1f instructions per get (%+.2f %%; two probe sites, each a nop\n"
	       "  and the moves that put its arguments where its note says)\n",
	       a, b, a - b, (a / b - 1) * 100);
}

static void part_untraced(const char *pbin, const char *pamorad, const char *nbin, const char *namorad, int runs)
{
	struct run_fig p[MAX_RUNS], q[MAX_RUNS];
	double med_p[RUN_FIGS], med_q[RUN_FIGS];

	printf("\n1. probes compiled in, not traced, vs -DAMORA_NO_PROBES (%d pairs, ABBA order):\n", runs);
	for (int r = 0; r < runs; r++) {
		if (r % 2 == 0) {
			p[r] = run_plain(pbin, pamorad);
			q[r] = run_plain(nbin, namorad);
		} else {
			q[r] = run_plain(nbin, namorad);
			p[r] = run_plain(pbin, pamorad);
		}
		printf("  pair %d/%d: probes get %.1f ns (CPU %.1f), set %.1f us (p50 %.1f) | no probes get %.1f ns"
		       " (CPU %.1f), set %.1f us (p50 %.1f)\n",
		       r + 1, runs, p[r].get_ns, p[r].get_cpu, p[r].set_ns / 1e3, p[r].set_p50 / 1e3, q[r].get_ns,
		       q[r].get_cpu, q[r].set_ns / 1e3, q[r].set_p50 / 1e3);
	}
	double lo[RUN_FIGS], hi[RUN_FIGS];

	printf("\n  %-30s %12s %12s %8s   %s\n", "median of the runs", "probes", "no probes", "ratio",
	       "ratio per pair (min..max)");
	for (int i = 0; i < RUN_FIGS; i++) {
		double d = run_fig_rows[i].div;
		lo[i] = 1e300, hi[i] = 0;
		for (int r = 0; r < runs; r++) {
			double x = run_fig_at(&p[r], i) / run_fig_at(&q[r], i);
			lo[i] = x < lo[i] ? x : lo[i];
			hi[i] = x > hi[i] ? x : hi[i];
		}
		med_p[i] = median_at(p, runs, i);
		med_q[i] = median_at(q, runs, i);
		printf("  %-30s %9.1f %s %9.1f %s %8.3f   %.3f..%.3f\n", run_fig_rows[i].name, med_p[i] / d,
		       run_fig_rows[i].unit, med_q[i] / d, run_fig_rows[i].unit, med_p[i] / med_q[i], lo[i], hi[i]);
	}
	printf("  target: untraced probes cost < 1 %% (printed, not enforced), on get hit CPU per op and sync set\n"
	       "  p50, the figures least moved by other processes:\n");
	for (int k = 0; k < 2; k++) {
		int i = k ? 4 : 1;
		double rt = med_p[i] / med_q[i];
		printf("    %-28s %+.1f %%: %s\n", run_fig_rows[i].name, (rt - 1) * 100,
		       rt < 1.01 ? "met"
		       : lo[i] < 1.01 ? "not resolved: the pairs' own spread is wider than 1 % (see step 0)"
				      : "MISSED");
	}
}

static void part_traced(const char *pbin, const char *pamorad, const char *trace, int runs, uint64_t gets,
			uint64_t sets, const char *json_path)
{
	struct traced_fig t[MAX_RUNS], u[MAX_RUNS];
	struct run_fig tf[MAX_RUNS], uf[MAX_RUNS];
	double gh[MAX_RUNS], sh[MAX_RUNS];

	printf("\n2. traced: amora-trace -j -p attached vs not, probes build (%d pairs):\n", runs);
	for (int r = 0; r < runs; r++) {
		int first_traced = r % 2;
		for (int k = 0; k < 2; k++) {
			int traced = k == first_traced;
			if (run_waiting(pbin, pamorad, traced ? trace : NULL, gets, sets, traced ? &t[r] : &u[r],
					traced && r == runs - 1 ? json_path : NULL) == EXIT_CANNOT_TRACE) {
				printf("  skipped: %s", cur_tracer.errbuf);
				return;
			}
		}
		tf[r] = t[r].f, uf[r] = u[r].f;
		gh[r] = t[r].get_hits, sh[r] = t[r].set_hits;
		printf("  pair %d/%d: untraced get %.1f ns (CPU %.1f), set %.1f us (p50 %.1f) | traced get %.1f ns"
		       " (CPU %.1f), set %.1f us (p50 %.1f); amora-trace counted %.0f gets, %.0f sets\n",
		       r + 1, runs, u[r].f.get_ns, u[r].f.get_cpu, u[r].f.set_ns / 1e3, u[r].f.set_p50 / 1e3,
		       t[r].f.get_ns, t[r].f.get_cpu, t[r].f.set_ns / 1e3, t[r].f.set_p50 / 1e3, t[r].gets_seen,
		       t[r].sets_seen);
		if (t[r].gets_seen != (double)gets || t[r].sets_seen != (double)sets)
			printf("  WARNING: amora-trace counted %.0f gets and %.0f sets of %llu and %llu\n",
			       t[r].gets_seen, t[r].sets_seen, (unsigned long long)gets, (unsigned long long)sets);
	}
	double hits[RUN_FIGS] = { fig_median(gh, runs), fig_median(gh, runs), fig_median(gh, runs),
				  fig_median(sh, runs), fig_median(sh, runs) };

	printf("\n  %-30s %11s %11s %11s %8s %14s\n", "median of the runs", "untraced", "traced", "difference",
	       "hits/op", "per traced hit");
	for (int i = 0; i < RUN_FIGS; i++) {
		double a = median_at(uf, runs, i), b = median_at(tf, runs, i), d = run_fig_rows[i].div;
		if (i == 2)
			continue; /* a p50 of get hit moves by whole buckets of timer resolution */
		printf("  %-30s %8.1f %s %8.1f %s %8.1f %s %8.2f %11.0f ns\n", run_fig_rows[i].name, a / d,
		       run_fig_rows[i].unit, b / d, run_fig_rows[i].unit, (b - a) / d, run_fig_rows[i].unit, hits[i],
		       hits[i] > 0 ? (b - a) / hits[i] : 0);
	}
	printf("  hits/op: the probe hits amora-trace's totals account for, per op (get: op__begin/end; set: also\n"
	       "  req__submit/complete, req__take/apply, log__write/sync). A get's hits trap in the client's own\n"
	       "  thread, so its difference is their cost. A set's shard-side hits run in the shard while the\n"
	       "  client waits, but its difference is not theirs alone: 8 hits of ~1 us are small against its\n"
	       "  fdatasync's spread, and a trap keeps a vCPU busy, which changes how often a wake-up waits for\n"
	       "  a halted vCPU (this VM); it may come out negative.\n");
	if (json_path)
		printf("  the last traced run's amora-trace JSON: %s (perf/plot trace draws it)\n", json_path);
}

static void usage(FILE *to)
{
	fprintf(to, "usage: bench_probes [--noprobes PATH] [--trace PATH] [--trace-json FILE]\n"
		    "       bench_probes --child [--wait]   (one run; the driver starts these)\n"
		    "  --noprobes PATH    this program built with -DAMORA_NO_PROBES (default: ../noprobes/perf/bench_probes\n"
		    "                     beside this one, as make bench-probes builds it)\n"
		    "  --trace PATH       amora-trace (default: beside this program)\n"
		    "  --trace-json FILE  keep the last traced run's amora-trace JSON lines in FILE\n"
		    "Environment: RUNS TRACE_RUNS KEYS SET_KEYS AMORA_SHARDS AMORA_MEMORY BENCH_DIR\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "child", no_argument, NULL, 'c' },       { "wait", no_argument, NULL, 'w' },
		{ "noprobes", required_argument, NULL, 'n' }, { "trace", required_argument, NULL, 't' },
		{ "trace-json", required_argument, NULL, 'J' }, { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char self[PATH_MAX], pathbuf[PATH_MAX], pamorad[PATH_MAX], nbin[PATH_MAX], namorad[PATH_MAX], trace[PATH_MAX];
	const char *json_path = NULL;
	int child = 0, wait_go = 0;

	nbin[0] = trace[0] = 0;
	for (int c; (c = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
		switch (c) {
		case 'c': child = 1; break;
		case 'w': wait_go = 1; break;
		case 'n': snprintf(nbin, sizeof(nbin), "%s", optarg); break;
		case 't': snprintf(trace, sizeof(trace), "%s", optarg); break;
		case 'J': json_path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (child)
		return child_main(wait_go);

	int runs = (int)env_u64("RUNS", 5, 1, MAX_RUNS, 2);
	int trace_runs = (int)env_u64("TRACE_RUNS", 3, 0, MAX_RUNS, 2);
	uint64_t n = env_u64("KEYS", 1000000, 1000, 100000000, 2);
	uint64_t s = env_u64("SET_KEYS", n < 2000 ? n : 2000, 1, n, 2);
	ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (k <= 0)
		bench_die("readlink /proc/self/exe: %s", strerror(errno));
	self[k] = 0;
	beside(pamorad, sizeof(pamorad), self, "../amorad");
	if (!nbin[0])
		beside(nbin, sizeof(nbin), self, "../noprobes/perf/bench_probes");
	else if (realpath(nbin, pathbuf))
		snprintf(nbin, sizeof(nbin), "%s", pathbuf);
	beside(namorad, sizeof(namorad), nbin, "../amorad");
	if (!trace[0])
		beside(trace, sizeof(trace), self, "amora-trace");
	check_build(self, pamorad, 1);
	check_build(nbin, namorad, 0);
	if (trace_runs && access(trace, X_OK) != 0)
		bench_die("%s: %s (build it: make)", trace, strerror(errno));

	atexit(driver_cleanup);
	bench_signals_set(driver_on_signal);

	char nb[32];
	double l0 = env_loadavg();
	printf("bench_probes: get hit (%s keys) and sync set (%llu keys, --sync always), one client, a fresh amorad"
	       " per run\n  probes:    %s (amorad %s)\n  no probes: %s (amorad %s)\n"
	       "  load average at start %.2f on %ld CPUs%s\n",
	       fig_fmt_count(nb, n), (unsigned long long)s, self, pamorad, nbin, namorad, l0,
	       sysconf(_SC_NPROCESSORS_ONLN), l0 > 1.0 ? "  (the machine is busy: figures will be noisy)" : "");
	uint64_t t0 = shm_now_ns();
	part_instructions(self, pamorad, nbin, namorad);
	part_untraced(self, pamorad, nbin, namorad, runs);
	if (trace_runs)
		part_traced(self, pamorad, trace, trace_runs, n, s, json_path);
	printf("\nbench_probes: %.0f s; load average at the end %.2f (includes this benchmark)\n",
	       (shm_now_ns() - t0) / 1e9, env_loadavg());
	return 0;
}
