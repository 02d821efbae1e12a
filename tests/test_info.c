/*
 * test_info.c — INFO and `amora stats` against a real amorad: Redis's
 * sections and field names as redis-cli reads them (`redis-cli info`,
 * `redis-cli --stat`), amorad's counters (commands, connections, refusals)
 * and the shards' (requests, log writes, records, bytes, syncs) counting
 * exactly what the test did, a section asked for alone, the same names in
 * `amora stats`, and counts that survive a shard's restart.
 */
#include <ctype.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "tests/proc.h"
#include "coordinator/config.h"
#include "shardd/walfmt.h"
#include "shm/shard.h"

#define SHARDS 4
#define NSETS 40
#define NDELS 8
#define NPINGS 3

static void setup(void)
{
	proc_init();
	proc_start(&D, "--shards", "4", "--memory", "64M", "--sync", "always", NULL);
}

TestSuite(info, .init = setup, .fini = proc_fini, .timeout = 60);
TestSuite(info_limits, .init = proc_init, .fini = proc_fini, .timeout = 60);

static void need_redis_cli(void)
{
	if (system("command -v redis-cli >/dev/null") != 0)
		cr_skip_test("redis-cli is not installed (make deps installs redis-tools)");
}

/* `redis-cli -s D.sock args` into out; asserts that it succeeded. */
static void redis_cli(char *out, size_t cap, const char *args)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "redis-cli -s %s %s", D.sock, args);
	cr_assert_eq(proc_run(out, cap, cmd), 0, "%s: %s", cmd, out);
}

/* The value of "name:value" (a line of its own) in text; asserts it is there. */
static uint64_t field(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ':')
			return strtoull(p + n + 1, NULL, 10);
	cr_assert_fail("no field %s in:\n%s", name, text);
	return 0;
}

struct shard_line {
	char state[16], cause[16];
	unsigned long long keys, mem, requests, writes, records, bytes, syncs;
	double mean;
	unsigned restarts;
};

/* Shard s's line of INFO (or of `amora stats`); asserts its shape. */
static struct shard_line shard_line(const char *text, uint32_t s)
{
	struct shard_line l;
	char name[32];
	const char *p;

	snprintf(name, sizeof(name), "\nshard%u:", s);
	p = strstr(text, name);
	cr_assert_not_null(p, "no line for shard %u in:\n%s", s, text);
	cr_assert_eq(sscanf(p + strlen(name), "state=%15[a-z],cause=%15[a-z_],keys=%llu,used_memory=%llu,"
			    "requests=%llu,log_writes=%llu,log_records=%llu,log_bytes=%llu,log_syncs=%llu,"
			    "mean_batch=%lf,restarts=%u", l.state, l.cause, &l.keys, &l.mem, &l.requests,
			    &l.writes, &l.records, &l.bytes, &l.syncs, &l.mean, &l.restarts), 11,
		     "shard %u's line: %.200s", s, p + 1);
	return l;
}

/* The "# Section" headers of text, in order, joined by spaces. */
static void headers(const char *text, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (p[0] == '#' && p[1] == ' ')
			len += (size_t)snprintf(out + len, cap - len, "%s%.*s", len ? " " : "",
						(int)strcspn(p + 2, "\r\n"), p + 2);
}

/* Until only `want` connections are open (closes are seen by amorad a
 * moment after the peer's close), read from shared memory. */
static void wait_connections(amora *db, uint32_t want)
{
	struct amora_server_stats sv;

	for (uint64_t t0 = proc_now_ms();; usleep(2000)) {
		cr_assert_eq(amora_server_stats(db, &sv, sizeof(sv)), AMORA_OK, "%s", amora_errmsg(db));
		if (sv.connected_clients == want)
			return;
		cr_assert(proc_now_ms() - t0 < 10000, "%u connections open, want %u", sv.connected_clients,
			  want);
	}
}

/* NSETS sets of new keys, a get of each, NDELS deletes: NSETS + NDELS
 * writes, each one request and, from one synchronous writer, one log
 * write of one record. Returns the bytes those frames take. */
