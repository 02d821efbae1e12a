/*
 * server.h — the amorad amora-bench runs, one at a time, on
 * tests/daemon.h: started with the benchmark's options, attached to with
 * a short poll, stopped with SIGTERM and required to exit 0. Every
 * failure dies (perf/lib/fail.h) after showing the end of amorad's log.
 */
#ifndef AMORA_PERF_SERVER_H
#define AMORA_PERF_SERVER_H

#include <stdint.h>
#include <sys/types.h>

#include "libclient/amora.h"

/* Which amorad to run: $AMORAD, else the build's (DAEMON_AMORAD, from
 * the repository root), else ../amorad next to this program; made
 * absolute. Dies when it is not executable. Returns the path (static). */
const char *server_find(void);

/* Options for every later start: --memory (not NULL), --shards (NULL:
 * amorad's default); logs go to log_dir/amorad-<k>.log, k counting the
 * starts. The strings must outlive the program's use of the server. */
void server_config(const char *memory, const char *shards, const char *log_dir);

/* $AMORA_SORTED_INDEX (on or off; default on, amorad's default), passed
 * to every amorad as --sorted-index; dies on another value. */
const char *server_sorted_index(void);

/* Starts amorad --data-dir dir --sync sync_mode (dir exists), its index
 * as server_sorted_index() says; does not wait for it. */
void server_start(const char *dir, const char *sync_mode);

/* As server_start with --sorted-index sorted_index ("on" or "off")
 * whatever $AMORA_SORTED_INDEX says (amora-bench's index-off rows). */
void server_start_index(const char *dir, const char *sync_mode, const char *sorted_index);

/* Retries amora_open on the running amorad's socket every poll_ns, up to
 * 10 s; dies if amorad exits or the time runs out. */
amora *server_open(uint64_t poll_ns);

/* The running amorad's pid, 0 when none runs. */
pid_t server_pid(void);

/* Dies if the running amorad has exited (it never should on its own). */
void server_check(void);

/* SIGTERM, wait up to 30 s, die unless it exited 0. Returns the time
 * that took in ms. */
double server_stop(void);

/* For the exit path: SIGTERM, 10 s, then SIGKILL; nothing when none
 * runs. */
void server_kill(void);

/* For the main process's failure report: whether amorad had exited
 * meanwhile (and how), and the end of its log. */
void server_explain(void);

#endif
