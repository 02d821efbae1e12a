/*
 * fuzz_ring.c — libFuzzer target for shm/ring.c.
 *
 * The first input byte picks a mode.
 *
 * Mode 0 (even first byte): the input is the ring's shared memory as a broken
 * or hostile peer could leave it. First shm_ring_attach() meets raw positions
 * (it must refuse them or get consistent ones). Then a consumer and a
 * producer attach to a sane ring, and the input overwrites the data area and
 * the tail (also between peeks); the consumer peeks/consumes/releases until it
 * runs dry or says SHM_ECORRUPT; every record it hands out must lie inside
 * the data area and is read byte by byte, so ASan catches any stray read.
 * Then the input overwrites the head and the producer pushes records: it must
 * stay inside the data area and never believe in more room than exists.
 *
 * Mode 1 (odd first byte): the input is a sequence of operations on a clean
 * ring (push of a given length, publish, peek, consume, release, waits with
 * timeout 0), checked against a model: records come out in order, complete,
 * exactly once, EFULL/EEMPTY/ETOOBIG exactly when the model says so. Any
 * disagreement traps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/ring.h"
#include "tests/fuzz_input.h"

static void *ring_alloc(uint64_t dsize, size_t *bytes)
{
	*bytes = shm_ring_bytes(dsize);
	return aligned_alloc(64, *bytes); /* exact size: ASan sees overruns */
}

/* ---------- mode 0: consumer and producer over garbage ---------- */

static void read_record(const struct shm_ring *c, const void *rec, uint32_t len)
{
	const uint8_t *b = rec;
	volatile uint8_t sink = 0;

	CHECK(b >= c->data + 8 && b + len <= c->data + c->size);
	CHECK(((uintptr_t)b & 7) == 0);
	for (uint32_t i = 0; i < len; i++)
		sink ^= b[i];
	(void)sink;
}

static uint64_t pick_pos(struct fuzz_input *in, uint8_t how, uint64_t near, uint64_t dsize)
{
	switch (how % 4) {
	case 0: return fuzz_take(in, 8);                                  /* anything */
	case 1: return near + fuzz_take(in, 2) % (2 * dsize);             /* ahead, maybe too far */
	case 2: return near - fuzz_take(in, 2) % (2 * dsize);             /* behind */
	default: return near + (fuzz_take(in, 2) % (dsize + 1) & ~7ull); /* plausible */
	}
}

