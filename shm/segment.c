/*
 * segment.c — creating, mapping and sealing the data segment; the chunk pool.
 *
 * The segment is a memfd: anonymous, sized with ftruncate (sparse, so a
 * 64 GiB segment costs nothing until written), passed between processes as
 * a file descriptor. The creator formats the header once; every other
 * process validates it before trusting any offset in it, since a client
 * may be handed any fd and a bad layout must be an error, not a crash.
 *
 * The chunk pool is shared by every writer process, so it is lock-free:
 *
 *   chunk_bump      index of the first never-used chunk (fetch_add / CAS)
 *   chunk_free_top  Treiber stack of freed chunks: (tag << 32) | (index + 1)
 *   chunk_next[i]   the link below chunk i on the stack
 *
 * The tag is bumped by every successful push and pop, so a pop that read a
 * stale top (A), lost the CPU while A was popped, reused and pushed again,
 * fails its CAS instead of installing a stale link (the ABA problem). Links
 * live in a side array rather than in the chunk, so reading a link of a
 * chunk that someone just popped and started using reads a stale index,
 * never a pointer into user data; the CAS then fails and the pop retries.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "shm/batch.h"
#include "shm/segment.h"

#define NO_CHUNK 0u

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

static _Atomic uint32_t *chunk_next(const struct shm_seg *seg)
{
	return (_Atomic uint32_t *)(seg->base + seg->hdr->chunk_next_off);
}

/* Header fields that a formatted segment of `size` bytes must have. */
static void layout(struct shm_header *h, uint64_t size, uint32_t shards)
{
	uint64_t off = align_up(sizeof(*h), SHM_CACHELINE);

	h->magic = SHM_MAGIC;
	h->version = SHM_VERSION;
	h->shard_count = shards;
	h->size = size;
	h->chunk_size = SHM_CHUNK_SIZE;
	h->shard_off = off;
	h->shard_size = sizeof(struct shm_shard);
	off += (uint64_t)shards * sizeof(struct shm_shard);
	h->batch_off = align_up(off, SHM_CACHELINE);
	off = h->batch_off + (uint64_t)SHM_BATCH_SLOTS * SHM_BATCH_WORDS * sizeof(struct shm_batch_word);
	h->chunk_next_off = align_up(off, SHM_CACHELINE);
	/* nchunks depends on where chunks start, which depends on nchunks:
	 * size the link array for the whole segment, which over-counts. */
	off = h->chunk_next_off + (size >> SHM_CHUNK_SHIFT) * sizeof(uint32_t);
	h->chunk_owner_off = align_up(off, SHM_CACHELINE);
	off = h->chunk_owner_off + (size >> SHM_CHUNK_SHIFT) * sizeof(uint32_t);
	h->chunk_base = align_up(off, SHM_CHUNK_SIZE);
	h->nchunks = h->chunk_base < size ? (uint32_t)((size - h->chunk_base) >> SHM_CHUNK_SHIFT) : 0;
}

static int map(struct shm_seg *seg, int fd, uint64_t size, bool writable)
{
	int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
	void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return SHM_ESYS;
	seg->fd = fd;
	seg->writable = writable;
	seg->base = p;
	seg->size = size;
	seg->hdr = p;
	return SHM_OK;
}

