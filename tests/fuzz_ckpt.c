/*
 * fuzz_ckpt.c — libFuzzer target for checkpoint files (shardd/ckptfile.c).
 *
 * The first input byte picks a mode (byte % 2):
 *
 * 0 raw:    the rest is a whole file as a disk could hold it, fed to
 *           ckpt_decode(), the reader recovery runs on a mapped checkpoint.
 *           It must not read outside the buffer (ASan); when it accepts
 *           the file, every entry it handed out obeys the rules (type,
 *           lengths, seq >= 1, ref != 0) and the footer's counts and seq
 *           range are those of the entries.
 * 1 files:  the input describes entries (lengths, seqs, bytes) and one
 *           damage: a byte flipped or the file cut at a point. The entries
 *           go through the real writer into a file on disk, which must read
 *           back exactly; the damaged copy must be refused (CKPT_EBAD) or,
 *           for a flip the checksums cannot see, decode to exactly the same
 *           entries.
 * Any disagreement traps.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shardd/ckptfile.h"
#include "tests/fuzz_input.h"

struct tally {
	uint64_t kvs, decisions, min, max, hash;
};

static int check_entry(void *arg, const struct ckpt_entry *e)
{
	struct tally *t = arg;

	if (e->type == CKPT_KV) {
		if (e->klen == 0 || e->klen > 4096 || e->vlen > (1u << 20) || e->seq == 0)
			__builtin_trap();
		t->kvs++;
		if (t->min == 0 || e->seq < t->min)
			t->min = e->seq;
		if (e->seq > t->max)
			t->max = e->seq;
		t->hash = t->hash * 1000003 ^ e->seq ^ (uint64_t)e->klen << 32 ^ e->vlen;
		for (uint32_t i = 0; i < e->klen; i++)
			t->hash = t->hash * 31 + e->key[i];
		for (uint32_t i = 0; i < e->vlen; i++)
			t->hash = t->hash * 31 + e->val[i];
	} else if (e->type == CKPT_DECISION) {
		if (e->ref == 0 || e->primary >= 65536)
			__builtin_trap();
		t->decisions++;
		t->hash = t->hash * 1000003 ^ e->ref ^ e->boot;
	} else {
		__builtin_trap();
	}
	return 0;
}

static void raw(const uint8_t *p, size_t n)
{
	struct tally t = { 0 };
	struct ckpt_info in;
	char why[300];

	if (ckpt_decode(p, n, 7, check_entry, &t, &in, why, sizeof(why)) != CKPT_OK)
		return;
	if (in.kvs != t.kvs || in.decisions != t.decisions || in.min_seq != t.min || in.max_seq != t.max ||
	    in.replay > in.covered)
		__builtin_trap();
}

static uint8_t *slurp(const char *path, size_t *n)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *b;

	if (fd < 0 || fstat(fd, &st) != 0)
		__builtin_trap();
	b = malloc((size_t)st.st_size + 1);
	if (b == NULL || read(fd, b, (size_t)st.st_size) != st.st_size)
		__builtin_trap();
	close(fd);
	*n = (size_t)st.st_size;
	return b;
}

static void files(struct fuzz_input *in)
{
	static char dir[64];
	static uint8_t val[70000];
	struct ckpt_writer cw;
	struct tally want = { 0 }, got = { 0 };
	char name[CKPT_NAME_LEN + 1], path[200], why[300];
	int entries = fuzz_take8(in) % 40;
	uint64_t at;
	uint8_t *file;
	size_t n;
	int rc;

	if (dir[0] == '\0') {
		snprintf(dir, sizeof(dir), "/dev/shm/fuzz-ckpt-XXXXXX");
		if (mkdtemp(dir) == NULL)
			__builtin_trap();
	}
	if (ckpt_writer_open(&cw, dir, 7, 1000, 900, 5) != CKPT_OK)
		__builtin_trap();
	for (int i = 0; i < entries; i++) {
		if (fuzz_take8(in) % 8 == 0) {
			uint64_t ref = fuzz_take(in, 4) | 1;

			if (ckpt_writer_decision(&cw, 5, ref, 7) != CKPT_OK)
				__builtin_trap();
			want.decisions++;
			want.hash = want.hash * 1000003 ^ ref ^ 5;
			continue;
		}
		uint32_t kl = (uint32_t)fuzz_take(in, 2) % 4096 + 1, vl = (uint32_t)fuzz_take(in, 2) % sizeof(val);
		uint64_t seq = fuzz_take(in, 3) + 1;
		uint8_t fill = fuzz_take8(in);
		struct ckpt_entry e = { .type = CKPT_KV, .seq = seq, .key = val, .val = val, .klen = kl, .vlen = vl };

		memset(val, fill, sizeof(val));
		if (ckpt_writer_kv(&cw, seq, val, kl, val, vl) != CKPT_OK)
			__builtin_trap();
		check_entry(&want, &e);
	}
	if (ckpt_writer_finish(&cw) != CKPT_OK)
		__builtin_trap();
	ckpt_name(name, 1000, 900);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	file = slurp(path, &n);
	unlink(path);
	if (ckpt_decode(file, n, 7, check_entry, &got, NULL, why, sizeof(why)) != CKPT_OK ||
	    got.hash != want.hash || got.kvs != want.kvs || got.decisions != want.decisions)
		__builtin_trap();
	at = fuzz_take(in, 4) % n;
	if (fuzz_take8(in) & 1) {
		file[at] ^= (uint8_t)(fuzz_take8(in) | 1);
		memset(&got, 0, sizeof(got));
		rc = ckpt_decode(file, n, 7, check_entry, &got, NULL, why, sizeof(why));
		if (rc != CKPT_EBAD && !(rc == CKPT_OK && got.hash == want.hash && got.kvs == want.kvs))
			__builtin_trap();
	} else if (ckpt_decode(file, at, 7, NULL, NULL, NULL, why, sizeof(why)) != CKPT_EBAD) {
		__builtin_trap(); /* a file cut short is never a checkpoint */
	}
	free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = { data, size };

	if (size == 0)
		return 0;
	if (data[0] % 2 == 0) {
		raw(data + 1, size - 1);
		return 0;
	}
	in.p++;
	in.n--;
	files(&in);
	return 0;
}
