/*
 * test_cli.c — the amora CLI and the README's C example, against a real
 * amorad: what they print, their exit statuses, binary values via -x.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include "tests/proc.h"

static void setup(void)
{
	proc_init();
	proc_start(&D, "--shards", "2", "--memory", "64M", NULL);
}

TestSuite(cli, .init = setup, .fini = proc_fini, .timeout = 60);

Test(cli, set_get_del_has_ping_stats)
{
	char out[4096];

	cr_assert_eq(proc_cli(out, sizeof(out), "set user:1 alice"), 0);
	cr_assert_str_eq(out, "OK\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "get user:1"), 0);
	cr_assert_str_eq(out, "alice", "stdout is a pipe: no newline added");
	cr_assert_eq(proc_cli(out, sizeof(out), "get nobody"), 1);
	cr_assert_str_eq(out, "");
	cr_assert_eq(proc_cli(out, sizeof(out), "has user:1"), 0);
	cr_assert_str_eq(out, "1\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "del user:1"), 0);
	cr_assert_str_eq(out, "1\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "del user:1"), 0);
	cr_assert_str_eq(out, "0\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "has user:1"), 1);
	cr_assert_eq(proc_cli(out, sizeof(out), "ping"), 0);
	cr_assert_str_eq(out, "PONG\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "stats"), 0);
	cr_assert(strstr(out, "keys"), "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "set empty ''"), 0);
	cr_assert_eq(proc_cli(out, sizeof(out), "get empty"), 0, "an empty value is found");
}

Test(cli, binary_value_from_stdin)
{
	char in[300], path[300], out[4096], cmd[2048];
	unsigned char bytes[256];
	FILE *f;

	for (int i = 0; i < 256; i++)
		bytes[i] = (unsigned char)i;
	snprintf(in, sizeof(in), "%s/in.bin", D.dir);
	snprintf(path, sizeof(path), "%s/out.bin", D.dir);
	f = fopen(in, "wb");
	fwrite(bytes, 1, sizeof(bytes), f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "-x set blob < %s", in);
	cr_assert_eq(proc_cli(out, sizeof(out), cmd), 0);
	snprintf(cmd, sizeof(cmd), AMORA_CLI " -s %s get blob > %s && cmp %s %s", D.sock, path, in, path);
	cr_assert_eq(system(cmd), 0, "the value read back differs from the file");
}

Test(cli, errors_exit_2_with_a_message)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), AMORA_CLI " -s %s/nope.sock get k 2>&1 >/dev/null | grep -q '^amora: '; "
		 "test $? -eq 0 && " AMORA_CLI " -s %s/nope.sock get k 2>/dev/null; test $? -eq 2",
		 D.dir, D.dir);
	cr_assert_eq(system(cmd), 0, "a dead socket must exit 2 with 'amora: ...' on stderr");
	snprintf(cmd, sizeof(cmd), AMORA_CLI " -s %s frobnicate 2>/dev/null; test $? -eq 2", D.sock);
	cr_assert_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), AMORA_CLI " -s %s set '' v 2>&1 | grep -q 'invalid argument'", D.sock);
	cr_assert_eq(system(cmd), 0, "an empty key must be refused with a message");
}

/* Run `amora -s sock get k` through sh with a prefix (e.g. setpriv) and
 * capture its stderr into err; returns the exit status. */
static int cli_stderr(char *err, size_t cap, const char *prefix, const char *sock)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "%s " AMORA_CLI " -s %s get k 2>&1 >/dev/null", prefix, sock);
	return proc_run(err, cap, cmd);
}

