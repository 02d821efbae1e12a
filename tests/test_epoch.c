/*
 * test_epoch.c — epoch-based reclamation (shm/epoch.c).
 *
 * Unit tests of the slot and retire-list operations, then three tests with
 * real reader processes: a reader holding an old epoch keeps a retired block
 * from being reused; a reader killed inside its read section blocks
 * reclamation until the supervisor (here the test, through a pidfd) clears
 * its slot; and a stress run of one writer and two readers that checks
 * every block a reader reaches.
 *
 * Setup mimics the real system: one data segment (memfd) created by the
 * test process, which plays the shard writer; readers map it read-only
 * through shm_seg_reopen_rdonly, like clients. Epoch slots live in a
 * separate MAP_SHARED memfd, like a client's channel. Children are killed
 * when the test process dies (PR_SET_PDEATHSIG) and reaped in .fini.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/epoch.h"
#include "shm/segment.h"
#include "shm/slab.h"

#include "tests/epoch_scenario.h"

#define SEG_SIZE (64ULL << 20)
#define NSLOTS 4
#define MAX_KIDS 8

/* ---------- fixture: segment, slots, children ---------- */

static struct shm_seg seg;
static struct shm_slab *slab;
static struct shm_epoch_slot *slot_mem;      /* NSLOTS slots in a memfd */
static struct shm_epoch_slot *slots[NSLOTS]; /* what shm_epoch_min takes */
static pid_t kids[MAX_KIDS];
static int nkids;

static void setup(void)
{
	int fd;

	cr_assert_eq(shm_seg_create(&seg, SEG_SIZE, 1), SHM_OK);
	slab = &shm_shard_at(&seg, 0)->slab;
	fd = memfd_create("amora-test-chan", MFD_CLOEXEC);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 4096), 0);
	slot_mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(slot_mem != MAP_FAILED);
	close(fd);
	for (int i = 0; i < NSLOTS; i++)
		slots[i] = &slot_mem[i];
	nkids = 0;
}

static void teardown(void)
{
	for (int i = 0; i < nkids; i++) {
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	}
	nkids = 0;
	munmap(slot_mem, 4096);
	shm_seg_close(&seg);
}

/* Fork a child that dies with us and runs fn(arg); its return value is the
 * exit code. The child never touches Criterion: it reports by exit code and
 * through shared memory. */
static pid_t spawn(int (*fn)(void *), void *arg)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(99);
		_exit(fn(arg));
	}
	cr_assert(nkids < MAX_KIDS);
	kids[nkids++] = pid;
	return pid;
}

