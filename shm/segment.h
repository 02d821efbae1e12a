/*
 * segment.h — the shared-memory data segment and its chunk allocator.
 *
 * One memfd holds the whole store. Every process maps it at a different
 * address, so nothing inside it is a pointer: references are byte offsets
 * from the start of the segment, turned into pointers with shm_ptr(), which
 * checks the bounds first. A reader (a client mapping the segment PROT_READ)
 * must treat every offset it loads as untrusted until shm_ptr() accepted it.
 *
 * Layout (all offsets from the segment start):
 *
 *   0              struct shm_header   magic, version, layout, global epoch,
 *                                      chunk pool state, amorad's counters
 *   shard_off      struct shm_shard[shard_count]   one descriptor per shard
 *   batch_off      struct shm_batch_word[SHM_BATCH_SLOTS * SHM_BATCH_WORDS]
 *                                      atomic batches' status words (batch.h)
 *   chunk_next_off uint32_t[nchunks]   free-stack links, one per chunk
 *   chunk_owner_off uint32_t[nchunks]  shard id + 1 of the shard that owns
 *                                      each chunk (0: in the pool or lost)
 *   chunk_base     nchunks chunks of SHM_CHUNK_SIZE bytes, chunk_base aligned
 *                  to SHM_CHUNK_SIZE
 *
 * The file is created sparse: a page costs memory only once written.
 *
 * Chunk pool. Writers in several processes (the shards) take 2 MiB chunks
 * from one pool without a lock: single chunks come from a Treiber stack of
 * freed chunks whose head carries a 32-bit ABA tag next to the chunk index,
 * then from an atomic bump pointer over never-used chunks. Runs of several
 * contiguous chunks (large tables, Bloom filters, oversized records) come
 * only from the bump pointer; freeing a run pushes its chunks one by one, so
 * they serve later single-chunk requests. Exhaustion is SHM_ENOMEM.
 *
 * Ownership. A shard that takes chunks records itself as their owner
 * (shm_chunk_set_owner) and clears that before it frees them, so a
 * restarted shard can find every chunk it holds (slab.h, rebuild). A shard
 * killed between taking a chunk and recording it, or between clearing its
 * record and freeing it, loses that chunk (until amorad restarts): never
 * the other way round, which could put a chunk on the free stack twice.
 *
 * Counters (INFO, amora_server_stats, amora_shard_stats). Each counter has
 * exactly one writer, which adds with a relaxed load and a relaxed store
 * (shm_counter_add: no locked instruction); anyone reads it with a
 * relaxed load and gets a value it had, never a torn one. Counters are not a consistent
 * snapshot of each other, and a reader must not infer an order of other
 * memory from one, except where a field's comment names an ordering that
 * holds for it. They count from amorad's start (a new segment starts at
 * zero); a restarted shard goes on from its predecessor's counts. Each
 * writer's counters sit on a cache line of their own, so their stores do
 * not slow the readers of the lines next to them. amorad's are in the
 * header (struct shm_amorad_counters), a shard's in its descriptor (struct
 * shm_shard_counters); shm_store_stats and shm_shard_stats (shard.h) read
 * them.
 *
 * Limits: segment size at most SHM_MAX_SIZE (64 GiB: records are addressed
 * by 32-bit offsets in units of 16 bytes), shard count a power of two in
 * 1..SHM_MAX_SHARDS.
 */
#ifndef AMORA_SHM_SEGMENT_H
#define AMORA_SHM_SEGMENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/err.h"
#include "shm/slab.h"

#define SHM_MAGIC 0x4d48534152524f4dULL /* "MORRASHM" */
#define SHM_VERSION 7u /* 6: batch words, commit_no, boot; intents (record.h); 7: checkpoint words */
#define SHM_CHUNK_SHIFT 21
#define SHM_CHUNK_SIZE (1ULL << SHM_CHUNK_SHIFT) /* 2 MiB */
#define SHM_MAX_SIZE (64ULL << 30)
#define SHM_MAX_SHARDS 1024u
#define SHM_CACHELINE 64

