/*
 * fuzz_chan.c — libFuzzer target for shm_chan_req_decode, the shard's parser
 * of the requests a client puts in its submission ring. Whatever the
 * bytes, it must either refuse them or describe a request whose key and
 * value lie inside the record (or, for a bulk value, within the bulk area),
 * with a batch header only on the batch ops and no key or value on the
 * decisions (COMMIT, ABORT, RESOLVE).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/chan.h"
#include "tests/fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct shm_chan_op_view v;
	uint8_t *copy;

	if (size > SHM_CHAN_SQ_DATA)
		return 0;
	copy = malloc(size ? size : 1);
	memcpy(copy, data, size);
	if (shm_chan_req_decode(copy, (uint32_t)size, &v) == SHM_OK) {
		const uint8_t *end = copy + size;

		CHECK(v.op >= SHM_CHAN_OP_SET && v.op <= SHM_CHAN_OP_RESOLVE);
		CHECK(v.key >= copy && v.key + v.klen <= end);
		CHECK(v.batch.zero == 0);
		if (v.op < SHM_CHAN_OP_PSET)
			CHECK(v.batch.ref == 0 && v.batch.primary == 0);
		if (v.op >= SHM_CHAN_OP_COMMIT)
			CHECK(v.klen == 0 && v.vlen == 0 && v.flags == 0);
		if (v.flags & SHM_CHAN_REQ_BULK)
			CHECK(v.val == NULL && v.vlen <= SHM_CHAN_BULK_BYTES);
		else
			CHECK(v.val + v.vlen == end);
	}
	free(copy);
	return 0;
}
