/*
 * amora-cli.c — `amora`, the command-line client of an Amora store.
 *
 *   amora [-s SOCKET] [-x] get|set|del|has|scan|range|count|batch|stats|ping ARGS...
 *
 * It attaches to a running amorad through libamora (amora_open on the
 * control socket), runs one command and detaches. Reads therefore go
 * straight to shared memory and writes through the shard rings, exactly as
 * in any other client; the CLI is a thin layer and has no protocol of its
 * own.
 *
 * Manners follow redis-cli, so that scripts written for one read naturally
 * for the other:
 *   - the socket is -s SOCKET, else $AMORA_SOCKET, else
 *     amora-data/amora.sock (amorad's default data directory);
 *   - options come before the command; everything after it is arguments,
 *     so a value may start with '-';
 *   - -x takes the value of `set` from stdin, byte for byte (also written
 *     `set KEY -x`), so `amora -x set KEY < file` stores the file exactly;
 *   - `get` writes the value's raw bytes to stdout and adds a newline only
 *     when stdout is a terminal, so `amora get k > file` round-trips.
 *
 * Exit status: 0 success; 1 "no": get found no key, has found none;
 * 2 error (usage, connection, store), with a message on stderr of the form
 *   amora: <what>: <amora_strerror>: <amora_errmsg>
 * (a failed attach is "amora: attach: ..." with the real cause, e.g.
 * "cannot connect to S: Permission denied", and a hint only where one fits:
 * "is amorad running?" when nothing listens at S). A key whose shard has
 * stopped is an error, never "no such key": "... shard 3 stopped: corrupt
 * log (see amorad's log)".
 * `del` prints the number of keys removed (1 or 0) and exits 0 either way,
 * as redis-cli's DEL does.
 *
 * Scans (`scan`, `range`, `count`) iterate the sorted index (amora.h,
 * "Scans") and print one entry per line, "KEY VALUE" (--keys-only: "KEY"),
 * each string in print_str's form: as it is when that cannot be misread,
 * else quoted and escaped as redis-cli prints strings (sdscatrepr). They
 * exit 0 also when nothing matched. `range` takes ZRANGEBYLEX's bounds.
 *
 * `batch [FILE]` reads all of FILE (or stdin) before attaching, one op a
 * line ("set KEY VALUE", "del KEY"; words bare, or quoted as print_str
 * prints them, or in single quotes), and applies them with one
 * amora_batch: all or nothing. A syntax error, or a bad op (an empty key,
 * say), exits 2 with "amora: batch: line N: <cause>" and applies nothing.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "libclient/amora.h"

#define DEFAULT_SOCKET "amora-data/amora.sock"

enum { EXIT_NO = 1, EXIT_ERR = 2 };

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: amora [-s SOCKET] [-x] COMMAND [ARG]...\n"
		"Talk to a running amorad.\n"
		"\n"
		"Commands:\n"
		"  get KEY         print the value (raw bytes); exit 1 if there is no such key\n"
		"  set KEY VALUE   store VALUE under KEY; prints OK\n"
		"  del KEY         remove KEY; prints 1 if it was there, 0 if not\n"
		"  has KEY         print 1 (exit 0) if KEY exists, 0 (exit 1) if not\n"
		"  scan [--reverse] [--limit N] [--keys-only] PREFIX\n"
		"                  print the keys starting with PREFIX (\"\": every key) in\n"
		"                  key order (bytes compared unsigned, a shorter key first),\n"
		"                  one 'KEY VALUE' line each (--keys-only: 'KEY'); --reverse:\n"
		"                  from the last; --limit N: at most N lines\n"
		"  range [--reverse] [--limit N] [--keys-only] FROM TO\n"
		"                  the same for the keys from FROM to TO, as ZRANGEBYLEX:\n"
		"                  '[a' includes a, '(a' excludes it, '-' and '+' are the\n"
		"                  open ends; FROM is the lower bound also with --reverse\n"
		"  count PREFIX    print how many keys start with PREFIX (\"\": all)\n"
		"  batch [FILE]    apply FILE's lines (none or '-': stdin) as one atomic batch:\n"
		"                  'set KEY VALUE' and 'del KEY' lines (blank lines and '#'\n"
		"                  comments skipped); all of them or, on an error, none;\n"
		"                  prints OK, or the error and the line it is about\n"
		"  stats           print the store's counters as INFO does ('# Section' and\n"
		"                  'name:value' lines, a line for each shard: 'shard3:state=failed,\n"
		"                  cause=corrupt_log,...'), read from shared memory\n"
		"  ping            check that amorad and every shard are up; prints PONG\n"
		"  checkpoint      make every shard write a checkpoint of what it holds and\n"
		"                  wait until all are on disk (the next start reads them\n"
		"                  instead of the log); prints OK\n"
		"\n"
		"Options:\n"
		"  -s SOCKET       amorad's control socket (default $AMORA_SOCKET, else\n"
		"                  %s)\n"
		"  -x              read the VALUE of set from stdin, byte for byte\n"
		"                  (amora -x set KEY < file; also: amora set KEY -x)\n"
		"  -h, --help      print this help\n"
		"\n"
		"Scans print each key and value as it is when it is not empty, has only\n"
		"printable ASCII bytes other than space and does not start with '\"'; else\n"
		"in double quotes, as redis-cli prints strings: \\\\ \\\" \\n \\r \\t \\a \\b\n"
		"escaped, other bytes 0x20-0x7e as they are, the rest as \\xNN (lowercase).\n"
		"Batch lines take words in that form too (a quoted word may use any escape\n"
		"of it), or in single quotes with only \\' escaped, as redis-cli reads them.\n"
		"Options of scan and range come after the command; '--' ends them.\n"
		"\n"
		"Exit status: 0 success, 1 no such key (get, has), 2 error.\n",
		DEFAULT_SOCKET);
}

/* A usage error: what was wrong, then the usage text, exit 2. */
__attribute__((format(printf, 1, 2)))
static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("amora: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	usage(stderr);
	return EXIT_ERR;
}

