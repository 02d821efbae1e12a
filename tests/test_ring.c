/*
 * test_ring.c — tests for shm/ring.c (SPSC byte ring in shared memory).
 *
 * Unit tests drive both sides of one ring from one process (two struct shm_ring
 * attached to the same memory); the bell tests put the sleeper in a thread;
 * the garbage tests scribble on the shared memory the way a broken or hostile
 * peer could and check that the consumer says SHM_ECORRUPT and never reads
 * outside the ring (the ring memory is allocated to its exact size, so ASan
 * catches a stray read). The stress tests run producer and consumer in two
 * processes over a memfd, with phases that force each side to sleep.
 *
 * Only the stress tests carry a .timeout: every wait in the other tests is
 * bounded by the ring's own timeouts, and Criterion 2.4.1's runner leaks 48
 * bytes per timed test that overlaps another under --jobs 2, which
 * LeakSanitizer reports in any ASan run without a suppression.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/ring.h"

#define DSIZE 4096u

static const uint8_t zeros[DSIZE];

/* ---------- helpers ---------- */

static void *ring_mem(uint64_t dsize, size_t *bytes)
{
	size_t n = shm_ring_bytes(dsize);
	void *m = aligned_alloc(64, n);

	cr_assert_not_null(m);
	memset(m, 0xa5, n); /* not zero: format must not rely on it */
	*bytes = n;
	return m;
}

/* Format a ring of dsize data bytes with both positions starting at `pos`
 * (as after a long run) and attach a producer and a consumer. */
static void *mk_ring_at(uint64_t dsize, uint64_t pos, struct shm_ring *p, struct shm_ring *c)
{
	size_t bytes;
	void *m = ring_mem(dsize, &bytes);
	struct shm_ring_hdr *h = m;

	cr_assert_eq(shm_ring_format(m, bytes), 0);
	atomic_store(&h->head, pos);
	atomic_store(&h->tail, pos);
	cr_assert_eq(shm_ring_attach(p, m, bytes), 0);
	cr_assert_eq(shm_ring_attach(c, m, bytes), 0);
	return m;
}

/* Same, from a freshly formatted ring. */
static void *mk_ring(uint64_t dsize, struct shm_ring *p, struct shm_ring *c)
{
	return mk_ring_at(dsize, 0, p, c);
}

static void fill(uint8_t *b, uint32_t len, uint32_t tag)
{
	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(tag * 31 + i * 7 + (i >> 8));
}

static int check(const uint8_t *b, uint32_t len, uint32_t tag)
{
	for (uint32_t i = 0; i < len; i++)
		if (b[i] != (uint8_t)(tag * 31 + i * 7 + (i >> 8)))
			return 0;
	return 1;
}

static void push_tag(struct shm_ring *p, uint32_t len, uint32_t tag)
{
	uint8_t buf[4096];

	fill(buf, len, tag);
	cr_assert_eq(shm_ring_push(p, buf, len), 0, "push len %u tag %u", len, tag);
}

static void pop_tag(struct shm_ring *c, uint32_t len, uint32_t tag)
{
	const void *rec;
	uint32_t l;

	cr_assert_eq(shm_ring_peek(c, &rec, &l), 0, "peek tag %u", tag);
	cr_assert_eq(l, len, "tag %u: len %u, want %u", tag, l, len);
	cr_assert(check(rec, l, tag), "tag %u: payload differs", tag);
	shm_ring_consume(c);
}

/* shm_ring_peek's return code, for when the record itself does not matter. */
static int peek_status(struct shm_ring *c)
{
	const void *rec;
	uint32_t len;

	return shm_ring_peek(c, &rec, &len);
}

static int64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t hdr_len(const struct shm_ring *r, uint64_t pos)
{
	uint32_t v;

	memcpy(&v, r->data + (pos & r->mask), 4);
	return v;
}

static void put_hdr(struct shm_ring *r, uint64_t pos, uint32_t len, uint32_t rsv)
{
	memcpy(r->data + (pos & r->mask), &len, 4);
	memcpy(r->data + (pos & r->mask) + 4, &rsv, 4);
}

/* ---------- geometry ---------- */

Test(ring, geometry)
{
	size_t bytes;
	void *m = ring_mem(DSIZE, &bytes);
	struct shm_ring r;

	cr_assert_eq(sizeof(struct shm_ring_hdr) % 64, 0);
	cr_assert_eq(bytes, sizeof(struct shm_ring_hdr) + DSIZE);
	cr_assert_eq(shm_ring_format(m, bytes), 0);
	cr_assert_eq(shm_ring_attach(&r, m, bytes), 0);
	cr_assert_eq(r.size, DSIZE);
	cr_assert_eq(r.mask, DSIZE - 1);
	cr_assert_eq((uint8_t *)r.data, (uint8_t *)m + sizeof(struct shm_ring_hdr));
	cr_assert_eq(((uintptr_t)r.data) % 64, 0);
	cr_assert_eq(shm_ring_max_record(&r), DSIZE / 2 - 8);
	cr_assert_eq(((struct shm_ring_hdr *)m)->size, DSIZE);

	/* A few bytes short of a power of two: the next one down. */
	cr_assert_eq(shm_ring_format(m, bytes - 8), 0);
	cr_assert_eq(shm_ring_attach(&r, m, bytes - 8), 0);
	cr_assert_eq(r.size, DSIZE / 2);
	/* Extra bytes are not used. */
	cr_assert_eq(shm_ring_format(m, bytes), 0);
	cr_assert_eq(shm_ring_attach(&r, m, shm_ring_bytes(DSIZE / 2) + 100), SHM_ECORRUPT,
		     "bytes disagreeing with the header must be refused");
	free(m);
}

