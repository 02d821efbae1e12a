/*
 * chan.h — a client's channel to the shards, and the shards' doorbells.
 *
 * Writes travel from a client to the shard that owns the key over shared
 * memory, never through the control socket. Each attached client has a
 * channel: a memfd of its own, created at attach, mapped read-write by the
 * client, by amorad and by every shard (sent over the shard's socket, or
 * inherited when the shard is forked later). A client can therefore damage
 * only its own channel, and a shard never trusts what it reads there.
 *
 * Channel layout (offsets from the start of the channel memfd):
 *
 *   0                      struct chan_hdr: geometry, the client's epoch
 *                          slot (epoch.h), the cut-off flag
 *   CHAN_HDR_BYTES + 8*s   shard s's "decided" word (below)
 *   chan_sq_mem(s)         shard s's submission ring (SQ: client produces
 *                          requests, shard consumes), then its completion
 *                          ring (CQ: shard produces, client consumes)
 *   chan_bulk_off()        the bulk area: one value too large for a ring
 *                          record (a request with CHAN_REQ_BULK)
 *
 * Geometry is a function of the shard count alone (chan_bytes), computed
 * by each side for itself: nothing in the header is trusted for layout.
 *
 * SQ record: struct chan_req, then klen key bytes, then vlen value bytes
 * (none when the value is in the bulk area). CQ record: struct chan_cqe.
 * Requests carry an id that grows by one per request on each (client,
 * shard) pair; completions echo it.
 *
 * Crash safety. A shard handles a round of requests in this order: apply
 * them, write them to its log, store in each client's "decided" word the
 * id of the last request taken from it, then publish the completions and
 * release the SQ space. A restarted shard re-reads the requests it had not
 * released. Those with an id up to the decided word were already applied
 * and logged: it only completes them again (as AMORA_OK), it never
 * re-applies them, since another client may have written the same key
 * since. The others were never acknowledged and are applied as new. The
 * client drops a completion whose id it has already seen. The word is in
 * the client's own memory: a client that forges it only confuses itself.
 *
 * Doorbells: one memfd shared by everybody (clients map it read-write), an
 * array of struct chan_doorbell, one per shard. A client that published
 * requests for shard s sets its slot's bit in pending[] (a locked RMW, so
 * also the full fence ring_bell_ring needs) and rings the bell. The shard
 * takes the bits with one exchange per word and sleeps on the bell when
 * they are all clear. A hostile client can set or clear bits here: extra
 * bits cost the shard an empty ring check, cleared bits delay others until
 * the shard's periodic sweep of every channel (CHAN_SWEEP_MS). Neither
 * corrupts anything.
 */
#ifndef AMORA_SHM_CHAN_H
#define AMORA_SHM_CHAN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "epoch.h"
#include "record.h"
#include "ring.h"

#define CHAN_MAGIC 0x4e4148434d524f4dULL /* "MORMCHAN" */
#define CHAN_VERSION 1u
#define CHAN_HDR_BYTES 4096u
#define CHAN_SQ_DATA (64u << 10)         /* SQ data bytes per shard */
#define CHAN_CQ_DATA (16u << 10)         /* CQ data bytes per shard */
#define CHAN_BULK_BYTES SHM_VALUE_MAX
#define CHAN_SWEEP_MS 200                /* shards look at every ring this often */

enum chan_op { CHAN_OP_SET = 1, CHAN_OP_DEL = 2 };
#define CHAN_REQ_BULK 0x1u
#define CHAN_CUT_BY_AMORAD 0xffffffffu

struct chan_req {
	uint64_t id;
	uint8_t op;      /* enum chan_op */
	uint8_t flags;   /* CHAN_REQ_BULK: the value is in the bulk area */
	uint16_t zero;   /* must be 0 */
	uint32_t klen;
	uint32_t vlen;
	uint32_t zero2;  /* must be 0 */
};

struct chan_cqe {
	uint64_t id;
	int32_t status;  /* an amora_err code (amora.h) */
	uint32_t zero;
	uint64_t seq;    /* sequence number the write got in its shard's log */
};

struct chan_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t shard_count;
	uint64_t bytes;
	uint32_t slot;   /* the client slot this channel is */
	uint32_t gen;    /* attach generation of that slot */
	struct shm_epoch_slot epoch;
	/* Shard id + 1 of a shard that cut this client off for garbage, or
	 * CHAN_CUT_BY_AMORAD (it held a read section far too long). */
	_Alignas(SHM_CACHELINE) _Atomic uint32_t cut_off;
};

struct chan_doorbell {
	struct ring_bell bell;
	uint32_t pad_[14];
	_Atomic uint64_t pending[]; /* bit c of word c/64: client slot c */
};

/* Bytes of one shard's SQ and CQ memory. */
size_t chan_sq_bytes(void);
size_t chan_cq_bytes(void);

/* Bytes of a channel for `shard_count` shards. */
size_t chan_bytes(uint32_t shard_count);
size_t chan_bulk_off(uint32_t shard_count);

/* Memory of shard s's rings and decided word inside a channel for
 * `shard_count` shards mapped at `base`. */
void *chan_sq_mem(void *base, uint32_t shard_count, uint32_t s);
void *chan_cq_mem(void *base, uint32_t shard_count, uint32_t s);
_Atomic uint64_t *chan_decided(void *base, uint32_t s);

/* Format a channel (amorad, while no client or shard uses it): header,
 * epoch slot owned by `pid`, every ring empty. Errors: SHM_EINVAL. */
int chan_format(void *base, uint32_t shard_count, uint32_t slot, uint32_t gen, int32_t pid);

/* Bytes of the doorbell array, and doorbell s inside it. */
size_t chan_doorbell_stride(uint32_t max_clients);
struct chan_doorbell *chan_doorbell_at(void *base, uint32_t max_clients, uint32_t s);

/* Client: tell shard s (its doorbell `d`) that slot `slot` has requests. */
void chan_notify(struct chan_doorbell *d, uint32_t slot);

/* A request copied out of a ring, checked. key and val point into the
 * caller's copy (or its copy of the bulk area). */
struct chan_op_view {
	uint64_t id;
	uint8_t op;
	uint8_t flags;
	uint32_t klen, vlen;
	const uint8_t *key;
	const uint8_t *val;
};

/* Check the shape of the request `rec` of `len` bytes (a private copy).
 * SHM_OK: *v is filled (key/value sizes may still exceed the limits: the
 * caller answers those with AMORA_EINVAL). SHM_ECORRUPT: the bytes are not
 * a request (bad op, flags, reserved bytes, lengths that disagree with
 * `len`): the client is broken or hostile. With CHAN_REQ_BULK the value is
 * not in `rec`: v->val is NULL and the caller copies vlen bytes (checked
 * against CHAN_BULK_BYTES here) from the bulk area. */
int chan_req_decode(const void *rec, uint32_t len, struct chan_op_view *v);

#endif