static uint64_t write_some(amora *db)
{
	char k[64], v[128], got[128];
	uint64_t bytes = 0;
	size_t vlen;

	for (int i = 0; i < NSETS; i++) {
		int kl = proc_key(k, "info", i), vl = proc_val(v, i, 1);

		cr_assert_eq(amora_set(db, k, (size_t)kl, v, (size_t)vl), AMORA_OK, "%s", amora_errmsg(db));
		cr_assert_eq(amora_get(db, k, (size_t)kl, got, sizeof(got), &vlen), AMORA_OK);
		bytes += walfmt_frame_size(walfmt_rec_size(WALFMT_OP_SET, (uint32_t)kl, (uint32_t)vl));
	}
	for (int i = 0; i < NDELS; i++) {
		int kl = proc_key(k, "info", i);

		cr_assert_eq(amora_del(db, k, (size_t)kl), AMORA_OK, "%s", amora_errmsg(db));
		bytes += walfmt_frame_size(walfmt_rec_size(WALFMT_OP_DEL, (uint32_t)kl, 0));
	}
	return bytes;
}

/* The whole INFO after known work: every section in Redis's order,
 * amorad's counters moved by exactly the connections and commands made,
 * the shards' by exactly the writes. */
Test(info, sections_and_counters_count_what_was_done)
{
	static char before[1 << 16], info[1 << 16], out[256];
	char hdrs[256];
	uint64_t conns0, cmds0, frame_bytes, sum_req = 0, sum_rec = 0, sum_wr = 0, sum_keys = 0;
	uint64_t sum_bytes = 0, sum_syncs = 0;
	amora *db;

	need_redis_cli();
	redis_cli(before, sizeof(before), "info");
	conns0 = field(before, "total_connections_received");
	cmds0 = field(before, "total_commands_processed");
	cr_assert_eq(field(before, "total_requests"), 0, "a fresh amorad");
	db = proc_open();
	frame_bytes = write_some(db);
	for (int i = 0; i < NPINGS; i++) {
		redis_cli(out, sizeof(out), "ping");
		cr_assert_str_eq(out, "PONG\n");
	}
	wait_connections(db, 1);
	redis_cli(info, sizeof(info), "info");

	headers(info, hdrs, sizeof(hdrs));
	cr_assert_str_eq(hdrs, "Server Clients Memory Persistence Stats Keyspace Shards");
	cr_assert(strncmp(info, "# Server\r\n", 10) == 0, "%s", info);
	cr_assert(strstr(info, "\r\n\r\n# Clients\r\n") && strstr(info, "\r\n\r\n# Shards\r\n"),
		  "sections are separated by a blank line: %s", info);
	/* the first INFO, the attach and the pings (this INFO counts only after its reply) */
	cr_assert_eq(field(info, "total_commands_processed"), cmds0 + 1 + 1 + NPINGS, "%s", info);
	/* the handle, the pings and this redis-cli */
	cr_assert_eq(field(info, "total_connections_received"), conns0 + 1 + NPINGS + 1, "%s", info);
	cr_assert_eq(field(info, "rejected_connections"), 0);
	cr_assert_eq(field(info, "connected_clients"), 2, "the handle and this redis-cli: %s", info);
	cr_assert_eq(field(info, "attached_clients"), 1);
	cr_assert_eq(field(info, "blocked_clients"), 0);
	cr_assert_eq(field(info, "shards"), SHARDS);
	cr_assert_eq(field(info, "shards_ready"), SHARDS);
	cr_assert_gt(field(info, "used_memory"), 0);
	cr_assert_eq(field(info, "memory_limit"), 64u << 20);
	cr_assert_eq(field(info, "loading"), 0);
	cr_assert(strstr(info, "\r\nsync:always\r\n"), "%s", info);
	snprintf(out, sizeof(out), "\r\n# Keyspace\r\ndb0:keys=%d,expires=0,avg_ttl=0\r\n\r\n", NSETS - NDELS);
	cr_assert(strstr(info, out), "want %s in:\n%s", out, info);

	for (uint32_t s = 0; s < SHARDS; s++) {
		struct shard_line l = shard_line(info, s);

		cr_assert_str_eq(l.state, "ready");
		cr_assert_str_eq(l.cause, "none");
		cr_assert_eq(l.restarts, 0);
		/* one synchronous writer: each write is a round, a log write, a record */
		cr_assert_eq(l.writes, l.requests, "shard %u", s);
		cr_assert_eq(l.records, l.requests, "shard %u", s);
		cr_assert_geq(l.syncs, l.writes, "--sync always: a sync per log write (shard %u)", s);
		if (l.writes > 0) {
			cr_assert_gt(l.bytes, 0);
			cr_assert(l.mean == 1.0, "shard %u: mean_batch %f", s, l.mean);
		}
		sum_req += l.requests;
		sum_rec += l.records;
		sum_wr += l.writes;
		sum_keys += l.keys;
		sum_bytes += l.bytes;
		sum_syncs += l.syncs;
	}
	cr_assert_eq(sum_req, NSETS + NDELS, "requests add up to the writes done");
	cr_assert_eq(sum_rec, NSETS + NDELS);
	cr_assert_eq(sum_keys, NSETS - NDELS);
	cr_assert_eq(sum_bytes, frame_bytes, "log bytes: a frame per write");
	cr_assert_eq(field(info, "total_requests"), sum_req);
	cr_assert_eq(field(info, "log_writes"), sum_wr);
	cr_assert_eq(field(info, "log_records"), sum_rec);
	cr_assert_eq(field(info, "log_bytes"), sum_bytes);
	cr_assert_eq(field(info, "log_syncs"), sum_syncs);
	amora_close(db);
}