/* Reap a child we spawned; returns its wait status. */
static int reap(pid_t pid)
{
	int st = 0;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = 0;
	return st;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wait until *flag == want (seconds timeout); false on timeout. */
static bool wait_flag(_Atomic int *flag, int want, double timeout)
{
	double end = now() + timeout;

	while (atomic_load_explicit(flag, memory_order_acquire) != want) {
		if (now() > end)
			return false;
		usleep(100);
	}
	return true;
}

/* Map a fresh MAP_SHARED anonymous region for control words. */
static void *shared_zeroed(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert(p != MAP_FAILED);
	return p;
}

/* A read-only view of the segment, as a client gets it. Called in the
 * child; returns false on failure. */
static bool attach_rdonly(int rdfd, struct shm_seg *out)
{
	return shm_seg_attach(out, rdfd, false) == SHM_OK;
}

/* ---------- a. unit tests ---------- */

TestSuite(epoch, .init = setup, .fini = teardown);

Test(epoch, enter_leave_values)
{
	struct shm_epoch_slot *s = slots[0];
	uint64_t g = atomic_load(&seg.hdr->global_epoch);

	cr_assert_eq(g, 1, "a new segment starts at epoch 1 (0 means idle)");
	shm_epoch_slot_init(s, 1234);
	cr_assert_eq(atomic_load(&s->pid), 1234);
	cr_assert_eq(atomic_load(&s->epoch), 0);
	shm_epoch_enter(s, seg.hdr);
	cr_assert_eq(atomic_load(&s->epoch), g);
	shm_epoch_leave(s);
	cr_assert_eq(atomic_load(&s->epoch), 0);

	atomic_store(&seg.hdr->global_epoch, 77);
	shm_epoch_enter(s, seg.hdr);
	cr_assert_eq(atomic_load(&s->epoch), 77);
	shm_epoch_slot_clear(s);
	cr_assert_eq(atomic_load(&s->epoch), 0);
	cr_assert_eq(atomic_load(&s->pid), 0);
}

Test(epoch, min_over_slots)
{
	cr_assert_eq(shm_epoch_min(slots, 0), UINT64_MAX);
	cr_assert_eq(shm_epoch_min(slots, NSLOTS), UINT64_MAX, "all idle");

	atomic_store(&seg.hdr->global_epoch, 9);
	shm_epoch_enter(slots[1], seg.hdr);
	atomic_store(&seg.hdr->global_epoch, 5);
	shm_epoch_enter(slots[3], seg.hdr);
	atomic_store(&seg.hdr->global_epoch, 7);
	shm_epoch_enter(slots[2], seg.hdr);
	cr_assert_eq(shm_epoch_min(slots, NSLOTS), 5);
	cr_assert_eq(shm_epoch_min(slots, 3), 7, "only the first n slots count");

	struct shm_epoch_slot *holes[3] = { NULL, slots[1], NULL };
	cr_assert_eq(shm_epoch_min(holes, 3), 9, "NULL entries are skipped");

	shm_epoch_leave(slots[3]);
	cr_assert_eq(shm_epoch_min(slots, NSLOTS), 7);
	shm_epoch_leave(slots[1]);
	shm_epoch_leave(slots[2]);
	cr_assert_eq(shm_epoch_min(slots, NSLOTS), UINT64_MAX);
}

Test(epoch, seal_bumps_once_per_batch)
{
	struct shm_retire_list l;
	uint64_t g = atomic_load(&seg.hdr->global_epoch);

	shm_retire_init(&l);
	cr_assert_eq(shm_retire_seal(&l, seg.hdr), 0, "nothing to seal");
	cr_assert_eq(atomic_load(&seg.hdr->global_epoch), g, "no bump for an empty batch");

	for (uint64_t i = 1; i <= 3; i++)
		cr_assert_eq(shm_retire_push(&l, i * 4096, 100), SHM_OK);
	cr_assert_eq(l.n, 3);
	cr_assert_eq(l.unsealed, 3);
	cr_assert_eq(l.items[0].epoch, 0, "unsealed items carry 0");

	uint64_t t1 = shm_retire_seal(&l, seg.hdr);
	cr_assert_eq(t1, g + 1);
	cr_assert_eq(atomic_load(&seg.hdr->global_epoch), g + 1, "one bump for three items");
	cr_assert_eq(l.unsealed, 0);
	for (size_t i = 0; i < 3; i++)
		cr_assert_eq(l.items[i].epoch, t1);

	cr_assert_eq(shm_retire_seal(&l, seg.hdr), 0);
	cr_assert_eq(atomic_load(&seg.hdr->global_epoch), g + 1, "nothing new: no bump");

	/* Another writer bumps the shared counter in between. */
	atomic_fetch_add(&seg.hdr->global_epoch, 5);
	cr_assert_eq(shm_retire_push(&l, 5 * 4096, 100), SHM_OK);
	uint64_t t2 = shm_retire_seal(&l, seg.hdr);
	cr_assert_eq(t2, g + 7);
	cr_assert_eq(l.items[3].epoch, t2);
	cr_assert_eq(l.items[2].epoch, t1, "earlier tags unchanged");

	/* The list grows past its first allocation and keeps order. */
	for (uint64_t i = 0; i < 1000; i++)
		cr_assert_eq(shm_retire_push(&l, 1000000 + i * 16, 16), SHM_OK);
	cr_assert_eq(l.n, 1004);
	cr_assert_eq(l.items[1003].off, 1000000 + 999 * 16);
	cr_assert_eq(l.unsealed, 1000);
	shm_retire_destroy(&l);
	cr_assert_null(l.items);
	cr_assert_eq(l.n, 0);
}

static uint64_t alloc_ok(uint64_t size)
{
	uint64_t off = 0;

	cr_assert_eq(shm_slab_alloc(&seg, slab, size, &off), SHM_OK);
	return off;
}

static uint64_t frees(void)
{
	struct shm_slab_stats st;

	shm_slab_stats(slab, &st);
	return st.frees;
}

Test(epoch, collect_frees_only_safe_items)
{
	struct shm_retire_list l;
	struct shm_epoch_slot *r = slots[0];
	uint64_t a = alloc_ok(100), b = alloc_ok(100), c = alloc_ok(100), d = alloc_ok(100);

	shm_retire_init(&l);
	shm_epoch_slot_init(r, getpid());
	shm_epoch_enter(r, seg.hdr); /* reader at epoch e0 */
	uint64_t e0 = atomic_load(&r->epoch);

	cr_assert_eq(shm_retire_push(&l, a, 100), SHM_OK);
	cr_assert_eq(shm_retire_push(&l, b, 100), SHM_OK);
	uint64_t ta = shm_retire_seal(&l, seg.hdr); /* a, b tagged e0 + 1 */
	cr_assert_eq(ta, e0 + 1);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0,
		     "reader at %llu may still see items tagged %llu", (unsigned long long)e0,
		     (unsigned long long)ta);
	cr_assert_eq(l.n, 2);
	cr_assert_eq(frees(), 0);

	/* Reader leaves and re-enters: it now announces ta. */
	shm_epoch_leave(r);
	shm_epoch_enter(r, seg.hdr);
	cr_assert_eq(atomic_load(&r->epoch), ta);

	cr_assert_eq(shm_retire_push(&l, c, 100), SHM_OK);
	uint64_t tc = shm_retire_seal(&l, seg.hdr);
	cr_assert_eq(shm_retire_push(&l, d, 100), SHM_OK); /* left unsealed */

	/* tag <= min frees a and b (tag == reader's epoch is safe), stops at c. */
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 2);
	cr_assert_eq(l.n, 2);
	cr_assert_eq(l.items[0].off, c, "compaction keeps order");
	cr_assert_eq(l.items[0].epoch, tc);
	cr_assert_eq(l.items[1].off, d);
	cr_assert_eq(l.items[1].epoch, 0);
	cr_assert_eq(l.unsealed, 1);
	cr_assert_eq(frees(), 2);

	/* Freed blocks are reused by the same class (b was freed last). */
	uint64_t x = alloc_ok(100), y = alloc_ok(100);
	cr_assert((x == a && y == b) || (x == b && y == a));

	/* All idle: c goes, d stays because it is not sealed. */
	shm_epoch_leave(r);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 1);
	cr_assert_eq(l.n, 1);
	cr_assert_eq(l.items[0].off, d);
	cr_assert_eq(shm_retire_seal(&l, seg.hdr), tc + 1);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 1);
	cr_assert_eq(l.n, 0);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0, "empty list");

	/* A bad offset is dropped, not freed and not retried forever. */
	cr_assert_eq(shm_retire_push(&l, 8, 100), SHM_OK);
	shm_retire_seal(&l, seg.hdr);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0);
	cr_assert_eq(l.n, 0);
	shm_retire_destroy(&l);
}

