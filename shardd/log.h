/*
 * log.h — leveled log lines on stderr, shared by amorad and its shards.
 *
 * Every line is "2026-11-23T10:15:02.123Z LEVEL who: message", where `who`
 * is the process's tag ("amorad", "shard 07"): a shard is a forked amorad,
 * so one stderr carries all of them and the tag says which wrote a line.
 * One write(2) per line, so lines from different processes never interleave.
 */
#ifndef AMORA_LOG_H
#define AMORA_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set the process tag (copied) and the lowest level printed. */
void log_init(const char *tag, enum log_level min);
void log_set_tag(const char *tag);
/* Parse "debug", "info", "warn", "error"; -1 if none of them. */
int log_level_parse(const char *s);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