/* A failure reported by libamora on handle db. */
static int fail(amora *db, const char *what, int rc)
{
	const char *msg = amora_errmsg(db);

	if (msg && *msg)
		fprintf(stderr, "amora: %s: %s: %s\n", what, amora_strerror(rc), msg);
	else
		fprintf(stderr, "amora: %s: %s\n", what, amora_strerror(rc));
	return EXIT_ERR;
}

/* A failed amora_open: its message (amora_errmsg(NULL)) names the cause;
 * a hint follows only where it fits (err: errno after amora_open, which
 * is the failed system call's on AMORA_ESYS). */
static int fail_attach(const char *sock, int rc, int err)
{
	const char *msg = amora_errmsg(NULL), *hint = "";

	if (rc == AMORA_ESYS && (err == ENOENT || err == ECONNREFUSED))
		hint = " (is amorad running? see -s and AMORA_SOCKET)";
	else if (rc == AMORA_ESYS && (err == EACCES || err == EPERM))
		hint = " (amorad's --allow-uid and --allow-gid decide who may open its socket)";
	else if (rc == AMORA_ETIMEDOUT)
		hint = " (is amorad stopped?)";
	if (*msg)
		fprintf(stderr, "amora: attach: %s: %s%s\n", amora_strerror(rc), msg, hint);
	else
		fprintf(stderr, "amora: attach to %s: %s%s\n", sock, amora_strerror(rc), hint);
	return EXIT_ERR;
}

/* Write all of buf to stdout and flush; a closed pipe or full disk is an
 * error, not a silent truncation. */
static int out_bytes(const void *buf, size_t n)
{
	if ((n && fwrite(buf, 1, n, stdout) != n) || fflush(stdout) != 0) {
		fprintf(stderr, "amora: write to stdout: %s\n", strerror(errno));
		return EXIT_ERR;
	}
	return 0;
}

static int out_line(const char *s)
{
	if (out_bytes(s, strlen(s)) != 0)
		return EXIT_ERR;
	return out_bytes("\n", 1);
}

/* All of f (named `what` in messages), refusing more than max bytes (so a
 * mistaken `amora -x set k < /dev/zero` stops instead of filling memory). */