Test(ring, geometry_errors)
{
	size_t bytes;
	uint8_t *m = ring_mem(DSIZE, &bytes);
	struct shm_ring r;
	struct shm_ring_hdr *h = (struct shm_ring_hdr *)m;

	cr_assert_eq(shm_ring_format(NULL, bytes), SHM_EINVAL);
	cr_assert_eq(shm_ring_format(m + 8, bytes - 64), SHM_EINVAL, "misaligned");
	cr_assert_eq(shm_ring_format(m, shm_ring_bytes(SHM_RING_MIN_SIZE) - 1), SHM_EINVAL);
	cr_assert_eq(shm_ring_format(m, 0), SHM_EINVAL);
	cr_assert_eq(shm_ring_format(m, shm_ring_bytes(SHM_RING_MIN_SIZE)), 0);
	cr_assert_eq(shm_ring_attach(&r, m, shm_ring_bytes(SHM_RING_MIN_SIZE)), 0);
	cr_assert_eq(r.size, SHM_RING_MIN_SIZE);
	cr_assert_eq(shm_ring_max_record(&r), SHM_RING_MIN_SIZE / 2 - 8);

	cr_assert_eq(shm_ring_format(m, bytes), 0);
	cr_assert_eq(shm_ring_attach(NULL, m, bytes), SHM_EINVAL);
	cr_assert_eq(shm_ring_attach(&r, NULL, bytes), SHM_EINVAL);
	cr_assert_eq(shm_ring_attach(&r, m + 8, bytes - 64), SHM_EINVAL);
	cr_assert_eq(shm_ring_attach(&r, m, 10), SHM_EINVAL);

	/* Positions that cannot happen are refused at attach. */
	atomic_store(&h->tail, DSIZE + 8);
	cr_assert_eq(shm_ring_attach(&r, m, bytes), SHM_ECORRUPT);
	atomic_store(&h->tail, 12);
	cr_assert_eq(shm_ring_attach(&r, m, bytes), SHM_ECORRUPT);
	atomic_store(&h->head, 16);
	atomic_store(&h->tail, 8);
	cr_assert_eq(shm_ring_attach(&r, m, bytes), SHM_ECORRUPT);
	atomic_store(&h->head, 8);
	atomic_store(&h->tail, 8 + DSIZE);
	cr_assert_eq(shm_ring_attach(&r, m, bytes), 0, "exactly full is fine");
	h->size = 12345;
	cr_assert_eq(shm_ring_attach(&r, m, bytes), SHM_ECORRUPT);
	free(m);
}

Test(ring, huge_geometry_is_capped)
{
	/* Sizes past 4 GiB would overflow u32 lengths; format caps them. No
	 * memory is touched beyond the header, so a sparse mapping is fine. */
	size_t bytes = shm_ring_bytes(SHM_RING_MAX_SIZE * 4);
	void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct shm_ring r;

	cr_assert_neq(m, MAP_FAILED);
	cr_assert_eq(shm_ring_format(m, bytes), 0);
	cr_assert_eq(shm_ring_attach(&r, m, bytes), 0);
	cr_assert_eq(r.size, SHM_RING_MAX_SIZE);
	cr_assert_eq(shm_ring_max_record(&r), (uint32_t)(SHM_RING_MAX_SIZE / 2 - 8));
	munmap(m, bytes);
}

/* ---------- producer / consumer basics ---------- */

Test(ring, push_peek_consume_in_order)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);
	const void *rec;
	uint32_t len;
	static const uint32_t lens[] = { 1, 7, 8, 9, 100, 0, 255, 3, 16, 17 };
	int n = sizeof(lens) / sizeof(lens[0]);

	cr_assert_eq(peek_status(&c), SHM_EEMPTY);
	for (int i = 0; i < n; i++)
		push_tag(&p, lens[i], i);
	cr_assert_eq(peek_status(&c), SHM_EEMPTY, "staged, not published");
	cr_assert_eq(shm_ring_publish(&p), 0);
	cr_assert_eq(shm_ring_publish(&p), 0, "nothing new");

	/* Peek twice: same record. */
	cr_assert_eq(shm_ring_peek(&c, &rec, &len), 0);
	const void *again;
	uint32_t len2;
	cr_assert_eq(shm_ring_peek(&c, &again, &len2), 0);
	cr_assert_eq(rec, again);
	cr_assert_eq(len, len2);

	for (int i = 0; i < n; i++)
		pop_tag(&c, lens[i], i);
	cr_assert_eq(peek_status(&c), SHM_EEMPTY);
	shm_ring_consume(&c); /* no peeked record: nothing happens */
	cr_assert_eq(atomic_load(&h->head), 0, "not released yet");
	cr_assert_eq(shm_ring_release(&c), 0);
	cr_assert_eq(atomic_load(&h->head), atomic_load(&h->tail));
	cr_assert_eq(shm_ring_release(&c), 0);
	free(h);
}

