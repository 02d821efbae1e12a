/*
 * test_failed.c — a shard that cannot serve says so, and every failed call
 * says why (issue 7, defects 2 and 10), against a real amorad.
 *
 * A shard is made FAILED the way it happens to users: its log is damaged
 * inside while amorad is down (it then fails at start, with no table at
 * all), or its data no longer fits a smaller --memory. Its keys must then
 * answer AMORA_EFAILED naming the shard and the cause, never "not found";
 * the other shards serve on; amorad's start-up line, INFO, amora_stats,
 * amora_heartbeat and `amora stats` all show which shard and why.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include "tests/proc.h"
#include "shm/shard.h"

TestSuite(failed, .init = proc_init, .fini = proc_fini, .timeout = 60);

static uint32_t shard_of(const char *k, uint32_t shards)
{
	return shm_shard_of(shm_hash(k, strlen(k)), shards);
}

/* Flip one byte inside (not at the tail of) shard `s`'s first log file. */
static void corrupt_log(uint32_t s)
{
	char path[512], b;
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/shard-%02u/wal-0000000000000001.log", D.dir, s);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "no %s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_gt(st.st_size, 2000);
	cr_assert_eq(pread(fd, &b, 1, 200), 1);
	b ^= 0x40;
	cr_assert_eq(pwrite(fd, &b, 1, 200), 1);
	close(fd);
}

/* INFO over the control socket, into buf (NUL-terminated). */
static void get_info(char *buf, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static const char cmd[] = "*1\r\n$4\r\nINFO\r\n";
	struct timeval tv = { 5, 0 };
	size_t len = 0, want = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, D.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(send(fd, cmd, sizeof(cmd) - 1, 0), (ssize_t)sizeof(cmd) - 1);
	while (len < cap - 1 && (want == 0 || len < want)) {
		ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
		char *nl;

		cr_assert_gt(n, 0, "INFO reply cut short");
		len += (size_t)n;
		buf[len] = 0;
		if (want == 0 && buf[0] == '$' && (nl = strstr(buf, "\r\n")))
			want = (size_t)(nl + 2 - buf) + strtoul(buf + 1, NULL, 10) + 2;
	}
	close(fd);
}

/* Shard s's INFO line says state_cause ("state=...,cause=...") first,
 * then its counters, restarts=0 and the checkpoint fields last. */
static void expect_shard_line(const char *info, uint32_t s, const char *state_cause)
{
	char want[96];
	const char *p, *end;

	snprintf(want, sizeof(want), "shard%u:%s,", s, state_cause);
	p = strstr(info, want);
	cr_assert_not_null(p, "no '%s' in:\n%s", want, info);
	end = strstr(p, "\r\n");
	cr_assert_not_null(end);
	cr_assert(memmem(p, (size_t)(end - p), ",restarts=0,checkpoints=", 24) != NULL &&
		  memmem(p, (size_t)(end - p), ",log_disk_bytes=", 16) != NULL, "%.*s", (int)(end - p), p);
}

#define NKEYS 400

/* 2 shards, NKEYS keys "c:%08d" = "v%d"; then shard 0's log is damaged
 * and amorad restarted: shard 0 fails at start (it never had a table in
 * this amorad), shard 1 recovers. */
static void start_with_shard0_corrupt(void)
{
	char k[64], v[64];
	amora *db;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--sync", "always", NULL);
	db = proc_open();
	for (int i = 0; i < NKEYS; i++) {
		int kl = proc_key(k, "c", i), vl = sprintf(v, "v%d", i);

		cr_assert_eq(amora_set(db, k, (size_t)kl, v, (size_t)vl), AMORA_OK, "%s", amora_errmsg(db));
	}
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	corrupt_log(0);
	proc_start(&D, "--shards", "2", "--memory", "64M", "--sync", "always", NULL);
}

static void expect_stopped(amora *db, int rc, const char *call, const char *k, const char *cause)
{
	char want[128];

	snprintf(want, sizeof(want), "shard 0 stopped: %s", cause);
	cr_assert_eq(rc, AMORA_EFAILED, "%s %s: %d (%s), want AMORA_EFAILED", call, k, rc,
		     amora_strerror(rc));
	cr_assert(strstr(amora_errmsg(db), want), "%s %s: message '%s' lacks '%s'", call, k,
		  amora_errmsg(db), want);
}

struct counted { int calls; };

static void count_found(void *arg, size_t index, const void *val, size_t vlen)
{
	(void)index, (void)val, (void)vlen;
	((struct counted *)arg)->calls++;
}

