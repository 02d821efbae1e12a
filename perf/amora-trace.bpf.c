// SPDX-License-Identifier: GPL-2.0
/*
 * amora-trace.bpf.c — the kernel side of amora-trace: USDT handlers that
 * turn Amora's probes (shm/probe.h) into latency histograms.
 *
 * A public call is timed from op__begin to op__end of the same thread. A
 * write request is followed by (shard, slot, id) through its stages:
 * req__submit (client) -> req__take -> req__apply (shard) -> the shard's
 * next log__write -> a log__sync -> req__complete (client). A shard
 * counts its log writes ("batches"); a request applied during batch b is
 * logged by the b-th write. The last sync of each shard covers every batch
 * written before it, so a request's durable stage is known if that sync
 * came before its completion was reaped (always so with --sync always;
 * with periodic syncs the completion usually comes first and the stage is
 * left out). amorad's commands are timed from cmd__begin to cmd__end and
 * counted by (name, error).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

#include "perf/amora-trace.h"

#define LOG_RING 64

const volatile int filter_shard = -1; /* -s SHARD */
const volatile __u32 op_mask = ~0u;   /* -o OP: bit per enum amora_probe_op */
const volatile int filter_pid = 0;    /* -p PID: amorad's commands from this peer only */

struct trace_call {
	__u64 ts;
	__u32 op;
};

struct trace_req_key {
	__u32 shard;
	__u32 slot;
	__u64 id;
};

struct trace_req {
	__u64 submit, take, apply;
	__u64 batch;
	__u32 op;
	__s32 status;
};

struct trace_shard {
	__u64 batch;                /* log writes so far */
	__u64 log_ts[LOG_RING];     /* time of write b, at b % LOG_RING */
	__u64 log_batch[LOG_RING];  /* which b that slot holds */
	__u64 sync_upto, sync_ts;   /* the last sync: batches <= sync_upto */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct trace_call);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct trace_req_key);
	__type(value, struct trace_req);
} reqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRACE_MAX_SHARDS);
	__type(key, __u32);
	__type(value, struct trace_shard);
} shards SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRACE_HISTS);
	__type(key, __u32);
	__type(value, struct trace_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} cmd_calls SEC(".maps"); /* amorad's thread -> when its command began */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TRACE_CMDS);
	__type(key, struct trace_cmd_key);
	__type(value, struct trace_hist);
} cmds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace_hist);
} zero_hist SEC(".maps"); /* an empty histogram to insert (too big for the stack) */

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline __u32 bucket_of(__u64 ns)
{
	__u32 e, b;

	if (ns < 8)
		return (__u32)ns;
	e = log2_u64(ns);
	b = 8 * (e - 2) + (__u32)((ns >> (e - 3)) & 7);
	return b < TRACE_BUCKETS ? b : TRACE_BUCKETS - 1;
}

static __always_inline void hist_put(struct trace_hist *t, __u64 ns)
{
	__u32 b = bucket_of(ns);

	if (t && b < TRACE_BUCKETS)
		__sync_fetch_and_add(&t->b[b], 1);
}

static __always_inline void hist_add(__u32 h, __u64 ns)
{
	hist_put(bpf_map_lookup_elem(&hists, &h), ns);
}

static __always_inline bool op_wanted(__u32 op)
{
	return op > 0 && op < TRACE_OPS && (op_mask & (1u << op));
}

static __always_inline bool shard_wanted(long shard)
{
	return filter_shard < 0 || shard == filter_shard;
}

static __always_inline struct trace_shard *shard_of(long shard)
{
	__u32 k = (__u32)shard;

	if (shard < 0 || shard >= TRACE_MAX_SHARDS)
		return NULL;
	return bpf_map_lookup_elem(&shards, &k);
}

/* ---------- libamora ---------- */

SEC("usdt")
int BPF_USDT(op_begin, long op, long klen, long vlen)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct trace_call c = { .ts = bpf_ktime_get_ns(), .op = (__u32)op };

	bpf_map_update_elem(&calls, &tid, &c, BPF_ANY);
	return 0;
}

SEC("usdt")
int BPF_USDT(op_end, long op, long shard, long klen, long vlen, long result)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct trace_call *c = bpf_map_lookup_elem(&calls, &tid);

	if (!c)
		return 0;
	if (c->op == (__u32)op && op_wanted((__u32)op) && (shard < 0 || shard_wanted(shard)))
		hist_add((__u32)op, bpf_ktime_get_ns() - c->ts);
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

SEC("usdt")
int BPF_USDT(req_submit, long shard, long slot, long id, long wire_op)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct trace_call *c = bpf_map_lookup_elem(&calls, &tid);
	struct trace_req_key k = { (__u32)shard, (__u32)slot, (__u64)id };
	struct trace_req r = { .submit = bpf_ktime_get_ns() };

	if (!c || !op_wanted(c->op) || !shard_wanted(shard))
		return 0;
	r.op = c->op;
	bpf_map_update_elem(&reqs, &k, &r, BPF_ANY);
	return 0;
}

