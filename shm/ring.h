/*
 * ring.h — single-producer single-consumer byte ring in shared memory.
 *
 * The channel between a client and a shard: the client produces requests
 * into a submission ring, the shard produces completions into a completion
 * ring (io_uring's SQ/CQ, one producer and one consumer each). The two sides
 * live in different processes and map the ring at different addresses.
 *
 * Records are variable-size byte strings. Each occupies an 8-byte header
 * (u32 payload length, u32 reserved = 0) plus the payload, rounded up to 8
 * bytes, contiguous in the data area. A record that would cross the end of
 * the data area is preceded by a pad marker (length SHM_RING_PAD) that fills the
 * rest of the area, and starts again at offset 0. Hence the largest payload
 * is shm_ring_max_record() = size / 2 - 8: such a record always fits somewhere
 * once the ring is empty.
 *
 * Positions (head: consumed, tail: produced) are free-running byte counts;
 * the index into the data area is position & (size - 1). The producer
 * stages records with shm_ring_push() and makes a batch visible with one
 * shm_ring_publish(); the consumer reads with shm_ring_peek()/shm_ring_consume() and
 * frees space with one shm_ring_release(). Batching is how the rings go fast on
 * few cores: one wake-up per batch, not per record.
 *
 * Trust: the consumer never trusts the ring. The data size is what the
 * consumer's own shm_ring_attach() computed, not a value read from shared
 * memory; every header is range-checked against the published tail (and
 * its reserved word must be 0; a pad must be followed by published bytes); a
 * violation is SHM_ECORRUPT and the ring should be abandoned (the peer is
 * broken or hostile). A payload returned by shm_ring_peek() can still be changed
 * by a hostile producer while the consumer reads it: copy it before parsing.
 *
 * Wake-ups (never lost, never wasted): each direction has a bell, a futex
 * word plus a "sleeping" flag. A side about to sleep sets its flag, issues a
 * full fence and re-checks the ring; the other side publishes, issues a full
 * fence and checks the flag, bumping the futex word and calling FUTEX_WAKE
 * only if it is set. One of the two always sees the other, so no wake-up is
 * lost, and no futex call is made while nobody sleeps.
 */
#ifndef AMORA_SHM_RING_H
#define AMORA_SHM_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/err.h"

#define SHM_RING_PAD 0xffffffffu
#define SHM_RING_MIN_SIZE 64u
#define SHM_RING_MAX_SIZE (1ull << 32)

struct shm_ring_bell {
	_Atomic uint32_t seq;      /* futex word, bumped on each wake */
	_Atomic uint32_t sleeping; /* 1 while a waiter is (about to be) asleep */
};

/* Shared part, at the start of the ring's memory. */
struct shm_ring_hdr {
	_Alignas(64) _Atomic uint64_t head; /* written by the consumer */
	struct shm_ring_bell space;             /* producer waits here for room */
	_Alignas(64) _Atomic uint64_t tail; /* written by the producer */
	struct shm_ring_bell data;              /* consumer waits here for records */
	_Alignas(64) uint64_t size;         /* informational; never trusted */
};

/* Private view of one side. shm_ring_attach() does not know which side it
 * attaches, so it loads both positions (each side's own position is stable
 * while it attaches: only that side writes it) and each side then uses the
 * fields that belong to it. */
struct shm_ring {
	struct shm_ring_hdr *hdr;
	uint8_t *data;
	uint64_t size, mask;
	uint64_t head;      /* consumer: local head; producer: last head seen */
	uint64_t tail;      /* producer: staged tail; consumer: last tail seen */
	uint64_t published; /* producer: tail last stored in the header */
	uint64_t released;  /* consumer: head last stored in the header */
	uint32_t peeked;    /* consumer: bytes of the record last peeked, 0: none */
};

/* Bytes of shared memory a ring with `size` data bytes needs. */
size_t shm_ring_bytes(uint64_t size);

/* Initialise shared memory for a ring with the largest power-of-two data
 * area that fits in `bytes`, at most SHM_RING_MAX_SIZE (record lengths are u32).
 * Not to be called while either side is attached. Errors: SHM_EINVAL if less
 * than SHM_RING_MIN_SIZE data bytes fit or `mem` is not 64-byte aligned. */
