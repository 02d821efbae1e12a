/*
 * amora-trace — latency histograms of a running Amora, from its USDT probes.
 *
 *   amora-trace [-p PID] [-o OP[,OP...]] [-s SHARD] [-b PATH]... [-j] [interval [count]]
 *
 * Shaped like bcc's libbpf-tools (funclatency, biolatency): it attaches
 * to every process that maps a binary with Amora's probes (shm/probe.h),
 * or to one process (-p), and prints, per public operation, a log2
 * histogram of its latency with count, p50, p99 and p999; for writes,
 * the time each stage took (pushed -> taken by the shard -> applied ->
 * logged -> durable -> completion seen); and the latency of amorad's
 * control-socket commands, by name, errors apart (-p: that peer's). With an interval it prints every
 * `interval` seconds (what happened in it), `count` times; Ctrl-C (or the
 * end of the count) prints the totals (not after a count of 1: they are
 * that interval). -j prints JSON lines instead.
 *
 * A process that starts after amora-trace (a short-lived `amora` CLI run)
 * is traced when its binary was found at start: one that a running
 * process maps, or one named with -b.
 *
 * Exit status: 0, 1 on an error (a -p PID that is no Amora process, no
 * probes found), 2 on bad usage, 77 when this machine cannot trace (not
 * root, no BTF, BPF not permitted), with one line saying which.
 */
#include <argp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "perf/amora-trace.h"
#include "perf/amora-trace.skel.h"
#include "shm/probe.h"

#define EXIT_CANNOT 77
#define MAX_BINS 64

static const char *const op_names[TRACE_OPS] = {
	[AMORA_PROBE_GET] = "get",     [AMORA_PROBE_HAS] = "has",
	[AMORA_PROBE_MGET] = "mget",   [AMORA_PROBE_SET] = "set",
	[AMORA_PROBE_DEL] = "del",     [AMORA_PROBE_SET_BUFFERED] = "set_buffered",
	[AMORA_PROBE_FLUSH] = "flush", [AMORA_PROBE_GET_ALLOC] = "get_alloc",
};

static const char *const stage_names[TRACE_STAGES] = {
	[TRACE_ST_TAKE] = "pushed -> taken by shard",
	[TRACE_ST_APPLY] = "taken -> applied",
	[TRACE_ST_LOG] = "applied -> logged",
	[TRACE_ST_SYNC] = "logged -> durable",
	[TRACE_ST_SEEN] = "-> completion seen",
	[TRACE_ST_TOTAL] = "total (pushed -> seen)",
};

static const char *const stage_keys[TRACE_STAGES] = {
	"taken", "applied", "logged", "durable", "seen", "total",
};

/* The probes amora-trace handles, and the program of each. */
struct probe_prog {
	const char *name;
	struct bpf_program *(*prog)(struct amora_trace_bpf *);
	bool client; /* fired by libamora (the others by shards and amorad) */
};

#define PROG(field) \
	static struct bpf_program *prog_##field(struct amora_trace_bpf *s) { return s->progs.field; }
PROG(op_begin)
PROG(op_end)
PROG(req_submit)
PROG(req_complete)
PROG(req_take)
PROG(req_apply)
PROG(log_write)
PROG(log_sync)
PROG(cmd_begin)
PROG(cmd_end)

static const struct probe_prog probes[] = {
	{ "op__begin", prog_op_begin, true },     { "op__end", prog_op_end, true },
	{ "req__submit", prog_req_submit, true }, { "req__complete", prog_req_complete, true },
	{ "req__take", prog_req_take, false },    { "req__apply", prog_req_apply, false },
	{ "log__write", prog_log_write, false },  { "log__sync", prog_log_sync, false },
	{ "cmd__begin", prog_cmd_begin, false },  { "cmd__end", prog_cmd_end, false },
};

static struct {
	pid_t pid;
	int shard;
	unsigned op_mask;
	bool json;
	double interval;
	long count;
	const char *extra[MAX_BINS];
	int nextra;
} opt = { .shard = -1, .op_mask = ~0u, .interval = 0, .count = -1 };

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* ---------- options ---------- */

