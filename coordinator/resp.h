/*
 * resp.h — RESP2 for amorad's control socket: a request parser and reply
 * encoders.
 *
 * The control socket speaks RESP2 so that `redis-cli -s DIR/amora.sock` and
 * every Redis client library can talk to amorad. Its peers are untrusted:
 * whatever bytes arrive, the parser either returns a complete command, asks
 * for more bytes, or returns a protocol error with a message; it never reads
 * outside the buffer it was given, never allocates, and never lets a
 * declared length make the caller buffer more than RESP_MAX_REQUEST bytes.
 *
 * Requests come in two forms, as in Redis:
 *
 *   array of bulk strings   *2\r\n$3\r\nGET\r\n$1\r\nk\r\n
 *     (what redis-cli and client libraries send; binary-safe)
 *   inline command          PING\r\n    or    GET k\n
 *     (what a person types into telnet/nc: one line, arguments separated
 *     by spaces or tabs, ended by LF or CRLF. Unlike Redis there is no
 *     quoting: quotes are ordinary bytes. Use arrays for binary data.)
 *
 * A request whose first byte is '*' is an array, anything else is inline.
 *
 * Parsing is stateless: resp_parse() looks at the bytes buffered so far
 * from their start. If they hold a complete request it fills `cmd` with
 * argv/argl pointing into the buffer (not NUL-terminated) and says how many
 * bytes the request took; the caller executes it, then drops those bytes
 * (or calls again at buf + consumed for pipelined requests). If the bytes
 * are a valid but unfinished request it returns RESP_INCOMPLETE and the
 * caller reads more and calls again with the longer buffer. Re-scanning is
 * cheap: bulk data is skipped by its length, never scanned.
 *
 * The result depends only on the bytes, not on how they were split: for
 * any prefix of a buffer, resp_parse() returns either RESP_INCOMPLETE or
 * exactly what it returns for the whole buffer (errors are found in byte
 * order). The tests and the fuzzer check this.
 *
 * An empty request (a blank inline line, `*0\r\n`, or `*-1\r\n`, which
 * Redis also accepts and ignores) is RESP_OK with argc == 0 and consumed
 * > 0: skip it, send no reply.
 *
 * Limits (a request beyond one is a protocol error, found as soon as the
 * offending header or RESP_MAX_INLINE bytes have arrived):
 *   RESP_MAX_ARGS     4096 arguments per request (Redis allows 1M; amorad's
 *                     widest command, MGET/MSET, is fine with 4096 and
 *                     struct resp_cmd stays at 64 KiB)
 *   RESP_MAX_BULK     8 MiB per bulk string (values are at most 1 MiB)
 *   RESP_MAX_INLINE   64 KiB per inline line, LF included (Redis's figure)
 *   RESP_MAX_REQUEST  16 MiB per request, all its bytes counted: checked
 *                     against the declared lengths before the data arrives.
 * Hence a caller that buffers up to RESP_MAX_REQUEST bytes never gets stuck:
 * once len >= RESP_MAX_REQUEST, resp_parse() never says RESP_INCOMPLETE.
 *
 * Numbers in headers are strict decimals: no sign other than the '-' of
 * `*-1`, no leading zeros, no spaces, followed by exactly CRLF. Bulk data
 * must be followed by CRLF. Violations are RESP_EPROTO with a message in
 * Redis's style ("Protocol error: invalid bulk length"); the caller replies
 * with it as an error and closes the connection, as Redis does.
 *
 * Replies are appended to a growable struct resp_buf by the resp_add_*
 * encoders. Each either appends its whole reply or, if memory runs out,
 * returns RESP_ENOMEM and leaves the buffer as it was, so a reply is never
 * half-written into the stream.
 */
#ifndef AMORA_RESP_H
#define AMORA_RESP_H

#include <stddef.h>
#include <stdint.h>

#define RESP_MAX_ARGS 4096u
#define RESP_MAX_BULK (8u << 20)
#define RESP_MAX_INLINE (64u << 10)
#define RESP_MAX_REQUEST (16u << 20)

enum resp_status {
	RESP_OK = 0,          /* a complete request (parse), or done (encode) */
	RESP_INCOMPLETE = 1,  /* valid so far; read more bytes and call again */
	RESP_EPROTO = -1,     /* protocol error: reply with the message, close */
	RESP_ENOMEM = -2,     /* an encoder could not grow the output buffer */
};

/* One parsed request. argv[i] points into the parsed buffer (valid while
 * it is) and holds argl[i] bytes, not NUL-terminated. */
struct resp_cmd {
	size_t argc;
	const char *argv[RESP_MAX_ARGS];
	size_t argl[RESP_MAX_ARGS];
};

/* Parse one request from the start of buf[0..len).
 *   RESP_OK          *cmd filled, *consumed = bytes of the request (> 0)
 *   RESP_INCOMPLETE  *consumed = 0, cmd->argc = 0
 *   RESP_EPROTO      *consumed = 0, cmd->argc = 0, message in err
 * err may be NULL (errlen 0); the message is truncated to errlen. */
int resp_parse(const char *buf, size_t len, struct resp_cmd *cmd, size_t *consumed,
	       char *err, size_t errlen);

/* Name of a status code; never NULL. */
const char *resp_strerror(int code);

/* Output buffer. Zero-initialised (or resp_buf_init) is an empty buffer. */
struct resp_buf {
	char *data;
	size_t len, cap;
};

void resp_buf_init(struct resp_buf *b);
void resp_buf_free(struct resp_buf *b);
/* Drop the first n bytes (those written to the socket); n > len drops all. */
void resp_buf_consume(struct resp_buf *b, size_t n);

/* Encoders: RESP_OK, or RESP_ENOMEM with the buffer unchanged.
 * Simple strings and errors cannot carry CR or LF: any are sent as spaces
 * (as Redis does), so a message quoting client bytes cannot break framing.
 * An error message should start with a code word: "ERR unknown command". */
int resp_add_simple(struct resp_buf *b, const char *s);            /* +s\r\n */
int resp_add_error(struct resp_buf *b, const char *msg);           /* -msg\r\n */
int resp_add_errorf(struct resp_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));                      /* -...\r\n */
int resp_add_int(struct resp_buf *b, int64_t v);                   /* :v\r\n */
int resp_add_bulk(struct resp_buf *b, const void *p, size_t n);    /* $n\r\n...\r\n */
int resp_add_null(struct resp_buf *b);                             /* $-1\r\n */
int resp_add_array(struct resp_buf *b, size_t n);                  /* *n\r\n */
int resp_add_null_array(struct resp_buf *b);                       /* *-1\r\n */

#endif
