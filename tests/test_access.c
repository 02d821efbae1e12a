/*
 * test_access.c — who gets into amorad, and for how long (issue 7):
 *
 *   - the allow-lists, with real users: the socket's and the data
 *     directory's modes follow them, SO_PEERCRED/SO_PEERGROUPS decide;
 *   - connection limits (per uid, in total, the owner's reserve), the
 *     timeout of a request that does not complete, the budget of input
 *     buffers over all connections;
 *   - the cut-off of a client whose epoch slot keeps every shard from
 *     freeing memory, whatever values it writes there.
 *
 * A real amorad, real sockets, real users: tests that need users create
 * them with useradd (CI runs as root; as another user they skip) named
 * after the test process, and delete them at the end; users a killed run
 * left behind (their process is gone) are deleted by the next run. A
 * child process becomes the user (initgroups, setgid, setuid) and reports
 * back over a pipe, then holds what it opened until the test lets it go.
 */
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "tests/proc.h"
#include "shm/chan.h"


/* ---------- users ---------- */

struct user {
	char name[32];
	uid_t uid;
	gid_t gid;
};

#define MAX_MADE 8
static char made_users[MAX_MADE][32], made_groups[MAX_MADE][32];
static int n_made_users, n_made_groups;

/* Run a shadow-utils command, retrying while another one holds the
 * passwd lock (tests run in parallel). */
static int run_cmd(const char *cmd)
{
	int rc = -1;

	for (int i = 0; i < 50; i++) {
		rc = system(cmd);
		if (rc == 0)
			return 0;
		usleep(100000);
	}
	return rc;
}

/* Users and groups named amt<pid>... / amg<pid>... whose process is gone. */
static void remove_stale(const char *file, const char *prefix, const char *del)
{
	char line[512], name[64], cmd[512];
	FILE *f = fopen(file, "r");
	size_t pl = strlen(prefix);

	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		int pid;

		if (colon == NULL || strncmp(line, prefix, pl) != 0 || colon - line >= (int)sizeof(name))
			continue;
		memcpy(name, line, (size_t)(colon - line));
		name[colon - line] = '\0';
		if (sscanf(name + pl, "%d", &pid) != 1 || pid <= 0 || kill(pid, 0) == 0)
			continue;
		/* best effort: a parallel test may have removed it first */
		snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>&1 || true", del, name);
		if (system(cmd) != 0)
			continue;
	}
	fclose(f);
}

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root: creates users with useradd");
	if (system("command -v useradd >/dev/null && command -v groupadd >/dev/null") != 0)
		cr_skip_test("needs useradd and groupadd (package passwd)");
}

static void make_group(const char *tag, char *name, size_t n, gid_t *gid)
{
	char cmd[512];
	struct group *g;

	snprintf(name, n, "amg%d%s", getpid(), tag);
	snprintf(cmd, sizeof(cmd), "groupadd %s >/dev/null 2>&1", name);
	cr_assert_eq(run_cmd(cmd), 0, "groupadd %s failed", name);
	cr_assert(n_made_groups < MAX_MADE);
	snprintf(made_groups[n_made_groups++], 32, "%s", name);
	g = getgrnam(name);
	cr_assert_not_null(g, "no group %s after groupadd", name);
	*gid = g->gr_gid;
}

/* A user of its own group (useradd -U), in supplementary `groups` if not
 * NULL; no home, no shell. */
static void make_user(struct user *u, const char *tag, const char *groups)
{
	char cmd[512];
	struct passwd *pw;

	snprintf(u->name, sizeof(u->name), "amt%d%s", getpid(), tag);
	snprintf(cmd, sizeof(cmd), "useradd -M -U -s /usr/sbin/nologin %s%s %s >/dev/null 2>&1",
		 groups ? "-G " : "", groups ? groups : "", u->name);
	cr_assert_eq(run_cmd(cmd), 0, "useradd %s failed", u->name);
	cr_assert(n_made_users < MAX_MADE);
	snprintf(made_users[n_made_users++], 32, "%s", u->name);
	pw = getpwnam(u->name);
	cr_assert_not_null(pw, "no user %s after useradd", u->name);
	u->uid = pw->pw_uid;
	u->gid = pw->pw_gid;
}

