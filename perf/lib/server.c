/*
 * server.c — amora-bench's amorad (perf/lib/server.h).
 */
#include "perf/lib/server.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf/lib/fail.h"
#include "perf/lib/files.h"
#include "shm/clock.h"
#include "tests/daemon.h"

#define SERVER_OPEN_TIMEOUT_NS 10000000000ull
#define SERVER_STOP_TIMEOUT_NS 30000000000ull
#define SERVER_KILL_AFTER_NS 10000000000ull
#define SERVER_LOG_LINES 25

static char server_bin[PATH_MAX];
static const char *server_memory, *server_shards, *server_log_dir;
static struct daemon server;
static int server_starts;

/* ../amorad next to this program, into out if it is executable. */
static void server_find_beside(char *out, size_t cap)
{
	char self[PATH_MAX - 16], alt[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return;
	self[n] = 0;
	char *s = strrchr(self, '/');
	if (!s)
		return;
	*s = 0;
	snprintf(alt, sizeof(alt), "%s/../amorad", self);
	if (access(alt, X_OK) == 0)
		snprintf(out, cap, "%s", alt);
}

const char *server_find(void)
{
	const char *e = getenv("AMORAD");

	if (e && *e) {
		snprintf(server_bin, sizeof(server_bin), "%s", e);
	} else {
		snprintf(server_bin, sizeof(server_bin), "%s", DAEMON_AMORAD);
		if (access(server_bin, X_OK) != 0) /* not run from the repository root */
			server_find_beside(server_bin, sizeof(server_bin));
	}
	if (access(server_bin, X_OK) != 0)
		bench_die("cannot run amorad at %s (%s); build it (make) or set AMORAD", server_bin,
			  strerror(errno));
	if (server_bin[0] != '/') {
		char abs[PATH_MAX];
		if (realpath(server_bin, abs))
			snprintf(server_bin, sizeof(server_bin), "%s", abs);
	}
	return server_bin;
}

const char *server_sorted_index(void)
{
	const char *e = getenv("AMORA_SORTED_INDEX");

	if (e == NULL || *e == 0)
		return "on";
	if (strcmp(e, "on") != 0 && strcmp(e, "off") != 0)
		bench_die("AMORA_SORTED_INDEX=%s: must be on or off", e);
	return e;
}

void server_config(const char *memory, const char *shards, const char *log_dir)
{
	server_memory = memory;
	server_shards = shards;
	server_log_dir = log_dir;
}

static void server_log_show(const char *title)
{
	fprintf(stderr, "---- %s (%s) ----\n", title, server.log);
	files_log_tail(server.log, SERVER_LOG_LINES, stderr);
}

void server_start(const char *dir, const char *sync_mode)
{
	server_start_index(dir, sync_mode, server_sorted_index());
}

void server_start_index(const char *dir, const char *sync_mode, const char *ix)
{
	const char *args[] = { "--sync", sync_mode, "--memory", server_memory, "--sorted-index", ix,
			       server_shards ? "--shards" : NULL, server_shards, NULL };
	char log[PATH_MAX];

	snprintf(log, sizeof(log), "%s/amorad-%d.log", server_log_dir, ++server_starts);
	if (daemon_paths(&server, dir, log) != 0)
		bench_die("amorad's data dir or log path is too long: %s", dir);
	if (daemon_start(&server, server_bin, NULL, args) != DAEMON_OK)
		bench_die("fork: %s", strerror(errno));
}

/* amorad has exited (server.status): show its log and die. */
static void server_died(void) __attribute__((noreturn));
static void server_died(void)
{
	int st = server.status;

	fflush(stdout);
	server_log_show("amorad's log");
	if (WIFEXITED(st))
		bench_die("amorad exited with status %d", WEXITSTATUS(st));
	bench_die("amorad was killed by signal %d", WTERMSIG(st));
}

pid_t server_pid(void)
{
	return server.pid > 0 ? server.pid : 0;
}

void server_check(void)
{
	if (daemon_exited(&server))
		server_died();
}

amora *server_open(uint64_t poll_ns)
{
	amora *db = NULL;
	int rc;

	switch (daemon_open(&server, SERVER_OPEN_TIMEOUT_NS, poll_ns, &db, &rc)) {
	case DAEMON_OK:
		return db;
	case DAEMON_EXITED:
		server_died();
	default:
		bench_die("amora_open(%s) still failing after 10 s: %s", server.sock, amora_strerror(rc));
	}
}

double server_stop(void)
{
	uint64_t t0 = shm_now_ns();
	enum daemon_result r;

	if (server.pid <= 0)
		bench_die("server_stop: no amorad running");
	r = daemon_stop(&server, SIGTERM, SERVER_STOP_TIMEOUT_NS);
	if (r == DAEMON_TIMEOUT)
		bench_die("amorad did not exit within 30 s of SIGTERM");
	if (r != DAEMON_OK)
		bench_die("waitpid(amorad): %s", strerror(errno));
	double ms = (shm_now_ns() - t0) / 1e6;
	int st = server.status;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		server_log_show("amorad's log");
		if (WIFEXITED(st))
			bench_die("amorad exited with status %d after SIGTERM (expected 0)", WEXITSTATUS(st));
		bench_die("amorad died of signal %d after SIGTERM", WTERMSIG(st));
	}
	return ms;
}

void server_kill(void)
{
	if (server.pid <= 0)
		return;
	if (daemon_stop(&server, SIGTERM, SERVER_KILL_AFTER_NS) != DAEMON_OK) {
		fprintf(stderr, "%s: amorad %d ignored SIGTERM for 10 s, killing it\n",
			program_invocation_short_name, (int)server.pid);
		daemon_kill(&server);
	}
}

void server_explain(void)
{
	if (server.pid <= 0)
		return;
	if (daemon_exited(&server)) {
		/* amorad stops only on SIGTERM/SIGINT/SHUTDOWN, and we sent none. */
		int st = server.status;
		if (WIFEXITED(st))
			fprintf(stderr, "%s: amorad had already exited with status %d although "
					"amora-bench never stopped it: something else stopped it (a pkill/killall "
					"of amorad on this machine, or SHUTDOWN on its socket?)\n",
				program_invocation_short_name, WEXITSTATUS(st));
		else
			fprintf(stderr, "%s: amorad had died of signal %d\n", program_invocation_short_name,
				WTERMSIG(st));
	}
	fprintf(stderr, "---- last lines of amorad's log (%s) ----\n", server.log);
	files_log_tail(server.log, SERVER_LOG_LINES, stderr);
	fprintf(stderr, "----\n");
}