static int read_all(FILE *f, const char *what, size_t max, char **buf_out, size_t *len)
{
	size_t cap = 0, n = 0, want, got;
	char *buf = NULL, *nb;

	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			if (!(nb = realloc(buf, cap))) {
				free(buf);
				fprintf(stderr, "amora: read %s: out of memory\n", what);
				return EXIT_ERR;
			}
			buf = nb;
		}
		want = cap - n;
		got = fread(buf + n, 1, want, f);
		n += got;
		if (n > max) {
			free(buf);
			fprintf(stderr, "amora: read %s: larger than %zu bytes\n", what, max);
			return EXIT_ERR;
		}
	} while (got == want); /* fread stops short only at end of file or error */
	if (ferror(f)) {
		free(buf);
		fprintf(stderr, "amora: read %s: %s\n", what, strerror(errno));
		return EXIT_ERR;
	}
	*buf_out = buf;
	*len = n;
	return 0;
}

/* The value of `set -x`: all of stdin, at most AMORA_VALUE_MAX bytes. */
static int read_stdin(char **val, size_t *len)
{
	return read_all(stdin, "stdin", AMORA_VALUE_MAX, val, len);
}

/* ---------- commands ---------- */

static int cmd_get(amora *db, char **args, int from_stdin)
{
	void *val;
	size_t vlen;
	int rc = amora_get_alloc(db, args[0], strlen(args[0]), &val, &vlen);

	(void)from_stdin;
	if (rc == AMORA_ENOTFOUND)
		return EXIT_NO;
	if (rc < 0)
		return fail(db, "get", rc);
	rc = out_bytes(val, vlen);
	free(val);
	if (rc == 0 && isatty(STDOUT_FILENO))
		rc = out_bytes("\n", 1);
	return rc;
}

static int cmd_set(amora *db, char **args, int from_stdin)
{
	char *val = args[1];
	size_t vlen = from_stdin ? 0 : strlen(args[1]);
	int rc;

	if (from_stdin && (rc = read_stdin(&val, &vlen)) != 0)
		return rc;
	rc = amora_set(db, args[0], strlen(args[0]), val, vlen);
	if (from_stdin)
		free(val);
	if (rc < 0)
		return fail(db, "set", rc);
	return out_line("OK");
}

static int cmd_del(amora *db, char **args, int from_stdin)
{
	int rc = amora_del(db, args[0], strlen(args[0]));

	(void)from_stdin;
	if (rc == AMORA_ENOTFOUND)
		return out_line("0");
	if (rc < 0)
		return fail(db, "del", rc);
	return out_line("1");
}

static int cmd_has(amora *db, char **args, int from_stdin)
{
	int rc = amora_has(db, args[0], strlen(args[0]));

	(void)from_stdin;
	if (rc < 0)
		return fail(db, "has", rc);
	if (out_line(rc ? "1" : "0") != 0)
		return EXIT_ERR;
	return rc ? 0 : EXIT_NO;
}

/* ---------- scans ---------- */

/* One key or value of a scan's output: as it is when it is not empty,
 * every byte printable ASCII but space (0x21-0x7e) and the first not '"',
 * so that "KEY VALUE" lines split at the first space; else quoted as
 * redis-cli's sdscatrepr does: \\ \" \n \r \t \a \b escaped, other bytes
 * 0x20-0x7e as they are, the rest \xNN. */
static void print_str(const uint8_t *p, size_t n)
{
	bool bare = n > 0 && p[0] != '"';

	for (size_t i = 0; bare && i < n; i++)
		bare = p[i] > 0x20 && p[i] < 0x7f;
	if (bare) {
		fwrite(p, 1, n, stdout);
		return;
	}
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		switch (p[i]) {
		case '\\': fputs("\\\\", stdout); break;
		case '"': fputs("\\\"", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		case '\a': fputs("\\a", stdout); break;
		case '\b': fputs("\\b", stdout); break;
		default:
			if (p[i] >= 0x20 && p[i] < 0x7f)
				putchar(p[i]);
			else
				printf("\\x%02x", p[i]);
		}
	}
	putchar('"');
}

