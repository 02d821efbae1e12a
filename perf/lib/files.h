/*
 * files.h — the files a benchmark makes and leaves: temp dirs, their
 * size on disk, their removal, and the end of a log.
 */
#ifndef AMORA_PERF_FILES_H
#define AMORA_PERF_FILES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Creates a fresh dir "<base>/<prefix>.XXXXXX" (mode 0700) and puts its
 * path in out. Returns 0, or -1 with errno (ENAMETOOLONG when it does not
 * fit in cap) and out = "". */
int files_tmpdir(char *out, size_t cap, const char *base, const char *prefix);

/* mkdir(path, 0700), or die. */
void files_mkdir(const char *path);

/* Removes path and everything below it; errors are ignored (best effort,
 * also from a signal handler's cleanup). Does not follow links. */
void files_rm_tree(const char *path);

/* Bytes the regular files below path take on disk (st_blocks * 512). */
uint64_t files_du(const char *path);

/* Writes the last `lines` lines of the file at path (of its last 64 KiB)
 * to `to`; nothing when it cannot be read. */
void files_log_tail(const char *path, int lines, FILE *to);

#endif
