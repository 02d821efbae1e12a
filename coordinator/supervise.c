/*
 * supervise.c — amorad's shard processes: fork, watch, restart, stop.
 *
 * A shard is forked, never exec'd: it must inherit the writable mapping of
 * the sealed data segment. In the child, shardd_run() takes over and its
 * result is the exit status, which decides what happens next:
 *
 *   - exit 0 while amorad is stopping: done;
 *   - SHARDD_EXIT_CORRUPT (the log is corrupt inside), SHARDD_EXIT_NOMEM
 *     (not enough memory for its live data) or SHARDD_EXIT_START
 *     (it cannot start): restarting would fail the same way, so the shard
 *     is marked FAILED with that cause (shardd.h) and left down; reads and
 *     writes of its keys fail with AMORA_EFAILED naming the shard and the
 *     cause, and INFO shows it;
 *   - anything else (a crash, kill -9, an I/O error): restart. The first
 *     restart comes after RESTART_FIRST_MS; a shard that dies again within
 *     RESTART_STABLE_NS of its start waits twice as long as last time, up
 *     to RESTART_MAX_MS, so a shard that cannot start does not eat the
 *     machine.
 *
 * While a shard is down its descriptor says RESTARTING; readers go on
 * reading the table it left, writers' requests wait in its rings.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/amorad.h"
#include "shardd/log.h"
#include "shardd/shardd.h"
#include "shm/probe.h"

#define RESTART_FIRST_MS 10
#define RESTART_MAX_MS 5000
#define RESTART_STABLE_NS (10ull * 1000000000ull)

void amorad_begin_stop(struct amorad *a, const char *why)
{
	if (a->stopping)
		return;
	log_info("stopping (%s): shards drain and sync", why);
	a->stopping = true;
	a->stop_deadline_ns = shm_now_ns() + AMORAD_STOP_TIMEOUT_MS * 1000000ull;
	srv_close_listener(a);
	sup_stop_all(a);
}

/* Fork shard s. Returns 0, or -1 with the reason in err. */
static int start_shard(struct amorad *a, uint32_t s, char *err, size_t errlen)
{
	struct shardproc *p = &a->shards[s];
	pid_t pid;

	/* A shard that runs has no failure cause (only FAILED ones do, and
	 * those are never started again). */
	atomic_store_explicit(&shm_shard_at(&a->e.seg, s)->cause, SHM_FAIL_NONE,
			      memory_order_release);
	pid = fork();

	if (pid < 0) {
		snprintf(err, errlen, "cannot fork shard %02u: %s", s, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* The child needs none of amorad's other descriptors (its
		 * shared memory is mapped; stderr stays for the log). Closing
		 * the clients' sockets matters: a shard holding one would hide
		 * a client's hang-up from amorad. */
		sigset_t none;

		/* Keep only the socket on which amorad sends channels. */
		if (a->e.shard_sock[s][1] != SHARDD_SOCK_FD &&
		    dup2(a->e.shard_sock[s][1], SHARDD_SOCK_FD) != SHARDD_SOCK_FD)
			_exit(SHARDD_EXIT_CRASH);
		close_range(SHARDD_SOCK_FD + 1, ~0u, 0);
		/* amorad blocks these for its signalfd; a shard handles
		 * SIGTERM itself. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		_exit(shardd_run(&a->e, s));
	}
	p->pid = pid;
	p->started_ns = shm_now_ns();
	return 0;
}

int sup_start_all(struct amorad *a, char *err, size_t errlen)
{
	for (uint32_t s = 0; s < a->e.cfg.shards; s++)
		if (start_shard(a, s, err, errlen) != 0)
			return -1;
	return 0;
}

static void schedule_restart(struct amorad *a, uint32_t s, int status)
{
	struct shardproc *p = &a->shards[s];
	struct shm_shard *sh = shm_shard_at(&a->e.seg, s);
	uint64_t now = shm_now_ns();

	if (p->backoff_ms == 0 || now - p->started_ns > RESTART_STABLE_NS)
		p->backoff_ms = RESTART_FIRST_MS;
	else
		p->backoff_ms = p->backoff_ms * 2 > RESTART_MAX_MS ? RESTART_MAX_MS : p->backoff_ms * 2;
	p->restart_at_ns = now + (uint64_t)p->backoff_ms * 1000000ull;
	atomic_store(&sh->state, SHM_SHARD_RESTARTING);
	atomic_fetch_add(&sh->restarts, 1);
	AMORA_PROBE(shard__restart, s, status, p->backoff_ms);
	if (WIFSIGNALED(status))
		log_warn("shard %02u died (signal %d); restarting in %u ms", s, WTERMSIG(status),
			 p->backoff_ms);
	else
		log_warn("shard %02u exited with status %d; restarting in %u ms", s, WEXITSTATUS(status),
			 p->backoff_ms);
}

static void shard_exited(struct amorad *a, uint32_t s, int status)
{
	struct shardproc *p = &a->shards[s];
	struct shm_shard *sh = shm_shard_at(&a->e.seg, s);

	uint32_t cause = WIFEXITED(status) ? shardd_exit_cause(WEXITSTATUS(status)) : SHM_FAIL_NONE;

	p->pid = 0;
	if (cause != SHM_FAIL_NONE) {
		p->failed = true;
		/* Cause before state (shardd.h); the shard stored both already
		 * unless it died in between. */
		atomic_store_explicit(&sh->cause, cause, memory_order_release);
		atomic_store_explicit(&sh->state, SHM_SHARD_FAILED, memory_order_release);
		AMORA_PROBE(shard__fail, s, cause);
		log_error("shard %02u stopped: %s (see above); not restarting it", s,
			  shm_fail_cause_str(cause));
		return;
	}
	if (a->stopping) {
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			log_error("shard %02u ended with status %d while stopping", s, status);
			a->exit_code = 1;
		}
		return;
	}
	schedule_restart(a, s, status);
}

void sup_reap(struct amorad *a)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (uint32_t s = 0; s < a->e.cfg.shards; s++) {
			if (a->shards[s].pid == pid) {
				shard_exited(a, s, status);
				break;
			}
		}
	}
}

void sup_tick(struct amorad *a)
{
	uint64_t now = shm_now_ns();
	char err[128];

	if (a->stopping)
		return;
	for (uint32_t s = 0; s < a->e.cfg.shards; s++) {
		struct shardproc *p = &a->shards[s];

		if (p->pid == 0 && !p->failed && now >= p->restart_at_ns) {
			log_info("restarting shard %02u", s);
			/* tried again at the next tick */
			if (start_shard(a, s, err, sizeof(err)) != 0)
				log_error("%s", err);
		}
	}
}

void sup_stop_all(struct amorad *a)
{
	for (uint32_t s = 0; s < a->e.cfg.shards; s++)
		if (a->shards[s].pid > 0)
			kill(a->shards[s].pid, SIGTERM);
}

void sup_kill_all(struct amorad *a)
{
	for (uint32_t s = 0; s < a->e.cfg.shards; s++) {
		if (a->shards[s].pid > 0) {
			log_error("shard %02u did not stop in time; killing it", s);
			kill(a->shards[s].pid, SIGKILL);
		}
	}
}

bool sup_all_exited(const struct amorad *a)
{
	for (uint32_t s = 0; s < a->e.cfg.shards; s++)
		if (a->shards[s].pid > 0)
			return false;
	return true;
}

bool sup_running(const struct amorad *a, uint32_t s)
{
	return a->shards[s].pid > 0;
}
