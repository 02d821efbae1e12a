/*
 * amora-trace.h — what amora-trace's BPF side (amora-trace.bpf.c) and its
 * user side (amora-trace.c) share: the histogram layout and the stages.
 *
 * A histogram has TRACE_BUCKETS log-linear buckets of nanoseconds: values
 * below 8 have a bucket each; above, each power of two is cut in 8
 * (bucket 8*(e-2)+s holds [2^e + s*2^(e-3), 2^e + (s+1)*2^(e-3)) for
 * e = floor(log2 v)), so a percentile read from it is within 12.5 %.
 * Histogram h of the `hists` array:
 *   h = op                      latency of public call `op` (shm/probe.h,
 *                               enum amora_probe_op, 1..TRACE_OPS-1)
 *   h = TRACE_OPS * (1 + stage) + op   stage `stage` of the writes of `op`
 * (h = 0 is unused.)
 */
#ifndef AMORA_PERF_AMORA_TRACE_H
#define AMORA_PERF_AMORA_TRACE_H

#define TRACE_BUCKETS 320
#define TRACE_OPS 9           /* enum amora_probe_op values + 1 */
#define TRACE_MAX_SHARDS 1024

enum trace_stage {
	TRACE_ST_TAKE,     /* client pushed it -> shard took it */
	TRACE_ST_APPLY,    /* shard took it -> applied to the table */
	TRACE_ST_LOG,      /* applied -> its round's log write done */
	TRACE_ST_SYNC,     /* logged -> durable (when the sync came first) */
	TRACE_ST_SEEN,     /* last stage above -> client reaped the completion */
	TRACE_ST_TOTAL,    /* client pushed it -> client reaped the completion */
	TRACE_STAGES,
};

#define TRACE_HISTS (TRACE_OPS * (1 + TRACE_STAGES))

struct trace_hist {
	unsigned long long b[TRACE_BUCKETS];
};

/* amorad's control-socket commands (cmd__begin/cmd__end): one histogram
 * per (name, error) in the `cmds` hash map, at most TRACE_CMDS of them.
 * -o's word "cmd" is bit TRACE_CMD_BIT of op_mask (no operation is 0). */
#define TRACE_CMDS 64
#define TRACE_CMD_NAME 32
#define TRACE_CMD_BIT 0

struct trace_cmd_key {
	char name[TRACE_CMD_NAME]; /* the command table's row ("unknown": none) */
	unsigned int error;        /* 1: answered with an error line */
};

#endif
