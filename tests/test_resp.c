/*
 * test_resp.c — tests for coordinator/resp.c (RESP2 parser and encoders).
 *
 * The parser's contract has three parts, each tested here:
 *   - what it accepts: arrays of bulk strings (binary, empty, pipelined),
 *     inline commands, empty requests, and requests exactly at each limit;
 *   - what it refuses: every protocol error, with its message, including
 *     each limit plus one;
 *   - that the split of the bytes does not matter: every prefix of a buffer
 *     parses as RESP_INCOMPLETE or exactly as the whole buffer, and feeding
 *     a pipelined stream one byte at a time yields the same commands.
 * The encoders are checked byte for byte, including CR/LF flattening and
 * the "unchanged on failure" rule.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/resp.h"

/* 64 KiB each: static rather than on the stack. */
static struct resp_cmd cmd, cmd2;

/* ---------- helpers ---------- */

static int parse(const char *buf, size_t len, size_t *used, char *err)
{
	return resp_parse(buf, len, &cmd, used, err, 256);
}

static void expect_args(const struct resp_cmd *c, size_t argc, const char *const *args,
			const size_t *lens)
{
	cr_assert_eq(c->argc, argc, "argc %zu, expected %zu", c->argc, argc);
	for (size_t i = 0; i < argc; i++) {
		size_t l = lens ? lens[i] : strlen(args[i]);
		cr_assert_eq(c->argl[i], l, "arg %zu: length %zu, expected %zu", i, c->argl[i], l);
		cr_assert(memcmp(c->argv[i], args[i], l) == 0, "arg %zu differs", i);
	}
}

/* Parse buf[0..len) and check it is one request with these arguments
 * (lens NULL: NUL-terminated), taking all of it. */
static void expect_request(const char *buf, size_t len, size_t argc, const char *const *args,
			   const size_t *lens)
{
	size_t used;
	char err[256];

	cr_assert_eq(parse(buf, len, &used, err), RESP_OK, "'%.*s': %s", (int)len, buf, err);
	cr_assert_eq(used, len);
	expect_args(&cmd, argc, args, lens);
}

/* The same for a whole NUL-free string. */
static void expect_cmd(const char *s, size_t argc, const char *const *args)
{
	expect_request(s, strlen(s), argc, args, NULL);
}

static void expect_error(const char *buf, size_t len, const char *msg)
{
	size_t used = 99;
	char err[256];

	cr_assert_eq(parse(buf, len, &used, err), RESP_EPROTO);
	cr_assert_eq(used, 0);
	cr_assert_eq(cmd.argc, 0);
	cr_assert_str_eq(err, msg);
}

#define EXPECT_ERROR(lit, msg) expect_error(lit, sizeof(lit) - 1, msg)

/* The split rule: every proper prefix parses as INCOMPLETE or exactly as
 * the whole buffer (same status, bytes, arguments and message). */
static void check_prefixes(const char *buf, size_t len)
{
	size_t used_all, used;
	char err_all[256], err[256];
	int rc_all = resp_parse(buf, len, &cmd2, &used_all, err_all, sizeof(err_all));

	for (size_t k = 0; k < len; k++) {
		int rc = resp_parse(buf, k, &cmd, &used, err, sizeof(err));
		if (rc == RESP_INCOMPLETE) {
			cr_assert_eq(used, 0);
			continue;
		}
		cr_assert_eq(rc, rc_all, "prefix %zu of %zu: %d vs %d", k, len, rc, rc_all);
		cr_assert_eq(used, used_all);
		cr_assert_str_eq(err, err_all);
		cr_assert_eq(cmd.argc, cmd2.argc);
		for (size_t i = 0; i < cmd.argc; i++)
			cr_assert(cmd.argv[i] == cmd2.argv[i] && cmd.argl[i] == cmd2.argl[i]);
	}
}

/* Serialise the commands of a parse loop as "argc|len:bytes|...;" so two
 * runs can be compared with one string comparison. */
struct transcript {
	char s[4096];
	size_t n;
	int last_rc;
};

static void note_cmd(struct transcript *t, const struct resp_cmd *c)
{
	t->n += (size_t)snprintf(t->s + t->n, sizeof(t->s) - t->n, "%zu", c->argc);
	for (size_t i = 0; i < c->argc; i++)
		t->n += (size_t)snprintf(t->s + t->n, sizeof(t->s) - t->n, "|%zu:%.*s",
					 c->argl[i], (int)c->argl[i], c->argv[i]);
	t->n += (size_t)snprintf(t->s + t->n, sizeof(t->s) - t->n, ";");
}

