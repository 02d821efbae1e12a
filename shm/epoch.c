/*
 * epoch.c — epoch-based reclamation across processes (see epoch.h).
 *
 * The problem. A shard's writer replaces a record by publishing a new
 * offset and unlinking the old one. Readers in other processes may have
 * loaded the old offset a moment earlier and still be reading the record.
 * The writer cannot ask them (no messages on the read path, and they may be
 * descheduled for milliseconds), so it has to prove, from shared memory
 * alone, that nobody can still be looking before it frees the block. Once
 * freed, the slab hands the block to the next allocation of its class and
 * it is overwritten at once, so a mistake here is a reader returning another
 * key's value, not a crash.
 *
 * The idea. Time is cut into epochs by one counter in the segment header.
 * A reader writes the epoch it saw into its own slot before following any
 * offset and writes 0 when it is done. A block retired by the writer is
 * tagged with an epoch E that is bumped *after* the block was unlinked; a
 * reader announcing E or later cannot have found the block. So the block
 * is safe once every busy slot shows an epoch >= E. Readers never wait and
 * never write shared lines other than their own slot; the writer pays one
 * atomic increment per batch and one scan of the slots per collection.
 *
 * Why each order is what it is. Two different arguments cover two kinds of
 * reader, and each needs its own ordering.
 *
 * (1) Readers the scan sees busy with e >= E. They loaded the global epoch
 *     and read the value written by the bump to E (or a later one). The
 *     bump is an atomic read-modify-write with release semantics, and the
 *     reader's load is an acquire, so everything the writer did before the
 *     bump -- in particular the release store that unlinked the block --
 *     happens before everything the reader does after its load. The
 *     reader's loads of table slots therefore see the new offset (or a
 *     newer one), never the retired one. Two details matter:
 *       - the bump must be an RMW (fetch_add), not load + store: with 64
 *         shards bumping the same counter, a reader may read a value written
 *         by *another* shard's bump. An RMW continues the release sequence
 *         headed by ours, so the reader still synchronises with our bump.
 *         A load + store would break the chain and lose the guarantee.
 *       - the reader stores the epoch it *loaded*, not one it computes;
 *         e >= E is then evidence that the load happened after our bump.
 *     seq_cst on the bump is more than (1) needs (acq_rel would do) but it
 *     is the same instruction on x86 (lock xadd) and keeps the reasoning
 *     within one total order.
 *
 * (2) Readers the scan sees idle (0), or with an epoch stored before they
 *     loaded a fresh global. This is the store-buffering pattern:
 *         reader:  store slot = e;  FENCE;  load table slot
 *         writer:  store table slot (unlink) ... FENCE;  load slot
 *     Without the fences both loads may read the old values (each store
 *     still sitting in its CPU's store buffer: x86 allows exactly this
 *     reordering of a store with a later load), and then the writer would
 *     see "idle" while the reader sees the old offset: a use after free.
 *     With a seq_cst fence on each side, one fence comes first in the
 *     single total order of seq_cst operations; if it is the reader's, the
 *     writer's scan reads the reader's slot store (not idle: blocked); if it
 *     is the writer's, the reader's later loads see the unlink. That is why
 *     enter ends with atomic_thread_fence(seq_cst) and shm_epoch_min starts
 *     with one. The slot store itself is only a release (a plain mov on
 *     x86; see (3) for why release): the fence after it does the ordering,
 *     and a seq_cst store would add a second full barrier (xchg, then the
 *     fence's locked instruction) to every read.
 *     A reader that stored a stale e (it loaded the global, was preempted
 *     across a whole seal + collect, then stored) is covered by this case
 *     too: the scan missed it only if its loads see the unlink.
 *
 *     The reader's fence is not free: a locked instruction that waits for
 *     every earlier load, so a loop of GETs cannot overlap one lookup's
 *     cache misses with the next one's (README, "Costs behind the
 *     design"). Reads are far more frequent than reclamation, so the
 *     cost is moved to the writer, as liburcu's membarrier flavour does:
 *     a reader process registers with membarrier(2)
 *     (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) when it claims its slot,
 *     and from then on enter needs only a compiler barrier; the writer
 *     calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) before each scan,
 *     which runs a full barrier on every CPU currently running a registered
 *     process (one that is not running has passed a context switch, itself
 *     a barrier). That barrier plays the reader's fence in the argument
 *     above. If registration fails (a kernel without membarrier), that
 *     reader keeps its fence, and the writer's own fence still pairs with
 *     it; a writer whose membarrier call fails is on the same kernel, so
 *     no reader there skipped its fence.
 *
 * (3) The end of a read section. leave stores 0 with release, and the scan
 *     loads slots with acquire. When the scan reads that 0 (or a later
 *     epoch, whose store is also a release), every read the reader
 *     made of the block happens before the writer frees and reuses it, so
 *     the writer's overwrite cannot race with a late read. A relaxed scan
 *     would let the compiler or CPU move the writer's later stores to the
 *     block above the scan on weaker machines, and ThreadSanitizer (which
 *     knows nothing of fences) would have no edge to see.
 *
 * Epoch 0 means idle, so the global epoch must never be 0 while readers
 * run: shm_seg_create starts it at 1 and it only grows (2^64 bumps do not
 * happen). A reader that loaded 0 would announce nothing and be invisible.
 *
 * The retire list. One per writer, in its private memory: an array of
 * (offset, size, tag). Items are pushed untagged; a seal bumps the global
 * epoch once and tags every untagged item, so a batch of any size costs one
 * atomic RMW on a shared line. Seals happen one after another in one writer
 * and the global only grows, so tags are non-decreasing along the array:
 * collect frees a prefix and can stop at the first item that is not yet
 * safe; everything after it has an equal or larger tag. Unsealed items
 * (tag 0) are never freed: they were unlinked but no bump has yet been
 * ordered after the unlink.
 *
 * Dead readers. A reader killed inside a section leaves its slot busy and
 * blocks every later collection (never makes it unsafe). The supervisor,
 * which holds a pidfd per client, notices the death and calls
 * shm_epoch_slot_clear. Clearing a live reader's slot would be a bug in the
 * supervisor; nothing here can tell the difference.
 *
 * Hostile readers can only hurt themselves or stall reclamation: a slot is
 * written only by its owner, a too-large epoch only makes that reader's own
 * reads unsafe, a too-small one holds memory until the supervisor drops the
 * client.
 */
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shm/epoch.h"