int shm_seg_create(struct shm_seg *seg, uint64_t size, uint32_t shard_count)
{
	struct shm_header probe;
	int fd, rc;

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	if (shard_count == 0 || shard_count > SHM_MAX_SHARDS || (shard_count & (shard_count - 1)))
		return SHM_EINVAL;
	size &= ~(SHM_CHUNK_SIZE - 1);
	if (size > SHM_MAX_SIZE)
		return SHM_EINVAL;
	memset(&probe, 0, sizeof(probe));
	layout(&probe, size, shard_count);
	if (probe.nchunks == 0)
		return SHM_EINVAL;

	fd = memfd_create("amora-data", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return SHM_ESYS;
	if (ftruncate(fd, (off_t)size) < 0 || (rc = map(seg, fd, size, true)) != SHM_OK) {
		int e = errno;
		close(fd);
		errno = e;
		return SHM_ESYS;
	}
	layout(seg->hdr, size, shard_count);
	atomic_store(&seg->hdr->global_epoch, 1);
	if (getrandom(&seg->hdr->boot, sizeof(seg->hdr->boot), 0) != sizeof(seg->hdr->boot))
		seg->hdr->boot = (uint64_t)time(NULL) << 20 ^ (uint64_t)getpid();
	for (uint32_t i = 0; i < shard_count; i++)
		shm_shard_at(seg, i)->id = i;
	return SHM_OK;
}

/* Everything a reader relies on before following any offset. */
static bool header_valid(const struct shm_header *h, uint64_t file_size)
{
	struct shm_header want;

	if (h->magic != SHM_MAGIC || h->version != SHM_VERSION || h->size != file_size)
		return false;
	if (h->shard_count == 0 || h->shard_count > SHM_MAX_SHARDS ||
	    (h->shard_count & (h->shard_count - 1)) ||
	    (h->placement != SHM_PLACE_KEY && h->placement != SHM_PLACE_TAGS))
		return false;
	memset(&want, 0, sizeof(want));
	layout(&want, file_size, h->shard_count);
	if (want.nchunks == 0 || (file_size & (SHM_CHUNK_SIZE - 1)))
		return false; /* the layout would not fit in the file */
	return h->chunk_size == want.chunk_size && h->shard_off == want.shard_off &&
	       h->shard_size == want.shard_size && h->chunk_next_off == want.chunk_next_off &&
	       h->chunk_owner_off == want.chunk_owner_off && h->batch_off == want.batch_off &&
	       h->chunk_base == want.chunk_base && h->nchunks == want.nchunks;
}

int shm_seg_attach(struct shm_seg *seg, int fd, bool writable)
{
	off_t size = lseek(fd, 0, SEEK_END);

	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
	if (size < 0)
		return SHM_ESYS;
	if ((uint64_t)size < sizeof(struct shm_header) || (uint64_t)size > SHM_MAX_SIZE)
		return SHM_ECORRUPT;
	if (map(seg, fd, (uint64_t)size, writable) != SHM_OK)
		return SHM_ESYS;
	if (!header_valid(seg->hdr, (uint64_t)size)) {
		munmap(seg->base, seg->size);
		memset(seg, 0, sizeof(*seg));
		seg->fd = -1;
		return SHM_ECORRUPT;
	}
	return SHM_OK;
}

int shm_seg_seal(struct shm_seg *seg)
{
	int seals = F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

	return fcntl(seg->fd, F_ADD_SEALS, seals) < 0 ? SHM_ESYS : SHM_OK;
}

int shm_seg_reopen_rdonly(const struct shm_seg *seg)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", seg->fd);
	return open(path, O_RDONLY | O_CLOEXEC);
}

void shm_seg_close(struct shm_seg *seg)
{
	if (seg->base)
		munmap(seg->base, seg->size);
	if (seg->fd >= 0)
		close(seg->fd);
	memset(seg, 0, sizeof(*seg));
	seg->fd = -1;
}

/* Each writer's counters alone on their line (segment.h, "Counters"). */
_Static_assert(sizeof(struct shm_shard_counters) <= SHM_CACHELINE &&
	       offsetof(struct shm_shard, ctr) % SHM_CACHELINE == 0 &&
	       sizeof(struct shm_shard) % SHM_CACHELINE == 0, "a shard's counters have a line of their own");
_Static_assert(sizeof(struct shm_amorad_counters) <= SHM_CACHELINE &&
	       offsetof(struct shm_header, amorad) % SHM_CACHELINE == 0 &&
	       sizeof(struct shm_header) % SHM_CACHELINE == 0, "amorad's counters have a line of their own");

void shm_amorad_stats(const struct shm_seg *seg, struct shm_amorad_stats *out)
{
	const struct shm_amorad_counters *c = &seg->hdr->amorad;

	out->commands_processed = atomic_load_explicit(&c->commands_processed, memory_order_relaxed);
	out->connections_received = atomic_load_explicit(&c->connections_received, memory_order_relaxed);
	out->connections_rejected = atomic_load_explicit(&c->connections_rejected, memory_order_relaxed);
	out->connected_clients = atomic_load_explicit(&c->connected_clients, memory_order_relaxed);
	out->attached_clients = atomic_load_explicit(&c->attached_clients, memory_order_relaxed);
}

struct shm_shard *shm_shard_at(const struct shm_seg *seg, uint32_t i)
{
	if (i >= seg->hdr->shard_count)
		return NULL;
	return (struct shm_shard *)(seg->base + seg->hdr->shard_off) + i;
}

uint64_t shm_chunk_offset(const struct shm_seg *seg, uint32_t idx)
{
	return seg->hdr->chunk_base + ((uint64_t)idx << SHM_CHUNK_SHIFT);
}

uint32_t shm_chunks_touched(const struct shm_seg *seg)
{
	uint64_t b = atomic_load_explicit(&seg->hdr->chunk_bump, memory_order_relaxed);

	return b > seg->hdr->nchunks ? seg->hdr->nchunks : (uint32_t)b;
}