/* Every read and write of a failed shard's key is AMORA_EFAILED with the
 * shard and the cause; the other shard's keys read and write as ever. */
Test(failed, corrupt_log_at_start_fails_its_keys_not_found)
{
	const void *keys[NKEYS];
	size_t klens[NKEYS];
	static char kbuf[NKEYS][32];
	char v[64], got[64], want[128];
	int in0 = 0, in1 = 0, first0 = -1;
	struct counted cnt = { 0 };
	amora *db;

	start_with_shard0_corrupt();
	db = proc_open();
	amora_set_timeout(db, 2000);
	for (int i = 0; i < NKEYS; i++) {
		char *k = kbuf[i];
		size_t kl = (size_t)proc_key(k, "c", i), vlen = 0;
		void *val = NULL;
		int vl = sprintf(v, "v%d", i);

		keys[i] = k;
		klens[i] = kl;
		if (shard_of(k, 2) != 0) {
			in1++;
			cr_assert_eq(amora_get(db, k, kl, got, sizeof(got), &vlen), AMORA_OK, "get %s: %s", k,
				     amora_errmsg(db));
			cr_assert_eq(vlen, (size_t)vl);
			cr_assert_arr_eq(got, v, (size_t)vl);
			cr_assert_eq(amora_set(db, k, kl, "w", 1), AMORA_OK, "%s", amora_errmsg(db));
			continue;
		}
		if (first0 < 0)
			first0 = i;
		in0++;
		expect_stopped(db, amora_get(db, k, kl, got, sizeof(got), &vlen), "get", k, "corrupt log");
		expect_stopped(db, amora_get_alloc(db, k, kl, &val, &vlen), "get_alloc", k, "corrupt log");
		cr_assert_null(val);
		expect_stopped(db, amora_has(db, k, kl), "has", k, "corrupt log");
		expect_stopped(db, amora_set(db, k, kl, "w", 1), "set", k, "corrupt log");
		expect_stopped(db, amora_del(db, k, kl), "del", k, "corrupt log");
		expect_stopped(db, amora_set_buffered(db, k, kl, "w", 1), "set_buffered", k, "corrupt log");
	}
	cr_assert(in0 > 0 && in1 > 0, "both shards must hold keys (%d, %d)", in0, in1);
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	/* amora_mget: stops at the first key of shard 0 and names it */
	snprintf(want, sizeof(want), "key %d: shard 0 stopped: corrupt log (see amorad's log)", first0);
	cr_assert_eq(amora_mget(db, NKEYS, keys, klens, count_found, &cnt), AMORA_EFAILED);
	cr_assert_str_eq(amora_errmsg(db), want);
	cr_assert_eq(cnt.calls, first0, "fn is called for the keys found before the failed one");
	expect_stopped(db, amora_heartbeat(db), "heartbeat", "", "corrupt log");
	amora_close(db);
}

/* A batch with a key on the stopped shard fails whole: AMORA_EFAILED
 * naming the shard, and its keys on the serving shard keep their values;
 * a batch of the serving shard alone goes through. */
Test(failed, a_batch_touching_a_failed_shard_changes_nothing)
{
	char k0[32] = "", k1[32] = "", k1b[32] = "";
	struct amora_op ops[3];
	char got[64];
	size_t vlen = 0;
	amora *db;
	int i = 0;

	start_with_shard0_corrupt();
	db = proc_open();
	amora_set_timeout(db, 2000);
	while (k0[0] == 0 || k1[0] == 0 || k1b[0] == 0) {
		char k[32];

		proc_key(k, "c", i++);
		if (shard_of(k, 2) == 0)
			memcpy(k0, k, sizeof(k));
		else
			memcpy(k1[0] ? k1b : k1, k, sizeof(k));
	}
	/* the serving shard's keys first: its part is prepared before the
	 * stopped shard's refusal is known */
	ops[0] = (struct amora_op){ AMORA_OP_SET, k1, strlen(k1), "batch", 5 };
	ops[1] = (struct amora_op){ AMORA_OP_DEL, k1b, strlen(k1b), NULL, 0 };
	ops[2] = (struct amora_op){ AMORA_OP_SET, k0, strlen(k0), "batch", 5 };
	expect_stopped(db, amora_batch(db, ops, 3), "batch", k0, "corrupt log");
	cr_assert_eq(amora_get(db, k1, strlen(k1), got, sizeof(got), &vlen), AMORA_OK, "%s", amora_errmsg(db));
	cr_assert(vlen < 5 || memcmp(got, "batch", 5) != 0, "%s was written by the failed batch", k1);
	cr_assert_eq(amora_has(db, k1b, strlen(k1b)), 1, "%s was deleted by the failed batch", k1b);
	cr_assert_eq(amora_batch(db, ops, 2), AMORA_OK, "%s", amora_errmsg(db));
	cr_assert_eq(amora_get(db, k1, strlen(k1), got, sizeof(got), &vlen), AMORA_OK);
	cr_assert(vlen == 5 && memcmp(got, "batch", 5) == 0);
	cr_assert_eq(amora_has(db, k1b, strlen(k1b)), 0);
	amora_close(db);
}