static const struct argp_option options[] = {
	{ "pid", 'p', "PID", 0, "Trace this process only", 0 },
	{ "op", 'o', "OP", 0, "Operations to show: get,has,mget,set,del,set_buffered,flush,get_alloc, and cmd (amorad's control-socket commands)", 0 },
	{ "shard", 's', "SHARD", 0, "Only keys of this shard (and its stages)", 0 },
	{ "binary", 'b', "PATH", 0, "Also attach to this binary or library (all its processes)", 0 },
	{ "json", 'j', NULL, 0, "Print JSON lines", 0 },
	{ 0 },
};

static int parse_ops(const char *s)
{
	char buf[256], *save = NULL;
	unsigned mask = 0;

	snprintf(buf, sizeof(buf), "%s", s);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int found = strcmp(t, "cmd") == 0;

		if (found)
			mask |= 1u << TRACE_CMD_BIT;
		for (int op = 1; op < TRACE_OPS; op++)
			if (strcmp(t, op_names[op]) == 0) {
				mask |= 1u << op;
				found = 1;
			}
		if (!found)
			return -1;
	}
	opt.op_mask = mask;
	return 0;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	static int pos;
	long v;

	switch (key) {
	case 'p':
		if (!parse_long(arg, 1, INT_MAX, &v))
			argp_error(state, "invalid PID: %s", arg);
		opt.pid = (pid_t)v;
		break;
	case 'o':
		if (parse_ops(arg) != 0)
			argp_error(state, "unknown operation in '%s'", arg);
		break;
	case 's':
		if (!parse_long(arg, 0, TRACE_MAX_SHARDS - 1, &v))
			argp_error(state, "invalid shard: %s", arg);
		opt.shard = (int)v;
		break;
	case 'b':
		if (opt.nextra == MAX_BINS)
			argp_error(state, "too many -b");
		opt.extra[opt.nextra++] = arg;
		break;
	case 'j':
		opt.json = true;
		break;
	case ARGP_KEY_ARG:
		if (pos == 0) {
			char *end;

			opt.interval = strtod(arg, &end);
			if (*end || !(opt.interval > 0))
				argp_error(state, "invalid interval: %s", arg);
		} else if (pos == 1) {
			if (!parse_long(arg, 1, LONG_MAX, &opt.count))
				argp_error(state, "invalid count: %s", arg);
		} else {
			argp_usage(state);
		}
		pos++;
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* ---------- what to attach to ---------- */

/* Number of USDT notes of `provider` in ELF file `path` (0 if none or not
 * an ELF file). A note's descriptor is three addresses, then provider,
 * name and argument strings (systemtap's format). */
static int elf_probes(const char *path, const char *provider)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), n = 0;
	size_t shstrndx, plen = strlen(provider) + 1;
	Elf_Scn *scn = NULL;
	Elf *e;

	if (fd < 0)
		return 0;
	elf_version(EV_CURRENT);
	e = elf_begin(fd, ELF_C_READ, NULL);
	if (e == NULL || elf_getshdrstrndx(e, &shstrndx) != 0)
		goto out;
	while ((scn = elf_nextscn(e, scn)) != NULL) {
		GElf_Shdr sh;
		GElf_Nhdr nh;
		Elf_Data *d;
		const char *name;
		size_t off = 0, noff, doff;

		if (gelf_getshdr(scn, &sh) == NULL || sh.sh_type != SHT_NOTE)
			continue;
		name = elf_strptr(e, shstrndx, sh.sh_name);
		if (name == NULL || strcmp(name, ".note.stapsdt") != 0 || (d = elf_getdata(scn, NULL)) == NULL)
			continue;
		while ((off = gelf_getnote(d, off, &nh, &noff, &doff)) > 0) {
			const char *desc = (const char *)d->d_buf + doff;

			if (nh.n_type == 3 && nh.n_descsz > 3 * 8 + plen && memcmp(desc + 24, provider, plen) == 0)
				n++;
		}
	}
out:
	if (e)
		elf_end(e);
	close(fd);
	return n;
}

