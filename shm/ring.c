/*
 * ring.c — single-producer single-consumer byte ring in shared memory.
 *
 * What it is for
 * --------------
 * Every client talks to every shard over two of these rings (requests one
 * way, completions the other). The two ends are different processes that map
 * the ring at different addresses, so nothing in the ring is a pointer: the
 * header holds two free-running 64-bit byte positions, head (consumed, written
 * only by the consumer) and tail (produced, written only by the producer), and
 * the data area is indexed with position & (size - 1). A position never wraps
 * in practice (2^64 bytes), so tail - head is always the number of bytes in
 * use and no "full vs empty" ambiguity exists.
 *
 * Records are a u32 length, a u32 zero, the payload, rounded up to 8 bytes,
 * always contiguous so the consumer can hand out a pointer into the ring. A
 * record that does not fit before the end of the area is preceded by a pad
 * marker covering the rest of the area (see ring.h). Both halves of a push
 * (pad and record) are staged together, so a published pad is always followed
 * by a published record.
 *
 * Each side keeps private copies: the producer stages records past the shared
 * tail and makes a whole batch visible with one release store (shm_ring_publish);
 * the consumer steps past records privately and hands the space back with one
 * release store (shm_ring_release). Each side reads the other's position only when
 * its cached copy says "full" or "empty", so in the steady state the two cache
 * lines holding head and tail each move once per batch, not once per record.
 *
 * Trust
 * -----
 * The ring lives in memory the peer can write at any time, so the consumer
 * treats every byte it reads as hostile: the data size comes from its own
 * shm_ring_attach(), the tail it loads must be 8-aligned, not behind the last one
 * seen and at most `size` ahead of its head; every record header is loaded
 * once (volatile) into a local, its reserved word must be zero and its record
 * must lie inside both the published bytes and the contiguous rest of the
 * area; a pad must be followed by published bytes. Any violation is
 * SHM_ECORRUPT; nothing is read outside [data, data + size). The producer
 * likewise checks every head it loads (8-aligned, between the last head seen
 * and its own tail), so a hostile consumer cannot make it overwrite bytes not
 * yet consumed or compute a negative free space.
 *
 * Ordering
 * --------
 * Publishing data: the producer writes the record bytes, then stores tail with
 * memory_order_release; the consumer loads tail with memory_order_acquire
 * before it reads the records, so it sees complete bytes. Releasing space is
 * the mirror image (the consumer's reads of a record happen before its release
 * store of head; the producer's acquire load of head comes before it
 * overwrites that space).
 *
 * Wake-ups
 * --------
 * A bell is a futex word `seq` plus a `sleeping` flag. The sleeper does
 *
 *     s0 = load_acquire(seq)          (a)
 *     store(sleeping, 1)              (b)
 *     fence(seq_cst)
 *     if ready(): clear flag, return  (c)  e.g. load_acquire(tail) != head
 *     futex_wait(&seq, s0)
 *     store(sleeping, 0)
 *
 * and the waker does
 *
 *     store_release(tail, t)          (d)
 *     fence(seq_cst)
 *     if load(sleeping) and exchange(sleeping, 0):     (e)
 *         fetch_add(seq, 1); futex_wake(&seq)
 *
 * This is the store-buffering (Dekker) pattern: each side stores, issues a
 * seq_cst fence, then loads what the other stored. With the two fences in the
 * single total order of seq_cst operations, it is impossible for both loads
 * to miss: either (c) sees the new tail, and the sleeper does not sleep, or
 * (e) sees sleeping = 1, and the waker bumps seq. In the second case the bump
 * comes after (a) (the flag was stored after (a), and the acquire in (a)
 * keeps (b) from moving above it), so seq != s0 by the time of the bump:
 * either FUTEX_WAIT has not yet compared the word, and it returns EAGAIN at
 * once, or the sleeper is already queued on the futex, and FUTEX_WAKE wakes
 * it (the kernel compares the word and queues the waiter atomically with
 * respect to FUTEX_WAKE). So no wake-up is lost. And since the waker only
 * calls the kernel when the flag is set, no futex call is made while nobody
 * sleeps (FUTEX_WAKE on an empty queue is still a system call). The waker
 * clears the flag with the exchange, so a burst of publishes during the tens
 * of microseconds a sleeping CPU needs to wake issues one FUTEX_WAKE, not one
 * per publish. A stale flag (sleeper already awake) costs one useless
 * FUTEX_WAKE; a waker that is not the last to see the flag simply does
 * nothing. Callers always re-check the ring after shm_ring_bell_wait() returns.
 *
 * The futex calls are cross-process (no FUTEX_PRIVATE_FLAG): the word is in
 * a MAP_SHARED mapping, and the kernel keys the wait on the backing page.
 * A hostile peer can at worst wake us early (we re-check) or never wake us
 * (waits take a timeout).
 */
