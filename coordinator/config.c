/*
 * config.c — amorad's configuration (see config.h for the rules).
 *
 * One table lists every option: its name (which is also its config-file
 * key), the placeholder shown in --help, and a setter that parses and
 * validates one value. The command line and the config file both go
 * through the same setters, so a value is accepted or refused the same way
 * wherever it is written; only the prefix of the message differs
 * ("--shards 3: ..." or "amora.conf: line 4: shards = 3: ...").
 *
 * The command line is walked twice. The first walk checks its syntax
 * (unknown options, missing values, stray arguments), answers --help and
 * --version, and finds --config; then the file is read; then the second
 * walk applies the options. That is what makes the command line override
 * the file wherever --config is written.
 *
 * Setters write into the config directly: a refused value leaves the
 * config half-loaded, but config_load() then fails and amorad exits, so no
 * one runs on it.
 *
 * Numbers are strict decimals (no sign, no spaces, no 0x): a setting that
 * is mistyped should be refused, not silently read as something else, which
 * strtoul would do.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "coordinator/config.h"
#include "shardd/log.h"

/* Longest socket path bind(2) takes (sun_path holds it NUL-terminated). */
#define SOCKET_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
/* Messages quote at most this much of a value, so they stay readable. */
#define QUOTE_MAX 128

typedef int (*setter)(struct amorad_config *c, const char *v, char *why, size_t n);

enum opt_kind { OPT_VALUE, OPT_CONFIG, OPT_HELP, OPT_VERSION };

struct opt {
	const char *name;
	enum opt_kind kind;
	setter set;
};

/* ---------- small parsers ---------- */

/* Strict decimal: one or more digits, nothing else, no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* Decimal in [min, max]. */
static int parse_range(const char *s, uint64_t min, uint64_t max, uint32_t *out)
{
	uint64_t v;

	if (parse_u64(s, &v) < 0 || v < min || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* "4294967296", "512M", "4G", "4GiB", "64mb": K/M/G/T are powers of 1024.
 * Returns -1 on bad syntax; a value too big for 64 bits becomes UINT64_MAX
 * so the range check refuses it with the range in the message. */
static int parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "kmgt";
	uint64_t v = 0;
	unsigned shift = 0;
	int overflow = 0;
	const char *p = s, *u;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			overflow = 1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p && (u = strchr(units, *p | 0x20)) != NULL) {
		shift = 10u * (unsigned)(u - units + 1);
		p++;
		if ((*p | 0x20) == 'i' && (p[1] | 0x20) == 'b')
			p += 2;
	}
	if ((*p | 0x20) == 'b')
		p++;
	if (*p)
		return -1;
	if (overflow || v > (UINT64_MAX >> shift))
		*out = UINT64_MAX;
	else
		*out = v << shift;
	return 0;
}

/* "4G", "512M", "1536K" or plain bytes: the largest unit that divides. */
static const char *fmt_size(uint64_t v, char *buf, size_t n)
{
	static const char units[] = "KMGT";
	int u = -1;

	while (u < 3 && v && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, n, "%llu", (unsigned long long)v);
	else
		snprintf(buf, n, "%llu%c", (unsigned long long)v, units[u]);
	return buf;
}

/* ---------- setters: 0, or -1 with the reason in why ---------- */

__attribute__((format(printf, 3, 4)))
static int refuse(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
	return -1;
}

static int set_path(char *dst, const char *v, char *why, size_t n)
{
	if (!*v)
		return refuse(why, n, "must not be empty");
	if (strlen(v) >= PATH_MAX)
		return refuse(why, n, "longer than %d bytes", PATH_MAX - 1);
	strcpy(dst, v);
	return 0;
}

static int set_data_dir(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_path(c->data_dir, v, why, n);
}

static int set_socket(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (strlen(v) > SOCKET_PATH_MAX)
		return refuse(why, n, "%zu bytes, a Unix socket path is at most %zu",
			      strlen(v), SOCKET_PATH_MAX);
	return set_path(c->socket_path, v, why, n);
}

