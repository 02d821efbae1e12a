/*
 * ckpt.c — a shard's checkpoints: trigger, start, the walker thread, and
 * what is deleted afterwards (ckpt.h; DESIGN.md §17).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm/batch.h"
#include "shm/chan.h"
#include "shm/clock.h"
#include "shm/table.h"
#include "shardd/ckpt.h"
#include "shardd/ckptfile.h"
#include "shardd/log.h"

#define WALK_GROUPS 64            /* groups copied per read section (1024 slots) */
#define WALK_BYTES (256u << 10)   /* ... or fewer once this much was copied */
#define KEEP 2                    /* checkpoints kept */

int ckpt_init(struct ckpt *c, struct shm_seg *seg, struct shm_writer *w, uint32_t id, uint32_t shards,
	      const char *dir, uint64_t floor_total, uint32_t factor)
{
	memset(c, 0, sizeof(*c));
	c->seg = seg;
	c->w = w;
	c->id = id;
	c->floor = floor_total / (shards ? shards : 1);
	c->factor = factor;
	c->dir = dir != NULL ? strdup(dir) : NULL;
	shm_epoch_slot_init(&c->slot, getpid());
	return dir != NULL && c->dir == NULL ? -1 : 0;
}

int ckpt_measure(struct ckpt *c, const struct wal *wal)
{
	struct ckpt_file *v;
	char why[600];
	size_t n;

	c->stat_base = wal->stat_bytes;
	if (wal->mode == WAL_SYNC_NONE)
		return 0;
	if (ckpt_list(c->dir, 0, &v, &n, why, sizeof(why)) == CKPT_OK) {
		c->newest = n > 0 ? v[n - 1].covered : 0;
		free(v);
	}
	/* closed segments, and what the current one holds */
	if (wal_drop_dir(c->dir, 0, wal->fd >= 0 ? wal->seg_first_seq : UINT64_MAX, &c->disk_base, why,
			 sizeof(why)) != WAL_OK) {
		log_warn("cannot measure the log: %s", why);
		return -1;
	}
	if (wal->fd >= 0)
		c->disk_base += wal->write_off;
	atomic_store_explicit(&shm_shard_at(c->seg, c->id)->log_disk, c->disk_base, memory_order_relaxed);
	c->since_base = wal->stat_bytes - c->disk_base; /* the log found counts as new */
	return 0;
}

static uint64_t disk_now(const struct ckpt *c, const struct wal *wal)
{
	return c->disk_base + (wal->stat_bytes - c->stat_base);
}

bool ckpt_wanted(const struct ckpt *c, const struct wal *wal)
{
	const struct shm_shard *sh = shm_shard_at(c->seg, c->id);
	uint64_t live, bound;

	if (c->running || wal->mode == WAL_SYNC_NONE || wal->failed)
		return false;
	if (atomic_load_explicit(&c->seg->hdr->amorad.ckpt_requested, memory_order_acquire) >
	    atomic_load_explicit(&sh->ckpt_served, memory_order_relaxed))
		return true;
	if (c->factor == 0 || wal->last_seq <= c->newest)
		return false;
	live = atomic_load_explicit(&sh->slab.requested_bytes, memory_order_relaxed);
	bound = live * c->factor > c->floor ? live * c->factor : c->floor;
	/* Past the bound, and half of it logged since the last one began: a
	 * checkpoint deletes the log before the one before it (KEEP), so the
	 * log on disk stays between half the bound and the bound. */
	return disk_now(c, wal) > bound && wal->stat_bytes - c->since_base >= bound / 2;
}

/* ---------- what the checkpoint carries ---------- */

static int carry(struct ckpt *c, uint64_t boot, uint64_t ref)
{
	if (c->ncarry == c->capcarry) {
		size_t n = c->capcarry ? c->capcarry * 2 : 64;
		struct walfmt_batch *v = realloc(c->carry, n * sizeof(*v));

		if (v == NULL)
			return -1;
		c->carry = v;
		c->capcarry = n;
	}
	c->carry[c->ncarry++] = (struct walfmt_batch){ boot, ref, c->id, 0 };
	return 0;
}

/* Decisions a part elsewhere may still need (DESIGN.md §17): this boot's
 * batches this shard committed whose word still shows holders, and
 * earlier boots' while any shard has not finished its recovery. */
