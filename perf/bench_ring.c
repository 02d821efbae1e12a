/*
 * bench_ring.c — throughput of the SPSC shared-memory ring across processes.
 *
 * Two processes share one ring in a memfd, as a client and a shard do. The
 * producer (a forked child) sends records with a 32-byte payload (the first 8
 * bytes are the record number, which the consumer checks) and calls
 * shm_ring_publish() once per batch of B records, i.e. at most one wake-up per B
 * records. The consumer drains what is visible, calls shm_ring_release() each time
 * it has consumed everything it saw, and sleeps on the data bell
 * (shm_ring_wait_data) when the ring is empty; the producer sleeps on the space
 * bell (shm_ring_wait_space) when the ring is full.
 *
 * Spinning: by default neither side spins; it goes to sleep as soon as it has
 * nothing to do, as a shard must (64 shards on 2 cores). With -s US, the
 * consumer first polls the ring for up to US microseconds (with a pause
 * instruction) before it sleeps, as a client waiting for its own completion
 * may; this is bounded, so it is never a pure busy loop.
 *
 * For each batch size the program picks N so that one run takes about half a
 * second, runs 5 times and prints the median records/s and ns/record, plus
 * the wake-ups of the median run: "c-wakes" are shm_ring_publish() calls that woke
 * the sleeping consumer, "p-wakes" shm_ring_release() calls that woke the
 * producer.
 *
 * Usage: bench_ring [-s spin_us] [-n records] [-r ring_kib]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/clock.h"
#include "shm/ring.h"

#define PAYLOAD 32
#define RUNS 5
#define STATS_BYTES 4096

struct stats {
	_Atomic uint64_t c_wakes; /* publish returned 1 */
	_Atomic uint64_t p_wakes; /* release returned 1 */
	_Atomic int prod_rc;
};

struct result {
	double secs;
	uint64_t c_wakes, p_wakes;
};

static uint64_t ring_kib = 256;
static int spin_us;

static double now_s(void)
{
	return shm_now_ns() / 1e9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "bench_ring: %s: %s\n", what,
		rc == SHM_ESYS ? strerror(errno) : shm_strerror(rc));
	exit(1);
}

static void producer(struct stats *st, void *mem, size_t bytes, uint64_t n, uint32_t batch,
		     int go_fd)
{
	struct shm_ring p;
	uint8_t rec[PAYLOAD];
	char c;
	int rc;

	memset(rec, 0x5a, sizeof(rec));
	if ((rc = shm_ring_attach(&p, mem, bytes)) != 0 || read(go_fd, &c, 1) != 1) {
		st->prod_rc = rc ? rc : SHM_ESYS;
		return;
	}
	for (uint64_t i = 0; i < n;) {
		for (uint32_t k = 0; k < batch && i < n; k++, i++) {
			memcpy(rec, &i, sizeof(i));
			while ((rc = shm_ring_push(&p, rec, PAYLOAD)) == SHM_EFULL) {
				if (shm_ring_publish(&p) == 1)
					st->c_wakes++;
				rc = shm_ring_wait_space(&p, PAYLOAD, -1);
				if (rc != 0)
					break;
			}
			if (rc != 0) {
				st->prod_rc = rc;
				return;
			}
		}
		if (shm_ring_publish(&p) == 1)
			st->c_wakes++;
	}
}

/* Poll for data for up to spin_us microseconds; 1 if some arrived. */
static int spin_for_data(struct shm_ring *c)
{
	double end = now_s() + spin_us / 1e6;

	do {
		for (int k = 0; k < 64; k++) {
			if (atomic_load_explicit(&c->hdr->tail, memory_order_relaxed) != c->head)
				return 1;
			__builtin_ia32_pause();
		}
	} while (now_s() < end);
	return 0;
}

static int consume(struct shm_ring *c, struct stats *st, uint64_t n)
{
	const void *rec;
	uint32_t len;
	uint64_t got = 0, seq;
	int rc;

	while (got < n) {
		rc = shm_ring_peek(c, &rec, &len);
		if (rc == 0) {
			memcpy(&seq, rec, sizeof(seq));
			if (len != PAYLOAD || seq != got) {
				fprintf(stderr, "bench_ring: record %" PRIu64 ": len %u seq %" PRIu64 "\n",
					got, len, seq);
				return SHM_ECORRUPT;
			}
			shm_ring_consume(c);
			got++;
			/* Drained everything seen so far: hand the space back. */
			if (c->head == c->tail && shm_ring_release(c) == 1)
				st->p_wakes++;
			continue;
		}
		if (rc != SHM_EEMPTY)
			return rc;
		if (spin_us > 0 && spin_for_data(c))
			continue;
		rc = shm_ring_wait_data(c, -1);
		if (rc != 0)
			return rc;
	}
	if (shm_ring_release(c) == 1)
		st->p_wakes++;
	return 0;
}