/* ---------- b, c. a reader process holding an old epoch ---------- */

#define BLK_SIZE 200 /* class 224 */

struct ctl {
	_Atomic uint64_t block_off; /* the "table slot" the reader follows */
	_Atomic int state;          /* see READER_* */
	_Atomic uint64_t checks;    /* pattern checks done inside the section */
	_Atomic int bad;            /* reader saw the pattern change */
	int rdfd;                   /* read-only segment fd for the reader */
	int slot;                   /* reader's slot index */
};

enum { READER_START, READER_INSIDE, READER_GO_LEAVE, READER_LEFT };

static uint8_t pattern_a(size_t i) { return (uint8_t)(0x5a ^ (i * 7)); }

static void fill_a(uint8_t *p)
{
	for (size_t i = 0; i < BLK_SIZE; i++)
		p[i] = pattern_a(i);
}

static bool check_a(const volatile uint8_t *p)
{
	for (size_t i = 0; i < BLK_SIZE; i++)
		if (p[i] != pattern_a(i))
			return false;
	return true;
}

/* Child: enter, follow block_off, check the block until told to leave
 * (or forever, if hold_forever: the parent kills us inside the section). */
static int holding_reader(struct ctl *c, bool hold_forever)
{
	struct shm_seg rs;
	struct shm_epoch_slot *s = slots[c->slot];

	if (!attach_rdonly(c->rdfd, &rs))
		return 10;
	shm_epoch_slot_init(s, getpid());
	shm_epoch_enter(s, rs.hdr);
	uint64_t off = atomic_load_explicit(&c->block_off, memory_order_acquire);
	const volatile uint8_t *p = shm_ptr(&rs, off, BLK_SIZE);
	if (p == NULL || !check_a(p))
		return 11;
	atomic_store_explicit(&c->state, READER_INSIDE, memory_order_release);
	while (hold_forever ||
	       atomic_load_explicit(&c->state, memory_order_acquire) != READER_GO_LEAVE) {
		if (!check_a(p)) {
			atomic_store(&c->bad, 1);
			return 12;
		}
		atomic_fetch_add_explicit(&c->checks, 1, memory_order_relaxed);
	}
	shm_epoch_leave(s);
	atomic_store_explicit(&c->state, READER_LEFT, memory_order_release);
	return 0;
}

