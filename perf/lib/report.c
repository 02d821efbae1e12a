/*
 * report.c — amora-bench's report (perf/lib/report.h).
 */
#include "perf/lib/report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define REPORT_NAME 96

/* Per row: a stable id and a short label (JSON, perf/plot's axis). */
static const char *const report_ids[NROWS] = {
	[R_BUF] = "buffered_set",     [R_BUF_END] = "buffered_update", [R_SYNC] = "sync_set",
	[R_HIT] = "get_hit",          [R_MISS] = "get_miss",           [R_DEL] = "delete",
	[R_MIX_R1] = "mixed_reader1", [R_MIX_R2] = "mixed_reader2",    [R_MIX_W] = "mixed_writer",
	[R_ALWAYS] = "sync_always",
};
static const char *const report_labels[NROWS] = {
	[R_BUF] = "buffered set",     [R_BUF_END] = "buffered update", [R_SYNC] = "sync set",
	[R_HIT] = "get hit",          [R_MISS] = "get miss",           [R_DEL] = "delete",
	[R_MIX_R1] = "2R+1W reader 1", [R_MIX_R2] = "2R+1W reader 2",  [R_MIX_W] = "2R+1W writer",
	[R_ALWAYS] = "sync set, always",
};

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

#define REPORT_TARGETS 4

/* One target, its figure, and whether it is met. */
struct report_target {
	const char *target;
	char figure[64];
	int met;
};

static void report_target_list(struct report_target t[REPORT_TARGETS], struct fig m[NROWS][2], double rec,
			       char *rec_target, size_t cap, const char *nb)
{
	double rh = m[R_HIT][AM].ops / m[R_HIT][LM].ops, rm = m[R_MISS][AM].ops / m[R_MISS][LM].ops;

	snprintf(rec_target, cap, "recover %s keys < 1 s", nb);
	t[0] = (struct report_target){ "reads >= 5x LMDB", "", rh >= 5 && rm >= 5 };
	snprintf(t[0].figure, sizeof(t[0].figure), "hit %.2fx, miss %.2fx", rh, rm);
	t[1] = (struct report_target){ "buffered sets >= 1.5 M/s", "", m[R_BUF][AM].ops >= 1.5e6 };
	snprintf(t[1].figure, sizeof(t[1].figure), "%.2f M/s", m[R_BUF][AM].ops / 1e6);
	t[2] = (struct report_target){ "sync set p50 < 15 us", "", m[R_SYNC][AM].p50 < 15e3 };
	snprintf(t[2].figure, sizeof(t[2].figure), "%.1f us (--sync always: %.1f us)", m[R_SYNC][AM].p50 / 1e3,
		 m[R_ALWAYS][AM].p50 / 1e3);
	t[3] = (struct report_target){ rec_target, "", rec < 1000 };
	snprintf(t[3].figure, sizeof(t[3].figure), "%.0f ms", rec);
}

static void report_targets(struct fig m[NROWS][2], double rec, const char *nb)
{
	struct report_target t[REPORT_TARGETS];
	char rec_target[64];

	report_target_list(t, m, rec, rec_target, sizeof(rec_target), nb);
	printf("\ntargets (printed, not enforced):\n");
	for (int i = 0; i < REPORT_TARGETS; i++)
		printf("  %-28s %-40s %s\n", t[i].target, t[i].figure, report_met(t[i].met));
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

/* ---------- JSON ---------- */

/* A JSON string (or null). */
static void report_json_str(FILE *f, const char *v)
{
	if (!v) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
		if (*c == '"' || *c == '\\')
			fprintf(f, "\\%c", *c);
		else if (*c < 0x20)
			fprintf(f, "\\u%04x", *c);
		else
			fputc(*c, f);
	}
	fputc('"', f);
}

