/*
 * report.c — amora-bench's report (perf/lib/report.h).
 */
#include "perf/lib/report.h"

#include "perf/lib/phases.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define REPORT_NAME 128
#define REPORT_STR_(x) #x
#define REPORT_STR(x) REPORT_STR_(x)

/* Per row: a stable id and a short label (JSON, perf/plot's axis). */
static const char *const report_ids[NROWS] = {
	[R_BUF] = "buffered_set",     [R_BUF_RAND] = "buffered_set_random",
	[R_BUF_NOIX] = "buffered_set_index_off", [R_BUF_RAND_NOIX] = "buffered_set_random_index_off",
	[R_BUF_END] = "buffered_update", [R_SYNC] = "sync_set",
	[R_BATCH10] = "batch_10",     [R_BATCH100] = "batch_100",      [R_BATCH1000] = "batch_1000",
	[R_HIT] = "get_hit",          [R_MISS] = "get_miss",
	[R_SCAN] = "full_scan",       [R_SEEK] = "seek_10",            [R_SEEK_TAG] = "seek_10_tag",
	[R_DEL] = "delete",
	[R_MIX_R1] = "mixed_reader1", [R_MIX_R2] = "mixed_reader2",    [R_MIX_W] = "mixed_writer",
	[R_ALWAYS] = "sync_always",
};
static const char *const report_labels[NROWS] = {
	[R_BUF] = "buffered sorted",  [R_BUF_RAND] = "buffered random",
	[R_BUF_NOIX] = "sorted, no index", [R_BUF_RAND_NOIX] = "random, no index",
	[R_BUF_END] = "buffered update", [R_SYNC] = "sync set",
	[R_BATCH10] = "batch 10",     [R_BATCH100] = "batch 100",      [R_BATCH1000] = "batch 1000",
	[R_HIT] = "get hit",          [R_MISS] = "get miss",
	[R_SCAN] = "full scan",       [R_SEEK] = "seek + 10",          [R_SEEK_TAG] = "seek + 10 tag",
	[R_DEL] = "delete",
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

/* The batches of a batch row (phase_batch: max(1, ops / size)). */
static uint64_t report_batches(const struct results *r, int row)
{
	uint64_t b = report_batch_size(row);

	return b && r->batch_ops / b ? r->batch_ops / b : 1;
}

static const char *report_met(int ok)
{
	return ok ? "met" : "MISSED";
}

static void report_names(char names[NROWS][REPORT_NAME], const struct results *r, const struct workload *w,
			 int mixed_seconds)
{
	char nb[32], sb[32], ab[32], kb[32], tb[32];

	fig_fmt_count(nb, w->n), fig_fmt_count(sb, w->s), fig_fmt_count(ab, w->a);
	fig_fmt_count(kb, r->seeks), fig_fmt_count(tb, w->t);
	snprintf(names[R_BUF], REPORT_NAME, "buffered set (sorted), %s new keys, 1 flush", nb);
	snprintf(names[R_BUF_RAND], REPORT_NAME, "buffered set (random), %s new keys, 1 flush", nb);
	snprintf(names[R_BUF_NOIX], REPORT_NAME, "  the same (sorted), amorad --sorted-index off");
	snprintf(names[R_BUF_RAND_NOIX], REPORT_NAME, "  the same (random), amorad --sorted-index off");
	snprintf(names[R_SCAN], REPORT_NAME, "full scan, %s keys (entries/s)", nb);
	snprintf(names[R_SEEK], REPORT_NAME, "seek + 10, %d-byte prefix, %s random", PHASE_SEEK_PREFIX, kb);
	snprintf(names[R_SEEK_TAG], REPORT_NAME, "seek + 10, {tag}, %s random, store of %s", kb, tb);
	snprintf(names[R_BUF_END], REPORT_NAME, "buffered update, %s keys, flush per 1024", nb);
	snprintf(names[R_SYNC], REPORT_NAME, "sync set, %s new keys", sb);
	for (int row = R_BATCH10; row <= R_BATCH1000; row++)
		snprintf(names[row], REPORT_NAME, "batch of %llu sets x %s, existing keys",
			 (unsigned long long)report_batch_size(row), fig_fmt_count(kb, report_batches(r, row)));
	snprintf(names[R_HIT], REPORT_NAME, "get hit, %s random", nb);
	snprintf(names[R_MISS], REPORT_NAME, "get miss, %s random", nb);
	snprintf(names[R_DEL], REPORT_NAME, "delete (sync), %s keys", sb);
	snprintf(names[R_MIX_R1], REPORT_NAME, "2R+1W %d s: reader 1 (get)", mixed_seconds);
	snprintf(names[R_MIX_R2], REPORT_NAME, "2R+1W %d s: reader 2 (get)", mixed_seconds);
	snprintf(names[R_MIX_W], REPORT_NAME, "2R+1W %d s: writer (sync set)", mixed_seconds);
	snprintf(names[R_ALWAYS], REPORT_NAME, "sync set, --sync always, %s keys", ab);
}

/* The median over the runs of the field at `first` (the field of run 0,
 * the next run's `stride` bytes further on); -1 when one run's is unknown
 * (negative): then the median would mean nothing. */
static double report_median_known(const double *first, size_t stride, int runs)
{
	double v[FIG_MAXRUNS] = {0};

	for (int i = 0; i < runs; i++) {
		v[i] = *(const double *)((const char *)first + i * stride);
		if (v[i] < 0)
			return -1;
	}
	return fig_median(v, runs);
}

/* The median of the runs' CPU per op, each part alone. */
static struct usage_cpu report_cpu_median(const struct results *r, int runs, int c, int side)
{
	const struct usage_cpu *u = r->cpu[c][side];

	return (struct usage_cpu){ report_median_known(&u->self, sizeof(*u), runs),
				   report_median_known(&u->server, sizeof(*u), runs),
				   report_median_known(&u->kids, sizeof(*u), runs) };
}

/* ns as microseconds, 3 digits or so; "?" when negative (unknown). */
static const char *report_fmt_us(char *b, double ns)
{
	double us = ns / 1e3;

	if (ns < 0)
		sprintf(b, "?");
	else
		sprintf(b, us < 10 ? "%.2f" : us < 100 ? "%.1f" : "%.0f", us);
	return b;
}

/* The line under a row with CPU per op: amora's client + shards + amorad,
 * LMDB's client. */
static void report_cpu_line(const struct results *r, int runs, int c)
{
	struct usage_cpu a = report_cpu_median(r, runs, c, AM), l = report_cpu_median(r, runs, c, LM);
	char b1[32], b2[32], b3[32], b4[32], b5[32], am[4 * 32 + 16], lm[48];

	if (a.self >= 0 && a.kids >= 0 && a.server >= 0)
		snprintf(am, sizeof(am), "%s + %s + %s = %s us", report_fmt_us(b1, a.self),
			 report_fmt_us(b2, a.kids), report_fmt_us(b3, a.server),
			 report_fmt_us(b4, a.self + a.kids + a.server));
	else
		snprintf(am, sizeof(am), "%s + %s + %s us", report_fmt_us(b1, a.self), report_fmt_us(b2, a.kids),
			 report_fmt_us(b3, a.server));
	snprintf(lm, sizeof(lm), "%s us", report_fmt_us(b5, l.self));
	printf("%-46s | %31s | %31s |\n", "  CPU per op: client + shards + amorad", am, lm);
}

/* ops/s as fig_fmt_ops, "-" when negative (not run on that side). */
static const char *report_fmt_ops(char *b, double v)
{
	if (v < 0) {
		sprintf(b, "-");
		return b;
	}
	return fig_fmt_ops(b, v);
}

/* The ratio column: amora / LMDB ops/s, "-" when a side did not run. */
static const char *report_fmt_ratio(char *b, struct fig a, struct fig l)
{
	if (a.ops < 0 || l.ops <= 0)
		sprintf(b, "-");
	else
		sprintf(b, "%.2fx", a.ops / l.ops);
	return b;
}

/* The table; m gets the medians. */
static void report_table(const struct results *r, int runs, const struct workload *w,
			 int mixed_seconds, unsigned shards, struct fig m[NROWS][2])
{
	static const char dash[] = "----------------------------------------------------------------";
	char names[NROWS][REPORT_NAME], head[64], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], b7[32];

	report_names(names, r, w, mixed_seconds);
	snprintf(head, sizeof(head), "phase (median of runs; amorad: %u shards)", shards);
	printf("\n%-46s | %11s %9s %9s | %11s %9s %9s | %7s\n", head, "amora ops/s",
	       "p50", "p99", "lmdb ops/s", "p50", "p99", "ratio");
	printf("%.46s-+-%.31s-+-%.31s-+-%.7s\n", dash, dash, dash, dash);
	for (int row = 0; row < NROWS; row++) {
		m[row][AM] = report_median(r, runs, row, AM);
		m[row][LM] = report_median(r, runs, row, LM);
		if (row == R_ALWAYS)
			printf("%.46s-+-%.31s-+-%.31s-+-%.7s\n", dash, dash, dash, dash);
		printf("%-46s | %11s %9s %9s | %11s %9s %9s | %7s\n", names[row],
		       report_fmt_ops(b1, m[row][AM].ops), fig_fmt_lat(b2, m[row][AM].p50),
		       fig_fmt_lat(b3, m[row][AM].p99), report_fmt_ops(b4, m[row][LM].ops),
		       fig_fmt_lat(b5, m[row][LM].p50), fig_fmt_lat(b6, m[row][LM].p99),
		       report_fmt_ratio(b7, m[row][AM], m[row][LM]));
		if (row == R_SYNC || row == R_DEL)
			report_cpu_line(r, runs, row == R_SYNC ? C_SYNC : C_DEL);
	}
}