/* Which bytes of a key pick its shard (shm_place, shard.h). A data
 * directory keeps the placement its logs were written with
 * (coordinator/datadir.c). */
enum shm_placement {
	SHM_PLACE_KEY = 0,  /* the whole key (directories made before hash tags) */
	SHM_PLACE_TAGS = 1, /* a hash tag's inside if the key has one, else the whole key */
};

/* Life of a shard process, as clients see it. */
enum shm_shard_state {
	SHM_SHARD_STARTING = 0, /* not yet serving writes (first start) */
	SHM_SHARD_READY = 1,    /* serving */
	SHM_SHARD_RESTARTING = 2,/* died; being restarted (reads go on) */
	SHM_SHARD_FAILED = 3,   /* stopped on an error it cannot recover from */
	SHM_SHARD_STOPPED = 4,  /* shut down with amorad */
};

/* Why a shard is FAILED (shm_shard.cause). */
enum shm_fail_cause {
	SHM_FAIL_NONE = 0,
	SHM_FAIL_CORRUPT_LOG = 1, /* corruption inside its log (amorad's log names file and offset) */
	SHM_FAIL_NOMEM = 2,       /* not enough shared memory to recover its data */
	SHM_FAIL_START = 3,       /* could not start (files, memory of its own) */
};

/* Add n to a counter the calling thread alone writes (see "Counters"
 * above): a relaxed load and a relaxed store, no locked instruction. Two
 * writers would lose counts. */
static inline void shm_counter_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* One shard's counters, on a cache line of their own at the end of its
 * descriptor: its writer adds to them once per round (or per periodic
 * sync), and readers loading table_off, seq or state from the first line
 * do not miss for it. Written only by the shard process (shardd.c) with
 * shm_counter_add; read with relaxed loads by anyone (INFO, libamora). */
struct shm_shard_counters {
	/* Requests answered: one per completion of a round (finish_round),
	 * failed ones and ones answered again after a restart included.
	 * Added before the round's completions are published, so a client
	 * that has reaped its completion (the CQ tail's release/acquire,
	 * DESIGN.md §5 #6) reads a count that includes its request. */
	_Atomic uint64_t requests;
	/* The log, as the shard's WAL counts it (struct wal, stat_*), added
	 * after each commit (before the round's completions, as above) and
	 * after each periodic sync. All 0 with --sync none (no files). */
	_Atomic uint64_t log_writes;  /* frames written: one write(2) per round with effects */
	_Atomic uint64_t log_records; /* effects in them (records / writes: the mean batch size) */
	_Atomic uint64_t log_bytes;   /* bytes of those frames, headers included */
	_Atomic uint64_t log_syncs;   /* fdatasync/fsync calls on the log: one per write
				       * (always), per interval (periodic), two per new
				       * segment, one per closed segment */
	/* Atomic batches (shardd/batch.h): decided by this shard as their
	 * primary, added after the round that decided them; and parts its
	 * recovery found open in its log and decided (shardd/recover.c). */
	_Atomic uint64_t batches_committed;
	_Atomic uint64_t batches_aborted;
	_Atomic uint64_t batch_parts_recovered;
};

/* amorad's counters and connection gauges (INFO's # Clients and # Stats),
 * in the segment header so that clients read them without a round trip:
 * every client maps the segment read-only already and nobody else can
 * write it (a channel is writable by its client; the registry is not
 * mapped by clients). A cache line of their own: amorad stores to it at
 * every command and connection, which must not invalidate the layout line
 * every reader loads, the epoch line or the pool line the shards CAS on.
 * Written only by amorad's one thread (shm_counter_add, relaxed stores),
 * read with relaxed loads; the shards, which inherit a writable mapping,
 * never write it. */
