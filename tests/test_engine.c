/*
 * test_engine.c — the whole store, as users run it: a real amorad with its
 * shard processes, real client processes, real files, real kills.
 *
 * The checks are about acknowledged writes: a write counts once its call
 * returned 0, and from then on every read that begins later, in any
 * process, must see it, across shard crashes and coordinator restarts.
 */
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "tests/proc.h"
#include "libclient/client.h"
#include "shm/chan.h"

#define SHARDS "8"

TestSuite(engine, .init = proc_init, .fini = proc_fini, .timeout = 120);

static void expect_value(amora *db, const char *prefix, int i, int version)
{
	char k[64], want[128], got[128];
	size_t vlen = 0;
	int kl = proc_key(k, prefix, i), wl = proc_val(want, i, version);
	int rc = amora_get(db, k, (size_t)kl, got, sizeof(got), &vlen);

	cr_assert_eq(rc, AMORA_OK, "get %s: %s %s", k, amora_strerror(rc), amora_errmsg(db));
	cr_assert_eq(vlen, (size_t)wl, "get %s: length %zu, want %d", k, vlen, wl);
	cr_assert_arr_eq(got, want, (size_t)wl, "get %s: wrong value", k);
}

static void expect_missing(amora *db, const char *prefix, int i)
{
	char k[64];
	size_t vlen;
	int kl = proc_key(k, prefix, i);

	cr_assert_eq(amora_get(db, k, (size_t)kl, NULL, 0, &vlen), AMORA_ENOTFOUND, "%s exists", k);
}

static int put(amora *db, const char *prefix, int i, int version)
{
	char k[64], v[128];
	int kl = proc_key(k, prefix, i), vl = proc_val(v, i, version);

	return amora_set(db, k, (size_t)kl, v, (size_t)vl);
}

Test(engine, set_get_del_and_errors)
{
	char big[4097] = { 0 };
	char *huge = calloc(1, AMORA_VALUE_MAX + 1);
	void *val;
	size_t vlen;
	amora *db;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	cr_assert_eq(amora_set(db, "k", 1, "v", 1), AMORA_OK);
	cr_assert_eq(amora_has(db, "k", 1), 1);
	cr_assert_eq(amora_set(db, "empty", 5, "", 0), AMORA_OK);
	cr_assert_eq(amora_get(db, "empty", 5, NULL, 0, &vlen), AMORA_OK, "an empty value is a value");
	cr_assert_eq(vlen, 0);
	/* invalid sizes: the documented error, nothing changes */
	cr_assert_eq(amora_set(db, "", 0, "v", 1), AMORA_EINVAL);
	cr_assert(strstr(amora_errmsg(db), "empty key"));
	cr_assert_eq(amora_set(db, big, sizeof(big), "v", 1), AMORA_EINVAL);
	cr_assert(strstr(amora_errmsg(db), "4097"), "%s", amora_errmsg(db));
	cr_assert_eq(amora_set(db, "h", 1, huge, AMORA_VALUE_MAX + 1), AMORA_EINVAL);
	cr_assert_eq(amora_get(db, big, sizeof(big), NULL, 0, &vlen), AMORA_EINVAL);
	cr_assert_eq(amora_has(db, "h", 1), 0);
	/* the largest key and value go through (the value via the bulk area) */
	memset(big, 'K', AMORA_KEY_MAX);
	memset(huge, 'x', AMORA_VALUE_MAX);
	huge[12345] = 'y';
	cr_assert_eq(amora_set(db, big, AMORA_KEY_MAX, huge, AMORA_VALUE_MAX), AMORA_OK, "%s",
		     amora_errmsg(db));
	cr_assert_eq(amora_get_alloc(db, big, AMORA_KEY_MAX, &val, &vlen), AMORA_OK);
	cr_assert_eq(vlen, AMORA_VALUE_MAX);
	cr_assert_arr_eq(val, huge, AMORA_VALUE_MAX);
	free(val);
	/* short buffer: full length reported, prefix copied */
	char two[2];
	cr_assert_eq(amora_get(db, big, AMORA_KEY_MAX, two, 2, &vlen), AMORA_OK);
	cr_assert_eq(vlen, AMORA_VALUE_MAX);
	cr_assert_eq(two[0], 'x');
	cr_assert_eq(amora_del(db, "k", 1), AMORA_OK);
	cr_assert_eq(amora_del(db, "k", 1), AMORA_ENOTFOUND);
	cr_assert_eq(amora_has(db, "k", 1), 0);
	cr_assert_eq(amora_heartbeat(db), AMORA_OK, "%s", amora_errmsg(db));
	free(huge);
	amora_close(db);
}

