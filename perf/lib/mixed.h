/*
 * mixed.h — amora-bench's 2 readers + 1 writer: three processes on one
 * store for a fixed time.
 *
 * Each forked process attaches its own engine (struct engine_kind), says
 * it is ready, and all three start at once. Readers: gets of existing
 * keys in random order, every 64th timed and its value checked. Writer:
 * synchronous puts of existing keys with their own values (so the
 * readers' checks stay valid), every op timed. The children die with
 * the parent (PR_SET_PDEATHSIG); a child that fails reports its message
 * through shared memory and the phase dies in the parent.
 */
#ifndef AMORA_PERF_MIXED_H
#define AMORA_PERF_MIXED_H

#include "perf/lib/engine.h"
#include "perf/lib/figures.h"
#include "perf/lib/workload.h"

#define MIXED_ROLES 3 /* reader 1, reader 2, writer */

/* Runs the three roles on the store in dir for `seconds`; out[role] gets
 * each role's figure. The caller must not hold an engine of the kind
 * that cannot be shared across fork (LMDB) on dir meanwhile. */
void mixed_run(const struct engine_kind *kind, const char *dir, const struct workload *w,
	       int seconds, struct fig out[MIXED_ROLES]);

/* SIGKILLs and reaps the children of a mixed_run in progress (for the
 * parent's exit path); nothing when none runs. */
void mixed_kill(void);

#endif