#define RETIRE_MIN_CAP 64

/* Set when this process registered with membarrier. A forked child
 * inherits the variable but must not trust it (the registration belongs to
 * the parent's address space), so fork clears it: the child fences until
 * it claims a slot of its own. */
static _Atomic bool reader_registered;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static long membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

static void forget_registration(void)
{
	atomic_store_explicit(&reader_registered, false, memory_order_relaxed);
}

static void install_atfork(void)
{
	pthread_atfork(NULL, NULL, forget_registration);
}

static void register_reader(void)
{
	pthread_once(&atfork_once, install_atfork);
	if (!atomic_load_explicit(&reader_registered, memory_order_relaxed) &&
	    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0)
		atomic_store_explicit(&reader_registered, true, memory_order_relaxed);
}

bool shm_epoch_fence_free(void)
{
	return atomic_load_explicit(&reader_registered, memory_order_relaxed);
}

void shm_epoch_enter(struct shm_epoch_slot *slot, const struct shm_header *hdr)
{
	uint64_t e = atomic_load_explicit(&hdr->global_epoch, memory_order_acquire);

	atomic_store_explicit(&slot->epoch, e, memory_order_release);
	if (atomic_load_explicit(&reader_registered, memory_order_relaxed))
		atomic_signal_fence(memory_order_seq_cst); /* writer's membarrier fences for us */
	else
		atomic_thread_fence(memory_order_seq_cst);
}

void shm_epoch_leave(struct shm_epoch_slot *slot)
{
	atomic_store_explicit(&slot->epoch, 0, memory_order_release);
}

void shm_epoch_slot_init(struct shm_epoch_slot *slot, int32_t pid)
{
	register_reader();
	atomic_store_explicit(&slot->epoch, 0, memory_order_release);
	atomic_store_explicit(&slot->pid, pid, memory_order_release);
	slot->pad_ = 0;
}

void shm_epoch_slot_clear(struct shm_epoch_slot *slot)
{
	atomic_store_explicit(&slot->epoch, 0, memory_order_release);
	atomic_store_explicit(&slot->pid, 0, memory_order_release);
}

