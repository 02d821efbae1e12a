/*
 * main.c — amorad: start-up, the event loop, shutdown.
 *
 * Start-up order matters:
 *   1. options and config file; the descriptor limit; the data directory
 *      (created 0700; srv_listen sets the mode the allow-lists need); the
 *      lock file (one amorad per data directory: flock, released by the
 *      kernel however amorad dies, so a kill -9 never leaves a lock behind);
 *      the shard count its logs were written with (datadir.c);
 *   2. the shared memory (engine.c), data segment sealed;
 *   3. signals become events (signalfd) before any fork, so a shard that
 *      dies at once is still reaped;
 *   4. the shards are forked (each recovers its log);
 *   5. only once every shard has recovered, the control socket: a client
 *      that can connect reads the whole store. (A shard restarted later
 *      recovers while readers go on reading the table it left.)
 *
 * Stop (SIGTERM, SIGINT, SHUTDOWN): close the socket, SIGTERM every shard;
 * each drains what it has taken, syncs its log and exits 0; amorad exits
 * 0 when all did, 1 otherwise (or after AMORAD_STOP_TIMEOUT_MS, killing
 * the rest: their logs still hold everything they acknowledged).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/amorad.h"
#include "shardd/log.h"

static int lock_data_dir(struct amorad *a, char *err, size_t errlen)
{
	char path[PATH_MAX + 16], pid[32];
	int n;

	if (mkdir(a->e.cfg.data_dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create data directory %s: %s", a->e.cfg.data_dir,
			 strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/amorad.lock", a->e.cfg.data_dir);
	a->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (a->lock_fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(a->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		n = (int)pread(a->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		snprintf(err, errlen, "another amorad (pid %s) is running on %s", n > 0 ? pid : "?",
			 a->e.cfg.data_dir);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", getpid());
	if (ftruncate(a->lock_fd, 0) != 0 || pwrite(a->lock_fd, pid, (size_t)n, 0) != n)
		log_warn("cannot write the pid into %s: %s", path, strerror(errno));
	return 0;
}

/* Enough descriptors for every connection amorad may accept (the owner's
 * reserve included), a pidfd and a channel per client slot, two sockets per
 * shard and some slack: raise the soft limit that far if the hard limit
 * allows, else say what is missing (a connection past the limit is then
 * refused with a message, see admit_accept). */
static void raise_fd_limit(const struct amorad_config *cfg)
{
	rlim_t need = (rlim_t)cfg->max_connections + CONFIG_OWNER_RESERVE +
		      2 * (rlim_t)cfg->max_clients + 2 * (rlim_t)cfg->shards + 64;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < need)
		log_warn("only %llu file descriptors (RLIMIT_NOFILE), max-connections %u and "
			 "max-clients %u may need %llu: connections past it will be refused",
			 (unsigned long long)rl.rlim_cur, cfg->max_connections, cfg->max_clients,
			 (unsigned long long)need);
}