static int reader_until_told(void *arg) { return holding_reader(arg, false); }
static int reader_forever(void *arg) { return holding_reader(arg, true); }

/* Publish a block with pattern A and start a reader that holds it. */
static struct ctl *start_holder(int (*fn)(void *), uint64_t *x, pid_t *pid)
{
	struct ctl *c = shared_zeroed(sizeof(*c));

	*x = alloc_ok(BLK_SIZE);
	fill_a(shm_ptr(&seg, *x, BLK_SIZE));
	atomic_store_explicit(&c->block_off, *x, memory_order_release);
	c->rdfd = shm_seg_reopen_rdonly(&seg);
	cr_assert(c->rdfd >= 0);
	c->slot = 1;
	*pid = spawn(fn, c);
	cr_assert(wait_flag(&c->state, READER_INSIDE, 10), "reader did not start");
	cr_assert_eq(atomic_load(&slots[1]->pid), *pid);
	cr_assert_neq(atomic_load(&slots[1]->epoch), 0);
	return c;
}

/* Unlink the block the reader holds and retire it. */
static void unlink_and_retire(struct ctl *c, struct shm_retire_list *l, uint64_t x)
{
	atomic_store_explicit(&c->block_off, 0, memory_order_release);
	cr_assert_eq(shm_retire_push(l, x, BLK_SIZE), SHM_OK);
	cr_assert_neq(shm_retire_seal(l, seg.hdr), 0);
}

