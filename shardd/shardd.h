/*
 * shardd.h — the shard process: the only writer of one shard.
 *
 * amorad forks one per shard from its main thread and calls shardd_run()
 * in the child, which never returns to amorad's code: its result is the
 * process's exit status, which tells the supervisor what to do next.
 */
#ifndef AMORA_SHARDD_H
#define AMORA_SHARDD_H

#include <stdint.h>

#include "shardd/engine.h"

/* The shard's end of its socket to amorad, on which channel fds arrive. */
#define SHARDD_SOCK_FD 3

enum shardd_exit {
	SHARDD_EXIT_OK = 0,      /* stopped on request, log synced */
	SHARDD_EXIT_CRASH = 1,   /* unexpected failure: restart it */
	SHARDD_EXIT_IO = 2,      /* log write or sync failed: restart, it recovers from disk */
	SHARDD_EXIT_CORRUPT = 3, /* corruption inside the log: do not restart */
	SHARDD_EXIT_ORPHAN = 4,  /* amorad was gone before the shard started */
	SHARDD_EXIT_NOMEM = 5,   /* not enough shared memory to rebuild: do not restart */
	SHARDD_EXIT_START = 6,   /* cannot start (its directory, its log files, memory of
				  * its own) in a way a restart would not fix: do not
				  * restart */
};

/* The three "do not restart" exits leave the shard FAILED with a cause
 * (struct shm_shard.cause) clients and INFO report: SHARDD_EXIT_CORRUPT is
 * SHM_FAIL_CORRUPT_LOG, SHARDD_EXIT_NOMEM SHM_FAIL_NOMEM, SHARDD_EXIT_START
 * SHM_FAIL_START. Both the shard (before it exits) and amorad (from the
 * exit status) store the cause, then the state, with release ordering, so
 * whoever loads the state FAILED with acquire ordering finds its cause. */

/* The failure cause of exit status `code`, SHM_FAIL_NONE for an exit
 * after which the shard is restarted (or stops with amorad). */
static inline uint32_t shardd_exit_cause(int code)
{
	switch (code) {
	case SHARDD_EXIT_CORRUPT: return SHM_FAIL_CORRUPT_LOG;
	case SHARDD_EXIT_NOMEM: return SHM_FAIL_NOMEM;
	case SHARDD_EXIT_START: return SHM_FAIL_START;
	}
	return SHM_FAIL_NONE;
}

/* Adopt shard `id`'s table and correct it from its log (recover.h), then
 * serve requests until SIGTERM/SIGINT (then drain, sync and return
 * SHARDD_EXIT_OK) or a fatal error. */
int shardd_run(struct engine *e, uint32_t id);

#endif