static void on_signal(struct amorad *a, void *obj, uint32_t events)
{
	struct signalfd_siginfo si;

	(void)obj;
	(void)events;
	while (read(a->sig.fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			sup_reap(a);
		else {
			char why[64];

			snprintf(why, sizeof(why), "%s from pid %u",
				 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", si.ssi_pid);
			amorad_begin_stop(a, why);
		}
	}
}

/* SIGTERM, SIGINT and SIGCHLD become events of a signalfd. Returns 0, or
 * -1 with the reason in err. */
static int setup_signals(struct amorad *a, char *err, size_t errlen)
{
	sigset_t set;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot set up signal handling: signalfd: %s", strerror(errno));
		return -1;
	}
	if (loop_add(&a->loop, &a->sig, fd, EPOLLIN, on_signal, NULL, err, errlen) != 0) {
		close(fd);
		return -1;
	}
	return 0;
}

/* Every shard has recovered (or failed for good). */
static bool shards_settled(const struct amorad *a)
{
	for (uint32_t s = 0; s < a->e.cfg.shards; s++) {
		uint32_t st = atomic_load(&shm_shard_at(&a->e.seg, s)->state);

		if (st != SHM_SHARD_READY && st != SHM_SHARD_FAILED)
			return false;
	}
	return true;
}

/* The socket opens once the shards have recovered: a client that connects
 * reads the whole store, never a half-replayed one. */
static void maybe_listen(struct amorad *a)
{
	const struct amorad_config *cfg = &a->cfg;
	char err[PATH_MAX + 256], failed[1024] = "", counted[32];
	uint32_t ready = 0, down = 0;
	size_t len = 0;

	if (a->listening || a->stopping || !shards_settled(a))
		return;
	a->listening = true;
	if (srv_listen(a, err, sizeof(err)) != 0) {
		log_error("%s", err);
		a->exit_code = 1;
		amorad_begin_stop(a, "cannot listen");
		return;
	}
	/* Only READY shards count as recovered; the others (FAILED, or one
	 * that died again meanwhile) are named, the failed with their cause
	 * (the first few: INFO lists every shard). */
	for (uint32_t s = 0; s < cfg->shards; s++) {
		const struct shm_shard *sh = shm_shard_at(&a->e.seg, s);
		uint32_t st = atomic_load_explicit(&sh->state, memory_order_acquire);

		if (st == SHM_SHARD_READY) {
			ready++;
			continue;
		}
		if (++down > 8 || len >= sizeof(failed))
			continue;
		if (st == SHM_SHARD_FAILED)
			len += (size_t)snprintf(failed + len, sizeof(failed) - len, "; shard %02u failed: %s", s,
						shm_fail_cause_str(atomic_load(&sh->cause)));
		else
			len += (size_t)snprintf(failed + len, sizeof(failed) - len, "; shard %02u %s", s,
						shm_shard_state_name(st));
	}
	if (down > 8 && len < sizeof(failed))
		snprintf(failed + len, sizeof(failed) - len, "; %u more not serving (see INFO)", down - 8);
	if (down)
		snprintf(counted, sizeof(counted), "%u of %u", ready, cfg->shards);
	else
		snprintf(counted, sizeof(counted), "%u", ready);
	log_msg(down ? LOG_WARN : LOG_INFO,
		"serving %s: %s shards recovered in %.0f ms, %llu MiB, sync %s, data in %s%s",
		cfg->socket_path, counted, (double)(shm_now_ns() - a->started_ns) / 1e6,
		(unsigned long long)(cfg->memory >> 20),
		wal_sync_name(cfg->sync),
		cfg->data_dir, failed);
}

static void run(struct amorad *a)
{
	uint64_t next_tick = 0;

	for (;;) {
		loop_wait(&a->loop, a, AMORAD_TICK_MS);
		srv_free_closed(a);
		maybe_listen(a);
		if (shm_now_ns() >= next_tick) {
			next_tick = shm_now_ns() + AMORAD_TICK_MS * 1000000ull;
			sup_tick(a);
			srv_tick(a);
			wake_tick(a, shm_now_ns());
			srv_expire(a);
		}
		if (a->stopping && sup_all_exited(a))
			return;
		if (a->stopping && shm_now_ns() > a->stop_deadline_ns) {
			sup_kill_all(a);
			a->exit_code = 1;
			a->stop_deadline_ns = UINT64_MAX;
		}
	}
}

/* What of the configuration the engine and the shards need. */
static void engine_config_of(const struct amorad_config *c, struct engine_config *e)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->data_dir, sizeof(e->data_dir), "%s", c->data_dir);
	e->memory = c->memory;
	e->shards = c->shards;
	e->max_clients = c->max_clients;
	e->sync = c->sync;
	e->sync_interval_ms = c->sync_interval_ms;
	e->placement = SHM_PLACE_TAGS; /* a data directory may say otherwise (datadir.c) */
	e->sorted_index = c->sorted_index;
	e->ckpt_floor = c->ckpt_min_log;
	e->ckpt_factor = c->ckpt_factor;
}

int main(int argc, char **argv)
{
	static struct amorad a;
	struct amorad_config cfg;
	struct engine_config ecfg;
	char err[PATH_MAX + 512];
	bool printed;

	log_init("amorad", LOG_INFO);
	if (config_load(&cfg, argc, argv, &printed, err, sizeof(err)) != 0) {
		fprintf(stderr, "amorad: %s\n(amorad --help lists the options)\n", err);
		return 2;
	}
	if (printed)
		return 0;
	log_init("amorad", (enum log_level)cfg.log_level);
	raise_fd_limit(&cfg);
	a.listener.fd = a.sig.fd = a.lock_fd = -1;
	a.cfg = cfg;
	engine_config_of(&cfg, &ecfg);
	a.e.cfg = ecfg;
	a.started_ns = shm_now_ns();
	a.cmd = malloc(sizeof(*a.cmd));
	a.shards = calloc(cfg.shards, sizeof(*a.shards));
	a.watch = calloc(cfg.max_clients, sizeof(*a.watch));
	a.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (a.cmd == NULL || a.shards == NULL || a.watch == NULL) {
		log_error("out of memory at start");
		return 1;
	}
	if (loop_open(&a.loop, err, sizeof(err)) != 0 || lock_data_dir(&a, err, sizeof(err)) != 0 ||
	    datadir_check(cfg.data_dir, cfg.shards, cfg.sync, &ecfg.placement, err, sizeof(err)) != 0 ||
	    engine_create(&a.e, &ecfg, err, sizeof(err)) != 0 ||
	    setup_signals(&a, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return 1;
	}
	if (sup_start_all(&a, err, sizeof(err)) != 0) {
		log_error("%s", err);
		sup_stop_all(&a);
		return 1;
	}
	wake_open(&a);
	run(&a);
	srv_close_all(&a);
	log_info("stopped");
	return a.exit_code;
}