/* A failed attach prints its real cause, with a hint only where it fits. */
Test(cli, attach_failures_say_why)
{
	char err[1024], path[400], want[600], prefix[64] = "";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int socks[400], n = 0;

	/* no such socket */
	snprintf(path, sizeof(path), "%s/nope.sock", D.dir);
	cr_assert_eq(cli_stderr(err, sizeof(err), "", path), 2);
	snprintf(want, sizeof(want), "cannot connect to %s: No such file or directory", path);
	cr_assert(strstr(err, want), "%s", err);
	cr_assert(strstr(err, "is amorad running?"), "%s", err);
	/* permission denied: as another user (root passes any mode), else
	 * with the socket's mode taken away */
	if (geteuid() == 0)
		snprintf(prefix, sizeof(prefix), "setpriv --reuid=65534 --regid=65534 --clear-groups");
	else
		cr_assert_eq(chmod(D.sock, 0), 0);
	cr_assert_eq(cli_stderr(err, sizeof(err), prefix, D.sock), 2);
	cr_assert(strstr(err, "Permission denied"), "%s", err);
	cr_assert_null(strstr(err, "is amorad running?"), "amorad is running: %s", err);
	if (geteuid() != 0)
		cr_assert_eq(chmod(D.sock, 0660), 0);
	/* too many connections: take them all (each answers PING once
	 * amorad accepted it), then the CLI's is refused */
	strcpy(sa.sun_path, D.sock);
	for (; n < 400; n++) {
		char pong[64] = "";
		struct timeval tv = { 5, 0 };

		socks[n] = socket(AF_UNIX, SOCK_STREAM, 0);
		cr_assert_eq(connect(socks[n], (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
		setsockopt(socks[n], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		/* (a refused one may be closed already: no SIGPIPE) */
		if (send(socks[n], "PING\r\n", 6, MSG_NOSIGNAL) != 6 ||
		    recv(socks[n], pong, sizeof(pong) - 1, 0) <= 0 || strncmp(pong, "+PONG", 5) != 0) {
			close(socks[n]);
			break;
		}
	}
	cr_assert_lt(n, 400, "amorad never refused a connection");
	cr_assert_eq(cli_stderr(err, sizeof(err), "", D.sock), 2);
	cr_assert(strstr(err, "too many connections"), "%s", err);
	cr_assert_null(strstr(err, "is amorad running?"), "%s", err);
	while (n > 0)
		close(socks[--n]);
}

/* The C example from the README, compiled and run as a user would. */
Test(cli, readme_example_compiles_and_runs)
{
	char cmd[2048], out[256];
	FILE *f;

	snprintf(cmd, sizeof(cmd),
		 "cc -Wall -Werror " AMORA_EXTRA_LDFLAGS " libclient/examples/hello.c -I" AMORA_BUILD_DIR "/include -L" AMORA_BUILD_DIR
		 " -lamora -Wl,-rpath," AMORA_BUILD_DIR " -o %s/hello && %s/hello %s",
		 D.dir, D.dir, D.sock);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	cr_assert_eq(pclose(f), 0, "example failed: %s", out);
	cr_assert_str_eq(out, "user:1 = alice\n");
}

/* Writes text to dir/name; returns the path (static storage). */
static const char *cli_file(const char *name, const char *text, size_t len)
{
	static char path[400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", D.dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(text, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
	return path;
}

/* `amora batch`: every line's op applied, binary words through the
 * escapes, comments, blank and CRLF lines skipped, from a file or stdin. */
Test(cli, batch_applies_every_line)
{
	static const char text[] = "# a comment\n"
				   "set user:1 alice\n"
				   "\n"
				   "SET \"two words\" \"a\\x00b\\n\\\"q\\\"\"\r\n"
				   "  set 'it\\'s' 'don\\'t'\t\n"
				   "set user:2 bob\n"
				   "del user:2\n"
				   "del never-there\n"
				   "set user:1 carol"; /* no final newline; later op wins */
	char out[4096], cmd[1024];

	snprintf(cmd, sizeof(cmd), "batch %s", cli_file("b.txt", text, sizeof(text) - 1));
	cr_assert_eq(proc_cli(out, sizeof(out), cmd), 0, "%s", out);
	cr_assert_str_eq(out, "OK\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "scan ''"), 0);
	cr_assert_str_eq(out, "it's don't\n"
			      "\"two words\" \"a\\x00b\\n\\\"q\\\"\"\n"
			      "user:1 carol\n", "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "batch < /dev/null"), 0, "an empty batch does nothing");
	cr_assert_str_eq(out, "OK\n");
	cr_assert_eq(proc_cli(out, sizeof(out), "batch - <<'E'\ndel user:1\nset \"\\xff\\x01\" \"\"\nE"), 0);
	cr_assert_eq(proc_cli(out, sizeof(out), "scan ''"), 0);
	cr_assert_str_eq(out, "it's don't\n"
			      "\"two words\" \"a\\x00b\\n\\\"q\\\"\"\n"
			      "\"\\xff\\x01\" \"\"\n", "%s", out);
}

/* Every byte value through "\xNN" comes back as written. */
Test(cli, batch_binary_value_round_trips)
{
	char text[2048], cmd[2048], out[256], *p = text;
	unsigned char bytes[256];

	p += sprintf(p, "set blob \"");
	for (int i = 0; i < 256; i++)
		p += sprintf(p, "\\x%02X", bytes[i] = (unsigned char)(255 - i));
	p += sprintf(p, "\"\n");
	snprintf(cmd, sizeof(cmd), "batch %s", cli_file("bin.txt", text, (size_t)(p - text)));
	cr_assert_eq(proc_cli(out, sizeof(out), cmd), 0, "%s", out);
	cli_file("want.bin", (const char *)bytes, sizeof(bytes));
	snprintf(cmd, sizeof(cmd), AMORA_CLI " -s %s get blob | cmp - %s/want.bin", D.sock, D.dir);
	cr_assert_eq(system(cmd), 0, "the value read back differs from the bytes written");
}

/* A bad line, of syntax or a bad op, names its line, exits 2 and applies
 * nothing of the batch. */
Test(cli, batch_errors_name_the_line_and_change_nothing)
{
	static const struct {
		const char *text, *err;
	} bad[] = {
		{ "set k1 v\nset k2\n", "amora: batch: line 2: set needs KEY VALUE\n" },
		{ "set k1 v\n\ndel\n", "amora: batch: line 3: del needs KEY\n" },
		{ "set k1 v\nfrob k2\n", "amora: batch: line 2: unknown op 'frob' (set KEY VALUE or del KEY)\n" },
		{ "set k1 v\nset k2 v extra\n", "amora: batch: line 2: too many words (set KEY VALUE or del KEY)\n" },
		{ "set k1 v\nset \"k2 v\n", "amora: batch: line 2: unbalanced quotes\n" },
		{ "set k1 v\nset \"k2\"x v\n",
		  "amora: batch: line 2: closing quote must be followed by a space or the end of the line\n" },
		{ "set k1 v\n# c\nset \"\" v\n", "amora: batch: line 3: invalid argument: empty key\n" },
	};
	char out[4096], cmd[1024];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(cmd, sizeof(cmd), "batch %s 2>&1", cli_file("bad.txt", bad[i].text, strlen(bad[i].text)));
		cr_assert_eq(proc_cli(out, sizeof(out), cmd), 2, "case %zu: %s", i, out);
		cr_assert_str_eq(out, bad[i].err, "case %zu", i);
		cr_assert_eq(proc_cli(out, sizeof(out), "has k1"), 1, "case %zu: line 1 was applied", i);
	}
	/* a key over the limit, named by its line (the message is libamora's) */
	char big[5000];
	int n = sprintf(big, "set k1 v\nset ");
	memset(big + n, 'k', 4097);
	n += 4097;
	n += sprintf(big + n, " v\n");
	snprintf(cmd, sizeof(cmd), "batch %s 2>&1", cli_file("big.txt", big, (size_t)n));
	cr_assert_eq(proc_cli(out, sizeof(out), cmd), 2, "%s", out);
	cr_assert(strncmp(out, "amora: batch: line 2: invalid argument: ", 40) == 0, "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "has k1"), 1);
	snprintf(cmd, sizeof(cmd), "batch %s/none.txt 2>&1", D.dir);
	cr_assert_eq(proc_cli(out, sizeof(out), cmd), 2);
	cr_assert(strstr(out, "none.txt: No such file or directory"), "%s", out);
	cr_assert_eq(proc_cli(out, sizeof(out), "-x batch 2>&1 </dev/null"), 2);
	cr_assert(strstr(out, "-x applies only to set"), "%s", out);
}
