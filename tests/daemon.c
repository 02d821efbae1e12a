/*
 * daemon.c — running a real amorad as a child process (tests/daemon.h).
 */
#include "tests/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"

#define DAEMON_MAX_ARGS 28
#define DAEMON_STOP_POLL_NS 500000ull

int daemon_paths(struct daemon *d, const char *dir, const char *log)
{
	if (strlen(dir) >= sizeof(d->dir) || strlen(dir) + sizeof("/amora.sock") > sizeof(d->sock) ||
	    strlen(log) >= sizeof(d->log))
		return -1;
	snprintf(d->dir, sizeof(d->dir), "%s", dir);
	snprintf(d->sock, sizeof(d->sock), "%s/amora.sock", dir);
	snprintf(d->log, sizeof(d->log), "%s", log);
	d->pid = 0;
	d->status = 0;
	return 0;
}

/* In the child: die with the parent, log to d->log, exec. Never returns. */
static void daemon_child_exec(const struct daemon *d, pid_t parent, const char *env,
			      const char *const *argv)
{
	int fd;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	if (env)
		putenv((char *)env);
	execv(argv[0], (char *const *)argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

enum daemon_result daemon_start(struct daemon *d, const char *bin, const char *env,
				const char *const *args)
{
	const char *argv[DAEMON_MAX_ARGS + 4] = { bin, "--data-dir", d->dir };
	int argc = 3;
	pid_t parent = getpid(), pid;

	for (; argc < DAEMON_MAX_ARGS + 3 && args && args[argc - 3]; argc++)
		argv[argc] = args[argc - 3];
	argv[argc] = NULL;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return DAEMON_ESYS;
	if (pid == 0)
		daemon_child_exec(d, parent, env, argv);
	d->pid = pid;
	d->status = 0;
	return DAEMON_OK;
}

int daemon_exited(struct daemon *d)
{
	int status;

	if (d->pid <= 0 || waitpid(d->pid, &status, WNOHANG) != d->pid)
		return 0;
	d->pid = 0;
	d->status = status;
	return 1;
}

enum daemon_result daemon_open(struct daemon *d, uint64_t timeout_ns, uint64_t poll_ns, amora **db,
			       int *open_rc)
{
	uint64_t t0 = shm_now_ns();

	for (;;) {
		int rc = amora_open(d->sock, db);

		if (open_rc)
			*open_rc = rc;
		if (rc == AMORA_OK)
			return DAEMON_OK;
		if (daemon_exited(d))
			return DAEMON_EXITED;
		if (shm_now_ns() - t0 > timeout_ns)
			return DAEMON_TIMEOUT;
		struct timespec ts = { (time_t)(poll_ns / 1000000000ull), (long)(poll_ns % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
}

enum daemon_result daemon_stop(struct daemon *d, int sig, uint64_t timeout_ns)
{
	uint64_t t0 = shm_now_ns();
	struct timespec ts = { 0, (long)DAEMON_STOP_POLL_NS };

	if (d->pid <= 0) {
		errno = ECHILD;
		return DAEMON_ESYS;
	}
	kill(d->pid, sig);
	for (;;) {
		int status;
		pid_t r = waitpid(d->pid, &status, WNOHANG);

		if (r == d->pid) {
			d->pid = 0;
			d->status = status;
			return DAEMON_OK;
		}
		if (r < 0)
			return DAEMON_ESYS;
		if (shm_now_ns() - t0 > timeout_ns)
			return DAEMON_TIMEOUT;
		nanosleep(&ts, NULL);
	}
}

void daemon_kill(struct daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &d->status, 0);
	d->pid = 0;
}

int daemon_exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}