int shm_ring_format(void *mem, size_t bytes);

/* Attach one side to ring memory of `bytes` bytes (the same figure given to
 * shm_ring_format). The geometry comes from `bytes`, never from the header. May
 * be called on a ring in use (e.g. by a restarted process) as long as the
 * side being attached is not running elsewhere.
 * Errors: SHM_EINVAL (bad `bytes` or alignment), SHM_ECORRUPT (the header's
 * size disagrees with `bytes`, or the positions are impossible). */
int shm_ring_attach(struct shm_ring *r, void *mem, size_t bytes);

/* Largest payload a record can have in this ring. */
static inline uint32_t shm_ring_max_record(const struct shm_ring *r)
{
	return (uint32_t)(r->size / 2 - 8);
}

/* --- producer --- */

/* Stage one record (not yet visible to the consumer). `rec` may be NULL
 * when `len` is 0. Errors: SHM_ETOOBIG (len > shm_ring_max_record), SHM_EFULL
 * (no room now), SHM_ECORRUPT (the shared head moved impossibly). */
int shm_ring_push(struct shm_ring *r, const void *rec, uint32_t len);

/* Free bytes for the producer right now (the consumer's head re-read), or
 * SHM_ECORRUPT. Records whose size divides the ring size (all of one size,
 * a power of two) never need a pad, so `space / size` of them fit. */
int64_t shm_ring_space(struct shm_ring *r);

/* Make staged records visible; wake the consumer if it sleeps. Returns 1 if
 * a wake-up was sent, 0 if not (also when nothing was staged). */
int shm_ring_publish(struct shm_ring *r);

/* Sleep until a record of `len` bytes fits or `timeout_ms` passes (-1, or
 * any negative value: no limit; 0: just check). Publishes staged records
 * first (the consumer cannot make room while it cannot see them). Returns 0,
 * SHM_ETIMEDOUT, SHM_ETOOBIG, SHM_ECORRUPT (the shared head moved
 * impossibly), SHM_ESYS. */
int shm_ring_wait_space(struct shm_ring *r, uint32_t len, int timeout_ms);

/* --- consumer --- */

/* Next record without consuming it. Returns 0 with *rec and *len set,
 * SHM_EEMPTY, or SHM_ECORRUPT (garbage: lengths or positions impossible). */
int shm_ring_peek(struct shm_ring *r, const void **rec, uint32_t *len);

/* Step past the record returned by the last successful shm_ring_peek. */
void shm_ring_consume(struct shm_ring *r);

/* Hand consumed space back to the producer; wake it if it sleeps.
 * Returns 1 if a wake-up was sent, 0 if not. */
int shm_ring_release(struct shm_ring *r);

/* Sleep until a record is available or `timeout_ms` passes (-1, or any
 * negative value: no limit; 0: just check). Releases consumed space first
 * (the producer may be waiting for it). Returns 0 (then shm_ring_peek; it may
 * still report SHM_ECORRUPT), SHM_ETIMEDOUT or SHM_ESYS. */
int shm_ring_wait_data(struct shm_ring *r, int timeout_ms);

/* --- bells, usable on their own --- */

/* Sleep on `bell` unless ready(arg) is true after announcing the sleep.
 * One sleeper per bell at a time; any number of ringers.
 * Returns 0 (ready, woken or interrupted by a signal; callers re-check),
 * SHM_ETIMEDOUT, SHM_ESYS, SHM_EINVAL (NULL bell or ready). */
int shm_ring_bell_wait(struct shm_ring_bell *bell, int (*ready)(void *), void *arg, int timeout_ms);

/* Wake the sleeper of `bell`, if any; call after publishing. Returns 1 if a
 * FUTEX_WAKE was issued. Clears the sleeping flag, so a burst of rings
 * while the sleeper is still waking issues one FUTEX_WAKE, not one each. */
int shm_ring_bell_ring(struct shm_ring_bell *bell);

#endif