struct bins {
	char path[MAX_BINS][PATH_MAX];
	int n;
};

static void bins_add(struct bins *b, const char *path)
{
	for (int i = 0; i < b->n; i++)
		if (strcmp(b->path[i], path) == 0)
			return;
	if (b->n < MAX_BINS && elf_probes(path, "amora") > 0)
		snprintf(b->path[b->n++], PATH_MAX, "%s", path);
}

/* Every file process `pid` maps (its exe among them) that has probes.
 * Returns -1 if the process is gone. */
static int bins_of_pid(struct bins *b, pid_t pid)
{
	char p[64], line[PATH_MAX + 256];
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%d/maps", (int)pid);
	if ((f = fopen(p, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *path = strchr(line, '/');
		size_t n;

		if (path == NULL)
			continue;
		n = strcspn(path, "\n");
		path[n] = '\0';
		if (n > 10 && strcmp(path + n - 10, " (deleted)") == 0)
			continue;
		bins_add(b, path);
	}
	fclose(f);
	return 0;
}

static void bins_of_all(struct bins *b)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		long pid;

		if (parse_long(e->d_name, 1, INT_MAX, &pid) && pid != getpid())
			bins_of_pid(b, (pid_t)pid);
	}
	closedir(d);
}

/* ---------- can this machine trace? ---------- */

static void cannot(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "amora-trace: cannot trace here: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_CANNOT);
}

static int quiet_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_WARN && getenv("AMORA_TRACE_DEBUG"))
		return vfprintf(stderr, fmt, ap);
	return 0;
}

static void check_machine(void)
{
	if (geteuid() != 0)
		cannot("needs root (CAP_BPF to load, CAP_SYS_ADMIN to attach)");
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
		cannot("no kernel BTF (/sys/kernel/btf/vmlinux: %s)", strerror(errno));
}

/* ---------- histograms ---------- */

/* Every histogram of the BPF side; cmd[i] belongs to cmdk[i]. */
struct snap {
	struct trace_hist op[TRACE_HISTS];
	struct trace_cmd_key cmdk[TRACE_CMDS];
	struct trace_hist cmd[TRACE_CMDS];
	size_t ncmd;
};

static void bucket_range(int b, double *lo, double *hi)
{
	int e;

	if (b < 8) {
		*lo = b;
		*hi = b + 1;
		return;
	}
	e = b / 8 + 2;
	*lo = (double)(1ull << e) + (b % 8) * (double)(1ull << (e - 3));
	*hi = *lo + (double)(1ull << (e - 3));
}

static unsigned long long hist_count(const struct trace_hist *h)
{
	unsigned long long n = 0;

	for (int b = 0; b < TRACE_BUCKETS; b++)
		n += h->b[b];
	return n;
}

/* The value below which a fraction q of the samples lie (bucket middle). */
static double hist_quantile(const struct trace_hist *h, double q)
{
	unsigned long long n = hist_count(h), cum = 0;
	double lo, hi;

	for (int b = 0; b < TRACE_BUCKETS; b++) {
		cum += h->b[b];
		if (n && (double)cum >= q * (double)n) {
			bucket_range(b, &lo, &hi);
			return (lo + hi) / 2;
		}
	}
	return 0;
}

static const char *fmt_ns(char *buf, size_t n, double ns)
{
	if (ns < 1e3)
		snprintf(buf, n, "%.0f ns", ns);
	else if (ns < 1e6)
		snprintf(buf, n, "%.3g us", ns / 1e3);
	else if (ns < 1e9)
		snprintf(buf, n, "%.3g ms", ns / 1e6);
	else
		snprintf(buf, n, "%.3g s", ns / 1e9);
	return buf;
}

/* Sum of the log-linear buckets in [2^e, 2^(e+1)) ns; e = 0 also takes 0. */
static unsigned long long log2_slot(const struct trace_hist *h, int e)
{
	unsigned long long n = 0;
	double lo, hi;

	for (int b = 0; b < TRACE_BUCKETS; b++) {
		bucket_range(b, &lo, &hi);
		if ((e == 0 && lo < 2) || (e > 0 && lo >= (double)(1ull << e) && lo < (double)(1ull << (e + 1))))
			n += h->b[b];
	}
	return n;
}

