/*
 * resp.c — RESP2 request parser and reply encoders (see resp.h).
 *
 * The parser is a single left-to-right pass over the buffered bytes with no
 * state kept between calls. Every byte it looks at goes through need(),
 * which answers "protocol error" if the byte would lie beyond
 * RESP_MAX_REQUEST, "incomplete" if it has not arrived, and "go on"
 * otherwise. Because the checks are made in byte order and each depends only
 * on the bytes before it, a prefix of a buffer either runs out of bytes
 * (RESP_INCOMPLETE) or meets the very same verdict as the whole buffer: how
 * the peer's bytes were split across reads cannot change the result.
 *
 * Declared lengths are only ever compared and added to positions, never
 * used to allocate or to read before need() has vouched for the bytes, so a
 * peer announcing `$8000000` costs nothing until it sends the data, and a
 * peer announcing more than the limits is refused at the header.
 *
 * Header numbers are read digit by digit and refused as soon as they pass
 * their limit, so no overflow is possible and a header of a thousand digits
 * is an error after the first few.
 *
 * The encoders reserve the whole reply before writing any of it, so a
 * failed allocation leaves the output stream as it was: a reply is either
 * all there or not there.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/resp.h"

/* ---------- parser ---------- */

struct parser {
	const char *buf;
	size_t len;
	size_t pos;
	char *err;
	size_t errlen;
};

/* Status codes inside the parser: RESP_OK means "go on". */

__attribute__((format(printf, 2, 3)))
static int perr(struct parser *p, const char *fmt, ...)
{
	va_list ap;

	if (p->err && p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err, p->errlen, fmt, ap);
		va_end(ap);
	}
	return RESP_EPROTO;
}

/* Are n more bytes at p->pos available? The request-size limit is checked
 * first so that a buffer of RESP_MAX_REQUEST bytes is never "incomplete". */
