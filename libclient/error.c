/*
 * error.c — libamora's error codes and messages (amora.h, client.h).
 */
#include <stdarg.h>
#include <stdio.h>

#include "libclient/client.h"

const char *amora_strerror(int code)
{
	switch (code) {
	case AMORA_OK: return "success";
	case AMORA_ENOTFOUND: return "key not found";
	case AMORA_EINVAL: return "invalid argument";
	case AMORA_EFULL: return "store full (memory limit reached)";
	case AMORA_EGONE: return "coordinator gone";
	case AMORA_ERESTARTING: return "shard restarting";
	case AMORA_EIO: return "shard could not write its log";
	case AMORA_ECORRUPT: return "shared data or a reply failed validation";
	case AMORA_ESYS: return "system call failed";
	case AMORA_EPROTO: return "unexpected reply from the coordinator";
	case AMORA_EDENIED: return "access denied by the coordinator";
	case AMORA_EBUSY: return "no free client slot or too many connections";
	case AMORA_EBADRING: return "cut off (malformed request, or stuck inside a read)";
	case AMORA_ETIMEDOUT: return "timed out waiting for a shard";
	case AMORA_EFAILED: return "shard stopped and will not restart";
	case AMORA_ENOTSUP: return "not supported by this store";
	}
	return "unknown error";
}

/* The message of this thread's last failed amora_open, which leaves no
 * handle to hold it. */
static __thread char open_errmsg[256];

const char *amora_errmsg(const amora *db)
{
	return db ? db->errmsg : open_errmsg;
}

int client_fail(amora *db, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, ap);
	va_end(ap);
	return code;
}

int client_fail_open(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(open_errmsg, sizeof(open_errmsg), fmt, ap);
	va_end(ap);
	return code;
}

int client_fail_shard_stopped(amora *db, uint32_t s)
{
	const struct shm_shard *sh = shm_shard_at(&db->seg, s);

	return client_fail(db, AMORA_EFAILED, "shard %u stopped: %s (see amorad's log)", s,
			   shm_fail_cause_str(atomic_load_explicit(&sh->cause, memory_order_relaxed)));
}
