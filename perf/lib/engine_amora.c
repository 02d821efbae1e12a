/*
 * engine_amora.c — the amora side of the benchmark engine (perf/lib/engine.h).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "perf/lib/engine.h"
#include "perf/lib/fail.h"

struct am_engine {
	struct engine e; /* first: e is the struct */
	amora *db;
	amora_iter *it; /* the scan's, or NULL */
};

static amora *am_db(struct engine *e)
{
	return ((struct am_engine *)e)->db;
}

static void am_fail(struct engine *e, const char *call, const char *k, size_t klen, int rc)
{
	bench_die("%s(%.*s): %s: %s", call, (int)klen, k, amora_strerror(rc), amora_errmsg(am_db(e)));
}

static void am_put(struct engine *e, const char *k, size_t klen, const char *v, size_t vlen)
{
	int rc = amora_set(am_db(e), k, klen, v, vlen);

	if (rc)
		am_fail(e, "amora_set", k, klen, rc);
}

static void am_put_buffered(struct engine *e, const char *k, size_t klen, const char *v, size_t vlen)
{
	int rc = amora_set_buffered(am_db(e), k, klen, v, vlen);

	if (rc)
		am_fail(e, "amora_set_buffered", k, klen, rc);
}

static void am_flush(struct engine *e)
{
	int rc = amora_flush(am_db(e));

	if (rc)
		bench_die("amora_flush: %s: %s", amora_strerror(rc), amora_errmsg(am_db(e)));
}

static long am_get(struct engine *e, const char *k, size_t klen, char *buf, size_t cap)
{
	size_t vlen;
	int rc = amora_get(am_db(e), k, klen, buf, cap, &vlen);

	if (rc == AMORA_OK)
		return (long)vlen;
	if (rc != AMORA_ENOTFOUND)
		am_fail(e, "amora_get", k, klen, rc);
	return -1;
}

static void am_del(struct engine *e, const char *k, size_t klen)
{
	int rc = amora_del(am_db(e), k, klen);

	if (rc)
		am_fail(e, "amora_del", k, klen, rc);
}

static void am_put_batch(struct engine *e, const struct amora_op *ops, size_t n)
{
	int rc = amora_batch(am_db(e), ops, n);

	if (rc)
		bench_die("amora_batch of %zu ops (first %.*s): %s: %s", n, n ? (int)ops[0].klen : 0,
			  n ? (const char *)ops[0].key : "", amora_strerror(rc), amora_errmsg(am_db(e)));
}

static void am_close(struct engine *e)
{
	amora_iter_close(((struct am_engine *)e)->it);
	int rc = amora_close(am_db(e));

	if (rc)
		bench_die("amora_close: %s", amora_strerror(rc));
	free(e);
}

static void am_memory(struct engine *e, struct engine_mem *m)
{
	struct amora_stats st;
	int rc = amora_stats(am_db(e), &st);

	if (rc)
		bench_die("amora_stats: %s", amora_strerror(rc));
	m->used = (double)st.memory_used;
	m->records = (double)st.record_bytes;
}

static void am_scan_open(struct engine *e, const char *prefix, size_t plen, uint64_t limit)
{
	struct am_engine *a = (struct am_engine *)e;
	struct amora_range r = { .prefix = prefix, .prefix_len = plen, .limit = limit };
	int rc;

	if (a->it)
		bench_die("amora scan_open: a scan is already open");
	rc = amora_iter_open(a->db, &r, &a->it);
	if (rc)
		am_fail(e, "amora_iter_open", prefix ? prefix : "", plen, rc);
}

static int am_scan_next(struct engine *e, const char **k, size_t *klen, const char **v, size_t *vlen)
{
	struct am_engine *a = (struct am_engine *)e;
	const void *kp, *vp;
	int rc = amora_iter_next(a->it, &kp, klen, &vp, vlen);

	if (rc < 0)
		bench_die("amora_iter_next: %s: %s", amora_strerror(rc), amora_errmsg(a->db));
	*k = kp, *v = vp;
	return rc;
}

static void am_scan_close(struct engine *e)
{
	struct am_engine *a = (struct am_engine *)e;

	amora_iter_close(a->it);
	a->it = NULL;
}

static const struct engine am_ops = {
	.name = "amora",
	.put = am_put,
	.put_buffered = am_put_buffered,
	.flush = am_flush,
	.get = am_get,
	.del = am_del,
	.put_batch = am_put_batch,
	.close = am_close,
	.memory = am_memory,
	.scan_open = am_scan_open,
	.scan_next = am_scan_next,
	.scan_close = am_scan_close,
};

struct engine *engine_amora(amora *db)
{
	struct am_engine *a = bench_malloc(sizeof(*a));

	a->e = am_ops;
	a->db = db;
	a->it = NULL;
	return &a->e;
}

static struct engine *am_attach(const char *dir, int writer)
{
	char sock[PATH_MAX];
	amora *db = NULL;
	int rc;

	(void)writer;
	snprintf(sock, sizeof(sock), "%s/amora.sock", dir);
	rc = amora_open(sock, &db);
	if (rc)
		bench_die("amora_open(%s): %s", sock, amora_strerror(rc));
	return engine_amora(db);
}

const struct engine_kind engine_amora_kind = { "amora", am_attach };
