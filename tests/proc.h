/*
 * proc.h — running the real amorad from tests.
 *
 * Tests start the built amorad binary in a temp dir of their own, talk to
 * it through libamora or the socket, kill its processes, and read its
 * files. Every process a test starts gets PR_SET_PDEATHSIG, so a test that
 * fails or times out leaves nothing running (Criterion does not kill what
 * a test forked).
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

#define AMORAD_BIN AMORA_BUILD_DIR "/amorad"
#define AMORA_CLI AMORA_BUILD_DIR "/amora"

struct daemon {
	char dir[256];
	char sock[300];
	char log[300];
	pid_t pid;
};

static inline uint64_t proc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void proc_tmpdir(struct daemon *d)
{
	snprintf(d->dir, sizeof(d->dir), "/tmp/amora-test-XXXXXX");
	cr_assert_not_null(mkdtemp(d->dir));
	snprintf(d->sock, sizeof(d->sock), "%s/amora.sock", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/amorad.log", d->dir);
}

/* Start amorad on d->dir with extra options (NULL-terminated), wait until
 * its socket answers a client. `env` (may be NULL) is one NAME=value. */
static inline void proc_start_env(struct daemon *d, const char *env, ...)
{
	const char *argv[32] = { AMORAD_BIN, "--data-dir", d->dir };
	int argc = 3;
	va_list ap;

	va_start(ap, env);
	for (const char *a; argc < 31 && (a = va_arg(ap, const char *)) != NULL;)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	d->pid = fork();
	cr_assert(d->pid >= 0);
	if (d->pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 2);
		dup2(fd, 1);
		if (env)
			putenv((char *)env);
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	for (uint64_t t0 = proc_now_ms(); proc_now_ms() - t0 < 20000; usleep(10000)) {
		amora *db;

		if (amora_open(d->sock, &db) == AMORA_OK) {
			amora_close(db);
			return;
		}
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid)
			cr_assert_fail("amorad exited at start; see %s", d->log);
	}
	cr_assert_fail("amorad did not answer within 20 s");
}

#define proc_start(d, ...) proc_start_env(d, NULL, __VA_ARGS__)

/* Signal amorad and wait for it; returns its exit status (or -signal). */
static inline int proc_stop(struct daemon *d, int sig)
{
	int status;

	kill(d->pid, sig);
	cr_assert_eq(waitpid(d->pid, &status, 0), d->pid);
	d->pid = 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
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

	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
	}
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