static void note_len(void *arg, size_t i, const void *v, size_t vl)
{
	(void)v;
	((int *)arg)[i] = (int)vl;
}

/* Large values go through the channel's one bulk area: buffered ones
 * must each keep their own bytes. */
Test(engine, buffered_large_values_keep_their_bytes)
{
	enum { BIG = 100000 };
	char *v = malloc(BIG);
	amora *db;

	/* one shard: 511 small writes fill its completion budget, so the
	 * library must wait for room while the first large value is pending */
	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	db = proc_open();
	for (int i = 0; i < 511; i++) {
		char sk[64], sv[128];
		int kl = proc_key(sk, "small", i), vl = proc_val(sv, i, 1);

		cr_assert_eq(amora_set_buffered(db, sk, (size_t)kl, sv, (size_t)vl), AMORA_OK);
	}
	for (int round = 0; round < 4; round++) {
		char k[32];

		memset(v, 'A' + round, BIG);
		snprintf(k, sizeof(k), "big%d", round);
		cr_assert_eq(amora_set_buffered(db, k, strlen(k), v, BIG), AMORA_OK);
	}
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	for (int round = 0; round < 4; round++) {
		char k[32];
		void *got;
		size_t n;

		snprintf(k, sizeof(k), "big%d", round);
		memset(v, 'A' + round, BIG);
		cr_assert_eq(amora_get_alloc(db, k, strlen(k), &got, &n), AMORA_OK);
		cr_assert_eq(n, BIG);
		cr_assert_arr_eq(got, v, BIG, "%s holds another value's bytes", k);
		free(got);
	}
	free(v);
	amora_close(db);
}

Test(engine, buffered_mget_and_stats)
{
	struct amora_stats st;
	const void *keys[3] = { "b:00000001", "nope", "b:00000002" };
	size_t klens[3] = { 10, 4, 10 };
	int seen[3] = { 0 };
	amora *db;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	for (int i = 0; i < 5000; i++) {
		char k[64], v[128];
		int kl = proc_key(k, "b", i), vl = proc_val(v, i, 1);

		cr_assert_eq(amora_set_buffered(db, k, (size_t)kl, v, (size_t)vl), AMORA_OK);
	}
	cr_assert_eq(amora_flush(db), AMORA_OK, "%s", amora_errmsg(db));
	for (int i = 0; i < 5000; i += 97)
		expect_value(db, "b", i, 1);
	cr_assert_eq(amora_mget(db, 3, keys, klens, note_len, seen), 2);
	cr_assert(seen[0] > 0 && seen[1] == 0 && seen[2] > 0);
	cr_assert_eq(amora_stats(db, &st), AMORA_OK);
	cr_assert_eq(st.keys, 5000);
	cr_assert_eq(st.shards, 8);
	cr_assert_eq(st.shards_ready, 8);
	cr_assert(st.memory_used > 0 && st.memory_used <= st.memory_limit);
	amora_close(db);
}

/* Writers publish the index of their last acknowledged write in shared
 * memory; a reader that snapshots it before a read must find that write. */
Test(engine, concurrent_clients_see_acknowledged_writes)
{
	enum { WRITERS = 3, READERS = 2, N = 1500 };
	_Atomic int *acked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[WRITERS + READERS];

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	for (int c = 0; c < WRITERS; c++)
		acked[c] = -1;
	for (int c = 0; c < WRITERS + READERS; c++) {
		pids[c] = fork();
		if (pids[c] != 0)
			continue;
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		amora *db;
		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(10);
		if (c < WRITERS) {
			char prefix[8];

			snprintf(prefix, sizeof(prefix), "w%d", c);
			for (int i = 0; i < N; i++) {
				if (put(db, prefix, i, 1) != AMORA_OK)
					_exit(11);
				atomic_store(&acked[c], i);
			}
		} else {
			for (int round = 0; round < 4 * N; round++) {
				int w = round % WRITERS, a = atomic_load(&acked[w]);
				char k[64], want[128], got[128], prefix[8];
				size_t vlen;

				if (a < 0)
					continue;
				snprintf(prefix, sizeof(prefix), "w%d", w);
				int i = a - (round % (a + 1)); /* any acknowledged index */
				int kl = proc_key(k, prefix, i), wl = proc_val(want, i, 1);
				if (amora_get(db, k, (size_t)kl, got, sizeof(got), &vlen) != AMORA_OK ||
				    vlen != (size_t)wl || memcmp(got, want, (size_t)wl) != 0)
					_exit(12);
			}
		}
		amora_close(db);
		_exit(0);
	}
	for (int c = 0; c < WRITERS + READERS; c++) {
		int status;

		cr_assert_eq(waitpid(pids[c], &status, 0), pids[c]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client %d failed: status %d", c,
			  status);
	}
}