/* A size option: *dst = v if it is a size in [min, max]; `example` and
 * `range` word the refusals. */
static int set_size(uint64_t *dst, const char *v, uint64_t min, uint64_t max, const char *example,
		    const char *range, char *why, size_t n)
{
	uint64_t m;

	if (parse_size(v, &m) < 0)
		return refuse(why, n, "expected a size in bytes with an optional K, M, G or T "
			      "suffix (powers of 1024), such as %s", example);
	if (m < min || m > max)
		return refuse(why, n, "must be between %s", range);
	*dst = m;
	return 0;
}

static int set_memory(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_size(&c->memory, v, CONFIG_MIN_MEMORY, CONFIG_MAX_MEMORY, "512M or 4G",
			"64M and 64G", why, n);
}

static int set_shards(struct amorad_config *c, const char *v, char *why, size_t n)
{
	uint32_t s;

	if (parse_range(v, 1, CONFIG_MAX_SHARDS, &s) < 0 || (s & (s - 1)))
		return refuse(why, n, "must be a power of two between 1 and %u", CONFIG_MAX_SHARDS);
	c->shards = s;
	return 0;
}

static int set_sync(struct amorad_config *c, const char *v, char *why, size_t n)
{
	int m = wal_sync_parse(v);

	if (m < 0)
		return refuse(why, n, "must be always, periodic or none");
	c->sync = (enum wal_sync_mode)m;
	return 0;
}

static int set_sync_interval(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (parse_range(v, 1, CONFIG_MAX_SYNC_INTERVAL_MS, &c->sync_interval_ms) < 0)
		return refuse(why, n, "must be a number of milliseconds between 1 and %u",
			      CONFIG_MAX_SYNC_INTERVAL_MS);
	return 0;
}

static int set_fast_wakeups(struct amorad_config *c, const char *v, char *why, size_t n)
{
	static const char *const names[] = { [WAKE_AUTO] = "auto", [WAKE_ON] = "on", [WAKE_OFF] = "off" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(v, names[i]) == 0) {
			c->fast_wakeups = (enum wake_mode)i;
			return 0;
		}
	}
	return refuse(why, n, "must be auto, on or off");
}

static int set_sorted_index(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
		return refuse(why, n, "must be on or off");
	c->sorted_index = strcmp(v, "on") == 0;
	return 0;
}

static int set_ckpt_min_log(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_size(&c->ckpt_min_log, v, CONFIG_MIN_CKPT_LOG, CONFIG_MAX_CKPT_LOG, "64M",
			"64K and 1T", why, n);
}

static int set_ckpt_factor(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (parse_range(v, 0, CONFIG_MAX_CKPT_FACTOR, &c->ckpt_factor) < 0)
		return refuse(why, n, "must be a number between 0 (only on request and at shutdown) and %u",
			      CONFIG_MAX_CKPT_FACTOR);
	return 0;
}

static int set_max_clients(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (parse_range(v, 1, CONFIG_MAX_CLIENTS, &c->max_clients) < 0)
		return refuse(why, n, "must be a number between 1 and %u", CONFIG_MAX_CLIENTS);
	return 0;
}

static int set_timeout(uint32_t *dst, const char *v, char *why, size_t n)
{
	if (parse_range(v, CONFIG_MIN_TIMEOUT_MS, CONFIG_MAX_TIMEOUT_MS, dst) < 0)
		return refuse(why, n, "must be a number of milliseconds between %u and %u",
			      CONFIG_MIN_TIMEOUT_MS, CONFIG_MAX_TIMEOUT_MS);
	return 0;
}

static int set_reader_timeout(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_timeout(&c->reader_timeout_ms, v, why, n);
}

static int set_request_timeout(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_timeout(&c->request_timeout_ms, v, why, n);
}