static void garbage(struct fuzz_input *in)
{
	uint8_t sel = fuzz_take8(in);
	uint64_t dsize = 64u << (sel % 7);
	uint64_t base = fuzz_take(in, 8) & ~7ull;
	size_t bytes;
	uint8_t *m = ring_alloc(dsize, &bytes);
	struct shm_ring_hdr *h = (struct shm_ring_hdr *)m;
	struct shm_ring c, p, x;
	const void *rec;
	uint32_t len;
	int rc, n = 0, moves = 1;

	if (m == NULL)
		return;
	memset(m, 0, bytes);
	CHECK(shm_ring_format(m, bytes) == 0);

	/* Attach over raw positions: refused or consistent. */
	atomic_store(&h->head, fuzz_take(in, 8));
	atomic_store(&h->tail, pick_pos(in, sel >> 3, atomic_load(&h->head), dsize));
	if (shm_ring_attach(&x, m, bytes) == 0)
		CHECK(x.tail - x.head <= x.size && ((x.head | x.tail) & 7) == 0);

	/* Both sides attached to a sane ring, then the peer writes garbage:
	 * record bytes, and positions now and then while the consumer reads. */
	atomic_store(&h->head, base);
	atomic_store(&h->tail, base);
	CHECK(shm_ring_attach(&c, m, bytes) == 0);
	CHECK(shm_ring_attach(&p, m, bytes) == 0);
	for (uint64_t i = 0; i < dsize && in->n > 0; i++)
		m[sizeof(*h) + i] = fuzz_take8(in);
	atomic_store(&h->tail, pick_pos(in, sel >> 5, base, dsize));
	for (;;) {
		uint8_t op = fuzz_take8(in);

		if (op % 8 == 7) {
			atomic_store(&h->tail, pick_pos(in, op >> 3, c.head, dsize));
			moves++;
		}
		rc = shm_ring_peek(&c, &rec, &len);
		if (rc != 0)
			break;
		read_record(&c, rec, len);
		shm_ring_consume(&c);
		if (op & 0x10)
			shm_ring_release(&c);
		/* Each tail seen allows at most size / 8 records. */
		CHECK(++n <= moves * (int)(dsize / 8));
	}
	CHECK(rc == SHM_EEMPTY || rc == SHM_ECORRUPT);
	rc = shm_ring_wait_data(&c, 0);
	CHECK(rc == 0 || rc == SHM_ETIMEDOUT);

	/* The producer meets a head the consumer (or garbage) left. */
	if (fuzz_take8(in) & 1)
		atomic_store(&h->head, pick_pos(in, fuzz_take8(in), p.tail, dsize));
	for (int k = 0; k < 16; k++) {
		static uint8_t buf[4096];
		uint64_t before = p.tail;

		len = (uint32_t)(fuzz_take(in, 2) % (dsize / 2 + 16));
		rc = shm_ring_push(&p, buf, len);
		CHECK(rc == 0 || rc == SHM_EFULL || rc == SHM_ETOOBIG || rc == SHM_ECORRUPT);
		CHECK(rc == 0 || p.tail == before);
		CHECK(p.tail - p.head <= p.size);
	}
	rc = shm_ring_wait_space(&p, 0, 0);
	CHECK(rc == 0 || rc == SHM_ETIMEDOUT || rc == SHM_ECORRUPT);
	shm_ring_publish(&p);
	free(m);
}

/* ---------- mode 1: operations against a model ---------- */

#define MAXQ 4096

struct model {
	uint64_t start[MAXQ]; /* position of each record (after any pad) */
	uint64_t end[MAXQ];
	uint32_t len[MAXQ];
	int staged, published, consumed; /* record counts */
	uint64_t tail;        /* producer's staged tail */
	uint64_t chead;       /* consumer's local head */
	uint64_t head_rel;    /* released head */
};

static void fill(uint8_t *b, uint32_t len, int seq)
{
	for (uint32_t i = 0; i < len; i++)
		b[i] = (uint8_t)(seq * 13 + i);
}

static int same(const uint8_t *b, uint32_t len, int seq)
{
	for (uint32_t i = 0; i < len; i++)
		if (b[i] != (uint8_t)(seq * 13 + i))
			return 0;
	return 1;
}