static struct result run(uint64_t n, uint32_t batch)
{
	size_t bytes = shm_ring_bytes(ring_kib * 1024);
	size_t mapsize = STATS_BYTES + bytes;
	int fd = memfd_create("bench-ring", MFD_CLOEXEC);
	int go[2];
	struct result res = { 0, 0, 0 };

	if (fd < 0 || ftruncate(fd, (off_t)mapsize) != 0 || pipe(go) != 0)
		die("memfd/pipe", SHM_ESYS);
	uint8_t *map = mmap(NULL, mapsize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap", SHM_ESYS);
	close(fd);
	struct stats *st = (struct stats *)map;
	void *mem = map + STATS_BYTES;
	int rc = shm_ring_format(mem, bytes);
	if (rc != 0)
		die("shm_ring_format", rc);

	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		die("fork", SHM_ESYS);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(2);
		close(go[1]);
		producer(st, mem, bytes, n, batch, go[0]);
		_exit(st->prod_rc ? 1 : 0);
	}
	close(go[0]);

	struct shm_ring c;
	if ((rc = shm_ring_attach(&c, mem, bytes)) != 0)
		die("shm_ring_attach", rc);
	double t0 = now_s();
	if (write(go[1], "g", 1) != 1)
		die("write", SHM_ESYS);
	rc = consume(&c, st, n);
	res.secs = now_s() - t0;
	close(go[1]);
	if (rc != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		die("consumer", rc);
	}
	int status;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("producer", st->prod_rc ? st->prod_rc : SHM_ESYS);
	res.c_wakes = st->c_wakes;
	res.p_wakes = st->p_wakes;
	munmap(map, mapsize);
	return res;
}

static int by_secs(const void *a, const void *b)
{
	double x = ((const struct result *)a)->secs, y = ((const struct result *)b)->secs;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	static const uint32_t batches[] = { 1, 16, 256 };
	uint64_t fixed_n = 0;
	int opt;

	while ((opt = getopt(argc, argv, "s:n:r:")) != -1) {
		switch (opt) {
		case 's': spin_us = atoi(optarg); break;
		case 'n': fixed_n = strtoull(optarg, NULL, 10); break;
		case 'r': ring_kib = strtoull(optarg, NULL, 10); break;
		default:
			fprintf(stderr, "usage: %s [-s spin_us] [-n records] [-r ring_kib]\n", argv[0]);
			return 2;
		}
	}
	if (ring_kib < 1 || ring_kib > 1024 * 1024) {
		fprintf(stderr, "bench_ring: ring size out of range\n");
		return 2;
	}

	printf("SPSC ring across 2 processes: %" PRIu64 " KiB ring, %d-byte payloads, "
	       "consumer spin %d us, median of %d runs\n", ring_kib, PAYLOAD, spin_us, RUNS);
	printf("%8s %10s %12s %10s %10s %10s\n", "batch", "records", "records/s", "ns/record",
	       "c-wakes", "p-wakes");
	for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
		uint32_t batch = batches[b];
		uint64_t n = fixed_n;
		struct result r[RUNS];

		if (n == 0) {
			/* Calibrate: aim at ~0.5 s per run. */
			struct result cal = run(500000, batch);
			double rate = 500000 / cal.secs;
			n = (uint64_t)(rate * 0.5);
			if (n < 500000)
				n = 500000;
			if (n > 200000000)
				n = 200000000;
		}
		for (int i = 0; i < RUNS; i++)
			r[i] = run(n, batch);
		qsort(r, RUNS, sizeof(r[0]), by_secs);
		struct result *m = &r[RUNS / 2];
		printf("%8u %10" PRIu64 " %12.0f %10.1f %10" PRIu64 " %10" PRIu64 "\n", batch, n,
		       n / m->secs, m->secs * 1e9 / n, m->c_wakes, m->p_wakes);
		fflush(stdout);
	}
	return 0;
}