Test(ring, empty_records)
{
	struct shm_ring p, c;
	void *m = mk_ring(DSIZE, &p, &c);
	const void *rec;
	uint32_t len;

	/* 8 bytes each: DSIZE / 8 of them fill the ring exactly. */
	for (uint32_t i = 0; i < DSIZE / 8; i++)
		cr_assert_eq(shm_ring_push(&p, NULL, 0), 0);
	cr_assert_eq(shm_ring_push(&p, NULL, 0), SHM_EFULL);
	shm_ring_publish(&p);
	for (uint32_t i = 0; i < DSIZE / 8; i++) {
		cr_assert_eq(shm_ring_peek(&c, &rec, &len), 0);
		cr_assert_eq(len, 0);
		cr_assert_geq((const uint8_t *)rec, c.data);
		cr_assert_leq((const uint8_t *)rec, c.data + c.size);
		shm_ring_consume(&c);
	}
	cr_assert_eq(peek_status(&c), SHM_EEMPTY);
	free(m);
}

Test(ring, max_record_and_too_big)
{
	struct shm_ring p, c;
	void *m = mk_ring(DSIZE, &p, &c);
	uint32_t max = shm_ring_max_record(&p);
	uint8_t buf[DSIZE];

	cr_assert_eq(max, DSIZE / 2 - 8);
	cr_assert_eq(shm_ring_push(&p, buf, max + 1), SHM_ETOOBIG);
	cr_assert_eq(shm_ring_push(&p, buf, UINT32_MAX), SHM_ETOOBIG);
	cr_assert_eq(shm_ring_wait_space(&p, max + 1, 0), SHM_ETOOBIG);
	push_tag(&p, max, 1);
	push_tag(&p, max, 2);
	cr_assert_eq(shm_ring_push(&p, buf, 0), SHM_EFULL);
	shm_ring_publish(&p);
	pop_tag(&c, max, 1);
	pop_tag(&c, max, 2);
	free(m);
}

/* A maximal record fits an empty ring wherever the positions stand,
 * including across the 2^64 wrap of the free-running positions. */
Test(ring, max_record_fits_empty_ring_at_every_offset)
{
	uint64_t bases[] = { 0, UINT64_MAX - 4095 - 4096 };

	for (int b = 0; b < 2; b++) {
		for (uint64_t off = 0; off < 1024; off += 8) {
			struct shm_ring p, c;
			uint64_t pos = bases[b] + off * 4 % 1024 + (off & 8 ? 512 : 0);
			void *m = mk_ring_at(1024, pos, &p, &c);
			uint32_t max = shm_ring_max_record(&p);

			push_tag(&p, max, (uint32_t)off);
			shm_ring_publish(&p);
			pop_tag(&c, max, (uint32_t)off);
			shm_ring_release(&c);
			push_tag(&p, max, (uint32_t)off + 1);
			push_tag(&p, 3, 9);
			shm_ring_publish(&p);
			pop_tag(&c, max, (uint32_t)off + 1);
			pop_tag(&c, 3, 9);
			free(m);
		}
	}
}

Test(ring, full_ring)
{
	struct shm_ring p, c;
	void *m = mk_ring(DSIZE, &p, &c);
	uint8_t buf[64];
	int n = 0;

	/* 64-byte payloads: 72 bytes each; 56 fit (4032 bytes), 64 bytes left. */
	while (shm_ring_push(&p, buf, 64) == 0)
		n++;
	cr_assert_eq(n, DSIZE / 72);
	cr_assert_eq(shm_ring_push(&p, buf, 64), SHM_EFULL);
	cr_assert_eq(shm_ring_push(&p, buf, 56), 0, "exactly the 64 bytes left");
	cr_assert_eq(shm_ring_push(&p, NULL, 0), SHM_EFULL);
	shm_ring_publish(&p);

	/* Consumed but not released: still full for the producer. */
	cr_assert_eq(peek_status(&c), 0);
	shm_ring_consume(&c);
	cr_assert_eq(shm_ring_push(&p, buf, 64), SHM_EFULL);
	cr_assert_eq(shm_ring_release(&c), 0);
	cr_assert_eq(shm_ring_push(&p, buf, 64), 0);
	cr_assert_eq(shm_ring_push(&p, buf, 0), SHM_EFULL);
	free(m);
}

