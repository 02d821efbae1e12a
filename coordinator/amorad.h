/*
 * amorad.h — the coordinator's state, and what main.c calls of its parts:
 *
 *   main.c       start-up (options, lock file, shared memory) and the event
 *                loop (loop.c: a handler per descriptor, a tick);
 *   supervise.c  the shard processes: fork, restart with backoff, stop;
 *   wakeups.c    fast wake-ups of idle CPUs while writes flow (PM QoS);
 *   listen.c, admit.c, server.c, commands.c, slots.c
 *                the control socket (server.h): who connects, RESP
 *                commands, attaching clients, noticing their death and
 *                recycling their slots.
 *
 * amorad is single-threaded (shards must be forked from the thread that
 * lives as long as amorad: PR_SET_PDEATHSIG fires when the parent *thread*
 * exits) and holds no data of its own.
 *
 * Errors: a function here that can fail returns 0 or -1 and writes one
 * sentence naming the cause into (err, errlen); the caller reports it
 * (DESIGN.md §11).
 */
#ifndef AMORA_AMORAD_H
#define AMORA_AMORAD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "coordinator/config.h"
#include "coordinator/loop.h"
#include "coordinator/resp.h"
#include "shardd/engine.h"
#include "shm/clock.h"

#define AMORAD_TICK_MS 20
#define AMORAD_STOP_TIMEOUT_MS 30000

struct shardproc {
	pid_t pid;              /* 0: not running */
	uint64_t started_ns;
	uint64_t restart_at_ns; /* when to fork again (pid == 0, not failed) */
	uint32_t backoff_ms;
	bool failed;            /* stopped for good (shm_shard.cause says why): not restarted */
};

struct conn; /* server.h */

/* The fast wake-up request (wakeups.c). */
struct wake_state {
	int fd;            /* /dev/cpu_dma_latency, -1: none */
	bool held;         /* the request bounds wake-ups now */
	uint64_t requests; /* the shards' answered requests at the last tick */
	uint64_t last_ns;  /* that tick */
	uint64_t busy_ns;  /* the last tick that saw the busy rate */
};

/* What amorad knows of one client slot's epoch slot, to cut off a reader
 * that holds every shard's reclamation (slots.c, cut_stuck_reader). */
struct reader_watch {
	uint32_t gen;       /* the attach generation this is about */
	uint64_t bar;       /* global epoch when the slot was first seen behind;
			     * a read section entered later has epoch >= bar */
	uint64_t since_ns;  /* when; 0: not behind */
};

struct amorad {
	struct amorad_config cfg; /* all of it; e.cfg holds what the shards need */
	struct engine e;
	struct loop loop;
	struct loop_fd listener;  /* the control socket; proc NULL: not listening */
	struct loop_fd sig;       /* the signalfd */
	int lock_fd;
	struct conn **conns;
	size_t nconns;
	struct conn *closed;  /* closed during this batch of events, not yet freed */
	uint32_t attached;
	struct shardproc *shards;
	bool listening;
	bool stopping;
	uint64_t stop_deadline_ns;
	uint64_t started_ns;
	struct resp_cmd *cmd; /* parse scratch (large) */
	struct reader_watch *watch; /* per client slot */
	uint64_t in_bytes;       /* input buffers of all connections (bytes mapped),
				  * at most cfg.input_budget */
	int spare_fd;            /* kept open to refuse a peer when out of fds */
	struct wake_state wake;
	int exit_code;
};

/* datadir.c */
/* Check (or, in a directory that has none, record) the shard count and
 * placement the data directory's logs were written with: amora.format.
 * Before any shard starts; nothing with --sync none. *placement gets the
 * directory's (enum shm_placement; unchanged with --sync none). Returns 0,
 * or -1 with the reason in err (another shard count; an unknown or
 * unreadable format file; shard directories that do not match --shards in
 * a directory without one). */
int datadir_check(const char *dir, uint32_t shards, enum wal_sync_mode mode, uint32_t *placement,
		  char *err, size_t errlen);

/* supervise.c */
/* Fork every shard. Returns 0, or -1 with the reason in err. */
int sup_start_all(struct amorad *a, char *err, size_t errlen);
void sup_reap(struct amorad *a);       /* SIGCHLD: collect exits, schedule restarts */
void sup_tick(struct amorad *a);       /* fork shards whose restart is due */
void sup_stop_all(struct amorad *a);   /* SIGTERM every shard */
bool sup_all_exited(const struct amorad *a);
bool sup_running(const struct amorad *a, uint32_t s);
void sup_kill_all(struct amorad *a);
void amorad_begin_stop(struct amorad *a, const char *why);

/* wakeups.c */
void wake_open(struct amorad *a);               /* per --fast-wakeups */
void wake_tick(struct amorad *a, uint64_t now_ns); /* auto: hold or let go by the write rate */
const char *wake_state_name(const struct amorad *a); /* off, unavailable, held, released */

/* listen.c */
/* Listen on cfg.socket_path (modes following the allow-lists) and watch
 * it. Returns 0, or -1 with the reason in err. */
int srv_listen(struct amorad *a, char *err, size_t errlen);
void srv_close_listener(struct amorad *a);

/* server.c */
void srv_free_closed(struct amorad *a); /* after each batch of events */
/* Store the connection gauges (nconns, attached) in the segment header
 * (segment.h, struct shm_amorad_counters), where clients read them: after
 * a connection opens or closes and after each command (an attach). */
void srv_count_clients(struct amorad *a);
/* Close connections whose request is not complete after request-timeout-ms
 * (and those whose last reply could not be sent as long). Not called from
 * inside a command, unlike srv_tick: it may close any connection. */
void srv_expire(struct amorad *a);
void srv_close_all(struct amorad *a);

/* slots.c */
void srv_tick(struct amorad *a);        /* recycle closed slots, drop cut-off clients */

#endif