static __always_inline void stage(__u32 op, __u32 st, __u64 from, __u64 to)
{
	if (from && to >= from)
		hist_add(TRACE_OPS * (1 + st) + op, to - from);
}

SEC("usdt")
int BPF_USDT(req_complete, long shard, long slot, long id, long status)
{
	struct trace_req_key k = { (__u32)shard, (__u32)slot, (__u64)id };
	struct trace_req *r = bpf_map_lookup_elem(&reqs, &k);
	struct trace_shard *s = shard_of(shard);
	__u64 now = bpf_ktime_get_ns(), last;

	if (!r)
		return 0;
	if (r->op >= TRACE_OPS)
		goto out;
	stage(r->op, TRACE_ST_TAKE, r->submit, r->take);
	stage(r->op, TRACE_ST_APPLY, r->take, r->apply);
	last = r->apply ? r->apply : r->take;
	if (s && r->apply && status == 0) {
		__u32 i = (__u32)(r->batch % LOG_RING);
		__u64 logged = s->log_batch[i & (LOG_RING - 1)] == r->batch ? s->log_ts[i & (LOG_RING - 1)] : 0;

		if (logged && logged >= r->apply) {
			stage(r->op, TRACE_ST_LOG, r->apply, logged);
			last = logged;
			if (s->sync_upto >= r->batch && s->sync_ts >= logged && s->sync_ts <= now) {
				stage(r->op, TRACE_ST_SYNC, logged, s->sync_ts);
				last = s->sync_ts;
			}
		}
	}
	stage(r->op, TRACE_ST_SEEN, last, now);
	stage(r->op, TRACE_ST_TOTAL, r->submit, now);
out:
	bpf_map_delete_elem(&reqs, &k);
	return 0;
}

/* ---------- shardd ---------- */

SEC("usdt")
int BPF_USDT(req_take, long shard, long slot, long id)
{
	struct trace_req_key k = { (__u32)shard, (__u32)slot, (__u64)id };
	struct trace_req *r = bpf_map_lookup_elem(&reqs, &k);

	if (r)
		r->take = bpf_ktime_get_ns();
	return 0;
}

SEC("usdt")
int BPF_USDT(req_apply, long shard, long slot, long id, long status, long seq)
{
	struct trace_req_key k = { (__u32)shard, (__u32)slot, (__u64)id };
	struct trace_req *r = bpf_map_lookup_elem(&reqs, &k);
	struct trace_shard *s = shard_of(shard);

	if (!r || !s)
		return 0;
	r->apply = bpf_ktime_get_ns();
	r->status = (__s32)status;
	r->batch = s->batch + 1;
	return 0;
}

SEC("usdt")
int BPF_USDT(log_write, long shard, long bytes, long records)
{
	struct trace_shard *s = shard_of(shard);
	__u32 i;

	if (!s)
		return 0;
	s->batch++;
	i = (__u32)(s->batch % LOG_RING) & (LOG_RING - 1);
	s->log_ts[i] = bpf_ktime_get_ns();
	s->log_batch[i] = s->batch;
	return 0;
}

SEC("usdt")
int BPF_USDT(log_sync, long shard, long seq)
{
	struct trace_shard *s = shard_of(shard);

	if (!s)
		return 0;
	s->sync_upto = s->batch;
	s->sync_ts = bpf_ktime_get_ns();
	return 0;
}

/* ---------- amorad ---------- */

SEC("usdt")
int BPF_USDT(cmd_begin, const char *name, long pid)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();

	if (!(op_mask & (1u << TRACE_CMD_BIT)) || (filter_pid && pid != filter_pid))
		return 0;
	bpf_map_update_elem(&cmd_calls, &tid, &now, BPF_ANY);
	return 0;
}

SEC("usdt")
int BPF_USDT(cmd_end, const char *name, long pid, long result)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), zero = 0;
	__u64 *began = bpf_map_lookup_elem(&cmd_calls, &tid);
	struct trace_cmd_key k = {};
	struct trace_hist *t, *z;
	__u64 ns;

	if (!began)
		return 0;
	ns = bpf_ktime_get_ns() - *began;
	bpf_map_delete_elem(&cmd_calls, &tid);
	bpf_probe_read_user_str(k.name, sizeof(k.name), name);
	k.error = result != 0;
	t = bpf_map_lookup_elem(&cmds, &k);
	if (!t) {
		z = bpf_map_lookup_elem(&zero_hist, &zero);
		if (!z)
			return 0;
		bpf_map_update_elem(&cmds, &k, z, BPF_NOEXIST); /* fails once TRACE_CMDS are in */
		t = bpf_map_lookup_elem(&cmds, &k);
	}
	hist_put(t, ns);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
