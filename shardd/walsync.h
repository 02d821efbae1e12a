/*
 * walsync.h — the WAL's sync modes and their names: the one home of what
 * the shards' log (wal.h) and amorad's options, INFO and logs (coordinator/)
 * both spell. Nothing else of the WAL comes with it.
 *
 *   always    fdatasync before a write is acknowledged (group commit);
 *   periodic  acknowledged after write(2); fdatasync at most every
 *             --sync-interval-ms (the default);
 *   none      no log at all: nothing survives a shard's restart.
 */
#ifndef AMORA_WALSYNC_H
#define AMORA_WALSYNC_H

#include <string.h>

enum wal_sync_mode { WAL_SYNC_ALWAYS = 0, WAL_SYNC_PERIODIC = 1, WAL_SYNC_NONE = 2 };

#define WAL_SYNC_NAMES { "always", "periodic", "none" }

/* The name of a sync mode as options, INFO and logs spell it; "unknown"
 * for a value that is none of them. */
static inline const char *wal_sync_name(enum wal_sync_mode m)
{
	static const char *const names[] = WAL_SYNC_NAMES;

	return (unsigned)m < 3 ? names[m] : "unknown";
}

/* The mode a name spells, or -1 for a name that is none of them. */
static inline int wal_sync_parse(const char *name)
{
	static const char *const names[] = WAL_SYNC_NAMES;

	for (int m = 0; m < 3; m++)
		if (strcmp(name, names[m]) == 0)
			return m;
	return -1;
}

#endif
