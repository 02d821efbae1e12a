/*
 * err.h — the error codes shared by every shm_ module.
 *
 * Everything in shm/ reports failure by returning one of these negative
 * codes (0 means success, positive values are results where a function says
 * so). Nothing in shm/ aborts on bad input: a corrupt offset, a full arena or
 * garbage in a ring is a code the caller can act on. shm_strerror() gives the
 * message; it never returns NULL.
 */
#ifndef AMORA_SHM_ERR_H
#define AMORA_SHM_ERR_H

#include <stdint.h>

enum shm_err {
	SHM_OK = 0,
	SHM_ENOMEM = -1,   /* segment, slab or table capacity exhausted */
	SHM_ERANGE = -2,   /* an offset or length points outside the segment */
	SHM_EINVAL = -3,   /* invalid argument (size, alignment, empty key, ...) */
	SHM_ECORRUPT = -4, /* shared data failed validation (bad magic, ring garbage) */
	SHM_EFULL = -5,    /* ring has no room for this record right now */
	SHM_EEMPTY = -6,   /* ring has nothing to consume */
	SHM_ETOOBIG = -7,  /* record larger than the ring or size class allows */
	SHM_ESYS = -8,     /* a system call failed; errno holds the cause */
	SHM_ETIMEDOUT = -9,/* a wait ran out of time */
	SHM_ENOTFOUND = -10,/* no such key */
	SHM_EBUSY = -11,   /* the key is held by an atomic batch that is not resolved yet */
};

const char *shm_strerror(int code);

/* Why a shard stopped (enum shm_fail_cause, segment.h), for people
 * ("corrupt log") and as one word for INFO ("corrupt_log"). An unknown
 * value (the descriptor is shared memory) gets "unknown cause" /
 * "unknown". Never NULL. */
const char *shm_fail_cause_str(uint32_t cause);
const char *shm_fail_cause_token(uint32_t cause);

/* Name of a shard state (enum shm_shard_state) as INFO and the CLI print
 * it ("ready", "failed", ...); "unknown" for any other value. */
const char *shm_shard_state_name(uint32_t state);

#endif