/* Sets, overwrites and deletes, then two restarts: everything acknowledged
 * is there each time, deletes stay deleted. */
static void restart_twice(const char *sync)
{
	amora *db;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--sync", sync, NULL);
	db = proc_open();
	for (int i = 0; i < 2000; i++)
		cr_assert_eq(put(db, "r", i, 1), AMORA_OK);
	for (int i = 0; i < 2000; i += 3)
		cr_assert_eq(put(db, "r", i, 2), AMORA_OK);
	for (int i = 1; i < 2000; i += 5) {
		char k[64];
		int kl = proc_key(k, "r", i);
		cr_assert_eq(amora_del(db, k, (size_t)kl), AMORA_OK);
	}
	amora_close(db);
	for (int round = 0; round < 2; round++) {
		cr_assert_eq(proc_stop(&D, SIGTERM), 0, "amorad did not exit 0 on SIGTERM");
		proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--sync", sync, NULL);
		db = proc_open();
		for (int i = 0; i < 2000; i++) {
			if (i % 5 == 1)
				expect_missing(db, "r", i);
			else
				expect_value(db, "r", i, i % 3 == 0 ? 2 : 1);
		}
		/* new writes after each restart survive the next one */
		for (int i = 0; i <= round; i++)
			for (int j = 0; j < 200; j++)
				cr_assert_eq(put(db, i ? "s1" : "s0", j, round), AMORA_OK);
		for (int i = 0; i <= round; i++)
			for (int j = 0; j < 200; j++)
				expect_value(db, i ? "s1" : "s0", j, round);
		amora_close(db);
	}
}

Test(engine, restart_twice_periodic)
{
	restart_twice("periodic");
}

Test(engine, restart_twice_always)
{
	restart_twice("always");
}

Test(engine, kill9_shard_under_load)
{
	_Atomic int *acked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t shards[16], writer;
	int status;
	amora *db;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	cr_assert_eq(proc_children(D.pid, shards, 16), 8);
	acked[0] = -1;
	writer = fork();
	if (writer == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(10);
		for (int i = 0; i < 4000; i++) {
			int rc = put(db, "k9", i, 1);

			if (rc != AMORA_OK) {
				fprintf(stderr, "write %d: %s: %s\n", i, amora_strerror(rc), amora_errmsg(db));
				_exit(11);
			}
			atomic_store(&acked[0], i);
		}
		_exit(amora_close(db) == AMORA_OK ? 0 : 12);
	}
	/* kill shards while the writer runs */
	for (int k = 0; k < 4; k++) {
		while (atomic_load(&acked[0]) < 500 * (k + 1) && waitpid(writer, NULL, WNOHANG) == 0)
			usleep(1000);
		kill(shards[k * 2], SIGKILL);
	}
	cr_assert_eq(waitpid(writer, &status, 0), writer);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer failed: %d", status);
	db = proc_open();
	for (int i = 0; i <= atomic_load(&acked[0]); i++)
		expect_value(db, "k9", i, 1);
	cr_assert_eq(amora_heartbeat(db), AMORA_OK, "%s", amora_errmsg(db));
	amora_close(db);
	cr_assert(proc_log_has(&D, "died (signal 9); restarting"));
}

static int info_field(const char *field)
{
	char cmd[512], line[256];
	int v = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "redis-cli -s %s info 2>/dev/null", D.sock);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, strlen(field)) == 0 && line[strlen(field)] == ':')
			v = atoi(line + strlen(field) + 1);
	pclose(f);
	return v;
}

Test(engine, kill9_client_mid_read_frees_its_slot)
{
	pid_t reader;
	amora *a, *b;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--max-clients", "2", NULL);
	a = proc_open();
	cr_assert_eq(put(a, "x", 1, 1), AMORA_OK);
	reader = fork();
	if (reader == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		amora *db;
		char buf[128];
		size_t vl;
		char k[64];
		int kl = proc_key(k, "x", 1);

		/* the slot of proc_start's probe may still be closing */
		for (uint64_t t0 = proc_now_ms(); amora_open(D.sock, &db) != AMORA_OK; usleep(5000))
			if (proc_now_ms() - t0 > 5000)
				_exit(10);
		for (;;)
			amora_get(db, k, (size_t)kl, buf, sizeof(buf), &vl);
	}
	/* both slots taken: a third client is refused with EBUSY */
	for (uint64_t t0 = proc_now_ms(); info_field("attached_clients") < 2; usleep(5000))
		cr_assert(proc_now_ms() - t0 < 10000, "reader never attached");
	cr_assert_eq(amora_open(D.sock, &b), AMORA_EBUSY);
	usleep(50000);
	kill(reader, SIGKILL);
	waitpid(reader, NULL, 0);
	/* the slot comes back, and writes (with reclamation) go on */
	for (uint64_t t0 = proc_now_ms(); amora_open(D.sock, &b) != AMORA_OK; usleep(5000))
		cr_assert(proc_now_ms() - t0 < 5000, "slot of the killed client never freed");
	for (int v = 2; v < 3000; v++)
		cr_assert_eq(put(b, "x", 1, v), AMORA_OK);
	expect_value(a, "x", 1, 2999);
	amora_close(b);
	amora_close(a);
}

