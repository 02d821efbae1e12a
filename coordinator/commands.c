/*
 * commands.c — the control socket's command table, in the manner of
 * Redis's struct redisCommand: one row a command with its name, arity,
 * flags and handler. A request's first word is looked up case-insensitively;
 * the arity and flags are checked here, before the handler runs, so a
 * handler sees only requests of a shape it takes. The Redis-server issue's
 * data commands (GET, SET, ...) are rows of this table.
 *
 * Replies for requests no handler takes read like Redis's:
 *   ERR unknown command 'x', with args beginning with: 'a' 'b'
 *   ERR wrong number of arguments for 'amora.attach' command
 * (the name of the table's row, in lower case, as Redis writes it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "coordinator/server.h"
#include "shardd/log.h"
#include "shm/probe.h"
#include "shm/shard.h"
#include "shm/version.h"

/* What the table says of a command beyond its arity. */
enum cmd_flag {
	CMD_ADMIN = 1u << 0,      /* acts on amorad itself: logged with the peer's pid and uid */
	CMD_CLOSES = 1u << 1,     /* the connection closes once the reply is sent */
	CMD_UNATTACHED = 1u << 2, /* refused on a connection already attached */
};

typedef void cmd_proc(struct amorad *a, struct conn *c, const struct resp_cmd *cmd);

struct command {
	const char *name; /* lower case; matched without regard to case */
	int arity;        /* Redis's rule, the name counted: n > 0 exactly n words, -n at least n */
	uint32_t flags;   /* enum cmd_flag */
	cmd_proc *proc;
};

/* Quoted request words in messages: at most this many bytes each, and of
 * the arguments after the name together (Redis's figure). */
#define CMD_QUOTE_MAX 128

static void reply_arity(struct conn *c, const char *name)
{
	resp_add_errorf(&c->out, "ERR wrong number of arguments for '%s' command", name);
}

/* ---------- the small commands ---------- */

/* PING [message]: PONG, or the message back. */
static void cmd_ping(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	(void)a;
	if (cmd->argc > 2)
		reply_arity(c, "ping"); /* at most one argument: Redis's check */
	else if (cmd->argc == 2)
		resp_add_bulk(&c->out, cmd->argv[1], cmd->argl[1]);
	else
		resp_add_simple(&c->out, "PONG");
}

/* INFO [section]: every section, whatever is asked. */
static void cmd_info(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	struct engine *e = &a->e;
	struct shm_store_stats ss;
	/* Room for the fixed part, the data directory and one line a shard
	 * ("shard1023:state=restarting,cause=out_of_memory,restarts=4294967295"). */
	size_t cap = 1024 + strlen(e->cfg.data_dir) + (size_t)e->cfg.shards * 80, len;
	char *buf = malloc(cap);

	(void)cmd;
	if (buf == NULL) {
		resp_add_error(&c->out, "ERR out of memory for INFO");
		return;
	}
	shm_store_stats(&e->seg, &ss);
	len = (size_t)snprintf(buf, cap,
		     "# Server\r\namora_version:" AMORA_VERSION_STRING "\r\nprocess_id:%d\r\nuptime_in_seconds:%llu\r\n"
		     "data_dir:%s\r\nsync:%s\r\nshards:%u\r\nshards_ready:%u\r\nshards_failed:%u\r\n"
		     "# Clients\r\nconnected_clients:%zu\r\nattached_clients:%u\r\nmax_clients:%u\r\n"
		     "# Memory\r\nused_memory:%llu\r\nmemory_limit:%llu\r\n"
		     "# Keyspace\r\nkeys:%llu\r\n# Shards\r\n",
		     getpid(), (unsigned long long)((shm_now_ns() - a->started_ns) / 1000000000ull),
		     e->cfg.data_dir, wal_sync_name(e->cfg.sync), e->cfg.shards, ss.ready, ss.failed,
		     a->nconns, a->attached, e->cfg.max_clients, (unsigned long long)ss.used_bytes,
		     (unsigned long long)e->seg.size, (unsigned long long)ss.keys);
	/* One line a shard: state, why it failed (cause=none unless FAILED),
	 * restarts. The cause is loaded after the state (shardd.h). */
	for (uint32_t s = 0; s < e->cfg.shards && len < cap; s++) {
		struct shm_shard *sh = shm_shard_at(&e->seg, s);
		uint32_t st = atomic_load_explicit(&sh->state, memory_order_acquire);
		uint32_t cause = st == SHM_SHARD_FAILED ? atomic_load(&sh->cause) : SHM_FAIL_NONE;

		len += (size_t)snprintf(buf + len, cap - len, "shard%u:state=%s,cause=%s,restarts=%u\r\n", s,
					shm_shard_state_name(st), shm_fail_cause_token(cause),
					atomic_load(&sh->restarts));
	}
	resp_add_bulk(&c->out, buf, len < cap ? len : cap - 1);
	free(buf);
}