/* NULL entries are skipped: a table of channels may have holes. */
uint64_t shm_epoch_min(struct shm_epoch_slot *const *slots, size_t n)
{
	uint64_t min = UINT64_MAX;

	atomic_thread_fence(memory_order_seq_cst);
	if (n > 0)
		membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
	for (size_t i = 0; i < n; i++) {
		if (slots[i] == NULL)
			continue;
		uint64_t e = atomic_load_explicit(&slots[i]->epoch, memory_order_acquire);
		if (e != 0 && e < min)
			min = e;
	}
	return min;
}

uint64_t shm_epoch_bump(struct shm_header *hdr)
{
	/* Same argument as a seal followed by collect (see the top): a
	 * reader showing e >= E loaded the global after this bump. */
	return atomic_fetch_add_explicit(&hdr->global_epoch, 1, memory_order_seq_cst) + 1;
}

void shm_epoch_wait(struct shm_epoch_slot *const *slots, size_t n, uint64_t e)
{
	struct timespec ms = { 0, 1000000 };

	while (shm_epoch_min(slots, n) < e)
		nanosleep(&ms, NULL);
}

bool shm_epoch_wait_for(struct shm_epoch_slot *const *slots, size_t n, uint64_t e, uint64_t ns)
{
	struct timespec step = { 0, SHM_EPOCH_WAIT_STEP_NS };

	for (uint64_t waited = 0; shm_epoch_min(slots, n) < e; waited += SHM_EPOCH_WAIT_STEP_NS) {
		if (waited >= ns)
			return false;
		nanosleep(&step, NULL);
	}
	return true;
}

void shm_retire_init(struct shm_retire_list *l)
{
	memset(l, 0, sizeof(*l));
}

/* Queued blocks are not freed: they stay allocated in the slab. Collect
 * first (with no reader inside) if the memory should go back. */
void shm_retire_destroy(struct shm_retire_list *l)
{
	free(l->items);
	memset(l, 0, sizeof(*l));
}

static int retire_grow(struct shm_retire_list *l)
{
	size_t cap = l->cap ? l->cap * 2 : RETIRE_MIN_CAP;
	struct shm_retired *items;

	if (cap < l->cap || cap > SIZE_MAX / sizeof(*items))
		return SHM_ENOMEM;
	items = realloc(l->items, cap * sizeof(*items));
	if (items == NULL)
		return SHM_ENOMEM;
	l->items = items;
	l->cap = cap;
	return SHM_OK;
}

int shm_retire_reserve(struct shm_retire_list *l, size_t more)
{
	while (l->cap - l->n < more) {
		int rc = retire_grow(l);
		if (rc != SHM_OK)
			return rc;
	}
	return SHM_OK;
}

int shm_retire_push(struct shm_retire_list *l, uint64_t off, uint64_t size)
{
	if (l->n == l->cap) {
		int rc = retire_grow(l);
		if (rc != SHM_OK)
			return rc;
	}
	l->items[l->n++] = (struct shm_retired){ .off = off, .size = size, .epoch = 0 };
	l->unsealed++;
	return SHM_OK;
}

uint64_t shm_retire_seal(struct shm_retire_list *l, struct shm_header *hdr)
{
	uint64_t e;

	if (l->unsealed == 0)
		return 0;
	e = atomic_fetch_add_explicit(&hdr->global_epoch, 1, memory_order_seq_cst) + 1;
	for (size_t i = l->n - l->unsealed; i < l->n; i++)
		l->items[i].epoch = e;
	l->unsealed = 0;
	return e;
}

/* An item whose free fails (an offset the slab rejects: a caller bug) is
 * dropped rather than retried forever; it is not counted as freed. */
size_t shm_retire_collect(struct shm_retire_list *l, struct shm_seg *seg, struct shm_slab *slab,
			  struct shm_epoch_slot *const *slots, size_t nslots)
{
	size_t sealed = l->n - l->unsealed, done = 0, freed = 0;
	uint64_t min;

	if (sealed == 0)
		return 0;
	min = shm_epoch_min(slots, nslots);
	while (done < sealed && l->items[done].epoch <= min) {
		struct shm_retired *it = &l->items[done++];
		if (shm_slab_free(seg, slab, it->off, it->size) == SHM_OK)
			freed++;
	}
	if (done > 0) {
		memmove(l->items, l->items + done, (l->n - done) * sizeof(*l->items));
		l->n -= done;
	}
	return freed;
}
