/*
 * report.c — amora-bench's report (perf/lib/report.h).
 */
#include "perf/lib/report.h"

#include <stdio.h>

#define REPORT_NAME 96

static struct fig report_median(const struct results *r, int runs, int row, int side)
{
	double o[FIG_MAXRUNS], a[FIG_MAXRUNS], b[FIG_MAXRUNS];

	for (int k = 0; k < runs; k++) {
		o[k] = r->row[row][side][k].ops;
		a[k] = r->row[row][side][k].p50;
		b[k] = r->row[row][side][k].p99;
	}
	return (struct fig){ fig_median(o, runs), fig_median(a, runs), fig_median(b, runs) };
}

static const char *report_met(int ok)
{
	return ok ? "met" : "MISSED";
}

static void report_names(char names[NROWS][REPORT_NAME], const struct workload *w, int mixed_seconds)
{
	char nb[32], sb[32], ab[32];

	fig_fmt_count(nb, w->n), fig_fmt_count(sb, w->s), fig_fmt_count(ab, w->a);
	snprintf(names[R_BUF], REPORT_NAME, "buffered set, %s new keys, 1 flush at end", nb);
	snprintf(names[R_BUF_END], REPORT_NAME, "buffered update, %s keys, flush per 1024", nb);
	snprintf(names[R_SYNC], REPORT_NAME, "sync set, %s new keys", sb);
	snprintf(names[R_HIT], REPORT_NAME, "get hit, %s random", nb);
	snprintf(names[R_MISS], REPORT_NAME, "get miss, %s random", nb);
	snprintf(names[R_DEL], REPORT_NAME, "delete (sync), %s keys", sb);
	snprintf(names[R_MIX_R1], REPORT_NAME, "2R+1W %d s: reader 1 (get)", mixed_seconds);
	snprintf(names[R_MIX_R2], REPORT_NAME, "2R+1W %d s: reader 2 (get)", mixed_seconds);
	snprintf(names[R_MIX_W], REPORT_NAME, "2R+1W %d s: writer (sync set)", mixed_seconds);
	snprintf(names[R_ALWAYS], REPORT_NAME, "sync set, --sync always, %s keys", ab);
}

/* The table; m gets the medians. */
static void report_table(const struct results *r, int runs, const struct workload *w,
			 int mixed_seconds, struct fig m[NROWS][2])
{
	static const char dash[] = "----------------------------------------------------------------";
	char names[NROWS][REPORT_NAME], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];

	report_names(names, w, mixed_seconds);
	printf("\n%-46s | %11s %9s %9s | %11s %9s %9s | %7s\n", "phase (median of runs)", "amora ops/s",
	       "p50", "p99", "lmdb ops/s", "p50", "p99", "ratio");
	printf("%.46s-+-%.31s-+-%.31s-+-%.7s\n", dash, dash, dash, dash);
	for (int row = 0; row < NROWS; row++) {
		m[row][AM] = report_median(r, runs, row, AM);
		m[row][LM] = report_median(r, runs, row, LM);
		if (row == R_ALWAYS)
			printf("%.46s-+-%.31s-+-%.31s-+-%.7s\n", dash, dash, dash, dash);
		printf("%-46s | %11s %9s %9s | %11s %9s %9s | %6.2fx\n", names[row],
		       fig_fmt_ops(b1, m[row][AM].ops), fig_fmt_lat(b2, m[row][AM].p50),
		       fig_fmt_lat(b3, m[row][AM].p99), fig_fmt_ops(b4, m[row][LM].ops),
		       fig_fmt_lat(b5, m[row][LM].p50), fig_fmt_lat(b6, m[row][LM].p99),
		       m[row][LM].ops > 0 ? m[row][AM].ops / m[row][LM].ops : 0.0);
	}
}

static void report_targets(struct fig m[NROWS][2], double rec, const char *nb)
{
	double rh = m[R_HIT][AM].ops / m[R_HIT][LM].ops, rm = m[R_MISS][AM].ops / m[R_MISS][LM].ops;
	char t1[64], t2[64], t3[64], t4[64], t5[64];

	snprintf(t1, sizeof(t1), "hit %.2fx, miss %.2fx", rh, rm);
	snprintf(t2, sizeof(t2), "%.2f M/s", m[R_BUF][AM].ops / 1e6);
	snprintf(t3, sizeof(t3), "%.1f us (--sync always: %.1f us)", m[R_SYNC][AM].p50 / 1e3,
		 m[R_ALWAYS][AM].p50 / 1e3);
	snprintf(t4, sizeof(t4), "%.0f ms", rec);
	snprintf(t5, sizeof(t5), "recover %s keys < 1 s", nb);
	printf("\ntargets (printed, not enforced):\n");
	printf("  %-28s %-40s %s\n", "reads >= 5x LMDB", t1, report_met(rh >= 5 && rm >= 5));
	printf("  %-28s %-40s %s\n", "buffered sets >= 1.5 M/s", t2, report_met(m[R_BUF][AM].ops >= 1.5e6));
	printf("  %-28s %-40s %s\n", "sync set p50 < 15 us", t3, report_met(m[R_SYNC][AM].p50 < 15e3));
	printf("  %-28s %-40s %s\n", t5, t4, report_met(rec < 1000));
}

void report_print(const struct results *r, int runs, const struct workload *w, int mixed_seconds,
		  double clock_ns)
{
	struct fig m[NROWS][2];
	char nb[32];

	fig_fmt_count(nb, w->n);
	report_table(r, runs, w, mixed_seconds, m);
	printf("\nrows above the line: amora --sync periodic vs LMDB MDB_NOSYNC + mdb_env_sync every 100 ms;\n"
	       "below: amora --sync always vs LMDB default durability (fsync per commit). ratio = amora/lmdb ops/s.\n"
	       "Latency: sync sets, deletes and the writer: every op timed; gets: every 64th op timed alone\n"
	       "(ops/s counts every op); buffered set: N new keys, one amora_flush | one LMDB txn for all;\n"
	       "\"flush per 1024\": the same keys again, latency = one batch of 1024 sets + flush (LMDB: 1024 puts + commit).\n"
	       "Each sample includes one clock_gettime (%.0f ns here).\n",
	       clock_ns);

	double rec = fig_median(r->rec_ms, runs), reco = fig_median(r->rec_open_ms, runs);
	printf("\nrecover %s keys: %.0f ms  (amora_open succeeded at %.0f ms; then every shard ready and the last\n"
	       "  written key readable; %llu keys counted afterwards, all %s read back and verified)\n",
	       nb, rec, reco, (unsigned long long)r->rec_keys[0], nb);
	printf("  data dir %.0f MiB at the restart; amorad stop (SIGTERM -> exit 0) %.0f ms;"
	       " start on an empty dir %.0f ms\n",
	       fig_median(r->data_mb, runs), fig_median(r->stop_ms, runs), fig_median(r->start_ms, runs));
	printf("  reference: LMDB reopen + first get %.1f ms (no recovery step; data file %.0f MiB)\n",
	       fig_median(r->lmdb_reopen_ms, runs), fig_median(r->lmdb_mb, runs));
	report_targets(m, rec, nb);
}