Test(ring, wrap_with_pad_marker)
{
	struct shm_ring p, c;
	void *m = mk_ring_at(DSIZE, DSIZE - 16, &p, &c);
	const void *rec;
	uint32_t len;

	/* 8 + 16 bytes do not fit in the last 16: pad, then the record at 0. */
	push_tag(&p, 16, 2);
	cr_assert_eq(hdr_len(&p, DSIZE - 16), SHM_RING_PAD);
	cr_assert_eq(hdr_len(&p, 0), 16);
	cr_assert_eq(p.tail, DSIZE + 24);
	shm_ring_publish(&p);
	cr_assert_eq(shm_ring_peek(&c, &rec, &len), 0);
	cr_assert_eq(rec, c.data + 8, "record starts again at offset 0");
	cr_assert_eq(len, 16);
	cr_assert(check(rec, 16, 2));
	shm_ring_consume(&c);
	cr_assert_eq(c.head, DSIZE + 24);
	cr_assert_eq(peek_status(&c), SHM_EEMPTY);
	free(m);

	/* A record needing exactly the rest of the area needs no pad. */
	m = mk_ring_at(DSIZE, DSIZE - 24, &p, &c);
	push_tag(&p, 13, 3);
	cr_assert_eq(hdr_len(&p, DSIZE - 24), 13);
	cr_assert_eq(p.tail, DSIZE);
	push_tag(&p, 0, 4);
	cr_assert_eq(hdr_len(&p, 0), 0);
	shm_ring_publish(&p);
	pop_tag(&c, 13, 3);
	pop_tag(&c, 0, 4);
	free(m);

	/* Nor does an empty record in the last 8 bytes. */
	m = mk_ring_at(DSIZE, 5 * DSIZE - 8, &p, &c);
	push_tag(&p, 0, 5);
	push_tag(&p, 1, 6);
	cr_assert_eq(p.tail, 5 * DSIZE + 16);
	shm_ring_publish(&p);
	pop_tag(&c, 0, 5);
	pop_tag(&c, 1, 6);
	free(m);
}

Test(ring, pad_counts_against_space)
{
	struct shm_ring p, c;
	void *m = mk_ring_at(256, 192, &p, &c);

	/* tail at 200, head at 192: 248 free bytes, 56 of them before the end.
	 * A 64-byte record (72 bytes) costs the 56 as pad + 72 = 128: fits. */
	push_tag(&p, 0, 2);
	cr_assert_eq(p.tail, 200);
	push_tag(&p, 64, 3);
	cr_assert_eq(p.tail, 256 + 72);
	/* Now 136 used, 120 free, 184 contiguous at 72: a 112-byte payload
	 * (120 bytes) fits exactly; then nothing does. */
	push_tag(&p, 112, 4);
	cr_assert_eq(shm_ring_push(&p, NULL, 0), SHM_EFULL);
	shm_ring_publish(&p);
	pop_tag(&c, 0, 2);
	pop_tag(&c, 64, 3);
	pop_tag(&c, 112, 4);
	cr_assert_eq(shm_ring_release(&c), 0);
	free(m);

	/* Free space exists but not contiguously: pad + record do not fit. */
	m = mk_ring_at(256, 128, &p, &c);
	push_tag(&p, 64, 1);  /* 128..200 */
	shm_ring_publish(&p);
	pop_tag(&c, 64, 1);
	shm_ring_release(&c);     /* head 200: 256 free, 56 before the end */
	push_tag(&p, 40, 2);  /* 200..248 */
	/* 64-byte record: pad 8 + 72 = 80 of the 208 free. */
	push_tag(&p, 64, 3);  /* pad 248..256, record 256..328 */
	push_tag(&p, 120, 4); /* 328..456: used 256 */
	cr_assert_eq(shm_ring_push(&p, NULL, 0), SHM_EFULL);
	shm_ring_publish(&p);
	pop_tag(&c, 40, 2);
	pop_tag(&c, 64, 3);
	pop_tag(&c, 120, 4);
	free(m);
}

/* ---------- bells ---------- */

struct waiter {
	struct shm_ring *r;
	uint32_t len;
	int timeout;
	int rc;
};

static void *wait_data_thread(void *arg)
{
	struct waiter *w = arg;

	w->rc = shm_ring_wait_data(w->r, w->timeout);
	return NULL;
}

static void *wait_space_thread(void *arg)
{
	struct waiter *w = arg;

	w->rc = shm_ring_wait_space(w->r, w->len, w->timeout);
	return NULL;
}

static void until_sleeping(struct shm_ring_bell *b)
{
	int64_t t0 = ms_now();

	while (!atomic_load(&b->sleeping)) {
		cr_assert_lt(ms_now() - t0, 5000, "waiter never announced its sleep");
		usleep(100);
	}
	usleep(20000); /* most likely inside FUTEX_WAIT by now */
}

/* Run fn(w) in a thread and return once it sleeps on `bell`. */
static pthread_t waiter_start(void *(*fn)(void *), struct waiter *w, struct shm_ring_bell *bell)
{
	pthread_t t;

	cr_assert_eq(pthread_create(&t, NULL, fn, w), 0);
	until_sleeping(bell);
	return t;
}

/* Join the waiter and check it was woken (rc 0), not timed out. */
static void waiter_join(pthread_t t, const struct waiter *w)
{
	pthread_join(t, NULL);
	cr_assert_eq(w->rc, 0);
}

