/*
 * engine_lmdb.c — the LMDB side of the benchmark engine (perf/lib/engine.h).
 */
#include <errno.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perf/lib/engine.h"
#include "perf/lib/fail.h"
#include "shm/clock.h"

#define LM_SYNC_INTERVAL_NS 100000000ull /* "periodic": mdb_env_sync every 100 ms */
#define LM_MAPSIZE ((size_t)4 << 30)

#define LM_CHECK(call)                                                                    \
	do {                                                                              \
		int rc_ = (call);                                                         \
		if (rc_ != 0)                                                             \
			bench_die("%s:%d: %s -> %s", __FILE__, __LINE__, #call, mdb_strerror(rc_)); \
	} while (0)

struct lm_engine {
	struct engine e; /* first: e is the struct */
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *rt;        /* the kept read txn, reset between gets */
	MDB_cursor *cur;    /* the scans' cursor on rt (renewed with it), or NULL */
	int scanning;       /* rt is renewed for a scan */
	MDB_cursor_op op;   /* the scan's next cursor op (MDB_FIRST, MDB_SET_RANGE, MDB_NEXT) */
	char prefix[512];   /* the scan's prefix */
	size_t plen;
	uint64_t left;      /* entries the scan may still return (UINT64_MAX: no limit) */
	MDB_txn *wt;        /* the buffered writes' open txn, or NULL */
	int periodic;       /* MDB_NOSYNC + mdb_env_sync every 100 ms */
	uint64_t last_sync;
};

static struct lm_engine *lm(struct engine *e)
{
	return (struct lm_engine *)e;
}

static void lm_sync_due(struct lm_engine *l)
{
	if (l->periodic) {
		uint64_t t = shm_now_ns();
		if (t - l->last_sync >= LM_SYNC_INTERVAL_NS) {
			LM_CHECK(mdb_env_sync(l->env, 1));
			l->last_sync = t;
		}
	}
}

static void lm_put(struct engine *e, const char *k, size_t klen, const char *v, size_t vlen)
{
	struct lm_engine *l = lm(e);
	MDB_val mk = { klen, (void *)k }, mv = { vlen, (void *)v };
	MDB_txn *t;

	LM_CHECK(mdb_txn_begin(l->env, NULL, 0, &t));
	LM_CHECK(mdb_put(t, l->dbi, &mk, &mv, 0));
	LM_CHECK(mdb_txn_commit(t));
	lm_sync_due(l);
}

static void lm_put_buffered(struct engine *e, const char *k, size_t klen, const char *v, size_t vlen)
{
	struct lm_engine *l = lm(e);
	MDB_val mk = { klen, (void *)k }, mv = { vlen, (void *)v };

	if (!l->wt)
		LM_CHECK(mdb_txn_begin(l->env, NULL, 0, &l->wt));
	LM_CHECK(mdb_put(l->wt, l->dbi, &mk, &mv, 0));
}

static void lm_flush(struct engine *e)
{
	struct lm_engine *l = lm(e);

	if (!l->wt)
		return;
	LM_CHECK(mdb_txn_commit(l->wt));
	l->wt = NULL;
	lm_sync_due(l);
}

static long lm_get(struct engine *e, const char *k, size_t klen, char *buf, size_t cap)
{
	struct lm_engine *l = lm(e);
	MDB_val mk = { klen, (void *)k }, mv;
	long r = -1;

	LM_CHECK(mdb_txn_renew(l->rt));
	int rc = mdb_get(l->rt, l->dbi, &mk, &mv);
	if (rc == 0) {
		memcpy(buf, mv.mv_data, mv.mv_size < cap ? mv.mv_size : cap);
		r = (long)mv.mv_size;
	} else if (rc != MDB_NOTFOUND) {
		bench_die("mdb_get(%.*s): %s", (int)klen, k, mdb_strerror(rc));
	}
	mdb_txn_reset(l->rt);
	return r;
}

static void lm_del(struct engine *e, const char *k, size_t klen)
{
	struct lm_engine *l = lm(e);
	MDB_val mk = { klen, (void *)k };
	MDB_txn *t;

	LM_CHECK(mdb_txn_begin(l->env, NULL, 0, &t));
	LM_CHECK(mdb_del(t, l->dbi, &mk, NULL));
	LM_CHECK(mdb_txn_commit(t));
	lm_sync_due(l);
}

static void lm_put_batch(struct engine *e, const struct amora_op *ops, size_t n)
{
	struct lm_engine *l = lm(e);
	MDB_txn *t;

	LM_CHECK(mdb_txn_begin(l->env, NULL, 0, &t));
	for (size_t i = 0; i < n; i++) {
		MDB_val mk = { ops[i].klen, (void *)ops[i].key }, mv = { ops[i].vlen, (void *)ops[i].val };
		int rc = ops[i].op == AMORA_OP_SET ? mdb_put(t, l->dbi, &mk, &mv, 0)
			 : ops[i].op == AMORA_OP_DEL ? mdb_del(t, l->dbi, &mk, NULL)
						     : EINVAL;
		if (rc && !(ops[i].op == AMORA_OP_DEL && rc == MDB_NOTFOUND))
			bench_die("lmdb batch op %zu (%.*s): %s", i, (int)ops[i].klen, (const char *)ops[i].key,
				  mdb_strerror(rc));
	}
	LM_CHECK(mdb_txn_commit(t));
	lm_sync_due(l);
}

static void lm_close(struct engine *e)
{
	struct lm_engine *l = lm(e);

	if (l->wt)
		mdb_txn_abort(l->wt);
	if (l->cur)
		mdb_cursor_close(l->cur);
	mdb_txn_abort(l->rt);
	if (l->periodic)
		LM_CHECK(mdb_env_sync(l->env, 1));
	mdb_env_close(l->env);
	free(l);
}

static void lm_memory(struct engine *e, struct engine_mem *m)
{
	struct lm_engine *l = lm(e);
	MDB_envinfo info;
	MDB_stat st;

	LM_CHECK(mdb_env_info(l->env, &info));
	LM_CHECK(mdb_env_stat(l->env, &st));
	m->used = ((double)info.me_last_pgno + 1) * st.ms_psize;
	m->records = -1;
}

static void lm_scan_open(struct engine *e, const char *prefix, size_t plen, uint64_t limit)
{
	struct lm_engine *l = lm(e);

	if (l->scanning)
		bench_die("lmdb scan_open: a scan is already open");
	if (plen > sizeof(l->prefix))
		bench_die("lmdb scan_open: prefix of %zu bytes", plen);
	LM_CHECK(mdb_txn_renew(l->rt));
	if (!l->cur)
		LM_CHECK(mdb_cursor_open(l->rt, l->dbi, &l->cur));
	else
		LM_CHECK(mdb_cursor_renew(l->rt, l->cur));
	l->scanning = 1;
	if (plen)
		memcpy(l->prefix, prefix, plen);
	l->plen = plen;
	l->op = plen ? MDB_SET_RANGE : MDB_FIRST;
	l->left = limit ? limit : UINT64_MAX;
}

static int lm_scan_next(struct engine *e, const char **k, size_t *klen, const char **v, size_t *vlen)
{
	struct lm_engine *l = lm(e);
	MDB_val mk = { l->plen, l->prefix }, mv;

	if (l->left == 0)
		return 0;
	int rc = mdb_cursor_get(l->cur, &mk, &mv, l->op);
	if (rc == MDB_NOTFOUND) {
		l->left = 0;
		return 0;
	}
	if (rc)
		bench_die("mdb_cursor_get: %s", mdb_strerror(rc));
	if (l->plen && (mk.mv_size < l->plen || memcmp(mk.mv_data, l->prefix, l->plen) != 0)) {
		l->left = 0;
		return 0;
	}
	l->op = MDB_NEXT;
	l->left--;
	*k = mk.mv_data, *klen = mk.mv_size;
	*v = mv.mv_data, *vlen = mv.mv_size;
	return 1;
}

static void lm_scan_close(struct engine *e)
{
	struct lm_engine *l = lm(e);

	if (l->scanning)
		mdb_txn_reset(l->rt);
	l->scanning = 0;
}

static const struct engine lm_ops = {
	.name = "lmdb",
	.put = lm_put,
	.put_buffered = lm_put_buffered,
	.flush = lm_flush,
	.get = lm_get,
	.del = lm_del,
	.put_batch = lm_put_batch,
	.close = lm_close,
	.memory = lm_memory,
	.scan_open = lm_scan_open,
	.scan_next = lm_scan_next,
	.scan_close = lm_scan_close,
};

struct engine *engine_lmdb_open(const char *dir, int periodic, int writer)
{
	struct lm_engine *l = bench_malloc(sizeof(*l));
	MDB_txn *t;

	memset(l, 0, sizeof(*l));
	l->e = lm_ops;
	l->periodic = periodic;
	LM_CHECK(mdb_env_create(&l->env));
	LM_CHECK(mdb_env_set_mapsize(l->env, LM_MAPSIZE));
	LM_CHECK(mdb_env_open(l->env, dir, periodic ? MDB_NOSYNC : 0, 0644));
	LM_CHECK(mdb_txn_begin(l->env, NULL, writer ? 0 : MDB_RDONLY, &t));
	LM_CHECK(mdb_dbi_open(t, NULL, 0, &l->dbi));
	LM_CHECK(mdb_txn_commit(t));
	LM_CHECK(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &l->rt));
	mdb_txn_reset(l->rt);
	l->last_sync = shm_now_ns();
	return &l->e;
}

static struct engine *lm_attach(const char *dir, int writer)
{
	return engine_lmdb_open(dir, writer, writer);
}

const struct engine_kind engine_lmdb_kind = { "lmdb", lm_attach };

const char *engine_lmdb_version(void)
{
	return mdb_version(NULL, NULL, NULL);
}