static int collect_decisions(struct ckpt *c)
{
	bool all_ready = true;

	c->ncarry = 0;
	for (uint32_t s = 0; s < c->seg->hdr->shard_count; s++)
		if (atomic_load_explicit(&shm_shard_at(c->seg, s)->state, memory_order_acquire) != SHM_SHARD_READY)
			all_ready = false;
	if (all_ready) {
		c->old.n = 0; /* every shard resolved its earlier boots' parts */
	} else {
		for (size_t i = 0; i < c->old.n; i++)
			if (carry(c, c->old.v[i].boot, c->old.v[i].ref) != 0)
				return -1;
	}
	for (uint32_t slot = 0; slot < SHM_BATCH_SLOTS; slot++) {
		for (uint32_t i = 0; i < SHM_BATCH_WORDS; i++) {
			struct shm_batch_word *w = shm_batch_word(c->seg, shm_batch_ref(1, slot, i));
			uint64_t st = atomic_load(&w->state), tag = st >> 24;
			bool held = false;

			if (tag == 0 || (st & 15) != SHM_BATCH_COMMITTED || ((st >> 4) & 0xfffff) != c->id ||
			    atomic_load(&w->holders) != tag)
				continue;
			for (uint32_t m = 0; m < SHM_BATCH_MASK_WORDS; m++)
				held |= atomic_load(&w->mask[m]) != 0;
			if (held && carry(c, c->seg->hdr->boot, shm_batch_ref(tag, slot, i)) != 0)
				return -1;
		}
	}
	return 0;
}

/* ---------- the walker ---------- */

struct walk {
	struct ckpt *c;
	struct ckpt_writer cw;
	uint8_t *buf;        /* entries copied in a section: u64 seq, u32 klen, u32 vlen, key, value */
	size_t len, cap;
};

static int copy_entry(struct walk *k, const struct shm_kv *kv)
{
	size_t need = 16 + (size_t)kv->klen + kv->vlen;

	if (k->len + need > k->cap) {
		size_t n = k->cap * 2 > k->len + need ? k->cap * 2 : k->len + need;
		uint8_t *b = realloc(k->buf, n);

		if (b == NULL)
			return -1;
		k->buf = b;
		k->cap = n;
	}
	memcpy(k->buf + k->len, &kv->seq, 8);
	memcpy(k->buf + k->len + 8, &kv->klen, 4);
	memcpy(k->buf + k->len + 12, &kv->vlen, 4);
	memcpy(k->buf + k->len + 16, kv->key, kv->klen);
	memcpy(k->buf + k->len + 16 + kv->klen, kv->val, kv->vlen);
	k->len += need;
	return 0;
}

/* The value a key holds for the checkpoint: a plain record's, or for an
 * intent the record it replaces (its batch's records are in the log
 * after the replay seq, ckpt_start), or nothing. */
static int walk_slot(struct walk *k, uint64_t off)
{
	const struct shm_seg *seg = k->c->seg;
	struct shm_kv kv;

	if (off == 0 || shm_record_view(seg, off, &kv) != SHM_OK)
		return 0;
	if (kv.intent != NULL) {
		uint64_t prev = shm_intent_prev(&kv);

		if (prev == 0 || shm_record_view(seg, prev, &kv) != SHM_OK || kv.intent != NULL)
			return 0;
	}
	return copy_entry(k, &kv);
}

/* One read section: copy groups from *g on; *gen the table generation the
 * walk is on (it starts over at group 0 when it moved). Returns 1 when the
 * table is done, 0 to go on, -1 out of memory. */
static int walk_section(struct walk *k, uint64_t *g, uint64_t *gen)
{
	struct ckpt *c = k->c;
	const struct shm_shard *sh = shm_shard_at(c->seg, c->id);
	struct shm_table_view v;
	uint64_t off, now;
	int rc = 0;

	shm_epoch_enter(&c->slot, c->seg->hdr);
	off = atomic_load_explicit(&sh->table_off, memory_order_acquire);
	now = atomic_load_explicit(&c->w->tables, memory_order_acquire); /* after table_off: set_table */
	if (now != *gen) {
		*gen = now;
		*g = 0;
		c->walks++;
	}
	if (off == 0 || shm_table_view(c->seg, off, &v) != SHM_OK) {
		shm_epoch_leave(&c->slot);
		return 1;
	}
	for (uint64_t end = *g + WALK_GROUPS; rc == 0 && *g < v.ngroups && *g < end && k->len < WALK_BYTES;
	     (*g)++)
		for (unsigned i = 0; rc == 0 && i < SHM_GROUP_SLOTS; i++)
			rc = walk_slot(k, shm_table_view_record(&v, *g, i));
	shm_epoch_leave(&c->slot);
	if (rc != 0)
		return -1;
	return *g >= v.ngroups;
}