Test(ring, publish_without_sleeper_makes_no_futex_call)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);

	for (int i = 0; i < 100; i++) {
		push_tag(&p, 10, i);
		cr_assert_eq(shm_ring_publish(&p), 0);
		cr_assert_eq(peek_status(&c), 0);
		shm_ring_consume(&c);
		cr_assert_eq(shm_ring_release(&c), 0);
	}
	/* seq is only bumped right before a FUTEX_WAKE. */
	cr_assert_eq(atomic_load(&h->data.seq), 0);
	cr_assert_eq(atomic_load(&h->space.seq), 0);

	/* A set flag makes exactly one wake-up and is cleared by it. */
	atomic_store(&h->data.sleeping, 1);
	push_tag(&p, 10, 1);
	cr_assert_eq(shm_ring_publish(&p), 1);
	cr_assert_eq(atomic_load(&h->data.seq), 1);
	cr_assert_eq(atomic_load(&h->data.sleeping), 0);
	push_tag(&p, 10, 2);
	cr_assert_eq(shm_ring_publish(&p), 0);
	cr_assert_eq(shm_ring_bell_ring(&h->data), 0);
	free(h);
}

Test(ring, publish_wakes_sleeping_consumer)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);
	struct waiter w = { &c, 0, 5000, 99 };
	pthread_t t = waiter_start(wait_data_thread, &w, &h->data);
	int64_t t0 = ms_now();

	push_tag(&p, 5, 1);
	cr_assert_eq(shm_ring_publish(&p), 1);
	waiter_join(t, &w);
	cr_assert_lt(ms_now() - t0, 2000, "woken by the publish, not by the timeout");
	cr_assert_eq(atomic_load(&h->data.sleeping), 0);
	pop_tag(&c, 5, 1);
	free(h);
}

Test(ring, release_wakes_sleeping_producer)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);
	struct waiter w = { &p, 100, 5000, 99 };
	pthread_t t;

	while (shm_ring_push(&p, zeros, 100) == 0)
		;
	/* Not published: shm_ring_wait_space must publish before it sleeps. */
	cr_assert_eq(atomic_load(&h->tail), 0);
	t = waiter_start(wait_space_thread, &w, &h->space);
	cr_assert_neq(atomic_load(&h->tail), 0, "wait_space published the staged records");
	/* Consuming without releasing wakes nobody. */
	cr_assert_eq(peek_status(&c), 0);
	shm_ring_consume(&c);
	cr_assert_eq(atomic_load(&h->space.sleeping), 1);
	cr_assert_eq(shm_ring_release(&c), 1);
	waiter_join(t, &w);
	cr_assert_eq(shm_ring_push(&p, zeros, 100), 0);
	free(h);
}

Test(ring, wait_data_releases_first)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);

	push_tag(&p, 30, 1);
	shm_ring_publish(&p);
	pop_tag(&c, 30, 1);
	cr_assert_eq(atomic_load(&h->head), 0);
	cr_assert_eq(shm_ring_wait_data(&c, 0), SHM_ETIMEDOUT);
	cr_assert_eq(atomic_load(&h->head), 40);
	free(h);
}

Test(ring, timeouts)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);
	int64_t t0, dt;

	t0 = ms_now();
	cr_assert_eq(shm_ring_wait_data(&c, 0), SHM_ETIMEDOUT);
	cr_assert_lt(ms_now() - t0, 50);
	cr_assert_eq(atomic_load(&h->data.sleeping), 0, "timeout 0 never announces a sleep");

	t0 = ms_now();
	cr_assert_eq(shm_ring_wait_data(&c, 100), SHM_ETIMEDOUT);
	dt = ms_now() - t0;
	cr_assert_geq(dt, 99);
	cr_assert_lt(dt, 1500);
	cr_assert_eq(atomic_load(&h->data.sleeping), 0, "flag cleared after the sleep");

	push_tag(&p, 1, 1);
	shm_ring_publish(&p);
	t0 = ms_now();
	cr_assert_eq(shm_ring_wait_data(&c, 1000), 0);
	cr_assert_eq(shm_ring_wait_data(&c, 0), 0);
	cr_assert_lt(ms_now() - t0, 50);

	/* Full ring, nobody consuming. */
	while (shm_ring_push(&p, zeros, 500) == 0)
		;
	t0 = ms_now();
	cr_assert_eq(shm_ring_wait_space(&p, 500, 0), SHM_ETIMEDOUT);
	cr_assert_eq(shm_ring_wait_space(&p, 500, 80), SHM_ETIMEDOUT);
	dt = ms_now() - t0;
	cr_assert_geq(dt, 79);
	cr_assert_lt(dt, 1500);
	cr_assert_eq(shm_ring_wait_space(&p, 0, 0), 0, "an empty record still fits");
	free(h);
}

static int never(void *arg)
{
	(void)arg;
	return 0;
}

static int always(void *arg)
{
	++*(int *)arg;
	return 1;
}