#define REPORT_TARGETS 14

/* The median of the runs' RAM per key, each field alone. */
static struct report_mem report_mem_median(const struct results *r, int runs, int load, int side)
{
	const struct report_mem *m = r->mem[load][side];

	return (struct report_mem){ report_median_known(&m->used, sizeof(*m), runs),
				    report_median_known(&m->records, sizeof(*m), runs),
				    report_median_known(&m->resident, sizeof(*m), runs) };
}

/* One target, its figure, and whether it is met. */
struct report_target {
	const char *target;
	char figure[64];
	int met;
};

/* Ratio amora / LMDB of row `row`'s ops/s. */
static double report_ratio(struct fig m[NROWS][2], int row)
{
	return m[row][AM].ops / m[row][LM].ops;
}

/* The bar of issue 10 ("The write path"), recovery's, issue 11's (the
 * sorted index: scans, seeks, what the index costs the writes) and issue
 * 12's (atomic batches: batch 100 >= LMDB, batch 10's p50 <= 3x sync
 * set's). */
static void report_target_list(struct report_target t[REPORT_TARGETS], struct fig m[NROWS][2],
			       const struct results *r, int runs, double rec, char *rec_target, size_t cap,
			       const char *nb)
{
	struct report_mem am = report_mem_median(r, runs, L_SORTED, AM);
	struct report_mem lm = report_mem_median(r, runs, L_SORTED, LM);
	double rs = report_ratio(m, R_SYNC), rd = report_ratio(m, R_DEL), rb = report_ratio(m, R_BUF);
	double rbr = report_ratio(m, R_BUF_RAND), ru = report_ratio(m, R_BUF_END);
	double rw = report_ratio(m, R_MIX_W), r1 = report_ratio(m, R_MIX_R1), r2 = report_ratio(m, R_MIX_R2);

	snprintf(rec_target, cap, "recover %s keys < 1 s", nb);
	t[0] = (struct report_target){ "sync set p50 <= 15 us, >= 1x", "",
				       m[R_SYNC][AM].p50 <= 15e3 && rs >= 1 };
	snprintf(t[0].figure, sizeof(t[0].figure), "%.1f us, %.2fx", m[R_SYNC][AM].p50 / 1e3, rs);
	t[1] = (struct report_target){ "delete p50 <= 15 us, >= 1x", "", m[R_DEL][AM].p50 <= 15e3 && rd >= 1 };
	snprintf(t[1].figure, sizeof(t[1].figure), "%.1f us, %.2fx", m[R_DEL][AM].p50 / 1e3, rd);
	t[2] = (struct report_target){ "buffered >= 2.5 M/s, >= 1x", "",
				       m[R_BUF][AM].ops >= 2.5e6 && m[R_BUF_RAND][AM].ops >= 2.5e6 &&
				       rb >= 1 && rbr >= 1 };
	snprintf(t[2].figure, sizeof(t[2].figure), "sorted %.2f M/s %.2fx, random %.2f M/s %.2fx",
		 m[R_BUF][AM].ops / 1e6, rb, m[R_BUF_RAND][AM].ops / 1e6, rbr);
	t[3] = (struct report_target){ "flush per 1024 >= 0.8x", "", ru >= 0.8 };
	snprintf(t[3].figure, sizeof(t[3].figure), "%.2fx", ru);
	t[4] = (struct report_target){ "2R+1W writer >= 1x, readers >= 2x", "",
				       rw >= 1 && r1 >= 2 && r2 >= 2 };
	snprintf(t[4].figure, sizeof(t[4].figure), "writer %.2fx, readers %.2fx %.2fx", rw, r1, r2);
	t[5] = (struct report_target){ "get hit >= 2.5 M/s", "", m[R_HIT][AM].ops >= 2.5e6 };
	snprintf(t[5].figure, sizeof(t[5].figure), "%.2f M/s (%.2fx LMDB)", m[R_HIT][AM].ops / 1e6,
		 report_ratio(m, R_HIT));
	t[6] = (struct report_target){ rec_target, "", rec < 1000 };
	snprintf(t[6].figure, sizeof(t[6].figure), "%.0f ms", rec);
	t[7] = (struct report_target){ "RAM per key <= " REPORT_STR(REPORT_RAM_TARGET) " B", "",
				       am.used >= 0 && am.used <= REPORT_RAM_TARGET };
	snprintf(t[7].figure, sizeof(t[7].figure), "%.0f B (LMDB %.0f B)", am.used, lm.used);
	if (am.used < 0 || lm.used < 0)
		snprintf(t[7].figure, sizeof(t[7].figure), "unknown");

	struct fig sc = m[R_SCAN][AM], sk = m[R_SEEK][AM], tg = m[R_SEEK_TAG][AM];
	t[8] = (struct report_target){ "full scan >= 10 M entries/s", "", sc.ops >= 10e6 };
	snprintf(t[8].figure, sizeof(t[8].figure), "%.2f M/s (%.2fx LMDB)", sc.ops / 1e6,
		 report_ratio(m, R_SCAN));
	t[9] = (struct report_target){ "seek + 10 {tag} >= 0.5x", "", tg.ops >= 0 && report_ratio(m, R_SEEK_TAG) >= 0.5 };
	snprintf(t[9].figure, sizeof(t[9].figure), "%.2fx (p50 %.1f us, LMDB %.1f us)", report_ratio(m, R_SEEK_TAG),
		 tg.p50 / 1e3, m[R_SEEK_TAG][LM].p50 / 1e3);
	t[10] = (struct report_target){ "seek + 10 (prefix) p50 <= 15 us", "", sk.p50 >= 0 && sk.p50 <= 15e3 };
	snprintf(t[10].figure, sizeof(t[10].figure), "%.1f us (LMDB %.1f us)", sk.p50 / 1e3,
		 m[R_SEEK][LM].p50 / 1e3);
	/* The index's cost: the share of the index-off throughput lost with it. */
	double cs = 1 - m[R_BUF][AM].ops / m[R_BUF_NOIX][AM].ops;
	double cr = 1 - m[R_BUF_RAND][AM].ops / m[R_BUF_RAND_NOIX][AM].ops;
	t[11] = (struct report_target){ "index cost <= 25 % of buffered", "", cs <= 0.25 && cr <= 0.25 };
	snprintf(t[11].figure, sizeof(t[11].figure), "sorted %.0f %%, random %.0f %%", cs * 100, cr * 100);
	struct fig b10 = m[R_BATCH10][AM], s1 = m[R_SYNC][AM];
	double rb100 = report_ratio(m, R_BATCH100);
	char ob1[32], ob2[32];
	t[12] = (struct report_target){ "batch 100 >= 1x", "", rb100 >= 1 };
	snprintf(t[12].figure, sizeof(t[12].figure), "%.2fx (%s sets/s, LMDB %s)", rb100,
		 fig_fmt_ops(ob1, m[R_BATCH100][AM].ops), fig_fmt_ops(ob2, m[R_BATCH100][LM].ops));
	t[13] = (struct report_target){ "batch 10 p50 <= 3x sync set p50", "",
					s1.p50 > 0 && b10.p50 >= 0 && b10.p50 <= 3 * s1.p50 };
	snprintf(t[13].figure, sizeof(t[13].figure), "%.1f us = %.2fx sync set's %.1f us",
		 b10.p50 / 1e3, b10.p50 / s1.p50, s1.p50 / 1e3);
	if (sc.ops < 0)
		for (int i = 8; i <= 10; i++)
			snprintf(t[i].figure, sizeof(t[i].figure), "not run (amora without its index)");
}