static void print_log2(const struct trace_hist *h)
{
	unsigned long long slot[64], max = 0;
	int first = -1, last = -1;

	for (int e = 0; e < 41; e++) {
		slot[e] = log2_slot(h, e);
		if (slot[e]) {
			if (first < 0)
				first = e;
			last = e;
			if (slot[e] > max)
				max = slot[e];
		}
	}
	if (first < 0)
		return;
	printf("%24s : %-10s distribution\n", "nsecs", "count");
	for (int e = first; e <= last; e++) {
		int stars = (int)(slot[e] * 40 / max);
		unsigned long long lo = e ? 1ull << e : 0, hi = (1ull << (e + 1)) - 1;

		printf("%11llu -> %-10llu : %-10llu |%-40.*s|\n", lo, hi, slot[e], stars,
		       "****************************************");
	}
}

static void print_summary(const char *what, const struct trace_hist *h)
{
	char a[32], b[32], c[32];

	printf("%s: count %llu, p50 %s, p99 %s, p999 %s\n", what, hist_count(h),
	       fmt_ns(a, sizeof(a), hist_quantile(h, 0.5)), fmt_ns(b, sizeof(b), hist_quantile(h, 0.99)),
	       fmt_ns(c, sizeof(c), hist_quantile(h, 0.999)));
}

/* "cmd info" or "cmd amora.attach (errors)". */
static void cmd_label(char *buf, size_t n, const struct trace_cmd_key *k)
{
	snprintf(buf, n, "cmd %.*s%s", TRACE_CMD_NAME, k->name, k->error ? " (errors)" : "");
}

static void print_text(const struct snap *sn, const char *title)
{
	const struct trace_hist *hs = sn->op;
	char when[64];
	time_t t = time(NULL);
	bool any = false;

	strftime(when, sizeof(when), "%H:%M:%S", localtime(&t));
	printf("\n%s %s\n", when, title);
	for (int op = 1; op < TRACE_OPS; op++) {
		char name[64];

		if (!(opt.op_mask & (1u << op)) || hist_count(&hs[op]) == 0)
			continue;
		any = true;
		snprintf(name, sizeof(name), "op %s", op_names[op]);
		print_summary(name, &hs[op]);
		print_log2(&hs[op]);
		for (int st = 0; st < TRACE_STAGES; st++) {
			const struct trace_hist *sh = &hs[TRACE_OPS * (1 + st) + op];

			if (hist_count(sh) == 0)
				continue;
			snprintf(name, sizeof(name), "  stage %-24s", stage_names[st]);
			print_summary(name, sh);
		}
	}
	for (size_t i = 0; i < sn->ncmd; i++) {
		char name[TRACE_CMD_NAME + 16];

		if (hist_count(&sn->cmd[i]) == 0)
			continue;
		any = true;
		cmd_label(name, sizeof(name), &sn->cmdk[i]);
		print_summary(name, &sn->cmd[i]);
	}
	if (!any)
		printf("no operations traced\n");
	fflush(stdout);
}

static void json_quantiles(const struct trace_hist *h)
{
	printf("\"count\":%llu,\"p50_ns\":%.0f,\"p99_ns\":%.0f,\"p999_ns\":%.0f", hist_count(h),
	       hist_quantile(h, 0.5), hist_quantile(h, 0.99), hist_quantile(h, 0.999));
}