/* A scan command as parsed before attaching (usage errors need no amorad). */
struct scan_cmd {
	struct amora_range r;
	bool none; /* nothing to print: --limit 0, or a range such as "+" "-" */
};

static struct scan_cmd scan_cmd;

/* A ZRANGEBYLEX bound: "[k" inclusive, "(k" exclusive, "-" / "+" the open
 * ends (as a lower bound '+' is above every key, as an upper one '-'
 * below: the range is then empty, *none). Returns 0 or a usage error. */
static int lex_bound(const char *a, bool upper, const void **key, size_t *len, int *mode, bool *none)
{
	if (strcmp(a, upper ? "+" : "-") == 0) {
		*mode = AMORA_BOUND_OPEN;
		return 0;
	}
	if (strcmp(a, upper ? "-" : "+") == 0) {
		*none = true;
		return 0;
	}
	if (a[0] != '[' && a[0] != '(')
		return bad_usage("range bound '%s' must start with '[' or '(', or be '-' or '+'", a);
	*mode = a[0] == '[' ? AMORA_BOUND_INCLUSIVE : AMORA_BOUND_EXCLUSIVE;
	*key = a + 1;
	*len = strlen(a + 1);
	return 0;
}

/* scan and range: options after the command name (--reverse, --limit N,
 * --keys-only, '--' to end them), then PREFIX, or FROM TO. Fills
 * scan_cmd. Returns 0 or a usage error. */
static int scan_parse(const char *cmd, int n, char **args)
{
	struct amora_range *r = &scan_cmd.r;
	bool range = strcmp(cmd, "range") == 0;
	int i, rc;

	for (i = 0; i < n && strncmp(args[i], "--", 2) == 0; i++) {
		char *end;

		if (strcmp(args[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(args[i], "--reverse") == 0) {
			r->reverse = 1;
		} else if (strcmp(args[i], "--keys-only") == 0) {
			r->keys_only = 1;
		} else if (strcmp(args[i], "--limit") == 0 && i + 1 < n) {
			errno = 0;
			r->limit = strtoull(args[++i], &end, 10);
			if (errno || end == args[i] || *end || args[i][0] == '-')
				return bad_usage("--limit needs a number, not '%s'", args[i]);
			scan_cmd.none |= r->limit == 0; /* --limit 0: no line (as LIMIT 0 0) */
		} else if (strcmp(args[i], "--limit") == 0) {
			return bad_usage("--limit needs a number");
		} else {
			return bad_usage("unknown option '%s' for %s", args[i], cmd);
		}
	}
	if (n - i != (range ? 2 : 1))
		return bad_usage("wrong number of arguments for '%s' (usage: %s [--reverse] [--limit N] "
				 "[--keys-only] %s)", cmd, cmd, range ? "FROM TO" : "PREFIX");
	if (!range) {
		r->prefix = args[i];
		r->prefix_len = strlen(args[i]);
		return 0;
	}
	if ((rc = lex_bound(args[i], false, &r->start, &r->start_len, &r->start_mode, &scan_cmd.none)) != 0)
		return rc;
	return lex_bound(args[i + 1], true, &r->end, &r->end_len, &r->end_mode, &scan_cmd.none);
}

/* scan, range: the entries of scan_cmd's range, one line each. */
static int cmd_scan(amora *db, char **args, int from_stdin)
{
	const struct amora_range *r = &scan_cmd.r;
	const void *k, *v;
	size_t kl, vl;
	amora_iter *it;
	int rc;

	(void)args, (void)from_stdin;
	if (scan_cmd.none)
		return out_bytes(NULL, 0);
	if ((rc = amora_iter_open(db, r, &it)) < 0)
		return fail(db, r->prefix ? "scan" : "range", rc);
	while ((rc = amora_iter_next(it, &k, &kl, &v, &vl)) == 1) {
		print_str(k, kl);
		if (!r->keys_only) {
			putchar(' ');
			print_str(v, vl);
		}
		putchar('\n');
	}
	amora_iter_close(it);
	if (rc < 0) {
		fflush(stdout);
		return fail(db, r->prefix ? "scan" : "range", rc);
	}
	return out_bytes(NULL, 0);
}

static int cmd_count(amora *db, char **args, int from_stdin)
{
	struct amora_range r = { .prefix = args[0], .prefix_len = strlen(args[0]) };
	uint64_t count;
	char buf[32];
	int rc;

	(void)from_stdin;
	if ((rc = amora_count(db, &r, &count)) < 0)
		return fail(db, "count", rc);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)count);
	return out_line(buf);
}

