/*
 * report.h — amora-bench's figures of every run, and the report printed
 * from their medians: the table (one row a phase, amora | LMDB | ratio;
 * under the sync set and delete rows their CPU per op), the notes under
 * it, recovery, RAM per key, and the targets (printed, not enforced); the
 * same figures, and each run's, as JSON (amora-bench --json FILE, drawn
 * by perf/plot).
 */
#ifndef AMORA_PERF_REPORT_H
#define AMORA_PERF_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "perf/lib/figures.h"
#include "perf/lib/usage.h"
#include "perf/lib/workload.h"

/* The table's rows, in print order; R_ALWAYS is below the line. The
 * index-off rows (amorad --sorted-index off) have no LMDB side; a row
 * not run on a side (the scans when amora runs without its index) has
 * ops = p50 = p99 = -1 there. */
enum report_row {
	R_BUF, R_BUF_RAND, R_BUF_NOIX, R_BUF_RAND_NOIX, R_BUF_END, R_SYNC, R_BATCH10, R_BATCH100,
	R_BATCH1000, R_HIT, R_MISS, R_SCAN, R_SEEK, R_SEEK_TAG, R_DEL, R_MIX_R1, R_MIX_R2, R_MIX_W,
	R_ALWAYS, NROWS
};
/* A batch row's sets per batch (R_BATCH10: 10, R_BATCH100: 100,
 * R_BATCH1000: 1000); 0 for any other row. */
static inline uint64_t report_batch_size(int row)
{
	return row == R_BATCH10 ? 10 : row == R_BATCH100 ? 100 : row == R_BATCH1000 ? 1000 : 0;
}
enum report_side { AM, LM }; /* amora, LMDB */
enum report_cpu { C_SYNC, C_DEL, NCPU };   /* the rows with CPU per op */
/* The N-key loads RAM is measured after (the index-off ones: amora only) */
enum report_load { L_SORTED, L_RANDOM, L_SORTED_NOIX, L_RANDOM_NOIX, NLOADS };

#define REPORT_RAM_TARGET 160 /* bytes of RAM per key, amora */

/* RAM per key after a load of N keys, in bytes; -1: none or unknown. */
struct report_mem {
	double used;     /* amora: memory_used / N; LMDB: its data file's pages / N
			  * (struct engine_mem) */
	double records;  /* amora: record_bytes / N; LMDB: -1 */
	double resident; /* amora: the pages of amorad's data segment / N
			  * (usage_memfd_bytes); LMDB: -1 */
};

/* Filled run by run (index: the run); times in ms, sizes in MiB. */
struct results {
	struct fig row[NROWS][2][FIG_MAXRUNS];
	double rec_ms[FIG_MAXRUNS];      /* restart until the last key is readable */
	double rec_open_ms[FIG_MAXRUNS]; /* restart until amora_open succeeded */
	double stop_ms[FIG_MAXRUNS];     /* SIGTERM until exit 0 */
	double start_ms[FIG_MAXRUNS];    /* start on an empty dir until amora_open */
	double lmdb_reopen_ms[FIG_MAXRUNS];
	double data_mb[FIG_MAXRUNS], lmdb_mb[FIG_MAXRUNS];
	uint64_t rec_keys[FIG_MAXRUNS];  /* amora_stats' keys after recovery */
	/* CPU per op in ns (self: this process; server: amorad; kids: its
	 * shard processes; LMDB: self only) */
	struct usage_cpu cpu[NCPU][2][FIG_MAXRUNS];
	struct report_mem mem[NLOADS][2][FIG_MAXRUNS];
	double run_s[FIG_MAXRUNS];       /* the whole run, in s */
	uint64_t seeks;                  /* ops of each seek + 10 row */
	uint64_t batch_ops;              /* sets each batch row asks for (phase_batch's ops) */
};

/* What the JSON says of the setup besides the figures (strings may be
 * NULL: JSON null). */
struct report_setup {
	const char *amorad, *lmdb, *memory, *fs;
	const char *sorted_index; /* the default rows' --sorted-index: "on" or "off" */
	unsigned shards;
	double load_start, load_end; /* 1-minute load averages, -1: unknown */
};

/* Prints the report of `runs` runs to stdout. mixed_seconds, clock_ns
 * (the cost of one clock read) and setup's shards appear in its text. */
void report_print(const struct results *r, int runs, const struct workload *w, int mixed_seconds,
		  double clock_ns, const struct report_setup *setup);

/* Writes the figures report_print prints as one JSON object (and a
 * newline) to f:
 *   {"tool":"amora-bench","format":1,"date":"<UTC ISO 8601>","runs":R,
 *    "keys":N,"sync_keys":S,"always_keys":A,"key_bytes":16,"value_bytes":100,
 *    "mixed_seconds":M,"clock_ns":C,"amorad":..,"shards":..,"memory":..,
 *    "lmdb":..,"fs":..,"cpus":..,"load_start":..,"load_end":..,
 *    "run_seconds":[..],
 *    "sorted_index":"on"|"off","tagged_keys":T,"seeks":K,"batch_ops":B,
 *    "phases":[{"id":"sync_set","label":"sync set","name":"<the table's row>",
 *               "durability":"periodic"|"always","sorted_index":"on"|"off",
 *               ("ops_per_batch":10,"batches":.. only in batch_10, batch_100
 *                and batch_1000: ops count sets, latencies are per batch)
 *               "amora":{"ops":..,"p50_ns":..,"p99_ns":..,
 *                        "cpu_ns_per_op":{"client":..,"shards":..,"amorad":..},
 *                        "runs":[{"ops":..,"p50_ns":..,"p99_ns":..,
 *                                 "cpu_ns_per_op":{..}},..]},
 *               "lmdb":{same},"ratio":amora/lmdb ops}, .. one per table row],
 *    "recovery":{"ms":..,"open_ms":..,"keys":..,"stop_ms":..,"start_ms":..,
 *                "data_mib":..,"lmdb_reopen_ms":..,"lmdb_mib":..,
 *                "runs":{"ms":[..],"open_ms":[..],...same keys}},
 *    "ram_per_key":{"target_bytes":160,
 *                   "sorted":{"amora":{"memory_used":..,"record_bytes":..,
 *                                      "segment_resident":..},
 *                             "lmdb":{"bytes":..}},
 *                   "random":{same},"sorted_index_off":{same},
 *                   "random_index_off":{same},
 *                   "runs":[{"sorted":{..},"random":{..},..},..]},
 *    "targets":[{"target":"..","figure":"..","met":true|false},..]}
 * Every top-level figure is the median over the runs (as printed); ops in
 * ops/s, latencies and CPU in ns, RAM in bytes per key, null where a phase
 * has none, it is unknown or the side did not run it (the index-off
 * rows' and RAM lines' LMDB side). "cpu_ns_per_op" is only in the sync_set and
 * delete phases (LMDB: client only, shards and amorad null). Returns 0,
 * or -1 with errno when writing failed. */
int report_json(FILE *f, const struct results *r, int runs, const struct workload *w, int mixed_seconds,
		double clock_ns, const struct report_setup *setup);

#endif
