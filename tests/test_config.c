/*
 * test_config.c — tests for coordinator/config.c (amorad's configuration).
 *
 * Each test builds an argv as amorad would get it and checks the loaded
 * config or the exact error message: the messages are the user interface
 * of a mistyped setting, so they are pinned here word for word. Config
 * files are written to a temporary file per test. User and group names
 * used are those every Debian system has (root = 0, daemon = 1).
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/config.h"
#include "shardd/log.h"

static struct amorad_config cfg;
static char err[512];
static bool printed;

#define ARGV(...) ((char *[]){ "amorad", __VA_ARGS__, NULL })
#define ARGC(...) ((int)(sizeof((char *[]){ "amorad", __VA_ARGS__ }) / sizeof(char *)))
/* config_load on the given arguments. */
#define LOAD(...) config_load(&cfg, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), &printed, err, sizeof(err))

static void expect_ok(int rc)
{
	cr_assert_eq(rc, 0, "config_load: %d: %s", rc, err);
	cr_assert(!printed);
}

static void expect_err(int rc, const char *msg)
{
	cr_assert_eq(rc, -1, "config_load returned %d", rc);
	cr_assert_str_eq(err, msg);
}

/* cfg holds what `want` does, field by field. */
static void expect_config(const struct amorad_config *want)
{
	cr_assert_str_eq(cfg.data_dir, want->data_dir);
	cr_assert_str_eq(cfg.socket_path, want->socket_path);
	cr_assert_eq(cfg.memory, want->memory);
	cr_assert_eq(cfg.shards, want->shards);
	cr_assert_eq(cfg.sync, want->sync);
	cr_assert_eq(cfg.sync_interval_ms, want->sync_interval_ms);
	cr_assert_eq(cfg.max_clients, want->max_clients);
	cr_assert_eq(cfg.reader_timeout_ms, want->reader_timeout_ms);
	cr_assert_eq(cfg.max_connections, want->max_connections);
	cr_assert_eq(cfg.max_conns_per_uid, want->max_conns_per_uid);
	cr_assert_eq(cfg.request_timeout_ms, want->request_timeout_ms);
	cr_assert_eq(cfg.input_budget, want->input_budget);
	cr_assert_eq(cfg.n_uids, want->n_uids);
	cr_assert_arr_eq(cfg.allow_uids, want->allow_uids, want->n_uids * sizeof(uid_t));
	cr_assert_eq(cfg.n_gids, want->n_gids);
	cr_assert_arr_eq(cfg.allow_gids, want->allow_gids, want->n_gids * sizeof(gid_t));
	cr_assert_eq(cfg.log_level, want->log_level);
}