/* Write what a section copied. */
static int flush_copies(struct walk *k)
{
	for (size_t p = 0; p < k->len;) {
		uint64_t seq;
		uint32_t kl, vl;
		int rc;

		memcpy(&seq, k->buf + p, 8);
		memcpy(&kl, k->buf + p + 8, 4);
		memcpy(&vl, k->buf + p + 12, 4);
		rc = ckpt_writer_kv(&k->cw, seq, k->buf + p + 16, kl, k->buf + p + 16 + kl, vl);
		if (rc != CKPT_OK)
			return rc;
		k->c->kvs++;
		p += 16 + (size_t)kl + vl;
	}
	k->len = 0;
	return CKPT_OK;
}

/* Checkpoints beyond the KEEP newest go, and the log segments wholly
 * before the older kept one's replay seq. */
static int prune(struct ckpt *c)
{
	struct ckpt_file *v;
	char name[CKPT_NAME_LEN + 1], path[4400];
	size_t n;
	int rc = ckpt_list(c->dir, 0, &v, &n, c->why, sizeof(c->why));

	if (rc != CKPT_OK)
		return rc;
	for (size_t i = 0; i + KEEP < n; i++) {
		ckpt_name(name, v[i].covered, v[i].replay);
		snprintf(path, sizeof(path), "%s/%s", c->dir, name);
		if (unlink(path) != 0 && errno != ENOENT)
			log_warn("cannot remove old checkpoint %s: %s", path, strerror(errno));
	}
	/* the segments closed at ckpt_start are counted; what follows them is
	 * the log's stat_bytes since (ckpt_poll) */
	if (wal_drop_dir(c->dir, n >= KEEP ? v[n - KEEP].replay : 0, c->covered + 1, &c->left_bytes, c->why,
			 sizeof(c->why)) != WAL_OK)
		rc = CKPT_EIO;
	free(v);
	return rc;
}

static int walk_all(struct walk *k)
{
	uint64_t g = 0, gen = UINT64_MAX;
	int rc, done = 0;

	while (!done) {
		done = walk_section(k, &g, &gen);
		if (done < 0)
			return CKPT_ENOMEM;
		if ((rc = flush_copies(k)) != CKPT_OK)
			return rc;
	}
	for (size_t i = 0; i < k->c->ncarry; i++)
		if ((rc = ckpt_writer_decision(&k->cw, k->c->carry[i].boot, k->c->carry[i].ref, k->c->id)) != CKPT_OK)
			return rc;
	return CKPT_OK;
}

static void *walker(void *arg)
{
	struct ckpt *c = arg;
	struct walk k = { .c = c };
	int rc = ckpt_writer_open(&k.cw, c->dir, c->id, c->covered, c->replay, c->boot);

	if (rc == CKPT_OK && (rc = walk_all(&k)) != CKPT_OK) {
		if (rc == CKPT_ENOMEM)
			snprintf(k.cw.why, sizeof(k.cw.why), "out of memory walking the table");
		snprintf(c->why, sizeof(c->why), "%s", k.cw.why);
		ckpt_writer_abort(&k.cw);
	} else if (rc == CKPT_OK) {
		c->raw_bytes = k.cw.raw_bytes;
		rc = ckpt_writer_finish(&k.cw);
		c->file_bytes = k.cw.file_off;
		if (rc != CKPT_OK)
			snprintf(c->why, sizeof(c->why), "%s", k.cw.why);
	} else {
		snprintf(c->why, sizeof(c->why), "%s", k.cw.why);
	}
	if (rc == CKPT_OK)
		rc = prune(c);
	free(k.buf);
	c->rc = rc;
	atomic_store_explicit(&c->done, 1, memory_order_release);
	if (c->wake != NULL) {
		atomic_fetch_add_explicit(c->wake, 1, memory_order_release);
		shm_chan_word_wake(c->wake, 1);
	}
	return NULL;
}

