/*
 * usage.c — CPU time and memfd size of processes (perf/lib/usage.h).
 */
#include "perf/lib/usage.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "perf/lib/fail.h"

/* Process pid's CPU time in ns, or -1. */
static int64_t usage_cpu_ns(pid_t pid)
{
	clockid_t id;
	struct timespec ts;

	if (clock_getcpuclockid(pid, &id) != 0 || clock_gettime(id, &ts) != 0)
		return -1;
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The parent of process pid (field 4 of /proc/pid/stat, after the
 * command name in parentheses, which may hold any byte), or -1. */
static pid_t usage_ppid(const char *pid)
{
	char path[64], buf[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *c = strrchr(buf, ')');
	int ppid;
	if (!c || sscanf(c + 1, " %*c %d", &ppid) != 1)
		return -1;
	return ppid;
}

/* s->kid[] and their times; nkids -1 on any failure. */
static void usage_kids(struct usage_snap *s)
{
	DIR *d = opendir("/proc");
	struct dirent *e;

	s->nkids = -1;
	if (!d)
		return;
	s->nkids = 0;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9' || usage_ppid(e->d_name) != s->server)
			continue;
		if (s->nkids == USAGE_MAX_KIDS) {
			s->nkids = -1;
			break;
		}
		pid_t p = (pid_t)atoi(e->d_name);
		int64_t ns = usage_cpu_ns(p);
		if (ns < 0) { /* exited between the scan and the read */
			s->nkids = -1;
			break;
		}
		s->kid[s->nkids] = p;
		s->kid_ns[s->nkids++] = (uint64_t)ns;
	}
	closedir(d);
}

static void usage_self(struct usage_snap *s)
{
	int64_t self = usage_cpu_ns(0);

	if (self < 0)
		bench_die("clock_gettime(CLOCK_PROCESS_CPUTIME_ID): %s", strerror(errno));
	s->self_ns = (uint64_t)self;
}

static void usage_server(struct usage_snap *s, pid_t server)
{
	s->server = server > 0 ? server : 0;
	s->server_ns = -1;
	s->nkids = -1;
	if (s->server) {
		s->server_ns = usage_cpu_ns(s->server);
		usage_kids(s);
	}
}

void usage_snap_before(struct usage_snap *s, pid_t server)
{
	usage_server(s, server);
	usage_self(s);
}

void usage_snap_after(struct usage_snap *s, pid_t server)
{
	usage_self(s);
	usage_server(s, server);
}

/* The children's time between a and b, or -1 unless both list the same
 * processes. */
static double usage_kids_ns(const struct usage_snap *a, const struct usage_snap *b)
{
	double sum = 0;

	if (a->nkids < 0 || b->nkids != a->nkids)
		return -1;
	for (int i = 0; i < a->nkids; i++) {
		int j = 0;
		while (j < b->nkids && b->kid[j] != a->kid[i])
			j++;
		if (j == b->nkids || b->kid_ns[j] < a->kid_ns[i])
			return -1;
		sum += (double)(b->kid_ns[j] - a->kid_ns[i]);
	}
	return sum;
}

struct usage_cpu usage_cpu_per_op(const struct usage_snap *a, const struct usage_snap *b, uint64_t ops)
{
	struct usage_cpu u = { -1, -1, -1 };
	double n = ops ? (double)ops : 1;

	u.self = (double)(b->self_ns - a->self_ns) / n;
	if (a->server && a->server == b->server) {
		if (a->server_ns >= 0 && b->server_ns >= a->server_ns)
			u.server = (double)(b->server_ns - a->server_ns) / n;
		double k = usage_kids_ns(a, b);
		if (k >= 0)
			u.kids = k / n;
	}
	return u;
}

double usage_memfd_bytes(pid_t pid, const char *name)
{
	char dir[64], path[PATH_MAX], link[PATH_MAX], want[256];
	DIR *d;
	struct dirent *e;
	double bytes = -1;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	snprintf(want, sizeof(want), "/memfd:%s (deleted)", name);
	if (!(d = opendir(dir)))
		return -1;
	while ((e = readdir(d))) {
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		if (strcmp(link, want) == 0 && stat(path, &st) == 0) {
			bytes = (double)st.st_blocks * 512;
			break;
		}
	}
	closedir(d);
	return bytes;
}
