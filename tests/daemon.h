/*
 * daemon.h — running a real amorad as a child process: start it on a data
 * dir, wait until its socket answers, stop it. Plain C (no Criterion): the
 * tests wrap it with their asserts (tests/proc.h), the benchmarks with
 * their failure reports (perf/lib/server.h).
 *
 * A struct daemon names one amorad: its data dir, socket (dir/amora.sock)
 * and log file, and the pid of the running process (0 when none runs).
 * The caller owns the struct and the files; these functions only fork,
 * signal and reap the process. Every amorad started here gets
 * PR_SET_PDEATHSIG (SIGKILL), so it dies with the thread that started it.
 * Not thread-safe: one thread drives a given struct daemon.
 */
#ifndef AMORA_TESTS_DAEMON_H
#define AMORA_TESTS_DAEMON_H

#include <stdint.h>
#include <sys/types.h>

#include "libclient/amora.h"

/* The amorad of this build, relative to the repository root. */
#define DAEMON_AMORAD AMORA_BUILD_DIR "/amorad"

struct daemon {
	char dir[256];  /* --data-dir */
	char sock[300]; /* dir/amora.sock */
	char log[300];  /* amorad's stdout and stderr, appended */
	pid_t pid;      /* the running amorad, 0 when none */
	int status;     /* its wait status once reaped (pid back to 0) */
};

enum daemon_result {
	DAEMON_OK = 0,
	DAEMON_EXITED,  /* amorad exited first: d->status says how, d->pid is 0 */
	DAEMON_TIMEOUT, /* the time ran out; amorad still runs */
	DAEMON_ESYS,    /* fork or waitpid failed: errno says why */
};

/* Fills d's paths for an amorad on `dir` logging to `log`; d->pid = 0.
 * Returns 0, or -1 when a path does not fit (d unchanged then). */
int daemon_paths(struct daemon *d, const char *dir, const char *log);

/* Forks and execs `bin --data-dir d->dir args...` (args NULL-terminated,
 * at most 28) with stdout and stderr appended to d->log; `env` (NULL or
 * one NAME=value) is added to the child's environment. Does not wait for
 * the socket. Returns DAEMON_OK with d->pid set, or DAEMON_ESYS. A failed
 * exec shows in d->log ("exec ...") and as exit status 127. */
enum daemon_result daemon_start(struct daemon *d, const char *bin, const char *env,
				const char *const *args);

/* Attaches to d's amorad: tries amora_open(d->sock) every poll_ns until it
 * succeeds (DAEMON_OK, *db is the caller's to close), amorad exits
 * (DAEMON_EXITED, reaped) or timeout_ns has passed (DAEMON_TIMEOUT). When
 * open_rc is not NULL it gets the last amora_open code. */
enum daemon_result daemon_open(struct daemon *d, uint64_t timeout_ns, uint64_t poll_ns, amora **db,
			       int *open_rc);

/* Reaps d's amorad if it has exited: returns 1 (d->status, d->pid = 0),
 * else 0 (also when none runs). Never blocks. */
int daemon_exited(struct daemon *d);

/* Sends `sig` and waits up to timeout_ns for amorad to exit: DAEMON_OK
 * (d->status, d->pid = 0), DAEMON_TIMEOUT (still running, d->pid kept) or
 * DAEMON_ESYS (no amorad runs, or waitpid failed). */
enum daemon_result daemon_stop(struct daemon *d, int sig, uint64_t timeout_ns);

/* SIGKILL and reap, if one runs; d->pid = 0. */
void daemon_kill(struct daemon *d);

/* A wait status as one number: the exit code, or -signal. */
int daemon_exit_code(int status);

#endif