Test(epoch, no_reuse_while_reader_holds_old_epoch, .timeout = 30)
{
	struct shm_retire_list l;
	uint64_t x;
	pid_t pid;
	struct ctl *c = start_holder(reader_until_told, &x, &pid);

	shm_retire_init(&l);
	unlink_and_retire(c, &l, x);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0);

	/* Churn the class hard: fresh blocks overwritten with another pattern,
	 * half freed at once (reused by the next round), half retired (stuck
	 * behind x, which has the oldest tag). x must never come back. */
	uint64_t blk[64];
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 64; i++) {
			blk[i] = alloc_ok(BLK_SIZE);
			cr_assert_neq(blk[i], x, "retired block reused in round %d", round);
			memset(shm_ptr(&seg, blk[i], BLK_SIZE), 0xdd, BLK_SIZE);
		}
		for (int i = 0; i < 64; i += 2)
			cr_assert_eq(shm_slab_free(&seg, slab, blk[i], BLK_SIZE), SHM_OK);
		for (int i = 1; i < 64; i += 2)
			cr_assert_eq(shm_retire_push(&l, blk[i], BLK_SIZE), SHM_OK);
		shm_retire_seal(&l, seg.hdr);
		cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0);
		cr_assert_eq(l.items[0].off, x);
		if (round % 20 == 0)
			usleep(1000); /* let the reader check in between */
	}
	cr_assert_eq(atomic_load(&c->bad), 0, "reader saw its block change");
	cr_assert(atomic_load(&c->checks) > 0);
	cr_assert(check_a(shm_ptr(&seg, x, BLK_SIZE)));

	/* Reader leaves: the next collect frees everything, x included. */
	size_t queued = l.n;
	atomic_store_explicit(&c->state, READER_GO_LEAVE, memory_order_release);
	cr_assert(wait_flag(&c->state, READER_LEFT, 10));
	int st = reap(pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader status %#x", st);
	cr_assert_eq(atomic_load(&slots[1]->epoch), 0);

	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), queued);
	cr_assert_eq(l.n, 0);
	bool reused = false;
	for (size_t i = 0; i < queued + 64 && !reused; i++)
		reused = alloc_ok(BLK_SIZE) == x;
	cr_assert(reused, "x was freed but never handed out again");
	shm_retire_destroy(&l);
	close(c->rdfd);
}

static int pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

Test(epoch, dead_reader_is_cleared_then_reclaimed, .timeout = 30)
{
	struct shm_retire_list l;
	uint64_t x;
	pid_t pid;
	struct ctl *c = start_holder(reader_forever, &x, &pid);
	int pfd = pidfd_open(pid);

	cr_assert(pfd >= 0, "pidfd_open: %s", strerror(errno));
	shm_retire_init(&l);
	unlink_and_retire(c, &l, x);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0);

	/* Killed inside its read section. */
	uint64_t held = atomic_load(&slots[1]->epoch);
	cr_assert_eq(kill(pid, SIGKILL), 0);
	struct pollfd pf = { .fd = pfd, .events = POLLIN };
	cr_assert_eq(poll(&pf, 1, 10000), 1, "pidfd did not report the death");
	int st = reap(pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

	/* Dead but not yet swept: its slot still blocks reclamation. */
	cr_assert_eq(atomic_load(&slots[1]->epoch), held);
	cr_assert_eq(atomic_load(&slots[1]->pid), pid);
	for (int i = 0; i < 10; i++) {
		shm_retire_seal(&l, seg.hdr);
		cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 0);
		cr_assert_neq(alloc_ok(BLK_SIZE), x);
	}
	cr_assert_eq(l.n, 1);

	/* The supervisor sweeps the slot; x is reclaimed and reused. */
	shm_epoch_slot_clear(slots[1]);
	cr_assert_eq(atomic_load(&slots[1]->pid), 0);
	cr_assert_eq(shm_retire_collect(&l, &seg, slab, slots, NSLOTS), 1);
	cr_assert_eq(l.n, 0);
	cr_assert_eq(alloc_ok(BLK_SIZE), x, "freed block is the first one handed out");
	close(pfd);
	shm_retire_destroy(&l);
	close(c->rdfd);
}

/* ---------- d. stress: 1 writer, 2 reader processes ---------- */

#define STRESS_READERS 2
#define STRESS_MIN_READS 1000000ULL
#define STRESS_MIN_WRITES 200000ULL
#define STRESS_MIN_SECONDS 2.0
#define STRESS_MAX_SECONDS 15.0

struct stress {
	_Atomic int stop;
	_Atomic int failed;     /* first failure code from a reader */
	uint64_t fail_seq, fail_off;
	int rdfd;
	uint64_t root_off;      /* segment offset of the _Atomic uint64_t "current" */
	struct {
		_Alignas(64) _Atomic uint64_t reads;
		_Atomic int ready;
	} r[STRESS_READERS];
};

