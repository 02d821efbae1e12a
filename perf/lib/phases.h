/*
 * phases.h — amora-bench's single-client phases, each written once and
 * run on any engine (perf/lib/engine.h) over the workload
 * (perf/lib/workload.h). Each returns the phase's figure; any wrong value
 * or store error dies. The phases expect the order amora-bench runs them
 * in: buffered set (new keys), buffered update, sync set, get hit, get
 * miss, delete, then the scans (full scan, seek + 10) and the batches on
 * the n keys left; always on a fresh store. The random-order buffered set runs alone on a
 * fresh store of its own, the tagged load and its seeks on another.
 */
#ifndef AMORA_PERF_PHASES_H
#define AMORA_PERF_PHASES_H

#include <stdint.h>

#include "perf/lib/engine.h"
#include "perf/lib/figures.h"
#include "perf/lib/workload.h"

#define PHASE_SAMPLE_MASK 63 /* reads: every 64th op is timed */
#define PHASE_SEEK_LIMIT 10  /* seek + 10: entries a seek reads */
#define PHASE_SEEK_PREFIX 14 /* seek + 10: bytes of a key its prefix takes */
/* batch B: the value id of a batch's set of key i is PHASE_BATCH_ID0 +
 * B * PHASE_BATCH_ID_STEP + i (no key's own, no tagged key's: i < 10^8) */
#define PHASE_BATCH_ID0 300000000000ull
#define PHASE_BATCH_ID_STEP 100000000ull
/* batch B: every 63rd set is checked; 63 is prime to 10, 100 and 1000, so
 * the sample meets every position in a batch (64 would meet only even
 * ones) */
#define PHASE_BATCH_STRIDE 63

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

/* max(1, ops / b) batches of b sets each with put_batch (b <= n), every
 * batch timed (ops = sets/s: a batch of b counts b). Set k of the phase
 * is of existing key w->hit_idx[k % n] (random order; a batch's keys are
 * distinct) with the value of id PHASE_BATCH_ID0 + b * PHASE_BATCH_ID_STEP
 * + key, not its own, made before the clock starts. Then (not timed)
 * every PHASE_BATCH_STRIDE-th set and those of the last batch are read
 * back and checked, the keys are set back to their own values
 * (put_buffered, one flush) and the same sample checked again: the store
 * holds the n keys with their own values as before. */
struct fig phase_batch(struct engine *e, const struct workload *w, uint64_t b, uint64_t ops);

/* One scan of every key in key order (the store must hold exactly the n
 * keys), each entry's key and value copied out; every 64th checked, and
 * the count. ops = entries/s; no latency (p50 = p99 = -1). */
struct fig phase_scan_all(struct engine *e, const struct workload *w);

/* `ops` seeks: op j scans the prefix of PHASE_SEEK_PREFIX bytes of key
 * w->hit_idx[j % n] with a limit of PHASE_SEEK_LIMIT (the prefix matches
 * up to 100 keys: the limit ends the scan), copying each entry's key and
 * value out; every op timed (open, the entries, close), then its keys and
 * values checked (not timed). The store must hold exactly the n keys. */
struct fig phase_seek_prefix(struct engine *e, const struct workload *w, uint64_t ops);

/* The w->t tagged keys (workload_make_tags) in key order with
 * put_buffered, one flush at the end; no latency. */
struct fig phase_tag_load(struct engine *e, const struct workload *w);

/* `ops` seeks as phase_seek_prefix, op j on the prefix "{uNNNNNN}:" of
 * tag w->hit_idx[j % n] % w->tags (a whole hash tag: amora scans that
 * tag's one shard); on a store holding the tagged keys. */
struct fig phase_seek_tag(struct engine *e, const struct workload *w, uint64_t ops);

#endif