static _Atomic uint32_t *chunk_owner(const struct shm_seg *seg)
{
	return (_Atomic uint32_t *)(seg->base + seg->hdr->chunk_owner_off);
}

void shm_chunk_set_owner(struct shm_seg *seg, uint64_t off, uint32_t n, uint32_t owner)
{
	uint64_t idx = (off - seg->hdr->chunk_base) >> SHM_CHUNK_SHIFT;

	for (uint32_t i = 0; i < n && idx + i < seg->hdr->nchunks; i++)
		atomic_store_explicit(&chunk_owner(seg)[idx + i], owner, memory_order_relaxed);
}

uint32_t shm_chunk_owner(const struct shm_seg *seg, uint64_t off)
{
	uint64_t idx;

	if (off < seg->hdr->chunk_base)
		return 0;
	idx = (off - seg->hdr->chunk_base) >> SHM_CHUNK_SHIFT;
	return idx < seg->hdr->nchunks ? atomic_load_explicit(&chunk_owner(seg)[idx], memory_order_relaxed) : 0;
}

static int pop_free(struct shm_seg *seg, uint32_t *idx)
{
	struct shm_header *h = seg->hdr;
	uint64_t top = atomic_load_explicit(&h->chunk_free_top, memory_order_acquire);

	for (;;) {
		uint32_t cur = (uint32_t)top;
		if (cur == NO_CHUNK)
			return SHM_ENOMEM;
		if (cur > h->nchunks)
			return SHM_ECORRUPT;
		uint32_t below = atomic_load_explicit(&chunk_next(seg)[cur - 1], memory_order_relaxed);
		uint64_t next = ((top >> 32) + 1) << 32 | below;
		if (atomic_compare_exchange_weak_explicit(&h->chunk_free_top, &top, next,
							  memory_order_acq_rel, memory_order_acquire)) {
			*idx = cur - 1;
			return SHM_OK;
		}
	}
}

static int bump(struct shm_seg *seg, uint32_t n, uint32_t *idx)
{
	struct shm_header *h = seg->hdr;
	uint64_t cur = atomic_load_explicit(&h->chunk_bump, memory_order_relaxed);

	do {
		if (cur + n > h->nchunks)
			return SHM_ENOMEM;
	} while (!atomic_compare_exchange_weak_explicit(&h->chunk_bump, &cur, cur + n,
							memory_order_relaxed, memory_order_relaxed));
	*idx = (uint32_t)cur;
	return SHM_OK;
}

int shm_chunk_alloc(struct shm_seg *seg, uint32_t n, uint64_t *off)
{
	uint32_t idx;
	int rc;

	if (n == 0)
		return SHM_EINVAL;
	rc = n == 1 ? pop_free(seg, &idx) : SHM_ENOMEM;
	if (rc == SHM_ENOMEM)
		rc = bump(seg, n, &idx);
	if (rc != SHM_OK)
		return rc;
	atomic_fetch_add_explicit(&seg->hdr->chunks_in_use, n, memory_order_relaxed);
	*off = shm_chunk_offset(seg, idx);
	return SHM_OK;
}

static void push_free(struct shm_seg *seg, uint32_t idx)
{
	struct shm_header *h = seg->hdr;
	uint64_t top = atomic_load_explicit(&h->chunk_free_top, memory_order_relaxed);
	uint64_t next;

	do {
		atomic_store_explicit(&chunk_next(seg)[idx], (uint32_t)top, memory_order_relaxed);
		next = ((top >> 32) + 1) << 32 | (idx + 1);
	} while (!atomic_compare_exchange_weak_explicit(&h->chunk_free_top, &top, next,
							memory_order_release, memory_order_relaxed));
}

int shm_chunk_free(struct shm_seg *seg, uint64_t off, uint32_t n)
{
	struct shm_header *h = seg->hdr;
	uint64_t rel;

	if (n == 0 || off < h->chunk_base || ((off - h->chunk_base) & (SHM_CHUNK_SIZE - 1)))
		return SHM_ERANGE;
	rel = (off - h->chunk_base) >> SHM_CHUNK_SHIFT;
	if (rel + n > atomic_load_explicit(&h->chunk_bump, memory_order_relaxed))
		return SHM_ERANGE;
	for (uint32_t i = 0; i < n; i++)
		push_free(seg, (uint32_t)rel + i);
	atomic_fetch_sub_explicit(&h->chunks_in_use, n, memory_order_relaxed);
	return SHM_OK;
}

uint64_t shm_chunks_in_use(const struct shm_seg *seg)
{
	return atomic_load_explicit(&seg->hdr->chunks_in_use, memory_order_relaxed);
}