/* ---------- batch ---------- */

/* The largest input `amora batch` reads: a batch at its limits written in
 * the longest form (every byte of its keys and values as \xNN, and room
 * for the op words, quotes and newline of each line). */
#define BATCH_INPUT_MAX (4 * (size_t)AMORA_BATCH_BYTES_MAX + 32 * (size_t)AMORA_BATCH_OPS_MAX)

/* A batch as parsed before attaching (syntax errors need no amorad): its
 * ops, pointing into text (the input, decoded in place), and the input
 * line of each, for messages. */
struct batch_cmd {
	char *text;
	struct amora_op *ops;
	size_t *lines;
	size_t n, cap;
};

static struct batch_cmd batch_cmd;

__attribute__((format(printf, 2, 3)))
static int batch_syntax(size_t line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "amora: batch: line %zu: ", line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_ERR;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The byte an escape "\c" inside double quotes stands for (\xNN is done
 * by the caller); other characters stand for themselves, as in redis-cli. */
static char unescape(char c)
{
	switch (c) {
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case 'a': return '\a';
	case 'b': return '\b';
	default: return c;
	}
}

/* One word of a batch line at *p (end: the line's end), decoded in place
 * to [*w, *w + *wlen): bare (a run of bytes other than space and tab), or
 * in double quotes with print_str's escapes (\xNN, \n, \", \\ ...), or in
 * single quotes with only \' escaped, as redis-cli's sdssplitargs reads
 * them. A quoted word must be followed by a space, a tab or the end.
 * Advances *p past the word; returns 0 or a syntax error. */
static int batch_word(char **p, char *end, size_t line, char **w, size_t *wlen)
{
	char *r = *p, *o = *p, q = *r;

	*w = o;
	if (q != '"' && q != '\'') {
		while (r < end && *r != ' ' && *r != '\t')
			r++;
		*wlen = (size_t)(r - o);
		*p = r;
		return 0;
	}
	for (r++;; r++) {
		if (r == end)
			return batch_syntax(line, "unbalanced quotes");
		if (*r == q)
			break;
		if (*r == '\\' && r + 1 < end && q == '\'' && r[1] == '\'') {
			*o++ = *++r;
		} else if (*r == '\\' && r + 3 < end && q == '"' && r[1] == 'x' && hex_digit(r[2]) >= 0 &&
			   hex_digit(r[3]) >= 0) {
			*o++ = (char)(hex_digit(r[2]) << 4 | hex_digit(r[3]));
			r += 3;
		} else if (*r == '\\' && r + 1 < end && q == '"') {
			*o++ = unescape(*++r);
		} else {
			*o++ = *r;
		}
	}
	if (++r < end && *r != ' ' && *r != '\t')
		return batch_syntax(line, "closing quote must be followed by a space or the end of the line");
	*wlen = (size_t)(o - *w);
	*p = r;
	return 0;
}

/* Append one op to batch_cmd; returns 0 or an error (too many ops, no
 * memory). */
static int batch_add(size_t line, int op, char *key, size_t klen, char *val, size_t vlen)
{
	struct batch_cmd *b = &batch_cmd;

	if (b->n == AMORA_BATCH_OPS_MAX)
		return batch_syntax(line, "more than %u ops in one batch (AMORA_BATCH_OPS_MAX)",
				    AMORA_BATCH_OPS_MAX);
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		struct amora_op *ops = realloc(b->ops, cap * sizeof(*ops));
		size_t *lines = ops ? realloc(b->lines, cap * sizeof(*lines)) : NULL;

		if (ops)
			b->ops = ops;
		if (!lines) {
			fprintf(stderr, "amora: batch: out of memory\n");
			return EXIT_ERR;
		}
		b->lines = lines;
		b->cap = cap;
	}
	b->ops[b->n] = (struct amora_op){ .op = op, .key = key, .klen = klen, .val = val, .vlen = vlen };
	b->lines[b->n++] = line;
	return 0;
}

