/*
 * fuzz_resp.c — libFuzzer target for coordinator/resp.c.
 *
 * The input is what a hostile peer writes to the control socket. It is
 * copied into a buffer of exactly its size, so ASan catches any read past
 * the end, and then:
 *
 *   1. Parsed as a pipeline, request after request, until the parser asks
 *      for more or refuses. Every request must consume at least one byte and
 *      no more than remain; every argument must lie inside the buffer and is
 *      read in full; a refusal must carry a message.
 *   2. Parsed again as a connection would see it when the bytes arrive in
 *      two reads, split at a point taken from the input: the requests, their
 *      arguments (same pointers, same lengths), the final status and the
 *      final message must be exactly those of step 1. Also the first request
 *      alone, parsed from the prefix, must be "incomplete" or identical.
 *   3. Each request is encoded back with the reply encoders (as an array of
 *      bulk strings) and parsed again: the same arguments must come out and
 *      the whole encoding must be consumed.
 *
 * Any disagreement traps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/resp.h"
#include "tests/fuzz_input.h"

/* One parsed request: where it ended and a digest of its arguments. */
struct rec {
	size_t end;
	size_t argc;
	uint64_t digest;
};

struct run {
	struct rec *recs;
	size_t n;
	int last_rc;
	char err[256];
};

static struct resp_cmd cmd, back;

static uint64_t digest(const char *base, const struct resp_cmd *c)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < c->argc; i++) {
		h = (h ^ (uint64_t)(c->argv[i] - base)) * 1099511628211ull;
		h = (h ^ c->argl[i]) * 1099511628211ull;
	}
	return h;
}

/* Property 1 for one request: it lies inside buf[pos..have). */
static void check_request(const char *buf, size_t pos, size_t have, size_t used)
{
	volatile char sink = 0;

	CHECK(used > 0 && used <= have - pos);
	CHECK(cmd.argc <= RESP_MAX_ARGS);
	for (size_t i = 0; i < cmd.argc; i++) {
		CHECK(cmd.argv[i] >= buf + pos && cmd.argv[i] <= buf + pos + used);
		CHECK(cmd.argl[i] <= (size_t)(buf + pos + used - cmd.argv[i]));
		for (size_t j = 0; j < cmd.argl[i]; j++)
			sink ^= cmd.argv[i][j];
	}
	(void)sink;
}

/* Property 3: encode the request and parse it back. */
static void check_roundtrip(void)
{
	struct resp_buf b = { 0 };
	size_t used;

	if (cmd.argc == 0)
		return;
	CHECK(resp_add_array(&b, cmd.argc) == RESP_OK);
	for (size_t i = 0; i < cmd.argc; i++)
		CHECK(resp_add_bulk(&b, cmd.argv[i], cmd.argl[i]) == RESP_OK);
	CHECK(resp_parse(b.data, b.len, &back, &used, NULL, 0) == RESP_OK);
	CHECK(used == b.len && back.argc == cmd.argc);
	for (size_t i = 0; i < cmd.argc; i++)
		CHECK(back.argl[i] == cmd.argl[i] &&
		      memcmp(back.argv[i], cmd.argv[i], cmd.argl[i]) == 0);
	resp_buf_free(&b);
}

/* Parse buf with the bytes arriving in two reads: [0, split) then the
 * rest. split == len is the one-read case. */
static void parse_stream(const char *buf, size_t len, size_t split, struct run *r, int roundtrip)
{
	size_t pos = 0, used, have = split;
	int rc;

	r->n = 0;
	for (;;) {
		rc = resp_parse(buf + pos, have - pos, &cmd, &used, r->err, sizeof(r->err));
		if (rc == RESP_OK) {
			check_request(buf, pos, have, used);
			if (roundtrip)
				check_roundtrip();
			r->recs[r->n++] = (struct rec){ pos + used, cmd.argc, digest(buf, &cmd) };
			pos += used;
			continue;
		}
		CHECK(rc == RESP_INCOMPLETE || rc == RESP_EPROTO);
		CHECK(used == 0 && cmd.argc == 0);
		if (rc == RESP_EPROTO)
			CHECK(strncmp(r->err, "Protocol error: ", 16) == 0);
		if (rc == RESP_EPROTO || have == len)
			break;
		have = len;
	}
	r->last_rc = rc;
}

/* The first request from a prefix: incomplete, or exactly as from all. */
static void check_prefix(const char *buf, size_t len, size_t k)
{
	size_t used_all, used;
	char err_all[256], err[256];
	int rc_all = resp_parse(buf, len, &back, &used_all, err_all, sizeof(err_all));
	int rc = resp_parse(buf, k, &cmd, &used, err, sizeof(err));

	if (rc == RESP_INCOMPLETE)
		return;
	CHECK(rc == rc_all && used == used_all && strcmp(err, err_all) == 0);
	CHECK(cmd.argc == back.argc);
	for (size_t i = 0; i < cmd.argc; i++)
		CHECK(cmd.argv[i] == back.argv[i] && cmd.argl[i] == back.argl[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	struct run whole, split;
	size_t k;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	whole.recs = malloc((size + 1) * sizeof(struct rec));
	split.recs = malloc((size + 1) * sizeof(struct rec));
	if (!whole.recs || !split.recs)
		goto out;

	parse_stream(buf, size, size, &whole, 1);

	/* Split point from the input's own bytes, so the fuzzer steers it. */
	k = size ? ((size_t)data[0] * 257 + (size > 1 ? data[1] : 0)) % (size + 1) : 0;
	parse_stream(buf, size, k, &split, 0);
	CHECK(split.n == whole.n && split.last_rc == whole.last_rc);
	for (size_t i = 0; i < whole.n; i++)
		CHECK(split.recs[i].end == whole.recs[i].end &&
		      split.recs[i].argc == whole.recs[i].argc &&
		      split.recs[i].digest == whole.recs[i].digest);
	if (whole.last_rc == RESP_EPROTO)
		CHECK(strcmp(split.err, whole.err) == 0);

	check_prefix(buf, size, k);
	check_prefix(buf, size, size / 2);
out:
	free(whole.recs);
	free(split.recs);
	free(buf);
	return 0;
}