/* ---------- the loop's side ---------- */

/* Recovery must replay from below the first record of every part still
 * open (its intents' records are not in the checkpoint). */
static uint64_t replay_seq(const struct batches *b, uint64_t covered)
{
	uint64_t r = covered;

	for (size_t i = 0; i < b->n; i++) {
		uint64_t f = batch_part_first_seq(b, i);

		if (f != 0 && f - 1 < r)
			r = f - 1;
	}
	return r;
}

int ckpt_start(struct ckpt *c, struct wal *wal, const struct batches *b)
{
	int rc;

	c->req = atomic_load_explicit(&c->seg->hdr->amorad.ckpt_requested, memory_order_acquire);
	c->covered = wal->last_seq;
	c->since_base = wal->stat_bytes;
	if (c->covered <= c->newest) {
		/* a request, and nothing logged since the newest: it serves */
		atomic_store_explicit(&shm_shard_at(c->seg, c->id)->ckpt_served, c->req, memory_order_release);
		return 0;
	}
	if (wal_rotate(wal) != WAL_OK) {
		log_error("checkpoint: cannot close the log segment: %s", wal_errmsg(wal));
		return -1;
	}
	c->replay = replay_seq(b, c->covered);
	c->boot = c->seg->hdr->boot;
	if (collect_decisions(c) != 0) {
		log_warn("checkpoint skipped: out of memory");
		atomic_store_explicit(&shm_shard_at(c->seg, c->id)->ckpt_served, c->req, memory_order_release);
		return 0;
	}
	c->kvs = c->walks = 0;
	c->why[0] = '\0';
	atomic_store_explicit(&c->done, 0, memory_order_relaxed);
	c->t0 = shm_now_ns();
	if ((rc = pthread_create(&c->thread, NULL, walker, c)) != 0) {
		log_warn("checkpoint skipped: no thread: %s", strerror(rc));
		atomic_store_explicit(&shm_shard_at(c->seg, c->id)->ckpt_served, c->req, memory_order_release);
		return 0;
	}
	c->running = true;
	return 0;
}

int ckpt_poll(struct ckpt *c, struct wal *wal)
{
	struct shm_shard *sh = shm_shard_at(c->seg, c->id);

	if (!c->running || !atomic_load_explicit(&c->done, memory_order_acquire))
		return 0;
	pthread_join(c->thread, NULL);
	c->running = false;
	if (c->rc != CKPT_OK) {
		/* Tried again once half the bound more was logged (since_base). */
		log_warn("checkpoint failed, the log is kept whole: %s", c->why);
		atomic_store_explicit(&sh->ckpt_served, c->req, memory_order_release);
		return 1;
	}
	/* What the walker found left of the segments closed at ckpt_start,
	 * and everything logged since. */
	c->disk_base = c->left_bytes;
	c->stat_base = c->since_base;
	log_msg(LOG_DEBUG, "checkpoint at seq %" PRIu64 " (replay from %" PRIu64 "): %" PRIu64
		" keys, %" PRIu64 " bytes (%" PRIu64 " raw), %.1f ms, %" PRIu64 " walks",
		c->covered, c->replay, c->kvs, c->file_bytes, c->raw_bytes,
		(double)(shm_now_ns() - c->t0) / 1e6, c->walks);
	c->newest = c->covered;
	atomic_store_explicit(&sh->ckpt_seq, c->covered, memory_order_relaxed);
	atomic_store_explicit(&sh->ckpt_bytes, c->file_bytes, memory_order_relaxed);
	atomic_store_explicit(&sh->log_disk, disk_now(c, wal), memory_order_relaxed);
	shm_counter_add(&sh->checkpoints, 1);
	atomic_store_explicit(&sh->ckpt_served, c->req, memory_order_release);
	return 1;
}

bool ckpt_final(const struct ckpt *c, const struct wal *wal)
{
	return wal->mode != WAL_SYNC_NONE && !wal->failed && wal->last_seq > c->newest;
}

void ckpt_wait(struct ckpt *c, struct wal *wal)
{
	struct timespec ts = { 0, 1000000 };

	while (c->running && !ckpt_poll(c, wal))
		nanosleep(&ts, NULL);
}