/* Write 1 MiB values to a 1-shard store until it holds over 72 MiB, then
 * restart amorad with --memory 64M: the shard cannot rebuild and stops
 * for lack of memory, which must not be called a corrupt log. */
Test(failed, out_of_memory_is_named_as_such)
{
	size_t big = AMORA_VALUE_MAX, vlen;
	char *val = malloc(big), k[64], info[4096];
	struct amora_stats st;
	struct amora_shard_status ss;
	amora *db;
	int n = 0, rc;

	cr_assert_not_null(val);
	memset(val, 'm', big);
	proc_start(&D, "--shards", "1", "--memory", "128M", NULL);
	db = proc_open();
	/* Until the data is larger than 64M could hold, or the store is full
	 * (then it needs its 128M). */
	for (rc = AMORA_OK; n < 200; n++) {
		int kl = proc_key(k, "m", n);

		cr_assert_eq(amora_stats(db, &st), AMORA_OK);
		if (st.memory_used > (72u << 20))
			break;
		rc = amora_set(db, k, (size_t)kl, val, big);
		if (rc == AMORA_EFULL)
			break;
		cr_assert_eq(rc, AMORA_OK, "%s", amora_errmsg(db));
	}
	cr_assert(n > 8 && (st.memory_used > (72u << 20) || rc == AMORA_EFULL), "the store did not fill");
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	cr_assert(proc_log_has(&D, "0 of 1 shards recovered"), "startup line counts a failed shard");
	cr_assert(proc_log_has(&D, "shard 00 failed: not enough shared memory"));
	db = proc_open();
	proc_key(k, "m", 0);
	rc = amora_get(db, k, strlen(k), NULL, 0, &vlen);
	expect_stopped(db, rc, "get", k, "not enough shared memory");
	cr_assert_null(strstr(amora_errmsg(db), "corrupt"), "%s", amora_errmsg(db));
	rc = amora_set(db, k, strlen(k), "x", 1);
	expect_stopped(db, rc, "set", k, "not enough shared memory");
	cr_assert_null(strstr(amora_errmsg(db), "corrupt"), "%s", amora_errmsg(db));
	cr_assert_eq(amora_shard_status(db, 0, &ss), AMORA_OK);
	cr_assert_eq(ss.state, AMORA_SHARD_FAILED);
	cr_assert_str_eq(ss.cause, "not enough shared memory to recover its data");
	amora_close(db);
	get_info(info, sizeof(info));
	expect_shard_line(info, 0, "state=failed,cause=out_of_memory");
	free(val);
}

/* amorad counts only the shards that recovered and names the failed one;
 * INFO, amora_stats, amora_shard_status and `amora stats` show each
 * shard's state and cause. */