/* A config file with these contents; the path is static storage. */
static char *write_file(const char *text)
{
	static char path[64];
	int fd;

	strcpy(path, "/tmp/amora-test-config-XXXXXX");
	fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* ---------- defaults ---------- */

Test(config, defaults)
{
	char *argv[] = { "amorad", NULL };
	const struct amorad_config want = {
		.data_dir = "amora-data", .socket_path = "amora-data/amora.sock",
		.memory = 4ull << 30, .shards = 64, .sync = WAL_SYNC_PERIODIC, .sync_interval_ms = 100,
		.max_clients = 64, .reader_timeout_ms = 10000, .max_connections = 2 * 64 + 16,
		.max_conns_per_uid = 64 + 8, .request_timeout_ms = 10000, .input_budget = 64ull << 20,
		.allow_uids = { geteuid() }, .n_uids = 1, .n_gids = 0, .log_level = LOG_INFO,
	};

	expect_ok(config_load(&cfg, 1, argv, &printed, err, sizeof(err)));
	expect_config(&want);
	cr_assert_str_eq(err, "");
}

/* ---------- each option ---------- */

Test(config, data_dir_and_derived_socket)
{
	expect_ok(LOAD("--data-dir", "/var/lib/amora"));
	cr_assert_str_eq(cfg.data_dir, "/var/lib/amora");
	cr_assert_str_eq(cfg.socket_path, "/var/lib/amora/amora.sock");
	expect_ok(LOAD("--data-dir", "/srv/a/"));
	cr_assert_str_eq(cfg.socket_path, "/srv/a/amora.sock");
}

Test(config, socket)
{
	expect_ok(LOAD("--socket", "/run/amora.sock", "--data-dir", "/d"));
	cr_assert_str_eq(cfg.socket_path, "/run/amora.sock");
	cr_assert_str_eq(cfg.data_dir, "/d");
}

Test(config, memory_sizes)
{
	static const struct { const char *s; uint64_t v; } cases[] = {
		{ "512M", 512ull << 20 }, { "4G", 4ull << 30 }, { "4GiB", 4ull << 30 },
		{ "64mb", 64ull << 20 }, { "65536K", 64ull << 20 }, { "64G", 64ull << 30 },
		{ "1073741824", 1ull << 30 }, { "1073741824B", 1ull << 30 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[] = { "amorad", "--memory", (char *)cases[i].s, "--shards", "1", NULL };
		expect_ok(config_load(&cfg, 5, argv, &printed, err, sizeof(err)));
		cr_assert_eq(cfg.memory, cases[i].v, "%s", cases[i].s);
	}
}

Test(config, shards)
{
	expect_ok(LOAD("--shards", "1"));
	cr_assert_eq(cfg.shards, 1);
	expect_ok(LOAD("--shards", "1024", "--memory", "4G"));
	cr_assert_eq(cfg.shards, 1024);
	expect_ok(LOAD("--shards", "16", "--memory", "64M"));
	cr_assert_eq(cfg.shards, 16);
}

Test(config, sync_modes)
{
	expect_ok(LOAD("--sync", "always"));
	cr_assert_eq(cfg.sync, WAL_SYNC_ALWAYS);
	expect_ok(LOAD("--sync", "none"));
	cr_assert_eq(cfg.sync, WAL_SYNC_NONE);
	expect_ok(LOAD("--sync", "periodic", "--sync-interval-ms", "250"));
	cr_assert_eq(cfg.sync, WAL_SYNC_PERIODIC);
	cr_assert_eq(cfg.sync_interval_ms, 250);
	expect_ok(LOAD("--sync-interval-ms", "1"));
	expect_ok(LOAD("--sync-interval-ms", "60000"));
}

Test(config, fast_wakeups)
{
	expect_ok(LOAD("--shards", "1"));
	cr_assert_eq(cfg.fast_wakeups, WAKE_AUTO, "auto by default");
	expect_ok(LOAD("--fast-wakeups", "off"));
	cr_assert_eq(cfg.fast_wakeups, WAKE_OFF);
	expect_ok(LOAD("--fast-wakeups=on"));
	cr_assert_eq(cfg.fast_wakeups, WAKE_ON);
}

Test(config, sorted_index)
{
	expect_ok(LOAD("--shards", "1"));
	cr_assert(cfg.sorted_index, "on by default");
	expect_ok(LOAD("--sorted-index", "off"));
	cr_assert_not(cfg.sorted_index);
	expect_ok(LOAD("--sorted-index=on"));
	cr_assert(cfg.sorted_index);
}

Test(config, checkpoints)
{
	expect_ok(LOAD("--shards", "1"));
	cr_assert_eq(cfg.ckpt_min_log, 64ull << 20, "64M by default");
	cr_assert_eq(cfg.ckpt_factor, 2, "2 by default");
	expect_ok(LOAD("--checkpoint-min-log", "64K", "--checkpoint-factor", "0"));
	cr_assert_eq(cfg.ckpt_min_log, 64ull << 10);
	cr_assert_eq(cfg.ckpt_factor, 0);
	expect_ok(LOAD("--checkpoint-min-log=1T", "--checkpoint-factor=100"));
	cr_assert_eq(cfg.ckpt_min_log, 1ull << 40);
	cr_assert_eq(cfg.ckpt_factor, 100);
}

Test(config, max_clients)
{
	expect_ok(LOAD("--max-clients", "1"));
	cr_assert_eq(cfg.max_clients, 1);
	expect_ok(LOAD("--max-clients", "126"));
	cr_assert_eq(cfg.max_clients, 126);
	expect_err(LOAD("--max-clients", "127"), "--max-clients 127: must be a number between 1 and 126");
}

Test(config, reader_and_request_timeouts)
{
	expect_ok(LOAD("--reader-timeout-ms", "100", "--request-timeout-ms", "3600000"));
	cr_assert_eq(cfg.reader_timeout_ms, 100);
	cr_assert_eq(cfg.request_timeout_ms, 3600000);
}

/* The connection limits follow max-clients unless given. */
Test(config, connection_limits)
{
	expect_ok(LOAD("--max-clients", "10"));
	cr_assert_eq(cfg.max_connections, 36);
	cr_assert_eq(cfg.max_conns_per_uid, 18);
	expect_ok(LOAD("--max-connections", "500", "--max-connections-per-uid", "3", "--max-clients", "10"));
	cr_assert_eq(cfg.max_connections, 500);
	cr_assert_eq(cfg.max_conns_per_uid, 3);
	expect_ok(LOAD("--max-connections", "64"));
	expect_err(LOAD("--max-connections", "10"),
		   "--max-connections 10 is below --max-clients 64: every attached client holds a "
		   "connection");
}

Test(config, input_buffer_budget)
{
	expect_ok(LOAD("--input-buffer-budget", "32M"));
	cr_assert_eq(cfg.input_budget, 32ull << 20);
	expect_ok(LOAD("--input-buffer-budget", "1G"));
	cr_assert_eq(cfg.input_budget, 1ull << 30);
}

Test(config, allow_uid_numbers_and_names)
{
	expect_ok(LOAD("--allow-uid", "1000,root,daemon,0"));
	cr_assert_eq(cfg.n_uids, 4);
	cr_assert_eq(cfg.allow_uids[0], 1000);
	cr_assert_eq(cfg.allow_uids[1], 0);
	cr_assert_eq(cfg.allow_uids[2], 1);
	cr_assert_eq(cfg.allow_uids[3], 0);
}

Test(config, allow_gid_numbers_and_names)
{
	expect_ok(LOAD("--allow-gid", "root,daemon,4242"));
	cr_assert_eq(cfg.n_gids, 3);
	cr_assert_eq(cfg.allow_gids[0], 0);
	cr_assert_eq(cfg.allow_gids[1], 1);
	cr_assert_eq(cfg.allow_gids[2], 4242);
	cr_assert_eq(cfg.n_uids, 1); /* uids keep their default */
}

Test(config, empty_id_lists)
{
	expect_ok(LOAD("--allow-uid", "", "--allow-gid="));
	cr_assert_eq(cfg.n_uids, 0);
	cr_assert_eq(cfg.n_gids, 0);
}

Test(config, max_ids)
{
	char list[32 * 3 + 8] = "";

	for (int i = 0; i < 32; i++)
		sprintf(list + strlen(list), "%s%d", i ? "," : "", i + 10);
	expect_ok(LOAD("--allow-uid", list));
	cr_assert_eq(cfg.n_uids, 32);
	cr_assert_eq(cfg.allow_uids[31], 41);
}

Test(config, log_level)
{
	expect_ok(LOAD("--log-level", "debug"));
	cr_assert_eq(cfg.log_level, LOG_DEBUG);
	expect_ok(LOAD("--log-level", "error"));
	cr_assert_eq(cfg.log_level, LOG_ERROR);
}

Test(config, equals_form)
{
	expect_ok(LOAD("--shards=8", "--memory=1G", "--data-dir=/x", "--sync=always",
		       "--allow-uid=5,6", "--log-level=warn"));
	cr_assert_eq(cfg.shards, 8);
	cr_assert_eq(cfg.memory, 1ull << 30);
	cr_assert_str_eq(cfg.data_dir, "/x");
	cr_assert_eq(cfg.sync, WAL_SYNC_ALWAYS);
	cr_assert_eq(cfg.n_uids, 2);
	cr_assert_eq(cfg.log_level, LOG_WARN);
	/* A value may contain '='. */
	expect_ok(LOAD("--data-dir=/a=b"));
	cr_assert_str_eq(cfg.data_dir, "/a=b");
}

Test(config, last_value_wins)
{
	expect_ok(LOAD("--shards", "8", "--shards", "4", "--allow-uid", "7,8", "--allow-uid", "9"));
	cr_assert_eq(cfg.shards, 4);
	cr_assert_eq(cfg.n_uids, 1);
	cr_assert_eq(cfg.allow_uids[0], 9);
}

/* ---------- config file ---------- */

Test(config, file_values)
{
	char *argv[] = { "amorad", NULL };
	struct amorad_config want;
	char *f = write_file(
		"# amorad configuration\n"
		"\n"
		"data-dir = /var/lib/amora store\n"
		"   memory=512M   \n"
		"\tshards\t=\t8\r\n"
		"sync = always\n"
		"  # indented comment\n"
		"sync-interval-ms = 50\n"
		"max-clients = 10\n"
		"allow-uid = root,1000\n"
		"allow-gid = daemon\n"
		"log-level = debug"); /* no final newline */

	/* the defaults, but for what the file sets (max-clients moves the
	 * limits derived from it) */
	expect_ok(config_load(&want, 1, argv, &printed, err, sizeof(err)));
	strcpy(want.data_dir, "/var/lib/amora store");
	strcpy(want.socket_path, "/var/lib/amora store/amora.sock");
	want.memory = 512ull << 20;
	want.shards = 8;
	want.sync = WAL_SYNC_ALWAYS;
	want.sync_interval_ms = 50;
	want.max_clients = 10;
	want.max_connections = 2 * 10 + 16;
	want.max_conns_per_uid = 10 + 8;
	want.allow_uids[0] = 0;
	want.allow_uids[1] = 1000;
	want.n_uids = 2;
	want.allow_gids[0] = 1;
	want.n_gids = 1;
	want.log_level = LOG_DEBUG;
	expect_ok(LOAD("--config", f));
	expect_config(&want);
	unlink(f);
}

/* The example shipped in deploy/ loads, and says what the defaults are. */
Test(config, deploy_example_loads)
{
	char *argv[] = { "amorad", NULL };
	struct amorad_config def;

	if (access("deploy/amorad.conf", R_OK) != 0)
		cr_skip_test("run from the source tree to check deploy/amorad.conf");
	expect_ok(config_load(&def, 1, argv, &printed, err, sizeof(err)));
	expect_ok(LOAD("--config", "deploy/amorad.conf"));
	cr_assert_str_eq(cfg.data_dir, "/var/lib/amora");
	cr_assert_eq(cfg.reader_timeout_ms, def.reader_timeout_ms);
	cr_assert_eq(cfg.request_timeout_ms, def.request_timeout_ms);
	cr_assert_eq(cfg.input_budget, def.input_budget);
	cr_assert_eq(cfg.max_connections, def.max_connections);
	cr_assert_eq(cfg.max_conns_per_uid, def.max_conns_per_uid);
	cr_assert_eq(cfg.ckpt_min_log, def.ckpt_min_log);
	cr_assert_eq(cfg.ckpt_factor, def.ckpt_factor);
}

Test(config, command_line_overrides_file)
{
	char *f = write_file("shards = 16\nsync = none\nsocket = /tmp/from-file.sock\n");

	/* Before and after --config: the command line wins either way. */
	expect_ok(LOAD("--shards", "4", "--config", f));
	cr_assert_eq(cfg.shards, 4);
	cr_assert_eq(cfg.sync, WAL_SYNC_NONE);
	cr_assert_str_eq(cfg.socket_path, "/tmp/from-file.sock");
	expect_ok(LOAD("--config", f, "--socket", "/tmp/cli.sock"));
	cr_assert_eq(cfg.shards, 16);
	cr_assert_str_eq(cfg.socket_path, "/tmp/cli.sock");
	unlink(f);
}

Test(config, file_errors)
{
	static const struct { const char *text, *msg; } cases[] = {
		{ "shards = 8\n# c\n\nfoo = 1\n", "line 4: unknown key 'foo'" },
		{ "shards 8\n", "line 1: expected 'name = value'" },
		{ "memory = 4G\nshards = 3\n",
		  "line 2: shards = 3: must be a power of two between 1 and 1024" },
		{ "config = /etc/other.conf\n", "line 1: 'config' cannot be used in a config file" },
		{ "help = yes\n", "line 1: unknown key 'help'" },
		{ "--shards = 8\n", "line 1: unknown key '--shards'" },
		{ "= 8\n", "line 1: unknown key ''" },
	};
	char msg[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *f = write_file(cases[i].text);

		/* the message begins with the file's name */
		snprintf(msg, sizeof(msg), "%s: %s", f, cases[i].msg);
		expect_err(LOAD("--config", f), msg);
		unlink(f);
	}
}

Test(config, missing_file)
{
	expect_err(LOAD("--config", "/nonexistent/amora.conf"),
		   "--config /nonexistent/amora.conf: No such file or directory");
}

Test(config, nul_byte_in_file)
{
	static const char text[] = "shards = 8\nsync = \0none\n";
	char path[] = "/tmp/amora-test-config-XXXXXX", msg[512];
	int fd = mkstemp(path);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	snprintf(msg, sizeof(msg), "%s: line 2: NUL byte in the line", path);
	expect_err(LOAD("--config", path), msg);
	unlink(path);
}

/* ---------- command-line errors ---------- */

Test(config, unknown_options_and_arguments)
{
	expect_err(LOAD("--bogus"), "unknown option '--bogus'");
	expect_err(LOAD("--bogus=1"), "unknown option '--bogus'");
	expect_err(LOAD("--data"), "unknown option '--data'");
	expect_err(LOAD("extra"), "unexpected argument 'extra' (amorad takes only options)");
	expect_err(LOAD("-s"), "unexpected argument '-s' (amorad takes only options)");
	expect_err(LOAD("--"), "unexpected argument '--' (amorad takes only options)");
	expect_err(LOAD("--shards"), "--shards: missing value");
	expect_err(LOAD("--help=1"), "--help takes no value");
	expect_err(LOAD("--version=1"), "--version takes no value");
}

Test(config, bad_values)
{
	static const struct { const char *opt, *val, *msg; } cases[] = {
		{ "--shards", "3", "--shards 3: must be a power of two between 1 and 1024" },
		{ "--shards", "0", "--shards 0: must be a power of two between 1 and 1024" },
		{ "--shards", "2048", "--shards 2048: must be a power of two between 1 and 1024" },
		{ "--shards", "-4", "--shards -4: must be a power of two between 1 and 1024" },
		{ "--shards", "abc", "--shards abc: must be a power of two between 1 and 1024" },
		{ "--shards", "4294967296", "--shards 4294967296: must be a power of two between 1 and 1024" },
		{ "--memory", "32M", "--memory 32M: must be between 64M and 64G" },
		{ "--memory", "65G", "--memory 65G: must be between 64M and 64G" },
		{ "--memory", "99999999999999999999999G", "--memory 99999999999999999999999G: must be between 64M and 64G" },
		{ "--memory", "17179869184T", "--memory 17179869184T: must be between 64M and 64G" },
		{ "--memory", "1.5G", "--memory 1.5G: expected a size in bytes with an optional K, M, G or T suffix (powers of 1024), such as 512M or 4G" },
		{ "--memory", "4X", "--memory 4X: expected a size in bytes with an optional K, M, G or T suffix (powers of 1024), such as 512M or 4G" },
		{ "--memory", "G", "--memory G: expected a size in bytes with an optional K, M, G or T suffix (powers of 1024), such as 512M or 4G" },
		{ "--memory", "-1G", "--memory -1G: expected a size in bytes with an optional K, M, G or T suffix (powers of 1024), such as 512M or 4G" },
		{ "--sync", "sometimes", "--sync sometimes: must be always, periodic or none" },
		{ "--sync", "ALWAYS", "--sync ALWAYS: must be always, periodic or none" },
		{ "--sync-interval-ms", "0", "--sync-interval-ms 0: must be a number of milliseconds between 1 and 60000" },
		{ "--sync-interval-ms", "60001", "--sync-interval-ms 60001: must be a number of milliseconds between 1 and 60000" },
		{ "--sync-interval-ms", "1e3", "--sync-interval-ms 1e3: must be a number of milliseconds between 1 and 60000" },
		{ "--max-clients", "0", "--max-clients 0: must be a number between 1 and 126" },
		{ "--max-clients", "1025", "--max-clients 1025: must be a number between 1 and 126" },
		{ "--max-clients", " 5", "--max-clients  5: must be a number between 1 and 126" },
		{ "--log-level", "loud", "--log-level loud: must be debug, info, warn or error" },
		{ "--fast-wakeups", "yes", "--fast-wakeups yes: must be auto, on or off" },
		{ "--fast-wakeups", "AUTO", "--fast-wakeups AUTO: must be auto, on or off" },
		{ "--sorted-index", "yes", "--sorted-index yes: must be on or off" },
		{ "--checkpoint-min-log", "32K", "--checkpoint-min-log 32K: must be between 64K and 1T" },
		{ "--checkpoint-min-log", "big", "--checkpoint-min-log big: expected a size in bytes with an optional K, M, G or T suffix (powers of 1024), such as 64M" },
		{ "--checkpoint-factor", "101", "--checkpoint-factor 101: must be a number between 0 (only on request and at shutdown) and 100" },
		{ "--reader-timeout-ms", "99", "--reader-timeout-ms 99: must be a number of milliseconds between 100 and 3600000" },
		{ "--reader-timeout-ms", "3600001", "--reader-timeout-ms 3600001: must be a number of milliseconds between 100 and 3600000" },
		{ "--request-timeout-ms", "0", "--request-timeout-ms 0: must be a number of milliseconds between 100 and 3600000" },
		{ "--request-timeout-ms", "10s", "--request-timeout-ms 10s: must be a number of milliseconds between 100 and 3600000" },
		{ "--max-connections", "0", "--max-connections 0: must be a number between 1 and 65536" },
		{ "--max-connections", "65537", "--max-connections 65537: must be a number between 1 and 65536" },
		{ "--max-connections-per-uid", "0", "--max-connections-per-uid 0: must be a number between 1 and 65536" },
		{ "--input-buffer-budget", "16M", "--input-buffer-budget 16M: must be between 32M (one request may take 16M) and 64G" },
		{ "--input-buffer-budget", "65G", "--input-buffer-budget 65G: must be between 32M (one request may take 16M) and 64G" },
		{ "--input-buffer-budget", "lots", "--input-buffer-budget lots: expected a size in bytes with an optional K, M, G or T suffix (powers of 1024), such as 64M" },
		{ "--data-dir", "", "--data-dir : must not be empty" },
		{ "--socket", "", "--socket : must not be empty" },
		{ "--allow-uid", "no-such-user-xyz", "--allow-uid no-such-user-xyz: no user 'no-such-user-xyz'" },
		{ "--allow-gid", "0,no-such-group-xyz", "--allow-gid 0,no-such-group-xyz: no group 'no-such-group-xyz'" },
		{ "--allow-uid", "1,,2", "--allow-uid 1,,2: empty entry in the list" },
		{ "--allow-uid", "1,", "--allow-uid 1,: empty entry in the list" },
		{ "--allow-gid", ",1", "--allow-gid ,1: empty entry in the list" },
		{ "--allow-uid", "4294967295", "--allow-uid 4294967295: id 4294967295 is out of range" },
		{ "--allow-uid", "99999999999999999999", "--allow-uid 99999999999999999999: id 99999999999999999999 is out of range" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[] = { "amorad", (char *)cases[i].opt, (char *)cases[i].val, NULL };
		expect_err(config_load(&cfg, 3, argv, &printed, err, sizeof(err)), cases[i].msg);
	}
}

Test(config, too_many_ids)
{
	char list[33 * 3 + 8] = "";

	for (int i = 0; i < 33; i++)
		sprintf(list + strlen(list), "%s%d", i ? "," : "", i + 10);
	char *argv[] = { "amorad", "--allow-gid", list, NULL };
	char msg[256];
	snprintf(msg, sizeof(msg), "--allow-gid %s: more than 32 entries", list);
	expect_err(config_load(&cfg, 3, argv, &printed, err, sizeof(err)), msg);
}

Test(config, memory_per_shard)
{
	expect_err(LOAD("--memory", "64M"),
		   "--memory 64M is too small for 64 shards: each needs at least 4M "
		   "(use --memory 256M or more, or fewer --shards)");
	expect_err(LOAD("--shards", "1024", "--memory", "2G"),
		   "--memory 2G is too small for 1024 shards: each needs at least 4M "
		   "(use --memory 4G or more, or fewer --shards)");
}

Test(config, socket_path_length)
{
	char longdir[200], longsock[120], msg[512];

	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	snprintf(msg, sizeof(msg), "the control socket %s/amora.sock would be 210 bytes, a Unix "
		 "socket path is at most 107: use a shorter --data-dir or set --socket", longdir);
	expect_err(LOAD("--data-dir", longdir), msg);
	/* An explicit short socket makes a long data directory fine. */
	expect_ok(LOAD("--data-dir", longdir, "--socket", "/run/a.sock"));

	memset(longsock, 's', sizeof(longsock) - 1);
	longsock[sizeof(longsock) - 1] = '\0';
	snprintf(msg, sizeof(msg), "--socket %s: 119 bytes, a Unix socket path is at most 107",
		 longsock);
	expect_err(LOAD("--socket", longsock), msg);
	longsock[107] = '\0';
	expect_ok(LOAD("--socket", longsock));
}

Test(config, data_dir_too_long)
{
	static char dir[PATH_MAX + 10];
	char msg[256];

	/* The message quotes only the start of a long value. */
	memset(dir, 'd', sizeof(dir) - 1);
	snprintf(msg, sizeof(msg), "--data-dir %.128s...: longer than %d bytes", dir, PATH_MAX - 1);
	expect_err(LOAD("--data-dir", dir), msg);
}

Test(config, message_fits_a_small_buffer)
{
	char small[8];
	char *argv[] = { "amorad", "--shards", "3", NULL };

	cr_assert_eq(config_load(&cfg, 3, argv, &printed, small, sizeof(small)), -1);
	cr_assert_str_eq(small, "--shard");
}

/* ---------- --help and --version ---------- */

static char *read_stdout(void)
{
	static char out[8192];
	FILE *f;
	size_t n;

	fflush(stdout);
	f = cr_get_redirected_stdout();
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	return out;
}

Test(config, version, .init = cr_redirect_stdout)
{
	cr_assert_eq(LOAD("--version"), 0);
	cr_assert(printed);
	cr_assert_str_eq(read_stdout(), "amorad " AMORA_VERSION_STRING "\n");
}

Test(config, help_lists_every_option, .init = cr_redirect_stdout)
{
	static const char *const names[] = {
		"--data-dir DIR", "--socket PATH", "--memory SIZE", "--shards N", "--sync MODE",
		"--sync-interval-ms N", "--max-clients N", "--allow-uid LIST", "--allow-gid LIST",
		"--log-level LEVEL", "--config FILE", "--help", "--version",
		"--reader-timeout-ms N", "--max-connections N", "--max-connections-per-uid N",
		"--request-timeout-ms N", "--input-buffer-budget SIZE", "--fast-wakeups MODE",
		"--sorted-index on|off", "(default on;", "--checkpoint-min-log SIZE", "--checkpoint-factor N",
		"(default auto)", "(default amora-data)", "(default 4G)", "(default 64)", "(default periodic)",
		"(default 100)", "(default info)", "(default 10000)", "(default 2 x max-clients + 16)",
		"(default max-clients + 8)", "(default 64M)",
	};

	/* Wins over the options before it, whatever their values. */
	cr_assert_eq(LOAD("--shards", "3", "--help", "--bogus"), 0);
	cr_assert(printed);
	char *out = read_stdout();
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		cr_assert(strstr(out, names[i]), "--help lacks '%s'", names[i]);
}

Test(config, short_help, .init = cr_redirect_stdout)
{
	cr_assert_eq(LOAD("-h"), 0);
	cr_assert(printed);
	cr_assert(strncmp(read_stdout(), "Usage: amorad", 13) == 0);
}