/* A number; null when it is not finite or (neg_null) negative. */
static void report_json_num(FILE *f, double v, int neg_null)
{
	if (!isfinite(v) || (neg_null && v < 0))
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

static void report_json_fig(FILE *f, struct fig g)
{
	fputs("\"ops\":", f);
	report_json_num(f, g.ops, 0);
	fputs(",\"p50_ns\":", f);
	report_json_num(f, g.p50, 1);
	fputs(",\"p99_ns\":", f);
	report_json_num(f, g.p99, 1);
}

static void report_json_engine(FILE *f, const struct results *r, int runs, int row, int side, struct fig med)
{
	fputc('{', f);
	report_json_fig(f, med);
	fputs(",\"runs\":[", f);
	for (int k = 0; k < runs; k++) {
		fputs(k ? ",{" : "{", f);
		report_json_fig(f, r->row[row][side][k]);
		fputc('}', f);
	}
	fputs("]}", f);
}

static void report_json_array(FILE *f, const double *v, int runs)
{
	fputc('[', f);
	for (int k = 0; k < runs; k++) {
		if (k)
			fputc(',', f);
		report_json_num(f, v[k], 0);
	}
	fputc(']', f);
}

static void report_json_recovery(FILE *f, const struct results *r, int runs)
{
	const struct {
		const char *key;
		const double *v;
	} m[] = {
		{ "ms", r->rec_ms },           { "open_ms", r->rec_open_ms },
		{ "stop_ms", r->stop_ms },     { "start_ms", r->start_ms },
		{ "data_mib", r->data_mb },    { "lmdb_reopen_ms", r->lmdb_reopen_ms },
		{ "lmdb_mib", r->lmdb_mb },
	};
	const size_t n = sizeof(m) / sizeof(m[0]);

	fprintf(f, "{\"keys\":%llu", (unsigned long long)r->rec_keys[0]);
	for (size_t i = 0; i < n; i++) {
		fprintf(f, ",\"%s\":", m[i].key);
		report_json_num(f, fig_median(m[i].v, runs), 0);
	}
	fputs(",\"runs\":{", f);
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "%s\"%s\":", i ? "," : "", m[i].key);
		report_json_array(f, m[i].v, runs);
	}
	fputs("}}", f);
}

int report_json(FILE *f, const struct results *r, int runs, const struct workload *w, int mixed_seconds,
		double clock_ns, const struct report_setup *setup)
{
	char names[NROWS][REPORT_NAME], date[32], nb[32], rec_target[64];
	struct fig m[NROWS][2];
	struct report_target t[REPORT_TARGETS];
	time_t now = time(NULL);
	struct tm tm;

	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	report_names(names, w, mixed_seconds);
	for (int row = 0; row < NROWS; row++) {
		m[row][AM] = report_median(r, runs, row, AM);
		m[row][LM] = report_median(r, runs, row, LM);
	}
	fprintf(f, "{\"tool\":\"amora-bench\",\"format\":1,\"date\":\"%s\",\"runs\":%d,\"keys\":%llu,"
		   "\"sync_keys\":%llu,\"always_keys\":%llu,\"key_bytes\":%d,\"value_bytes\":%d,"
		   "\"mixed_seconds\":%d,\"clock_ns\":",
		date, runs, (unsigned long long)w->n, (unsigned long long)w->s, (unsigned long long)w->a, KLEN,
		VLEN, mixed_seconds);
	report_json_num(f, clock_ns, 0);
	fputs(",\"amorad\":", f);
	report_json_str(f, setup->amorad);
	fprintf(f, ",\"shards\":%u,\"memory\":", setup->shards);
	report_json_str(f, setup->memory);
	fputs(",\"lmdb\":", f);
	report_json_str(f, setup->lmdb);
	fputs(",\"fs\":", f);
	report_json_str(f, setup->fs);
	fprintf(f, ",\"cpus\":%ld,\"load_start\":", sysconf(_SC_NPROCESSORS_ONLN));
	report_json_num(f, setup->load_start, 1);
	fputs(",\"load_end\":", f);
	report_json_num(f, setup->load_end, 1);
	fputs(",\"run_seconds\":", f);
	report_json_array(f, r->run_s, runs);
	fputs(",\n\"phases\":[", f);
	for (int row = 0; row < NROWS; row++) {
		fprintf(f, "%s\n{\"id\":\"%s\",\"label\":\"%s\",\"name\":", row ? "," : "", report_ids[row],
			report_labels[row]);
		report_json_str(f, names[row]);
		fprintf(f, ",\"durability\":\"%s\",\"amora\":", row == R_ALWAYS ? "always" : "periodic");
		report_json_engine(f, r, runs, row, AM, m[row][AM]);
		fputs(",\"lmdb\":", f);
		report_json_engine(f, r, runs, row, LM, m[row][LM]);
		fputs(",\"ratio\":", f);
		report_json_num(f, m[row][LM].ops > 0 ? m[row][AM].ops / m[row][LM].ops : NAN, 0);
		fputc('}', f);
	}
	fputs("],\n\"recovery\":", f);
	report_json_recovery(f, r, runs);
	fputs(",\n\"targets\":[", f);
	report_target_list(t, m, fig_median(r->rec_ms, runs), rec_target, sizeof(rec_target),
			   fig_fmt_count(nb, w->n));
	for (int i = 0; i < REPORT_TARGETS; i++) {
		fputs(i ? ",{\"target\":" : "{\"target\":", f);
		report_json_str(f, t[i].target);
		fputs(",\"figure\":", f);
		report_json_str(f, t[i].figure);
		fprintf(f, ",\"met\":%s}", t[i].met ? "true" : "false");
	}
	fputs("]}\n", f);
	if (fflush(f) != 0 || ferror(f)) {
		if (!errno)
			errno = EIO;
		return -1;
	}
	return 0;
}
