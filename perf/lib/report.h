/*
 * report.h — amora-bench's figures of every run, and the report printed
 * from their medians: the table (one row a phase, amora | LMDB | ratio),
 * the notes under it, recovery, and the targets (printed, not enforced).
 */
#ifndef AMORA_PERF_REPORT_H
#define AMORA_PERF_REPORT_H

#include <stdint.h>

#include "perf/lib/figures.h"
#include "perf/lib/workload.h"

/* The table's rows, in print order; R_ALWAYS is below the line. */
enum report_row {
	R_BUF, R_BUF_END, R_SYNC, R_HIT, R_MISS, R_DEL, R_MIX_R1, R_MIX_R2, R_MIX_W, R_ALWAYS, NROWS
};
enum report_side { AM, LM }; /* amora, LMDB */

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
};

/* Prints the report of `runs` runs to stdout. mixed_seconds and clock_ns
 * (the cost of one clock read) appear in its text. */
void report_print(const struct results *r, int runs, const struct workload *w, int mixed_seconds,
		  double clock_ns);

#endif
