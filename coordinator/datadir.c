/*
 * datadir.c — the data directory's format file: which shard count wrote it.
 *
 * A key lives in the log of the shard its hash picks among `--shards`
 * shards (shm_shard_of). Started with another count, amorad would read
 * each log into a shard that no longer owns its keys and skip the logs past
 * the count: keys would vanish from reads, and writes would then fork
 * them. So the first amorad that logs into a directory records the count,
 * and every later one checks it before any shard starts.
 *
 * The placement rule is kept the same way: hash tags (shm_place) pick the
 * shard by a tag's inside, which for a key written before they existed may
 * be another shard than its whole-key hash picked; so a directory keeps
 * the rule its logs were written with.
 *
 * File `amora.format`, text, one "name value" per line:
 *
 *   amora-data 1        the format of this file (and of the directory)
 *   shards 64           the shard count the logs were written with
 *   placement tags      "tags" (SHM_PLACE_TAGS) or "key" (SHM_PLACE_KEY,
 *                       also when the line is missing)
 *
 * Unknown lines are refused (a newer amorad wrote the directory). Written
 * to amora.format.tmp, fsynced, renamed, directory fsynced: a crash leaves
 * the old file or the new one. A new directory gets hash tags. One that
 * has shard-NN logs but no format file (made before the file existed) is
 * adopted when its shard directories are exactly shard-00 ..
 * shard-(count-1), with placement "key" (hash tags off: its keys stay
 * where they are); otherwise refused. With --sync none nothing is logged,
 * read or recorded (hash tags on).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/amorad.h"
#include "shardd/log.h"

#define FORMAT_FILE "amora.format"
#define FORMAT_VERSION 1

static const char *const place_names[] = { [SHM_PLACE_KEY] = "key", [SHM_PLACE_TAGS] = "tags" };

/* Whether `line` is "placement NAME\n"; *placement gets it (-1: a name
 * this amorad does not know). */
static bool placement_line(const char *line, int *placement)
{
	char name[16];
	int used = 0;

	if (sscanf(line, "placement %15s%n", name, &used) != 1 || line[used] != '\n')
		return false;
	*placement = -1;
	for (int i = 0; i < 2; i++)
		if (strcmp(name, place_names[i]) == 0)
			*placement = i;
	return true;
}

/* The shard count `path` records: > 0, 0 if there is no such file, -1 on
 * an error (err says which); *placement its placement. */
static long format_read(const char *path, uint32_t *placement, char *err, size_t errlen)
{
	char line[128];
	long version = -1, shards = -1;
	int place = SHM_PLACE_KEY;
	bool unknown = false; /* a line only a newer format has */
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char name[32];
		long v = 0;
		int used = 0;
		bool known = sscanf(line, "%31s", name) == 1 &&
			     (strcmp(name, "amora-data") == 0 || strcmp(name, "shards") == 0);

		if (placement_line(line, &place)) {
			unknown |= place < 0;
			continue;
		}
		if (!known) {
			unknown = true;
			continue;
		}
		if (sscanf(line, "%31s %ld%n", name, &v, &used) != 2 || line[used] != '\n' ||
		    v <= 0) {
			snprintf(err, errlen, "%s: cannot parse the line \"%.*s\"", path,
				 (int)strcspn(line, "\n"), line);
			fclose(f);
			return -1;
		}
		*(strcmp(name, "shards") == 0 ? &shards : &version) = v;
	}
	fclose(f);
	if (unknown || version != FORMAT_VERSION || shards <= 0) {
		snprintf(err, errlen, "%s is not a format this amorad knows (amora-data %d with a shard "
			 "count and a placement): was the directory written by a newer amorad?", path,
			 FORMAT_VERSION);
		return -1;
	}
	*placement = (uint32_t)place;
	return shards;
}

/* Write the format file for `shards` (temp name, fsync, rename, fsync of
 * the directory). */
static int format_write(const char *dir, uint32_t shards, uint32_t placement, char *err,
			size_t errlen)
{
	char tmp[PATH_MAX + 32], path[PATH_MAX + 32], text[80];
	int n = snprintf(text, sizeof(text), "amora-data %d\nshards %u\nplacement %s\n", FORMAT_VERSION,
			 shards, place_names[placement]);
	int fd, dfd, ok;

	snprintf(tmp, sizeof(tmp), "%s/" FORMAT_FILE ".tmp", dir);
	snprintf(path, sizeof(path), "%s/" FORMAT_FILE, dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ok = fd >= 0 && write(fd, text, (size_t)n) == n && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	if (!ok || rename(tmp, path) != 0) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		snprintf(err, errlen, "cannot sync the directory %s: %s", dir, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	close(dfd);
	return 0;
}

/* The shard directories (shard-NN) in `dir`: how many, and the highest
 * index + 1 (both 0 without any). */
static int shard_dirs(const char *dir, uint32_t *count, uint32_t *end, char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	*count = *end = 0;
	if (d == NULL) {
		snprintf(err, errlen, "cannot list %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		const char *p = e->d_name;
		char *stop;
		unsigned long i;

		if (strncmp(p, "shard-", 6) != 0 || !isdigit((unsigned char)p[6]))
			continue;
		i = strtoul(p + 6, &stop, 10);
		if (*stop != '\0' || i >= SHM_MAX_SHARDS)
			continue;
		(*count)++;
		if (i + 1 > *end)
			*end = (uint32_t)i + 1;
	}
	closedir(d);
	return 0;
}

int datadir_check(const char *dir, uint32_t shards, enum wal_sync_mode mode, uint32_t *placement,
		  char *err, size_t errlen)
{
	char path[PATH_MAX + 32];
	uint32_t count, end;
	long recorded;

	if (mode == WAL_SYNC_NONE)
		return 0;
	snprintf(path, sizeof(path), "%s/" FORMAT_FILE, dir);
	recorded = format_read(path, placement, err, errlen);
	if (recorded < 0)
		return -1;
	if (recorded > 0 && (uint32_t)recorded != shards) {
		snprintf(err, errlen, "the data directory %s holds the logs of %ld shards (%s); amorad "
			 "was started with --shards %u: start it with --shards %ld (keys are placed by "
			 "hash, so a store cannot change its shard count)", dir, recorded, path, shards,
			 recorded);
		return -1;
	}
	if (recorded > 0)
		return 0;
	if (shard_dirs(dir, &count, &end, err, errlen) != 0)
		return -1;
	if (count != 0 && (count != shards || end != shards)) {
		snprintf(err, errlen, "the data directory %s holds %u shard directories (up to "
			 "shard-%02u) and no %s; amorad was started with --shards %u: start it with "
			 "the shard count that wrote them (keys are placed by hash)", dir, count,
			 end - 1, FORMAT_FILE, shards);
		return -1;
	}
	*placement = count != 0 ? SHM_PLACE_KEY : SHM_PLACE_TAGS;
	if (count != 0)
		log_info("data directory %s: recording its %u shards in %s; it was written before hash "
			 "tags, so its keys stay placed by their whole key", dir, shards, FORMAT_FILE);
	return format_write(dir, shards, *placement, err, errlen);
}
