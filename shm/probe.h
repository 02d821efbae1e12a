/*
 * probe.h — Amora's USDT probes: one macro, one list of every probe.
 *
 * A probe site is `AMORA_PROBE(name, args...)`: a nop instruction and an
 * ELF note (.note.stapsdt, provider "amora") saying where the arguments
 * are. It costs a nop when nobody traces; a tracer (amora-trace,
 * bpftrace, perf probe) turns it into a breakpoint. Arguments are
 * integers (at most 12), or a pointer to a NUL-terminated string where
 * the list says "str". Build with -DAMORA_NO_PROBES to compile every site
 * away (an `if (0)` call: nothing is evaluated); so a site's arguments are
 * plain expressions without side effects.
 *
 * Names use "__" for "-" (USDT's convention: op__begin is op-begin).
 * Durations are not arguments: a tracer stamps each probe itself.
 *
 * libamora (libclient/), in the calling thread:
 *   op__begin(op, klen, vlen)                 a public call starts
 *   op__end(op, shard, klen, vlen, result)    ... and returns `result`
 *       op: enum amora_probe_op. shard: the key's shard, -1 when the call
 *       has none or failed before it was known (mget: klen is then the
 *       number of keys; flush). A read's vlen at the end is the value's
 *       length (0 when not found).
 *   req__submit(shard, slot, id, op)          a write request is pushed
 *                                             to shard's ring
 *   req__complete(shard, slot, id, status)    its completion is reaped
 *
 * shardd (shardd/), in shard `shard`; (slot, id) names one request of one
 * client, the same pair as in req__submit:
 *   req__take(shard, slot, id)                a request, before staging
 *   req__apply(shard, slot, id, status, seq)  ... staged (status as the
 *                                             client will see it; readers
 *                                             see it after log__write)
 *   log__write(shard, bytes, records)         the round's log write done
 *   log__sync(shard, seq)                     the log is durable up to seq
 *   round__begin(shard, sweep)                a round starts: the shard
 *                                             visits its clients (sweep 1:
 *                                             every one, not only busy ones)
 *   round__end(shard, completions, clients)   the round's completions
 *                                             published: requests taken,
 *                                             clients that had any
 *   shard__sleep(shard)                       about to sleep
 *   shard__wake(shard)                        woke up
 *
 * amorad (coordinator/), on its one thread:
 *   cmd__begin(str name, pid)                 a control-socket command
 *   cmd__end(str name, pid, result)           ... answered: result 0, or -1
 *       for an error line. name: the command table's row in lower case
 *       ("unknown" for a name it lacks); pid: the peer's.
 *   client__attach(slot, gen, pid, uid)       a client got slot `slot`
 *   client__detach(slot, pid)                 ... and left it
 *   shard__restart(shard, status, delay_ms)   a shard died (wait(2)
 *                                             status); forked again after
 *                                             delay_ms
 *   shard__fail(shard, cause)                 a shard stopped for good
 *                                             (enum shm_fail_cause)
 */
#ifndef AMORA_SHM_PROBE_H
#define AMORA_SHM_PROBE_H

/* What op__begin/op__end's `op` means. Values are part of the probe ABI
 * (amora-trace decodes them). */
enum amora_probe_op {
	AMORA_PROBE_GET = 1,
	AMORA_PROBE_HAS = 2,
	AMORA_PROBE_MGET = 3,
	AMORA_PROBE_SET = 4,
	AMORA_PROBE_DEL = 5,
	AMORA_PROBE_SET_BUFFERED = 6,
	AMORA_PROBE_FLUSH = 7,
	AMORA_PROBE_GET_ALLOC = 8,
};

#ifdef AMORA_NO_PROBES
/* Never called: its arguments count as used (no unused-variable warning
 * for a value computed only for a probe) and are never evaluated. */
static inline void amora_probe_none(int n, ...)
{
	(void)n;
}
#define AMORA_PROBE(name, ...) \
	do { \
		if (0) \
			amora_probe_none(0, ##__VA_ARGS__); \
	} while (0)
#else
#define SDT_USE_VARIADIC 1
#include <sys/sdt.h>
#define AMORA_PROBE(name, ...) STAP_PROBEV(amora, name, ##__VA_ARGS__)
#endif

#endif