static void setup(void)
{
	proc_init();
	if (geteuid() == 0) {
		remove_stale("/etc/passwd", "amt", "userdel -f");
		remove_stale("/etc/group", "amg", "groupdel");
		remove_stale("/etc/group", "amt", "groupdel");
	}
}

static void teardown(void)
{
	char cmd[512];

	proc_fini();
	for (int i = 0; i < n_made_users; i++) {
		snprintf(cmd, sizeof(cmd), "userdel -f %s >/dev/null 2>&1", made_users[i]);
		if (run_cmd(cmd) != 0)
			fprintf(stderr, "could not delete user %s\n", made_users[i]);
	}
	for (int i = 0; i < n_made_groups; i++) {
		snprintf(cmd, sizeof(cmd), "groupdel %s >/dev/null 2>&1", made_groups[i]);
		if (run_cmd(cmd) != 0)
			fprintf(stderr, "could not delete group %s\n", made_groups[i]);
	}
	n_made_users = n_made_groups = 0;
}

TestSuite(access, .init = setup, .fini = teardown, .timeout = 40);

/* ---------- processes running as a user ---------- */

/* What a child does as its user: 0 or a failure code, and a message. */
typedef int (*child_fn)(void *arg, char *msg, size_t n);

struct child {
	pid_t pid;
	int report; /* read end: int rc, then the message */
	int hold;   /* write end: the child exits once it is closed */
};

/* Hold ends of the children still running: a new child closes them, or
 * the earlier children would never see theirs close. */
static int holds[8], n_holds;

