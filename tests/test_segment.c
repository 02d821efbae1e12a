/*
 * test_segment.c — the data segment, its chunk pool and the slab allocator:
 * layout validation, bounds checks, read-only mappings, sealing, exhaustion
 * and accounting.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/crc32c.h"
#include "shm/segment.h"
#include "shm/slab.h"

#define MiB (1ULL << 20)

Test(segment, create_validates_arguments)
{
	struct shm_seg seg;

	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 0), SHM_EINVAL);
	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 3), SHM_EINVAL);
	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 2048), SHM_EINVAL);
	cr_assert_eq(shm_seg_create(&seg, 1 * MiB, 1), SHM_EINVAL);
	cr_assert_eq(shm_seg_create(&seg, SHM_MAX_SIZE + SHM_CHUNK_SIZE, 1), SHM_EINVAL);
	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 64), SHM_OK);
	cr_assert_eq(seg.hdr->shard_count, 64);
	cr_assert_eq(seg.hdr->magic, SHM_MAGIC);
	cr_assert_eq(shm_shard_at(&seg, 63)->id, 63);
	cr_assert_null(shm_shard_at(&seg, 64));
	cr_assert(seg.hdr->nchunks >= 28 && seg.hdr->nchunks <= 32);
	shm_seg_close(&seg);
}

Test(segment, sparse_and_max_size)
{
	struct shm_seg seg;

	/* 64 GiB costs nothing until touched. */
	cr_assert_eq(shm_seg_create(&seg, SHM_MAX_SIZE, 64), SHM_OK);
	cr_assert_eq(seg.size, SHM_MAX_SIZE);
	uint64_t off;
	cr_assert_eq(shm_chunk_alloc(&seg, 1, &off), SHM_OK);
	memset(seg.base + off, 1, SHM_CHUNK_SIZE);
	shm_seg_close(&seg);
}

Test(segment, bounds_checks)
{
	struct shm_seg seg;

	cr_assert_eq(shm_seg_create(&seg, 16 * MiB, 1), SHM_OK);
	cr_assert_null(shm_ptr(&seg, 0, 8), "offset 0 is never a reference");
	cr_assert_not_null(shm_ptr(&seg, 8, 8));
	cr_assert_not_null(shm_ptr(&seg, seg.size - 8, 8));
	cr_assert_null(shm_ptr(&seg, seg.size - 8, 9));
	cr_assert_null(shm_ptr(&seg, seg.size, 0));
	cr_assert_null(shm_ptr(&seg, UINT64_MAX, 1));
	cr_assert_null(shm_ptr(&seg, 8, UINT64_MAX), "length overflow must not wrap");
	cr_assert_eq(shm_off(&seg, seg.base + 4096), 4096);
	shm_seg_close(&seg);
}

Test(segment, attach_validates_header)
{
	struct shm_seg seg, view;

	cr_assert_eq(shm_seg_create(&seg, 16 * MiB, 4), SHM_OK);
	int fd = dup(seg.fd);
	cr_assert_eq(shm_seg_attach(&view, fd, false), SHM_OK);
	cr_assert_eq(view.hdr->shard_count, 4);
	shm_seg_close(&view);

	uint64_t saved = seg.hdr->chunk_base;
	seg.hdr->chunk_base = 4096;
	fd = dup(seg.fd);
	cr_assert_eq(shm_seg_attach(&view, fd, false), SHM_ECORRUPT);
	close(fd);
	seg.hdr->chunk_base = saved;

	seg.hdr->magic ^= 1;
	fd = dup(seg.fd);
	cr_assert_eq(shm_seg_attach(&view, fd, false), SHM_ECORRUPT);
	close(fd);
	seg.hdr->magic ^= 1;

	/* A header that is right in every field, in a file too small for the
	 * layout it describes (shard descriptors past the end). */
	fd = memfd_create("tiny", MFD_CLOEXEC);
	cr_assert_eq(ftruncate(fd, 4096), 0);
	struct shm_header h = *seg.hdr;
	h.size = 4096;
	h.shard_count = 1024;
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(shm_seg_attach(&view, fd, false), SHM_ECORRUPT);
	close(fd);

	/* A file that is not a segment at all. */
	fd = memfd_create("junk", MFD_CLOEXEC);
	cr_assert_eq(ftruncate(fd, 100), 0);
	cr_assert_eq(shm_seg_attach(&view, fd, false), SHM_ECORRUPT);
	close(fd);
	shm_seg_close(&seg);
}

Test(segment, readonly_view_faults_on_write, .signal = SIGSEGV)
{
	struct shm_seg seg, view;

	cr_assert_eq(shm_seg_create(&seg, 16 * MiB, 1), SHM_OK);
	int fd = shm_seg_reopen_rdonly(&seg);
	cr_assert_geq(fd, 0);
	cr_assert_eq(shm_seg_attach(&view, fd, false), SHM_OK);
	seg.base[5000] = 42;
	cr_assert_eq(view.base[5000], 42, "a read-only view sees the writer's stores");
	((volatile uint8_t *)view.base)[5000] = 1;
}

