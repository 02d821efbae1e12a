/*
 * err.c — messages for the shm_ error codes and names of shard states and
 * failure causes (see err.h).
 */
#include "shm/segment.h"

const char *shm_strerror(int code)
{
	switch (code) {
	case SHM_OK: return "success";
	case SHM_ENOMEM: return "out of shared memory (segment, slab or table full)";
	case SHM_ERANGE: return "offset or length outside the shared segment";
	case SHM_EINVAL: return "invalid argument";
	case SHM_ECORRUPT: return "shared data failed validation (corrupt or hostile peer)";
	case SHM_EFULL: return "ring full";
	case SHM_EEMPTY: return "ring empty";
	case SHM_ETOOBIG: return "record too large";
	case SHM_ESYS: return "system call failed (see errno)";
	case SHM_ETIMEDOUT: return "timed out";
	case SHM_ENOTFOUND: return "key not found";
	case SHM_EBUSY: return "key held by an unresolved atomic batch";
	}
	return "unknown error";
}

const char *shm_fail_cause_str(uint32_t cause)
{
	switch (cause) {
	case SHM_FAIL_NONE: return "no failure";
	case SHM_FAIL_CORRUPT_LOG: return "corrupt log";
	case SHM_FAIL_NOMEM: return "not enough shared memory to recover its data";
	case SHM_FAIL_START: return "could not start";
	}
	return "unknown cause";
}

const char *shm_fail_cause_token(uint32_t cause)
{
	switch (cause) {
	case SHM_FAIL_NONE: return "none";
	case SHM_FAIL_CORRUPT_LOG: return "corrupt_log";
	case SHM_FAIL_NOMEM: return "out_of_memory";
	case SHM_FAIL_START: return "start_failed";
	}
	return "unknown";
}

const char *shm_shard_state_name(uint32_t state)
{
	switch (state) {
	case SHM_SHARD_STARTING: return "starting";
	case SHM_SHARD_READY: return "ready";
	case SHM_SHARD_RESTARTING: return "restarting";
	case SHM_SHARD_FAILED: return "failed";
	case SHM_SHARD_STOPPED: return "stopped";
	}
	return "unknown";
}
