/*
 * test_bank.c — bank transfers as atomic batches, with kill -9 of shards,
 * clients and amorad meanwhile (DESIGN.md §16).
 *
 * ACCOUNTS accounts over every shard. Writer processes move amounts
 * between two accounts of their own (each writer owns the accounts
 * i % WRITERS == w, so no two read-modify-writes race): mget both, then one
 * batch sets both and a transfer-id key t:<writer>:<n>. The test process
 * reads every account with one mget, again and again, and checks the total
 * (a transfer seen in half changes it), while it kills a shard, a writer
 * (respawned), and amorad (restarted; everyone reconnects). At the end,
 * after a clean restart, the total is exact and every acknowledged
 * transfer's id key is there. Once more with checkpoints every few hundred
 * transfers (DESIGN.md §17).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/proc.h"

#define SHARDS "8"
#define ACCOUNTS 2000
#define WRITERS 2
#define START 1000
#define MAX_TRANSFERS 200000

TestSuite(bank, .init = proc_init, .fini = proc_fini, .timeout = 240);

struct shared {
	_Atomic int stop;
	_Atomic uint64_t acked[WRITERS];            /* transfers acknowledged */
	_Atomic uint8_t ok[WRITERS][MAX_TRANSFERS]; /* 1: transfer n returned AMORA_OK */
};

static struct shared *S;
static const void *akeys[ACCOUNTS];
static size_t aklens[ACCOUNTS];
static char abuf[ACCOUNTS][16];

static void keys_init(void)
{
	for (int i = 0; i < ACCOUNTS; i++) {
		aklens[i] = (size_t)snprintf(abuf[i], sizeof(abuf[i]), "acct:%d", i);
		akeys[i] = abuf[i];
	}
}

struct bal {
	long v[ACCOUNTS];
	int n;
};

static void take_bal(void *arg, size_t i, const void *val, size_t vlen)
{
	struct bal *b = arg;
	char t[32];

	snprintf(t, sizeof(t), "%.*s", (int)vlen, (const char *)val);
	b->v[i] = atol(t);
	b->n++;
}

/* amora_open, retried while amorad restarts. */
static amora *connect_retry(void)
{
	amora *db;

	for (int i = 0; i < 3000; i++) {
		if (amora_open(D.sock, &db) == AMORA_OK)
			return db;
		usleep(10000);
	}
	return NULL;
}

/* An error after which the handle is of no more use. */
static bool handle_lost(int rc)
{
	return rc == AMORA_EGONE || rc == AMORA_EBADRING || rc == AMORA_ECORRUPT || rc == AMORA_EPROTO;
}

static void writer(int w)
{
	amora *db = connect_retry();
	uint64_t x = 88172645463325252ull ^ (uint64_t)(w + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (uint64_t n = atomic_load(&S->acked[w]) + 1; n < MAX_TRANSFERS && !atomic_load(&S->stop); n++) {
		int a, b, rc;
		long amt;
		struct bal bal = { .n = 0 };
		const void *k2[2];
		size_t l2[2];
		char va[32], vb[32], tk[32], tv[32];
		struct amora_op ops[3];

		if (db == NULL)
			_exit(20);
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		a = (int)(x % (ACCOUNTS / WRITERS)) * WRITERS + w;
		b = (int)((x >> 20) % (ACCOUNTS / WRITERS)) * WRITERS + w;
		if (a == b)
			continue;
		k2[0] = akeys[a], l2[0] = aklens[a];
		k2[1] = akeys[b], l2[1] = aklens[b];
		rc = amora_mget(db, 2, k2, l2, take_bal, &bal);
		if (rc != 2) {
			if (rc < 0 && handle_lost(rc)) {
				amora_close(db);
				db = connect_retry();
			}
			continue;
		}
		amt = (long)(x >> 40) % 10 + 1;
		if (bal.v[0] < amt)
			continue;
		snprintf(va, sizeof(va), "%ld", bal.v[0] - amt);
		snprintf(vb, sizeof(vb), "%ld", bal.v[1] + amt);
		snprintf(tk, sizeof(tk), "t:%d:%llu", w, (unsigned long long)n);
		snprintf(tv, sizeof(tv), "%d>%d:%ld", a, b, amt);
		ops[0] = (struct amora_op){ AMORA_OP_SET, akeys[a], aklens[a], va, strlen(va) };
		ops[1] = (struct amora_op){ AMORA_OP_SET, akeys[b], aklens[b], vb, strlen(vb) };
		ops[2] = (struct amora_op){ AMORA_OP_SET, tk, strlen(tk), tv, strlen(tv) };
		rc = amora_batch(db, ops, 3);
		if (rc == AMORA_OK) {
			atomic_store(&S->ok[w][n], 1);
			atomic_store(&S->acked[w], n);
		} else if (handle_lost(rc)) {
			amora_close(db);
			db = connect_retry();
		}
	}
	amora_close(db);
	_exit(0);
}

static pid_t spawn(int w)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0)
		writer(w);
	return pid;
}