#include "shm/clock.h"
#include "shm/ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HDR_BYTES ((uint64_t)sizeof(struct shm_ring_hdr))

/* ---------- small helpers ---------- */

/* Bytes a record with `len` payload bytes takes: header + payload, 8-aligned. */
static inline uint64_t rec_bytes(uint32_t len)
{
	return 8 + (((uint64_t)len + 7) & ~(uint64_t)7);
}

/* Load a record header once. volatile: the compiler may not re-read it, so
 * a peer changing it after the check cannot change what we act on. */
static inline void load_rec_hdr(const uint8_t *p, uint32_t *len, uint32_t *rsv)
{
	const volatile uint32_t *w = (const volatile uint32_t *)(const void *)p;

	*len = w[0];
	*rsv = w[1];
}

static inline void store_rec_hdr(uint8_t *p, uint32_t len)
{
	uint32_t *w = (uint32_t *)(void *)p;

	w[0] = len;
	w[1] = 0;
}

/* Absolute CLOCK_MONOTONIC deadline in ns, or -1 for "no limit". */
static int64_t deadline_after(int timeout_ms)
{
	if (timeout_ms < 0)
		return -1;
	return (int64_t)shm_now_ns() + (int64_t)timeout_ms * 1000000;
}

static int deadline_passed(int64_t deadline)
{
	return deadline >= 0 && (int64_t)shm_now_ns() >= deadline;
}

/* Data bytes of a ring in `bytes` bytes of memory, 0 if too small. */
static uint64_t data_size(size_t bytes)
{
	uint64_t avail, size;

	if ((uint64_t)bytes < HDR_BYTES + SHM_RING_MIN_SIZE)
		return 0;
	avail = (uint64_t)bytes - HDR_BYTES;
	if (avail > SHM_RING_MAX_SIZE)
		avail = SHM_RING_MAX_SIZE;
	size = SHM_RING_MIN_SIZE;
	while (size * 2 <= avail)
		size *= 2;
	return size;
}

/* ---------- geometry ---------- */

size_t shm_ring_bytes(uint64_t size)
{
	return (size_t)(HDR_BYTES + size);
}

int shm_ring_format(void *mem, size_t bytes)
{
	struct shm_ring_hdr *h = mem;
	uint64_t size = data_size(bytes);

	if (mem == NULL || ((uintptr_t)mem & 63) != 0 || size == 0)
		return SHM_EINVAL;
	atomic_store_explicit(&h->head, 0, memory_order_relaxed);
	atomic_store_explicit(&h->space.seq, 0, memory_order_relaxed);
	atomic_store_explicit(&h->space.sleeping, 0, memory_order_relaxed);
	atomic_store_explicit(&h->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&h->data.seq, 0, memory_order_relaxed);
	atomic_store_explicit(&h->data.sleeping, 0, memory_order_relaxed);
	*(volatile uint64_t *)&h->size = size;
	atomic_thread_fence(memory_order_release);
	return 0;
}

int shm_ring_attach(struct shm_ring *r, void *mem, size_t bytes)
{
	struct shm_ring_hdr *h = mem;
	uint64_t size = data_size(bytes);
	uint64_t head, tail;

	if (r == NULL || mem == NULL || ((uintptr_t)mem & 63) != 0 || size == 0)
		return SHM_EINVAL;
	if (*(volatile uint64_t *)&h->size != size)
		return SHM_ECORRUPT;
	/* Whichever side we are, our own position is stable while we attach:
	 * head first, then tail keeps tail - head <= size for either side. */
	head = atomic_load_explicit(&h->head, memory_order_acquire);
	tail = atomic_load_explicit(&h->tail, memory_order_acquire);
	if (((head | tail) & 7) != 0 || tail - head > size)
		return SHM_ECORRUPT;

	memset(r, 0, sizeof(*r));
	r->hdr = h;
	r->data = (uint8_t *)mem + HDR_BYTES;
	r->size = size;
	r->mask = size - 1;
	r->head = r->released = head;
	r->tail = r->published = tail;
	return 0;
}

