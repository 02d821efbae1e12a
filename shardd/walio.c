/*
 * walio.c — the WAL's file-I/O layer and its fault plan (see walio.h).
 *
 * The plan lives in process globals: a shard is one single-threaded
 * process, and a test installs the plan in the process that writes. Each
 * call of a kind bumps its counter first, then asks the plan whether this
 * call is the one to fail, so "the Nth write" means the same thing whether
 * or not earlier calls failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#include "shardd/walio.h"

enum rule_kind { RULE_WRITE, RULE_SYNC };

struct rule {
	enum rule_kind kind;
	uint64_t nth;
	int err;        /* positive errno to report */
	int torn;       /* write only: write `keep` bytes before failing */
	size_t keep;
	int drop;       /* write only: write nothing, report success */
	unsigned slow_ms; /* > 0: sleep this long, then do the call (no error) */
	int fired;
};

static struct rule plan[WALIO_MAX_RULES];
static int plan_len;
static struct walio_stats stats;
static int env_done;

/* ---- plan parsing ---- */

static int parse_u64(const char *s, char **end, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, end, 10);
	if (errno != 0)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_err(const char *s, int *err)
{
	if (strcmp(s, "eio") == 0)
		*err = EIO;
	else if (strcmp(s, "enospc") == 0)
		*err = ENOSPC;
	else
		return -EINVAL;
	return 0;
}

/* One rule, "kind:N:what[:K]", in a NUL-terminated copy. */
static int parse_rule(char *s, struct rule *r)
{
	char *end;
	uint64_t keep;

	memset(r, 0, sizeof(*r));
	if (strncmp(s, "write:", 6) == 0) {
		r->kind = RULE_WRITE;
		s += 6;
	} else if (strncmp(s, "sync:", 5) == 0) {
		r->kind = RULE_SYNC;
		s += 5;
	} else {
		return -EINVAL;
	}
	if (parse_u64(s, &end, &r->nth) < 0 || r->nth == 0 || *end != ':')
		return -EINVAL;
	s = end + 1;
	if (strncmp(s, "slow:", 5) == 0) {
		uint64_t ms;

		if (parse_u64(s + 5, &end, &ms) < 0 || *end != '\0' || ms == 0 || ms > 60000)
			return -EINVAL;
		r->slow_ms = (unsigned)ms;
		return 0;
	}
	if (r->kind == RULE_WRITE && strcmp(s, "drop") == 0) {
		r->drop = 1;
		return 0;
	}
	if (r->kind == RULE_WRITE && strncmp(s, "torn:", 5) == 0) {
		if (parse_u64(s + 5, &end, &keep) < 0 || *end != '\0')
			return -EINVAL;
		r->torn = 1;
		r->keep = (size_t)keep;
		r->err = EIO;
		return 0;
	}
	return parse_err(s, &r->err);
}

int walio_fault_set(const char *spec)
{
	struct rule rules[WALIO_MAX_RULES];
	char buf[256];
	int n = 0;

	if (spec != NULL && strlen(spec) >= sizeof(buf))
		return -EINVAL;
	if (spec != NULL && *spec != '\0') {
		strcpy(buf, spec);
		/* Split by hand: strtok would accept empty rules ("a,,b", "a,"). */
		for (char *tok = buf, *comma; tok != NULL; tok = comma ? comma + 1 : NULL) {
			comma = strchr(tok, ',');
			if (comma != NULL)
				*comma = '\0';
			if (n == WALIO_MAX_RULES || parse_rule(tok, &rules[n]) < 0)
				return -EINVAL;
			n++;
		}
	}
	memcpy(plan, rules, sizeof(rules[0]) * (size_t)n);
	plan_len = n;
	memset(&stats, 0, sizeof(stats));
	return 0;
}

void walio_fault_clear(void)
{
	walio_fault_set(NULL);
}

int walio_fault_from_env(void)
{
	const char *spec;

	if (env_done)
		return 0;
	spec = getenv(WALIO_ENV);
	if (spec != NULL && walio_fault_set(spec) < 0)
		return -EINVAL;
	env_done = 1;
	return 0;
}

void walio_stats(struct walio_stats *out)
{
	*out = stats;
}

/* The rule that fires for call number `count` of `kind`, or NULL. */
static struct rule *plan_match(enum rule_kind kind, uint64_t count)
{
	for (int i = 0; i < plan_len; i++) {
		struct rule *r = &plan[i];
		if (!r->fired && r->kind == kind && r->nth == count) {
			r->fired = 1;
			stats.faults++;
			return r;
		}
	}
	return NULL;
}

/* ---- the calls ---- */

/* A slow rule: the call waits, then goes on as if no rule fired. */
static bool plan_slow(struct rule *r)
{
	struct timespec ts;

	if (r == NULL || r->slow_ms == 0)
		return false;
	ts.tv_sec = r->slow_ms / 1000;
	ts.tv_nsec = (long)(r->slow_ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	return true;
}

static int write_all(int fd, const char *p, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* no progress: never loop forever */
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int walio_pwrite(int fd, const void *buf, size_t len, off_t off)
{
	struct rule *r = plan_match(RULE_WRITE, ++stats.writes);
	int rc;

	if (r == NULL || plan_slow(r))
		return write_all(fd, buf, len, off);
	if (r->drop)
		return 0;
	if (!r->torn)
		return -r->err;
	rc = write_all(fd, buf, r->keep < len ? r->keep : len, off);
	return rc < 0 ? rc : -r->err;
}

static int sync_fault(void)
{
	struct rule *r = plan_match(RULE_SYNC, ++stats.syncs);

	return r != NULL && !plan_slow(r) ? -r->err : 0;
}

int walio_datasync(int fd)
{
	int rc = sync_fault();

	if (rc < 0)
		return rc;
	return fdatasync(fd) < 0 ? -errno : 0;
}

int walio_fsync_dir(int dirfd)
{
	int rc = sync_fault();

	if (rc < 0)
		return rc;
	return fsync(dirfd) < 0 ? -errno : 0;
}

int walio_truncate(int fd, off_t len)
{
	while (ftruncate(fd, len) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

int walio_prealloc(int fd, off_t len)
{
	while (fallocate(fd, 0, 0, len) < 0) {
		if (errno == EINTR)
			continue;
		return errno == ENOSYS ? -EOPNOTSUPP : -errno;
	}
	return 0;
}
