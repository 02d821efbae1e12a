/*
 * phases.h — amora-bench's single-client phases, each written once and
 * run on any engine (perf/lib/engine.h) over the workload
 * (perf/lib/workload.h). Each returns the phase's figure; any wrong value
 * or store error dies. The phases expect the order amora-bench runs them
 * in: buffered set (new keys), buffered update, sync set, get hit, get
 * miss, delete; always on a fresh store. The random-order buffered set
 * runs alone on a fresh store of its own.
 */
#ifndef AMORA_PERF_PHASES_H
#define AMORA_PERF_PHASES_H

#include <stdint.h>

#include "perf/lib/engine.h"
#include "perf/lib/figures.h"
#include "perf/lib/workload.h"

#define PHASE_SAMPLE_MASK 63 /* reads: every 64th op is timed */

/* The n keys in key order with put_buffered; flush every `batch` puts
 * and at the end (0: only at the end). One latency sample per flush: the
 * batch's puts and its flush. */
struct fig phase_buffered(struct engine *e, const struct workload *w, uint64_t batch);

/* The n keys in the random order of get hit (w->hit_keys, their values
 * w->hit_vals: both read in sequence) with put_buffered, one flush at the
 * end; no latency (p50 = p99 = -1). */
struct fig phase_buffered_random(struct engine *e, const struct workload *w);

/* s new keys (family 'a', random order) with put; every op timed. */
struct fig phase_sync_set(struct engine *e, const struct workload *w);

/* n gets of existing keys in random order; every 64th timed alone and
 * its value checked, the others' length checked. */
struct fig phase_hits(struct engine *e, const struct workload *w);

/* n gets of missing keys; every 64th timed. */
struct fig phase_misses(struct engine *e, const struct workload *w);

/* dels of the s sync-set keys (reverse order of the sets), every op
 * timed; then every 64th of them must be absent (not timed). */
struct fig phase_dels(struct engine *e, const struct workload *w);

/* puts of the first a keys of the random order, existing keys with
 * their own values; every op timed (for a store opened durable). */
struct fig phase_always(struct engine *e, const struct workload *w);

#endif