struct reader_arg {
	struct stress *st;
	int who; /* slot and counter index */
};

/* 0 if the block is intact, else a failure code. */
static int blk_check(const struct shm_seg *s, uint64_t off)
{
	const struct blk *b = shm_ptr(s, off, sizeof(*b));

	if (b == NULL)
		return 20;
	uint64_t seq = b->seq;
	uint32_t len = b->len;
	if (len != data_len(seq) || shm_ptr(s, off, sizeof(*b) + len) == NULL)
		return 21;
	if (blk_crc(b) != b->crc)
		return 22;
	for (uint32_t i = 0; i < len; i++)
		if (b->data[i] != data_byte(seq, i))
			return 23;
	atomic_signal_fence(memory_order_seq_cst); /* really read it again */
	if (b->seq != seq)
		return 24;
	return 0;
}

static int stress_reader(void *arg)
{
	const struct reader_arg *a = arg;
	struct stress *st = a->st;
	int me = a->who;
	struct shm_seg rs;
	struct shm_epoch_slot *s = slots[me];
	uint64_t n = 0;

	if (!attach_rdonly(st->rdfd, &rs))
		return 10;
	const _Atomic uint64_t *cur = shm_ptr(&rs, st->root_off, sizeof(*cur));
	if (cur == NULL)
		return 13;
	shm_epoch_slot_init(s, getpid());
	atomic_store(&st->r[me].ready, 1);
	while (!atomic_load_explicit(&st->stop, memory_order_relaxed)) {
		shm_epoch_enter(s, rs.hdr);
		uint64_t off = atomic_load_explicit(cur, memory_order_acquire);
		int rc = blk_check(&rs, off);
		/* Now and then stay inside longer, re-checking, to give a
		 * premature free time to show. */
		for (int k = 0; rc == 0 && (n & 255) == 0 && k < 20; k++)
			rc = blk_check(&rs, off);
		if (rc != 0) {
			const struct blk *b = shm_ptr(&rs, off, sizeof(*b));
			st->fail_seq = b ? b->seq : 0;
			st->fail_off = off;
			atomic_store(&st->failed, rc);
			return rc;
		}
		shm_epoch_leave(s);
		if ((++n & 1023) == 0)
			atomic_store_explicit(&st->r[me].reads, n, memory_order_relaxed);
	}
	atomic_store_explicit(&st->r[me].reads, n, memory_order_relaxed);
	return 0;
}

static uint64_t publish_new(uint64_t seq)
{
	uint64_t off = alloc_ok(blk_size(seq));

	blk_write(shm_ptr(&seg, off, blk_size(seq)), seq);
	return off;
}

