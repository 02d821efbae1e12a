/*
 * fail.c — a benchmark's failure path (perf/lib/fail.h).
 */
#include "perf/lib/fail.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void (*die_hook)(const char *msg);

void bench_die_hook_set(void (*hook)(const char *msg))
{
	die_hook = hook;
}

void bench_die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (die_hook)
		die_hook(msg);
	else
		fprintf(stderr, "%s: FAILED: %s\n", program_invocation_short_name, msg);
	exit(1);
}

void bench_signals_set(void (*on_signal)(int sig))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

void *bench_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		bench_die("out of memory (%zu bytes)", n);
	return p;
}