/* ---------- bells ---------- */

static long futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, 0);
}

/* shm_ring_bell_wait with an absolute deadline (ns, -1: none). */
static int bell_wait_until(struct shm_ring_bell *b, int (*ready)(void *), void *arg,
			   int64_t deadline)
{
	struct timespec ts, *tp = NULL;
	uint32_t s0;
	long rc;
	int err;

	s0 = atomic_load_explicit(&b->seq, memory_order_acquire);
	atomic_store_explicit(&b->sleeping, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	if (ready(arg)) {
		atomic_store_explicit(&b->sleeping, 0, memory_order_relaxed);
		return 0;
	}
	if (deadline >= 0) {
		int64_t left = deadline - (int64_t)shm_now_ns();

		if (left <= 0) {
			atomic_store_explicit(&b->sleeping, 0, memory_order_relaxed);
			return SHM_ETIMEDOUT;
		}
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tp = &ts;
	}
	rc = futex(&b->seq, FUTEX_WAIT, s0, tp);
	err = errno;
	atomic_store_explicit(&b->sleeping, 0, memory_order_relaxed);
	if (rc == 0 || err == EAGAIN || err == EINTR)
		return 0;
	if (err == ETIMEDOUT)
		return SHM_ETIMEDOUT;
	errno = err;
	return SHM_ESYS;
}

int shm_ring_bell_wait(struct shm_ring_bell *bell, int (*ready)(void *), void *arg, int timeout_ms)
{
	if (bell == NULL || ready == NULL)
		return SHM_EINVAL;
	return bell_wait_until(bell, ready, arg, deadline_after(timeout_ms));
}

int shm_ring_bell_ring(struct shm_ring_bell *bell)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&bell->sleeping, memory_order_relaxed))
		return 0;
	if (!atomic_exchange_explicit(&bell->sleeping, 0, memory_order_acq_rel))
		return 0;
	atomic_fetch_add_explicit(&bell->seq, 1, memory_order_release);
	futex(&bell->seq, FUTEX_WAKE, INT_MAX, NULL);
	return 1;
}

/* ---------- producer ---------- */

/* Bytes a record of `need` bytes costs at the staged tail, pad included. */
static uint64_t push_cost(const struct shm_ring *r, uint64_t need)
{
	uint64_t room = r->size - (r->tail & r->mask);

	return need <= room ? need : room + need;
}

/* Load the consumer's head and check it: 8-aligned, not behind the last head
 * seen, not past our tail. Then tail - head <= size still holds. */
static int refresh_head(struct shm_ring *r)
{
	uint64_t h = atomic_load_explicit(&r->hdr->head, memory_order_acquire);

	if ((h & 7) != 0 || h - r->head > r->tail - r->head)
		return SHM_ECORRUPT;
	r->head = h;
	return 0;
}

/* 1 if a record of `need` bytes fits now, 0 if not, or SHM_ECORRUPT. */
static int room_for(struct shm_ring *r, uint64_t need)
{
	uint64_t cost = push_cost(r, need);
	int rc;

	if (cost <= r->size - (r->tail - r->head))
		return 1;
	rc = refresh_head(r);
	if (rc < 0)
		return rc;
	return cost <= r->size - (r->tail - r->head);
}

int64_t shm_ring_space(struct shm_ring *r)
{
	int rc = refresh_head(r);

	if (rc < 0)
		return rc;
	return (int64_t)(r->size - (r->tail - r->head));
}

int shm_ring_push(struct shm_ring *r, const void *rec, uint32_t len)
{
	uint64_t need, idx, room;
	int rc;

	if (len > shm_ring_max_record(r))
		return SHM_ETOOBIG;
	need = rec_bytes(len);
	rc = room_for(r, need);
	if (rc <= 0)
		return rc < 0 ? rc : SHM_EFULL;

	idx = r->tail & r->mask;
	room = r->size - idx;
	if (need > room) {
		store_rec_hdr(r->data + idx, SHM_RING_PAD);
		r->tail += room;
		idx = 0;
	}
	store_rec_hdr(r->data + idx, len);
	if (len > 0) {
		memcpy(r->data + idx + 8, rec, len);
		/* Zero the round-up bytes so stale bytes never travel. */
		if (need - 8 > len)
			memset(r->data + idx + 8 + len, 0, need - 8 - len);
	}
	r->tail += need;
	return 0;
}