static void child_start(struct child *ch, const struct user *u, child_fn fn, void *arg)
{
	int rep[2], hold[2];

	cr_assert_eq(pipe(rep), 0);
	cr_assert_eq(pipe(hold), 0);
	ch->pid = fork();
	cr_assert(ch->pid >= 0);
	if (ch->pid == 0) {
		char msg[1024] = "";
		int rc;

		close(rep[0]);
		close(hold[1]);
		for (int i = 0; i < n_holds; i++)
			close(holds[i]);
		if (initgroups(u->name, u->gid) != 0 || setgid(u->gid) != 0 || setuid(u->uid) != 0) {
			snprintf(msg, sizeof(msg), "cannot become %s: %s", u->name, strerror(errno));
			rc = 99;
		} else {
			/* after setuid, which clears it */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			rc = fn(arg, msg, sizeof(msg));
		}
		if (write(rep[1], &rc, sizeof(rc)) != sizeof(rc) ||
		    write(rep[1], msg, strlen(msg) + 1) < 0)
			_exit(98);
		char c;
		while (read(hold[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(rep[1]);
	close(hold[0]);
	ch->report = rep[0];
	ch->hold = hold[1];
	cr_assert(n_holds < 8);
	holds[n_holds++] = ch->hold;
}

/* The child's result (its message in msg), waiting at most 20 s. */
static int child_result(struct child *ch, char *msg, size_t n)
{
	struct pollfd p = { .fd = ch->report, .events = POLLIN };
	size_t len = 0;
	int rc = -1;

	msg[0] = '\0';
	cr_assert_eq(poll(&p, 1, 20000), 1, "the child as a test user did not report");
	cr_assert_eq(read(ch->report, &rc, sizeof(rc)), (ssize_t)sizeof(rc), "the child died");
	while (len + 1 < n) {
		ssize_t k = read(ch->report, msg + len, n - 1 - len);

		if (k <= 0)
			break;
		len += (size_t)k;
		if (memchr(msg, '\0', len))
			break;
	}
	msg[len] = '\0';
	return rc;
}

static void child_end(struct child *ch)
{
	for (int i = 0; i < n_holds; i++)
		if (holds[i] == ch->hold)
			holds[i] = holds[--n_holds];
	close(ch->hold);
	close(ch->report);
	waitpid(ch->pid, NULL, 0);
}

/* Run fn as user u and return its result (the child is gone after). */
static int as_user(const struct user *u, child_fn fn, void *arg, char *msg, size_t n)
{
	struct child ch;
	int rc;

	child_start(&ch, u, fn, arg);
	rc = child_result(&ch, msg, n);
	child_end(&ch);
	return rc;
}

/* ---------- raw sockets ---------- */

/* A connection to amorad's socket, or -errno. */
static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (strlen(D.sock) >= sizeof(sa.sun_path)) {
		close(fd);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, D.sock, strlen(D.sock) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* One line from fd without its CRLF, within timeout_ms. Returns its
 * length, or -1 if the peer hung up first or nothing came in time. */
static int read_line(int fd, char *buf, size_t n, int timeout_ms)
{
	uint64_t t0 = proc_now_ms();
	size_t len = 0;

	while (len + 1 < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = timeout_ms - (int)(proc_now_ms() - t0);
		char ch;

		if (left <= 0 || poll(&p, 1, left) != 1 || recv(fd, &ch, 1, 0) != 1)
			break;
		if (ch == '\n' && len > 0 && buf[len - 1] == '\r') {
			buf[len - 1] = '\0';
			return (int)len - 1;
		}
		buf[len++] = ch;
	}
	buf[len] = '\0';
	return -1;
}

/* Whether the peer hung up within timeout_ms (bytes before that are read
 * and dropped). */
static bool hung_up(int fd, int timeout_ms)
{
	uint64_t t0 = proc_now_ms();
	char buf[4096];

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = timeout_ms - (int)(proc_now_ms() - t0);
		ssize_t k;

		if (left <= 0 || poll(&p, 1, left) != 1)
			return false;
		k = recv(fd, buf, sizeof(buf), 0);
		if (k == 0 || (k < 0 && errno == ECONNRESET))
			return true;
		if (k < 0)
			return false;
	}
}

/* Send PING on fd and read the line that comes back: +PONG, or the line
 * amorad refused the connection with (it is there before the PING is
 * read, so a failed send does not matter). */
static void ping_line(int fd, char *line, size_t n)
{
	if (send(fd, "PING\r\n", 6, MSG_NOSIGNAL) < 0)
		(void)0; /* refused and closed already: the line is waiting */
	if (read_line(fd, line, n, 5000) < 0 && !line[0])
		snprintf(line, n, "(closed without a line)");
}

/* PING on fd answers +PONG. */
static bool raw_ping(int fd)
{
	char line[256];

	ping_line(fd, line, sizeof(line));
	return strcmp(line, "+PONG") == 0;
}

/* ---------- the allow-lists, with real users ---------- */

static void expect_mode(const char *path, unsigned mode, gid_t gid)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	cr_assert_eq(st.st_mode & 07777, mode, "%s has mode %04o, want %04o", path, st.st_mode & 07777,
		     mode);
	if (gid != (gid_t)-1)
		cr_assert_eq(st.st_gid, gid, "%s has group %u, want %u", path, st.st_gid, gid);
}

/* As an allowed user: attach with libamora, write and read; PING on a raw
 * connection. */
static int use_the_store(void *arg, char *msg, size_t n)
{
	char buf[16];
	size_t vlen;
	amora *db;
	int rc, fd;

	(void)arg;
	rc = amora_open(D.sock, &db);
	if (rc != AMORA_OK) {
		snprintf(msg, n, "amora_open: %s: %s (errno: %s)", amora_strerror(rc), amora_errmsg(db),
			 strerror(errno));
		return 1;
	}
	rc = amora_set(db, "who", 3, "user", 4);
	if (rc == AMORA_OK)
		rc = amora_get(db, "who", 3, buf, sizeof(buf), &vlen);
	if (rc != AMORA_OK || vlen != 4 || memcmp(buf, "user", 4) != 0) {
		snprintf(msg, n, "set/get: %s: %s", amora_strerror(rc), amora_errmsg(db));
		amora_close(db);
		return 2;
	}
	amora_close(db);
	fd = raw_connect();
	if (fd < 0) {
		snprintf(msg, n, "connect: %s", strerror(-fd));
		return 3;
	}
	if (!raw_ping(fd)) {
		snprintf(msg, n, "PING on a raw connection got no PONG");
		return 4;
	}
	close(fd);
	return 0;
}

/* As a user the lists do not name: amora_open's code and message, and the
 * line a raw connection gets (or why it could not connect). */
static int try_refused(void *arg, char *msg, size_t n)
{
	amora *db = NULL;
	char line[256] = "";
	int rc = amora_open(D.sock, &db), fd;

	(void)arg;
	if (rc == AMORA_OK) {
		amora_close(db);
		snprintf(msg, n, "attached");
		return 0;
	}
	fd = raw_connect();
	if (fd >= 0) {
		read_line(fd, line, sizeof(line), 5000);
		close(fd);
	} else {
		snprintf(line, sizeof(line), "connect: %s", strerror(-fd));
	}
	snprintf(msg, n, "%d|%s|%s", rc, amora_errmsg(db), line);
	return 1;
}

/* Defect 9: with --allow-uid, the named user gets in (socket 0666 in a
 * directory 0711, amorad deciding), another user is refused with a
 * -DENIED line that says why. */
Test(access, allow_uid_lets_a_real_user_in)
{
	struct user ok, no;
	char msg[1024], want[128];
	int rc;

	need_root();
	make_user(&ok, "ok", NULL);
	make_user(&no, "no", NULL);
	proc_start(&D, "--shards", "2", "--memory", "64M", "--allow-uid", ok.name, NULL);
	expect_mode(D.sock, 0666, (gid_t)-1);
	expect_mode(D.dir, 0711, (gid_t)-1);
	rc = as_user(&ok, use_the_store, NULL, msg, sizeof(msg));
	cr_assert_eq(rc, 0, "allowed user %s: %s", ok.name, msg);
	rc = as_user(&no, try_refused, NULL, msg, sizeof(msg));
	cr_assert_eq(rc, 1, "user %s, not allowed, attached", no.name);
	snprintf(want, sizeof(want), "%d|DENIED uid %u (gid %u) is not allowed", AMORA_EDENIED, no.uid,
		 no.gid);
	cr_assert(strncmp(msg, want, strlen(want)) == 0, "refused user got: %s", msg);
	snprintf(want, sizeof(want), "|-DENIED uid %u (gid %u) is not allowed: amorad's allow-uid",
		 no.uid, no.gid);
	cr_assert(strstr(msg, want), "raw connection of a refused user got: %s", msg);
	cr_assert(proc_log_has(&D, "not allowed"));
}

/* Defect 9: with --allow-gid G, members of G get in, G a supplementary
 * group of theirs (SO_PEERGROUPS); socket 0660 and directory 0710, both
 * group G; others cannot even reach the socket. */
Test(access, allow_gid_lets_group_members_in)
{
	struct user member, other;
	char group[32], msg[1024];
	gid_t gid;
	int rc;

	need_root();
	make_group("g", group, sizeof(group), &gid);
	make_user(&member, "m", group);
	make_user(&other, "o", NULL);
	cr_assert_neq(member.gid, gid, "G must be a supplementary group of the member");
	proc_start(&D, "--shards", "2", "--memory", "64M", "--allow-gid", group, NULL);
	expect_mode(D.sock, 0660, gid);
	expect_mode(D.dir, 0710, gid);
	rc = as_user(&member, use_the_store, NULL, msg, sizeof(msg));
	cr_assert_eq(rc, 0, "member %s of %s: %s", member.name, group, msg);
	rc = as_user(&other, try_refused, NULL, msg, sizeof(msg));
	cr_assert_eq(rc, 1, "user %s, not in %s, attached", other.name, group);
	cr_assert(strstr(msg, "Permission denied"), "non-member got: %s", msg);
}

/* Nobody but the owner: socket 0600 in a directory 0700. */
Test(access, owner_only_by_default)
{
	proc_start(&D, "--shards", "1", "--memory", "64M", NULL);
	expect_mode(D.sock, 0600, (gid_t)-1);
	expect_mode(D.dir, 0700, (gid_t)-1);
}

/* ---------- connection limits ---------- */

/* Open raw connections (each answers PING) until refused or `*arg` are
 * open; report "n=COUNT|REFUSAL LINE". The connections stay open until
 * the child is let go. */
static int open_many(void *arg, char *msg, size_t n)
{
	int max = *(int *)arg, count = 0;
	char line[256] = "(none)";

	for (; count < max; count++) {
		int fd = raw_connect();

		if (fd < 0) {
			snprintf(line, sizeof(line), "connect: %s", strerror(-fd));
			break;
		}
		ping_line(fd, line, sizeof(line));
		if (strcmp(line, "+PONG") != 0) {
			close(fd);
			break;
		}
		snprintf(line, sizeof(line), "(none)");
	}
	snprintf(msg, n, "n=%d|%s", count, line);
	return 0;
}

/* Defect 8: one uid cannot take more than max-connections-per-uid, all
 * others together not more than max-connections, and the owner (root
 * here) still gets in, attach included, when others hold every one. */
Test(access, per_uid_limit_and_owner_reserve)
{
	struct user u1, u2;
	struct child c1, c2;
	char msg[1024], want[256], allow[80];
	int max = 30, fds[10];
	amora *db;

	need_root();
	make_user(&u1, "a", NULL);
	make_user(&u2, "b", NULL);
	snprintf(allow, sizeof(allow), "%s,%s", u1.name, u2.name);
	proc_start(&D, "--shards", "2", "--memory", "64M", "--max-clients", "2", "--max-connections",
		   "6", "--max-connections-per-uid", "4", "--allow-uid", allow, NULL);
	child_start(&c1, &u1, open_many, &max);
	child_result(&c1, msg, sizeof(msg));
	snprintf(want, sizeof(want), "n=4|-BUSY too many connections from uid %u: 4 open, "
		 "max-connections-per-uid is 4", u1.uid);
	cr_assert_str_eq(msg, want, "user %s: %s", u1.name, msg);
	child_start(&c2, &u2, open_many, &max);
	child_result(&c2, msg, sizeof(msg));
	cr_assert_str_eq(msg, "n=2|-BUSY too many connections: 6 open, max-connections is 6",
			 "user %s: %s", u2.name, msg);
	/* every connection others may have is taken: the owner still gets in */
	for (int i = 0; i < 10; i++) {
		fds[i] = raw_connect();
		cr_assert(fds[i] >= 0);
		cr_assert(raw_ping(fds[i]), "owner connection %d was refused", i);
	}
	cr_assert_eq(amora_open(D.sock, &db), AMORA_OK, "the owner cannot attach: %s",
		     amora_errmsg(db));
	cr_assert_eq(amora_set(db, "k", 1, "v", 1), AMORA_OK);
	amora_close(db);
	for (int i = 0; i < 10; i++)
		close(fds[i]);
	/* let the users go: their connections close, others may connect */
	child_end(&c1);
	child_end(&c2);
	max = 1;
	for (uint64_t t0 = proc_now_ms();; usleep(20000)) {
		as_user(&u2, open_many, &max, msg, sizeof(msg));
		if (strcmp(msg, "n=1|(none)") == 0)
			break;
		cr_assert(proc_now_ms() - t0 < 5000, "user %s stays refused: %s", u2.name, msg);
	}
}

/* Defect 8: a request begun but not completed closes its connection after
 * request-timeout-ms, whether nothing more comes or bytes trickle in;
 * idle connections, attached or not, are left alone. */
Test(access, unfinished_request_times_out)
{
	char line[256];
	int partial, trickle, idle;
	uint64_t t0;
	amora *db;

	proc_start(&D, "--shards", "1", "--memory", "64M", "--request-timeout-ms", "300", NULL);
	cr_assert_eq(amora_open(D.sock, &db), AMORA_OK);
	idle = raw_connect();
	partial = raw_connect();
	trickle = raw_connect();
	cr_assert(idle >= 0 && partial >= 0 && trickle >= 0);
	t0 = proc_now_ms();
	/* a complete PING, then half a request */
	static const char half[] = "PING\r\n*2\r\n$4\r\nPING\r\n$10\r\nabc";
	cr_assert_eq(send(partial, half, sizeof(half) - 1, 0), (ssize_t)sizeof(half) - 1);
	cr_assert_gt(read_line(partial, line, sizeof(line), 2000), 0);
	cr_assert_str_eq(line, "+PONG");
	/* a request sent one byte every 50 ms: the timer is per request */
	static const char slow[] = "*1\r\n$4\r\nPING\r\n";
	for (size_t i = 0; i < sizeof(slow) - 1 && proc_now_ms() - t0 < 1500; i++) {
		if (send(trickle, slow + i, 1, MSG_NOSIGNAL) != 1)
			break;
		usleep(50000);
	}
	cr_assert_gt(read_line(partial, line, sizeof(line), 5000), 0,
		     "the unfinished request was never timed out");
	cr_assert_geq(proc_now_ms() - t0, 250, "timed out too early");
	cr_assert_str_eq(line, "-ERR request not complete after 300 ms (request-timeout-ms); "
			 "closing the connection");
	cr_assert(hung_up(partial, 2000));
	cr_assert_gt(read_line(trickle, line, sizeof(line), 3000), 0,
		     "the trickled request was never timed out");
	cr_assert(strstr(line, "request-timeout-ms"), "%s", line);
	cr_assert(hung_up(trickle, 2000));
	/* well past the timeout: idle connections still work */
	usleep(400000);
	cr_assert(raw_ping(idle), "an idle connection was closed");
	cr_assert_eq(amora_set(db, "k", 1, "v", 1), AMORA_OK, "an idle attached client was cut: %s",
		     amora_errmsg(db));
	cr_assert_eq(amora_heartbeat(db), AMORA_OK, "%s", amora_errmsg(db));
	amora_close(db);
	close(idle);
	close(partial);
	close(trickle);
}

static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Defect 8: connections parked on 15 MiB unfinished requests cannot take
 * amorad's memory past input-buffer-budget; the connection that would
 * pass it is closed with an error naming it, and the memory comes back
 * when the requests go. */
Test(access, input_buffer_budget_bounds_memory)
{
	enum { CONNS = 12, BULK = 7680 << 10 };
	static const char head[] = "*3\r\n$3\r\nSET\r\n$7864320\r\n";
	static const char mid[] = "\r\n$7864320\r\n";
	size_t total = sizeof(head) - 1 + BULK + sizeof(mid) - 1 + BULK - 4096; /* never complete */
	char *req = malloc(total), line[512], refusal[512] = "";
	size_t sent[CONNS] = { 0 };
	int fd[CONNS], open_n = CONNS, refused = 0;
	long before, peak, after;
	amora *db;

	proc_start(&D, "--shards", "1", "--memory", "64M", "--input-buffer-budget", "32M",
		   "--request-timeout-ms", "60000", NULL);
	memset(req, 'x', total);
	memcpy(req, head, sizeof(head) - 1);
	memcpy(req + sizeof(head) - 1 + BULK, mid, sizeof(mid) - 1);
	before = rss_kib(D.pid);
	for (int i = 0; i < CONNS; i++) {
		fd[i] = raw_connect();
		cr_assert(fd[i] >= 0);
	}
	/* round robin, each as far as the socket takes it */
	while (open_n > 0) {
		struct pollfd p[CONNS];

		for (int i = 0; i < CONNS; i++)
			p[i] = (struct pollfd){ .fd = sent[i] < total ? fd[i] : -1, .events = POLLOUT };
		cr_assert_gt(poll(p, CONNS, 10000), 0, "amorad stopped reading");
		for (int i = 0; i < CONNS; i++) {
			ssize_t k;

			if (p[i].fd < 0 || !(p[i].revents & (POLLOUT | POLLERR | POLLHUP)))
				continue;
			k = send(fd[i], req + sent[i], total - sent[i] < 1u << 20 ? total - sent[i] : 1u << 20,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (k > 0)
				sent[i] += (size_t)k;
			if (k > 0 && sent[i] < total)
				continue;
			if (k < 0 && errno == EAGAIN)
				continue;
			if (sent[i] < total) {
				/* amorad closed it: why? */
				refused++;
				sent[i] = total;
				if (read_line(fd[i], line, sizeof(line), 2000) > 0 && !refusal[0])
					snprintf(refusal, sizeof(refusal), "%s", line);
			}
			open_n--;
		}
	}
	usleep(300000); /* amorad reads what is left in the sockets */
	peak = rss_kib(D.pid);
	cr_assert_gt(refused, 0, "no connection was refused: RSS %ld -> %ld KiB", before, peak);
	cr_assert(strncmp(refusal, "-ERR amorad's input buffers are full", 36) == 0 &&
		  strstr(refusal, "input-buffer-budget is 32 MiB"), "refusal: '%s'", refusal);
	cr_assert_lt(peak - before, 48 << 10, "RSS %ld -> %ld KiB with a 32M budget", before, peak);
	/* amorad still serves, and gets its memory back once the peers go */
	cr_assert_eq(amora_open(D.sock, &db), AMORA_OK, "%s", amora_errmsg(db));
	amora_close(db);
	for (int i = 0; i < CONNS; i++)
		close(fd[i]);
	usleep(300000);
	after = rss_kib(D.pid);
	cr_assert_lt(after - before, 8 << 10, "RSS %ld KiB before, %ld parked, %ld after", before, peak,
		     after);
	cr_log_info("amorad RSS: %ld KiB at start, %ld with %d connections parked on 15 MiB requests "
		    "(%d refused), %ld after they left", before, peak, CONNS, refused, after);
	free(req);
}

/* ---------- readers that hold reclamation back ---------- */

static int put_n(amora *db, int i)
{
	char k[32], v[64];
	int kl = snprintf(k, sizeof(k), "o:%d", i % 10), vl = snprintf(v, sizeof(v), "value-%d", i);

	return amora_set(db, k, (size_t)kl, v, (size_t)vl);
}

/* Attach by hand; return the channel header (mapped read-write) and the
 * socket. Retries while all slots are taken (a slot of a client that just
 * left may still be closing). The channel is found by its magic among the
 * descriptors the reply carries. */
static struct shm_chan_hdr *raw_attach(int *sock)
{
	static const char attach[] = "*1\r\n$12\r\nAMORA.ATTACH\r\n";

	for (uint64_t t0 = proc_now_ms();; usleep(5000)) {
		char buf[512] = { 0 }, ctl[CMSG_SPACE(8 * sizeof(int))];
		struct iovec iov = { buf, sizeof(buf) - 1 };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
				      .msg_controllen = sizeof(ctl) };
		struct shm_chan_hdr *h = NULL;
		struct timeval tv = { 5, 0 };

		*sock = raw_connect();
		cr_assert(*sock >= 0);
		setsockopt(*sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		cr_assert_eq(send(*sock, attach, sizeof(attach) - 1, 0), (ssize_t)sizeof(attach) - 1);
		cr_assert_gt(recvmsg(*sock, &msg, 0), 0);
		if (strncmp(buf, "-BUSY", 5) == 0) {
			close(*sock);
			cr_assert(proc_now_ms() - t0 < 5000, "no free slot");
			continue;
		}
		cr_assert(buf[0] == '*', "attach reply: %s", buf);
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (int i = 0; i < k; i++) {
				int fd;
				void *p;

				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				p = mmap(NULL, SHM_CHAN_HDR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
				if (p != MAP_FAILED && ((struct shm_chan_hdr *)p)->magic == SHM_CHAN_MAGIC)
					h = p;
				else if (p != MAP_FAILED)
					munmap(p, SHM_CHAN_HDR_BYTES);
				close(fd);
			}
		}
		cr_assert_not_null(h, "no channel among the attach reply's descriptors");
		return h;
	}
}

/* Whether amorad hung up on sock (not waiting). */
static bool dropped(int sock)
{
	char buf[512];
	ssize_t k;

	while ((k = recv(sock, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		;
	return k == 0 || (k < 0 && errno == ECONNRESET);
}

/* Overwrite keys (the global epoch moves on) until amorad drops sock;
 * returns how long that took in ms. */
static uint64_t write_until_dropped(amora *good, int sock, uint64_t limit_ms, const char *what)
{
	uint64_t t0 = proc_now_ms();

	for (int i = 0; !dropped(sock); i++) {
		cr_assert_eq(put_n(good, i), AMORA_OK, "%s", amora_errmsg(good));
		cr_assert(proc_now_ms() - t0 < limit_ms, "%s was never cut off", what);
		usleep(1000);
	}
	return proc_now_ms() - t0;
}

static _Atomic bool toggling;

static void *toggle(void *arg)
{
	struct shm_chan_hdr *h = arg;

	for (uint64_t v = 0; atomic_load(&toggling); v++) {
		atomic_store(&h->epoch.epoch, 1 + (v & 1));
		usleep(1000);
	}
	return NULL;
}

/* Defect 5: a client writing 1, 2, 1, 2 into its epoch slot keeps it
 * behind the global epoch as surely as one that never leaves a read: cut
 * off after reader-timeout-ms. */
Test(access, toggling_reader_is_cut_off)
{
	struct shm_chan_hdr *h;
	pthread_t t;
	uint64_t ms;
	int sock;
	amora *good;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--reader-timeout-ms", "1000", NULL);
	cr_assert_eq(amora_open(D.sock, &good), AMORA_OK);
	h = raw_attach(&sock);
	atomic_store(&toggling, true);
	cr_assert_eq(pthread_create(&t, NULL, toggle, h), 0);
	ms = write_until_dropped(good, sock, 12000, "the toggling reader");
	atomic_store(&toggling, false);
	pthread_join(t, NULL);
	cr_assert_geq(ms, 900, "cut off after %llu ms, before reader-timeout-ms", (unsigned long long)ms);
	cr_assert(proc_log_has(&D, "stayed in one read section"));
	/* the others go on */
	for (int i = 0; i < 100; i++)
		cr_assert_eq(put_n(good, i), AMORA_OK, "%s", amora_errmsg(good));
	amora_close(good);
	close(sock);
}

/* Defect 5: the next client of a slot whose reader was cut off starts with
 * a clean watch: behind from its first moment, it still gets the whole
 * reader-timeout-ms. */
Test(access, next_client_of_a_slot_starts_clean)
{
	struct shm_chan_hdr *a, *b;
	uint64_t ms;
	int sa, sb;
	amora *good;

	proc_start(&D, "--shards", "2", "--memory", "64M", "--max-clients", "2", "--reader-timeout-ms",
		   "1000", NULL);
	for (uint64_t t0 = proc_now_ms(); amora_open(D.sock, &good) != AMORA_OK; usleep(5000))
		cr_assert(proc_now_ms() - t0 < 5000, "no free slot");
	a = raw_attach(&sa);
	atomic_store(&a->epoch.epoch, 1); /* enter a read section, never leave */
	write_until_dropped(good, sa, 12000, "the stuck reader");
	b = raw_attach(&sb); /* the only free slot: a's */
	atomic_store(&b->epoch.epoch, 1);
	cr_assert_eq(b->slot, a->slot);
	ms = write_until_dropped(good, sb, 12000, "the second stuck reader");
	cr_assert_geq(ms, 800, "the next client of the slot was cut off after %llu ms",
		      (unsigned long long)ms);
	amora_close(good);
	close(sa);
	close(sb);
}

static void copy_out(void *arg, size_t i, const void *val, size_t vlen)
{
	(void)i;
	memcpy(arg, val, vlen);
}

/* A reader that spends nearly all its time inside reads (an amora_mget of
 * 512 x 1 MiB is one read section of tens of ms) while a writer makes the
 * shard bump the global epoch every few ms is behind at almost every tick,
 * yet never inside one read for long: it is never cut off. (A rule that
 * cut off a slot seen behind at every tick for the limit, whatever it
 * wrote, would: tried, it cut this reader off within 300 ms.) */
Test(access, busy_reader_is_never_cut_off)
{
	enum { N = 512 };
	char *big = malloc(AMORA_VALUE_MAX);
	const void *keys[N];
	size_t klens[N];
	pid_t reader;
	int status;
	amora *good;

	proc_start(&D, "--shards", "1", "--memory", "64M", "--reader-timeout-ms", "300", NULL);
	cr_assert_eq(amora_open(D.sock, &good), AMORA_OK);
	memset(big, 'b', AMORA_VALUE_MAX);
	cr_assert_eq(amora_set(good, "big", 3, big, AMORA_VALUE_MAX), AMORA_OK);
	for (int i = 0; i < N; i++) {
		keys[i] = "big";
		klens[i] = 3;
	}
	reader = fork();
	if (reader == 0) {
		amora *db;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (amora_open(D.sock, &db) != AMORA_OK)
			_exit(10);
		for (uint64_t t0 = proc_now_ms(); proc_now_ms() - t0 < 2000;)
			if (amora_mget(db, N, keys, klens, copy_out, big) != N)
				_exit(11);
		_exit(amora_heartbeat(db) == AMORA_OK && amora_close(db) == AMORA_OK ? 0 : 12);
	}
	for (int i = 0; waitpid(reader, &status, WNOHANG) == 0; i++)
		cr_assert_eq(put_n(good, i), AMORA_OK, "%s", amora_errmsg(good));
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the reader failed: %d", status);
	cr_assert(!proc_log_has(&D, "stayed in one read section"), "a busy reader was cut off");
	amora_close(good);
	free(big);
}