Test(failed, startup_line_info_stats_name_the_failed_shard)
{
	char info[16384], out[4096], k[64], args[128];
	struct amora_stats st;
	struct amora_shard_status ss;
	amora *db;
	int i = 0;

	start_with_shard0_corrupt();
	cr_assert(proc_log_has(&D, "1 of 2 shards recovered"), "the startup line counts only READY shards");
	cr_assert(proc_log_has(&D, "shard 00 failed: corrupt log"), "the startup line names the failed shard");
	get_info(info, sizeof(info));
	cr_assert(strstr(info, "shards_ready:1\r\n"), "%s", info);
	cr_assert(strstr(info, "shards_failed:1\r\n"), "%s", info);
	expect_shard_line(info, 0, "state=failed,cause=corrupt_log");
	expect_shard_line(info, 1, "state=ready,cause=none");
	db = proc_open();
	cr_assert_eq(amora_stats(db, &st), AMORA_OK);
	cr_assert_eq(st.shards, 2);
	cr_assert_eq(st.shards_ready, 1);
	cr_assert_eq(st.shards_failed, 1);
	cr_assert_eq(amora_shard_status(db, 0, &ss), AMORA_OK);
	cr_assert_eq(ss.state, AMORA_SHARD_FAILED);
	cr_assert_str_eq(ss.name, "failed");
	cr_assert_str_eq(ss.cause, "corrupt log");
	cr_assert_eq(amora_shard_status(db, 1, &ss), AMORA_OK);
	cr_assert_eq(ss.state, AMORA_SHARD_READY);
	cr_assert_str_eq(ss.cause, "");
	cr_assert_eq(amora_shard_status(db, 2, &ss), AMORA_EINVAL);
	cr_assert(strstr(amora_errmsg(db), "no shard 2"), "%s", amora_errmsg(db));
	amora_close(db);
	cr_assert_eq(proc_cli(out, sizeof(out), "stats 2>&1"), 0, "%s", out);
	cr_assert(strstr(out, "shards_failed:1\n"), "%s", out);
	cr_assert(strstr(out, "\nshard0:state=failed,cause=corrupt_log,"), "%s", out);
	cr_assert(strstr(out, "\nshard1:state=ready,cause=none,"), "every shard has a line: %s", out);
	do
		proc_key(k, "c", i++);
	while (shard_of(k, 2) != 0);
	snprintf(args, sizeof(args), "get %s 2>&1", k);
	cr_assert_eq(proc_cli(out, sizeof(out), args), 2, "a failed shard's key is an error: %s", out);
	cr_assert(strstr(out, "shard 0 stopped: corrupt log"), "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "ping 2>&1"), 2, "%s", out);
	cr_assert(strstr(out, "shard 0 stopped: corrupt log"), "%s", out);
}

/* Every failed call leaves a message of its own: an argument error
 * replaces the previous message, amora_mget names the bad key and the
 * real reason, a failed amora_open leaves its cause in amora_errmsg(NULL). */
Test(failed, every_failure_sets_its_own_message)
{
	static char big[5000];
	const void *keys[3] = { "a", big, "c" };
	size_t klens[3] = { 1, sizeof(big), 1 }, vlen;
	struct counted cnt = { 0 };
	char buf[16], path[400], want[600];
	void *val;
	amora *db, *none = (amora *)1;

	memset(big, 'k', sizeof(big));
	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	db = proc_open();
	/* amora_mget formats its message from a copy of the key's reason */
	cr_assert_eq(amora_mget(db, 3, keys, klens, count_found, &cnt), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "key 1: key is 5000 bytes, the limit is 4096");
	cr_assert_eq(cnt.calls, 0);
	klens[1] = 0;
	cr_assert_eq(amora_mget(db, 3, keys, klens, count_found, &cnt), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "key 1: empty key");
	/* each early AMORA_EINVAL replaces the previous message */
	cr_assert_eq(amora_get(db, big, sizeof(big), buf, sizeof(buf), &vlen), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "key is 5000 bytes, the limit is 4096");
	cr_assert_eq(amora_get(db, "k", 1, buf, sizeof(buf), NULL), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "vlen is NULL");
	cr_assert_eq(amora_get(db, "k", 1, NULL, 8, &vlen), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "buf is NULL with cap 8");
	cr_assert_eq(amora_get_alloc(db, "k", 1, NULL, &vlen), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "val is NULL");
	cr_assert_eq(amora_get_alloc(db, "k", 1, &val, NULL), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "vlen is NULL");
	cr_assert_eq(amora_mget(db, 3, keys, klens, NULL, NULL), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "fn is NULL");
	cr_assert_eq(amora_mget(db, 3, NULL, klens, count_found, &cnt), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "keys is NULL with n 3");
	cr_assert_eq(amora_stats(db, NULL), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "st is NULL");
	cr_assert_eq(amora_set(db, "k", 1, NULL, 3), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "value is NULL with length 3");
	cr_assert_eq(amora_del(db, NULL, 2), AMORA_EINVAL);
	cr_assert_str_eq(amora_errmsg(db), "key is NULL with length 2");
	amora_close(db);
	/* a failed open has no handle: amora_errmsg(NULL) says why */
	cr_assert_eq(amora_open(NULL, &none), AMORA_EINVAL);
	cr_assert_null(none);
	cr_assert_str_eq(amora_errmsg(NULL), "socket_path is NULL");
	snprintf(path, sizeof(path), "%s/nope.sock", D.dir);
	cr_assert_eq(amora_open(path, &db), AMORA_ESYS);
	cr_assert_eq(errno, ENOENT, "errno is connect's");
	snprintf(want, sizeof(want), "cannot connect to %s: %s", path, strerror(ENOENT));
	cr_assert_str_eq(amora_errmsg(NULL), want);
}
