/*
 * proc.h — running the real amorad from tests.
 *
 * Tests start the built amorad binary in a temp dir of their own, talk to
 * it through libamora or the socket, kill its processes, and read its
 * files. Starting, attaching and stopping are tests/daemon.h's (shared with
 * the benchmarks); this file adds Criterion's asserts and the fixture.
 * Every process a test starts gets PR_SET_PDEATHSIG, so a test that fails
 * or times out leaves nothing running (Criterion does not kill what a test
 * forked).
 */
#ifndef AMORA_TESTS_PROC_H
#define AMORA_TESTS_PROC_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libclient/amora.h"
#include "shm/clock.h"
#include "tests/daemon.h"

#define AMORAD_BIN DAEMON_AMORAD
#define AMORA_CLI AMORA_BUILD_DIR "/amora"

static inline uint64_t proc_now_ms(void)
{
	return shm_now_ns() / 1000000;
}

static inline void proc_tmpdir(struct daemon *d)
{
	char dir[] = "/tmp/amora-test-XXXXXX", log[sizeof(dir) + 16];

	cr_assert_not_null(mkdtemp(dir));
	snprintf(log, sizeof(log), "%s/amorad.log", dir);
	cr_assert_eq(daemon_paths(d, dir, log), 0);
}

/* Start amorad on d->dir with extra options (NULL-terminated), wait until
 * its socket answers a client. `env` (may be NULL) is one NAME=value. */
static inline void proc_start_env(struct daemon *d, const char *env, ...)
{
	const char *args[29];
	int argc = 0;
	enum daemon_result r;
	amora *db;
	va_list ap;

	va_start(ap, env);
	for (const char *a; argc < 28 && (a = va_arg(ap, const char *)) != NULL;)
		args[argc++] = a;
	va_end(ap);
	args[argc] = NULL;
	cr_assert_eq(daemon_start(d, AMORAD_BIN, env, args), DAEMON_OK, "fork: %s", strerror(errno));
	r = daemon_open(d, 20000000000ull, 10000000ull, &db, NULL);
	cr_assert_neq(r, DAEMON_EXITED, "amorad exited at start; see %s", d->log);
	cr_assert_eq(r, DAEMON_OK, "amorad did not answer within 20 s");
	amora_close(db);
}

#define proc_start(d, ...) proc_start_env(d, NULL, __VA_ARGS__)

/* Signal amorad and wait for it (60 s at most); returns its exit status
 * (or -signal). */
static inline int proc_stop(struct daemon *d, int sig)
{
	cr_assert_eq(daemon_stop(d, sig, 60000000000ull), DAEMON_OK, "amorad did not exit after signal %d",
		     sig);
	return daemon_exit_code(d->status);
}

/* Pids of amorad's children (its shards), up to n. */
static inline int proc_children(pid_t pid, pid_t *out, int n)
{
	char path[64];
	FILE *f;
	int k = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", pid, pid);
	f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (k < n && fscanf(f, "%d", &out[k]) == 1)
		k++;
	fclose(f);
	return k;
}

/* Fork a child that talks to its parent over one pipe: in the parent it
 * returns the child's pid and *fd is the write end; in the child (which
 * dies with the test: PR_SET_PDEATHSIG) it returns 0 and *fd is the read
 * end. */
static inline pid_t proc_fork_piped(int *fd)
{
	int p[2];
	pid_t pid;

	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[1]);
		*fd = p[0];
	} else {
		close(p[0]);
		*fd = p[1];
	}
	return pid;
}

static inline bool proc_alive(pid_t pid)
{
	char path[64], state = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		return false;
	if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
		state = 0;
	fclose(f);
	return state != 0 && state != 'Z';
}

/* Whether amorad's log contains `needle`. */
static inline bool proc_log_has(const struct daemon *d, const char *needle)
{
	char buf[1 << 16];
	FILE *f = fopen(d->log, "r");
	size_t n;

	if (f == NULL)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return strstr(buf, needle) != NULL;
}

static inline void proc_cleanup(struct daemon *d)
{
	char cmd[300];

	daemon_kill(d);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", d->dir);
}

/* The amorad of the running test. A suite that starts one uses this
 * fixture: a temp dir of its own before each test, its processes killed
 * and the dir removed after (TestSuite(x, .init = proc_init, .fini =
 * proc_fini)). */
static struct daemon D __attribute__((unused));

static inline void proc_init(void)
{
	memset(&D, 0, sizeof(D));
	proc_tmpdir(&D);
}

static inline void proc_fini(void)
{
	proc_cleanup(&D);
}

/* Attach to D's amorad, or fail the test with the cause. */
static inline amora *proc_open(void)
{
	amora *db = NULL;
	int rc = amora_open(D.sock, &db);

	cr_assert_eq(rc, AMORA_OK, "amora_open: %s: %s", amora_strerror(rc), amora_errmsg(NULL));
	return db;
}

/* Run shell command `cmd`, keep its stdout (up to cap - 1 bytes, NUL
 * terminated) and return its exit status (-1 if a signal ended it). */
static inline int proc_run(char *out, size_t cap, const char *cmd)
{
	FILE *f = popen(cmd, "r");
	size_t n;
	int status;

	cr_assert_not_null(f, "popen %s", cmd);
	n = fread(out, 1, cap - 1, f);
	out[n] = 0;
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* `amora -s D.sock args` (args may redirect, e.g. "stats 2>&1"). */
static inline int proc_cli(char *out, size_t cap, const char *args)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd), AMORA_CLI " -s %s %s", D.sock, args);
	return proc_run(out, cap, cmd);
}

/* Key and value of item i, as tests write and check them. */
static inline int proc_key(char *buf, const char *prefix, int i)
{
	return sprintf(buf, "%s:%08d", prefix, i);
}

static inline int proc_val(char *buf, int i, int version)
{
	return sprintf(buf, "value-%d-%d-%0*d", i, version, 40 + i % 50, 7);
}

#endif