/* One line [p, end) of a batch: blank, a comment ('#' first), "set KEY
 * VALUE" or "del KEY" (the op word in any case). Returns 0 or an error. */
static int batch_line(char *p, char *end, size_t line)
{
	char *w[4];
	size_t wl[4];
	int n = 0, rc;

	if (end > p && end[-1] == '\r')
		end--; /* a CRLF line */
	for (;;) {
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == end || (n == 0 && *p == '#'))
			break;
		if (n == 4)
			break; /* one word too many is enough to say so */
		if ((rc = batch_word(&p, end, line, &w[n], &wl[n])) != 0)
			return rc;
		n++;
	}
	if (n == 0)
		return 0;
	if (n == 4)
		return batch_syntax(line, "too many words (set KEY VALUE or del KEY)");
	if (wl[0] == 3 && strncasecmp(w[0], "set", 3) == 0 && n == 3)
		return batch_add(line, AMORA_OP_SET, w[1], wl[1], w[2], wl[2]);
	if (wl[0] == 3 && strncasecmp(w[0], "del", 3) == 0 && n == 2)
		return batch_add(line, AMORA_OP_DEL, w[1], wl[1], NULL, 0);
	if (wl[0] == 3 && strncasecmp(w[0], "set", 3) == 0)
		return batch_syntax(line, "set needs KEY VALUE");
	if (wl[0] == 3 && strncasecmp(w[0], "del", 3) == 0)
		return batch_syntax(line, "del needs KEY");
	return batch_syntax(line, "unknown op '%.*s' (set KEY VALUE or del KEY)",
			    (int)(wl[0] > 64 ? 64 : wl[0]), w[0]);
}

/* batch [FILE]: reads FILE ('-' or none: stdin) whole and parses it into
 * batch_cmd. Returns 0 or an error (usage, the file, a line's syntax). */
static int batch_parse(const char *cmd, int n, char **args)
{
	const char *path = n == 1 ? args[0] : "-";
	bool std = strcmp(path, "-") == 0;
	FILE *f = std ? stdin : fopen(path, "rb");
	char *p, *end, *nl;
	size_t len, line = 1;
	int rc;

	if (n > 1)
		return bad_usage("wrong number of arguments for '%s' (usage: %s [FILE])", cmd, cmd);
	if (!f) {
		fprintf(stderr, "amora: batch: cannot open %s: %s\n", path, strerror(errno));
		return EXIT_ERR;
	}
	rc = read_all(f, std ? "stdin" : path, BATCH_INPUT_MAX, &batch_cmd.text, &len);
	if (!std)
		fclose(f);
	if (rc != 0)
		return rc;
	for (p = batch_cmd.text, end = p + len; p < end; p = nl + 1, line++) {
		if (!(nl = memchr(p, '\n', (size_t)(end - p))))
			nl = end;
		if ((rc = batch_line(p, nl, line)) != 0)
			return rc;
	}
	return 0;
}

/* batch: the parsed ops as one amora_batch; OK, or the error, naming the
 * input line of the op it is about. */
static int cmd_batch(amora *db, char **args, int from_stdin)
{
	const char *msg;
	size_t op;
	int rc, at = 0;

	(void)args, (void)from_stdin;
	rc = amora_batch(db, batch_cmd.ops, batch_cmd.n);
	if (rc == 0)
		return out_line("OK");
	msg = amora_errmsg(db);
	if (rc == AMORA_EINVAL && sscanf(msg, "op %zu: %n", &op, &at) == 1 && at > 0 &&
	    op < batch_cmd.n) {
		fprintf(stderr, "amora: batch: line %zu: %s: %s\n", batch_cmd.lines[op],
			amora_strerror(rc), msg + at);
		return EXIT_ERR;
	}
	return fail(db, "batch", rc);
}

