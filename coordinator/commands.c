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
#include <stdarg.h>
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

/* ---------- INFO ---------- */

/* INFO [section ...]: Redis's shape. Sections "# Name", lines
 * "field:value", a blank line between sections; the field names Redis
 * tools read (redis-cli --stat: used_memory, connected_clients,
 * blocked_clients, total_commands_processed, total_connections_received,
 * the db0:keys= line: it takes the first occurrence of a name anywhere,
 * so no field before # Memory contains "used_memory"). Sections are named
 * case-insensitively; no argument, "all", "everything" or "default" give
 * every one (there are no others); an unknown name adds nothing, so
 * INFO nosuch is an empty reply, as in Redis. Counters come from the
 * segment (segment.h, "Counters"), as libamora reads them for
 * `amora stats`, which prints the same names; what only amorad knows (its
 * pid, uptime, data directory, sync mode, max_clients) is INFO's alone. */

/* The reply being built: grows as needed; running out of memory sticks. */
struct info {
	char *buf;
	size_t len, cap;
	bool oom;
	struct amorad *a;
	struct shm_store_stats ss;
	struct shm_amorad_stats as;
};

static void info_add(struct info *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void info_add(struct info *in, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		if (in->oom)
			return;
		va_start(ap, fmt);
		n = vsnprintf(in->buf + in->len, in->cap - in->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			in->oom = true;
		} else if ((size_t)n < in->cap - in->len) {
			in->len += (size_t)n;
			return;
		} else {
			size_t cap = (in->cap + (size_t)n) * 2;
			char *p = realloc(in->buf, cap);

			if (p == NULL)
				in->oom = true;
			else
				in->buf = p, in->cap = cap;
		}
	}
}

static unsigned long long ull(uint64_t v)
{
	return (unsigned long long)v;
}

/* Records per log write (0 before the first). */
static double mean_batch(uint64_t records, uint64_t writes)
{
	return writes ? (double)records / (double)writes : 0.0;
}

static void info_server(struct info *in)
{
	struct engine *e = &in->a->e;

	info_add(in, "amora_version:" AMORA_VERSION_STRING "\r\nprocess_id:%d\r\nuptime_in_seconds:%llu\r\n"
		 "data_dir:%s\r\nshards:%u\r\nshards_ready:%u\r\nshards_failed:%u\r\n"
		 "fast_wakeups:%s\r\n", getpid(),
		 ull((shm_now_ns() - in->a->started_ns) / 1000000000ull), e->cfg.data_dir, e->cfg.shards,
		 in->ss.ready, in->ss.failed, wake_state_name(in->a));
}

/* blocked_clients: no command of amorad's blocks; redis-cli --stat reads it. */
static void info_clients(struct info *in)
{
	info_add(in, "connected_clients:%u\r\nattached_clients:%u\r\nmax_clients:%u\r\nblocked_clients:0\r\n",
		 in->as.connected_clients, in->as.attached_clients, in->a->e.cfg.max_clients);
}

static void info_memory(struct info *in)
{
	const struct shm_store_stats *ss = &in->ss;

	info_add(in, "used_memory:%llu\r\nmemory_limit:%llu\r\nrecord_bytes:%llu\r\nfragmentation:%.4f\r\n",
		 ull(ss->used_bytes), ull(in->a->e.seg.size), ull(ss->requested_bytes),
		 ss->used_bytes ? 1.0 - (double)ss->requested_bytes / (double)ss->used_bytes : 0.0);
}

/* loading: 1 while a shard recovers its log (starting or restarting). */
static void info_persistence(struct info *in)
{
	const struct shm_store_stats *ss = &in->ss;

	info_add(in, "loading:%d\r\nsync:%s\r\nlog_writes:%llu\r\nlog_records:%llu\r\nlog_bytes:%llu\r\n"
		 "log_syncs:%llu\r\nmean_batch:%.2f\r\n", ss->loading > 0, wal_sync_name(in->a->e.cfg.sync),
		 ull(ss->w.log_writes), ull(ss->w.log_records), ull(ss->w.log_bytes), ull(ss->w.log_syncs),
		 mean_batch(ss->w.log_records, ss->w.log_writes));
	info_add(in, "batches_committed:%llu\r\nbatches_aborted:%llu\r\nbatch_parts_recovered:%llu\r\n",
		 ull(ss->w.batches_committed), ull(ss->w.batches_aborted), ull(ss->w.batch_parts_recovered));
	info_add(in, "checkpoints:%llu\r\ncheckpoint_bytes:%llu\r\nlog_disk_bytes:%llu\r\n",
		 ull(ss->ck.checkpoints), ull(ss->ck.bytes), ull(ss->ck.log_disk));
}

static void info_stats(struct info *in)
{
	info_add(in, "total_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
		 "rejected_connections:%llu\r\ntotal_requests:%llu\r\n", ull(in->as.connections_received),
		 ull(in->as.commands_processed), ull(in->as.connections_rejected), ull(in->ss.w.requests));
}

/* One database; as Redis, no line while it is empty. */
static void info_keyspace(struct info *in)
{
	if (in->ss.keys > 0)
		info_add(in, "db0:keys=%llu,expires=0,avg_ttl=0\r\n", ull(in->ss.keys));
}