Test(ring, bell_wait_alone)
{
	struct shm_ring_bell b = { 0, 0 };
	int calls = 0;
	int64_t t0 = ms_now();

	cr_assert_eq(shm_ring_bell_wait(&b, always, &calls, -1), 0);
	cr_assert_eq(calls, 1);
	cr_assert_eq(atomic_load(&b.sleeping), 0);
	cr_assert_eq(shm_ring_bell_wait(&b, never, NULL, 30), SHM_ETIMEDOUT);
	cr_assert_geq(ms_now() - t0, 29);
	cr_assert_eq(shm_ring_bell_wait(&b, never, NULL, 0), SHM_ETIMEDOUT);
	cr_assert_eq(shm_ring_bell_wait(NULL, never, NULL, 0), SHM_EINVAL);
	cr_assert_eq(shm_ring_bell_ring(&b), 0);
}

/* ---------- garbage from a broken or hostile peer ---------- */

Test(ring, corrupt_tail)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);

	atomic_store(&h->tail, DSIZE + 8);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "tail - head > size");
	atomic_store(&h->tail, 12);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "misaligned tail");
	atomic_store(&h->tail, UINT64_MAX - 7);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "tail behind head");
	atomic_store(&h->tail, 0);
	cr_assert_eq(peek_status(&c), SHM_EEMPTY);

	/* A tail going backwards after it was seen. */
	push_tag(&p, 8, 1);
	push_tag(&p, 8, 2);
	shm_ring_publish(&p);
	pop_tag(&c, 8, 1);
	pop_tag(&c, 8, 2);
	atomic_store(&h->tail, 16);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT);
	free(h);
}

Test(ring, corrupt_record_header)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);
	const void *rec;
	uint32_t len;

	push_tag(&p, 24, 1); /* 32 bytes */
	shm_ring_publish(&p);

	put_hdr(&c, 0, 25, 0);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "longer than published");
	put_hdr(&c, 0, shm_ring_max_record(&c) + 1, 0);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "longer than max");
	put_hdr(&c, 0, 0xfffffff0u, 0);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "overflowing length");
	put_hdr(&c, 0, 24, 1);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "reserved not zero");
	put_hdr(&c, 0, 24, 0);
	pop_tag(&c, 24, 1);

	/* A length that fits what is published but not before the end. */
	put_hdr(&c, DSIZE - 32, 100, 0);
	c.head = DSIZE - 32;
	c.tail = c.head;
	atomic_store(&h->tail, DSIZE - 32 + 512);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "record crossing the end");
	put_hdr(&c, DSIZE - 32, 24, 0);
	cr_assert_eq(shm_ring_peek(&c, &rec, &len), 0);
	cr_assert_eq(len, 24);
	free(h);
}

Test(ring, corrupt_pad_marker)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring_at(DSIZE, DSIZE - 64, &p, &c);

	/* A genuine pad: 64 bytes before the end, then a record at 0. */
	push_tag(&p, 100, 1);
	cr_assert_eq(hdr_len(&p, DSIZE - 64), SHM_RING_PAD);
	shm_ring_publish(&p);
	cr_assert_eq(atomic_load(&h->tail), DSIZE + 112);

	/* Published bytes end inside or right at the end of the pad. */
	atomic_store(&h->tail, DSIZE - 32);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "pad past published");
	c.tail = c.head;
	atomic_store(&h->tail, DSIZE);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "pad with no record after");
	c.tail = c.head;
	atomic_store(&h->tail, DSIZE + 112);

	/* Pad followed by a pad, or by a bad record. */
	put_hdr(&c, 0, SHM_RING_PAD, 0);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "pad after pad");
	put_hdr(&c, 0, 200, 0);
	c.head = DSIZE - 64;
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "record past published");
	put_hdr(&c, 0, 100, 0);
	c.head = DSIZE - 64;
	put_hdr(&c, DSIZE - 64, SHM_RING_PAD, 3);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT, "pad with reserved set");
	put_hdr(&c, DSIZE - 64, SHM_RING_PAD, 0);
	pop_tag(&c, 100, 1);
	free(h);
}

Test(ring, pad_at_zero_is_corrupt)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);

	put_hdr(&c, 0, SHM_RING_PAD, 0);
	atomic_store(&h->tail, DSIZE);
	cr_assert_eq(peek_status(&c), SHM_ECORRUPT);
	free(h);
}