static int set_max_connections(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (parse_range(v, 1, CONFIG_MAX_CONNECTIONS, &c->max_connections) < 0)
		return refuse(why, n, "must be a number between 1 and %u", CONFIG_MAX_CONNECTIONS);
	return 0;
}

static int set_max_conns_per_uid(struct amorad_config *c, const char *v, char *why, size_t n)
{
	if (parse_range(v, 1, CONFIG_MAX_CONNECTIONS, &c->max_conns_per_uid) < 0)
		return refuse(why, n, "must be a number between 1 and %u", CONFIG_MAX_CONNECTIONS);
	return 0;
}

static int set_input_budget(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_size(&c->input_budget, v, CONFIG_MIN_INPUT_BUDGET, CONFIG_MAX_INPUT_BUDGET, "64M",
			"32M (one request may take 16M) and 64G", why, n);
}

static int set_log_level(struct amorad_config *c, const char *v, char *why, size_t n)
{
	int l = log_level_parse(v);

	if (l < 0)
		return refuse(why, n, "must be debug, info, warn or error");
	c->log_level = l;
	return 0;
}

/* ---------- uid and gid lists ---------- */

/* A numeric id: decimal, below (uid_t)-1, which means "no id" to the kernel. */
static int parse_id(const char *s, uint32_t *out)
{
	uint64_t v;

	if (parse_u64(s, &v) < 0 || v >= UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* getpwnam_r/getgrnam_r want a buffer big enough for the whole entry (a
 * group lists its members); grow it on ERANGE. */
static int lookup_name(const char *name, int is_group, uint32_t *out, char *why, size_t n)
{
	size_t size = 4096;
	int e;

	for (;;) {
		char *buf = malloc(size);
		struct passwd pw, *pr = NULL;
		struct group gr, *gres = NULL;

		if (!buf)
			return refuse(why, n, "out of memory looking up '%s'", name);
		if (is_group)
			e = getgrnam_r(name, &gr, buf, size, &gres);
		else
			e = getpwnam_r(name, &pw, buf, size, &pr);
		free(buf);
		if (e == ERANGE && size < (1u << 20)) {
			size *= 2;
			continue;
		}
		if (e)
			return refuse(why, n, "cannot look up %s '%s': %s",
				      is_group ? "group" : "user", name, strerror(e));
		if (is_group ? !gres : !pr)
			return refuse(why, n, "no %s '%s'", is_group ? "group" : "user", name);
		*out = is_group ? (uint32_t)gr.gr_gid : (uint32_t)pw.pw_uid;
		return 0;
	}
}

/* "1000,alice,0" -> ids. An empty list is allowed: for uids it leaves only
 * root, for gids no group. */
static int parse_id_list(const char *v, int is_group, uint32_t *ids, size_t *count,
			 char *why, size_t n)
{
	size_t k = 0;

	while (*v) {
		const char *end = strchr(v, ',');
		size_t len = end ? (size_t)(end - v) : strlen(v);
		char item[256];

		if (len == 0)
			return refuse(why, n, "empty entry in the list");
		if (len >= sizeof(item))
			return refuse(why, n, "entry '%.20s...' is too long", v);
		if (k == CONFIG_MAX_IDS)
			return refuse(why, n, "more than %u entries", CONFIG_MAX_IDS);
		memcpy(item, v, len);
		item[len] = '\0';
		if (strspn(item, "0123456789") == len) {
			if (parse_id(item, &ids[k]) < 0)
				return refuse(why, n, "id %s is out of range", item);
		} else if (lookup_name(item, is_group, &ids[k], why, n) < 0) {
			return -1;
		}
		k++;
		v += len;
		if (*v == ',' && !*++v)
			return refuse(why, n, "empty entry in the list");
	}
	*count = k;
	return 0;
}

/* --allow-uid or (is_group) --allow-gid: the whole list replaces the last. */
static int set_ids(struct amorad_config *c, const char *v, int is_group, char *why, size_t n)
{
	uint32_t ids[CONFIG_MAX_IDS];
	size_t k;

	if (parse_id_list(v, is_group, ids, &k, why, n) < 0)
		return -1;
	for (size_t i = 0; i < k; i++) {
		if (is_group)
			c->allow_gids[i] = (gid_t)ids[i];
		else
			c->allow_uids[i] = (uid_t)ids[i];
	}
	*(is_group ? &c->n_gids : &c->n_uids) = k;
	return 0;
}

static int set_allow_uid(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_ids(c, v, 0, why, n);
}

static int set_allow_gid(struct amorad_config *c, const char *v, char *why, size_t n)
{
	return set_ids(c, v, 1, why, n);
}

/* ---------- the option table ---------- */

static const struct opt opts[] = {
	{ "data-dir", OPT_VALUE, set_data_dir },
	{ "socket", OPT_VALUE, set_socket },
	{ "memory", OPT_VALUE, set_memory },
	{ "shards", OPT_VALUE, set_shards },
	{ "sync", OPT_VALUE, set_sync },
	{ "sync-interval-ms", OPT_VALUE, set_sync_interval },
	{ "fast-wakeups", OPT_VALUE, set_fast_wakeups },
	{ "sorted-index", OPT_VALUE, set_sorted_index },
	{ "checkpoint-min-log", OPT_VALUE, set_ckpt_min_log },
	{ "checkpoint-factor", OPT_VALUE, set_ckpt_factor },
	{ "max-clients", OPT_VALUE, set_max_clients },
	{ "reader-timeout-ms", OPT_VALUE, set_reader_timeout },
	{ "max-connections", OPT_VALUE, set_max_connections },
	{ "max-connections-per-uid", OPT_VALUE, set_max_conns_per_uid },
	{ "request-timeout-ms", OPT_VALUE, set_request_timeout },
	{ "input-buffer-budget", OPT_VALUE, set_input_budget },
	{ "allow-uid", OPT_VALUE, set_allow_uid },
	{ "allow-gid", OPT_VALUE, set_allow_gid },
	{ "log-level", OPT_VALUE, set_log_level },
	{ "config", OPT_CONFIG, NULL },
	{ "help", OPT_HELP, NULL },
	{ "version", OPT_VERSION, NULL },
};

static const struct opt *find_opt(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

void config_usage(FILE *out)
{
	fprintf(out,
		"Usage: amorad [OPTION]...\n"
		"Run the Amora coordinator: create the shared store, start its shard processes\n"
		"and serve the control socket (RESP2: redis-cli -s SOCKET works).\n"
		"\n"
		"  --data-dir DIR          data directory (default %s)\n"
		"  --socket PATH           control socket (default DATA_DIR/%s)\n"
		"  --memory SIZE           size of the shared segment, 64M..64G, at least 4M per\n"
		"                          shard; K, M, G, T suffixes (default 4G)\n"
		"  --shards N              shard processes, a power of two 1..%u (default %u)\n"
		"  --sync MODE             always | periodic | none (default periodic)\n"
		"  --sync-interval-ms N    periodic: fdatasync at most every N ms, 1..%u\n"
		"                          (default %u)\n"
		"  --fast-wakeups MODE     auto | on | off: ask the kernel to keep idle CPUs\n"
		"                          from halting (PM QoS), auto: while the shards\n"
		"                          answer 1000 requests/s or more; needs root\n"
		"                          (default auto)\n"
		"  --sorted-index on|off   keep a sorted index of the keys, for ordered\n"
		"                          scans (default on; off saves its memory and\n"
		"                          write cost, and scans then fail)\n"
		"  --checkpoint-min-log SIZE\n"
		"                          a shard checkpoints once its log on disk passes\n"
		"                          max(SIZE / shards, FACTOR x its live bytes);\n"
		"                          64K..1T (default 64M)\n"
		"  --checkpoint-factor N   that FACTOR, 0..%u; 0: checkpoints only on\n"
		"                          request (AMORA.CHECKPOINT) and at shutdown\n"
		"                          (default %u)\n"
		"  --max-clients N         attached clients at once, 1..%u (default %u)\n"
		"  --reader-timeout-ms N   cut off a client whose epoch slot keeps memory\n"
		"                          from being freed for N ms (stuck inside a read),\n"
		"                          %u..%u (default %u)\n"
		"  --max-connections N     connections at once, attached or not, at least\n"
		"                          max-clients (default 2 x max-clients + 16); root\n"
		"                          and amorad's uid get %u more beyond it\n"
		"  --max-connections-per-uid N\n"
		"                          connections of one uid; root and amorad's uid are\n"
		"                          not counted (default max-clients + 8)\n"
		"  --request-timeout-ms N  close a connection whose request is begun but not\n"
		"                          complete after N ms (idle and attached connections\n"
		"                          are never timed out), %u..%u (default %u)\n"
		"  --input-buffer-budget SIZE\n"
		"                          unfinished requests buffered over all connections,\n"
		"                          32M..64G; past it the connection that needs more is\n"
		"                          closed with an error (default 64M)\n"
		"  --allow-uid LIST        users allowed on the socket: uids or user names,\n"
		"                          comma-separated (default: amorad's own uid, %u);\n"
		"                          root and amorad's uid are always allowed\n"
		"  --allow-gid LIST        groups allowed (primary or supplementary group of\n"
		"                          the peer): gids or group names (default: none).\n"
		"                          The socket's and data directory's modes follow the\n"
		"                          lists (README: Access)\n"
		"  --log-level LEVEL       debug | info | warn | error (default info)\n"
		"  --config FILE           read `name = value` lines from FILE (names as above,\n"
		"                          without the dashes; # starts a comment line);\n"
		"                          the command line overrides the file\n"
		"  -h, --help              print this help and exit\n"
		"  --version               print the version and exit\n"
		"\n"
		"Options may also be written --name=VALUE.\n",
		CONFIG_DEFAULT_DATA_DIR, CONFIG_SOCKET_NAME, CONFIG_MAX_SHARDS,
		CONFIG_DEFAULT_SHARDS, CONFIG_MAX_SYNC_INTERVAL_MS,
		CONFIG_DEFAULT_SYNC_INTERVAL_MS, CONFIG_MAX_CKPT_FACTOR, CONFIG_DEFAULT_CKPT_FACTOR,
		CONFIG_MAX_CLIENTS, CONFIG_DEFAULT_MAX_CLIENTS, CONFIG_MIN_TIMEOUT_MS, CONFIG_MAX_TIMEOUT_MS,
		CONFIG_DEFAULT_READER_TIMEOUT_MS, CONFIG_OWNER_RESERVE, CONFIG_MIN_TIMEOUT_MS,
		CONFIG_MAX_TIMEOUT_MS, CONFIG_DEFAULT_REQUEST_TIMEOUT_MS, (unsigned)geteuid());
}

/* ---------- command line ---------- */

/* One option from the command line: its table entry, the name as written
 * (for messages) and its value (NULL for options without one). */
struct arg {
	const struct opt *o;
	const char *name;
	size_t name_len;
	const char *value;
};

/* Read the option at argv[*i] (and its value, possibly argv[*i + 1]);
 * *i is left on the last word used. */
static int next_arg(int argc, char **argv, int *i, struct arg *a, char *err, size_t errlen)
{
	const char *s = argv[*i], *eq;

	if (strcmp(s, "-h") == 0) {
		*a = (struct arg){ find_opt("help", 4), "help", 4, NULL };
		return 0;
	}
	if (strncmp(s, "--", 2) != 0 || !s[2]) {
		snprintf(err, errlen, "unexpected argument '%s' (amorad takes only options)", s);
		return -1;
	}
	a->name = s + 2;
	eq = strchr(a->name, '=');
	a->name_len = eq ? (size_t)(eq - a->name) : strlen(a->name);
	a->o = find_opt(a->name, a->name_len);
	if (!a->o) {
		snprintf(err, errlen, "unknown option '--%.*s'", (int)a->name_len, a->name);
		return -1;
	}
	if (a->o->kind == OPT_HELP || a->o->kind == OPT_VERSION) {
		if (eq) {
			snprintf(err, errlen, "--%s takes no value", a->o->name);
			return -1;
		}
		a->value = NULL;
		return 0;
	}
	if (eq)
		a->value = eq + 1;
	else if (*i + 1 < argc)
		a->value = argv[++*i];
	else {
		snprintf(err, errlen, "--%s: missing value", a->o->name);
		return -1;
	}
	return 0;
}

/* First walk: syntax, --help, --version, --config. Returns 0 (*printed:
 * --help or --version answered, stop there) or -1 with the reason in err. */
static int scan_args(int argc, char **argv, const char **config_file, bool *printed, char *err,
		     size_t errlen)
{
	struct arg a;

	for (int i = 1; i < argc; i++) {
		if (next_arg(argc, argv, &i, &a, err, errlen) < 0)
			return -1;
		if (a.o->kind == OPT_HELP) {
			config_usage(stdout);
			*printed = true;
			return 0;
		}
		if (a.o->kind == OPT_VERSION) {
			printf("amorad %s\n", AMORA_VERSION_STRING);
			*printed = true;
			return 0;
		}
		if (a.o->kind == OPT_CONFIG)
			*config_file = a.value;
	}
	return 0;
}

/* Second walk: apply the options with values. */
static int apply_args(struct amorad_config *c, int argc, char **argv, char *err, size_t errlen)
{
	struct arg a;
	char why[256];

	for (int i = 1; i < argc; i++) {
		if (next_arg(argc, argv, &i, &a, err, errlen) < 0)
			return -1;
		if (a.o->kind != OPT_VALUE)
			continue;
		if (a.o->set(c, a.value, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "--%s %.*s%s: %s", a.o->name, QUOTE_MAX, a.value,
				 strlen(a.value) > QUOTE_MAX ? "..." : "", why);
			return -1;
		}
	}
	return 0;
}

/* ---------- config file ---------- */

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* One line of the file; lineno and path are for the message. */
static int apply_line(struct amorad_config *c, char *line, const char *path, unsigned lineno,
		      char *err, size_t errlen)
{
	char *s = trim(line), *eq, *key, *val;
	const struct opt *o;
	char why[256];

	if (!*s || *s == '#')
		return 0;
	eq = strchr(s, '=');
	if (!eq) {
		snprintf(err, errlen, "%s: line %u: expected 'name = value'", path, lineno);
		return -1;
	}
	*eq = '\0';
	key = trim(s);
	val = trim(eq + 1);
	o = find_opt(key, strlen(key));
	if (o && o->kind == OPT_CONFIG) {
		snprintf(err, errlen, "%s: line %u: 'config' cannot be used in a config file",
			 path, lineno);
		return -1;
	}
	if (!o || o->kind != OPT_VALUE) {
		snprintf(err, errlen, "%s: line %u: unknown key '%s'", path, lineno, key);
		return -1;
	}
	if (o->set(c, val, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: line %u: %s = %.*s%s: %s", path, lineno, key, QUOTE_MAX,
			 val, strlen(val) > QUOTE_MAX ? "..." : "", why);
		return -1;
	}
	return 0;
}

static int load_file(struct amorad_config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned lineno = 0;
	int rc = 0;

	if (!f) {
		snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
		return -1;
	}
	while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (memchr(line, '\0', (size_t)len)) {
			snprintf(err, errlen, "%s: line %u: NUL byte in the line", path, lineno);
			rc = -1;
		} else {
			rc = apply_line(c, line, path, lineno, err, errlen);
		}
	}
	if (rc == 0 && ferror(f)) {
		snprintf(err, errlen, "--config %s: read error: %s", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	return rc;
}

/* ---------- the whole ---------- */

/* socket_path, max_connections and max_conns_per_uid stay empty (0): finish
 * derives them unless a source set them. */
static void set_defaults(struct amorad_config *c)
{
	*c = (struct amorad_config){
		.data_dir = CONFIG_DEFAULT_DATA_DIR,
		.memory = CONFIG_DEFAULT_MEMORY,
		.shards = CONFIG_DEFAULT_SHARDS,
		.sync = WAL_SYNC_PERIODIC,
		.sync_interval_ms = CONFIG_DEFAULT_SYNC_INTERVAL_MS,
		.max_clients = CONFIG_DEFAULT_MAX_CLIENTS,
		.reader_timeout_ms = CONFIG_DEFAULT_READER_TIMEOUT_MS,
		.request_timeout_ms = CONFIG_DEFAULT_REQUEST_TIMEOUT_MS,
		.input_budget = CONFIG_DEFAULT_INPUT_BUDGET,
		.allow_uids = { geteuid() },
		.n_uids = 1,
		.log_level = LOG_INFO,
		.sorted_index = true,
		.ckpt_min_log = CONFIG_DEFAULT_CKPT_LOG,
		.ckpt_factor = CONFIG_DEFAULT_CKPT_FACTOR,
	};
}

/* Checks across settings, once every source is in. */
static int finish(struct amorad_config *c, char *err, size_t errlen)
{
	char a[32], b[32];
	size_t dl = strlen(c->data_dir);
	int slash = dl > 0 && c->data_dir[dl - 1] == '/';

	if (c->memory / c->shards < CONFIG_MIN_SHARD_MEMORY) {
		snprintf(err, errlen, "--memory %s is too small for %u shards: each needs at "
			 "least 4M (use --memory %s or more, or fewer --shards)",
			 fmt_size(c->memory, a, sizeof(a)), c->shards,
			 fmt_size(CONFIG_MIN_SHARD_MEMORY * c->shards, b, sizeof(b)));
		return -1;
	}
	if (c->max_connections == 0)
		c->max_connections = 2 * c->max_clients + 16;
	if (c->max_conns_per_uid == 0)
		c->max_conns_per_uid = c->max_clients + 8;
	if (c->max_connections < c->max_clients) {
		snprintf(err, errlen, "--max-connections %u is below --max-clients %u: every attached "
			 "client holds a connection", c->max_connections, c->max_clients);
		return -1;
	}
	if (c->socket_path[0])
		return 0;
	if (dl + !slash + strlen(CONFIG_SOCKET_NAME) > SOCKET_PATH_MAX) {
		snprintf(err, errlen, "the control socket %s%s%s would be %zu bytes, a Unix "
			 "socket path is at most %zu: use a shorter --data-dir or set --socket",
			 c->data_dir, slash ? "" : "/", CONFIG_SOCKET_NAME,
			 dl + !slash + strlen(CONFIG_SOCKET_NAME), SOCKET_PATH_MAX);
		return -1;
	}
	/* Fits: checked just above. */
	char *p = c->socket_path;
	memcpy(p, c->data_dir, dl);
	p += dl;
	if (!slash)
		*p++ = '/';
	memcpy(p, CONFIG_SOCKET_NAME, sizeof(CONFIG_SOCKET_NAME));
	return 0;
}

int config_load(struct amorad_config *c, int argc, char **argv, bool *printed, char *err,
		size_t errlen)
{
	const char *file = NULL;

	if (errlen)
		err[0] = '\0';
	*printed = false;
	set_defaults(c);
	if (scan_args(argc, argv, &file, printed, err, errlen) < 0)
		return -1;
	if (*printed)
		return 0;
	if (file && load_file(c, file, err, errlen) < 0)
		return -1;
	if (apply_args(c, argc, argv, err, errlen) < 0)
		return -1;
	return finish(c, err, errlen);
}
