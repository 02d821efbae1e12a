/*
 * engine.h — one key-value store as amora-bench's phases see it, so each
 * phase is written once and run against amora and LMDB alike.
 *
 * An engine is a struct of function pointers followed by the store's own
 * state: the phases call e->put(e, ...) and so on, one indirect call per
 * operation for both stores. Every operation either succeeds or dies
 * (perf/lib/fail.h) with the store's own error text; a get of an absent
 * key is not an error.
 *
 * amora: libamora on a running amorad; a write is as durable as amorad's
 * --sync mode makes it. LMDB: an environment in a dir, one write txn per
 * put or del (per batch for put_batch), a kept read txn renewed and
 * reset around each get (as an LMDB user who keeps a read txn handle
 * does). "periodic" LMDB opens the environment MDB_NOSYNC and calls
 * mdb_env_sync every 100 ms from the writing call that finds the interval
 * passed (its cost lands in that op), and once more at close; otherwise
 * each commit fsyncs (LMDB's default).
 *
 * Scans (one at a time per engine): amora an amora_iter (libclient/amora.h
 * "Scans"; the store must run with its sorted index); LMDB a cursor in the
 * kept read txn, renewed at scan_open and reset at scan_close: MDB_FIRST
 * or MDB_SET_RANGE on the prefix, then MDB_NEXT, ending at the first key
 * without the prefix or at the limit (no MDB_NEXT past the limit's entry).
 *
 * One engine is used by one thread; an engine is not carried across
 * fork(): a child attaches its own (struct engine_kind).
 */
#ifndef AMORA_PERF_ENGINE_H
#define AMORA_PERF_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "libclient/amora.h"

/* Bytes a store's data takes, as the store itself counts them. */
struct engine_mem {
	double used;    /* amora: amora_stats' memory_used (blocks the shards
			 * have written in their chunks, in use or free);
			 * LMDB: (mdb_env_info's me_last_pgno + 1) * the page
			 * size of mdb_env_stat: the data file's pages up to
			 * the last one in use (leaf, branch and free pages) */
	double records; /* amora: amora_stats' record_bytes (requested for
			 * records and tables); LMDB: -1 (none) */
};

struct engine {
	const char *name; /* "amora" or "lmdb", for messages */
	/* A write that returns once the store has it (as durable as opened). */
	void (*put)(struct engine *e, const char *k, size_t klen, const char *v, size_t vlen);
	/* A write that may wait in a buffer until the next flush. */
	void (*put_buffered)(struct engine *e, const char *k, size_t klen, const char *v,
			     size_t vlen);
	/* Makes every buffered write a done write (amora_flush | commit). */
	void (*flush)(struct engine *e);
	/* Copies min(length, cap) bytes of k's value to buf and returns its
	 * length, or -1 when k is absent. */
	long (*get)(struct engine *e, const char *k, size_t klen, char *buf, size_t cap);
	/* Deletes k, which must exist (an absent k dies). */
	void (*del)(struct engine *e, const char *k, size_t klen);
	/* Applies ops[0..n) (AMORA_OP_SET and AMORA_OP_DEL; a delete of an
	 * absent key is no error) all at once and returns once the store has
	 * them all (as durable as opened): amora one amora_batch; LMDB one
	 * write txn of the n puts and dels, committed (periodic: then the
	 * sync if due, as put). */
	void (*put_batch)(struct engine *e, const struct amora_op *ops, size_t n);
	/* Flushes what the store keeps for later (LMDB periodic: a last
	 * sync), closes and frees e. */
	void (*close)(struct engine *e);
	/* What the store's data takes now (call it after a flush). */
	void (*memory)(struct engine *e, struct engine_mem *m);
	/* Starts e's scan: the keys starting with prefix[0..plen) (plen 0:
	 * every key) in increasing key order, at most limit of them (0: no
	 * limit). Nothing is read yet. One scan at a time: scan_close ends
	 * it. */
	void (*scan_open)(struct engine *e, const char *prefix, size_t plen, uint64_t limit);
	/* The scan's next entry: 1 and *k, *klen, *v, *vlen (pointing into
	 * the store's or the iterator's memory, valid until the next call), or
	 * 0 at the end. */
	int (*scan_next)(struct engine *e, const char **k, size_t *klen, const char **v, size_t *vlen);
	/* Ends the scan (amora_iter_close | mdb_txn_reset). */
	void (*scan_close)(struct engine *e);
};

/* How any process gets an engine on the store set up in `dir`: amora's
 * attaches to the amorad serving dir (dir/amora.sock); LMDB's opens the
 * environment in dir, periodic for a writer (the 2 readers + 1 writer
 * phase). */
struct engine_kind {
	const char *name;
	struct engine *(*attach)(const char *dir, int writer);
};

extern const struct engine_kind engine_amora_kind, engine_lmdb_kind;

/* An engine on an open libamora handle; it owns db (amora_close at
 * close). The caller may use db for what only amora has (stats,
 * heartbeat) until it closes the engine. */
struct engine *engine_amora(amora *db);

/* LMDB in dir (an existing dir; 4 GiB map): periodic as above or
 * default durability; writer: the main db is opened by a write txn
 * (needed on an empty environment). */
struct engine *engine_lmdb_open(const char *dir, int periodic, int writer);

/* "LMDB 0.9.24: (July 24, 2019)" */
const char *engine_lmdb_version(void);

#endif