/* Parse everything in buf[0..len) in one go. */
static void run_whole(const char *buf, size_t len, struct transcript *t)
{
	size_t pos = 0, used;
	int rc;

	t->n = 0;
	t->s[0] = '\0';
	while ((rc = resp_parse(buf + pos, len - pos, &cmd, &used, NULL, 0)) == RESP_OK) {
		note_cmd(t, &cmd);
		pos += used;
	}
	t->last_rc = rc;
}

/* As a connection sees it: `step` bytes arrive at a time; after each
 * arrival, parse whatever complete requests are buffered. */
static void run_trickle(const char *buf, size_t len, size_t step, struct transcript *t)
{
	size_t pos = 0, have = 0, used;
	int rc = RESP_INCOMPLETE;

	t->n = 0;
	t->s[0] = '\0';
	while (have < len && rc != RESP_EPROTO) {
		have = have + step < len ? have + step : len;
		while ((rc = resp_parse(buf + pos, have - pos, &cmd, &used, NULL, 0)) == RESP_OK) {
			note_cmd(t, &cmd);
			pos += used;
		}
	}
	t->last_rc = rc;
}

static const char pipeline[] =
	"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n"
	"PING\r\n"
	"*0\r\n"
	"\r\n"
	"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
	"  GET   key\tx \n"
	"*-1\r\n"
	"*1\r\n$4\r\nPING\r\n";

static const char *const pipeline_expect =
	"3|3:SET|1:k|5:va\r\nl;1|4:PING;0;0;2|3:GET|0:;3|3:GET|3:key|1:x;0;1|4:PING;";

/* ---------- arrays ---------- */

