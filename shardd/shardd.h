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

#include "engine.h"

/* The shard's end of its socket to amorad, on which channel fds arrive. */
#define SHARDD_SOCK_FD 3

enum shardd_exit {
	SHARDD_EXIT_OK = 0,      /* stopped on request, log synced */
	SHARDD_EXIT_CRASH = 1,   /* unexpected failure: restart it */
	SHARDD_EXIT_IO = 2,      /* log write or sync failed: restart, it recovers from disk */
	SHARDD_EXIT_CORRUPT = 3, /* corruption inside the log: do not restart */
	SHARDD_EXIT_ORPHAN = 4,  /* amorad was gone before the shard started */
	SHARDD_EXIT_NOMEM = 5,   /* not enough shared memory to rebuild: do not restart */
};

/* Recover shard `id` from its log into a fresh table, publish it, then
 * serve requests until SIGTERM/SIGINT (then drain, sync and return
 * SHARDD_EXIT_OK) or a fatal error. */
int shardd_run(struct engine *e, uint32_t id);

#endif