Test(ring, corrupt_head_seen_by_producer)
{
	struct shm_ring p, c;
	struct shm_ring_hdr *h = mk_ring(DSIZE, &p, &c);

	while (shm_ring_push(&p, zeros, 100) == 0)
		;
	shm_ring_publish(&p);
	atomic_store(&h->head, p.tail + 8);
	cr_assert_eq(shm_ring_push(&p, zeros, 100), SHM_ECORRUPT, "head past tail");
	cr_assert_eq(shm_ring_wait_space(&p, 100, 0), SHM_ECORRUPT);
	atomic_store(&h->head, 4);
	cr_assert_eq(shm_ring_push(&p, zeros, 100), SHM_ECORRUPT, "misaligned head");
	atomic_store(&h->head, p.tail - DSIZE - 8);
	cr_assert_eq(shm_ring_push(&p, zeros, 100), SHM_ECORRUPT, "head more than size behind");
	atomic_store(&h->head, 216);
	cr_assert_eq(shm_ring_push(&p, zeros, 100), 0, "a plausible head is taken");
	atomic_store(&h->head, 104);
	while (shm_ring_push(&p, zeros, 100) == 0)
		;
	cr_assert_eq(shm_ring_push(&p, zeros, 100), SHM_ECORRUPT, "head going backwards");
	free(h);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Drain whatever the consumer accepts; every record must lie in the ring. */
static int drain_garbage(struct shm_ring *c)
{
	const void *rec;
	uint32_t len;
	int n = 0, rc;

	for (;;) {
		rc = shm_ring_peek(c, &rec, &len);
		if (rc != 0)
			break;
		const uint8_t *b = rec;
		cr_assert_geq(b, c->data);
		cr_assert_leq(b + len, c->data + c->size);
		volatile uint8_t sink = 0;
		for (uint32_t i = 0; i < len; i++)
			sink ^= b[i]; /* ASan checks every byte read */
		(void)sink;
		shm_ring_consume(c);
		if (++n % 7 == 0)
			shm_ring_release(c);
		cr_assert_lt(n, 100000);
	}
	cr_assert(rc == SHM_EEMPTY || rc == SHM_ECORRUPT, "rc %d", rc);
	return rc;
}

Test(ring, random_bytes_never_crash)
{
	int corrupt = 0, empty = 0, refused = 0;

	for (int it = 0; it < 20000; it++) {
		uint64_t dsize = 64u << (rnd() % 6);
		size_t bytes = shm_ring_bytes(dsize);
		uint8_t *m = aligned_alloc(64, bytes);
		struct shm_ring_hdr *h = (struct shm_ring_hdr *)m;
		struct shm_ring c, p;

		for (size_t i = 0; i < bytes; i++)
			m[i] = (uint8_t)rnd();
		h->size = dsize;
		/* Mostly plausible positions, so the headers get looked at. */
		if (it % 4 != 0) {
			uint64_t head = (it % 3 == 0) ? rnd() : rnd() % 4096;
			head &= (it % 5 == 0) ? ~0ull : ~7ull;
			atomic_store(&h->head, head);
			atomic_store(&h->tail, head + (rnd() % (dsize + 16) & ~7ull));
		}
		/* Often: make record headers plausible too. */
		if (it % 2 == 0) {
			for (uint64_t off = 0; off < dsize; off += 8) {
				uint32_t r = (uint32_t)rnd();
				uint32_t l = r % 8 == 0 ? SHM_RING_PAD : r % (dsize / 2);
				memcpy(m + sizeof(*h) + off, &l, 4);
				if (r % 16 != 1)
					memset(m + sizeof(*h) + off + 4, 0, 4);
			}
		}
		if (shm_ring_attach(&c, m, bytes) != 0) {
			refused++;
		} else {
			if (drain_garbage(&c) == SHM_ECORRUPT)
				corrupt++;
			else
				empty++;
		}
		/* A producer on garbage must stay inside the ring too. */
		if (shm_ring_attach(&p, m, bytes) == 0) {
			uint8_t buf[2048] = { 0 };
			for (int k = 0; k < 40; k++) {
				int rc = shm_ring_push(&p, buf, (uint32_t)(rnd() % (dsize / 2 + 8)));
				cr_assert(rc == 0 || rc == SHM_EFULL || rc == SHM_ETOOBIG ||
					  rc == SHM_ECORRUPT);
			}
		}
		free(m);
	}
	cr_assert_gt(corrupt, 1000);
	cr_assert_gt(empty, 100);
	cr_assert_gt(refused, 100);
}

/* Valid traffic, then random bytes flipped: records or SHM_ECORRUPT only. */
Test(ring, flipped_bytes_never_crash)
{
	for (int it = 0; it < 5000; it++) {
		struct shm_ring p, c;
		uint8_t *m = mk_ring_at(512, (rnd() % 128) * 8, &p, &c);
		int n = (int)(rnd() % 30);

		for (int i = 0; i < n; i++) {
			if (shm_ring_push(&p, zeros, (uint32_t)(rnd() % 100)) == SHM_EFULL)
				break;
		}
		shm_ring_publish(&p);
		for (int k = (int)(rnd() % 4); k >= 0; k--)
			m[sizeof(struct shm_ring_hdr) + rnd() % 512] ^= (uint8_t)(1 + rnd() % 255);
		drain_garbage(&c);
		free(m);
	}
}

/* ---------- cross-process stress ---------- */

struct shared {
	_Atomic uint64_t prod_wakes;  /* shm_ring_publish returned 1 */
	_Atomic uint64_t cons_wakes;  /* shm_ring_release returned 1 */
	_Atomic uint64_t prod_full;   /* times the producer had to wait */
	_Atomic uint64_t cons_empty;  /* times the consumer had to wait */
	_Atomic int prod_error;
};

#define RING_OFF 4096

static uint64_t mix(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Record n's length: mostly small, sometimes large, the edges often. */
static uint32_t stress_len(uint64_t n, uint32_t max)
{
	uint64_t h = mix(n * 2 + 1);

	switch (h % 16) {
	case 0: return 0;
	case 1: return max;
	case 2: return (uint32_t)((h >> 8) % (max + 1));
	default: return (uint32_t)((h >> 8) % (max < 64 ? max + 1 : 64));
	}
}

/* Record n's payload: its number in the first 8 bytes, then a pattern. */
static void stress_fill(uint8_t *b, uint64_t n, uint32_t len)
{
	uint64_t h = mix(n);

	for (uint32_t i = 0; i < len; i++)
		b[i] = i < 8 ? (uint8_t)(n >> (8 * i)) : (uint8_t)(h + i * 131 + (i >> 5));
}

/* Producer pauses (consumer sleeps) and consumer pauses (producer sleeps). */
static int producer_pause(uint64_t n, uint64_t total)
{
	return n >= total / 4 && n < total / 4 + 200;
}

static int consumer_pause(uint64_t n, uint64_t total)
{
	return n >= total / 2 && n < total / 2 + 200;
}

static void producer(struct shared *s, void *mem, size_t bytes, uint64_t total)
{
	struct shm_ring p;
	uint8_t buf[DSIZE];
	uint64_t n = 0;

	if (shm_ring_attach(&p, mem, bytes) != 0) {
		s->prod_error = 1;
		return;
	}
	uint32_t max = shm_ring_max_record(&p);
	while (n < total) {
		uint64_t batch = 1 + mix(n ^ 0x55) % 32;
		for (uint64_t i = 0; i < batch && n < total; i++, n++) {
			uint32_t len = stress_len(n, max);
			int rc;

			stress_fill(buf, n, len);
			while ((rc = shm_ring_push(&p, buf, len)) == SHM_EFULL) {
				if (shm_ring_publish(&p) == 1)
					s->prod_wakes++;
				s->prod_full++;
				rc = shm_ring_wait_space(&p, len, 10000);
				if (rc != 0)
					break;
			}
			if (rc != 0) {
				s->prod_error = rc;
				return;
			}
		}
		if (producer_pause(n, total))
			usleep(200);
		if (shm_ring_publish(&p) == 1)
			s->prod_wakes++;
	}
}

static void stress(uint64_t dsize, uint64_t total)
{
	size_t bytes = shm_ring_bytes(dsize);
	size_t mapsize = RING_OFF + bytes;
	int fd = memfd_create("ring-stress", MFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)mapsize), 0);
	uint8_t *map = mmap(NULL, mapsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	close(fd);
	struct shared *s = (struct shared *)map;
	void *mem = map + RING_OFF;
	cr_assert_eq(shm_ring_format(mem, bytes), 0);

	pid_t parent = getpid();
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(3);
		producer(s, mem, bytes, total);
		_exit(s->prod_error ? 1 : 0);
	}

	struct shm_ring c;
	uint8_t want[DSIZE];
	const char *fail = NULL;
	uint64_t n = 0, bad = 0;
	int rc = shm_ring_attach(&c, mem, bytes);
	uint32_t max = shm_ring_max_record(&c);

	if (rc != 0)
		fail = "attach";
	while (!fail && n < total) {
		const void *rec;
		uint32_t len;

		rc = shm_ring_peek(&c, &rec, &len);
		if (rc == SHM_EEMPTY) {
			if (shm_ring_release(&c) == 1)
				s->cons_wakes++;
			s->cons_empty++;
			rc = shm_ring_wait_data(&c, 10000);
			if (rc != 0)
				fail = "wait_data (producer stuck or lost wake-up)";
			continue;
		}
		if (rc != 0) {
			fail = "peek";
			break;
		}
		uint32_t wl = stress_len(n, max);
		stress_fill(want, n, wl);
		if (len != wl || memcmp(rec, want, len) != 0) {
			fail = "record lost, duplicated, reordered or corrupted";
			bad = n;
			break;
		}
		shm_ring_consume(&c);
		n++;
		if (n % 8 == 0 && shm_ring_release(&c) == 1)
			s->cons_wakes++;
		if (consumer_pause(n, total))
			usleep(200);
	}
	if (!fail && (shm_ring_wait_data(&c, 100) != SHM_ETIMEDOUT || peek_status(&c) != SHM_EEMPTY))
		fail = "extra records after the last one";

	int status = 0;
	if (fail)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	cr_assert_null(fail, "%s at record %llu (rc %d, producer error %d)", fail,
		       (unsigned long long)bad, rc, s->prod_error);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer status %d", status);
	cr_log_info("ring %llu B, %llu records: producer woke consumer %llu times, "
		    "consumer woke producer %llu times; waits: producer %llu, consumer %llu",
		    (unsigned long long)dsize, (unsigned long long)total,
		    (unsigned long long)s->prod_wakes, (unsigned long long)s->cons_wakes,
		    (unsigned long long)s->prod_full, (unsigned long long)s->cons_empty);
	cr_assert_gt(s->prod_wakes, 0, "the consumer never slept");
	cr_assert_gt(s->cons_wakes, 0, "the producer never slept");
	munmap(map, mapsize);
}

Test(ring, stress_two_processes_4k, .timeout = 30)
{
	stress(DSIZE, 1000000);
}

Test(ring, stress_two_processes_min_size, .timeout = 30)
{
	stress(SHM_RING_MIN_SIZE, 300000);
}
