/*
 * config.h — amorad's configuration: defaults, config file, command line.
 *
 * Every setting has a default, may be set in a config file and may be set
 * on the command line; later sources override earlier ones:
 *
 *   defaults  <  --config FILE  <  command-line options
 *
 * (wherever --config appears on the command line, the file is read before
 * any other option is applied, so the command line always wins.)
 *
 * Command line: `--name VALUE` or `--name=VALUE`; --help (-h) and --version
 * print on stdout and config_load() stops there (its `printed` flag says so).
 * amorad takes no other arguments.
 *
 * Config file: one `name = value` per line, where name is a long option
 * name without its dashes (`data-dir = /var/lib/amora`). Blank lines and
 * lines whose first non-blank character is '#' are ignored; spaces around
 * name and value are trimmed; no quoting (the value is the rest of the line,
 * so paths may contain spaces and '#'). `config`, `help` and `version` are
 * not valid in a file.
 *
 * An option given twice takes its last value; for --allow-uid and
 * --allow-gid too (give several ids in one comma-separated list).
 *
 * Everything is validated here, before amorad touches anything, and every
 * refusal names what was wrong and what is allowed:
 *   --shards 3: must be a power of two between 1 and 1024
 *   amora.conf: line 4: unknown key 'foo'
 * Checks that involve two settings (memory per shard, max-connections
 * against max-clients, the length of the socket path derived from the data
 * directory) run once all sources are in, and so do the defaults derived
 * from another setting (max-connections, max-connections-per-uid).
 *
 * See config_usage() (amorad --help) for every option and its default.
 */
#ifndef AMORA_CONFIG_H
#define AMORA_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "shm/chan.h" /* SHM_CHAN_MAX_CLIENTS */
#include "shardd/walsync.h"
#include "shm/version.h"


#define CONFIG_DEFAULT_DATA_DIR "amora-data"
#define CONFIG_SOCKET_NAME "amora.sock"          /* inside the data directory */
#define CONFIG_DEFAULT_MEMORY (4ull << 30)
#define CONFIG_MIN_MEMORY (64ull << 20)
#define CONFIG_MAX_MEMORY (64ull << 30)           /* SHM_MAX_SIZE */
#define CONFIG_MIN_SHARD_MEMORY (4ull << 20)      /* two 2 MiB chunks per shard */
#define CONFIG_DEFAULT_SHARDS 64u
#define CONFIG_MAX_SHARDS 1024u                   /* SHM_MAX_SHARDS */
#define CONFIG_DEFAULT_SYNC_INTERVAL_MS 100u
#define CONFIG_MAX_SYNC_INTERVAL_MS 60000u
#define CONFIG_DEFAULT_MAX_CLIENTS 64u
#define CONFIG_MAX_CLIENTS SHM_CHAN_MAX_CLIENTS     /* 126: what a shard can wait on (chan.h) */
#define CONFIG_MAX_IDS 32u                        /* entries of --allow-uid/-gid */
#define CONFIG_DEFAULT_READER_TIMEOUT_MS 10000u
#define CONFIG_MIN_TIMEOUT_MS 100u                /* reader and request timeouts */
#define CONFIG_MAX_TIMEOUT_MS 3600000u
#define CONFIG_MAX_CONNECTIONS 65536u
#define CONFIG_OWNER_RESERVE 16u                  /* connections beyond max-connections
						   * that only root and amorad's uid get */
#define CONFIG_DEFAULT_REQUEST_TIMEOUT_MS 10000u
#define CONFIG_DEFAULT_INPUT_BUDGET (64ull << 20)
#define CONFIG_MIN_INPUT_BUDGET (32ull << 20)     /* one request may take 16 MiB */
#define CONFIG_MAX_INPUT_BUDGET (64ull << 30)

/* Checkpoints (shardd/ckpt.h). */
#define CONFIG_DEFAULT_CKPT_LOG (64ull << 20)
#define CONFIG_MIN_CKPT_LOG (64ull << 10)
#define CONFIG_MAX_CKPT_LOG (1ull << 40)
#define CONFIG_DEFAULT_CKPT_FACTOR 2u
#define CONFIG_MAX_CKPT_FACTOR 100u

/* --fast-wakeups (coordinator/wakeups.c). */
enum wake_mode { WAKE_AUTO, WAKE_ON, WAKE_OFF };

struct amorad_config {
	char data_dir[PATH_MAX];     /* default "amora-data" (relative to cwd) */
	char socket_path[PATH_MAX];  /* default DATA_DIR/amora.sock; at most 107
				      * bytes (sockaddr_un) */
	uint64_t memory;             /* bytes of the shared segment, default 4 GiB;
				      * 64M..64G and at least 4M per shard */
	uint32_t shards;             /* power of two 1..1024, default 64 */
	enum wal_sync_mode sync;     /* always | periodic (default) | none */
	uint32_t sync_interval_ms;   /* periodic: default 100, 1..60000 */
	uint32_t max_clients;        /* default 64, 1..CONFIG_MAX_CLIENTS (126) */
	uint32_t reader_timeout_ms;  /* a client whose epoch slot holds reclamation
				      * back this long is cut off; default 10000,
				      * 100..3600000 */
	uint32_t max_connections;    /* connections at once, attached or not;
				      * default 2 x max_clients + 16, at least
				      * max_clients. Root and amorad's uid get
				      * CONFIG_OWNER_RESERVE more. */
	uint32_t max_conns_per_uid;  /* connections of one uid (root and amorad's
				      * uid are not counted); default
				      * max_clients + 8 */
	uint32_t request_timeout_ms; /* a request begun but not complete this long
				      * closes its connection; default 10000,
				      * 100..3600000 */
	uint64_t input_budget;       /* bytes of unfinished requests buffered over
				      * all connections; default 64 MiB, 32M..64G */
	uid_t allow_uids[CONFIG_MAX_IDS]; /* default: amorad's own (effective) uid; */
	size_t n_uids;                    /* root and amorad's uid are always allowed */
	gid_t allow_gids[CONFIG_MAX_IDS]; /* default: none; a peer is in a group if */
	size_t n_gids;                    /* it is its primary or a supplementary one */
	int log_level;               /* enum log_level from log.h, default LOG_INFO */
	enum wake_mode fast_wakeups; /* auto (default) | on | off (wakeups.c) */
	bool sorted_index;           /* --sorted-index on (default) | off */
	uint64_t ckpt_min_log;       /* --checkpoint-min-log: the store's log floor
				      * before a checkpoint, split among the
				      * shards; default 64 MiB, 64K..1T */
	uint32_t ckpt_factor;        /* --checkpoint-factor: a shard checkpoints past
				      * this many times its live bytes of log;
				      * default 2, 0..100 (0: only on request and
				      * at shutdown) */
};

/* Defaults, then the config file (if --config FILE given), then the command
 * line. Returns 0, or -1 with a message in err naming the option or the
 * file and line (the caller prints it and exits 2). *printed is true when
 * --help or --version was answered on stdout instead: *c is then not
 * loaded and the caller exits 0. */
int config_load(struct amorad_config *c, int argc, char **argv, bool *printed, char *err,
		size_t errlen);

/* amorad --help: every option with its default. */
void config_usage(FILE *out);

#endif