/* Records per log write (0 before the first), as INFO's mean_batch. */
static double mean_batch(uint64_t records, uint64_t writes)
{
	return writes ? (double)records / (double)writes : 0.0;
}

/* `amora stats`: INFO's sections and field names, from shared memory (no
 * round trip), with the fields only amorad knows (its pid, uptime, data
 * directory, sync mode, max_clients) left out; lines end in \n, not \r\n.
 * This handle counts: its connection, its attach. */
static int cmd_stats(amora *db, char **args, int from_stdin)
{
	struct amora_stats st;
	struct amora_server_stats sv;
	struct amora_shard_status ss;
	uint32_t loading = 0;
	int rc = amora_stats(db, &st);

	(void)args, (void)from_stdin;
	if (rc == 0)
		rc = amora_server_stats(db, &sv, sizeof(sv));
	for (uint32_t s = 0; rc == 0 && s < st.shards; s++)
		if ((rc = amora_shard_status(db, s, &ss)) == 0)
			loading += ss.state == AMORA_SHARD_STARTING || ss.state == AMORA_SHARD_RESTARTING;
	if (rc < 0)
		return fail(db, "stats", rc);
	printf("# Server\nshards:%u\nshards_ready:%u\nshards_failed:%u\n\n"
	       "# Clients\nconnected_clients:%u\nattached_clients:%u\nblocked_clients:0\n\n"
	       "# Memory\nused_memory:%llu\nmemory_limit:%llu\nrecord_bytes:%llu\nfragmentation:%.4f\n\n"
	       "# Persistence\nloading:%d\nlog_writes:%llu\nlog_records:%llu\nlog_bytes:%llu\nlog_syncs:%llu\n"
	       "mean_batch:%.2f\nbatches_committed:%llu\nbatches_aborted:%llu\nbatch_parts_recovered:%llu\n"
	       "checkpoints:%llu\ncheckpoint_bytes:%llu\nlog_disk_bytes:%llu\n\n"
	       "# Stats\ntotal_connections_received:%llu\ntotal_commands_processed:%llu\n"
	       "rejected_connections:%llu\ntotal_requests:%llu\n\n# Keyspace\n",
	       st.shards, st.shards_ready, st.shards_failed, sv.connected_clients, sv.attached_clients,
	       (unsigned long long)st.memory_used, (unsigned long long)st.memory_limit,
	       (unsigned long long)st.record_bytes, st.fragmentation, loading > 0,
	       (unsigned long long)sv.writes.log_writes, (unsigned long long)sv.writes.log_records,
	       (unsigned long long)sv.writes.log_bytes, (unsigned long long)sv.writes.log_syncs,
	       mean_batch(sv.writes.log_records, sv.writes.log_writes),
	       (unsigned long long)sv.batches_committed, (unsigned long long)sv.batches_aborted,
	       (unsigned long long)sv.batch_parts_recovered, (unsigned long long)sv.checkpoints,
	       (unsigned long long)sv.checkpoint_bytes, (unsigned long long)sv.log_disk_bytes,
	       (unsigned long long)sv.connections_received, (unsigned long long)sv.commands_processed,
	       (unsigned long long)sv.connections_rejected, (unsigned long long)sv.writes.requests);
	if (st.keys > 0)
		printf("db0:keys=%llu,expires=0,avg_ttl=0\n", (unsigned long long)st.keys);
	printf("\n# Shards\n");
	for (uint32_t s = 0; s < st.shards; s++) {
		struct amora_shard_stats sh;
		const struct amora_write_counts *w = &sh.writes;

		if ((rc = amora_shard_stats(db, s, &sh, sizeof(sh))) < 0)
			return fail(db, "stats", rc);
		printf("shard%u:state=%s,cause=%s,keys=%llu,used_memory=%llu,requests=%llu,log_writes=%llu,"
		       "log_records=%llu,log_bytes=%llu,log_syncs=%llu,mean_batch=%.2f,restarts=%u,"
		       "checkpoints=%llu,checkpoint_seq=%llu,log_disk_bytes=%llu\n", s,
		       sh.state, sh.cause, (unsigned long long)sh.keys, (unsigned long long)sh.memory_used,
		       (unsigned long long)w->requests, (unsigned long long)w->log_writes,
		       (unsigned long long)w->log_records, (unsigned long long)w->log_bytes,
		       (unsigned long long)w->log_syncs, mean_batch(w->log_records, w->log_writes), sh.restarts,
		       (unsigned long long)sh.checkpoints, (unsigned long long)sh.checkpoint_seq,
		       (unsigned long long)sh.log_disk_bytes);
	}
	return out_bytes(NULL, 0);
}