struct shm_amorad_counters {
	_Atomic uint64_t commands_processed;   /* commands whose handler ran (commands.c,
						* cmd_dispatch), counted after it: an INFO
						* reply does not count itself (as in Redis);
						* unknown commands and wrong arity not counted */
	_Atomic uint64_t connections_received; /* peers admitted as connections (admit.c) */
	_Atomic uint64_t connections_rejected; /* peers refused: allow-lists, limits, no
						* descriptor, no memory (admit.c) */
	_Atomic uint32_t connected_clients;    /* connections open now: stored when one
						* opens (before its first request is read)
						* or closes (server.c) */
	_Atomic uint32_t attached_clients;     /* of which attached libamora handles:
						* stored after each command and each close,
						* so a client that just attached may read
						* the count from before its attach */
	_Atomic uint64_t ckpt_requested;       /* checkpoint requests (AMORA.CHECKPOINT):
						* a shard whose ckpt_served is below it
						* writes one (shardd/ckpt.h) */
};

/* Per-shard descriptor. Written by the shard's writer, except state,
 * restarts and cause, which amorad also writes (supervise.c); read by all. */
struct shm_shard {
	_Atomic uint64_t table_off; /* current Swiss table (0: none yet) */
	_Atomic uint64_t index_off; /* current sorted index, a skip list (skiplist.h);
				     * 0: none (the store runs without one, or the
				     * shard is building it: see `sorted`) */
	_Atomic uint32_t sorted;    /* 1: the store keeps a sorted index (amorad's
				     * --sorted-index, set before the shards start,
				     * never changed while it runs) */
	_Atomic uint32_t bloom_on;  /* 1: lookups consult the Bloom filter */
	uint32_t id;
	_Atomic uint64_t seq;       /* last sequence number applied */
	_Atomic uint32_t state;     /* enum shm_shard_state, set by amorad and the shard */
	_Atomic uint32_t restarts;  /* times the shard process was restarted */
	_Atomic uint32_t cause;     /* enum shm_fail_cause while state is FAILED, else 0 */
	_Atomic uint32_t sleeping;  /* 1 while the shard sleeps (or is about to): clients wake it */
	/* Checkpoints (shardd/ckpt.h), stored by the shard when one is done
	 * (or failed: only ckpt_served): */
	_Atomic uint64_t ckpt_served; /* amorad's ckpt_requested when it began */
	_Atomic uint64_t ckpt_seq;    /* the log position the newest one covers */
	_Atomic uint64_t ckpt_bytes;  /* its file's size */
	_Atomic uint64_t log_disk;    /* log bytes on disk then (an estimate) */
	_Atomic uint64_t checkpoints; /* written since amorad started (one writer) */
	_Atomic uint32_t log_read;  /* 1 once this incarnation has read its log (and cut a torn
				     * tail): the batch decisions in it are final, and other
				     * shards may look them up (shardd/recover.c); 0 from its
				     * start until then */
	struct shm_slab slab;       /* this shard's record/table memory */
	/* The shard's counters (above); the struct's alignment pads the
	 * line, so nothing follows them on it. */
	_Alignas(SHM_CACHELINE) struct shm_shard_counters ctr;
} __attribute__((aligned(SHM_CACHELINE)));

struct shm_header {
	uint64_t magic;
	uint32_t version;
	uint32_t shard_count;
	uint64_t size;          /* bytes in the segment */
	uint64_t chunk_size;
	uint64_t shard_off;     /* offset of struct shm_shard[shard_count] */
	uint64_t shard_size;    /* sizeof(struct shm_shard) when created */
	uint64_t chunk_next_off;/* offset of uint32_t[nchunks] */
	uint64_t chunk_owner_off;/* offset of _Atomic uint32_t[nchunks] */
	uint64_t chunk_base;    /* offset of chunk 0 */
	uint32_t nchunks;
	uint32_t placement;     /* enum shm_placement: how keys map to shards (shard.h,
				 * shm_place); set by amorad before it seals the segment */
	uint64_t batch_off;     /* offset of the batch words (batch.h) */
	uint64_t boot;          /* random, set at creation: batch ids in the logs carry
				 * it, so a batch of an earlier segment is never taken
				 * for one of this segment's (batch.h) */
	/* Hot words each on their own line, so bumping the epoch does not
	 * invalidate the line every reader loads the layout from. */
	_Alignas(SHM_CACHELINE) _Atomic uint64_t global_epoch;
	/* The last commit number a batch took (batch.h, (p2)); readers'
	 * start numbers. */
	_Alignas(SHM_CACHELINE) _Atomic uint64_t commit_no;
	_Alignas(SHM_CACHELINE) _Atomic uint64_t chunk_bump; /* next never-used */
	_Atomic uint64_t chunk_free_top; /* tag << 32 | (index + 1); 0: empty */
	_Atomic uint64_t chunks_in_use;
	/* amorad's counters (above); the header's alignment pads the line,
	 * and the descriptors start on the next. */
	_Alignas(SHM_CACHELINE) struct shm_amorad_counters amorad;
};

