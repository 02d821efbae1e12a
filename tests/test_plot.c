/*
 * test_plot.c — perf/plot draws what amora-bench --json really writes: a
 * tiny amora-bench run (1000 keys, one run, 1 s mixed phase) writes its
 * JSON (with the random-order buffered set, CPU per op and RAM per key),
 * perf/plot bench turns it into a PNG of the size asked for; and
 * perf/plot fails with the file's name on a missing file, a file that is
 * not JSON and a JSON file of the wrong kind, leaving no output behind.
 * Needs python3 and gnuplot (make deps installs both).
 */
#include "tests/proc.h"

#define BENCH_BIN AMORA_BUILD_DIR "/perf/amora-bench"
#define PLOT "perf/plot"

TestSuite(plot, .init = proc_init, .fini = proc_fini);

/* Whether path starts with the PNG signature and its IHDR says w x h. */
static bool png_of_size(const char *path, unsigned w, unsigned h)
{
	static const unsigned char magic[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	unsigned char b[24];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL)
		return false;
	n = fread(b, 1, sizeof(b), f);
	fclose(f);
	if (n != sizeof(b) || memcmp(b, magic, 8) != 0 || memcmp(b + 12, "IHDR", 4) != 0)
		return false;
	return ((unsigned)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19]) == w &&
	       ((unsigned)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23]) == h;
}

static bool file_has(const char *path, const char *needle)
{
	char cmd[1024], out[16];

	snprintf(cmd, sizeof(cmd), "grep -q -F '%s' %s; echo $?", needle, path);
	proc_run(out, sizeof(out), cmd);
	return atoi(out) == 0;
}

/* perf/plot KIND on a file holding `text`: it must exit 1 saying `says`
 * and write no PNG. */
static void plot_fails(const char *kind, const char *text, const char *says)
{
	char cmd[2048], out[4096], in[300], png[300];
	FILE *f;

	snprintf(in, sizeof(in), "%s/in.json", D.dir);
	snprintf(png, sizeof(png), "%s/out.png", D.dir);
	cr_assert_not_null(f = fopen(in, "w"));
	fputs(text, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), PLOT " %s %s %s 2>&1; echo status=$?", kind, in, png);
	proc_run(out, sizeof(out), cmd);
	cr_assert(strstr(out, says) && strstr(out, "status=1"), "perf/plot %s on \"%s\": %s", kind, text, out);
	cr_assert(access(png, F_OK) != 0, "a failed perf/plot left %s", png);
}

Test(plot, bench_json_to_png, .timeout = 120)
{
	char cmd[2048], out[4096], json[300], png[300];

	snprintf(json, sizeof(json), "%s/bench.json", D.dir);
	snprintf(png, sizeof(png), "%s/bench.png", D.dir);
	snprintf(cmd, sizeof(cmd),
		 "KEYS=1000 RUNS=1 MIXED_SECONDS=1 ALWAYS_KEYS=100 BENCH_DIR=%s timeout 100 " BENCH_BIN
		 " --json %s > %s/bench.txt 2>&1; echo $?",
		 D.dir, json, D.dir);
	proc_run(out, sizeof(out), cmd);
	cr_assert_eq(atoi(out), 0, "amora-bench --json failed (status %s); see %s/bench.txt", out, D.dir);
	cr_assert(file_has(json, "\"tool\":\"amora-bench\""), "%s is not amora-bench's JSON", json);
	cr_assert(file_has(json, "\"id\":\"get_hit\""), "%s has no get hit phase", json);
	cr_assert(file_has(json, "\"id\":\"sync_always\""), "%s has no --sync always phase", json);
	cr_assert(file_has(json, "\"id\":\"buffered_set_random\""), "%s has no random-order buffered set", json);
	cr_assert(file_has(json, "\"cpu_ns_per_op\":{\"client\":"), "%s has no CPU per op", json);
	cr_assert(file_has(json, "\"ram_per_key\":{\"target_bytes\":160,\"sorted\":{\"amora\":{\"memory_used\":"),
		  "%s has no RAM per key", json);

	snprintf(cmd, sizeof(cmd), "PLOT_SIZE=640x400 " PLOT " bench %s %s 2>&1; echo status=$?", json, png);
	proc_run(out, sizeof(out), cmd);
	cr_assert(strstr(out, "status=0") != NULL, "perf/plot bench failed: %s", out);
	cr_assert(png_of_size(png, 640, 400), "%s is no 640x400 PNG", png);
}

Test(plot, bad_input_fails_and_says_which)
{
	char cmd[2048], out[4096];

	snprintf(cmd, sizeof(cmd), PLOT " bench %s/absent.json %s/out.png 2>&1; echo status=$?", D.dir, D.dir);
	proc_run(out, sizeof(out), cmd);
	cr_assert(strstr(out, "absent.json: No such file or directory") && strstr(out, "status=1"), "%s", out);
	plot_fails("bench", "", "in.json: empty file");
	plot_fails("bench", "{\"tool\":\"amora-bench\",\"phases\":[", "in.json: not JSON");
	plot_fails("bench", "{\"tool\":\"amora-bench\",\"phases\":[{\"label\":\"x\"}]}", "phase 1: missing");
	/* A trace line given to bench, and bench's JSON given to trace. */
	plot_fails("bench", "{\"op\":\"get\",\"hist\":[[100,112,3]]}\n", "use perf/plot trace");
	plot_fails("trace", "{\"tool\":\"amora-bench\",\"phases\":[]}\n", "use perf/plot bench");
	plot_fails("trace", "{\"op\":\"get\",\"hist\":[[100,112]]}\n", "line 1: bad bucket");
	snprintf(cmd, sizeof(cmd), PLOT " 2>&1; echo status=$?");
	proc_run(out, sizeof(out), cmd);
	cr_assert(strstr(out, "usage: perf/plot") && strstr(out, "status=2"), "%s", out);
}