/* One line a shard (cause=none unless it FAILED). */
static void info_shards(struct info *in)
{
	for (uint32_t s = 0; s < in->a->e.cfg.shards; s++) {
		struct shm_shard_stats st;

		shm_shard_stats(&in->a->e.seg, s, &st);
		info_add(in, "shard%u:state=%s,cause=%s,keys=%llu,used_memory=%llu,requests=%llu,log_writes=%llu,"
			 "log_records=%llu,log_bytes=%llu,log_syncs=%llu,mean_batch=%.2f,restarts=%u,"
			 "checkpoints=%llu,checkpoint_seq=%llu,log_disk_bytes=%llu\r\n", s,
			 shm_shard_state_name(st.state), shm_fail_cause_token(st.cause), ull(st.keys),
			 ull(st.used_bytes), ull(st.w.requests), ull(st.w.log_writes), ull(st.w.log_records),
			 ull(st.w.log_bytes), ull(st.w.log_syncs), mean_batch(st.w.log_records, st.w.log_writes),
			 st.restarts, ull(st.ck.checkpoints), ull(st.ck.seq), ull(st.ck.log_disk));
	}
}

/* In Redis's order, ours last. */
static const struct info_section {
	const char *name;  /* what INFO's argument names, in any case */
	const char *title; /* its header line */
	void (*add)(struct info *in);
} info_sections[] = {
	{ "server", "Server", info_server },
	{ "clients", "Clients", info_clients },
	{ "memory", "Memory", info_memory },
	{ "persistence", "Persistence", info_persistence },
	{ "stats", "Stats", info_stats },
	{ "keyspace", "Keyspace", info_keyspace },
	{ "shards", "Shards", info_shards },
};
#define INFO_NSECTIONS (sizeof(info_sections) / sizeof(info_sections[0]))

static bool word_is(const char *w, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(w, name, len) == 0;
}

/* The sections the arguments name, a bit each. */
static uint32_t info_wanted(const struct resp_cmd *cmd)
{
	uint32_t want = 0;

	if (cmd->argc == 1)
		return (1u << INFO_NSECTIONS) - 1;
	for (size_t i = 1; i < cmd->argc; i++) {
		const char *w = cmd->argv[i];
		size_t n = cmd->argl[i];

		if (word_is(w, n, "all") || word_is(w, n, "everything") || word_is(w, n, "default"))
			want = (1u << INFO_NSECTIONS) - 1;
		for (size_t k = 0; k < INFO_NSECTIONS; k++)
			if (word_is(w, n, info_sections[k].name))
				want |= 1u << k;
	}
	return want;
}

static void cmd_info(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	struct info in = { .a = a };
	uint32_t want = info_wanted(cmd);
	unsigned n = 0;

	in.cap = 4096; /* enough for all but # Shards of many shards: info_add grows it */
	in.buf = malloc(in.cap);
	in.oom = in.buf == NULL;
	shm_store_stats(&a->e.seg, &in.ss);
	shm_amorad_stats(&a->e.seg, &in.as);
	for (size_t k = 0; k < INFO_NSECTIONS; k++) {
		if (!(want & (1u << k)))
			continue;
		info_add(&in, "%s# %s\r\n", n++ ? "\r\n" : "", info_sections[k].title);
		info_sections[k].add(&in);
	}
	if (in.oom || resp_add_bulk(&c->out, in.buf, in.len) != RESP_OK)
		resp_add_error(&c->out, "ERR out of memory for INFO");
	free(in.buf);
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

/* AMORA.CHECKPOINT: every shard writes a checkpoint holding every write
 * acknowledged before this command (shardd/ckpt.h). The reply, at once,
 * is the request's number N; a shard's ckpt_served reaches N once its
 * checkpoint is on disk (amora_checkpoint waits for that). */
static void cmd_checkpoint(struct amorad *a, struct conn *c, const struct resp_cmd *cmd)
{
	uint64_t n;

	(void)cmd;
	if (a->e.cfg.sync == WAL_SYNC_NONE) {
		resp_add_error(&c->out, "ERR no checkpoints with --sync none: nothing is kept on disk");
		return;
	}
	/* release: a shard that sees the number (acquire) runs after it */
	n = atomic_fetch_add_explicit(&a->e.seg.hdr->amorad.ckpt_requested, 1, memory_order_release) + 1;
	engine_wake_shards(&a->e);
	resp_add_int(&c->out, (int64_t)n);
}

/* ---------- the table ---------- */

static const struct command commands[] = {
	{ "ping", -1, 0, cmd_ping },
	{ "info", -1, 0, cmd_info },
	{ "command", -1, 0, cmd_command },
	{ "quit", -1, CMD_CLOSES, cmd_quit },
	{ "shutdown", -1, CMD_ADMIN | CMD_CLOSES, cmd_shutdown },
	{ "amora.attach", 1, CMD_UNATTACHED, cmd_attach },
	{ "amora.checkpoint", 1, CMD_ADMIN, cmd_checkpoint },
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
	/* Counted once its handler ran, as Redis's total_commands_processed
	 * (segment.h, struct shm_amorad_counters); an attach changes the
	 * gauges. */
	shm_counter_add(&a->e.seg.hdr->amorad.commands_processed, 1);
	srv_count_clients(a);
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
