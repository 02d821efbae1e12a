/*
 * fail.h — how a benchmark fails: one message, then the program's own
 * report, then exit. A benchmark never goes on after a wrong value or an
 * error from a store: every helper under perf/lib/ dies through here.
 */
#ifndef AMORA_PERF_FAIL_H
#define AMORA_PERF_FAIL_H

#include <stddef.h>

/* Formats the message (cut at 511 bytes) and hands it to the hook of this
 * process; without a hook prints "<program>: FAILED: <message>" to stderr.
 * Then exit(1) if the hook returned. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Sets the hook bench_die calls in this process (NULL: the default). A
 * forked child that reports its failure elsewhere sets its own. The hook
 * may exit or _exit with a status of its choice. */
void bench_die_hook_set(void (*hook)(const char *msg));

/* For a benchmark's exit path on an interruption: `on_signal` handles
 * SIGINT, SIGTERM and SIGHUP (it cleans up and _exits), SIGPIPE is
 * ignored (a write to a gone reader fails with EPIPE instead). */
void bench_signals_set(void (*on_signal)(int sig));

/* malloc(n), or die. Never returns NULL (n = 0 allocates 1 byte). */
void *bench_malloc(size_t n);

#endif