static int need(struct parser *p, size_t n)
{
	if (n > RESP_MAX_REQUEST || p->pos > RESP_MAX_REQUEST - n)
		return perr(p, "Protocol error: request larger than %u bytes",
			    RESP_MAX_REQUEST);
	if (n > p->len - p->pos)
		return RESP_INCOMPLETE;
	return RESP_OK;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Read the header number after the type byte at p->pos ('*' or '$'),
 * through its CRLF. `what` names it in messages ("multibulk", "bulk").
 * Accepts 0..max, and -1 only if allow_neg1. */
static int read_header(struct parser *p, const char *what, uint64_t max, int allow_neg1,
		       int64_t *out)
{
	uint64_t v = 0;
	size_t digits = 0;
	int neg = 0, rc;

	p->pos++; /* the type byte, checked by the caller */
	if ((rc = need(p, 1)) != RESP_OK)
		return rc;
	if (p->buf[p->pos] == '-') {
		if (!allow_neg1)
			return perr(p, "Protocol error: invalid %s length", what);
		neg = 1;
		p->pos++;
	}
	for (;;) {
		if ((rc = need(p, 1)) != RESP_OK)
			return rc;
		char c = p->buf[p->pos];
		if (!is_digit(c))
			break;
		/* No leading zeros: "0" alone is the only number starting with 0. */
		if (digits == 1 && v == 0)
			return perr(p, "Protocol error: invalid %s length", what);
		v = v * 10 + (uint64_t)(c - '0');
		digits++;
		p->pos++;
		if (!neg && v > max)
			return perr(p, "Protocol error: invalid %s length (the limit is %llu)",
				    what, (unsigned long long)max);
		if (neg && v > 1)
			return perr(p, "Protocol error: invalid %s length", what);
	}
	if (digits == 0 || (neg && v != 1) || p->buf[p->pos] != '\r')
		return perr(p, "Protocol error: invalid %s length", what);
	p->pos++;
	if ((rc = need(p, 1)) != RESP_OK)
		return rc;
	if (p->buf[p->pos] != '\n')
		return perr(p, "Protocol error: invalid %s length", what);
	p->pos++;
	*out = neg ? -1 : (int64_t)v;
	return RESP_OK;
}

/* One "$N\r\n<N bytes>\r\n" element of an array, stored as argument i. */
static int read_bulk(struct parser *p, struct resp_cmd *cmd, size_t i)
{
	int64_t n;
	int rc;

	if ((rc = need(p, 1)) != RESP_OK)
		return rc;
	unsigned char c = (unsigned char)p->buf[p->pos];
	if (c != '$') {
		if (c >= 0x20 && c < 0x7f)
			return perr(p, "Protocol error: expected '$', got '%c'", c);
		return perr(p, "Protocol error: expected '$', got byte 0x%02x", c);
	}
	if ((rc = read_header(p, "bulk", RESP_MAX_BULK, 0, &n)) != RESP_OK)
		return rc;
	if ((rc = need(p, (size_t)n + 2)) != RESP_OK)
		return rc;
	if (p->buf[p->pos + n] != '\r' || p->buf[p->pos + n + 1] != '\n')
		return perr(p, "Protocol error: expected CRLF after %lld bytes of bulk data",
			    (long long)n);
	cmd->argv[i] = p->buf + p->pos;
	cmd->argl[i] = (size_t)n;
	p->pos += (size_t)n + 2;
	return RESP_OK;
}

/* "*N\r\n" followed by N bulk strings. */
static int parse_array(struct parser *p, struct resp_cmd *cmd)
{
	int64_t n;
	int rc;

	if ((rc = read_header(p, "multibulk", RESP_MAX_ARGS, 1, &n)) != RESP_OK)
		return rc;
	/* *0 and *-1: an empty request, skipped as Redis does. */
	for (int64_t i = 0; i < n; i++)
		if ((rc = read_bulk(p, cmd, (size_t)i)) != RESP_OK)
			return rc;
	cmd->argc = n > 0 ? (size_t)n : 0;
	return RESP_OK;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* One line up to LF, split at white space (the CR of CRLF is white space). */
static int parse_inline(struct parser *p, struct resp_cmd *cmd)
{
	size_t lim = p->len < RESP_MAX_INLINE ? p->len : RESP_MAX_INLINE;
	const char *nl = memchr(p->buf, '\n', lim);

	if (!nl) {
		if (p->len >= RESP_MAX_INLINE)
			return perr(p, "Protocol error: too big inline request (the limit is %u bytes)",
				    RESP_MAX_INLINE);
		return RESP_INCOMPLETE;
	}
	size_t end = (size_t)(nl - p->buf), i = 0, argc = 0;
	while (i < end) {
		while (i < end && is_space(p->buf[i]))
			i++;
		if (i == end)
			break;
		size_t start = i;
		while (i < end && !is_space(p->buf[i]))
			i++;
		if (argc == RESP_MAX_ARGS)
			return perr(p, "Protocol error: too many arguments in inline request (the limit is %u)",
				    RESP_MAX_ARGS);
		cmd->argv[argc] = p->buf + start;
		cmd->argl[argc] = i - start;
		argc++;
	}
	cmd->argc = argc;
	p->pos = end + 1;
	return RESP_OK;
}

int resp_parse(const char *buf, size_t len, struct resp_cmd *cmd, size_t *consumed,
	       char *err, size_t errlen)
{
	struct parser p = { .buf = buf, .len = len, .pos = 0, .err = err, .errlen = errlen };
	int rc;

	cmd->argc = 0;
	*consumed = 0;
	if (err && errlen)
		err[0] = '\0';
	if (len == 0)
		return RESP_INCOMPLETE;
	rc = buf[0] == '*' ? parse_array(&p, cmd) : parse_inline(&p, cmd);
	if (rc != RESP_OK) {
		cmd->argc = 0;
		return rc;
	}
	*consumed = p.pos;
	return RESP_OK;
}

const char *resp_strerror(int code)
{
	switch (code) {
	case RESP_OK: return "ok";
	case RESP_INCOMPLETE: return "incomplete request";
	case RESP_EPROTO: return "protocol error";
	case RESP_ENOMEM: return "out of memory for the reply buffer";
	}
	return "unknown resp status";
}

/* ---------- output buffer ---------- */

void resp_buf_init(struct resp_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void resp_buf_free(struct resp_buf *b)
{
	free(b->data);
	resp_buf_init(b);
}

void resp_buf_consume(struct resp_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* Make room for `extra` more bytes; doubles so appends are amortised O(1). */
static int reserve(struct resp_buf *b, size_t extra)
{
	size_t want, cap;
	char *d;

	if (extra > SIZE_MAX - b->len)
		return RESP_ENOMEM;
	want = b->len + extra;
	if (want <= b->cap)
		return RESP_OK;
	cap = b->cap ? b->cap : 256;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	d = realloc(b->data, cap);
	if (!d)
		return RESP_ENOMEM;
	b->data = d;
	b->cap = cap;
	return RESP_OK;
}

/* Append bytes the caller has reserved room for. */
static void put(struct resp_buf *b, const void *p, size_t n)
{
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* Replace CR and LF with spaces in a line-type reply. */
static void flatten(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n')
			s[i] = ' ';
}

/* "<type><s>\r\n" with CR/LF in s flattened. */
static int add_line(struct resp_buf *b, char type, const char *s)
{
	size_t n = strlen(s);

	if (n > SIZE_MAX - 3 || reserve(b, n + 3) != RESP_OK)
		return RESP_ENOMEM;
	put(b, &type, 1);
	put(b, s, n);
	flatten(b->data + b->len - n, n);
	put(b, "\r\n", 2);
	return RESP_OK;
}

/* "<type><number>\r\n"; reserves `more` extra bytes for what follows so a
 * bulk string is reserved in one go. */
static int add_header(struct resp_buf *b, char type, long long v, size_t more)
{
	char h[32];
	int n = snprintf(h, sizeof(h), "%c%lld\r\n", type, v);

	if (more > SIZE_MAX - (size_t)n || reserve(b, (size_t)n + more) != RESP_OK)
		return RESP_ENOMEM;
	put(b, h, (size_t)n);
	return RESP_OK;
}

int resp_add_simple(struct resp_buf *b, const char *s)
{
	return add_line(b, '+', s);
}

int resp_add_error(struct resp_buf *b, const char *msg)
{
	return add_line(b, '-', msg);
}

int resp_add_errorf(struct resp_buf *b, const char *fmt, ...)
{
	va_list ap, aq;
	int n;

	va_start(ap, fmt);
	va_copy(aq, ap);
	n = vsnprintf(NULL, 0, fmt, aq);
	va_end(aq);
	/* '-' + message + CRLF; vsnprintf's NUL lands where the CR goes. */
	if (n < 0 || reserve(b, (size_t)n + 3) != RESP_OK) {
		va_end(ap);
		return RESP_ENOMEM;
	}
	b->data[b->len] = '-';
	vsnprintf(b->data + b->len + 1, (size_t)n + 1, fmt, ap);
	va_end(ap);
	flatten(b->data + b->len + 1, (size_t)n);
	b->len += 1 + (size_t)n;
	put(b, "\r\n", 2);
	return RESP_OK;
}

int resp_add_int(struct resp_buf *b, int64_t v)
{
	return add_header(b, ':', (long long)v, 0);
}

int resp_add_bulk(struct resp_buf *b, const void *p, size_t n)
{
	if (n > (size_t)INT64_MAX || n > SIZE_MAX - 2)
		return RESP_ENOMEM;
	if (add_header(b, '$', (long long)n, n + 2) != RESP_OK)
		return RESP_ENOMEM;
	put(b, p, n);
	put(b, "\r\n", 2);
	return RESP_OK;
}

int resp_add_null(struct resp_buf *b)
{
	return add_header(b, '$', -1, 0);
}

int resp_add_array(struct resp_buf *b, size_t n)
{
	if (n > (size_t)INT64_MAX)
		return RESP_ENOMEM;
	return add_header(b, '*', (long long)n, 0);
}

int resp_add_null_array(struct resp_buf *b)
{
	return add_header(b, '*', -1, 0);
}
