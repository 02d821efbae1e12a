/*
 * mixed.c — 2 readers + 1 writer in separate processes (perf/lib/mixed.h).
 */
#include "perf/lib/mixed.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/lib/fail.h"
#include "perf/lib/phases.h"
#include "shm/clock.h"

/* One role's result, in memory shared with the parent. */
struct mixed_res {
	uint64_t ops, elapsed_ns;
	double p50, p99;
	int failed;
	char msg[512];
};

static volatile pid_t mixed_kids[MIXED_ROLES];
static int mixed_nkids;
static struct mixed_res *mixed_mine; /* in a child: its slot */

/* A child's bench_die hook: the message goes to stderr and to its slot. */
static void mixed_child_fail(const char *msg)
{
	fprintf(stderr, "%s (child %d): FAILED: %s\n", program_invocation_short_name, (int)getpid(), msg);
	mixed_mine->failed = 1;
	snprintf(mixed_mine->msg, sizeof(mixed_mine->msg), "%s", msg);
	_exit(2);
}

static inline uint64_t mixed_next(const struct workload *w, uint64_t j)
{
	return j + 1 == w->n ? 0 : j + 1;
}

/* Gets from position j on until `end`; returns ops, *t the time of the
 * last timed op (the reader stops only after one). */
static uint64_t mixed_read(struct engine *e, const struct workload *w, uint64_t j, uint64_t end,
			   struct samples *s, uint64_t *t)
{
	char buf[VLEN + 28];
	uint64_t ops;

	for (ops = 0;; ops++, j = mixed_next(w, j)) {
		const char *k = w->hit_keys + j * KLEN;
		if ((ops & PHASE_SAMPLE_MASK) == 0) {
			uint64_t a = shm_now_ns();
			long got = e->get(e, k, KLEN, buf, sizeof(buf));
			*t = shm_now_ns();
			samples_push(s, *t - a);
			if (got < 0)
				bench_die("reader: existing key %u not found", w->hit_idx[j]);
			workload_check("mixed reader", w->hit_idx[j], buf, (size_t)got);
			if (*t >= end)
				break;
		} else if (e->get(e, k, KLEN, buf, sizeof(buf)) != VLEN) {
			bench_die("reader: %s get of key %u failed", e->name, w->hit_idx[j]);
		}
	}
	return ops + 1;
}

/* Puts from position j on until `end`; returns ops, *t as above. */
static uint64_t mixed_write(struct engine *e, const struct workload *w, uint64_t j, uint64_t end,
			    struct samples *s, uint64_t *t)
{
	uint64_t ops = 0;

	while (*t < end) {
		uint32_t i = w->hit_idx[j];
		uint64_t a = shm_now_ns();
		e->put(e, w->hit_keys + j * KLEN, KLEN, w->vals + (uint64_t)i * VLEN, VLEN);
		*t = shm_now_ns();
		samples_push(s, *t - a);
		ops++;
		j = mixed_next(w, j);
	}
	return ops;
}

/* A child's life: attach, ready, wait for the start, run, report. Keys
 * walk the random lookup order from a per-role offset. */
static void mixed_role(const struct engine_kind *kind, int role, const char *dir,
		       const struct workload *w, int seconds, int readyfd, int startfd)
{
	int writer = role == MIXED_ROLES - 1;
	struct engine *e = kind->attach(dir, writer);
	struct samples s = {0};
	char c = 'r';

	if (write(readyfd, &c, 1) != 1)
		bench_die("ready pipe: %s", strerror(errno));
	if (read(startfd, &c, 1) != 0)
		bench_die("start pipe: unexpected data");

	uint64_t j = (w->n / 3) * (uint64_t)role;
	uint64_t t0 = shm_now_ns(), end = t0 + (uint64_t)seconds * 1000000000ull, t = t0;
	uint64_t ops = writer ? mixed_write(e, w, j, end, &s, &t) : mixed_read(e, w, j, end, &s, &t);
	struct fig f = fig_of(&s, ops, t - t0);
	mixed_mine->ops = ops;
	mixed_mine->elapsed_ns = t - t0;
	mixed_mine->p50 = f.p50;
	mixed_mine->p99 = f.p99;
	e->close(e);
}