/* The total of every account in one mget; -1 if the read failed (the
 * store restarting): *db is reconnected when it is lost. */
static long total(amora **db)
{
	static struct bal bal;
	long sum = 0;
	int rc;

	bal.n = 0;
	rc = amora_mget(*db, ACCOUNTS, akeys, aklens, take_bal, &bal);
	if (rc != ACCOUNTS) {
		if (rc < 0 && handle_lost(rc)) {
			amora_close(*db);
			*db = connect_retry();
			cr_assert_not_null(*db, "cannot reconnect");
		}
		return -1;
	}
	for (int i = 0; i < ACCOUNTS; i++)
		sum += bal.v[i];
	return sum;
}

/* Read and check for `ms`; returns the reads checked. */
static int check_for(amora **db, int ms)
{
	uint64_t end = proc_now_ms() + (uint64_t)ms;
	int reads = 0;

	while (proc_now_ms() < end) {
		long t = total(db);

		if (t >= 0) {
			cr_assert_eq(t, (long)ACCOUNTS * START, "a transfer seen in half: total %ld after %d reads", t,
				     reads);
			reads++;
		}
	}
	return reads;
}

/* ckpt_log: --checkpoint-min-log (64K: checkpoints every few hundred
 * transfers, each carrying open parts and decisions, DESIGN.md §17). */
static void bank(const char *sync, const char *ckpt_log)
{
	struct amora_op ops[500];
	pid_t w[WRITERS], shards[16];
	amora *db;
	int reads = 0, kills = 0;
	char v[16];

	S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(S, MAP_FAILED);
	keys_init();
	proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--sync", sync, "--checkpoint-min-log", ckpt_log,
		   NULL);
	db = proc_open();
	snprintf(v, sizeof(v), "%d", START);
	for (int i = 0; i < ACCOUNTS; i += 500) {
		for (int j = 0; j < 500; j++)
			ops[j] = (struct amora_op){ AMORA_OP_SET, akeys[i + j], aklens[i + j], v, strlen(v) };
		cr_assert_eq(amora_batch(db, ops, 500), AMORA_OK, "%s", amora_errmsg(db));
	}
	for (int i = 0; i < WRITERS; i++)
		w[i] = spawn(i);
	for (int round = 0; round < 8; round++) {
		reads += check_for(&db, 300);
		if (round == 3) {
			/* a writer, mid-batch or not */
			kill(w[0], SIGKILL);
			waitpid(w[0], NULL, 0);
			w[0] = spawn(0);
		} else if (round == 5) {
			cr_assert_eq(proc_stop(&D, SIGKILL), -SIGKILL);
			proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--sync", sync, "--checkpoint-min-log",
				   ckpt_log, NULL);
		} else {
			int n = proc_children(D.pid, shards, 16);

			cr_assert_gt(n, 0);
			kill(shards[(round * 3) % n], SIGKILL);
		}
		kills++;
	}
	reads += check_for(&db, 300);
	atomic_store(&S->stop, 1);
	for (int i = 0; i < WRITERS; i++) {
		int status;

		cr_assert_eq(waitpid(w[i], &status, 0), w[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d: status %d", i, status);
	}
	amora_close(db);
	cr_assert_eq(proc_stop(&D, SIGTERM), 0);
	proc_start(&D, "--shards", SHARDS, "--memory", "256M", "--sync", sync, "--checkpoint-min-log", ckpt_log,
		   NULL);
	db = proc_open();
	cr_assert_eq(total(&db), (long)ACCOUNTS * START, "total after a clean restart");
	for (int i = 0; i < WRITERS; i++) {
		uint64_t acked = 0;

		for (uint64_t n = 1; n < MAX_TRANSFERS; n++) {
			char tk[32];

			if (!atomic_load(&S->ok[i][n]))
				continue;
			snprintf(tk, sizeof(tk), "t:%d:%llu", i, (unsigned long long)n);
			cr_assert_eq(amora_has(db, tk, strlen(tk)), 1, "acknowledged transfer %s is missing", tk);
			acked++;
		}
		cr_assert_gt(acked, 10, "writer %d got few transfers through", i);
		cr_log_info("writer %d: %llu transfers acknowledged", i, (unsigned long long)acked);
	}
	cr_log_info("%d totals checked, %d kills", reads, kills);
	amora_close(db);
	munmap(S, sizeof(*S));
}

Test(bank, transfers_survive_kills_periodic)
{
	bank("periodic", "64M");
}

Test(bank, transfers_survive_kills_always)
{
	bank("always", "64M");
}

Test(bank, transfers_survive_kills_with_checkpoints)
{
	bank("periodic", "64K");
	cr_assert(proc_log_has(&D, "checkpoint ckpt-"), "no restart read a checkpoint");
}
