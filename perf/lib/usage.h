/*
 * usage.h — what processes use while a benchmark runs: CPU time of this
 * process, of a server and of the server's children (amorad and its shard
 * processes), and the RAM of a memfd a server holds (amorad's data
 * segment).
 *
 * CPU time is each process's CPU clock (clock_getcpuclockid +
 * clock_gettime): the kernel's sum_exec_runtime, the figure in field 1 of
 * /proc/PID/schedstat, summed over all the process's threads, the live and
 * the exited ones, in ns and up to date at the read. The children are the
 * processes whose parent (field 4 of /proc/PID/stat) is the server, found
 * by a scan of /proc at each snapshot.
 */
#ifndef AMORA_PERF_USAGE_H
#define AMORA_PERF_USAGE_H

#include <stdint.h>
#include <sys/types.h>

#define USAGE_MAX_KIDS 1024 /* amorad's --shards is at most 1024 */

/* CPU times at one moment. */
struct usage_snap {
	uint64_t self_ns;   /* this process */
	pid_t server;       /* 0: none (then the fields below are unused) */
	int64_t server_ns;  /* the server itself; -1: could not be read */
	int nkids;          /* its children; -1: could not be listed or read */
	pid_t kid[USAGE_MAX_KIDS];
	uint64_t kid_ns[USAGE_MAX_KIDS];
};

/* CPU per op between two snapshots, in ns; -1 where it is unknown: no
 * server, a time that could not be read, or (kids) not the same children
 * in both snapshots (one restarted or exited meanwhile). */
struct usage_cpu {
	double self, server, kids;
};

/* Take a snapshot of this process and (server > 0) of server and its
 * children into *s. Dies when this process's own clock cannot be read.
 * The scan of /proc costs this process some CPU (about 10 us a process
 * on the machine): the _before snapshot reads this process's clock last,
 * the _after one first, so that cost falls outside what they measure. */
void usage_snap_before(struct usage_snap *s, pid_t server);
void usage_snap_after(struct usage_snap *s, pid_t server);

/* What happened between a and b (taken in that order, same server) per
 * op of `ops`. */
struct usage_cpu usage_cpu_per_op(const struct usage_snap *a, const struct usage_snap *b, uint64_t ops);

/* Bytes of RAM (or swap) the shared-memory file named `name` (a memfd:
 * /proc/PID/fd/N links to "/memfd:NAME (deleted)") held by process pid
 * takes: its allocated blocks, st_blocks * 512, which for a memfd counts
 * the pages ever written (or read) and not given back, whoever touched
 * them. -1 when pid holds no such file or it cannot be read. */
double usage_memfd_bytes(pid_t pid, const char *name);

#endif