/* COMMAND [...]: an empty list, which is all redis-cli's start-up probe
 * needs. */
static void cmd_command(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	(void)a;
	(void)cmd;
	resp_add_array(&c->out, 0);
}

/* QUIT: OK, then the connection closes (CMD_CLOSES). */
static void cmd_quit(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	(void)a;
	(void)cmd;
	resp_add_simple(&c->out, "OK");
}

/* SHUTDOWN [...]: OK, then amorad stops as on SIGTERM. */
static void cmd_shutdown(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	(void)cmd;
	resp_add_simple(&c->out, "OK");
	amorad_begin_stop(a, "SHUTDOWN command");
}

/* ---------- the table ---------- */

static const struct command commands[] = {
	{ "ping", -1, 0, cmd_ping },
	{ "info", -1, 0, cmd_info },
	{ "command", -1, 0, cmd_command },
	{ "quit", -1, CMD_CLOSES, cmd_quit },
	{ "shutdown", -1, CMD_ADMIN | CMD_CLOSES, cmd_shutdown },
	{ "amora.attach", 1, CMD_UNATTACHED, cmd_attach },
};

static const struct command *cmd_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strlen(commands[i].name) == len && strncasecmp(commands[i].name, name, len) == 0)
			return &commands[i];
	return NULL;
}

static bool cmd_arity_ok(const struct command *k, size_t argc)
{
	return k->arity > 0 ? argc == (size_t)k->arity : argc >= (size_t)-k->arity;
}

/* ERR unknown command 'x', with args beginning with: 'a' 'b' (Redis's
 * words: the arguments quoted until CMD_QUOTE_MAX bytes of them are). */
static void cmd_reply_unknown(struct conn *c, const struct resp_cmd *cmd)
{
	char args[CMD_QUOTE_MAX * 2 + 8];
	size_t used = 0;

	args[0] = '\0';
	for (size_t i = 1; i < cmd->argc && used < CMD_QUOTE_MAX; i++) {
		int room = CMD_QUOTE_MAX - (int)used;
		int n = cmd->argl[i] < (size_t)room ? (int)cmd->argl[i] : room;

		used += (size_t)snprintf(args + used, sizeof(args) - used, "'%.*s' ", n, cmd->argv[i]);
	}
	resp_add_errorf(&c->out, "ERR unknown command '%.*s', with args beginning with: %s",
			cmd->argl[0] < CMD_QUOTE_MAX ? (int)cmd->argl[0] : CMD_QUOTE_MAX, cmd->argv[0], args);
}

/* The checks of the table, then the handler of row k (NULL: unknown). */
static void cmd_dispatch(struct amorad *a, struct conn *c, const struct command *k,
			 const struct resp_cmd *cmd)
{
	if (k == NULL) {
		cmd_reply_unknown(c, cmd);
		return;
	}
	if (!cmd_arity_ok(k, cmd->argc)) {
		reply_arity(c, k->name);
		return;
	}
	if ((k->flags & CMD_UNATTACHED) && c->slot >= 0) {
		resp_add_error(&c->out, "ERR this connection is already attached");
		return;
	}
	if (k->flags & CMD_ADMIN)
		log_info("%s from pid %d (uid %u)", k->name, c->pid, c->uid);
	k->proc(a, c, cmd);
	if (k->flags & CMD_CLOSES)
		c->close_after_write = true;
}

void cmd_run(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	const struct command *k = cmd_lookup(cmd->argv[0], cmd->argl[0]);
	const char *name = k != NULL ? k->name : "unknown";
	size_t at = c->out.len;

	AMORA_PROBE(cmd__begin, name, c->pid);
	cmd_dispatch(a, c, k, cmd);
	/* The result: whether the reply this request added is an error line
	 * (an attach reply goes out at once and leaves c->out as it was). */
	AMORA_PROBE(cmd__end, name, c->pid, c->out.len > at && c->out.data[at] == '-' ? -1 : 0);
}