Test(epoch, stress_writer_two_reader_processes, .timeout = 40)
{
	struct stress *st = shared_zeroed(sizeof(*st));
	struct shm_retire_list l;
	uint64_t root = alloc_ok(sizeof(uint64_t));
	_Atomic uint64_t *cur = shm_ptr(&seg, root, sizeof(*cur));
	pid_t pids[STRESS_READERS];
	struct reader_arg args[STRESS_READERS];
	uint64_t seq = 1, freed = 0, reads = 0;
	size_t n;

	shm_retire_init(&l);
	atomic_store_explicit(cur, publish_new(seq), memory_order_release);
	st->root_off = root;
	st->rdfd = shm_seg_reopen_rdonly(&seg);
	cr_assert(st->rdfd >= 0);
	for (int i = 0; i < STRESS_READERS; i++) {
		args[i] = (struct reader_arg){ .st = st, .who = i };
		pids[i] = spawn(stress_reader, &args[i]);
		cr_assert(wait_flag(&st->r[i].ready, 1, 10));
	}

	double start = now(), deadline = start + STRESS_MAX_SECONDS;
	while (!atomic_load(&st->failed)) {
		uint64_t old = atomic_load_explicit(cur, memory_order_relaxed);
		uint64_t nw = publish_new(++seq);
		atomic_store_explicit(cur, nw, memory_order_release);
		cr_assert_eq(shm_retire_push(&l, old, blk_size(seq - 1)), SHM_OK);
		shm_retire_seal(&l, seg.hdr);
		cr_assert_eq(collect_and_poison(&l, &seg, slab, slots, NSLOTS, &n), 0);
		freed += n;
		if ((seq & 1023) == 0) {
			reads = 0;
			for (int i = 0; i < STRESS_READERS; i++)
				reads += atomic_load(&st->r[i].reads);
			double t = now();
			if ((reads >= STRESS_MIN_READS && seq >= STRESS_MIN_WRITES &&
			     t > start + STRESS_MIN_SECONDS) || t > deadline)
				break;
		}
	}
	atomic_store(&st->stop, 1);
	for (int i = 0; i < STRESS_READERS; i++) {
		int status = reap(pids[i]);
		cr_assert(WIFEXITED(status), "reader %d status %#x", i, status);
		cr_assert_eq(WEXITSTATUS(status), 0,
			     "reader %d: bad block (code %d, seq %llu at offset %llu)", i,
			     WEXITSTATUS(status), (unsigned long long)st->fail_seq,
			     (unsigned long long)st->fail_off);
	}
	reads = 0;
	for (int i = 0; i < STRESS_READERS; i++)
		reads += atomic_load(&st->r[i].reads);
	cr_log_info("epoch stress: %llu writes, %llu reads, %llu freed in %.2f s",
		    (unsigned long long)seq, (unsigned long long)reads,
		    (unsigned long long)freed, now() - start);
	cr_assert_geq(reads, STRESS_MIN_READS, "only %llu reads", (unsigned long long)reads);
	cr_assert_geq(seq, STRESS_MIN_WRITES);

	/* Memory was recycled: with the readers gone everything retired is
	 * freed, and the slab never grew beyond one chunk per size class. */
	cr_assert_eq(collect_and_poison(&l, &seg, slab, slots, NSLOTS, &n), 0);
	freed += n;
	cr_assert_eq(l.n, 0, "%zu blocks still queued with no reader inside", l.n);
	cr_assert_eq(freed, seq - 1, "every retired block was freed once");
	struct shm_slab_stats ss;
	shm_slab_stats(slab, &ss);
	cr_assert_leq(ss.chunk_bytes, 16 * SHM_CHUNK_SIZE);
	shm_retire_destroy(&l);
	close(st->rdfd);
}

/* The fence-free read path is per process: a forked child must not inherit
 * it (its address space is not registered) until it claims its own slot. */
Test(epoch, membarrier_registration_is_per_process, .init = setup, .fini = teardown)
{
	struct shm_epoch_slot *s = slot_mem;

	shm_epoch_slot_init(&s[0], getpid());
	cr_assert(shm_epoch_fence_free(), "membarrier is available on this kernel");
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int bad = shm_epoch_fence_free();
		shm_epoch_slot_init(&s[1], getpid());
		_exit(bad || !shm_epoch_fence_free());
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* shm_epoch_wait returns only once a reader that was inside a section at
 * the bump has left: a restarted writer relies on that before it reuses
 * memory its dead predecessor had unlinked. */
static int leave_after_100ms(void *arg)
{
	(void)arg;
	usleep(100000);
	shm_epoch_leave(slots[1]);
	return 0;
}

Test(epoch, quiesce_waits_for_readers_inside)
{
	shm_epoch_enter(slots[1], seg.hdr);
	cr_assert_gt(spawn(leave_after_100ms, NULL), 0);
	shm_epoch_wait(slots, NSLOTS, shm_epoch_bump(seg.hdr));
	cr_assert_eq(atomic_load(&slots[1]->epoch), 0, "returned while the reader was inside");
	shm_epoch_wait(slots, NSLOTS, shm_epoch_bump(seg.hdr)); /* nobody inside: at once */
}