/* INFO section: only that section, its name in any case; several at once
 * in Redis's order; all/everything/default every section; an unknown one
 * nothing. */
Test(info, a_section_alone)
{
	static char out[1 << 16];
	char want[128], hdrs[256];
	amora *db;

	need_redis_cli();
	db = proc_open();
	write_some(db);
	redis_cli(out, sizeof(out), "info keyspace");
	snprintf(want, sizeof(want), "# Keyspace\r\ndb0:keys=%d,expires=0,avg_ttl=0\r\n", NSETS - NDELS);
	cr_assert_str_eq(out, want);
	redis_cli(out, sizeof(out), "info KeySpace");
	cr_assert_str_eq(out, want);
	redis_cli(out, sizeof(out), "info stats CLIENTS");
	headers(out, hdrs, sizeof(hdrs));
	cr_assert_str_eq(hdrs, "Clients Stats");
	cr_assert_null(strstr(out, "used_memory"), "%s", out);
	redis_cli(out, sizeof(out), "info shards");
	headers(out, hdrs, sizeof(hdrs));
	cr_assert_str_eq(hdrs, "Shards");
	cr_assert_eq(shard_line(out, SHARDS - 1).restarts, 0);
	for (int i = 0; i < 3; i++) {
		redis_cli(out, sizeof(out), (const char *[]){ "info all", "info everything", "info DEFAULT" }[i]);
		headers(out, hdrs, sizeof(hdrs));
		cr_assert_str_eq(hdrs, "Server Clients Memory Persistence Stats Keyspace Shards");
	}
	redis_cli(out, sizeof(out), "info nosuch");
	cr_assert_str_eq(out, "", "an unknown section is an empty reply");
	amora_close(db);
}

/* redis-cli --stat, one line: our keys, memory, clients, blocked,
 * requests and connections, as it parses them from INFO. */
Test(info, redis_cli_stat_reads_our_fields)
{
	static char out[8192];
	char cmd[1024], mem[32], reqs[32];
	struct amora_server_stats sv;
	long long keys, clients, blocked, requests, conns;
	const char *line;
	amora *db;

	need_redis_cli();
	db = proc_open();
	write_some(db);
	wait_connections(db, 1);
	cr_assert_eq(amora_server_stats(db, &sv, sizeof(sv)), AMORA_OK);
	/* It prints a line a second for ever: stdbuf makes each line leave at
	 * once into the pipe, and it dies of SIGPIPE at the line after the
	 * first data line (timeout only guards against a hang). */
	snprintf(cmd, sizeof(cmd), "timeout 20 stdbuf -oL redis-cli -s %s --stat -i 1 | head -n 3", D.sock);
	proc_run(out, sizeof(out), cmd);
	line = strstr(out, "\nkeys ");
	cr_assert_not_null(line, "no header line: %s", out);
	line = strchr(line + 1, '\n');
	cr_assert_not_null(line, "no data line: %s", out);
	cr_assert_eq(sscanf(line + 1, "%lld %31s %lld %lld %lld %31s %lld", &keys, mem, &clients, &blocked,
			    &requests, reqs, &conns), 7, "data line: %s", line + 1);
	cr_assert_eq(keys, NSETS - NDELS, "%s", out);
	cr_assert(isdigit((unsigned char)mem[0]) && strchr("BKMGT", mem[strlen(mem) - 1]), "mem %s", mem);
	cr_assert_eq(clients, 2, "the handle and redis-cli: %s", out);
	cr_assert_eq(blocked, 0);
	cr_assert_eq(requests, (long long)sv.commands_processed, "its first INFO counts after the reply");
	cr_assert_str_eq(reqs, "(+0)");
	cr_assert_eq(conns, (long long)sv.connections_received + 1, "redis-cli's own connection");
	amora_close(db);
}