static void report_targets(struct fig m[NROWS][2], const struct results *r, int runs, double rec, const char *nb)
{
	struct report_target t[REPORT_TARGETS];
	char rec_target[64];

	report_target_list(t, m, r, runs, rec, rec_target, sizeof(rec_target), nb);
	printf("\ntargets (printed, not enforced):\n");
	for (int i = 0; i < REPORT_TARGETS; i++)
		printf("  %-34s %-44s %s\n", t[i].target, t[i].figure, report_met(t[i].met));
}

/* Bytes as "186 B", "? B" when negative (unknown). */
static const char *report_fmt_b(char *b, double v)
{
	if (v < 0)
		sprintf(b, "? B");
	else
		sprintf(b, "%.0f B", v);
	return b;
}

/* One load's RAM per key line. */
static void report_mem_line(const struct results *r, int runs, int load)
{
	static const char *const what[NLOADS] = { [L_SORTED] = "key order", [L_RANDOM] = "random order",
						  [L_SORTED_NOIX] = "  index off", [L_RANDOM_NOIX] = "  index off" };
	struct report_mem a = report_mem_median(r, runs, load, AM), l = report_mem_median(r, runs, load, LM);
	char b1[32], b2[32], b3[32], b4[32];

	if (load == L_SORTED_NOIX || load == L_RANDOM_NOIX) {
		struct report_mem on = report_mem_median(r, runs, load == L_SORTED_NOIX ? L_SORTED : L_RANDOM, AM);
		printf("  %-13s amora %5s              (records and tables %s, segment resident %s; the index: %+.0f B)\n",
		       what[load], report_fmt_b(b1, a.used), report_fmt_b(b3, a.records),
		       report_fmt_b(b4, a.resident), on.used >= 0 && a.used >= 0 ? on.used - a.used : NAN);
		return;
	}
	printf("  %-13s amora %5s  LMDB %5s   (amora: records and tables %s, segment resident %s)\n",
	       what[load], report_fmt_b(b1, a.used), report_fmt_b(b2, l.used),
	       report_fmt_b(b3, a.records), report_fmt_b(b4, a.resident));
}