/* Forks the three roles; returns once each said it is ready (or one died
 * first: *ready_n < 3), with the start pipe's write end in *start_w. */
static void mixed_fork(const struct engine_kind *kind, const char *dir, const struct workload *w,
		       int seconds, struct mixed_res *rr, int *ready_n, int *start_w)
{
	int ready[2], start[2];
	pid_t parent = getpid();

	if (pipe(ready) || pipe(start))
		bench_die("pipe: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	mixed_nkids = 0;
	for (int role = 0; role < MIXED_ROLES; role++) {
		pid_t p = fork();
		if (p < 0)
			bench_die("fork: %s", strerror(errno));
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			mixed_mine = &rr[role];
			bench_die_hook_set(mixed_child_fail);
			close(ready[0]);
			close(start[1]);
			mixed_role(kind, role, dir, w, seconds, ready[1], start[0]);
			_exit(0);
		}
		mixed_kids[mixed_nkids++] = p;
	}
	close(ready[1]);
	close(start[0]);
	int got = 0;
	while (got < MIXED_ROLES) {
		struct pollfd pfd = { ready[0], POLLIN, 0 };
		if (poll(&pfd, 1, 15000) <= 0)
			bench_die("mixed phase: children not ready within 15 s");
		char c;
		if (read(ready[0], &c, 1) <= 0)
			break; /* a child died before it was ready: reported by the caller */
		got++;
	}
	close(ready[0]);
	*ready_n = got;
	*start_w = start[1];
}

void mixed_run(const struct engine_kind *kind, const char *dir, const struct workload *w,
	       int seconds, struct fig out[MIXED_ROLES])
{
	struct mixed_res *rr = mmap(NULL, MIXED_ROLES * sizeof(*rr), PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int ready, start_w;

	if (rr == MAP_FAILED)
		bench_die("mmap: %s", strerror(errno));
	memset(rr, 0, MIXED_ROLES * sizeof(*rr));
	mixed_fork(kind, dir, w, seconds, rr, &ready, &start_w);
	close(start_w); /* all three start at once */
	int failed = ready < MIXED_ROLES;
	uint64_t deadline = shm_now_ns() + (uint64_t)(seconds + 30) * 1000000000ull;
	for (int k = 0; k < mixed_nkids; k++) {
		int st;
		while (waitpid(mixed_kids[k], &st, WNOHANG) != mixed_kids[k]) {
			if (shm_now_ns() > deadline)
				bench_die("mixed phase: child %d did not finish", (int)mixed_kids[k]);
			usleep(2000);
		}
		mixed_kids[k] = -1;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || rr[k].failed) {
			failed = 1;
			fprintf(stderr, "mixed phase (%s): %s %d %s: %s\n", kind->name,
				k == MIXED_ROLES - 1 ? "writer" : "reader", k + 1,
				WIFSIGNALED(st) ? "killed by a signal" : "failed",
				rr[k].msg[0] ? rr[k].msg : "(no message)");
		}
	}
	mixed_nkids = 0;
	if (failed)
		bench_die("mixed phase (%s) failed", kind->name);
	for (int k = 0; k < MIXED_ROLES; k++) {
		out[k].ops = rr[k].elapsed_ns ? rr[k].ops * 1e9 / (double)rr[k].elapsed_ns : 0;
		out[k].p50 = rr[k].p50;
		out[k].p99 = rr[k].p99;
	}
	munmap(rr, MIXED_ROLES * sizeof(*rr));
}

void mixed_kill(void)
{
	for (int i = 0; i < mixed_nkids; i++)
		if (mixed_kids[i] > 0) {
			kill(mixed_kids[i], SIGKILL);
			waitpid(mixed_kids[i], NULL, 0);
			mixed_kids[i] = -1;
		}
}