/* The field names of text's "name:value" lines ("shardN" as one), each
 * followed by a space. */
static void names(const char *text, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		size_t n = strcspn(p, ":\r\n");

		if (p[0] == '#' || p[n] != ':')
			continue;
		if (strncmp(p, "shard", 5) == 0 && isdigit((unsigned char)p[5]))
			n = 5;
		len += (size_t)snprintf(out + len, cap - len, "%.*s ", (int)n, p);
	}
}

/* `amora stats` prints INFO's sections and names, less the few only amorad
 * knows, and the same shard and keyspace lines. */
Test(info, amora_stats_prints_the_same_names)
{
	static char info[1 << 16], stats[1 << 16], a[4096], b[4096], want[4096];
	amora *db;
	char *p;

	need_redis_cli();
	db = proc_open();
	write_some(db);
	wait_connections(db, 1);
	cr_assert_eq(proc_cli(stats, sizeof(stats), "stats"), 0, "%s", stats);
	redis_cli(info, sizeof(info), "info");
	headers(stats, a, sizeof(a));
	headers(info, b, sizeof(b));
	cr_assert_str_eq(a, b);
	cr_assert_null(strchr(stats, '\r'));
	names(stats, a, sizeof(a));
	names(info, b, sizeof(b));
	/* INFO's names with amorad's own removed are `amora stats`' */
	want[0] = '\0';
	for (char *w = strtok(b, " "); w; w = strtok(NULL, " "))
		if (strcmp(w, "amora_version") && strcmp(w, "process_id") && strcmp(w, "uptime_in_seconds") &&
		    strcmp(w, "data_dir") && strcmp(w, "max_clients") && strcmp(w, "sync") &&
		    strcmp(w, "fast_wakeups"))
			strcat(strcat(want, w), " ");
	cr_assert_str_eq(a, want);
	p = strstr(stats, "\ndb0:");
	cr_assert_not_null(p);
	cr_assert_eq(strncmp(p, strstr(info, "\ndb0:"), strcspn(p + 1, "\n") + 1), 0);
	for (uint32_t s = 0; s < SHARDS; s++) {
		struct shard_line x = shard_line(stats, s), y = shard_line(info, s);

		cr_assert_str_eq(x.state, y.state);
		cr_assert_str_eq(x.cause, y.cause);
		cr_assert_eq(x.keys, y.keys);
		cr_assert_eq(x.requests, y.requests);
		cr_assert_eq(x.writes, y.writes);
		cr_assert_eq(x.records, y.records);
		cr_assert_eq(x.bytes, y.bytes);
		cr_assert_eq(x.syncs, y.syncs);
		cr_assert_eq(x.restarts, y.restarts);
	}
	cr_assert_eq(field(stats, "total_requests"), NSETS + NDELS);
	cr_assert_eq(field(stats, "log_records"), NSETS + NDELS);
	cr_assert_eq(field(stats, "connected_clients"), 2, "ours and the CLI's: %s", stats);
	amora_close(db);
}

/* A raw connection to D.sock. */
static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, D.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	return fd;
}

/* Send an inline command on fd and read its bulk reply into out. */
static void raw_info(int fd, const char *req, char *out, size_t cap)
{
	struct timeval tv = { 10, 0 };
	size_t len = 0, want = 0;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	while (len < cap - 1 && (want == 0 || len < want)) {
		ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
		char *nl;

		cr_assert_gt(n, 0, "reply cut short");
		len += (size_t)n;
		out[len] = '\0';
		if (want == 0 && out[0] == '$' && (nl = strstr(out, "\r\n")))
			want = (size_t)(nl + 2 - out) + strtoul(out + 1, NULL, 10) + 2;
	}
}

/* A connection over the limit is refused and counted; unknown commands
 * are not counted as processed. */