Test(engine, kill9_amorad_shards_exit_and_recovery)
{
	pid_t shards[16];
	int n;
	amora *db;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	n = proc_children(D.pid, shards, 16);
	cr_assert_eq(n, 8);
	db = proc_open();
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(put(db, "a", i, 7), AMORA_OK);
	cr_assert_eq(proc_stop(&D, SIGKILL), -SIGKILL);
	/* the client notices */
	cr_assert_eq(put(db, "a", 0, 8), AMORA_EGONE);
	amora_close(db);
	for (uint64_t t0 = proc_now_ms();; usleep(5000)) {
		int alive = 0;

		for (int i = 0; i < n; i++)
			alive += proc_alive(shards[i]);
		if (alive == 0)
			break;
		cr_assert(proc_now_ms() - t0 < 5000, "%d shards outlived amorad", alive);
	}
	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	for (int i = 0; i < 1000; i++)
		expect_value(db, "a", i, 7);
	amora_close(db);
}

Test(engine, one_amorad_per_data_dir)
{
	char cmd[512];

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	snprintf(cmd, sizeof(cmd), AMORAD_BIN " --data-dir %s --shards 2 --memory 64M 2>&1 | grep -q 'another amorad'",
		 D.dir);
	cr_assert_eq(system(cmd), 0, "a second amorad on the same data dir was not refused");
}

Test(engine, redis_cli_ping)
{
	char cmd[512];

	if (system("command -v redis-cli >/dev/null") != 0)
		cr_skip_test("redis-cli is not installed (make deps installs redis-tools)");
	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	snprintf(cmd, sizeof(cmd), "redis-cli -s %s ping | grep -qx PONG", D.sock);
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "redis-cli -s %s info | grep -q shards_ready:2", D.sock);
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "redis-cli -s %s shutdown >/dev/null 2>&1; true", D.sock);
	cr_assert_eq(system(cmd), 0);
	int status;
	cr_assert_eq(waitpid(D.pid, &status, 0), D.pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	D.pid = 0;
}

/* A log write that fails: the client gets AMORA_EIO, the write is not in
 * the store after the shard restarts, and the store goes on. */
Test(engine, failed_log_write_changes_nothing)
{
	amora *db;
	int rc, failed = -1;

	proc_start_env(&D, "AMORA_WAL_FAULT=write:20:eio", "--shards", "1", "--memory", "64M", NULL);
	db = proc_open();
	/* 30 writes: the restarted shard inherits the fault plan, and its
	 * 20th write would fail again. */
	for (int i = 0; i < 30; i++) {
		rc = put(db, "f", i, 1);
		if (rc == AMORA_EIO && failed < 0)
			failed = i;
		else
			cr_assert_eq(rc, AMORA_OK, "write %d: %s %s", i, amora_strerror(rc), amora_errmsg(db));
	}
	cr_assert(failed >= 0, "the injected fault never surfaced");
	cr_assert(proc_log_has(&D, "restarting"));
	for (uint64_t t0 = proc_now_ms(); amora_heartbeat(db) != AMORA_OK; usleep(5000))
		cr_assert(proc_now_ms() - t0 < 5000, "the shard did not come back");
	expect_missing(db, "f", failed);
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	db = proc_open();
	for (int i = 0; i < 30; i++)
		if (i == failed)
			expect_missing(db, "f", i);
		else
			expect_value(db, "f", i, 1);
	amora_close(db);
}

/* Publish after the log: while a write's log write is under way (a slow
 * disk: the fault plan's slow rule holds one log write for SLOW_MS),
 * readers in other processes do not see it; they see it once the write
 * returned. A writer process times each synchronous set; the test polls
 * every key meanwhile and notes when it first saw each. */
