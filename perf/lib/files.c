/*
 * files.c — temp dirs, du, rm -r and log tails (perf/lib/files.h).
 */
#include "perf/lib/files.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "perf/lib/fail.h"

int files_tmpdir(char *out, size_t cap, const char *base, const char *prefix)
{
	int n = snprintf(out, cap, "%s/%s.XXXXXX", base, prefix);

	if (n < 0 || (size_t)n >= cap) {
		out[0] = 0;
		errno = ENAMETOOLONG;
		return -1;
	}
	if (!mkdtemp(out)) {
		int e = errno;

		out[0] = 0;
		errno = e;
		return -1;
	}
	return 0;
}

void files_mkdir(const char *path)
{
	if (mkdir(path, 0700) != 0)
		bench_die("mkdir %s: %s", path, strerror(errno));
}

static int files_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	remove(p);
	return 0;
}

void files_rm_tree(const char *path)
{
	nftw(path, files_rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

/* nftw passes no context: the sum of the walk in progress. */
static uint64_t files_du_sum;

static int files_du_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)p, (void)ftw;
	if (flag == FTW_F)
		files_du_sum += (uint64_t)sb->st_blocks * 512;
	return 0;
}

uint64_t files_du(const char *path)
{
	files_du_sum = 0;
	nftw(path, files_du_one, 32, FTW_PHYS);
	return files_du_sum;
}

void files_log_tail(const char *path, int lines, FILE *to)
{
	static char buf[1 << 16];
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	long sz = ftell(f), off = sz > (long)sizeof(buf) - 1 ? sz - (long)sizeof(buf) + 1 : 0;
	fseek(f, off, SEEK_SET);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = buf + n;
	int seen = 0;
	while (p > buf && seen <= lines)
		if (*--p == '\n')
			seen++;
	if (*p == '\n')
		p++;
	fputs(p, to);
}