Test(info_limits, refusals_counted_unknown_commands_not)
{
	enum { OWNER_MAX = 1 + CONFIG_OWNER_RESERVE }; /* --max-connections 1, and the owner's reserve */
	char out[8192];
	int fds[OWNER_MAX], extra;
	uint64_t cmds, conns;
	ssize_t n;

	proc_start(&D, "--shards", "1", "--memory", "64M", "--max-clients", "1", "--max-connections", "1",
		   NULL);
	fds[0] = raw_connect();
	/* until proc_start's probe connection is closed: ours is the only one */
	for (uint64_t t0 = proc_now_ms();; usleep(2000)) {
		raw_info(fds[0], "INFO clients\r\n", out, sizeof(out));
		if (field(out, "connected_clients") == 1)
			break;
		cr_assert(proc_now_ms() - t0 < 10000, "%s", out);
	}
	raw_info(fds[0], "INFO stats\r\n", out, sizeof(out));
	cmds = field(out, "total_commands_processed");
	conns = field(out, "total_connections_received");
	cr_assert_eq(field(out, "rejected_connections"), 0);
	for (int i = 1; i < OWNER_MAX; i++)
		fds[i] = raw_connect();
	extra = raw_connect();
	n = recv(extra, out, sizeof(out) - 1, 0);
	cr_assert_gt(n, 0);
	out[n] = '\0';
	cr_assert(strncmp(out, "-BUSY too many connections", 26) == 0, "%s", out);
	close(extra);
	cr_assert_eq(send(fds[1], "NOSUCH\r\n", 8, 0), 8);
	n = recv(fds[1], out, sizeof(out) - 1, 0);
	cr_assert_gt(n, 0);
	cr_assert(strncmp(out, "-ERR unknown command", 20) == 0);
	raw_info(fds[0], "INFO stats\r\n", out, sizeof(out));
	cr_assert_eq(field(out, "rejected_connections"), 1, "%s", out);
	cr_assert_eq(field(out, "total_connections_received"), conns + OWNER_MAX - 1, "%s", out);
	cr_assert_eq(field(out, "total_commands_processed"), cmds + 1, "the INFO before; not NOSUCH: %s", out);
	for (int i = 0; i < OWNER_MAX; i++)
		close(fds[i]);
}

/* A shard killed and restarted goes on from its predecessor's counts. */
Test(info, counts_survive_a_shard_restart)
{
	struct amora_shard_stats before[SHARDS], after;
	struct amora_shard_status st;
	pid_t kids[16];
	char k[64];
	uint32_t s = SHARDS;
	int i = 0;
	amora *db = proc_open();

	write_some(db);
	for (uint32_t j = 0; j < SHARDS; j++)
		cr_assert_eq(amora_shard_stats(db, j, &before[j], sizeof(before[j])), AMORA_OK);
	cr_assert_eq(proc_children(D.pid, kids, 16), SHARDS);
	cr_assert_eq(kill(kids[0], SIGKILL), 0);
	/* the shard that restarts once and serves again */
	for (uint64_t t0 = proc_now_ms(); s == SHARDS; usleep(5000)) {
		for (uint32_t j = 0; j < SHARDS && s == SHARDS; j++) {
			cr_assert_eq(amora_shard_status(db, j, &st), AMORA_OK);
			if (st.restarts == 1 && st.state == AMORA_SHARD_READY)
				s = j;
		}
		cr_assert(proc_now_ms() - t0 < 10000, "no shard restarted");
	}
	do
		proc_key(k, "again", i++);
	while (shm_shard_of(shm_hash(k, strlen(k)), SHARDS) != s);
	cr_assert_eq(amora_set(db, k, strlen(k), "v", 1), AMORA_OK, "%s", amora_errmsg(db));
	cr_assert_eq(amora_shard_stats(db, s, &after, sizeof(after)), AMORA_OK);
	cr_assert_eq(after.writes.requests, before[s].writes.requests + 1);
	cr_assert_eq(after.writes.log_writes, before[s].writes.log_writes + 1);
	cr_assert_eq(after.writes.log_records, before[s].writes.log_records + 1);
	cr_assert_gt(after.writes.log_bytes, before[s].writes.log_bytes);
	cr_assert_gt(after.writes.log_syncs, before[s].writes.log_syncs);
	cr_assert_eq(after.restarts, 1);
	cr_assert_str_eq(after.state, "ready");
	cr_assert_eq(amora_shard_stats(db, SHARDS, &after, sizeof(after)), AMORA_EINVAL);
	cr_assert_eq(amora_shard_stats(db, 0, &after, 8), AMORA_EINVAL, "a size below the struct's");
	amora_close(db);
}