static void print_json(const struct snap *sn, const char *title)
{
	const struct trace_hist *hs = sn->op;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	for (int op = 1; op < TRACE_OPS; op++) {
		const char *sep = "";
		double lo, hi;

		if (!(opt.op_mask & (1u << op)) || hist_count(&hs[op]) == 0)
			continue;
		printf("{\"time\":%.3f,\"period\":\"%s\",\"op\":\"%s\",", ts.tv_sec + ts.tv_nsec / 1e9, title,
		       op_names[op]);
		json_quantiles(&hs[op]);
		printf(",\"hist\":[");
		for (int b = 0; b < TRACE_BUCKETS; b++) {
			if (!hs[op].b[b])
				continue;
			bucket_range(b, &lo, &hi);
			printf("%s[%.0f,%.0f,%llu]", sep, lo, hi, hs[op].b[b]);
			sep = ",";
		}
		printf("],\"stages\":{");
		sep = "";
		for (int st = 0; st < TRACE_STAGES; st++) {
			const struct trace_hist *sh = &hs[TRACE_OPS * (1 + st) + op];

			if (hist_count(sh) == 0)
				continue;
			printf("%s\"%s\":{", sep, stage_keys[st]);
			json_quantiles(sh);
			printf("}");
			sep = ",";
		}
		printf("}}\n");
	}
	for (size_t i = 0; i < sn->ncmd; i++) {
		if (hist_count(&sn->cmd[i]) == 0)
			continue;
		printf("{\"time\":%.3f,\"period\":\"%s\",\"cmd\":\"%.*s\",\"errors\":%s,",
		       ts.tv_sec + ts.tv_nsec / 1e9, title, TRACE_CMD_NAME, sn->cmdk[i].name,
		       sn->cmdk[i].error ? "true" : "false");
		json_quantiles(&sn->cmd[i]);
		printf("}\n");
	}
	fflush(stdout);
}

/* ---------- main ---------- */

/* Client probes go to -p's process only; the shard probes to every
 * process of every binary that has them, so that the stages of the traced
 * client's writes are seen in whichever shard takes them. */
static struct bpf_link *links[sizeof(probes) / sizeof(probes[0]) * MAX_BINS];
static size_t nlinks;

static int attach_all(struct amora_trace_bpf *skel, const struct bins *all, const struct bins *own)
{
	int attached = 0;

	for (size_t p = 0; p < sizeof(probes) / sizeof(probes[0]); p++) {
		bool client = probes[p].client && opt.pid;
		const struct bins *b = client ? own : all;

		for (int i = 0; i < b->n; i++) {
			struct bpf_link *l = bpf_program__attach_usdt(probes[p].prog(skel), client ? opt.pid : -1,
								      b->path[i], "amora", probes[p].name, NULL);
			int err = l ? 0 : -errno;

			if (err == -EPERM || err == -EACCES)
				cannot("attaching to %s: %s", b->path[i], strerror(-err));
			if (l) {
				links[nlinks++] = l;
				attached += client || !opt.pid;
			}
		}
	}
	return attached;
}

/* The links attach_all made, then the BPF object. */
static void detach_all(struct amora_trace_bpf *skel)
{
	while (nlinks > 0)
		bpf_link__destroy(links[--nlinks]);
	amora_trace_bpf__destroy(skel);
}

static int read_snap(struct amora_trace_bpf *skel, struct snap *out)
{
	int fd = bpf_map__fd(skel->maps.hists), cfd = bpf_map__fd(skel->maps.cmds);
	struct trace_cmd_key cur, next;
	const void *after = NULL; /* NULL: the first key (entries are never deleted) */

	for (__u32 h = 0; h < TRACE_HISTS; h++)
		if (bpf_map_lookup_elem(fd, &h, &out->op[h]) != 0)
			return -1;
	out->ncmd = 0;
	while (out->ncmd < TRACE_CMDS && bpf_map_get_next_key(cfd, after, &next) == 0) {
		if (bpf_map_lookup_elem(cfd, &next, &out->cmd[out->ncmd]) == 0)
			out->cmdk[out->ncmd++] = next;
		cur = next;
		after = &cur;
	}
	return 0;
}

static void hist_sub(struct trace_hist *d, const struct trace_hist *a, const struct trace_hist *b)
{
	for (int i = 0; i < TRACE_BUCKETS; i++)
		d->b[i] = a->b[i] - (b ? b->b[i] : 0);
}