Test(resp, array_of_bulks)
{
	const char *a[] = { "GET", "k" };

	expect_cmd("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 2, a);
}

Test(resp, bulk_is_binary_safe)
{
	static const char req[] = "*2\r\n$3\r\nSET\r\n$6\r\na\0\r\n\x01\xff\r\n";
	const char *a[] = { "SET", "a\0\r\n\x01\xff" };
	const size_t l[] = { 3, 6 };

	expect_request(req, sizeof(req) - 1, 2, a, l);
}

Test(resp, empty_bulk)
{
	const char *a[] = { "" };

	expect_cmd("*1\r\n$0\r\n\r\n", 1, a);
}

Test(resp, empty_arrays_are_empty_requests)
{
	expect_cmd("*0\r\n", 0, NULL);
	expect_cmd("*-1\r\n", 0, NULL);
}

Test(resp, only_the_first_request_is_taken)
{
	static const char req[] = "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI";
	size_t used;
	char err[256];

	cr_assert_eq(parse(req, sizeof(req) - 1, &used, err), RESP_OK);
	cr_assert_eq(used, 14);
	cr_assert_eq(parse(req + used, sizeof(req) - 1 - used, &used, err), RESP_INCOMPLETE);
	cr_assert_eq(used, 0);
}

Test(resp, incomplete_at_every_point)
{
	static const char req[] = "*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
	size_t used;
	char err[256];

	for (size_t k = 0; k < sizeof(req) - 1; k++) {
		cr_assert_eq(parse(req, k, &used, err), RESP_INCOMPLETE, "prefix %zu", k);
		cr_assert_eq(used, 0);
		cr_assert_eq(cmd.argc, 0);
	}
	cr_assert_eq(parse(req, sizeof(req) - 1, &used, err), RESP_OK);
}

/* ---------- inline ---------- */

Test(resp, inline_commands)
{
	const char *ping[] = { "PING" };
	const char *set[] = { "SET", "a", "b" };
	const char *quote[] = { "SET", "\"a", "b\"" };

	expect_cmd("PING\r\n", 1, ping);
	expect_cmd("PING\n", 1, ping);
	expect_cmd("  SET \t a   b  \r\n", 3, set);
	expect_cmd("SET \"a b\"\n", 3, quote); /* no quoting: documented */
}

Test(resp, blank_inline_lines_are_empty_requests)
{
	expect_cmd("\n", 0, NULL);
	expect_cmd("\r\n", 0, NULL);
	expect_cmd(" \t \r\n", 0, NULL);
}

Test(resp, inline_incomplete_without_newline)
{
	size_t used;
	char err[256];

	cr_assert_eq(parse("PING", 4, &used, err), RESP_INCOMPLETE);
	cr_assert_eq(parse("PING\r", 5, &used, err), RESP_INCOMPLETE);
	cr_assert_eq(parse("", 0, &used, err), RESP_INCOMPLETE);
}

Test(resp, inline_binary_bytes)
{
	static const char req[] = "GET a\0b\xff\n";
	const char *a[] = { "GET", "a\0b\xff" };
	const size_t l[] = { 3, 4 };

	expect_request(req, sizeof(req) - 1, 2, a, l);
}

/* ---------- pipelining and splits ---------- */

Test(resp, pipelined_commands_in_one_buffer)
{
	struct transcript t;

	run_whole(pipeline, sizeof(pipeline) - 1, &t);
	cr_assert_str_eq(t.s, pipeline_expect);
	cr_assert_eq(t.last_rc, RESP_INCOMPLETE);
}

Test(resp, split_at_every_byte_boundary)
{
	struct transcript whole, part;

	run_whole(pipeline, sizeof(pipeline) - 1, &whole);
	for (size_t step = 1; step <= sizeof(pipeline); step++) {
		run_trickle(pipeline, sizeof(pipeline) - 1, step, &part);
		cr_assert_str_eq(part.s, whole.s, "step %zu", step);
		cr_assert_eq(part.last_rc, whole.last_rc);
	}
}

Test(resp, prefixes_agree_with_the_whole)
{
	static const char *const cases[] = {
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"PING\r\n",
		"*-1\r\n",
		"*1\r\n$-1\r\n",
		"*1\r\n$3\r\nabcX\r\n",
		"*1\r\n:1\r\n",
		"*01\r\n",
		"*99999999999999999999999\r\n",
		"*2\r\n$3\r\nGET\r\n+x\r\n",
		"*1\r\n$1\r\nx\rx",
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_prefixes(cases[i], strlen(cases[i]));
	check_prefixes(pipeline, sizeof(pipeline) - 1);
}

Test(resp, error_midway_through_a_pipeline)
{
	static const char req[] = "PING\r\n*1\r\n$x\r\nPING\r\n";
	struct transcript whole, part;

	run_whole(req, sizeof(req) - 1, &whole);
	cr_assert_str_eq(whole.s, "1|4:PING;");
	cr_assert_eq(whole.last_rc, RESP_EPROTO);
	for (size_t step = 1; step <= sizeof(req); step++) {
		run_trickle(req, sizeof(req) - 1, step, &part);
		cr_assert_str_eq(part.s, whole.s);
		cr_assert_eq(part.last_rc, RESP_EPROTO);
	}
}

/* ---------- protocol errors ---------- */

Test(resp, bad_multibulk_lengths)
{
	EXPECT_ERROR("*x\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*-2\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*-0\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*-\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*01\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*+1\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("* 1\r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*1 \r\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*1\n", "Protocol error: invalid multibulk length");
	EXPECT_ERROR("*1\rx", "Protocol error: invalid multibulk length");
}

Test(resp, huge_multibulk_length)
{
	EXPECT_ERROR("*4097\r\n", "Protocol error: invalid multibulk length (the limit is 4096)");
	/* Refused at the digit that passes the limit, never overflowing. */
	EXPECT_ERROR("*18446744073709551617", "Protocol error: invalid multibulk length (the limit is 4096)");
	EXPECT_ERROR("*99999", "Protocol error: invalid multibulk length (the limit is 4096)");
}

Test(resp, element_not_a_bulk_string)
{
	EXPECT_ERROR("*1\r\n:1\r\n", "Protocol error: expected '$', got ':'");
	EXPECT_ERROR("*2\r\n$1\r\na\r\n*1\r\n", "Protocol error: expected '$', got '*'");
	EXPECT_ERROR("*1\r\n\x01", "Protocol error: expected '$', got byte 0x01");
}

Test(resp, bad_bulk_lengths)
{
	EXPECT_ERROR("*1\r\n$-1\r\n", "Protocol error: invalid bulk length");
	EXPECT_ERROR("*1\r\n$x\r\n", "Protocol error: invalid bulk length");
	EXPECT_ERROR("*1\r\n$\r\n", "Protocol error: invalid bulk length");
	EXPECT_ERROR("*1\r\n$00\r\n", "Protocol error: invalid bulk length");
	EXPECT_ERROR("*1\r\n$3\n", "Protocol error: invalid bulk length");
	EXPECT_ERROR("*1\r\n$8388609\r\n", "Protocol error: invalid bulk length (the limit is 8388608)");
	EXPECT_ERROR("*1\r\n$99999999999999999999999999",
		     "Protocol error: invalid bulk length (the limit is 8388608)");
}

Test(resp, bulk_without_crlf)
{
	EXPECT_ERROR("*1\r\n$3\r\nabcX\r\n", "Protocol error: expected CRLF after 3 bytes of bulk data");
	EXPECT_ERROR("*1\r\n$3\r\nabc\rX", "Protocol error: expected CRLF after 3 bytes of bulk data");
	EXPECT_ERROR("*1\r\n$0\r\n\n\n", "Protocol error: expected CRLF after 0 bytes of bulk data");
}

Test(resp, huge_declared_length_needs_no_bytes)
{
	static const char req[] = "*1\r\n$8388608\r\n";
	size_t used;
	char err[256];

	/* Valid header, data not there: incomplete, nothing allocated. */
	cr_assert_eq(parse(req, sizeof(req) - 1, &used, err), RESP_INCOMPLETE);
}

Test(resp, error_message_may_be_dropped_or_truncated)
{
	size_t used;
	char small[10];

	cr_assert_eq(resp_parse("*x\r\n", 4, &cmd, &used, NULL, 0), RESP_EPROTO);
	cr_assert_eq(resp_parse("*x\r\n", 4, &cmd, &used, small, sizeof(small)), RESP_EPROTO);
	cr_assert_str_eq(small, "Protocol ");
}

/* ---------- limits ---------- */

/* "*N\r\n" then N times "$1\r\nx\r\n". */
static char *many_args(size_t n, size_t *len)
{
	char *b = malloc(32 + n * 7);
	size_t o;

	cr_assert_not_null(b);
	o = (size_t)sprintf(b, "*%zu\r\n", n);
	for (size_t i = 0; i < n; i++, o += 7)
		memcpy(b + o, "$1\r\nx\r\n", 7);
	*len = o;
	return b;
}

Test(resp, max_args)
{
	size_t len, used;
	char err[256];
	char *b = many_args(RESP_MAX_ARGS, &len);

	cr_assert_eq(parse(b, len, &used, err), RESP_OK, "%s", err);
	cr_assert_eq(cmd.argc, RESP_MAX_ARGS);
	cr_assert_eq(used, len);
	free(b);
}

Test(resp, max_inline)
{
	char *b = malloc(RESP_MAX_INLINE + 1);
	size_t used;
	char err[256];

	cr_assert_not_null(b);
	memset(b, 'a', RESP_MAX_INLINE + 1);
	/* Exactly RESP_MAX_INLINE bytes with the LF: accepted. */
	b[RESP_MAX_INLINE - 1] = '\n';
	cr_assert_eq(parse(b, RESP_MAX_INLINE, &used, err), RESP_OK);
	cr_assert_eq(used, RESP_MAX_INLINE);
	cr_assert_eq(cmd.argc, 1);
	cr_assert_eq(cmd.argl[0], RESP_MAX_INLINE - 1);
	/* One byte short of the limit, no LF: wait for it. */
	b[RESP_MAX_INLINE - 1] = 'a';
	cr_assert_eq(parse(b, RESP_MAX_INLINE - 1, &used, err), RESP_INCOMPLETE);
	/* RESP_MAX_INLINE bytes and no LF: refused. */
	b[RESP_MAX_INLINE] = '\n';
	cr_assert_eq(parse(b, RESP_MAX_INLINE + 1, &used, err), RESP_EPROTO);
	cr_assert_str_eq(err, "Protocol error: too big inline request (the limit is 65536 bytes)");
	free(b);
}

Test(resp, too_many_inline_args)
{
	char *b = malloc(2 * (RESP_MAX_ARGS + 1) + 1);
	size_t used, n = 2 * (RESP_MAX_ARGS + 1);
	char err[256];

	cr_assert_not_null(b);
	for (size_t i = 0; i < n; i += 2)
		memcpy(b + i, "a ", 2);
	b[n - 1] = '\n';
	cr_assert_eq(parse(b, n, &used, err), RESP_EPROTO);
	cr_assert_str_eq(err, "Protocol error: too many arguments in inline request (the limit is 4096)");
	b[n - 3] = '\n'; /* exactly RESP_MAX_ARGS */
	cr_assert_eq(parse(b, n - 2, &used, err), RESP_OK);
	cr_assert_eq(cmd.argc, RESP_MAX_ARGS);
	free(b);
}

Test(resp, max_bulk)
{
	size_t n = RESP_MAX_BULK, len, used;
	char *b = malloc(n + 64);
	char err[256];

	cr_assert_not_null(b);
	len = (size_t)sprintf(b, "*1\r\n$%zu\r\n", n);
	memset(b + len, 'v', n);
	memcpy(b + len + n, "\r\n", 2);
	len += n + 2;
	cr_assert_eq(parse(b, len, &used, err), RESP_OK, "%s", err);
	cr_assert_eq(cmd.argl[0], n);
	cr_assert_eq(used, len);
	free(b);
}

/* A request of exactly RESP_MAX_REQUEST bytes: two bulks, the second sized
 * to end on the limit. `extra` makes it that many bytes longer. */
static char *limit_request(size_t extra, int argc, size_t *len)
{
	char *b = malloc(RESP_MAX_REQUEST + 64);
	size_t o, second;

	cr_assert_not_null(b);
	o = (size_t)sprintf(b, "*%d\r\n$%u\r\n", argc, RESP_MAX_BULK);
	memset(b + o, 'a', RESP_MAX_BULK);
	o += RESP_MAX_BULK;
	memcpy(b + o, "\r\n", 2);
	o += 2;
	/* Header "$NNNNNNN\r\n" is 10 bytes, then data and CRLF. */
	second = RESP_MAX_REQUEST - o - 12 + extra;
	o += (size_t)sprintf(b + o, "$%zu\r\n", second);
	cr_assert(o + second + 2 <= RESP_MAX_REQUEST + 64);
	memset(b + o, 'b', second);
	o += second;
	memcpy(b + o, "\r\n", 2);
	*len = o + 2;
	return b;
}

Test(resp, request_size_limit)
{
	size_t len, used;
	char err[256];
	char *b = limit_request(0, 2, &len);

	cr_assert_eq(len, RESP_MAX_REQUEST);
	cr_assert_eq(parse(b, len, &used, err), RESP_OK, "%s", err);
	cr_assert_eq(used, RESP_MAX_REQUEST);
	free(b);

	b = limit_request(1, 2, &len);
	cr_assert_eq(len, RESP_MAX_REQUEST + 1);
	/* Refused at the second header, before its data arrived. */
	size_t hdr_end = (size_t)(strstr(b + 20 + RESP_MAX_BULK, "\r\n") - b) + 2;
	cr_assert_eq(parse(b, hdr_end, &used, err), RESP_EPROTO);
	cr_assert_str_eq(err, "Protocol error: request larger than 16777216 bytes");
	free(b);
}

Test(resp, full_buffer_is_never_incomplete)
{
	/* RESP_MAX_REQUEST bytes that would be a valid start of a longer
	 * request (a third argument is announced): refused, not incomplete, so
	 * a caller with a full buffer is never stuck. */
	size_t len, used;
	char err[256];
	char *b = limit_request(0, 3, &len);

	cr_assert_eq(len, RESP_MAX_REQUEST);
	cr_assert_eq(parse(b, len, &used, err), RESP_EPROTO);
	cr_assert_str_eq(err, "Protocol error: request larger than 16777216 bytes");
	cr_assert_eq(parse(b, len - 1, &used, err), RESP_INCOMPLETE);
	free(b);
}

/* ---------- encoders ---------- */

static void expect_buf(const struct resp_buf *b, const char *bytes, size_t n)
{
	cr_assert_eq(b->len, n, "length %zu, expected %zu", b->len, n);
	cr_assert(memcmp(b->data, bytes, n) == 0, "got '%.*s'", (int)b->len, b->data);
}

#define EXPECT_BUF(b, lit) expect_buf(b, lit, sizeof(lit) - 1)

Test(resp, encode_simple_and_error)
{
	struct resp_buf b;

	resp_buf_init(&b);
	cr_assert_eq(resp_add_simple(&b, "OK"), RESP_OK);
	cr_assert_eq(resp_add_simple(&b, ""), RESP_OK);
	cr_assert_eq(resp_add_error(&b, "ERR unknown command 'x\r\ny'"), RESP_OK);
	cr_assert_eq(resp_add_simple(&b, "a\nb"), RESP_OK);
	EXPECT_BUF(&b, "+OK\r\n+\r\n-ERR unknown command 'x  y'\r\n+a b\r\n");
	resp_buf_free(&b);
	cr_assert_null(b.data);
}

Test(resp, encode_errorf)
{
	struct resp_buf b = { 0 };
	char big[1000];

	cr_assert_eq(resp_add_errorf(&b, "ERR wrong number of arguments for '%s'", "get\n"), RESP_OK);
	EXPECT_BUF(&b, "-ERR wrong number of arguments for 'get '\r\n");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	b.len = 0;
	cr_assert_eq(resp_add_errorf(&b, "ERR %s", big), RESP_OK);
	cr_assert_eq(b.len, 1 + 4 + 999 + 2); /* "-ERR " + message + CRLF */
	cr_assert(memcmp(b.data + b.len - 3, "x\r\n", 3) == 0);
	resp_buf_free(&b);
}

Test(resp, encode_integers)
{
	struct resp_buf b = { 0 };

	cr_assert_eq(resp_add_int(&b, 0), RESP_OK);
	cr_assert_eq(resp_add_int(&b, -5), RESP_OK);
	cr_assert_eq(resp_add_int(&b, INT64_MAX), RESP_OK);
	cr_assert_eq(resp_add_int(&b, INT64_MIN), RESP_OK);
	EXPECT_BUF(&b, ":0\r\n:-5\r\n:9223372036854775807\r\n:-9223372036854775808\r\n");
	resp_buf_free(&b);
}

Test(resp, encode_bulk_null_and_arrays)
{
	struct resp_buf b = { 0 };

	cr_assert_eq(resp_add_array(&b, 3), RESP_OK);
	cr_assert_eq(resp_add_bulk(&b, "a\0\r\n", 4), RESP_OK);
	cr_assert_eq(resp_add_bulk(&b, NULL, 0), RESP_OK);
	cr_assert_eq(resp_add_null(&b), RESP_OK);
	cr_assert_eq(resp_add_array(&b, 0), RESP_OK);
	cr_assert_eq(resp_add_null_array(&b), RESP_OK);
	EXPECT_BUF(&b, "*3\r\n$4\r\na\0\r\n\r\n$0\r\n\r\n$-1\r\n*0\r\n*-1\r\n");
	resp_buf_free(&b);
}

Test(resp, encoded_request_parses_back)
{
	struct resp_buf b = { 0 };
	char val[300];
	size_t used;
	char err[256];

	for (size_t i = 0; i < sizeof(val); i++)
		val[i] = (char)i;
	cr_assert_eq(resp_add_array(&b, 3), RESP_OK);
	cr_assert_eq(resp_add_bulk(&b, "SET", 3), RESP_OK);
	cr_assert_eq(resp_add_bulk(&b, "key", 3), RESP_OK);
	cr_assert_eq(resp_add_bulk(&b, val, sizeof(val)), RESP_OK);
	cr_assert_eq(parse(b.data, b.len, &used, err), RESP_OK);
	cr_assert_eq(used, b.len);
	cr_assert_eq(cmd.argc, 3);
	cr_assert_eq(cmd.argl[2], sizeof(val));
	cr_assert(memcmp(cmd.argv[2], val, sizeof(val)) == 0);
	resp_buf_free(&b);
}

Test(resp, buffer_grows_and_consumes)
{
	struct resp_buf b = { 0 };

	for (int i = 0; i < 10000; i++)
		cr_assert_eq(resp_add_int(&b, i), RESP_OK);
	cr_assert(b.cap >= b.len);
	cr_assert(memcmp(b.data, ":0\r\n:1\r\n", 8) == 0);
	resp_buf_consume(&b, 4);
	cr_assert(memcmp(b.data, ":1\r\n:2\r\n", 8) == 0);
	resp_buf_consume(&b, b.len + 100);
	cr_assert_eq(b.len, 0);
	resp_buf_free(&b);
}

Test(resp, allocation_failure_leaves_buffer_unchanged)
{
	struct resp_buf b = { 0 };

	cr_assert_eq(resp_add_simple(&b, "OK"), RESP_OK);
	/* A size no allocator can satisfy (caught before malloc is asked). */
	cr_assert_eq(resp_add_bulk(&b, "x", SIZE_MAX - 4), RESP_ENOMEM);
	cr_assert_eq(resp_add_bulk(&b, "x", SIZE_MAX), RESP_ENOMEM);
	EXPECT_BUF(&b, "+OK\r\n");
	resp_buf_free(&b);
}

Test(resp, strerror_names_every_code)
{
	cr_assert_str_eq(resp_strerror(RESP_OK), "ok");
	cr_assert_str_eq(resp_strerror(RESP_INCOMPLETE), "incomplete request");
	cr_assert_str_eq(resp_strerror(RESP_EPROTO), "protocol error");
	cr_assert_str_eq(resp_strerror(RESP_ENOMEM), "out of memory for the reply buffer");
	cr_assert_not_null(resp_strerror(12345));
}