static void ops(struct fuzz_input *in)
{
	uint8_t sel = fuzz_take8(in);
	uint64_t dsize = 64u << (sel % 5);
	uint64_t start = (uint64_t)(sel >> 3) * 8; /* positions need not start at 0 */
	size_t bytes;
	uint8_t *m = ring_alloc(dsize, &bytes);
	struct shm_ring_hdr *h = (struct shm_ring_hdr *)m;
	struct shm_ring p, c;
	static struct model md;
	static uint8_t buf[4096];
	uint32_t max;

	if (m == NULL)
		return;
	CHECK(shm_ring_format(m, bytes) == 0);
	if (sel & 4)
		start = UINT64_MAX - dsize * 2 + 1 + start; /* cross the 2^64 wrap */
	start &= ~(uint64_t)7;
	atomic_store(&h->head, start);
	atomic_store(&h->tail, start);
	CHECK(shm_ring_attach(&p, m, bytes) == 0);
	CHECK(shm_ring_attach(&c, m, bytes) == 0);
	max = shm_ring_max_record(&p);
	memset(&md, 0, sizeof(md));
	md.tail = md.chead = md.head_rel = start;

	while (in->n > 0 && md.staged < MAXQ) {
		uint8_t op = fuzz_take8(in);
		const void *rec;
		uint32_t len;
		int rc;

		switch (op % 8) {
		case 0: case 1: case 2: { /* push */
			len = (uint32_t)(fuzz_take(in, 2) % (max + 2));
			uint64_t need = 8 + ((len + 7u) & ~7u);
			uint64_t room = dsize - (md.tail & (dsize - 1));
			uint64_t s = need <= room ? md.tail : md.tail + room;

			fill(buf, len, md.staged);
			rc = shm_ring_push(&p, buf, len);
			if (len > max) {
				CHECK(rc == SHM_ETOOBIG);
			} else if (s + need - md.head_rel > dsize) {
				CHECK(rc == SHM_EFULL);
			} else {
				CHECK(rc == 0);
				md.start[md.staged] = s;
				md.end[md.staged] = s + need;
				md.len[md.staged] = len;
				md.staged++;
				md.tail = s + need;
				CHECK(p.tail == md.tail);
			}
			break;
		}
		case 3: /* publish */
			shm_ring_publish(&p);
			md.published = md.staged;
			CHECK(atomic_load(&h->tail) == md.tail);
			break;
		case 4: case 7: /* peek (7: and do not consume) */
			rc = shm_ring_peek(&c, &rec, &len);
			if (md.consumed == md.published) {
				CHECK(rc == SHM_EEMPTY);
				break;
			}
			CHECK(rc == 0);
			CHECK(len == md.len[md.consumed]);
			CHECK((const uint8_t *)rec ==
			      c.data + (md.start[md.consumed] & (dsize - 1)) + 8);
			CHECK(same(rec, len, md.consumed));
			md.chead = md.start[md.consumed]; /* a pad was skipped */
			CHECK(c.head == md.chead);
			if (op % 8 == 4) {
				shm_ring_consume(&c);
				md.chead = md.end[md.consumed++];
				CHECK(c.head == md.chead);
			}
			break;
		case 5: /* release */
			shm_ring_release(&c);
			md.head_rel = md.chead;
			CHECK(atomic_load(&h->head) == md.head_rel);
			break;
		case 6: /* waits with timeout 0 */
			if (fuzz_take8(in) & 1) {
				rc = shm_ring_wait_data(&c, 0);
				md.head_rel = md.chead;
				CHECK(atomic_load(&h->head) == md.head_rel);
				CHECK(rc == (md.consumed < md.published ? 0 : SHM_ETIMEDOUT));
			} else {
				len = (uint32_t)(fuzz_take(in, 2) % (max + 1));
				rc = shm_ring_wait_space(&p, len, 0);
				md.published = md.staged;
				uint64_t need = 8 + ((len + 7u) & ~7u);
				uint64_t room = dsize - (md.tail & (dsize - 1));
				uint64_t cost = need <= room ? need : room + need;
				CHECK(rc == (md.tail + cost - md.head_rel <= dsize ? 0 : SHM_ETIMEDOUT));
			}
			break;
		}
		CHECK(atomic_load(&h->data.seq) == 0 && atomic_load(&h->space.seq) == 0);
	}
	/* Drain: everything published comes out, in order. */
	shm_ring_publish(&p);
	md.published = md.staged;
	for (;;) {
		const void *rec;
		uint32_t len;
		int rc = shm_ring_peek(&c, &rec, &len);

		if (md.consumed == md.published) {
			CHECK(rc == SHM_EEMPTY);
			break;
		}
		CHECK(rc == 0 && len == md.len[md.consumed] && same(rec, len, md.consumed));
		shm_ring_consume(&c);
		md.consumed++;
	}
	free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size };

	if (size == 0)
		return 0;
	if (fuzz_take8(&in) & 1)
		ops(&in);
	else
		garbage(&in);
	return 0;
}
