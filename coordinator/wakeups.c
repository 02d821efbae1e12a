/*
 * wakeups.c — fast wake-ups of idle CPUs while writes flow
 * (--fast-wakeups; DESIGN.md §6, "What a wake-up costs").
 *
 * Every synchronous write is two wake-ups: the client wakes its shard,
 * the shard wakes the client. When the CPU the woken process goes to is
 * idle, what that costs depends on how the CPU idles: on a VM whose idle
 * vCPUs halt at once (this project's machines: the haltpoll driver with
 * guest_halt_poll_ns 0) a wake-up of a halted vCPU costs ~20 us of CPU on
 * each side and the write's latency triples (README, "Costs behind the
 * design"). Linux lets a process ask for a bound on that wake-up latency
 * (PM QoS: a value written to /dev/cpu_dma_latency holds while the file
 * stays open); with 0, idle CPUs poll instead of halting.
 *
 * The request is system-wide and polling CPUs burn power (on a VM: host
 * CPU), so in `auto` mode amorad holds it only while the shards answer at
 * least FAST_WAKE_BUSY_PER_S requests per second, and lets it go after
 * FAST_WAKE_LINGER_MS below that. The rate is read from the shards'
 * counters at each tick (AMORAD_TICK_MS). `on` holds it while amorad runs,
 * `off` never asks. Opening the file needs root (its mode is 0600): as
 * another user amorad says so once and runs without it. The kernel drops
 * the request when the file is closed, also when amorad is killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/amorad.h"
#include "shardd/log.h"

#define FAST_WAKE_DEV "/dev/cpu_dma_latency"
#define FAST_WAKE_BUSY_PER_S 1000
#define FAST_WAKE_LINGER_MS 1000
/* What the request says when let go: the kernel's default, no bound. */
#define FAST_WAKE_NO_BOUND 2000000000

const char *wake_state_name(const struct amorad *a)
{
	if (a->cfg.fast_wakeups == WAKE_OFF)
		return "off";
	if (a->wake.fd < 0)
		return "unavailable";
	return a->wake.held ? "held" : "released";
}

/* Ask for a wake-up latency bound of `us` microseconds. */
static void wake_request(struct amorad *a, int32_t us, bool held)
{
	if (write(a->wake.fd, &us, sizeof(us)) != (ssize_t)sizeof(us)) {
		log_warn("cannot change the request in %s: %s; running without fast wake-ups",
			 FAST_WAKE_DEV, strerror(errno));
		close(a->wake.fd);
		a->wake.fd = -1;
		a->wake.held = false;
		return;
	}
	a->wake.held = held;
	log_debug("fast wake-ups %s", held ? "held" : "released");
}

void wake_open(struct amorad *a)
{
	a->wake.fd = -1;
	if (a->cfg.fast_wakeups == WAKE_OFF)
		return;
	a->wake.fd = open(FAST_WAKE_DEV, O_WRONLY | O_CLOEXEC);
	if (a->wake.fd < 0) {
		log_info("no fast wake-ups (%s: %s; amorad must run as root for them): a write that "
			 "wakes an idle CPU pays its wake-up", FAST_WAKE_DEV, strerror(errno));
		return;
	}
	wake_request(a, a->cfg.fast_wakeups == WAKE_ON ? 0 : FAST_WAKE_NO_BOUND,
		     a->cfg.fast_wakeups == WAKE_ON);
}

/* Requests the shards answered, summed (relaxed: a rate, not a snapshot). */
static uint64_t requests_answered(const struct amorad *a)
{
	uint64_t n = 0;

	for (uint32_t s = 0; s < a->e.cfg.shards; s++)
		n += atomic_load_explicit(&shm_shard_at(&a->e.seg, s)->ctr.requests, memory_order_relaxed);
	return n;
}

void wake_tick(struct amorad *a, uint64_t now_ns)
{
	uint64_t n, dt;

	if (a->wake.fd < 0 || a->cfg.fast_wakeups != WAKE_AUTO)
		return;
	n = requests_answered(a);
	dt = now_ns - a->wake.last_ns;
	if (a->wake.last_ns != 0 && n > a->wake.requests &&
	    (n - a->wake.requests) * 1000000000ull >= FAST_WAKE_BUSY_PER_S * dt) {
		a->wake.busy_ns = now_ns;
		if (!a->wake.held)
			wake_request(a, 0, true);
	} else if (a->wake.held && now_ns - a->wake.busy_ns > FAST_WAKE_LINGER_MS * 1000000ull) {
		wake_request(a, FAST_WAKE_NO_BOUND, false);
	}
	a->wake.requests = n;
	a->wake.last_ns = now_ns;
}