Test(engine, write_invisible_until_its_log_write_returns)
{
	enum { KEYS = 10, SLOW_MS = 300 };
	struct times {
		_Atomic uint64_t start_ms[KEYS], ack_ms[KEYS];
	} *t = mmap(NULL, sizeof(*t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t seen_ms[KEYS] = { 0 };
	int slow = -1, status;
	pid_t writer;
	amora *db;

	cr_assert_neq(t, MAP_FAILED);
	proc_start_env(&D, "AMORA_WAL_FAULT=write:5:slow:300", "--shards", "1", "--memory", "64M", NULL);
	writer = fork();
	cr_assert(writer >= 0);
	if (writer == 0) {
		amora *w;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (amora_open(D.sock, &w) != AMORA_OK)
			_exit(1);
		for (int i = 0; i < KEYS; i++) {
			t->start_ms[i] = proc_now_ms();
			if (put(w, "p", i, 1) != AMORA_OK)
				_exit(2);
			t->ack_ms[i] = proc_now_ms();
		}
		_exit(0);
	}
	db = proc_open();
	for (bool done = false; !done;) {
		done = waitpid(writer, &status, WNOHANG) == writer; /* then one last look */
		for (int i = 0; i < KEYS; i++) {
			char k[64];
			size_t vlen;
			int kl = proc_key(k, "p", i);

			if (seen_ms[i] == 0 && amora_get(db, k, (size_t)kl, NULL, 0, &vlen) == AMORA_OK)
				seen_ms[i] = proc_now_ms();
		}
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the writer failed");
	for (int i = 0; i < KEYS; i++) {
		cr_assert_neq(seen_ms[i], 0, "key %d was never seen", i);
		if (t->ack_ms[i] - t->start_ms[i] >= SLOW_MS)
			slow = i;
	}
	cr_assert_geq(slow, 0, "no set met the slow log write");
	cr_assert_geq(seen_ms[slow] - t->start_ms[slow], SLOW_MS,
		      "key %d was visible %llu ms after its set began, before its log write returned",
		      slow, (unsigned long long)(seen_ms[slow] - t->start_ms[slow]));
	amora_close(db);
	munmap(t, sizeof(*t));
}

static int raw_fds[2];

/* Attach by hand, as a hostile client would: the channel is ours to
 * scribble on. Returns the channel mapping; *shards and *slot are set;
 * raw_fds holds the data segment (read-only) and the channel. */
static uint8_t *raw_attach(int *sock, uint32_t *shards, uint32_t *slot)
{
	static const char attach[] = "*1\r\n$12\r\nAMORA.ATTACH\r\n";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[512] = { 0 }, ctl[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
			      .msg_controllen = sizeof(ctl) };
	unsigned long long v[6];

	strcpy(sa.sun_path, D.sock);
	/* the slot of proc_start's probe may still be closing: retry BUSY */
	for (uint64_t t0 = proc_now_ms();; usleep(5000)) {
		*sock = socket(AF_UNIX, SOCK_STREAM, 0);
		cr_assert_eq(connect(*sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
		cr_assert_eq(send(*sock, attach, sizeof(attach) - 1, 0), (ssize_t)sizeof(attach) - 1);
		usleep(100000); /* the whole reply arrives in one message */
		cr_assert_gt(recvmsg(*sock, &msg, 0), 0);
		if (strncmp(buf, "-BUSY", 5) != 0)
			break;
		close(*sock);
		msg.msg_controllen = sizeof(ctl);
		cr_assert(proc_now_ms() - t0 < 5000, "no free slot");
	}
	cr_assert_eq(sscanf(buf, "*6\r\n:%llu\r\n:%llu\r\n:%llu\r\n:%llu\r\n:%llu\r\n:%llu",
			    &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]), 6, "reply: %s", buf);
	memcpy(raw_fds, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(raw_fds));
	*shards = (uint32_t)v[1];
	*slot = (uint32_t)v[4];
	uint8_t *chan = mmap(NULL, v[3], PROT_READ | PROT_WRITE, MAP_SHARED, raw_fds[1], 0);
	cr_assert(chan != MAP_FAILED);
	return chan;
}

/* Ring shard s for a raw client: as shm_chan_notify, waking it in any case. */
static void raw_notify(uint8_t *chan, uint32_t s)
{
	static _Atomic uint32_t asleep = 1;

	shm_chan_notify(shm_chan_words(chan, s), &asleep);
}

Test(engine, garbage_in_a_ring_cuts_off_only_that_client)
{
	uint32_t shards, slot;
	uint8_t *chan;
	struct shm_ring sq;
	char junk[64], c;
	int sock;
	amora *good;

	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	good = proc_open();
	chan = raw_attach(&sock, &shards, &slot);
	/* the memfds a client can write cannot be shrunk under the shards */
	cr_assert_neq(ftruncate(raw_fds[1], 0), 0, "a client could shrink its channel");
	/* nor can the data segment be mapped writable */
	cr_assert_eq(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, raw_fds[0], 0), MAP_FAILED);
	/* a record that is no request: bad op, reserved bytes set */
	memset(junk, 0xa5, sizeof(junk));
	cr_assert_eq(shm_ring_attach(&sq, shm_chan_sq_mem(chan, shards, 0), shm_chan_sq_bytes()), SHM_OK);
	cr_assert_eq(shm_ring_push(&sq, junk, sizeof(junk)), SHM_OK);
	shm_ring_publish(&sq);
	raw_notify(chan, 0);
	/* amorad hangs up on the bad client ... */
	struct timeval tv = { 5, 0 };
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(recv(sock, &c, 1, 0), 0, "amorad did not drop the client that sent garbage");
	cr_assert(proc_log_has(&D, "sent a malformed request; cut off"));
	/* ... and the others go on */
	for (int i = 0; i < 100; i++)
		cr_assert_eq(put(good, "g", i, 1), AMORA_OK);
	expect_value(good, "g", 99, 1);
	amora_close(good);
	close(sock);
}

/* A log damaged in the middle stops its shard with an error naming the
 * file and offset; the other shards serve, and that shard's keys answer
 * AMORA_ECORRUPT to writes instead of hanging. */
Test(engine, corrupt_log_inside_stops_only_its_shard)
{
	char path[512], k[64];
	struct stat st;
	amora *db;
	int fd, kl, found = -1;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--sync", "always", NULL);
	db = proc_open();
	for (int i = 0; i < 400; i++)
		cr_assert_eq(put(db, "c", i, 1), AMORA_OK);
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	/* flip a byte early in shard 0's first log segment */
	snprintf(path, sizeof(path), "%s/shard-00/wal-0000000000000001.log", D.dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "no %s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_gt(st.st_size, 2000);
	char b;
	cr_assert_eq(pread(fd, &b, 1, 200), 1);
	b ^= 0x40;
	cr_assert_eq(pwrite(fd, &b, 1, 200), 1);
	close(fd);
	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	cr_assert(proc_log_has(&D, "wal-0000000000000001.log"), "the error does not name the file");
	cr_assert(proc_log_has(&D, "corrupt log"));
	db = proc_open();
	amora_set_timeout(db, 2000);
	for (int i = 0; i < 400 && found < 0; i++) {
		kl = proc_key(k, "c", i);
		int rc = amora_set(db, k, (size_t)kl, "x", 1);
		if (rc == AMORA_EFAILED)
			found = i;
		else
			cr_assert_eq(rc, AMORA_OK, "%s", amora_errmsg(db));
	}
	cr_assert(found >= 0, "no write reached the failed shard");
	cr_assert_eq(amora_heartbeat(db), AMORA_EFAILED);
	amora_close(db);
}

/* A reader that never leaves its read section would stop every shard from
 * freeing memory; amorad cuts it off after 10 s. */
Test(engine, stuck_reader_is_cut_off, .timeout = 60)
{
	uint32_t shards, slot;
	uint8_t *chan;
	struct shm_chan_hdr *h;
	char c;
	int sock;
	amora *good;

	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
	good = proc_open();
	chan = raw_attach(&sock, &shards, &slot);
	h = (struct shm_chan_hdr *)chan;
	atomic_store(&h->epoch.epoch, 1); /* enter a read section, never leave */
	struct timeval tv = { 1, 0 };
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	uint64_t t0 = proc_now_ms();
	for (int i = 0;; i++) {
		/* overwrites retire records: the global epoch moves on */
		cr_assert_eq(put(good, "o", i % 10, i), AMORA_OK, "%s", amora_errmsg(good));
		if (recv(sock, &c, 1, MSG_DONTWAIT) == 0)
			break;
		cr_assert(proc_now_ms() - t0 < 30000, "the stuck reader was never cut off");
		usleep(2000);
	}
	cr_assert_geq(proc_now_ms() - t0, 9000, "cut off too early");
	cr_assert(proc_log_has(&D, "stayed in one read section"));
	amora_close(good);
	close(sock);
}

/* A process that once had a client slot keeps its mapping of that slot's
 * channel; the next client of the slot must get a channel of its own. */
Test(engine, recycled_slot_gets_a_new_channel)
{
	uint32_t shards, slot;
	uint8_t *old;
	int sock;
	amora *db = NULL;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--max-clients", "1", NULL);
	old = raw_attach(&sock, &shards, &slot);
	close(sock); /* detach, but keep the mapping */
	for (uint64_t t0 = proc_now_ms(); amora_open(D.sock, &db) != AMORA_OK; usleep(5000))
		cr_assert(proc_now_ms() - t0 < 5000, "the slot was never freed");
	/* the ex-client scribbles over everything it still maps */
	memset(old, 0xa5, shm_chan_bytes(shards));
	for (int i = 0; i < 200; i++)
		cr_assert_eq(put(db, "n", i, 1), AMORA_OK, "write %d: %s", i, amora_errmsg(db));
	expect_value(db, "n", 199, 1);
	amora_close(db);
}

/* Send `req` and QUIT on a new connection; the replies until amorad hangs
 * up go to out (NUL-terminated). */
static void raw_transcript(const char *req, char *out, size_t cap)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sock = socket(AF_UNIX, SOCK_STREAM, 0);
	size_t len = 0;
	ssize_t n;

	strcpy(sa.sun_path, D.sock);
	cr_assert_eq(connect(sock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(send(sock, req, strlen(req), 0), (ssize_t)strlen(req));
	cr_assert_eq(send(sock, "QUIT\r\n", 6, 0), 6);
	while (len < cap - 1 && (n = recv(sock, out + len, cap - 1 - len, 0)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(sock);
}

/* The command table's replies: names in any case, Redis's words for an
 * unknown command and a wrong number of arguments. */
Test(engine, commands_reply_like_redis)
{
	char out[1024];

	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	raw_transcript("PiNg\r\nping hello\r\nping a b\r\nfoo\r\nFOO a b\r\n"
		       "*2\r\n$12\r\nAMORA.ATTACH\r\n$1\r\nx\r\ncommand docs\r\n", out, sizeof(out));
	cr_assert_str_eq(out, "+PONG\r\n$5\r\nhello\r\n"
			 "-ERR wrong number of arguments for 'ping' command\r\n"
			 "-ERR unknown command 'foo', with args beginning with: \r\n"
			 "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
			 "-ERR wrong number of arguments for 'amora.attach' command\r\n"
			 "*0\r\n+OK\r\n");
}

/* amorad started on D.dir with `shards` must refuse (exit 1) with `why`. */
static void expect_refused(const char *shards, const char *why)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), AMORAD_BIN " --data-dir %s --shards %s --memory 64M 2>&1 | grep -q '%s'",
		 D.dir, shards, why);
	cr_assert_eq(system(cmd), 0, "amorad --shards %s on a %s-shard data dir did not say \"%s\"",
		     shards, SHARDS, why);
	snprintf(cmd, sizeof(cmd), AMORAD_BIN " --data-dir %s --shards %s --memory 64M >/dev/null 2>&1",
		 D.dir, shards);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 1);
}

/* Keys are placed by hash among --shards shards: a data dir written with
 * one count, read with another, would lose keys. The first amorad records
 * its count in amora.format; any other count is refused before a shard
 * starts, and a data dir from before the file is adopted only with the
 * count its shard directories show. */
Test(engine, a_data_dir_keeps_its_shard_count)
{
	char path[512], k[64], v[128];
	amora *db;
	FILE *f;

	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	for (int i = 0; i < 200; i++) {
		int kl = proc_key(k, "n", i), vl = proc_val(v, i, 1);
		cr_assert_eq(amora_set(db, k, (size_t)kl, v, (size_t)vl), AMORA_OK);
	}
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	snprintf(path, sizeof(path), "%s/amora.format", D.dir);
	f = fopen(path, "r");
	cr_assert_not_null(f, "no amora.format in a data dir amorad logged into");
	cr_assert_eq(fscanf(f, "amora-data 1 shards %d", &(int){ 0 }), 1);
	fclose(f);

	expect_refused("2", "holds the logs of " SHARDS " shards");
	expect_refused("16", "start it with --shards " SHARDS);
	/* A data dir from before the file: adopted with its own count only. */
	cr_assert_eq(unlink(path), 0);
	expect_refused("4", "holds " SHARDS " shard directories");
	proc_start(&D, "--shards", SHARDS, "--memory", "256M", NULL);
	db = proc_open();
	for (int i = 0; i < 200; i++)
		expect_value(db, "n", i, 1);
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	f = fopen(path, "r");
	cr_assert_not_null(f, "the adopted data dir got its amora.format");
	char line[64] = "";
	while (fgets(line, sizeof(line), f) != NULL && strncmp(line, "placement", 9) != 0)
		;
	fclose(f);
	cr_assert_str_eq(line, "placement key\n", "a data dir from before hash tags keeps whole-key placement");
	/* A format file this amorad does not know is refused, not rewritten. */
	f = fopen(path, "a");
	cr_assert_not_null(f);
	fputs("placement something-newer\n", f);
	fclose(f);
	expect_refused(SHARDS, "not a format this amorad knows");
}

/* What client_reap handed over, per request id. */
struct answers {
	int status[64];
	int runs;
	uint64_t last;
};

static void take_answer(void *arg, const struct client_done *d)
{
	struct answers *a = arg;

	cr_assert_eq(d->first, a->last + 1, "answers in id order, none twice or skipped");
	for (uint64_t id = d->first; id <= d->id; id++)
		a->status[id] = d->status;
	a->last = d->id;
	a->runs++;
}

/* A shard answers a run of successful writes of one client in one round
 * with one completion (chan.h, struct shm_chan_cqe); a failed one is
 * answered alone and ends the run. The client sees each id's own status. */
Test(engine, completions_answer_runs_of_writes)
{
	enum { N = 40, MISSING = 17 };
	struct answers a = { .last = 0 };
	struct client_ticket t;
	uint32_t shard = UINT32_MAX;
	char k[32];
	amora *db;

	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	db = proc_open();
	for (int i = 1; i <= N; i++) {
		int kl = snprintf(k, sizeof(k), i == MISSING ? "never-set" : "run:%d", i);
		uint8_t op = i == MISSING ? SHM_CHAN_OP_DEL : SHM_CHAN_OP_SET;

		cr_assert_eq(client_submit(db, op, k, (size_t)kl, "v", op == SHM_CHAN_OP_SET, &t), AMORA_OK);
		cr_assert_eq(t.id, (uint64_t)i);
		shard = t.shard;
	}
	client_publish(db, shard); /* one publication: the shard takes them in one round */
	for (uint64_t t0 = proc_now_ms(); a.last < N;) {
		cr_assert_geq(client_reap(db, shard, take_answer, &a), 0, "%s", amora_errmsg(db));
		cr_assert(proc_now_ms() - t0 < 10000, "answered up to %llu of %d", (unsigned long long)a.last, N);
	}
	for (int i = 1; i <= N; i++)
		cr_assert_eq(a.status[i], i == MISSING ? AMORA_ENOTFOUND : AMORA_OK, "request %d", i);
	/* 1..16 in one run, 17 alone; 18..40 in one or more later rounds. */
	cr_assert_lt(a.runs, N / 2, "%d completions for %d requests: runs were not coalesced", a.runs, N);
	cr_assert_geq(a.runs, 3);
	amora_close(db);
}

/* The shard whose log holds `key` (-1: none, -2: several). */
static int shard_logging(const char *key)
{
	char path[600], cmd[700];
	int found = -1;

	for (int s = 0; s < 4; s++) {
		snprintf(path, sizeof(path), "%s/shard-%02d", D.dir, s);
		snprintf(cmd, sizeof(cmd), "grep -qsF -- '%s' %s/wal-*.log", key, path);
		if (system(cmd) == 0)
			found = found == -1 ? s : -2;
	}
	return found;
}

/* A new data dir places keys by hash tag: keys sharing a tag are written
 * by one shard, whichever; untagged ones spread. */
Test(engine, keys_with_one_hash_tag_share_a_shard)
{
	char k[64], path[512], line[64] = "";
	int tagged = -1, spread = 0;
	amora *db;
	FILE *f;

	proc_start(&D, "--shards", "4", "--memory", "64M", NULL);
	db = proc_open();
	for (int i = 0; i < 32; i++) {
		int kl = snprintf(k, sizeof(k), "{user:42}:field%02d", i);
		cr_assert_eq(amora_set(db, k, (size_t)kl, "v", 1), AMORA_OK);
		kl = snprintf(k, sizeof(k), "plain:field%02d", i);
		cr_assert_eq(amora_set(db, k, (size_t)kl, "v", 1), AMORA_OK);
	}
	cr_assert_eq(amora_get(db, "{user:42}:field07", 17, NULL, 0, &(size_t){ 0 }), AMORA_OK);
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	for (int i = 0; i < 32; i++) {
		snprintf(k, sizeof(k), "{user:42}:field%02d", i);
		int s = shard_logging(k);
		cr_assert_geq(s, 0, "%s logged by %s", k, s == -1 ? "no shard" : "several shards");
		cr_assert(tagged == -1 || s == tagged, "%s in shard %d, the others of its tag in %d", k, s,
			  tagged);
		tagged = s;
		snprintf(k, sizeof(k), "plain:field%02d", i);
		s = shard_logging(k);
		cr_assert_geq(s, 0);
		spread |= 1 << s;
	}
	cr_assert_gt(__builtin_popcount((unsigned)spread), 1, "untagged keys spread over the shards");
	snprintf(path, sizeof(path), "%s/amora.format", D.dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f) != NULL && strncmp(line, "placement", 9) != 0)
		;
	fclose(f);
	cr_assert_str_eq(line, "placement tags\n");
}