/* d = now - prev, command by command (a command new in now: all of it). */
static void snap_delta(struct snap *d, const struct snap *now, const struct snap *prev)
{
	for (int h = 0; h < TRACE_HISTS; h++)
		hist_sub(&d->op[h], &now->op[h], &prev->op[h]);
	d->ncmd = now->ncmd;
	for (size_t i = 0; i < now->ncmd; i++) {
		const struct trace_hist *was = NULL;

		for (size_t j = 0; j < prev->ncmd && !was; j++)
			if (memcmp(&prev->cmdk[j], &now->cmdk[i], sizeof(now->cmdk[i])) == 0)
				was = &prev->cmd[j];
		d->cmdk[i] = now->cmdk[i];
		hist_sub(&d->cmd[i], &now->cmd[i], was);
	}
}

static void print_period(const struct snap *sn, const char *title)
{
	if (opt.json)
		print_json(sn, title);
	else
		print_text(sn, title);
}

static void run(struct amora_trace_bpf *skel)
{
	static struct snap now, prev, delta;
	double left = opt.interval > 0 ? opt.interval : 1e18;
	long i;

	for (i = 0; !stop && (opt.count < 0 || i < opt.count); i++) {
		struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };

		nanosleep(&ts, NULL);
		if (stop || opt.interval <= 0)
			break;
		if (read_snap(skel, &now) != 0)
			break;
		snap_delta(&delta, &now, &prev);
		prev = now;
		print_period(&delta, "interval");
	}
	/* The totals, unless they would repeat the one interval printed. */
	if (!(i == 1 && !stop) && read_snap(skel, &now) == 0)
		print_period(&now, "total");
}

int main(int argc, char **argv)
{
	static const struct argp argp = { options, parse_arg, "[interval [count]]",
					  "Latency of a running Amora's operations and write stages, from "
					  "its USDT probes.\v"
					  "Exit status 77: this machine cannot trace (the line says why).",
					  NULL, NULL, NULL };
	struct amora_trace_bpf *skel;
	static struct bins all, own;
	int err;

	if (argp_parse(&argp, argc, argv, 0, NULL, NULL))
		return 2;
	check_machine();
	if (opt.pid) {
		if (kill(opt.pid, 0) != 0 && errno == ESRCH) {
			fprintf(stderr, "amora-trace: no process %d\n", (int)opt.pid);
			return 1;
		}
		if (bins_of_pid(&own, opt.pid) != 0 || own.n == 0) {
			fprintf(stderr, "amora-trace: process %d maps no binary with Amora probes (not an Amora process?)\n",
				(int)opt.pid);
			return 1;
		}
	}
	bins_of_all(&all);
	for (int i = 0; i < opt.nextra; i++) {
		int n = all.n;

		bins_add(&all, opt.extra[i]);
		if (all.n == n && access(opt.extra[i], R_OK) != 0) {
			fprintf(stderr, "amora-trace: %s: %s\n", opt.extra[i], strerror(errno));
			return 1;
		}
	}
	if (all.n == 0) {
		fprintf(stderr, "amora-trace: no running process maps a binary with Amora probes (use -b PATH)\n");
		return 1;
	}
	libbpf_set_print(quiet_print);
	skel = amora_trace_bpf__open();
	if (skel == NULL)
		cannot("opening the BPF object: %s", strerror(errno));
	skel->rodata->filter_shard = opt.shard;
	skel->rodata->op_mask = opt.op_mask;
	skel->rodata->filter_pid = opt.pid;
	err = amora_trace_bpf__load(skel);
	if (err)
		cannot("loading the BPF programs: %s", strerror(-err));
	if (attach_all(skel, &all, &own) == 0) {
		fprintf(stderr, "amora-trace: could not attach to any probe\n");
		detach_all(skel);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/* On stderr with -j, so that stdout is JSON lines only. */
	fprintf(opt.json ? stderr : stdout, "Tracing Amora (%d binar%s)%s... Hit Ctrl-C to end.\n", all.n,
		all.n == 1 ? "y" : "ies", opt.pid ? ", client calls of one process" : "");
	fflush(NULL);
	run(skel);
	detach_all(skel);
	return 0;
}