static int cmd_ping(amora *db, char **args, int from_stdin)
{
	int rc = amora_heartbeat(db);

	(void)args, (void)from_stdin;
	if (rc < 0)
		return fail(db, "ping", rc);
	return out_line("PONG");
}

static int cmd_checkpoint(amora *db, char **args, int from_stdin)
{
	int rc = amora_checkpoint(db);

	(void)args, (void)from_stdin;
	if (rc < 0)
		return fail(db, "checkpoint", rc);
	return out_line("OK");
}

/* ---------- command table and main ---------- */

struct command {
	const char *name;
	int nargs;          /* arguments after the name (when parse is NULL) */
	const char *args;   /* for messages */
	int (*fn)(amora *db, char **args, int from_stdin);
	/* NULL, or checks and parses the n arguments before attaching */
	int (*parse)(const char *name, int n, char **args);
};

static const struct command commands[] = {
	{ "get", 1, "KEY", cmd_get, NULL },
	{ "set", 2, "KEY VALUE", cmd_set, NULL },
	{ "del", 1, "KEY", cmd_del, NULL },
	{ "has", 1, "KEY", cmd_has, NULL },
	{ "scan", 0, "", cmd_scan, scan_parse },
	{ "range", 0, "", cmd_scan, scan_parse },
	{ "count", 1, "PREFIX", cmd_count, NULL },
	{ "batch", 0, "", cmd_batch, batch_parse },
	{ "stats", 0, "", cmd_stats, NULL },
	{ "ping", 0, "", cmd_ping, NULL },
	{ "checkpoint", 0, "", cmd_checkpoint, NULL },
};

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* Check the argument count (n after the command name); `set KEY -x` is
 * folded into -x. Returns 0 or a usage error. */
static int check_args(const struct command *c, int n, char **args, int *from_stdin)
{
	int is_set = strcmp(c->name, "set") == 0;

	if (is_set && n == 2 && strcmp(args[1], "-x") == 0) {
		*from_stdin = 1;
		n = 1;
	}
	if (*from_stdin && !is_set)
		return bad_usage("-x applies only to set, not to %s", c->name);
	if (c->parse)
		return c->parse(c->name, n, args);
	if (n == (*from_stdin ? 1 : c->nargs))
		return 0;
	return bad_usage("wrong number of arguments for '%s' (usage: %s%s%s)", c->name,
			 c->name, *c->args ? " " : "", *from_stdin ? "KEY" : c->args);
}

int main(int argc, char **argv)
{
	const char *sock = getenv("AMORA_SOCKET");
	const struct command *c;
	int from_stdin = 0, i, rc;
	amora *db;

	if (!sock || !*sock)
		sock = DEFAULT_SOCKET;
	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "-x") == 0) {
			from_stdin = 1;
		} else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			sock = argv[++i];
		} else if (strcmp(argv[i], "-s") == 0) {
			return bad_usage("-s needs a socket path");
		} else {
			return bad_usage("unknown option '%s'", argv[i]);
		}
	}
	if (i == argc)
		return bad_usage("no command given");
	if (!(c = find_command(argv[i])))
		return bad_usage("unknown command '%s'", argv[i]);
	if ((rc = check_args(c, argc - i - 1, argv + i + 1, &from_stdin)) != 0)
		return rc;

	rc = amora_open(sock, &db);
	if (rc < 0)
		return fail_attach(sock, rc, errno);
	rc = c->fn(db, argv + i + 1, from_stdin);
	amora_close(db); /* nothing buffered: the commands wait for their writes */
	return rc;
}