void report_print(const struct results *r, int runs, const struct workload *w, int mixed_seconds,
		  double clock_ns, const struct report_setup *setup)
{
	struct fig m[NROWS][2];
	char nb[32];

	fig_fmt_count(nb, w->n);
	report_table(r, runs, w, mixed_seconds, setup->shards, m);
	printf("\nrows above the line: amora --sync periodic vs LMDB MDB_NOSYNC + mdb_env_sync every 100 ms;\n"
	       "below: amora --sync always vs LMDB default durability (fsync per commit). ratio = amora/lmdb ops/s.\n"
	       "Latency: sync sets, deletes and the writer: every op timed; gets: every 64th op timed alone\n"
	       "(ops/s counts every op); buffered set: N new keys, one amora_flush | one LMDB txn for all, in key\n"
	       "order on the store the later rows use, in random order on a fresh store of its own;\n"
	       "\"flush per 1024\": the same keys again, latency = one batch of 1024 sets + flush (LMDB: 1024 puts + commit).\n"
	       "CPU per op: CPU time over the phase / ops, in us: this process (client), amorad's shard processes,\n"
	       "amorad itself (all threads; LMDB: the client only, its one process).\n"
	       "\"--sorted-index off\": the buffered set above it on a fresh amorad without the sorted index (%s for\n"
	       "the other rows), each order on a store of its own; no LMDB side.\n"
	       "Scans, after the deletes (the store holds the %s keys again; entries' keys and values copied out):\n"
	       "full scan: amora_iter over every key | one read txn, MDB_FIRST + MDB_NEXT; seek + 10: a scan of\n"
	       "the first %d bytes of a random key (100 keys match) with limit 10 | MDB_SET_RANGE + 9 MDB_NEXT in a\n"
	       "read txn, every op timed; {tag}: the prefix \"{uNNNNNN}:\" of a random tag (%llu tags of %d keys, on a\n"
	       "fresh store of each engine holding only them; amora reads the tag's one shard).\n"
	       "batch of B (after the scans, on the same store): one amora_batch of B sets | one LMDB write txn of\n"
	       "B puts + commit; the sets are of random existing keys (distinct within a batch) with new values;\n"
	       "ops/s counts sets, latency is per batch; then every 63rd set and the last batch are read back and\n"
	       "checked, and the keys set back to their own values (not timed).\n"
	       "Each sample includes one clock_gettime (%.0f ns here).\n",
	       setup->sorted_index ? setup->sorted_index : "?", nb, PHASE_SEEK_PREFIX, (unsigned long long)w->tags,
	       WORKLOAD_TAG_KEYS, clock_ns);

	double rec = fig_median(r->rec_ms, runs), reco = fig_median(r->rec_open_ms, runs);
	printf("\nrecover %s keys: %.0f ms  (amora_open succeeded at %.0f ms; then every shard ready and the last\n"
	       "  written key readable; %llu keys counted afterwards, all %s read back and verified)\n",
	       nb, rec, reco, (unsigned long long)r->rec_keys[0], nb);
	printf("  data dir %.0f MiB at the restart; amorad stop (SIGTERM -> exit 0) %.0f ms;"
	       " start on an empty dir %.0f ms\n",
	       fig_median(r->data_mb, runs), fig_median(r->stop_ms, runs), fig_median(r->start_ms, runs));
	printf("  reference: LMDB reopen + first get %.1f ms (no recovery step; data file %.0f MiB)\n",
	       fig_median(r->lmdb_reopen_ms, runs), fig_median(r->lmdb_mb, runs));
	printf("\nRAM per key after the %s-key load (%d-byte keys, %d-byte values):\n", nb, KLEN, VLEN);
	report_mem_line(r, runs, L_SORTED);
	report_mem_line(r, runs, L_SORTED_NOIX);
	report_mem_line(r, runs, L_RANDOM);
	report_mem_line(r, runs, L_RANDOM_NOIX);
	printf("  amora: amora_stats' memory_used / keys (the blocks written in the shards' chunks); records and\n"
	       "  tables: its record_bytes; segment resident: the pages of amorad's data segment (its memfd's\n"
	       "  allocated blocks, header and chunk arrays included). LMDB: (me_last_pgno + 1) * page size / keys.\n"
	       "  index off: the same load on amorad --sorted-index off; the index: memory_used with it - without.\n");
	report_targets(m, r, runs, rec, nb);
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

/* `before` (a separator), "key":, then the number as report_json_num. */
static void report_json_kv(FILE *f, const char *before, const char *key, double v, int neg_null)
{
	fprintf(f, "%s\"%s\":", before, key);
	report_json_num(f, v, neg_null);
}

static void report_json_fig(FILE *f, struct fig g)
{
	report_json_kv(f, "", "ops", g.ops, 1);
	report_json_kv(f, ",", "p50_ns", g.p50, 1);
	report_json_kv(f, ",", "p99_ns", g.p99, 1);
}

static void report_json_cpu(FILE *f, struct usage_cpu u)
{
	report_json_kv(f, ",\"cpu_ns_per_op\":{", "client", u.self, 1);
	report_json_kv(f, ",", "shards", u.kids, 1);
	report_json_kv(f, ",", "amorad", u.server, 1);
	fputc('}', f);
}

static void report_json_engine(FILE *f, const struct results *r, int runs, int row, int side, struct fig med)
{
	int c = row == R_SYNC ? C_SYNC : row == R_DEL ? C_DEL : -1;

	fputc('{', f);
	report_json_fig(f, med);
	if (c >= 0)
		report_json_cpu(f, report_cpu_median(r, runs, c, side));
	fputs(",\"runs\":[", f);
	for (int k = 0; k < runs; k++) {
		fputs(k ? ",{" : "{", f);
		report_json_fig(f, r->row[row][side][k]);
		if (c >= 0)
			report_json_cpu(f, r->cpu[c][side][k]);
		fputc('}', f);
	}
	fputs("]}", f);
}

/* {"amora":{..},"lmdb":{..}} of one load's RAM per key. */
static void report_json_load(FILE *f, struct report_mem a, struct report_mem l)
{
	report_json_kv(f, "{\"amora\":{", "memory_used", a.used, 1);
	report_json_kv(f, ",", "record_bytes", a.records, 1);
	report_json_kv(f, ",", "segment_resident", a.resident, 1);
	report_json_kv(f, "},\"lmdb\":{", "bytes", l.used, 1);
	fputs("}}", f);
}

static void report_json_ram(FILE *f, const struct results *r, int runs)
{
	static const char *const loads[NLOADS] = { [L_SORTED] = "sorted", [L_RANDOM] = "random",
						   [L_SORTED_NOIX] = "sorted_index_off",
						   [L_RANDOM_NOIX] = "random_index_off" };

	fprintf(f, "{\"target_bytes\":%d", REPORT_RAM_TARGET);
	for (int l = 0; l < NLOADS; l++) {
		fprintf(f, ",\"%s\":", loads[l]);
		report_json_load(f, report_mem_median(r, runs, l, AM), report_mem_median(r, runs, l, LM));
	}
	fputs(",\"runs\":[", f);
	for (int k = 0; k < runs; k++) {
		for (int l = 0; l < NLOADS; l++) {
			fprintf(f, "%s\"%s\":", l ? "," : k ? ",{" : "{", loads[l]);
			report_json_load(f, r->mem[l][AM][k], r->mem[l][LM][k]);
		}
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
	report_names(names, r, w, mixed_seconds);
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
	fputs(",\"sorted_index\":", f);
	report_json_str(f, setup->sorted_index);
	fprintf(f, ",\"tagged_keys\":%llu,\"seeks\":%llu,\"batch_ops\":%llu", (unsigned long long)w->t,
		(unsigned long long)r->seeks, (unsigned long long)r->batch_ops);
	fputs(",\n\"phases\":[", f);
	for (int row = 0; row < NROWS; row++) {
		fprintf(f, "%s\n{\"id\":\"%s\",\"label\":\"%s\",\"name\":", row ? "," : "", report_ids[row],
			report_labels[row]);
		report_json_str(f, names[row]);
		fprintf(f, ",\"durability\":\"%s\",\"sorted_index\":", row == R_ALWAYS ? "always" : "periodic");
		report_json_str(f, row == R_BUF_NOIX || row == R_BUF_RAND_NOIX ? "off" : setup->sorted_index);
		if (report_batch_size(row))
			fprintf(f, ",\"ops_per_batch\":%llu,\"batches\":%llu",
				(unsigned long long)report_batch_size(row),
				(unsigned long long)report_batches(r, row));
		fputs(",\"amora\":", f);
		report_json_engine(f, r, runs, row, AM, m[row][AM]);
		fputs(",\"lmdb\":", f);
		report_json_engine(f, r, runs, row, LM, m[row][LM]);
		fputs(",\"ratio\":", f);
		report_json_num(f, m[row][LM].ops > 0 && m[row][AM].ops >= 0 ? m[row][AM].ops / m[row][LM].ops : NAN, 0);
		fputc('}', f);
	}
	fputs("],\n\"recovery\":", f);
	report_json_recovery(f, r, runs);
	fputs(",\n\"ram_per_key\":", f);
	report_json_ram(f, r, runs);
	fputs(",\n\"targets\":[", f);
	report_target_list(t, m, r, runs, fig_median(r->rec_ms, runs), rec_target, sizeof(rec_target),
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
