/*
 * err.c — messages for the shm_ error codes (see err.h).
 */
#include "err.h"

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
	}
	return "unknown error";
}