/* The wake-up latency bound in force (us), as the kernel combines every
 * request: what reading /dev/cpu_dma_latency returns. -1: cannot read. */
static int32_t wake_bound(void)
{
	int32_t v = -1;
	int fd = open("/dev/cpu_dma_latency", O_RDONLY | O_CLOEXEC);

	if (fd >= 0 && read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		v = -1;
	if (fd >= 0)
		close(fd);
	return v;
}

static int put_key(amora *db, int i)
{
	char k[32];
	int kl = snprintf(k, sizeof(k), "wake:%d", i);

	return amora_set(db, k, (size_t)kl, "v", 1);
}

/* Whether INFO's Server section has the line `want`. */
static bool server_says(const char *want)
{
	char out[8192];

	redis_cli(out, sizeof(out), "info server");
	return strstr(out, want) != NULL;
}

/* --fast-wakeups auto: amorad asks for a bound of 0 (idle CPUs poll) once
 * the shards answer 1000 requests/s or more, and lets it go a second after
 * the writes stop. (Another test's amorad may hold a bound meanwhile, so
 * only "0 while ours holds" is checked against the kernel.) */
Test(info_limits, fast_wakeups_follow_the_write_rate, .timeout = 60)
{
	amora *db;
	uint64_t t0;

	need_redis_cli();
	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	if (geteuid() != 0) {
		cr_assert(server_says("fast_wakeups:unavailable"), "not root: the device cannot be opened");
		return;
	}
	cr_assert(server_says("fast_wakeups:released"), "nothing held before any write");
	db = proc_open();
	for (t0 = proc_now_ms(); !server_says("fast_wakeups:held");) {
		for (int i = 0; i < 500; i++)
			cr_assert_eq(put_key(db, i), AMORA_OK, "%s", amora_errmsg(db));
		cr_assert(proc_now_ms() - t0 < 20000, "never held while writes flowed");
	}
	cr_assert_eq(wake_bound(), 0, "held: the kernel's bound is 0");
	for (t0 = proc_now_ms(); !server_says("fast_wakeups:released"); usleep(100000))
		cr_assert(proc_now_ms() - t0 < 10000, "still held long after the writes stopped");
	amora_close(db);
}

Test(info_limits, fast_wakeups_on_and_off)
{
	need_redis_cli();
	proc_start(&D, "--shards", "1", "--memory", "64M", "--fast-wakeups", "off", NULL);
	cr_assert(server_says("fast_wakeups:off"));
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	if (geteuid() != 0)
		return;
	proc_start(&D, "--shards", "1", "--memory", "64M", "--fast-wakeups", "on", NULL);
	cr_assert(server_says("fast_wakeups:held"), "on: held from the start");
	cr_assert_eq(wake_bound(), 0);
}

/* The periodic log sync of a shard that went to sleep right after a write
 * comes by itself (the shard sleeps without a timer; its watcher thread
 * wakes it when the sync, or the sweep, is due). Write A, then B once A's
 * sync is due (B's round would sync A anyway); then nothing wakes the
 * shard but its timed duties: log_syncs must move without another write.
 * (A sync deadline missed while the sweep's is kept would still pass:
 * the sweep syncs too, within 200 ms.) */
Test(info_limits, periodic_sync_of_an_idle_shard_comes_on_time)
{
	char out[8192];
	amora *db;
	uint64_t before, t0;

	need_redis_cli();
	proc_start(&D, "--shards", "1", "--memory", "64M", "--sync", "periodic", "--sync-interval-ms",
		   "500", NULL);
	db = proc_open();
	cr_assert_eq(put_key(db, 0), AMORA_OK, "%s", amora_errmsg(db));
	usleep(1200000);
	cr_assert_eq(put_key(db, 1), AMORA_OK, "%s", amora_errmsg(db));
	redis_cli(out, sizeof(out), "info shards"); /* well within B's 500 ms */
	before = shard_line(out, 0).syncs;
	for (t0 = proc_now_ms();; usleep(50000)) {
		redis_cli(out, sizeof(out), "info shards");
		if (shard_line(out, 0).syncs > before)
			break;
		cr_assert(proc_now_ms() - t0 < 3000, "no log sync 3 s after a write (interval 500 ms)");
	}
	amora_close(db);
}