/* A process's view of a segment. */
struct shm_seg {
	int fd;
	bool writable;
	uint8_t *base;
	uint64_t size;
	struct shm_header *hdr;
};

/* Create a new segment: sparse memfd of `size` bytes (rounded down to whole
 * chunks) mapped read-write, header and shard descriptors formatted.
 * Errors: SHM_EINVAL (size too small/large, bad shard count), SHM_ESYS. */
int shm_seg_create(struct shm_seg *seg, uint64_t size, uint32_t shard_count);

/* Map an existing segment fd. The header is validated (magic, version,
 * layout inside the file) before anything else is trusted.
 * Errors: SHM_ESYS, SHM_ECORRUPT (bad header). */
int shm_seg_attach(struct shm_seg *seg, int fd, bool writable);

/* Forbid new writable mappings from now on (F_SEAL_FUTURE_WRITE) and fix the
 * size. Mappings made before, and those inherited across fork(), stay
 * writable: call it after mapping, before forking writers. */
int shm_seg_seal(struct shm_seg *seg);

/* A new read-only fd for the same memfd (what a client receives). */
int shm_seg_reopen_rdonly(const struct shm_seg *seg);

void shm_seg_close(struct shm_seg *seg);

/* Pointer to `len` bytes at `off`, or NULL if any of them is outside the
 * segment or `off` is 0 (0 is the header, never a valid reference). */
static inline void *shm_ptr(const struct shm_seg *seg, uint64_t off, uint64_t len)
{
	if (off == 0 || off >= seg->size || len > seg->size - off)
		return NULL;
	return seg->base + off;
}

static inline uint64_t shm_off(const struct shm_seg *seg, const void *p)
{
	return (uint64_t)((const uint8_t *)p - seg->base);
}

/* amorad's counters (struct shm_amorad_counters), loaded one by one. */
struct shm_amorad_stats {
	uint64_t commands_processed, connections_received, connections_rejected;
	uint32_t connected_clients, attached_clients;
};
void shm_amorad_stats(const struct shm_seg *seg, struct shm_amorad_stats *out);

/* Descriptor of shard `i`; NULL if i >= shard_count. */
struct shm_shard *shm_shard_at(const struct shm_seg *seg, uint32_t i);

/* Take `n` contiguous chunks; *off receives the offset of the first.
 * Errors: SHM_ENOMEM, SHM_EINVAL (n == 0). Writers only. */
int shm_chunk_alloc(struct shm_seg *seg, uint32_t n, uint64_t *off);

/* Return `n` contiguous chunks starting at `off`.
 * Errors: SHM_ERANGE if the run is not a chunk-aligned run inside the pool. */
int shm_chunk_free(struct shm_seg *seg, uint64_t off, uint32_t n);

/* Record `owner` (a shard id + 1, or 0) for the n chunks from `off`.
 * Writers only, for chunks they hold. */
void shm_chunk_set_owner(struct shm_seg *seg, uint64_t off, uint32_t n, uint32_t owner);

/* Owner of the chunk holding `off` (0: none, or `off` outside the pool). */
uint32_t shm_chunk_owner(const struct shm_seg *seg, uint64_t off);

/* Offset of chunk `idx`, and the chunks ever handed out (indexes below). */
uint64_t shm_chunk_offset(const struct shm_seg *seg, uint32_t idx);
uint32_t shm_chunks_touched(const struct shm_seg *seg);

/* Chunks that are neither free nor never-used. */
uint64_t shm_chunks_in_use(const struct shm_seg *seg);

#endif
