/*
 * fuzz_input.h — a libFuzzer input taken apart byte by byte, and the
 * CHECK that traps on a broken rule; shared by the tests/fuzz_*.c targets.
 *
 * Past the end of the input every take gives 0, so a short input is still
 * a whole run (of zeros). Multi-byte takes are little-endian.
 */
#ifndef AMORA_TESTS_FUZZ_INPUT_H
#define AMORA_TESTS_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

struct fuzz_input {
	const uint8_t *p;
	size_t n;    /* bytes left */
};

static inline uint8_t fuzz_take8(struct fuzz_input *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

/* The next `bytes` (at most 8) bytes as an integer. */
static inline uint64_t fuzz_take(struct fuzz_input *in, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)fuzz_take8(in) << (8 * i);
	return v;
}

#endif
