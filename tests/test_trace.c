/*
 * test_trace.c — amora-trace against a real amorad: its histograms count
 * the operations a workload did, a write shows every stage, and -p of a
 * process that is not Amora's fails with a message. Needs root, BTF and
 * BPF (CI has them); elsewhere amora-trace exits 77 and the tests skip
 * with its reason.
 */
#include <poll.h>

#include "tests/proc.h"

#define TRACE_BIN AMORA_BUILD_DIR "/perf/amora-trace"
#define SETS 300
#define GETS 20000
#define HEARTBEATS 7
#define STR_(x) #x
#define STR(x) STR_(x)

TestSuite(trace, .init = proc_init, .fini = proc_fini);

struct tracer {
	pid_t pid;
	int out, err; /* its stdout and stderr */
	char errbuf[4096];
};

static void close_both(int p[2])
{
	close(p[0]);
	close(p[1]);
}

/* Start amora-trace with `args` (NULL-terminated). */
static void tracer_start(struct tracer *t, const char *const *args)
{
	const char *argv[16] = { TRACE_BIN };
	int out[2], err[2], n = 1;

	while (args[n - 1] && n < 15) {
		argv[n] = args[n - 1];
		n++;
	}
	argv[n] = NULL;
	cr_assert_eq(pipe(out), 0);
	cr_assert_eq(pipe(err), 0);
	t->pid = fork();
	cr_assert(t->pid >= 0);
	if (t->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(out[1], 1);
		dup2(err[1], 2);
		close_both(out);
		close_both(err);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	t->out = out[0];
	t->err = err[0];
	t->errbuf[0] = 0;
}

/* Read its stderr until it holds `needle` or the pipe ends (within 20 s). */
static bool tracer_said(struct tracer *t, const char *needle)
{
	size_t len = strlen(t->errbuf);
	uint64_t t0 = proc_now_ms();

	while (strstr(t->errbuf, needle) == NULL && proc_now_ms() - t0 < 20000) {
		struct pollfd p = { t->err, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, 1000) <= 0)
			continue;
		n = read(t->err, t->errbuf + len, sizeof(t->errbuf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		t->errbuf[len] = 0;
	}
	return strstr(t->errbuf, needle) != NULL;
}

/* Wait for it to end; returns its exit status (-1 if a signal ended it). */
static int tracer_wait(struct tracer *t)
{
	int status;

	tracer_said(t, "\n\n"); /* drain stderr until it closes */
	cr_assert_eq(waitpid(t->pid, &status, 0), t->pid);
	close(t->err);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Skip the test if the tracer ended with 77 (this machine cannot trace). */
static void skip_if_cannot(struct tracer *t)
{
	int status;

	if (waitpid(t->pid, &status, WNOHANG) == t->pid && WIFEXITED(status) && WEXITSTATUS(status) == 77)
		cr_skip_test("%s", t->errbuf);
}

/* A child that waits for a byte on `go`, then does SETS synchronous sets
 * and GETS gets through libamora and HEARTBEATS heartbeats (a PING to
 * amorad each), and exits 0 if all succeeded. */
static pid_t workload_start(int *go)
{
	int fd;
	pid_t pid = proc_fork_piped(&fd);

	if (pid == 0) {
		amora *db;
		char k[64], v[128], buf[128], c;
		size_t vlen;
		int bad = 0;

		if (amora_open(D.sock, &db) != AMORA_OK || read(fd, &c, 1) != 1)
			_exit(2);
		for (int i = 0; i < SETS; i++)
			bad |= amora_set(db, k, (size_t)proc_key(k, "t", i), v, (size_t)proc_val(v, i, 1)) != AMORA_OK;
		for (int i = 0; i < GETS; i++)
			bad |= amora_get(db, k, (size_t)proc_key(k, "t", i % SETS), buf, sizeof(buf), &vlen) != AMORA_OK;
		for (int i = 0; i < HEARTBEATS; i++)
			bad |= amora_heartbeat(db) != AMORA_OK;
		amora_close(db);
		_exit(bad);
	}
	*go = fd;
	return pid;
}

/* The number after `"field":` in the JSON line of op `op`, period
 * "total", in `out`; -1 if there is no such line or field. */
static long long json_field(const char *out, const char *op, const char *field)
{
	char want[64], key[64];
	const char *line = out;

	snprintf(want, sizeof(want), "\"period\":\"total\",\"op\":\"%s\"", op);
	snprintf(key, sizeof(key), "\"%s\":", field);
	for (; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		const char *end = strchr(line, '\n'), *f;

		f = strstr(line, want);
		if (f == NULL || (end && f > end))
			continue;
		f = strstr(line, key);
		if (f == NULL || (end && f > end))
			return -1;
		return strtoll(f + strlen(key), NULL, 10);
	}
	return -1;
}

static size_t read_all(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t n;

	while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = 0;
	close(fd);
	return len;
}

Test(trace, histograms_count_the_workload_and_writes_show_every_stage, .timeout = 120)
{
	static char out[1 << 20];
	const char *stages[] = { "taken", "applied", "logged", "durable", "seen", "total" };
	char pidarg[16], *set_line;
	struct tracer t;
	int go, status;
	pid_t w;

	proc_start(&D, "--shards", "4", "--sync", "always", NULL);
	w = workload_start(&go);
	snprintf(pidarg, sizeof(pidarg), "%d", (int)w);
	tracer_start(&t, (const char *[]){ "-j", "-p", pidarg, NULL });
	if (!tracer_said(&t, "Tracing")) {
		skip_if_cannot(&t);
		cr_assert_fail("amora-trace did not start: %s", t.errbuf);
	}
	cr_assert_eq(write(go, "g", 1), 1);
	cr_assert_eq(waitpid(w, &status, 0), w);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the workload failed");
	usleep(500 * 1000); /* completions reaped, probes all fired */
	kill(t.pid, SIGINT);
	read_all(t.out, out, sizeof(out));
	cr_assert_eq(tracer_wait(&t), 0, "amora-trace: %s", t.errbuf);

	cr_assert_eq(json_field(out, "set", "count"), SETS, "sets counted:\n%s", out);
	cr_assert_eq(json_field(out, "get", "count"), GETS, "gets counted:\n%s", out);
	cr_assert_gt(json_field(out, "get", "p50_ns"), 0);
	set_line = strstr(out, "\"op\":\"set\"");
	cr_assert_not_null(set_line);
	for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++) {
		char key[64];

		snprintf(key, sizeof(key), "\"%s\":{\"count\":", stages[i]);
		cr_assert_not_null(strstr(set_line, key), "stage %s of set missing:\n%s", stages[i], out);
	}
	/* amorad's side: the traced client's PINGs, and no one else's. */
	cr_assert_not_null(strstr(out, "\"period\":\"total\",\"cmd\":\"ping\",\"errors\":false,\"count\":"
				       STR(HEARTBEATS) ","), "heartbeats not seen as PINGs:\n%s", out);
}

Test(trace, pid_of_a_process_that_is_not_amora_fails_cleanly, .timeout = 60)
{
	int execd[2];
	pid_t sleeper;
	char pidarg[16], byte;
	struct tracer t;

	/* The tracer must see `sleep`, not the test's own forked copy (which
	 * has probes): the close-on-exec pipe reads EOF once exec is done. */
	cr_assert_eq(pipe2(execd, O_CLOEXEC), 0);
	sleeper = fork();
	cr_assert(sleeper >= 0);
	if (sleeper == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl("/bin/sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	close(execd[1]);
	cr_assert_eq(read(execd[0], &byte, 1), 0);
	close(execd[0]);
	snprintf(pidarg, sizeof(pidarg), "%d", (int)sleeper);
	tracer_start(&t, (const char *[]){ "-p", pidarg, NULL });
	close(t.out);
	int rc = tracer_wait(&t);
	if (rc == 77)
		cr_skip_test("%s", t.errbuf);
	cr_assert_eq(rc, 1, "exit %d: %s", rc, t.errbuf);
	cr_assert_not_null(strstr(t.errbuf, "no binary with Amora probes"), "%s", t.errbuf);
	kill(sleeper, SIGKILL);
	waitpid(sleeper, NULL, 0);

	tracer_start(&t, (const char *[]){ "-p", "2147483647", NULL });
	close(t.out);
	rc = tracer_wait(&t);
	cr_assert_eq(rc, 1, "exit %d: %s", rc, t.errbuf);
	cr_assert_not_null(strstr(t.errbuf, "no process 2147483647"), "%s", t.errbuf);
}