Test(segment, seal_forbids_new_writable_mappings)
{
	struct shm_seg seg;

	cr_assert_eq(shm_seg_create(&seg, 16 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_seg_seal(&seg), SHM_OK);
	int fd = shm_seg_reopen_rdonly(&seg);
	cr_assert_geq(fd, 0);
	/* The fd is only the first defence: reopening read-write through /proc
	 * works, but mapping it writable must not. */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int rw = open(path, O_RDWR);
	cr_assert_geq(rw, 0);
	void *p = mmap(NULL, 16 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
	cr_assert_eq(p, MAP_FAILED);
	cr_assert_eq(errno, EPERM);
	cr_assert_neq(ftruncate(rw, 32 * MiB), 0);
	/* The creator's own mapping stays writable. */
	seg.base[8192] = 7;
	cr_assert_eq(seg.base[8192], 7);
	close(rw);
	close(fd);
	shm_seg_close(&seg);
}

Test(chunks, exhaustion_and_reuse)
{
	struct shm_seg seg;
	uint64_t offs[64], off;
	uint32_t n = 0;

	cr_assert_eq(shm_seg_create(&seg, 16 * MiB, 1), SHM_OK);
	cr_assert_eq(shm_chunk_alloc(&seg, 0, &off), SHM_EINVAL);
	while (shm_chunk_alloc(&seg, 1, &offs[n]) == SHM_OK)
		n++;
	cr_assert_eq(n, seg.hdr->nchunks);
	cr_assert_eq(shm_chunk_alloc(&seg, 1, &off), SHM_ENOMEM);
	cr_assert_eq(shm_chunks_in_use(&seg), n);
	for (uint32_t i = 0; i < n; i++) {
		cr_assert_eq(offs[i] % SHM_CHUNK_SIZE, 0);
		cr_assert_not_null(shm_ptr(&seg, offs[i], SHM_CHUNK_SIZE));
	}
	cr_assert_eq(shm_chunk_free(&seg, offs[2], 1), SHM_OK);
	cr_assert_eq(shm_chunk_alloc(&seg, 1, &off), SHM_OK);
	cr_assert_eq(off, offs[2], "a freed chunk is reused");
	cr_assert_eq(shm_chunk_free(&seg, offs[0] + 4096, 1), SHM_ERANGE);
	cr_assert_eq(shm_chunk_free(&seg, 4096, 1), SHM_ERANGE);
	cr_assert_eq(shm_chunk_free(&seg, offs[n - 1], 2), SHM_ERANGE);
	shm_seg_close(&seg);
}

Test(chunks, runs_come_from_fresh_space)
{
	struct shm_seg seg;
	uint64_t a, b, c;

	cr_assert_eq(shm_seg_create(&seg, 32 * MiB, 1), SHM_OK);
	uint32_t total = seg.hdr->nchunks;
	cr_assert_eq(shm_chunk_alloc(&seg, 3, &a), SHM_OK);
	cr_assert_eq(shm_chunk_alloc(&seg, 1, &b), SHM_OK);
	cr_assert_eq(b, a + 3 * SHM_CHUNK_SIZE);
	cr_assert_eq(shm_chunk_alloc(&seg, total, &c), SHM_ENOMEM);
	cr_assert_eq(shm_chunk_free(&seg, a, 3), SHM_OK);
	cr_assert_eq(shm_chunks_in_use(&seg), 1);
	/* Freed run chunks serve single-chunk requests. */
	cr_assert_eq(shm_chunk_alloc(&seg, 1, &c), SHM_OK);
	cr_assert(c >= a && c < a + 3 * SHM_CHUNK_SIZE);
	shm_seg_close(&seg);
}

/* Several processes allocate and free chunks at once: no chunk is ever
 * handed to two owners (each owner stamps its chunks and checks them). */
Test(chunks, concurrent_processes, .timeout = 60)
{
	struct shm_seg seg;
	enum { PROCS = 4, ROUNDS = 20000 };
	pid_t pids[PROCS];

	cr_assert_eq(shm_seg_create(&seg, 64 * MiB, 1), SHM_OK);
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		cr_assert_geq(pids[p], 0);
		if (pids[p] == 0) {
			uint64_t held[4];
			int nh = 0, bad = 0;
			srand(p + 1);
			for (int i = 0; i < ROUNDS && !bad; i++) {
				if (nh < 4 && (nh == 0 || rand() % 2)) {
					if (shm_chunk_alloc(&seg, 1, &held[nh]) != SHM_OK)
						continue;
					memset(seg.base + held[nh], p + 1, 64);
					nh++;
				} else {
					uint64_t off = held[--nh];
					for (int k = 0; k < 64; k++)
						bad |= seg.base[off + k] != p + 1;
					shm_chunk_free(&seg, off, 1);
				}
			}
			_exit(bad);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int st;
		cr_assert_eq(waitpid(pids[p], &st, 0), pids[p]);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process %d saw a shared chunk", p);
	}
	shm_seg_close(&seg);
}

Test(crc32c, standard_vector_and_extend)
{
	cr_assert_eq(shm_crc32c("123456789", 9), 0xE3069283u);
	cr_assert_eq(shm_crc32c("", 0), 0);
	cr_assert_eq(shm_crc32c_extend(shm_crc32c("12345", 5), "6789", 4), 0xE3069283u);
	/* 32 bytes of zeros, RFC 3720 B.4. */
	uint8_t z[32] = {0};
	cr_assert_eq(shm_crc32c(z, sizeof(z)), 0x8A9136AAu);
}