int shm_ring_publish(struct shm_ring *r)
{
	if (r->tail == r->published)
		return 0;
	atomic_store_explicit(&r->hdr->tail, r->tail, memory_order_release);
	r->published = r->tail;
	return shm_ring_bell_ring(&r->hdr->data);
}

struct space_wait {
	struct shm_ring *r;
	uint64_t need;
	int rc; /* 0, or SHM_ECORRUPT found while checking */
};

static int space_ready(void *arg)
{
	struct space_wait *w = arg;
	int rc = room_for(w->r, w->need);

	if (rc < 0)
		w->rc = rc;
	return rc != 0;
}

int shm_ring_wait_space(struct shm_ring *r, uint32_t len, int timeout_ms)
{
	struct space_wait w = { r, 0, 0 };
	int64_t deadline;
	int rc;

	if (len > shm_ring_max_record(r))
		return SHM_ETOOBIG;
	w.need = rec_bytes(len);
	shm_ring_publish(r);
	deadline = deadline_after(timeout_ms);
	for (;;) {
		if (space_ready(&w))
			return w.rc;
		if (deadline_passed(deadline))
			return SHM_ETIMEDOUT;
		rc = bell_wait_until(&r->hdr->space, space_ready, &w, deadline);
		if (rc == SHM_ETIMEDOUT)
			return space_ready(&w) ? w.rc : SHM_ETIMEDOUT;
		if (rc < 0)
			return rc;
	}
}

/* ---------- consumer ---------- */

/* Load the producer's tail and check it: 8-aligned, not behind the last tail
 * seen, at most size bytes past our head. */
static int refresh_tail(struct shm_ring *r)
{
	uint64_t t = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
	uint64_t used = t - r->head;

	if ((t & 7) != 0 || used > r->size || used < r->tail - r->head)
		return SHM_ECORRUPT;
	r->tail = t;
	return 0;
}

int shm_ring_peek(struct shm_ring *r, const void **rec, uint32_t *len)
{
	uint64_t avail, idx, room, need;
	uint32_t l, rsv;
	int rc;

	r->peeked = 0;
	if (r->tail == r->head) {
		rc = refresh_tail(r);
		if (rc < 0)
			return rc;
		if (r->tail == r->head)
			return SHM_EEMPTY;
	}
	avail = r->tail - r->head;
	idx = r->head & r->mask;
	room = r->size - idx;
	load_rec_hdr(r->data + idx, &l, &rsv);
	if (rsv != 0)
		return SHM_ECORRUPT;
	if (l == SHM_RING_PAD) {
		/* The pad covers [idx, size) and is always followed by a
		 * record published with it (this also rules out a pad at 0). */
		if (avail <= room)
			return SHM_ECORRUPT;
		r->head += room;
		avail -= room;
		idx = 0;
		room = r->size;
		load_rec_hdr(r->data, &l, &rsv);
		if (rsv != 0 || l == SHM_RING_PAD)
			return SHM_ECORRUPT;
	}
	if (l > shm_ring_max_record(r))
		return SHM_ECORRUPT;
	need = rec_bytes(l);
	if (need > room || need > avail)
		return SHM_ECORRUPT;
	*rec = r->data + idx + 8;
	*len = l;
	r->peeked = (uint32_t)need;
	return 0;
}

void shm_ring_consume(struct shm_ring *r)
{
	r->head += r->peeked;
	r->peeked = 0;
}

int shm_ring_release(struct shm_ring *r)
{
	if (r->head == r->released)
		return 0;
	atomic_store_explicit(&r->hdr->head, r->head, memory_order_release);
	r->released = r->head;
	return shm_ring_bell_ring(&r->hdr->space);
}

static int data_ready(void *arg)
{
	struct shm_ring *r = arg;

	return r->tail != r->head ||
	       atomic_load_explicit(&r->hdr->tail, memory_order_acquire) != r->head;
}

int shm_ring_wait_data(struct shm_ring *r, int timeout_ms)
{
	int64_t deadline;
	int rc;

	shm_ring_release(r);
	deadline = deadline_after(timeout_ms);
	for (;;) {
		if (data_ready(r))
			return 0;
		if (deadline_passed(deadline))
			return SHM_ETIMEDOUT;
		rc = bell_wait_until(&r->hdr->data, data_ready, r, deadline);
		if (rc == SHM_ETIMEDOUT)
			return data_ready(r) ? 0 : SHM_ETIMEDOUT;
		if (rc < 0)
			return rc;
	}
}
