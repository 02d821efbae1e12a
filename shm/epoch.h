/*
 * epoch.h — epoch-based reclamation (EBR) across processes.
 *
 * Readers in other processes follow offsets into memory that a shard's
 * writer may unlink at any moment (an updated record, a grown table). The
 * writer must not free such memory while a reader may still be looking at
 * it. EBR makes that cheap for readers: two stores per read section.
 *
 * The words:
 *   - the global epoch, a counter in the segment header, bumped by writers;
 *   - one struct shm_epoch_slot per reader (per client handle), living in
 *     memory that reader can write (its channel). epoch == 0 means
 *     "not reading"; otherwise it is the global epoch the reader saw when
 *     it entered.
 *
 * Protocol (the proof is the classic store-fence-load pairing):
 *   reader enter:  e = load(global); store(slot.epoch, e); full fence
 *                  (a compiler barrier once registered: see epoch.c);
 *                  ... loads of table slots and records ...
 *   reader leave:  store-release(slot.epoch, 0)
 *   writer:        unlink (release store of the new slot/table offset);
 *                  shm_retire_push(item) -- the item is "unsealed";
 *                  once per batch: shm_retire_seal(): E = ++global (seq_cst)
 *                  tags every unsealed item with E;
 *                  shm_retire_collect(): full fence, min = smallest non-zero
 *                  slot epoch, free every item with tag <= min.
 *   A reader whose slot holds e >= E loaded the global epoch after the bump,
 *   hence after the unlink, and cannot reach the item. A reader the writer
 *   saw as idle (0) that enters later also sees the unlink: either the
 *   writer's scan saw its store, or its fence comes after the writer's and
 *   its loads see the unlinked state.
 *
 * Dead readers: a process killed inside a read section leaves its slot
 * non-zero and would block reclamation forever. The slot records the pid;
 * whoever supervises readers (the coordinator, which holds a pidfd per
 * client) calls shm_epoch_slot_clear() once the process is gone.
 *
 * The retire list is private to the writer process (plain malloc memory):
 * only the writer reads or changes it.
 */
#ifndef AMORA_SHM_EPOCH_H
#define AMORA_SHM_EPOCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/segment.h"

struct shm_epoch_slot {
	_Atomic uint64_t epoch; /* 0: idle */
	_Atomic int32_t pid;    /* owner, 0: free slot */
	uint32_t pad_;
	/* The start number (batch.h) of the reader's oldest open iterator
	 * plus one, 0: none. Stored (release) inside the section that loaded it; a shard
	 * resolves a committed batch into plain records only once every
	 * slot's is 0 or at least the batch's number, after an epoch grace. */
	_Atomic uint64_t iter_start;
} __attribute__((aligned(SHM_CACHELINE)));

/* Reader side. Enter before following any offset, leave when done with
 * every pointer obtained inside. Not reentrant: one section at a time. */
void shm_epoch_enter(struct shm_epoch_slot *slot, const struct shm_header *hdr);
void shm_epoch_leave(struct shm_epoch_slot *slot);

/* Claim a slot for process `pid` (slot owner's side). Also registers the
 * calling process with membarrier(2), which lets shm_epoch_enter skip its
 * CPU fence (the writer's membarrier call stands in for it): call it in
 * the process that will read, before its first read section. */
void shm_epoch_slot_init(struct shm_epoch_slot *slot, int32_t pid);
/* Whether this process's read sections run without a CPU fence (it
 * registered with membarrier in shm_epoch_slot_init; a forked child starts
 * unregistered). */
bool shm_epoch_fence_free(void);

/* Supervisor side: forget a dead reader (idle and unowned afterwards). */
void shm_epoch_slot_clear(struct shm_epoch_slot *slot);

/* Smallest epoch any of the `n` slots is reading in, UINT64_MAX if all are
 * idle. Issues the fence the protocol needs before scanning: its own, and
 * membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) for the registered readers
 * (its cost: README, "Costs behind the design"). */
uint64_t shm_epoch_min(struct shm_epoch_slot *const *slots, size_t n);

/* Quiescence, in two steps: bump the global epoch once and return the new
 * value E; then wait until every slot among `slots` that is inside a read
 * section shows an epoch >= E (polls every millisecond). Memory unlinked
 * before the bump is then out of every reader's reach. A slot added to
 * `slots` between the two calls is covered too. Waits as long as a reader
 * stays inside; the supervisor cuts off readers stuck for long
 * (coordinator/slots.c, cut_stuck_reader). */
uint64_t shm_epoch_bump(struct shm_header *hdr);
void shm_epoch_wait(struct shm_epoch_slot *const *slots, size_t n, uint64_t e);
/* The same wait bounded to about `ns` (polls every SHM_EPOCH_WAIT_STEP_NS):
 * true once every slot shows >= E, false if one still did not at the end. */
#define SHM_EPOCH_WAIT_STEP_NS 200000
bool shm_epoch_wait_for(struct shm_epoch_slot *const *slots, size_t n, uint64_t e, uint64_t ns);

struct shm_retired {
	uint64_t off;
	uint64_t size;
	uint64_t epoch; /* 0 until sealed */
};

struct shm_retire_list {
	struct shm_retired *items;
	size_t n, cap;
	size_t unsealed; /* items[n - unsealed .. n) carry epoch 0 */
};

void shm_retire_init(struct shm_retire_list *l);
void shm_retire_destroy(struct shm_retire_list *l);

/* Queue slab memory (`off`, `size` as given to shm_slab_alloc) that was
 * just unlinked. Errors: SHM_ENOMEM if the list cannot grow; the caller then
 * still owns the block (nothing was queued). */
int shm_retire_push(struct shm_retire_list *l, uint64_t off, uint64_t size);

/* Make room for `more` pushes beyond the items queued now, so that they
 * cannot fail. Errors: SHM_ENOMEM (the list is as it was). */
int shm_retire_reserve(struct shm_retire_list *l, size_t more);

/* Bump the global epoch once and tag every unsealed item with it. Does
 * nothing when no item is unsealed. Returns the tag used (or 0). */
uint64_t shm_retire_seal(struct shm_retire_list *l, struct shm_header *hdr);

/* Free (into `slab`) every sealed item that no reader among `slots` can
 * still see. Returns how many items were freed. */
size_t shm_retire_collect(struct shm_retire_list *l, struct shm_seg *seg, struct shm_slab *slab,
			  struct shm_epoch_slot *const *slots, size_t nslots);

#endif
